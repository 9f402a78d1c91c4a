//! The whole virtual card (`card::Card` and the PIV applet behind it) fed
//! arbitrary sequences of APDUs, resets, clock steps and touches, on
//! scripted hardware (no sleeps, counter "randomness").
//!
//! Input: `firmware ops…`. The first byte picks the firmware (before 5.3,
//! 5.4 with 3DES, 5.7 with AES-192). Each op is one byte and its operands:
//! - raw APDU (length byte, bytes) — the parser and every error path;
//! - well-formed short APDU with an INS the card implements (so the fuzzer
//!   reaches the handlers quickly), optionally chained (CLA 10);
//! - GET RESPONSE; SELECT of PIV, OTP or management; power cycle;
//! - management-key authentication done right (the harness knows the key and
//!   decrypts the witness), or VERIFY with the right PIN: so key generation,
//!   import, signing, ECDH, PUT DATA, SET MANAGEMENT KEY, SET PIN RETRIES and
//!   RESET get exercised behind their authentication;
//! - hardware: advance the clock, queue a touch or a missed touch.
//!
//! Mode bit 7 of the first byte instead feeds the rest as a vpcd socket stream
//! (`vpcd::serve`: length-prefixed control codes and APDUs).
//!
//! Checks, after every APDU: no panic; the response has a status word, one
//! the card is documented to use; only 9000 and 61xx carry data, never more
//! than the command's Le allows; a 61xx is followed by the rest on GET
//! RESPONSE; unparsable APDUs get 6700. After every change of the persistent
//! state: PIN/PUK counters within their retry counts, PIN/PUK 6–8 bytes, the
//! management key the length of its algorithm, every stored private key a
//! valid P-256 scalar, every object within the size limit; and the JSON state
//! file round-trips.
#![no_main]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Duration;

use keyward_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;
use virtual_yubikey::apdu::Command;
use virtual_yubikey::card::{Card, MGMT_AID, OTP_AID};
use virtual_yubikey::hardware::Hardware;
use virtual_yubikey::piv::{AID, ins};
use virtual_yubikey::state::{CardState, FactoryOptions, Version};
use virtual_yubikey::vpcd;

#[derive(Default)]
struct FuzzHardware {
    now: Duration,
    counter: u8,
    touches: VecDeque<bool>,
}

impl Hardware for FuzzHardware {
    fn now(&self) -> Duration {
        self.now
    }
    fn fill_random(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.counter = self.counter.wrapping_add(0x3B);
            *b = self.counter;
        }
    }
    fn wait_for_touch(&mut self) -> bool {
        self.touches.pop_front().unwrap_or(false)
    }
}

const KNOWN_SW: [u16; 13] = [
    0x9000, 0x6700, 0x6883, 0x6982, 0x6983, 0x6985, 0x6A80, 0x6A82, 0x6A84, 0x6A86, 0x6A88, 0x6D00,
    0x6E00,
];

const INS: [u8; 18] = [
    ins::VERIFY,
    ins::CHANGE_REFERENCE,
    ins::RESET_RETRY,
    ins::GENERATE,
    ins::AUTHENTICATE,
    ins::GET_DATA,
    ins::PUT_DATA,
    ins::GET_METADATA,
    ins::GET_SERIAL,
    ins::ATTEST,
    ins::SET_PIN_RETRIES,
    ins::RESET,
    ins::GET_VERSION,
    ins::IMPORT_KEY,
    ins::SET_MGMT_KEY,
    0xA4, // SELECT
    0xC0, // GET RESPONSE
    0x01, // OTP serial
];

struct Harness {
    card: Card,
    hw: FuzzHardware,
    /// Whether a 61xx said bytes are waiting for GET RESPONSE.
    pending: bool,
}

fn sw_of(resp: &[u8]) -> u16 {
    u16::from_be_bytes([resp[resp.len() - 2], resp[resp.len() - 1]])
}

impl Harness {
    fn apdu(&mut self, apdu: &[u8]) -> Vec<u8> {
        let resp = self.card.process(apdu, &mut self.hw);
        assert!(resp.len() >= 2, "no status word");
        let sw = sw_of(&resp);
        let data_len = resp.len() - 2;
        match Command::parse(apdu) {
            Err(_) => assert_eq!(resp, [0x67, 0x00], "unparsable APDU"),
            Ok(cmd) => {
                let is_more = sw & 0xFF00 == 0x6100;
                if sw == 0x9000 || is_more {
                    assert!(data_len <= cmd.max_response_len(), "response over Le");
                } else {
                    assert_eq!(data_len, 0, "error {sw:04X} with data");
                    assert!(
                        KNOWN_SW.contains(&sw) || sw & 0xFFF0 == 0x63C0,
                        "unexpected status word {sw:04X}"
                    );
                }
                if is_more {
                    assert_eq!(data_len, cmd.max_response_len(), "61xx before Le is full");
                }
                // A command the card refuses for its class leaves waiting bytes waiting.
                if cmd.cla & !Command::CHAINING_BIT == 0 {
                    self.pending = is_more;
                }
            }
        }
        if self.card.take_dirty() {
            check_state(self.card.piv().state());
        }
        resp
    }

