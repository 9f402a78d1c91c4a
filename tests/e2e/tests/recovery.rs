#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Recovery codes, the Emergency Kit and rotating secrets, end to end.

use keyward_e2e::{Home, signal};
use std::process::{Command, Stdio};
use std::time::Duration;

const PW: &str = "correct horse battery staple";

fn new_code(home: &Home, password: &str) -> (String, String) {
    let r = home
        .run_with(
            &["recovery-code", "new", "--password-fd", "3", "--json"],
            None,
            Some(password.as_bytes()),
        )
        .expect_code(0);
    let j = r.json();
    (
        j["id"].as_str().unwrap().to_owned(),
        j["code"].as_str().unwrap().to_owned(),
    )
}

fn unlock_typed(home: &Home, password: &str, secret_key: &str) -> keyward_e2e::Run {
    home.run_with(
        &["unlock", "--password-stdin", "--secret-key-fd", "3"],
        Some(password.as_bytes()),
        Some(secret_key.as_bytes()),
    )
}

#[test]
fn the_full_lock_out_story() {
    let home = Home::new();
    let (account, old_sk) = home.init(PW);
    home.run_with(&["set", "bank/pin"], Some(b"4321"), None)
        .expect_code(0);
    let (id, code) = new_code(&home, PW);
    assert!(code.starts_with("RC1-") && id.len() == 16, "{code} {id}");
    let list = home.ok(&["recovery-code", "list", "--json"]).json();
    assert_eq!(list[0]["id"], id.as_str());
    assert!(list[0]["last_used"].is_null());
    assert!(
        !home.ok(&["recovery-code", "list"]).stdout.contains("RC1-"),
        "codes are never listed"
    );

    // Lose everything: the Secret Key's copy on this device, and the password.
    std::fs::remove_file(home.paths.state_dir.join(format!("secret-key-{account}"))).unwrap();
    home.ok(&["lock"]);
    home.stop_agent();

    // A typo is caught by the format, and does not count as an attempt. The
    // check bits miss 1 single-symbol typo in 16, and such a typo is just a
    // wrong code (counted): look for a caught one, spending at most the free
    // failures on the way, then repeat it past the free budget.
    let typo_at = |k: usize| {
        let mut t = code.clone().into_bytes();
        let i = t.len() - 2 - k / 2;
        t[i] = match (t[i], k % 2) {
            (b'7', _) => b'8',
            (_, 0) => b'7',
            _ => b'3',
        };
        String::from_utf8(t).unwrap()
    };
    let mut uncaught = 0;
    let typo = (0..)
        .map(typo_at)
        .find(|t| {
            let r = home.recover(t, "x");
            if r.code == 9 {
                assert!(r.stderr.contains("this recovery code has a typo"), "{r}");
                return true;
            }
            assert_eq!(r.code, 6, "an uncaught typo is a wrong code: {r}");
            uncaught += 1;
            assert!(uncaught < 3, "three typos in a row passed the check bits");
            false
        })
        .unwrap();
    for _ in 0..6 {
        let r = home.recover(&typo, "x").expect_code(9);
        assert!(r.stderr.contains("this recovery code has a typo"), "{r}");
    }

    let r = home
        .recover(
            &code.to_lowercase().replace('-', " "),
            "a whole new password",
        )
        .expect_code(0);
    let new_sk = r.json()["secret_key"].as_str().unwrap().to_owned();
    assert_ne!(new_sk, old_sk);
    assert!(
        new_sk.starts_with(&format!("K1-{account}-")),
        "same account id"
    );
    assert_eq!(
        home.status()["state"],
        "unlocked",
        "recover leaves the agent unlocked"
    );
    assert_eq!(home.ok(&["get", "bank/pin"]).stdout, "4321");

    // Old credentials no longer open the vault; the new ones do.
    home.ok(&["lock"]);
    unlock_typed(&home, PW, &old_sk).expect_code(6);
    unlock_typed(&home, "a whole new password", &old_sk).expect_code(6);
    unlock_typed(&home, PW, &new_sk).expect_code(6);
    home.unlock("a whole new password").expect_code(0); // Secret Key from this device again
    assert_eq!(home.ok(&["get", "bank/pin"]).stdout, "4321");

    // The code stays valid, and records its use.
    let used = home.ok(&["recovery-code", "list", "--json"]).json();
    assert!(used[0]["last_used"].as_u64().unwrap() > 0);
    home.ok(&["lock"]);
    home.recover(&code, "third password").expect_code(0);
    assert_eq!(home.ok(&["get", "bank/pin"]).stdout, "4321");

    // Revoked: refused, and counted.
    home.ok_pw(&["recovery-code", "revoke", &id[..6]], "third password");
    home.ok(&["lock"]);
    let r = home.recover(&code, "fourth").expect_code(6);
    assert!(r.stderr.contains("does not open this vault"), "{r}");
    assert!(
        home.ok(&["recovery-code", "list"])
            .stdout
            .contains("No recovery codes")
    );
}

