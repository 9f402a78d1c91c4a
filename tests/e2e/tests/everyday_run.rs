#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Issue 21, items 3 and 5, end to end with the real programs: `keyward
//! run` (checked by a child that prints its environment), `keyward
//! inject`, `keyward generate` and `keyward get --clip` (under Xvfb with
//! xclip). After each command, no value is left in any file of the home,
//! the runtime directory or the temporary directory.

use keyward_e2e::{Home, Run, require};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const PW: &str = "everyday run pw";
const INVALID: i32 = 9;
const NOT_FOUND: i32 = 7;

/// A value no file could hold by chance.
fn unique(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{label}-{}-{nanos:x}-V4lue", std::process::id())
}

/// `keyward set NAME` with `value` on standard input.
fn set(home: &Home, name: &str, value: &[u8]) {
    home.run_with(&["set", name, "--raw", "--force"], Some(value), None)
        .expect_code(0);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Panics if a regular file under `dir` holds one of `secrets`.
fn scan_dir(dir: &Path, secrets: &[&[u8]], newer_than: Option<SystemTime>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() && depth > 0 {
            scan_dir(&path, secrets, newer_than, depth - 1);
        } else if meta.is_file()
            && meta.len() < 64 << 20
            && newer_than.is_none_or(|t| meta.modified().is_ok_and(|m| m >= t))
        {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            for s in secrets {
                assert!(
                    !contains(&bytes, s),
                    "{} holds a secret value ({} bytes)",
                    path.display(),
                    s.len()
                );
            }
        }
    }
}

/// No value in the home (which holds the runtime directory), the runtime
/// directory wherever it is, or a file of the temporary directory written
/// since `since`.
fn assert_no_secret_on_disk(home: &Home, since: SystemTime, secrets: &[&str]) {
    let secrets: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
    scan_dir(home.path(), &secrets, None, 16);
    scan_dir(&home.paths.runtime_dir, &secrets, None, 4);
    scan_dir(&std::env::temp_dir(), &secrets, Some(since), 0);
}

fn ready_home() -> (Home, SystemTime) {
    let since = SystemTime::now();
    let home = Home::new();
    home.init(PW);
    (home, since)
}

