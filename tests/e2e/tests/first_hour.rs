#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Issue 20, "the first hour": what a person at a terminal meets, through a
//! pseudo-terminal (`keyward_e2e::Terminal`): the password policy, prompts
//! in the order that costs the least, mistakes that are asked again, and
//! Ctrl-D as "cancelled".

use keyward_e2e::{Home, Terminal};

const PW: &str = "correct horse battery staple";
const CANCELLED: i32 = 12;

#[test]
fn init_refuses_a_very_weak_password_asks_about_a_weak_one_and_not_about_a_strong_one() {
    let home = Home::new();
    let mut t = Terminal::spawn(&home, &["init", "--protector", "file"]);
    t.expect("Master Password: ");
    t.type_line("a");
    t.expect("(again): ");
    t.type_line("a");
    t.expect("Password strength: very weak.");
    t.expect("keyward does not accept a very weak Master Password");
    // Asked again; a weak one needs a yes, and No is the default.
    t.expect("Master Password: ");
    t.type_line("bananas88");
    t.expect("(again): ");
    t.type_line("bananas88");
    t.expect("Use this weak password anyway? [y/N]");
    t.type_line("");
    t.expect("Master Password: ");
    t.type_line(PW);
    t.expect("(again): ");
    t.type_line(PW);
    t.expect("Password strength: strong.");
    t.expect("Write your Emergency Kit (PDF) now? [Y/n]");
    t.type_line("n");
    let (code, rest) = t.wait();
    assert_eq!(code, 0, "{rest}");
    assert_eq!(home.status()["state"], "unlocked");
}

#[test]
fn scripts_get_the_same_policy_and_a_reason() {
    let home = Home::new();
    let r = home.run_with(&["init", "--password-fd", "3"], None, Some(b"a"));
    assert_eq!(r.code, 9, "{r}");
    assert!(
        r.stderr.contains("very weak") && r.stderr.contains("--allow-weak-password"),
        "{r}"
    );
    assert_eq!(home.status()["state"], "uninitialized");
    home.run_with(
        &["init", "--password-fd", "3", "--allow-weak-password"],
        None,
        Some(b"a"),
    )
    .expect_code(0);
    // change-password and recover too.
    let r = home.run_with(
        &[
            "change-password",
            "--password-fd",
            "3",
            "--new-password-fd",
            "0",
        ],
        Some(b"password\n"),
        Some(b"a"),
    );
    assert_eq!(r.code, 9, "{r}");
    assert!(r.stderr.contains("weak"), "{r}");
}

#[test]
fn change_password_checks_the_current_one_first_and_gives_three_tries() {
    let home = Home::new();
    home.init(PW);
    let mut t = Terminal::spawn(&home, &["change-password"]);
    for _ in 0..2 {
        t.expect("Current Master Password: ");
        t.type_line("not it");
        t.expect("Wrong Master Password");
    }
    t.expect("Current Master Password: ");
    t.type_line(PW);
    t.expect("New Master Password: ");
    t.type_line("a brand new master password");
    t.expect("(again): ");
    t.type_line("a brand new master password");
    let (code, rest) = t.wait();
    assert_eq!(code, 0, "{rest}");
    home.ok(&["lock"]);
    home.unlock("a brand new master password").expect_code(0);

    // Three wrong: the command ends before a new password is asked for.
    let mut t = Terminal::spawn(&home, &["change-password"]);
    for _ in 0..3 {
        t.expect("Current Master Password: ");
        t.type_line("not it");
    }
    let (code, rest) = t.wait();
    assert_eq!(code, 6, "{rest}");
    assert!(!rest.contains("New Master Password"), "{rest}");
}

#[test]
fn recover_checks_the_code_before_asking_for_a_new_password() {
    let home = Home::new();
    home.init(PW);
    let other = Home::new();
    other.init(PW);
    let foreign = other.ok_pw(&["recovery-code", "new", "--json"], PW).json()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    home.ok(&["lock"]);
    let mut t = Terminal::spawn(&home, &["recover"]);
    t.expect("Recovery code: ");
    t.type_line("RC1-0000");
    t.expect("has a typo");
    t.expect("type it again.");
    t.expect("Recovery code: ");
    t.type_line(&foreign);
    let (code, rest) = t.wait();
    assert_eq!(code, 6, "{rest}");
    assert!(rest.contains("does not open this vault"), "{rest}");
    assert!(!rest.contains("New Master Password"), "{rest}");
}

