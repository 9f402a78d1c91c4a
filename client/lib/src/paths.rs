//! Where keyward keeps things. Shared by the agent, the CLI and the PAM module
//! so they always agree on the socket path.
//!
//! | what | `KEYWARD_HOME` set | otherwise |
//! |---|---|---|
//! | config (`config.toml`) | `$KEYWARD_HOME/config` | `$XDG_CONFIG_HOME/keyward`, else `~/.config/keyward` |
//! | data (vault, `file` protector) | `$KEYWARD_HOME/data` | `$XDG_DATA_HOME/keyward`, else `~/.local/share/keyward` |
//! | state (attempts, log) | `$KEYWARD_HOME/state` | `$XDG_STATE_HOME/keyward`, else `~/.local/state/keyward` |
//! | runtime (socket, lock) | `$KEYWARD_HOME/run` | `$XDG_RUNTIME_DIR/keyward`, else `$TMPDIR/keyward-<uid>` (`/tmp` without `TMPDIR`) |
//!
//! # A default runtime directory someone else made first
//!
//! Without `KEYWARD_HOME` and `XDG_RUNTIME_DIR` the runtime directory is
//! `$TMPDIR/keyward-<uid>`, in a directory every user can write: another
//! user can create it first (or put a symlink there), and keyward must then
//! neither use it nor give up. The agent then makes a fresh private
//! directory, `$TMPDIR/keyward-<uid>-<random>` (created exclusively, 0700),
//! and records its path in the **runtime pointer**, `runtime-dir` in the
//! state directory (under the user's home, written atomically, 0600).
//! Every party (agent, CLI, library clients, PAM module) computes its paths
//! with [`Paths::from_env`] (the PAM module: [`Paths::from_vars`], then
//! [`Paths::follow_runtime_pointer`] once it runs as the user), which
//! follows the pointer when it is valid — a regular file of the user's,
//! not a symlink, writable by nobody else, in a state directory of the
//! user's that nobody else can write, naming an absolute path that is a
//! directory of the user's, not a symlink, that nobody else can enter —
//! and ignores it otherwise. With `KEYWARD_HOME` or `XDG_RUNTIME_DIR` set
//! the pointer is never read.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The directories of one user's keyward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Config directory.
    pub config_dir: PathBuf,
    /// Data directory.
    pub data_dir: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Runtime directory (socket).
    pub runtime_dir: PathBuf,
    /// The default runtime directory when it lies in the shared temporary
    /// directory (`$TMPDIR/keyward-<uid>`: neither `KEYWARD_HOME` nor
    /// `XDG_RUNTIME_DIR` is set); `None` otherwise. `runtime_dir` differs
    /// from it once the runtime pointer was followed.
    pub shared_tmp_default: Option<PathBuf>,
}

/// No home directory to derive paths from.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot find your home directory: set HOME (or KEYWARD_HOME)")]
pub struct NoHome;

/// The name of the runtime pointer in the state directory.
pub const RUNTIME_POINTER: &str = "runtime-dir";

/// The longest runtime pointer read (a path and a newline).
const POINTER_MAX: u64 = 4096;

