//! OpenSSH certificates (`PROTOCOL.certkeys`), read here rather than with
//! `ssh-key` 0.6, which refuses the "forever" validity (`valid before` =
//! 2^64-1) that `ssh-keygen -s` writes by default.
//!
//! ```text
//! string type ("…-cert-v01@openssh.com") | string nonce | the key's fields |
//! u64 serial | u32 type (1 user, 2 host) | string key id |
//! string principals | u64 valid after | u64 valid before |
//! string critical options | string extensions | string reserved |
//! string signature key | string signature
//! ```

use super::wire::{Malformed, Reader};
use ssh_encoding::Decode as _;
use ssh_key::public::KeyData;

/// The certificate type names' suffix.
pub const SUFFIX: &str = "-cert-v01@openssh.com";

/// A host certificate (`u32 type` = 2).
pub const HOST: u32 = 2;

/// A parsed certificate.
#[derive(Debug, Clone)]
pub struct Cert {
    /// The certified key as a plain key blob.
    pub plain: Vec<u8>,
    /// The certified key.
    pub key: KeyData,
    /// 1 user, 2 host.
    pub cert_type: u32,
    /// Valid principals.
    pub principals: Vec<String>,
    /// Unix seconds.
    pub valid_after: u64,
    /// Unix seconds (2^64-1: forever).
    pub valid_before: u64,
    /// The CA's key blob.
    pub signature_key: Vec<u8>,
    /// The CA's signature blob.
    pub signature: Vec<u8>,
    /// The bytes the signature covers.
    signed_len: usize,
}

/// How many fields each certified key type has.
fn field_count(plain_type: &str) -> Option<usize> {
    Some(match plain_type {
        "ssh-ed25519" => 1,
        "sk-ssh-ed25519@openssh.com" => 2,
        "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521" => 2,
        "sk-ecdsa-sha2-nistp256@openssh.com" => 3,
        "ssh-rsa" => 2,
        "ssh-dss" => 4,
        _ => return None,
    })
}

fn put(v: &mut Vec<u8>, s: &[u8]) {
    v.extend_from_slice(&(s.len() as u32).to_be_bytes());
    v.extend_from_slice(s);
}

/// Whether a key blob is a certificate.
pub fn is_cert(blob: &[u8]) -> bool {
    Reader(blob)
        .string()
        .is_ok_and(|t| t.ends_with(SUFFIX.as_bytes()))
}

/// Parses a certificate blob (the signature is not checked: [`Cert::signed_by_ca`]).
pub fn parse(blob: &[u8]) -> Result<Cert, Malformed> {
    let mut r = Reader(blob);
    let ty = r.text()?;
    let plain_type = ty.strip_suffix(SUFFIX).ok_or(Malformed)?;
    let n = field_count(plain_type).ok_or(Malformed)?;
    r.string()?; // nonce
    let mut plain = Vec::new();
    put(&mut plain, plain_type.as_bytes());
    for _ in 0..n {
        put(&mut plain, r.string()?);
    }
    let key = KeyData::decode(&mut &plain[..]).map_err(|_| Malformed)?;
    let _serial = r.take(8)?;
    let cert_type = r.u32()?;
    r.string()?; // key id
    let mut pr = Reader(r.string()?);
    let mut principals = Vec::new();
    while !pr.is_empty() {
        principals.push(pr.text()?.to_owned());
    }
    let u64 = |r: &mut Reader<'_>| -> Result<u64, Malformed> {
        let b = r.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    };
    let valid_after = u64(&mut r)?;
    let valid_before = u64(&mut r)?;
    r.string()?; // critical options
    r.string()?; // extensions
    r.string()?; // reserved
    let signature_key = r.string()?.to_vec();
    let signed_len = blob.len() - r.rest().len();
    let signature = r.string()?.to_vec();
    if !r.is_empty() {
        return Err(Malformed);
    }
    Ok(Cert {
        plain,
        key,
        cert_type,
        principals,
        valid_after,
        valid_before,
        signature_key,
        signature,
        signed_len,
    })
}

impl Cert {
    /// Whether the CA's signature over `blob` (this certificate's own
    /// bytes) verifies with the signature key it names.
    pub fn signed_by_ca(&self, blob: &[u8]) -> bool {
        let Ok(ca) = KeyData::decode(&mut &self.signature_key[..]) else {
            return false;
        };
        let Ok(sig) = ssh_key::Signature::decode(&mut &self.signature[..]) else {
            return false;
        };
        let Some(signed) = blob.get(..self.signed_len) else {
            return false;
        };
        signature::Verifier::verify(&ca, signed, &sig).is_ok()
    }

    /// Whether `now` (Unix seconds) is inside the validity period.
    pub fn valid_at(&self, now: u64) -> bool {
        self.valid_after <= now && now < self.valid_before
    }

    /// The CA signature's algorithm name.
    pub fn signature_algorithm(&self) -> String {
        Reader(&self.signature)
            .text()
            .map(str::to_owned)
            .unwrap_or_default()
    }
}
