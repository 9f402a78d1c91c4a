//! `keyward import`: items from keyward's own export, a `pass` store, or
//! the CSV exports of Bitwarden, 1Password and KeePassXC.
//!
//! An import has two phases. First every entry of the source is read and
//! turned into items (name and value) in memory; nothing is sent to the
//! agent until the whole source has been read, so a source that cannot be
//! read (a `pass show` that fails, a file of another format) changes
//! nothing. Then the names are compared with the vault's: new names are
//! created, existing ones replaced only with `--force` (otherwise listed and
//! skipped). `--dry-run` stops after the comparison and lists, by name only,
//! what would be created, replaced or skipped.
//!
//! # How entries become items
//!
//! - **json** (`keyward export`): one item per entry, name and value as
//!   they are (`value`, or `value_base64` decoded). The times in the file are
//!   not restored: the agent stamps items when they are set.
//! - **pass**: one item per `*.gpg` file of the store
//!   (`$PASSWORD_STORE_DIR`, else `~/.password-store`, or the directory
//!   given), named as `pass` names it (`github/token` for
//!   `github/token.gpg`); its value is what `pass show NAME` prints (the
//!   real `pass` program decrypts it, through gpg and gpg-agent), the whole
//!   content less one final newline: the password on the first line and any
//!   further lines, as `pass` keeps them (`keyward get NAME | head -n 1` gives
//!   the password alone). Hidden files and directories (`.git`, `.gpg-id`,
//!   `.extensions`) are skipped, as are symbolic links to directories. A dry
//!   run decrypts nothing.
//! - **CSV** (a login, a note): one item per non-empty field of the entry,
//!   under the entry's name: `NAME/password`, `NAME/username`, `NAME/url`,
//!   `NAME/totp`, `NAME/notes`, and for Bitwarden `NAME/fields` (its custom
//!   fields as Bitwarden writes them, one `name: value` per line). `NAME` is
//!   the folder or group path, a `/`, and the title (`Work/GitHub`); an
//!   entry whose name is already taken by an earlier entry of the same file
//!   becomes `NAME (2)`, `NAME (3)`, …
//!   - Bitwarden: the header `folder,favorite,type,name,notes,fields,reprompt,
//!     login_uri,login_username,login_password,login_totp` (its CSV holds
//!     logins and secure notes); the folder, then `name`.
//!   - 1Password 8: the header `Title,Url,Username,Password,OTPAuth,Favorite,
//!     Archived,Tags,Notes` (its CSV holds logins; `Website` is read for
//!     `Url`, as older versions wrote it); no folder. Archived items are
//!     imported too; favourites and tags are not kept.
//!   - KeePassXC: the header `"Group","Title","Username","Password","URL",
//!     "Notes","TOTP","Icon","Last Modified","Created"` (2.6 and later; the
//!     older six columns also work); the group path without its first part
//!     (the root group, `Root` by default), then `Title`.
//!
//!   Columns are found by their header names (case and order do not
//!   matter; unknown columns are ignored). Titles and folders are cleaned:
//!   control characters (a newline, a tab) become spaces, bytes that are not
//!   UTF-8 become U+FFFD, spaces at either end are dropped, and an empty
//!   title becomes `untitled`.
//!
//! # Names and values the vault refuses
//!
//! Item names are 1–256 bytes of UTF-8 without control characters, values
//! at most 61,440 bytes (docs/PROTOCOL.md §5). An entry that breaks these
//! rules after the cleaning above (a name too long, a `pass` or JSON name
//! with a control character, a value too large), or a name that appears
//! twice in the source, is not imported: it is reported on standard error
//! by where it is in the source (never by its value), and the rest is
//! imported. Names from a `pass` store or a JSON export are never changed.
//!
//! # What stays in memory
//!
//! The source is read into one buffer that is wiped when the command ends,
//! CSV is parsed with `csv-core` into buffers of ours (wiped too), and each
//! value is held in a [`Secret`]. JSON strings that contain escapes pass
//! through serde_json's scratch buffer, which is freed without being wiped.

use crate::output::{CliError, Spinner, exit};
use base64::Engine;
use keyward_client::message::{MAX_NAME, MAX_VALUE};
use keyward_client::{Client, Secret};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, Zeroizing};

