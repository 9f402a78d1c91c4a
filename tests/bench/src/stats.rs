//! Summary statistics: medians with min–max, and ratios of medians.

use std::time::Duration;

/// A set of timings of one thing.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<Duration>);

impl Samples {
    /// Adds one timing.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort();
        v
    }

    /// The median (the mean of the middle two for an even count).
    pub fn median(&self) -> Duration {
        let v = self.sorted();
        match v.len() {
            0 => Duration::ZERO,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2,
        }
    }

    /// The `q`-quantile (nearest rank), `q` in [0, 1].
    pub fn quantile(&self, q: f64) -> Duration {
        let v = self.sorted();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    /// The smallest.
    pub fn min(&self) -> Duration {
        self.sorted().first().copied().unwrap_or_default()
    }

    /// The largest.
    pub fn max(&self) -> Duration {
        self.sorted().last().copied().unwrap_or_default()
    }

    /// `median (min–max)` in a unit chosen for the magnitude.
    pub fn summary(&self) -> String {
        format!(
            "{} ({}–{})",
            fmt(self.median()),
            fmt(self.min()),
            fmt(self.max())
        )
    }
}

/// A duration in µs, ms or s.
pub fn fmt(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// `a / b` of the medians.
pub fn ratio(a: &Samples, b: &Samples) -> f64 {
    a.median().as_secs_f64() / b.median().as_secs_f64().max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let ms = |v: &[u64]| Samples(v.iter().map(|&x| Duration::from_millis(x)).collect());
        assert_eq!(ms(&[3, 1, 2]).median(), Duration::from_millis(2));
        assert_eq!(ms(&[4, 1, 2, 3]).median(), Duration::from_micros(2500));
        assert_eq!(ms(&[]).median(), Duration::ZERO);
        assert!((ratio(&ms(&[2]), &ms(&[4])) - 0.5).abs() < 1e-9);
        assert_eq!(ms(&[5, 9, 7]).summary(), "7.0 ms (5.0 ms–9.0 ms)");
    }

    #[test]
    fn quantiles() {
        let hundred = Samples((1..=100).map(Duration::from_millis).collect());
        assert_eq!(hundred.quantile(0.99), Duration::from_millis(99));
        assert_eq!(hundred.quantile(0.5), Duration::from_millis(50));
        assert_eq!(hundred.quantile(1.0), Duration::from_millis(100));
        assert_eq!(hundred.quantile(0.0), Duration::from_millis(1));
        assert_eq!(Samples::default().quantile(0.99), Duration::ZERO);
    }
}
