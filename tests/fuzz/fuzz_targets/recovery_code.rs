//! The recovery-code parser (`RecoveryCode::parse`) and display.
//!
//! Input: `mode …`. Mode 0xFF: the next 32 bytes are a code, displayed and
//! retyped with fuzz-chosen case, separators, Crockford's aliases and with or
//! without the `RC1` prefix; the retyped text must parse to the same 32
//! bytes. Otherwise the rest, as UTF-8, is parsed as typed text.
//!
//! Checks on every accepted input: SECURITY.md's normalisation of the input
//! (separators dropped, aliases mapped, `RC1` dropped unless exactly 52
//! symbols) equals the displayed symbols; the display is `RC1-` and 13 groups
//! of four and parses back to the same bytes; `from_bytes` of those bytes
//! displays the same. Every refusal reads "this recovery code has a typo".
#![no_main]

use keyward_agent::account::recovery::{CROCKFORD, RecoveryCode, SYMBOLS};
use keyward_fuzz::{Bytes, normalise_recovery_code, retype};
use libfuzzer_sys::fuzz_target;

fn check_code(input: &str, code: &RecoveryCode) {
    let shown = code.display();
    let s = shown.expose();
    let groups: Vec<&str> = s.split('-').collect();
    assert_eq!(groups.len(), 14);
    assert_eq!(groups[0], "RC1");
    assert!(groups[1..].iter().all(|g| g.len() == 4));
    assert!(s[4..].bytes().all(|c| c == b'-' || CROCKFORD.contains(&c)));
    let body: Vec<char> = groups[1..].concat().chars().collect();
    assert_eq!(body.len(), SYMBOLS);
    assert_eq!(
        normalise_recovery_code(input),
        body,
        "accepted text is not its normalisation"
    );
    let again = RecoveryCode::parse(s).expect("display re-parses");
    assert_eq!(again.expose(), code.expose());
    assert_eq!(
        RecoveryCode::from_bytes(code.expose()).display().expose(),
        s
    );
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes::new(data);
    if b.u8() == 0xFF {
        let mut raw = [0u8; 32];
        let src = b.take(32);
        raw[..src.len()].copy_from_slice(src);
        let code = RecoveryCode::from_bytes(&raw);
        let shown = code.display();
        let mut text = shown.expose().to_owned();
        if b.u8() & 1 == 1 {
            text = text.split_off(4);
        }
        let typed = retype(&text, &mut b, true);
        let parsed = RecoveryCode::parse(&typed)
            .unwrap_or_else(|e| panic!("retyped code {typed:?} refused: {e}"));
        assert_eq!(parsed.expose(), &raw);
        return check_code(&typed, &parsed);
    }
    let text = String::from_utf8_lossy(b.rest()).into_owned();
    match RecoveryCode::parse(&text) {
        Ok(code) => check_code(&text, &code),
        Err(e) => assert!(
            e.to_string().starts_with("this recovery code has a typo"),
            "{e}"
        ),
    }
});
