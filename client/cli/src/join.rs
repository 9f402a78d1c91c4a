//! `keyward join PATH`: sets this device up from an existing vault (a copy,
//! or a folder a sync engine keeps), used where it is. The agent opens it
//! with the Secret Key and the Master Password (a wrong one counts as a
//! failed unlock) and keeps the Secret Key with this device's protector;
//! this module asks for them, or reads the Secret Key from the Emergency
//! Kit: keyward's PDF, or a photo or scan of its QR code (reading text is not
//! cryptography).

use crate::cli::{CardArgs, PasswordSource, Terminal, add_protector, paths};
use crate::connect::connect;
use crate::input::{self, ask_hidden, read_fd};
use crate::output::{self, CliError, exit};
use keyward_client::{AgentState, ClientError, ErrorCode, Request, Response, Secret};
use serde_json::json;
use std::path::{Path, PathBuf};

/// `keyward join --help` examples.
pub const JOIN_EXAMPLES: &str = "\
Examples:
  keyward join ~/Sync/keyward                   # asks for the Secret Key and the Master Password
  keyward join /media/usb/vault-ABCDEF.kwv --kit kit-photo.jpg
  keyward join ~/Sync/keyward --protector yubikey   # the card the vault has a key on, or a new one
  keyward join ~/Sync/keyward --secret-key-fd 4 --password-fd 3 --json 3<pwfile 4<skfile";

/// Largest Emergency Kit file (image or PDF) read.
const MAX_KIT_FILE: u64 = 64 * 1024 * 1024;

/// The folder (or file) to join, as the absolute path the agent needs.
fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(path)
        .map_err(|e| CliError::with(exit::INVALID, format!("{}: {e}", path.display())))
}

/// The Secret Key: from `--kit`, `--secret-key-fd`, or typed.
fn secret_key(kit: Option<&Path>, fd: Option<u32>) -> Result<Secret, CliError> {
    if let Some(kit) = kit {
        return secret_key_from_kit(kit)
            .map(Secret::from)
            .map_err(|e| CliError::with(exit::INVALID, e));
    }
    if let Some(fd) = fd {
        return Ok(read_fd(fd, "Secret Key")?);
    }
    if !input::have_tty() {
        return Err(CliError::with(
            exit::INVALID,
            "no terminal to type the Secret Key on: pass it with --secret-key-fd N, or \
             --kit FILE (the Emergency Kit's PDF, or a photo or scan of it)",
        ));
    }
    input::ask_visible("Secret Key (from your Emergency Kit)")
}

/// `keyward join`.
#[allow(clippy::too_many_arguments)]
pub fn join(
    autostart: bool,
    path: &Path,
    kit: Option<&Path>,
    secret_key_fd: Option<u32>,
    password: &PasswordSource,
    protector: &str,
    card: &CardArgs,
    json: bool,
) -> Result<(), CliError> {
    let on_card = protector == "yubikey";
    if !on_card
        && (card.serial.is_some()
            || card.slot.is_some()
            || card.pin_fd.is_some()
            || card.management_key_fd.is_some()
            || card.touch != "never")
    {
        return Err(CliError::with(
            exit::INVALID,
            "--serial, --slot, --touch, --pin-fd and --management-key-fd go with --protector \
             yubikey",
        ));
    }
    let target = absolute(path)?;
    let paths = paths()?;
    let mut c = connect(&paths, autostart)?;
    let s = c.status()?;
    if s.state != AgentState::Uninitialized {
        return Err(CliError::with(
            exit::INVALID,
            format!(
                "this device already has an account ({}); keyward keeps one account per user",
                s.account_id.unwrap_or_default()
            ),
        ));
    }
    if s.backoff_secs > 0 {
        return Err(CliError::with(
            exit::WRONG_CREDENTIALS,
            format!(
                "too many failed attempts; the next try is accepted in {}",
                output::duration(s.backoff_secs)
            ),
        ));
    }
    let mut sk = secret_key(kit, secret_key_fd)?;
    let pw_fd = if password.password_stdin {
        Some(0)
    } else {
        password.password_fd
    };
    let ask_password = || -> Result<Secret, CliError> {
        match pw_fd {
            Some(fd) => Ok(read_fd(fd, "password")?),
            None => Ok(ask_hidden(
                "Master Password",
                "Enter the Master Password of the keyward account to join.",
            )?),
        }
    };
    let mut pw = ask_password()?;
    let terminal = input::have_tty();
    let typed_key = kit.is_none() && secret_key_fd.is_none();
    let mut tries = 1;
    let mut ui = Terminal::default();
    loop {
        let req = Request::Join {
            path: target.to_string_lossy().into_owned(),
            password: pw.clone(),
            secret_key: sk.clone(),
            // A YubiKey is enrolled (or found enrolled) once joined.
            protector: if on_card { "none" } else { protector }.to_owned(),
        };
        ui.working("Joining (deriving keys)…");
        let r = c.call_with(&req, &mut ui);
        ui.done();
        match r {
            Ok(Response::Unlocked {
                account_id,
                protector,
                mut notes,
                ..
            }) => {
                let protector = if on_card {
                    let (id, more) = add_protector(&mut c, "yubikey", card, pw).map_err(|e| {
                        CliError::with(
                            e.code,
                            format!(
                                "joined account {account_id} and unlocked, but the YubiKey \
                                     was not enrolled: {}; enroll it with `keyward protector add \
                                     yubikey` (until then this device asks for the Secret Key at \
                                     each unlock)",
                                e.message
                            ),
                        )
                    })?;
                    notes.extend(more);
                    id
                } else {
                    protector
                };
                let vault = notes
                    .iter()
                    .find_map(|n| n.strip_prefix("joined: using the vault at "))
                    .unwrap_or_default()
                    .to_owned();
                if json {
                    println!(
                        "{}",
                        json!({"state": "unlocked", "account_id": account_id, "protector": protector, "vault": vault, "notes": notes})
                    );
                } else {
                    for n in notes.iter().filter(|n| !n.starts_with("joined: ")) {
                        eprintln!("{n}");
                    }
                    let kept = match protector.as_str() {
                        "none" => "this device keeps no copy of the Secret Key: type it at each \
                                   unlock"
                            .to_owned(),
                        p if p.starts_with("yubikey:") => {
                            format!("this device unlocks with {p} (and its PIN)")
                        }
                        p => format!("this device keeps the Secret Key with its {p} protector"),
                    };
                    eprintln!("Joined account {account_id}: using the vault at {vault}.");
                    eprintln!("Unlocked; {kept}.");
                    eprintln!(
                        "Both devices may write: each writes a file of its own beside the \
                         vault, and the agents merge them record by record within a second \
                         of a change (`keyward sync` merges at once)."
                    );
                }
                return Ok(());
            }
            Err(ClientError::Agent(e))
                if e.code == ErrorCode::InvalidInput
                    && terminal
                    && typed_key
                    && e.message.contains("Secret Key has a typo") =>
            {
                eprintln!("{}.", output::sentence(&e.message));
                input::show_secret_key_typo(&sk);
                sk = input::ask_visible("Secret Key (again)")?;
            }
            Err(ClientError::Agent(e))
                if e.code == ErrorCode::WrongCredentials
                    && terminal
                    && pw_fd.is_none()
                    && tries < 3 =>
            {
                tries += 1;
                eprintln!("{}.", output::sentence(&e.message));
                pw = ask_password()?;
            }
            Err(e) => return Err(e.into()),
            Ok(other) => {
                return Err(CliError::msg(format!(
                    "unexpected answer from the agent: {other:?}"
                )));
            }
        }
    }
}

