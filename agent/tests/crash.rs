#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Crash safety of vault writes: a writer process is killed with SIGKILL at
//! random moments, over many rounds; every time, the vault on disk must open
//! and hold either the last value the writer reported as written or the one
//! it was writing.
//!
//! The writer is this same test binary, re-executed with `KEYWARD_CRASH_CHILD`
//! set (see [`crash_writer_child`]).

use keyward_agent::account::password::{KdfParams, Password};
use keyward_agent::account::secret_key::SecretKey;
use keyward_agent::vault;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const FAST: KdfParams = KdfParams {
    m_kib: 19 * 1024,
    t: 2,
    p: 1,
};

/// Not a test of its own: when re-executed as the child, writes forever.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var("KEYWARD_CRASH_CHILD") else {
        return;
    };
    let path = std::path::Path::new(&dir).join("vault");
    let sk = SecretKey::parse(&std::env::var("KEYWARD_CRASH_SK").unwrap()).unwrap();
    let start: u64 = std::env::var("KEYWARD_CRASH_START")
        .unwrap()
        .parse()
        .unwrap();
    let mut v = vault::unlock(
        vault::read(&path).unwrap(),
        &Password::new("pw").unwrap(),
        &sk,
    )
    .unwrap();
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    // Alternate the kinds of write: a growing item set, rewrites, removals.
    for n in start.. {
        v.set(&path, "counter", n.to_string().as_bytes(), n)
            .unwrap();
        v.set(
            &path,
            &format!("item{}", n % 7),
            &vec![b'x'; (n % 5000) as usize],
            n,
        )
        .unwrap();
        if n % 11 == 0 {
            let _ = v.remove(&path, &format!("item{}", (n + 3) % 7), n);
        }
        writeln!(out, "wrote {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_during_writes_never_corrupts_the_vault() {
    if std::env::var("KEYWARD_CRASH_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault");
    let (mut v, sk) = vault::create(&path, &Password::new("pw").unwrap(), FAST, 1).unwrap();
    v.set(&path, "counter", b"0", 1).unwrap();
    drop(v);
    let sk_text = sk.display().expose().to_owned();
    let exe = std::env::current_exe().unwrap();
    let mut last_confirmed = 0u64;
    let rounds = 40;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut kills_mid_write = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KEYWARD_CRASH_CHILD", dir.path())
            .env("KEYWARD_CRASH_SK", &sk_text)
            .env("KEYWARD_CRASH_START", (last_confirmed + 1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Wait until the child has unlocked, so the kill lands among writes.
        loop {
            let l = lines.next().expect("child exited before ready").unwrap();
            // libtest prints "test crash_writer_child ... " without a newline first.
            if l.ends_with("ready") {
                break;
            }
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 40_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for l in lines.map_while(Result::ok) {
            if let Some((_, n)) = l.split_once("wrote ") {
                last_confirmed = n.parse().unwrap();
            }
        }
        let parsed = vault::read(&path)
            .unwrap_or_else(|e| panic!("round {round}: vault unreadable after SIGKILL: {e}"));
        let v = vault::unlock(parsed, &Password::new("pw").unwrap(), &sk)
            .unwrap_or_else(|e| panic!("round {round}: vault does not open after SIGKILL: {e}"));
        let counter: u64 = std::str::from_utf8(v.get("counter").unwrap().expose())
            .unwrap()
            .parse()
            .unwrap();
        // Old (last confirmed) or new (the write in flight), nothing else.
        assert!(
            counter == last_confirmed || counter == last_confirmed + 1,
            "round {round}: counter {counter}, last confirmed {last_confirmed}"
        );
        if counter == last_confirmed + 1 {
            kills_mid_write += 1;
        }
        last_confirmed = counter;
        vault::store::remove_stale_temp_files(&path);
    }
    eprintln!(
        "{rounds} SIGKILLs; {kills_mid_write} landed after a write reached the disk but before it was reported"
    );
}
