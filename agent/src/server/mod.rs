//! The agent's server: the socket, connections, requests, and the state they act on.
//!
//! - [`listener`]: the private socket and the one-agent-per-home lock.
//! - [`evloop`]: the event loop: handshakes and quick requests of every connection.
//! - [`conn`]: a connection on its own thread once a slow request needs one (prompts).
//! - [`dispatch`]: request → operation.
//! - [`state`]: the state machine (no account / locked / unlocked) and timers;
//!   its children `init.rs` (creating the account) and `unlock.rs` (protectors,
//!   back-off, unlocking).
//! - [`recovery`]: recovery codes, recovering, rotating the Secret Key, the kit.
//! - [`logind`]: locking on suspend and on screen lock.
//! - [`protectors`]: enrolling, listing and removing Secret Key protectors.
//! - [`organizer`]: recovery by an organizer (keys, enrollment, grants).
//! - [`ssh`]: the SSH agent's view of the state, and the SSH key requests.
//! - `device`: what belongs to this device, kept out of the vault's folder.
//! - `join`: a device taking up an existing vault where it is (the pointer file).

pub mod conn;
mod copies;
mod device;
pub mod dispatch;
pub mod evloop;
mod join;
pub mod listener;
pub mod logind;
mod on_demand;
pub mod organizer;
pub mod protectors;
pub mod recovery;
mod rekey;
mod rollback;
pub mod ssh;
pub mod state;
pub(crate) mod sync;

use interprocess::local_socket::traits::StreamCommon as _;
use interprocess::local_socket::traits::tokio::Listener as _;
use keyward_client::frame::write_frame_async;
use keyward_client::message::{ErrorCode, Response};
use state::Agent;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};

/// Stack of the loop and connection threads: requests run shallow code (the
/// deep parts, Argon2id and protectors, run on the runtime's blocking pool).
const CONNECTION_STACK: usize = 256 * 1024;

/// The accepted connection as a plain blocking-capable socket.
fn into_std(
    stream: interprocess::local_socket::tokio::Stream,
) -> std::io::Result<std::os::unix::net::UnixStream> {
    match stream {
        interprocess::local_socket::tokio::Stream::UdSocket(s) => Ok(OwnedFd::try_from(s)?.into()),
    }
}

/// Serves `listener` until a shutdown request or a terminating signal; then
/// locks and returns. SIGUSR1 locks without stopping.
pub async fn run(
    agent: Arc<Agent>,
    listener: std::os::unix::net::UnixListener,
) -> std::io::Result<()> {
    let fd: OwnedFd = listener.into();
    let listener = interprocess::os::unix::uds_local_socket::tokio::Listener::try_from(fd)
        .map_err(|e| {
            std::io::Error::other(format!(
                "cannot register the socket with the runtime: {e:?}"
            ))
        })?;
    let listener = interprocess::local_socket::tokio::Listener::from(listener);
    let slots = Arc::new(tokio::sync::Semaphore::new(agent.config.max_connections));
    let evloop = evloop::EventLoop::start(agent.clone(), tokio::runtime::Handle::current())?;
    tokio::spawn(agent.clone().run_lock_timer());
    logind::spawn(agent.clone());

    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // The peer's uid, before a byte of its request is read.
                let peer = stream.peer_creds().ok().and_then(|c| c.euid());
                let allowed = peer.is_some_and(|uid| uid == agent.uid || uid == 0);
                if !allowed {
                    tracing::warn!(peer_uid = ?peer, "refused a connection from another user");
                    tokio::spawn(async move {
                        let r = Response::error(ErrorCode::PermissionDenied, "this keyward agent serves another user");
                        let _ = write_frame_async(&mut &stream, r.encode()).await;
                    });
                    continue;
                }
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!("connection cap reached; refusing a client");
                    tokio::spawn(async move {
                        let r = Response::error(ErrorCode::Busy, "the keyward agent is serving too many clients; try again");
                        let _ = write_frame_async(&mut &stream, r.encode()).await;
                    });
                    continue;
                };
                // The event loop serves it from here (see `evloop`).
                match into_std(stream) {
                    Ok(s) => evloop.add(s, permit),
                    Err(e) => tracing::warn!("cannot take over a connection: {e}"),
                }
            }
            _ = usr1.recv() => {
                agent.lock("SIGUSR1");
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => break,
            () = agent.shutdown.notified() => break,
        }
    }
    agent.lock("stopping");
    tracing::info!("stopped");
    Ok(())
}
