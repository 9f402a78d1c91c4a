//! The Master Password: normalisation and Argon2id.
//!
//! `k_m = Argon2id(v0x13, password = NFKD(trim(pw)), salt = argon_salt, m, t, p, L = 32)`
//! with `argon_salt = HKDF-SHA256(ikm = salt16, salt = account ID, info = "keyward/v1 argon2id-salt")`.

use super::AccountId;
use crate::kdf::hkdf32;
use crate::secret::{Key32, SecretString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use zeroize::Zeroize;

/// The Unicode version of the normalisation tables keyward uses (and of the
/// `General_Category` table that decides what is assigned). Pinned in
/// docs/SECURITY.md §1; a test fails when a dependency upgrade moves it.
pub const UNICODE_VERSION: (u8, u8, u8) = unicode_normalization::UNICODE_VERSION;

/// HKDF info for the Argon2id salt.
pub const INFO_ARGON_SALT: &[u8] = b"keyward/v1 argon2id-salt";

/// Problems with a Master Password or with Argon2id parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Nothing left after trimming.
    #[error("the Master Password is empty: choose one (a few unrelated words make a strong one)")]
    Empty,
    /// A new password holds a code point that its Unicode version has not
    /// assigned: a later version could give it a decomposition, and the
    /// same typed password would then derive another key.
    #[error(
        "the new Master Password holds a character that Unicode {}.{} has not assigned yet (an \
         unassigned code point or a noncharacter): a later Unicode could change how it is \
         read and lock you out, so choose a password without it",
        UNICODE_VERSION.0,
        UNICODE_VERSION.1
    )]
    Unassigned,
    /// Parameters too weak for a new account.
    #[error(
        "Argon2id parameters too weak for a new account: m = {m_kib} KiB, t = {t} \
         (need m >= {min_m} KiB and t >= {min_t})",
        min_m = KdfParams::MIN_NEW_M_KIB,
        min_t = KdfParams::MIN_NEW_T
    )]
    TooWeak {
        /// Memory in KiB.
        m_kib: u32,
        /// Iterations.
        t: u32,
    },
    /// Parameters that are out of range (absurd or invalid); refused before allocating.
    #[error(
        "Argon2id parameters out of range: m = {m_kib} KiB, t = {t}, p = {p} (keyward accepts \
         1 <= t <= 64, 1 <= p <= 64, 8*p KiB <= m <= 4 GiB)"
    )]
    OutOfRange {
        /// Memory in KiB.
        m_kib: u32,
        /// Iterations.
        t: u32,
        /// Lanes.
        p: u32,
    },
    /// The Argon2 implementation failed (out of memory, typically).
    #[error("key derivation failed: {0}")]
    Derivation(String),
}

/// Argon2id cost parameters, stored with each password wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations (passes).
    pub t: u32,
    /// Lanes (parallelism).
    pub p: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl KdfParams {
    /// RFC 9106's second recommended option: 64 MiB, 3 passes, 4 lanes.
    pub const DEFAULT: Self = Self {
        m_kib: 64 * 1024,
        t: 3,
        p: 4,
    };
    /// New accounts need at least 19 MiB …
    pub const MIN_NEW_M_KIB: u32 = 19 * 1024;
    /// … and at least 2 passes (OWASP's floor for Argon2id).
    pub const MIN_NEW_T: u32 = 2;
    /// Loading refuses more than 4 GiB …
    pub const MAX_M_KIB: u32 = 4 * 1024 * 1024;
    /// … more than 64 passes …
    pub const MAX_T: u32 = 64;
    /// … or more than 64 lanes.
    pub const MAX_P: u32 = 64;

    /// Checks parameters read from a vault: refuses absurd or invalid values
    /// without allocating anything.
    pub fn check_load(&self) -> Result<(), PasswordError> {
        let Self { m_kib, t, p } = *self;
        let ok = (1..=Self::MAX_T).contains(&t)
            && (1..=Self::MAX_P).contains(&p)
            && m_kib <= Self::MAX_M_KIB
            && u64::from(m_kib) >= 8 * u64::from(p);
        if ok {
            Ok(())
        } else {
            Err(PasswordError::OutOfRange { m_kib, t, p })
        }
    }

    /// Checks parameters for a new account (or a new password wrap): in range,
    /// and not weaker than the floor.
    pub fn check_new(&self) -> Result<(), PasswordError> {
        self.check_load()?;
        if self.m_kib < Self::MIN_NEW_M_KIB || self.t < Self::MIN_NEW_T {
            return Err(PasswordError::TooWeak {
                m_kib: self.m_kib,
                t: self.t,
            });
        }
        Ok(())
    }
}

