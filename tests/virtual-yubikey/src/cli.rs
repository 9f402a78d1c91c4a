//! The command line of the `virtual-yubikey` binary, parsed by hand (a test
//! fixture does not need a parser dependency), and the two things it runs:
//! the card itself and `pcsc-wait`, a small PC/SC client that waits for a
//! reader to report a card present or absent.

use std::path::PathBuf;
use std::time::Duration;

use crate::crypto::MgmtAlgorithm;
use crate::hardware::DEFAULT_TOUCH_TIMEOUT;
use crate::state::FactoryOptions;
use crate::vpcd::DEFAULT_PORT;

/// Usage text.
pub const USAGE: &str = "\
virtual-yubikey: a software YubiKey PIV card for vsmartcard's vpcd (tests only)

USAGE:
  virtual-yubikey [card] [OPTIONS]      run the card (connects to vpcd)
  virtual-yubikey pcsc-wait OPTIONS     wait for a PC/SC reader state

CARD OPTIONS:
  --serial N            serial number (default 10000001)
  --version X.Y.Z       firmware version (default 5.4.3; >= 5.7 means an
                        AES-192 default management key, 3DES below)
  --host HOST           vpcd host (default 127.0.0.1)
  --port PORT           vpcd port (default 35963 = reader 0)
  --reader N            shorthand for --port 35963+N
  --state FILE          load the card from FILE if it exists, save every change
  --touch-file PATH     creating PATH is a touch (SIGUSR1 is one too)
  --touch-timeout SECS  how long to wait for a touch (default 15, like a YubiKey;
                        on timeout the card answers 6982)
  --pin PIN             initial PIN (default 123456)
  --puk PUK             initial PUK (default 12345678)
  --mgmt-key [ALG:]HEX  initial management key; ALG is 3des, aes128, aes192 or
                        aes256 (default: the firmware's default algorithm)
  --connect-timeout SECS  how long to retry connecting to vpcd (default 10)
  --exit-on-stdin-eof   exit when stdin closes (the test harness's lifeline)

PCSC-WAIT OPTIONS:
  --reader NAME|N       reader name, or N for \"Virtual PCD 00 0N\"
  --state present|absent|listed   what to wait for (default present)
  --timeout SECS        give up after SECS (default 10); exit status 1
";

/// Options of the card.
#[derive(Debug, Clone)]
pub struct CardOptions {
    /// Factory options (used unless the state file exists).
    pub factory: FactoryOptions,
    /// Whether `--serial` was given (then it must match a loaded state).
    pub serial_given: bool,
    /// vpcd host.
    pub host: String,
    /// vpcd port.
    pub port: u16,
    /// State file.
    pub state_file: Option<PathBuf>,
    /// Touch file.
    pub touch_file: Option<PathBuf>,
    /// Touch timeout.
    pub touch_timeout: Duration,
    /// How long to retry connecting to vpcd.
    pub connect_timeout: Duration,
    /// Exit when stdin reaches end of file.
    pub exit_on_stdin_eof: bool,
}

impl Default for CardOptions {
    fn default() -> Self {
        CardOptions {
            factory: FactoryOptions::default(),
            serial_given: false,
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
            state_file: None,
            touch_file: None,
            touch_timeout: DEFAULT_TOUCH_TIMEOUT,
            connect_timeout: Duration::from_secs(10),
            exit_on_stdin_eof: false,
        }
    }
}

/// What `pcsc-wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderWait {
    /// A card is present in the reader.
    Present,
    /// The reader is empty.
    Absent,
    /// The reader exists (pcscd is up and vpcd loaded).
    Listed,
}

/// Options of `pcsc-wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitOptions {
    /// Reader name.
    pub reader: String,
    /// Target state.
    pub state: ReaderWait,
    /// Timeout.
    pub timeout: Duration,
}

/// A parsed command line.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// Run the card.
    Card(Box<CardOptions>),
    /// Wait for a reader state.
    Wait(WaitOptions),
    /// Print the usage.
    Help,
}

/// The PC/SC name of vpcd's reader `n`.
pub fn reader_name(n: u8) -> String {
    format!("Virtual PCD 00 {n:02}")
}

fn secs(v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("not a number of seconds: {v:?}"))
}

