//! Recovery codes: the way back in for a user who lost the Secret Key or the
//! Master Password.
//!
//! A code is 32 random bytes. It is shown as `RC1-` followed by 52 Crockford
//! base32 symbols in groups of four. 52 symbols carry 260 bits: the 256 bits of
//! the code and, in the last 4 bits, a check (`SHA-256("keyward/v1 recovery-check" ‖ code)[0] >> 4`)
//! that catches 15 in 16 typos by format alone, before any key work and
//! without counting as a failed attempt.
//!
//! - `code_id  = HKDF-SHA256(code, salt = account ID, info = "keyward/v1 recovery-id", L = 8)`
//! - `wrap_key = HKDF-SHA256(code, salt = account ID, info = "keyward/v1 recovery-wrap", L = 32)`

use super::AccountId;
use crate::kdf::{hkdf_into, hkdf32};
use crate::secret::{Key32, SecretArray, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// Crockford's base32 alphabet.
pub const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Number of symbols after the prefix.
pub const SYMBOLS: usize = 52;
/// HKDF info of the code id.
pub const INFO_ID: &[u8] = b"keyward/v1 recovery-id";
/// HKDF info of the wrap key.
pub const INFO_WRAP: &[u8] = b"keyward/v1 recovery-wrap";
/// Domain separator of the format check.
pub const CHECK_DOMAIN: &[u8] = b"keyward/v1 recovery-check";
/// What a displayed code starts with.
pub const PREFIX: &str = "RC1";

/// A malformed recovery code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryCodeError {
    /// Wrong number of symbols.
    #[error(
        "this recovery code has a typo: it should have {SYMBOLS} letters and digits after RC1- \
         (dashes and spaces don't count), but {got} were given"
    )]
    Length {
        /// Symbols given (prefix excluded).
        got: usize,
    },
    /// A character outside Crockford's base32.
    #[error(
        "this recovery code has a typo: symbol {position} is not a letter or digit of a recovery code"
    )]
    Symbol {
        /// 1-based position after the prefix.
        position: usize,
    },
    /// The check bits do not match.
    #[error(
        "this recovery code has a typo: its check does not match (compare it symbol by symbol)"
    )]
    Check,
}

/// A recovery code (the 32 bytes). Zeroized on drop.
pub struct RecoveryCode(SecretArray<32>);

impl std::fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCode([redacted])")
    }
}

fn check_nibble(domain: &[u8], code: &[u8; 32]) -> u8 {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(code);
    h.finalize()[0] >> 4
}

/// Decodes one symbol, with Crockford's aliases (O → 0; I, L → 1), any case.
pub(crate) fn decode_symbol(c: char) -> Option<u8> {
    let up = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        other => other,
    };
    if !up.is_ascii() {
        return None;
    }
    CROCKFORD
        .iter()
        .position(|&a| a == up as u8)
        .map(|i| i as u8)
}

impl RecoveryCode {
    /// A new random code.
    pub fn generate() -> Result<Self, getrandom::Error> {
        Ok(Self(SecretArray::random()?))
    }

    /// From raw bytes (test vectors).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut b = *bytes;
        Self(SecretArray::from_mut(&mut b))
    }

    /// The raw 32 bytes.
    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose()
    }

    /// `RC1-XXXX-XXXX-…` (13 groups of 4).
    pub fn display(&self) -> SecretString {
        display_code(PREFIX, CHECK_DOMAIN, self.expose())
    }

    /// Parses a typed code: case-insensitive; spaces and dashes ignored;
    /// Crockford's aliases accepted; the `RC1` prefix optional.
    pub fn parse(input: &str) -> Result<Self, RecoveryCodeError> {
        parse_code(PREFIX, CHECK_DOMAIN, input).map(Self)
    }

    /// `code_id`: 8 bytes, stored in hex; names the code without revealing it.
    pub fn code_id(&self, id: &AccountId) -> [u8; 8] {
        let mut out = [0u8; 8];
        hkdf_into(self.expose(), id.as_bytes(), INFO_ID, &mut out);
        out
    }

    /// The key that wraps the account key for this code.
    pub fn wrap_key(&self, id: &AccountId) -> Key32 {
        hkdf32(self.expose(), id.as_bytes(), INFO_WRAP)
    }
}

/// `prefix` and 52 symbols in groups of four: the display of §8 for any
/// 32-byte code whose check bits come from `domain` (recovery codes; the
/// organizer grants' codes use it with their own prefix and domain).
pub(crate) fn display_code(prefix: &str, domain: &[u8], code: &[u8; 32]) -> SecretString {
    let mut bits = [0u8; 33];
    bits[..32].copy_from_slice(code);
    bits[32] = check_nibble(domain, code) << 4;
    let mut out = String::with_capacity(prefix.len() + 1 + SYMBOLS + 12);
    out.push_str(prefix);
    for i in 0..SYMBOLS {
        if i % 4 == 0 {
            out.push('-');
        }
        out.push(CROCKFORD[read5(&bits, i * 5) as usize] as char);
    }
    bits.zeroize();
    SecretString::new(out)
}

/// Whether `c` is one of the dash-like characters that typed codes may hold.
pub(crate) fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '_' | '\u{2010}'..='\u{2015}' | '\u{2212}')
}

/// Whether the symbols start with `prefix` (letters in any case, digits with
/// Crockford's aliases).
pub(crate) fn starts_with_prefix(syms: &[char], prefix: &str) -> bool {
    syms.len() >= prefix.len()
        && prefix.chars().zip(syms).all(|(p, &c)| {
            if p.is_ascii_digit() {
                decode_symbol(c) == decode_symbol(p)
            } else {
                c.eq_ignore_ascii_case(&p)
            }
        })
}

