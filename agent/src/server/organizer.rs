//! Recovery by an organizer (docs/SECURITY.md §16): the organizer's key
//! and grants on the organizer's side; enrollment, the machine policy and
//! recovering with a grant on the member's side.
//!
//! Which requests need what (SECURITY.md §11.1): `OrganizerAdd` lets the
//! account key go somewhere new and `OrganizerRemove` takes away a way back
//! in, so both re-ask the Master Password; `OrganizerRecover` lets another
//! account's key go into a grant, so it re-asks the organizer's. With the
//! organizer key on a YubiKey (`OrganizerCreateCard`), `OrganizerRecoverCard`
//! needs the card and its PIN instead: the card computes the shared secret
//! of the member's wrap, the key never leaves it. A grant
//! works once: its id is recorded in the vault (record 0x08, in the same
//! write as the new password wrap) and in `<state dir>/used-grants-<ID>`,
//! which a rolled-back vault cannot undo.

use super::protectors::protector_error;
use super::state::{
    Agent, State, change_error, err, internal, new_password_from, no_account_error, read_error,
};
use crate::account::organizer::{self, Grant, GrantCode, Recipient};
use crate::account::{AccountId, hex, piv};
use crate::protect::yubikey::{self, CardAgreement, EnrollOptions, Touch};
use crate::protect::{ProtectorError, UnlockIo};
use crate::secret::Key32;
use crate::vault::format::FLAG_REQUIRED;
use crate::vault::organizer::{
    MemberVaultError, grant_used, open_member_vault_with, unlock_with_grant,
};
use crate::vault::{self, ChangeError, UnlockError, store};
use keyward_client::Secret;
use keyward_client::message::{AgentError, ErrorCode, OrganizerInfo, Response};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The machine policy's directory.
pub const POLICY_DIR: &str = "/etc/keyward/organizers.d";
/// Overrides [`POLICY_DIR`] (tests; the files must still be root's).
pub const POLICY_DIR_ENV: &str = "KEYWARD_ORGANIZER_POLICY_DIR";
/// Hours a grant is valid unless the organizer says otherwise.
pub const DEFAULT_GRANT_HOURS: u32 = 72;
/// The longest a grant may be valid: 30 days.
pub const MAX_GRANT_HOURS: u32 = 30 * 24;

/// An organizer named by the machine policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOrganizer {
    /// Its file, for the log.
    pub file: PathBuf,
    /// Its key.
    pub recipient: Recipient,
    /// `name = …`, or the file's stem.
    pub name: String,
    /// `required = true`.
    pub required: bool,
}

/// Parses one policy file: the recipient on a line of its own, optional
/// `name = …` and `required = true|false` lines; `#` starts a comment.
pub fn parse_policy_file(file: &Path, text: &str) -> Result<PolicyOrganizer, String> {
    let mut recipient = None;
    let mut name = None;
    let mut required = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"');
            match k.trim() {
                "name" => {
                    organizer::check_name(v)?;
                    name = Some(v.to_owned());
                }
                "required" => {
                    required = match v {
                        "true" => true,
                        "false" => false,
                        other => return Err(format!("required = {other:?}: use true or false")),
                    }
                }
                other => return Err(format!("unknown setting {other:?}")),
            }
        } else if recipient.is_some() {
            return Err("more than one recipient".into());
        } else {
            recipient = Some(Recipient::parse(line).map_err(|e| e.to_string())?);
        }
    }
    let recipient = recipient.ok_or("no recipient (a kwo1-… line)")?;
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(organizer::MAX_NAME)
        .collect::<String>();
    let mut name = name.unwrap_or(stem);
    while name.len() > organizer::MAX_NAME {
        name.pop();
    }
    Ok(PolicyOrganizer {
        file: file.to_owned(),
        recipient,
        name,
        required,
    })
}

