//! The test harness: a private pcscd with virtual YubiKeys in it.
//!
//! ```no_run
//! use virtual_yubikey::harness::{CardConfig, PcscEnv};
//!
//! let Some(env) = PcscEnv::start_or_skip() else { return };   // skip or fail, see below
//! let card = env.insert_card(CardConfig::new(12345678)).unwrap();
//! let status = env
//!     .command("yubico-piv-tool")
//!     .args(["-r", &card.reader_name(), "-a", "status"])
//!     .status()
//!     .unwrap();
//! assert!(status.success());
//! card.remove().unwrap();                                        // or just drop it
//! ```
//!
//! # What [`PcscEnv::start`] sets up
//!
//! 1. The packages (`pcscd`, `vsmartcard-vpcd`, `iproute2`, `util-linux`) are
//!    installed with apt-get if missing — which needs root, as does the rest.
//! 2. `unshare --net --mount` starts `scripts/pcscd-netns.sh` in a new network
//!    and mount namespace: loopback up (vpcd listens on 0.0.0.0, but only in
//!    there), a private temporary directory bind-mounted over `/run/pcscd`,
//!    then pcscd. Its socket is `<dir>/run/pcscd.comm`.
//! 3. PC/SC clients reach it with `PCSCLITE_CSOCK_NAME=<dir>/run/pcscd.comm`
//!    ([`PcscEnv::pcsc_env`], [`PcscEnv::command`]). libpcsclite reads that
//!    variable (pcscd 1.9.9 itself does not, hence the bind mount), so every
//!    environment is independent and tests may run in parallel.
//! 4. [`PcscEnv::insert_card`] starts the card binary inside the namespace
//!    (`nsenter --net=/proc/<pid>/ns/net`) on vpcd's reader 0 or 1 and waits
//!    until PC/SC reports the card present.
//!
//! # Teardown
//!
//! Dropping a [`CardHandle`] or the [`PcscEnv`] kills its processes (by PID)
//! and waits for them; that also happens when a test panics. If the test
//! process dies outright, the processes notice their stdin closing (the
//! harness holds the other end) and exit. The temporary directory is removed.
//!
//! # Clients in the test process itself
//!
//! libpcsclite reads `PCSCLITE_CSOCK_NAME` once per process, and setting an
//! environment variable in a running (multi-threaded) test is unsound. So a
//! test that uses the `pcsc` or `yubikey` crate directly runs that part in a
//! child process: [`PcscEnv::run_child_test`] runs one `#[ignore]`d test of
//! the same test binary with the environment set; the child test reads its
//! parameters with [`child_var`]. Programs under test (the agent) are child
//! processes anyway: give them [`PcscEnv::pcsc_env`].
//!
//! # Skip or fail
//!
//! Under a plain `cargo test`, a test whose services are missing prints why
//! and passes ("skips"). With `KEYWARD_REQUIRE_SERVICES=1` (the CI test
//! script sets it) it fails instead. [`require_or_skip`] and
//! [`PcscEnv::start_or_skip`] are the one place that rule lives.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use crate::cli::ReaderWait;
use crate::cli::reader_name;
use crate::hardware::TouchSensor;
use crate::state::Version;

/// Set to `1` to turn "skipped: service missing" into a test failure.
pub const REQUIRE_SERVICES_VAR: &str = "KEYWARD_REQUIRE_SERVICES";
/// Path of the card binary, overriding the search.
pub const BIN_VAR: &str = "VIRTUAL_YUBIKEY_BIN";
/// The libpcsclite variable that names pcscd's socket.
pub const SOCKET_VAR: &str = "PCSCLITE_CSOCK_NAME";
/// Set in the environment of a child test run by [`PcscEnv::run_child_test`].
pub const CHILD_VAR: &str = "VIRTUAL_YUBIKEY_CHILD";

/// Packages the environment needs at run time.
pub const RUNTIME_PACKAGES: &[&str] = &["pcscd", "vsmartcard-vpcd", "iproute2", "util-linux"];

/// The in-namespace wrapper (also used by `scripts/vcard-up.sh`).
const NETNS_SCRIPT: &str = include_str!("../scripts/pcscd-netns.sh");

