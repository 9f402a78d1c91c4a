//! The agent's settings. Every one has a default: with no config file at all
//! the agent works. `config.toml` in the config directory overrides them:
//!
//! ```toml
//! idle_lock_seconds = 900        # lock after 15 minutes without use (0 = never)
//! lifetime_seconds = 43200       # lock 12 hours after unlocking, whatever happens (0 = never;
//!                                # both count time the machine spends suspended)
//! max_connections = 1024         # clients served at once; more are refused with "busy"
//! protectors = ["yubikey", "keychain", "file"]   # the order unlock tries them in
//! pinentry = "/usr/bin/pinentry-gnome3"   # ask for the password when a request finds
//!                                         # the agent locked ("" = never, the default)
//! pinentry_timeout_seconds = 45
//!
//! [ssh]                          # the SSH agent (SECURITY.md §17)
//! enabled = true                 # serve ssh.sock next to the keyward socket
//! socket = ""                    # its path ("" = <runtime dir>/keyward/ssh.sock)
//! askpass = ""                   # program for confirmations ("" = $SSH_ASKPASS, else none)
//! add_stores = true              # `ssh-add FILE` keeps the key in the vault
//! allowed_providers = "/usr/lib*/*,/usr/local/lib*/*"   # security-key providers
//! prompt_timeout_seconds = 30
//!
//! [kdf]                          # Argon2id for new password wraps
//! memory_kib = 65536
//! iterations = 3
//! parallelism = 4
//! ```

use crate::account::password::KdfParams;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Idle lock in seconds (0 = never).
    pub idle_lock_seconds: u64,
    /// Absolute lifetime of an unlock in seconds (0 = never).
    pub lifetime_seconds: u64,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Seconds a connection may stay silent between requests.
    pub client_idle_timeout_seconds: u64,
    /// Seconds a client has to finish sending a request once it started.
    pub request_timeout_seconds: u64,
    /// Seconds the agent waits for the user to answer a prompt (PIN …).
    pub prompt_timeout_seconds: u64,
    /// Unlock order of protectors.
    pub protectors: Vec<String>,
    /// Which account, when the data directory holds several vaults.
    pub account: Option<String>,
    /// A pinentry program the agent runs to ask for the Master Password
    /// when a client's request finds it locked (empty: never; the client
    /// gets "locked"). Needs a display the agent can reach.
    pub pinentry: String,
    /// How long that pinentry waits for the user.
    pub pinentry_timeout_seconds: u64,
    /// Argon2id parameters for new wraps.
    pub kdf: KdfConfig,
    /// The SSH agent.
    pub ssh: SshConfig,
}

/// SSH agent settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    /// Serve the SSH agent socket.
    pub enabled: bool,
    /// Its path (empty: `ssh.sock` in the runtime directory).
    pub socket: String,
    /// The askpass program for confirmations and the locked-agent password
    /// (empty: `$SSH_ASKPASS` from the agent's environment, else none).
    pub askpass: String,
    /// Whether `ssh-add FILE` (without `-t`) keeps the key in the vault.
    pub add_stores: bool,
    /// Security-key provider libraries `ssh-add` may name (ssh-agent's `-P`).
    pub allowed_providers: String,
    /// How long a confirmation or password prompt waits.
    pub prompt_timeout_seconds: u64,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: String::new(),
            askpass: String::new(),
            add_stores: true,
            allowed_providers: "/usr/lib*/*,/usr/local/lib*/*".into(),
            prompt_timeout_seconds: 30,
        }
    }
}

/// Argon2id settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KdfConfig {
    /// KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfConfig {
    fn default() -> Self {
        let d = KdfParams::DEFAULT;
        Self {
            memory_kib: d.m_kib,
            iterations: d.t,
            parallelism: d.p,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idle_lock_seconds: 15 * 60,
            lifetime_seconds: 12 * 3600,
            max_connections: 1024,
            client_idle_timeout_seconds: 300,
            request_timeout_seconds: 10,
            prompt_timeout_seconds: 120,
            protectors: vec!["yubikey".into(), "keychain".into(), "file".into()],
            account: None,
            pinentry: String::new(),
            pinentry_timeout_seconds: 45,
            kdf: KdfConfig::default(),
            ssh: SshConfig::default(),
        }
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Invalid TOML or an unknown key.
    #[error("{path} is invalid: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What the parser said.
        message: String,
    },
}

