//! Every message of the keyward protocol, version [`PROTOCOL_VERSION`].
//!
//! A payload is one tag byte and the fields in order (see [`crate::wire`] for
//! the field encodings and `docs/PROTOCOL.md` for the tables). Requests have
//! tags below `0x80`, responses `0x80` and above.

use crate::frame::MAX_FRAME;
use crate::secret::Secret;
use crate::wire::{DecodeError, Reader, Writer};
use std::fmt;

/// The protocol version this crate speaks. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 2;

/// Longest item name in bytes (UTF-8).
pub const MAX_NAME: usize = 256;
/// Largest item value in bytes.
pub const MAX_VALUE: usize = 60 * 1024;

/// Request tags.
pub mod tag {
    #![allow(missing_docs)]
    pub const HELLO: u8 = 0x01;
    pub const STATUS: u8 = 0x02;
    pub const INIT: u8 = 0x03;
    pub const UNLOCK: u8 = 0x04;
    pub const LOCK: u8 = 0x05;
    pub const GET: u8 = 0x06;
    pub const SET: u8 = 0x07;
    pub const LIST: u8 = 0x08;
    pub const REMOVE: u8 = 0x09;
    pub const CHANGE_PASSWORD: u8 = 0x0a;
    pub const RECOVERY_CODE_NEW: u8 = 0x0b;
    pub const RECOVERY_CODE_LIST: u8 = 0x0c;
    pub const RECOVERY_CODE_REVOKE: u8 = 0x0d;
    pub const RECOVER: u8 = 0x0e;
    pub const SECRET_KEY_ROTATE: u8 = 0x0f;
    pub const EMERGENCY_KIT: u8 = 0x10;
    pub const PROTECTOR_ADD: u8 = 0x11;
    pub const PROTECTOR_LIST: u8 = 0x12;
    pub const PROTECTOR_REMOVE: u8 = 0x13;
    pub const SHUTDOWN: u8 = 0x14;
    pub const PROMPT_REPLY: u8 = 0x15;
    pub const SESSION_END: u8 = 0x16;
    pub const CHECK_PASSWORD: u8 = 0x17;
    pub const CHECK_RECOVERY_CODE: u8 = 0x18;
    pub const BACKUP: u8 = 0x19;
    pub const RESTORE: u8 = 0x1a;
    pub const RENAME: u8 = 0x1b;
    pub const ORGANIZER_CREATE: u8 = 0x1c;
    pub const ORGANIZER_SHOW: u8 = 0x1d;
    pub const ORGANIZER_CHECK: u8 = 0x1e;
    pub const ORGANIZER_ADD: u8 = 0x1f;
    pub const ORGANIZER_LIST: u8 = 0x20;
    pub const ORGANIZER_REMOVE: u8 = 0x21;
    pub const ORGANIZER_RECOVER: u8 = 0x22;
    pub const RECOVER_WITH_GRANT: u8 = 0x23;
    pub const SSH_GENERATE: u8 = 0x24;
    pub const SSH_IMPORT: u8 = 0x25;
    pub const SSH_LIST: u8 = 0x26;
    pub const SSH_REMOVE: u8 = 0x27;
    pub const SSH_APPROVE: u8 = 0x28;
    pub const SSH_GENERATE_CARD: u8 = 0x29;
    pub const ORGANIZER_CREATE_CARD: u8 = 0x2a;
    pub const ORGANIZER_RECOVER_CARD: u8 = 0x2b;
    pub const JOIN: u8 = 0x2c;
    pub const SYNC: u8 = 0x2d;
    pub const MERGE_FILES: u8 = 0x2e;
    pub const DEVICE_LIST: u8 = 0x2f;
    pub const DEVICE_RENAME: u8 = 0x30;
    pub const DEVICE_REMOVE: u8 = 0x31;
    pub const REKEY: u8 = 0x32;

    pub const HELLO_OK: u8 = 0x80;
    pub const OK: u8 = 0x81;
    pub const STATUS_INFO: u8 = 0x82;
    pub const VALUE: u8 = 0x83;
    pub const ITEMS: u8 = 0x84;
    pub const CREATED: u8 = 0x85;
    pub const UNLOCKED: u8 = 0x86;
    pub const RECOVERY_CODE: u8 = 0x87;
    pub const RECOVERY_CODES: u8 = 0x88;
    pub const NEW_SECRET_KEY: u8 = 0x89;
    pub const KIT: u8 = 0x8a;
    pub const PROTECTORS: u8 = 0x8b;
    pub const PROTECTOR_ADDED: u8 = 0x8c;
    pub const PROMPT: u8 = 0x8d;
    pub const NOTICE: u8 = 0x8e;
    pub const STILL_IN_USE: u8 = 0x8f;
    pub const ITEMS_PART: u8 = 0x90;
    pub const BACKED_UP: u8 = 0x91;
    pub const RESTORED: u8 = 0x92;
    pub const ORGANIZER_KEY: u8 = 0x93;
    pub const ORGANIZERS: u8 = 0x94;
    pub const ORGANIZER_CHANGED: u8 = 0x95;
    pub const GRANT_MADE: u8 = 0x96;
    pub const SSH_KEYS: u8 = 0x97;
    pub const ORGANIZER_CARD_KEY: u8 = 0x98;
    pub const SYNCED: u8 = 0x99;
    pub const DEVICES: u8 = 0x9a;
    pub const REKEYED: u8 = 0x9b;
    pub const ERROR: u8 = 0xff;
}

/// `Init`: create the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitRequest {
    /// The Master Password.
    pub password: Secret,
    /// Where to keep the Secret Key: `auto`, `file`, `keychain` or `none`.
    pub protector: String,
}

/// `Unlock`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnlockRequest {
    /// The Master Password.
    pub password: Secret,
    /// The Secret Key as typed, if the user gives it (protector `none`).
    pub secret_key: Option<Secret>,
    /// A YubiKey PIN given up front (scripts); otherwise the agent prompts.
    pub pin: Option<Secret>,
    /// Use only this protector: `yubikey`, `yubikey:SERIAL`, `keychain`, `file`, `none`.
    pub with: Option<String>,
}

/// `ProtectorAdd`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProtectorAddRequest {
    /// `yubikey`, `keychain` or `file`.
    pub kind: String,
    /// YubiKey serial (required when several cards are present).
    pub serial: Option<u32>,
    /// PIV slot (default: the first free retired slot).
    pub slot: Option<u8>,
    /// Touch policy: `never`, `always`, `cached`.
    pub touch: Option<String>,
    /// The card's PIN, given up front.
    pub pin: Option<Secret>,
    /// The card's management key (hex), given up front.
    pub management_key: Option<Secret>,
    /// The Master Password: enrolling a protector puts the Secret Key
    /// somewhere new, so it is asked for and a wrong one counts.
    pub password: Secret,
}

