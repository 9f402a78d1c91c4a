//! The async client (tokio), for programs that already run a runtime.

use crate::client::{
    AgentInfo, ClientError, Interaction, Listing, NoInteraction, check_socket_owner, connect_error,
};
use crate::frame::{FrameBuf, FrameError};
use crate::message::{ItemInfo, PROTOCOL_VERSION, Request, Response, StatusInfo, UnlockRequest};
use crate::paths::{Paths, current_uid};
use crate::secret::Secret;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon as _;
use interprocess::local_socket::{ConnectOptions, GenericFilePath, ToFsName};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

/// An async connection to the agent.
///
/// ```no_run
/// # async fn demo() -> Result<(), keyward_client::ClientError> {
/// let mut agent = keyward_client::AsyncClient::connect_default().await?;
/// let token = agent.get("github/token").await?;
/// # let _ = token; Ok(()) }
/// ```
pub struct AsyncClient {
    stream: Stream,
    buf: FrameBuf,
    agent: AgentInfo,
    timeout: Duration,
    /// The socket, to connect again.
    socket: PathBuf,
    /// A request was sent and its final answer not read (a timeout, an I/O
    /// error, a future dropped mid-call): the next call connects again, so
    /// that it never reads the answer meant for that request.
    poisoned: bool,
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("agent", &self.agent)
            .finish()
    }
}

impl AsyncClient {
    /// Connects to this user's agent.
    pub async fn connect_default() -> Result<Self, ClientError> {
        let paths = Paths::from_env().map_err(|e| ClientError::Connect {
            socket: PathBuf::new(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, e),
        })?;
        Self::connect(&paths.socket()).await
    }

