//! The vault: one file per account, and the operations on an unlocked one.
//!
//! - [`format`]: the bytes on disk (versioned, checksummed, MACed).
//! - [`store`]: atomic, durable replacement; private directories.
//! - [`Unlocked`]: an open vault whose keys sit in locked memory; every change
//!   is written to disk before it becomes visible, and rolled back in memory
//!   if the write fails, so memory and disk never disagree.
//!
//! Changing the Secret Key (recovery, rotation) is done in phases so that a
//! crash at any moment leaves a vault that opens with the old or the new
//! credentials: see [`Unlocked::begin_secret_key_change`].

mod copies;
mod devices;
pub mod format;
mod merge;
pub mod organizer;
mod rekey;
pub mod ssh;
pub mod store;

pub use copies::{CopyDiff, CopyError};
pub use merge::{MergeError, MergeOutcome, newest_epoch, wrap_epoch, wrap_origin};
pub use rekey::{Reconciled, key_id};

use crate::account::items::ItemId;
use crate::account::password::{self, KdfParams, Password, PasswordError};
use crate::account::recovery::RecoveryCode;
use crate::account::secret_key::{self, SecretKey};
use crate::account::wrap::{self, Purpose, Sealed};
use crate::account::{AccountId, auk, item_key, items, piv, vault_mac_key};
use crate::harden::{LockedAllocError, LockedBox};
use crate::secret::{Key32, SecretBytes};
use format::{
    FormatError, ItemEdit, ItemRecord, Parsed, PasswordWrap, PivWrap, ProtectorKind,
    ProtectorRecord, RecoveryWrap, VaultFile,
};
use std::collections::HashMap;
use std::path::Path;
use zeroize::Zeroize;

/// Key material of an unlocked vault. Lives only in a [`LockedBox`].
#[derive(Zeroize)]
pub struct KeyMaterial {
    /// The account key.
    pub account_key: [u8; 32],
    /// The item key.
    pub item_key: [u8; 32],
    /// The vault MAC key.
    pub mac_key: [u8; 32],
    /// The Secret Key in force (35 symbols), all zero if unknown.
    pub secret_key: [u8; secret_key::LEN],
}

impl Default for KeyMaterial {
    fn default() -> Self {
        Self {
            account_key: [0; 32],
            item_key: [0; 32],
            mac_key: [0; 32],
            secret_key: [0; secret_key::LEN],
        }
    }
}

/// Why an unlock failed.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    /// Wrong Master Password or wrong Secret Key (deliberately one error).
    #[error("wrong Master Password or Secret Key")]
    WrongCredentials,
    /// The Secret Key belongs to another account.
    #[error(
        "this Secret Key belongs to account {key_account}, but the vault is account {vault_account}"
    )]
    OtherAccount {
        /// From the Secret Key.
        key_account: AccountId,
        /// From the vault.
        vault_account: AccountId,
    },
    /// No recovery code with this id.
    #[error("this recovery code does not open this vault (it may have been revoked)")]
    WrongRecoveryCode,
    /// The credentials were right but the records fail their MAC.
    #[error(
        "the vault's records fail authentication: a record was removed, duplicated, reordered or \
         altered since keyward last wrote the file; restore it from a backup"
    )]
    Tampered,
    /// The credentials opened a copy, but under an account key this device
    /// has never seen and that carries none it has (SECURITY.md §18.5).
    #[error(
        "the vault opened, but under an account key this device has never seen, and it does not \
         carry the one this device knows: the file was replaced (by someone who can write its \
         folder and knows the Master Password?); nothing was used. Put this device's vault file \
         back from a backup, or, if the account really was made anew, remove this device's \
         state (`keyward device remove` on another device) and `keyward join` again"
    )]
    UnknownKey,
    /// An item fails authentication although the record set is intact.
    #[error("item {0} of the vault cannot be decrypted; restore the vault from a backup")]
    BadItem(usize),
    /// Argon2id failed.
    #[error(transparent)]
    Kdf(#[from] PasswordError),
    /// Locked memory could not be had.
    #[error(transparent)]
    Alloc(#[from] LockedAllocError),
}

/// Why a change to an unlocked vault failed. The vault in memory is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Writing the file failed; the old file is intact.
    #[error("could not write the vault ({0}); nothing was changed")]
    Io(#[from] std::io::Error),
    /// The randomness source failed.
    #[error("the system random number generator failed: {0}")]
    Rng(getrandom::Error),
    /// A bad item name.
    #[error(transparent)]
    Name(#[from] items::NameError),
    /// A value over the size limit.
    #[error("the value is {0} bytes; items hold at most {max} bytes", max = items::MAX_VALUE)]
    ValueTooLarge(usize),
    /// No such item.
    #[error("no item named {0:?}")]
    NoSuchItem(String),
    /// No such recovery code / protector.
    #[error("no {0} with id {1}")]
    NotFound(&'static str, String),
    /// Already present.
    #[error("{0} is already enrolled")]
    Exists(String),
    /// Password problems.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The operation needs the Secret Key, which this unlock did not have.
    #[error("this operation needs the Secret Key, which is not known to the agent right now")]
    NoSecretKey,
    /// Locked memory.
    #[error(transparent)]
    Alloc(#[from] LockedAllocError),
    /// Re-reading the vault's own items failed (a bug).
    #[error(transparent)]
    Unlock(#[from] UnlockError),
    /// A PIV public key that is not on the curve.
    #[error(transparent)]
    BadPoint(#[from] piv::BadPoint),
}

impl From<getrandom::Error> for ChangeError {
    fn from(e: getrandom::Error) -> Self {
        ChangeError::Rng(e)
    }
}

/// Metadata of an item, decrypted at unlock (the value stays sealed until asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemMeta {
    /// Name.
    pub name: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds.
    pub modified: u64,
}

/// Reads and parses a vault file. Never writes.
pub fn read(path: &Path) -> Result<Parsed, ReadError> {
    let bytes = store::read_limited(path, format::MAX_FILE_LEN).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ReadError::NotFound
        } else {
            ReadError::Io(e)
        }
    })?;
    Ok(format::parse(&bytes)?)
}

/// Why a vault could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// There is no vault file.
    #[error("there is no vault yet")]
    NotFound,
    /// I/O.
    #[error("cannot read the vault: {0}")]
    Io(std::io::Error),
    /// The file is not a valid vault.
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// An unlocked vault.
pub struct Unlocked {
    file: VaultFile,
    keys: LockedBox<KeyMaterial>,
    /// Parallel to `file.items`.
    meta: Vec<ItemMeta>,
    /// Name → index in `file.items`.
    index: HashMap<String, usize>,
    /// Slot id of the password wrap that opened the vault, if any.
    opened_with: Option<String>,
    /// The device this vault is open on (all zero: not told).
    device: format::DeviceId,
    /// Whether this device writes the vault's main file (and so owns the
    /// protector records written before devices had ids).
    main_file: bool,
}

impl std::fmt::Debug for Unlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unlocked")
            .field("account_id", &self.file.account_id)
            .field("items", &self.file.items.len())
            .finish_non_exhaustive()
    }
}