/// A normalised Master Password: trimmed, NFKD, non-empty UTF-8.
pub struct Password(SecretString);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

impl Password {
    /// Normalises: trim surrounding white space (Unicode `White_Space`), then
    /// NFKD. Refuses an empty result.
    pub fn new(raw: &str) -> Result<Self, PasswordError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(PasswordError::Empty);
        }
        // Sized exactly first: a String that grows frees unwiped copies.
        let len: usize = trimmed.nfkd().map(char::len_utf8).sum();
        let mut normalized = String::with_capacity(len);
        normalized.extend(trimmed.nfkd());
        Ok(Self(SecretString::new(normalized)))
    }

    /// [`Self::new`] for a password being chosen (account creation, a
    /// password change, a recovery): also refuses code points unassigned in
    /// [`UNICODE_VERSION`]. By Unicode's stability policy the normalisation
    /// of every assigned character never changes, so a password accepted
    /// here opens the vault under every later version.
    pub fn new_chosen(raw: &str) -> Result<Self, PasswordError> {
        if raw
            .chars()
            .any(|c| c.general_category() == GeneralCategory::Unassigned)
        {
            return Err(PasswordError::Unassigned);
        }
        Self::new(raw)
    }

    /// The normalised UTF-8 bytes that Argon2id consumes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.expose().as_bytes()
    }
}

/// `argon_salt = HKDF-SHA256(ikm = salt16, salt = account ID, info = "keyward/v1 argon2id-salt", L = 32)`.
pub fn argon_salt(salt16: &[u8; 16], id: &AccountId) -> [u8; 32] {
    *hkdf32(salt16, id.as_bytes(), INFO_ARGON_SALT).expose()
}

/// `k_m = Argon2id(password, argon_salt, m, t, p, L = 32)`.
///
/// Checks the parameters with [`KdfParams::check_load`] first (nothing is
/// allocated for absurd values). Lanes run on their own short-lived threads
/// (the pool is dropped afterwards, so an idle agent keeps no worker threads),
/// and the 64 MiB working memory is zeroized and freed before returning.
pub fn derive_km(
    password: &Password,
    salt16: &[u8; 16],
    id: &AccountId,
    params: &KdfParams,
) -> Result<Key32, PasswordError> {
    params.check_load()?;
    let mut salt = argon_salt(salt16, id);
    let threads =
        (params.p as usize).min(std::thread::available_parallelism().map_or(1, |n| n.get()));
    let out = argon2id(password.as_bytes(), &salt, params, threads);
    salt.zeroize();
    out
}

