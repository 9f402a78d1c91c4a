//! The agent's state machine: no account → locked → unlocked, the timers that
//! lock it again, and every operation on it.
//!
//! Concurrency: the state is behind a `RwLock` (many `get`s at once; a write
//! lock for changes). Vault writes are serialised by a mutex taken before
//! the write lock (`write_state` takes both). `set` and `remove` hold only
//! that mutex and a read lock while they encode and fsync the new file, and
//! take the write lock just to apply the change in memory, so `get`, `list`
//! and `status` do not wait for a disk. Slow operations (Argon2id, protectors that wait for a
//! PIN) run on blocking threads and are serialised by an async mutex, so that
//! `status` and `get` on an unlocked vault are never held up by an unlock
//! in progress.

use crate::account::AccountId;
use crate::account::password::Password;
use crate::account::secret_key::SecretKey;
use crate::attempts::Attempts;
use crate::clock::Clock;
use crate::config::Config;
use crate::protect::file::FileProtector;
use crate::protect::keychain::KeychainProtector;
use crate::protect::yubikey::YubiKeyProtector;
use crate::protect::{Protector, ProtectorError, Store, UnlockIo};
use crate::vault::format::{FLAG_STALE, FormatError, ProtectorKind};
use crate::vault::{self, ChangeError, ReadError, UnlockError};
use keyward_client::Paths;
use keyward_client::message::{
    AgentError, ErrorCode, InitRequest, ItemInfo, StatusInfo, UnlockRequest,
};
use keyward_client::{AgentState, PromptKind, Response, Secret};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

#[path = "init.rs"]
mod init;
#[path = "unlock.rs"]
mod unlock;

/// The agent's version, sent in the handshake.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// An account on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its id.
    pub id: AccountId,
    /// Its vault file.
    pub vault_path: PathBuf,
}

/// An unlocked session.
pub struct Session {
    pub(super) account: Account,
    pub(super) vault: vault::Unlocked,
    pub(super) protector: String,
    /// When, on the [`boot_clock`].
    pub(super) unlocked_at: Duration,
}

/// Time since boot, the time the machine was suspended included
/// (`CLOCK_BOOTTIME`): the idle lock and the lifetime count the hours a
/// laptop sleeps, which the monotonic clock does not.
pub(super) fn boot_clock() -> Duration {
    crate::harden::boot_clock()
}

/// Whole seconds, rounded up: a back-off with 0.3 s left is not "0 s"
/// (attempts are still refused then).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The longest the lock timer sleeps at a time. Its sleep runs on the
/// monotonic clock, which stops while the machine is suspended: after a
/// resume, a deadline that passed meanwhile is seen within this long.
const RECHECK: Duration = Duration::from_secs(30);

/// [`Agent::write_state`]'s guard: the state, and the vault writer's lock
/// (released after the state).
pub(super) struct StateWrite<'a> {
    state: std::sync::RwLockWriteGuard<'a, State>,
    _writer: std::sync::MutexGuard<'a, ()>,
}

impl std::ops::Deref for StateWrite<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for StateWrite<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

pub(super) enum State {
    NoAccount,
    Locked(Account),
    Unlocked(Box<Session>),
}

/// The agent.
pub struct Agent {
    /// Where things live.
    pub paths: Paths,
    /// Settings.
    pub config: Config,
    /// Our uid (peers must match, or be root).
    pub uid: u32,
    pub(super) clock: Arc<dyn Clock>,
    state: RwLock<State>,
    /// Serialises everything that writes the vault file; taken before
    /// `state` is locked for writing.
    writer: Mutex<()>,
    pub(super) heavy: tokio::sync::Mutex<()>,
    /// One unlock on demand (a pinentry) at a time (`on_demand.rs`).
    pub(super) on_demand: tokio::sync::Mutex<()>,
    /// How many of those prompts have run (a request that waited through
    /// one takes its outcome instead of asking again).
    pub(super) on_demand_prompts: AtomicU64,
    attempts: Mutex<Attempts>,
    /// The last activity, in milliseconds on the [`boot_clock`].
    last_activity_ms: AtomicU64,
    /// Counts calls of [`Self::lock`], whatever the state was: an unlock or
    /// a recovery that a lock overtook (suspend, logout, `keyward lock`
    /// while it derived keys or waited for a PIN) does not unlock.
    locks: AtomicU64,
    /// Unlocks that reached the writers' lock (tests wait for it).
    #[cfg(test)]
    unlocks_at_writer: AtomicU64,
    pub(super) timer: Notify,
    /// Signalled when the agent should stop.
    pub shutdown: Notify,
    /// The SSH agent's keys outside the vault (wiped by every lock).
    pub(crate) ssh: crate::ssh::Table,
}

pub(super) fn err(code: ErrorCode, message: impl Into<String>) -> AgentError {
    AgentError::new(code, message)
}

pub(super) fn locked_error() -> AgentError {
    err(
        ErrorCode::Locked,
        "the agent is locked: run `keyward unlock`",
    )
}

pub(super) fn no_account_error() -> AgentError {
    err(
        ErrorCode::NoAccount,
        "there is no keyward account yet: run `keyward init`",
    )
}

