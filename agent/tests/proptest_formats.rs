#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests of the agent's formats: Secret Keys and recovery codes
//! (display, then typed back with any case, separators and aliases; every
//! single-symbol typo of a Secret Key is caught), item plaintexts, and vault
//! files with arbitrary record sets, SSH key records and organizer records
//! (an organizer key in the vault or on a card, organizer wraps, used
//! grants) included (encode, parse, MAC, tamper detection).
//! (The fuzz targets in tests/fuzz check the other direction: arbitrary bytes.)

use keyward_agent::account::AccountId;
use keyward_agent::account::items::{self, ItemId};
use keyward_agent::account::password::KdfParams;
use keyward_agent::account::recovery::{RecoveryCode, RecoveryCodeError};
use keyward_agent::account::secret_key::{ALPHABET, LEN, SecretKey};
use keyward_agent::account::wrap::{NONCE_LEN, Sealed, TAG_LEN};
use keyward_agent::vault::format::{
    self, FormatError, ItemRecord, OrganizerCardRecord, OrganizerKeyRecord, OrganizerRecords,
    OrganizerWrap, PasswordWrap, PivWrap, ProtectorKind, ProtectorRecord, RecoveryWrap,
    SshKeyRecord, UsedGrant, VaultFile,
};
use p256::elliptic_curve::sec1::ToSec1Point;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use proptest::sample::select;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------- typing

/// Separators people type or paste between groups.
const SEPARATORS: [&str; 8] = ["-", " ", "", "\u{2013}", "\u{2212}", "_", "\t", " - "];

/// How to retype one character of a displayed key or code.
#[derive(Debug, Clone)]
struct Keystroke {
    lower: bool,
    separator: usize,
    alias: usize,
    space_after: bool,
}

fn keystrokes(n: usize) -> impl Strategy<Value = Vec<Keystroke>> {
    vec(
        (
            any::<bool>(),
            0..SEPARATORS.len(),
            0usize..5,
            prop::bool::weighted(0.05),
        )
            .prop_map(|(lower, separator, alias, space_after)| Keystroke {
                lower,
                separator,
                alias,
                space_after,
            }),
        n,
    )
}

/// `shown` as typed with `keys` (one per character): case, separators,
/// stray spaces and, with `aliases`, Crockford's look-alikes for 0 and 1.
fn retype(shown: &str, keys: &[Keystroke], aliases: bool) -> String {
    let mut out = String::from("  ");
    for (c, k) in shown.chars().zip(keys) {
        if c == '-' {
            out.push_str(SEPARATORS[k.separator]);
            continue;
        }
        let c = match (aliases, c, k.alias) {
            (true, '0', 1) => 'O',
            (true, '0', 2) => 'o',
            (true, '1', 1) => 'I',
            (true, '1', 2) => 'i',
            (true, '1', 3) => 'L',
            (true, '1', 4) => 'l',
            _ => c,
        };
        out.push(if k.lower { c.to_ascii_lowercase() } else { c });
        if k.space_after {
            out.push(' ');
        }
    }
    out.push('\n');
    out
}

fn symbols(n: usize) -> impl Strategy<Value = String> {
    vec(select(&ALPHABET[..]), n).prop_map(|v| v.into_iter().map(char::from).collect())
}

fn account_id() -> impl Strategy<Value = AccountId> {
    symbols(6).prop_map(|s| AccountId::parse(&s).unwrap())
}

fn secret_key() -> impl Strategy<Value = SecretKey> {
    (account_id(), symbols(26)).prop_map(|(id, s)| SecretKey::from_parts(&id, &s).unwrap())
}

// ---------------------------------------------------------------- Secret Keys

