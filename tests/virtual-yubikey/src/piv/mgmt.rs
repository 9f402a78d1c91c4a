//! The management key: GENERAL AUTHENTICATE on key reference `9B`, and
//! Yubico's SET MANAGEMENT KEY.
//!
//! Two protocols, both over one cipher block in ECB mode (8 bytes for 3DES,
//! 16 for AES), with P1 naming the algorithm (`03`, `08`, `0A`, `0C`); a P1
//! that is not the key's algorithm is refused with `6A80`:
//!
//! - mutual (what the `yubikey` crate and yubico-piv-tool use):
//!   host `7C 02 80 00` → card `7C .. 80 n E(witness)`;
//!   host `7C .. 80 n witness 81 n challenge` → card `7C .. 82 n E(challenge)`,
//!   or `6982` if the witness is wrong;
//! - single: host `7C 02 81 00` → card `7C .. 81 n challenge`;
//!   host `7C .. 82 n E(challenge)` → `9000` or `6982`.

use super::{MgmtPending, Piv, Reply};
use crate::apdu::{Command, Response, Sw};
use crate::crypto::MgmtAlgorithm;
use crate::hardware::Hardware;
use crate::state::{MgmtKey, TouchPolicy};
use crate::tlv;

/// Tag of the dynamic authentication template.
const DYN_AUTH: u32 = 0x7C;
const WITNESS: u32 = 0x80;
const CHALLENGE: u32 = 0x81;
const RESPONSE: u32 = 0x82;

fn template(items: &[(u32, &[u8])]) -> Vec<u8> {
    let mut inner = Vec::new();
    for (tag, value) in items {
        tlv::write(&mut inner, *tag, value);
    }
    tlv::encode(DYN_AUTH, &inner)
}

/// GENERAL AUTHENTICATE `00 87 <alg> 9B`.
pub(super) fn authenticate(piv: &mut Piv, cmd: &Command<'_>, hw: &mut dyn Hardware) -> Reply {
    let pending = piv.session.mgmt_pending.take();
    let alg = piv.state.mgmt.algorithm;
    if MgmtAlgorithm::from_byte(cmd.p1) != Some(alg) {
        return Err(Sw::INCORRECT_DATA);
    }
    let inner = tlv::parse_single(cmd.data, DYN_AUTH).map_err(|_| Sw::INCORRECT_DATA)?;
    let items = tlv::parse_all(inner).map_err(|_| Sw::INCORRECT_DATA)?;
    let witness = tlv::find(&items, WITNESS);
    let challenge = tlv::find(&items, CHALLENGE);
    let response = tlv::find(&items, RESPONSE);
    let key = piv.state.mgmt.key.clone();
    let n = alg.block_len();
    let encrypt = |block: &[u8]| alg.encrypt(&key, block).ok_or(Sw::INCORRECT_DATA);

    match (witness, challenge, response) {
        // Mutual, step 1: send an encrypted witness.
        (Some([]), None, None) => {
            piv.session.mgmt_authenticated = false;
            let mut w = vec![0u8; n];
            hw.fill_random(&mut w);
            let reply = template(&[(WITNESS, &encrypt(&w)?)]);
            piv.session.mgmt_pending = Some(MgmtPending::Witness(w));
            Ok(Response::ok(reply))
        }
        // Single, step 1: send a challenge in clear.
        (None, Some([]), None) => {
            piv.session.mgmt_authenticated = false;
            let mut c = vec![0u8; n];
            hw.fill_random(&mut c);
            let reply = template(&[(CHALLENGE, &c)]);
            piv.session.mgmt_pending = Some(MgmtPending::Challenge(c));
            Ok(Response::ok(reply))
        }
        // Mutual, step 2: check the witness, answer the host's challenge.
        (Some(w), Some(c), None) if !w.is_empty() && !c.is_empty() => {
            let Some(MgmtPending::Witness(expected)) = pending else {
                return Err(Sw::CONDITIONS_NOT_SATISFIED);
            };
            if c.len() != n || w != expected.as_slice() {
                return Err(Sw::SECURITY_STATUS);
            }
            let reply = template(&[(RESPONSE, &encrypt(c)?)]);
            finish(piv, hw)?;
            Ok(Response::ok(reply))
        }
        // Single, step 2: check E(challenge).
        (None, None, Some(r)) if !r.is_empty() => {
            let Some(MgmtPending::Challenge(c)) = pending else {
                return Err(Sw::CONDITIONS_NOT_SATISFIED);
            };
            if r != encrypt(&c)?.as_slice() {
                return Err(Sw::SECURITY_STATUS);
            }
            finish(piv, hw)?;
            Ok(Response::status(Sw::OK))
        }
        _ => Err(Sw::INCORRECT_DATA),
    }
}

