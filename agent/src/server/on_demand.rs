//! Unlock on demand: when a client's request (get, list, set, rm) finds the
//! agent locked and the config names a `pinentry` program, the agent asks
//! for the Master Password through it (and for a YubiKey PIN the same
//! way), unlocks, and answers the request, so that a program using the
//! library just works, as with gpg-agent and rbw. Off by default: without
//! `pinentry` the client is told the agent is locked.
//!
//! One pinentry at a time: requests that arrive meanwhile wait for it, and
//! find the agent unlocked (or get "locked" if nobody answered). Every
//! prompt has the configured timeout; a pinentry that ignores it is killed.

use super::state::{Agent, State, err, internal, no_account_error};
use crate::protect::UnlockIo;
use keyward_client::message::{AgentError, ErrorCode, UnlockRequest};
use keyward_client::{PromptKind, Secret};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// [`UnlockIo`] through the configured pinentry (the connection that made
/// the request may be a library with no one to ask).
struct PinentryIo {
    program: String,
    timeout: Duration,
}

impl UnlockIo for PinentryIo {
    fn prompt(&self, kind: PromptKind, message: &str) -> Option<Secret> {
        let label = match kind {
            PromptKind::Pin => "YubiKey PIN",
            PromptKind::SecretKey => "Secret Key",
            // Nothing else is asked during an unlock.
            _ => return None,
        };
        keyward_client::pinentry::ask(&self.program, label, message, Some(self.timeout)).ok()
    }

    fn notice(&self, message: &str) {
        tracing::info!(notice = message, "during an unlock on demand");
    }
}

fn nobody_unlocked() -> AgentError {
    err(
        ErrorCode::Locked,
        "the agent is locked, and nobody unlocked it at the password prompt: run `keyward unlock`",
    )
}

impl Agent {
    /// Whether a request that finds the agent locked asks through a pinentry.
    pub(super) fn unlocks_on_demand(&self) -> bool {
        !self.config.pinentry.is_empty()
    }

    /// `op`, and if it finds the agent locked (and a pinentry is
    /// configured), the same again after an unlock through the pinentry.
    pub(super) async fn or_unlock<T>(
        self: &Arc<Self>,
        what: &str,
        mut op: impl FnMut() -> Result<T, AgentError>,
    ) -> Result<T, AgentError> {
        match op() {
            Err(e) if e.code == ErrorCode::Locked && self.unlocks_on_demand() => {
                self.unlock_on_demand(what).await?;
                op()
            }
            other => other,
        }
    }

    /// Asks for the Master Password through the pinentry and unlocks.
    async fn unlock_on_demand(self: &Arc<Self>, what: &str) -> Result<(), AgentError> {
        let seen = self.on_demand_prompts.load(Ordering::SeqCst);
        let _one = self.on_demand.lock().await;
        let id = match &*self.read_state() {
            State::Unlocked(_) => return Ok(()),
            State::NoAccount => return Err(no_account_error()),
            State::Locked(a) => a.id,
        };
        // A prompt ran while this request waited its turn, and the agent is
        // still locked: the user cancelled it or let it time out. Its
        // answer is this request's too (one prompt per burst, not one per
        // waiting client).
        if self.on_demand_prompts.load(Ordering::SeqCst) != seen {
            return Err(nobody_unlocked());
        }
        let program = self.config.pinentry.clone();
        let timeout = Duration::from_secs(self.config.pinentry_timeout_seconds);
        let description = format!(
            "A program asked keyward for {what}, and keyward is locked. Enter the Master \
             Password of account {id} to unlock it."
        );
        let asked = {
            let program = program.clone();
            tokio::task::spawn_blocking(move || {
                keyward_client::pinentry::ask(
                    &program,
                    "Master Password",
                    &description,
                    Some(timeout),
                )
            })
            .await
            .map_err(internal)?
        };
        // Counted once the prompt is over: requests that arrived while it
        // was up take its outcome (above) rather than asking again.
        self.on_demand_prompts.fetch_add(1, Ordering::SeqCst);
        let password = match asked {
            Ok(p) if !p.is_empty() => p,
            Ok(_) | Err(_) => {
                if let Err(why) = &asked {
                    tracing::info!("unlock on demand: {why}");
                }
                return Err(nobody_unlocked());
            }
        };
        let io = Arc::new(PinentryIo { program, timeout });
        self.unlock(
            UnlockRequest {
                password,
                ..Default::default()
            },
            io,
        )
        .await
        .map(|_| ())
    }
}
