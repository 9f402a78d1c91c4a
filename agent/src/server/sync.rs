//! Several devices on one vault (SECURITY.md §18): this device's id, the
//! part files the devices write next to each other, merging them (and the
//! conflict copies sync engines make) into the vault in memory, and a
//! watcher that notices when the folder changes.
//!
//! Layout: the device that made the account writes the main file
//! `vault-<ID>.kwv`; a device that joined writes `vault-<ID>.<device id>.kwv`
//! beside it. Every file is a whole vault (the state as its writer last
//! merged it), so no file has two writers and a sync engine never has a
//! conflict to resolve; reading merges them all.

use super::organizer::date;
use super::state::{Agent, State, err, internal};
use crate::account::AccountId;
use crate::vault::format::{DeviceId, DeviceRecord, TombstoneKind};
use crate::vault::{self, MergeError};
use keyward_client::Paths;
use keyward_client::message::{AgentError, DeviceInfo, ErrorCode, Response};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// This device's id, in the state directory.
const DEVICE_FILE: &str = "device-id";
/// Most sibling files read per merge.
const MAX_SIBLINGS: usize = 64;
/// Most siblings whose password wrap an unlock tries (each costs Argon2id).
pub(super) const MAX_UNLOCK_TRIES: usize = 4;

/// This device's id: read from the state directory, drawn the first time.
pub(super) fn this_device(paths: &Paths, uid: u32) -> std::io::Result<DeviceId> {
    let file = paths.state_dir.join(DEVICE_FILE);
    if let Ok(text) = std::fs::read_to_string(&file)
        && let Some(id) = parse_device_id(text.trim())
    {
        return Ok(id);
    }
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(std::io::Error::other)?;
    vault::store::ensure_private_dir(&paths.state_dir, uid).map_err(std::io::Error::other)?;
    vault::store::write_atomic(&file, format!("{}\n", vault::hex(&id)).as_bytes())?;
    Ok(id)
}

fn parse_device_id(text: &str) -> Option<DeviceId> {
    crate::account::unhex::<16>(text)
}

/// A name for this device: its host name.
pub(super) fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = host
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    if vault::format::device_name_ok(&name) {
        name
    } else {
        "this device".into()
    }
}

/// The main file's name.
fn main_name(id: &AccountId) -> String {
    format!("vault-{id}.kwv")
}

/// The part a joined device writes.
pub(super) fn part_path(dir: &Path, id: &AccountId, device: &DeviceId) -> PathBuf {
    dir.join(format!("vault-{id}.{}.kwv", vault::hex(device)))
}

/// Whether `path` is the account's main file (not a device's part).
pub(super) fn is_main_file(path: &Path, id: &AccountId) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy() == main_name(id))
}

/// Whether `name` is a device's part or the main file (not a conflict copy).
fn is_part(name: &str, id: &AccountId) -> bool {
    if name == main_name(id) {
        return true;
    }
    name.strip_prefix(&format!("vault-{id}."))
        .and_then(|r| r.strip_suffix(".kwv"))
        .is_some_and(|d| parse_device_id(d).is_some())
}

/// The largest sibling read while this device's own file is missing.
const MISSING_OWN_MAX_LEN: u64 = 64 << 20;

/// Directory entries looked at per scan of the folder.
const MAX_SCAN: usize = 4096;

/// The other files of the account beside `own`: parts first, then
/// conflict copies (`vault-<ID>….kwv`, not hidden, regular files), each
/// group in name order, at most [`MAX_SIBLINGS`] in all; the scan stops
/// after [`MAX_SCAN`] entries, and a file larger than twice this device's
/// own plus 1 MiB is left out (whoever can write the folder must not make
/// every look at it cost memory and time).
pub(super) fn siblings(own: &Path, id: &AccountId) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = own.parent() else {
        return Vec::new();
    };
    let prefix = format!("vault-{id}");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    // Junk larger than any copy could be is not read; with no own file to
    // compare with (it is missing), a fixed bound: some 500,000 items.
    let max_len = std::fs::metadata(own).map_or(MISSING_OWN_MAX_LEN, |m| {
        m.size().saturating_mul(2).saturating_add(1 << 20)
    });
    let mut out: Vec<(bool, PathBuf)> = entries
        .take(MAX_SCAN)
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ok = name.starts_with(&prefix)
                && name.ends_with(".kwv")
                && e.path() != own
                && e.metadata()
                    .is_ok_and(|m| m.is_file() && m.size() <= max_len);
            ok.then(|| (!is_part(&name, id), e.path()))
        })
        .collect();
    out.sort();
    out.truncate(MAX_SIBLINGS);
    out.into_iter().map(|(_, p)| p).collect()
}

