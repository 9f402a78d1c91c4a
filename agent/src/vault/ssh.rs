//! SSH keys in the vault (SECURITY.md §17): record type 0x09.
//!
//! The record keeps the key's public blob in clear (a locked agent lists it,
//! so that `ssh` can choose a key before anything is unlocked; the vault's MAC
//! covers it) and seals the rest under the item key, purpose `ssh-key`, slot
//! id = the key id in lower-case hex. Sealed plaintext (big-endian):
//!
//! ```text
//! u8  version (1)
//! u8  location: 1 = the private key is here, 2 = a YubiKey holds it
//! u8  approval: 0 = never ask, 1 = once per process, 2 = every use
//! u64 created (Unix seconds)
//! u16 name_len    | name (UTF-8)
//! u16 comment_len | comment (UTF-8)
//! u32 secret_len  | secret: location 1: the private key as SSH agent
//!                   messages carry it (key type string, then its fields);
//!                   location 2: u32 serial | u8 slot | u8 touch policy
//! u32 constraints_len | constraints: SSH agent key constraints (§17)
//! ```

use super::format::SshKeyRecord;
use super::{ChangeError, Unlocked};
use crate::account::hex;
use crate::account::wrap::{self, Purpose};
use crate::secret::SecretBytes;
use std::path::Path;

/// The sealed part's version byte.
const VERSION: u8 = 1;
/// Longest SSH key name.
pub const MAX_NAME: usize = 256;
/// Longest comment.
pub const MAX_COMMENT: usize = 1024;

/// Where the private key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// In the sealed record.
    Vault,
    /// On a YubiKey (PIV): serial, slot, touch policy byte.
    Card {
        /// The card's serial number.
        serial: u32,
        /// PIV slot (0x9a, …).
        slot: u8,
        /// Touch policy (1 never, 2 always, 3 cached).
        touch: u8,
    },
}

/// When the agent asks the user before it signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Approval {
    /// Never (the default, as ssh-agent without `-c`).
    #[default]
    Never,
    /// The first time each process asks.
    OncePerProcess,
    /// Every signature.
    Always,
}

impl Approval {
    /// The byte in the record.
    pub fn to_byte(self) -> u8 {
        match self {
            Approval::Never => 0,
            Approval::OncePerProcess => 1,
            Approval::Always => 2,
        }
    }
    /// From the record's byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Approval::Never,
            1 => Approval::OncePerProcess,
            2 => Approval::Always,
            _ => return None,
        })
    }
    /// The word the CLI and the docs use.
    pub fn name(self) -> &'static str {
        match self {
            Approval::Never => "never",
            Approval::OncePerProcess => "once-per-process",
            Approval::Always => "always",
        }
    }
    /// From that word.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "never" => Approval::Never,
            "once-per-process" => Approval::OncePerProcess,
            "always" => Approval::Always,
            _ => return None,
        })
    }
}

/// Checks an SSH key's name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("SSH key names cannot be empty".into())
    } else if name.len() > MAX_NAME {
        Err(format!(
            "SSH key name too long: {} bytes (at most {MAX_NAME})",
            name.len()
        ))
    } else if name.chars().any(char::is_control) {
        Err("SSH key names cannot contain control characters".into())
    } else {
        Ok(())
    }
}

/// An SSH key as the sealed record holds it.
pub struct SshKeyEntry {
    /// The record's id.
    pub key_id: [u8; 16],
    /// The public key blob.
    pub public: Vec<u8>,
    /// The name in the vault.
    pub name: String,
    /// The comment `ssh-add -l` shows.
    pub comment: String,
    /// Unix seconds.
    pub created: u64,
    /// Where the private key is.
    pub location: Location,
    /// When to ask.
    pub approval: Approval,
    /// Location `Vault`: the private key (agent encoding). Empty for a card.
    pub private: SecretBytes,
    /// SSH key constraints kept with the key (destination restrictions, a
    /// security-key provider).
    pub constraints: Vec<u8>,
}

impl std::fmt::Debug for SshKeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshKeyEntry")
            .field("name", &self.name)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Why a sealed SSH key record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an SSH key record of this vault is damaged or was altered")]
pub struct BadSshRecord;

fn encode_plain(e: &SshKeyEntry) -> SecretBytes {
    let mut v = Vec::with_capacity(64 + e.name.len() + e.comment.len() + e.private.len());
    v.push(VERSION);
    match e.location {
        Location::Vault => v.push(1),
        Location::Card { .. } => v.push(2),
    }
    v.push(e.approval.to_byte());
    v.extend_from_slice(&e.created.to_be_bytes());
    v.extend_from_slice(&(e.name.len() as u16).to_be_bytes());
    v.extend_from_slice(e.name.as_bytes());
    v.extend_from_slice(&(e.comment.len() as u16).to_be_bytes());
    v.extend_from_slice(e.comment.as_bytes());
    match e.location {
        Location::Vault => {
            v.extend_from_slice(&(e.private.len() as u32).to_be_bytes());
            v.extend_from_slice(e.private.expose());
        }
        Location::Card {
            serial,
            slot,
            touch,
        } => {
            v.extend_from_slice(&6u32.to_be_bytes());
            v.extend_from_slice(&serial.to_be_bytes());
            v.push(slot);
            v.push(touch);
        }
    }
    v.extend_from_slice(&(e.constraints.len() as u32).to_be_bytes());
    v.extend_from_slice(&e.constraints);
    SecretBytes::new(v)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BadSshRecord> {
        if self.0.len() < n {
            return Err(BadSshRecord);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, BadSshRecord> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, BadSshRecord> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u32(&mut self) -> Result<u32, BadSshRecord> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, BadSshRecord> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn text(&mut self, n: usize) -> Result<String, BadSshRecord> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| BadSshRecord)
    }
}

