//! Helpers for end-to-end tests: a private `KEYWARD_HOME` per test, the real
//! `keyward` and `keyward-agent` binaries, and failures that print everything.
//!
//! ```no_run
//! let home = keyward_e2e::Home::new();
//! let (account, secret_key) = home.init("pw");
//! home.ok(&["get", "x"]);
//! ```
//! Every agent a test starts is stopped when its [`Home`] is dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use keyward_client::{Client, Paths};

pub mod bus;
pub mod sshd;
pub mod syncthing;

/// Config every test home gets: the cheapest Argon2id a new account accepts.
pub const FAST_KDF: &str = "[kdf]\nmemory_kib = 19456\niterations = 2\nparallelism = 1\n";

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // tests run from target/<profile>/deps/<test>-<hash>
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().to_owned();
        // Build the binaries under test (cheap when up to date); the test
        // command builds them first anyway, this covers a bare `cargo test`.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile_release = dir.ends_with("release");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "keyward", "-p", "keyward-agent"]);
        if profile_release {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("cannot run cargo to build the binaries");
        assert!(
            status.success(),
            "building keyward and keyward-agent failed"
        );
        assert!(dir.join("keyward").is_file() && dir.join("keyward-agent").is_file());
        dir
    })
}

/// The `keyward` binary.
pub fn keyward_bin() -> PathBuf {
    bin_dir().join("keyward")
}

/// The `keyward-agent` binary.
pub fn agent_bin() -> PathBuf {
    bin_dir().join("keyward-agent")
}

/// The result of running a command, printed in full when an assertion fails.
#[derive(Debug)]
pub struct Run {
    /// The command line.
    pub cmd: String,
    /// Exit code (-1 for a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(cmd: String, o: Output) -> Self {
        Self {
            cmd,
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with everything unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code\n{self}");
        self
    }

    /// The stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\nexit code {}\n--- stdout\n{}\n--- stderr\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }
}

/// A private keyward home with its own agent.
pub struct Home {
    dir: tempfile::TempDir,
    /// Its paths.
    pub paths: Paths,
    /// Extra environment for every command (and the agent they start).
    env: std::cell::RefCell<Vec<(String, String)>>,
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

impl Home {
    /// A home with fast key derivation.
    pub fn new() -> Self {
        Self::with_config("")
    }

