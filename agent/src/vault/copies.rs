//! Other copies of the vault, judged with the keys of the unlocked one:
//! a backup is the vault file's bytes after they were checked (checksum,
//! MAC under the account key in memory, every item decrypted); restoring
//! takes the *items* of a backup into the vault in force, keeping its
//! credentials (password wraps, YubiKeys, protectors, recovery codes), so
//! that a restore never brings back an old password or a revoked code.
//! Renaming is here too: one write that re-seals one item under a new name.

use super::format::{self, ItemRecord};
use super::{ChangeError, ItemMeta, UnlockError, Unlocked, check_item, open_with_account_key};
use crate::secret::Key32;
use std::collections::BTreeMap;
use std::path::Path;

/// What a copy of the vault holds, next to the vault in force.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyDiff {
    /// The copy's write generation.
    pub generation: u64,
    /// Items in the copy that the vault no longer has (restoring brings them back).
    pub only_in_copy: Vec<String>,
    /// Items the vault has that the copy lacks (restoring removes them).
    pub only_in_vault: Vec<String>,
    /// Items in both whose sealed value differs (restoring gives the copy's value).
    pub changed: Vec<String>,
    /// Items in the copy.
    pub items: usize,
    /// The copy was made under an account key a `rekey` retired.
    pub earlier_key: bool,
}

