//! Recovery by an organizer (SECURITY.md §16): a family organizer or team
//! admin whose key can let a member back in.
//!
//! - The **organizer key** is a P-256 key pair. Kept in the organizer's own
//!   vault, its private scalar is sealed under the item key (purpose
//!   `organizer-key`, slot id `hex(key_id)`) and never leaves the agent.
//!   Generated on a YubiKey instead, it never leaves the card: the vault
//!   records where it is, the card computes the shared x-coordinate (PIV
//!   GENERAL AUTHENTICATE, after its PIN) and [`open_wrap_with_shared`] does
//!   the rest, exactly as [`OrganizerSecret::open_wrap`] does.
//! - Its **recipient** is the public key as text: `kwo1-` and 60 Crockford
//!   base32 symbols in groups of four, carrying
//!   `SEC1c(pk) (33) ‖ SHA-256("keyward/v1 organizer-recipient" ‖ SEC1c(pk))[0..4]`
//!   and 4 zero bits. A typo is caught by the check before the key is used.
//!   Its **fingerprint**, read aloud to confirm it, is
//!   `SHA-256("keyward/v1 organizer-fingerprint" ‖ SEC1c(pk))[0..8]` as four
//!   groups of four hex digits.
//! - A member **enrolls** an organizer by sealing the account key to it, as
//!   the PIV wrap does (ephemeral ECDH, HKDF with info
//!   `"keyward/v1 organizer-p256"`), with purpose `organizer` and slot id
//!   `hex(SHA-256(SEC1c(pk))[0..8])`.
//! - To let the member back in, the organizer's agent opens that wrap and
//!   seals the account key again under a fresh one-time **grant code**
//!   (32 random bytes, shown like a recovery code with the prefix `GC1`):
//!   `grant_key = HKDF(code, salt = account ID, info = "keyward/v1 grant-wrap")`,
//!   purpose `grant`, slot id `hex(grant_id) ‖ "|" ‖ decimal(expires)`.

use super::recovery::{self, RecoveryCodeError};
use super::wrap::{self, NONCE_LEN, OpenError, Purpose, Sealed, TAG_LEN};
use super::{AccountId, hex};
use crate::kdf::hkdf32;
use crate::secret::{Key32, SecretArray, SecretString};
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::{NonZeroScalar, PublicKey};
use sha2::{Digest, Sha256};

/// Length of a compressed SEC1 P-256 point.
pub const POINT_LEN: usize = 33;
/// What a recipient starts with.
pub const RECIPIENT_PREFIX: &str = "kwo1";
/// Symbols of a recipient after its prefix (37 bytes and 4 zero bits).
pub const RECIPIENT_SYMBOLS: usize = 60;
/// Bytes of a recipient's check.
pub const RECIPIENT_CHECK_LEN: usize = 4;
/// Domain of a recipient's check.
pub const RECIPIENT_CHECK: &[u8] = b"keyward/v1 organizer-recipient";
/// Domain of a fingerprint.
pub const FINGERPRINT_DOMAIN: &[u8] = b"keyward/v1 organizer-fingerprint";
/// HKDF info of the organizer wrap key.
pub const INFO_ORGANIZER: &[u8] = b"keyward/v1 organizer-p256";
/// HKDF info of a grant's key.
pub const INFO_GRANT: &[u8] = b"keyward/v1 grant-wrap";
/// What a displayed grant code starts with.
pub const GRANT_PREFIX: &str = "GC1";
/// Domain of a grant code's check bits.
pub const GRANT_CHECK: &[u8] = b"keyward/v1 grant-check";
/// Longest organizer name, in bytes.
pub const MAX_NAME: usize = 64;
/// Length of a sealed 32-byte key (key and tag).
pub const SEALED_KEY_LEN: usize = 32 + TAG_LEN;

/// A recipient that cannot be used. None of them is counted anywhere: they
/// are caught before the key is used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipientError {
    /// It does not start with `kwo1`.
    #[error("this is not an organizer recipient: it should start with kwo1-")]
    Prefix,
    /// Wrong number of symbols.
    #[error(
        "this organizer recipient has a typo: it should have {RECIPIENT_SYMBOLS} letters and digits \
         after kwo1- (dashes and spaces don't count), but {got} were given"
    )]
    Length {
        /// Symbols given after the prefix.
        got: usize,
    },
    /// A character outside Crockford's base32.
    #[error(
        "this organizer recipient has a typo: symbol {position} is not a letter or digit of a recipient"
    )]
    Symbol {
        /// 1-based position after the prefix.
        position: usize,
    },
    /// The check does not match.
    #[error(
        "this organizer recipient has a typo: its check does not match (compare it symbol by symbol \
         with what your organizer sent)"
    )]
    Check,
    /// The check matches but the bytes are not a P-256 public key.
    #[error("this organizer recipient is not a valid public key; ask your organizer for it again")]
    Point,
}

