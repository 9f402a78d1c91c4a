//! The card as the reader sees it: ATR, power and reset, applet selection,
//! command chaining and response chaining, around the [`Piv`] applet.
//!
//! - SELECT (`00 A4 04 00 <AID>`) picks an applet: PIV; the YubiKey OTP applet
//!   (only its "read serial" command, which hosts use on YubiKey 4); or the
//!   management applet (selectable, nothing more — the `yubikey` crate selects
//!   it to drop a PIV session). Any successful SELECT starts a fresh PIV
//!   session: PIN verification and management-key authentication are gone.
//! - Command chaining: a command with CLA bit `0x10` is buffered and answered
//!   `9000`; the first command without the bit completes it. The chunks must
//!   agree on INS P1 P2, or the chain is dropped with `6883`.
//! - Response chaining: a response longer than the host's Le (256 bytes for a
//!   short APDU without Le) is cut; the host fetches the rest with GET
//!   RESPONSE (`00 C0 00 00 Le`), guided by `61xx`. Any other command drops
//!   the rest.
//! - Power off, power on and reset clear all of the above, as on a real card.

use crate::apdu::{Command, Response, Sw};
use crate::hardware::Hardware;
use crate::piv::{self, Piv};
use crate::state::CardState;

/// A YubiKey 5's ATR (T=1); OpenSC recognises the card as a YubiKey by it.
pub const ATR: [u8; 23] = [
    0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57, 0x59,
    0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40,
];

/// AID of the YubiKey OTP applet.
pub const OTP_AID: [u8; 8] = [0xA0, 0x00, 0x00, 0x05, 0x27, 0x20, 0x01, 0x01];
/// AID of the YubiKey management applet.
pub const MGMT_AID: [u8; 8] = [0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17];

/// INS of SELECT.
const SELECT: u8 = 0xA4;
/// INS of GET RESPONSE.
const GET_RESPONSE: u8 = 0xC0;
/// The most command data a chain may accumulate.
const MAX_CHAIN: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applet {
    Piv,
    Otp,
    Management,
}

#[derive(Debug)]
struct Chain {
    header: (u8, u8, u8),
    data: Vec<u8>,
}

/// A virtual YubiKey: the PIV applet plus the transport-level behaviour.
#[derive(Debug)]
pub struct Card {
    piv: Piv,
    selected: Option<Applet>,
    chain: Option<Chain>,
    pending: Vec<u8>,
}

impl Card {
    /// A card with the given persistent state, powered and unselected.
    pub fn new(state: CardState) -> Self {
        Card {
            piv: Piv::new(state),
            selected: None,
            chain: None,
            pending: Vec::new(),
        }
    }

