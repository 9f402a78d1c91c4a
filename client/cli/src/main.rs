//! `keyward`: the command-line client of the keyward agent.
//!
//! Thin by design: it parses flags, gets secrets from the user (terminal,
//! pinentry or file descriptors), talks to the agent, and prints. It holds no
//! keys and does no cryptography; a cold `keyward get` starts no runtime and
//! reads no config file.

mod choose;
mod cli;
mod clip;
mod connect;
mod credential;
mod everyday;
mod export;
mod files;
mod generate;
mod import;
mod inject;
mod input;
mod join;
mod kit;
mod organizer;
mod output;
mod run;
mod ssh;
mod sync;

use clap::Parser;
use std::process::ExitCode;

/// `keyward [--no-autostart] get NAME`, recognised without building the
/// whole command-line parser: the call scripts make most, kept cheap.
/// Anything else (including `get --help` or a name starting with `-`)
/// goes through the full parser, which gives the same result.
fn fast_get() -> Option<cli::Cli> {
    let mut args = std::env::args_os().skip(1);
    let mut first = args.next()?;
    let no_autostart = first == "--no-autostart";
    if no_autostart {
        first = args.next()?;
    }
    let name = args.next()?;
    if first != "get" || args.next().is_some() {
        return None;
    }
    let name = name.into_string().ok().filter(|n| !n.starts_with('-'))?;
    Some(cli::Cli {
        no_autostart,
        no_prompt: false,
        command: cli::Command::Get {
            name,
            json: false,
            clip: false,
        },
    })
}

/// What the agent does at start, for the CLI's lifetime: it holds typed
/// passwords, PINs, recovery codes and values it was given or fetched.
/// Not dumpable (another process of the user cannot read its memory or
/// attach to it), and no core file. `execve` of another program (the
/// agent it starts, `$EDITOR`) resets the flag for that program.
fn harden() {
    use rustix::process::{DumpableBehavior, Resource, Rlimit};
    let _ = rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable);
    let _ = rustix::process::setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    );
}

fn main() -> ExitCode {
    harden();
    let args = fast_get().unwrap_or_else(cli::Cli::parse);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::print_error(&e);
            ExitCode::from(e.code)
        }
    }
}
