//! `keyward export`: every item, in clear, in one file, for moving to
//! another password manager or another keyward (`keyward import` reads it).
//!
//! The file is the one place where keyward writes secrets unencrypted, so
//! the command is careful about who can read it and about what it leaves
//! behind:
//!
//! - The Master Password is asked for and checked (`CheckPassword`, which
//!   counts a wrong one like a failed unlock) before any item is read: an
//!   unlocked agent alone is not enough to copy everything out.
//! - The file is created 0600 with `O_CREAT | O_EXCL | O_NOFOLLOW` through
//!   [`crate::files::write_new_private`]: never into an existing file, never
//!   through a planted symbolic link, and never through a temporary file
//!   elsewhere (with `--force`, the new file is made the same way beside the
//!   path, then renamed over it).
//! - The JSON is built in one buffer sized up front (so it never moves and
//!   leaves no copies) and wiped once written, as are the values fetched.
//!
//! # The format (version 1)
//!
//! One JSON object, UTF-8, one item per line:
//!
//! ```text
//! {"format":"keyward-export","version":1,"exported":1767225600,"items":[
//! {"name":"github/token","value":"ghp_…","created":1767000000,"modified":1767100000},
//! {"name":"ssh/raw","value_base64":"AP8=","created":1767000000,"modified":1767000000}
//! ]}
//! ```
//!
//! - `format` is always `"keyward-export"`; `version` is 1. A later
//!   incompatible layout gets a higher version, which older keywards refuse.
//! - `exported`: when the file was made (Unix seconds).
//! - `items`: sorted by name (UTF-8 bytes). Each has `name` (the item's
//!   name), `created` and `modified` (Unix seconds, for information: an
//!   import sets them anew), and exactly one of `value` (the value, when it
//!   is UTF-8 text) or `value_base64` (any other value: its bytes in
//!   standard base64 with padding, RFC 4648 §4).

use crate::cli::PasswordSource;
use crate::input::{self, ask_hidden, read_fd};
use crate::output::{self, CliError, Spinner, exit};
use base64::Engine;
use keyward_client::{ClientError, ErrorCode, ItemInfo, Request, Secret};
use std::path::Path;
use zeroize::Zeroizing;

/// The value of the file's `format` field.
pub const FORMAT_NAME: &str = "keyward-export";
/// The layout version this keyward writes (and the newest it reads).
pub const VERSION: u64 = 1;

/// `keyward export --help`: the long description (also the man page's).
pub const ABOUT: &str = "\
Write every item, in clear, to a file (JSON), e.g. to move to another password manager.

Asks for the Master Password and checks it before anything is read (a wrong one counts \
like a failed unlock). The file is created readable only by you (0600), never through a \
symbolic link and never into an existing file (unless --force). It holds every secret \
unencrypted: delete it as soon as it has been used (shred -u FILE).

The format, version 1: one JSON object {\"format\": \"keyward-export\", \"version\": 1, \
\"exported\": UNIX-SECONDS, \"items\": [...]}, one item per line, sorted by name. Each item \
has \"name\", \"created\" and \"modified\" (Unix seconds) and either \"value\" (a value that is \
UTF-8 text) or \"value_base64\" (any other value, standard base64 with padding). \
`keyward import` reads it back.";

/// `keyward export --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  keyward export --out keyward.json             # asks for the Master Password
  keyward export --out keyward.json --password-fd 3 3<pwfile
  keyward import keyward.json                   # on the other machine; then: shred -u keyward.json";

/// Export formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// keyward's own JSON layout (read back by `keyward import`).
    Json,
}

/// `keyward export`.
pub fn run(
    autostart: bool,
    no_prompt: bool,
    password: &PasswordSource,
    out: &Path,
    force: bool,
    _format: Format,
) -> Result<(), CliError> {
    // Said before the password is asked for, and checked again, race-free,
    // when the file is created.
    if !force && std::fs::symlink_metadata(out).is_ok() {
        return Err(exists(out));
    }
    let mut c = crate::cli::connect_unlocked(autostart, no_prompt)?;
    check_password(&mut c, password)?;
    eprintln!(
        "Warning: {} will hold every secret of this vault in clear text; anyone who can read \
         it can read them all. Delete it once you have used it (shred -u {}).",
        out.display(),
        out.display()
    );
    let spinner = Spinner::start("Reading the items…");
    let items = read_all(&mut c);
    drop(spinner);
    let items = items?;
    let n = items.len();
    let bytes = to_json(&items, unix_now());
    drop(items);
    crate::files::write_new_private(out, &bytes, force).map_err(|e| match e {
        crate::files::CreateError::Exists(_) => exists(out),
        e => CliError::msg(format!("cannot write the export: {e}")),
    })?;
    drop(bytes);
    eprintln!(
        "Exported {n} item{} to {} (readable only by you). It is not encrypted: delete it \
         after use.",
        if n == 1 { "" } else { "s" },
        out.display()
    );
    Ok(())
}

fn exists(out: &Path) -> CliError {
    CliError::with(
        exit::INVALID,
        crate::files::CreateError::Exists(out.to_owned()).to_string(),
    )
}

