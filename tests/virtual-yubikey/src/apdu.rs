//! ISO 7816-4 command and response APDUs: the card's input and output units.
//!
//! A command APDU is `CLA INS P1 P2 [Lc data] [Le]`. Hosts send short APDUs
//! (one-byte Lc/Le, up to 255 data bytes) — the `yubikey` crate and
//! yubico-piv-tool only ever do — but OpenSC may send extended ones (three-byte
//! Lc, two- or three-byte Le) because the YubiKey ATR advertises them, so both
//! forms parse. Bit `0x10` of CLA marks "more of this command follows"
//! (command chaining); the card reassembles those in [`crate::piv`].
//!
//! A response is data followed by the two status bytes SW1 SW2; [`Sw`] names
//! the status words this card uses.

use std::fmt;

/// A status word (SW1 SW2) that ends every response.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sw(pub u16);

impl Sw {
    /// `9000`: success.
    pub const OK: Sw = Sw(0x9000);
    /// `6700`: wrong length (Lc or the data field's size is wrong).
    pub const WRONG_LENGTH: Sw = Sw(0x6700);
    /// `6883`: the last command of a chain was expected.
    pub const LAST_COMMAND_EXPECTED: Sw = Sw(0x6883);
    /// `6982`: security status not satisfied: PIN or management key missing, or
    /// (as a real YubiKey does) the touch did not come in time.
    pub const SECURITY_STATUS: Sw = Sw(0x6982);
    /// `6983`: authentication method blocked (PIN or PUK has no tries left).
    pub const AUTH_BLOCKED: Sw = Sw(0x6983);
    /// `6985`: conditions of use not satisfied.
    pub const CONDITIONS_NOT_SATISFIED: Sw = Sw(0x6985);
    /// `6A80`: incorrect parameters in the data field.
    pub const INCORRECT_DATA: Sw = Sw(0x6A80);
    /// `6A82`: file (data object or application) not found.
    pub const NOT_FOUND: Sw = Sw(0x6A82);
    /// `6A84`: not enough memory.
    pub const NO_SPACE: Sw = Sw(0x6A84);
    /// `6A86`: incorrect P1 or P2.
    pub const INCORRECT_P1P2: Sw = Sw(0x6A86);
    /// `6A88`: referenced data not found (e.g. metadata of an empty slot).
    pub const REFERENCE_NOT_FOUND: Sw = Sw(0x6A88);
    /// `6D00`: instruction not supported.
    pub const INS_NOT_SUPPORTED: Sw = Sw(0x6D00);
    /// `6E00`: class not supported.
    pub const CLA_NOT_SUPPORTED: Sw = Sw(0x6E00);

    /// `63Cx`: verification failed, `x` tries left.
    pub fn tries_left(tries: u8) -> Sw {
        Sw(0x63C0 | u16::from(tries.min(15)))
    }

    /// `61xx`: `xx` more bytes are waiting for GET RESPONSE (`00` = 256 or more).
    pub fn bytes_remaining(remaining: usize) -> Sw {
        // ISO 7816-4: SW2 = 00 means "256 or more".
        Sw(0x6100
            | u16::try_from(remaining)
                .ok()
                .filter(|n| *n < 256)
                .unwrap_or(0))
    }

    /// The two bytes as sent on the wire.
    pub fn to_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
}

impl fmt::Debug for Sw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sw({:04X})", self.0)
    }
}

/// A parsed command APDU. The data field is borrowed from the input.
#[derive(Clone, PartialEq, Eq)]
pub struct Command<'a> {
    /// Class byte (`0x10` set = command chaining, more to come).
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// First parameter.
    pub p1: u8,
    /// Second parameter.
    pub p2: u8,
    /// Command data (empty if there is none).
    pub data: &'a [u8],
    /// Expected response length: `None` if absent; `Some(0)` means "maximum"
    /// (256 for short APDUs, 65536 for extended ones).
    pub le: Option<usize>,
    /// Whether the APDU used the extended-length encoding.
    pub extended: bool,
}

// Command data can hold PINs and keys: show only its length.
impl fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Command {{ cla: {:02X}, ins: {:02X}, p1: {:02X}, p2: {:02X}, lc: {}, le: {:?} }}",
            self.cla,
            self.ins,
            self.p1,
            self.p2,
            self.data.len(),
            self.le
        )
    }
}

/// Why a byte string is not a command APDU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer than the four header bytes.
    #[error("APDU shorter than its 4-byte header")]
    TooShort,
    /// Lc/Le do not match the number of bytes present.
    #[error("APDU length fields do not match its size")]
    BadLength,
}

impl<'a> Command<'a> {
    /// The CLA bit that marks a chained (non-final) command.
    pub const CHAINING_BIT: u8 = 0x10;

