//! The card's persistent state: what survives a power cycle on a real card.
//!
//! [`CardState`] holds identity (serial, firmware version), the PIN and PUK
//! with their retry counters, the management key, the slots' private keys with
//! their policies, and the data objects. It lives in memory and, when the card
//! is started with `--state FILE`, is written to that JSON file after every
//! command that changes it (atomically: temporary file, then rename), so a
//! test can stop the card and start it again — "re-insert" it — with the same
//! contents. Volatile state (PIN verified, management key authenticated) is
//! deliberately not here; see [`crate::piv::Session`].
//!
//! The file holds secrets in clear (hex). It is a test fixture.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::crypto::{EcKey, MgmtAlgorithm};

/// The factory PIN.
pub const DEFAULT_PIN: &[u8] = b"123456";
/// The factory PUK.
pub const DEFAULT_PUK: &[u8] = b"12345678";
/// The factory management key (3DES, or AES-192 from firmware 5.7).
pub const DEFAULT_MGMT_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];
/// Factory retry counters for PIN and PUK.
pub const DEFAULT_RETRIES: u8 = 3;

/// A firmware version, `major.minor.patch`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Version(pub u8, pub u8, pub u8);

impl Version {
    /// The three bytes GET VERSION returns.
    pub fn to_bytes(self) -> [u8; 3] {
        [self.0, self.1, self.2]
    }

    /// Whether the firmware is at least `major.minor.patch`.
    pub fn at_least(self, major: u8, minor: u8, patch: u8) -> bool {
        self >= Version(major, minor, patch)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<u8> = s
            .split('.')
            .map(|p| {
                p.parse::<u8>()
                    .map_err(|e| format!("bad version {s:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        match parts[..] {
            [a, b, c] if a == 4 || a == 5 => Ok(Version(a, b, c)),
            [_, _, _] => Err(format!(
                "bad version {s:?}: hosts only accept major version 4 or 5"
            )),
            _ => Err(format!("bad version {s:?}: expected MAJOR.MINOR.PATCH")),
        }
    }
}

/// When a slot's key needs the PIN (PIV/Yubico encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PinPolicy {
    /// `01`: never.
    Never,
    /// `02`: once per session.
    Once,
    /// `03`: a fresh VERIFY before every use.
    Always,
}

impl PinPolicy {
    /// The policy byte as in GENERATE and METADATA.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Never => 1,
            Self::Once => 2,
            Self::Always => 3,
        }
    }

    /// Decodes a policy byte; `00` (default) resolves to the slot's default.
    /// `None` for unknown values and the biometric ones (`04`, `05`).
    pub fn from_byte(b: u8, slot: u8) -> Option<Self> {
        match b {
            0 => Some(Self::default_for(slot)),
            1 => Some(Self::Never),
            2 => Some(Self::Once),
            3 => Some(Self::Always),
            _ => None,
        }
    }

    /// A YubiKey's default for a slot: 9C always, 9E never, others once.
    pub fn default_for(slot: u8) -> Self {
        match slot {
            0x9C => Self::Always,
            0x9E => Self::Never,
            _ => Self::Once,
        }
    }
}

/// When a slot's key needs a touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TouchPolicy {
    /// `01`: never (the default).
    Never,
    /// `02`: for every use.
    Always,
    /// `03`: unless touched in the last 15 seconds.
    Cached,
}

impl TouchPolicy {
    /// The policy byte as in GENERATE and METADATA.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Never => 1,
            Self::Always => 2,
            Self::Cached => 3,
        }
    }

    /// Decodes a policy byte; `00` (default) is "never".
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 | 1 => Some(Self::Never),
            2 => Some(Self::Always),
            3 => Some(Self::Cached),
            _ => None,
        }
    }
}

/// Whether a slot's key was generated on the card or imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// `01`: generated on the card.
    Generated,
    /// `02`: imported.
    Imported,
}

impl Origin {
    /// The origin byte as in METADATA.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Generated => 1,
            Self::Imported => 2,
        }
    }
}

/// A PIN or PUK with its retry counter.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Secret {
    /// The value, without the `FF` padding of the wire format.
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
    /// Tries allowed after a success (the counter's reset value).
    pub retries: u8,
    /// Tries left; 0 = blocked.
    pub remaining: u8,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Secret {{ remaining: {}/{} }}",
            self.remaining, self.retries
        )
    }
}

impl Secret {
    fn new(value: &[u8], retries: u8) -> Self {
        Secret {
            value: value.to_vec(),
            retries,
            remaining: retries,
        }
    }

    /// Whether no tries are left.
    pub fn is_blocked(&self) -> bool {
        self.remaining == 0
    }
}

