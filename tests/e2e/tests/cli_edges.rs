#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The CLI against a real agent: long listings (sent in several frames),
//! `init` whose Emergency Kit cannot be written, and `set` with an empty
//! standard input.

use keyward_client::frame::{FrameBuf, MAX_FRAME, write_frame};
use keyward_client::message::{MAX_NAME, PROTOCOL_VERSION, Request, Response, tag};
use keyward_e2e::Home;
use std::collections::BTreeSet;
use std::os::unix::net::UnixStream;

const PW: &str = "correct horse battery staple";

/// Item names of exactly `MAX_NAME` (256) bytes.
fn long_name(i: usize) -> String {
    let prefix = format!("team-{i:05}/");
    format!("{prefix}{}", "x".repeat(MAX_NAME - prefix.len()))
}

/// A raw connection to the agent at `socket`, past `Hello`.
fn greeted(socket: &std::path::Path) -> (UnixStream, FrameBuf) {
    let mut s = UnixStream::connect(socket).unwrap();
    let mut buf = FrameBuf::new();
    let hello = Request::Hello {
        protocol: PROTOCOL_VERSION,
        client: "cli_edges".into(),
    };
    write_frame(&mut s, hello.encode()).unwrap();
    assert!(matches!(
        Response::decode(buf.read_frame(&mut s).unwrap()).unwrap(),
        Response::HelloOk { .. }
    ));
    (s, buf)
}

#[test]
fn list_prints_thousands_of_items_with_long_names() {
    const N: usize = 2000;
    let home = Home::new();
    home.init(PW);
    let names: BTreeSet<String> = (0..N).map(long_name).collect();
    let mut c = home.client();
    for name in &names {
        c.set(name, "v").unwrap();
    }
    drop(c);

    // The CLI prints every name, one a line.
    let r = home.ok(&["list"]);
    let printed: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(printed.len(), N, "{} lines", printed.len());
    let printed: BTreeSet<String> = printed.into_iter().map(str::to_owned).collect();
    assert_eq!(printed, names);
    let j = home.ok(&["list", "--json"]).json();
    assert_eq!(j.as_array().unwrap().len(), N);

    // On the wire the answer is several frames, each within the cap: parts,
    // then the final `Items`, sent by the agent as they were encoded.
    let (mut s, mut buf) = greeted(&home.paths.socket());
    write_frame(&mut s, Request::List.encode()).unwrap();
    let mut parts = 0;
    let mut seen = 0;
    loop {
        let payload = buf.read_frame(&mut s).unwrap();
        assert!(payload.len() <= MAX_FRAME);
        match Response::decode(payload).unwrap() {
            Response::ItemsPart(v) => {
                assert_eq!(payload[0], tag::ITEMS_PART);
                parts += 1;
                seen += v.len();
            }
            Response::Items(v) => {
                seen += v.len();
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(parts >= 2, "{parts} parts");
    assert_eq!(seen, N);
    // The same connection still serves.
    write_frame(&mut s, Request::Status.encode()).unwrap();
    assert!(matches!(
        Response::decode(buf.read_frame(&mut s).unwrap()).unwrap(),
        Response::Status(_)
    ));
}

#[test]
fn init_with_an_unwritable_kit_path_still_prints_the_secret_key() {
    for json in [false, true] {
        let home = Home::new();
        // A path under a regular file: not writable, even for root.
        let blocker = home.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let kit = blocker.join("kit.pdf");
        let mut args = vec![
            "init",
            "--password-fd",
            "3",
            "--emergency-kit",
            kit.to_str().unwrap(),
        ];
        if json {
            args.push("--json");
        }
        let r = home
            .run_with(&args, None, Some(format!("{PW}\n").as_bytes()))
            .expect_code(1);
        let status = home.status();
        assert_eq!(status["state"], "unlocked", "the account exists\n{r}");
        let account = status["account_id"].as_str().unwrap();
        let sk = if json {
            r.json()["secret_key"].as_str().unwrap().to_owned()
        } else {
            assert!(r.stdout.contains("Write it down"), "{r}");
            r.stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix("Secret Key:"))
                .unwrap_or_else(|| panic!("no Secret Key printed\n{r}"))
                .trim()
                .to_owned()
        };
        assert!(sk.starts_with(&format!("K1-{account}-")), "{sk}\n{r}");
        assert!(r.stderr.starts_with("keyward: "), "{r}");
        assert!(
            r.stderr.contains("was created")
                && r.stderr.contains("Emergency Kit was not written")
                && r.stderr.contains(kit.to_str().unwrap())
                && r.stderr.contains("keyward emergency-kit --out"),
            "{r}"
        );
        assert!(!r.stderr.contains(&sk), "the key only goes to stdout\n{r}");
        assert!(!kit.exists());
    }
}

#[test]
fn set_refuses_an_empty_standard_input_unless_asked() {
    let home = Home::new();
    home.init(PW);
    home.run_with(&["set", "github/token"], Some(b"ghp_old"), None)
        .expect_code(0);

    // `failing_cmd | keyward set …` and `< /dev/null`: refused, value kept.
    let r = home
        .run_with(&["set", "github/token"], Some(b""), None)
        .expect_code(9);
    assert!(
        r.stderr.contains("standard input was empty") && r.stderr.contains("--allow-empty"),
        "{r}"
    );
    home.run(&["set", "github/token"]).expect_code(9);
    assert_eq!(home.ok(&["get", "github/token"]).stdout, "ghp_old");
    // Nor is a new item created.
    home.run_with(&["set", "new/item"], Some(b""), None)
        .expect_code(9);
    home.run(&["get", "new/item"]).expect_code(7);

    // On purpose.
    home.run_with(
        &["set", "github/token", "--allow-empty", "--force"],
        Some(b""),
        None,
    )
    .expect_code(0);
    assert_eq!(home.ok(&["get", "github/token"]).stdout, "");
}

/// An agent the CLI starts leaves the CLI's session (no controlling
/// terminal, no process group to be signalled with it) and keeps none of
/// the CLI's descriptors: `init --password-fd 3` hands the password file to
/// the CLI on fd 3, and the agent it starts must not hold it for its life.
#[test]
fn an_autostarted_agent_detaches_and_keeps_no_inherited_descriptor() {
    let home = Home::new();
    home.init("pw");
    let pid = home.agent_pid().expect("the agent runs");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // After the comm: state, ppid, pgrp, session, tty_nr.
    let (pgrp, session, tty) = (fields[2], fields[3], fields[4]);
    assert_eq!(session, pid.to_string(), "not a session of its own: {stat}");
    assert_eq!(pgrp, pid.to_string(), "{stat}");
    assert_eq!(tty, "0", "a controlling terminal: {stat}");
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        !held.iter().any(|p| p.contains("/.tmp")),
        "the agent holds the password file it inherited: {held:?}"
    );
}

/// Reads at most 32 KiB at a time, a quarter of a second apart: a client
/// that takes a long listing slowly, but steadily.
struct Paced(UnixStream);

impl std::io::Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let n = buf.len().min(32 * 1024);
        self.0.read(&mut buf[..n])
    }
}

