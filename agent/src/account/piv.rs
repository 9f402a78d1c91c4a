//! The YubiKey (PIV) wrap of the Secret Key, host side.
//!
//! The card holds a P-256 key; enrolling needs only its public key `card_pk`:
//!
//! ```text
//! e       = ephemeral P-256 scalar, epk = e·G
//! shared  = x-coordinate of e·card_pk            (the card computes the same from epk)
//! wrap_key = HKDF-SHA256(ikm = shared, salt = SEC1c(epk) ‖ SEC1c(card_pk), info = "keyward/v1 piv-p256")
//! ```
//!
//! and the Secret Key is sealed under `wrap_key` (purpose `piv`, slot id
//! [`slot_id`]). Because wrapping needs no card, a new Secret Key can be
//! re-wrapped for every enrolled YubiKey even when none is plugged in; only
//! unwrapping needs the card (and its PIN).

use super::AccountId;
use super::secret_key::SecretKey;
use super::wrap::{self, Purpose, Sealed};
use crate::kdf::hkdf32;
use crate::secret::{Key32, SecretArray};
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::{NonZeroScalar, PublicKey};

/// HKDF info of the PIV wrap key.
pub const INFO_PIV: &[u8] = b"keyward/v1 piv-p256";
/// Length of a compressed SEC1 P-256 point.
pub const POINT_LEN: usize = 33;

/// A public key that is not a valid P-256 point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid P-256 public key")]
pub struct BadPoint;

/// The slot id used in the associated data: serial in decimal, slot in hex.
pub fn slot_id(serial: u32, slot: u8) -> String {
    format!("{serial}-{slot:02x}")
}

/// Compressed SEC1 encoding of a P-256 point given in any SEC1 form.
pub fn compress(point: &[u8]) -> Result<[u8; POINT_LEN], BadPoint> {
    let pk = PublicKey::from_sec1_bytes(point).map_err(|_| BadPoint)?;
    let enc = pk.to_sec1_point(true);
    enc.as_bytes().try_into().map_err(|_| BadPoint)
}

/// Uncompressed SEC1 encoding (65 bytes), as the card wants the peer point.
pub fn uncompress(point: &[u8]) -> Result<[u8; 65], BadPoint> {
    let pk = PublicKey::from_sec1_bytes(point).map_err(|_| BadPoint)?;
    let enc = pk.to_sec1_point(false);
    enc.as_bytes().try_into().map_err(|_| BadPoint)
}

/// `wrap_key` from the shared x-coordinate and both public keys (compressed).
pub fn wrap_key(shared_x: &[u8; 32], epk: &[u8; POINT_LEN], card_pk: &[u8; POINT_LEN]) -> Key32 {
    let mut salt = [0u8; 2 * POINT_LEN];
    salt[..POINT_LEN].copy_from_slice(epk);
    salt[POINT_LEN..].copy_from_slice(card_pk);
    hkdf32(shared_x, &salt, INFO_PIV)
}

/// The host half of enrollment, with a given ephemeral scalar (vectors use a
/// fixed one; [`enroll`] draws a random one). Returns `(epk, wrap_key)`.
pub fn enroll_with_ephemeral(
    ephemeral: &SecretArray<32>,
    card_pk: &[u8],
) -> Result<([u8; POINT_LEN], Key32), BadPoint> {
    let card = PublicKey::from_sec1_bytes(card_pk).map_err(|_| BadPoint)?;
    let card_c = compress(card_pk)?;
    let scalar =
        Option::<NonZeroScalar>::from(NonZeroScalar::from_repr((*ephemeral.expose()).into()))
            .ok_or(BadPoint)?;
    let epk_point = PublicKey::from_secret_scalar(&scalar);
    let epk: [u8; POINT_LEN] = epk_point
        .to_sec1_point(true)
        .as_bytes()
        .try_into()
        .map_err(|_| BadPoint)?;
    let shared = p256::ecdh::diffie_hellman(scalar, card.as_affine());
    let mut x = SecretArray::<32>::zero();
    x.expose_mut().copy_from_slice(shared.raw_secret_bytes());
    Ok((epk, wrap_key(x.expose(), &epk, &card_c)))
}

