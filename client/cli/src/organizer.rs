//! `keyward organizer …` and `keyward recover --grant`: recovery by an
//! organizer (docs/SECURITY.md §16). The agent does every cryptographic
//! step (recipients, fingerprints, wraps, grants); this module asks, shows
//! and writes files.

use crate::cli::{PasswordSource, Terminal, connect_unlocked, parse_slot, paths, unlocked};
use crate::connect::connect;
use crate::input::{self, ask_hidden, read_fd};
use crate::output::{self, CliError, Spinner, exit};
use clap::Subcommand;
use keyward_client::{Client, ClientError, Request, Response, Secret};
use serde_json::json;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest grant file read (a grant is about 300 bytes).
const MAX_GRANT_FILE: u64 = 64 * 1024;

#[derive(Subcommand, Debug)]
pub enum OrganizerAction {
    /// Make your organizer key (one per account), in your vault or on a YubiKey; prints its
    /// recipient and fingerprint.
    ///
    /// With --yubikey the key is a P-256 key generated on the card (PIV, in the first free
    /// retired slot unless --slot says otherwise), where it stays: your vault records only
    /// which card and slot hold it, and each recovery needs the card and its PIN.
    Create {
        /// A name to suggest to members (shown in the command they run).
        #[arg(long)]
        name: Option<String>,
        /// Print `{"recipient", "fingerprint", "location"}` as JSON (location: vault, or
        /// yubikey:SERIAL/SLOT).
        #[arg(long)]
        json: bool,
        /// Generate the key on a YubiKey, where it never leaves the card, instead of in your
        /// vault.
        #[arg(long)]
        yubikey: bool,
        /// The YubiKey's serial number (needed when several are plugged in).
        #[arg(long, value_name = "N", requires = "yubikey")]
        serial: Option<u32>,
        /// The PIV slot, in hex (default: the first free retired slot, 82 to 95).
        #[arg(long, value_name = "HEX", value_parser = parse_slot, requires = "yubikey")]
        slot: Option<u8>,
        /// Read the YubiKey PIN from file descriptor N (a trailing newline stripped).
        #[arg(long, value_name = "N", requires = "yubikey")]
        pin_fd: Option<u32>,
    },
    /// Print your organizer key's recipient and fingerprint again (and the YubiKey holding it).
    Show {
        /// Print `{"recipient", "fingerprint", "location"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Let an organizer recover your account (asks to confirm the fingerprint and your Master Password).
    Add {
        /// The organizer's recipient (kwo1-…).
        recipient: String,
        /// A name for the organizer, shown by `keyward organizer list`.
        #[arg(long)]
        name: Option<String>,
        /// Do not ask to confirm the fingerprint (it is still printed).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// List the organizers who can recover your account: name, fingerprint, added, required.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop an organizer from recovering your account (not one the machine's policy requires).
    Remove {
        /// The organizer's fingerprint, or its name.
        which: String,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// As an organizer: make a recovery grant from a copy of a member's vault file.
    ///
    /// Asks for your Master Password, or, when your organizer key is on a YubiKey, for the
    /// card's PIN (the card opens the member's wrap; the key never leaves it).
    Recover {
        /// The member's vault file (a copy of it).
        vault_file: PathBuf,
        /// Where to write the grant (created 0600; default keyward-grant-ACCOUNT.json).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Hours until the grant expires (at most 720).
        #[arg(long, value_name = "N", default_value_t = 72)]
        expires_hours: u32,
        /// Print `{"code", "grant_id", "expires", "path"}` as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        password: PasswordSource,
        /// Read the PIN of the YubiKey holding your organizer key from file descriptor N (a
        /// trailing newline stripped); for an organizer key on a YubiKey only.
        #[arg(long, value_name = "N")]
        pin_fd: Option<u32>,
    },
}

fn master_password(p: &PasswordSource, why: &str) -> Result<Secret, CliError> {
    let fd = if p.password_stdin {
        Some(0)
    } else {
        p.password_fd
    };
    match fd {
        Some(fd) => Ok(read_fd(fd, "password")?),
        None => ask_hidden("Master Password", why),
    }
}

fn unexpected() -> CliError {
    CliError::msg("unexpected answer from the agent")
}

fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(path)
        .map_err(|e| CliError::msg(format!("cannot resolve {}: {e}", path.display())))
}

fn utf8(path: &Path) -> Result<String, CliError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| CliError::with(exit::INVALID, "the path is not valid UTF-8"))
}

