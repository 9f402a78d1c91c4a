//! The `yubikey` protector: the Secret Key sealed in the vault for a P-256 key
//! that lives on a YubiKey (PIV), usable only with the card and its PIN.
//!
//! - [`list_cards`] says which YubiKeys are present (and whether they still
//!   have factory-default secrets, when the card can tell without spending a
//!   PIN try).
//! - [`enroll`] generates a P-256 key on the card (PIN policy *once*, touch
//!   policy as chosen) in the first free retired slot and returns its public
//!   key; the caller seals the Secret Key for it with
//!   [`crate::vault::Unlocked::add_piv`] (SECURITY.md §9: wrapping needs only
//!   the public key).
//! - [`YubiKeyProtector`] unwraps: the card performs ECDH with the ephemeral
//!   key stored in the wrap after the PIN is verified, the host derives the
//!   wrap key ([`piv::wrap_key`]) and opens the sealed Secret Key. The card
//!   steps (slot check, PIN, touch, GENERAL AUTHENTICATE) are
//!   `key_agreement`, which an organizer key on a card uses too
//!   (SECURITY.md §16; its key is generated with [`enroll`] as well).
//!
//! The agent never reads a terminal: the PIN and every other answer come
//! through [`UnlockIo`], which the agent forwards to the client. Secrets (PIN,
//! management key, ECDH output) live in zeroizing buffers and never appear in
//! errors. The card handle is dropped as soon as the card work is done; the
//! drop resets the card, which also forgets the PIN verification, so nothing
//! we did stays usable by another program.
//!
//! Limitation: the `yubikey` crate 0.8 speaks only 3DES management keys.
//! YubiKeys with firmware 5.7 and later ship with an AES-192 default
//! management key; [`enroll`] detects this and asks the user to set a 3DES
//! key with `ykman` first. Unlocking needs no management key, so it works on
//! every firmware.

use super::{Protector, ProtectorError, UnlockIo};
use crate::account::AccountId;
use crate::account::piv;
use crate::account::secret_key::SecretKey;
use crate::secret::SecretArray;
use crate::vault::format::PivWrap;
use ::yubikey::piv::{self as ykpiv, AlgorithmId, ManagementAlgorithmId, ManagementSlotId, SlotId};
use ::yubikey::{Error as YkError, MgmKey, PinPolicy, Serial, TouchPolicy, YubiKey};
use keyward_client::{PromptKind, Secret};
use std::fmt;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The factory-default PIN of a YubiKey.
pub const DEFAULT_PIN: &[u8] = b"123456";
/// The retired key slots, where enrollment puts its key by default.
pub const RETIRED_SLOTS: RangeInclusive<u8> = 0x82..=0x95;
/// PIN policy "once", as the card encodes it (the only one keyward generates).
pub const PIN_POLICY_ONCE: u8 = 2;
/// How often [`YubiKeyProtector`] looks for a card it is waiting for.
const INSERT_POLL: Duration = Duration::from_millis(200);

/// The card's touch policy for the generated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Touch {
    /// No touch.
    #[default]
    Never,
    /// A touch for every unwrap.
    Always,
    /// A touch, remembered by the card for 15 seconds.
    Cached,
}

impl Touch {
    /// The card's encoding: 1 never, 2 always, 3 cached.
    pub fn code(self) -> u8 {
        match self {
            Touch::Never => 1,
            Touch::Always => 2,
            Touch::Cached => 3,
        }
    }

    /// From the card's encoding.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Touch::Never),
            2 => Some(Touch::Always),
            3 => Some(Touch::Cached),
            _ => None,
        }
    }

    /// `never`, `always` or `cached`.
    pub fn name(self) -> &'static str {
        match self {
            Touch::Never => "never",
            Touch::Always => "always",
            Touch::Cached => "cached",
        }
    }

    fn policy(self) -> TouchPolicy {
        match self {
            Touch::Never => TouchPolicy::Never,
            Touch::Always => TouchPolicy::Always,
            Touch::Cached => TouchPolicy::Cached,
        }
    }
}

impl std::str::FromStr for Touch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "never" => Ok(Touch::Never),
            "always" => Ok(Touch::Always),
            "cached" => Ok(Touch::Cached),
            _ => Err(format!(
                "unknown touch policy {s:?} (use never, always or cached)"
            )),
        }
    }
}

/// Name of a PIN policy as the card encodes it (1 never, 2 once, 3 always).
pub fn pin_policy_name(code: u8) -> String {
    match code {
        1 => "never".into(),
        2 => "once".into(),
        3 => "always".into(),
        other => format!("unknown ({other})"),
    }
}

/// Name of a touch policy as the card encodes it (1 never, 2 always, 3 cached).
pub fn touch_policy_name(code: u8) -> String {
    match Touch::from_code(code) {
        Some(t) => t.name().into(),
        None => format!("unknown ({code})"),
    }
}

/// The protector id of a card and slot: `yubikey:SERIAL:SLOT` (slot in hex).
pub fn protector_id(serial: u32, slot: u8) -> String {
    format!("yubikey:{serial}:{slot:02x}")
}

// ------------------------------------------------------------------ listing

/// A YubiKey that is present. `None` = the card cannot tell cheaply
/// (firmware before 5.3 has no metadata command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardInfo {
    /// Serial number.
    pub serial: u32,
    /// Firmware version (major, minor, patch).
    pub firmware: [u8; 3],
    /// The PC/SC reader it sits in.
    pub reader: String,
    /// Whether the PIN is still the factory default 123456.
    pub pin_default: Option<bool>,
    /// PIN tries left before it blocks.
    pub pin_tries_left: Option<u8>,
    /// Whether the PUK is still the factory default 12345678.
    pub puk_default: Option<bool>,
    /// Whether the management key is still the factory default.
    pub management_key_default: Option<bool>,
    /// The management key is not 3DES (AES: the firmware ≥ 5.7 default), which
    /// keyward cannot use for enrollment (see the module docs).
    pub management_key_unsupported: bool,
}

impl CardInfo {
    /// `5.4.3`.
    pub fn firmware_string(&self) -> String {
        let [a, b, c] = self.firmware;
        format!("{a}.{b}.{c}")
    }
}

impl fmt::Display for CardInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "YubiKey {} (firmware {}, reader {:?})",
            self.serial,
            self.firmware_string(),
            self.reader
        )?;
        if let Some(t) = self.pin_tries_left {
            write!(f, ", {t} PIN tries left")?;
        }
        if self.pin_default == Some(true) {
            write!(f, ", factory-default PIN")?;
        }
        if self.puk_default == Some(true) {
            write!(f, ", factory-default PUK")?;
        }
        if self.management_key_unsupported {
            write!(
                f,
                ", AES management key (set a 3DES one to enroll: `ykman piv access change-management-key -a TDES`)"
            )?;
        } else if self.management_key_default == Some(true) {
            write!(f, ", factory-default management key")?;
        }
        Ok(())
    }
}

