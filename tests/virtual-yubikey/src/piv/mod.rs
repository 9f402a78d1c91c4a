//! The PIV applet: Yubico's PIV with the YubiKey extensions, as far as hosts
//! use it (see the crate docs for the list).
//!
//! [`Piv::process`] takes one complete command (chaining is undone by
//! [`crate::card`]) and returns one complete response (split by the card when
//! it is too long). It is pure: the persistent [`CardState`], the volatile
//! [`Session`], and a [`Hardware`] for time, randomness and touch.
//!
//! One submodule per concern, each a few `fn(&mut Piv, &Command, ..) -> Reply`:
//! - `pin`: VERIFY, CHANGE REFERENCE, RESET RETRY, SET PIN RETRIES, RESET;
//! - `mgmt`: management-key AUTHENTICATE and SET MANAGEMENT KEY;
//! - `keys`: GENERATE, IMPORT, sign/ECDH AUTHENTICATE, GET METADATA;
//! - `objects`: GET DATA and PUT DATA.

mod keys;
mod mgmt;
mod objects;
mod pin;

use std::time::Duration;

use crate::apdu::{Command, Response, Sw};
use crate::hardware::{Hardware, TOUCH_CACHE};
use crate::state::{CardState, PinPolicy, TouchPolicy};

/// The PIV application identifier (a host may select any prefix of the full
/// `A0 00 00 03 08 00 00 10 00 01 00` of at least these five bytes).
pub const AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];

/// Instruction bytes of the PIV applet (NIST SP 800-73-4 and Yubico's extensions).
pub mod ins {
    /// VERIFY (PIN).
    pub const VERIFY: u8 = 0x20;
    /// CHANGE REFERENCE DATA (PIN or PUK).
    pub const CHANGE_REFERENCE: u8 = 0x24;
    /// RESET RETRY COUNTER (unblock the PIN with the PUK).
    pub const RESET_RETRY: u8 = 0x2C;
    /// GENERATE ASYMMETRIC KEY PAIR.
    pub const GENERATE: u8 = 0x47;
    /// GENERAL AUTHENTICATE (management key, sign, ECDH).
    pub const AUTHENTICATE: u8 = 0x87;
    /// GET DATA.
    pub const GET_DATA: u8 = 0xCB;
    /// PUT DATA.
    pub const PUT_DATA: u8 = 0xDB;
    /// Yubico: GET METADATA (firmware 5.3+).
    pub const GET_METADATA: u8 = 0xF7;
    /// Yubico: GET SERIAL (firmware 5+).
    pub const GET_SERIAL: u8 = 0xF8;
    /// Yubico: ATTEST (not implemented: answered with `6D00`).
    pub const ATTEST: u8 = 0xF9;
    /// Yubico: SET PIN RETRIES.
    pub const SET_PIN_RETRIES: u8 = 0xFA;
    /// Yubico: RESET the applet (PIN and PUK both blocked).
    pub const RESET: u8 = 0xFB;
    /// Yubico: GET VERSION.
    pub const GET_VERSION: u8 = 0xFD;
    /// Yubico: IMPORT ASYMMETRIC KEY.
    pub const IMPORT_KEY: u8 = 0xFE;
    /// Yubico: SET MANAGEMENT KEY.
    pub const SET_MGMT_KEY: u8 = 0xFF;
}

/// What a handler returns: a response, or an error status word (so `?` works).
type Reply = Result<Response, Sw>;

/// The pending step of a management-key authentication.
#[derive(Clone, PartialEq, Eq)]
enum MgmtPending {
    /// Mutual: we sent E(witness); the host must send the witness back.
    Witness(Vec<u8>),
    /// Single: we sent a challenge; the host must send E(challenge).
    Challenge(Vec<u8>),
}

/// Volatile security state: cleared by SELECT of PIV, by a card reset and by
/// power-off, as on a real card. Nothing here is written to the state file.
#[derive(Default)]
pub struct Session {
    /// The PIN was verified in this session.
    pub pin_verified: bool,
    /// The PIN was verified since the last PIN-policy-"always" operation.
    pub pin_fresh: bool,
    /// The management key was authenticated in this session.
    pub mgmt_authenticated: bool,
    mgmt_pending: Option<MgmtPending>,
    /// When the last touch happened (for the "cached" touch policy).
    last_touch: Option<Duration>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("pin_verified", &self.pin_verified)
            .field("mgmt_authenticated", &self.mgmt_authenticated)
            .finish_non_exhaustive()
    }
}

