//! The vault file format (version 1), byte for byte. `SECURITY.md` restates it.
//!
//! ```text
//! envelope (every version):
//!   magic      8   89 4B 57 56 0D 0A 1A 0A   ("\x89KWV\r\n\x1a\n")
//!   version    u16 format version (1)
//!   file_len   u64 length of the whole file, checksum included
//!   body       ... (version-specific)
//!   checksum   32  SHA-256 of every byte before it
//! body, version 1:
//!   account_id 6   ASCII
//!   created    u64 Unix seconds
//!   generation u64 incremented by every write
//!   count      u32 number of records
//!   records    count × (type u8 | len u32 | payload[len])
//!   mac        32  HMAC-SHA256(mac_key, every byte from the magic to the end of the records)
//! ```
//!
//! All integers are big-endian. The checksum catches accidental damage
//! (a flipped bit, a truncated copy) before any key derivation; the MAC, keyed
//! from the account key, catches deliberate edits (a removed, duplicated,
//! reordered or altered record) on unlock.

use super::super::account::password::KdfParams;
use super::super::account::wrap::{NONCE_LEN, Sealed, TAG_LEN};
use super::super::account::{AccountId, items, organizer, piv};
use crate::kdf::{hmac_sha256, mac_eq};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// The magic bytes at the start of every vault file.
pub const MAGIC: [u8; 8] = [0x89, b'K', b'W', b'V', b'\r', b'\n', 0x1a, b'\n'];
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Size of magic + version + file_len.
pub const ENVELOPE_HEADER: usize = 8 + 2 + 8;
/// Size of the trailing checksum.
pub const CHECKSUM_LEN: usize = 32;
/// Size of the MAC.
pub const MAC_LEN: usize = 32;
/// Size of the version-1 body header.
pub const BODY_HEADER: usize = 6 + 8 + 8 + 4;
/// Largest vault file keyward reads (refused before reading it all).
pub const MAX_FILE_LEN: u64 = 256 * 1024 * 1024;
/// Largest number of password wraps (one, and one more while a change is in flight).
pub const MAX_PASSWORD_WRAPS: usize = 2;

/// Record type bytes.
pub mod record_type {
    /// The account key under the AUK.
    pub const PASSWORD_WRAP: u8 = 0x01;
    /// The account key under a recovery code.
    pub const RECOVERY_WRAP: u8 = 0x02;
    /// The Secret Key under a YubiKey.
    pub const PIV_WRAP: u8 = 0x03;
    /// A protector that keeps the Secret Key outside the vault (file, keychain).
    pub const PROTECTOR: u8 = 0x04;
    /// An item.
    pub const ITEM: u8 = 0x05;
    /// This vault's organizer key (at most one).
    pub const ORGANIZER_KEY: u8 = 0x06;
    /// The account key sealed to an organizer's public key.
    pub const ORGANIZER_WRAP: u8 = 0x07;
    /// A recovery grant that was used (it works once).
    pub const USED_GRANT: u8 = 0x08;
    /// An SSH key (its private part, or where a card holds it) under the item key.
    pub const SSH_KEY: u8 = 0x09;
    /// This vault's organizer key, on a YubiKey: where it is and its public
    /// key (at most one organizer key per vault, this or 0x06).
    pub const ORGANIZER_CARD: u8 = 0x0a;
    /// A device of the account: its id, name and when it was named.
    pub const DEVICE: u8 = 0x0b;
    /// A removed record (item, recovery code, YubiKey, protector, device,
    /// SSH key, organizer wrap): kept so that a merge with an older copy
    /// does not bring it back.
    pub const TOMBSTONE: u8 = 0x0c;
    /// An account key this vault had before a `rekey`, under the item key
    /// (to read other devices' copies written before they saw the rekey).
    pub const PREVIOUS_KEY: u8 = 0x0d;
}

/// Why a vault file could not be read. Each says what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The magic bytes are wrong.
    #[error("not a keyward vault (the file does not start with keyward's magic bytes)")]
    NotAVault,
    /// Shorter than its header says.
    #[error(
        "the vault file is truncated: it should be {expected} bytes but is {actual}; restore it \
         from a backup (keyward did not modify it)"
    )]
    Truncated {
        /// Length from the header.
        expected: u64,
        /// Actual length.
        actual: u64,
    },
    /// Longer than its header says.
    #[error(
        "the vault file has {extra} unexpected bytes after its end; restore it from a backup \
         (keyward did not modify it)",
        extra = actual - expected
    )]
    TrailingData {
        /// Length from the header.
        expected: u64,
        /// Actual length.
        actual: u64,
    },
    /// The checksum does not match: accidental damage.
    #[error(
        "the vault file is damaged (its checksum does not match: some bytes changed on disk); \
         restore it from a backup (keyward did not modify it)"
    )]
    Damaged,
    /// Written by a newer keyward.
    #[error(
        "the vault file uses format version {found}, newer than this keyward understands \
         (version {VERSION}); upgrade keyward"
    )]
    NewerVersion {
        /// Version found.
        found: u16,
    },
    /// Version 0 does not exist.
    #[error("the vault file has an invalid format version {found}")]
    BadVersion {
        /// Version found.
        found: u16,
    },
    /// The checksum is right but the structure is not: edited by hand or by an attacker.
    #[error("the vault file is malformed at byte {offset}: {what}")]
    Malformed {
        /// Byte offset of the problem.
        offset: usize,
        /// What is wrong.
        what: String,
    },
    /// Too large to be a vault.
    #[error("the vault file is {0} bytes, larger than keyward accepts ({MAX_FILE_LEN})")]
    TooLarge(u64),
}

