//! The SSH agent's parsers (`keyward_agent::ssh`): messages, private keys as
//! `ADD_IDENTITY` carries them, key constraints, destination restrictions,
//! certificates, session binding and userauth requests.
//!
//! Input: `mode message`. Mode picks what the bytes are read as, so that
//! each parser sees inputs shaped for it. Checks: nothing panics; a parsed
//! private key re-encodes (`encode_private`) to bytes that parse back to the
//! same public key; an added key's reported length lies within the input.
#![no_main]

use keyward_agent::ssh::{cert, keys, restrict, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 6 {
        0 => {
            if let Ok(wire::Request::Add { body }) = wire::parse(rest) {
                add(body);
            }
        }
        1 => add(rest),
        2 => {
            let _ = restrict::parse_constraints(rest);
            let _ = restrict::parse_dest(rest);
        }
        3 => {
            if let Ok(c) = cert::parse(rest) {
                let _ = c.signed_by_ca(rest);
                let _ = keys::fingerprint(rest);
            }
        }
        4 => {
            let mut bindings = Vec::new();
            let _ = restrict::bind(&mut bindings, rest);
            assert!(bindings.len() <= 1);
        }
        _ => {
            let _ = restrict::parse_userauth(rest, b"\0\0\0\x0bssh-ed25519");
            let _ = keys::type_name(rest);
        }
    }
});

fn add(body: &[u8]) {
    let Ok((key, used)) = keys::decode_private(body) else {
        return;
    };
    assert!(used <= body.len());
    let public = key.public_blob().expect("a parsed key has a public blob");
    let stored = keys::encode_private(&key).expect("a parsed key re-encodes");
    let again = keys::parse_stored(&stored).expect("a re-encoded key parses");
    assert_eq!(again.public_blob().expect("public blob"), public);
    let mut r = wire::Reader(&body[used..]);
    if r.text().is_ok() {
        let _ = restrict::parse_constraints(r.rest());
    }
}