/// What went wrong in the harness.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// Something the tests need is missing and could not be installed; the
    /// only kind of error that may be turned into a skip.
    #[error("{0}")]
    Unavailable(String),
    /// An OS operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The error.
        source: std::io::Error,
    },
    /// A process misbehaved or a wait timed out; the message carries logs.
    #[error("{0}")]
    Failed(String),
}

impl HarnessError {
    fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let action = action.into();
        move |source| HarnessError::Io { action, source }
    }
}

/// Result of harness operations.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------
// Skip or fail.

/// Whether `KEYWARD_REQUIRE_SERVICES=1` is set: missing services fail tests.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_VAR).is_ok_and(|v| v == "1")
}

/// The one rule for a missing service: with `KEYWARD_REQUIRE_SERVICES=1`,
/// fail the test (panic) with `reason`; otherwise print that the test is
/// skipped and why, and return so the caller can `return` early.
#[allow(clippy::panic)] // failing the calling test is the point
pub fn skip_or_fail(reason: &dyn Display) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_owned();
    if services_required() {
        panic!("{test}: {reason} ({REQUIRE_SERVICES_VAR}=1, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED {test}: {reason} (set {REQUIRE_SERVICES_VAR}=1 to make this a failure)");
}

/// Checks a requirement, installing its package if missing and possible.
/// `true`: go ahead. `false`: the test should return now (it was reported
/// as skipped). Panics instead when `KEYWARD_REQUIRE_SERVICES=1`.
///
/// `requirement` is `"pcscd"` (the whole stack this module runs: root,
/// pcscd, vpcd, unshare, nsenter, ip) or a program name. The packages of
/// `yubico-piv-tool`, `pkcs15-tool`/`opensc-tool`/`pkcs11-tool` (opensc) and
/// `openssl` are installed if missing; other programs must be on PATH.
pub fn require_or_skip(requirement: &str) -> bool {
    match check_requirement(requirement) {
        Ok(()) => true,
        Err(e) => {
            skip_or_fail(&e);
            false
        }
    }
}

/// Like [`require_or_skip`], returning the reason instead of deciding.
pub fn check_requirement(requirement: &str) -> Result<()> {
    if requirement == "pcscd" {
        return check_pcsc_stack();
    }
    if find_program(requirement).is_some() {
        return Ok(());
    }
    // Only programs whose package we know are installed on demand.
    let package = match requirement {
        "yubico-piv-tool" => "yubico-piv-tool",
        "pkcs15-tool" | "opensc-tool" | "pkcs11-tool" => "opensc",
        "openssl" => "openssl",
        _ => {
            return Err(HarnessError::Unavailable(format!(
                "{requirement} is not on PATH"
            )));
        }
    };
    ensure_packages(&[package])?;
    find_program(requirement).map(|_| ()).ok_or_else(|| {
        HarnessError::Unavailable(format!(
            "{requirement} is not on PATH even after installing package {package}"
        ))
    })
}

