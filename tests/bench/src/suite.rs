//! The measurements: round trip, throughput, cold CLI calls, memory, scale.
//! keyward and its reference always run in the same process of this program,
//! interleaved, so that the machine's noise falls on both.

use crate::procs::{Keyward, Rss, SshAgent, VALUE, bin_dir, cpu_ns, round_trip, rss_kib, which};
use crate::stats::{Samples, fmt, ratio};
use anyhow::{Context, Result, bail};
use keyward_client::message::{Request, Response};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// Pins the calling thread to `cpu`.
fn pin_self(cpu: usize) -> Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).context("sched_setaffinity")
}

fn unpin_self() {
    let mut set = rustix::thread::CpuSet::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for c in 0..cpus.clamp(64, rustix::thread::CpuSet::MAX_CPU) {
        set.set(c);
    }
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// `rounds` × `per_round` request/response pairs on one connection; one
/// sample per round (its median).
fn rtt_rounds(
    k: &mut std::os::unix::net::UnixStream,
    s: &mut std::os::unix::net::UnixStream,
    rounds: usize,
    per_round: usize,
) -> Result<(Samples, Samples)> {
    let (kreq, sreq) = (Keyward::get_request(), SshAgent::identities_request());
    let mut reply = Vec::with_capacity(1024);
    // Warm up both (caches, page faults, the agents' first allocations).
    for _ in 0..2000 {
        round_trip(k, &kreq, &mut reply)?;
        round_trip(s, &sreq, &mut reply)?;
    }
    let (mut ks, mut ss) = (Samples::default(), Samples::default());
    let mut one = Vec::with_capacity(per_round);
    for _ in 0..rounds {
        for (stream, req, out, expect) in [
            (&mut *k, &kreq, &mut ks, 0x83u8),
            (&mut *s, &sreq, &mut ss, 12u8),
        ] {
            one.clear();
            for _ in 0..per_round {
                let t = Instant::now();
                let first = round_trip(stream, req, &mut reply)?;
                one.push(t.elapsed());
                if first != expect {
                    bail!("unexpected reply type {first}");
                }
            }
            out.push(Samples(one.clone()).median());
        }
    }
    Ok((ks, ss))
}

/// `n` round trips of `get name` on one connection to a running agent, for
/// profiling it (`valgrind --tool=callgrind`, `perf`) under a steady load.
pub fn drive(socket: &std::path::Path, name: &str, n: usize) -> Result<()> {
    let mut s = crate::procs::connect_raw(socket)?;
    let req = Request::Get { name: name.into() }.encode().0;
    let mut reply = Vec::with_capacity(256);
    let start = Instant::now();
    for _ in 0..n {
        round_trip(&mut s, &req, &mut reply)?;
    }
    let per = start.elapsed() / n.max(1) as u32;
    println!("{n} round trips, {per:?} each on average");
    Ok(())
}

/// 1. Round trip of `get` vs ssh-agent's identities, pinned and unpinned.
pub fn rtt(rounds: usize, per_round: usize) -> Result<()> {
    println!("## Round trip: `get` (small item) vs ssh-agent REQUEST_IDENTITIES (one ed25519 key)");
    println!(
        "{rounds} rounds × {per_round} requests each, one connection each, interleaved; per-round medians."
    );
    println!();
    println!("| placement | keyward `get` | ssh-agent identities | ratio | target |");
    println!("|---|---|---|---|---|");
    for (label, pin, target) in [
        ("client and agents pinned to CPU 0", Some(0), 0.7),
        ("unpinned", None, 1.0),
    ] {
        match pin {
            Some(cpu) => pin_self(cpu)?,
            None => unpin_self(),
        }
        let k = Keyward::start(pin, 10)?;
        let s = SshAgent::start(pin)?;
        let (ks, ss) = rtt_rounds(&mut k.raw()?, &mut s.raw()?, rounds, per_round)?;
        let r = ratio(&ks, &ss);
        println!(
            "| {label} | {} | {} | {r:.2} | ≤ {target} ({}) |",
            ks.summary(),
            ss.summary(),
            verdict(r <= target)
        );
    }
    unpin_self();
    println!();
    Ok(())
}

/// How the load is generated, and where the servers and the generator run.
#[derive(Clone, Copy)]
enum Load {
    /// One blocking client thread per connection, everything unpinned.
    Threads,
    /// One event-driven generator thread per CPU, everything unpinned.
    Epoll,
    /// Servers pinned to CPU 0, one event-driven generator thread pinned
    /// to CPU 1: each side has a CPU of its own.
    Split,
}

impl Load {
    fn label(self) -> &'static str {
        match self {
            Load::Threads => "threads",
            Load::Epoll => "epoll",
            Load::Split => "split",
        }
    }

    /// The CPU the servers are pinned to.
    fn server_cpu(self) -> Option<usize> {
        match self {
            Load::Split => Some(0),
            _ => None,
        }
    }

    /// Requests answered in `secs` seconds over `conns` connections.
    fn run(
        self,
        make: &(dyn Fn() -> Result<std::os::unix::net::UnixStream> + Sync),
        req: &[u8],
        conns: usize,
        secs: u64,
    ) -> Result<u64> {
        match self {
            Load::Threads => hammer(make, req, conns, secs),
            Load::Epoll => {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                hammer_evented(make, req, conns, secs, cpus, None)
            }
            Load::Split => hammer_evented(make, req, conns, secs, 1, Some(1)),
        }
    }
}