    /// Parses a command APDU (ISO 7816-4 §5.1, cases 1 to 4, short and extended).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let [cla, ins, p1, p2, body @ ..] = bytes else {
            return Err(ParseError::TooShort);
        };
        let (data, le, extended): (&[u8], Option<usize>, bool) = match body {
            // Case 1: header only.
            [] => (&[], None, false),
            // Case 2 short: Le only.
            [le] => (&[], Some(usize::from(*le)), false),
            // Extended encodings start with a zero byte followed by two length bytes.
            [0, hi, lo, rest @ ..] if !rest.is_empty() || body.len() == 3 => {
                let n = usize::from(u16::from_be_bytes([*hi, *lo]));
                if rest.is_empty() {
                    // Case 2 extended: 00 Le1 Le2.
                    (&[], Some(n), true)
                } else if n == 0 {
                    return Err(ParseError::BadLength);
                } else if rest.len() == n {
                    // Case 3 extended.
                    (rest, None, true)
                } else if rest.len() == n + 2 {
                    // Case 4 extended: data then a two-byte Le.
                    let (data, le) = rest.split_at(n);
                    let le = usize::from(u16::from_be_bytes([le[0], le[1]]));
                    (data, Some(le), true)
                } else {
                    return Err(ParseError::BadLength);
                }
            }
            [lc, rest @ ..] => {
                let n = usize::from(*lc);
                if n == 0 {
                    return Err(ParseError::BadLength);
                } else if rest.len() == n {
                    // Case 3 short.
                    (rest, None, false)
                } else if rest.len() == n + 1 {
                    // Case 4 short.
                    let (data, le) = rest.split_at(n);
                    (data, Some(usize::from(le[0])), false)
                } else {
                    return Err(ParseError::BadLength);
                }
            }
        };
        Ok(Command {
            cla: *cla,
            ins: *ins,
            p1: *p1,
            p2: *p2,
            data,
            le,
            extended,
        })
    }

    /// Whether more chunks of this command follow (CLA bit `0x10`).
    pub fn is_chained(&self) -> bool {
        self.cla & Self::CHAINING_BIT != 0
    }

    /// The largest response chunk the host accepts for this command.
    pub fn max_response_len(&self) -> usize {
        match (self.le, self.extended) {
            (Some(0), true) => 65536,
            (Some(0), false) | (None, _) => 256,
            (Some(n), _) => n,
        }
    }
}

/// A response: data and a status word.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// Response data (may be empty).
    pub data: Vec<u8>,
    /// The status word.
    pub sw: Sw,
}

// Response data can hold secrets (ECDH results): show only its length.
impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Response {{ len: {}, sw: {:?} }}",
            self.data.len(),
            self.sw
        )
    }
}

impl Response {
    /// A response with data and `9000`.
    pub fn ok(data: Vec<u8>) -> Self {
        Response { data, sw: Sw::OK }
    }

    /// A response with no data.
    pub fn status(sw: Sw) -> Self {
        Response {
            data: Vec::new(),
            sw,
        }
    }

    /// The wire form: data then SW1 SW2.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.to_bytes());
        out
    }
}

impl From<Sw> for Response {
    fn from(sw: Sw) -> Self {
        Response::status(sw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_four_short_cases() {
        let c = Command::parse(&[0, 0xFD, 0, 0]).unwrap();
        assert_eq!((c.ins, c.data, c.le), (0xFD, &[][..], None));

        let c = Command::parse(&[0, 0xFD, 0, 0, 0]).unwrap();
        assert_eq!((c.data, c.le), (&[][..], Some(0)));
        assert_eq!(c.max_response_len(), 256);

        let c = Command::parse(&[0, 0xA4, 4, 0, 2, 0xA0, 0]).unwrap();
        assert_eq!((c.data, c.le), (&[0xA0, 0][..], None));

        let c = Command::parse(&[0x10, 0xDB, 0x3F, 0xFF, 1, 0x5C, 0x20]).unwrap();
        assert_eq!((c.data, c.le), (&[0x5C][..], Some(0x20)));
        assert!(c.is_chained());
        assert_eq!(c.max_response_len(), 0x20);
    }

    #[test]
    fn parses_extended_cases() {
        let c = Command::parse(&[0, 0xCB, 0x3F, 0xFF, 0, 0, 0]).unwrap();
        assert_eq!((c.data, c.le, c.extended), (&[][..], Some(0), true));
        assert_eq!(c.max_response_len(), 65536);

        let mut apdu = vec![0, 0xDB, 0x3F, 0xFF, 0, 0x01, 0x00];
        apdu.extend(std::iter::repeat_n(0xAB, 256));
        let c = Command::parse(&apdu).unwrap();
        assert_eq!((c.data.len(), c.le, c.extended), (256, None, true));

        apdu.extend([0, 0]);
        let c = Command::parse(&apdu).unwrap();
        assert_eq!((c.data.len(), c.le), (256, Some(0)));
    }

    #[test]
    fn rejects_inconsistent_lengths() {
        assert_eq!(Command::parse(&[0, 1, 2]), Err(ParseError::TooShort));
        assert_eq!(
            Command::parse(&[0, 0x20, 0, 0x80, 8, 1, 2]),
            Err(ParseError::BadLength)
        );
        assert_eq!(
            Command::parse(&[0, 0x20, 0, 0x80, 1, 1, 2, 3]),
            Err(ParseError::BadLength)
        );
    }

    #[test]
    fn status_words() {
        assert_eq!(Sw::tries_left(2).to_bytes(), [0x63, 0xC2]);
        assert_eq!(Sw::bytes_remaining(300).to_bytes(), [0x61, 0x00]);
        assert_eq!(Sw::bytes_remaining(256).to_bytes(), [0x61, 0x00]);
        assert_eq!(Sw::bytes_remaining(44).to_bytes(), [0x61, 0x2C]);
        assert_eq!(Response::ok(vec![1, 2]).to_bytes(), vec![1, 2, 0x90, 0]);
    }
}
