#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `pam_keyward.so` through the real PAM stack: a real user made for each
//! test, a service file in /etc/pam.d that loads the freshly built module by
//! absolute path, `pamtester` as the login program, and the real agent.
//!
//! Needs root and pamtester (`apt-get install -y --no-install-recommends
//! libpam0g-dev pamtester`); skipped otherwise, unless
//! `KEYWARD_REQUIRE_SERVICES=1`, which makes a missing piece a failure.
//!
//! Everything a test creates (the user and its home, the service file, the
//! agent and any other process of the user, the runtime directory) is removed
//! by [`TestUser`]'s `Drop`, also when the test fails.

use keyward_e2e::{FAST_KDF, Run, agent_bin, bin_dir, keyward_bin, require};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// A random lowercase hex string (std's per-process random hasher keys).
fn random_hex(n: usize) -> String {
    let mut out = String::new();
    while out.len() < n {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(n);
    out
}

/// Whether the tests can run here; skips (or fails under
/// `KEYWARD_REQUIRE_SERVICES=1`) with a message otherwise.
fn pam_available() -> bool {
    require(
        "root (to create users and /etc/pam.d files)",
        rustix::process::geteuid().is_root(),
    ) && require(
        "pamtester (apt-get install pamtester)",
        Path::new("/usr/bin/pamtester").is_file(),
    ) && require(
        "useradd, userdel, chpasswd and setpriv",
        [
            "/usr/sbin/useradd",
            "/usr/sbin/userdel",
            "/usr/sbin/chpasswd",
            "/usr/bin/setpriv",
        ]
        .iter()
        .all(|p| Path::new(p).is_file()),
    )
}

/// Builds the module (next to keyward and keyward-agent) and returns its path.
fn module_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = bin_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "pam_keyward"])
            .env("CARGO_TARGET_DIR", dir.parent().unwrap());
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cannot run cargo to build pam_keyward");
        assert!(status.success(), "building pam_keyward failed");
        let so = dir.join("libpam_keyward.so");
        assert!(so.is_file(), "{} was not built", so.display());
        so
    })
}

/// Whether every directory above `path` and the file itself are
/// world-executable (so that the test user can run it).
fn world_executable(path: &Path) -> bool {
    path.ancestors()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

fn run(mut cmd: Command, line: String, stdin: Option<&[u8]>) -> Run {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {line}: {e}"));
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        // The program may not read everything (a failed step): ignore EPIPE.
        let _ = w.write_all(input);
    }
    let o = child.wait_with_output().unwrap();
    Run {
        cmd: line,
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn root_cmd(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut c = Command::new(program);
    c.args(args);
    run(c, format!("{program} {}", args.join(" ")), stdin)
}

/// Runs a user-management command, retrying while another one holds the
/// passwd lock (tests run in parallel).
fn admin(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let start = Instant::now();
    loop {
        let r = root_cmd(program, args, stdin);
        let busy = r.stderr.contains("lock") || r.stderr.contains("try again");
        if r.code == 0 || !busy || start.elapsed() > Duration::from_secs(20) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn proc_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let uids: Vec<u32> = line[4..]
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    // Real, effective, saved and filesystem uid must all agree.
    uids.iter().all(|&u| u == uids[0]).then(|| uids[0])
}

/// The real uid of a process (from its status: /proc/PID itself belongs to
/// root when the process is not dumpable, as the agent is).
fn real_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line[4..].split_whitespace().next()?.parse().ok()
}

fn is_gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// Every process running as `uid` (found by scanning /proc).
fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| real_uid(pid) == Some(uid))
        .filter(|&pid| !is_gone(pid))
        .collect()
}

fn kill(pid: i32, sig: rustix::process::Signal) {
    keyward_e2e::signal(pid, sig);
}

// ------------------------------------------------------------- test user

/// A real user with a keyward account, a PAM service file that loads the
/// module, and everything removed again on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    /// The pam.d service name and file.
    service: String,
    service_file: PathBuf,
    keyward: PathBuf,
    agent: PathBuf,
    /// Copies of the binaries, when the build directory is not reachable by
    /// the user.
    _bins: Option<tempfile::TempDir>,
    created: bool,
}

