//! The blocking client: one connection, one request at a time, no runtime.

use crate::frame::{FrameBuf, FrameError};
use crate::message::{
    AgentError, ItemInfo, PROTOCOL_VERSION, PromptKind, Request, Response, StatusInfo,
    UnlockRequest,
};
use crate::paths::{Paths, current_uid};
use crate::secret::Secret;
use crate::wire::DecodeError;
use interprocess::local_socket::traits::{Stream as _, StreamCommon as _};
use interprocess::local_socket::{ConnectOptions, GenericFilePath, Stream, ToFsName};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// What went wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("no keyward agent is running (nothing at {})", socket.display())]
    NotRunning {
        /// The socket path.
        socket: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// Connecting failed for another reason.
    #[error("cannot connect to the keyward agent at {}: {source}", socket.display())]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// The socket or the process behind it belongs to another user.
    #[error(
        "refusing to talk to {}: {what} belongs to uid {owner}, not to you (uid {me})",
        socket.display()
    )]
    WrongOwner {
        /// The socket path.
        socket: PathBuf,
        /// "the socket file" or "the agent process".
        what: &'static str,
        /// Its owner.
        owner: u32,
        /// Our uid.
        me: u32,
    },
    /// The agent speaks another protocol version.
    #[error("{}", version_message(*agent_protocol, agent_version))]
    VersionMismatch {
        /// The agent's protocol version.
        agent_protocol: u16,
        /// The agent's program version.
        agent_version: String,
    },
    /// The agent did not answer in time.
    #[error("the keyward agent did not answer within {0:?}")]
    Timeout(Duration),
    /// I/O after connecting.
    #[error("lost the connection to the keyward agent: {0}")]
    Io(#[from] io::Error),
    /// A framing error.
    #[error("lost the connection to the keyward agent: {0}")]
    Frame(#[from] FrameError),
    /// An undecodable answer.
    #[error("the keyward agent sent an invalid answer: {0}")]
    Decode(#[from] DecodeError),
    /// The agent refused or failed.
    #[error("{0}")]
    Agent(AgentError),
    /// An answer of the wrong type.
    #[error("the keyward agent sent an unexpected answer ({0})")]
    Unexpected(String),
    /// A listing longer than [`MAX_LIST_ITEMS`] items or [`MAX_LIST_BYTES`].
    #[error(
        "the keyward agent sent a listing of more than {MAX_LIST_ITEMS} items or {} MiB, more than this client accepts; if the vault really holds that many items, remove some with `keyward rm NAME`",
        MAX_LIST_BYTES >> 20
    )]
    ListingTooLong,
    /// The agent asked for input and nobody could answer.
    #[error("the keyward agent needs input ({0}) and no way to ask was given")]
    NoInteraction(String),
}

fn version_message(agent_protocol: u16, agent_version: &str) -> String {
    let relation = if agent_protocol < PROTOCOL_VERSION {
        "older"
    } else {
        "newer"
    };
    format!(
        "the running keyward agent ({agent_version}, protocol {agent_protocol}) is {relation} than this \
         client (protocol {PROTOCOL_VERSION}); restart it: `keyward agent stop` (the next command \
         starts the new one), or `systemctl --user restart keyward-agent`"
    )
}

impl ClientError {
    /// The agent's error, if this is one.
    pub fn agent_error(&self) -> Option<&AgentError> {
        match self {
            ClientError::Agent(e) => Some(e),
            _ => None,
        }
    }
}

/// The agent, as it introduced itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// Protocol version.
    pub protocol: u16,
    /// Program version.
    pub version: String,
    /// Process id.
    pub pid: u32,
}

/// Answers the agent's questions during a request (a YubiKey PIN …) and
/// shows its notices ("touch your YubiKey").
pub trait Interaction {
    /// Asks the user; `None` cancels.
    fn prompt(&mut self, kind: PromptKind, message: &str) -> Option<Secret>;
    /// Shows a notice.
    fn notice(&mut self, message: &str);
}

/// An [`Interaction`] that cannot ask anything (prompts fail).
pub struct NoInteraction;

impl Interaction for NoInteraction {
    fn prompt(&mut self, _: PromptKind, _: &str) -> Option<Secret> {
        None
    }
    fn notice(&mut self, _: &str) {}
}

/// The most items a listing may hold, over all its frames: a client refuses
/// a longer one (from an agent gone wrong, or a peer that is no agent)
/// instead of growing without bound.
pub const MAX_LIST_ITEMS: usize = 1_000_000;