proptest! {
    #[test]
    fn secret_keys_display_and_parse_back_however_typed(
        key in secret_key(),
        keys in keystrokes(LEN + 6),
    ) {
        let shown = key.display();
        let groups: Vec<usize> = shown.expose().split('-').map(str::len).collect();
        prop_assert_eq!(groups, [2, 6, 6, 5, 5, 5, 6]);
        let again = SecretKey::parse(shown.expose()).unwrap();
        prop_assert_eq!(again.expose_compact(), key.expose_compact());
        let typed = retype(shown.expose(), &keys, false);
        let again = SecretKey::parse(&typed).unwrap();
        prop_assert_eq!(again.expose_compact(), key.expose_compact());
        prop_assert_eq!(again.account_id(), key.account_id());
        prop_assert!(again.derive_ks().ct_eq(&key.derive_ks()));
    }

    /// Any single-symbol substitution, at any position, by any other symbol
    /// of the alphabet or a look-alike outside it, is a typo.
    #[test]
    fn every_single_symbol_substitution_is_caught(
        key in secret_key(),
        pos in 0..LEN,
        replacement in select(ALPHABET.iter().chain(b"10OIU").copied().collect::<Vec<u8>>()),
        lower in any::<bool>(),
    ) {
        let mut typo = *key.expose_compact();
        prop_assume!(typo[pos] != replacement);
        typo[pos] = replacement;
        let mut text = String::from_utf8(typo.to_vec()).unwrap();
        if lower {
            text = text.to_lowercase();
        }
        let err = SecretKey::parse(&text).unwrap_err();
        prop_assert!(err.to_string().starts_with("this Secret Key has a typo"), "{}", err);
    }

    #[test]
    fn adjacent_transpositions_are_caught(key in secret_key(), pos in 0..LEN - 1) {
        let mut typo = *key.expose_compact();
        prop_assume!(typo[pos] != typo[pos + 1]);
        typo.swap(pos, pos + 1);
        prop_assert!(SecretKey::parse(std::str::from_utf8(&typo).unwrap()).is_err());
    }

    #[test]
    fn arbitrary_text_is_never_a_panic(text in ".{0,60}") {
        if let Err(e) = SecretKey::parse(&text) {
            prop_assert!(e.to_string().starts_with("this Secret Key has a typo"));
        }
    }
}

// ---------------------------------------------------------------- recovery codes

proptest! {
    #[test]
    fn recovery_codes_display_and_parse_back_however_typed(
        bytes in any::<[u8; 32]>(),
        keys in keystrokes(68),
        drop_prefix in any::<bool>(),
    ) {
        let code = RecoveryCode::from_bytes(&bytes);
        let shown = code.display();
        let s = shown.expose();
        prop_assert_eq!(s.len(), 68);
        prop_assert!(s.starts_with("RC1-"));
        let again = RecoveryCode::parse(s).unwrap();
        prop_assert_eq!(again.expose(), &bytes);
        let text = if drop_prefix { &s[4..] } else { s };
        let typed = retype(text, &keys, true);
        let again = RecoveryCode::parse(&typed)
            .unwrap_or_else(|e| panic!("{typed:?}: {e}"));
        prop_assert_eq!(again.expose(), &bytes);
        let id = AccountId::parse("ABCDEF").unwrap();
        prop_assert_eq!(again.code_id(&id), code.code_id(&id));
    }

    /// A substitution is caught by the check bits (15 in 16) or yields a
    /// different code — never the same one.
    #[test]
    fn recovery_code_typos_never_give_the_same_code(
        bytes in any::<[u8; 32]>(),
        pos in 0usize..52,
        replacement in select(b"0123456789ABCDEFGHJKMNPQRSTVWXYZU".to_vec()),
    ) {
        let code = RecoveryCode::from_bytes(&bytes);
        let mut syms: Vec<u8> = code.display().expose()[4..].bytes().filter(|&b| b != b'-').collect();
        prop_assume!(syms[pos] != replacement);
        syms[pos] = replacement;
        match RecoveryCode::parse(std::str::from_utf8(&syms).unwrap()) {
            Ok(other) => prop_assert_ne!(other.expose(), &bytes),
            Err(e) => {
                let expected = matches!(e, RecoveryCodeError::Check | RecoveryCodeError::Symbol { .. });
                prop_assert!(expected, "{:?}", e);
            }
        }
    }
}

// ---------------------------------------------------------------- items

fn item_name() -> impl Strategy<Value = String> {
    vec(
        any::<char>().prop_filter("no control characters", |c| !c.is_control()),
        1..80,
    )
    .prop_map(String::from_iter)
    .prop_filter("at most 256 bytes", |s| s.len() <= items::MAX_NAME)
}