/// Parses what [`display_code`] shows: case-insensitive; spaces and dashes
/// ignored; Crockford's aliases accepted; the prefix optional.
pub(crate) fn parse_code(
    prefix: &str,
    domain: &[u8],
    input: &str,
) -> Result<SecretArray<32>, RecoveryCodeError> {
    // Sized up front: growing would free copies of the code unwiped.
    let mut syms: Vec<char> = Vec::with_capacity(input.chars().count());
    syms.extend(input.chars().filter(|&c| !is_separator(c)));
    // A bare code may itself begin with the prefix: strip only when the length says so.
    let has_prefix = starts_with_prefix(&syms, prefix) && syms.len() != SYMBOLS;
    let body: &[char] = if has_prefix {
        &syms[prefix.len()..]
    } else {
        &syms[..]
    };
    if body.len() != SYMBOLS {
        let got = body.len();
        syms.zeroize();
        return Err(RecoveryCodeError::Length { got });
    }
    let mut bits = [0u8; 33];
    let mut result = Ok(());
    for (i, &c) in body.iter().enumerate() {
        match decode_symbol(c) {
            Some(v) => write5(&mut bits, i * 5, v),
            None => {
                result = Err(RecoveryCodeError::Symbol { position: i + 1 });
                break;
            }
        }
    }
    syms.zeroize();
    let out = result.and_then(|()| {
        let mut code = SecretArray::<32>::zero();
        code.expose_mut().copy_from_slice(&bits[..32]);
        if bits[32] == check_nibble(domain, code.expose()) << 4 {
            Ok(code)
        } else {
            Err(RecoveryCodeError::Check)
        }
    });
    bits.zeroize();
    out
}

/// Reads 5 bits starting at bit `at` (big-endian bit order).
pub(crate) fn read5(bytes: &[u8], at: usize) -> u8 {
    let mut v = 0u8;
    for k in 0..5 {
        let bit = at + k;
        v = (v << 1) | ((bytes[bit / 8] >> (7 - bit % 8)) & 1);
    }
    v
}

/// Writes 5 bits of `v` at bit `at`.
pub(crate) fn write5(bytes: &mut [u8], at: usize, v: u8) {
    for k in 0..5 {
        let bit = at + k;
        if (v >> (4 - k)) & 1 == 1 {
            bytes[bit / 8] |= 1 << (7 - bit % 8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip_with_tolerance() {
        for _ in 0..100 {
            let c = RecoveryCode::generate().unwrap();
            let shown = c.display();
            let s = shown.expose();
            assert!(s.starts_with("RC1-"));
            assert_eq!(s.len(), 3 + SYMBOLS + 13);
            assert_eq!(RecoveryCode::parse(s).unwrap().expose(), c.expose());
            let body = &s[4..];
            // No prefix, lower case, spaces instead of dashes.
            let messy = body.to_lowercase().replace('-', " ");
            assert_eq!(RecoveryCode::parse(&messy).unwrap().expose(), c.expose());
            // Crockford's aliases.
            let aliased = s.replace('0', "o").replace('1', "l");
            assert_eq!(RecoveryCode::parse(&aliased).unwrap().expose(), c.expose());
        }
    }

    #[test]
    fn format_errors() {
        let c = RecoveryCode::generate().unwrap();
        let s = c.display().expose().to_owned();
        assert_eq!(
            RecoveryCode::parse(&s[..s.len() - 1]).unwrap_err(),
            RecoveryCodeError::Length { got: 51 }
        );
        let bad = format!("{}U{}", &s[..10], &s[11..]);
        assert!(matches!(
            RecoveryCode::parse(&bad),
            Err(RecoveryCodeError::Symbol { .. })
        ));
    }

    #[test]
    fn most_single_symbol_typos_are_caught_by_format() {
        let mut caught = 0usize;
        let mut total = 0usize;
        for _ in 0..20 {
            let c = RecoveryCode::generate().unwrap();
            let s: Vec<char> = c.display().expose().chars().collect();
            for pos in 4..s.len() {
                if s[pos] == '-' {
                    continue;
                }
                for &sym in CROCKFORD {
                    let sym = sym as char;
                    if sym == s[pos] {
                        continue;
                    }
                    let mut t = s.clone();
                    t[pos] = sym;
                    let text: String = t.into_iter().collect();
                    total += 1;
                    match RecoveryCode::parse(&text) {
                        Err(_) => caught += 1,
                        // A typo that passes the check is a different code.
                        Ok(other) => assert_ne!(other.expose(), c.expose()),
                    }
                }
            }
        }
        // 4 check bits: 15/16 expected; allow sampling noise.
        let rate = caught as f64 / total as f64;
        assert!(rate > 0.90, "format caught only {rate:.3} of typos");
    }

    #[test]
    fn ids_and_keys_depend_on_code_and_account() {
        let a = AccountId::parse("ABCDEF").unwrap();
        let b = AccountId::parse("ABCDEG").unwrap();
        let c1 = RecoveryCode::from_bytes(&[1; 32]);
        let c2 = RecoveryCode::from_bytes(&[2; 32]);
        assert_ne!(c1.code_id(&a), c2.code_id(&a));
        assert_ne!(c1.code_id(&a), c1.code_id(&b));
        assert!(!c1.wrap_key(&a).ct_eq(&c1.wrap_key(&b)));
        assert_ne!(&c1.code_id(&a)[..], &c1.wrap_key(&a).expose()[..8]);
    }
}
