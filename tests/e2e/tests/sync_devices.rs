#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Several devices on one vault (issue 17, SECURITY.md §18): two homes,
//! each with its own agent, sharing the vault's folder — directly (a shared
//! folder), through a real Syncthing pair on 127.0.0.1, and through git (a
//! bare repository, a clone per device, keyward's merge driver). Every
//! acknowledged write is checked on both devices.

use keyward_e2e::syncthing::{self, Pair, Side};
use keyward_e2e::{Home, Run, require};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PW: &str = "several devices password";

fn set(h: &Home, name: &str, value: &str) {
    h.run_with(&["set", "--force", name], Some(value.as_bytes()), None)
        .expect_code(0);
}

fn get(h: &Home, name: &str) -> Option<String> {
    let r = h.run(&["get", name]);
    (r.code == 0).then(|| r.stdout.clone())
}

fn sync(h: &Home) -> Run {
    h.run(&["sync", "--json"])
}

/// `keyward join` of `folder` on `b` with the file protector.
fn join(b: &Home, folder: &Path, sk: &str) -> Run {
    b.join(folder, sk, PW, &["--protector", "file", "--json"])
}

/// Device A (an account, one item) and device B joined to A's data
/// directory as a shared folder.
fn two_devices() -> (Home, Home, String, String) {
    let a = Home::new();
    a.set_env([("KEYWARD_SYNC_POLL_MS".to_owned(), "200".to_owned())]);
    let (account, sk) = a.init(PW);
    set(&a, "shared", "from a");
    let b = Home::new();
    b.set_env([("KEYWARD_SYNC_POLL_MS".to_owned(), "200".to_owned())]);
    join(&b, &a.paths.data_dir, &sk).expect_code(0);
    (a, b, account, sk)
}

fn vault_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".kwv"))
        .collect();
    v.sort();
    v
}

