//! `Join`: this device takes up an account whose vault already exists (a
//! copy, or a folder a sync engine keeps), used where it is. Where the
//! vault is, is recorded in a small pointer file in the state directory
//! (`<state dir>/vault-path`), which [`pointed_account`] reads when the agent
//! starts. The vault's own folder never receives a device-local file.

use super::state::{Account, Agent, Session, State, boot_clock, change_error, err};
use crate::account::AccountId;
use crate::account::secret_key::SecretKey;
use crate::config::Config;
use crate::protect::Store;
use crate::protect::keychain::KeychainProtector;
use crate::vault;
use crate::vault::format::ProtectorKind;
use keyward_client::Paths;
use keyward_client::Secret;
use keyward_client::message::{AgentError, ErrorCode, Response};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The pointer file's name in the state directory.
const POINTER: &str = "vault-path";

pub(super) fn pointer_file(paths: &Paths) -> PathBuf {
    paths.state_dir.join(POINTER)
}

/// The account id of a vault file named `vault-<ID>.kwv`.
fn id_from_name(path: &Path) -> Option<AccountId> {
    let name = path.file_name()?.to_str()?;
    AccountId::parse(name.strip_prefix("vault-")?.strip_suffix(".kwv")?).ok()
}

/// The account id of the vault at `path`: from its name when it follows
/// keyward's pattern, else from its header.
fn account_id_of(path: &Path) -> Option<AccountId> {
    id_from_name(path).or_else(|| vault::read(path).ok().map(|p| p.vault.account_id))
}

/// The account the pointer file names, if there is one and its vault can be
/// read (checked by [`find_account`](super::state::find_account) before it
/// scans the data directory). A pointer to a vault that is not there (a
/// folder not mounted) is logged and ignored.
pub fn pointed_account(paths: &Paths, config: &Config) -> Option<Account> {
    let text = std::fs::read_to_string(pointer_file(paths)).ok()?;
    let path = PathBuf::from(text.trim_end_matches('\n'));
    let readable = path.is_absolute()
        && std::fs::metadata(&path).is_ok_and(|m| m.is_file())
        && std::fs::File::open(&path).is_ok();
    let id = if readable {
        account_id_of(&path)
    } else {
        part_deleted(&path)
    };
    let Some(id) = id else {
        tracing::warn!(
            pointer = %pointer_file(paths).display(),
            vault = %path.display(),
            "the vault this device joined cannot be read; looking in the data directory"
        );
        return None;
    };
    if config
        .account
        .as_deref()
        .is_some_and(|want| want != id.as_str())
    {
        return None;
    }
    Some(Account {
        id,
        vault_path: path,
    })
}

/// The account of `path`, this device's part, when the part is gone from
/// a folder that still holds the account's other copies (deleted there, or
/// by a sync engine): the device keeps its account, and its next unlock
/// opens another copy and writes the part again.
fn part_deleted(path: &Path) -> Option<AccountId> {
    let name = path.file_name()?.to_str()?;
    let id = AccountId::parse(name.strip_prefix("vault-")?.split('.').next()?).ok()?;
    let gone = path.is_absolute()
        && matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    (gone && super::sync::has_other_copies(path, &id)).then(|| {
        tracing::warn!(
            vault = %path.display(),
            "this device's vault file is missing from its folder; the next unlock makes it \
             again from the other devices' copies"
        );
        id
    })
}

/// Records `vault` (absolute) as this device's vault: 0600, atomically.
pub(super) fn write_pointer(paths: &Paths, uid: u32, vault: &Path) -> Result<(), AgentError> {
    let storage = |e: &dyn std::fmt::Display| {
        err(
            ErrorCode::Storage,
            format!(
                "cannot record where the vault is in {}: {e}",
                paths.state_dir.display()
            ),
        )
    };
    vault::store::ensure_private_dir(&paths.state_dir, uid).map_err(|e| storage(&e))?;
    let mut text = vault.as_os_str().as_encoded_bytes().to_vec();
    text.push(b'\n');
    vault::store::write_atomic(&pointer_file(paths), &text).map_err(|e| storage(&e))
}

