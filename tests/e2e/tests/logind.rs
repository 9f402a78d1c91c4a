#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Locking on suspend and on screen lock: logind's signals, emitted on a
//! private bus that the test starts (the agent finds it through
//! DBUS_SYSTEM_BUS_ADDRESS, as it finds the real system bus otherwise).

use keyward_e2e::bus::{
    Bus, FakeSession, Sessions, emit_session_lock, fake_logind, fake_logind_inhibitors, private_bus,
};
use keyward_e2e::{Home, require};
use std::process::{Command, Stdio};
use std::time::Duration;

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn python_dbus() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import dbus"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Emits a logind signal on `bus`, owning org.freedesktop.login1 or not.
fn emit(bus: &Bus, own_name: bool, path: &str, iface: &str, member: &str, arg: Option<bool>) {
    let script = format!(
        r#"
import dbus, dbus.bus
bus = dbus.bus.BusConnection("{addr}")
if {own}:
    assert bus.request_name("org.freedesktop.login1") == 1
msg = dbus.lowlevel.SignalMessage("{path}", "{iface}", "{member}")
if {has_arg}:
    msg.append({arg}, signature="b")
bus.send_message(msg)
bus.flush()
"#,
        addr = bus.address,
        own = if own_name { "True" } else { "False" },
        path = path,
        iface = iface,
        member = member,
        has_arg = if arg.is_some() { "True" } else { "False" },
        arg = if arg == Some(true) { "True" } else { "False" },
    );
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates the account (password `pw`); the agent this auto-starts takes
/// `bus` as its system bus.
fn init_on_bus(home: &Home, bus: &Bus) {
    let mut init = home
        .command(&[
            "init",
            "--password-fd",
            "0",
            "--json",
            "--allow-weak-password",
        ])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .env_remove("XDG_SESSION_ID")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        init.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    }
    assert!(init.wait_with_output().unwrap().status.success());
}

