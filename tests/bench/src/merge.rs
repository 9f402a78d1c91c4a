//! Merging two copies of a 10,000-item vault (issue 17): what the merge
//! costs in process (`Unlocked::merge_from`, then the write), and what a
//! running agent's merges cost the readers (`get` round trips while its
//! sync watcher merges a sibling part file that keeps changing).
//!
//! Targets: a merge of two vaults of 10,000 items takes under 50 ms beyond
//! the unlock; a `get` during merges is held up by no more than one vault
//! write's duration.

use crate::procs::{Daemon, VALUE, bin_dir, spawn, wait_for};
use crate::stats::{Samples, fmt};
use anyhow::{Context, Result, anyhow, bail, ensure};
use keyward_agent::account::password::{self, KdfParams, Password};
use keyward_agent::account::secret_key::SecretKey;
use keyward_agent::vault::format::{Parsed, ProtectorKind};
use keyward_agent::vault::{self, Unlocked};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Items in each vault before they diverge.
const ITEMS: usize = 10_000;
/// Items each side changes (disjoint sets).
const CHANGED: usize = 1_000;
/// Items each side adds.
const ADDED: usize = 500;
/// Items the second side removes.
const REMOVED: usize = 500;
/// The weakest parameters a new account accepts (as in agent/tests/vault.rs):
/// only the merge is timed, the unlock is measured for reference.
const FAST: KdfParams = KdfParams {
    m_kib: 19 * 1024,
    t: 2,
    p: 1,
};
/// Unix seconds of the first version; the sides' changes come later.
const T0: u64 = 1_700_000_000;
const PASSWORD: &str = "merge benchmark password, not a secret";
/// Issue 17: a merge of two 10,000-item vaults, beyond the unlock.
const TARGET: Duration = Duration::from_millis(50);
/// Items the other device changes per rewrite of its part (agent part).
const PER_REWRITE: usize = 10;
/// Pause after the agent has merged one version of the part before the
/// next is delivered (see the writer in [`during_merges`]).
const GAP_MS: u64 = 20;

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn name(i: usize) -> String {
    format!("item/{i:05}")
}

/// A 32-byte value that says who wrote it.
fn value(tag: &str, i: usize) -> Vec<u8> {
    let mut v = format!("{tag}:{i:05}:").into_bytes();
    v.resize(32, b'.');
    v
}

fn password() -> Result<Password> {
    Ok(Password::new(PASSWORD)?)
}

/// A scratch directory for files whose writes are not measured: on tmpfs
/// where there is one, so that building the states costs no fsyncs.
fn scratch_dir() -> Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix("keyward-merge-");
    Ok(b.tempdir_in("/dev/shm").or_else(|_| b.tempdir())?)
}

/// The two sides of the in-process measurement: one account, opened twice
/// from one file, then changed apart.
struct Sides {
    a: Unlocked,
    b: Unlocked,
    parsed_a: Parsed,
    parsed_b: Parsed,
    sk: SecretKey,
    /// B's file, on the disk the measured writes go to.
    file_b: PathBuf,
}