/// The most bytes a listing's items may take on the wire, over all its
/// frames (about 240,000 items with names of 256 bytes).
pub const MAX_LIST_BYTES: usize = 64 * 1024 * 1024;

/// A listing arriving as `ItemsPart` frames followed by `Items`
/// (docs/PROTOCOL.md §6), joined into one `Items`.
#[derive(Default)]
pub(crate) struct Listing {
    items: Vec<ItemInfo>,
    bytes: usize,
    parts: usize,
}

impl Listing {
    fn count(&mut self, items: &[ItemInfo]) -> Result<(), ClientError> {
        self.bytes = items
            .iter()
            .fold(self.bytes, |b, i| b.saturating_add(20 + i.name.len()));
        let n = self.items.len().saturating_add(items.len());
        if n > MAX_LIST_ITEMS || self.bytes > MAX_LIST_BYTES {
            return Err(ClientError::ListingTooLong);
        }
        Ok(())
    }

    /// Takes an `ItemsPart`: more frames follow.
    pub(crate) fn part(&mut self, items: Vec<ItemInfo>) -> Result<(), ClientError> {
        self.count(&items)?;
        self.parts += 1;
        if self.items.is_empty() {
            self.items = items;
        } else {
            self.items.extend(items);
        }
        Ok(())
    }

    /// The final response: with parts before it, it must be the `Items`
    /// holding the rest, and the whole listing is returned.
    pub(crate) fn finish(mut self, last: Response) -> Result<Response, ClientError> {
        if self.parts == 0 {
            return Ok(last);
        }
        match last {
            Response::Items(rest) => {
                self.count(&rest)?;
                self.items.extend(rest);
                Ok(Response::Items(self.items))
            }
            other => Err(ClientError::Unexpected(format!(
                "{other:?} after {} parts of a listing",
                self.parts
            ))),
        }
    }
}

/// Whether a request failed because the agent had closed the connection
/// without reading it (its idle timeout while the user typed a password,
/// say, or a restart): sending fails with EPIPE, or the reply's read with
/// ECONNRESET (a Unix socket closed with unread data resets its peer; one
/// closed after reading the request ends in end-of-file instead). The
/// request was not processed and may be sent again on a new connection.
pub(crate) fn closed_by_agent(e: &ClientError) -> bool {
    let io = match e {
        ClientError::Io(io) | ClientError::Frame(FrameError::Io(io)) => io,
        _ => return false,
    };
    matches!(
        io.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

/// Refuses to send a frame the agent would refuse (over the 64 KiB cap).
pub(crate) fn check_size(frame: &[u8]) -> Result<(), ClientError> {
    let payload = frame.len().saturating_sub(crate::frame::HEADER);
    if payload > crate::frame::MAX_FRAME {
        return Err(ClientError::Agent(crate::message::AgentError::new(
            crate::message::ErrorCode::InvalidInput,
            format!(
                "the request is {payload} bytes, more than the protocol's {}-byte limit (values hold at most {} bytes)",
                crate::frame::MAX_FRAME,
                crate::message::MAX_VALUE
            ),
        )));
    }
    Ok(())
}

/// Checks the socket file's owner before connecting.
pub(crate) fn check_socket_owner(socket: &Path, me: u32) -> Result<(), ClientError> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(socket) {
        Ok(md) if md.uid() != me && md.uid() != 0 => Err(ClientError::WrongOwner {
            socket: socket.to_owned(),
            what: "the socket file",
            owner: md.uid(),
            me,
        }),
        Ok(_) => Ok(()),
        Err(source) => Err(ClientError::NotRunning {
            socket: socket.to_owned(),
            source,
        }),
    }
}

pub(crate) fn connect_error(socket: &Path, source: io::Error) -> ClientError {
    match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
            socket: socket.to_owned(),
            source,
        },
        _ => ClientError::Connect {
            socket: socket.to_owned(),
            source,
        },
    }
}

/// A blocking connection to the agent.
///
/// ```no_run
/// use keyward_client::Client;
/// # fn main() -> Result<(), keyward_client::ClientError> {
/// let mut agent = Client::connect_default()?;
/// let token = agent.get("github/token")?;
/// println!("{} bytes", token.len());
/// # Ok(()) }
/// ```
pub struct Client {
    stream: Stream,
    buf: FrameBuf,
    agent: AgentInfo,
    socket: PathBuf,
    timeout: Duration,
    /// Whom we connected as, to connect again.
    uid: u32,
    client_name: String,
    /// A request was sent and its final answer not read (a timeout, an I/O
    /// error, a panic in a prompt): what comes next on this connection may
    /// be that old answer, so the next call connects again.
    poisoned: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .field("agent", &self.agent)
            .finish()
    }
}

