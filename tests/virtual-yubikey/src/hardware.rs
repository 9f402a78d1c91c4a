//! The physical parts of a YubiKey that the applet logic needs: a clock, a
//! random number generator and the touch sensor.
//!
//! The applet ([`crate::card`], [`crate::piv`]) never reads the clock, the OS
//! RNG or a file itself; it asks a [`Hardware`]. The card binary uses
//! [`SystemHardware`] (monotonic clock, OS CSPRNG, and a [`TouchSensor`] that
//! waits for SIGUSR1 or a touch file); unit tests use a scripted fake, so
//! cached-touch expiry and touch timeouts are tested without waiting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the applet needs from the device around it.
pub trait Hardware {
    /// Monotonic time since an arbitrary start.
    fn now(&self) -> Duration;
    /// Fills `buf` with random bytes.
    fn fill_random(&mut self, buf: &mut [u8]);
    /// Blinks and waits for a touch; `false` if none came before the timeout.
    fn wait_for_touch(&mut self) -> bool;
}

/// How long a touch satisfies the "cached" touch policy on a YubiKey.
pub const TOUCH_CACHE: Duration = Duration::from_secs(15);

/// What the card logs (to stderr) each time it starts waiting for a touch,
/// followed by the request's number.
pub const TOUCH_REQUEST_LOG: &str = "touch request #";

/// How long a real YubiKey waits for a touch before giving up.
pub const DEFAULT_TOUCH_TIMEOUT: Duration = Duration::from_secs(15);

/// The simulated touch sensor.
///
/// A touch is either SIGUSR1 (the binary sets [`TouchSensor::signal_flag`]) or
/// the appearance of the touch file. A touch counts for the next operation
/// that needs one, even if it arrived before that operation started waiting —
/// unlike a real key, where touching early does nothing. That keeps tests free
/// of races. A test that wants to see the card blink first can watch for the
/// marker file `<touch file>.waiting`, which exists exactly while the card
/// waits, or count the "touch request #N" lines on stderr. Both the touch
/// file and the flag are consumed by the touch.
#[derive(Debug)]
pub struct TouchSensor {
    file: Option<PathBuf>,
    requests: std::cell::Cell<u64>,
    signal: Arc<AtomicBool>,
    timeout: Duration,
    poll: Duration,
}

impl TouchSensor {
    /// A sensor that watches `file` (if any) and a signal flag, giving up
    /// after `timeout`.
    pub fn new(file: Option<PathBuf>, timeout: Duration) -> Self {
        TouchSensor {
            file,
            requests: std::cell::Cell::new(0),
            signal: Arc::new(AtomicBool::new(false)),
            timeout,
            poll: Duration::from_millis(10),
        }
    }

    /// The flag that a SIGUSR1 handler sets.
    pub fn signal_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.signal)
    }

    /// The marker file that exists while the card waits for a touch.
    pub fn waiting_marker(touch_file: &Path) -> PathBuf {
        let mut name = touch_file.as_os_str().to_owned();
        name.push(".waiting");
        PathBuf::from(name)
    }

    /// Takes a pending touch, if there is one.
    fn take_touch(&self) -> bool {
        if self.signal.swap(false, Ordering::SeqCst) {
            return true;
        }
        match &self.file {
            Some(f) => std::fs::remove_file(f).is_ok(),
            None => false,
        }
    }

    /// Waits up to the timeout for a touch.
    pub fn wait(&self) -> bool {
        if self.take_touch() {
            return true;
        }
        let marker = self.file.as_deref().map(Self::waiting_marker);
        if let Some(m) = &marker {
            // Best effort: the marker is a convenience for tests.
            let _ = std::fs::write(m, b"");
        }
        self.requests.set(self.requests.get() + 1);
        // The harness counts these lines ("touch request #N").
        eprintln!(
            "virtual-yubikey: {}{}: waiting up to {:?} for a touch (SIGUSR1{})",
            TOUCH_REQUEST_LOG,
            self.requests.get(),
            self.timeout,
            match &self.file {
                Some(f) => format!(" or creating {}", f.display()),
                None => String::new(),
            }
        );
        let deadline = Instant::now() + self.timeout;
        let touched = loop {
            if self.take_touch() {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(self.poll);
        };
        if let Some(m) = &marker {
            let _ = std::fs::remove_file(m);
        }
        eprintln!(
            "virtual-yubikey: {}",
            if touched {
                "touched"
            } else {
                "touch timed out"
            }
        );
        touched
    }
}

/// The real thing: monotonic clock, OS randomness, the [`TouchSensor`].
#[derive(Debug)]
pub struct SystemHardware {
    start: Instant,
    touch: TouchSensor,
}

impl SystemHardware {
    /// Hardware with the given touch sensor.
    pub fn new(touch: TouchSensor) -> Self {
        SystemHardware {
            start: Instant::now(),
            touch,
        }
    }
}

impl Hardware for SystemHardware {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        // The OS RNG failing is not something a test fixture can recover
        // from; a card without randomness must not keep answering.
        if let Err(e) = getrandom::fill(buf) {
            eprintln!("virtual-yubikey: the OS random number generator failed: {e}");
            std::process::exit(70);
        }
    }

    fn wait_for_touch(&mut self) -> bool {
        self.touch.wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_file_and_signal_are_consumed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("touch");
        let mut sensor = TouchSensor::new(Some(file.clone()), Duration::from_millis(50));
        sensor.poll = Duration::from_millis(1);

        assert!(!sensor.wait(), "no touch yet");
        assert!(!TouchSensor::waiting_marker(&file).exists());

        std::fs::write(&file, b"").unwrap();
        assert!(sensor.wait());
        assert!(!file.exists(), "the touch is consumed");
        assert!(!sensor.wait());

        sensor.signal_flag().store(true, Ordering::SeqCst);
        assert!(sensor.wait());
        assert!(!sensor.wait());
    }

    #[test]
    fn touch_during_the_wait_counts_and_marker_shows_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("touch");
        let sensor = TouchSensor::new(Some(file.clone()), Duration::from_secs(10));
        let marker = TouchSensor::waiting_marker(&file);
        let toucher = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !marker.exists() {
                assert!(Instant::now() < deadline, "card never waited");
                std::thread::sleep(Duration::from_millis(2));
            }
            std::fs::write(&file, b"").unwrap();
        });
        assert!(sensor.wait());
        toucher.join().unwrap();
    }
}
