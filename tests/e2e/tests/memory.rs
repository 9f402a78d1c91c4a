#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! What an attacker with access to the agent's memory finds.
//!
//! - After `lock`, the account key, the item key, the Master Password and the
//!   Secret Key are gone: the test unlocks with known values, locks, then
//!   scans every readable mapping of the agent (`/proc/PID/mem`, as root) for
//!   those byte strings.
//! - While unlocked, the key pages are mlocked (`VmLck` in `/proc/PID/status`).
//! - The agent is not dumpable, and a same-uid ptrace attach fails.

use keyward_agent::account::password::Password;
use keyward_agent::account::secret_key::SecretKey;
use keyward_agent::vault;
use keyward_e2e::{Home, require};
use std::io::{Read, Seek, SeekFrom};

const PW: &str = "Tr0ub4dor&3 horse staple battery";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Every readable, private mapping of `pid` (heap, stacks, anonymous).
fn memory_of(pid: i32) -> Vec<(u64, Vec<u8>)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        let path = f.nth(3).unwrap_or("");
        if !perms.starts_with('r') || path == "[vvar]" || path == "[vsyscall]" {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_ok() && mem.read_exact(&mut buf).is_ok() {
            out.push((a, buf));
        }
    }
    out
}

fn find(memory: &[(u64, Vec<u8>)], needle: &[u8]) -> Vec<u64> {
    let mut hits = Vec::new();
    for (base, region) in memory {
        let mut i = 0;
        while let Some(pos) = region[i..].windows(needle.len()).position(|w| w == needle) {
            hits.push(base + (i + pos) as u64);
            i += pos + 1;
        }
    }
    hits
}

