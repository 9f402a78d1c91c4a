//! What the child does once it is the user: find the agent (starting it if
//! allowed), make sure the socket and the process behind it belong to the
//! user, then unlock, lock, or change the Master Password.
//!
//! Every outcome is reported as one sentence; none contains a secret.

use crate::child::Reporter;
use keyward_client::message::UnlockRequest;
use keyward_client::{
    AgentState, Client, ClientError, ErrorCode, Paths, Request, Response, Secret,
};
use libc::{LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING};
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The client name the agent sees.
pub const CLIENT_NAME: &str = "pam_keyward";

/// Everything the child needs, computed in the parent before `fork`.
#[derive(Debug, Clone)]
pub struct Target {
    /// Login name (for messages).
    pub user: String,
    /// The user's uid.
    pub uid: u32,
    /// The user's keyward paths.
    pub paths: Paths,
    /// The agent program.
    pub agent: PathBuf,
    /// The agent's whole environment when we start it.
    pub agent_env: Vec<(String, OsString)>,
    /// Whether to start the agent when none runs.
    pub auto_start: bool,
    /// `/run/user/UID`, when the PAM environment has no `XDG_RUNTIME_DIR`:
    /// the runtime directory to use if it is the user's (looked at in the
    /// child, as the user, by [`Target::settle`]).
    pub run_user: Option<PathBuf>,
}

impl Target {
    /// Looks at the user's directories, as the user (in the child, after
    /// dropping privileges): `/run/user/UID` as the `XDG_RUNTIME_DIR` the
    /// agent gets, if it is the user's directory and the PAM environment had
    /// none; then the runtime pointer (see `keyward_client::paths`).
    pub fn settle(&mut self, rep: &mut Reporter) {
        if let Some(run) = self.run_user.take()
            && std::fs::symlink_metadata(&run).is_ok_and(|m| m.is_dir() && m.uid() == self.uid)
        {
            self.agent_env
                .push(("XDG_RUNTIME_DIR".into(), run.into_os_string()));
            let env = self.agent_env.clone();
            let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            if let Ok(paths) = Paths::from_vars(var, self.uid) {
                self.paths = paths;
            }
        }
        self.paths.follow_runtime_pointer(self.uid);
        rep.say(
            LOG_DEBUG,
            &format!("socket of {}: {}", self.user, self.paths.socket().display()),
        );
    }
}

/// Whether the user uses keyward (has a keyward data directory). Runs in
/// the child, as the user: a link in the home into a place the user cannot
/// read (a root-only directory, a hung network mount) is looked at only
/// with the user's rights and within the deadline.
pub fn uses_keyward(t: &Target) -> bool {
    t.paths.data_dir.is_dir()
}

/// One job.
pub enum Job {
    /// `open_session`: unlock with the login password (and the YubiKey PIN
    /// asked in `auth`, with `yubikey_pin`).
    Unlock {
        /// The login password.
        password: Secret,
        /// The YubiKey PIN, if one was asked for and given.
        pin: Option<Secret>,
    },
    /// `close_session` with `lock_on_close=always`.
    Lock,
    /// `close_session` with `lock_on_close`: lock unless the user has
    /// another login session open (the agent asks logind).
    SessionEnd {
        /// The ending session's logind id (`XDG_SESSION_ID`).
        session: Option<String>,
    },
    /// `chauthtok`: the login password changed from `old` to `new`.
    ChangePassword {
        /// The previous login password.
        old: Secret,
        /// The new one.
        new: Secret,
    },
}

