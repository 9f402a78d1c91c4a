//! `keyward ssh …`: SSH keys kept in the vault, which the agent offers to
//! ssh and git on its SSH agent socket (`ssh.sock`, next to the keyward
//! socket). The agent does every cryptographic step (making keys, reading
//! and decrypting key files, fingerprints); this module reads the key file,
//! asks, and prints.

use crate::cli::{Terminal, connect_unlocked, paths, unlocked};
use crate::connect::connect;
use crate::input::{self, read_fd};
use crate::output::{self, CliError, Spinner, exit};
use clap::{Subcommand, ValueEnum};
use keyward_client::message::SshKeyInfo;
use keyward_client::{ClientError, ErrorCode, Request, Response, Secret};
use serde_json::json;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Largest key file read (an OpenSSH RSA 16384-bit key is about 12 KiB).
const MAX_KEY_FILE: usize = 64 * 1024;

/// `keyward ssh --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  keyward ssh generate work                     # a new Ed25519 key, kept in the vault
  keyward ssh import ~/.ssh/id_ed25519 --name old   # asks for its passphrase, if it has one
  keyward ssh list
  eval \"$(keyward ssh env)\"                     # point ssh at keyward (in ~/.bashrc)
  keyward ssh public work >> ~/.ssh/authorized_keys";

const GENERATE_EXAMPLES: &str = "\
Examples:
  keyward ssh generate work                     # Ed25519; prints the public key
  keyward ssh generate legacy --type rsa --bits 4096 --comment me@laptop
  keyward ssh generate ci --json
  keyward ssh generate card --yubikey           # P-256 on the YubiKey (slot 9a); asks for its PIN
  keyward ssh generate card --yubikey --serial 12345678 --slot 9c --touch always --pin-fd 3 3<pin";

const IMPORT_EXAMPLES: &str = "\
Examples:
  keyward ssh import ~/.ssh/id_ed25519          # named by the key's comment
  keyward ssh import ~/.ssh/id_rsa --name old-rsa   # asks for the passphrase, if any
  keyward ssh import key --passphrase-fd 3 3<passphrase-file";

const LIST_EXAMPLES: &str = "\
Examples:
  keyward ssh list
  keyward ssh list --json";

const PUBLIC_EXAMPLES: &str = "\
Examples:
  keyward ssh public work                       # an authorized_keys line
  keyward ssh public work | ssh server 'cat >> ~/.ssh/authorized_keys'
  keyward ssh public SHA256:2JrEo4nQ1bXbq0Yc3v8p0k2m7fFq3m0eZyJt4xQfGkA";

const REMOVE_EXAMPLES: &str = "\
Examples:
  keyward ssh remove old-rsa                    # asks first
  keyward ssh remove old-rsa --yes";

const APPROVE_EXAMPLES: &str = "\
Examples:
  keyward ssh approve work always               # confirm every signature
  keyward ssh approve work once-per-process     # confirm once for each program
  keyward ssh approve work never";

const ENV_EXAMPLES: &str = "\
Examples:
  eval \"$(keyward ssh env)\"                     # bash, zsh, sh: in ~/.bashrc or ~/.zshrc
  keyward ssh env --fish | source               # fish: in ~/.config/fish/config.fish
  eval `keyward ssh env --csh`                  # csh, tcsh: in ~/.cshrc";

