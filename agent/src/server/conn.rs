//! A connection on its own thread, once a slow request has taken it out of
//! the event loop ([`super::evloop`]): blocking reads and writes, requests in
//! order, until the client goes away.
//!
//! Slow operations (key derivation, protectors) run on the runtime with
//! `Handle::block_on`; prompts (`Prompt` frames answered by `PromptReply`)
//! and `Notice` frames go straight to the client over the socket while the
//! request runs.
//!
//! - A connection may stay silent between requests for
//!   `client_idle_timeout_seconds`; once a request has started, the rest of it
//!   must arrive within `request_timeout_seconds` (a client trickling bytes is
//!   cut off). A slow client holds only its own thread.
//! - An oversized or malformed frame, or a request out of order (a second
//!   `Hello`, a `PromptReply` with no `Prompt` waiting, anything but a
//!   `PromptReply` while one waits), gets an error reply (code 1 or 2), then
//!   the connection is closed; the agent carries on.

use super::state::Agent;
use crate::protect::UnlockIo;
use keyward_client::Secret;
use keyward_client::frame::{FrameBuf, FrameError};
use keyward_client::message::{ErrorCode, PromptKind, Request, Response};
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use zeroize::Zeroize;

enum ReadOutcome {
    Request(Request),
    /// The peer went away, or was too slow: close quietly.
    Close,
    /// Tell the client what was wrong, then close.
    Refuse(Response),
}

/// The reading and writing side of a connection, shared with the prompts of
/// a request in progress (which run on another thread while the connection's
/// own thread waits for the request to finish).
struct Wire {
    stream: UnixStream,
    buf: FrameBuf,
    request_timeout: Duration,
    /// The socket's receive timeout now (set only when it changes: one
    /// system call less per request).
    read_timeout: Option<Duration>,
    /// The socket's send timeout now (set only when it changes).
    write_timeout: Option<Duration>,
    /// Set once the connection cannot be used any more.
    broken: bool,
}

impl Wire {
    /// Sends an answer, which the client must take within the request
    /// timeout (as a whole, a frame's worth at a time: each partial write
    /// only gets what is left, and a long listing's every 64 KiB get the
    /// timeout anew).
    fn send(&mut self, resp: &Response) -> bool {
        if self.broken {
            return false;
        }
        let (mut frame, secret) = resp.encode();
        if self.write_by_deadline(&frame).is_err() {
            self.broken = true;
        }
        if secret {
            frame.zeroize();
        }
        !self.broken
    }

