//! The `keychain` protector: the Secret Key in the OS keychain — the Secret
//! Service on Linux (gnome-keyring, KWallet), the Keychain on macOS, the
//! Credential Manager on Windows — through the `keyring` crate (4.x): service
//! `keyward`, user = the account ID, secret = the Secret Key in display form
//! (with dashes), as SECURITY.md §9 says.
//!
//! It protects the Secret Key as well as the keychain itself is protected:
//! typically encrypted with the login password, so it helps against the theft
//! of a disk whose machine was off, not against code running as the user.
//!
//! Every keychain call runs on a helper thread and is waited for at most a
//! timeout ([`DEFAULT_TIMEOUT`]): a keychain that does not answer (a D-Bus
//! peer that never replies, an unlock prompt nobody can see) becomes an error,
//! never a hung agent. A call that timed out keeps its thread until the
//! keychain answers; until then further calls fail at once instead of piling
//! up threads behind it.
//!
//! With the default features of `keyring` 4.x, the process connects to the
//! keychain once, on first use; if that connection fails (no D-Bus session
//! yet), the keychain stays unreachable for the life of the process.

use super::{Protector, ProtectorError, Store, UnlockIo};
use crate::account::AccountId;
use crate::account::secret_key::SecretKey;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use zeroize::{Zeroize, Zeroizing};

/// The keychain service name.
pub const SERVICE: &str = "keyward";
/// How long a keychain call may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The user name of the entry [`keychain_available`] looks up (never created).
const PROBE_USER: &str = "keyward-availability-probe";

/// The keychain protector of one account.
pub struct KeychainProtector {
    id: AccountId,
    timeout: Duration,
}

impl KeychainProtector {
    /// The entry of account `id`, with the default timeout.
    pub fn new(id: AccountId) -> Self {
        Self {
            id,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Changes how long each keychain call may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The account.
    pub fn account(&self) -> AccountId {
        self.id
    }

    fn user(&self) -> String {
        self.id.to_string()
    }

    fn error(&self, e: KeychainError, action: &str) -> ProtectorError {
        match e {
            KeychainError::Missing => ProtectorError::Unavailable(format!(
                "the OS keychain holds no Secret Key for account {} (service `{SERVICE}`)",
                self.id
            )),
            KeychainError::Other(detail) => {
                ProtectorError::Failed(format!("could not {action} the OS keychain: {detail}"))
            }
            other => ProtectorError::Unavailable(other.describe(self.timeout)),
        }
    }
}

impl Protector for KeychainProtector {
    fn id(&self) -> String {
        "keychain".into()
    }

    fn kind(&self) -> &'static str {
        "keychain"
    }

    fn describe(&self) -> String {
        format!(
            "the OS keychain, service `{SERVICE}`, user `{}` (as safe as the keychain's own \
             protection, usually the login password)",
            self.id
        )
    }

    fn fetch(&self, _io: &dyn UnlockIo) -> Result<SecretKey, ProtectorError> {
        let user = self.user();
        let text = bounded(self.timeout, move || -> Result<_, KeychainError> {
            let entry = keyring::Entry::new(SERVICE, &user).map_err(KeychainError::from)?;
            let password = entry.get_password().map_err(KeychainError::from)?;
            Ok(Zeroizing::new(password))
        })
        .and_then(|r| r)
        .map_err(|e| self.error(e, "read"))?;
        let sk = SecretKey::parse(text.as_str()).map_err(|_| {
            ProtectorError::Failed(format!(
                "the OS keychain entry for account {} (service `{SERVICE}`) does not hold a valid \
                 Secret Key (damaged?); unlock with the Secret Key from your Emergency Kit: \
                 `keyward unlock --with none`",
                self.id
            ))
        })?;
        drop(text);
        if sk.account_id() != self.id {
            return Err(ProtectorError::Failed(format!(
                "the OS keychain entry for account {} holds the Secret Key of account {}; remove it \
                 and enroll the keychain again",
                self.id,
                sk.account_id()
            )));
        }
        Ok(sk)
    }
}

impl Store for KeychainProtector {
    fn store(&self, sk: &SecretKey) -> Result<(), ProtectorError> {
        let user = self.user();
        let text = Zeroizing::new(sk.display().expose().to_owned());
        // What a keychain application shows for the entry (the crate's
        // default is `keyring:ID@keyward`); a store that takes no label
        // gets a plain entry.
        let label = format!("keyward Secret Key (account {})", self.id);
        bounded(self.timeout, move || -> Result<(), KeychainError> {
            // `Entry::new` sets the platform's store up; the labelled
            // entry is then made in that store.
            let plain = keyring::Entry::new(SERVICE, &user).map_err(KeychainError::from)?;
            let mods = std::collections::HashMap::from([("label", label.as_str())]);
            let entry = keyring_core::Entry::new_with_modifiers(SERVICE, &user, &mods)
                .map_or(plain, |inner| keyring::Entry { inner });
            entry
                .set_password(text.as_str())
                .map_err(KeychainError::from)
        })
        .and_then(|r| r)
        .map_err(|e| self.error(e, "write to"))
    }