/// A request from a client.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// First message on every connection.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        protocol: u16,
        /// The client's name and version, e.g. `keyward 0.1.0`.
        client: String,
    },
    /// State of the agent; does not reset the idle timer.
    Status,
    /// Create the account.
    Init(InitRequest),
    /// Unlock.
    Unlock(UnlockRequest),
    /// Lock now.
    Lock,
    /// An item's value.
    Get {
        /// Item name.
        name: String,
    },
    /// Create or replace an item.
    Set {
        /// Item name.
        name: String,
        /// Value.
        value: Secret,
    },
    /// Item names.
    List,
    /// Delete an item.
    Remove {
        /// Item name.
        name: String,
    },
    /// Change the Master Password.
    ChangePassword {
        /// The current password.
        old: Secret,
        /// The new password.
        new: Secret,
    },
    /// Make a recovery code (re-asks the password).
    RecoveryCodeNew {
        /// The Master Password.
        password: Secret,
    },
    /// List recovery codes (ids and dates only).
    RecoveryCodeList,
    /// Revoke a recovery code (re-asks the password).
    RecoveryCodeRevoke {
        /// Its id (hex, or a unique prefix).
        id: String,
        /// The Master Password.
        password: Secret,
    },
    /// Recover with a code: new Secret Key, new password.
    Recover {
        /// The recovery code as typed.
        code: Secret,
        /// The new Master Password.
        new_password: Secret,
    },
    /// Issue a new Secret Key (re-asks the password).
    SecretKeyRotate {
        /// The Master Password.
        password: Secret,
    },
    /// What the Emergency Kit needs (re-asks the password).
    EmergencyKit {
        /// The Master Password.
        password: Secret,
    },
    /// Enroll a protector.
    ProtectorAdd(ProtectorAddRequest),
    /// List protectors.
    ProtectorList,
    /// Remove a protector (re-asks the password).
    ProtectorRemove {
        /// Its id.
        id: String,
        /// The Master Password.
        password: Secret,
    },
    /// Lock and stop the agent.
    Shutdown,
    /// The answer to a [`Response::Prompt`]; `None` cancels.
    PromptReply {
        /// The answer.
        answer: Option<Secret>,
    },
    /// A login session of the user is ending (sent by `pam_keyward` with
    /// `lock_on_close`): lock, unless the user still has another login
    /// session open (asked of logind). Answered by `Ok` (locked) or
    /// [`Response::StillInUse`].
    SessionEnd {
        /// The ending session's logind id (`XDG_SESSION_ID`), if it has one.
        session: Option<String>,
    },
    /// Is this the Master Password? (Unlocked; a wrong one counts as a
    /// failed attempt.) Lets a client check the current password before it
    /// asks for a new one. Answered by `Ok`.
    CheckPassword {
        /// The Master Password.
        password: Secret,
    },
    /// Does this recovery code open this vault? (Works while locked; a
    /// wrong one counts as a failed attempt, a typo does not.) Lets a
    /// client check the code before it asks for a new password. Answered
    /// by `Ok`.
    CheckRecoveryCode {
        /// The recovery code as typed.
        code: Secret,
    },
    /// Writes a copy of the vault file to `out` (an absolute path), after
    /// checking it with the keys in memory. Answered by `BackedUp`.
    Backup {
        /// Where (created 0600, never through a symbolic link).
        out: String,
        /// Replace `out` if it exists.
        force: bool,
    },
    /// Takes the items of the backup at `path` (an absolute path) into the
    /// vault; the credentials stay. Answered by `Restored`.
    Restore {
        /// The backup.
        path: String,
        /// Also when the backup is older than the vault.
        older: bool,
    },
    /// Renames an item. Answered by `Ok`.
    Rename {
        /// The item's name.
        old: String,
        /// Its new name.
        new: String,
    },
    /// Makes this account's organizer key (at most one). Answered by
    /// `OrganizerKey`.
    OrganizerCreate,
    /// This account's organizer recipient. Answered by `OrganizerKey`.
    OrganizerShow,
    /// Parses a recipient (typos caught by its check) and gives its
    /// fingerprint, for the user to confirm before `OrganizerAdd`.
    /// Answered by `OrganizerKey`.
    OrganizerCheck {
        /// The recipient as typed (`kwo1-…`).
        recipient: String,
    },
    /// Enrolls an organizer: the account key sealed to its public key
    /// (re-asks the password). Answered by `OrganizerChanged`.
    OrganizerAdd {
        /// The recipient as typed (`kwo1-…`).
        recipient: String,
        /// A name for people (may be empty).
        name: String,
        /// The Master Password.
        password: Secret,
    },
    /// The organizers this account is enrolled with. Answered by `Organizers`.
    OrganizerList,
    /// Removes an organizer by fingerprint or name (re-asks the password).
    /// Answered by `OrganizerChanged`.
    OrganizerRemove {
        /// Its fingerprint, or its name.
        which: String,
        /// The Master Password.
        password: Secret,
    },
    /// For an organizer: opens a member's vault copy with the organizer key
    /// and makes a recovery grant (re-asks the password). Answered by
    /// `GrantMade`.
    OrganizerRecover {
        /// The member's vault file (an absolute path).
        vault: String,
        /// Hours until the grant expires.
        expires_hours: u32,
        /// The organizer's Master Password.
        password: Secret,
    },
    /// For a member: recovers with a grant and its code: new Secret Key,
    /// new password. Answered by `NewSecretKey`.
    RecoverWithGrant {
        /// The grant file's text.
        grant: String,
        /// The grant code as typed (`GC1-…`).
        code: Secret,
        /// The new Master Password.
        new_password: Secret,
    },
    /// Makes an SSH key in the vault. Answered by `SshKeys` (the new key).
    SshGenerate {
        /// Its name in the vault.
        name: String,
        /// `ed25519`, `ecdsa` or `rsa`.
        kind: String,
        /// Key size (0: the type's default).
        bits: u32,
        /// The comment (empty: the name).
        comment: String,
    },
    /// Takes an OpenSSH private key file into the vault (the agent may
    /// prompt for its passphrase). Answered by `SshKeys` (the new key).
    SshImport {
        /// Its name in the vault (empty: the file's comment).
        name: String,
        /// The file's contents.
        file: Secret,
        /// Its passphrase, given up front.
        passphrase: Option<Secret>,
    },
    /// The SSH keys. Answered by `SshKeys`.
    SshList,
    /// Deletes an SSH key from the vault. Answered by `Ok`.
    SshRemove {
        /// Its name (or fingerprint).
        name: String,
    },
    /// Sets when the agent asks before signing with a key. Answered by `Ok`.
    SshApprove {
        /// Its name (or fingerprint).
        name: String,
        /// `never`, `once-per-process` or `always`.
        approval: String,
    },
    /// Makes an SSH key (P-256) on a YubiKey: the private key never leaves
    /// the card; the vault keeps where it is. The agent may prompt for the
    /// PIN, the management key, and about factory defaults. Answered by
    /// `SshKeys` (the new key).
    SshGenerateCard {
        /// Its name in the vault.
        name: String,
        /// The card's serial (required when several are present).
        serial: Option<u32>,
        /// The PIV slot (default 9a).
        slot: Option<u8>,
        /// Touch policy: `never`, `always`, `cached` (default never).
        touch: Option<String>,
        /// The card's PIN, given up front.
        pin: Option<Secret>,
        /// The comment (empty: the name).
        comment: String,
    },
    /// Makes this account's organizer key (at most one) on a YubiKey: a
    /// P-256 key generated on the card, which never leaves it; the vault
    /// records where it is. The agent may prompt for the PIN, the
    /// management key, and about factory defaults. Answered by
    /// `OrganizerCardKey`.
    OrganizerCreateCard {
        /// The card's serial (required when several are present).
        serial: Option<u32>,
        /// The PIV slot (default: the first free retired slot, 82..95).
        slot: Option<u8>,
        /// The card's PIN, given up front.
        pin: Option<Secret>,
    },
    /// As `OrganizerRecover`, for an organizer key on a YubiKey: the card
    /// opens the member's wrap after its PIN (given, or asked with a
    /// `Prompt`). Answered by `GrantMade`.
    OrganizerRecoverCard {
        /// The member's vault file (an absolute path).
        vault: String,
        /// Hours until the grant expires.
        expires_hours: u32,
        /// The card's PIN, given up front.
        pin: Option<Secret>,
    },
    /// Sets this device up from an existing vault (a copy, or a folder a
    /// sync engine keeps), used where it is. Only when there is no account
    /// here; a wrong Secret Key or password counts as a failed attempt.
    /// Answered by `Unlocked` (its notes say where the vault is).
    Join {
        /// The vault file, or a directory holding exactly one
        /// `vault-*.kwv` (an absolute path).
        path: String,
        /// The Master Password.
        password: Secret,
        /// The Secret Key as typed (or read from the Emergency Kit).
        secret_key: Secret,
        /// Where to keep the Secret Key on this device: `auto`, `file`,
        /// `keychain` or `none`.
        protector: String,
    },
    /// Merges now what the other devices wrote next to this device's vault
    /// (their parts, and conflict copies a sync engine made). Answered by
    /// `Synced`. Needs the unlocked vault.
    Sync,
    /// Merges two copies of this account's vault into `ours` (the git merge
    /// driver: `%A` and `%B`): both must verify under the account key.
    /// Answered by `Synced`.
    MergeFiles {
        /// The copy to merge into and write (an absolute path).
        ours: String,
        /// The other copy (an absolute path).
        theirs: String,
    },
    /// The account's devices. Answered by `Devices`.
    DeviceList,
    /// Renames a device (`this`, or an id or a unique prefix of it).
    DeviceRename {
        /// Which.
        device: String,
        /// The new name (1..=64 bytes, no control characters).
        name: String,
    },
    /// Removes another device from the account: its protector records go,
    /// and its next unlock is refused. Answered by `Devices`.
    DeviceRemove {
        /// An id or a unique prefix of it.
        device: String,
    },
    /// Draws a new account key and seals the vault again under it (the
    /// Master Password is checked, counted). Answered by `Rekeyed`.
    Rekey {
        /// The Master Password.
        password: Secret,
    },
}

impl fmt::Debug for Request {
    /// Names the request and its non-secret fields only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Hello { protocol, client } => write!(f, "Hello({protocol}, {client:?})"),
            Request::Get { name } => write!(f, "Get({name:?})"),
            Request::Set { name, value } => write!(f, "Set({name:?}, {value:?})"),
            Request::Remove { name } => write!(f, "Remove({name:?})"),
            Request::RecoveryCodeRevoke { id, .. } => write!(f, "RecoveryCodeRevoke({id:?})"),
            Request::ProtectorRemove { id, .. } => write!(f, "ProtectorRemove({id:?})"),
            Request::OrganizerCheck { recipient } => write!(f, "OrganizerCheck({recipient:?})"),
            Request::OrganizerAdd {
                recipient, name, ..
            } => write!(f, "OrganizerAdd({recipient:?}, {name:?})"),
            Request::OrganizerRemove { which, .. } => write!(f, "OrganizerRemove({which:?})"),
            Request::SshGenerate { name, kind, .. } => write!(f, "SshGenerate({name:?}, {kind})"),
            Request::SshImport { name, .. } => write!(f, "SshImport({name:?})"),
            Request::SshRemove { name } => write!(f, "SshRemove({name:?})"),
            Request::SshGenerateCard { name, serial, .. } => {
                write!(f, "SshGenerateCard({name:?}, {serial:?})")
            }
            Request::OrganizerRecover {
                vault,
                expires_hours,
                ..
            } => write!(f, "OrganizerRecover({vault:?}, {expires_hours})"),
            Request::OrganizerCreateCard { serial, slot, .. } => {
                write!(f, "OrganizerCreateCard({serial:?}, {slot:?})")
            }
            Request::OrganizerRecoverCard {
                vault,
                expires_hours,
                ..
            } => write!(f, "OrganizerRecoverCard({vault:?}, {expires_hours})"),
            Request::Join {
                path, protector, ..
            } => write!(f, "Join({path:?}, {protector})"),
            Request::MergeFiles { ours, theirs } => write!(f, "MergeFiles({ours:?}, {theirs:?})"),
            Request::DeviceRename { device, name } => write!(f, "DeviceRename({device}, {name:?})"),
            Request::DeviceRemove { device } => write!(f, "DeviceRemove({device})"),
            other => f.write_str(other.name()),
        }
    }
}

