//! The manual pages: `keyward(1)`, one page per command and nested command
//! (`keyward-init(1)`, …, `keyward-recovery-code-new(1)`), the agent's
//! `keyward-agent(1)` (which is also the page of `keyward agent`), and the
//! configuration file's `keyward.toml(5)`.
//!
//! Options, synopsis and descriptions come from the clap definitions in
//! [`crate::cli`] (through clap_mangen), so they cannot drift from `--help`;
//! this module adds what clap does not know: EXAMPLES (the same text as the
//! `after_help` of the main commands), ENVIRONMENT, FILES, EXIT STATUS and
//! SEE ALSO. `keyward manpage --dir DIR` writes every page; the Debian
//! package and `install.sh` call it, so the pages are made from the binary
//! they ship with.

use crate::cli::Cli;
use crate::output::EXIT_CODES_HELP;
use clap::CommandFactory;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `keyward init --help` examples.
pub const INIT_EXAMPLES: &str = "\
Examples:
  keyward init                                  # asks for a new Master Password, twice
  keyward init --emergency-kit kit.pdf          # and writes the Emergency Kit to print
  keyward init --password-fd 3 --json 3<pwfile  # from a script";

/// `keyward unlock --help` examples.
pub const UNLOCK_EXAMPLES: &str = "\
Examples:
  keyward unlock                                # Master Password; the Secret Key comes from this device
  keyward unlock --with yubikey --pin-fd 4 4<pinfile
  keyward unlock --password-fd 3 3<pwfile       # from a script";

/// `keyward get --help` examples.
pub const GET_EXAMPLES: &str = "\
Examples:
  keyward get github/token
  GITHUB_TOKEN=$(keyward get github/token) some-program";

/// `keyward set --help` examples.
pub const SET_EXAMPLES: &str = "\
Examples:
  keyward set github/token                      # asks for the value (hidden, twice)
  printf %s \"$TOKEN\" | keyward set github/token   # from a pipe";

/// `keyward recover --help` examples.
pub const RECOVER_EXAMPLES: &str = "\
Examples:
  keyward recover                               # asks for a recovery code, then a new Master Password
  keyward recover --code-fd 3 --new-password-fd 4 --json 3<code 4<newpw
  keyward recover --grant keyward-grant-ABCDEF.json   # with your organizer's grant and its code (GC1-…)";

/// `keyward emergency-kit --help` examples.
pub const EMERGENCY_KIT_EXAMPLES: &str = "\
Examples:
  keyward emergency-kit --out kit.pdf           # print it, keep it safe, delete the file
  keyward emergency-kit --format text           # the same, as text on standard output";