/// An organizer's public key (compressed SEC1, always a valid point).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Recipient([u8; POINT_LEN]);

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipient({})", self.fingerprint())
    }
}

fn recipient_check(pk: &[u8; POINT_LEN]) -> [u8; RECIPIENT_CHECK_LEN] {
    let mut h = Sha256::new();
    h.update(RECIPIENT_CHECK);
    h.update(pk);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

impl Recipient {
    /// From a point in any SEC1 form; refused unless it is on the curve.
    pub fn from_point(point: &[u8]) -> Result<Self, RecipientError> {
        let pk = PublicKey::from_sec1_bytes(point).map_err(|_| RecipientError::Point)?;
        let enc = pk.to_sec1_point(true);
        Ok(Self(
            enc.as_bytes()
                .try_into()
                .map_err(|_| RecipientError::Point)?,
        ))
    }

    /// The compressed point.
    pub fn as_bytes(&self) -> &[u8; POINT_LEN] {
        &self.0
    }

    /// `kwo1-XXXX-…` (15 groups of four).
    pub fn display(&self) -> String {
        let mut bits = [0u8; 38];
        bits[..POINT_LEN].copy_from_slice(&self.0);
        bits[POINT_LEN..POINT_LEN + RECIPIENT_CHECK_LEN].copy_from_slice(&recipient_check(&self.0));
        let mut out = String::with_capacity(RECIPIENT_PREFIX.len() + RECIPIENT_SYMBOLS + 15);
        out.push_str(RECIPIENT_PREFIX);
        for i in 0..RECIPIENT_SYMBOLS {
            if i % 4 == 0 {
                out.push('-');
            }
            out.push(recovery::CROCKFORD[recovery::read5(&bits, i * 5) as usize] as char);
        }
        out
    }

    /// Parses a recipient as typed or pasted: dashes, white space and case
    /// do not matter, nor Crockford's aliases (O for 0, I and L for 1);
    /// the prefix is required. The first failure is reported.
    pub fn parse(input: &str) -> Result<Self, RecipientError> {
        let syms: Vec<char> = input
            .chars()
            .filter(|&c| !recovery::is_separator(c))
            .collect();
        if !recovery::starts_with_prefix(&syms, RECIPIENT_PREFIX) {
            return Err(RecipientError::Prefix);
        }
        let body = &syms[RECIPIENT_PREFIX.len()..];
        if body.len() != RECIPIENT_SYMBOLS {
            return Err(RecipientError::Length { got: body.len() });
        }
        let mut bits = [0u8; 38];
        for (i, &c) in body.iter().enumerate() {
            let v = recovery::decode_symbol(c).ok_or(RecipientError::Symbol { position: i + 1 })?;
            recovery::write5(&mut bits, i * 5, v);
        }
        let mut pk = [0u8; POINT_LEN];
        pk.copy_from_slice(&bits[..POINT_LEN]);
        // The 4 bits after the check are zero in every recipient keyward shows.
        if bits[POINT_LEN..POINT_LEN + RECIPIENT_CHECK_LEN] != recipient_check(&pk) || bits[37] != 0
        {
            return Err(RecipientError::Check);
        }
        let r = Self::from_point(&pk)?;
        if r.0 != pk {
            return Err(RecipientError::Point);
        }
        Ok(r)
    }

    /// The fingerprint to read aloud: `xxxx-xxxx-xxxx-xxxx` (lower-case hex).
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_DOMAIN);
        h.update(self.0);
        let d = h.finalize();
        let x = hex(&d[..8]);
        format!("{}-{}-{}-{}", &x[..4], &x[4..8], &x[8..12], &x[12..16])
    }

    /// The slot id of a member's wrap for this organizer: `hex(SHA-256(pk)[0..8])`.
    pub fn slot_id(&self) -> String {
        hex(&Sha256::digest(self.0)[..8])
    }
}

