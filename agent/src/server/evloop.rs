//! The event loop that serves the quick requests of every connection.
//!
//! One thread waits on all connections with level-triggered epoll and answers
//! the handshake and the frequent, quick requests (`get`, `status`, `list`)
//! itself: one `read` and one `write` per request, and under load every ready
//! connection is served per wake-up, with no thread switch per request (the
//! measurements that led here are in docs/BENCHMARKS.md). A request that is
//! slow or talks back (unlock and its prompts, `set`, anything that derives
//! keys or touches a protector) hands its connection to a thread of its own
//! with blocking I/O ([`super::conn`]), which keeps it until the client goes.
//! So does a quick request that would have to wait for a lock (the state is
//! held exclusively for a moment while a change is applied, and for longer
//! by the rarer writes such as protector changes): the loop itself never
//! waits on one. `set` and `remove` fsync without holding it.
//!
//! Limits, as on a connection thread:
//! - the `Hello` must arrive within `request_timeout_seconds` of the connect;
//! - between requests a connection may stay silent for
//!   `client_idle_timeout_seconds`;
//! - once a request has started, the rest of it must arrive within
//!   `request_timeout_seconds` (a client trickling bytes is cut off), and an
//!   answer the client does not read within that time closes the connection;
//! - an oversized or malformed frame, or a request out of order (a second
//!   `Hello`, a `PromptReply` with no `Prompt`), gets an error answer, then
//!   the connection is closed.
//!
//! Deadlines are checked once a second, so each may run up to a second late.

use super::state::{AGENT_VERSION, Agent};
use keyward_client::frame::{FrameBuf, FrameError, MAX_FRAME};
use keyward_client::message::{ErrorCode, PROTOCOL_VERSION, Request, Response};
use rustix::event::epoll;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use zeroize::Zeroizing;

/// The epoll key of the wake-up eventfd (connections use their slot index).
const WAKE: u64 = u64::MAX;
/// The epoll key of the deadline timer.
const TICK: u64 = u64::MAX - 1;
/// How often deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The accepting side's handle: connections go in, the loop thread serves them.
pub struct EventLoop {
    wake: OwnedFd,
    incoming: Mutex<Vec<(UnixStream, OwnedSemaphorePermit)>>,
}