    /// Management-key authentication (mutual), done right.
    fn authenticate(&mut self) {
        let mgmt = self.card.piv().state().mgmt.clone();
        let alg = mgmt.algorithm;
        let n = alg.block_len();
        let p1 = alg.to_byte();
        let resp = self.apdu(&[0, ins::AUTHENTICATE, p1, 0x9B, 4, 0x7C, 2, 0x80, 0]);
        if sw_of(&resp) != 0x9000 || resp.len() != 2 + 4 + n {
            return;
        }
        let Some(witness) = alg.decrypt(&mgmt.key, &resp[4..4 + n]) else {
            return;
        };
        let mut inner = vec![0x80, n as u8];
        inner.extend(&witness);
        inner.extend([0x81, n as u8]);
        inner.extend(std::iter::repeat_n(0x77, n));
        let mut apdu = vec![0, ins::AUTHENTICATE, p1, 0x9B, (inner.len() + 2) as u8];
        apdu.extend([0x7C, inner.len() as u8]);
        apdu.extend(inner);
        let resp = self.apdu(&apdu);
        if sw_of(&resp) == 0x9000 {
            let expect = alg.encrypt(&mgmt.key, &[0x77; 16][..n]).expect("block");
            assert!(resp[4..4 + n] == expect[..], "wrong host-challenge answer");
            assert!(self.card.piv().session().mgmt_authenticated);
        }
    }

    fn verify_pin(&mut self) {
        let mut pin = self.card.piv().state().pin.value.clone();
        pin.resize(8, 0xFF);
        let mut apdu = vec![0, ins::VERIFY, 0, 0x80, 8];
        apdu.extend(pin);
        self.apdu(&apdu);
    }
}

fn check_state(s: &CardState) {
    for secret in [&s.pin, &s.puk] {
        assert!(secret.remaining <= secret.retries, "{secret:?}");
        assert!((6..=8).contains(&secret.value.len()));
    }
    assert_eq!(s.mgmt.key.len(), s.mgmt.algorithm.key_len());
    for (slot, key) in &s.keys {
        assert!(
            key.ec_key().is_some(),
            "slot {slot:02X} holds an invalid key"
        );
    }
    for (tag, value) in &s.objects {
        assert!(!value.is_empty() && value.len() <= 3063, "object {tag:06X}");
    }
    let json = serde_json::to_string(s).expect("state serialises");
    let back: CardState = serde_json::from_str(&json).expect("state deserialises");
    assert_eq!(serde_json::to_string(&back).expect("again"), json);
}

/// A vpcd socket: reads from the fuzz input, writes are kept.
struct Socket<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn firmware(b: u8) -> Version {
    match b % 3 {
        0 => Version(5, 2, 7),
        1 => Version(5, 4, 3),
        _ => Version(5, 7, 1),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes::new(data);
    let first = b.u8();
    let state = CardState::factory(&FactoryOptions {
        version: firmware(first),
        ..FactoryOptions::default()
    });
    let mut h = Harness {
        card: Card::new(state),
        hw: FuzzHardware::default(),
        pending: false,
    };

    if first & 0x80 != 0 {
        let mut socket = Socket {
            input: b.rest(),
            output: Vec::new(),
        };
        let mut commands = 0usize;
        let r = vpcd::serve(&mut socket, &mut h.card, &mut h.hw, |_| {
            commands += 1;
            Ok(())
        });
        // Every answer is a well-formed message with a status word or the ATR.
        let mut out = &socket.output[..];
        let mut answers = 0usize;
        while let Some(msg) = vpcd::read_message(&mut out).expect("well-formed output") {
            assert!(msg.len() >= 2);
            answers += 1;
        }
        assert!(answers >= commands);
        // Only a stream cut inside a message is an error.
        if let Err(e) = r {
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        }
        return;
    }

    let mut ops = 0;
    while !b.is_empty() && ops < 64 {
        ops += 1;
        let op = b.u8();
        match op % 12 {
            0..=2 => {
                let len = usize::from(b.u8());
                let apdu = b.take(len).to_vec();
                h.apdu(&apdu);
            }
            3..=5 => {
                let cla = if op & 0x80 != 0 { 0x10 } else { 0 };
                let ins = INS[usize::from(b.u8()) % INS.len()];
                let (p1, p2) = (b.u8(), b.u8());
                let len = usize::from(b.u8());
                let data = b.take(len).to_vec();
                let mut apdu = vec![cla, ins, p1, p2];
                if !data.is_empty() {
                    apdu.push(data.len() as u8);
                    apdu.extend(data);
                }
                if op & 0x40 != 0 {
                    apdu.push(b.u8());
                }
                h.apdu(&apdu);
            }
            6 => {
                let was_pending = h.pending;
                let resp = h.apdu(&[0, 0xC0, 0, 0, b.u8()]);
                if !was_pending {
                    assert_eq!(sw_of(&resp), 0x6985, "GET RESPONSE with nothing waiting");
                }
            }
            7 => {
                let aid: &[u8] = match b.u8() % 4 {
                    0 => &AID[..5],
                    1 => &AID,
                    2 => &OTP_AID,
                    _ => &MGMT_AID,
                };
                let mut apdu = vec![0, 0xA4, 4, 0, aid.len() as u8];
                apdu.extend(aid);
                h.apdu(&apdu);
            }
            8 => {
                h.card.reset();
                h.pending = false;
            }
            9 => h.authenticate(),
            10 => h.verify_pin(),
            _ => {
                let x = b.u8();
                match x % 3 {
                    0 => h.hw.now += Duration::from_secs(u64::from(x)),
                    1 => h.hw.touches.push_back(true),
                    _ => h.hw.touches.push_back(false),
                }
            }
        }
    }
});
