//! SSH keys on a YubiKey, as yubikey-agent keeps them: a P-256 key
//! generated on the card in a PIV slot (9a unless told otherwise), PIN
//! policy *once*, touch policy as chosen. The private key never exists off
//! the card; the vault keeps only where it is (`Location::Card`) and its
//! public blob (`ecdsa-sha2-nistp256`).
//!
//! - [`generate`] makes the key with the YubiKey protector's enrollment
//!   steps ([`crate::protect::yubikey::enroll`]: the card chosen by serial,
//!   the PIN and the management key asked through [`UnlockIo`]).
//! - [`sign`] has the card sign: the PIN is asked through [`UnlockIo`] (for
//!   the SSH socket: the askpass program), then PIV GENERAL AUTHENTICATE
//!   signs SHA-256 of the data (`ecdsa-sha2-nistp256`, RFC 5656 §6.2.1); the
//!   card's DER signature becomes the SSH signature blob
//!   ([`ssh_signature`]), which is checked against the key before it is
//!   given out.
//!
//! The card handle is dropped (which resets the card, forgetting the PIN)
//! as soon as the card work is done, so every signature asks for the PIN.
//! One card operation at a time in this agent.

use super::keys;
use crate::protect::yubikey::{self, EnrollOptions, Touch};
use crate::protect::{ProtectorError, UnlockIo};
use ::yubikey::Error as YkError;
use ::yubikey::YubiKey;
use ::yubikey::piv::{self as ykpiv, AlgorithmId, SlotId};
use keyward_client::Secret;
use sha2::{Digest, Sha256};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The PIV slot a key goes to unless told otherwise (PIV Authentication,
/// as yubikey-agent uses).
pub const DEFAULT_SLOT: u8 = 0x9a;
/// The SSH key type of a card key.
pub const KEY_TYPE: &str = "ecdsa-sha2-nistp256";
/// Its curve name in the key blob.
const CURVE: &str = "nistp256";
/// An uncompressed P-256 point.
const POINT_LEN: usize = 65;

/// One card operation at a time (a PIN verified for one must not be used
/// by, or reset under, another).
static CARD: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    CARD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What [`generate`] needs. The PIN is zeroized when dropped.
#[derive(Debug, Default)]
pub struct GenerateOptions {
    /// The card; required when several are present.
    pub serial: Option<u32>,
    /// The slot (default [`DEFAULT_SLOT`]); it must be empty.
    pub slot: Option<u8>,
    /// The touch policy of the new key.
    pub touch: Touch,
    /// The PIN; asked through [`UnlockIo`] when absent.
    pub pin: Option<Secret>,
}

/// A key made on a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The card's serial.
    pub serial: u32,
    /// The slot holding the key.
    pub slot: u8,
    /// Its touch policy.
    pub touch: Touch,
    /// The SSH public key blob.
    pub public: Vec<u8>,
    /// Things the user must read (factory-default PIN or management key, changes made).
    pub notes: Vec<String>,
}

/// Generates a P-256 key on a YubiKey (see the module docs); blocking.
pub fn generate(opts: GenerateOptions, io: &dyn UnlockIo) -> Result<Generated, ProtectorError> {
    let slot = opts.slot.unwrap_or(DEFAULT_SLOT);
    let enroll = EnrollOptions {
        serial: opts.serial,
        slot: Some(slot),
        touch: opts.touch,
        pin: opts.pin,
        management_key: None,
    };
    let _card = one_at_a_time();
    let made = yubikey::enroll(&enroll, io)?;
    tracing::info!(
        serial = made.serial,
        slot = %format!("{:02x}", made.slot),
        touch = opts.touch.name(),
        "SSH key generated on a YubiKey"
    );
    Ok(Generated {
        serial: made.serial,
        slot: made.slot,
        touch: opts.touch,
        public: public_blob(&made.card_pk),
        notes: made.notes.into_iter().map(for_ssh).collect(),
    })
}

/// The enrollment's notes speak of the protector's Secret Key; here the
/// card holds an SSH key.
fn for_ssh(note: String) -> String {
    note.replace("can unwrap your Secret Key", "can sign with your SSH key")
        .replace(
            "(which would lock you out of this protector, not reveal the Secret Key)",
            "(which would destroy your SSH key, not reveal it)",
        )
}