/// Examples of the pages whose command shows none in `--help`.
const MORE_EXAMPLES: &[(&str, &str)] = &[
    (
        "keyward",
        "keyward init\nkeyward set github/token\nkeyward get github/token\nkeyward lock",
    ),
    ("keyward-lock", "keyward lock"),
    (
        "keyward-status",
        "keyward status\nkeyward status --json      # for scripts: state, seconds to the idle lock …",
    ),
    ("keyward-list", "keyward list\nkeyward list --json"),
    ("keyward-rm", "keyward rm github/token"),
    (
        "keyward-change-password",
        "keyward change-password\nkeyward change-password --password-fd 3 --new-password-fd 4 3<old 4<new",
    ),
    (
        "keyward-recovery-code",
        "keyward recovery-code new\nkeyward recovery-code list\nkeyward recovery-code revoke 3F9A",
    ),
    (
        "keyward-recovery-code-new",
        "keyward recovery-code new                 # shown once: keep it offline\nkeyward recovery-code new --json --password-fd 3 3<pwfile",
    ),
    ("keyward-recovery-code-list", "keyward recovery-code list"),
    (
        "keyward-recovery-code-revoke",
        "keyward recovery-code revoke 3F9A          # an id (or unique prefix) from the list",
    ),
    (
        "keyward-protector",
        "keyward protector add yubikey\nkeyward protector list\nkeyward protector remove file",
    ),
    (
        "keyward-protector-add",
        "keyward protector add yubikey             # asks for the PIN\nkeyward protector add keychain\nkeyward protector add yubikey --serial 12345678 --slot 82 --touch cached --pin-fd 3 3<pin",
    ),
    (
        "keyward-protector-list",
        "keyward protector list\nkeyward protector list --json",
    ),
    (
        "keyward-protector-remove",
        "keyward protector remove file\nkeyward protector remove yubikey:12345678:82",
    ),
    ("keyward-secret-key", "keyward secret-key rotate"),
    (
        "keyward-secret-key-rotate",
        "keyward secret-key rotate                 # then write a new Emergency Kit",
    ),
    (
        "keyward-agent",
        "keyward agent                             # the agent in the foreground\nkeyward agent stop\nsystemctl --user enable --now keyward-agent.socket",
    ),
    ("keyward-agent-run", "keyward agent run"),
    ("keyward-agent-stop", "keyward agent stop"),
    (
        "keyward-sync",
        "keyward sync                       # merge what the other devices wrote, now\nkeyward sync --json\nkeyward sync init-git --repo ~/vault-repo",
    ),
    (
        "keyward-sync-init-git",
        "keyward sync init-git --repo ~/vault-repo\ngit -C ~/vault-repo add .gitattributes && git -C ~/vault-repo commit -m 'merge vault files with keyward'",
    ),
    (
        "keyward-device",
        "keyward device list\nkeyward device rename this laptop\nkeyward device remove phone",
    ),
    (
        "keyward-device-list",
        "keyward device list\nkeyward device list --json",
    ),
    (
        "keyward-device-rename",
        "keyward device rename this laptop\nkeyward device rename 3f9a phone",
    ),
    ("keyward-device-remove", "keyward device remove phone"),
    (
        "keyward-rekey",
        "keyward rekey\nkeyward rekey --password-fd 3 --json 3<pwfile\nkeyward recovery-code new      # the rekey revoked the old codes",
    ),
    (
        "keyward-merge-driver",
        "keyward merge-driver %O %A %B     # as git runs it, once `keyward sync init-git` registered it",
    ),
    (
        "keyward-organizer",
        "keyward organizer create                  # as the organizer: prints the recipient\nkeyward organizer add kwo1-…              # as a member: confirm the fingerprint\nkeyward organizer recover member.kwv      # as the organizer: a grant and its code\nkeyward recover --grant keyward-grant-ABCDEF.json   # as the member",
    ),
    (
        "keyward-organizer-create",
        "keyward organizer create --name \"Anna\"\nkeyward organizer create --json\nkeyward organizer create --yubikey          # the key made on the card, never leaving it\nkeyward organizer create --yubikey --serial 12345678 --slot 83 --pin-fd 3 --json 3<pinfile",
    ),
    (
        "keyward-organizer-show",
        "keyward organizer show\nkeyward organizer show --json",
    ),
    (
        "keyward-organizer-add",
        "keyward organizer add kwo1-… --name Anna   # shows the fingerprint, asks, then the password\nkeyward organizer add kwo1-… --yes --password-fd 3 3<pwfile",
    ),
    (
        "keyward-organizer-list",
        "keyward organizer list\nkeyward organizer list --json",
    ),
    (
        "keyward-organizer-remove",
        "keyward organizer remove 0a1b-2c3d-4e5f-6a7b\nkeyward organizer remove Anna",
    ),
    (
        "keyward-organizer-recover",
        "keyward organizer recover /media/usb/vault-ABCDEF.kwv   # writes keyward-grant-ABCDEF.json\nkeyward organizer recover member.kwv --out grant.json --expires-hours 24 --json\nkeyward organizer recover member.kwv --pin-fd 3 --json 3<pinfile   # organizer key on a YubiKey",
    ),
    (
        "keyward-completions",
        "keyward completions bash > ~/.local/share/bash-completion/completions/keyward",
    ),
    (
        "keyward-manpage",
        "keyward manpage | man -l -\nkeyward manpage --dir ~/.local/share/man/man1",
    ),
];