fn build_sides(scratch: &Path, disk: &Path) -> Result<Sides> {
    let pw = password()?;
    let (pa, pb) = (scratch.join("a.kwv"), scratch.join("b.kwv"));
    let (mut a, sk) = vault::create(&pa, &pw, FAST, T0)?;
    let originals: Vec<(String, Vec<u8>)> =
        (1..=ITEMS).map(|i| (name(i), value("orig", i))).collect();
    a.add_many(&pa, &originals, T0)?;
    drop(a);
    std::fs::copy(&pa, &pb)?;
    let mut a = vault::unlock(vault::read(&pa)?, &pw, &sk)?;
    let mut b = vault::unlock(vault::read(&pb)?, &pw, &sk)?;
    // A: changes item/00001..01000, adds a-new/00001..00500.
    for i in 1..=CHANGED {
        a.set(&pa, &name(i), &value("a", i), T0 + 100)?;
    }
    let a_new: Vec<(String, Vec<u8>)> = (1..=ADDED)
        .map(|i| (format!("a-new/{i:05}"), value("a-new", i)))
        .collect();
    a.add_many(&pa, &a_new, T0 + 100)?;
    // B: changes item/01001..02000, removes item/02001..02500, adds b-new/….
    for i in CHANGED + 1..=2 * CHANGED {
        b.set(&pb, &name(i), &value("b", i), T0 + 200)?;
    }
    for i in 2 * CHANGED + 1..=2 * CHANGED + REMOVED {
        b.remove(&pb, &name(i), T0 + 200)?;
    }
    let b_new: Vec<(String, Vec<u8>)> = (1..=ADDED)
        .map(|i| (format!("b-new/{i:05}"), value("b-new", i)))
        .collect();
    b.add_many(&pb, &b_new, T0 + 200)?;
    let file_b = disk.join("b.kwv");
    std::fs::copy(&pb, &file_b)?;
    Ok(Sides {
        parsed_a: vault::read(&pa)?,
        parsed_b: vault::read(&file_b)?,
        a,
        b,
        sk,
        file_b,
    })
}

/// What A holds after taking B in: the count, a sample of every kind of
/// item, and that merging either side again changes nothing; and that B
/// taking A in ends with the same items.
fn check_merged(s: &Sides) -> Result<usize> {
    let mut m = s.a.try_clone()?;
    ensure!(
        m.merge_from(&s.parsed_b)?.changed,
        "the merge changed nothing"
    );
    let want = ITEMS + 2 * ADDED - REMOVED;
    ensure!(
        m.len() == want,
        "{} items after the merge, not {want}",
        m.len()
    );
    let mut checked = 0;
    let expect = |i: usize| match i {
        i if i <= CHANGED => Some(value("a", i)),
        i if i <= 2 * CHANGED => Some(value("b", i)),
        i if i <= 2 * CHANGED + REMOVED => None,
        i => Some(value("orig", i)),
    };
    for i in (1..=ITEMS).step_by(7) {
        let got = m.get(&name(i)).map(|v| v.expose().to_vec());
        ensure!(got == expect(i), "{} after the merge: {got:?}", name(i));
        checked += 1;
    }
    for i in (1..=ADDED).step_by(3) {
        for tag in ["a-new", "b-new"] {
            let got = m.get(&format!("{tag}/{i:05}")).map(|v| v.expose().to_vec());
            ensure!(
                got == Some(value(tag, i)),
                "{tag}/{i:05} after the merge: {got:?}"
            );
            checked += 1;
        }
    }
    ensure!(
        !m.merge_from(&s.parsed_b)?.changed,
        "B merged twice changed A"
    );
    ensure!(
        !m.merge_from(&s.parsed_a)?.changed,
        "A's own file changed A"
    );
    let mut n = s.b.try_clone()?;
    n.merge_from(&s.parsed_a)?;
    ensure!(
        n.list() == m.list(),
        "B ← A and A ← B differ ({} vs {} items)",
        n.len(),
        m.len()
    );
    Ok(checked)
}

/// Prints one row: a label and median, p90, min–max.
fn row(label: &str, x: &Samples) {
    println!(
        "| {label} | {} | {} | {}–{} |",
        fmt(x.median()),
        fmt(x.quantile(0.9)),
        fmt(x.min()),
        fmt(x.max())
    );
}

