//! `Request::decode` on arbitrary payloads.
//!
//! Checks on every payload that decodes: `encode` gives back exactly the same
//! bytes behind a correct length prefix (the codec is canonical), the
//! re-encoded payload decodes to an equal request, no strict prefix decodes
//! (the strict end), the frame is flagged secret exactly when the request
//! carries a secret, and `Debug` shows no secret byte (its output is the same
//! for the request with its secrets replaced). Payloads that fail still have
//! an error message, and an empty payload is `Empty`.
#![no_main]

use keyward_client::Request;
use keyward_client::wire::DecodeError;
use keyward_fuzz::{blind_request, request_has_secret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Request::decode(data) {
        Ok(req) => {
            let (frame, secret) = req.encode();
            assert_eq!(
                u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize,
                frame.len() - 4
            );
            assert!(frame[4..] == *data, "{req:?}: re-encoding differs");
            assert_eq!(Request::decode(&frame[4..]).as_ref(), Ok(&req));
            assert!(Request::decode(&data[..data.len() - 1]).is_err());
            assert_eq!(secret, request_has_secret(&req), "{req:?}: secret flag");
            assert_eq!(format!("{req:?}"), format!("{:?}", blind_request(&req)));
            assert!(!req.name().is_empty());
            let _ = req.is_activity();
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if data.is_empty() {
                assert_eq!(e, DecodeError::Empty);
            }
        }
    }
});