#[test]
fn run_puts_values_in_the_childs_environment_and_exits_with_its_status() {
    let (home, since) = ready_home();
    let db = unique("db");
    let token = unique("token");
    set(&home, "db/password", db.as_bytes());
    set(&home, "api/token", token.as_bytes());

    let r = home
        .run(&[
            "run",
            "--env",
            "DB_PW=db/password",
            "--env",
            "TOKEN=keyward://api/token",
            "--",
            "sh",
            "-c",
            "printf '%s|%s' \"$DB_PW\" \"$TOKEN\"",
        ])
        .expect_code(0);
    assert_eq!(r.stdout, format!("{db}|{token}"), "{r}");
    assert!(!r.stderr.contains(&db) && !r.stderr.contains(&token), "{r}");

    // The environment is the caller's plus the values; without `--` too.
    let r = home
        .run(&["run", "--env", "X=db/password", "printenv", "KEYWARD_HOME"])
        .expect_code(0);
    assert_eq!(r.stdout.trim(), home.path().to_str().unwrap(), "{r}");

    // The command's exit status is keyward's; arguments reach it as given.
    let r = home.run(&["run", "--env", "A=db/password", "--", "sh", "-c", "exit 42"]);
    assert_eq!(r.code, 42, "{r}");
    let r = home
        .run(&[
            "run",
            "--",
            "sh",
            "-c",
            "printf '%s' \"$1\"",
            "sh",
            "--not-an-option",
        ])
        .expect_code(0);
    assert_eq!(r.stdout, "--not-an-option", "{r}");

    // A program that does not exist: 127, as env(1) and the shells say.
    let r = home.run(&[
        "run",
        "--env",
        "A=db/password",
        "--",
        "/nonexistent/program",
    ]);
    assert_eq!(r.code, 127, "{r}");
    assert!(r.stderr.contains("/nonexistent/program"), "{r}");

    // An unknown item: named, with what asked for it, and nothing runs.
    let marker = home.path().join("ran");
    let r = home.run(&[
        "run",
        "--env",
        "A=db/password",
        "--env",
        "B=no/such",
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    assert_eq!(r.code, NOT_FOUND, "{r}");
    assert!(
        r.stderr.contains("no/such") && r.stderr.contains("--env B=no/such"),
        "{r}"
    );
    assert!(!marker.exists(), "the command ran without its environment");

    // A value that cannot be an environment variable's: the item is named,
    // the value is not shown.
    set(&home, "binary", &[0xff, 0xfe, b'x']);
    set(&home, "with-nul", b"a\0b");
    for (item, why) in [("binary", "not UTF-8"), ("with-nul", "NUL")] {
        let r = home.run(&["run", "--env", &format!("V={item}"), "--", "true"]);
        assert_eq!(r.code, INVALID, "{r}");
        assert!(
            r.stderr.contains(&format!("{item:?}")) && r.stderr.contains(why),
            "{r}"
        );
    }
    assert_no_secret_on_disk(&home, since, &[&db, &token]);
}

#[test]
fn env_files_give_values_and_a_bad_line_is_named() {
    let (home, since) = ready_home();
    let db = unique("db");
    let token = unique("token");
    set(&home, "db/password", db.as_bytes());
    set(&home, "api/token", token.as_bytes());
    let file = home.path().join("app.env");
    std::fs::write(
        &file,
        "# the app's secrets\n\nDB_PW=keyward://db/password\n  TOKEN = api/token\nLATER=db/password\n",
    )
    .unwrap();
    let print = "printf '%s|%s|%s' \"$DB_PW\" \"$TOKEN\" \"$LATER\"";
    let r = home
        .run(&[
            "run",
            "--env-file",
            file.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            print,
        ])
        .expect_code(0);
    assert_eq!(r.stdout, format!("{db}|{token}|{db}"), "{r}");
    // --env comes after the file, and wins.
    let r = home
        .run(&[
            "run",
            "--env-file",
            file.to_str().unwrap(),
            "--env",
            "LATER=api/token",
            "--",
            "sh",
            "-c",
            print,
        ])
        .expect_code(0);
    assert_eq!(r.stdout, format!("{db}|{token}|{token}"), "{r}");

    // A bad line: the file and the line are named; nothing runs.
    let bad = home.path().join("bad.env");
    std::fs::write(&bad, "A=db/password\n\nnot a definition\n").unwrap();
    let r = home.run(&["run", "--env-file", bad.to_str().unwrap(), "--", "true"]);
    assert_eq!(r.code, INVALID, "{r}");
    assert!(
        r.stderr
            .contains(&format!("{}:3: expected VAR=ITEM", bad.display())),
        "{r}"
    );
    std::fs::write(&bad, "9LIVES=db/password\n").unwrap();
    let r = home.run(&["run", "--env-file", bad.to_str().unwrap(), "--", "true"]);
    assert_eq!(r.code, INVALID, "{r}");
    assert!(r.stderr.contains(":1: expected VAR=ITEM"), "{r}");
    let r = home.run(&["run", "--env-file", "/nonexistent/app.env", "--", "true"]);
    assert_eq!(r.code, INVALID, "{r}");
    assert!(r.stderr.contains("cannot read the env file"), "{r}");
    let r = home.run(&["run", "--env", "A-B=db/password", "--", "true"]);
    assert_eq!(r.code, INVALID, "{r}");
    assert!(r.stderr.contains("--env A-B=db/password"), "{r}");
    // No command at all is a usage error.
    assert_eq!(home.run(&["run", "--env", "A=db/password"]).code, 2);
    assert_no_secret_on_disk(&home, since, &[&db, &token]);
}

#[test]
fn inject_fills_references_and_writes_nothing_when_an_item_is_unknown() {
    let (home, since) = ready_home();
    let db = unique("db");
    let token = unique("token");
    set(&home, "db/password", db.as_bytes());
    set(&home, "api token", token.as_bytes());
    let template = "user: me\n\
                    pass: {{ keyward://db/password }}\n\
                    token: {{keyward://api token}}\n\
                    again: {{\tkeyward://db/password\t}}\n\
                    literal: \\{{ keyward://db/password }}\n\
                    other: {{ .Values.x }}\n";
    let expected = format!(
        "user: me\npass: {db}\ntoken: {token}\nagain: {db}\n\
         literal: {{{{ keyward://db/password }}}}\nother: {{{{ .Values.x }}}}\n"
    );
    let r = home
        .run_with(&["inject"], Some(template.as_bytes()), None)
        .expect_code(0);
    assert_eq!(r.stdout, expected, "{r}");

    // --out: created 0600; refused when it exists, replaced with --force.
    let out = home.path().join("config.yml");
    let out_s = out.to_str().unwrap();
    home.run_with(&["inject", "--out", out_s], Some(template.as_bytes()), None)
        .expect_code(0);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let r = home.run_with(&["inject", "--out", out_s], Some(b"new"), None);
    assert_eq!(r.code, INVALID, "{r}");
    assert!(r.stderr.contains("--force"), "{r}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);
    home.run_with(
        &["inject", "--out", out_s, "--force"],
        Some(b"pw={{ keyward://db/password }}"),
        None,
    )
    .expect_code(0);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), format!("pw={db}"));
    std::fs::remove_file(&out).unwrap();

    // An unknown item: named with its line; nothing written anywhere.
    let bad = "a: {{ keyward://db/password }}\nb: {{ keyward://no/such }}\n";
    let r = home.run_with(&["inject"], Some(bad.as_bytes()), None);
    assert_eq!(r.code, NOT_FOUND, "{r}");
    assert!(
        r.stderr.contains("no/such") && r.stderr.contains("line 2"),
        "{r}"
    );
    assert_eq!(r.stdout, "", "{r}");
    let r = home.run_with(&["inject", "--out", out_s], Some(bad.as_bytes()), None);
    assert_eq!(r.code, NOT_FOUND, "{r}");
    assert!(!out.exists(), "a partial file was written");

    // A reference without its closing braces.
    let r = home.run_with(&["inject"], Some(b"ok\n{{ keyward://db/password\n}}"), None);
    assert_eq!(r.code, INVALID, "{r}");
    assert!(r.stderr.contains("line 2"), "{r}");
    assert_eq!(r.stdout, "", "{r}");
    assert_no_secret_on_disk(&home, since, &[&db, &token]);
}

/// The EFF large word list the CLI ships.
fn eff_words() -> Vec<String> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../client/cli/src/words/eff_large_wordlist.txt"
    ));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split_once('\t').unwrap().1.to_owned())
        .collect()
}