fn session_in<T>(
    st: &State,
    f: impl FnOnce(&Session) -> Result<T, AgentError>,
) -> Result<T, AgentError> {
    match st {
        State::Unlocked(s) => f(s),
        State::Locked(_) => Err(locked_error()),
        State::NoAccount => Err(no_account_error()),
    }
}

/// A written vault change that cannot be applied in memory. Cannot happen:
/// nothing else writes the vault (or unlocks it anew) between a change's
/// copy or preparation and its apply, as every writer and `install` hold the
/// writers' mutex (a lock meanwhile leaves nothing to apply to). Were it to,
/// memory would no longer match the file and the next write would lose the
/// change: lock, so that the next unlock reads the file.
fn lock_to_reread(st: &mut State) {
    debug_assert!(false, "a vault write slipped past the writer's lock");
    tracing::error!("a vault change did not apply in memory; locking to re-read the vault");
    if let State::Unlocked(s) = st {
        let account = s.account.clone();
        *st = State::Locked(account);
    }
}

fn get_in(s: &Session, name: &str) -> Result<Response, AgentError> {
    s.vault
        .get(name)
        .map(|v| Response::Value(v.into()))
        .ok_or_else(|| {
            err(
                ErrorCode::NotFound,
                format!("no item named {name:?} (see `keyward list`)"),
            )
        })
}

fn list_in(s: &Session) -> Result<Response, AgentError> {
    Ok(Response::Items(
        s.vault
            .list()
            .into_iter()
            .map(|m| ItemInfo {
                name: m.name,
                created: m.created,
                modified: m.modified,
            })
            .collect(),
    ))
}

pub(super) fn internal(e: impl std::fmt::Display) -> AgentError {
    err(
        ErrorCode::Internal,
        format!("internal error in the agent: {e}"),
    )
}

/// The vault record of the protector `id` (`file`, `keychain`, `yubikey:SERIAL:SLOT`).
pub(super) fn protector_ref(id: &str) -> Option<vault::ProtectorRef> {
    match id {
        "file" => Some(vault::ProtectorRef::Kind(ProtectorKind::File)),
        "keychain" => Some(vault::ProtectorRef::Kind(ProtectorKind::Keychain)),
        other => {
            let mut parts = other.strip_prefix("yubikey:")?.split(':');
            let serial = parts.next()?.parse().ok()?;
            let slot = u8::from_str_radix(parts.next()?, 16).ok()?;
            Some(vault::ProtectorRef::Piv { serial, slot })
        }
    }
}

/// The vault file of an account.
pub fn vault_path(data_dir: &Path, id: &AccountId) -> PathBuf {
    data_dir.join(format!("vault-{id}.kwv"))
}

/// Finds the account: the vault this device joined, else the one in the data directory.
pub fn find_account(paths: &Paths, config: &Config) -> Result<Option<Account>, String> {
    if let Some(a) = super::join::pointed_account(paths, config) {
        return Ok(Some(a));
    }
    let entries = match std::fs::read_dir(&paths.data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", paths.data_dir.display())),
    };
    let mut found: Vec<Account> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_prefix("vault-")?.strip_suffix(".kwv")?;
            AccountId::parse(id).ok().map(|id| Account {
                id,
                vault_path: e.path(),
            })
        })
        .collect();
    // A main file deleted from the folder, other devices' parts left.
    let deleted =
        || super::sync::main_file_deleted(paths).map(|(id, vault_path)| Account { id, vault_path });
    if let Some(want) = &config.account {
        let wanted = |a: &Account| a.id.as_str() == want;
        return Ok(found
            .into_iter()
            .find(wanted)
            .or_else(|| deleted().filter(wanted)));
    }
    match found.len() {
        0 => Ok(deleted()),
        1 => Ok(found.pop()),
        _ => Err(format!(
            "{} holds several vaults ({}); set `account = \"ID\"` in {}",
            paths.data_dir.display(),
            found
                .iter()
                .map(|a| a.id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            paths.config_file().display()
        )),
    }
}

pub(super) fn password_from(secret: &Secret) -> Result<Password, AgentError> {
    let s = secret
        .expose_str()
        .ok_or_else(|| err(ErrorCode::InvalidInput, "the password is not valid UTF-8"))?;
    Password::new(s).map_err(|e| err(ErrorCode::InvalidInput, e.to_string()))
}

/// [`password_from`] for a password being chosen: also refuses characters
/// unassigned in keyward's Unicode version (docs/SECURITY.md §4).
pub(super) fn new_password_from(secret: &Secret) -> Result<Password, AgentError> {
    let s = secret
        .expose_str()
        .ok_or_else(|| err(ErrorCode::InvalidInput, "the password is not valid UTF-8"))?;
    Password::new_chosen(s).map_err(|e| err(ErrorCode::InvalidInput, e.to_string()))
}