/// Runs `job` (in the child, as the user).
pub fn run(mut target: Target, job: Job, rep: &mut Reporter, deadline: Instant) {
    target.settle(rep);
    let t = &target;
    let auto_start = t.auto_start && !matches!(job, Job::Lock | Job::SessionEnd { .. });
    let Some(mut c) = connect(t, auto_start, rep, deadline) else {
        return;
    };
    if c.set_timeout(remaining(deadline)).is_err() {
        rep.say(
            LOG_WARNING,
            &format!("{}: cannot set a timeout on the agent connection", t.user),
        );
        return;
    }
    match job {
        Job::Unlock { password, pin } => unlock(t, &mut c, password, pin, rep),
        Job::Lock => lock(t, &mut c, rep),
        Job::SessionEnd { session } => session_end(t, c, session.as_deref(), rep, deadline),
        Job::ChangePassword { old, new } => change(t, &mut c, old, new, rep),
    }
}

fn lock(t: &Target, c: &mut Client, rep: &mut Reporter) {
    match c.lock() {
        Ok(()) => rep.say(
            LOG_NOTICE,
            &format!("locked the keyward agent of {}", t.user),
        ),
        Err(e) => rep.say(
            LOG_WARNING,
            &format!("could not lock {}'s keyward agent: {e}", t.user),
        ),
    }
}

fn session_end(
    t: &Target,
    mut c: Client,
    session: Option<&str>,
    rep: &mut Reporter,
    deadline: Instant,
) {
    let user = &t.user;
    let which = session.map_or_else(|| "a session".to_owned(), |s| format!("session {s}"));
    match c.session_end(session) {
        Ok(None) => rep.say(
            LOG_NOTICE,
            &format!(
                "locked the keyward agent of {user}: {which} ended and no other session of \
                 {user} is open"
            ),
        ),
        Ok(Some(others)) => rep.say(
            LOG_NOTICE,
            &format!(
                "{which} of {user} ended; the keyward agent stays unlocked for {user}'s other \
                 sessions ({})",
                others.join(", ")
            ),
        ),
        // An agent older than the module (it ran through a package upgrade)
        // does not know the request and closes the connection: lock plainly.
        Err(ClientError::Agent(e)) if e.code == ErrorCode::BadRequest => {
            rep.say(
                LOG_INFO,
                &format!(
                    "{user}'s keyward agent is older than this module; locking without asking \
                     about other sessions"
                ),
            );
            drop(c);
            if let Some(mut c) = connect(t, false, rep, deadline)
                && c.set_timeout(remaining(deadline)).is_ok()
            {
                lock(t, &mut c, rep);
            }
        }
        Err(e) => rep.say(
            LOG_WARNING,
            &format!("could not lock {user}'s keyward agent: {e}"),
        ),
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100))
}

fn unlock(t: &Target, c: &mut Client, pw: Secret, pin: Option<Secret>, rep: &mut Reporter) {
    let user = &t.user;
    let st = match c.status() {
        Ok(s) => s,
        Err(e) => {
            rep.say(LOG_WARNING, &format!("{user}'s keyward agent: {e}"));
            return;
        }
    };
    match st.state {
        AgentState::Uninitialized => {
            rep.say(
                LOG_INFO,
                &format!("{user} has no keyward account yet; nothing to unlock"),
            );
            return;
        }
        AgentState::Unlocked => {
            rep.say(
                LOG_INFO,
                &format!("the keyward agent of {user} is already unlocked"),
            );
            return;
        }
        AgentState::Locked => {}
    }
    if st.backoff_secs > 0 {
        rep.say(
            LOG_WARNING,
            &format!(
                "the keyward agent of {user} refuses unlocks for {} more seconds after failed \
                 attempts; not trying (run `keyward unlock` later)",
                st.backoff_secs
            ),
        );
        return;
    }
    let req = Request::Unlock(UnlockRequest {
        password: pw,
        pin,
        ..UnlockRequest::default()
    });
    match c.call(&req) {
        Ok(Response::Unlocked {
            account_id,
            protector,
            ..
        }) => rep.say(
            LOG_NOTICE,
            &format!(
                "unlocked the keyward agent of {user} (account {account_id}, Secret Key from {protector})"
            ),
        ),
        Ok(other) => rep.say(
            LOG_WARNING,
            &format!("{user}'s keyward agent gave an unexpected answer to unlock ({other:?})"),
        ),
        Err(ClientError::Agent(e)) if e.code == ErrorCode::WrongCredentials => rep.say(
            LOG_NOTICE,
            &format!(
                "the keyward Master Password of {user} differs from the login password; the \
                 agent stays locked (run `keyward unlock`)"
            ),
        ),
        Err(e) => rep.say(
            LOG_WARNING,
            &format!("could not unlock {user}'s keyward agent: {e}"),
        ),
    }
}