#[derive(Subcommand, Debug)]
pub enum SshAction {
    /// Make a new SSH key in the vault, or on a YubiKey (--yubikey); prints its fingerprint and
    /// its authorized_keys line.
    ///
    /// With --yubikey the key (ECDSA P-256) is generated on the card, in a PIV
    /// slot (9a unless --slot says otherwise), and never leaves it; the vault
    /// keeps where it is. Each signature then needs the card and its PIN,
    /// which the agent asks for through its askpass program (SSH_ASKPASS in
    /// the agent's environment, or [ssh] askpass in keyward.toml).
    #[command(after_help = GENERATE_EXAMPLES)]
    Generate {
        /// Its name in the vault, e.g. work.
        name: String,
        /// The key type.
        #[arg(long = "type", value_name = "TYPE", default_value = "ed25519")]
        kind: KeyType,
        /// The key size: ecdsa 256, 384 or 521; rsa 2048 and more (default: the type's usual size).
        #[arg(long, value_name = "N")]
        bits: Option<u32>,
        /// The key's comment (default: its name).
        #[arg(long, value_name = "C")]
        comment: Option<String>,
        /// Generate the key on a YubiKey (PIV, ECDSA P-256) instead of in the vault.
        #[arg(long, conflicts_with_all = ["kind", "bits"])]
        yubikey: bool,
        /// The YubiKey's serial number (needed when several are plugged in).
        #[arg(long, value_name = "N", requires = "yubikey")]
        serial: Option<u32>,
        /// The PIV slot, in hex: 9a (the default), 9c, 9d, 9e, or a retired slot 82 to 95.
        #[arg(long, value_name = "HEX", value_parser = parse_slot, requires = "yubikey")]
        slot: Option<u8>,
        /// When the card wants a touch to sign: never (the default), always, or cached (once
        /// per 15 s).
        #[arg(long, value_name = "POLICY", requires = "yubikey")]
        touch: Option<TouchPolicy>,
        /// Read the YubiKey PIN from file descriptor N (a trailing newline stripped).
        #[arg(long, value_name = "N", requires = "yubikey")]
        pin_fd: Option<u32>,
        /// Print the key as JSON: name, key_type, fingerprint, comment, location, approval,
        /// public, loaded.
        #[arg(long)]
        json: bool,
    },
    /// Take a private key file into the vault (asks for its passphrase, if it has one).
    ///
    /// OpenSSH's format (ssh-keygen's default), and PEM: PKCS#1 RSA, SEC1 EC,
    /// PKCS#8 (also encrypted). A PEM file has no comment: give a name with --name.
    /// The file is read by keyward and handed to the agent, which decrypts it
    /// and keeps the key in the vault; the file itself is left as it is
    /// (delete it once you no longer need it outside keyward).
    #[command(after_help = IMPORT_EXAMPLES)]
    Import {
        /// The private key file, e.g. ~/.ssh/id_ed25519 (not the .pub file).
        file: PathBuf,
        /// Its name in the vault (default: the key's comment).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Read the file's passphrase from file descriptor N (a trailing newline stripped),
        /// instead of asking for it.
        #[arg(long, value_name = "N")]
        passphrase_fd: Option<u32>,
        /// Print the key as JSON (as `generate --json`).
        #[arg(long)]
        json: bool,
    },
    /// List the SSH keys: name, type, size, fingerprint, location, approval, whether loaded.
    ///
    /// LOCATION is vault, or the YubiKey (yubikey:SERIAL/SLOT) that holds the
    /// key. LOADED is no for a key that `ssh-add -d` or `-D` took out of the
    /// SSH agent: it stays in the vault, and is offered again once the agent
    /// has locked and been unlocked.
    #[command(after_help = LIST_EXAMPLES)]
    List {
        /// Print an array of objects: name, key_type, fingerprint, comment, location,
        /// approval, public, loaded.
        #[arg(long)]
        json: bool,
    },
    /// Print a key's public half as an authorized_keys line.
    #[command(after_help = PUBLIC_EXAMPLES)]
    Public {
        /// The key's name, or its fingerprint (SHA256:…).
        name: String,
    },
    /// Delete an SSH key from the vault (asks first).
    #[command(after_help = REMOVE_EXAMPLES)]
    Remove {
        /// The key's name, or its fingerprint (SHA256:…).
        name: String,
        /// Do not ask (needed without a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Set when the agent asks you before it signs with a key.
    ///
    /// The agent asks through its askpass program (SSH_ASKPASS in the
    /// agent's environment, or [ssh] askpass in keyward.toml), which needs a
    /// display; without one, a key that needs approval is not used.
    #[command(after_help = APPROVE_EXAMPLES)]
    Approve {
        /// The key's name, or its fingerprint (SHA256:…).
        name: String,
        /// When to ask.
        approval: Approval,
    },
    /// Print shell commands that point SSH_AUTH_SOCK at keyward's SSH agent socket.
    ///
    /// The socket is ssh.sock next to the keyward agent's socket (its default
    /// place: if keyward.toml sets another [ssh] socket, point SSH_AUTH_SOCK
    /// there instead). The agent need not be unlocked; it is started if none
    /// runs (unless --no-autostart).
    #[command(after_help = ENV_EXAMPLES)]
    Env {
        /// For csh and tcsh (setenv).
        #[arg(long, conflicts_with = "fish")]
        csh: bool,
        /// For fish (set -gx).
        #[arg(long)]
        fish: bool,
    },
}

/// Key types `generate` makes.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// Ed25519 (the default; small and fast).
    Ed25519,
    /// ECDSA on a NIST curve.
    Ecdsa,
    /// RSA (for servers that accept nothing else).
    Rsa,
}

