//! Organizer recovery on a vault (SECURITY.md §16): the organizer key of an
//! organizer's vault (sealed in it, record 0x06, or on a YubiKey, record
//! 0x0a), the organizer wraps of a member's vault, and the used grants that
//! make a grant work once.

use super::format::{
    FLAG_REQUIRED, OrganizerCardRecord, OrganizerKeyRecord, OrganizerWrap, Parsed, UsedGrant,
    VaultFile, is_piv_key_slot,
};
use super::{ChangeError, UnlockError, Unlocked, hex, open_with_account_key};
use crate::account::organizer::{self, Grant, GrantCode, OrganizerSecret, Recipient};
use crate::account::{AccountId, piv, vault_mac_key};
use crate::secret::{Key32, SecretArray};
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
    /// The organizer key is on a YubiKey: the card, not the vault, opens wraps.
    #[error(
        "your organizer key is on YubiKey {0} (slot {1:02x}), not in your vault: recover with the \
         card (`keyward organizer recover` asks for its PIN)"
    )]
    OnCard(u32, u8),
    /// The organizer key is in the vault: no card opens wraps for it.
    #[error(
        "your organizer key is in your vault, not on a YubiKey: recover with your Master Password"
    )]
    InVault,
}

impl Unlocked {
    /// Whether this vault has an organizer key (in it, or on a card).
    pub fn has_organizer_key(&self) -> bool {
        self.file.organizers.key.is_some() || self.file.organizers.card.is_some()
    }

    /// Where this vault's organizer key is, when it is on a YubiKey.
    pub fn organizer_card(&self) -> Option<&OrganizerCardRecord> {
        self.file.organizers.card.as_ref()
    }