#[test]
fn wrong_recovery_codes_count_in_the_same_backoff_as_passwords() {
    let home = Home::new();
    home.init(PW);
    // A well-formed code that is not this vault's: a code made for another home.
    let other = Home::new();
    other.init("other");
    let (_, foreign) = new_code(&other, "other");
    home.ok(&["lock"]);
    for _ in 0..2 {
        home.unlock("wrong").expect_code(6);
    }
    for _ in 0..2 {
        home.recover(&foreign, "new").expect_code(6);
    }
    let st = home.status();
    assert!(
        st["backoff_seconds"].as_u64().unwrap() >= 1,
        "4 failures of both kinds together: {st}"
    );
    let r = home.unlock(PW).expect_code(6);
    assert!(r.stderr.contains("too many failed attempts"), "{r}");
}

#[test]
fn rotating_the_secret_key_retires_the_old_one() {
    let home = Home::new();
    let (_, old_sk) = home.init(PW);
    home.run_with(&["set", "k"], Some(b"v"), None)
        .expect_code(0);
    let (_, code) = new_code(&home, PW);
    home.run_with(
        &["secret-key", "rotate", "--password-fd", "3", "--json"],
        None,
        Some(b"wrong"),
    )
    .expect_code(6);
    let r = home
        .run_with(
            &["secret-key", "rotate", "--password-fd", "3", "--json"],
            None,
            Some(PW.as_bytes()),
        )
        .expect_code(0);
    let new_sk = r.json()["secret_key"].as_str().unwrap().to_owned();
    assert_ne!(new_sk, old_sk);
    home.ok(&["lock"]);
    unlock_typed(&home, PW, &old_sk).expect_code(6);
    unlock_typed(&home, PW, &new_sk).expect_code(0);
    home.ok(&["lock"]);
    home.unlock(PW).expect_code(0); // the file protector holds the new key
    assert_eq!(home.ok(&["get", "k"]).stdout, "v");
    // Recovery codes survive a rotation and a password change.
    home.run_with(
        &[
            "change-password",
            "--password-fd",
            "3",
            "--new-password-fd",
            "0",
            "--allow-weak-password",
        ],
        Some(b"changed\n"),
        Some(PW.as_bytes()),
    )
    .expect_code(0);
    home.ok(&["lock"]);
    home.recover(&code, "after all that").expect_code(0);
    assert_eq!(home.ok(&["get", "k"]).stdout, "v");
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_emergency_kit_pdf_holds_the_secret_key_in_text_and_in_its_qr_code() {
    if !keyward_e2e::require(
        "pdftotext, pdftoppm (poppler-utils) and zbarimg (zbar-tools)",
        has("pdftotext") && has("pdftoppm") && has("zbarimg"),
    ) {
        return;
    }
    let home = Home::new();
    let (account, sk) = home.init(PW);
    let out = home.path().join("kit.pdf");
    // No terminal, no pinentry, no --password-fd: a clear error, nothing written.
    let r = home
        .run_with(&["emergency-kit", "--out", "nowhere.pdf"], None, None)
        .expect_code(1);
    assert!(r.stderr.contains("--password-fd"), "{r}");
    let out_s = out.to_str().unwrap();
    home.run_with(
        &["emergency-kit", "--password-fd", "3", "--out", out_s],
        None,
        Some(PW.as_bytes()),
    )
    .expect_code(0);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    let text = Command::new("pdftotext")
        .args([out_s, "-"])
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&sk),
        "the PDF's text holds the Secret Key:\n{text}"
    );
    assert!(
        text.contains(&account) && text.contains("keyward recover"),
        "{text}"
    );
    // Render and decode the QR code.
    let png_base = home.path().join("kit");
    let st = Command::new("pdftoppm")
        .args([
            "-r",
            "150",
            "-png",
            "-singlefile",
            out_s,
            png_base.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let z = Command::new("zbarimg")
        .args([
            "--quiet",
            "--raw",
            home.path().join("kit.png").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let decoded = String::from_utf8_lossy(&z.stdout);
    assert_eq!(decoded.trim(), sk, "the QR code decodes to the Secret Key");
    // The text format, to stdout.
    let t = home
        .run_with(
            &["emergency-kit", "--password-fd", "3", "--format", "text"],
            None,
            Some(PW.as_bytes()),
        )
        .expect_code(0);
    assert!(
        t.stdout.contains(&sk) && t.stdout.contains("Master Password:"),
        "{t}"
    );
    // A wrong password writes nothing.
    let bad = home.path().join("bad.pdf");
    home.run_with(
        &[
            "emergency-kit",
            "--password-fd",
            "3",
            "--out",
            bad.to_str().unwrap(),
        ],
        None,
        Some(b"nope"),
    )
    .expect_code(6);
    assert!(!bad.exists());
}

/// SIGKILL of the agent at many moments of a credential change: afterwards
/// the vault opens with the old credentials or the new ones, never neither.
#[test]
fn sigkill_during_recover_rotate_and_change_password_never_locks_the_user_out() {
    let rounds_per_op = 8;
    let mut outcomes = std::collections::BTreeMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for op in ["change-password", "rotate", "recover"] {
        let home = Home::new();
        home.init(PW);
        home.run_with(&["set", "k"], Some(b"v"), None)
            .expect_code(0);
        let (_, code) = new_code(&home, PW);
        let mut current = PW.to_owned();
        for round in 0..rounds_per_op {
            if home.status()["state"] != "unlocked" {
                home.unlock(&current).expect_code(0);
            }
            let next = format!("password {op} {round}");
            let (args, fd3, stdin): (Vec<&str>, String, String) = match op {
                "change-password" => (
                    vec![
                        "change-password",
                        "--password-fd",
                        "3",
                        "--new-password-fd",
                        "0",
                    ],
                    current.clone(),
                    next.clone(),
                ),
                "rotate" => (
                    vec!["secret-key", "rotate", "--password-fd", "3"],
                    current.clone(),
                    String::new(),
                ),
                _ => (
                    vec!["recover", "--code-fd", "3", "--new-password-fd", "0"],
                    code.clone(),
                    next.clone(),
                ),
            };
            let tmp = home.path().join("fd3");
            std::fs::write(&tmp, &fd3).unwrap();
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg("exec \"$0\" \"$@\" 3<\"$KW_FD3\"")
                .arg(keyward_e2e::keyward_bin())
                .args(&args)
                .env("KW_FD3", &tmp)
                .env("KEYWARD_HOME", home.path())
                .env("KEYWARD_AGENT", keyward_e2e::agent_bin())
                .env("KEYWARD_PINENTRY", "none")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let pid = home.agent_pid().unwrap();
            let mut child = cmd.spawn().unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_micros(seed % 250_000));
            signal(pid, rustix::process::Signal::KILL);
            let _ = child.wait();
            home.wait_for(
                Duration::from_secs(5),
                "the killed agent to be gone",
                || home.agent_pid() != Some(pid),
            );
            // Old or new password; the Secret Key from this device either way.
            let candidates: Vec<String> = if op == "rotate" {
                vec![current.clone()]
            } else {
                vec![current.clone(), next.clone()]
            };
            let opened = candidates
                .iter()
                .find(|p| home.unlock(p).code == 0)
                .cloned();
            let Some(opened) = opened else {
                panic!(
                    "{op} round {round}: neither the old nor the new credentials open the vault"
                );
            };
            assert_eq!(home.ok(&["get", "k"]).stdout, "v", "{op} round {round}");
            let state = if opened == current { "old" } else { "new" };
            *outcomes.entry(format!("{op}: {state}")).or_insert(0) += 1;
            current = opened;
        }
    }
    eprintln!("outcomes after SIGKILL: {outcomes:?}");
}

/// The vault file of `home`'s account.
fn vault_file(home: &Home) -> std::path::PathBuf {
    std::fs::read_dir(&home.paths.data_dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "kwv"))
        .unwrap()
}

/// Issue 19, reproduction 2a: copy the vault, revoke a recovery code, lock,
/// put the old copy back. `recover` with the revoked code used to succeed
/// (and its writes pushed the generation past the mark, so no warning was
/// ever shown). Now it is refused; an unlock warns and revokes the code again.
#[test]
fn a_rolled_back_vault_does_not_bring_back_a_revoked_recovery_code() {
    let home = Home::new();
    home.init(PW);
    let (id, code) = new_code(&home, PW);
    let path = vault_file(&home);
    let old = std::fs::read(&path).unwrap();
    home.ok_pw(&["recovery-code", "revoke", &id], PW);
    home.ok(&["lock"]);
    std::fs::write(&path, &old).unwrap();

    let r = home.recover(&code, "an attacker's password");
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("older than one keyward opened"), "{r}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        old,
        "recover wrote the vault"
    );

    // The owner's unlock still works, warns, and revokes the code again.
    let r = home.unlock(PW).expect_code(0);
    assert!(r.stderr.contains("WARNING"), "{r}");
    assert!(r.stderr.contains(&format!("recovery code {id}")), "{r}");
    let codes = home.ok(&["recovery-code", "list", "--json"]).json();
    assert_eq!(codes.as_array().unwrap().len(), 0, "{codes}");
    // Later writes push the generation past the mark: the code stays dead.
    home.ok(&["lock"]);
    home.recover(&code, "an attacker's password").expect_code(6);
}

