//! The account: its identity, its two secrets, and the keys derived from them.
//!
//! - [`secret_key`]: the Secret Key (format, check symbol, k_s).
//! - [`password`]: Master Password normalisation and Argon2id (k_m).
//! - [`wrap`]: AES-256-GCM wraps with purpose-bound associated data.
//! - [`recovery`]: recovery codes (format, code_id, wrap key).
//! - [`piv`]: the key that wraps the Secret Key for a YubiKey (P-256 ECDH).
//! - [`items`]: item encryption under the item key.
//! - [`organizer`]: recovery by an organizer (recipients, wraps, grants).
//!
//! `SECURITY.md` in the repository is the normative description of all of it.

pub mod items;
pub mod organizer;
pub mod password;
pub mod piv;
pub mod recovery;
pub mod secret_key;
pub mod wrap;

use crate::kdf::hkdf32;
use crate::secret::{Key32, xor32};
use std::fmt;

/// HKDF info for the item key.
pub const INFO_ITEMS: &[u8] = b"keyward/v1 items";
/// HKDF info for the vault MAC key.
pub const INFO_VAULT_MAC: &[u8] = b"keyward/v1 vault-mac";

/// An account ID: six symbols of the Secret Key alphabet. Random, not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccountId([u8; 6]);

/// A malformed account ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an account ID is 6 symbols from {alphabet}", alphabet = std::str::from_utf8(secret_key::ALPHABET).unwrap_or(""))]
pub struct BadAccountId;

impl AccountId {
    /// A new random account ID.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut id = [0u8; 6];
        for b in id.iter_mut() {
            *b = secret_key::random_symbol()?;
        }
        Ok(Self(id))
    }

    /// Parses an account ID (upper case, exactly 6 alphabet symbols).
    pub fn parse(s: &str) -> Result<Self, BadAccountId> {
        Self::from_bytes(s.as_bytes())
    }

    /// From 6 bytes, checked against the alphabet.
    pub fn from_bytes(b: &[u8]) -> Result<Self, BadAccountId> {
        let id: [u8; 6] = b.try_into().map_err(|_| BadAccountId)?;
        if id.iter().all(|c| secret_key::ALPHABET.contains(c)) {
            Ok(Self(id))
        } else {
            Err(BadAccountId)
        }
    }

    pub(crate) fn from_bytes_unchecked(id: [u8; 6]) -> Self {
        Self(id)
    }

    /// The six ASCII bytes.
    pub fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// As text.
    pub fn as_str(&self) -> &str {
        // Always ASCII by construction.
        std::str::from_utf8(&self.0).unwrap_or("??????")
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({})", self.as_str())
    }
}

/// Lower-case hex (slot ids, recovery code ids).
/// The bytes of `N * 2` lower-case hex digits, as [`hex`] writes them.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub fn hex(b: &[u8]) -> String {
    let mut out = vec![0u8; 2 * b.len()];
    hex_into(b, &mut out);
    // Only ASCII digits and letters were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Lower-case hex of `b` into `out[..2 * b.len()]`, without allocating (the
/// item associated data on every `get`).
pub fn hex_into(b: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (x, pair) in b.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(x >> 4)];
        pair[1] = HEX[usize::from(x & 15)];
    }
}

/// Two-secret key derivation: `AUK = k_m XOR k_s`.
pub fn auk(k_m: &Key32, k_s: &Key32) -> Key32 {
    xor32(k_m, k_s)
}

/// `item_key = HKDF-SHA256(ikm = account key, salt = account ID, info = "keyward/v1 items")`.
pub fn item_key(account_key: &[u8; 32], id: &AccountId) -> Key32 {
    hkdf32(account_key, id.as_bytes(), INFO_ITEMS)
}

/// `mac_key = HKDF-SHA256(ikm = account key, salt = account ID, info = "keyward/v1 vault-mac")`.
pub fn vault_mac_key(account_key: &[u8; 32], id: &AccountId) -> Key32 {
    hkdf32(account_key, id.as_bytes(), INFO_VAULT_MAC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids() {
        let id = AccountId::generate().unwrap();
        assert_eq!(AccountId::parse(id.as_str()).unwrap(), id);
        assert!(AccountId::parse("ABCDE").is_err());
        assert!(AccountId::parse("ABCDE0").is_err());
        assert!(AccountId::parse("abcdef").is_err());
        assert_eq!(format!("{}", AccountId::parse("Z2Z2Z2").unwrap()), "Z2Z2Z2");
    }

    #[test]
    fn auk_needs_both_secrets() {
        let km = Key32::from_slice(&[1; 32]).unwrap();
        let ks = Key32::from_slice(&[2; 32]).unwrap();
        let a = auk(&km, &ks);
        assert_eq!(a.expose(), &[3; 32]);
        assert!(!a.ct_eq(&km) && !a.ct_eq(&ks));
    }
}
