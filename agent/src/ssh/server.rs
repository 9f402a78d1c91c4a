//! The SSH agent socket: `ssh.sock` beside keyward's own socket (same 0700
//! directory, same peer check), one thread per connection (a request may
//! wait for a confirmation, a PIN or a touch; the others go on).

use super::confirm::{self, Proc};
use super::keys;
use super::restrict::{self, Binding, Constraints};
use super::wire::{self, Request, Writer, msg};
use super::{SessionKey, VaultIdent};
use crate::protect::UnlockIo;
use crate::secret::SecretString;
use crate::server::ssh::VaultKeys;
use crate::server::state::Agent;
use crate::vault::ssh::{Approval, Location, SshKeyEntry};
use keyward_client::{PromptKind, Secret};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The extensions this agent answers (`query`).
const EXTENSIONS: &[&str] = &["query", "session-bind@openssh.com"];

/// What every connection shares.
struct Ctx {
    agent: Arc<Agent>,
    runtime: tokio::runtime::Handle,
    connections: AtomicUsize,
    /// Connection threads waiting for a connection (`ssh-add -l`, one per
    /// command, then costs a wake-up rather than a thread's creation).
    idle: AtomicUsize,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    queue: Mutex<mpsc::Receiver<Job>>,
}

/// An accepted connection and its peer's pid.
type Job = (UnixStream, Option<u32>);

/// Most threads kept waiting for connections.
const MAX_IDLE: usize = 4;
/// How long a waiting thread stays.
const IDLE_FOR: Duration = Duration::from_secs(60);

/// A connection thread: serves `first`, then waits for more.
fn worker(ctx: Arc<Ctx>, first: Job) {
    let mut job = Some(first);
    loop {
        if let Some((stream, pid)) = job.take() {
            serve(&ctx, stream, pid);
            ctx.connections.fetch_sub(1, Ordering::SeqCst);
        }
        if ctx.idle.fetch_add(1, Ordering::SeqCst) >= MAX_IDLE {
            ctx.idle.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        loop {
            let got = ctx
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .recv_timeout(IDLE_FOR);
            match got {
                Ok(j) => {
                    job = Some(j);
                    break;
                }
                // Leave, unless the acceptor already counted on this thread.
                Err(mpsc::RecvTimeoutError::Timeout)
                    if ctx
                        .idle
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |i| i.checked_sub(1))
                        .is_err() => {}
                Err(_) => return,
            }
        }
    }
}

/// Where the SSH socket goes: `[ssh] socket`, else `ssh.sock` beside the
/// keyward socket.
pub fn socket_path(agent: &Agent) -> PathBuf {
    if agent.config.ssh.socket.is_empty() {
        agent.paths.runtime_dir.join("ssh.sock")
    } else {
        PathBuf::from(&agent.config.ssh.socket)
    }
}

