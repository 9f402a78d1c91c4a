//! Secrets on the wire: zeroized on drop, never printed by `Debug`.
//!
//! The client library carries secrets (passwords, PINs, item values) between
//! the user and the agent; it never does cryptography with them.

use std::fmt;
use zeroize::Zeroizing;

/// Secret bytes (an item value, a PIN, a password's UTF-8).
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of `bytes`; they are zeroized when dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies a byte slice.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }

    /// Takes ownership of a string.
    pub fn from_string(s: String) -> Self {
        Self::new(s.into_bytes())
    }

    /// Reads the secret.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Reads the secret as UTF-8, if it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret([redacted, {} bytes])", self.0.len())
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::from_slice(s.as_bytes())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self::from_string(s)
    }
}

impl From<Vec<u8>> for Secret {
    fn from(b: Vec<u8>) -> Self {
        Self::new(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "Secret([redacted, 7 bytes])");
        assert_eq!(s.expose_str(), Some("hunter2"));
    }
}
