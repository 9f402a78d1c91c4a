#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Recovery by an organizer (docs/SECURITY.md §16), end to end: two homes,
//! two agents — the organizer's and the member's — and the member's vault
//! file handed over as a copy. Then the attacker's side: every misuse is
//! refused with a clear error and changes nothing.

use keyward_e2e::{Home, Run, keyward_bin};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const ORG_PW: &str = "organizer pass phrase";
const PW: &str = "member pass phrase";
const NEW_PW: &str = "member new pass phrase";

/// `organizer create --json`: (recipient, fingerprint).
fn create(org: &Home) -> (String, String) {
    let j = org.ok(&["organizer", "create", "--json"]).json();
    (
        j["recipient"].as_str().unwrap().to_owned(),
        j["fingerprint"].as_str().unwrap().to_owned(),
    )
}

fn add(member: &Home, recipient: &str, name: &str) -> Run {
    member.run_with(
        &[
            "organizer",
            "add",
            recipient,
            "--name",
            name,
            "--yes",
            "--password-fd",
            "3",
        ],
        None,
        Some(PW.as_bytes()),
    )
}

fn vault_of(home: &Home, account: &str) -> PathBuf {
    home.paths.data_dir.join(format!("vault-{account}.kwv"))
}

/// A copy of the member's vault, as the member would hand it over.
fn copy_vault(member: &Home, account: &str, to: &Home, name: &str) -> PathBuf {
    let dest = to.path().join(name);
    std::fs::copy(vault_of(member, account), &dest).unwrap();
    dest
}

/// `organizer recover VAULT --out OUT --json` as the organizer.
fn grant(org: &Home, vault: &Path, out: &str, extra: &[&str]) -> Run {
    let out = org.path().join(out);
    let mut args = vec![
        "organizer",
        "recover",
        vault.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
        "--password-fd",
        "3",
    ];
    args.extend_from_slice(extra);
    org.run_with(&args, None, Some(ORG_PW.as_bytes()))
}

/// (code, path of the grant file) of a successful grant.
fn made(r: Run) -> (String, PathBuf) {
    let j = r.expect_code(0).json();
    (
        j["code"].as_str().unwrap().to_owned(),
        PathBuf::from(j["path"].as_str().unwrap()),
    )
}

fn recover_with(member: &Home, grant: &Path, code: &str) -> Run {
    member.run_with(
        &[
            "recover",
            "--grant",
            grant.to_str().unwrap(),
            "--code-fd",
            "3",
            "--new-password-fd",
            "0",
            "--allow-weak-password",
            "--json",
        ],
        Some(format!("{NEW_PW}\n").as_bytes()),
        Some(code.as_bytes()),
    )
}

/// Waits until the member's agent accepts attempts again (the back-off).
fn wait_out_backoff(home: &Home) {
    home.wait_for(Duration::from_secs(60), "the back-off to end", || {
        home.status()["backoff_seconds"].as_u64() == Some(0)
    });
}

/// Runs a refused attempt and checks that the vault file did not change.
fn refused(member: &Home, account: &str, r: Run, code: i32, says: &str, before: &[u8]) {
    let r = r.expect_code(code);
    assert!(r.stderr.contains(says), "expected {says:?}\n{r}");
    assert_eq!(
        std::fs::read(vault_of(member, account)).unwrap(),
        before,
        "the vault changed\n{r}"
    );
}