/// The real uid of this process.
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn non_empty(v: Option<OsString>) -> Option<PathBuf> {
    v.filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// Why `dir` is not a private directory of `uid`: `Ok(())` when it is a
/// directory (not a symlink) owned by `uid` that nobody else can enter,
/// `Err` with a sentence otherwise (`NotFound` included). Never follows a
/// symlink at `dir` itself.
pub fn check_private_dir(dir: &Path, uid: u32) -> Result<(), String> {
    let md = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot be inspected ({e})"))?;
    if md.file_type().is_symlink() {
        return Err("is a symlink".into());
    }
    if !md.is_dir() {
        return Err("is not a directory".into());
    }
    if md.uid() != uid {
        return Err(format!(
            "belongs to uid {}, not to you (uid {uid})",
            md.uid()
        ));
    }
    if md.mode() & 0o077 != 0 {
        return Err(format!(
            "is open to other users (mode {:o})",
            md.mode() & 0o7777
        ));
    }
    Ok(())
}

impl Paths {
    /// Paths from this process's environment, following the runtime
    /// pointer (see the module documentation).
    pub fn from_env() -> Result<Self, NoHome> {
        let uid = current_uid();
        let mut paths = Self::from_vars(|k| std::env::var_os(k), uid)?;
        paths.follow_runtime_pointer(uid);
        Ok(paths)
    }

    /// Paths from a given environment lookup (tests, the PAM module). Reads
    /// no file: the runtime pointer is not followed (see
    /// [`Paths::follow_runtime_pointer`]).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>, uid: u32) -> Result<Self, NoHome> {
        if let Some(home) = non_empty(var("KEYWARD_HOME")) {
            return Ok(Self::under(&home));
        }
        let home = non_empty(var("HOME"));
        let xdg = |name: &str, fallback: &str| -> Result<PathBuf, NoHome> {
            match non_empty(var(name)) {
                Some(p) => Ok(p.join("keyward")),
                None => Ok(home.clone().ok_or(NoHome)?.join(fallback).join("keyward")),
            }
        };
        let (runtime_dir, shared_tmp_default) = match non_empty(var("XDG_RUNTIME_DIR")) {
            Some(p) => (p.join("keyward"), None),
            None => {
                let d = non_empty(var("TMPDIR"))
                    .unwrap_or_else(|| PathBuf::from("/tmp"))
                    .join(format!("keyward-{uid}"));
                (d.clone(), Some(d))
            }
        };
        Ok(Self {
            config_dir: xdg("XDG_CONFIG_HOME", ".config")?,
            data_dir: xdg("XDG_DATA_HOME", ".local/share")?,
            state_dir: xdg("XDG_STATE_HOME", ".local/state")?,
            runtime_dir,
            shared_tmp_default,
        })
    }

    /// Everything under one directory (what `KEYWARD_HOME` does).
    pub fn under(home: &Path) -> Self {
        Self {
            config_dir: home.join("config"),
            data_dir: home.join("data"),
            state_dir: home.join("state"),
            runtime_dir: home.join("run"),
            shared_tmp_default: None,
        }
    }

    /// The agent's socket.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join("agent.sock")
    }

    /// The lock held by the running agent (one agent per home).
    pub fn lock_file(&self) -> PathBuf {
        self.runtime_dir.join("agent.lock")
    }

    /// The config file.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// The log of an auto-started agent.
    pub fn log_file(&self) -> PathBuf {
        self.state_dir.join("agent.log")
    }

    /// The runtime pointer: where the agent records the private runtime
    /// directory it made when the default one was taken.
    pub fn runtime_pointer(&self) -> PathBuf {
        self.state_dir.join(RUNTIME_POINTER)
    }

    /// The temporary directory the default runtime directory lies in, where
    /// a replacement is made (`None` with `KEYWARD_HOME` or
    /// `XDG_RUNTIME_DIR`).
    pub fn shared_tmp(&self) -> Option<&Path> {
        self.shared_tmp_default.as_deref().and_then(Path::parent)
    }

    /// Whether `runtime_dir` is a replacement named by the runtime pointer.
    pub fn follows_pointer(&self) -> bool {
        self.shared_tmp_default
            .as_ref()
            .is_some_and(|d| *d != self.runtime_dir)
    }

    /// Why the default runtime directory in the shared temporary directory
    /// cannot be used by `uid`, if it exists and cannot be: a sentence such
    /// as "belongs to uid 1001, not to you (uid 1000)". `None` when it does
    /// not exist, is private to `uid`, or there is no such default.
    pub fn default_runtime_taken(&self, uid: u32) -> Option<String> {
        let d = self.shared_tmp_default.as_ref()?;
        match std::fs::symlink_metadata(d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            _ => check_private_dir(d, uid).err(),
        }
    }

    /// The directory named by a valid runtime pointer, if any (see the
    /// module documentation for what valid means). Only in the shared
    /// temporary directory case; reads nothing otherwise.
    pub fn read_runtime_pointer(&self, uid: u32) -> Option<PathBuf> {
        self.shared_tmp_default.as_ref()?;
        let state = std::fs::symlink_metadata(&self.state_dir).ok()?;
        if !state.is_dir() || state.uid() != uid || state.mode() & 0o022 != 0 {
            return None;
        }
        // O_NONBLOCK: a FIFO planted there must not hang the reader.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags::NOFOLLOW | libc_flags::NONBLOCK)
            .open(self.runtime_pointer())
            .ok()?;
        let md = f.metadata().ok()?;
        if !md.is_file() || md.uid() != uid || md.mode() & 0o022 != 0 || md.len() > POINTER_MAX {
            return None;
        }
        let mut bytes = Vec::new();
        f.take(POINTER_MAX).read_to_end(&mut bytes).ok()?;
        while bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if bytes.is_empty() || bytes.contains(&b'\n') || bytes.contains(&0) {
            return None;
        }
        let dir = PathBuf::from(OsString::from_vec(bytes));
        (dir.is_absolute() && check_private_dir(&dir, uid).is_ok()).then_some(dir)
    }

    /// Why `runtime_dir` must not be used by `uid`: the default in the
    /// shared temporary directory, taken by someone else, and no valid
    /// pointer followed. Nothing in such a directory is talked to: a
    /// client treats it as "no agent", the agent makes a replacement.
    pub fn runtime_dir_taken(&self, uid: u32) -> Option<String> {
        if self.follows_pointer() {
            return None;
        }
        self.default_runtime_taken(uid)
    }

    /// Computes the runtime directory again from the default and the
    /// runtime pointer as they are now (after starting an agent, which may
    /// have written the pointer); returns whether the pointer was followed.
    pub fn refresh_runtime_dir(&mut self, uid: u32) -> bool {
        if let Some(default) = &self.shared_tmp_default {
            self.runtime_dir = default.clone();
        }
        self.follow_runtime_pointer(uid)
    }

    /// Uses the directory named by a valid runtime pointer as the runtime
    /// directory; returns whether it did. Call it as the user (the PAM
    /// module: in its child, after dropping to the user), never as root for
    /// another user.
    pub fn follow_runtime_pointer(&mut self, uid: u32) -> bool {
        match self.read_runtime_pointer(uid) {
            Some(dir) => {
                self.runtime_dir = dir;
                true
            }
            None => false,
        }
    }
}

