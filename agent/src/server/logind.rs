//! Lock when the machine suspends or the session's screen locks.
//!
//! logind announces both on the system bus: `PrepareForSleep(true)` on
//! `org.freedesktop.login1.Manager`, and `Lock` on the session's
//! `org.freedesktop.login1.Session` object. Only signals sent by the owner of
//! `org.freedesktop.login1` count (another user cannot make them up, and on
//! the system bus only logind may own that name). The agent holds a delay
//! inhibitor for sleep and closes it once it has locked, so that logind
//! suspends after the keys are wiped, not before. The watcher is a plain
//! thread with a blocking connection; with no system bus (a container, a
//! test) it logs once and stops — locking on timers and on request still works.
//!
//! When a login session ends, `pam_keyward` (option `lock_on_close`) sends
//! `SessionEnd`; [`other_sessions`] asks logind whether the user has another
//! session open, and the agent locks only if not.

use super::state::Agent;
use std::sync::Arc;
use zbus::MatchRule;
use zbus::blocking::{Connection, MessageIterator};
use zbus::message::Type;

const LOGIN1: &str = "org.freedesktop.login1";

/// The first wait before connecting to the system bus again, and the
/// longest.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts watching logind in the background. When the system bus goes
/// away (dbus restarted), the watcher says so and connects again.
pub fn spawn(agent: Arc<Agent>) {
    let spawned = std::thread::Builder::new()
        .name("logind".into())
        .spawn(move || {
            let mut retry = RETRY_FIRST;
            loop {
                let mut watching = false;
                let e = match watch(&agent, &mut watching) {
                    Ok(()) => "the system bus closed the connection".to_owned(),
                    Err(e) => e.to_string(),
                };
                if watching {
                    retry = RETRY_FIRST;
                } else if retry == RETRY_FIRST {
                    // Never connected: no system bus here (a container, a test).
                    tracing::info!("not watching logind for suspend and screen lock: {e}");
                    return;
                }
                tracing::warn!(
                    "lost logind ({e}): suspend and screen lock do not lock the agent until it \
                     is back; trying again in {} s",
                    retry.as_secs()
                );
                std::thread::sleep(retry);
                retry = (retry * 2).min(RETRY_MAX);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the logind watcher: {e}");
    }
}

/// Our session's object path, if we are in a logind session.
fn session_path(conn: &Connection) -> Option<String> {
    let id = std::env::var("XDG_SESSION_ID")
        .ok()
        .filter(|s| !s.is_empty())?;
    let reply = conn
        .call_method(
            Some(LOGIN1),
            "/org/freedesktop/login1",
            Some("org.freedesktop.login1.Manager"),
            "GetSession",
            &(id.as_str(),),
        )
        .ok()?;
    let path: zbus::zvariant::OwnedObjectPath = reply.body().deserialize().ok()?;
    Some(path.as_str().to_owned())
}

/// Whether a system bus is there to connect to (without loading D-Bus code
/// for nothing on machines that have none).
fn system_bus_exists() -> bool {
    match std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
        Ok(addr) if !addr.is_empty() => {
            addr.split(';')
                .filter_map(|a| a.strip_prefix("unix:path="))
                .map(|p| p.split(',').next().unwrap_or(p))
                .any(|p| std::path::Path::new(p).exists())
                || !addr.contains("unix:path=")
        }
        _ => std::path::Path::new("/run/dbus/system_bus_socket").exists(),
    }
}

/// How long each question to logind may take (`SessionEnd`).
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The user's other login sessions, asked of logind when a session ends
/// (`SessionEnd`, sent by `pam_keyward` with `lock_on_close`): the ids of
/// the sessions of `uid` other than `ending` whose class is a user's (`user`,
/// `user-early`, `user-incomplete`, `user-light`, …: not the systemd user
/// manager's own `manager` session, a greeter or a lock screen) and that are
/// not closing themselves. An error means logind could not be asked; the
/// caller then locks, as if this was the last session.
pub fn other_sessions(uid: u32, ending: Option<&str>) -> Result<Vec<String>, String> {
    if !system_bus_exists() {
        return Err("no system bus".into());
    }
    let conn = zbus::blocking::connection::Builder::system()
        .and_then(|b| b.method_timeout(ASK_TIMEOUT).build())
        .map_err(|e| format!("cannot connect to the system bus: {e}"))?;
    let sessions: Vec<(String, u32, String, String, zbus::zvariant::OwnedObjectPath)> = conn
        .call_method(
            Some(LOGIN1),
            "/org/freedesktop/login1",
            Some("org.freedesktop.login1.Manager"),
            "ListSessions",
            &(),
        )
        .and_then(|m| m.body().deserialize())
        .map_err(|e| format!("logind's ListSessions failed: {e}"))?;
    let property = |path: &zbus::zvariant::OwnedObjectPath, name: &str| -> Option<String> {
        let reply = conn
            .call_method(
                Some(LOGIN1),
                path.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.freedesktop.login1.Session", name),
            )
            .ok()?;
        let value: zbus::zvariant::OwnedValue = reply.body().deserialize().ok()?;
        String::try_from(value).ok()
    };
    Ok(sessions
        .into_iter()
        .filter(|(id, owner, _, _, _)| *owner == uid && Some(id.as_str()) != ending)
        .filter(|(_, _, _, _, path)| {
            // A session that went away meanwhile, or whose properties cannot
            // be read, does not count: when in doubt, lock.
            let class = property(path, "Class");
            let state = property(path, "State");
            class.is_some_and(|c| c.starts_with("user")) && state.is_some_and(|s| s != "closing")
        })
        .map(|(id, ..)| id)
        .collect())
}

/// A delay inhibitor for sleep: logind waits for it to be closed (at most
/// its `InhibitDelayMaxSec`, 5 s by default) before suspending, so the keys
/// are wiped before the machine sleeps rather than at the resume. None if
/// logind refuses (a policy); locking on `PrepareForSleep` still happens.
fn inhibit_sleep(conn: &Connection) -> Option<zbus::zvariant::OwnedFd> {
    let taken = conn
        .call_method(
            Some(LOGIN1),
            "/org/freedesktop/login1",
            Some("org.freedesktop.login1.Manager"),
            "Inhibit",
            &(
                "sleep",
                "keyward",
                "lock the keyward agent before sleeping",
                "delay",
            ),
        )
        .and_then(|reply| reply.body().deserialize::<zbus::zvariant::OwnedFd>());
    match taken {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::info!("cannot delay sleep until the agent has locked: {e}");
            None
        }
    }
}