proptest! {
    #[test]
    fn items_round_trip_strictly(
        name in item_name(),
        value in vec(any::<u8>(), 0..600),
        created in any::<u64>(),
        modified in any::<u64>(),
    ) {
        let pt = items::encode(&name, &value, created, modified);
        let item = items::decode(pt.expose()).unwrap();
        prop_assert_eq!(&item.name, &name);
        prop_assert_eq!(item.value.expose(), &value[..]);
        prop_assert_eq!((item.created, item.modified), (created, modified));
        for n in 0..pt.len() {
            prop_assert!(items::decode(&pt.expose()[..n]).is_none());
        }
        let mut longer = pt.expose().to_vec();
        longer.push(0);
        prop_assert!(items::decode(&longer).is_none());
    }

    #[test]
    fn invalid_names_are_refused(
        name in prop_oneof![
            Just(String::new()),
            ".{0,10}\n.{0,10}",
            "[a-z]{257,300}",
        ],
    ) {
        prop_assert!(items::decode(items::encode(&name, b"v", 1, 2).expose()).is_none());
    }
}

// ---------------------------------------------------------------- vault files

fn sealed(ct_len: impl Strategy<Value = usize>) -> impl Strategy<Value = Sealed> {
    (any::<[u8; NONCE_LEN]>(), ct_len, any::<u8>()).prop_map(|(nonce, n, b)| Sealed {
        nonce,
        ct: (0..n).map(|i| (i as u8).wrapping_add(b)).collect(),
    })
}

fn kdf_params() -> impl Strategy<Value = KdfParams> {
    (1u32..=KdfParams::MAX_T, 1u32..=KdfParams::MAX_P).prop_flat_map(|(t, p)| {
        (8 * p..=KdfParams::MAX_M_KIB).prop_map(move |m_kib| KdfParams { m_kib, t, p })
    })
}

/// A compressed P-256 point: a small multiple of the generator.
fn point() -> impl Strategy<Value = [u8; 33]> {
    (1u64..1_000_000).prop_map(|k| {
        let mut repr = [0u8; 32];
        repr[24..].copy_from_slice(&k.to_be_bytes());
        let s = Option::<p256::NonZeroScalar>::from(p256::NonZeroScalar::from_repr(repr.into()))
            .unwrap();
        let pk = p256::PublicKey::from_secret_scalar(&s);
        pk.to_sec1_point(true).as_bytes().try_into().unwrap()
    })
}

/// The organizer records: no organizer key, one in the vault (0x06) or one
/// on a card (0x0a), never both; organizer wraps (0x07); used grants (0x08).
fn organizers() -> impl Strategy<Value = OrganizerRecords> {
    let slots: Vec<u8> = (0x82..=0x95).chain([0x9a, 0x9c, 0x9d, 0x9e]).collect();
    let key =
        (any::<[u8; 8]>(), any::<u64>(), sealed(Just(48))).prop_map(|(key_id, created, sealed)| {
            OrganizerKeyRecord {
                key_id,
                created,
                sealed,
            }
        });
    let card = (
        any::<u32>(),
        select(slots),
        1u8..=3,
        1u8..=3,
        point(),
        any::<u64>(),
    )
        .prop_map(
            |(serial, slot, pin_policy, touch_policy, card_pk, created)| OrganizerCardRecord {
                serial,
                slot,
                pin_policy,
                touch_policy,
                card_pk,
                created,
            },
        );
    let which = prop_oneof![
        Just((None, None)),
        key.prop_map(|k| (Some(k), None)),
        card.prop_map(|c| (None, Some(c))),
    ];
    let wraps = btree_map(
        point(),
        (
            point(),
            0u8..=format::FLAG_REQUIRED,
            any::<u64>(),
            "[a-zA-Z0-9 é—]{0,16}",
            sealed(Just(48)),
        ),
        0..3,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(
                |(org_pk, (epk, flags, added, name, sealed))| OrganizerWrap {
                    org_pk,
                    epk,
                    flags,
                    added,
                    name,
                    sealed,
                },
            )
            .collect::<Vec<_>>()
    });
    let used = btree_map(any::<[u8; 16]>(), any::<u64>(), 0..3).prop_map(|m| {
        m.into_iter()
            .map(|(grant_id, used)| UsedGrant { grant_id, used })
            .collect::<Vec<_>>()
    });
    (which, wraps, used).prop_map(|((key, card), wraps, used_grants)| OrganizerRecords {
        key,
        card,
        wraps,
        used_grants,
    })
}

