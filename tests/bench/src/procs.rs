//! The processes under test: a keyward agent with an unlocked account, and
//! OpenSSH's ssh-agent with one ed25519 key; both optionally pinned to a CPU.
//! Each is stopped (by PID) and its directory removed when dropped.

use anyhow::{Context, Result, bail};
use keyward_agent::account::password::{KdfParams, Password};
use keyward_client::frame::{FrameBuf, write_frame};
use keyward_client::message::{InitRequest, PROTOCOL_VERSION, Request, Response};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The value `get` fetches: a small item.
pub const VALUE: &[u8] = b"ghp_0123456789abcdefghij";
/// The password of the benchmark account.
const PASSWORD: &str = "benchmark password, not a secret";

/// The directory of the binaries (next to this program).
pub fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

pub fn wait_for(path: &Path, what: &str) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{what} did not appear at {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A child process that is killed (and reaped) when dropped.
pub struct Daemon(pub Child);

impl Daemon {
    /// Its pid.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn spawn(
    program: &Path,
    pin: Option<usize>,
    log: &Path,
    f: impl FnOnce(&mut Command),
) -> Result<Daemon> {
    let mut cmd = match pin {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string()]).arg(program);
            c
        }
        None => Command::new(program),
    };
    f(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).context("log file")?);
    cmd.spawn()
        .map(Daemon)
        .with_context(|| format!("cannot start {}", program.display()))
}

/// CPU time a process has used so far, in nanoseconds: the sum over its
/// threads of /proc/PID/task/TID/schedstat (threads that have exited are
/// not counted; the servers measured keep theirs).
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .context("unreadable schedstat")?;
    }
    Ok(total)
}

/// A process's resident set size in KiB: all of it, and the anonymous part
/// (heap, stacks: the memory that is the process's own, as opposed to code
/// and other file pages it shares with the page cache).
#[derive(Debug, Clone, Copy)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
}

pub fn rss_kib(pid: u32) -> Result<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Rss {
        total: field("VmRSS:")?,
        anon: field("RssAnon:")?,
    })
}

/// A raw connection to the keyward agent at `socket`, after the handshake.
pub fn connect_raw(socket: &Path) -> Result<UnixStream> {
    let mut s = UnixStream::connect(socket)?;
    write_frame(
        &mut s,
        Request::Hello {
            protocol: PROTOCOL_VERSION,
            client: "keyward-bench".into(),
        }
        .encode(),
    )?;
    let mut buf = FrameBuf::new();
    match Response::decode(buf.read_frame(&mut s)?)? {
        Response::HelloOk { .. } => Ok(s),
        other => bail!("hello: {other:?}"),
    }
}

/// A running keyward agent in its own home.
pub struct Keyward {
    dir: tempfile::TempDir,
    child: Daemon,
    /// Its socket.
    pub socket: PathBuf,
}

impl Keyward {
    /// Starts an agent (optionally pinned); `items` > 0 creates an account
    /// with that many items (one of them `bench`) and leaves it unlocked.
    pub fn start(pin: Option<usize>, items: usize) -> Result<Self> {
        let k = Self::start_locked(pin, items)?;
        if items > 0 {
            let mut c = k.client().with_context(|| {
                std::fs::read_to_string(k.home().join("agent.log")).unwrap_or_default()
            })?;
            c.unlock(PASSWORD)?;
        }
        Ok(k)
    }