    fn erase(&self) -> Result<(), ProtectorError> {
        let user = self.user();
        let r = bounded(self.timeout, move || -> Result<(), KeychainError> {
            let entry = keyring::Entry::new(SERVICE, &user).map_err(KeychainError::from)?;
            entry.delete_credential().map_err(KeychainError::from)
        })
        .and_then(|r| r);
        match r {
            Ok(()) | Err(KeychainError::Missing) => Ok(()),
            Err(e) => Err(self.error(e, "delete from")),
        }
    }
}

/// Checks quickly (within [`DEFAULT_TIMEOUT`]) that an OS keychain is
/// reachable. A locked keychain counts as reachable: the lock shows when the
/// Secret Key is read or written.
pub fn keychain_available() -> Result<(), String> {
    keychain_available_within(DEFAULT_TIMEOUT)
}

/// [`keychain_available`] with another timeout.
pub fn keychain_available_within(timeout: Duration) -> Result<(), String> {
    let r = bounded(timeout, || -> Result<(), KeychainError> {
        keyring::Entry::store_status()
            .as_ref()
            .map_err(|e| KeychainError::Unreachable(e.to_string()))?;
        let entry = keyring::Entry::new(SERVICE, PROBE_USER).map_err(KeychainError::from)?;
        match entry.get_password() {
            Ok(mut p) => {
                p.zeroize();
                Ok(())
            }
            Err(e) => match KeychainError::from(e) {
                KeychainError::Missing => Ok(()),
                e => Err(e),
            },
        }
    })
    .and_then(|r| r);
    r.map_err(|e| e.describe(timeout))
}

// ----------------------------------------------------------------- errors

/// What went wrong with the keychain, before it is worded for the user.
#[derive(Debug)]
enum KeychainError {
    /// No keychain: no D-Bus session, no Secret Service.
    Unreachable(String),
    /// The keychain is locked, or refused access.
    Locked(String),
    /// No entry for this account.
    Missing,
    /// The call did not return in time.
    TimedOut,
    /// An earlier call has not returned yet.
    Busy,
    /// Anything else.
    Other(String),
}

impl KeychainError {
    fn describe(&self, timeout: Duration) -> String {
        match self {
            KeychainError::Unreachable(d) => format!(
                "no OS keychain answered: start your desktop's keychain (gnome-keyring or KWallet) \
                 and restart the agent inside that session (`keyward agent stop`), or keep the \
                 Secret Key in a file instead (`keyward protector add file`) (details: {d})"
            ),
            KeychainError::Locked(d) => format!(
                "the OS keychain is locked: unlock it in your keychain application (or log in to \
                 the desktop) and try again (details: {d})"
            ),
            KeychainError::Missing => "the OS keychain has no such entry".into(),
            KeychainError::TimedOut => format!(
                "the OS keychain did not answer within {} s (is it waiting for an unlock prompt \
                 that nobody can see?); unlock it and try again",
                timeout.as_secs_f32()
            ),
            KeychainError::Busy => "the OS keychain has not answered an earlier request yet \
                 (is it waiting for an unlock prompt?); unlock it and try again"
                .into(),
            KeychainError::Other(d) => format!(
                "the OS keychain failed: try again, or keep the Secret Key in a file instead \
                 (`keyward protector add file`) (details: {d})"
            ),
        }
    }
}

impl From<keyring::Error> for KeychainError {
    fn from(e: keyring::Error) -> Self {
        match e {
            keyring::Error::NoEntry => KeychainError::Missing,
            keyring::Error::NoDefaultStore => {
                KeychainError::Unreachable(match keyring::Entry::store_status() {
                    Err(e) => e.to_string(),
                    Ok(()) => "no credential store".into(),
                })
            }
            keyring::Error::PlatformFailure(e) => KeychainError::Unreachable(e.to_string()),
            keyring::Error::NoStorageAccess(e) => KeychainError::Locked(e.to_string()),
            keyring::Error::BadEncoding(mut bytes) => {
                bytes.zeroize();
                KeychainError::Other("the entry is not text (damaged?)".into())
            }
            keyring::Error::BadDataFormat(mut bytes, _) => {
                bytes.zeroize();
                KeychainError::Other("the entry is malformed (damaged?)".into())
            }
            keyring::Error::Ambiguous(entries) => KeychainError::Other(format!(
                "{} entries match service `{SERVICE}` and this account; remove the extra ones \
                 (e.g. with seahorse or `secret-tool clear`)",
                entries.len()
            )),
            e => KeychainError::Other(e.to_string()),
        }
    }
}

// ---------------------------------------------------------------- timeouts

/// Calls that timed out and whose thread has not finished yet.
static PENDING: AtomicUsize = AtomicUsize::new(0);

enum CallState<T> {
    Running,
    /// `None`: the call panicked.
    Done(Option<T>),
    Abandoned,
}

struct Call<T> {
    state: Mutex<CallState<T>>,
    done: Condvar,
}

/// Runs `f` on a helper thread and waits at most `timeout` for it. A result
/// that arrives late is dropped (zeroized, for zeroizing types) by the thread.
fn bounded<T, F>(timeout: Duration, f: F) -> Result<T, KeychainError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if PENDING.load(Ordering::SeqCst) > 0 {
        return Err(KeychainError::Busy);
    }
    let call = Arc::new(Call {
        state: Mutex::new(CallState::Running),
        done: Condvar::new(),
    });
    let theirs = Arc::clone(&call);
    std::thread::Builder::new()
        .name("keyward-keychain".into())
        .spawn(move || {
            // A panic in the keychain library must not leave the call "running".
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
            let mut state = theirs.state.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(*state, CallState::Abandoned) {
                PENDING.fetch_sub(1, Ordering::SeqCst);
                drop(state);
                drop(out);
            } else {
                *state = CallState::Done(out);
                theirs.done.notify_all();
            }
        })
        .map_err(|e| KeychainError::Other(format!("cannot start a thread: {e}")))?;
    let state = call.state.lock().unwrap_or_else(|p| p.into_inner());
    let (mut state, _) = call
        .done
        .wait_timeout_while(state, timeout, |s| matches!(s, CallState::Running))
        .unwrap_or_else(|p| p.into_inner());
    match std::mem::replace(&mut *state, CallState::Abandoned) {
        CallState::Done(Some(out)) => Ok(out),
        CallState::Done(None) => Err(KeychainError::Other(
            "the keychain library failed unexpectedly (it panicked)".into(),
        )),
        CallState::Running => {
            // Still running: it is now abandoned and counted as pending.
            PENDING.fetch_add(1, Ordering::SeqCst);
            Err(KeychainError::TimedOut)
        }
        CallState::Abandoned => Err(KeychainError::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// One test, because the pending counter is process-wide.
    #[test]
    fn calls_are_bounded_and_a_hung_call_blocks_the_next_ones_until_it_returns() {
        assert_eq!(bounded(Duration::from_secs(5), || 42).unwrap(), 42);

        let (release, wait) = std::sync::mpsc::channel::<()>();
        let start = Instant::now();
        let r = bounded(Duration::from_millis(100), move || {
            let _ = wait.recv();
            1
        });
        assert!(matches!(r, Err(KeychainError::TimedOut)));
        assert!(start.elapsed() < Duration::from_secs(2));

        // While the first call hangs, others fail at once.
        let start = Instant::now();
        assert!(matches!(
            bounded(Duration::from_secs(5), || 2),
            Err(KeychainError::Busy)
        ));
        assert!(start.elapsed() < Duration::from_millis(500));

        // Once it returns, calls work again.
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while PENDING.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "the hung call never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(bounded(Duration::from_secs(5), || 3).unwrap(), 3);
    }

    #[test]
    fn keyring_errors_are_sorted_and_worded() {
        let t = DEFAULT_TIMEOUT;
        assert!(matches!(
            KeychainError::from(keyring::Error::NoEntry),
            KeychainError::Missing
        ));
        let e = KeychainError::from(keyring::Error::PlatformFailure("no bus".into()));
        assert!(e.describe(t).starts_with("no OS keychain answered"));
        let e = KeychainError::from(keyring::Error::NoStorageAccess("locked".into()));
        assert!(e.describe(t).starts_with("the OS keychain is locked"));
        let e = KeychainError::from(keyring::Error::BadEncoding(b"K1-SECRET".to_vec()));
        assert!(matches!(&e, KeychainError::Other(_)));
        assert!(!e.describe(t).contains("K1-SECRET"));
        assert!(KeychainError::TimedOut.describe(t).contains("within 5 s"));

        let id = AccountId::parse("ABCDEF").unwrap();
        let p = KeychainProtector::new(id);
        assert!(matches!(
            p.error(KeychainError::Missing, "read"),
            ProtectorError::Unavailable(m) if m.contains("ABCDEF")
        ));
        assert!(matches!(
            p.error(KeychainError::Locked("x".into()), "read"),
            ProtectorError::Unavailable(_)
        ));
        assert!(matches!(
            p.error(KeychainError::Other("x".into()), "read"),
            ProtectorError::Failed(_)
        ));
        assert_eq!((p.id(), p.kind()), ("keychain".into(), "keychain"));
        assert!(p.describe().contains("service `keyward`, user `ABCDEF`"));
    }
}