/// One line for `keyward status`: the organizers this account is enrolled
/// with (nothing when there are none or the agent cannot say).
pub fn status_line(c: &mut Client) {
    if let Ok(Response::Organizers(v)) = c.call(&Request::OrganizerList)
        && !v.is_empty()
    {
        let names: Vec<String> = v
            .iter()
            .map(|o| {
                let name = if o.name.is_empty() {
                    "unnamed"
                } else {
                    &o.name
                };
                let req = if o.required { ", required" } else { "" };
                format!("{name} ({}{req})", o.fingerprint)
            })
            .collect();
        println!(
            "Organizers who can recover this account: {}.",
            names.join(", ")
        );
    }
}

/// `keyward organizer …`.
pub fn run(autostart: bool, no_prompt: bool, action: OrganizerAction) -> Result<(), CliError> {
    match action {
        OrganizerAction::Create {
            name,
            json,
            yubikey: false,
            ..
        } => {
            let r = unlocked(autostart, no_prompt, |c| c.call(&Request::OrganizerCreate))?;
            show_key(r, json, name.as_deref(), true)
        }
        OrganizerAction::Create {
            name,
            json,
            yubikey: true,
            serial,
            slot,
            pin_fd,
        } => {
            let req = Request::OrganizerCreateCard {
                serial,
                slot,
                pin: pin_fd.map(|fd| read_fd(fd, "PIN")).transpose()?,
            };
            let mut c = connect_unlocked(autostart, no_prompt)?;
            // The agent may ask for the PIN, the management key, and about
            // factory defaults; its notices (warnings about them) are shown.
            let mut ui = Terminal::default();
            ui.working("Making the organizer key on the YubiKey…");
            let r = c.call_with(&req, &mut ui);
            ui.done();
            show_key(r?, json, name.as_deref(), true)
        }
        OrganizerAction::Show { json } => {
            let r = unlocked(autostart, no_prompt, |c| c.call(&Request::OrganizerShow))?;
            show_key(r, json, None, false)
        }
        OrganizerAction::Add {
            recipient,
            name,
            yes,
            password,
        } => add(
            autostart,
            &recipient,
            name.unwrap_or_default(),
            yes,
            &password,
        ),
        OrganizerAction::List { json } => {
            let mut c = connect(&paths()?, autostart)?;
            let Response::Organizers(v) = c.call(&Request::OrganizerList)? else {
                return Err(unexpected());
            };
            if json {
                println!(
                    "{}",
                    json!(
                        v.iter()
                            .map(|o| json!({"name": o.name, "fingerprint": o.fingerprint,
                            "added": o.added, "required": o.required}))
                            .collect::<Vec<_>>()
                    )
                );
            } else if v.is_empty() {
                println!(
                    "No organizer can recover this account. Add one with `keyward organizer add RECIPIENT`."
                );
            } else {
                println!(
                    "{:<24} {:<20} {:<22} REQUIRED",
                    "NAME", "FINGERPRINT", "ADDED"
                );
                for o in v {
                    println!(
                        "{:<24} {:<20} {:<22} {}",
                        o.name,
                        o.fingerprint,
                        output::date(o.added),
                        if o.required {
                            "yes (machine policy)"
                        } else {
                            "no"
                        }
                    );
                }
            }
            Ok(())
        }
        OrganizerAction::Remove { which, password } => {
            let mut c = connect(&paths()?, autostart)?;
            let pw = master_password(
                &password,
                "Confirm with your Master Password to remove an organizer.",
            )?;
            let spinner = Spinner::start("Checking your password…");
            let r = c.call(&Request::OrganizerRemove {
                which,
                password: pw,
            });
            drop(spinner);
            let Response::OrganizerChanged {
                fingerprint,
                name,
                notes,
            } = r?
            else {
                return Err(unexpected());
            };
            eprintln!("Organizer {name} ({fingerprint}) removed.");
            for n in notes {
                eprintln!("  - {n}");
            }
            Ok(())
        }
        OrganizerAction::Recover {
            vault_file,
            out,
            expires_hours,
            json,
            password,
            pin_fd,
        } => recover(
            autostart,
            no_prompt,
            &vault_file,
            out,
            expires_hours,
            json,
            (&password, pin_fd),
        ),
    }
}

