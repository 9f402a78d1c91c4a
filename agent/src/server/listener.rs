//! The socket: a private runtime directory, one agent per home (a lock
//! file), a stale socket cleaned up, a hostile one refused.
//!
//! The default runtime directory in the shared temporary directory
//! (`$TMPDIR/keyward-<uid>`, without `KEYWARD_HOME` and `XDG_RUNTIME_DIR`)
//! may have been made first by someone else, or be a symlink: the agent then
//! makes a fresh private one and records it in the runtime pointer, which
//! every client follows (see `keyward_client::paths`). Anywhere else a
//! runtime directory that is not private stops the agent, saying why.

use crate::vault::store::{DirError, ensure_private_dir, write_atomic};
use keyward_client::Paths;
use keyward_client::paths::check_private_dir;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The runtime directory is not private.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// Another agent runs for this home.
    #[error(
        "another keyward-agent is already running for this user{pid} (socket {socket}); stop it with \
         `keyward agent stop`, or use it"
    )]
    AlreadyRunning {
        /// Its pid, as written in the lock file.
        pid: String,
        /// The socket.
        socket: String,
    },
    /// Something that is not our socket sits at the socket path.
    #[error("refusing to start: {0}")]
    HostileSocket(String),
    /// I/O.
    #[error("cannot set up the socket {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The lock that makes this the only agent for its home; held until drop.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

/// How many names a fresh runtime directory is tried with before giving up.
const FRESH_DIR_TRIES: usize = 16;

