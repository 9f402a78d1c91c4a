//! `keyward run`: a program started with secrets in its environment, and
//! nothing written anywhere.
//!
//! The items named by `--env VAR=ITEM` and by the lines of `--env-file`
//! are fetched from the agent in one connection (one unlock prompt at most),
//! checked to be usable as environment values (UTF-8 text without a NUL
//! byte), and the program is then executed in place of `keyward` (`execve`):
//! its exit status is the command's own, signals reach it directly, and
//! the values exist only in its environment. They never appear in an
//! argument list, a file or a log.
//!
//! The env file has one `VAR=ITEM` per line (`VAR=keyward://ITEM` too, the
//! form `keyward inject` uses); blank lines and lines starting with `#` are
//! skipped; spaces around VAR and ITEM are ignored. VAR is letters, digits
//! and `_`, not starting with a digit. A later definition of a VAR replaces
//! an earlier one; `--env` options come after the files.

use crate::output::{CliError, exit};
use keyward_client::{Client, ClientError, Secret};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// `keyward run --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  keyward run --env GITHUB_TOKEN=github/token -- gh repo list
  keyward run --env-file app.env -- ./server --port 8080
      # app.env: lines such as DB_PASSWORD=keyward://db/password (or DB_PASSWORD=db/password)";

/// Runs requests on the unlocked agent: the CLI's `unlocked` (which, on a
/// terminal, unlocks a locked agent first and runs the request again).
pub type WithAgent<'a> = &'a mut dyn FnMut(
    &mut dyn FnMut(&mut Client) -> Result<(), ClientError>,
) -> Result<(), CliError>;

/// The prefix an item reference may carry.
pub const SCHEME: &str = "keyward://";

/// The values of `names` (each fetched once), in order. On a failure,
/// `which(i)` says what asked for `names[i]`, appended to the agent's
/// message ("no item named …").
pub fn fetch_all(
    agent: WithAgent<'_>,
    names: &[String],
    which: impl Fn(usize) -> String,
) -> Result<Vec<Secret>, CliError> {
    let mut values = Vec::with_capacity(names.len());
    let mut failed_at = None;
    let r = agent(&mut |c| {
        values.clear();
        for (i, name) in names.iter().enumerate() {
            failed_at = Some(i);
            let v = c.get(name)?;
            values.push(v);
        }
        failed_at = None;
        Ok(())
    });
    match (r, failed_at) {
        (Ok(()), _) => Ok(values),
        (Err(e), Some(i)) if e.code == exit::NOT_FOUND || e.code == exit::INVALID => Err(
            CliError::with(e.code, format!("{} ({})", e.message, which(i))),
        ),
        (Err(e), _) => Err(e),
    }
}

/// One `VAR=ITEM` definition, and where it was written (for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The variable.
    pub var: String,
    /// The item's name.
    pub item: String,
    /// `--env A=b`, or `app.env:3`.
    pub origin: String,
}

/// Whether `var` can name an environment variable a shell can read.
fn valid_var(var: &str) -> bool {
    let mut b = var.bytes();
    b.next()
        .is_some_and(|c| c == b'_' || c.is_ascii_alphabetic())
        && b.all(|c| c == b'_' || c.is_ascii_alphanumeric())
}

/// Parses `VAR=ITEM` (or `VAR=keyward://ITEM`); `None` if it is not one.
pub fn parse_definition(text: &str) -> Option<(String, String)> {
    let (var, item) = text.split_once('=')?;
    let var = var.trim();
    let item = item.trim();
    let item = item.strip_prefix(SCHEME).unwrap_or(item).trim();
    (valid_var(var) && !item.is_empty()).then(|| (var.to_owned(), item.to_owned()))
}

/// The definitions of an env file's text; `origin` names the file.
pub fn parse_env_file(text: &str, origin: &str) -> Result<Vec<Definition>, CliError> {
    let mut defs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = format!("{origin}:{}", n + 1);
        let (var, item) = parse_definition(trimmed).ok_or_else(|| {
            CliError::with(
                exit::INVALID,
                format!(
                    "{at}: expected VAR=ITEM (VAR: letters, digits and _, not starting with a \
                     digit; ITEM: an item's name, or keyward://NAME), a blank line or a # comment"
                ),
            )
        })?;
        defs.push(Definition {
            var,
            item,
            origin: at,
        });
    }
    Ok(defs)
}