#[test]
fn unlock_gives_three_tries_and_ctrl_d_cancels() {
    let home = Home::new();
    home.init(PW);
    home.ok(&["lock"]);
    let mut t = Terminal::spawn(&home, &["unlock"]);
    t.expect("Master Password: ");
    t.type_line("wrong");
    t.expect("Wrong Master Password or Secret Key");
    t.expect("Master Password: ");
    t.type_line(PW);
    t.expect("Unlocked");
    let (code, rest) = t.wait();
    assert_eq!(code, 0, "{rest}");

    home.ok(&["lock"]);
    let mut t = Terminal::spawn(&home, &["unlock"]);
    t.expect("Master Password: ");
    t.type_raw(b"\x04");
    let (code, rest) = t.wait();
    assert_eq!(code, CANCELLED, "{rest}");
    assert!(rest.contains("cancelled"), "{rest}");
}

#[test]
fn a_secret_key_typo_asks_only_the_key_again_and_shows_where() {
    let home = Home::new();
    let r = home
        .run_with(
            &[
                "init",
                "--password-fd",
                "3",
                "--protector",
                "none",
                "--json",
            ],
            None,
            Some(PW.as_bytes()),
        )
        .expect_code(0);
    let sk = r.json()["secret_key"].as_str().unwrap().to_owned();
    home.ok(&["lock"]);
    // An O (never used in Secret Keys) in place of the third group's first symbol.
    let mut typo: Vec<char> = sk.chars().collect();
    typo[10] = 'O';
    let typo: String = typo.into_iter().collect();
    let mut t = Terminal::spawn(&home, &["unlock"]);
    t.expect("Master Password: ");
    t.type_line(PW);
    t.expect("Secret Key (from your Emergency Kit; it is shown as you type): ");
    t.type_line(&typo);
    t.expect("has a typo");
    t.expect(&format!("You typed:  {typo}"));
    t.expect("          ^^^^^^");
    // Only the key is asked again, not the password.
    t.expect("Secret Key (again): ");
    t.type_line(&sk);
    t.expect("Unlocked");
    let (code, rest) = t.wait();
    assert_eq!(code, 0, "{rest}");
    assert!(!rest.contains("Master Password: "), "{rest}");
}

/// Issue 20 item 7: one rule for newlines, `set` does not silently replace,
/// `get --json`.
#[test]
fn values_newlines_replacing_and_json() {
    let home = Home::new();
    home.init(PW);
    // `echo value | keyward set k`: the newline echo adds is not stored.
    home.run_with(&["set", "k"], Some(b"value\n"), None)
        .expect_code(0);
    assert_eq!(home.ok(&["get", "k"]).stdout, "value");
    // Replacing needs --force without a terminal, and says why.
    let r = home.run_with(&["set", "k"], Some(b"other\r\n"), None);
    assert_eq!(r.code, 9, "{r}");
    assert!(
        r.stderr.contains("exists already") && r.stderr.contains("--force"),
        "{r}"
    );
    assert_eq!(home.ok(&["get", "k"]).stdout, "value");
    home.run_with(&["set", "k", "--force"], Some(b"other\r\n"), None)
        .expect_code(0);
    assert_eq!(home.ok(&["get", "k"]).stdout, "other");
    // --raw keeps the input exactly.
    home.run_with(&["set", "raw", "--raw"], Some(b"two\n\n"), None)
        .expect_code(0);
    assert_eq!(home.ok(&["get", "raw"]).stdout, "two\n\n");
    let j = home.ok(&["get", "k", "--json"]).json();
    assert_eq!(j["name"], "k");
    assert_eq!(j["value"], "other");
    // On a terminal `get` ends the value with a newline; replacing asks.
    let mut t = Terminal::spawn(&home, &["get", "k"]);
    t.expect("other\r\n");
    let (code, _) = t.wait();
    assert_eq!(code, 0);
    // Asked before the value is typed (the order that costs least).
    let mut t = Terminal::spawn(&home, &["set", "k"]);
    t.expect("k exists already. Replace its value? [y/N]");
    t.type_line("y");
    t.expect("Value for k: ");
    t.type_line("third");
    t.expect("(again): ");
    t.type_line("third");
    let (code, rest) = t.wait();
    assert_eq!(code, 0, "{rest}");
    assert_eq!(home.ok(&["get", "k"]).stdout, "third");
}

