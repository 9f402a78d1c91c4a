#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! SSH keys on a YubiKey (as yubikey-agent keeps them), with a virtual card
//! in a private pcscd (in its own network namespace): `keyward ssh generate
//! --yubikey` makes a P-256 key on the card, the vault keeps only where it
//! is, and the SSH agent has the card sign, asking for the PIN through the
//! askpass program. OpenSSH's own `ssh-keygen -Y sign/verify` and `ssh` to
//! a private sshd check the signatures.
//!
//! Missing services (pcscd, vpcd, OpenSSH) skip these tests, or fail them
//! under `KEYWARD_REQUIRE_SERVICES=1`. Every process a test starts is
//! stopped by its pid when the test ends.

use keyward_agent::account::password::Password;
use keyward_agent::account::secret_key::SecretKey;
use keyward_agent::vault;
use keyward_agent::vault::ssh::Location;
use keyward_e2e::sshd::{Sshd, current_user};
use keyward_e2e::{FAST_KDF, Home, Run, require, write_script};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use virtual_yubikey::harness::{CardConfig, PcscEnv};

const PW: &str = "ssh yubikey master password";
const PIN: &str = "123456";
const SERIAL: u32 = 44_444_444;

/// The longest any client command may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn clients_available() -> bool {
    require("ssh-keygen (openssh-client)", runs("ssh-keygen", "-h"))
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

/// Runs `c` (output to files) within [`CLIENT_TIMEOUT`].
fn finish(c: Command) -> Run {
    let line = format!("{c:?}");
    keyward_e2e::run_bounded(c, line, None, CLIENT_TIMEOUT)
}

fn agent_log(home: &Home) -> String {
    std::fs::read_to_string(home.paths.log_file()).unwrap_or_default()
}

fn wait_for_socket(home: &Home, sock: &Path) {
    use std::os::unix::fs::FileTypeExt;
    home.wait_for(Duration::from_secs(10), "the SSH socket", || {
        std::fs::metadata(sock).is_ok_and(|m| m.file_type().is_socket())
    });
}

/// An askpass program that logs each question (its argument) to `asked`
/// and answers with the contents of `answer` (the PIN the user "types").
struct Askpass {
    program: PathBuf,
    asked: PathBuf,
    answer: PathBuf,
    _dir: tempfile::TempDir,
}

impl Askpass {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keyward-askpass-")
            .tempdir()
            .unwrap();
        let program = dir.path().join("askpass");
        let asked = dir.path().join("asked");
        let answer = dir.path().join("answer");
        write_script(
            &program,
            &format!(
                "{{ printf 'prompt=%s\\n' \"${{SSH_ASKPASS_PROMPT-}}\"; printf '%s\\n' \"$1\"; \
                 echo ---; }} >>'{asked}'\ncat '{answer}'\n",
                asked = asked.display(),
                answer = answer.display(),
            ),
        );
        std::fs::write(&answer, PIN).unwrap();
        Self {
            program,
            asked,
            answer,
            _dir: dir,
        }
    }

    fn answer(&self, text: &str) {
        std::fs::write(&self.answer, text).unwrap();
    }

    fn questions(&self) -> String {
        std::fs::read_to_string(&self.asked).unwrap_or_default()
    }
}