/// Every definition: the files' in order, then `--env`'s.
pub fn definitions(env: &[String], env_files: &[PathBuf]) -> Result<Vec<Definition>, CliError> {
    let mut defs = Vec::new();
    for file in env_files {
        let text = std::fs::read_to_string(file).map_err(|e| {
            CliError::with(
                exit::INVALID,
                format!("cannot read the env file {}: {e}", file.display()),
            )
        })?;
        defs.extend(parse_env_file(&text, &file.display().to_string())?);
    }
    for e in env {
        let (var, item) = parse_definition(e).ok_or_else(|| {
            CliError::with(
                exit::INVALID,
                format!(
                    "--env {e}: expected VAR=ITEM (VAR: letters, digits and _, not starting \
                     with a digit)"
                ),
            )
        })?;
        defs.push(Definition {
            var,
            item,
            origin: format!("--env {e}"),
        });
    }
    // A later definition of a variable replaces an earlier one.
    let mut kept: Vec<Definition> = Vec::with_capacity(defs.len());
    for d in defs {
        kept.retain(|k| k.var != d.var);
        kept.push(d);
    }
    Ok(kept)
}

/// Checks that `value` (of item `item`) can be an environment variable's value.
pub fn env_value<'v>(value: &'v Secret, item: &str, origin: &str) -> Result<&'v OsStr, CliError> {
    let bytes = value.expose();
    let why = if bytes.contains(&0) {
        Some("it holds a NUL byte")
    } else if std::str::from_utf8(bytes).is_err() {
        Some("it is not UTF-8 text")
    } else {
        None
    };
    match why {
        Some(why) => Err(CliError::with(
            exit::INVALID,
            format!("item {item:?} ({origin}) cannot be an environment variable's value: {why}"),
        )),
        None => Ok(OsStr::from_bytes(bytes)),
    }
}

/// `keyward run`: see the module doc. Returns only on a failure.
pub fn run(
    env: &[String],
    env_files: &[PathBuf],
    command: &[OsString],
    agent: WithAgent<'_>,
) -> Result<(), CliError> {
    let Some((program, args)) = command.split_first() else {
        return Err(CliError::with(
            exit::INVALID,
            "no command to run: keyward run --env VAR=ITEM -- CMD [ARGS…]",
        ));
    };
    // Everything the user wrote is checked before the agent is asked.
    let defs = definitions(env, env_files)?;
    let mut names: Vec<String> = Vec::new();
    for d in &defs {
        if !names.contains(&d.item) {
            names.push(d.item.clone());
        }
    }
    let values = fetch_all(agent, &names, |i| {
        let users: Vec<&str> = defs
            .iter()
            .filter(|d| d.item == names[i])
            .map(|d| d.origin.as_str())
            .collect();
        format!("asked for by {}", users.join(", "))
    })?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    for d in &defs {
        let at = names.iter().position(|n| *n == d.item).unwrap_or_default();
        cmd.env(&d.var, env_value(&values[at], &d.item, &d.origin)?);
    }
    let err = cmd.exec();
    // As env(1) and the shells: 127 when the program is not found, 126
    // when it cannot be run.
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    Err(CliError::with(
        code,
        format!("cannot run {}: {err}", Path::new(program).display()),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn definitions_take_both_forms_and_refuse_bad_names() {
        assert_eq!(
            parse_definition("DB_PW=db/password"),
            Some(("DB_PW".into(), "db/password".into()))
        );
        assert_eq!(
            parse_definition(" _X = keyward://a b=c "),
            Some(("_X".into(), "a b=c".into()))
        );
        for bad in [
            "=x",
            "1A=x",
            "A-B=x",
            "A=",
            "A=keyward://",
            "noequals",
            "A B=x",
        ] {
            assert_eq!(parse_definition(bad), None, "{bad}");
        }
    }

    #[test]
    fn env_files_skip_comments_and_name_the_bad_line() {
        let text = "# app\n\nA=x\n  # indented comment\nB=keyward://y\n";
        let defs = parse_env_file(text, "app.env").unwrap();
        assert_eq!(defs.len(), 2);
        assert_eq!(defs[1].origin, "app.env:5");
        let e = parse_env_file("A=x\nexport B=y\n", "app.env").unwrap_err();
        assert!(
            e.message.starts_with("app.env:2: expected VAR=ITEM"),
            "{}",
            e.message
        );
        assert_eq!(e.code, exit::INVALID);
    }

    #[test]
    fn values_must_be_text_without_nul() {
        assert!(env_value(&Secret::from("ok"), "a", "--env A=a").is_ok());
        let e = env_value(&Secret::new(b"a\0b".to_vec()), "a", "--env A=a").unwrap_err();
        assert!(e.message.contains("\"a\"") && e.message.contains("NUL"));
        assert!(!e.message.contains("a\0b"));
        let e = env_value(&Secret::new(vec![0xff]), "a", "--env A=a").unwrap_err();
        assert!(e.message.contains("UTF-8"));
    }
}
