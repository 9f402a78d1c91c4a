//! One client connection: handshake, then requests in order.
//!
//! - The first frame must be `Hello`; the agent answers with its protocol
//!   version and closes the connection if the client's differs.
//! - A connection may stay silent between requests for
//!   `client_idle_timeout_seconds`; once a request has started, the rest of it
//!   must arrive within `request_timeout_seconds` (a client trickling bytes is
//!   cut off). Every connection is its own task, so a slow client never holds
//!   up another.
//! - An oversized or malformed frame gets an error reply, then the connection
//!   is closed; the agent carries on.
//! - During a request the agent may send `Prompt` frames (answered by
//!   `PromptReply`) and `Notice` frames before the final answer.

use super::state::{AGENT_VERSION, Agent};
use crate::protect::UnlockIo;
use keyward_client::Secret;
use keyward_client::frame::{FrameBuf, FrameError, write_frame_async};
use keyward_client::message::{ErrorCode, PROTOCOL_VERSION, PromptKind, Request, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A message from a request handler to its connection.
enum ToClient {
    Prompt {
        kind: PromptKind,
        message: String,
        reply: oneshot::Sender<Option<Secret>>,
    },
    Notice(String),
}

/// The [`UnlockIo`] of a connection: blocking calls (from protector threads)
/// that travel to the connection task and on to the client.
struct ChannelIo(mpsc::Sender<ToClient>);

impl UnlockIo for ChannelIo {
    fn prompt(&self, kind: PromptKind, message: &str) -> Option<Secret> {
        // Prompts block until the user answers: only protector threads may ask.
        if tokio::runtime::Handle::try_current().is_ok() {
            tracing::error!("a prompt was attempted on a runtime thread; cancelled");
            return None;
        }
        let (reply, rx) = oneshot::channel();
        self.0
            .blocking_send(ToClient::Prompt {
                kind,
                message: message.to_owned(),
                reply,
            })
            .ok()?;
        rx.blocking_recv().ok().flatten()
    }

    fn notice(&self, message: &str) {
        // Best effort, and callable from any thread: never blocks.
        let _ = self.0.try_send(ToClient::Notice(message.to_owned()));
    }
}

enum ReadOutcome {
    Request(Request),
    /// The peer went away, or was too slow: close quietly.
    Close,
    /// Tell the client what was wrong, then close.
    Refuse(Response),
}

struct Conn<S> {
    stream: S,
    buf: FrameBuf,
    idle: Duration,
    request_timeout: Duration,
}

impl<S> Conn<S>
where
    for<'a> &'a S: AsyncRead + AsyncWrite + Unpin,
{
    async fn send(&mut self, resp: &Response) -> std::io::Result<()> {
        write_frame_async(&mut &self.stream, resp.encode()).await
    }

    /// Reads the next request with the idle and per-request deadlines.
    async fn read(&mut self, idle: Duration) -> ReadOutcome {
        let mut started: Option<Instant> = None;
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
            let limit = match started {
                None if self.buf.buffered() == 0 => idle,
                None => {
                    started = Some(Instant::now());
                    self.request_timeout
                }
                Some(t) => self.request_timeout.saturating_sub(t.elapsed()),
            };
            match tokio::time::timeout(limit, self.buf.fill_async(&mut &self.stream)).await {
                Ok(Ok(())) => {
                    if started.is_none() {
                        started = Some(Instant::now());
                    }
                }
                Ok(Err(_)) | Err(_) => return ReadOutcome::Close,
            }
        }
    }
}

/// Serves one connection until it closes.
pub async fn serve<S>(agent: Arc<Agent>, stream: S)
where
    for<'a> &'a S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        stream,
        buf: FrameBuf::new(),
        idle: Duration::from_secs(agent.config.client_idle_timeout_seconds),
        request_timeout: Duration::from_secs(agent.config.request_timeout_seconds),
    };
    // Handshake.
    let first_idle = conn.request_timeout;
    match conn.read(first_idle).await {
        ReadOutcome::Request(Request::Hello { protocol, client }) => {
            let hello = Response::HelloOk {
                protocol: PROTOCOL_VERSION,
                agent_version: AGENT_VERSION.into(),
                pid: std::process::id(),
            };
            if conn.send(&hello).await.is_err() {
                return;
            }
            if protocol != PROTOCOL_VERSION {
                tracing::info!(
                    protocol,
                    client,
                    "client speaks another protocol version; closing"
                );
                return;
            }
        }
        ReadOutcome::Request(_) => {
            let _ = conn
                .send(&Response::error(
                    ErrorCode::BadRequest,
                    "the first message must be Hello (see docs/PROTOCOL.md)",
                ))
                .await;
            return;
        }
        ReadOutcome::Refuse(r) => {
            let _ = conn.send(&r).await;
            return;
        }
        ReadOutcome::Close => return,
    }
    loop {
        let idle = conn.idle;
        let req = match conn.read(idle).await {
            ReadOutcome::Request(r) => r,
            ReadOutcome::Refuse(r) => {
                tracing::debug!("refusing a malformed request");
                let _ = conn.send(&r).await;
                return;
            }
            ReadOutcome::Close => return,
        };
        if req.is_activity() {
            agent.touch();
        }
        tracing::debug!(request = ?req, "request");
        let shutdown = matches!(req, Request::Shutdown);
        let resp = handle(&agent, &mut conn, req).await;
        let Some(resp) = resp else { return };
        if conn.send(&resp).await.is_err() {
            return;
        }
        if shutdown {
            agent.shutdown.notify_one();
            return;
        }
    }
}

/// Runs one request, relaying prompts and notices. `None`: close the connection.
async fn handle<S>(agent: &Arc<Agent>, conn: &mut Conn<S>, req: Request) -> Option<Response>
where
    for<'a> &'a S: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<ToClient>(16);
    let io: Arc<dyn UnlockIo> = Arc::new(ChannelIo(tx));
    let fut = super::dispatch::dispatch(agent.clone(), req, io);
    tokio::pin!(fut);
    let prompt_timeout = Duration::from_secs(agent.config.prompt_timeout_seconds);
    let mut broken = false;
    loop {
        tokio::select! {
            biased;
            resp = &mut fut => return (!broken).then_some(resp),
            Some(msg) = rx.recv() => match msg {
                ToClient::Notice(message) => {
                    if !broken && conn.send(&Response::Notice { message }).await.is_err() {
                        broken = true;
                    }
                }
                ToClient::Prompt { kind, message, reply } => {
                    if broken || conn.send(&Response::Prompt { kind, message }).await.is_err() {
                        broken = true;
                        let _ = reply.send(None);
                        continue;
                    }
                    match conn.read(prompt_timeout).await {
                        ReadOutcome::Request(Request::PromptReply { answer }) => {
                            let _ = reply.send(answer);
                        }
                        ReadOutcome::Refuse(r) => {
                            let _ = conn.send(&r).await;
                            broken = true;
                            let _ = reply.send(None);
                        }
                        _ => {
                            broken = true;
                            let _ = reply.send(None);
                        }
                    }
                }
            },
        }
    }
}
