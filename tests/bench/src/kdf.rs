//! One unlock's key derivation (Argon2id, default parameters) against the
//! reference C implementation (Debian's `argon2`, i.e. libargon2), side by
//! side and interleaved, with the outputs compared byte for byte.

use crate::stats::{Samples, ratio};
use anyhow::{Context, Result, bail};
use keyward_agent::account::password::{KdfParams, argon2id};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

const PASSWORD: &[u8] = b"correct horse battery staple";
/// The C command line takes the salt as text, so both sides use this one.
const SALT: &str = "keyward-bench-salt-0123456789abc";

fn reference(params: &KdfParams) -> Result<(Vec<u8>, std::time::Duration)> {
    let start = Instant::now();
    let mut child = Command::new("argon2")
        .args([
            SALT,
            "-id",
            "-t",
            &params.t.to_string(),
            "-k",
            &params.m_kib.to_string(),
        ])
        .args(["-p", &params.p.to_string(), "-l", "32", "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run `argon2` (apt-get install --no-install-recommends argon2)")?;
    child.stdin.take().context("stdin")?.write_all(PASSWORD)?;
    let out = child.wait_with_output()?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!("argon2 failed: {}", out.status);
    }
    let hex = String::from_utf8(out.stdout)?.trim().to_owned();
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()?;
    Ok((bytes, elapsed))
}

/// Runs the comparison and prints a table.
pub fn run(rounds: usize, params: KdfParams) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (params.p as usize).min(cores);
    println!(
        "## Argon2id, m = {} KiB, t = {}, p = {} — {rounds} rounds, interleaved; {cores} cores",
        params.m_kib, params.t, params.p
    );
    let (mut ours, mut ours_1, mut c) =
        (Samples::default(), Samples::default(), Samples::default());
    let mut identical = true;
    for _ in 0..rounds {
        let t = Instant::now();
        let k = argon2id(PASSWORD, SALT.as_bytes(), &params, threads)?;
        ours.push(t.elapsed());
        let t = Instant::now();
        let k1 = argon2id(PASSWORD, SALT.as_bytes(), &params, 1)?;
        ours_1.push(t.elapsed());
        let (ref_out, d) = reference(&params)?;
        c.push(d);
        identical &= ref_out == k.expose() && ref_out == k1.expose();
    }
    if !identical {
        bail!("keyward's Argon2id output differs from the reference C implementation");
    }
    println!("| implementation | median (min–max) | ratio to C |");
    println!("|---|---|---|");
    println!(
        "| keyward (argon2 crate, `parallel`, {threads} threads) | {} | {:.2} |",
        ours.summary(),
        ratio(&ours, &c)
    );
    println!(
        "| keyward (argon2 crate, 1 thread) | {} | {:.2} |",
        ours_1.summary(),
        ratio(&ours_1, &c)
    );
    println!(
        "| reference C `argon2` (libargon2, p = {} threads, whole process) | {} | 1.00 |",
        params.p,
        c.summary()
    );
    println!("outputs byte-identical: yes ({rounds} × 3 derivations)");
    Ok(())
}