pub(super) fn change_error(e: ChangeError) -> AgentError {
    match e {
        ChangeError::Io(io) => err(
            ErrorCode::Storage,
            format!("could not write the vault ({io}); nothing was changed"),
        ),
        ChangeError::Name(n) => err(ErrorCode::InvalidInput, n.to_string()),
        ChangeError::ValueTooLarge(_) => err(ErrorCode::InvalidInput, e.to_string()),
        ChangeError::NoSuchItem(_) | ChangeError::NotFound(..) => {
            err(ErrorCode::NotFound, e.to_string())
        }
        ChangeError::Exists(_) => err(ErrorCode::Exists, e.to_string()),
        ChangeError::Password(p) => err(ErrorCode::InvalidInput, p.to_string()),
        other => internal(other),
    }
}

pub(super) fn read_error(e: ReadError) -> AgentError {
    match e {
        ReadError::NotFound => no_account_error(),
        ReadError::Io(io) => err(ErrorCode::Storage, format!("cannot read the vault: {io}")),
        ReadError::Format(f @ FormatError::NewerVersion { .. }) => {
            err(ErrorCode::Corrupt, f.to_string())
        }
        ReadError::Format(f) => err(ErrorCode::Corrupt, f.to_string()),
    }
}

impl Agent {
    /// A new agent (locked, or without an account).
    pub fn new(
        paths: Paths,
        config: Config,
        uid: u32,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, String> {
        let state = match find_account(&paths, &config)? {
            Some(a) => {
                vault::store::remove_stale_temp_files(&a.vault_path);
                State::Locked(a)
            }
            None => State::NoAccount,
        };
        let attempts = Attempts::load(&paths.state_dir.join("attempts"), clock.unix_now());
        Ok(Arc::new(Self {
            paths,
            config,
            uid,
            clock,
            state: RwLock::new(state),
            writer: Mutex::new(()),
            heavy: tokio::sync::Mutex::new(()),
            on_demand: tokio::sync::Mutex::new(()),
            on_demand_prompts: AtomicU64::new(0),
            attempts: Mutex::new(attempts),
            last_activity_ms: AtomicU64::new(0),
            locks: AtomicU64::new(0),
            #[cfg(test)]
            unlocks_at_writer: AtomicU64::new(0),
            timer: Notify::new(),
            shutdown: Notify::new(),
            ssh: crate::ssh::Table::default(),
        }))
    }

    fn now_ms(&self) -> u64 {
        boot_clock().as_millis() as u64
    }

    /// Records activity (resets the idle timer).
    pub fn touch(&self) {
        self.last_activity_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    pub(super) fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state if it can be read without waiting (no writer holds it or
    /// waits for it): for the event loop, which must not wait on a vault
    /// write's fsync.
    fn try_read_state(&self) -> Option<std::sync::RwLockReadGuard<'_, State>> {
        match self.state.try_read() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The state, exclusively, and the vault writer's lock with it.
    pub(super) fn write_state(&self) -> StateWrite<'_> {
        let writer = self.writer();
        StateWrite {
            state: self.state_for_apply(&writer),
            _writer: writer,
        }
    }

    /// The vault writer's lock alone (see [`Self::set`]).
    pub(super) fn writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state, exclusively, for a writer that holds the writer's lock.
    fn state_for_apply(
        &self,
        _writer: &std::sync::MutexGuard<'_, ()>,
    ) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes a change to the items the way that keeps readers going: the
    /// change is prepared under a read lock, written and fsynced under the
    /// writer's lock alone, then applied under a brief write lock.
    fn write_items(
        &self,
        prepare: impl FnOnce(&vault::Unlocked) -> Result<vault::PreparedItemChange, ChangeError>,
        error: impl Fn(ChangeError) -> AgentError,
    ) -> Result<(), AgentError> {
        let writer = self.writer();
        let (path, change) = session_in(&self.read_state(), |s| {
            Ok((
                s.account.vault_path.clone(),
                prepare(&s.vault).map_err(&error)?,
            ))
        })?;
        // The encoded file (the size of the vault) is freed here, before
        // the write lock.
        let change = change.write(&path).map_err(|e| error(e.into()))?;
        let mut st = self.state_for_apply(&writer);
        let mut written = None;
        if let State::Unlocked(s) = &mut *st {
            if s.vault.apply(change) {
                written = Some((s.account.id, s.vault.file().generation));
            } else {
                lock_to_reread(&mut st);
            }
        }
        drop(st);
        if let Some((id, generation)) = written {
            self.remember_generation(&id, generation);
        }
        Ok(())
    }

    /// Makes one of the rarer changes to the vault (protectors, recovery
    /// codes, the password, the Secret Key) without holding readers up: a
    /// copy of the vault is made under a read lock, `edit` runs on the copy
    /// (key derivation, the file write and its fsync included) holding only
    /// the writers' lock, and the copy replaces the vault in memory under a
    /// brief write lock, if `edit` wrote it (whether or not it then
    /// failed: memory follows the file).
    pub(super) fn edit_vault<T>(
        &self,
        edit: impl FnOnce(&mut vault::Unlocked, &Path) -> Result<T, AgentError>,
    ) -> Result<T, AgentError> {
        let writer = self.writer();
        let (path, mut copy) = session_in(&self.read_state(), |s| {
            Ok((
                s.account.vault_path.clone(),
                s.vault.try_clone().map_err(internal)?,
            ))
        })?;
        let generation = copy.file().generation;
        let out = edit(&mut copy, &path);
        if copy.file().generation != generation {
            self.remember_generation(&copy.account_id(), copy.file().generation);
            self.remember_wrap_costs(copy.file());
            let mut st = self.state_for_apply(&writer);
            let old = match &mut *st {
                State::Unlocked(s) if s.vault.file().generation == generation => {
                    Some(std::mem::replace(&mut s.vault, copy))
                }
                State::Unlocked(_) => {
                    lock_to_reread(&mut st);
                    None
                }
                // Locked meanwhile (locking does not wait for writers): the
                // file has the change and the next unlock reads it.
                _ => None,
            };
            drop(st);
            // The old copy (the size of the vault) is freed outside the lock.
            drop(old);
        }
        out
    }

    pub(super) fn attempts(&self) -> std::sync::MutexGuard<'_, Attempts> {
        self.attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// When the agent must lock next (on the [`boot_clock`]), if unlocked.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.deadline_in(&self.read_state())
    }

    fn deadline_in(&self, st: &State) -> Option<Duration> {
        let State::Unlocked(s) = st else {
            return None;
        };
        let idle = self
            .config
            .idle_lock()
            .map(|d| Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed)) + d);
        let life = self.config.lifetime().map(|d| s.unlocked_at + d);
        match (idle, life) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A mark to give [`Self::install_unless_locked`]: taken when an unlock
    /// begins.
    pub(super) fn lock_mark(&self) -> u64 {
        self.locks.load(Ordering::SeqCst)
    }

