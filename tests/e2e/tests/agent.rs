#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The agent and the CLI end to end: real processes, a private home each.

use keyward_client::frame::{FrameBuf, write_frame};
use keyward_client::message::{ErrorCode, PROTOCOL_VERSION, Request, Response};
use keyward_e2e::{Home, Run, signal};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

const PW: &str = "correct horse battery staple";

#[test]
fn the_whole_story_init_unlock_set_get_lock_backoff() {
    let home = Home::new();
    let st = home.status();
    assert_eq!(st["state"], "uninitialized");

    let (account, sk) = home.init(PW);
    assert_eq!(account.len(), 6);
    assert!(sk.starts_with(&format!("K1-{account}-")), "{sk}");
    assert_eq!(home.status()["state"], "unlocked");

    home.run_with(&["set", "github/token"], Some(b"ghp_secret"), None)
        .expect_code(0);
    let got = home.ok(&["get", "github/token"]);
    assert_eq!(
        got.stdout, "ghp_secret",
        "get prints the value and nothing else"
    );
    assert!(home.ok(&["list"]).stdout.contains("github/token"));

    home.ok(&["lock"]);
    let locked = home.run(&["get", "github/token"]).expect_code(4);
    assert!(locked.stderr.contains("keyward unlock"), "{locked}");
    assert!(locked.stdout.is_empty());

    // Three free failures, then a doubling delay that refuses even the right
    // password. Fail (waiting out the shorter delays) until the delay is 4 s,
    // so that what follows happens inside it even on a loaded machine.
    for i in 0..3 {
        let r = home.unlock("wrong password").expect_code(6);
        assert!(
            r.stderr.contains("wrong Master Password or Secret Key")
                && r.stderr
                    .contains(if i == 1 { "1 more try " } else { "more tries" }),
            "attempt {i}: {r}"
        );
    }
    loop {
        let r = home.unlock("wrong password").expect_code(6);
        let wait = |marker: &str| {
            r.stderr
                .split(marker)
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
        };
        if let Some(n) = wait("try again in ") {
            std::thread::sleep(Duration::from_millis(n * 1000 + 100));
            continue;
        }
        assert!(
            r.stderr.contains("wrong Master Password or Secret Key"),
            "{r}"
        );
        let n = wait("next attempt accepted in ").expect("a counted failure gives its delay");
        if n >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(n * 1000 + 100));
    }
    let st = home.status();
    let left = st["backoff_seconds"].as_u64().unwrap();
    assert!(left >= 1, "{st}");
    let refused = home.unlock(PW).expect_code(6);
    assert!(
        refused.stderr.contains("too many failed attempts"),
        "{refused}"
    );
    std::thread::sleep(Duration::from_millis(left * 1000 + 1100));
    home.unlock(PW).expect_code(0);
    assert_eq!(home.ok(&["get", "github/token"]).stdout, "ghp_secret");
    assert_eq!(home.status()["backoff_seconds"], 0);
}

#[test]
fn backoff_survives_an_agent_restart() {
    let home = Home::new();
    home.init(PW);
    home.ok(&["lock"]);
    // Fail until the back-off is at least 8 s, waiting out the shorter
    // delays on the way: the restart below must happen well inside it even
    // on a loaded machine.
    let started = std::time::Instant::now();
    loop {
        assert!(started.elapsed().as_secs() < 60, "the back-off never grew");
        let r = home.unlock("nope").expect_code(6);
        // "next attempt accepted in N s" (counted) or "try again in N s"
        // (refused during the back-off).
        let Some(wait) = ["accepted in ", "try again in "].iter().find_map(|m| {
            r.stderr
                .split(m)
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
        }) else {
            continue; // one of the free failures
        };
        if wait >= 8 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(wait * 1000 + 100));
    }
    home.stop_agent();
    // A fresh agent (auto-started) still refuses.
    let r = home.unlock(PW).expect_code(6);
    assert!(r.stderr.contains("too many failed attempts"), "{r}");
}