    /// A home with `extra` config lines (TOML, before the `[kdf]` table).
    pub fn with_config(extra: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keyward-e2e-")
            .tempdir()
            .unwrap();
        let paths = Paths::under(dir.path());
        std::fs::create_dir_all(&paths.config_dir).unwrap();
        std::fs::write(paths.config_file(), format!("{extra}\n{FAST_KDF}")).unwrap();
        Self {
            dir,
            paths,
            env: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Adds environment variables to every later command (and so to the
    /// agent the first command starts): e.g. the PC/SC socket of a virtual card.
    pub fn set_env(&self, vars: impl IntoIterator<Item = (String, String)>) {
        self.env.borrow_mut().extend(vars);
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `keyward` command in this home.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(keyward_bin());
        c.args(args)
            .env("KEYWARD_HOME", self.dir.path())
            .env("KEYWARD_AGENT", agent_bin())
            .env("KEYWARD_PINENTRY", "none")
            .envs(self.env.borrow().iter().cloned())
            .stdin(Stdio::null());
        c
    }

    /// Runs `keyward args…` with `stdin` and an optional secret on fd 3.
    pub fn run_with(&self, args: &[&str], stdin: Option<&[u8]>, fd3: Option<&[u8]>) -> Run {
        match fd3 {
            Some(secret) => self.run_with_fds(args, stdin, &[(3, secret)]),
            None => self.run_with_fds(args, stdin, &[]),
        }
    }

    /// Runs `keyward args…` with `stdin` and secrets on the descriptors
    /// given (3 and up).
    pub fn run_with_fds(&self, args: &[&str], stdin: Option<&[u8]>, fds: &[(u32, &[u8])]) -> Run {
        let mut c = self.command(args);
        let mut files = Vec::new();
        let mut line = format!("keyward {}", args.join(" "));
        if !fds.is_empty() {
            // Hand the secrets over through files opened by the shell.
            let mut redirects = String::new();
            let mut sh = Command::new("sh");
            for (fd, secret) in fds {
                assert!(*fd >= 3 && *fd <= 9, "fd {fd}");
                let tmp = tempfile::NamedTempFile::new_in(self.dir.path()).unwrap();
                std::fs::write(tmp.path(), secret).unwrap();
                redirects.push_str(&format!(" {fd}<\"$KW_FD{fd}\""));
                sh.env(format!("KW_FD{fd}"), tmp.path());
                line.push_str(&format!(" {fd}<secret"));
                files.push(tmp);
            }
            sh.arg("-c")
                .arg(format!("exec \"$0\" \"$@\"{redirects}"))
                .arg(keyward_bin())
                .args(args)
                .env("KEYWARD_HOME", self.dir.path())
                .env("KEYWARD_AGENT", agent_bin())
                .env("KEYWARD_PINENTRY", "none")
                .envs(self.env.borrow().iter().cloned());
            c = sh;
        }
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        } else {
            c.stdin(Stdio::null());
        }
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(input) = stdin {
            // A command may exit without reading its input: that is not our failure.
            match child.stdin.take().unwrap().write_all(input) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.unwrap(),
            }
        }
        Run::from(line, child.wait_with_output().unwrap())
    }

    /// `keyward join PATH --secret-key-fd 3 --password-stdin EXTRA…`.
    pub fn join(&self, path: &Path, sk: &str, password: &str, extra: &[&str]) -> Run {
        let mut args = vec![
            "join",
            path.to_str().unwrap(),
            "--secret-key-fd",
            "3",
            "--password-stdin",
        ];
        args.extend_from_slice(extra);
        self.run_with(
            &args,
            Some(format!("{password}\n").as_bytes()),
            Some(format!("{sk}\n").as_bytes()),
        )
    }

    /// `keyward recover --json` with `code` on fd 3 and `new_password` on
    /// standard input.
    pub fn recover(&self, code: &str, new_password: &str) -> Run {
        self.run_with(
            &[
                "recover",
                "--code-fd",
                "3",
                "--new-password-fd",
                "0",
                "--json",
            ],
            Some(format!("{new_password}\n").as_bytes()),
            Some(code.as_bytes()),
        )
    }

    /// `keyward secret-key rotate` (the password on fd 3), which must
    /// succeed; the new Secret Key.
    pub fn rotate_secret_key(&self, password: &str) -> String {
        self.run_with(
            &["secret-key", "rotate", "--password-fd", "3", "--json"],
            None,
            Some(password.as_bytes()),
        )
        .expect_code(0)
        .json()["secret_key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Runs `keyward args…`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None, None)
    }

    /// Runs and requires success.
    pub fn ok(&self, args: &[&str]) -> Run {
        self.run(args).expect_code(0)
    }

    /// Runs `keyward args… --password-stdin` with `password` on standard
    /// input (for the commands that re-ask the Master Password).
    pub fn run_pw(&self, args: &[&str], password: &str) -> Run {
        let mut all = args.to_vec();
        all.push("--password-stdin");
        self.run_with(&all, Some(format!("{password}\n").as_bytes()), None)
    }

    /// [`Self::run_pw`], requiring success.
    pub fn ok_pw(&self, args: &[&str], password: &str) -> Run {
        self.run_pw(args, password).expect_code(0)
    }

    /// Creates the account with `password` (whatever its strength: tests
    /// choose short ones); returns (account id, Secret Key).
    pub fn init(&self, password: &str) -> (String, String) {
        let r = self
            .run_with(
                &[
                    "init",
                    "--password-fd",
                    "3",
                    "--json",
                    "--allow-weak-password",
                ],
                None,
                Some(format!("{password}\n").as_bytes()),
            )
            .expect_code(0);
        let j = r.json();
        (
            j["account_id"].as_str().unwrap().to_owned(),
            j["secret_key"].as_str().unwrap().to_owned(),
        )
    }

    /// `keyward unlock --password-fd 3`.
    pub fn unlock(&self, password: &str) -> Run {
        self.run_with(
            &["unlock", "--password-fd", "3"],
            None,
            Some(password.as_bytes()),
        )
    }

    /// `keyward status --json`.
    pub fn status(&self) -> serde_json::Value {
        self.run(&["status", "--json"]).expect_code(0).json()
    }

    /// The running agent's pid, from its lock file.
    pub fn agent_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.paths.lock_file())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|&pid: &i32| Path::new(&format!("/proc/{pid}")).exists())
    }

    /// A blocking protocol client.
    pub fn client(&self) -> Client {
        Client::connect(&self.paths.socket()).unwrap()
    }