impl KeyType {
    fn as_str(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::Ecdsa => "ecdsa",
            KeyType::Rsa => "rsa",
        }
    }
}

/// When a YubiKey wants a touch before it signs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TouchPolicy {
    /// No touch.
    Never,
    /// A touch for every signature.
    Always,
    /// A touch, which the card remembers for 15 seconds.
    Cached,
}

impl TouchPolicy {
    fn as_str(self) -> &'static str {
        match self {
            TouchPolicy::Never => "never",
            TouchPolicy::Always => "always",
            TouchPolicy::Cached => "cached",
        }
    }
}

/// A PIV slot in hex (`9a`, `0x9a`, `82`).
fn parse_slot(s: &str) -> Result<u8, String> {
    let t = s.trim_start_matches("0x").trim_start_matches("0X");
    u8::from_str_radix(t, 16).map_err(|_| format!("{s:?} is not a slot in hex (e.g. 9a)"))
}

/// When the agent asks before signing.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approval {
    /// Before every signature.
    Always,
    /// Once for each program (process) that uses the key.
    OncePerProcess,
    /// Never: the key is used while the agent is unlocked.
    Never,
}

impl Approval {
    fn as_str(self) -> &'static str {
        match self {
            Approval::Always => "always",
            Approval::OncePerProcess => "once-per-process",
            Approval::Never => "never",
        }
    }
}

fn unexpected() -> CliError {
    CliError::msg("unexpected answer from the agent")
}

/// `keyward ssh …`.
pub fn run(autostart: bool, no_prompt: bool, action: SshAction) -> Result<(), CliError> {
    match action {
        SshAction::Generate {
            name,
            kind: _,
            bits: _,
            comment,
            yubikey: true,
            serial,
            slot,
            touch,
            pin_fd,
            json,
        } => {
            let req = Request::SshGenerateCard {
                name,
                serial,
                slot,
                touch: touch.map(|t| t.as_str().to_owned()),
                pin: pin_fd.map(|fd| read_fd(fd, "PIN")).transpose()?,
                comment: comment.unwrap_or_default(),
            };
            let mut c = connect_unlocked(autostart, no_prompt)?;
            // The agent may ask for the PIN, the management key, and about
            // factory defaults; its notices (warnings about them) are shown.
            let mut ui = Terminal::default();
            ui.working("Making the key on the YubiKey…");
            let r = c.call_with(&req, &mut ui);
            ui.done();
            show_new(one_key(r?)?, json, "Made")
        }
        SshAction::Generate {
            name,
            kind,
            bits,
            comment,
            json,
            ..
        } => {
            let req = Request::SshGenerate {
                name,
                kind: kind.as_str().to_owned(),
                bits: bits.unwrap_or(0),
                comment: comment.unwrap_or_default(),
            };
            let r = unlocked(autostart, no_prompt, |c| {
                let spinner = Spinner::start("Making the key…");
                let r = c.call(&req);
                drop(spinner);
                r
            })?;
            show_new(one_key(r)?, json, "Made")
        }
        SshAction::Import {
            file,
            name,
            passphrase_fd,
            json,
        } => import(
            autostart,
            no_prompt,
            &file,
            name.unwrap_or_default(),
            passphrase_fd,
            json,
        ),
        SshAction::List { json } => {
            let keys = list(autostart, no_prompt)?;
            if json {
                println!("{}", json!(keys.iter().map(key_json).collect::<Vec<_>>()));
            } else if keys.is_empty() {
                println!(
                    "No SSH keys. Make one with `keyward ssh generate NAME`, or take one in with \
                     `keyward ssh import ~/.ssh/id_ed25519`."
                );
            } else {
                print!("{}", table(&keys));
            }
            Ok(())
        }
        SshAction::Public { name } => {
            let keys = list(autostart, no_prompt)?;
            let key = find(&keys, &name)?;
            println!("{}", key.public);
            Ok(())
        }
        SshAction::Remove { name, yes } => remove(autostart, no_prompt, &name, yes),
        SshAction::Approve { name, approval } => {
            let req = Request::SshApprove {
                name: name.clone(),
                approval: approval.as_str().to_owned(),
            };
            unlocked(autostart, no_prompt, |c| c.call(&req))?;
            match approval {
                Approval::Always => {
                    eprintln!("The agent now asks you to confirm every signature with {name}.")
                }
                Approval::OncePerProcess => eprintln!(
                    "The agent now asks you to confirm the first signature with {name} by each program."
                ),
                Approval::Never => eprintln!(
                    "The agent now signs with {name} without asking, while it is unlocked."
                ),
            }
            Ok(())
        }
        SshAction::Env { csh, fish } => {
            let shell = if csh {
                Shell::Csh
            } else if fish {
                Shell::Fish
            } else {
                Shell::Sh
            };
            env(autostart, shell)
        }
    }
}

