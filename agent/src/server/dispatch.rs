//! Request → operation → response.

use super::state::Agent;
use crate::protect::UnlockIo;
use keyward_client::message::{AgentError, ErrorCode, Request, Response};
use std::sync::Arc;

/// The frequent, quick requests, answered where they arrive (the event loop
/// or a connection thread); `None` for the rest, which go to [`dispatch`].
pub fn quick(agent: &Agent, req: &Request) -> Option<Response> {
    Some(match req {
        Request::Get { name } => agent.get(name).unwrap_or_else(Response::Error),
        Request::Status => Response::Status(agent.status()),
        Request::List => agent.list().unwrap_or_else(Response::Error),
        _ => return None,
    })
}

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
        Request::RecoveryCodeNew { password } => agent.recovery_code_new(&password).await,
        Request::RecoveryCodeList => agent.recovery_code_list(),
        Request::RecoveryCodeRevoke { id } => agent.recovery_code_revoke(&id),
        Request::Recover { code, new_password } => agent.recover(&code, &new_password).await,
        Request::SecretKeyRotate { password } => agent.rotate_secret_key(&password).await,
        Request::EmergencyKit { password } => agent.emergency_kit(&password).await,
        Request::ProtectorAdd(r) => agent.protector_add(r, io).await,
        Request::ProtectorList => agent.protector_list(),
        Request::ProtectorRemove { id } => agent.protector_remove(&id).await,
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
    };
    result.unwrap_or_else(Response::Error)
}
