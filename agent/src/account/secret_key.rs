//! The Secret Key: 128.8 bits of randomness that never leaves the user's devices.
//!
//! Layout (35 symbols from [`ALPHABET`]):
//!
//! ```text
//! K1 | account ID (6) | secret (26) | check (1)
//! ```
//!
//! Shown as `K1-AAAAAA-SSSSSS-SSSSS-SSSSS-SSSSS-SSSSSC` (groups 2, 6, 6, 5, 5, 5, 6).
//! The check symbol is a weighted sum modulo 31 (Luhn's scheme for a prime
//! modulus, see [`check_symbol`]); it catches every single-symbol substitution
//! and every transposition of two adjacent symbols before any key derivation runs.

use super::AccountId;
use crate::kdf::hkdf32;
use crate::secret::{Key32, SecretString};
use std::fmt;
use zeroize::Zeroize;

/// The 31 symbols of Secret Keys and account IDs, in code-point order.
pub const ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKLMNPQRSTVWXYZ";
/// The modulus of the check symbol: the size of the alphabet (a prime).
const N: u32 = 31;
/// The format prefix of version-1 Secret Keys.
pub const PREFIX: &[u8; 2] = b"K1";
/// Number of symbols, prefix and check included.
pub const LEN: usize = 35;
/// Number of secret symbols.
pub const SECRET_LEN: usize = 26;
/// Display groups (sizes), joined with dashes.
pub const GROUPS: [usize; 7] = [2, 6, 6, 5, 5, 5, 6];
/// HKDF info for k_s.
pub const INFO_SECRET_KEY: &[u8] = b"keyward/v1 secret-key";

/// What is wrong with a typed Secret Key. Every variant reads
/// "this Secret Key has a typo: ..." and never repeats the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretKeyError {
    /// Too few or too many symbols.
    #[error(
        "this Secret Key has a typo: it should have {LEN} letters and digits (dashes and spaces \
         don't count), but {got} were given"
    )]
    Length {
        /// How many symbols were given.
        got: usize,
    },
    /// A character that Secret Keys never contain.
    #[error(
        "this Secret Key has a typo: symbol {position} is not used in Secret Keys \
         (they never contain 0, O, 1 (except in the leading K1), I or U)"
    )]
    Symbol {
        /// 1-based position among the symbols.
        position: usize,
    },
    /// The prefix is not `K1`.
    #[error("this Secret Key has a typo: Secret Keys start with K1")]
    Prefix,
    /// The check symbol does not match.
    #[error(
        "this Secret Key has a typo: its check symbol does not match (compare it with your \
         Emergency Kit symbol by symbol)"
    )]
    Check,
}

/// A parsed, well-formed Secret Key. Zeroized on drop; no `Debug` output.
pub struct SecretKey {
    /// The 35 symbols, upper case, no separators.
    symbols: Box<[u8; LEN]>,
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.symbols.zeroize();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, [redacted])", self.account_id())
    }
}

/// The code point of a symbol for the check: its index in [`ALPHABET`], and 1
/// for the digit `1` of the prefix (which is not in the alphabet).
fn code_point(c: u8) -> Option<u32> {
    if c == b'1' {
        return Some(1);
    }
    ALPHABET.iter().position(|&a| a == c).map(|i| i as u32)
}

/// The check symbol over `payload` (the 34 symbols before it).
///
/// Walking from the rightmost symbol leftwards, weights alternate 2, 1, 2, …;
/// the sum of weight × code point is taken modulo 31 and the check symbol is
/// the one whose code point brings the sum to 0 (mod 31). Because 31 is prime,
/// every weight is invertible, so any single substitution changes the sum;
/// swapping adjacent symbols a, b changes it by ±(a − b), also never 0.
///
/// (Textbook Luhn mod N reduces 2v as ⌊2v/N⌋ + (2v mod N); for odd N that is
/// not a permutation — 1 and 16 both give 2 — so it would miss typos. Reducing
/// modulo the prime keeps every position's map a permutation.)
pub fn check_symbol(payload: &[u8]) -> Option<u8> {
    let mut sum = 0u32;
    for (i, &c) in payload.iter().rev().enumerate() {
        let weight = if i % 2 == 0 { 2 } else { 1 };
        sum = (sum + weight * code_point(c)?) % N;
    }
    let check = (N - sum) % N;
    Some(ALPHABET[check as usize])
}

/// Draws one uniformly random symbol of [`ALPHABET`] (rejection sampling).
pub(crate) fn random_symbol() -> Result<u8, getrandom::Error> {
    loop {
        let mut b = [0u8; 1];
        getrandom::fill(&mut b)?;
        // 248 = 8 × 31: bytes below it map uniformly onto the alphabet.
        if b[0] < 248 {
            let sym = ALPHABET[(b[0] % 31) as usize];
            b.zeroize();
            return Ok(sym);
        }
    }
}