impl Request {
    /// The request's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "Hello",
            Request::Status => "Status",
            Request::Init(_) => "Init",
            Request::Unlock(_) => "Unlock",
            Request::Lock => "Lock",
            Request::Get { .. } => "Get",
            Request::Set { .. } => "Set",
            Request::List => "List",
            Request::Remove { .. } => "Remove",
            Request::ChangePassword { .. } => "ChangePassword",
            Request::RecoveryCodeNew { .. } => "RecoveryCodeNew",
            Request::RecoveryCodeList => "RecoveryCodeList",
            Request::RecoveryCodeRevoke { .. } => "RecoveryCodeRevoke",
            Request::Recover { .. } => "Recover",
            Request::SecretKeyRotate { .. } => "SecretKeyRotate",
            Request::EmergencyKit { .. } => "EmergencyKit",
            Request::ProtectorAdd(_) => "ProtectorAdd",
            Request::ProtectorList => "ProtectorList",
            Request::ProtectorRemove { .. } => "ProtectorRemove",
            Request::Shutdown => "Shutdown",
            Request::PromptReply { .. } => "PromptReply",
            Request::SessionEnd { .. } => "SessionEnd",
            Request::CheckPassword { .. } => "CheckPassword",
            Request::CheckRecoveryCode { .. } => "CheckRecoveryCode",
            Request::Backup { .. } => "Backup",
            Request::Restore { .. } => "Restore",
            Request::Rename { .. } => "Rename",
            Request::OrganizerCreate => "OrganizerCreate",
            Request::OrganizerShow => "OrganizerShow",
            Request::OrganizerCheck { .. } => "OrganizerCheck",
            Request::OrganizerAdd { .. } => "OrganizerAdd",
            Request::OrganizerList => "OrganizerList",
            Request::OrganizerRemove { .. } => "OrganizerRemove",
            Request::OrganizerRecover { .. } => "OrganizerRecover",
            Request::RecoverWithGrant { .. } => "RecoverWithGrant",
            Request::SshGenerate { .. } => "SshGenerate",
            Request::SshImport { .. } => "SshImport",
            Request::SshList => "SshList",
            Request::SshRemove { .. } => "SshRemove",
            Request::SshApprove { .. } => "SshApprove",
            Request::SshGenerateCard { .. } => "SshGenerateCard",
            Request::OrganizerCreateCard { .. } => "OrganizerCreateCard",
            Request::OrganizerRecoverCard { .. } => "OrganizerRecoverCard",
            Request::Join { .. } => "Join",
            Request::Sync => "Sync",
            Request::MergeFiles { .. } => "MergeFiles",
            Request::DeviceList => "DeviceList",
            Request::DeviceRename { .. } => "DeviceRename",
            Request::DeviceRemove { .. } => "DeviceRemove",
            Request::Rekey { .. } => "Rekey",
        }
    }

    /// Whether this request counts as activity for the idle timer.
    pub fn is_activity(&self) -> bool {
        !matches!(
            self,
            Request::Hello { .. } | Request::Status | Request::SessionEnd { .. }
        )
    }

    /// Encodes a whole frame (length prefix and payload). The second value
    /// says whether it holds secrets (the caller then zeroizes the buffer
    /// after sending it).
    pub fn encode(&self) -> (Vec<u8>, bool) {
        use tag::*;
        let w = match self {
            Request::Hello { protocol, client } => {
                let mut w = Writer::new(HELLO);
                w.u16(*protocol);
                w.str(client);
                w
            }
            Request::Status => Writer::new(STATUS),
            Request::Init(r) => {
                let mut w = Writer::new(INIT);
                w.secret(&r.password);
                w.str(&r.protector);
                w
            }
            Request::Unlock(r) => {
                let mut w = Writer::new(UNLOCK);
                w.secret(&r.password);
                w.opt(r.secret_key.as_ref(), Writer::secret);
                w.opt(r.pin.as_ref(), Writer::secret);
                w.opt(r.with.as_ref(), |w, s| w.str(s));
                w
            }
            Request::Lock => Writer::new(LOCK),
            Request::Get { name } => {
                let mut w = Writer::new(GET);
                w.str(name);
                w
            }
            Request::Set { name, value } => {
                let mut w = Writer::new(SET);
                w.str(name);
                w.secret(value);
                w
            }
            Request::List => Writer::new(LIST),
            Request::Remove { name } => {
                let mut w = Writer::new(REMOVE);
                w.str(name);
                w
            }
            Request::ChangePassword { old, new } => {
                let mut w = Writer::new(CHANGE_PASSWORD);
                w.secret(old);
                w.secret(new);
                w
            }
            Request::RecoveryCodeNew { password } => {
                let mut w = Writer::new(RECOVERY_CODE_NEW);
                w.secret(password);
                w
            }
            Request::RecoveryCodeList => Writer::new(RECOVERY_CODE_LIST),
            Request::RecoveryCodeRevoke { id, password } => {
                let mut w = Writer::new(RECOVERY_CODE_REVOKE);
                w.str(id);
                w.secret(password);
                w
            }
            Request::Recover { code, new_password } => {
                let mut w = Writer::new(RECOVER);
                w.secret(code);
                w.secret(new_password);
                w
            }
            Request::SecretKeyRotate { password } => {
                let mut w = Writer::new(SECRET_KEY_ROTATE);
                w.secret(password);
                w
            }
            Request::EmergencyKit { password } => {
                let mut w = Writer::new(EMERGENCY_KIT);
                w.secret(password);
                w
            }
            Request::ProtectorAdd(r) => {
                let mut w = Writer::new(PROTECTOR_ADD);
                w.str(&r.kind);
                w.opt(r.serial.as_ref(), |w, v| w.u32(*v));
                w.opt(r.slot.as_ref(), |w, v| w.u8(*v));
                w.opt(r.touch.as_ref(), |w, s| w.str(s));
                w.opt(r.pin.as_ref(), Writer::secret);
                w.opt(r.management_key.as_ref(), Writer::secret);
                w.secret(&r.password);
                w
            }
            Request::ProtectorList => Writer::new(PROTECTOR_LIST),
            Request::ProtectorRemove { id, password } => {
                let mut w = Writer::new(PROTECTOR_REMOVE);
                w.str(id);
                w.secret(password);
                w
            }
            Request::Shutdown => Writer::new(SHUTDOWN),
            Request::PromptReply { answer } => {
                let mut w = Writer::new(PROMPT_REPLY);
                w.opt(answer.as_ref(), Writer::secret);
                w
            }
            Request::SessionEnd { session } => {
                let mut w = Writer::new(SESSION_END);
                w.opt(session.as_ref(), |w, s| w.str(s));
                w
            }
            Request::CheckPassword { password } => {
                let mut w = Writer::new(CHECK_PASSWORD);
                w.secret(password);
                w
            }
            Request::CheckRecoveryCode { code } => {
                let mut w = Writer::new(CHECK_RECOVERY_CODE);
                w.secret(code);
                w
            }
            Request::Backup { out, force } => {
                let mut w = Writer::new(BACKUP);
                w.str(out);
                w.bool(*force);
                w
            }
            Request::Restore { path, older } => {
                let mut w = Writer::new(RESTORE);
                w.str(path);
                w.bool(*older);
                w
            }
            Request::Rename { old, new } => {
                let mut w = Writer::new(RENAME);
                w.str(old);
                w.str(new);
                w
            }
            Request::OrganizerCreate => Writer::new(ORGANIZER_CREATE),
            Request::OrganizerShow => Writer::new(ORGANIZER_SHOW),
            Request::OrganizerCheck { recipient } => {
                let mut w = Writer::new(ORGANIZER_CHECK);
                w.str(recipient);
                w
            }
            Request::OrganizerAdd {
                recipient,
                name,
                password,
            } => {
                let mut w = Writer::new(ORGANIZER_ADD);
                w.str(recipient);
                w.str(name);
                w.secret(password);
                w
            }
            Request::OrganizerList => Writer::new(ORGANIZER_LIST),
            Request::OrganizerRemove { which, password } => {
                let mut w = Writer::new(ORGANIZER_REMOVE);
                w.str(which);
                w.secret(password);
                w
            }
            Request::OrganizerRecover {
                vault,
                expires_hours,
                password,
            } => {
                let mut w = Writer::new(ORGANIZER_RECOVER);
                w.str(vault);
                w.u32(*expires_hours);
                w.secret(password);
                w
            }
            Request::RecoverWithGrant {
                grant,
                code,
                new_password,
            } => {
                let mut w = Writer::new(RECOVER_WITH_GRANT);
                w.str(grant);
                w.secret(code);
                w.secret(new_password);
                w
            }
            Request::SshGenerate {
                name,
                kind,
                bits,
                comment,
            } => {
                let mut w = Writer::new(SSH_GENERATE);
                w.str(name);
                w.str(kind);
                w.u32(*bits);
                w.str(comment);
                w
            }
            Request::SshImport {
                name,
                file,
                passphrase,
            } => {
                let mut w = Writer::new(SSH_IMPORT);
                w.str(name);
                w.secret(file);
                w.opt(passphrase.as_ref(), Writer::secret);
                w
            }
            Request::SshList => Writer::new(SSH_LIST),
            Request::SshRemove { name } => {
                let mut w = Writer::new(SSH_REMOVE);
                w.str(name);
                w
            }
            Request::SshApprove { name, approval } => {
                let mut w = Writer::new(SSH_APPROVE);
                w.str(name);
                w.str(approval);
                w
            }
            Request::SshGenerateCard {
                name,
                serial,
                slot,
                touch,
                pin,
                comment,
            } => {
                let mut w = Writer::new(SSH_GENERATE_CARD);
                w.str(name);
                w.opt(serial.as_ref(), |w, v| w.u32(*v));
                w.opt(slot.as_ref(), |w, v| w.u8(*v));
                w.opt(touch.as_ref(), |w, s| w.str(s));
                w.opt(pin.as_ref(), Writer::secret);
                w.str(comment);
                w
            }
            Request::OrganizerCreateCard { serial, slot, pin } => {
                let mut w = Writer::new(ORGANIZER_CREATE_CARD);
                w.opt(serial.as_ref(), |w, v| w.u32(*v));
                w.opt(slot.as_ref(), |w, v| w.u8(*v));
                w.opt(pin.as_ref(), Writer::secret);
                w
            }
            Request::OrganizerRecoverCard {
                vault,
                expires_hours,
                pin,
            } => {
                let mut w = Writer::new(ORGANIZER_RECOVER_CARD);
                w.str(vault);
                w.u32(*expires_hours);
                w.opt(pin.as_ref(), Writer::secret);
                w
            }
            Request::Join {
                path,
                password,
                secret_key,
                protector,
            } => {
                let mut w = Writer::new(JOIN);
                w.str(path);
                w.secret(password);
                w.secret(secret_key);
                w.str(protector);
                w
            }
            Request::Sync => Writer::new(SYNC),
            Request::MergeFiles { ours, theirs } => {
                let mut w = Writer::new(MERGE_FILES);
                w.str(ours);
                w.str(theirs);
                w
            }
            Request::DeviceList => Writer::new(DEVICE_LIST),
            Request::DeviceRename { device, name } => {
                let mut w = Writer::new(DEVICE_RENAME);
                w.str(device);
                w.str(name);
                w
            }
            Request::DeviceRemove { device } => {
                let mut w = Writer::new(DEVICE_REMOVE);
                w.str(device);
                w
            }
            Request::Rekey { password } => {
                let mut w = Writer::new(REKEY);
                w.secret(password);
                w
            }
        };
        w.finish()
    }

    /// Decodes a payload (a frame without its length prefix), strictly: no
    /// trailing bytes.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        use tag::*;
        let mut r = Reader::new(buf);
        let t = r.u8("tag").map_err(|_| DecodeError::Empty)?;
        let req = match t {
            HELLO => Request::Hello {
                protocol: r.u16("protocol")?,
                client: r.str("client")?,
            },
            STATUS => Request::Status,
            INIT => Request::Init(InitRequest {
                password: r.secret("password")?,
                protector: r.str("protector")?,
            }),
            UNLOCK => Request::Unlock(UnlockRequest {
                password: r.secret("password")?,
                secret_key: r.opt("secret_key", |r| r.secret("secret_key"))?,
                pin: r.opt("pin", |r| r.secret("pin"))?,
                with: r.opt("with", |r| r.str("with"))?,
            }),
            LOCK => Request::Lock,
            GET => Request::Get {
                name: r.str("name")?,
            },
            SET => Request::Set {
                name: r.str("name")?,
                value: r.secret("value")?,
            },
            LIST => Request::List,
            REMOVE => Request::Remove {
                name: r.str("name")?,
            },
            CHANGE_PASSWORD => Request::ChangePassword {
                old: r.secret("old")?,
                new: r.secret("new")?,
            },
            RECOVERY_CODE_NEW => Request::RecoveryCodeNew {
                password: r.secret("password")?,
            },
            RECOVERY_CODE_LIST => Request::RecoveryCodeList,
            RECOVERY_CODE_REVOKE => Request::RecoveryCodeRevoke {
                id: r.str("id")?,
                password: r.secret("password")?,
            },
            RECOVER => Request::Recover {
                code: r.secret("code")?,
                new_password: r.secret("new_password")?,
            },
            SECRET_KEY_ROTATE => Request::SecretKeyRotate {
                password: r.secret("password")?,
            },
            EMERGENCY_KIT => Request::EmergencyKit {
                password: r.secret("password")?,
            },
            PROTECTOR_ADD => Request::ProtectorAdd(ProtectorAddRequest {
                kind: r.str("kind")?,
                serial: r.opt("serial", |r| r.u32("serial"))?,
                slot: r.opt("slot", |r| r.u8("slot"))?,
                touch: r.opt("touch", |r| r.str("touch"))?,
                pin: r.opt("pin", |r| r.secret("pin"))?,
                management_key: r.opt("management_key", |r| r.secret("management_key"))?,
                password: r.secret("password")?,
            }),
            PROTECTOR_LIST => Request::ProtectorList,
            PROTECTOR_REMOVE => Request::ProtectorRemove {
                id: r.str("id")?,
                password: r.secret("password")?,
            },
            SHUTDOWN => Request::Shutdown,
            PROMPT_REPLY => Request::PromptReply {
                answer: r.opt("answer", |r| r.secret("answer"))?,
            },
            SESSION_END => Request::SessionEnd {
                session: r.opt("session", |r| r.str("session"))?,
            },
            CHECK_PASSWORD => Request::CheckPassword {
                password: r.secret("password")?,
            },
            CHECK_RECOVERY_CODE => Request::CheckRecoveryCode {
                code: r.secret("code")?,
            },
            BACKUP => Request::Backup {
                out: r.str("out")?,
                force: r.bool("force")?,
            },
            RESTORE => Request::Restore {
                path: r.str("path")?,
                older: r.bool("older")?,
            },
            RENAME => Request::Rename {
                old: r.str("old")?,
                new: r.str("new")?,
            },
            ORGANIZER_CREATE => Request::OrganizerCreate,
            ORGANIZER_SHOW => Request::OrganizerShow,
            ORGANIZER_CHECK => Request::OrganizerCheck {
                recipient: r.str("recipient")?,
            },
            ORGANIZER_ADD => Request::OrganizerAdd {
                recipient: r.str("recipient")?,
                name: r.str("name")?,
                password: r.secret("password")?,
            },
            ORGANIZER_LIST => Request::OrganizerList,
            ORGANIZER_REMOVE => Request::OrganizerRemove {
                which: r.str("which")?,
                password: r.secret("password")?,
            },
            ORGANIZER_RECOVER => Request::OrganizerRecover {
                vault: r.str("vault")?,
                expires_hours: r.u32("expires_hours")?,
                password: r.secret("password")?,
            },
            RECOVER_WITH_GRANT => Request::RecoverWithGrant {
                grant: r.str("grant")?,
                code: r.secret("code")?,
                new_password: r.secret("new_password")?,
            },
            SSH_GENERATE => Request::SshGenerate {
                name: r.str("name")?,
                kind: r.str("kind")?,
                bits: r.u32("bits")?,
                comment: r.str("comment")?,
            },
            SSH_IMPORT => Request::SshImport {
                name: r.str("name")?,
                file: r.secret("file")?,
                passphrase: r.opt("passphrase", |r| r.secret("passphrase"))?,
            },
            SSH_LIST => Request::SshList,
            SSH_REMOVE => Request::SshRemove {
                name: r.str("name")?,
            },
            SSH_APPROVE => Request::SshApprove {
                name: r.str("name")?,
                approval: r.str("approval")?,
            },
            SSH_GENERATE_CARD => Request::SshGenerateCard {
                name: r.str("name")?,
                serial: r.opt("serial", |r| r.u32("serial"))?,
                slot: r.opt("slot", |r| r.u8("slot"))?,
                touch: r.opt("touch", |r| r.str("touch"))?,
                pin: r.opt("pin", |r| r.secret("pin"))?,
                comment: r.str("comment")?,
            },
            ORGANIZER_CREATE_CARD => Request::OrganizerCreateCard {
                serial: r.opt("serial", |r| r.u32("serial"))?,
                slot: r.opt("slot", |r| r.u8("slot"))?,
                pin: r.opt("pin", |r| r.secret("pin"))?,
            },
            ORGANIZER_RECOVER_CARD => Request::OrganizerRecoverCard {
                vault: r.str("vault")?,
                expires_hours: r.u32("expires_hours")?,
                pin: r.opt("pin", |r| r.secret("pin"))?,
            },
            JOIN => Request::Join {
                path: r.str("path")?,
                password: r.secret("password")?,
                secret_key: r.secret("secret_key")?,
                protector: r.str("protector")?,
            },
            SYNC => Request::Sync,
            MERGE_FILES => Request::MergeFiles {
                ours: r.str("ours")?,
                theirs: r.str("theirs")?,
            },
            DEVICE_LIST => Request::DeviceList,
            DEVICE_RENAME => Request::DeviceRename {
                device: r.str("device")?,
                name: r.str("name")?,
            },
            DEVICE_REMOVE => Request::DeviceRemove {
                device: r.str("device")?,
            },
            REKEY => Request::Rekey {
                password: r.secret("password")?,
            },
            other => return Err(DecodeError::UnknownTag(other)),
        };
        r.end()?;
        Ok(req)
    }
}

