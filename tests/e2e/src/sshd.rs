//! A private OpenSSH server for the SSH agent tests: `sshd -D` on
//! 127.0.0.1 (a free port), with its own host key, config and
//! `authorized_keys`; stopped by its pid when dropped.

use crate::signal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running sshd.
pub struct Sshd {
    child: Child,
    port: u16,
    log: PathBuf,
    /// Its `authorized_keys` file.
    pub authorized: PathBuf,
    dir: tempfile::TempDir,
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The user ssh logs in as (this process's).
pub fn current_user() -> String {
    if is_root() {
        return "root".into();
    }
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Sshd {
    /// Starts sshd accepting the keys of `authorized` (`type base64` lines).
    pub fn start(authorized: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keyward-sshd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let host = d.join("hostkey");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host)
            .output()
            .unwrap();
        assert!(out.status.success());
        let keys = d.join("authorized_keys");
        let lines: String = authorized.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&keys, lines).unwrap();
        // Privilege separation wants its empty directory (as root).
        if is_root() && !Path::new("/run/sshd").exists() {
            std::fs::create_dir_all("/run/sshd").unwrap();
            std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1:{port}\n\
                 HostKey {host}\n\
                 AuthorizedKeysFile {keys}\n\
                 PidFile {pid}\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 PermitRootLogin yes\n\
                 LogLevel DEBUG3\n",
                host = host.display(),
                keys = keys.display(),
                pid = d.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        let log = d.join("sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut sshd = Self {
            child,
            port,
            log,
            authorized: keys,
            dir,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = sshd.child.try_wait().unwrap() {
                panic!(
                    "sshd exited ({status}) before it listened\n--- log\n{}\n--- stderr\n{}",
                    sshd.log_text(),
                    std::fs::read_to_string(sshd.dir.path().join("sshd.stderr"))
                        .unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "sshd does not listen on port {port}\n{}",
                sshd.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    /// What sshd logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The arguments of `ssh … user@127.0.0.1 true` with the agent at
    /// `sock` (and no identity file), then `extra` options.
    pub fn ssh_args(&self, sock: &Path, extra: &[&str]) -> Vec<String> {
        let no_file = self.dir.path().join("no-such-identity");
        let mut args: Vec<String> = [
            "-F",
            "/dev/null",
            "-o",
            &format!("IdentityAgent={}", sock.display()),
            "-o",
            "IdentitiesOnly=no",
            "-o",
            &format!("IdentityFile={}", no_file.display()),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
            "-p",
            &self.port.to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push(format!("{}@127.0.0.1", current_user()));
        args.push("true".into());
        args
    }

    /// Runs `run(args)` (an ssh login, [`Self::ssh_args`]); returns its
    /// result and what sshd logged meanwhile.
    pub fn login<R>(&self, args: &[String], run: impl FnOnce(&[&str]) -> R) -> (R, String) {
        let before = self.log_text().len();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run(&refs);
        // sshd's session process may write its last lines just after.
        std::thread::sleep(Duration::from_millis(200));
        let log = self.log_text();
        (r, log.get(before..).unwrap_or_default().to_owned())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        signal(pid, rustix::process::Signal::TERM);
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(5) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