/// Whether `phrase` is exactly `n` listed words joined by `-` (some
/// listed words hold a `-` themselves).
fn is_words(phrase: &str, words: &[String], n: usize) -> bool {
    if n == 0 {
        return phrase.is_empty();
    }
    words.iter().any(|w| {
        phrase.strip_prefix(w.as_str()).is_some_and(|rest| {
            if n == 1 {
                rest.is_empty()
            } else {
                rest.strip_prefix('-')
                    .is_some_and(|rest| is_words(rest, words, n - 1))
            }
        })
    })
}

/// The bits the entropy line on standard error gives.
fn bits(r: &Run) -> f64 {
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("Entropy: "))
        .unwrap_or_else(|| panic!("no entropy line\n{r}"));
    line["Entropy: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no number of bits\n{r}"))
}

#[test]
fn generate_makes_passwords_and_passphrases_and_stores_them() {
    let (home, since) = ready_home();
    const CLEAR: &str = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    const SYMBOLS: &str = "!#%*+-.:=?@_";

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let r = home.run(&["generate"]).expect_code(0);
        let pw = r.stdout.clone();
        assert_eq!(pw.len(), 24, "{r}");
        assert!(
            pw.chars().all(|c| CLEAR.contains(c) || SYMBOLS.contains(c)),
            "{r}"
        );
        for class in [&CLEAR[..25], &CLEAR[25..49], &CLEAR[49..], SYMBOLS] {
            assert!(pw.chars().any(|c| class.contains(c)), "{class}\n{r}");
        }
        let b = bits(&r);
        assert!((146.0..146.7).contains(&b), "{b}\n{r}");
        assert!(!r.stderr.contains(&pw), "{r}");
        assert!(seen.insert(pw), "the same password twice");
    }

    let r = home
        .run(&["generate", "--length", "40", "--no-symbols"])
        .expect_code(0);
    assert_eq!(r.stdout.len(), 40, "{r}");
    assert!(r.stdout.chars().all(|c| CLEAR.contains(c)), "{r}");
    assert!((bits(&r) - 40.0 * 57f64.log2()).abs() < 0.2, "{r}");

    let words = eff_words();
    assert_eq!(words.len(), 7776);
    let mut phrases = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let r = home.run(&["generate", "--words", "6"]).expect_code(0);
        assert!(is_words(&r.stdout, &words, 6), "{r}");
        assert!((bits(&r) - 77.5).abs() < 0.1, "{r}");
        assert!(
            phrases.insert(r.stdout.clone()),
            "the same passphrase twice"
        );
    }

    // Bounds and conflicts.
    assert_eq!(home.run(&["generate", "--length", "7"]).code, INVALID);
    assert_eq!(home.run(&["generate", "--words", "2"]).code, INVALID);
    assert_eq!(
        home.run(&["generate", "--length", "20", "--words", "5"])
            .code,
        2
    );
    assert_eq!(home.run(&["generate", "--force"]).code, 2);

    // --set: printed and stored; an existing item is not replaced without
    // --force (no terminal to ask on), and is with it.
    let r = home.run(&["generate", "--set", "gen/pw"]).expect_code(0);
    let first = r.stdout.clone();
    assert_eq!(home.ok(&["get", "gen/pw"]).stdout, first);
    let r = home.run(&["generate", "--set", "gen/pw"]);
    assert_eq!(r.code, INVALID, "{r}");
    assert!(r.stderr.contains("--force") && r.stdout.is_empty(), "{r}");
    assert_eq!(home.ok(&["get", "gen/pw"]).stdout, first);
    let r = home
        .run(&["generate", "--words", "4", "--set", "gen/pw", "--force"])
        .expect_code(0);
    assert!(is_words(&r.stdout, &words, 4), "{r}");
    assert_eq!(home.ok(&["get", "gen/pw"]).stdout, r.stdout);

    let mut all: Vec<&str> = seen.iter().map(String::as_str).collect();
    all.extend(phrases.iter().map(String::as_str));
    all.push(&first);
    all.push(&r.stdout);
    assert_no_secret_on_disk(&home, since, &all);
}

