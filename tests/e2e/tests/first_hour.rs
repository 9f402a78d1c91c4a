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