/// Whether `typed` names the fingerprint `fp` (dashes, spaces and case ignored).
pub fn fingerprint_matches(fp: &str, typed: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|&c| !recovery::is_separator(c))
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let t = norm(typed);
    t.len() == 16 && t == norm(fp)
}

/// Checks an organizer name: 0..=64 bytes of UTF-8, no control character.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME {
        return Err(format!(
            "an organizer name is at most {MAX_NAME} bytes; this one is {}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("an organizer name cannot hold control characters".into());
    }
    Ok(())
}

fn scalar(bytes: &SecretArray<32>) -> Option<NonZeroScalar> {
    Option::<NonZeroScalar>::from(NonZeroScalar::from_repr((*bytes.expose()).into()))
}

/// The organizer's private key (a P-256 scalar). No `Debug` output of it,
/// zeroized on drop.
pub struct OrganizerSecret(SecretArray<32>);

impl std::fmt::Debug for OrganizerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrganizerSecret([redacted])")
    }
}

/// A key that does not work (bad scalar, or the wrap does not open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the organizer key is not valid")]
pub struct BadKey;

impl OrganizerSecret {
    /// A new key from the system's random numbers.
    pub fn generate() -> Result<Self, getrandom::Error> {
        loop {
            let s = SecretArray::<32>::random()?;
            // Zero or ≥ n: negligible; draw again.
            if scalar(&s).is_some() {
                return Ok(Self(s));
            }
        }
    }

    /// From a scalar (vectors, and the sealed record).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BadKey> {
        let s = SecretArray::<32>::from_slice(bytes).ok_or(BadKey)?;
        scalar(&s).ok_or(BadKey)?;
        Ok(Self(s))
    }

    /// Its public key.
    pub fn recipient(&self) -> Result<Recipient, BadKey> {
        let s = scalar(&self.0).ok_or(BadKey)?;
        let pk = PublicKey::from_secret_scalar(&s);
        Recipient::from_point(pk.to_sec1_point(true).as_bytes()).map_err(|_| BadKey)
    }

    /// Seals the scalar under the organizer's own item key (record 0x06).
    pub fn seal(
        &self,
        item_key: &[u8; 32],
        id: &AccountId,
        key_id: &[u8; 8],
    ) -> Result<Sealed, getrandom::Error> {
        wrap::seal(
            item_key,
            Purpose::OrganizerKey,
            id,
            &hex(key_id),
            self.0.expose(),
        )
    }

    /// Opens what [`Self::seal`] made.
    pub fn open(
        item_key: &[u8; 32],
        id: &AccountId,
        key_id: &[u8; 8],
        sealed: &Sealed,
    ) -> Result<Self, BadKey> {
        let pt = wrap::open(item_key, Purpose::OrganizerKey, id, &hex(key_id), sealed)
            .map_err(|_| BadKey)?;
        Self::from_bytes(pt.expose())
    }

    /// Opens a member's organizer wrap: ECDH with `epk`, then the wrap key,
    /// then the account key, bound to the member's account ID.
    pub fn open_wrap(
        &self,
        epk: &[u8; POINT_LEN],
        member: &AccountId,
        sealed: &Sealed,
    ) -> Result<Key32, OpenError> {
        let me = self.recipient().map_err(|_| OpenError)?;
        let s = scalar(&self.0).ok_or(OpenError)?;
        let peer = PublicKey::from_sec1_bytes(epk).map_err(|_| OpenError)?;
        let shared = p256::ecdh::diffie_hellman(s, peer.as_affine());
        let mut x = SecretArray::<32>::zero();
        x.expose_mut().copy_from_slice(shared.raw_secret_bytes());
        open_wrap_with_shared(&x, epk, &me, member, sealed)
    }
}

/// The second half of opening a member's organizer wrap, once the shared
/// x-coordinate of `e·org_pk` is known (computed by [`OrganizerSecret`], or
/// by the YubiKey that holds the organizer key): the wrap key, then the
/// account key, bound to the member's account ID and to `org`.
pub fn open_wrap_with_shared(
    shared_x: &SecretArray<32>,
    epk: &[u8; POINT_LEN],
    org: &Recipient,
    member: &AccountId,
    sealed: &Sealed,
) -> Result<Key32, OpenError> {
    let key = wrap_key(shared_x.expose(), epk, org.as_bytes());
    wrap::open_key(
        key.expose(),
        Purpose::Organizer,
        member,
        &org.slot_id(),
        sealed,
    )
}

