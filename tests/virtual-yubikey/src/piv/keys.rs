//! Asymmetric keys: GENERATE, Yubico's IMPORT, GENERAL AUTHENTICATE for
//! signing and ECDH, and Yubico's GET METADATA.
//!
//! Only P-256 (algorithm `11`) is implemented; other algorithms are refused
//! with `6A80`. Key slots are 9A, 9C, 9D, 9E and the retired 82..95; the
//! attestation slot F9 takes imported keys only.

use super::{Piv, Reply};
use crate::apdu::{Command, Response, Sw};
use crate::crypto::EcKey;
use crate::hardware::Hardware;
use crate::state::{Origin, PinPolicy, SlotKey, TouchPolicy};
use crate::tlv;

/// PIV algorithm byte of ECC P-256.
pub const ALG_P256: u8 = 0x11;

/// Slots that hold keys a host can generate.
fn is_key_slot(slot: u8) -> bool {
    matches!(slot, 0x9A | 0x9C | 0x9D | 0x9E | 0x82..=0x95)
}

/// `7F49 { 86 <point> }`, the public key as GENERATE returns it.
fn public_key_template(point: &[u8]) -> Vec<u8> {
    tlv::encode(0x7F49, &tlv::encode(0x86, point))
}

/// Reads the optional PIN and touch policy TLVs (`AA`, `AB`).
fn policies(items: &[tlv::Tlv<'_>], slot: u8) -> Result<(PinPolicy, TouchPolicy), Sw> {
    let byte = |tag| match tlv::find(items, tag) {
        None => Ok(0),
        Some([b]) => Ok(*b),
        Some(_) => Err(Sw::INCORRECT_DATA),
    };
    let pin = PinPolicy::from_byte(byte(0xAA)?, slot).ok_or(Sw::INCORRECT_DATA)?;
    let touch = TouchPolicy::from_byte(byte(0xAB)?).ok_or(Sw::INCORRECT_DATA)?;
    Ok((pin, touch))
}

/// GENERATE ASYMMETRIC KEY PAIR `00 47 00 <slot>` +
/// `AC { 80 <alg> [AA <pin policy>] [AB <touch policy>] }`.
/// Needs the management key; answers `7F49 { 86 <point> }`.
pub(super) fn generate(piv: &mut Piv, cmd: &Command<'_>, hw: &mut dyn Hardware) -> Reply {
    if cmd.p1 != 0 || !is_key_slot(cmd.p2) {
        return Err(Sw::INCORRECT_P1P2);
    }
    piv.require_mgmt()?;
    let inner = tlv::parse_single(cmd.data, 0xAC).map_err(|_| Sw::INCORRECT_DATA)?;
    let items = tlv::parse_all(inner).map_err(|_| Sw::INCORRECT_DATA)?;
    if tlv::find(&items, 0x80) != Some(&[ALG_P256]) {
        return Err(Sw::INCORRECT_DATA);
    }
    let (pin_policy, touch_policy) = policies(&items, cmd.p2)?;
    let key = EcKey::generate(|buf| hw.fill_random(buf));
    let point = key.public_point();
    piv.state_mut().keys.insert(
        cmd.p2,
        SlotKey {
            algorithm: ALG_P256,
            private: key.to_bytes(),
            pin_policy,
            touch_policy,
            origin: Origin::Generated,
        },
    );
    Ok(Response::ok(public_key_template(&point)))
}

/// IMPORT ASYMMETRIC KEY `00 FE 11 <slot>` + `06 <scalar> [AA ..] [AB ..]`.
pub(super) fn import(piv: &mut Piv, cmd: &Command<'_>) -> Reply {
    if !is_key_slot(cmd.p2) && cmd.p2 != 0xF9 {
        return Err(Sw::INCORRECT_P1P2);
    }
    piv.require_mgmt()?;
    if cmd.p1 != ALG_P256 {
        return Err(Sw::INCORRECT_DATA);
    }
    let items = tlv::parse_all(cmd.data).map_err(|_| Sw::INCORRECT_DATA)?;
    let scalar = tlv::find(&items, 0x06).ok_or(Sw::INCORRECT_DATA)?;
    if scalar.len() > 32 {
        return Err(Sw::INCORRECT_DATA);
    }
    let mut padded = vec![0u8; 32 - scalar.len()];
    padded.extend_from_slice(scalar);
    let key = EcKey::from_bytes(&padded).map_err(|_| Sw::INCORRECT_DATA)?;
    let (pin_policy, touch_policy) = policies(&items, cmd.p2)?;
    piv.state_mut().keys.insert(
        cmd.p2,
        SlotKey {
            algorithm: ALG_P256,
            private: key.to_bytes(),
            pin_policy,
            touch_policy,
            origin: Origin::Imported,
        },
    );
    Ok(Response::status(Sw::OK))
}

/// GENERAL AUTHENTICATE `00 87 11 <slot>` with
/// `7C { 82 00, 81 <hash> }` (sign: answers `7C { 82 <DER signature> }`) or
/// `7C { 82 00, 85 <peer point> }` (ECDH: answers `7C { 82 <shared X> }`).
/// The key's PIN policy is checked first, then its touch policy.
pub(super) fn authenticate(piv: &mut Piv, cmd: &Command<'_>, hw: &mut dyn Hardware) -> Reply {
    let slot_key = piv
        .state
        .keys
        .get(&cmd.p2)
        .cloned()
        .ok_or(Sw::INCORRECT_DATA)?;
    if cmd.p1 != slot_key.algorithm {
        return Err(Sw::INCORRECT_DATA);
    }
    let inner = tlv::parse_single(cmd.data, 0x7C).map_err(|_| Sw::INCORRECT_DATA)?;
    let items = tlv::parse_all(inner).map_err(|_| Sw::INCORRECT_DATA)?;
    if tlv::find(&items, 0x82) != Some(&[]) {
        return Err(Sw::INCORRECT_DATA);
    }
    let key = slot_key.ec_key().ok_or(Sw::INCORRECT_DATA)?;
    enum Op<'a> {
        Sign(&'a [u8]),
        Ecdh(&'a [u8]),
    }
    let op = match (tlv::find(&items, 0x81), tlv::find(&items, 0x85)) {
        (Some(hash), None) if !hash.is_empty() => Op::Sign(hash),
        (None, Some(point)) => Op::Ecdh(point),
        _ => return Err(Sw::INCORRECT_DATA),
    };
    piv.check_pin_policy(slot_key.pin_policy)?;
    piv.check_touch_policy(slot_key.touch_policy, hw)?;
    let result = match op {
        Op::Sign(hash) => key.sign_prehash(hash),
        Op::Ecdh(point) => key.ecdh(point),
    }
    .map_err(|_| Sw::INCORRECT_DATA)?;
    Ok(Response::ok(tlv::encode(0x7C, &tlv::encode(0x82, &result))))
}

/// GET METADATA `00 F7 00 <slot>` (firmware 5.3+): for PIN/PUK (80, 81),
/// the management key (9B) or a key slot, TLVs `01` algorithm, `02` policies,
/// `03` origin, `04` public key, `05` default value, `06` retries.
/// `6A88` for an empty slot.
pub(super) fn metadata(piv: &mut Piv, cmd: &Command<'_>) -> Reply {
    if !piv.state.version.at_least(5, 3, 0) {
        return Err(Sw::INS_NOT_SUPPORTED);
    }
    if cmd.p1 != 0 {
        return Err(Sw::INCORRECT_P1P2);
    }
    let state = &piv.state;
    let mut out = Vec::new();
    match cmd.p2 {
        0x80 | 0x81 => {
            let (secret, default) = if cmd.p2 == 0x80 {
                (&state.pin, crate::state::DEFAULT_PIN)
            } else {
                (&state.puk, crate::state::DEFAULT_PUK)
            };
            tlv::write(&mut out, 0x01, &[0xFF]);
            tlv::write(&mut out, 0x05, &[u8::from(secret.value == default)]);
            tlv::write(&mut out, 0x06, &[secret.retries, secret.remaining]);
        }
        0x9B => {
            let mgmt = &state.mgmt;
            let touch = if mgmt.touch {
                TouchPolicy::Always
            } else {
                TouchPolicy::Never
            };
            tlv::write(&mut out, 0x01, &[mgmt.algorithm.to_byte()]);
            tlv::write(
                &mut out,
                0x02,
                &[PinPolicy::Never.to_byte(), touch.to_byte()],
            );
            let default = mgmt.key == crate::state::DEFAULT_MGMT_KEY;
            tlv::write(&mut out, 0x05, &[u8::from(default)]);
        }
        slot if is_key_slot(slot) || slot == 0xF9 => {
            let key = state.keys.get(&slot).ok_or(Sw::REFERENCE_NOT_FOUND)?;
            let ec = key.ec_key().ok_or(Sw::REFERENCE_NOT_FOUND)?;
            tlv::write(&mut out, 0x01, &[key.algorithm]);
            tlv::write(
                &mut out,
                0x02,
                &[key.pin_policy.to_byte(), key.touch_policy.to_byte()],
            );
            tlv::write(&mut out, 0x03, &[key.origin.to_byte()]);
            tlv::write(&mut out, 0x04, &tlv::encode(0x86, &ec.public_point()));
        }
        _ => return Err(Sw::INCORRECT_P1P2),
    }
    Ok(Response::ok(out))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::crypto::EcKey;
    use crate::tlv;
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::ecdsa::{Signature, VerifyingKey};

    fn generate(
        piv: &mut super::Piv,
        hw: &mut FakeHardware,
        slot: u8,
        pin: u8,
        touch: u8,
    ) -> Vec<u8> {
        let body = [0xAC, 9, 0x80, 1, 0x11, 0xAA, 1, pin, 0xAB, 1, touch];
        let (data, sw) = run(piv, hw, &apdu(0x47, 0, slot, &body));
        assert_eq!(sw, 0x9000);
        let inner = tlv::parse_single(&data, 0x7F49).unwrap();
        let point = tlv::parse_single(inner, 0x86).unwrap();
        assert_eq!(point.len(), 65);
        point.to_vec()
    }

    fn sign_apdu(slot: u8, hash: &[u8]) -> Vec<u8> {
        let mut inner = vec![0x82, 0x00];
        tlv::write(&mut inner, 0x81, hash);
        apdu(0x87, 0x11, slot, &tlv::encode(0x7C, &inner))
    }

    fn ecdh_apdu(slot: u8, point: &[u8]) -> Vec<u8> {
        let mut inner = vec![0x82, 0x00];
        tlv::write(&mut inner, 0x85, point);
        apdu(0x87, 0x11, slot, &tlv::encode(0x7C, &inner))
    }

    fn result(data: &[u8]) -> Vec<u8> {
        let inner = tlv::parse_single(data, 0x7C).unwrap();
        tlv::parse_single(inner, 0x82).unwrap().to_vec()
    }

    #[test]
    fn generate_needs_management_key_and_checks_parameters() {
        let (mut piv, mut hw) = fresh();
        let body = [0xAC, 3, 0x80, 1, 0x11];
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x47, 0, 0x9A, &body)).1,
            0x6982
        );
        auth_default(&mut piv, &mut hw);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x47, 0, 0x9B, &body)).1,
            0x6A86
        );
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x47, 0, 0xF9, &body)).1,
            0x6A86
        );
        let rsa = [0xAC, 3, 0x80, 1, 0x07];
        assert_eq!(run(&mut piv, &mut hw, &apdu(0x47, 0, 0x9A, &rsa)).1, 0x6A80);
        let bio = [0xAC, 6, 0x80, 1, 0x11, 0xAA, 1, 0x04];
        assert_eq!(run(&mut piv, &mut hw, &apdu(0x47, 0, 0x9A, &bio)).1, 0x6A80);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x47, 0, 0x9A, &body)).1,
            0x9000
        );
        assert_eq!(
            piv.state().keys[&0x9A].pin_policy,
            crate::state::PinPolicy::Once
        );
        assert!(piv.take_dirty());
    }

    #[test]
    fn sign_honours_pin_policy_and_verifies() {
        let (mut piv, mut hw) = fresh();
        auth_default(&mut piv, &mut hw);
        let point = generate(&mut piv, &mut hw, 0x9C, 0, 0); // 9C: PIN always
        let hash = [0x42; 32];
        assert_eq!(run(&mut piv, &mut hw, &sign_apdu(0x9C, &hash)).1, 0x6982);
        verify_default(&mut piv, &mut hw);
        let (data, sw) = run(&mut piv, &mut hw, &sign_apdu(0x9C, &hash));
        assert_eq!(sw, 0x9000);
        let sig = Signature::from_der(&result(&data)).unwrap();
        let vk = VerifyingKey::from_sec1_bytes(&point).unwrap();
        vk.verify_prehash(&hash, &sig).unwrap();
        assert_eq!(
            run(&mut piv, &mut hw, &sign_apdu(0x9C, &hash)).1,
            0x6982,
            "PIN policy always: one verification, one signature"
        );
    }

    #[test]
    fn ecdh_matches_the_host_and_checks_the_point() {
        let (mut piv, mut hw) = fresh();
        auth_default(&mut piv, &mut hw);
        let card_point = generate(&mut piv, &mut hw, 0x82, 1, 1); // PIN never
        let host = EcKey::from_bytes(&[0x24; 32]).unwrap();
        let (data, sw) = run(&mut piv, &mut hw, &ecdh_apdu(0x82, &host.public_point()));
        assert_eq!(sw, 0x9000);
        assert_eq!(result(&data), host.ecdh(&card_point).unwrap());
        let mut bad = host.public_point();
        bad[10] ^= 0xFF;
        assert_eq!(run(&mut piv, &mut hw, &ecdh_apdu(0x82, &bad)).1, 0x6A80);
        assert_eq!(
            run(&mut piv, &mut hw, &ecdh_apdu(0x83, &bad)).1,
            0x6A80,
            "empty slot"
        );
    }

    #[test]
    fn pin_once_needs_verification_per_session() {
        let (mut piv, mut hw) = fresh();
        auth_default(&mut piv, &mut hw);
        generate(&mut piv, &mut hw, 0x9D, 2, 1);
        let host = EcKey::from_bytes(&[0x24; 32]).unwrap().public_point();
        assert_eq!(run(&mut piv, &mut hw, &ecdh_apdu(0x9D, &host)).1, 0x6982);
        verify_default(&mut piv, &mut hw);
        assert_eq!(run(&mut piv, &mut hw, &ecdh_apdu(0x9D, &host)).1, 0x9000);
        assert_eq!(run(&mut piv, &mut hw, &ecdh_apdu(0x9D, &host)).1, 0x9000);
        piv.clear_session();
        assert_eq!(run(&mut piv, &mut hw, &ecdh_apdu(0x9D, &host)).1, 0x6982);
    }

    #[test]
    fn touch_always_cached_and_timeout() {
        let (mut piv, mut hw) = fresh();
        auth_default(&mut piv, &mut hw);
        generate(&mut piv, &mut hw, 0x84, 1, 2); // touch always
        generate(&mut piv, &mut hw, 0x85, 1, 3); // touch cached
        let host = EcKey::from_bytes(&[0x24; 32]).unwrap().public_point();

        assert_eq!(
            run(&mut piv, &mut hw, &ecdh_apdu(0x84, &host)).1,
            0x6982,
            "timeout"
        );
        hw.touches.push_back(true);
        assert_eq!(run(&mut piv, &mut hw, &ecdh_apdu(0x84, &host)).1, 0x9000);
        assert_eq!(run(&mut piv, &mut hw, &ecdh_apdu(0x84, &host)).1, 0x6982);
        assert_eq!(hw.touch_waits, 3);

        // The touch at t=0 also serves the cached key for 15 seconds.
        hw.now = std::time::Duration::from_secs(14);
        assert_eq!(run(&mut piv, &mut hw, &ecdh_apdu(0x85, &host)).1, 0x9000);
        assert_eq!(hw.touch_waits, 3);
        hw.now = std::time::Duration::from_secs(16);
        assert_eq!(run(&mut piv, &mut hw, &ecdh_apdu(0x85, &host)).1, 0x6982);
        assert_eq!(hw.touch_waits, 4);
    }

    #[test]
    fn import_and_metadata() {
        let (mut piv, mut hw) = fresh();
        assert_eq!(run(&mut piv, &mut hw, &[0, 0xF7, 0, 0x9A]).1, 0x6A88);
        let scalar = [0x17; 32];
        let mut body = tlv::encode(0x06, &scalar);
        body.extend([0xAA, 1, 1, 0xAB, 1, 3]);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xFE, 0x11, 0x9A, &body)).1,
            0x6982
        );
        auth_default(&mut piv, &mut hw);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xFE, 0x14, 0x9A, &body)).1,
            0x6A80
        );
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xFE, 0x11, 0x9A, &body)).1,
            0x9000
        );

        let (data, sw) = run(&mut piv, &mut hw, &[0, 0xF7, 0, 0x9A]);
        assert_eq!(sw, 0x9000);
        let point = EcKey::from_bytes(&scalar).unwrap().public_point();
        let mut expected = vec![
            0x01, 1, 0x11, 0x02, 2, 1, 3, 0x03, 1, 2, 0x04, 0x43, 0x86, 0x41,
        ];
        expected.extend(&point);
        assert_eq!(data, expected);

        let (data, _) = run(&mut piv, &mut hw, &[0, 0xF7, 0, 0x80]);
        assert_eq!(data, vec![0x01, 1, 0xFF, 0x05, 1, 1, 0x06, 2, 3, 3]);
        run(&mut piv, &mut hw, &apdu(0x20, 0, 0x80, &padded(b"000000")));
        let (data, _) = run(&mut piv, &mut hw, &[0, 0xF7, 0, 0x81]);
        assert_eq!(data, vec![0x01, 1, 0xFF, 0x05, 1, 1, 0x06, 2, 3, 3]);
        let (data, _) = run(&mut piv, &mut hw, &[0, 0xF7, 0, 0x80]);
        assert_eq!(&data[6..], &[0x06, 2, 3, 2]);
        let (data, _) = run(&mut piv, &mut hw, &[0, 0xF7, 0, 0x9B]);
        assert_eq!(data, vec![0x01, 1, 0x03, 0x02, 2, 1, 1, 0x05, 1, 1]);
        assert_eq!(run(&mut piv, &mut hw, &[0, 0xF7, 0, 0x77]).1, 0x6A86);
    }
}
