//! `Init`: creating the account (a child of `state`, whose private parts it uses).

use super::*;

impl Agent {
    pub(in crate::server) fn file_protector(&self, id: &AccountId) -> FileProtector {
        FileProtector::new(&self.paths.state_dir, id, self.uid)
    }

    /// The protector a new account (`init`) or a joining device (`join`)
    /// keeps the Secret Key with: `auto` is the OS keychain if one answers,
    /// else a file. `first` names the command that sets the account up.
    pub(in crate::server) async fn choose_protector(
        &self,
        requested: &str,
        first: &str,
    ) -> Result<&'static str, AgentError> {
        Ok(match requested {
            "auto" => {
                // The best available: the OS keychain if one answers, else a file.
                match tokio::task::spawn_blocking(crate::protect::keychain::keychain_available)
                    .await
                {
                    Ok(Ok(())) => "keychain",
                    Ok(Err(why)) => {
                        tracing::info!(
                            "no usable keychain ({why}); keeping the Secret Key in a file"
                        );
                        "file"
                    }
                    Err(_) => "file",
                }
            }
            "file" => "file",
            "keychain" => {
                tokio::task::spawn_blocking(crate::protect::keychain::keychain_available)
                    .await
                    .map_err(internal)?
                    .map_err(|why| err(ErrorCode::Protector, why))?;
                "keychain"
            }
            "none" => "none",
            "yubikey" => {
                return Err(err(
                    ErrorCode::InvalidInput,
                    format!(
                        "set the account up first ({first}), then enroll the YubiKey with \
                     `keyward protector add yubikey`"
                    ),
                ));
            }
            other => {
                return Err(err(
                    ErrorCode::InvalidInput,
                    format!("unknown protector {other:?} (use auto, file, keychain or none)"),
                ));
            }
        })
    }

    /// `Init`: creates the account and keeps the Secret Key with the chosen protector.
    pub async fn init(self: &Arc<Self>, req: InitRequest) -> Result<Response, AgentError> {
        let _heavy = self.heavy.lock().await;
        if let Some(a) = self.existing_account() {
            {
                return Err(err(
                    ErrorCode::Exists,
                    format!(
                        "an account already exists here ({}, vault {}); keyward keeps one account per user",
                        a.id,
                        a.vault_path.display()
                    ),
                ));
            }
        }
        let protector = self
            .choose_protector(&req.protector, "`keyward init`")
            .await?;
        let password = new_password_from(&req.password)?;
        crate::vault::store::ensure_private_dir(&self.paths.data_dir, self.uid)
            .map_err(|e| err(ErrorCode::Storage, e.to_string()))?;
        let params = self.config.kdf_params();
        let data_dir = self.paths.data_dir.clone();
        let now = self.clock.unix_now();
        // Argon2id: on a blocking thread. The account ID is only known after
        // creation, so create under a temporary name and rename.
        let created = tokio::task::spawn_blocking(move || {
            let tmp = data_dir.join(format!(".vault-new-{}.kwv", std::process::id()));
            let r = vault::create(&tmp, &password, params, now);
            r.and_then(|(v, sk)| {
                let final_path = vault_path(&data_dir, &v.account_id());
                std::fs::rename(&tmp, &final_path)?;
                std::fs::File::open(&data_dir)?.sync_all()?;
                Ok((v, sk, final_path))
            })
        })
        .await
        .map_err(internal)?;
        let (mut v, sk, path) = created.map_err(change_error)?;
        let id = v.account_id();
        let kept = async {
            // This device: its id on the protector record, its name in the vault.
            self.open_on_device(&mut v, &path, false, &mut Vec::new())?;
            match protector {
                "file" => {
                    let fp = self.file_protector(&id);
                    fp.store(&sk)
                        .map_err(|e| err(ErrorCode::Storage, e.to_string()))?;
                    v.upsert_protector(&path, ProtectorKind::File, now)
                        .map_err(change_error)?;
                }
                "keychain" => {
                    let sk2 = sk.duplicate();
                    tokio::task::spawn_blocking(move || KeychainProtector::new(id).store(&sk2))
                        .await
                        .map_err(internal)?
                        .map_err(|e| {
                            err(
                                ErrorCode::Protector,
                                format!("the keychain refused the Secret Key: {e}"),
                            )
                        })?;
                    v.upsert_protector(&path, ProtectorKind::Keychain, now)
                        .map_err(change_error)?;
                }
                _ => {}
            }
            Ok::<(), AgentError>(())
        }
        .await;
        if let Err(mut e) = kept {
            // Nothing refers to the new vault yet and its Secret Key was
            // never shown: remove it (and what the protector kept), so that
            // `keyward init` can simply be run again.
            match protector {
                "file" => {
                    let _ = self.file_protector(&id).erase();
                }
                "keychain" => {
                    let _ = tokio::task::spawn_blocking(move || KeychainProtector::new(id).erase())
                        .await;
                }
                _ => {}
            }
            match std::fs::remove_file(&path) {
                Ok(()) => e.message.push_str("; no account was created"),
                Err(r) => {
                    tracing::warn!("cannot remove the unfinished vault: {r}");
                    e.message.push_str(&format!(
                        "; an unfinished vault is left at {}: remove it before running \
                         `keyward init` again",
                        path.display()
                    ));
                }
            }
            return Err(e);
        }
        // A vault joined before and gone since is no longer this device's.
        crate::server::join::forget_pointer(&self.paths);
        self.enroll_policy_organizers(&mut v, &path, now);
        self.remember_generation(&id, v.file().generation);
        self.remember_wrap_costs(v.file());
        self.remember_keys(&v);
        let account = Account {
            id,
            vault_path: path.clone(),
        };
        let shown = Secret::from(sk.display().expose());
        self.install(Session {
            account,
            vault: v,
            protector: protector.to_owned(),
            unlocked_at: boot_clock(),
        });
        tracing::info!(account = %id, protector, "account created");
        Ok(Response::Created {
            account_id: id.to_string(),
            secret_key: shown,
            protector: protector.to_owned(),
            vault_path: path.display().to_string(),
        })
    }
}