/// Environment variables every `keyward` command reads.
const CLI_ENVIRONMENT: &[(&str, &str)] = &[
    (
        "KEYWARD_HOME",
        "Keep everything under this one directory: config/, data/, state/ and run/ (the socket) \
         instead of the XDG directories below. Only an absolute path counts, as for the XDG variables.",
    ),
    (
        "XDG_CONFIG_HOME",
        "The configuration directory is $XDG_CONFIG_HOME/keyward (default ~/.config/keyward).",
    ),
    (
        "XDG_DATA_HOME",
        "The data directory (the vault) is $XDG_DATA_HOME/keyward (default ~/.local/share/keyward).",
    ),
    (
        "XDG_STATE_HOME",
        "The state directory (attempts, log) is $XDG_STATE_HOME/keyward (default ~/.local/state/keyward).",
    ),
    (
        "XDG_RUNTIME_DIR",
        "The agent's socket is $XDG_RUNTIME_DIR/keyward/agent.sock. Without it, \
         $TMPDIR/keyward-UID (/tmp without TMPDIR) is used, or, if another user made that \
         first, a private directory the agent names in the runtime pointer (FILES).",
    ),
    ("HOME", "The base of the default directories above."),
    (
        "TMPDIR",
        "Where the runtime directory goes without XDG_RUNTIME_DIR (default /tmp).",
    ),
    (
        "KEYWARD_AGENT",
        "The agent program a command starts when none is running (default: keyward-agent \
         beside the keyward executable, else on PATH).",
    ),
    (
        "KEYWARD_PINENTRY",
        "The pinentry program used to ask for a password or PIN when there is no terminal; \
         \"none\" never uses one. Default: pinentry on PATH.",
    ),
    (
        "PASSWORD_STORE_DIR",
        "The pass store that import --format pass reads when no directory is given (default \
         ~/.password-store). The pass and gpg it runs read their own variables (GNUPGHOME …).",
    ),
    (
        "WAYLAND_DISPLAY, DISPLAY",
        "Where get --clip copies: wl-copy on Wayland (WAYLAND_DISPLAY), else xclip on X11 \
         (DISPLAY); without either, --clip is refused.",
    ),
    (
        "VISUAL, EDITOR",
        "The editor keyward edit runs (VISUAL first, then EDITOR; default vi).",
    ),
    (
        "KEYWARD_CLIP_CLEAR_SECONDS",
        "How long get --clip leaves the value on the clipboard before clearing it (if it still \
         holds it). Default 45.",
    ),
    (
        "SSH_AUTH_SOCK",
        "Where ssh and git look for an SSH agent. keyward ssh env prints the commands that set \
         it to keyward's SSH socket (ssh.sock next to the agent's socket); keyward ssh generate \
         and import say so when it names another.",
    ),
];

/// Environment variables only the agent reads (beyond the directories).
const AGENT_ENVIRONMENT: &[(&str, &str)] = &[
    (
        "KEYWARD_LOG",
        "The log level: error, warn, info (the default), debug or trace. The log goes to standard \
         error (the journal under systemd; agent.log when keyward started the agent).",
    ),
    (
        "KEYWARD_ORGANIZER_POLICY_DIR",
        "The machine policy's organizers enrolled at init (default /etc/keyward/organizers.d): \
         *.pub files owned by root and writable by no one else, each holding a recipient \
         (kwo1-…) and optional name = … and required = true lines. Meant for tests; files \
         that are not root's are skipped and the log says so.",
    ),
    (
        "LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES",
        "Socket activation (sd_listen_fds(3)): the socket keyward-agent.socket passes.",
    ),
    (
        "NOTIFY_SOCKET",
        "Where to say \"ready\" and the agent's state (Type=notify services).",
    ),
    (
        "XDG_SESSION_ID",
        "The login session whose screen lock locks the agent (logind).",
    ),
    (
        "DBUS_SYSTEM_BUS_ADDRESS",
        "The system bus, for logind's suspend and lock signals.",
    ),
    (
        "DBUS_SESSION_BUS_ADDRESS",
        "The session bus, for the keychain protector (Secret Service).",
    ),
    (
        "SSH_ASKPASS",
        "The program the SSH agent runs to ask you (to approve a signature, for the Master \
         Password when a signature finds the agent locked, for a security key's PIN), unless \
         keyward.toml's [ssh] askpass names one. It is run only with a display (DISPLAY or \
         WAYLAND_DISPLAY in the agent's environment) or with SSH_ASKPASS_REQUIRE=force.",
    ),
    (
        "SSH_ASKPASS_REQUIRE",
        "force: run the askpass program even without a display.",
    ),
    (
        "SSH_SK_HELPER",
        "The helper the SSH agent runs for security-key (sk-…) signatures (default \
         /usr/lib/openssh/ssh-sk-helper).",
    ),
    (
        "KEYWARD_SYNC_POLL_MS",
        "How often, in milliseconds, the unlocked agent looks at the vault's folder for what \
         other devices wrote (default 1000).",
    ),
    (
        "PCSCLITE_CSOCK_NAME",
        "pcscd's socket, for the yubikey protector (read by libpcsclite).",
    ),
];

