//! Newtypes for secret material.
//!
//! Every secret that passes through keyward lives in one of these types:
//! they zeroize their memory when dropped, they have no `Debug`, `Display`,
//! `Clone` or `Serialize` that could print or copy them by accident, and the
//! only way to read them is an explicit `expose()`.
//!
//! These are heap boxes, so moving the newtype moves a pointer, not the
//! secret: the bytes are never copied around the stack by a move. The agent
//! keeps its long-lived keys in mlocked pages (see [`crate::harden`]); the
//! types here are for the short-lived values on the way there.

use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// A fixed-size secret, such as a 256-bit key.
pub struct SecretArray<const N: usize>(Box<[u8; N]>);

/// A 256-bit secret key.
pub type Key32 = SecretArray<32>;

impl<const N: usize> SecretArray<N> {
    /// An all-zero secret, to be filled in place (avoids a copy on the stack).
    pub fn zero() -> Self {
        Self(Box::new([0u8; N]))
    }

    /// Takes the bytes of `bytes` and zeroizes the source.
    pub fn from_mut(bytes: &mut [u8; N]) -> Self {
        let mut s = Self::zero();
        s.0.copy_from_slice(bytes);
        bytes.zeroize();
        s
    }

    /// Copies a slice of exactly `N` bytes; `None` if the length differs.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != N {
            return None;
        }
        let mut s = Self::zero();
        s.0.copy_from_slice(bytes);
        Some(s)
    }

    /// Fresh random bytes from the operating system's CSPRNG.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut s = Self::zero();
        getrandom::fill(&mut s.0[..])?;
        Ok(s)
    }

    /// Reads the secret.
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }

    /// Writes the secret in place.
    pub fn expose_mut(&mut self) -> &mut [u8; N] {
        &mut self.0
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0[..].ct_eq(&other.0[..]).into()
    }

    /// An explicit copy (secrets are not `Clone`, so copies are visible).
    pub fn duplicate(&self) -> Self {
        let mut s = Self::zero();
        s.0.copy_from_slice(&self.0[..]);
        s
    }
}

impl<const N: usize> Drop for SecretArray<N> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<const N: usize> fmt::Debug for SecretArray<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretArray<{N}>([redacted])")
    }
}

/// A variable-length secret byte string (a decrypted item value, a PIN).
#[derive(Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are zeroized when this is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }

    /// Reads the secret.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Keeps only the bytes in `range`, moved to the front (no new buffer;
    /// what was around them stays in the spare capacity until the drop
    /// wipes it with the rest).
    pub fn keep_only(&mut self, range: std::ops::Range<usize>) {
        let len = range.len();
        self.0.copy_within(range, 0);
        self.0.truncate(len);
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Into the wire's secret type without a copy: the buffer moves.
impl From<SecretBytes> for keyward_client::Secret {
    fn from(mut s: SecretBytes) -> Self {
        keyward_client::Secret::new(std::mem::take(&mut *s.0))
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([redacted, {} bytes])", self.0.len())
    }
}

/// A secret text, such as a password or a Secret Key as typed.
#[derive(Default)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Takes ownership of `s`; it is zeroized when this is dropped.
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// Copies `s`.
    pub fn copy_of(s: &str) -> Self {
        Self::new(s.to_owned())
    }

    /// Reads the secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

/// How much stack [`scrub_stack`] wipes: at least twice what the deepest
/// operation it follows was measured to use (AES-256-GCM: 3.1 KiB optimised,
/// 11 KiB unoptimised; see the `the_stack_scrub_covers_*` tests, which CI
/// runs in both builds). Every byte is a store on every `get`, so no more.
pub const SCRUB_BYTES: usize = if cfg!(debug_assertions) {
    32 * 1024
} else {
    8 * 1024
};

/// Overwrites the stack below the caller's frame with zeros.
///
/// Cryptographic code that runs in callee frames (AES key schedules, HMAC
/// states, HKDF blocks) leaves copies of keys on the stack after it returns,
/// and Rust moves values by copying. Calling this right after such an
/// operation wipes the frames it used (they lie below the current stack
/// pointer), so a key does not outlive its use in stale stack memory.
#[inline(never)]
pub fn scrub_stack() {
    let mut buf = [0u8; SCRUB_BYTES];
    // A plain memset, kept by black_box: the compiler must assume the
    // buffer is read afterwards.
    buf.fill(0);
    std::hint::black_box(&mut buf);
}

/// [`scrub_stack`] over `N` bytes: for deeper operations (an SSH signature:
/// big-number arithmetic and a deterministic nonce's HMAC states).
#[inline(never)]
pub fn scrub_stack_deep<const N: usize>() {
    let mut buf = [0u8; N];
    buf.fill(0);
    std::hint::black_box(&mut buf);
}

/// XOR of two 32-byte secrets, into a new secret.
pub fn xor32(a: &Key32, b: &Key32) -> Key32 {
    let mut out = Key32::zero();
    for ((o, x), y) in out.expose_mut().iter_mut().zip(a.expose()).zip(b.expose()) {
        *o = x ^ y;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret() {
        let k = Key32::from_slice(&[0xee; 32]).unwrap();
        let s = format!("{k:?}");
        assert!(
            !s.contains("ee") && !s.contains("238") && !s.contains("EE"),
            "{s}"
        );
        let b = SecretBytes::from_slice(b"hunter2");
        assert!(!format!("{b:?}").contains("hunter2"));
        let t = SecretString::copy_of("hunter2");
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    /// The measuring stick of the `the_stack_scrub_covers_*` tests sees a
    /// scrub reach exactly as deep as it should, and a frame that uses
    /// almost no stack as using almost none.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn stack_depth_measures_the_scrub() {
        let depth = crate::harden::stack_depth_of(scrub_stack).unwrap();
        assert!(
            (SCRUB_BYTES..SCRUB_BYTES + 512).contains(&depth),
            "scrub reached {depth} bytes, not {SCRUB_BYTES}"
        );
        let small = crate::harden::stack_depth_of(|| {
            std::hint::black_box(xor32(&Key32::zero(), &Key32::zero()));
        })
        .unwrap();
        assert!(small < 1024, "xor32 measured at {small} bytes");
    }

    #[test]
    fn from_mut_wipes_the_source() {
        let mut src = [7u8; 32];
        let k = Key32::from_mut(&mut src);
        assert_eq!(src, [0u8; 32]);
        assert_eq!(k.expose(), &[7u8; 32]);
    }

    #[test]
    fn xor_and_ct_eq() {
        let a = Key32::from_slice(&[0b1010; 32]).unwrap();
        let b = Key32::from_slice(&[0b0110; 32]).unwrap();
        let c = xor32(&a, &b);
        assert_eq!(c.expose(), &[0b1100; 32]);
        assert!(xor32(&c, &b).ct_eq(&a));
        assert!(!c.ct_eq(&a));
        assert_eq!(Key32::from_slice(&[0; 31]).map(|_| ()), None);
    }
}
