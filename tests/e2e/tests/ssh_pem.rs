#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keyward ssh import` of PEM key files: PKCS#8 (RSA, ECDSA P-256/384/521,
//! Ed25519), PKCS#1 RSA and SEC1 EC, and PBES2-encrypted PKCS#8, written by
//! the real `openssl` and `ssh-keygen`. Each imported key must have the
//! fingerprint OpenSSH computes for the file's public key, and sign through
//! the agent's SSH socket.

use keyward_e2e::{Home, Run};
use std::path::{Path, PathBuf};
use std::process::Command;

const PW: &str = "correct horse battery staple";
/// At least five characters: `ssh-keygen` refuses shorter ones.
const PASSPHRASE: &str = "pem passphrase";

/// Whether `openssl` and `ssh-keygen` are there (under
/// `KEYWARD_REQUIRE_SERVICES=1`, a missing one fails the test).
fn tools() -> bool {
    keyward_e2e::require("openssl", Path::new("/usr/bin/openssl").exists())
        && keyward_e2e::require("ssh-keygen", Path::new("/usr/bin/ssh-keygen").exists())
}

fn ready() -> Home {
    let home = Home::new();
    home.init(PW);
    home
}

/// Runs a tool and requires success; its stdout.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `openssl genpkey` of `algorithm` (with `-pkeyopt` options): a PKCS#8 file.
fn genpkey(dir: &Path, file: &str, algorithm: &str, options: &[&str]) -> PathBuf {
    let path = dir.join(file);
    let mut args = vec!["genpkey", "-algorithm", algorithm];
    for o in options {
        args.extend(["-pkeyopt", o]);
    }
    args.extend(["-out", s(&path)]);
    tool("openssl", &args);
    path
}

/// `ssh-keygen -t kind -m format` with `passphrase`: a PEM file written by OpenSSH.
fn keygen_pem(dir: &Path, file: &str, kind: &str, bits: &str, format: &str, pass: &str) -> PathBuf {
    let path = dir.join(file);
    tool(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            kind,
            "-b",
            bits,
            "-m",
            format,
            "-N",
            pass,
            "-C",
            "",
            "-f",
            s(&path),
        ],
    );
    path
}