/// `wrap_key = HKDF(ikm = shared x, salt = SEC1c(epk) ‖ SEC1c(org_pk), info = "keyward/v1 organizer-p256")`.
pub fn wrap_key(shared_x: &[u8; 32], epk: &[u8; POINT_LEN], org_pk: &[u8; POINT_LEN]) -> Key32 {
    let mut salt = [0u8; 2 * POINT_LEN];
    salt[..POINT_LEN].copy_from_slice(epk);
    salt[POINT_LEN..].copy_from_slice(org_pk);
    hkdf32(shared_x, &salt, INFO_ORGANIZER)
}

/// The member's half, with a given ephemeral scalar and nonce (vectors):
/// `(epk, shared x, wrap_key, sealed account key)`.
pub fn seal_to_organizer_with(
    ephemeral: &SecretArray<32>,
    nonce: [u8; NONCE_LEN],
    org: &Recipient,
    member: &AccountId,
    account_key: &[u8; 32],
) -> Result<([u8; POINT_LEN], SecretArray<32>, Key32, Sealed), BadKey> {
    let e = scalar(ephemeral).ok_or(BadKey)?;
    let epk: [u8; POINT_LEN] = PublicKey::from_secret_scalar(&e)
        .to_sec1_point(true)
        .as_bytes()
        .try_into()
        .map_err(|_| BadKey)?;
    let peer = PublicKey::from_sec1_bytes(org.as_bytes()).map_err(|_| BadKey)?;
    let shared = p256::ecdh::diffie_hellman(e, peer.as_affine());
    let mut x = SecretArray::<32>::zero();
    x.expose_mut().copy_from_slice(shared.raw_secret_bytes());
    let key = wrap_key(x.expose(), &epk, org.as_bytes());
    let sealed = wrap::seal_with_nonce(
        key.expose(),
        Purpose::Organizer,
        member,
        &org.slot_id(),
        account_key,
        nonce,
    );
    Ok((epk, x, key, sealed))
}

/// The member's half of enrollment: a fresh ephemeral key and nonce.
pub fn seal_to_organizer(
    org: &Recipient,
    member: &AccountId,
    account_key: &[u8; 32],
) -> Result<([u8; POINT_LEN], Sealed), getrandom::Error> {
    loop {
        let e = SecretArray::<32>::random()?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)?;
        // Only a scalar of zero or ≥ n fails (the recipient is a valid point).
        if let Ok((epk, _, _, sealed)) = seal_to_organizer_with(&e, nonce, org, member, account_key)
        {
            return Ok((epk, sealed));
        }
    }
}

// ---------------------------------------------------------------- grants

/// A grant's one-time code (32 bytes). Zeroized on drop, never in `Debug`.
pub struct GrantCode(SecretArray<32>);

impl std::fmt::Debug for GrantCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantCode([redacted])")
    }
}

/// A malformed grant code: caught before any key work, never counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantCodeError {
    /// Wrong number of symbols.
    #[error(
        "this grant code has a typo: it should have {n} letters and digits after GC1- (dashes and \
         spaces don't count), but {got} were given",
        n = recovery::SYMBOLS
    )]
    Length {
        /// Symbols given.
        got: usize,
    },
    /// A character outside the alphabet.
    #[error("this grant code has a typo: symbol {position} is not a letter or digit of a code")]
    Symbol {
        /// 1-based position after the prefix.
        position: usize,
    },
    /// The check bits do not match.
    #[error("this grant code has a typo: its check does not match (compare it symbol by symbol)")]
    Check,
}

impl GrantCode {
    /// A new random code.
    pub fn generate() -> Result<Self, getrandom::Error> {
        Ok(Self(SecretArray::random()?))
    }

