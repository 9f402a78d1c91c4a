//! Files created at a path a user gave (the Emergency Kit, exports,
//! backups). They hold secrets, so they are created 0600 and never
//! through a symbolic link: in a shared directory without the kernel's
//! symlink protection, another user could plant a link at the path and read
//! what is written through it.
//!
//! - Without `force`: the file must not exist (`O_CREAT | O_EXCL |
//!   O_NOFOLLOW`), so nothing is ever written into a file someone else
//!   created or opened beforehand.
//! - With `force`: the bytes go to a new file beside the path (created the
//!   same way), which is then renamed over it. A rename replaces a link
//!   itself, never its target.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Why a private file was not written.
#[derive(Debug)]
pub enum CreateError {
    /// Something (a file, a link, a directory) is at the path already.
    Exists(std::path::PathBuf),
    /// Any other failure.
    Io(std::path::PathBuf, io::Error),
}

impl std::fmt::Display for CreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exists(p) => write!(
                f,
                "{} already exists: choose another path, or pass --force to replace it",
                p.display()
            ),
            Self::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

fn create_new(path: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32)
        .open(path)
}

fn write_synced(mut f: std::fs::File, bytes: &[u8]) -> io::Result<()> {
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates `path` (mode 0600) holding `bytes`; see the module doc. On an
/// error nothing is left at the path that was not there before.
pub fn write_new_private(path: &Path, bytes: &[u8], force: bool) -> Result<(), CreateError> {
    let io_err = |e| CreateError::Io(path.to_owned(), e);
    if !force {
        let f = create_new(path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => CreateError::Exists(path.to_owned()),
            _ => io_err(e),
        })?;
        return write_synced(f, bytes).map_err(|e| {
            let _ = std::fs::remove_file(path);
            io_err(e)
        });
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io_err(io::Error::other("the path has no file name")))?;
    // The name only has to be new: creation is exclusive and refuses links.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(
        ".{}.keyward-{}-{nanos}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = create_new(&tmp)
        .and_then(|f| write_synced(f, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_file_is_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kit.pdf");
        write_new_private(&p, b"secret", false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn an_existing_file_is_refused_without_force_and_replaced_with_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kit.pdf");
        std::fs::write(&p, b"old").unwrap();
        let e = write_new_private(&p, b"new", false).unwrap_err();
        assert!(matches!(e, CreateError::Exists(_)), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        write_new_private(&p, b"new", true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    /// Issue 19, reproduction 3: a link planted at the path, pointing at a
    /// file its planter holds open. Nothing is written through it, with or
    /// without `--force`.
    #[test]
    fn a_planted_symlink_is_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("planted-target");
        std::fs::write(&target, b"").unwrap();
        let p = d.path().join("kit.pdf");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        // Dangling links too: O_CREAT would create the target through it.
        let dangling = d.path().join("kit2.pdf");
        std::os::unix::fs::symlink(d.path().join("nothing-yet"), &dangling).unwrap();

        assert!(matches!(
            write_new_private(&p, b"secret", false),
            Err(CreateError::Exists(_))
        ));
        assert!(matches!(
            write_new_private(&dangling, b"secret", false),
            Err(CreateError::Exists(_))
        ));
        assert!(!d.path().join("nothing-yet").exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"");

        // --force replaces the link itself; the target stays empty.
        write_new_private(&p, b"secret", true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"");
        assert!(
            !std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
    }
}
