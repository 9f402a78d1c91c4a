//! Getting secrets from the user: from a file descriptor (scripts), a hidden
//! terminal prompt, or a pinentry program when there is no terminal. Never echoed.

use crate::output::{CliError, exit};
use keyward_client::Secret;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use zeroize::Zeroize;

/// Reads one secret from file descriptor `fd` (like gpg's `--passphrase-fd`):
/// everything up to end of file, one trailing newline (`\n` or `\r\n`) removed.
pub fn read_fd(fd: u32, what: &str) -> Result<Secret, String> {
    if fd == 1 || fd == 2 {
        return Err(format!(
            "file descriptor {fd} is standard output or error; pass the {what} on another one"
        ));
    }
    let mut buf = Vec::new();
    let r = if fd == 0 {
        std::io::stdin().lock().read_to_end(&mut buf)
    } else {
        read_raw_fd(fd, &mut buf)
    };
    if let Err(e) = r {
        buf.zeroize();
        return Err(format!(
            "cannot read the {what} from file descriptor {fd}: {e}"
        ));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    Ok(Secret::new(buf))
}

/// Reads descriptor `fd` to its end without taking ownership of it.
///
/// (Reopening `/dev/fd/N` would need no `unsafe`, but it fails for a pipe
/// created by another user, e.g. root piping into `setpriv … keyward`.)
#[allow(unsafe_code)]
fn read_raw_fd(fd: u32, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::os::fd::FromRawFd;
    let raw =
        i32::try_from(fd).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // Refuse descriptors that are not open, instead of reading a bad one.
    // SAFETY: fcntl(F_GETFD) takes no further argument and only reads the
    // descriptor's flags.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the user handed us this descriptor to read; ManuallyDrop keeps
    // us from closing it (it stays owned by whoever opened it), and no other
    // code in this process uses it while we read.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(raw) });
    f.read_to_end(buf)
}

/// Whether a terminal is available for prompts.
pub fn have_tty() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// The user gave up at a prompt (Ctrl-C, Ctrl-D, Escape at a pinentry).
pub fn cancelled() -> CliError {
    CliError::with(exit::CANCELLED, "cancelled")
}

/// Asks for a secret without echo: on the terminal, else through pinentry.
/// Ctrl-C and Ctrl-D (on an empty line) cancel: exit code 12.
pub fn ask_hidden(prompt: &str, description: &str) -> Result<Secret, CliError> {
    if have_tty() {
        let mut s = rpassword::prompt_password(format!("{prompt}: ")).map_err(|e| {
            match e.kind() {
                // rpassword reads the keys itself: Ctrl-C arrives as
                // Interrupted, Ctrl-D on an empty line as end of file.
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::UnexpectedEof => {
                    eprintln!();
                    cancelled()
                }
                _ => CliError::msg(format!("cannot read from the terminal: {e}")),
            }
        })?;
        let out = Secret::from(s.as_str());
        s.zeroize();
        return Ok(out);
    }
    match find_pinentry() {
        Some(program) => Ok(keyward_client::pinentry::ask(
            &program,
            prompt,
            description,
            None,
        )?),
        None => Err(CliError::msg(format!(
            "no terminal to ask for the {} and no pinentry program found; pass it with a --*-fd option \
             (e.g. --password-fd 3 3<file), or set KEYWARD_PINENTRY",
            prompt.to_lowercase()
        ))),
    }
}

/// Asks on the terminal with echo (the Secret Key: not secret from the
/// person typing it, and a typo is easier to see). Ctrl-D cancels.
pub fn ask_visible(prompt: &str) -> Result<Secret, CliError> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| CliError::msg(format!("no terminal to ask for the {prompt}: {e}")))?;
    let _ = write!(&tty, "{prompt}: ");
    let mut line = String::new();
    let n = BufReader::new(&tty)
        .read_line(&mut line)
        .map_err(|e| CliError::msg(format!("cannot read from the terminal: {e}")))?;
    if n == 0 {
        let _ = writeln!(&tty);
        return Err(cancelled());
    }
    let out = Secret::from(line.trim_end_matches(['\n', '\r']));
    line.zeroize();
    Ok(out)
}

/// The Secret Key alphabet (docs/SECURITY.md §3), to show where a typo is.
const SECRET_KEY_ALPHABET: &str = "23456789ABCDEFGHJKLMNPQRSTVWXYZ";
/// Its display groups.
const SECRET_KEY_GROUPS: [usize; 7] = [2, 6, 6, 5, 5, 5, 6];

