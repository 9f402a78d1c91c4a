//! What this device remembers about its vault, so that someone who can only
//! write the vault file cannot turn it against the user: an older copy put
//! in place of the current one (by an attacker, or a restored backup) is
//! noticed and cannot bring back a recovery code revoked here, and a
//! password wrap whose Argon2id cost was changed is refused before it is
//! used, without counting as a failed attempt.
//!
//! Three small files in the state directory, per account:
//! - `generation-<ID>`: the highest vault generation this device has seen.
//!   Raised after every successful vault write, before the request is
//!   answered, and at every unlock. A vault older than it is refused by
//!   `recover` and opened by `unlock` with a warning.
//! - `revoked-<ID>`: the ids of the recovery codes revoked on this device
//!   (16 hex digits a line). `recover` refuses them whatever the vault says,
//!   and an unlock that finds one of them in the vault revokes it again.
//! - `kdf-<ID>`: the Argon2id parameters of the password wraps this device
//!   wrote or opened (`slot m t p` a line, the last 32 slots). A wrap named
//!   there with other parameters was altered: raised, it would cost minutes
//!   of Argon2id; changed at all, the right password would fail as wrong
//!   and cost the user back-off. The unlock stops before any derivation.
//!   A slot this device never saw (made elsewhere, or before this record
//!   existed) is used as it is.
//! - `account-keys-<ID>`: the ids (16 hex digits a line, [`vault::key_id`])
//!   of the account keys this device has seen its vault under, the one in
//!   force first. A copy is taken as this account's vault only if it proves
//!   the one in force (its own key, or a previous key it holds sealed):
//!   someone who knows the Master Password and can write the folder cannot
//!   put a vault of their own in its place (with a YubiKey-kept Secret Key,
//!   the card would open the one they seal to its public key). None
//!   recorded (a keyward before this record): a copy is taken if it
//!   verifies the device's own file.
//!
//! All live in the state directory, which an attacker who can only replace
//! the vault file (a synced folder, a backup) does not control. Code running
//! as the user can change them too (docs/SECURITY.md §13, "Rollback").

use super::state::{Agent, err};
use crate::account::AccountId;
use crate::account::password::KdfParams;
use crate::vault::format::VaultFile;
use crate::vault::{self, store};
use keyward_client::message::{AgentError, ErrorCode};
use std::path::PathBuf;

/// How many password wraps' parameters are remembered (one is in force;
/// each password change or Secret Key change adds one).
const KDF_SLOTS: usize = 32;

/// Whether `v` may be taken as this account's vault on this device: it
/// proves the account key in force here (`known[0]`, from
/// [`Agent::known_keys`]) — as its own key, or as a previous key it holds
/// sealed (a rekey made on another device). A retired key is not enough:
/// whoever held it (a removed device, a revoked code and an old copy) could
/// seal it into a vault of their own. With nothing recorded (an account
/// from before this record), `v` must verify this device's own file
/// (`own`): the first vault is taken on the own file's word.
pub(super) fn key_accepted(
    known: &[[u8; 8]],
    own: Option<&vault::format::Parsed>,
    v: &vault::Unlocked,
) -> bool {
    match known.first() {
        Some(current) => v.proven_key_ids().contains(current),
        None => own.is_none_or(|o| v.knows_key_of(o)),
    }
}

/// The wider test for a copy opened with the credentials that just opened
/// a vault proving the key in force (two rekeys made apart, §18.6): it
/// proves any key this device has seen.
pub(super) fn key_seen(known: &[[u8; 8]], v: &vault::Unlocked) -> bool {
    known.is_empty() || v.proven_key_ids().iter().any(|k| known.contains(k))
}

/// Where this device records the highest generation of `id`'s vault it
/// has seen (it exists once the device has opened that vault).
pub(super) fn generation_file(paths: &keyward_client::Paths, id: &AccountId) -> PathBuf {
    paths.state_dir.join(format!("generation-{id}"))
}

impl Agent {
    fn kdf_file(&self, id: &AccountId) -> PathBuf {
        self.paths.state_dir.join(format!("kdf-{id}"))
    }

