#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Issue 21 items 1 and 6: backup and restore, `list PATTERN`, `mv`, `edit`.

use keyward_e2e::Home;
use std::os::unix::fs::PermissionsExt;

const PW: &str = "correct horse battery staple";

fn set(home: &Home, name: &str, value: &str) {
    home.run_with(&["set", name, "--force"], Some(value.as_bytes()), None)
        .expect_code(0);
}

fn names(home: &Home, args: &[&str]) -> Vec<String> {
    let mut all = vec!["list"];
    all.extend(args);
    home.ok(&all).stdout.lines().map(str::to_owned).collect()
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file()
                && let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_backup_is_checked_private_and_restores_only_items() {
    let home = Home::new();
    home.init(PW);
    set(&home, "a", "1");
    set(&home, "b", "2");
    let out = home.path().join("backup.kwv");
    let out_s = out.to_str().unwrap();
    let j = home.ok(&["backup", "--out", out_s, "--json"]).json();
    assert_eq!(j["items"], 2);
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Encrypted as the vault is: neither value in clear.
    assert!(files_holding(home.path(), b"correct horse").is_empty());
    // Never over an existing file without --force.
    let r = home.run(&["backup", "--out", out_s]);
    assert_eq!(r.code, 9, "{r}");

    // Later changes, and a credential change that a restore must not undo.
    home.ok(&["rm", "a"]);
    set(&home, "b", "22");
    set(&home, "c", "3");
    let (_, code) = {
        let j = home.ok_pw(&["recovery-code", "new", "--json"], PW).json();
        (
            j["id"].as_str().unwrap().to_owned(),
            j["code"].as_str().unwrap().to_owned(),
        )
    };

    // Older than the vault: refused, saying what it would bring back.
    let r = home.run(&["restore", out_s]);
    assert_eq!(r.code, 9, "{r}");
    for what in [
        "older",
        "brings back 1 item",
        "\"a\"",
        "\"b\"",
        "removes 1 item",
        "\"c\"",
        "--older",
    ] {
        assert!(r.stderr.contains(what), "{what}\n{r}");
    }
    assert_eq!(names(&home, &[]), ["b", "c"]);

    let r = home.ok(&["restore", out_s, "--older"]);
    assert!(r.stderr.contains("kept in"), "{r}");
    assert_eq!(names(&home, &[]), ["a", "b"]);
    assert_eq!(home.ok(&["get", "b"]).stdout, "2");
    // The recovery code made after the backup still works: credentials stayed.
    home.ok(&["lock"]);
    home.recover(&code, "a brand new master password")
        .expect_code(0);
    assert_eq!(home.ok(&["get", "a"]).stdout, "1");

    // Nothing lost: the vault as it was before the restore is kept.
    let kept: Vec<_> = std::fs::read_dir(&home.paths.state_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("before-restore-")
        })
        .collect();
    assert_eq!(kept.len(), 1);
}