fn new_salt16() -> Result<[u8; 16], getrandom::Error> {
    let mut s = [0u8; 16];
    getrandom::fill(&mut s)?;
    Ok(s)
}

fn password_wrap(
    account_key: &[u8; 32],
    id: &AccountId,
    slot_id: String,
    password: &Password,
    sk: &SecretKey,
    params: KdfParams,
) -> Result<PasswordWrap, ChangeError> {
    let salt16 = new_salt16()?;
    let km = password::derive_km(password, &salt16, id, &params)?;
    let a = auk(&km, &sk.derive_ks());
    let sealed = wrap::seal(a.expose(), Purpose::Password, id, &slot_id, account_key)?;
    Ok(PasswordWrap {
        slot_id,
        salt16,
        params,
        sealed,
    })
}

/// Creates a new account: account ID, Secret Key, account key, one password
/// wrap. Returns the unlocked vault (already written to `path`) and the Secret Key.
pub fn create(
    path: &Path,
    password: &Password,
    params: KdfParams,
    now: u64,
) -> Result<(Unlocked, SecretKey), ChangeError> {
    params.check_new()?;
    let id = AccountId::generate()?;
    let sk = SecretKey::generate(&id)?;
    let mut keys = LockedBox::<KeyMaterial>::new()?;
    getrandom::fill(&mut keys.account_key)?;
    let pw = password_wrap(&keys.account_key, &id, "pw-1".into(), password, &sk, params)?;
    let file = VaultFile {
        account_id: id,
        created: now,
        generation: 0,
        password_wraps: vec![pw],
        recovery_wraps: Vec::new(),
        piv_wraps: Vec::new(),
        protectors: Vec::new(),
        organizers: format::OrganizerRecords::default(),
        ssh_keys: Vec::new(),
        devices: Vec::new(),
        tombstones: Vec::new(),
        previous_keys: Vec::new(),
        items: Vec::new(),
    };
    let mut v = Unlocked::with_keys(file, keys, Some("pw-1".into()))?;
    v.keys.secret_key.copy_from_slice(sk.expose_compact());
    v.persist(path)?;
    Ok((v, sk))
}

/// Opens with the Master Password and the Secret Key.
///
/// Tries every password wrap (one, or two after an interrupted change);
/// Argon2id runs once per distinct (salt, parameters).
pub fn unlock(
    parsed: Parsed,
    password: &Password,
    sk: &SecretKey,
) -> Result<Unlocked, UnlockError> {
    let id = parsed.vault.account_id;
    if sk.account_id() != id {
        return Err(UnlockError::OtherAccount {
            key_account: sk.account_id(),
            vault_account: id,
        });
    }
    let ks = sk.derive_ks();
    let mut found = None;
    for w in &parsed.vault.password_wraps {
        let km = password::derive_km(password, &w.salt16, &id, &w.params)?;
        let a = auk(&km, &ks);
        if let Ok(k) = wrap::open_key(a.expose(), Purpose::Password, &id, &w.slot_id, &w.sealed) {
            found = Some((k, w.slot_id.clone()));
            break;
        }
    }
    let (account_key, slot) = found.ok_or(UnlockError::WrongCredentials)?;
    let mut v = open_with_account_key(parsed, &account_key, Some(slot))?;
    v.keys.secret_key.copy_from_slice(sk.expose_compact());
    Ok(v)
}

/// What [`unlock_any`] opened.
pub struct Opened {
    /// The vault taken.
    pub vault: Unlocked,
    /// The index of the copy it was opened from.
    pub index: usize,
    /// The own copy opened under a key `accept` refused (it was replaced).
    pub own_refused: bool,
    /// Copies opened with the Master Password and the Secret Key (never the
    /// `newer` one) that `accept` refused: another device's rekey made
    /// apart, or a vault of someone who knows both (SECURITY.md §18.6).
    pub refused: Vec<Unlocked>,
}

