//! Reaching the agent, starting it in the background when none runs.

use crate::output::{CliError, exit};
use keyward_client::{Client, ClientError, Paths};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for a freshly started agent to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent program: `$KEYWARD_AGENT`, else next to this executable, else `keyward-agent` on PATH.
pub fn agent_program() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYWARD_AGENT").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let sibling = dir.join("keyward-agent");
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from("keyward-agent")
}

/// Connects; if no agent runs and `autostart`, starts one detached (new
/// session, output to its log file) and waits until it answers.
pub fn connect(paths: &Paths, autostart: bool) -> Result<Client, CliError> {
    let socket = paths.socket();
    let name = concat!("keyward ", env!("CARGO_PKG_VERSION"));
    match Client::connect_as(&socket, keyward_client::paths::current_uid(), name) {
        Ok(c) => return Ok(c),
        Err(ClientError::NotRunning { .. }) if autostart => {}
        Err(e @ ClientError::NotRunning { .. }) => {
            return Err(CliError::with(
                exit::NO_AGENT,
                format!("{e}; start it with `keyward agent` (or drop --no-autostart)"),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    start_and_connect(paths).map_err(|e| CliError::with(exit::NO_AGENT, e))
}

fn start_and_connect(paths: &Paths) -> Result<Client, String> {
    let socket = paths.socket();
    let log = paths.log_file();
    if let Some(dir) = log.parent() {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
    }
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("cannot open the agent log {}: {e}", log.display()))?;
    let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
    let program = agent_program();
    let mut child = Command::new(&program)
        .arg("--detach")
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        // Not a process group of its own: the agent's setsid (--detach)
        // would then fail and leave it in our session, on our terminal.
        .spawn()
        .map_err(|e| {
            format!(
                "no keyward agent is running and starting {} failed: {e}; is keyward-agent installed?",
                program.display()
            )
        })?;
    let start = Instant::now();
    loop {
        match Client::connect(&socket) {
            Ok(c) => return Ok(c),
            Err(ClientError::NotRunning { .. }) => {}
            Err(e) => return Err(e.to_string()),
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log)
                .ok()
                .and_then(|t| {
                    t.lines()
                        .rev()
                        .find(|l| l.contains("keyward-agent:"))
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            return Err(format!(
                "the keyward agent exited at start ({status}); {tail} (log: {})",
                log.display()
            ));
        }
        if start.elapsed() > START_TIMEOUT {
            return Err(format!(
                "started the keyward agent but it did not answer within {START_TIMEOUT:?}; see {}",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
