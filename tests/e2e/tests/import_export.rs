#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keyward export` and `keyward import` (issue 21, item 2), end to end with
//! the real programs: a JSON round trip between two accounts, the export
//! file's protections (0600, no existing file, no planted link, a wrong
//! password refused and counted), a `pass` store made with a throwaway GnuPG
//! key and read through the real `pass`, the CSV exports of Bitwarden,
//! 1Password and KeePassXC, dry runs that change nothing, and after each
//! command no value in any file of the home or the runtime directory.

use keyward_e2e::{Home, Run};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PW: &str = "correct horse battery staple";

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every regular file under `dir` (not following links).
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            files_under(&path, out);
        } else if meta.is_file() {
            out.push(path);
        }
    }
}

/// No file of the home (data, state, config, and `run/`, the runtime
/// directory) holds any of `secrets` in clear.
fn assert_no_secret_left(home: &Home, secrets: &[&[u8]], after: &str) {
    let mut files = Vec::new();
    files_under(home.path(), &mut files);
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for s in secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == *s),
                "after {after}: {} holds the value {:?}",
                file.display(),
                String::from_utf8_lossy(s)
            );
        }
    }
}

/// The values of every item, by name.
fn items(home: &Home) -> Vec<(String, Vec<u8>)> {
    let mut c = home.client();
    c.list()
        .unwrap()
        .into_iter()
        .map(|i| {
            let v = c.get(&i.name).unwrap().expose().to_vec();
            (i.name, v)
        })
        .collect()
}

fn set(home: &Home, name: &str, value: &[u8]) {
    home.client().set(name, value.to_vec()).unwrap();
}

