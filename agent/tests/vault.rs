#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The vault file from the attacker's and the unlucky user's side: wrong
//! credentials, flipped bits, truncation, edited records, newer formats,
//! failed writes.

use keyward_agent::account::password::{KdfParams, Password, PasswordError};
use keyward_agent::account::recovery::RecoveryCode;
use keyward_agent::account::secret_key::SecretKey;
use keyward_agent::vault::format::{self, FormatError, ProtectorKind};
use keyward_agent::vault::{self, ChangeError, ReadError, UnlockError, Unlocked};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The weakest parameters a new account accepts: keeps tests fast.
const FAST: KdfParams = KdfParams {
    m_kib: 19 * 1024,
    t: 2,
    p: 1,
};
const NOW: u64 = 1_700_000_000;

fn pw(s: &str) -> Password {
    Password::new(s).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    sk: SecretKey,
    code: RecoveryCode,
}

/// A vault with two items, a recovery code and a protector record.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault");
    let (mut v, sk) = vault::create(&path, &pw("correct horse"), FAST, NOW).unwrap();
    v.set(&path, "github", b"ghp_secret", NOW).unwrap();
    v.set(&path, "aws", b"AKIA-secret", NOW + 1).unwrap();
    let (code, _) = v.add_recovery_code(&path, NOW + 2).unwrap();
    v.upsert_protector(&path, ProtectorKind::File, NOW).unwrap();
    Fixture {
        _dir: dir,
        path,
        sk,
        code,
    }
}

fn open(path: &Path, password: &str, sk: &SecretKey) -> Result<Unlocked, UnlockError> {
    let parsed = vault::read(path).unwrap();
    vault::unlock(parsed, &pw(password), sk)
}

#[test]
fn create_set_get_reopen() {
    let f = fixture();
    let v = open(&f.path, "correct horse", &f.sk).unwrap();
    assert_eq!(v.get("github").unwrap().expose(), b"ghp_secret");
    assert_eq!(v.get("aws").unwrap().expose(), b"AKIA-secret");
    assert!(v.get("nope").is_none());
    let names: Vec<_> = v.list().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["aws", "github"]);
    // Names are not on disk in clear.
    let bytes = std::fs::read(&f.path).unwrap();
    for needle in [&b"github"[..], b"aws", b"ghp_secret"] {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    }
}

#[test]
fn wrong_password_and_wrong_secret_key_give_the_same_error() {
    let f = fixture();
    let e1 = open(&f.path, "correct horsE", &f.sk).unwrap_err();
    let other_sk = SecretKey::generate(&f.sk.account_id()).unwrap();
    let e2 = open(&f.path, "correct horse", &other_sk).unwrap_err();
    assert!(matches!(e1, UnlockError::WrongCredentials));
    assert!(matches!(e2, UnlockError::WrongCredentials));
    assert_eq!(e1.to_string(), e2.to_string());
}

#[test]
fn a_secret_key_of_another_account_is_named_as_such() {
    let f = fixture();
    let other =
        SecretKey::generate(&keyward_agent::account::AccountId::generate().unwrap()).unwrap();
    if other.account_id() != f.sk.account_id() {
        assert!(matches!(
            open(&f.path, "correct horse", &other),
            Err(UnlockError::OtherAccount { .. })
        ));
    }
}

#[test]
fn password_is_normalised_on_unlock() {
    let f = fixture();
    assert!(open(&f.path, "  correct horse\n", &f.sk).is_ok());
}

#[test]
fn every_flipped_byte_is_detected_and_nothing_panics() {
    let f = fixture();
    let good = std::fs::read(&f.path).unwrap();
    let baseline = format::parse(&good).unwrap();
    for i in 0..good.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] ^= mask;
            match format::parse(&bad) {
                Err(_) => {}
                // Only acceptable if it decodes to exactly the same contents.
                Ok(p) => assert_eq!(p.vault, baseline.vault, "flip at byte {i} went unnoticed"),
            }
        }
    }
}

#[test]
fn a_flipped_bit_in_the_version_or_length_field_is_damage() {
    let f = fixture();
    let good = std::fs::read(&f.path).unwrap();
    for i in 8..18 {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            assert_eq!(
                format::parse(&bad).unwrap_err(),
                FormatError::Damaged,
                "byte {i} bit {bit}"
            );
        }
    }
}