#[test]
fn each_device_writes_its_own_part_and_both_see_every_write() {
    let (a, b, account, _sk) = two_devices();
    // B wrote a part of its own beside A's file; nothing else of B's is there.
    let files = vault_files(&a.paths.data_dir);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.contains(&format!("vault-{account}.kwv")));
    assert_eq!(get(&b, "shared").as_deref(), Some("from a"));
    for (p, bytes) in keyward_e2e::files_under(&a.paths.data_dir) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("K1-"), "{} holds a Secret Key", p.display());
    }

    // Apart (no agent reads the other's part until told): each sets an item.
    set(&a, "only-a", "1");
    set(&b, "only-b", "2");
    sync(&a).expect_code(0);
    sync(&b).expect_code(0);
    for h in [&a, &b] {
        assert_eq!(get(h, "only-a").as_deref(), Some("1"));
        assert_eq!(get(h, "only-b").as_deref(), Some("2"));
    }

    // Both edit one item: the later edit wins on both.
    set(&a, "shared", "a's edit");
    std::thread::sleep(Duration::from_millis(2100));
    set(&b, "shared", "b's later edit");
    sync(&a).expect_code(0);
    sync(&b).expect_code(0);
    sync(&a).expect_code(0);
    assert_eq!(get(&a, "shared").as_deref(), Some("b's later edit"));
    assert_eq!(get(&b, "shared").as_deref(), Some("b's later edit"));

    // A removes an item B has not touched: gone on both, and stays gone
    // after more merges both ways.
    a.ok(&["rm", "only-b"]);
    sync(&b).expect_code(0);
    sync(&a).expect_code(0);
    sync(&b).expect_code(0);
    assert_eq!(get(&a, "only-b"), None);
    assert_eq!(get(&b, "only-b"), None);

    // The watcher: a write on B reaches A's running agent without a request
    // to merge (A polls every 200 ms here).
    set(&b, "watched", "seen");
    a.wait_for(Duration::from_secs(10), "A to merge B's write", || {
        get(&a, "watched").as_deref() == Some("seen")
    });

    // Devices are named and listed on both.
    let list = a.ok(&["device", "list", "--json"]).json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list.iter().filter(|d| d["this"] == true).count(), 1);
    let b_id = b
        .ok(&["device", "list", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["this"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.ok(&["device", "rename", "this", "laptop-b"]);
    sync(&a).expect_code(0);
    let names = a.ok(&["device", "list", "--json"]).stdout;
    assert!(names.contains("laptop-b"), "{names}");
    assert!(
        a.ok(&["device", "list"]).stdout.contains("file"),
        "B's file protector is listed under B"
    );

    // A removes B: B's next unlock is refused with a clear message.
    a.ok(&["device", "remove", &b_id[..8]]);
    b.ok(&["lock"]);
    let r = b.unlock(PW);
    assert_ne!(r.code, 0, "a removed device unlocked");
    assert!(r.stderr.contains("removed"), "{}", r.stderr);
}

#[test]
fn a_revocation_and_a_new_secret_key_reach_the_other_device() {
    let (a, b, _account, _sk) = two_devices();
    let code = a
        .run_with(
            &["recovery-code", "new", "--password-fd", "3", "--json"],
            None,
            Some(PW.as_bytes()),
        )
        .expect_code(0)
        .json();
    let (code_id, code) = (
        code["id"].as_str().unwrap().to_owned(),
        code["code"].as_str().unwrap().to_owned(),
    );
    sync(&b).expect_code(0);
    assert!(
        b.ok(&["recovery-code", "list"])
            .stdout
            .contains(&code_id[..8])
    );
    // A revokes it while B's agent is stopped (apart).
    b.stop_agent();
    a.ok_pw(&["recovery-code", "revoke", &code_id[..8]], PW);
    // B's own part still has the code: it must not open B's vault.
    let r = b.recover(&code, "another new password");
    assert_ne!(r.code, 0, "a code revoked on A recovered B: {}", r.stdout);
    b.unlock(PW).expect_code(0);
    assert!(
        !b.ok(&["recovery-code", "list"])
            .stdout
            .contains(&code_id[..8]),
        "revoked on A, still listed on B"
    );

    // A makes a new Secret Key while B is apart (locked).
    b.ok(&["lock"]);
    let new_sk = a.rotate_secret_key(PW);
    // B's file protector holds the old key: the unlock says what happened.
    let r = b.unlock(PW);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("Secret Key was changed on") && r.stderr.contains("20"),
        "{}",
        r.stderr
    );
    // Typed, the new key opens, and B's protector takes it.
    b.run_with(
        &["unlock", "--password-stdin", "--secret-key-fd", "3"],
        Some(PW.as_bytes()),
        Some(new_sk.as_bytes()),
    )
    .expect_code(0);
    assert_eq!(get(&b, "shared").as_deref(), Some("from a"));
    b.ok(&["lock"]);
    b.unlock(PW).expect_code(0);
    assert_eq!(b.status()["protector"], "file");
}

#[test]
fn a_rekey_on_one_device_reaches_the_other_and_revokes_the_codes() {
    let (a, b, account, _sk) = two_devices();
    let code = a
        .run_with(
            &["recovery-code", "new", "--password-fd", "3", "--json"],
            None,
            Some(PW.as_bytes()),
        )
        .expect_code(0)
        .json()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = std::fs::read(a.paths.data_dir.join(format!("vault-{account}.kwv"))).unwrap();
    let j = a.ok_pw(&["rekey", "--json"], PW).json();
    assert_eq!(j["revoked_codes"].as_array().unwrap().len(), 1, "{j}");
    let after = std::fs::read(a.paths.data_dir.join(format!("vault-{account}.kwv"))).unwrap();
    assert_ne!(before, after);
    assert_eq!(get(&a, "shared").as_deref(), Some("from a"));
    // B, still on the old key, writes; A refuses B's part (whoever holds an
    // old key — a removed device, a revoked code and an old copy — must not
    // get anything merged), until B takes the new key.
    set(&b, "after-rekey-on-b", "old key");
    let r = sync(&a);
    assert_ne!(r.code, 0, "A merged a part under the retired key");
    assert_eq!(get(&a, "after-rekey-on-b"), None);
    // B's running agent cannot read A's new file: it says why.
    let r = sync(&b);
    assert_ne!(r.code, 0);
    assert!(r.stdout.contains("rekey"), "{}", r.stdout);
    // Locked and not yet caught up, B still holds the revoked code's wrap
    // in its own file: the folder shows the rekey, so no code recovers it.
    b.ok(&["lock"]);
    let r = b.recover(&code, "another new password");
    assert_ne!(
        r.code, 0,
        "a code revoked by a rekey elsewhere recovered B: {r}"
    );
    assert!(r.stderr.contains("rekey"), "{r}");
    // B's next unlock takes the new key, with the same credentials, and
    // its own file (under the old key) with it.
    b.unlock(PW).expect_code(0);
    assert_eq!(get(&b, "shared").as_deref(), Some("from a"));
    assert_eq!(get(&b, "after-rekey-on-b").as_deref(), Some("old key"));
    sync(&a).expect_code(0);
    assert_eq!(get(&a, "after-rekey-on-b").as_deref(), Some("old key"));
    set(&b, "on-new-key", "b");
    sync(&b).expect_code(0);
    sync(&a).expect_code(0);
    assert_eq!(get(&a, "on-new-key").as_deref(), Some("b"));
    // The revoked code recovers neither device.
    for h in [&a, &b] {
        h.ok(&["lock"]);
        let r = h.recover(&code, "another new password");
        assert_ne!(
            r.code, 0,
            "a code revoked by the rekey recovered: {}",
            r.stdout
        );
    }
    a.unlock(PW).expect_code(0);
    assert_eq!(get(&a, "on-new-key").as_deref(), Some("b"));
}

/// Copies into `to` the vault files of `from` that `to` does not write
/// itself (what a sync engine would bring over).
fn bring_over(from: &Path, to: &Path, own: &str) {
    for n in vault_files(from) {
        if n != own {
            std::fs::copy(from.join(&n), to.join(&n)).unwrap();
        }
    }
}

/// Two rekeys made on two devices while apart: at the next unlock each
/// device opens the other's copy with the same credentials, the later
/// password wrap's key wins on both, and nothing either wrote is lost
/// (before, the first device to unlock opened the later copy and its own
/// file, under the other key, was overwritten by its next write).
#[test]
fn two_rekeys_made_apart_merge_and_nothing_is_lost() {
    two_rekeys_apart(false);
}

/// [`two_rekeys_made_apart_merge_and_nothing_is_lost`], the joined device
/// rekeying first.
#[test]
fn two_rekeys_made_apart_merge_whichever_came_first() {
    two_rekeys_apart(true);
}

fn two_rekeys_apart(b_first: bool) {
    let a = Home::new();
    let (account, sk) = a.init(PW);
    set(&a, "shared", "from a");
    let main = format!("vault-{account}.kwv");
    // B joins a copy of A's folder: apart, but for what is brought over.
    let b_folder = tempfile::tempdir().unwrap();
    std::fs::copy(a.paths.data_dir.join(&main), b_folder.path().join(&main)).unwrap();
    let b = Home::new();
    join(&b, b_folder.path(), &sk).expect_code(0);
    let b_part = vault_files(b_folder.path())
        .into_iter()
        .find(|n| n != &main)
        .unwrap();
    bring_over(b_folder.path(), &a.paths.data_dir, &main);
    sync(&a).expect_code(0);

    let order = if b_first { [&b, &a] } else { [&a, &b] };
    for h in order {
        h.ok_pw(&["rekey", "--json"], PW);
    }
    set(&a, "a-after", "1");
    set(&b, "b-after", "2");
    // Each folder gets the other's file; each device locks and unlocks.
    for _round in 0..2 {
        bring_over(&a.paths.data_dir, b_folder.path(), &b_part);
        bring_over(b_folder.path(), &a.paths.data_dir, &main);
        for h in order {
            h.ok(&["lock"]);
            let r = h.unlock(PW).expect_code(0);
            assert!(!r.stderr.contains("not taken in"), "{r}");
        }
    }
    bring_over(&a.paths.data_dir, b_folder.path(), &b_part);
    bring_over(b_folder.path(), &a.paths.data_dir, &main);
    for h in [&a, &b] {
        let r = sync(h);
        assert_eq!(r.code, 0, "{r}");
        assert_eq!(get(h, "shared").as_deref(), Some("from a"));
        assert_eq!(get(h, "a-after").as_deref(), Some("1"));
        assert_eq!(get(h, "b-after").as_deref(), Some("2"));
    }
    // Both files are under one key: a third device joining either has all.
    for folder in [a.paths.data_dir.as_path(), b_folder.path()] {
        let c = Home::new();
        join(&c, folder, &sk).expect_code(0);
        assert_eq!(get(&c, "a-after").as_deref(), Some("1"));
        assert_eq!(get(&c, "b-after").as_deref(), Some("2"));
    }
}

/// A part that copies this device's password wrap under a later epoch
/// (it cannot open: the slot id is in the wrap's associated data) is tried
/// first and fails; the device's own file still opens (before, the own
/// file's identical salt and ciphertext made it count as tried already).
#[test]
fn a_forged_part_with_a_later_wrap_does_not_lock_the_device_out() {
    let a = Home::new();
    let (account, _) = a.init(PW);
    set(&a, "k", "v");
    a.ok(&["lock"]);
    let main = a.paths.data_dir.join(format!("vault-{account}.kwv"));
    let mut bytes = std::fs::read(&main).unwrap();
    let at = bytes.windows(4).position(|w| w == b"pw-1").unwrap();
    bytes[at + 3] = b'9';
    let n = bytes.len();
    use sha2::Digest;
    let sum = sha2::Sha256::digest(&bytes[..n - 32]);
    bytes[n - 32..].copy_from_slice(&sum);
    std::fs::write(
        a.paths
            .data_dir
            .join(format!("vault-{account}.{}.kwv", "ab".repeat(16))),
        bytes,
    )
    .unwrap();
    a.unlock(PW).expect_code(0);
    assert_eq!(get(&a, "k").as_deref(), Some("v"));
}

/// A device whose own file was deleted from the folder (by hand, or by a
/// sync engine passing a deletion on) keeps its account: its next unlock
/// opens another device's copy, says what happened, and writes its file
/// again. The first device's main file as well as a joined device's part.
#[test]
fn a_device_whose_file_was_deleted_from_the_folder_unlocks_from_the_others() {
    let (a, b, account, _sk) = two_devices();
    set(&b, "from-b", "1");
    sync(&a).expect_code(0);
    assert_eq!(get(&a, "from-b").as_deref(), Some("1"));
    let main = format!("vault-{account}.kwv");
    let b_part = a.paths.data_dir.join(
        vault_files(&a.paths.data_dir)
            .into_iter()
            .find(|n| n != &main)
            .unwrap(),
    );
    for (h, file) in [(&b, b_part), (&a, a.paths.data_dir.join(&main))] {
        h.stop_agent();
        std::fs::remove_file(&file).unwrap();
        // Not "no account" (which would invite a new `init`): locked.
        assert_eq!(h.status()["state"], "locked", "{}", file.display());
        let r = h.unlock(PW).expect_code(0);
        assert!(r.stderr.contains("was missing from its folder"), "{r}");
        assert!(file.exists(), "{} was not written again", file.display());
        assert_eq!(get(h, "from-b").as_deref(), Some("1"));
        assert_eq!(get(h, "shared").as_deref(), Some("from a"));
        // And it goes on writing and syncing.
        set(h, "after", file.to_str().unwrap());
        for other in [&a, &b] {
            sync(other).expect_code(0);
            assert_eq!(get(other, "after").as_deref(), file.to_str());
        }
    }
}

/// Junk files named like the account's copies (sorting before the real
/// parts, more than the 64 looked at) do not crowd another device's part out.
#[test]
fn junk_files_in_the_folder_do_not_crowd_a_real_part_out() {
    let (a, b, account, _sk) = two_devices();
    for n in 0..80 {
        std::fs::write(
            a.paths
                .data_dir
                .join(format!("vault-{account}-junk-{n:02}.kwv")),
            b"not a vault",
        )
        .unwrap();
    }
    set(&b, "behind-the-junk", "seen");
    let r = sync(&a);
    assert_ne!(r.code, 0, "junk was not reported");
    assert_eq!(get(&a, "behind-the-junk").as_deref(), Some("seen"));
}

/// A vault file written by another account (right name, wrong key).
fn forged_copy(account: &str, dir: &Path) -> PathBuf {
    let other = Home::new();
    let (other_account, _) = other.init(PW);
    set(&other, "shared", "forged value");
    other.ok(&["lock"]);
    let mut bytes = std::fs::read(
        other
            .paths
            .data_dir
            .join(format!("vault-{other_account}.kwv")),
    )
    .unwrap();
    // Same account id in the header (bytes 18..24), checksum made right:
    // it parses, but its MAC is under another account key.
    bytes[18..24].copy_from_slice(account.as_bytes());
    let n = bytes.len();
    use sha2::Digest;
    let sum = sha2::Sha256::digest(&bytes[..n - 32]);
    bytes[n - 32..].copy_from_slice(&sum);
    let path = dir.join(format!(
        "vault-{account}.sync-conflict-20261207-101010-ABCDEFG.kwv"
    ));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_forged_conflict_copy_is_refused_and_reported_and_a_real_one_is_merged() {
    let (a, b, account, _sk) = two_devices();
    let forged = forged_copy(&account, &a.paths.data_dir);
    let r = sync(&a);
    assert_ne!(r.code, 0, "a forged copy was accepted");
    assert!(r.stdout.contains("does not verify"), "{}", r.stdout);
    assert_eq!(
        get(&a, "shared").as_deref(),
        Some("from a"),
        "merged a forged value"
    );
    assert!(
        forged.exists(),
        "the refused copy is left for the user to look at"
    );
    std::fs::remove_file(&forged).unwrap();

    // Real conflict copies, as engines leave them: B's part is back as it
    // was before B's last write, and that write is only in the copy
    // (Syncthing's name, then a cloud folder's). A, apart meanwhile, merges
    // the copy at its unlock and removes it.
    let b_part = a.paths.data_dir.join(
        vault_files(&a.paths.data_dir)
            .into_iter()
            .find(|n| n != &format!("vault-{account}.kwv"))
            .unwrap(),
    );
    for (n, name) in [
        format!("vault-{account}.sync-conflict-20261207-111111-BBBBBBB.kwv"),
        format!("vault-{account} (b's conflicted copy 2026-12-08).kwv"),
    ]
    .into_iter()
    .enumerate()
    {
        a.stop_agent();
        if n > 0 {
            b.unlock(PW).expect_code(0);
        }
        let before = std::fs::read(&b_part).unwrap();
        let item = format!("in-copy-{n}");
        set(&b, &item, "from the copy");
        b.stop_agent();
        let copy = a.paths.data_dir.join(name);
        std::fs::copy(&b_part, &copy).unwrap();
        std::fs::write(&b_part, before).unwrap();
        let r = a.unlock(PW).expect_code(0);
        assert_eq!(get(&a, &item).as_deref(), Some("from the copy"), "{r}");
        assert!(
            !copy.exists(),
            "a merged conflict copy stays: {}",
            copy.display()
        );
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_devices_sync_through_git_with_the_merge_driver_registered() {
    if !require("git", Command::new("git").arg("--version").output().is_ok()) {
        return;
    }
    let a = Home::new();
    let (account, sk) = a.init(PW);
    set(&a, "shared", "from a");
    let root = tempfile::tempdir().unwrap();
    let bare = root.path().join("vault.git");
    git(
        root.path(),
        &["init", "-q", "-b", "main", "--bare", bare.to_str().unwrap()],
    );
    // A's data directory is a clone.
    let data = a.paths.data_dir.clone();
    git(&data, &["init", "-q", "-b", "main"]);
    a.ok(&["sync", "init-git", "--repo", data.to_str().unwrap()]);
    git(&data, &["add", "-A"]);
    git(&data, &["commit", "-q", "-m", "a"]);
    git(&data, &["remote", "add", "origin", bare.to_str().unwrap()]);
    git(&data, &["push", "-q", "origin", "main"]);
    // B clones and joins the clone.
    let clone = root.path().join("b");
    git(
        root.path(),
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    let b = Home::new();
    join(&b, &clone, &sk).expect_code(0);
    b.ok(&["sync", "init-git", "--repo", clone.to_str().unwrap()]);

    // Apart: each sets an item and edits "shared"; B's edit is later.
    set(&a, "only-a", "1");
    set(&a, "shared", "a's edit");
    std::thread::sleep(Duration::from_millis(2100));
    set(&b, "only-b", "2");
    set(&b, "shared", "b's edit");
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "-q", "-m", "b"]);
    git(&clone, &["push", "-q", "origin", "main"]);
    git(&data, &["add", "-A"]);
    git(&data, &["commit", "-q", "-m", "a2"]);
    git(&data, &["pull", "-q", "--no-rebase", "origin", "main"]);
    sync(&a).expect_code(0);
    git(&data, &["add", "-A"]);
    git(&data, &["commit", "-q", "-m", "a3"]);
    git(&data, &["push", "-q", "origin", "main"]);
    git(&clone, &["pull", "-q", "--no-rebase", "origin", "main"]);
    sync(&b).expect_code(0);
    for h in [&a, &b] {
        assert_eq!(get(h, "only-a").as_deref(), Some("1"));
        assert_eq!(get(h, "only-b").as_deref(), Some("2"));
        assert_eq!(get(h, "shared").as_deref(), Some("b's edit"));
    }

    // `sync init-git` registered the driver in each clone.
    for dir in [&data, &clone] {
        let driver = git(dir, &["config", "merge.keyward.driver"]);
        assert!(driver.contains("merge-driver %O %A %B"), "{driver}");
        let attrs = std::fs::read_to_string(dir.join(".gitattributes")).unwrap();
        assert!(attrs.contains("*.kwv merge=keyward"), "{attrs}");
    }
    let _ = account;
}

#[test]
fn the_merge_driver_merges_two_copies_of_one_file() {
    let (a, b, account, sk) = two_devices();
    set(&a, "only-a", "1");
    set(&b, "only-b", "2");
    let work = tempfile::tempdir().unwrap();
    let ours = work.path().join("ours");
    let theirs = work.path().join("theirs");
    let base = work.path().join("base");
    std::fs::copy(a.paths.data_dir.join(format!("vault-{account}.kwv")), &ours).unwrap();
    let b_part = vault_files(&a.paths.data_dir)
        .into_iter()
        .find(|n| n != &format!("vault-{account}.kwv"))
        .unwrap();
    std::fs::copy(a.paths.data_dir.join(b_part), &theirs).unwrap();
    std::fs::write(&base, b"").unwrap();
    a.ok(&[
        "merge-driver",
        base.to_str().unwrap(),
        ours.to_str().unwrap(),
        theirs.to_str().unwrap(),
    ]);
    // A third device joining the merged file alone has both.
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(&ours, folder.path().join(format!("vault-{account}.kwv"))).unwrap();
    let c = Home::new();
    join(&c, folder.path(), &sk).expect_code(0);
    assert_eq!(get(&c, "only-a").as_deref(), Some("1"));
    assert_eq!(get(&c, "only-b").as_deref(), Some("2"));
    // A copy that does not verify makes the driver fail (git reports a conflict).
    let forged = forged_copy(&account, work.path());
    let r = a.run(&[
        "merge-driver",
        base.to_str().unwrap(),
        ours.to_str().unwrap(),
        forged.to_str().unwrap(),
    ]);
    assert_ne!(r.code, 0, "the driver merged a forged copy");
}

/// `git args…` in `dir` as `h` would run it: the merge driver git starts
/// reaches `h`'s agent.
fn git_as(h: &Home, dir: &Path, args: &[&str]) -> std::process::Output {
    let keyward = h.command(&[]);
    let mut c = Command::new("git");
    c.arg("-C").arg(dir).args(args);
    for (k, v) in keyward.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .output()
        .unwrap()
}

/// git itself runs the driver `sync init-git` registered, on a real
/// conflict: one vault file changed on two branches (A's file on one, the
/// copy B wrote on the other). A branch with a forged copy is a conflict.
#[test]
fn git_merge_runs_the_driver_on_one_vault_file_changed_on_two_branches() {
    if !require("git", Command::new("git").arg("--version").output().is_ok()) {
        return;
    }
    let a = Home::new();
    let (account, sk) = a.init(PW);
    set(&a, "shared", "from a");
    let name = format!("vault-{account}.kwv");
    let a_file = a.paths.data_dir.join(&name);
    // B joins a copy of A's folder that A never sees: only git brings
    // their writes together.
    let b_folder = tempfile::tempdir().unwrap();
    std::fs::copy(&a_file, b_folder.path().join(&name)).unwrap();
    let b = Home::new();
    join(&b, b_folder.path(), &sk).expect_code(0);

    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q", "-b", "main"]);
    a.ok(&["sync", "init-git", "--repo", r.to_str().unwrap()]);
    std::fs::copy(&a_file, r.join(&name)).unwrap();
    git(r, &["add", "-A"]);
    git(r, &["commit", "-q", "-m", "base"]);
    // Branch "b": the file as B writes it after setting an item.
    git(r, &["checkout", "-q", "-b", "b"]);
    set(&b, "only-b", "2");
    let b_part = vault_files(b_folder.path())
        .into_iter()
        .find(|n| n != &name)
        .unwrap();
    std::fs::copy(b_folder.path().join(b_part), r.join(&name)).unwrap();
    git(r, &["commit", "-q", "-am", "b"]);
    // Branch "main": A's own edit.
    git(r, &["checkout", "-q", "main"]);
    set(&a, "only-a", "1");
    std::fs::copy(&a_file, r.join(&name)).unwrap();
    git(r, &["commit", "-q", "-am", "a"]);
    assert_eq!(get(&a, "only-b"), None, "A saw B's write before the merge");

    let out = git_as(&a, r, &["merge", "--no-edit", "b"]);
    assert!(
        out.status.success(),
        "git merge: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(git(r, &["status", "--porcelain"]), "");
    let parents = git(r, &["log", "-1", "--format=%P"]);
    assert_eq!(parents.split_whitespace().count(), 2, "not a merge commit");
    // The driver merged record by record: a third device joining the
    // merged file alone has both writes; A's agent took B's in too.
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(r.join(&name), folder.path().join(&name)).unwrap();
    let c = Home::new();
    join(&c, folder.path(), &sk).expect_code(0);
    for h in [&c, &a] {
        assert_eq!(get(h, "only-a").as_deref(), Some("1"));
        assert_eq!(get(h, "only-b").as_deref(), Some("2"));
        assert_eq!(get(h, "shared").as_deref(), Some("from a"));
    }

    // A branch whose copy does not verify: git reports a conflict, the
    // vault keeps nothing of it.
    git(r, &["checkout", "-q", "-b", "forged"]);
    let forged = forged_copy(&account, folder.path());
    std::fs::copy(&forged, r.join(&name)).unwrap();
    git(r, &["commit", "-q", "-am", "forged"]);
    git(r, &["checkout", "-q", "main"]);
    set(&a, "only-a", "again");
    std::fs::copy(&a_file, r.join(&name)).unwrap();
    git(r, &["commit", "-q", "-am", "a again"]);
    let out = git_as(&a, r, &["merge", "--no-edit", "forged"]);
    assert!(!out.status.success(), "git merged a forged copy");
    let status = git(r, &["status", "--porcelain"]);
    assert!(status.starts_with("UU "), "{status}");
    git(r, &["merge", "--abort"]);
    assert_eq!(get(&a, "shared").as_deref(), Some("from a"));
    assert_eq!(get(&a, "only-a").as_deref(), Some("again"));
}

#[test]
fn two_devices_sync_through_a_syncthing_pair_and_nothing_is_lost() {
    if !require("syncthing", syncthing::available()) {
        return;
    }
    let a = Home::new();
    a.set_env([("KEYWARD_SYNC_POLL_MS".to_owned(), "200".to_owned())]);
    let (_account, sk) = a.init(PW);
    set(&a, "shared", "from a");
    let root = tempfile::tempdir().unwrap();
    let b_dir = root.path().join("b-folder");
    std::fs::create_dir_all(&b_dir).unwrap();
    let mut pair = Pair::start(root.path(), &a.paths.data_dir, &b_dir);
    pair.wait_synced(Duration::from_secs(60));
    let b = Home::new();
    b.set_env([("KEYWARD_SYNC_POLL_MS".to_owned(), "200".to_owned())]);
    join(&b, &b_dir, &sk).expect_code(0);
    pair.wait_synced(Duration::from_secs(60));

    // Apart: B's Syncthing is stopped; both write.
    pair.stop_device(Side::B);
    set(&a, "only-a", "1");
    set(&a, "shared", "a's edit");
    std::thread::sleep(Duration::from_millis(2100));
    set(&b, "only-b", "2");
    set(&b, "shared", "b's later edit");
    pair.start_device(Side::B);
    pair.wait_synced(Duration::from_secs(60));
    for h in [&a, &b] {
        h.wait_for(
            Duration::from_secs(20),
            "both writes on both devices",
            || {
                get(h, "only-a").as_deref() == Some("1")
                    && get(h, "only-b").as_deref() == Some("2")
                    && get(h, "shared").as_deref() == Some("b's later edit")
            },
        );
    }
    // A removes an item; it goes on B and stays gone.
    a.ok(&["rm", "only-a"]);
    pair.wait_synced(Duration::from_secs(60));
    b.wait_for(Duration::from_secs(20), "the removal on B", || {
        get(&b, "only-a").is_none()
    });
    sync(&b).expect_code(0);
    pair.wait_synced(Duration::from_secs(60));
    sync(&a).expect_code(0);
    assert_eq!(get(&a, "only-a"), None);
    // No conflict copy is left, and B's Secret Key never reached the folders.
    for dir in [a.paths.data_dir.as_path(), b_dir.as_path()] {
        for name in vault_files(dir) {
            assert!(
                !syncthing::is_conflict_copy(&name),
                "{name} left in {}",
                dir.display()
            );
        }
        for (p, bytes) in keyward_e2e::files_under(dir) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains("K1-"),
                "{} holds a Secret Key",
                p.display()
            );
        }
    }
    drop(pair);
}
