//! The way back in: recovery codes, recovering with one, rotating the Secret
//! Key, and what the Emergency Kit prints.
//!
//! A new Secret Key is put in place in three steps (see
//! [`crate::vault::Unlocked::begin_secret_key_change`]): one atomic vault
//! write that adds the new password wrap beside the old and re-seals every
//! YubiKey wrap; then the file and keychain protectors take the new key; then
//! a second write drops the old wrap. Killed at any moment, the vault still
//! opens with the old credentials or the new ones.

use super::state::{
    Account, Agent, Session, State, change_error, err, internal, new_password_from,
    no_account_error, password_from, read_error,
};
use crate::account::recovery::RecoveryCode;
use crate::account::secret_key::SecretKey;
use crate::vault::format::ProtectorKind;
use crate::vault::{self, UnlockError};
use keyward_client::Secret;
use keyward_client::message::{AgentError, ErrorCode, RecoveryCodeInfo, Response};
use std::path::Path;
use std::sync::Arc;

impl Agent {
    /// Checks the Master Password against the unlocked vault (one Argon2id
    /// run, on a blocking thread). A wrong one counts as a failed attempt.
    /// Every request that lets the Secret Key or the account key go
    /// somewhere new, or takes away a way back in, calls this first
    /// (docs/SECURITY.md, "What each request needs").
    pub(super) async fn verify_password_counted(
        self: &Arc<Self>,
        password: &Secret,
        what: &str,
    ) -> Result<(), AgentError> {
        if let Some(e) = self.backoff_error(what) {
            return Err(e);
        }
        let pw = password_from(password)?;
        let me = self.clone();
        let ok = tokio::task::spawn_blocking(move || {
            me.with_session(|s| s.vault.verify_password(&pw).map_err(change_error))
        })
        .await
        .map_err(internal)??;
        if ok {
            let _ = self.attempts().reset();
            Ok(())
        } else {
            Err(self.record_failure("wrong Master Password"))
        }
    }

    /// Phase 2 and 3 of a Secret Key change on an unlocked vault: the file and
    /// keychain protectors take the new key (one that cannot is marked stale),
    /// then the old password wrap goes. Returns notes for the user.
    pub(super) fn complete_secret_key_change(
        &self,
        v: &mut vault::Unlocked,
        path: &Path,
        pending: &vault::PendingChange,
    ) -> Result<Vec<String>, AgentError> {
        let mut notes = self.store_secret_key_everywhere(v, path, &pending.new_secret_key);
        v.finish_secret_key_change(path, pending)
            .map_err(change_error)?;
        for p in &v.file().piv_wraps {
            notes.push(format!(
                "YubiKey {} (slot {:02x}): the new Secret Key is sealed for it (the card was not needed)",
                p.serial, p.slot
            ));
        }
        Ok(notes)
    }

    /// Stores `sk` in every enrolled file/keychain protector.
    pub(super) fn store_secret_key_everywhere(
        &self,
        v: &mut vault::Unlocked,
        path: &Path,
        sk: &SecretKey,
    ) -> Vec<String> {
        let mut notes = Vec::new();
        // This device's file and keychain protectors; other devices' ask
        // for the new Secret Key at their next unlock (SECURITY.md §18.4).
        let kinds: Vec<ProtectorKind> = v
            .file()
            .protectors
            .iter()
            .filter(|p| v.owns(p))
            .map(|p| p.kind)
            .collect();
        for kind in kinds {
            let stored = match kind {
                ProtectorKind::File => {
                    crate::protect::Store::store(&self.file_protector(&v.account_id()), sk)
                        .map_err(|e| e.to_string())
                }
                ProtectorKind::Keychain => self.keychain_store(&v.account_id(), sk),
            };
            match stored {
                Ok(()) => {
                    let _ = v.upsert_protector(path, kind, self.clock.unix_now());
                    notes.push(format!("{}: now holds the new Secret Key", kind.name()));
                }
                Err(e) => {
                    let _ = v.mark_stale(path, kind);
                    notes.push(format!(
                        "{}: could not take the new Secret Key ({e}); it is marked stale: re-enroll it with \
                         `keyward protector add {}`",
                        kind.name(),
                        kind.name()
                    ));
                }
            }
        }
        notes
    }

