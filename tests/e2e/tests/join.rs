#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keyward join` (issue 17, item 1): a second device takes up an existing
//! vault where it is (a folder a sync engine keeps), with the Secret Key and
//! the Master Password; a wrong one is refused and counted like an unlock,
//! and leaves nothing behind.

use keyward_e2e::Home;
use keyward_e2e::files_under;
use std::path::{Path, PathBuf};

const PW: &str = "join master password";

/// Device A: an account with two items; its vault file.
fn device_a() -> (Home, String, String, PathBuf) {
    let a = Home::new();
    let (account, sk) = a.init(PW);
    a.run_with(&["set", "github/token"], Some(b"ghp_from_a"), None)
        .expect_code(0);
    a.run_with(&["set", "db/password"], Some(b"hunter2"), None)
        .expect_code(0);
    let vault = a.paths.data_dir.join(format!("vault-{account}.kwv"));
    assert!(vault.is_file());
    (a, account, sk, vault)
}

/// The folder a sync engine keeps, holding a copy of `vault`.
fn synced_folder(vault: &Path) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("keyward-sync-")
        .tempdir()
        .unwrap();
    std::fs::copy(vault, dir.path().join(vault.file_name().unwrap())).unwrap();
    dir
}

fn no_vault_in(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |rd| {
        rd.flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".kwv"))
    })
}

fn assert_nothing_written(b: &Home, account: &str) {
    let pointer = b.paths.state_dir.join("vault-path");
    assert!(
        !pointer.exists(),
        "a refused join left {}",
        pointer.display()
    );
    let file = b.paths.state_dir.join(format!("secret-key-{account}"));
    assert!(!file.exists(), "a refused join left {}", file.display());
    assert!(no_vault_in(&b.paths.data_dir));
    assert_eq!(b.status()["state"], "uninitialized");
}

#[test]
fn a_second_device_joins_the_vault_where_it_is() {
    let (_a, account, sk, vault) = device_a();
    let folder = synced_folder(&vault);
    let in_folder = std::fs::canonicalize(folder.path())
        .unwrap()
        .join(vault.file_name().unwrap());

    let b = Home::new();
    assert_eq!(b.status()["state"], "uninitialized");
    let r = b
        .join(folder.path(), &sk, PW, &["--protector", "file", "--json"])
        .expect_code(0);
    let j = r.json();
    assert_eq!(j["state"], "unlocked", "{r}");
    assert_eq!(j["account_id"], account.as_str());
    assert_eq!(j["protector"], "file");
    assert_eq!(j["vault"], in_folder.to_str().unwrap(), "{r}");

    // B reads A's items, from the vault in the folder.
    assert_eq!(b.ok(&["get", "github/token"]).stdout, "ghp_from_a");
    assert_eq!(b.ok(&["get", "db/password"]).stdout, "hunter2");
    let st = b.status();
    assert_eq!(st["state"], "unlocked");
    assert_eq!(st["account_id"], account.as_str());
    // B's writes go to the folder, into a part of B's own beside the
    // vault it joined (SECURITY.md §18): A's file is not B's to write.
    b.run_with(&["set", "from/b"], Some(b"written by b"), None)
        .expect_code(0);
    assert!(
        no_vault_in(&b.paths.data_dir),
        "B's data directory holds a vault"
    );
    assert_eq!(
        std::fs::read(&in_folder).unwrap(),
        std::fs::read(&vault).unwrap(),
        "B wrote the file it joined"
    );
    let part = std::fs::read_dir(in_folder.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p != &in_folder && p.extension().is_some_and(|x| x == "kwv"))
        .expect("B's part in the folder");

    // B's state directory: the pointer (0600, absolute) and the Secret Key file.
    use std::os::unix::fs::PermissionsExt;
    let pointer = b.paths.state_dir.join("vault-path");
    assert_eq!(
        std::fs::metadata(&pointer).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(&pointer).unwrap().trim_end(),
        part.to_str().unwrap()
    );
    let sk_file = b.paths.state_dir.join(format!("secret-key-{account}"));
    assert!(std::fs::read_to_string(&sk_file).unwrap().contains(&sk));

    // The folder holds the vault and nothing of B's: no Secret Key in any form.
    let needle = sk.split('-').max_by_key(|g| g.len()).unwrap().to_owned();
    let in_folder_files = files_under(folder.path());
    assert_eq!(in_folder_files.len(), 2, "{in_folder_files:?}");
    for (path, bytes) in in_folder_files {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&sk) && !text.contains(&needle),
            "{} (in the synced folder) holds the Secret Key",
            path.display()
        );
    }

    // A new agent finds the account through the pointer, and unlocks with
    // the password only (the file protector gives the Secret Key).
    b.stop_agent();
    let st = b.status();
    assert_eq!(st["state"], "locked", "{st}");
    assert_eq!(st["account_id"], account.as_str());
    b.unlock(PW).expect_code(0);
    assert_eq!(b.status()["protector"], "file");
    assert_eq!(b.ok(&["get", "from/b"]).stdout, "written by b");
    assert_eq!(b.ok(&["get", "github/token"]).stdout, "ghp_from_a");
}

