//! Everyday vault commands: `backup`, `restore`, `mv` and `edit`.

use crate::cli::{paths, unlocked};
use crate::connect::connect;
use crate::output::{CliError, exit};
use keyward_client::{Client, Request, Response, Secret};
use serde_json::json;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(path)
        .map_err(|e| CliError::msg(format!("cannot resolve {}: {e}", path.display())))
}

/// `keyward backup [--out FILE] [--force]`.
pub fn backup(
    autostart: bool,
    no_prompt: bool,
    out: Option<&Path>,
    force: bool,
    json: bool,
) -> Result<(), CliError> {
    let out = match out {
        Some(p) => absolute(p)?,
        None => {
            let id = connect(&paths()?, autostart)?
                .status()?
                .account_id
                .unwrap_or_default();
            let day = crate::output::date(crate::cli::unix_now());
            let day = day.split(' ').next().unwrap_or("today").to_owned();
            absolute(Path::new(&format!("keyward-backup-{id}-{day}.kwv")))?
        }
    };
    let out_s = out
        .to_str()
        .ok_or_else(|| CliError::with(exit::INVALID, "the backup path is not valid UTF-8"))?
        .to_owned();
    let r = unlocked(autostart, no_prompt, |c| {
        c.call(&Request::Backup {
            out: out_s.clone(),
            force,
        })
    })?;
    let Response::BackedUp {
        path,
        generation,
        items,
    } = r
    else {
        return Err(CliError::msg("unexpected answer from the agent"));
    };
    if json {
        println!(
            "{}",
            json!({"path": path, "generation": generation, "items": items})
        );
        return Ok(());
    }
    eprintln!(
        "Backup written to {path} ({items} items, write generation {generation}); it opened with \
         this vault's keys before it was written."
    );
    eprintln!(
        "It is encrypted as the vault is: keep it anywhere (another disk, a cloud folder), but not \
         next to your Emergency Kit. Restore with `keyward restore {path}`."
    );
    Ok(())
}

/// `keyward restore FILE [--older]`.
pub fn restore(autostart: bool, no_prompt: bool, file: &Path, older: bool) -> Result<(), CliError> {
    let path = absolute(file)?;
    let path = path
        .to_str()
        .ok_or_else(|| CliError::with(exit::INVALID, "the backup path is not valid UTF-8"))?
        .to_owned();
    let r = unlocked(autostart, no_prompt, |c| {
        c.call(&Request::Restore {
            path: path.clone(),
            older,
        })
    })?;
    let Response::Restored { notes } = r else {
        return Err(CliError::msg("unexpected answer from the agent"));
    };
    for n in notes {
        eprintln!("{}.", crate::output::sentence(&n));
    }
    Ok(())
}

/// `keyward mv OLD NEW`.
pub fn rename(autostart: bool, no_prompt: bool, old: &str, new: &str) -> Result<(), CliError> {
    unlocked(autostart, no_prompt, |c| {
        c.call(&Request::Rename {
            old: old.to_owned(),
            new: new.to_owned(),
        })
        .map(|_| ())
    })
}

/// Linux's `statfs` magic number of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

fn on_tmpfs(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|s| s.f_type == TMPFS_MAGIC)
}

/// Opens `path` without following a link, and only if it is still the
/// file created (same device and inode).
fn open_created(path: &Path, created: (u64, u64), write: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let md = f.metadata()?;
    if (md.dev(), md.ino()) != created || !md.is_file() {
        return Err(std::io::Error::other("the file was replaced"));
    }
    Ok(f)
}