#[test]
fn suspend_and_screen_lock_lock_the_agent_and_forged_signals_do_not() {
    if !require(
        "dbus-daemon and python3-dbus",
        has("dbus-daemon") && python_dbus(),
    ) {
        return;
    }
    let home = Home::new();
    let bus = private_bus(home.path(), false);
    // The agent is auto-started by this first command, with the private bus as its system bus.
    init_on_bus(&home, &bus);
    home.wait_for(Duration::from_secs(5), "the agent to watch logind", || {
        std::fs::read_to_string(home.paths.log_file()).is_ok_and(|l| l.contains("watching logind"))
    });
    assert_eq!(home.status()["state"], "unlocked");

    // A signal from someone who does not own org.freedesktop.login1 is ignored.
    emit(
        &bus,
        false,
        "/org/freedesktop/login1",
        "org.freedesktop.login1.Manager",
        "PrepareForSleep",
        Some(true),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        home.status()["state"],
        "unlocked",
        "a forged signal locked the agent"
    );

    // Waking up (PrepareForSleep(false)) does nothing; going to sleep locks.
    emit(
        &bus,
        true,
        "/org/freedesktop/login1",
        "org.freedesktop.login1.Manager",
        "PrepareForSleep",
        Some(false),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(home.status()["state"], "unlocked");
    emit(
        &bus,
        true,
        "/org/freedesktop/login1",
        "org.freedesktop.login1.Manager",
        "PrepareForSleep",
        Some(true),
    );
    home.wait_for(Duration::from_secs(5), "suspend to lock the agent", || {
        home.status()["state"] == "locked"
    });

    // The session's screen lock.
    home.unlock("pw").expect_code(0);
    emit(
        &bus,
        true,
        "/org/freedesktop/login1/session/_31",
        "org.freedesktop.login1.Session",
        "Lock",
        None,
    );
    home.wait_for(
        Duration::from_secs(5),
        "the screen lock to lock the agent",
        || home.status()["state"] == "locked",
    );
    let log = std::fs::read_to_string(home.paths.log_file()).unwrap();
    assert!(
        log.contains("suspend") && log.contains("screen lock"),
        "{log}"
    );
}

/// The agent holds a delay inhibitor for sleep, and lets it go once it has
/// locked on `PrepareForSleep(true)`: logind suspends only after the keys
/// are wiped. Awake again, it takes a new one.
#[test]
fn suspend_waits_until_the_agent_has_locked() {
    if !require("dbus-daemon", has("dbus-daemon")) {
        return;
    }
    let home = Home::new();
    let bus = private_bus(home.path(), false);
    let sessions = Sessions::default();
    let (logind, inhibitors) = fake_logind_inhibitors(&bus, &sessions, &[]);
    let taken = |n: usize| {
        home.wait_for(Duration::from_secs(5), "a sleep inhibitor", || {
            inhibitors.lock().unwrap().len() == n
        });
        let all = inhibitors.lock().unwrap();
        assert_eq!(
            (all[n - 1].0.as_str(), all[n - 1].1.as_str()),
            ("sleep", "delay")
        );
    };
    init_on_bus(&home, &bus);
    taken(1);
    assert_eq!(home.status()["state"], "unlocked");
    let sleep = |going: bool| {
        logind
            .emit_signal(
                None::<()>,
                "/org/freedesktop/login1",
                "org.freedesktop.login1.Manager",
                "PrepareForSleep",
                &(going,),
            )
            .unwrap();
    };
    // The read end sees end-of-file once the agent has closed its copy.
    let mut read = inhibitors.lock().unwrap().remove(0).2;
    let released = std::thread::spawn(move || {
        use std::io::Read;
        let mut rest = Vec::new();
        read.read_to_end(&mut rest).map(|_| rest.len())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !released.is_finished(),
        "the inhibitor went before any sleep"
    );
    sleep(true);
    home.wait_for(
        Duration::from_secs(5),
        "the inhibitor to be released",
        || released.is_finished(),
    );
    assert_eq!(released.join().unwrap().unwrap(), 0);
    assert_eq!(home.status()["state"], "locked");
    sleep(false);
    taken(1);
}

/// Outside a logind session (a systemd user service has no
/// XDG_SESSION_ID), the screen lock of any session of the agent's user
/// locks it; another user's does not.
#[test]
fn only_the_users_own_screen_locks_lock_an_agent_outside_a_session() {
    if !require("dbus-daemon", has("dbus-daemon")) {
        return;
    }
    let home = Home::new();
    let bus = private_bus(home.path(), false);
    let me = rustix::process::getuid().as_raw();
    let sessions: Sessions = std::sync::Arc::new(std::sync::Mutex::new(vec![
        FakeSession {
            id: "c7",
            uid: me + 1,
            class: "user",
            state: "active",
        },
        FakeSession {
            id: "c8",
            uid: me,
            class: "user",
            state: "active",
        },
    ]));
    let logind = fake_logind(&bus, &sessions, &["c7", "c8"]);
    init_on_bus(&home, &bus);
    home.wait_for(Duration::from_secs(5), "the agent to watch logind", || {
        std::fs::read_to_string(home.paths.log_file()).is_ok_and(|l| l.contains("watching logind"))
    });
    assert_eq!(home.status()["state"], "unlocked");
    emit_session_lock(&logind, "c7");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        home.status()["state"],
        "unlocked",
        "another user's screen lock locked the agent"
    );
    emit_session_lock(&logind, "c8");
    home.wait_for(
        Duration::from_secs(5),
        "the user's own screen lock to lock the agent",
        || home.status()["state"] == "locked",
    );
}

// ------------------------------------------------ SessionEnd (lock_on_close)

#[test]
fn a_session_end_locks_only_when_the_users_last_session_ends() {
    if !require("dbus-daemon", has("dbus-daemon")) {
        return;
    }
    let home = Home::new();
    let bus = private_bus(home.path(), false);
    let me = rustix::process::getuid().as_raw();
    let session = |id, uid, class, state| FakeSession {
        id,
        uid,
        class,
        state,
    };
    let sessions: Sessions = std::sync::Arc::new(std::sync::Mutex::new(vec![
        // The session that ends, still listed as active (pam_keyward may run
        // before pam_systemd has released it).
        session("c1", me, "user", "active"),
        session("c2", me, "user", "active"),
        // Neither counts: another user's session, the user manager's own.
        session("c3", me + 1, "user", "active"),
        session("c4", me, "manager", "active"),
    ]));
    let logind = fake_logind(&bus, &sessions, &["c1", "c2", "c3", "c4"]);
    let set_state = |id: &str, state: &'static str| {
        let mut all = sessions.lock().unwrap();
        all.iter_mut().find(|s| s.id == id).unwrap().state = state;
    };
    init_on_bus(&home, &bus);
    assert_eq!(home.status()["state"], "unlocked");

    // Another session of the user is open: stay unlocked, and say which.
    let kept = home.client().session_end(Some("c1")).unwrap();
    assert_eq!(kept, Some(vec!["c2".to_owned()]));
    assert_eq!(home.status()["state"], "unlocked");

    // A session that is merely online (not in front) still counts.
    set_state("c2", "online");
    assert_eq!(
        home.client().session_end(Some("c1")).unwrap(),
        Some(vec!["c2".to_owned()])
    );

    // Without the ending session's id, every user session counts.
    set_state("c2", "closing");
    assert_eq!(
        home.client().session_end(None).unwrap(),
        Some(vec!["c1".to_owned()])
    );
    assert_eq!(home.status()["state"], "unlocked");

    // The other session is closing too: this was the last one, lock.
    assert_eq!(home.client().session_end(Some("c1")).unwrap(), None);
    assert_eq!(home.status()["state"], "locked");

    // The other session gone from the list altogether: lock.
    home.unlock("pw").expect_code(0);
    sessions.lock().unwrap().retain(|s| s.id != "c2");
    assert_eq!(home.client().session_end(Some("c1")).unwrap(), None);
    assert_eq!(home.status()["state"], "locked");

    // logind does not answer (nobody owns its name): lock, rather than
    // leave the agent open on a guess.
    home.unlock("pw").expect_code(0);
    sessions
        .lock()
        .unwrap()
        .push(session("c5", me, "user", "active"));
    drop(logind);
    assert_eq!(home.client().session_end(Some("c1")).unwrap(), None);
    assert_eq!(home.status()["state"], "locked");
    let log = std::fs::read_to_string(home.paths.log_file()).unwrap();
    assert!(
        log.contains("staying unlocked") && log.contains("cannot ask logind"),
        "{log}"
    );
}