/// The YubiKeys present now. Spends no PIN try and changes nothing on the cards.
pub fn list_cards() -> Result<Vec<CardInfo>, ProtectorError> {
    let cards = open_all()?;
    let mut out = Vec::with_capacity(cards.len());
    for mut yk in cards {
        let (info, authenticated) = card_info(&mut yk);
        out.push(info);
        if authenticated {
            // We authenticated with the default management key: reset the
            // card so that the authentication does not outlive us.
            drop(yk);
        } else {
            // Nothing to forget: leave other programs' sessions alone.
            let _ = yk.disconnect(pcsc::Disposition::LeaveCard);
        }
    }
    out.sort_by_key(|c| c.serial);
    Ok(out)
}

/// Returns the information and whether the card is now authenticated with
/// the management key (it then needs a reset).
fn card_info(yk: &mut YubiKey) -> (CardInfo, bool) {
    let v = yk.version();
    let mut info = CardInfo {
        serial: yk.serial().0,
        firmware: [v.major, v.minor, v.patch],
        reader: yk.name().to_owned(),
        pin_default: None,
        pin_tries_left: None,
        puk_default: None,
        management_key_default: None,
        management_key_unsupported: false,
    };
    let mut authenticated = false;
    if let Ok(m) = ykpiv::metadata(yk, SlotId::Management(ManagementSlotId::Pin)) {
        info.pin_default = m.default;
        info.pin_tries_left = m.retries.map(|r| r.remaining_count);
    }
    if let Ok(m) = ykpiv::metadata(yk, SlotId::Management(ManagementSlotId::Puk)) {
        info.puk_default = m.default;
    }
    match management_key_state(yk) {
        MgmState::TripleDes { default } => info.management_key_default = default,
        MgmState::Unsupported => info.management_key_unsupported = true,
        MgmState::Unknown => {
            // No metadata (firmware < 5.3): try the default key. The
            // management key has no retry counter, so this costs nothing.
            authenticated = yk.authenticate(MgmKey::default()).is_ok();
            info.management_key_default = Some(authenticated);
        }
    }
    (info, authenticated)
}

// --------------------------------------------------------------- enrollment

/// What [`enroll`] needs. Secrets are zeroized when dropped.
#[derive(Debug, Default)]
pub struct EnrollOptions {
    /// The card; required when several are present.
    pub serial: Option<u32>,
    /// The slot; default the first free retired slot (82..95).
    pub slot: Option<u8>,
    /// The touch policy of the new key.
    pub touch: Touch,
    /// The PIN; asked through [`UnlockIo`] when absent.
    pub pin: Option<Secret>,
    /// The management key (48 hex digits, 3DES); default: the factory key,
    /// then a PIN-protected key stored on the card, then ask.
    pub management_key: Option<Secret>,
}

/// A key generated on a card, ready for [`crate::vault::Unlocked::add_piv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// Card serial.
    pub serial: u32,
    /// The slot that holds the key.
    pub slot: u8,
    /// PIN policy as the card encodes it (always 2, once).
    pub pin_policy: u8,
    /// Touch policy as the card encodes it (1 never, 2 always, 3 cached).
    pub touch_policy: u8,
    /// The card's public key, uncompressed SEC1.
    pub card_pk: [u8; 65],
    /// Things the user must read (factory defaults, changes made).
    pub notes: Vec<String>,
}

/// Generates a P-256 key on a YubiKey for the PIV wrap; see the module docs.
///
/// Steps: find the card; verify the PIN (offering to replace a factory-default
/// PIN); authenticate with the management key (offering to replace a
/// factory-default one by a random PIN-protected key); pick the slot; generate
/// with PIN policy *once* and the chosen touch policy. Nothing secret is
/// returned.
pub fn enroll(opts: &EnrollOptions, io: &dyn UnlockIo) -> Result<Enrolled, ProtectorError> {
    if let Some(slot) = opts.slot {
        check_slot_number(slot)?;
    }
    let mut yk = match opts.serial {
        Some(serial) => open_serial(serial)?,
        None => open_only()?,
    };
    let serial = yk.serial().0;
    let mut progress = Progress::default();
    let r = enroll_on(&mut yk, serial, opts, io, &mut progress);
    // Done with the card: the drop resets it (PIN and management key forgotten).
    drop(yk);
    let card_pk = r.map_err(|e| progress.explain(serial, e))?;
    Ok(Enrolled {
        serial,
        slot: progress.slot,
        pin_policy: PIN_POLICY_ONCE,
        touch_policy: opts.touch.code(),
        card_pk,
        notes: progress.notes,
    })
}

/// The wrap among `wraps` for the card [`enroll`] would use (`serial`, or
/// the only one present) whose slot still holds the wrap's key: that card
/// already unlocks every device it is plugged into, and enrolling it again
/// would only put a second key on it. `None` when there is no such card or
/// it cannot tell (firmware before 5.3 has no metadata command). Spends no
/// PIN try and changes nothing on the card.
pub fn enrolled_wrap(wraps: &[PivWrap], serial: Option<u32>) -> Option<PivWrap> {
    let mut yk = match serial {
        Some(serial) => open_serial(serial).ok()?,
        None => open_only().ok()?,
    };
    let serial = yk.serial().0;
    let found = wraps
        .iter()
        .filter(|w| w.serial == serial)
        .find(|w| {
            SlotId::try_from(w.slot)
                .ok()
                .and_then(|id| ykpiv::metadata(&mut yk, id).ok())
                .and_then(|m| m.public)
                .and_then(|spki| piv::compress(spki.subject_public_key.raw_bytes()).ok())
                .is_some_and(|pk| pk == w.card_pk)
        })
        .cloned();
    // Nothing was authenticated: leave other programs' sessions alone.
    let _ = yk.disconnect(pcsc::Disposition::LeaveCard);
    found
}

/// What enrollment did so far: notes for the user, changes made to the card
/// (reported with any later error, so the user knows them), the slot.
#[derive(Default)]
struct Progress {
    notes: Vec<String>,
    changed: Vec<&'static str>,
    slot: u8,
}

impl Progress {
    /// Adds the changes already made to an error that ends the enrollment.
    fn explain(&self, serial: u32, e: ProtectorError) -> ProtectorError {
        if self.changed.is_empty() {
            return e;
        }
        let done = format!(
            "already done on YubiKey {serial}: {}",
            self.changed.join("; ")
        );
        match e {
            ProtectorError::Failed(m) => ProtectorError::Failed(format!("{m} ({done})")),
            ProtectorError::Unavailable(m) => ProtectorError::Unavailable(format!("{m} ({done})")),
            ProtectorError::Cancelled => ProtectorError::Failed(format!("cancelled ({done})")),
            e => e,
        }
    }
}

