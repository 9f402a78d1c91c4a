//! The vault file parser (`vault::format::parse` and `check_envelope`).
//!
//! Input: `mode file…`. Mode bit 1 set: the records are first rewritten in
//! another order (bits 2–7 pick it), which byte-level mutations almost never
//! achieve. Mode bit 0 set: the file's length field and SHA-256 checksum are
//! then fixed up, so that mutations reach the body parser (otherwise nearly
//! every mutation stops at the checksum).
//!
//! Checks:
//! - `parse` fails exactly as `check_envelope` does when the envelope is bad,
//!   and otherwise only with `Malformed`; every error has a message;
//! - on success: one or two password wraps; `mac_input`/`mac` are the bytes
//!   before the MAC and the MAC; the vault re-encodes (`VaultFile::encode`) to a
//!   file of the same length that parses back to an equal vault and whose MAC
//!   verifies; if the records were in the encoder's order (by type, items last), the
//!   re-encoding is byte-identical up to the MAC (canonical), and otherwise it
//!   holds the same records, reordered (the only non-canonical freedom).
#![no_main]

use keyward_agent::vault::format::{
    self, CHECKSUM_LEN, FormatError, MAC_LEN, VERSION, check_envelope, parse,
};
use keyward_fuzz::{fix_vault_envelope, permute_vault_records, vault_records};
use libfuzzer_sys::fuzz_target;

const MAC_KEY: [u8; 32] = [0x42; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut file = rest.to_vec();
    if mode & 2 == 2 {
        permute_vault_records(&mut file, mode >> 2);
    }
    if mode & 1 == 1 {
        fix_vault_envelope(&mut file);
    }
    let envelope = check_envelope(&file);
    let parsed = parse(&file);
    let parsed = match (envelope, parsed) {
        (Err(e), Err(p)) => {
            assert_eq!(e, p, "parse and check_envelope disagree");
            assert!(!p.to_string().is_empty());
            return;
        }
        (Err(e), Ok(_)) => panic!("parse accepted a file whose envelope is bad: {e:?}"),
        (Ok(v), Err(p)) => {
            assert_eq!(v, VERSION);
            assert!(matches!(p, FormatError::Malformed { .. }), "{p:?}");
            assert!(!p.to_string().is_empty());
            return;
        }
        (Ok(v), Ok(parsed)) => {
            assert_eq!(v, VERSION);
            parsed
        }
    };

    let n = file.len();
    let vault = &parsed.vault;
    assert!((1..=format::MAX_PASSWORD_WRAPS).contains(&vault.password_wraps.len()));
    assert!(parsed.mac_input[..] == file[..n - CHECKSUM_LEN - MAC_LEN]);
    assert!(parsed.mac[..] == file[n - CHECKSUM_LEN - MAC_LEN..n - CHECKSUM_LEN]);

    let again = vault.encode(&MAC_KEY);
    assert_eq!(again.len(), n, "re-encoding changed the length");
    let reparsed = parse(&again).unwrap_or_else(|e| panic!("re-encoded vault refused: {e}"));
    assert_eq!(&reparsed.vault, vault);
    assert!(reparsed.mac_ok(&MAC_KEY));

    let records = vault_records(&file);
    assert_eq!(records.len(), vault.record_count());
    let body_end = n - CHECKSUM_LEN - MAC_LEN;
    // The encoder writes records by type, items (0x05) last.
    let rank = |t: u8| if t == format::record_type::ITEM { u8::MAX } else { t };
    if records.windows(2).all(|w| rank(w[0].0) <= rank(w[1].0)) {
        assert!(again[..body_end] == file[..body_end], "not canonical");
    } else {
        let header = format::ENVELOPE_HEADER + format::BODY_HEADER;
        assert!(again[..header] == file[..header]);
        let mut a: Vec<&[u8]> = records.iter().map(|r| r.1).collect();
        let mut b: Vec<&[u8]> = vault_records(&again).iter().map(|r| r.1).collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "re-encoding changed the records");
    }
});