/// Takes the instance lock (after making sure the runtime dir is private).
/// A default runtime directory in the shared temporary directory that is
/// not ours is replaced first: `paths.runtime_dir` then names the fresh one.
pub fn take_instance_lock(paths: &mut Paths, uid: u32) -> Result<InstanceLock, StartError> {
    settle_runtime_dir(paths, uid)?;
    ensure_private_dir(&paths.runtime_dir, uid)?;
    let path = paths.lock_file();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(StartError::AlreadyRunning {
                pid: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
                socket: paths.socket().display().to_string(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io_err(&path)(e)),
    }
    file.set_len(0).map_err(io_err(&path))?;
    file.rewind().map_err(io_err(&path))?;
    writeln!(file, "{}", std::process::id()).map_err(io_err(&path))?;
    Ok(InstanceLock { _file: file })
}

/// Chooses the runtime directory when it is the default in the shared
/// temporary directory: the default if it is (or can be made) a private
/// directory of ours; else the one a valid runtime pointer names (already
/// followed by [`Paths::from_env`]); else a fresh one, recorded in the
/// pointer. The taken default is never touched; a warning names it.
fn settle_runtime_dir(paths: &mut Paths, uid: u32) -> Result<(), StartError> {
    let Some(default) = paths.shared_tmp_default.clone() else {
        return Ok(());
    };
    if paths.follows_pointer() {
        if let Some(why) = paths.default_runtime_taken(uid) {
            tracing::warn!(
                "the runtime directory {} {why}; using {} (from {})",
                default.display(),
                paths.runtime_dir.display(),
                paths.runtime_pointer().display()
            );
        }
        return Ok(());
    }
    let why = match ensure_private_dir(&default, uid) {
        Ok(()) => return Ok(()),
        Err(e @ DirError::Io { .. }) => return Err(e.into()),
        Err(e) => paths
            .default_runtime_taken(uid)
            .unwrap_or_else(|| e.to_string()),
    };
    let parent = default.parent().unwrap_or(Path::new("/tmp"));
    let fresh = make_fresh_dir(parent, uid)?;
    let pointer = paths.runtime_pointer();
    ensure_private_dir(&paths.state_dir, uid)?;
    let mut line = fresh.as_os_str().as_bytes().to_vec();
    line.push(b'\n');
    if let Err(e) = write_atomic(&pointer, &line) {
        let _ = std::fs::remove_dir(&fresh);
        return Err(io_err(&pointer)(e));
    }
    tracing::warn!(
        "the runtime directory {} {why}: another user may have made it first. Using {} instead \
         (recorded in {}; `keyward` and the PAM module find it there)",
        default.display(),
        fresh.display(),
        pointer.display()
    );
    paths.runtime_dir = fresh;
    Ok(())
}

/// Makes `parent/keyward-<uid>-<random>`, 0700, exclusively (`mkdir`
/// fails on anything already there, a symlink included).
fn make_fresh_dir(parent: &Path, uid: u32) -> Result<PathBuf, StartError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut last = None;
    for _ in 0..FRESH_DIR_TRIES {
        let mut rnd = [0u8; 12];
        getrandom::fill(&mut rnd).map_err(|e| io_err(parent)(std::io::Error::other(e)))?;
        let suffix: String = rnd
            .iter()
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
            .collect();
        let dir = parent.join(format!("keyward-{uid}-{suffix}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                check_private_dir(&dir, uid)
                    .map_err(|why| StartError::HostileSocket(format!("{} {why}", dir.display())))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(io_err(&dir)(e)),
        }
    }
    Err(io_err(parent)(last.unwrap_or_else(|| {
        std::io::Error::other("no free name for a runtime directory")
    })))
}

/// Binds the socket (0600). A leftover socket of ours is removed first (we
/// hold the instance lock, so nobody else is behind it); a symlink, a
/// non-socket, or a socket owned by someone else is refused.
pub fn bind(paths: &Paths, uid: u32) -> Result<UnixListener, StartError> {
    let path = paths.socket();
    match std::fs::symlink_metadata(&path) {
        Ok(md) if md.file_type().is_symlink() => {
            return Err(StartError::HostileSocket(format!(
                "{} is a symlink, not keyward's socket; remove it",
                path.display()
            )));
        }
        Ok(md) if !md.file_type().is_socket() => {
            return Err(StartError::HostileSocket(format!(
                "{} exists and is not a socket; remove it",
                path.display()
            )));
        }
        Ok(md) if md.uid() != uid => {
            return Err(StartError::HostileSocket(format!(
                "{} belongs to uid {}, not to you; remove it",
                path.display(),
                md.uid()
            )));
        }
        Ok(_) => std::fs::remove_file(&path).map_err(io_err(&path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    let listener = UnixListener::bind(&path).map_err(io_err(&path))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(&path))?;
    listener.set_nonblocking(true).map_err(io_err(&path))?;
    Ok(listener)
}

/// Removes the socket if it is still the one we bound (same inode).
pub fn remove_socket(path: &Path, inode: Option<u64>) {
    if let (Ok(md), Some(ino)) = (std::fs::symlink_metadata(path), inode)
        && md.ino() == ino
    {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> u32 {
        crate::harden::euid()
    }

    #[test]
    fn one_agent_per_home() {
        let d = tempfile::tempdir().unwrap();
        let mut paths = Paths::under(d.path());
        let first = take_instance_lock(&mut paths, me()).unwrap();
        let second = take_instance_lock(&mut paths, me()).unwrap_err();
        let msg = second.to_string();
        assert!(
            msg.contains("already running") && msg.contains(&std::process::id().to_string()),
            "{msg}"
        );
        drop(first);
        take_instance_lock(&mut paths, me()).unwrap();
    }

    #[test]
    fn stale_sockets_are_replaced_and_hostile_paths_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut paths = Paths::under(d.path());
        let _lock = take_instance_lock(&mut paths, me()).unwrap();
        let l = bind(&paths, me()).unwrap();
        drop(l); // the socket file stays behind, as after a crash
        let _l = bind(&paths, me()).unwrap();
        assert_eq!(
            std::fs::metadata(paths.socket())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        std::fs::remove_file(paths.socket()).unwrap();
        std::os::unix::fs::symlink("/tmp/elsewhere", paths.socket()).unwrap();
        assert!(matches!(
            bind(&paths, me()),
            Err(StartError::HostileSocket(_))
        ));
        std::fs::remove_file(paths.socket()).unwrap();
        std::fs::write(paths.socket(), b"").unwrap();
        assert!(matches!(
            bind(&paths, me()),
            Err(StartError::HostileSocket(_))
        ));
    }

    #[test]
    fn a_shared_runtime_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut paths = Paths::under(d.path());
        std::fs::create_dir(&paths.runtime_dir).unwrap();
        std::fs::set_permissions(&paths.runtime_dir, std::fs::Permissions::from_mode(0o777))
            .unwrap();
        assert!(matches!(
            take_instance_lock(&mut paths, me()),
            Err(StartError::Dir(DirError::Mode { .. }))
        ));
    }

    /// Paths with HOME and TMPDIR in `d` (no XDG_RUNTIME_DIR): the runtime
    /// directory is the default in the shared temporary directory.
    fn shared_tmp_paths(d: &Path) -> Paths {
        let (home, tmp) = (d.join("home"), d.join("tmp"));
        for p in [&home, &tmp] {
            std::fs::create_dir_all(p).unwrap();
        }
        let vars = move |k: &str| match k {
            "HOME" => Some(home.clone().into_os_string()),
            "TMPDIR" => Some(tmp.clone().into_os_string()),
            _ => None,
        };
        Paths::from_vars(vars, me()).unwrap()
    }

    fn fingerprint(p: &Path) -> (u32, u32, u64, usize) {
        let md = std::fs::symlink_metadata(p).unwrap();
        let entries = std::fs::read_dir(p).map_or(0, |d| d.count());
        (md.uid(), md.mode(), md.ino(), entries)
    }

    #[test]
    fn a_free_default_in_the_shared_tmp_is_used_and_no_pointer_written() {
        let d = tempfile::tempdir().unwrap();
        let mut paths = shared_tmp_paths(d.path());
        let default = paths.runtime_dir.clone();
        let _lock = take_instance_lock(&mut paths, me()).unwrap();
        assert_eq!(paths.runtime_dir, default);
        assert!(!paths.runtime_pointer().exists());
        check_private_dir(&default, me()).unwrap();
    }

    #[test]
    fn a_taken_default_in_the_shared_tmp_is_replaced_and_left_untouched() {
        let d = tempfile::tempdir().unwrap();
        let mut paths = shared_tmp_paths(d.path());
        let default = paths.runtime_dir.clone();
        // Made first by "someone else": open to all (and, as root, owned by
        // another uid).
        std::fs::create_dir(&default).unwrap();
        std::fs::set_permissions(&default, std::fs::Permissions::from_mode(0o777)).unwrap();
        if me() == 0 {
            std::os::unix::fs::chown(&default, Some(4242), Some(4242)).unwrap();
        }
        let before = fingerprint(&default);
        let lock = take_instance_lock(&mut paths, me()).unwrap();
        let fresh = paths.runtime_dir.clone();
        assert_ne!(fresh, default);
        assert_eq!(fresh.parent(), default.parent());
        assert!(
            fresh
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("keyward-{}-", me())),
            "{}",
            fresh.display()
        );
        check_private_dir(&fresh, me()).unwrap();
        let pointer = std::fs::read_to_string(paths.runtime_pointer()).unwrap();
        assert_eq!(pointer, format!("{}\n", fresh.display()));
        let md = std::fs::metadata(paths.runtime_pointer()).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        let _l = bind(&paths, me()).unwrap();
        assert!(paths.socket().starts_with(&fresh));
        assert_eq!(
            fingerprint(&default),
            before,
            "the taken directory was touched"
        );

        // The next start (and every client) finds the same directory.
        drop(lock);
        let mut again = shared_tmp_paths(d.path());
        assert!(again.follow_runtime_pointer(me()));
        let _lock = take_instance_lock(&mut again, me()).unwrap();
        assert_eq!(again.runtime_dir, fresh);
        assert_eq!(fingerprint(&default), before);
    }

    #[test]
    fn a_symlink_at_the_default_is_replaced_and_its_target_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let mut paths = shared_tmp_paths(d.path());
        let target = d.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&target, &paths.runtime_dir).unwrap();
        let _lock = take_instance_lock(&mut paths, me()).unwrap();
        assert!(!paths.runtime_dir.starts_with(&target));
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
        assert!(
            std::fs::symlink_metadata(paths.shared_tmp_default.as_ref().unwrap())
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
