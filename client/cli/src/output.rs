//! Errors with exit codes, the spinner, and small printing helpers.

use keyward_client::{ClientError, ErrorCode};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Exit codes (documented in `keyward --help` and the man page).
pub mod exit {
    /// Any other failure.
    pub const FAILURE: u8 = 1;
    /// The agent could not be reached or started.
    pub const NO_AGENT: u8 = 3;
    /// The agent is locked.
    pub const LOCKED: u8 = 4;
    /// No account yet.
    pub const NO_ACCOUNT: u8 = 5;
    /// Wrong password, Secret Key or recovery code, or backed off.
    pub const WRONG_CREDENTIALS: u8 = 6;
    /// No such item (or code, or protector).
    pub const NOT_FOUND: u8 = 7;
    /// The agent speaks another protocol version.
    pub const VERSION: u8 = 8;
    /// Invalid input (a typo in a Secret Key, a bad name, a value too large).
    pub const INVALID: u8 = 9;
    /// The vault could not be written, or is damaged.
    pub const STORAGE: u8 = 10;
    /// A protector failed (YubiKey, keychain).
    pub const PROTECTOR: u8 = 11;
    /// Cancelled by the user.
    pub const CANCELLED: u8 = 12;
}

/// Text for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success
  1   other failure
  2   bad usage
  3   the agent could not be reached or started
  4   the agent is locked (run `keyward unlock`)
  5   no account yet (run `keyward init`)
  6   wrong Master Password, Secret Key or recovery code, or too many attempts
  7   no such item
  8   the running agent is older or newer than this keyward
  9   invalid input (a typo, a bad name, a value too large)
  10  the vault could not be written or is damaged
  11  a protector failed (YubiKey, keychain)
  12  cancelled";

/// A failure of a command: what to print and how to exit.
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub code: u8,
    /// The message (says what to do next).
    pub message: String,
}

impl CliError {
    /// A failure with code 1.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            code: exit::FAILURE,
            message: message.into(),
        }
    }

    /// A failure with a given code.
    pub fn with(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        Self::msg(message)
    }
}

/// The exit code for an agent error class.
pub fn code_for(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::Locked => exit::LOCKED,
        ErrorCode::NoAccount => exit::NO_ACCOUNT,
        ErrorCode::WrongCredentials | ErrorCode::BackedOff | ErrorCode::WrongRecoveryCode => {
            exit::WRONG_CREDENTIALS
        }
        ErrorCode::NotFound => exit::NOT_FOUND,
        ErrorCode::VersionMismatch => exit::VERSION,
        ErrorCode::InvalidInput | ErrorCode::Exists => exit::INVALID,
        ErrorCode::Storage | ErrorCode::Corrupt => exit::STORAGE,
        ErrorCode::Protector
        | ErrorCode::WrongPin
        | ErrorCode::PinBlocked
        | ErrorCode::NeedSecretKey => exit::PROTECTOR,
        ErrorCode::Cancelled => exit::CANCELLED,
        _ => exit::FAILURE,
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::Agent(a) => code_for(a.code),
            ClientError::VersionMismatch { .. } => exit::VERSION,
            ClientError::NotRunning { .. }
            | ClientError::Connect { .. }
            | ClientError::WrongOwner { .. } => exit::NO_AGENT,
            _ => exit::FAILURE,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

/// `message` as a sentence: its first letter upper case (the agent's
/// messages are written to follow "keyward: ").
pub fn sentence(message: &str) -> String {
    let mut c = message.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Prints an error as `keyward: message`.
pub fn print_error(e: &CliError) {
    eprintln!("keyward: {}", e.message);
}

/// A spinner on stderr while something slow runs (only on a terminal).
pub struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    /// Starts spinning with `label`, if stderr is a terminal.
    pub fn start(label: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Self { stop, thread: None };
        }
        let flag = stop.clone();
        let label = label.to_owned();
        let thread = std::thread::spawn(move || {
            let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let mut i = 0;
            // Don't flash for fast operations.
            std::thread::sleep(Duration::from_millis(150));
            while !flag.load(Ordering::Relaxed) {
                eprint!("\r{} {label}", frames[i % frames.len()]);
                let _ = std::io::stderr().flush();
                i += 1;
                std::thread::sleep(Duration::from_millis(80));
            }
            if i > 0 {
                eprint!("\r\x1b[2K");
                let _ = std::io::stderr().flush();
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub fn date(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

/// Seconds as `1 h 5 min` / `42 s`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_durations() {
        assert_eq!(date(0), "1970-01-01 00:00 UTC");
        assert_eq!(date(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(3725), "1 h 2 min");
    }

    #[test]
    fn every_agent_error_maps_to_a_documented_code() {
        for v in 1..=21u16 {
            let c = code_for(ErrorCode::from_u16(v));
            assert!(EXIT_CODES_HELP.contains(&format!("\n  {c} ")), "{v} → {c}");
        }
    }
}