fn show_key(r: Response, json: bool, name: Option<&str>, new: bool) -> Result<(), CliError> {
    let (recipient, fingerprint, card) = match r {
        Response::OrganizerKey {
            recipient,
            fingerprint,
        } => (recipient, fingerprint, None),
        Response::OrganizerCardKey {
            recipient,
            fingerprint,
            serial,
            slot,
        } => (recipient, fingerprint, Some((serial, slot))),
        _ => return Err(unexpected()),
    };
    if json {
        let location = match card {
            Some((serial, slot)) => format!("yubikey:{serial}/{slot:02x}"),
            None => "vault".to_owned(),
        };
        println!(
            "{}",
            json!({"recipient": recipient, "fingerprint": fingerprint, "location": location})
        );
        return Ok(());
    }
    if new {
        match card {
            Some((serial, slot)) => println!(
                "Your organizer key is ready. It was made on YubiKey {serial} (slot {slot:02x}) and \
                 never leaves it: recovering a member needs the card and its PIN. Only its public \
                 half is below."
            ),
            None => println!(
                "Your organizer key is ready. It stays in your vault; only its public half is below."
            ),
        }
        println!();
    }
    println!("    Recipient:     {recipient}");
    println!("    Fingerprint:   {fingerprint}");
    if let Some((serial, slot)) = card {
        println!("    Kept on:       YubiKey {serial}, slot {slot:02x}");
    }
    println!();
    println!("Send the recipient to each member (it is not secret). Each member runs");
    match name {
        Some(n) => println!("    keyward organizer add {recipient} --name {n:?}"),
        None => println!("    keyward organizer add {recipient}"),
    }
    println!("and checks, with you, that the fingerprint it shows is the one above.");
    Ok(())
}

fn add(
    autostart: bool,
    recipient: &str,
    name: String,
    yes: bool,
    password: &PasswordSource,
) -> Result<(), CliError> {
    let mut c = connect(&paths()?, autostart)?;
    let Response::OrganizerKey {
        recipient,
        fingerprint,
    } = c.call(&Request::OrganizerCheck {
        recipient: recipient.to_owned(),
    })?
    else {
        return Err(unexpected());
    };
    eprintln!("Organizer fingerprint: {fingerprint}");
    if !yes {
        if !input::have_tty() {
            return Err(CliError::with(
                exit::INVALID,
                "no organizer added: compare the fingerprint with your organizer (by voice, in \
                 person), then run the command again on a terminal, or with --yes",
            ));
        }
        eprintln!(
            "This organizer will be able to let you back in, and to read your vault if they get a copy of it."
        );
        if !input::confirm(
            "Is this the fingerprint your organizer gave you, and do you trust them with your vault?",
            false,
        ) {
            return Err(input::cancelled());
        }
    }
    let pw = master_password(
        password,
        "Confirm with your Master Password to let this organizer recover your account.",
    )?;
    let spinner = Spinner::start("Checking your password…");
    let r = c.call(&Request::OrganizerAdd {
        recipient,
        name,
        password: pw,
    });
    drop(spinner);
    let Response::OrganizerChanged {
        fingerprint, notes, ..
    } = r?
    else {
        return Err(unexpected());
    };
    eprintln!("Organizer {fingerprint} added.");
    for n in notes {
        eprintln!("  - {n}");
    }
    Ok(())
}