fn hammer(
    make: &(dyn Fn() -> Result<std::os::unix::net::UnixStream> + Sync),
    req: &[u8],
    conns: usize,
    secs: u64,
) -> Result<u64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let streams: Vec<_> = (0..conns).map(|_| make()).collect::<Result<_>>()?;
    std::thread::scope(|scope| {
        for mut s in streams {
            let (done, stop) = (done.clone(), stop.clone());
            scope.spawn(move || {
                let mut reply = Vec::with_capacity(256);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    if round_trip(&mut s, req, &mut reply).is_err() {
                        break;
                    }
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
    });
    Ok(done.load(Ordering::Relaxed))
}

/// The same load from an event-driven generator, the way `wrk` or
/// `memtier` drive a server: `threads` threads (optionally pinned to `cpu`),
/// each owning its share of the connections through epoll, one request
/// outstanding per connection. Unlike [`hammer`], the generator does not
/// put a sleeping thread per connection on the CPUs the server needs.
fn hammer_evented(
    make: &(dyn Fn() -> Result<std::os::unix::net::UnixStream> + Sync),
    req: &[u8],
    conns: usize,
    secs: u64,
    threads: usize,
    cpu: Option<usize>,
) -> Result<u64> {
    use rustix::event::epoll;
    use std::io::{Read, Write};
    let threads = threads.clamp(1, conns);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut shares: Vec<Vec<std::os::unix::net::UnixStream>> =
        (0..threads).map(|_| Vec::new()).collect();
    for i in 0..conns {
        shares[i % threads].push(make()?);
    }
    std::thread::scope(|scope| -> Result<()> {
        let mut workers = Vec::new();
        for mut streams in shares {
            let (done, stop) = (&done, &stop);
            workers.push(scope.spawn(move || -> Result<()> {
                if let Some(cpu) = cpu {
                    pin_self(cpu)?;
                }
                let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
                let mut bufs: Vec<Vec<u8>> = vec![Vec::with_capacity(256); streams.len()];
                for (i, s) in streams.iter_mut().enumerate() {
                    epoll::add(
                        &ep,
                        &*s,
                        epoll::EventData::new_u64(i as u64),
                        epoll::EventFlags::IN,
                    )?;
                    s.write_all(req)?;
                }
                let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
                let mut chunk = [0u8; 4096];
                let mut n = 0u64;
                let tick = rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                };
                while !stop.load(Ordering::Relaxed) {
                    events.clear();
                    epoll::wait(
                        &ep,
                        rustix::buffer::spare_capacity(&mut events),
                        Some(&tick),
                    )?;
                    for ev in &events {
                        let i = ev.data.u64() as usize;
                        let got = streams[i].read(&mut chunk)?;
                        if got == 0 {
                            bail!("the server closed a connection");
                        }
                        let buf = &mut bufs[i];
                        buf.extend_from_slice(&chunk[..got]);
                        // One request is outstanding: at most one full reply.
                        if buf.len() >= 4 {
                            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                            if buf.len() >= 4 + len {
                                buf.drain(..4 + len);
                                n += 1;
                                streams[i].write_all(req)?;
                            }
                        }
                    }
                }
                done.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }));
        }
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(done.load(Ordering::Relaxed))
}

/// 2. Throughput with 1, 8, 64 connections, `secs` seconds each.
pub fn throughput(secs: u64, only: Option<&str>) -> Result<()> {
    let loads: Vec<Load> = [Load::Threads, Load::Epoll, Load::Split]
        .into_iter()
        .filter(|l| only.is_none_or(|o| o == l.label()))
        .collect();
    if loads.is_empty() {
        bail!("no load layout named {only:?}: threads, epoll or split");
    }
    println!(
        "## Throughput: requests per second with N concurrent connections, {secs} s each, interleaved"
    );
    println!();
    println!(
        "Generator \"threads\": one blocking client thread per connection. \
         Generator \"epoll\": one thread per CPU driving its share of the connections (like wrk). \
         \"split\": servers pinned to CPU 0, one epoll generator thread pinned to CPU 1."
    );
    println!();
    println!(
        "| generator | connections | keyward `get`/s | ssh-agent identities/s | ratio | target | ceiling/s | ceiling ÷ ssh-agent |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut cpu_rows = Vec::new();
    for load in loads {
        let pin = load.server_cpu();
        let k = Keyward::start(pin, 10)?;
        let s = SshAgent::start(pin)?;
        let c = crate::ceiling::Ceiling::start(pin)?;
        let (kreq, sreq) = (Keyward::get_request(), SshAgent::identities_request());
        for conns in [1usize, 8, 64] {
            // Requests per second, and the server's CPU time per request.
            let measure = |pid: u32,
                           make: &(dyn Fn() -> Result<std::os::unix::net::UnixStream> + Sync),
                           req: &[u8]|
             -> Result<(f64, f64)> {
                let before = cpu_ns(pid)?;
                let n = load.run(make, req, conns, secs)?;
                let used = cpu_ns(pid)?.saturating_sub(before);
                Ok((
                    n as f64 / secs as f64,
                    used as f64 / 1000.0 / n.max(1) as f64,
                ))
            };
            let (kn, kcpu) = measure(k.pid(), &|| k.raw(), &kreq)?;
            let (sn, scpu) = measure(s.pid(), &|| s.raw(), &sreq)?;
            let (cn, ccpu) = measure(c.pid(), &|| c.raw(), &sreq)?;
            let r = kn / sn;
            let target = if conns == 64 {
                format!("≥ 3 ({})", verdict(r >= 3.0))
            } else {
                "—".into()
            };
            println!(
                "| {} | {conns} | {kn:.0} | {sn:.0} | {r:.2} | {target} | {cn:.0} | {:.2} |",
                load.label(),
                cn / sn
            );
            cpu_rows.push(format!(
                "| {} | {conns} | {kcpu:.2} | {scpu:.2} | {:.2} | {ccpu:.2} |",
                load.label(),
                scpu / kcpu
            ));
        }
    }
    println!();
    println!("Server CPU time per request (µs; all its threads, from /proc/PID/task/*/schedstat):");
    println!();
    println!("| generator | connections | keyward | ssh-agent | ssh-agent ÷ keyward | ceiling |");
    println!("|---|---|---|---|---|---|");
    for row in cpu_rows {
        println!("{row}");
    }
    println!();
    Ok(())
}

fn time_command(mut cmd: Command) -> Result<Duration> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let t = Instant::now();
    let st = cmd.status()?;
    let d = t.elapsed();
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(d)
}

/// 3. Cold CLI calls as whole processes vs `ssh-add -l`.
pub fn cold(runs: usize) -> Result<()> {
    println!(
        "## Cold CLI call, whole process (fork, exec, connect, answer, exit), {runs} runs interleaved"
    );
    println!();
    let k = Keyward::start(None, 10)?;
    let s = SshAgent::start(None)?;
    let keyward = bin_dir().join("keyward");
    let ssh_add = which("ssh-add").context("ssh-add not found")?;
    let (mut get, mut status, mut list) =
        (Samples::default(), Samples::default(), Samples::default());
    for _ in 0..runs {
        let mut c = Command::new(&keyward);
        c.args(["--no-autostart", "get", "bench"])
            .env("KEYWARD_HOME", k.home());
        get.push(time_command(c)?);
        let mut c = Command::new(&keyward);
        c.args(["--no-autostart", "status"])
            .env("KEYWARD_HOME", k.home());
        status.push(time_command(c)?);
        let mut c = Command::new(&ssh_add);
        c.arg("-l").env("SSH_AUTH_SOCK", &s.socket);
        list.push(time_command(c)?);
    }
    println!("| command | median (min–max) | ratio to `ssh-add -l` | target |");
    println!("|---|---|---|---|");
    let rg = ratio(&get, &list);
    println!(
        "| `keyward get NAME` | {} | {rg:.2} | ≤ 0.5 ({}) |",
        get.summary(),
        verdict(rg <= 0.5)
    );
    println!(
        "| `keyward status` | {} | {:.2} | — |",
        status.summary(),
        ratio(&status, &list)
    );
    println!("| `ssh-add -l` | {} | 1.00 | — |", list.summary());
    println!();
    Ok(())
}

fn settle_rss(pid: u32) -> Result<Rss> {
    std::thread::sleep(Duration::from_millis(500));
    rss_kib(pid)
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

/// One row of the memory table; `limit` in KiB, if the state has a target.
fn rss_row(label: &str, rss: Rss, limit: Option<u64>) {
    let target = match limit {
        Some(kib) => format!("≤ {} MiB ({})", kib / 1024, verdict(rss.total <= kib)),
        None => "—".into(),
    };
    println!(
        "| {label} | {} | {} | {target} |",
        mib(rss.total),
        mib(rss.anon)
    );
}

/// 5. Resident memory of the agents.
pub fn memory() -> Result<()> {
    println!("## Memory: resident set size (VmRSS, and its anonymous part RssAnon)");
    println!();
    println!("| process, state | RSS | of which anonymous | target |");
    println!("|---|---|---|---|");
    let fresh = Keyward::start(None, 0)?;
    rss_row(
        "keyward-agent, idle (no account)",
        settle_rss(fresh.pid())?,
        Some(4096),
    );
    drop(fresh);
    let login = Keyward::start_locked(None, 10)?;
    login.client()?.status()?;
    rss_row(
        "keyward-agent, idle (account with 10 items, never unlocked)",
        settle_rss(login.pid())?,
        Some(4096),
    );
    drop(login);
    let k = Keyward::start_with_init(None)?;
    k.client()?.lock()?;
    k.unlock()?;
    k.client()?.lock()?;
    rss_row(
        "keyward-agent, after an unlock (64 MiB Argon2id) and a lock",
        settle_rss(k.pid())?,
        Some(8192),
    );
    drop(k);
    let big = Keyward::start(None, 10_000)?;
    rss_row(
        "keyward-agent, unlocked, 10,000 items",
        settle_rss(big.pid())?,
        None,
    );
    big.client()?.lock()?;
    rss_row(
        "keyward-agent, 10,000 items, after lock",
        settle_rss(big.pid())?,
        Some(8192),
    );
    drop(big);
    let s = SshAgent::start(None)?;
    rss_row("ssh-agent, idle, one key", settle_rss(s.pid())?, None);
    drop(s);
    match gpg_agent_idle() {
        Ok(rss) => rss_row("gpg-agent, idle", rss, None),
        Err(e) => println!("| gpg-agent, idle | not measured: {e} | | — |"),
    }
    println!();
    Ok(())
}

/// gpg-agent started the way gpg starts it, asked for its pid over its own
/// socket (it forks even with `--no-detach`, so the spawned process is not
/// always the one that stays), measured, then stopped with `gpgconf --kill`.
fn gpg_agent_idle() -> Result<Rss> {
    let dir = tempfile::Builder::new().prefix("gpg-bench-").tempdir()?;
    let _child =
        Command::new(which("gpg-agent").context("gpg-agent not found (package gpg-agent)")?)
            .arg("--homedir")
            .arg(dir.path())
            .args(["--daemon", "--no-detach"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(crate::procs::Daemon)?;
    let pid = (|| -> Result<u32> {
        let start = Instant::now();
        loop {
            let out = Command::new("gpg-connect-agent")
                .arg("--homedir")
                .arg(dir.path())
                .args(["--no-autostart", "GETINFO pid", "/bye"])
                .stderr(Stdio::null())
                .output()
                .context("gpg-connect-agent not found (package gpgconf)")?;
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(pid) = text
                .lines()
                .find_map(|l| l.strip_prefix("D "))
                .and_then(|p| p.trim().parse().ok())
            {
                return Ok(pid);
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("gpg-agent did not answer GETINFO pid");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })();
    let rss = pid.and_then(settle_rss);
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(dir.path())
        .args(["--kill", "gpg-agent"])
        .stderr(Stdio::null())
        .status();
    rss
}

fn set_times(k: &Keyward, n: usize) -> Result<Samples> {
    let mut c = k.client()?;
    let mut out = Samples::default();
    for i in 0..n {
        let req = Request::Set {
            name: format!("scale/{i}"),
            value: keyward_client::Secret::from_slice(VALUE),
        };
        let t = Instant::now();
        match c.call(&req)? {
            Response::Ok => out.push(t.elapsed()),
            other => bail!("set: {other:?}"),
        }
    }
    Ok(out)
}

/// 6. `get` and `set` with 10 and 10,000 items.
pub fn scale(rounds: usize, per_round: usize) -> Result<()> {
    println!("## Scale: 10 items vs 10,000 items (client and agents pinned to CPU 0)");
    println!();
    // Pinned, so that where the scheduler puts the threads (which dominates
    // unpinned round trips on a 2-vCPU VM) does not hide the cost of the
    // item count.
    pin_self(0)?;
    let small = Keyward::start(Some(0), 10)?;
    let large = Keyward::start(Some(0), 10_000)?;
    let (g10, g10k) = rtt_pairs(&small, &large, rounds, per_round)?;
    let s10 = set_times(&small, 30)?;
    let s10k = set_times(&large, 30)?;
    println!("| operation | 10 items | 10,000 items | ratio | target |");
    println!("|---|---|---|---|---|");
    let rg = ratio(&g10k, &g10);
    println!(
        "| `get` round trip | {} | {} | {rg:.2} | ≤ 1.10 ({}) |",
        g10.summary(),
        g10k.summary(),
        verdict(rg <= 1.10)
    );
    println!(
        "| `set` (vault written and fsynced) | {} | {} | {:.2} | 10,000 items < 20 ms ({}) |",
        s10.summary(),
        s10k.summary(),
        ratio(&s10k, &s10),
        verdict(s10k.median() < Duration::from_millis(20))
    );
    let size = std::fs::read_dir(large.home().join("data"))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".kwv"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum::<u64>();
    println!(
        "(the 10,000-item vault is {} KiB; one `set` rewrites all of it)",
        size / 1024
    );
    println!();
    drop((small, large));
    unpin_self();
    gets_during_writes(3000)
}

/// `get` round trips on a 10,000-item vault, each timed, without and then
/// with a second connection writing (`set`) back to back: what a vault
/// write costs the readers. Unpinned: the writer's encode and fsync and the
/// reader must not queue for one CPU.
fn gets_during_writes(n: usize) -> Result<()> {
    let k = Keyward::start(None, 10_000)?;
    let mut s = k.raw()?;
    let req = Keyward::get_request();
    let mut reply = Vec::with_capacity(256);
    let mut timed = |s: &mut std::os::unix::net::UnixStream| -> Result<Samples> {
        let mut out = Samples::default();
        for _ in 0..n {
            let t = Instant::now();
            round_trip(s, &req, &mut reply)?;
            out.push(t.elapsed());
        }
        Ok(out)
    };
    let quiet = timed(&mut s)?;
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    let busy = std::thread::scope(|scope| -> Result<Samples> {
        let writer = scope.spawn(|| -> Result<()> {
            let mut c = k.client()?;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let req = Request::Set {
                    name: format!("churn/{}", i % 16),
                    value: keyward_client::Secret::from_slice(VALUE),
                };
                match c.call(&req)? {
                    Response::Ok => i += 1,
                    other => bail!("set: {other:?}"),
                }
            }
            writes.store(i, Ordering::Relaxed);
            Ok(())
        });
        // Let the writer get going.
        std::thread::sleep(Duration::from_millis(200));
        let busy = timed(&mut s);
        stop.store(true, Ordering::Relaxed);
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
        busy
    })?;
    println!("`get` round trips on the 10,000-item vault, {n} each, unpinned:");
    println!();
    println!("| while | median | p99 | max |");
    println!("|---|---|---|---|");
    for (label, x) in [
        ("nothing else runs", &quiet),
        (
            &*format!(
                "another connection sets back to back ({} sets)",
                writes.load(Ordering::Relaxed)
            ),
            &busy,
        ),
    ] {
        println!(
            "| {label} | {} | {} | {} |",
            fmt(x.median()),
            fmt(x.quantile(0.99)),
            fmt(x.max())
        );
    }
    println!();
    Ok(())
}

fn rtt_pairs(
    a: &Keyward,
    b: &Keyward,
    rounds: usize,
    per_round: usize,
) -> Result<(Samples, Samples)> {
    let req = Keyward::get_request();
    let (mut sa, mut sb) = (a.raw()?, b.raw()?);
    let mut reply = Vec::new();
    for _ in 0..2000 {
        round_trip(&mut sa, &req, &mut reply)?;
        round_trip(&mut sb, &req, &mut reply)?;
    }
    let (mut oa, mut ob) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        for (s, out) in [(&mut sa, &mut oa), (&mut sb, &mut ob)] {
            let mut one = Vec::with_capacity(per_round);
            for _ in 0..per_round {
                let t = Instant::now();
                round_trip(s, &req, &mut reply)?;
                one.push(t.elapsed());
            }
            out.push(Samples(one).median());
        }
    }
    Ok((oa, ob))
}

/// Prints the machine line for the report.
pub fn header() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let _ = fmt;
    println!("keyward-bench on {cpus} CPUs ({model})");
    println!();
}