/// Binds the SSH socket (0600; a stale socket from a previous agent is
/// replaced, anything else at the path is an error).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a socket; move it away",
                path.display()
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::other(format!(
                "another agent is listening on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path)?;
    }
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let l = UnixListener::bind(path);
    rustix::process::umask(old);
    let l = l?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves `listener` on threads of its own until the process ends.
pub fn spawn(agent: Arc<Agent>, listener: UnixListener, runtime: tokio::runtime::Handle) {
    let (tx, rx) = mpsc::channel();
    let ctx = Arc::new(Ctx {
        agent,
        runtime,
        connections: AtomicUsize::new(0),
        idle: AtomicUsize::new(0),
        jobs: Mutex::new(Some(tx)),
        queue: Mutex::new(rx),
    });
    let reaper = ctx.clone();
    let _ = std::thread::Builder::new()
        .name("ssh-reaper".into())
        .spawn(move || {
            loop {
                let next = reaper.agent.ssh.reap();
                let wait = next
                    .map(|t| t.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_secs(1))
                    .clamp(Duration::from_millis(50), Duration::from_secs(1));
                std::thread::sleep(wait);
            }
        });
    let _ = std::thread::Builder::new()
        .name("ssh-accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let creds = rustix::net::sockopt::socket_peercred(&stream).ok();
                let uid = creds.as_ref().map(|c| c.uid.as_raw());
                if !uid.is_some_and(|u| u == ctx.agent.uid || u == 0) {
                    tracing::warn!(peer_uid = ?uid, "refused an SSH agent connection from another user");
                    continue;
                }
                let max = ctx.agent.config.max_connections;
                if ctx.connections.fetch_add(1, Ordering::SeqCst) >= max {
                    ctx.connections.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!("SSH connection cap reached; refusing a client");
                    continue;
                }
                let pid = creds.map(|c| c.pid.as_raw_nonzero().get() as u32);
                // A waiting thread takes it; else a new one.
                let claimed = ctx
                    .idle
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |i| i.checked_sub(1))
                    .is_ok();
                let mut job = Some((stream, pid));
                if claimed {
                    let jobs = ctx.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Some(tx) = jobs.as_ref()
                        && let Some(j) = job.take()
                        && let Err(mpsc::SendError(j)) = tx.send(j)
                    {
                        job = Some(j);
                    }
                }
                if let Some(j) = job {
                    let c = ctx.clone();
                    let spawned = std::thread::Builder::new()
                        .name("ssh-conn".into())
                        .stack_size(256 * 1024)
                        .spawn(move || worker(c, j));
                    if spawned.is_err() {
                        ctx.connections.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
        });
}

/// One connection's state.
struct Conn {
    pid: Option<u32>,
    bindings: Vec<Binding>,
}

fn serve(ctx: &Ctx, mut stream: UnixStream, pid: Option<u32>) {
    let mut conn = Conn {
        pid,
        bindings: Vec::new(),
    };
    // One read usually brings a whole request (one system call, not two);
    // what was read is zeroed as soon as it is used (an add carries a key).
    let mut buf: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(READ_CHUNK));
    loop {
        if fill(&mut stream, &mut buf, 4).is_none() {
            return;
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > wire::MAX_MESSAGE {
            tracing::info!(len, "SSH agent message too long; closing the connection");
            return;
        }
        if fill(&mut stream, &mut buf, 4 + len).is_none() {
            return;
        }
        let body = &buf[4..4 + len];
        let reply = Zeroizing::new(handle(ctx, &mut conn, body));
        let touched_keys = matches!(
            body.first(),
            Some(&(msg::SIGN_REQUEST | msg::ADD_IDENTITY | msg::ADD_ID_CONSTRAINED))
        );
        consume(&mut buf, 4 + len);
        if touched_keys {
            // Signing and parsing leave key material in the frames below
            // this one (the thread's stack is 256 KiB; they use far less).
            crate::secret::scrub_stack_deep::<{ 160 * 1024 }>();
        }
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

/// How much one read asks for.
const READ_CHUNK: usize = 4096;

/// Reads until `buf` holds at least `n` bytes; `None` at the end or an error.
fn fill(stream: &mut UnixStream, buf: &mut Zeroizing<Vec<u8>>, n: usize) -> Option<()> {
    while buf.len() < n {
        let have = buf.len();
        let want = (n - have).max(READ_CHUNK);
        if buf.capacity() < have + want {
            // Grow into a new buffer so that the old one is zeroed, not freed as it is.
            let mut bigger: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(have + want));
            bigger.extend_from_slice(buf);
            *buf = bigger;
        }
        buf.resize(have + want, 0);
        match stream.read(&mut buf[have..]) {
            Ok(0) | Err(_) => {
                buf.truncate(have);
                return None;
            }
            Ok(k) => buf.truncate(have + k),
        }
    }
    Some(())
}

/// Drops the first `n` bytes of `buf`, zeroing what they were.
fn consume(buf: &mut Zeroizing<Vec<u8>>, n: usize) {
    let rest = buf.len() - n;
    buf.copy_within(n.., 0);
    let len = buf.len();
    buf[rest..len].fill(0);
    buf.truncate(rest);
}

fn failure() -> Vec<u8> {
    wire::status(msg::FAILURE)
}

fn success(ok: bool) -> Vec<u8> {
    wire::status(if ok { msg::SUCCESS } else { msg::FAILURE })
}

/// Answers one message.
fn handle(ctx: &Ctx, conn: &mut Conn, body: &[u8]) -> Vec<u8> {
    let Ok(req) = wire::parse(body) else {
        return failure();
    };
    if !matches!(req, Request::Identities) {
        ctx.agent.touch();
    }
    match req {
        Request::Identities => identities(ctx, conn),
        Request::Sign { key, data, flags } => {
            sign(ctx, conn, key, data, flags).unwrap_or_else(|why| {
                tracing::info!("SSH signature refused: {why}");
                failure()
            })
        }
        Request::Add { body } => success(
            add(ctx, conn, body)
                .map_err(|why| {
                    tracing::info!("ssh-add refused: {why}");
                })
                .is_ok(),
        ),
        Request::Remove { key } => success(remove(ctx, conn, key)),
        Request::RemoveAll => {
            let all = vault_idents(ctx);
            ctx.agent
                .ssh
                .remove_all(all.iter().map(|v| v.public.clone()));
            success(true)
        }
        Request::Lock { passphrase } => {
            // The passphrase is not used: a lock wipes the keys, and the
            // Master Password unlocks (`ssh-add -X`).
            let _ = passphrase;
            ctx.agent.lock("ssh-add -x");
            success(true)
        }
        Request::Unlock { passphrase } => success(unlock(ctx, passphrase)),
        Request::Extension { name, body } => match name {
            "session-bind@openssh.com" => success(restrict::bind(&mut conn.bindings, body)),
            "query" => {
                let mut w = Writer::new(msg::EXTENSION_RESPONSE);
                w.string(b"query");
                for e in EXTENSIONS {
                    w.string(e.as_bytes());
                }
                w.finish()
            }
            _ => failure(),
        },
        Request::Smartcard | Request::Unknown(_) => failure(),
    }
}

/// The vault's keys the agent offers (empty when locked: see [`identities`]).
fn vault_idents(ctx: &Ctx) -> Arc<Vec<VaultIdent>> {
    match ctx.agent.ssh_vault_keys() {
        VaultKeys::Unlocked(_, v) => v,
        _ => Arc::new(Vec::new()),
    }
}

fn identities(ctx: &Ctx, conn: &Conn) -> Vec<u8> {
    let mut list: Vec<(Vec<u8>, String)> = Vec::new();
    match ctx.agent.ssh_vault_keys() {
        VaultKeys::NoAccount => {}
        VaultKeys::Locked(publics) => {
            // Public keys only, so that ssh can choose one; a signature
            // then asks for the Master Password (or fails).
            for p in publics {
                let comment = ctx.agent.ssh.comment_of(&p);
                list.push((p, comment));
            }
        }
        VaultKeys::Unlocked(_, v) => {
            let table = &ctx.agent.ssh;
            for k in v.iter() {
                if !table.is_hidden(&k.public)
                    && !table.has_session(&k.public)
                    && restrict::permitted(&k.dest, &conn.bindings, None)
                {
                    list.push((k.public.clone(), k.comment.clone()));
                }
            }
        }
    }
    ctx.agent.ssh.for_each_session(|k| {
        if restrict::permitted(&k.dest, &conn.bindings, None) {
            list.push((k.public.clone(), k.comment.clone()));
        }
    });
    let mut w = Writer::new(msg::IDENTITIES_ANSWER);
    w.u32(list.len() as u32);
    for (blob, comment) in &list {
        w.string(blob);
        w.string(comment.as_bytes());
    }
    w.finish()
}

/// What a signature needs to know of an identity.
struct Found {
    comment: String,
    approval: Approval,
    sk_provider: Option<String>,
    dest: Vec<restrict::Dest>,
    session: Option<Zeroizing<Vec<u8>>>,
    location: Location,
}

fn find(ctx: &Ctx, key: &[u8]) -> Option<Found> {
    if let Some(f) = ctx.agent.ssh.session_key(key, |k| Found {
        comment: k.comment.clone(),
        approval: k.approval,
        sk_provider: k.sk_provider.clone(),
        dest: k.dest.clone(),
        session: Some(Zeroizing::new(k.private.expose().to_vec())),
        location: Location::Vault,
    }) {
        return Some(f);
    }
    if ctx.agent.ssh.is_hidden(key) {
        return None;
    }
    let v = vault_idents(ctx);
    let k = v.iter().find(|k| k.public == key)?;
    Some(Found {
        comment: k.comment.clone(),
        approval: k.approval,
        sk_provider: k.sk_provider.clone(),
        dest: k.dest.clone(),
        session: None,
        location: k.location,
    })
}

fn sign(ctx: &Ctx, conn: &Conn, key: &[u8], data: &[u8], flags: u32) -> Result<Vec<u8>, String> {
    let mut found = find(ctx, key);
    if found.is_none() && ctx.agent.ssh_is_locked() {
        let listed = matches!(ctx.agent.ssh_vault_keys(), VaultKeys::Locked(p) if p.iter().any(|p| p == key));
        if listed {
            unlock_for(ctx, conn, key)?;
            found = find(ctx, key);
        }
    }
    let found = found.ok_or("no such key in the agent")?;
    if !restrict::sign_allowed(&found.dest, &conn.bindings, key, data) {
        return Err("the key's destination restrictions do not allow this use".into());
    }
    approve(ctx, conn, key, &found, data)?;
    let private: Zeroizing<Vec<u8>> = match &found.session {
        Some(p) => p.clone(),
        None => {
            if let Location::Card {
                serial,
                slot,
                touch,
            } = found.location
            {
                // The card signs; its PIN (and the touch) are asked through askpass.
                let program = confirm::askpass(&ctx.agent.config.ssh.askpass).ok_or_else(|| {
                    format!(
                        "the key is on YubiKey {serial}, which needs its PIN, and no askpass \
                         program (SSH_ASKPASS, [ssh] askpass) with a display is set to ask for it"
                    )
                })?;
                let io = AskpassIo {
                    program,
                    timeout: Duration::from_secs(ctx.agent.config.ssh.prompt_timeout_seconds),
                };
                let card = super::card::CardKey {
                    serial,
                    slot,
                    touch,
                };
                let sig = super::card::sign(
                    &io,
                    card,
                    key,
                    data,
                    &found.comment,
                    &confirm::describe(conn.pid),
                )
                .map_err(|e| e.to_string())?;
                let mut w = Writer::new(msg::SIGN_RESPONSE);
                w.string(&sig);
                return Ok(w.finish());
            }
            let e: SshKeyEntry = ctx
                .agent
                .ssh_vault_key(key)
                .map_err(|e| e.message)?
                .ok_or("the key left the vault")?;
            Zeroizing::new(e.private.expose().to_vec())
        }
    };
    let pk = keys::parse_stored(&crate::secret::SecretBytes::from_slice(&private))
        .map_err(|e| e.to_string())?;
    drop(private);
    let sig = if pk.is_sk() {
        let provider = found.sk_provider.as_deref().unwrap_or("internal");
        let plain = pk.plain_private().map_err(|e| e.to_string())?;
        let timeout = Duration::from_secs(ctx.agent.config.ssh.prompt_timeout_seconds);
        match super::sk::sign(plain.expose(), provider, data, None, timeout) {
            Err(super::sk::SkError::NeedPin) => {
                let program = confirm::askpass(&ctx.agent.config.ssh.askpass)
                    .ok_or("the security key needs its PIN and no askpass program is set")?;
                let pin = confirm::ask_secret(
                    &program,
                    &format!("Enter the PIN for security key {}:", keys::fingerprint(key)),
                    timeout,
                )
                .ok_or("no PIN given")?;
                super::sk::sign(plain.expose(), provider, data, Some(pin.expose()), timeout)
                    .map_err(|e| e.to_string())?
            }
            other => other.map_err(|e| e.to_string())?,
        }
    } else {
        pk.sign(data, flags).map_err(|e| e.to_string())?
    };
    drop(pk);
    let mut w = Writer::new(msg::SIGN_RESPONSE);
    w.string(&sig);
    Ok(w.finish())
}

/// Asks before a signature, as the key's approval setting says.
fn approve(ctx: &Ctx, conn: &Conn, key: &[u8], found: &Found, data: &[u8]) -> Result<(), String> {
    if found.approval == Approval::Never {
        return Ok(());
    }
    let proc: Option<Proc> = conn.pid.and_then(confirm::proc_info);
    let this = proc.as_ref().map(|p| (p.pid, p.start));
    match found.approval {
        Approval::Never => return Ok(()),
        Approval::OncePerProcess => {
            if let Some((pid, start)) = this
                && ctx.agent.ssh.approved(key, pid, start)
            {
                return Ok(());
            }
        }
        Approval::Always => {}
    }
    let program = confirm::askpass(&ctx.agent.config.ssh.askpass)
        .ok_or("the key needs approval and no askpass program (SSH_ASKPASS, [ssh] askpass) with a display is set")?;
    let dest = if found.dest.is_empty() {
        String::new()
    } else {
        restrict::parse_userauth(data, key)
            .map(|u| format!("\nFor: a login as user \"{}\" to a listed host", u.user))
            .unwrap_or_default()
    };
    let message = format!(
        "Allow use of key {}?\nKey fingerprint {}.\nRequested by: {}{}",
        found.comment,
        keys::fingerprint(key),
        confirm::describe(conn.pid),
        dest
    );
    let timeout = Duration::from_secs(ctx.agent.config.ssh.prompt_timeout_seconds);
    if !confirm::confirm(&program, &message, timeout) {
        return Err("the user did not approve (or the prompt timed out)".into());
    }
    if let (Approval::OncePerProcess, Some((pid, start))) = (found.approval, this) {
        ctx.agent.ssh.approve(key, pid, start);
    }
    Ok(())
}

/// An [`UnlockIo`] that asks through askpass (a YubiKey PIN during an unlock).
struct AskpassIo {
    program: String,
    timeout: Duration,
}

impl UnlockIo for AskpassIo {
    fn prompt(&self, kind: PromptKind, message: &str) -> Option<Secret> {
        if kind == PromptKind::Confirm {
            return confirm::confirm(&self.program, message, self.timeout)
                .then(|| Secret::from("y"));
        }
        let s: SecretString = confirm::ask_secret(&self.program, message, self.timeout)?;
        Some(Secret::from(s.expose()))
    }
    fn notice(&self, message: &str) {
        tracing::info!("{message}");
    }
}

/// A signature request found the agent locked: asks for the Master
/// Password through askpass (one prompt at a time) and unlocks.
fn unlock_for(ctx: &Ctx, conn: &Conn, key: &[u8]) -> Result<(), String> {
    let program = confirm::askpass(&ctx.agent.config.ssh.askpass)
        .ok_or("keyward is locked (run `keyward unlock`; with an askpass program and a display the agent asks)")?;
    let _one = ctx
        .agent
        .ssh
        .unlocking
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !ctx.agent.ssh_is_locked() {
        return Ok(()); // unlocked while this waited
    }
    let timeout = Duration::from_secs(ctx.agent.config.ssh.prompt_timeout_seconds);
    let message = format!(
        "keyward is locked. Enter your Master Password to sign with key {}\nfor {}:",
        keys::fingerprint(key),
        confirm::describe(conn.pid)
    );
    let password = confirm::ask_secret(&program, &message, timeout).ok_or("no password given")?;
    let io: Arc<dyn UnlockIo> = Arc::new(AskpassIo { program, timeout });
    let agent = ctx.agent.clone();
    let pw = Secret::from(password.expose());
    drop(password);
    ctx.runtime
        .block_on(async move { agent.ssh_unlock(pw, io).await })
        .map_err(|e| e.message)
}

fn unlock(ctx: &Ctx, passphrase: &[u8]) -> bool {
    if !ctx.agent.ssh_is_locked() || passphrase.is_empty() {
        return false;
    }
    let Ok(text) = std::str::from_utf8(passphrase) else {
        return false;
    };
    let pw = Secret::from(text);
    let agent = ctx.agent.clone();
    let io: Arc<dyn UnlockIo> = Arc::new(crate::protect::NoIo);
    ctx.runtime
        .block_on(async move { agent.ssh_unlock(pw, io).await })
        .map_err(|e| tracing::info!("ssh-add -X: {}", e.message))
        .is_ok()
}

fn add(ctx: &Ctx, conn: &Conn, body: &[u8]) -> Result<(), String> {
    let (key, used) = keys::decode_private(body).map_err(|e| e.to_string())?;
    let mut r = wire::Reader(&body[used..]);
    let comment = r.text().map_err(|_| "bad comment")?.to_owned();
    let c: Constraints = restrict::parse_constraints(r.rest())
        .map_err(|_| "unsupported or malformed constraints")?;
    let public = key.public_blob().map_err(|e| e.to_string())?;
    let mut c = c;
    if let Some(p) = &c.sk_provider {
        if !key.is_sk() {
            return Err("a security-key provider for a key that is not a security key".into());
        }
        if !p.eq_ignore_ascii_case("internal") {
            let real = std::fs::canonicalize(p).map_err(|e| format!("provider {p}: {e}"))?;
            let real = real.display().to_string();
            if !wire::glob_list(&real, &ctx.agent.config.ssh.allowed_providers) {
                return Err(format!(
                    "provider {real} is not allowed ([ssh] allowed_providers)"
                ));
            }
            c.sk_provider = Some(real);
        }
    }
    // An identity this connection may not see is not replaced (ssh-agent).
    if let Some(f) = find(ctx, &public)
        && !restrict::permitted(&f.dest, &conn.bindings, None)
    {
        return Err("the key exists with restrictions this connection does not meet".into());
    }
    if ctx.agent.ssh_is_locked() {
        return Err("keyward is locked: unlock it first".into());
    }
    let approval = if c.confirm {
        Approval::Always
    } else {
        Approval::Never
    };
    let mark = ctx.agent.ssh_lock_mark();
    if c.lifetime > 0 || !ctx.agent.config.ssh.add_stores {
        let private = keys::encode_private(&key).map_err(|e| e.to_string())?;
        // A vault copy of the key stays out of the list while the session one lives.
        ctx.agent.ssh.hide(&public);
        ctx.agent.ssh.add_session(SessionKey {
            public: public.clone(),
            comment,
            private,
            approval,
            sk_provider: c.sk_provider.clone(),
            dest: c.dest.clone(),
            death: (c.lifetime > 0)
                .then(|| Instant::now() + Duration::from_secs(u64::from(c.lifetime))),
        });
        if ctx.agent.ssh_lock_mark() != mark {
            // A lock came in between: nothing stays in memory.
            ctx.agent.ssh.wipe();
            return Err("the agent was locked meanwhile".into());
        }
        return Ok(());
    }
    // Into the vault: keep its name and settings if it is already there.
    let v = vault_idents(ctx);
    let (name, approval) = match v.iter().find(|k| k.public == public) {
        Some(k) => (
            k.name.clone(),
            if c.confirm {
                Approval::Always
            } else {
                k.approval
            },
        ),
        None => (unique_name(&v, &comment, &public), approval),
    };
    let entry = SshKeyEntry {
        key_id: [0; 16],
        public: public.clone(),
        name,
        comment,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        location: Location::Vault,
        approval,
        private: keys::encode_private(&key).map_err(|e| e.to_string())?,
        constraints: restrict::stored_form(&c),
    };
    ctx.agent.ssh_put(entry).map_err(|e| e.message)?;
    ctx.agent.ssh.unhide(&public);
    ctx.agent.ssh.remove_session(&public);
    Ok(())
}

/// A vault name for a key `ssh-add` gave: its comment, made unique.
fn unique_name(v: &[VaultIdent], comment: &str, public: &[u8]) -> String {
    let base = if comment.trim().is_empty() || crate::vault::ssh::check_name(comment).is_err() {
        keys::fingerprint(public)
    } else {
        comment.to_owned()
    };
    let taken = |n: &str| v.iter().any(|k| k.name == n);
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base} ({i})"))
        .find(|n| !taken(n))
        .unwrap_or(base)
}

fn remove(ctx: &Ctx, conn: &Conn, key: &[u8]) -> bool {
    let Some(f) = find(ctx, key) else {
        return false;
    };
    if !restrict::permitted(&f.dest, &conn.bindings, None) {
        return false;
    }
    if f.session.is_some() {
        ctx.agent.ssh.remove_session(key);
    } else {
        ctx.agent.ssh.hide(key);
    }
    true
}