/// The file's first line (its PEM label).
fn first_line(file: &Path) -> String {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

/// The `authorized_keys` line of the key in `file`, as OpenSSH derives it
/// (`ssh-keygen -y`), or for an Ed25519 PKCS#8 file, which OpenSSH 9.2
/// cannot read, from the raw public key `openssl pkey -pubout` gives.
fn public_line(file: &Path, passphrase: Option<&str>) -> String {
    let mut args = vec!["-y", "-f", s(file)];
    if let Some(p) = passphrase {
        args.extend(["-P", p]);
    }
    let out = Command::new("ssh-keygen").args(&args).output().unwrap();
    if out.status.success() {
        return String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
    }
    let pass = format!("pass:{}", passphrase.unwrap_or(""));
    let der = Command::new("openssl")
        .args([
            "pkey",
            "-in",
            s(file),
            "-passin",
            &pass,
            "-pubout",
            "-outform",
            "DER",
        ])
        .output()
        .unwrap();
    assert!(
        der.status.success(),
        "openssl pkey -pubout failed on {file:?}"
    );
    // SubjectPublicKeyInfo of id-Ed25519 (RFC 8410): a fixed prefix, then the key.
    let spki = der.stdout;
    let prefix = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    assert!(
        spki.len() == 44 && spki.starts_with(&prefix),
        "ssh-keygen -y cannot read {file:?} and it is not an Ed25519 key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw: [u8; 32] = spki[12..].try_into().unwrap();
    let key = ssh_key::PublicKey::new(
        ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey(raw)),
        "",
    );
    key.to_openssh().unwrap()
}

/// `ssh-keygen -lf` of an `authorized_keys` line: (fingerprint, type).
fn openssh_fingerprint(dir: &Path, line: &str) -> (String, String) {
    let file = dir.join("expected.pub");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let out = tool("ssh-keygen", &["-lf", s(&file)]);
    let fields: Vec<&str> = out.split_whitespace().collect();
    (
        fields[1].to_owned(),
        fields.last().unwrap().trim_matches(['(', ')']).to_owned(),
    )
}

fn import(home: &Home, file: &Path, name: &str, passphrase: Option<&str>) -> Run {
    let mut args = vec!["ssh", "import", s(file), "--name", name, "--json"];
    match passphrase {
        Some(p) => {
            args.extend(["--passphrase-fd", "3"]);
            home.run_with(&args, None, Some(format!("{p}\n").as_bytes()))
        }
        None => home.run(&args),
    }
}

/// `ssh list --json`, as an array.
fn keys(home: &Home) -> Vec<serde_json::Value> {
    home.ok(&["ssh", "list", "--json"])
        .json()
        .as_array()
        .unwrap()
        .clone()
}

/// Imports `file` as `name` and checks what keyward lists against OpenSSH:
/// the fingerprint, the key type, the public key. Returns the public line.
fn import_and_check(
    home: &Home,
    dir: &Path,
    file: &Path,
    name: &str,
    passphrase: Option<&str>,
    key_type: &str,
) -> String {
    let expected_line = public_line(file, passphrase);
    let (fingerprint, openssh_type) = openssh_fingerprint(dir, &expected_line);
    let r = import(home, file, name, passphrase);
    assert_eq!(r.code, 0, "{} ({})\n{r}", first_line(file), openssh_type);
    let j = r.json();
    assert_eq!(j["name"], name, "{j}");
    assert_eq!(j["fingerprint"], fingerprint.as_str(), "{name}: {j}");
    assert_eq!(j["key_type"], key_type, "{name}: {j}");
    assert_eq!(j["location"], "vault", "{j}");
    // A PEM file has no comment.
    assert_eq!(j["comment"], "", "{j}");
    let listed = keys(home);
    let k = listed
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not listed: {listed:?}"));
    assert_eq!(k["fingerprint"], fingerprint.as_str());
    assert_eq!(
        k["public"].as_str().unwrap().split_whitespace().nth(1),
        expected_line.split_whitespace().nth(1),
        "{name}"
    );
    expected_line
}

/// Signs a file through keyward's SSH socket with the key of `line`
/// (`ssh-keygen -Y sign`) and checks the signature (`-Y check-novalidate`):
/// the private half keyward took from the file belongs to its public key.
fn signs_through_the_agent(home: &Home, dir: &Path, line: &str, tag: &str) {
    let sock = home.paths.runtime_dir.join("ssh.sock");
    let public = dir.join(format!("{tag}.pub"));
    std::fs::write(&public, format!("{line}\n")).unwrap();
    let message = dir.join(format!("{tag}.txt"));
    std::fs::write(&message, format!("signed by the key imported as {tag}\n")).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "file", "-f", s(&public), s(&message)])
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tag}: ssh-keygen -Y sign through keyward failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sig = dir.join(format!("{tag}.txt.sig"));
    let out = Command::new("ssh-keygen")
        .args(["-Y", "check-novalidate", "-n", "file", "-s", s(&sig)])
        .stdin(std::fs::File::open(&message).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tag}: the signature does not verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pkcs8_files_of_every_key_type_are_imported_and_sign() {
    if !tools() {
        return;
    }
    let home = ready();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cases = [
        ("ed25519", "ED25519", &[][..], "ssh-ed25519"),
        ("rsa", "RSA", &["rsa_keygen_bits:2048"][..], "ssh-rsa"),
        (
            "p256",
            "EC",
            &["ec_paramgen_curve:P-256"][..],
            "ecdsa-sha2-nistp256",
        ),
        (
            "p384",
            "EC",
            &["ec_paramgen_curve:P-384"][..],
            "ecdsa-sha2-nistp384",
        ),
        (
            "p521",
            "EC",
            &["ec_paramgen_curve:P-521"][..],
            "ecdsa-sha2-nistp521",
        ),
    ];
    for (name, algorithm, options, key_type) in cases {
        let file = genpkey(dir, name, algorithm, options);
        assert_eq!(first_line(&file), "-----BEGIN PRIVATE KEY-----");
        let line = import_and_check(&home, dir, &file, name, None, key_type);
        signs_through_the_agent(&home, dir, &line, name);
    }
    assert_eq!(keys(&home).len(), cases.len());
}