fn export(home: &Home, out: &Path, extra: &[&str], password: &str) -> Run {
    let mut args = vec![
        "export",
        "--out",
        out.to_str().unwrap(),
        "--password-fd",
        "3",
    ];
    args.extend_from_slice(extra);
    home.run_with(&args, None, Some(password.as_bytes()))
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

const ROUND_TRIP: &[(&str, &[u8])] = &[
    ("github/token", b"ghp_roundtrip_0a1b2c3d"),
    ("notes/multi", b"line one\nline \"two\"\t\\ end-7f3a\n"),
    (
        "unicode/cl\u{e9} \u{2713}",
        "v\u{e4}lue-\u{1f511}-\u{fc}n\u{ef}c\u{f6}d\u{e9}".as_bytes(),
    ),
    ("bin/raw", b"\x00\xff\xfe binary-9e2c \x01"),
    ("empty", b""),
];

#[test]
fn a_json_export_imports_into_a_fresh_account_with_every_byte() {
    let a = Home::new();
    a.init(PW);
    for (name, value) in ROUND_TRIP {
        set(&a, name, value);
    }
    let secrets: Vec<&[u8]> = ROUND_TRIP
        .iter()
        .map(|(_, v)| *v)
        .filter(|v| !v.is_empty())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keyward.json");
    let r = export(&a, &out, &[], PW).expect_code(0);
    assert!(
        r.stderr.contains("clear text") && r.stderr.contains("Delete it"),
        "no warning:\n{r}"
    );
    assert!(r.stderr.contains("Exported 5 items"), "{r}");
    assert!(r.stdout.is_empty(), "{r}");
    assert_eq!(mode(&out), 0o600);
    assert_no_secret_left(&a, &secrets, "export");

    // The documented layout.
    let text = std::fs::read_to_string(&out).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["format"], "keyward-export");
    assert_eq!(j["version"], 1);
    assert!(j["exported"].as_u64().unwrap() > 1_700_000_000);
    let list = j["items"].as_array().unwrap();
    assert_eq!(list.len(), ROUND_TRIP.len());
    let raw = list.iter().find(|i| i["name"] == "bin/raw").unwrap();
    assert!(raw.get("value").is_none());
    assert_eq!(raw["value_base64"], "AP/+IGJpbmFyeS05ZTJjIAE=");
    let token = list.iter().find(|i| i["name"] == "github/token").unwrap();
    assert_eq!(token["value"], "ghp_roundtrip_0a1b2c3d");
    assert!(token["created"].as_u64().unwrap() > 0);
    assert!(token["modified"].as_u64().unwrap() > 0);
    // One item per line, sorted by name.
    assert_eq!(text.lines().count(), ROUND_TRIP.len() + 2);

    // Into a fresh account: a dry run first, which changes nothing.
    let b = Home::new();
    b.init(PW);
    let out_s = out.to_str().unwrap();
    let r = b.ok(&["import", "--dry-run", out_s]);
    for (name, _) in ROUND_TRIP {
        assert!(
            r.stdout.lines().any(|l| l == format!("create {name}")),
            "{r}"
        );
    }
    for value in &secrets {
        let shown = String::from_utf8_lossy(value);
        assert!(!r.stdout.contains(&*shown) && !r.stderr.contains(&*shown));
    }
    assert!(r.stderr.contains("Nothing was changed"), "{r}");
    assert!(items(&b).is_empty());

    let r = b.ok(&["import", out_s]);
    assert!(r.stderr.contains("5 created, 0 replaced"), "{r}");
    let mut want: Vec<(String, Vec<u8>)> = ROUND_TRIP
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_vec()))
        .collect();
    want.sort();
    assert_eq!(items(&b), want);
    assert_no_secret_left(&b, &secrets, "import");

    // Existing names: listed and skipped without --force; a dry run with
    // --force says "replace" and replaces nothing.
    set(&b, "github/token", b"changed-since-export");
    let r = b.ok(&["import", "--dry-run", "--force", out_s]);
    assert!(r.stdout.lines().any(|l| l == "replace github/token"), "{r}");
    let r = b.ok(&["import", "--format", "json", out_s]);
    assert!(
        r.stderr.contains("Skipped 5 items that exist already"),
        "{r}"
    );
    assert!(r.stderr.contains("  github/token\n"), "{r}");
    assert_eq!(
        b.client().get("github/token").unwrap().expose(),
        b"changed-since-export"
    );
    let r = b.ok(&["import", "--force", out_s]);
    assert!(r.stderr.contains("0 created, 5 replaced"), "{r}");
    assert_eq!(items(&b), want);

    // From standard input too.
    let c = Home::new();
    c.init(PW);
    c.run_with(&["import", "-"], Some(text.as_bytes()), None)
        .expect_code(0);
    assert_eq!(items(&c), want);
}

