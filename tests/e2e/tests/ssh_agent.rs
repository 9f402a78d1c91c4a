#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The SSH agent socket (`ssh.sock`, docs/SECURITY.md §17) with OpenSSH's
//! own programs as its clients: `ssh-add` adds, lists, removes, locks and
//! unlocks; `ssh-keygen -Y` and `git commit -S` sign through it; `ssh` logs
//! in to a private `sshd` on 127.0.0.1 with a key only the agent holds.
//! Then the attacker's side: another user, oversized, unknown and
//! truncated frames.
//!
//! Every client runs in a session of its own (no terminal to prompt on),
//! with no askpass program unless a test gives one, and within a time bound.
//! Every process a test starts (sshd included) is stopped by its pid when
//! the test ends, passed or failed.

use keyward_e2e::sshd::{Sshd, current_user};
use keyward_e2e::{Home, Run, require, write_script};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PW: &str = "ssh agent master password";

/// The longest any client command may take: a client that waits for
/// someone shows up as a failed test, not a hung one.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Running things

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// OpenSSH's client programs and setsid are there (else skip, or fail
/// under `KEYWARD_REQUIRE_SERVICES=1`).
fn clients_available() -> bool {
    require("ssh-add (openssh-client)", runs("ssh-add", "-h"))
        && require("ssh-keygen (openssh-client)", runs("ssh-keygen", "-h"))
        && require("setsid (util-linux)", runs("setsid", "--version"))
}

/// `program args…` talking to the agent at `sock`: a session of its own
/// (no controlling terminal), no askpass program or display, C locale.
fn client(sock: &Path, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("setsid");
    c.arg("-w")
        .arg(program)
        .args(args)
        .env("SSH_AUTH_SOCK", sock)
        .env_remove("SSH_ASKPASS")
        .env_remove("SSH_ASKPASS_REQUIRE")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    c
}

/// Runs `c` (output to files, so that a child it leaves behind cannot hold
/// a pipe open) within [`CLIENT_TIMEOUT`].
fn finish(c: Command) -> Run {
    let line = format!("{c:?}");
    keyward_e2e::run_bounded(c, line, None, CLIENT_TIMEOUT)
}

