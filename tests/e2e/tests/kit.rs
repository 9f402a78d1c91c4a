#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Emergency Kit, end to end (issue 20, item 8): `keyward emergency-kit`
//! renders a PDF, and every field is read back from it as a person (text),
//! a PDF viewer (document dates) and a phone (the QR code) would.

use keyward_e2e::Home;
use std::io::Write;
use std::process::{Command, Stdio};

const PW: &str = "correct horse battery staple";

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `program args…`, requires success, returns its stdout.
fn output(program: &str, args: &[&str]) -> String {
    let o = Command::new(program).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Today, as `YYYY-MM-DD` (UTC, the kit's time zone).
fn today() -> String {
    output("date", &["-u", "+%Y-%m-%d"]).trim().to_owned()
}

/// A home whose `HOME` is the test directory, with an account: the vault
/// (`$KEYWARD_HOME/data/vault-ID.kwv`) then lies under the home.
fn home_with_account() -> (Home, String, String) {
    let home = Home::new();
    home.set_env([("HOME".to_owned(), home.path().to_str().unwrap().to_owned())]);
    let (account, sk) = home.init(PW);
    (home, account, sk)
}

#[test]
fn the_emergency_kit_pdf_has_every_field_a_real_date_and_a_qr_code_of_the_secret_key() {
    if !keyward_e2e::require(
        "pdftotext, pdfinfo, pdftoppm (poppler-utils) and zbarimg (zbar-tools)",
        has("pdftotext") && has("pdfinfo") && has("pdftoppm") && has("zbarimg"),
    ) {
        return;
    }
    let (home, account, sk) = home_with_account();
    let out = home.path().join("kit.pdf");
    let out_s = out.to_str().unwrap();
    let day_before = today();
    home.run_with(
        &["emergency-kit", "--password-fd", "3", "--out", out_s],
        None,
        Some(PW.as_bytes()),
    )
    .expect_code(0);
    let day_after = today();
    let is_today = |s: &str| s.contains(&day_before) || s.contains(&day_after);

    // What a person reads.
    let text = output("pdftotext", &[out_s, "-"]);
    let vault = format!("~/data/vault-{account}.kwv");
    for needle in [
        "keyward Emergency Kit",
        "keyward \u{2014} a key agent that keeps your secrets encrypted on this device",
        &account,
        &sk,
        "MASTER PASSWORD",
        "RECOVERY CODE",
        "RC1-",
        "RECOVERY CODE ID",
        "keyward recovery-code new",
        "VAULT",
        &vault,
        &format!("Back it up: `keyward backup` (or copy vault-{account}.kwv) to another disk"),
        "It is encrypted",
        "keyward unlock",
        "keyward recover",
        "keyward --version",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
    let home_dir = home.path().to_str().unwrap();
    assert!(
        !text.contains(home_dir),
        "the vault is shown relative to the home, not as {home_dir}:\n{text}"
    );
    assert!(is_today(&text), "the kit is dated today:\n{text}");
    assert!(!text.contains("1970"), "{text}");
    assert!(!text.to_lowercase().contains("only time"), "{text}");

    // What a PDF viewer shows: the document's own dates.
    let info = output("pdfinfo", &["-isodates", out_s]);
    for field in ["CreationDate:", "ModDate:"] {
        let line = info
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in\n{info}"));
        assert!(is_today(line), "{line} (today is {day_after})\n{info}");
    }
    assert!(!info.contains("1970"), "{info}");

    // What a phone sees: the QR code decodes to the Secret Key.
    let png_base = home.path().join("kit");
    output(
        "pdftoppm",
        &[
            "-r",
            "150",
            "-png",
            "-singlefile",
            out_s,
            png_base.to_str().unwrap(),
        ],
    );
    let png = home.path().join("kit.png");
    let decoded = output("zbarimg", &["--quiet", "--raw", png.to_str().unwrap()]);
    assert_eq!(decoded.trim(), sk, "the QR code decodes to the Secret Key");
}

#[test]
fn the_text_kit_has_the_same_fields_and_shows_a_vault_outside_home_as_it_is() {
    let (home, account, sk) = home_with_account();
    let day = today();
    let t = home
        .run_with(
            &["emergency-kit", "--password-fd", "3", "--format", "text"],
            None,
            Some(PW.as_bytes()),
        )
        .expect_code(0);
    let vault = format!("~/data/vault-{account}.kwv");
    for needle in [
        "keyward \u{2014} a key agent that keeps your secrets encrypted on this device",
        &format!("Account ID:       {account}"),
        &format!("Secret Key:       {sk}"),
        "Master Password:",
        "Recovery code:    RC1-____-",
        "Recovery code ID: ____",
        &format!("Vault:            {vault}"),
        &format!("Back it up: `keyward backup` (or copy vault-{account}.kwv) to another disk"),
        "keyward recover",
        "keyward --version",
        &day,
    ] {
        assert!(t.stdout.contains(needle), "{needle:?} missing\n{t}");
    }

    // With HOME elsewhere, the vault's absolute path is shown as it is.
    let mut c = home.command(&["emergency-kit", "--password-stdin", "--format", "text"]);
    c.env("HOME", "/nonexistent-home")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PW}\n").as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let absolute = home
        .paths
        .data_dir
        .join(format!("vault-{account}.kwv"))
        .display()
        .to_string();
    assert!(
        stdout.contains(&format!("Vault:            {absolute}")),
        "{absolute} missing\n{stdout}"
    );
}
