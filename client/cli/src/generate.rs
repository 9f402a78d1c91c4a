//! `keyward generate`: a random password or passphrase from the OS RNG.
//!
//! - A password (the default: 24 characters) is drawn from a clear
//!   alphabet: letters and digits without the look-alikes `0 O 1 l I`, and
//!   (unless `--no-symbols`) twelve symbols that need no quoting in most
//!   places (`! # % * + - . : = ? @ _`). Every kind of character in the
//!   alphabet appears at least once (sites that demand "a digit and a symbol"
//!   accept it): a draw without one is thrown away and drawn again, and the
//!   entropy printed counts only the passwords that can come out.
//! - A passphrase (`--words N`) is N words of the EFF large word list
//!   (7,776 words, 12.9 bits each), joined by `-`.
//!
//! Every choice is uniform: random 32-bit numbers from `getrandom` (the
//! kernel's CSPRNG) are taken only below the largest multiple of the number
//! of choices, so no choice is more likely than another (no modulo bias).
//!
//! The word list is `words/eff_large_wordlist.txt`, exactly as the
//! Electronic Frontier Foundation publishes it
//! (<https://www.eff.org/dice>, file `eff_large_wordlist.txt`, SHA-256
//! `addd3553…996b903e`), under the Creative Commons Attribution 3.0 United
//! States license (CC BY 3.0 US), as all of the EFF's site content; see
//! `words/NOTICE`.

use crate::output::{CliError, exit};
use crate::run::WithAgent;
use keyward_client::Secret;
use std::io::{IsTerminal, Write};

/// `keyward generate --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  keyward generate                              # 24 characters: letters, digits, symbols
  keyward generate --length 32 --no-symbols
  keyward generate --words 6                    # six words of the EFF large list, joined by -
  keyward generate --set github/password        # print it and store it as an item";

/// The password length without `--length`.
pub const DEFAULT_LENGTH: usize = 24;
/// Bounds of `--length`: shorter is weak, longer is no use.
pub const LENGTHS: std::ops::RangeInclusive<usize> = 8..=1024;
/// Bounds of `--words`.
pub const WORD_COUNTS: std::ops::RangeInclusive<usize> = 3..=100;
/// What joins the words of a passphrase.
pub const WORD_SEPARATOR: char = '-';

/// The kinds of characters of a password: each appears at least once.
const LOWER: &str = "abcdefghijkmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHJKLMNPQRSTUVWXYZ";
const DIGITS: &str = "23456789";
const SYMBOLS: &str = "!#%*+-.:=?@_";

/// The EFF large word list (see the module doc for its origin and license).
const EFF_LARGE: &str = include_str!("words/eff_large_wordlist.txt");
/// Words in it.
pub const EFF_WORDS: usize = 7776;

/// What to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `length` characters; `symbols`: whether symbols are in the alphabet.
    Password { length: usize, symbols: bool },
    /// `count` words.
    Passphrase { count: usize },
}

/// A uniform random number below `n` (`n > 0`), from the OS RNG.
fn uniform(n: u32) -> Result<u32, CliError> {
    // The largest multiple of n that fits in 2^32: draws at or above it
    // are thrown away (rejection sampling).
    let zone = (u64::from(u32::MAX) + 1) / u64::from(n) * u64::from(n);
    loop {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).map_err(|e| {
            CliError::msg(format!(
                "the operating system's random generator failed: {e}"
            ))
        })?;
        let x = u64::from(u32::from_le_bytes(b));
        if x < zone {
            return Ok((x % u64::from(n)) as u32);
        }
    }
}

/// The character classes of a password.
fn classes(symbols: bool) -> Vec<&'static str> {
    let mut c = vec![LOWER, UPPER, DIGITS];
    if symbols {
        c.push(SYMBOLS);
    }
    c
}

/// The words of the EFF list, in its order.
pub fn eff_words() -> impl Iterator<Item = &'static str> {
    EFF_LARGE
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(_, w)| w.trim()))
}

