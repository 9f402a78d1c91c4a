#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The systemd user units and the socket-activation path, for real.

use keyward_e2e::{Home, agent_bin, require, signal};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn units_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/systemd"
    ))
}

/// `systemd-analyze --user verify` on copies whose ExecStart points at the
/// built agent; returns (success, stderr).
fn verify(dir: &Path, units: &[&str]) -> (bool, String) {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["--user", "--man=no", "verify"])
        .args(units)
        .current_dir(dir)
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_unit_files_pass_systemd_analyze_verify() {
    if !require("systemd-analyze (package systemd)", has("systemd-analyze")) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let agent = agent_bin();
    for name in ["keyward-agent.service", "keyward-agent.socket"] {
        let text = std::fs::read_to_string(units_dir().join(name)).unwrap();
        std::fs::write(
            d.path().join(name),
            text.replace("/usr/bin/keyward-agent", agent.to_str().unwrap()),
        )
        .unwrap();
    }
    let (ok, stderr) = verify(d.path(), &["keyward-agent.socket", "keyward-agent.service"]);
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify complained:\n{stderr}"
    );
    // The check can fail: a unit with an unknown key and a missing program.
    std::fs::write(
        d.path().join("broken.service"),
        "[Service]\nExecStrat=/x\nExecStart=/nonexistent\n",
    )
    .unwrap();
    let (ok, stderr) = verify(d.path(), &["broken.service"]);
    assert!(
        !ok || !stderr.trim().is_empty(),
        "verify accepted a broken unit"
    );
    // The hardening the issue asks for is in the unit.
    let service = std::fs::read_to_string(units_dir().join("keyward-agent.service")).unwrap();
    for option in [
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "ProtectSystem=strict",
        "MemoryDenyWriteExecute=yes",
        "LockPersonality=yes",
        "UMask=0077",
        "Type=notify",
    ] {
        assert!(service.contains(option), "{option} missing");
    }
}

