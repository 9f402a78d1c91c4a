//! Enrolling, listing and removing the protectors that keep the Secret Key
//! on this device (YubiKeys, the OS keychain, a file).

use super::state::{
    Agent, State, change_error, err, internal, no_account_error, protector_ref, read_error,
};
use crate::protect::keychain::KeychainProtector;
use crate::protect::yubikey::{self, EnrollOptions, Touch};
use crate::protect::{ProtectorError, Store, UnlockIo};
use crate::vault::format::{FLAG_STALE, ProtectorKind, VaultFile};
use crate::vault::{self, ProtectorRef};
use keyward_client::message::{
    AgentError, ErrorCode, ProtectorAddRequest, ProtectorInfo, Response,
};
use std::sync::Arc;

/// How the note of a `ProtectorAdd` that found the card already enrolled
/// begins (PROTOCOL.md; the CLI then says that nothing was enrolled).
pub const ALREADY_ENROLLED: &str = "already enrolled:";

/// Maps a protector failure to a protocol error.
pub(super) fn protector_error(e: ProtectorError) -> AgentError {
    match e {
        ProtectorError::WrongPin { tries_left, .. } => {
            let mut ae = err(ErrorCode::WrongPin, e.to_string());
            ae.tries_left = Some(tries_left);
            ae
        }
        ProtectorError::PinBlocked { .. } => err(ErrorCode::PinBlocked, e.to_string()),
        ProtectorError::Cancelled => err(ErrorCode::Cancelled, "cancelled"),
        other => err(ErrorCode::Protector, other.to_string()),
    }
}

fn describe(
    file: &VaultFile,
    state_dir: &std::path::Path,
    mine: impl Fn(&crate::vault::format::ProtectorRecord) -> bool,
) -> Vec<ProtectorInfo> {
    let mut out = Vec::new();
    for w in &file.piv_wraps {
        out.push(ProtectorInfo {
            id: yubikey::protector_id(w.serial, w.slot),
            kind: "yubikey".into(),
            details: format!(
                "YubiKey serial {}, PIV slot {:02x}, PIN {}, touch {}",
                w.serial,
                w.slot,
                yubikey::pin_policy_name(w.pin_policy),
                yubikey::touch_policy_name(w.touch_policy)
            ),
            added: w.added,
            last_used: (w.last_used != 0).then_some(w.last_used),
            stale: false,
        });
    }
    // This device's file and keychain protectors (`keyward device list`
    // shows the other devices').
    for p in file.protectors.iter().filter(|p| mine(p)) {
        let key_file = state_dir.join(format!("secret-key-{}", file.account_id));
        // The record is in the vault, the file on one device: on another
        // (a copied vault) it is missing, and unusable as a stale one.
        let missing = p.kind == ProtectorKind::File && !key_file.exists();
        let details = match p.kind {
            ProtectorKind::File if missing => format!(
                "{} is missing on this device: re-enroll with `keyward protector add file`",
                key_file.display()
            ),
            ProtectorKind::File => format!(
                "{} (0600 file: protects only against other users)",
                key_file.display()
            ),
            ProtectorKind::Keychain => format!(
                "OS keychain, service \"keyward\", user \"{}\"",
                file.account_id
            ),
        };
        out.push(ProtectorInfo {
            id: p.kind.name().into(),
            kind: p.kind.name().into(),
            details,
            added: p.added,
            last_used: (p.last_used != 0).then_some(p.last_used),
            stale: missing || p.flags & FLAG_STALE != 0,
        });
    }
    out
}

impl Agent {
    /// `ProtectorList` (works while locked: nothing secret is listed).
    pub fn protector_list(&self) -> Result<Response, AgentError> {
        let file = match &*self.read_state() {
            State::Unlocked(s) => s.vault.file().clone(),
            State::Locked(a) => vault::read(&a.vault_path).map_err(read_error)?.vault,
            State::NoAccount => return Err(no_account_error()),
        };
        Ok(Response::Protectors(describe(
            &file,
            &self.paths.state_dir,
            self.my_protector_records(),
        )))
    }

