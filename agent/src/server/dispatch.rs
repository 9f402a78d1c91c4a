//! Request → operation → response.

use super::state::Agent;
use crate::protect::UnlockIo;
use keyward_client::message::{AgentError, ErrorCode, Request, Response};
use std::sync::Arc;

const HELLO_AGAIN: &str = "Hello is only valid once, first";
const STRAY_PROMPT_REPLY: &str = "PromptReply is only valid as the answer to a Prompt";

/// A request that is valid nowhere it can arrive once the connection is
/// greeted: a second `Hello`, or a `PromptReply` with no `Prompt` waiting
/// (one that answers a `Prompt` is read by the prompt itself). Its answer is
/// `Error` code 1, after which the connection is closed (docs/PROTOCOL.md §7).
pub fn out_of_order(req: &Request) -> Option<AgentError> {
    let message = match req {
        Request::Hello { .. } => HELLO_AGAIN,
        Request::PromptReply { .. } => STRAY_PROMPT_REPLY,
        _ => return None,
    };
    Some(AgentError::new(ErrorCode::BadRequest, message))
}

/// Whether the connection is closed once `resp` is sent: after every `Error`
/// code 1 (bad request), as PROTOCOL.md §7 says.
pub fn closes_connection(resp: &Response) -> bool {
    matches!(resp, Response::Error(e) if e.code == ErrorCode::BadRequest)
}

/// The frequent, quick requests, answered where they arrive (the event loop
/// or a connection thread), and the out-of-order ones ([`out_of_order`]);
/// `None` for the rest, which go to [`dispatch`].
pub fn quick(agent: &Agent, req: &Request) -> Option<Response> {
    if let Some(e) = out_of_order(req) {
        return Some(Response::Error(e));
    }
    let resp = match req {
        Request::Get { name } => agent.get(name).unwrap_or_else(Response::Error),
        Request::Status => Response::Status(agent.status()),
        Request::List => agent.list().unwrap_or_else(Response::Error),
        _ => return None,
    };
    unless_unlocked_on_demand(agent, resp)
}

/// `None` for a "locked" answer when the agent unlocks on demand: the
/// request then goes to [`dispatch`], which asks and waits.
fn unless_unlocked_on_demand(agent: &Agent, resp: Response) -> Option<Response> {
    match &resp {
        Response::Error(e) if e.code == ErrorCode::Locked && agent.unlocks_on_demand() => None,
        _ => Some(resp),
    }
}

/// For the event loop: [`quick`] when it can answer without waiting for a
/// lock (a change being applied, or a rarer vault write such as a protector
/// change, holds the state); `None` otherwise,
/// and the request goes to a thread that may wait.
pub fn quick_now(agent: &Agent, req: &Request) -> Option<Response> {
    if let Some(e) = out_of_order(req) {
        return Some(Response::Error(e));
    }
    let resp = match req {
        Request::Get { name } => agent.try_get(name)?.unwrap_or_else(Response::Error),
        Request::Status => Response::Status(agent.try_status()?),
        Request::List => agent.try_list()?.unwrap_or_else(Response::Error),
        _ => return None,
    };
    unless_unlocked_on_demand(agent, resp)
}