/// This device's own file; if it is missing from the folder (deleted
/// there, or by a sync engine passing a deletion on), the copy another
/// device wrote (a part or the main file, not a conflict copy) with the
/// latest password wrap and write generation, and `true`: the unlock that
/// opens it writes this device's file again (SECURITY.md §18.4).
pub(super) fn read_own(
    own: &Path,
    id: &AccountId,
) -> Result<(vault::format::Parsed, bool), vault::ReadError> {
    match vault::read(own) {
        Err(vault::ReadError::NotFound) => {}
        other => return other.map(|p| (p, false)),
    }
    // One parsed copy held at a time besides the best so far.
    let rank = |p: &vault::format::Parsed| (vault::newest_epoch(&p.vault), p.vault.generation);
    siblings(own, id)
        .into_iter()
        .filter(|p| is_part(&raw_name(p), id))
        .filter_map(|p| vault::read(&p).ok())
        .filter(|p| &p.vault.account_id == id)
        .fold(None, |best: Option<vault::format::Parsed>, p| match best {
            Some(b) if rank(&b) >= rank(&p) => Some(b),
            _ => Some(p),
        })
        .map(|p| (p, true))
        .ok_or(vault::ReadError::NotFound)
}

/// For a device that writes the main file (it did not join): the account
/// whose main file is gone from `data_dir` while other devices' parts of it
/// are still there, if this device has opened that account before (its
/// generation mark): its next unlock writes the main file again.
pub(super) fn main_file_deleted(paths: &Paths) -> Option<(AccountId, PathBuf)> {
    let mut ids: Vec<AccountId> = std::fs::read_dir(&paths.data_dir)
        .ok()?
        .take(MAX_SCAN)
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = AccountId::parse(name.strip_prefix("vault-")?.split('.').next()?).ok()?;
            (is_part(&name, &id) && super::rollback::generation_file(paths, &id).exists())
                .then_some(id)
        })
        .collect();
    ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    ids.dedup();
    let [id] = ids.as_slice() else { return None };
    let main = paths.data_dir.join(main_name(id));
    tracing::warn!(
        vault = %main.display(),
        "this device's vault file is missing; the next unlock makes it again from the other \
         devices' copies"
    );
    Some((*id, main))
}

/// Whether the folder of `own` (missing) holds another copy of account
/// `id` that [`read_own`] would take.
pub(super) fn has_other_copies(own: &Path, id: &AccountId) -> bool {
    siblings(own, id).iter().any(|p| is_part(&raw_name(p), id))
}

/// The other devices' parts beside `own`, the ones with the newest
/// password wraps first, at most [`MAX_UNLOCK_TRIES`] (an unlock tries
/// their wraps when this device's own do not open).
pub(super) fn newest_parts(own: &Path, id: &AccountId) -> Vec<vault::format::Parsed> {
    // Kept to the best few while reading: at most MAX_UNLOCK_TRIES + 1
    // parsed copies in memory, however many parts the folder holds.
    let mut parts: Vec<(u64, vault::format::Parsed)> = Vec::new();
    for p in siblings(own, id)
        .into_iter()
        .filter(|p| is_part(&raw_name(p), id))
    {
        let Ok(p) = vault::read(&p) else { continue };
        if &p.vault.account_id != id {
            continue;
        }
        let epoch = vault::newest_epoch(&p.vault);
        let at = parts.partition_point(|q| q.0 >= epoch);
        if at < MAX_UNLOCK_TRIES {
            parts.insert(at, (epoch, p));
            parts.truncate(MAX_UNLOCK_TRIES);
        }
    }
    parts.into_iter().map(|(_, p)| p).collect()
}