/// `keyward import --help`: the long description (also the man page's).
pub const ABOUT: &str = "\
Create items from keyward's JSON export, a pass store, or the CSV export of Bitwarden, \
1Password or KeePassXC.

Without --format, the format is told from FILE: a directory is a pass store, a file \
starting with { a keyward export, a CSV file is known by its header line. FILE - (or no \
FILE, except for pass) reads standard input.

json: one item per entry, as exported. pass: one item per entry of the store (FILE, else \
$PASSWORD_STORE_DIR, else ~/.password-store), named as pass names it, holding what `pass \
show NAME` prints less one final newline (the whole entry: the password on its first \
line). CSV: one item per non-empty field of an entry, named FOLDER/TITLE/password, \
…/username, …/url, …/totp, …/notes (and …/fields for Bitwarden's custom fields); a title \
taken by an earlier entry becomes \"TITLE (2)\". Headers read: Bitwarden \
(folder,favorite,type,name,notes,fields,reprompt,login_uri,login_username,login_password,\
login_totp), 1Password 8 (Title,Url,Username,Password,OTPAuth,Favorite,Archived,Tags,Notes), \
KeePassXC (Group,Title,Username,Password,URL,Notes,TOTP,…; the root group is left out of \
names). Control characters in CSV titles become spaces.

Existing items are replaced only with --force; otherwise they are listed and skipped. An \
entry whose name or value the vault refuses (names: 1-256 bytes, no control characters; \
values: at most 61,440 bytes), or whose name appears twice, is reported by its place in \
the source and skipped. --dry-run lists the names that would be created, replaced or \
skipped (never a value) and changes nothing. The agent must be unlocked.";

/// `keyward import --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  keyward import --dry-run keyward.json         # what would be created or replaced
  keyward import keyward.json                   # from `keyward export`
  keyward import --format pass                  # ~/.password-store, through `pass show`
  keyward import --format bitwarden-csv --force bitwarden.csv   # replace existing names";

/// Import formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// keyward's own export (`keyward export`).
    Json,
    /// a pass store, every entry read through `pass show`.
    Pass,
    /// Bitwarden's CSV export.
    BitwardenCsv,
    /// 1Password 8's CSV export.
    #[value(name = "1password-csv")]
    OnepasswordCsv,
    /// KeePassXC's CSV export.
    KeepassxcCsv,
}

/// The most bytes an input file may have (far more than any vault holds).
const MAX_INPUT: usize = 256 << 20;

/// One item to create.
struct Entry {
    name: String,
    value: Secret,
    /// Where it is in the source, for reports ("line 4", "pass entry x").
    place: String,
}

/// What a source gave: the items, and what could not be imported.
#[derive(Default)]
struct Parsed {
    entries: Vec<Entry>,
    problems: Vec<String>,
}

impl Parsed {
    /// Adds an entry, or a problem if the vault would refuse it.
    fn push(&mut self, name: String, value: Secret, place: String) {
        match name_problem(&name) {
            Some(why) => self.problems.push(format!("{place}: {why}")),
            None if value.len() > MAX_VALUE => self.problems.push(format!(
                "{place} ({name}): the value is too large ({} bytes; items hold at most {MAX_VALUE})",
                value.len()
            )),
            None => self.entries.push(Entry { name, value, place }),
        }
    }
}

/// Why the vault would refuse `name` (the rules of docs/PROTOCOL.md §5).
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("the item name is empty".into())
    } else if name.len() > MAX_NAME {
        Some(format!(
            "the item name is too long ({} bytes, at most {MAX_NAME}): {}…",
            name.len(),
            name.chars().take(40).collect::<String>()
        ))
    } else if name.chars().any(char::is_control) {
        Some(format!(
            "the item name {:?} has a control character",
            name.escape_debug().to_string()
        ))
    } else {
        None
    }
}

