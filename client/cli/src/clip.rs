//! `keyward get --clip NAME`: the value on the clipboard, cleared after 45 s
//! if it is still there.
//!
//! - The copy goes through `wl-copy` on Wayland (`WAYLAND_DISPLAY` set) or
//!   `xclip -selection clipboard` on X11 (`DISPLAY` set), the value written
//!   to the tool's standard input, never in its arguments. Which tool, and
//!   whether it is installed, is checked before the agent is asked.
//! - The clearing is done by a detached copy of `keyward` (the hidden
//!   command `keyward clip-clear`, in a session of its own so that closing
//!   the terminal does not stop it): it receives the value on a pipe, keeps
//!   it only in its own memory (not dumpable, like every keyward process),
//!   sleeps, reads the clipboard back and clears it only if it still holds
//!   the value, so that something the user copied since is left alone.
//! - `KEYWARD_CLIP_CLEAR_SECONDS` changes the 45 s (tests use a few seconds).
//!
//! The tools keep the value while they own the clipboard, as any program
//! the user copies from does; `wl-copy` keeps it in a temporary file of its
//! own for that time.

use crate::output::{CliError, exit};
use keyward_client::Secret;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the value stays on the clipboard without
/// `KEYWARD_CLIP_CLEAR_SECONDS`.
pub const CLEAR_AFTER_SECS: u64 = 45;
/// How long reading the clipboard back may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A clipboard tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tool {
    /// `wl-copy` / `wl-paste` (Wayland).
    Wayland,
    /// `xclip` (X11).
    X11,
}

impl Tool {
    /// The program that sets the clipboard, and its arguments.
    fn copy(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::Wayland => ("wl-copy", &[]),
            Self::X11 => ("xclip", &["-selection", "clipboard", "-in"]),
        }
    }

    /// The program that prints the clipboard, and its arguments.
    fn paste(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::Wayland => ("wl-paste", &["--no-newline"]),
            Self::X11 => ("xclip", &["-selection", "clipboard", "-out"]),
        }
    }

    /// The package that has the tool (Debian's name).
    fn package(self) -> &'static str {
        match self {
            Self::Wayland => "wl-clipboard",
            Self::X11 => "xclip",
        }
    }
}

fn set(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

/// `program` on PATH, if it is there.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// The tool for this session: Wayland's when `WAYLAND_DISPLAY` is set and
/// `wl-copy` is installed, else xclip when `DISPLAY` is set.
pub fn tool() -> Result<Tool, CliError> {
    let wayland = set("WAYLAND_DISPLAY");
    let x11 = set("DISPLAY");
    let chosen = if wayland && (on_path("wl-copy").is_some() || !x11) {
        Tool::Wayland
    } else if x11 {
        Tool::X11
    } else {
        return Err(CliError::msg(
            "no display: --clip needs X11 (DISPLAY) or Wayland (WAYLAND_DISPLAY)",
        ));
    };
    let needed = [chosen.copy().0, chosen.paste().0];
    if let Some(missing) = needed.iter().find(|p| on_path(p).is_none()) {
        return Err(CliError::msg(format!(
            "--clip needs {missing}, which is not installed (Debian package {})",
            chosen.package()
        )));
    }
    Ok(chosen)
}

/// Seconds before the clearing: `KEYWARD_CLIP_CLEAR_SECONDS`, else 45.
pub fn clear_after() -> Result<u64, CliError> {
    match std::env::var("KEYWARD_CLIP_CLEAR_SECONDS") {
        Err(_) => Ok(CLEAR_AFTER_SECS),
        Ok(s) => s.trim().parse().map_err(|_| {
            CliError::with(
                exit::INVALID,
                format!("KEYWARD_CLIP_CLEAR_SECONDS={s:?} is not a number of seconds"),
            )
        }),
    }
}

/// Runs `tool`'s copy program with `value` on its standard input. Its
/// output goes nowhere: the tool stays in the background to serve the
/// clipboard, and would keep a pipe open.
fn put(tool: Tool, value: &[u8]) -> Result<(), CliError> {
    let (program, args) = tool.copy();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| CliError::msg(format!("cannot run {program}: {e}")))?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(value))
        .unwrap_or(Ok(()));
    let status = child
        .wait()
        .map_err(|e| CliError::msg(format!("{program}: {e}")))?;
    if let Err(e) = written {
        return Err(CliError::msg(format!("cannot write to {program}: {e}")));
    }
    if !status.success() {
        return Err(CliError::msg(format!(
            "{program} failed ({status}): can it reach the display?"
        )));
    }
    Ok(())
}

