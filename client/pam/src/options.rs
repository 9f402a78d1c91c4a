//! The module's arguments (the words after `pam_keyward.so` in a pam.d file).

use std::path::PathBuf;
use std::time::Duration;

/// Where the agent program is looked for when `agent=` is not given.
pub const DEFAULT_AGENTS: &[&str] = &["/usr/bin/keyward-agent", "/usr/local/bin/keyward-agent"];

/// The bound on each step when `timeout=` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest `timeout=` accepted.
pub const MAX_TIMEOUT_SECS: u64 = 120;

/// When `close_session` locks the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOnClose {
    /// Never (the default).
    Off,
    /// `lock_on_close`: when the user's last login session ends (the agent
    /// asks logind; without logind it locks).
    LastSession,
    /// `lock_on_close=always`: whenever a session of the user ends.
    Always,
}

/// Parsed module options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `auto_start`: start the user's agent when none runs.
    pub auto_start: bool,
    /// `lock_on_close[=always]`: lock the agent when the session closes.
    pub lock_on_close: LockOnClose,
    /// `yubikey_pin`: in `auth`, ask keyward users for their YubiKey PIN
    /// too, for an unlock whose Secret Key is kept by a YubiKey.
    pub yubikey_pin: bool,
    /// `timeout=SECONDS`: the longest the module holds up a login step.
    pub timeout: Duration,
    /// `debug`: log details, and copy every message to standard error.
    pub debug: bool,
    /// `agent=/path/to/keyward-agent`.
    pub agent: Option<PathBuf>,
    /// Problems with the arguments (unknown or malformed), to be logged.
    pub warnings: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            auto_start: false,
            lock_on_close: LockOnClose::Off,
            yubikey_pin: false,
            timeout: DEFAULT_TIMEOUT,
            debug: false,
            agent: None,
            warnings: Vec::new(),
        }
    }
}

impl Options {
    /// Parses the arguments; anything unknown or malformed is recorded in
    /// `warnings` and otherwise ignored (a typo must not break logins).
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Self {
        let mut o = Self::default();
        for arg in args {
            match arg.split_once('=') {
                None => match arg {
                    "auto_start" => o.auto_start = true,
                    "lock_on_close" => o.lock_on_close = LockOnClose::LastSession,
                    "debug" => o.debug = true,
                    "yubikey_pin" => o.yubikey_pin = true,
                    "" => {}
                    _ => o.warnings.push(format!("unknown option `{arg}` ignored")),
                },
                Some(("timeout", v)) => match v.parse::<u64>() {
                    Ok(s) if (1..=MAX_TIMEOUT_SECS).contains(&s) => {
                        o.timeout = Duration::from_secs(s);
                    }
                    _ => o.warnings.push(format!(
                        "`timeout={v}` is not a whole number of seconds from 1 to \
                         {MAX_TIMEOUT_SECS}; using {}",
                        DEFAULT_TIMEOUT.as_secs()
                    )),
                },
                Some(("lock_on_close", v)) => match v {
                    "always" => o.lock_on_close = LockOnClose::Always,
                    "last" => o.lock_on_close = LockOnClose::LastSession,
                    _ => o.warnings.push(format!(
                        "`lock_on_close={v}` is neither `always` nor `last`; not locking on close"
                    )),
                },
                Some(("agent", v)) => {
                    let p = PathBuf::from(v);
                    if p.is_absolute() {
                        o.agent = Some(p);
                    } else {
                        o.warnings.push(format!(
                            "`agent={v}` is not an absolute path; using the default"
                        ));
                    }
                }
                Some((name, _)) => o
                    .warnings
                    .push(format!("unknown option `{name}=…` ignored")),
            }
        }
        o
    }

    /// The agent program to start: `agent=`, else the first default that exists.
    pub fn agent_program(&self) -> PathBuf {
        if let Some(p) = &self.agent {
            return p.clone();
        }
        DEFAULT_AGENTS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AGENTS[0]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let _serial = crate::test_serial();
        let o = Options::parse([]);
        assert_eq!(o, Options::default());
        assert_eq!(o.timeout, Duration::from_secs(10));
        assert!(!o.auto_start && !o.debug && !o.yubikey_pin);
        assert_eq!(o.lock_on_close, LockOnClose::Off);
    }

    #[test]
    fn every_option() {
        let _serial = crate::test_serial();
        let o = Options::parse([
            "auto_start",
            "lock_on_close",
            "debug",
            "yubikey_pin",
            "timeout=3",
            "agent=/opt/kw/keyward-agent",
        ]);
        assert!(o.auto_start && o.debug && o.yubikey_pin);
        assert_eq!(o.lock_on_close, LockOnClose::LastSession);
        for (arg, want) in [
            ("lock_on_close=always", LockOnClose::Always),
            ("lock_on_close=last", LockOnClose::LastSession),
            ("lock_on_close=sometimes", LockOnClose::Off),
        ] {
            let o = Options::parse([arg]);
            assert_eq!(o.lock_on_close, want, "{arg}");
            assert_eq!(o.warnings.is_empty(), want != LockOnClose::Off, "{arg}");
        }
        assert_eq!(o.timeout, Duration::from_secs(3));
        assert_eq!(o.agent_program(), PathBuf::from("/opt/kw/keyward-agent"));
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    }

    #[test]
    fn mistakes_are_reported_and_ignored() {
        let _serial = crate::test_serial();
        let o = Options::parse([
            "autostart",
            "timeout=0",
            "timeout=abc",
            "timeout=9999",
            "agent=relative/agent",
            "colour=blue",
        ]);
        assert_eq!(o.timeout, DEFAULT_TIMEOUT);
        assert!(!o.auto_start);
        assert_eq!(o.agent, None);
        assert_eq!(o.warnings.len(), 6, "{:?}", o.warnings);
        assert!(o.warnings[0].contains("autostart"));
        assert!(o.warnings[5].contains("colour"));
    }
}