/// The SSH keys (asks to unlock on a terminal).
fn list(autostart: bool, no_prompt: bool) -> Result<Vec<SshKeyInfo>, CliError> {
    match unlocked(autostart, no_prompt, |c| c.call(&Request::SshList))? {
        Response::SshKeys(v) => Ok(v),
        _ => Err(unexpected()),
    }
}

/// The one key of a `generate` or `import` answer.
fn one_key(r: Response) -> Result<SshKeyInfo, CliError> {
    match r {
        Response::SshKeys(mut v) if v.len() == 1 => Ok(v.remove(0)),
        _ => Err(unexpected()),
    }
}

/// The key named `which` (its name first, else its fingerprint).
fn find<'a>(keys: &'a [SshKeyInfo], which: &str) -> Result<&'a SshKeyInfo, CliError> {
    keys.iter()
        .find(|k| k.name == which)
        .or_else(|| keys.iter().find(|k| k.fingerprint == which))
        .ok_or_else(|| {
            CliError::msg(format!(
                "no SSH key named {which:?}; see `keyward ssh list`"
            ))
        })
}

fn key_json(k: &SshKeyInfo) -> serde_json::Value {
    json!({
        "name": k.name,
        "key_type": k.key_type,
        "fingerprint": k.fingerprint,
        "comment": k.comment,
        "location": k.location,
        "approval": k.approval,
        "public": k.public,
        "loaded": k.loaded,
    })
}

/// Prints a key just made or imported.
fn show_new(key: SshKeyInfo, json: bool, verb: &str) -> Result<(), CliError> {
    if json {
        println!("{}", key_json(&key));
        return Ok(());
    }
    let bits = key_bits(&key.key_type, &key.public).map_or_else(String::new, |b| format!(" {b}"));
    let place = match key.location.strip_prefix("yubikey:") {
        Some(card) => match card.split_once('/') {
            Some((serial, slot)) => {
                format!("on YubiKey {serial} (slot {slot}), which it never leaves")
            }
            None => format!("on YubiKey {card}"),
        },
        None => "kept in the vault".to_owned(),
    };
    println!(
        "{verb} SSH key {} ({}{bits}), {place}.",
        key.name,
        type_label(&key.key_type)
    );
    println!("Fingerprint: {}", key.fingerprint);
    println!();
    println!("{}", key.public);
    println!();
    println!(
        "Add the line above to ~/.ssh/authorized_keys on a server, or to your Git host's SSH \
         keys; `keyward ssh public {}` prints it again.",
        key.name
    );
    // A hint, when ssh would not ask keyward's agent for it.
    if let Ok(p) = paths() {
        let ours = ssh_socket(&p.socket());
        if std::env::var_os("SSH_AUTH_SOCK").is_none_or(|s| Path::new(&s) != ours) {
            eprintln!(
                "ssh uses it once SSH_AUTH_SOCK names keyward's SSH socket: add \
                 `eval \"$(keyward ssh env)\"` to your shell's startup file."
            );
        }
    }
    Ok(())
}

