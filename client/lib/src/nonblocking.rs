//! The async client (tokio), for programs that already run a runtime.

use crate::client::{
    AgentInfo, ClientError, Interaction, NoInteraction, check_socket_owner, connect_error,
};
use crate::frame::{FrameBuf, FrameError, write_frame_async};
use crate::message::{ItemInfo, PROTOCOL_VERSION, Request, Response, StatusInfo, UnlockRequest};
use crate::paths::{Paths, current_uid};
use crate::secret::Secret;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon as _;
use interprocess::local_socket::{ConnectOptions, GenericFilePath, ToFsName};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

    /// The agent, as it introduced itself.
    pub fn agent(&self) -> &AgentInfo {
        &self.agent
    }

    /// How long to wait for each answer.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    async fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        let t = self.timeout;
        let frame = req.encode();
        crate::client::check_size(&frame.0)?;
        tokio::time::timeout(t, write_frame_async(&mut &self.stream, frame))
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

    /// Sends a request; prompts and notices go through `ui`.
    pub async fn call_with(
        &mut self,
        req: &Request,
        ui: &mut (dyn Interaction + Send),
    ) -> Result<Response, ClientError> {
        self.send(req).await?;
        loop {
            match self.recv().await? {
                Response::Prompt { kind, message } => {
                    let answer = ui.prompt(kind, &message);
                    self.send(&Request::PromptReply { answer }).await?;
                }
                Response::Notice { message } => ui.notice(&message),
                Response::Error(e) => return Err(ClientError::Agent(e)),
                other => return Ok(other),
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