/// Overwrites the file with zeros (its length), then removes it.
fn shred(path: &Path, created: (u64, u64)) {
    if let Ok(mut f) = open_created(path, created, true) {
        let len = f.metadata().map_or(0, |m| m.len());
        let zeros = vec![0u8; 4096];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            if f.write_all(&zeros[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = f.sync_all();
    }
    let _ = std::fs::remove_file(path);
}

/// `keyward edit NAME [--force]`: the value in `$VISUAL`/`$EDITOR`, through
/// a 0600 file in the user's runtime directory (refused where that is not
/// a tmpfs, i.e. memory, unless `force`), removed afterwards.
pub fn edit(autostart: bool, no_prompt: bool, name: &str, force: bool) -> Result<(), CliError> {
    // The value first: connecting may start the agent, which may move the
    // runtime directory (a default another user made first); the directory
    // is decided after that, from where the agent is.
    let value = unlocked(autostart, no_prompt, |c: &mut Client| c.get(name))?;
    let mut paths = paths()?;
    let uid = keyward_client::paths::current_uid();
    paths.refresh_runtime_dir(uid);
    let runtime = paths.runtime_dir.clone();
    if let Err(why) = keyward_client::paths::check_private_dir(&runtime, uid) {
        return Err(CliError::msg(format!(
            "{} {why}: not writing {name}'s value there",
            runtime.display()
        )));
    }
    let dir = runtime;
    if !on_tmpfs(&dir) && !force {
        return Err(CliError::with(
            exit::INVALID,
            format!(
                "{} is not a tmpfs (memory), so the file the editor opens could reach the disk; \
                 pass --force to edit there anyway, or use `keyward set {name}`",
                dir.display()
            ),
        ));
    }
    // A fresh 0700 directory of its own inside it, for the file and any
    // file the editor puts beside it.
    let own = tempfile::Builder::new()
        .prefix(".keyward-edit-")
        .tempdir_in(&dir)
        .map_err(|e| {
            CliError::msg(format!(
                "cannot create a directory in {}: {e}",
                dir.display()
            ))
        })?;
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|e| !e.is_empty())
        .or_else(|| std::env::var("EDITOR").ok().filter(|e| !e.is_empty()))
        .unwrap_or_else(|| "vi".to_owned());
    let file = tempfile::Builder::new()
        .prefix("value-")
        .tempfile_in(own.path())
        .map_err(|e| {
            CliError::msg(format!(
                "cannot create a file in {}: {e}",
                own.path().display()
            ))
        })?;
    let path = file.path().to_owned();
    let created = {
        use std::os::unix::fs::MetadataExt;
        let md = file
            .as_file()
            .metadata()
            .map_err(|e| CliError::msg(e.to_string()))?;
        (md.dev(), md.ino())
    };
    // tempfile creates it 0600 and exclusively.
    let written = file
        .as_file()
        .write_all(value.expose())
        .and_then(|()| file.as_file().sync_all());
    drop(value);
    let (file, kept) = file.keep().map_err(|e| CliError::msg(e.to_string()))?;
    drop(file);
    let outcome = (|| -> Result<Secret, CliError> {
        written.map_err(|e| CliError::msg(format!("cannot write {}: {e}", kept.display())))?;
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("keyward-edit")
            .arg(&kept)
            .status()
            .map_err(|e| CliError::msg(format!("cannot run the editor ({editor}): {e}")))?;
        if !status.success() {
            return Err(CliError::with(
                exit::CANCELLED,
                format!("the editor ({editor}) failed ({status}); {name} was left as it was"),
            ));
        }
        let mut buf = Vec::new();
        open_created(&kept, created, false)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(|e| CliError::msg(format!("cannot read back {}: {e}", kept.display())))?;
        // Editors end the last line with a newline: one is dropped, as `set` does.
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        Ok(Secret::new(buf))
    })();
    shred(&kept, created);
    // The editor's own files beside it (a swap file, if it writes one
    // there) go with the directory.
    drop(own);
    debug_assert_eq!(path, kept);
    let new = outcome?;
    let unchanged = unlocked(autostart, no_prompt, |c| c.get(name))?.expose() == new.expose();
    if unchanged {
        eprintln!("{name} unchanged.");
        return Ok(());
    }
    connect(&paths, autostart)?.set(name, new)?;
    eprintln!("{name} saved.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_is_recognised() {
        if Path::new("/dev/shm").is_dir() {
            assert!(on_tmpfs(Path::new("/dev/shm")));
        }
        assert!(!on_tmpfs(Path::new("/proc")));
    }
}
