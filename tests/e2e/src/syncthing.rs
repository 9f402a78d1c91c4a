//! A pair of real Syncthing instances ("devices" A and B) on loopback,
//! sharing one folder, for end-to-end tests of syncing between two devices
//! on one machine.
//!
//! ```no_run
//! use keyward_e2e::syncthing::{self, Pair, Side};
//! use std::time::Duration;
//! if !keyward_e2e::require("syncthing", syncthing::available()) {
//!     return;
//! }
//! let root = tempfile::tempdir().unwrap();
//! let (a, b) = (root.path().join("a"), root.path().join("b"));
//! let mut pair = Pair::start(root.path(), &a, &b);
//! std::fs::write(a.join("f"), "x").unwrap();
//! pair.wait_synced(Duration::from_secs(60));
//! assert_eq!(std::fs::read(b.join("f")).unwrap(), b"x");
//! pair.stop_device(Side::B); // apart …
//! pair.start_device(Side::B); // … and together again
//! ```
//!
//! How it is set up (Debian's Syncthing 1.19, see TEST-SERVICES.md):
//! `syncthing generate` makes each device's certificate and key; the
//! `config.xml` is then written from scratch: the two devices (each dialling
//! the other at `tcp://127.0.0.1:PORT`), one `sendreceive` folder
//! ([`FOLDER_ID`]) shared by both, the GUI/REST API on `127.0.0.1` with an
//! API key of ours, and every kind of discovery, relaying, NAT traversal,
//! usage and crash reporting off, so that every socket is on 127.0.0.1.
//! Each instance runs as `syncthing serve` with `STMONITORED=1` (no monitor
//! process: the PID we hold is the one that syncs) in a process group of its
//! own, with `HOME` in the pair's root; its output goes to `ROOT/X.log`.
//! The REST API is spoken with a small HTTP/1.1 client over
//! [`std::net::TcpStream`] (no curl needed).

use rustix::process::Signal;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The id (and label) of the folder the two devices share.
pub const FOLDER_ID: &str = "keyward-e2e";

/// How long a stopped device gets to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long an instance gets to answer on its REST API after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How many checks in a row [`Pair::wait_synced`] wants before it believes
/// the pair is in sync.
const SYNCED_STREAK: u32 = 3;

/// The Syncthing binary, if there is one on `PATH` (or in `/usr/bin`).
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("syncthing"))
        .find(|p| p.is_file())
}

/// Whether Syncthing is installed.
pub fn available() -> bool {
    binary().is_some()
}

/// One of the two devices of a [`Pair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The first device.
    A,
    /// The second device.
    B,
}

impl Side {
    /// The other device.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }
}

/// One Syncthing instance.
struct Device {
    side: Side,
    /// Its `--home` (certificate, key, config, database).
    home: PathBuf,
    /// The shared folder on this device.
    dir: PathBuf,
    id: String,
    /// The sync protocol's listening port.
    port: u16,
    /// The GUI/REST API's port.
    gui_port: u16,
    api_key: String,
    /// Its stdout and stderr (appended to across restarts).
    log: PathBuf,
    child: Option<Child>,
}

/// Two Syncthing instances sharing one folder over 127.0.0.1; both are
/// killed (and waited for) when it is dropped.
pub struct Pair {
    devices: [Device; 2],
    /// `HOME` for the instances (so that nothing touches the real one).
    env_home: PathBuf,
}