/// `ssh-add args…` against `sock`.
fn ssh_add(sock: &Path, args: &[&str]) -> Run {
    finish(client(sock, "ssh-add", args))
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

// ---------------------------------------------------------------------------
// The agent

/// A home whose agent sees no askpass program and no display (whatever the
/// environment the tests run in has), with an account, its agent running.
fn ssh_home(extra_config: &str, agent_env: &[(&str, &str)]) -> Home {
    let home = Home::with_config(extra_config);
    let mut env: Vec<(String, String)> = [
        "SSH_ASKPASS",
        "SSH_ASKPASS_REQUIRE",
        "DISPLAY",
        "WAYLAND_DISPLAY",
    ]
    .iter()
    .map(|v| ((*v).to_owned(), String::new()))
    .collect();
    env.extend(
        agent_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    home.set_env(env);
    home.init(PW);
    home
}

/// The default SSH socket of a home.
fn sock_of(home: &Home) -> PathBuf {
    let sock = home.paths.runtime_dir.join("ssh.sock");
    wait_for_socket(home, &sock);
    sock
}

fn wait_for_socket(home: &Home, sock: &Path) {
    use std::os::unix::fs::FileTypeExt;
    home.wait_for(Duration::from_secs(10), "the SSH socket", || {
        std::fs::metadata(sock).is_ok_and(|m| m.file_type().is_socket())
    });
}

fn agent_log(home: &Home) -> String {
    std::fs::read_to_string(home.paths.log_file()).unwrap_or_default()
}

fn state(home: &Home) -> String {
    home.status()["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------
// Keys

/// A key pair made by `ssh-keygen -N ''` in a directory of its own.
struct KeyFile {
    /// The private key file.
    path: PathBuf,
    /// `.pub`.
    public: PathBuf,
    /// `SHA256:…`, as `ssh-keygen -lf` gives it.
    fingerprint: String,
    /// "type base64" (the .pub file's first two fields).
    line: String,
}

impl KeyFile {
    fn new(dir: &Path, name: &str, args: &[&str]) -> Self {
        let path = dir.join(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C"])
            .arg(format!("e2e-{name}"))
            .args(args)
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ssh-keygen {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = dir.join(format!("{name}.pub"));
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&public)
            .output()
            .unwrap();
        assert!(out.status.success());
        let fingerprint = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned();
        assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
        let text = std::fs::read_to_string(&public).unwrap();
        let line = first_two(&text);
        Self {
            path,
            public,
            fingerprint,
            line,
        }
    }

    fn ed25519(dir: &Path, name: &str) -> Self {
        Self::new(dir, name, &["-t", "ed25519"])
    }

    fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }

    fn public_str(&self) -> &str {
        self.public.to_str().unwrap()
    }

    /// Moves the private key file away: from now on only the agent holds it.
    fn hide_private(&self) {
        let away = self.path.with_extension("away");
        std::fs::rename(&self.path, &away).unwrap();
        assert!(!self.path.exists());
    }
}

/// The first two whitespace-separated fields of a public key line.
fn first_two(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The fingerprints `ssh-add -l` lists (empty when it lists none).
fn listed(sock: &Path) -> BTreeSet<String> {
    let r = ssh_add(sock, &["-l"]);
    match r.code {
        0 => r
            .stdout
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .collect(),
        1 if r.stdout.contains("no identities") || r.stderr.contains("no identities") => {
            BTreeSet::new()
        }
        _ => panic!("ssh-add -l failed\n{r}"),
    }
}

fn set_of(keys: &[&KeyFile]) -> BTreeSet<String> {
    keys.iter().map(|k| k.fingerprint.clone()).collect()
}

/// `ssh-keygen -Y sign -n file` of a fresh file with the key's public half:
/// the agent must sign. Returns the run and the signed file.
fn sign_with(sock: &Path, key: &KeyFile, dir: &Path, tag: &str) -> (Run, PathBuf) {
    let file = dir.join(format!("message-{tag}"));
    std::fs::write(&file, format!("a message signed through keyward ({tag})\n")).unwrap();
    let sig = PathBuf::from(format!("{}.sig", file.display()));
    let _ = std::fs::remove_file(&sig);
    let r = finish(client(
        sock,
        "ssh-keygen",
        &[
            "-Y",
            "sign",
            "-f",
            key.public_str(),
            "-n",
            "file",
            file.to_str().unwrap(),
        ],
    ));
    (r, file)
}

/// Signs through the agent and checks the signature with `ssh-keygen -Y
/// verify`; returns the signature's algorithm.
fn sign_and_verify(sock: &Path, key: &KeyFile, dir: &Path, tag: &str) -> String {
    let (r, file) = sign_with(sock, key, dir, tag);
    let r = r.expect_code(0);
    let sig = PathBuf::from(format!("{}.sig", file.display()));
    assert!(sig.is_file(), "no signature written\n{r}");
    let allowed = dir.join(format!("allowed-{tag}"));
    std::fs::write(&allowed, format!("test@example.com {}\n", key.line)).unwrap();
    let mut c = client(
        sock,
        "ssh-keygen",
        &[
            "-Y",
            "verify",
            "-f",
            allowed.to_str().unwrap(),
            "-I",
            "test@example.com",
            "-n",
            "file",
            "-s",
            sig.to_str().unwrap(),
        ],
    );
    c.stdin(std::fs::File::open(&file).unwrap());
    let v = finish(c).expect_code(0);
    assert!(
        v.stdout.contains("Good \"file\" signature")
            || v.stderr.contains("Good \"file\" signature"),
        "{v}"
    );
    sshsig_algorithm(&std::fs::read_to_string(&sig).unwrap())
}

/// Standard base64, padding and line breaks allowed.
fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' | b' ' => continue,
            _ => panic!("not base64: {c}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Reads SSH wire strings.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(self.0.len() >= n, "truncated");
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn string(&mut self) -> &'a [u8] {
        let n = self.u32() as usize;
        self.take(n)
    }
}

/// The signature algorithm inside an armored SSHSIG (PROTOCOL.sshsig).
fn sshsig_algorithm(armored: &str) -> String {
    let body: String = armored
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let raw = base64_decode(&body);
    let mut f = Fields(&raw);
    assert_eq!(f.take(6), b"SSHSIG");
    assert_eq!(f.u32(), 1);
    let _public = f.string();
    assert_eq!(f.string(), b"file");
    let _reserved = f.string();
    let _hash = f.string();
    let mut sig = Fields(f.string());
    String::from_utf8(sig.string().to_vec()).unwrap()
}

// ---------------------------------------------------------------------------
// 1. Adding, listing and signing with every key type

#[test]
fn ssh_add_lists_and_signs_with_ed25519_ecdsa_and_rsa_keys() {
    if !clients_available() {
        return;
    }
    let home = ssh_home("", &[]);
    let sock = sock_of(&home);
    let dir = tempfile::tempdir().unwrap();
    let ed = KeyFile::ed25519(dir.path(), "ed25519");
    let ec = KeyFile::new(dir.path(), "ecdsa", &["-t", "ecdsa", "-b", "256"]);
    let rsa = KeyFile::new(dir.path(), "rsa", &["-t", "rsa", "-b", "2048"]);

    for k in [&ed, &ec, &rsa] {
        let r = ssh_add(&sock, &[k.path_str()]).expect_code(0);
        assert!(r.stderr.contains("Identity added"), "{r}");
    }

    // -l: exactly the three fingerprints ssh-keygen computes.
    let r = ssh_add(&sock, &["-l"]).expect_code(0);
    assert_eq!(r.stdout.lines().count(), 3, "{r}");
    assert_eq!(listed(&sock), set_of(&[&ed, &ec, &rsa]), "{r}");
    for (k, ty) in [(&ed, "(ED25519)"), (&ec, "(ECDSA)"), (&rsa, "(RSA)")] {
        let line = r
            .stdout
            .lines()
            .find(|l| l.contains(&k.fingerprint))
            .unwrap();
        assert!(line.ends_with(ty), "{line}\n{r}");
    }

    // -L: the .pub files' key type and blob.
    let r = ssh_add(&sock, &["-L"]).expect_code(0);
    let got: BTreeSet<String> = r.stdout.lines().map(first_two).collect();
    let want: BTreeSet<String> = [&ed, &ec, &rsa].iter().map(|k| k.line.clone()).collect();
    assert_eq!(got, want, "{r}");

    // With the private key files gone, only the agent can sign.
    for k in [&ed, &ec, &rsa] {
        k.hide_private();
    }
    assert_eq!(
        sign_and_verify(&sock, &ed, dir.path(), "ed25519"),
        "ssh-ed25519"
    );
    assert_eq!(
        sign_and_verify(&sock, &ec, dir.path(), "ecdsa"),
        "ecdsa-sha2-nistp256"
    );
    // ssh-keygen asks for rsa-sha2-512 (never SHA-1 ssh-rsa); the SHA-256
    // variant is checked by the login test (`PubkeyAcceptedAlgorithms`).
    assert_eq!(
        sign_and_verify(&sock, &rsa, dir.path(), "rsa"),
        "rsa-sha2-512"
    );
    assert_eq!(state(&home), "unlocked");
}

// ---------------------------------------------------------------------------
// 2. Removing, lock and unlock, lifetimes, a restart

#[test]
fn removed_keys_come_back_from_the_vault_and_lifetimes_end() {
    if !clients_available() {
        return;
    }
    let home = ssh_home("", &[]);
    let sock = sock_of(&home);
    let dir = tempfile::tempdir().unwrap();
    let a = KeyFile::ed25519(dir.path(), "a");
    let b = KeyFile::new(dir.path(), "b", &["-t", "ecdsa", "-b", "256"]);
    let t = KeyFile::ed25519(dir.path(), "t");
    ssh_add(&sock, &[a.path_str()]).expect_code(0);
    ssh_add(&sock, &[b.path_str()]).expect_code(0);
    assert_eq!(listed(&sock), set_of(&[&a, &b]));

    // -d takes one out.
    let r = ssh_add(&sock, &["-d", b.public_str()]).expect_code(0);
    assert!(r.stderr.contains("Identity removed"), "{r}");
    assert_eq!(listed(&sock), set_of(&[&a]));
    // A second -d of it: not in the agent any more.
    ssh_add(&sock, &["-d", b.public_str()]).expect_code(1);

    // -D takes every one out: `ssh-add -l` then says there are none (exit 1).
    let r = ssh_add(&sock, &["-D"]).expect_code(0);
    assert!(r.stderr.contains("All identities removed"), "{r}");
    let r = ssh_add(&sock, &["-l"]).expect_code(1);
    assert!(r.stdout.contains("The agent has no identities"), "{r}");
    a.hide_private();
    let (r, _) = sign_with(&sock, &a, dir.path(), "removed");
    assert_ne!(r.code, 0, "a key taken out of the agent still signs\n{r}");

    // The vault still has them: a lock and an unlock bring both back.
    home.ok(&["lock"]);
    assert_eq!(state(&home), "locked");
    home.ok_pw(&["unlock"], PW);
    assert_eq!(listed(&sock), set_of(&[&a, &b]));
    sign_and_verify(&sock, &a, dir.path(), "after-unlock");

    // -t 2: listed now, gone by itself within a few seconds, never stored.
    let added = Instant::now();
    let r = ssh_add(&sock, &["-t", "2", t.path_str()]).expect_code(0);
    assert!(r.stderr.contains("Lifetime set to 2 seconds"), "{r}");
    assert_eq!(listed(&sock), set_of(&[&a, &b, &t]));
    t.hide_private();
    // A session key signs while it lives (on a machine so slow that two
    // seconds went by already, the refusal is right too).
    let (r, _) = sign_with(&sock, &t, dir.path(), "lifetime");
    assert!(
        r.code == 0 || added.elapsed() >= Duration::from_secs(2),
        "a key added with -t 2 did not sign within its lifetime\n{r}"
    );
    let gone = loop {
        if !listed(&sock).contains(&t.fingerprint) {
            break added.elapsed();
        }
        assert!(
            added.elapsed() < Duration::from_secs(6),
            "the key added with -t 2 is still listed after 6 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        gone >= Duration::from_millis(1500),
        "the key added with -t 2 went after {gone:?}, before its lifetime"
    );
    let (r, _) = sign_with(&sock, &t, dir.path(), "expired");
    assert_ne!(r.code, 0, "an expired key still signs\n{r}");
    assert_eq!(listed(&sock), set_of(&[&a, &b]));
    home.ok(&["lock"]);
    home.ok_pw(&["unlock"], PW);
    assert_eq!(
        listed(&sock),
        set_of(&[&a, &b]),
        "a key added with a lifetime came back after an unlock"
    );

    // A new agent: the vault's keys are listed while it is locked (public
    // halves only), and sign once it is unlocked.
    let old = home.agent_pid().unwrap();
    home.stop_agent();
    home.ok(&["status"]);
    assert_eq!(state(&home), "locked");
    assert_ne!(home.agent_pid(), Some(old), "the agent did not restart");
    wait_for_socket(&home, &sock);
    assert_eq!(listed(&sock), set_of(&[&a, &b]));
    let (r, _) = sign_with(&sock, &a, dir.path(), "restarted-locked");
    assert_ne!(r.code, 0, "a locked agent signed without asking\n{r}");
    home.ok_pw(&["unlock"], PW);
    sign_and_verify(&sock, &a, dir.path(), "restarted");
}

// ---------------------------------------------------------------------------
// 3. ssh to a private sshd

/// `ssh` into `sshd` with the agent at `sock` and `extra` options; the run
/// and what sshd logged meanwhile.
fn login(sshd: &Sshd, sock: &Path, extra: &[&str]) -> (Run, String) {
    sshd.login(&sshd.ssh_args(sock, extra), |args| {
        finish(client(sock, "ssh", args))
    })
}

#[test]
fn ssh_logs_in_with_a_vault_key_and_not_while_locked() {
    if !clients_available()
        || !require("ssh (openssh-client)", runs("ssh", "-V"))
        || !require(
            "/usr/sbin/sshd (openssh-server)",
            Path::new("/usr/sbin/sshd").is_file(),
        )
    {
        return;
    }
    let home = ssh_home("", &[]);
    let sock = sock_of(&home);
    let dir = tempfile::tempdir().unwrap();
    let ed = KeyFile::ed25519(dir.path(), "login-ed25519");
    let rsa = KeyFile::new(dir.path(), "login-rsa", &["-t", "rsa", "-b", "2048"]);
    let sshd = Sshd::start(&[&ed.line, &rsa.line]);
    assert!(sshd.authorized.is_file());
    for k in [&ed, &rsa] {
        ssh_add(&sock, &[k.path_str()]).expect_code(0);
        k.hide_private();
    }
    let user = current_user();

    // Ed25519.
    let (r, log) = login(
        &sshd,
        &sock,
        &["-o", "PubkeyAcceptedAlgorithms=ssh-ed25519"],
    );
    assert_eq!(
        r.code, 0,
        "ssh with the agent's key failed\n{r}\n--- sshd\n{log}"
    );
    assert!(
        log.contains(&format!("Accepted publickey for {user}"))
            && log.contains(&format!("ED25519 {}", ed.fingerprint)),
        "sshd did not log the Ed25519 key's login\n{log}"
    );

    // RSA, both SHA-2 signature algorithms: sshd checks that the signature
    // is of the algorithm the client named.
    for alg in ["rsa-sha2-256", "rsa-sha2-512"] {
        let accepted = format!("PubkeyAcceptedAlgorithms={alg}");
        let (r, log) = login(&sshd, &sock, &["-o", &accepted]);
        assert_eq!(r.code, 0, "ssh with {alg} failed\n{r}\n--- sshd\n{log}");
        assert!(
            log.contains(&format!("Accepted publickey for {user}"))
                && log.contains(&format!("RSA {}", rsa.fingerprint)),
            "sshd did not log the RSA key's login ({alg})\n{log}"
        );
        assert!(
            log.contains(&format!("attempting public key {alg}")),
            "sshd did not see a {alg} signature\n{log}"
        );
    }

    // Locked, with no askpass program: the keys are still offered, but the
    // signature is refused, so the login fails.
    home.ok(&["lock"]);
    let (r, log) = login(&sshd, &sock, &[]);
    assert_eq!(
        r.code, 255,
        "ssh logged in while keyward is locked\n{r}\n{log}"
    );
    assert!(r.stderr.contains("Permission denied"), "{r}");
    assert!(
        !log.contains("Accepted publickey"),
        "sshd accepted a login while keyward is locked\n{log}"
    );
    home.wait_for(
        Duration::from_secs(5),
        "the refusal in the agent log",
        || agent_log(&home).contains("SSH signature refused: keyward is locked"),
    );

    home.ok_pw(&["unlock"], PW);
    let (r, log) = login(&sshd, &sock, &[]);
    assert_eq!(
        r.code, 0,
        "ssh failed after the unlock\n{r}\n--- sshd\n{log}"
    );
    assert!(log.contains("Accepted publickey"), "{log}");
}

// ---------------------------------------------------------------------------
// 4. ssh-add -c: every use asks through askpass

#[test]
fn a_key_added_with_c_asks_through_askpass_before_each_signature() {
    if !clients_available() {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let asked = scripts.path().join("asked");
    let answer = scripts.path().join("answer");
    let askpass = scripts.path().join("askpass");
    write_script(
        &askpass,
        &format!(
            "{{ printf 'prompt=%s\\n' \"${{SSH_ASKPASS_PROMPT-}}\"; printf '%s\\n' \"$1\"; \
             echo ---; }} >>'{asked}'\nexit \"$(cat '{answer}')\"\n",
            asked = asked.display(),
            answer = answer.display(),
        ),
    );
    std::fs::write(&answer, "0").unwrap();
    let home = ssh_home(
        &format!("[ssh]\naskpass = \"{}\"\n", askpass.display()),
        &[("SSH_ASKPASS_REQUIRE", "force")],
    );
    let sock = sock_of(&home);
    let dir = tempfile::tempdir().unwrap();
    let key = KeyFile::ed25519(dir.path(), "confirm");
    let plain = KeyFile::ed25519(dir.path(), "plain");
    let r = ssh_add(&sock, &["-c", key.path_str()]).expect_code(0);
    assert!(
        r.stderr
            .contains("The user must confirm each use of the key"),
        "{r}"
    );
    ssh_add(&sock, &[plain.path_str()]).expect_code(0);
    key.hide_private();
    plain.hide_private();
    assert!(!asked.exists(), "askpass ran before any signature");

    // Yes: the signature is made, after a question naming the key and the
    // program asking.
    sign_and_verify(&sock, &key, dir.path(), "approved");
    let prompts = std::fs::read_to_string(&asked).unwrap_or_default();
    assert_eq!(prompts.matches("---").count(), 1, "{prompts}");
    assert!(prompts.contains("prompt=confirm\n"), "{prompts}");
    assert!(prompts.contains(&key.fingerprint), "{prompts}");
    assert!(prompts.contains("Requested by"), "{prompts}");
    assert!(prompts.contains("ssh-keygen"), "{prompts}");

    // A key added without -c does not ask.
    sign_and_verify(&sock, &plain, dir.path(), "plain");
    let prompts = std::fs::read_to_string(&asked).unwrap();
    assert_eq!(prompts.matches("---").count(), 1, "{prompts}");

    // No: no signature.
    std::fs::write(&answer, "1").unwrap();
    let (r, file) = sign_with(&sock, &key, dir.path(), "refused");
    assert_ne!(r.code, 0, "signed although askpass said no\n{r}");
    assert!(!PathBuf::from(format!("{}.sig", file.display())).exists());
    let prompts = std::fs::read_to_string(&asked).unwrap();
    assert_eq!(
        prompts.matches("---").count(),
        2,
        "askpass was not asked again\n{prompts}"
    );
    home.wait_for(
        Duration::from_secs(5),
        "the refusal in the agent log",
        || agent_log(&home).contains("the user did not approve"),
    );

    // The setting is in the vault: it still asks after a lock and unlock.
    home.ok(&["lock"]);
    home.ok_pw(&["unlock"], PW);
    let (r, _) = sign_with(&sock, &key, dir.path(), "refused-again");
    assert_ne!(r.code, 0, "{r}");
    std::fs::write(&answer, "0").unwrap();
    sign_and_verify(&sock, &key, dir.path(), "approved-again");
    let prompts = std::fs::read_to_string(&asked).unwrap();
    assert_eq!(prompts.matches("---").count(), 4, "{prompts}");
}

// ---------------------------------------------------------------------------
// 5. ssh-add -x / -X

#[test]
fn ssh_add_x_locks_keyward_and_capital_x_unlocks_with_the_master_password() {
    if !clients_available() {
        return;
    }
    let home = ssh_home("", &[]);
    let sock = sock_of(&home);
    let dir = tempfile::tempdir().unwrap();
    let key = KeyFile::ed25519(dir.path(), "lockme");
    ssh_add(&sock, &[key.path_str()]).expect_code(0);
    key.hide_private();

    // ssh-add reads the lock password through askpass (no terminal).
    let typed = dir.path().join("typed");
    let askpass = dir.path().join("askpass");
    write_script(&askpass, &format!("cat '{}'\n", typed.display()));
    let with_askpass = |args: &[&str]| {
        let mut c = client(&sock, "ssh-add", args);
        c.env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force");
        finish(c)
    };

    // -x: whatever lock password is typed, keyward locks.
    std::fs::write(&typed, "some lock password\n").unwrap();
    let r = with_askpass(&["-x"]).expect_code(0);
    assert!(r.stderr.contains("Agent locked"), "{r}");
    assert_eq!(state(&home), "locked");
    let (r, _) = sign_with(&sock, &key, dir.path(), "locked");
    assert_ne!(r.code, 0, "signed while locked\n{r}");
    // The public halves are still listed.
    assert_eq!(listed(&sock), set_of(&[&key]));

    // -X with the lock password typed at -x (not the Master Password): no.
    let r = with_askpass(&["-X"]);
    assert_eq!(r.code, 1, "ssh-add -X with a wrong password\n{r}");
    assert!(r.stderr.contains("Failed to unlock agent"), "{r}");
    assert_eq!(state(&home), "locked");
    let (r, _) = sign_with(&sock, &key, dir.path(), "still-locked");
    assert_ne!(r.code, 0, "signed while locked\n{r}");

    // -X with the Master Password: unlocked (after any back-off).
    home.wait_for(Duration::from_secs(30), "the back-off to end", || {
        home.status()["backoff_seconds"].as_u64() == Some(0)
    });
    std::fs::write(&typed, format!("{PW}\n")).unwrap();
    let r = with_askpass(&["-X"]).expect_code(0);
    assert!(r.stderr.contains("Agent unlocked"), "{r}");
    assert_eq!(state(&home), "unlocked");
    sign_and_verify(&sock, &key, dir.path(), "unlocked");

    // -X when not locked is refused (as ssh-agent does).
    let r = with_askpass(&["-X"]);
    assert_eq!(r.code, 1, "{r}");
    assert_eq!(state(&home), "unlocked");
}

// ---------------------------------------------------------------------------
// 6. git commit -S

#[test]
fn git_signs_commits_through_the_agent() {
    if !clients_available() || !require("git", runs("git", "--version")) {
        return;
    }
    let home = ssh_home("", &[]);
    let sock = sock_of(&home);
    let dir = tempfile::tempdir().unwrap();
    let key = KeyFile::ed25519(dir.path(), "git");
    ssh_add(&sock, &[key.path_str()]).expect_code(0);
    key.hide_private();
    let repo = dir.path().join("repo");
    let allowed = dir.path().join("allowed_signers");
    std::fs::write(&allowed, format!("test@example.com {}\n", key.line)).unwrap();
    let git = |args: &[&str]| {
        let mut c = client(&sock, "git", args);
        c.current_dir(if repo.exists() { &repo } else { dir.path() })
            .env("HOME", dir.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0");
        finish(c)
    };
    git(&["init", "-q", "repo"]).expect_code(0);
    for (k, v) in [
        ("user.name", "keyward test"),
        ("user.email", "test@example.com"),
        ("gpg.format", "ssh"),
        ("user.signingkey", key.public_str()),
        ("gpg.ssh.allowedSignersFile", allowed.to_str().unwrap()),
    ] {
        git(&["config", k, v]).expect_code(0);
    }
    let r = git(&[
        "commit",
        "-S",
        "-m",
        "signed by a key file's public half",
        "--allow-empty",
    ]);
    r.expect_code(0);
    // The key given literally, as people with agent-only keys write it.
    let literal = format!("key::{}", key.line);
    git(&["config", "user.signingkey", &literal]).expect_code(0);
    git(&[
        "commit",
        "-S",
        "-m",
        "signed by a literal key",
        "--allow-empty",
    ])
    .expect_code(0);

    let r = git(&["verify-commit", "-v", "HEAD", "HEAD~1"]).expect_code(0);
    assert_eq!(r.stderr.matches("Good \"git\" signature").count(), 2, "{r}");
    assert!(r.stderr.contains(&key.fingerprint), "{r}");

    // Locked (no askpass): git cannot sign.
    home.ok(&["lock"]);
    let r = git(&["commit", "-S", "-m", "locked", "--allow-empty"]);
    assert_ne!(r.code, 0, "git signed while keyward is locked\n{r}");
}

// ---------------------------------------------------------------------------
// 7. The attacker's side

#[test]
fn another_user_cannot_use_the_ssh_socket() {
    if !clients_available()
        || !require("root (to run ssh-add as uid 65534)", is_root())
        || !require("setpriv (util-linux)", runs("setpriv", "--version"))
    {
        return;
    }
    let as_nobody = |sock: &Path, args: &[&str]| {
        let mut all = vec![
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "ssh-add",
        ];
        all.extend_from_slice(args);
        let mut c = client(sock, "setpriv", &all);
        c.env("HOME", "/");
        finish(c)
    };
    let dir = tempfile::tempdir().unwrap();
    let key = KeyFile::ed25519(dir.path(), "mine");

    // The default socket, in the 0700 runtime directory: cannot even connect.
    {
        let home = ssh_home("", &[]);
        let sock = sock_of(&home);
        ssh_add(&sock, &[key.path_str()]).expect_code(0);
        let r = as_nobody(&sock, &["-l"]);
        assert_eq!(r.code, 2, "{r}");
        assert!(
            r.stderr.contains("Permission denied") || r.stderr.contains("Could not open"),
            "{r}"
        );
        assert!(!r.stdout.contains(&key.fingerprint), "{r}");
    }

    // A socket anyone may connect to: the agent itself refuses the peer.
    let open = tempfile::Builder::new()
        .prefix("keyward-ssh-open-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = open.path().join("ssh.sock");
    let home = ssh_home(&format!("[ssh]\nsocket = \"{}\"\n", sock.display()), &[]);
    wait_for_socket(&home, &sock);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the agent made its socket {mode:o}");
    ssh_add(&sock, &[key.path_str()]).expect_code(0);
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();

    // The agent closes the connection at once: ssh-add reads an end of
    // file, or dies of SIGPIPE if the close came before its request.
    let r = as_nobody(&sock, &["-l"]);
    assert_ne!(r.code, 0, "another user listed the keys\n{r}");
    assert!(!r.stdout.contains(&key.fingerprint), "{r}");
    assert!(
        r.stderr.contains("communication with agent failed")
            || r.stderr.contains("error fetching identities")
            || r.stderr.contains("[killed by signal 13]"),
        "{r}"
    );
    let r = as_nobody(&sock, &["-D"]);
    assert_ne!(r.code, 0, "another user removed the keys\n{r}");
    let r = as_nobody(&sock, &["-x"]);
    assert_ne!(r.code, 0, "another user locked the agent\n{r}");
    home.wait_for(
        Duration::from_secs(5),
        "the refusal in the agent log",
        || {
            let log = agent_log(&home);
            log.contains("refused an SSH agent connection from another user")
                && log.contains("65534")
        },
    );
    // Nothing changed for the owner.
    assert_eq!(state(&home), "unlocked");
    assert_eq!(listed(&sock), set_of(&[&key]));
}

/// One request on `s`: the reply frame (length prefix included).
fn request(s: &mut UnixStream, frame: &[u8]) -> Vec<u8> {
    s.write_all(frame).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .unwrap_or_else(|e| panic!("no reply to {frame:?}: {e}"));
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let mut all = len.to_vec();
    all.extend_from_slice(&body);
    all
}

const FAILURE: [u8; 5] = [0, 0, 0, 1, 5];
const REQUEST_IDENTITIES: [u8; 5] = [0, 0, 0, 1, 11];

fn connect(sock: &Path) -> UnixStream {
    let s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn identities_answer(s: &mut UnixStream) -> Vec<u8> {
    let r = request(s, &REQUEST_IDENTITIES);
    assert_eq!(r[4], 12, "not an IDENTITIES_ANSWER: {r:?}");
    r
}

#[test]
fn hostile_frames_fail_or_close_and_the_agent_serves_on() {
    if !clients_available() {
        return;
    }
    let home = ssh_home("", &[]);
    let sock = sock_of(&home);
    let dir = tempfile::tempdir().unwrap();
    let key = KeyFile::ed25519(dir.path(), "frames");
    ssh_add(&sock, &[key.path_str()]).expect_code(0);
    let agent = home.agent_pid().unwrap();

    // A length of 4 GiB: the connection is closed before any body is read.
    let mut s = connect(&sock);
    s.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("an oversized frame was not answered by a close: {other:?}"),
    }
    drop(s);
    // Just over the 256 KiB limit: closed as well.
    let mut s = connect(&sock);
    s.write_all(&(256 * 1024 + 1u32).to_be_bytes()).unwrap();
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "a frame over the limit was not refused"
    );
    drop(s);
    assert_eq!(listed(&sock), set_of(&[&key]));

    // An unknown message type: FAILURE, and the connection serves on.
    let mut s = connect(&sock);
    assert_eq!(request(&mut s, &[0, 0, 0, 1, 200]), FAILURE);
    identities_answer(&mut s);

    // A truncated SIGN_REQUEST (its key string runs past the message end):
    // FAILURE, not a dropped connection.
    assert_eq!(
        request(&mut s, &[0, 0, 0, 8, 13, 0, 0, 0, 100, 1, 2, 3]),
        FAILURE
    );
    // A sign request cut after the key (no data, no flags).
    let blob = {
        let mut r = identities_answer(&mut s);
        let body = r.split_off(5);
        let mut f = Fields(&body);
        assert_eq!(f.u32(), 1, "one identity expected");
        f.string().to_vec()
    };
    let mut frame = vec![13];
    frame.extend_from_slice(&(blob.len() as u32).to_be_bytes());
    frame.extend_from_slice(&blob);
    let mut framed = (frame.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&frame);
    assert_eq!(request(&mut s, &framed), FAILURE);
    // A zero-length message.
    assert_eq!(request(&mut s, &[0, 0, 0, 0]), FAILURE);
    // A well-formed request for a key the agent does not have.
    let other = KeyFile::ed25519(dir.path(), "stranger");
    let other_blob = base64_decode(other.line.split_whitespace().nth(1).unwrap());
    let mut frame = vec![13];
    for field in [&other_blob[..], b"data to sign"] {
        frame.extend_from_slice(&(field.len() as u32).to_be_bytes());
        frame.extend_from_slice(field);
    }
    frame.extend_from_slice(&0u32.to_be_bytes());
    let mut framed = (frame.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&frame);
    assert_eq!(request(&mut s, &framed), FAILURE);
    // The same connection still signs with the key it has.
    let mut frame = vec![13];
    for field in [&blob[..], b"data to sign"] {
        frame.extend_from_slice(&(field.len() as u32).to_be_bytes());
        frame.extend_from_slice(field);
    }
    frame.extend_from_slice(&0u32.to_be_bytes());
    let mut framed = (frame.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&frame);
    let r = request(&mut s, &framed);
    assert_eq!(r[4], 14, "not a SIGN_RESPONSE: {r:?}");
    drop(s);

    // Still the same agent, still serving ssh-add.
    assert_eq!(home.agent_pid(), Some(agent));
    assert_eq!(listed(&sock), set_of(&[&key]));
    home.wait_for(
        Duration::from_secs(5),
        "the oversized frame in the log",
        || agent_log(&home).contains("SSH agent message too long"),
    );
}

#[test]
fn a_signature_that_finds_keyward_locked_asks_for_the_master_password_through_askpass() {
    if !clients_available() {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let asked = scripts.path().join("asked");
    let answer = scripts.path().join("answer");
    let askpass = scripts.path().join("askpass");
    // Prints the password in `answer` and records the question.
    write_script(
        &askpass,
        &format!(
            "{{ printf 'prompt=%s\\n' \"${{SSH_ASKPASS_PROMPT-}}\"; printf '%s\\n' \"$1\"; \
             echo ---; }} >>'{asked}'\ncat '{answer}'\n",
            asked = asked.display(),
            answer = answer.display(),
        ),
    );
    let home = ssh_home(
        &format!("[ssh]\naskpass = \"{}\"\n", askpass.display()),
        &[("SSH_ASKPASS_REQUIRE", "force")],
    );
    let sock = sock_of(&home);
    let dir = tempfile::tempdir().unwrap();
    let key = KeyFile::ed25519(dir.path(), "locked");
    ssh_add(&sock, &[key.path_str()]).expect_code(0);
    key.hide_private();
    home.ok(&["lock"]);
    assert_eq!(state(&home), "locked");

    // A wrong password: no signature, still locked, and the guess counted.
    std::fs::write(&answer, "not the password\n").unwrap();
    let (r, _) = sign_with(&sock, &key, dir.path(), "wrong");
    assert_ne!(r.code, 0, "signed with a wrong Master Password\n{r}");
    assert_eq!(state(&home), "locked");
    let prompts = std::fs::read_to_string(&asked).unwrap();
    assert!(prompts.contains("Master Password"), "{prompts}");
    assert!(prompts.contains(&key.fingerprint), "{prompts}");
    assert!(!prompts.contains("prompt=confirm"), "{prompts}");
    let st = home.ok(&["status", "--json"]).json();
    assert!(
        st["backoff_seconds"].as_u64().is_some(),
        "status reports the back-off: {st}"
    );

    // The right one: the agent unlocks and signs.
    std::fs::write(&answer, format!("{PW}\n")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Wait out a back-off the wrong guess may have started.
        let st = home.ok(&["status", "--json"]).json();
        if st["backoff_seconds"].as_u64().unwrap_or(0) == 0 || std::time::Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    sign_and_verify(&sock, &key, dir.path(), "unlocked");
    assert_eq!(state(&home), "unlocked");
    let log = agent_log(&home);
    assert!(!log.contains(PW), "the password reached the agent log");
}

/// A SIGN_REQUEST frame for the key of `.pub` line `type_b64`.
fn sign_frame(type_b64: &str, data: &[u8]) -> Vec<u8> {
    let b64 = type_b64.split_whitespace().nth(1).unwrap();
    let blob = base64_decode(b64);
    let mut body = vec![13u8];
    body.extend_from_slice(&(blob.len() as u32).to_be_bytes());
    body.extend_from_slice(&blob);
    body.extend_from_slice(&(data.len() as u32).to_be_bytes());
    body.extend_from_slice(data);
    body.extend_from_slice(&0u32.to_be_bytes());
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

#[test]
fn once_per_process_asks_each_requesting_process_once() {
    if !clients_available() {
        return;
    }
    let scripts = tempfile::tempdir().unwrap();
    let asked = scripts.path().join("asked");
    let askpass = scripts.path().join("askpass");
    write_script(
        &askpass,
        &format!(
            "{{ printf '%s\\n' \"$1\"; echo ---; }} >>'{}'\nexit 0\n",
            asked.display()
        ),
    );
    let home = ssh_home(
        &format!("[ssh]\naskpass = \"{}\"\n", askpass.display()),
        &[("SSH_ASKPASS_REQUIRE", "force")],
    );
    let sock = sock_of(&home);
    let dir = tempfile::tempdir().unwrap();
    let key = KeyFile::ed25519(dir.path(), "opp");
    ssh_add(&sock, &[key.path_str()]).expect_code(0);
    key.hide_private();
    let name = home
        .ok(&["ssh", "list", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["fingerprint"] == key.fingerprint.as_str())
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    home.ok(&["ssh", "approve", &name, "once-per-process"]);
    let count = || {
        std::fs::read_to_string(&asked)
            .unwrap_or_default()
            .matches("---")
            .count()
    };

    // This test process signs three times, on two connections: asked once.
    let frame = sign_frame(&key.line, b"data to sign");
    let mut a = connect(&sock);
    assert_eq!(request(&mut a, &frame)[4], 14);
    assert_eq!(request(&mut a, &frame)[4], 14);
    let mut b = connect(&sock);
    assert_eq!(request(&mut b, &frame)[4], 14);
    assert_eq!(count(), 1, "asked more than once for one process");
    let prompt = std::fs::read_to_string(&asked).unwrap();
    assert!(
        prompt.contains(&format!("pid {}", std::process::id())),
        "{prompt}"
    );

    // Another process is asked again.
    sign_and_verify(&sock, &key, dir.path(), "other-process");
    assert_eq!(count(), 2);

    // After a lock and unlock, this process is asked again too.
    home.ok(&["lock"]);
    home.unlock(PW).expect_code(0);
    let mut c = connect(&sock);
    assert_eq!(request(&mut c, &frame)[4], 14);
    assert_eq!(count(), 3);
}