impl SecretKey {
    /// A new random Secret Key for `account_id`.
    pub fn generate(account_id: &AccountId) -> Result<Self, getrandom::Error> {
        let mut symbols = Box::new([0u8; LEN]);
        symbols[..2].copy_from_slice(PREFIX);
        symbols[2..8].copy_from_slice(account_id.as_bytes());
        for s in symbols[8..8 + SECRET_LEN].iter_mut() {
            *s = random_symbol()?;
        }
        // The payload is built only from valid symbols, so a check always exists.
        symbols[LEN - 1] = check_symbol(&symbols[..LEN - 1]).unwrap_or(b'2');
        Ok(Self { symbols })
    }

    /// Builds a key from its parts; used for test vectors.
    pub fn from_parts(account_id: &AccountId, secret: &str) -> Result<Self, SecretKeyError> {
        let mut s = String::with_capacity(LEN + secret.len());
        s.push_str("K1");
        s.push_str(account_id.as_str());
        s.push_str(secret);
        s.push('2');
        let mut bytes = s.into_bytes();
        let out = (|| {
            if bytes.len() != LEN {
                return Err(SecretKeyError::Length {
                    got: bytes.len().saturating_sub(1),
                });
            }
            let check =
                check_symbol(&bytes[..LEN - 1]).ok_or(SecretKeyError::Symbol { position: 0 })?;
            bytes[LEN - 1] = check;
            let mut text = String::from_utf8_lossy(&bytes).into_owned();
            let parsed = Self::parse(&text);
            text.zeroize();
            parsed
        })();
        bytes.zeroize();
        out
    }

    /// Parses a typed Secret Key: case-insensitive; spaces, tabs and dashes
    /// (including typographic dashes pasted from a PDF) are ignored.
    pub fn parse(input: &str) -> Result<Self, SecretKeyError> {
        let mut symbols = Box::new([0u8; LEN]);
        let mut n = 0usize;
        let mut bad_position = None;
        for ch in input.chars() {
            if ch.is_whitespace() || is_dash(ch) {
                continue;
            }
            let up = ch.to_ascii_uppercase();
            n += 1;
            let valid = up.is_ascii() && {
                let b = up as u8;
                // '1' is valid only as the second symbol (the prefix).
                code_point(b).is_some() && (b != b'1' || n == 2)
            };
            if !valid && bad_position.is_none() {
                bad_position = Some(n);
            }
            if n <= LEN {
                symbols[n - 1] = if up.is_ascii() { up as u8 } else { 0 };
            }
        }
        let result = if n != LEN {
            Err(SecretKeyError::Length { got: n })
        } else if &symbols[..2] != PREFIX {
            Err(SecretKeyError::Prefix)
        } else if let Some(position) = bad_position {
            Err(SecretKeyError::Symbol { position })
        } else if check_symbol(&symbols[..LEN - 1]) != Some(symbols[LEN - 1]) {
            Err(SecretKeyError::Check)
        } else {
            return Ok(Self { symbols });
        };
        symbols.zeroize();
        result
    }

    /// The account ID embedded in the key (not secret).
    pub fn account_id(&self) -> AccountId {
        let mut id = [0u8; 6];
        id.copy_from_slice(&self.symbols[2..8]);
        AccountId::from_bytes_unchecked(id)
    }

    /// The 26 secret symbols.
    fn secret(&self) -> &[u8] {
        &self.symbols[8..8 + SECRET_LEN]
    }

    /// The 35 symbols without separators.
    pub fn expose_compact(&self) -> &[u8; LEN] {
        &self.symbols
    }

    /// The key in display groups, e.g. `K1-ABCDEF-GHJKLM-NPQRS-TVWXY-Z2345-6789AB`.
    pub fn display(&self) -> SecretString {
        let mut out = String::with_capacity(LEN + GROUPS.len());
        let mut at = 0;
        for (g, size) in GROUPS.iter().enumerate() {
            if g > 0 {
                out.push('-');
            }
            for &b in &self.symbols[at..at + size] {
                out.push(b as char);
            }
            at += size;
        }
        SecretString::new(out)
    }

    /// `k_s = HKDF-SHA256(ikm = secret, salt = account ID, info = "keyward/v1 secret-key")`.
    pub fn derive_ks(&self) -> Key32 {
        hkdf32(self.secret(), self.account_id().as_bytes(), INFO_SECRET_KEY)
    }

    /// An explicit copy.
    pub fn duplicate(&self) -> Self {
        Self {
            symbols: Box::new(*self.symbols),
        }
    }
}