/// The copies an unlock tries, in order, and which one is this device's
/// own: parts with a later password wrap than this device's own file come
/// first (a rekey made on another device: its wrap opens the new account
/// key with the same credentials), then the own file, then the others.
pub(super) fn unlock_copies(
    own: vault::format::Parsed,
    own_path: &Path,
    id: &AccountId,
    affordable: impl Fn(&vault::format::VaultFile) -> bool,
) -> (Vec<vault::format::Parsed>, usize) {
    let epoch = |p: &vault::format::Parsed| vault::newest_epoch(&p.vault);
    let mine = epoch(&own);
    let (mut later, rest): (Vec<_>, Vec<_>) = newest_parts(own_path, id)
        .into_iter()
        .filter(|p| affordable(&p.vault))
        .partition(|p| epoch(p) > mine);
    let at = later.len();
    later.push(own);
    later.extend(rest);
    (later, at)
}

/// The YubiKey wraps of the parts beside `own_path` whose password wraps
/// are later than every one of this device's file (`own`), newest part
/// first: after a new Secret Key made on another device, they seal the new
/// one for the same cards (SECURITY.md §18.5).
pub(super) fn newer_card_wraps(
    own: &vault::format::VaultFile,
    own_path: &Path,
    affordable: impl Fn(&vault::format::VaultFile) -> bool,
) -> Vec<vault::format::PivWrap> {
    let mine = vault::newest_epoch(own);
    newest_parts(own_path, &own.account_id)
        .into_iter()
        .filter(|p| vault::newest_epoch(&p.vault) > mine && affordable(&p.vault))
        .flat_map(|p| p.vault.piv_wraps)
        .collect()
}

/// Whether a part beside `own_path` holds a password wrap made by a
/// `rekey` later than every wrap of this device's file (`own`): this
/// device's file is then under a retired account key.
pub(super) fn rekeyed_elsewhere(own: &vault::format::VaultFile, own_path: &Path) -> bool {
    let mine = vault::newest_epoch(own);
    newest_parts(own_path, &own.account_id).iter().any(|p| {
        p.vault.password_wraps.iter().any(|w| {
            vault::wrap_epoch(&w.slot_id) > mine
                && vault::wrap_origin(&w.slot_id).is_some_and(|(_, _, k)| k == 'k')
        })
    })
}

/// What a merge of the folder did.
#[derive(Debug, Default)]
pub(super) struct Report {
    /// For the user.
    pub notes: Vec<String>,
    /// Files refused, with why.
    pub refused: Vec<String>,
    /// Conflict copies that were merged (removed once the vault is written).
    pub copies: Vec<PathBuf>,
    /// The vault in memory changed.
    pub changed: bool,
    /// A later password or Secret Key came from another device.
    pub credentials_changed: bool,
    /// The largest generation of the copies merged.
    pub generation: u64,
}

fn raw_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A file's name for notes and logs, quoted and escaped (it comes from a
/// folder others can write: no control character reaches a terminal or a
/// log).
fn file_name(p: &Path) -> String {
    format!("{:?}", raw_name(p))
}

/// Merges every sibling of `own` (and `own` itself, as it is on disk) into `v`.
/// `own_key`: the account key (id) this device had in force, the only
/// previous key its own file may be under (see
/// [`vault::Unlocked::merge_own_from`]).
pub(super) fn merge_folder(
    v: &mut vault::Unlocked,
    own: &Path,
    own_key: Option<[u8; 8]>,
) -> Report {
    let id = v.account_id();
    let mut report = Report::default();
    let mut files = siblings(own, &id);
    if own.exists() {
        files.insert(0, own.to_path_buf());
    }
    for path in files {
        let raw = raw_name(&path);
        let name = format!("{raw:?}");
        let parsed = match vault::read(&path) {
            Ok(p) => p,
            Err(e) => {
                report.refused.push(format!("{name}: {e}"));
                continue;
            }
        };
        // This device's own file as it last wrote it: nothing to merge.
        if path == own && parsed.vault.generation == v.file().generation {
            continue;
        }
        let merged = if path == own {
            v.merge_own_from(&parsed, own_key)
        } else {
            v.merge_from(&parsed)
        };
        match merged {
            Ok(out) => {
                report.generation = report.generation.max(parsed.vault.generation);
                if out.changed && path != own {
                    report.notes.push(format!("merged {name}"));
                }
                report.changed |= out.changed;
                report.credentials_changed |= out.credentials_changed;
                if path != own && !is_part(&raw, &id) {
                    report.copies.push(path);
                }
            }
            Err(MergeError::Busy) => {
                report
                    .notes
                    .push(format!("{name}: not merged yet ({})", MergeError::Busy));
            }
            Err(e) => {
                let newer = vault::newest_epoch(&parsed.vault) > vault::newest_epoch(v.file());
                let hint = if newer && e == MergeError::NotVerified {
                    " (its password wrap is newer than this vault's: if the account key was \
                     changed on another device with `keyward rekey`, lock and unlock to take \
                     the new one)"
                } else {
                    ""
                };
                report.refused.push(format!("{name}: {e}{hint}"));
            }
        }
    }
    for r in &report.refused {
        tracing::warn!(copy = %r, "a copy of the vault was refused");
    }
    report
}