/// Empties the clipboard (`wl-copy --clear`; xclip given nothing).
fn clear(tool: Tool) -> Result<(), CliError> {
    match tool {
        Tool::Wayland => {
            let status = Command::new("wl-copy")
                .arg("--clear")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| CliError::msg(format!("cannot run wl-copy: {e}")))?;
            if status.success() {
                Ok(())
            } else {
                Err(CliError::msg(format!("wl-copy --clear failed ({status})")))
            }
        }
        Tool::X11 => put(tool, b""),
    }
}

/// What the clipboard holds now, if it can be read within [`READ_TIMEOUT`].
fn read(tool: Tool) -> Option<Secret> {
    let (program, args) = tool.paste();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let limit = keyward_client::message::MAX_VALUE + 1;
    let reader = std::thread::spawn(move || {
        // Room for the largest value from the start: a growing buffer
        // would leave unwiped copies behind.
        let mut buf = Vec::with_capacity(limit);
        let _ = (&mut stdout).take(limit as u64).read_to_end(&mut buf);
        Secret::new(buf)
    });
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let got = reader.join().ok()?;
                return status.success().then_some(got);
            }
            Ok(None) if start.elapsed() < READ_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// `keyward get --clip NAME`, once the value is fetched: copies it and
/// starts the detached clearing.
pub fn copy(tool: Tool, name: &str, value: &Secret) -> Result<(), CliError> {
    let secs = clear_after()?;
    put(tool, value.expose())?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::msg(format!("cannot find the keyward program: {e}")))?;
    let tool_arg = match tool {
        Tool::Wayland => "wayland",
        Tool::X11 => "x11",
    };
    let clearer = Command::new(exe)
        .args(["clip-clear", "--tool", tool_arg, "--after"])
        .arg(secs.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let handed = clearer.map_err(|e| e.to_string()).and_then(|mut child| {
        let r = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(value.expose()))
            .unwrap_or(Ok(()));
        // Not waited for: it outlives this process (init reaps it).
        r.map_err(|e| e.to_string())
    });
    if let Err(e) = handed {
        // Never leave the value behind without its clearing.
        let _ = clear(tool);
        return Err(CliError::msg(format!(
            "cannot start the clipboard clearing ({e}); the clipboard was cleared"
        )));
    }
    eprintln!("Copied {name} to the clipboard; it is cleared in {secs} s if it still holds it.");
    Ok(())
}

/// The hidden `keyward clip-clear`: reads the value on standard input,
/// waits `after` seconds, and clears the clipboard if it still holds it.
pub fn clear_later(tool: Tool, after: u64) -> Result<(), CliError> {
    // Its own session: a closed terminal (SIGHUP) or Ctrl-C in the shell
    // does not stop it.
    let _ = rustix::process::setsid();
    let limit = keyward_client::message::MAX_VALUE + 1;
    let mut buf = Vec::with_capacity(limit);
    if std::io::stdin()
        .lock()
        .take(limit as u64)
        .read_to_end(&mut buf)
        .is_err()
    {
        zeroize::Zeroize::zeroize(&mut buf);
        return Err(CliError::msg("cannot read the value to clear"));
    }
    let value = Secret::new(buf);
    std::thread::sleep(Duration::from_secs(after));
    let Some(now) = read(tool) else {
        return Ok(());
    };
    // X11 and Wayland hand the bytes back as they were given.
    if same(now.expose(), value.expose()) {
        clear(tool)?;
    }
    Ok(())
}

/// Whether `a` and `b` are the same bytes, compared without stopping at
/// the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