    fn write_by_deadline(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let mut deadline = Instant::now() + self.request_timeout;
        let mut limit = self.request_timeout;
        let mut taken = 0;
        while !bytes.is_empty() {
            if limit.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if self.write_timeout != Some(limit) {
                self.stream.set_write_timeout(Some(limit))?;
                self.write_timeout = Some(limit);
            }
            match (&self.stream).write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    bytes = &bytes[n..];
                    taken += n;
                    if taken >= keyward_client::frame::MAX_FRAME {
                        taken = 0;
                        deadline = Instant::now() + self.request_timeout;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            limit = deadline.saturating_duration_since(Instant::now());
        }
        Ok(())
    }

    /// Reads the next request: the first byte may take up to `idle`, the
    /// rest of the frame must follow within the request timeout.
    fn read(&mut self, idle: Duration) -> ReadOutcome {
        if self.broken {
            return ReadOutcome::Close;
        }
        let mut deadline: Option<Instant> = None;
        loop {
            match self.buf.try_frame() {
                Ok(Some(payload)) => {
                    return match Request::decode(payload) {
                        Ok(r) => ReadOutcome::Request(r),
                        Err(e) => ReadOutcome::Refuse(Response::error(
                            ErrorCode::BadRequest,
                            format!("malformed request: {e}"),
                        )),
                    };
                }
                Ok(None) => {}
                Err(FrameError::TooLarge(n)) => {
                    return ReadOutcome::Refuse(Response::error(
                        ErrorCode::FrameTooLarge,
                        format!(
                            "request of {n} bytes is larger than the {}-byte limit",
                            keyward_client::frame::MAX_FRAME
                        ),
                    ));
                }
                Err(_) => return ReadOutcome::Close,
            }
            if deadline.is_none() && self.buf.buffered() > 0 {
                deadline = Some(Instant::now() + self.request_timeout);
            }
            let limit = match deadline {
                None => idle,
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            if limit.is_zero() {
                return ReadOutcome::Close;
            }
            if self.read_timeout != Some(limit) {
                if self.stream.set_read_timeout(Some(limit)).is_err() {
                    return ReadOutcome::Close;
                }
                self.read_timeout = Some(limit);
            }
            match self.buf.fill(&mut &self.stream) {
                Ok(()) => {
                    if deadline.is_none() {
                        deadline = Some(Instant::now() + self.request_timeout);
                    }
                }
                Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Close,
            }
        }
    }
}

/// The [`UnlockIo`] of a connection: prompts and notices go straight to the
/// client over the connection's socket.
struct ConnIo {
    wire: Arc<Mutex<Wire>>,
    prompt_timeout: Duration,
}

impl ConnIo {
    fn wire(&self) -> std::sync::MutexGuard<'_, Wire> {
        self.wire.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl UnlockIo for ConnIo {
    fn prompt(&self, kind: PromptKind, message: &str) -> Option<Secret> {
        let mut w = self.wire();
        if !w.send(&Response::Prompt {
            kind,
            message: message.to_owned(),
        }) {
            return None;
        }
        match w.read(self.prompt_timeout) {
            ReadOutcome::Request(Request::PromptReply { answer }) => answer,
            ReadOutcome::Request(other) => {
                // Out of order, as a stray `PromptReply` is elsewhere: the
                // prompt is cancelled and the connection closed.
                w.send(&Response::error(
                    ErrorCode::BadRequest,
                    format!(
                        "only a PromptReply may answer a Prompt, not {}",
                        other.name()
                    ),
                ));
                w.broken = true;
                None
            }
            ReadOutcome::Refuse(r) => {
                w.send(&r);
                w.broken = true;
                None
            }
            ReadOutcome::Close => {
                w.broken = true;
                None
            }
        }
    }

    fn notice(&self, message: &str) {
        self.wire().send(&Response::Notice {
            message: message.to_owned(),
        });
    }
}

/// Serves a connection the event loop handed over, from `first` (a request
/// that is slow or talks back) until the client goes away (blocking; on the
/// connection's own thread). `buf` holds whatever the client sent after
/// `first`.
pub fn serve(
    agent: Arc<Agent>,
    runtime: tokio::runtime::Handle,
    stream: UnixStream,
    buf: FrameBuf,
    first: Request,
) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let request_timeout = Duration::from_secs(agent.config.request_timeout_seconds);
    let idle = Duration::from_secs(agent.config.client_idle_timeout_seconds);
    let wire = Arc::new(Mutex::new(Wire {
        stream,
        buf,
        request_timeout,
        read_timeout: None,
        write_timeout: None,
        broken: false,
    }));
    let lock = || wire.lock().unwrap_or_else(PoisonError::into_inner);
    let io: Arc<dyn UnlockIo> = Arc::new(ConnIo {
        wire: wire.clone(),
        prompt_timeout: Duration::from_secs(agent.config.prompt_timeout_seconds),
    });
    let mut next = Some(first);
    loop {
        let req = match next.take() {
            Some(r) => r,
            None => {
                // (Bound first: the guard of a match scrutinee lives through the arms.)
                let outcome = lock().read(idle);
                match outcome {
                    ReadOutcome::Request(r) => {
                        if r.is_activity() {
                            agent.touch();
                        }
                        tracing::debug!(request = r.name(), "request");
                        r
                    }
                    ReadOutcome::Refuse(r) => {
                        tracing::debug!("refusing a malformed request");
                        lock().send(&r);
                        return;
                    }
                    ReadOutcome::Close => return,
                }
            }
        };
        let shutdown = matches!(req, Request::Shutdown);
        let resp = match super::dispatch::quick(&agent, &req) {
            Some(resp) => resp,
            None => runtime.block_on(super::dispatch::dispatch(agent.clone(), req, io.clone())),
        };
        if !lock().send(&resp) || super::dispatch::closes_connection(&resp) {
            return;
        }
        if shutdown {
            agent.shutdown.notify_one();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_client::frame::write_frame;

    fn io_over(stream: UnixStream) -> ConnIo {
        ConnIo {
            wire: Arc::new(Mutex::new(Wire {
                stream,
                buf: FrameBuf::new(),
                request_timeout: Duration::from_secs(5),
                read_timeout: None,
                write_timeout: None,
                broken: false,
            })),
            prompt_timeout: Duration::from_secs(5),
        }
    }

    fn next(client: &mut UnixStream, buf: &mut FrameBuf) -> Option<Response> {
        buf.read_frame(client)
            .ok()
            .map(|p| Response::decode(p).unwrap())
    }

    #[test]
    fn only_a_prompt_reply_answers_a_prompt() {
        // The answer.
        let (mut client, agent_side) = UnixStream::pair().unwrap();
        let io = io_over(agent_side);
        let answer = Some(Secret::from_slice(b"123456"));
        write_frame(&mut client, Request::PromptReply { answer }.encode()).unwrap();
        let got = io.prompt(PromptKind::Pin, "PIN?");
        assert_eq!(got.as_ref().map(|s| s.expose()), Some(&b"123456"[..]));
        assert!(!io.wire().broken);

        // Anything else: Error code 1, the prompt is cancelled, and nothing
        // more is sent (the connection is closed).
        let (mut client, agent_side) = UnixStream::pair().unwrap();
        let io = io_over(agent_side);
        write_frame(&mut client, Request::Status.encode()).unwrap();
        assert!(io.prompt(PromptKind::Pin, "PIN?").is_none());
        assert!(io.wire().broken);
        io.notice("not sent");
        drop(io);
        let mut buf = FrameBuf::new();
        assert!(matches!(
            next(&mut client, &mut buf),
            Some(Response::Prompt { .. })
        ));
        match next(&mut client, &mut buf) {
            Some(Response::Error(e)) => assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}"),
            other => panic!("{other:?}"),
        }
        assert!(
            next(&mut client, &mut buf).is_none(),
            "more after the error"
        );
    }
}
