//! `keyward rekey` (SECURITY.md §18.6): a new account key. Every item, SSH
//! key and organizer key is sealed again under the new item key, the
//! password wrap and the organizer wraps are made again, the recovery codes
//! (whose keys the vault does not hold) are revoked, and the old account key
//! is kept, sealed under the new item key, so that copies other devices
//! wrote before they saw the rekey can still be merged.

use super::format::{self, PreviousKey, TombstoneKind, VaultFile};
use super::{ChangeError, KeyMaterial, MergeError, Unlocked, hex, password_wrap};
use crate::account::organizer::{Recipient, seal_to_organizer};
use crate::account::password::{KdfParams, Password};
use crate::account::wrap::Sealed;
use crate::account::wrap::{self, Purpose};
use crate::account::{AccountId, item_key, vault_mac_key};
use crate::harden::LockedBox;
use crate::kdf::hmac_sha256;
use crate::secret::Key32;
use std::path::Path;

/// What [`Unlocked::reconcile`] did: `Ok(Some(codes))` taken in, with the
/// ids of the recovery codes it revoked; `Ok(None)` nothing to take in.
pub type Reconciled = Result<Option<Vec<[u8; 8]>>, MergeError>;

/// The public id of an account key: `HMAC-SHA256(key, "keyward/v1 key-id")[0..8]`.
pub fn key_id(account_key: &[u8; 32]) -> [u8; 8] {
    let h = hmac_sha256(account_key, &[b"keyward/v1 key-id"]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[..8]);
    id
}

/// Opens `sealed` under `from` and seals it again under `to`.
fn reseal(
    from: &[u8; 32],
    to: &[u8; 32],
    purpose: Purpose,
    id: &AccountId,
    slot: &str,
    sealed: &Sealed,
) -> Result<Sealed, ChangeError> {
    let plain = wrap::open(from, purpose, id, slot, sealed)
        .map_err(|_| ChangeError::Unlock(super::UnlockError::Tampered))?;
    Ok(wrap::seal(to, purpose, id, slot, plain.expose())?)
}

/// Seals again, from item key `from` to `to`, everything of `file` sealed
/// under the item key: items, SSH keys, the organizer key, previous keys.
fn reseal_file(file: &mut VaultFile, from: &[u8; 32], to: &[u8; 32]) -> Result<(), ChangeError> {
    let id = file.account_id;
    for r in &mut file.items {
        r.sealed = reseal(from, to, Purpose::Item, &id, &hex(&r.item_id), &r.sealed)?;
    }
    for k in &mut file.ssh_keys {
        k.sealed = reseal(from, to, Purpose::SshKey, &id, &hex(&k.key_id), &k.sealed)?;
    }
    if let Some(k) = &mut file.organizers.key {
        k.sealed = reseal(
            from,
            to,
            Purpose::OrganizerKey,
            &id,
            &hex(&k.key_id),
            &k.sealed,
        )?;
    }
    for k in &mut file.previous_keys {
        k.sealed = reseal(
            from,
            to,
            Purpose::PreviousKey,
            &id,
            &hex(&k.key_id),
            &k.sealed,
        )?;
    }
    Ok(())
}

