//! The virtual card's command-APDU parser (`apdu::Command::parse`) and its
//! BER-TLV parser (`tlv`).
//!
//! APDU checks: exactly inputs shorter than 4 bytes are `TooShort`; whatever
//! parses re-encodes by ISO 7816-4's rules (short or extended, as parsed) to
//! exactly the input (the parser is canonical: no two encodings of one
//! command); Lc is never 0; short Le/Lc fit a byte, extended ones two; the
//! largest response is 1..=65536.
//!
//! TLV checks: `parse` returns a value and a rest that are adjacent slices of
//! the input; `parse_all` splits the input into TLVs whose re-encoding
//! (minimal lengths) parses back to the same tags and values (BER lengths
//! need not be minimal on input, so this is a value round trip, not a byte
//! one); `parse_single` agrees with `parse`.
#![no_main]

use keyward_fuzz::encode_command;
use libfuzzer_sys::fuzz_target;
use virtual_yubikey::apdu::{Command, ParseError};
use virtual_yubikey::tlv;

fuzz_target!(|data: &[u8]| {
    match Command::parse(data) {
        Ok(c) => {
            assert!(data.len() >= 4);
            assert_eq!(encode_command(&c), data, "{c:?}: not canonical");
            if c.extended {
                assert!(c.data.len() <= 0xFFFF && c.le.is_none_or(|l| l <= 0xFFFF));
                assert!(!c.data.is_empty() || c.le.is_some());
            } else {
                assert!(c.data.len() <= 0xFF && c.le.is_none_or(|l| l <= 0xFF));
            }
            assert!((1..=65536).contains(&c.max_response_len()));
            assert_eq!(c.is_chained(), data[0] & 0x10 != 0);
        }
        Err(e) => assert_eq!(e == ParseError::TooShort, data.len() < 4),
    }

    if let Ok((t, rest)) = tlv::parse(data) {
        let v_at = t.value.as_ptr() as usize - data.as_ptr() as usize;
        assert_eq!(v_at + t.value.len(), data.len() - rest.len());
        assert_eq!(tlv::parse_single(data, t.tag).is_ok(), rest.is_empty());
    }
    if let Ok(all) = tlv::parse_all(data) {
        let mut enc = Vec::new();
        for t in &all {
            tlv::write(&mut enc, t.tag, t.value);
        }
        assert!(enc.len() <= data.len());
        assert_eq!(tlv::parse_all(&enc).as_ref(), Ok(&all));
    }
});