    /// Connects to the agent at `socket` (owner checks as in [`crate::Client::connect`]).
    pub async fn connect(socket: &Path) -> Result<Self, ClientError> {
        let uid = current_uid();
        check_socket_owner(socket, uid)?;
        let name = socket
            .to_fs_name::<GenericFilePath>()
            .map_err(|e| connect_error(socket, e))?;
        let stream = ConnectOptions::new()
            .name(name)
            .connect_tokio()
            .await
            .map_err(|e| connect_error(socket, e))?;
        if let Some(owner) = stream.peer_creds()?.euid()
            && owner != uid
            && owner != 0
        {
            return Err(ClientError::WrongOwner {
                socket: socket.to_owned(),
                what: "the agent process",
                owner,
                me: uid,
            });
        }
        let mut c = Self {
            stream,
            buf: FrameBuf::new(),
            agent: AgentInfo {
                protocol: 0,
                version: String::new(),
                pid: 0,
            },
            timeout: crate::client::DEFAULT_TIMEOUT,
            socket: socket.to_owned(),
            poisoned: false,
        };
        let sent = c
            .send(&Request::Hello {
                protocol: PROTOCOL_VERSION,
                client: "keyward-client (async)".into(),
            })
            .await;
        let answer = c.recv().await;
        sent.or_else(|e| if answer.is_ok() { Ok(()) } else { Err(e) })?;
        match answer? {
            Response::HelloOk {
                protocol,
                agent_version,
                pid,
            } if protocol == PROTOCOL_VERSION => {
                c.agent = AgentInfo {
                    protocol,
                    version: agent_version,
                    pid,
                };
                c.poisoned = false;
                Ok(c)
            }
            Response::HelloOk {
                protocol,
                agent_version,
                ..
            } => Err(ClientError::VersionMismatch {
                agent_protocol: protocol,
                agent_version,
            }),
            Response::Error(e) => Err(ClientError::Agent(e)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Connects again (same socket and timeout), dropping a connection that
    /// may still deliver the answer to an abandoned request.
    async fn reconnect(&mut self) -> Result<(), ClientError> {
        let mut fresh = Self::connect(&self.socket).await?;
        fresh.timeout = self.timeout;
        *self = fresh;
        Ok(())
    }

    /// The agent, as it introduced itself.
    pub fn agent(&self) -> &AgentInfo {
        &self.agent
    }

    /// How long to wait for each answer.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a request. From here until its final answer is read the
    /// connection is poisoned (see `call_with`).
    async fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        let t = self.timeout;
        // Wiped on every path (also when refused for its size, or when this
        // future is dropped): it may hold a password or a value.
        let frame = Zeroizing::new(req.encode().0);
        crate::client::check_size(&frame)?;
        self.poisoned = true;
        tokio::time::timeout(t, (&mut &self.stream).write_all(&frame))
            .await
            .map_err(|_| ClientError::Timeout(t))??;
        Ok(())
    }

    async fn recv(&mut self) -> Result<Response, ClientError> {
        let t = self.timeout;
        let payload = tokio::time::timeout(t, self.buf.read_frame_async(&mut &self.stream))
            .await
            .map_err(|_| ClientError::Timeout(t))?
            .map_err(|e: FrameError| ClientError::Frame(e))?;
        Ok(Response::decode(payload)?)
    }

    /// Sends a request; prompts and notices go through `ui`. A listing sent
    /// in parts comes back as one [`Response::Items`]. If an earlier call was
    /// abandoned before its final answer (a timeout, its future dropped),
    /// this one first connects to the agent again, so that it never gets the
    /// answer meant for the earlier request.
    pub async fn call_with(
        &mut self,
        req: &Request,
        ui: &mut (dyn Interaction + Send),
    ) -> Result<Response, ClientError> {
        if self.poisoned {
            self.reconnect().await?;
        }
        let first = match self.send(req).await {
            Ok(()) => self.recv().await,
            Err(e) => Err(e),
        };
        let first = match first {
            // The agent had closed the connection without reading the
            // request (see `closed_by_agent`): once more on a new one.
            Err(e) if crate::client::closed_by_agent(&e) && self.buf.buffered() == 0 => {
                self.reconnect().await?;
                self.send(req).await?;
                self.recv().await?
            }
            first => first?,
        };
        let mut listing = Listing::default();
        let mut next = Some(first);
        loop {
            let resp = match next.take() {
                Some(r) => r,
                None => self.recv().await?,
            };
            match resp {
                Response::Prompt { kind, message } => {
                    let answer = ui.prompt(kind, &message);
                    self.send(&Request::PromptReply { answer }).await?;
                }
                Response::Notice { message } => ui.notice(&message),
                Response::ItemsPart(items) => listing.part(items)?,
                last => {
                    // The final answer is read: the connection is in step.
                    self.poisoned = false;
                    return match last {
                        Response::Error(e) => Err(ClientError::Agent(e)),
                        other => listing.finish(other),
                    };
                }
            }
        }
    }

    /// Sends a request without interaction.
    pub async fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        self.call_with(req, &mut NoInteraction).await
    }

    /// An item's value.
    pub async fn get(&mut self, name: &str) -> Result<Secret, ClientError> {
        match self
            .call(&Request::Get {
                name: name.to_owned(),
            })
            .await?
        {
            Response::Value(v) => Ok(v),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Creates or replaces an item.
    pub async fn set(&mut self, name: &str, value: impl Into<Secret>) -> Result<(), ClientError> {
        let req = Request::Set {
            name: name.to_owned(),
            value: value.into(),
        };
        match self.call(&req).await? {
            Response::Ok => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Item names.
    pub async fn list(&mut self) -> Result<Vec<ItemInfo>, ClientError> {
        match self.call(&Request::List).await? {
            Response::Items(v) => Ok(v),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The agent's state.
    pub async fn status(&mut self) -> Result<StatusInfo, ClientError> {
        match self.call(&Request::Status).await? {
            Response::Status(s) => Ok(s),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Unlocks with the Master Password.
    pub async fn unlock(&mut self, password: impl Into<Secret>) -> Result<Response, ClientError> {
        self.call(&Request::Unlock(UnlockRequest {
            password: password.into(),
            ..UnlockRequest::default()
        }))
        .await
    }

    /// Locks now.
    pub async fn lock(&mut self) -> Result<(), ClientError> {
        match self.call(&Request::Lock).await? {
            Response::Ok => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}