/// Removes conflict copies that were merged (after the vault that holds
/// their records is on disk).
fn remove_copies(report: &mut Report) {
    for c in std::mem::take(&mut report.copies) {
        match std::fs::remove_file(&c) {
            Ok(()) => report.notes.push(format!(
                "removed the conflict copy {} (merged)",
                file_name(&c)
            )),
            Err(e) => report.notes.push(format!(
                "cannot remove the merged copy {}: {e}",
                file_name(&c)
            )),
        }
    }
}

/// A fingerprint of the folder (names, sizes, change times): the watcher
/// merges when it changes.
fn folder_stamp(own: &Path, id: &AccountId) -> Vec<(PathBuf, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut files = siblings(own, id);
    files.push(own.to_path_buf());
    files
        .into_iter()
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            Some((p, m.size(), m.mtime(), m.mtime_nsec() ^ (m.ino() as i64)))
        })
        .collect()
}

/// What to tell a device whose password wrap was replaced by another
/// device's: which device, when, and what changed.
pub(super) fn superseded_error(v: &vault::Unlocked) -> AgentError {
    let slot = v
        .file()
        .password_wraps
        .first()
        .map(|w| w.slot_id.clone())
        .unwrap_or_default();
    let Some((when, dev, kind)) = vault::wrap_origin(&slot) else {
        return err(
            ErrorCode::NeedSecretKey,
            "the Master Password or the Secret Key was changed on another device; unlock with \
             the new one (the new Secret Key is on the Emergency Kit printed then)",
        );
    };
    let device = v
        .file()
        .devices
        .iter()
        .find(|d| vault::hex(&d.id).starts_with(dev))
        .map_or_else(|| format!("device {dev}"), |d| format!("{:?}", d.name));
    if kind == 's' {
        err(
            ErrorCode::NeedSecretKey,
            format!(
                "the Secret Key was changed on {device} on {}: enter the new Secret Key (from \
                 the Emergency Kit made then) and the Master Password; this device then keeps \
                 the new one",
                date(when)
            ),
        )
    } else {
        err(
            ErrorCode::WrongCredentials,
            format!(
                "the Master Password was changed on {device} on {}: unlock with the new one",
                date(when)
            ),
        )
    }
}

impl Agent {
    /// This device's id (drawn and kept in the state directory the first time).
    pub(super) fn device_id(&self) -> Result<DeviceId, AgentError> {
        this_device(&self.paths, self.uid).map_err(|e| {
            err(
                ErrorCode::Storage,
                format!(
                    "cannot keep this device's id in {}: {e}",
                    self.paths.state_dir.display()
                ),
            )
        })
    }

    /// Which protector records are this device's, before any vault is
    /// open: its device id, or no device id on a device that did not join.
    pub(super) fn my_protector_records(
        &self,
    ) -> impl Fn(&vault::format::ProtectorRecord) -> bool + use<> {
        let me = self.device_id().unwrap_or([0; 16]);
        let joined = super::join::pointer_file(&self.paths).exists();
        move |p| p.device == me || (p.device == [0; 16] && !joined)
    }

    /// Makes `v` know this device (whose protector records it may touch).
    pub(super) fn bind_device(
        &self,
        v: &mut vault::Unlocked,
        own: &Path,
    ) -> Result<DeviceId, AgentError> {
        let device = self.device_id()?;
        v.set_device(device, is_main_file(own, &v.account_id()));
        Ok(device)
    }