    /// Waits for `cond`, polling, up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops the agent (politely, then by force) and waits until it is gone.
    pub fn stop_agent(&self) {
        let Some(pid) = self.agent_pid() else { return };
        let _ = self
            .command(&["agent", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            if start.elapsed() > Duration::from_secs(5) {
                signal(pid, rustix::process::Signal::KILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Sends a signal to a process we started.
pub fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        self.stop_agent();
    }
}

/// Whether the test must fail rather than skip when a service is missing.
pub fn services_required() -> bool {
    std::env::var("KEYWARD_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Skips (returns false) with a message, or panics under the test command.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    assert!(
        !services_required(),
        "required for this test but missing: {what}"
    );
    eprintln!("SKIPPED: {what} is not available (tests/ci.sh installs it and runs this test)");
    false
}

/// A `keyward` command on a pseudo-terminal of its own (its controlling
/// terminal, so `/dev/tty` prompts go to it): what a person at a terminal
/// sees and types.
pub struct Terminal {
    master: std::fs::File,
    child: std::process::Child,
    /// Everything the command wrote so far.
    pub screen: String,
}

impl Terminal {
    /// Runs `keyward args…` in `home` on a new pseudo-terminal (through
    /// `setsid --ctty`, so that it becomes the controlling terminal).
    pub fn spawn(home: &Home, args: &[&str]) -> Self {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave_path = std::path::PathBuf::from(name.to_str().unwrap());
        let slave = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&slave_path)
                .unwrap()
        };
        let mut c = Command::new("setsid");
        c.arg("--ctty")
            .arg(keyward_bin())
            .args(args)
            .env("KEYWARD_HOME", home.path())
            .env("KEYWARD_AGENT", agent_bin())
            .env("KEYWARD_PINENTRY", "none")
            .env("TERM", "dumb")
            .envs(home.env.borrow().iter().cloned())
            .stdin(slave())
            .stdout(slave())
            .stderr(slave());
        let child = c.spawn().unwrap();
        let master = std::fs::File::from(master);
        rustix::fs::fcntl_setfl(&master, rustix::fs::OFlags::NONBLOCK).unwrap();
        Self {
            master,
            child,
            screen: String::new(),
        }
    }

    fn pump(&mut self) -> bool {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.screen.push_str(&String::from_utf8_lossy(&buf[..n]));
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            // EIO: the command closed the terminal (it exited).
            Err(_) => false,
        }
    }

    /// Waits (up to 30 s) until the screen shows `text` after what earlier
    /// calls consumed; panics with the screen otherwise.
    pub fn expect(&mut self, text: &str) {
        let start = std::time::Instant::now();
        while !self.screen.contains(text) {
            if !self.pump() {
                if start.elapsed() > Duration::from_secs(30) {
                    panic!(
                        "waited 30 s for {text:?}; the terminal shows:\n{}",
                        self.screen
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Consume up to the match, so the next expect looks further on.
        let at = self.screen.find(text).unwrap() + text.len();
        self.screen.drain(..at);
    }

    /// Types `line` and Enter.
    pub fn type_line(&mut self, line: &str) {
        use std::io::Write;
        self.master.write_all(line.as_bytes()).unwrap();
        self.master.write_all(b"\r").unwrap();
    }

    /// Types raw bytes (e.g. `\x04` for Ctrl-D, `\x03` for Ctrl-C).
    pub fn type_raw(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.master.write_all(bytes).unwrap();
    }

    /// Waits for the command to exit (up to 60 s); its exit code, and the
    /// rest of what it wrote.
    pub fn wait(mut self) -> (i32, String) {
        let start = std::time::Instant::now();
        loop {
            while self.pump() {}
            if let Some(status) = self.child.try_wait().unwrap() {
                while self.pump() {}
                return (status.code().unwrap_or(-1), self.screen);
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!(
                    "the command did not exit; the terminal shows:\n{}",
                    self.screen
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `c` with its output to files (so that a child it leaves behind
/// cannot hold a pipe open), `stdin` written to it (else its standard input
/// as `c` says), and
/// panics if it runs longer than `timeout`. `line` names it in messages. A
/// death by signal is noted at the end of the captured standard error.
pub fn run_bounded(mut c: Command, line: String, stdin: Option<&[u8]>, timeout: Duration) -> Run {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    c.stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap());
    if stdin.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {line}: {e}"));
    if let Some(input) = stdin {
        match child.stdin.take().unwrap().write_all(input) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{line} did not finish within {timeout:?}\n--- stderr\n{}",
                std::fs::read_to_string(err.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = std::fs::read_to_string(err.path()).unwrap_or_default();
    if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&status) {
        stderr.push_str(&format!("[killed by signal {sig}]\n"));
    }
    Run {
        cmd: line,
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(out.path()).unwrap_or_default(),
        stderr,
    }
}

/// Writes an executable shell script.
pub fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every file under `dir`, recursively, with its contents (nothing if `dir`
/// does not exist).
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}
