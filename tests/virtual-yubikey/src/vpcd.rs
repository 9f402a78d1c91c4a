//! The vpcd wire: how the card talks to vsmartcard's virtual reader driver.
//!
//! vpcd (a pcscd reader driver) listens on TCP port 35963 for reader 0 and
//! 35964 for reader 1; the card connects to it. Every message, both ways, is
//! a two-byte big-endian length and a payload. From vpcd, a one-byte payload
//! is a control code — 0 power off, 1 power on, 2 reset (none is answered),
//! 4 "send the ATR" (answered with the ATR) — and anything longer is a command
//! APDU, answered with the response APDU. A card is "inserted" while its
//! connection is open; closing it removes the card.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::linux::net::TcpStreamExt;
use std::time::{Duration, Instant};

use crate::card::Card;
use crate::hardware::Hardware;

/// vpcd's TCP port for reader 0 ("Virtual PCD 00 00"); reader N is this + N.
pub const DEFAULT_PORT: u16 = 35963;

/// Control codes sent by vpcd.
pub mod control {
    /// Power off.
    pub const POWER_OFF: u8 = 0;
    /// Power on.
    pub const POWER_ON: u8 = 1;
    /// Warm reset.
    pub const RESET: u8 = 2;
    /// Send the ATR.
    pub const GET_ATR: u8 = 4;
}

/// A vpcd connection that acknowledges every read at once.
///
/// vpcd sends a message as two `send` calls (length, then payload) on a
/// socket with Nagle's algorithm on, so the payload waits until the length is
/// acknowledged — and Linux delays that acknowledgement by 40 ms. That would
/// add 40 ms to every APDU; `TCP_QUICKACK` (re-armed before each read, as the
/// kernel clears it) removes the wait. Our own writes go out whole, with
/// `TCP_NODELAY`.
#[derive(Debug)]
pub struct VpcdStream(TcpStream);

impl Read for VpcdStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Best effort: without it the card is slower, not wrong.
        let _ = self.0.set_quickack(true);
        self.0.read(buf)
    }
}

impl Write for VpcdStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Connects to vpcd, retrying until `timeout` (vpcd may still be starting).
pub fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<VpcdStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect((host, port)) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(VpcdStream(stream));
            }
            Err(e) if Instant::now() < deadline => {
                if e.kind() != ErrorKind::ConnectionRefused {
                    eprintln!(
                        "virtual-yubikey: connecting to vpcd at {host}:{port}: {e}; retrying"
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("could not connect to vpcd at {host}:{port} within {timeout:?}: {e}"),
                ));
            }
        }
    }
}

/// Reads one message; `None` at a clean end of stream (vpcd went away).
pub fn read_message(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
    r.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// Writes one message.
pub fn write_message(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u16::try_from(payload.len())
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "message over 65535 bytes"))?;
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    w.write_all(&frame)?;
    w.flush()
}

/// Serves the card on `stream` until vpcd closes it. After every command,
/// `after_command` runs (the binary saves the state file there).
pub fn serve<S: Read + Write>(
    stream: &mut S,
    card: &mut Card,
    hw: &mut dyn Hardware,
    mut after_command: impl FnMut(&mut Card) -> io::Result<()>,
) -> io::Result<()> {
    while let Some(msg) = read_message(stream)? {
        match msg[..] {
            [] => {}
            [control::GET_ATR] => write_message(stream, card.atr())?,
            [control::POWER_OFF | control::POWER_ON | control::RESET] => card.reset(),
            [other] => eprintln!("virtual-yubikey: ignoring unknown vpcd control code {other}"),
            _ => {
                let response = card.process(&msg, hw);
                write_message(stream, &response)?;
                after_command(card)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::piv::testing::FakeHardware;
    use crate::state::{CardState, FactoryOptions};

    /// A stream whose reads come from a script and whose writes are kept.
    struct Scripted {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            write_message(&mut out, p).unwrap();
        }
        out
    }

    #[test]
    fn answers_atr_and_apdus_and_handles_power() {
        let select = [0, 0xA4, 4, 0, 5, 0xA0, 0, 0, 3, 8];
        let input = frames(&[
            &[control::POWER_ON],
            &[control::GET_ATR],
            &select,
            &[0, 0xFD, 0, 0],
            &[control::RESET],
            &[0, 0xFD, 0, 0],
        ]);
        let mut stream = Scripted {
            input: io::Cursor::new(input),
            output: Vec::new(),
        };
        let mut card = Card::new(CardState::factory(&FactoryOptions::default()));
        let mut commands = 0;
        serve(&mut stream, &mut card, &mut FakeHardware::default(), |_| {
            commands += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(commands, 3);

        let mut out = io::Cursor::new(stream.output);
        assert_eq!(read_message(&mut out).unwrap().unwrap(), crate::card::ATR);
        let select_resp = read_message(&mut out).unwrap().unwrap();
        assert_eq!(select_resp[select_resp.len() - 2..], [0x90, 0]);
        assert_eq!(
            read_message(&mut out).unwrap().unwrap(),
            vec![5, 4, 3, 0x90, 0]
        );
        // After the reset nothing is selected.
        assert_eq!(read_message(&mut out).unwrap().unwrap(), vec![0x6D, 0]);
        assert_eq!(read_message(&mut out).unwrap(), None);
    }

    #[test]
    fn truncated_frame_is_an_error() {
        let mut input = io::Cursor::new(vec![0, 5, 1, 2]);
        assert!(read_message(&mut input).is_err());
    }
}
