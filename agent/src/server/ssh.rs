//! What the SSH agent (`crate::ssh`) needs of the state, and the keyward
//! protocol's SSH requests (`SshGenerate`, `SshGenerateCard`, `SshImport`,
//! `SshList`, `SshRemove`, `SshApprove`).

use super::protectors::protector_error;
use super::state::{Agent, State, change_error, err, internal, locked_error, no_account_error};
use crate::protect::UnlockIo;
use crate::protect::yubikey::Touch;
use crate::secret::SecretBytes;
use crate::ssh::card;
use crate::ssh::keys::{self, ImportError, PrivateKey};
use crate::ssh::{VaultIdent, restrict};
use crate::vault::ssh::{Approval, Location, SshKeyEntry};
use keyward_client::message::{AgentError, ErrorCode, SshKeyInfo};
use keyward_client::{PromptKind, Response, Secret};
use std::sync::Arc;

/// The vault's SSH keys as the SSH side may see them now.
pub enum VaultKeys {
    /// No account.
    NoAccount,
    /// Locked: the public blobs only.
    Locked(Vec<Vec<u8>>),
    /// Unlocked, at a generation.
    Unlocked(u64, Arc<Vec<VaultIdent>>),
}

fn ident(e: &SshKeyEntry) -> VaultIdent {
    // Constraints that do not parse (a record that opens, so written by
    // keyward, but not understood) must not quietly drop a restriction:
    // such a key is restricted to no host, so it signs for nobody.
    let c = restrict::parse_constraints(&e.constraints).unwrap_or_else(|_| {
        tracing::warn!(name = %e.name, "an SSH key's stored constraints do not parse; it will not sign");
        restrict::Constraints {
            dest: vec![restrict::unreachable()],
            ..Default::default()
        }
    });
    VaultIdent {
        public: e.public.clone(),
        name: e.name.clone(),
        comment: e.comment.clone(),
        approval: e.approval,
        sk_provider: c.sk_provider,
        dest: c.dest,
        location: e.location,
    }
}

fn damaged() -> AgentError {
    err(
        ErrorCode::Corrupt,
        "an SSH key record of the vault does not open: it was altered; restore the vault from a \
         backup",
    )
}

impl Agent {
    /// The vault's SSH keys (from the cache in `self.ssh` when the vault
    /// did not change).
    pub(crate) fn ssh_vault_keys(&self) -> VaultKeys {
        let st = self.read_state();
        match &*st {
            State::NoAccount => VaultKeys::NoAccount,
            State::Locked(a) => {
                let path = a.vault_path.clone();
                drop(st);
                let publics = crate::vault::read(&path)
                    .map(|p| p.vault.ssh_keys.into_iter().map(|k| k.public).collect())
                    .unwrap_or_default();
                VaultKeys::Locked(publics)
            }
            State::Unlocked(s) => {
                let generation = s.vault.file().generation;
                if let Some(v) = self.ssh.vault_at(generation) {
                    return VaultKeys::Unlocked(generation, v);
                }
                let list: Vec<VaultIdent> = match s.vault.ssh_keys() {
                    Ok(entries) => entries.iter().map(ident).collect(),
                    Err(_) => {
                        tracing::warn!("an SSH key record does not open; listing none");
                        Vec::new()
                    }
                };
                drop(st);
                let list = Arc::new(list);
                self.ssh.set_vault(generation, list.clone());
                VaultKeys::Unlocked(generation, list)
            }
        }
    }

    /// The vault key with this blob, private part included.
    pub(crate) fn ssh_vault_key(&self, public: &[u8]) -> Result<Option<SshKeyEntry>, AgentError> {
        self.with_session(|s| match s.vault.ssh_key_index(public) {
            None => Ok(None),
            Some(i) => s.vault.ssh_key(i).map(Some).map_err(|_| damaged()),
        })
    }

    /// Adds or replaces an SSH key in the vault.
    pub(crate) fn ssh_put(&self, entry: SshKeyEntry) -> Result<(), AgentError> {
        self.edit_vault(|v, path| v.put_ssh_key(path, entry).map_err(change_error))
    }

    /// A lock since `mark` was taken?
    pub(crate) fn ssh_lock_mark(&self) -> u64 {
        self.lock_mark()
    }

    /// Whether an account exists and is locked.
    pub(crate) fn ssh_is_locked(&self) -> bool {
        matches!(&*self.read_state(), State::Locked(_))
    }

    /// Unlocks with `password` (the Secret Key from this device's
    /// protectors; a YubiKey asks for its PIN through `io`). Counted like
    /// any unlock.
    pub(crate) async fn ssh_unlock(
        self: &Arc<Self>,
        password: Secret,
        io: Arc<dyn UnlockIo>,
    ) -> Result<(), AgentError> {
        let req = keyward_client::message::UnlockRequest {
            password,
            ..Default::default()
        };
        self.unlock(req, io).await.map(|_| ())
    }

