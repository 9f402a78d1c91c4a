//! `keyward sync`, `keyward sync init-git`, `keyward merge-driver` and
//! `keyward device …`: several devices on one vault (SECURITY.md §18). The
//! agent does the merging (it holds the keys); these ask it to, and show
//! what it did.

use crate::cli::{PasswordSource, unlocked};
use crate::connect::connect;
use crate::output::Spinner;
use crate::output::{CliError, exit};
use clap::Subcommand;
use keyward_client::message::DeviceInfo;
use keyward_client::{Request, Response};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `keyward sync …`.
#[derive(Subcommand, Debug)]
pub enum SyncAction {
    /// Make git merge copies of the vault record by record: registers
    /// `keyward merge-driver` for `*.kwv` in the repository that holds the
    /// vault (its config and .gitattributes).
    InitGit {
        /// The repository (its work tree); default: the current directory.
        #[arg(long, value_name = "DIR")]
        repo: Option<PathBuf>,
    },
}

/// `keyward device …`.
#[derive(Subcommand, Debug)]
pub enum DeviceAction {
    /// The account's devices, this one first.
    List {
        /// Print `[{"id", "name", "added", "this", "protectors"}]` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Give a device a new name (`this` for this device).
    Rename {
        /// `this`, a device's name, or its id (or a unique prefix).
        device: String,
        /// The new name.
        name: String,
    },
    /// Remove another device from the account: its protectors go, and its
    /// next unlock is refused (it can `keyward join` again with the Secret
    /// Key and the Master Password).
    Remove {
        /// A device's name, or its id (or a unique prefix).
        device: String,
    },
}

fn synced(r: Response, json: bool) -> Result<(), CliError> {
    let Response::Synced { notes, refused } = r else {
        return Err(CliError::msg("unexpected answer from the agent"));
    };
    if json {
        println!("{}", json!({"notes": notes, "refused": refused}));
    } else {
        for n in &notes {
            println!("{n}");
        }
        for r in &refused {
            eprintln!("refused (not merged): {r}");
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(CliError::with(
            exit::FAILURE,
            format!(
                "{} cop{} of the vault did not verify under this account's key and were not \
                 merged: written by someone without the account key, damaged, or written \
                 after a `keyward rekey` on another device (then lock and unlock here). A \
                 conflict copy or a file no device of yours wrote can be removed; another \
                 device's part (vault-ID.<device>.kwv) is that device's to fix",
                refused.len(),
                if refused.len() == 1 { "y" } else { "ies" }
            ),
        ))
    }
}

/// `keyward sync`: merge now what other devices wrote.
pub fn sync(autostart: bool, no_prompt: bool, json: bool) -> Result<(), CliError> {
    let r = unlocked(autostart, no_prompt, |c| c.call(&Request::Sync))?;
    synced(r, json)
}

/// `keyward merge-driver %O %A %B`: git's merge driver for vault files.
/// Writes the merge into `%A`; exits non-zero (git then reports a conflict)
/// if a copy does not verify or the agent is locked.
pub fn merge_driver(autostart: bool, ours: &Path, theirs: &Path) -> Result<(), CliError> {
    let abs = |p: &Path| {
        std::path::absolute(p)
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(|e| CliError::with(exit::INVALID, format!("{}: {e}", p.display())))
    };
    let req = Request::MergeFiles {
        ours: abs(ours)?,
        theirs: abs(theirs)?,
    };
    let r = unlocked(autostart, true, |c| c.call(&req)).map_err(|e| {
        CliError::with(
            e.code,
            format!(
                "keyward could not merge the vault copies: {}; unlock keyward (`keyward \
                 unlock`) and merge again",
                e.message
            ),
        )
    })?;
    let Response::Synced { notes, .. } = r else {
        return Err(CliError::msg("unexpected answer from the agent"));
    };
    for n in notes {
        eprintln!("keyward: {n}");
    }
    Ok(())
}

fn git(repo: &Path, args: &[&str]) -> Result<String, CliError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|e| CliError::with(exit::INVALID, format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(CliError::with(
            exit::INVALID,
            format!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `keyward sync init-git`.
pub fn init_git(repo: Option<&Path>) -> Result<(), CliError> {
    let repo = repo.unwrap_or(Path::new("."));
    let top = PathBuf::from(git(repo, &["rev-parse", "--show-toplevel"])?);
    let exe = std::env::current_exe()
        .map_err(|e| CliError::with(exit::INVALID, format!("cannot find keyward itself: {e}")))?;
    let quoted = format!("'{}'", exe.display().to_string().replace('\'', r"'\''"));
    git(
        &top,
        &[
            "config",
            "merge.keyward.name",
            "keyward vault (record by record)",
        ],
    )?;
    git(
        &top,
        &[
            "config",
            "merge.keyward.driver",
            &format!("{quoted} merge-driver %O %A %B"),
        ],
    )?;
    let attrs = top.join(".gitattributes");
    let line = "*.kwv merge=keyward -diff";
    let text = std::fs::read_to_string(&attrs).unwrap_or_default();
    if !text.lines().any(|l| l.trim() == line) {
        let mut t = text;
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        t.push_str(line);
        t.push('\n');
        std::fs::write(&attrs, t).map_err(|e| {
            CliError::with(
                exit::INVALID,
                format!("cannot write {}: {e}", attrs.display()),
            )
        })?;
    }
    println!(
        "git in {} now merges vault files with keyward (the agent must be unlocked while it \
         merges); commit {} so that the other clones use it too, and run `keyward sync \
         init-git` in each clone (the driver is set in each clone's own config)",
        top.display(),
        attrs.display()
    );
    Ok(())
}

fn devices(r: Result<Response, CliError>, json: bool) -> Result<(), CliError> {
    let r = r?;
    let Response::Devices(list) = r else {
        return Err(CliError::msg("unexpected answer from the agent"));
    };
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|d: &DeviceInfo| {
                json!({"id": d.id, "name": d.name, "added": d.added, "this": d.this, "protectors": d.protectors})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    for d in &list {
        println!(
            "{}  {:<24}  added {}  protectors: {}{}",
            &d.id[..d.id.len().min(8)],
            d.name,
            crate::output::date(d.added),
            if d.protectors.is_empty() {
                "yubikey or typed".to_owned()
            } else {
                d.protectors.join(", ")
            },
            if d.this { "  (this device)" } else { "" }
        );
    }
    Ok(())
}

/// `keyward device …`.
pub fn device(autostart: bool, no_prompt: bool, action: DeviceAction) -> Result<(), CliError> {
    let call = |req: Request| -> Result<Response, CliError> {
        unlocked(autostart, no_prompt, |c| c.call(&req))
    };
    match action {
        DeviceAction::List { json } => devices(call(Request::DeviceList), json),
        DeviceAction::Rename { device, name } => {
            devices(call(Request::DeviceRename { device, name }), false)
        }
        DeviceAction::Remove { device } => {
            let r = call(Request::DeviceRemove {
                device: device.clone(),
            });
            if r.is_ok() {
                eprintln!(
                    "removed {device}: its next unlock is refused; the Secret Key and the Master \
                     Password it knew still open older copies of the vault: if the device was \
                     lost, change both (`keyward secret-key rotate`, `keyward passwd`)"
                );
            }
            devices(r, false)
        }
    }
}

/// `keyward rekey`.
pub fn rekey(autostart: bool, password: &PasswordSource, json: bool) -> Result<(), CliError> {
    let mut c = connect(&crate::cli::paths()?, autostart)?;
    let pw = password.get(
        "Master Password",
        "Confirm with your Master Password to seal the vault under a new account key.",
    )?;
    let spinner = Spinner::start("Sealing the vault under a new account key…");
    let r = c.call(&Request::Rekey { password: pw });
    drop(spinner);
    let r = r?;
    let Response::Rekeyed {
        revoked_codes,
        notes,
    } = r
    else {
        return Err(CliError::msg("unexpected answer from the agent"));
    };
    if json {
        println!(
            "{}",
            json!({"revoked_codes": revoked_codes, "notes": notes})
        );
        return Ok(());
    }
    println!("The vault is sealed under a new account key.");
    for n in &notes {
        println!("  - {n}");
    }
    if !revoked_codes.is_empty() {
        println!();
        println!("Make new recovery codes now: `keyward recovery-code new`.");
    }
    Ok(())
}
