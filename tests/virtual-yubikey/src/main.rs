//! `virtual-yubikey`: runs the software YubiKey PIV card against vpcd, or
//! (`pcsc-wait`) waits for a PC/SC reader to report a card. See the crate
//! docs and README.md; all logic is in the library.

use std::process::ExitCode;

use virtual_yubikey::cli::{self, Invocation};
use virtual_yubikey::run;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invocation = match cli::parse(&args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("virtual-yubikey: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match invocation {
        Invocation::Help => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Invocation::Card(opts) => match run::run_card(&opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("virtual-yubikey: {e}");
                ExitCode::FAILURE
            }
        },
        Invocation::Wait(opts) => match run::pcsc_wait(&opts) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!(
                    "virtual-yubikey pcsc-wait: reader {:?} did not become {:?} within {:?}",
                    opts.reader, opts.state, opts.timeout
                );
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("virtual-yubikey pcsc-wait: {e}");
                ExitCode::from(2)
            }
        },
    }
}