/// Opens with the Master Password and the Secret Key from the first of
/// `copies` whose password wrap opens, whose MAC then verifies, and that
/// `accept` takes (it proves the account key in force on this device,
/// SECURITY.md §18.5) — the device's own file first, then the parts other
/// devices wrote, which may hold a newer password wrap. Wrong credentials
/// for all of them is one failure; a copy refused by `accept` is not a
/// failure of the credentials (they opened it), and if nothing is taken
/// the result is [`UnlockError::UnknownKey`].
///
/// `newer` is a Secret Key that a protector found sealed for it in another
/// device's part (a YubiKey wrap re-made there with a new Secret Key): it
/// is tried first on the copies before `own` (the parts with a later
/// password wrap). It comes from a folder others can write, so it failing
/// is not a failure of its own.
pub fn unlock_any(
    copies: Vec<Parsed>,
    own: usize,
    password: &Password,
    sk: &SecretKey,
    newer: Option<&SecretKey>,
    accept: &dyn Fn(&Unlocked) -> bool,
) -> Result<Opened, UnlockError> {
    let mut refused = Vec::new();
    let mut any_refused = false;
    if let Some(newer) = newer {
        let mut tried: Vec<PasswordWrap> = Vec::new();
        for (i, parsed) in copies.iter().enumerate().take(own) {
            if parsed
                .vault
                .password_wraps
                .iter()
                .all(|w| tried.contains(w))
            {
                continue;
            }
            tried.extend(parsed.vault.password_wraps.iter().cloned());
            match unlock(parsed.clone(), password, newer) {
                Ok(v) if accept(&v) => {
                    return Ok(Opened {
                        vault: v,
                        index: i,
                        own_refused: false,
                        refused,
                    });
                }
                // Opened by a key someone sealed to the card: dropped.
                Ok(_) => any_refused = true,
                Err(_) => {}
            }
        }
    }
    let mut own_err = None;
    let mut own_refused = false;
    let mut tried: Vec<PasswordWrap> = Vec::new();
    for (i, parsed) in copies.into_iter().enumerate() {
        // Another copy whose wraps (whole: slot, salt, parameters, nonce,
        // ciphertext) were all tried already costs no Argon2id run; this
        // device's own file is always tried.
        let fresh = parsed
            .vault
            .password_wraps
            .iter()
            .filter(|w| !tried.contains(w))
            .count();
        tried.extend(parsed.vault.password_wraps.iter().cloned());
        if fresh == 0 && i != own {
            continue;
        }
        match unlock(parsed, password, sk) {
            Ok(v) if accept(&v) => {
                return Ok(Opened {
                    vault: v,
                    index: i,
                    own_refused,
                    refused,
                });
            }
            Ok(v) => {
                any_refused = true;
                own_refused |= i == own;
                refused.push(v);
            }
            // Another device's copy failing (forged, damaged) is only skipped.
            Err(e) if i == own => own_err = Some(e),
            Err(_) => {}
        }
    }
    if any_refused {
        return Err(UnlockError::UnknownKey);
    }
    Err(own_err.unwrap_or(UnlockError::WrongCredentials))
}

/// Opens with a recovery code (no password, no Secret Key). The result knows
/// no Secret Key; the caller must go on with [`Unlocked::begin_secret_key_change`].
pub fn unlock_with_recovery_code(
    parsed: Parsed,
    code: &RecoveryCode,
) -> Result<Unlocked, UnlockError> {
    let id = parsed.vault.account_id;
    let code_id = code.code_id(&id);
    let w = parsed
        .vault
        .recovery_wraps
        .iter()
        .find(|w| w.code_id == code_id)
        .ok_or(UnlockError::WrongRecoveryCode)?;
    let key = code.wrap_key(&id);
    let account_key = wrap::open_key(
        key.expose(),
        Purpose::Recovery,
        &id,
        &hex(&code_id),
        &w.sealed,
    )
    .map_err(|_| UnlockError::WrongRecoveryCode)?;
    open_with_account_key(parsed, &account_key, None)
}

fn open_with_account_key(
    parsed: Parsed,
    account_key: &Key32,
    opened_with: Option<String>,
) -> Result<Unlocked, UnlockError> {
    let id = parsed.vault.account_id;
    let mut keys = LockedBox::<KeyMaterial>::new()?;
    keys.account_key.copy_from_slice(account_key.expose());
    keys.mac_key
        .copy_from_slice(vault_mac_key(account_key.expose(), &id).expose());
    if !parsed.mac_ok(&keys.mac_key) {
        return Err(UnlockError::Tampered);
    }
    Unlocked::with_keys(parsed.vault, keys, opened_with)
}

pub use crate::account::hex;

/// A new item's name and value, checked before anything is sealed.
fn check_item(name: &str, value: &[u8]) -> Result<(), ChangeError> {
    items::check_name(name)?;
    if value.len() > items::MAX_VALUE {
        return Err(ChangeError::ValueTooLarge(value.len()));
    }
    Ok(())
}

fn new_item_id() -> Result<ItemId, getrandom::Error> {
    let mut item_id = [0u8; 16];
    getrandom::fill(&mut item_id)?;
    Ok(item_id)
}

/// A change to the items, prepared from a shared borrow of the vault: the
/// new file is encoded, [`Self::write`] makes it durable, and
/// [`Unlocked::apply`] then makes the same change in memory. The agent
/// writes (and fsyncs) while readers go on; only the apply excludes them.
#[must_use = "a prepared change does nothing until it is written and applied"]
pub struct PreparedItemChange {
    /// The generation it was prepared from.
    base: u64,
    /// The new file, generation `base + 1`.
    bytes: Vec<u8>,
    edit: PreparedEdit,
}

/// A change whose file is on disk, to be applied in memory.
#[must_use = "a written change must be applied, or memory and disk disagree"]
pub struct WrittenItemChange {
    base: u64,
    edit: PreparedEdit,
}

enum PreparedEdit {
    Replace(usize, Sealed, ItemMeta),
    Append(ItemRecord, ItemMeta),
    SwapRemove(usize, Vec<format::Tombstone>),
}

impl PreparedItemChange {
    /// Writes the new file (atomically, fsynced). On error the file on
    /// disk is the old one and the change is gone.
    pub fn write(self, path: &Path) -> std::io::Result<WrittenItemChange> {
        store::write_atomic(path, &self.bytes)?;
        Ok(WrittenItemChange {
            base: self.base,
            edit: self.edit,
        })
    }
}

/// The ids of a Secret Key change in flight; see [`Unlocked::begin_secret_key_change`].
#[derive(Debug)]
pub struct PendingChange {
    /// The new Secret Key.
    pub new_secret_key: SecretKey,
    /// Slot ids of the password wraps to drop when the change is finished.
    old_wraps: Vec<String>,
    /// Slot id of the new password wrap.
    new_wrap: String,
}

impl Unlocked {
    /// A copy, to make a rare change on while readers go on using this
    /// one (see the agent's `edit_vault`); the keys go to a locked page of
    /// their own.
    pub fn try_clone(&self) -> Result<Self, LockedAllocError> {
        let mut keys = LockedBox::<KeyMaterial>::new()?;
        keys.account_key = self.keys.account_key;
        keys.item_key = self.keys.item_key;
        keys.mac_key = self.keys.mac_key;
        keys.secret_key = self.keys.secret_key;
        Ok(Self {
            file: self.file.clone(),
            keys,
            meta: self.meta.clone(),
            index: self.index.clone(),
            opened_with: self.opened_with.clone(),
            device: self.device,
            main_file: self.main_file,
        })
    }