impl Pair {
    /// Two Syncthing instances sharing one folder: `a_dir` and `b_dir`
    /// (created if missing), connected over 127.0.0.1. `root` (e.g. a temp
    /// dir) holds their homes (`root/a`, `root/b`) and logs (`root/a.log`,
    /// `root/b.log`). Returns once both answer on their REST API; they may
    /// not be connected to each other yet ([`Self::wait_synced`] waits for
    /// that too).
    pub fn start(root: &Path, a_dir: &Path, b_dir: &Path) -> Pair {
        let bin = binary().expect("syncthing is not installed");
        let root = std::path::absolute(root).unwrap();
        let env_home = root.join("home");
        std::fs::create_dir_all(&env_home).unwrap();
        // Four distinct free ports: hold them all before releasing any.
        let ports: Vec<u16> = {
            let held: Vec<std::net::TcpListener> = (0..4)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
                .collect();
            held.iter()
                .map(|l| l.local_addr().unwrap().port())
                .collect()
        };
        let make = |side: Side, dir: &Path, port: u16, gui_port: u16| -> Device {
            let home = root.join(side.name());
            std::fs::create_dir_all(&home).unwrap();
            let dir = std::path::absolute(dir).unwrap();
            std::fs::create_dir_all(&dir).unwrap();
            let generate = crate::run_bounded(
                st_command(&bin, &env_home, &["generate", &home_flag(&home)]),
                format!("syncthing generate --home={}", home.display()),
                None,
                Duration::from_secs(60),
            )
            .expect_code(0);
            let shown = crate::run_bounded(
                st_command(&bin, &env_home, &[&home_flag(&home), "--device-id"]),
                format!("syncthing --home={} --device-id", home.display()),
                None,
                Duration::from_secs(30),
            )
            .expect_code(0);
            let id = shown.stdout.trim().to_owned();
            assert!(
                id.len() == 63 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "unexpected device id {id:?}\n{shown}\n{generate}"
            );
            Device {
                side,
                log: root.join(format!("{}.log", side.name())),
                home,
                dir,
                id,
                port,
                gui_port,
                api_key: random_key(),
                child: None,
            }
        };
        let a = make(Side::A, a_dir, ports[0], ports[1]);
        let b = make(Side::B, b_dir, ports[2], ports[3]);
        std::fs::write(a.home.join("config.xml"), config_xml(&a, &b)).unwrap();
        std::fs::write(b.home.join("config.xml"), config_xml(&b, &a)).unwrap();
        let mut pair = Pair {
            devices: [a, b],
            env_home,
        };
        pair.start_device(Side::A);
        pair.start_device(Side::B);
        pair
    }

    fn dev(&self, side: Side) -> &Device {
        &self.devices[side.index()]
    }

    /// The shared folder on `side`.
    pub fn dir(&self, side: Side) -> &Path {
        &self.dev(side).dir
    }

    /// The device id of `side`.
    pub fn device_id(&self, side: Side) -> &str {
        &self.dev(side).id
    }

    /// The Syncthing home (`--home`) of `side`.
    pub fn home(&self, side: Side) -> &Path {
        &self.dev(side).home
    }

    /// The PID of `side`'s instance, if it is running.
    pub fn pid(&self, side: Side) -> Option<i32> {
        self.dev(side).child.as_ref().map(|c| c.id() as i32)
    }

    /// Every process of the running instances (each runs in a process group
    /// of its own: normally one process per instance).
    pub fn pids(&self) -> Vec<i32> {
        [Side::A, Side::B]
            .into_iter()
            .filter_map(|s| self.pid(s))
            .flat_map(group_members)
            .collect()
    }