#[test]
fn truncation_at_every_length_is_reported_as_truncation() {
    let f = fixture();
    let good = std::fs::read(&f.path).unwrap();
    for n in 0..good.len() {
        match format::parse(&good[..n]) {
            Err(FormatError::Truncated { actual, .. }) => assert_eq!(actual, n as u64),
            other => panic!("truncated to {n}: {other:?}"),
        }
    }
    let mut longer = good.clone();
    longer.extend_from_slice(b"junk");
    assert!(matches!(
        format::parse(&longer),
        Err(FormatError::TrailingData { .. })
    ));
}

/// Rebuilds a file from its records, fixing count, length and checksum —
/// what an attacker who knows the format (but not the keys) can do.
fn reassemble(good: &[u8], edit: impl FnOnce(&mut Vec<Vec<u8>>)) -> Vec<u8> {
    let body = format::ENVELOPE_HEADER;
    let count_at = body + 6 + 8 + 8;
    let count = u32::from_be_bytes(good[count_at..count_at + 4].try_into().unwrap()) as usize;
    let mut at = count_at + 4;
    let mut records = Vec::new();
    for _ in 0..count {
        let len = u32::from_be_bytes(good[at + 1..at + 5].try_into().unwrap()) as usize;
        records.push(good[at..at + 5 + len].to_vec());
        at += 5 + len;
    }
    let mac = good[at..at + 32].to_vec();
    edit(&mut records);
    let mut out = good[..count_at].to_vec();
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for r in &records {
        out.extend_from_slice(r);
    }
    out.extend_from_slice(&mac);
    let total = (out.len() + 32) as u64;
    out[10..18].copy_from_slice(&total.to_be_bytes());
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

fn item_positions(good: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    reassemble(good, |recs| {
        for (i, r) in recs.iter().enumerate() {
            if r[0] == format::record_type::ITEM {
                v.push(i);
            }
        }
    });
    v
}

#[test]
fn reassembly_without_edits_is_the_identity() {
    let f = fixture();
    let good = std::fs::read(&f.path).unwrap();
    assert_eq!(reassemble(&good, |_| {}), good);
}

#[test]
fn a_removed_record_fails_authentication() {
    let f = fixture();
    let good = std::fs::read(&f.path).unwrap();
    for victim in [item_positions(&good)[0], 1 /* the recovery wrap */] {
        let bad = reassemble(&good, |r| {
            r.remove(victim);
        });
        std::fs::write(&f.path, &bad).unwrap();
        assert!(matches!(
            open(&f.path, "correct horse", &f.sk),
            Err(UnlockError::Tampered)
        ));
    }
}

#[test]
fn swapped_records_fail_authentication() {
    let f = fixture();
    let good = std::fs::read(&f.path).unwrap();
    let items = item_positions(&good);
    let bad = reassemble(&good, |r| r.swap(items[0], items[1]));
    std::fs::write(&f.path, &bad).unwrap();
    assert!(matches!(
        open(&f.path, "correct horse", &f.sk),
        Err(UnlockError::Tampered)
    ));
}

#[test]
fn a_duplicated_record_is_refused_when_read() {
    let f = fixture();
    let good = std::fs::read(&f.path).unwrap();
    let i = item_positions(&good)[0];
    let bad = reassemble(&good, |r| {
        let dup = r[i].clone();
        r.push(dup);
    });
    match format::parse(&bad) {
        Err(FormatError::Malformed { what, .. }) => assert!(what.contains("duplicates"), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_altered_record_with_a_fixed_checksum_fails_authentication() {
    let f = fixture();
    let good = std::fs::read(&f.path).unwrap();
    let i = item_positions(&good)[1];
    // Change the item's created/modified-free bytes: its nonce.
    let bad = reassemble(&good, |r| r[i][5 + 16] ^= 1);
    std::fs::write(&f.path, &bad).unwrap();
    assert!(matches!(
        open(&f.path, "correct horse", &f.sk),
        Err(UnlockError::Tampered)
    ));
}

fn with_version(good: &[u8], version: u16) -> Vec<u8> {
    let mut v = good[..good.len() - 32].to_vec();
    v[8..10].copy_from_slice(&version.to_be_bytes());
    let sum = Sha256::digest(&v);
    v.extend_from_slice(&sum);
    v
}

#[test]
fn a_newer_format_is_named_and_a_flipped_version_is_damage() {
    let f = fixture();
    let good = std::fs::read(&f.path).unwrap();
    assert_eq!(
        format::parse(&with_version(&good, 2)).unwrap_err(),
        FormatError::NewerVersion { found: 2 }
    );
    assert_eq!(
        format::parse(&with_version(&good, 0)).unwrap_err(),
        FormatError::BadVersion { found: 0 }
    );
    let mut flipped = good.clone();
    flipped[9] ^= 2;
    assert_eq!(format::parse(&flipped).unwrap_err(), FormatError::Damaged);
    assert!(
        FormatError::NewerVersion { found: 2 }
            .to_string()
            .contains("upgrade keyward")
    );
}

#[test]
fn absurd_kdf_parameters_are_refused_on_load_without_allocating() {
    let f = fixture();
    let good = std::fs::read(&f.path).unwrap();
    // The password wrap is record 0: type, len, slot_len, slot "pw-1", salt16, m …
    let bad = reassemble(&good, |r| {
        let m_at = 5 + 1 + 4 + 16;
        r[0][m_at..m_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    });
    let start = std::time::Instant::now();
    match format::parse(&bad) {
        Err(FormatError::Malformed { what, .. }) => {
            assert!(what.contains("out of range"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed().as_millis() < 500);
}

#[test]
fn foreign_files_and_missing_files() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("v");
    assert!(matches!(vault::read(&p), Err(ReadError::NotFound)));
    std::fs::write(&p, b"{\"json\": true, \"but\": \"not a vault at all\"}").unwrap();
    assert!(matches!(
        vault::read(&p),
        Err(ReadError::Format(FormatError::NotAVault))
    ));
}

#[test]
fn a_failed_open_never_modifies_the_file() {
    let f = fixture();
    let good = std::fs::read(&f.path).unwrap();
    let mtime = std::fs::metadata(&f.path).unwrap().modified().unwrap();
    assert!(open(&f.path, "wrong", &f.sk).is_err());
    let mut bad = good.clone();
    bad[40] ^= 1;
    std::fs::write(&f.path, &bad).unwrap();
    let mtime_bad = std::fs::metadata(&f.path).unwrap().modified().unwrap();
    assert!(vault::read(&f.path).is_err());
    assert_eq!(std::fs::read(&f.path).unwrap(), bad);
    assert_eq!(
        std::fs::metadata(&f.path).unwrap().modified().unwrap(),
        mtime_bad
    );
    std::fs::write(&f.path, &good).unwrap();
    let _ = mtime;
}

#[test]
fn weak_parameters_are_refused_for_new_accounts() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("v");
    let weak = KdfParams {
        m_kib: 1024,
        t: 2,
        p: 1,
    };
    assert!(matches!(
        vault::create(&p, &pw("x"), weak, NOW),
        Err(ChangeError::Password(PasswordError::TooWeak { .. }))
    ));
    assert!(!p.exists());
}

#[test]
fn recovery_codes_open_the_vault_and_wrong_ones_do_not() {
    let f = fixture();
    let parsed = vault::read(&f.path).unwrap();
    let v = vault::unlock_with_recovery_code(parsed, &f.code).unwrap();
    assert_eq!(v.get("github").unwrap().expose(), b"ghp_secret");
    assert!(v.secret_key().is_none());
    let parsed = vault::read(&f.path).unwrap();
    let wrong = RecoveryCode::generate().unwrap();
    assert!(matches!(
        vault::unlock_with_recovery_code(parsed, &wrong),
        Err(UnlockError::WrongRecoveryCode)
    ));
}

#[test]
fn revoked_recovery_codes_stop_working() {
    let f = fixture();
    let mut v = open(&f.path, "correct horse", &f.sk).unwrap();
    let id = vault::hex(&f.code.code_id(&f.sk.account_id()));
    assert!(v.revoke_recovery_code(&f.path, "").is_err());
    assert_eq!(v.revoke_recovery_code(&f.path, &id[..6]).unwrap(), id);
    let parsed = vault::read(&f.path).unwrap();
    assert!(matches!(
        vault::unlock_with_recovery_code(parsed, &f.code),
        Err(UnlockError::WrongRecoveryCode)
    ));
}

#[test]
fn change_password_keeps_items_and_recovery_codes() {
    let f = fixture();
    let mut v = open(&f.path, "correct horse", &f.sk).unwrap();
    assert!(v.verify_password(&pw("correct horse")).unwrap());
    assert!(!v.verify_password(&pw("battery staple")).unwrap());
    v.change_password(&f.path, &pw("battery staple"), FAST)
        .unwrap();
    assert!(matches!(
        open(&f.path, "correct horse", &f.sk),
        Err(UnlockError::WrongCredentials)
    ));
    let v = open(&f.path, "battery staple", &f.sk).unwrap();
    assert_eq!(v.get("aws").unwrap().expose(), b"AKIA-secret");
    let parsed = vault::read(&f.path).unwrap();
    assert!(vault::unlock_with_recovery_code(parsed, &f.code).is_ok());
}

#[test]
fn secret_key_change_opens_with_old_or_new_credentials_at_every_phase() {
    let f = fixture();
    let parsed = vault::read(&f.path).unwrap();
    let mut v = vault::unlock_with_recovery_code(parsed, &f.code).unwrap();
    let pending = v
        .begin_secret_key_change(&f.path, &pw("new pw"), FAST, NOW)
        .unwrap();
    let new_sk = pending.new_secret_key.duplicate();
    // Phase 1 on disk: both work.
    assert!(open(&f.path, "correct horse", &f.sk).is_ok());
    assert!(open(&f.path, "new pw", &new_sk).is_ok());
    assert!(open(&f.path, "new pw", &f.sk).is_err());
    v.finish_secret_key_change(&f.path, &pending).unwrap();
    assert!(open(&f.path, "correct horse", &f.sk).is_err());
    let v2 = open(&f.path, "new pw", &new_sk).unwrap();
    assert_eq!(v2.get("github").unwrap().expose(), b"ghp_secret");
    assert!(!v2.needs_settling());
    // The code still works afterwards.
    let parsed = vault::read(&f.path).unwrap();
    assert!(vault::unlock_with_recovery_code(parsed, &f.code).is_ok());
}

#[test]
fn an_interrupted_change_is_settled_by_the_next_unlock() {
    let f = fixture();
    let mut v = open(&f.path, "correct horse", &f.sk).unwrap();
    let pending = v
        .begin_secret_key_change(&f.path, &pw("new pw"), FAST, NOW)
        .unwrap();
    let new_sk = pending.new_secret_key.duplicate();
    drop(v); // "crash" before phase 3
    let mut v = open(&f.path, "correct horse", &f.sk).unwrap();
    assert!(v.needs_settling());
    v.settle(&f.path, NOW).unwrap();
    assert!(!v.needs_settling());
    assert!(open(&f.path, "correct horse", &f.sk).is_ok());
    assert!(open(&f.path, "new pw", &new_sk).is_err(), "rolled back");
}

/// What a card holding `card` would unwrap from the vault's PIV wrap.
fn card_unwraps(path: &Path, card: &p256::NonZeroScalar) -> SecretKey {
    use keyward_agent::account::piv;
    use p256::elliptic_curve::sec1::ToSec1Point;
    let file = vault::read(path).unwrap().vault;
    let w = &file.piv_wraps[0];
    let epk = p256::PublicKey::from_sec1_bytes(&w.epk).unwrap();
    let shared = p256::ecdh::diffie_hellman(*card, epk.as_affine());
    let x: [u8; 32] = (*shared.raw_secret_bytes()).into();
    let card_pk = p256::PublicKey::from_secret_scalar(card);
    let card_c = piv::compress(card_pk.to_sec1_point(false).as_bytes()).unwrap();
    let wk = piv::wrap_key(&x, &w.epk, &card_c);
    piv::open_secret_key(&wk, &file.account_id, w.serial, w.slot, &w.sealed).unwrap()
}

/// An interrupted Secret Key change whose settling failed at unlock (a full
/// disk) leaves the YubiKey wraps sealed for the new key while the vault was
/// opened with the old one: a password change then drops the other wrap,
/// and must bring the YubiKey wraps to the key in force, or no card would
/// open the vault again.
#[test]
fn a_password_change_after_an_unsettled_change_keeps_the_yubikey_usable() {
    use p256::elliptic_curve::sec1::ToSec1Point;
    let f = fixture();
    let card = p256::NonZeroScalar::from_repr([7u8; 32].into()).unwrap();
    let card_pk = p256::PublicKey::from_secret_scalar(&card);
    let mut v = open(&f.path, "correct horse", &f.sk).unwrap();
    v.add_piv(
        &f.path,
        4242,
        0x9d,
        1,
        1,
        card_pk.to_sec1_point(false).as_bytes(),
        NOW,
    )
    .unwrap();
    assert_eq!(
        card_unwraps(&f.path, &card).expose_compact(),
        f.sk.expose_compact()
    );
    let pending = v
        .begin_secret_key_change(&f.path, &pw("new pw"), FAST, NOW)
        .unwrap();
    let new_sk = pending.new_secret_key.duplicate();
    drop(v); // "crash" before phase 3
    assert_eq!(
        card_unwraps(&f.path, &card).expose_compact(),
        new_sk.expose_compact()
    );
    let mut v = open(&f.path, "correct horse", &f.sk).unwrap();
    assert!(v.needs_settling()); // and settling is not done (it failed)
    v.change_password(&f.path, &pw("third pw"), FAST).unwrap();
    let from_card = card_unwraps(&f.path, &card);
    assert_eq!(from_card.expose_compact(), f.sk.expose_compact());
    assert!(open(&f.path, "third pw", &from_card).is_ok());
    assert!(!open(&f.path, "third pw", &f.sk).unwrap().needs_settling());
}

#[test]
fn a_failed_write_changes_nothing_in_memory() {
    let f = fixture();
    let mut v = open(&f.path, "correct horse", &f.sk).unwrap();
    let gone = f.path.parent().unwrap().join("no/such/dir/vault");
    assert!(matches!(
        v.set(&gone, "github", b"new", NOW),
        Err(ChangeError::Io(_))
    ));
    assert!(matches!(
        v.set(&gone, "fresh", b"new", NOW),
        Err(ChangeError::Io(_))
    ));
    assert!(matches!(
        v.remove(&gone, "aws", 1_000),
        Err(ChangeError::Io(_))
    ));
    assert!(v.add_recovery_code(&gone, NOW).is_err());
    assert_eq!(v.get("github").unwrap().expose(), b"ghp_secret");
    assert!(v.get("fresh").is_none());
    assert_eq!(v.get("aws").unwrap().expose(), b"AKIA-secret");
    assert_eq!(v.file().recovery_wraps.len(), 1);
    // And the real file still works for further changes.
    v.set(&f.path, "github", b"new", NOW).unwrap();
    let v = open(&f.path, "correct horse", &f.sk).unwrap();
    assert_eq!(v.get("github").unwrap().expose(), b"new");
}

#[test]
fn remove_and_overwrite_keep_the_index_consistent() {
    let f = fixture();
    let mut v = open(&f.path, "correct horse", &f.sk).unwrap();
    for i in 0..20 {
        v.set(&f.path, &format!("k{i}"), format!("v{i}").as_bytes(), NOW)
            .unwrap();
    }
    v.remove(&f.path, "k0", 1_000).unwrap();
    v.remove(&f.path, "k7", 1_000).unwrap();
    v.set(&f.path, "k3", b"again", NOW).unwrap();
    assert!(matches!(
        v.remove(&f.path, "k0", 1_000),
        Err(ChangeError::NoSuchItem(_))
    ));
    let v = open(&f.path, "correct horse", &f.sk).unwrap();
    assert!(v.get("k0").is_none() && v.get("k7").is_none());
    assert_eq!(v.get("k3").unwrap().expose(), b"again");
    for i in [1, 2, 4, 5, 6, 8, 19] {
        assert_eq!(
            v.get(&format!("k{i}")).unwrap().expose(),
            format!("v{i}").as_bytes()
        );
    }
    assert_eq!(v.len(), 2 + 18);
}

/// The file written for a change (encoded before the change is made, see
/// `prepare_set`) and the vault in memory after it agree exactly: same
/// records in the same order, same generation — after replacing, appending,
/// and removing from the middle and from the end.
#[test]
fn the_file_written_and_the_vault_in_memory_agree_after_every_change() {
    let f = fixture();
    let mut v = open(&f.path, "correct horse", &f.sk).unwrap();
    let agree = |v: &Unlocked, step: &str| {
        let disk = open(&f.path, "correct horse", &f.sk).unwrap();
        assert_eq!(disk.file().items, v.file().items, "after {step}");
        assert_eq!(disk.file().generation, v.file().generation, "after {step}");
        assert_eq!(disk.list(), v.list(), "after {step}");
    };
    for i in 0..5 {
        v.set(&f.path, &format!("k{i}"), b"first", NOW).unwrap();
        agree(&v, "an append");
    }
    v.set(&f.path, "k2", b"second", NOW + 5).unwrap();
    agree(&v, "a replace");
    v.remove(&f.path, "k1", 1_000).unwrap();
    agree(&v, "a removal from the middle");
    // A new item is appended: removing it removes the last record.
    let before = v.file().items.clone();
    v.set(&f.path, "newest", b"x", NOW).unwrap();
    assert_eq!(v.file().items[..before.len()], before[..]);
    v.remove(&f.path, "newest", 1_000).unwrap();
    assert_eq!(v.file().items, before);
    agree(&v, "a removal of the last record");
}

/// A prepared change does nothing until applied, and is refused once the
/// vault has moved on from the generation it was prepared from.
#[test]
fn a_prepared_change_applies_only_to_the_vault_it_was_prepared_from() {
    let f = fixture();
    let mut v = open(&f.path, "correct horse", &f.sk).unwrap();
    let a = v.prepare_set("a", b"1", NOW).unwrap();
    let b = v.prepare_set("b", b"2", NOW).unwrap();
    let gone = v.prepare_remove("github", NOW).unwrap();
    assert!(
        v.get("a").is_none() && v.get("github").is_some(),
        "nothing yet"
    );
    assert!(v.apply(a.write(&f.path).unwrap()));
    assert_eq!(v.get("a").unwrap().expose(), b"1");
    // Prepared from the generation before `a`: refused, nothing changed in
    // memory. (Written elsewhere: the agent serialises prepare, write and
    // apply, so a stale change never reaches the real file there.)
    let generation = v.file().generation;
    let elsewhere = f.path.with_extension("elsewhere");
    assert!(!v.apply(b.write(&elsewhere).unwrap()));
    assert!(!v.apply(gone.write(&elsewhere).unwrap()));
    assert!(v.get("b").is_none() && v.get("github").is_some());
    assert_eq!(v.file().generation, generation);
    let disk = open(&f.path, "correct horse", &f.sk).unwrap();
    assert_eq!(disk.get("a").unwrap().expose(), b"1");
    assert!(disk.get("b").is_none());
}

#[test]
fn item_limits() {
    let f = fixture();
    let mut v = open(&f.path, "correct horse", &f.sk).unwrap();
    let big = vec![0u8; keyward_agent::account::items::MAX_VALUE + 1];
    assert!(matches!(
        v.set(&f.path, "big", &big, NOW),
        Err(ChangeError::ValueTooLarge(_))
    ));
    assert!(matches!(
        v.set(&f.path, "", b"x", NOW),
        Err(ChangeError::Name(_))
    ));
    assert!(matches!(
        v.set(&f.path, "a\nb", b"x", NOW),
        Err(ChangeError::Name(_))
    ));
    let max = vec![7u8; keyward_agent::account::items::MAX_VALUE];
    v.set(&f.path, "max", &max, NOW).unwrap();
    let v = open(&f.path, "correct horse", &f.sk).unwrap();
    assert_eq!(v.get("max").unwrap().expose(), &max[..]);
}

#[test]
fn files_are_0600() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    assert_eq!(
        std::fs::metadata(&f.path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn add_many_writes_once_and_refuses_duplicates() {
    let f = fixture();
    let mut v = open(&f.path, "correct horse", &f.sk).unwrap();
    let entries: Vec<(String, Vec<u8>)> = (0..500)
        .map(|i| (format!("bulk/{i}"), vec![i as u8; 10]))
        .collect();
    v.add_many(&f.path, &entries, NOW).unwrap();
    assert!(matches!(
        v.add_many(&f.path, &[("bulk/3".into(), vec![])], NOW),
        Err(ChangeError::Exists(_))
    ));
    assert!(matches!(
        v.add_many(
            &f.path,
            &[("new".into(), vec![]), ("new".into(), vec![])],
            NOW
        ),
        Err(ChangeError::Exists(_))
    ));
    let v = open(&f.path, "correct horse", &f.sk).unwrap();
    assert_eq!(v.len(), 502);
    assert_eq!(v.get("bulk/499").unwrap().expose(), &[243u8; 10][..]);
    assert!(v.get("new").is_none());
}