/// Part 1: the merge in process. Returns the write's median (the vault
/// written and fsynced), for part 2 to compare against.
fn in_process(rounds: usize) -> Result<Duration> {
    let scratch = scratch_dir()?;
    let disk = tempfile::Builder::new()
        .prefix("keyward-merge-disk-")
        .tempdir()?;
    let started = Instant::now();
    let s = build_sides(scratch.path(), disk.path())?;
    let built = started.elapsed();
    let checked = check_merged(&s)?;
    let pw = password()?;
    let out_path = disk.path().join("merged.kwv");
    let mem_path = scratch.path().join("merged.kwv");

    let (mut merge, mut merge_write, mut write, mut write_mem) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let (mut identical, mut read, mut unlock, mut kdf) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let wrap = s
        .parsed_a
        .vault
        .password_wraps
        .first()
        .context("no password wrap")?
        .clone();
    let id = s.parsed_a.vault.account_id;
    for _ in 0..rounds {
        // (a) the merge in memory.
        let mut x = s.a.try_clone()?;
        let t = Instant::now();
        let out = x.merge_from(&s.parsed_b)?;
        merge.push(t.elapsed());
        ensure!(out.changed && !out.credentials_changed, "merge: {out:?}");
        drop(x);
        // (b) the merge and the write (atomic replace, fsynced).
        let mut x = s.a.try_clone()?;
        let t = Instant::now();
        x.merge_from(&s.parsed_b)?;
        let merged = t.elapsed();
        x.persist(&out_path)?;
        let all = t.elapsed();
        merge_write.push(all);
        write.push(all - merged);
        // The same write where fsync costs nothing (tmpfs): the encode.
        let t = Instant::now();
        x.persist(&mem_path)?;
        write_mem.push(t.elapsed());
        drop(x);
        // (c) a sibling that changed nothing.
        let mut x = s.a.try_clone()?;
        let t = Instant::now();
        let out = x.merge_from(&s.parsed_a)?;
        identical.push(t.elapsed());
        ensure!(!out.changed, "A merged with itself changed");
        drop(x);
        // Reading and parsing the other's file (what the agent does first).
        let t = Instant::now();
        let p = vault::read(&s.file_b)?;
        read.push(t.elapsed());
        drop(p);
        // (d) the unlock, and its Argon2id alone.
        let p = s.parsed_a.clone();
        let t = Instant::now();
        let v = vault::unlock(p, &pw, &s.sk)?;
        unlock.push(t.elapsed());
        drop(v);
        let t = Instant::now();
        let k = password::derive_km(&pw, &wrap.salt16, &id, &wrap.params)?;
        kdf.push(t.elapsed());
        drop(k);
    }

    // The unlock with the default parameters (a vault made with them).
    let (mut unlock_default, mut kdf_default) = (Samples::default(), Samples::default());
    {
        let path = scratch.path().join("default.kwv");
        let (mut d, sk) = vault::create(&path, &pw, KdfParams::DEFAULT, T0)?;
        let originals: Vec<(String, Vec<u8>)> =
            (1..=ITEMS).map(|i| (name(i), value("orig", i))).collect();
        d.add_many(&path, &originals, T0)?;
        drop(d);
        let parsed = vault::read(&path)?;
        let w = parsed
            .vault
            .password_wraps
            .first()
            .context("no password wrap")?
            .clone();
        for _ in 0..rounds.clamp(1, 5) {
            let p = parsed.clone();
            let t = Instant::now();
            let v = vault::unlock(p, &pw, &sk)?;
            unlock_default.push(t.elapsed());
            drop(v);
            let t = Instant::now();
            let k = password::derive_km(&pw, &w.salt16, &parsed.vault.account_id, &w.params)?;
            kdf_default.push(t.elapsed());
            drop(k);
        }
    }

    let size = std::fs::metadata(&out_path)?.len();
    println!("## Merge of two 10,000-item vaults, in process (issue 17)");
    println!();
    println!(
        "One account, its 10,000-item vault (32-byte values) opened twice; A changed {CHANGED} \
         items and added {ADDED}; B changed {CHANGED} others, removed {REMOVED} and added \
         {ADDED} (states built in {:.1} s, not timed). {rounds} rounds, each on fresh copies \
         (`try_clone`) with the other's file parsed once before.",
        built.as_secs_f64()
    );
    println!();
    println!("| step | median | p90 | min–max |");
    println!("|---|---|---|---|");
    row("(a) `a.merge_from(&parsed_b)`, in memory", &merge);
    row(
        "(b) merge + `persist` (written, fsynced), of which ↓",
        &merge_write,
    );
    row("    the write alone", &write);
    if scratch.path().starts_with("/dev/shm") {
        row("    the same write on tmpfs (encode, no disk)", &write_mem);
    }
    row(
        "(c) merge of an identical copy (nothing to take)",
        &identical,
    );
    row("`vault::read` of B's file (read + parse)", &read);
    row(
        "(d) `vault::unlock`, m = 19 MiB, t = 2, p = 1, of which ↓",
        &unlock,
    );
    row("    Argon2id alone", &kdf);
    row(
        "(d) `vault::unlock`, default m = 64 MiB, t = 3, p = 4, of which ↓",
        &unlock_default,
    );
    row("    Argon2id alone", &kdf_default);
    println!();
    println!(
        "Merged vault: {} items, {} KiB; checked {checked} values, the count, that merging \
         either side again changes nothing, and that B ← A lists the same items as A ← B.",
        ITEMS + 2 * ADDED - REMOVED,
        size / 1024
    );
    println!(
        "Target: merge + write < {} — median {} (read + merge + write: {}): {}",
        fmt(TARGET),
        fmt(merge_write.median()),
        fmt(read.median() + merge_write.median()),
        verdict(merge_write.median() < TARGET)
    );
    println!();
    Ok(write.median())
}