#[test]
fn wrong_secret_key_and_wrong_password_look_the_same() {
    let home = Home::new();
    let (account, sk) = home.init(PW);
    home.ok(&["lock"]);
    let wrong_pw = home.unlock("not it").expect_code(6);
    // A well-formed Secret Key of the same account that is not the right one.
    let other = keyward_like_secret_key(&account);
    let wrong_sk = home
        .run_with(
            &["unlock", "--password-stdin", "--secret-key-fd", "3"],
            Some(PW.as_bytes()),
            Some(other.as_bytes()),
        )
        .expect_code(6);
    let first_line = |r: &Run| {
        r.stderr
            .lines()
            .next()
            .unwrap_or("")
            .split(" (")
            .next()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(first_line(&wrong_pw), first_line(&wrong_sk));
    // A typo is caught before any derivation and is not a failed attempt.
    let mut typo = sk.clone().into_bytes();
    let i = typo.len() - 3;
    typo[i] = if typo[i] == b'Q' { b'R' } else { b'Q' };
    let r = home
        .run_with(
            &["unlock", "--password-stdin", "--secret-key-fd", "3"],
            Some(PW.as_bytes()),
            Some(&typo),
        )
        .expect_code(9);
    assert!(r.stderr.contains("this Secret Key has a typo"), "{r}");
    // The real one, typed, works.
    home.run_with(
        &["unlock", "--password-stdin", "--secret-key-fd", "3"],
        Some(PW.as_bytes()),
        Some(sk.as_bytes()),
    )
    .expect_code(0);
    assert_eq!(home.status()["protector"], "none");
}

/// A valid Secret Key for `account` (right format and check symbol), random secret.
fn keyward_like_secret_key(account: &str) -> String {
    const A: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTVWXYZ";
    let cp = |c: u8| {
        if c == b'1' {
            1
        } else {
            A.iter().position(|&a| a == c).unwrap() as u32
        }
    };
    let mut s = format!("K1{account}").into_bytes();
    s.extend(std::iter::repeat_n(b'7', 26));
    let mut sum = 0;
    for (i, &c) in s.iter().rev().enumerate() {
        sum = (sum + if i % 2 == 0 { 2 } else { 1 } * cp(c)) % 31;
    }
    s.push(A[((31 - sum) % 31) as usize]);
    String::from_utf8(s).unwrap()
}

#[test]
fn idle_lock_fires_and_status_does_not_reset_it() {
    let home = Home::with_config("idle_lock_seconds = 2");
    home.init(PW);
    let start = std::time::Instant::now();
    // Poll status (which must not count as activity) until it locks.
    home.wait_for(Duration::from_secs(6), "the idle lock", || {
        home.status()["state"] == "locked"
    });
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "locked too early: {elapsed:?}"
    );
    // Activity does reset it.
    home.unlock(PW).expect_code(0);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(700));
        home.ok(&["list"]);
    }
    assert_eq!(
        home.status()["state"],
        "unlocked",
        "use kept it unlocked past the idle time"
    );
}

#[test]
fn absolute_lifetime_locks_even_when_busy() {
    let home = Home::with_config("lifetime_seconds = 2\nidle_lock_seconds = 60");
    home.init(PW);
    home.wait_for(Duration::from_secs(6), "the lifetime lock", || {
        let _ = home.run(&["list"]);
        home.status()["state"] == "locked"
    });
}

