//! `Backup`, `Restore` and `Rename`: copies of the vault judged with the
//! keys in memory (see [`crate::vault::CopyDiff`]), and renaming an item.

use super::state::{Agent, change_error, err};
use crate::vault::{ChangeError, CopyError};
use keyward_client::files::{CreateError, write_new_private};
use keyward_client::message::{AgentError, ErrorCode, Response};
use std::path::Path;

/// Names, at most `n` of them, for a message.
fn some_names(names: &[String], n: usize) -> String {
    let mut out: Vec<String> = names.iter().take(n).map(|s| format!("{s:?}")).collect();
    if names.len() > n {
        out.push(format!("and {} more", names.len() - n));
    }
    out.join(", ")
}

fn copy_error(path: &str, e: CopyError) -> AgentError {
    let code = match e {
        CopyError::Io(_) => ErrorCode::NotFound,
        CopyError::OtherAccount { .. } => ErrorCode::InvalidInput,
        CopyError::Format(_) | CopyError::Tampered(_) => ErrorCode::Corrupt,
    };
    err(
        code,
        format!("{path} cannot be used as a backup of this vault: {e}"),
    )
}

fn absolute(path: &str) -> Result<&Path, AgentError> {
    let p = Path::new(path);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(err(
            ErrorCode::InvalidInput,
            format!(
                "{path:?} is not an absolute path (the agent has no current directory of yours)"
            ),
        ))
    }
}

