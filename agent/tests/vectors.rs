#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Known-answer vectors (`tests/vectors/*.json` at the repository root).
//!
//! Every test here recomputes each vector from its inputs and compares it with
//! the file. The files were produced by this code: to regenerate them after a
//! deliberate change of the construction (which must also bump the format
//! version), run
//!
//! ```text
//! KEYWARD_WRITE_VECTORS=1 cargo test -p keyward-agent --test vectors
//! ```
//!
//! and review the diff. An independent implementation checks itself against
//! the same files (see docs/SECURITY.md, "Test vectors").

use keyward_agent::account::password::{self, KdfParams, Password};
use keyward_agent::account::recovery::RecoveryCode;
use keyward_agent::account::secret_key::SecretKey;
use keyward_agent::account::wrap::{self, Purpose, Sealed};
use keyward_agent::account::{AccountId, auk, item_key, items, piv, vault_mac_key};
use keyward_agent::secret::{Key32, SecretArray};
use keyward_agent::vault;
use serde_json::{Value, json};
use std::path::PathBuf;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors")
}

/// Compares `computed` with the stored file, or writes it in regeneration mode.
fn check(name: &str, computed: Value) {
    let path = vectors_dir().join(format!("{name}.json"));
    if std::env::var_os("KEYWARD_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(vectors_dir()).unwrap();
        let text = serde_json::to_string_pretty(&computed).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
        return;
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with KEYWARD_WRITE_VECTORS=1)",
            path.display()
        )
    }))
    .unwrap();
    // Recomputed from the stored inputs, every field must match.
    assert_eq!(
        stored, computed,
        "vector file {name}.json disagrees with the code"
    );
}

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn key(s: &str) -> Key32 {
    Key32::from_slice(&hex::decode(s).unwrap()).unwrap()
}

fn id(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}

#[test]
fn secret_key_vectors() {
    let cases = [
        ("ABCDEF", "GHJKLMNPQRSTVWXYZ23456789AB"),
        ("Z2Z2Z2", "22222222222222222222222222"),
        ("K7QH3M", "9XWTVRPNMLKJHGFEDCBA876543"),
    ];
    let mut out = Vec::new();
    for (acct, secret) in cases {
        let secret = &secret[..26];
        let sk = SecretKey::from_parts(&id(acct), secret).unwrap();
        let shown = sk.display().expose().to_owned();
        // A messy but valid way to type it.
        let typed = shown.to_lowercase().replace('-', " ");
        let parsed = SecretKey::parse(&typed).unwrap();
        out.push(json!({
            "input": typed,
            "canonical": shown,
            "account_id": acct,
            "secret": secret,
            "check_symbol": (parsed.expose_compact()[34] as char).to_string(),
            "k_s": h(parsed.derive_ks().expose()),
        }));
    }
    let good = out[0]["canonical"].as_str().unwrap().to_owned();
    let mut typo = good.clone().into_bytes();
    typo[12] = if typo[12] == b'Q' { b'R' } else { b'Q' };
    let typo = String::from_utf8(typo).unwrap();
    let invalid = vec![
        json!({"input": typo, "error": "check"}),
        json!({"input": good.replace('-', "")[..34].to_string(), "error": "length"}),
        json!({"input": good.replacen("K1", "K2", 1), "error": "prefix"}),
        json!({"input": good.replacen('G', "O", 1), "error": "symbol"}),
    ];
    for v in &invalid {
        let err = SecretKey::parse(v["input"].as_str().unwrap()).unwrap_err();
        let kind = format!("{err:?}").to_lowercase();
        assert!(kind.starts_with(v["error"].as_str().unwrap()), "{kind}");
    }
    check("secret_key", json!({"valid": out, "invalid": invalid}));
}

#[test]
fn password_vectors() {
    let raw = [
        "correct horse battery staple",
        "  padded\t\n",
        "caf\u{e9}",
        "cafe\u{301}",
        "\u{fb01}ligature \u{2460}",
        "\u{212b}ngstr\u{f6}m",
        "\u{a0}nbsp-trimmed\u{3000}",
    ];
    let mut out = Vec::new();
    for r in raw {
        let p = Password::new(r).unwrap();
        out.push(json!({"raw": r, "normalized_utf8_hex": h(p.as_bytes())}));
    }
    for r in ["", "   ", "\u{3000}\t"] {
        assert!(Password::new(r).is_err());
        out.push(json!({"raw": r, "error": "empty"}));
    }
    check("password", json!(out));
}

