//! Data objects: GET DATA and PUT DATA (`P1 P2 = 3F FF`).
//!
//! Objects are addressed by `5C <tag>`: certificates (`5FC105` for slot 9A,
//! `5FC10D`.. for the retired slots), CHUID (`5FC102`), CCC (`5FC107`),
//! Yubico's admin data (`5FFF00`) and so on. The card stores any `5FC1xx` or
//! `5FFFxx` object as opaque bytes and returns it as `53 <value>`; it does not
//! interpret certificates. The discovery object (`7E`) is built in and
//! read-only. Writing needs the management key; reading is free except for
//! the "printed information" object `5FC109` (where hosts keep a PIN-protected
//! management key), which needs the PIN.

use super::{Piv, Reply};
use crate::apdu::{Command, Response, Sw};
use crate::tlv;

/// Largest object a YubiKey 5 stores.
pub const MAX_OBJECT_LEN: usize = 3063;

/// Tag of the discovery object.
const DISCOVERY: u32 = 0x7E;
/// The "printed information" object, readable only after VERIFY.
const PRINTED: u32 = 0x5FC109;

/// The discovery object of a YubiKey 5: PIV AID, PIN usage policy "PIV PIN
/// only" (`40 00`).
fn discovery() -> Vec<u8> {
    let mut inner = tlv::encode(0x4F, &super::AID);
    tlv::write(&mut inner, 0x5F2F, &[0x40, 0x00]);
    tlv::encode(DISCOVERY, &inner)
}

/// Reads the object tag from `5C <tag>` at the front of `data`.
fn object_tag(data: &[u8]) -> Result<(u32, &[u8]), Sw> {
    let (t, rest) = tlv::parse(data).map_err(|_| Sw::INCORRECT_DATA)?;
    if t.tag != 0x5C || t.value.is_empty() || t.value.len() > 3 {
        return Err(Sw::INCORRECT_DATA);
    }
    let tag = t
        .value
        .iter()
        .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    Ok((tag, rest))
}

fn is_storable(tag: u32) -> bool {
    (0x5FC100..=0x5FC1FF).contains(&tag) || (0x5FFF00..=0x5FFFFF).contains(&tag)
}

/// GET DATA `00 CB 3F FF` + `5C <tag>`.
pub(super) fn get_data(piv: &mut Piv, cmd: &Command<'_>) -> Reply {
    if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
        return Err(Sw::INCORRECT_P1P2);
    }
    let (tag, rest) = object_tag(cmd.data)?;
    if !rest.is_empty() {
        return Err(Sw::INCORRECT_DATA);
    }
    if tag == DISCOVERY {
        return Ok(Response::ok(discovery()));
    }
    if tag == PRINTED && !piv.session.pin_verified {
        return Err(Sw::SECURITY_STATUS);
    }
    let value = piv.state.objects.get(&tag).ok_or(Sw::NOT_FOUND)?;
    Ok(Response::ok(tlv::encode(0x53, value)))
}

/// PUT DATA `00 DB 3F FF` + `5C <tag> 53 <value>`; an empty value deletes.
pub(super) fn put_data(piv: &mut Piv, cmd: &Command<'_>) -> Reply {
    if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
        return Err(Sw::INCORRECT_P1P2);
    }
    piv.require_mgmt()?;
    let (tag, rest) = object_tag(cmd.data)?;
    if !is_storable(tag) {
        return Err(Sw::INCORRECT_DATA);
    }
    let value = tlv::parse_single(rest, 0x53).map_err(|_| Sw::INCORRECT_DATA)?;
    if value.len() > MAX_OBJECT_LEN {
        return Err(Sw::NO_SPACE);
    }
    let objects = &mut piv.state_mut().objects;
    if value.is_empty() {
        objects.remove(&tag);
    } else {
        objects.insert(tag, value.to_vec());
    }
    Ok(Response::status(Sw::OK))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::tlv;

    fn put(tag: &[u8], value: &[u8]) -> Vec<u8> {
        let mut body = tlv::encode(0x5C, tag);
        tlv::write(&mut body, 0x53, value);
        body
    }

    fn get_apdu(tag: &[u8]) -> Vec<u8> {
        apdu(0xCB, 0x3F, 0xFF, &tlv::encode(0x5C, tag))
    }

    #[test]
    fn write_read_delete() {
        let (mut piv, mut hw) = fresh();
        let cert_9a = [0x5F, 0xC1, 0x05];
        assert_eq!(run(&mut piv, &mut hw, &get_apdu(&cert_9a)).1, 0x6A82);
        let body = put(&cert_9a, &[0x70, 1, 0xAA]);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xDB, 0x3F, 0xFF, &body)).1,
            0x6982
        );
        auth_default(&mut piv, &mut hw);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xDB, 0x3F, 0xFF, &body)).1,
            0x9000
        );
        assert!(piv.take_dirty());
        let (data, sw) = run(&mut piv, &mut hw, &get_apdu(&cert_9a));
        assert_eq!((data, sw), (vec![0x53, 3, 0x70, 1, 0xAA], 0x9000));

        let body = put(&cert_9a, &[]);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xDB, 0x3F, 0xFF, &body)).1,
            0x9000
        );
        assert_eq!(run(&mut piv, &mut hw, &get_apdu(&cert_9a)).1, 0x6A82);
    }

    #[test]
    fn discovery_and_protections() {
        let (mut piv, mut hw) = fresh();
        let (data, sw) = run(&mut piv, &mut hw, &get_apdu(&[0x7E]));
        assert_eq!(sw, 0x9000);
        assert_eq!(
            hex::encode_upper(data),
            "7E124F0BA0000003080000100001005F2F024000"
        );
        auth_default(&mut piv, &mut hw);
        let body = put(&[0x7E], &[1]);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xDB, 0x3F, 0xFF, &body)).1,
            0x6A80
        );
        let body = put(&[0x5F, 0xC1, 0x09], &[0x88, 0]);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xDB, 0x3F, 0xFF, &body)).1,
            0x9000
        );
        assert_eq!(
            run(&mut piv, &mut hw, &get_apdu(&[0x5F, 0xC1, 0x09])).1,
            0x6982
        );
        verify_default(&mut piv, &mut hw);
        assert_eq!(
            run(&mut piv, &mut hw, &get_apdu(&[0x5F, 0xC1, 0x09])).1,
            0x9000
        );
        let big = put(&[0x5F, 0xC1, 0x0A], &vec![0; super::MAX_OBJECT_LEN + 1]);
        let cmd = crate::apdu::Command {
            cla: 0,
            ins: 0xDB,
            p1: 0x3F,
            p2: 0xFF,
            data: &big,
            le: None,
            extended: true,
        };
        assert_eq!(piv.process(&cmd, &mut hw).sw.0, 0x6A84);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0xCB, 0x3F, 0xFE, &[0x5C, 1, 0x7E])).1,
            0x6A86
        );
    }
}