/// The management key.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MgmtKey {
    /// Its algorithm.
    pub algorithm: MgmtAlgorithm,
    /// Its bytes.
    #[serde(with = "hex_bytes")]
    pub key: Vec<u8>,
    /// Whether authenticating with it needs a touch (SET MANAGEMENT KEY P2=FE).
    pub touch: bool,
}

impl fmt::Debug for MgmtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MgmtKey {{ {:?}, touch: {} }}",
            self.algorithm, self.touch
        )
    }
}

/// A private key in a slot.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct SlotKey {
    /// PIV algorithm byte; always `11` (P-256) here.
    pub algorithm: u8,
    /// The private scalar.
    #[serde(with = "hex_bytes")]
    pub private: Vec<u8>,
    /// PIN policy.
    pub pin_policy: PinPolicy,
    /// Touch policy.
    pub touch_policy: TouchPolicy,
    /// Generated or imported.
    pub origin: Origin,
}

impl fmt::Debug for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotKey")
            .field("algorithm", &self.algorithm)
            .field("pin_policy", &self.pin_policy)
            .field("touch_policy", &self.touch_policy)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl SlotKey {
    /// The key as an [`EcKey`]; `None` if the stored scalar is invalid (a
    /// hand-edited state file).
    pub fn ec_key(&self) -> Option<EcKey> {
        EcKey::from_bytes(&self.private).ok()
    }
}

/// Everything a real card keeps across power cycles.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CardState {
    /// Format version of the state file.
    pub format: u32,
    /// Serial number (GET SERIAL).
    pub serial: u32,
    /// Firmware version (GET VERSION).
    pub version: Version,
    /// The PIN.
    pub pin: Secret,
    /// The PUK.
    pub puk: Secret,
    /// The management key.
    pub mgmt: MgmtKey,
    /// Private keys by slot number (`0x9A`, `0x82`..).
    pub keys: BTreeMap<u8, SlotKey>,
    /// Data objects by tag (`0x5FC105`), values without the `53` wrapper.
    #[serde(with = "hex_map")]
    pub objects: BTreeMap<u32, Vec<u8>>,
}

/// Options for a factory-fresh card.
#[derive(Debug, Clone)]
pub struct FactoryOptions {
    /// Serial number.
    pub serial: u32,
    /// Firmware version.
    pub version: Version,
    /// PIN (default `123456`).
    pub pin: Vec<u8>,
    /// PUK (default `12345678`).
    pub puk: Vec<u8>,
    /// Management key; `None` for the default for `version`.
    pub mgmt_key: Option<(MgmtAlgorithm, Vec<u8>)>,
}

impl Default for FactoryOptions {
    fn default() -> Self {
        FactoryOptions {
            serial: 10_000_001,
            version: Version(5, 4, 3),
            pin: DEFAULT_PIN.to_vec(),
            puk: DEFAULT_PUK.to_vec(),
            mgmt_key: None,
        }
    }
}

/// The default management-key algorithm of a firmware version: AES-192 from
/// 5.7, 3DES before, as on real YubiKeys.
pub fn default_mgmt_algorithm(version: Version) -> MgmtAlgorithm {
    if version.at_least(5, 7, 0) {
        MgmtAlgorithm::Aes192
    } else {
        MgmtAlgorithm::Tdes
    }
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{action} card state file {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Which file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a card state.
    #[error("card state file {path} is not valid: {source}")]
    Format {
        /// Which file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The file has a format this build does not know.
    #[error("card state file {path} has format {found}, expected {expected}")]
    FormatVersion {
        /// Which file.
        path: PathBuf,
        /// Its format number.
        found: u32,
        /// Ours.
        expected: u32,
    },
}

impl CardState {
    /// The state file format this build writes.
    pub const FORMAT: u32 = 1;

    /// A factory-fresh card.
    pub fn factory(opts: &FactoryOptions) -> Self {
        let (algorithm, key) = opts.mgmt_key.clone().unwrap_or_else(|| {
            (
                default_mgmt_algorithm(opts.version),
                DEFAULT_MGMT_KEY.to_vec(),
            )
        });
        CardState {
            format: Self::FORMAT,
            serial: opts.serial,
            version: opts.version,
            pin: Secret::new(&opts.pin, DEFAULT_RETRIES),
            puk: Secret::new(&opts.puk, DEFAULT_RETRIES),
            mgmt: MgmtKey {
                algorithm,
                key,
                touch: false,
            },
            keys: BTreeMap::new(),
            objects: BTreeMap::new(),
        }
    }

    /// PIV RESET: back to factory PIN, PUK and management key; keys and
    /// objects gone — except the attestation key in slot F9, which a real
    /// YubiKey keeps. Serial and version stay.
    pub fn reset(&mut self) {
        let attestation = self.keys.remove(&0xF9);
        let fresh = CardState::factory(&FactoryOptions {
            serial: self.serial,
            version: self.version,
            ..FactoryOptions::default()
        });
        *self = fresh;
        if let Some(key) = attestation {
            self.keys.insert(0xF9, key);
        }
    }

    /// Sets new retry counts and, as a YubiKey does, factory PIN and PUK.
    pub fn set_retries(&mut self, pin_retries: u8, puk_retries: u8) {
        self.pin = Secret::new(DEFAULT_PIN, pin_retries);
        self.puk = Secret::new(DEFAULT_PUK, puk_retries);
    }

    /// Reads a state file.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let text = std::fs::read_to_string(path).map_err(|source| StateError::Io {
            action: "reading",
            path: path.to_owned(),
            source,
        })?;
        let state: CardState =
            serde_json::from_str(&text).map_err(|source| StateError::Format {
                path: path.to_owned(),
                source,
            })?;
        if state.format != Self::FORMAT {
            return Err(StateError::FormatVersion {
                path: path.to_owned(),
                found: state.format,
                expected: Self::FORMAT,
            });
        }
        Ok(state)
    }

    /// Writes the state file atomically (temporary file in the same
    /// directory, then rename), so a card killed mid-write leaves the old or
    /// the new state, never half of one.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |action| {
            move |source| StateError::Io {
                action,
                path: path.to_owned(),
                source,
            }
        };
        let text = serde_json::to_string_pretty(self).map_err(|source| StateError::Format {
            path: path.to_owned(),
            source,
        })?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, text + "\n").map_err(io("writing"))?;
        std::fs::rename(&tmp, path).map_err(io("replacing"))?;
        Ok(())
    }
}