/// The FILES section, shared by every page (the paths are the defaults:
/// see ENVIRONMENT for what moves them).
const FILES: &[(&str, &str)] = &[
    (
        "~/.config/keyward/config.toml",
        "The agent's settings; optional. See keyward.toml(5).",
    ),
    (
        "~/.local/share/keyward/vault-ID.kwv",
        "The vault of account ID (mode 0600, in a 0700 directory): back it up; it is useless \
         without your Master Password and Secret Key.",
    ),
    (
        "~/.local/state/keyward/secret-key-ID",
        "The Secret Key, for the file protector (mode 0600): in the state directory, which \
         belongs to this device, never beside the vault (whose directory you may back up or \
         sync); an older keyward's ~/.local/share/keyward/secret-key-ID is moved here when the \
         agent starts.",
    ),
    (
        "~/.local/state/keyward/attempts",
        "Failed unlocks and recovery codes, for the back-off; survives restarts.",
    ),
    (
        "~/.local/state/keyward/generation-ID, kdf-ID, revoked-ID",
        "What this device remembers of the vault, to refuse an older copy put back in its place.",
    ),
    (
        "~/.local/state/keyward/agent.log",
        "The log of an agent that keyward started (mode 0600).",
    ),
    (
        "~/.local/state/keyward/runtime-dir",
        "The runtime pointer: the private runtime directory the agent made when the default one \
         in the shared temporary directory belonged to someone else.",
    ),
    (
        "$XDG_RUNTIME_DIR/keyward/agent.sock",
        "The agent's socket (mode 0600, in a 0700 directory).",
    ),
    (
        "$XDG_RUNTIME_DIR/keyward/ssh.sock",
        "The SSH agent socket, for ssh and git (SSH_AUTH_SOCK; see keyward ssh env).",
    ),
    (
        "$XDG_RUNTIME_DIR/keyward/agent.lock",
        "Held by the running agent (one agent per user and home); holds its pid.",
    ),
    (
        "/usr/lib/systemd/user/keyward-agent.socket, keyward-agent.service",
        "systemd user units: systemctl --user enable --now keyward-agent.socket.",
    ),
];

/// One manual page.
pub struct Page {
    /// The file name, e.g. `keyward-init.1`.
    pub file: String,
    /// Its roff text.
    pub text: Vec<u8>,
}