fn put_string(v: &mut Vec<u8>, s: &[u8]) {
    v.extend_from_slice(&(s.len() as u32).to_be_bytes());
    v.extend_from_slice(s);
}

/// The SSH public key blob of an uncompressed P-256 point:
/// string "ecdsa-sha2-nistp256" | string "nistp256" | string Q.
pub fn public_blob(point: &[u8; POINT_LEN]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + KEY_TYPE.len() + 4 + CURVE.len() + 4 + POINT_LEN);
    put_string(&mut v, KEY_TYPE.as_bytes());
    put_string(&mut v, CURVE.as_bytes());
    put_string(&mut v, point);
    v
}

/// The point of an `ecdsa-sha2-nistp256` blob.
pub fn point_of(blob: &[u8]) -> Option<&[u8]> {
    let mut r = super::wire::Reader(blob);
    if r.string().ok()? != KEY_TYPE.as_bytes() || r.string().ok()? != CURVE.as_bytes() {
        return None;
    }
    let point = r.string().ok()?;
    (r.is_empty() && point.len() == POINT_LEN && point[0] == 0x04).then_some(point)
}

/// Why a card's signature cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the YubiKey returned a malformed ECDSA signature")]
pub struct BadSignature;

/// One DER length (short or long form, at most two bytes of length).
fn der_len(b: &[u8]) -> Result<(usize, &[u8]), BadSignature> {
    match b.split_first().ok_or(BadSignature)? {
        (&n, rest) if n < 0x80 => Ok((usize::from(n), rest)),
        (0x81, rest) => {
            let (&n, rest) = rest.split_first().ok_or(BadSignature)?;
            Ok((usize::from(n), rest))
        }
        (0x82, [a, b, rest @ ..]) => Ok((usize::from(u16::from_be_bytes([*a, *b])), rest)),
        _ => Err(BadSignature),
    }
}

/// One DER TLV of tag `tag`: its value and what follows.
fn der_tlv(tag: u8, b: &[u8]) -> Result<(&[u8], &[u8]), BadSignature> {
    let (&t, rest) = b.split_first().ok_or(BadSignature)?;
    if t != tag {
        return Err(BadSignature);
    }
    let (n, rest) = der_len(rest)?;
    if rest.len() < n {
        return Err(BadSignature);
    }
    Ok(rest.split_at(n))
}

/// A positive, non-zero DER INTEGER of at most 32 bytes (P-256), without
/// its leading zeros.
fn der_scalar(v: &[u8]) -> Result<&[u8], BadSignature> {
    if v.first().is_none_or(|b| b & 0x80 != 0) {
        return Err(BadSignature); // empty or negative
    }
    let start = v.iter().position(|b| *b != 0).ok_or(BadSignature)?;
    let n = &v[start..];
    if n.len() > 32 {
        return Err(BadSignature);
    }
    Ok(n)
}

/// An SSH mpint of a positive magnitude (big-endian, no leading zeros).
fn put_mpint(v: &mut Vec<u8>, magnitude: &[u8]) {
    let pad = magnitude.first().is_some_and(|b| b & 0x80 != 0);
    let len = magnitude.len() + usize::from(pad);
    v.extend_from_slice(&(len as u32).to_be_bytes());
    if pad {
        v.push(0);
    }
    v.extend_from_slice(magnitude);
}

/// The SSH signature blob of a DER ECDSA signature `SEQUENCE { r, s }`:
/// string "ecdsa-sha2-nistp256" | string (mpint r | mpint s).
pub fn ssh_signature(der: &[u8]) -> Result<Vec<u8>, BadSignature> {
    let (seq, rest) = der_tlv(0x30, der)?;
    if !rest.is_empty() {
        return Err(BadSignature);
    }
    let (r, rest) = der_tlv(0x02, seq)?;
    let (s, rest) = der_tlv(0x02, rest)?;
    if !rest.is_empty() {
        return Err(BadSignature);
    }
    let (r, s) = (der_scalar(r)?, der_scalar(s)?);
    let mut inner = Vec::with_capacity(2 * (4 + 33));
    put_mpint(&mut inner, r);
    put_mpint(&mut inner, s);
    let mut v = Vec::with_capacity(4 + KEY_TYPE.len() + 4 + inner.len());
    put_string(&mut v, KEY_TYPE.as_bytes());
    put_string(&mut v, &inner);
    Ok(v)
}

