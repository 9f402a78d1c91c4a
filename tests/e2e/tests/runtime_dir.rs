#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The runtime directory in the shared temporary directory: without
//! `XDG_RUNTIME_DIR` the socket lives in `$TMPDIR/keyward-<uid>`, which any
//! user can create first. The agent then makes a private replacement and
//! records it in the runtime pointer (`~/.local/state/keyward/runtime-dir`),
//! which the CLI follows; the taken directory is left as it is.
//!
//! Needs root (to run keyward as uid 65534 and to make a directory of
//! another uid) and setpriv; skipped otherwise, unless
//! `KEYWARD_REQUIRE_SERVICES=1`. Hermetic: `TMPDIR` points at a directory of
//! the test's own, and everything is removed at the end.

use keyward_e2e::{FAST_KDF, Run, agent_bin, keyward_bin, require, signal};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The user keyward runs as.
const USER: u32 = 65534;
/// The user who took the default directory first.
const SQUATTER: u32 = 65533;
const PW: &str = "correct horse battery staple";

/// A home and a temporary directory for uid [`USER`], and the binaries
/// where that user can run them; the agent is stopped on drop.
struct Setup {
    /// Holds `home`, `tmp` and `bin`; removed once the agent is stopped.
    _root: tempfile::TempDir,
    home: PathBuf,
    tmp: PathBuf,
    keyward: PathBuf,
    agent: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("keyward-runtime-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (home, tmp, bin) = (
            root.path().join("home"),
            root.path().join("tmp"),
            root.path().join("bin"),
        );
        for d in [&home, &tmp, &bin] {
            std::fs::create_dir(d).unwrap();
        }
        // A shared temporary directory, like /tmp.
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = home.join(".config/keyward");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("config.toml"), FAST_KDF).unwrap();
        for p in [
            home.clone(),
            home.join(".config"),
            conf.clone(),
            conf.join("config.toml"),
        ] {
            std::os::unix::fs::chown(&p, Some(USER), Some(USER)).unwrap();
        }
        // The build directory may not be reachable by the user: link or copy.
        let mut bins = [keyward_bin(), agent_bin()];
        for b in &mut bins {
            let to = bin.join(b.file_name().unwrap());
            if std::fs::hard_link(&*b, &to).is_err() {
                std::fs::copy(&*b, &to).unwrap();
            }
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
            *b = to;
        }
        let [keyward, agent] = bins;
        Self {
            _root: root,
            home,
            tmp,
            keyward,
            agent,
        }
    }

    /// `keyward args…` as [`USER`], with a clean environment (HOME, TMPDIR,
    /// no XDG_RUNTIME_DIR); `input` on standard input.
    fn kw(&self, args: &[&str], input: Option<&str>) -> Run {
        let mut c = Command::new("/usr/bin/setpriv");
        c.arg(format!("--reuid={USER}"))
            .arg(format!("--regid={USER}"))
            .arg("--clear-groups")
            .arg("env")
            .arg("-i")
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("TMPDIR={}", self.tmp.display()))
            .arg("PATH=/usr/bin:/bin")
            .arg(format!("KEYWARD_AGENT={}", self.agent.display()));
        if input.is_some() {
            // The CLI reopens /dev/fd/0, which fails for a pipe made by root.
            c.args(["sh", "-c", "cat | exec \"$0\" \"$@\""]);
        }
        c.arg(&self.keyward).args(args);
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(input) = input {
            let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        }
        let o = child.wait_with_output().unwrap();
        Run {
            cmd: format!("keyward {} (as uid {USER})", args.join(" ")),
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.home.join(".local/state/keyward")
    }

    /// The directory the runtime pointer names, if any.
    fn pointed(&self) -> Option<PathBuf> {
        let text = std::fs::read_to_string(self.state_dir().join("runtime-dir")).ok()?;
        Some(PathBuf::from(text.trim_end()))
    }

    /// The agent's pid, from the lock file in `dir`.
    fn agent_pid(dir: &Path) -> Option<i32> {
        std::fs::read_to_string(dir.join("agent.lock"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // Stop the agent by its pid, wherever it runs.
        let dirs = self
            .pointed()
            .into_iter()
            .chain([self.tmp.join(format!("keyward-{USER}"))]);
        for dir in dirs {
            if let Some(pid) = Self::agent_pid(&dir)
                && std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .is_ok_and(|s| s.contains(&format!("Uid:\t{USER}\t")))
            {
                signal(pid, rustix::process::Signal::TERM);
                let start = Instant::now();
                while Path::new(&format!("/proc/{pid}/exe")).exists()
                    && start.elapsed() < Duration::from_secs(5)
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                signal(pid, rustix::process::Signal::KILL);
            }
        }
        // Then `_root` (a TempDir) removes everything else.
    }
}

/// `(owner, mode, inode, entries)` of a directory.
fn fingerprint(dir: &Path) -> (u32, u32, u64, usize) {
    let md = std::fs::symlink_metadata(dir).unwrap();
    let n = std::fs::read_dir(dir).map_or(0, |d| d.count());
    (md.uid(), md.mode(), md.ino(), n)
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o777
}

#[test]
fn a_runtime_dir_another_user_made_first_is_replaced_and_left_untouched() {
    if !require(
        "root and setpriv (to run keyward as uid 65534)",
        rustix::process::geteuid().is_root() && Path::new("/usr/bin/setpriv").is_file(),
    ) {
        return;
    }
    let s = Setup::new();
    // Another user made $TMPDIR/keyward-65534 first, open to everyone.
    let taken = s.tmp.join(format!("keyward-{USER}"));
    std::fs::create_dir(&taken).unwrap();
    std::fs::set_permissions(&taken, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&taken, Some(SQUATTER), Some(SQUATTER)).unwrap();
    let before = fingerprint(&taken);

    // The CLI starts the agent, which works in a private replacement.
    let init = s.kw(
        &["init", "--password-stdin", "--protector", "file", "--json"],
        Some(PW),
    );
    assert_eq!(init.code, 0, "{init}");
    let fresh = s
        .pointed()
        .unwrap_or_else(|| panic!("no runtime pointer\n{init}"));
    assert_ne!(fresh, taken);
    assert_eq!(fresh.parent(), Some(s.tmp.as_path()));
    let md = std::fs::symlink_metadata(&fresh).unwrap();
    assert!(
        md.is_dir() && md.uid() == USER && mode(&fresh) == 0o700,
        "{init}"
    );
    assert!(fresh.join("agent.sock").exists());
    assert_eq!(mode(&s.state_dir().join("runtime-dir")), 0o600);
    // The user is told: which directory was taken, which one is used.
    assert!(
        init.stderr.contains(&taken.display().to_string())
            && init.stderr.contains(&fresh.display().to_string())
            && init.stderr.contains(&format!("belongs to uid {SQUATTER}")),
        "{init}"
    );
    let log = std::fs::read_to_string(s.state_dir().join("agent.log")).unwrap();
    assert!(
        log.contains("another user may have made it first")
            && log.contains(&fresh.display().to_string()),
        "{log}"
    );

    // Every later command finds the agent through the pointer.
    let set = s.kw(&["--no-autostart", "set", "k"], Some("v"));
    assert_eq!(set.code, 0, "{set}");
    let get = s.kw(&["--no-autostart", "get", "k"], None);
    assert_eq!((get.code, get.stdout.as_str()), (0, "v"), "{get}");
    let pid = Setup::agent_pid(&fresh).expect("the agent's lock file");
    let st = s.kw(&["--no-autostart", "status", "--json"], None);
    assert!(
        st.stdout.contains(&format!("\"agent_pid\":{pid}")) || st.stdout.contains(&pid.to_string()),
        "{st}"
    );

    // Restarted, the agent uses the same directory again.
    let stop = s.kw(&["agent", "stop"], None);
    assert_eq!(stop.code, 0, "{stop}");
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}/exe")).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the agent did not stop"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = s.kw(&["status"], None);
    assert_eq!(status.code, 0, "{status}");
    assert_eq!(s.pointed(), Some(fresh.clone()));
    assert!(Setup::agent_pid(&fresh).is_some_and(|p| p != pid));

    // The taken directory is as its owner left it.
    assert_eq!(
        fingerprint(&taken),
        before,
        "the taken directory was touched"
    );
    let dirs: Vec<_> = std::fs::read_dir(&s.tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
}

#[test]
fn the_agent_log_is_created_private() {
    if !require(
        "root and setpriv (to run keyward as uid 65534)",
        rustix::process::geteuid().is_root() && Path::new("/usr/bin/setpriv").is_file(),
    ) {
        return;
    }
    let s = Setup::new();
    let init = s.kw(
        &["init", "--password-stdin", "--protector", "file", "--json"],
        Some(PW),
    );
    assert_eq!(init.code, 0, "{init}");
    let log = s.state_dir().join("agent.log");
    assert_eq!(mode(&log), 0o600, "the agent log is readable by others");
    // Nothing was taken: the default directory, no pointer, no notice.
    assert_eq!(s.pointed(), None);
    assert!(!init.stderr.contains("notice"), "{init}");
    assert_eq!(mode(&s.tmp.join(format!("keyward-{USER}"))), 0o700);
}