    /// `RecoveryCodeNew`.
    pub async fn recovery_code_new(
        self: &Arc<Self>,
        password: &Secret,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        self.verify_password_counted(password, "no recovery code made")
            .await?;
        let now = self.clock.unix_now();
        self.edit_vault(|v, path| {
            let (code, id) = v.add_recovery_code(path, now).map_err(change_error)?;
            tracing::info!(id = %vault::hex(&id), "recovery code created");
            Ok(Response::RecoveryCode {
                id: vault::hex(&id),
                code: Secret::from(code.display().expose()),
            })
        })
    }

    /// `RecoveryCodeList` (works while locked: ids and dates are not secret).
    pub fn recovery_code_list(&self) -> Result<Response, AgentError> {
        let wraps = match &*self.read_state() {
            State::Unlocked(s) => s.vault.file().recovery_wraps.clone(),
            State::Locked(a) => {
                vault::read(&a.vault_path)
                    .map_err(read_error)?
                    .vault
                    .recovery_wraps
            }
            State::NoAccount => return Err(no_account_error()),
        };
        Ok(Response::RecoveryCodes(
            wraps
                .iter()
                .map(|w| RecoveryCodeInfo {
                    id: vault::hex(&w.code_id),
                    created: w.created,
                    last_used: (w.last_used != 0).then_some(w.last_used),
                })
                .collect(),
        ))
    }

    /// `RecoveryCodeRevoke` (re-asks the password: revoking takes away a
    /// way back in).
    pub async fn recovery_code_revoke(
        self: &Arc<Self>,
        id: &str,
        password: &Secret,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        self.verify_password_counted(password, "no recovery code revoked")
            .await?;
        self.edit_vault(|v, path| {
            let full = v.revoke_recovery_code(path, id).map_err(|e| match e {
                vault::ChangeError::NotFound(..) => err(
                    ErrorCode::NotFound,
                    format!("no recovery code has an id starting with {id:?} (see `keyward recovery-code list`)"),
                ),
                other => change_error(other),
            })?;
            self.remember_revoked(&v.account_id(), &full);
            tracing::info!(id = %full, "recovery code revoked");
            Ok(Response::Ok)
        })
    }

    /// `Recover`: works while locked, with no Secret Key and no password.
    pub async fn recover(
        self: &Arc<Self>,
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
        let code = Self::parse_code(code)?;
        if let Some(e) = self.backoff_error("not recovering") {
            return Err(e);
        }
        let new_password = new_password_from(new_password)?;
        let outcome = self
            .recover_opened(
                account.vault_path,
                new_password,
                mark,
                "recovery code",
                move |me, path, _now| {
                    Ok(me.open_with_code(path, &code, true)?.map(|v| {
                        let code_id = code.code_id(&v.account_id());
                        (v, code_id)
                    }))
                },
                |_, v, path, now, code_id, notes| {
                    if let Err(e) = v.touch_recovery_code(path, &code_id, now) {
                        notes.push(format!(
                            "could not record the use of the recovery code: {e}"
                        ));
                    }
                },
            )
            .await?;
        let Some((shown, mut notes)) = outcome else {
            return Err(self.wrong_code_error());
        };
        notes.push("the recovery code stays valid; revoke it with `keyward recovery-code revoke` if it was exposed".into());
        tracing::info!("recovered with a recovery code: new Secret Key and Master Password");
        Ok(Response::NewSecretKey {
            secret_key: shown,
            notes,
        })
    }