/// `keyward ssh import FILE`.
fn import(
    autostart: bool,
    no_prompt: bool,
    file: &Path,
    name: String,
    passphrase_fd: Option<u32>,
    json: bool,
) -> Result<(), CliError> {
    let bytes = read_key_file(file)?;
    let passphrase = passphrase_fd
        .map(|fd| read_fd(fd, "passphrase"))
        .transpose()?;
    // On a terminal a mistyped passphrase is asked again (the agent asks
    // for it once per request): three tries, as ssh-add gives.
    let retry = passphrase.is_none() && input::have_tty();
    let mut c = connect_unlocked(autostart, no_prompt)?;
    let mut ui = Terminal::default();
    let mut tries = 0;
    loop {
        let req = Request::SshImport {
            name: name.clone(),
            file: bytes.clone(),
            passphrase: passphrase.clone(),
        };
        ui.working("Importing the key…");
        let r = c.call_with(&req, &mut ui);
        ui.done();
        match r {
            Ok(r) => return show_new(one_key(r)?, json, "Imported"),
            Err(ClientError::Agent(e))
                if retry && tries < 2 && e.code == ErrorCode::WrongCredentials =>
            {
                tries += 1;
                eprintln!("{}.", output::sentence(e.message.trim_end_matches('.')));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The key file's bytes, refused when larger than [`MAX_KEY_FILE`] (or
/// when it is plainly a public key).
fn read_key_file(file: &Path) -> Result<Secret, CliError> {
    let cannot = |e: std::io::Error| {
        CliError::with(
            exit::INVALID,
            format!("cannot read {}: {e}", file.display()),
        )
    };
    let f = std::fs::File::open(file).map_err(cannot)?;
    if f.metadata().map_err(cannot)?.is_dir() {
        return Err(CliError::with(
            exit::INVALID,
            format!(
                "{} is a directory: give the private key file, e.g. ~/.ssh/id_ed25519",
                file.display()
            ),
        ));
    }
    // Room for the largest file and one byte more (to tell that it is too
    // large) from the start: a growing buffer would leave copies behind.
    let mut buf = Vec::with_capacity(MAX_KEY_FILE + 1);
    if let Err(e) = f.take(MAX_KEY_FILE as u64 + 1).read_to_end(&mut buf) {
        zeroize::Zeroize::zeroize(&mut buf);
        return Err(cannot(e));
    }
    let bytes = Secret::new(buf);
    if bytes.len() > MAX_KEY_FILE {
        return Err(CliError::with(
            exit::INVALID,
            format!(
                "{} is larger than {} KiB: that is no SSH private key file",
                file.display(),
                MAX_KEY_FILE / 1024
            ),
        ));
    }
    if looks_public(bytes.expose()) {
        return Err(CliError::with(
            exit::INVALID,
            format!(
                "{} is a public key; import the private key file (the same name without .pub)",
                file.display()
            ),
        ));
    }
    Ok(bytes)
}

/// Whether `bytes` is an authorized_keys-style public key line.
fn looks_public(bytes: &[u8]) -> bool {
    let text = bytes.trim_ascii();
    let mut fields = text.split(|b| b.is_ascii_whitespace());
    let (Some(kind), Some(blob)) = (fields.next(), fields.find(|f| !f.is_empty())) else {
        return false;
    };
    !text.contains(&b'\n')
        && (kind.starts_with(b"ssh-") || kind.starts_with(b"ecdsa-") || kind.starts_with(b"sk-"))
        && blob.starts_with(b"AAAA")
}

/// `keyward ssh remove NAME`.
fn remove(autostart: bool, no_prompt: bool, which: &str, yes: bool) -> Result<(), CliError> {
    let mut c = connect_unlocked(autostart, no_prompt)?;
    let keys = match c.call(&Request::SshList)? {
        Response::SshKeys(v) => v,
        _ => return Err(unexpected()),
    };
    let key = find(&keys, which)?;
    if !yes {
        if !input::have_tty() {
            return Err(CliError::with(
                exit::INVALID,
                format!(
                    "{} was not deleted: there is no terminal to ask on; pass --yes to delete it",
                    key.name
                ),
            ));
        }
        if !input::confirm(
            &format!(
                "Delete SSH key {} ({}) from the vault? This cannot be undone",
                key.name, key.fingerprint
            ),
            false,
        ) {
            return Err(input::cancelled());
        }
    }
    c.call(&Request::SshRemove {
        name: key.name.clone(),
    })?;
    eprintln!("Deleted SSH key {} ({}).", key.name, key.fingerprint);
    Ok(())
}

/// The shells `keyward ssh env` writes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shell {
    Sh,
    Csh,
    Fish,
}

/// The SSH agent socket: `ssh.sock` next to the keyward socket.
fn ssh_socket(socket: &Path) -> PathBuf {
    socket.parent().unwrap_or(Path::new("/")).join("ssh.sock")
}

/// `keyward ssh env`: needs no unlocked agent, only where it listens.
fn env(autostart: bool, shell: Shell) -> Result<(), CliError> {
    let mut p = paths()?;
    if autostart {
        // As `keyward status` does: an agent is started if none runs. Its
        // directory may then be a private replacement it just recorded. An
        // agent of another version still listens where it listens.
        match connect(&p, true) {
            Ok(_) => {}
            Err(e) if e.code == exit::VERSION => {}
            Err(e) => return Err(e),
        }
        p = paths()?;
    } else if let Some(why) = p.runtime_dir_taken(keyward_client::paths::current_uid()) {
        return Err(CliError::with(
            exit::NO_AGENT,
            format!(
                "{} {why}, and no private replacement was recorded yet; start the agent with \
                 `keyward agent` (or drop --no-autostart)",
                p.runtime_dir.display()
            ),
        ));
    }
    let line = env_line(shell, ssh_socket(&p.socket()).as_os_str());
    let mut out = std::io::stdout().lock();
    out.write_all(&line)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::msg(format!("cannot write to standard output: {e}")))
}

/// The line that sets SSH_AUTH_SOCK to `path` in `shell`.
fn env_line(shell: Shell, path: &OsStr) -> Vec<u8> {
    let quoted = quote(shell, path.as_bytes());
    let mut line = Vec::new();
    match shell {
        Shell::Sh => {
            line.extend_from_slice(b"SSH_AUTH_SOCK=");
            line.extend_from_slice(&quoted);
            line.extend_from_slice(b"; export SSH_AUTH_SOCK;\n");
        }
        Shell::Csh => {
            line.extend_from_slice(b"setenv SSH_AUTH_SOCK ");
            line.extend_from_slice(&quoted);
            line.extend_from_slice(b";\n");
        }
        Shell::Fish => {
            line.extend_from_slice(b"set -gx SSH_AUTH_SOCK ");
            line.extend_from_slice(&quoted);
            line.extend_from_slice(b";\n");
        }
    }
    line
}

/// `path` as one word for `shell`: as it is when it holds only
/// `[A-Za-z0-9/._-]`, else in single quotes.
fn quote(shell: Shell, path: &[u8]) -> Vec<u8> {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-');
    if !path.is_empty() && path.iter().all(plain) {
        return path.to_vec();
    }
    let mut q = vec![b'\''];
    for &b in path {
        match (shell, b) {
            // fish: backslash escapes ' and \ inside single quotes.
            (Shell::Fish, b'\'' | b'\\') => q.extend_from_slice(&[b'\\', b]),
            // sh and csh: close the quotes, a quoted ', open them again.
            (Shell::Sh | Shell::Csh, b'\'') => q.extend_from_slice(b"'\\''"),
            // csh: a newline inside quotes needs a backslash before it.
            (Shell::Csh, b'\n') => q.extend_from_slice(b"\\\n"),
            (_, b) => q.push(b),
        }
    }
    q.push(b'\'');
    q
}

/// What `ssh-add -l` calls a key type: `ED25519`, `RSA`, `ECDSA-SK`,
/// `ED25519-CERT` …
fn type_label(key_type: &str) -> String {
    let (base, cert) = match key_type.strip_suffix("-cert-v01@openssh.com") {
        Some(b) => (b, "-CERT"),
        None => (key_type, ""),
    };
    let label = match base {
        "ssh-ed25519" => "ED25519".to_owned(),
        "ssh-rsa" => "RSA".to_owned(),
        "ssh-dss" => "DSA".to_owned(),
        "sk-ssh-ed25519@openssh.com" | "sk-ssh-ed25519" => "ED25519-SK".to_owned(),
        b if b.starts_with("sk-ecdsa-") => "ECDSA-SK".to_owned(),
        b if b.starts_with("ecdsa-") => "ECDSA".to_owned(),
        b => b.to_uppercase(),
    };
    format!("{label}{cert}")
}

/// The key's size in bits, as `ssh-add -l` shows it (RSA's from its modulus
/// in the public key).
fn key_bits(key_type: &str, public: &str) -> Option<u32> {
    let base = key_type
        .strip_suffix("-cert-v01@openssh.com")
        .unwrap_or(key_type);
    if base.contains("ed25519") {
        return Some(256);
    }
    for curve in ["nistp256", "nistp384", "nistp521"] {
        if base.contains(curve) {
            return curve[5..].parse().ok();
        }
    }
    if base != "ssh-rsa" {
        return None;
    }
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(public.split_whitespace().nth(1)?)
        .ok()?;
    let mut rest = blob.as_slice();
    let mut field = || -> Option<&[u8]> {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let f = rest.get(4..4 + len)?;
        rest = &rest[4 + len..];
        Some(f)
    };
    field()?; // the type
    if base != key_type {
        field()?; // a certificate's nonce
    }
    field()?; // e
    let n = field()?;
    let n = &n[n.iter().position(|&b| b != 0)?..];
    Some(n.len() as u32 * 8 - n[0].leading_zeros())
}

/// The human listing: one key a line.
fn table(keys: &[SshKeyInfo]) -> String {
    let rows: Vec<[String; 8]> = keys
        .iter()
        .map(|k| {
            [
                k.name.clone(),
                type_label(&k.key_type),
                key_bits(&k.key_type, &k.public).map_or("-".into(), |b| b.to_string()),
                k.fingerprint.clone(),
                k.location.clone(),
                k.approval.clone(),
                if k.loaded { "yes" } else { "no" }.to_owned(),
                k.comment.clone(),
            ]
        })
        .collect();
    let head = [
        "NAME",
        "TYPE",
        "BITS",
        "FINGERPRINT",
        "LOCATION",
        "APPROVAL",
        "LOADED",
        "COMMENT",
    ];
    let mut widths = head.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&head.map(str::to_owned));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn sh(path: &str) -> String {
        String::from_utf8(env_line(Shell::Sh, OsStr::new(path))).unwrap()
    }

    #[test]
    fn env_lines_for_each_shell() {
        assert_eq!(
            sh("/run/user/1000/keyward/ssh.sock"),
            "SSH_AUTH_SOCK=/run/user/1000/keyward/ssh.sock; export SSH_AUTH_SOCK;\n"
        );
        let csh = env_line(Shell::Csh, OsStr::new("/r/ssh.sock"));
        assert_eq!(csh, b"setenv SSH_AUTH_SOCK /r/ssh.sock;\n");
        let fish = env_line(Shell::Fish, OsStr::new("/r/ssh.sock"));
        assert_eq!(fish, b"set -gx SSH_AUTH_SOCK /r/ssh.sock;\n");
    }

    #[test]
    fn paths_with_other_characters_are_quoted() {
        assert_eq!(
            sh("/home/a b/it's/ssh.sock"),
            "SSH_AUTH_SOCK='/home/a b/it'\\''s/ssh.sock'; export SSH_AUTH_SOCK;\n"
        );
        assert_eq!(
            sh("/x/$HOME/ssh.sock"),
            "SSH_AUTH_SOCK='/x/$HOME/ssh.sock'; export SSH_AUTH_SOCK;\n"
        );
        let fish = env_line(Shell::Fish, OsStr::new("/a b/it's\\/ssh.sock"));
        assert_eq!(
            fish,
            b"set -gx SSH_AUTH_SOCK '/a b/it\\'s\\\\/ssh.sock';\n".as_slice()
        );
        // Bytes that are not UTF-8 go through as they are, quoted.
        let odd = OsStr::from_bytes(b"/t/\xff/ssh.sock");
        assert_eq!(
            env_line(Shell::Sh, odd),
            b"SSH_AUTH_SOCK='/t/\xff/ssh.sock'; export SSH_AUTH_SOCK;\n".as_slice()
        );
    }

    #[test]
    fn the_socket_is_next_to_the_keyward_socket() {
        assert_eq!(
            ssh_socket(Path::new("/k/run/agent.sock")),
            PathBuf::from("/k/run/ssh.sock")
        );
    }

    #[test]
    fn types_and_sizes_as_ssh_add_shows_them() {
        assert_eq!(type_label("ssh-ed25519"), "ED25519");
        assert_eq!(type_label("ecdsa-sha2-nistp384"), "ECDSA");
        assert_eq!(type_label("sk-ssh-ed25519@openssh.com"), "ED25519-SK");
        assert_eq!(type_label("ssh-rsa-cert-v01@openssh.com"), "RSA-CERT");
        assert_eq!(key_bits("ssh-ed25519", ""), Some(256));
        assert_eq!(key_bits("ecdsa-sha2-nistp521", ""), Some(521));
        // A 1024-bit modulus (e = 65537), built by hand.
        use base64::Engine;
        let mut blob = Vec::new();
        for field in [b"ssh-rsa".as_slice(), &[1, 0, 1], &{
            let mut n = vec![0u8; 129];
            n[1] = 0xc1;
            n
        }] {
            blob.extend_from_slice(&(field.len() as u32).to_be_bytes());
            blob.extend_from_slice(field);
        }
        let line = format!(
            "ssh-rsa {} c",
            base64::engine::general_purpose::STANDARD.encode(&blob)
        );
        assert_eq!(key_bits("ssh-rsa", &line), Some(1024));
        assert_eq!(key_bits("ssh-rsa", "ssh-rsa !!! c"), None);
    }

    #[test]
    fn a_public_key_file_is_told_apart() {
        assert!(looks_public(
            b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA me@host\n"
        ));
        assert!(looks_public(b"ecdsa-sha2-nistp256 AAAAE2Vj"));
        assert!(!looks_public(
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n-----END OPENSSH PRIVATE KEY-----\n"
        ));
        assert!(!looks_public(b"hello world"));
    }

    #[test]
    fn unknown_names_say_where_to_look() {
        let k = SshKeyInfo {
            name: "work".into(),
            key_type: "ssh-ed25519".into(),
            fingerprint: "SHA256:abc".into(),
            comment: "me@host".into(),
            location: "vault".into(),
            approval: "never".into(),
            public: "ssh-ed25519 AAAA me@host".into(),
            loaded: true,
        };
        let keys = [k];
        assert_eq!(find(&keys, "work").unwrap().name, "work");
        assert_eq!(find(&keys, "SHA256:abc").unwrap().name, "work");
        let e = find(&keys, "nope").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(
            e.message.contains("see `keyward ssh list`"),
            "{}",
            e.message
        );
        let t = table(&keys);
        assert!(t.starts_with("NAME "), "{t}");
        assert!(t.contains("work  ED25519  256   SHA256:abc"), "{t}");
    }
}