impl Unlocked {
    /// Draws a new account key and writes the vault re-sealed under it
    /// (one atomic write). Needs the Master Password (for the new password
    /// wrap) and the Secret Key in memory. Returns the ids (hex) of the
    /// recovery codes it revoked.
    pub fn rekey(
        &mut self,
        path: &Path,
        password: &Password,
        params: KdfParams,
        now: u64,
    ) -> Result<Vec<String>, ChangeError> {
        params.check_new()?;
        if self.needs_settling() {
            return Err(ChangeError::Unlock(super::UnlockError::Tampered));
        }
        let sk = self.secret_key().ok_or(ChangeError::NoSecretKey)?;
        let id = self.file.account_id;
        let mut keys = LockedBox::<KeyMaterial>::new()?;
        getrandom::fill(&mut keys.account_key)?;
        let ik = item_key(&keys.account_key, &id);
        keys.item_key.copy_from_slice(ik.expose());
        let mk = vault_mac_key(&keys.account_key, &id);
        keys.mac_key.copy_from_slice(mk.expose());
        keys.secret_key = self.keys.secret_key;
        let slot = self.next_slot_id('k');
        let pw = password_wrap(&keys.account_key, &id, slot.clone(), password, &sk, params)?;
        let mut file = self.file.clone();
        reseal_file(&mut file, &self.keys.item_key, &keys.item_key)?;
        for w in &mut file.organizers.wraps {
            let org = Recipient::from_point(&w.org_pk)
                .map_err(|_| ChangeError::Unlock(super::UnlockError::Tampered))?;
            let (epk, sealed) = seal_to_organizer(&org, &id, &keys.account_key)?;
            w.epk = epk;
            w.sealed = sealed;
        }
        let old_id = key_id(&self.keys.account_key);
        file.previous_keys.push(PreviousKey {
            key_id: old_id,
            retired: now,
            sealed: wrap::seal(
                &keys.item_key,
                Purpose::PreviousKey,
                &id,
                &hex(&old_id),
                &self.keys.account_key,
            )?,
        });
        let revoked: Vec<[u8; 8]> = file.recovery_wraps.drain(..).map(|w| w.code_id).collect();
        for code_id in &revoked {
            file.tombstones
                .retain(|t| !(t.kind == TombstoneKind::RecoveryCode && t.id[..] == code_id[..]));
            file.tombstones.push(format::Tombstone {
                kind: TombstoneKind::RecoveryCode,
                id: code_id.to_vec(),
                removed: now,
            });
        }
        file.password_wraps = vec![pw];
        file.generation += 1;
        super::store::write_atomic(path, &file.encode(&keys.mac_key))?;
        self.file = file;
        self.keys = keys;
        self.opened_with = Some(slot);
        Ok(revoked.iter().map(|c| hex(c)).collect())
    }

    /// The ids of the account keys this vault proves it holds: its own,
    /// and each previous key whose record opens (under its item key) to a
    /// key of the id the record names. A record's id alone proves nothing
    /// (ids are public); its sealed key does.
    pub fn proven_key_ids(&self) -> Vec<[u8; 8]> {
        let id = self.file.account_id;
        let mut out = vec![key_id(&self.keys.account_key)];
        for k in &self.file.previous_keys {
            let opened = wrap::open_key(
                &self.keys.item_key,
                Purpose::PreviousKey,
                &id,
                &hex(&k.key_id),
                &k.sealed,
            );
            if opened.is_ok_and(|key| key_id(key.expose()) == k.key_id) && !out.contains(&k.key_id)
            {
                out.push(k.key_id);
            }
        }
        out
    }

    /// Whether `other` verifies under this vault's account key or one of
    /// its previous keys (it can then be merged, SECURITY.md §18.6).
    pub fn knows_key_of(&self, other: &format::Parsed) -> bool {
        other.mac_ok(&self.keys.mac_key) || self.previous_key_for(other).is_some()
    }

    /// Of `self` and `other` — two copies of this account under different
    /// account keys, both opened with the same Master Password and Secret
    /// Key (two rekeys made on two devices while apart, SECURITY.md §18.6)
    /// — the one whose password wrap is later keeps its key and takes the
    /// other in: the other's key is kept as a previous key (record 0x0d)
    /// and its contents merged as if written now. Both devices pick the
    /// same key. Nothing is written; on an error, `self` comes back
    /// unchanged. `Ok(Some(codes))`: taken in; the recovery codes of the
    /// copy not kept that the kept vault lacks are revoked (they wrap the
    /// key not kept, and their keys are not in the vault to wrap the kept
    /// one): their ids.
    pub fn reconcile(self, other: Unlocked, now: u64) -> (Unlocked, Reconciled) {
        let rank = |v: &Unlocked| super::merge::newest_wrap_rank(&v.file);
        if rank(&other) > rank(&self) {
            let mut keep = other;
            match keep.absorb(&self, now) {
                Ok(lost) => (keep, Ok(Some(lost))),
                Err(e) => (self, Err(e)),
            }
        } else {
            let mut keep = self;
            let r = keep.absorb(&other, now).map(Some);
            (keep, r)
        }
    }