/// The agent's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// No account yet.
    Uninitialized,
    /// Account exists, keys not in memory.
    Locked,
    /// Keys in memory.
    Unlocked,
}

impl AgentState {
    /// `uninitialized`, `locked` or `unlocked`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Uninitialized => "uninitialized",
            AgentState::Locked => "locked",
            AgentState::Unlocked => "unlocked",
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            AgentState::Uninitialized => 0,
            AgentState::Locked => 1,
            AgentState::Unlocked => 2,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(AgentState::Uninitialized),
            1 => Some(AgentState::Locked),
            2 => Some(AgentState::Unlocked),
            _ => None,
        }
    }
}

/// `Status` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusInfo {
    /// State.
    pub state: AgentState,
    /// The account, if one exists.
    pub account_id: Option<String>,
    /// Seconds until the idle lock (unlocked only).
    pub idle_lock_in: Option<u64>,
    /// Seconds until the absolute lifetime ends (unlocked only).
    pub lifetime_left: Option<u64>,
    /// The protector that produced the Secret Key at the last unlock.
    pub protector: Option<String>,
    /// Seconds before another unlock attempt is accepted (0 = now).
    pub backoff_secs: u64,
    /// The agent's version.
    pub agent_version: String,
    /// The agent's process id.
    pub pid: u32,
    /// Whether the keys are in mlocked memory (unlocked only).
    pub keys_mlocked: bool,
}

/// An item in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemInfo {
    /// Name.
    pub name: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds.
    pub modified: u64,
}

/// A recovery code in a listing (never the code itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryCodeInfo {
    /// Its id (16 hex digits).
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds, if ever used.
    pub last_used: Option<u64>,
}

/// A protector in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectorInfo {
    /// Its id, e.g. `file`, `keychain`, `yubikey:12345678:82`.
    pub id: String,
    /// `file`, `keychain` or `yubikey`.
    pub kind: String,
    /// Human details (serial, slot, policies, path).
    pub details: String,
    /// Unix seconds.
    pub added: u64,
    /// Unix seconds, if ever used.
    pub last_used: Option<u64>,
    /// It holds an outdated Secret Key: re-enroll it.
    pub stale: bool,
}

/// An organizer in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizerInfo {
    /// The name given at enrollment (may be empty).
    pub name: String,
    /// The fingerprint (`xxxx-xxxx-xxxx-xxxx`).
    pub fingerprint: String,
    /// Unix seconds.
    pub added: u64,
    /// Enrolled by machine policy as required: the member cannot remove it.
    pub required: bool,
}

/// A device of the account in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its id (32 hex digits).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Unix seconds.
    pub added: u64,
    /// Whether it is the device the agent runs on.
    pub this: bool,
    /// Its file and keychain protectors (`file`, `keychain`).
    pub protectors: Vec<String>,
}

/// An SSH key in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeyInfo {
    /// Its name in the vault.
    pub name: String,
    /// Key type (`ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, a certificate type …).
    pub key_type: String,
    /// `SHA256:…`, as `ssh-add -l` prints it.
    pub fingerprint: String,
    /// The comment.
    pub comment: String,
    /// `vault`, or `yubikey:SERIAL/SLOT`.
    pub location: String,
    /// `never`, `once-per-process` or `always`.
    pub approval: String,
    /// An `authorized_keys` line.
    pub public: String,
    /// Whether the SSH agent offers it now (`ssh-add -d/-D` hide a key until the next lock).
    pub loaded: bool,
}