/// `keyward import`.
pub fn run(
    autostart: bool,
    no_prompt: bool,
    format: Option<Format>,
    dry_run: bool,
    force: bool,
    file: Option<&Path>,
) -> Result<(), CliError> {
    let stdin = file.is_none_or(|f| f == Path::new("-"));
    let format = match format {
        Some(f) => f,
        None if !stdin && file.is_some_and(Path::is_dir) => Format::Pass,
        None => {
            let input = read_input(file)?;
            let f = detect(&input).ok_or_else(|| {
                CliError::with(
                    exit::INVALID,
                    format!(
                        "cannot tell the format of {}: pass --format (json, pass, bitwarden-csv, \
                         1password-csv or keepassxc-csv)",
                        shown(file)
                    ),
                )
            })?;
            return finish(
                autostart,
                no_prompt,
                parse(f, &input, file)?,
                dry_run,
                force,
            );
        }
    };
    let parsed = if format == Format::Pass {
        read_pass_store(file, dry_run)?
    } else {
        parse(format, &read_input(file)?, file)?
    };
    finish(autostart, no_prompt, parsed, dry_run, force)
}

fn shown(file: Option<&Path>) -> String {
    match file {
        Some(f) if f != Path::new("-") => f.display().to_string(),
        _ => "standard input".to_owned(),
    }
}

fn parse(format: Format, input: &[u8], file: Option<&Path>) -> Result<Parsed, CliError> {
    match format {
        Format::Json => parse_json(input),
        Format::Pass => Err(CliError::msg("a pass store is a directory, not a file")),
        csv => parse_csv(csv, input)
            .map_err(|e| CliError::with(exit::INVALID, format!("{}: {e}", shown(file)))),
    }
}

/// The whole file (or standard input) in one wiped buffer.
fn read_input(file: Option<&Path>) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let failed = |e: std::io::Error| CliError::msg(format!("cannot read {}: {e}", shown(file)));
    match file {
        Some(path) if path != Path::new("-") => {
            let f = std::fs::File::open(path).map_err(failed)?;
            let size = f.metadata().map_or(0, |m| m.len() as usize);
            read_wiped(f, size.saturating_add(1)).map_err(failed)
        }
        _ => {
            if crate::input::stdin_is_tty() {
                return Err(CliError::with(
                    exit::INVALID,
                    "give the file to import (`keyward import FILE`), or pipe it in",
                ));
            }
            read_wiped(std::io::stdin().lock(), 64 << 10).map_err(failed)
        }
    }
}

/// Reads `r` to its end into a wiped buffer; when the buffer is full, its
/// bytes move to one twice as large and the old one is wiped (a growing
/// `Vec` would leave copies behind).
fn read_wiped(mut r: impl Read, hint: usize) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(vec![0u8; hint.clamp(1, MAX_INPUT + 1)]);
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len > MAX_INPUT {
                return Err(std::io::Error::other(format!(
                    "larger than {} MiB",
                    MAX_INPUT >> 20
                )));
            }
            let mut bigger = Zeroizing::new(vec![0u8; (2 * len).min(MAX_INPUT + 1)]);
            bigger[..len].copy_from_slice(&buf[..len]);
            buf = bigger;
        }
        match r.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// The format of `input`, from its first bytes: JSON, or a CSV header.
fn detect(input: &[u8]) -> Option<Format> {
    let first = input.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first == b'{' {
        return Some(Format::Json);
    }
    let header = csv_records(input).into_iter().next()?;
    let has = |col: &str| column(&header, &[col]).is_some();
    if has("login_password") && has("name") {
        Some(Format::BitwardenCsv)
    } else if has("group") && has("title") && has("password") {
        Some(Format::KeepassxcCsv)
    } else if has("title") && has("password") {
        Some(Format::OnepasswordCsv)
    } else {
        None
    }
}