/// The typed Secret Key, grouped, and under it a mark below each group
/// that holds a symbol Secret Keys never use (or a wrong prefix). Only the
/// person who typed it sees it.
pub fn secret_key_typo_lines(typed: &str) -> (String, String) {
    let symbols: Vec<char> = typed
        .chars()
        .filter(|c| {
            !c.is_whitespace() && !matches!(c, '-' | '_' | '\u{2010}'..='\u{2015}' | '\u{2212}')
        })
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let (mut shown, mut marks) = (String::new(), String::new());
    let mut at = 0;
    for (g, size) in SECRET_KEY_GROUPS.iter().enumerate() {
        if at >= symbols.len() {
            break;
        }
        let group = &symbols[at..(at + size).min(symbols.len())];
        let bad = if g == 0 {
            group.iter().collect::<String>() != "K1"
        } else {
            group.iter().any(|c| !SECRET_KEY_ALPHABET.contains(*c))
        };
        if g > 0 {
            shown.push('-');
            marks.push(' ');
        }
        shown.extend(group);
        marks.extend(std::iter::repeat_n(
            if bad { '^' } else { ' ' },
            group.len(),
        ));
        at += size;
    }
    if at < symbols.len() {
        shown.push('-');
        shown.extend(&symbols[at..]);
        marks.push(' ');
        marks.extend(std::iter::repeat_n('^', symbols.len() - at));
    }
    (shown, marks.trim_end().to_owned())
}

/// Shows [`secret_key_typo_lines`] on standard error.
pub fn show_secret_key_typo(typed: &Secret) {
    let Some(text) = typed.expose_str() else {
        return;
    };
    let (shown, marks) = secret_key_typo_lines(text);
    eprintln!("  You typed:  {shown}");
    if marks.is_empty() {
        eprintln!(
            "  Every symbol is one Secret Keys use, so one of them is wrong: compare group by group with your Emergency Kit."
        );
    } else {
        eprintln!("              {marks}");
    }
}

/// Asks twice and compares (new passwords, PINs, values).
pub fn ask_new(prompt: &str, description: &str) -> Result<Secret, CliError> {
    loop {
        let a = ask_hidden(prompt, description)?;
        let b = ask_hidden(&format!("{prompt} (again)"), "Type it again to make sure.")?;
        if a == b {
            return Ok(a);
        }
        if !have_tty() {
            return Err(CliError::with(exit::INVALID, "the two entries differ"));
        }
        eprintln!("The two entries differ; try again.");
    }
}

/// Asks a yes/no question on the terminal; `default` when there is none.
pub fn confirm(question: &str, default: bool) -> bool {
    let Ok(mut tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return default;
    };
    let hint = if default { "[Y/n]" } else { "[y/N]" };
    let _ = write!(tty, "{question} {hint} ");
    let mut line = String::new();
    if BufReader::new(&tty).read_line(&mut line).is_err() {
        return default;
    }
    match line.trim().to_lowercase().as_str() {
        "" => default,
        a => a.starts_with('y'),
    }
}

/// `KEYWARD_PINENTRY` (`none` disables it), else `pinentry` on PATH (only
/// without a terminal).
fn find_pinentry() -> Option<String> {
    if let Ok(p) = std::env::var("KEYWARD_PINENTRY")
        && !p.is_empty()
    {
        return (p != "none").then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("pinentry"))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// Whether standard input is a terminal.
pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_key_typo_is_marked_under_its_group() {
        // An O (never used) in the third group.
        let (shown, marks) = secret_key_typo_lines("k1-7qh3mk-xe7Oax-j3w5t-7x3y4-vydvd-fw62gb");
        assert_eq!(shown, "K1-7QH3MK-XE7OAX-J3W5T-7X3Y4-VYDVD-FW62GB");
        assert_eq!(marks, "          ^^^^^^");
        // All symbols valid: nothing to mark.
        let (_, marks) = secret_key_typo_lines("K1-7QH3MK-XE7BAX-J3W5T-7X3Y4-VYDVD-FW62G6");
        assert!(marks.is_empty());
        // Too long: the extra symbols are marked.
        let (shown, marks) = secret_key_typo_lines("K1-7QH3MK-XE7BAX-J3W5T-7X3Y4-VYDVD-FW62GBXY");
        assert!(shown.ends_with("-FW62GB-XY"), "{shown}");
        assert!(marks.ends_with(" ^^"), "{marks:?}");
    }

    #[test]
    fn fd_input_strips_one_newline() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        std::fs::write(&p, b"pass word\n\n").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        use std::os::fd::AsRawFd;
        let s = read_fd(f.as_raw_fd() as u32, "password").unwrap();
        assert_eq!(s.expose(), b"pass word\n");
        assert!(
            read_fd(987, "password")
                .unwrap_err()
                .contains("descriptor 987")
        );
    }
}
