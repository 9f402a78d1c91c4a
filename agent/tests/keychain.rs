#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The keychain protector against a real Secret Service: gnome-keyring on a
//! private D-Bus session (TEST-SERVICES.md), and against no bus and a bus
//! that never answers.
//!
//! The `keyring` crate finds the bus through `DBUS_SESSION_BUS_ADDRESS`, read
//! when it first connects, and a test cannot set variables in its own
//! process. So each parent test (`#[test]`) runs an `#[ignore]`d child test
//! (`child_*`) of this binary in a new process with the environment it needs:
//! under `dbus-run-session` with a fresh, unlocked gnome-keyring, or pointed
//! at a bus that does not exist or does not answer. No test ever reaches the
//! keychain of the user who runs the tests.
//!
//! The gnome-keyring test is skipped (or fails, with
//! `KEYWARD_REQUIRE_SERVICES=1`) when its packages are missing; the others
//! need nothing.

use keyward_agent::account::AccountId;
use keyward_agent::account::secret_key::SecretKey;
use keyward_agent::protect::keychain::{
    KeychainProtector, SERVICE, keychain_available, keychain_available_within,
};
use keyward_agent::protect::{NoIo, Protector, ProtectorError, Store};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use virtual_yubikey::harness::{self, CHILD_VAR, child_var};

/// Debian packages of the Secret Service test (`--no-install-recommends`:
/// plain gnome-keyring pulls libpam-gnome-keyring, which rewrites /etc/pam.d).
const PACKAGES: &[&str] = &["dbus", "dbus-bin", "gnome-keyring", "libsecret-tools"];
/// Every keychain call returns within its timeout (5 s) and some slack.
const BOUND: Duration = Duration::from_secs(7);
/// A child that takes longer than this is killed and fails its parent.
const CHILD_DEADLINE: Duration = Duration::from_secs(90);

// ------------------------------------------------------------------ helpers

/// Runs `f`, checks it returned within `bound`, and gives its result.
fn timed<T>(what: &str, bound: Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    assert!(took < bound, "{what} took {took:?} (bound {bound:?})");
    out
}

fn unavailable<T>(r: Result<T, ProtectorError>) -> String {
    match r {
        Err(ProtectorError::Unavailable(m)) => m,
        Err(e) => panic!("expected unavailable, got {e:?}"),
        Ok(_) => panic!("expected unavailable, got a result"),
    }
}

/// Runs child test `name` through `cmd` (which must end by executing this
/// test binary with the arguments it is given); fails unless it ran and
/// passed. Output goes to files, so the wait can be bounded.
fn run_child(mut cmd: Command, dir: &Path, name: &str) {
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD_VAR, "1")
    .env_remove("DISPLAY")
    .env_remove("WAYLAND_DISPLAY")
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(dir.join("child.out")).unwrap())
    .stderr(std::fs::File::create(dir.join("child.err")).unwrap());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + CHILD_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child test {name} did not finish within {CHILD_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = std::fs::read_to_string(dir.join("child.out")).unwrap_or_default();
    let err = std::fs::read_to_string(dir.join("child.err")).unwrap_or_default();
    assert!(
        status.success() && out.contains("1 passed"),
        "child test {name} failed ({status}):\n--- stdout\n{out}\n--- stderr\n{err}"
    );
}

fn this_test_binary() -> std::path::PathBuf {
    std::env::current_exe().unwrap()
}

/// A child with no session bus at `DBUS_SESSION_BUS_ADDRESS` (`socket`, which
/// the child may create itself).
fn direct_child(dir: &Path, socket: &Path) -> Command {
    let mut cmd = Command::new(this_test_binary());
    cmd.env(
        "DBUS_SESSION_BUS_ADDRESS",
        format!("unix:path={}", socket.display()),
    )
    .env("XDG_RUNTIME_DIR", dir)
    .env("KW_SOCKET", socket);
    cmd
}

/// Whether the Secret Service test can run; reports a skip (or fails).
fn secret_service_available() -> bool {
    if let Err(e) = harness::ensure_packages(PACKAGES) {
        harness::skip_or_fail(&e);
        return false;
    }
    for program in [
        "dbus-run-session",
        "dbus-send",
        "gnome-keyring-daemon",
        "secret-tool",
    ] {
        if harness::find_program(program).is_none() {
            harness::skip_or_fail(&format!("{program} is not on PATH"));
            return false;
        }
    }
    true
}

