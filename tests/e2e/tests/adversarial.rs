#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! What the agent survives: load, slow and broken clients, a full or
//! read-only disk, SIGKILL during every kind of write, a clock set back, bad
//! input on every path.

use keyward_client::frame::{FrameBuf, write_frame};
use keyward_client::message::{ErrorCode, PROTOCOL_VERSION, Request, Response};
use keyward_e2e::{Home, require, signal};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

const PW: &str = "correct horse battery staple";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn hello_frame() -> (Vec<u8>, bool) {
    Request::Hello {
        protocol: PROTOCOL_VERSION,
        client: "adversarial".into(),
    }
    .encode()
}

fn get_frame(name: &str) -> (Vec<u8>, bool) {
    Request::Get { name: name.into() }.encode()
}

fn raise_fd_limit(n: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    let max = lim.maximum.unwrap_or(n);
    if lim.current.is_some_and(|c| c < n) {
        lim.current = Some(n.min(max));
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

#[test]
fn a_thousand_concurrent_connections_are_all_served() {
    raise_fd_limit(4096);
    let home = Home::new();
    home.init(PW);
    home.run_with(&["set", "k"], Some(b"v"), None)
        .expect_code(0);
    let socket = home.paths.socket();
    // Open all of them first, so that they are really concurrent.
    let mut conns: Vec<(UnixStream, FrameBuf)> = (0..1000)
        .map(|_| {
            let s = UnixStream::connect(&socket).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            (s, FrameBuf::new())
        })
        .collect();
    for (s, _) in conns.iter_mut() {
        write_frame(s, hello_frame()).unwrap();
        write_frame(s, get_frame("k")).unwrap();
    }
    for (i, (s, buf)) in conns.iter_mut().enumerate() {
        let hello = Response::decode(buf.read_frame(s).unwrap()).unwrap();
        assert!(
            matches!(hello, Response::HelloOk { .. }),
            "connection {i}: {hello:?}"
        );
        match Response::decode(buf.read_frame(s).unwrap()).unwrap() {
            Response::Value(v) => assert_eq!(v.expose(), b"v"),
            other => panic!("connection {i}: {other:?}"),
        }
    }
    // One more, over the default cap of 1024 open connections? The cap is
    // configurable; here 1000 < 1024 must all have been served, and a new
    // client is served too.
    assert_eq!(home.ok(&["get", "k"]).stdout, "v");
}

#[test]
fn over_the_connection_cap_clients_are_told_the_agent_is_busy() {
    let home = Home::with_config("max_connections = 5");
    home.init(PW);
    let socket = home.paths.socket();
    // Hold all five slots, each confirmed by a handshake: the CLI's last
    // connection may still hold a slot for a moment after it exits, and a
    // connection refused as busy is retried.
    let started = Instant::now();
    let mut held: Vec<UnixStream> = Vec::new();
    while held.len() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "slots never freed"
        );
        let mut s = UnixStream::connect(&socket).unwrap();
        // (A refused connection may be closed before the Hello is written.)
        let _ = write_frame(&mut s, hello_frame());
        let mut buf = FrameBuf::new();
        match Response::decode(buf.read_frame(&mut s).unwrap()).unwrap() {
            Response::HelloOk { .. } => held.push(s),
            Response::Error(e) if e.message.contains("too many clients") => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("unexpected answer to Hello: {other:?}"),
        }
    }
    let r = home.run(&["get", "x"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("too many clients"), "{r}");
    drop(held);
    home.wait_for(Duration::from_secs(5), "slots to free up", || {
        home.run(&["list"]).code == 0
    });
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn get_latencies(socket: &std::path::Path, n: usize) -> Vec<Duration> {
    let mut c = keyward_client::Client::connect(socket).unwrap();
    (0..n)
        .map(|_| {
            let t = Instant::now();
            c.get("k").unwrap();
            t.elapsed()
        })
        .collect()
}

#[test]
fn slowloris_clients_do_not_slow_down_the_others() {
    raise_fd_limit(4096);
    let home = Home::with_config("request_timeout_seconds = 4");
    home.init(PW);
    home.run_with(&["set", "k"], Some(b"v"), None)
        .expect_code(0);
    let socket = home.paths.socket();
    let baseline = median(get_latencies(&socket, 300));
    // 100 clients that send one byte a second (a hello, trickled).
    let mut slow: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let frame = hello_frame().0;
    let start = Instant::now();
    let mut under_attack = Vec::new();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(3) {
        for s in slow.iter_mut() {
            let _ = s.write_all(&frame[sent..sent + 1]);
        }
        sent += 1;
        under_attack.extend(get_latencies(&socket, 100));
        std::thread::sleep(Duration::from_millis(1000).saturating_sub(Duration::from_millis(100)));
    }
    let attacked = median(under_attack);
    eprintln!("get median: {baseline:?} alone, {attacked:?} with 100 slowloris clients");
    assert!(
        attacked < baseline * 5 + Duration::from_millis(2),
        "slowloris clients slowed the others: {baseline:?} → {attacked:?}"
    );
    // The agent cuts them off once their request deadline passes.
    std::thread::sleep(Duration::from_secs(3));
    let mut closed = 0;
    for s in slow.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 64];
        if matches!(std::io::Read::read(s, &mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 100,
        "every slow client was disconnected after its deadline"
    );
}

/// A tmpfs of `size` mounted at `dir` for the test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_owned()))
    }

    fn remount(&self, opt: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_or_read_only_disk_loses_nothing_and_the_agent_keeps_running() {
    if !require("root (to mount a small tmpfs)", is_root()) {
        return;
    }
    let home = Home::new();
    let Some(fs) = Tmpfs::mount(&home.paths.data_dir, "400k") else {
        assert!(!keyward_e2e::services_required(), "cannot mount a tmpfs");
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    };
    home.init(PW);
    home.run_with(&["set", "first"], Some(b"kept"), None)
        .expect_code(0);
    // Fill the disk: 60 KiB items until a write fails.
    let big = vec![b'x'; 60 * 1024];
    let mut stored = 0;
    let failure = loop {
        let r = home.run_with(&["set", &format!("big{stored}")], Some(&big), None);
        if r.code != 0 {
            break r;
        }
        stored += 1;
        assert!(stored < 20, "the 400 KiB disk never filled up");
    };
    assert_eq!(failure.code, 10, "{failure}");
    assert!(
        failure.stderr.contains("could not write the vault")
            && failure.stderr.contains("nothing was changed"),
        "{failure}"
    );
    // The agent still serves, from memory identical to disk.
    assert_eq!(home.ok(&["get", "first"]).stdout, "kept");
    home.run(&["get", &format!("big{stored}")]).expect_code(7);
    // No stray temp file, and the vault on disk still opens with everything stored.
    let leftovers: Vec<_> = std::fs::read_dir(&home.paths.data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    home.stop_agent();
    home.unlock(PW).expect_code(0);
    assert_eq!(home.ok(&["get", "first"]).stdout, "kept");
    assert_eq!(home.ok(&["list"]).stdout.lines().count(), 1 + stored);

    // Read-only: refused, nothing changed, back to normal when writable again.
    home.ok(&["rm", "big0"]);
    fs.remount("ro");
    let r = home
        .run_with(&["set", "while-ro"], Some(b"x"), None)
        .expect_code(10);
    assert!(r.stderr.contains("nothing was changed"), "{r}");
    home.run(&["rm", "first"]).expect_code(10);
    assert_eq!(home.ok(&["get", "first"]).stdout, "kept");
    fs.remount("rw");
    home.run_with(&["set", "after-ro"], Some(b"y"), None)
        .expect_code(0);
    assert_eq!(home.ok(&["get", "after-ro"]).stdout, "y");
}

/// SIGKILL of the agent at random moments of every write path: the vault
/// always opens afterwards, and holds a consistent set of items.
#[test]
fn sigkill_during_every_kind_of_write_never_corrupts_the_vault() {
    let home = Home::new();
    let (_, sk) = home.init(PW);
    let ops: [&[&str]; 6] = [
        &["set", "item", "--force"],
        &["rm", "item"],
        &["recovery-code", "new", "--password-fd", "3"],
        &["protector", "remove", "file", "--password-fd", "3"],
        &["protector", "add", "file", "--password-fd", "3"],
        &["set", "other", "--force"],
    ];
    let pw_file = home.path().join("pw");
    std::fs::write(&pw_file, PW).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..24 {
        if home.status()["state"] != "unlocked" {
            home.unlock(PW).expect_code(0);
        }
        let op = ops[round % ops.len()];
        let pid = home.agent_pid().unwrap();
        let cmd = home.command(op);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<\"$KW_PW\" <\"$KW_PW\"")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .envs(
                cmd.get_envs()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
            )
            .env("KW_PW", &pw_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 60_000));
        signal(pid, rustix::process::Signal::KILL);
        let _ = child.wait();
        home.wait_for(Duration::from_secs(5), "the killed agent to go", || {
            home.agent_pid() != Some(pid)
        });
        // With the Secret Key from this device if it is still there, else typed.
        let mut r = home.unlock(PW);
        if r.code != 0 {
            r = home.run_with(
                &["unlock", "--password-stdin", "--secret-key-fd", "3"],
                Some(PW.as_bytes()),
                Some(sk.as_bytes()),
            );
        }
        assert_eq!(
            r.code, 0,
            "round {round} ({op:?}): the vault does not open after SIGKILL\n{r}"
        );
        home.ok(&["list"]);
        home.ok(&["recovery-code", "list"]);
        home.ok_pw(&["protector", "add", "file"], PW);
    }
}

#[test]
fn the_backoff_survives_a_clock_set_back() {
    if !require(
        "faketime (package faketime)",
        Command::new("sh")
            .args(["-c", "command -v faketime"])
            .status()
            .is_ok_and(|s| s.success()),
    ) {
        return;
    }
    let home = Home::new();
    home.init(PW);
    home.ok(&["lock"]);
    // Three free failures, then 1 s, 2 s, 4 s: wait each delay out to build it up.
    for wait in [0, 0, 0, 0, 1100, 2100] {
        std::thread::sleep(Duration::from_millis(wait));
        home.unlock("wrong").expect_code(6);
    }
    let before = home.status()["backoff_seconds"].as_u64().unwrap();
    assert!(before >= 3, "{before}");
    home.stop_agent();
    // A new agent that believes it is two hours earlier.
    let mut agent = Command::new("faketime")
        .arg("-f")
        .arg("-2h")
        .arg(keyward_e2e::agent_bin())
        .env("KEYWARD_HOME", home.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    home.wait_for(
        Duration::from_secs(5),
        "the agent with a clock set back",
        || home.paths.socket().exists(),
    );
    let after = home.status()["backoff_seconds"].as_u64().unwrap();
    let r = home.unlock(PW).expect_code(6);
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        after >= before.saturating_sub(5),
        "setting the clock back shortened the wait: {before} s → {after} s"
    );
    assert!(r.stderr.contains("too many failed attempts"), "{r}");
}

#[test]
fn bad_input_on_every_path() {
    let home = Home::new();
    home.init(PW);
    // Invalid UTF-8 in a name, on the wire: refused, connection closed, agent fine.
    let mut s = UnixStream::connect(home.paths.socket()).unwrap();
    let mut buf = FrameBuf::new();
    write_frame(&mut s, hello_frame()).unwrap();
    Response::decode(buf.read_frame(&mut s).unwrap()).unwrap();
    s.write_all(&[0, 0, 0, 7, 0x06, 0, 0, 0, 2, 0xc3, 0x28])
        .unwrap();
    match Response::decode(buf.read_frame(&mut s).unwrap()).unwrap() {
        Response::Error(e) => assert!(e.message.contains("UTF-8"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    // Invalid UTF-8 in a name, on the command line.
    use std::os::unix::ffi::OsStrExt;
    let out = home
        .command(&["get"])
        .arg(std::ffi::OsStr::from_bytes(b"bad\xffname"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A vault from a newer keyward: a clear error, and the file untouched.
    let account = home.status()["account_id"].as_str().unwrap().to_owned();
    let vault = home.paths.data_dir.join(format!("vault-{account}.kwv"));
    home.ok(&["lock"]);
    home.stop_agent();
    let mut bytes = std::fs::read(&vault).unwrap();
    bytes.truncate(bytes.len() - 32);
    bytes[8..10].copy_from_slice(&2u16.to_be_bytes());
    use sha2::Digest;
    let sum = sha2::Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum);
    std::fs::write(&vault, &bytes).unwrap();
    let r = home.unlock(PW).expect_code(10);
    assert!(
        r.stderr.contains("newer") && r.stderr.contains("upgrade keyward"),
        "{r}"
    );
    assert_eq!(
        std::fs::read(&vault).unwrap(),
        bytes,
        "a failed open never writes"
    );
}

/// Every command, with a locked agent, with no agent, and with no account:
/// a sentence and a documented exit code, never a panic.
#[test]
fn every_command_in_every_state_fails_cleanly() {
    let commands: &[&[&str]] = &[
        &["get", "x"],
        &["set", "x"],
        &["list"],
        &["rm", "x"],
        &["lock"],
        &["status"],
        &["unlock", "--password-stdin"],
        &[
            "change-password",
            "--password-stdin",
            "--new-password-fd",
            "0",
        ],
        &["recovery-code", "new", "--password-stdin"],
        &["recovery-code", "list"],
        &["recovery-code", "revoke", "00"],
        &["recover", "--code-fd", "0", "--new-password-fd", "0"],
        &["emergency-kit", "--password-stdin", "--format", "text"],
        &["secret-key", "rotate", "--password-stdin"],
        &["protector", "list"],
        &["protector", "add", "file"],
        &["protector", "remove", "file"],
    ];
    let documented = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    let no_account = Home::new();
    let locked = Home::new();
    locked.init(PW);
    locked.ok(&["lock"]);
    for (state, home, extra) in [
        ("no agent", &no_account, vec!["--no-autostart"]),
        ("no account", &no_account, vec![]),
        ("locked", &locked, vec![]),
    ] {
        for cmd in commands {
            let args: Vec<&str> = extra.iter().copied().chain(cmd.iter().copied()).collect();
            let r = home.run_with(&args, Some(b"x"), None);
            assert!(
                documented.contains(&r.code),
                "{state}: undocumented exit code\n{r}"
            );
            assert!(!r.stderr.contains("panicked"), "{state}: panic\n{r}");
            if r.code != 0 {
                assert!(
                    r.stderr.starts_with("keyward: "),
                    "{state}: no sentence\n{r}"
                );
            }
        }
        if state == "no agent" {
            assert!(
                home.agent_pid().is_none(),
                "--no-autostart started an agent"
            );
        }
    }
    // The locked agent is still locked, and still works.
    assert_eq!(locked.status()["state"], "locked");
    locked.unlock(PW).expect_code(0);
}

fn read_answer(s: &mut UnixStream, buf: &mut FrameBuf) -> Response {
    Response::decode(buf.read_frame(s).unwrap()).unwrap()
}

#[test]
fn pipelined_requests_are_answered_in_order_and_a_slow_one_keeps_the_connection() {
    let home = Home::new();
    home.init(PW);
    for (name, value) in [("a", "1"), ("b", "2")] {
        home.run_with(&["set", name], Some(value.as_bytes()), None)
            .expect_code(0);
    }
    let mut s = UnixStream::connect(home.paths.socket()).unwrap();
    // Hello and 60 gets in one write: the agent reads them in one go.
    let mut burst = hello_frame().0;
    for i in 0..60 {
        burst.extend_from_slice(&get_frame(if i % 2 == 0 { "a" } else { "b" }).0);
    }
    s.write_all(&burst).unwrap();
    let mut buf = FrameBuf::new();
    assert!(matches!(
        read_answer(&mut s, &mut buf),
        Response::HelloOk { .. }
    ));
    for i in 0..60 {
        match read_answer(&mut s, &mut buf) {
            Response::Value(v) => {
                assert_eq!(
                    v.expose(),
                    if i % 2 == 0 { b"1" } else { b"2" },
                    "answer {i}"
                );
            }
            other => panic!("answer {i}: {other:?}"),
        }
    }
    // A slow request (a vault write) on the same connection, then quick ones.
    let set = Request::Set {
        name: "c".into(),
        value: keyward_client::Secret::from_slice(b"3"),
    };
    let mut burst = set.encode().0;
    burst.extend_from_slice(&get_frame("c").0);
    burst.extend_from_slice(&get_frame("a").0);
    s.write_all(&burst).unwrap();
    assert!(matches!(read_answer(&mut s, &mut buf), Response::Ok));
    for want in [b"3", b"1"] {
        match read_answer(&mut s, &mut buf) {
            Response::Value(v) => assert_eq!(v.expose(), want),
            other => panic!("{other:?}"),
        }
    }
}

/// Drains `s` to its end; panics if the agent keeps it open.
fn drain_until_closed(s: &mut UnixStream) -> usize {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut total = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match std::io::Read::read(s, &mut chunk) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return total,
            Err(e) => panic!("the agent kept the connection open after {total} bytes: {e}"),
        }
    }
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_holds_up_nobody() {
    let home = Home::with_config("request_timeout_seconds = 2");
    home.init(PW);
    let big = vec![b'x'; 60 * 1024];
    home.run_with(&["set", "big"], Some(&big), None)
        .expect_code(0);
    home.run_with(&["set", "k"], Some(b"v"), None)
        .expect_code(0);
    let socket = home.paths.socket();
    // 200 gets of a 60 KiB item, never read: 12 MiB of answers the socket
    // cannot hold. One client asks from the start (served by the event
    // loop); the other first sends a slow request, so that its connection
    // has been handed to a thread of its own.
    let mut greedy: Vec<UnixStream> = Vec::new();
    for handed_off in [false, true] {
        let mut s = UnixStream::connect(&socket).unwrap();
        let mut burst = hello_frame().0;
        if handed_off {
            let set = Request::Set {
                name: "other".into(),
                value: keyward_client::Secret::from_slice(b"1"),
            };
            burst.extend_from_slice(&set.encode().0);
        }
        for _ in 0..200 {
            burst.extend_from_slice(&get_frame("big").0);
        }
        s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = s.write_all(&burst); // may block once the agent stops reading
        greedy.push(s);
    }
    // Everyone else is served as usual meanwhile.
    let t = Instant::now();
    let lat = get_latencies(&socket, 200);
    assert!(
        median(lat) < Duration::from_millis(20),
        "others were held up by a client that does not read"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    // After the request timeout (plus up to a second) the agent has closed
    // both connections: draining them ends in EOF, well short of 200 answers.
    std::thread::sleep(Duration::from_secs(4));
    for (i, s) in greedy.iter_mut().enumerate() {
        let total = drain_until_closed(s);
        assert!(total < 200 * big.len(), "client {i} got all {total} bytes");
    }
}

#[test]
fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let home = Home::with_config("client_idle_timeout_seconds = 1");
    home.init(PW);
    let mut s = UnixStream::connect(home.paths.socket()).unwrap();
    write_frame(&mut s, hello_frame()).unwrap();
    let mut buf = FrameBuf::new();
    assert!(matches!(
        read_answer(&mut s, &mut buf),
        Response::HelloOk { .. }
    ));
    // Served while in use...
    write_frame(&mut s, Request::Status.encode()).unwrap();
    assert!(matches!(read_answer(&mut s, &mut buf), Response::Status(_)));
    // ...closed after the idle timeout (plus up to a second of sweep).
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let t = Instant::now();
    let mut b = [0u8; 16];
    assert!(matches!(std::io::Read::read(&mut s, &mut b), Ok(0)));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

/// A second `Hello`, or a `PromptReply` with no `Prompt` waiting, is out of
/// order: `Error` (code 1, bad request), then the connection is closed
/// (docs/PROTOCOL.md §7), on the event loop and on a connection thread alike.
#[test]
fn out_of_order_requests_get_bad_request_and_the_connection_is_closed() {
    let home = Home::new();
    home.ok(&["status"]); // starts the agent
    let socket = home.paths.socket();
    let out_of_order = [
        ("a second Hello", hello_frame()),
        (
            "a bare PromptReply (cancel)",
            Request::PromptReply { answer: None }.encode(),
        ),
        (
            "a bare PromptReply (answer)",
            Request::PromptReply {
                answer: Some(keyward_client::Secret::from_slice(b"123456")),
            }
            .encode(),
        ),
    ];
    for (what, frame) in out_of_order {
        for handed_off in [false, true] {
            let mut s = UnixStream::connect(&socket).unwrap();
            let mut buf = FrameBuf::new();
            write_frame(&mut s, hello_frame()).unwrap();
            assert!(matches!(
                read_answer(&mut s, &mut buf),
                Response::HelloOk { .. }
            ));
            if handed_off {
                // `Lock` is not a quick request: it moves the connection to a
                // thread of its own, which serves what follows.
                write_frame(&mut s, Request::Lock.encode()).unwrap();
                assert!(matches!(read_answer(&mut s, &mut buf), Response::Ok));
            }
            // The request after it is never answered.
            let mut burst = frame.0.clone();
            burst.extend_from_slice(&Request::Status.encode().0);
            s.write_all(&burst).unwrap();
            match read_answer(&mut s, &mut buf) {
                Response::Error(e) => assert_eq!(
                    e.code,
                    ErrorCode::BadRequest,
                    "{what} (handed off: {handed_off}): {e:?}"
                ),
                other => panic!("{what} (handed off: {handed_off}): {other:?}"),
            }
            assert_eq!(buf.buffered(), 0, "{what}: more after the error");
            assert_eq!(
                drain_until_closed(&mut s),
                0,
                "{what} (handed off: {handed_off}): more after the error"
            );
        }
    }
}