fn change(t: &Target, c: &mut Client, old: Secret, new: Secret, rep: &mut Reporter) {
    let user = &t.user;
    let differs = || {
        format!(
            "the previous login password of {user} was not the keyward Master Password; the \
             Master Password is unchanged (change it with `keyward change-password`)"
        )
    };
    let st = match c.status() {
        Ok(s) => s,
        Err(e) => {
            rep.say(LOG_WARNING, &format!("{user}'s keyward agent: {e}"));
            return;
        }
    };
    let was_locked = match st.state {
        AgentState::Uninitialized => {
            rep.say(
                LOG_INFO,
                &format!("{user} has no keyward account; nothing to change"),
            );
            return;
        }
        AgentState::Locked => true,
        AgentState::Unlocked => false,
    };
    if was_locked {
        let req = Request::Unlock(UnlockRequest {
            password: old.clone(),
            ..UnlockRequest::default()
        });
        match c.call(&req) {
            Ok(Response::Unlocked { .. }) => {}
            Err(ClientError::Agent(e)) if e.code == ErrorCode::WrongCredentials => {
                rep.say(LOG_NOTICE, &differs());
                return;
            }
            Ok(other) => {
                rep.say(
                    LOG_WARNING,
                    &format!("{user}'s keyward agent gave an unexpected answer ({other:?}); Master Password unchanged"),
                );
                return;
            }
            Err(e) => {
                rep.say(
                    LOG_WARNING,
                    &format!(
                        "could not unlock {user}'s keyward agent to change the Master Password: {e}"
                    ),
                );
                return;
            }
        }
    }
    match c.call(&Request::ChangePassword { old, new }) {
        Ok(Response::Ok) => rep.say(
            LOG_NOTICE,
            &format!("changed the keyward Master Password of {user} to the new login password"),
        ),
        Ok(other) => rep.say(
            LOG_WARNING,
            &format!("{user}'s keyward agent gave an unexpected answer ({other:?})"),
        ),
        Err(ClientError::Agent(e)) if e.code == ErrorCode::WrongCredentials => {
            rep.say(LOG_NOTICE, &differs());
        }
        Err(e) => rep.say(
            LOG_WARNING,
            &format!("could not change {user}'s keyward Master Password: {e}"),
        ),
    }
    if was_locked {
        // Leave it as we found it.
        if let Err(e) = c.lock() {
            rep.say(
                LOG_WARNING,
                &format!("could not lock {user}'s keyward agent again: {e}"),
            );
        }
    }
}

/// What sits at the socket path.
#[derive(Debug, PartialEq, Eq)]
pub enum SocketCheck {
    /// Nothing: no agent runs.
    Absent,
    /// A socket of the user's with nobody listening (a crashed agent).
    Stale,
    /// A socket of the user's, with a listener running as the user.
    Ready,
}