/// The uid of the user of the logind session at `path`, if logind says.
fn session_user(conn: &Connection, path: &str) -> Option<u32> {
    let reply = conn
        .call_method(
            Some(LOGIN1),
            path,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &("org.freedesktop.login1.Session", "User"),
        )
        .ok()?;
    let value: zbus::zvariant::OwnedValue = reply.body().deserialize().ok()?;
    let (uid, _): (u32, zbus::zvariant::OwnedObjectPath) = value.try_into().ok()?;
    Some(uid)
}

/// Watches until the connection ends; `watching` tells whether it got as
/// far as receiving signals.
fn watch(agent: &Arc<Agent>, watching: &mut bool) -> zbus::Result<()> {
    if !system_bus_exists() {
        return Err(zbus::Error::Failure("no system bus".into()));
    }
    let conn = Connection::system()?;
    let rule = MatchRule::builder()
        .msg_type(Type::Signal)
        .sender(LOGIN1)?
        .build();
    let messages = MessageIterator::for_match_rule(rule, &conn, Some(64))?;
    // Its own connection (asking logind from the watching one would
    // interleave replies with the signals), and a bound on each question: a
    // hung logind must not stall the watcher.
    let ask = zbus::blocking::connection::Builder::system()?
        .method_timeout(ASK_TIMEOUT)
        .build()?;
    let ours = session_path(&ask);
    let mut inhibitor = inhibit_sleep(&ask);
    *watching = true;
    tracing::info!(session = ?ours, "watching logind for suspend and screen lock");
    for msg in messages {
        let msg = msg?;
        let header = msg.header();
        let (Some(iface), Some(member)) = (header.interface(), header.member()) else {
            continue;
        };
        match (iface.as_str(), member.as_str()) {
            ("org.freedesktop.login1.Manager", "PrepareForSleep") => {
                if msg.body().deserialize::<bool>().unwrap_or(false) {
                    agent.lock("suspend");
                    // Locked: the machine may sleep now.
                    drop(inhibitor.take());
                } else if inhibitor.is_none() {
                    // Awake again: hold up the next sleep too.
                    inhibitor = inhibit_sleep(&ask);
                }
            }
            // In a logind session, its own lock; outside one (a systemd
            // user service), the lock of any session of our user (one
            // whose user logind cannot tell counts: when in doubt, lock).
            ("org.freedesktop.login1.Session", "Lock") => {
                let path = header.path().map(|p| p.as_str().to_owned());
                let mine = match (&ours, &path) {
                    (Some(ours), Some(path)) => ours == path,
                    (Some(_), None) => false,
                    (None, Some(path)) => {
                        session_user(&ask, path).is_none_or(|uid| uid == agent.uid)
                    }
                    (None, None) => true,
                };
                if mine {
                    agent.lock("screen lock");
                }
            }
            _ => {}
        }
    }
    Ok(())
}