/// Whether `sig` (an SSH signature blob) is a good signature of `data` by
/// the key of blob `public`.
pub fn verifies(public: &[u8], data: &[u8], sig: &[u8]) -> bool {
    use ssh_encoding::Decode as _;
    let Ok((key, None)) = keys::parse_public(public) else {
        return false;
    };
    let Ok(sig) = ssh_key::Signature::decode(&mut &sig[..]) else {
        return false;
    };
    signature::Verifier::verify(&key, data, &sig).is_ok()
}

/// Where a key on a card is (`Location::Card` of the vault record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardKey {
    /// The card's serial.
    pub serial: u32,
    /// The PIV slot.
    pub slot: u8,
    /// The touch policy byte (1 never, 2 always, 3 cached).
    pub touch: u8,
}

/// Has the card sign `data` with the key of blob `public` (see the module
/// docs); the SSH signature blob. `name` names the key (its comment) and
/// `requester` the program asking, in the PIN prompt. Blocking: it waits for the PIN and
/// for a touch.
pub fn sign(
    io: &dyn UnlockIo,
    card: CardKey,
    public: &[u8],
    data: &[u8],
    name: &str,
    requester: &str,
) -> Result<Vec<u8>, ProtectorError> {
    let serial = card.serial;
    let point = point_of(public).ok_or_else(|| {
        ProtectorError::Failed(format!(
            "the vault's record of the key on YubiKey {serial} is not an {KEY_TYPE} key"
        ))
    })?;
    let mut prompt = format!(
        "Enter the PIN of YubiKey {serial} to sign with SSH key {name} ({})\nfor {requester}",
        keys::fingerprint(public)
    );
    if Touch::from_code(card.touch).is_some_and(|t| t != Touch::Never) {
        prompt.push_str("\nThen touch your YubiKey when it blinks.");
    }
    let digest = Sha256::digest(data);

    let _card = one_at_a_time();
    let mut yk = open(serial)?;
    let result = sign_on(&mut yk, card, point, &digest, io, &prompt, name);
    // Done with the card: the drop resets it, which forgets the PIN.
    drop(yk);
    let der = result?;
    let sig = ssh_signature(&der)
        .map_err(|e| ProtectorError::Failed(format!("{e} (YubiKey {serial})")))?;
    if !verifies(public, data, &sig) {
        return Err(ProtectorError::Failed(format!(
            "YubiKey {serial} returned a signature that does not verify with the key of slot {:02x}",
            card.slot
        )));
    }
    Ok(sig)
}

/// Opens the card that holds a key (an absent card is reported at once:
/// the client, ssh, would not wait).
fn open(serial: u32) -> Result<YubiKey, ProtectorError> {
    yubikey::open_raw(serial).map_err(|e| {
        if yubikey::is_absent(&e) {
            ProtectorError::Unavailable(format!(
                "YubiKey {serial}, which holds this SSH key, is not inserted; insert it and try \
                 again"
            ))
        } else {
            yubikey::open_error(serial, e)
        }
    })
}