/// The enrollment steps on an open card; returns the public key.
fn enroll_on(
    yk: &mut YubiKey,
    serial: u32,
    opts: &EnrollOptions,
    io: &dyn UnlockIo,
    progress: &mut Progress,
) -> Result<[u8; 65], ProtectorError> {
    // An AES management key cannot be used: say so before asking for the PIN.
    let mgm_state = management_key_state(yk);
    if mgm_state == MgmState::Unsupported {
        return Err(aes_management_key(serial, &yk.version().to_string()));
    }

    // The PIN.
    let mut pin = match &opts.pin {
        Some(p) => Zeroizing::new(p.expose().to_vec()),
        None => prompt_pin(io, &format!("PIN of YubiKey {serial}"))?,
    };
    check_pin_length(serial, &pin)?;
    verify_pin(yk, serial, &pin)?;
    if pin.as_slice() == DEFAULT_PIN {
        match ask_new_pin(io, serial)? {
            Some(new_pin) => {
                yk.change_pin(&pin, &new_pin)
                    .map_err(|e| pin_error(serial, e, "change the PIN of"))?;
                progress
                    .changed
                    .push("its PIN was changed to the new PIN you entered");
                verify_pin(yk, serial, &new_pin)?;
                pin = new_pin;
                progress.notes.push(format!(
                    "The PIN of YubiKey {serial} was changed from the factory default; use the new PIN \
                     from now on (3 wrong tries block it)."
                ));
            }
            None => progress.notes.push(format!(
                "WARNING: the PIN of YubiKey {serial} is still the factory default 123456, so anyone who \
                 takes the card can unwrap your Secret Key. Change it: `ykman piv access change-pin` \
                 (or `yubico-piv-tool -a change-pin`)."
            )),
        }
    }
    if let Ok(m) = ykpiv::metadata(yk, SlotId::Management(ManagementSlotId::Puk))
        && m.default == Some(true)
    {
        progress.notes.push(format!(
            "The PUK of YubiKey {serial} is still the factory default 12345678: anyone with the card \
             can reset a blocked PIN. Change it: `ykman piv access change-puk`."
        ));
    }

    // The management key (needed to generate a key).
    authenticate_management(yk, serial, mgm_state, opts, io, progress)?;
    drop(pin);

    // The slot.
    let slot = choose_slot(yk, serial, opts.slot, &mut progress.notes)?;
    let slot_id = SlotId::try_from(slot)
        .map_err(|_| ProtectorError::Failed(format!("slot {slot:02x} is not a PIV key slot")))?;

    // The key.
    let spki = ykpiv::generate(
        yk,
        slot_id,
        AlgorithmId::EccP256,
        PinPolicy::Once,
        opts.touch.policy(),
    )
    .map_err(|e| match e {
        YkError::AuthenticationError => ProtectorError::Failed(format!(
            "YubiKey {serial} refused to generate a key: the management-key authentication was lost \
             (was the card used by another program meanwhile?); try again"
        )),
        e => card_error(serial, "generate a key on", e),
    })?;
    progress.slot = slot;
    let card_pk: [u8; 65] = spki
        .subject_public_key
        .raw_bytes()
        .try_into()
        .map_err(|_| bad_public_key(serial))?;
    piv::compress(&card_pk).map_err(|_| bad_public_key(serial))?;
    Ok(card_pk)
}

fn bad_public_key(serial: u32) -> ProtectorError {
    ProtectorError::Failed(format!(
        "YubiKey {serial} returned a public key that is not a valid P-256 point"
    ))
}

/// Only the four PIV key slots and the 20 retired slots.
fn check_slot_number(slot: u8) -> Result<(), ProtectorError> {
    if RETIRED_SLOTS.contains(&slot) || matches!(slot, 0x9a | 0x9c | 0x9d | 0x9e) {
        Ok(())
    } else {
        Err(ProtectorError::Failed(format!(
            "slot {slot:02x} is not a PIV key slot; use a retired slot 82..95 (or 9a, 9c, 9d, 9e)"
        )))
    }
}

/// Asks for a new PIN to replace the default one. `None` = keep the default.
fn ask_new_pin(
    io: &dyn UnlockIo,
    serial: u32,
) -> Result<Option<Zeroizing<Vec<u8>>>, ProtectorError> {
    let message = format!(
        "YubiKey {serial}: the PIN is the factory default 123456; enter a new PIN (6–8 characters), \
         or leave empty to keep it"
    );
    for _ in 0..3 {
        let Some(answer) = io.prompt(PromptKind::NewPin, &message) else {
            return Ok(None);
        };
        let new_pin = answer.expose();
        if new_pin.is_empty() || new_pin == DEFAULT_PIN {
            return Ok(None);
        }
        if pin_length_ok(new_pin) {
            return Ok(Some(Zeroizing::new(new_pin.to_vec())));
        }
        io.notice("A YubiKey PIN has 6 to 8 characters; try again.");
    }
    Err(ProtectorError::Failed(format!(
        "no valid new PIN was given for YubiKey {serial} (6 to 8 characters); nothing was changed"
    )))
}

fn authenticate_management(
    yk: &mut YubiKey,
    serial: u32,
    state: MgmState,
    opts: &EnrollOptions,
    io: &dyn UnlockIo,
    progress: &mut Progress,
) -> Result<(), ProtectorError> {
    let version = yk.version();
    let wrong = |what: &str| {
        let mut msg = format!("{what} is not the management key of YubiKey {serial}");
        if version.major > 5 || (version.major == 5 && version.minor >= 7) {
            msg.push_str(
                " (if it is an AES key, the default from firmware 5.7 on: keyward needs a 3DES key; \
                 set one with `ykman piv access change-management-key -a TDES --protect`)",
            );
        }
        ProtectorError::Failed(msg)
    };
    if let Some(hex) = &opts.management_key {
        let key = parse_management_key(hex.expose())?;
        return yk
            .authenticate(key)
            .map_err(|_| wrong("the management key given"));
    }
    let default = match state {
        MgmState::TripleDes { default } => default,
        _ => None,
    };
    if default != Some(false) && yk.authenticate(MgmKey::default()).is_ok() {
        offer_protected_key(yk, serial, io, progress)?;
        return Ok(());
    }
    // A random key kept on the card behind the PIN (ykman's `--protect`);
    // readable now that the PIN is verified.
    if let Ok(key) = MgmKey::get_protected(yk)
        && yk.authenticate(key).is_ok()
    {
        return Ok(());
    }
    let answer = io
        .prompt(
            PromptKind::ManagementKey,
            &format!("management key of YubiKey {serial} (48 hex digits)"),
        )
        .ok_or(ProtectorError::Cancelled)?;
    let key = parse_management_key(answer.expose())?;
    yk.authenticate(key)
        .map_err(|_| wrong("the management key entered"))
}

