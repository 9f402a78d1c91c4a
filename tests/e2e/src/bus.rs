//! A private D-Bus for tests, and a fake logind on it: as much of
//! `org.freedesktop.login1` as the agent asks (`ListSessions`, a session's
//! `Class` and `State`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A private dbus-daemon, stopped on drop.
pub struct Bus {
    daemon: Child,
    /// Its address (`unix:path=…,guid=…`).
    pub address: String,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// Starts a private dbus-daemon with its socket in `dir`: anyone connected
/// may own any name; with `any_user`, other users may connect too (a test
/// running as root whose agent runs as a test user).
pub fn private_bus(dir: &Path, any_user: bool) -> Bus {
    let socket = dir.join("bus");
    let config = dir.join("bus.conf");
    std::fs::write(
        &config,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    {}
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
            socket.display(),
            if any_user { r#"<allow user="*"/>"# } else { "" }
        ),
    )
    .unwrap();
    let mut daemon = Command::new("dbus-daemon")
        .args(["--nofork", "--nopidfile", "--print-address=1"])
        .arg(format!("--config-file={}", config.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(daemon.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Bus {
        daemon,
        address: line.trim().to_owned(),
    }
}

/// One login session as the fake logind reports it.
#[derive(Clone)]
pub struct FakeSession {
    /// logind's id.
    pub id: &'static str,
    /// Whose.
    pub uid: u32,
    /// `user`, `manager`, `greeter`, ….
    pub class: &'static str,
    /// `active`, `online` or `closing`.
    pub state: &'static str,
}

/// The fake's sessions, shared with the test (which changes them).
pub type Sessions = std::sync::Arc<std::sync::Mutex<Vec<FakeSession>>>;

fn session_path(id: &str) -> zbus::zvariant::OwnedObjectPath {
    zbus::zvariant::OwnedObjectPath::try_from(format!("/org/freedesktop/login1/session/{id}"))
        .unwrap()
}

/// The inhibitors the fake logind handed out: what, mode, and the read end
/// of a pipe whose write end the taker holds (it reads end-of-file once
/// every holder closed it).
pub type Inhibitors = std::sync::Arc<std::sync::Mutex<Vec<(String, String, std::io::PipeReader)>>>;

/// `org.freedesktop.login1.Manager`, as much of it as the agent asks.
struct FakeManager {
    sessions: Sessions,
    inhibitors: Inhibitors,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl FakeManager {
    fn inhibit(
        &self,
        what: String,
        _who: String,
        _why: String,
        mode: String,
    ) -> zbus::fdo::Result<zbus::zvariant::OwnedFd> {
        let (read, write) = std::io::pipe().map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        self.inhibitors.lock().unwrap().push((what, mode, read));
        Ok(std::os::fd::OwnedFd::from(write).into())
    }

    fn list_sessions(&self) -> Vec<(String, u32, String, String, zbus::zvariant::OwnedObjectPath)> {
        self.sessions
            .lock()
            .unwrap()
            .iter()
            .map(|s| {
                let user = format!("user{}", s.uid);
                (
                    s.id.to_owned(),
                    s.uid,
                    user,
                    "seat0".into(),
                    session_path(s.id),
                )
            })
            .collect()
    }
}

/// `org.freedesktop.login1.Session` of one id; reads the shared list.
struct FakeSessionObject {
    id: &'static str,
    all: Sessions,
}

impl FakeSessionObject {
    fn get(&self) -> zbus::fdo::Result<FakeSession> {
        let all = self.all.lock().unwrap();
        all.iter()
            .find(|s| s.id == self.id)
            .cloned()
            .ok_or_else(|| zbus::fdo::Error::UnknownObject(self.id.into()))
    }
}

#[zbus::interface(name = "org.freedesktop.login1.Session")]
impl FakeSessionObject {
    #[zbus(property)]
    fn class(&self) -> zbus::fdo::Result<String> {
        Ok(self.get()?.class.into())
    }

    #[zbus(property)]
    fn state(&self) -> zbus::fdo::Result<String> {
        Ok(self.get()?.state.into())
    }

    /// `(uid, user object path)`.
    #[zbus(property)]
    fn user(&self) -> zbus::fdo::Result<(u32, zbus::zvariant::OwnedObjectPath)> {
        let uid = self.get()?.uid;
        Ok((
            uid,
            zbus::zvariant::OwnedObjectPath::try_from(format!(
                "/org/freedesktop/login1/user/_{uid}"
            ))
            .unwrap(),
        ))
    }
}

/// Emits the screen lock of session `id`, as logind (the owner of its name).
pub fn emit_session_lock(logind: &zbus::blocking::Connection, id: &str) {
    logind
        .emit_signal(
            None::<()>,
            session_path(id),
            "org.freedesktop.login1.Session",
            "Lock",
            &(),
        )
        .unwrap();
}

/// Serves a fake logind on `bus` under the name org.freedesktop.login1.
pub fn fake_logind(
    bus: &Bus,
    sessions: &Sessions,
    ids: &[&'static str],
) -> zbus::blocking::Connection {
    fake_logind_inhibitors(bus, sessions, ids).0
}

/// [`fake_logind`], and the inhibitors it hands out.
pub fn fake_logind_inhibitors(
    bus: &Bus,
    sessions: &Sessions,
    ids: &[&'static str],
) -> (zbus::blocking::Connection, Inhibitors) {
    let inhibitors = Inhibitors::default();
    let mut b = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.freedesktop.login1")
        .unwrap()
        .serve_at(
            "/org/freedesktop/login1",
            FakeManager {
                sessions: sessions.clone(),
                inhibitors: inhibitors.clone(),
            },
        )
        .unwrap();
    for &id in ids {
        b = b
            .serve_at(
                session_path(id),
                FakeSessionObject {
                    id,
                    all: sessions.clone(),
                },
            )
            .unwrap();
    }
    (b.build().unwrap(), inhibitors)
}
