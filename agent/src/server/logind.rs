//! Lock when the machine suspends or the session's screen locks.
//!
//! logind announces both on the system bus: `PrepareForSleep(true)` on
//! `org.freedesktop.login1.Manager`, and `Lock` on the session's
//! `org.freedesktop.login1.Session` object. Only signals sent by the owner of
//! `org.freedesktop.login1` count (another user cannot make them up, and on
//! the system bus only logind may own that name). The watcher is a plain
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

/// Starts watching logind in the background.
pub fn spawn(agent: Arc<Agent>) {
    let spawned = std::thread::Builder::new()
        .name("logind".into())
        .spawn(move || {
            if let Err(e) = watch(&agent) {
                tracing::info!("not watching logind for suspend and screen lock: {e}");
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

fn watch(agent: &Arc<Agent>) -> zbus::Result<()> {
    if !system_bus_exists() {
        return Err(zbus::Error::Failure("no system bus".into()));
    }
    let conn = Connection::system()?;
    let rule = MatchRule::builder()
        .msg_type(Type::Signal)
        .sender(LOGIN1)?
        .build();
    let messages = MessageIterator::for_match_rule(rule, &conn, Some(64))?;
    let ours = session_path(&conn);
    tracing::info!(session = ?ours, "watching logind for suspend and screen lock");
    for msg in messages {
        let msg = msg?;
        let header = msg.header();
        let (Some(iface), Some(member)) = (header.interface(), header.member()) else {
            continue;
        };
        match (iface.as_str(), member.as_str()) {
            ("org.freedesktop.login1.Manager", "PrepareForSleep")
                if msg.body().deserialize::<bool>().unwrap_or(false) =>
            {
                agent.lock("suspend");
            }
            // Outside a logind session, any session's lock counts.
            ("org.freedesktop.login1.Session", "Lock")
                if ours.is_none() || header.path().map(|p| p.as_str().to_owned()) == ours =>
            {
                agent.lock("screen lock");
            }
            _ => {}
        }
    }
    Ok(())
}