#[test]
fn a_wrong_secret_key_or_password_is_refused_counted_and_leaves_nothing() {
    let (a, account, old_sk, vault) = device_a();
    // A new Secret Key on A: the old one (well formed, of this account) is
    // now a wrong one.
    let sk = a.rotate_secret_key(PW);
    assert_ne!(sk, old_sk);
    let folder = synced_folder(&vault);
    let b = Home::new();

    let r = b.join(folder.path(), &old_sk, PW, &[]).expect_code(6);
    assert!(
        r.stderr.contains("wrong Master Password or Secret Key")
            && r.stderr.contains("2 more tries"),
        "{r}"
    );
    assert_nothing_written(&b, &account);

    let r = b
        .join(folder.path(), &sk, "not the password", &[])
        .expect_code(6);
    assert!(r.stderr.contains("1 more try"), "the failures add up: {r}");
    assert_nothing_written(&b, &account);

    // The third failure is free too; the fourth starts the back-off, which
    // refuses even the right credentials, as for an unlock.
    b.join(folder.path(), &sk, "still not it", &[])
        .expect_code(6);
    let r = b.join(folder.path(), &sk, "nor this", &[]).expect_code(6);
    assert!(r.stderr.contains("next attempt accepted in"), "{r}");
    assert!(b.status()["backoff_seconds"].as_u64().unwrap() > 0);
    let r = b.join(folder.path(), &sk, PW, &[]).expect_code(6);
    assert!(r.stderr.contains("too many failed attempts"), "{r}");
    assert_nothing_written(&b, &account);

    // A typo (not a Secret Key at all) is not counted, and says so.
    let c = Home::new();
    let r = c
        .join(folder.path(), "K1-NOT-A-KEY", PW, &[])
        .expect_code(9);
    assert!(r.stderr.contains("Secret Key"), "{r}");
    assert_eq!(c.status()["backoff_seconds"], 0);
    assert_nothing_written(&c, &account);
}

#[test]
fn join_is_refused_with_an_account_and_for_a_folder_of_two_vaults() {
    let (_a, _account, sk, vault) = device_a();
    let folder = synced_folder(&vault);

    // A device that has its own account does not join another.
    let b = Home::new();
    b.init("b's own password");
    let r = b.join(folder.path(), &sk, PW, &[]).expect_code(9);
    assert!(r.stderr.contains("already has an account"), "{r}");
    assert!(!b.paths.state_dir.join("vault-path").exists());

    // A folder holding two vaults: say which, join neither.
    let other = Home::new();
    let (other_account, _) = other.init("other password");
    std::fs::copy(
        other
            .paths
            .data_dir
            .join(format!("vault-{other_account}.kwv")),
        folder.path().join(format!("vault-{other_account}.kwv")),
    )
    .unwrap();
    let c = Home::new();
    let r = c.join(folder.path(), &sk, PW, &[]).expect_code(9);
    assert!(
        r.stderr.contains("several vaults") && r.stderr.contains(&other_account),
        "{r}"
    );
    assert_eq!(c.status()["state"], "uninitialized");
    // The vault file itself can be given.
    let file = folder.path().join(vault.file_name().unwrap());
    c.join(&file, &sk, PW, &["--protector", "none"])
        .expect_code(0);
    assert_eq!(c.status()["protector"], "none");

    // A folder with no vault.
    let empty = tempfile::tempdir().unwrap();
    let d = Home::new();
    let r = d.join(empty.path(), &sk, PW, &[]).expect_code(7);
    assert!(r.stderr.contains("no keyward vault"), "{r}");
}