impl Agent {
    /// Whom `Backup` may write: not into keyward's own directories (the
    /// file protector, the state), and with `force` only over an earlier
    /// backup (a regular file that starts with the vault magic), so that a
    /// client holding only the socket cannot have the agent overwrite other
    /// files of the user (the review's S5).
    fn backup_target_allowed(&self, target: &Path, force: bool) -> Result<(), AgentError> {
        let parent = target
            .parent()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .ok_or_else(|| {
                err(
                    ErrorCode::InvalidInput,
                    format!("{}: its directory does not exist", target.display()),
                )
            })?;
        for own in [
            &self.paths.data_dir,
            &self.paths.state_dir,
            &self.paths.runtime_dir,
        ] {
            if std::fs::canonicalize(own).is_ok_and(|o| parent.starts_with(&o)) {
                return Err(err(
                    ErrorCode::InvalidInput,
                    format!(
                        "not writing a backup into keyward's own directory {}: choose another place",
                        own.display()
                    ),
                ));
            }
        }
        if force && let Ok(md) = std::fs::symlink_metadata(target) {
            let is_backup = md.is_file()
                && crate::vault::store::read_limited(target, crate::vault::format::MAX_FILE_LEN)
                    .is_ok_and(|b| b.starts_with(&crate::vault::format::MAGIC));
            if !is_backup {
                return Err(err(
                    ErrorCode::Exists,
                    format!(
                        "{} exists and is not a keyward backup: not replacing it",
                        target.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `Backup`: the vault file, checked with the keys in memory, copied
    /// to `out`. Holds the writers' lock, so the copy is one generation.
    pub fn backup(&self, out: &str, force: bool) -> Result<Response, AgentError> {
        let target = absolute(out)?;
        self.backup_target_allowed(target, force)?;
        let _writer = self.writer();
        let (bytes, generation, items) = self.with_session(|s| {
            let (bytes, copy, _) = s
                .vault
                .read_copy(&s.account.vault_path, false)
                .map_err(|e| copy_error(&s.account.vault_path.display().to_string(), e))?;
            Ok((bytes, copy.file().generation, copy.len() as u64))
        })?;
        write_new_private(target, &bytes, force).map_err(|e| match e {
            CreateError::Exists(_) => err(ErrorCode::Exists, e.to_string()),
            CreateError::Io(..) => err(ErrorCode::Storage, format!("no backup written: {e}")),
        })?;
        tracing::info!(generation, items, "backup written");
        Ok(Response::BackedUp {
            path: out.to_owned(),
            generation,
            items,
        })
    }

    /// `Restore`: the items of the backup at `path` become the vault's
    /// items; the credentials stay. An older backup needs `older`. The
    /// vault as it was is kept in the state directory first.
    pub fn restore(&self, path: &str, older: bool) -> Result<Response, AgentError> {
        let source = absolute(path)?.to_owned();
        let kept_dir = self.paths.state_dir.clone();
        let uid = self.uid;
        let now = self.clock.unix_now();
        self.edit_vault(|v, vault_path| {
            let (_, copy, diff) = v
                .read_copy(&source, true)
                .map_err(|e| copy_error(path, e))?;
            let current = v.file().generation;
            let mut brings = Vec::new();
            if !diff.only_in_copy.is_empty() {
                brings.push(format!(
                    "brings back {} item(s) removed since: {}",
                    diff.only_in_copy.len(),
                    some_names(&diff.only_in_copy, 5)
                ));
            }
            if !diff.changed.is_empty() {
                brings.push(format!(
                    "gives {} item(s) their value of then: {}",
                    diff.changed.len(),
                    some_names(&diff.changed, 5)
                ));
            }
            if !diff.only_in_vault.is_empty() {
                brings.push(format!(
                    "removes {} item(s) added since: {}",
                    diff.only_in_vault.len(),
                    some_names(&diff.only_in_vault, 5)
                ));
            }
            // A copy under a retired key is older than the rekey whatever
            // generation it claims (whoever held that key could write any).
            if (diff.generation < current || diff.earlier_key) && !older {
                return Err(err(
                    ErrorCode::InvalidInput,
                    format!(
                        "this backup is older than the vault ({}): restoring it {}. Passwords, \
                         the Secret Key, YubiKeys and recovery codes stay as they are now. Run \
                         again with --older to restore it anyway",
                        if diff.earlier_key {
                            "made before a `keyward rekey`, under the account key it retired"
                                .to_owned()
                        } else {
                            format!("write generation {} < {current}", diff.generation)
                        },
                        if brings.is_empty() {
                            "changes no item".to_owned()
                        } else {
                            brings.join("; ")
                        }
                    ),
                ));
            }
            // Nothing lost: the vault as it is now, first.
            std::fs::create_dir_all(&kept_dir)
                .map_err(|e| err(ErrorCode::Storage, e.to_string()))?;
            let _ = crate::vault::store::ensure_private_dir(&kept_dir, uid);
            let kept = kept_dir.join(format!(
                "before-restore-{}-{now}-g{current}.kwv",
                v.account_id()
            ));
            let now_bytes =
                crate::vault::store::read_limited(vault_path, crate::vault::format::MAX_FILE_LEN)
                    .map_err(|e| err(ErrorCode::Storage, format!("cannot read the vault: {e}")))?;
            write_new_private(&kept, &now_bytes, true)
                .map_err(|e| err(ErrorCode::Storage, format!("nothing restored: {e}")))?;
            v.restore_items_from(vault_path, &copy, now)
                .map_err(change_error)?;
            let mut notes = brings;
            if diff.earlier_key {
                notes.push(
                    "this backup was made before a `keyward rekey` (under the account key it \
                     retired): its items are sealed again under the key in force"
                        .to_owned(),
                );
            }
            notes.push(format!(
                "restored {} item(s) from generation {}; the vault as it was is kept in {}",
                diff.items,
                diff.generation,
                kept.display()
            ));
            tracing::info!(from = diff.generation, "items restored from a backup");
            Ok(Response::Restored { notes })
        })
    }

    /// `Rename`.
    pub fn rename(&self, old: &str, new: &str) -> Result<Response, AgentError> {
        let now = self.clock.unix_now();
        self.edit_vault(|v, path| {
            v.rename(path, old, new, now).map_err(|e| match e {
                ChangeError::NoSuchItem(_) => err(
                    ErrorCode::NotFound,
                    format!("no item named {old:?} (see `keyward list`)"),
                ),
                ChangeError::Exists(_) => err(
                    ErrorCode::Exists,
                    format!("an item named {new:?} exists already; remove it first"),
                ),
                other => change_error(other),
            })
        })
        .map(|()| Response::Ok)
    }
}