    fn ssh_find(&self, which: &str) -> Result<SshKeyEntry, AgentError> {
        self.with_session(|s| {
            let entries = s.vault.ssh_keys().map_err(|_| damaged())?;
            entries
                .into_iter()
                .find(|e| e.name == which || keys::fingerprint(&e.public) == which)
                .ok_or_else(|| {
                    err(
                        ErrorCode::NotFound,
                        format!("no SSH key named {which:?} (see `keyward ssh list`)"),
                    )
                })
        })
    }

    fn ssh_info(&self, e: &VaultIdent, hidden: bool) -> SshKeyInfo {
        SshKeyInfo {
            name: e.name.clone(),
            key_type: keys::type_name(&e.public),
            fingerprint: keys::fingerprint(&e.public),
            comment: e.comment.clone(),
            location: match e.location {
                Location::Vault => "vault".into(),
                Location::Card { serial, slot, .. } => format!("yubikey:{serial}/{slot:02x}"),
            },
            approval: e.approval.name().into(),
            public: keys::authorized_line(&e.public, &e.comment),
            loaded: !hidden,
        }
    }

    /// `SshList`.
    pub fn ssh_list(&self) -> Result<Response, AgentError> {
        match self.ssh_vault_keys() {
            VaultKeys::NoAccount => Err(no_account_error()),
            VaultKeys::Locked(_) => Err(locked_error()),
            VaultKeys::Unlocked(_, v) => Ok(Response::SshKeys(
                v.iter()
                    .map(|e| self.ssh_info(e, self.ssh.is_hidden(&e.public)))
                    .collect(),
            )),
        }
    }

    fn ssh_store_new(
        &self,
        name: &str,
        key: &PrivateKey,
        comment: &str,
    ) -> Result<Response, AgentError> {
        crate::vault::ssh::check_name(name).map_err(|e| err(ErrorCode::InvalidInput, e))?;
        let public = key
            .public_blob()
            .map_err(|e| err(ErrorCode::InvalidInput, e.to_string()))?;
        let exists = self.with_session(|s| Ok(s.vault.ssh_key_index(&public)))?;
        if let Some(i) = exists {
            let other = self.with_session(|s| s.vault.ssh_key(i).map_err(|_| damaged()))?;
            return Err(err(
                ErrorCode::Exists,
                format!(
                    "this key is already in the vault, as {:?}; rename it there or remove it first",
                    other.name
                ),
            ));
        }
        let entry = SshKeyEntry {
            key_id: [0; 16],
            public: public.clone(),
            name: name.to_owned(),
            comment: comment.to_owned(),
            created: self.clock.unix_now(),
            location: Location::Vault,
            approval: Approval::Never,
            private: keys::encode_private(key).map_err(internal)?,
            constraints: Vec::new(),
        };
        self.ssh_put(entry)?;
        let info = SshKeyInfo {
            name: name.to_owned(),
            key_type: keys::type_name(&public),
            fingerprint: keys::fingerprint(&public),
            comment: comment.to_owned(),
            location: "vault".into(),
            approval: Approval::Never.name().into(),
            public: keys::authorized_line(&public, comment),
            loaded: true,
        };
        Ok(Response::SshKeys(vec![info]))
    }

    /// `SshGenerate`.
    pub async fn ssh_generate(
        self: &Arc<Self>,
        name: &str,
        kind: &str,
        bits: u32,
        comment: &str,
    ) -> Result<Response, AgentError> {
        self.with_session(|_| Ok(()))?;
        let (kind_owned, this) = (kind.to_owned(), self.clone());
        // RSA generation takes seconds: off the runtime thread.
        let key = tokio::task::spawn_blocking(move || keys::generate(&kind_owned, bits))
            .await
            .map_err(internal)?
            .map_err(|e| err(ErrorCode::InvalidInput, e.to_string()))?;
        let comment = if comment.is_empty() { name } else { comment };
        this.ssh_store_new(name, &key, comment)
    }