#[test]
fn sigusr1_locks_and_sigterm_stops_cleanly() {
    let home = Home::new();
    home.init(PW);
    let pid = home.agent_pid().expect("agent pid");
    signal(pid, rustix::process::Signal::USR1);
    home.wait_for(Duration::from_secs(5), "SIGUSR1 to lock", || {
        home.status()["state"] == "locked"
    });
    assert_eq!(
        home.agent_pid(),
        Some(pid),
        "SIGUSR1 must not stop the agent"
    );
    signal(pid, rustix::process::Signal::TERM);
    home.wait_for(Duration::from_secs(5), "SIGTERM to stop the agent", || {
        !home.paths.socket().exists()
    });
    let log = std::fs::read_to_string(home.paths.log_file()).unwrap();
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn a_second_agent_for_the_same_home_refuses_to_start() {
    let home = Home::new();
    home.ok(&["status"]); // auto-starts one
    let out = std::process::Command::new(keyward_e2e::agent_bin())
        .env("KEYWARD_HOME", home.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
}

#[test]
fn no_autostart_and_no_agent() {
    let home = Home::new();
    let r = home.run(&["--no-autostart", "get", "x"]).expect_code(3);
    assert!(r.stderr.contains("no keyward agent is running"), "{r}");
    assert!(home.agent_pid().is_none());
}

#[test]
fn init_twice_and_commands_without_an_account() {
    let home = Home::new();
    let r = home.run(&["get", "x"]).expect_code(5);
    assert!(r.stderr.contains("keyward init"), "{r}");
    home.unlock(PW).expect_code(5);
    home.init(PW);
    let r = home
        .run_with(&["init", "--password-fd", "3"], None, Some(b"other"))
        .expect_code(9);
    assert!(r.stderr.contains("already exists"), "{r}");
}

#[test]
fn another_user_is_refused_by_the_agent() {
    if !keyward_e2e::require(
        "setpriv and root (to run a client as uid 65534)",
        is_root() && has("setpriv"),
    ) {
        return;
    }
    let home = Home::new();
    home.init(PW);
    // Open the path to the socket so that uid 65534 can reach it at all: the
    // agent's own peer check is what must refuse it.
    use std::os::unix::fs::PermissionsExt;
    for d in [home.path(), &home.paths.runtime_dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(home.paths.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(keyward_e2e::keyward_bin())
        .args(["--no-autostart", "get", "x"])
        .env("KEYWARD_HOME", home.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("serves another user"), "{err}");
    let log = std::fs::read_to_string(home.paths.log_file()).unwrap();
    assert!(
        log.contains("refused a connection from another user") && log.contains("65534"),
        "{log}"
    );
    // The owner is still served.
    home.ok(&["list"]);
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn has(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn raw_connect(home: &Home) -> UnixStream {
    let s = UnixStream::connect(home.paths.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn hello(s: &mut UnixStream, buf: &mut FrameBuf) {
    write_frame(
        s,
        Request::Hello {
            protocol: PROTOCOL_VERSION,
            client: "raw test".into(),
        }
        .encode(),
    )
    .unwrap();
    let r = Response::decode(buf.read_frame(s).unwrap()).unwrap();
    assert!(matches!(r, Response::HelloOk { .. }), "{r:?}");
}

fn expect_error_then_close(s: &mut UnixStream, buf: &mut FrameBuf, code: ErrorCode) {
    match Response::decode(buf.read_frame(s).unwrap()).unwrap() {
        Response::Error(e) => assert_eq!(e.code, code, "{e:?}"),
        other => panic!("expected an error, got {other:?}"),
    }
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap(),
        0,
        "the agent closes the connection"
    );
}

#[test]
fn oversized_and_garbage_frames_get_errors_and_the_agent_carries_on() {
    let home = Home::new();
    home.init(PW);
    home.run_with(&["set", "k"], Some(b"v"), None)
        .expect_code(0);

    // Oversized: only the length is sent; the agent answers without reading more.
    let mut s = raw_connect(&home);
    let mut buf = FrameBuf::new();
    hello(&mut s, &mut buf);
    s.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
    expect_error_then_close(&mut s, &mut buf, ErrorCode::FrameTooLarge);

    // A well-framed but meaningless payload.
    let mut s = raw_connect(&home);
    let mut buf = FrameBuf::new();
    hello(&mut s, &mut buf);
    s.write_all(&[0, 0, 0, 5, 0x7e, 1, 2, 3, 4]).unwrap();
    expect_error_then_close(&mut s, &mut buf, ErrorCode::BadRequest);

    // Random bytes instead of a hello.
    let mut s = raw_connect(&home);
    let mut buf = FrameBuf::new();
    let mut noise = [0u8; 512];
    let mut x = 0x1234_5678_9abc_def0u64;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    noise[..4].copy_from_slice(&[0, 0, 1, 0]); // a 256-byte frame of noise
    s.write_all(&noise[..260]).unwrap();
    expect_error_then_close(&mut s, &mut buf, ErrorCode::BadRequest);

    // A request before the hello.
    let mut s = raw_connect(&home);
    let mut buf = FrameBuf::new();
    write_frame(&mut s, Request::Status.encode()).unwrap();
    expect_error_then_close(&mut s, &mut buf, ErrorCode::BadRequest);

    // A client that disconnects mid-request.
    let mut s = raw_connect(&home);
    let mut buf = FrameBuf::new();
    hello(&mut s, &mut buf);
    s.write_all(&[0, 0, 0, 50, 0x06]).unwrap();
    drop(s);

    // Everyone else is still served.
    assert_eq!(home.ok(&["get", "k"]).stdout, "v");
    assert!(home.agent_pid().is_some());
}

#[test]
fn two_hundred_concurrent_clients_all_get_correct_answers() {
    let home = Home::new();
    home.init(PW);
    let mut c = home.client();
    for i in 0..20 {
        c.set(&format!("item{i}"), format!("value-{i}")).unwrap();
    }
    let socket = home.paths.socket();
    let threads: Vec<_> = (0..200)
        .map(|t| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut c = keyward_client::Client::connect(&socket).unwrap();
                for k in 0..5 {
                    let i = (t + k) % 20;
                    let v = c.get(&format!("item{i}")).unwrap();
                    assert_eq!(v.expose(), format!("value-{i}").as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A fake agent that answers the handshake with another protocol version.
fn fake_agent(home: &Home, protocol: u16) -> std::thread::JoinHandle<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&home.paths.runtime_dir)
        .unwrap();
    let listener = UnixListener::bind(home.paths.socket()).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = FrameBuf::new();
        let _ = buf.read_frame(&mut s).unwrap();
        let hello = Response::HelloOk {
            protocol,
            agent_version: "9.9.9".into(),
            pid: 1,
        };
        write_frame(&mut s, hello.encode()).unwrap();
    })
}

#[test]
fn a_newer_or_older_agent_is_reported_with_how_to_restart_it() {
    for (protocol, word) in [(PROTOCOL_VERSION + 1, "newer"), (0, "older")] {
        let home = Home::new();
        let fake = fake_agent(&home, protocol);
        let r = home.run(&["--no-autostart", "status"]).expect_code(8);
        assert!(
            r.stderr.contains(word) && r.stderr.contains("restart"),
            "{r}"
        );
        assert!(r.stderr.contains("9.9.9"), "{r}");
        fake.join().unwrap();
    }
}

#[test]
fn status_json_fields_for_scripts() {
    let home = Home::new();
    home.init(PW);
    let st = home.status();
    assert_eq!(st["state"], "unlocked");
    assert_eq!(st["protector"], "file");
    assert!(st["seconds_to_auto_lock"].as_u64().unwrap() > 800);
    assert_eq!(st["keys_mlocked"], true);
    assert_eq!(st["account_id"].as_str().unwrap().len(), 6);
    home.ok(&["lock"]);
    let st = home.status();
    assert_eq!(st["state"], "locked");
    assert!(st["seconds_to_auto_lock"].is_null());
}

#[test]
fn change_password_keeps_the_secrets() {
    let home = Home::new();
    home.init(PW);
    home.run_with(&["set", "a"], Some(b"1"), None)
        .expect_code(0);
    home.run_with(
        &[
            "change-password",
            "--password-fd",
            "3",
            "--new-password-fd",
            "0",
        ],
        Some(b"brand new password\n"),
        Some(PW.as_bytes()),
    )
    .expect_code(0);
    home.ok(&["lock"]);
    home.unlock(PW).expect_code(6);
    home.unlock("brand new password").expect_code(0);
    assert_eq!(home.ok(&["get", "a"]).stdout, "1");
    // A wrong current password is refused and counted.
    let r = home
        .run_with(
            &[
                "change-password",
                "--password-fd",
                "3",
                "--new-password-fd",
                "0",
            ],
            Some(b"x\n"),
            Some(b"not the password"),
        )
        .expect_code(6);
    // Checked before the new password is read (issue 20: prompts in the
    // order that costs the user least).
    assert!(r.stderr.contains("wrong Master Password"), "{r}");
}

#[test]
fn items_edge_cases_through_the_cli() {
    let home = Home::new();
    home.init(PW);
    // Binary values survive byte for byte.
    let bin: Vec<u8> = (0..=255u8).collect();
    home.run_with(&["set", "bin"], Some(&bin), None)
        .expect_code(0);
    let out = home.command(&["get", "bin"]).output().unwrap();
    assert_eq!(out.stdout, bin);
    // Oversized values are refused with the limit named.
    let big = vec![b'x'; keyward_client::message::MAX_VALUE + 1];
    let r = home
        .run_with(&["set", "big"], Some(&big), None)
        .expect_code(9);
    assert!(r.stderr.contains("at most"), "{r}");
    // Bad names.
    let r = home
        .run_with(&["set", "a\tb"], Some(b"x"), None)
        .expect_code(9);
    assert!(r.stderr.contains("control characters"), "{r}");
    // Missing items.
    let r = home.run(&["get", "nope"]).expect_code(7);
    assert!(r.stderr.contains("keyward list"), "{r}");
    home.run(&["rm", "nope"]).expect_code(7);
    home.ok(&["rm", "bin"]);
    home.run(&["get", "bin"]).expect_code(7);
}

/// The client in docs/PROTOCOL.md, written from the document, runs against
/// the real agent.
#[test]
fn the_python_client_in_protocol_md_works() {
    if !keyward_e2e::require("python3", has("python3")) {
        return;
    }
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/PROTOCOL.md"
    ))
    .unwrap();
    let code = doc
        .split("```python\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let home = Home::new();
    home.init(PW);
    home.run_with(&["set", "github/token"], Some(b"ghp_secret"), None)
        .expect_code(0);
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(code)
        .env("KEYWARD_HOME", home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "b'ghp_secret'");
}

#[test]
fn help_completions_and_man_page() {
    let home = Home::new();
    let help = home.ok(&["--help"]);
    assert!(
        help.stdout.contains("Exit codes") && help.stdout.contains("unlock"),
        "{help}"
    );
    let bash = home.ok(&["completions", "bash"]);
    assert!(bash.stdout.contains("_keyward") && bash.stdout.contains("change-password"));
    let man = home.ok(&["manpage"]);
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH keyward"),
        "{}",
        &man.stdout[..200.min(man.stdout.len())]
    );
    assert!(
        home.agent_pid().is_none(),
        "help and completions must not start an agent"
    );
}