    /// Makes `v` know this device, merges the folder into it, and records
    /// this device in the vault. Refuses a device that was removed, and
    /// (with `strict`, at unlock) a password wrap another device replaced.
    pub(super) fn open_on_device(
        &self,
        v: &mut vault::Unlocked,
        own: &Path,
        strict: bool,
        notes: &mut Vec<String>,
    ) -> Result<(), AgentError> {
        let device = self.bind_device(v, own)?;
        let own_key = self.key_in_force(&v.account_id());
        let mut report = merge_folder(v, own, own_key);
        if v.file()
            .tombstones
            .iter()
            .any(|t| t.kind == TombstoneKind::Device && t.id == device)
        {
            return Err(err(
                ErrorCode::PermissionDenied,
                "this device was removed from the account on another device (`keyward device \
                 remove`): its protectors are gone, and a device that joined forgets the vault; \
                 to use the account here again, run `keyward join PATH` with the Secret Key \
                 and the Master Password",
            ));
        }
        if strict && report.credentials_changed {
            if report.changed
                && let Err(e) = v.persist_above(own, report.generation)
            {
                tracing::warn!("cannot write the merged vault: {e}");
            }
            return Err(superseded_error(v));
        }
        let now = self.clock.unix_now();
        if !v.file().devices.iter().any(|d| d.id == device) {
            v.add_device(DeviceRecord {
                id: device,
                added: now,
                named: now,
                name: default_name(),
            });
            report.changed = true;
        }
        if report.changed || !own.exists() {
            v.persist_above(own, report.generation).map_err(|e| {
                err(
                    ErrorCode::Storage,
                    format!("cannot write the vault at {}: {e}", own.display()),
                )
            })?;
            remove_copies(&mut report);
        }
        notes.append(&mut report.notes);
        notes.extend(
            report
                .refused
                .iter()
                .map(|r| format!("refused (not merged): {r}")),
        );
        Ok(())
    }

    /// Merges the folder into the unlocked vault now (`Sync`, and the watcher).
    pub fn sync_now(&self) -> Result<Response, AgentError> {
        // The merge, the bulk of the work, runs on a copy without the
        // writers' lock (the watcher runs at a low priority: a writer must
        // not wait on it); only writing the result and putting it in place
        // take the lock. If the session or its vault changed meanwhile, the
        // merge is made again under the lock.
        let now_at = |st: &State| match st {
            State::Unlocked(s) => Some((s.unlocked_at, s.vault.file().generation)),
            _ => None,
        };
        let premerged = {
            let st = self.read_state();
            match (&*st, now_at(&st)) {
                (State::Unlocked(s), Some(at)) => s.vault.try_clone().ok().map(|c| {
                    let path = s.account.vault_path.clone();
                    (at, folder_stamp(&path, &s.account.id), path, c)
                }),
                _ => None,
            }
        }
        .map(|(at, stamp, path, mut copy)| {
            let own_key = self.key_in_force(&copy.account_id());
            let report = merge_folder(&mut copy, &path, own_key);
            (at, stamp, copy, report)
        });
        let mut out = (Vec::new(), Vec::new());
        self.edit_vault(|v, path| {
            // The folder as it was before the merge read it, too: a copy
            // rewritten since (a sync engine reuses names) must not be
            // removed unmerged.
            let unchanged = |at, stamp: &Vec<_>| {
                now_at(&self.read_state()) == Some(at)
                    && &folder_stamp(path, &v.account_id()) == stamp
            };
            let mut report = match premerged {
                Some((at, stamp, copy, report)) if unchanged(at, &stamp) => {
                    *v = copy;
                    report
                }
                _ => {
                    let own_key = self.key_in_force(&v.account_id());
                    merge_folder(v, path, own_key)
                }
            };
            if report.changed {
                v.persist_above(path, report.generation).map_err(|e| {
                    err(
                        ErrorCode::Storage,
                        format!("cannot write the merged vault: {e}"),
                    )
                })?;
            }
            remove_copies(&mut report);
            if report.credentials_changed {
                // This device's file and keychain protectors hold the
                // Secret Key the other device replaced (or not): stale, so
                // that the next unlock asks for the Secret Key instead of
                // failing as a wrong password.
                let new_key = v
                    .file()
                    .password_wraps
                    .iter()
                    .any(|w| vault::wrap_origin(&w.slot_id).is_some_and(|(_, _, k)| k == 's'));
                let kinds: Vec<_> = v
                    .file()
                    .protectors
                    .iter()
                    .filter(|p| new_key && v.owns(p))
                    .map(|p| p.kind)
                    .collect();
                for kind in kinds {
                    if let Err(e) = v.mark_stale(path, kind) {
                        tracing::warn!("cannot mark the {} protector stale: {e}", kind.name());
                    }
                }
                report.notes.push(
                    "the Master Password or the Secret Key was changed on another device: the \
                     next unlock here asks for the new one"
                        .into(),
                );
            }
            if report.notes.is_empty() && report.refused.is_empty() {
                report.notes.push("nothing new to merge".into());
            }
            out = (report.notes, report.refused);
            Ok(())
        })?;
        Ok(Response::Synced {
            notes: out.0,
            refused: out.1,
        })
    }