/// The machine policy in `dir`: every `*.pub` file that root owns and no one
/// else may write, in name order. Others are skipped, and the log says why.
pub fn read_policy(dir: &Path) -> Vec<PolicyOrganizer> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let meta = match std::fs::symlink_metadata(&file) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(file = %file.display(), "organizer policy file skipped: {e}");
                continue;
            }
        };
        if !meta.file_type().is_file() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            tracing::warn!(
                file = %file.display(),
                uid = meta.uid(),
                mode = format!("{:o}", meta.mode() & 0o7777),
                "organizer policy file skipped: it must be a regular file owned by root and \
                 writable by no one else"
            );
            continue;
        }
        match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_policy_file(&file, &t))
        {
            Ok(p) => out.push(p),
            Err(e) => {
                tracing::warn!(file = %file.display(), "organizer policy file skipped: {e}");
            }
        }
    }
    out
}

/// The policy directory in force.
pub fn policy_dir() -> PathBuf {
    // The name spelled out: the man page test looks for what is read.
    std::env::var_os("KEYWARD_ORGANIZER_POLICY_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(POLICY_DIR))
}

/// `YYYY-MM-DD HH:MM UTC` for Unix seconds.
fn utc(secs: u64) -> String {
    let rem = secs % 86_400;
    format!(
        "{} {:02}:{:02} UTC",
        date(secs),
        rem / 3_600,
        rem % 3_600 / 60
    )
}

/// `YYYY-MM-DD` (UTC) for Unix seconds.
pub(super) fn date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The path and hours of `OrganizerRecover` and `OrganizerRecoverCard`.
fn check_recover_args(vault_path: &str, hours: u32) -> Result<PathBuf, AgentError> {
    let path = PathBuf::from(vault_path);
    if !path.is_absolute() {
        return Err(err(
            ErrorCode::InvalidInput,
            "the member's vault file must be given as an absolute path",
        ));
    }
    if !(1..=MAX_GRANT_HOURS).contains(&hours) {
        return Err(err(
            ErrorCode::InvalidInput,
            format!("a grant expires after 1 to {MAX_GRANT_HOURS} hours"),
        ));
    }
    Ok(path)
}

/// Reads (and parses, not yet authenticates) a copy of a member's vault.
fn read_member_vault(path: &Path) -> Result<vault::format::Parsed, AgentError> {
    vault::read(path).map_err(|e| match e {
        vault::ReadError::NotFound => err(
            ErrorCode::NotFound,
            format!("there is no file at {}", path.display()),
        ),
        vault::ReadError::Io(e) => err(
            ErrorCode::InvalidInput,
            format!("cannot read {}: {e}", path.display()),
        ),
        vault::ReadError::Format(e) => err(
            ErrorCode::Corrupt,
            format!("{} is not a usable vault: {e}", path.display()),
        ),
    })
}

/// The YubiKey enrollment's notes speak of the protector's Secret Key; here
/// the card holds the organizer key.
fn for_organizer(note: &str) -> String {
    note.replace(
        "can unwrap your Secret Key",
        "can use your organizer key, and so let any of your members' accounts in",
    )
    .replace(
        "(which would lock you out of this protector, not reveal the Secret Key)",
        "(which would destroy your organizer key, not reveal it)",
    )
}

fn parse_recipient(text: &str) -> Result<Recipient, AgentError> {
    Recipient::parse(text).map_err(|e| err(ErrorCode::InvalidInput, e.to_string()))
}

fn has_key_error() -> AgentError {
    err(
        ErrorCode::Exists,
        "this account has an organizer key already (one per account): `keyward organizer show` \
         prints its recipient",
    )
}

fn member_error(e: MemberVaultError) -> AgentError {
    let code = match e {
        MemberVaultError::NoKey | MemberVaultError::NotEnrolled(..) => ErrorCode::NotFound,
        MemberVaultError::OwnAccount | MemberVaultError::OnCard(..) | MemberVaultError::InVault => {
            ErrorCode::InvalidInput
        }
        MemberVaultError::BadKey | MemberVaultError::Tampered(_) => ErrorCode::Corrupt,
    };
    err(code, e.to_string())
}

impl Agent {
    fn used_grants_file(&self, id: &AccountId) -> PathBuf {
        self.paths.state_dir.join(format!("used-grants-{id}"))
    }

    /// The grant ids used on this device (32 hex digits a line).
    fn used_grants(&self, id: &AccountId) -> Vec<String> {
        std::fs::read_to_string(self.used_grants_file(id))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| l.len() == 32 && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned)
            .collect()
    }

    fn remember_used_grant(&self, id: &AccountId, grant_id: &str) {
        let mut all = self.used_grants(id);
        if all.iter().any(|g| g == grant_id) {
            return;
        }
        all.push(grant_id.to_owned());
        let mut text = all.join("\n");
        text.push('\n');
        let _ = store::ensure_private_dir(&self.paths.state_dir, self.uid);
        if let Err(e) = store::write_atomic(&self.used_grants_file(id), text.as_bytes()) {
            tracing::warn!("cannot record the used recovery grant: {e}");
        }
    }

    /// At `init`: enrolls the organizers of the machine policy (each write
    /// on its own; one that fails is logged and the account stays usable).
    pub(super) fn enroll_policy_organizers(&self, v: &mut vault::Unlocked, path: &Path, now: u64) {
        for p in read_policy(&policy_dir()) {
            match v.add_organizer(path, &p.recipient, &p.name, p.required, now) {
                Ok(()) => tracing::info!(
                    file = %p.file.display(),
                    fingerprint = %p.recipient.fingerprint(),
                    required = p.required,
                    "organizer enrolled by machine policy"
                ),
                Err(e) => tracing::warn!(
                    file = %p.file.display(),
                    "organizer of the machine policy not enrolled: {e}"
                ),
            }
        }
    }

    /// `OrganizerCreate`: this account's organizer key.
    pub async fn organizer_create(self: &Arc<Self>) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        let now = self.clock.unix_now();
        let r = self.edit_vault(|v, path| {
            v.create_organizer_key(path, now).map_err(|e| match e {
                ChangeError::Exists(_) => has_key_error(),
                other => change_error(other),
            })
        })?;
        tracing::info!(fingerprint = %r.fingerprint(), "organizer key created");
        Ok(Response::OrganizerKey {
            recipient: r.display(),
            fingerprint: r.fingerprint(),
        })
    }

    /// `OrganizerCreateCard`: this account's organizer key, generated on a
    /// YubiKey (the enrollment steps of the YubiKey protector: the card
    /// chosen by serial, the PIN and the management key asked through `io`);
    /// the vault records where it is (record 0x0a).
    pub async fn organizer_create_card(
        self: &Arc<Self>,
        serial: Option<u32>,
        slot: Option<u8>,
        pin: Option<Secret>,
        io: Arc<dyn UnlockIo>,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        // Refused before the card is touched: a key made on it stays there.
        if self.with_session(|s| Ok(s.vault.has_organizer_key()))? {
            return Err(has_key_error());
        }
        let opts = EnrollOptions {
            serial,
            slot,
            touch: Touch::Never,
            pin,
            management_key: None,
        };
        let notices = io.clone();
        let made = tokio::task::spawn_blocking(move || yubikey::enroll(&opts, &*io))
            .await
            .map_err(internal)?
            .map_err(protector_error)?;
        for note in &made.notes {
            notices.notice(&for_organizer(note));
        }
        let now = self.clock.unix_now();
        let r = self.edit_vault(|v, path| {
            v.set_organizer_card(
                path,
                made.serial,
                made.slot,
                made.pin_policy,
                made.touch_policy,
                &made.card_pk,
                now,
            )
            .map_err(|e| {
                let mut ae = match e {
                    ChangeError::Exists(_) => has_key_error(),
                    other => change_error(other),
                };
                ae.message = format!(
                    "{}; the key made in slot {:02x} of YubiKey {} stays on the card (delete it \
                     with `ykman piv keys delete {:02x}`)",
                    ae.message, made.slot, made.serial, made.slot
                );
                ae
            })
        })?;
        tracing::info!(
            fingerprint = %r.fingerprint(),
            serial = made.serial,
            slot = %format!("{:02x}", made.slot),
            "organizer key created on a YubiKey"
        );
        Ok(Response::OrganizerCardKey {
            recipient: r.display(),
            fingerprint: r.fingerprint(),
            serial: made.serial,
            slot: made.slot,
        })
    }

    /// `OrganizerShow` (`OrganizerCardKey` for a key on a YubiKey).
    pub fn organizer_show(&self) -> Result<Response, AgentError> {
        let (r, card) = self.with_session(|s| {
            let r = s.vault.organizer_recipient().map_err(|e| match e {
                MemberVaultError::NoKey => err(ErrorCode::NotFound, e.to_string()),
                other => member_error(other),
            })?;
            Ok((r, s.vault.organizer_card().map(|c| (c.serial, c.slot))))
        })?;
        Ok(match card {
            Some((serial, slot)) => Response::OrganizerCardKey {
                recipient: r.display(),
                fingerprint: r.fingerprint(),
                serial,
                slot,
            },
            None => Response::OrganizerKey {
                recipient: r.display(),
                fingerprint: r.fingerprint(),
            },
        })
    }

    /// `OrganizerCheck`: a recipient's canonical form and fingerprint.
    pub fn organizer_check(&self, recipient: &str) -> Result<Response, AgentError> {
        let r = parse_recipient(recipient)?;
        Ok(Response::OrganizerKey {
            recipient: r.display(),
            fingerprint: r.fingerprint(),
        })
    }

    /// `OrganizerAdd` (re-asks the password: the account key goes somewhere new).
    pub async fn organizer_add(
        self: &Arc<Self>,
        recipient: &str,
        name: &str,
        password: &Secret,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        // Typos and bad names first: never counted.
        let r = parse_recipient(recipient)?;
        organizer::check_name(name).map_err(|e| err(ErrorCode::InvalidInput, e))?;
        let own = self.with_session(|s| Ok(s.vault.organizer_recipient().ok()))?;
        if own == Some(r) {
            return Err(err(
                ErrorCode::InvalidInput,
                "this is your own organizer key: an organizer cannot recover their own account; \
                 keep a recovery code instead",
            ));
        }
        self.verify_password_counted(password, "no organizer added")
            .await?;
        let now = self.clock.unix_now();
        self.edit_vault(|v, path| {
            v.add_organizer(path, &r, name, false, now)
                .map_err(|e| match e {
                    ChangeError::Exists(_) => err(
                        ErrorCode::Exists,
                        format!("organizer {} is enrolled already", r.fingerprint()),
                    ),
                    other => change_error(other),
                })
        })?;
        tracing::info!(fingerprint = %r.fingerprint(), "organizer enrolled");
        Ok(Response::OrganizerChanged {
            fingerprint: r.fingerprint(),
            name: name.to_owned(),
            notes: vec![
                "this organizer can now let you back in if you lose your Master Password or \
                 Secret Key; with a copy of your vault file they can also read it"
                    .into(),
            ],
        })
    }

    /// `OrganizerList` (works while locked: names, fingerprints and dates
    /// are in the vault file in clear).
    pub fn organizer_list(&self) -> Result<Response, AgentError> {
        let wraps = match &*self.read_state() {
            State::Unlocked(s) => s.vault.file().organizers.wraps.clone(),
            State::Locked(a) => {
                vault::read(&a.vault_path)
                    .map_err(read_error)?
                    .vault
                    .organizers
                    .wraps
            }
            State::NoAccount => return Err(no_account_error()),
        };
        Ok(Response::Organizers(
            wraps
                .iter()
                .map(|w| OrganizerInfo {
                    name: w.name.clone(),
                    fingerprint: Recipient::from_point(&w.org_pk)
                        .map(|r| r.fingerprint())
                        .unwrap_or_default(),
                    added: w.added,
                    required: w.flags & FLAG_REQUIRED != 0,
                })
                .collect(),
        ))
    }

    /// `OrganizerRemove` by fingerprint or name (re-asks the password; a
    /// required organizer stays).
    pub async fn organizer_remove(
        self: &Arc<Self>,
        which: &str,
        password: &Secret,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        let found: Vec<(Recipient, String, bool)> = self.with_session(|s| {
            Ok(s.vault
                .file()
                .organizers
                .wraps
                .iter()
                .filter_map(|w| {
                    let r = Recipient::from_point(&w.org_pk).ok()?;
                    (organizer::fingerprint_matches(&r.fingerprint(), which) || w.name == which)
                        .then(|| (r, w.name.clone(), w.flags & FLAG_REQUIRED != 0))
                })
                .collect())
        })?;
        let (r, name, required) = match found.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(err(
                    ErrorCode::NotFound,
                    format!(
                        "no organizer has the fingerprint or name {which:?} (see `keyward organizer list`)"
                    ),
                ));
            }
            _ => {
                return Err(err(
                    ErrorCode::InvalidInput,
                    format!("several organizers are named {which:?}: give the fingerprint"),
                ));
            }
        };
        if required {
            return Err(err(
                ErrorCode::InvalidInput,
                format!(
                    "organizer {} ({}) is required by this machine's policy and cannot be \
                     removed by you; ask the machine's administrator",
                    r.fingerprint(),
                    name
                ),
            ));
        }
        self.verify_password_counted(password, "no organizer removed")
            .await?;
        self.edit_vault(|v, path| v.remove_organizer(path, r.as_bytes()).map_err(change_error))?;
        tracing::info!(fingerprint = %r.fingerprint(), "organizer removed");
        Ok(Response::OrganizerChanged {
            fingerprint: r.fingerprint(),
            name,
            notes: vec![
                "copies of your vault made before now still open with this organizer's key; \
                 only the current file and later ones do not"
                    .into(),
            ],
        })
    }

    /// `OrganizerRecover`: opens a member's vault copy with this account's
    /// organizer key and makes a grant (re-asks the organizer's password).
    pub async fn organizer_recover(
        self: &Arc<Self>,
        vault_path: &str,
        hours: u32,
        password: &Secret,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        let path = check_recover_args(vault_path, hours)?;
        // Said before the password is asked: there is no key to use here.
        self.with_session(|s| {
            if let Some(c) = s.vault.organizer_card() {
                return Err(member_error(MemberVaultError::OnCard(c.serial, c.slot)));
            }
            s.vault
                .organizer_recipient()
                .map(|_| ())
                .map_err(member_error)
        })?;
        self.verify_password_counted(password, "no grant made")
            .await?;
        let parsed = read_member_vault(&path)?;
        let id = parsed.vault.account_id;
        let account_key =
            self.with_session(|s| s.vault.open_member_vault(&parsed).map_err(member_error))?;
        self.grant_for(id, hours, &account_key)
    }

    /// `OrganizerRecoverCard`: as `OrganizerRecover`, with the organizer key
    /// on a YubiKey: the card computes the shared secret of the member's
    /// organizer wrap after its PIN (which takes the place of the password:
    /// SECURITY.md §11.1). Everything that can be refused without the card
    /// is refused before the PIN is asked.
    pub async fn organizer_recover_card(
        self: &Arc<Self>,
        vault_path: &str,
        hours: u32,
        pin: Option<Secret>,
        io: Arc<dyn UnlockIo>,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        let path = check_recover_args(vault_path, hours)?;
        let card = self.with_session(|s| match s.vault.organizer_card() {
            Some(c) => Ok(c.clone()),
            None if s.vault.has_organizer_key() => Err(member_error(MemberVaultError::InVault)),
            None => Err(member_error(MemberVaultError::NoKey)),
        })?;
        let parsed = read_member_vault(&path)?;
        let id = parsed.vault.account_id;
        let (org, wrap) = self.with_session(|s| {
            s.vault
                .member_wrap(&parsed)
                .map(|(r, w)| (r, w.clone()))
                .map_err(member_error)
        })?;
        // (The parser checked that it is a point.)
        let epk =
            piv::uncompress(&wrap.epk).map_err(|_| member_error(MemberVaultError::Tampered(id)))?;
        let (serial, slot) = (card.serial, card.slot);
        let shared = tokio::task::spawn_blocking(move || {
            let yk = yubikey::open_raw(serial).map_err(|e| {
                if yubikey::is_absent(&e) {
                    ProtectorError::Unavailable(format!(
                        "YubiKey {serial}, which holds your organizer key, is not inserted; \
                         insert it and try again"
                    ))
                } else {
                    yubikey::open_error(serial, e)
                }
            })?;
            let agreement = CardAgreement {
                serial,
                slot,
                card_pk: &card.card_pk,
                touch_policy: card.touch_policy,
                pin: pin.as_ref(),
                pin_label: format!(
                    "PIN of YubiKey {serial} (your organizer key), to let account {id} back in"
                ),
                key_name: "your organizer key",
                gone_advice: "the organizer key is gone, and the members enrolled with it can no \
                              longer be recovered with it: they need another organizer or a \
                              recovery code"
                    .into(),
                again: "try again",
            };
            yubikey::key_agreement(yk, &agreement, &epk, &*io)
        })
        .await
        .map_err(internal)?
        .map_err(|e| {
            match &e {
                ProtectorError::WrongPin { tries_left, .. } => tracing::warn!(
                    serial,
                    tries_left,
                    member = %id,
                    "wrong PIN for the YubiKey of the organizer key; no grant made"
                ),
                ProtectorError::PinBlocked { .. } => tracing::warn!(
                    serial,
                    member = %id,
                    "the PIN of the YubiKey of the organizer key is blocked; no grant made"
                ),
                _ => {}
            }
            protector_error(e)
        })?;
        let account_key = open_member_vault_with(&parsed, org, &wrap, &shared);
        drop(shared);
        let account_key = account_key.map_err(member_error)?;
        self.grant_for(id, hours, &account_key)
    }

    /// Makes a grant of `account_key` for account `id`, valid `hours`.
    fn grant_for(
        &self,
        id: AccountId,
        hours: u32,
        account_key: &Key32,
    ) -> Result<Response, AgentError> {
        let expires = self.clock.unix_now() + u64::from(hours) * 3_600;
        let (grant, code) = Grant::new(id, expires, account_key.expose()).map_err(internal)?;
        tracing::info!(member = %id, grant = %hex(&grant.grant_id), expires, "recovery grant made");
        Ok(Response::GrantMade {
            account_id: id.to_string(),
            grant_id: hex(&grant.grant_id),
            expires,
            code: Secret::from(code.display().expose()),
            grant: grant.to_json(),
        })
    }

    /// `RecoverWithGrant`: as `Recover`, with an organizer's grant. Every
    /// recovery code is revoked in the same write (the organizer's grant
    /// replaces them; the member makes new ones).
    pub async fn recover_with_grant(
        self: &Arc<Self>,
        grant_text: &str,
        code: &Secret,
        new_password: &Secret,
    ) -> Result<Response, AgentError> {
        let mark = self.lock_mark();
        let _heavy = self.heavy.lock().await;
        let account = match &*self.read_state() {
            State::NoAccount => return Err(no_account_error()),
            State::Locked(a) => a.clone(),
            State::Unlocked(s) => s.account.clone(),
        };
        // Nothing below is counted: it is all said by the grant file itself.
        let grant = Grant::from_json(grant_text)
            .map_err(|e| err(ErrorCode::InvalidInput, e.to_string()))?;
        if grant.account_id != account.id {
            return Err(err(
                ErrorCode::InvalidInput,
                format!(
                    "this grant is for account {}, not for this one ({}); nothing was tried",
                    grant.account_id, account.id
                ),
            ));
        }
        let now = self.clock.unix_now();
        if now >= grant.expires {
            return Err(err(
                ErrorCode::InvalidInput,
                format!(
                    "this grant expired on {}; ask your organizer for a new one",
                    utc(grant.expires)
                ),
            ));
        }
        let gid = hex(&grant.grant_id);
        let used = || {
            err(
                ErrorCode::InvalidInput,
                "this grant was used already (a grant works once); ask your organizer for a new one",
            )
        };
        if self.used_grants(&account.id).contains(&gid) {
            return Err(used());
        }
        let text = code.expose_str().ok_or_else(|| {
            err(
                ErrorCode::InvalidInput,
                "this grant code has a typo: it is not text",
            )
        })?;
        let code =
            GrantCode::parse(text).map_err(|e| err(ErrorCode::InvalidInput, e.to_string()))?;
        if let Some(e) = self.backoff_error("not recovering") {
            return Err(e);
        }
        let new_password = new_password_from(new_password)?;
        let outcome = self
            .recover_opened(
                account.vault_path,
                new_password,
                mark,
                "organizer grant",
                move |me, path, now| {
                    let parsed = vault::read(path).map_err(read_error)?;
                    me.refuse_rollback(&parsed.vault.account_id, parsed.vault.generation)?;
                    if grant_used(&parsed.vault, &grant.grant_id) {
                        return Err(used());
                    }
                    match unlock_with_grant(parsed, &grant, &code) {
                        Ok(mut v) => {
                            let revoked = v.stage_grant_recovery(&grant.grant_id, now);
                            Ok(Ok((v, (revoked, hex(&grant.grant_id)))))
                        }
                        Err(UnlockError::WrongRecoveryCode) => Ok(Err(())),
                        Err(e @ (UnlockError::Tampered | UnlockError::BadItem(_))) => {
                            Err(err(ErrorCode::Corrupt, e.to_string()))
                        }
                        Err(e) => Err(internal(e)),
                    }
                },
                |me, v, _path, _now, (revoked, gid): (Vec<String>, String), notes| {
                    let id = v.account_id();
                    me.remember_used_grant(&id, &gid);
                    for code_id in &revoked {
                        me.remember_revoked(&id, code_id);
                    }
                    if !revoked.is_empty() {
                        notes.push(format!(
                            "your {} recovery code(s) were revoked: whoever has one could otherwise \
                             still take over the account you just recovered; make a new one with \
                             `keyward recovery-code new`",
                            revoked.len()
                        ));
                    }
                },
            )
            .await?;
        let Some((shown, mut notes)) = outcome else {
            let mut e = self.record_failure(
                "this code does not open this grant (a wrong code, or the grant file was altered)",
            );
            e.code = ErrorCode::WrongRecoveryCode;
            return Err(e);
        };
        notes.push("the grant is used up: it cannot be used again".into());
        tracing::info!(grant = %gid, "recovered with an organizer's grant: new Secret Key and Master Password");
        Ok(Response::NewSecretKey {
            secret_key: shown,
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enrollment_notes_speak_of_the_organizer_key() {
        let pin = for_organizer(
            "WARNING: the PIN of YubiKey 5 is still the factory default 123456, so anyone who \
             takes the card can unwrap your Secret Key. Change it: `ykman piv access change-pin`",
        );
        assert!(
            pin.contains("can use your organizer key") && !pin.contains("Secret Key"),
            "{pin}"
        );
        let mgm = for_organizer(
            "WARNING: YubiKey 5 still has the factory-default management key: anyone holding \
             the card can replace its keys (which would lock you out of this protector, not reveal \
             the Secret Key). Change it.",
        );
        assert!(
            mgm.contains("would destroy your organizer key") && !mgm.contains("Secret Key"),
            "{mgm}"
        );
    }

    #[test]
    fn recover_arguments_are_checked_first() {
        assert!(check_recover_args("member.kwv", 72).is_err());
        assert!(check_recover_args("/m.kwv", 0).is_err());
        assert!(check_recover_args("/m.kwv", MAX_GRANT_HOURS + 1).is_err());
        assert_eq!(
            check_recover_args("/m.kwv", MAX_GRANT_HOURS).unwrap(),
            PathBuf::from("/m.kwv")
        );
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13 UTC");
    }

    #[test]
    fn policy_files_are_parsed_strictly() {
        let r = crate::account::organizer::OrganizerSecret::generate()
            .unwrap()
            .recipient()
            .unwrap();
        let f = Path::new("/etc/keyward/organizers.d/family.pub");
        let p = parse_policy_file(f, &format!("# the family\n{}\n", r.display())).unwrap();
        assert_eq!(
            (p.recipient, p.name.as_str(), p.required),
            (r, "family", false)
        );
        let p = parse_policy_file(
            f,
            &format!("{}\nname = \"IT desk\"\nrequired = true\n", r.display()),
        )
        .unwrap();
        assert_eq!((p.name.as_str(), p.required), ("IT desk", true));
        assert!(parse_policy_file(f, "").is_err());
        assert!(parse_policy_file(f, &format!("{}\nrequired = yes", r.display())).is_err());
        assert!(parse_policy_file(f, &format!("{}\ncolour = red", r.display())).is_err());
        assert!(parse_policy_file(f, &format!("{0}\n{0}", r.display())).is_err());
        let typo = r.display().replacen('-', "-Z", 1);
        assert!(parse_policy_file(f, &typo).is_err());
    }
}
