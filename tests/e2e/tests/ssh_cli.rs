#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keyward ssh …`: SSH keys made in or taken into the vault, listed,
//! approved, removed, and the shell line that points ssh at the agent's
//! SSH socket. Fingerprints are checked against OpenSSH's own tools.

use keyward_e2e::{Home, Run, Terminal};
use std::path::{Path, PathBuf};
use std::process::Command;

const PW: &str = "correct horse battery staple";
const PASSPHRASE: &str = "secretpp";

fn ready() -> Home {
    let home = Home::new();
    home.init(PW);
    home
}

/// `ssh list --json`, as an array.
fn keys(home: &Home) -> Vec<serde_json::Value> {
    home.ok(&["ssh", "list", "--json"])
        .json()
        .as_array()
        .unwrap()
        .clone()
}

fn key<'a>(keys: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    keys.iter().find(|k| k["name"] == name)
}

/// A key file made by `ssh-keygen -t ed25519 -N passphrase -C comment`, in
/// its own directory (outside the keyward home); its path.
fn keygen(dir: &Path, file: &str, passphrase: &str, comment: &str) -> PathBuf {
    let path = dir.join(file);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The fingerprint `ssh-keygen -lf FILE` prints (SHA256:…).
fn keygen_fingerprint(file: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ssh-keygen -lf failed: {text}");
    text.split_whitespace().nth(1).unwrap().to_owned()
}

fn import_fd3(home: &Home, file: &Path, name: &str, passphrase: &str) -> Run {
    home.run_with(
        &[
            "ssh",
            "import",
            file.to_str().unwrap(),
            "--name",
            name,
            "--passphrase-fd",
            "3",
            "--json",
        ],
        None,
        Some(format!("{passphrase}\n").as_bytes()),
    )
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
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
fn a_generated_key_is_listed_with_the_fingerprint_openssh_computes() {
    let home = ready();
    let made = home
        .ok(&[
            "ssh",
            "generate",
            "work",
            "--comment",
            "me@laptop",
            "--json",
        ])
        .json();
    assert_eq!(made["name"], "work");
    assert_eq!(made["key_type"], "ssh-ed25519");
    assert_eq!(made["comment"], "me@laptop");
    assert_eq!(made["location"], "vault");
    assert_eq!(made["approval"], "never");

    let list = keys(&home);
    assert_eq!(list.len(), 1, "{list:?}");
    let k = key(&list, "work").unwrap();
    for field in [
        "name",
        "key_type",
        "fingerprint",
        "comment",
        "location",
        "approval",
        "public",
        "loaded",
    ] {
        assert!(k.get(field).is_some(), "ssh list --json lacks {field}: {k}");
    }
    assert_eq!(k["loaded"], true);
    let fingerprint = k["fingerprint"].as_str().unwrap();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");

    // `ssh public` is an authorized_keys line with that fingerprint.
    let public = home.ok(&["ssh", "public", "work"]).stdout;
    assert!(public.starts_with("ssh-ed25519 AAAA"), "{public}");
    assert_eq!(public.trim_end(), k["public"].as_str().unwrap());
    let d = tempfile::tempdir().unwrap();
    let pub_file = d.path().join("work.pub");
    std::fs::write(&pub_file, &public).unwrap();
    assert_eq!(keygen_fingerprint(&pub_file), fingerprint);
    // … and is found by its fingerprint too.
    assert_eq!(home.ok(&["ssh", "public", fingerprint]).stdout, public);

    // The human forms say the same.
    let r = home.ok(&["ssh", "list"]);
    assert!(r.stdout.contains("NAME"), "{r}");
    let row = r.stdout.lines().find(|l| l.starts_with("work ")).unwrap();
    for cell in [fingerprint, "ED25519", "256", "vault", "never", "me@laptop"] {
        assert!(row.contains(cell), "{cell} missing from {row:?}");
    }
    let r = home.ok(&["ssh", "generate", "second"]);
    assert!(r.stdout.contains("Fingerprint: SHA256:"), "{r}");
    assert!(r.stdout.contains("ssh-ed25519 AAAA"), "{r}");

    // An unknown name: exit 1, and where to look.
    let r = home.run(&["ssh", "public", "nope"]).expect_code(1);
    assert!(r.stderr.contains("no SSH key named"), "{r}");
    assert!(r.stderr.contains("keyward ssh list"), "{r}");
    assert!(r.stdout.is_empty(), "{r}");
}

#[test]
fn other_key_types_are_made_as_asked() {
    let home = ready();
    let j = home
        .ok(&["ssh", "generate", "ec", "--type", "ecdsa", "--json"])
        .json();
    assert!(
        j["key_type"].as_str().unwrap().starts_with("ecdsa-sha2-"),
        "{j}"
    );
    let j = home
        .ok(&[
            "ssh", "generate", "old", "--type", "rsa", "--bits", "3072", "--json",
        ])
        .json();
    assert_eq!(j["key_type"], "ssh-rsa");
    let row = home.ok(&["ssh", "list"]).stdout;
    let row = row
        .lines()
        .find(|l| l.starts_with("old "))
        .unwrap()
        .to_owned();
    assert!(row.contains("RSA") && row.contains("3072"), "{row}");
    // The comment defaults to the name.
    assert!(j["public"].as_str().unwrap().ends_with(" old"), "{j}");
    // A type clap does not know: bad usage.
    home.run(&["ssh", "generate", "x", "--type", "dsa"])
        .expect_code(2);
}

#[test]
fn an_unencrypted_key_file_is_imported_under_its_comment() {
    let home = ready();
    let d = tempfile::tempdir().unwrap();
    let file = keygen(d.path(), "id_plain", "", "c");
    let r = home.ok(&["ssh", "import", file.to_str().unwrap()]);
    assert!(r.stdout.contains("Imported"), "{r}");
    let list = keys(&home);
    let k = key(&list, "c").unwrap_or_else(|| panic!("no key named c: {list:?}"));
    let expected = keygen_fingerprint(&file.with_extension("pub"));
    assert_eq!(k["fingerprint"], expected.as_str());
    let public = std::fs::read_to_string(file.with_extension("pub")).unwrap();
    assert_eq!(
        k["public"].as_str().unwrap().split_whitespace().nth(1),
        public.split_whitespace().nth(1)
    );
    // The private key is nowhere in clear under the home (vault, log …).
    let text = std::fs::read_to_string(&file).unwrap();
    let body = text.lines().nth(2).unwrap();
    assert!(body.len() >= 40, "{text}");
    assert!(
        files_holding(home.path(), body.as_bytes()).is_empty(),
        "the private key is in clear in {:?}",
        files_holding(home.path(), body.as_bytes())
    );
    // The same key again: refused, saying so.
    let r = home.run(&["ssh", "import", file.to_str().unwrap(), "--name", "again"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.starts_with("keyward: "), "{r}");
    assert_eq!(keys(&home).len(), 1);
}

#[test]
fn an_encrypted_key_file_takes_its_passphrase_from_a_descriptor() {
    let home = ready();
    let d = tempfile::tempdir().unwrap();
    let file = keygen(d.path(), "id_enc", PASSPHRASE, "c");

    // A wrong passphrase: refused, and nothing is added.
    let r = import_fd3(&home, &file, "enc", "not it");
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.starts_with("keyward: "), "{r}");
    assert!(r.stdout.is_empty(), "{r}");
    assert!(keys(&home).is_empty());

    // Without one and without a terminal: refused, saying how to give it.
    let r = home.run(&["ssh", "import", file.to_str().unwrap(), "--name", "enc"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("--passphrase-fd"), "{r}");
    assert!(keys(&home).is_empty());

    // The right one (its trailing newline stripped).
    let j = import_fd3(&home, &file, "enc", PASSPHRASE)
        .expect_code(0)
        .json();
    assert_eq!(j["name"], "enc");
    assert_eq!(
        j["fingerprint"],
        keygen_fingerprint(&file.with_extension("pub")).as_str()
    );
    assert_eq!(keys(&home).len(), 1);
}

#[test]
fn on_a_terminal_the_passphrase_is_asked_without_echo_and_again_after_a_typo() {
    let home = ready();
    let d = tempfile::tempdir().unwrap();
    let file = keygen(d.path(), "id_enc", PASSPHRASE, "c");
    let mut t = Terminal::spawn(
        &home,
        &["ssh", "import", file.to_str().unwrap(), "--name", "typed"],
    );
    t.expect("assphrase: ");
    t.type_line("typo");
    t.expect("assphrase: ");
    t.type_line(PASSPHRASE);
    let (code, screen) = t.wait();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("Imported"), "{screen}");
    assert!(
        !screen.contains(PASSPHRASE),
        "the passphrase was echoed: {screen}"
    );
    assert!(key(&keys(&home), "typed").is_some());
}

#[test]
fn files_that_are_no_private_key_are_refused_clearly() {
    let home = ready();
    let d = tempfile::tempdir().unwrap();

    let junk = d.path().join("notes.txt");
    std::fs::write(&junk, "hello, this is not a key\n").unwrap();
    let r = home.run(&["ssh", "import", junk.to_str().unwrap(), "--name", "x"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.starts_with("keyward: "), "{r}");
    assert!(r.stderr.len() > "keyward: ".len() + 10, "{r}");

    // The .pub file by mistake.
    let file = keygen(d.path(), "id", "", "c");
    let r = home.run(&[
        "ssh",
        "import",
        file.with_extension("pub").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 9, "{r}");
    assert!(r.stderr.contains("public key"), "{r}");

    // Too large to be a key file.
    let big = d.path().join("big");
    std::fs::write(&big, vec![b'a'; 65 * 1024]).unwrap();
    let r = home.run(&["ssh", "import", big.to_str().unwrap()]);
    assert_eq!(r.code, 9, "{r}");
    assert!(r.stderr.contains("64 KiB"), "{r}");

    // Missing.
    let r = home.run(&["ssh", "import", d.path().join("nope").to_str().unwrap()]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("cannot read"), "{r}");

    assert!(keys(&home).is_empty());
}

#[test]
fn remove_asks_or_needs_yes() {
    let home = ready();
    let fingerprint = home.ok(&["ssh", "generate", "gone", "--json"]).json()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    home.ok(&["ssh", "generate", "kept"]);

    // No terminal to ask on: nothing deleted.
    let r = home.run(&["ssh", "remove", "gone"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("--yes"), "{r}");
    assert!(key(&keys(&home), "gone").is_some());

    // On a terminal, No keeps it.
    let mut t = Terminal::spawn(&home, &["ssh", "remove", "gone"]);
    t.expect("Delete SSH key gone (");
    t.expect("This cannot be undone");
    t.type_line("n");
    let (code, screen) = t.wait();
    assert_eq!(code, 12, "{screen}");
    assert!(key(&keys(&home), "gone").is_some());

    let r = home.ok(&["ssh", "remove", "gone", "--yes"]);
    assert!(r.stderr.contains(&fingerprint), "{r}");
    let list = keys(&home);
    assert!(key(&list, "gone").is_none(), "{list:?}");
    assert!(key(&list, "kept").is_some(), "{list:?}");
    let r = home.run(&["ssh", "public", "gone"]).expect_code(1);
    assert!(r.stderr.contains("no SSH key named"), "{r}");

    // By fingerprint, and an unknown one.
    let fp = key(&list, "kept").unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    home.ok(&["ssh", "remove", &fp, "--yes"]);
    assert!(keys(&home).is_empty());
    let r = home.run(&["ssh", "remove", "kept", "--yes"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("no SSH key named"), "{r}");
}

#[test]
fn approve_sets_when_the_agent_asks() {
    let home = ready();
    home.ok(&["ssh", "generate", "work"]);
    home.ok(&["ssh", "approve", "work", "always"]);
    assert_eq!(key(&keys(&home), "work").unwrap()["approval"], "always");
    home.ok(&["ssh", "approve", "work", "once-per-process"]);
    assert_eq!(
        key(&keys(&home), "work").unwrap()["approval"],
        "once-per-process"
    );
    let row = home.ok(&["ssh", "list"]).stdout;
    assert!(row.contains("once-per-process"), "{row}");
    home.ok(&["ssh", "approve", "work", "never"]);
    assert_eq!(key(&keys(&home), "work").unwrap()["approval"], "never");
    // Bad usage, and an unknown key.
    home.run(&["ssh", "approve", "work", "sometimes"])
        .expect_code(2);
    let r = home.run(&["ssh", "approve", "nope", "always"]);
    assert_ne!(r.code, 0, "{r}");
}

#[test]
fn env_prints_the_ssh_socket_for_each_shell() {
    let home = Home::new();
    let socket = home.paths.runtime_dir.join("ssh.sock");
    let socket = socket.to_str().unwrap();

    // --no-autostart: the path, and no agent started.
    let r = home.ok(&["--no-autostart", "ssh", "env"]);
    assert_eq!(
        r.stdout,
        format!("SSH_AUTH_SOCK={socket}; export SSH_AUTH_SOCK;\n"),
        "{r}"
    );
    assert!(home.agent_pid().is_none(), "an agent was started");

    // As `status`, it starts the agent; no account or unlock is needed.
    let r = home.ok(&["ssh", "env"]);
    assert!(r.stdout.contains("SSH_AUTH_SOCK="), "{r}");
    assert!(r.stdout.contains("ssh.sock"), "{r}");
    assert!(home.agent_pid().is_some(), "no agent was started");

    let r = home.ok(&["ssh", "env", "--fish"]);
    assert_eq!(
        r.stdout,
        format!("set -gx SSH_AUTH_SOCK {socket};\n"),
        "{r}"
    );
    let r = home.ok(&["ssh", "env", "--csh"]);
    assert_eq!(r.stdout, format!("setenv SSH_AUTH_SOCK {socket};\n"), "{r}");
    home.run(&["ssh", "env", "--csh", "--fish"]).expect_code(2);

    // The sh line works in sh.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{}echo \"$SSH_AUTH_SOCK\"",
            home.ok(&["ssh", "env"]).stdout
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), socket);
}

#[test]
fn env_works_while_the_agent_is_locked_and_ssh_add_lists_the_keys() {
    let home = ready();
    let fingerprint = home.ok(&["ssh", "generate", "work", "--json"]).json()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let socket = home.paths.runtime_dir.join("ssh.sock");
    let have_ssh_add = Path::new("/usr/bin/ssh-add").exists();
    if keyward_e2e::require("ssh-add", have_ssh_add) {
        let out = Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&fingerprint),
            "ssh-add -l: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    home.ok(&["lock"]);
    let r = home.ok(&["--no-prompt", "ssh", "env"]);
    assert!(r.stdout.contains(socket.to_str().unwrap()), "{r}");
    // The keys themselves need the unlocked agent.
    home.run(&["--no-prompt", "ssh", "list"]).expect_code(4);
}

#[test]
fn get_does_not_hand_out_an_ssh_key() {
    let home = ready();
    home.ok(&["ssh", "generate", "deploy"]);
    let r = home.run(&["get", "deploy"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(!r.stdout.contains("PRIVATE KEY"), "{r}");
    assert!(r.stdout.is_empty(), "{r}");
}

#[test]
fn p521_keys_from_ssh_keygen_import_whatever_their_scalar() {
    // OpenSSH writes an ECDSA scalar as a minimal mpint: for P-521, one key
    // in four is shorter than 66 bytes (ssh-key 0.6 alone refused those).
    // Twelve keys, half of them encrypted, miss that case with p ≈ 3 %.
    let home = ready();
    let d = tempfile::tempdir().unwrap();
    for i in 0..12 {
        let file = d.path().join(format!("p521-{i}"));
        let pass = if i % 2 == 0 { "" } else { "p521 passphrase" };
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ecdsa", "-b", "521", "-N", pass, "-C"])
            .arg(format!("p521-{i}"))
            .arg("-f")
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success());
        let name = format!("p521-{i}");
        let r = if pass.is_empty() {
            home.run(&["ssh", "import", file.to_str().unwrap(), "--name", &name])
        } else {
            import_fd3(&home, &file, &name, pass)
        };
        assert_eq!(r.code, 0, "{r}");
        let listed = keys(&home);
        let k = key(&listed, &name).unwrap();
        assert_eq!(
            k["fingerprint"].as_str().unwrap(),
            keygen_fingerprint(&file.with_extension("pub"))
        );
    }
}
