//! SSH private keys: parsing them as agent messages and key files carry
//! them, their public blobs and fingerprints, and signing.
//!
//! Formats and most signatures come from the `ssh-key` crate; RSA is signed
//! here with the `rsa` crate, because the agent protocol chooses the hash per
//! request (`rsa-sha2-256`, `rsa-sha2-512`, or SHA-1 `ssh-rsa` when no flag
//! is set, as ssh-agent does). Security-key (FIDO) keys are signed by
//! OpenSSH's `ssh-sk-helper` (`sk`).

use super::cert::{self, Cert};
use super::wire::{Malformed, Reader, flags};
use crate::secret::SecretBytes;
use ssh_encoding::{Decode, Encode};
use ssh_key::private::KeypairData;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg};

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The bytes are not a key of a type keyward knows.
    #[error("not a usable SSH private key ({0})")]
    Format(String),
    /// Signing failed.
    #[error("signing failed ({0})")]
    Sign(String),
}

impl From<Malformed> for KeyError {
    fn from(_: Malformed) -> Self {
        KeyError::Format("truncated".into())
    }
}

impl From<ssh_key::Error> for KeyError {
    fn from(e: ssh_key::Error) -> Self {
        KeyError::Format(e.to_string())
    }
}

const CERT_SUFFIX: &str = cert::SUFFIX;

