//! The SSH agent: keyward's keys for OpenSSH and git (SECURITY.md §17,
//! PROTOCOL.md "The SSH agent socket").
//!
//! - [`wire`]: the SSH agent protocol's framing and fields.
//! - [`cert`]: OpenSSH certificates.
//! - [`keys`]: private keys (parsing, signing, generating, key files).
//! - [`restrict`]: constraints, session binding, destination restrictions.
//! - [`confirm`]: asking through `SSH_ASKPASS`; naming the requesting program.
//! - [`sk`]: security-key signatures through `ssh-sk-helper`.
//! - [`card`]: keys on a YubiKey (PIV): made on the card, signed by it.
//! - [`server`]: the socket and the requests.
//!
//! Keys live in two places: the vault (record type 0x09: kept across
//! restarts, unlocked with the account) and this table (keys `ssh-add`
//! gave with a lifetime: in memory only). A lock (`keyward lock`, the idle
//! timer, suspend, `ssh-add -x`) wipes the table; the vault's keys stay
//! sealed in the vault until the next unlock.

pub mod card;
pub mod cert;
pub mod confirm;
pub mod keys;
pub mod restrict;
pub mod server;
pub mod sk;
pub mod wire;

use crate::secret::SecretBytes;
use crate::vault::ssh::Approval;
use restrict::Dest;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A key `ssh-add` gave for this session only.
pub struct SessionKey {
    /// Its blob.
    pub public: Vec<u8>,
    /// Its comment.
    pub comment: String,
    /// The private key (agent form).
    pub private: SecretBytes,
    /// When to ask.
    pub approval: Approval,
    /// Security-key provider.
    pub sk_provider: Option<String>,
    /// Destination restrictions.
    pub dest: Vec<Dest>,
    /// When it goes.
    pub death: Option<Instant>,
}

/// A vault key as the SSH side sees it (no private part).
#[derive(Debug, Clone)]
pub struct VaultIdent {
    /// Its blob.
    pub public: Vec<u8>,
    /// Its name in the vault.
    pub name: String,
    /// Its comment.
    pub comment: String,
    /// When to ask.
    pub approval: Approval,
    /// Security-key provider.
    pub sk_provider: Option<String>,
    /// Destination restrictions.
    pub dest: Vec<Dest>,
    /// Where the private key is.
    pub location: crate::vault::ssh::Location,
}

/// What the agent holds for SSH besides the vault.
#[derive(Default)]
pub struct Table {
    inner: Mutex<Inner>,
    /// One locked-agent password prompt at a time.
    pub(crate) unlocking: Mutex<()>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ssh::Table")
    }
}

#[derive(Default)]
struct Inner {
    session: Vec<SessionKey>,
    /// Vault keys `ssh-add -d/-D` took out until the next lock.
    hidden: HashSet<Vec<u8>>,
    /// (key, pid, process start) that a once-per-process key was approved for.
    approved: HashSet<(Vec<u8>, u32, u64)>,
    /// The vault's keys at a generation.
    vault: Option<(u64, Arc<Vec<VaultIdent>>)>,
    /// Comments seen while unlocked, for listing while locked.
    comments: HashMap<Vec<u8>, String>,
}

impl Table {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets every session key, hidden key and approval (a lock).
    pub fn wipe(&self) {
        let mut i = self.inner();
        let session = std::mem::take(&mut i.session);
        i.hidden.clear();
        i.approved.clear();
        i.vault = None;
        drop(i);
        drop(session);
    }

    /// Drops expired session keys; the time of the next expiry.
    pub fn reap(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut i = self.inner();
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut i.session)
            .into_iter()
            .partition(|k| k.death.is_some_and(|d| d <= now));
        i.session = kept;
        let next = i.session.iter().filter_map(|k| k.death).min();
        drop(i);
        for k in &gone {
            tracing::info!(comment = %k.comment, "an SSH key's lifetime ended; it is gone");
        }
        next
    }

    /// Whether `ssh-add -d/-D` took this vault key out.
    pub fn is_hidden(&self, public: &[u8]) -> bool {
        self.inner().hidden.contains(public)
    }

    /// The cached vault keys, if they are of `generation`.
    pub(crate) fn vault_at(&self, generation: u64) -> Option<Arc<Vec<VaultIdent>>> {
        match &self.inner().vault {
            Some((g, v)) if *g == generation => Some(v.clone()),
            _ => None,
        }
    }

    pub(crate) fn set_vault(&self, generation: u64, v: Arc<Vec<VaultIdent>>) {
        let mut i = self.inner();
        for k in v.iter() {
            i.comments.insert(k.public.clone(), k.comment.clone());
        }
        i.vault = Some((generation, v));
    }

    /// Adds (or replaces) a session key.
    pub fn add_session(&self, key: SessionKey) {
        let mut i = self.inner();
        i.session.retain(|k| k.public != key.public);
        i.session.push(key);
    }

    /// Removes a session key.
    pub fn remove_session(&self, public: &[u8]) -> bool {
        let mut i = self.inner();
        let before = i.session.len();
        let gone: Vec<SessionKey> = {
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut i.session)
                .into_iter()
                .partition(|k| k.public == public);
            i.session = kept;
            gone
        };
        let removed = i.session.len() != before;
        drop(i);
        drop(gone);
        removed
    }

    /// Whether a session key has this blob.
    pub fn has_session(&self, public: &[u8]) -> bool {
        self.inner().session.iter().any(|k| k.public == public)
    }

    /// `f` of the live session key with this blob.
    pub fn session_key<T>(&self, public: &[u8], f: impl FnOnce(&SessionKey) -> T) -> Option<T> {
        let now = Instant::now();
        let i = self.inner();
        i.session
            .iter()
            .find(|k| k.public == public && k.death.is_none_or(|d| d > now))
            .map(f)
    }

    /// Calls `f` for every live session key, in the order they were added.
    pub fn for_each_session(&self, mut f: impl FnMut(&SessionKey)) {
        let now = Instant::now();
        let i = self.inner();
        for k in i.session.iter().filter(|k| k.death.is_none_or(|d| d > now)) {
            f(k);
        }
    }

    /// Takes a vault key out until the next lock.
    pub fn hide(&self, public: &[u8]) {
        self.inner().hidden.insert(public.to_vec());
    }

    /// Puts a hidden vault key back.
    pub fn unhide(&self, public: &[u8]) {
        self.inner().hidden.remove(public);
    }

    /// `ssh-add -D`: every session key goes, every vault key is hidden.
    pub fn remove_all(&self, vault: impl Iterator<Item = Vec<u8>>) {
        let mut i = self.inner();
        let session = std::mem::take(&mut i.session);
        i.hidden.extend(vault);
        drop(i);
        drop(session);
    }

    /// The comment last seen for a key (for listing while locked).
    pub fn comment_of(&self, public: &[u8]) -> String {
        self.inner()
            .comments
            .get(public)
            .cloned()
            .unwrap_or_else(|| "keyward (locked)".into())
    }

    /// Whether process (pid, start) was approved for this key.
    pub fn approved(&self, public: &[u8], pid: u32, start: u64) -> bool {
        self.inner()
            .approved
            .contains(&(public.to_vec(), pid, start))
    }

    /// Remembers that process (pid, start) was approved for this key.
    pub fn approve(&self, public: &[u8], pid: u32, start: u64) {
        self.inner().approved.insert((public.to_vec(), pid, start));
    }
}
