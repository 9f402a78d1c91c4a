#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The systemd user units and the socket-activation path, for real.

use keyward_e2e::{Home, agent_bin, require, signal};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn units_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/systemd"
    ))
}

/// `systemd-analyze --user verify` on copies whose ExecStart points at the
/// built agent; returns (success, stderr).
fn verify(dir: &Path, units: &[&str]) -> (bool, String) {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["--user", "--man=no", "verify"])
        .args(units)
        .current_dir(dir)
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_unit_files_pass_systemd_analyze_verify() {
    if !require("systemd-analyze (package systemd)", has("systemd-analyze")) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let agent = agent_bin();
    for name in ["keyward-agent.service", "keyward-agent.socket"] {
        let text = std::fs::read_to_string(units_dir().join(name)).unwrap();
        std::fs::write(
            d.path().join(name),
            text.replace("/usr/bin/keyward-agent", agent.to_str().unwrap()),
        )
        .unwrap();
    }
    let (ok, stderr) = verify(d.path(), &["keyward-agent.socket", "keyward-agent.service"]);
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify complained:\n{stderr}"
    );
    // The check can fail: a unit with an unknown key and a missing program.
    std::fs::write(
        d.path().join("broken.service"),
        "[Service]\nExecStrat=/x\nExecStart=/nonexistent\n",
    )
    .unwrap();
    let (ok, stderr) = verify(d.path(), &["broken.service"]);
    assert!(
        !ok || !stderr.trim().is_empty(),
        "verify accepted a broken unit"
    );
    // The hardening the issue asks for is in the unit.
    let service = std::fs::read_to_string(units_dir().join("keyward-agent.service")).unwrap();
    for option in [
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "ProtectSystem=strict",
        "MemoryDenyWriteExecute=yes",
        "LockPersonality=yes",
        "UMask=0077",
        "Type=notify",
    ] {
        assert!(service.contains(option), "{option} missing");
    }
}

/// Kills a process we started when dropped.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_agent_takes_its_socket_from_systemd_socket_activate() {
    if !require(
        "systemd-socket-activate (package systemd)",
        has("systemd-socket-activate"),
    ) {
        return;
    }
    let home = Home::new();
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&home.paths.runtime_dir)
        .unwrap();
    let socket = home.paths.socket();
    let log = home.path().join("activated.log");
    let child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg("--fdname=agent")
        .arg("-E")
        .arg(format!("KEYWARD_HOME={}", home.path().display()))
        .args(["-E", "KEYWARD_LOG=info"])
        .arg(agent_bin())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let activator = Reap(child);
    home.wait_for(Duration::from_secs(5), "the activation socket", || {
        socket.exists()
    });
    // Nothing runs the agent yet; the first client starts it through the socket.
    let st = home
        .run(&["--no-autostart", "status", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(st["state"], "uninitialized");
    let pid = st["agent_pid"].as_i64().unwrap() as i32;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("using the socket passed by the service manager"),
        "{text}"
    );
    // The agent tightened the socket that systemd-socket-activate made 0644.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // It works like any agent.
    home.init("pw for activation");
    home.run_with(&["--no-autostart", "set", "k"], Some(b"v"), None)
        .expect_code(0);
    assert_eq!(
        home.run(&["--no-autostart", "get", "k"])
            .expect_code(0)
            .stdout,
        "v"
    );
    signal(pid, rustix::process::Signal::TERM);
    home.wait_for(
        Duration::from_secs(5),
        "the activated agent to stop",
        || {
            !Path::new(&format!("/proc/{pid}/exe")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z"))
        },
    );
    drop(activator);
}