/// A private key, parsed (held only while it is used).
pub struct PrivateKey {
    /// The key pair.
    pub keypair: KeypairData,
    /// The certificate's blob, if the identity is one.
    pub cert: Option<Vec<u8>>,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// The fields of a public key blob after its type name, as strings.
fn key_fields(blob: &[u8]) -> Result<Vec<&[u8]>, Malformed> {
    let mut r = Reader(blob);
    r.string()?;
    let mut v = Vec::new();
    while !r.is_empty() {
        v.push(r.string()?);
    }
    Ok(v)
}

fn put_string(v: &mut Vec<u8>, s: &[u8]) {
    v.extend_from_slice(&(s.len() as u32).to_be_bytes());
    v.extend_from_slice(s);
}

/// What a certificate identity's private part leaves out (OpenSSH's
/// `*_deserialize_private` read these from the certificate instead).
fn cert_prefix(cert_key: &KeyData) -> Result<Vec<u8>, KeyError> {
    let blob = encode(cert_key)?;
    let f = key_fields(&blob)?;
    let mut v = Vec::new();
    match cert_key {
        KeyData::Ed25519(_) | KeyData::SkEd25519(_) => {}
        KeyData::Ecdsa(_) | KeyData::Dsa(_) => f.iter().for_each(|s| put_string(&mut v, s)),
        KeyData::SkEcdsaSha2NistP256(_) => f.iter().take(2).for_each(|s| put_string(&mut v, s)),
        KeyData::Rsa(_) if f.len() == 2 => {
            put_string(&mut v, f[1]);
            put_string(&mut v, f[0]);
        }
        _ => return Err(KeyError::Format("unsupported certificate key".into())),
    }
    Ok(v)
}

fn encode(k: &impl Encode) -> Result<Vec<u8>, KeyError> {
    let mut v = Vec::new();
    k.encode(&mut v)
        .map_err(|e| KeyError::Format(e.to_string()))?;
    Ok(v)
}

/// Parses a private key as `ADD_IDENTITY` carries it, from the front of
/// `buf`; returns the key and how many bytes it took. The halves of the key
/// are checked against each other.
pub fn decode_private(buf: &[u8]) -> Result<(PrivateKey, usize), KeyError> {
    let (k, used) = decode_unchecked(buf)?;
    check_consistent(&k.keypair)?;
    Ok((k, used))
}

fn decode_unchecked(buf: &[u8]) -> Result<(PrivateKey, usize), KeyError> {
    let mut r = Reader(buf);
    let name = std::str::from_utf8(r.string()?).map_err(|_| KeyError::Format("bad type".into()))?;
    if name.ends_with(CERT_SUFFIX) {
        let cert_blob = r.string()?;
        let cert =
            cert::parse(cert_blob).map_err(|_| KeyError::Format("bad certificate".into()))?;
        let base = cert.key.algorithm();
        let mut joined = cert_prefix(&cert.key)?;
        let prefix_len = joined.len();
        joined.extend_from_slice(r.rest());
        let mut rest: &[u8] = &joined;
        let keypair = KeypairData::decode_as(&mut rest, base)?;
        let used_tail = joined.len() - rest.len() - prefix_len;
        joined.fill(0);
        if KeyData::try_from(&keypair)? != cert.key {
            return Err(KeyError::Format(
                "the private key does not belong to the certificate".into(),
            ));
        }
        let used = buf.len() - r.rest().len() + used_tail;
        return Ok((
            PrivateKey {
                keypair,
                cert: Some(cert_blob.to_vec()),
            },
            used,
        ));
    }
    let alg = Algorithm::new(name)?;
    let mut rest: &[u8] = r.rest();
    let keypair = KeypairData::decode_as(&mut rest, alg)?;
    if matches!(keypair, KeypairData::Other(_) | KeypairData::Encrypted(_)) {
        return Err(KeyError::Format(format!(
            "key type {name} is not supported"
        )));
    }
    check_consistent(&keypair)?;
    Ok((
        PrivateKey {
            keypair,
            cert: None,
        },
        buf.len() - rest.len(),
    ))
}

/// Refuses a key pair whose public half does not match its private half
/// (a client could send any pair; signatures would then not verify).
fn check_consistent(k: &KeypairData) -> Result<(), KeyError> {
    let ok = match k {
        KeypairData::Ed25519(kp) => {
            ssh_key::public::Ed25519PublicKey::from(&kp.private) == kp.public
        }
        KeypairData::Rsa(kp) => rsa_key(kp).is_ok(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(KeyError::Format(
            "the public and private halves do not match".into(),
        ))
    }
}

/// Parses a key stored by [`encode_private`] (the vault keeps that form;
/// its halves were checked when it was added, and the vault's MAC and AEAD
/// keep it as it was).
pub fn parse_stored(bytes: &SecretBytes) -> Result<PrivateKey, KeyError> {
    let (k, used) = decode_unchecked(bytes.expose())?;
    if used != bytes.len() {
        return Err(KeyError::Format("trailing bytes".into()));
    }
    Ok(k)
}

/// The agent-message form of a private key (type name, then its fields; a
/// certificate identity as OpenSSH serialises it).
pub fn encode_private(k: &PrivateKey) -> Result<SecretBytes, KeyError> {
    let plain = zeroize::Zeroizing::new(encode(&k.keypair)?);
    let Some(cert) = &k.cert else {
        return Ok(SecretBytes::from_slice(&plain));
    };
    let cert_blob = cert;
    let parsed = cert::parse(cert_blob).map_err(|_| KeyError::Format("bad certificate".into()))?;
    let prefix = cert_prefix(&parsed.key)?;
    // The plain form is: type name | prefix fields | the tail.
    let mut r = Reader(&plain);
    r.string()?;
    let after_name = r.rest();
    let tail = after_name
        .get(prefix.len()..)
        .ok_or(KeyError::Format("short key".into()))?;
    let mut v = Vec::with_capacity(cert_blob.len() + tail.len() + 64);
    put_string(&mut v, type_name(cert_blob).as_bytes());
    put_string(&mut v, cert_blob);
    v.extend_from_slice(tail);
    Ok(SecretBytes::new(v))
}

impl PrivateKey {
    /// The key blob SSH uses for this identity (the certificate's, if any).
    pub fn public_blob(&self) -> Result<Vec<u8>, KeyError> {
        match &self.cert {
            Some(c) => Ok(c.clone()),
            None => encode(&KeyData::try_from(&self.keypair)?),
        }
    }

    /// Whether it is a security-key (FIDO) key.
    pub fn is_sk(&self) -> bool {
        matches!(
            self.keypair,
            KeypairData::SkEd25519(_) | KeypairData::SkEcdsaSha2NistP256(_)
        )
    }

    /// The plain (non-certificate) form, for `ssh-sk-helper`.
    pub fn plain_private(&self) -> Result<SecretBytes, KeyError> {
        Ok(SecretBytes::new(encode(&self.keypair)?))
    }

    /// Signs `data` as an SSH agent does: the signature blob (algorithm name and signature).
    pub fn sign(&self, data: &[u8], flag: u32) -> Result<Vec<u8>, KeyError> {
        match &self.keypair {
            KeypairData::Rsa(kp) => sign_rsa(kp, data, flag),
            KeypairData::Ed25519(_) | KeypairData::Ecdsa(_) | KeypairData::Dsa(_) => {
                let sig: ssh_key::Signature = signature::Signer::try_sign(&self.keypair, data)
                    .map_err(|e| KeyError::Sign(e.to_string()))?;
                encode(&sig)
            }
            _ => Err(KeyError::Sign(
                "this key type is signed by its security key".into(),
            )),
        }
    }
}

fn biguint(m: &ssh_key::Mpint) -> Result<rsa::BigUint, KeyError> {
    let b = m
        .as_positive_bytes()
        .ok_or(KeyError::Format("negative RSA parameter".into()))?;
    Ok(rsa::BigUint::from_bytes_be(b))
}

fn rsa_key(kp: &ssh_key::private::RsaKeypair) -> Result<rsa::RsaPrivateKey, KeyError> {
    // Not ssh-key's own conversion: version 0.6.7 passes p twice.
    let k = rsa::RsaPrivateKey::from_components(
        biguint(&kp.public.n)?,
        biguint(&kp.public.e)?,
        biguint(&kp.private.d)?,
        vec![biguint(&kp.private.p)?, biguint(&kp.private.q)?],
    )
    .map_err(|e| KeyError::Format(e.to_string()))?;
    k.validate().map_err(|e| KeyError::Format(e.to_string()))?;
    Ok(k)
}

fn sign_rsa(
    kp: &ssh_key::private::RsaKeypair,
    data: &[u8],
    flag: u32,
) -> Result<Vec<u8>, KeyError> {
    use sha2_010::Digest as _;
    let key = rsa_key(kp)?;
    let mut rng = rand_core_06::OsRng;
    let (name, sig) = if flag & flags::RSA_SHA2_256 != 0 {
        let h = sha2_010::Sha256::digest(data);
        let s = key.sign_with_rng(&mut rng, rsa::Pkcs1v15Sign::new::<sha2_010::Sha256>(), &h);
        ("rsa-sha2-256", s)
    } else if flag & flags::RSA_SHA2_512 != 0 {
        let h = sha2_010::Sha512::digest(data);
        let s = key.sign_with_rng(&mut rng, rsa::Pkcs1v15Sign::new::<sha2_010::Sha512>(), &h);
        ("rsa-sha2-512", s)
    } else {
        let h = sha1::Sha1::digest(data);
        let s = key.sign_with_rng(&mut rng, rsa::Pkcs1v15Sign::new::<sha1::Sha1>(), &h);
        ("ssh-rsa", s)
    };
    let sig = sig.map_err(|e| KeyError::Sign(e.to_string()))?;
    let mut v = Vec::with_capacity(sig.len() + 32);
    put_string(&mut v, name.as_bytes());
    put_string(&mut v, &sig);
    Ok(v)
}

/// The public key of a blob, parsed (a certificate's plain key for a certificate).
pub fn parse_public(blob: &[u8]) -> Result<(KeyData, Option<Cert>), KeyError> {
    if cert::is_cert(blob) {
        let c = cert::parse(blob).map_err(|_| KeyError::Format("bad certificate".into()))?;
        return Ok((c.key.clone(), Some(c)));
    }
    Ok((KeyData::decode(&mut &blob[..])?, None))
}

/// `SHA256:…` of a key blob, as `ssh-add -l` prints it (a certificate's
/// fingerprint is its plain key's).
pub fn fingerprint(blob: &[u8]) -> String {
    match parse_public(blob) {
        Ok((k, _)) => k.fingerprint(HashAlg::Sha256).to_string(),
        Err(_) => "(unparsable key)".into(),
    }
}

/// The key type name of a blob (`ssh-ed25519`, `ssh-ed25519-cert-v01@openssh.com`, …).
pub fn type_name(blob: &[u8]) -> String {
    Reader(blob)
        .string()
        .ok()
        .and_then(|s| std::str::from_utf8(s).ok())
        .unwrap_or("?")
        .to_owned()
}

/// An `authorized_keys` line: type, base64 blob, comment.
pub fn authorized_line(blob: &[u8], comment: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    if comment.is_empty() {
        format!("{} {b64}", type_name(blob))
    } else {
        format!("{} {b64} {comment}", type_name(blob))
    }
}

/// A new key of `kind` (`ed25519`, `ecdsa` with 256/384/521 bits, `rsa`
/// with 2048–16384 bits).
pub fn generate(kind: &str, bits: u32) -> Result<PrivateKey, KeyError> {
    let mut rng = rand_core_06::OsRng;
    let alg = match kind {
        "ed25519" => {
            if bits != 0 && bits != 256 {
                return Err(KeyError::Format("ed25519 keys have 256 bits".into()));
            }
            Algorithm::Ed25519
        }
        "ecdsa" => Algorithm::Ecdsa {
            curve: match bits {
                0 | 256 => ssh_key::EcdsaCurve::NistP256,
                384 => ssh_key::EcdsaCurve::NistP384,
                521 => ssh_key::EcdsaCurve::NistP521,
                _ => {
                    return Err(KeyError::Format(
                        "ECDSA keys have 256, 384 or 521 bits".into(),
                    ));
                }
            },
        },
        "rsa" => {
            let bits = if bits == 0 { 3072 } else { bits };
            if !(2048..=16384).contains(&bits) {
                return Err(KeyError::Format(
                    "RSA keys have 2048 to 16384 bits (3072 if not given)".into(),
                ));
            }
            let kp = ssh_key::private::RsaKeypair::random(&mut rng, bits as usize)?;
            return Ok(PrivateKey {
                keypair: KeypairData::Rsa(kp),
                cert: None,
            });
        }
        other => {
            return Err(KeyError::Format(format!(
                "unknown key type {other:?}: use ed25519, ecdsa or rsa"
            )));
        }
    };
    let k = ssh_key::PrivateKey::random(&mut rng, alg)?;
    Ok(PrivateKey {
        keypair: k.key_data().clone(),
        cert: None,
    })
}

/// Why a key file could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// It is encrypted and no passphrase was given.
    #[error("the key file is protected by a passphrase")]
    NeedPassphrase,
    /// The passphrase is wrong.
    #[error("the passphrase does not open the key file")]
    WrongPassphrase,
    /// Not a format keyward reads.
    #[error(
        "not an SSH private key file keyward can read ({0}); keyward reads OpenSSH private key \
         files (`-----BEGIN OPENSSH PRIVATE KEY-----`, as `ssh-keygen` writes them); convert \
         others with `ssh-keygen -p -f FILE`"
    )]
    Format(String),
}

/// Reads an OpenSSH private key file; returns the key and its comment.
pub fn import_file(
    text: &[u8],
    passphrase: Option<&[u8]>,
) -> Result<(PrivateKey, String), ImportError> {
    let k =
        ssh_key::PrivateKey::from_openssh(text).map_err(|e| ImportError::Format(e.to_string()))?;
    let k = if k.is_encrypted() {
        let Some(p) = passphrase else {
            return Err(ImportError::NeedPassphrase);
        };
        k.decrypt(p).map_err(|_| ImportError::WrongPassphrase)?
    } else {
        k
    };
    let pk = PrivateKey {
        keypair: k.key_data().clone(),
        cert: None,
    };
    check_consistent(&pk.keypair).map_err(|e| ImportError::Format(e.to_string()))?;
    Ok((pk, k.comment().to_owned()))
}