/// The card has the factory-default management key: offer to replace it by a
/// random one stored on the card behind the PIN (as ykman's `--protect`
/// does); otherwise leave a warning.
fn offer_protected_key(
    yk: &mut YubiKey,
    serial: u32,
    io: &dyn UnlockIo,
    progress: &mut Progress,
) -> Result<(), ProtectorError> {
    let question = format!(
        "YubiKey {serial} still has the factory-default management key, with which anyone holding \
         the card can replace its keys. Replace it with a random key kept on the card behind the PIN \
         (as `ykman piv access change-management-key --generate --protect` does)?"
    );
    let yes = io
        .prompt(PromptKind::Confirm, &question)
        .is_some_and(|a| is_yes(a.expose()));
    if !yes {
        progress.notes.push(format!(
            "WARNING: YubiKey {serial} still has the factory-default management key: anyone holding \
             the card can replace its keys (which would lock you out of this protector, not reveal \
             the Secret Key). Change it: `ykman piv access change-management-key --generate --protect`."
        ));
        return Ok(());
    }
    let new_key = MgmKey::generate();
    if let Err(e) = new_key.set_protected(yk) {
        // The crate sets the key before storing it; if the storing failed,
        // go back to the default rather than leave an unknown key.
        let restored = yk.authenticate(new_key.clone()).is_ok() && MgmKey::set_default(yk).is_ok();
        return Err(ProtectorError::Failed(if restored {
            format!(
                "could not store a new management key on YubiKey {serial} ({e}); the factory default \
                 was kept"
            )
        } else {
            format!(
                "could not store a new management key on YubiKey {serial} ({e}); its management key \
                 may now be unknown: if `ykman piv keys generate` fails, reset the PIV applet with \
                 `ykman piv reset` (this erases its keys)"
            )
        }));
    }
    progress
        .changed
        .push("its management key was replaced by a random key kept on the card behind the PIN");
    // Stay authenticated (with the new key) for the key generation.
    yk.authenticate(new_key)
        .map_err(|e| card_error(serial, "authenticate with the new management key on", e))?;
    progress.notes.push(format!(
        "The management key of YubiKey {serial} was replaced by a random key kept on the card behind \
         the PIN (ykman asks for the PIN to use it)."
    ));
    Ok(())
}

fn is_yes(answer: &[u8]) -> bool {
    let a = String::from_utf8_lossy(answer).trim().to_ascii_lowercase();
    a == "y" || a == "yes"
}