    /// Makes `session` the unlocked state and starts its timers.
    pub(super) fn install(&self, session: Session) {
        *self.write_state() = State::Unlocked(Box::new(session));
        self.started_session();
    }

    fn started_session(&self) {
        self.touch();
        self.timer.notify_one();
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status("unlocked")]);
    }

    /// Makes `session` the unlocked state, unless [`Self::lock`] was called
    /// since `mark` was taken: then the session is dropped (its keys wiped)
    /// and the agent stays locked. For a writer that holds the writers'
    /// lock.
    pub(super) fn install_unless_locked(
        &self,
        writer: &std::sync::MutexGuard<'_, ()>,
        session: Session,
        mark: u64,
    ) -> Result<(), AgentError> {
        let mut st = self.state_for_apply(writer);
        // `lock` counts under the state's write lock: held here, no lock
        // can slip in between this check and the install.
        if self.locks.load(Ordering::SeqCst) != mark {
            drop(st);
            drop(session);
            return Err(err(
                ErrorCode::Cancelled,
                "the agent was locked (by `keyward lock`, suspend, a screen lock or the end of a \
                 login session) while this unlock ran, so it stays locked; unlock again",
            ));
        }
        *st = State::Unlocked(Box::new(session));
        drop(st);
        self.started_session();
        Ok(())
    }

    /// `SessionEnd`: a login session of the user is ending. Locks, unless
    /// logind says the user has another session open; when logind cannot be
    /// asked, locks (as if this was the last session).
    pub async fn session_end(&self, session: Option<String>) -> Response {
        let uid = self.uid;
        let asked = tokio::task::spawn_blocking(move || {
            super::logind::other_sessions(uid, session.as_deref())
        })
        .await
        .unwrap_or_else(|e| Err(format!("the logind question failed: {e}")));
        match asked {
            Ok(others) if !others.is_empty() => {
                tracing::info!(
                    sessions = ?others,
                    "a login session ended; the user has other sessions open, staying unlocked"
                );
                Response::StillInUse { sessions: others }
            }
            Ok(_) => {
                self.lock("the user's last login session ended");
                Response::Ok
            }
            Err(why) => {
                tracing::info!("cannot ask logind for the user's other sessions ({why}); locking");
                self.lock("a login session ended");
                Response::Ok
            }
        }
    }

    /// Locks: the session (keys, item index) is dropped and its memory wiped.
    /// Takes the state's write lock but not the writers' mutex: a lock
    /// (suspend, screen lock, the idle timer) is never held up by a vault
    /// change deriving keys or waiting for the disk. Such a change still
    /// writes its file; it is not applied to the locked state, and the next
    /// unlock reads it. An unlock in progress (deriving keys, waiting for a
    /// PIN) is called off: it will not unlock.
    pub fn lock(&self, reason: &str) -> bool {
        let mut st = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.locks.fetch_add(1, Ordering::SeqCst);
        self.ssh.wipe();
        if let State::Unlocked(s) = &*st {
            let account = s.account.clone();
            let old = std::mem::replace(&mut *st, State::Locked(account));
            drop(st);
            // The keys are wiped first; the generation file (an fsync) after.
            let State::Unlocked(s) = old else {
                unreachable!("replaced an unlocked state")
            };
            let (id, generation) = (s.account.id, s.vault.file().generation);
            drop(s);
            self.remember_generation(&id, generation);
            tracing::info!(reason, "locked");
            crate::harden::release_free_memory();
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status("locked")]);
            self.timer.notify_one();
            true
        } else {
            false
        }
    }

    /// The lock timer: sleeps until the next deadline and locks then.
    pub async fn run_lock_timer(self: Arc<Self>) {
        loop {
            match self.next_deadline() {
                None => self.timer.notified().await,
                Some(deadline) => {
                    let wait = deadline.saturating_sub(boot_clock()).min(RECHECK);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {
                            // Activity may have moved the deadline while we slept.
                            if self.next_deadline().is_some_and(|d| d <= boot_clock()) {
                                self.lock("timeout");
                            }
                        }
                        () = self.timer.notified() => {}
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------ status

    /// `Status`.
    pub fn status(&self) -> StatusInfo {
        let backoff = self
            .attempts()
            .remaining(self.clock.unix_now(), Instant::now());
        self.status_in(ceil_secs(backoff), &self.read_state())
    }

    /// `Status` if it can be answered without waiting for a lock.
    pub fn try_status(&self) -> Option<StatusInfo> {
        let backoff = match self.attempts.try_lock() {
            Ok(a) => a.remaining(self.clock.unix_now(), Instant::now()),
            Err(std::sync::TryLockError::Poisoned(p)) => p
                .into_inner()
                .remaining(self.clock.unix_now(), Instant::now()),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let backoff = ceil_secs(backoff);
        Some(self.status_in(backoff, &*self.try_read_state()?))
    }

    fn status_in(&self, backoff: u64, st: &State) -> StatusInfo {
        let now = boot_clock();
        let deadline = self.deadline_in(st);
        let (state, account_id, protector, lifetime_left, mlocked) = match st {
            State::NoAccount => (AgentState::Uninitialized, None, None, None, false),
            State::Locked(a) => (
                AgentState::Locked,
                Some(a.id.to_string()),
                None,
                None,
                false,
            ),
            State::Unlocked(s) => (
                AgentState::Unlocked,
                Some(s.account.id.to_string()),
                Some(s.protector.clone()),
                self.config
                    .lifetime()
                    .map(|d| (s.unlocked_at + d).saturating_sub(now).as_secs()),
                s.vault.keys_locked_in_memory(),
            ),
        };
        StatusInfo {
            state,
            account_id,
            idle_lock_in: deadline
                .filter(|_| state == AgentState::Unlocked)
                .map(|d| d.saturating_sub(now).as_secs()),
            lifetime_left,
            protector,
            backoff_secs: backoff,
            agent_version: AGENT_VERSION.into(),
            pid: std::process::id(),
            keys_mlocked: mlocked,
        }
    }

    // ------------------------------------------------------------------ items

    pub(super) fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, AgentError>,
    ) -> Result<T, AgentError> {
        session_in(&self.read_state(), f)
    }

    /// [`Self::with_session`] if the state can be read without waiting.
    fn try_with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, AgentError>,
    ) -> Option<Result<T, AgentError>> {
        Some(session_in(&*self.try_read_state()?, f))
    }

    /// `Get`.
    pub fn get(&self, name: &str) -> Result<Response, AgentError> {
        self.with_session(|s| get_in(s, name))
    }

    /// `Get` if it can be answered without waiting for a lock.
    pub fn try_get(&self, name: &str) -> Option<Result<Response, AgentError>> {
        self.try_with_session(|s| get_in(s, name))
    }

    /// `List`.
    pub fn list(&self) -> Result<Response, AgentError> {
        self.with_session(list_in)
    }

    /// `List` if it can be answered without waiting for a lock.
    pub fn try_list(&self) -> Option<Result<Response, AgentError>> {
        self.try_with_session(list_in)
    }

    /// `Set`.
    pub fn set(&self, name: &str, value: &Secret) -> Result<Response, AgentError> {
        let now = self.clock.unix_now();
        self.write_items(|v| v.prepare_set(name, value.expose(), now), change_error)?;
        Ok(Response::Ok)
    }

    /// `Remove`.
    pub fn remove(&self, name: &str) -> Result<Response, AgentError> {
        let now = self.clock.unix_now();
        self.write_items(
            |v| v.prepare_remove(name, now),
            |e| match e {
                ChangeError::NoSuchItem(_) => err(
                    ErrorCode::NotFound,
                    format!("no item named {name:?} (see `keyward list`)"),
                ),
                other => change_error(other),
            },
        )?;
        Ok(Response::Ok)
    }

    // ------------------------------------------------------------------ password

    /// `ChangePassword`.
    pub async fn change_password(
        self: &Arc<Self>,
        old: &Secret,
        new: &Secret,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        let old = password_from(old)?;
        let new = new_password_from(new)?;
        if let Some(e) = self.backoff_error("not changing the password") {
            return Err(e);
        }
        let params = self.config.kdf_params();
        // Verify and re-wrap on a blocking thread, on a copy of the vault
        // (readers go on meanwhile).
        let me = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            me.edit_vault(|v, path| {
                let ok = v.verify_password(&old).map_err(change_error)?;
                if !ok {
                    return Ok(false);
                }
                v.change_password(path, &new, params)
                    .map_err(change_error)?;
                Ok(true)
            })
        })
        .await
        .map_err(internal)??;
        if !result {
            return Err(self.record_failure("the current Master Password is wrong"));
        }
        let _ = self.attempts().reset();
        tracing::info!("master password changed");
        Ok(Response::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::password::KdfParams;
    use crate::clock::SystemClock;
    use crate::config::KdfConfig;
    use crate::vault::store::before_sync;
    use keyward_client::Request;
    use std::sync::mpsc;

    fn unlocked_agent(home: &Path) -> Arc<Agent> {
        let config = Config {
            kdf: KdfConfig {
                memory_kib: KdfParams::MIN_NEW_M_KIB,
                iterations: KdfParams::MIN_NEW_T,
                parallelism: 1,
            },
            ..Config::default()
        };
        let agent = Agent::new(
            Paths::under(home),
            config,
            crate::harden::euid(),
            Arc::new(SystemClock),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let created = rt.block_on(agent.init(InitRequest {
            password: "correct horse battery staple".into(),
            protector: "file".into(),
        }));
        assert!(matches!(created, Ok(Response::Created { .. })));
        agent
    }

    fn value(r: &Result<Response, AgentError>) -> Vec<u8> {
        match r {
            Ok(Response::Value(v)) => v.expose().to_vec(),
            other => panic!("not a value: {other:?}"),
        }
    }

    /// A vault write held in its fsync (a slow disk) holds up no reader:
    /// `get`, `list` and `status` are answered meanwhile — by the event
    /// loop's non-waiting path too — with the value from before the write,
    /// and the new value once it is durable.
    #[test]
    fn reads_go_on_while_a_vault_write_waits_for_its_disk() {
        let home = tempfile::tempdir().unwrap();
        let agent = unlocked_agent(home.path());
        agent.set("token", &Secret::from_slice(b"old")).unwrap();

        let (writer, release) = {
            let agent = agent.clone();
            held_in_fsync(move || agent.set("token", &Secret::from_slice(b"new")))
        };

        let reader = {
            let agent = agent.clone();
            std::thread::spawn(move || {
                let get = Request::Get {
                    name: "token".into(),
                };
                let quick = super::super::dispatch::quick_now(&agent, &get);
                let list = super::super::dispatch::quick_now(&agent, &Request::List);
                (
                    agent.get("token"),
                    quick,
                    list.is_some(),
                    agent.status().state,
                )
            })
        };
        let answered = ends_soon(&reader);
        let writer_still_in_fsync = !writer.is_finished();
        let _ = release.send(());
        assert!(answered, "a reader waited for the vault write's fsync");
        assert!(writer_still_in_fsync);
        let (got, quick, listed, state) = reader.join().unwrap();
        assert_eq!(value(&got), b"old");
        assert_eq!(
            value(&quick.map(Ok).expect("the loop would hand off")),
            b"old"
        );
        assert!(listed, "the loop would hand off list");
        assert_eq!(state, AgentState::Unlocked);

        assert!(matches!(writer.join().unwrap(), Ok(Response::Ok)));
        assert_eq!(value(&agent.get("token")), b"new");
    }

    /// Runs `write` on a thread of its own and returns once it waits inside
    /// its vault file's fsync (the test hook holds it there); sending on the
    /// returned channel lets it go on.
    fn held_in_fsync<T: Send + 'static>(
        write: impl FnOnce() -> T + Send + 'static,
    ) -> (std::thread::JoinHandle<T>, mpsc::Sender<()>) {
        let (at_sync, in_sync) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            before_sync::set(move || {
                let _ = at_sync.send(());
                let _ = released.recv();
            });
            write()
        });
        in_sync
            .recv_timeout(Duration::from_secs(60))
            .expect("the write never reached its fsync");
        (writer, release)
    }

    /// Whether `t` ends within 20 s.
    fn ends_soon<T>(t: &std::thread::JoinHandle<T>) -> bool {
        let waited = std::time::Instant::now();
        while !t.is_finished() && waited.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(10));
        }
        t.is_finished()
    }

    fn recovery_codes(agent: &Agent) -> usize {
        match agent.recovery_code_list() {
            Ok(Response::RecoveryCodes(v)) => v.len(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_go_on_while_a_rare_vault_change_waits_for_its_disk() {
        let home = tempfile::tempdir().unwrap();
        let agent = unlocked_agent(home.path());
        agent.set("token", &Secret::from_slice(b"v")).unwrap();
        let (writer, release) = {
            let agent = agent.clone();
            held_in_fsync(move || {
                agent.edit_vault(|v, path| v.add_recovery_code(path, 7).map_err(change_error))
            })
        };
        let reader = {
            let agent = agent.clone();
            std::thread::spawn(move || {
                let get = Request::Get {
                    name: "token".into(),
                };
                (
                    super::super::dispatch::quick_now(&agent, &get).is_some(),
                    agent.get("token"),
                    recovery_codes(&agent),
                )
            })
        };
        let answered = ends_soon(&reader);
        let _ = release.send(());
        assert!(answered, "a reader waited for a recovery code's fsync");
        let (quick, got, codes_meanwhile) = reader.join().unwrap();
        assert!(quick, "the loop would hand off get");
        assert_eq!(value(&got), b"v");
        assert_eq!(
            codes_meanwhile, 0,
            "the change showed before it was written"
        );
        writer.join().unwrap().unwrap();
        assert_eq!(recovery_codes(&agent), 1);
        assert_eq!(value(&agent.get("token")), b"v");
    }

    #[test]
    fn a_rare_change_in_memory_follows_the_file() {
        let home = tempfile::tempdir().unwrap();
        let agent = unlocked_agent(home.path());
        let on_disk = |agent: &Agent| {
            let path =
                session_in(&agent.read_state(), |s| Ok(s.account.vault_path.clone())).unwrap();
            vault::read(&path).unwrap().vault.recovery_wraps.len()
        };
        // Failing before anything is written: nothing changes.
        let r: Result<(), _> = agent.edit_vault(|_, _| Err(internal("refused early")));
        assert!(r.is_err());
        assert_eq!((recovery_codes(&agent), on_disk(&agent)), (0, 0));
        // Failing after a write: memory still takes what the file has.
        let r: Result<(), _> = agent.edit_vault(|v, path| {
            v.add_recovery_code(path, 7).map_err(change_error)?;
            Err(internal("a later step failed"))
        });
        assert!(r.is_err());
        assert_eq!((recovery_codes(&agent), on_disk(&agent)), (1, 1));
        // And the next change builds on it.
        agent
            .edit_vault(|v, path| v.add_recovery_code(path, 8).map_err(change_error))
            .unwrap();
        assert_eq!((recovery_codes(&agent), on_disk(&agent)), (2, 2));
        // Locked, nothing to edit.
        agent.lock("test");
        let r: Result<(), _> = agent.edit_vault(|_, _| Ok(()));
        assert_eq!(r.unwrap_err().code, ErrorCode::Locked);
    }

    #[test]
    fn locking_does_not_wait_for_a_vault_change() {
        let home = tempfile::tempdir().unwrap();
        let agent = unlocked_agent(home.path());
        let (writer, release) = {
            let agent = agent.clone();
            held_in_fsync(move || {
                agent.edit_vault(|v, path| v.add_recovery_code(path, 7).map_err(change_error))
            })
        };
        let locker = {
            let agent = agent.clone();
            std::thread::spawn(move || agent.lock("test"))
        };
        let locked_meanwhile = ends_soon(&locker);
        let _ = release.send(());
        assert!(locked_meanwhile, "lock waited for a vault change's fsync");
        assert!(locker.join().unwrap());
        assert_eq!(agent.status().state, AgentState::Locked);
        // The change was written, and stays out of the locked state; the
        // next unlock would read it from the file.
        writer.join().unwrap().unwrap();
        assert_eq!(agent.status().state, AgentState::Locked);
        assert_eq!(recovery_codes(&agent), 1, "the locked agent reads the file");
    }

    const PASSWORD: &str = "correct horse battery staple";

    type Answer = std::thread::JoinHandle<Result<Response, AgentError>>;

    /// Unlocks with the password (the Secret Key from a protector, `with`
    /// if given), on a thread of its own.
    fn unlock_thread_with(agent: &Arc<Agent>, with: Option<&str>) -> Answer {
        unlock_thread_req(
            agent,
            UnlockRequest {
                password: PASSWORD.into(),
                with: with.map(str::to_owned),
                ..UnlockRequest::default()
            },
        )
    }

    fn unlock_thread_req(agent: &Arc<Agent>, req: UnlockRequest) -> Answer {
        let agent = agent.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(agent.unlock(req, Arc::new(crate::protect::NoIo)))
        })
    }

    fn unlock_thread(agent: &Arc<Agent>) -> Answer {
        unlock_thread_with(agent, None)
    }

    /// Locks while a `set` of `value` is held in its fsync, then starts an
    /// unlock, which reads the file without the set and derives its keys
    /// meanwhile; returns the set (still held, `release` lets it go on)
    /// and the unlock.
    fn unlock_behind_a_held_set(
        agent: &Arc<Agent>,
        value: &'static [u8],
    ) -> (Answer, mpsc::Sender<()>, Answer) {
        let (writer, release) = {
            let agent = agent.clone();
            held_in_fsync(move || agent.set("token", &Secret::from_slice(value)))
        };
        assert!(agent.lock("test"));
        let unlocker = unlock_thread(agent);
        // It reads the file, derives its keys and waits for the writers'
        // lock, which the set holds.
        let waited = std::time::Instant::now();
        while agent.unlocks_at_writer.load(Ordering::SeqCst) == 0 {
            assert!(
                waited.elapsed() < Duration::from_secs(60) && !unlocker.is_finished(),
                "the unlock never reached the writers' lock"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        (writer, release, unlocker)
    }

    /// A `set` still in its fsync when the agent locks (locking does not
    /// wait for it) lands after the next unlock has read the file: the
    /// unlock must neither write over it (it records the protector's use)
    /// nor show the item's old value.
    #[test]
    fn an_unlock_takes_in_a_write_that_landed_after_it_read_the_file() {
        let home = tempfile::tempdir().unwrap();
        let agent = unlocked_agent(home.path());
        agent.set("token", &Secret::from_slice(b"old")).unwrap();
        let (writer, release, unlocker) = unlock_behind_a_held_set(&agent, b"new");
        let _ = release.send(());
        writer.join().unwrap().unwrap();
        assert!(matches!(
            unlocker.join().unwrap(),
            Ok(Response::Unlocked { .. })
        ));
        assert_eq!(value(&agent.get("token")), b"new", "memory lost the set");
        agent.lock("test");
        assert!(matches!(
            unlock_thread(&agent).join().unwrap(),
            Ok(Response::Unlocked { .. })
        ));
        assert_eq!(value(&agent.get("token")), b"new", "the file lost the set");
    }

    /// A lock (suspend, logout) that comes while an unlock runs wins: the
    /// unlock does not leave the agent unlocked.
    #[test]
    fn a_lock_during_an_unlock_keeps_the_agent_locked() {
        let home = tempfile::tempdir().unwrap();
        let agent = unlocked_agent(home.path());
        let (writer, release, unlocker) = unlock_behind_a_held_set(&agent, b"v");
        assert!(
            !unlocker.is_finished(),
            "the unlock did not wait for the writer"
        );
        // Locking an agent that is not unlocked yet still counts.
        assert!(!agent.lock("suspend"));
        let _ = release.send(());
        writer.join().unwrap().unwrap();
        let e = unlocker.join().unwrap().unwrap_err();
        assert_eq!(e.code, ErrorCode::Cancelled, "{e:?}");
        assert_eq!(agent.status().state, AgentState::Locked);
        // Not a failed attempt, and the next unlock works.
        assert_eq!(agent.attempts().failures(), 0);
        assert!(matches!(
            unlock_thread(&agent).join().unwrap(),
            Ok(Response::Unlocked { .. })
        ));
        assert_eq!(value(&agent.get("token")), b"v");
    }

    fn account_id(agent: &Agent) -> AccountId {
        match &*agent.read_state() {
            State::Unlocked(s) => s.account.id,
            _ => panic!("not unlocked"),
        }
    }

    /// A protector marked stale holds an older Secret Key: an unlock does
    /// not use it (that would fail as a wrong password and count against
    /// the user) and says what to do.
    #[test]
    fn a_stale_protector_is_not_asked_and_no_failure_is_counted() {
        let home = tempfile::tempdir().unwrap();
        let agent = unlocked_agent(home.path());
        let id = account_id(&agent);
        agent
            .edit_vault(|v, path| {
                v.mark_stale(path, ProtectorKind::File)
                    .map_err(change_error)
            })
            .unwrap();
        // What a protector that missed a Secret Key change holds.
        agent
            .file_protector(&id)
            .store(&SecretKey::generate(&id).unwrap())
            .unwrap();
        agent.lock("test");
        let e = unlock_thread(&agent).join().unwrap().unwrap_err();
        assert_eq!(e.code, ErrorCode::NeedSecretKey, "{e:?}");
        assert!(
            e.message.contains("file: stale") && e.message.contains("keyward protector add file"),
            "{}",
            e.message
        );
        assert_eq!(agent.attempts().failures(), 0);
        assert!(agent.backoff_error("test").is_none());
        // Named explicitly, it is refused with the same advice.
        let named = unlock_thread_with(&agent, Some("file"))
            .join()
            .unwrap()
            .unwrap_err();
        assert_eq!(named.code, ErrorCode::Protector);
        assert!(named.message.contains("stale"), "{}", named.message);
        assert_eq!(agent.attempts().failures(), 0);
    }

    /// A stale protector brought back in line by the unlock that settles an
    /// interrupted Secret Key change is no longer stale: the next unlock
    /// uses it again.
    #[test]
    fn settling_an_interrupted_change_refreshes_a_stale_protector() {
        let home = tempfile::tempdir().unwrap();
        let agent = unlocked_agent(home.path());
        let id = account_id(&agent);
        let old_sk = agent
            .file_protector(&id)
            .fetch(&crate::protect::NoIo)
            .unwrap();
        // Phase 1 of a Secret Key change, then a "crash"; the file protector
        // was marked stale meanwhile.
        let params = agent.config.kdf_params();
        agent
            .edit_vault(|v, path| {
                v.begin_secret_key_change(path, &Password::new(PASSWORD).unwrap(), params, 7)
                    .map_err(change_error)?;
                v.mark_stale(path, ProtectorKind::File)
                    .map_err(change_error)
            })
            .unwrap();
        agent.lock("test");
        // Opened with the Secret Key typed: settles, and the file protector
        // takes the key in force again.
        let typed = UnlockRequest {
            password: PASSWORD.into(),
            secret_key: Some(Secret::from(old_sk.display().expose())),
            ..UnlockRequest::default()
        };
        match unlock_thread_req(&agent, typed).join().unwrap() {
            Ok(Response::Unlocked { notes, .. }) => {
                assert!(notes.iter().any(|n| n.contains("interrupted")), "{notes:?}")
            }
            other => panic!("{other:?}"),
        }
        agent.lock("test");
        assert!(
            matches!(
                unlock_thread(&agent).join().unwrap(),
                Ok(Response::Unlocked { .. })
            ),
            "the file protector stayed stale"
        );
    }
}