impl TestUser {
    /// A user whose login password is `login_password`, with a config for
    /// fast key derivation (no account yet).
    fn new(login_password: &str) -> Self {
        module_path(); // build it before anything is created
        let name = format!("kwpam{}", random_hex(8));
        let service = format!("keyward-test-{}", random_hex(8));
        let mut u = TestUser {
            name: name.clone(),
            uid: 0,
            gid: 0,
            home: PathBuf::from(format!("/home/{name}")),
            service_file: PathBuf::from(format!("/etc/pam.d/{service}")),
            service,
            keyward: keyward_bin(),
            agent: agent_bin(),
            _bins: None,
            created: false,
        };
        let r = admin(
            "/usr/sbin/useradd",
            &["-m", "-s", "/bin/sh", "-d", u.home.to_str().unwrap(), &name],
            None,
        );
        assert_eq!(r.code, 0, "useradd failed\n{r}");
        u.created = true;
        let md = std::fs::metadata(&u.home).unwrap();
        u.uid = md.uid();
        u.gid = md.gid();
        assert_ne!(u.uid, 0);
        let r = admin(
            "/usr/sbin/chpasswd",
            &[],
            Some(format!("{name}:{login_password}\n").as_bytes()),
        );
        assert_eq!(r.code, 0, "chpasswd failed\n{r}");
        // The user must be able to run the binaries (the agent is started as
        // the user); copy them if the build directory is private.
        if !world_executable(&u.keyward) || !world_executable(&u.agent) {
            let d = tempfile::Builder::new()
                .prefix("kwpam-bin-")
                .tempdir()
                .unwrap();
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            for b in [&mut u.keyward, &mut u.agent] {
                let to = d.path().join(b.file_name().unwrap());
                // A hard link when possible (the debug binaries are large).
                if std::fs::hard_link(&*b, &to).is_err() {
                    std::fs::copy(&*b, &to).unwrap();
                }
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
                *b = to;
            }
            u._bins = Some(d);
        }
        // The user's own config file (KEYWARD_HOME is not used: the module
        // finds everything from HOME, like a real login).
        let conf = u.home.join(".config/keyward");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("config.toml"), FAST_KDF).unwrap();
        for p in [
            u.home.join(".config"),
            conf.clone(),
            conf.join("config.toml"),
        ] {
            std::os::unix::fs::chown(&p, Some(u.uid), Some(u.gid)).unwrap();
        }
        u
    }

    /// The default directory of the user's socket (no XDG_RUNTIME_DIR in
    /// these logins).
    fn default_runtime_dir(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/keyward-{}", self.uid))
    }

    /// The directory of the user's socket: the default, or the replacement
    /// the user's runtime pointer names (when another user took the default).
    fn runtime_dir(&self) -> PathBuf {
        self.pointed_runtime_dir()
            .unwrap_or_else(|| self.default_runtime_dir())
    }

    /// The directory the user's runtime pointer names, if it is the user's.
    fn pointed_runtime_dir(&self) -> Option<PathBuf> {
        let pointer = self.home.join(".local/state/keyward/runtime-dir");
        let dir = PathBuf::from(std::fs::read_to_string(pointer).ok()?.trim_end());
        let md = std::fs::symlink_metadata(&dir).ok()?;
        (md.is_dir() && md.uid() == self.uid).then_some(dir)
    }

    fn socket(&self) -> PathBuf {
        self.runtime_dir().join("agent.sock")
    }

    /// Writes the PAM service: pam_unix decides, pam_keyward follows.
    fn write_service(&self, session_options: &str, timeout_secs: u64) {
        self.write_service_with("", "", session_options, timeout_secs);
    }

    /// Like [`Self::write_service`], with `session_before` (a whole line)
    /// in the session stack before pam_keyward.
    fn write_service_after(&self, session_before: &str, session_options: &str, timeout_secs: u64) {
        self.write_service_with("", session_before, session_options, timeout_secs);
    }

    /// The service with `auth_options` on pam_keyward's auth line too.
    fn write_service_with(
        &self,
        auth_options: &str,
        session_before: &str,
        session_options: &str,
        timeout_secs: u64,
    ) {
        let module = module_path().display().to_string();
        let agent = self.agent.display().to_string();
        let common = format!("debug timeout={timeout_secs} agent={agent}");
        let text = format!(
            "# keyward PAM test service (removed when the test ends)\n\
             auth     required  pam_unix.so\n\
             auth     required  {module} {common} {auth_options}\n\
             {session_before}\n\
             session  required  {module} {common} {session_options}\n\
             password requisite pam_unix.so\n\
             password required  {module} {common} {session_options}\n"
        );
        std::fs::write(&self.service_file, text).unwrap();
    }

    /// `pamtester SERVICE USER ops…` as root (like login or sshd), `input`
    /// on stdin; returns the run and how long it took.
    fn pamtester(&self, ops: &[&str], input: &str) -> (Run, Duration) {
        self.pamtester_as(ops, input, false)
    }

    /// Like [`Self::pamtester`]; `as_user_ruid` gives pamtester the user's real
    /// uid (effective uid still root), as the set-uid `passwd` program has.
    fn pamtester_as(&self, ops: &[&str], input: &str, as_user_ruid: bool) -> (Run, Duration) {
        let mut c;
        if as_user_ruid {
            c = Command::new("/usr/bin/setpriv");
            c.arg(format!("--ruid={}", self.uid))
                .arg("/usr/bin/pamtester");
        } else {
            c = Command::new("/usr/bin/pamtester");
        }
        c.arg(&self.service).arg(&self.name).args(ops);
        c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        let line = format!("pamtester {} {} {}", self.service, self.name, ops.join(" "));
        let start = Instant::now();
        let r = run(c, line, Some(input.as_bytes()));
        (r, start.elapsed())
    }

    /// [`SWITCH_USER_APP`] as root on this user's service: authenticates
    /// this user, sets `PAM_USER` to `session_user`, then runs `ops`
    /// (`open_session`, `chauthtok`); `input` answers the prompts, a line each.
    fn pam_app(&self, session_user: &str, ops: &[&str], input: &str) -> Run {
        let mut c = Command::new("/usr/bin/python3");
        c.args(["-c", SWITCH_USER_APP])
            .arg(&self.service)
            .arg(&self.name)
            .arg(session_user)
            .args(ops);
        c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        let line = format!(
            "pam app {} {} (then PAM_USER={session_user}) {}",
            self.service,
            self.name,
            ops.join(" ")
        );
        run(c, line, Some(input.as_bytes()))
    }

    /// `keyward args…` as the user (HOME set, clean environment); `secret`
    /// goes to its standard input through a pipe the user owns.
    fn kw(&self, args: &[&str], secret: Option<&str>) -> Run {
        self.kw_env(args, secret, &[])
    }

    /// Like [`Self::kw`], with `env` added to the clean environment (an
    /// agent the CLI starts inherits it).
    fn kw_env(&self, args: &[&str], secret: Option<&str>, env: &[(&str, &str)]) -> Run {
        let mut c = Command::new("/usr/bin/setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("env")
            .arg("-i")
            .arg(format!("HOME={}", self.home.display()))
            .arg("PATH=/usr/bin:/bin")
            .arg(format!("KEYWARD_AGENT={}", self.agent.display()));
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        if secret.is_some() {
            // The CLI reopens /dev/fd/0, which fails for a pipe created by root.
            // `KW_FD3` in `env` names a file of the user's opened on fd 3.
            c.args([
                "sh",
                "-c",
                if env.iter().any(|(k, _)| *k == "KW_FD3") {
                    "cat | exec \"$0\" \"$@\" 3<\"$KW_FD3\""
                } else {
                    "cat | exec \"$0\" \"$@\""
                },
            ]);
        }
        c.arg(&self.keyward).args(args);
        c.env_clear().env("PATH", "/usr/bin:/bin");
        run(
            c,
            format!("keyward {} (as {})", args.join(" "), self.name),
            secret.map(str::as_bytes),
        )
    }

    /// Creates the keyward account (the CLI starts the agent).
    fn init(&self, master: &str) {
        let r = self.kw(
            &["init", "--password-stdin", "--protector", "file", "--json"],
            Some(master),
        );
        assert_eq!(r.code, 0, "keyward init failed\n{r}");
    }

    /// `keyward status --json` without starting an agent.
    fn status(&self) -> serde_json::Value {
        let r = self.kw(&["--no-autostart", "status", "--json"], None);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("status is not JSON ({e})\n{r}"))
    }

    fn state(&self) -> String {
        self.status()["state"].as_str().unwrap_or("?").to_owned()
    }

    fn unlock(&self, password: &str) -> Run {
        self.kw(
            &["--no-autostart", "unlock", "--password-stdin"],
            Some(password),
        )
    }

    fn lock(&self) {
        let r = self.kw(&["--no-autostart", "lock"], None);
        assert_eq!(r.code, 0, "{r}");
    }

    /// The agent's pid, from its lock file, if it runs as the user.
    fn agent_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.runtime_dir().join("agent.lock"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (proc_uid(pid) == Some(self.uid) && !is_gone(pid)).then_some(pid)
    }

    /// Stops the agent by its pid (also when it is stopped) and waits.
    fn stop_agent(&self) {
        let Some(pid) = self.agent_pid() else { return };
        kill(pid, rustix::process::Signal::TERM);
        kill(pid, rustix::process::Signal::CONT);
        wait_gone(pid, Duration::from_secs(5));
    }

    /// Fails if any of `secrets` is in `runs`, in a file under the home
    /// directory (the agent log included), or in a file under /tmp.
    fn assert_no_leak(&self, secrets: &[&str], runs: &[&Run]) {
        for r in runs {
            for s in secrets {
                assert!(
                    !r.stdout.contains(s) && !r.stderr.contains(s),
                    "a password is in the output of\n{r}"
                );
            }
        }
        let log = self.home.join(".local/state/keyward/agent.log");
        assert!(log.is_file(), "the agent log {} is missing", log.display());
        let mut seen = 0;
        for root in [self.home.as_path(), Path::new("/tmp")] {
            scan(root, 0, secrets, &mut seen);
        }
        assert!(seen > 0);
    }
}

