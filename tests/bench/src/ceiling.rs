//! The ceiling: a server that does no work at all. It answers every complete
//! length-prefixed frame with the same 64-byte frame, from one thread with
//! level-triggered epoll (one `read` and one `write` per request, ready
//! connections batched per wake-up: the cheapest a request/response server
//! over a Unix socket can be). Its throughput under the same generator is
//! the most any agent could reach on this machine; the ratio of that to
//! ssh-agent bounds the ratio any agent can show.

use crate::procs::{Daemon, wait_for};
use anyhow::{Context, Result};
use rustix::event::epoll;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Serves `socket` until killed (`keyward-bench ceiling-server SOCKET`).
pub fn serve(socket: &Path) -> Result<()> {
    let listener = UnixListener::bind(socket).context("bind")?;
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    const LISTENER: u64 = u64::MAX;
    epoll::add(
        &ep,
        &listener,
        epoll::EventData::new_u64(LISTENER),
        epoll::EventFlags::IN,
    )?;
    let mut reply = [0u8; 68];
    reply[3] = 64;
    reply[4] = 12;
    let mut conns: HashMap<u64, (UnixStream, Vec<u8>)> = HashMap::new();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(128);
    let mut chunk = [0u8; 4096];
    let mut out = Vec::with_capacity(4096);
    loop {
        events.clear();
        epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None)?;
        for ev in &events {
            let key = ev.data.u64();
            if key == LISTENER {
                let (s, _) = listener.accept()?;
                let fd = s.as_raw_fd() as u64;
                epoll::add(
                    &ep,
                    &s,
                    epoll::EventData::new_u64(fd),
                    epoll::EventFlags::IN,
                )?;
                conns.insert(fd, (s, Vec::new()));
                continue;
            }
            let Some((s, buf)) = conns.get_mut(&key) else {
                continue;
            };
            let n = match s.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    conns.remove(&key);
                    continue;
                }
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            out.clear();
            let mut used = 0;
            while buf.len() - used >= 4 {
                let len =
                    u32::from_be_bytes([buf[used], buf[used + 1], buf[used + 2], buf[used + 3]])
                        as usize;
                if buf.len() - used < 4 + len {
                    break;
                }
                // ssh-add loads a key first (message 17): answer SUCCESS.
                if buf[used + 4] == 17 {
                    out.extend_from_slice(&[0, 0, 0, 1, 6]);
                } else {
                    out.extend_from_slice(&reply);
                }
                used += 4 + len;
            }
            buf.drain(..used);
            if !out.is_empty() && s.write_all(&out).is_err() {
                conns.remove(&key);
            }
        }
    }
}

/// The ceiling server as a child process of the benchmark.
pub struct Ceiling {
    _dir: tempfile::TempDir,
    _child: Daemon,
    /// Its socket.
    pub socket: PathBuf,
}

impl Ceiling {
    /// Starts `keyward-bench ceiling-server` on a fresh socket (optionally pinned).
    pub fn start(pin: Option<usize>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ceiling-bench-")
            .tempdir()?;
        let socket = dir.path().join("ceiling.sock");
        let child = crate::procs::spawn(
            &std::env::current_exe()?,
            pin,
            &dir.path().join("ceiling.log"),
            |c| {
                c.arg("ceiling-server").arg(&socket);
            },
        )?;
        wait_for(&socket, "the ceiling server's socket")?;
        Ok(Self {
            _dir: dir,
            _child: child,
            socket,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self._child.id()
    }

    /// A raw connection.
    pub fn raw(&self) -> Result<UnixStream> {
        Ok(UnixStream::connect(&self.socket)?)
    }
}