fn decode_plain(rec: &SshKeyRecord, plain: &[u8]) -> Result<SshKeyEntry, BadSshRecord> {
    let mut c = Cursor(plain);
    if c.u8()? != VERSION {
        return Err(BadSshRecord);
    }
    let loc = c.u8()?;
    let approval = Approval::from_byte(c.u8()?).ok_or(BadSshRecord)?;
    let created = c.u64()?;
    let n = c.u16()?;
    let name = c.text(n)?;
    let n = c.u16()?;
    let comment = c.text(n)?;
    let n = c.u32()? as usize;
    let secret = c.take(n)?;
    let (location, private) = match loc {
        1 => (Location::Vault, SecretBytes::from_slice(secret)),
        2 => {
            if secret.len() != 6 {
                return Err(BadSshRecord);
            }
            let serial = u32::from_be_bytes([secret[0], secret[1], secret[2], secret[3]]);
            (
                Location::Card {
                    serial,
                    slot: secret[4],
                    touch: secret[5],
                },
                SecretBytes::new(Vec::new()),
            )
        }
        _ => return Err(BadSshRecord),
    };
    let n = c.u32()? as usize;
    let constraints = c.take(n)?.to_vec();
    if !c.0.is_empty() {
        return Err(BadSshRecord);
    }
    Ok(SshKeyEntry {
        key_id: rec.key_id,
        public: rec.public.clone(),
        name,
        comment,
        created,
        location,
        approval,
        private,
        constraints,
    })
}

impl Unlocked {
    /// Opens SSH key record `index`.
    pub fn ssh_key(&self, index: usize) -> Result<SshKeyEntry, BadSshRecord> {
        let rec = self.file.ssh_keys.get(index).ok_or(BadSshRecord)?;
        let plain = wrap::open(
            &self.keys.item_key,
            Purpose::SshKey,
            &self.file.account_id,
            &hex(&rec.key_id),
            &rec.sealed,
        )
        .map_err(|_| BadSshRecord)?;
        decode_plain(rec, plain.expose())
    }

    /// Every SSH key, opened (in record order).
    pub fn ssh_keys(&self) -> Result<Vec<SshKeyEntry>, BadSshRecord> {
        (0..self.file.ssh_keys.len())
            .map(|i| self.ssh_key(i))
            .collect()
    }

    /// The index of the SSH key with this public blob.
    pub fn ssh_key_index(&self, public: &[u8]) -> Option<usize> {
        self.file.ssh_keys.iter().position(|k| k.public == public)
    }

    /// Adds `entry`, or replaces the key with the same public blob (keeping
    /// its id), and writes the vault. A name already used by another key is
    /// refused.
    pub fn put_ssh_key(&mut self, path: &Path, mut entry: SshKeyEntry) -> Result<(), ChangeError> {
        if check_name(&entry.name).is_err() || entry.comment.len() > MAX_COMMENT {
            return Err(ChangeError::Name(crate::account::items::NameError::Control));
        }
        let existing = self.ssh_key_index(&entry.public);
        for (i, k) in self
            .ssh_keys()
            .map_err(|_| ChangeError::NotFound("SSH key", "(damaged)".into()))?
            .iter()
            .enumerate()
        {
            if k.name == entry.name && Some(i) != existing {
                return Err(ChangeError::Exists(format!(
                    "an SSH key named {:?}",
                    entry.name
                )));
            }
        }
        if let Some(i) = existing {
            entry.key_id = self.file.ssh_keys[i].key_id;
        } else {
            getrandom::fill(&mut entry.key_id)?;
        }
        let plain = encode_plain(&entry);
        let sealed = wrap::seal(
            &self.keys.item_key,
            Purpose::SshKey,
            &self.file.account_id,
            &hex(&entry.key_id),
            plain.expose(),
        )?;
        let record = SshKeyRecord {
            key_id: entry.key_id,
            public: entry.public.clone(),
            sealed,
        };
        self.change(path, |v| {
            match existing {
                Some(i) => v.file.ssh_keys[i] = record,
                None => v.file.ssh_keys.push(record),
            }
            Ok(())
        })
    }

    /// Removes the SSH key at `index` and writes the vault.
    pub fn remove_ssh_key(&mut self, path: &Path, index: usize) -> Result<(), ChangeError> {
        if index >= self.file.ssh_keys.len() {
            return Err(ChangeError::NotFound("SSH key", index.to_string()));
        }
        let now = crate::clock::Clock::unix_now(&crate::clock::SystemClock);
        self.change(path, |v| {
            let gone = v.file.ssh_keys.remove(index);
            v.tombstone(
                super::format::TombstoneKind::SshKey,
                gone.key_id.to_vec(),
                now,
            );
            Ok(())
        })
    }
}
