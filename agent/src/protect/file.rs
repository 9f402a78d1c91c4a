//! The `file` protector: the Secret Key in a 0600 file in the *state*
//! directory, which belongs to this device. The weakest protector: anyone
//! who can read your files (a backup of the home, a stolen unencrypted disk)
//! has the Secret Key, and then only the Master Password stands between
//! them and the vault. It is never kept beside the vault: a folder that is
//! backed up or synced to other devices holds the vault, and must not hold
//! both secrets (keyward before this version kept it in the data directory;
//! [`FileProtector::migrate_from`] moves it).

use super::{Protector, ProtectorError, Store, UnlockIo};
use crate::account::AccountId;
use crate::account::secret_key::SecretKey;
use crate::vault::store::{read_limited, write_atomic};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

/// The file protector of one account.
pub struct FileProtector {
    path: PathBuf,
    uid: u32,
}

impl FileProtector {
    /// `<state dir>/secret-key-<account ID>`.
    pub fn new(state_dir: &Path, id: &AccountId, uid: u32) -> Self {
        Self {
            path: state_dir.join(format!("secret-key-{id}")),
            uid,
        }
    }

    /// Moves the Secret Key file an older keyward kept in `old_dir` (the
    /// data directory, beside the vault) to this protector's place.
    /// `Ok(true)` if a file was moved (or was a copy of the one already
    /// there, and removed); `Ok(false)` if there was none. A file that
    /// differs from one already in place is left where it is (and said).
    pub fn migrate_from(&self, old_dir: &Path) -> Result<bool, ProtectorError> {
        let Some(name) = self.path.file_name() else {
            return Ok(false);
        };
        let old = FileProtector {
            path: old_dir.join(name),
            uid: self.uid,
        };
        if old.path == self.path || std::fs::symlink_metadata(&old.path).is_err() {
            return Ok(false);
        }
        let sk = old.fetch(&super::NoIo)?;
        if self.exists() {
            let here = self.fetch(&super::NoIo)?;
            if here.display().expose() != sk.display().expose() {
                return Err(ProtectorError::Failed(format!(
                    "{} and {} hold different Secret Keys; keyward uses the second. Remove the \
                     first once you have checked which is current (`keyward unlock --with file`)",
                    old.path.display(),
                    self.path.display()
                )));
            }
        } else {
            self.store(&sk)?;
        }
        old.erase()?;
        if let Ok(d) = std::fs::File::open(old_dir) {
            let _ = d.sync_all();
        }
        Ok(true)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file exists.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }
}

impl Protector for FileProtector {
    fn id(&self) -> String {
        "file".into()
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    fn describe(&self) -> String {
        format!(
            "{} (0600 file; protects only against other users)",
            self.path.display()
        )
    }

    fn fetch(&self, _io: &dyn UnlockIo) -> Result<SecretKey, ProtectorError> {
        let md = match std::fs::symlink_metadata(&self.path) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ProtectorError::Unavailable(format!(
                    "the Secret Key file {} is missing",
                    self.path.display()
                )));
            }
            Err(e) => {
                return Err(ProtectorError::Failed(format!(
                    "cannot read {}: {e}",
                    self.path.display()
                )));
            }
        };
        if !md.file_type().is_file() || md.uid() != self.uid || md.permissions().mode() & 0o077 != 0
        {
            return Err(ProtectorError::Failed(format!(
                "refusing to use {}: it must be a regular file owned by you with mode 0600 (run `chmod 600 {}`)",
                self.path.display(),
                self.path.display()
            )));
        }
        let mut bytes = read_limited(&self.path, 4096).map_err(|e| {
            ProtectorError::Failed(format!("cannot read {}: {e}", self.path.display()))
        })?;
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|_| ())
            .and_then(|s| SecretKey::parse(s).map_err(|_| ()));
        bytes.zeroize();
        parsed.map_err(|()| {
            ProtectorError::Failed(format!(
                "{} does not hold a valid Secret Key (damaged?); unlock with the Secret Key from your \
                 Emergency Kit: `keyward unlock --with none`",
                self.path.display()
            ))
        })
    }
}

impl Store for FileProtector {
    fn store(&self, sk: &SecretKey) -> Result<(), ProtectorError> {
        // Sized up front: a growing String would free an unwiped copy.
        let shown = sk.display();
        let mut text = String::with_capacity(shown.expose().len() + 1);
        text.push_str(shown.expose());
        text.push('\n');
        let dir_ready = self.path.parent().map_or(Ok(()), |d| {
            crate::vault::store::ensure_private_dir(d, self.uid).map_err(|e| e.to_string())
        });
        let r = dir_ready
            .map_err(std::io::Error::other)
            .and_then(|()| write_atomic(&self.path, text.as_bytes()));
        text.zeroize();
        r.map_err(|e| {
            ProtectorError::Failed(format!("cannot write {}: {e}", self.path.display()))
        })?;
        // write_atomic creates 0600, but be explicit in case of an odd umask.
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            ProtectorError::Failed(format!("cannot chmod {}: {e}", self.path.display()))
        })
    }

    fn erase(&self) -> Result<(), ProtectorError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ProtectorError::Failed(format!(
                "cannot remove {}: {e}",
                self.path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protect::NoIo;

    #[test]
    fn store_fetch_erase_and_refuse_loose_permissions() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let id = AccountId::generate().unwrap();
        let p = FileProtector::new(d.path(), &id, crate::harden::euid());
        assert!(matches!(
            p.fetch(&NoIo),
            Err(ProtectorError::Unavailable(_))
        ));
        let sk = SecretKey::generate(&id).unwrap();
        p.store(&sk).unwrap();
        assert_eq!(
            std::fs::metadata(p.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            p.fetch(&NoIo).unwrap().expose_compact(),
            sk.expose_compact()
        );
        std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = p.fetch(&NoIo).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(p.path(), b"K1-not-a-key").unwrap();
        assert!(matches!(p.fetch(&NoIo), Err(ProtectorError::Failed(_))));
        p.erase().unwrap();
        assert!(!p.exists());
        p.erase().unwrap();
    }

    #[test]
    fn an_older_file_beside_the_vault_is_moved_to_the_state_directory() {
        let d = tempfile::tempdir().unwrap();
        let (data, state) = (d.path().join("data"), d.path().join("state"));
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let id = AccountId::generate().unwrap();
        let uid = crate::harden::euid();
        let old = FileProtector::new(&data, &id, uid);
        let sk = SecretKey::generate(&id).unwrap();
        old.store(&sk).unwrap();
        let new = FileProtector::new(&state, &id, uid);
        assert!(new.migrate_from(&data).unwrap());
        assert!(
            !old.exists(),
            "the old file is gone from the data directory"
        );
        assert_eq!(
            new.fetch(&NoIo).unwrap().expose_compact(),
            sk.expose_compact()
        );
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // Nothing left to move.
        assert!(!new.migrate_from(&data).unwrap());
        // A copy of the same key beside the vault is removed.
        old.store(&sk).unwrap();
        assert!(new.migrate_from(&data).unwrap());
        assert!(!old.exists());
        // A different one is left alone, and said.
        old.store(&SecretKey::generate(&id).unwrap()).unwrap();
        let err = new.migrate_from(&data).unwrap_err().to_string();
        assert!(err.contains("different Secret Keys"), "{err}");
        assert!(old.exists());
        assert_eq!(
            new.fetch(&NoIo).unwrap().expose_compact(),
            sk.expose_compact()
        );
    }
}
