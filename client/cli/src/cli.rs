//! The commands.

use crate::connect::{agent_program, connect};
use crate::input::{self, ask_hidden, ask_new, read_fd};
use crate::output::{self, CliError, EXIT_CODES_HELP, Spinner, exit};
use clap::{Args, CommandFactory, Parser, Subcommand};
use keyward_client::message::{InitRequest, UnlockRequest};
use keyward_client::{
    AgentState, Client, ClientError, ErrorCode, Interaction, Paths, PromptKind, Request, Response,
    Secret,
};
use serde_json::json;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

#[path = "manpages.rs"]
pub mod manpages;

/// keyward: your secrets, unlocked once, served to local programs.
///
/// keyward keeps secrets (tokens, passwords, keys) in a vault opened by your
/// Master Password plus a Secret Key that this device keeps for you. Once
/// unlocked, the agent hands them to `keyward get` and to any program using
/// the keyward-client library, until it locks itself.
#[derive(Parser, Debug)]
#[command(name = "keyward", version, author, after_long_help = EXIT_CODES_HELP, max_term_width = 100)]
pub struct Cli {
    /// Do not start the agent if none is running.
    #[arg(long, global = true)]
    pub no_autostart: bool,

    /// When the agent is locked, fail instead of asking for the Master
    /// Password (on a terminal, commands that need the unlocked agent ask
    /// for it and go on, as sudo does).
    #[arg(long, global = true)]
    pub no_prompt: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// Where a password comes from when not typed.
#[derive(Args, Debug, Clone, Default)]
pub struct PasswordSource {
    /// Read the Master Password from file descriptor N (one secret, a trailing newline stripped).
    #[arg(long, value_name = "N", conflicts_with = "password_stdin")]
    pub password_fd: Option<u32>,
    /// Read the Master Password from standard input (same as --password-fd 0).
    #[arg(long)]
    pub password_stdin: bool,
}

impl PasswordSource {
    fn fd(&self) -> Option<u32> {
        if self.password_stdin {
            Some(0)
        } else {
            self.password_fd
        }
    }

