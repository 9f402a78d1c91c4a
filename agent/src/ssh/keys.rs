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
        let mut joined = zeroize::Zeroizing::new(cert_prefix(&cert.key)?);
        let prefix_len = joined.len();
        joined.extend_from_slice(r.rest());
        let (joined, grew) = pad_ecdsa_scalar(&joined, base.clone())?;
        let mut rest: &[u8] = &joined;
        let keypair = KeypairData::decode_as(&mut rest, base)?;
        let used_tail = joined.len() - rest.len() - prefix_len - grew;
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
    let (body, grew) = pad_ecdsa_scalar(r.rest(), alg.clone())?;
    let mut rest: &[u8] = &body;
    let keypair = KeypairData::decode_as(&mut rest, alg)?;
    if matches!(keypair, KeypairData::Other(_) | KeypairData::Encrypted(_)) {
        return Err(KeyError::Format(format!(
            "key type {name} is not supported"
        )));
    }
    Ok((
        PrivateKey {
            keypair,
            cert: None,
        },
        buf.len() - r.rest().len() + (body.len() - rest.len() - grew),
    ))
}

/// ssh-key 0.6 reads an ECDSA private scalar only at its full size (32, 48
/// or 66 bytes), but OpenSSH writes it as a minimal mpint, shorter when its
/// top byte is zero — one P-521 key in four. Given the fields after the key
/// type name (`string curve ‖ string Q ‖ mpint d ‖ …`), pads `d` to its
/// curve's size; returns the fields and how many bytes longer they became.
fn pad_ecdsa_scalar(
    fields: &[u8],
    alg: Algorithm,
) -> Result<(zeroize::Zeroizing<Vec<u8>>, usize), KeyError> {
    let same = || Ok((zeroize::Zeroizing::new(fields.to_vec()), 0));
    if !matches!(alg, Algorithm::Ecdsa { .. }) {
        return same();
    }
    let mut r = Reader(fields);
    let size = match r.string()? {
        b"nistp256" => 32,
        b"nistp384" => 48,
        b"nistp521" => 66,
        _ => return same(),
    };
    r.string()?;
    let d_at = fields.len() - r.rest().len();
    let d = r.string()?;
    // Only a scalar written shorter than its size is padded; anything else
    // (the right size, or a non-minimal mpint longer than it) goes to
    // ssh-key as it is, which refuses what it cannot read.
    if d.len() >= size {
        return same();
    }
    let first = d.iter().position(|&b| b != 0).unwrap_or(d.len());
    let digits = &d[first..];
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(fields.len() + size));
    out.extend_from_slice(&fields[..d_at]);
    out.extend_from_slice(&(size as u32).to_be_bytes());
    let padded = out.len() + size - digits.len();
    out.resize(padded, 0);
    out.extend_from_slice(digits);
    out.extend_from_slice(r.rest());
    let grew = out.len() - fields.len();
    Ok((out, grew))
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
         files (`-----BEGIN OPENSSH PRIVATE KEY-----`, as `ssh-keygen` writes them) and PEM \
         files of RSA, ECDSA (P-256, P-384, P-521) and Ed25519 keys: PKCS#1 (`BEGIN RSA PRIVATE \
         KEY`), SEC1 (`BEGIN EC PRIVATE KEY`) and PKCS#8 (`BEGIN PRIVATE KEY`, `BEGIN ENCRYPTED \
         PRIVATE KEY`); convert others with `ssh-keygen -p -f FILE`"
    )]
    Format(String),
    /// A file keyward recognises but does not read; the message says what
    /// to do instead.
    #[error("{0}")]
    Unsupported(String),
}

/// Reads a private key file: an OpenSSH private key file, or a PEM file
/// (PKCS#1 RSA, SEC1 EC, PKCS#8, encrypted PKCS#8). Returns the key and its
/// comment (empty for PEM files, which have none).
pub fn import_file(
    text: &[u8],
    passphrase: Option<&[u8]>,
) -> Result<(PrivateKey, String), ImportError> {
    if find(text, b"-----BEGIN OPENSSH PRIVATE KEY-----").is_none() {
        if let Some(block) = pem::private_key_block(text) {
            let keypair = pem::import(block, passphrase)?;
            check_consistent(&keypair).map_err(|e| ImportError::Format(e.to_string()))?;
            let pk = PrivateKey {
                keypair,
                cert: None,
            };
            return Ok((pk, String::new()));
        }
        if let Some(label) = pem::first_label(text) {
            return Err(ImportError::Format(format!("a PEM file of {label:?}")));
        }
        if text.starts_with(b"PuTTY-User-Key-File-") {
            return Err(ImportError::Unsupported(
                "this is a PuTTY key file (.ppk), which keyward does not read: convert it with \
                 `puttygen FILE -O private-openssh-new -o NEW` and import NEW"
                    .into(),
            ));
        }
    }
    openssh_file(text, passphrase)
}

/// An OpenSSH private key file (`openssh-key-v1`, PROTOCOL.key), read here
/// so that the key inside goes through [`decode_private`] (ssh-key 0.6
/// refuses ECDSA scalars OpenSSH wrote shorter than their curve's size);
/// ssh-key's KDF (bcrypt-pbkdf) and ciphers decrypt it.
fn openssh_file(
    text: &[u8],
    passphrase: Option<&[u8]>,
) -> Result<(PrivateKey, String), ImportError> {
    use base64::Engine as _;
    let bad = |what: &str| ImportError::Format(format!("a damaged OpenSSH key file ({what})"));
    let begin = b"-----BEGIN OPENSSH PRIVATE KEY-----";
    let end = b"-----END OPENSSH PRIVATE KEY-----";
    let start = find(text, begin).ok_or_else(|| bad("no BEGIN line"))? + begin.len();
    let stop = start + find(&text[start..], end).ok_or_else(|| bad("no END line"))?;
    let b64: Vec<u8> = text[start..stop]
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let raw = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .map_err(|_| bad("not base64"))?,
    );
    let body = raw
        .strip_prefix(b"openssh-key-v1\0".as_slice())
        .ok_or_else(|| bad("no openssh-key-v1 magic"))?;
    let mut r = Reader(body);
    let truncated = |_| bad("truncated");
    let cipher_name = r.text().map_err(truncated)?.to_owned();
    let kdf_name = r.string().map_err(truncated)?;
    let kdf_options = r.string().map_err(truncated)?;
    if r.u32().map_err(truncated)? != 1 {
        return Err(bad("not exactly one key"));
    }
    let public = r.string().map_err(truncated)?.to_vec();
    let section = r.string().map_err(truncated)?;
    let cipher = ssh_key::Cipher::new(&cipher_name)
        .map_err(|_| ImportError::Format(format!("unknown cipher {cipher_name:?}")))?;
    let mut plain = zeroize::Zeroizing::new(section.to_vec());
    if !cipher.is_none() {
        let Some(pass) = passphrase else {
            return Err(ImportError::NeedPassphrase);
        };
        let tag = if cipher.has_tag() {
            let t = r.take(16).map_err(truncated)?;
            let mut a = [0u8; 16];
            a.copy_from_slice(t);
            Some(a)
        } else {
            None
        };
        let mut kdf_bytes = Vec::new();
        put_string(&mut kdf_bytes, kdf_name);
        put_string(&mut kdf_bytes, kdf_options);
        let kdf = ssh_key::Kdf::decode(&mut &kdf_bytes[..]).map_err(|e| bad(&e.to_string()))?;
        let (key, iv) = kdf
            .derive_key_and_iv(cipher, pass)
            .map_err(|e| bad(&e.to_string()))?;
        cipher
            .decrypt(&key, &iv, &mut plain, tag)
            .map_err(|_| ImportError::WrongPassphrase)?;
    }
    let mut p = Reader(&plain);
    let (c1, c2) = (p.u32().map_err(truncated)?, p.u32().map_err(truncated)?);
    if c1 != c2 {
        // The check words differ: a wrong passphrase (or damage).
        return Err(if cipher.is_none() {
            bad("check words differ")
        } else {
            ImportError::WrongPassphrase
        });
    }
    let (key, used) = decode_private(p.rest()).map_err(|e| ImportError::Format(e.to_string()))?;
    let mut after = Reader(&p.rest()[used..]);
    let comment = after.text().map_err(|_| bad("no comment"))?.to_owned();
    if key.public_blob().map_err(|e| bad(&e.to_string()))? != public {
        return Err(bad("its public and private keys differ"));
    }
    Ok((key, comment))
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// PEM private key files (RFC 7468 encapsulation): PKCS#1 RSA (RFC 8017),
/// SEC 1 EC, PKCS#8 (RFC 5958) and its PBES2 encryption (RFC 8018).
mod pem {
    use super::{ImportError, find};
    use pkcs8::der::Decode as _;
    use pkcs8::pkcs5::{self, pbes2};
    use pkcs8::{AssociatedOid as _, ObjectIdentifier, PrivateKeyInfo};
    use ssh_key::private::{EcdsaKeypair, Ed25519Keypair, KeypairData, RsaKeypair};
    use zeroize::Zeroizing;

    /// rsaEncryption (RFC 8017).
    const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
    /// id-RSASSA-PSS (RFC 8017): a key SSH cannot sign with.
    const RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
    /// id-ecPublicKey (RFC 5480).
    const EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    /// id-Ed25519 (RFC 8410).
    const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
    /// Most PBKDF2 iterations tried (OpenSSL writes 2048; more than this
    /// would keep the agent busy for minutes).
    const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
    /// Most memory an scrypt-encrypted file may make the agent use (OpenSSL
    /// writes N = 16384, r = 8: 16 MiB).
    const MAX_SCRYPT_BYTES: u64 = 256 << 20;

    const CONVERT: &str = "convert it with `ssh-keygen -p -f FILE` (which asks for the \
                           passphrase and rewrites the file as an OpenSSH key file) or with \
                           `openssl pkcs8 -topk8 -v2 aes-256-cbc -in FILE -out NEW`, then import \
                           that";

    /// Not a key keyward reads, and why.
    fn unreadable(what: impl Into<String>) -> ImportError {
        ImportError::Format(what.into())
    }

    /// The first PEM block of `text` whose label ends in `PRIVATE KEY`
    /// (from its `-----BEGIN` line to the end of its `-----END` line).
    pub(super) fn private_key_block(text: &[u8]) -> Option<&[u8]> {
        let mut rest = text;
        loop {
            let at = find(rest, b"-----BEGIN ")?;
            let block = &rest[at..];
            let label_end = find(&block[11..], b"-----")? + 11;
            let label = &block[11..label_end];
            let end = find(block, b"-----END ").and_then(|e| {
                let close = find(&block[e + 9..], b"-----")?;
                Some(e + 9 + close + 5)
            });
            if label.ends_with(b"PRIVATE KEY") {
                return Some(&block[..end.unwrap_or(block.len())]);
            }
            rest = &block[end.unwrap_or(label_end)..];
        }
    }

    /// The label of the first PEM block of `text`, if it has one.
    pub(super) fn first_label(text: &[u8]) -> Option<String> {
        let at = find(text, b"-----BEGIN ")? + 11;
        let len = find(&text[at..], b"-----")?;
        let label = &text[at..at + len];
        (label.len() <= 64 && label.iter().all(|b| b.is_ascii_graphic() || *b == b' '))
            .then(|| String::from_utf8_lossy(label).into_owned())
    }

    /// The key pair in a PEM block that [`private_key_block`] found.
    pub(super) fn import(
        block: &[u8],
        passphrase: Option<&[u8]>,
    ) -> Result<KeypairData, ImportError> {
        if find(block, b"Proc-Type:").is_some() || find(block, b"DEK-Info:").is_some() {
            return Err(ImportError::Unsupported(format!(
                "the key file is encrypted in OpenSSL's legacy PEM format (`Proc-Type: \
                 4,ENCRYPTED`), which keyward does not read: {CONVERT}"
            )));
        }
        let (label, der) = pkcs8::der::pem::decode_vec(block)
            .map_err(|e| unreadable(format!("a PEM file that does not decode: {e}")))?;
        let der = Zeroizing::new(der);
        match label {
            "RSA PRIVATE KEY" => {
                use rsa::pkcs1::DecodeRsaPrivateKey as _;
                let k = rsa::RsaPrivateKey::from_pkcs1_der(&der).map_err(|e| {
                    unreadable(format!("a PKCS#1 RSA key that does not parse: {e}"))
                })?;
                rsa_keypair(&k)
            }
            "EC PRIVATE KEY" => sec1_keypair(&der),
            "PRIVATE KEY" => pkcs8_keypair(&der),
            "ENCRYPTED PRIVATE KEY" => {
                let info = pkcs8::EncryptedPrivateKeyInfo::from_der(&der).map_err(|e| {
                    unreadable(format!("an encrypted PKCS#8 key that does not parse: {e}"))
                })?;
                check_cost(&info.encryption_algorithm)?;
                let Some(p) = passphrase else {
                    return Err(ImportError::NeedPassphrase);
                };
                let plain = Zeroizing::new(
                    info.encryption_algorithm
                        .decrypt(p, info.encrypted_data)
                        .map_err(|e| match e {
                            // pkcs5 0.7.1 reports bad padding after decryption
                            // (a wrong passphrase) as `EncryptFailed`.
                            pkcs5::Error::DecryptFailed | pkcs5::Error::EncryptFailed => {
                                ImportError::WrongPassphrase
                            }
                            e => ImportError::Unsupported(format!(
                                "the key file is encrypted with a scheme keyward does not \
                                 decrypt ({e}); keyward decrypts PBES2 with PBKDF2 \
                                 (HMAC-SHA-224/256/384/512) or scrypt, and AES-CBC: {CONVERT}"
                            )),
                        })?,
                );
                // A wrong passphrase passes the padding check once in 256
                // tries; what it gives then is not a key.
                if PrivateKeyInfo::from_der(&plain).is_err() {
                    return Err(ImportError::WrongPassphrase);
                }
                pkcs8_keypair(&plain)
            }
            other => Err(unreadable(format!("a PEM file of {other:?}"))),
        }
    }

    /// Refuses key derivations that would keep the agent busy for minutes
    /// or take gigabytes (before any passphrase is asked).
    fn check_cost(scheme: &pkcs5::EncryptionScheme<'_>) -> Result<(), ImportError> {
        let pkcs5::EncryptionScheme::Pbes2(params) = scheme else {
            return Err(ImportError::Unsupported(format!(
                "the key file is encrypted with PBES1, which keyward does not decrypt: {CONVERT}"
            )));
        };
        let too_costly = match &params.kdf {
            pbes2::Kdf::Pbkdf2(k) => k.iteration_count > MAX_PBKDF2_ITERATIONS,
            pbes2::Kdf::Scrypt(k) => {
                let per_block = 128 * u64::from(k.block_size);
                k.cost_parameter.saturating_mul(per_block) > MAX_SCRYPT_BYTES
                    || k.parallelization > 16
            }
            _ => false,
        };
        if too_costly {
            return Err(ImportError::Unsupported(format!(
                "the key file's passphrase is stretched far more than keyward allows \
                 ({:?}); {CONVERT}",
                params.kdf
            )));
        }
        Ok(())
    }

    fn rsa_keypair(k: &rsa::RsaPrivateKey) -> Result<KeypairData, ImportError> {
        use rsa::traits::PrivateKeyParts as _;
        if k.primes().len() != 2 {
            return Err(unreadable("a multi-prime RSA key (SSH uses two primes)"));
        }
        // ssh-key's conversion from `rsa` (the other direction is the one
        // that is wrong in 0.6.7, see `rsa_key`).
        let kp = RsaKeypair::try_from(k).map_err(|e| unreadable(format!("an RSA key: {e}")))?;
        Ok(KeypairData::Rsa(kp))
    }

    /// An EC key of `curve` from its SEC 1 `ECPrivateKey` (whose public
    /// key, if it has one, must match; so must `public`, RFC 5958's copy).
    fn ec_keypair(
        curve: ObjectIdentifier,
        sec1_der: &[u8],
        public: Option<&[u8]>,
    ) -> Result<KeypairData, ImportError> {
        macro_rules! on {
            ($crate_:ident, $variant:ident, $name:literal) => {{
                let sk = $crate_::SecretKey::from_sec1_der(sec1_der).map_err(|_| {
                    unreadable(concat!(
                        "a ",
                        $name,
                        " key that does not parse or whose halves do not match"
                    ))
                })?;
                let pk = sk.public_key();
                if let Some(p) = public
                    && $crate_::PublicKey::from_sec1_bytes(p).ok() != Some(pk)
                {
                    return Err(unreadable(concat!(
                        "a ",
                        $name,
                        " key whose halves do not match"
                    )));
                }
                EcdsaKeypair::$variant {
                    public: pk.into(),
                    private: sk.into(),
                }
            }};
        }
        let kp = if curve == p256_013::NistP256::OID {
            on!(p256_013, NistP256, "P-256")
        } else if curve == p384::NistP384::OID {
            on!(p384, NistP384, "P-384")
        } else if curve == p521::NistP521::OID {
            on!(p521, NistP521, "P-521")
        } else {
            return Err(unreadable(format!(
                "an EC key on curve {curve}; SSH uses P-256, P-384 and P-521"
            )));
        };
        Ok(KeypairData::Ecdsa(kp))
    }

    /// `-----BEGIN EC PRIVATE KEY-----`: SEC 1, with its curve named.
    fn sec1_keypair(der: &[u8]) -> Result<KeypairData, ImportError> {
        let k = sec1::EcPrivateKey::from_der(der)
            .map_err(|e| unreadable(format!("a SEC 1 EC key that does not parse: {e}")))?;
        let curve = match k.parameters {
            Some(p) => p.named_curve().ok_or_else(|| {
                unreadable("an EC key with explicit curve parameters (SSH uses named curves)")
            })?,
            None => return Err(unreadable("an EC key that does not name its curve")),
        };
        ec_keypair(curve, der, None)
    }

    /// `-----BEGIN PRIVATE KEY-----`: PKCS#8 (RFC 5208 or RFC 5958).
    fn pkcs8_keypair(der: &[u8]) -> Result<KeypairData, ImportError> {
        let info = PrivateKeyInfo::from_der(der)
            .map_err(|e| unreadable(format!("a PKCS#8 key that does not parse: {e}")))?;
        let oid = info.algorithm.oid;
        if oid == RSA {
            let k = rsa::RsaPrivateKey::try_from(info)
                .map_err(|e| unreadable(format!("a PKCS#8 RSA key that does not parse: {e}")))?;
            rsa_keypair(&k)
        } else if oid == EC {
            let curve = info.algorithm.parameters_oid().map_err(|_| {
                unreadable("an EC key that does not name its curve (SSH uses named curves)")
            })?;
            ec_keypair(curve, info.private_key, info.public_key)
        } else if oid == ED25519 {
            let sk = ed25519_dalek::SigningKey::try_from(info).map_err(|_| {
                unreadable("an Ed25519 key that does not parse or whose halves do not match")
            })?;
            Ok(KeypairData::Ed25519(Ed25519Keypair::from(&sk)))
        } else if oid == RSA_PSS {
            Err(unreadable(
                "an RSA-PSS key (restricted to PSS signatures; SSH signs with PKCS#1 v1.5)",
            ))
        } else {
            Err(unreadable(format!("a PKCS#8 key of algorithm {oid}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent form of `k` with its ECDSA scalar written as OpenSSH
    /// writes it: a minimal mpint (leading zero bytes dropped).
    fn minimal_mpint_form(k: &PrivateKey) -> Vec<u8> {
        let full = encode_private(k).unwrap();
        let mut r = Reader(full.expose());
        let mut out = Vec::new();
        for _ in 0..3 {
            put_string(&mut out, r.string().unwrap()); // type, curve, Q
        }
        let d = r.string().unwrap();
        let first = d.iter().position(|&b| b != 0).unwrap();
        let mut m = d[first..].to_vec();
        if m[0] & 0x80 != 0 {
            m.insert(0, 0);
        }
        put_string(&mut out, &m);
        out.extend_from_slice(r.rest());
        out
    }

    #[test]
    fn ecdsa_scalars_with_leading_zero_bytes_are_read() {
        // A P-521 scalar's top byte is 0 about half the time; find one whose
        // minimal mpint is shorter than 66 bytes (what ssh-key 0.6 refused).
        let mut tried = 0;
        let key = loop {
            tried += 1;
            assert!(tried < 200, "no short P-521 scalar in 200 keys");
            let k = generate("ecdsa", 521).unwrap();
            let form = minimal_mpint_form(&k);
            if form.len() < encode_private(&k).unwrap().len() {
                break k;
            }
        };
        let form = minimal_mpint_form(&key);
        let mut with_comment = form.clone();
        put_string(&mut with_comment, b"comment");
        let (parsed, used) = decode_private(&with_comment).unwrap();
        assert_eq!(used, form.len(), "the key's length in the message");
        assert_eq!(parsed.public_blob().unwrap(), key.public_blob().unwrap());
        let sig = parsed.sign(b"data", 0).unwrap();
        let sig = ssh_key::Signature::decode(&mut &sig[..]).unwrap();
        let (public, _) = parse_public(&key.public_blob().unwrap()).unwrap();
        assert!(signature::Verifier::verify(&public, b"data", &sig).is_ok());
    }

    #[test]
    fn a_scalar_with_more_leading_zeros_than_its_size_does_not_panic() {
        // Found by the `ssh` fuzz target: a 34-byte mpint, all but its last
        // bytes zero, for a P-256 key (padding it made the fields shorter).
        let seed =
            include_bytes!("../../../tests/fuzz/seeds/ssh/regression-ecdsa-long-zero-scalar");
        // Before the fix: an overflow panic computing the key's length.
        if let Ok((_, used)) = decode_private(&seed[1..]) {
            assert!(used < seed.len());
        }
    }
}