/// Escapes text for a roff text line.
fn esc(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// A section of tagged paragraphs.
fn tagged(out: &mut String, heading: &str, items: &[(&str, &str)]) {
    out.push_str(&format!(".SH {heading}\n"));
    for (tag, text) in items {
        out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", esc(tag), esc(text)));
    }
}

/// A section of literal lines (examples), one per line.
fn literal(out: &mut String, heading: &str, lines: &str) {
    out.push_str(&format!(".SH {heading}\n.nf\n.RS 4\n"));
    for line in lines.lines() {
        out.push_str(&esc(line.trim_start()));
        out.push('\n');
    }
    out.push_str(".RE\n.fi\n");
}

/// The EXIT STATUS section, from the same table as `keyward --help`.
fn exit_status(out: &mut String, intro: &str) {
    out.push_str(".SH \"EXIT STATUS\"\n");
    out.push_str(intro);
    for line in EXIT_CODES_HELP.lines().skip(1) {
        let line = line.trim();
        if let Some((code, what)) = line.split_once(char::is_whitespace) {
            out.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", esc(what.trim())));
        }
    }
}

/// The examples of page `name`: the command's `after_help` (less its
/// "Examples:" line), else the table above.
fn examples(name: &str, cmd: &clap::Command) -> String {
    if let Some(help) = cmd.get_after_help() {
        let help = help.to_string();
        if let Some(rest) = help.strip_prefix("Examples:\n") {
            return rest.to_owned();
        }
    }
    MORE_EXAMPLES
        .iter()
        .find(|(page, _)| *page == name)
        .map(|(_, e)| (*e).to_owned())
        .unwrap_or_default()
}

/// The page of one (built) command.
fn command_page(cmd: &clap::Command, parent: Option<&str>) -> io::Result<Page> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let man = clap_mangen::Man::new(cmd.clone()).manual("keyward manual");
    let mut text = Vec::new();
    man.render_title(&mut text)?;
    if name == "keyward-agent" {
        text.extend_from_slice(
            b".SH NAME\nkeyward\\-agent \\- the keyward agent; \\fBkeyward agent\\fR runs it in the \
              foreground or stops it\n",
        );
    } else {
        man.render_name_section(&mut text)?;
    }
    man.render_synopsis_section(&mut text)?;
    man.render_description_section(&mut text)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut text)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut text)?;
    }
    let mut more = String::new();
    let is_agent = name == "keyward-agent";
    if is_agent {
        more.push_str(AGENT_PAGE);
    }
    literal(&mut more, "EXAMPLES", &examples(&name, cmd));
    let mut env: Vec<(&str, &str)> = CLI_ENVIRONMENT.to_vec();
    if is_agent {
        env.extend_from_slice(AGENT_ENVIRONMENT);
    }
    tagged(&mut more, "ENVIRONMENT", &env);
    more.push_str(
        ".SH FILES\nThe default paths; KEYWARD_HOME and the XDG variables move them (ENVIRONMENT).\n",
    );
    for (tag, text) in FILES {
        more.push_str(&format!(".TP\n\\fI{}\\fR\n{}\n", esc(tag), esc(text)));
    }
    exit_status(
        &mut more,
        if is_agent {
            "keyward\\-agent exits 0 when stopped (SIGTERM, SIGINT, \\fBkeyward agent stop\\fR), \
             1 when it cannot start (the reason is logged and printed), 2 on a bad argument. \
             \\fBkeyward agent\\fR:\n"
        } else {
            ""
        },
    );
    let mut see_also: Vec<String> = Vec::new();
    for page in [parent.unwrap_or("keyward"), "keyward", "keyward-agent"] {
        let page = format!("{page}(1)");
        if page != format!("{name}(1)") && !see_also.contains(&page) {
            see_also.push(page);
        }
    }
    see_also.push("keyward.toml(5)".to_owned());
    if is_agent {
        see_also.push("systemd.socket(5)".to_owned());
    }
    more.push_str(&format!(
        ".SH \"SEE ALSO\"\n{}\n",
        esc(&see_also.join(", "))
    ));
    text.extend_from_slice(more.as_bytes());
    if cmd.get_version().is_some() {
        man.render_version_section(&mut text)?;
    }
    Ok(Page {
        file: format!("{name}.1"),
        text,
    })
}

/// What `keyward-agent(1)` says of the program itself, beyond `keyward agent`.
const AGENT_PAGE: &str = r#".SH "THE KEYWARD-AGENT PROGRAM"
.nf
\fBkeyward\-agent\fR [\fB\-\-detach\fR]
.fi
.PP
keyward\-agent holds one user's unlocked keys in locked memory and serves
local programs over a private socket (see the keyward\-client library and
PROTOCOL.md). It is started by the first keyward command that needs it (in
its own session, logging to agent.log), by systemd through
keyward\-agent.socket, or in the foreground by \fBkeyward agent\fR. At
start it makes itself not dumpable, refuses core files, takes the instance
lock and creates its directories 0700; it checks the peer uid of every
connection. It locks after the idle time and lifetime set in
keyward.toml(5), when the machine suspends and when the session's screen
locks.
.TP
\fB\-\-detach\fR
Start a new session (what keyward does when it starts the agent).
.TP
\fB\-h\fR, \fB\-\-help\fR
Print a short help.
.TP
\fB\-V\fR, \fB\-\-version\fR
Print the version.
"#;