#[test]
fn export_refuses_existing_files_planted_links_and_wrong_passwords() {
    let home = Home::new();
    home.init(PW);
    let value: &[u8] = b"topsecret-export-9f3e";
    set(&home, "s/one", value);
    let dir = tempfile::tempdir().unwrap();

    // An existing file is left alone without --force.
    let existing = dir.path().join("existing.json");
    std::fs::write(&existing, b"old").unwrap();
    let r = export(&home, &existing, &[], PW).expect_code(9);
    assert!(r.stderr.contains("already exists"), "{r}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"old");

    // A planted link (to a file its planter reads, or to nothing yet) is
    // never written through, with or without --force.
    let target = dir.path().join("planted-target");
    std::fs::write(&target, b"").unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    export(&home, &link, &[], PW).expect_code(9);
    let dangling = dir.path().join("dangling.json");
    std::os::unix::fs::symlink(dir.path().join("nothing-yet"), &dangling).unwrap();
    export(&home, &dangling, &[], PW).expect_code(9);
    assert!(!dir.path().join("nothing-yet").exists());
    assert_eq!(std::fs::read(&target).unwrap(), b"");
    export(&home, &link, &["--force"], PW).expect_code(0);
    assert_eq!(std::fs::read(&target).unwrap(), b"");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    assert_eq!(mode(&link), 0o600);
    assert!(
        std::fs::read(&link)
            .unwrap()
            .windows(value.len())
            .any(|w| w == value)
    );
    // --force on a regular file replaces it, private.
    export(&home, &existing, &["--force"], PW).expect_code(0);
    assert_eq!(mode(&existing), 0o600);

    // A wrong password: refused before anything is read or written, and
    // counted like a failed unlock (the fourth failure starts a back-off
    // that status shows).
    let out = dir.path().join("never.json");
    for _ in 0..4 {
        let r = export(&home, &out, &[], "not the password").expect_code(6);
        assert!(
            !r.stderr.contains("clear text"),
            "warned before the check:\n{r}"
        );
        assert!(!out.exists());
    }
    let s = home.status();
    assert!(
        s["backoff_seconds"].as_u64().unwrap() > 0,
        "wrong passwords not counted: {s}"
    );
    home.wait_for(
        std::time::Duration::from_secs(10),
        "the back-off to end",
        || home.status()["backoff_seconds"] == 0,
    );
    // Status rounds the seconds left down: up to one more second to go.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    export(&home, &out, &[], PW).expect_code(0);
    assert_eq!(mode(&out), 0o600);
    assert_no_secret_left(&home, &[value], "export");
}

const BITWARDEN: &str = "\
folder,favorite,type,name,notes,fields,reprompt,login_uri,login_username,login_password,login_totp
Work,1,login,GitHub,\"multi\nline note-5a1\",\"custom: field-6b2\",0,https://github.com,me@example.com,\"bw,pa\"\"ss-1c3\",otpauth://totp/x?secret=BW7D4
,,note,Wifi,\"the key is \"\"wifi-2d4\"\"\",,,,,,
Work,,login,GitHub,,,0,,other@example.com,bw-second-3e5,
,,login,Caf\u{e9} \u{2615},,,0,,,v\u{e4}lue-bw-4f6,
";

const ONEPASSWORD: &str = "\
Title,Url,Username,Password,OTPAuth,Favorite,Archived,Tags,Notes\r
\"Bank, main\",https://bank.example,alice,\"op,p@ss\"\"1-7a8\",,false,false,money,\"line1\r\nline2-8b9\"\r
\u{dc}n\u{ef}c\u{f6}d\u{e9},,bob,\u{1f511}op-secret-9ca,,false,true,,\r
";

const KEEPASSXC: &str = "\
\"Group\",\"Title\",\"Username\",\"Password\",\"URL\",\"Notes\",\"TOTP\",\"Icon\",\"Last Modified\",\"Created\"
\"Root\",\"Email\",\"me\",\"kp-pw1-0db\",\"https://mail.example\",\"\",\"\",\"0\",\"2024-01-01T00:00:00Z\",\"2024-01-01T00:00:00Z\"
\"Root/Dev/Servers\",\"db\",\"admin\",\"kp-s3cr,et\nwith newline-1ec\",\"\",\"note \"\"q\"\"-2fd\",\"\",\"0\",\"\",\"\"
\"Root\",\"bad\ttitle\",\"\",\"kp-tab-3a0\",\"\",\"\",\"\",\"0\",\"\",\"\"
";

#[test]
fn csv_exports_of_bitwarden_1password_and_keepassxc_become_items() {
    let home = Home::new();
    home.init(PW);
    let dir = tempfile::tempdir().unwrap();
    let long_title = "t".repeat(300);
    let bitwarden = format!("{BITWARDEN},,login,{long_title},,,0,,,too-long-bw-5b1,\n");
    let files = [
        ("bitwarden.csv", bitwarden.as_str(), Some("bitwarden-csv")),
        ("1password.csv", ONEPASSWORD, None),
        ("keepassxc.csv", KEEPASSXC, Some("keepassxc-csv")),
    ];
    for (file, text, format) in files {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap();
        let mut args = vec!["import"];
        if let Some(f) = format {
            args.extend(["--format", f]);
        }
        args.push(path);
        let before = items(&home);
        let mut dry = args.clone();
        dry.insert(1, "--dry-run");
        let r = home.ok(&dry);
        assert!(r.stdout.lines().all(|l| l.starts_with("create ")), "{r}");
        assert_eq!(items(&home), before, "a dry run changed something");
        let r = home.ok(&args);
        assert!(r.stderr.contains("Imported"), "{r}");
        if file == "bitwarden.csv" {
            // Reported by its line, never by its value; the rest imported.
            assert!(
                r.stderr
                    .contains("not imported: line 7: the item name is too long"),
                "{r}"
            );
            assert!(!r.stderr.contains("too-long-bw-5b1"), "{r}");
        }
    }
    let want: &[(&str, &[u8])] = &[
        ("Bank, main/notes", b"line1\r\nline2-8b9"),
        ("Bank, main/password", b"op,p@ss\"1-7a8"),
        ("Bank, main/url", b"https://bank.example"),
        ("Bank, main/username", b"alice"),
        (
            "Caf\u{e9} \u{2615}/password",
            "v\u{e4}lue-bw-4f6".as_bytes(),
        ),
        ("Dev/Servers/db/notes", b"note \"q\"-2fd"),
        ("Dev/Servers/db/password", b"kp-s3cr,et\nwith newline-1ec"),
        ("Dev/Servers/db/username", b"admin"),
        ("Email/password", b"kp-pw1-0db"),
        ("Email/url", b"https://mail.example"),
        ("Email/username", b"me"),
        ("Wifi/notes", b"the key is \"wifi-2d4\""),
        ("Work/GitHub (2)/password", b"bw-second-3e5"),
        ("Work/GitHub (2)/username", b"other@example.com"),
        ("Work/GitHub/fields", b"custom: field-6b2"),
        ("Work/GitHub/notes", b"multi\nline note-5a1"),
        ("Work/GitHub/password", b"bw,pa\"ss-1c3"),
        ("Work/GitHub/totp", b"otpauth://totp/x?secret=BW7D4"),
        ("Work/GitHub/url", b"https://github.com"),
        ("Work/GitHub/username", b"me@example.com"),
        ("bad title/password", b"kp-tab-3a0"),
        (
            "\u{dc}n\u{ef}c\u{f6}d\u{e9}/password",
            "\u{1f511}op-secret-9ca".as_bytes(),
        ),
        ("\u{dc}n\u{ef}c\u{f6}d\u{e9}/username", b"bob"),
    ];
    let got = items(&home);
    let want: Vec<(String, Vec<u8>)> = want
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_vec()))
        .collect();
    assert_eq!(got, want);
    let secrets: Vec<&[u8]> = want
        .iter()
        .map(|(_, v)| v.as_slice())
        .filter(|v| v.len() >= 8)
        .collect();
    assert_no_secret_left(&home, &secrets, "the CSV imports");

    // A CSV of no known layout, without --format: refused, nothing changed.
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "a,b\n1,2\n").unwrap();
    let r = home
        .run(&["import", other.to_str().unwrap()])
        .expect_code(9);
    assert!(r.stderr.contains("--format"), "{r}");
    // The wrong --format names the missing column.
    let r = home
        .run(&[
            "import",
            "--format",
            "bitwarden-csv",
            dir.path().join("1password.csv").to_str().unwrap(),
        ])
        .expect_code(9);
    assert!(r.stderr.contains("not a Bitwarden CSV export"), "{r}");
    assert_eq!(items(&home), got);
}