/// Runs in `dbus-run-session`: starts gnome-keyring unlocked (secrets only),
/// waits until it owns its bus name, then runs the test binary. The daemon
/// exits with the bus when the session ends.
const SESSION_SCRIPT: &str = r#"
printf %s "$KW_KEYRING_PASSWORD" | gnome-keyring-daemon --unlock --components=secrets >/dev/null || exit 96
i=0
until dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q 'boolean true'; do
    i=$((i + 1))
    if [ "$i" -gt 400 ]; then echo 'the Secret Service did not come up' >&2; exit 97; fi
    sleep 0.025
done
exec "$@"
"#;

// --------------------------------------------------- a real Secret Service

#[test]
fn secret_service_store_fetch_erase_missing_and_locked() {
    if !secret_service_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (run, data) = (dir.path().join("run"), dir.path().join("data"));
    for d in [&run, &data] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    }
    let mut cmd = Command::new(harness::find_program("dbus-run-session").unwrap());
    cmd.args(["--", "sh", "-c", SESSION_SCRIPT, "sh"])
        .arg(this_test_binary())
        .env("XDG_RUNTIME_DIR", &run)
        .env("XDG_DATA_HOME", &data)
        .env("KW_KEYRING_PASSWORD", "keyward-test-login-password")
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    run_child(cmd, dir.path(), "child_secret_service");
}

