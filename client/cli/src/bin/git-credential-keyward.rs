//! `git-credential-keyward`: the program git runs for `credential.helper =
//! keyward` (git looks for `git-credential-NAME` on PATH and calls it with
//! the operation: `get`, `store` or `erase`).
//!
//! It is `keyward credential` under git's name: it replaces itself with the
//! `keyward` installed beside it (the two are installed together), else the
//! `keyward` on PATH, passing its arguments on. Standard input, output and
//! error are git's, unchanged. A program of its own rather than a symbolic
//! link: cargo builds and installs it like any binary, and it works from
//! any directory git finds it in.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let keyward = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("keyward")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("keyward"));
    let err = Command::new(&keyward)
        .arg("credential")
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!(
        "git-credential-keyward: cannot run {}: {err}; is keyward installed?",
        keyward.display()
    );
    ExitCode::FAILURE
}