fn recover(
    autostart: bool,
    no_prompt: bool,
    vault_file: &Path,
    out: Option<PathBuf>,
    hours: u32,
    json: bool,
    (password, pin_fd): (&PasswordSource, Option<u32>),
) -> Result<(), CliError> {
    let vault = utf8(&absolute(vault_file)?)?;
    if let Some(p) = &out
        && std::fs::symlink_metadata(p).is_ok()
    {
        return Err(CliError::with(
            exit::INVALID,
            crate::files::CreateError::Exists(p.clone()).to_string(),
        ));
    }
    let mut c = connect_unlocked(autostart, no_prompt)?;
    // Where the organizer key is says what to ask for: the card's PIN, or
    // the Master Password.
    let r = match c.call(&Request::OrganizerShow)? {
        Response::OrganizerCardKey { .. } => {
            let req = Request::OrganizerRecoverCard {
                vault,
                expires_hours: hours,
                pin: pin_fd.map(|fd| read_fd(fd, "PIN")).transpose()?,
            };
            let mut ui = Terminal::default();
            ui.working("Opening the member's vault with your YubiKey…");
            let r = c.call_with(&req, &mut ui);
            ui.done();
            r
        }
        Response::OrganizerKey { .. } => {
            let pw = master_password(
                password,
                "Confirm with your Master Password to make a recovery grant.",
            )?;
            let spinner = Spinner::start("Opening the member's vault…");
            let r = c.call(&Request::OrganizerRecover {
                vault,
                expires_hours: hours,
                password: pw,
            });
            drop(spinner);
            r
        }
        _ => return Err(unexpected()),
    };
    let Response::GrantMade {
        account_id,
        grant_id,
        expires,
        code,
        grant,
    } = r?
    else {
        return Err(unexpected());
    };
    let chosen = out.is_some();
    let mut path = absolute(
        &out.unwrap_or_else(|| PathBuf::from(format!("keyward-grant-{account_id}.json"))),
    )?;
    let mut written = crate::files::write_new_private(&path, grant.as_bytes(), false);
    if !chosen && matches!(written, Err(crate::files::CreateError::Exists(_))) {
        // The default name is taken (an earlier grant for this member):
        // this grant's own name, rather than losing the grant just made.
        let short = &grant_id[..grant_id.len().min(8)];
        path = absolute(&PathBuf::from(format!(
            "keyward-grant-{account_id}-{short}.json"
        )))?;
        written = crate::files::write_new_private(&path, grant.as_bytes(), false);
    }
    written.map_err(|e| CliError::msg(format!("cannot write the grant: {e}")))?;
    let code = code.expose_str().unwrap_or_default();
    if json {
        println!(
            "{}",
            json!({"code": code, "grant_id": grant_id, "expires": expires,
                "path": path.display().to_string()})
        );
        return Ok(());
    }
    println!(
        "A recovery grant for account {account_id} is written to {}.",
        path.display()
    );
    println!();
    println!("    Grant code:   {code}");
    println!("    Expires:      {}", output::date(expires));
    println!();
    println!("Give the member the file (it is useless without the code) and tell them the code");
    println!("another way (by voice, in person). On their machine they run");
    println!(
        "    keyward recover --grant {}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    println!("The grant works once, and not after it expires.");
    Ok(())
}

/// `keyward recover --grant FILE`.
pub fn recover_with_grant(
    autostart: bool,
    grant: &Path,
    code_fd: Option<u32>,
    new_fd: Option<u32>,
    allow_weak: bool,
    json: bool,
) -> Result<(), CliError> {
    let mut text = String::new();
    std::fs::File::open(grant)
        .and_then(|f| f.take(MAX_GRANT_FILE).read_to_string(&mut text))
        .map_err(|e| {
            CliError::with(
                exit::INVALID,
                format!("cannot read the grant {}: {e}", grant.display()),
            )
        })?;
    let mut c = connect(&paths()?, autostart)?;
    let code = match code_fd {
        Some(fd) => read_fd(fd, "grant code")?,
        None => ask_hidden(
            "Grant code",
            "Type the code your organizer gave you with the grant (GC1-…).",
        )?,
    };
    let new = crate::choose::new_password(
        new_fd,
        allow_weak,
        "New Master Password",
        "Choose a new keyward Master Password.",
    )?;
    let spinner = Spinner::start("Recovering (deriving new keys)…");
    let r = c.call(&Request::RecoverWithGrant {
        grant: text,
        code,
        new_password: new,
    });
    drop(spinner);
    crate::cli::print_new_secret_key(
        r.map_err(|e: ClientError| e)?,
        json,
        "Recovered with your organizer's grant. Your vault is unlocked, with a new Master\n\
         Password and a new Secret Key.",
    )
}
