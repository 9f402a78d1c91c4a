//! The card's cryptography, as thin wrappers over RustCrypto.
//!
//! - [`MgmtAlgorithm`]: the management key's block cipher (3DES or AES), used
//!   on single blocks in ECB mode for the witness/challenge protocol.
//! - [`EcKey`]: a P-256 private key held in a slot: key generation from
//!   caller-supplied randomness, ECDSA over a host-computed hash (DER output,
//!   as a YubiKey returns it), and ECDH returning the shared X coordinate.

use aes::{Aes128, Aes192, Aes256};
use des::TdesEde3;
use des::cipher::{Block, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::{PublicKey, SecretKey};

/// A management-key algorithm, by its PIV algorithm byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MgmtAlgorithm {
    /// `03`: three-key triple DES (24-byte key, 8-byte blocks).
    Tdes,
    /// `08`: AES-128.
    Aes128,
    /// `0A`: AES-192 (the default on firmware 5.7 and later).
    Aes192,
    /// `0C`: AES-256.
    Aes256,
}

impl MgmtAlgorithm {
    /// The algorithm for a PIV algorithm byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x03 => Some(Self::Tdes),
            0x08 => Some(Self::Aes128),
            0x0A => Some(Self::Aes192),
            0x0C => Some(Self::Aes256),
            _ => None,
        }
    }

    /// The PIV algorithm byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Tdes => 0x03,
            Self::Aes128 => 0x08,
            Self::Aes192 => 0x0A,
            Self::Aes256 => 0x0C,
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::Tdes | Self::Aes192 => 24,
            Self::Aes128 => 16,
            Self::Aes256 => 32,
        }
    }

    /// Block length in bytes: the size of witnesses and challenges.
    pub fn block_len(self) -> usize {
        match self {
            Self::Tdes => 8,
            _ => 16,
        }
    }

    /// Encrypts one block with `key`. `None` if a length is wrong.
    pub fn encrypt(self, key: &[u8], block: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::Tdes => ecb::<TdesEde3>(key, block, true),
            Self::Aes128 => ecb::<Aes128>(key, block, true),
            Self::Aes192 => ecb::<Aes192>(key, block, true),
            Self::Aes256 => ecb::<Aes256>(key, block, true),
        }
    }

    /// Decrypts one block with `key`. `None` if a length is wrong.
    pub fn decrypt(self, key: &[u8], block: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::Tdes => ecb::<TdesEde3>(key, block, false),
            Self::Aes128 => ecb::<Aes128>(key, block, false),
            Self::Aes192 => ecb::<Aes192>(key, block, false),
            Self::Aes256 => ecb::<Aes256>(key, block, false),
        }
    }
}

fn ecb<C>(key: &[u8], block: &[u8], encrypt: bool) -> Option<Vec<u8>>
where
    C: KeyInit + BlockCipherEncrypt + BlockCipherDecrypt,
{
    let cipher = C::new_from_slice(key).ok()?;
    let mut b = Block::<C>::try_from(block).ok()?;
    if encrypt {
        cipher.encrypt_block(&mut b);
    } else {
        cipher.decrypt_block(&mut b);
    }
    Some(b.to_vec())
}

/// Why an EC operation failed; the card answers `6A80` to all of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EcError {
    /// Bytes that are not a valid P-256 private scalar.
    #[error("invalid P-256 private key")]
    BadPrivateKey,
    /// Bytes that are not an uncompressed point on P-256.
    #[error("invalid P-256 public point")]
    BadPoint,
    /// The hash to sign has an unusable length.
    #[error("cannot sign a hash of this length")]
    BadHash,
}

/// A P-256 private key in a slot.
#[derive(Clone)]
pub struct EcKey(SecretKey);

impl EcKey {
    /// Length of an uncompressed SEC1 point (`04 || X || Y`).
    pub const POINT_LEN: usize = 65;