/// The two open flags the pointer is read with (rustix's values, as the
/// `libc` crate is not a dependency of this crate).
mod libc_flags {
    use rustix::fs::OFlags;
    pub const NOFOLLOW: i32 = OFlags::NOFOLLOW.bits() as i32;
    pub const NONBLOCK: i32 = OFlags::NONBLOCK.bits() as i32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).map(OsString::from)
    }

    #[test]
    fn keyward_home_wins() {
        let p = Paths::from_vars(env(&[("KEYWARD_HOME", "/k"), ("HOME", "/h")]), 1).unwrap();
        assert_eq!(p.socket(), PathBuf::from("/k/run/agent.sock"));
        assert_eq!(p.data_dir, PathBuf::from("/k/data"));
    }

    #[test]
    fn xdg_then_home_then_tmp() {
        let p = Paths::from_vars(
            env(&[
                ("HOME", "/h"),
                ("XDG_DATA_HOME", "/d"),
                ("XDG_RUNTIME_DIR", "/run/user/5"),
            ]),
            5,
        )
        .unwrap();
        assert_eq!(p.data_dir, PathBuf::from("/d/keyward"));
        assert_eq!(p.config_dir, PathBuf::from("/h/.config/keyward"));
        assert_eq!(p.state_dir, PathBuf::from("/h/.local/state/keyward"));
        assert_eq!(p.socket(), PathBuf::from("/run/user/5/keyward/agent.sock"));
        let p = Paths::from_vars(env(&[("HOME", "/h")]), 77).unwrap();
        assert!(p.runtime_dir.ends_with("keyward-77"));
        // Relative or empty values are ignored.
        let p = Paths::from_vars(
            env(&[
                ("HOME", "/h"),
                ("XDG_DATA_HOME", "rel"),
                ("KEYWARD_HOME", ""),
            ]),
            1,
        )
        .unwrap();
        assert_eq!(p.data_dir, PathBuf::from("/h/.local/share/keyward"));
        assert!(Paths::from_vars(env(&[]), 1).is_err());
    }

    fn mode(p: &Path, m: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    /// A home and a temporary directory of our own, and the paths in them
    /// without XDG_RUNTIME_DIR.
    fn shared_tmp_home() -> (tempfile::TempDir, Paths, u32) {
        let d = tempfile::tempdir().unwrap();
        let (h, t) = (d.path().join("home"), d.path().join("tmp"));
        std::fs::create_dir(&h).unwrap();
        std::fs::create_dir(&t).unwrap();
        let uid = current_uid();
        let p = Paths::from_vars(
            env(&[
                ("HOME", h.to_str().unwrap()),
                ("TMPDIR", t.to_str().unwrap()),
            ]),
            uid,
        )
        .unwrap();
        (d, p, uid)
    }

    #[test]
    fn only_the_shared_tmp_default_has_a_pointer() {
        let (_d, p, uid) = shared_tmp_home();
        assert_eq!(p.shared_tmp_default.as_ref(), Some(&p.runtime_dir));
        assert!(p.runtime_dir.ends_with(format!("tmp/keyward-{uid}")));
        assert!(p.shared_tmp().unwrap().ends_with("tmp"));
        assert!(!p.follows_pointer());
        assert!(
            p.runtime_pointer()
                .ends_with(".local/state/keyward/runtime-dir")
        );
        let x = Paths::from_vars(
            env(&[("HOME", "/h"), ("XDG_RUNTIME_DIR", "/run/user/5")]),
            5,
        )
        .unwrap();
        assert_eq!(x.shared_tmp_default, None);
        assert_eq!(Paths::under(Path::new("/k")).shared_tmp_default, None);
    }

    #[test]
    fn a_valid_pointer_is_followed_and_anything_else_ignored() {
        let (d, p, uid) = shared_tmp_home();
        let mut q = p.clone();
        assert!(!q.follow_runtime_pointer(uid), "no pointer yet");
        std::fs::create_dir_all(&p.state_dir).unwrap();
        mode(&p.state_dir, 0o700);
        let fresh = d.path().join("tmp").join(format!("keyward-{uid}-abc123"));
        std::fs::create_dir(&fresh).unwrap();
        mode(&fresh, 0o700);
        let pointer = p.runtime_pointer();
        std::fs::write(&pointer, format!("{}\n", fresh.display())).unwrap();
        mode(&pointer, 0o600);
        assert!(q.follow_runtime_pointer(uid));
        assert_eq!(q.runtime_dir, fresh);
        assert_eq!(q.socket(), fresh.join("agent.sock"));
        assert!(q.follows_pointer());
        assert_eq!(q.runtime_dir_taken(uid), None);
        // Gone again: refreshing falls back to the default.
        std::fs::remove_dir(&fresh).unwrap();
        assert!(!q.refresh_runtime_dir(uid));
        assert_eq!(q.runtime_dir, p.runtime_dir);
        std::fs::create_dir(&fresh).unwrap();
        mode(&fresh, 0o700);
        assert!(q.refresh_runtime_dir(uid));
        assert_eq!(q.runtime_dir, fresh);

        let ignored = |why: &str| {
            let mut q = p.clone();
            assert!(!q.follow_runtime_pointer(uid), "followed although {why}");
            assert_eq!(q.runtime_dir, p.runtime_dir);
        };
        // The pointed-to directory: open to others, a symlink, missing.
        mode(&fresh, 0o755);
        ignored("the directory is 0755");
        mode(&fresh, 0o700);
        let link = d.path().join("tmp").join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        std::fs::write(&pointer, link.to_str().unwrap()).unwrap();
        ignored("the directory is a symlink");
        std::fs::write(&pointer, "relative/dir").unwrap();
        ignored("the path is relative");
        std::fs::write(&pointer, d.path().join("missing").to_str().unwrap()).unwrap();
        ignored("the directory is missing");
        // The pointer itself: writable by others, a symlink, a FIFO.
        std::fs::write(&pointer, fresh.to_str().unwrap()).unwrap();
        mode(&pointer, 0o666);
        ignored("the pointer is world-writable");
        mode(&pointer, 0o600);
        let real = d.path().join("real-pointer");
        std::fs::rename(&pointer, &real).unwrap();
        std::os::unix::fs::symlink(&real, &pointer).unwrap();
        ignored("the pointer is a symlink");
        std::fs::remove_file(&pointer).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &pointer,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        ignored("the pointer is a FIFO");
        std::fs::remove_file(&pointer).unwrap();
        std::fs::rename(&real, &pointer).unwrap();
        // The state directory open to others.
        mode(&p.state_dir, 0o777);
        ignored("the state directory is world-writable");
        mode(&p.state_dir, 0o700);
        assert!(p.clone().follow_runtime_pointer(uid));
        // Never read with XDG_RUNTIME_DIR or KEYWARD_HOME.
        let mut x = p.clone();
        x.shared_tmp_default = None;
        assert!(!x.follow_runtime_pointer(uid));
        // Someone else's pointer or directory (needs root to make).
        if rustix::process::geteuid().is_root() {
            let other = Some(rustix::fs::Uid::from_raw(uid + 4242));
            rustix::fs::chown(&fresh, other, None).unwrap();
            ignored("the directory belongs to someone else");
            rustix::fs::chown(&fresh, Some(rustix::fs::Uid::from_raw(uid)), None).unwrap();
            rustix::fs::chown(&pointer, other, None).unwrap();
            ignored("the pointer belongs to someone else");
        }
    }

    #[test]
    fn a_taken_default_is_named_with_the_reason() {
        let (d, p, uid) = shared_tmp_home();
        let default = p.shared_tmp_default.clone().unwrap();
        assert_eq!(p.default_runtime_taken(uid), None, "absent");
        std::fs::create_dir(&default).unwrap();
        mode(&default, 0o700);
        assert_eq!(p.default_runtime_taken(uid), None, "ours");
        mode(&default, 0o777);
        let why = p.default_runtime_taken(uid).unwrap();
        assert!(
            why.contains("open to other users") && why.contains("777"),
            "{why}"
        );
        std::fs::remove_dir(&default).unwrap();
        std::os::unix::fs::symlink(d.path(), &default).unwrap();
        assert!(p.default_runtime_taken(uid).unwrap().contains("symlink"));
        std::fs::remove_file(&default).unwrap();
        if rustix::process::geteuid().is_root() {
            std::fs::create_dir(&default).unwrap();
            mode(&default, 0o700);
            rustix::fs::chown(&default, Some(rustix::fs::Uid::from_raw(uid + 4242)), None).unwrap();
            let why = p.default_runtime_taken(uid).unwrap();
            assert!(
                why.contains(&format!("belongs to uid {}", uid + 4242)),
                "{why}"
            );
        }
        let x = Paths::under(d.path());
        assert_eq!(x.default_runtime_taken(uid), None);
    }
}