// --- keyward's JSON export ---------------------------------------------------

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportFile {
    format: String,
    version: u64,
    #[serde(default)]
    #[allow(dead_code)]
    exported: Option<u64>,
    items: Vec<ExportItem>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportItem {
    name: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_base64: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    created: Option<u64>,
    #[serde(default)]
    #[allow(dead_code)]
    modified: Option<u64>,
}

fn parse_json(input: &[u8]) -> Result<Parsed, CliError> {
    let invalid = |m: String| CliError::with(exit::INVALID, m);
    let file: ExportFile = serde_json::from_slice(input)
        .map_err(|e| invalid(format!("this is not a keyward export (JSON): {e}")))?;
    if file.format != crate::export::FORMAT_NAME {
        return Err(invalid(format!(
            "this JSON is not a keyward export (its \"format\" is {:?}, not {:?})",
            file.format,
            crate::export::FORMAT_NAME
        )));
    }
    if file.version > crate::export::VERSION {
        return Err(invalid(format!(
            "this export is of version {}, made by a newer keyward: this one reads version {} \
             (update keyward)",
            file.version,
            crate::export::VERSION
        )));
    }
    let mut parsed = Parsed::default();
    for (k, item) in file.items.into_iter().enumerate() {
        let place = format!("item {}", k + 1);
        let value = match (item.value, item.value_base64) {
            (Some(text), None) => Secret::from_string(text),
            (None, Some(mut b64)) => {
                let decoded = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes());
                b64.zeroize();
                match decoded {
                    Ok(bytes) => Secret::new(bytes),
                    Err(_) => {
                        parsed.problems.push(format!(
                            "{place} ({}): \"value_base64\" is not valid base64",
                            item.name
                        ));
                        continue;
                    }
                }
            }
            (mut a, mut b) => {
                a.zeroize();
                b.zeroize();
                parsed.problems.push(format!(
                    "{place} ({}): needs exactly one of \"value\" and \"value_base64\"",
                    item.name
                ));
                continue;
            }
        };
        parsed.push(item.name, value, place);
    }
    Ok(parsed)
}

// --- pass ----------------------------------------------------------------------