/// What a prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    /// A YubiKey PIN.
    Pin,
    /// A YubiKey management key (hex).
    ManagementKey,
    /// A new YubiKey PIN (to replace a default one); empty answer = keep.
    NewPin,
    /// The Secret Key, typed.
    SecretKey,
    /// A yes/no question; answer `y` or `n`.
    Confirm,
    /// The passphrase of a key file.
    Passphrase,
}

impl PromptKind {
    fn to_u8(self) -> u8 {
        match self {
            PromptKind::Pin => 1,
            PromptKind::ManagementKey => 2,
            PromptKind::NewPin => 3,
            PromptKind::SecretKey => 4,
            PromptKind::Confirm => 5,
            PromptKind::Passphrase => 6,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(PromptKind::Pin),
            2 => Some(PromptKind::ManagementKey),
            3 => Some(PromptKind::NewPin),
            4 => Some(PromptKind::SecretKey),
            5 => Some(PromptKind::Confirm),
            6 => Some(PromptKind::Passphrase),
            _ => None,
        }
    }
}

/// Error classes, stable across versions (see docs/PROTOCOL.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed frame or message.
    BadRequest,
    /// Frame over the size cap.
    FrameTooLarge,
    /// Protocol versions differ.
    VersionMismatch,
    /// The agent is locked.
    Locked,
    /// No account yet.
    NoAccount,
    /// Wrong Master Password or Secret Key.
    WrongCredentials,
    /// Too many failures: wait `retry_after_secs`.
    BackedOff,
    /// No such item (or recovery code, or protector).
    NotFound,
    /// Already exists.
    Exists,
    /// Invalid input (bad name, value too large, a typo in a Secret Key …).
    InvalidInput,
    /// The vault could not be written; nothing changed.
    Storage,
    /// The vault is damaged or was tampered with.
    Corrupt,
    /// A protector failed (card absent, keychain locked …).
    Protector,
    /// Wrong YubiKey PIN (`tries_left` says how many remain).
    WrongPin,
    /// The YubiKey PIN is blocked.
    PinBlocked,
    /// No protector gave the Secret Key and none was typed.
    NeedSecretKey,
    /// The user cancelled a prompt.
    Cancelled,
    /// Too many connections.
    Busy,
    /// The peer is not allowed.
    PermissionDenied,
    /// Wrong recovery code.
    WrongRecoveryCode,
    /// A bug or an unexpected failure in the agent.
    Internal,
    /// A code this client does not know (from a newer agent).
    Unknown(u16),
}

impl ErrorCode {
    /// The wire value.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 1,
            ErrorCode::FrameTooLarge => 2,
            ErrorCode::VersionMismatch => 3,
            ErrorCode::Locked => 4,
            ErrorCode::NoAccount => 5,
            ErrorCode::WrongCredentials => 6,
            ErrorCode::BackedOff => 7,
            ErrorCode::NotFound => 8,
            ErrorCode::Exists => 9,
            ErrorCode::InvalidInput => 10,
            ErrorCode::Storage => 11,
            ErrorCode::Corrupt => 12,
            ErrorCode::Protector => 13,
            ErrorCode::WrongPin => 14,
            ErrorCode::PinBlocked => 15,
            ErrorCode::NeedSecretKey => 16,
            ErrorCode::Cancelled => 17,
            ErrorCode::Busy => 18,
            ErrorCode::PermissionDenied => 19,
            ErrorCode::WrongRecoveryCode => 20,
            ErrorCode::Internal => 21,
            ErrorCode::Unknown(v) => v,
        }
    }

    /// From the wire value.
    pub fn from_u16(v: u16) -> Self {
        use ErrorCode::*;
        [
            BadRequest,
            FrameTooLarge,
            VersionMismatch,
            Locked,
            NoAccount,
            WrongCredentials,
            BackedOff,
            NotFound,
            Exists,
            InvalidInput,
            Storage,
            Corrupt,
            Protector,
            WrongPin,
            PinBlocked,
            NeedSecretKey,
            Cancelled,
            Busy,
            PermissionDenied,
            WrongRecoveryCode,
            Internal,
        ]
        .into_iter()
        .find(|c| c.to_u16() == v)
        .unwrap_or(Unknown(v))
    }
}

/// An error reported by the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentError {
    /// The class.
    pub code: ErrorCode,
    /// A sentence for the user, saying what to do next.
    pub message: String,
    /// Seconds to wait before retrying (back-off), 0 if none.
    pub retry_after_secs: u64,
    /// Tries left (YubiKey PIN), if relevant.
    pub tries_left: Option<u8>,
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AgentError {}

impl AgentError {
    /// An error with no back-off and no tries count.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: 0,
            tries_left: None,
        }
    }
}

/// A response from the agent.
#[derive(Clone, PartialEq, Eq)]
pub enum Response {
    /// Answer to `Hello`.
    HelloOk {
        /// The agent's [`PROTOCOL_VERSION`].
        protocol: u16,
        /// The agent's version, e.g. `0.1.0`.
        agent_version: String,
        /// The agent's process id.
        pid: u32,
    },
    /// Done.
    Ok,
    /// Answer to `Status`.
    Status(StatusInfo),
    /// An item's value.
    Value(Secret),
    /// Item names: the answer to `List`. A listing too long for one frame
    /// is sent as [`Response::ItemsPart`] frames followed by one `Items` with
    /// the rest; [`crate::Client`] and `AsyncClient` join them, so
    /// their callers always get one `Items` with every item. Encoding an
    /// `Items` that does not fit in one frame gives those frames, one after
    /// the other in the same buffer, each within [`crate::frame::MAX_FRAME`].
    Items(Vec<ItemInfo>),
    /// The first items of a listing too long for one frame; more frames
    /// follow (more `ItemsPart`, then a final [`Response::Items`]). Never a
    /// final response.
    ItemsPart(Vec<ItemInfo>),
    /// Answer to `Init`.
    Created {
        /// The new account.
        account_id: String,
        /// The Secret Key, shown once.
        secret_key: Secret,
        /// Where it is kept on this device.
        protector: String,
        /// The vault file.
        vault_path: String,
    },
    /// Answer to `Unlock`.
    Unlocked {
        /// The account.
        account_id: String,
        /// Which protector gave the Secret Key.
        protector: String,
        /// Idle lock, seconds.
        idle_lock_secs: u64,
        /// Absolute lifetime, seconds.
        lifetime_secs: u64,
        /// Things the user should know (e.g. a vault rollback warning).
        notes: Vec<String>,
    },
    /// A new recovery code, shown once.
    RecoveryCode {
        /// Its id.
        id: String,
        /// The code.
        code: Secret,
    },
    /// Recovery codes.
    RecoveryCodes(Vec<RecoveryCodeInfo>),
    /// A new Secret Key (after recovery or rotation), shown once.
    NewSecretKey {
        /// The key.
        secret_key: Secret,
        /// What happened to each protector.
        notes: Vec<String>,
    },
    /// What the Emergency Kit prints.
    Kit {
        /// The account.
        account_id: String,
        /// The Secret Key.
        secret_key: Secret,
        /// The vault file.
        vault_path: String,
    },
    /// Protectors.
    Protectors(Vec<ProtectorInfo>),
    /// A protector was enrolled.
    ProtectorAdded {
        /// Its id.
        id: String,
        /// Warnings and advice.
        notes: Vec<String>,
    },
    /// The agent needs an answer from the user; reply with `PromptReply`.
    Prompt {
        /// What to ask for.
        kind: PromptKind,
        /// The question to show.
        message: String,
    },
    /// Information to show now (e.g. "touch your YubiKey"); more frames follow.
    Notice {
        /// The text.
        message: String,
    },
    /// Answer to `SessionEnd`: not locked, because the user has these other
    /// login sessions open (logind ids).
    StillInUse {
        /// The other sessions.
        sessions: Vec<String>,
    },
    /// Answer to `Backup`: the copy is written and was checked.
    BackedUp {
        /// Where.
        path: String,
        /// Its write generation.
        generation: u64,
        /// How many items it holds.
        items: u64,
    },
    /// Answer to `Restore`: what changed.
    Restored {
        /// For the user.
        notes: Vec<String>,
    },
    /// An organizer key's public half (`OrganizerCreate`, `OrganizerShow`,
    /// `OrganizerCheck`).
    OrganizerKey {
        /// The recipient (`kwo1-…`).
        recipient: String,
        /// Its fingerprint, to read aloud.
        fingerprint: String,
    },
    /// An organizer key on a YubiKey: its public half and where it is
    /// (`OrganizerCreateCard`, and `OrganizerShow` for such a key).
    OrganizerCardKey {
        /// The recipient (`kwo1-…`).
        recipient: String,
        /// Its fingerprint, to read aloud.
        fingerprint: String,
        /// The card's serial.
        serial: u32,
        /// The PIV slot.
        slot: u8,
    },
    /// Answer to `OrganizerList`.
    Organizers(Vec<OrganizerInfo>),
    /// Answer to `SshList`, `SshGenerate`, `SshImport`.
    SshKeys(Vec<SshKeyInfo>),
    /// An organizer was enrolled or removed.
    OrganizerChanged {
        /// Its fingerprint.
        fingerprint: String,
        /// Its name.
        name: String,
        /// Advice.
        notes: Vec<String>,
    },
    /// Answer to `OrganizerRecover`: a recovery grant.
    GrantMade {
        /// The member's account.
        account_id: String,
        /// The grant's id (32 hex digits).
        grant_id: String,
        /// Unix seconds.
        expires: u64,
        /// The one-time code (`GC1-…`), to tell the member out of band.
        code: Secret,
        /// The grant file's text (JSON), for the member.
        grant: String,
    },
    /// Answer to `Sync` and `MergeFiles`: what was merged, refused, removed.
    Synced {
        /// One line each, for the user.
        notes: Vec<String>,
        /// Copies that were refused (they do not verify under the account key).
        refused: Vec<String>,
    },
    /// Answer to `DeviceList`, `DeviceRename`, `DeviceRemove`.
    Devices(Vec<DeviceInfo>),
    /// Answer to `Rekey`.
    Rekeyed {
        /// The recovery codes revoked (ids, hex).
        revoked_codes: Vec<String>,
        /// For the user.
        notes: Vec<String>,
    },
    /// A failure.
    Error(AgentError),
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::HelloOk {
                protocol,
                agent_version,
                pid,
            } => write!(f, "HelloOk({protocol}, {agent_version}, {pid})"),
            Response::Ok => f.write_str("Ok"),
            Response::Status(s) => write!(f, "{s:?}"),
            Response::Value(v) => write!(f, "Value({v:?})"),
            Response::Items(v) => write!(f, "Items({})", v.len()),
            Response::ItemsPart(v) => write!(f, "ItemsPart({})", v.len()),
            Response::Created { account_id, .. } => write!(f, "Created({account_id}, [redacted])"),
            Response::Unlocked {
                account_id,
                protector,
                ..
            } => write!(f, "Unlocked({account_id}, {protector})"),
            Response::RecoveryCode { id, .. } => write!(f, "RecoveryCode({id}, [redacted])"),
            Response::RecoveryCodes(v) => write!(f, "RecoveryCodes({v:?})"),
            Response::NewSecretKey { .. } => f.write_str("NewSecretKey([redacted])"),
            Response::Kit { account_id, .. } => write!(f, "Kit({account_id}, [redacted])"),
            Response::Protectors(v) => write!(f, "Protectors({v:?})"),
            Response::ProtectorAdded { id, .. } => write!(f, "ProtectorAdded({id})"),
            Response::Prompt { kind, message } => write!(f, "Prompt({kind:?}, {message:?})"),
            Response::Notice { message } => write!(f, "Notice({message:?})"),
            Response::StillInUse { sessions } => write!(f, "StillInUse({sessions:?})"),
            Response::BackedUp {
                path,
                generation,
                items,
            } => {
                write!(f, "BackedUp({path:?}, {generation}, {items})")
            }
            Response::Restored { notes } => write!(f, "Restored({notes:?})"),
            Response::OrganizerKey { fingerprint, .. } => write!(f, "OrganizerKey({fingerprint})"),
            Response::OrganizerCardKey {
                fingerprint,
                serial,
                slot,
                ..
            } => write!(f, "OrganizerCardKey({fingerprint}, {serial}, {slot:02x})"),
            Response::Organizers(v) => write!(f, "Organizers({v:?})"),
            Response::Synced { notes, refused } => write!(f, "Synced({notes:?}, {refused:?})"),
            Response::Devices(v) => write!(f, "Devices({v:?})"),
            Response::Rekeyed { revoked_codes, .. } => write!(f, "Rekeyed({revoked_codes:?})"),
            Response::SshKeys(v) => write!(f, "SshKeys({})", v.len()),
            Response::OrganizerChanged { fingerprint, .. } => {
                write!(f, "OrganizerChanged({fingerprint})")
            }
            Response::GrantMade {
                account_id,
                grant_id,
                expires,
                ..
            } => write!(
                f,
                "GrantMade({account_id}, {grant_id}, {expires}, [redacted])"
            ),
            Response::Error(e) => write!(f, "Error({:?}, {:?})", e.code, e.message),
        }
    }
}

