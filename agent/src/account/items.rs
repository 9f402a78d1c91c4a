//! Items: a name, a value and their times, sealed together under the item key
//! (so no name is ever on disk in clear).
//!
//! Plaintext layout (big-endian):
//!
//! ```text
//! u16 name_len | name (UTF-8) | u32 value_len | value | u64 created | u64 modified
//! ```
//!
//! sealed with purpose `item` and slot id = the 16-byte item id in lower-case hex.

use super::AccountId;
use super::wrap::KeyRef;
use super::wrap::{self, OpenError, Purpose, Sealed};
use crate::secret::SecretBytes;

/// Longest item name, in bytes of UTF-8.
pub const MAX_NAME: usize = 256;
/// Largest item value, in bytes.
pub const MAX_VALUE: usize = 60 * 1024;

/// Smallest sealed item: a 1-byte name, an empty value, the times, the tag.
pub const MIN_SEALED_LEN: usize = 2 + 1 + 4 + 16 + super::wrap::TAG_LEN;
/// Largest sealed item.
pub const MAX_SEALED_LEN: usize = 2 + MAX_NAME + 4 + MAX_VALUE + 16 + super::wrap::TAG_LEN;

/// A random 16-byte item id (not secret; stable across updates of an item).
pub type ItemId = [u8; 16];

/// A decrypted item.
pub struct Item {
    /// The name.
    pub name: String,
    /// The value.
    pub value: SecretBytes,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Last modification time, Unix seconds.
    pub modified: u64,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Item")
            .field("name", &self.name)
            .field("value", &self.value)
            .finish_non_exhaustive()
    }
}

/// A name that keyward refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty.
    #[error("item names cannot be empty")]
    Empty,
    /// Too long.
    #[error("item name too long: {0} bytes (at most {MAX_NAME})")]
    TooLong(usize),
    /// Contains a control character.
    #[error("item names cannot contain control characters (such as newlines or tabs)")]
    Control,
}

/// Checks an item name.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        Err(NameError::Empty)
    } else if name.len() > MAX_NAME {
        Err(NameError::TooLong(name.len()))
    } else if name.chars().any(char::is_control) {
        Err(NameError::Control)
    } else {
        Ok(())
    }
}

/// Hex slot id of an item.
pub fn slot_id(item_id: &ItemId) -> String {
    super::hex(item_id)
}

/// Encodes the plaintext of an item.
pub fn encode(name: &str, value: &[u8], created: u64, modified: u64) -> SecretBytes {
    let mut out = Vec::with_capacity(2 + name.len() + 4 + value.len() + 16);
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(&created.to_be_bytes());
    out.extend_from_slice(&modified.to_be_bytes());
    SecretBytes::new(out)
}

/// An item's plaintext, parsed in place: the name, where the value lies,
/// and the times. Strict: no trailing bytes, a valid name.
struct Parsed<'a> {
    name: &'a str,
    value: std::ops::Range<usize>,
    created: u64,
    modified: u64,
}

fn parse(pt: &[u8]) -> Option<Parsed<'_>> {
    let mut r = pt;
    let name_len = usize::from(u16::from_be_bytes(take(&mut r, 2)?.try_into().ok()?));
    let name = std::str::from_utf8(take(&mut r, name_len)?).ok()?;
    let value_len = u32::from_be_bytes(take(&mut r, 4)?.try_into().ok()?) as usize;
    let start = pt.len() - r.len();
    take(&mut r, value_len)?;
    let created = u64::from_be_bytes(take(&mut r, 8)?.try_into().ok()?);
    let modified = u64::from_be_bytes(take(&mut r, 8)?.try_into().ok()?);
    if !r.is_empty() || check_name(name).is_err() {
        return None;
    }
    Some(Parsed {
        name,
        value: start..start + value_len,
        created,
        modified,
    })
}

/// Decodes the plaintext of an item (strictly: no trailing bytes).
pub fn decode(pt: &[u8]) -> Option<Item> {
    let p = parse(pt)?;
    Some(Item {
        name: p.name.to_owned(),
        value: SecretBytes::from_slice(&pt[p.value]),
        created: p.created,
        modified: p.modified,
    })
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if r.len() < n {
        return None;
    }
    let (a, b) = r.split_at(n);
    *r = b;
    Some(a)
}

/// Seals an item.
pub fn seal(
    item_key: KeyRef<'_>,
    id: &AccountId,
    item_id: &ItemId,
    item: &Item,
) -> Result<Sealed, getrandom::Error> {
    let pt = encode(&item.name, item.value.expose(), item.created, item.modified);
    wrap::seal(item_key, Purpose::Item, id, &slot_id(item_id), pt.expose())
}