impl EventLoop {
    /// Starts the loop thread.
    pub fn start(agent: Arc<Agent>, runtime: tokio::runtime::Handle) -> io::Result<Arc<Self>> {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let wake = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        watch_in(&ep, &wake, WAKE)?;
        // Deadlines come from a timer that ticks while there are connections,
        // not from a timeout on every wait: that would arm and cancel a kernel
        // timer per request.
        let timer = rustix::time::timerfd_create(
            rustix::time::TimerfdClockId::Monotonic,
            rustix::time::TimerfdFlags::CLOEXEC | rustix::time::TimerfdFlags::NONBLOCK,
        )?;
        watch_in(&ep, &timer, TICK)?;
        let shared = Arc::new(Self {
            wake,
            incoming: Mutex::new(Vec::new()),
        });
        let mut this = Loop {
            timer,
            ticking: false,
            request_timeout: Duration::from_secs(agent.config.request_timeout_seconds),
            idle: Duration::from_secs(agent.config.client_idle_timeout_seconds),
            agent,
            runtime,
            ep,
            shared: shared.clone(),
            conns: Vec::new(),
            free: Vec::new(),
        };
        std::thread::Builder::new()
            .name("keyward-loop".into())
            .stack_size(super::CONNECTION_STACK)
            .spawn(move || {
                // Without the loop nobody is served: a bug that panics in it
                // stops the agent (locked, as on any stop) rather than leave
                // clients hanging on a socket that accepts and never answers.
                let agent = this.agent.clone();
                let run = std::panic::AssertUnwindSafe(|| this.run());
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!("the connection loop panicked; stopping the agent");
                    agent.shutdown.notify_one();
                }
            })?;
        Ok(shared)
    }

    /// Gives an accepted connection (and its slot) to the loop.
    pub fn add(&self, stream: UnixStream, permit: OwnedSemaphorePermit) {
        self.incoming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((stream, permit));
        // Cannot fail but by overflowing the counter, which the loop drains.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

/// Adds `fd` to the epoll set, reported as readable under `key`.
fn watch_in(ep: &OwnedFd, fd: impl std::os::fd::AsFd, key: u64) -> io::Result<()> {
    epoll::add(
        ep,
        fd,
        epoll::EventData::new_u64(key),
        epoll::EventFlags::IN,
    )?;
    Ok(())
}

/// What the loop knows of one connection.
struct Conn {
    stream: UnixStream,
    buf: FrameBuf,
    /// Answers not yet taken by the client (wiped when dropped).
    out: Zeroizing<Vec<u8>>,
    /// How much of `out` is sent.
    sent: usize,
    /// `Hello` done.
    greeted: bool,
    /// Close once `out` is sent (after a refusal).
    closing: bool,
    /// The socket failed: close now.
    dead: bool,
    /// The connect, or the last complete request.
    last_request: Instant,
    /// When the bytes of an incomplete request started to arrive.
    partial_since: Option<Instant>,
    /// Since when the client has not taken a frame's worth of our answers
    /// (a long listing is many frames: each must be taken within the
    /// request timeout, not all of them together).
    blocked_since: Option<Instant>,
    /// `sent` when `blocked_since` was last set.
    blocked_at: usize,
    /// The connection's slot under `max_connections`.
    permit: OwnedSemaphorePermit,
}

impl Conn {
    fn pending(&self) -> bool {
        self.sent < self.out.len()
    }

    /// Writes what it can of `out`; true when all is sent.
    fn flush(&mut self) -> bool {
        while self.pending() {
            match (&self.stream).write(&self.out[self.sent..]) {
                Ok(0) => {
                    self.dead = true;
                    return false;
                }
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => {
                    self.dead = true;
                    return false;
                }
            }
        }
        zeroize::Zeroize::zeroize(&mut *self.out);
        self.out.clear();
        self.sent = 0;
        true
    }

    /// Sends an answer; what the socket does not take now waits in `out`.
    fn send(&mut self, resp: &Response) {
        let frame = Zeroizing::new(resp.encode().0);
        let mut sent = 0;
        if !self.pending() {
            // The usual case: straight to the socket, no copy.
            sent = loop {
                match (&self.stream).write(&frame) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
                    Err(_) => {
                        self.dead = true;
                        return;
                    }
                }
            };
        }
        if sent < frame.len() {
            self.out.extend_from_slice(&frame[sent..]);
            self.flush();
        }
    }

    fn refuse(&mut self, code: ErrorCode, message: String) {
        self.send(&Response::error(code, message));
        self.closing = true;
    }
}

/// The loop thread's state.
struct Loop {
    agent: Arc<Agent>,
    runtime: tokio::runtime::Handle,
    ep: OwnedFd,
    shared: Arc<EventLoop>,
    timer: OwnedFd,
    /// The timer is armed.
    ticking: bool,
    /// Slots; a connection's epoll key is its index.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    request_timeout: Duration,
    idle: Duration,
}

