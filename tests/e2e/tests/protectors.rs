#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Secret Key on this device, kept by YubiKeys (pcscd + virtual cards in a
//! private network namespace) and by the OS keychain (gnome-keyring on a
//! private D-Bus), through the real CLI and agent.

use keyward_e2e::{Home, require};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use virtual_yubikey::harness::{CardConfig, PcscEnv};

const PW: &str = "correct horse battery staple";
const PIN: &str = "123456";

fn add_yubikey(home: &Home, serial: Option<u32>, pin: &str) -> keyward_e2e::Run {
    let serial = serial.map(|s| s.to_string());
    let mut args = vec![
        "protector",
        "add",
        "yubikey",
        "--pin-fd",
        "3",
        "--json",
        "--password-stdin",
    ];
    if let Some(s) = &serial {
        args.extend(["--serial", s]);
    }
    home.run_with(&args, Some(PW.as_bytes()), Some(pin.as_bytes()))
}

fn unlock_with_pin(home: &Home, pin: &str, with: Option<&str>) -> keyward_e2e::Run {
    let mut args = vec!["unlock", "--password-stdin", "--pin-fd", "3"];
    if let Some(w) = with {
        args.extend(["--with", w]);
    }
    home.run_with(&args, Some(PW.as_bytes()), Some(pin.as_bytes()))
}