    fn with_keys(
        file: VaultFile,
        mut keys: LockedBox<KeyMaterial>,
        opened_with: Option<String>,
    ) -> Result<Self, UnlockError> {
        let id = file.account_id;
        let ik = item_key(&keys.account_key, &id);
        keys.item_key.copy_from_slice(ik.expose());
        let mk = vault_mac_key(&keys.account_key, &id);
        keys.mac_key.copy_from_slice(mk.expose());
        let mut meta = Vec::with_capacity(file.items.len());
        let mut index = HashMap::with_capacity(file.items.len());
        for (i, rec) in file.items.iter().enumerate() {
            let item = items::open(&keys.item_key, &id, &rec.item_id, &rec.sealed)
                .map_err(|_| UnlockError::BadItem(i))?;
            if index.insert(item.name.clone(), i).is_some() {
                // Two items with one name cannot be written by keyward.
                return Err(UnlockError::BadItem(i));
            }
            meta.push(ItemMeta {
                name: item.name,
                created: item.created,
                modified: item.modified,
            });
        }
        Ok(Self {
            file,
            keys,
            meta,
            index,
            opened_with,
            device: [0; 16],
            main_file: true,
        })
    }

    /// Tells the vault which device it is open on: protector records of
    /// other devices are then left alone, and new ones name this device.
    pub fn set_device(&mut self, device: format::DeviceId, main_file: bool) {
        self.device = device;
        self.main_file = main_file;
    }

    /// The device this vault is open on.
    pub fn device(&self) -> format::DeviceId {
        self.device
    }

    /// Whether a protector record is this device's.
    pub fn owns(&self, p: &ProtectorRecord) -> bool {
        p.device == self.device || (p.device == [0; 16] && self.main_file)
    }

    /// The keyed hash that names `name` in a name tombstone:
    /// `HMAC-SHA256(item_key, "keyward/v1 item-name|" ‖ name)[0..16]`.
    pub fn name_id(&self, name: &str) -> [u8; 16] {
        let h = crate::kdf::hmac_sha256(
            &self.keys.item_key,
            &[b"keyward/v1 item-name|", name.as_bytes()],
        );
        let mut id = [0u8; 16];
        id.copy_from_slice(&h[..16]);
        id
    }

    /// When items named by `name_id` were last removed, if ever.
    fn name_removed(&self, name_id: &[u8; 16]) -> Option<u64> {
        self.file
            .tombstones
            .iter()
            .filter(|t| t.kind == format::TombstoneKind::ItemName && t.id[..] == name_id[..])
            .map(|t| t.removed)
            .max()
    }

    /// `now`, or later than an earlier removal of the same record: a
    /// record added again is not removed by the merge (SECURITY.md §18.3).
    pub(crate) fn after_removal(&self, kind: format::TombstoneKind, id: &[u8], now: u64) -> u64 {
        self.file
            .tombstones
            .iter()
            .filter(|t| t.kind == kind && t.id == id)
            .map(|t| t.removed + 1)
            .fold(now, u64::max)
    }

    /// Records a removal (or moves an earlier one's time forward).
    fn tombstone(&mut self, kind: format::TombstoneKind, id: Vec<u8>, removed: u64) {
        match self
            .file
            .tombstones
            .iter_mut()
            .find(|t| t.kind == kind && t.id == id)
        {
            Some(t) => t.removed = t.removed.max(removed),
            None => self
                .file
                .tombstones
                .push(format::Tombstone { kind, id, removed }),
        }
    }

    /// The account.
    pub fn account_id(&self) -> AccountId {
        self.file.account_id
    }

    /// The parsed file (for listing wraps and protectors).
    pub fn file(&self) -> &VaultFile {
        &self.file
    }

    /// The slot id of the password wrap used to unlock, if a password was used.
    pub fn opened_with(&self) -> Option<&str> {
        self.opened_with.as_deref()
    }

    /// A copy of the account key, for the known-answer vectors only (the agent
    /// never sends or stores it anywhere).
    #[doc(hidden)]
    pub fn account_key_for_test_vectors(&self) -> Key32 {
        Key32::from_slice(&self.keys.account_key).unwrap_or_else(Key32::zero)
    }

    /// Whether the locked memory holding the keys is really mlocked.
    pub fn keys_locked_in_memory(&self) -> bool {
        self.keys.is_locked()
    }

    /// The Secret Key in force, if this unlock knows it.
    pub fn secret_key(&self) -> Option<SecretKey> {
        if self.keys.secret_key == [0u8; secret_key::LEN] {
            return None;
        }
        let text = std::str::from_utf8(&self.keys.secret_key).ok()?;
        SecretKey::parse(text).ok()
    }

    /// Writes the vault (generation + 1). On failure the generation is
    /// restored and the old file is intact.
    pub fn persist(&mut self, path: &Path) -> std::io::Result<()> {
        self.file.generation += 1;
        let bytes = self.file.encode(&self.keys.mac_key);
        let r = store::write_atomic(path, &bytes);
        if r.is_err() {
            self.file.generation -= 1;
        }
        r
    }

    /// [`Self::persist`] with a generation above `floor` too (the largest
    /// generation of the copies just merged, so that this file's mark is
    /// never below one this device saw). On failure nothing changes.
    pub fn persist_above(&mut self, path: &Path, floor: u64) -> std::io::Result<()> {
        let before = self.file.generation;
        self.file.generation = before.max(floor);
        let r = self.persist(path);
        if r.is_err() {
            self.file.generation = before;
        }
        r
    }

    /// Applies `change`, writes, and undoes the change if the write fails.
    fn change<T>(
        &mut self,
        path: &Path,
        apply: impl FnOnce(&mut Self) -> Result<T, ChangeError>,
    ) -> Result<T, ChangeError> {
        let before = (self.file.clone(), self.meta.clone(), self.index.clone());
        let out = apply(self).and_then(|t| {
            self.persist(path)?;
            Ok(t)
        });
        if out.is_err() {
            (self.file, self.meta, self.index) = before;
        }
        out
    }

