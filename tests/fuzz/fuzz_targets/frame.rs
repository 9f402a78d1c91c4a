//! The frame decoder (`keyward_client::frame::FrameBuf`) against a reference
//! model of PROTOCOL.md §2, reading the stream in pseudo-random chunks, both
//! as the clients do (`read_frame`) and as the agent does (`try_frame` until
//! `None`, then `fill`).
//!
//! Input: `mode seed stream…`. Mode bit 7 set: the stream is synthesised from
//! the rest (frames up to and past the 64 KiB cap, so the buffer's wrap-around
//! and compaction run); otherwise the rest is the raw stream. Bits 0–2 pick
//! the largest chunk a `read` returns.
//!
//! Checks: every complete frame comes out, in order, byte for byte; the end
//! is reported as the model says (`Closed` / `Truncated` / `TooLarge(n)` as
//! soon as the header is in); `buffered()` counts exactly the bytes read and
//! not yet handed out; every payload goes through both message decoders.
#![no_main]

use keyward_client::frame::{FrameBuf, FrameError, MAX_FRAME};
use keyward_client::{Request, Response};
use keyward_fuzz::{Bytes, Chunked, StreamEnd, model_frames};
use libfuzzer_sys::fuzz_target;

/// Largest synthesised stream (keeps one execution in the milliseconds).
const MAX_STREAM: usize = 1 << 20;

fn synthesise(b: &mut Bytes<'_>, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while !b.is_empty() && out.len() < limit {
        let kind = b.u8();
        let n = usize::from(b.u16());
        let len = match kind % 4 {
            0 => n % 4096,
            1 => MAX_FRAME - (n % 64),
            2 => (n << 1) % (MAX_FRAME + 1),
            _ => {
                // Raw bytes: garbage, or an oversized header.
                out.extend_from_slice(b.take(usize::from(kind >> 2) % 8));
                continue;
            }
        };
        out.extend_from_slice(&(len as u32).to_be_bytes());
        let fill = kind;
        out.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(fill)));
    }
    out
}

fn check_end(err: FrameError, end: &StreamEnd) {
    match (err, end) {
        (FrameError::Closed, StreamEnd::Closed) | (FrameError::Truncated, StreamEnd::Truncated) => {
        }
        (FrameError::TooLarge(a), StreamEnd::TooLarge(b)) => assert_eq!(a, *b),
        (e, end) => panic!("stream ended with {e:?}, model says {end:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes::new(data);
    let mode = b.u8();
    let seed = u64::from(b.u8());
    let max_chunk = [1, 3, 7, 64, 1000, 4096, 70_000, usize::MAX][usize::from(mode & 7)];
    let stream = if mode & 0x80 != 0 {
        // Byte-by-byte reads of a megabyte would take too long per execution.
        let limit = if max_chunk < 64 { 1 << 14 } else { MAX_STREAM };
        synthesise(&mut b, limit)
    } else {
        b.rest().to_vec()
    };
    let (frames, end) = model_frames(&stream, MAX_FRAME);

    // As the clients read: read_frame until an error.
    let mut fb = FrameBuf::new();
    let mut src = Chunked::new(&stream, seed, max_chunk);
    for (i, range) in frames.iter().enumerate() {
        match fb.read_frame(&mut src) {
            Ok(payload) => {
                assert!(payload == &stream[range.clone()], "frame {i} differs");
                let _ = Request::decode(payload);
                let _ = Response::decode(payload);
            }
            Err(e) => panic!("frame {i} of {}: {e:?}", frames.len()),
        }
    }
    match fb.read_frame(&mut src) {
        Ok(p) => panic!("an extra frame of {} bytes", p.len()),
        Err(e) => check_end(e, &end),
    }

    // As the agent reads: drain with try_frame, then fill once.
    let mut fb = FrameBuf::new();
    let mut src = Chunked::new(&stream, seed ^ 0xA5, max_chunk);
    let mut next = 0usize;
    let mut handed = 0usize;
    loop {
        loop {
            match fb.try_frame() {
                Ok(Some(payload)) => {
                    let range = frames
                        .get(next)
                        .unwrap_or_else(|| panic!("extra frame {next}"));
                    assert!(payload == &stream[range.clone()], "frame {next} differs");
                    handed += 4 + payload.len();
                    next += 1;
                    assert_eq!(fb.buffered(), src.consumed() - handed);
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(next, frames.len(), "error {e:?} before frame {next}");
                    return check_end(e, &end);
                }
            }
        }
        assert_eq!(fb.buffered(), src.consumed() - handed);
        if let Err(e) = fb.fill(&mut src) {
            assert_eq!(next, frames.len(), "error {e:?} before frame {next}");
            return check_end(e, &end);
        }
    }
});