fn check_pcsc_stack() -> Result<()> {
    if !is_root() {
        return Err(HarnessError::Unavailable(
            "the virtual card environment needs root (unshare --net --mount, mount --bind)".into(),
        ));
    }
    ensure_packages(RUNTIME_PACKAGES)?;
    for program in ["pcscd", "unshare", "nsenter", "ip", "mount"] {
        if find_program(program).is_none() {
            return Err(HarnessError::Unavailable(format!(
                "{program} is not on PATH"
            )));
        }
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Finds `program` on PATH (and in the sbin directories, which a non-login
/// root shell may lack).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Installs the Debian packages that are not installed yet (root only).
/// Serialised within the process; apt's own lock (waited for) serialises
/// processes.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    static APT: Mutex<()> = Mutex::new(());
    let missing = |pkgs: &[&str]| -> Vec<String> {
        pkgs.iter()
            .filter(|p| {
                !Command::new("dpkg-query")
                    .args(["-W", "-f=${Status}", p])
                    .output()
                    .is_ok_and(|o| o.stdout.ends_with(b"install ok installed"))
            })
            .map(|p| (*p).to_owned())
            .collect()
    };
    if missing(packages).is_empty() {
        return Ok(());
    }
    let _guard = APT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let todo = missing(packages);
    if todo.is_empty() {
        return Ok(());
    }
    let hint = format!(
        "apt-get install -y --no-install-recommends {}",
        todo.join(" ")
    );
    if !is_root() || find_program("apt-get").is_none() {
        return Err(HarnessError::Unavailable(format!(
            "missing packages {todo:?}; install them with `{hint}`"
        )));
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
    };
    let mut install: Vec<&str> = vec![
        "install",
        "-y",
        "--no-install-recommends",
        "-o",
        "DPkg::Lock::Timeout=300",
    ];
    install.extend(todo.iter().map(String::as_str));
    eprintln!("virtual-yubikey harness: installing {todo:?}");
    let mut out = apt(&install).map_err(HarnessError::io("running apt-get"))?;
    if !out.status.success() {
        // Maybe the package lists are missing or stale.
        let _ = apt(&["update", "-o", "DPkg::Lock::Timeout=300"]);
        out = apt(&install).map_err(HarnessError::io("running apt-get"))?;
    }
    if !out.status.success() {
        return Err(HarnessError::Unavailable(format!(
            "`{hint}` failed:\n{}",
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        )));
    }
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// Finding the card binary.

/// Finds the `virtual-yubikey` binary:
/// 1. `$VIRTUAL_YUBIKEY_BIN`, if set;
/// 2. under cargo (`$CARGO` is set for tests), `cargo build -p virtual-yubikey
///    --bin virtual-yubikey` in the same profile as the running test, which
///    is quick when it is up to date and never leaves a stale binary;
/// 3. `virtual-yubikey` in the target directory of the running executable.
///
/// The answer is computed once per process.
pub fn card_binary() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate_binary().map_err(|e| e.to_string()))
        .clone()
        .map_err(HarnessError::Failed)
}

fn locate_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(BIN_VAR) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(HarnessError::Failed(format!(
                "{BIN_VAR}={} is not a file",
                p.display()
            )))
        };
    }
    let exe = std::env::current_exe().map_err(HarnessError::io("finding the test executable"))?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let profile_dir = exe
        .parent()
        .map(|p| {
            if p.ends_with("deps") {
                p.parent().unwrap_or(p)
            } else {
                p
            }
        })
        .map(Path::to_path_buf);
    let mut build_error = None;
    if let Some(cargo) = std::env::var_os("CARGO") {
        match cargo_build(&cargo, profile_dir.as_deref()) {
            Ok(p) => return Ok(p),
            Err(e) => build_error = Some(e),
        }
    }
    if let Some(dir) = &profile_dir {
        let sibling = dir.join("virtual-yubikey");
        if sibling.is_file() {
            return Ok(sibling);
        }
    }
    Err(HarnessError::Failed(format!(
        "cannot find the virtual-yubikey binary: set {BIN_VAR}, or run under cargo{}",
        build_error
            .map(|e| format!(" (cargo build failed: {e})"))
            .unwrap_or_default()
    )))
}

fn cargo_build(cargo: &OsStr, profile_dir: Option<&Path>) -> Result<PathBuf> {
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "virtual-yubikey",
        "--bin",
        "virtual-yubikey",
        "--message-format=json",
    ])
    .current_dir(env!("CARGO_MANIFEST_DIR"))
    .stdin(Stdio::null());
    // Build in the profile (and hence target directory) of the running test.
    // (The target directory is cargo's choice, as for the test itself.)
    if let Some(profile) = profile_dir
        .and_then(Path::file_name)
        .and_then(OsStr::to_str)
        && profile != "debug"
    {
        cmd.args(["--profile", profile]);
    }
    let out = cmd
        .output()
        .map_err(HarnessError::io("running cargo build"))?;
    if !out.status.success() {
        return Err(HarnessError::Failed(tail(
            &String::from_utf8_lossy(&out.stderr),
            30,
        )));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let exe = v.get("executable")?.as_str()?;
            exe.ends_with("/virtual-yubikey")
                .then(|| PathBuf::from(exe))
        })
        .ok_or_else(|| {
            HarnessError::Failed("cargo build reported no virtual-yubikey executable".into())
        })
}

// ---------------------------------------------------------------------------
// Processes.