/// Forgets the joined vault (an `init` after a `join` whose vault is gone).
pub(super) fn forget_pointer(paths: &Paths) {
    match std::fs::remove_file(pointer_file(paths)) {
        Ok(()) => tracing::info!("forgot the vault this device had joined"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", pointer_file(paths).display()),
    }
}

/// The vault file `given` names: the file itself, or the one `vault-*.kwv`
/// of a directory.
fn vault_file_at(given: &str) -> Result<PathBuf, AgentError> {
    let path = PathBuf::from(given);
    if !path.is_absolute() {
        return Err(err(
            ErrorCode::InvalidInput,
            "the vault (or its folder) must be given as an absolute path",
        ));
    }
    let md = std::fs::metadata(&path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorCode::NotFound
        } else {
            ErrorCode::InvalidInput
        };
        err(code, format!("cannot read {}: {e}", path.display()))
    })?;
    let file = if md.is_dir() {
        let entries = std::fs::read_dir(&path).map_err(|e| {
            err(
                ErrorCode::InvalidInput,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| id_from_name(p).is_some() && p.is_file())
            .collect();
        found.sort();
        match found.len() {
            1 => found.remove(0),
            0 => {
                return Err(err(
                    ErrorCode::NotFound,
                    format!(
                        "{} holds no keyward vault (a file named vault-<account ID>.kwv)",
                        path.display()
                    ),
                ));
            }
            _ => {
                return Err(err(
                    ErrorCode::InvalidInput,
                    format!(
                        "{} holds several vaults ({}): give the one to join as a file",
                        path.display(),
                        found
                            .iter()
                            .filter_map(|p| p.file_name())
                            .map(|n| n.to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
    } else if md.is_file() {
        path
    } else {
        return Err(err(
            ErrorCode::InvalidInput,
            format!("{} is neither a vault file nor a folder", path.display()),
        ));
    };
    // The pointer names the file itself, whatever path led to it.
    std::fs::canonicalize(&file).map_err(|e| {
        err(
            ErrorCode::InvalidInput,
            format!("cannot resolve {}: {e}", file.display()),
        )
    })
}

impl Agent {
    /// `Join`: opens the vault at `path` with the password and the Secret
    /// Key given (a wrong one counts as a failed unlock), records where it
    /// is, keeps the Secret Key with `protector` and installs the session.
    pub async fn join(
        self: &Arc<Self>,
        path: &str,
        password: &Secret,
        secret_key: &Secret,
        protector: &str,
    ) -> Result<Response, AgentError> {
        let mark = self.lock_mark();
        let _heavy = self.heavy.lock().await;
        if let Some(a) = self.existing_account() {
            return Err(err(
                ErrorCode::Exists,
                format!(
                    "this device already has an account ({}, vault {}); keyward keeps one \
                     account per user",
                    a.id,
                    a.vault_path.display()
                ),
            ));
        }
        let file = vault_file_at(path)?;
        let protector = self.choose_protector(protector, "`keyward join`").await?;
        if let Some(e) = self.backoff_error("not joining") {
            return Err(e);
        }
        let password = Arc::new(super::state::password_from(password)?);
        let text = secret_key.expose_str().ok_or_else(|| {
            err(
                ErrorCode::InvalidInput,
                "this Secret Key has a typo: it is not text",
            )
        })?;
        let sk = SecretKey::parse(text).map_err(|e| err(ErrorCode::InvalidInput, e.to_string()))?;
        let sk = Arc::new(sk);
        let parsed = vault::read(&file).map_err(|e| match e {
            vault::ReadError::NotFound => err(
                ErrorCode::NotFound,
                format!("there is no file at {}", file.display()),
            ),
            vault::ReadError::Io(e) => err(
                ErrorCode::InvalidInput,
                format!("cannot read {}: {e}", file.display()),
            ),
            vault::ReadError::Format(e) => err(
                ErrorCode::Corrupt,
                format!("{} is not a usable vault: {e}", file.display()),
            ),
        })?;
        self.check_wrap_costs(&parsed.vault)?;
        let mut v = self.open_counted(parsed, &password, &sk).await?;
        if let Err(e) = self.attempts().reset() {
            tracing::warn!("cannot reset the failed-attempt counter: {e}");
        }
        let id = v.account_id();
        let now = self.clock.unix_now();
        let writer = self.writer();
        // This device writes a part of its own beside the file it joined
        // (SECURITY.md §18): no file of the folder has two writers.
        let device = self.device_id()?;
        let dir = file.parent().unwrap_or(Path::new("/"));
        let part = super::sync::part_path(dir, &id, &device);
        let mut notes = Vec::new();
        self.bind_device(&mut v, &part)?;
        if v.needs_settling() {
            match v.settle(&part, now) {
                Ok(()) => {
                    notes.push(
                        "finished an interrupted change of the Secret Key or password".into(),
                    );
                    self.restore_stores(&mut v, &part, now, &mut notes);
                }
                Err(e) => notes.push(format!("could not finish an interrupted change: {e}")),
            }
        }
        self.open_on_device(&mut v, &part, true, &mut notes)?;
        write_pointer(&self.paths, self.uid, &part)?;
        if let Err(mut e) = self.keep_secret_key(protector, &mut v, &part, &sk, now) {
            forget_pointer(&self.paths);
            let _ = std::fs::remove_file(&part);
            e.message.push_str("; this device did not join");
            return Err(e);
        }
        notes.insert(
            0,
            format!("this device writes its changes to {}", part.display()),
        );
        notes.insert(0, format!("joined: using the vault at {}", file.display()));
        if let Some(note) = self.check_generation(&id, v.file().generation) {
            notes.push(note);
        }
        self.revoke_again(&mut v, &part, &mut notes);
        self.remember_generation(&id, v.file().generation);
        self.remember_wrap_costs(v.file());
        self.remember_keys(&v);
        let resp = self.unlocked_response(&id, protector, notes);
        let account = Account {
            id,
            vault_path: part.clone(),
        };
        let session = Session {
            account: account.clone(),
            vault: v,
            protector: protector.to_owned(),
            unlocked_at: boot_clock(),
        };
        if let Err(e) = self.install_unless_locked(&writer, session, mark) {
            // Joined, but locked meanwhile: the account is here, locked.
            drop(writer);
            *self.write_state() = State::Locked(account);
            return Err(e);
        }
        tracing::info!(account = %id, protector, vault = %file.display(), "joined");
        Ok(resp)
    }

    /// Keeps the Secret Key with the chosen protector and records it in the
    /// vault (as `init` does). On failure, nothing is left on this device.
    fn keep_secret_key(
        &self,
        protector: &str,
        v: &mut vault::Unlocked,
        path: &Path,
        sk: &SecretKey,
        now: u64,
    ) -> Result<(), AgentError> {
        let id = v.account_id();
        match protector {
            "file" => {
                let fp = self.file_protector(&id);
                fp.store(sk)
                    .map_err(|e| err(ErrorCode::Storage, e.to_string()))?;
                if let Err(e) = v.upsert_protector(path, ProtectorKind::File, now) {
                    let _ = fp.erase();
                    return Err(change_error(e));
                }
            }
            "keychain" => {
                self.keychain_store(&id, sk).map_err(|e| {
                    err(
                        ErrorCode::Protector,
                        format!("the keychain refused the Secret Key: {e}"),
                    )
                })?;
                if let Err(e) = v.upsert_protector(path, ProtectorKind::Keychain, now) {
                    let _ = KeychainProtector::new(id).erase();
                    return Err(change_error(e));
                }
            }
            _ => {}
        }
        Ok(())
    }
}