/// The key was proven: wait for a touch if the key demands one, then mark
/// the session authenticated.
fn finish(piv: &mut Piv, hw: &mut dyn Hardware) -> Result<(), Sw> {
    if piv.state.mgmt.touch {
        piv.check_touch_policy(TouchPolicy::Always, hw)?;
    }
    piv.session.mgmt_authenticated = true;
    Ok(())
}

/// SET MANAGEMENT KEY `00 FF FF FF|FE` + `<alg> 9B <len> <key>`; P2 `FE`
/// makes the key require a touch. Needs the current key; AES keys need
/// firmware 5.4 or later.
pub(super) fn set_management_key(piv: &mut Piv, cmd: &Command<'_>) -> Reply {
    piv.require_mgmt()?;
    let touch = match (cmd.p1, cmd.p2) {
        (0xFF, 0xFF) => false,
        (0xFF, 0xFE) => true,
        _ => return Err(Sw::INCORRECT_P1P2),
    };
    let [alg, 0x9B, len, key @ ..] = cmd.data else {
        return Err(Sw::INCORRECT_DATA);
    };
    let algorithm = MgmtAlgorithm::from_byte(*alg).ok_or(Sw::INCORRECT_DATA)?;
    if algorithm != MgmtAlgorithm::Tdes && !piv.state.version.at_least(5, 4, 0) {
        return Err(Sw::INCORRECT_DATA);
    }
    if usize::from(*len) != key.len() || key.len() != algorithm.key_len() {
        return Err(Sw::INCORRECT_DATA);
    }
    piv.state_mut().mgmt = MgmtKey {
        algorithm,
        key: key.to_vec(),
        touch,
    };
    Ok(Response::status(Sw::OK))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::crypto::MgmtAlgorithm;
    use crate::state::{CardState, DEFAULT_MGMT_KEY, FactoryOptions, Version};

    /// Runs the mutual protocol with `alg`/`key`; returns the final SW.
    fn mutual(piv: &mut super::Piv, hw: &mut FakeHardware, alg: MgmtAlgorithm, key: &[u8]) -> u16 {
        let p1 = alg.to_byte();
        let n = alg.block_len();
        let (data, sw) = run(piv, hw, &apdu(0x87, p1, 0x9B, &[0x7C, 0x02, 0x80, 0x00]));
        if sw != 0x9000 {
            return sw;
        }
        assert_eq!(&data[..4], &[0x7C, 2 + n as u8, 0x80, n as u8]);
        let witness = alg.decrypt(key, &data[4..]).unwrap();
        let challenge = vec![0x33; n];
        let mut inner = vec![0x80, n as u8];
        inner.extend(&witness);
        inner.extend([0x81, n as u8]);
        inner.extend(&challenge);
        let mut body = vec![0x7C, inner.len() as u8];
        body.extend(inner);
        let (data, sw) = run(piv, hw, &apdu(0x87, p1, 0x9B, &body));
        if sw == 0x9000 {
            assert_eq!(&data[..4], &[0x7C, 2 + n as u8, 0x82, n as u8]);
            assert_eq!(data[4..], alg.encrypt(key, &challenge).unwrap()[..]);
        }
        sw
    }

    #[test]
    fn mutual_auth_3des_default_and_wrong_key() {
        let (mut piv, mut hw) = fresh();
        assert_eq!(
            mutual(&mut piv, &mut hw, MgmtAlgorithm::Tdes, &DEFAULT_MGMT_KEY),
            0x9000
        );
        assert!(piv.session().mgmt_authenticated);
        assert_eq!(
            mutual(&mut piv, &mut hw, MgmtAlgorithm::Tdes, &[9; 24]),
            0x6982
        );
        assert!(
            !piv.session().mgmt_authenticated,
            "a new attempt drops the old one"
        );
        assert_eq!(
            mutual(&mut piv, &mut hw, MgmtAlgorithm::Aes192, &DEFAULT_MGMT_KEY),
            0x6A80,
            "wrong algorithm"
        );
    }

    #[test]
    fn aes192_is_the_default_from_5_7() {
        let state = CardState::factory(&FactoryOptions {
            version: Version(5, 7, 1),
            ..FactoryOptions::default()
        });
        let mut piv = super::Piv::new(state);
        let mut hw = FakeHardware::default();
        assert_eq!(
            mutual(&mut piv, &mut hw, MgmtAlgorithm::Aes192, &DEFAULT_MGMT_KEY),
            0x9000
        );
        assert_eq!(
            mutual(&mut piv, &mut hw, MgmtAlgorithm::Tdes, &DEFAULT_MGMT_KEY),
            0x6A80
        );
    }

    #[test]
    fn single_auth() {
        let (mut piv, mut hw) = fresh();
        let alg = MgmtAlgorithm::Tdes;
        let (data, sw) = run(
            &mut piv,
            &mut hw,
            &apdu(0x87, 3, 0x9B, &[0x7C, 0x02, 0x81, 0x00]),
        );
        assert_eq!((sw, &data[..4]), (0x9000, &[0x7C, 10, 0x81, 8][..]));
        let mut body = vec![0x7C, 10, 0x82, 8];
        body.extend(alg.encrypt(&DEFAULT_MGMT_KEY, &data[4..]).unwrap());
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x87, 3, 0x9B, &body)),
            (vec![], 0x9000)
        );
        assert!(piv.session().mgmt_authenticated);
        // Replaying the response without a fresh challenge fails.
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x87, 3, 0x9B, &body)).1,
            0x6985
        );
    }

    #[test]
    fn step_two_without_step_one_or_after_another_command_fails() {
        let (mut piv, mut hw) = fresh();
        let mut body = vec![0x7C, 20, 0x80, 8];
        body.extend([0; 8]);
        body.extend([0x81, 8]);
        body.extend([0; 8]);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x87, 3, 0x9B, &body)).1,
            0x6985
        );
        run(
            &mut piv,
            &mut hw,
            &apdu(0x87, 3, 0x9B, &[0x7C, 0x02, 0x80, 0x00]),
        );
        run(&mut piv, &mut hw, &[0, 0xFD, 0, 0]);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x87, 3, 0x9B, &body)).1,
            0x6985
        );
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x87, 3, 0x9B, &[0x7C, 0x00])).1,
            0x6A80
        );
    }

    #[test]
    fn change_key_to_aes_and_back() {
        let (mut piv, mut hw) = fresh();
        let aes_key = [0x11; 32];
        let mut set = vec![0x0C, 0x9B, 32];
        set.extend(aes_key);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xFF, 0xFF, 0xFF, &set)).1,
            0x6982
        );
        auth_default(&mut piv, &mut hw);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xFF, 0xFF, 0xFF, &set[..20])).1,
            0x6A80
        );
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xFF, 0xFF, 0xFF, &set)).1,
            0x9000
        );
        assert!(piv.take_dirty());
        assert_eq!(
            mutual(&mut piv, &mut hw, MgmtAlgorithm::Aes256, &aes_key),
            0x9000
        );

        let tdes = [0x42u8; 24];
        let mut set = vec![0x03, 0x9B, 24];
        set.extend(tdes);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xFF, 0xFF, 0xFF, &set)).1,
            0x9000
        );
        assert_eq!(
            mutual(&mut piv, &mut hw, MgmtAlgorithm::Tdes, &tdes),
            0x9000
        );
    }

    #[test]
    fn aes_keys_need_firmware_5_4() {
        let state = CardState::factory(&FactoryOptions {
            version: Version(5, 2, 7),
            ..FactoryOptions::default()
        });
        let mut piv = super::Piv::new(state);
        let mut hw = FakeHardware::default();
        auth_default(&mut piv, &mut hw);
        let mut set = vec![0x08, 0x9B, 16];
        set.extend([1; 16]);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xFF, 0xFF, 0xFF, &set)).1,
            0x6A80
        );
    }

    #[test]
    fn touch_required_key() {
        let (mut piv, mut hw) = fresh();
        auth_default(&mut piv, &mut hw);
        let mut set = vec![0x03, 0x9B, 24];
        set.extend(DEFAULT_MGMT_KEY);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xFF, 0xFF, 0xFE, &set)).1,
            0x9000
        );
        assert_eq!(
            mutual(&mut piv, &mut hw, MgmtAlgorithm::Tdes, &DEFAULT_MGMT_KEY),
            0x6982
        );
        hw.touches.push_back(true);
        assert_eq!(
            mutual(&mut piv, &mut hw, MgmtAlgorithm::Tdes, &DEFAULT_MGMT_KEY),
            0x9000
        );
        assert_eq!(hw.touch_waits, 2);
    }
}