/// Checks the socket at `socket` for `uid`: the file must be a socket (not a
/// symlink) owned by the user, in a directory owned by the user that nobody
/// else can write, and the process listening on it must run as the user.
/// Root does not count as the user: the password goes only to the user's own
/// agent. `Err` says why the password must not be sent.
pub fn check_socket(socket: &Path, uid: u32) -> Result<SocketCheck, String> {
    let md = match std::fs::symlink_metadata(socket) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SocketCheck::Absent),
        Err(e) => return Err(format!("cannot inspect it: {e}")),
    };
    let ft = md.file_type();
    if ft.is_symlink() {
        return Err("it is a symlink".into());
    }
    if !ft.is_socket() {
        return Err("it is not a socket".into());
    }
    if md.uid() != uid {
        return Err(format!(
            "the socket file belongs to uid {}, not to the user (uid {uid})",
            md.uid()
        ));
    }
    if let Some(dir) = socket.parent() {
        let dmd = std::fs::symlink_metadata(dir)
            .map_err(|e| format!("cannot inspect its directory: {e}"))?;
        if !dmd.file_type().is_dir() || dmd.uid() != uid || dmd.mode() & 0o022 != 0 {
            return Err(format!(
                "its directory {} is not a private directory of the user (owner uid {}, mode {:o})",
                dir.display(),
                dmd.uid(),
                dmd.mode() & 0o7777
            ));
        }
    }
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Ok(SocketCheck::Stale);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SocketCheck::Absent),
        Err(e) => return Err(format!("cannot connect: {e}")),
    };
    let cred = rustix::net::sockopt::socket_peercred(&stream)
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    if cred.uid.as_raw() != uid {
        return Err(format!(
            "the process behind it (pid {}) runs as uid {}, not as the user (uid {uid})",
            cred.pid.as_raw_nonzero(),
            cred.uid.as_raw()
        ));
    }
    Ok(SocketCheck::Ready)
}

