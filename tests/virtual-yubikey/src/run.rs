//! What the binary runs: the card's main loop and `pcsc-wait`.

use std::ffi::CString;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::card::Card;
use crate::cli::{CardOptions, ReaderWait, WaitOptions};
use crate::hardware::{SystemHardware, TouchSensor};
use crate::state::{CardState, StateError};
use crate::vpcd;

/// Why the card or `pcsc-wait` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The state file belongs to another card.
    #[error(
        "state file {path} holds the card with serial {found}, not {wanted}; \
         use another file or drop --serial"
    )]
    SerialMismatch {
        /// The state file.
        path: std::path::PathBuf,
        /// Serial in the file.
        found: u32,
        /// Serial asked for.
        wanted: u32,
    },
    /// Talking to vpcd failed.
    #[error("vpcd connection: {0}")]
    Vpcd(#[from] std::io::Error),
    /// Installing the SIGUSR1 handler failed.
    #[error("installing the SIGUSR1 (touch) handler: {0}")]
    Signal(std::io::Error),
    /// A PC/SC call failed.
    #[error("PC/SC: {0}")]
    Pcsc(#[from] pcsc::Error),
    /// The reader name has a NUL byte.
    #[error("invalid reader name {0:?}")]
    ReaderName(String),
}

/// Loads the card from the state file, or makes a factory-fresh one (and
/// writes it to the state file, if there is one).
pub fn load_or_create(opts: &CardOptions) -> Result<CardState, RunError> {
    let Some(path) = &opts.state_file else {
        return Ok(CardState::factory(&opts.factory));
    };
    if path.exists() {
        let state = CardState::load(path)?;
        if opts.serial_given && state.serial != opts.factory.serial {
            return Err(RunError::SerialMismatch {
                path: path.clone(),
                found: state.serial,
                wanted: opts.factory.serial,
            });
        }
        return Ok(state);
    }
    let state = CardState::factory(&opts.factory);
    state.save(path)?;
    Ok(state)
}

/// Runs the card until vpcd closes the connection (the reader went away).
pub fn run_card(opts: &CardOptions) -> Result<(), RunError> {
    let state = load_or_create(opts)?;
    let touch = TouchSensor::new(opts.touch_file.clone(), opts.touch_timeout);
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, touch.signal_flag())
        .map_err(RunError::Signal)?;
    if opts.exit_on_stdin_eof {
        // The harness keeps our stdin open; when its process dies, however it
        // dies, the pipe closes and the card goes with it.
        std::thread::spawn(|| {
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            eprintln!("virtual-yubikey: stdin closed, exiting");
            std::process::exit(0);
        });
    }
    let (serial, version) = (state.serial, state.version);
    let mut card = Card::new(state);
    let mut hw = SystemHardware::new(touch);
    let mut stream = vpcd::connect(&opts.host, opts.port, opts.connect_timeout)?;
    eprintln!(
        "virtual-yubikey: card with serial {serial} (firmware {version}) inserted into vpcd at {}:{}",
        opts.host, opts.port
    );
    let state_file = opts.state_file.as_deref();
    vpcd::serve(&mut stream, &mut card, &mut hw, |card| {
        save_if_dirty(card, state_file).map_err(std::io::Error::other)
    })?;
    eprintln!("virtual-yubikey: vpcd closed the connection; card removed");
    Ok(())
}

fn save_if_dirty(card: &mut Card, path: Option<&Path>) -> Result<(), StateError> {
    if card.take_dirty()
        && let Some(path) = path
    {
        card.piv().state().save(path)?;
    }
    Ok(())
}

/// Waits until the reader reaches the wanted state. `Ok(false)` on timeout.
/// pcscd not running yet, or the reader not there yet, count as "not yet".
pub fn pcsc_wait(opts: &WaitOptions) -> Result<bool, RunError> {
    let deadline = Instant::now() + opts.timeout;
    let name =
        CString::new(opts.reader.clone()).map_err(|_| RunError::ReaderName(opts.reader.clone()))?;
    let retry = Duration::from_millis(50);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(false);
        }
        let ctx = match pcsc::Context::establish(pcsc::Scope::System) {
            Ok(ctx) => ctx,
            Err(pcsc::Error::NoService | pcsc::Error::ServiceStopped) => {
                std::thread::sleep(retry);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let listed = match ctx.list_readers_owned() {
            Ok(readers) => readers.contains(&name),
            Err(pcsc::Error::NoReadersAvailable) => false,
            Err(e) => return Err(e.into()),
        };
        if !listed {
            std::thread::sleep(retry);
            continue;
        }
        if opts.state == ReaderWait::Listed {
            return Ok(true);
        }
        let mut states = [pcsc::ReaderState::new(name.clone(), pcsc::State::UNAWARE)];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(false);
            }
            match ctx.get_status_change(remaining, &mut states) {
                Ok(()) => {}
                Err(pcsc::Error::Timeout) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            let s = states[0].event_state();
            let reached = match opts.state {
                ReaderWait::Present => {
                    s.contains(pcsc::State::PRESENT) && !s.contains(pcsc::State::MUTE)
                }
                ReaderWait::Absent => s.contains(pcsc::State::EMPTY),
                ReaderWait::Listed => true,
            };
            if reached {
                return Ok(true);
            }
            states[0].sync_current_state();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_is_created_then_reused_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = CardOptions {
            state_file: Some(dir.path().join("card.json")),
            ..CardOptions::default()
        };
        opts.factory.serial = 7;
        let first = load_or_create(&opts).unwrap();
        assert!(dir.path().join("card.json").exists());
        opts.factory.serial = 8;
        let again = load_or_create(&opts).unwrap();
        assert_eq!((first.serial, again.serial), (7, 7), "the file wins");
        opts.serial_given = true;
        assert!(matches!(
            load_or_create(&opts),
            Err(RunError::SerialMismatch {
                found: 7,
                wanted: 8,
                ..
            })
        ));
    }
}
