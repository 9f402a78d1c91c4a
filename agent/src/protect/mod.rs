//! Secret Key protectors: where this device keeps the Secret Key.
//!
//! | kind | where | protection |
//! |---|---|---|
//! | `yubikey` | sealed in the vault ([`crate::account::piv`]) | a P-256 key on the card and its PIN |
//! | `keychain` | the OS keychain ([`keychain`]) | the OS keychain |
//! | `file` | a 0600 file ([`file`]) | file permissions only |
//! | `none` | nowhere | the user types it |
//!
//! A protector *fetches* the Secret Key at unlock (possibly asking the user
//! for a PIN through [`UnlockIo`]); file and keychain protectors also *store*
//! it (enrolment, recovery, rotation). Fetching runs on a blocking thread.

pub mod file;
pub mod keychain;
pub mod yubikey;

use crate::account::secret_key::SecretKey;
use keyward_client::{PromptKind, Secret};

/// The agent's line to the user during an unlock: prompts and notices travel
/// to the client, which asks the user (the agent never reads a terminal).
pub trait UnlockIo: Send + Sync {
    /// Asks the user; `None` if cancelled or nobody answers.
    fn prompt(&self, kind: PromptKind, message: &str) -> Option<Secret>;
    /// Tells the user something now.
    fn notice(&self, message: &str);
}

/// An [`UnlockIo`] that cannot ask anything.
pub struct NoIo;

impl UnlockIo for NoIo {
    fn prompt(&self, _: PromptKind, _: &str) -> Option<Secret> {
        None
    }
    fn notice(&self, _: &str) {}
}

/// Why a protector could not give (or keep) the Secret Key.
#[derive(Debug, thiserror::Error)]
pub enum ProtectorError {
    /// Not reachable now (card absent, no keychain, no file); others may be tried.
    #[error("{0}")]
    Unavailable(String),
    /// A wrong PIN.
    #[error("wrong PIN for YubiKey {serial}: {tries_left} tries left before the PIN is blocked")]
    WrongPin {
        /// Card serial.
        serial: u32,
        /// Tries left.
        tries_left: u8,
    },
    /// The PIN is blocked.
    #[error(
        "the PIN of YubiKey {serial} is blocked; unblock it with the PUK \
         (`yubico-piv-tool -a unblock-pin`), then try again"
    )]
    PinBlocked {
        /// Card serial.
        serial: u32,
    },
    /// The user cancelled.
    #[error("cancelled")]
    Cancelled,
    /// Present but not usable: bad permissions, damaged contents.
    #[error("{0}")]
    Failed(String),
}

/// One way of keeping the Secret Key on this device.
pub trait Protector: Send + Sync {
    /// `file`, `keychain`, `yubikey:SERIAL:SLOT`.
    fn id(&self) -> String;
    /// `file`, `keychain` or `yubikey`.
    fn kind(&self) -> &'static str;
    /// Human details for `protector list`.
    fn describe(&self) -> String;
    /// Gives the Secret Key (blocking; may prompt through `io`).
    fn fetch(&self, io: &dyn UnlockIo) -> Result<SecretKey, ProtectorError>;
    /// [`Self::fetch`], and a newer Secret Key that another device sealed
    /// for this protector (a YubiKey wrap re-made there after a new Secret
    /// Key), if it has one: unverified, for the unlock to try first on
    /// that device's copy.
    fn fetch_with_newer(
        &self,
        io: &dyn UnlockIo,
    ) -> Result<(SecretKey, Option<SecretKey>), ProtectorError> {
        self.fetch(io).map(|sk| (sk, None))
    }
}

/// A protector that holds the Secret Key outside the vault and can take a new one.
pub trait Store: Protector {
    /// Keeps `sk` (replacing any older one).
    fn store(&self, sk: &SecretKey) -> Result<(), ProtectorError>;
    /// Forgets the Secret Key.
    fn erase(&self) -> Result<(), ProtectorError>;
}
