//! `keyward-bench`: keyward measured side by side with its references.
//!
//! ```text
//! keyward-bench all                 everything below, in order
//! keyward-bench rtt [ROUNDS] [N]    get round trip vs ssh-agent identities, pinned and unpinned
//! keyward-bench throughput [SECS] [threads|epoll|split]
//!                                   requests/s with 1, 8, 64 connections vs ssh-agent,
//!                                   and the ceiling (a server doing no work) under the same load;
//!                                   every load layout, or only the one named
//! keyward-bench cold [RUNS]         `keyward get`/`status` as processes vs `ssh-add -l`
//! keyward-bench kdf [ROUNDS]        Argon2id vs the reference C argon2
//! keyward-bench memory              agent RSS idle, unlocked, after lock; ssh-agent, gpg-agent
//! keyward-bench scale [ROUNDS] [N]  get and set with 10 vs 10,000 items
//! keyward-bench merge [ROUNDS] [SECS]
//!                                   merging two 10,000-item vaults in process, and
//!                                   `get` latency while a running agent merges (issue 17)
//! keyward-bench drive SOCKET NAME N  N `get NAME` round trips on one connection to
//!                                   a running agent (a steady load to profile it under)
//! ```
//!
//! Build the shipped binaries with `cargo build --release --locked -p keyward
//! -p keyward-agent -p pam_keyward` (the agent is linked for the exact
//! symbols of that build, see agent/link/), then `cargo build --release
//! --locked -p keyward-bench`, and run `target/release/keyward-bench all`. Figures are medians with
//! min–max; ratios are of medians measured in the same run, interleaved.
//! docs/BENCHMARKS.md records the results.

mod ceiling;
mod kdf;
mod merge;
mod procs;
mod ssh;
mod stats;
mod suite;

use anyhow::{Context, Result, bail};
use keyward_agent::account::password::KdfParams;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    if args.first().map(String::as_str) == Some("ceiling-server") {
        let socket = args.get(1).context("ceiling-server SOCKET")?;
        return ceiling::serve(std::path::Path::new(socket));
    }
    if args.first().map(String::as_str) == Some("drive") {
        let (Some(socket), Some(name)) = (args.get(1), args.get(2)) else {
            bail!("drive SOCKET NAME N");
        };
        return suite::drive(std::path::Path::new(socket), name, n(3, 100_000));
    }
    suite::header();
    match args.first().map(String::as_str) {
        Some("rtt") => suite::rtt(n(1, 15), n(2, 2000)),
        Some("throughput") => suite::throughput(n(1, 5) as u64, args.get(2).map(String::as_str)),
        Some("cold") => suite::cold(n(1, 200)),
        Some("kdf") => kdf::run(n(1, 11), KdfParams::DEFAULT),
        Some("memory") => suite::memory(),
        Some("scale") => suite::scale(n(1, 15), n(2, 2000)),
        Some("ssh") => ssh::run(n(1, 15), n(2, 2000)),
        Some("merge") => merge::run(n(1, 21), n(2, 5)),
        Some("all") => {
            suite::rtt(15, 2000)?;
            suite::throughput(5, None)?;
            suite::cold(200)?;
            kdf::run(11, KdfParams::DEFAULT)?;
            suite::memory()?;
            suite::scale(15, 2000)?;
            ssh::run(15, 2000)
        }
        _ => bail!(
            "usage: keyward-bench all | rtt [ROUNDS] [N] | throughput [SECS] [threads|epoll|split] | cold [RUNS] | kdf [ROUNDS] | memory | scale [ROUNDS] [N] | ssh [ROUNDS] [N] | merge [ROUNDS] [SECS]"
        ),
    }
}