/// Runs one request. Errors come back as [`Response::Error`].
pub async fn dispatch(agent: Arc<Agent>, req: Request, io: Arc<dyn UnlockIo>) -> Response {
    let result: Result<Response, AgentError> = match req {
        Request::Status => Ok(Response::Status(agent.status())),
        Request::Get { name } => agent.or_unlock("an item", || agent.get(&name)).await,
        Request::List => agent.or_unlock("the list of items", || agent.list()).await,
        Request::Set { name, value } => {
            agent
                .or_unlock("to store an item", || agent.set(&name, &value))
                .await
        }
        Request::Remove { name } => {
            agent
                .or_unlock("to remove an item", || agent.remove(&name))
                .await
        }
        Request::Lock => {
            agent.lock("requested");
            Ok(Response::Ok)
        }
        Request::Init(r) => agent.init(r).await,
        Request::Unlock(r) => agent.unlock(r, io).await,
        Request::Join {
            path,
            password,
            secret_key,
            protector,
        } => agent.join(&path, &password, &secret_key, &protector).await,
        Request::Sync => agent.sync_now(),
        Request::MergeFiles { ours, theirs } => agent.merge_files(&ours, &theirs),
        Request::DeviceList => agent.device_list(),
        Request::DeviceRename { device, name } => agent.device_rename(&device, &name),
        Request::DeviceRemove { device } => agent.device_remove(&device),
        Request::Rekey { password } => agent.rekey(&password).await,
        Request::ChangePassword { old, new } => agent.change_password(&old, &new).await,
        Request::RecoveryCodeNew { password } => agent.recovery_code_new(&password).await,
        Request::RecoveryCodeList => agent.recovery_code_list(),
        Request::RecoveryCodeRevoke { id, password } => {
            agent.recovery_code_revoke(&id, &password).await
        }
        Request::Recover { code, new_password } => agent.recover(&code, &new_password).await,
        Request::SecretKeyRotate { password } => agent.rotate_secret_key(&password).await,
        Request::EmergencyKit { password } => agent.emergency_kit(&password).await,
        Request::ProtectorAdd(r) => agent.protector_add(r, io).await,
        Request::ProtectorList => agent.protector_list(),
        Request::ProtectorRemove { id, password } => agent.protector_remove(&id, &password).await,
        Request::SessionEnd { session } => Ok(agent.session_end(session).await),
        Request::CheckPassword { password } => agent.check_password(&password).await,
        Request::CheckRecoveryCode { code } => agent.check_recovery_code(&code).await,
        Request::Backup { out, force } => agent.backup(&out, force),
        Request::Restore { path, older } => agent.restore(&path, older),
        Request::Rename { old, new } => agent.rename(&old, &new),
        Request::OrganizerCreate => agent.organizer_create().await,
        Request::OrganizerShow => agent.organizer_show(),
        Request::OrganizerCheck { recipient } => agent.organizer_check(&recipient),
        Request::OrganizerAdd {
            recipient,
            name,
            password,
        } => agent.organizer_add(&recipient, &name, &password).await,
        Request::OrganizerList => agent.organizer_list(),
        Request::OrganizerRemove { which, password } => {
            agent.organizer_remove(&which, &password).await
        }
        Request::OrganizerRecover {
            vault,
            expires_hours,
            password,
        } => {
            agent
                .organizer_recover(&vault, expires_hours, &password)
                .await
        }
        Request::RecoverWithGrant {
            grant,
            code,
            new_password,
        } => agent.recover_with_grant(&grant, &code, &new_password).await,
        Request::SshGenerate {
            name,
            kind,
            bits,
            comment,
        } => agent.ssh_generate(&name, &kind, bits, &comment).await,
        Request::SshImport {
            name,
            file,
            passphrase,
        } => agent.ssh_import(&name, &file, passphrase.as_ref(), io.as_ref()),
        Request::SshList => agent.ssh_list(),
        Request::SshRemove { name } => agent.ssh_remove(&name),
        Request::SshApprove { name, approval } => agent.ssh_approve(&name, &approval),
        Request::SshGenerateCard {
            name,
            serial,
            slot,
            touch,
            pin,
            comment,
        } => {
            agent
                .ssh_generate_card(&name, serial, slot, touch.as_deref(), pin, &comment, io)
                .await
        }
        Request::OrganizerCreateCard { serial, slot, pin } => {
            agent.organizer_create_card(serial, slot, pin, io).await
        }
        Request::OrganizerRecoverCard {
            vault,
            expires_hours,
            pin,
        } => {
            agent
                .organizer_recover_card(&vault, expires_hours, pin, io)
                .await
        }
        Request::Shutdown => {
            agent.lock("shutdown");
            Ok(Response::Ok)
        }
        // (Answered by `quick` before they get here.)
        Request::Hello { .. } => Err(AgentError::new(ErrorCode::BadRequest, HELLO_AGAIN)),
        Request::PromptReply { .. } => {
            Err(AgentError::new(ErrorCode::BadRequest, STRAY_PROMPT_REPLY))
        }
    };
    result.unwrap_or_else(Response::Error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::Config;

    #[test]
    fn the_loop_never_waits_for_a_writer() {
        let d = tempfile::tempdir().unwrap();
        let paths = keyward_client::Paths::under(d.path());
        let agent = Agent::new(
            paths,
            Config::default(),
            crate::harden::euid(),
            Arc::new(SystemClock),
        )
        .unwrap();
        let get = Request::Get { name: "x".into() };
        // Free: answered (here: no account yet).
        assert!(matches!(
            quick_now(&agent, &get),
            Some(Response::Error(e)) if e.code == ErrorCode::NoAccount
        ));
        assert!(matches!(
            quick_now(&agent, &Request::Status),
            Some(Response::Status(_))
        ));
        // A writer holds the state (as a protector change does while it fsyncs):
        // the loop gets no answer instead of waiting.
        let guard = agent.write_state();
        for req in [&get, &Request::Status, &Request::List] {
            assert!(quick_now(&agent, req).is_none(), "{req:?}");
        }
        drop(guard);
        // The attempt counter is held while it is written: status waits for it.
        let a = agent.attempts();
        assert!(quick_now(&agent, &Request::Status).is_none());
        drop(a);
        assert!(quick_now(&agent, &Request::List).is_some());
        // Not a quick request at all.
        assert!(quick_now(&agent, &Request::Lock).is_none());
    }
}