    pub(crate) fn get(&self, prompt: &str, description: &str) -> Result<Secret, CliError> {
        match self.fd() {
            Some(fd) => Ok(read_fd(fd, "password")?),
            None => Ok(ask_hidden(prompt, description)?),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create your account: a Master Password, and a Secret Key kept on this device.
    #[command(after_help = manpages::INIT_EXAMPLES)]
    Init {
        #[command(flatten)]
        password: PasswordSource,
        /// Where this device keeps the Secret Key: auto (the best available), file, none (you type it).
        #[arg(long, default_value = "auto", value_name = "KIND")]
        protector: String,
        /// Also write the Emergency Kit (PDF) to this file.
        #[arg(long, value_name = "FILE")]
        emergency_kit: Option<PathBuf>,
        /// Accept a weak or very weak new Master Password (refused otherwise).
        #[arg(long)]
        allow_weak_password: bool,

        /// Print `{"account_id", "secret_key"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Unlock the agent with your Master Password.
    #[command(after_help = manpages::UNLOCK_EXAMPLES)]
    Unlock {
        #[command(flatten)]
        password: PasswordSource,
        /// Read the YubiKey PIN from file descriptor N.
        #[arg(long, value_name = "N")]
        pin_fd: Option<u32>,
        /// Read the Secret Key from file descriptor N (instead of this device's protectors).
        #[arg(long, value_name = "N")]
        secret_key_fd: Option<u32>,
        /// Use only this protector: yubikey, yubikey:SERIAL, keychain, file, none (type the Secret Key).
        #[arg(long, value_name = "PROTECTOR")]
        with: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lock the agent now (its keys are wiped from memory).
    Lock,
    /// Show whether the agent is locked, and for how long it stays unlocked.
    Status {
        /// Print as JSON: state (locked|unlocked|uninitialized), account_id, seconds_to_auto_lock, protector …
        #[arg(long)]
        json: bool,
    },
    /// Store a secret: the value comes from standard input, or a hidden prompt.
    #[command(after_help = manpages::SET_EXAMPLES)]
    Set {
        /// The item's name, e.g. github/token.
        name: String,
        /// Store an empty value read from standard input (refused otherwise:
        /// an empty input is usually a failed command before the pipe).
        #[arg(long)]
        allow_empty: bool,
        /// Keep standard input exactly as read: without it, one trailing
        /// newline (`\n` or `\r\n`, as `echo` adds) is dropped.
        #[arg(long)]
        raw: bool,
        /// Replace an existing item without asking (needed without a terminal).
        #[arg(long)]
        force: bool,
    },
    /// Print a secret's value to standard output (and nothing else; a
    /// newline follows it only when standard output is a terminal).
    #[command(after_help = manpages::GET_EXAMPLES)]
    Get {
        /// The item's name.
        name: String,
        /// Print `{"name", "value"}` as JSON (the value must be UTF-8 text).
        #[arg(long)]
        json: bool,
        /// Copy the value to the clipboard instead (wl-copy or xclip), and clear it after
        /// 45 s if it still holds it.
        #[arg(long, conflicts_with = "json")]
        clip: bool,
    },
    /// List the items' names (all, or those matching a glob PATTERN).
    List {
        /// A glob (`*`, `?`, `[abc]`), e.g. 'github/*'; quote it for the shell.
        pattern: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete an item.
    #[command(visible_alias = "remove")]
    Rm {
        /// The item's name.
        name: String,
    },
    /// Change the Master Password.
    ChangePassword {
        #[command(flatten)]
        password: PasswordSource,
        /// Read the new Master Password from file descriptor N.
        #[arg(long, value_name = "N")]
        new_password_fd: Option<u32>,
        /// Accept a weak or very weak new Master Password (refused otherwise).
        #[arg(long)]
        allow_weak_password: bool,
    },
    /// Make, list or revoke recovery codes (your way back in without the Secret Key or password).
    RecoveryCode {
        #[command(subcommand)]
        action: RecoveryAction,
    },
    /// Get back in with a recovery code: sets a new Master Password and issues a new Secret Key.
    #[command(after_help = manpages::RECOVER_EXAMPLES)]
    Recover {
        /// Recover with a grant file from your organizer (its code instead of a recovery code).
        #[arg(long, value_name = "FILE")]
        grant: Option<PathBuf>,
        /// Read the recovery code (or, with --grant, the grant code) from file descriptor N.
        #[arg(long, value_name = "N")]
        code_fd: Option<u32>,
        /// Read the new Master Password from file descriptor N.
        #[arg(long, value_name = "N")]
        new_password_fd: Option<u32>,
        /// Accept a weak or very weak new Master Password (refused otherwise).
        #[arg(long)]
        allow_weak_password: bool,
        /// Print `{"secret_key"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write your Emergency Kit: account ID, Secret Key (with a QR code), how to get back in.
    #[command(after_help = manpages::EMERGENCY_KIT_EXAMPLES)]
    EmergencyKit {
        #[command(flatten)]
        password: PasswordSource,
        /// The file to write (created 0600, never through a symbolic link). Text goes to
        /// standard output without it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace FILE if it exists (the new kit is written beside it, then renamed over it).
        #[arg(long)]
        force: bool,
        /// pdf or text.
        #[arg(long, default_value = "pdf", value_name = "FORMAT")]
        format: KitFormat,
    },
    /// Manage where this device keeps the Secret Key: a YubiKey, the OS keychain, a file.
    Protector {
        #[command(subcommand)]
        action: ProtectorAction,
    },
    /// Manage the Secret Key.
    SecretKey {
        #[command(subcommand)]
        action: SecretKeyAction,
    },
    /// Run the agent in the foreground (what a service manager calls), or stop it.
    Agent {
        #[command(subcommand)]
        action: Option<AgentAction>,
    },
    /// Write a copy of the vault (encrypted as it is: safe to keep anywhere),
    /// checked with the keys in memory before it is written.
    #[command(
        after_help = "Examples:\n  keyward backup\n  keyward backup --out /media/usb/keyward.kwv"
    )]
    Backup {
        /// The file to write (created 0600; default keyward-backup-ID-DATE.kwv here).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
        /// Print `{"path", "generation", "items"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take the items of a backup back into the vault. Passwords, the Secret
    /// Key, YubiKeys and recovery codes stay as they are now; the vault as it
    /// was is kept in the state directory.
    #[command(
        after_help = "Examples:\n  keyward restore keyward-backup-7QH3MK-2026-12-01.kwv\n  keyward restore old.kwv --older   # after reading what it brings back"
    )]
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Restore a backup older than the vault (it says first what that brings back).
        #[arg(long)]
        older: bool,
    },
    /// Rename an item.
    #[command(after_help = "Examples:\n  keyward mv bank money/bank")]
    Mv {
        /// Its name.
        old: String,
        /// Its new name.
        new: String,
    },
    /// Change an item's value in $VISUAL or $EDITOR (through a 0600 file in a
    /// private directory in your runtime directory, removed afterwards).
    ///
    /// An editor that keeps swap, backup or undo files in a directory of
    /// its own (neovim's ~/.local/state/nvim/swap, vim's 'directory') may
    /// write the value there, on disk: turn those off for this use, e.g.
    /// EDITOR='vim -n -i NONE' or EDITOR='nvim -n -i NONE'.
    #[command(
        after_help = "Examples:\n  keyward edit notes/wifi\n  EDITOR=nano keyward edit notes/wifi"
    )]
    Edit {
        /// The item's name.
        name: String,
        /// Also where the runtime directory is not a tmpfs (the file could reach the disk).
        #[arg(long)]
        force: bool,
    },
    /// Run a program with secrets in its environment (nothing is written to disk).
    #[command(
        after_help = crate::run::EXAMPLES,
        override_usage = "keyward run [--env VAR=ITEM]... [--env-file FILE]... -- CMD [ARGS]..."
    )]
    Run {
        /// Set VAR to the value of item ITEM (also VAR=keyward://ITEM); repeatable.
        #[arg(long = "env", value_name = "VAR=ITEM")]
        env: Vec<String>,
        /// Read VAR=ITEM lines from FILE (blank lines and # comments skipped); --env wins.
        #[arg(long, value_name = "FILE")]
        env_file: Vec<PathBuf>,
        /// The program to run and its arguments (after `--`); keyward exits with its status.
        #[arg(
            value_name = "CMD",
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// Fill `{{ keyward://ITEM }}` references in a template read on standard input.
    ///
    /// Spaces inside the braces are optional; `\{{` is a literal `{{`. Every item is
    /// fetched first: an unknown one is an error naming it, and nothing is written.
    #[command(after_help = crate::inject::EXAMPLES)]
    Inject {
        /// Write the result to FILE (created 0600, never through a symbolic link) instead
        /// of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long, requires = "out")]
        force: bool,
    },
    /// Make a random password (or passphrase) and print it; its entropy goes to standard error.
    #[command(after_help = crate::generate::EXAMPLES)]
    Generate {
        /// Characters in the password (8 to 1024; default 24).
        #[arg(long, value_name = "N", conflicts_with = "words")]
        length: Option<usize>,
        /// A passphrase of N words (3 to 100) from the EFF large word list, joined by `-`.
        #[arg(long, value_name = "N")]
        words: Option<usize>,
        /// Put symbols (! # % * + - . : = ? @ _) in the password (the default).
        #[arg(long, overrides_with = "no_symbols", conflicts_with = "words")]
        symbols: bool,
        /// Letters and digits only.
        #[arg(long, overrides_with = "symbols", conflicts_with = "words")]
        no_symbols: bool,
        /// Also store it as item NAME (asks before replacing one).
        #[arg(long, value_name = "NAME")]
        set: Option<String>,
        /// With --set: replace an existing item without asking.
        #[arg(long, requires = "set")]
        force: bool,
    },
    /// Clear the clipboard later (started by `get --clip`; the value comes on standard input).
    #[command(hide = true)]
    ClipClear {
        /// The clipboard tool.
        #[arg(long)]
        tool: crate::clip::Tool,
        /// Seconds to wait.
        #[arg(long)]
        after: u64,
    },
    /// Be git's credential helper: answer git's get, store and erase requests.
    #[command(long_about = crate::credential::ABOUT, after_help = crate::credential::EXAMPLES)]
    Credential(crate::credential::CredentialArgs),
    /// Write every item, in clear, to a file (JSON): to move to another password manager.
    #[command(long_about = crate::export::ABOUT, after_help = crate::export::EXAMPLES)]
    Export {
        /// The file to write (created 0600, never through a symbolic link).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists (the export is written beside it, then renamed over it).
        #[arg(long)]
        force: bool,
        /// json (keyward's own layout, read back by `keyward import`).
        #[arg(long, default_value = "json", value_name = "FORMAT")]
        format: crate::export::Format,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Create items from a keyward export, a pass store, or a Bitwarden, 1Password or KeePassXC CSV.
    #[command(long_about = crate::import::ABOUT, after_help = crate::import::EXAMPLES)]
    Import {
        /// json, pass, bitwarden-csv, 1password-csv or keepassxc-csv (default: told from FILE).
        #[arg(long, value_name = "FORMAT")]
        format: Option<crate::import::Format>,
        /// List the names that would be created, replaced or skipped; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replace items that exist already (skipped otherwise).
        #[arg(long)]
        force: bool,
        /// The file (- for standard input), or for pass the store's directory.
        file: Option<PathBuf>,
    },
    /// Recovery by an organizer: your organizer key, the organizers who can recover you, grants.
    Organizer {
        #[command(subcommand)]
        action: crate::organizer::OrganizerAction,
    },
    /// SSH keys in the vault, offered to ssh and git by the agent's SSH socket.
    #[command(after_help = crate::ssh::EXAMPLES)]
    Ssh {
        #[command(subcommand)]
        action: crate::ssh::SshAction,
    },
    /// Set this device up from an existing vault (a copy, or a folder a sync engine keeps).
    ///
    /// Asks for the Secret Key (from the Emergency Kit) and the Master Password, opens the vault
    /// where it is (no copy is made), keeps the Secret Key with this device's protector and
    /// unlocks. PATH is the vault file, or a folder holding exactly one vault-*.kwv. Nothing
    /// this device keeps for itself is written into that folder. A wrong Secret Key or password
    /// counts as a failed unlock.
    #[command(after_help = crate::join::JOIN_EXAMPLES)]
    Join {
        /// The vault file, or the folder holding it.
        path: PathBuf,
        /// Read the Secret Key from the Emergency Kit: the PDF `keyward emergency-kit` wrote, or a
        /// photo or scan of it (PNG or JPEG; its QR code is read).
        #[arg(long, value_name = "FILE", conflicts_with = "secret_key_fd")]
        kit: Option<PathBuf>,
        /// Read the Secret Key from file descriptor N (a trailing newline stripped).
        #[arg(long, value_name = "N")]
        secret_key_fd: Option<u32>,
        #[command(flatten)]
        password: PasswordSource,
        /// Where this device keeps the Secret Key: auto (the best available), file, keychain,
        /// yubikey (a card the vault already has a key on is used as it is; another is enrolled),
        /// none (you type it at each unlock).
        #[arg(long, default_value = "auto", value_name = "KIND")]
        protector: String,
        #[command(flatten)]
        card: CardArgs,
        /// Print `{"state", "account_id", "protector", "vault", "notes"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Merge now what this account's other devices wrote beside the vault (their parts, and
    /// conflict copies a sync engine made); the agent also does it within a second of a change.
    Sync {
        #[command(subcommand)]
        action: Option<crate::sync::SyncAction>,
        /// Print `{"notes", "refused"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// git's merge driver for vault files (`keyward sync init-git` registers it): merges %B
    /// into %A record by record.
    #[command(hide = true)]
    MergeDriver {
        /// %O, the common ancestor (not needed: keyward merges by record).
        base: PathBuf,
        /// %A, this side: receives the merge.
        ours: PathBuf,
        /// %B, the other side.
        theirs: PathBuf,
    },
    /// Draw a new account key and seal the whole vault again under it (asks for the Master
    /// Password). Recovery codes are revoked (make new ones after); copies of the vault made
    /// before stay readable only with the credentials of then. Other devices follow at their
    /// next unlock.
    Rekey {
        #[command(flatten)]
        password: PasswordSource,
        /// Print `{"revoked_codes", "notes"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The account's devices: list, rename, remove.
    Device {
        #[command(subcommand)]
        action: crate::sync::DeviceAction,
    },
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the keyward(1) man page (roff), or write every page into a directory.
    Manpage {
        /// Write every page (keyward(1), one per command, keyward-agent(1),
        /// keyward.toml(5)) into DIR, and print their paths.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum RecoveryAction {
    /// Make a new recovery code (asks for the Master Password); it is shown once.
    New {
        #[command(flatten)]
        password: PasswordSource,
        /// Print `{"id", "code"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List recovery codes: id, created, last used (never the codes).
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a recovery code by its id (or a unique prefix); asks for the Master Password.
    Revoke {
        /// The code's id, from `keyward recovery-code list`.
        id: String,
        #[command(flatten)]
        password: PasswordSource,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProtectorAction {
    /// Enroll a protector: `yubikey` (a P-256 key generated on the card wraps the Secret Key),
    /// `keychain` (the OS keychain) or `file` (a 0600 file; the weakest).
    Add {
        /// yubikey, keychain or file.
        kind: ProtectorKindArg,
        #[command(flatten)]
        card: CardArgs,
        #[command(flatten)]
        password: PasswordSource,
        /// Print `{"id", "notes"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the protectors: kind, id, details, when added, when last used.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a protector by its id (from `keyward protector list`); asks for the Master Password.
    Remove {
        /// e.g. file, keychain, yubikey:12345678:82.
        id: String,
        #[command(flatten)]
        password: PasswordSource,
    },
}

/// How to enroll a YubiKey (`protector add yubikey`, `join --protector
/// yubikey`).
#[derive(clap::Args, Debug, Default)]
pub struct CardArgs {
    /// The YubiKey's serial number (needed when several are plugged in).
    #[arg(long, value_name = "N")]
    pub serial: Option<u32>,
    /// The PIV slot, in hex (default: the first free retired slot, 82 to 95; a card that already
    /// holds this vault's key is used as it is).
    #[arg(long, value_name = "HEX", value_parser = parse_slot)]
    pub slot: Option<u8>,
    /// When the card wants a touch: never, always, or cached (once per 15 s).
    #[arg(long, value_name = "POLICY", default_value = "never")]
    pub touch: String,
    /// Read the YubiKey PIN from file descriptor N.
    #[arg(long, value_name = "N")]
    pub pin_fd: Option<u32>,
    /// Read the YubiKey management key (hex) from file descriptor N.
    #[arg(long, value_name = "N")]
    pub management_key_fd: Option<u32>,
}

/// Protector kinds that can be enrolled.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtectorKindArg {
    /// A YubiKey (PIV, P-256).
    Yubikey,
    /// The OS keychain.
    Keychain,
    /// A 0600 file.
    File,
}

pub(crate) fn parse_slot(s: &str) -> Result<u8, String> {
    let t = s.trim_start_matches("0x").trim_start_matches("0X");
    u8::from_str_radix(t, 16).map_err(|_| format!("{s:?} is not a slot in hex (e.g. 82)"))
}

#[derive(Subcommand, Debug)]
pub enum SecretKeyAction {
    /// Issue a new Secret Key (if you fear yours leaked); the old one stops working.
    Rotate {
        #[command(flatten)]
        password: PasswordSource,
        /// Print `{"secret_key"}` as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Emergency Kit formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KitFormat {
    /// A one-page PDF.
    Pdf,
    /// Plain text.
    Text,
}

#[derive(Subcommand, Debug)]
pub enum AgentAction {
    /// Run in the foreground (the default).
    Run,
    /// Lock and stop the running agent.
    Stop,
}

pub(crate) fn paths() -> Result<Paths, CliError> {
    Paths::from_env().map_err(|e| CliError::msg(e.to_string()))
}

/// Shows notices and asks for PINs on the terminal (or pinentry), with a
/// spinner while the agent works: stopped (its line cleared) before a
/// prompt or a notice is shown, so that they stay readable, and started
/// again once the agent is back at work.
#[derive(Default)]
pub(crate) struct Terminal {
    pin: Option<Secret>,
    /// The spinner's label while a request runs (`None`: no spinner).
    label: Option<String>,
    spinner: Option<Spinner>,
}

impl Terminal {
    fn new(pin: Option<Secret>) -> Self {
        Self {
            pin,
            ..Self::default()
        }
    }

    /// Shows a spinner with `label` until [`Terminal::done`].
    pub(crate) fn working(&mut self, label: &str) {
        self.label = Some(label.to_owned());
        self.spinner = Some(Spinner::start(label));
    }

    /// Stops the spinner for good.
    pub(crate) fn done(&mut self) {
        self.label = None;
        self.spinner = None;
    }

    /// Stops the spinner and clears its line (before showing anything).
    fn pause(&mut self) {
        self.spinner = None;
    }

    /// Starts the spinner again, if a request is still running.
    fn resume(&mut self) {
        if let Some(label) = &self.label {
            self.spinner = Some(Spinner::start(label));
        }
    }
}

impl Interaction for Terminal {
    fn prompt(&mut self, kind: PromptKind, message: &str) -> Option<Secret> {
        if kind == PromptKind::Pin
            && let Some(p) = self.pin.take()
        {
            return Some(p);
        }
        self.pause();
        let answer = match kind {
            PromptKind::Confirm => Some(Secret::from(if input::confirm(message, false) {
                "y"
            } else {
                "n"
            })),
            PromptKind::Passphrase => {
                ask_hidden(message.trim_end_matches([':', ' ']), message).ok()
            }
            // A new secret is asked twice: a typo would set a PIN nobody knows.
            PromptKind::NewPin => ask_new(message, message).ok(),
            _ => ask_hidden(message, message).ok(),
        };
        self.resume();
        answer
    }

    fn notice(&mut self, message: &str) {
        self.pause();
        eprintln!("{message}");
        self.resume();
    }
}

fn print_json(v: serde_json::Value) {
    println!("{v}");
}

/// Bash: item names for `get`, `set`, `rm` and `remove`, from the running
/// agent (nothing when it is locked or not running; never starts one).
/// Other shells get clap's completions of commands and options.
const BASH_ITEM_NAMES: &str = r#"
_keyward_items() {
    local cur=${COMP_WORDS[COMP_CWORD]} IFS=$'\n'
    case "${COMP_WORDS[1]}" in
        get|set|rm|remove)
            if [ "$COMP_CWORD" -eq 2 ] && [ "${cur#-}" = "$cur" ]; then
                COMPREPLY=($(compgen -W "$(keyward --no-autostart --no-prompt list 2>/dev/null)" -- "$cur"))
                return 0
            fi ;;
    esac
    _keyward "$@"
}
complete -F _keyward_items -o bashdefault -o default keyward
"#;

/// Runs `op` on the agent; if it is locked and a person is at a terminal
/// (and `--no-prompt` was not given), unlocks it first, asking for the
/// Master Password as `keyward unlock` does, and runs `op` again.
pub(crate) fn unlocked<T>(
    autostart: bool,
    no_prompt: bool,
    mut op: impl FnMut(&mut Client) -> Result<T, ClientError>,
) -> Result<T, CliError> {
    let mut c = connect(&paths()?, autostart)?;
    match op(&mut c) {
        Err(ClientError::Agent(e))
            if e.code == ErrorCode::Locked && !no_prompt && input::have_tty() =>
        {
            eprintln!("The keyward agent is locked.");
            unlock(
                autostart,
                &PasswordSource::default(),
                None,
                None,
                None,
                false,
            )?;
            let mut c = connect(&paths()?, autostart)?;
            Ok(op(&mut c)?)
        }
        other => Ok(other?),
    }
}

/// Where the Secret Key of an unlock came from, for people: "Secret Key
/// from file", "Secret Key typed", …
fn key_source(protector: &str) -> String {
    match protector {
        "none" => "Secret Key typed".to_owned(),
        "recovery code" => "opened with a recovery code".to_owned(),
        p => format!("Secret Key from {p}"),
    }
}

/// Before storing `name`: if an item of that name exists, asks whether to
/// replace it (No by default), or without a terminal requires `force`.
pub(crate) fn confirm_replace(
    autostart: bool,
    no_prompt: bool,
    name: &str,
    force: bool,
) -> Result<(), CliError> {
    if force {
        return Ok(());
    }
    let exists = unlocked(autostart, no_prompt, |c| {
        Ok(c.list()?.iter().any(|i| i.name == name))
    })?;
    if !exists {
        return Ok(());
    }
    if !input::have_tty() {
        return Err(CliError::with(
            exit::INVALID,
            format!("{name} exists already; pass --force to replace it"),
        ));
    }
    if input::confirm(&format!("{name} exists already. Replace its value?"), false) {
        Ok(())
    } else {
        Err(input::cancelled())
    }
}

/// A secret asked with `ask` and checked by the agent with `check` before
/// anything else is asked for; on a terminal (`retry`), an answer refused
/// with `again` is told (the message, then `tail`) and asked again, three
/// tries in all.
fn checked(
    c: &mut Client,
    retry: bool,
    again: ErrorCode,
    tail: &str,
    working: &str,
    mut ask: impl FnMut() -> Result<Secret, CliError>,
    check: impl Fn(Secret) -> Request,
) -> Result<Secret, CliError> {
    let mut tries = 0;
    loop {
        let secret = ask()?;
        let spinner = Spinner::start(working);
        let r = c.call(&check(secret.clone()));
        drop(spinner);
        match r {
            Ok(_) => return Ok(secret),
            Err(ClientError::Agent(e)) if retry && tries < 2 && e.code == again => {
                tries += 1;
                eprintln!("{}{tail}", output::sentence(&e.message));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A connection to an unlocked agent for a command that makes several
/// requests: if the agent is locked and a person is at a terminal (and
/// `--no-prompt` was not given), it is unlocked first, as [`unlocked`] does.
pub(crate) fn connect_unlocked(autostart: bool, no_prompt: bool) -> Result<Client, CliError> {
    let mut c = connect(&paths()?, autostart)?;
    if c.status()?.state == AgentState::Locked && !no_prompt && input::have_tty() {
        eprintln!("The keyward agent is locked.");
        unlock(
            autostart,
            &PasswordSource::default(),
            None,
            None,
            None,
            false,
        )?;
        c = connect(&paths()?, autostart)?;
    }
    Ok(c)
}

/// Runs a command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let autostart = !cli.no_autostart;
    match cli.command {
        Command::Get { name, json, clip } => {
            if clip {
                let tool = crate::clip::tool()?;
                let v = unlocked(autostart, cli.no_prompt, |c| c.get(&name))?;
                return crate::clip::copy(tool, &name, &v);
            }
            let v = unlocked(autostart, cli.no_prompt, |c| c.get(&name))?;
            if json {
                let text = v.expose_str().ok_or_else(|| {
                    CliError::with(
                        exit::INVALID,
                        format!(
                            "{name} holds bytes that are not UTF-8 text: get it without --json"
                        ),
                    )
                })?;
                print_json(json!({"name": name, "value": text}));
                return Ok(());
            }
            let mut out = std::io::stdout().lock();
            // A newline on a terminal only: the value and nothing else for
            // a pipe or a file, and no shell prompt glued to it on screen.
            let newline: &[u8] = if std::io::stdout().is_terminal() {
                b"\n"
            } else {
                b""
            };
            out.write_all(v.expose())
                .and_then(|()| out.write_all(newline))
                .and_then(|()| out.flush())
                .map_err(|e| CliError::msg(format!("cannot write to standard output: {e}")))?;
            Ok(())
        }
        Command::Set {
            name,
            allow_empty,
            raw,
            force,
        } => {
            // At a terminal, whether to replace is asked before the value.
            let tty = input::stdin_is_tty();
            if tty {
                confirm_replace(autostart, cli.no_prompt, &name, force)?;
            }
            let value = if tty {
                ask_new(
                    &format!("Value for {name}"),
                    &format!("The secret to store as {name}."),
                )?
            } else {
                // Room for the largest value and one byte more (to tell that
                // it is too large) from the start: a growing buffer would
                // leave unwiped copies of the value behind.
                let limit = keyward_client::message::MAX_VALUE + 1;
                let mut buf = Vec::with_capacity(limit);
                if let Err(e) = std::io::stdin()
                    .lock()
                    .take(limit as u64)
                    .read_to_end(&mut buf)
                {
                    zeroize::Zeroize::zeroize(&mut buf);
                    return Err(CliError::msg(format!(
                        "cannot read the value from standard input: {e}"
                    )));
                }
                if !raw && buf.last() == Some(&b'\n') {
                    // In place: the buffer never grows or moves.
                    let cut = if buf.ends_with(b"\r\n") { 2 } else { 1 };
                    for b in buf.iter_mut().rev().take(cut) {
                        *b = 0;
                    }
                    buf.truncate(buf.len() - cut);
                }
                if buf.is_empty() && !allow_empty {
                    return Err(CliError::with(
                        exit::INVALID,
                        format!(
                            "standard input was empty, so {name} was left as it was (did the \
                             command before the pipe fail?); to store an empty value on \
                             purpose, add --allow-empty"
                        ),
                    ));
                }
                Secret::new(buf)
            };
            if value.len() > keyward_client::message::MAX_VALUE {
                return Err(CliError::with(
                    exit::INVALID,
                    format!(
                        "the value is too large: items hold at most {} bytes",
                        keyward_client::message::MAX_VALUE
                    ),
                ));
            }
            if !tty {
                confirm_replace(autostart, cli.no_prompt, &name, force)?;
            }
            let mut c = connect(&paths()?, autostart)?;
            c.set(&name, value)?;
            Ok(())
        }
        Command::List { pattern, json } => {
            let mut items = unlocked(autostart, cli.no_prompt, Client::list)?;
            if let Some(p) = pattern {
                let glob = glob::Pattern::new(&p).map_err(|e| {
                    CliError::with(exit::INVALID, format!("bad pattern {p:?}: {e}"))
                })?;
                items.retain(|i| glob.matches(&i.name));
            }
            if json {
                print_json(json!(items
                    .iter()
                    .map(|i| json!({"name": i.name, "created": i.created, "modified": i.modified}))
                    .collect::<Vec<_>>()));
            } else {
                for i in items {
                    println!("{}", i.name);
                }
            }
            Ok(())
        }
        Command::Rm { name } => unlocked(autostart, cli.no_prompt, |c| c.remove(&name)),
        Command::Lock => {
            // Never starts an agent; with none running there is nothing
            // unlocked, which is what the user asked for.
            let mut c = match connect(&paths()?, false) {
                Ok(c) => c,
                Err(e) if e.code == exit::NO_AGENT => {
                    eprintln!("No keyward agent is running: nothing is unlocked.");
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            c.lock()?;
            eprintln!("Locked.");
            Ok(())
        }
        Command::Status { json } => status(autostart, json),
        Command::Init {
            password,
            protector,
            emergency_kit,
            allow_weak_password,
            json,
        } => init(
            autostart,
            &password,
            &protector,
            emergency_kit.as_deref(),
            allow_weak_password,
            json,
        ),
        Command::RecoveryCode { action } => recovery_code(autostart, action),
        Command::Recover {
            grant: Some(grant),
            code_fd,
            new_password_fd,
            allow_weak_password,
            json,
        } => crate::organizer::recover_with_grant(
            autostart,
            &grant,
            code_fd,
            new_password_fd,
            allow_weak_password,
            json,
        ),
        Command::Recover {
            grant: None,
            code_fd,
            new_password_fd,
            allow_weak_password,
            json,
        } => recover(
            autostart,
            code_fd,
            new_password_fd,
            allow_weak_password,
            json,
        ),
        Command::EmergencyKit {
            password,
            out,
            force,
            format,
        } => emergency_kit(autostart, &password, out.as_deref(), format, force),
        Command::SecretKey {
            action: SecretKeyAction::Rotate { password, json },
        } => rotate(autostart, &password, json),
        Command::Protector { action } => protector(autostart, action),
        Command::Unlock {
            password,
            pin_fd,
            secret_key_fd,
            with,
            json,
        } => unlock(autostart, &password, pin_fd, secret_key_fd, with, json),
        Command::ChangePassword {
            password,
            new_password_fd,
            allow_weak_password,
        } => change_password(autostart, &password, new_password_fd, allow_weak_password),
        Command::Agent { action } => agent(action),
        Command::Backup { out, force, json } => {
            crate::everyday::backup(autostart, cli.no_prompt, out.as_deref(), force, json)
        }
        Command::Restore { file, older } => {
            crate::everyday::restore(autostart, cli.no_prompt, &file, older)
        }
        Command::Mv { old, new } => crate::everyday::rename(autostart, cli.no_prompt, &old, &new),
        Command::Edit { name, force } => {
            crate::everyday::edit(autostart, cli.no_prompt, &name, force)
        }
        Command::Run {
            env,
            env_file,
            command,
        } => crate::run::run(&env, &env_file, &command, &mut |op| {
            unlocked(autostart, cli.no_prompt, op)
        }),
        Command::Inject { out, force } => crate::inject::inject(out.as_deref(), force, &mut |op| {
            unlocked(autostart, cli.no_prompt, op)
        }),
        Command::Generate {
            length,
            words,
            symbols: _,
            no_symbols,
            set,
            force,
        } => crate::generate::generate(
            crate::generate::kind(length, words, no_symbols)?,
            set.as_deref(),
            force,
            &mut |op| unlocked(autostart, cli.no_prompt, op),
        ),
        Command::ClipClear { tool, after } => crate::clip::clear_later(tool, after),
        Command::Credential(args) => crate::credential::run(args, autostart, cli.no_prompt),
        Command::Export {
            out,
            force,
            format,
            password,
        } => crate::export::run(autostart, cli.no_prompt, &password, &out, force, format),
        Command::Import {
            format,
            dry_run,
            force,
            file,
        } => crate::import::run(
            autostart,
            cli.no_prompt,
            format,
            dry_run,
            force,
            file.as_deref(),
        ),
        Command::Organizer { action } => crate::organizer::run(autostart, cli.no_prompt, action),
        Command::Ssh { action } => crate::ssh::run(autostart, cli.no_prompt, action),
        Command::Join {
            path,
            kit,
            secret_key_fd,
            password,
            protector,
            card,
            json,
        } => crate::join::join(
            autostart,
            &path,
            kit.as_deref(),
            secret_key_fd,
            &password,
            &protector,
            &card,
            json,
        ),
        Command::Sync { action: None, json } => crate::sync::sync(autostart, cli.no_prompt, json),
        Command::Sync {
            action: Some(crate::sync::SyncAction::InitGit { repo }),
            ..
        } => crate::sync::init_git(repo.as_deref()),
        Command::MergeDriver { ours, theirs, .. } => {
            crate::sync::merge_driver(autostart, &ours, &theirs)
        }
        Command::Device { action } => crate::sync::device(autostart, cli.no_prompt, action),
        Command::Rekey { password, json } => crate::sync::rekey(autostart, &password, json),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "keyward",
                &mut std::io::stdout(),
            );
            if shell == clap_complete::Shell::Bash {
                print!("{BASH_ITEM_NAMES}");
            }
            Ok(())
        }
        Command::Manpage { dir } => manpage(dir.as_deref()),
    }
}

/// `keyward manpage [--dir DIR]`.
fn manpage(dir: Option<&Path>) -> Result<(), CliError> {
    let failed = |e: std::io::Error| CliError::msg(format!("cannot write the man pages: {e}"));
    match dir {
        None => {
            let text = manpages::main_page().map_err(failed)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&text)
                .and_then(|()| out.flush())
                .map_err(failed)
        }
        Some(dir) => {
            for path in manpages::write_all(dir).map_err(failed)? {
                println!("{}", path.display());
            }
            Ok(())
        }
    }
}

fn status(autostart: bool, json: bool) -> Result<(), CliError> {
    let paths = paths()?;
    let mut c = match connect(&paths, autostart) {
        Ok(c) => c,
        Err(e) => {
            if json && e.code == exit::NO_AGENT {
                print_json(json!({"state": "not-running", "error": e.message}));
            }
            return Err(e);
        }
    };
    let s = c.status()?;
    let mine = env!("CARGO_PKG_VERSION");
    if json {
        print_json(json!({
            "state": s.state.as_str(),
            "account_id": s.account_id,
            "seconds_to_auto_lock": s.idle_lock_in,
            "seconds_to_lifetime_end": s.lifetime_left,
            "protector": s.protector,
            "backoff_seconds": s.backoff_secs,
            "agent_version": s.agent_version,
            "agent_pid": s.pid,
            "keys_mlocked": s.keys_mlocked,
        }));
        return Ok(());
    }
    match s.state {
        AgentState::Uninitialized => println!("No account yet: run `keyward init`."),
        AgentState::Locked => println!(
            "Locked (account {}). Run `keyward unlock`.",
            s.account_id.as_deref().unwrap_or("?")
        ),
        AgentState::Unlocked => {
            println!(
                "Unlocked (account {}, {}).",
                s.account_id.as_deref().unwrap_or("?"),
                key_source(s.protector.as_deref().unwrap_or("?"))
            );
            match (s.idle_lock_in, s.lifetime_left) {
                (Some(i), Some(l)) if l < i => {
                    println!("Locks in {} (end of its lifetime).", output::duration(l))
                }
                (Some(i), _) => println!("Locks in {} unless used.", output::duration(i)),
                (None, Some(l)) => println!("Locks in {}.", output::duration(l)),
                (None, None) => println!("Stays unlocked until `keyward lock`."),
            }
            if !s.keys_mlocked {
                println!("Warning: the keys could not be locked in memory (raise RLIMIT_MEMLOCK).");
            }
        }
    }
    crate::organizer::status_line(&mut c);
    if s.backoff_secs > 0 {
        println!(
            "Too many failed attempts: the next unlock is accepted in {}.",
            output::duration(s.backoff_secs)
        );
    }
    if s.agent_version != mine {
        println!(
            "Note: the running agent is version {}, this keyward is {mine}; restart it with `keyward agent stop`.",
            s.agent_version
        );
    }
    Ok(())
}

fn init(
    autostart: bool,
    password: &PasswordSource,
    protector: &str,
    kit_path: Option<&Path>,
    allow_weak: bool,
    json: bool,
) -> Result<(), CliError> {
    let paths = paths()?;
    let mut c = connect(&paths, autostart)?;
    let s = c.status()?;
    if s.state != AgentState::Uninitialized {
        return Err(CliError::with(
            exit::INVALID,
            format!(
                "an account already exists ({}); keyward keeps one account per user",
                s.account_id.unwrap_or_default()
            ),
        ));
    }
    if password.fd().is_none() {
        eprintln!(
            "Choose your Master Password. It is never stored; keyward cannot recover it for you."
        );
        eprintln!("A few unrelated words make a strong one that is easy to remember.");
    }
    let pw = crate::choose::new_password(
        password.fd(),
        allow_weak,
        "Master Password",
        "Choose your keyward Master Password.",
    )?;
    let spinner = Spinner::start("Creating your account (deriving keys)…");
    let requested = protector;
    let resp = c.call(&Request::Init(InitRequest {
        password: pw,
        protector: protector.to_owned(),
    }));
    drop(spinner);
    let Response::Created {
        account_id,
        secret_key,
        protector,
        vault_path,
    } = resp?
    else {
        return Err(CliError::msg("unexpected answer from the agent"));
    };
    let sk = secret_key.expose_str().unwrap_or_default();
    let kit = crate::kit::Kit {
        account_id: &account_id,
        secret_key: sk,
        vault_path: &vault_path,
        created: &output::date(unix_now()),
    };
    // The Secret Key is shown first, whatever happens to the kit: the
    // account exists already.
    if json {
        print_json(json!({
            "account_id": account_id,
            "secret_key": sk,
            "protector": protector,
            "vault": vault_path,
        }));
        if let Some(path) = kit_path {
            write_kit_after_init(path, &kit, "printed on standard output")?;
        }
        return Ok(());
    }
    let kept = match protector.as_str() {
        "file" if requested == "auto" => format!(
            "a 0600 file in {}, because no OS keychain answered (a desktop session's \
             gnome-keyring or KWallet). A file protects it only against other users: add a \
             YubiKey (`keyward protector add yubikey`), or once a keychain runs, `keyward \
             protector add keychain` and then `keyward protector remove file`",
            paths.data_dir.display()
        ),
        "file" => format!(
            "a 0600 file in {} (protects it only against other users; for more, add a YubiKey: \
             `keyward protector add yubikey`)",
            paths.data_dir.display()
        ),
        "keychain" => "your OS keychain".to_owned(),
        _ => "nowhere: you will type it at every unlock".to_owned(),
    };
    println!();
    println!("Your keyward account {account_id} is ready, and unlocked.");
    println!();
    println!("    Secret Key:   {sk}");
    println!();
    println!("Write it down, or print your Emergency Kit now: `keyward emergency-kit --out");
    println!("kit.pdf` (it needs your Master Password), and keep it somewhere safe, apart");
    println!("from your devices.");
    println!();
    println!("On this device it is kept in {kept}.");
    println!("To unlock you need both: your Master Password and the Secret Key.");
    println!("Your secrets live in one file on this device: {vault_path}");
    println!("Back it up with `keyward backup` (to another disk or a cloud folder: it is");
    println!(
        "encrypted), or losing this device loses them. If you forget your Master Password, a recovery"
    );
    println!("code gets you back in: make one with `keyward recovery-code new`.");
    if let Some(p) = kit_path {
        write_kit_after_init(p, &kit, "shown above")?;
        println!(
            "Emergency Kit written to {}: print it, keep it safe, then delete the file.",
            p.display()
        );
    } else if input::have_tty() && input::confirm("Write your Emergency Kit (PDF) now?", true) {
        let default = format!("keyward-emergency-kit-{account_id}.pdf");
        write_kit_after_init(Path::new(&default), &kit, "shown above")?;
        println!("Print {default}, keep the paper safe, then delete the file.");
    }
    Ok(())
}

/// Writes the kit right after `init`, once the Secret Key is shown. A
/// failure is reported (exit code 1) as what it is: the account exists, its
/// Secret Key was shown (`where_shown`), only the kit is missing, and
/// `keyward emergency-kit` writes it later.
fn write_kit_after_init(
    path: &Path,
    kit: &crate::kit::Kit<'_>,
    where_shown: &str,
) -> Result<(), CliError> {
    write_kit(path, kit, KitFormat::Pdf, false).map_err(|e| {
        CliError::msg(format!(
            "your account {} was created and its Secret Key is {where_shown}, but the \
             Emergency Kit was not written: {}. Write the Secret Key down now, then write \
             the kit with `keyward emergency-kit --out kit.pdf`",
            kit.account_id, e.message
        ))
    })
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes the kit to `path`, readable only by you (it holds the Secret Key).
/// Never through a symbolic link, and never into an existing file unless
/// `force` (see [`crate::files`]).
fn write_kit(
    path: &Path,
    kit: &crate::kit::Kit<'_>,
    format: KitFormat,
    force: bool,
) -> Result<(), CliError> {
    let mut bytes = match format {
        KitFormat::Pdf => crate::kit::pdf(kit)?,
        KitFormat::Text => crate::kit::text(kit).into_bytes(),
    };
    let result = crate::files::write_new_private(path, &bytes, force);
    zeroize::Zeroize::zeroize(&mut bytes);
    result.map_err(|e| CliError::msg(format!("cannot write the Emergency Kit: {e}")))
}

fn recovery_code(autostart: bool, action: RecoveryAction) -> Result<(), CliError> {
    let mut c = connect(&paths()?, autostart)?;
    match action {
        RecoveryAction::New { password, json } => {
            let pw = password.get(
                "Master Password",
                "Confirm with your Master Password to make a recovery code.",
            )?;
            let spinner = Spinner::start("Checking your password…");
            let r = c.call(&Request::RecoveryCodeNew { password: pw });
            drop(spinner);
            let Response::RecoveryCode { id, code } = r? else {
                return Err(CliError::msg("unexpected answer from the agent"));
            };
            let code = code.expose_str().unwrap_or_default();
            if json {
                print_json(json!({"id": id, "code": code}));
                return Ok(());
            }
            println!();
            println!("    Recovery code:   {code}");
            println!("    Id:              {id}");
            println!();
            println!(
                "This is the only time keyward shows this code. With it, anyone can open your"
            );
            println!(
                "vault and set a new Master Password, so keep it offline: on paper, with your"
            );
            println!(
                "Emergency Kit or in a different safe place; never in this vault or next to it."
            );
            println!(
                "It stays valid after use; revoke it with `keyward recovery-code revoke {id}`."
            );
            Ok(())
        }
        RecoveryAction::List { json } => {
            let Response::RecoveryCodes(codes) = c.call(&Request::RecoveryCodeList)? else {
                return Err(CliError::msg("unexpected answer from the agent"));
            };
            if json {
                print_json(json!(
                    codes
                        .iter()
                        .map(
                            |r| json!({"id": r.id, "created": r.created, "last_used": r.last_used})
                        )
                        .collect::<Vec<_>>()
                ));
            } else if codes.is_empty() {
                println!("No recovery codes. Make one with `keyward recovery-code new`.");
            } else {
                println!("{:<18} {:<22} LAST USED", "ID", "CREATED");
                for r in codes {
                    println!(
                        "{:<18} {:<22} {}",
                        r.id,
                        output::date(r.created),
                        r.last_used.map_or("never".into(), output::date)
                    );
                }
            }
            Ok(())
        }
        RecoveryAction::Revoke { id, password } => {
            let pw = password.get(
                "Master Password",
                "Confirm with your Master Password to revoke a recovery code.",
            )?;
            let spinner = Spinner::start("Checking your password…");
            let r = c.call(&Request::RecoveryCodeRevoke {
                id: id.clone(),
                password: pw,
            });
            drop(spinner);
            r?;
            eprintln!("Recovery code {id} revoked.");
            Ok(())
        }
    }
}

fn recover(
    autostart: bool,
    code_fd: Option<u32>,
    new_fd: Option<u32>,
    allow_weak: bool,
    json: bool,
) -> Result<(), CliError> {
    let mut c = connect(&paths()?, autostart)?;
    // The code is checked before a new password is asked for: a typo, or
    // a code that does not open this vault, is said at once.
    let code = checked(
        &mut c,
        code_fd.is_none() && input::have_tty(),
        ErrorCode::InvalidInput,
        "; type it again.",
        "Checking the recovery code…",
        || match code_fd {
            Some(fd) => Ok(read_fd(fd, "recovery code")?),
            None => ask_hidden("Recovery code", "Type your keyward recovery code (RC1-…)."),
        },
        |code| Request::CheckRecoveryCode { code },
    )?;
    let new = crate::choose::new_password(
        new_fd,
        allow_weak,
        "New Master Password",
        "Choose a new keyward Master Password.",
    )?;
    let spinner = Spinner::start("Recovering (deriving new keys)…");
    let r = c.call(&Request::Recover {
        code,
        new_password: new,
    });
    drop(spinner);
    print_new_secret_key(
        r?,
        json,
        "Recovered. Your vault is unlocked, with a new Master Password and a new Secret Key.",
    )
}

fn rotate(autostart: bool, password: &PasswordSource, json: bool) -> Result<(), CliError> {
    let mut c = connect(&paths()?, autostart)?;
    let pw = password.get(
        "Master Password",
        "Confirm with your Master Password to issue a new Secret Key.",
    )?;
    let spinner = Spinner::start("Issuing a new Secret Key…");
    let r = c.call(&Request::SecretKeyRotate { password: pw });
    drop(spinner);
    print_new_secret_key(
        r?,
        json,
        "New Secret Key issued; the old one no longer works.",
    )
}

pub(crate) fn print_new_secret_key(
    r: Response,
    json: bool,
    headline: &str,
) -> Result<(), CliError> {
    let Response::NewSecretKey { secret_key, notes } = r else {
        return Err(CliError::msg("unexpected answer from the agent"));
    };
    let sk = secret_key.expose_str().unwrap_or_default();
    if json {
        print_json(json!({"secret_key": sk, "notes": notes}));
        return Ok(());
    }
    println!("{headline}");
    println!();
    println!("    New Secret Key:   {sk}");
    println!();
    for n in notes {
        println!("  - {n}");
    }
    println!();
    println!("Your old Emergency Kit is out of date: write a new one now with");
    println!("`keyward emergency-kit --out kit.pdf`, print it, and destroy the old one.");
    Ok(())
}

fn emergency_kit(
    autostart: bool,
    password: &PasswordSource,
    out: Option<&Path>,
    format: KitFormat,
    force: bool,
) -> Result<(), CliError> {
    // Said before the password is asked for (and checked again, race-free,
    // when the file is created).
    if let Some(path) = out
        && !force
        && std::fs::symlink_metadata(path).is_ok()
    {
        return Err(CliError::with(
            exit::INVALID,
            crate::files::CreateError::Exists(path.to_owned()).to_string(),
        ));
    }
    if format == KitFormat::Pdf && out.is_none() {
        return Err(CliError::with(
            exit::INVALID,
            "the PDF kit needs a file: `keyward emergency-kit --out kit.pdf` (or `--format text`)",
        ));
    }
    let mut c = connect(&paths()?, autostart)?;
    let pw = password.get(
        "Master Password",
        "Confirm with your Master Password to write the Emergency Kit.",
    )?;
    let spinner = Spinner::start("Checking your password…");
    let r = c.call(&Request::EmergencyKit { password: pw });
    drop(spinner);
    let Response::Kit {
        account_id,
        secret_key,
        vault_path,
    } = r?
    else {
        return Err(CliError::msg("unexpected answer from the agent"));
    };
    let kit = crate::kit::Kit {
        account_id: &account_id,
        secret_key: secret_key.expose_str().unwrap_or_default(),
        vault_path: &vault_path,
        created: &output::date(unix_now()),
    };
    match out {
        Some(path) => {
            write_kit(path, &kit, format, force)?;
            eprintln!(
                "Emergency Kit written to {} (readable only by you). Print it, keep the paper somewhere safe, then delete the file.",
                path.display()
            );
        }
        None => print!("{}", crate::kit::text(&kit)),
    }
    Ok(())
}

fn unlock(
    autostart: bool,
    password: &PasswordSource,
    pin_fd: Option<u32>,
    secret_key_fd: Option<u32>,
    with: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    let paths = paths()?;
    let mut c = connect(&paths, autostart)?;
    let s = c.status()?;
    match s.state {
        AgentState::Uninitialized => {
            return Err(CliError::with(
                exit::NO_ACCOUNT,
                "there is no keyward account yet: run `keyward init`",
            ));
        }
        AgentState::Unlocked => {
            if json {
                print_json(
                    json!({"state": "unlocked", "account_id": s.account_id, "protector": s.protector}),
                );
            } else {
                eprintln!("Already unlocked.");
            }
            return Ok(());
        }
        AgentState::Locked => {}
    }
    if s.backoff_secs > 0 {
        return Err(CliError::with(
            exit::WRONG_CREDENTIALS,
            format!(
                "too many failed attempts; the next unlock is accepted in {}",
                output::duration(s.backoff_secs)
            ),
        ));
    }
    let ask_password = || {
        password.get(
            "Master Password",
            &format!(
                "Unlock keyward account {}.",
                s.account_id.as_deref().unwrap_or("")
            ),
        )
    };
    let mut pw = ask_password()?;
    let pin = pin_fd.map(|fd| read_fd(fd, "PIN")).transpose()?;
    let mut secret_key = secret_key_fd
        .map(|fd| read_fd(fd, "Secret Key"))
        .transpose()?;
    let mut ui = Terminal::new(pin);
    // On a terminal a mistake is asked again, not fatal: three tries for
    // the password (as sudo and ssh-add give), the PIN again while the card
    // has tries left (without retyping the password), and only the Secret
    // Key after a typo in it.
    let terminal = input::have_tty();
    let mut password_tries = 1;
    loop {
        let req = Request::Unlock(UnlockRequest {
            password: pw.clone(),
            secret_key: secret_key.clone(),
            pin: ui.pin.clone(),
            with: with.clone(),
        });
        ui.working("Unlocking…");
        let r = c.call_with(&req, &mut ui);
        ui.done();
        match r {
            Ok(Response::Unlocked {
                account_id,
                protector,
                idle_lock_secs,
                notes,
                ..
            }) => {
                for n in &notes {
                    eprintln!("{n}");
                }
                if json {
                    print_json(
                        json!({"state": "unlocked", "account_id": account_id, "protector": protector, "notes": notes}),
                    );
                } else {
                    let when = if idle_lock_secs > 0 {
                        format!(
                            "; locks after {} without use",
                            output::duration(idle_lock_secs)
                        )
                    } else {
                        String::new()
                    };
                    eprintln!("Unlocked ({}){when}.", key_source(&protector));
                }
                return Ok(());
            }
            Err(ClientError::Agent(e))
                if e.code == ErrorCode::NeedSecretKey && secret_key.is_none() =>
            {
                if !input::have_tty() && secret_key_fd.is_none() {
                    return Err(CliError::with(
                        exit::PROTECTOR,
                        format!("{}: pass it with --secret-key-fd N", e.message),
                    ));
                }
                eprintln!("{}.", output::sentence(&e.message));
                secret_key = Some(input::ask_visible(
                    "Secret Key (from your Emergency Kit; it is shown as you type)",
                )?);
            }
            Err(ClientError::Agent(e))
                if e.code == ErrorCode::InvalidInput
                    && terminal
                    && secret_key_fd.is_none()
                    && e.message.contains("Secret Key has a typo") =>
            {
                eprintln!("{}.", output::sentence(&e.message));
                if let Some(typed) = &secret_key {
                    input::show_secret_key_typo(typed);
                }
                secret_key = Some(input::ask_visible("Secret Key (again)")?);
            }
            Err(ClientError::Agent(e))
                if e.code == ErrorCode::WrongCredentials
                    && terminal
                    && password.fd().is_none()
                    && password_tries < 3 =>
            {
                password_tries += 1;
                eprintln!("{}.", output::sentence(&e.message));
                pw = ask_password()?;
            }
            Err(ClientError::Agent(e))
                if e.code == ErrorCode::WrongPin
                    && terminal
                    && pin_fd.is_none()
                    && e.tries_left.is_some_and(|t| t > 0) =>
            {
                eprintln!("{}.", output::sentence(&e.message));
                ui.pin = None;
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

fn change_password(
    autostart: bool,
    password: &PasswordSource,
    new_fd: Option<u32>,
    allow_weak: bool,
) -> Result<(), CliError> {
    let mut c = connect(&paths()?, autostart)?;
    // The current password is checked before the new one is asked for
    // (three tries on a terminal, as sudo gives).
    let old = checked(
        &mut c,
        password.fd().is_none() && input::have_tty(),
        ErrorCode::WrongCredentials,
        ".",
        "Checking your password…",
        || {
            password.get(
                "Current Master Password",
                "Enter your current keyward Master Password.",
            )
        },
        |password| Request::CheckPassword { password },
    )?;
    let new = crate::choose::new_password(
        new_fd,
        allow_weak,
        "New Master Password",
        "Choose your new keyward Master Password.",
    )?;
    let spinner = Spinner::start("Changing the Master Password…");
    let r = c.call(&Request::ChangePassword { old, new });
    drop(spinner);
    r?;
    eprintln!("Master Password changed. Your Secret Key and recovery codes are unchanged.");
    Ok(())
}

fn agent(action: Option<AgentAction>) -> Result<(), CliError> {
    match action.unwrap_or(AgentAction::Run) {
        AgentAction::Run => {
            let program = agent_program();
            let err =
                std::os::unix::process::CommandExt::exec(&mut std::process::Command::new(&program));
            Err(CliError::with(
                exit::NO_AGENT,
                format!("cannot run {}: {err}", program.display()),
            ))
        }
        AgentAction::Stop => {
            let paths = paths()?;
            let mut c = match Client::connect(&paths.socket()) {
                Ok(c) => c,
                Err(ClientError::NotRunning { .. }) => {
                    eprintln!("No agent is running.");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            let pid = c.agent().pid;
            c.call(&Request::Shutdown)?;
            // Wait until it is gone, so a following command starts a fresh one.
            for _ in 0..200 {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists()
                    || !paths.socket().exists()
                {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            eprintln!("Agent stopped.");
            Ok(())
        }
    }
}

/// How the agent's note begins when the card already holds this vault's
/// key (PROTOCOL.md, `ProtectorAdd`).
pub(crate) const ALREADY_ENROLLED: &str = "already enrolled:";

/// `ProtectorAdd` of `kind` (the password given): the protector's id and
/// the agent's notes.
pub(crate) fn add_protector(
    c: &mut Client,
    kind: &str,
    card: &CardArgs,
    password: Secret,
) -> Result<(String, Vec<String>), CliError> {
    let req = keyward_client::message::ProtectorAddRequest {
        kind: kind.into(),
        serial: card.serial,
        slot: card.slot,
        touch: Some(card.touch.clone()),
        pin: card.pin_fd.map(|fd| read_fd(fd, "PIN")).transpose()?,
        management_key: card
            .management_key_fd
            .map(|fd| read_fd(fd, "management key"))
            .transpose()?,
        password,
    };
    let mut ui = Terminal::new(None);
    ui.working("Enrolling…");
    let r = c.call_with(&Request::ProtectorAdd(req), &mut ui);
    ui.done();
    let Response::ProtectorAdded { id, notes } = r? else {
        return Err(CliError::msg("unexpected answer from the agent"));
    };
    Ok((id, notes))
}

fn protector(autostart: bool, action: ProtectorAction) -> Result<(), CliError> {
    let mut c = connect(&paths()?, autostart)?;
    match action {
        ProtectorAction::Add {
            kind,
            card,
            password,
            json,
        } => {
            let kind = match kind {
                ProtectorKindArg::Yubikey => "yubikey",
                ProtectorKindArg::Keychain => "keychain",
                ProtectorKindArg::File => "file",
            };
            let pw = password.get(
                "Master Password",
                "Confirm with your Master Password to add a protector: it will keep your Secret Key.",
            )?;
            let (id, notes) = add_protector(&mut c, kind, &card, pw)?;
            if json {
                print_json(json!({"id": id, "notes": notes}));
                return Ok(());
            }
            for n in &notes {
                eprintln!("{n}");
            }
            if !notes.iter().any(|n| n.starts_with(ALREADY_ENROLLED)) {
                eprintln!("Enrolled {id}: this device can now unlock with it.");
            }
            Ok(())
        }
        ProtectorAction::List { json } => {
            let Response::Protectors(list) = c.call(&Request::ProtectorList)? else {
                return Err(CliError::msg("unexpected answer from the agent"));
            };
            if json {
                print_json(json!(
                    list.iter()
                        .map(|p| json!({
                            "id": p.id, "kind": p.kind, "details": p.details,
                            "added": p.added, "last_used": p.last_used, "stale": p.stale,
                        }))
                        .collect::<Vec<_>>()
                ));
            } else if list.is_empty() {
                println!(
                    "No protector keeps the Secret Key on this device: you type it at each unlock."
                );
            } else {
                for p in list {
                    println!(
                        "{}{}",
                        p.id,
                        if p.stale {
                            "  (STALE: re-enroll it)"
                        } else {
                            ""
                        }
                    );
                    println!("    {}", p.details);
                    println!(
                        "    added {}, last used {}",
                        output::date(p.added),
                        p.last_used.map_or("never".into(), output::date)
                    );
                }
            }
            Ok(())
        }
        ProtectorAction::Remove { id, password } => {
            let pw = password.get(
                "Master Password",
                "Confirm with your Master Password to remove a protector.",
            )?;
            let spinner = Spinner::start("Checking your password…");
            let r = c.call(&Request::ProtectorRemove { id, password: pw });
            drop(spinner);
            let Response::ProtectorAdded { id, notes } = r? else {
                return Err(CliError::msg("unexpected answer from the agent"));
            };
            for n in &notes {
                eprintln!("{n}");
            }
            eprintln!("Removed {id}.");
            Ok(())
        }
    }
}