#[test]
fn pkcs1_and_sec1_files_from_openssl_and_ssh_keygen_are_imported() {
    if !tools() {
        return;
    }
    let home = ready();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();

    // PKCS#1 and SEC1, as `openssl rsa -traditional` and `openssl ec` write them.
    let rsa8 = genpkey(dir, "rsa8", "RSA", &["rsa_keygen_bits:2048"]);
    let rsa1 = dir.join("rsa1");
    tool(
        "openssl",
        &["rsa", "-in", s(&rsa8), "-traditional", "-out", s(&rsa1)],
    );
    assert_eq!(first_line(&rsa1), "-----BEGIN RSA PRIVATE KEY-----");
    let line = import_and_check(&home, dir, &rsa1, "rsa-pkcs1", None, "ssh-rsa");
    signs_through_the_agent(&home, dir, &line, "rsa-pkcs1");
    // The same key as PKCS#8 is the same SSH key: refused, nothing added.
    let r = import(&home, &rsa8, "rsa-again", None);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.starts_with("keyward: "), "{r}");
    assert_eq!(keys(&home).len(), 1);

    for curve in ["P-256", "P-384", "P-521"] {
        let p8 = genpkey(
            dir,
            &format!("{curve}-8"),
            "EC",
            &[&format!("ec_paramgen_curve:{curve}")],
        );
        let sec1 = dir.join(format!("{curve}-sec1"));
        tool("openssl", &["ec", "-in", s(&p8), "-out", s(&sec1)]);
        assert_eq!(first_line(&sec1), "-----BEGIN EC PRIVATE KEY-----");
        let bits = &curve[2..];
        let name = format!("sec1-{bits}");
        let line = import_and_check(
            &home,
            dir,
            &sec1,
            &name,
            None,
            &format!("ecdsa-sha2-nistp{bits}"),
        );
        signs_through_the_agent(&home, dir, &line, &name);
    }

    // `ssh-keygen -m PEM` (PKCS#1, SEC1) and `-m PKCS8`, unencrypted.
    for (name, kind, bits, format, label, key_type) in [
        (
            "kg-rsa",
            "rsa",
            "3072",
            "PEM",
            "-----BEGIN RSA PRIVATE KEY-----",
            "ssh-rsa",
        ),
        (
            "kg-ec",
            "ecdsa",
            "384",
            "PEM",
            "-----BEGIN EC PRIVATE KEY-----",
            "ecdsa-sha2-nistp384",
        ),
        (
            "kg-ec8",
            "ecdsa",
            "256",
            "PKCS8",
            "-----BEGIN PRIVATE KEY-----",
            "ecdsa-sha2-nistp256",
        ),
    ] {
        let file = keygen_pem(dir, name, kind, bits, format, "");
        assert_eq!(first_line(&file), label);
        let line = import_and_check(&home, dir, &file, name, None, key_type);
        signs_through_the_agent(&home, dir, &line, name);
    }
    assert_eq!(keys(&home).len(), 7);
}

