//! `keyward-bench`: keyward measured side by side with its references.
//!
//! ```text
//! keyward-bench kdf [ROUNDS]      Argon2id vs the reference C argon2
//! ```
//!
//! Figures are medians with min–max over interleaved rounds; ratios are of
//! medians measured in the same run. docs/BENCHMARKS.md records the results.

mod kdf;
mod stats;

use anyhow::{Result, bail};
use keyward_agent::account::password::KdfParams;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds =
        |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("kdf") => kdf::run(rounds(1, 11), KdfParams::DEFAULT),
        _ => bail!("usage: keyward-bench kdf [ROUNDS]"),
    }
}