/// How long a blocking client waits for an answer by default. Unlocking runs
/// Argon2id (about a second on slow machines) and may wait for a PIN typed by
/// the user, so this is generous; [`Client::set_timeout`] changes it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

impl Client {
    /// Connects to this user's agent (socket from [`Paths::from_env`]).
    pub fn connect_default() -> Result<Self, ClientError> {
        let paths = Paths::from_env().map_err(|e| ClientError::Connect {
            socket: PathBuf::new(),
            source: io::Error::new(io::ErrorKind::NotFound, e),
        })?;
        Self::connect(&paths.socket())
    }

    /// Connects to the agent at `socket`, checks that the socket file and the
    /// process behind it belong to this user (or root), and says hello.
    pub fn connect(socket: &Path) -> Result<Self, ClientError> {
        Self::connect_as(socket, current_uid(), "keyward-client")
    }

    /// [`Client::connect`] for a given uid (the PAM module, after dropping
    /// privileges) and client name.
    pub fn connect_as(socket: &Path, uid: u32, client_name: &str) -> Result<Self, ClientError> {
        check_socket_owner(socket, uid)?;
        let name = socket
            .to_fs_name::<GenericFilePath>()
            .map_err(|e| connect_error(socket, e))?;
        let stream = ConnectOptions::new()
            .name(name)
            .connect_sync()
            .map_err(|e| connect_error(socket, e))?;
        let creds = stream.peer_creds().map_err(ClientError::Io)?;
        if let Some(owner) = creds.euid()
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
        stream.set_recv_timeout(Some(DEFAULT_TIMEOUT))?;
        stream.set_send_timeout(Some(DEFAULT_TIMEOUT))?;
        let mut c = Self {
            stream,
            buf: FrameBuf::new(),
            agent: AgentInfo {
                protocol: 0,
                version: String::new(),
                pid: 0,
            },
            socket: socket.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            uid,
            client_name: client_name.to_owned(),
            poisoned: false,
        };
        // An agent that refuses us (another user's) answers with an error and
        // closes without reading: our hello may then fail to send, but its
        // answer is still there to read.
        let sent = c.send(&Request::Hello {
            protocol: PROTOCOL_VERSION,
            client: client_name.to_owned(),
        });
        let answer = c.recv();
        sent.or_else(|e| if answer.is_ok() { Ok(()) } else { Err(e) })?;
        match answer? {
            Response::HelloOk {
                protocol,
                agent_version,
                pid,
            } => {
                if protocol != PROTOCOL_VERSION {
                    return Err(ClientError::VersionMismatch {
                        agent_protocol: protocol,
                        agent_version,
                    });
                }
                c.agent = AgentInfo {
                    protocol,
                    version: agent_version,
                    pid,
                };
                c.poisoned = false;
                Ok(c)
            }
            Response::Error(e) => Err(ClientError::Agent(e)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Connects again (same socket, uid, name and timeout), dropping a
    /// connection that may still deliver the answer to an abandoned request.
    fn reconnect(&mut self) -> Result<(), ClientError> {
        let mut fresh = Self::connect_as(&self.socket, self.uid, &self.client_name)?;
        if fresh.timeout != self.timeout {
            fresh.set_timeout(self.timeout)?;
        }
        *self = fresh;
        Ok(())
    }

    /// The agent, as it introduced itself.
    pub fn agent(&self) -> &AgentInfo {
        &self.agent
    }

    /// How long to wait for each answer.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.stream.set_recv_timeout(Some(timeout))?;
        self.stream.set_send_timeout(Some(timeout))?;
        self.timeout = timeout;
        Ok(())
    }

    /// Sends a request. From here until its final answer is read the
    /// connection is poisoned (see `call_with`).
    fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        // Wiped on every path, also when refused for its size: it may hold
        // a password or a value.
        let frame = Zeroizing::new(req.encode().0);
        check_size(&frame)?;
        self.poisoned = true;
        let mut w = &self.stream;
        w.write_all(&frame)
            .and_then(|()| w.flush())
            .map_err(|e| self.timeout_or(e.into()))
    }

    fn recv(&mut self) -> Result<Response, ClientError> {
        match self.buf.read_frame(&mut &self.stream) {
            Ok(payload) => Ok(Response::decode(payload)?),
            Err(e) => Err(self.timeout_or(e)),
        }
    }

    fn timeout_or(&self, e: FrameError) -> ClientError {
        match &e {
            FrameError::Io(io)
                if matches!(
                    io.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                ClientError::Timeout(self.timeout)
            }
            _ => ClientError::Frame(e),
        }
    }

    /// Sends a request and returns the final answer, answering prompts and
    /// showing notices through `ui`. An agent error is returned as
    /// [`ClientError::Agent`].
    ///
    /// A listing sent in parts comes back as one [`Response::Items`].
    ///
    /// If an earlier call was abandoned before its final answer (a timeout,
    /// a lost connection), this one first connects to the agent again, so
    /// that it never gets the answer meant for the earlier request.
    pub fn call_with(
        &mut self,
        req: &Request,
        ui: &mut dyn Interaction,
    ) -> Result<Response, ClientError> {
        if self.poisoned {
            self.reconnect()?;
        }
        let first = match self.send(req).and_then(|()| self.recv()) {
            // The agent had closed the connection without reading the
            // request (idle timeout, restart): once more on a new one.
            Err(e) if closed_by_agent(&e) && self.buf.buffered() == 0 => {
                self.reconnect()?;
                self.send(req)?;
                self.recv()?
            }
            first => first?,
        };
        let mut listing = Listing::default();
        let mut next = Some(first);
        loop {
            let resp = match next.take() {
                Some(r) => r,
                None => self.recv()?,
            };
            match resp {
                Response::Prompt { kind, message } => {
                    let answer = ui.prompt(kind, &message);
                    self.send(&Request::PromptReply { answer })?;
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

    /// [`Client::call_with`] without interaction (prompts are cancelled).
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        self.call_with(req, &mut NoInteraction)
    }

    /// An item's value.
    pub fn get(&mut self, name: &str) -> Result<Secret, ClientError> {
        match self.call(&Request::Get {
            name: name.to_owned(),
        })? {
            Response::Value(v) => Ok(v),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Creates or replaces an item.
    pub fn set(&mut self, name: &str, value: impl Into<Secret>) -> Result<(), ClientError> {
        self.expect_ok(&Request::Set {
            name: name.to_owned(),
            value: value.into(),
        })
    }

    /// Deletes an item.
    pub fn remove(&mut self, name: &str) -> Result<(), ClientError> {
        self.expect_ok(&Request::Remove {
            name: name.to_owned(),
        })
    }

    /// Item names and times.
    pub fn list(&mut self) -> Result<Vec<ItemInfo>, ClientError> {
        match self.call(&Request::List)? {
            Response::Items(v) => Ok(v),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The agent's state (does not reset the idle timer).
    pub fn status(&mut self) -> Result<StatusInfo, ClientError> {
        match self.call(&Request::Status)? {
            Response::Status(s) => Ok(s),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Unlocks with the Master Password (the Secret Key from this device's protectors).
    pub fn unlock(&mut self, password: impl Into<Secret>) -> Result<Response, ClientError> {
        self.call(&Request::Unlock(UnlockRequest {
            password: password.into(),
            ..UnlockRequest::default()
        }))
    }

    /// Locks now.
    pub fn lock(&mut self) -> Result<(), ClientError> {
        self.expect_ok(&Request::Lock)
    }

    /// Tells the agent that a login session is ending (`SessionEnd`, what
    /// `pam_keyward` sends with `lock_on_close`). `Ok(None)`: the agent
    /// locked. `Ok(Some(ids))`: it stayed unlocked, because the user has
    /// these other login sessions open.
    pub fn session_end(
        &mut self,
        session: Option<&str>,
    ) -> Result<Option<Vec<String>>, ClientError> {
        match self.call(&Request::SessionEnd {
            session: session.map(str::to_owned),
        })? {
            Response::Ok => Ok(None),
            Response::StillInUse { sessions } => Ok(Some(sessions)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    fn expect_ok(&mut self, req: &Request) -> Result<(), ClientError> {
        match self.call(req)? {
            Response::Ok => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_requests_are_refused_before_sending() {
        let big = Request::Set {
            name: "x".into(),
            value: Secret::new(vec![0; crate::frame::MAX_FRAME]),
        };
        let err = check_size(&big.encode().0).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        let fine = Request::Set {
            name: "x".into(),
            value: Secret::new(vec![0; crate::message::MAX_VALUE]),
        };
        check_size(&fine.encode().0).unwrap();
    }
}