#[test]
fn encrypted_pkcs8_files_take_their_passphrase_and_a_wrong_one_adds_nothing() {
    if !tools() {
        return;
    }
    let home = ready();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let pass_out = format!("pass:{PASSPHRASE}");

    // PBES2 with PBKDF2 and AES-256-CBC, scrypt and AES-256-CBC (openssl),
    // and PBKDF2 with AES-128-CBC (`ssh-keygen -m PKCS8`).
    let rsa = genpkey(dir, "rsa", "RSA", &["rsa_keygen_bits:2048"]);
    let rsa_enc = dir.join("rsa-enc");
    tool(
        "openssl",
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            s(&rsa),
            "-passout",
            &pass_out,
            "-out",
            s(&rsa_enc),
        ],
    );
    let ed = genpkey(dir, "ed", "ED25519", &[]);
    let ed_enc = dir.join("ed-enc");
    tool(
        "openssl",
        &[
            "pkcs8",
            "-topk8",
            "-scrypt",
            "-in",
            s(&ed),
            "-passout",
            &pass_out,
            "-out",
            s(&ed_enc),
        ],
    );
    let ec_enc = keygen_pem(dir, "ec-enc", "ecdsa", "521", "PKCS8", PASSPHRASE);
    let cases = [
        (&rsa_enc, "rsa-enc", "ssh-rsa"),
        (&ed_enc, "ed-enc", "ssh-ed25519"),
        (&ec_enc, "ec-enc", "ecdsa-sha2-nistp521"),
    ];
    for (file, name, key_type) in cases {
        assert_eq!(first_line(file), "-----BEGIN ENCRYPTED PRIVATE KEY-----");
        let before = keys(&home).len();

        // A wrong passphrase: refused, nothing added.
        let r = import(&home, file, name, Some("not the passphrase"));
        assert_ne!(r.code, 0, "{r}");
        assert!(r.stderr.starts_with("keyward: "), "{r}");
        assert!(
            r.stderr
                .contains("the passphrase does not open the key file"),
            "{r}"
        );
        assert!(r.stdout.is_empty(), "{r}");
        assert_eq!(keys(&home).len(), before);

        // None, and no terminal to ask on: refused, saying how to give it.
        let r = import(&home, file, name, None);
        assert_ne!(r.code, 0, "{r}");
        assert!(r.stderr.contains("--passphrase-fd"), "{r}");
        assert_eq!(keys(&home).len(), before);

        let line = import_and_check(&home, dir, file, name, Some(PASSPHRASE), key_type);
        signs_through_the_agent(&home, dir, &line, name);
    }
    assert_eq!(keys(&home).len(), cases.len());
}

#[test]
fn legacy_encrypted_pem_is_refused_with_how_to_convert_it() {
    if !tools() {
        return;
    }
    let home = ready();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();

    // `ssh-keygen -m PEM` with a passphrase writes OpenSSL's legacy
    // encryption (Proc-Type / DEK-Info headers).
    let legacy = keygen_pem(dir, "legacy", "rsa", "2048", "PEM", PASSPHRASE);
    let text = std::fs::read_to_string(&legacy).unwrap();
    assert!(text.contains("Proc-Type: 4,ENCRYPTED"), "{text}");
    for passphrase in [Some(PASSPHRASE), None] {
        let r = import(&home, &legacy, "legacy", passphrase);
        assert_ne!(r.code, 0, "{r}");
        assert!(r.stderr.contains("legacy"), "{r}");
        assert!(r.stderr.contains("ssh-keygen -p -f"), "{r}");
        assert!(r.stderr.contains("openssl pkcs8 -topk8"), "{r}");
    }
    assert!(keys(&home).is_empty());

    // Converted as the message says, it is imported.
    let pass = format!("pass:{PASSPHRASE}");
    let converted = dir.join("converted");
    tool(
        "openssl",
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            s(&legacy),
            "-passin",
            &pass,
            "-passout",
            &pass,
            "-out",
            s(&converted),
        ],
    );
    import_and_check(
        &home,
        dir,
        &converted,
        "legacy",
        Some(PASSPHRASE),
        "ssh-rsa",
    );

    // A PEM file has no comment to name the key by: --name is needed.
    let ed = genpkey(dir, "ed", "ED25519", &[]);
    let r = home.run(&["ssh", "import", s(&ed)]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("--name"), "{r}");

    // Other PEM files: a public key, and a key on a curve SSH does not use.
    let public = dir.join("public.pem");
    tool(
        "openssl",
        &["pkey", "-in", s(&ed), "-pubout", "-out", s(&public)],
    );
    let r = import(&home, &public, "public", None);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("PUBLIC KEY"), "{r}");
    let k1 = genpkey(dir, "k1", "EC", &["ec_paramgen_curve:secp256k1"]);
    let r = import(&home, &k1, "k1", None);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("P-256, P-384 and P-521"), "{r}");
    assert_eq!(keys(&home).len(), 1);
}