#[test]
fn yubikeys_enroll_unlock_wrong_pin_blocked_removed_and_two_cards() {
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let card = env
        .insert_card(CardConfig::new(11_111_111).version(virtual_yubikey::state::Version(5, 4, 3)))
        .unwrap();
    let home = Home::new();
    home.set_env(env.pcsc_env());
    home.init(PW);

    // Enroll: the default PIN and management key are not kept silently.
    let r = add_yubikey(&home, None, PIN).expect_code(0);
    let j = r.json();
    assert_eq!(j["id"], "yubikey:11111111:82");
    let notes = j["notes"].to_string();
    assert!(
        notes.contains("WARNING"),
        "factory defaults must be warned about: {notes}"
    );
    let list = home.ok(&["protector", "list", "--json"]).json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["yubikey:11111111:82", "file"]);

    // The YubiKey is tried first: PIN, ECDH on the card, unlocked.
    home.ok(&["lock"]);
    let r = unlock_with_pin(&home, PIN, None).expect_code(0);
    assert!(
        r.stderr.contains("Secret Key from yubikey:11111111:82"),
        "{r}"
    );
    let used = home.ok(&["protector", "list", "--json"]).json();
    assert!(used[0]["last_used"].as_u64().is_some(), "{used}");

    // Wrong PINs: the tries left go down, then the PIN is blocked and the
    // file protector still opens it (with a notice about the PUK).
    home.ok(&["lock"]);
    let r = unlock_with_pin(&home, "000000", None).expect_code(11);
    assert!(r.stderr.contains("2 tries left"), "{r}");
    let r = unlock_with_pin(&home, "000000", None).expect_code(11);
    assert!(
        r.stderr.contains("1 tries left") || r.stderr.contains("1 try"),
        "{r}"
    );
    // The third wrong PIN blocks it; the file protector still opens the vault.
    let r = unlock_with_pin(&home, "000000", None).expect_code(0);
    assert!(
        r.stderr.contains("blocked") && r.stderr.contains("PUK"),
        "{r}"
    );
    assert!(r.stderr.contains("Secret Key from file"), "{r}");
    home.ok(&["lock"]);
    let r = unlock_with_pin(&home, PIN, None).expect_code(0);
    assert!(
        r.stderr.contains("blocked"),
        "a blocked card is reported, not tried: {r}"
    );
    // Only --with yubikey: the blocked PIN is the error.
    home.ok(&["lock"]);
    let r = unlock_with_pin(&home, PIN, Some("yubikey")).expect_code(11);
    assert!(
        r.stderr.contains("blocked") && r.stderr.contains("PUK"),
        "{r}"
    );
    let unblock = env
        .command("yubico-piv-tool")
        .args([
            "-r",
            &card.reader_name(),
            "-a",
            "unblock-pin",
            "-P",
            "12345678",
            "-N",
            PIN,
        ])
        .output()
        .unwrap();
    assert!(
        unblock.status.success(),
        "{}",
        String::from_utf8_lossy(&unblock.stderr)
    );
    unlock_with_pin(&home, PIN, Some("yubikey:11111111")).expect_code(0);

    // Card removed: the other protector is used, and the user is told which card to insert.
    home.ok(&["lock"]);
    card.remove().unwrap();
    let r = unlock_with_pin(&home, PIN, None).expect_code(0);
    assert!(
        r.stderr.contains("11111111") && r.stderr.contains("not inserted"),
        "{r}"
    );
    assert!(r.stderr.contains("Secret Key from file"), "{r}");

    // Two cards with different serials.
    let a = env
        .insert_card(CardConfig::new(11_111_111).reader(0))
        .unwrap();
    let b = env
        .insert_card(CardConfig::new(22_222_222).reader(1))
        .unwrap();
    let r = add_yubikey(&home, None, PIN).expect_code(11);
    assert!(
        r.stderr.contains("several YubiKeys") && r.stderr.contains("22222222"),
        "{r}"
    );
    // (the re-inserted 11111111 is a fresh card: its enrolled key is gone)
    let r = add_yubikey(&home, Some(22_222_222), PIN).expect_code(0);
    assert_eq!(r.json()["id"], "yubikey:22222222:82");
    home.ok(&["lock"]);
    let r = unlock_with_pin(&home, PIN, Some("yubikey:22222222")).expect_code(0);
    assert!(
        r.stderr.contains("Secret Key from yubikey:22222222:82"),
        "{r}"
    );

    // Without the file protector and without the card, the vault file alone
    // does not open: the Secret Key is sealed for the card.
    home.ok_pw(&["protector", "remove", "file"], PW);
    home.ok_pw(&["protector", "remove", "yubikey:11111111:82"], PW);
    home.ok(&["lock"]);
    drop(b);
    drop(a);
    let r = unlock_with_pin(&home, PIN, None).expect_code(11);
    assert!(
        r.stderr.contains("22222222") && r.stderr.contains("Secret Key"),
        "{r}"
    );
    let vault = std::fs::read(home.paths.data_dir.join(format!(
        "vault-{}.kwv",
        home.status()["account_id"].as_str().unwrap()
    )))
    .unwrap();
    let sk_files = [&home.paths.data_dir, &home.paths.state_dir]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("secret-key-")
        })
        .count();
    assert_eq!(sk_files, 0, "the file protector's file is gone");
    assert!(
        !vault.windows(3).any(|w| w == b"K1-"),
        "no Secret Key in clear in the vault"
    );
}

#[test]
fn touch_policy_is_announced_to_the_user() {
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let card = env
        .insert_card(CardConfig::new(33_333_333).touch_timeout(Duration::from_secs(15)))
        .unwrap();
    let home = Home::new();
    home.set_env(env.pcsc_env());
    home.init(PW);
    home.run_with(
        &[
            "protector",
            "add",
            "yubikey",
            "--touch",
            "always",
            "--pin-fd",
            "3",
            "--password-stdin",
        ],
        Some(PW.as_bytes()),
        Some(PIN.as_bytes()),
    )
    .expect_code(0);
    home.ok(&["lock"]);
    // Touch the card as soon as it asks.
    let t = std::thread::spawn(move || {
        card.wait_for_touch_request(1, Duration::from_secs(20))
            .unwrap();
        card.touch().unwrap();
        card
    });
    let r = unlock_with_pin(&home, PIN, Some("yubikey")).expect_code(0);
    assert!(r.stderr.contains("Touch your YubiKey"), "{r}");
    drop(t.join().unwrap());
}

// ------------------------------------------------------------------ keychain