    /// The remembered (slot id, parameters), oldest first.
    fn remembered_costs(&self, id: &AccountId) -> Vec<(String, KdfParams)> {
        std::fs::read_to_string(self.kdf_file(id))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split(' ');
                let slot = f.next()?.to_owned();
                let mut n = || f.next()?.parse::<u32>().ok();
                let (m_kib, t, p) = (n()?, n()?, n()?);
                Some((slot, KdfParams { m_kib, t, p }))
            })
            .collect()
    }

    fn keys_file(&self, id: &AccountId) -> PathBuf {
        self.paths.state_dir.join(format!("account-keys-{id}"))
    }

    /// The ids of the account keys this device has seen `id`'s vault
    /// under, the one in force first (empty: none recorded, or a record
    /// that cannot be read — then the own file vouches, see
    /// [`key_accepted`]).
    pub(super) fn known_keys(&self, id: &AccountId) -> Vec<[u8; 8]> {
        std::fs::read_to_string(self.keys_file(id))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| crate::account::unhex::<8>(l.trim()))
            .collect()
    }

    /// The id of the account key in force on this device (none recorded:
    /// `None`).
    pub(super) fn key_in_force(&self, id: &AccountId) -> Option<[u8; 8]> {
        self.known_keys(id).first().copied()
    }

    /// Records the account keys `v` proves (its own and its previous ones)
    /// as seen by this device. Called once `v` is this device's vault (init,
    /// join, unlock, recovery, rekey).
    pub(super) fn remember_keys(&self, v: &vault::Unlocked) {
        let id = v.account_id();
        let before = self.known_keys(&id);
        // The key in force first, then every other seen.
        let mut all = v.proven_key_ids();
        for k in &before {
            if !all.contains(k) {
                all.push(*k);
            }
        }
        if all == before {
            return;
        }
        let text: String = all.iter().map(|k| format!("{}\n", vault::hex(k))).collect();
        let _ = store::ensure_private_dir(&self.paths.state_dir, self.uid);
        if let Err(e) = store::write_atomic(&self.keys_file(&id), text.as_bytes()) {
            tracing::warn!("cannot record the account key's id: {e}");
        }
    }

    /// Remembers the parameters of every password wrap of `file`, a vault
    /// this agent wrote or whose MAC it verified.
    pub(super) fn remember_wrap_costs(&self, file: &VaultFile) {
        let id = file.account_id;
        let mut all = self.remembered_costs(&id);
        let before = all.clone();
        for w in &file.password_wraps {
            all.retain(|(slot, _)| slot != &w.slot_id);
            all.push((w.slot_id.clone(), w.params));
        }
        if all == before {
            return;
        }
        let skip = all.len().saturating_sub(KDF_SLOTS);
        let text: String = all[skip..]
            .iter()
            .map(|(slot, k)| format!("{slot} {} {} {}\n", k.m_kib, k.t, k.p))
            .collect();
        let _ = store::ensure_private_dir(&self.paths.state_dir, self.uid);
        if let Err(e) = store::write_replace_unsynced(&self.kdf_file(&id), text.as_bytes()) {
            tracing::warn!("cannot record the password wraps' parameters: {e}");
        }
    }

    /// Before any Argon2id: refuses a vault in which a password wrap this
    /// device knows has other parameters than it had. Not a failed attempt.
    pub(super) fn check_wrap_costs(&self, file: &VaultFile) -> Result<(), AgentError> {
        let known = self.remembered_costs(&file.account_id);
        for w in &file.password_wraps {
            if let Some((_, k)) = known.iter().find(|(slot, _)| slot == &w.slot_id)
                && *k != w.params
            {
                return Err(err(
                    ErrorCode::Corrupt,
                    format!(
                        "the vault was tampered with: its password wrap {} now asks for Argon2id with \
                         m = {} KiB, t = {}, p = {}, but keyward made it with m = {} KiB, t = {}, \
                         p = {}. Nothing was tried and no failed attempt was counted; restore the \
                         vault from a backup (docs/SECURITY.md §13)",
                        w.slot_id, w.params.m_kib, w.params.t, w.params.p, k.m_kib, k.t, k.p
                    ),
                ));
            }
        }
        Ok(())
    }

    fn generation_file(&self, id: &AccountId) -> PathBuf {
        generation_file(&self.paths, id)
    }

    fn revoked_file(&self, id: &AccountId) -> PathBuf {
        self.paths.state_dir.join(format!("revoked-{id}"))
    }

    /// The highest generation of `id`'s vault this device has seen (0: none).
    pub(super) fn seen_generation(&self, id: &AccountId) -> u64 {
        std::fs::read_to_string(self.generation_file(id))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    }

    /// Raises the mark to `generation` (never lowers it). Called after every
    /// successful vault write, before the answer goes out: written without
    /// an fsync (it follows a durable vault write; a power cut that loses it
    /// leaves an older mark, which only weakens the check, never raises a
    /// false alarm).
    pub(super) fn remember_generation(&self, id: &AccountId, generation: u64) {
        if generation <= self.seen_generation(id) {
            return;
        }
        let _ = store::ensure_private_dir(&self.paths.state_dir, self.uid);
        if let Err(e) = store::write_replace_unsynced(
            &self.generation_file(id),
            generation.to_string().as_bytes(),
        ) {
            tracing::warn!("cannot record the vault generation: {e}");
        }
    }

    /// For `unlock`: a warning if the vault is older than one this device
    /// saw (rollback); records the generation.
    pub(super) fn check_generation(&self, id: &AccountId, generation: u64) -> Option<String> {
        let seen = self.seen_generation(id);
        self.remember_generation(id, generation);
        (generation < seen).then(|| {
            format!(
                "WARNING: this vault (write generation {generation}) is older than one keyward opened before \
                 (generation {seen}): it was restored from a backup or rolled back. Items changed since may be \
                 missing; see docs/SECURITY.md, \"Rollback\""
            )
        })
    }

    /// For `recover`: refuses a vault older than one this device saw (a
    /// recovery code revoked since must not come back with an old copy).
    pub(super) fn refuse_rollback(
        &self,
        id: &AccountId,
        generation: u64,
    ) -> Result<(), AgentError> {
        let seen = self.seen_generation(id);
        if generation < seen {
            return Err(err(
                ErrorCode::Corrupt,
                format!(
                    "not recovering: this vault (write generation {generation}) is older than one keyward \
                     opened before on this device (generation {seen}), so it was rolled back or restored \
                     from a backup, and a recovery code revoked since would work again. Put the newest \
                     copy of the vault back, or unlock with your Master Password (it warns, and keeps \
                     working)"
                ),
            ));
        }
        Ok(())
    }

    /// The recovery code ids revoked on this device.
    pub(super) fn revoked_codes(&self, id: &AccountId) -> Vec<String> {
        std::fs::read_to_string(self.revoked_file(id))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| l.len() == 16 && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned)
            .collect()
    }

    /// Adds `code_id` (16 hex digits) to the codes revoked on this device.
    pub(super) fn remember_revoked(&self, id: &AccountId, code_id: &str) {
        let mut all = self.revoked_codes(id);
        if all.iter().any(|c| c == code_id) {
            return;
        }
        all.push(code_id.to_owned());
        let mut text = all.join("\n");
        text.push('\n');
        let _ = store::ensure_private_dir(&self.paths.state_dir, self.uid);
        if let Err(e) = store::write_atomic(&self.revoked_file(id), text.as_bytes()) {
            tracing::warn!("cannot record the revoked recovery code: {e}");
        }
    }

    /// For `unlock`: revokes again every recovery code of `v` that was
    /// revoked on this device (an older copy of the vault brought it back).
    pub(super) fn revoke_again(
        &self,
        v: &mut vault::Unlocked,
        path: &std::path::Path,
        notes: &mut Vec<String>,
    ) {
        let revoked = self.revoked_codes(&v.account_id());
        let back: Vec<String> = v
            .file()
            .recovery_wraps
            .iter()
            .map(|w| vault::hex(&w.code_id))
            .filter(|h| revoked.contains(h))
            .collect();
        // Revoked here before revocations left tombstones: a tombstone now,
        // so that no other device's copy brings the code back (§18.3).
        let missing: Vec<[u8; 8]> = revoked
            .iter()
            .filter_map(|h| crate::account::unhex::<8>(h))
            .filter(|id| {
                !v.file().tombstones.iter().any(|t| {
                    t.kind == vault::format::TombstoneKind::RecoveryCode && t.id[..] == id[..]
                })
            })
            .collect();
        if !missing.is_empty()
            && let Err(e) = v.tombstone_codes(path, &missing)
        {
            notes.push(format!("could not record the revoked recovery codes: {e}"));
        }
        for code in back {
            match v.revoke_recovery_code(path, &code) {
                Ok(_) => notes.push(format!(
                    "recovery code {code} was revoked on this device but is back in the vault (an \
                     older copy): revoked it again"
                )),
                Err(e) => notes.push(format!(
                    "recovery code {code} was revoked on this device but is back in the vault, and \
                     could not be revoked again ({e}): run `keyward recovery-code revoke {code}`"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{key_accepted, key_seen};
    use crate::account::password::{KdfParams, Password};
    use crate::vault;

    const FAST: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };

    /// Someone holding a retired account key (a removed device, a revoked
    /// code and an old copy) can seal it, as a previous key, into a vault of
    /// their own: that vault proves a key this device has *seen*, but not
    /// the one in force, and is not taken.
    #[test]
    fn a_vault_proving_only_a_retired_key_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let pw = Password::new("pinned keys").unwrap();
        let (p0, p1) = (dir.path().join("v0"), dir.path().join("v1"));
        let (v0, sk) = vault::create(&p0, &pw, FAST, 1).unwrap();
        std::fs::copy(&p0, &p1).unwrap();
        let mut v1 = vault::unlock(vault::read(&p1).unwrap(), &pw, &sk).unwrap();
        v1.rekey(&p1, &pw, FAST, 2).unwrap();
        // This device: K1 in force, K0 seen before.
        let known = v1.proven_key_ids();
        assert_eq!(known.len(), 2);
        assert!(key_accepted(&known, None, &v1));
        // The forger's vault: an old copy (K0) rekeyed by them, so under a
        // key of theirs with K0 sealed in as a previous key.
        drop(v0);
        let p2 = dir.path().join("v2");
        std::fs::copy(&p0, &p2).unwrap();
        let mut v2 = vault::unlock(vault::read(&p2).unwrap(), &pw, &sk).unwrap();
        v2.rekey(&p2, &pw, FAST, 5).unwrap();
        // v2: a key never in force here, K0 as a previous key.
        assert!(v2.proven_key_ids().contains(&known[1]));
        assert!(
            !key_accepted(&known, None, &v2),
            "a retired key let a vault in"
        );
        // The wider test (two rekeys made apart, opened with the same
        // credentials as a vault proving K1) takes it.
        assert!(key_seen(&known, &v2));
        // Nothing recorded: the own file vouches.
        let own = vault::read(&p1).unwrap();
        assert!(key_accepted(&[], Some(&own), &v1));
        assert!(!key_accepted(&[], Some(&own), &v2));
    }
}
