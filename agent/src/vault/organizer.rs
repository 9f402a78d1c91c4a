//! Organizer recovery on a vault (SECURITY.md §16): the organizer key of an
//! organizer's vault, the organizer wraps of a member's vault, and the used
//! grants that make a grant work once.

use super::format::{
    FLAG_REQUIRED, OrganizerKeyRecord, OrganizerWrap, Parsed, UsedGrant, VaultFile,
};
use super::{ChangeError, UnlockError, Unlocked, hex, open_with_account_key};
use crate::account::organizer::{self, Grant, GrantCode, OrganizerSecret, Recipient};
use crate::account::{AccountId, vault_mac_key};
use crate::secret::Key32;
use std::path::Path;

/// Why an organizer could not open a member's vault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberVaultError {
    /// This vault has no organizer key.
    #[error("this account has no organizer key: make one with `keyward organizer create`")]
    NoKey,
    /// The organizer key record does not open (altered).
    #[error("this vault's organizer key cannot be opened (the record was altered)")]
    BadKey,
    /// The member's vault is this organizer's own.
    #[error(
        "this is your own account's vault: an organizer cannot recover their own account this \
         way; use a recovery code or your Secret Key for your own account"
    )]
    OwnAccount,
    /// No wrap for this organizer in the member's vault.
    #[error(
        "account {0} is not enrolled with your organizer key (fingerprint {1}): the member never \
         added it, or removed it, so it cannot be recovered this way"
    )]
    NotEnrolled(AccountId, String),
    /// The wrap is there but does not open, or the vault fails its MAC.
    #[error(
        "the vault of account {0} fails authentication under the key its organizer wrap gave: it \
         was altered; ask the member for an intact copy"
    )]
    Tampered(AccountId),
}

impl Unlocked {
    /// This vault's organizer key, if it has one.
    fn organizer_secret(&self) -> Result<OrganizerSecret, MemberVaultError> {
        let k = self
            .file
            .organizers
            .key
            .as_ref()
            .ok_or(MemberVaultError::NoKey)?;
        OrganizerSecret::open(
            &self.keys.item_key,
            &self.file.account_id,
            &k.key_id,
            &k.sealed,
        )
        .map_err(|_| MemberVaultError::BadKey)
    }

    /// The recipient of this vault's organizer key, if it has one.
    pub fn organizer_recipient(&self) -> Result<Recipient, MemberVaultError> {
        self.organizer_secret()?
            .recipient()
            .map_err(|_| MemberVaultError::BadKey)
    }

    /// Makes this vault's organizer key (at most one) and writes the vault.
    pub fn create_organizer_key(
        &mut self,
        path: &Path,
        now: u64,
    ) -> Result<Recipient, ChangeError> {
        if self.file.organizers.key.is_some() {
            return Err(ChangeError::Exists("an organizer key".into()));
        }
        let secret = OrganizerSecret::generate()?;
        let recipient = secret
            .recipient()
            .map_err(|_| crate::account::piv::BadPoint)?;
        let mut key_id = [0u8; 8];
        getrandom::fill(&mut key_id)?;
        let sealed = secret.seal(&self.keys.item_key, &self.file.account_id, &key_id)?;
        self.change(path, |v| {
            v.file.organizers.key = Some(OrganizerKeyRecord {
                key_id,
                created: now,
                sealed,
            });
            Ok(())
        })?;
        Ok(recipient)
    }

    /// Enrolls an organizer: seals the account key to its public key and
    /// writes the vault. `required` comes from machine policy only.
    pub fn add_organizer(
        &mut self,
        path: &Path,
        recipient: &Recipient,
        name: &str,
        required: bool,
        now: u64,
    ) -> Result<(), ChangeError> {
        if self.organizer_wrap(recipient).is_some() {
            return Err(ChangeError::Exists(format!(
                "organizer {}",
                recipient.fingerprint()
            )));
        }
        let (epk, sealed) =
            organizer::seal_to_organizer(recipient, &self.file.account_id, &self.keys.account_key)?;
        let wrap = OrganizerWrap {
            org_pk: *recipient.as_bytes(),
            epk,
            flags: if required { FLAG_REQUIRED } else { 0 },
            added: now,
            name: name.to_owned(),
            sealed,
        };
        self.change(path, |v| {
            v.file.organizers.wraps.push(wrap);
            Ok(())
        })
    }

    /// The wrap for `recipient`, if enrolled.
    pub fn organizer_wrap(&self, recipient: &Recipient) -> Option<&OrganizerWrap> {
        self.file
            .organizers
            .wraps
            .iter()
            .find(|w| &w.org_pk == recipient.as_bytes())
    }

    /// Removes an organizer's wrap and writes the vault. The caller has
    /// refused a required one.
    pub fn remove_organizer(&mut self, path: &Path, org_pk: &[u8; 33]) -> Result<(), ChangeError> {
        if !self
            .file
            .organizers
            .wraps
            .iter()
            .any(|w| &w.org_pk == org_pk)
        {
            return Err(ChangeError::NotFound("organizer", hex(&org_pk[..8])));
        }
        self.change(path, |v| {
            v.file.organizers.wraps.retain(|w| &w.org_pk != org_pk);
            Ok(())
        })
    }