/// Kills a process we started when dropped.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_agent_takes_its_socket_from_systemd_socket_activate() {
    if !require(
        "systemd-socket-activate (package systemd)",
        has("systemd-socket-activate"),
    ) {
        return;
    }
    let home = Home::new();
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&home.paths.runtime_dir)
        .unwrap();
    let socket = home.paths.socket();
    let log = home.path().join("activated.log");
    let child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg("--fdname=agent")
        .arg("-E")
        .arg(format!("KEYWARD_HOME={}", home.path().display()))
        .args(["-E", "KEYWARD_LOG=info"])
        .arg(agent_bin())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let activator = Reap(child);
    home.wait_for(Duration::from_secs(5), "the activation socket", || {
        socket.exists()
    });
    // Nothing runs the agent yet; the first client starts it through the socket.
    let st = home
        .run(&["--no-autostart", "status", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(st["state"], "uninitialized");
    let pid = st["agent_pid"].as_i64().unwrap() as i32;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("using the socket passed by the service manager"),
        "{text}"
    );
    // The agent tightened the socket that systemd-socket-activate made 0644.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // It works like any agent.
    home.init("pw for activation");
    home.run_with(&["--no-autostart", "set", "k"], Some(b"v"), None)
        .expect_code(0);
    assert_eq!(
        home.run(&["--no-autostart", "get", "k"])
            .expect_code(0)
            .stdout,
        "v"
    );
    signal(pid, rustix::process::Signal::TERM);
    home.wait_for(
        Duration::from_secs(5),
        "the activated agent to stop",
        || {
            !Path::new(&format!("/proc/{pid}/exe")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z"))
        },
    );
    drop(activator);
}

#[test]
fn the_ssh_socket_can_be_socket_activated_too() {
    if !require(
        "systemd-socket-activate (package systemd) and ssh-add (openssh-client)",
        has("systemd-socket-activate") && has("ssh-add"),
    ) {
        return;
    }
    let home = Home::new();
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&home.paths.runtime_dir)
        .unwrap();
    let socket = home.paths.socket();
    let ssh_sock = home.paths.runtime_dir.join("ssh.sock");
    let log = home.path().join("activated.log");
    // As keyward-agent.socket lists them: keyward's socket, then the SSH one.
    let child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg("-l")
        .arg(&ssh_sock)
        .arg("-E")
        .arg(format!("KEYWARD_HOME={}", home.path().display()))
        .args(["-E", "KEYWARD_LOG=info"])
        .arg(agent_bin())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let activator = Reap(child);
    home.wait_for(Duration::from_secs(5), "the activation sockets", || {
        socket.exists() && ssh_sock.exists()
    });
    // The first SSH client starts the agent: no account, so no identities.
    let ssh_add = |args: &[&str]| {
        Command::new("ssh-add")
            .args(args)
            .env("SSH_AUTH_SOCK", &ssh_sock)
            .env_remove("SSH_ASKPASS")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = ssh_add(&["-l"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no identities"));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("SSH agent on the socket passed by the service manager"),
        "{text}"
    );
    assert!(
        text.contains("using the socket passed by the service manager"),
        "{text}"
    );
    let mode = std::fs::metadata(&ssh_sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The same agent serves both: an account made through keyward's socket,
    // a key added and listed through the SSH one.
    home.init("pw for activation");
    let key = home.path().join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", "activated", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success());
    assert!(ssh_add(&[key.to_str().unwrap()]).status.success());
    let listed = ssh_add(&["-l"]);
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).contains("activated"));
    let st = home
        .run(&["--no-autostart", "status", "--json"])
        .expect_code(0)
        .json();
    let pid = st["agent_pid"].as_i64().unwrap() as i32;
    signal(pid, rustix::process::Signal::TERM);
    home.wait_for(
        Duration::from_secs(5),
        "the activated agent to stop",
        || {
            !Path::new(&format!("/proc/{pid}/exe")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z"))
        },
    );
    drop(activator);
}

/// A private systemd user manager (`systemd --user`) for one fresh account:
/// its own home (nothing in it), runtime directory and unit directory
/// holding keyward's units with ExecStart pointing at the built agent. It
/// runs in a mount namespace of its own where /run/systemd says "booted
/// with systemd" (a container without systemd as PID 1 lacks that and the
/// "inaccessible" nodes the sandboxing options mount over hidden paths).
/// Stopped (and with it the agent) when dropped.
struct UserManager {
    /// Held while the manager runs: two root user managers share the
    /// cgroup tree (/app.slice/keyward-agent.service), so one stopping its
    /// units would stop the other's agent.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
    /// The account's home: not under /tmp, which the unit's PrivateTmp=
    /// hides from the agent (see `start`).
    dir: tempfile::TempDir,
    manager: Option<std::process::Child>,
}

/// The shell script run inside `unshare --mount`: a private /run/systemd,
/// then the manager.
const USER_MANAGER_SH: &str = r#"set -e
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
mkdir -p /run/systemd/system /run/systemd/inaccessible
cd /run/systemd/inaccessible
install -m 0 /dev/null reg
mkdir -m 0 dir
mkfifo -m 0 fifo
mknod -m 0 chr c 0 0
mknod -m 0 blk b 0 0
python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("sock")'
chmod 0 sock
cd /
exec /usr/lib/systemd/systemd --user --unit=keyward-agent.socket
"#;

impl UserManager {
    /// Whether this machine can run one (root for the mount namespace).
    fn available() -> bool {
        require(
            "root, unshare, python3 and /usr/lib/systemd/systemd (packages systemd, util-linux)",
            rustix::process::geteuid().is_root()
                && has("unshare")
                && has("python3")
                && Path::new("/usr/lib/systemd/systemd").exists(),
        )
    }

    /// Starts a manager for a fresh home, with `env` added to its
    /// environment (a user manager passes its environment to its services,
    /// as environment.d does on a desktop); `$HOME` in a value is replaced
    /// by the home.
    fn start(env: &[(&str, &str)]) -> Self {
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let guard = ONE.lock().unwrap_or_else(|e| e.into_inner());
        // Not under /tmp or /var/tmp (PrivateTmp= hides those from the
        // agent, and ReadWritePaths=%h then fails with 226/NAMESPACE): the
        // target directory, unless the checkout itself lives there (CI may
        // clone into /tmp), then /var/lib (the test runs as root; the
        // directory is removed when the test ends).
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let base = if target.starts_with("/tmp") || target.starts_with("/var/tmp") {
            Path::new("/var/lib")
        } else {
            target
        };
        let dir = tempfile::Builder::new()
            .prefix("keyward-systemd-")
            .tempdir_in(base)
            .unwrap();
        let (home, run, units) = (
            dir.path().join("home"),
            dir.path().join("run"),
            dir.path().join("units"),
        );
        for d in [&home, &run, &units] {
            std::fs::create_dir(d).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        // The agent binary beside the home, for the same reason: a build
        // under /tmp is hidden from the service by PrivateTmp= (203/EXEC).
        let agent = dir.path().join("keyward-agent");
        std::fs::copy(agent_bin(), &agent).unwrap();
        for name in ["keyward-agent.service", "keyward-agent.socket"] {
            let text = std::fs::read_to_string(units_dir().join(name)).unwrap();
            std::fs::write(
                units.join(name),
                text.replace("/usr/bin/keyward-agent", agent.to_str().unwrap()),
            )
            .unwrap();
        }
        let manager = Command::new("unshare")
            .args(["--mount", "sh", "-c", USER_MANAGER_SH])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &run)
            .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
            .envs(
                env.iter()
                    .map(|(k, v)| (k, v.replace("$HOME", home.to_str().unwrap()))),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("manager.log")).unwrap())
            .spawn()
            .unwrap();
        let m = Self {
            _one_at_a_time: guard,
            dir,
            manager: Some(manager),
        };
        let socket = m.run_dir().join("keyward/agent.sock");
        let start = std::time::Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the user manager did not listen on {}:\n{}",
                socket.display(),
                m.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        m
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The manager's log and the service's status, for failure messages.
    fn log(&self) -> String {
        let status = Command::new("systemctl")
            .args(["--user", "--no-pager", "status", "keyward-agent.service"])
            .env("XDG_RUNTIME_DIR", self.run_dir())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!(
            "{}\n{status}",
            std::fs::read_to_string(self.dir.path().join("manager.log")).unwrap_or_default()
        )
    }

    /// Runs `keyward --no-autostart args…` as the account would, with
    /// `stdin`: only the socket the manager listens on can answer.
    fn keyward(&self, args: &[&str], stdin: &str) -> (i32, String, String) {
        use std::io::Write;
        let mut child = Command::new(keyward_e2e::keyward_bin())
            .arg("--no-autostart")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.home())
            .env("XDG_RUNTIME_DIR", self.run_dir())
            .env("KEYWARD_PINENTRY", "none")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Creates the account (file protector: no keychain here), stores and
    /// reads an item back; returns the vault's path as the agent reports it.
    fn init_set_get(&self) -> PathBuf {
        let (code, out, err) = self.keyward(&["status", "--json"], "");
        assert_eq!(code, 0, "status failed: {err}\n{}", self.log());
        assert!(out.contains(r#""state":"uninitialized""#), "{out}");
        let (code, out, err) = self.keyward(
            &["init", "--protector", "file", "--password-stdin", "--json"],
            "systemd fresh account pw\n",
        );
        assert_eq!(code, 0, "init failed: {err}\n{}", self.log());
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        let (code, _, err) = self.keyward(&["set", "k"], "v");
        assert_eq!(code, 0, "set failed: {err}\n{}", self.log());
        let (code, out, err) = self.keyward(&["get", "k"], "");
        assert_eq!((code, out.as_str()), (0, "v"), "get failed: {err}");
        PathBuf::from(j["vault"].as_str().unwrap())
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        let Some(mut m) = self.manager.take() else {
            return;
        };
        // SIGTERM: the manager stops its units (the agent), then exits.
        signal(m.id() as i32, rustix::process::Signal::TERM);
        for _ in 0..500 {
            if m.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = m.kill();
        let _ = m.wait();
    }
}

/// The unit's ReadWritePaths= used to name ~/.local/share/keyward and
/// ~/.local/state/keyward, which had to exist: a fresh account's agent
/// failed with 226/NAMESPACE before it could create its directories.
#[test]
fn the_service_starts_on_a_fresh_account_without_its_directories() {
    if !UserManager::available() {
        return;
    }
    let m = UserManager::start(&[]);
    assert!(!m.home().join(".local").exists());
    let vault = m.init_set_get();
    let home = m.home();
    assert!(
        vault.starts_with(home.join(".local/share/keyward")),
        "{}",
        vault.display()
    );
    assert!(vault.is_file());
    assert!(home.join(".local/state/keyward").is_dir());
}

/// The agent's data directory follows XDG_DATA_HOME under systemd too
/// (the old unit made only ~/.local/share/keyward writable), and is
/// created there on a fresh account.
#[test]
fn the_service_honours_xdg_data_home() {
    if !UserManager::available() {
        return;
    }
    let m = UserManager::start(&[("XDG_DATA_HOME", "$HOME/data")]);
    let vault = m.init_set_get();
    assert!(
        vault.starts_with(m.home().join("data/keyward")),
        "{}",
        vault.display()
    );
    assert!(vault.is_file());
    assert!(!m.home().join(".local/share/keyward").exists());
}