/// An X server of our own on a free display, stopped (by its pid) on drop.
struct Xvfb {
    child: std::process::Child,
    display: String,
}

impl Xvfb {
    fn start() -> Self {
        for n in 90..200 {
            if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                || Path::new(&format!("/tmp/.X{n}-lock")).exists()
            {
                continue;
            }
            let display = format!(":{n}");
            let mut child = Command::new("Xvfb")
                .args([display.as_str(), "-nolisten", "tcp"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                if let Some(status) = child.try_wait().unwrap() {
                    // Another server took the number first: try the next.
                    eprintln!("Xvfb {display} exited ({status}); trying another display");
                    break;
                }
                if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                    return Self { child, display };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("no free X display between :90 and :199");
    }

    /// What the clipboard holds, through `xclip -o` (an empty clipboard
    /// reads as empty).
    fn clipboard(&self) -> Vec<u8> {
        let out = Command::new("xclip")
            .args(["-selection", "clipboard", "-out"])
            .env("DISPLAY", &self.display)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        out.stdout
    }

    /// Copies `text` as a user would.
    fn copy(&self, text: &str) {
        let mut child = Command::new("xclip")
            .args(["-selection", "clipboard", "-in"])
            .env("DISPLAY", &self.display)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        keyward_e2e::signal(self.child.id() as i32, rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn get_clip_copies_and_clears_after_the_delay_unless_the_clipboard_changed() {
    if !require("Xvfb and xclip", have("Xvfb") && have("xclip")) {
        return;
    }
    let x = Xvfb::start();
    let (home, since) = ready_home();
    home.set_env([
        ("DISPLAY".to_owned(), x.display.clone()),
        ("WAYLAND_DISPLAY".to_owned(), String::new()),
        ("KEYWARD_CLIP_CLEAR_SECONDS".to_owned(), "3".to_owned()),
    ]);
    let value = unique("clip");
    set(&home, "web/password", value.as_bytes());

    let r = home.run(&["get", "--clip", "web/password"]).expect_code(0);
    assert_eq!(r.stdout, "", "{r}");
    assert!(
        r.stderr.contains("clipboard") && r.stderr.contains("3 s"),
        "{r}"
    );
    assert!(!r.stderr.contains(&value), "{r}");
    assert_eq!(
        x.clipboard(),
        value.as_bytes(),
        "the clipboard after the copy"
    );
    // While it waits, the value is in no file (only in the memory of the
    // clearing process and of xclip, which serves the clipboard).
    assert_no_secret_on_disk(&home, since, &[&value]);

    let start = Instant::now();
    while !x.clipboard().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the clipboard was not cleared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "cleared too early ({:?})",
        start.elapsed()
    );

    // Something the user copied since is left alone.
    home.run(&["get", "--clip", "web/password"]).expect_code(0);
    assert_eq!(x.clipboard(), value.as_bytes());
    x.copy("something else");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(x.clipboard(), b"something else");

    // --clip and --json do not go together.
    assert_eq!(
        home.run(&["get", "--clip", "--json", "web/password"]).code,
        2
    );
    assert_no_secret_on_disk(&home, since, &[&value]);
}

#[test]
fn get_clip_without_a_display_says_what_it_needs() {
    let (home, since) = ready_home();
    let value = unique("clip");
    set(&home, "web/password", value.as_bytes());
    home.set_env([
        ("DISPLAY".to_owned(), String::new()),
        ("WAYLAND_DISPLAY".to_owned(), String::new()),
    ]);
    let r = home.run(&["get", "--clip", "web/password"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stderr
            .contains("no display: --clip needs X11 (DISPLAY) or Wayland (WAYLAND_DISPLAY)"),
        "{r}"
    );
    assert_eq!(r.stdout, "", "{r}");
    assert_no_secret_on_disk(&home, since, &[&value]);
}
