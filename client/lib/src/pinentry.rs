//! Asking a person through a pinentry program (GnuPG's Assuan protocol:
//! `SETDESC`, `SETPROMPT`, `GETPIN`): for the CLI when it has no terminal,
//! and for the agent when a request finds it locked and it is configured
//! to ask (`pinentry` in the config).

use crate::secret::Secret;
use std::io::{Read, Write};
use std::process::{ChildStdout, Command, Stdio};
use std::time::Duration;
use zeroize::Zeroize;

fn assuan_escape(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        match ch {
            '%' => out.push_str("%25"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            c => out.push(c),
        }
    }
    out
}

fn assuan_unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 3 <= b.len()
            && let (Some(h), Some(l)) = (
                (b[i + 1] as char).to_digit(16),
                (b[i + 2] as char).to_digit(16),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Assuan's longest line (1,000 bytes) with room to spare: the buffers
/// are this large from the start, so they never move (leaving copies).
const LINE_MAX: usize = 4096;

/// One line (up to and with its newline) into `line`, a byte at a time.
fn read_line(r: &mut impl Read, line: &mut String) -> std::io::Result<usize> {
    let mut bytes: Vec<u8> = Vec::with_capacity(LINE_MAX);
    let mut byte = [0u8; 1];
    while bytes.len() < LINE_MAX && r.read(&mut byte)? == 1 {
        bytes.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    let n = bytes.len();
    if let Ok(text) = std::str::from_utf8(&bytes) {
        line.push_str(text);
    }
    bytes.zeroize();
    byte.zeroize();
    Ok(n)
}

/// Runs `program` (a pinentry) and asks for one secret. With `timeout`,
/// the pinentry is told to give up after it (`SETTIMEOUT`), and is killed
/// if it has not answered a few seconds later. Cancelling, a timeout, or a
/// pinentry that fails are all an `Err` saying so.
pub fn ask(
    program: &str,
    prompt: &str,
    description: &str,
    timeout: Option<Duration>,
) -> Result<Secret, String> {
    use std::os::unix::process::CommandExt;
    // In a process group of its own: a pinentry that is a wrapper script
    // (or forks) is killed whole, so nothing keeps its output open.
    let mut child = Command::new(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run pinentry {program}: {e}"))?;
    let pid = child.id();
    // A pinentry that ignores SETTIMEOUT (or hangs) is killed.
    let watchdog = timeout.map(|t| {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let t = t + Duration::from_secs(3);
        std::thread::spawn(move || {
            if stopped.recv_timeout(t) == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                && let Some(group) = i32::try_from(pid)
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
        });
        stop
    });
    let mut stdin = child.stdin.take().ok_or("pinentry: no stdin")?;
    // Read without a buffer of the standard library's: the line holding
    // the secret is in memory this function wipes, and nowhere else.
    let mut out = child.stdout.take().ok_or("pinentry: no stdout")?;
    let mut line = String::with_capacity(LINE_MAX);
    let expect_ok = |out: &mut ChildStdout, line: &mut String| -> Result<(), String> {
        line.clear();
        read_line(out, line).map_err(|e| format!("pinentry: {e}"))?;
        if line.starts_with("OK") {
            Ok(())
        } else {
            Err(format!("pinentry: {}", line.trim()))
        }
    };
    expect_ok(&mut out, &mut line)?;
    let mut commands = vec![
        "SETTITLE keyward".to_owned(),
        format!("SETDESC {}", assuan_escape(description)),
        format!("SETPROMPT {}:", assuan_escape(prompt)),
    ];
    if let Some(t) = timeout {
        commands.push(format!("SETTIMEOUT {}", t.as_secs().max(1)));
    }
    for cmd in commands {
        writeln!(stdin, "{cmd}").map_err(|e| format!("pinentry: {e}"))?;
        expect_ok(&mut out, &mut line)?;
    }
    writeln!(stdin, "GETPIN").map_err(|e| format!("pinentry: {e}"))?;
    let mut secret = None;
    loop {
        line.zeroize();
        line.clear();
        if read_line(&mut out, &mut line).map_err(|e| format!("pinentry: {e}"))? == 0 {
            break;
        }
        if let Some(data) = line.strip_prefix("D ") {
            secret = Some(Secret::new(assuan_unescape(
                data.trim_end_matches(['\n', '\r']),
            )));
        } else if line.starts_with("OK") {
            break;
        } else if let Some(why) = line.strip_prefix("ERR") {
            let why = why
                .trim()
                .split_once(' ')
                .map_or(why.trim(), |(_, text)| text)
                .to_owned();
            line.zeroize();
            let _ = writeln!(stdin, "BYE");
            let _ = child.wait();
            drop(watchdog);
            return Err(format!(
                "pinentry ({program}) gave no answer: {why}; without a terminal, pass the secret with a \
                 --*-fd option (e.g. --password-fd 3 3<file)"
            ));
        }
    }
    line.zeroize();
    let _ = writeln!(stdin, "BYE");
    drop(stdin);
    let _ = child.wait();
    drop(watchdog);
    // "OK" without data: the person entered nothing.
    Ok(secret.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assuan_escaping_round_trips() {
        assert_eq!(assuan_escape("a%b\nc"), "a%25b%0Ac");
        assert_eq!(assuan_unescape("a%25b%0Ac"), b"a%b\nc");
        assert_eq!(assuan_unescape("100%"), b"100%");
    }

    #[test]
    fn a_fake_pinentry_is_spoken_to() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("pinentry");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'OK hello'\nwhile read cmd rest; do case $cmd in GETPIN) echo 'D s3cr%25t'; echo OK;; BYE) exit 0;; *) echo OK;; esac; done\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = ask(script.to_str().unwrap(), "PIN", "desc", None).unwrap();
        assert_eq!(s.expose(), b"s3cr%t");
    }

    /// `ask` on a pinentry script that greets, then hangs: given up on
    /// within 10 s of a 1 s timeout.
    fn given_up_on(body: &str) {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("pinentry");
        std::fs::write(&script, format!("#!/bin/sh\necho 'OK hello'\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let start = std::time::Instant::now();
        let r = ask(
            script.to_str().unwrap(),
            "PIN",
            "desc",
            Some(Duration::from_secs(1)),
        );
        assert!(r.is_err());
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }

    /// A wrapper script that does not `exec` (its child keeps the output
    /// open): the whole group is killed.
    #[test]
    fn a_wrapper_pinentry_that_hangs_is_given_up_on() {
        given_up_on("sleep 60");
    }

    #[test]
    fn a_pinentry_that_hangs_is_given_up_on() {
        given_up_on("exec sleep 60");
    }
}
