//! `keyward-client`: the keyward protocol, and small clients for the agent.
//!
//! keyward's agent holds the user's unlocked secrets; any local program can
//! ask it for one in a few lines:
//!
//! ```no_run
//! use keyward_client::Client;
//!
//! fn main() -> Result<(), keyward_client::ClientError> {
//!     let mut agent = Client::connect_default()?;   // this user's agent
//!     let token = agent.get("github/token")?;       // zeroized when dropped
//!     let token = token.expose_str().unwrap_or_default();
//!     # let _ = token;
//!     Ok(())
//! }
//! ```
//!
//! With tokio, the same through [`AsyncClient`] (feature `async`, on by default):
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyward_client::ClientError> {
//! let mut agent = keyward_client::AsyncClient::connect_default().await?;
//! agent.set("ci/token", "s3cret").await?;
//! # Ok(()) }
//! ```
//!
//! Errors are typed: [`ClientError::NotRunning`] when no agent listens,
//! [`ClientError::Agent`] with an [`ErrorCode`] such as [`ErrorCode::Locked`]
//! (the user must run `keyward unlock`) or [`ErrorCode::NotFound`].
//!
//! The crate is also the one place that defines the protocol:
//!
//! - [`frame`]: length-prefixed frames with a hard 64 KiB cap;
//! - [`wire`]: the field encoding;
//! - [`message`]: every request and response;
//! - [`paths`]: where the socket and the files live.
//!
//! `docs/PROTOCOL.md` describes the same for implementers in other languages.
//! This crate does no cryptography and never holds keys; secrets it carries
//! (passwords, values) are in zeroizing [`Secret`]s.

pub mod client;
pub mod files;
pub mod frame;
pub mod message;
#[cfg(feature = "async")]
pub mod nonblocking;
pub mod paths;
pub mod pinentry;
pub mod secret;
pub mod wire;

pub use client::{AgentInfo, Client, ClientError, Interaction, NoInteraction};
pub use message::{
    AgentError, AgentState, ErrorCode, ItemInfo, PROTOCOL_VERSION, PromptKind, ProtectorInfo,
    RecoveryCodeInfo, Request, Response, StatusInfo,
};
#[cfg(feature = "async")]
pub use nonblocking::AsyncClient;
pub use paths::Paths;
pub use secret::Secret;