    /// This vault's organizer key, if it has one in the vault.
    fn organizer_secret(&self) -> Result<OrganizerSecret, MemberVaultError> {
        if let Some(c) = &self.file.organizers.card {
            return Err(MemberVaultError::OnCard(c.serial, c.slot));
        }
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

    /// The recipient of this vault's organizer key (in the vault or on a
    /// card), if it has one.
    pub fn organizer_recipient(&self) -> Result<Recipient, MemberVaultError> {
        if let Some(c) = &self.file.organizers.card {
            return Recipient::from_point(&c.card_pk).map_err(|_| MemberVaultError::BadKey);
        }
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
        if self.has_organizer_key() {
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

    /// Records that this vault's organizer key is the P-256 key generated on
    /// YubiKey `serial` in `slot` (record 0x0a; at most one organizer key)
    /// and writes the vault. `card_pk` is the card's public key in any SEC1
    /// form.
    #[allow(clippy::too_many_arguments)]
    pub fn set_organizer_card(
        &mut self,
        path: &Path,
        serial: u32,
        slot: u8,
        pin_policy: u8,
        touch_policy: u8,
        card_pk: &[u8],
        now: u64,
    ) -> Result<Recipient, ChangeError> {
        if self.has_organizer_key() {
            return Err(ChangeError::Exists("an organizer key".into()));
        }
        if !is_piv_key_slot(slot) {
            return Err(ChangeError::NotFound("PIV key slot", format!("{slot:02x}")));
        }
        let card_pk = piv::compress(card_pk)?;
        let recipient = Recipient::from_point(&card_pk).map_err(|_| piv::BadPoint)?;
        self.change(path, |v| {
            v.file.organizers.card = Some(OrganizerCardRecord {
                serial,
                slot,
                pin_policy,
                touch_policy,
                card_pk,
                created: now,
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
            added: self.after_removal(
                super::format::TombstoneKind::OrganizerWrap,
                recipient.as_bytes(),
                now,
            ),
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
        let now = crate::clock::Clock::unix_now(&crate::clock::SystemClock);
        self.change(path, |v| {
            let added = v
                .file
                .organizers
                .wraps
                .iter()
                .filter(|w| &w.org_pk == org_pk)
                .map(|w| w.added)
                .max()
                .unwrap_or(0);
            v.file.organizers.wraps.retain(|w| &w.org_pk != org_pk);
            v.tombstone(
                super::format::TombstoneKind::OrganizerWrap,
                org_pk.to_vec(),
                now.max(added),
            );
            Ok(())
        })
    }

    /// For an organizer: the wrap for this vault's organizer key (wherever
    /// it is) in a member's vault copy. Refuses the organizer's own vault.
    pub fn member_wrap<'m>(
        &self,
        member: &'m Parsed,
    ) -> Result<(Recipient, &'m OrganizerWrap), MemberVaultError> {
        let id = member.vault.account_id;
        if id == self.file.account_id {
            return Err(MemberVaultError::OwnAccount);
        }
        let me = self.organizer_recipient()?;
        let w = member
            .vault
            .organizers
            .wraps
            .iter()
            .find(|w| &w.org_pk == me.as_bytes())
            .ok_or_else(|| MemberVaultError::NotEnrolled(id, me.fingerprint()))?;
        Ok((me, w))
    }

    /// For an organizer: opens a member's vault (a parsed copy) with this
    /// vault's organizer key, and returns the member's account key once the
    /// member vault's MAC verified under it. A key on a card: `OnCard` (the
    /// card computes the shared secret, then [`open_member_vault_with`]).
    pub fn open_member_vault(&self, member: &Parsed) -> Result<Key32, MemberVaultError> {
        let (_, w) = self.member_wrap(member)?;
        let secret = self.organizer_secret()?;
        let id = member.vault.account_id;
        let account_key = secret
            .open_wrap(&w.epk, &id, &w.sealed)
            .map_err(|_| MemberVaultError::Tampered(id))?;
        check_member_mac(member, account_key)
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
        let gone: Vec<[u8; 8]> = self
            .file
            .recovery_wraps
            .drain(..)
            .map(|w| w.code_id)
            .collect();
        for code_id in &gone {
            self.tombstone(
                super::format::TombstoneKind::RecoveryCode,
                code_id.to_vec(),
                now,
            );
        }
        gone.iter().map(|c| hex(c)).collect()
    }
}

/// For an organizer whose key is on a card: opens the member's wrap `w`
/// (from [`Unlocked::member_wrap`]) with the shared x-coordinate the card
/// computed for its `epk`, and returns the member's account key once the
/// member vault's MAC verified under it.
pub fn open_member_vault_with(
    member: &Parsed,
    org: Recipient,
    w: &OrganizerWrap,
    shared_x: &SecretArray<32>,
) -> Result<Key32, MemberVaultError> {
    let id = member.vault.account_id;
    let account_key = organizer::open_wrap_with_shared(shared_x, &w.epk, &org, &id, &w.sealed)
        .map_err(|_| MemberVaultError::Tampered(id))?;
    check_member_mac(member, account_key)
}

fn check_member_mac(member: &Parsed, account_key: Key32) -> Result<Key32, MemberVaultError> {
    let id = member.vault.account_id;
    if !member.mac_ok(vault_mac_key(account_key.expose(), &id).expose()) {
        return Err(MemberVaultError::Tampered(id));
    }
    Ok(account_key)
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
    use p256::elliptic_curve::sec1::ToSec1Point;
    use sha2::Digest;

    /// The cheapest parameters a new wrap accepts.
    const FAST: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };

    fn new_vault(dir: &Path, name: &str) -> (Unlocked, std::path::PathBuf) {
        new_vault_with_key(dir, name).0
    }

    fn new_vault_with_key(
        dir: &Path,
        name: &str,
    ) -> (
        (Unlocked, std::path::PathBuf),
        crate::account::secret_key::SecretKey,
    ) {
        let path = dir.join(name);
        let pw = Password::new("pw").unwrap();
        let (mut v, sk) = vault::create(&path, &pw, FAST, 1).unwrap();
        v.persist(&path).unwrap();
        ((v, path), sk)
    }

    /// What a YubiKey holding `k` computes for a wrap's `epk`: the shared x.
    fn card_agreement(k: &p256::NonZeroScalar, epk: &[u8; 33]) -> SecretArray<32> {
        let peer = p256::PublicKey::from_sec1_bytes(epk).unwrap();
        let shared = p256::ecdh::diffie_hellman(*k, peer.as_affine());
        SecretArray::from_slice(shared.raw_secret_bytes()).unwrap()
    }

    #[test]
    fn an_organizer_key_on_a_card_is_recorded_and_opens_enrolled_members_only() {
        let d = tempfile::tempdir().unwrap();
        let ((mut org, org_path), org_sk) = new_vault_with_key(d.path(), "org.kwv");
        let (mut member, member_path) = new_vault(d.path(), "member.kwv");
        // The card's key (the test plays the card).
        let k = p256::NonZeroScalar::from_repr([0x42; 32].into()).unwrap();
        let card_pk = p256::PublicKey::from_secret_scalar(&k)
            .to_sec1_point(false)
            .as_bytes()
            .to_vec();
        assert!(matches!(
            org.set_organizer_card(&org_path, 7, 0x81, 2, 1, &card_pk, 3),
            Err(ChangeError::NotFound(..))
        ));
        let r = org
            .set_organizer_card(&org_path, 7, 0x82, 2, 1, &card_pk, 3)
            .unwrap();
        assert_eq!(r.as_bytes()[..], piv::compress(&card_pk).unwrap()[..]);
        assert_eq!(org.organizer_recipient().unwrap(), r);
        // One organizer key per vault, whichever kind.
        assert!(matches!(
            org.create_organizer_key(&org_path, 4),
            Err(ChangeError::Exists(_))
        ));
        assert!(matches!(
            org.set_organizer_card(&org_path, 8, 0x83, 2, 1, &card_pk, 4),
            Err(ChangeError::Exists(_))
        ));
        // Written, read back, and the vault still opens (the record is MACed).
        let reread = vault::read(&org_path).unwrap();
        let c = reread.vault.organizers.card.clone().unwrap();
        assert_eq!(
            (c.serial, c.slot, c.pin_policy, c.touch_policy, c.created),
            (7, 0x82, 2, 1, 3)
        );
        assert!(reread.vault.organizers.key.is_none());
        let reopened = vault::unlock(reread, &Password::new("pw").unwrap(), &org_sk).unwrap();
        assert_eq!(reopened.organizer_card(), Some(&c));

        // A member enrolls the recipient; the card's answer opens the wrap.
        let parsed = vault::read(&member_path).unwrap();
        assert!(matches!(
            org.member_wrap(&parsed),
            Err(MemberVaultError::NotEnrolled(..))
        ));
        member
            .add_organizer(&member_path, &r, "Card", false, 5)
            .unwrap();
        let parsed = vault::read(&member_path).unwrap();
        assert!(matches!(
            org.open_member_vault(&parsed),
            Err(MemberVaultError::OnCard(7, 0x82))
        ));
        let (me, w) = org.member_wrap(&parsed).unwrap();
        assert_eq!(me, r);
        let x = card_agreement(&k, &w.epk);
        let ak = open_member_vault_with(&parsed, me, w, &x).unwrap();
        assert!(ak.ct_eq(&member.account_key_for_test_vectors()));
        // Another card's answer, or an altered copy: refused as tampered.
        let other = p256::NonZeroScalar::from_repr([0x43; 32].into()).unwrap();
        let wrong = card_agreement(&other, &w.epk);
        assert!(matches!(
            open_member_vault_with(&parsed, me, w, &wrong),
            Err(MemberVaultError::Tampered(_))
        ));
        let mut bytes = std::fs::read(&member_path).unwrap();
        let n = bytes.len();
        bytes[n - 40] ^= 1;
        let sum: [u8; 32] = sha2::Sha256::digest(&bytes[..n - 32]).into();
        bytes[n - 32..].copy_from_slice(&sum);
        let altered = vault::format::parse(&bytes).unwrap();
        let (_, w2) = org.member_wrap(&altered).unwrap();
        assert!(matches!(
            open_member_vault_with(&altered, me, w2, &x),
            Err(MemberVaultError::Tampered(_))
        ));
        // The organizer's own vault: refused before any card work.
        let own = vault::read(&org_path).unwrap();
        assert_eq!(
            org.member_wrap(&own).unwrap_err(),
            MemberVaultError::OwnAccount
        );
    }

    #[test]
    fn a_vault_with_both_kinds_of_organizer_key_or_a_bad_card_record_is_malformed() {
        use crate::vault::format::{self, FormatError, OrganizerKeyRecord};
        let d = tempfile::tempdir().unwrap();
        let (mut org, org_path) = new_vault(d.path(), "org.kwv");
        org.create_organizer_key(&org_path, 2).unwrap();
        let mut file = vault::read(&org_path).unwrap().vault;
        let g = piv::compress(
            p256::PublicKey::from_secret_scalar(
                &p256::NonZeroScalar::from_repr([1; 32].into()).unwrap(),
            )
            .to_sec1_point(true)
            .as_bytes(),
        )
        .unwrap();
        let card = OrganizerCardRecord {
            serial: 1,
            slot: 0x95,
            pin_policy: 2,
            touch_policy: 3,
            card_pk: g,
            created: 9,
        };
        file.organizers.card = Some(card.clone());
        let key = [7; 32];
        let both = file.encode(&key);
        assert!(matches!(
            format::parse(&both),
            Err(FormatError::Malformed { what, .. }) if what.contains("two organizer keys")
        ));
        // The card record alone round-trips; a bad slot, policy or point is refused.
        let key_record: Option<OrganizerKeyRecord> = file.organizers.key.take();
        assert!(key_record.is_some());
        let alone = file.encode(&key);
        assert_eq!(format::parse(&alone).unwrap().vault, file);
        // The record's bytes, as SECURITY.md §10.3 gives them.
        let mut at = format::ENVELOPE_HEADER + format::BODY_HEADER;
        let mut payload = None;
        while at < alone.len() - format::MAC_LEN - format::CHECKSUM_LEN {
            let len = u32::from_be_bytes(alone[at + 1..at + 5].try_into().unwrap()) as usize;
            if alone[at] == format::record_type::ORGANIZER_CARD {
                payload = Some(&alone[at + 5..at + 5 + len]);
            }
            at += 5 + len;
        }
        let mut expected = vec![0, 0, 0, 1, 0x95, 2, 3];
        expected.extend_from_slice(&g);
        expected.extend_from_slice(&9u64.to_be_bytes());
        assert_eq!(payload.unwrap(), &expected[..]);
        assert_eq!(expected.len(), 48);
        for bad in [
            OrganizerCardRecord {
                slot: 0x9b,
                ..card.clone()
            },
            OrganizerCardRecord {
                pin_policy: 0,
                ..card.clone()
            },
            OrganizerCardRecord {
                touch_policy: 4,
                ..card.clone()
            },
            OrganizerCardRecord {
                card_pk: [5; 33],
                ..card.clone()
            },
        ] {
            file.organizers.card = Some(bad.clone());
            assert!(
                matches!(
                    format::parse(&file.encode(&key)),
                    Err(FormatError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
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