    /// Starts `side`'s instance (again) with the same home and config, and
    /// waits until it answers on its REST API. Panics if it is running.
    pub fn start_device(&mut self, side: Side) {
        let bin = binary().expect("syncthing is not installed");
        let env_home = self.env_home.clone();
        let dev = &mut self.devices[side.index()];
        assert!(dev.child.is_none(), "device {side:?} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&dev.log)
            .unwrap();
        let mut c = st_command(
            &bin,
            &env_home,
            &[
                "serve",
                &home_flag(&dev.home),
                "--no-browser",
                "--no-restart",
                "--no-upgrade",
                "--logflags=3",
            ],
        );
        c.stdout(log.try_clone().unwrap()).stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start syncthing: {e}"));
        dev.child = Some(child);
        let start = Instant::now();
        loop {
            let dev = &mut self.devices[side.index()];
            if let Some(status) = dev.child.as_mut().unwrap().try_wait().unwrap() {
                dev.child = None;
                panic!(
                    "syncthing {side:?} exited ({status}) before its REST API answered\n{}",
                    self.logs_tail()
                );
            }
            if let Ok((200, _)) = self.try_rest(side, "GET", "/rest/system/ping") {
                return;
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "syncthing {side:?} does not answer on 127.0.0.1:{} after {START_TIMEOUT:?}\n{}",
                    self.dev(side).gui_port,
                    self.logs_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops `side`'s instance (SIGTERM to its process group, SIGKILL after
    /// a bound) and waits until it is gone: for "apart" scenarios. Nothing
    /// happens if it is not running.
    pub fn stop_device(&mut self, side: Side) {
        stop(&mut self.devices[side.index()]);
    }

    /// Blocks until both instances are connected and report the folder in
    /// sync with each other; panics with the logs' tails after `timeout`.
    ///
    /// Each round forces a rescan on both (`POST /rest/db/scan`, which
    /// returns when the scan is done, so a file written before this call is
    /// in the index), then checks on each side: the other device connected
    /// (`/rest/system/connections`); `/rest/db/status` `idle`, with nothing
    /// needed and no pull errors; `/rest/db/completion` for the other device
    /// at 100 % with nothing needed (so the other device has announced that
    /// it has everything this one has); and the same global state (files,
    /// directories, bytes) on both. Only [`SYNCED_STREAK`] such rounds in a
    /// row count, so that a file that appears mid-way (e.g. a conflict copy)
    /// is seen.
    pub fn wait_synced(&self, timeout: Duration) {
        let start = Instant::now();
        let mut streak = 0;
        let mut why = String::from("not checked yet");
        loop {
            match self.synced_once() {
                Ok(()) => {
                    streak += 1;
                    if streak >= SYNCED_STREAK {
                        return;
                    }
                }
                Err(e) => {
                    streak = 0;
                    why = e;
                }
            }
            if start.elapsed() > timeout {
                panic!(
                    "the pair is not in sync after {timeout:?}; last: {why}\n{}",
                    self.logs_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// One round of [`Self::wait_synced`]: `Err` says what is not in sync.
    pub fn synced_once(&self) -> Result<(), String> {
        let folder = format!("folder={FOLDER_ID}");
        for side in [Side::A, Side::B] {
            if self.pid(side).is_none() {
                return Err(format!("{side:?} is stopped"));
            }
            self.rest_ok(side, "POST", &format!("/rest/db/scan?{folder}"))?;
        }
        let mut globals = Vec::new();
        for side in [Side::A, Side::B] {
            let other = self.device_id(side.other());
            let conns = self.rest_json(side, "GET", "/rest/system/connections")?;
            if conns["connections"][other]["connected"] != serde_json::Value::Bool(true) {
                return Err(format!("{side:?} is not connected to {:?}", side.other()));
            }
            let st = self.rest_json(side, "GET", &format!("/rest/db/status?{folder}"))?;
            if st["state"] != "idle" {
                return Err(format!("{side:?} folder state is {}", st["state"]));
            }
            for key in [
                "needFiles",
                "needDirectories",
                "needSymlinks",
                "needDeletes",
                "needBytes",
                "needTotalItems",
                "pullErrors",
            ] {
                if !zero_or_absent(&st[key]) {
                    return Err(format!("{side:?} status has {key} = {}", st[key]));
                }
            }
            globals
                .push(["globalFiles", "globalDirectories", "globalBytes"].map(|k| st[k].clone()));
            let c = self.rest_json(
                side,
                "GET",
                &format!("/rest/db/completion?{folder}&device={other}"),
            )?;
            if c["completion"].as_f64() != Some(100.0) {
                return Err(format!(
                    "{side:?} sees {:?} at completion {}",
                    side.other(),
                    c["completion"]
                ));
            }
            for key in ["needBytes", "needItems", "needDeletes"] {
                if !zero_or_absent(&c[key]) {
                    return Err(format!(
                        "{side:?} sees {:?} with {key} = {}",
                        side.other(),
                        c[key]
                    ));
                }
            }
            if !matches!(c["remoteState"].as_str(), None | Some("valid")) {
                return Err(format!(
                    "{side:?} sees {:?} with remoteState {}",
                    side.other(),
                    c["remoteState"]
                ));
            }
        }
        if globals[0] != globals[1] {
            return Err(format!(
                "global states differ (files, dirs, bytes): A {:?}, B {:?}",
                globals[0], globals[1]
            ));
        }
        Ok(())
    }

    /// Polls `cond` (every 100 ms) until it holds; panics with the logs'
    /// tails after `timeout`.
    pub fn wait_for(&self, mut cond: impl FnMut() -> bool, timeout: Duration) {
        let start = Instant::now();
        while !cond() {
            if start.elapsed() > timeout {
                panic!("condition not met after {timeout:?}\n{}", self.logs_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A REST call on `side` (`method` `path`, e.g. `GET /rest/db/status?folder=…`)
    /// with its API key: `(HTTP status, body)`.
    pub fn try_rest(&self, side: Side, method: &str, path: &str) -> Result<(u16, String), String> {
        let d = self.dev(side);
        http(d.gui_port, &d.api_key, method, path)
    }

    /// [`Self::try_rest`], requiring status 200: the body.
    pub fn rest_ok(&self, side: Side, method: &str, path: &str) -> Result<String, String> {
        match self.try_rest(side, method, path)? {
            (200, body) => Ok(body),
            (code, body) => Err(format!(
                "{side:?}: {method} {path} gave {code}: {}",
                body.trim()
            )),
        }
    }

    /// [`Self::rest_ok`], parsed as JSON.
    pub fn rest_json(
        &self,
        side: Side,
        method: &str,
        path: &str,
    ) -> Result<serde_json::Value, String> {
        let body = self.rest_ok(side, method, path)?;
        serde_json::from_str(&body).map_err(|e| format!("{method} {path}: not JSON ({e}): {body}"))
    }

    /// The sockets of the running instances whose local address is not a
    /// loopback one (TCP and UDP, IPv4 and IPv6, listening or not), one
    /// line each: empty when everything stays on 127.0.0.1.
    pub fn non_loopback_sockets(&self) -> Vec<String> {
        self.pids()
            .into_iter()
            .flat_map(|pid| {
                inet_sockets(pid)
                    .into_iter()
                    .filter(|s| !s.loopback)
                    .map(move |s| format!("pid {pid}: {}", s.line))
            })
            .collect()
    }

    /// The inet sockets of the running instances, one line each
    /// (`proto local remote state`).
    pub fn sockets(&self) -> Vec<String> {
        self.pids()
            .into_iter()
            .flat_map(|pid| {
                inet_sockets(pid)
                    .into_iter()
                    .map(move |s| format!("pid {pid}: {}", s.line))
            })
            .collect()
    }

    /// What `side` logged so far.
    pub fn log(&self, side: Side) -> String {
        std::fs::read_to_string(&self.dev(side).log).unwrap_or_default()
    }

    /// The last lines of both logs (for failure messages).
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for side in [Side::A, Side::B] {
            let log = self.log(side);
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(40);
            out.push_str(&format!(
                "--- syncthing {side:?} log ({}), last lines\n{}\n",
                self.dev(side).log.display(),
                lines[from..].join("\n")
            ));
        }
        out
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for dev in &mut self.devices {
            stop(dev);
        }
    }
}

/// Stops an instance: SIGTERM to its process group, SIGKILL after
/// [`STOP_GRACE`]; reaps it and waits (bounded) for the rest of its group.
fn stop(dev: &mut Device) {
    let Some(mut child) = dev.child.take() else {
        return;
    };
    let pid = child.id() as i32;
    let group = |sig| {
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process_group(p, sig);
        }
    };
    group(Signal::TERM);
    let start = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if start.elapsed() > STOP_GRACE {
            eprintln!(
                "syncthing {:?} (pid {pid}) ignored SIGTERM for {STOP_GRACE:?}; killing it",
                dev.side
            );
            group(Signal::KILL);
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Anything left in its group (a monitor's child, say) goes too.
    let start = Instant::now();
    while !group_members(pid).is_empty() {
        group(if start.elapsed() > STOP_GRACE {
            Signal::KILL
        } else {
            Signal::TERM
        });
        if start.elapsed() > STOP_GRACE * 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The live (non-zombie) processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After "comm)": state ppid pgrp …
            let rest = stat.rsplit(')').next().unwrap_or_default();
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
        })
        .collect()
}

/// A `syncthing args…` command with the pair's environment: `HOME` in the
/// pair's root, no monitor process, no default folder, no upgrades.
fn st_command(bin: &Path, env_home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .env("HOME", env_home)
        .env("STMONITORED", "1")
        .env("STNODEFAULTFOLDER", "1")
        .env("STNORESTART", "1")
        .env("STNOUPGRADE", "1")
        // Skips the start-up benchmark that picks a SHA-256 implementation.
        .env("STHASHING", "minio")
        .env_remove("STGUIADDRESS")
        .env_remove("STGUIAPIKEY")
        .env_remove("STTRACE")
        .stdin(Stdio::null());
    c
}

fn home_flag(home: &Path) -> String {
    format!("--home={}", home.display())
}

/// A fresh API key (hex from `/dev/urandom`).
fn random_key() -> String {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn zero_or_absent(v: &serde_json::Value) -> bool {
    v.is_null() || v.as_f64() == Some(0.0)
}

/// The whole `config.xml` of `me`, which shares [`FOLDER_ID`] with `peer`.
fn config_xml(me: &Device, peer: &Device) -> String {
    let device = |d: &Device, address: &str| {
        format!(
            "    <device id=\"{id}\" name=\"{name}\" compression=\"metadata\" introducer=\"false\" \
             skipIntroductionRemovals=\"false\" introducedBy=\"\">\n\
             \x20       <address>{address}</address>\n\
             \x20       <paused>false</paused>\n\
             \x20       <autoAcceptFolders>false</autoAcceptFolders>\n\
             \x20   </device>\n",
            id = d.id,
            name = d.side.name(),
        )
    };
    let (first, second) = if me.side == Side::A {
        (me, peer)
    } else {
        (peer, me)
    };
    format!(
        "<configuration version=\"36\">\n\
         \x20   <folder id=\"{FOLDER_ID}\" label=\"{FOLDER_ID}\" path=\"{path}\" type=\"sendreceive\" \
         rescanIntervalS=\"2\" fsWatcherEnabled=\"true\" fsWatcherDelayS=\"1\" ignorePerms=\"false\" \
         autoNormalize=\"true\">\n\
         \x20       <filesystemType>basic</filesystemType>\n\
         \x20       <device id=\"{first}\" introducedBy=\"\"></device>\n\
         \x20       <device id=\"{second}\" introducedBy=\"\"></device>\n\
         \x20       <minDiskFree unit=\"%\">0</minDiskFree>\n\
         \x20       <maxConflicts>10</maxConflicts>\n\
         \x20       <markerName>.stfolder</markerName>\n\
         \x20       <paused>false</paused>\n\
         \x20   </folder>\n\
         {me_device}\
         {peer_device}\
         \x20   <gui enabled=\"true\" tls=\"false\" debugging=\"false\">\n\
         \x20       <address>127.0.0.1:{gui_port}</address>\n\
         \x20       <apikey>{api_key}</apikey>\n\
         \x20       <theme>default</theme>\n\
         \x20   </gui>\n\
         \x20   <options>\n\
         \x20       <listenAddress>tcp://127.0.0.1:{port}</listenAddress>\n\
         \x20       <globalAnnounceEnabled>false</globalAnnounceEnabled>\n\
         \x20       <localAnnounceEnabled>false</localAnnounceEnabled>\n\
         \x20       <relaysEnabled>false</relaysEnabled>\n\
         \x20       <natEnabled>false</natEnabled>\n\
         \x20       <crashReportingEnabled>false</crashReportingEnabled>\n\
         \x20       <urAccepted>-1</urAccepted>\n\
         \x20       <startBrowser>false</startBrowser>\n\
         \x20       <autoUpgradeIntervalH>0</autoUpgradeIntervalH>\n\
         \x20       <announceLANAddresses>false</announceLANAddresses>\n\
         \x20       <reconnectionIntervalS>2</reconnectionIntervalS>\n\
         \x20       <minHomeDiskFree unit=\"%\">0</minHomeDiskFree>\n\
         \x20       <setLowPriority>false</setLowPriority>\n\
         \x20   </options>\n\
         </configuration>\n",
        path = xml_escape(&me.dir.to_string_lossy()),
        first = first.id,
        second = second.id,
        me_device = device(me, "dynamic"),
        peer_device = device(peer, &format!("tcp://127.0.0.1:{}", peer.port)),
        gui_port = me.gui_port,
        api_key = me.api_key,
        port = me.port,
    )
}

/// A minimal HTTP/1.1 request to `127.0.0.1:port` with `X-API-Key`:
/// `(status, body)`; a chunked body is decoded.
fn http(port: u16, key: &str, method: &str, path: &str) -> Result<(u16, String), String> {
    let err = |e: std::io::Error| format!("{method} {path} on 127.0.0.1:{port}: {e}");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(err)?;
    // A scan returns when it is done: give it time.
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(err)?;
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(err)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {key}\r\n\
         Connection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .map_err(err)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(err)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: no HTTP header in {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path}: bad status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body).ok_or_else(|| format!("{method} {path}: bad chunked body {body:?}"))?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// One inet socket of a process.
struct Socket {
    line: String,
    loopback: bool,
}

/// The TCP and UDP sockets (IPv4 and IPv6) that `pid` holds open, from
/// `/proc/PID/fd` and `/proc/PID/net/{tcp,tcp6,udp,udp6}`.
fn inet_sockets(pid: i32) -> Vec<Socket> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let target = std::fs::read_link(e.path()).ok()?;
                    let t = target.to_str()?;
                    Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")) else {
            continue;
        };
        for row in table.lines().skip(1) {
            let f: Vec<&str> = row.split_whitespace().collect();
            if f.len() < 10 || !inodes.iter().any(|i| i == f[9]) {
                continue;
            }
            let (Some(local), Some(remote)) = (proc_addr(f[1]), proc_addr(f[2])) else {
                continue;
            };
            let state = match (proto.starts_with("tcp"), f[3]) {
                (true, "0A") => "LISTEN",
                (true, "01") => "ESTABLISHED",
                (true, _) => "tcp-other",
                (false, _) => "udp",
            };
            out.push(Socket {
                line: format!("{proto} {local} -> {remote} {state}"),
                loopback: local.ip().is_loopback() || is_mapped_loopback(&local.ip()),
            });
        }
    }
    out
}

fn is_mapped_loopback(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        std::net::IpAddr::V4(_) => false,
    }
}

/// `0100007F:1F90` (or the 32-hex-digit IPv6 form) as an address. The
/// kernel prints each 32-bit word in host (little-endian) order.
fn proc_addr(s: &str) -> Option<std::net::SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    // Each word's bytes as the kernel holds them: the address in network order.
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

/// The files under `dir` (relative paths, `/`-separated) with their
/// contents, leaving out Syncthing's own entries (`.stfolder`,
/// `.stversions`, `.stignore`, temporary `.syncthing.*.tmp` and
/// `~syncthing~*.tmp` files): what a user sees as the folder's contents.
pub fn folder_contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    crate::files_under(dir)
        .into_iter()
        .filter_map(|(p, bytes)| {
            let rel = p.strip_prefix(dir).ok()?.to_string_lossy().into_owned();
            let own = rel.split('/').any(|part| {
                matches!(part, ".stfolder" | ".stversions" | ".stignore")
                    || ((part.starts_with(".syncthing.") || part.starts_with("~syncthing~"))
                        && part.ends_with(".tmp"))
            });
            (!own).then_some((rel, bytes))
        })
        .collect()
}

/// Whether a file name is a Syncthing conflict copy
/// (`NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT`).
pub fn is_conflict_copy(name: &str) -> bool {
    name.contains(".sync-conflict-")
}
