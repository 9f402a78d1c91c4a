//! `keyward-agent`: holds one user's unlocked keys and serves local clients.
//!
//! Thin: flags, hardening, logging, config, the socket, then [`server::run`].

use keyward_agent::clock::SystemClock;
use keyward_agent::config::Config;
use keyward_agent::harden;
use keyward_agent::server::{self, listener, state::Agent};
use keyward_client::Paths;
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "\
keyward-agent: holds your unlocked keyward secrets and serves local clients.
Normally started by `keyward` (or by systemd); run it yourself with `keyward agent`.

Usage: keyward-agent [--detach]

Options:
  --detach     detach from the terminal (new session); used when `keyward` starts the agent
  -h, --help   print this help
  -V, --version  print the version

Environment: KEYWARD_HOME (put config, data, state and socket under one directory),
KEYWARD_LOG (error, warn, info, debug or trace; default info).";

/// The flags, parsed by hand: two flags do not need a parser library, and
/// an idle agent should not keep its code in memory.
struct Args {
    detach: bool,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let mut detach = false;
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--detach" => detach = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                "-V" | "--version" => {
                    println!("keyward-agent {}", env!("CARGO_PKG_VERSION"));
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
            }
        }
        Ok(Self { detach })
    }
}

fn main() -> ExitCode {
    // Before anything else, and before any secret exists.
    let report = harden::harden_process();
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("keyward-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let detached = if args.detach {
        harden::new_session()
    } else {
        Ok(())
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // A level, not a filter language: KEYWARD_LOG=error|warn|info|debug|trace.
        .with_max_level(
            std::env::var("KEYWARD_LOG")
                .ok()
                .and_then(|l| l.parse::<tracing::Level>().ok())
                .unwrap_or(tracing::Level::INFO),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = detached {
        tracing::warn!("could not detach from the caller's session: {e}");
    }
    if !report.not_dumpable || !report.no_core {
        tracing::warn!(
            "could not fully harden the process: dumpable={} core-limit={}",
            !report.not_dumpable,
            !report.no_core
        );
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("keyward-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let uid = harden::euid();
    let mut paths = Paths::from_env().map_err(|e| e.to_string())?;
    let config = Config::load(&paths.config_file()).map_err(|e| e.to_string())?;
    harden::raise_fd_limit();
    // Socket activation first: the descriptors must be taken before anything
    // else could open files.
    let activated = harden::take_activated_listeners()
        .map_err(|e| format!("invalid socket from the service manager: {e}"))?;
    let path_of = |l: &std::os::unix::net::UnixListener| {
        l.local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.to_owned()))
            .unwrap_or_default()
    };
    // The SSH agent socket is the one named ssh.sock; the other is keyward's.
    let (ssh_activated, mut activated): (Vec<_>, Vec<_>) = activated
        .into_iter()
        .partition(|l| path_of(l).file_name().is_some_and(|n| n == "ssh.sock"));
    let lock = listener::take_instance_lock(&mut paths, uid).map_err(|e| e.to_string())?;
    let (std_listener, socket, owned_socket) = match activated.pop() {
        Some(l) => {
            let path = path_of(&l);
            l.set_nonblocking(true)
                .map_err(|e| format!("invalid socket from the service manager: {e}"))?;
            tracing::info!(socket = %path.display(), "using the socket passed by the service manager");
            (l, path, false)
        }
        None => (
            listener::bind(&paths, uid).map_err(|e| e.to_string())?,
            paths.socket(),
            true,
        ),
    };
    // Only a socket we bound is ours to remove on exit.
    let inode = owned_socket
        .then(|| std::fs::symlink_metadata(&socket).ok().map(|m| m.ino()))
        .flatten();
    let limit = harden::memlock_limit();
    if limit < 64 * 1024 {
        tracing::warn!(
            "RLIMIT_MEMLOCK is {limit} bytes: keys may not be locked in memory (raise it with `ulimit -l` or LimitMEMLOCK=)"
        );
    }
    let agent = Agent::new(paths, config, uid, Arc::new(SystemClock))?;
    agent.migrate_device_state();
    agent.start_sync_watcher();
    // One runtime thread is enough: connections are served by the event loop
    // thread (and slow requests by threads of their own), and key derivation
    // runs on the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("keyward-agent")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    // The SSH agent socket (SECURITY.md §17): served by threads of its own.
    let ssh_socket = if let Some(l) = ssh_activated.into_iter().next() {
        // Passed by the service manager (keyward-agent.socket): it owns the file.
        tracing::info!(socket = %path_of(&l).display(), "SSH agent on the socket passed by the service manager");
        keyward_agent::ssh::server::spawn(agent.clone(), l, runtime.handle().clone());
        None
    } else if agent.config.ssh.enabled {
        let path = keyward_agent::ssh::server::socket_path(&agent);
        match keyward_agent::ssh::server::bind(&path) {
            Ok(l) => {
                let inode = std::fs::symlink_metadata(&path).ok().map(|m| m.ino());
                keyward_agent::ssh::server::spawn(agent.clone(), l, runtime.handle().clone());
                tracing::info!(socket = %path.display(), "SSH agent listening");
                Some((path, inode))
            }
            Err(e) => {
                tracing::warn!(
                    "the SSH agent socket is not served: cannot bind {}: {e}",
                    path.display()
                );
                None
            }
        }
    } else {
        None
    };
    tracing::info!(socket = %socket.display(), pid = std::process::id(), "keyward-agent {} listening", server::state::AGENT_VERSION);
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("locked"),
    ]);
    let result = runtime.block_on(server::run(agent, std_listener));
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    listener::remove_socket(&socket, inode);
    if let Some((path, inode)) = ssh_socket {
        listener::remove_socket(&path, inode);
    }
    drop(lock);
    result.map_err(|e| e.to_string())
}
