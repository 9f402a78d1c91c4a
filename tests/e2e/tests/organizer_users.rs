#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Recovery by an organizer (docs/SECURITY.md §16) between two real system
//! users, each with an agent of their own, as on a family's or a team's
//! machine: the test (as root) creates an organizer and a member with
//! `useradd`, runs `keyward` as each of them (`setpriv`, in a session of its
//! own, with a clean environment), and writes a machine policy file
//! `/etc/keyward/organizers.d/test-<pid>.pub` naming the organizer as
//! `required`. Then:
//!
//! 1. the organizer makes an organizer key — in their vault, or on a
//!    (virtual) YubiKey in a private pcscd that the organizer's agent
//!    reaches as that user;
//! 2. the member runs `init` and is enrolled by the policy; stores items;
//!    "forgets" the Master Password and has no recovery code;
//! 3. root hands a copy of the member's vault file to the organizer, who
//!    runs `organizer recover` (the card variant: a wrong PIN first, which
//!    is refused and writes nothing);
//! 4. root hands the grant file to the member, who recovers with it and the
//!    code: a new Secret Key, every item intact, the old password refused.
//!
//! The users (and their homes), the policy file and any directory the test
//! made under /etc are removed when the test ends, also when it fails. Not
//! root, or a missing `useradd`/`setpriv`/pcscd: the test is skipped, or
//! fails under `KEYWARD_REQUIRE_SERVICES=1` (tests/ci.sh).

use keyward_agent::vault;
use keyward_client::Paths;
use keyward_e2e::{FAST_KDF, Run, agent_bin, keyward_bin, require, signal};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use virtual_yubikey::harness::{CardConfig, PcscEnv, find_program};