/// The account key under the AUK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordWrap {
    /// Names this wrap; part of its associated data.
    pub slot_id: String,
    /// Random salt input of the Argon2id salt.
    pub salt16: [u8; 16],
    /// Argon2id parameters.
    pub params: KdfParams,
    /// The wrapped account key.
    pub sealed: Sealed,
}

/// The account key under a recovery code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryWrap {
    /// `code_id`: names the code; the wrap's slot id is its hex.
    pub code_id: [u8; 8],
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds, 0 = never.
    pub last_used: u64,
    /// The wrapped account key.
    pub sealed: Sealed,
}

/// The Secret Key under a YubiKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PivWrap {
    /// Card serial.
    pub serial: u32,
    /// PIV slot (0x82..=0x95 retired slots, or 9A/9C/9D/9E).
    pub slot: u8,
    /// PIN policy as the card encodes it.
    pub pin_policy: u8,
    /// Touch policy as the card encodes it.
    pub touch_policy: u8,
    /// The card's public key, compressed SEC1.
    pub card_pk: [u8; 33],
    /// The ephemeral public key, compressed SEC1.
    pub epk: [u8; 33],
    /// Unix seconds.
    pub added: u64,
    /// Unix seconds, 0 = never.
    pub last_used: u64,
    /// The wrapped Secret Key (35 ASCII symbols).
    pub sealed: Sealed,
}

/// Kinds of protector records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtectorKind {
    /// A 0600 file in the data directory.
    File,
    /// The OS keychain.
    Keychain,
}

impl ProtectorKind {
    /// The byte on disk.
    pub fn to_byte(self) -> u8 {
        match self {
            ProtectorKind::File => 1,
            ProtectorKind::Keychain => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(ProtectorKind::File),
            2 => Some(ProtectorKind::Keychain),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ProtectorKind::File => "file",
            ProtectorKind::Keychain => "keychain",
        }
    }
}

/// A protector whose secret lives outside the vault; this record holds only
/// its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectorRecord {
    /// What it is.
    pub kind: ProtectorKind,
    /// Unix seconds.
    pub added: u64,
    /// Unix seconds, 0 = never.
    pub last_used: u64,
    /// Bit 0: stale (holds an older Secret Key; re-enroll).
    pub flags: u8,
    /// The device whose keychain or state directory holds it; all zero in
    /// a record written before devices had ids (it then belongs to the
    /// device that writes the vault's main file).
    pub device: DeviceId,
}

/// A device's id: 16 random bytes drawn at `init` or `join`.
pub type DeviceId = [u8; 16];

/// A device of the account (record 0x0b).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Random.
    pub id: DeviceId,
    /// Unix seconds.
    pub added: u64,
    /// Unix seconds of the last rename (`added` if never renamed).
    pub named: u64,
    /// 1..=64 bytes of UTF-8, no control characters.
    pub name: String,
}

/// Longest device name, in bytes.
pub const MAX_DEVICE_NAME: usize = 64;

/// Whether `name` can name a device.
pub fn device_name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_DEVICE_NAME && !name.chars().any(char::is_control)
}

/// What a tombstone removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TombstoneKind {
    /// An item; id: its 16-byte item id.
    Item,
    /// A recovery code (revoked); id: its 8-byte code id.
    RecoveryCode,
    /// A YubiKey wrap; id: serial (u32) and slot (u8).
    Yubikey,
    /// A file or keychain protector; id: kind byte and device id.
    Protector,
    /// A device; id: its device id.
    Device,
    /// An SSH key; id: its 16-byte key id.
    SshKey,
    /// An organizer wrap; id: the organizer's public key (33 bytes).
    OrganizerWrap,
    /// Every item of a name, up to the removal's time; id: the name's
    /// keyed hash (16 bytes, `vault::name_id`).
    ItemName,
}

impl TombstoneKind {
    const ALL: [TombstoneKind; 8] = [
        TombstoneKind::Item,
        TombstoneKind::RecoveryCode,
        TombstoneKind::Yubikey,
        TombstoneKind::Protector,
        TombstoneKind::Device,
        TombstoneKind::SshKey,
        TombstoneKind::OrganizerWrap,
        TombstoneKind::ItemName,
    ];

    /// The byte on disk.
    pub fn to_byte(self) -> u8 {
        match self {
            TombstoneKind::Item => 1,
            TombstoneKind::RecoveryCode => 2,
            TombstoneKind::Yubikey => 3,
            TombstoneKind::Protector => 4,
            TombstoneKind::Device => 5,
            TombstoneKind::SshKey => 6,
            TombstoneKind::OrganizerWrap => 7,
            TombstoneKind::ItemName => 8,
        }
    }

    /// The kind a byte on disk names.
    pub fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.to_byte() == b)
    }

    /// Length of the id this kind names.
    pub fn id_len(self) -> usize {
        match self {
            TombstoneKind::Item
            | TombstoneKind::Device
            | TombstoneKind::SshKey
            | TombstoneKind::ItemName => 16,
            TombstoneKind::RecoveryCode => 8,
            TombstoneKind::Yubikey => 5,
            TombstoneKind::Protector => 17,
            TombstoneKind::OrganizerWrap => 33,
        }
    }
}

/// An earlier account key (record 0x0d).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousKey {
    /// `HMAC-SHA256(old account key, "keyward/v1 key-id")[0..8]`.
    pub key_id: [u8; 8],
    /// Unix seconds of the rekey that retired it.
    pub retired: u64,
    /// The old account key under the item key (purpose `previous-key`,
    /// slot id `hex(key_id)`).
    pub sealed: Sealed,
}