/// The PIV applet: persistent state plus the current session.
#[derive(Debug)]
pub struct Piv {
    state: CardState,
    session: Session,
    dirty: bool,
}

impl Piv {
    /// An applet over `state`, with a fresh session.
    pub fn new(state: CardState) -> Self {
        Piv {
            state,
            session: Session::default(),
            dirty: false,
        }
    }

    /// The persistent state.
    pub fn state(&self) -> &CardState {
        &self.state
    }

    /// The volatile session state.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether the persistent state changed since the last call (the card
    /// binary then rewrites the state file).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Forgets the session (SELECT, reset, power-off).
    pub fn clear_session(&mut self) {
        self.session = Session::default();
    }

    /// Mutable access to the persistent state; marks it dirty.
    fn state_mut(&mut self) -> &mut CardState {
        self.dirty = true;
        &mut self.state
    }

    /// Runs one complete command.
    pub fn process(&mut self, cmd: &Command<'_>, hw: &mut dyn Hardware) -> Response {
        // Any command other than the second step of a management-key
        // authentication abandons a pending one.
        let keep_pending = cmd.ins == ins::AUTHENTICATE && cmd.p2 == 0x9B;
        if !keep_pending {
            self.session.mgmt_pending = None;
        }
        let reply = match cmd.ins {
            ins::VERIFY => pin::verify(self, cmd),
            ins::CHANGE_REFERENCE => pin::change_reference(self, cmd),
            ins::RESET_RETRY => pin::reset_retry(self, cmd),
            ins::SET_PIN_RETRIES => pin::set_pin_retries(self, cmd),
            ins::RESET => pin::reset(self, cmd),
            ins::AUTHENTICATE if cmd.p2 == 0x9B => mgmt::authenticate(self, cmd, hw),
            ins::SET_MGMT_KEY => mgmt::set_management_key(self, cmd),
            ins::AUTHENTICATE => keys::authenticate(self, cmd, hw),
            ins::GENERATE => keys::generate(self, cmd, hw),
            ins::IMPORT_KEY => keys::import(self, cmd),
            ins::GET_METADATA => keys::metadata(self, cmd),
            ins::GET_DATA => objects::get_data(self, cmd),
            ins::PUT_DATA => objects::put_data(self, cmd),
            ins::GET_VERSION => Ok(Response::ok(self.state.version.to_bytes().to_vec())),
            ins::GET_SERIAL if self.state.version.0 >= 5 => {
                Ok(Response::ok(self.state.serial.to_be_bytes().to_vec()))
            }
            _ => Err(Sw::INS_NOT_SUPPORTED),
        };
        reply.unwrap_or_else(Response::status)
    }

    /// Requires an authenticated management key.
    fn require_mgmt(&self) -> Result<(), Sw> {
        if self.session.mgmt_authenticated {
            Ok(())
        } else {
            Err(Sw::SECURITY_STATUS)
        }
    }

    /// Enforces a key's PIN policy; an "always" key consumes the verification.
    fn check_pin_policy(&mut self, policy: PinPolicy) -> Result<(), Sw> {
        let ok = match policy {
            PinPolicy::Never => true,
            PinPolicy::Once => self.session.pin_verified,
            PinPolicy::Always => std::mem::take(&mut self.session.pin_fresh),
        };
        if ok { Ok(()) } else { Err(Sw::SECURITY_STATUS) }
    }