    /// What `Recover` and `RecoverWithGrant` share, once the way in is
    /// parsed and the back-off checked: on a blocking thread, holding the
    /// writers' lock from the read to the install, `open` opens the vault
    /// at `path` (`Ok(Err(()))` for a wrong code, which the caller counts
    /// with its own message; nothing is counted here), a new password wrap
    /// and Secret Key are put in place (the first write also carries what
    /// `open` staged in memory), `after` records what the way in needs
    /// recorded, and the session is installed unless a lock came meanwhile.
    /// A success resets the back-off. Returns the new Secret Key (shown
    /// form) and notes, or `None` for a wrong code.
    pub(super) async fn recover_opened<T: Send + 'static>(
        self: &Arc<Self>,
        path: std::path::PathBuf,
        new_password: crate::account::password::Password,
        mark: u64,
        label: &'static str,
        open: impl FnOnce(
            &Arc<Self>,
            &Path,
            u64,
        ) -> Result<Result<(vault::Unlocked, T), ()>, AgentError>
        + Send
        + 'static,
        after: impl FnOnce(&Arc<Self>, &mut vault::Unlocked, &Path, u64, T, &mut Vec<String>)
        + Send
        + 'static,
    ) -> Result<Option<(Secret, Vec<String>)>, AgentError> {
        let params = self.config.kdf_params();
        let now = self.clock.unix_now();
        let me = self.clone();
        let outcome = tokio::task::spawn_blocking(move || -> Result<_, AgentError> {
            // From the read to the install, with the writers' lock: an
            // unlocked session's own changes come before or after, never
            // between (they would be lost, or written over the new keys).
            let writer = me.writer();
            let Ok((mut v, token)) = open(&me, &path, now)? else {
                return Ok(None);
            };
            // This device's protectors take the new Secret Key below.
            me.bind_device(&mut v, &path)?;
            let id = v.account_id();
            let pending = v
                .begin_secret_key_change(&path, &new_password, params, now)
                .map_err(change_error)?;
            // Once that first write is on disk, what this device must
            // remember (the generation; for a grant, its id and the codes
            // it revoked) is recorded before any later step can fail: a
            // rolled-back copy must not bring them back (review S4).
            me.remember_generation(&id, v.file().generation);
            let mut early = Vec::new();
            after(&me, &mut v, &path, now, token, &mut early);
            let mut notes = me.complete_secret_key_change(&mut v, &path, &pending)?;
            notes.extend(early);
            me.remember_generation(&id, v.file().generation);
            me.remember_wrap_costs(v.file());
            me.remember_keys(&v);
            let sk = v
                .secret_key()
                .ok_or_else(|| internal("no Secret Key after recovery"))?;
            let shown = Secret::from(sk.display().expose());
            let session = Session {
                account: Account {
                    id: v.account_id(),
                    vault_path: path,
                },
                vault: v,
                protector: label.into(),
                unlocked_at: super::state::boot_clock(),
            };
            if me.install_unless_locked(&writer, session, mark).is_err() {
                notes.push(
                    "the agent was locked while recovering: unlock with the new Master Password \
                     (and this new Secret Key where no protector keeps it)"
                        .into(),
                );
            }
            Ok(Some((shown, notes)))
        })
        .await
        .map_err(internal)??;
        if outcome.is_some() {
            let _ = self.attempts().reset();
        }
        Ok(outcome)
    }

    /// `CheckPassword`: whether `password` is the Master Password (counted).
    pub async fn check_password(
        self: &Arc<Self>,
        password: &Secret,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        self.verify_password_counted(password, "not checked")
            .await?;
        Ok(Response::Ok)
    }

    /// Parses a typed recovery code: a typo is caught by its format,
    /// before any work, and not counted.
    fn parse_code(code: &Secret) -> Result<RecoveryCode, AgentError> {
        let text = code.expose_str().ok_or_else(|| {
            err(
                ErrorCode::InvalidInput,
                "this recovery code has a typo: it is not text",
            )
        })?;
        RecoveryCode::parse(text).map_err(|e| err(ErrorCode::InvalidInput, e.to_string()))
    }

    /// Whether `code` opens the vault at `path` now: `Ok(Ok(v))` with the
    /// vault opened by it, `Ok(Err(()))` for a wrong (or revoked) code,
    /// which the caller counts. Refuses a rolled-back vault.
    fn open_with_code(
        &self,
        path: &Path,
        code: &RecoveryCode,
        write: bool,
    ) -> Result<Result<vault::Unlocked, ()>, AgentError> {
        let parsed = vault::read(path).map_err(read_error)?;
        let id = parsed.vault.account_id;
        self.refuse_rollback(&id, parsed.vault.generation)?;
        if crate::server::sync::rekeyed_elsewhere(&parsed.vault, path) {
            return Err(err(
                ErrorCode::WrongRecoveryCode,
                "the account key was changed on another device (`keyward rekey`), which \
                 revoked every recovery code: unlock with the Master Password, or recover on \
                 that device",
            ));
        }
        if self
            .revoked_codes(&id)
            .contains(&vault::hex(&code.code_id(&id)))
        {
            return Ok(Err(()));
        }
        match vault::unlock_with_recovery_code(parsed, code) {
            Ok(mut v) => {
                // What other devices wrote comes in first: a code revoked
                // on another device opens no more (SECURITY.md §18).
                if write {
                    self.open_on_device(&mut v, path, false, &mut Vec::new())?;
                } else {
                    // A check writes nothing: the folder is merged in memory only.
                    self.bind_device(&mut v, path)?;
                    let own_key = self.key_in_force(&v.account_id());
                    let _ = crate::server::sync::merge_folder(&mut v, path, own_key);
                }
                let code_id = code.code_id(&id);
                if !v.file().recovery_wraps.iter().any(|w| w.code_id == code_id) {
                    return Ok(Err(()));
                }
                Ok(Ok(v))
            }
            Err(UnlockError::WrongRecoveryCode) => Ok(Err(())),
            Err(e @ (UnlockError::Tampered | UnlockError::BadItem(_))) => {
                Err(err(ErrorCode::Corrupt, e.to_string()))
            }
            Err(e) => Err(internal(e)),
        }
    }

    fn wrong_code_error(&self) -> AgentError {
        let mut e = self.record_failure(
            "this recovery code does not open this vault (revoked, or from another account)",
        );
        e.code = ErrorCode::WrongRecoveryCode;
        e
    }

    /// `CheckRecoveryCode`: whether `code` would recover this vault
    /// (works while locked; a wrong code counts, a typo does not).
    pub async fn check_recovery_code(
        self: &Arc<Self>,
        code: &Secret,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        let path = match &*self.read_state() {
            State::NoAccount => return Err(no_account_error()),
            State::Locked(a) => a.vault_path.clone(),
            State::Unlocked(s) => s.account.vault_path.clone(),
        };
        let code = Self::parse_code(code)?;
        if let Some(e) = self.backoff_error("not checked") {
            return Err(e);
        }
        let me = self.clone();
        let opened = tokio::task::spawn_blocking(move || {
            me.open_with_code(&path, &code, false).map(|r| r.is_ok())
        })
        .await
        .map_err(internal)??;
        if !opened {
            return Err(self.wrong_code_error());
        }
        let _ = self.attempts().reset();
        Ok(Response::Ok)
    }

    /// `SecretKeyRotate`: a new Secret Key, same password.
    pub async fn rotate_secret_key(
        self: &Arc<Self>,
        password: &Secret,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        self.verify_password_counted(password, "the Secret Key was not changed")
            .await?;
        let pw = password_from(password)?;
        let params = self.config.kdf_params();
        let now = self.clock.unix_now();
        let me = self.clone();
        let (shown, notes) = tokio::task::spawn_blocking(move || {
            me.edit_vault(|v, path| {
                let pending = v
                    .begin_secret_key_change(path, &pw, params, now)
                    .map_err(change_error)?;
                let notes = me.complete_secret_key_change(v, path, &pending)?;
                Ok((
                    Secret::from(pending.new_secret_key.display().expose()),
                    notes,
                ))
            })
        })
        .await
        .map_err(internal)??;
        tracing::info!("secret key rotated");
        Ok(Response::NewSecretKey {
            secret_key: shown,
            notes,
        })
    }

    /// `EmergencyKit`: what the kit prints (re-asks the password).
    pub async fn emergency_kit(
        self: &Arc<Self>,
        password: &Secret,
    ) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        self.verify_password_counted(password, "no Emergency Kit")
            .await?;
        self.with_session(|s| {
            let sk = s
                .vault
                .secret_key()
                .ok_or_else(|| internal("the Secret Key is not known to this session"))?;
            Ok(Response::Kit {
                account_id: s.account.id.to_string(),
                secret_key: Secret::from(sk.display().expose()),
                vault_path: s.account.vault_path.display().to_string(),
            })
        })
    }
}