/// A removed record (record 0x0c).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// What was removed.
    pub kind: TombstoneKind,
    /// Its id ([`TombstoneKind::id_len`] bytes).
    pub id: Vec<u8>,
    /// Unix seconds.
    pub removed: u64,
}

impl Tombstone {
    /// The id of a YubiKey wrap's tombstone.
    pub fn yubikey_id(serial: u32, slot: u8) -> Vec<u8> {
        let mut id = serial.to_be_bytes().to_vec();
        id.push(slot);
        id
    }

    /// The id of a protector's tombstone.
    pub fn protector_id(kind: ProtectorKind, device: &DeviceId) -> Vec<u8> {
        let mut id = vec![kind.to_byte()];
        id.extend_from_slice(device);
        id
    }
}

/// Flag bit: the protector holds a Secret Key that is no longer current.
pub const FLAG_STALE: u8 = 1;

/// The organizer's private key, sealed under the item key (record 0x06).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizerKeyRecord {
    /// Random; the wrap's slot id is its hex.
    pub key_id: [u8; 8],
    /// Unix seconds.
    pub created: u64,
    /// The sealed scalar.
    pub sealed: Sealed,
}

/// The account key sealed to an organizer (record 0x07).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizerWrap {
    /// The organizer's public key, compressed SEC1.
    pub org_pk: [u8; 33],
    /// The ephemeral public key, compressed SEC1.
    pub epk: [u8; 33],
    /// Bit 0: required by machine policy (the member cannot remove it).
    pub flags: u8,
    /// Unix seconds.
    pub added: u64,
    /// A name for people (0..=64 bytes, no control characters).
    pub name: String,
    /// The sealed account key.
    pub sealed: Sealed,
}

/// This vault's organizer key on a YubiKey (record 0x0a): the private key
/// was generated on the card and never leaves it; nothing here is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizerCardRecord {
    /// Card serial.
    pub serial: u32,
    /// PIV slot (0x82..=0x95 retired slots, or 9A/9C/9D/9E).
    pub slot: u8,
    /// PIN policy as the card encodes it.
    pub pin_policy: u8,
    /// Touch policy as the card encodes it.
    pub touch_policy: u8,
    /// The card's public key, compressed SEC1: the organizer's public key.
    pub card_pk: [u8; 33],
    /// Unix seconds.
    pub created: u64,
}

/// Whether `slot` is a PIV key slot: the 20 retired slots or 9A, 9C, 9D, 9E.
pub fn is_piv_key_slot(slot: u8) -> bool {
    matches!(slot, 0x82..=0x95 | 0x9a | 0x9c | 0x9d | 0x9e)
}

/// Flag bit of an organizer wrap: enrolled by machine policy as required.
pub const FLAG_REQUIRED: u8 = 1;

/// A recovery grant that was used (record 0x08).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedGrant {
    /// The grant's id.
    pub grant_id: [u8; 16],
    /// Unix seconds.
    pub used: u64,
}

/// The records of organizer recovery (SECURITY.md §16). A vault written
/// before them has none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrganizerRecords {
    /// This vault's own organizer key, if its owner is an organizer and
    /// keeps it in the vault.
    pub key: Option<OrganizerKeyRecord>,
    /// Where this vault's organizer key is, if its owner keeps it on a
    /// YubiKey. At most one of `key` and `card` is set.
    pub card: Option<OrganizerCardRecord>,
    /// The organizers this account is enrolled with.
    pub wraps: Vec<OrganizerWrap>,
    /// Grants used to recover this account.
    pub used_grants: Vec<UsedGrant>,
}

impl OrganizerRecords {
    fn count(&self) -> usize {
        usize::from(self.key.is_some())
            + usize::from(self.card.is_some())
            + self.wraps.len()
            + self.used_grants.len()
    }
}

/// An SSH key: its public key blob in clear (so that a locked agent can
/// still list it), everything else sealed (`vault::ssh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeyRecord {
    /// Random id (the sealed part's slot id, in hex).
    pub key_id: [u8; 16],
    /// The key blob as SSH sends it (a plain key or a certificate).
    pub public: Vec<u8>,
    /// Name, comment, settings and the private key or its card.
    pub sealed: Sealed,
}

/// Longest SSH public key blob kept (a certificate with many principals).
pub const MAX_SSH_PUBLIC: usize = 16 * 1024;
/// Longest sealed SSH key record.
pub const MAX_SSH_SEALED: usize = 64 * 1024;

/// Item slots reserved before any record is parsed.
const PREALLOC_ITEMS: usize = 4096;

/// An item: id and sealed contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRecord {
    /// Random id.
    pub item_id: items::ItemId,
    /// Sealed name, value and times.
    pub sealed: Sealed,
}

/// A vault file, parsed but not yet authenticated by its MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultFile {
    /// The account.
    pub account_id: AccountId,
    /// Unix seconds.
    pub created: u64,
    /// Write counter.
    pub generation: u64,
    /// 1 or 2 password wraps.
    pub password_wraps: Vec<PasswordWrap>,
    /// Recovery codes.
    pub recovery_wraps: Vec<RecoveryWrap>,
    /// YubiKeys.
    pub piv_wraps: Vec<PivWrap>,
    /// File and keychain protectors.
    pub protectors: Vec<ProtectorRecord>,
    /// Organizer key, organizer wraps, used grants.
    pub organizers: OrganizerRecords,
    /// SSH keys.
    pub ssh_keys: Vec<SshKeyRecord>,
    /// The account's devices.
    pub devices: Vec<DeviceRecord>,
    /// Removed records.
    pub tombstones: Vec<Tombstone>,
    /// Account keys retired by `rekey`.
    pub previous_keys: Vec<PreviousKey>,
    /// Items.
    pub items: Vec<ItemRecord>,
}