    /// A key from its 32-byte big-endian scalar.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EcError> {
        SecretKey::from_slice(bytes)
            .map(EcKey)
            .map_err(|_| EcError::BadPrivateKey)
    }

    /// Generates a key, drawing 32-byte candidates from `random` until one is
    /// a valid scalar (all but a 2^-32 fraction are).
    pub fn generate(mut random: impl FnMut(&mut [u8])) -> Self {
        loop {
            let mut candidate = [0u8; 32];
            random(&mut candidate);
            if let Ok(key) = Self::from_bytes(&candidate) {
                return key;
            }
        }
    }

    /// The 32-byte scalar (for the state file).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes().to_vec()
    }

    /// The public key as an uncompressed SEC1 point (65 bytes).
    pub fn public_point(&self) -> Vec<u8> {
        self.0.public_key().to_sec1_bytes().to_vec()
    }

    /// ECDSA over a host-computed hash, DER-encoded. A hash longer than the
    /// curve is truncated to its leftmost 32 bytes (FIPS 186-5 bits2int), as
    /// the card sees only the hash.
    pub fn sign_prehash(&self, hash: &[u8]) -> Result<Vec<u8>, EcError> {
        let hash = &hash[..hash.len().min(32)];
        let signing =
            SigningKey::from_slice(&self.0.to_bytes()).map_err(|_| EcError::BadPrivateKey)?;
        let sig: DerSignature = signing.sign_prehash(hash).map_err(|_| EcError::BadHash)?;
        Ok(sig.as_bytes().to_vec())
    }

    /// ECDH with an uncompressed peer point: the shared point's X coordinate.
    pub fn ecdh(&self, peer_point: &[u8]) -> Result<Vec<u8>, EcError> {
        if peer_point.len() != Self::POINT_LEN || peer_point[0] != 0x04 {
            return Err(EcError::BadPoint);
        }
        let peer = PublicKey::from_sec1_bytes(peer_point).map_err(|_| EcError::BadPoint)?;
        let shared = p256::ecdh::diffie_hellman(self.0.to_nonzero_scalar(), peer.as_affine());
        Ok(shared.raw_secret_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::ecdsa::{Signature, VerifyingKey};

    const DEFAULT_KEY: [u8; 24] = [
        1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
    ];

    #[test]
    fn block_ciphers_round_trip_and_match_known_answers() {
        for alg in [
            MgmtAlgorithm::Tdes,
            MgmtAlgorithm::Aes128,
            MgmtAlgorithm::Aes192,
            MgmtAlgorithm::Aes256,
        ] {
            assert_eq!(MgmtAlgorithm::from_byte(alg.to_byte()), Some(alg));
            let key = vec![0x42; alg.key_len()];
            let block = vec![7; alg.block_len()];
            let ct = alg.encrypt(&key, &block).unwrap();
            assert_ne!(ct, block);
            assert_eq!(alg.decrypt(&key, &ct).unwrap(), block);
            assert_eq!(alg.encrypt(&key[1..], &block), None);
            assert_eq!(alg.encrypt(&key, &block[1..]), None);
        }
        // FIPS 197 appendix C.1 (AES-128).
        let key = hex::decode("000102030405060708090a0b0c0d0e0f").unwrap();
        let pt = hex::decode("00112233445566778899aabbccddeeff").unwrap();
        let ct = MgmtAlgorithm::Aes128.encrypt(&key, &pt).unwrap();
        assert_eq!(hex::encode(ct), "69c4e0d86a7b0430d8cdb78070b4c55a");
        // With K1 = K2 = K3, 3DES EDE is single DES: the classic DES test vector
        // (key 133457799BBCDFF1, plaintext 0123456789ABCDEF).
        let k = hex::decode("133457799BBCDFF1").unwrap().repeat(3);
        let ct = MgmtAlgorithm::Tdes
            .encrypt(&k, &hex::decode("0123456789ABCDEF").unwrap())
            .unwrap();
        assert_eq!(hex::encode_upper(ct), "85E813540F0AB405");
        // The default management key works as a 3DES key.
        assert!(MgmtAlgorithm::Tdes.encrypt(&DEFAULT_KEY, &[0; 8]).is_some());
    }

    #[test]
    fn ec_sign_verifies_and_ecdh_agrees() {
        let mut counter = 0u8;
        let key = EcKey::generate(|buf| {
            counter += 1;
            buf.fill(counter);
        });
        let point = key.public_point();
        assert_eq!((point.len(), point[0]), (65, 4));
        assert_eq!(
            EcKey::from_bytes(&key.to_bytes()).unwrap().public_point(),
            point
        );

        let hash = [0x5A; 32];
        let der = key.sign_prehash(&hash).unwrap();
        let sig = Signature::from_der(&der).unwrap();
        let vk = VerifyingKey::from_sec1_bytes(&point).unwrap();
        vk.verify_prehash(&hash, &sig).unwrap();

        let other = EcKey::from_bytes(&[9; 32]).unwrap();
        let ab = key.ecdh(&other.public_point()).unwrap();
        let ba = other.ecdh(&point).unwrap();
        assert_eq!((ab.len(), &ab), (32, &ba));

        assert_eq!(key.ecdh(&point[..64]), Err(EcError::BadPoint));
        let mut off_curve = point.clone();
        off_curve[64] ^= 1;
        assert_eq!(key.ecdh(&off_curve), Err(EcError::BadPoint));
        assert_eq!(
            EcKey::from_bytes(&[0; 32]).err(),
            Some(EcError::BadPrivateKey)
        );
    }
}