/// Asks for the Master Password and has the agent check it: three tries on
/// a terminal (as sudo gives), one from a descriptor.
fn check_password(
    c: &mut keyward_client::Client,
    password: &PasswordSource,
) -> Result<(), CliError> {
    let fd = if password.password_stdin {
        Some(0)
    } else {
        password.password_fd
    };
    let retry = fd.is_none() && input::have_tty();
    let mut tries = 0;
    loop {
        let pw = match fd {
            Some(fd) => read_fd(fd, "password")?,
            None => ask_hidden(
                "Master Password",
                "Confirm with your Master Password to export every item in clear.",
            )?,
        };
        let spinner = Spinner::start("Checking your password…");
        let r = c.call(&Request::CheckPassword { password: pw });
        drop(spinner);
        match r {
            Ok(_) => return Ok(()),
            Err(ClientError::Agent(e))
                if retry && tries < 2 && e.code == ErrorCode::WrongCredentials =>
            {
                tries += 1;
                eprintln!("{}.", output::sentence(&e.message));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Every item with its value, sorted by name.
fn read_all(c: &mut keyward_client::Client) -> Result<Vec<(ItemInfo, Secret)>, CliError> {
    let list = c.list()?;
    let mut items = Vec::with_capacity(list.len());
    for info in list {
        match c.get(&info.name) {
            Ok(v) => items.push((info, v)),
            // Removed since the listing: nothing to export.
            Err(ClientError::Agent(e)) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(items)
}

/// The most bytes a JSON string of `s` can take: every byte escaped as
/// `\u00XX`, and the quotes.
fn json_str_bound(s: &[u8]) -> usize {
    6 * s.len() + 2
}

/// The export file's bytes (see the module doc), in one buffer that never
/// grows past the capacity it starts with, wiped when dropped.
pub fn to_json(items: &[(ItemInfo, Secret)], exported: u64) -> Zeroizing<Vec<u8>> {
    const PER_ITEM: usize = 128; // keys, punctuation, two u64s
    let capacity = 128
        + items
            .iter()
            .map(|(i, v)| {
                PER_ITEM
                    + json_str_bound(i.name.as_bytes())
                    + json_str_bound(v.expose()).max(v.len().div_ceil(3) * 4 + 2)
            })
            .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    let start = out.as_ptr();
    out.extend_from_slice(
        format!("{{\"format\":\"{FORMAT_NAME}\",\"version\":{VERSION},\"exported\":{exported},\"items\":[")
            .as_bytes(),
    );
    for (k, (info, value)) in items.iter().enumerate() {
        out.extend_from_slice(if k == 0 { b"\n" } else { b",\n" });
        out.extend_from_slice(b"{\"name\":");
        push_json_str(&mut out, &info.name);
        match value.expose_str() {
            Some(text) => {
                out.extend_from_slice(b",\"value\":");
                push_json_str(&mut out, text);
            }
            None => {
                out.extend_from_slice(b",\"value_base64\":\"");
                let engine = base64::engine::general_purpose::STANDARD;
                let at = out.len();
                out.resize(at + base64::encoded_len(value.len(), true).unwrap_or(0), 0);
                // The length was computed for exactly this input.
                let _ = engine.encode_slice(value.expose(), &mut out[at..]);
                out.push(b'"');
            }
        }
        out.extend_from_slice(
            format!(
                ",\"created\":{},\"modified\":{}}}",
                info.created, info.modified
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"\n]}\n");
    debug_assert_eq!(start, out.as_ptr(), "the export buffer moved");
    out
}

/// Appends `s` as a JSON string (serde_json's escaping, written straight
/// into `out`).
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, value: &[u8]) -> (ItemInfo, Secret) {
        (
            ItemInfo {
                name: name.into(),
                created: 1,
                modified: 2,
            },
            Secret::from_slice(value),
        )
    }

    #[test]
    fn text_values_are_strings_and_others_base64() {
        let items = [
            item("a/b", b"line 1\n\"quoted\" \\ \x01"),
            item("bin", b"\x00\xff"),
            item("empty", b""),
        ];
        let bytes = to_json(&items, 42);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["format"], "keyward-export");
        assert_eq!(v["version"], 1);
        assert_eq!(v["exported"], 42);
        let list = v["items"].as_array().unwrap();
        assert_eq!(list[0]["value"], "line 1\n\"quoted\" \\ \x01");
        assert_eq!(list[1]["value_base64"], "AP8=");
        assert!(list[1].get("value").is_none());
        assert_eq!(list[2]["value"], "");
        assert_eq!(list[2]["created"], 1);
        assert_eq!(list[2]["modified"], 2);
        // One item per line.
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 5);
    }

    #[test]
    fn the_buffer_never_grows_even_for_the_worst_escaping() {
        let worst = vec![0x01u8; keyward_client::message::MAX_VALUE];
        let items = [item("\u{1}\u{1}", &worst), item("b", &[0xff; 1000])];
        let bytes = to_json(&items, 0);
        assert!(bytes.len() <= bytes.capacity());
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
    }
}
