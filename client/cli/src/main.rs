//! `keyward`: the command-line client of the keyward agent.
//!
//! Thin by design: it parses flags, gets secrets from the user (terminal,
//! pinentry or file descriptors), talks to the agent, and prints. It holds no
//! keys and does no cryptography; a cold `keyward get` starts no runtime and
//! reads no config file.

mod cli;
mod connect;
mod input;
mod kit;
mod output;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::print_error(&e);
            ExitCode::from(e.code)
        }
    }
}