/// Raw Argon2id v0x13 with a 32-byte output, on `threads` worker threads of a
/// pool that is dropped afterwards. Exposed for the benchmark against the reference C
/// implementation; everything else goes through [`derive_km`].
pub fn argon2id(
    password: &[u8],
    salt: &[u8],
    params: &KdfParams,
    threads: usize,
) -> Result<Key32, PasswordError> {
    params.check_load()?;
    let argon_params = Params::new(params.m_kib, params.t, params.p, Some(32))
        .map_err(|e| PasswordError::Derivation(e.to_string()))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
    let mut out = Key32::zero();
    let mut memory = crate::harden::ArgonMemory::new(argon.params().block_count())
        .map_err(|e| PasswordError::Derivation(format!("not enough memory for Argon2id: {e}")))?;
    let blocks = memory.blocks();
    let run = |blocks: &mut [Block], out: &mut [u8; 32]| {
        argon.hash_password_into_with_memory(password, salt, out, blocks)
    };
    // Always a pool of our own: outside `install`, the crate's parallel lanes
    // would go to rayon's global pool, whose threads never exit.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("argon2-{i}"))
        .build();
    let result = match pool {
        Ok(pool) => pool.install(|| run(blocks, out.expose_mut())),
        Err(_) => run(blocks, out.expose_mut()),
    };
    // Wiped and unmapped: the memory goes back to the system now.
    drop(memory);
    result.map_err(|e| PasswordError::Derivation(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_trims_and_decomposes() {
        assert_eq!(Password::new("  pw \n").unwrap().as_bytes(), b"pw");
        // U+00E9 (é) decomposes to e + U+0301; U+FB01 (ﬁ ligature) to "fi".
        assert_eq!(
            Password::new("caf\u{e9}").unwrap().as_bytes(),
            "cafe\u{301}".as_bytes()
        );
        assert_eq!(Password::new("\u{fb01}").unwrap().as_bytes(), b"fi");
        // Composed and decomposed input give the same password.
        assert_eq!(
            Password::new("caf\u{e9}").unwrap().as_bytes(),
            Password::new("cafe\u{301}").unwrap().as_bytes()
        );
        // Inner white space is kept.
        assert_eq!(Password::new(" a b ").unwrap().as_bytes(), b"a b");
    }

    /// Issue 19, item 8: U+0378 is unassigned; U+1CCD6 was assigned in
    /// Unicode 16 (a compatibility decomposition to "A" from 16 on, none
    /// under 15.1): a password with an unassigned character is refused when
    /// chosen, still accepted when opening (an existing vault keeps working).
    #[test]
    fn new_passwords_refuse_unassigned_code_points() {
        for pw in ["abc\u{378}def", "\u{FFFF}x", "x\u{10FFFF}", "\u{E0080}y"] {
            assert_eq!(
                Password::new_chosen(pw).unwrap_err(),
                PasswordError::Unassigned,
                "{pw:?}"
            );
            assert!(Password::new(pw).is_ok(), "{pw:?}");
        }
        let msg = PasswordError::Unassigned.to_string();
        assert!(msg.contains(&format!(
            "Unicode {}.{}",
            UNICODE_VERSION.0, UNICODE_VERSION.1
        )));
        // Assigned characters, including ones newer than Unicode 15, and
        // private-use ones (assigned, and never decomposed), are fine.
        for pw in ["caf\u{e9}", "\u{1CCD6}bc", "\u{E000}pw", "\u{1F511} key"] {
            assert!(Password::new_chosen(pw).is_ok(), "{pw:?}");
        }
        assert_eq!(Password::new_chosen("\u{1CCD6}").unwrap().as_bytes(), b"A");
    }

    /// The Unicode version named in docs/SECURITY.md §1 is the one of the
    /// tables in the dependency tree: normalisation and General_Category
    /// agree, and an upgrade that moves them fails here until the document
    /// (and so every implementation) moves with them.
    #[test]
    fn the_unicode_version_is_the_one_the_spec_names() {
        assert_eq!(
            (
                u64::from(UNICODE_VERSION.0),
                u64::from(UNICODE_VERSION.1),
                u64::from(UNICODE_VERSION.2)
            ),
            unicode_properties::UNICODE_VERSION,
            "unicode-normalization and unicode-properties use different Unicode versions"
        );
        let spec =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/SECURITY.md"))
                .unwrap();
        let (a, b, c) = UNICODE_VERSION;
        let named = format!("**Unicode {a}.{b}.{c}**");
        assert!(
            spec.contains(&named),
            "docs/SECURITY.md §1 must pin {named}, the version of the tables keyward uses"
        );
    }

    #[test]
    fn empty_passwords_are_refused() {
        for pw in ["", " ", "\t\n", "\u{a0}\u{3000}"] {
            assert_eq!(
                Password::new(pw).unwrap_err(),
                PasswordError::Empty,
                "{pw:?}"
            );
        }
    }

    #[test]
    fn parameter_policy() {
        assert!(KdfParams::DEFAULT.check_new().is_ok());
        let weak = KdfParams {
            m_kib: 19 * 1024 - 1,
            t: 3,
            p: 1,
        };
        assert!(matches!(
            weak.check_new(),
            Err(PasswordError::TooWeak { .. })
        ));
        assert!(weak.check_load().is_ok(), "old weak vaults still load");
        let one_pass = KdfParams {
            m_kib: 64 * 1024,
            t: 1,
            p: 1,
        };
        assert!(matches!(
            one_pass.check_new(),
            Err(PasswordError::TooWeak { .. })
        ));
        for absurd in [
            KdfParams {
                m_kib: u32::MAX,
                t: 3,
                p: 4,
            },
            KdfParams {
                m_kib: 4 * 1024 * 1024 + 1,
                t: 3,
                p: 4,
            },
            KdfParams {
                m_kib: 65536,
                t: 65,
                p: 4,
            },
            KdfParams {
                m_kib: 65536,
                t: 0,
                p: 4,
            },
            KdfParams {
                m_kib: 65536,
                t: 3,
                p: 0,
            },
            KdfParams {
                m_kib: 65536,
                t: 3,
                p: 65,
            },
            KdfParams {
                m_kib: 31,
                t: 3,
                p: 4,
            },
        ] {
            assert!(
                matches!(absurd.check_load(), Err(PasswordError::OutOfRange { .. })),
                "{absurd:?}"
            );
        }
    }

    #[test]
    fn absurd_parameters_fail_fast_without_allocating() {
        let id = AccountId::parse("ABCDEF").unwrap();
        let pw = Password::new("pw").unwrap();
        let start = std::time::Instant::now();
        let err = derive_km(
            &pw,
            &[0; 16],
            &id,
            &KdfParams {
                m_kib: u32::MAX,
                t: 64,
                p: 64,
            },
        );
        assert!(matches!(err, Err(PasswordError::OutOfRange { .. })));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn rfc9106_argon2id_test_vector() {
        // RFC 9106 §5.3: the crate we call must be Argon2id v1.3 as specified.
        let params = Params::new(32, 3, 4, Some(32)).unwrap();
        let argon = Argon2::new_with_secret(&[3; 8], Algorithm::Argon2id, Version::V0x13, {
            let mut b = argon2::ParamsBuilder::new();
            b.m_cost(params.m_cost())
                .t_cost(params.t_cost())
                .p_cost(params.p_cost())
                .output_len(32)
                .data(argon2::AssociatedData::new(&[4; 12]).unwrap());
            b.build().unwrap()
        })
        .unwrap();
        let mut out = [0u8; 32];
        argon
            .hash_password_into(&[1; 32], &[2; 16], &mut out)
            .unwrap();
        assert_eq!(
            hex::encode(out),
            "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
        );
    }

    #[test]
    fn derivation_depends_on_every_input() {
        let id = AccountId::parse("ABCDEF").unwrap();
        let other = AccountId::parse("ABCDEG").unwrap();
        let p = KdfParams {
            m_kib: 64,
            t: 2,
            p: 2,
        };
        let pw = Password::new("correct horse").unwrap();
        let base = derive_km(&pw, &[1; 16], &id, &p).unwrap();
        let same = derive_km(&pw, &[1; 16], &id, &p).unwrap();
        assert!(base.ct_eq(&same));
        for k in [
            derive_km(&Password::new("correct horsE").unwrap(), &[1; 16], &id, &p).unwrap(),
            derive_km(&pw, &[2; 16], &id, &p).unwrap(),
            derive_km(&pw, &[1; 16], &other, &p).unwrap(),
            derive_km(
                &pw,
                &[1; 16],
                &id,
                &KdfParams {
                    m_kib: 72,
                    t: 2,
                    p: 2,
                },
            )
            .unwrap(),
            derive_km(
                &pw,
                &[1; 16],
                &id,
                &KdfParams {
                    m_kib: 64,
                    t: 3,
                    p: 2,
                },
            )
            .unwrap(),
            derive_km(
                &pw,
                &[1; 16],
                &id,
                &KdfParams {
                    m_kib: 64,
                    t: 2,
                    p: 1,
                },
            )
            .unwrap(),
        ] {
            assert!(!base.ct_eq(&k));
        }
    }
}