/// Why a copy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Unreadable or not a vault.
    #[error(transparent)]
    Format(#[from] format::FormatError),
    /// Reading failed.
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    /// Another account's vault.
    #[error("it is the vault of account {theirs}, not of this account ({ours})")]
    OtherAccount {
        /// The copy's account.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// It does not verify under this account's keys.
    #[error("it does not verify under this account's keys (tampered with, or damaged): {0}")]
    Tampered(UnlockError),
}

impl Unlocked {
    /// The bytes of `path` if they are a copy of this account's vault that
    /// verifies under the keys in memory (checksum, MAC, every item), with
    /// what it holds next to this vault.
    /// `earlier`: a copy under an account key a `rekey` retired (a backup
    /// made before it) is taken too (for restoring, never for a backup).
    pub fn read_copy(
        &self,
        path: &Path,
        earlier: bool,
    ) -> Result<(Vec<u8>, Unlocked, CopyDiff), CopyError> {
        let bytes = super::store::read_limited(path, format::MAX_FILE_LEN)?;
        let parsed = format::parse(&bytes)?;
        if parsed.vault.account_id != self.file.account_id {
            return Err(CopyError::OtherAccount {
                theirs: parsed.vault.account_id.to_string(),
                ours: self.file.account_id.to_string(),
            });
        }
        // A copy made before a `rekey` verifies under the key it retired
        // (record 0x0d, SECURITY.md §18.6).
        let previous = (earlier && !parsed.mac_ok(&self.keys.mac_key))
            .then(|| self.previous_key_for(&parsed))
            .flatten();
        let key = match previous {
            Some(old) => old,
            None => Key32::from_slice(&self.keys.account_key)
                .ok_or(CopyError::Tampered(UnlockError::Tampered))?,
        };
        let copy = open_with_account_key(parsed, &key, None).map_err(CopyError::Tampered)?;
        let diff = self.diff(&copy);
        Ok((bytes, copy, diff))
    }

    fn diff(&self, copy: &Unlocked) -> CopyDiff {
        // Name → (meta, sealed record): a changed value has a new sealing
        // (fresh nonce) even within the same second.
        let ours: BTreeMap<&str, (&ItemMeta, &ItemRecord)> = self
            .meta
            .iter()
            .zip(&self.file.items)
            .map(|(m, r)| (m.name.as_str(), (m, r)))
            .collect();
        let theirs: BTreeMap<&str, (&ItemMeta, &ItemRecord)> = copy
            .meta
            .iter()
            .zip(&copy.file.items)
            .map(|(m, r)| (m.name.as_str(), (m, r)))
            .collect();
        let mut d = CopyDiff {
            generation: copy.file.generation,
            items: copy.meta.len(),
            earlier_key: copy.keys.account_key != self.keys.account_key,
            ..CopyDiff::default()
        };
        for (name, (_, r)) in &theirs {
            match ours.get(name) {
                None => d.only_in_copy.push((*name).to_owned()),
                Some((_, o)) if !self.same_item(name, &o.sealed, copy, &r.sealed) => {
                    d.changed.push((*name).to_owned());
                }
                Some(_) => {}
            }
        }
        d.only_in_vault = ours
            .keys()
            .filter(|n| !theirs.contains_key(*n))
            .map(|n| (*n).to_owned())
            .collect();
        d
    }

    /// Whether item `name`, sealed as `ours` here and as `theirs` in
    /// `copy`, is the same write: the same sealing, or (for a copy under an
    /// earlier account key, sealed under another item key) the same value
    /// and modification time.
    fn same_item(
        &self,
        name: &str,
        ours: &crate::account::wrap::Sealed,
        copy: &Unlocked,
        theirs: &crate::account::wrap::Sealed,
    ) -> bool {
        if ours == theirs {
            return true;
        }
        if copy.keys.account_key == self.keys.account_key {
            return false;
        }
        let when = |v: &Unlocked| v.index.get(name).map(|&i| v.meta[i].modified);
        when(self) == when(copy)
            && match (self.get(name), copy.get(name)) {
                (Some(a), Some(b)) => a.expose() == b.expose(),
                _ => false,
            }
    }

    /// Makes the items of `copy` (a copy of this account's vault, from
    /// [`Self::read_copy`]) the items of this vault, in one write; the
    /// credentials stay as they are. Each item the copy brings back or
    /// changes is sealed again, as an edit made now.
    pub fn restore_items_from(
        &mut self,
        path: &Path,
        copy: &Unlocked,
        now: u64,
    ) -> Result<(), ChangeError> {
        if copy.file.account_id != self.file.account_id {
            return Err(ChangeError::Unlock(UnlockError::Tampered));
        }
        // As edits made now, so that a merge with other devices' copies
        // (SECURITY.md §18) keeps the restored items: the items the copy
        // lacks are removed (with tombstones), and each item the copy
        // brings back or changes is written again, later than any removal
        // of its name.
        let mut edits: Vec<(String, Option<crate::secret::SecretBytes>)> = Vec::new();
        for m in &self.meta {
            if !copy.index.contains_key(&m.name) {
                edits.push((m.name.clone(), None));
            }
        }
        for (name, &j) in &copy.index {
            let same = self.index.get(name).is_some_and(|&i| {
                self.same_item(
                    name,
                    &self.file.items[i].sealed,
                    copy,
                    &copy.file.items[j].sealed,
                )
            });
            if !same {
                let value = copy
                    .get(name)
                    .ok_or(ChangeError::Unlock(UnlockError::BadItem(j)))?;
                edits.push((name.clone(), Some(value)));
            }
        }
        self.change(path, |v| {
            for (name, value) in &edits {
                match value {
                    Some(value) => v.set_in_memory(name, value.expose(), now)?,
                    None => v.remove_in_memory(name, now)?,
                }
            }
            Ok(())
        })
    }

    /// Renames item `old` to `new` (keeping its id, value and creation
    /// time; modified = `now`), in one write.
    pub fn rename(
        &mut self,
        path: &Path,
        old: &str,
        new: &str,
        now: u64,
    ) -> Result<(), ChangeError> {
        let Some(&i) = self.index.get(old) else {
            return Err(ChangeError::NoSuchItem(old.to_owned()));
        };
        if old == new {
            return Ok(());
        }
        if self.index.contains_key(new) {
            return Err(ChangeError::Exists(format!("an item named {new:?}")));
        }
        let value = self
            .get(old)
            .ok_or(ChangeError::NoSuchItem(old.to_owned()))?;
        check_item(new, value.expose())?;
        let ItemRecord { item_id, .. } = self.file.items[i];
        let created = self.meta[i].created;
        // Later than the name it replaces, for merges (SECURITY.md §18.3).
        let modified = now.max(self.meta[i].modified + 1);
        let (sealed, meta) = self.seal_item(&item_id, new, value.expose(), created, modified)?;
        drop(value);
        // The old name is removed, as by `rm`: an item of that name another
        // device made earlier goes too (SECURITY.md §18.3).
        let old_name = self.name_id(old);
        self.change(path, move |v| {
            v.tombstone(
                super::format::TombstoneKind::ItemName,
                old_name.to_vec(),
                modified,
            );
            v.file.items[i].sealed = sealed;
            v.meta[i] = meta;
            v.index.remove(old);
            v.index.insert(new.to_owned(), i);
            Ok(())
        })
    }
}