/// An agent of its own (sync watcher polling every 50 ms) on a 10,000-item
/// vault made with [`FAST`], unlocked; and the Secret Key.
struct Agent {
    dir: tempfile::TempDir,
    child: Daemon,
    socket: PathBuf,
    own: PathBuf,
    sk: SecretKey,
}

impl Agent {
    fn start() -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("keyward-bench-merge-")
            .tempdir()?;
        let home = dir.path().to_owned();
        std::fs::create_dir_all(home.join("config"))?;
        std::fs::write(
            home.join("config/config.toml"),
            "idle_lock_seconds = 0\nlifetime_seconds = 0\n",
        )?;
        let data = home.join("data");
        std::fs::create_dir_all(&data)?;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        let tmp = data.join("new.kwv");
        let (mut v, sk) = vault::create(&tmp, &password()?, FAST, T0)?;
        let mut entries: Vec<(String, Vec<u8>)> = vec![("bench".into(), VALUE.to_vec())];
        entries.extend((1..ITEMS).map(|i| (name(i), value("orig", i))));
        v.add_many(&tmp, &entries, T0)?;
        let id = v.account_id();
        let own = data.join(format!("vault-{id}.kwv"));
        std::fs::rename(&tmp, &own)?;
        keyward_agent::protect::Store::store(
            &keyward_agent::protect::file::FileProtector::new(
                &data,
                &id,
                keyward_agent::harden::euid(),
            ),
            &sk,
        )
        .map_err(|e| anyhow!("{e}"))?;
        v.upsert_protector(&own, ProtectorKind::File, T0)?;
        let child = spawn(
            &bin_dir().join("keyward-agent"),
            None,
            &home.join("agent.log"),
            |c| {
                c.env("KEYWARD_HOME", &home)
                    .env("KEYWARD_SYNC_POLL_MS", "50")
                    .env_remove("DBUS_SESSION_BUS_ADDRESS");
            },
        )?;
        let socket = home.join("run/agent.sock");
        let a = Self {
            dir,
            child,
            socket,
            own,
            sk,
        };
        wait_for(&a.socket, "the keyward agent's socket")?;
        a.client()?.unlock(PASSWORD).with_context(|| a.log())?;
        Ok(a)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn client(&self) -> Result<keyward_client::Client> {
        let start = Instant::now();
        loop {
            match keyward_client::Client::connect(&self.socket) {
                Ok(c) => return Ok(c),
                Err(e) if start.elapsed() > Duration::from_secs(5) => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

/// The inode of a file (a vault write replaces the file: a new inode).
fn inode(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.ino())
}

/// CPU time so far of the agent's sync watcher thread (`keyward-sync`),
/// which reads, merges and writes: from /proc/PID/task/TID/schedstat.
fn sync_thread_cpu_ns(pid: u32) -> Result<u64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        if std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == "keyward-sync") {
            return std::fs::read_to_string(dir.join("schedstat"))?
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .context("unreadable schedstat");
        }
    }
    bail!("the agent has no keyward-sync thread")
}