/// `keyward.toml(5)`: every key of the agent's configuration, its default
/// and its range.
const CONFIG_PAGE: &str = r#".TH KEYWARD.TOML 5 "" "keyward" "keyward manual"
.SH NAME
keyward.toml \- the keyward agent's configuration file
.SH SYNOPSIS
\fI~/.config/keyward/config.toml\fR
.SH DESCRIPTION
The agent reads \fIconfig.toml\fR in the configuration directory
(\fI$KEYWARD_HOME/config\fR, else \fI$XDG_CONFIG_HOME/keyward\fR, else
\fI~/.config/keyward\fR) when it starts; restart it to apply a change
(\fBkeyward agent stop\fR; the next command starts it again). The file is
optional, and so is every key: a missing key keeps its default. The file is
TOML; a key that is not listed here, a value of the wrong type or out of
range is an error, and the agent does not start.
.SH KEYS
.TP
\fBidle_lock_seconds\fR = \fIseconds\fR
Lock after this long without use. Default 900 (15 minutes); 0 never
locks for idleness. Any non\-negative integer.
.TP
\fBlifetime_seconds\fR = \fIseconds\fR
Lock this long after unlocking, used or not. Default 43200 (12 hours); 0
means no limit. Both this and the idle lock count the time the machine
spends suspended (and suspending locks anyway).
.TP
\fBmax_connections\fR = \fIcount\fR
Clients served at once; more are refused with "busy". Default 1024; at
least 1.
.TP
\fBclient_idle_timeout_seconds\fR = \fIseconds\fR
How long a connection may stay silent between two requests before the
agent closes it. Default 300. Use a positive value (0 closes every
connection at once).
.TP
\fBrequest_timeout_seconds\fR = \fIseconds\fR
Once a request has started, the rest of it must arrive within this time (a
client trickling bytes is cut off). Default 10. Use a positive value.
.TP
\fBprompt_timeout_seconds\fR = \fIseconds\fR
How long the agent waits for the user to answer a prompt it sent to a
client (a YubiKey PIN, a confirmation). Default 120. Use a positive value.
.TP
\fBprotectors\fR = [\fIkind\fR, ...]
The order in which unlock tries this device's Secret Key protectors.
Default ["yubikey", "keychain", "file"]; each element is one of
"yubikey", "keychain", "file". A kind left out is not tried (unless asked
for with \fBkeyward unlock \-\-with\fR).
.TP
\fBpinentry\fR = "\fIpath\fR"
A pinentry program (absolute path, e.g. /usr/bin/pinentry\-gnome3) the
agent runs to ask for the Master Password when a client's request (get,
list, set, rm) finds it locked; the request then goes on. Default ""
(never: the client is told the agent is locked, and \fBkeyward\fR on a
terminal asks itself). The pinentry needs a display the agent can reach.
.TP
\fBpinentry_timeout_seconds\fR = \fIseconds\fR
How long that pinentry waits for the user before the request is answered
"locked". Default 45; 1 to 55 (two prompts, password and PIN, stay within
a client's 120 s timeout).
.TP
\fBaccount\fR = "\fIID\fR"
Which account to use when the data directory holds several vaults (the
6\-symbol account ID of \fIvault\-ID.kwv\fR). Default: none, which is
right when there is one vault; with several and no \fBaccount\fR the
agent refuses to guess.
.SS "[ssh] table"
.TP
\fBssh\fR
The \fB[ssh]\fR table: the SSH agent, which offers the vault's SSH keys
(\fBkeyward ssh\fR) to ssh, git and ssh\-add on a socket of its own.
Optional, as is every key in it; by default the SSH agent runs.
.TP
\fBenabled\fR = \fItrue\fR|\fIfalse\fR
Serve the SSH agent socket. Default true.
.TP
\fBsocket\fR = "\fIpath\fR"
The SSH agent socket (an absolute path). Default "": \fIssh.sock\fR next to
the agent's socket, which \fBkeyward ssh env\fR prints the commands to use.
.TP
\fBaskpass\fR = "\fIpath\fR"
The program that asks you to approve a signature (\fBkeyward ssh
approve\fR, \fBssh\-add \-c\fR), and for the Master Password when a
signature finds the agent locked. Default "": $SSH_ASKPASS from the agent's
environment, else none (a key that needs approval is then not used). It is
run only when the agent has a display (see keyward\-agent(1)).
.TP
\fBadd_stores\fR = \fItrue\fR|\fIfalse\fR
Whether \fBssh\-add\fR \fIFILE\fR (without \fB\-t\fR) keeps the key in the
vault. Default true; with false such keys stay in memory only, until the
agent locks.
.TP
\fBallowed_providers\fR = "\fIglobs\fR"
The security\-key provider libraries \fBssh\-add\fR may name, as
comma\-separated globs (ssh\-agent's \fB\-P\fR). Default
"/usr/lib*/*,/usr/local/lib*/*".
.TP
\fBprompt_timeout_seconds\fR = \fIseconds\fR
How long an approval, password or PIN prompt of the SSH agent waits.
Default 30; 1 to 300.
.SS "[kdf] table"
The Argon2id cost of new password wraps (\fBinit\fR, \fBchange\-password\fR,
\fBrecover\fR, \fBsecret\-key rotate\fR). Existing wraps keep the cost they
were made with.
.TP
\fBmemory_kib\fR = \fIKiB\fR
Memory. Default 65536 (64 MiB); from 19456 (19 MiB) to 4194304 (4 GiB), and
at least 8 \(mu \fBparallelism\fR.
.TP
\fBiterations\fR = \fIpasses\fR
Passes over the memory. Default 3; from 2 to 64.
.TP
\fBparallelism\fR = \fIlanes\fR
Lanes (threads). Default 4; from 1 to 64.
.SH EXAMPLES
.nf
.RS 4
idle_lock_seconds = 300        # lock after 5 minutes without use
lifetime_seconds = 0           # no absolute limit
protectors = ["yubikey", "file"]

[kdf]
memory_kib = 262144            # 256 MiB
iterations = 3
parallelism = 4
.RE
.fi
.SH ENVIRONMENT
.TP
\fBKEYWARD_HOME\fR, \fBXDG_CONFIG_HOME\fR, \fBHOME\fR
Where the file is looked for (DESCRIPTION).
.SH FILES
.TP
\fI~/.config/keyward/config.toml\fR
This file.
.SH "EXIT STATUS"
A configuration the agent refuses stops it at start with exit status 1;
the error names the file. keyward commands then exit 3 (the agent could not
be started): see keyward(1).
.SH "SEE ALSO"
keyward(1), keyward\-agent(1)
"#;

/// Every page: keyward(1) and one per command and nested command (the
/// `agent` command's page is keyward-agent(1)), then keyward.toml(5).
pub fn all() -> io::Result<Vec<Page>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    fn walk(cmd: &clap::Command, parent: Option<&str>, pages: &mut Vec<Page>) -> io::Result<()> {
        pages.push(command_page(cmd, parent)?);
        let name = cmd.get_display_name().unwrap_or(cmd.get_name());
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, Some(name), pages)?;
        }
        Ok(())
    }
    walk(&cmd, None, &mut pages)?;
    pages.push(Page {
        file: "keyward.toml.5".into(),
        text: CONFIG_PAGE.as_bytes().to_vec(),
    });
    Ok(pages)
}

/// keyward(1) alone (what `keyward manpage` prints).
pub fn main_page() -> io::Result<Vec<u8>> {
    let mut pages = all()?;
    Ok(pages.swap_remove(0).text)
}

/// Writes every page into `dir` (created if missing); returns their paths.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for page in all()? {
        let path = dir.join(&page.file);
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&page.text)?;
        written.push(path);
    }
    Ok(written)
}