    /// Enforces a touch policy: waits for a touch if needed. A real YubiKey
    /// answers `6982` when the touch does not come in time.
    fn check_touch_policy(&mut self, policy: TouchPolicy, hw: &mut dyn Hardware) -> Result<(), Sw> {
        let now = hw.now();
        let cached = self
            .session
            .last_touch
            .is_some_and(|t| now.saturating_sub(t) < TOUCH_CACHE);
        let needed = match policy {
            TouchPolicy::Never => false,
            TouchPolicy::Always => true,
            TouchPolicy::Cached => !cached,
        };
        if !needed {
            return Ok(());
        }
        if hw.wait_for_touch() {
            self.session.last_touch = Some(hw.now());
            Ok(())
        } else {
            Err(Sw::SECURITY_STATUS)
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A scripted [`Hardware`] and helpers for the applet's unit tests.
    use super::*;
    use std::collections::VecDeque;

    /// Scripted hardware: a settable clock, counter-based "randomness", and a
    /// queue of touch outcomes (an empty queue means "no touch").
    #[derive(Default)]
    pub struct FakeHardware {
        pub now: Duration,
        pub counter: u8,
        pub touches: VecDeque<bool>,
        pub touch_waits: usize,
    }

    impl Hardware for FakeHardware {
        fn now(&self) -> Duration {
            self.now
        }
        fn fill_random(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.counter = self.counter.wrapping_add(1);
                *b = self.counter;
            }
        }
        fn wait_for_touch(&mut self) -> bool {
            self.touch_waits += 1;
            self.touches.pop_front().unwrap_or(false)
        }
    }

    /// Runs hex APDU `apdu` on `piv`; returns (data, SW) as hex/u16.
    pub fn run(piv: &mut Piv, hw: &mut FakeHardware, apdu: &[u8]) -> (Vec<u8>, u16) {
        let cmd = Command::parse(apdu).unwrap();
        let r = piv.process(&cmd, hw);
        (r.data, r.sw.0)
    }

    /// Builds a short APDU.
    pub fn apdu(ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, ins, p1, p2];
        if !data.is_empty() {
            v.push(u8::try_from(data.len()).unwrap());
            v.extend_from_slice(data);
        }
        v
    }

    /// The PIN as VERIFY wants it: padded to 8 bytes with FF.
    pub fn padded(pin: &[u8]) -> Vec<u8> {
        let mut v = pin.to_vec();
        v.resize(8, 0xFF);
        v
    }

    /// A fresh card (firmware 5.4.3, 3DES default management key).
    pub fn fresh() -> (Piv, FakeHardware) {
        let state = CardState::factory(&crate::state::FactoryOptions::default());
        (Piv::new(state), FakeHardware::default())
    }

    /// Authenticates with the 3DES default management key (mutual protocol).
    pub fn auth_default(piv: &mut Piv, hw: &mut FakeHardware) {
        let key = crate::state::DEFAULT_MGMT_KEY;
        let alg = crate::crypto::MgmtAlgorithm::Tdes;
        let (data, sw) = run(piv, hw, &apdu(0x87, 0x03, 0x9B, &[0x7C, 0x02, 0x80, 0x00]));
        assert_eq!(sw, 0x9000);
        let witness = alg.decrypt(&key, &data[4..12]).unwrap();
        let challenge = [0xC1; 8];
        let mut body = vec![0x7C, 20, 0x80, 8];
        body.extend_from_slice(&witness);
        body.extend_from_slice(&[0x81, 8]);
        body.extend_from_slice(&challenge);
        let (data, sw) = run(piv, hw, &apdu(0x87, 0x03, 0x9B, &body));
        assert_eq!(sw, 0x9000);
        assert_eq!(data[4..12], alg.encrypt(&key, &challenge).unwrap()[..]);
    }

    /// Verifies the default PIN.
    pub fn verify_default(piv: &mut Piv, hw: &mut FakeHardware) {
        let (_, sw) = run(piv, hw, &apdu(0x20, 0, 0x80, &padded(b"123456")));
        assert_eq!(sw, 0x9000);
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;

    #[test]
    fn version_and_serial() {
        let (mut piv, mut hw) = fresh();
        assert_eq!(
            run(&mut piv, &mut hw, &[0, 0xFD, 0, 0, 0]),
            (vec![5, 4, 3], 0x9000)
        );
        let serial = 10_000_001u32.to_be_bytes().to_vec();
        assert_eq!(
            run(&mut piv, &mut hw, &[0, 0xF8, 0, 0, 0]),
            (serial, 0x9000)
        );
        assert_eq!(run(&mut piv, &mut hw, &[0, 0x99, 0, 0]).1, 0x6D00);
        assert_eq!(
            run(&mut piv, &mut hw, &[0, 0xF9, 0x9A, 0]).1,
            0x6D00,
            "no attestation"
        );
    }

    #[test]
    fn yubikey4_has_no_piv_serial_command() {
        let state = crate::state::CardState::factory(&crate::state::FactoryOptions {
            version: crate::state::Version(4, 3, 7),
            ..Default::default()
        });
        let mut piv = super::Piv::new(state);
        let mut hw = FakeHardware::default();
        assert_eq!(run(&mut piv, &mut hw, &[0, 0xF8, 0, 0]).1, 0x6D00);
    }
}
