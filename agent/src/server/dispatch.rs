//! Request → operation → response.

use super::state::Agent;
use crate::protect::UnlockIo;
use keyward_client::message::{AgentError, ErrorCode, Request, Response};
use std::sync::Arc;

/// Runs one request. Errors come back as [`Response::Error`].
pub async fn dispatch(agent: Arc<Agent>, req: Request, io: Arc<dyn UnlockIo>) -> Response {
    let result: Result<Response, AgentError> = match req {
        Request::Status => Ok(Response::Status(agent.status())),
        Request::Get { name } => agent.get(&name),
        Request::List => agent.list(),
        Request::Set { name, value } => agent.set(&name, &value),
        Request::Remove { name } => agent.remove(&name),
        Request::Lock => {
            agent.lock("requested");
            Ok(Response::Ok)
        }
        Request::Init(r) => agent.init(r).await,
        Request::Unlock(r) => agent.unlock(r, io).await,
        Request::ChangePassword { old, new } => agent.change_password(&old, &new).await,
        Request::Shutdown => {
            agent.lock("shutdown");
            Ok(Response::Ok)
        }
        Request::Hello { .. } => Err(AgentError::new(
            ErrorCode::BadRequest,
            "Hello is only valid once, first",
        )),
        Request::PromptReply { .. } => Err(AgentError::new(
            ErrorCode::BadRequest,
            "PromptReply is only valid as the answer to a Prompt",
        )),
        other => Err(AgentError::new(
            ErrorCode::InvalidInput,
            format!("{} is not supported by this agent yet", other.name()),
        )),
    };
    result.unwrap_or_else(Response::Error)
}