#[test]
fn after_lock_no_key_password_or_secret_key_remains_in_the_agents_memory() {
    if !require("root (to read another process's memory)", is_root()) {
        return;
    }
    let home = Home::new();
    let (_, sk_text) = home.init(PW);
    home.run_with(&["set", "canary"], Some(b"value-that-is-not-a-key"), None)
        .expect_code(0);
    home.ok(&["lock"]);
    home.unlock(PW).expect_code(0);
    assert_eq!(
        home.ok(&["get", "canary"]).stdout,
        "value-that-is-not-a-key"
    );
    let pid = home.agent_pid().unwrap();

    // Recompute the keys from the outside, with the library, from the vault file.
    let sk = SecretKey::parse(&sk_text).unwrap();
    let account = sk.account_id();
    let path = home.paths.data_dir.join(format!("vault-{account}.kwv"));
    let v = vault::unlock(
        vault::read(&path).unwrap(),
        &Password::new(PW).unwrap(),
        &sk,
    )
    .unwrap();
    let account_key = v.account_key_for_test_vectors();
    let item_key = keyward_agent::account::item_key(account_key.expose(), &account);
    let compact = String::from_utf8(sk.expose_compact().to_vec()).unwrap();
    let secret_part = compact[8..34].to_owned();
    let k_s = sk.derive_ks();
    let parsed = vault::read(&path).unwrap();
    let w = &parsed.vault.password_wraps[0];
    let k_m = keyward_agent::account::password::derive_km(
        &Password::new(PW).unwrap(),
        &w.salt16,
        &account,
        &w.params,
    )
    .unwrap();
    let auk = keyward_agent::account::auk(&k_m, &k_s);
    let mac_key = keyward_agent::account::vault_mac_key(account_key.expose(), &account);
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("account key", account_key.expose().to_vec()),
        ("k_s", k_s.expose().to_vec()),
        ("k_m", k_m.expose().to_vec()),
        ("AUK", auk.expose().to_vec()),
        ("vault MAC key", mac_key.expose().to_vec()),
        ("item key", item_key.expose().to_vec()),
        ("Master Password", PW.as_bytes().to_vec()),
        ("Secret Key (display form)", sk_text.as_bytes().to_vec()),
        (
            "Secret Key (secret symbols)",
            secret_part.as_bytes().to_vec(),
        ),
    ];

    // Unlocked: the keys are there (the scan works) and their pages are mlocked.
    let before = memory_of(pid);
    assert!(
        !find(&before, account_key.expose()).is_empty(),
        "scan sanity: the account key is in memory while unlocked"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let vmlck: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(
        vmlck >= 4,
        "key pages are mlocked while unlocked (VmLck {vmlck} kB)"
    );
    drop(before);

    home.ok(&["lock"]);
    // Let the runtime finish with the connection.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let after = memory_of(pid);
    let total: usize = after.iter().map(|(_, r)| r.len()).sum();
    let mut leaks = Vec::new();
    for (what, needle) in &needles {
        let hits = find(&after, needle);
        if !hits.is_empty() {
            leaks.push(format!("{what} at {hits:x?}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "found in {total} bytes of agent memory after lock: {leaks:#?}"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    eprintln!(
        "scanned {total} bytes after lock; {}",
        status
            .lines()
            .find(|l| l.starts_with("VmLck"))
            .unwrap_or("")
    );
}

fn as_nobody(args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(args);
    c
}

/// PTRACE_ATTACH from Python (ctypes), as uid 65534; prints the errno.
const ATTACH: &str = "import ctypes,sys,os; l=ctypes.CDLL(None,use_errno=True); r=l.ptrace(16,int(sys.argv[1]),0,0); print(r, ctypes.get_errno())";

#[test]
fn the_agent_is_not_dumpable_and_refuses_ptrace() {
    let tools = is_root()
        && std::path::Path::new("/usr/bin/setpriv").exists()
        && std::path::Path::new("/usr/bin/python3").exists();
    if !require(
        "root, setpriv and python3 (to act as another process of the agent's uid)",
        tools,
    ) {
        return;
    }
    // An agent running as uid 65534, and a control process of the same uid.
    let d = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = d.path().join("home");
    std::fs::create_dir_all(home.join("config")).unwrap();
    std::fs::write(home.join("config/config.toml"), keyward_e2e::FAST_KDF).unwrap();
    std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&home)
        .status()
        .unwrap();
    let mut agent = as_nobody(&[keyward_e2e::agent_bin().to_str().unwrap()])
        .env("KEYWARD_HOME", &home)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut control = as_nobody(&["sleep", "30"]).spawn().unwrap();
    let sock = home.join("run/agent.sock");
    let start = std::time::Instant::now();
    while !sock.exists() && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The CLI, as it waits for a password on its standard input (issue 19,
    // item 7: it was dumpable while holding what the user typed).
    let mut cli = as_nobody(&[
        keyward_e2e::keyward_bin().to_str().unwrap(),
        "--no-autostart",
        "init",
        "--password-stdin",
    ])
    .env("KEYWARD_HOME", &home)
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let (apid, cpid) = (agent.id(), control.id());
    // The control must have become `sleep` as uid 65534 before it is read
    // (until its exec it is still the privileged launcher, not dumpable).
    let start = std::time::Instant::now();
    while std::fs::read_to_string(format!("/proc/{cpid}/comm"))
        .map_or(true, |c| c.trim() != "sleep")
        && start.elapsed() < std::time::Duration::from_secs(5)
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let read = |pid: u32, file: &str| {
        as_nobody(&["cat", &format!("/proc/{pid}/{file}")])
            .output()
            .unwrap()
    };
    let attach = |pid: u32| {
        let o = as_nobody(&["/usr/bin/python3", "-c", ATTACH, &pid.to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    let control_environ = read(cpid, "environ");
    let agent_environ = read(apid, "environ");
    let agent_mem = read(apid, "mem");
    let agent_attach = attach(apid);
    // The CLI is up (reading its standard input) by the time it is looked at.
    let cli_cmdline = read(cli.id(), "cmdline");
    let cli_environ = read(cli.id(), "environ");
    let cli_mem = read(cli.id(), "mem");
    let cli_attach = attach(cli.id());
    let _ = cli.kill();
    let _ = cli.wait();
    let _ = agent.kill();
    let _ = control.kill();
    let _ = agent.wait();
    let _ = control.wait();
    // The control shows that the same uid could read a dumpable process …
    assert!(
        control_environ.status.success(),
        "control: {}",
        String::from_utf8_lossy(&control_environ.stderr)
    );
    // … but not the agent.
    assert!(
        !agent_environ.status.success(),
        "a same-uid process read the agent's environment: it is dumpable"
    );
    assert!(
        !agent_mem.status.success(),
        "a same-uid process read the agent's memory"
    );
    assert!(
        agent_attach.starts_with("-1 1"),
        "PTRACE_ATTACH to the agent must fail with EPERM, got {agent_attach:?}"
    );
    // The CLI likewise (its command line stays readable, as for any process).
    assert!(cli_cmdline.status.success(), "the CLI is not running");
    assert!(
        !cli_environ.status.success() && !cli_mem.status.success(),
        "a same-uid process read the CLI's environment or memory: it is dumpable"
    );
    assert!(
        cli_attach.starts_with("-1 1"),
        "PTRACE_ATTACH to the CLI must fail with EPERM, got {cli_attach:?}"
    );
}

/// Runs `prog args` with `SSH_AUTH_SOCK=sock`; panics unless it succeeds.
fn ssh_tool(sock: &std::path::Path, prog: &str, args: &[&str]) {
    let out = std::process::Command::new(prog)
        .args(args)
        .env("SSH_AUTH_SOCK", sock)
        .env_remove("SSH_ASKPASS")
        .env_remove("DISPLAY")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The secret scalar bytes of an OpenSSH private key file (parsed with the
/// agent's own library, from the outside).
fn private_needles(file: &std::path::Path) -> Vec<Vec<u8>> {
    use ssh_key::private::KeypairData;
    let text = std::fs::read(file).unwrap();
    let (k, _) = keyward_agent::ssh::keys::import_file(&text, None).unwrap();
    match &k.keypair {
        KeypairData::Ed25519(kp) => vec![kp.private.to_bytes().to_vec()],
        KeypairData::Ecdsa(kp) => vec![kp.private_key_bytes().to_vec()],
        KeypairData::Rsa(kp) => vec![
            kp.private.p.as_positive_bytes().unwrap().to_vec(),
            kp.private.q.as_positive_bytes().unwrap().to_vec(),
            kp.private.d.as_positive_bytes().unwrap().to_vec(),
        ],
        other => panic!("unexpected key type {other:?}"),
    }
}

#[test]
fn after_lock_no_ssh_private_key_remains_in_the_agents_memory() {
    if !require("root (to read another process's memory)", is_root()) {
        return;
    }
    if !require(
        "ssh-keygen and ssh-add (openssh-client)",
        std::path::Path::new("/usr/bin/ssh-add").exists(),
    ) {
        return;
    }
    let home = Home::new();
    home.init(PW);
    let sock = home.paths.runtime_dir.join("ssh.sock");
    let d = tempfile::tempdir().unwrap();
    let key = |name: &str, ty: &str| {
        let f = d.path().join(name);
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-t", ty, "-C", name, "-f"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(out.status.success());
        f
    };
    // Kept in the vault (sealed; opened for each signature), and one for
    // this session only (in the agent's memory while unlocked).
    let vault_ed = key("vault-ed25519", "ed25519");
    let vault_rsa = key("vault-rsa", "rsa");
    let session_ec = key("session-ecdsa", "ecdsa");
    let data = d.path().join("data");
    std::fs::write(&data, b"sign me").unwrap();
    for k in [&vault_ed, &vault_rsa] {
        ssh_tool(&sock, "ssh-add", &[k.to_str().unwrap()]);
    }
    ssh_tool(
        &sock,
        "ssh-add",
        &["-t", "600", session_ec.to_str().unwrap()],
    );
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for k in [&vault_ed, &vault_rsa, &session_ec] {
        for n in private_needles(k) {
            needles.push((k.file_name().unwrap().to_string_lossy().into(), n));
        }
        // Sign with each through the agent (the private key file moved away).
        let hidden = k.with_extension("hidden");
        std::fs::rename(k, &hidden).unwrap();
        let public = format!("{}.pub", k.display());
        ssh_tool(
            &sock,
            "ssh-keygen",
            &[
                "-Y",
                "sign",
                "-n",
                "file",
                "-f",
                &public,
                data.to_str().unwrap(),
            ],
        );
        std::fs::remove_file(d.path().join("data.sig")).unwrap();
        std::fs::rename(&hidden, k).unwrap();
    }
    let pid = home.agent_pid().unwrap();
    let before = memory_of(pid);
    let session_scalar = &private_needles(&session_ec)[0];
    assert!(
        !find(&before, session_scalar).is_empty(),
        "scan sanity: the session key's scalar is in memory while unlocked"
    );
    drop(before);

    home.ok(&["lock"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let after = memory_of(pid);
    let total: usize = after.iter().map(|(_, r)| r.len()).sum();
    let leaks: Vec<String> = needles
        .iter()
        .filter_map(|(what, n)| {
            let hits = find(&after, n);
            (!hits.is_empty()).then(|| format!("{what} ({} bytes) at {hits:x?}", n.len()))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "SSH private key bytes found in {total} bytes of agent memory after lock: {leaks:#?}"
    );
}