/// The Secret Key from the Emergency Kit at `path`: keyward's PDF, or the
/// QR code of a photo or scan of it (PNG or JPEG), which holds the Secret
/// Key as text and nothing else.
fn secret_key_from_kit(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KIT_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_KIT_FILE {
        return Err(format!(
            "{} is larger than an Emergency Kit image can be",
            path.display()
        ));
    }
    if bytes.starts_with(b"%PDF") {
        return secret_key_from_pdf(path, &bytes);
    }
    let img = image::load_from_memory(&bytes).map_err(|e| {
        format!(
            "{} is not a PNG or JPEG image keyward can read: {e}",
            path.display()
        )
    })?;
    let grey = img.to_luma8();
    let (w, h) = grey.dimensions();
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(w as usize, h as usize, |x, y| {
            grey.get_pixel(x as u32, y as u32).0[0]
        });
    let mut found = None;
    for grid in prepared.detect_grids() {
        if let Ok((_, text)) = grid.decode()
            && looks_like_secret_key(&text)
        {
            found = Some(text);
            break;
        }
    }
    found.ok_or_else(|| {
        format!(
            "no Secret Key QR code found in {}: photograph the whole QR code, flat and sharp, \
             or type the Secret Key",
            path.display()
        )
    })
}

/// The Secret Key printed on keyward's own Emergency Kit PDF (`keyward
/// emergency-kit`): its QR code is drawn with vector squares, not embedded
/// as an image, so the key is read from the page's text, where the kit
/// prints it in full. Another PDF (a scan saved as PDF) is refused with
/// what to do instead.
fn secret_key_from_pdf(path: &Path, bytes: &[u8]) -> Result<String, String> {
    let convert = format!(
        "convert the Emergency Kit's page to an image first (pdftoppm -png -r 150 {} kit), \
         then give the image (kit-1.png) to --kit, or type the Secret Key",
        path.display()
    );
    let doc = lopdf::Document::load_mem(bytes).map_err(|e| {
        format!(
            "{} is not a PDF keyward can read ({e}): {convert}",
            path.display()
        )
    })?;
    for page in doc.get_pages().into_values() {
        let Ok(content) = doc.get_page_content_with_limit(page, 4 << 20) else {
            continue;
        };
        let Ok(content) = lopdf::content::Content::decode(&content) else {
            continue;
        };
        for op in content.operations {
            let strings: Vec<&lopdf::Object> = match op.operator.as_str() {
                "Tj" | "'" | "\"" => op.operands.last().into_iter().collect(),
                "TJ" => match op.operands.first() {
                    Some(lopdf::Object::Array(parts)) => parts.iter().collect(),
                    _ => Vec::new(),
                },
                _ => continue,
            };
            let text: String = strings
                .into_iter()
                .filter_map(|o| match o {
                    lopdf::Object::String(b, _) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                })
                .collect();
            if looks_like_secret_key(&text) {
                return Ok(text);
            }
        }
    }
    Err(format!(
        "no Secret Key found in {} (is it keyward's Emergency Kit?): {convert}",
        path.display()
    ))
}

/// Whether a text has the Secret Key's shape (docs/SECURITY.md §3: seven
/// groups of 2, 6, 6, 5, 5, 5 and 6 symbols); the agent checks it fully.
fn looks_like_secret_key(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([2, 6, 6, 5, 5, 5, 6])
        && groups.iter().all(|g| {
            g.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
}