/// A child process that is killed (SIGKILL, by PID) and reaped when dropped.
#[derive(Debug)]
struct Owned {
    child: Child,
    /// Held open as the process's lifeline; closed first on drop.
    stdin: Option<ChildStdin>,
}

impl Owned {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Closes the lifeline and waits up to `grace` for a clean exit, then kills.
    fn stop(&mut self, grace: Duration) {
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// Kills a process we started but do not hold as a [`Child`] (pcscd inside
/// the namespace), by PID, with `kill -KILL`.
fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

// ---------------------------------------------------------------------------
// The environment.

/// Options for [`PcscEnv::start_with`].
#[derive(Debug, Clone)]
pub struct EnvOptions {
    /// The card binary; `None` to find it with [`card_binary`]. Tests in this
    /// crate pass `env!("CARGO_BIN_EXE_virtual-yubikey")`.
    pub card_binary: Option<PathBuf>,
    /// How long pcscd may take to come up, and a card to be detected.
    pub timeout: Duration,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            card_binary: None,
            timeout: Duration::from_secs(20),
        }
    }
}

/// A private pcscd with vpcd's two readers, in its own network namespace.
#[derive(Debug)]
pub struct PcscEnv {
    wrapper: Owned,
    pcscd_pid: Option<u32>,
    socket: PathBuf,
    binary: PathBuf,
    timeout: Duration,
    occupied: Arc<Mutex<BTreeSet<u8>>>,
    // Last, so it is removed after the processes are gone.
    dir: tempfile::TempDir,
}

impl PcscEnv {
    /// Starts an environment with default options; see the module docs.
    pub fn start() -> Result<PcscEnv> {
        Self::start_with(EnvOptions::default())
    }

    /// Starts an environment, or reports (skip or fail, per
    /// [`skip_or_fail`]) why the services are unavailable and returns
    /// `None`. Other errors — the services exist but misbehave — panic.
    pub fn start_or_skip() -> Option<PcscEnv> {
        Self::start_with_or_skip(EnvOptions::default())
    }

    /// [`PcscEnv::start_or_skip`] with options.
    #[allow(clippy::panic)] // it is meant to fail the calling test
    pub fn start_with_or_skip(options: EnvOptions) -> Option<PcscEnv> {
        match Self::start_with(options) {
            Ok(env) => Some(env),
            Err(e @ HarnessError::Unavailable(_)) => {
                skip_or_fail(&e);
                None
            }
            Err(e) => panic!("starting the virtual card environment: {e}"),
        }
    }