/// Serde helper: bytes as a hex string.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// Serde helper: objects as `{"5fc105": "<hex>"}`.
mod hex_map {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(map: &BTreeMap<u32, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (format!("{k:x}"), hex::encode(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u32, Vec<u8>>, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                let tag = u32::from_str_radix(&k, 16).map_err(serde::de::Error::custom)?;
                let value = hex::decode(v).map_err(serde::de::Error::custom)?;
                Ok((tag, value))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!("5.4.3".parse::<Version>(), Ok(Version(5, 4, 3)));
        assert!("6.0.0".parse::<Version>().is_err());
        assert!("5.4".parse::<Version>().is_err());
        assert!(Version(5, 7, 0).at_least(5, 7, 0));
        assert!(!Version(5, 4, 3).at_least(5, 7, 0));
        assert_eq!(Version(5, 7, 1).to_string(), "5.7.1");
    }

    #[test]
    fn default_management_key_follows_firmware() {
        let old = CardState::factory(&FactoryOptions::default());
        assert_eq!(old.mgmt.algorithm, MgmtAlgorithm::Tdes);
        let new = CardState::factory(&FactoryOptions {
            version: Version(5, 7, 2),
            ..FactoryOptions::default()
        });
        assert_eq!(new.mgmt.algorithm, MgmtAlgorithm::Aes192);
        assert_eq!(new.mgmt.key, DEFAULT_MGMT_KEY);
    }

    #[test]
    fn state_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.json");
        let mut state = CardState::factory(&FactoryOptions::default());
        state.pin.remaining = 1;
        state.objects.insert(0x5FC105, vec![1, 2, 3]);
        state.keys.insert(
            0x9A,
            SlotKey {
                algorithm: 0x11,
                private: vec![7; 32],
                pin_policy: PinPolicy::Once,
                touch_policy: TouchPolicy::Cached,
                origin: Origin::Imported,
            },
        );
        state.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"5fc105\": \"010203\""), "{text}");
        let back = CardState::load(&path).unwrap();
        assert_eq!(back.pin.remaining, 1);
        assert_eq!(back.objects, state.objects);
        assert_eq!(back.keys[&0x9A].touch_policy, TouchPolicy::Cached);
        assert_eq!(back.keys[&0x9A].private, vec![7; 32]);

        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(
            CardState::load(&path),
            Err(StateError::Format { .. })
        ));
    }

    #[test]
    fn reset_keeps_identity_and_attestation_key() {
        let mut state = CardState::factory(&FactoryOptions {
            serial: 42,
            pin: b"999999".to_vec(),
            ..FactoryOptions::default()
        });
        let key = SlotKey {
            algorithm: 0x11,
            private: vec![7; 32],
            pin_policy: PinPolicy::Never,
            touch_policy: TouchPolicy::Never,
            origin: Origin::Imported,
        };
        state.keys.insert(0x9A, key.clone());
        state.keys.insert(0xF9, key);
        state.objects.insert(0x5FC105, vec![1]);
        state.reset();
        assert_eq!(state.serial, 42);
        assert_eq!(state.pin.value, DEFAULT_PIN);
        assert!(state.objects.is_empty());
        assert_eq!(state.keys.keys().copied().collect::<Vec<_>>(), vec![0xF9]);
    }
}