    /// `MergeFiles` (the git merge driver): merges `theirs` into `ours` and
    /// writes `ours`; both must be copies of this account's vault that
    /// verify under its key. The vault in memory takes both in too.
    pub fn merge_files(&self, ours: &str, theirs: &str) -> Result<Response, AgentError> {
        let (ours, theirs) = (PathBuf::from(ours), PathBuf::from(theirs));
        if !ours.is_absolute() || !theirs.is_absolute() {
            return Err(err(
                ErrorCode::InvalidInput,
                "the copies to merge must be given as absolute paths",
            ));
        }
        let read = |p: &Path| {
            vault::read(p)
                .map_err(|e| err(ErrorCode::InvalidInput, format!("{}: {e}", p.display())))
        };
        let (a, b) = (read(&ours)?, read(&theirs)?);
        let mut notes = Vec::new();
        self.edit_vault(|v, path| {
            let mut copy = v.try_clone().map_err(internal)?;
            for (p, parsed) in [(&ours, &a), (&theirs, &b)] {
                copy.merge_from(parsed).map_err(|e| {
                    let code = if e == MergeError::Busy {
                        ErrorCode::Busy
                    } else {
                        ErrorCode::Corrupt
                    };
                    err(code, format!("{}: {e}", p.display()))
                })?;
            }
            copy.persist(&ours).map_err(|e| {
                err(
                    ErrorCode::Storage,
                    format!("cannot write {}: {e}", ours.display()),
                )
            })?;
            notes.push(format!("merged into {}", ours.display()));
            // This device's vault takes the merge in too.
            let mut changed = false;
            for parsed in [&a, &b] {
                changed |= v.merge_from(parsed).is_ok_and(|o| o.changed);
            }
            if changed && ours != path {
                v.persist(path).map_err(|e| {
                    err(
                        ErrorCode::Storage,
                        format!("cannot write the merged vault: {e}"),
                    )
                })?;
            } else if changed {
                *v = copy;
            }
            Ok(())
        })?;
        Ok(Response::Synced {
            notes,
            refused: Vec::new(),
        })
    }

    /// `DeviceList`.
    pub fn device_list(&self) -> Result<Response, AgentError> {
        let me = self.device_id()?;
        self.with_session(|s| Ok(Response::Devices(device_infos(&s.vault, &me))))
    }

    /// `DeviceRename`.
    pub fn device_rename(&self, which: &str, name: &str) -> Result<Response, AgentError> {
        if !vault::format::device_name_ok(name) {
            return Err(err(
                ErrorCode::InvalidInput,
                "a device name has 1 to 64 bytes and no control characters",
            ));
        }
        let me = self.device_id()?;
        let now = self.clock.unix_now();
        self.edit_vault(|v, path| {
            let id = find_device(v, which, &me)?;
            v.rename_device(path, &id, name, now)
                .map_err(super::state::change_error)?;
            Ok(Response::Devices(device_infos(v, &me)))
        })
    }

    /// `DeviceRemove`.
    pub fn device_remove(&self, which: &str) -> Result<Response, AgentError> {
        let me = self.device_id()?;
        let now = self.clock.unix_now();
        self.edit_vault(|v, path| {
            let id = find_device(v, which, &me)?;
            if id == me {
                return Err(err(
                    ErrorCode::InvalidInput,
                    "this is the device you are on: remove it from another device, or remove \
                     its protectors here (`keyward protector remove`)",
                ));
            }
            v.remove_device(path, &id, now)
                .map_err(super::state::change_error)?;
            Ok(Response::Devices(device_infos(v, &me)))
        })
    }