/// A long listing is many frames; a client that keeps taking them (a
/// frame's worth within the request timeout each) gets them all, though the
/// whole takes several timeouts — from the event loop and from a
/// connection handed to a thread alike.
#[test]
fn a_slow_but_steady_reader_gets_a_long_listing() {
    const N: usize = 3000;
    let home = Home::with_config("request_timeout_seconds = 2");
    home.init(PW);
    let mut c = home.client();
    for i in 0..N {
        c.set(&long_name(i), "v").unwrap();
    }
    drop(c);
    let socket = home.paths.socket();
    let readers: Vec<_> = [false, true]
        .into_iter()
        .map(|handed_off| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let (mut s, mut buf) = greeted(&socket);
                if handed_off {
                    // A request the event loop does not answer itself
                    // moves the connection to a thread of its own.
                    write_frame(&mut s, Request::RecoveryCodeList.encode()).unwrap();
                    assert!(matches!(
                        Response::decode(buf.read_frame(&mut s).unwrap()).unwrap(),
                        Response::RecoveryCodes(_)
                    ));
                }
                write_frame(&mut s, Request::List.encode()).unwrap();
                let started = std::time::Instant::now();
                let mut paced = Paced(s);
                let mut seen = 0;
                loop {
                    let payload = buf
                        .read_frame(&mut paced)
                        .unwrap_or_else(|e| panic!("cut off after {seen} items: {e}"));
                    match Response::decode(payload).unwrap() {
                        Response::ItemsPart(v) => seen += v.len(),
                        Response::Items(v) => break (seen + v.len(), started.elapsed()),
                        other => panic!("{other:?}"),
                    }
                }
            })
        })
        .collect();
    for (r, handed_off) in readers.into_iter().zip([false, true]) {
        let (seen, took) = r.join().unwrap();
        assert_eq!(seen, N, "handed off: {handed_off}");
        assert!(
            took > std::time::Duration::from_secs(4),
            "the listing took only {took:?}: not slower than the timeout"
        );
    }
}