/// The card steps of [`sign`]: the slot's key, the PIN, the touch, the
/// signature (DER).
fn sign_on(
    yk: &mut YubiKey,
    card: CardKey,
    point: &[u8],
    digest: &[u8],
    io: &dyn UnlockIo,
    prompt: &str,
    name: &str,
) -> Result<Vec<u8>, ProtectorError> {
    let CardKey { serial, slot, .. } = card;
    let touch = Touch::from_code(card.touch).unwrap_or(Touch::Never);
    let slot_id = SlotId::try_from(slot).map_err(|_| {
        ProtectorError::Failed(format!(
            "the vault's record names slot {slot:02x} of YubiKey {serial}, which is not a PIV key \
             slot (damaged?)"
        ))
    })?;
    check_slot_key(yk, serial, slot, slot_id, point)?;
    let tries = yubikey::pin_tries_left(yk);
    let message = match tries {
        Some(0) => {
            tracing::warn!(serial, "the PIN of the YubiKey is blocked; no signature");
            return Err(ProtectorError::PinBlocked { serial });
        }
        Some(1) => format!("{prompt}\n(last try before the PIN is blocked)"),
        Some(t) if t < 3 => format!("{prompt}\n({t} tries left)"),
        _ => prompt.to_owned(),
    };
    let no_pin = |e| match e {
        ProtectorError::Cancelled => ProtectorError::Failed(format!(
            "no PIN was given for YubiKey {serial} (the prompt was cancelled or timed out)"
        )),
        e => e,
    };
    let pin = yubikey::prompt_pin(io, &message).map_err(no_pin)?;
    yubikey::check_pin_length(serial, &pin).map_err(no_pin)?;
    if let Err(e) = yubikey::verify_pin(yk, serial, &pin) {
        match &e {
            ProtectorError::WrongPin { tries_left, .. } => tracing::warn!(
                serial,
                tries_left,
                "wrong PIN for the YubiKey of SSH key {name}: {tries_left} tries left before it is \
                 blocked"
            ),
            ProtectorError::PinBlocked { .. } => tracing::warn!(
                serial,
                "wrong PIN for the YubiKey of SSH key {name}: the PIN is now blocked"
            ),
            _ => {}
        }
        return Err(e);
    }
    drop(pin);
    match touch {
        Touch::Never => {}
        Touch::Always => io.notice(&format!(
            "Touch your YubiKey {serial} (it is blinking) to sign with SSH key {name}…"
        )),
        Touch::Cached => io.notice(&format!(
            "Touch your YubiKey {serial} if it is blinking, to sign with SSH key {name}…"
        )),
    }
    let sig = ykpiv::sign_data(yk, digest, AlgorithmId::EccP256, slot_id).map_err(|e| match e {
        YkError::AuthenticationError if touch != Touch::Never => ProtectorError::Failed(format!(
            "timed out waiting for a touch on YubiKey {serial}; try again and touch the key when \
             it blinks"
        )),
        YkError::AuthenticationError => ProtectorError::Failed(format!(
            "YubiKey {serial} refused to sign (security status not satisfied: was the card reset \
             by another program?); try again"
        )),
        e => yubikey::card_error(serial, "sign with", e),
    })?;
    Ok(sig.to_vec())
}