    /// Like `start`, but leaves the account locked: an agent as it is at
    /// login, with a vault on disk that nobody has unlocked yet.
    pub fn start_locked(pin: Option<usize>, items: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("keyward-bench-")
            .tempdir()?;
        let home = dir.path().to_owned();
        std::fs::create_dir_all(home.join("config"))?;
        // Never lock during a benchmark.
        std::fs::write(
            home.join("config/config.toml"),
            "idle_lock_seconds = 0\nlifetime_seconds = 0\n",
        )?;
        if items > 0 {
            // Build the vault with the library (one write for all items).
            let data = home.join("data");
            std::fs::create_dir_all(&data)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
            let tmp = data.join("new.kwv");
            let (mut v, sk) = keyward_agent::vault::create(
                &tmp,
                &Password::new(PASSWORD)?,
                KdfParams::DEFAULT,
                1,
            )?;
            let mut entries: Vec<(String, Vec<u8>)> = vec![("bench".into(), VALUE.to_vec())];
            entries.extend(
                (1..items).map(|i| (format!("filler/{i:06}"), format!("value-{i}").into_bytes())),
            );
            v.add_many(&tmp, &entries, 1)?;
            let id = v.account_id();
            std::fs::rename(&tmp, data.join(format!("vault-{id}.kwv")))?;
            keyward_agent::protect::Store::store(
                &keyward_agent::protect::file::FileProtector::new(
                    &data,
                    &id,
                    keyward_agent::harden::euid(),
                ),
                &sk,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            v.upsert_protector(
                &data.join(format!("vault-{id}.kwv")),
                keyward_agent::vault::format::ProtectorKind::File,
                1,
            )?;
        }
        let child = spawn(
            &bin_dir().join("keyward-agent"),
            pin,
            &home.join("agent.log"),
            |c| {
                c.env("KEYWARD_HOME", &home)
                    .env_remove("DBUS_SESSION_BUS_ADDRESS");
            },
        )?;
        let socket = home.join("run/agent.sock");
        let k = Self { dir, child, socket };
        wait_for(&k.socket, "the keyward agent's socket")?;
        Ok(k)
    }

    /// Starts an agent with a fresh account made through the protocol (for the memory figures).
    pub fn start_with_init(pin: Option<usize>) -> Result<Self> {
        let k = Self::start(pin, 0)?;
        let mut c = k.client()?;
        match c.call(&Request::Init(InitRequest {
            password: PASSWORD.into(),
            protector: "file".into(),
        }))? {
            Response::Created { .. } => Ok(k),
            other => bail!("init: {other:?}"),
        }
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its home.
    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// A protocol client (retrying briefly while a fresh agent gets ready).
    pub fn client(&self) -> Result<keyward_client::Client> {
        let start = Instant::now();
        loop {
            match keyward_client::Client::connect(&self.socket) {
                Ok(c) => return Ok(c),
                Err(e) if start.elapsed() > Duration::from_secs(5) => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// A raw connection after the handshake.
    pub fn raw(&self) -> Result<UnixStream> {
        connect_raw(&self.socket)
    }

    /// The `get bench` request, as a frame.
    pub fn get_request() -> Vec<u8> {
        Request::Get {
            name: "bench".into(),
        }
        .encode()
        .0
    }

    /// Unlocks with the benchmark password.
    pub fn unlock(&self) -> Result<()> {
        self.client()?.unlock(PASSWORD)?;
        Ok(())
    }
}

/// A running ssh-agent with one ed25519 key.
pub struct SshAgent {
    _dir: tempfile::TempDir,
    child: Daemon,
    /// Its socket.
    pub socket: PathBuf,
    /// The key it holds (its private key file; `.pub` beside it).
    pub key: PathBuf,
}

impl SshAgent {
    /// Starts `ssh-agent -D` (optionally pinned) and loads a fresh ed25519 key.
    pub fn start(pin: Option<usize>) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("ssh-bench-").tempdir()?;
        let key = dir.path().join("id_ed25519");
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
            .arg(&key)
            .status()?
            .success();
        if !ok {
            bail!("ssh-keygen failed");
        }
        let socket = dir.path().join("agent.sock");
        let program = which("ssh-agent").context("ssh-agent not found (package openssh-client)")?;
        let child = spawn(&program, pin, &dir.path().join("ssh-agent.log"), |c| {
            c.arg("-D").arg("-a").arg(&socket);
        })?;
        wait_for(&socket, "ssh-agent's socket")?;
        let ok = Command::new("ssh-add")
            .arg("-q")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &socket)
            .stderr(Stdio::null())
            .status()?
            .success();
        if !ok {
            bail!("ssh-add failed");
        }
        Ok(Self {
            _dir: dir,
            child,
            socket,
            key,
        })
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A raw connection.
    pub fn raw(&self) -> Result<UnixStream> {
        Ok(UnixStream::connect(&self.socket)?)
    }

    /// SSH_AGENTC_REQUEST_IDENTITIES (message 11), framed.
    pub fn identities_request() -> Vec<u8> {
        vec![0, 0, 0, 1, 11]
    }
}

/// Finds a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// One request/response over a length-prefixed protocol (both speak `u32`
/// big-endian length + payload). Returns the reply's first byte.
pub fn round_trip(s: &mut UnixStream, request: &[u8], reply: &mut Vec<u8>) -> Result<u8> {
    s.write_all(request)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let n = u32::from_be_bytes(len) as usize;
    reply.resize(n, 0);
    s.read_exact(reply)?;
    Ok(reply.first().copied().unwrap_or(0))
}