impl Loop {
    fn run(&mut self) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        loop {
            events.clear();
            match epoll::wait(&self.ep, rustix::buffer::spare_capacity(&mut events), None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    // Nothing sensible is left to do without epoll.
                    tracing::error!("the connection loop failed: {e}; stopping the agent");
                    self.agent.shutdown.notify_one();
                    return;
                }
            }
            for ev in &events {
                match ev.data.u64() {
                    WAKE => self.take_incoming(),
                    TICK => {
                        let mut expirations = [0u8; 8];
                        let _ = rustix::io::read(&self.timer, &mut expirations);
                        self.sweep();
                    }
                    key => self.ready(key as usize),
                }
            }
            let busy = self.free.len() < self.conns.len();
            if busy != self.ticking {
                self.set_ticking(busy);
            }
        }
    }

    /// Arms the deadline timer (every [`SWEEP_EVERY`]) or disarms it.
    fn set_ticking(&mut self, on: bool) {
        let every = if on {
            rustix::time::Timespec {
                tv_sec: SWEEP_EVERY.as_secs() as i64,
                tv_nsec: 0,
            }
        } else {
            rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }
        };
        let spec = rustix::time::Itimerspec {
            it_interval: every,
            it_value: every,
        };
        match rustix::time::timerfd_settime(
            &self.timer,
            rustix::time::TimerfdTimerFlags::empty(),
            &spec,
        ) {
            Ok(_) => self.ticking = on,
            Err(e) => tracing::warn!("cannot set the deadline timer: {e}"),
        }
    }

    fn take_incoming(&mut self) {
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(&self.shared.wake, &mut counter);
        let new = std::mem::take(
            &mut *self
                .shared
                .incoming
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (stream, permit) in new {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let key = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            if let Err(e) = watch_in(&self.ep, &stream, key as u64) {
                tracing::warn!("cannot watch a connection: {e}");
                self.free.push(key);
                continue;
            }
            self.conns[key] = Some(Conn {
                stream,
                buf: FrameBuf::new(),
                out: Zeroizing::new(Vec::new()),
                sent: 0,
                greeted: false,
                closing: false,
                dead: false,
                last_request: Instant::now(),
                partial_since: None,
                blocked_since: None,
                blocked_at: 0,
                permit,
            });
        }
    }

    fn conn(&mut self, key: usize) -> Option<&mut Conn> {
        self.conns.get_mut(key).and_then(Option::as_mut)
    }

    /// Sets what epoll reports for `key`; false if that failed.
    fn watch(&self, key: usize, flags: epoll::EventFlags) -> bool {
        let Some(conn) = self.conns.get(key).and_then(Option::as_ref) else {
            return false;
        };
        epoll::modify(
            &self.ep,
            &conn.stream,
            epoll::EventData::new_u64(key as u64),
            flags,
        )
        .is_ok()
    }

    fn remove(&mut self, key: usize) -> Option<Conn> {
        let conn = self.conns.get_mut(key)?.take()?;
        let _ = epoll::delete(&self.ep, &conn.stream);
        self.free.push(key);
        Some(conn)
    }

    /// The socket of `key` is readable, writable, or hung up.
    fn ready(&mut self, key: usize) {
        let Some(conn) = self.conn(key) else {
            return;
        };
        if conn.pending() {
            // Waiting for the client to take our answers (watching OUT only).
            if !conn.flush() {
                if conn.dead {
                    self.remove(key);
                } else if conn.sent - conn.blocked_at >= MAX_FRAME {
                    conn.blocked_since = Some(Instant::now());
                    conn.blocked_at = conn.sent;
                }
                return;
            }
            conn.blocked_since = None;
            if conn.closing {
                self.remove(key);
                return;
            }
            if !self.watch(key, epoll::EventFlags::IN) {
                self.remove(key);
                return;
            }
        } else {
            match conn.buf.fill(&mut &conn.stream) {
                Ok(()) => {}
                Err(FrameError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                // Closed, cut off mid-request, or a socket error.
                Err(_) => {
                    self.remove(key);
                    return;
                }
            }
        }
        self.process(key);
    }

    /// Answers the complete requests buffered for `key`, in order.
    fn process(&mut self, key: usize) {
        let now = Instant::now();
        let mut took_one = false;
        loop {
            let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else {
                return;
            };
            if conn.closing || conn.dead || conn.pending() {
                break;
            }
            let req = match conn.buf.try_frame() {
                Ok(Some(payload)) => Request::decode(payload),
                Ok(None) => break,
                Err(FrameError::TooLarge(n)) => {
                    conn.refuse(
                        ErrorCode::FrameTooLarge,
                        format!("request of {n} bytes is larger than the {MAX_FRAME}-byte limit"),
                    );
                    break;
                }
                Err(_) => {
                    conn.dead = true;
                    break;
                }
            };
            took_one = true;
            conn.last_request = now;
            let req = match req {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("refusing a malformed request");
                    conn.refuse(ErrorCode::BadRequest, format!("malformed request: {e}"));
                    break;
                }
            };
            if !conn.greeted {
                greet(conn, req);
                continue;
            }
            if req.is_activity() {
                self.agent.touch();
            }
            tracing::debug!(request = req.name(), "request");
            match super::dispatch::quick_now(&self.agent, &req) {
                Some(resp) => {
                    conn.send(&resp);
                    if super::dispatch::closes_connection(&resp) {
                        // Out of order (a second `Hello`, a stray
                        // `PromptReply`): nothing after it is read.
                        conn.closing = true;
                        break;
                    }
                }
                None => return self.hand_off(key, req),
            }
        }
        let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        if conn.dead || (conn.closing && !conn.pending()) {
            self.remove(key);
            return;
        }
        conn.partial_since = match (conn.buf.buffered() > 0, conn.partial_since) {
            (false, _) => None,
            (true, Some(t)) if !took_one => Some(t),
            (true, _) => Some(now),
        };
        if conn.pending() && conn.blocked_since.is_none() {
            // The client is not reading: wait until it does.
            conn.blocked_since = Some(now);
            conn.blocked_at = conn.sent;
            if !self.watch(key, epoll::EventFlags::OUT) {
                self.remove(key);
            }
        }
    }

    /// Moves a connection to a thread of its own for `req` and what follows.
    fn hand_off(&mut self, key: usize, req: Request) {
        let Some(conn) = self.remove(key) else {
            return;
        };
        let Conn {
            stream,
            buf,
            permit,
            ..
        } = conn;
        // To tell the client if no thread can be had (the closure that owns
        // the stream is gone by then).
        let spare = stream.try_clone().ok();
        let (agent, runtime) = (self.agent.clone(), self.runtime.clone());
        let spawned = std::thread::Builder::new()
            .name("keyward-conn".into())
            .stack_size(super::CONNECTION_STACK)
            .spawn(move || {
                super::conn::serve(agent, runtime, stream, buf, req);
                drop(permit);
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a connection thread: {e}");
            if let Some(s) = spare {
                let busy = Response::error(
                    ErrorCode::Busy,
                    "the keyward agent cannot take this request now; try again",
                );
                let _ = (&s).write(&busy.encode().0);
            }
        }
    }

    /// Closes the connections whose deadline has passed.
    fn sweep(&mut self) {
        let now = Instant::now();
        let late = |since: Instant, limit: Duration| now.saturating_duration_since(since) > limit;
        let expired: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(key, c)| {
                let c = c.as_ref()?;
                let out = (!c.greeted && late(c.last_request, self.request_timeout))
                    || c.partial_since
                        .is_some_and(|t| late(t, self.request_timeout))
                    || c.blocked_since
                        .is_some_and(|t| late(t, self.request_timeout))
                    || late(c.last_request, self.idle);
                out.then_some(key)
            })
            .collect();
        for key in expired {
            self.remove(key);
        }
    }
}

/// The first request must be `Hello`; a client of another protocol version
/// gets our version, then the connection closes.
fn greet(conn: &mut Conn, req: Request) {
    match req {
        Request::Hello { protocol, client } => {
            conn.send(&Response::HelloOk {
                protocol: PROTOCOL_VERSION,
                agent_version: AGENT_VERSION.into(),
                pid: std::process::id(),
            });
            if protocol == PROTOCOL_VERSION {
                conn.greeted = true;
            } else {
                tracing::info!(
                    protocol,
                    client,
                    "client speaks another protocol version; closing"
                );
                conn.closing = true;
            }
        }
        _ => conn.refuse(
            ErrorCode::BadRequest,
            "the first message must be Hello (see docs/PROTOCOL.md)".into(),
        ),
    }
}