fn write_strings(w: &mut Writer, v: &[String]) {
    w.list(v, |w, s| w.str(s));
}

fn read_strings(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<String>, DecodeError> {
    r.list(what, 4, |r| r.str(what))
}

/// Bytes of a list's header in an items frame: the tag and the count.
const ITEMS_HEADER: usize = 1 + 4;

/// Bytes an item takes in an items frame: its name and two `u64`s.
fn item_size(i: &ItemInfo) -> usize {
    4 + i.name.len() + 8 + 8
}

/// One frame of items with the tag `t`.
fn items_frame(t: u8, items: &[ItemInfo]) -> Vec<u8> {
    let mut w = Writer::new(t);
    w.list(items, |w, i| {
        w.str(&i.name);
        w.u64(i.created);
        w.u64(i.modified);
    });
    w.finish().0
}

/// A listing as frames of at most [`MAX_FRAME`] bytes of payload each: all
/// but the last are `ItemsPart`, the last one has the tag `last` (`Items`,
/// or `ItemsPart` for a part). A listing that fits is one frame, as always.
/// (An item too large for a frame of its own, impossible with names of at
/// most [`MAX_NAME`] bytes, gets an oversized frame that receivers refuse.)
fn encode_items(items: &[ItemInfo], last: u8) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = ITEMS_HEADER;
    for (k, i) in items.iter().enumerate() {
        let n = item_size(i);
        if size + n > MAX_FRAME && k > start {
            out.extend_from_slice(&items_frame(tag::ITEMS_PART, &items[start..k]));
            start = k;
            size = ITEMS_HEADER;
        }
        size += n;
    }
    let tail = items_frame(last, &items[start..]);
    if out.is_empty() {
        return (tail, false);
    }
    out.extend_from_slice(&tail);
    (out, false)
}

fn read_items(r: &mut Reader<'_>) -> Result<Vec<ItemInfo>, DecodeError> {
    r.list("items", 20, |r| {
        Ok(ItemInfo {
            name: r.str("name")?,
            created: r.u64("created")?,
            modified: r.u64("modified")?,
        })
    })
}

