//! `keyward inject`: a template read on standard input, with every
//! `{{ keyward://ITEM }}` replaced by the item's value.
//!
//! - A reference is `{{`, optional spaces or tabs, `keyward://`, the item's
//!   name, optional spaces or tabs, `}}`, on one line. The name is
//!   everything between `keyward://` and `}}`, less the spaces around it.
//! - `\{{` is a literal `{{` (the backslash is dropped, and what follows is
//!   not a reference). Other `{{` that do not start a keyward reference
//!   (another template language's) are copied as they are.
//! - Every item is fetched before anything is written: an unknown item is an
//!   error naming it and its line, and then nothing is written at all.
//! - The result goes to standard output, or to `--out FILE`, created 0600
//!   and never through a symbolic link (`crate::files`).

use crate::output::{CliError, exit};
use crate::run::{SCHEME, WithAgent, fetch_all};
use std::io::{Read, Write};
use std::path::Path;
use zeroize::Zeroizing;

/// `keyward inject --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  keyward inject < config.yml.tpl > config.yml    # password: {{ keyward://db/password }}
  keyward inject --out .env < env.tpl            # created 0600; --force to replace it
  echo 'literal \\{{ keyward://x }}' | keyward inject";

/// The largest template read (a configuration file, not a data set).
pub const MAX_TEMPLATE: usize = 16 << 20;

/// A piece of the template: bytes copied as they are, or a reference.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'t> {
    /// Copied.
    Text(&'t [u8]),
    /// The value of item `name`, written on line `line`.
    Reference { name: String, line: usize },
}

/// Splits `template` into pieces; an error names the line of a malformed
/// reference.
pub fn parse(template: &[u8]) -> Result<Vec<Piece<'_>>, CliError> {
    let mut pieces = Vec::new();
    let mut line = 1;
    let mut start = 0; // of the text not yet pushed
    let mut i = 0;
    while i < template.len() {
        let rest = &template[i..];
        if rest.starts_with(b"\\{{") {
            pieces.push(Piece::Text(&template[start..i]));
            pieces.push(Piece::Text(b"{{"));
            i += 3;
            start = i;
            continue;
        }
        if rest.starts_with(b"{{") {
            let inner = &rest[2..];
            let blank = inner
                .iter()
                .take_while(|b| **b == b' ' || **b == b'\t')
                .count();
            if inner[blank..].starts_with(SCHEME.as_bytes()) {
                let after = &inner[blank + SCHEME.len()..];
                let eol = after
                    .iter()
                    .position(|b| *b == b'\n')
                    .unwrap_or(after.len());
                let close = after[..eol]
                    .windows(2)
                    .position(|w| w == b"}}")
                    .ok_or_else(|| {
                        CliError::with(
                            exit::INVALID,
                            format!(
                                "line {line}: a reference `{{{{ keyward://…` has no `}}}}` on \
                                 its line (write `\\{{{{` for a literal `{{{{`)"
                            ),
                        )
                    })?;
                let name = std::str::from_utf8(&after[..close])
                    .map_err(|_| {
                        CliError::with(
                            exit::INVALID,
                            format!("line {line}: an item name that is not UTF-8 text"),
                        )
                    })?
                    .trim_matches([' ', '\t']);
                if name.is_empty() {
                    return Err(CliError::with(
                        exit::INVALID,
                        format!("line {line}: `{{{{ keyward:// }}}}` names no item"),
                    ));
                }
                pieces.push(Piece::Text(&template[start..i]));
                pieces.push(Piece::Reference {
                    name: name.to_owned(),
                    line,
                });
                i += 2 + blank + SCHEME.len() + close + 2;
                start = i;
                continue;
            }
        }
        if template[i] == b'\n' {
            line += 1;
        }
        i += 1;
    }
    pieces.push(Piece::Text(&template[start..]));
    pieces.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
    Ok(pieces)
}

