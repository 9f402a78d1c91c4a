//! PIN and PUK: VERIFY, CHANGE REFERENCE, RESET RETRY, and Yubico's SET PIN
//! RETRIES and RESET.
//!
//! On the wire a PIN or PUK is 8 bytes, right-padded with `FF`. A wrong value
//! costs a try and is answered `63Cx` (x tries left); with none left the
//! answer is `6983`. A right one restores the counter. Counters are
//! persistent, the "verified" flag is not.

use super::{Piv, Reply};
use crate::apdu::{Command, Response, Sw};
use crate::state::Secret;

/// Reference of the PIN (P2).
const PIN: u8 = 0x80;
/// Reference of the PUK (P2).
const PUK: u8 = 0x81;
/// Wire length of a PIN or PUK.
const PADDED_LEN: usize = 8;

/// Strips the `FF` padding.
fn unpad(field: &[u8]) -> &[u8] {
    let end = field.iter().rposition(|b| *b != 0xFF).map_or(0, |i| i + 1);
    &field[..end]
}

/// A new PIN or PUK must be 6 to 8 bytes and contain no padding byte.
fn valid_new_value(field: &[u8]) -> bool {
    let value = unpad(field);
    (6..=PADDED_LEN).contains(&value.len()) && !value.contains(&0xFF)
}

/// Compares a padded candidate with a secret and updates its counter.
/// `Ok` on a match; the status to answer otherwise.
fn try_secret(secret: &mut Secret, candidate: &[u8]) -> Result<(), Sw> {
    if secret.is_blocked() {
        return Err(Sw::AUTH_BLOCKED);
    }
    // Constant time is not a concern for a test fixture.
    if unpad(candidate) == secret.value.as_slice() {
        secret.remaining = secret.retries;
        Ok(())
    } else {
        secret.remaining -= 1;
        Err(Sw::tries_left(secret.remaining))
    }
}

/// VERIFY `00 20 00 80`: with a PIN, check it; without data, report the
/// status (`9000` if verified, else `63Cx`); `00 20 FF 80` un-verifies.
pub(super) fn verify(piv: &mut Piv, cmd: &Command<'_>) -> Reply {
    if cmd.p2 != PIN {
        return Err(Sw::INCORRECT_P1P2);
    }
    match (cmd.p1, cmd.data.len()) {
        (0xFF, 0) => {
            piv.session.pin_verified = false;
            piv.session.pin_fresh = false;
            Ok(Response::status(Sw::OK))
        }
        (0x00, 0) => {
            let pin = &piv.state.pin;
            Ok(Response::status(if piv.session.pin_verified {
                Sw::OK
            } else if pin.is_blocked() {
                Sw::AUTH_BLOCKED
            } else {
                Sw::tries_left(pin.remaining)
            }))
        }
        (0x00, PADDED_LEN) => {
            piv.session.pin_verified = false;
            piv.session.pin_fresh = false;
            let blocked = piv.state.pin.is_blocked();
            let result = if blocked {
                Err(Sw::AUTH_BLOCKED)
            } else {
                try_secret(&mut piv.state_mut().pin, cmd.data)
            };
            result?;
            piv.session.pin_verified = true;
            piv.session.pin_fresh = true;
            Ok(Response::status(Sw::OK))
        }
        (0x00 | 0xFF, _) => Err(Sw::INCORRECT_DATA),
        _ => Err(Sw::INCORRECT_P1P2),
    }
}

/// CHANGE REFERENCE `00 24 00 80|81` + old‖new (8 + 8 bytes).
pub(super) fn change_reference(piv: &mut Piv, cmd: &Command<'_>) -> Reply {
    if cmd.p1 != 0 || (cmd.p2 != PIN && cmd.p2 != PUK) {
        return Err(Sw::INCORRECT_P1P2);
    }
    if cmd.data.len() != 2 * PADDED_LEN {
        return Err(Sw::INCORRECT_DATA);
    }
    let (old, new) = cmd.data.split_at(PADDED_LEN);
    let is_pin = cmd.p2 == PIN;
    let secret = if is_pin {
        &piv.state.pin
    } else {
        &piv.state.puk
    };
    if secret.is_blocked() {
        return Err(Sw::AUTH_BLOCKED);
    }
    if !valid_new_value(new) {
        return Err(Sw::INCORRECT_DATA);
    }
    let state = piv.state_mut();
    let secret = if is_pin {
        &mut state.pin
    } else {
        &mut state.puk
    };
    try_secret(secret, old)?;
    secret.value = unpad(new).to_vec();
    Ok(Response::status(Sw::OK))
}