const ORG_PW: &str = "organizer pass phrase";
const PW: &str = "member pass phrase";
const NEW_PW: &str = "member new pass phrase";
const PIN: &str = "123456";
const SERIAL: u32 = 18_181_818;
const POLICY_DIR: &str = "/etc/keyward/organizers.d";
/// The longest any one `keyward` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// One variant at a time: a policy file enrolls its organizer in every
/// account created while it is there.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn prerequisites() -> bool {
    require(
        "root (the test creates system users and a machine policy under /etc/keyward)",
        rustix::process::geteuid().is_root(),
    ) && require(
        "useradd and userdel (package passwd)",
        find_program("useradd").is_some() && find_program("userdel").is_some(),
    ) && require(
        "setpriv and setsid (package util-linux)",
        find_program("setpriv").is_some() && find_program("setsid").is_some(),
    )
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Where the users live, and copies of the binaries under test that they
/// can run (the build directory need not be open to other users).
struct Machine {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Machine {
    fn new() -> Self {
        // Short: the agents' socket paths live under it.
        let dir = tempfile::Builder::new()
            .prefix("kwtu-")
            .tempdir_in("/tmp")
            .unwrap();
        chmod(dir.path(), 0o755);
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        chmod(&bin, 0o755);
        for b in [keyward_bin(), agent_bin()] {
            let to = bin.join(b.file_name().unwrap());
            std::fs::copy(&b, &to).unwrap();
            chmod(&to, 0o755);
        }
        Self { dir, bin }
    }
}

/// A system user made for the test, with a keyward home of its own; the
/// user, its home and its agent are removed when dropped.
struct User {
    name: String,
    /// (uid, gid), once known.
    ids: Option<(u32, u32)>,
    home: PathBuf,
    paths: Paths,
    bin: PathBuf,
    scratch: PathBuf,
    env: Vec<(String, String)>,
}

fn id_of(name: &str, flag: &str) -> u32 {
    let out = Command::new("id").args([flag, name]).output().unwrap();
    assert!(out.status.success(), "id {flag} {name} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

impl User {
    fn create(machine: &Machine, name: String, env: Vec<(String, String)>) -> Self {
        let home = machine.dir.path().join(&name);
        let out = Command::new(find_program("useradd").unwrap())
            .args(["--create-home", "--shell", "/bin/sh", "--comment"])
            .arg("keyward e2e test user")
            .arg("--home-dir")
            .arg(&home)
            .arg(&name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "useradd {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kw = home.join("kw");
        let mut user = User {
            name,
            ids: None,
            paths: Paths::under(&kw),
            home,
            bin: machine.bin.clone(),
            scratch: machine.dir.path().to_owned(),
            env,
        };
        let (uid, gid) = (id_of(&user.name, "-u"), id_of(&user.name, "-g"));
        user.ids = Some((uid, gid));
        // The cheapest Argon2id a new account accepts, as for every e2e home.
        std::fs::create_dir_all(&user.paths.config_dir).unwrap();
        std::fs::write(user.paths.config_file(), FAST_KDF).unwrap();
        for p in [&kw, &user.paths.config_dir, &user.paths.config_file()] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        }
        chmod(&kw, 0o700);
        user
    }

    fn uid(&self) -> u32 {
        self.ids.unwrap().0
    }

    /// Gives the user a copy of `from` (as root would: copied, then chown'd
    /// to the user, mode 0600), in their home; its path.
    fn hand_over(&self, from: &Path, name: &str) -> PathBuf {
        let (uid, gid) = self.ids.unwrap();
        let to = self.home.join(name);
        std::fs::copy(from, &to).unwrap();
        std::os::unix::fs::chown(&to, Some(uid), Some(gid)).unwrap();
        chmod(&to, 0o600);
        to
    }

    /// Runs `keyward args…` as this user: a session of its own (no
    /// controlling terminal), a clean environment, `stdin` and an optional
    /// secret on fd 3 (opened by root before the switch, as a shell would).
    fn run(&self, args: &[&str], stdin: Option<&[u8]>, fd3: Option<&[u8]>) -> Run {
        let (uid, gid) = self.ids.unwrap();
        let secret = tempfile::NamedTempFile::new_in(&self.scratch).unwrap();
        let mut script = String::from(
            "exec setpriv --reuid=\"$KW_UID\" --regid=\"$KW_GID\" --init-groups -- env -i \"$@\"",
        );
        if let Some(s) = fd3 {
            std::fs::write(secret.path(), s).unwrap();
            script.push_str(" 3<\"$KW_FD3\"");
        }
        let mut vars = vec![
            format!("HOME={}", self.home.display()),
            format!("USER={}", self.name),
            format!("LOGNAME={}", self.name),
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
            "LC_ALL=C".to_owned(),
            format!("KEYWARD_HOME={}", self.home.join("kw").display()),
            format!("KEYWARD_AGENT={}", self.bin.join("keyward-agent").display()),
            "KEYWARD_PINENTRY=none".to_owned(),
        ];
        vars.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        let mut c = Command::new("setsid");
        c.arg("-w")
            .arg("sh")
            .arg("-c")
            .arg(&script)
            .arg("sh")
            .args(&vars)
            .arg(self.bin.join("keyward"))
            .args(args)
            .env("KW_UID", uid.to_string())
            .env("KW_GID", gid.to_string())
            .env("KW_FD3", secret.path())
            .current_dir(&self.home)
            .stdin(Stdio::null());
        let line = format!(
            "[as {}] keyward {}{}",
            self.name,
            args.join(" "),
            if fd3.is_some() { " 3<secret" } else { "" }
        );
        keyward_e2e::run_bounded(c, line, stdin, COMMAND_TIMEOUT)
    }

    fn ok(&self, args: &[&str]) -> Run {
        self.run(args, None, None).expect_code(0)
    }

    /// `init` with protector `file`: (account id, Secret Key).
    fn init(&self, password: &str) -> (String, String) {
        let j = self
            .run(
                &[
                    "init",
                    "--password-fd",
                    "3",
                    "--json",
                    "--allow-weak-password",
                    "--protector",
                    "file",
                ],
                None,
                Some(password.as_bytes()),
            )
            .expect_code(0)
            .json();
        (
            j["account_id"].as_str().unwrap().to_owned(),
            j["secret_key"].as_str().unwrap().to_owned(),
        )
    }

    fn vault_file(&self, account: &str) -> PathBuf {
        self.paths.data_dir.join(format!("vault-{account}.kwv"))
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.paths.log_file()).unwrap_or_default()
    }

    /// The user's running agent, by the pid in its lock file (only if that
    /// process is this user's).
    fn agent_pid(&self) -> Option<i32> {
        use std::os::unix::fs::MetadataExt;
        let pid: i32 = std::fs::read_to_string(self.paths.lock_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let meta = std::fs::metadata(format!("/proc/{pid}")).ok()?;
        (meta.uid() == self.uid()).then_some(pid)
    }
}

impl Drop for User {
    fn drop(&mut self) {
        if self.ids.is_some() {
            // The agent: politely, then by its pid.
            if self.agent_pid().is_some() {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.run(&["agent", "stop"], None, None)
                }));
            }
            let start = Instant::now();
            while let Some(pid) = self.agent_pid() {
                if start.elapsed() > Duration::from_secs(5) {
                    signal(pid, rustix::process::Signal::KILL);
                }
                if start.elapsed() > Duration::from_secs(10) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let userdel = || {
            Command::new(find_program("userdel").unwrap_or_else(|| "userdel".into()))
                .arg("--remove")
                .arg(&self.name)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !userdel() {
            // Still a process of the user, or a home not removed: force.
            let forced = Command::new(find_program("userdel").unwrap_or_else(|| "userdel".into()))
                .args(["--remove", "--force"])
                .arg(&self.name)
                .status();
            if !forced.is_ok_and(|s| s.success()) {
                eprintln!("could not remove the test user {}", self.name);
            }
        }
    }
}

/// The machine policy file naming the organizer (root's, 0644), and the
/// directories made for it; removed when dropped.
struct Policy {
    file: PathBuf,
    made: Vec<PathBuf>,
}

impl Policy {
    fn write(recipient: &str) -> Self {
        let mut made = Vec::new();
        for d in ["/etc/keyward", POLICY_DIR] {
            let d = PathBuf::from(d);
            if !d.exists() {
                std::fs::create_dir(&d).unwrap();
                chmod(&d, 0o755);
                made.push(d);
            }
        }
        let file = Path::new(POLICY_DIR).join(format!("test-{}.pub", std::process::id()));
        let policy = Policy { file, made };
        std::fs::write(
            &policy.file,
            format!(
                "# keyward e2e test (organizer_users.rs); removed when the test ends\n\
                 {recipient}\nname = \"Test organizer\"\nrequired = true\n"
            ),
        )
        .unwrap();
        chmod(&policy.file, 0o644);
        policy
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        for d in self.made.iter().rev() {
            // Only if empty: someone else's policy stays.
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Where the organizer key is.
enum KeyOn<'a> {
    Vault,
    Card(&'a PcscEnv),
}

/// The whole story between two users; see the module docs.
fn organizer_recovers_a_member(key_on: KeyOn<'_>) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let machine = Machine::new();
    let pid = std::process::id();
    let tag = match key_on {
        KeyOn::Vault => 'v',
        KeyOn::Card(_) => 'c',
    };
    let org_env = match &key_on {
        KeyOn::Vault => Vec::new(),
        KeyOn::Card(env) => env.pcsc_env(),
    };
    let org = User::create(&machine, format!("kwtorg{pid}{tag}"), org_env);
    let member = User::create(&machine, format!("kwtmem{pid}{tag}"), Vec::new());

    // 1. The organizer's key.
    let (org_account, _) = org.init(ORG_PW);
    let made = match key_on {
        KeyOn::Vault => org.ok(&["organizer", "create", "--json"]),
        KeyOn::Card(_) => org
            .run(
                &[
                    "organizer",
                    "create",
                    "--yubikey",
                    "--pin-fd",
                    "3",
                    "--json",
                ],
                None,
                Some(PIN.as_bytes()),
            )
            .expect_code(0),
    };
    let j = made.json();
    let recipient = j["recipient"].as_str().unwrap().to_owned();
    let fingerprint = j["fingerprint"].as_str().unwrap().to_owned();
    assert!(recipient.starts_with("kwo1-"), "{made}");
    let shown = org.ok(&["organizer", "show", "--json"]).json();
    assert_eq!(shown["recipient"], recipient.as_str());
    let org_file = vault::read(&org.vault_file(&org_account)).unwrap().vault;
    match key_on {
        KeyOn::Vault => {
            assert_eq!(j["location"], "vault", "{made}");
            assert!(org_file.organizers.key.is_some() && org_file.organizers.card.is_none());
        }
        KeyOn::Card(_) => {
            // On the card, in the first free retired slot; the vault keeps
            // only where it is (record 0x0a), never a private key.
            let at = format!("yubikey:{SERIAL}/82");
            assert_eq!(j["location"], at.as_str(), "{made}");
            assert_eq!(shown["location"], at.as_str());
            assert!(
                made.stderr.contains("factory default"),
                "the default PIN must be warned about\n{made}"
            );
            assert!(
                org_file.organizers.key.is_none(),
                "a private key in the vault"
            );
            let card = org_file.organizers.card.clone().unwrap();
            assert_eq!((card.serial, card.slot), (SERIAL, 0x82));
        }
    }

    // 2. The member, enrolled by the machine policy at `init`.
    let policy = Policy::write(&recipient);
    let (account, old_sk) = member.init(PW);
    // The policy is read at `init` only: gone as soon as it has been used.
    drop(policy);
    // Each user's own agent, and files.
    for (user, account) in [(&org, &org_account), (&member, &account)] {
        use std::os::unix::fs::MetadataExt;
        assert!(user.agent_pid().is_some(), "no agent runs as {}", user.name);
        let meta = std::fs::metadata(user.vault_file(account)).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (user.uid(), 0o600));
    }
    // (A machine may have policy files of its own: they enroll theirs too.)
    let list = member.ok(&["organizer", "list", "--json"]).json();
    let ours = list
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["fingerprint"] == fingerprint.as_str())
        .unwrap_or_else(|| panic!("not enrolled by the policy: {list}"));
    assert_eq!(ours["name"], "Test organizer");
    assert_eq!(ours["required"], true);
    let items = [("bank/pin", "4321"), ("mail", "hunter2"), ("empty", "")];
    for (name, value) in items {
        member
            .run(
                &["set", name, "--allow-empty"],
                Some(value.as_bytes()),
                None,
            )
            .expect_code(0);
    }
    let codes = member.ok(&["recovery-code", "list", "--json"]).json();
    assert_eq!(
        codes.as_array().unwrap().len(),
        0,
        "no recovery code: {codes}"
    );
    // The member forgets the password.
    member.ok(&["lock"]);

    // 3. A copy of the member's vault, handed to the organizer by root.
    let before = std::fs::read(member.vault_file(&account)).unwrap();
    let copy = org.hand_over(&member.vault_file(&account), "member.kwv");
    let out = org.home.join("grant.json");
    let recover = |extra: &[&str], fd3: Option<&str>| {
        let mut args = vec![
            "organizer",
            "recover",
            copy.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        org.run(&args, None, fd3.map(str::as_bytes))
    };
    let granted = match key_on {
        KeyOn::Vault => recover(&["--password-fd", "3"], Some(ORG_PW)),
        KeyOn::Card(_) => {
            let org_vault = std::fs::read(org.vault_file(&org_account)).unwrap();
            // From the attacker's side: a wrong PIN is refused by the card
            // and nothing is written; no PIN at all (no terminal), the same.
            let r = recover(&["--pin-fd", "3"], Some("654321")).expect_code(11);
            assert!(
                r.stderr.contains("wrong PIN") && r.stderr.contains("2 tries left"),
                "{r}"
            );
            recover(&[], None).expect_code(12);
            assert!(!out.exists(), "a grant was written without the PIN");
            assert_eq!(std::fs::read(&copy).unwrap(), before);
            assert_eq!(
                std::fs::read(org.vault_file(&org_account)).unwrap(),
                org_vault
            );
            assert!(
                org.agent_log().contains("wrong PIN"),
                "the organizer's agent logs the wrong PIN"
            );
            recover(&["--pin-fd", "3"], Some(PIN))
        }
    };
    let j = granted.expect_code(0).json();
    let code = j["code"].as_str().unwrap().to_owned();
    assert!(code.starts_with("GC1-"), "{j}");
    assert_eq!(j["path"], out.to_str().unwrap());
    assert!(
        !org.agent_log().contains(&code[4..]),
        "the code is in a log"
    );

    // 4. The grant, handed to the member by root; the code told by voice.
    let grant = member.hand_over(&out, "grant.json");
    let r = member
        .run(
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
        .expect_code(0);
    let new_sk = r.json()["secret_key"].as_str().unwrap().to_owned();
    assert!(new_sk.starts_with("K1-") && new_sk != old_sk, "{r}");
    for (name, value) in items {
        assert_eq!(member.ok(&["get", name]).stdout.trim_end(), value);
    }
    assert_eq!(
        member
            .ok(&["list", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        items.len()
    );
    // Still enrolled (required), with the same organizer.
    let list = member.ok(&["organizer", "list", "--json"]).json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|o| o["fingerprint"] == fingerprint.as_str()),
        "{list}"
    );
    // The old password is refused; the new one opens.
    member.ok(&["lock"]);
    member
        .run(&["unlock", "--password-fd", "3"], None, Some(PW.as_bytes()))
        .expect_code(6);
    member
        .run(
            &["unlock", "--password-fd", "3"],
            None,
            Some(NEW_PW.as_bytes()),
        )
        .expect_code(0);
    // The grant works once.
    member.ok(&["lock"]);
    let again = member.run(
        &[
            "recover",
            "--grant",
            grant.to_str().unwrap(),
            "--code-fd",
            "3",
            "--new-password-fd",
            "0",
            "--allow-weak-password",
        ],
        Some(format!("{NEW_PW}\n").as_bytes()),
        Some(code.as_bytes()),
    );
    let again = again.expect_code(9);
    assert!(again.stderr.contains("used already"), "{again}");
}

#[test]
fn an_organizer_key_in_the_vault_lets_another_user_back_in() {
    if !prerequisites() {
        return;
    }
    organizer_recovers_a_member(KeyOn::Vault);
}

#[test]
fn an_organizer_key_on_a_yubikey_lets_another_user_back_in() {
    if !prerequisites() {
        return;
    }
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let card = env.insert_card(CardConfig::new(SERIAL)).unwrap();
    // The organizer's agent reaches pcscd as that user: its socket's
    // directories must be open to others (the socket itself is 0777).
    for dir in [env.dir(), &env.dir().join("run")] {
        chmod(dir, 0o755);
    }
    organizer_recovers_a_member(KeyOn::Card(&env));
    drop(card);
}