    /// The ATR.
    pub fn atr(&self) -> &'static [u8] {
        &ATR
    }

    /// The PIV applet (for its state and session).
    pub fn piv(&self) -> &Piv {
        &self.piv
    }

    /// Whether the persistent state changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        self.piv.take_dirty()
    }

    /// Power off, power on or warm reset: forget everything volatile.
    pub fn reset(&mut self) {
        self.piv.clear_session();
        self.selected = None;
        self.chain = None;
        self.pending.clear();
    }

    /// Processes one command APDU and returns the response APDU bytes.
    pub fn process(&mut self, apdu: &[u8], hw: &mut dyn Hardware) -> Vec<u8> {
        let response = match Command::parse(apdu) {
            Ok(cmd) => self.process_command(&cmd, hw),
            Err(_) => Response::status(Sw::WRONG_LENGTH),
        };
        response.to_bytes()
    }

    fn process_command(&mut self, cmd: &Command<'_>, hw: &mut dyn Hardware) -> Response {
        if cmd.cla & !Command::CHAINING_BIT != 0 {
            return Sw::CLA_NOT_SUPPORTED.into();
        }
        if cmd.ins == GET_RESPONSE && !cmd.is_chained() {
            if self.pending.is_empty() {
                return Sw::CONDITIONS_NOT_SATISFIED.into();
            }
            let rest = std::mem::take(&mut self.pending);
            return self.chunk(rest, cmd.max_response_len());
        }
        self.pending.clear();

        let header = (cmd.ins, cmd.p1, cmd.p2);
        if cmd.is_chained() {
            let chain = match self.chain.take() {
                Some(c) if c.header == header => c,
                _ => Chain {
                    header,
                    data: Vec::new(),
                },
            };
            if chain.data.len() + cmd.data.len() > MAX_CHAIN {
                return Sw::WRONG_LENGTH.into();
            }
            let mut chain = chain;
            chain.data.extend_from_slice(cmd.data);
            self.chain = Some(chain);
            return Sw::OK.into();
        }
        let data = match self.chain.take() {
            None => None,
            Some(c) if c.header == header => {
                let mut all = c.data;
                all.extend_from_slice(cmd.data);
                Some(all)
            }
            Some(_) => return Sw::LAST_COMMAND_EXPECTED.into(),
        };
        let full = Command {
            cla: 0,
            data: data.as_deref().unwrap_or(cmd.data),
            ..cmd.clone()
        };
        let response = self.dispatch(&full, hw);
        if response.sw == Sw::OK {
            self.chunk(response.data, cmd.max_response_len())
        } else {
            response
        }
    }

    /// Sends at most `max` bytes now and keeps the rest for GET RESPONSE.
    fn chunk(&mut self, mut data: Vec<u8>, max: usize) -> Response {
        if data.len() <= max {
            return Response::ok(data);
        }
        self.pending = data.split_off(max);
        Response {
            data,
            sw: Sw::bytes_remaining(self.pending.len()),
        }
    }

    fn dispatch(&mut self, cmd: &Command<'_>, hw: &mut dyn Hardware) -> Response {
        if cmd.ins == SELECT {
            return self.select(cmd);
        }
        match self.selected {
            Some(Applet::Piv) => self.piv.process(cmd, hw),
            Some(Applet::Otp) if (cmd.ins, cmd.p1) == (0x01, 0x10) => {
                Response::ok(self.piv.state().serial.to_be_bytes().to_vec())
            }
            _ => Sw::INS_NOT_SUPPORTED.into(),
        }
    }

    fn select(&mut self, cmd: &Command<'_>) -> Response {
        if cmd.p1 != 0x04 {
            return Sw::INCORRECT_P1P2.into();
        }
        let aid = cmd.data;
        let is = |full: &[u8], min: usize| aid.len() >= min && full.starts_with(aid);
        let version = self.piv.state().version;
        let (applet, reply) = if is(&piv::AID, 5) {
            // Application property template: AID `00 00 10 00 01 00` and the
            // coexistent tag allocation authority (the PIV AID).
            let reply = vec![
                0x61, 0x11, 0x4F, 0x06, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x79, 0x07, 0x4F, 0x05,
                0xA0, 0x00, 0x00, 0x03, 0x08,
            ];
            (Applet::Piv, reply)
        } else if is(&OTP_AID, 7) {
            // Version, programming sequence, touch level.
            let mut reply = version.to_bytes().to_vec();
            reply.extend_from_slice(&[0, 0, 0]);
            (Applet::Otp, reply)
        } else if is(&MGMT_AID, 8) {
            (Applet::Management, version.to_string().into_bytes())
        } else {
            return Sw::NOT_FOUND.into();
        };
        self.selected = Some(applet);
        self.piv.clear_session();
        Response::ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::piv::testing::{FakeHardware, padded};
    use crate::state::{FactoryOptions, Version};

    fn card() -> (Card, FakeHardware) {
        let state = CardState::factory(&FactoryOptions::default());
        (Card::new(state), FakeHardware::default())
    }

    fn hx(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn sw(resp: &[u8]) -> u16 {
        u16::from_be_bytes([resp[resp.len() - 2], resp[resp.len() - 1]])
    }

    const SELECT_PIV: &str = "00 A4 04 00 05 A0 00 00 03 08";

    #[test]
    fn select_then_version_as_the_yubikey_crate_does() {
        let (mut card, mut hw) = card();
        assert_eq!(
            sw(&card.process(&hx("00 FD 00 00 00"), &mut hw)),
            0x6D00,
            "nothing selected"
        );
        let resp = card.process(&hx(SELECT_PIV), &mut hw);
        assert_eq!(
            resp,
            hx("61 11 4F 06 00 00 10 00 01 00 79 07 4F 05 A0 00 00 03 08 90 00")
        );
        assert_eq!(
            card.process(&hx("00 FD 00 00 00"), &mut hw),
            hx("05 04 03 90 00")
        );
        assert_eq!(
            card.process(&hx("00 F8 00 00 00"), &mut hw),
            hx("00 98 96 81 90 00")
        );
        // The full AID works too; an unknown one does not and keeps the selection.
        let full = "00 A4 04 00 0B A0 00 00 03 08 00 00 10 00 01 00";
        assert_eq!(sw(&card.process(&hx(full), &mut hw)), 0x9000);
        assert_eq!(
            sw(&card.process(&hx("00 A4 04 00 03 A0 00 00"), &mut hw)),
            0x6A82
        );
        assert_eq!(sw(&card.process(&hx("00 FD 00 00"), &mut hw)), 0x9000);
        assert_eq!(sw(&card.process(&hx("80 FD 00 00"), &mut hw)), 0x6E00);
        assert_eq!(sw(&card.process(&hx("00 FD"), &mut hw)), 0x6700);
    }

    #[test]
    fn select_and_reset_clear_the_pin() {
        let (mut card, mut hw) = card();
        card.process(&hx(SELECT_PIV), &mut hw);
        let mut verify = hx("00 20 00 80 08");
        verify.extend(padded(b"123456"));
        assert_eq!(sw(&card.process(&verify, &mut hw)), 0x9000);
        assert_eq!(sw(&card.process(&hx("00 20 00 80 00"), &mut hw)), 0x9000);
        card.process(&hx(SELECT_PIV), &mut hw);
        assert_eq!(sw(&card.process(&hx("00 20 00 80 00"), &mut hw)), 0x63C3);

        assert_eq!(sw(&card.process(&verify, &mut hw)), 0x9000);
        card.reset();
        card.process(&hx(SELECT_PIV), &mut hw);
        assert_eq!(sw(&card.process(&hx("00 20 00 80 00"), &mut hw)), 0x63C3);
        assert!(!card.piv().session().pin_verified);
    }

    #[test]
    fn yubikey4_serial_via_otp_applet() {
        let state = CardState::factory(&FactoryOptions {
            version: Version(4, 3, 7),
            serial: 0x01020304,
            ..FactoryOptions::default()
        });
        let (mut card, mut hw) = (Card::new(state), FakeHardware::default());
        let resp = card.process(&hx("00 A4 04 00 07 A0 00 00 05 27 20 01"), &mut hw);
        assert_eq!(sw(&resp), 0x9000);
        assert_eq!(
            card.process(&hx("00 01 10 00"), &mut hw),
            hx("01 02 03 04 90 00")
        );
        let resp = card.process(&hx("00 A4 04 00 08 A0 00 00 05 27 47 11 17"), &mut hw);
        assert_eq!(resp, b"4.3.7\x90\x00".to_vec());
    }

    /// PUT DATA of a 600-byte object in three chunks, then GET DATA back in
    /// three pieces, the way the yubikey crate does it.
    #[test]
    fn command_and_response_chaining() {
        let (mut card, mut hw) = card();
        card.process(&hx(SELECT_PIV), &mut hw);
        authenticate(&mut card, &mut hw);

        let value: Vec<u8> = (0..600u32).map(|i| (i % 251) as u8).collect();
        let mut body = hx("5C 03 5F C1 05");
        crate::tlv::write(&mut body, 0x53, &value);
        let chunks: Vec<&[u8]> = body.chunks(255).collect();
        assert_eq!(chunks.len(), 3);
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i == chunks.len() - 1;
            let mut apdu = vec![if last { 0x00 } else { 0x10 }, 0xDB, 0x3F, 0xFF];
            apdu.push(chunk.len() as u8);
            apdu.extend_from_slice(chunk);
            assert_eq!(sw(&card.process(&apdu, &mut hw)), 0x9000);
        }

        let mut got = Vec::new();
        let mut resp = card.process(&hx("00 CB 3F FF 05 5C 03 5F C1 05"), &mut hw);
        while sw(&resp) & 0xFF00 == 0x6100 {
            got.extend_from_slice(&resp[..resp.len() - 2]);
            resp = card.process(&hx("00 C0 00 00 00"), &mut hw);
        }
        assert_eq!(sw(&resp), 0x9000);
        got.extend_from_slice(&resp[..resp.len() - 2]);
        assert_eq!(crate::tlv::parse_single(&got, 0x53).unwrap(), &value[..]);

        // Le limits the chunk, and any other command drops the rest.
        let resp = card.process(&hx("00 CB 3F FF 05 5C 03 5F C1 05 10"), &mut hw);
        assert_eq!((resp.len(), sw(&resp)), (0x12, 0x6100));
        card.process(&hx("00 FD 00 00"), &mut hw);
        assert_eq!(sw(&card.process(&hx("00 C0 00 00 00"), &mut hw)), 0x6985);
    }

    #[test]
    fn interrupted_chain_is_refused() {
        let (mut card, mut hw) = card();
        card.process(&hx(SELECT_PIV), &mut hw);
        assert_eq!(
            sw(&card.process(&hx("10 DB 3F FF 02 5C 03"), &mut hw)),
            0x9000
        );
        assert_eq!(sw(&card.process(&hx("00 FD 00 00"), &mut hw)), 0x6883);
        assert_eq!(sw(&card.process(&hx("00 FD 00 00"), &mut hw)), 0x9000);
    }

    fn authenticate(card: &mut Card, hw: &mut FakeHardware) {
        use crate::crypto::MgmtAlgorithm;
        let key = crate::state::DEFAULT_MGMT_KEY;
        let resp = card.process(&hx("00 87 03 9B 04 7C 02 80 00"), hw);
        let witness = MgmtAlgorithm::Tdes.decrypt(&key, &resp[4..12]).unwrap();
        let mut apdu = hx("00 87 03 9B 16 7C 14 80 08");
        apdu.extend(witness);
        apdu.extend(hx("81 08 01 02 03 04 05 06 07 08"));
        assert_eq!(sw(&card.process(&apdu, hw)), 0x9000);
    }
}