/// 48 hex digits (spaces and colons allowed) → a 3DES management key.
fn parse_management_key(text: &[u8]) -> Result<MgmKey, ProtectorError> {
    let bad = || {
        ProtectorError::Failed(
            "a management key is 48 hex digits (24 bytes, 3DES); keyward cannot use AES keys"
                .into(),
        )
    };
    let mut bytes = Zeroizing::new([0u8; 24]);
    let mut n = 0usize;
    let mut high: Option<u8> = None;
    for &c in text {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            b' ' | b':' | b'\t' | b'\n' | b'\r' => continue,
            _ => return Err(bad()),
        };
        match high.take() {
            None => high = Some(v),
            Some(h) => {
                let slot = bytes.get_mut(n).ok_or_else(bad)?;
                *slot = (h << 4) | v;
                n += 1;
            }
        }
    }
    if n != 24 || high.is_some() {
        return Err(bad());
    }
    MgmKey::new(*bytes).map_err(|_| {
        ProtectorError::Failed(
            "this management key is a weak 3DES key, which YubiKeys refuse; choose another".into(),
        )
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MgmState {
    /// 3DES; whether it is the factory default, if known.
    TripleDes { default: Option<bool> },
    /// AES (firmware 5.7 default): unusable with the yubikey crate 0.8.
    Unsupported,
    /// No metadata (firmware < 5.3).
    Unknown,
}

fn management_key_state(yk: &mut YubiKey) -> MgmState {
    let v = yk.version();
    let at_least_5_7 = v.major > 5 || (v.major == 5 && v.minor >= 7);
    match ykpiv::metadata(yk, SlotId::Management(ManagementSlotId::Management)) {
        Ok(m) if m.algorithm == ManagementAlgorithmId::ThreeDes => {
            MgmState::TripleDes { default: m.default }
        }
        // The crate cannot parse AES algorithm ids (08, 0A, 0C) in metadata.
        Ok(_) => MgmState::Unsupported,
        Err(YkError::NotSupported) => MgmState::Unknown,
        Err(_) if at_least_5_7 => MgmState::Unsupported,
        Err(_) => MgmState::Unknown,
    }
}

fn aes_management_key(serial: u32, firmware: &str) -> ProtectorError {
    ProtectorError::Failed(format!(
        "YubiKey {serial} (firmware {firmware}) has an AES management key (the factory default from \
         firmware 5.7 on), which keyward cannot use yet: its YubiKey library speaks only 3DES \
         management keys. Set a 3DES management key first: `ykman piv access change-management-key \
         -a TDES --generate --protect`, then enroll again."
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Empty,
    Occupied,
    /// No metadata command (firmware < 5.3).
    Unknown,
}

fn slot_state(yk: &mut YubiKey, serial: u32, slot: u8) -> Result<SlotState, ProtectorError> {
    let id = SlotId::try_from(slot)
        .map_err(|_| ProtectorError::Failed(format!("slot {slot:02x} is not a PIV key slot")))?;
    match ykpiv::metadata(yk, id) {
        Ok(_) => Ok(SlotState::Occupied),
        // `6A88`: no key in the slot.
        Err(YkError::GenericError) => Ok(SlotState::Empty),
        Err(YkError::NotSupported) => Ok(SlotState::Unknown),
        Err(e @ YkError::PcscError { .. }) => Err(card_error(serial, "read the slots of", e)),
        // Something the crate cannot parse (another algorithm): a key is there.
        Err(_) => Ok(SlotState::Occupied),
    }
}

fn choose_slot(
    yk: &mut YubiKey,
    serial: u32,
    wanted: Option<u8>,
    notes: &mut Vec<String>,
) -> Result<u8, ProtectorError> {
    if let Some(slot) = wanted {
        return match slot_state(yk, serial, slot)? {
            SlotState::Empty => Ok(slot),
            SlotState::Occupied => Err(ProtectorError::Failed(format!(
                "slot {slot:02x} of YubiKey {serial} already holds a key, which keyward does not \
                 overwrite; choose a free slot with --slot, or leave --slot out to use the first free \
                 retired slot"
            ))),
            SlotState::Unknown => {
                notes.push(format!(
                    "YubiKey {serial} cannot tell whether slot {slot:02x} was free (firmware before \
                     5.3); a key that was there has been replaced."
                ));
                Ok(slot)
            }
        };
    }
    for slot in RETIRED_SLOTS {
        match slot_state(yk, serial, slot)? {
            SlotState::Empty => return Ok(slot),
            SlotState::Occupied => continue,
            SlotState::Unknown => {
                return Err(ProtectorError::Failed(format!(
                    "YubiKey {serial} cannot tell which slots are free (firmware before 5.3); choose a \
                     retired slot you do not use with --slot (82 to 95)"
                )));
            }
        }
    }
    Err(ProtectorError::Failed(format!(
        "all 20 retired slots of YubiKey {serial} hold keys; free one (`ykman piv keys delete`, \
         firmware 5.7) or choose a slot with --slot"
    )))
}

// ------------------------------------------------------------------ unwrap

/// The YubiKey protector of one PIV wrap record.
pub struct YubiKeyProtector {
    wrap: PivWrap,
    /// The same card's wrap in another device's newer part, if it differs.
    newer: Option<PivWrap>,
    account: AccountId,
    insert_timeout: Duration,
}

impl YubiKeyProtector {
    /// From the vault's wrap record. An absent card is reported at once
    /// (see [`YubiKeyProtector::with_insert_timeout`]).
    pub fn new(wrap: PivWrap, account: AccountId) -> Self {
        Self {
            wrap,
            newer: None,
            account,
            insert_timeout: Duration::ZERO,
        }
    }

    /// Also opens `newer`, the wrap another device made for the same card
    /// key (in its part with a later password wrap), in the same PIN
    /// session: see [`Protector::fetch_with_newer`]. Ignored unless it
    /// names the same card, slot and key and seals something else.
    pub fn with_newer(mut self, newer: Option<&PivWrap>) -> Self {
        self.newer = newer
            .filter(|n| {
                (n.serial, n.slot, n.card_pk)
                    == (self.wrap.serial, self.wrap.slot, self.wrap.card_pk)
                    && (n.epk, &n.sealed) != (self.wrap.epk, &self.wrap.sealed)
            })
            .cloned();
        self
    }

    /// Waits up to `timeout` for an absent card to be inserted (after a
    /// notice asking for it) before reporting it unavailable.
    pub fn with_insert_timeout(mut self, timeout: Duration) -> Self {
        self.insert_timeout = timeout;
        self
    }

    /// Card serial.
    pub fn serial(&self) -> u32 {
        self.wrap.serial
    }

    /// Slot.
    pub fn slot(&self) -> u8 {
        self.wrap.slot
    }

    /// The wrap record.
    pub fn wrap(&self) -> &PivWrap {
        &self.wrap
    }

    fn open(&self, io: &dyn UnlockIo) -> Result<YubiKey, ProtectorError> {
        let serial = self.wrap.serial;
        match open_raw(serial) {
            Ok(yk) => return Ok(yk),
            Err(e) if is_absent(&e) && !self.insert_timeout.is_zero() => {}
            Err(e) => return Err(open_error(serial, e)),
        }
        io.notice(&format!(
            "Insert YubiKey {serial} (waiting up to {} s)…",
            self.insert_timeout.as_secs_f32()
        ));
        let deadline = Instant::now() + self.insert_timeout;
        loop {
            std::thread::sleep(INSERT_POLL);
            match open_raw(serial) {
                Ok(yk) => return Ok(yk),
                Err(e) if is_absent(&e) && Instant::now() < deadline => continue,
                Err(e) => return Err(open_error(serial, e)),
            }
        }
    }

    /// How [`key_agreement`] names this wrap's key, for its prompt and errors.
    fn agreement(&self) -> CardAgreement<'_> {
        let (serial, slot) = (self.wrap.serial, self.wrap.slot);
        CardAgreement {
            serial,
            slot,
            card_pk: &self.wrap.card_pk,
            touch_policy: self.wrap.touch_policy,
            pin: None,
            pin_label: format!("PIN of YubiKey {serial}"),
            key_name: "the key this vault was enrolled with",
            gone_advice: format!(
                "unlock another way (another protector, the Secret Key from your Emergency Kit or \
                 a recovery code) and remove protector {}",
                protector_id(serial, slot)
            ),
            again: "unlock again",
        }
    }
}

impl Protector for YubiKeyProtector {
    fn id(&self) -> String {
        protector_id(self.wrap.serial, self.wrap.slot)
    }

    fn kind(&self) -> &'static str {
        "yubikey"
    }

    fn describe(&self) -> String {
        format!(
            "YubiKey {}, slot {:02x}: P-256 key, PIN policy {}, touch policy {}",
            self.wrap.serial,
            self.wrap.slot,
            pin_policy_name(self.wrap.pin_policy),
            touch_policy_name(self.wrap.touch_policy)
        )
    }

    fn fetch(&self, io: &dyn UnlockIo) -> Result<SecretKey, ProtectorError> {
        let yk = self.open(io)?;
        let (x, _) = key_agreement_pair(yk, &self.agreement(), &self.epk(&self.wrap)?, None, io)?;
        self.open_sealed(&self.wrap, &x)
    }

    fn fetch_with_newer(
        &self,
        io: &dyn UnlockIo,
    ) -> Result<(SecretKey, Option<SecretKey>), ProtectorError> {
        let Some(newer) = &self.newer else {
            return self.fetch(io).map(|sk| (sk, None));
        };
        let epk = self.epk(&self.wrap)?;
        // Another device's record: a damaged one is only left out.
        let newer_epk = self.epk(newer).ok();
        let yk = self.open(io)?;
        let (x, y) = key_agreement_pair(yk, &self.agreement(), &epk, newer_epk.as_ref(), io)?;
        let sk = self.open_sealed(&self.wrap, &x)?;
        let newer_sk = y
            .and_then(|y| self.open_sealed(newer, &y).ok())
            .filter(|n| n.expose_compact() != sk.expose_compact());
        Ok((sk, newer_sk))
    }
}

impl YubiKeyProtector {
    /// The ephemeral key of `w`, uncompressed.
    fn epk(&self, w: &PivWrap) -> Result<[u8; 65], ProtectorError> {
        piv::uncompress(&w.epk).map_err(|_| {
            ProtectorError::Failed(format!(
                "the vault's record for YubiKey {} slot {:02x} is damaged (bad ephemeral key)",
                w.serial, w.slot
            ))
        })
    }

    /// Opens the Secret Key sealed in `w` with the card's answer `x`.
    fn open_sealed(&self, w: &PivWrap, x: &SecretArray<32>) -> Result<SecretKey, ProtectorError> {
        let (serial, slot) = (w.serial, w.slot);
        let key = piv::wrap_key(x.expose(), &w.epk, &w.card_pk);
        let sk = piv::open_secret_key(&key, &self.account, serial, slot, &w.sealed).map_err(|_| {
            ProtectorError::Failed(format!(
                "YubiKey {serial} answered, but its answer does not open the Secret Key sealed in \
                 the vault for it (the record was damaged or replaced); unlock another way and \
                 re-enroll the card"
            ))
        })?;
        if sk.account_id() != self.account {
            return Err(ProtectorError::Failed(format!(
                "the Secret Key sealed for YubiKey {serial} belongs to another account"
            )));
        }
        Ok(sk)
    }
}

// ------------------------------------------------------------ key agreement

/// A P-256 key on a card that keyward does ECDH with (the protector's key,
/// an organizer key), and the words its prompt and errors use.
pub(crate) struct CardAgreement<'a> {
    /// Card serial.
    pub serial: u32,
    /// PIV slot.
    pub slot: u8,
    /// The public key the slot must hold (compressed SEC1).
    pub card_pk: &'a [u8; 33],
    /// Touch policy as the card encodes it (for the "touch" notice).
    pub touch_policy: u8,
    /// The PIN, given up front; else asked through [`UnlockIo`].
    pub pin: Option<&'a Secret>,
    /// What the PIN prompt says, e.g. `PIN of YubiKey 123` (the tries left
    /// are added when few remain).
    pub pin_label: String,
    /// The key the slot should hold, for errors: "the key this vault was
    /// enrolled with".
    pub key_name: &'a str,
    /// What to do when the slot holds another key, or none.
    pub gone_advice: String,
    /// How to try again after a missed touch ("unlock again").
    pub again: &'a str,
}

/// ECDH on an opened card with the key `a` names and the peer point `epk`
/// (uncompressed SEC1): checks that the slot holds that key (no PIN try is
/// spent on a card that cannot answer right), verifies the PIN (given, or
/// asked through `io`), tells the user to touch if needed, and has the card
/// compute the shared secret (PIV GENERAL AUTHENTICATE). Returns its
/// x-coordinate. The card handle is dropped (which resets the card,
/// forgetting the PIN) as soon as the card has answered.
pub(crate) fn key_agreement(
    yk: YubiKey,
    a: &CardAgreement<'_>,
    epk: &[u8; 65],
    io: &dyn UnlockIo,
) -> Result<SecretArray<32>, ProtectorError> {
    key_agreement_pair(yk, a, epk, None, io).map(|(x, _)| x)
}

/// [`key_agreement`] with `epk`, then (in the same PIN session) with
/// `second` if given: the second answer is `None` when the card refuses it
/// (a point from another device's record is not trusted to be one the card
/// takes).
fn key_agreement_pair(
    mut yk: YubiKey,
    a: &CardAgreement<'_>,
    epk: &[u8; 65],
    second: Option<&[u8; 65]>,
    io: &dyn UnlockIo,
) -> Result<(SecretArray<32>, Option<SecretArray<32>>), ProtectorError> {
    let serial = a.serial;
    let slot_id = check_slot_key(&mut yk, a)?;
    let tries = pin_tries_left(&mut yk);
    if tries == Some(0) {
        return Err(ProtectorError::PinBlocked { serial });
    }
    let pin = match a.pin {
        Some(p) => Zeroizing::new(p.expose().to_vec()),
        None => {
            let label = &a.pin_label;
            let message = match tries {
                Some(1) => format!("{label} (last try before it is blocked)"),
                Some(t) if t < 3 => format!("{label} ({t} tries left)"),
                _ => label.clone(),
            };
            prompt_pin(io, &message)?
        }
    };
    check_pin_length(serial, &pin)?;
    verify_pin(&mut yk, serial, &pin)?;
    // Kept for a second agreement only (a PIN policy of "always" asks
    // for it before each one).
    let pin = second.map(|_| pin);

    let touch = Touch::from_code(a.touch_policy).unwrap_or(Touch::Never);
    match touch {
        Touch::Never => {}
        Touch::Always => io.notice(&format!("Touch your YubiKey {serial} (it is blinking)…")),
        Touch::Cached => io.notice(&format!("Touch your YubiKey {serial} if it is blinking…")),
    }
    let shared = ykpiv::decrypt_data(&mut yk, epk, AlgorithmId::EccP256, slot_id);
    let other = match (&shared, second, &pin) {
        // The first agreement stands whatever happens to the second.
        (Ok(_), Some(p), Some(pin)) if verify_pin(&mut yk, serial, pin).is_ok() => {
            if touch == Touch::Always {
                io.notice(&format!(
                    "Touch your YubiKey {serial} once more (for the Secret Key another device \
                     sealed for it)…"
                ));
            }
            ykpiv::decrypt_data(&mut yk, p, AlgorithmId::EccP256, slot_id)
                .ok()
                .and_then(|s| SecretArray::<32>::from_slice(&s))
        }
        _ => None,
    };
    drop(pin);
    // Done with the card: the drop resets it, which forgets the PIN.
    drop(yk);
    let shared = shared.map_err(|e| match e {
        YkError::AuthenticationError if touch != Touch::Never => ProtectorError::Failed(format!(
            "timed out waiting for a touch on YubiKey {serial}; {} and touch the key when it \
             blinks",
            a.again
        )),
        YkError::AuthenticationError => ProtectorError::Failed(format!(
            "YubiKey {serial} refused the key agreement (security status not satisfied: was the \
             card reset by another program?); try again"
        )),
        e => card_error(serial, "use", e),
    })?;
    let shared = SecretArray::<32>::from_slice(&shared).ok_or_else(|| {
        ProtectorError::Failed(format!(
            "YubiKey {serial} returned a malformed key agreement result"
        ))
    })?;
    Ok((shared, other))
}

/// The slot must still hold the key `a` names; its slot id.
fn check_slot_key(yk: &mut YubiKey, a: &CardAgreement<'_>) -> Result<SlotId, ProtectorError> {
    let (serial, slot) = (a.serial, a.slot);
    let id = SlotId::try_from(slot).map_err(|_| {
        ProtectorError::Failed(format!(
            "the vault's YubiKey record names slot {slot:02x}, which is not a PIV key slot (damaged?)"
        ))
    })?;
    let gone = |what: &str| {
        ProtectorError::Failed(format!(
            "slot {slot:02x} of YubiKey {serial} {what}, not {} (was the PIV applet reset or the \
             slot reused?); {}",
            a.key_name, a.gone_advice
        ))
    };
    match ykpiv::metadata(yk, id) {
        Ok(m) => {
            let point = m
                .public
                .as_ref()
                .map(|spki| spki.subject_public_key.raw_bytes().to_vec())
                .unwrap_or_default();
            match piv::compress(&point) {
                Ok(c) if &c == a.card_pk => Ok(id),
                _ => Err(gone("holds another key")),
            }
        }
        Err(YkError::GenericError) => Err(gone("is empty")),
        Err(YkError::NotSupported) => Ok(id), // firmware < 5.3: ECDH will tell
        Err(e @ YkError::PcscError { .. }) => Err(card_error(serial, "read", e)),
        Err(_) => Err(gone("holds another kind of key")),
    }
}

// ------------------------------------------------------------------ helpers

/// Opens every YubiKey present (possibly none).
fn open_all() -> Result<Vec<YubiKey>, ProtectorError> {
    let mut ctx = match ::yubikey::reader::Context::open() {
        Ok(c) => c,
        Err(YkError::PcscError {
            inner: Some(pcsc::Error::NoReadersAvailable),
        }) => return Ok(Vec::new()),
        Err(e) => return Err(pcsc_unavailable(e, "no YubiKey is reachable")),
    };
    let readers = match ctx.iter() {
        Ok(r) => r,
        Err(YkError::PcscError {
            inner: Some(pcsc::Error::NoReadersAvailable),
        }) => return Ok(Vec::new()),
        Err(e) => return Err(pcsc_unavailable(e, "no YubiKey is reachable")),
    };
    Ok(readers.filter_map(|r| r.open().ok()).collect())
}

/// The only YubiKey present.
fn open_only() -> Result<YubiKey, ProtectorError> {
    let mut cards = open_all()?;
    match cards.len() {
        0 => Err(ProtectorError::Unavailable(
            "no YubiKey is inserted (or it is in use by another program); insert one and try again"
                .into(),
        )),
        1 => cards
            .pop()
            .ok_or_else(|| ProtectorError::Failed("no YubiKey".into())),
        _ => {
            let mut serials: Vec<u32> = cards.iter().map(|c| c.serial().0).collect();
            serials.sort_unstable();
            for c in cards {
                let _ = c.disconnect(pcsc::Disposition::LeaveCard);
            }
            let list = serials
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            Err(ProtectorError::Failed(format!(
                "several YubiKeys are present (serials {list}): pick one with --serial"
            )))
        }
    }
}

pub(crate) fn open_raw(serial: u32) -> Result<YubiKey, YkError> {
    YubiKey::open_by_serial(Serial(serial))
}

pub(crate) fn is_absent(e: &YkError) -> bool {
    matches!(
        e,
        YkError::NotFound
            | YkError::PcscError {
                inner: Some(pcsc::Error::NoReadersAvailable),
            }
    )
}

fn open_serial(serial: u32) -> Result<YubiKey, ProtectorError> {
    open_raw(serial).map_err(|e| open_error(serial, e))
}

pub(crate) fn open_error(serial: u32, e: YkError) -> ProtectorError {
    match e {
        e if is_absent(&e) => ProtectorError::Unavailable(format!(
            "YubiKey {serial} is not inserted; insert it and try again, or unlock with another protector"
        )),
        YkError::PcscError {
            inner: Some(pcsc::Error::SharingViolation),
        } => ProtectorError::Unavailable(format!(
            "YubiKey {serial} is in use by another program (GnuPG's scdaemon holds cards: \
             `gpgconf --kill scdaemon`); try again"
        )),
        e => pcsc_unavailable(e, &format!("YubiKey {serial} is not reachable")),
    }
}

/// PC/SC-level failures: the service is missing (unavailable) or something else.
fn pcsc_unavailable(e: YkError, what: &str) -> ProtectorError {
    match e {
        YkError::PcscError {
            inner: Some(pcsc::Error::NoService | pcsc::Error::ServiceStopped),
        } => ProtectorError::Unavailable(format!(
            "{what}: the smart card service (pcscd) is not running; install and start it \
             (Debian: `apt install pcscd`)"
        )),
        e => ProtectorError::Failed(format!("{what}: {e}")),
    }
}

/// An error while talking to an opened card.
pub(crate) fn card_error(serial: u32, action: &str, e: YkError) -> ProtectorError {
    match e {
        YkError::PcscError {
            inner:
                Some(
                    pcsc::Error::RemovedCard
                    | pcsc::Error::ResetCard
                    | pcsc::Error::NoSmartcard
                    | pcsc::Error::ReaderUnavailable,
                ),
        } => ProtectorError::Unavailable(format!(
            "YubiKey {serial} was removed (or reset by another program) while in use; insert it and try \
             again"
        )),
        e => ProtectorError::Failed(format!("could not {action} YubiKey {serial}: {e}")),
    }
}

pub(crate) fn prompt_pin(
    io: &dyn UnlockIo,
    message: &str,
) -> Result<Zeroizing<Vec<u8>>, ProtectorError> {
    let answer = io
        .prompt(PromptKind::Pin, message)
        .ok_or(ProtectorError::Cancelled)?;
    Ok(Zeroizing::new(answer.expose().to_vec()))
}

fn pin_length_ok(pin: &[u8]) -> bool {
    (6..=8).contains(&pin.len())
}

/// A PIN of the wrong length is refused here, before it costs a try on the card.
pub(crate) fn check_pin_length(serial: u32, pin: &[u8]) -> Result<(), ProtectorError> {
    if pin.is_empty() {
        return Err(ProtectorError::Cancelled);
    }
    if pin_length_ok(pin) {
        Ok(())
    } else {
        Err(ProtectorError::Failed(format!(
            "a YubiKey PIN has 6 to 8 characters; no try of YubiKey {serial} was used"
        )))
    }
}

pub(crate) fn verify_pin(yk: &mut YubiKey, serial: u32, pin: &[u8]) -> Result<(), ProtectorError> {
    yk.verify_pin(pin)
        .map_err(|e| pin_error(serial, e, "verify the PIN of"))
}

/// Maps the PIN outcomes of the card to protector errors.
fn pin_error(serial: u32, e: YkError, action: &str) -> ProtectorError {
    match e {
        YkError::WrongPin { tries: 0 } | YkError::PinLocked => {
            ProtectorError::PinBlocked { serial }
        }
        YkError::WrongPin { tries } => ProtectorError::WrongPin {
            serial,
            tries_left: tries,
        },
        e => card_error(serial, action, e),
    }
}

/// PIN tries left, without spending one: from metadata (firmware ≥ 5.3), else
/// the VERIFY status query.
pub(crate) fn pin_tries_left(yk: &mut YubiKey) -> Option<u8> {
    match ykpiv::metadata(yk, SlotId::Management(ManagementSlotId::Pin)) {
        Ok(m) => m.retries.map(|r| r.remaining_count),
        Err(_) => yk.get_pin_retries().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_codes_names_and_parsing() {
        for t in [Touch::Never, Touch::Always, Touch::Cached] {
            assert_eq!(Touch::from_code(t.code()), Some(t));
            assert_eq!(t.name().parse::<Touch>(), Ok(t));
            assert_eq!(touch_policy_name(t.code()), t.name());
        }
        assert_eq!(
            (
                Touch::Never.code(),
                Touch::Always.code(),
                Touch::Cached.code()
            ),
            (1, 2, 3)
        );
        assert_eq!("ALWAYS".parse::<Touch>(), Ok(Touch::Always));
        assert!("sometimes".parse::<Touch>().is_err());
        assert_eq!(Touch::from_code(0), None);
        assert_eq!(Touch::default(), Touch::Never);
        assert_eq!(touch_policy_name(9), "unknown (9)");
        assert_eq!(pin_policy_name(PIN_POLICY_ONCE), "once");
        assert_eq!(pin_policy_name(1), "never");
        assert_eq!(pin_policy_name(3), "always");
    }

    #[test]
    fn ids_and_slots() {
        assert_eq!(protector_id(12_345_678, 0x82), "yubikey:12345678:82");
        assert_eq!(protector_id(7, 0x9a), "yubikey:7:9a");
        for s in RETIRED_SLOTS.chain([0x9a, 0x9c, 0x9d, 0x9e]) {
            check_slot_number(s).unwrap();
            assert!(SlotId::try_from(s).is_ok());
        }
        for s in [0x00, 0x80, 0x81, 0x9b, 0x96, 0xf9, 0xff] {
            assert!(check_slot_number(s).is_err(), "{s:02x}");
        }
        assert_eq!(RETIRED_SLOTS.count(), 20);
    }

    #[test]
    fn management_keys_are_parsed_from_hex() {
        let default = "010203040506070801020304050607080102030405060708";
        assert!(parse_management_key(default.as_bytes()).is_ok());
        assert!(
            parse_management_key(b"01:02:03:04:05:06:07:08 01020304050607080102030405060708\n")
                .is_ok()
        );
        assert!(parse_management_key(b"0102").is_err(), "short");
        assert!(
            parse_management_key(format!("{default}00").as_bytes()).is_err(),
            "long"
        );
        assert!(
            parse_management_key(format!("{default}0").as_bytes()).is_err(),
            "odd"
        );
        assert!(parse_management_key(&[b'g'; 48]).is_err(), "not hex");
        // AES-128 (32 digits) and AES-256 (64 digits) are refused.
        assert!(parse_management_key(&[b'1'; 32]).is_err());
        assert!(parse_management_key(&[b'1'; 64]).is_err());
        // A weak 3DES key (all key parts equal, odd parity) is refused.
        let err = match parse_management_key(&[b'0', b'1'].repeat(24)) {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        assert!(err.contains("weak"), "{err}");
        // Errors never echo the input.
        let err = match parse_management_key(b"secret-ish input") {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        assert!(!err.contains("secret-ish"), "{err}");
    }

    #[test]
    fn pin_lengths_and_pin_errors() {
        assert!(pin_length_ok(b"123456") && pin_length_ok(b"12345678"));
        assert!(!pin_length_ok(b"12345") && !pin_length_ok(b"123456789"));
        assert!(matches!(
            check_pin_length(1, b""),
            Err(ProtectorError::Cancelled)
        ));
        let e = check_pin_length(42, b"12").unwrap_err().to_string();
        assert!(
            e.contains("6 to 8") && e.contains("42") && !e.contains("12\""),
            "{e}"
        );
        assert!(matches!(
            pin_error(7, YkError::WrongPin { tries: 2 }, "x"),
            ProtectorError::WrongPin {
                serial: 7,
                tries_left: 2
            }
        ));
        assert!(matches!(
            pin_error(7, YkError::WrongPin { tries: 0 }, "x"),
            ProtectorError::PinBlocked { serial: 7 }
        ));
        assert!(matches!(
            pin_error(7, YkError::PinLocked, "x"),
            ProtectorError::PinBlocked { serial: 7 }
        ));
        assert!(matches!(
            pin_error(
                7,
                YkError::PcscError {
                    inner: Some(pcsc::Error::RemovedCard)
                },
                "x"
            ),
            ProtectorError::Unavailable(_)
        ));
        assert!(is_yes(b"y") && is_yes(b" Yes\n") && !is_yes(b"n") && !is_yes(b""));
    }

    #[test]
    fn pcsc_errors_say_what_to_do() {
        let e = pcsc_unavailable(
            YkError::PcscError {
                inner: Some(pcsc::Error::NoService),
            },
            "YubiKey 5 is not reachable",
        );
        assert!(
            matches!(&e, ProtectorError::Unavailable(m) if m.contains("pcscd")),
            "{e}"
        );
        let e = aes_management_key(9, "5.7.1").to_string();
        assert!(
            e.contains("ykman piv access change-management-key -a TDES") && e.contains("5.7.1"),
            "{e}"
        );
    }

    #[test]
    fn errors_after_changes_say_what_was_changed() {
        let mut progress = Progress::default();
        let e = progress.explain(5, ProtectorError::Failed("no free slot".into()));
        assert_eq!(e.to_string(), "no free slot");
        progress.changed.push("its PIN was changed");
        let e = progress.explain(5, ProtectorError::Failed("no free slot".into()));
        assert_eq!(
            e.to_string(),
            "no free slot (already done on YubiKey 5: its PIN was changed)"
        );
        let e = progress.explain(5, ProtectorError::Cancelled);
        assert!(matches!(e, ProtectorError::Failed(m) if m.starts_with("cancelled (already")));
    }

    #[test]
    fn card_info_display() {
        let info = CardInfo {
            serial: 123,
            firmware: [5, 4, 3],
            reader: "Yubico YubiKey OTP+FIDO+CCID 00 00".into(),
            pin_default: Some(true),
            pin_tries_left: Some(3),
            puk_default: Some(false),
            management_key_default: Some(true),
            management_key_unsupported: false,
        };
        let s = info.to_string();
        assert!(s.contains("YubiKey 123 (firmware 5.4.3"), "{s}");
        assert!(s.contains("factory-default PIN"), "{s}");
        assert!(s.contains("factory-default management key"), "{s}");
        assert!(!s.contains("PUK"), "{s}");
    }
}