/// Connects to the user's agent, starting it first if allowed; reports and
/// returns `None` when that is not possible or not safe.
fn connect(t: &Target, auto_start: bool, rep: &mut Reporter, deadline: Instant) -> Option<Client> {
    let socket = t.paths.socket();
    let refuse = |rep: &mut Reporter, why: String| {
        rep.say(
            LOG_WARNING,
            &format!(
                "refusing to talk to {} for {}: {why}",
                socket.display(),
                t.user
            ),
        );
    };
    // A default runtime directory in /tmp that someone else made: nothing
    // in it is talked to; an agent started now makes a private one.
    let first = match t.paths.runtime_dir_taken(t.uid) {
        Some(why) => {
            rep.say(
                LOG_WARNING,
                &format!(
                    "{} {why}; not looking for {}'s keyward agent there",
                    t.paths.runtime_dir.display(),
                    t.user
                ),
            );
            Ok(SocketCheck::Absent)
        }
        None => check_socket(&socket, t.uid),
    };
    match first {
        Ok(SocketCheck::Ready) => return connect_checked(t, &socket, rep),
        Ok(SocketCheck::Absent | SocketCheck::Stale) if !auto_start => {
            let why = if t.auto_start {
                ""
            } else {
                " (auto_start is off)"
            };
            rep.say(
                LOG_INFO,
                &format!("no keyward agent runs for {}{why}", t.user),
            );
            return None;
        }
        Ok(_) => {}
        Err(why) => {
            refuse(rep, why);
            return None;
        }
    }
    // Only for users of keyward: no data directory, no account, no agent.
    if !t.paths.data_dir.is_dir() {
        rep.say(
            LOG_INFO,
            &format!(
                "{} has no keyward data ({}); not starting an agent",
                t.user,
                t.paths.data_dir.display()
            ),
        );
        return None;
    }
    let mut child = match start_agent(t) {
        Ok(c) => c,
        Err(e) => {
            rep.say(
                LOG_WARNING,
                &format!("cannot start the keyward agent of {}: {e}", t.user),
            );
            return None;
        }
    };
    rep.say(
        LOG_INFO,
        &format!(
            "started the keyward agent of {} (pid {})",
            t.user,
            child.id()
        ),
    );
    // Where the agent listens: it may have replaced a taken default
    // directory and recorded the new one in the runtime pointer.
    let now = || {
        let mut p = t.paths.clone();
        p.refresh_runtime_dir(t.uid);
        (p.runtime_dir_taken(t.uid).is_none()).then(|| p.socket())
    };
    loop {
        if let Some(socket) = now() {
            match check_socket(&socket, t.uid) {
                Ok(SocketCheck::Ready) => return connect_checked(t, &socket, rep),
                Ok(_) => {}
                Err(why) => {
                    rep.say(
                        LOG_WARNING,
                        &format!(
                            "refusing to talk to {} for {}: {why}",
                            socket.display(),
                            t.user
                        ),
                    );
                    return None;
                }
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another agent may have won a race for the same home; try once more.
            if let Some(socket) = now()
                && let Ok(SocketCheck::Ready) = check_socket(&socket, t.uid)
            {
                return connect_checked(t, &socket, rep);
            }
            rep.say(
                LOG_WARNING,
                &format!(
                    "the keyward agent of {} exited at start ({status}); see {}",
                    t.user,
                    t.paths.log_file().display()
                ),
            );
            return None;
        }
        if Instant::now() >= deadline {
            return None; // the parent reports the timeout
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connect_checked(t: &Target, socket: &Path, rep: &mut Reporter) -> Option<Client> {
    match Client::connect_as(socket, t.uid, CLIENT_NAME) {
        Ok(c) => {
            rep.say(
                LOG_DEBUG,
                &format!(
                    "connected to the keyward agent of {} (pid {}, {})",
                    t.user,
                    c.agent().pid,
                    c.agent().version
                ),
            );
            Some(c)
        }
        Err(e @ ClientError::WrongOwner { .. }) => {
            rep.say(
                LOG_WARNING,
                &format!("refusing to talk to {}: {e}", socket.display()),
            );
            None
        }
        Err(e) => {
            rep.say(
                LOG_WARNING,
                &format!("cannot reach the keyward agent of {}: {e}", t.user),
            );
            None
        }
    }
}

/// Starts `keyward-agent --detach` with a clean environment, its output
/// appended to the agent log. Runs as the user.
fn start_agent(t: &Target) -> Result<Child, String> {
    let log = t.paths.log_file();
    let mut out = Stdio::null();
    let mut err = Stdio::null();
    if let Some(dir) = log.parent() {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
    }
    if let Ok(f) = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&log)
        && let Ok(f2) = f.try_clone()
    {
        out = f.into();
        err = f2.into();
    }
    // Not a process group of its own: the agent's setsid (--detach) would
    // then fail and leave it in the login's session.
    Command::new(&t.agent)
        .arg("--detach")
        .env_clear()
        .envs(t.agent_env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{}: {e}", t.agent.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    fn me() -> u32 {
        rustix::process::getuid().as_raw()
    }

    #[test]
    fn socket_checks() {
        let _serial = crate::test_serial();
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let sock = d.path().join("agent.sock");
        assert_eq!(check_socket(&sock, me()), Ok(SocketCheck::Absent));

        let l = UnixListener::bind(&sock).unwrap();
        assert_eq!(check_socket(&sock, me()), Ok(SocketCheck::Ready));
        // Someone else's uid: the file owner differs.
        let e = check_socket(&sock, me() + 4242).unwrap_err();
        assert!(e.contains("socket file belongs to uid"), "{e}");
        drop(l);
        assert_eq!(check_socket(&sock, me()), Ok(SocketCheck::Stale));

        std::fs::remove_file(&sock).unwrap();
        std::os::unix::fs::symlink("/nonexistent", &sock).unwrap();
        assert!(check_socket(&sock, me()).unwrap_err().contains("symlink"));
        std::fs::remove_file(&sock).unwrap();
        std::fs::write(&sock, b"").unwrap();
        assert!(
            check_socket(&sock, me())
                .unwrap_err()
                .contains("not a socket")
        );
        std::fs::remove_file(&sock).unwrap();

        let _l = UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            check_socket(&sock, me())
                .unwrap_err()
                .contains("not a private directory")
        );
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}
