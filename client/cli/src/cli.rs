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
use std::io::{Read, Write};

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

    fn get(&self, prompt: &str, description: &str) -> Result<Secret, CliError> {
        match self.fd() {
            Some(fd) => Ok(read_fd(fd, "password")?),
            None => Ok(ask_hidden(prompt, description)?),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create your account: a Master Password, and a Secret Key kept on this device.
    Init {
        #[command(flatten)]
        password: PasswordSource,
        /// Where this device keeps the Secret Key: auto (the best available), file, none (you type it).
        #[arg(long, default_value = "auto", value_name = "KIND")]
        protector: String,
        /// Print `{"account_id", "secret_key"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Unlock the agent with your Master Password.
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
    Set {
        /// The item's name, e.g. github/token.
        name: String,
    },
    /// Print a secret's value to standard output (and nothing else).
    Get {
        /// The item's name.
        name: String,
    },
    /// List the items' names.
    List {
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
    },
    /// Run the agent in the foreground (what a service manager calls), or stop it.
    Agent {
        #[command(subcommand)]
        action: Option<AgentAction>,
    },
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Manpage,
}

#[derive(Subcommand, Debug)]
pub enum AgentAction {
    /// Run in the foreground (the default).
    Run,
    /// Lock and stop the running agent.
    Stop,
}

fn paths() -> Result<Paths, CliError> {
    Paths::from_env().map_err(|e| CliError::msg(e.to_string()))
}

/// Shows notices and asks for PINs on the terminal (or pinentry).
struct Terminal {
    pin: Option<Secret>,
}

impl Interaction for Terminal {
    fn prompt(&mut self, kind: PromptKind, message: &str) -> Option<Secret> {
        if kind == PromptKind::Pin
            && let Some(p) = self.pin.take()
        {
            return Some(p);
        }
        match kind {
            PromptKind::Confirm => Some(Secret::from(if input::confirm(message, false) {
                "y"
            } else {
                "n"
            })),
            _ => ask_hidden(message, message).ok(),
        }
    }

    fn notice(&mut self, message: &str) {
        eprintln!("{message}");
    }
}

fn print_json(v: serde_json::Value) {
    println!("{v}");
}

/// Runs a command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let autostart = !cli.no_autostart;
    match cli.command {
        Command::Get { name } => {
            let mut c = connect(&paths()?, autostart)?;
            let v = c.get(&name)?;
            let mut out = std::io::stdout().lock();
            out.write_all(v.expose())
                .and_then(|()| out.flush())
                .map_err(|e| CliError::msg(format!("cannot write to standard output: {e}")))?;
            Ok(())
        }
        Command::Set { name } => {
            let value = if input::stdin_is_tty() {
                ask_new(
                    &format!("Value for {name}"),
                    &format!("The secret to store as {name}."),
                )?
            } else {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf).map_err(|e| {
                    CliError::msg(format!("cannot read the value from standard input: {e}"))
                })?;
                Secret::new(buf)
            };
            if value.len() > keyward_client::message::MAX_VALUE {
                return Err(CliError::with(
                    exit::INVALID,
                    format!(
                        "the value is {} bytes; items hold at most {} bytes",
                        value.len(),
                        keyward_client::message::MAX_VALUE
                    ),
                ));
            }
            let mut c = connect(&paths()?, autostart)?;
            c.set(&name, value)?;
            Ok(())
        }
        Command::List { json } => {
            let mut c = connect(&paths()?, autostart)?;
            let items = c.list()?;
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
        Command::Rm { name } => {
            let mut c = connect(&paths()?, autostart)?;
            c.remove(&name)?;
            Ok(())
        }
        Command::Lock => {
            let mut c = connect(&paths()?, false)?;
            c.lock()?;
            eprintln!("Locked.");
            Ok(())
        }
        Command::Status { json } => status(autostart, json),
        Command::Init {
            password,
            protector,
            json,
        } => init(autostart, &password, &protector, json),
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
        } => change_password(autostart, &password, new_password_fd),
        Command::Agent { action } => agent(action),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "keyward",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Manpage => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(|e| CliError::msg(e.to_string())),
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
                "Unlocked (account {}, Secret Key from {}).",
                s.account_id.as_deref().unwrap_or("?"),
                s.protector.as_deref().unwrap_or("?")
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

fn strength_hint(pw: &Secret) {
    let Some(text) = pw.expose_str() else { return };
    let entropy = zxcvbn::zxcvbn(text, &[]);
    let score = u8::from(entropy.score());
    let verdict = ["very weak", "weak", "fair", "good", "strong"][usize::from(score.min(4))];
    eprintln!("Password strength: {verdict}.");
    if let Some(f) = entropy.feedback() {
        if let Some(w) = f.warning() {
            eprintln!("  {w}");
        }
        for s in f.suggestions() {
            eprintln!("  {s}");
        }
    }
}

fn init(
    autostart: bool,
    password: &PasswordSource,
    protector: &str,
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
    let pw = match password.fd() {
        Some(fd) => read_fd(fd, "password")?,
        None => {
            eprintln!(
                "Choose your Master Password. It is never stored; keyward cannot recover it for you."
            );
            eprintln!("A few unrelated words make a strong one that is easy to remember.");
            loop {
                let pw = ask_new("Master Password", "Choose your keyward Master Password.")?;
                strength_hint(&pw);
                if input::have_tty() && !input::confirm("Use this password?", true) {
                    continue;
                }
                break pw;
            }
        }
    };
    let spinner = Spinner::start("Creating your account (deriving keys)…");
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
    if json {
        print_json(json!({
            "account_id": account_id,
            "secret_key": sk,
            "protector": protector,
            "vault": vault_path,
        }));
        return Ok(());
    }
    let kept = match protector.as_str() {
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
    println!("This is the only time keyward shows your Secret Key. Write it down, or print");
    println!("your Emergency Kit now: `keyward emergency-kit --out kit.pdf`, and keep it");
    println!("somewhere safe, apart from your devices.");
    println!();
    println!("On this device it is kept in {kept}.");
    println!("To unlock you need both: your Master Password and the Secret Key.");
    println!("If you lose both this device and the Secret Key, only a recovery code gets you");
    println!("back in: make one with `keyward recovery-code new`.");
    println!("Vault: {vault_path}");
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
    let pw = password.get(
        "Master Password",
        &format!(
            "Unlock keyward account {}.",
            s.account_id.as_deref().unwrap_or("")
        ),
    )?;
    let pin = pin_fd.map(|fd| read_fd(fd, "PIN")).transpose()?;
    let mut secret_key = secret_key_fd
        .map(|fd| read_fd(fd, "Secret Key"))
        .transpose()?;
    let mut ui = Terminal { pin };
    loop {
        let req = Request::Unlock(UnlockRequest {
            password: pw.clone(),
            secret_key: secret_key.clone(),
            pin: ui.pin.clone(),
            with: with.clone(),
        });
        let spinner = Spinner::start("Unlocking…");
        let r = c.call_with(&req, &mut ui);
        drop(spinner);
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
                    eprintln!("Unlocked (Secret Key from {protector}){when}.");
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
                eprintln!("{}.", e.message);
                secret_key = Some(ask_hidden(
                    "Secret Key",
                    "Type the Secret Key from your Emergency Kit.",
                )?);
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
) -> Result<(), CliError> {
    let mut c = connect(&paths()?, autostart)?;
    let old = password.get(
        "Current Master Password",
        "Enter your current keyward Master Password.",
    )?;
    let new = match new_fd {
        Some(fd) => read_fd(fd, "new password")?,
        None => {
            let pw = ask_new(
                "New Master Password",
                "Choose your new keyward Master Password.",
            )?;
            strength_hint(&pw);
            pw
        }
    };
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