    /// `SshGenerateCard`: a P-256 key made on a YubiKey (PIV slot 9a unless
    /// told otherwise); the vault keeps where it is and its public key. The
    /// card's PIN (unless given), a management key it does not know, and
    /// questions about factory defaults are asked through `io`; what the
    /// user must read comes as notices.
    #[allow(clippy::too_many_arguments)]
    pub async fn ssh_generate_card(
        self: &Arc<Self>,
        name: &str,
        serial: Option<u32>,
        slot: Option<u8>,
        touch: Option<&str>,
        pin: Option<Secret>,
        comment: &str,
        io: Arc<dyn UnlockIo>,
    ) -> Result<Response, AgentError> {
        crate::vault::ssh::check_name(name).map_err(|e| err(ErrorCode::InvalidInput, e))?;
        if comment.len() > crate::vault::ssh::MAX_COMMENT {
            return Err(err(
                ErrorCode::InvalidInput,
                format!(
                    "the comment is too long: {} bytes (at most {})",
                    comment.len(),
                    crate::vault::ssh::MAX_COMMENT
                ),
            ));
        }
        let touch: Touch = match touch {
            None => Touch::Never,
            Some(t) => t
                .parse()
                .map_err(|e: String| err(ErrorCode::InvalidInput, e))?,
        };
        // Refused before the card is touched: a key made on it stays there.
        let taken = self.with_session(|s| {
            let entries = s.vault.ssh_keys().map_err(|_| damaged())?;
            Ok(entries.iter().any(|e| e.name == name))
        })?;
        if taken {
            return Err(err(
                ErrorCode::Exists,
                format!("an SSH key named {name:?} exists already (see `keyward ssh list`)"),
            ));
        }
        let opts = card::GenerateOptions {
            serial,
            slot,
            touch,
            pin,
        };
        let notices = io.clone();
        let made = tokio::task::spawn_blocking(move || card::generate(opts, &*io))
            .await
            .map_err(internal)?
            .map_err(protector_error)?;
        for note in &made.notes {
            notices.notice(note);
        }
        let comment = if comment.is_empty() { name } else { comment };
        let entry = SshKeyEntry {
            key_id: [0; 16],
            public: made.public.clone(),
            name: name.to_owned(),
            comment: comment.to_owned(),
            created: self.clock.unix_now(),
            location: Location::Card {
                serial: made.serial,
                slot: made.slot,
                touch: made.touch.code(),
            },
            approval: Approval::Never,
            private: SecretBytes::new(Vec::new()),
            constraints: Vec::new(),
        };
        let info = self.ssh_info(&ident(&entry), false);
        self.ssh_put(entry).map_err(|mut e| {
            e.message = format!(
                "{} (the key was made in slot {:02x} of YubiKey {} and is still there)",
                e.message, made.slot, made.serial
            );
            e
        })?;
        tracing::info!(name, location = %info.location, "SSH key on a YubiKey stored in the vault");
        Ok(Response::SshKeys(vec![info]))
    }

    /// `SshImport`.
    pub fn ssh_import(
        &self,
        name: &str,
        file: &Secret,
        passphrase: Option<&Secret>,
        io: &dyn UnlockIo,
    ) -> Result<Response, AgentError> {
        self.with_session(|_| Ok(()))?;
        let first = keys::import_file(file.expose(), passphrase.map(Secret::expose));
        let asked;
        let result = match first {
            Err(ImportError::NeedPassphrase) if passphrase.is_none() => {
                asked = io
                    .prompt(
                        PromptKind::Passphrase,
                        "This key file is protected by a passphrase. Passphrase:",
                    )
                    .ok_or_else(|| {
                        err(
                            ErrorCode::Cancelled,
                            "no passphrase given; give it with --passphrase-fd N",
                        )
                    })?;
                keys::import_file(file.expose(), Some(asked.expose()))
            }
            other => other,
        };
        let (key, comment) = match result {
            Ok(k) => k,
            Err(e @ ImportError::WrongPassphrase) => {
                return Err(err(ErrorCode::WrongCredentials, e.to_string()));
            }
            Err(e) => return Err(err(ErrorCode::InvalidInput, e.to_string())),
        };
        let name = if name.is_empty() {
            if comment.is_empty() {
                return Err(err(
                    ErrorCode::InvalidInput,
                    "the key file has no comment to name the key by; give a name with --name",
                ));
            }
            comment.as_str()
        } else {
            name
        };
        self.ssh_store_new(name, &key, &comment)
    }

    /// `SshRemove`: deletes the key from the vault.
    pub fn ssh_remove(&self, which: &str) -> Result<Response, AgentError> {
        let e = self.ssh_find(which)?;
        self.edit_vault(|v, path| {
            let i = v
                .ssh_key_index(&e.public)
                .ok_or_else(|| err(ErrorCode::NotFound, format!("no SSH key named {which:?}")))?;
            v.remove_ssh_key(path, i).map_err(change_error)
        })?;
        tracing::info!(name = %e.name, "SSH key removed from the vault");
        Ok(Response::Ok)
    }

    /// `SshApprove`.
    pub fn ssh_approve(&self, which: &str, approval: &str) -> Result<Response, AgentError> {
        let a = Approval::parse(approval).ok_or_else(|| {
            err(
                ErrorCode::InvalidInput,
                format!("unknown approval {approval:?}: use always, once-per-process or never"),
            )
        })?;
        let mut e = self.ssh_find(which)?;
        e.approval = a;
        self.ssh_put(e)?;
        Ok(Response::Ok)
    }
}