/// A throwaway GnuPG home with a key without passphrase, and a `pass`
/// store initialised for it; the gpg-agent it starts is stopped on drop.
struct PassStore {
    gnupg: tempfile::TempDir,
    store: tempfile::TempDir,
}

impl PassStore {
    fn new() -> Self {
        let gnupg = tempfile::Builder::new()
            .prefix("kw-gpg-")
            .tempdir()
            .unwrap();
        let store = tempfile::Builder::new()
            .prefix("kw-pass-")
            .tempdir()
            .unwrap();
        let s = Self { gnupg, store };
        s.run(
            "gpg",
            &[
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                "keyward test <keyward-test@example.invalid>",
                "future-default",
                "default",
                "never",
            ],
            None,
        );
        let keys = s.run("gpg", &["--list-secret-keys", "--with-colons"], None);
        let fpr = keys
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_owned())
            .expect("no key fingerprint");
        s.run("pass", &["init", &fpr], None);
        s
    }

    fn envs(&self) -> [(String, String); 2] {
        [
            (
                "GNUPGHOME".to_owned(),
                self.gnupg.path().to_str().unwrap().to_owned(),
            ),
            (
                "PASSWORD_STORE_DIR".to_owned(),
                self.store.path().to_str().unwrap().to_owned(),
            ),
        ]
    }

    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
        use std::io::Write;
        let mut child = Command::new(program)
            .args(args)
            .envs(self.envs())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{program} {args:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn insert(&self, name: &str, content: &[u8]) {
        self.run("pass", &["insert", "--multiline", name], Some(content));
    }
}