/// `keyward inject`: see the module doc.
pub fn inject(out: Option<&Path>, force: bool, agent: WithAgent<'_>) -> Result<(), CliError> {
    // Said before the agent is asked (and checked again, race-free, when
    // the file is created).
    if let Some(path) = out
        && !force
        && std::fs::symlink_metadata(path).is_ok()
    {
        return Err(CliError::with(
            exit::INVALID,
            crate::files::CreateError::Exists(path.to_owned()).to_string(),
        ));
    }
    let mut template = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(MAX_TEMPLATE as u64 + 1)
        .read_to_end(&mut template)
        .map_err(|e| CliError::msg(format!("cannot read the template: {e}")))?;
    if template.len() > MAX_TEMPLATE {
        return Err(CliError::with(
            exit::INVALID,
            format!("the template is larger than {} MiB", MAX_TEMPLATE >> 20),
        ));
    }
    let pieces = parse(&template)?;
    let mut names: Vec<String> = Vec::new();
    for p in &pieces {
        if let Piece::Reference { name, .. } = p
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    }
    let values = if names.is_empty() {
        Vec::new()
    } else {
        fetch_all(agent, &names, |i| {
            let lines: Vec<String> = pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Reference { name, line } if *name == names[i] => Some(line.to_string()),
                    _ => None,
                })
                .collect();
            format!("referenced on line {} of the template", lines.join(", "))
        })?
    };
    let value_of = |name: &str| {
        let at = names.iter().position(|n| n == name).unwrap_or_default();
        values[at].expose()
    };
    let bytes = |p: &Piece<'_>| -> usize {
        match p {
            Piece::Text(t) => t.len(),
            Piece::Reference { name, .. } => value_of(name).len(),
        }
    };
    // The final size from the start: a growing buffer would leave unwiped
    // copies of the values behind.
    let mut result = Zeroizing::new(Vec::with_capacity(pieces.iter().map(bytes).sum()));
    for p in &pieces {
        match p {
            Piece::Text(t) => result.extend_from_slice(t),
            Piece::Reference { name, .. } => result.extend_from_slice(value_of(name)),
        }
    }
    match out {
        Some(path) => crate::files::write_new_private(path, &result, force)
            .map_err(|e| CliError::with(exit::INVALID, e.to_string()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&result)
                .and_then(|()| stdout.flush())
                .map_err(|e| CliError::msg(format!("cannot write to standard output: {e}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn refs(t: &str) -> Vec<(String, usize)> {
        parse(t.as_bytes())
            .unwrap()
            .into_iter()
            .filter_map(|p| match p {
                Piece::Reference { name, line } => Some((name, line)),
                Piece::Text(_) => None,
            })
            .collect()
    }

    #[test]
    fn references_with_and_without_spaces() {
        assert_eq!(
            refs("a: {{ keyward://db/pw }}\nb: {{keyward://x y}}\n"),
            vec![("db/pw".into(), 1), ("x y".into(), 2)]
        );
        assert_eq!(refs("{{\tkeyward://t\t}}"), vec![("t".into(), 1)]);
    }

    #[test]
    fn escapes_and_other_templates_are_copied() {
        let p = parse(b"\\{{ keyward://x }} {{ .Values.y }}").unwrap();
        let text: Vec<u8> = p
            .iter()
            .flat_map(|p| match p {
                Piece::Text(t) => t.to_vec(),
                Piece::Reference { .. } => panic!("no reference expected"),
            })
            .collect();
        assert_eq!(text, b"{{ keyward://x }} {{ .Values.y }}");
    }

    #[test]
    fn malformed_references_name_their_line() {
        let e = parse(b"ok\n{{ keyward://x\n}}").unwrap_err();
        assert!(e.message.starts_with("line 2:"), "{}", e.message);
        let e = parse(b"{{ keyward:// }}").unwrap_err();
        assert!(e.message.contains("names no item"), "{}", e.message);
    }
}