/// RESET RETRY COUNTER `00 2C 00 80` + PUK‖new PIN: unblocks the PIN.
pub(super) fn reset_retry(piv: &mut Piv, cmd: &Command<'_>) -> Reply {
    if cmd.p1 != 0 || cmd.p2 != PIN {
        return Err(Sw::INCORRECT_P1P2);
    }
    if cmd.data.len() != 2 * PADDED_LEN {
        return Err(Sw::INCORRECT_DATA);
    }
    let (puk, new_pin) = cmd.data.split_at(PADDED_LEN);
    if piv.state.puk.is_blocked() {
        return Err(Sw::AUTH_BLOCKED);
    }
    if !valid_new_value(new_pin) {
        return Err(Sw::INCORRECT_DATA);
    }
    let state = piv.state_mut();
    try_secret(&mut state.puk, puk)?;
    state.pin.value = unpad(new_pin).to_vec();
    state.pin.remaining = state.pin.retries;
    Ok(Response::status(Sw::OK))
}

/// SET PIN RETRIES `00 FA <pin tries> <puk tries>`: needs the management key
/// and the PIN; resets PIN and PUK to their factory values.
pub(super) fn set_pin_retries(piv: &mut Piv, cmd: &Command<'_>) -> Reply {
    piv.require_mgmt()?;
    if !piv.session.pin_verified {
        return Err(Sw::SECURITY_STATUS);
    }
    if !(1..=15).contains(&cmd.p1) || !(1..=15).contains(&cmd.p2) {
        return Err(Sw::INCORRECT_P1P2);
    }
    piv.state_mut().set_retries(cmd.p1, cmd.p2);
    piv.session.pin_verified = false;
    piv.session.pin_fresh = false;
    Ok(Response::status(Sw::OK))
}