/// The store: FILE, else `$PASSWORD_STORE_DIR`, else `~/.password-store`.
fn store_dir(file: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(f) = file {
        return Ok(f.to_owned());
    }
    if let Some(d) = std::env::var_os("PASSWORD_STORE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| CliError::msg("HOME is not set: give the pass store's directory as FILE"))?;
    Ok(PathBuf::from(home).join(".password-store"))
}

fn read_pass_store(file: Option<&Path>, dry_run: bool) -> Result<Parsed, CliError> {
    let store = store_dir(file)?;
    if !store.is_dir() {
        return Err(CliError::with(
            exit::INVALID,
            format!(
                "{} is not a pass store (no such directory): give its path, or set \
                 PASSWORD_STORE_DIR",
                store.display()
            ),
        ));
    }
    let mut names = Vec::new();
    let mut problems = Vec::new();
    walk(&store, &mut Vec::new(), &mut names, &mut problems)?;
    names.sort();
    let mut parsed = Parsed {
        problems,
        ..Parsed::default()
    };
    let spinner = (!dry_run).then(|| Spinner::start("Reading the pass store (pass show)…"));
    for name in names {
        let place = format!("pass entry {name}");
        if let Some(why) = name_problem(&name) {
            parsed.problems.push(format!("{place}: {why}"));
            continue;
        }
        // A dry run lists names only: nothing to decrypt.
        let value = if dry_run {
            Secret::new(Vec::new())
        } else {
            pass_show(&store, &name)?
        };
        parsed.push(name, value, place);
    }
    drop(spinner);
    Ok(parsed)
}

/// The `pass` names of the `*.gpg` files under `dir` (`rel`: the path so far).
fn walk(
    dir: &Path,
    rel: &mut Vec<String>,
    names: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> Result<(), CliError> {
    let failed = |e: std::io::Error| CliError::msg(format!("cannot read {}: {e}", dir.display()));
    let mut entries = std::fs::read_dir(dir)
        .map_err(failed)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let file_name = entry.file_name();
        let Some(part) = file_name.to_str() else {
            problems.push(format!("{}: the name is not UTF-8", entry.path().display()));
            continue;
        };
        if part.starts_with('.') {
            continue;
        }
        let kind = entry.file_type().map_err(failed)?;
        if kind.is_dir() {
            rel.push(part.to_owned());
            walk(&entry.path(), rel, names, problems)?;
            rel.pop();
        } else if let Some(stem) = part.strip_suffix(".gpg")
            && (kind.is_file() || (kind.is_symlink() && entry.path().is_file()))
        {
            let mut name = rel.join("/");
            if !name.is_empty() {
                name.push('/');
            }
            name.push_str(stem);
            names.push(name);
        }
    }
    Ok(())
}

/// What `pass show NAME` prints, less one final newline. Read into a buffer
/// sized for the largest value (it never moves); more than that is read on
/// and wiped, so that `pass` does not block writing.
fn pass_show(store: &Path, name: &str) -> Result<Secret, CliError> {
    let mut child = std::process::Command::new("pass")
        .arg("show")
        .arg("--")
        .arg(name)
        .env("PASSWORD_STORE_DIR", store)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CliError::msg(
                "the pass program is not installed (Debian and Ubuntu: apt install pass); \
                 nothing was imported",
            ),
            _ => CliError::msg(format!("cannot run pass: {e}")),
        })?;
    let mut value = Vec::with_capacity(MAX_VALUE + 2);
    let mut too_large = false;
    let read = child.stdout.take().map(|mut out| -> std::io::Result<()> {
        (&mut out)
            .take((MAX_VALUE + 2) as u64)
            .read_to_end(&mut value)?;
        let mut scratch = Zeroizing::new(vec![0u8; 8192]);
        loop {
            match out.read(&mut scratch) {
                Ok(0) => return Ok(()),
                Ok(_) => too_large = true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    });
    let mut value = Secret::new(value);
    let status = child
        .wait()
        .map_err(|e| CliError::msg(format!("cannot run pass: {e}")))?;
    if let Some(Err(e)) = read {
        return Err(CliError::msg(format!(
            "cannot read what `pass show {name}` printed: {e}; nothing was imported"
        )));
    }
    if !status.success() {
        return Err(CliError::msg(format!(
            "`pass show {name}` failed ({status}; its message is above); nothing was imported"
        )));
    }
    if too_large || value.len() > MAX_VALUE + 1 {
        // Reported by Parsed::push, without the value.
        return Ok(Secret::new(vec![0; MAX_VALUE + 1]));
    }
    if value.expose().last() == Some(&b'\n') {
        value = Secret::from_slice(&value.expose()[..value.len() - 1]);
    }
    Ok(value)
}

// --- CSV -------------------------------------------------------------------------

/// One CSV record: its fields, each in a wiped buffer, and its line.
struct Record {
    fields: Vec<Secret>,
    line: usize,
}

/// Every record of `input` (RFC 4180: quoted fields may hold commas,
/// doubled quotes and line breaks; `\n`, `\r` and `\r\n` end records; a
/// UTF-8 byte order mark is skipped). Every buffer is ours and wiped.
fn csv_records(input: &[u8]) -> Vec<Record> {
    let mut reader = csv_core::Reader::new();
    // No record is longer than the whole input.
    let mut out = Zeroizing::new(vec![0u8; input.len() + 1]);
    let mut ends = vec![0usize; 32];
    let (mut pos, mut outlen, mut endlen) = (0, 0, 0);
    let mut records = Vec::new();
    let mut line = 1;
    let mut record_line = 1;
    loop {
        if outlen == 0 && endlen == 0 {
            // A record starts here, after the line breaks csv-core skips.
            let breaks = input[pos..]
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .filter(|&&b| b == b'\n')
                .count();
            record_line = line + breaks;
        }
        let (res, nin, nout, nend) =
            reader.read_record(&input[pos..], &mut out[outlen..], &mut ends[endlen..]);
        line += input[pos..pos + nin]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        pos += nin;
        outlen += nout;
        endlen += nend;
        match res {
            csv_core::ReadRecordResult::InputEmpty => {}
            csv_core::ReadRecordResult::OutputFull => {
                // Cannot happen (the buffer holds the whole input); stop
                // rather than loop.
                break;
            }
            csv_core::ReadRecordResult::OutputEndsFull => {
                let n = ends.len();
                ends.resize(2 * n, 0);
            }
            csv_core::ReadRecordResult::Record => {
                let mut fields = Vec::with_capacity(endlen);
                let mut start = 0;
                for &end in &ends[..endlen] {
                    fields.push(Secret::from_slice(&out[start..end]));
                    start = end;
                }
                out[..outlen].zeroize();
                // A blank line is one empty field: not a record.
                if !(fields.len() == 1 && fields[0].is_empty()) {
                    records.push(Record {
                        fields,
                        line: record_line,
                    });
                }
                (outlen, endlen) = (0, 0);
            }
            csv_core::ReadRecordResult::End => break,
        }
    }
    records
}

/// The index of the first header column named (case-insensitively) one of `names`.
fn column(header: &Record, names: &[&str]) -> Option<usize> {
    header.fields.iter().position(|f| {
        f.expose_str()
            .is_some_and(|t| names.iter().any(|n| t.trim().eq_ignore_ascii_case(n)))
    })
}

/// Which columns hold what, for one CSV format.
struct Columns {
    folder: Option<usize>,
    /// Drop the folder path's first part (KeePassXC's root group).
    drop_root: bool,
    title: usize,
    /// Bitwarden's `type`: a `note` has no login fields.
    kind: Option<usize>,
    /// (item suffix, column), in the order the items are made.
    fields: Vec<(&'static str, usize)>,
}

/// A CSV export's header names, for [`columns`].
struct Layout {
    /// "a Bitwarden CSV export", for errors.
    what: &'static str,
    folder: &'static [&'static str],
    title: &'static [&'static str],
    kind: &'static [&'static str],
    /// (item suffix, the names its column may have); the password first.
    fields: &'static [(&'static str, &'static [&'static str])],
}

