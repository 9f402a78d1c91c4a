//! Reaching the agent, starting it in the background when none runs.

use crate::output::{CliError, exit};
use keyward_client::{Client, ClientError, Paths};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
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
///
/// A default runtime directory in the shared temporary directory that
/// another user made (see `keyward_client::paths`) counts as "no agent":
/// nothing there is talked to, and the agent started makes a private one.
pub fn connect(paths: &Paths, autostart: bool) -> Result<Client, CliError> {
    let uid = keyward_client::paths::current_uid();
    let socket = paths.socket();
    let name = concat!("keyward ", env!("CARGO_PKG_VERSION"));
    match paths.runtime_dir_taken(uid) {
        Some(why) if !autostart => {
            return Err(CliError::with(
                exit::NO_AGENT,
                format!(
                    "no keyward agent is running: {} {why}, and no private replacement was \
                     recorded yet; start the agent with `keyward agent` (or drop --no-autostart)",
                    socket.parent().unwrap_or(&socket).display()
                ),
            ));
        }
        Some(_) => {}
        None => match Client::connect_as(&socket, uid, name) {
            Ok(c) => return Ok(c),
            Err(ClientError::NotRunning { .. }) if autostart => {}
            Err(e @ ClientError::NotRunning { .. }) => {
                return Err(CliError::with(
                    exit::NO_AGENT,
                    format!("{e}; start it with `keyward agent` (or drop --no-autostart)"),
                ));
            }
            Err(e) => return Err(e.into()),
        },
    }
    start_and_connect(paths, uid).map_err(|e| CliError::with(exit::NO_AGENT, e))
}

/// Opens (creating) the agent log for appending: 0600, also when an older
/// keyward left it readable by others; never through a symlink.
pub fn open_log(log: &Path) -> std::io::Result<File> {
    if let Some(dir) = log.parent() {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(log)?;
    if f.metadata()?.permissions().mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

fn start_and_connect(paths: &Paths, uid: u32) -> Result<Client, String> {
    let log = paths.log_file();
    let log_file =
        open_log(&log).map_err(|e| format!("cannot open the agent log {}: {e}", log.display()))?;
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
        // The agent just started may have made a private replacement for a
        // taken default directory, and recorded it in the runtime pointer.
        let mut now = paths.clone();
        now.refresh_runtime_dir(uid);
        let socket = now.socket();
        // Nothing is talked to in a taken default directory.
        let usable = now.runtime_dir_taken(uid).is_none();
        match usable.then(|| Client::connect(&socket)) {
            None | Some(Err(ClientError::NotRunning { .. })) => {}
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(c)) => {
                if let (true, Some(why)) = (now.follows_pointer(), now.default_runtime_taken(uid)) {
                    // Not an error: said once, when the agent is started.
                    let _ = writeln!(
                        std::io::stderr(),
                        "keyward: notice: {} {why}; someone else may have made it first. The \
                         agent uses the private directory {} instead (recorded in {}).",
                        now.shared_tmp_default
                            .as_deref()
                            .unwrap_or(Path::new(""))
                            .display(),
                        now.runtime_dir.display(),
                        now.runtime_pointer().display()
                    );
                }
                return Ok(c);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_agent_log_is_private_also_when_an_older_keyward_left_it_open() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("state/keyward/agent.log");
        open_log(&log).unwrap();
        assert_eq!(mode(&log), 0o600);
        assert_eq!(mode(log.parent().unwrap()), 0o700);
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut f = open_log(&log).unwrap();
        assert_eq!(mode(&log), 0o600);
        writeln!(f, "appended").unwrap();
        // Never through a symlink.
        let link = d.path().join("link.log");
        std::os::unix::fs::symlink(&log, &link).unwrap();
        assert!(open_log(&link).is_err());
    }
}
