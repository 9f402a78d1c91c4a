//! `Response::decode` on arbitrary payloads.
//!
//! Same checks as the `request` target: byte-exact re-encoding (canonical at
//! the byte level), decode ∘ encode is the identity on decoded values, the
//! strict end, the secret flag, and a `Debug` that shows no secret byte.
//! Also: error codes survive `from_u16` / `to_u16`.
#![no_main]

use keyward_client::wire::DecodeError;
use keyward_client::{ErrorCode, Response};
use keyward_fuzz::{blind_response, response_has_secret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Response::decode(data) {
        Ok(resp) => {
            let (frame, secret) = resp.encode();
            assert_eq!(
                u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize,
                frame.len() - 4
            );
            assert!(frame[4..] == *data, "{resp:?}: re-encoding differs");
            assert_eq!(Response::decode(&frame[4..]).as_ref(), Ok(&resp));
            assert!(Response::decode(&data[..data.len() - 1]).is_err());
            assert_eq!(secret, response_has_secret(&resp), "{resp:?}: secret flag");
            assert_eq!(format!("{resp:?}"), format!("{:?}", blind_response(&resp)));
            if let Response::Error(e) = &resp {
                assert_eq!(ErrorCode::from_u16(e.code.to_u16()), e.code);
                assert_eq!(e.to_string(), e.message);
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if data.is_empty() {
                assert_eq!(e, DecodeError::Empty);
            }
        }
    }
});