/// Opens an item.
pub fn open(
    item_key: KeyRef<'_>,
    id: &AccountId,
    item_id: &ItemId,
    sealed: &Sealed,
) -> Result<Item, OpenError> {
    let pt = wrap::open(item_key, Purpose::Item, id, &slot_id(item_id), sealed)?;
    decode(pt.expose()).ok_or(OpenError)
}

/// What an item's associated data starts with.
const AAD_HEAD: &[u8] = b"keyward/v1|item|";

/// Length of an item's associated data: head, account id, `|`, hex item id.
const AAD_LEN: usize = AAD_HEAD.len() + 6 + 1 + 32;

/// `wrap::aad(Purpose::Item, id, &slot_id(item_id))`, built on the stack:
/// this runs on every `get` (the tests check the two agree).
fn aad(id: &AccountId, item_id: &ItemId) -> [u8; AAD_LEN] {
    let mut out = [0u8; AAD_LEN];
    let (head, rest) = out.split_at_mut(AAD_HEAD.len());
    head.copy_from_slice(AAD_HEAD);
    rest[..6].copy_from_slice(id.as_bytes());
    rest[6] = b'|';
    super::hex_into(item_id, &mut rest[7..]);
    out
}

/// Opens an item and keeps only its value (what `get` needs): one buffer,
/// the plaintext's own, with the value moved to its front.
pub fn open_value(
    item_key: KeyRef<'_>,
    id: &AccountId,
    item_id: &ItemId,
    sealed: &Sealed,
) -> Result<SecretBytes, OpenError> {
    let mut pt = wrap::open_raw(item_key, &aad(id, item_id), &sealed.nonce, &sealed.ct)?;
    let value = parse(pt.expose()).ok_or(OpenError)?.value;
    pt.keep_only(value);
    Ok(pt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_strictness() {
        let pt = encode("github/token", b"ghp_x", 10, 20);
        let item = decode(pt.expose()).unwrap();
        assert_eq!(item.name, "github/token");
        assert_eq!(item.value.expose(), b"ghp_x");
        assert_eq!((item.created, item.modified), (10, 20));
        let mut longer = pt.expose().to_vec();
        longer.push(0);
        assert!(decode(&longer).is_none());
        for n in 0..pt.len() {
            assert!(decode(&pt.expose()[..n]).is_none());
        }
    }

    #[test]
    fn the_stack_built_aad_is_the_aad() {
        let id = AccountId::parse("ABCDEF").unwrap();
        for item_id in [[0u8; 16], [0xff; 16], *b"0123456789abcdef"] {
            assert_eq!(
                aad(&id, &item_id).as_slice(),
                wrap::aad(Purpose::Item, &id, &slot_id(&item_id)).as_slice()
            );
        }
    }

    #[test]
    fn open_value_is_the_value_of_open() {
        let id = AccountId::parse("ABCDEF").unwrap();
        let key = &[5u8; 32];
        let item_id = [7u8; 16];
        for value in [
            &b""[..],
            b"v",
            b"a longer value \x00 with bytes",
            &[0xa5; 3000],
        ] {
            let item = Item {
                name: "some/name".into(),
                value: SecretBytes::from_slice(value),
                created: 1,
                modified: 2,
            };
            let sealed = seal(key, &id, &item_id, &item).unwrap();
            assert_eq!(
                open_value(key, &id, &item_id, &sealed).unwrap().expose(),
                value
            );
            assert_eq!(
                open(key, &id, &item_id, &sealed).unwrap().value.expose(),
                value
            );
            // Bound to the id like `open`.
            assert!(open_value(key, &id, &[8u8; 16], &sealed).is_err());
        }
    }

    #[test]
    fn names() {
        assert!(check_name("a").is_ok());
        assert!(check_name("ünïcode/ok ☃").is_ok());
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name("a\nb"), Err(NameError::Control));
        assert_eq!(check_name(&"x".repeat(257)), Err(NameError::TooLong(257)));
    }

    #[test]
    fn items_are_bound_to_their_id() {
        let id = AccountId::parse("ABCDEF").unwrap();
        let key = &[5u8; 32];
        let item = Item {
            name: "n".into(),
            value: SecretBytes::from_slice(b"v"),
            created: 1,
            modified: 2,
        };
        let sealed = seal(key, &id, &[1; 16], &item).unwrap();
        assert_eq!(open(key, &id, &[1; 16], &sealed).unwrap().name, "n");
        assert!(open(key, &id, &[2; 16], &sealed).is_err());
        assert_eq!(slot_id(&[0xab; 16]), "ab".repeat(16));
    }
}