impl Drop for PassStore {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "all"])
            .env("GNUPGHOME", self.gnupg.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn a_pass_store_is_read_through_pass_show() {
    if !keyward_e2e::require(
        "pass and gpg (Debian packages pass, gnupg)",
        has("pass") && has("gpg") && has("gpgconf"),
    ) {
        return;
    }
    let store = PassStore::new();
    let entries: &[(&str, &[u8], &[u8])] = &[
        // (name, what `pass insert` is given, the item's value)
        ("github/token", b"ghp_pass_7e1d\n", b"ghp_pass_7e1d"),
        (
            "mail/work",
            b"pw-mail-4c2a\nuser: alice\nurl: https://mail.example\n",
            b"pw-mail-4c2a\nuser: alice\nurl: https://mail.example",
        ),
        (
            "unicode/cl\u{e9} \u{2713}",
            "v\u{e4}lue-pass-\u{2713} \u{1f511}\n".as_bytes(),
            "v\u{e4}lue-pass-\u{2713} \u{1f511}".as_bytes(),
        ),
        ("top-level", b"no-newline-pass-3d", b"no-newline-pass-3d"),
    ];
    for (name, content, _) in entries {
        store.insert(name, content);
    }
    // Not entries: a file that is not *.gpg, and a hidden directory.
    std::fs::write(store.store.path().join("README"), "notes").unwrap();
    std::fs::create_dir(store.store.path().join(".git")).unwrap();
    std::fs::write(store.store.path().join(".git/x.gpg"), "not an entry").unwrap();

    let home = Home::new();
    home.set_env(store.envs());
    home.init(PW);

    // A dry run lists the names, decrypts nothing and changes nothing.
    let r = home.ok(&["import", "--format", "pass", "--dry-run"]);
    let mut listed: Vec<&str> = r.stdout.lines().collect();
    listed.sort();
    let mut names: Vec<String> = entries
        .iter()
        .map(|(n, _, _)| format!("create {n}"))
        .collect();
    names.sort();
    assert_eq!(listed, names, "{r}");
    assert!(items(&home).is_empty());

    let r = home.ok(&["import", "--format", "pass"]);
    assert!(r.stderr.contains("4 created"), "{r}");
    let mut want: Vec<(String, Vec<u8>)> = entries
        .iter()
        .map(|(n, _, v)| (n.to_string(), v.to_vec()))
        .collect();
    want.sort();
    assert_eq!(items(&home), want);
    let secrets: Vec<&[u8]> = entries.iter().map(|(_, _, v)| *v).collect();
    assert_no_secret_left(&home, &secrets, "import --format pass");

    // The store's directory as FILE: told to be a pass store; all exist now.
    let r = home.ok(&["import", "--dry-run", store.store.path().to_str().unwrap()]);
    assert_eq!(
        r.stdout.lines().filter(|l| l.starts_with("skip ")).count(),
        4,
        "{r}"
    );
    let r = home.ok(&["import", "--format", "pass", "--force"]);
    assert!(r.stderr.contains("0 created, 4 replaced"), "{r}");
    assert_eq!(items(&home), want);
    assert_no_secret_left(&home, &secrets, "import --format pass --force");
}
