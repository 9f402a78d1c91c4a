//! Choosing a new Master Password (init, change-password, recover): the
//! strength policy, the same with or without a terminal.
//!
//! zxcvbn rates the password 0 to 4. Score 0 ("very weak": a common word,
//! a keyboard walk, a short number) is refused unless the user passes
//! `--allow-weak-password`; score 1 ("weak") is used only if the user says
//! so at the prompt (default No) or passes the flag; 2 and up are taken
//! without a question. Without a terminal there is no one to ask: a weak
//! password given on a file descriptor is refused too, saying why.

use crate::input::{self, ask_new, read_fd};
use crate::output::{CliError, exit};
use keyward_client::Secret;

/// What zxcvbn makes of a password: its score (0–4) and its advice.
pub struct Rating {
    /// 0 very weak … 4 strong.
    pub score: u8,
    /// zxcvbn's warning and suggestions, one per line.
    pub advice: Vec<String>,
}

const VERDICTS: [&str; 5] = ["very weak", "weak", "fair", "good", "strong"];

/// Rates `pw` (a password that is not UTF-8 rates as strong: zxcvbn has
/// nothing to say about it).
pub fn rate(pw: &Secret) -> Rating {
    let Some(text) = pw.expose_str() else {
        return Rating {
            score: 4,
            advice: Vec::new(),
        };
    };
    let entropy = zxcvbn::zxcvbn(text, &[]);
    let mut advice = Vec::new();
    if let Some(f) = entropy.feedback() {
        if let Some(w) = f.warning() {
            advice.push(w.to_string());
        }
        advice.extend(f.suggestions().iter().map(ToString::to_string));
    }
    Rating {
        score: u8::from(entropy.score()).min(4),
        advice,
    }
}

impl Rating {
    /// "very weak", "weak", …
    pub fn verdict(&self) -> &'static str {
        VERDICTS[usize::from(self.score)]
    }

    fn print(&self) {
        eprintln!("Password strength: {}.", self.verdict());
        for a in &self.advice {
            eprintln!("  {a}");
        }
    }

    fn reason(&self) -> String {
        match self.advice.first() {
            Some(a) => format!(" ({})", a.trim_end_matches('.')),
            None => String::new(),
        }
    }
}

/// The policy without a terminal: `Err` says why and what to do.
pub fn check(pw: &Secret, allow_weak: bool) -> Result<(), CliError> {
    let r = rate(pw);
    if allow_weak || r.score >= 2 {
        return Ok(());
    }
    let why = if r.score == 0 {
        format!(
            "this Master Password is very weak{}: choose a stronger one (a few unrelated words \
             make one that is easy to remember), or pass --allow-weak-password to use it anyway",
            r.reason()
        )
    } else {
        format!(
            "this Master Password is weak{}, and without a terminal keyward cannot ask whether \
             to use it: choose a stronger one, or pass --allow-weak-password",
            r.reason()
        )
    };
    Err(CliError::with(exit::INVALID, why))
}

/// A new Master Password: read from `fd` (and checked), or asked twice on
/// the terminal until one passes the policy.
pub fn new_password(
    fd: Option<u32>,
    allow_weak: bool,
    prompt: &str,
    description: &str,
) -> Result<Secret, CliError> {
    if let Some(fd) = fd {
        let pw = read_fd(fd, "new password")?;
        check(&pw, allow_weak)?;
        return Ok(pw);
    }
    loop {
        let pw = ask_new(prompt, description)?;
        let r = rate(&pw);
        r.print();
        if allow_weak || r.score >= 2 {
            return Ok(pw);
        }
        if !input::have_tty() {
            // Asked through pinentry: no question to put, the same rule as a script.
            check(&pw, false)?;
        }
        if r.score == 0 {
            eprintln!(
                "keyward does not accept a very weak Master Password (--allow-weak-password \
                 to insist): choose another."
            );
            continue;
        }
        if input::confirm("Use this weak password anyway?", false) {
            return Ok(pw);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn very_weak_and_weak_passwords_are_refused_without_the_flag() {
        let very_weak = Secret::from("a");
        assert_eq!(rate(&very_weak).score, 0);
        let e = check(&very_weak, false).unwrap_err();
        assert_eq!(e.code, exit::INVALID);
        assert!(e.message.contains("very weak") && e.message.contains("--allow-weak-password"));
        assert!(check(&very_weak, true).is_ok());

        let strong = Secret::from("correct horse battery staple");
        assert!(rate(&strong).score >= 2);
        assert!(check(&strong, false).is_ok());
    }

    #[test]
    fn a_weak_password_without_a_terminal_says_why() {
        // Score 1: not in a dictionary, but short.
        let weak = (0..200)
            .map(|i| Secret::from(format!("Tr{i}uk7").as_str()))
            .find(|s| rate(s).score == 1)
            .expect("some 7-symbol password rates weak");
        let e = check(&weak, false).unwrap_err();
        assert!(e.message.contains("weak") && e.message.contains("without a terminal"));
        assert!(check(&weak, true).is_ok());
    }
}