#[test]
fn join_reads_the_secret_key_from_the_emergency_kit_pdf_or_a_scan_of_it() {
    let has = |p: &str| std::process::Command::new(p).arg("-v").output().is_ok();
    if !keyward_e2e::require("pdftoppm (poppler-utils)", has("pdftoppm")) {
        return;
    }
    let (a, account, _sk, vault) = device_a();
    let pdf = a.path().join("kit.pdf");
    a.run_with(
        &[
            "emergency-kit",
            "--password-fd",
            "3",
            "--out",
            pdf.to_str().unwrap(),
        ],
        None,
        Some(PW.as_bytes()),
    )
    .expect_code(0);
    let base = a.path().join("kit");
    let ok = std::process::Command::new("pdftoppm")
        .args(["-r", "150", "-png", "-singlefile"])
        .arg(&pdf)
        .arg(&base)
        .status()
        .unwrap()
        .success();
    assert!(ok, "pdftoppm failed");
    let png = a.path().join("kit.png");
    let folder = synced_folder(&vault);

    let b = Home::new();
    let r = b
        .run_with(
            &[
                "join",
                folder.path().to_str().unwrap(),
                "--kit",
                png.to_str().unwrap(),
                "--password-stdin",
                "--json",
            ],
            Some(format!("{PW}\n").as_bytes()),
            None,
        )
        .expect_code(0);
    assert_eq!(r.json()["account_id"], account.as_str());
    assert_eq!(b.ok(&["get", "github/token"]).stdout, "ghp_from_a");

    // The kit's PDF itself.
    let c = Home::new();
    let r = c
        .run_with(
            &[
                "join",
                folder.path().to_str().unwrap(),
                "--kit",
                pdf.to_str().unwrap(),
                "--password-stdin",
                "--json",
                "--protector",
                "none",
            ],
            Some(format!("{PW}\n").as_bytes()),
            None,
        )
        .expect_code(0);
    assert_eq!(r.json()["account_id"], account.as_str());
    assert_eq!(c.ok(&["get", "db/password"]).stdout, "hunter2");

    // A PDF that is not keyward's kit (a scan saved as PDF): said how to
    // make an image of it.
    let c = Home::new();
    let other_pdf = c.path().join("scan.pdf");
    std::fs::write(&other_pdf, b"%PDF-1.4\nnot a real PDF\n").unwrap();
    let r = c
        .run_with(
            &[
                "join",
                folder.path().to_str().unwrap(),
                "--kit",
                other_pdf.to_str().unwrap(),
                "--password-stdin",
            ],
            Some(format!("{PW}\n").as_bytes()),
            None,
        )
        .expect_code(9);
    assert!(r.stderr.contains("pdftoppm -png"), "{r}");
    assert_eq!(c.status()["state"], "uninitialized");
    // An image without the kit's QR code.
    let blank = c.path().join("blank.png");
    std::fs::write(&blank, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let r = c
        .run_with(
            &[
                "join",
                folder.path().to_str().unwrap(),
                "--kit",
                blank.to_str().unwrap(),
                "--password-stdin",
            ],
            Some(format!("{PW}\n").as_bytes()),
            None,
        )
        .expect_code(9);
    assert!(r.stderr.contains("not a PNG or JPEG image"), "{r}");
    assert_eq!(c.status()["state"], "uninitialized");
}
