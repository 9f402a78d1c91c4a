//! The Secret Key parser (`SecretKey::parse`) and display.
//!
//! Input: `mode …`. Mode 0xFF: the rest makes a valid key (account ID and
//! secret symbols), which is displayed and retyped with fuzz-chosen case and
//! separators; the retyped text must parse to the same key. Otherwise the
//! rest, as UTF-8, is parsed as typed text.
//!
//! Checks on every accepted input: it is SECURITY.md's normalisation of the
//! input (white space and dash-like characters dropped, ASCII upper-cased),
//! symbol for symbol; the check symbol matches; the account ID is valid; the
//! display has the 2-6-6-5-5-5-6 groups and parses back to the same key; and
//! a fuzz-chosen single-symbol substitution and adjacent transposition are
//! both refused. Every refusal reads "this Secret Key has a typo".
#![no_main]

use keyward_agent::account::AccountId;
use keyward_agent::account::secret_key::{self, ALPHABET, GROUPS, LEN, SecretKey};
use keyward_fuzz::{Bytes, normalise_secret_key, retype};
use libfuzzer_sys::fuzz_target;

fn check_key(input: &str, key: &SecretKey, b: &mut Bytes<'_>) {
    let compact = *key.expose_compact();
    let norm = normalise_secret_key(input);
    let compact_chars: Vec<char> = compact.iter().map(|&c| char::from(c)).collect();
    assert_eq!(
        norm, compact_chars,
        "accepted text is not its normalisation"
    );
    assert_eq!(&compact[..2], secret_key::PREFIX);
    assert_eq!(
        secret_key::check_symbol(&compact[..LEN - 1]),
        Some(compact[LEN - 1])
    );
    assert_eq!(AccountId::from_bytes(&compact[2..8]), Ok(key.account_id()));

    let shown = key.display();
    let groups: Vec<usize> = shown.expose().split('-').map(str::len).collect();
    assert_eq!(groups, GROUPS);
    let again = SecretKey::parse(shown.expose()).expect("display re-parses");
    assert_eq!(again.expose_compact(), key.expose_compact());
    let retyped = retype(shown.expose(), b, false);
    let again = SecretKey::parse(&retyped).expect("retyped display parses");
    assert_eq!(again.expose_compact(), key.expose_compact());

    // One substitution, anywhere, by any other symbol (or a look-alike).
    let pos = usize::from(b.u8()) % LEN;
    let others: Vec<u8> = ALPHABET
        .iter()
        .chain(b"10OIU")
        .copied()
        .filter(|&s| s != compact[pos])
        .collect();
    let mut typo = compact;
    typo[pos] = others[usize::from(b.u8()) % others.len()];
    let text = String::from_utf8(typo.to_vec()).expect("ASCII");
    let err = SecretKey::parse(&text).expect_err("a substitution was accepted");
    assert!(err.to_string().starts_with("this Secret Key has a typo"));
    // One transposition of adjacent, different symbols.
    let pos = usize::from(b.u8()) % (LEN - 1);
    if compact[pos] != compact[pos + 1] {
        let mut typo = compact;
        typo.swap(pos, pos + 1);
        let text = String::from_utf8(typo.to_vec()).expect("ASCII");
        assert!(
            SecretKey::parse(&text).is_err(),
            "a transposition was accepted"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes::new(data);
    if b.u8() == 0xFF {
        let sym = |x: u8| ALPHABET[usize::from(x) % ALPHABET.len()];
        let id: Vec<u8> = b.take(6).iter().map(|&x| sym(x)).collect();
        let Ok(id) = AccountId::from_bytes(&id) else {
            return;
        };
        let secret: String = b.take(26).iter().map(|&x| char::from(sym(x))).collect();
        let key = match SecretKey::from_parts(&id, &secret) {
            Ok(k) => k,
            Err(e) => {
                assert!(secret.len() != 26, "from_parts refused 26 symbols: {e}");
                return;
            }
        };
        let shown = key.display();
        return check_key(shown.expose(), &key, &mut b);
    }
    let text = String::from_utf8_lossy(b.rest()).into_owned();
    match SecretKey::parse(&text) {
        Ok(key) => check_key(&text, &key, &mut Bytes::new(data)),
        Err(e) => assert!(
            e.to_string().starts_with("this Secret Key has a typo"),
            "{e}"
        ),
    }
});