#[test]
fn a_backup_of_another_account_or_a_tampered_one_is_refused() {
    let home = Home::new();
    home.init(PW);
    set(&home, "a", "1");
    let other = Home::new();
    other.init(PW);
    let theirs = other.path().join("theirs.kwv");
    other.ok(&["backup", "--out", theirs.to_str().unwrap()]);
    let r = home.run(&["restore", theirs.to_str().unwrap(), "--older"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("not of this account"), "{r}");

    // A flipped byte in an item, checksum recomputed: the MAC says no.
    let mine = home.path().join("mine.kwv");
    home.ok(&["backup", "--out", mine.to_str().unwrap()]);
    let mut b = std::fs::read(&mine).unwrap();
    let n = b.len();
    b[n - 40] ^= 1;
    use sha2::Digest;
    let sum = sha2::Sha256::digest(&b[..n - 32]);
    b[n - 32..].copy_from_slice(&sum);
    std::fs::write(&mine, &b).unwrap();
    let r = home.run(&["restore", mine.to_str().unwrap(), "--older"]);
    assert_eq!(r.code, 10, "{r}");
    assert!(r.stderr.contains("tampered"), "{r}");
    assert_eq!(home.ok(&["get", "a"]).stdout, "1");
}

/// A backup made before a `keyward rekey` is under the account key the
/// rekey retired: it still restores (its items sealed again under the key
/// in force), says so, and counts unchanged items as unchanged. A copy
/// tampered with is still refused.
#[test]
fn a_backup_made_before_a_rekey_restores() {
    let home = Home::new();
    // No merge of the folder behind the test's back (the own file is
    // swapped below).
    home.set_env([("KEYWARD_SYNC_POLL_MS".to_owned(), "600000".to_owned())]);
    let (account, _) = home.init(PW);
    set(&home, "a", "1");
    set(&home, "b", "2");
    let out = home.path().join("before-rekey.kwv");
    let out_s = out.to_str().unwrap();
    home.ok(&["backup", "--out", out_s]);
    home.ok_pw(&["rekey", "--json"], PW);
    home.ok(&["rm", "a"]);
    set(&home, "c", "3");
    let r = home.run(&["restore", out_s]);
    assert_eq!(r.code, 9, "{r}");
    // "b" is the same write in both: not listed as changed.
    assert!(
        r.stderr.contains("brings back 1 item") && !r.stderr.contains("gives"),
        "{r}"
    );
    assert!(r.stderr.contains("made before a `keyward rekey`"), "{r}");
    let r = home.ok(&["restore", out_s, "--older"]);
    assert!(r.stderr.contains("before a `keyward rekey`"), "{r}");
    assert_eq!(names(&home, &[]), ["a", "b"]);
    assert_eq!(home.ok(&["get", "a"]).stdout, "1");
    // Written under the key in force: it opens after a lock.
    home.ok(&["lock"]);
    home.unlock(PW).expect_code(0);
    assert_eq!(home.ok(&["get", "b"]).stdout, "2");

    // A backup is only ever of a file under the key in force: the old
    // copy put in place of the vault file is refused.
    let vault = home.paths.data_dir.join(format!("vault-{account}.kwv"));
    let now = std::fs::read(&vault).unwrap();
    std::fs::copy(&out, &vault).unwrap();
    let again = home.path().join("again.kwv");
    let r = home.run(&["backup", "--out", again.to_str().unwrap()]);
    assert_ne!(r.code, 0, "a backup of a file under a retired key: {r}");
    assert!(!again.exists());
    std::fs::write(&vault, now).unwrap();

    // The same backup with a flipped byte: refused.
    let mut b = std::fs::read(&out).unwrap();
    let n = b.len();
    b[n - 40] ^= 1;
    use sha2::Digest;
    let sum = sha2::Sha256::digest(&b[..n - 32]);
    b[n - 32..].copy_from_slice(&sum);
    std::fs::write(&out, &b).unwrap();
    let r = home.run(&["restore", out_s, "--older"]);
    assert_eq!(r.code, 10, "{r}");
}

#[test]
fn list_a_pattern_and_rename() {
    let home = Home::new();
    home.init(PW);
    for n in ["github/token", "github/ssh", "gitlab/token", "bank"] {
        set(&home, n, "v");
    }
    assert_eq!(names(&home, &["github/*"]), ["github/ssh", "github/token"]);
    assert_eq!(names(&home, &["*/token"]), ["github/token", "gitlab/token"]);
    assert_eq!(names(&home, &["b?nk"]), ["bank"]);
    home.run(&["list", "[oops"]).expect_code(9);

    set(&home, "bank", "secret value");
    home.ok(&["mv", "bank", "money/bank"]);
    assert_eq!(home.ok(&["get", "money/bank"]).stdout, "secret value");
    home.run(&["get", "bank"]).expect_code(7);
    // Onto an existing name: refused, both kept.
    let r = home.run(&["mv", "money/bank", "github/ssh"]);
    assert_eq!(r.code, 9, "{r}");
    assert!(r.stderr.contains("exists already"), "{r}");
    home.run(&["mv", "nothing", "x"]).expect_code(7);
    // It survives a lock (it was written).
    home.ok(&["lock"]);
    home.unlock(PW).expect_code(0);
    assert_eq!(home.ok(&["get", "money/bank"]).stdout, "secret value");
}

#[test]
fn edit_goes_through_the_editor_and_leaves_no_file() {
    let home = Home::new();
    home.init(PW);
    set(&home, "note", "first secret line");
    // An "editor" that replaces the text.
    let editor = home.path().join("editor.sh");
    std::fs::write(
        &editor,
        // (spelled in capitals here, so that the script itself does not
        // hold the value the scan below looks for)
        "#!/bin/sh\nprintf 'EDITED SECRET LINE\\n' | tr A-Z a-z > \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    home.set_env([("EDITOR".to_owned(), editor.display().to_string())]);
    // The e2e runtime directory is not a tmpfs: refused without --force.
    let r = home.run(&["edit", "note"]);
    assert_eq!(r.code, 9, "{r}");
    assert!(
        r.stderr.contains("tmpfs") && r.stderr.contains("--force"),
        "{r}"
    );
    home.ok(&["edit", "note", "--force"]);
    assert_eq!(home.ok(&["get", "note"]).stdout, "edited secret line");
    // No copy of either value left in any file.
    assert!(files_holding(home.path(), b"secret line").is_empty());
    // An editor that fails leaves the value as it was.
    std::fs::write(&editor, "#!/bin/sh\nexit 3\n").unwrap();
    let r = home.run(&["edit", "note", "--force"]);
    assert_eq!(r.code, 12, "{r}");
    assert_eq!(home.ok(&["get", "note"]).stdout, "edited secret line");
    assert!(files_holding(home.path(), b"secret line").is_empty());
}

/// The review's S1: `edit` writes the value only into a runtime directory
/// that is private to the user (checked after the agent has started, so a
/// directory another user took is never used), in a fresh directory of its own.
#[test]
fn edit_refuses_a_runtime_directory_that_is_not_private() {
    let home = Home::new();
    home.init(PW);
    set(&home, "note", "private value here");
    let editor = home.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    home.set_env([("EDITOR".to_owned(), editor.display().to_string())]);
    let run = home.paths.runtime_dir.clone();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let r = home.run(&["edit", "note", "--force"]);
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stderr.contains("not writing"), "{r}");
    assert!(files_holding(home.path(), b"private value").is_empty());
    // Private again: it works, and leaves nothing behind in the directory.
    home.ok(&["edit", "note", "--force"]);
    let left: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".keyward-edit-")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The review's S5: through the socket alone, Backup cannot overwrite
/// other files of the user or write into keyward's own directories, and
/// Restore of a FIFO neither hangs nor holds up writers.
#[test]
fn backup_and_restore_paths_are_bounded() {
    let home = Home::new();
    home.init(PW);
    set(&home, "a", "1");
    let precious = home.path().join("precious.txt");
    std::fs::write(&precious, "keep me").unwrap();
    let r = home.run(&["backup", "--out", precious.to_str().unwrap(), "--force"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("not a keyward backup"), "{r}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    let inside = home.paths.data_dir.join("x.kwv");
    let r = home.run(&["backup", "--out", inside.to_str().unwrap()]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("keyward's own directory"), "{r}");
    // An earlier backup can be replaced with --force.
    let b = home.path().join("b.kwv");
    home.ok(&["backup", "--out", b.to_str().unwrap()]);
    home.ok(&["backup", "--out", b.to_str().unwrap(), "--force"]);

    let fifo = home.path().join("fifo.kwv");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let start = std::time::Instant::now();
    let r = home.run(&["restore", fifo.to_str().unwrap(), "--older"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("not a regular file"), "{r}");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    set(&home, "b", "2");
}