/// Issue 20 item 4: on a terminal, a command that needs the unlocked agent
/// asks for the password and goes on; `--no-prompt` refuses.
#[test]
fn a_locked_agent_is_unlocked_on_demand_at_a_terminal() {
    let home = Home::new();
    home.init(PW);
    home.run_with(&["set", "k"], Some(b"v"), None)
        .expect_code(0);
    home.ok(&["lock"]);
    let mut t = Terminal::spawn(&home, &["get", "k"]);
    t.expect("The keyward agent is locked.");
    t.expect("Master Password: ");
    t.type_line(PW);
    t.expect("Unlocked");
    t.expect("v\r\n");
    let (code, rest) = t.wait();
    assert_eq!(code, 0, "{rest}");
    home.ok(&["lock"]);
    let t = Terminal::spawn(&home, &["--no-prompt", "get", "k"]);
    let (code, rest) = t.wait();
    assert_eq!(code, 4, "{rest}");
    assert!(rest.contains("locked"), "{rest}");
    // Without a terminal: the error, as before.
    home.run(&["get", "k"]).expect_code(4);
}

/// Issue 20 item 7: bash completes item names (from a running agent only).
#[test]
fn bash_completes_item_names() {
    let home = Home::new();
    home.init(PW);
    home.run_with(&["set", "github/token"], Some(b"v"), None)
        .expect_code(0);
    let script = home.ok(&["completions", "bash"]).stdout;
    let file = home.path().join("keyward.bash");
    std::fs::write(&file, script).unwrap();
    let bin = keyward_e2e::keyward_bin();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "PATH={}:$PATH; source {}; COMP_WORDS=(keyward get git); COMP_CWORD=2; _keyward_items; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            bin.parent().unwrap().display(),
            file.display()
        ))
        .env("KEYWARD_HOME", home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "github/token",
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 20 item 9: the wording the first hour tripped on, grepped from the
/// commands' own output.
#[test]
fn the_wording_the_first_hour_tripped_on() {
    let home = Home::new();
    let r = home
        .run_with(
            &["init", "--password-fd", "3", "--protector", "none"],
            None,
            Some(PW.as_bytes()),
        )
        .expect_code(0);
    assert!(!r.stdout.contains("the only time"), "{r}");
    assert!(r.stdout.contains("Back it up"), "{r}");
    let sk = r
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Secret Key:"))
        .unwrap()
        .trim()
        .to_owned();
    home.ok(&["lock"]);
    // "1 more tries" → "1 more try"; every message a sentence.
    let mut seen = String::new();
    for _ in 0..2 {
        let r = home.run_with(
            &["unlock", "--password-stdin", "--secret-key-fd", "3"],
            Some(b"wrong"),
            Some(sk.as_bytes()),
        );
        assert_eq!(r.code, 6, "{r}");
        seen.push_str(&r.stderr);
    }
    assert!(seen.contains("1 more try "), "{seen}");
    assert!(!seen.contains("1 more tries"), "{seen}");
    // "Secret Key from none" → "Secret Key typed".
    let r = home
        .run_with(
            &["unlock", "--password-stdin", "--secret-key-fd", "3"],
            Some(PW.as_bytes()),
            Some(sk.as_bytes()),
        )
        .expect_code(0);
    assert!(
        r.stderr.contains("Secret Key typed") && !r.stderr.contains("from none"),
        "{r}"
    );
    let st = home.ok(&["status"]).stdout;
    assert!(
        st.contains("Secret Key typed") && !st.contains("from none"),
        "{st}"
    );

    // `keyward lock` with no agent: nothing to lock, no flag to drop.
    home.stop_agent();
    let r = home.run(&["lock"]).expect_code(0);
    assert!(
        r.stderr.contains("nothing is unlocked") && !r.stderr.contains("--no-autostart"),
        "{r}"
    );

    // A mistyped config key: the file, its line, the key and the keys that exist.
    let typo = Home::with_config("idle_lock_secs = 60");
    let r = typo.run(&["status"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(
        r.stderr.contains("config.toml")
            && r.stderr.contains("line 1")
            && r.stderr.contains("idle_lock_secs")
            && r.stderr.contains("idle_lock_seconds"),
        "{r}"
    );
}

/// Issue 20 item 9, with devices (issue 17): on a device that has a copy of
/// the vault but not the Secret Key, the unlock says once that the vault's
/// file protector is another device's and what to do, and this device's
/// protector list does not offer it.
#[test]
fn a_copied_vault_says_once_that_the_key_file_is_another_devices() {
    let a = Home::new();
    a.init(PW);
    a.ok(&["agent", "stop"]);
    let b = Home::new();
    std::fs::create_dir_all(&b.paths.data_dir).unwrap();
    for e in std::fs::read_dir(&a.paths.data_dir).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".kwv") {
            std::fs::copy(e.path(), b.paths.data_dir.join(e.file_name())).unwrap();
        }
    }
    let r = b.unlock(PW);
    assert_ne!(r.code, 0, "{r}");
    assert_eq!(r.stderr.matches("another device's").count(), 1, "{r}");
    assert!(r.stderr.contains("keyward protector add file"), "{r}");
    let list = b.ok(&["protector", "list"]).stdout;
    assert!(!list.contains("0600 file"), "{list}");
}

/// A fake pinentry: answers GETPIN with the contents of `answer_file` (or
/// cancels when it is missing, or hangs when it says `hang`), and records
/// the descriptions it was shown.
fn fake_pinentry(dir: &std::path::Path) -> std::path::PathBuf {
    let script = dir.join("pinentry");
    let answer = dir.join("answer");
    let record = dir.join("record");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho 'OK ready'\nwhile read -r cmd rest; do case $cmd in\n\
             SETDESC) echo \"$rest\" >> '{record}'; echo OK;;\n\
             GETPIN) if [ ! -f '{answer}' ]; then echo 'ERR 83886179 Operation cancelled';\n\
               elif [ \"$(cat '{answer}')\" = hang ]; then exec sleep 60;\n\
               else echo \"D $(cat '{answer}')\"; echo OK; fi;;\n\
             BYE) exit 0;;\n*) echo OK;; esac; done\n",
            record = record.display(),
            answer = answer.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Issue 20 item 4, without a terminal: a library client's `get` on a
/// locked agent configured with a pinentry is answered once the password
/// is given there; cancelled or unanswered, it is "locked" (within the
/// timeout); without the setting, "locked" at once as before.
#[test]
fn a_library_client_gets_its_item_after_an_unlock_through_pinentry() {
    use keyward_client::ClientError;
    use keyward_client::message::ErrorCode;
    let tools = tempfile::tempdir().unwrap();
    let pinentry = fake_pinentry(tools.path());
    let home = Home::with_config(&format!(
        "pinentry = \"{}\"\npinentry_timeout_seconds = 2",
        pinentry.display()
    ));
    home.init(PW);
    home.run_with(&["set", "k"], Some(b"v"), None)
        .expect_code(0);
    home.ok(&["lock"]);
    std::fs::write(tools.path().join("answer"), PW).unwrap();
    let mut c = home.client();
    assert_eq!(c.get("k").unwrap().expose(), b"v");
    assert_eq!(home.status()["state"], "unlocked");
    let shown = std::fs::read_to_string(tools.path().join("record")).unwrap();
    assert!(shown.contains("asked keyward for an item"), "{shown}");

    // Cancelled at the pinentry: locked, and said so.
    home.ok(&["lock"]);
    std::fs::remove_file(tools.path().join("answer")).unwrap();
    let mut c = home.client();
    match c.get("k") {
        Err(ClientError::Agent(e)) => {
            assert_eq!(e.code, ErrorCode::Locked);
            assert!(e.message.contains("nobody unlocked it"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // A pinentry that hangs: given up on after its timeout.
    std::fs::write(tools.path().join("answer"), "hang").unwrap();
    let start = std::time::Instant::now();
    let mut c = home.client();
    assert!(matches!(c.get("k"), Err(ClientError::Agent(e)) if e.code == ErrorCode::Locked));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );

    // Four clients at once while the pinentry hangs: one prompt, and all
    // four get "locked" once it is given up on (review S2).
    std::fs::remove_file(tools.path().join("record")).unwrap();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let mut c = home.client();
            std::thread::spawn(move || c.get("k").map(|_| ()))
        })
        .collect();
    for t in clients {
        assert!(
            matches!(t.join().unwrap(), Err(ClientError::Agent(e)) if e.code == ErrorCode::Locked)
        );
    }
    let prompts = std::fs::read_to_string(tools.path().join("record")).unwrap();
    assert_eq!(prompts.lines().count(), 1, "{prompts}");

    // Not configured: locked at once, no pinentry run.
    let plain = Home::new();
    plain.init(PW);
    plain.ok(&["lock"]);
    let mut c = plain.client();
    assert!(matches!(c.get("k"), Err(ClientError::Agent(e)) if e.code == ErrorCode::Locked));
}

/// Issue 20 items 3 and 9 with a YubiKey (the virtual card behind pcscd):
/// the new PIN offered in place of the factory one is asked twice (a typo
/// would set a PIN nobody knows), the management-key question has one
/// [y/N], and a wrong PIN at unlock is asked again without the password.
#[test]
fn yubikey_prompts_ask_a_new_pin_twice_and_a_wrong_pin_again() {
    use virtual_yubikey::harness::{CardConfig, PcscEnv};
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let _card = env
        .insert_card(CardConfig::new(55_555_555).version(virtual_yubikey::state::Version(5, 4, 3)))
        .unwrap();
    let home = Home::new();
    home.set_env(env.pcsc_env());
    home.init(PW);
    let mut t = Terminal::spawn(&home, &["protector", "add", "yubikey"]);
    t.expect("Master Password: ");
    t.type_line(PW);
    t.expect("PIN of YubiKey 55555555: ");
    t.type_line("123456");
    t.expect("enter a new PIN");
    t.type_line("654321");
    t.expect("(again): ");
    t.type_line("654312");
    t.expect("The two entries differ; try again.");
    t.expect("enter a new PIN");
    t.type_line("654321");
    t.expect("(again): ");
    t.type_line("654321");
    t.expect("management key");
    // One suffix, the terminal's own.
    t.expect("does)? [y/N] ");
    assert!(!t.screen.contains("[y/n]"), "{}", t.screen);
    t.type_line("n");
    let (code, rest) = t.wait();
    assert_eq!(code, 0, "{rest}");
    assert!(!rest.contains("[y/n] [y/N]"), "{rest}");

    home.ok(&["lock"]);
    let mut t = Terminal::spawn(&home, &["unlock", "--with", "yubikey"]);
    t.expect("Master Password: ");
    t.type_line(PW);
    t.expect("PIN of YubiKey 55555555: ");
    t.type_line("000000");
    t.expect("tries left");
    // The PIN again, not the password.
    t.expect("PIN of YubiKey 55555555 (2 tries left): ");
    t.type_line("654321");
    t.expect("Unlocked");
    let (code, rest) = t.wait();
    assert_eq!(code, 0, "{rest}");
    assert!(!rest.contains("Master Password: "), "{rest}");
}

/// Export and import on a locked agent at a terminal unlock it first, as
/// every command that needs the unlocked agent does.
#[test]
fn export_on_a_locked_agent_at_a_terminal_unlocks_first() {
    let home = Home::new();
    home.init(PW);
    home.run_with(&["set", "k"], Some(b"v"), None)
        .expect_code(0);
    home.ok(&["lock"]);
    let out = home.path().join("export.json");
    let mut t = Terminal::spawn(&home, &["export", "--out", out.to_str().unwrap()]);
    t.expect("The keyward agent is locked.");
    t.expect("Master Password: ");
    t.type_line(PW);
    t.expect("Unlocked");
    t.expect("Master Password: ");
    t.type_line(PW);
    let (code, rest) = t.wait();
    assert_eq!(code, 0, "{rest}");
    assert!(std::fs::read_to_string(&out).unwrap().contains("\"k\""));
}
