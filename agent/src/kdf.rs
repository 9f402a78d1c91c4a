//! HKDF-SHA256 and HMAC-SHA256 helpers: every derivation in CRYPTO.md that is
//! not Argon2id goes through [`hkdf32`] or [`hkdf_into`].

use crate::secret::Key32;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// `HKDF-SHA256(ikm, salt, info, L = 32)`.
pub fn hkdf32(ikm: &[u8], salt: &[u8], info: &[u8]) -> Key32 {
    let mut out = Key32::zero();
    hkdf_into(ikm, salt, info, out.expose_mut());
    out
}

/// `HKDF-SHA256(ikm, salt, info, L = out.len())`, for L ≤ 255 × 32.
pub fn hkdf_into(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) {
    hkdf_inner(ikm, salt, info, out);
    crate::secret::scrub_stack();
}

#[inline(never)]
fn hkdf_inner(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    // Only fails for L > 255 × 32, which no caller asks for.
    if hk.expand(info, out).is_err() {
        out.fill(0);
        debug_assert!(false, "HKDF output too long");
    }
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let out = hmac_inner(key, parts);
    crate::secret::scrub_stack();
    out
}

#[inline(never)]
#[allow(clippy::expect_used)] // HMAC takes keys of any length: new_from_slice cannot fail.
fn hmac_inner(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison of two MACs.
pub fn mac_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What HKDF and HMAC leave on the stack lies within what `scrub_stack`
    /// wipes, with room to spare.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_stack_scrub_covers_hkdf_and_hmac() {
        use crate::harden::stack_depth_of;
        use crate::secret::SCRUB_BYTES;
        let ikm = [0x0b; 32];
        let mut okm = [0u8; 64];
        let hkdf = stack_depth_of(|| hkdf_inner(&ikm, b"salt", b"info", &mut okm))
            .expect("HKDF went deeper than can be measured");
        let hmac = stack_depth_of(|| {
            std::hint::black_box(hmac_inner(&ikm, &[b"a", b"bc"]));
        })
        .expect("HMAC went deeper than can be measured");
        eprintln!("stack used: HKDF {hkdf} bytes, HMAC {hmac} bytes; scrubbed {SCRUB_BYTES}");
        // The measurement sees the work (a SHA-256 state and block: 96 bytes).
        assert!(hkdf >= 96 && hmac >= 96, "hkdf {hkdf}, hmac {hmac}");
        assert!(
            2 * hkdf.max(hmac) <= SCRUB_BYTES,
            "hkdf {hkdf}, hmac {hmac}"
        );
    }

    #[test]
    fn rfc5869_test_case_1() {
        let ikm = [0x0b; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let mut okm = [0u8; 42];
        hkdf_into(&ikm, &salt, &info, &mut okm);
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn rfc4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