/// A parsed file with what is needed to check its MAC later.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The contents.
    pub vault: VaultFile,
    /// Bytes covered by the MAC.
    pub mac_input: Vec<u8>,
    /// The stored MAC.
    pub mac: [u8; MAC_LEN],
}

impl Parsed {
    /// Checks the MAC under `mac_key`.
    pub fn mac_ok(&self, mac_key: &[u8; 32]) -> bool {
        mac_eq(&hmac_sha256(mac_key, &[&self.mac_input]), &self.mac)
    }
}

// ---------------------------------------------------------------- encoding

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn sealed16(&mut self, s: &Sealed) {
        debug_assert!(
            s.ct.len() <= usize::from(u16::MAX),
            "ciphertext too long for its u16 length"
        );
        self.bytes(&s.nonce);
        self.u16(s.ct.len() as u16);
        self.bytes(&s.ct);
    }
    fn record(&mut self, ty: u8, f: impl FnOnce(&mut Writer)) {
        self.u8(ty);
        let at = self.0.len();
        self.u32(0);
        f(self);
        let len = (self.0.len() - at - 4) as u32;
        self.0[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// A change to the item list. [`VaultFile::encode_edited`] encodes the file
/// as it will be after the change without making it: a vault write can then
/// be prepared and made durable while the vault is only shared, and applied
/// in memory afterwards (see `Unlocked::prepare_set`).
#[derive(Debug, Clone, Copy)]
pub enum ItemEdit<'a> {
    /// No change.
    Unchanged,
    /// Item `index` gets new sealed contents.
    Replace(usize, &'a Sealed),
    /// A new item at the end.
    Append(&'a ItemRecord),
    /// Item `index` goes, the way `Vec::swap_remove` does it: the last item
    /// takes its place; its tombstone is added (or replaces the one with
    /// its id).
    SwapRemove(usize, &'a [Tombstone]),
}

impl VaultFile {
    /// Number of records.
    pub fn record_count(&self) -> usize {
        self.password_wraps.len()
            + self.recovery_wraps.len()
            + self.piv_wraps.len()
            + self.protectors.len()
            + self.organizers.count()
            + self.ssh_keys.len()
            + self.devices.len()
            + self.tombstones.len()
            + self.previous_keys.len()
            + self.items.len()
    }

    /// Encodes the file, computing the MAC under `mac_key` and the checksum.
    pub fn encode(&self, mac_key: &[u8; 32]) -> Vec<u8> {
        self.encode_edited(mac_key, self.generation, ItemEdit::Unchanged)
    }

    /// The items as they are after `edit`: (id, sealed contents), in order.
    fn edited_items<'a>(
        &'a self,
        edit: ItemEdit<'a>,
    ) -> impl ExactSizeIterator<Item = (&'a items::ItemId, &'a Sealed)> + Clone + 'a {
        let len = self.items.len();
        let count = match edit {
            ItemEdit::Unchanged | ItemEdit::Replace(..) => len,
            ItemEdit::Append(_) => len + 1,
            ItemEdit::SwapRemove(..) => len.saturating_sub(1),
        };
        (0..count).map(move |j| {
            let at = |k: usize| (&self.items[k].item_id, &self.items[k].sealed);
            match edit {
                ItemEdit::Append(r) if j == len => (&r.item_id, &r.sealed),
                ItemEdit::Replace(k, s) if j == k => (&self.items[j].item_id, s),
                ItemEdit::SwapRemove(k, _) if j == k => at(len - 1),
                _ => at(j),
            }
        })
    }

    /// Encodes the file as it will be after `edit`, with `generation`.
    pub fn encode_edited(
        &self,
        mac_key: &[u8; 32],
        generation: u64,
        edit: ItemEdit<'_>,
    ) -> Vec<u8> {
        let items = self.edited_items(edit);
        let item_count = items.len();
        let new_tombs: &[Tombstone] = match edit {
            ItemEdit::SwapRemove(_, t) => t,
            _ => &[],
        };
        let same = |t: &Tombstone| new_tombs.iter().any(|n| n.kind == t.kind && n.id == t.id);
        let tomb_count = self.tombstones.iter().filter(|t| !same(t)).count() + new_tombs.len();
        let item_bytes: usize = items
            .clone()
            .map(|(_, s)| 5 + 16 + NONCE_LEN + 4 + s.ct.len())
            .sum();
        let mut w = Writer(Vec::with_capacity(
            ENVELOPE_HEADER
                + BODY_HEADER
                + item_bytes
                + 1024 * (1 + self.record_count() - self.items.len())
                + 64,
        ));
        w.bytes(&MAGIC);
        w.u16(VERSION);
        w.u64(0); // file_len, patched below
        w.bytes(self.account_id.as_bytes());
        w.u64(self.created);
        w.u64(generation);
        w.u32(
            (self.record_count() - self.items.len() - self.tombstones.len()
                + item_count
                + tomb_count) as u32,
        );
        for p in &self.password_wraps {
            w.record(record_type::PASSWORD_WRAP, |w| {
                debug_assert!(
                    p.slot_id.len() <= usize::from(u8::MAX),
                    "slot id too long for its u8 length"
                );
                w.u8(p.slot_id.len() as u8);
                w.bytes(p.slot_id.as_bytes());
                w.bytes(&p.salt16);
                w.u32(p.params.m_kib);
                w.u32(p.params.t);
                w.u32(p.params.p);
                w.sealed16(&p.sealed);
            });
        }
        for r in &self.recovery_wraps {
            w.record(record_type::RECOVERY_WRAP, |w| {
                w.bytes(&r.code_id);
                w.u64(r.created);
                w.u64(r.last_used);
                w.sealed16(&r.sealed);
            });
        }
        for p in &self.piv_wraps {
            w.record(record_type::PIV_WRAP, |w| {
                w.u32(p.serial);
                w.u8(p.slot);
                w.u8(p.pin_policy);
                w.u8(p.touch_policy);
                w.bytes(&p.card_pk);
                w.bytes(&p.epk);
                w.u64(p.added);
                w.u64(p.last_used);
                w.sealed16(&p.sealed);
            });
        }
        for p in &self.protectors {
            w.record(record_type::PROTECTOR, |w| {
                w.u8(p.kind.to_byte());
                w.u64(p.added);
                w.u64(p.last_used);
                w.u8(p.flags);
                if p.device != [0; 16] {
                    w.bytes(&p.device);
                }
            });
        }
        if let Some(k) = &self.organizers.key {
            w.record(record_type::ORGANIZER_KEY, |w| {
                w.bytes(&k.key_id);
                w.u64(k.created);
                w.sealed16(&k.sealed);
            });
        }
        for o in &self.organizers.wraps {
            w.record(record_type::ORGANIZER_WRAP, |w| {
                w.bytes(&o.org_pk);
                w.bytes(&o.epk);
                w.u8(o.flags);
                w.u64(o.added);
                debug_assert!(
                    o.name.len() <= organizer::MAX_NAME,
                    "organizer name too long"
                );
                w.u8(o.name.len() as u8);
                w.bytes(o.name.as_bytes());
                w.sealed16(&o.sealed);
            });
        }
        for g in &self.organizers.used_grants {
            w.record(record_type::USED_GRANT, |w| {
                w.bytes(&g.grant_id);
                w.u64(g.used);
            });
        }
        for k in &self.ssh_keys {
            w.record(record_type::SSH_KEY, |w| {
                w.bytes(&k.key_id);
                w.u16(k.public.len() as u16);
                w.bytes(&k.public);
                w.bytes(&k.sealed.nonce);
                w.u32(k.sealed.ct.len() as u32);
                w.bytes(&k.sealed.ct);
            });
        }
        if let Some(c) = &self.organizers.card {
            w.record(record_type::ORGANIZER_CARD, |w| {
                w.u32(c.serial);
                w.u8(c.slot);
                w.u8(c.pin_policy);
                w.u8(c.touch_policy);
                w.bytes(&c.card_pk);
                w.u64(c.created);
            });
        }
        for d in &self.devices {
            w.record(record_type::DEVICE, |w| {
                w.bytes(&d.id);
                w.u64(d.added);
                w.u64(d.named);
                debug_assert!(device_name_ok(&d.name), "bad device name");
                w.u8(d.name.len() as u8);
                w.bytes(d.name.as_bytes());
            });
        }
        for t in self.tombstones.iter().filter(|t| !same(t)).chain(new_tombs) {
            w.record(record_type::TOMBSTONE, |w| {
                w.u8(t.kind.to_byte());
                debug_assert_eq!(t.id.len(), t.kind.id_len(), "tombstone id length");
                w.bytes(&t.id);
                w.u64(t.removed);
            });
        }
        for k in &self.previous_keys {
            w.record(record_type::PREVIOUS_KEY, |w| {
                w.bytes(&k.key_id);
                w.u64(k.retired);
                w.sealed16(&k.sealed);
            });
        }
        for (item_id, sealed) in items {
            w.record(record_type::ITEM, |w| {
                w.bytes(item_id);
                w.bytes(&sealed.nonce);
                w.u32(sealed.ct.len() as u32);
                w.bytes(&sealed.ct);
            });
        }
        let total = (w.0.len() + MAC_LEN + CHECKSUM_LEN) as u64;
        w.0[10..18].copy_from_slice(&total.to_be_bytes());
        let mac = hmac_sha256(mac_key, &[&w.0]);
        w.bytes(&mac);
        let sum: [u8; 32] = Sha256::digest(&w.0).into();
        w.bytes(&sum);
        w.0
    }
}

// ---------------------------------------------------------------- decoding

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// End of the region being read (a record's end, or the records' end).
    end: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: impl Into<String>) -> FormatError {
        FormatError::Malformed {
            offset: self.pos,
            what: what.into(),
        }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        if self.end - self.pos < n {
            return Err(self.err(format!("{what} runs past the end of its record")));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N], FormatError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self, what: &str) -> Result<u8, FormatError> {
        Ok(self.arr::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, FormatError> {
        Ok(u16::from_be_bytes(self.arr(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        Ok(u32::from_be_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, FormatError> {
        Ok(u64::from_be_bytes(self.arr(what)?))
    }
    /// A PIN policy and a touch policy, each in the card's 1..=3.
    fn piv_policies(&mut self) -> Result<(u8, u8), FormatError> {
        let at = self.pos;
        let pin = self.u8("pin policy")?;
        let touch = self.u8("touch policy")?;
        if !(1..=3).contains(&pin) || !(1..=3).contains(&touch) {
            return Err(FormatError::Malformed {
                offset: at,
                what: format!("invalid PIV policies {pin}/{touch}"),
            });
        }
        Ok((pin, touch))
    }
    fn sealed16(&mut self, expect_ct: usize, what: &str) -> Result<Sealed, FormatError> {
        let nonce = self.arr::<NONCE_LEN>(what)?;
        let at = self.pos;
        let len = usize::from(self.u16(what)?);
        if len != expect_ct {
            return Err(FormatError::Malformed {
                offset: at,
                what: format!("{what}: ciphertext is {len} bytes, expected {expect_ct}"),
            });
        }
        let ct = self.take(len, what)?.to_vec();
        Ok(Sealed { nonce, ct })
    }
}

/// Checks the envelope (magic, length, checksum, version) of `bytes`.
/// Shared by every format version, so that damage is told apart from a
/// newer format before anything else is interpreted.
pub fn check_envelope(bytes: &[u8]) -> Result<u16, FormatError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        // An empty file, or a prefix of the magic, is a truncated vault, not a foreign file.
        if bytes.len() < MAGIC.len() && bytes[..] == MAGIC[..bytes.len()] {
            return Err(FormatError::Truncated {
                expected: (ENVELOPE_HEADER + CHECKSUM_LEN) as u64,
                actual: bytes.len() as u64,
            });
        }
        return Err(FormatError::NotAVault);
    }
    let actual = bytes.len() as u64;
    if bytes.len() < ENVELOPE_HEADER + CHECKSUM_LEN {
        return Err(FormatError::Truncated {
            expected: (ENVELOPE_HEADER + CHECKSUM_LEN) as u64,
            actual,
        });
    }
    let mut v = [0u8; 2];
    v.copy_from_slice(&bytes[8..10]);
    let version = u16::from_be_bytes(v);
    let mut l = [0u8; 8];
    l.copy_from_slice(&bytes[10..18]);
    let declared = u64::from_be_bytes(l);
    let (content, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if declared != actual {
        // Is only the length field wrong? Check the sum as if it held the
        // actual length: then this is damage to that field, not truncation.
        let mut h = Sha256::new();
        h.update(&content[..10]);
        h.update(actual.to_be_bytes());
        h.update(&content[18..]);
        if h.finalize()[..] == sum[..] {
            return Err(FormatError::Damaged);
        }
        return Err(if declared > actual {
            FormatError::Truncated {
                expected: declared,
                actual,
            }
        } else {
            FormatError::TrailingData {
                expected: declared,
                actual,
            }
        });
    }
    if Sha256::digest(content)[..] != sum[..] {
        return Err(FormatError::Damaged);
    }
    match version {
        0 => Err(FormatError::BadVersion { found: 0 }),
        VERSION => Ok(version),
        found => Err(FormatError::NewerVersion { found }),
    }
}

/// Parses a vault file. Never panics, whatever the input.
pub fn parse(bytes: &[u8]) -> Result<Parsed, FormatError> {
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(FormatError::TooLarge(bytes.len() as u64));
    }
    check_envelope(bytes)?;
    let body_end = bytes.len() - CHECKSUM_LEN;
    let min = ENVELOPE_HEADER + BODY_HEADER + MAC_LEN;
    if body_end < min {
        return Err(FormatError::Malformed {
            offset: ENVELOPE_HEADER,
            what: "the body is shorter than its header".into(),
        });
    }
    let records_end = body_end - MAC_LEN;
    let mut r = Reader {
        buf: bytes,
        pos: ENVELOPE_HEADER,
        end: records_end,
    };
    let id_at = r.pos;
    let account_id =
        AccountId::from_bytes(r.take(6, "account id")?).map_err(|_| FormatError::Malformed {
            offset: id_at,
            what: "invalid account id".into(),
        })?;
    let created = r.u64("created")?;
    let generation = r.u64("generation")?;
    let count = r.u32("record count")? as usize;
    // Every record takes at least 5 bytes: refuse absurd counts before looping.
    if count > (records_end - r.pos) / 5 {
        return Err(r.err(format!("record count {count} cannot fit in the file")));
    }
    let mut v = VaultFile {
        account_id,
        created,
        generation,
        password_wraps: Vec::new(),
        recovery_wraps: Vec::new(),
        piv_wraps: Vec::new(),
        protectors: Vec::new(),
        organizers: OrganizerRecords::default(),
        ssh_keys: Vec::new(),
        devices: Vec::new(),
        tombstones: Vec::new(),
        previous_keys: Vec::new(),
        // The count is checked against the file's length, but a hostile
        // file could still ask for gigabytes up front: start small and grow
        // as records actually parse.
        items: Vec::with_capacity(count.min(PREALLOC_ITEMS)),
    };
    let mut seen: HashSet<Vec<u8>> = HashSet::with_capacity(count.min(PREALLOC_ITEMS));
    for index in 0..count {
        let start = r.pos;
        r.end = records_end;
        let ty = r.u8("record type")?;
        let len = r.u32("record length")? as usize;
        if records_end - r.pos < len {
            return Err(FormatError::Malformed {
                offset: start,
                what: format!("record {index} (length {len}) runs past the end of the records"),
            });
        }
        r.end = r.pos + len;
        // The identity of a record, to refuse duplicates.
        let key: Vec<u8> = match ty {
            record_type::PASSWORD_WRAP => {
                let slot_len = usize::from(r.u8("slot id length")?);
                let slot_at = r.pos;
                let slot = r.take(slot_len, "slot id")?;
                let slot_id = std::str::from_utf8(slot)
                    .ok()
                    .filter(|s| {
                        !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'|')
                    })
                    .ok_or(FormatError::Malformed {
                        offset: slot_at,
                        what: "invalid password wrap slot id".into(),
                    })?
                    .to_owned();
                let salt16 = r.arr::<16>("salt")?;
                let params_at = r.pos;
                let params = KdfParams {
                    m_kib: r.u32("m")?,
                    t: r.u32("t")?,
                    p: r.u32("p")?,
                };
                params.check_load().map_err(|e| FormatError::Malformed {
                    offset: params_at,
                    what: e.to_string(),
                })?;
                let sealed = r.sealed16(32 + TAG_LEN, "password wrap")?;
                if v.password_wraps.len() == MAX_PASSWORD_WRAPS {
                    return Err(FormatError::Malformed {
                        offset: start,
                        what: format!("more than {MAX_PASSWORD_WRAPS} password wraps"),
                    });
                }
                let key = [&[ty][..], slot_id.as_bytes()].concat();
                v.password_wraps.push(PasswordWrap {
                    slot_id,
                    salt16,
                    params,
                    sealed,
                });
                key
            }
            record_type::RECOVERY_WRAP => {
                let code_id = r.arr::<8>("code id")?;
                let created = r.u64("created")?;
                let last_used = r.u64("last used")?;
                let sealed = r.sealed16(32 + TAG_LEN, "recovery wrap")?;
                v.recovery_wraps.push(RecoveryWrap {
                    code_id,
                    created,
                    last_used,
                    sealed,
                });
                [&[ty][..], &code_id].concat()
            }
            record_type::PIV_WRAP => {
                let serial = r.u32("serial")?;
                let slot = r.u8("slot")?;
                let (pin_policy, touch_policy) = r.piv_policies()?;
                let points_at = r.pos;
                let card_pk = r.arr::<33>("card public key")?;
                let epk = r.arr::<33>("ephemeral public key")?;
                if piv::compress(&card_pk).ok() != Some(card_pk)
                    || piv::compress(&epk).ok() != Some(epk)
                {
                    return Err(FormatError::Malformed {
                        offset: points_at,
                        what: "a PIV public key is not a compressed P-256 point".into(),
                    });
                }
                let added = r.u64("added")?;
                let last_used = r.u64("last used")?;
                let sealed = r.sealed16(crate::account::secret_key::LEN + TAG_LEN, "piv wrap")?;
                v.piv_wraps.push(PivWrap {
                    serial,
                    slot,
                    pin_policy,
                    touch_policy,
                    card_pk,
                    epk,
                    added,
                    last_used,
                    sealed,
                });
                let mut k = vec![ty];
                k.extend_from_slice(&serial.to_be_bytes());
                k.push(slot);
                k
            }
            record_type::PROTECTOR => {
                let kind_at = r.pos;
                let kind = ProtectorKind::from_byte(r.u8("protector kind")?).ok_or(
                    FormatError::Malformed {
                        offset: kind_at,
                        what: "unknown protector kind".into(),
                    },
                )?;
                let added = r.u64("added")?;
                let last_used = r.u64("last used")?;
                let flags_at = r.pos;
                let flags = r.u8("flags")?;
                if flags & !FLAG_STALE != 0 {
                    return Err(FormatError::Malformed {
                        offset: flags_at,
                        what: format!("unknown protector flags 0x{flags:02x}"),
                    });
                }
                // Written before devices had ids: no device.
                let device = if r.pos == r.end {
                    [0; 16]
                } else {
                    r.arr::<16>("device id")?
                };
                v.protectors.push(ProtectorRecord {
                    kind,
                    added,
                    last_used,
                    flags,
                    device,
                });
                [&[ty, kind.to_byte()][..], &device].concat()
            }
            record_type::ITEM => {
                let item_id = r.arr::<16>("item id")?;
                let nonce = r.arr::<NONCE_LEN>("item nonce")?;
                let len_at = r.pos;
                let ct_len = r.u32("item length")? as usize;
                if !(TAG_LEN..=items::MAX_NAME + items::MAX_VALUE + 22 + TAG_LEN).contains(&ct_len)
                {
                    return Err(FormatError::Malformed {
                        offset: len_at,
                        what: format!("item ciphertext of {ct_len} bytes is out of range"),
                    });
                }
                let ct = r.take(ct_len, "item")?.to_vec();
                v.items.push(ItemRecord {
                    item_id,
                    sealed: Sealed { nonce, ct },
                });
                [&[ty][..], &item_id].concat()
            }
            record_type::SSH_KEY => {
                let key_id = r.arr::<16>("ssh key id")?;
                let len_at = r.pos;
                let public_len = usize::from(r.u16("ssh public key length")?);
                if public_len == 0 || public_len > MAX_SSH_PUBLIC {
                    return Err(FormatError::Malformed {
                        offset: len_at,
                        what: format!("an SSH public key of {public_len} bytes is out of range"),
                    });
                }
                let public = r.take(public_len, "ssh public key")?.to_vec();
                let nonce = r.arr::<NONCE_LEN>("ssh key nonce")?;
                let ct_at = r.pos;
                let ct_len = r.u32("ssh key length")? as usize;
                if !(TAG_LEN..=MAX_SSH_SEALED).contains(&ct_len) {
                    return Err(FormatError::Malformed {
                        offset: ct_at,
                        what: format!("an SSH key ciphertext of {ct_len} bytes is out of range"),
                    });
                }
                let ct = r.take(ct_len, "ssh key")?.to_vec();
                v.ssh_keys.push(SshKeyRecord {
                    key_id,
                    public: public.clone(),
                    sealed: Sealed { nonce, ct },
                });
                // One record per id, and one per public key.
                if !seen.insert([&[ty, 0][..], &public].concat()) {
                    return Err(FormatError::Malformed {
                        offset: start,
                        what: format!("record {index}: the same SSH key twice"),
                    });
                }
                [&[ty][..], &key_id].concat()
            }
            record_type::ORGANIZER_KEY => {
                let key_id = r.arr::<8>("organizer key id")?;
                let created = r.u64("created")?;
                let sealed = r.sealed16(organizer::SEALED_KEY_LEN, "organizer key")?;
                // At most one: its identity is its type.
                v.organizers.key = Some(OrganizerKeyRecord {
                    key_id,
                    created,
                    sealed,
                });
                vec![ty]
            }
            record_type::ORGANIZER_CARD => {
                let serial = r.u32("serial")?;
                let slot_at = r.pos;
                let slot = r.u8("slot")?;
                if !is_piv_key_slot(slot) {
                    return Err(FormatError::Malformed {
                        offset: slot_at,
                        what: format!("slot {slot:02x} is not a PIV key slot"),
                    });
                }
                let (pin_policy, touch_policy) = r.piv_policies()?;
                let point_at = r.pos;
                let card_pk = r.arr::<33>("organizer card public key")?;
                if piv::compress(&card_pk).ok() != Some(card_pk) {
                    return Err(FormatError::Malformed {
                        offset: point_at,
                        what: "the organizer card's public key is not a compressed P-256 point"
                            .into(),
                    });
                }
                let created = r.u64("created")?;
                v.organizers.card = Some(OrganizerCardRecord {
                    serial,
                    slot,
                    pin_policy,
                    touch_policy,
                    card_pk,
                    created,
                });
                // At most one: its identity is its type.
                vec![ty]
            }
            record_type::ORGANIZER_WRAP => {
                let points_at = r.pos;
                let org_pk = r.arr::<33>("organizer public key")?;
                let epk = r.arr::<33>("ephemeral public key")?;
                if piv::compress(&org_pk).ok() != Some(org_pk)
                    || piv::compress(&epk).ok() != Some(epk)
                {
                    return Err(FormatError::Malformed {
                        offset: points_at,
                        what: "an organizer wrap's key is not a compressed P-256 point".into(),
                    });
                }
                let flags_at = r.pos;
                let flags = r.u8("flags")?;
                if flags & !FLAG_REQUIRED != 0 {
                    return Err(FormatError::Malformed {
                        offset: flags_at,
                        what: format!("unknown organizer wrap flags 0x{flags:02x}"),
                    });
                }
                let added = r.u64("added")?;
                let name_len = usize::from(r.u8("name length")?);
                let name_at = r.pos;
                let name = std::str::from_utf8(r.take(name_len, "organizer name")?)
                    .ok()
                    .filter(|n| organizer::check_name(n).is_ok())
                    .ok_or(FormatError::Malformed {
                        offset: name_at,
                        what: "invalid organizer name".into(),
                    })?
                    .to_owned();
                let sealed = r.sealed16(organizer::SEALED_KEY_LEN, "organizer wrap")?;
                v.organizers.wraps.push(OrganizerWrap {
                    org_pk,
                    epk,
                    flags,
                    added,
                    name,
                    sealed,
                });
                [&[ty][..], &org_pk].concat()
            }
            record_type::USED_GRANT => {
                let grant_id = r.arr::<16>("grant id")?;
                let used = r.u64("used")?;
                v.organizers.used_grants.push(UsedGrant { grant_id, used });
                [&[ty][..], &grant_id].concat()
            }
            record_type::DEVICE => {
                let id = r.arr::<16>("device id")?;
                let added = r.u64("added")?;
                let named = r.u64("named")?;
                let name_len = usize::from(r.u8("device name length")?);
                let name_at = r.pos;
                let name = std::str::from_utf8(r.take(name_len, "device name")?)
                    .ok()
                    .filter(|n| device_name_ok(n))
                    .ok_or(FormatError::Malformed {
                        offset: name_at,
                        what: "invalid device name".into(),
                    })?
                    .to_owned();
                v.devices.push(DeviceRecord {
                    id,
                    added,
                    named,
                    name,
                });
                [&[ty][..], &id].concat()
            }
            record_type::TOMBSTONE => {
                let kind_at = r.pos;
                let kind = TombstoneKind::from_byte(r.u8("tombstone kind")?).ok_or(
                    FormatError::Malformed {
                        offset: kind_at,
                        what: "unknown tombstone kind".into(),
                    },
                )?;
                let id = r.take(kind.id_len(), "tombstone id")?.to_vec();
                let removed = r.u64("removed")?;
                let key = [&[ty, kind.to_byte()][..], &id].concat();
                v.tombstones.push(Tombstone { kind, id, removed });
                key
            }
            record_type::PREVIOUS_KEY => {
                let key_id = r.arr::<8>("previous key id")?;
                let retired = r.u64("retired")?;
                let sealed = r.sealed16(32 + TAG_LEN, "previous key")?;
                v.previous_keys.push(PreviousKey {
                    key_id,
                    retired,
                    sealed,
                });
                [&[ty][..], &key_id].concat()
            }
            other => {
                return Err(FormatError::Malformed {
                    offset: start,
                    what: format!("unknown record type 0x{other:02x}"),
                });
            }
        };
        if r.pos != r.end {
            return Err(FormatError::Malformed {
                offset: r.pos,
                what: format!("record {index} has {} unexpected bytes", r.end - r.pos),
            });
        }
        if !seen.insert(key) {
            return Err(FormatError::Malformed {
                offset: start,
                what: format!("record {index} duplicates an earlier record"),
            });
        }
    }
    if r.pos != records_end {
        return Err(FormatError::Malformed {
            offset: r.pos,
            what: format!("{} bytes after the last record", records_end - r.pos),
        });
    }
    if v.password_wraps.is_empty() {
        return Err(FormatError::Malformed {
            offset: ENVELOPE_HEADER,
            what: "no password wrap".into(),
        });
    }
    if v.organizers.key.is_some() && v.organizers.card.is_some() {
        return Err(FormatError::Malformed {
            offset: ENVELOPE_HEADER,
            what: "two organizer keys (records 0x06 and 0x0a): a vault has at most one".into(),
        });
    }
    let mut mac = [0u8; MAC_LEN];
    mac.copy_from_slice(&bytes[records_end..body_end]);
    Ok(Parsed {
        vault: v,
        mac_input: bytes[..records_end].to_vec(),
        mac,
    })
}