/// RESET `00 FB 00 00`: only when PIN and PUK are both blocked; wipes the
/// applet back to factory state.
pub(super) fn reset(piv: &mut Piv, _cmd: &Command<'_>) -> Reply {
    if !(piv.state.pin.is_blocked() && piv.state.puk.is_blocked()) {
        return Err(Sw::CONDITIONS_NOT_SATISFIED);
    }
    piv.state_mut().reset();
    piv.clear_session();
    Ok(Response::status(Sw::OK))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    fn two(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut v = padded(a);
        v.extend(padded(b));
        v
    }

    #[test]
    fn verify_counts_down_blocks_and_recovers() {
        let (mut piv, mut hw) = fresh();
        let status = apdu(0x20, 0, 0x80, &[]);
        assert_eq!(run(&mut piv, &mut hw, &status).1, 0x63C3);
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x20, 0, 0x80, &padded(b"000000"))).1,
            0x63C2
        );
        assert_eq!(run(&mut piv, &mut hw, &status).1, 0x63C2);
        assert!(piv.take_dirty(), "the counter is persistent");
        verify_default(&mut piv, &mut hw);
        assert_eq!(run(&mut piv, &mut hw, &status).1, 0x9000);
        assert_eq!(piv.state().pin.remaining, 3);

        // Un-verify.
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x20, 0xFF, 0x80, &[])).1,
            0x9000
        );
        assert_eq!(run(&mut piv, &mut hw, &status).1, 0x63C3);

        for left in [2, 1, 0] {
            let sw = run(&mut piv, &mut hw, &apdu(0x20, 0, 0x80, &padded(b"999999"))).1;
            assert_eq!(sw, 0x63C0 | left);
        }
        assert_eq!(run(&mut piv, &mut hw, &status).1, 0x6983);
        let sw = run(&mut piv, &mut hw, &apdu(0x20, 0, 0x80, &padded(b"123456"))).1;
        assert_eq!(sw, 0x6983, "a blocked PIN stays blocked even when right");
        assert!(!piv.session().pin_verified);

        // Wrong format.
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x20, 0, 0x80, b"1234")).1,
            0x6A80
        );
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x20, 0, 0x81, &padded(b"123456"))).1,
            0x6A86
        );
    }

    #[test]
    fn wrong_pin_clears_an_earlier_verification() {
        let (mut piv, mut hw) = fresh();
        verify_default(&mut piv, &mut hw);
        run(&mut piv, &mut hw, &apdu(0x20, 0, 0x80, &padded(b"000000")));
        assert!(!piv.session().pin_verified);
    }

    #[test]
    fn change_pin_and_puk() {
        let (mut piv, mut hw) = fresh();
        let sw = run(
            &mut piv,
            &mut hw,
            &apdu(0x24, 0, 0x80, &two(b"123456", b"654321")),
        )
        .1;
        assert_eq!(sw, 0x9000);
        assert_eq!(piv.state().pin.value, b"654321");
        let sw = run(
            &mut piv,
            &mut hw,
            &apdu(0x24, 0, 0x80, &two(b"123456", b"111111")),
        )
        .1;
        assert_eq!(sw, 0x63C2);
        let sw = run(
            &mut piv,
            &mut hw,
            &apdu(0x24, 0, 0x80, &two(b"654321", b"12")),
        )
        .1;
        assert_eq!(sw, 0x6A80, "too short");
        assert_eq!(piv.state().pin.remaining, 2, "a format error costs no try");

        let sw = run(
            &mut piv,
            &mut hw,
            &apdu(0x24, 0, 0x81, &two(b"12345678", b"87654321")),
        )
        .1;
        assert_eq!(sw, 0x9000);
        assert_eq!(piv.state().puk.value, b"87654321");
        assert_eq!(
            run(&mut piv, &mut hw, &apdu(0x24, 0, 0x82, &two(b"1", b"2"))).1,
            0x6A86
        );
    }

    #[test]
    fn unblock_with_puk() {
        let (mut piv, mut hw) = fresh();
        for _ in 0..3 {
            run(&mut piv, &mut hw, &apdu(0x20, 0, 0x80, &padded(b"000000")));
        }
        assert!(piv.state().pin.is_blocked());
        let sw = run(
            &mut piv,
            &mut hw,
            &apdu(0x2C, 0, 0x80, &two(b"00000000", b"222222")),
        )
        .1;
        assert_eq!(sw, 0x63C2);
        let sw = run(
            &mut piv,
            &mut hw,
            &apdu(0x2C, 0, 0x80, &two(b"12345678", b"222222")),
        )
        .1;
        assert_eq!(sw, 0x9000);
        assert_eq!(piv.state().pin.remaining, 3);
        assert_eq!(piv.state().puk.remaining, 3);
        let sw = run(&mut piv, &mut hw, &apdu(0x20, 0, 0x80, &padded(b"222222"))).1;
        assert_eq!(sw, 0x9000);
    }

    #[test]
    fn set_retries_needs_mgmt_and_pin_and_resets_values() {
        let (mut piv, mut hw) = fresh();
        let set = apdu(0xFA, 5, 6, &[]);
        assert_eq!(run(&mut piv, &mut hw, &set).1, 0x6982);
        auth_default(&mut piv, &mut hw);
        assert_eq!(run(&mut piv, &mut hw, &set).1, 0x6982, "PIN not verified");
        run(
            &mut piv,
            &mut hw,
            &apdu(0x24, 0, 0x80, &two(b"123456", b"777777")),
        );
        let sw = run(&mut piv, &mut hw, &apdu(0x20, 0, 0x80, &padded(b"777777"))).1;
        assert_eq!(sw, 0x9000);
        assert_eq!(run(&mut piv, &mut hw, &set).1, 0x9000);
        assert_eq!(
            (piv.state().pin.remaining, piv.state().puk.remaining),
            (5, 6)
        );
        assert_eq!(piv.state().pin.value, b"123456");
    }

    #[test]
    fn reset_only_when_both_blocked() {
        let (mut piv, mut hw) = fresh();
        let reset = apdu(0xFB, 0, 0, &[]);
        assert_eq!(run(&mut piv, &mut hw, &reset).1, 0x6985);
        for _ in 0..3 {
            run(&mut piv, &mut hw, &apdu(0x20, 0, 0x80, &padded(b"000000")));
            run(
                &mut piv,
                &mut hw,
                &apdu(0x24, 0, 0x81, &two(b"00000000", b"11111111")),
            );
        }
        assert_eq!(run(&mut piv, &mut hw, &reset).1, 0x9000);
        assert_eq!(piv.state().pin.remaining, 3);
        verify_default(&mut piv, &mut hw);
    }
}
