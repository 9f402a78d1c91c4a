//! Writes the seed inputs in `seeds/<target>/` from real encodings made by the
//! crates themselves (and the vault test vector). Run from `tests/fuzz`:
//!
//! ```sh
//! cargo run --example seed
//! ```
//!
//! The seeds are small and committed; `run.sh` fuzzes from them (and from the
//! generated corpus in `corpus/<target>/`, which is not committed).

use std::fs;
use std::path::Path;

use keyward_agent::account::password::KdfParams;
use keyward_agent::account::recovery::RecoveryCode;
use keyward_agent::account::secret_key::SecretKey;
use keyward_agent::account::wrap::Sealed;
use keyward_agent::account::{AccountId, items, piv};
use keyward_agent::vault::format::{
    self, ItemRecord, PasswordWrap, PivWrap, ProtectorKind, ProtectorRecord, RecoveryWrap,
    VaultFile,
};
use keyward_client::message::samples;

fn put(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).expect("mkdir");
    fs::write(d.join(name), bytes).expect("write seed");
}

fn sealed(len: usize, b: u8) -> Sealed {
    Sealed {
        nonce: [b; 12],
        ct: vec![b; len],
    }
}

/// A vault with one record of every type (fake ciphertexts of the right sizes).
fn synthetic_vault() -> VaultFile {
    // The P-256 base point, compressed by the agent.
    let point = piv::compress(&g_point()).expect("G is a point");
    VaultFile {
        account_id: AccountId::parse("ABCDEF").expect("id"),
        created: 1_700_000_000,
        generation: 5,
        password_wraps: vec![PasswordWrap {
            slot_id: "pw-1".into(),
            salt16: [1; 16],
            params: KdfParams {
                m_kib: 19 * 1024,
                t: 2,
                p: 1,
            },
            sealed: sealed(48, 2),
        }],
        recovery_wraps: vec![RecoveryWrap {
            code_id: [3; 8],
            created: 1,
            last_used: 0,
            sealed: sealed(48, 4),
        }],
        piv_wraps: vec![PivWrap {
            serial: 12_345_678,
            slot: 0x82,
            pin_policy: 2,
            touch_policy: 3,
            card_pk: point,
            epk: point,
            added: 2,
            last_used: 3,
            sealed: sealed(35 + 16, 5),
        }],
        protectors: vec![ProtectorRecord {
            kind: ProtectorKind::File,
            added: 4,
            last_used: 0,
            flags: format::FLAG_STALE,
            device: [12; 16],
        }],
        organizers: format::OrganizerRecords {
            key: Some(format::OrganizerKeyRecord {
                key_id: [8; 8],
                created: 5,
                sealed: sealed(48, 8),
            }),
            // At most one organizer key: the card's record (0x0a) is in
            // the "organizer-card" seed.
            card: None,
            wraps: vec![format::OrganizerWrap {
                org_pk: point,
                epk: point,
                flags: format::FLAG_REQUIRED,
                added: 6,
                name: "family".into(),
                sealed: sealed(48, 9),
            }],
            used_grants: vec![format::UsedGrant {
                grant_id: [10; 16],
                used: 7,
            }],
        },
        ssh_keys: vec![format::SshKeyRecord {
            key_id: [11; 16],
            public: b"\0\0\0\x0bssh-ed25519\0\0\0\x20abcdefghijklmnopqrstuvwxyz012345".to_vec(),
            sealed: sealed(64, 11),
        }],
        devices: vec![format::DeviceRecord {
            id: [12; 16],
            added: 8,
            named: 9,
            name: "laptop".into(),
        }],
        tombstones: vec![format::Tombstone {
            kind: format::TombstoneKind::Item,
            id: vec![13; 16],
            removed: 10,
        }],
        previous_keys: vec![format::PreviousKey {
            key_id: [14; 8],
            retired: 11,
            sealed: sealed(48, 14),
        }],
        items: vec![ItemRecord {
            item_id: [6; 16],
            sealed: sealed(items::MIN_SEALED_LEN, 7),
        }],
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn main() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = here.join("seeds");

    // Messages: payloads for request/response, whole frames for frame.
    let mut stream = Vec::new();
    for (i, r) in samples::requests().iter().enumerate() {
        let (frame, _) = r.encode();
        put(
            &dir,
            "request",
            &format!("{i:02}-{}", r.name()),
            &frame[4..],
        );
        stream.extend_from_slice(&frame);
    }
    for (i, r) in samples::responses().iter().enumerate() {
        let (frame, _) = r.encode();
        put(&dir, "response", &format!("{i:02}"), &frame[4..]);
        stream.extend_from_slice(&frame);
    }
    let mut raw = vec![0x05, 0x11];
    raw.extend_from_slice(&stream);
    put(&dir, "frame", "all-messages", &raw);
    put(
        &dir,
        "frame",
        "synthetic-large",
        &[0x86, 7, 1, 0, 0, 2, 0x80, 0, 0, 0, 0],
    );

    // Vaults: the test vector and one record of each type; mode byte 1.
    let vectors: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(here.join("../vectors/vault.json")).expect("vault.json"),
    )
    .expect("json");
    let file = hex(vectors["file"].as_str().expect("file"));
    format::parse(&file).expect("the vector parses");
    put(&dir, "vault", "vector", &[[1].as_slice(), &file].concat());
    let synthetic = synthetic_vault().encode(&[9; 32]);
    format::parse(&synthetic).expect("the synthetic vault parses");
    put(
        &dir,
        "vault",
        "every-record",
        &[[1].as_slice(), &synthetic].concat(),
    );
    // The organizer key on a YubiKey (record 0x0a) instead of in the vault
    // (a vault holds at most one organizer key).
    let mut with_card = synthetic_vault();
    with_card.organizers.key = None;
    with_card.organizers.card = Some(format::OrganizerCardRecord {
        serial: 12_345_678,
        slot: 0x83,
        pin_policy: 2,
        touch_policy: 1,
        card_pk: piv::compress(&g_point()).expect("G is a point"),
        created: 8,
    });
    let with_card = with_card.encode(&[9; 32]);
    format::parse(&with_card).expect("the vault with a card organizer key parses");
    put(
        &dir,
        "vault",
        "organizer-card",
        &[[1].as_slice(), &with_card].concat(),
    );
    // The same records in reverse order (accepted; re-encoded by type).
    let mut reordered = synthetic.clone();
    keyward_fuzz::permute_vault_records(&mut reordered, 1);
    keyward_fuzz::fix_vault_envelope(&mut reordered);
    assert_ne!(reordered, synthetic);
    format::parse(&reordered).expect("reordered records parse");
    put(
        &dir,
        "vault",
        "reordered",
        &[[1].as_slice(), &reordered].concat(),
    );
    put(
        &dir,
        "vault",
        "permute-mode",
        &[[3 | (5 << 2)].as_slice(), &synthetic].concat(),
    );

    // Secret Keys and recovery codes: typed text (mode byte 0) and generators.
    let id = AccountId::parse("ABCDEF").expect("id");
    let key = SecretKey::from_parts(&id, "GHJKLMNPQRSTVWXYZ23456789A").expect("key");
    put(
        &dir,
        "secret_key",
        "display",
        &[b"\0", key.display().expose().as_bytes()].concat(),
    );
    put(
        &dir,
        "secret_key",
        "typed",
        b"\0 k1 abcdef ghjklm npqrs tvwxy z2345 6789ar\n",
    );
    put(&dir, "secret_key", "generated", &[0xFF; 48]);
    let code = RecoveryCode::from_bytes(&core::array::from_fn(|i| i as u8));
    put(
        &dir,
        "recovery_code",
        "display",
        &[b"\0", code.display().expose().as_bytes()].concat(),
    );
    put(
        &dir,
        "recovery_code",
        "typed",
        b"\0ooog 4or4 om3o e2o9 l85g r38e lw8l 24gk 2gah c5rr 34dl p7ox 3rfs",
    );
    put(&dir, "recovery_code", "generated", &[0xFF; 72]);

    // Items.
    let pt = items::encode(
        "github/token",
        b"ghp_0123456789",
        1_700_000_000,
        1_700_000_100,
    );
    put(&dir, "items", "vector", pt.expose());
    put(
        &dir,
        "items",
        "unicode",
        items::encode("unicode \u{2603}", b"", 1, 2).expose(),
    );

    // APDUs as the yubikey crate sends them.
    let apdus: [&[u8]; 6] = [
        &[0, 0xA4, 4, 0, 5, 0xA0, 0, 0, 3, 8],
        &[0, 0xFD, 0, 0, 0],
        &[0, 0x87, 3, 0x9B, 4, 0x7C, 2, 0x80, 0],
        &[0x10, 0xDB, 0x3F, 0xFF, 1, 0x5C, 0x20],
        &[0, 0xCB, 0x3F, 0xFF, 0, 0, 5, 0x5C, 3, 0x5F, 0xC1, 5, 0, 0],
        &[0, 0x47, 0, 0x9A, 5, 0xAC, 3, 0x80, 1, 0x11],
    ];
    for (i, a) in apdus.iter().enumerate() {
        put(&dir, "apdu", &format!("{i}"), a);
    }

    // Applet scripts: select, authenticate, generate, verify, sign, ECDH,
    // put/get data; and a vpcd stream.
    let mut script = vec![1u8];
    let raw_apdu = |s: &mut Vec<u8>, a: &[u8]| {
        s.push(0);
        s.push(a.len() as u8);
        s.extend_from_slice(a);
    };
    script.extend([7, 0]); // SELECT PIV
    script.push(9); // authenticate
    raw_apdu(
        &mut script,
        &[
            0, 0x47, 0, 0x9A, 11, 0xAC, 9, 0x80, 1, 0x11, 0xAA, 1, 2, 0xAB, 1, 3,
        ],
    );
    script.push(10); // verify PIN
    script.extend([11, 1]); // a touch
    let mut sign = vec![0, 0x87, 0x11, 0x9A, 38, 0x7C, 36, 0x82, 0, 0x81, 32];
    sign.extend([0xAB; 32]);
    raw_apdu(&mut script, &sign);
    let mut ecdh = vec![0, 0x87, 0x11, 0x9A, 71, 0x7C, 69, 0x82, 0, 0x85, 65];
    ecdh.extend(&g_point());
    raw_apdu(&mut script, &ecdh);
    raw_apdu(
        &mut script,
        &[
            0, 0xDB, 0x3F, 0xFF, 9, 0x5C, 3, 0x5F, 0xC1, 5, 0x53, 2, 1, 2,
        ],
    );
    raw_apdu(
        &mut script,
        &[0, 0xCB, 0x3F, 0xFF, 5, 0x5C, 3, 0x5F, 0xC1, 5],
    );
    raw_apdu(&mut script, &[0, 0xF7, 0, 0x9A]);
    put(&dir, "applet", "session", &script);
    let mut otp = vec![0u8, 7, 2];
    raw_apdu(&mut otp, &[0, 1, 0x10, 0]);
    otp.extend([7, 3, 8, 6, 0]);
    put(&dir, "applet", "otp-mgmt-reset", &otp);
    let mut vpcd = vec![0x80u8];
    for msg in [
        &[1u8][..],
        &[4],
        &[0, 0xA4, 4, 0, 5, 0xA0, 0, 0, 3, 8],
        &[0, 0xFD, 0, 0],
        &[2],
    ] {
        vpcd.extend((msg.len() as u16).to_be_bytes());
        vpcd.extend(msg);
    }
    put(&dir, "applet", "vpcd", &vpcd);
    println!("seeds written to {}", dir.display());
    // SSH: ADD_IDENTITY messages (mode 0) and bare private keys (mode 1)
    // for each key type the agent signs with, with a comment and constraints.
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let bits = if kind == "rsa" { 2048 } else { 0 };
        let key = keyward_agent::ssh::keys::generate(kind, bits).expect("key");
        let private = keyward_agent::ssh::keys::encode_private(&key).expect("encode");
        let mut msg = vec![25u8];
        msg.extend_from_slice(private.expose());
        msg.extend_from_slice(&[0, 0, 0, 4]);
        msg.extend_from_slice(b"seed");
        msg.extend_from_slice(&[1, 0, 0, 0, 30, 2]); // lifetime 30 s, confirm
        put(&dir, "ssh", &format!("add-{kind}"), &[[0].as_slice(), &msg].concat());
        put(&dir, "ssh", &format!("key-{kind}"), &[[1].as_slice(), private.expose()].concat());
    }
}

/// The P-256 base point, uncompressed.
fn g_point() -> Vec<u8> {
    hex(
        "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
         4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
    )

}