/// A new password or passphrase.
pub fn make(kind: Kind) -> Result<Secret, CliError> {
    match kind {
        Kind::Password { length, symbols } => {
            let classes = classes(symbols);
            let alphabet: Vec<u8> = classes.iter().flat_map(|c| c.bytes()).collect();
            loop {
                // Its final size from the start: a growing buffer would
                // leave unwiped copies behind.
                let mut buf = Vec::with_capacity(length);
                for _ in 0..length {
                    buf.push(alphabet[uniform(alphabet.len() as u32)? as usize]);
                }
                let candidate = Secret::new(buf);
                let has_all = classes
                    .iter()
                    .all(|c| candidate.expose().iter().any(|b| c.as_bytes().contains(b)));
                if has_all {
                    return Ok(candidate);
                }
            }
        }
        Kind::Passphrase { count } => {
            let words: Vec<&str> = eff_words().collect();
            let mut chosen = Vec::with_capacity(count);
            for _ in 0..count {
                chosen.push(words[uniform(words.len() as u32)? as usize]);
            }
            let len = chosen.iter().map(|w| w.len()).sum::<usize>() + count.saturating_sub(1);
            let mut buf = Vec::with_capacity(len);
            for (i, w) in chosen.iter().enumerate() {
                if i > 0 {
                    buf.push(WORD_SEPARATOR as u8);
                }
                buf.extend_from_slice(w.as_bytes());
            }
            Ok(Secret::new(buf))
        }
    }
}

/// log2 of the number of values `make(kind)` can return, each equally likely.
pub fn entropy_bits(kind: Kind) -> f64 {
    match kind {
        Kind::Password { length, symbols } => {
            let sizes: Vec<f64> = classes(symbols).iter().map(|c| c.len() as f64).collect();
            let n: f64 = sizes.iter().sum();
            // Strings of `length` over the alphabet with every class in it,
            // by inclusion-exclusion over the classes left out, as a
            // fraction of all strings (so that nothing overflows).
            let mut fraction = 0.0;
            for left_out in 0u32..(1 << sizes.len()) {
                let missing: f64 = (0..sizes.len())
                    .filter(|i| left_out & (1 << i) != 0)
                    .map(|i| sizes[i])
                    .sum();
                let sign = if left_out.count_ones() % 2 == 0 {
                    1.0
                } else {
                    -1.0
                };
                fraction += sign * ((n - missing) / n).powi(length as i32);
            }
            length as f64 * n.log2() + fraction.log2()
        }
        Kind::Passphrase { count } => count as f64 * (EFF_WORDS as f64).log2(),
    }
}

/// What `--length`/`--words`/`--no-symbols` ask for, checked.
pub fn kind(
    length: Option<usize>,
    words: Option<usize>,
    no_symbols: bool,
) -> Result<Kind, CliError> {
    if let Some(count) = words {
        if !WORD_COUNTS.contains(&count) {
            return Err(CliError::with(
                exit::INVALID,
                format!(
                    "--words {count}: choose from {} to {} words (6 give 77 bits)",
                    WORD_COUNTS.start(),
                    WORD_COUNTS.end()
                ),
            ));
        }
        return Ok(Kind::Passphrase { count });
    }
    let length = length.unwrap_or(DEFAULT_LENGTH);
    if !LENGTHS.contains(&length) {
        return Err(CliError::with(
            exit::INVALID,
            format!(
                "--length {length}: choose from {} to {} characters",
                LENGTHS.start(),
                LENGTHS.end()
            ),
        ));
    }
    Ok(Kind::Password {
        length,
        symbols: !no_symbols,
    })
}

/// The line on standard error that says how strong it is.
fn describe(kind: Kind) -> String {
    let bits = entropy_bits(kind);
    match kind {
        Kind::Password { length, symbols } => {
            let n: usize = classes(symbols).iter().map(|c| c.len()).sum();
            let kinds = if symbols {
                "letters, digits and symbols"
            } else {
                "letters and digits"
            };
            format!(
                "Entropy: {bits:.1} bits ({length} characters of {n}: {kinds}, each kind at least once)."
            )
        }
        Kind::Passphrase { count } => {
            format!("Entropy: {bits:.1} bits ({count} words of the EFF large list of {EFF_WORDS}).")
        }
    }
}