/// A home whose agent reaches the virtual card's pcscd and asks through
/// `askpass` (forced: there is no display), with an account.
fn card_home(env: &PcscEnv, askpass: &Askpass) -> Home {
    let home = Home::with_config(&format!(
        "[ssh]\naskpass = \"{}\"\n",
        askpass.program.display()
    ));
    home.set_env(env.pcsc_env());
    home.set_env(
        [
            ("SSH_ASKPASS", ""),
            ("DISPLAY", ""),
            ("WAYLAND_DISPLAY", ""),
            ("SSH_ASKPASS_REQUIRE", "force"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    home.init(PW);
    home
}

/// `keyward ssh generate NAME --yubikey --pin-fd 3 --json extra…`.
fn generate(home: &Home, name: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "ssh",
        "generate",
        name,
        "--yubikey",
        "--pin-fd",
        "3",
        "--json",
    ];
    args.extend_from_slice(extra);
    home.run_with(&args, None, Some(PIN.as_bytes()))
}

/// A key's public half in its own file (for `ssh-keygen -f`).
struct PublicKey {
    file: PathBuf,
    /// "type base64".
    line: String,
}

fn public_key(home: &Home, name: &str, dir: &Path) -> PublicKey {
    let text = home.ok(&["ssh", "public", name]).stdout;
    let file = dir.join(format!("{name}.pub"));
    std::fs::write(&file, &text).unwrap();
    let line = text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    PublicKey { file, line }
}

/// `ssh-keygen -Y sign -n file` of a fresh file through the agent; the
/// run and the signed file.
fn sign_with(sock: &Path, key: &PublicKey, dir: &Path, tag: &str) -> (Run, PathBuf) {
    let file = dir.join(format!("message-{tag}"));
    std::fs::write(
        &file,
        format!("signed by a YubiKey through keyward ({tag})\n"),
    )
    .unwrap();
    let _ = std::fs::remove_file(format!("{}.sig", file.display()));
    let r = finish(client(
        sock,
        "ssh-keygen",
        &[
            "-Y",
            "sign",
            "-f",
            key.file.to_str().unwrap(),
            "-n",
            "file",
            file.to_str().unwrap(),
        ],
    ));
    (r, file)
}

/// Signs through the agent and has `ssh-keygen -Y verify` check it.
fn sign_and_verify(sock: &Path, key: &PublicKey, dir: &Path, tag: &str) {
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
}

#[test]
fn a_key_made_on_the_yubikey_signs_there_with_the_pin_from_askpass() {
    if !clients_available() {
        return;
    }
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let card = env
        .insert_card(CardConfig::new(SERIAL).touch_timeout(Duration::from_secs(15)))
        .unwrap();
    let askpass = Askpass::new();
    let home = card_home(&env, &askpass);
    let dir = tempfile::tempdir().unwrap();

    // Made on the card, in slot 9a; the factory defaults are warned about.
    let r = generate(&home, "cardkey", &["--comment", "me@card"]).expect_code(0);
    let made = r.json();
    assert_eq!(made["name"], "cardkey", "{r}");
    assert_eq!(made["key_type"], "ecdsa-sha2-nistp256", "{r}");
    assert_eq!(made["location"], format!("yubikey:{SERIAL}/9a"), "{r}");
    assert_eq!(made["comment"], "me@card", "{r}");
    assert!(
        r.stderr.contains("WARNING") && r.stderr.contains("factory default"),
        "the factory-default PIN must be warned about\n{r}"
    );
    assert!(
        !r.stderr.contains("Secret Key") && r.stderr.contains("sign with your SSH key"),
        "the warnings speak of the SSH key, not of a protector\n{r}"
    );
    let list = home.ok(&["ssh", "list", "--json"]).json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let k = &list[0];
    assert_eq!(k["location"], format!("yubikey:{SERIAL}/9a"));
    assert_eq!(k["key_type"], "ecdsa-sha2-nistp256");
    assert_eq!(k["loaded"], true);
    assert_eq!(k["fingerprint"], made["fingerprint"]);
    let human = home.ok(&["ssh", "list"]).stdout;
    let row = human.lines().find(|l| l.starts_with("cardkey ")).unwrap();
    for cell in ["ECDSA", "256", &format!("yubikey:{SERIAL}/9a")] {
        assert!(row.contains(cell), "{cell} missing from {row:?}");
    }

    // The slot is taken: a second key is not made over it, and a name in
    // use is refused before the card is touched.
    let r = generate(&home, "again", &[]).expect_code(11);
    assert!(r.stderr.contains("already holds a key"), "{r}");
    let r = generate(&home, "cardkey", &["--slot", "9c"]).expect_code(9);
    assert!(r.stderr.contains("exists already"), "{r}");

    // OpenSSH reads the public key, with the fingerprint keyward lists.
    let key = public_key(&home, "cardkey", dir.path());
    assert!(
        key.line.starts_with("ecdsa-sha2-nistp256 AAAA"),
        "{}",
        key.line
    );
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&key.file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.split_whitespace().nth(1),
        k["fingerprint"].as_str(),
        "{text}"
    );

    // The vault holds where the key is and its public half; no private key.
    check_vault_has_no_private_key(&home, &key);

    // The agent lists it, and the card signs with the PIN askpass gives.
    let sock = home.paths.runtime_dir.join("ssh.sock");
    wait_for_socket(&home, &sock);
    let r = finish(client(&sock, "ssh-add", &["-L"])).expect_code(0);
    assert!(r.stdout.contains(&key.line), "{r}");
    assert!(askpass.questions().is_empty(), "asked before any signature");
    sign_and_verify(&sock, &key, dir.path(), "good-pin");
    let q = askpass.questions();
    assert_eq!(q.matches("---").count(), 1, "{q}");
    assert!(q.contains(&format!("PIN of YubiKey {SERIAL}")), "{q}");
    assert!(q.contains("cardkey") || q.contains("me@card"), "{q}");
    assert!(
        q.contains("ssh-keygen"),
        "the prompt names the program: {q}"
    );
    assert!(!q.contains("touch"), "no touch for touch policy never: {q}");

    // A wrong PIN: no signature, and the log says how many tries are left.
    askpass.answer("000000");
    let (r, file) = sign_with(&sock, &key, dir.path(), "wrong-pin");
    assert_ne!(r.code, 0, "signed with a wrong PIN\n{r}");
    assert!(!PathBuf::from(format!("{}.sig", file.display())).exists());
    home.wait_for(Duration::from_secs(5), "the wrong PIN in the log", || {
        let log = agent_log(&home);
        log.contains("wrong PIN") && log.contains("2 tries left")
    });
    // The next prompt says so; the right PIN signs again (and resets the count).
    askpass.answer(PIN);
    sign_and_verify(&sock, &key, dir.path(), "good-pin-again");
    let q = askpass.questions();
    assert!(
        q.rsplit("---")
            .nth(1)
            .unwrap_or_default()
            .contains("2 tries left"),
        "{q}"
    );
    // A PIN of the wrong length costs no try.
    askpass.answer("12");
    let (r, _) = sign_with(&sock, &key, dir.path(), "short-pin");
    assert_ne!(r.code, 0, "{r}");
    // No PIN (the prompt cancelled): no signature, and the log says why.
    askpass.answer("");
    let (r, _) = sign_with(&sock, &key, dir.path(), "no-pin");
    assert_ne!(r.code, 0, "{r}");
    home.wait_for(Duration::from_secs(5), "the missing PIN in the log", || {
        agent_log(&home).contains("no PIN was given")
    });
    askpass.answer(PIN);
    sign_and_verify(&sock, &key, dir.path(), "after-short-pin");

    // Touch policy always, in slot 9c: the prompt and the log say to touch.
    let r = generate(&home, "touchkey", &["--slot", "9c", "--touch", "always"]).expect_code(0);
    assert_eq!(r.json()["location"], format!("yubikey:{SERIAL}/9c"), "{r}");
    let touch_key = public_key(&home, "touchkey", dir.path());
    let toucher = std::thread::spawn(move || {
        card.wait_for_touch_request(1, Duration::from_secs(30))
            .unwrap();
        card.touch().unwrap();
        card
    });
    sign_and_verify(&sock, &touch_key, dir.path(), "touched");
    let card = toucher.join().unwrap();
    let q = askpass.questions();
    assert!(
        q.rsplit("---")
            .nth(1)
            .unwrap_or_default()
            .contains("touch your YubiKey"),
        "{q}"
    );
    assert!(agent_log(&home).contains("Touch your YubiKey"));

    // Card removed: no signature, and the log says to insert it.
    card.remove().unwrap();
    let (r, _) = sign_with(&sock, &key, dir.path(), "no-card");
    assert_ne!(r.code, 0, "{r}");
    home.wait_for(
        Duration::from_secs(5),
        "the missing card in the log",
        || {
            agent_log(&home).contains(&format!(
                "YubiKey {SERIAL}, which holds this SSH key, is not inserted"
            ))
        },
    );
}

/// Opens the vault file with the library (from the outside) and checks the
/// card key's record: its location, its public blob, no private key.
fn check_vault_has_no_private_key(home: &Home, key: &PublicKey) {
    let account = home.status()["account_id"].as_str().unwrap().to_owned();
    let path = home.paths.data_dir.join(format!("vault-{account}.kwv"));
    // The Secret Key: from the file protector's file.
    let sk_file = home.paths.state_dir.join(format!("secret-key-{account}"));
    let sk_text = std::fs::read_to_string(&sk_file).unwrap();
    let sk = SecretKey::parse(sk_text.trim()).unwrap();
    let v = vault::unlock(
        vault::read(&path).unwrap(),
        &Password::new(PW).unwrap(),
        &sk,
    )
    .unwrap();
    let entries = v.ssh_keys().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(
        e.location,
        Location::Card {
            serial: SERIAL,
            slot: 0x9a,
            touch: 1
        }
    );
    assert!(e.private.is_empty(), "a private key is in the vault");
    assert_eq!(
        keyward_agent::ssh::keys::authorized_line(&e.public, ""),
        key.line
    );
}

#[test]
fn without_askpass_a_card_key_does_not_sign_and_the_log_says_why() {
    if !clients_available() {
        return;
    }
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let _card = env.insert_card(CardConfig::new(SERIAL + 1)).unwrap();
    let askpass = Askpass::new();
    let home = card_home(&env, &askpass);
    let dir = tempfile::tempdir().unwrap();
    generate(&home, "cardkey", &[]).expect_code(0);
    let key = public_key(&home, "cardkey", dir.path());

    // The same vault with an agent that has no askpass program.
    home.stop_agent();
    std::fs::write(home.paths.config_file(), FAST_KDF).unwrap();
    home.unlock(PW).expect_code(0);
    let sock = home.paths.runtime_dir.join("ssh.sock");
    wait_for_socket(&home, &sock);
    let (r, _) = sign_with(&sock, &key, dir.path(), "no-askpass");
    assert_ne!(r.code, 0, "signed without a PIN\n{r}");
    home.wait_for(Duration::from_secs(5), "the refusal in the log", || {
        let log = agent_log(&home);
        log.contains("needs its PIN") && log.contains("no askpass program")
    });
    assert!(askpass.questions().is_empty());
}

// ---------------------------------------------------------------------------
// ssh to a private sshd with the card's key

/// `ssh` into `sshd` with the agent at `sock`, the card's key type only;
/// the run and what sshd logged meanwhile.
fn login(sshd: &Sshd, sock: &Path) -> (Run, String) {
    let args = sshd.ssh_args(
        sock,
        &["-o", "PubkeyAcceptedAlgorithms=ecdsa-sha2-nistp256"],
    );
    sshd.login(&args, |a| finish(client(sock, "ssh", a)))
}

#[test]
fn ssh_logs_in_with_the_key_on_the_yubikey() {
    if !clients_available()
        || !require("ssh (openssh-client)", runs("ssh", "-V"))
        || !require(
            "/usr/sbin/sshd (openssh-server)",
            Path::new("/usr/sbin/sshd").is_file(),
        )
    {
        return;
    }
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let _card = env.insert_card(CardConfig::new(SERIAL + 2)).unwrap();
    let askpass = Askpass::new();
    let home = card_home(&env, &askpass);
    let dir = tempfile::tempdir().unwrap();
    generate(&home, "login", &[]).expect_code(0);
    let key = public_key(&home, "login", dir.path());
    let fingerprint = home.ok(&["ssh", "list", "--json"]).json()[0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let sshd = Sshd::start(&[&key.line]);
    let sock = home.paths.runtime_dir.join("ssh.sock");
    wait_for_socket(&home, &sock);

    let (r, log) = login(&sshd, &sock);
    assert_eq!(
        r.code, 0,
        "ssh with the card's key failed\n{r}\n--- sshd\n{log}"
    );
    assert!(
        log.contains(&format!("Accepted publickey for {}", current_user()))
            && log.contains(&format!("ECDSA {fingerprint}")),
        "sshd did not log the card key's login\n{log}"
    );
    assert!(
        askpass
            .questions()
            .contains(&format!("PIN of YubiKey {}", SERIAL + 2))
    );

    // A wrong PIN: no login.
    askpass.answer("000000");
    let (r, log) = login(&sshd, &sock);
    assert_ne!(
        r.code, 0,
        "logged in with a wrong PIN\n{r}\n--- sshd\n{log}"
    );
}
