//! Failed-attempt counting with a persisted, doubling back-off.
//!
//! Wrong passwords, wrong Secret Keys and wrong recovery codes all count.
//! The first [`FREE_FAILURES`] are free; then each failure doubles a delay
//! (1 s, 2 s, 4 s, … capped at [`MAX_DELAY`]) during which unlock attempts are
//! refused without running Argon2id. The count and the time of the last
//! failure live in a file, so restarting the agent does not reset them.
//!
//! Time: the delay runs from the last failure. Elapsed time is the smaller
//! of the wall-clock difference (clamped at 0, so setting the clock back
//! restarts the wait rather than shortening it) and, within one agent run, the
//! monotonic difference (so setting the clock forward does not shorten it either).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// Failures allowed before any delay.
pub const FREE_FAILURES: u32 = 3;
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// The delay after `failures` consecutive failures.
pub fn delay_for(failures: u32) -> Duration {
    if failures <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let exp = (failures - FREE_FAILURES - 1).min(30);
    Duration::from_secs(1u64 << exp).min(MAX_DELAY)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct OnDisk {
    failures: u32,
    last_failure_unix: u64,
}

/// The attempt counter of one agent.
#[derive(Debug)]
pub struct Attempts {
    path: PathBuf,
    disk: OnDisk,
    last_failure_mono: Option<Instant>,
}

impl Attempts {
    /// Loads the counter (a missing file means no failures; an unreadable one
    /// is treated as the maximum back-off, so corrupting it gains nothing).
    pub fn load(path: &Path, now_unix: u64) -> Self {
        let disk = match std::fs::read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => OnDisk::default(),
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(OnDisk {
                failures: 64,
                last_failure_unix: now_unix,
            }),
            Err(_) => OnDisk {
                failures: 64,
                last_failure_unix: now_unix,
            },
        };
        Self {
            path: path.to_owned(),
            disk,
            last_failure_mono: None,
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.disk.failures
    }

    /// How long until the next attempt is accepted.
    pub fn remaining(&self, now_unix: u64, now: Instant) -> Duration {
        let delay = delay_for(self.disk.failures);
        if delay.is_zero() {
            return Duration::ZERO;
        }
        let mut elapsed = Duration::from_secs(now_unix.saturating_sub(self.disk.last_failure_unix));
        if let Some(m) = self.last_failure_mono {
            elapsed = elapsed.min(now.saturating_duration_since(m));
        }
        delay.saturating_sub(elapsed)
    }

    /// Records a failure; returns the delay now in force.
    pub fn record_failure(&mut self, now_unix: u64, now: Instant) -> std::io::Result<Duration> {
        self.disk.failures = self.disk.failures.saturating_add(1);
        self.disk.last_failure_unix = now_unix;
        self.last_failure_mono = Some(now);
        self.save()?;
        Ok(delay_for(self.disk.failures))
    }

    /// Records a success.
    pub fn reset(&mut self) -> std::io::Result<()> {
        if self.disk == OnDisk::default() {
            return Ok(());
        }
        self.disk = OnDisk::default();
        self.last_failure_mono = None;
        self.save()
    }

    fn save(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.disk).map_err(std::io::Error::other)?;
        // The state directory may not exist yet (an agent started by
        // socket activation, before anything else wrote there).
        if let Some(dir) = self.path.parent().filter(|d| !d.exists()) {
            crate::vault::store::ensure_private_dir(dir, crate::harden::euid())
                .map_err(std::io::Error::other)?;
        }
        crate::vault::store::write_atomic(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule() {
        let d: Vec<u64> = (0..20).map(|n| delay_for(n).as_secs()).collect();
        assert_eq!(&d[..10], &[0, 0, 0, 0, 1, 2, 4, 8, 16, 32]);
        assert_eq!(d[14], 900);
        assert_eq!(delay_for(u32::MAX), MAX_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn survives_a_restart_and_a_clock_set_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attempts");
        let t0 = 1_000_000u64;
        let mut a = Attempts::load(&path, t0);
        for _ in 0..6 {
            a.record_failure(t0, Instant::now()).unwrap();
        }
        assert_eq!(a.remaining(t0, Instant::now()), Duration::from_secs(4));
        // A new agent (restart) reads the file.
        let b = Attempts::load(&path, t0);
        assert_eq!(b.failures(), 6);
        assert_eq!(b.remaining(t0 + 1, Instant::now()), Duration::from_secs(3));
        // Clock set back an hour: the wait is not shortened.
        assert_eq!(
            b.remaining(t0 - 3600, Instant::now()),
            Duration::from_secs(4)
        );
        // Clock set forward, same run: the monotonic clock still counts.
        assert_eq!(
            a.remaining(t0 + 3600, Instant::now()),
            Duration::from_secs(4)
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(a.remaining(t0 + 4, Instant::now()), Duration::ZERO);
        a.reset().unwrap();
        assert_eq!(Attempts::load(&path, t0).failures(), 0);
    }

    /// A failure is kept even when the state directory does not exist yet.
    #[tokio::test(start_paused = true)]
    async fn a_failure_is_kept_without_a_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("attempts");
        let mut a = Attempts::load(&path, 10);
        a.record_failure(10, Instant::now()).unwrap();
        assert_eq!(Attempts::load(&path, 10).failures(), 1);
    }

    #[test]
    fn a_corrupted_counter_means_maximum_delay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attempts");
        std::fs::write(&path, b"garbage").unwrap();
        let a = Attempts::load(&path, 50);
        assert_eq!(a.remaining(50, Instant::now()), MAX_DELAY);
    }
}
