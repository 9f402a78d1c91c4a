//! The SSH agent, side by side with OpenSSH's ssh-agent holding the same
//! ed25519 key (issue 16's targets): a signature's round trip, the
//! identities round trip (client and both agents pinned to CPU 0, and
//! unpinned), and `ssh-add -l` as a whole process.

use crate::procs::{Keyward, SshAgent, round_trip};
use crate::stats::{Samples, ratio};
use anyhow::{Context, Result, bail};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn pin_self(cpu: Option<usize>) -> Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    match cpu {
        Some(c) => set.set(c),
        None => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            for c in 0..cpus.min(rustix::thread::CpuSet::MAX_CPU) {
                set.set(c);
            }
        }
    }
    rustix::thread::sched_setaffinity(None, &set).context("sched_setaffinity")
}

fn put(v: &mut Vec<u8>, s: &[u8]) {
    v.extend_from_slice(&(s.len() as u32).to_be_bytes());
    v.extend_from_slice(s);
}

/// The key blob of an OpenSSH `.pub` file.
fn blob_of(public: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(public)?;
    let b64 = text
        .split_whitespace()
        .nth(1)
        .context("no key in the .pub file")?;
    base64_decode(b64)
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = A.iter().position(|&a| a == c).context("bad base64")? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// SIGN_REQUEST for `blob` over a userauth-sized message.
fn sign_request(blob: &[u8]) -> Vec<u8> {
    let mut body = vec![13u8];
    put(&mut body, blob);
    put(&mut body, &[0x5a; 180]);
    body.extend_from_slice(&0u32.to_be_bytes());
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&body);
    v
}

/// Medians per round of `per_round` round trips, both agents interleaved.
fn rounds(
    k: &mut UnixStream,
    s: &mut UnixStream,
    req: &[u8],
    expect: u8,
    rounds: usize,
    per_round: usize,
) -> Result<(Samples, Samples)> {
    let mut reply = Vec::with_capacity(1024);
    for _ in 0..per_round.min(500) {
        round_trip(k, req, &mut reply)?;
        round_trip(s, req, &mut reply)?;
    }
    let (mut ks, mut ss) = (Samples::default(), Samples::default());
    let mut one = Vec::with_capacity(per_round);
    for _ in 0..rounds {
        for (stream, out) in [(&mut *k, &mut ks), (&mut *s, &mut ss)] {
            one.clear();
            for _ in 0..per_round {
                let t = Instant::now();
                let first = round_trip(stream, req, &mut reply)?;
                one.push(t.elapsed());
                if first != expect {
                    bail!("unexpected reply type {first} (expected {expect})");
                }
            }
            out.push(Samples(one.clone()).median());
        }
    }
    Ok((ks, ss))
}

/// `ssh-add -l` against `socket`, timed as a whole process.
fn ssh_add_l(socket: &Path) -> Result<std::time::Duration> {
    let t = Instant::now();
    let ok = Command::new("ssh-add")
        .arg("-l")
        .env("SSH_AUTH_SOCK", socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    let d = t.elapsed();
    if !ok {
        bail!("ssh-add -l failed against {}", socket.display());
    }
    Ok(d)
}

/// `keyward-bench ssh [ROUNDS] [N]`.
pub fn run(n_rounds: usize, per_round: usize) -> Result<()> {
    println!("## The SSH agent vs OpenSSH's ssh-agent (the same ed25519 key in both)");
    println!(
        "{n_rounds} rounds × {per_round} requests each, one connection to each agent, interleaved; per-round medians."
    );
    println!();
    println!("| measure | placement | keyward | ssh-agent | ratio | target |");
    println!("|---|---|---|---|---|---|");
    for (label, pin) in [("pinned to CPU 0", Some(0)), ("unpinned", None)] {
        pin_self(pin)?;
        let s = SshAgent::start(pin)?;
        let k = Keyward::start(pin, 10)?;
        let ksock = k.home().join("run/ssh.sock");
        let ok = Command::new("ssh-add")
            .arg("-q")
            .arg(&s.key)
            .env("SSH_AUTH_SOCK", &ksock)
            .stderr(Stdio::null())
            .status()?
            .success();
        if !ok {
            bail!("ssh-add into keyward failed");
        }
        let blob = blob_of(&s.key.with_extension("pub"))?;
        let (mut kc, mut sc) = (UnixStream::connect(&ksock)?, s.raw()?);
        let (ks, ss) = rounds(
            &mut kc,
            &mut sc,
            &sign_request(&blob),
            14,
            n_rounds,
            per_round / 4,
        )?;
        let r = ratio(&ks, &ss);
        println!(
            "| ed25519 sign round trip | {label} | {} | {} | {r:.2} | ≤ 0.5 ({}) |",
            ks.summary(),
            ss.summary(),
            verdict(r <= 0.5)
        );
        let (ks, ss) = rounds(&mut kc, &mut sc, &[0, 0, 0, 1, 11], 12, n_rounds, per_round)?;
        let r = ratio(&ks, &ss);
        let target = if pin.is_some() { 0.7 } else { 1.0 };
        println!(
            "| identities round trip | {label} | {} | {} | {r:.2} | ≤ {target} ({}) |",
            ks.summary(),
            ss.summary(),
            verdict(r <= target)
        );
        if pin.is_none() {
            let (mut kp, mut sp) = (Samples::default(), Samples::default());
            for _ in 0..n_rounds {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for _ in 0..10 {
                    a.push(ssh_add_l(&ksock)?);
                    b.push(ssh_add_l(&s.socket)?);
                }
                kp.push(Samples(a).median());
                sp.push(Samples(b).median());
            }
            let r = ratio(&kp, &sp);
            println!(
                "| `ssh-add -l` (whole process) | {label} | {} | {} | {r:.2} | ≤ 1.0 ({}) |",
                kp.summary(),
                sp.summary(),
                verdict(r <= 1.0)
            );
        }
    }
    pin_self(None)?;
    println!();
    Ok(())
}
