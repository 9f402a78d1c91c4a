//! Asking the user through `SSH_ASKPASS`, as OpenSSH's agent does: a
//! confirmation runs the program with `SSH_ASKPASS_PROMPT=confirm` and the
//! question as its argument (exit status 0 = yes); a password prompt reads
//! its standard output. Every prompt has a timeout, after which the program
//! is killed and the answer is no.
//!
//! Prompts name the requesting program: the peer's pid (SO_PEERCRED), its
//! executable and command line, and its parent's, read from /proc.

use crate::secret::SecretString;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The askpass program to run, if one is configured and a display is
/// there to show it (or `SSH_ASKPASS_REQUIRE=force` says to run it anyway).
pub fn askpass(configured: &str) -> Option<String> {
    let program = if configured.is_empty() {
        std::env::var("SSH_ASKPASS")
            .ok()
            .filter(|s| !s.is_empty())?
    } else {
        configured.to_owned()
    };
    let forced = std::env::var("SSH_ASKPASS_REQUIRE").is_ok_and(|v| v == "force");
    let display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    (forced || display).then_some(program)
}

fn run(program: &str, message: &str, confirm: bool, timeout: Duration) -> Option<Vec<u8>> {
    let mut cmd = Command::new(program);
    cmd.arg(message)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if confirm {
        cmd.env("SSH_ASKPASS_PROMPT", "confirm");
    } else {
        cmd.env_remove("SSH_ASKPASS_PROMPT");
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cannot run the askpass program {program}: {e}");
            return None;
        }
    };
    let mut out = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.by_ref().take(4096).read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                tracing::info!("the askpass prompt timed out; answering no");
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let output = reader.join().unwrap_or_default();
    status
        .filter(std::process::ExitStatus::success)
        .map(|_| output)
}

/// Asks yes/no; `false` on no, a timeout, or no program.
pub fn confirm(program: &str, message: &str, timeout: Duration) -> bool {
    run(program, message, true, timeout).is_some()
}

/// Asks for a secret; `None` on cancel, a timeout, or no program.
pub fn ask_secret(program: &str, message: &str, timeout: Duration) -> Option<SecretString> {
    let mut out = zeroize::Zeroizing::new(run(program, message, false, timeout)?);
    while out.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        out.pop();
    }
    let s = std::str::from_utf8(&out).ok()?;
    Some(SecretString::copy_of(s))
}

/// A process as a prompt names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Its pid.
    pub pid: u32,
    /// When it started (clock ticks since boot): with the pid, it tells
    /// one process from a later one that reuses the pid.
    pub start: u64,
    /// Its executable.
    pub exe: String,
    /// Its command line (arguments joined by spaces, at most 200 characters).
    pub cmdline: String,
    /// Its parent's pid.
    pub ppid: u32,
}

/// Reads what /proc says of `pid` (as much as this user may read).
pub fn proc_info(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: split after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "(unknown)".into());
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut cmdline: String = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if cmdline.chars().count() > 200 {
        cmdline = cmdline.chars().take(200).collect::<String>() + "…";
    }
    Some(Proc {
        pid,
        start,
        exe,
        cmdline,
        ppid,
    })
}

/// "ssh (pid 123: ssh host), started by bash (pid 100: -bash)".
pub fn describe(pid: Option<u32>) -> String {
    let Some(p) = pid.and_then(proc_info) else {
        return "an unknown program".into();
    };
    let one = |p: &Proc| format!("{} (pid {}: {})", p.exe, p.pid, p.cmdline);
    match proc_info(p.ppid) {
        Some(parent) if p.ppid > 1 => format!("{}, started by {}", one(&p), one(&parent)),
        _ => one(&p),
    }
}