/// `keyward generate`: makes one, stores it as `set` if asked (asking
/// before replacing an item unless `force`), then prints it alone on
/// standard output (a newline after it only on a terminal, as `get`) and
/// its entropy on standard error.
pub fn generate(
    kind: Kind,
    set: Option<&str>,
    force: bool,
    agent: WithAgent<'_>,
) -> Result<(), CliError> {
    let value = make(kind)?;
    if let Some(name) = set {
        let mut exists = false;
        agent(&mut |c| {
            exists = c.list()?.iter().any(|i| i.name == name);
            Ok(())
        })?;
        if exists && !force {
            if !crate::input::have_tty() {
                return Err(CliError::with(
                    exit::INVALID,
                    format!("{name} exists already; pass --force to replace it"),
                ));
            }
            if !crate::input::confirm(&format!("{name} exists already. Replace its value?"), false)
            {
                return Err(crate::input::cancelled());
            }
        }
        agent(&mut |c| c.set(name, value.clone()))?;
    }
    let mut out = std::io::stdout().lock();
    let newline: &[u8] = if std::io::stdout().is_terminal() {
        b"\n"
    } else {
        b""
    };
    out.write_all(value.expose())
        .and_then(|()| out.write_all(newline))
        .and_then(|()| out.flush())
        .map_err(|e| CliError::msg(format!("cannot write to standard output: {e}")))?;
    eprintln!("{}", describe(kind));
    if let Some(name) = set {
        eprintln!("Stored as {name}.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_word_list_is_the_eff_large_list() {
        let words: Vec<&str> = eff_words().collect();
        assert_eq!(words.len(), EFF_WORDS);
        let unique: std::collections::BTreeSet<&str> = words.iter().copied().collect();
        assert_eq!(unique.len(), EFF_WORDS);
        assert_eq!(words[0], "abacus");
        assert_eq!(words[EFF_WORDS - 1], "zoom");
        assert!(
            words
                .iter()
                .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
        );
    }

    #[test]
    fn the_alphabet_has_no_look_alikes_and_no_repeats() {
        let all: String = classes(true).concat();
        for c in ['0', 'O', '1', 'l', 'I', ' ', '"', '\'', '\\', '$', '`'] {
            assert!(!all.contains(c), "{c:?}");
        }
        let unique: std::collections::BTreeSet<char> = all.chars().collect();
        assert_eq!(unique.len(), all.len());
        assert_eq!(all.len(), 69);
    }

    #[test]
    fn uniform_covers_every_value_and_stays_below_n() {
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[uniform(7).unwrap() as usize] += 1;
        }
        assert!(seen.iter().all(|&s| s > 700), "{seen:?}");
        for _ in 0..1000 {
            assert!(uniform(EFF_WORDS as u32).unwrap() < EFF_WORDS as u32);
        }
        assert_eq!(uniform(1).unwrap(), 0);
    }

    #[test]
    fn entropy_counts_only_the_passwords_that_can_come_out() {
        // Without the "each kind" rule: 24 * log2(69) = 146.6.
        let e = entropy_bits(Kind::Password {
            length: 24,
            symbols: true,
        });
        assert!(e < 24.0 * 69f64.log2() && e > 146.0, "{e}");
        // Small enough to count: length 3 over {a..}, {A..}, {2..} with each
        // class once = 3! * 25 * 24 * 8.
        let e = entropy_bits(Kind::Password {
            length: 3,
            symbols: false,
        });
        assert!(
            (e - (6.0f64 * 25.0 * 24.0 * 8.0).log2()).abs() < 1e-9,
            "{e}"
        );
        let e = entropy_bits(Kind::Passphrase { count: 6 });
        assert!((e - 77.5).abs() < 0.1, "{e}");
    }

    #[test]
    fn passwords_and_passphrases_have_the_shape_asked_for() {
        let p = make(Kind::Password {
            length: 24,
            symbols: false,
        })
        .unwrap();
        let s = p.expose_str().unwrap();
        assert_eq!(s.len(), 24);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()));
        let w = make(Kind::Passphrase { count: 5 }).unwrap();
        let words: Vec<&str> = eff_words().collect();
        // Split on the separator; a listed word with a hyphen is two parts.
        let text = w.expose_str().unwrap();
        assert!(text.split('-').count() >= 5);
        assert!(
            text.split('-')
                .all(|part| words.iter().any(|w| w.split('-').any(|p| p == part)))
        );
    }

    #[test]
    fn bounds_are_checked() {
        assert!(kind(Some(7), None, false).is_err());
        assert!(kind(Some(1025), None, false).is_err());
        assert!(kind(None, Some(2), false).is_err());
        assert_eq!(
            kind(None, None, false).unwrap(),
            Kind::Password {
                length: 24,
                symbols: true
            }
        );
    }
}
