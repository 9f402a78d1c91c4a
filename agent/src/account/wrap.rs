//! AES-256-GCM wraps bound to their purpose.
//!
//! A wrap is `AES-256-GCM(key, nonce, plaintext, aad)` with a random 96-bit
//! nonce and `aad = "keyward/v1|" + purpose + "|" + account ID + "|" + slot id`.
//! The same construction encrypts items (purpose `item`, slot id = the item
//! id in lower-case hex), so a ciphertext cannot be moved to another purpose,
//! account or slot without failing authentication.

use super::AccountId;
use crate::secret::{Key32, SecretBytes};

/// A 256-bit key, borrowed (from a [`Key32`] or from locked memory).
pub type KeyRef<'a> = &'a [u8; 32];
use aes_gcm::aead::Aead;
use aes_gcm::aead::Payload;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};

/// Length of a nonce.
pub const NONCE_LEN: usize = 12;
/// Length of a tag.
pub const TAG_LEN: usize = 16;

/// What a wrap is for; part of its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// The account key under the AUK.
    Password,
    /// The account key under a recovery code's wrap key.
    Recovery,
    /// The Secret Key under a YubiKey-derived wrap key.
    Piv,
    /// An item under the item key.
    Item,
    /// The organizer's private key under the item key (§16).
    OrganizerKey,
    /// A member's account key sealed to an organizer's public key (§16).
    Organizer,
    /// A member's account key under a recovery grant's code (§16).
    Grant,
    /// An SSH key under the item key (§17).
    SshKey,
    /// An account key retired by `rekey`, under the item key (§18).
    PreviousKey,
}

impl Purpose {
    /// The ASCII label used in the associated data.
    pub fn label(self) -> &'static str {
        match self {
            Purpose::Password => "password",
            Purpose::Recovery => "recovery",
            Purpose::Piv => "piv",
            Purpose::Item => "item",
            Purpose::OrganizerKey => "organizer-key",
            Purpose::Organizer => "organizer",
            Purpose::Grant => "grant",
            Purpose::SshKey => "ssh-key",
            Purpose::PreviousKey => "previous-key",
        }
    }
}

/// What every associated data starts with.
pub const AAD_PREFIX: &[u8] = b"keyward/v1|";

/// The associated data of a wrap.
pub fn aad(purpose: Purpose, id: &AccountId, slot_id: &str) -> Vec<u8> {
    let label = purpose.label();
    let mut v = Vec::with_capacity(AAD_PREFIX.len() + label.len() + 1 + 6 + 1 + slot_id.len());
    v.extend_from_slice(AAD_PREFIX);
    v.extend_from_slice(label.as_bytes());
    v.push(b'|');
    v.extend_from_slice(id.as_bytes());
    v.push(b'|');
    v.extend_from_slice(slot_id.as_bytes());
    v
}

/// Authentication failed: wrong key, or the wrap was altered or moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed (wrong key, or the data was altered)")]
pub struct OpenError;

/// A sealed value: nonce and ciphertext with its tag appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext ‖ tag.
    pub ct: Vec<u8>,
}

/// Seals `plaintext` with a fresh random nonce.
pub fn seal(
    key: KeyRef<'_>,
    purpose: Purpose,
    id: &AccountId,
    slot_id: &str,
    plaintext: &[u8],
) -> Result<Sealed, getrandom::Error> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)?;
    Ok(seal_with_nonce(key, purpose, id, slot_id, plaintext, nonce))
}