#[test]
fn an_organizer_lets_a_member_back_in_once() {
    let org = Home::new();
    org.init(ORG_PW);
    let (recipient, fingerprint) = create(&org);
    assert!(recipient.starts_with("kwo1-"), "{recipient}");
    assert_eq!(fingerprint.len(), 19);
    let shown = org.ok(&["organizer", "show", "--json"]).json();
    assert_eq!(shown["recipient"], recipient.as_str());
    let again = org.run(&["organizer", "create"]).expect_code(9);
    assert!(again.stderr.contains("already"), "{again}");

    let member = Home::new();
    let (account, old_sk) = member.init(PW);
    for (name, value) in [("bank/pin", "4321"), ("mail", "hunter2"), ("empty", "")] {
        member
            .run_with(
                &["set", name, "--allow-empty"],
                Some(value.as_bytes()),
                None,
            )
            .expect_code(0);
    }
    member
        .run_with(
            &["recovery-code", "new", "--password-fd", "3"],
            None,
            Some(PW.as_bytes()),
        )
        .expect_code(0);
    let r = add(&member, &recipient, "Anna").expect_code(0);
    assert!(r.stderr.contains(&fingerprint), "{r}");
    let list = member.ok(&["organizer", "list", "--json"]).json();
    assert_eq!(list[0]["fingerprint"], fingerprint.as_str());
    assert_eq!(list[0]["name"], "Anna");
    assert_eq!(list[0]["required"], false);
    let status = member.ok(&["status"]);
    assert!(
        status
            .stdout
            .contains("Organizers who can recover this account: Anna"),
        "{status}"
    );
    // The member forgets the password: never used again from here.
    member.ok(&["lock"]);

    // The organizer on their own account: refused.
    let own = org.paths.data_dir.clone();
    let own_vault = std::fs::read_dir(&own)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "kwv"))
        .unwrap();
    let r = grant(&org, &own_vault, "own.json", &[]).expect_code(9);
    assert!(r.stderr.contains("own account"), "{r}");

    let copy = copy_vault(&member, &account, &org, "member.kwv");
    let r = grant(&org, &copy, "grant.json", &[]);
    let j = r.expect_code(0).json();
    let code = j["code"].as_str().unwrap().to_owned();
    let path = PathBuf::from(j["path"].as_str().unwrap());
    assert!(code.starts_with("GC1-"), "{code}");
    assert_eq!(j["grant_id"].as_str().unwrap().len(), 32);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires = j["expires"].as_u64().unwrap();
    assert!(expires.abs_diff(now + 72 * 3600) < 120, "{expires}");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains(&code[4..12]),
        "the grant file holds the code"
    );
    // The code is in no log of either agent.
    for home in [&org, &member] {
        let log =
            std::fs::read_to_string(home.paths.state_dir.join("agent.log")).unwrap_or_default();
        assert!(!log.contains(&code[4..]), "the code is in a log");
    }
    // A second grant for the same member: its code is well formed but
    // wrong for the first grant.
    let (other_code, _) = made(grant(&org, &copy, "grant2.json", &[]));

    let before = std::fs::read(vault_of(&member, &account)).unwrap();
    let dir = member.path().to_owned();
    // A grant for another account (the member's grant, on the organizer's).
    let r = recover_with(&org, &path, &code).expect_code(9);
    assert!(r.stderr.contains("is for account"), "{r}");
    // A wrong code: counted.
    let r = recover_with(&member, &path, &other_code);
    refused(&member, &account, r, 6, "does not open this grant", &before);
    // A typo: caught by the format, not counted.
    let typo = format!(
        "{}{}",
        &code[..code.len() - 1],
        if code.ends_with('0') { '1' } else { '0' }
    );
    let r = recover_with(&member, &path, &typo);
    // 15 of 16 typos are caught by the check bits (code 9, not counted);
    // the rest are a wrong code (6). Either way: refused.
    assert!(matches!(r.code, 6 | 9), "{r}");
    if r.code == 9 {
        assert!(r.stderr.contains("typo"), "{r}");
    }
    wait_out_backoff(&member);
    // Tampered with, field by field.
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (field, says, code_expected) in [
        ("format", "not a keyward recovery grant", 9),
        ("account_id", "not a keyward recovery grant", 9),
        ("grant_id", "does not open this grant", 6),
        ("expires", "does not open this grant", 6),
        ("nonce", "does not open this grant", 6),
        ("ct", "does not open this grant", 6),
        ("version", "not a keyward recovery grant", 9),
    ] {
        let mut t = json.clone();
        t[field] = match &json[field] {
            serde_json::Value::Number(n) => serde_json::json!(n.as_u64().unwrap() + 1),
            serde_json::Value::String(s) if field == "account_id" => {
                serde_json::json!(s.to_lowercase())
            }
            serde_json::Value::String(s) => {
                let mut b = s.clone().into_bytes();
                b[0] = if b[0] == b'a' { b'b' } else { b'a' };
                serde_json::json!(String::from_utf8(b).unwrap())
            }
            other => panic!("{other}"),
        };
        let f = dir.join(format!("tampered-{field}.json"));
        std::fs::write(&f, t.to_string()).unwrap();
        let r = recover_with(&member, &f, &code);
        refused(&member, &account, r, code_expected, says, &before);
        wait_out_backoff(&member);
    }

    // The grant, with its code: back in.
    let r = recover_with(&member, &path, &code).expect_code(0);
    let j = r.json();
    let new_sk = j["secret_key"].as_str().unwrap().to_owned();
    assert!(new_sk.starts_with("K1-") && new_sk != old_sk, "{r}");
    let notes = j["notes"].to_string();
    assert!(notes.contains("recovery code(s) were revoked"), "{notes}");
    assert_eq!(member.ok(&["get", "bank/pin"]).stdout.trim_end(), "4321");
    assert_eq!(member.ok(&["get", "mail"]).stdout.trim_end(), "hunter2");
    assert_eq!(
        member
            .ok(&["list", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let codes = member.ok(&["recovery-code", "list", "--json"]).json();
    assert_eq!(codes.as_array().unwrap().len(), 0, "{codes}");
    // Still enrolled with the organizer, with the same account key.
    assert_eq!(
        member.ok(&["organizer", "list", "--json"]).json()[0]["fingerprint"],
        fingerprint.as_str()
    );
    member.ok(&["lock"]);
    member.unlock(PW).expect_code(6);
    wait_out_backoff(&member);
    member.unlock(NEW_PW).expect_code(0);

    // Used twice: refused, nothing changed; also with the vault rolled back
    // to the copy from before (the device remembers the grant).
    let after = std::fs::read(vault_of(&member, &account)).unwrap();
    let r = recover_with(&member, &path, &code);
    refused(&member, &account, r, 9, "used already", &after);
    member.stop_agent();
    std::fs::write(vault_of(&member, &account), &before).unwrap();
    let r = recover_with(&member, &path, &code);
    refused(&member, &account, r, 9, "used already", &before);
    std::fs::write(vault_of(&member, &account), &after).unwrap();
    member.stop_agent();

    // After its expiry: refused, not counted, nothing changed.
    let (short_code, short) = made(grant(&org, &copy, "short.json", &["--expires-hours", "1"]));
    let have_faketime = Command::new("sh")
        .args(["-c", "command -v faketime >/dev/null"])
        .status()
        .is_ok_and(|s| s.success());
    // Under tests/ci.sh (KEYWARD_REQUIRE_SERVICES=1) a missing faketime fails.
    if keyward_e2e::require("faketime (package faketime)", have_faketime) {
        let mut agent = Command::new("faketime")
            .args(["-f", "+3h"])
            .arg(keyward_e2e::agent_bin())
            .env("KEYWARD_HOME", member.path())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        member.wait_for(
            Duration::from_secs(10),
            "the agent three hours ahead",
            || member.paths.socket().exists(),
        );
        let r = recover_with(&member, &short, &short_code);
        let _ = agent.kill();
        let _ = agent.wait();
        refused(&member, &account, r, 9, "expired on", &after);
    }
}

/// A `keyward` command without a controlling terminal (as from cron).
fn without_terminal(home: &Home, args: &[&str], fd3: &str) -> Run {
    let secret = home.path().join("fd3");
    std::fs::write(&secret, fd3).unwrap();
    let out = Command::new("setsid")
        .arg("-w")
        .arg("sh")
        .arg("-c")
        .arg("exec \"$0\" \"$@\" 3<\"$KW_FD3\"")
        .arg(keyward_bin())
        .args(args)
        .env("KW_FD3", &secret)
        .env("KEYWARD_HOME", home.path())
        .env("KEYWARD_AGENT", keyward_e2e::agent_bin())
        .env("KEYWARD_PINENTRY", "none")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        cmd: format!("setsid keyward {}", args.join(" ")),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn recipients_the_member_did_not_confirm_and_removed_organizers_recover_nothing() {
    let org = Home::new();
    org.init(ORG_PW);
    let (recipient, fingerprint) = create(&org);
    let member = Home::new();
    let (account, _) = member.init(PW);
    let before = std::fs::read(vault_of(&member, &account)).unwrap();

    // A forged recipient sent to the member: without --yes and without a
    // terminal to confirm the fingerprint on, nothing is added.
    let forger = Home::new();
    forger.init(ORG_PW);
    let (forged, forged_fp) = create(&forger);
    let r = without_terminal(
        &member,
        &["organizer", "add", &forged, "--password-fd", "3"],
        PW,
    );
    refused(&member, &account, r, 9, "--yes", &before);
    // A typo in a recipient: caught by its check.
    let mut typo: Vec<char> = recipient.chars().collect();
    let at = typo.len() - 3;
    typo[at] = if typo[at] == 'A' { 'B' } else { 'A' };
    let typo: String = typo.into_iter().collect();
    let r = add(&member, &typo, "x");
    refused(&member, &account, r, 9, "typo", &before);
    // A wrong password: counted, nothing added.
    let r = member.run_with(
        &[
            "organizer",
            "add",
            &recipient,
            "--yes",
            "--password-fd",
            "3",
        ],
        None,
        Some(b"wrong"),
    );
    refused(&member, &account, r, 6, "Master Password", &before);
    assert_eq!(
        member.ok(&["organizer", "list", "--json"]).json(),
        serde_json::json!([])
    );
    assert!(!forged_fp.is_empty());

    add(&member, &recipient, "Anna").expect_code(0);
    let enrolled = copy_vault(&member, &account, &org, "enrolled.kwv");
    // The forger holds a key, but not one the member enrolled.
    let r = grant(&forger, &enrolled, "forged.json", &[]).expect_code(7);
    assert!(r.stderr.contains("not enrolled"), "{r}");
    // An altered copy: refused as tampered.
    let mut bytes = std::fs::read(&enrolled).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 1;
    let altered = org.path().join("altered.kwv");
    std::fs::write(&altered, &bytes).unwrap();
    let r = grant(&org, &altered, "altered.json", &[]);
    assert_eq!(r.code, 10, "{r}");

    // The member removes the organizer: the current file recovers nothing.
    let r = member.run_with(
        &["organizer", "remove", &fingerprint, "--password-fd", "3"],
        None,
        Some(PW.as_bytes()),
    );
    let r = r.expect_code(0);
    assert!(r.stderr.contains("removed"), "{r}");
    let removed = copy_vault(&member, &account, &org, "removed.kwv");
    let r = grant(&org, &removed, "removed.json", &[]).expect_code(7);
    assert!(r.stderr.contains("not enrolled"), "{r}");
    // (An older copy still works: SECURITY.md §16 says so.)
    made(grant(&org, &enrolled, "old-copy.json", &[]));
}

#[test]
fn the_machine_policy_enrolls_at_init_and_a_required_organizer_stays() {
    if !keyward_e2e::require(
        "root (the machine policy's files must be root's)",
        rustix::process::geteuid().is_root(),
    ) {
        return;
    }
    let org = Home::new();
    org.init(ORG_PW);
    let (recipient, fingerprint) = create(&org);
    let other = Home::new();
    other.init(ORG_PW);
    let (stranger, _) = create(&other);
    let (loose, _) = {
        let third = Home::new();
        third.init(ORG_PW);
        create(&third)
    };

    let policy = tempfile::tempdir().unwrap();
    let family = policy.path().join("family.pub");
    std::fs::write(
        &family,
        format!("# the family organizer\n{recipient}\nname = \"Family\"\nrequired = true\n"),
    )
    .unwrap();
    std::fs::set_permissions(&family, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Not root's: skipped.
    let foreign = policy.path().join("foreign.pub");
    std::fs::write(&foreign, format!("{stranger}\n")).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    // Writable by others: skipped.
    let open = policy.path().join("open.pub");
    std::fs::write(&open, format!("{loose}\n")).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();

    let member = Home::new();
    member.set_env([(
        "KEYWARD_ORGANIZER_POLICY_DIR".to_owned(),
        policy.path().display().to_string(),
    )]);
    let (account, _) = member.init(PW);
    let list = member.ok(&["organizer", "list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["fingerprint"], fingerprint.as_str());
    assert_eq!(list[0]["name"], "Family");
    assert_eq!(list[0]["required"], true);
    let log = std::fs::read_to_string(member.paths.state_dir.join("agent.log")).unwrap_or_default();
    assert!(
        log.contains("foreign.pub") && log.contains("open.pub"),
        "{log}"
    );

    // Required: the member cannot remove it, even with the password.
    let before = std::fs::read(vault_of(&member, &account)).unwrap();
    for which in ["Family", fingerprint.as_str()] {
        let r = member.run_with(
            &["organizer", "remove", which, "--password-fd", "3"],
            None,
            Some(PW.as_bytes()),
        );
        refused(&member, &account, r, 9, "required", &before);
    }
    // And it can let the member back in.
    let copy = copy_vault(&member, &account, &org, "member.kwv");
    let (code, path) = made(grant(&org, &copy, "grant.json", &[]));
    member.ok(&["lock"]);
    recover_with(&member, &path, &code).expect_code(0);
}

/// After `keyward rekey` (a new account key, SECURITY.md §18.6) the
/// member's organizer wrap is made again: a grant from a copy made after it
/// recovers the member; a grant from a copy made before it holds the old
/// key and recovers nothing.
#[test]
fn an_organizer_still_recovers_a_member_after_a_rekey_and_an_old_copy_does_not() {
    let org = Home::new();
    org.init(ORG_PW);
    let (recipient, _) = create(&org);
    let member = Home::new();
    let (account, _) = member.init(PW);
    member
        .run_with(&["set", "kept"], Some(b"value"), None)
        .expect_code(0);
    add(&member, &recipient, "Anna").expect_code(0);
    let before = copy_vault(&member, &account, &org, "before.kwv");
    member.ok_pw(&["rekey"], PW);
    let after = copy_vault(&member, &account, &org, "after.kwv");
    member.ok(&["lock"]);

    // A grant from the old copy: the member's agent refuses it, nothing changes.
    let (old_code, old_grant) = made(grant(&org, &before, "old-grant.json", &[]));
    let vault_now = std::fs::read(vault_of(&member, &account)).unwrap();
    let r = recover_with(&member, &old_grant, &old_code);
    assert_ne!(r.code, 0, "a grant made before the rekey recovered: {r}");
    assert_eq!(
        std::fs::read(vault_of(&member, &account)).unwrap(),
        vault_now
    );

    wait_out_backoff(&member);
    let (code, grant_file) = made(grant(&org, &after, "grant.json", &[]));
    recover_with(&member, &grant_file, &code).expect_code(0);
    assert_eq!(member.ok(&["get", "kept"]).stdout, "value");
}