fn opt_u64(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

impl Response {
    /// Shorthand for an error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error(AgentError::new(code, message))
    }

    /// Encodes a whole frame; the flag says whether it holds secrets.
    ///
    /// An [`Response::Items`] too long for one frame gives several frames
    /// (see there), one after the other: send the bytes as they are.
    pub fn encode(&self) -> (Vec<u8>, bool) {
        use tag::*;
        let w = match self {
            Response::HelloOk {
                protocol,
                agent_version,
                pid,
            } => {
                let mut w = Writer::new(HELLO_OK);
                w.u16(*protocol);
                w.str(agent_version);
                w.u32(*pid);
                w
            }
            Response::Ok => Writer::new(OK),
            Response::Status(s) => {
                let mut w = Writer::new(STATUS_INFO);
                w.u8(s.state.to_u8());
                w.opt(s.account_id.as_ref(), |w, v| w.str(v));
                w.opt(s.idle_lock_in.as_ref(), |w, v| w.u64(*v));
                w.opt(s.lifetime_left.as_ref(), |w, v| w.u64(*v));
                w.opt(s.protector.as_ref(), |w, v| w.str(v));
                w.u64(s.backoff_secs);
                w.str(&s.agent_version);
                w.u32(s.pid);
                w.bool(s.keys_mlocked);
                w
            }
            Response::Value(v) => {
                let mut w = Writer::new(VALUE);
                w.secret(v);
                w
            }
            Response::Items(items) => return encode_items(items, ITEMS),
            Response::ItemsPart(items) => return encode_items(items, ITEMS_PART),
            Response::Created {
                account_id,
                secret_key,
                protector,
                vault_path,
            } => {
                let mut w = Writer::new(CREATED);
                w.str(account_id);
                w.secret(secret_key);
                w.str(protector);
                w.str(vault_path);
                w
            }
            Response::Unlocked {
                account_id,
                protector,
                idle_lock_secs,
                lifetime_secs,
                notes,
            } => {
                let mut w = Writer::new(UNLOCKED);
                w.str(account_id);
                w.str(protector);
                w.u64(*idle_lock_secs);
                w.u64(*lifetime_secs);
                write_strings(&mut w, notes);
                w
            }
            Response::RecoveryCode { id, code } => {
                let mut w = Writer::new(RECOVERY_CODE);
                w.str(id);
                w.secret(code);
                w
            }
            Response::RecoveryCodes(v) => {
                let mut w = Writer::new(RECOVERY_CODES);
                w.list(v, |w, c| {
                    w.str(&c.id);
                    w.u64(c.created);
                    w.u64(c.last_used.unwrap_or(0));
                });
                w
            }
            Response::NewSecretKey { secret_key, notes } => {
                let mut w = Writer::new(NEW_SECRET_KEY);
                w.secret(secret_key);
                write_strings(&mut w, notes);
                w
            }
            Response::Kit {
                account_id,
                secret_key,
                vault_path,
            } => {
                let mut w = Writer::new(KIT);
                w.str(account_id);
                w.secret(secret_key);
                w.str(vault_path);
                w
            }
            Response::Protectors(v) => {
                let mut w = Writer::new(PROTECTORS);
                w.list(v, |w, p| {
                    w.str(&p.id);
                    w.str(&p.kind);
                    w.str(&p.details);
                    w.u64(p.added);
                    w.u64(p.last_used.unwrap_or(0));
                    w.bool(p.stale);
                });
                w
            }
            Response::ProtectorAdded { id, notes } => {
                let mut w = Writer::new(PROTECTOR_ADDED);
                w.str(id);
                write_strings(&mut w, notes);
                w
            }
            Response::Prompt { kind, message } => {
                let mut w = Writer::new(PROMPT);
                w.u8(kind.to_u8());
                w.str(message);
                w
            }
            Response::Notice { message } => {
                let mut w = Writer::new(NOTICE);
                w.str(message);
                w
            }
            Response::StillInUse { sessions } => {
                let mut w = Writer::new(STILL_IN_USE);
                write_strings(&mut w, sessions);
                w
            }
            Response::BackedUp {
                path,
                generation,
                items,
            } => {
                let mut w = Writer::new(BACKED_UP);
                w.str(path);
                w.u64(*generation);
                w.u64(*items);
                w
            }
            Response::Restored { notes } => {
                let mut w = Writer::new(RESTORED);
                write_strings(&mut w, notes);
                w
            }
            Response::OrganizerKey {
                recipient,
                fingerprint,
            } => {
                let mut w = Writer::new(ORGANIZER_KEY);
                w.str(recipient);
                w.str(fingerprint);
                w
            }
            Response::OrganizerCardKey {
                recipient,
                fingerprint,
                serial,
                slot,
            } => {
                let mut w = Writer::new(ORGANIZER_CARD_KEY);
                w.str(recipient);
                w.str(fingerprint);
                w.u32(*serial);
                w.u8(*slot);
                w
            }
            Response::SshKeys(v) => {
                let mut w = Writer::new(SSH_KEYS);
                w.list(v, |w, k| {
                    w.str(&k.name);
                    w.str(&k.key_type);
                    w.str(&k.fingerprint);
                    w.str(&k.comment);
                    w.str(&k.location);
                    w.str(&k.approval);
                    w.str(&k.public);
                    w.bool(k.loaded);
                });
                w
            }
            Response::Synced { notes, refused } => {
                let mut w = Writer::new(SYNCED);
                write_strings(&mut w, notes);
                write_strings(&mut w, refused);
                w
            }
            Response::Devices(v) => {
                let mut w = Writer::new(DEVICES);
                w.list(v, |w, d| {
                    w.str(&d.id);
                    w.str(&d.name);
                    w.u64(d.added);
                    w.bool(d.this);
                    write_strings(w, &d.protectors);
                });
                w
            }
            Response::Rekeyed {
                revoked_codes,
                notes,
            } => {
                let mut w = Writer::new(REKEYED);
                write_strings(&mut w, revoked_codes);
                write_strings(&mut w, notes);
                w
            }
            Response::Organizers(v) => {
                let mut w = Writer::new(ORGANIZERS);
                w.list(v, |w, o| {
                    w.str(&o.name);
                    w.str(&o.fingerprint);
                    w.u64(o.added);
                    w.bool(o.required);
                });
                w
            }
            Response::OrganizerChanged {
                fingerprint,
                name,
                notes,
            } => {
                let mut w = Writer::new(ORGANIZER_CHANGED);
                w.str(fingerprint);
                w.str(name);
                write_strings(&mut w, notes);
                w
            }
            Response::GrantMade {
                account_id,
                grant_id,
                expires,
                code,
                grant,
            } => {
                let mut w = Writer::new(GRANT_MADE);
                w.str(account_id);
                w.str(grant_id);
                w.u64(*expires);
                w.secret(code);
                w.str(grant);
                w
            }
            Response::Error(e) => {
                let mut w = Writer::new(ERROR);
                w.u16(e.code.to_u16());
                w.str(&e.message);
                w.u64(e.retry_after_secs);
                w.opt(e.tries_left.as_ref(), |w, v| w.u8(*v));
                w
            }
        };
        w.finish()
    }

    /// Decodes a payload (without the length prefix), strictly.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        use tag::*;
        let mut r = Reader::new(buf);
        let t = r.u8("tag").map_err(|_| DecodeError::Empty)?;
        let resp = match t {
            HELLO_OK => Response::HelloOk {
                protocol: r.u16("protocol")?,
                agent_version: r.str("agent_version")?,
                pid: r.u32("pid")?,
            },
            OK => Response::Ok,
            STATUS_INFO => Response::Status(StatusInfo {
                state: AgentState::from_u8(r.u8("state")?).ok_or(DecodeError::Invalid("state"))?,
                account_id: r.opt("account_id", |r| r.str("account_id"))?,
                idle_lock_in: r.opt("idle_lock_in", |r| r.u64("idle_lock_in"))?,
                lifetime_left: r.opt("lifetime_left", |r| r.u64("lifetime_left"))?,
                protector: r.opt("protector", |r| r.str("protector"))?,
                backoff_secs: r.u64("backoff_secs")?,
                agent_version: r.str("agent_version")?,
                pid: r.u32("pid")?,
                keys_mlocked: r.bool("keys_mlocked")?,
            }),
            VALUE => Response::Value(r.secret("value")?),
            ITEMS => Response::Items(read_items(&mut r)?),
            ITEMS_PART => Response::ItemsPart(read_items(&mut r)?),
            CREATED => Response::Created {
                account_id: r.str("account_id")?,
                secret_key: r.secret("secret_key")?,
                protector: r.str("protector")?,
                vault_path: r.str("vault_path")?,
            },
            UNLOCKED => Response::Unlocked {
                account_id: r.str("account_id")?,
                protector: r.str("protector")?,
                idle_lock_secs: r.u64("idle_lock_secs")?,
                lifetime_secs: r.u64("lifetime_secs")?,
                notes: read_strings(&mut r, "notes")?,
            },
            RECOVERY_CODE => Response::RecoveryCode {
                id: r.str("id")?,
                code: r.secret("code")?,
            },
            RECOVERY_CODES => Response::RecoveryCodes(r.list("codes", 20, |r| {
                Ok(RecoveryCodeInfo {
                    id: r.str("id")?,
                    created: r.u64("created")?,
                    last_used: opt_u64(r.u64("last_used")?),
                })
            })?),
            NEW_SECRET_KEY => Response::NewSecretKey {
                secret_key: r.secret("secret_key")?,
                notes: read_strings(&mut r, "notes")?,
            },
            KIT => Response::Kit {
                account_id: r.str("account_id")?,
                secret_key: r.secret("secret_key")?,
                vault_path: r.str("vault_path")?,
            },
            PROTECTORS => Response::Protectors(r.list("protectors", 29, |r| {
                Ok(ProtectorInfo {
                    id: r.str("id")?,
                    kind: r.str("kind")?,
                    details: r.str("details")?,
                    added: r.u64("added")?,
                    last_used: opt_u64(r.u64("last_used")?),
                    stale: r.bool("stale")?,
                })
            })?),
            PROTECTOR_ADDED => Response::ProtectorAdded {
                id: r.str("id")?,
                notes: read_strings(&mut r, "notes")?,
            },
            PROMPT => Response::Prompt {
                kind: PromptKind::from_u8(r.u8("kind")?).ok_or(DecodeError::Invalid("kind"))?,
                message: r.str("message")?,
            },
            NOTICE => Response::Notice {
                message: r.str("message")?,
            },
            STILL_IN_USE => Response::StillInUse {
                sessions: read_strings(&mut r, "sessions")?,
            },
            BACKED_UP => Response::BackedUp {
                path: r.str("path")?,
                generation: r.u64("generation")?,
                items: r.u64("items")?,
            },
            RESTORED => Response::Restored {
                notes: read_strings(&mut r, "notes")?,
            },
            ORGANIZER_KEY => Response::OrganizerKey {
                recipient: r.str("recipient")?,
                fingerprint: r.str("fingerprint")?,
            },
            ORGANIZER_CARD_KEY => Response::OrganizerCardKey {
                recipient: r.str("recipient")?,
                fingerprint: r.str("fingerprint")?,
                serial: r.u32("serial")?,
                slot: r.u8("slot")?,
            },
            SSH_KEYS => Response::SshKeys(r.list("ssh keys", 29, |r| {
                Ok(SshKeyInfo {
                    name: r.str("name")?,
                    key_type: r.str("key_type")?,
                    fingerprint: r.str("fingerprint")?,
                    comment: r.str("comment")?,
                    location: r.str("location")?,
                    approval: r.str("approval")?,
                    public: r.str("public")?,
                    loaded: r.bool("loaded")?,
                })
            })?),
            SYNCED => Response::Synced {
                notes: read_strings(&mut r, "notes")?,
                refused: read_strings(&mut r, "refused")?,
            },
            DEVICES => Response::Devices(r.list("devices", 21, |r| {
                Ok(DeviceInfo {
                    id: r.str("id")?,
                    name: r.str("name")?,
                    added: r.u64("added")?,
                    this: r.bool("this")?,
                    protectors: read_strings(r, "protectors")?,
                })
            })?),
            REKEYED => Response::Rekeyed {
                revoked_codes: read_strings(&mut r, "revoked_codes")?,
                notes: read_strings(&mut r, "notes")?,
            },
            ORGANIZERS => Response::Organizers(r.list("organizers", 17, |r| {
                Ok(OrganizerInfo {
                    name: r.str("name")?,
                    fingerprint: r.str("fingerprint")?,
                    added: r.u64("added")?,
                    required: r.bool("required")?,
                })
            })?),
            ORGANIZER_CHANGED => Response::OrganizerChanged {
                fingerprint: r.str("fingerprint")?,
                name: r.str("name")?,
                notes: read_strings(&mut r, "notes")?,
            },
            GRANT_MADE => Response::GrantMade {
                account_id: r.str("account_id")?,
                grant_id: r.str("grant_id")?,
                expires: r.u64("expires")?,
                code: r.secret("code")?,
                grant: r.str("grant")?,
            },
            ERROR => Response::Error(AgentError {
                code: ErrorCode::from_u16(r.u16("code")?),
                message: r.str("message")?,
                retry_after_secs: r.u64("retry_after_secs")?,
                tries_left: r.opt("tries_left", |r| r.u8("tries_left"))?,
            }),
            other => return Err(DecodeError::UnknownTag(other)),
        };
        r.end()?;
        Ok(resp)
    }
}

/// One value of every request and response, for tests and for the fuzzers'
/// seed inputs (feature `samples`).
#[cfg(any(test, feature = "samples"))]
#[doc(hidden)]
pub mod samples {
    use super::*;

    fn s(x: &str) -> Secret {
        Secret::from(x)
    }