const BITWARDEN: Layout = Layout {
    what: "a Bitwarden CSV export",
    folder: &["folder"],
    title: &["name"],
    kind: &["type"],
    fields: &[
        ("password", &["login_password"]),
        ("username", &["login_username"]),
        ("url", &["login_uri"]),
        ("totp", &["login_totp"]),
        ("notes", &["notes"]),
        ("fields", &["fields"]),
    ],
};

const ONEPASSWORD: Layout = Layout {
    what: "a 1Password CSV export",
    folder: &[],
    title: &["title"],
    kind: &[],
    fields: &[
        ("password", &["password"]),
        ("username", &["username"]),
        ("url", &["url", "website"]),
        ("totp", &["otpauth"]),
        ("notes", &["notes"]),
    ],
};

const KEEPASSXC: Layout = Layout {
    what: "a KeePassXC CSV export",
    folder: &["group"],
    title: &["title"],
    kind: &[],
    fields: &[
        ("password", &["password"]),
        ("username", &["username"]),
        ("url", &["url"]),
        ("totp", &["totp"]),
        ("notes", &["notes"]),
    ],
};

fn columns(format: Format, header: &Record) -> Result<Columns, String> {
    let Layout {
        what,
        folder,
        title,
        kind,
        fields,
    } = match format {
        Format::BitwardenCsv => BITWARDEN,
        Format::OnepasswordCsv => ONEPASSWORD,
        _ => KEEPASSXC,
    };
    let missing = |col: &str| {
        format!(
            "this is not {what}: its first line has no column {col:?} (or choose another --format)"
        )
    };
    let title = column(header, title).ok_or_else(|| missing(title[0]))?;
    let password = column(header, fields[0].1).ok_or_else(|| missing(fields[0].1[0]))?;
    let mut found = vec![("password", password)];
    found.extend(
        fields[1..]
            .iter()
            .filter_map(|(suffix, names)| column(header, names).map(|c| (*suffix, c))),
    );
    Ok(Columns {
        folder: column(header, folder),
        drop_root: format == Format::KeepassxcCsv,
        title,
        kind: column(header, kind),
        fields: found,
    })
}