    /// From raw bytes (vectors).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut b = *bytes;
        Self(SecretArray::from_mut(&mut b))
    }

    /// The raw bytes.
    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose()
    }

    /// `GC1-XXXX-…` (13 groups of four), as recovery codes are shown.
    pub fn display(&self) -> SecretString {
        recovery::display_code(GRANT_PREFIX, GRANT_CHECK, self.expose())
    }

    /// Parses a typed code (as recovery codes are parsed, prefix `GC1`).
    pub fn parse(input: &str) -> Result<Self, GrantCodeError> {
        recovery::parse_code(GRANT_PREFIX, GRANT_CHECK, input)
            .map(Self)
            .map_err(|e| match e {
                RecoveryCodeError::Length { got } => GrantCodeError::Length { got },
                RecoveryCodeError::Symbol { position } => GrantCodeError::Symbol { position },
                RecoveryCodeError::Check => GrantCodeError::Check,
            })
    }

    /// `grant_key = HKDF(code, salt = account ID, info = "keyward/v1 grant-wrap")`.
    pub fn grant_key(&self, id: &AccountId) -> Key32 {
        hkdf32(self.expose(), id.as_bytes(), INFO_GRANT)
    }
}

/// The slot id of a grant: `hex(grant_id) ‖ "|" ‖ decimal(expires)`.
pub fn grant_slot(grant_id: &[u8; 16], expires: u64) -> String {
    format!("{}|{expires}", hex(grant_id))
}

/// A recovery grant: the member's account key sealed under a one-time code,
/// bound to the account, the grant id and the expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The member's account.
    pub account_id: AccountId,
    /// Random; recorded when used, so it works once.
    pub grant_id: [u8; 16],
    /// Unix seconds after which the member's agent refuses it.
    pub expires: u64,
    /// The account key under the grant key.
    pub sealed: Sealed,
}

/// A grant file that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this is not a keyward recovery grant ({0}); ask your organizer to send the file again")]
pub struct GrantFileError(pub String);

/// What a grant file says it is.
pub const GRANT_FORMAT: &str = "keyward-grant";
/// The grant file version.
pub const GRANT_VERSION: u64 = 1;

impl Grant {
    /// Seals `account_key` for a grant, with a given nonce (vectors).
    pub fn seal_with_nonce(
        code: &GrantCode,
        account_id: AccountId,
        grant_id: [u8; 16],
        expires: u64,
        account_key: &[u8; 32],
        nonce: [u8; NONCE_LEN],
    ) -> Self {
        let key = code.grant_key(&account_id);
        let sealed = wrap::seal_with_nonce(
            key.expose(),
            Purpose::Grant,
            &account_id,
            &grant_slot(&grant_id, expires),
            account_key,
            nonce,
        );
        Self {
            account_id,
            grant_id,
            expires,
            sealed,
        }
    }