/// Host half of enrollment with a fresh ephemeral key.
pub fn enroll(card_pk: &[u8]) -> Result<([u8; POINT_LEN], Key32), BadPoint> {
    loop {
        let e = SecretArray::<32>::random().map_err(|_| BadPoint)?;
        match enroll_with_ephemeral(&e, card_pk) {
            // A random 32-byte string is a valid scalar except with negligible
            // probability (zero or ≥ n); draw again in that case.
            Err(BadPoint) if PublicKey::from_sec1_bytes(card_pk).is_ok() => continue,
            other => return other,
        }
    }
}

/// Seals a Secret Key for a card.
pub fn seal_secret_key(
    wrap_key: &Key32,
    id: &AccountId,
    serial: u32,
    slot: u8,
    sk: &SecretKey,
) -> Result<Sealed, getrandom::Error> {
    wrap::seal(
        wrap_key.expose(),
        Purpose::Piv,
        id,
        &slot_id(serial, slot),
        sk.expose_compact(),
    )
}

/// Opens a Secret Key sealed for a card.
pub fn open_secret_key(
    wrap_key: &Key32,
    id: &AccountId,
    serial: u32,
    slot: u8,
    sealed: &Sealed,
) -> Result<SecretKey, wrap::OpenError> {
    let pt = wrap::open(
        wrap_key.expose(),
        Purpose::Piv,
        id,
        &slot_id(serial, slot),
        sealed,
    )?;
    let text = std::str::from_utf8(pt.expose()).map_err(|_| wrap::OpenError)?;
    SecretKey::parse(text).map_err(|_| wrap::OpenError)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> (NonZeroScalar, [u8; 65]) {
        let d = SecretArray::<32>::from_slice(&[0x11; 32]).unwrap();
        let s =
            Option::<NonZeroScalar>::from(NonZeroScalar::from_repr((*d.expose()).into())).unwrap();
        let pk = PublicKey::from_secret_scalar(&s);
        (s, pk.to_sec1_point(false).as_bytes().try_into().unwrap())
    }

    #[test]
    fn card_side_ecdh_gives_the_same_wrap_key() {
        let (card_secret, card_pk) = card();
        let (epk, host_key) = enroll(&card_pk).unwrap();
        // What the card does with epk:
        let epk_point = PublicKey::from_sec1_bytes(&epk).unwrap();
        let shared = p256::ecdh::diffie_hellman(card_secret, epk_point.as_affine());
        let mut x = [0u8; 32];
        x.copy_from_slice(shared.raw_secret_bytes());
        let card_key = wrap_key(&x, &epk, &compress(&card_pk).unwrap());
        assert!(card_key.ct_eq(&host_key));
    }

    #[test]
    fn seal_and_open_a_secret_key() {
        let (_, card_pk) = card();
        let id = AccountId::parse("ABCDEF").unwrap();
        let sk = SecretKey::generate(&id).unwrap();
        let (_, key) = enroll(&card_pk).unwrap();
        let sealed = seal_secret_key(&key, &id, 1234, 0x82, &sk).unwrap();
        let back = open_secret_key(&key, &id, 1234, 0x82, &sealed).unwrap();
        assert_eq!(back.expose_compact(), sk.expose_compact());
        assert!(open_secret_key(&key, &id, 1234, 0x83, &sealed).is_err());
        assert!(open_secret_key(&key, &id, 1235, 0x82, &sealed).is_err());
    }

    #[test]
    fn invalid_points_are_refused() {
        assert_eq!(enroll(&[4; 65]).unwrap_err(), BadPoint);
        assert_eq!(enroll(&[]).unwrap_err(), BadPoint);
        assert_eq!(compress(&[0; 33]).unwrap_err(), BadPoint);
    }
}