/// Issue 19, reproduction 2b: revoke a code and kill -9 the agent (the mark
/// used to be written only at unlock and lock), then put an older copy back.
#[test]
fn a_revocation_survives_a_killed_agent_and_a_rolled_back_vault() {
    let home = Home::new();
    home.init(PW);
    let (id, code) = new_code(&home, PW);
    let path = vault_file(&home);
    let old = std::fs::read(&path).unwrap();
    home.ok_pw(&["recovery-code", "revoke", &id], PW);
    let pid = home.agent_pid().unwrap();
    signal(pid, rustix::process::Signal::KILL);
    home.wait_for(Duration::from_secs(10), "the agent to die", || {
        home.agent_pid().is_none()
    });
    std::fs::write(&path, &old).unwrap();
    let r = home.recover(&code, "an attacker's password");
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("older than one keyward opened"), "{r}");
}

/// Issue 19, reproduction 3: another user plants a link where the kit is
/// about to be written and holds its target open. The kit is never written
/// through it; `--force` replaces the link itself.
#[test]
fn the_emergency_kit_is_never_written_through_a_planted_link() {
    let home = Home::new();
    home.init(PW);
    let target = home.path().join("planted");
    std::fs::write(&target, b"").unwrap();
    let link = home.path().join("kit.txt");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let link_s = link.to_str().unwrap();
    let args = [
        "emergency-kit",
        "--format",
        "text",
        "--password-fd",
        "3",
        "--out",
        link_s,
    ];
    let r = home.run_with(&args, None, Some(PW.as_bytes()));
    assert_ne!(r.code, 0, "{r}");
    assert!(
        r.stderr.contains("already exists") && r.stderr.contains("--force"),
        "{r}"
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"",
        "written through the link"
    );
    let mut forced = args.to_vec();
    forced.push("--force");
    home.run_with(&forced, None, Some(PW.as_bytes()))
        .expect_code(0);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"",
        "written through the link"
    );
    assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(std::fs::read_to_string(&link).unwrap().contains("K1-"));
}