fn vault() -> impl Strategy<Value = VaultFile> {
    let slot_id = "[!-{}~]{1,20}"; // printable ASCII without '|'
    let password_wraps = btree_map(
        slot_id,
        (any::<[u8; 16]>(), kdf_params(), sealed(Just(48))),
        1..=2,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(slot_id, (salt16, params, sealed))| PasswordWrap {
                slot_id,
                salt16,
                params,
                sealed,
            })
            .collect::<Vec<_>>()
    });
    let recovery_wraps = btree_map(
        any::<[u8; 8]>(),
        (any::<u64>(), any::<u64>(), sealed(Just(48))),
        0..4,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(code_id, (created, last_used, sealed))| RecoveryWrap {
                code_id,
                created,
                last_used,
                sealed,
            })
            .collect::<Vec<_>>()
    });
    let piv_wraps = btree_map(
        (any::<u32>(), any::<u8>()),
        (
            1u8..=3,
            1u8..=3,
            point(),
            point(),
            any::<u64>(),
            any::<u64>(),
            sealed(Just(LEN + TAG_LEN)),
        ),
        0..3,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(
                |(
                    (serial, slot),
                    (pin_policy, touch_policy, card_pk, epk, added, last_used, sealed),
                )| PivWrap {
                    serial,
                    slot,
                    pin_policy,
                    touch_policy,
                    card_pk,
                    epk,
                    added,
                    last_used,
                    sealed,
                },
            )
            .collect::<Vec<_>>()
    });
    let protectors = btree_set(0u8..2, 0..=2).prop_flat_map(|kinds| {
        let n = kinds.len();
        (
            Just(kinds),
            vec(
                (
                    any::<u64>(),
                    any::<u64>(),
                    0u8..=format::FLAG_STALE,
                    prop_oneof![Just([0u8; 16]), any::<[u8; 16]>()],
                ),
                n,
            ),
        )
            .prop_map(|(kinds, rest)| {
                kinds
                    .into_iter()
                    .zip(rest)
                    .map(|(k, (added, last_used, flags, device))| ProtectorRecord {
                        kind: if k == 0 {
                            ProtectorKind::File
                        } else {
                            ProtectorKind::Keychain
                        },
                        added,
                        last_used,
                        flags,
                        device,
                    })
                    .collect::<Vec<_>>()
            })
    });
    // SSH keys (0x09): one record per key id and per public blob (the
    // first byte, the record's index, keeps the blobs apart); the format
    // allows blobs of 1..=16384 bytes and ciphertexts of 16..=65536, kept
    // small here for speed, with both bounds reached now and then.
    let public_rest = prop_oneof![
        7 => vec(any::<u8>(), 0..80),
        1 => Just(vec![0x5a; format::MAX_SSH_PUBLIC - 1]),
    ];
    let ct_len = prop_oneof![
        7 => TAG_LEN..400usize,
        1 => Just(format::MAX_SSH_SEALED),
    ];
    let ssh_keys =
        btree_map(any::<[u8; 16]>(), (public_rest, sealed(ct_len)), 0..4).prop_map(|m| {
            m.into_iter()
                .enumerate()
                .map(|(i, (key_id, (rest, sealed)))| SshKeyRecord {
                    key_id,
                    public: [&[i as u8][..], &rest].concat(),
                    sealed,
                })
                .collect::<Vec<_>>()
        });
    // Devices (0x0b) and tombstones (0x0c, each kind with its id length).
    let devices = btree_map(
        any::<[u8; 16]>(),
        (any::<u64>(), any::<u64>(), "[a-zA-Z0-9 ._-]{1,64}"),
        0..3,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(id, (added, named, name))| format::DeviceRecord {
                id,
                added,
                named,
                name,
            })
            .collect::<Vec<_>>()
    });
    let tombstones = btree_map((1u8..=8, vec(any::<u8>(), 33)), any::<u64>(), 0..5).prop_map(|m| {
        let mut seen = std::collections::BTreeSet::new();
        m.into_iter()
            .filter_map(|((k, mut id), removed)| {
                let kind = format::TombstoneKind::from_byte(k).unwrap();
                id.truncate(kind.id_len());
                seen.insert((k, id.clone()))
                    .then_some(format::Tombstone { kind, id, removed })
            })
            .collect::<Vec<_>>()
    });
    let previous_keys = btree_map(
        any::<[u8; 8]>(),
        (any::<u64>(), sealed(Just(32 + TAG_LEN))),
        0..3,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(key_id, (retired, sealed))| format::PreviousKey {
                key_id,
                retired,
                sealed,
            })
            .collect::<Vec<_>>()
    });
    let item_records = btree_map(any::<ItemId>(), sealed(TAG_LEN..300usize), 0..6).prop_map(|m| {
        m.into_iter()
            .map(|(item_id, sealed)| ItemRecord { item_id, sealed })
            .collect::<Vec<_>>()
    });
    (
        account_id(),
        any::<u64>(),
        any::<u64>(),
        password_wraps,
        recovery_wraps,
        piv_wraps,
        protectors,
        organizers(),
        ssh_keys,
        (devices, tombstones, previous_keys, item_records),
    )
        .prop_map(
            |(
                account_id,
                created,
                generation,
                password_wraps,
                recovery_wraps,
                piv_wraps,
                protectors,
                organizers,
                ssh_keys,
                (devices, tombstones, previous_keys, items),
            )| {
                VaultFile {
                    account_id,
                    created,
                    generation,
                    password_wraps,
                    recovery_wraps,
                    piv_wraps,
                    protectors,
                    organizers,
                    ssh_keys,
                    devices,
                    tombstones,
                    previous_keys,
                    items,
                }
            },
        )
}