fn secret_tool(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new("secret-tool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(text) = input {
        std::io::Write::write_all(&mut stdin, text.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "secret-tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "child of secret_service_store_fetch_erase_missing_and_locked"]
fn child_secret_service() {
    if child_var("DBUS_SESSION_BUS_ADDRESS").is_none() {
        return;
    }
    timed("keychain_available", BOUND, keychain_available).unwrap();

    let id = AccountId::generate().unwrap();
    let p = KeychainProtector::new(id);
    // No entry yet: unavailable (the agent goes on to other protectors).
    let m = unavailable(timed("fetch", BOUND, || p.fetch(&NoIo)));
    assert!(
        m.contains(&format!("holds no Secret Key for account {id}")),
        "{m}"
    );

    // Store, fetch back; the entry is what other tools see: service
    // `keyward`, user = account ID, the Secret Key in display form.
    let sk = SecretKey::generate(&id).unwrap();
    timed("store", BOUND, || p.store(&sk)).unwrap();
    let got = timed("fetch", BOUND, || p.fetch(&NoIo)).unwrap();
    assert_eq!(got.expose_compact(), sk.expose_compact());
    let user = id.to_string();
    let seen = secret_tool(&["lookup", "service", SERVICE, "username", &user], None);
    assert_eq!(seen, sk.display().expose());
    assert!(seen.contains('-'));
    // Labelled for people (issue 20: it read `keyring:ID@keyward`).
    let found = secret_tool(&["search", "service", SERVICE, "username", &user], None);
    assert!(
        found.contains(&format!("label = keyward Secret Key (account {id})")),
        "{found}"
    );

    // Storing again replaces the entry (rotation).
    let sk2 = SecretKey::generate(&id).unwrap();
    timed("store", BOUND, || p.store(&sk2)).unwrap();
    let got = timed("fetch", BOUND, || p.fetch(&NoIo)).unwrap();
    assert_eq!(got.expose_compact(), sk2.expose_compact());

    // Entries of other accounts are separate; damaged or foreign ones are
    // refused without echoing their contents.
    let other = AccountId::generate().unwrap();
    let po = KeychainProtector::new(other);
    unavailable(po.fetch(&NoIo));
    let other_user = other.to_string();
    let store_as_other = |text: &str| {
        secret_tool(
            &[
                "store",
                "--label=test",
                "service",
                SERVICE,
                "username",
                &other_user,
            ],
            Some(text),
        )
    };
    store_as_other("not a secret key at all");
    match po.fetch(&NoIo) {
        Err(ProtectorError::Failed(m)) => {
            assert!(m.contains("does not hold a valid Secret Key"), "{m}");
            assert!(!m.contains("not a secret key at all"), "{m}");
        }
        r => panic!("expected a failure, got {:?}", r.map(|_| ())),
    }
    store_as_other(sk.display().expose());
    match po.fetch(&NoIo) {
        Err(ProtectorError::Failed(m)) => {
            assert!(
                m.contains(&format!("holds the Secret Key of account {id}")),
                "{m}"
            );
        }
        r => panic!("expected a failure, got {:?}", r.map(|_| ())),
    }
    po.erase().unwrap();

    // Erase; erasing twice is fine.
    timed("erase", BOUND, || p.erase()).unwrap();
    unavailable(p.fetch(&NoIo));
    timed("erase", BOUND, || p.erase()).unwrap();

    // Locked: a clear error, within the bound (gnome-keyring cannot show its
    // unlock prompt here, as on a headless machine).
    p.store(&sk).unwrap();
    let out = Command::new("dbus-send")
        .args([
            "--session",
            "--print-reply",
            "--dest=org.freedesktop.secrets",
            "/org/freedesktop/secrets",
            "org.freedesktop.Secret.Service.Lock",
            "array:objpath:/org/freedesktop/secrets/collection/login",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = unavailable(timed("fetch (locked)", BOUND, || p.fetch(&NoIo)));
    eprintln!("locked: {m}");
    assert!(m.starts_with("the OS keychain is locked"), "{m}");
    let m = unavailable(timed("store (locked)", BOUND, || p.store(&sk2)));
    assert!(m.starts_with("the OS keychain is locked"), "{m}");
    // Locked is still reachable: the lock shows on use.
    timed("keychain_available", BOUND, keychain_available).unwrap();
}

// ------------------------------------------------------------------- no bus

#[test]
fn no_keychain_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = direct_child(dir.path(), &dir.path().join("no-bus-here"));
    run_child(cmd, dir.path(), "child_no_bus");
}

#[test]
#[ignore = "child of no_keychain_is_a_clear_error"]
fn child_no_bus() {
    if child_var("KW_SOCKET").is_none() {
        return;
    }
    let e = timed("keychain_available", BOUND, keychain_available).unwrap_err();
    eprintln!("no bus: {e}");
    assert!(e.starts_with("no OS keychain answered"), "{e}");
    let id = AccountId::generate().unwrap();
    let p = KeychainProtector::new(id);
    let m = unavailable(timed("fetch", BOUND, || p.fetch(&NoIo)));
    assert!(m.starts_with("no OS keychain answered"), "{m}");
    let sk = SecretKey::generate(&id).unwrap();
    let m = unavailable(timed("store", BOUND, || p.store(&sk)));
    assert!(m.starts_with("no OS keychain answered"), "{m}");
    let m = unavailable(timed("erase", BOUND, || p.erase()));
    assert!(m.starts_with("no OS keychain answered"), "{m}");
}

// ------------------------------------------------ a bus that never answers

#[test]
fn a_keychain_that_never_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = direct_child(dir.path(), &dir.path().join("silent-bus"));
    run_child(cmd, dir.path(), "child_silent_bus");
}

#[test]
#[ignore = "child of a_keychain_that_never_answers_times_out"]
fn child_silent_bus() {
    let Some(socket) = child_var("KW_SOCKET") else {
        return;
    };
    // A "bus" that accepts connections and never says a word.
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let id = AccountId::generate().unwrap();
    let timeout = Duration::from_secs(1);
    let p = KeychainProtector::new(id).with_timeout(timeout);
    let start = Instant::now();
    let m = unavailable(p.fetch(&NoIo));
    let took = start.elapsed();
    eprintln!("silent bus: {m} ({took:?})");
    assert!(m.contains("did not answer within 1 s"), "{m}");
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(2),
        "{took:?}"
    );
    // The hung call is still out there: the next calls fail at once.
    let sk = SecretKey::generate(&id).unwrap();
    let m = unavailable(timed("store", Duration::from_millis(500), || p.store(&sk)));
    assert!(m.contains("has not answered an earlier request"), "{m}");
    let e = timed(
        "keychain_available_within",
        Duration::from_millis(500),
        || keychain_available_within(timeout),
    )
    .unwrap_err();
    assert!(e.contains("has not answered an earlier request"), "{e}");
}