    /// A new grant: a fresh code, grant id and nonce.
    pub fn new(
        account_id: AccountId,
        expires: u64,
        account_key: &[u8; 32],
    ) -> Result<(Self, GrantCode), getrandom::Error> {
        let code = GrantCode::generate()?;
        let mut grant_id = [0u8; 16];
        getrandom::fill(&mut grant_id)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)?;
        let g = Self::seal_with_nonce(&code, account_id, grant_id, expires, account_key, nonce);
        Ok((g, code))
    }

    /// Opens the account key with a typed code. A wrong code, or any field
    /// changed since the grant was made, fails the same way.
    pub fn open(&self, code: &GrantCode) -> Result<Key32, OpenError> {
        let key = code.grant_key(&self.account_id);
        wrap::open_key(
            key.expose(),
            Purpose::Grant,
            &self.account_id,
            &grant_slot(&self.grant_id, self.expires),
            &self.sealed,
        )
    }

    /// The grant file: one JSON object, keys in this order.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"format\":\"{GRANT_FORMAT}\",\"version\":{GRANT_VERSION},\"account_id\":\"{}\",\
             \"grant_id\":\"{}\",\"expires\":{},\"nonce\":\"{}\",\"ct\":\"{}\"}}\n",
            self.account_id,
            hex(&self.grant_id),
            self.expires,
            hex(&self.sealed.nonce),
            hex(&self.sealed.ct)
        )
    }

    /// Parses a grant file strictly: exactly the seven keys, each of its
    /// type, lower-case hex of the right lengths.
    pub fn from_json(text: &str) -> Result<Self, GrantFileError> {
        let bad = |what: &str| GrantFileError(what.to_owned());
        let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad("it is not JSON"))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("it is not a JSON object"))?;
        const KEYS: [&str; 7] = [
            "format",
            "version",
            "account_id",
            "grant_id",
            "expires",
            "nonce",
            "ct",
        ];
        if obj.len() != KEYS.len() || !KEYS.iter().all(|k| obj.contains_key(*k)) {
            return Err(bad(
                "it must have exactly the keys format, version, account_id, grant_id, expires, nonce, ct",
            ));
        }
        let s = |k: &str| obj.get(k).and_then(|x| x.as_str());
        if s("format") != Some(GRANT_FORMAT) {
            return Err(bad("its format is not keyward-grant"));
        }
        if obj.get("version").and_then(serde_json::Value::as_u64) != Some(GRANT_VERSION) {
            return Err(bad("its version is not 1"));
        }
        let account_id = s("account_id")
            .and_then(|a| AccountId::parse(a).ok())
            .ok_or_else(|| bad("its account_id is not an account ID"))?;
        let grant_id =
            super::unhex::<16>(s("grant_id").unwrap_or("")).ok_or_else(|| bad("bad grant_id"))?;
        let expires = obj
            .get("expires")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad("bad expires"))?;
        let nonce =
            super::unhex::<NONCE_LEN>(s("nonce").unwrap_or("")).ok_or_else(|| bad("bad nonce"))?;
        let ct =
            super::unhex::<SEALED_KEY_LEN>(s("ct").unwrap_or("")).ok_or_else(|| bad("bad ct"))?;
        Ok(Self {
            account_id,
            grant_id,
            expires,
            sealed: Sealed {
                nonce,
                ct: ct.to_vec(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AccountId {
        AccountId::parse(s).unwrap()
    }

    #[test]
    fn recipients_round_trip_with_tolerance() {
        for _ in 0..50 {
            let k = OrganizerSecret::generate().unwrap();
            let r = k.recipient().unwrap();
            let shown = r.display();
            assert!(shown.starts_with("kwo1-"));
            assert_eq!(shown.len(), 4 + RECIPIENT_SYMBOLS + 15);
            assert_eq!(Recipient::parse(&shown).unwrap(), r);
            let messy = format!("  {}\n", shown.to_uppercase().replace('-', " "));
            assert_eq!(Recipient::parse(&messy).unwrap(), r);
            let aliased = shown.replace('0', "o");
            assert_eq!(Recipient::parse(&aliased).unwrap(), r);
            assert_eq!(r.fingerprint().len(), 19);
            assert!(fingerprint_matches(
                &r.fingerprint(),
                &r.fingerprint().to_uppercase().replace('-', "")
            ));
        }
    }

    #[test]
    fn every_single_symbol_typo_in_a_recipient_is_caught() {
        let r = OrganizerSecret::generate().unwrap().recipient().unwrap();
        let s: Vec<char> = r.display().chars().collect();
        let mut tried = 0;
        for pos in 5..s.len() {
            if s[pos] == '-' {
                continue;
            }
            for &sym in recovery::CROCKFORD {
                if sym as char == s[pos] {
                    continue;
                }
                let mut t = s.clone();
                t[pos] = sym as char;
                let text: String = t.into_iter().collect();
                tried += 1;
                // A 32-bit check: a typo that passes it is not expected here.
                assert!(Recipient::parse(&text).is_err(), "{text}");
            }
        }
        assert_eq!(tried, 60 * 31);
        assert_eq!(
            Recipient::parse("kwo1-"),
            Err(RecipientError::Length { got: 0 })
        );
        assert_eq!(Recipient::parse("RC1-0000"), Err(RecipientError::Prefix));
    }

    #[test]
    fn the_organizer_opens_what_a_member_sealed_and_nothing_else() {
        let org = OrganizerSecret::generate().unwrap();
        let other = OrganizerSecret::generate().unwrap();
        let r = org.recipient().unwrap();
        let member = id("ABCDEF");
        let ak = [7u8; 32];
        let (epk, sealed) = seal_to_organizer(&r, &member, &ak).unwrap();
        assert_eq!(org.open_wrap(&epk, &member, &sealed).unwrap().expose(), &ak);
        assert!(other.open_wrap(&epk, &member, &sealed).is_err());
        assert!(org.open_wrap(&epk, &id("ABCDEG"), &sealed).is_err());
        let mut t = sealed.clone();
        t.ct[3] ^= 1;
        assert!(org.open_wrap(&epk, &member, &t).is_err());
    }

    #[test]
    fn a_shared_secret_from_elsewhere_opens_the_same_wrap() {
        // What a card holding the organizer key computes: the x-coordinate
        // of e·org_pk, which the member's side also knows.
        let org = OrganizerSecret::generate().unwrap();
        let r = org.recipient().unwrap();
        let member = id("ABCDEF");
        let ak = [5u8; 32];
        let e = SecretArray::<32>::from_slice(&[0x11; 32]).unwrap();
        let (epk, x, _, sealed) = seal_to_organizer_with(&e, [2; 12], &r, &member, &ak).unwrap();
        let opened = open_wrap_with_shared(&x, &epk, &r, &member, &sealed).unwrap();
        assert_eq!(opened.expose(), &ak);
        assert_eq!(org.open_wrap(&epk, &member, &sealed).unwrap().expose(), &ak);
        // Another point, another member, another shared x: refused.
        let other = OrganizerSecret::generate().unwrap().recipient().unwrap();
        assert!(open_wrap_with_shared(&x, &epk, &other, &member, &sealed).is_err());
        assert!(open_wrap_with_shared(&x, &epk, &r, &id("ABCDEG"), &sealed).is_err());
        let wrong = SecretArray::<32>::from_slice(&[0x22; 32]).unwrap();
        assert!(open_wrap_with_shared(&wrong, &epk, &r, &member, &sealed).is_err());
    }

    #[test]
    fn the_organizer_key_is_sealed_under_the_item_key() {
        let org = OrganizerSecret::generate().unwrap();
        let ik = [3u8; 32];
        let me = id("ABCDEF");
        let sealed = org.seal(&ik, &me, &[1; 8]).unwrap();
        assert_eq!(sealed.ct.len(), SEALED_KEY_LEN);
        let back = OrganizerSecret::open(&ik, &me, &[1; 8], &sealed).unwrap();
        assert_eq!(back.recipient().unwrap(), org.recipient().unwrap());
        assert!(OrganizerSecret::open(&ik, &me, &[2; 8], &sealed).is_err());
        assert!(OrganizerSecret::open(&[4; 32], &me, &[1; 8], &sealed).is_err());
    }

    #[test]
    fn grants_open_with_their_code_only_and_bind_every_field() {
        let ak = [9u8; 32];
        let (g, code) = Grant::new(id("ABCDEF"), 1_000, &ak).unwrap();
        assert_eq!(g.open(&code).unwrap().expose(), &ak);
        let shown = code.display();
        assert!(shown.expose().starts_with("GC1-"));
        let typed = GrantCode::parse(&shown.expose().to_lowercase()).unwrap();
        assert_eq!(g.open(&typed).unwrap().expose(), &ak);
        // A recovery code's display is not a grant code (other check domain,
        // most of the time: 15 in 16).
        assert!(g.open(&GrantCode::generate().unwrap()).is_err());
        let json = g.to_json();
        assert_eq!(Grant::from_json(&json).unwrap(), g);
        let mut t = g.clone();
        t.expires += 1;
        assert!(t.open(&code).is_err());
        let mut t = g.clone();
        t.grant_id[0] ^= 1;
        assert!(t.open(&code).is_err());
        let mut t = g.clone();
        t.account_id = id("ABCDEG");
        assert!(t.open(&code).is_err());
        let mut t = g.clone();
        t.sealed.nonce[0] ^= 1;
        assert!(t.open(&code).is_err());
    }

    #[test]
    fn grant_files_are_parsed_strictly() {
        let (g, _) = Grant::new(id("ABCDEF"), 5, &[1; 32]).unwrap();
        let json = g.to_json();
        assert!(Grant::from_json(&json.replace("keyward-grant", "other")).is_err());
        assert!(Grant::from_json(&json.replace("\"version\":1", "\"version\":2")).is_err());
        assert!(Grant::from_json(&json.replace("}\n", ",\"x\":1}")).is_err());
        assert!(Grant::from_json(&json.to_uppercase()).is_err());
        assert!(Grant::from_json(&json.replace("\"expires\":5", "\"expires\":\"5\"")).is_err());
        assert!(Grant::from_json("[]").is_err());
        assert!(Grant::from_json("").is_err());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let mut short = v.clone();
        short["ct"] = serde_json::Value::String(hex(&g.sealed.ct[1..]));
        assert!(Grant::from_json(&short.to_string()).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("").is_ok());
        assert!(check_name("Family — Anna").is_ok());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_name("a\nb").is_err());
    }
}