struct Keyring {
    bus: keyward_e2e::bus::Bus,
    daemon: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Keyring {
    fn drop(&mut self) {
        // The daemon first; the bus stops when it is dropped.
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A private session bus with an unlocked gnome-keyring (fresh data dir).
fn keyring() -> Keyring {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::DirBuilderExt;
    for d in ["run", "data"] {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.path().join(d))
            .unwrap();
    }
    let bus = keyward_e2e::bus::private_bus(&dir.path().join("run"), false);
    let address = bus.address.clone();
    let mut daemon = Command::new("gnome-keyring-daemon")
        .args(["--foreground", "--unlock", "--components=secrets"])
        .env("DBUS_SESSION_BUS_ADDRESS", &address)
        .env("XDG_RUNTIME_DIR", dir.path().join("run"))
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = daemon.stdin.take().unwrap();
        stdin.write_all(b"keyring-login-password").unwrap();
    }
    let start = Instant::now();
    loop {
        let out = Command::new("dbus-send")
            .args([
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
            ])
            .args([
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.secrets",
            ])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("boolean true") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "gnome-keyring did not come up"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    Keyring {
        bus,
        daemon,
        _dir: dir,
    }
}

#[test]
fn the_keychain_keeps_the_secret_key_and_says_clearly_when_it_cannot() {
    let tools = has("dbus-daemon") && has("gnome-keyring-daemon") && has("dbus-send");
    if !require("dbus-daemon, gnome-keyring and dbus-send", tools) {
        return;
    }
    let kr = keyring();
    let home = Home::new();
    home.set_env([(
        "DBUS_SESSION_BUS_ADDRESS".to_owned(),
        kr.bus.address.clone(),
    )]);
    // `init` picks the best protector available: the keychain here.
    let r = home
        .run_with(
            &["init", "--password-fd", "3", "--json"],
            None,
            Some(PW.as_bytes()),
        )
        .expect_code(0);
    assert_eq!(r.json()["protector"], "keychain");
    home.run_with(&["set", "k"], Some(b"v"), None)
        .expect_code(0);
    home.ok(&["lock"]);
    // Unlock with only the Master Password: the Secret Key comes from the keychain.
    let r = home.unlock(PW).expect_code(0);
    assert!(r.stderr.contains("Secret Key from keychain"), "{r}");
    assert_eq!(home.ok(&["get", "k"]).stdout, "v");
    let list = home.ok(&["protector", "list"]).stdout;
    assert!(
        list.contains("keychain") && list.contains("OS keychain"),
        "{list}"
    );

    // Locked keychain: a clear error, quickly, never a hang.
    home.ok(&["lock"]);
    let lock = Command::new("dbus-send")
        .args([
            "--print-reply",
            "--dest=org.freedesktop.secrets",
            "/org/freedesktop/secrets",
        ])
        .args([
            "org.freedesktop.Secret.Service.Lock",
            "array:objpath:/org/freedesktop/secrets/collection/login",
        ])
        .env("DBUS_SESSION_BUS_ADDRESS", &kr.bus.address)
        .output()
        .unwrap();
    assert!(
        lock.status.success(),
        "{}",
        String::from_utf8_lossy(&lock.stderr)
    );
    let start = Instant::now();
    let r = home.unlock(PW).expect_code(11);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        r.stderr.contains("keychain") && r.stderr.contains("locked"),
        "{r}"
    );

    // No keychain at all (the bus is gone): also clear, also quick.
    home.stop_agent();
    drop(kr);
    let start = Instant::now();
    let r = home.unlock(PW).expect_code(11);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    assert!(r.stderr.contains("no OS keychain answered"), "{r}");
    // And without a keychain, a new account falls back to a file, and says so.
    let other = Home::new();
    let r = other
        .run_with(
            &["init", "--password-fd", "3", "--json"],
            None,
            Some(PW.as_bytes()),
        )
        .expect_code(0);
    assert_eq!(r.json()["protector"], "file");
}