    /// Starts an environment.
    pub fn start_with(options: EnvOptions) -> Result<PcscEnv> {
        check_pcsc_stack()?;
        let binary = match options.card_binary {
            Some(b) => b,
            None => card_binary()?,
        };
        // Unix socket paths are limited to 108 bytes: stay short.
        let base = std::env::temp_dir();
        let base = if base.as_os_str().len() > 60 {
            PathBuf::from("/tmp")
        } else {
            base
        };
        let dir = tempfile::Builder::new()
            .prefix("vyk-")
            .tempdir_in(base)
            .map_err(HarnessError::io("creating the environment's directory"))?;
        std::fs::create_dir(dir.path().join("run"))
            .map_err(HarnessError::io("creating the pcscd run directory"))?;
        // A copy of the wrapper in the directory: no dependence on where the
        // sources are at run time, and a readable `ps`.
        let script = dir.path().join("pcscd-netns.sh");
        std::fs::write(&script, NETNS_SCRIPT)
            .map_err(HarnessError::io("writing the namespace wrapper"))?;
        let child = Command::new("unshare")
            .args(["--net", "--mount", "--propagation", "private", "sh"])
            .arg(&script)
            .arg(dir.path())
            .arg("stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(HarnessError::io("starting unshare"))?;
        let mut wrapper = Owned { child, stdin: None };
        wrapper.stdin = wrapper.child.stdin.take();
        let mut env = PcscEnv {
            wrapper,
            pcscd_pid: None,
            socket: dir.path().join("run/pcscd.comm"),
            binary,
            timeout: options.timeout,
            occupied: Arc::new(Mutex::new(BTreeSet::new())),
            dir,
        };
        env.wait_until_up()?;
        Ok(env)
    }

    fn wait_until_up(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let pid_file = self.dir.path().join("pcscd.pid");
        while self.pcscd_pid.is_none() {
            if let Some(status) = self.wrapper.exited() {
                let mut stderr = String::new();
                if let Some(mut e) = self.wrapper.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                }
                return Err(HarnessError::Failed(format!(
                    "the pcscd namespace wrapper exited ({status}) before pcscd started:\n{stderr}\n{}",
                    self.pcscd_log()
                )));
            }
            self.pcscd_pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            if Instant::now() > deadline {
                return Err(HarnessError::Failed("pcscd did not start".into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let wrapper = &mut self.wrapper;
        let log = self.dir.path().join("pcscd.log");
        wait_reader(
            &self.binary,
            &self.socket,
            0,
            ReaderWait::Listed,
            remaining,
            || match wrapper.exited() {
                None => Ok(()),
                Some(status) => Err(HarnessError::Failed(format!(
                    "pcscd's namespace wrapper exited ({status})"
                ))),
            },
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            HarnessError::Failed(format!("pcscd did not come up: {e}\npcscd log:\n{log}"))
        })
    }

    /// The directory holding the socket, logs, touch files (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// pcscd's socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// PID of a process inside the network namespace (for `nsenter --net`).
    pub fn netns_pid(&self) -> u32 {
        self.wrapper.pid()
    }

    /// The card binary this environment uses.
    pub fn card_binary(&self) -> &Path {
        &self.binary
    }

    /// The environment variables a PC/SC client process needs to use this
    /// pcscd: `PCSCLITE_CSOCK_NAME=<dir>/run/pcscd.comm`.
    pub fn pcsc_env(&self) -> Vec<(String, String)> {
        vec![(SOCKET_VAR.to_owned(), self.socket.display().to_string())]
    }

    /// A [`Command`] for `program` with [`PcscEnv::pcsc_env`] applied.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.pcsc_env());
        cmd
    }

    /// pcscd's log so far (for failure messages).
    pub fn pcscd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pcscd.log")).unwrap_or_default()
    }

    /// Waits until PC/SC reports reader `reader` (0 or 1) in `state`, asking
    /// pcscd through `virtual-yubikey pcsc-wait`.
    pub fn wait_reader_state(
        &self,
        reader: u8,
        state: ReaderWait,
        timeout: Duration,
    ) -> Result<()> {
        wait_reader(
            &self.binary,
            &self.socket,
            reader,
            state,
            timeout,
            || Ok(()),
        )
    }

    /// Starts a card on `config.reader` inside the namespace and waits until
    /// PC/SC reports it present.
    pub fn insert_card(&self, config: CardConfig) -> Result<CardHandle> {
        let reader = config.reader;
        if reader > 1 {
            return Err(HarnessError::Failed(format!(
                "vpcd has readers 0 and 1, not {reader}"
            )));
        }
        {
            let mut occupied = self.occupied.lock().unwrap_or_else(|p| p.into_inner());
            if !occupied.insert(reader) {
                return Err(HarnessError::Failed(format!(
                    "reader {reader} already has a card; remove it first"
                )));
            }
        }
        let slot = ReaderSlot {
            reader,
            occupied: Arc::clone(&self.occupied),
        };
        let touch_file = self
            .dir
            .path()
            .join(format!("touch-{reader}-{}", config.serial));
        let log = self
            .dir
            .path()
            .join(format!("card-{reader}-{}.log", config.serial));
        let log_file =
            std::fs::File::create(&log).map_err(HarnessError::io("creating the card log"))?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/proc/{}/ns/net", self.netns_pid()))
            .arg("--")
            .arg(&self.binary)
            .arg("card")
            .args(["--serial", &config.serial.to_string()])
            .args(["--version", &config.version.to_string()])
            .args(["--reader", &reader.to_string()])
            .arg("--touch-file")
            .arg(&touch_file)
            .args([
                "--touch-timeout",
                &config.touch_timeout.as_secs_f64().to_string(),
            ])
            .arg("--exit-on-stdin-eof");
        if let Some(f) = &config.state_file {
            cmd.arg("--state").arg(f);
        }
        for (flag, value) in [
            ("--pin", &config.pin),
            ("--puk", &config.puk),
            ("--mgmt-key", &config.mgmt_key),
        ] {
            if let Some(v) = value {
                cmd.args([flag, v]);
            }
        }
        cmd.args(&config.extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd
            .spawn()
            .map_err(HarnessError::io("starting the card with nsenter"))?;
        let mut process = Owned { child, stdin: None };
        process.stdin = process.child.stdin.take();
        let mut card = CardHandle {
            process,
            serial: config.serial,
            touch_file,
            log,
            binary: self.binary.clone(),
            socket: self.socket.clone(),
            timeout: self.timeout,
            slot,
        };
        card.wait_present()?;
        Ok(card)
    }

    /// Runs the `#[ignore]`d test `test_name` of the running test binary in a
    /// child process whose environment reaches this pcscd, plus `vars` and
    /// `VIRTUAL_YUBIKEY_CHILD=1`. Fails unless exactly that test ran and passed;
    /// on failure the error holds the child's output.
    pub fn run_child_test(&self, test_name: &str, vars: &[(&str, String)]) -> Result<Output> {
        let exe =
            std::env::current_exe().map_err(HarnessError::io("finding the test executable"))?;
        let out = self
            .command(&exe)
            .args([
                test_name,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_VAR, "1")
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .output()
            .map_err(HarnessError::io(format!("running child test {test_name}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains("1 passed") {
            return Err(HarnessError::Failed(format!(
                "child test {test_name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(out)
    }
}

impl Drop for PcscEnv {
    fn drop(&mut self) {
        // Closing the wrapper's stdin makes it stop pcscd; then make sure.
        self.wrapper.stop(Duration::from_secs(2));
        if let Some(pid) = self.pcscd_pid
            && Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "pcscd")
        {
            kill_pid(pid);
        }
    }
}

/// In a child test run by [`PcscEnv::run_child_test`], the variable `name`;
/// `None` when not running as such a child (the test should then return).
pub fn child_var(name: &str) -> Option<String> {
    std::env::var_os(CHILD_VAR)?;
    std::env::var(name).ok()
}

/// Runs `virtual-yubikey pcsc-wait` for `reader` and `state`; while it runs,
/// `alive` is polled and its error ends the wait early (a process that should
/// be serving the reader died).
fn wait_reader(
    binary: &Path,
    socket: &Path,
    reader: u8,
    state: ReaderWait,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    let state = match state {
        ReaderWait::Present => "present",
        ReaderWait::Absent => "absent",
        ReaderWait::Listed => "listed",
    };
    let mut child = Command::new(binary)
        .args([
            "pcsc-wait",
            "--reader",
            &reader.to_string(),
            "--state",
            state,
        ])
        .args(["--timeout", &timeout.as_secs_f64().to_string()])
        .env(SOCKET_VAR, socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(HarnessError::io("running virtual-yubikey pcsc-wait"))?;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(HarnessError::io("waiting for pcsc-wait"))?
        {
            if status.success() {
                return Ok(());
            }
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
            }
            return Err(HarnessError::Failed(format!(
                "reader {} not {state}: {}",
                reader_name(reader),
                stderr.trim()
            )));
        }
        if let Err(e) = alive() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------
// Cards.

/// How to start a card; `CardConfig::new(serial)` and then set fields.
#[derive(Debug, Clone)]
pub struct CardConfig {
    /// Serial number.
    pub serial: u32,
    /// vpcd reader, 0 or 1.
    pub reader: u8,
    /// Firmware version (5.7 and later: AES-192 default management key).
    pub version: Version,
    /// State file to load from and save to ("re-insert" the same card).
    pub state_file: Option<PathBuf>,
    /// How long the card waits for a touch (a real one: 15 s).
    pub touch_timeout: Duration,
    /// Initial PIN, if not the default (new cards only).
    pub pin: Option<String>,
    /// Initial PUK, if not the default.
    pub puk: Option<String>,
    /// Initial management key, `[3des|aes128|aes192|aes256:]HEX`.
    pub mgmt_key: Option<String>,
    /// More arguments for the card binary.
    pub extra_args: Vec<String>,
}

impl CardConfig {
    /// A factory-fresh YubiKey 5 (firmware 5.4.3) on reader 0.
    pub fn new(serial: u32) -> Self {
        CardConfig {
            serial,
            reader: 0,
            version: Version(5, 4, 3),
            state_file: None,
            touch_timeout: crate::hardware::DEFAULT_TOUCH_TIMEOUT,
            pin: None,
            puk: None,
            mgmt_key: None,
            extra_args: Vec::new(),
        }
    }

    /// Sets the reader.
    pub fn reader(mut self, reader: u8) -> Self {
        self.reader = reader;
        self
    }

    /// Sets the firmware version.
    pub fn version(mut self, version: Version) -> Self {
        self.version = version;
        self
    }

    /// Sets the state file.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// Sets the touch timeout.
    pub fn touch_timeout(mut self, timeout: Duration) -> Self {
        self.touch_timeout = timeout;
        self
    }
}

/// Frees a reader number when the card that held it goes.
#[derive(Debug)]
struct ReaderSlot {
    reader: u8,
    occupied: Arc<Mutex<BTreeSet<u8>>>,
}

impl Drop for ReaderSlot {
    fn drop(&mut self) {
        self.occupied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.reader);
    }
}

/// A running card. Dropping it kills the card process (the card is pulled).
#[derive(Debug)]
pub struct CardHandle {
    process: Owned,
    serial: u32,
    touch_file: PathBuf,
    log: PathBuf,
    binary: PathBuf,
    socket: PathBuf,
    timeout: Duration,
    slot: ReaderSlot,
}

impl CardHandle {
    /// The card's serial number.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The vpcd reader number.
    pub fn reader(&self) -> u8 {
        self.slot.reader
    }

    /// The PC/SC reader name ("Virtual PCD 00 00").
    pub fn reader_name(&self) -> String {
        reader_name(self.slot.reader)
    }

    /// PID of the card process.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The card's stderr so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The touch file: creating it is a touch.
    pub fn touch_file(&self) -> &Path {
        &self.touch_file
    }

    /// Touches the card. The touch counts for the next operation that needs
    /// one, even if the card is not waiting yet.
    pub fn touch(&self) -> Result<()> {
        std::fs::File::create(&self.touch_file)
            .and_then(|mut f| f.flush())
            .map_err(HarnessError::io("creating the touch file"))
    }

    /// Whether the card is waiting for a touch right now ("blinking").
    pub fn is_waiting_for_touch(&self) -> bool {
        TouchSensor::waiting_marker(&self.touch_file).exists()
    }

    /// How many times the card has asked for a touch so far.
    pub fn touch_requests(&self) -> usize {
        self.log()
            .matches(crate::hardware::TOUCH_REQUEST_LOG)
            .count()
    }

    /// Waits until the card has asked for its `n`-th touch (counting from 1
    /// since the card started). Counting, rather than watching the "waiting"
    /// marker come and go, cannot miss a request that ends quickly.
    pub fn wait_for_touch_request(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.touch_requests() < n {
            if Instant::now() > deadline {
                return Err(HarnessError::Failed(format!(
                    "card {} did not ask for touch #{n} within {timeout:?}; log:\n{}",
                    self.serial,
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn wait_present(&mut self) -> Result<()> {
        let process = &mut self.process;
        let result = wait_reader(
            &self.binary,
            &self.socket,
            self.slot.reader,
            ReaderWait::Present,
            self.timeout,
            || match process.exited() {
                None => Ok(()),
                Some(status) => Err(HarnessError::Failed(format!(
                    "the card process exited ({status})"
                ))),
            },
        );
        result.map_err(|e| {
            HarnessError::Failed(format!(
                "card {} not detected: {e}\ncard log:\n{}",
                self.serial,
                self.log()
            ))
        })
    }

    /// Pulls the card: kills its process and waits until PC/SC reports the
    /// reader empty.
    pub fn remove(mut self) -> Result<()> {
        self.process.stop(Duration::ZERO);
        wait_reader(
            &self.binary,
            &self.socket,
            self.slot.reader,
            ReaderWait::Absent,
            self.timeout,
            || Ok(()),
        )
    }
}