    /// Starts the thread that merges what other devices write, within
    /// `KEYWARD_SYNC_POLL_MS` (default 1000) of a change in the folder.
    pub fn start_sync_watcher(self: &Arc<Self>) {
        let poll = std::env::var("KEYWARD_SYNC_POLL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(1), Duration::from_millis);
        let agent = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("keyward-sync".into())
            .spawn(move || {
                // Merging is background work: requests (served at the
                // default priority) preempt it on a busy machine. Nice 10
                // still gets a share, so a writer waiting on a merge is not
                // starved.
                // (On Linux a thread id names that thread alone.)
                let me = Some(rustix::thread::gettid());
                if let Err(e) = rustix::process::setpriority_process(me, 10) {
                    tracing::debug!("cannot lower the sync watcher's priority: {e}");
                }
                let mut last = None;
                loop {
                    std::thread::sleep(poll);
                    let Some(agent) = agent.upgrade() else { return };
                    let target = match &*agent.read_state() {
                        State::Unlocked(s) => Some((s.account.vault_path.clone(), s.account.id)),
                        _ => None,
                    };
                    let Some((own, id)) = target else {
                        last = None;
                        continue;
                    };
                    let stamp = folder_stamp(&own, &id);
                    if last.as_ref() == Some(&stamp) {
                        continue;
                    }
                    let synced = agent.sync_now();
                    // The copy of the vault the merge ran on passed key
                    // material through this thread's frames.
                    crate::secret::scrub_stack();
                    match synced {
                        Ok(Response::Synced { notes, .. }) => {
                            for n in notes.iter().filter(|n| *n != "nothing new to merge") {
                                tracing::info!("sync: {n}");
                            }
                            // The folder as it was before this merge, but
                            // with this device's own file as the merge left
                            // it: a part that arrived during the merge is
                            // still new at the next look.
                            let own_now: Vec<_> = folder_stamp(&own, &id)
                                .into_iter()
                                .filter(|e| e.0 == own)
                                .collect();
                            let mut seen: Vec<_> =
                                stamp.into_iter().filter(|e| e.0 != own).collect();
                            seen.extend(own_now);
                            last = Some(seen);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("sync: {}", e.message),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the sync watcher: {e}");
        }
    }
}

fn device_infos(v: &vault::Unlocked, me: &DeviceId) -> Vec<DeviceInfo> {
    let mut out: Vec<DeviceInfo> = v
        .file()
        .devices
        .iter()
        .map(|d| DeviceInfo {
            id: vault::hex(&d.id),
            name: d.name.clone(),
            added: d.added,
            this: &d.id == me,
            protectors: v
                .file()
                .protectors
                .iter()
                .filter(|p| p.device == d.id)
                .map(|p| p.kind.name().to_owned())
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| (b.this, a.added, &a.name).cmp(&(a.this, b.added, &b.name)));
    out
}

fn find_device(v: &vault::Unlocked, which: &str, me: &DeviceId) -> Result<DeviceId, AgentError> {
    if which == "this" {
        return Ok(*me);
    }
    let want = which.to_ascii_lowercase();
    let found: Vec<DeviceId> = v
        .file()
        .devices
        .iter()
        .filter(|d| !want.is_empty() && (vault::hex(&d.id).starts_with(&want) || d.name == which))
        .map(|d| d.id)
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(err(
            ErrorCode::NotFound,
            format!("no device {which:?} (see `keyward device list`)"),
        )),
        _ => Err(err(
            ErrorCode::InvalidInput,
            format!("{which:?} names several devices: give more of the id"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_796_688_000), "2026-12-08");
    }

    #[test]
    fn parts_and_conflict_copies_are_told_apart() {
        let id = AccountId::parse("ABCDEF").unwrap();
        assert!(is_part("vault-ABCDEF.kwv", &id));
        assert!(is_part(
            &format!("vault-ABCDEF.{}.kwv", "0a".repeat(16)),
            &id
        ));
        assert!(!is_part(
            "vault-ABCDEF.sync-conflict-20261207-101010-ABCDEFG.kwv",
            &id
        ));
        assert!(!is_part("vault-ABCDEF (laptop's conflicted copy).kwv", &id));
    }
}