fn parse_mgmt_key(v: &str) -> Result<(Option<MgmtAlgorithm>, Vec<u8>), String> {
    let (alg, hex_key) = match v.split_once(':') {
        Some((a, k)) => {
            let alg = match a.to_ascii_lowercase().as_str() {
                "3des" | "tdes" => MgmtAlgorithm::Tdes,
                "aes128" => MgmtAlgorithm::Aes128,
                "aes192" => MgmtAlgorithm::Aes192,
                "aes256" => MgmtAlgorithm::Aes256,
                _ => return Err(format!("unknown management key algorithm {a:?}")),
            };
            (Some(alg), k)
        }
        None => (None, v),
    };
    let key = hex::decode(hex_key).map_err(|e| format!("management key is not hex: {e}"))?;
    Ok((alg, key))
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Invocation, String> {
    let mut args = args.iter().map(String::as_str).peekable();
    let sub = match args.peek() {
        Some(&"pcsc-wait") => "pcsc-wait",
        Some(&"card") => "card",
        _ => "",
    };
    if !sub.is_empty() {
        args.next();
    }
    let next_value = |flag: &str, it: &mut std::iter::Peekable<_>| -> Result<String, String> {
        let v: Option<&str> = it.next();
        v.map(str::to_owned)
            .ok_or_else(|| format!("{flag} needs a value"))
    };

    if sub == "pcsc-wait" {
        let mut reader = None;
        let mut state = ReaderWait::Present;
        let mut timeout = Duration::from_secs(10);
        while let Some(flag) = args.next() {
            match flag {
                "--reader" => {
                    let v = next_value(flag, &mut args)?;
                    reader = Some(match v.parse::<u8>() {
                        Ok(n) => reader_name(n),
                        Err(_) => v,
                    });
                }
                "--state" => {
                    state = match next_value(flag, &mut args)?.as_str() {
                        "present" => ReaderWait::Present,
                        "absent" => ReaderWait::Absent,
                        "listed" => ReaderWait::Listed,
                        other => return Err(format!("unknown reader state {other:?}")),
                    }
                }
                "--timeout" => timeout = secs(&next_value(flag, &mut args)?)?,
                "-h" | "--help" => return Ok(Invocation::Help),
                other => return Err(format!("unknown pcsc-wait option {other:?}")),
            }
        }
        let reader = reader.ok_or("pcsc-wait needs --reader")?;
        return Ok(Invocation::Wait(WaitOptions {
            reader,
            state,
            timeout,
        }));
    }

    let mut o = CardOptions::default();
    let mut mgmt = None;
    while let Some(flag) = args.next() {
        match flag {
            "--serial" => {
                let v = next_value(flag, &mut args)?;
                o.factory.serial = v.parse().map_err(|_| format!("bad serial {v:?}"))?;
                o.serial_given = true;
            }
            "--version" => o.factory.version = next_value(flag, &mut args)?.parse()?,
            "--host" => o.host = next_value(flag, &mut args)?,
            "--port" => {
                let v = next_value(flag, &mut args)?;
                o.port = v.parse().map_err(|_| format!("bad port {v:?}"))?;
            }
            "--reader" => {
                let v = next_value(flag, &mut args)?;
                let n: u16 = v.parse().map_err(|_| format!("bad reader number {v:?}"))?;
                o.port = DEFAULT_PORT + n.min(99);
            }
            "--state" => o.state_file = Some(next_value(flag, &mut args)?.into()),
            "--touch-file" => o.touch_file = Some(next_value(flag, &mut args)?.into()),
            "--touch-timeout" => o.touch_timeout = secs(&next_value(flag, &mut args)?)?,
            "--connect-timeout" => o.connect_timeout = secs(&next_value(flag, &mut args)?)?,
            "--pin" => o.factory.pin = next_value(flag, &mut args)?.into_bytes(),
            "--puk" => o.factory.puk = next_value(flag, &mut args)?.into_bytes(),
            "--mgmt-key" => mgmt = Some(parse_mgmt_key(&next_value(flag, &mut args)?)?),
            "--exit-on-stdin-eof" => o.exit_on_stdin_eof = true,
            "-h" | "--help" => return Ok(Invocation::Help),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    for (what, v) in [("PIN", &o.factory.pin), ("PUK", &o.factory.puk)] {
        if !(6..=8).contains(&v.len()) {
            return Err(format!("the {what} must be 6 to 8 bytes"));
        }
    }
    if let Some((alg, key)) = mgmt {
        let alg = alg.unwrap_or_else(|| crate::state::default_mgmt_algorithm(o.factory.version));
        if key.len() != alg.key_len() {
            return Err(format!(
                "a {alg:?} management key is {} bytes, not {}",
                alg.key_len(),
                key.len()
            ));
        }
        o.factory.mgmt_key = Some((alg, key));
    }
    Ok(Invocation::Card(Box::new(o)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Version;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn card_flags() {
        let Invocation::Card(o) = parse(&args(
            "--serial 42 --version 5.7.1 --reader 1 --state /tmp/s --touch-file /tmp/t \
             --touch-timeout 0.5 --pin 111111 --mgmt-key aes128:000102030405060708090a0b0c0d0e0f",
        ))
        .unwrap() else {
            panic!("not a card")
        };
        assert_eq!(o.factory.serial, 42);
        assert!(o.serial_given);
        assert_eq!(o.factory.version, Version(5, 7, 1));
        assert_eq!(o.port, 35964);
        assert_eq!(o.touch_timeout, Duration::from_millis(500));
        assert_eq!(o.factory.pin, b"111111");
        assert_eq!(o.factory.mgmt_key.unwrap().0, MgmtAlgorithm::Aes128);
        assert!(matches!(parse(&args("card")).unwrap(), Invocation::Card(_)));
    }

    #[test]
    fn bad_card_flags() {
        assert!(parse(&args("--pin 123")).is_err());
        assert!(parse(&args("--version 3.0.0")).is_err());
        assert!(parse(&args("--mgmt-key 0102")).is_err());
        assert!(parse(&args("--mgmt-key rc4:00")).is_err());
        assert!(parse(&args("--serial")).is_err());
        assert!(parse(&args("--frobnicate")).is_err());
    }

    #[test]
    fn wait_flags() {
        let Invocation::Wait(w) =
            parse(&args("pcsc-wait --reader 1 --state absent --timeout 3")).unwrap()
        else {
            panic!("not a wait")
        };
        assert_eq!(
            w,
            WaitOptions {
                reader: "Virtual PCD 00 01".into(),
                state: ReaderWait::Absent,
                timeout: Duration::from_secs(3),
            }
        );
        assert!(parse(&args("pcsc-wait")).is_err());
    }
}
