//! Files on disk: private directories, atomic replacement, bounded reads.
//!
//! A write never leaves a half-written vault: the new contents go to a temp
//! file in the same directory (created 0600, exclusive, no symlink
//! following), which is fsynced, renamed over the old file, and then the
//! directory is fsynced so the rename itself is durable. A crash at any
//! moment leaves either the old file or the new one, plus at most a temp file
//! that [`remove_stale_temp_files`] cleans up.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Marker in temp file names.
const TMP_MARK: &str = ".tmp-";

/// A directory that is not private to us.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// Owned by another user.
    #[error(
        "{path} is owned by uid {owner}, not by you (uid {me}); refusing to use it. Remove it or \
         fix its owner"
    )]
    Owner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our uid.
        me: u32,
    },
    /// Group or others have access.
    #[error(
        "{path} is accessible to other users (mode {mode:03o}); refusing to use it. Run \
         `chmod 700 {path}`"
    )]
    Mode {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a directory (or a symlink).
    #[error("{path} is not a directory (symlinks are refused)")]
    NotADir {
        /// The path.
        path: PathBuf,
    },
    /// I/O.
    #[error("cannot create or inspect {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Creates `dir` (and its parents) if missing, mode 0700 for the ones we
/// create, then checks that `dir` itself is a real directory owned by `uid`
/// with no group or other access. Refuses symlinks.
pub fn ensure_private_dir(dir: &Path, uid: u32) -> Result<(), DirError> {
    let io_err = |source| DirError::Io {
        path: dir.to_owned(),
        source,
    };
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
        }
        Err(e) => return Err(io_err(e)),
        Ok(_) => {}
    }
    check_private_dir(dir, uid)
}

/// Checks without creating: see [`ensure_private_dir`].
pub fn check_private_dir(dir: &Path, uid: u32) -> Result<(), DirError> {
    let md = fs::symlink_metadata(dir).map_err(|source| DirError::Io {
        path: dir.to_owned(),
        source,
    })?;
    if !md.file_type().is_dir() {
        return Err(DirError::NotADir {
            path: dir.to_owned(),
        });
    }
    if md.uid() != uid {
        return Err(DirError::Owner {
            path: dir.to_owned(),
            owner: md.uid(),
            me: uid,
        });
    }
    let mode = md.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DirError::Mode {
            path: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically and durably; the file is 0600.
/// On any error the old file is untouched and no temp file is left behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, true)
}

/// [`write_atomic`] without the fsyncs: atomic for every reader and across
/// the writer being killed (the page cache survives a process), but a
/// power cut may leave the old file. For small bookkeeping written on a hot
/// path after a durable write (the rollback mark, written after every
/// vault write), where losing the last update errs on the safe side.
pub fn write_replace_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, false)
}

fn replace(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(io::Error::other)?;
    let tmp = dir.join(format!(
        ".{name}{TMP_MARK}{}-{}",
        std::process::id(),
        rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    // Opened first: once the rename is done there must be nothing left that
    // can fail for want of a descriptor.
    let dir_file = File::open(dir)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            #[cfg(test)]
            before_sync::run();
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    if !sync {
        return Ok(());
    }
    // The new file is in place and every reader sees it: an error now must
    // not be reported as "nothing written" (callers would roll back memory
    // that the file already has). Only durability across a power cut is
    // in doubt, and the next write syncs the directory again.
    if let Err(e) = dir_file.sync_all() {
        tracing::warn!(
            "{} was replaced but its directory could not be synced: {e}",
            path.display()
        );
    }
    Ok(())
}

/// A test's hook run by [`write_atomic`] just before its fsync, on the
/// writing thread: how tests hold a vault write in the middle of its fsync
/// (a slow disk) and watch what the rest of the agent does meanwhile.
#[cfg(test)]
pub(crate) mod before_sync {
    use std::cell::RefCell;

    type Hook = Box<dyn FnMut()>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Runs `hook` before every fsync of a vault write on this thread.
    pub fn set(hook: impl FnMut() + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
    }

    pub(super) fn run() {
        HOOK.with(|h| {
            if let Some(hook) = h.borrow_mut().as_mut() {
                hook();
            }
        });
    }
}

/// Reads a whole file, refusing one larger than `max` before reading it and
/// refusing to follow a symlink.
pub fn read_limited(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO planted at the path returns at once (and
    // is refused below) instead of blocking the reader, who may hold the
    // writers' lock; it changes nothing for a regular file.
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let len = md.len();
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {len} bytes, more than the {max} accepted",
                path.display()
            ),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    Read::by_ref(&mut f).take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file grew while being read",
        ));
    }
    Ok(buf)
}

/// Removes temp files that a crashed writer of `path` left behind.
/// Returns how many were removed.
pub fn remove_stale_temp_files(path: &Path) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let prefix = format!(".{}{TMP_MARK}", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> u32 {
        crate::harden::euid()
    }

    #[test]
    fn atomic_write_creates_0600_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v");
        write_atomic(&p, b"one").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v");
        write_atomic(&p, b"old").unwrap();
        // A read-only directory: the temp file cannot be created.
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o500)).unwrap();
        let r = write_atomic(&p, b"new");
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        if me() != 0 {
            assert!(r.is_err());
        }
        // (root ignores the mode bits; either way the file holds one whole version.)
        let now = fs::read(&p).unwrap();
        assert!(now == b"old" || now == b"new");
    }

    #[test]
    fn private_dirs() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("a/b");
        ensure_private_dir(&sub, me()).unwrap();
        assert_eq!(
            fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o750)).unwrap();
        assert!(matches!(
            ensure_private_dir(&sub, me()),
            Err(DirError::Mode { .. })
        ));
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            ensure_private_dir(&sub, me() + 1),
            Err(DirError::Owner { .. })
        ));
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&sub, &link).unwrap();
        assert!(matches!(
            ensure_private_dir(&link, me()),
            Err(DirError::NotADir { .. })
        ));
    }

    #[test]
    fn bounded_reads_and_no_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, vec![0u8; 100]).unwrap();
        assert_eq!(read_limited(&p, 100).unwrap().len(), 100);
        assert!(read_limited(&p, 99).is_err());
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(read_limited(&link, 1000).is_err());
    }

    #[test]
    fn stale_temp_files_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vault");
        fs::write(d.path().join(".vault.tmp-1-00"), b"x").unwrap();
        fs::write(d.path().join("other"), b"x").unwrap();
        assert_eq!(remove_stale_temp_files(&p), 1);
        assert!(d.path().join("other").exists());
    }
}