    /// For an organizer: opens a member's vault (a parsed copy) with this
    /// vault's organizer key, and returns the member's account key once the
    /// member vault's MAC verified under it.
    pub fn open_member_vault(&self, member: &Parsed) -> Result<Key32, MemberVaultError> {
        let id = member.vault.account_id;
        if id == self.file.account_id {
            return Err(MemberVaultError::OwnAccount);
        }
        let secret = self.organizer_secret()?;
        let me = secret.recipient().map_err(|_| MemberVaultError::BadKey)?;
        let w = member
            .vault
            .organizers
            .wraps
            .iter()
            .find(|w| &w.org_pk == me.as_bytes())
            .ok_or_else(|| MemberVaultError::NotEnrolled(id, me.fingerprint()))?;
        let account_key = secret
            .open_wrap(&w.epk, &id, &w.sealed)
            .map_err(|_| MemberVaultError::Tampered(id))?;
        if !member.mac_ok(vault_mac_key(account_key.expose(), &id).expose()) {
            return Err(MemberVaultError::Tampered(id));
        }
        Ok(account_key)
    }

    /// For a member recovering with a grant: records the grant as used and
    /// revokes every recovery code, in memory only; the next write (the
    /// Secret Key change's first) makes both durable together. Returns the
    /// revoked codes' ids (hex).
    pub fn stage_grant_recovery(&mut self, grant_id: &[u8; 16], now: u64) -> Vec<String> {
        self.file.organizers.used_grants.push(UsedGrant {
            grant_id: *grant_id,
            used: now,
        });
        self.file
            .recovery_wraps
            .drain(..)
            .map(|w| hex(&w.code_id))
            .collect()
    }
}

/// Whether `file` records `grant_id` as used.
pub fn grant_used(file: &VaultFile, grant_id: &[u8; 16]) -> bool {
    file.organizers
        .used_grants
        .iter()
        .any(|g| &g.grant_id == grant_id)
}

/// Opens a member's vault with a grant and its code (no password, no
/// Secret Key): `WrongRecoveryCode` for a wrong code or a grant altered
/// since it was made (the caller counts it), `Tampered` if the vault then
/// fails its MAC. The caller has checked the account, the expiry and that
/// the grant is unused. The result knows no Secret Key; the caller goes on
/// with [`Unlocked::begin_secret_key_change`].
pub fn unlock_with_grant(
    parsed: Parsed,
    grant: &Grant,
    code: &GrantCode,
) -> Result<Unlocked, UnlockError> {
    if grant.account_id != parsed.vault.account_id {
        return Err(UnlockError::WrongRecoveryCode);
    }
    let account_key = grant
        .open(code)
        .map_err(|_| UnlockError::WrongRecoveryCode)?;
    open_with_account_key(parsed, &account_key, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::password::{KdfParams, Password};
    use crate::vault;

    /// The cheapest parameters a new wrap accepts.
    const FAST: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };

    fn new_vault(dir: &Path, name: &str) -> (Unlocked, std::path::PathBuf) {
        let path = dir.join(name);
        let pw = Password::new("pw").unwrap();
        let (mut v, _) = vault::create(&path, &pw, FAST, 1).unwrap();
        v.persist(&path).unwrap();
        (v, path)
    }

    #[test]
    fn an_organizer_recovers_an_enrolled_member_and_no_one_else() {
        let d = tempfile::tempdir().unwrap();
        let (mut org, org_path) = new_vault(d.path(), "org.kwv");
        let (mut member, member_path) = new_vault(d.path(), "member.kwv");
        let r = org.create_organizer_key(&org_path, 2).unwrap();
        assert!(matches!(
            org.create_organizer_key(&org_path, 2),
            Err(ChangeError::Exists(_))
        ));
        // The key survives a reload and still opens.
        let reread = vault::read(&org_path).unwrap();
        assert!(reread.vault.organizers.key.is_some());
        assert_eq!(org.organizer_recipient().unwrap(), r);

        let parsed = vault::read(&member_path).unwrap();
        assert!(matches!(
            org.open_member_vault(&parsed),
            Err(MemberVaultError::NotEnrolled(..))
        ));
        member
            .add_organizer(&member_path, &r, "Anna", false, 3)
            .unwrap();
        assert!(
            member
                .add_organizer(&member_path, &r, "x", false, 3)
                .is_err()
        );
        let parsed = vault::read(&member_path).unwrap();
        assert_eq!(parsed.vault.organizers.wraps[0].name, "Anna");
        let ak = org.open_member_vault(&parsed).unwrap();
        assert!(ak.ct_eq(&member.account_key_for_test_vectors()));
        // Own vault: refused.
        let own = vault::read(&org_path).unwrap();
        assert_eq!(
            org.open_member_vault(&own).unwrap_err(),
            MemberVaultError::OwnAccount
        );
        // A grant opens the member's vault once its code is right.
        let (g, code) = Grant::new(member.account_id(), 100, ak.expose()).unwrap();
        let v = unlock_with_grant(vault::read(&member_path).unwrap(), &g, &code).unwrap();
        assert_eq!(v.account_id(), member.account_id());
        assert!(matches!(
            unlock_with_grant(
                vault::read(&member_path).unwrap(),
                &g,
                &GrantCode::generate().unwrap()
            ),
            Err(UnlockError::WrongRecoveryCode)
        ));
        // Removed: the organizer can no longer open the current file.
        member.remove_organizer(&member_path, r.as_bytes()).unwrap();
        assert!(matches!(
            org.open_member_vault(&vault::read(&member_path).unwrap()),
            Err(MemberVaultError::NotEnrolled(..))
        ));
    }
}