fn is_dash(ch: char) -> bool {
    matches!(ch, '-' | '_' | '\u{2010}'..='\u{2015}' | '\u{2212}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SecretKey {
        let id = AccountId::parse("ABCDEF").unwrap();
        SecretKey::from_parts(&id, "GHJKLMNPQRSTVWXYZ23456789A").unwrap()
    }

    #[test]
    fn display_and_parse_round_trip() {
        let sk = sample();
        let shown = sk.display();
        assert_eq!(shown.expose().len(), LEN + 6);
        assert!(
            shown
                .expose()
                .starts_with("K1-ABCDEF-GHJKLM-NPQRS-TVWXY-Z2345-6789A")
        );
        let again = SecretKey::parse(shown.expose()).unwrap();
        assert_eq!(again.expose_compact(), sk.expose_compact());
        let lower = shown.expose().to_lowercase().replace('-', " ");
        let again = SecretKey::parse(&format!("  {lower}\t")).unwrap();
        assert_eq!(again.expose_compact(), sk.expose_compact());
        let en_dash = shown.expose().replace('-', "\u{2013}");
        assert!(SecretKey::parse(&en_dash).is_ok());
    }

    #[test]
    fn generated_keys_parse_and_carry_the_account_id() {
        let id = AccountId::generate().unwrap();
        for _ in 0..200 {
            let sk = SecretKey::generate(&id).unwrap();
            let parsed = SecretKey::parse(sk.display().expose()).unwrap();
            assert_eq!(parsed.account_id(), id);
            assert!(parsed.derive_ks().ct_eq(&sk.derive_ks()));
        }
    }

    /// Every single-symbol substitution, at every position, by every other
    /// symbol, is reported as a typo — for many random keys.
    #[test]
    fn every_single_symbol_typo_is_caught_at_every_position() {
        let id = AccountId::generate().unwrap();
        for _ in 0..40 {
            let sk = SecretKey::generate(&id).unwrap();
            let good = *sk.expose_compact();
            for pos in 0..LEN {
                for &sym in ALPHABET.iter().chain(b"10OIU") {
                    if sym == good[pos] {
                        continue;
                    }
                    let mut typo = good;
                    typo[pos] = sym;
                    let text = String::from_utf8(typo.to_vec()).unwrap();
                    let err = SecretKey::parse(&text).expect_err(&text);
                    assert!(
                        err.to_string().starts_with("this Secret Key has a typo"),
                        "{err}"
                    );
                }
            }
        }
    }

    #[test]
    fn adjacent_transpositions_are_caught() {
        let id = AccountId::generate().unwrap();
        for _ in 0..40 {
            let sk = SecretKey::generate(&id).unwrap();
            let good = *sk.expose_compact();
            for pos in 0..LEN - 1 {
                if good[pos] == good[pos + 1] {
                    continue;
                }
                let mut typo = good;
                typo.swap(pos, pos + 1);
                let text = String::from_utf8(typo.to_vec()).unwrap();
                assert!(SecretKey::parse(&text).is_err(), "{pos}");
            }
        }
    }

    #[test]
    fn missing_or_extra_symbols_are_typos() {
        let sk = sample();
        let compact = String::from_utf8(sk.expose_compact().to_vec()).unwrap();
        assert_eq!(
            SecretKey::parse(&compact[..34]).unwrap_err(),
            SecretKeyError::Length { got: 34 }
        );
        assert_eq!(
            SecretKey::parse(&format!("{compact}2")).unwrap_err(),
            SecretKeyError::Length { got: 36 }
        );
        assert_eq!(
            SecretKey::parse("").unwrap_err(),
            SecretKeyError::Length { got: 0 }
        );
        let mut bad = compact.clone().into_bytes();
        bad[10] = b'O';
        assert_eq!(
            SecretKey::parse(std::str::from_utf8(&bad).unwrap()).unwrap_err(),
            SecretKeyError::Symbol { position: 11 }
        );
        let emoji = format!("{}\u{1F600}{}", &compact[..5], &compact[6..]);
        assert_eq!(
            SecretKey::parse(&emoji).unwrap_err(),
            SecretKeyError::Symbol { position: 6 }
        );
    }

    #[test]
    fn errors_never_repeat_the_key() {
        let sk = sample();
        let mut text = String::from_utf8(sk.expose_compact().to_vec()).unwrap();
        text.replace_range(20..21, "U");
        let err = SecretKey::parse(&text).unwrap_err().to_string();
        assert!(!err.contains(&text[8..20]), "{err}");
        assert!(!format!("{sk:?}").contains("GHJKLM"));
    }

    #[test]
    fn textbook_luhn_reduction_would_miss_typos() {
        // Documents why check_symbol reduces modulo 31: with ⌊2v/31⌋ + 2v mod 31,
        // code points 1 and 16 collide.
        let textbook = |v: u32| (2 * v) / N + (2 * v) % N;
        assert_eq!(textbook(1), textbook(16));
        let reduced = |v: u32| (2 * v) % N;
        assert_ne!(reduced(1), reduced(16));
    }
}
