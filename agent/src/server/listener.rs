//! The socket: a private runtime directory, one agent per home (a lock
//! file), a stale socket cleaned up, a hostile one refused.

use crate::vault::store::{DirError, ensure_private_dir};
use keyward_client::Paths;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
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

/// Takes the instance lock (after making sure the runtime dir is private).
pub fn take_instance_lock(paths: &Paths, uid: u32) -> Result<InstanceLock, StartError> {
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
        let paths = Paths::under(d.path());
        let first = take_instance_lock(&paths, me()).unwrap();
        let second = take_instance_lock(&paths, me()).unwrap_err();
        let msg = second.to_string();
        assert!(
            msg.contains("already running") && msg.contains(&std::process::id().to_string()),
            "{msg}"
        );
        drop(first);
        take_instance_lock(&paths, me()).unwrap();
    }

    #[test]
    fn stale_sockets_are_replaced_and_hostile_paths_refused() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        let _lock = take_instance_lock(&paths, me()).unwrap();
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
        let paths = Paths::under(d.path());
        std::fs::create_dir(&paths.runtime_dir).unwrap();
        std::fs::set_permissions(&paths.runtime_dir, std::fs::Permissions::from_mode(0o777))
            .unwrap();
        assert!(matches!(
            take_instance_lock(&paths, me()),
            Err(StartError::Dir(DirError::Mode { .. }))
        ));
    }
}