    /// `ProtectorAdd` (re-asks the password: the Secret Key goes somewhere
    /// new).
    pub async fn protector_add(
        self: &Arc<Self>,
        req: ProtectorAddRequest,
        io: Arc<dyn UnlockIo>,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        self.verify_password_counted(&req.password, "no protector added")
            .await?;
        let (id, sk) = self.with_session(|s| {
            let sk = s
                .vault
                .secret_key()
                .ok_or_else(|| internal("the Secret Key is not known to this session"))?;
            Ok((s.account.id, sk))
        })?;
        let now = self.clock.unix_now();
        match req.kind.as_str() {
            "yubikey" => {
                let touch: Touch = match req.touch.as_deref() {
                    None => Touch::Never,
                    Some(t) => t.parse().map_err(|_| {
                        err(
                            ErrorCode::InvalidInput,
                            format!("unknown touch policy {t:?} (never, always, cached)"),
                        )
                    })?,
                };
                // A card this vault already has a key on (enrolled on
                // another device, say) unlocks here as it is.
                if req.slot.is_none() {
                    let wraps = self.with_session(|s| Ok(s.vault.file().piv_wraps.clone()))?;
                    let serial = req.serial;
                    if let Some(w) =
                        tokio::task::spawn_blocking(move || yubikey::enrolled_wrap(&wraps, serial))
                            .await
                            .map_err(internal)?
                    {
                        let pid = yubikey::protector_id(w.serial, w.slot);
                        return Ok(Response::ProtectorAdded {
                            id: pid.clone(),
                            notes: vec![format!(
                                "{ALREADY_ENROLLED} YubiKey {} holds this vault's key in slot \
                                 {:02x} ({pid}), which unlocks every device the card is \
                                 plugged into, this one too; nothing was changed (pass --slot \
                                 to put a second key on the card)",
                                w.serial, w.slot
                            )],
                        });
                    }
                }
                let opts = EnrollOptions {
                    serial: req.serial,
                    slot: req.slot,
                    touch,
                    pin: req.pin,
                    management_key: req.management_key,
                };
                let enrolled = tokio::task::spawn_blocking(move || yubikey::enroll(&opts, &*io))
                    .await
                    .map_err(internal)?
                    .map_err(protector_error)?;
                let pid = yubikey::protector_id(enrolled.serial, enrolled.slot);
                self.edit_vault(|v, path| {
                    v.add_piv(
                        path,
                        enrolled.serial,
                        enrolled.slot,
                        enrolled.pin_policy,
                        enrolled.touch_policy,
                        &enrolled.card_pk,
                        now,
                    )
                    .map_err(change_error)
                })?;
                tracing::info!(protector = %pid, "YubiKey enrolled");
                Ok(Response::ProtectorAdded {
                    id: pid,
                    notes: enrolled.notes,
                })
            }
            "keychain" => {
                tokio::task::spawn_blocking(move || KeychainProtector::new(id).store(&sk))
                    .await
                    .map_err(internal)?
                    .map_err(protector_error)?;
                self.edit_vault(|v, path| {
                    v.upsert_protector(path, ProtectorKind::Keychain, now)
                        .map_err(change_error)
                })?;
                tracing::info!("keychain protector enrolled");
                Ok(Response::ProtectorAdded {
                    id: "keychain".into(),
                    notes: vec![
                        "the Secret Key is in your OS keychain (service \"keyward\")".into(),
                    ],
                })
            }
            "file" => {
                self.file_protector(&id)
                    .store(&sk)
                    .map_err(protector_error)?;
                self.edit_vault(|v, path| {
                    v.upsert_protector(path, ProtectorKind::File, now)
                        .map_err(change_error)
                })?;
                Ok(Response::ProtectorAdded {
                    id: "file".into(),
                    notes: vec!["the file protector protects the Secret Key only against other users of this machine".into()],
                })
            }
            other => Err(err(
                ErrorCode::InvalidInput,
                format!("unknown protector {other:?} (yubikey, keychain or file)"),
            )),
        }
    }

    /// `ProtectorRemove` (re-asks the password: removing one can take away
    /// the user's way in on this device).
    pub async fn protector_remove(
        self: &Arc<Self>,
        id: &str,
        password: &keyward_client::Secret,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        self.verify_password_counted(password, "no protector removed")
            .await?;
        let file = self.with_session(|s| Ok(s.vault.file().clone()))?;
        // `yubikey:SERIAL` names the card's only slot, if it has one.
        let which = protector_ref(id).or_else(|| {
            let serial: u32 = id.strip_prefix("yubikey:")?.parse().ok()?;
            let mut slots = file.piv_wraps.iter().filter(|w| w.serial == serial);
            let w = slots.next()?;
            slots.next().is_none().then_some(ProtectorRef::Piv {
                serial,
                slot: w.slot,
            })
        });
        let Some(which) = which else {
            return Err(err(
                ErrorCode::NotFound,
                format!("no protector {id:?} is enrolled (see `keyward protector list`)"),
            ));
        };
        let mut notes = Vec::new();
        let account = file.account_id;
        match which {
            ProtectorRef::Kind(ProtectorKind::File) => {
                self.file_protector(&account).erase().map_err(protector_error)?;
            }
            ProtectorRef::Kind(ProtectorKind::Keychain) => {
                let erased = tokio::task::spawn_blocking(move || KeychainProtector::new(account).erase())
                    .await
                    .map_err(internal)?;
                if let Err(e) = erased {
                    notes.push(format!("could not delete the keychain entry ({e}); delete it by hand"));
                }
            }
            ProtectorRef::Piv { slot, .. } => notes.push(format!(
                "the key stays on the card in slot {slot:02x}; clear it with `ykman piv keys delete {slot:02x}` if nothing else uses it"
            )),
        }
        let remaining = self.edit_vault(|v, path| {
            v.remove_protector(path, which).map_err(|e| match e {
                vault::ChangeError::NotFound(..) => err(
                    ErrorCode::NotFound,
                    format!("no protector {id:?} is enrolled"),
                ),
                other => change_error(other),
            })?;
            Ok(v.file().piv_wraps.len() + v.file().protectors.iter().filter(|p| v.owns(p)).count())
        })?;
        if remaining == 0 {
            notes.push(
                "no protector keeps the Secret Key on this device any more: type it at each unlock \
                 (`keyward unlock --with none`), or enroll one"
                    .into(),
            );
        }
        tracing::info!(protector = id, "protector removed");
        Ok(Response::ProtectorAdded {
            id: id.to_owned(),
            notes,
        })
    }
}
