//! `Rekey`: a new account key (SECURITY.md §18.6). The vault is sealed
//! again under it; recovery codes are revoked (their keys are not in the
//! vault), organizer wraps are made again and the machine's organizer
//! policy is applied again; other devices take the new key at their next
//! unlock (the new password wrap opens it with the same credentials).

use super::state::{Agent, change_error, internal, password_from};
use crate::account::password::Password;
use crate::account::secret_key::SecretKey;
use crate::vault::{self, format::Parsed};
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
                me.remember_keys(v);
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

    /// Two rekeys made on two devices while apart (SECURITY.md §18.6):
    /// `opened` are copies the unlock opened with these credentials but did
    /// not take (they do not prove the key in force here); of `copies` (the
    /// ones the unlock did not try: this device's own file and the newest
    /// parts), each that `v` cannot verify but that carries a previous key
    /// (so a rekey made it) is opened with the credentials that just opened
    /// `v` — not counted, and a copy whose password wraps were all tried
    /// costs nothing. Each that proves an account key this device has seen
    /// is reconciled with `v`: the later password wrap's account key stays,
    /// the other is kept as a previous key, and both contents are merged.
    /// Without this the later key's copy opened first and this device's own
    /// file, under the other key, was overwritten by the next write.
    pub(super) async fn take_in_other_rekeys(
        &self,
        mut v: vault::Unlocked,
        opened: Vec<vault::Unlocked>,
        copies: Vec<Parsed>,
        password: &Arc<Password>,
        sk: &Arc<SecretKey>,
        notes: &mut Vec<String>,
    ) -> Result<vault::Unlocked, AgentError> {
        let mut tried: Vec<vault::format::PasswordWrap> = Vec::new();
        let known = self.known_keys(&v.account_id());
        for other in opened {
            let now = self.clock.unix_now();
            let known = known.clone();
            let (kept, r) = tokio::task::spawn_blocking(move || {
                let r = if super::rollback::key_seen(&known, &other) {
                    v.reconcile(other, now)
                } else {
                    (v, Ok(None))
                };
                crate::secret::scrub_stack();
                r
            })
            .await
            .map_err(internal)?;
            v = kept;
            reconciled_note(self, &v, r, notes);
        }
        for copy in copies {
            if v.knows_key_of(&copy)
                || copy.vault.previous_keys.is_empty()
                || copy.vault.password_wraps.iter().all(|w| tried.contains(w))
                || self.check_wrap_costs(&copy.vault).is_err()
            {
                continue;
            }
            tried.extend(copy.vault.password_wraps.iter().cloned());
            let (pw, key, now) = (password.clone(), sk.clone(), self.clock.unix_now());
            let known = known.clone();
            // Argon2id, then every record sealed again: off the runtime.
            let (kept, r) = tokio::task::spawn_blocking(move || {
                let r = match vault::unlock(copy, &pw, &key) {
                    // It must prove a key this device has seen (§18.5).
                    Ok(other) if super::rollback::key_seen(&known, &other) => {
                        v.reconcile(other, now)
                    }
                    _ => (v, Ok(None)),
                };
                // Account keys passed by value through these frames.
                crate::secret::scrub_stack();
                r
            })
            .await
            .map_err(internal)?;
            v = kept;
            reconciled_note(self, &v, r, notes);
        }
        Ok(v)
    }
}

/// What a reconcile of [`Agent::take_in_other_rekeys`] tells the user.
fn reconciled_note(
    agent: &Agent,
    v: &vault::Unlocked,
    r: vault::Reconciled,
    notes: &mut Vec<String>,
) {
    match r {
        Ok(None) => {}
        Ok(Some(codes)) => {
            for code_id in &codes {
                agent.remember_revoked(&v.account_id(), &vault::hex(code_id));
            }
            let lost = codes.len();
            notes.push(
                "took in a copy made under another account key (`keyward rekey` was run on two \
                 devices while apart): the later one is kept, and the other device takes it at \
                 its next unlock"
                    .into(),
            );
            if lost > 0 {
                notes.push(format!(
                    "{lost} recovery code(s) made under the account key not kept are revoked \
                     (the vault does not hold their keys, so they cannot open the one kept): \
                     make new ones with `keyward recovery-code new`"
                ));
            }
        }
        Err(e) => notes.push(format!(
            "a copy made under another account key (`keyward rekey` on another device) was not \
             taken in: {e}"
        )),
    }
}