fn wait_gone(pid: i32, limit: Duration) {
    let start = Instant::now();
    while !is_gone(pid) {
        if start.elapsed() > limit {
            kill(pid, rustix::process::Signal::KILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Looks for `secrets` in regular files under `dir` (bounded depth and size).
fn scan(dir: &Path, depth: usize, secrets: &[&str], seen: &mut usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        // Build trees (a clone of this repository under /tmp) hold no
        // secret of a test and would use the file budget up.
        let build_tree = e.file_name() == "target" || e.file_name() == ".git";
        if md.is_dir() && depth < 4 && !build_tree {
            scan(&p, depth + 1, secrets, seen);
        } else if md.is_file() && md.len() <= 8 << 20 && *seen < 50_000 {
            let mut buf = Vec::new();
            if std::fs::File::open(&p)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .is_ok()
            {
                *seen += 1;
                for s in secrets {
                    assert!(
                        !buf.windows(s.len()).any(|w| w == s.as_bytes()),
                        "a password is in the file {}",
                        p.display()
                    );
                }
            }
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.service_file);
        if !self.created {
            return;
        }
        if self.uid == 0 {
            // The uid was never learnt: kill nothing (uid 0 is root's).
            let _ = admin("/usr/sbin/userdel", &["-r", &self.name], None);
            return;
        }
        // Every process of the user, by pid: the agent (maybe stopped) first.
        self.stop_agent();
        let pointed = self.pointed_runtime_dir();
        for _ in 0..3 {
            let pids = processes_of(self.uid);
            if pids.is_empty() {
                break;
            }
            for &pid in &pids {
                kill(pid, rustix::process::Signal::KILL);
            }
            for pid in pids {
                wait_gone(pid, Duration::from_secs(2));
            }
        }
        let r = admin("/usr/sbin/userdel", &["-r", &self.name], None);
        if r.code != 0 && r.code != 12 {
            // 12: the home could not be removed entirely; cleaned below.
            eprintln!("userdel failed\n{r}");
        }
        let _ = std::fs::remove_dir_all(&self.home);
        // The user's own runtime directories (a default another user took is
        // the test's to remove).
        for dir in pointed.into_iter().chain([self.default_runtime_dir()]) {
            if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir() && m.uid() == self.uid) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

// ------------------------------------------------------------ syslog sink

/// Catches what is sent to /dev/log while it lives (only when no syslog
/// daemon owns /dev/log), and removes it again.
struct SyslogSink {
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    inode: u64,
}

impl SyslogSink {
    fn start() -> Option<Self> {
        let path = Path::new("/dev/log");
        if std::fs::symlink_metadata(path).is_ok() {
            return None; // a real syslog runs; do not touch it
        }
        let sock = UnixDatagram::bind(path).ok()?;
        let inode = std::fs::symlink_metadata(path).ok()?.ino();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .ok()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (lines.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    l.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        Some(Self {
            lines,
            stop,
            thread: Some(thread),
            inode,
        })
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::fs::symlink_metadata("/dev/log").is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file("/dev/log");
        }
    }
}

// ------------------------------------------------------------ fake agent

/// A listener run by root at the user's socket path: counts connections and
/// the bytes it receives (there must be none).
struct RootListener {
    path: PathBuf,
    connections: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RootListener {
    fn bind(path: &Path) -> Self {
        let l = UnixListener::bind(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        l.set_nonblocking(true).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, b, s) = (connections.clone(), bytes.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut open = Vec::new();
            while !s.load(Ordering::Relaxed) {
                if let Ok((stream, _)) = l.accept() {
                    stream.set_nonblocking(true).unwrap();
                    c.fetch_add(1, Ordering::SeqCst);
                    open.push(stream);
                }
                for st in &mut open {
                    let mut buf = [0u8; 1024];
                    if let Ok(n) = st.read(&mut buf) {
                        b.fetch_add(n, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            path: path.to_owned(),
            connections,
            bytes,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for RootListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

// ------------------------------------------------------------------ tests

/// Runs a stand-in agent (`script`, Python) as `u` on `u`'s socket, writing
/// what it sees to `record`; returns once it listens (it creates
/// `record.ready` then).
fn python_agent_as(u: &TestUser, script: &str, record: &Path) -> std::process::Child {
    let child = Command::new("/usr/bin/setpriv")
        .arg(format!("--reuid={}", u.uid))
        .arg(format!("--regid={}", u.gid))
        .arg("--init-groups")
        .args(["/usr/bin/python3", "-c", script])
        .arg(u.socket())
        .arg(record)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !record.with_extension("record.ready").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the stand-in agent did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn assert_ok(r: &Run) {
    assert_eq!(r.code, 0, "the login must succeed\n{r}");
}

#[test]
fn the_login_password_unlocks_the_agent_and_close_session_locks_it() {
    if !pam_available() {
        return;
    }
    let pw = format!("kw-pw-{}", random_hex(16));
    let u = TestUser::new(&pw);
    u.init(&pw);
    let first = u.agent_pid().expect("init started an agent");
    u.stop_agent();
    assert_eq!(u.state(), "not-running");
    u.write_service("auto_start lock_on_close", 10);

    // Like login: authenticate, then open the session.
    let (open, _) = u.pamtester(&["authenticate", "open_session"], &format!("{pw}\n"));
    assert_ok(&open);
    assert!(open.stderr.contains("started the keyward agent"), "{open}");
    assert!(open.stderr.contains("unlocked the keyward agent"), "{open}");
    let st = u.status();
    assert_eq!(st["state"], "unlocked", "{st}");
    // The module started a new agent, and it runs as the user, not as root.
    let pid = u.agent_pid().expect("the module started the agent");
    assert_ne!(pid, first);
    assert_eq!(st["agent_pid"], pid);
    assert_eq!(proc_uid(pid), Some(u.uid));

    // close_session with lock_on_close.
    let (close, _) = u.pamtester(&["close_session"], "");
    assert_ok(&close);
    assert!(close.stderr.contains("locked the keyward agent"), "{close}");
    assert_eq!(u.state(), "locked");

    // The whole login in one transaction, against the running agent.
    let (all, _) = u.pamtester(
        &["authenticate", "open_session", "close_session"],
        &format!("{pw}\n"),
    );
    assert_ok(&all);
    let unlocked = all
        .stderr
        .find("unlocked the keyward agent")
        .expect("unlocked");
    let locked = all
        .stderr
        .rfind("locked the keyward agent of")
        .expect("locked");
    assert!(unlocked < locked, "{all}");
    assert_eq!(u.state(), "locked");
    assert_eq!(u.agent_pid(), Some(pid), "the running agent was used");

    u.assert_no_leak(&[&pw], &[&open, &close, &all]);
}

#[test]
fn a_different_master_password_leaves_the_agent_locked_and_the_login_succeeds() {
    if !pam_available() {
        return;
    }
    let login = format!("kw-login-{}", random_hex(16));
    let master = format!("kw-master-{}", random_hex(16));
    let u = TestUser::new(&login);
    u.init(&master);
    u.lock();
    u.write_service("auto_start", 10);
    let sink = SyslogSink::start();

    let (r, _) = u.pamtester(&["authenticate", "open_session"], &format!("{login}\n"));
    assert_ok(&r);
    assert!(r.stderr.contains("differs from the login password"), "{r}");
    assert_eq!(u.state(), "locked");
    // The failed try is the agent's business (it counts it); the right
    // password still works at once.
    assert_eq!(u.unlock(&master).code, 0);

    // The real log: facility AUTHPRIV (10), priority NOTICE (5): <85>.
    if let Some(sink) = sink {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mine = |l: &String| l.contains("pam_keyward(") && l.contains(&u.name);
        while !sink
            .lines()
            .iter()
            .any(|l| mine(l) && l.contains("differs"))
        {
            assert!(
                Instant::now() < deadline,
                "not in syslog: {:#?}",
                sink.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let lines = sink.lines();
        let differs = lines
            .iter()
            .find(|l| mine(l) && l.contains("differs"))
            .unwrap();
        assert!(differs.starts_with("<85>"), "{differs}");
        assert!(
            differs.contains(&format!("pam_keyward({}:session)", u.service)),
            "{differs}"
        );
        for l in &lines {
            assert!(
                !l.contains(&login) && !l.contains(&master),
                "a password is in syslog: {l}"
            );
        }
    } else {
        eprintln!("note: /dev/log exists (a syslog daemon runs); syslog content not checked");
    }
    u.assert_no_leak(&[&login, &master], &[&r]);
}

#[test]
fn a_hung_agent_cannot_hold_up_the_login() {
    if !pam_available() {
        return;
    }
    let pw = format!("kw-pw-{}", random_hex(16));
    let u = TestUser::new(&pw);
    u.init(&pw);
    u.lock();
    u.write_service("auto_start", 2);
    let pid = u.agent_pid().unwrap();
    // The agent accepts connections (the kernel does) but never answers.
    kill(pid, rustix::process::Signal::STOP);

    let (r, took) = u.pamtester(
        &["authenticate", "open_session", "close_session"],
        &format!("{pw}\n"),
    );
    kill(pid, rustix::process::Signal::CONT);
    assert_ok(&r);
    assert!(took < Duration::from_secs(2 + 3), "took {took:?}\n{r}");
    assert!(
        took >= Duration::from_secs(2),
        "the bound was not reached? {took:?}\n{r}"
    );
    assert!(r.stderr.contains("did not answer within 2 s"), "{r}");
    // The killed helper left nothing behind but the agent itself.
    assert_eq!(processes_of(u.uid), vec![pid]);
}

#[test]
fn the_password_goes_only_to_a_socket_of_the_user() {
    if !pam_available() {
        return;
    }
    let pw = format!("kw-pw-{}", random_hex(16));
    let u = TestUser::new(&pw);
    u.init(&pw);
    u.stop_agent();
    u.write_service("auto_start", 10);
    assert!(u.runtime_dir().is_dir() && !u.socket().exists());

    // Root listens at the user's socket path: the file belongs to root.
    let fake = RootListener::bind(&u.socket());
    let (r, _) = u.pamtester(&["authenticate", "open_session"], &format!("{pw}\n"));
    assert_ok(&r);
    assert!(r.stderr.contains("refusing to talk to"), "{r}");
    assert!(r.stderr.contains("belongs to uid 0"), "{r}");
    assert_eq!(
        fake.connections.load(Ordering::SeqCst),
        0,
        "not even a connection"
    );
    assert!(u.agent_pid().is_none(), "no agent was started beside it");

    // The file now belongs to the user, but the listener is still root's.
    std::os::unix::fs::lchown(u.socket(), Some(u.uid), Some(u.gid)).unwrap();
    let (r2, _) = u.pamtester(&["authenticate", "open_session"], &format!("{pw}\n"));
    assert_ok(&r2);
    assert!(r2.stderr.contains("runs as uid 0"), "{r2}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        fake.bytes.load(Ordering::SeqCst),
        0,
        "the fake agent received bytes"
    );
    assert!(u.agent_pid().is_none());
    drop(fake);

    // Once it is gone, the real agent is started and unlocked.
    let (r3, _) = u.pamtester(&["authenticate", "open_session"], &format!("{pw}\n"));
    assert_ok(&r3);
    assert_eq!(u.state(), "unlocked", "{r3}");
}

#[test]
fn a_login_password_change_changes_the_master_password_too() {
    if !pam_available() {
        return;
    }
    let old = format!("kw-old-{}", random_hex(16));
    let new = format!("kw-new-{}", random_hex(16));
    let u = TestUser::new(&old);
    u.init(&old);
    u.lock();
    u.write_service("auto_start", 10);

    // As `passwd` run by the user: pam_unix asks the current password.
    let (r, _) = u.pamtester_as(&["chauthtok"], &format!("{old}\n{new}\n{new}\n"), true);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stderr.contains("changed the keyward Master Password"),
        "{r}"
    );
    assert_eq!(u.state(), "locked", "left locked as it was found");
    assert_eq!(
        u.unlock(&old).code,
        6,
        "the old Master Password no longer works"
    );
    assert_eq!(u.unlock(&new).code, 0, "the new one does");
    u.lock();
    // The login password changed as well.
    let (login, _) = u.pamtester(&["authenticate"], &format!("{new}\n"));
    assert_ok(&login);

    // Root's pam_unix does not ask for the current password; within one
    // transaction the password `auth` checked stands in for it (an expired
    // password changed at login).
    let fourth = format!("kw-fourth-{}", random_hex(16));
    let (r1, _) = u.pamtester(
        &["authenticate", "chauthtok"],
        &format!("{new}\n{fourth}\n{fourth}\n"),
    );
    assert_eq!(r1.code, 0, "{r1}");
    assert!(
        r1.stderr.contains("changed the keyward Master Password"),
        "{r1}"
    );
    assert_eq!(u.unlock(&fourth).code, 0, "the Master Password followed");
    u.lock();

    // A login password that is not the Master Password: nothing changes,
    // and the password change itself succeeds.
    let other = format!("kw-other-{}", random_hex(16));
    let third = format!("kw-third-{}", random_hex(16));
    let r = admin(
        "/usr/sbin/chpasswd",
        &[],
        Some(format!("{}:{other}\n", u.name).as_bytes()),
    );
    assert_eq!(r.code, 0, "{r}");
    let (r2, _) = u.pamtester_as(
        &["chauthtok"],
        &format!("{other}\n{third}\n{third}\n"),
        true,
    );
    assert_eq!(r2.code, 0, "{r2}");
    assert!(
        r2.stderr.contains("was not the keyward Master Password"),
        "{r2}"
    );
    assert_eq!(
        u.unlock(&fourth).code,
        0,
        "the Master Password is unchanged"
    );

    u.assert_no_leak(
        &[&old, &new, &fourth, &other, &third],
        &[&r, &r1, &r2, &login],
    );
}

#[test]
fn auto_start_leaves_users_without_keyward_alone() {
    if !pam_available() {
        return;
    }
    let pw = format!("kw-pw-{}", random_hex(16));
    let u = TestUser::new(&pw);
    u.write_service("auto_start lock_on_close", 5);
    let (r, _) = u.pamtester(
        &["authenticate", "open_session", "close_session"],
        &format!("{pw}\n"),
    );
    assert_ok(&r);
    assert!(r.stderr.contains("has no keyward data"), "{r}");
    assert!(r.stderr.contains("no keyward agent runs"), "{r}");
    assert_eq!(
        processes_of(u.uid),
        Vec::<i32>::new(),
        "no agent was started"
    );
    assert!(!u.runtime_dir().exists());
}

#[test]
fn lock_on_close_waits_for_the_users_last_session() {
    use keyward_e2e::bus::{FakeSession, Sessions, fake_logind, private_bus};
    if !pam_available() || !require("dbus-daemon", Path::new("/usr/bin/dbus-daemon").exists()) {
        return;
    }
    let pw = format!("kw-pw-{}", random_hex(16));
    let u = TestUser::new(&pw);
    // A bus the user's agent can reach, with a fake logind (run by this test,
    // as root) on it; the agent is started with it as its system bus.
    let dir = tempfile::Builder::new()
        .prefix("kwpam-bus-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bus = private_bus(dir.path(), true);
    let session = |id, uid, state| FakeSession {
        id,
        uid,
        class: "user",
        state,
    };
    let sessions: Sessions = Arc::new(Mutex::new(vec![
        session("c1", u.uid, "active"),
        session("c2", u.uid, "active"),
    ]));
    let _logind = fake_logind(&bus, &sessions, &["c1", "c2"]);
    let r = u.kw_env(
        &["init", "--password-stdin", "--protector", "file", "--json"],
        Some(&pw),
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)],
    );
    assert_eq!(r.code, 0, "keyward init failed\n{r}");
    let pid = u.agent_pid().expect("init started the agent");
    // pam_env stands in for pam_systemd: it names the login's logind
    // session (XDG_SESSION_ID) in the PAM environment.
    let env_conf = dir.path().join("session.conf");
    std::fs::write(&env_conf, "XDG_SESSION_ID DEFAULT=c1\n").unwrap();
    let pam_env = format!(
        "session  required  pam_env.so readenv=0 user_readenv=0 conffile={}",
        env_conf.display()
    );
    let login = |options: &str| {
        u.write_service_after(&pam_env, options, 10);
        let (r, _) = u.pamtester(
            &["authenticate", "open_session", "close_session"],
            &format!("{pw}\n"),
        );
        assert_ok(&r);
        assert!(r.stderr.contains("unlocked the keyward agent"), "{r}");
        r
    };
    u.lock();

    // Session c1 ends while c2 is open: the agent stays unlocked.
    let r = login("lock_on_close");
    assert!(
        r.stderr.contains("session c1 of")
            && r.stderr.contains("stays unlocked")
            && r.stderr.contains("(c2)"),
        "{r}"
    );
    assert_eq!(u.state(), "unlocked");

    // lock_on_close=always locks whatever else is open.
    u.lock();
    let r = login("lock_on_close=always");
    assert!(!r.stderr.contains("stays unlocked"), "{r}");
    assert_eq!(u.state(), "locked");

    // c2 has ended meanwhile: c1 was the last session, lock.
    sessions.lock().unwrap().retain(|s| s.id != "c2");
    let r = login("lock_on_close");
    assert!(r.stderr.contains("no other session of"), "{r}");
    assert_eq!(u.state(), "locked");
    assert_eq!(u.agent_pid(), Some(pid), "the same agent throughout");
    u.assert_no_leak(&[&pw], &[&r]);
}

/// An agent from before `SessionEnd`, run as the user: answers `Hello`,
/// records `Lock`, and refuses any request it does not know with
/// `BadRequest` and a closed connection, as the agent did then.
const OLD_AGENT: &str = r#"
import os, socket, struct, sys
sock_path, record = sys.argv[1], sys.argv[2]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(sock_path)
os.chmod(sock_path, 0o600)
srv.listen(4)
open(record + ".ready", "w").close()
def frame(tag, body=b""):
    payload = bytes([tag]) + body
    return struct.pack(">I", len(payload)) + payload
def s(text):
    b = text.encode()
    return struct.pack(">I", len(b)) + b
def read_exact(c, n):
    data = b""
    while len(data) < n:
        more = c.recv(n - len(data))
        if not more:
            return None
        data += more
    return data
while True:
    c, _ = srv.accept()
    while True:
        head = read_exact(c, 4)
        if head is None:
            break
        payload = read_exact(c, struct.unpack(">I", head)[0])
        if payload is None:
            break
        tag = payload[0]
        with open(record, "a") as f:
            f.write("%02x\n" % tag)
        if tag == 0x01:
            # The client's own protocol version: an agent of this protocol
            # from before SessionEnd (an agent of another protocol version
            # closes every connection after HelloOk, and is restarted
            # after an upgrade).
            c.sendall(frame(0x80, payload[1:3] + s("0.0.9-old") + struct.pack(">I", os.getpid())))
        elif tag == 0x05:
            c.sendall(frame(0x81))
        else:
            c.sendall(frame(0xff, struct.pack(">H", 1) + s("malformed request: unknown tag") + struct.pack(">Q", 0) + b"\x00"))
            break
    c.close()
"#;

#[test]
fn lock_on_close_falls_back_to_lock_with_an_older_agent() {
    if !pam_available() || !require("python3", Path::new("/usr/bin/python3").exists()) {
        return;
    }
    let pw = format!("kw-pw-{}", random_hex(16));
    let u = TestUser::new(&pw);
    u.init(&pw);
    u.stop_agent();
    assert!(u.runtime_dir().is_dir() && !u.socket().exists());
    let record = u.home.join("old-agent.record");
    let mut old = python_agent_as(&u, OLD_AGENT, &record);
    u.write_service("lock_on_close", 10);
    let (r, _) = u.pamtester(&["close_session"], "");
    let _ = old.kill();
    let _ = old.wait();
    assert_ok(&r);
    let seen = std::fs::read_to_string(&record).unwrap_or_default();
    // Hello, SessionEnd (refused), then Hello and Lock on a new connection.
    assert_eq!(seen, "01\n16\n01\n05\n", "{r}");
    assert!(r.stderr.contains("older than this module"), "{r}");
    assert!(r.stderr.contains("locked the keyward agent of"), "{r}");
    let _ = std::fs::remove_file(u.socket());
}

#[test]
fn yubikey_pin_at_login_unlocks_an_account_kept_by_a_yubikey() {
    use virtual_yubikey::harness::{CardConfig, PcscEnv};
    if !pam_available() {
        return;
    }
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let _card = env
        .insert_card(CardConfig::new(44_444_444).version(virtual_yubikey::state::Version(5, 4, 3)))
        .unwrap();
    // The user's agent reaches this test's pcscd through its socket.
    for dir in [env.dir(), env.socket_path().parent().unwrap()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    const PIN: &str = "123456";
    let pw = format!("kw-pw-{}", random_hex(16));
    let u = TestUser::new(&pw);
    let pcsc = env.pcsc_env();
    let pcsc: Vec<(&str, &str)> = pcsc.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = u.kw_env(
        &["init", "--password-stdin", "--protector", "file", "--json"],
        Some(&pw),
        &pcsc,
    );
    assert_eq!(r.code, 0, "{r}");
    // Adding and removing protectors asks for the Master Password (on
    // standard input); the PIN comes from a file of the user's on fd 3.
    let pin_file = u.home.join("pin");
    std::fs::write(&pin_file, PIN).unwrap();
    std::os::unix::fs::chown(&pin_file, Some(u.uid), Some(u.gid)).unwrap();
    let mut with_pin = pcsc.clone();
    with_pin.push(("KW_FD3", pin_file.to_str().unwrap()));
    let r = u.kw_env(
        &[
            "--no-autostart",
            "protector",
            "add",
            "yubikey",
            "--pin-fd",
            "3",
            "--password-stdin",
        ],
        Some(&pw),
        &with_pin,
    );
    assert_eq!(r.code, 0, "{r}");
    std::fs::remove_file(&pin_file).unwrap();
    // Only the YubiKey keeps the Secret Key now: no PIN, no unlock.
    let r = u.kw(
        &[
            "--no-autostart",
            "protector",
            "remove",
            "file",
            "--password-stdin",
        ],
        Some(&pw),
    );
    assert_eq!(r.code, 0, "{r}");
    u.lock();
    u.write_service_with("yubikey_pin", "", "", 20);
    let login = |input: String| {
        let (r, _) = u.pamtester(&["authenticate", "open_session"], &input);
        assert_ok(&r);
        assert!(!r.stdout.contains(PIN) && !r.stderr.contains(PIN), "{r}");
        r
    };

    // The PIN asked after the password opens the YubiKey.
    let r = login(format!("{pw}\n{PIN}\n"));
    assert!(r.stderr.contains("kept the YubiKey PIN"), "{r}");
    assert!(
        r.stderr.contains("Secret Key from yubikey:44444444:82"),
        "{r}"
    );
    assert_eq!(u.state(), "unlocked");

    // Enter skips it: the login goes on, the agent stays locked.
    u.lock();
    let r = login(format!("{pw}\n\n"));
    assert!(r.stderr.contains("no YubiKey PIN given"), "{r}");
    assert!(r.stderr.contains("no PIN was given"), "{r}");
    assert_eq!(u.state(), "locked");

    // A wrong PIN: said so with the tries left; the login goes on.
    let r = login(format!("{pw}\n000000\n"));
    assert!(r.stderr.contains("could not unlock"), "{r}");
    assert!(r.stderr.to_lowercase().contains("pin"), "{r}");
    assert_eq!(u.state(), "locked");

    // Users without keyward are not asked.
    let other = TestUser::new(&pw);
    other.write_service_with("yubikey_pin", "", "", 20);
    let (r, _) = other.pamtester(&["authenticate"], &format!("{pw}\n"));
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stderr.contains("does not use keyward"), "{r}");
    u.assert_no_leak(&[&pw], &[&r]);
}

/// A PAM application doing what `sudo -u OTHER` does: `pam_start` for one
/// user, `pam_authenticate`, then `pam_set_item(PAM_USER, OTHER)` before the
/// session (or password) step — which pamtester cannot do. Arguments:
/// SERVICE USER SESSION_USER OPS…; the prompts are answered with the lines
/// of standard input, in order. Prints each step's return code.
const SWITCH_USER_APP: &str = r#"
import ctypes, sys
from ctypes import CFUNCTYPE, POINTER, Structure, byref, c_char_p, c_int, c_size_t, c_void_p, cast, sizeof
service, user, session_user, ops = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
answers = [line.rstrip("\n").encode() for line in sys.stdin]
pam = ctypes.CDLL("libpam.so.0")
libc = ctypes.CDLL("libc.so.6")
libc.calloc.restype, libc.calloc.argtypes = c_void_p, [c_size_t, c_size_t]
libc.strdup.restype, libc.strdup.argtypes = c_void_p, [c_char_p]
class Message(Structure):
    _fields_ = [("msg_style", c_int), ("msg", c_char_p)]
class Response(Structure):
    _fields_ = [("resp", c_void_p), ("resp_retcode", c_int)]
CONV = CFUNCTYPE(c_int, c_int, POINTER(POINTER(Message)), POINTER(POINTER(Response)), c_void_p)
class Conv(Structure):
    _fields_ = [("conv", CONV), ("appdata_ptr", c_void_p)]
def converse(n, msgs, resp, _data):
    out = cast(libc.calloc(n, sizeof(Response)), POINTER(Response))
    for i in range(n):
        m = msgs[i].contents
        if m.msg_style in (1, 2):  # PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON
            out[i].resp = libc.strdup(answers.pop(0) if answers else b"")
        else:
            sys.stderr.write("conversation: %s\n" % (m.msg or b"").decode(errors="replace"))
    resp[0] = out
    return 0
callback = CONV(converse)
conv = Conv(callback, None)
pam.pam_start.argtypes = [c_char_p, c_char_p, POINTER(Conv), POINTER(c_void_p)]
pam.pam_set_item.argtypes = [c_void_p, c_int, c_char_p]
for f in ("pam_authenticate", "pam_open_session", "pam_chauthtok", "pam_end"):
    getattr(pam, f).argtypes = [c_void_p, c_int]
h = c_void_p()
rc = pam.pam_start(service.encode(), user.encode(), byref(conv), byref(h))
if rc != 0:
    sys.exit("pam_start: %d" % rc)
rc = pam.pam_authenticate(h, 0)
print("authenticate", rc, flush=True)
if rc == 0 and session_user != user:
    rc = pam.pam_set_item(h, 2, session_user.encode())  # PAM_USER
    print("PAM_USER", rc, flush=True)
for op in ops:
    if rc != 0:
        break
    rc = getattr(pam, "pam_" + op)(h, 0)
    print(op, rc, flush=True)
pam.pam_end(h, rc)
sys.exit(0 if rc == 0 else 1)
"#;

/// A hostile "agent" run by a user at her own socket: records every
/// connection and every byte it receives, and answers nothing.
const RECORDING_AGENT: &str = r#"
import os, socket, sys
sock_path, record = sys.argv[1], sys.argv[2]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(sock_path)
os.chmod(sock_path, 0o600)
srv.listen(4)
open(record + ".ready", "w").close()
while True:
    c, _ = srv.accept()
    with open(record, "ab") as f:
        f.write(b"connection\n")
    c.settimeout(5)
    try:
        while True:
            data = c.recv(4096)
            if not data:
                break
            with open(record, "ab") as f:
                f.write(data)
    except OSError:
        pass
    c.close()
"#;

#[test]
fn a_password_goes_only_to_the_agent_of_the_user_who_typed_it() {
    if !pam_available() || !require("python3", Path::new("/usr/bin/python3").exists()) {
        return;
    }
    // bob authenticates; alice is who the session is for (`sudo -i -u alice`
    // run by bob: sudo checks bob's password, then sets PAM_USER=alice).
    let bob_pw = format!("kw-bob-{}", random_hex(16));
    let bob = TestUser::new(&bob_pw);
    let alice = TestUser::new(&format!("kw-alice-{}", random_hex(16)));
    bob.init(&bob_pw);
    bob.lock();
    // Alice's Master Password is bob's login password: were it sent to her
    // agent, the agent would unlock.
    alice.init(&bob_pw);
    alice.lock();
    bob.write_service("auto_start", 10);

    // The application works: authenticated and opened for the same user,
    // bob's agent unlocks.
    let same = bob.pam_app(&bob.name, &["open_session"], &format!("{bob_pw}\n"));
    assert_ok(&same);
    assert!(same.stdout.contains("open_session 0"), "{same}");
    assert!(same.stderr.contains("unlocked the keyward agent"), "{same}");
    assert_eq!(bob.state(), "unlocked");
    bob.lock();

    // The session is alice's: her agent is left as it is.
    let switched = bob.pam_app(&alice.name, &["open_session"], &format!("{bob_pw}\n"));
    assert_ok(&switched);
    assert!(switched.stdout.contains("PAM_USER 0"), "{switched}");
    assert!(switched.stdout.contains("open_session 0"), "{switched}");
    assert!(
        switched.stderr.contains("changed since authentication"),
        "{switched}"
    );
    assert!(
        !switched.stderr.contains("unlocked the keyward agent"),
        "{switched}"
    );
    assert!(!switched.stderr.contains("socket of"), "{switched}");
    assert_eq!(alice.state(), "locked", "{switched}");
    assert_eq!(bob.state(), "locked");

    // The same with a password change for alice (root's pam_unix asks no
    // old password): bob's password must not stand in for alice's old one.
    let alice_new = format!("kw-alice-new-{}", random_hex(16));
    let changed = bob.pam_app(
        &alice.name,
        &["chauthtok"],
        &format!("{bob_pw}\n{alice_new}\n{alice_new}\n"),
    );
    assert_ok(&changed);
    assert!(changed.stdout.contains("chauthtok 0"), "{changed}");
    assert!(
        changed.stderr.contains("changed since authentication"),
        "{changed}"
    );
    assert!(
        !changed
            .stderr
            .contains("changed the keyward Master Password"),
        "{changed}"
    );
    assert_eq!(alice.state(), "locked");
    assert_eq!(
        alice.unlock(&bob_pw).code,
        0,
        "alice's Master Password is unchanged"
    );
    alice.lock();

    // A hostile alice runs her own "agent" at her socket: it gets nothing,
    // not even a connection.
    alice.stop_agent();
    assert!(alice.runtime_dir().is_dir() && !alice.socket().exists());
    let record = alice.home.join("fake-agent.record");
    let mut fake = python_agent_as(&alice, RECORDING_AGENT, &record);
    let hostile = bob.pam_app(&alice.name, &["open_session"], &format!("{bob_pw}\n"));
    std::thread::sleep(Duration::from_millis(200));
    let _ = fake.kill();
    let _ = fake.wait();
    let _ = std::fs::remove_file(alice.socket());
    assert_ok(&hostile);
    assert!(
        hostile.stderr.contains("changed since authentication"),
        "{hostile}"
    );
    let seen = std::fs::read(&record).unwrap_or_default();
    assert!(
        seen.is_empty(),
        "alice's fake agent was contacted: {:?}\n{hostile}",
        String::from_utf8_lossy(&seen)
    );

    // Listed only in the session stack, the module has no password it can
    // vouch for (PAM_AUTHTOK's owner is unknown there): it does nothing.
    let module = module_path().display().to_string();
    std::fs::write(
        &bob.service_file,
        format!(
            "auth     required  pam_unix.so\n\
             session  required  {module} debug timeout=10 agent={} auto_start\n",
            bob.agent.display()
        ),
    )
    .unwrap();
    let (r, _) = bob.pamtester(&["authenticate", "open_session"], &format!("{bob_pw}\n"));
    assert_ok(&r);
    assert!(r.stderr.contains("no login password kept"), "{r}");
    assert_eq!(bob.state(), "locked", "{r}");

    bob.assert_no_leak(
        &[&bob_pw, &alice_new],
        &[&same, &switched, &changed, &hostile, &r],
    );
}

#[test]
fn the_agent_started_at_login_binds_the_socket_the_module_waits_on() {
    if !pam_available() {
        return;
    }
    // Declared first, removed last (after the user and its processes).
    let tmp = tempfile::Builder::new()
        .prefix("kwpam-tmp-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let pw = format!("kw-pw-{}", random_hex(16));
    let u = TestUser::new(&pw);
    u.init(&pw);
    u.stop_agent();
    // pam_env stands in for pam_tmpdir: TMPDIR in the PAM environment, no
    // XDG_RUNTIME_DIR. The session's `keyward` looks under $TMPDIR.
    let session_tmp = tmp.path().join("session");
    std::fs::create_dir(&session_tmp).unwrap();
    std::fs::set_permissions(&session_tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let env_conf = tmp.path().join("session.conf");
    std::fs::write(
        &env_conf,
        format!("TMPDIR DEFAULT={}\n", session_tmp.display()),
    )
    .unwrap();
    u.write_service_after(
        &format!(
            "session  required  pam_env.so readenv=0 user_readenv=0 conffile={}",
            env_conf.display()
        ),
        "auto_start",
        5,
    );
    // The login program's own TMPDIR is not the session's: not used.
    let host_tmp = tmp.path().join("host");
    let mut c = Command::new("/usr/bin/pamtester");
    c.args([&u.service, &u.name, "authenticate", "open_session"]);
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("TMPDIR", &host_tmp);
    let r = run(
        c,
        format!("TMPDIR={} pamtester {}", host_tmp.display(), u.service),
        Some(format!("{pw}\n").as_bytes()),
    );
    let runtime = session_tmp.join(format!("keyward-{}", u.uid));
    let pid: Option<i32> = std::fs::read_to_string(runtime.join("agent.lock"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    assert_ok(&r);
    assert!(
        r.stderr
            .contains(&format!("socket of {}: {}", u.name, runtime.display())),
        "{r}"
    );
    assert!(r.stderr.contains("started the keyward agent"), "{r}");
    assert!(r.stderr.contains("unlocked the keyward agent"), "{r}");
    assert!(!host_tmp.exists(), "{r}");
    let st = u.kw_env(
        &["--no-autostart", "status", "--json"],
        None,
        &[("TMPDIR", session_tmp.to_str().unwrap())],
    );
    if let Some(pid) = pid {
        kill(pid, rustix::process::Signal::TERM);
        wait_gone(pid, Duration::from_secs(5));
    }
    assert!(st.stdout.contains("\"unlocked\""), "{st}\n{r}");
    assert!(pid.is_some(), "{r}");
}

#[test]
fn a_link_into_a_root_only_directory_tells_the_login_nothing() {
    if !pam_available() {
        return;
    }
    // A directory only root can read.
    let root_only = tempfile::Builder::new()
        .prefix("kwpam-root-only-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(root_only.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let pw = format!("kw-pw-{}", random_hex(16));
    let u = TestUser::new(&pw);
    // The user points ~/.local/share into it: to root, ~/.local/share/keyward
    // is a directory once root makes one there; to the user, nothing is.
    let local = u.home.join(".local");
    std::fs::create_dir(&local).unwrap();
    std::os::unix::fs::chown(&local, Some(u.uid), Some(u.gid)).unwrap();
    let share = local.join("share");
    std::os::unix::fs::symlink(root_only.path(), &share).unwrap();
    std::os::unix::fs::lchown(&share, Some(u.uid), Some(u.gid)).unwrap();
    u.write_service_with("yubikey_pin", "", "", 5);
    let login = || {
        let (r, _) = u.pamtester(&["authenticate"], &format!("{pw}\n123456\n"));
        assert_eq!(r.code, 0, "{r}");
        r
    };
    let without = login();
    std::fs::create_dir(root_only.path().join("keyward")).unwrap();
    let with = login();
    // Whether root's directory holds a `keyward` or not, the module says
    // and does the same: it looked as the user, who can see neither.
    for r in [&without, &with] {
        assert!(r.stderr.contains("does not use keyward"), "{r}");
        assert!(
            !r.stderr.contains("kept the YubiKey PIN")
                && !r.stderr.contains("no YubiKey PIN given")
                && !r.stdout.contains("YubiKey PIN"),
            "the PIN was asked: the module looked as root\n{r}"
        );
    }
}

/// `(owner, mode, inode, number of entries)` of a directory, to see that a
/// test left it untouched.
fn fingerprint(dir: &Path) -> (u32, u32, u64, usize) {
    let md = std::fs::symlink_metadata(dir).unwrap();
    let n = std::fs::read_dir(dir).map_or(0, |d| d.count());
    (md.uid(), md.mode(), md.ino(), n)
}

/// Removes a directory the test made, also when the test fails.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_runtime_dir_another_user_made_first_does_not_stop_the_unlock_at_login() {
    if !pam_available() {
        return;
    }
    let pw = format!("kw-pw-{}", random_hex(16));
    let u = TestUser::new(&pw);
    u.init(&pw);
    u.stop_agent();
    // Another user (uid 65534) made /tmp/keyward-UID first, open to all.
    let taken = u.default_runtime_dir();
    std::fs::remove_dir_all(&taken).unwrap();
    std::fs::create_dir(&taken).unwrap();
    let _cleanup = RemoveDir(taken.clone());
    std::fs::set_permissions(&taken, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&taken, Some(65534), Some(65534)).unwrap();
    let before = fingerprint(&taken);
    u.write_service("auto_start", 10);

    let (r, _) = u.pamtester(&["authenticate", "open_session"], &format!("{pw}\n"));
    assert_ok(&r);
    assert!(r.stderr.contains("belongs to uid 65534"), "{r}");
    assert!(r.stderr.contains("started the keyward agent"), "{r}");
    assert!(r.stderr.contains("unlocked the keyward agent"), "{r}");
    let fresh = u
        .pointed_runtime_dir()
        .unwrap_or_else(|| panic!("no runtime pointer\n{r}"));
    assert_ne!(fresh, taken);
    assert_eq!(
        std::fs::metadata(&fresh).unwrap().mode() & 0o777,
        0o700,
        "{r}"
    );
    // The session's keyward finds the same agent; the taken directory is
    // as its owner left it.
    assert_eq!(u.state(), "unlocked");
    assert!(u.agent_pid().is_some());
    assert_eq!(
        fingerprint(&taken),
        before,
        "the taken directory was touched"
    );
    // A second login finds the agent through the pointer.
    u.lock();
    let (r2, _) = u.pamtester(&["authenticate", "open_session"], &format!("{pw}\n"));
    assert_ok(&r2);
    assert!(!r2.stderr.contains("started the keyward agent"), "{r2}");
    assert!(r2.stderr.contains("unlocked the keyward agent"), "{r2}");
    assert_eq!(fingerprint(&taken), before);
    u.assert_no_leak(&[&pw], &[&r, &r2]);
}

/// Every readable mapping of `pid` (as in memory.rs).
fn memory_of(pid: u32) -> Vec<(u64, Vec<u8>)> {
    use std::io::{Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        let path = f.nth(3).unwrap_or("");
        if !perms.starts_with('r') || path == "[vvar]" || path == "[vsyscall]" {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_ok() && mem.read_exact(&mut buf).is_ok() {
            out.push((a, buf));
        }
    }
    out
}

fn copies_in(memory: &[(u64, Vec<u8>)], needle: &[u8]) -> usize {
    memory
        .iter()
        .map(|(_, region)| {
            region
                .windows(needle.len())
                .filter(|w| w == &needle)
                .count()
        })
        .sum()
}

/// A PAM application that only authenticates, as a screen locker or `sudo`
/// does: `pam_authenticate`, then `pam_setcred(FLAGS)`, prints `ready` and
/// holds the handle until a line arrives on standard input, then
/// `pam_end`. Arguments: SERVICE USER FLAGS. The password (the first line
/// of standard input) is read with read(2) into C memory and wiped once
/// authentication is over, so that the only copies left in the process are
/// those libpam and its modules keep.
const AUTH_ONLY_APP: &str = r#"
import ctypes, sys
from ctypes import CFUNCTYPE, POINTER, Structure, byref, c_char_p, c_int, c_size_t, c_void_p, cast, sizeof
service, user, flags = sys.argv[1], sys.argv[2], int(sys.argv[3])
pam = ctypes.CDLL("libpam.so.0")
libc = ctypes.CDLL("libc.so.6")
libc.calloc.restype, libc.calloc.argtypes = c_void_p, [c_size_t, c_size_t]
libc.strdup.restype, libc.strdup.argtypes = c_void_p, [c_void_p]
libc.strchr.restype, libc.strchr.argtypes = c_void_p, [c_void_p, c_int]
libc.read.restype, libc.read.argtypes = ctypes.c_ssize_t, [c_int, c_void_p, c_size_t]
pw = ctypes.create_string_buffer(256)
got = 0
while libc.strchr(pw, 10) is None and got < 255:
    n = libc.read(0, ctypes.byref(pw, got), 255 - got)
    if n <= 0:
        break
    got += n
ctypes.memset(libc.strchr(pw, 10), 0, 1)
class Message(Structure):
    _fields_ = [("msg_style", c_int), ("msg", c_char_p)]
class Response(Structure):
    _fields_ = [("resp", c_void_p), ("resp_retcode", c_int)]
CONV = CFUNCTYPE(c_int, c_int, POINTER(POINTER(Message)), POINTER(POINTER(Response)), c_void_p)
class Conv(Structure):
    _fields_ = [("conv", CONV), ("appdata_ptr", c_void_p)]
def converse(n, msgs, resp, _data):
    out = cast(libc.calloc(n, sizeof(Response)), POINTER(Response))
    for i in range(n):
        if msgs[i].contents.msg_style == 1:  # PAM_PROMPT_ECHO_OFF: the password
            out[i].resp = libc.strdup(pw)
    resp[0] = out
    return 0
callback = CONV(converse)
conv = Conv(callback, None)
pam.pam_start.argtypes = [c_char_p, c_char_p, POINTER(Conv), POINTER(c_void_p)]
for f in ("pam_authenticate", "pam_setcred", "pam_end"):
    getattr(pam, f).argtypes = [c_void_p, c_int]
h = c_void_p()
rc = pam.pam_start(service.encode(), user.encode(), byref(conv), byref(h))
if rc != 0:
    sys.exit("pam_start: %d" % rc)
rc = pam.pam_authenticate(h, 0)
ctypes.memset(pw, 0, 256)
print("authenticate", rc, flush=True)
rc2 = pam.pam_setcred(h, flags)
print("setcred", rc2, flush=True)
print("ready", flush=True)
libc.read(0, ctypes.create_string_buffer(8), 1)
pam.pam_end(h, rc)
"#;

/// Runs [`AUTH_ONLY_APP`] on `u`'s service with `pam_setcred(flags)`;
/// returns how many copies of `pw` its memory held while it held the
/// handle, and what it printed.
fn copies_after_authentication(u: &TestUser, pw: &str, flags: u32) -> (usize, Run) {
    use std::io::BufRead;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", AUTH_ONLY_APP])
        .arg(&u.service)
        .arg(&u.name)
        .arg(flags.to_string())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{pw}\n").as_bytes()).unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.ends_with("ready\n") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        printed.push_str(&line);
    }
    let copies = if printed.ends_with("ready\n") {
        copies_in(&memory_of(child.id()), pw.as_bytes())
    } else {
        usize::MAX
    };
    let _ = stdin.write_all(b"x");
    drop(stdin);
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    printed.push_str(&rest);
    let o = child.wait_with_output().unwrap();
    let run = Run {
        cmd: format!("auth-only app {} {} setcred({flags:#x})", u.service, u.name),
        code: o.status.code().unwrap_or(-1),
        stdout: printed,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert_ne!(
        copies,
        usize::MAX,
        "the application did not get ready\n{run}"
    );
    (copies, run)
}

#[test]
fn after_authentication_alone_the_login_process_keeps_no_copy_of_the_password() {
    if !pam_available() || !require("python3", Path::new("/usr/bin/python3").exists()) {
        return;
    }
    const PAM_ESTABLISH_CRED: u32 = 0x2;
    const PAM_DELETE_CRED: u32 = 0x4;
    const PAM_REINITIALIZE_CRED: u32 = 0x8;
    const PAM_REFRESH_CRED: u32 = 0x10;
    let pw = format!("kw-pw-{}", random_hex(16));
    let u = TestUser::new(&pw);
    u.write_service("", 10);
    // The control: a session may still follow `ESTABLISH`, so the module
    // keeps its one copy, and the scan finds it.
    let (kept, run) = copies_after_authentication(&u, &pw, PAM_ESTABLISH_CRED);
    assert!(run.stdout.contains("authenticate 0"), "{run}");
    assert!(kept >= 1, "the scan does not find the kept password\n{run}");
    // A screen locker's refresh, a re-initialisation, the end: no session
    // will use it, and no copy is left while the application holds on.
    for flags in [PAM_REFRESH_CRED, PAM_REINITIALIZE_CRED, PAM_DELETE_CRED] {
        let (copies, run) = copies_after_authentication(&u, &pw, flags);
        assert!(run.stdout.contains("authenticate 0"), "{run}");
        assert_eq!(
            copies, 0,
            "the password is still in the application's memory after setcred({flags:#x})\n{run}"
        );
        assert!(
            run.stderr.contains("wiped the kept login password"),
            "{run}"
        );
    }
}