/// Seals with a given nonce. Only for known-answer vectors: a nonce must never
/// repeat under one key.
pub fn seal_with_nonce(
    key: KeyRef<'_>,
    purpose: Purpose,
    id: &AccountId,
    slot_id: &str,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Sealed {
    seal_raw(key, &aad(purpose, id, slot_id), plaintext, nonce)
}

pub(crate) fn seal_raw(
    key: KeyRef<'_>,
    aad: &[u8],
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Sealed {
    let out = seal_inner(key, aad, plaintext, nonce);
    // The key schedule was built on the stack: wipe it.
    crate::secret::scrub_stack();
    out
}

#[inline(never)]
fn seal_inner(key: KeyRef<'_>, aad: &[u8], plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> Sealed {
    let cipher = Aes256Gcm::new(key.into());
    // AES-GCM only fails for inputs longer than 64 GiB, which never reach here.
    let ct = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap_or_default();
    Sealed { nonce, ct }
}

/// Opens a sealed value; the plaintext is returned in a zeroizing buffer.
pub fn open(
    key: KeyRef<'_>,
    purpose: Purpose,
    id: &AccountId,
    slot_id: &str,
    sealed: &Sealed,
) -> Result<SecretBytes, OpenError> {
    open_raw(key, &aad(purpose, id, slot_id), &sealed.nonce, &sealed.ct)
}

pub(crate) fn open_raw(
    key: KeyRef<'_>,
    aad: &[u8],
    nonce: &[u8; NONCE_LEN],
    ct: &[u8],
) -> Result<SecretBytes, OpenError> {
    if ct.len() < TAG_LEN {
        return Err(OpenError);
    }
    let out = open_inner(key, aad, nonce, ct);
    crate::secret::scrub_stack();
    out
}

#[inline(never)]
fn open_inner(
    key: KeyRef<'_>,
    aad: &[u8],
    nonce: &[u8; NONCE_LEN],
    ct: &[u8],
) -> Result<SecretBytes, OpenError> {
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(&Nonce::from(*nonce), Payload { msg: ct, aad })
        .map(SecretBytes::new)
        .map_err(|_| OpenError)
}

/// Opens a wrap whose plaintext must be a 32-byte key.
pub fn open_key(
    key: KeyRef<'_>,
    purpose: Purpose,
    id: &AccountId,
    slot_id: &str,
    sealed: &Sealed,
) -> Result<Key32, OpenError> {
    let pt = open(key, purpose, id, slot_id, sealed)?;
    Key32::from_slice(pt.expose()).ok_or(OpenError)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What AES-256-GCM leaves on the stack (key schedule, counter blocks,
    /// GHASH state) lies within what `scrub_stack` wipes, with room to spare.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_stack_scrub_covers_sealing_and_opening() {
        use crate::harden::stack_depth_of;
        use crate::secret::SCRUB_BYTES;
        let key = &[9u8; 32];
        let aad = b"keyward/v1|item|ABCDEF|00";
        let value = [0x42u8; 1024];
        let nonce = [3u8; NONCE_LEN];
        let sealed = seal_inner(key, aad, &value, nonce);
        let seal = stack_depth_of(|| {
            std::hint::black_box(seal_inner(key, aad, &value, nonce));
        })
        .expect("sealing went deeper than can be measured");
        let open = stack_depth_of(|| {
            let pt = open_inner(key, aad, &nonce, &sealed.ct);
            assert_eq!(std::hint::black_box(pt).unwrap().expose(), &value[..]);
        })
        .expect("opening went deeper than can be measured");
        eprintln!("stack used: seal {seal} bytes, open {open} bytes; scrubbed {SCRUB_BYTES}");
        // The measurement sees the work (a key schedule alone is 240 bytes).
        assert!(seal >= 240 && open >= 240, "seal {seal}, open {open}");
        assert!(
            2 * seal.max(open) <= SCRUB_BYTES,
            "seal {seal}, open {open}"
        );
    }

    #[test]
    fn aad_layout() {
        let id = AccountId::parse("ABCDEF").unwrap();
        assert_eq!(
            aad(Purpose::Password, &id, "pw-1"),
            b"keyward/v1|password|ABCDEF|pw-1"
        );
        assert_eq!(
            aad(Purpose::Piv, &id, "123-82"),
            b"keyward/v1|piv|ABCDEF|123-82"
        );
    }

    #[test]
    fn wraps_are_bound_to_key_purpose_account_and_slot() {
        let id = AccountId::parse("ABCDEF").unwrap();
        let key = &[9u8; 32];
        let s = seal(key, Purpose::Password, &id, "a", b"account key bytes").unwrap();
        assert_eq!(s.ct.len(), 17 + TAG_LEN);
        let pt = open(key, Purpose::Password, &id, "a", &s).unwrap();
        assert_eq!(pt.expose(), b"account key bytes");

        let other_key = &[8u8; 32];
        assert_eq!(
            open(other_key, Purpose::Password, &id, "a", &s).unwrap_err(),
            OpenError
        );
        assert!(open(key, Purpose::Recovery, &id, "a", &s).is_err());
        assert!(
            open(
                key,
                Purpose::Password,
                &AccountId::parse("ABCDEG").unwrap(),
                "a",
                &s
            )
            .is_err()
        );
        assert!(open(key, Purpose::Password, &id, "b", &s).is_err());
        for i in 0..s.ct.len() {
            for bit in 0..8 {
                let mut t = s.clone();
                t.ct[i] ^= 1 << bit;
                assert!(open(key, Purpose::Password, &id, "a", &t).is_err());
            }
        }
        let mut t = s.clone();
        t.nonce[0] ^= 1;
        assert!(open(key, Purpose::Password, &id, "a", &t).is_err());
        let mut t = s.clone();
        t.ct.truncate(TAG_LEN - 1);
        assert!(open(key, Purpose::Password, &id, "a", &t).is_err());
    }

    #[test]
    fn nonces_are_fresh() {
        let id = AccountId::parse("ABCDEF").unwrap();
        let key = &[9u8; 32];
        let a = seal(key, Purpose::Item, &id, "x", b"v").unwrap();
        let b = seal(key, Purpose::Item, &id, "x", b"v").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ct, b.ct);
    }
}