    pub fn requests() -> Vec<Request> {
        vec![
            Request::Hello {
                protocol: 1,
                client: "keyward 0.1.0".into(),
            },
            Request::Status,
            Request::Init(InitRequest {
                password: s("pw"),
                protector: "auto".into(),
            }),
            Request::Unlock(UnlockRequest {
                password: s("pw"),
                secret_key: Some(s("K1-…")),
                pin: None,
                with: Some("yubikey:123".into()),
            }),
            Request::Lock,
            Request::Get { name: "a/b".into() },
            Request::Set {
                name: "a".into(),
                value: Secret::new(vec![0, 1, 2, 255]),
            },
            Request::List,
            Request::Remove { name: "a".into() },
            Request::ChangePassword {
                old: s("o"),
                new: s("n"),
            },
            Request::RecoveryCodeNew { password: s("pw") },
            Request::RecoveryCodeList,
            Request::RecoveryCodeRevoke {
                id: "abcd".into(),
                password: s("pw"),
            },
            Request::Recover {
                code: s("RC1-…"),
                new_password: s("n"),
            },
            Request::SecretKeyRotate { password: s("pw") },
            Request::EmergencyKit { password: s("pw") },
            Request::ProtectorAdd(ProtectorAddRequest {
                kind: "yubikey".into(),
                serial: Some(7),
                slot: Some(0x82),
                touch: Some("cached".into()),
                pin: Some(s("123456")),
                management_key: None,
                password: s("pw"),
            }),
            Request::ProtectorList,
            Request::ProtectorRemove {
                id: "file".into(),
                password: s("pw"),
            },
            Request::Shutdown,
            Request::PromptReply {
                answer: Some(s("1234")),
            },
            Request::PromptReply { answer: None },
            Request::SessionEnd {
                session: Some("c7".into()),
            },
            Request::SessionEnd { session: None },
            Request::CheckPassword { password: s("pw") },
            Request::CheckRecoveryCode { code: s("RC1-…") },
            Request::Backup {
                out: "/tmp/b.kwv".into(),
                force: true,
            },
            Request::Restore {
                path: "/tmp/b.kwv".into(),
                older: false,
            },
            Request::Rename {
                old: "a".into(),
                new: "b".into(),
            },
            Request::OrganizerCreate,
            Request::OrganizerShow,
            Request::OrganizerCheck {
                recipient: "kwo1-0000".into(),
            },
            Request::OrganizerAdd {
                recipient: "kwo1-0000".into(),
                name: "Anna".into(),
                password: s("pw"),
            },
            Request::OrganizerList,
            Request::OrganizerRemove {
                which: "0a1b-2c3d-4e5f-6a7b".into(),
                password: s("pw"),
            },
            Request::OrganizerRecover {
                vault: "/tmp/member.kwv".into(),
                expires_hours: 72,
                password: s("pw"),
            },
            Request::RecoverWithGrant {
                grant: "{}".into(),
                code: s("GC1-…"),
                new_password: s("n"),
            },
            Request::SshGenerate {
                name: "work".into(),
                kind: "ed25519".into(),
                bits: 0,
                comment: "me@host".into(),
            },
            Request::SshImport {
                name: "old".into(),
                file: s("-----BEGIN OPENSSH PRIVATE KEY-----"),
                passphrase: Some(s("pp")),
            },
            Request::SshImport {
                name: String::new(),
                file: s("k"),
                passphrase: None,
            },
            Request::SshList,
            Request::SshRemove {
                name: "work".into(),
            },
            Request::SshApprove {
                name: "work".into(),
                approval: "always".into(),
            },
            Request::SshGenerateCard {
                name: "card".into(),
                serial: Some(7),
                slot: Some(0x9a),
                touch: Some("cached".into()),
                pin: Some(s("123456")),
                comment: "me@host".into(),
            },
            Request::SshGenerateCard {
                name: "card2".into(),
                serial: None,
                slot: None,
                touch: None,
                pin: None,
                comment: String::new(),
            },
            Request::OrganizerCreateCard {
                serial: Some(7),
                slot: Some(0x82),
                pin: Some(s("123456")),
            },
            Request::OrganizerCreateCard {
                serial: None,
                slot: None,
                pin: None,
            },
            Request::OrganizerRecoverCard {
                vault: "/tmp/member.kwv".into(),
                expires_hours: 72,
                pin: Some(s("123456")),
            },
            Request::OrganizerRecoverCard {
                vault: "/tmp/member.kwv".into(),
                expires_hours: 1,
                pin: None,
            },
            Request::Join {
                path: "/home/u/Sync/keyward".into(),
                password: s("pw"),
                secret_key: s("K1-ABCDEF-GHJKLM-NPQRS-TVWXY-Z2345-6789AR"),
                protector: "auto".into(),
            },
            Request::Sync,
            Request::MergeFiles {
                ours: "/r/vault-ABCDEF.kwv".into(),
                theirs: "/tmp/.merge_file_x".into(),
            },
            Request::DeviceList,
            Request::DeviceRename {
                device: "this".into(),
                name: "laptop".into(),
            },
            Request::DeviceRemove {
                device: "0a1b2c".into(),
            },
            Request::Rekey { password: s("pw") },
        ]
    }

    pub fn responses() -> Vec<Response> {
        vec![
            Response::HelloOk {
                protocol: 1,
                agent_version: "0.1.0".into(),
                pid: 42,
            },
            Response::Ok,
            Response::Status(StatusInfo {
                state: AgentState::Unlocked,
                account_id: Some("ABCDEF".into()),
                idle_lock_in: Some(900),
                lifetime_left: Some(43200),
                protector: Some("file".into()),
                backoff_secs: 0,
                agent_version: "0.1.0".into(),
                pid: 1,
                keys_mlocked: true,
            }),
            Response::Value(Secret::new(vec![0; 10])),
            Response::Items(vec![ItemInfo {
                name: "x".into(),
                created: 1,
                modified: 2,
            }]),
            Response::Created {
                account_id: "ABCDEF".into(),
                secret_key: s("K1"),
                protector: "file".into(),
                vault_path: "/v".into(),
            },
            Response::Unlocked {
                account_id: "ABCDEF".into(),
                protector: "file".into(),
                idle_lock_secs: 1,
                lifetime_secs: 2,
                notes: vec!["n".into()],
            },
            Response::RecoveryCode {
                id: "00".into(),
                code: s("RC1"),
            },
            Response::RecoveryCodes(vec![RecoveryCodeInfo {
                id: "00".into(),
                created: 1,
                last_used: Some(3),
            }]),
            Response::NewSecretKey {
                secret_key: s("K1"),
                notes: vec![],
            },
            Response::Kit {
                account_id: "A".into(),
                secret_key: s("K"),
                vault_path: "/".into(),
            },
            Response::Protectors(vec![ProtectorInfo {
                id: "file".into(),
                kind: "file".into(),
                details: "d".into(),
                added: 1,
                last_used: None,
                stale: true,
            }]),
            Response::ProtectorAdded {
                id: "keychain".into(),
                notes: vec![],
            },
            Response::Prompt {
                kind: PromptKind::Pin,
                message: "PIN for YubiKey 123".into(),
            },
            Response::Notice {
                message: "touch".into(),
            },
            Response::StillInUse {
                sessions: vec!["c2".into(), "5".into()],
            },
            Response::Error(AgentError {
                code: ErrorCode::WrongPin,
                message: "wrong PIN".into(),
                retry_after_secs: 4,
                tries_left: Some(2),
            }),
            // Newer messages last, so that the fuzz seeds' numbers stay.
            Response::ItemsPart(vec![
                ItemInfo {
                    name: "a/b".into(),
                    created: 3,
                    modified: 4,
                },
                ItemInfo {
                    name: "c".into(),
                    created: 5,
                    modified: 5,
                },
            ]),
            Response::BackedUp {
                path: "/home/u/b.kwv".into(),
                generation: 9,
                items: 3,
            },
            Response::Restored {
                notes: vec!["2 items back".into()],
            },
            Response::OrganizerKey {
                recipient: "kwo1-0000".into(),
                fingerprint: "0a1b-2c3d-4e5f-6a7b".into(),
            },
            Response::Organizers(vec![OrganizerInfo {
                name: "Anna".into(),
                fingerprint: "0a1b-2c3d-4e5f-6a7b".into(),
                added: 7,
                required: true,
            }]),
            Response::OrganizerChanged {
                fingerprint: "0a1b-2c3d-4e5f-6a7b".into(),
                name: "Anna".into(),
                notes: vec!["n".into()],
            },
            Response::GrantMade {
                account_id: "ABCDEF".into(),
                grant_id: "00".into(),
                expires: 9,
                code: s("GC1-…"),
                grant: "{}".into(),
            },
            Response::SshKeys(vec![SshKeyInfo {
                name: "work".into(),
                key_type: "ssh-ed25519".into(),
                fingerprint: "SHA256:x".into(),
                comment: "me@host".into(),
                location: "vault".into(),
                approval: "never".into(),
                public: "ssh-ed25519 AAAA me@host".into(),
                loaded: true,
            }]),
            Response::OrganizerCardKey {
                recipient: "kwo1-0000".into(),
                fingerprint: "0a1b-2c3d-4e5f-6a7b".into(),
                serial: 7,
                slot: 0x82,
            },
            Response::Synced {
                notes: vec!["merged laptop".into()],
                refused: vec!["/s/vault-ABCDEF.x.kwv: forged".into()],
            },
            Response::Devices(vec![DeviceInfo {
                id: "00".repeat(16),
                name: "laptop".into(),
                added: 7,
                this: true,
                protectors: vec!["file".into()],
            }]),
            Response::Rekeyed {
                revoked_codes: vec!["0011223344556677".into()],
                notes: vec!["n".into()],
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::samples::{requests as sample_requests, responses as sample_responses};
    use super::*;

    #[test]
    fn every_request_round_trips_and_truncation_fails() {
        for req in sample_requests() {
            let (frame, _) = req.encode();
            let buf = frame[4..].to_vec();
            assert_eq!(Request::decode(&buf).unwrap(), req);
            for n in 0..buf.len() {
                assert!(Request::decode(&buf[..n]).is_err(), "{req:?} prefix {n}");
            }
            let mut longer = buf.clone();
            longer.push(0);
            assert_eq!(Request::decode(&longer), Err(DecodeError::Trailing(1)));
        }
    }

    #[test]
    fn every_response_round_trips_and_truncation_fails() {
        for resp in sample_responses() {
            let (frame, _) = resp.encode();
            let buf = &frame[4..];
            assert_eq!(Response::decode(buf).unwrap(), resp);
            for n in 0..buf.len() {
                assert!(Response::decode(&buf[..n]).is_err(), "{resp:?} prefix {n}");
            }
        }
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        for req in sample_requests() {
            let d = format!("{req:?}");
            for needle in ["pw", "123456", "RC1-", "K1-", "1234", "GC1"] {
                assert!(!d.contains(needle), "{d}");
            }
        }
        for resp in sample_responses() {
            let d = format!("{resp:?}");
            assert!(
                !d.contains("K1") && !d.contains("RC1") && !d.contains("GC1"),
                "{d}"
            );
        }
    }

    #[test]
    fn secret_payloads_are_flagged() {
        assert!(Request::Unlock(UnlockRequest::default()).encode().1);
        assert!(!Request::Status.encode().1);
        assert!(Response::Value(Secret::default()).encode().1);
    }

    #[test]
    fn error_codes_round_trip() {
        for v in 0..40u16 {
            assert_eq!(ErrorCode::from_u16(v).to_u16(), v);
        }
    }

    #[test]
    fn unknown_tags_are_errors() {
        assert_eq!(Request::decode(&[0x7f]), Err(DecodeError::UnknownTag(0x7f)));
        assert_eq!(
            Response::decode(&[0x01]),
            Err(DecodeError::UnknownTag(0x01))
        );
        assert_eq!(Request::decode(&[]), Err(DecodeError::Empty));
    }
}