/// A title or folder as part of an item name: control characters become
/// spaces, bytes that are not UTF-8 U+FFFD, spaces at the ends go.
fn clean(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn parse_csv(format: Format, input: &[u8]) -> Result<Parsed, String> {
    let mut records = csv_records(input).into_iter();
    let header = records
        .next()
        .ok_or_else(|| "the file is empty".to_owned())?;
    let cols = columns(format, &header)?;
    let empty = Secret::new(Vec::new());
    let mut parsed = Parsed::default();
    let mut taken: HashMap<String, usize> = HashMap::new();
    for record in records {
        let field = |c: usize| record.fields.get(c).unwrap_or(&empty);
        let place = format!("line {}", record.line);
        let mut path: Vec<String> = cols
            .folder
            .map(|c| {
                clean(field(c).expose())
                    .split('/')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if cols.drop_root && !path.is_empty() {
            path.remove(0);
        }
        let title = clean(field(cols.title).expose());
        path.push(if title.is_empty() {
            "untitled".to_owned()
        } else {
            title
        });
        let base = path.join("/");
        // The same name twice in one file: "NAME (2)", "NAME (3)", …
        let seen = taken.entry(base.clone()).or_insert(0);
        *seen += 1;
        let name = if *seen == 1 {
            base
        } else {
            format!("{base} ({seen})")
        };
        let note = cols
            .kind
            .is_some_and(|c| field(c).expose().eq_ignore_ascii_case(b"note"));
        let mut any = false;
        for &(suffix, c) in &cols.fields {
            if note && suffix != "notes" && suffix != "fields" {
                continue;
            }
            let value = field(c);
            if value.is_empty() {
                continue;
            }
            any = true;
            parsed.push(
                format!("{name}/{suffix}"),
                Secret::from_slice(value.expose()),
                place.clone(),
            );
        }
        if !any {
            parsed
                .problems
                .push(format!("{place} ({name}): no field to import (all empty)"));
        }
    }
    Ok(parsed)
}

// --- Into the vault ------------------------------------------------------------

/// Compares with the vault, then creates and replaces (or, for a dry run,
/// lists what would be).
fn finish(
    autostart: bool,
    no_prompt: bool,
    parsed: Parsed,
    dry_run: bool,
    force: bool,
) -> Result<(), CliError> {
    let Parsed {
        entries,
        mut problems,
    } = parsed;
    // A name twice in the source: the first one is kept.
    let mut seen = HashSet::new();
    let mut unique = Vec::with_capacity(entries.len());
    for e in entries {
        if seen.insert(e.name.clone()) {
            unique.push(e);
        } else {
            problems.push(format!(
                "{} ({}): the name appears earlier in the source; the first is kept",
                e.place, e.name
            ));
        }
    }
    for p in &problems {
        eprintln!("keyward: not imported: {p}");
    }
    let mut c = crate::cli::connect_unlocked(autostart, no_prompt)?;
    let existing: HashSet<String> = c.list()?.into_iter().map(|i| i.name).collect();
    let (mut created, mut replaced, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for e in unique {
        if !existing.contains(&e.name) {
            created.push(e);
        } else if force {
            replaced.push(e);
        } else {
            skipped.push(e);
        }
    }
    let bad = if problems.is_empty() {
        String::new()
    } else {
        format!("; {} not imported (listed above)", problems.len())
    };
    if dry_run {
        for e in &created {
            println!("create {}", e.name);
        }
        for e in &replaced {
            println!("replace {}", e.name);
        }
        for e in &skipped {
            println!("skip {} (exists; --force replaces it)", e.name);
        }
        eprintln!(
            "Dry run: {} would be created, {} replaced, {} skipped as existing{bad}. Nothing was \
             changed.",
            created.len(),
            replaced.len(),
            skipped.len()
        );
        return Ok(());
    }
    let spinner = Spinner::start("Importing…");
    let mut done = 0;
    for e in created.iter().chain(&replaced) {
        if let Err(err) = set(&mut c, e) {
            drop(spinner);
            return Err(CliError {
                code: err.code,
                message: format!(
                    "{} ({}): {}; {done} item{} imported before it, the rest not",
                    e.place,
                    e.name,
                    err.message,
                    if done == 1 { " was" } else { "s were" }
                ),
            });
        }
        done += 1;
    }
    drop(spinner);
    if !skipped.is_empty() {
        eprintln!(
            "Skipped {} item{} that exist already (pass --force to replace them):",
            skipped.len(),
            if skipped.len() == 1 { "" } else { "s" }
        );
        for e in &skipped {
            eprintln!("  {}", e.name);
        }
    }
    eprintln!(
        "Imported {done} item{}: {} created, {} replaced; {} skipped as existing{bad}.",
        if done == 1 { "" } else { "s" },
        created.len(),
        replaced.len(),
        skipped.len()
    );
    Ok(())
}

fn set(c: &mut Client, e: &Entry) -> Result<(), CliError> {
    Ok(c.set(&e.name, e.value.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(r: &Record) -> Vec<String> {
        r.fields
            .iter()
            .map(|f| f.expose_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn csv_quotes_commas_newlines_and_a_bom() {
        let input = "\u{feff}a,b\r\n\"x, \"\"y\"\"\",\"two\nlines\"\n\nlast,é";
        let r = csv_records(input.as_bytes());
        assert_eq!(r.len(), 3);
        assert_eq!(fields(&r[0]), ["a", "b"]);
        assert_eq!(fields(&r[1]), ["x, \"y\"", "two\nlines"]);
        assert_eq!(r[1].line, 2);
        assert_eq!(fields(&r[2]), ["last", "é"]);
        assert_eq!(r[2].line, 5);
    }

    #[test]
    fn many_columns_grow_the_ends() {
        let line = vec!["c"; 100].join(",");
        let r = csv_records(format!("{line}\n{line}").as_bytes());
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].fields.len(), 100);
    }

    #[test]
    fn formats_are_told_by_their_header() {
        let bw = b"folder,favorite,type,name,notes,fields,reprompt,login_uri,login_username,login_password,login_totp\n";
        assert_eq!(detect(bw), Some(Format::BitwardenCsv));
        let op = b"Title,Url,Username,Password,OTPAuth,Favorite,Archived,Tags,Notes\n";
        assert_eq!(detect(op), Some(Format::OnepasswordCsv));
        let kp = b"\"Group\",\"Title\",\"Username\",\"Password\",\"URL\",\"Notes\"\n";
        assert_eq!(detect(kp), Some(Format::KeepassxcCsv));
        assert_eq!(detect(b"  {\"format\": 1}"), Some(Format::Json));
        assert_eq!(detect(b"a,b,c\n"), None);
        assert_eq!(detect(b""), None);
    }

    #[test]
    fn keepassxc_groups_lose_their_root_and_titles_are_cleaned() {
        let input = "\"Group\",\"Title\",\"Username\",\"Password\"\n\
                     \"Root\",\"a\tb\",\"u\",\"p\"\n\
                     \"Root/Dev/ x \",\"\",\"\",\"q\"\n\
                     \"Root\",\"a\tb\",\"\",\"again\"\n";
        let p = parse_csv(Format::KeepassxcCsv, input.as_bytes()).unwrap();
        let names: Vec<_> = p.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "a b/password",
                "a b/username",
                "Dev/x/untitled/password",
                "a b (2)/password"
            ]
        );
        assert!(p.problems.is_empty());
    }

    #[test]
    fn a_bitwarden_note_keeps_only_its_notes() {
        let input = "folder,favorite,type,name,notes,fields,reprompt,login_uri,login_username,login_password,login_totp\n\
                     ,,note,Wifi,the key,,,,ignored,ignored,\n";
        let p = parse_csv(Format::BitwardenCsv, input.as_bytes()).unwrap();
        let names: Vec<_> = p.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["Wifi/notes"]);
    }

    #[test]
    fn the_wrong_format_says_which_column_is_missing() {
        let Err(e) = parse_csv(Format::BitwardenCsv, b"Title,Password\nx,y\n") else {
            panic!("a 1Password header read as Bitwarden")
        };
        assert!(e.contains("Bitwarden") && e.contains("\"name\""), "{e}");
    }

    #[test]
    fn names_the_vault_refuses_are_reported_without_the_value() {
        let mut p = Parsed::default();
        p.push("ok".into(), Secret::from("v"), "line 2".into());
        p.push("x".repeat(257), Secret::from("s3cret"), "line 3".into());
        p.push("a\u{85}b".into(), Secret::from("s3cret"), "line 4".into());
        p.push(
            "big".into(),
            Secret::new(vec![1; MAX_VALUE + 1]),
            "line 5".into(),
        );
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.problems.len(), 3);
        assert!(p.problems.iter().all(|m| !m.contains("s3cret")));
        assert!(p.problems[0].starts_with("line 3: the item name is too long (257 bytes"));
    }

    #[test]
    fn json_values_and_base64() {
        let input = br#"{"format":"keyward-export","version":1,"items":[
            {"name":"a","value":"x\ny"},
            {"name":"b","value_base64":"AP8="},
            {"name":"c"},
            {"name":"d","value_base64":"!!"}]}"#;
        let p = parse_json(input).unwrap();
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.entries[0].value.expose(), b"x\ny");
        assert_eq!(p.entries[1].value.expose(), b"\x00\xff");
        assert_eq!(p.problems.len(), 2);
        let newer = br#"{"format":"keyward-export","version":2,"items":[]}"#;
        assert!(parse_json(newer).is_err());
    }
}