#[test]
fn argon2id_vectors() {
    let cases = [
        (
            "correct horse battery staple",
            "000102030405060708090a0b0c0d0e0f",
            "ABCDEF",
            64u32,
            2u32,
            1u32,
        ),
        (
            "correct horse battery staple",
            "000102030405060708090a0b0c0d0e0f",
            "ABCDEF",
            256,
            3,
            4,
        ),
        (
            "caf\u{e9}",
            "ffeeddccbbaa99887766554433221100",
            "Z2Z2Z2",
            1024,
            2,
            2,
        ),
        // The defaults (64 MiB, t = 3, p = 4).
        (
            "correct horse battery staple",
            "0f0e0d0c0b0a09080706050403020100",
            "K7QH3M",
            65536,
            3,
            4,
        ),
    ];
    let mut out = Vec::new();
    for (pw, salt16, acct, m, t, p) in cases {
        let params = KdfParams { m_kib: m, t, p };
        let password = Password::new(pw).unwrap();
        let s16: [u8; 16] = unhex(salt16);
        let argon_salt = password::argon_salt(&s16, &id(acct));
        let km = password::derive_km(&password, &s16, &id(acct), &params).unwrap();
        out.push(json!({
            "password": pw,
            "password_normalized_hex": h(password.as_bytes()),
            "salt16": salt16,
            "account_id": acct,
            "argon_salt": h(&argon_salt),
            "m_kib": m, "t": t, "p": p,
            "k_m": h(km.expose()),
        }));
    }
    check("argon2id", json!(out));
}

#[test]
fn auk_and_account_key_wrap_vectors() {
    // A full chain: password + Secret Key → k_m, k_s → AUK → wrap of the account key.
    let acct = "ABCDEF";
    let sk = SecretKey::from_parts(&id(acct), "GHJKLMNPQRSTVWXYZ23456789A").unwrap();
    let password = Password::new("correct horse battery staple").unwrap();
    let salt16: [u8; 16] = unhex("000102030405060708090a0b0c0d0e0f");
    let params = KdfParams {
        m_kib: 256,
        t: 2,
        p: 2,
    };
    let km = password::derive_km(&password, &salt16, &id(acct), &params).unwrap();
    let ks = sk.derive_ks();
    let a = auk(&km, &ks);
    let account_key = key("4242424242424242424242424242424242424242424242424242424242424242");
    let nonce: [u8; 12] = unhex("0102030405060708090a0b0c");
    let sealed = wrap::seal_with_nonce(
        a.expose(),
        Purpose::Password,
        &id(acct),
        "pw-1",
        account_key.expose(),
        nonce,
    );
    let opened = wrap::open_key(a.expose(), Purpose::Password, &id(acct), "pw-1", &sealed).unwrap();
    assert!(opened.ct_eq(&account_key));
    check(
        "auk",
        json!({
            "secret_key": sk.display().expose(),
            "password": "correct horse battery staple",
            "salt16": h(&salt16),
            "m_kib": params.m_kib, "t": params.t, "p": params.p,
            "k_m": h(km.expose()),
            "k_s": h(ks.expose()),
            "auk": h(a.expose()),
            "account_key": h(account_key.expose()),
            "wrap": {
                "purpose": "password",
                "slot_id": "pw-1",
                "aad": String::from_utf8(wrap::aad(Purpose::Password, &id(acct), "pw-1")).unwrap(),
                "nonce": h(&nonce),
                "ciphertext_and_tag": h(&sealed.ct),
            },
            "item_key": h(item_key(account_key.expose(), &id(acct)).expose()),
            "vault_mac_key": h(vault_mac_key(account_key.expose(), &id(acct)).expose()),
        }),
    );
}

