//! `Rekey`: a new account key (SECURITY.md §18.6). The vault is sealed
//! again under it; recovery codes are revoked (their keys are not in the
//! vault), organizer wraps are made again and the machine's organizer
//! policy is applied again; other devices take the new key at their next
//! unlock (the new password wrap opens it with the same credentials).

use super::state::{Agent, change_error, internal, password_from};
use keyward_client::Secret;
use keyward_client::message::{AgentError, Response};
use std::sync::Arc;

impl Agent {
    /// `Rekey`.
    pub async fn rekey(self: &Arc<Self>, password: &Secret) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        self.verify_password_counted(password, "the account key was not changed")
            .await?;
        let pw = password_from(password)?;
        let params = self.config.kdf_params();
        let now = self.clock.unix_now();
        let me = self.clone();
        let (revoked, notes) = tokio::task::spawn_blocking(move || {
            me.edit_vault(|v, path| {
                let revoked = v.rekey(path, &pw, params, now).map_err(change_error)?;
                let id = v.account_id();
                for code_id in &revoked {
                    me.remember_revoked(&id, code_id);
                }
                me.enroll_policy_organizers(v, path, now);
                let mut notes = vec![
                    "every item, SSH key and wrap is sealed under a new account key; copies of \
                     the vault made before now (backups, other devices' old files) stay \
                     readable only with the old credentials"
                        .to_owned(),
                ];
                if !revoked.is_empty() {
                    notes.push(format!(
                        "{} recovery code(s) revoked: the vault does not hold their keys, so \
                         they cannot open the new account key; make new ones with `keyward \
                         recovery-code new`",
                        revoked.len()
                    ));
                }
                notes.push(
                    "other devices take the new key at their next unlock (same Master \
                     Password and Secret Key)"
                        .into(),
                );
                Ok((revoked, notes))
            })
        })
        .await
        .map_err(internal)??;
        tracing::info!(revoked = revoked.len(), "account key changed (rekey)");
        Ok(Response::Rekeyed {
            revoked_codes: revoked,
            notes,
        })
    }
}
