//! Where keyward keeps things. Shared by the agent, the CLI and the PAM module
//! so they always agree on the socket path.
//!
//! | what | `KEYWARD_HOME` set | otherwise |
//! |---|---|---|
//! | config (`config.toml`) | `$KEYWARD_HOME/config` | `$XDG_CONFIG_HOME/keyward`, else `~/.config/keyward` |
//! | data (vault, `file` protector) | `$KEYWARD_HOME/data` | `$XDG_DATA_HOME/keyward`, else `~/.local/share/keyward` |
//! | state (attempts, log) | `$KEYWARD_HOME/state` | `$XDG_STATE_HOME/keyward`, else `~/.local/state/keyward` |
//! | runtime (socket, lock) | `$KEYWARD_HOME/run` | `$XDG_RUNTIME_DIR/keyward`, else `$TMPDIR/keyward-<uid>` (`/tmp` without `TMPDIR`) |

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The directories of one user's keyward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Config directory.
    pub config_dir: PathBuf,
    /// Data directory.
    pub data_dir: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Runtime directory (socket).
    pub runtime_dir: PathBuf,
}

/// No home directory to derive paths from.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot find your home directory: set HOME (or KEYWARD_HOME)")]
pub struct NoHome;

/// The real uid of this process.
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn non_empty(v: Option<OsString>) -> Option<PathBuf> {
    v.filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

impl Paths {
    /// Paths from this process's environment.
    pub fn from_env() -> Result<Self, NoHome> {
        Self::from_vars(|k| std::env::var_os(k), current_uid())
    }

    /// Paths from a given environment lookup (tests, the PAM module).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>, uid: u32) -> Result<Self, NoHome> {
        if let Some(home) = non_empty(var("KEYWARD_HOME")) {
            return Ok(Self::under(&home));
        }
        let home = non_empty(var("HOME"));
        let xdg = |name: &str, fallback: &str| -> Result<PathBuf, NoHome> {
            match non_empty(var(name)) {
                Some(p) => Ok(p.join("keyward")),
                None => Ok(home.clone().ok_or(NoHome)?.join(fallback).join("keyward")),
            }
        };
        let runtime_dir = match non_empty(var("XDG_RUNTIME_DIR")) {
            Some(p) => p.join("keyward"),
            None => non_empty(var("TMPDIR"))
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join(format!("keyward-{uid}")),
        };
        Ok(Self {
            config_dir: xdg("XDG_CONFIG_HOME", ".config")?,
            data_dir: xdg("XDG_DATA_HOME", ".local/share")?,
            state_dir: xdg("XDG_STATE_HOME", ".local/state")?,
            runtime_dir,
        })
    }

    /// Everything under one directory (what `KEYWARD_HOME` does).
    pub fn under(home: &Path) -> Self {
        Self {
            config_dir: home.join("config"),
            data_dir: home.join("data"),
            state_dir: home.join("state"),
            runtime_dir: home.join("run"),
        }
    }

    /// The agent's socket.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join("agent.sock")
    }

    /// The lock held by the running agent (one agent per home).
    pub fn lock_file(&self) -> PathBuf {
        self.runtime_dir.join("agent.lock")
    }

    /// The config file.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// The log of an auto-started agent.
    pub fn log_file(&self) -> PathBuf {
        self.state_dir.join("agent.log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).map(OsString::from)
    }

    #[test]
    fn keyward_home_wins() {
        let p = Paths::from_vars(env(&[("KEYWARD_HOME", "/k"), ("HOME", "/h")]), 1).unwrap();
        assert_eq!(p.socket(), PathBuf::from("/k/run/agent.sock"));
        assert_eq!(p.data_dir, PathBuf::from("/k/data"));
    }

    #[test]
    fn xdg_then_home_then_tmp() {
        let p = Paths::from_vars(
            env(&[
                ("HOME", "/h"),
                ("XDG_DATA_HOME", "/d"),
                ("XDG_RUNTIME_DIR", "/run/user/5"),
            ]),
            5,
        )
        .unwrap();
        assert_eq!(p.data_dir, PathBuf::from("/d/keyward"));
        assert_eq!(p.config_dir, PathBuf::from("/h/.config/keyward"));
        assert_eq!(p.state_dir, PathBuf::from("/h/.local/state/keyward"));
        assert_eq!(p.socket(), PathBuf::from("/run/user/5/keyward/agent.sock"));
        let p = Paths::from_vars(env(&[("HOME", "/h")]), 77).unwrap();
        assert!(p.runtime_dir.ends_with("keyward-77"));
        // Relative or empty values are ignored.
        let p = Paths::from_vars(
            env(&[
                ("HOME", "/h"),
                ("XDG_DATA_HOME", "rel"),
                ("KEYWARD_HOME", ""),
            ]),
            1,
        )
        .unwrap();
        assert_eq!(p.data_dir, PathBuf::from("/h/.local/share/keyward"));
        assert!(Paths::from_vars(env(&[]), 1).is_err());
    }
}
