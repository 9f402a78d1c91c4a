//! The `file` protector: the Secret Key in a 0600 file in the data directory.
//! The weakest protector: anyone who can read your files (a backup, a stolen
//! unencrypted disk) has the Secret Key, and then only the Master Password
//! stands between them and the vault.

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
    /// `<data dir>/secret-key-<account ID>`.
    pub fn new(data_dir: &Path, id: &AccountId, uid: u32) -> Self {
        Self {
            path: data_dir.join(format!("secret-key-{id}")),
            uid,
        }
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
        let r = write_atomic(&self.path, text.as_bytes());
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
}