#[test]
fn wrap_vectors() {
    let k = key("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    let nonce: [u8; 12] = unhex("cafebabefacedbaddecaf888");
    let mut out = Vec::new();
    for (purpose, slot, pt) in [
        (
            Purpose::Password,
            "pw-7",
            &b"0123456789abcdef0123456789abcdef"[..],
        ),
        (Purpose::Recovery, "0011223344556677", &[0x55u8; 32][..]),
        (
            Purpose::Piv,
            "12345678-82",
            &b"K1ABCDEFGHJKLMNPQRSTVWXYZ23456789AR"[..],
        ),
        (
            Purpose::Item,
            "000102030405060708090a0b0c0d0e0f",
            &b"any bytes"[..],
        ),
    ] {
        let s = wrap::seal_with_nonce(k.expose(), purpose, &id("ABCDEF"), slot, pt, nonce);
        let back = wrap::open(k.expose(), purpose, &id("ABCDEF"), slot, &s).unwrap();
        assert_eq!(back.expose(), pt);
        out.push(json!({
            "key": h(k.expose()),
            "purpose": purpose.label(),
            "account_id": "ABCDEF",
            "slot_id": slot,
            "aad": String::from_utf8(wrap::aad(purpose, &id("ABCDEF"), slot)).unwrap(),
            "nonce": h(&nonce),
            "plaintext": h(pt),
            "ciphertext_and_tag": h(&s.ct),
        }));
    }
    check("wrap", json!(out));
}

#[test]
fn item_vectors() {
    let account_key = key("4242424242424242424242424242424242424242424242424242424242424242");
    let ik = item_key(account_key.expose(), &id("ABCDEF"));
    let item_id: [u8; 16] = unhex("00112233445566778899aabbccddeeff");
    let nonce: [u8; 12] = unhex("000000000000000000000001");
    let pt = items::encode(
        "github/token",
        b"ghp_0123456789",
        1_700_000_000,
        1_700_000_100,
    );
    let aad = wrap::aad(Purpose::Item, &id("ABCDEF"), &items::slot_id(&item_id));
    let s = wrap::seal_with_nonce(
        ik.expose(),
        Purpose::Item,
        &id("ABCDEF"),
        &items::slot_id(&item_id),
        pt.expose(),
        nonce,
    );
    let back = items::open(
        ik.expose(),
        &id("ABCDEF"),
        &item_id,
        &Sealed {
            nonce,
            ct: s.ct.clone(),
        },
    )
    .unwrap();
    assert_eq!(back.name, "github/token");
    check(
        "items",
        json!({
            "account_key": h(account_key.expose()),
            "account_id": "ABCDEF",
            "item_key": h(ik.expose()),
            "item_id": h(&item_id),
            "name": "github/token",
            "value": h(b"ghp_0123456789"),
            "created": 1_700_000_000u64,
            "modified": 1_700_000_100u64,
            "plaintext": h(pt.expose()),
            "aad": String::from_utf8(aad).unwrap(),
            "nonce": h(&nonce),
            "ciphertext_and_tag": h(&s.ct),
        }),
    );
}

#[test]
fn recovery_code_vectors() {
    let mut out = Vec::new();
    for (bytes, acct) in [
        (
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "ABCDEF",
        ),
        (
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "Z2Z2Z2",
        ),
    ] {
        let code = RecoveryCode::from_bytes(&unhex(bytes));
        let shown = code.display().expose().to_owned();
        let typed = shown[4..]
            .to_lowercase()
            .replace('-', " ")
            .replace('0', "o")
            .replace('1', "l");
        let parsed = RecoveryCode::parse(&typed).unwrap();
        assert_eq!(parsed.expose(), code.expose());
        out.push(json!({
            "code": bytes,
            "account_id": acct,
            "display": shown,
            "typed": typed,
            "code_id": h(&code.code_id(&id(acct))),
            "wrap_key": h(code.wrap_key(&id(acct)).expose()),
        }));
    }
    check("recovery", json!(out));
}

#[test]
fn piv_vectors() {
    let card_secret: [u8; 32] =
        unhex("c9806898a0334916c860748880a541f093b579a9b1f32934d86c363c39800357");
    let card_scalar =
        Option::<p256::NonZeroScalar>::from(p256::NonZeroScalar::from_repr(card_secret.into()))
            .unwrap();
    let card_pk = p256::PublicKey::from_secret_scalar(&card_scalar);
    use p256::elliptic_curve::sec1::ToSec1Point;
    let card_pk_u = card_pk.to_sec1_point(false).as_bytes().to_vec();
    let e = SecretArray::<32>::from_slice(
        &hex::decode("0a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223242526272829").unwrap(),
    )
    .unwrap();
    let (epk, wk) = piv::enroll_with_ephemeral(&e, &card_pk_u).unwrap();
    // The card's side: ECDH with epk gives the same key.
    let epk_point = p256::PublicKey::from_sec1_bytes(&epk).unwrap();
    let shared = p256::ecdh::diffie_hellman(card_scalar, epk_point.as_affine());
    let x: [u8; 32] = (*shared.raw_secret_bytes()).into();
    let card_c = piv::compress(&card_pk_u).unwrap();
    assert!(piv::wrap_key(&x, &epk, &card_c).ct_eq(&wk));
    let sk = SecretKey::from_parts(&id("ABCDEF"), "GHJKLMNPQRSTVWXYZ23456789A").unwrap();
    let nonce: [u8; 12] = unhex("0c0c0c0c0c0c0c0c0c0c0c0c");
    let slot = piv::slot_id(12345678, 0x82);
    let s = wrap::seal_with_nonce(
        wk.expose(),
        Purpose::Piv,
        &id("ABCDEF"),
        &slot,
        sk.expose_compact(),
        nonce,
    );
    let back = piv::open_secret_key(&wk, &id("ABCDEF"), 12345678, 0x82, &s).unwrap();
    assert_eq!(back.expose_compact(), sk.expose_compact());
    check(
        "piv",
        json!({
            "card_private_scalar": h(&card_secret),
            "card_pk_uncompressed": h(&card_pk_u),
            "card_pk_compressed": h(&card_c),
            "ephemeral_scalar": h(e.expose()),
            "epk_compressed": h(&epk),
            "shared_x": h(&x),
            "wrap_key": h(wk.expose()),
            "serial": 12345678u32,
            "slot": "82",
            "slot_id": slot,
            "secret_key_compact": String::from_utf8(sk.expose_compact().to_vec()).unwrap(),
            "aad": String::from_utf8(wrap::aad(Purpose::Piv, &id("ABCDEF"), &slot)).unwrap(),
            "nonce": h(&nonce),
            "ciphertext_and_tag": h(&s.ct),
        }),
    );
}

#[test]
fn organizer_vectors() {
    use keyward_agent::account::organizer::{
        Grant, GrantCode, OrganizerSecret, Recipient, seal_to_organizer_with,
    };
    let org_scalar = "3c4f8e1a2b7d6c5e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60";
    let org = OrganizerSecret::from_bytes(&hex::decode(org_scalar).unwrap()).unwrap();
    let r = org.recipient().unwrap();
    let shown = r.display();
    let typed = shown.to_uppercase().replace('-', " ").replace('0', "o");
    assert_eq!(Recipient::parse(&typed).unwrap(), r);
    let member = id("ABCDEF");
    let account_key = [0x42u8; 32];
    let e = SecretArray::<32>::from_slice(
        &hex::decode("1112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f30").unwrap(),
    )
    .unwrap();
    let nonce: [u8; 12] = unhex("0d0d0d0d0d0d0d0d0d0d0d0d");
    let (epk, x, wk, sealed) =
        seal_to_organizer_with(&e, nonce, &r, &member, &account_key).unwrap();
    assert_eq!(
        org.open_wrap(&epk, &member, &sealed).unwrap().expose(),
        &account_key
    );
    let slot = r.slot_id();
    let code_bytes: [u8; 32] =
        unhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf");
    let code = GrantCode::from_bytes(&code_bytes);
    let grant_id: [u8; 16] = unhex("00112233445566778899aabbccddeeff");
    let expires = 1_800_000_000u64;
    let gnonce: [u8; 12] = unhex("0e0e0e0e0e0e0e0e0e0e0e0e");
    let g = Grant::seal_with_nonce(&code, member, grant_id, expires, &account_key, gnonce);
    let gshown = code.display().expose().to_owned();
    let gtyped = gshown[4..].to_lowercase().replace('-', " ");
    assert_eq!(GrantCode::parse(&gtyped).unwrap().expose(), &code_bytes);
    assert_eq!(g.open(&code).unwrap().expose(), &account_key);
    let grant_slot = keyward_agent::account::organizer::grant_slot(&grant_id, expires);
    check(
        "organizer",
        json!({
            "organizer_private_scalar": org_scalar,
            "organizer_pk_compressed": h(r.as_bytes()),
            "recipient": shown,
            "recipient_typed": typed,
            "fingerprint": r.fingerprint(),
            "account_id": "ABCDEF",
            "account_key": h(&account_key),
            "ephemeral_scalar": h(e.expose()),
            "epk_compressed": h(&epk),
            "shared_x": h(x.expose()),
            "wrap_key": h(wk.expose()),
            "slot_id": slot,
            "aad": String::from_utf8(wrap::aad(Purpose::Organizer, &member, &slot)).unwrap(),
            "nonce": h(&nonce),
            "ciphertext_and_tag": h(&sealed.ct),
            "grant": {
                "code": h(&code_bytes),
                "display": gshown,
                "typed": gtyped,
                "grant_id": h(&grant_id),
                "expires": expires,
                "grant_key": h(code.grant_key(&member).expose()),
                "aad": String::from_utf8(wrap::aad(Purpose::Grant, &member, &grant_slot)).unwrap(),
                "nonce": h(&gnonce),
                "ciphertext_and_tag": h(&g.sealed.ct),
                "file": g.to_json(),
            },
        }),
    );
}

/// A whole vault file with everything needed to open it: the end-to-end check
/// for an independent implementation. The file is random (fresh keys and
/// nonces), so it is stored once and only checked afterwards.
#[test]
fn vault_file_vector() {
    let path = vectors_dir().join("vault.json");
    let regenerate = std::env::var_os("KEYWARD_WRITE_VECTORS").is_some();
    let stored: Value = if regenerate || !path.exists() {
        assert!(
            regenerate,
            "{} is missing (regenerate with KEYWARD_WRITE_VECTORS=1)",
            path.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let vp = dir.path().join("vault");
        let params = KdfParams {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        };
        let (mut v, sk) = vault::create(
            &vp,
            &Password::new("correct horse battery staple").unwrap(),
            params,
            1_700_000_000,
        )
        .unwrap();
        v.set(&vp, "github/token", b"ghp_0123456789", 1_700_000_001)
            .unwrap();
        v.set(&vp, "empty", b"", 1_700_000_002).unwrap();
        v.set(&vp, "unicode \u{2603}", "värde".as_bytes(), 1_700_000_003)
            .unwrap();
        let (code, code_id) = v.add_recovery_code(&vp, 1_700_000_004).unwrap();
        let value = json!({
            "password": "correct horse battery staple",
            "secret_key": sk.display().expose(),
            "recovery_code": code.display().expose(),
            "recovery_code_id": h(&code_id),
            "account_key": h(v.account_key_for_test_vectors().expose()),
            "file": h(&std::fs::read(&vp).unwrap()),
            "items": [
                {"name": "empty", "value": ""},
                {"name": "github/token", "value": h(b"ghp_0123456789")},
                {"name": "unicode \u{2603}", "value": h("värde".as_bytes())},
            ],
        });
        std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap() + "\n").unwrap();
        value
    } else {
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    let file = hex::decode(stored["file"].as_str().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vp = dir.path().join("vault");
    std::fs::write(&vp, &file).unwrap();
    let sk = SecretKey::parse(stored["secret_key"].as_str().unwrap()).unwrap();
    let pw = Password::new(stored["password"].as_str().unwrap()).unwrap();
    let v = vault::unlock(vault::read(&vp).unwrap(), &pw, &sk).unwrap();
    assert_eq!(
        h(v.account_key_for_test_vectors().expose()),
        stored["account_key"].as_str().unwrap()
    );
    let mut got = Vec::new();
    for m in v.list() {
        got.push(json!({"name": m.name, "value": h(v.get(&m.name).unwrap().expose())}));
    }
    assert_eq!(Value::Array(got), stored["items"]);
    let code = RecoveryCode::parse(stored["recovery_code"].as_str().unwrap()).unwrap();
    assert_eq!(
        h(&code.code_id(&sk.account_id())),
        stored["recovery_code_id"].as_str().unwrap()
    );
    let rv = vault::unlock_with_recovery_code(vault::read(&vp).unwrap(), &code).unwrap();
    assert_eq!(rv.len(), 3);
}

/// An SSH string (RFC 4251): u32 length, then the bytes.
fn ssh_string(v: &mut Vec<u8>, s: &[u8]) {
    v.extend_from_slice(&(s.len() as u32).to_be_bytes());
    v.extend_from_slice(s);
}

/// The records of an encoded vault file: (type, payload), in file order.
fn records(file: &[u8]) -> Vec<(u8, Vec<u8>)> {
    // Envelope header (18), account ID (6), created (8), generation (8).
    let count = u32::from_be_bytes(file[40..44].try_into().unwrap());
    let mut at = 44;
    let mut out = Vec::new();
    for _ in 0..count {
        let ty = file[at];
        let len = u32::from_be_bytes(file[at + 1..at + 5].try_into().unwrap()) as usize;
        out.push((ty, file[at + 5..at + 5 + len].to_vec()));
        at += 5 + len;
    }
    out
}

/// SSH key records (0x09, SECURITY.md §17): the sealed plaintext of a key
/// held in the vault (Ed25519, with a destination restriction) and of one
/// held by a YubiKey, sealed with fixed nonces, and the records' payloads.
/// The plaintexts are the code's own (`Unlocked::put_ssh_key`, opened
/// again); the records are the code's encoding; and `vault::ssh` reads the
/// vector's records back into the same entries.
#[test]
fn ssh_key_vectors() {
    use keyward_agent::secret::SecretBytes;
    use keyward_agent::ssh::{keys, restrict};
    use keyward_agent::vault::format::{PasswordWrap, SshKeyRecord, VaultFile};
    use keyward_agent::vault::ssh::{Approval, Location, SshKeyEntry};
    use ssh_key::private::{Ed25519Keypair, KeypairData};

    let acct = id("ABCDEF");
    let account_key = key("4242424242424242424242424242424242424242424242424242424242424242");
    let ik = item_key(account_key.expose(), &acct);

    // The key held in the vault: Ed25519 from a fixed seed, in the agent
    // form (type, public key, seed ‖ public key).
    let seed: [u8; 32] = unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let kp = Ed25519Keypair::from_seed(&seed);
    let ed_public = kp.public.0;
    let pk = keys::PrivateKey {
        keypair: KeypairData::Ed25519(kp),
        cert: None,
    };
    let private = keys::encode_private(&pk).unwrap();
    let public = pk.public_blob().unwrap();
    let mut by_hand = Vec::new();
    ssh_string(&mut by_hand, b"ssh-ed25519");
    ssh_string(&mut by_hand, &ed_public);
    assert_eq!(public, by_hand);
    ssh_string(&mut by_hand, &[&seed[..], &ed_public[..]].concat());
    assert_eq!(private.expose(), &by_hand[..]);

    // One destination restriction (`ssh-add -h git@github.com`): from this
    // machine to user git at github.com, whose host key is another fixed
    // Ed25519 key.
    let host_seed: [u8; 32] =
        unhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb");
    let host = keys::PrivateKey {
        keypair: KeypairData::Ed25519(Ed25519Keypair::from_seed(&host_seed)),
        cert: None,
    };
    let host_blob = host.public_blob().unwrap();
    let mut from = Vec::new();
    for s in [&b""[..], b"", b""] {
        ssh_string(&mut from, s);
    }
    let mut to = Vec::new();
    for s in [&b"git"[..], b"github.com", b"", &host_blob] {
        ssh_string(&mut to, s);
    }
    to.push(0);
    let mut one = Vec::new();
    ssh_string(&mut one, &from);
    ssh_string(&mut one, &to);
    ssh_string(&mut one, b"");
    let mut dest = Vec::new();
    ssh_string(&mut dest, &one);
    let mut constraints = vec![255u8];
    ssh_string(&mut constraints, b"restrict-destination-v00@openssh.com");
    ssh_string(&mut constraints, &dest);
    let c = restrict::parse_constraints(&constraints).unwrap();
    assert_eq!(c.dest.len(), 1);
    assert_eq!(c.dest[0].to.user.as_deref(), Some("git"));
    assert_eq!(restrict::stored_form(&c), constraints);

    // The key held by a YubiKey: P-256 from a fixed scalar.
    let card_scalar: [u8; 32] =
        unhex("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721");
    let card_sk = p256_013::SecretKey::from_slice(&card_scalar).unwrap();
    let point = p256_013::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
        &card_sk.public_key(),
        false,
    );
    let mut card_public = Vec::new();
    ssh_string(&mut card_public, b"ecdsa-sha2-nistp256");
    ssh_string(&mut card_public, b"nistp256");
    ssh_string(&mut card_public, point.as_bytes());
    assert!(keys::parse_public(&card_public).is_ok());

    struct Case {
        entry: SshKeyEntry,
        nonce: [u8; 12],
        input: Value,
    }
    let cases = [
        Case {
            entry: SshKeyEntry {
                key_id: unhex("0f0e0d0c0b0a09080706050403020100"),
                public: public.clone(),
                name: "work laptop".into(),
                comment: "me@example.com".into(),
                created: 1_700_000_000,
                location: Location::Vault,
                approval: Approval::OncePerProcess,
                private: SecretBytes::from_slice(private.expose()),
                constraints: constraints.clone(),
            },
            nonce: unhex("090909090909090909090909"),
            input: json!({
                "location": "vault",
                "ed25519_seed": h(&seed),
                "ed25519_public": h(&ed_public),
                "private": h(private.expose()),
                "constraints": [{
                    "from": {"user": "", "hostname": "", "keys": []},
                    "to": {
                        "user": "git",
                        "hostname": "github.com",
                        "keys": [{"ed25519_seed": h(&host_seed), "blob": h(&host_blob), "ca": false}],
                    },
                }],
            }),
        },
        Case {
            entry: SshKeyEntry {
                key_id: unhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"),
                public: card_public.clone(),
                name: "yubikey".into(),
                comment: "".into(),
                created: 1_700_000_100,
                location: Location::Card {
                    serial: 12_345_678,
                    slot: 0x9a,
                    touch: 2,
                },
                approval: Approval::Always,
                private: SecretBytes::new(Vec::new()),
                constraints: Vec::new(),
            },
            nonce: unhex("0a0a0a0a0a0a0a0a0a0a0a0a"),
            input: json!({
                "location": "card",
                "p256_scalar": h(&card_scalar),
                "card": {"serial": 12_345_678u32, "slot": "9a", "touch": 2},
                "constraints": [],
            }),
        },
    ];

    // A vault of this account (password + Secret Key, cheap KDF parameters)
    // with no SSH key yet: `put_ssh_key` seals each entry as the code does.
    let sk = SecretKey::from_parts(&acct, "GHJKLMNPQRSTVWXYZ23456789A").unwrap();
    let password = Password::new("correct horse battery staple").unwrap();
    let salt16: [u8; 16] = unhex("000102030405060708090a0b0c0d0e0f");
    let params = KdfParams {
        m_kib: 256,
        t: 2,
        p: 2,
    };
    let km = password::derive_km(&password, &salt16, &acct, &params).unwrap();
    let a = auk(&km, &sk.derive_ks());
    let pw_wrap = PasswordWrap {
        slot_id: "pw-1".into(),
        salt16,
        params,
        sealed: wrap::seal_with_nonce(
            a.expose(),
            Purpose::Password,
            &acct,
            "pw-1",
            account_key.expose(),
            unhex("0102030405060708090a0b0c"),
        ),
    };
    let mac_key = vault_mac_key(account_key.expose(), &acct);
    let file_with = |ssh_keys: Vec<SshKeyRecord>| {
        VaultFile {
            account_id: acct,
            created: 1_700_000_000,
            generation: 1,
            password_wraps: vec![pw_wrap.clone()],
            recovery_wraps: Vec::new(),
            piv_wraps: Vec::new(),
            protectors: Vec::new(),
            organizers: Default::default(),
            ssh_keys,
            devices: Vec::new(),
            tombstones: Vec::new(),
            previous_keys: Vec::new(),
            items: Vec::new(),
        }
        .encode(mac_key.expose())
    };
    let dir = tempfile::tempdir().unwrap();
    let vp = dir.path().join("vault");
    std::fs::write(&vp, file_with(Vec::new())).unwrap();
    let mut v = vault::unlock(vault::read(&vp).unwrap(), &password, &sk).unwrap();

    let mut out = Vec::new();
    let mut vector_records = Vec::new();
    for case in &cases {
        let e = &case.entry;
        v.put_ssh_key(
            &vp,
            SshKeyEntry {
                key_id: [0; 16],
                public: e.public.clone(),
                name: e.name.clone(),
                comment: e.comment.clone(),
                created: e.created,
                location: e.location,
                approval: e.approval,
                private: SecretBytes::from_slice(e.private.expose()),
                constraints: e.constraints.clone(),
            },
        )
        .unwrap();
        let written = vault::read(&vp).unwrap().vault.ssh_keys;
        let rec = written.iter().find(|r| r.public == e.public).unwrap();
        let plaintext = wrap::open(
            ik.expose(),
            Purpose::SshKey,
            &acct,
            &hex::encode(rec.key_id),
            &rec.sealed,
        )
        .unwrap();
        let slot = hex::encode(e.key_id);
        let sealed = wrap::seal_with_nonce(
            ik.expose(),
            Purpose::SshKey,
            &acct,
            &slot,
            plaintext.expose(),
            case.nonce,
        );
        let record = SshKeyRecord {
            key_id: e.key_id,
            public: e.public.clone(),
            sealed: sealed.clone(),
        };
        // The record as the vault file holds it (the code's encoding).
        let file = file_with(vec![record.clone()]);
        let payload = records(&file)
            .into_iter()
            .find(|(ty, _)| *ty == 0x09)
            .unwrap()
            .1;
        vector_records.push(record);
        let mut entry = json!({
            "key_id": h(&e.key_id),
            "public": h(&e.public),
            "name": e.name,
            "comment": e.comment,
            "created": e.created,
            "approval": e.approval.name(),
            "constraints_bytes": h(&e.constraints),
            "plaintext": h(plaintext.expose()),
            "slot_id": slot,
            "aad": String::from_utf8(wrap::aad(Purpose::SshKey, &acct, &slot)).unwrap(),
            "nonce": h(&case.nonce),
            "ciphertext_and_tag": h(&sealed.ct),
            "record_payload": h(&payload),
        });
        for (k, val) in case.input.as_object().unwrap() {
            entry[k] = val.clone();
        }
        out.push(entry);
    }

    // `vault::ssh` reads the vector's records back into the same entries.
    std::fs::write(&vp, file_with(vector_records)).unwrap();
    let v = vault::unlock(vault::read(&vp).unwrap(), &password, &sk).unwrap();
    let got = v.ssh_keys().unwrap();
    assert_eq!(got.len(), cases.len());
    for (g, case) in got.iter().zip(&cases) {
        let e = &case.entry;
        assert_eq!(g.key_id, e.key_id);
        assert_eq!(g.public, e.public);
        assert_eq!(g.name, e.name);
        assert_eq!(g.comment, e.comment);
        assert_eq!(g.created, e.created);
        assert_eq!(g.location, e.location);
        assert_eq!(g.approval, e.approval);
        assert_eq!(g.private.expose(), e.private.expose());
        assert_eq!(g.constraints, e.constraints);
    }
    // The vault key parses as the key it was made from.
    let back = keys::parse_stored(&got[0].private).unwrap();
    assert_eq!(back.public_blob().unwrap(), public);

    check(
        "ssh_key",
        json!({
            "account_id": "ABCDEF",
            "account_key": h(account_key.expose()),
            "item_key": h(ik.expose()),
            "keys": out,
        }),
    );
}