/// The slot must still hold the key in the vault's record (no PIN try is
/// spent on a card that cannot sign with it).
fn check_slot_key(
    yk: &mut YubiKey,
    serial: u32,
    slot: u8,
    slot_id: SlotId,
    point: &[u8],
) -> Result<(), ProtectorError> {
    let gone = |what: &str| {
        ProtectorError::Failed(format!(
            "slot {slot:02x} of YubiKey {serial} {what}, not this SSH key (was the PIV applet \
             reset or the slot reused?); remove the key with `keyward ssh remove` and make a new one"
        ))
    };
    match ykpiv::metadata(yk, slot_id) {
        Ok(m) => {
            let on_card = m
                .public
                .as_ref()
                .map(|spki| spki.subject_public_key.raw_bytes().to_vec())
                .unwrap_or_default();
            if on_card == point {
                Ok(())
            } else {
                Err(gone("holds another key"))
            }
        }
        Err(YkError::GenericError) => Err(gone("is empty")),
        // Firmware before 5.3: the signature check tells.
        Err(YkError::NotSupported) => Ok(()),
        Err(e @ YkError::PcscError { .. }) => Err(yubikey::card_error(serial, "read", e)),
        Err(_) => Err(gone("holds another kind of key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtual_yubikey::crypto::EcKey;

    fn key() -> EcKey {
        EcKey::generate(|b| getrandom::fill(b).unwrap())
    }

    fn blob_of(k: &EcKey) -> Vec<u8> {
        public_blob(&k.public_point().try_into().unwrap())
    }

    #[test]
    fn the_blob_is_an_openssh_ecdsa_key() {
        let k = key();
        let blob = blob_of(&k);
        assert_eq!(keys::type_name(&blob), KEY_TYPE);
        let (parsed, cert) = keys::parse_public(&blob).unwrap();
        assert!(cert.is_none());
        assert_eq!(
            parsed.algorithm(),
            ssh_key::Algorithm::Ecdsa {
                curve: ssh_key::EcdsaCurve::NistP256
            }
        );
        assert_eq!(point_of(&blob), Some(&k.public_point()[..]));
        assert!(keys::fingerprint(&blob).starts_with("SHA256:"));
        // Not a card key: another type, trailing bytes, a short point.
        let ed = keys::generate("ed25519", 0).unwrap().public_blob().unwrap();
        assert_eq!(point_of(&ed), None);
        let mut long = blob.clone();
        long.push(0);
        assert_eq!(point_of(&long), None);
        assert_eq!(point_of(&blob[..blob.len() - 1]), None);
    }

    #[test]
    fn card_signatures_become_ssh_signatures_that_verify() {
        let k = key();
        let blob = blob_of(&k);
        // Many signatures: r and s with and without their high bit set,
        // sometimes shorter than 32 bytes.
        for i in 0..64u32 {
            let data = format!("data {i}");
            let der = k.sign_prehash(&Sha256::digest(data.as_bytes())).unwrap();
            let sig = ssh_signature(&der).unwrap();
            assert!(verifies(&blob, data.as_bytes(), &sig), "{i}");
            assert!(!verifies(&blob, b"other data", &sig));
            assert_eq!(keys::type_name(&sig), KEY_TYPE);
            // OpenSSH's form: the inner blob is two mpints.
            let mut r = super::super::wire::Reader(&sig);
            r.string().unwrap();
            let inner = r.string().unwrap();
            assert!(r.is_empty());
            let mut r = super::super::wire::Reader(inner);
            for _ in 0..2 {
                let m = r.string().unwrap();
                assert!(!m.is_empty() && m.len() <= 33);
                assert!(m[0] & 0x80 == 0, "an mpint is positive");
                assert!(m[0] != 0 || m[1] & 0x80 != 0, "no needless leading zero");
            }
            assert!(r.is_empty());
        }
        // Another key's blob does not verify it.
        let der = k.sign_prehash(&Sha256::digest(b"x")).unwrap();
        let sig = ssh_signature(&der).unwrap();
        assert!(!verifies(&blob_of(&key()), b"x", &sig));
    }

    #[test]
    fn mpints_and_der_edges() {
        let mut v = Vec::new();
        put_mpint(&mut v, &[0x7f]);
        put_mpint(&mut v, &[0x80, 1]);
        assert_eq!(v, [0, 0, 0, 1, 0x7f, 0, 0, 0, 3, 0, 0x80, 1]);
        // r = 1 with a needless leading zero is read; s = 0x80 padded.
        let der = [0x30, 8, 2, 2, 0, 1, 2, 2, 0, 0x80];
        let sig = ssh_signature(&der).unwrap();
        assert!(sig.ends_with(&[0, 0, 0, 11, 0, 0, 0, 1, 1, 0, 0, 0, 2, 0, 0x80]));
        for bad in [
            &[][..],
            &[0x30, 0],                                  // no integers
            &[0x30, 6, 2, 1, 1, 2, 1, 0],                // s = 0
            &[0x30, 6, 2, 1, 1, 2, 1, 0x80],             // s negative
            &[0x30, 6, 2, 1, 1, 2, 0, 2, 1],             // s empty
            &[0x30, 7, 2, 1, 1, 2, 1, 1],                // short
            &[0x30, 6, 2, 1, 1, 2, 1, 1, 0],             // trailing
            &[0x31, 6, 2, 1, 1, 2, 1, 1],                // not a sequence
            &[0x30, 9, 2, 1, 1, 2, 1, 1, 2, 1, 1],       // a third integer
            &[0x30, 0x84, 0, 0, 0, 6, 2, 1, 1, 2, 1, 1], // long length form
        ] {
            assert_eq!(ssh_signature(bad), Err(BadSignature), "{bad:02x?}");
        }
        let mut big = vec![0x30, 0x26, 0x02, 0x21, 0x01];
        big.extend_from_slice(&[0x55; 32]);
        big.extend_from_slice(&[0x02, 0x01, 0x01]);
        assert_eq!(ssh_signature(&big), Err(BadSignature), "33-byte r");
    }
}
