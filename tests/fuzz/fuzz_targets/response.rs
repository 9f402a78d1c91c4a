//! `Response::decode` on arbitrary payloads.
//!
//! Same checks as the `request` target: byte-exact re-encoding (canonical at
//! the byte level), decode ∘ encode is the identity on decoded values, the
//! strict end, the secret flag, and a `Debug` that shows no secret byte.
//! Also: error codes survive `from_u16` / `to_u16`; a listing (`Items`,
//! `ItemsPart`) repeated past one frame encodes as PROTOCOL.md §6 says
//! (`ItemsPart` frames, then `Items`, each within the cap, packed greedily,
//! holding every item in order).
#![no_main]

use keyward_client::frame::MAX_FRAME;
use keyward_client::wire::DecodeError;
use keyward_client::{ErrorCode, ItemInfo, Response};
use keyward_fuzz::{blind_response, check_listing_frames, item_wire_len, response_has_secret};
use libfuzzer_sys::fuzz_target;

/// A listing's items repeated until it needs two frames or more.
fn long_listing(items: &[ItemInfo]) -> Vec<ItemInfo> {
    let one: usize = items.iter().map(item_wire_len).sum();
    let n = items.len() * (MAX_FRAME / one.max(1) + 1);
    items.iter().cycle().take(n).cloned().collect()
}

fuzz_target!(|data: &[u8]| {
    match Response::decode(data) {
        Ok(resp) => {
            let (frame, secret) = resp.encode();
            // A listing whose payload is over the cap (only possible for
            // inputs that large) is re-encoded as several frames.
            if let (Response::Items(v) | Response::ItemsPart(v), true) =
                (&resp, data.len() > MAX_FRAME)
            {
                check_listing_frames(v, matches!(resp, Response::ItemsPart(_)), &frame, MAX_FRAME);
                return;
            }
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
            // The same items, repeated past one frame: split into frames
            // within the cap, parts first, packed greedily, nothing lost.
            if let Response::Items(v) | Response::ItemsPart(v) = &resp
                && !v.is_empty()
                && v.iter().all(|i| 5 + item_wire_len(i) <= MAX_FRAME)
            {
                let part = matches!(resp, Response::ItemsPart(_));
                let long = long_listing(v);
                let r = if part {
                    Response::ItemsPart(long.clone())
                } else {
                    Response::Items(long.clone())
                };
                check_listing_frames(&long, part, &r.encode().0, MAX_FRAME);
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