    // ------------------------------------------------------------ items

    /// Item names and times, sorted by name.
    pub fn list(&self) -> Vec<ItemMeta> {
        let mut v = self.meta.clone();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Decrypts one item's value.
    pub fn get(&self, name: &str) -> Option<SecretBytes> {
        let &i = self.index.get(name)?;
        let rec = &self.file.items[i];
        items::open_value(
            &self.keys.item_key,
            &self.file.account_id,
            &rec.item_id,
            &rec.sealed,
        )
        .ok()
    }

    /// Adds many new items and writes the vault once (an import; also how
    /// the benchmarks build a 10,000-item vault without 10,000 writes).
    /// Names already present are refused; nothing is changed on error.
    pub fn add_many(
        &mut self,
        path: &Path,
        entries: &[(String, Vec<u8>)],
        now: u64,
    ) -> Result<(), ChangeError> {
        let before = self.file.items.len();
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        for (name, value) in entries {
            check_item(name, value)?;
            if self.index.contains_key(name) || !seen.insert(name.as_str()) {
                return Err(ChangeError::Exists(format!("item {name:?}")));
            }
        }
        for (name, value) in entries {
            let item_id = new_item_id()?;
            let (sealed, meta) = self.seal_item(&item_id, name, value, now, now)?;
            self.file.items.push(ItemRecord { item_id, sealed });
            self.meta.push(meta);
        }
        if let Err(e) = self.persist(path) {
            self.file.items.truncate(before);
            self.meta.truncate(before);
            return Err(e.into());
        }
        for (i, (name, _)) in entries.iter().enumerate() {
            self.index.insert(name.clone(), before + i);
        }
        Ok(())
    }

    /// Creates or replaces an item, and writes the vault.
    pub fn set(
        &mut self,
        path: &Path,
        name: &str,
        value: &[u8],
        now: u64,
    ) -> Result<(), ChangeError> {
        let written = self.prepare_set(name, value, now)?.write(path)?;
        self.apply(written);
        Ok(())
    }

    /// [`Self::set`], prepared: nothing changes until it is written and applied.
    pub fn prepare_set(
        &self,
        name: &str,
        value: &[u8],
        now: u64,
    ) -> Result<PreparedItemChange, ChangeError> {
        let edit = self.plan_set(name, value, now)?;
        Ok(self.prepared(edit))
    }

    /// [`Self::remove`], prepared: nothing changes until it is written and applied.
    pub fn prepare_remove(&self, name: &str, now: u64) -> Result<PreparedItemChange, ChangeError> {
        let edit = self.plan_remove(name, now)?;
        Ok(self.prepared(edit))
    }

    /// The file as it will be after `edit`, generation + 1.
    fn prepared(&self, edit: PreparedEdit) -> PreparedItemChange {
        let base = self.file.generation;
        let item_edit = match &edit {
            PreparedEdit::Replace(i, sealed, _) => ItemEdit::Replace(*i, sealed),
            PreparedEdit::Append(record, _) => ItemEdit::Append(record),
            PreparedEdit::SwapRemove(i, tombs) => ItemEdit::SwapRemove(*i, tombs),
        };
        let bytes = self
            .file
            .encode_edited(&self.keys.mac_key, base + 1, item_edit);
        PreparedItemChange { base, bytes, edit }
    }

    /// Applies a set in memory only (the caller writes the vault once).
    fn set_in_memory(&mut self, name: &str, value: &[u8], now: u64) -> Result<(), ChangeError> {
        let edit = self.plan_set(name, value, now)?;
        let base = self.file.generation;
        self.apply(WrittenItemChange { base, edit });
        Ok(())
    }

    /// Applies a removal in memory only (the caller writes the vault once).
    fn remove_in_memory(&mut self, name: &str, now: u64) -> Result<(), ChangeError> {
        let edit = self.plan_remove(name, now)?;
        let base = self.file.generation;
        self.apply(WrittenItemChange { base, edit });
        Ok(())
    }

    fn plan_set(&self, name: &str, value: &[u8], now: u64) -> Result<PreparedEdit, ChangeError> {
        check_item(name, value)?;
        let existing = self.index.get(name).copied();
        // An edit is later than what it edits, whatever the clocks say:
        // merges take the later `modified` (SECURITY.md §18).
        let (item_id, created, modified) = match existing {
            Some(i) => (
                self.file.items[i].item_id,
                self.meta[i].created,
                now.max(self.meta[i].modified + 1),
            ),
            // A new item of a name removed before (on any device) is
            // later than that removal.
            None => {
                let at = self
                    .name_removed(&self.name_id(name))
                    .map_or(now, |t| now.max(t + 1));
                (new_item_id()?, at, at)
            }
        };
        let (sealed, meta) = self.seal_item(&item_id, name, value, created, modified)?;
        Ok(match existing {
            Some(i) => PreparedEdit::Replace(i, sealed, meta),
            None => PreparedEdit::Append(ItemRecord { item_id, sealed }, meta),
        })
    }

    fn plan_remove(&self, name: &str, now: u64) -> Result<PreparedEdit, ChangeError> {
        let Some(&i) = self.index.get(name) else {
            return Err(ChangeError::NoSuchItem(name.to_owned()));
        };
        // The removal is as late as the item it removes, so that a merge
        // with a copy that still has the item keeps it removed; it also
        // removes an item of the same name that another device made
        // earlier and this one never saw (SECURITY.md §18.3).
        let removed = now.max(self.meta[i].modified);
        let name_id = self.name_id(name);
        let name_removed = self
            .name_removed(&name_id)
            .map_or(removed, |t| t.max(removed));
        Ok(PreparedEdit::SwapRemove(
            i,
            vec![
                format::Tombstone {
                    kind: format::TombstoneKind::Item,
                    id: self.file.items[i].item_id.to_vec(),
                    removed,
                },
                format::Tombstone {
                    kind: format::TombstoneKind::ItemName,
                    id: name_id.to_vec(),
                    removed: name_removed,
                },
            ],
        ))
    }

    /// Makes a written change in memory. Refused (false, nothing changed)
    /// if the vault is no longer at the generation the change was prepared
    /// from: the caller must serialise writes.
    pub fn apply(&mut self, change: WrittenItemChange) -> bool {
        if change.base != self.file.generation {
            return false;
        }
        match change.edit {
            PreparedEdit::Replace(i, sealed, meta) => {
                self.file.items[i].sealed = sealed;
                self.meta[i] = meta;
            }
            PreparedEdit::Append(record, meta) => {
                self.index.insert(meta.name.clone(), self.file.items.len());
                self.file.items.push(record);
                self.meta.push(meta);
            }
            PreparedEdit::SwapRemove(i, tombs) => {
                for t in tombs {
                    self.tombstone(t.kind, t.id, t.removed);
                }
                self.file.items.swap_remove(i);
                let gone = self.meta.swap_remove(i);
                self.index.remove(&gone.name);
                if i < self.meta.len() {
                    self.index.insert(self.meta[i].name.clone(), i);
                }
            }
        }
        self.file.generation = change.base + 1;
        true
    }

    /// An item sealed under the item key, and what the index keeps of it.
    fn seal_item(
        &self,
        item_id: &ItemId,
        name: &str,
        value: &[u8],
        created: u64,
        modified: u64,
    ) -> Result<(Sealed, ItemMeta), ChangeError> {
        let item = items::Item {
            name: name.to_owned(),
            value: SecretBytes::from_slice(value),
            created,
            modified,
        };
        let sealed = items::seal(&self.keys.item_key, &self.file.account_id, item_id, &item)?;
        let meta = ItemMeta {
            name: name.to_owned(),
            created,
            modified,
        };
        Ok((sealed, meta))
    }

    /// Removes an item, and writes the vault.
    pub fn remove(&mut self, path: &Path, name: &str, now: u64) -> Result<(), ChangeError> {
        let written = self.prepare_remove(name, now)?.write(path)?;
        self.apply(written);
        Ok(())
    }

    // ------------------------------------------------------------ passwords

    /// Checks a Master Password against the wrap in force (one Argon2id run).
    /// Needs the Secret Key.
    pub fn verify_password(&self, password: &Password) -> Result<bool, ChangeError> {
        let sk = self.secret_key().ok_or(ChangeError::NoSecretKey)?;
        let id = self.file.account_id;
        let ks = sk.derive_ks();
        for w in &self.file.password_wraps {
            let km = password::derive_km(password, &w.salt16, &id, &w.params)?;
            let a = auk(&km, &ks);
            if let Ok(k) = wrap::open_key(a.expose(), Purpose::Password, &id, &w.slot_id, &w.sealed)
            {
                use subtle::ConstantTimeEq;
                return Ok(k.expose().ct_eq(&self.keys.account_key).into());
            }
        }
        Ok(false)
    }

    /// The slot id of a new password wrap: its epoch (the generation of
    /// the first file that holds it), when, on which device, and why (`p`
    /// a new password, `s` a new Secret Key); SECURITY.md §6.
    fn next_slot_id(&self, why: char) -> String {
        let now = crate::clock::Clock::unix_now(&crate::clock::SystemClock);
        // Later than every wrap this vault has seen, whichever device made it.
        let epoch = self
            .file
            .password_wraps
            .iter()
            .map(|w| wrap_epoch(&w.slot_id))
            .fold(self.file.generation, u64::max)
            + 1;
        format!("pw-{epoch}-{now}-{}-{why}", &hex(&self.device)[..8])
    }

    /// Replaces the password wrap(s) with one for `new` (same Secret Key) in
    /// one atomic write. The caller has checked the old password.
    pub fn change_password(
        &mut self,
        path: &Path,
        new: &Password,
        params: KdfParams,
    ) -> Result<(), ChangeError> {
        params.check_new()?;
        let sk = self.secret_key().ok_or(ChangeError::NoSecretKey)?;
        let slot = self.next_slot_id('p');
        let w = password_wrap(
            &self.keys.account_key,
            &self.file.account_id,
            slot.clone(),
            new,
            &sk,
            params,
        )?;
        // After an interrupted Secret Key change that could not be settled
        // at unlock, the YubiKey wraps may be sealed for the other key: as
        // the other password wrap goes now, they follow the key in force
        // (or no card would open the vault again).
        let resealed = if self.needs_settling() {
            let id = self.file.account_id;
            let mut out = Vec::with_capacity(self.file.piv_wraps.len());
            for p in &self.file.piv_wraps {
                out.push(reseal_piv(p, &id, &sk, 0)?);
            }
            Some(out)
        } else {
            None
        };
        self.change(path, |v| {
            v.file.password_wraps = vec![w];
            if let Some(piv) = resealed {
                v.file.piv_wraps = piv;
            }
            Ok(())
        })?;
        self.opened_with = Some(slot);
        Ok(())
    }

    /// Phase 1 of a Secret Key change (recovery or rotation): draws a new
    /// Secret Key, adds a password wrap for (`new_password`, new key) next to
    /// the existing ones, and re-seals every YubiKey wrap for the new key, in
    /// one atomic write. After this, the vault opens with the old credentials
    /// (old wraps) and with the new ones.
    ///
    /// Phase 2 is the caller's: store the new key in the file/keychain
    /// protectors. Phase 3 is [`Unlocked::finish_secret_key_change`], which drops the
    /// old wraps. A crash between phases is settled at the next unlock by
    /// [`Unlocked::settle`].
    pub fn begin_secret_key_change(
        &mut self,
        path: &Path,
        new_password: &Password,
        params: KdfParams,
        now: u64,
    ) -> Result<PendingChange, ChangeError> {
        params.check_new()?;
        let id = self.file.account_id;
        let new_sk = SecretKey::generate(&id)?;
        let slot = self.next_slot_id('s');
        let w = password_wrap(
            &self.keys.account_key,
            &id,
            slot.clone(),
            new_password,
            &new_sk,
            params,
        )?;
        let mut resealed = Vec::with_capacity(self.file.piv_wraps.len());
        for p in &self.file.piv_wraps {
            resealed.push(reseal_piv(p, &id, &new_sk, now)?);
        }
        let old_wraps: Vec<String> = self
            .file
            .password_wraps
            .iter()
            .map(|w| w.slot_id.clone())
            .collect();
        self.change(path, |v| {
            // Keep at most one old wrap: the one in force.
            let keep = v
                .opened_with
                .clone()
                .or_else(|| v.file.password_wraps.last().map(|w| w.slot_id.clone()));
            v.file
                .password_wraps
                .retain(|x| Some(&x.slot_id) == keep.as_ref());
            v.file
                .password_wraps
                .truncate(format::MAX_PASSWORD_WRAPS - 1);
            v.file.password_wraps.push(w);
            v.file.piv_wraps = resealed;
            Ok(())
        })?;
        Ok(PendingChange {
            new_secret_key: new_sk,
            old_wraps,
            new_wrap: slot,
        })
    }

    /// Phase 3: drops the old password wraps; the new Secret Key is now the
    /// only one, and the new password the only password.
    pub fn finish_secret_key_change(
        &mut self,
        path: &Path,
        pending: &PendingChange,
    ) -> Result<(), ChangeError> {
        self.change(path, |v| {
            v.file
                .password_wraps
                .retain(|w| !pending.old_wraps.contains(&w.slot_id));
            Ok(())
        })?;
        self.keys
            .secret_key
            .copy_from_slice(pending.new_secret_key.expose_compact());
        self.opened_with = Some(pending.new_wrap.clone());
        Ok(())
    }

    /// Whether an earlier change was interrupted (more than one password wrap).
    pub fn needs_settling(&self) -> bool {
        self.file.password_wraps.len() > 1
    }

    /// Finishes or rolls back an interrupted Secret Key change: keeps only the
    /// password wrap that opened the vault, and re-seals the YubiKey wraps for
    /// the Secret Key that opened it. The caller also brings the file/keychain
    /// protectors in line with [`Unlocked::secret_key`].
    pub fn settle(&mut self, path: &Path, now: u64) -> Result<(), ChangeError> {
        let Some(keep) = self.opened_with.clone() else {
            return Ok(());
        };
        let sk = self.secret_key().ok_or(ChangeError::NoSecretKey)?;
        let id = self.file.account_id;
        let mut resealed = Vec::with_capacity(self.file.piv_wraps.len());
        for p in &self.file.piv_wraps {
            resealed.push(reseal_piv(p, &id, &sk, now)?);
        }
        self.change(path, |v| {
            v.file.password_wraps.retain(|w| w.slot_id == keep);
            v.file.piv_wraps = resealed;
            Ok(())
        })
    }

    // ------------------------------------------------------------ recovery codes

    /// Makes a recovery code, wraps the account key for it, writes the vault.
    pub fn add_recovery_code(
        &mut self,
        path: &Path,
        now: u64,
    ) -> Result<(RecoveryCode, [u8; 8]), ChangeError> {
        let id = self.file.account_id;
        let code = RecoveryCode::generate()?;
        let code_id = code.code_id(&id);
        let key = code.wrap_key(&id);
        let sealed = wrap::seal(
            key.expose(),
            Purpose::Recovery,
            &id,
            &hex(&code_id),
            &self.keys.account_key,
        )?;
        self.change(path, |v| {
            v.file.recovery_wraps.push(RecoveryWrap {
                code_id,
                created: now,
                last_used: 0,
                sealed,
            });
            Ok(())
        })?;
        Ok((code, code_id))
    }

    /// Revokes a recovery code by its id (hex, or a unique prefix of it).
    pub fn revoke_recovery_code(
        &mut self,
        path: &Path,
        id_hex: &str,
    ) -> Result<String, ChangeError> {
        let want = id_hex.to_ascii_lowercase();
        let matches: Vec<String> = self
            .file
            .recovery_wraps
            .iter()
            .map(|w| hex(&w.code_id))
            .filter(|h| !want.is_empty() && h.starts_with(&want))
            .collect();
        let [full] = matches.as_slice() else {
            return Err(ChangeError::NotFound("recovery code", id_hex.to_owned()));
        };
        let full = full.clone();
        let now = crate::clock::Clock::unix_now(&crate::clock::SystemClock);
        self.change(path, |v| {
            let gone: Vec<[u8; 8]> = v
                .file
                .recovery_wraps
                .iter()
                .filter(|w| hex(&w.code_id) == full)
                .map(|w| w.code_id)
                .collect();
            v.file.recovery_wraps.retain(|w| hex(&w.code_id) != full);
            for code_id in gone {
                v.tombstone(format::TombstoneKind::RecoveryCode, code_id.to_vec(), now);
            }
            Ok(())
        })?;
        Ok(full)
    }

    /// Records tombstones for recovery codes revoked before tombstones
    /// existed (and removes their wraps if present), in one write.
    pub fn tombstone_codes(&mut self, path: &Path, codes: &[[u8; 8]]) -> Result<(), ChangeError> {
        let now = crate::clock::Clock::unix_now(&crate::clock::SystemClock);
        self.change(path, |v| {
            for c in codes {
                v.file.recovery_wraps.retain(|w| &w.code_id != c);
                v.tombstone(format::TombstoneKind::RecoveryCode, c.to_vec(), now);
            }
            Ok(())
        })
    }

    /// Records that a recovery code was used.
    pub fn touch_recovery_code(
        &mut self,
        path: &Path,
        code_id: &[u8; 8],
        now: u64,
    ) -> Result<(), ChangeError> {
        self.change(path, |v| {
            for w in v
                .file
                .recovery_wraps
                .iter_mut()
                .filter(|w| &w.code_id == code_id)
            {
                w.last_used = now;
            }
            Ok(())
        })
    }

    // ------------------------------------------------------------ protectors

    /// Enrolls a YubiKey given its public key: seals the Secret Key for it.
    #[allow(clippy::too_many_arguments)]
    pub fn add_piv(
        &mut self,
        path: &Path,
        serial: u32,
        slot: u8,
        pin_policy: u8,
        touch_policy: u8,
        card_pk: &[u8],
        now: u64,
    ) -> Result<(), ChangeError> {
        if self
            .file
            .piv_wraps
            .iter()
            .any(|p| p.serial == serial && p.slot == slot)
        {
            return Err(ChangeError::Exists(format!(
                "yubikey {serial} slot {slot:02x}"
            )));
        }
        let sk = self.secret_key().ok_or(ChangeError::NoSecretKey)?;
        let id = self.file.account_id;
        let card_c = piv::compress(card_pk)?;
        let (epk, key) = piv::enroll(&card_c)?;
        let sealed = piv::seal_secret_key(&key, &id, serial, slot, &sk)?;
        self.change(path, |v| {
            v.file.piv_wraps.push(PivWrap {
                serial,
                slot,
                pin_policy,
                touch_policy,
                card_pk: card_c,
                epk,
                added: v.after_removal(
                    format::TombstoneKind::Yubikey,
                    &format::Tombstone::yubikey_id(serial, slot),
                    now,
                ),
                last_used: 0,
                sealed,
            });
            Ok(())
        })
    }

    /// Adds (or refreshes) a file or keychain protector record.
    pub fn upsert_protector(
        &mut self,
        path: &Path,
        kind: ProtectorKind,
        now: u64,
    ) -> Result<(), ChangeError> {
        let device = self.device;
        self.change(path, |v| {
            let mine = v
                .file
                .protectors
                .iter()
                .position(|p| p.kind == kind && v.owns(p));
            match mine {
                Some(i) => {
                    let p = &mut v.file.protectors[i];
                    // Re-enrolled: later than any copy that still calls it stale.
                    if p.flags & format::FLAG_STALE != 0 {
                        p.added = now.max(p.added + 1);
                    }
                    p.flags &= !format::FLAG_STALE;
                    if p.device == [0; 16] && device != [0; 16] {
                        p.device = device;
                    }
                }
                None => {
                    let added = v.after_removal(
                        format::TombstoneKind::Protector,
                        &format::Tombstone::protector_id(kind, &device),
                        now,
                    );
                    v.file.protectors.push(ProtectorRecord {
                        kind,
                        added,
                        last_used: 0,
                        flags: 0,
                        device,
                    })
                }
            }
            Ok(())
        })
    }

    /// Marks a file/keychain protector stale (it could not take a new Secret Key).
    pub fn mark_stale(&mut self, path: &Path, kind: ProtectorKind) -> Result<(), ChangeError> {
        let (device, main_file) = (self.device, self.main_file);
        self.change(path, |v| {
            for p in v.file.protectors.iter_mut().filter(|p| {
                p.kind == kind && (p.device == device || (p.device == [0; 16] && main_file))
            }) {
                p.flags |= format::FLAG_STALE;
            }
            Ok(())
        })
    }

    /// Removes a protector record: `file`, `keychain`, or a YubiKey by (serial, slot).
    pub fn remove_protector(
        &mut self,
        path: &Path,
        which: ProtectorRef,
    ) -> Result<(), ChangeError> {
        let exists = match which {
            ProtectorRef::Kind(k) => self
                .file
                .protectors
                .iter()
                .any(|p| p.kind == k && self.owns(p)),
            ProtectorRef::Piv { serial, slot } => self
                .file
                .piv_wraps
                .iter()
                .any(|p| p.serial == serial && p.slot == slot),
        };
        if !exists {
            return Err(ChangeError::NotFound("protector", format!("{which:?}")));
        }
        let now = crate::clock::Clock::unix_now(&crate::clock::SystemClock);
        self.change(path, |v| {
            match which {
                ProtectorRef::Kind(k) => {
                    let gone: Vec<ProtectorRecord> = v
                        .file
                        .protectors
                        .iter()
                        .filter(|p| p.kind == k && v.owns(p))
                        .cloned()
                        .collect();
                    for p in gone {
                        v.file.protectors.retain(|x| x != &p);
                        let id = format::Tombstone::protector_id(p.kind, &p.device);
                        v.tombstone(format::TombstoneKind::Protector, id, now.max(p.added));
                    }
                }
                ProtectorRef::Piv { serial, slot } => {
                    let added = v
                        .file
                        .piv_wraps
                        .iter()
                        .filter(|p| p.serial == serial && p.slot == slot)
                        .map(|p| p.added)
                        .max()
                        .unwrap_or(0);
                    v.file
                        .piv_wraps
                        .retain(|p| !(p.serial == serial && p.slot == slot));
                    let id = format::Tombstone::yubikey_id(serial, slot);
                    v.tombstone(format::TombstoneKind::Yubikey, id, now.max(added));
                }
            }
            Ok(())
        })
    }

    /// Records the use of a protector (best effort: a failed write is only reported).
    pub fn touch_protector(
        &mut self,
        path: &Path,
        which: ProtectorRef,
        now: u64,
    ) -> Result<(), ChangeError> {
        self.change(path, |v| {
            match which {
                ProtectorRef::Kind(k) => {
                    let (device, main_file) = (v.device, v.main_file);
                    v.file
                        .protectors
                        .iter_mut()
                        .filter(|p| {
                            p.kind == k
                                && (p.device == device || (p.device == [0; 16] && main_file))
                        })
                        .for_each(|p| p.last_used = now)
                }
                ProtectorRef::Piv { serial, slot } => v
                    .file
                    .piv_wraps
                    .iter_mut()
                    .filter(|p| p.serial == serial && p.slot == slot)
                    .for_each(|p| p.last_used = now),
            }
            Ok(())
        })
    }
}

/// Names a protector record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtectorRef {
    /// The file or keychain protector.
    Kind(ProtectorKind),
    /// A YubiKey slot.
    Piv {
        /// Serial.
        serial: u32,
        /// Slot.
        slot: u8,
    },
}

fn reseal_piv(
    p: &PivWrap,
    id: &AccountId,
    sk: &SecretKey,
    _now: u64,
) -> Result<PivWrap, ChangeError> {
    let (epk, key) = piv::enroll(&p.card_pk)?;
    let sealed = piv::seal_secret_key(&key, id, p.serial, p.slot, sk)?;
    Ok(PivWrap {
        epk,
        sealed,
        ..p.clone()
    })
}