/// Issue 19, item 8: a new Master Password with a character that keyward's
/// Unicode version has not assigned is refused wherever one is chosen
/// (init, change-password, recover), and nothing changes.
#[test]
fn new_passwords_with_unassigned_characters_are_refused_everywhere() {
    let bad = "horse battery \u{378} staple";
    let home = Home::new();
    let r = home.run_with(&["init", "--password-fd", "3"], None, Some(bad.as_bytes()));
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("has not assigned"), "{r}");
    assert_eq!(home.status()["state"], "uninitialized");

    home.init(PW);
    let (_, code) = new_code(&home, PW);
    let r = home.run_with(
        &[
            "change-password",
            "--password-fd",
            "3",
            "--new-password-fd",
            "0",
        ],
        Some(format!("{bad}\n").as_bytes()),
        Some(PW.as_bytes()),
    );
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("has not assigned"), "{r}");
    home.ok(&["lock"]);
    let r = home.recover(&code, bad);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("has not assigned"), "{r}");
    // The old password still opens: nothing was changed.
    home.unlock(PW).expect_code(0);
}

/// Raises the Argon2id memory of the vault's first password wrap to
/// `m_kib`, recomputing the file checksum (as anyone who can write the file
/// can). Records start at byte 44; a password wrap is written first:
/// type, len, slot_len, slot, salt16, then m (u32, big-endian).
fn set_first_wrap_memory(path: &std::path::Path, m_kib: u32) {
    use sha2::Digest;
    let mut b = std::fs::read(path).unwrap();
    assert_eq!(b[44], 0x01, "the first record is a password wrap");
    let slot_len = usize::from(b[49]);
    let m = 50 + slot_len + 16;
    b[m..m + 4].copy_from_slice(&m_kib.to_be_bytes());
    let n = b.len() - 32;
    let sum = sha2::Sha256::digest(&b[..n]);
    b[n..].copy_from_slice(&sum);
    std::fs::write(path, b).unwrap();
}

/// Issue 19, item 9/"a wrap's cost": someone who can write the vault file
/// raises a password wrap's Argon2id cost. The right password used to fail
/// as wrong (after minutes of Argon2id at the load limit) and count towards
/// the back-off; now the unlock stops before any derivation, says the vault
/// was tampered with, and counts nothing.
#[test]
fn an_altered_argon2id_cost_is_tampering_and_costs_no_attempt() {
    let home = Home::new();
    home.init(PW);
    home.ok(&["lock"]);
    home.unlock(PW).expect_code(0); // this device has seen the wrap
    home.ok(&["lock"]);
    let path = vault_file(&home);
    set_first_wrap_memory(&path, 4 * 1024 * 1024);
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let r = home.unlock(PW);
        assert_ne!(r.code, 0, "{r}");
        assert!(r.stderr.contains("tampered"), "{r}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "4 GiB of Argon2id ran: {:?}",
            start.elapsed()
        );
    }
    assert_eq!(home.status()["backoff_seconds"], 0, "attempts were counted");
}