/// Recomputes the length field and checksum after an edit, as an attacker
/// who knows the format (but not the MAC key) would.
fn fix_checksum(file: &mut [u8]) {
    let n = file.len();
    file[10..18].copy_from_slice(&(n as u64).to_be_bytes());
    let sum = Sha256::digest(&file[..n - 32]);
    file[n - 32..].copy_from_slice(&sum);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn vaults_round_trip_canonically(v in vault(), key in any::<[u8; 32]>()) {
        let file = v.encode(&key);
        let parsed = format::parse(&file).unwrap();
        prop_assert_eq!(&parsed.vault, &v);
        prop_assert!(parsed.mac_ok(&key));
        let mut other = key;
        other[0] ^= 1;
        prop_assert!(!parsed.mac_ok(&other));
        prop_assert_eq!(&parsed.vault.encode(&key), &file);
        prop_assert_eq!(format::check_envelope(&file), Ok(format::VERSION));
    }

    /// Any change of one byte is refused by the envelope (checksum, magic,
    /// length); any truncation too.
    #[test]
    fn damage_is_always_detected(v in vault(), at in any::<prop::sample::Index>(), flip in 1u8.., cut in any::<prop::sample::Index>()) {
        let file = v.encode(&[7; 32]);
        let mut damaged = file.clone();
        damaged[at.index(file.len())] ^= flip;
        prop_assert!(format::parse(&damaged).is_err());
        let short = &file[..cut.index(file.len())];
        let refused = matches!(
            format::parse(short),
            Err(FormatError::Truncated { .. } | FormatError::Damaged | FormatError::NotAVault)
        );
        prop_assert!(refused);
    }

    /// An edit of the MAC-covered bytes with a valid checksum either breaks
    /// the structure or fails the MAC: never a vault that authenticates.
    #[test]
    fn edits_with_a_fixed_checksum_fail_the_mac(v in vault(), at in any::<prop::sample::Index>(), flip in 1u8..) {
        let key = [7; 32];
        let mut file = v.encode(&key);
        let i = at.index(file.len() - 64);
        // The length field is rewritten by the fix-up below.
        prop_assume!(!(10..18).contains(&i));
        file[i] ^= flip;
        fix_checksum(&mut file);
        if let Ok(parsed) = format::parse(&file) {
            prop_assert!(!parsed.mac_ok(&key));
        }
    }
}