/// A TOML error on one line, as "line N: what" (the parser's own text
/// spans several lines with a drawing of the spot, and what reaches the
/// user through the CLI is one line of the agent's log). Serde's message
/// names the key, and for an unknown one lists the keys that exist.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {what}")
        }
        None => what,
    }
}

impl Config {
    /// Loads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: Config = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        c.kdf_params()
            .check_new()
            .map_err(|e| format!("[kdf]: {e}"))?;
        for p in &c.protectors {
            if !matches!(p.as_str(), "yubikey" | "keychain" | "file") {
                return Err(format!(
                    "protectors: unknown protector {p:?} (use yubikey, keychain, file)"
                ));
            }
        }
        if c.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if !c.pinentry.is_empty() && !Path::new(&c.pinentry).is_absolute() {
            return Err(format!(
                "pinentry: {:?} is not an absolute path (e.g. \"/usr/bin/pinentry-gnome3\")",
                c.pinentry
            ));
        }
        // Two prompts (password, PIN) plus the 3 s before a kill stay
        // under keyward-client's 120 s answer timeout.
        if !(1..=55).contains(&c.pinentry_timeout_seconds) {
            return Err("pinentry_timeout_seconds must be between 1 and 55".into());
        }
        if !(1..=300).contains(&c.ssh.prompt_timeout_seconds) {
            return Err("[ssh] prompt_timeout_seconds must be between 1 and 300".into());
        }
        for (key, path) in [("socket", &c.ssh.socket), ("askpass", &c.ssh.askpass)] {
            if !path.is_empty() && !Path::new(path).is_absolute() {
                return Err(format!("[ssh] {key}: {path:?} is not an absolute path"));
            }
        }
        Ok(c)
    }

    /// Argon2id parameters for new wraps.
    pub fn kdf_params(&self) -> KdfParams {
        KdfParams {
            m_kib: self.kdf.memory_kib,
            t: self.kdf.iterations,
            p: self.kdf.parallelism,
        }
    }

    /// Idle lock, if any.
    pub fn idle_lock(&self) -> Option<Duration> {
        (self.idle_lock_seconds > 0).then(|| Duration::from_secs(self.idle_lock_seconds))
    }

    /// Absolute lifetime, if any.
    pub fn lifetime(&self) -> Option<Duration> {
        (self.lifetime_seconds > 0).then(|| Duration::from_secs(self.lifetime_seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: a mistyped key names the file's line, the key and the
    /// keys that exist, on one line.
    #[test]
    fn a_mistyped_key_is_named_with_its_line_and_the_keys_that_exist() {
        let e = Config::parse("account = \"ABCDEF\"\nidle_lock_secs = 5\n").unwrap_err();
        assert!(e.starts_with("line 2: "), "{e}");
        assert!(
            e.contains("idle_lock_secs") && e.contains("idle_lock_seconds"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = Config::parse("[kdf]\nmemory_kib = \"lots\"\n").unwrap_err();
        assert!(e.starts_with("line 2: "), "{e}");
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("config.toml");
        std::fs::write(&path, "idle_lock_secs = 5\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("line 1"),
            "{e}"
        );
    }

    #[test]
    fn defaults_without_a_file() {
        let c = Config::load(Path::new("/nonexistent/config.toml")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.idle_lock(), Some(Duration::from_secs(900)));
        assert_eq!(c.kdf_params(), KdfParams::DEFAULT);
    }

    #[test]
    fn overrides_and_refusals() {
        let c = Config::parse(
            "idle_lock_seconds = 2\n[kdf]\nmemory_kib = 19456\niterations = 2\nparallelism = 1\n",
        )
        .unwrap();
        assert_eq!(c.idle_lock_seconds, 2);
        assert_eq!(c.lifetime_seconds, 12 * 3600);
        assert_eq!(c.kdf_params().m_kib, 19456);
        assert!(
            Config::parse("idle_lock_seconds = 0")
                .unwrap()
                .idle_lock()
                .is_none()
        );
        assert!(
            Config::parse("idel_lock_seconds = 2")
                .unwrap_err()
                .contains("idel_lock_seconds")
        );
        assert!(
            Config::parse("[kdf]\nmemory_kib = 1024")
                .unwrap_err()
                .contains("too weak")
        );
        assert!(
            Config::parse("protectors = [\"usb\"]")
                .unwrap_err()
                .contains("usb")
        );
        assert!(Config::parse("max_connections = 0").is_err());
    }
}