/// `get bench` round trips, each timed, for `secs` or until `stop`.
fn timed_gets(c: &mut keyward_client::Client, secs: f64, stop: &AtomicBool) -> Result<Samples> {
    let mut out = Samples::default();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs && !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let v = c.get("bench")?;
        out.push(t.elapsed());
        if v.expose() != VALUE {
            bail!("get bench: wrong value");
        }
    }
    Ok(out)
}

/// Part 2: `get` latency through a running agent, alone and while its sync
/// watcher merges a sibling part file that another device keeps
/// rewriting. `write` is the duration of one vault write (part 1).
fn during_merges(secs: f64, write: Duration) -> Result<()> {
    let agent = Agent::start()?;
    let pw = password()?;
    let data = agent.own.parent().context("no data directory")?.to_owned();
    let parsed = vault::read(&agent.own)?;
    let id = parsed.vault.account_id;
    // The other device: the same account opened by the library from the
    // agent's file; each version of its part changes PER_REWRITE more
    // items. The versions are made beforehand (on tmpfs), so that during
    // the measurement the other device costs only a file write, as when a
    // sync engine delivers its part.
    let mut b = vault::unlock(parsed, &pw, &agent.sk)?;
    let scratch = scratch_dir()?;
    let scratch_file = scratch.path().join("b.kwv");
    let versions_wanted = (secs * 20.0).ceil() as usize + 10;
    let started = Instant::now();
    let mut versions = Vec::with_capacity(versions_wanted);
    for k in 0..versions_wanted {
        for j in 0..PER_REWRITE {
            let i = 1 + (k * PER_REWRITE + j) % (ITEMS - 1);
            b.set(
                &scratch_file,
                &name(i),
                &value(&format!("v{k}"), i),
                T0 + 1000 + k as u64,
            )?;
        }
        versions.push(std::fs::read(&scratch_file)?);
    }
    let made = started.elapsed();
    drop(scratch);
    let sibling = data.join(format!("vault-{id}.{}.kwv", "b7".repeat(16)));
    let sibling_tmp = data.join(".sibling-delivery.tmp");

    let mut c = agent.client()?;
    let never = AtomicBool::new(false);
    // Warm up, then the quiet figures.
    timed_gets(&mut c, 0.5, &never)?;
    let quiet = timed_gets(&mut c, secs, &never)?;
    let cpu_before = sync_thread_cpu_ns(agent.pid())?;

    let stop = AtomicBool::new(false);
    let (busy, cycles, missed) = std::thread::scope(|scope| -> Result<_> {
        let writer = scope.spawn(|| -> Result<(Samples, usize)> {
            let mut cycles = Samples::default();
            let mut missed = 0;
            'versions: for bytes in &versions {
                let before = inode(&agent.own);
                let t = Instant::now();
                // Delivered again if the agent has not merged it within 1 s.
                'deliver: loop {
                    if stop.load(Ordering::Relaxed) {
                        break 'versions;
                    }
                    std::fs::write(&sibling_tmp, bytes)?;
                    std::fs::rename(&sibling_tmp, &sibling)?;
                    let sent = Instant::now();
                    // The agent has merged it when its own file is replaced.
                    while sent.elapsed() < Duration::from_secs(1) {
                        if inode(&agent.own) != before {
                            cycles.push(t.elapsed());
                            break 'deliver;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    missed += 1;
                }
                // The watcher stamps the folder after its write: a part
                // that lands before that stamp is not merged until the
                // folder changes again, so give it time to.
                std::thread::sleep(Duration::from_millis(GAP_MS));
            }
            stop.store(true, Ordering::Relaxed);
            Ok((cycles, missed))
        });
        let busy = timed_gets(&mut c, secs, &stop);
        stop.store(true, Ordering::Relaxed);
        let (cycles, missed) = writer
            .join()
            .map_err(|_| anyhow!("the writer panicked"))??;
        Ok((busy?, cycles, missed))
    })?;

    // The CPU time of the agent's sync thread per merge.
    let merge_cpu = sync_thread_cpu_ns(agent.pid())?.saturating_sub(cpu_before) as f64
        / cycles.0.len().max(1) as f64;
    // The agent holds the last version it merged.
    let k = cycles.0.len().saturating_sub(1);
    let i = 1 + (k * PER_REWRITE + PER_REWRITE - 1) % (ITEMS - 1);
    let got = c.get(&name(i))?;
    ensure!(
        cycles.0.is_empty() || got.expose() == value(&format!("v{k}"), i),
        "the agent does not hold the last merged version's {}",
        name(i)
    );
    let refused = agent
        .log()
        .lines()
        .filter(|l| l.contains("refused"))
        .count();
    ensure!(refused == 0, "the agent refused copies:\n{}", agent.log());

    println!("## `get` during merges, through a running agent (issue 17)");
    println!();
    println!(
        "Agent with a 10,000-item vault, sync watcher polling every 50 ms \
         (`KEYWARD_SYNC_POLL_MS=50`). Another device's part \
         (`vault-<ID>.<device>.kwv`) is rewritten with {PER_REWRITE} more changed items \
         each time (a file write and a rename; {} versions made beforehand in {:.1} s), \
         the next {GAP_MS} ms after the agent has merged the last and written its own file. \
         `get` of a 24-byte item back to back on one connection (`Client::get`), {secs} s \
         each, unpinned.",
        versions.len(),
        made.as_secs_f64()
    );
    println!();
    println!("| while | gets | median | p99 | p99.9 | max | > 1 ms |");
    println!("|---|---|---|---|---|---|---|");
    for (label, x) in [
        ("nothing else runs".to_owned(), &quiet),
        (
            format!(
                "the agent merges ({} merges{})",
                cycles.0.len(),
                if missed > 0 {
                    format!(", {missed} deliveries not merged within 1 s")
                } else {
                    String::new()
                }
            ),
            &busy,
        ),
    ] {
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            x.0.len(),
            fmt(x.median()),
            fmt(x.quantile(0.99)),
            fmt(x.quantile(0.999)),
            fmt(x.max()),
            x.0.iter()
                .filter(|d| **d > Duration::from_millis(1))
                .count()
        );
    }
    println!();
    let slow = busy.0.iter().filter(|d| **d > write).count();
    let quiet_slow = quiet.0.iter().filter(|d| **d > write).count();
    println!(
        "Part rewritten → agent's file replaced (poll wait, read, merge, write): {}; \
         CPU time of the agent's sync thread per merge {:.1} ms; gets slower than one write: \
         {slow} of {} during merges, {quiet_slow} of {} with nothing else running (the \
         machine's own noise).",
        cycles.summary(),
        merge_cpu / 1e6,
        busy.0.len(),
        quiet.0.len()
    );
    println!(
        "Target: max `get` during merges ≤ one write of the vault ({} median, part 1) — \
         max {}: {}",
        fmt(write),
        fmt(busy.max()),
        verdict(busy.max() <= write)
    );
    println!();
    Ok(())
}

/// `keyward-bench merge [ROUNDS] [SECS]`.
pub fn run(rounds: usize, secs: usize) -> Result<()> {
    let write = in_process(rounds.max(1))?;
    during_merges(secs.max(1) as f64, write)
}