    /// Takes `other` (see [`Self::reconcile`]) into this vault; nothing
    /// changes on an error.
    fn absorb(&mut self, other: &Unlocked, now: u64) -> Result<Vec<[u8; 8]>, MergeError> {
        let id = self.file.account_id;
        if other.file.account_id != id {
            return Err(MergeError::OtherAccount(other.file.account_id.to_string()));
        }
        if self.needs_settling() || other.needs_settling() {
            return Err(MergeError::Busy);
        }
        let mut old = Key32::zero();
        old.expose_mut().copy_from_slice(&other.keys.account_key);
        let mut theirs = self
            .converted_from_previous_key(&other.file, &old)
            .map_err(|_| MergeError::NotVerified)?;
        // Its organizers that this vault lacks are wrapped again for the
        // key kept (their public keys are all it takes); its recovery codes
        // cannot be (their keys are not in the vault): counted, for the
        // user.
        for w in &other.file.organizers.wraps {
            if theirs.organizers.wraps.iter().any(|x| x.org_pk == w.org_pk) {
                continue;
            }
            let org = Recipient::from_point(&w.org_pk).map_err(|_| MergeError::NotVerified)?;
            let (epk, sealed) = seal_to_organizer(&org, &id, &self.keys.account_key)
                .map_err(|_| MergeError::NotVerified)?;
            theirs.organizers.wraps.push(format::OrganizerWrap {
                epk,
                sealed,
                ..w.clone()
            });
        }
        let lost_codes: Vec<[u8; 8]> = other
            .file
            .recovery_wraps
            .iter()
            .filter(|r| {
                !self
                    .file
                    .recovery_wraps
                    .iter()
                    .any(|x| x.code_id == r.code_id)
            })
            .filter(|r| {
                !self
                    .file
                    .tombstones
                    .iter()
                    .any(|t| t.kind == TombstoneKind::RecoveryCode && t.id[..] == r.code_id[..])
            })
            .map(|r| r.code_id)
            .collect();
        let old_id = key_id(&other.keys.account_key);
        let record = (other.keys.account_key != self.keys.account_key
            && !self.file.previous_keys.iter().any(|k| k.key_id == old_id))
        .then(|| {
            wrap::seal(
                &self.keys.item_key,
                Purpose::PreviousKey,
                &id,
                &hex(&old_id),
                &other.keys.account_key,
            )
        })
        .transpose()
        .map_err(|_| MergeError::NotVerified)?;
        self.merge_file(&theirs)?;
        if let Some(sealed) = record {
            self.file.previous_keys.push(PreviousKey {
                key_id: old_id,
                retired: now,
                sealed,
            });
        }
        // Revoked, as `rekey` revokes: they still open the key not kept.
        for code_id in &lost_codes {
            self.file.tombstones.push(format::Tombstone {
                kind: TombstoneKind::RecoveryCode,
                id: code_id.to_vec(),
                removed: now,
            });
        }
        self.file
            .recovery_wraps
            .retain(|r| !lost_codes.contains(&r.code_id));
        // Written above both (the device's generation mark, §13).
        self.file.generation = self.file.generation.max(other.file.generation);
        Ok(lost_codes)
    }

    /// The earlier account key under which `other` verifies, if any.
    pub(super) fn previous_key_for(&self, other: &format::Parsed) -> Option<Key32> {
        let id = self.file.account_id;
        self.file.previous_keys.iter().find_map(|k| {
            let key = wrap::open_key(
                &self.keys.item_key,
                Purpose::PreviousKey,
                &id,
                &hex(&k.key_id),
                &k.sealed,
            )
            .ok()?;
            other
                .mac_ok(vault_mac_key(key.expose(), &id).expose())
                .then_some(key)
        })
    }

    /// `other` (a copy written under the earlier account key `old`) as if
    /// written under the key in force: what is sealed under the item key
    /// is sealed again; what wraps the old account key (password,
    /// recovery and organizer wraps) is left out for this vault's own.
    pub(super) fn converted_from_previous_key(
        &self,
        other: &VaultFile,
        old: &Key32,
    ) -> Result<VaultFile, ChangeError> {
        let mut v = other.clone();
        let old_ik = item_key(old.expose(), &v.account_id);
        reseal_file(&mut v, old_ik.expose(), &self.keys.item_key)?;
        v.password_wraps = self.file.password_wraps.clone();
        v.recovery_wraps = self.file.recovery_wraps.clone();
        v.organizers.wraps = self.file.organizers.wraps.clone();
        Ok(v)
    }
}
