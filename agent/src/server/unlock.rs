//! `Unlock`: the protectors asked for the Secret Key, the back-off, and the
//! session it installs (a child of `state`, whose private parts it uses).

use super::*;

/// An [`UnlockIo`] that answers the first PIN prompt with a PIN given up front.
struct PresetPin<'a> {
    pin: Mutex<Option<Secret>>,
    inner: &'a dyn UnlockIo,
}

impl UnlockIo for PresetPin<'_> {
    fn prompt(&self, kind: PromptKind, message: &str) -> Option<Secret> {
        if kind == PromptKind::Pin
            && let Some(pin) = self.pin.lock().ok().and_then(|mut p| p.take())
        {
            return Some(pin);
        }
        self.inner.prompt(kind, message)
    }
    fn notice(&self, message: &str) {
        self.inner.notice(message);
    }
}

/// The protectors to ask for the Secret Key, in order, and the kinds left
/// out because they are stale.
/// The protectors to ask, and why others are not asked (for the error).
type Candidates = (Vec<Box<dyn Protector>>, Vec<String>);

impl Agent {
    /// A device removed from the account (on another device) that had
    /// joined it forgets its link to the vault, its id and its file
    /// protector's Secret Key, and has no account any more: `keyward join`
    /// sets it up again (with a new id).
    fn forget_removed_device(&self, writer: &std::sync::MutexGuard<'_, ()>) {
        if !crate::server::join::pointer_file(&self.paths).exists() {
            return;
        }
        let mut st = self.state_for_apply(writer);
        if let State::Locked(a) = &*st {
            let _ = self.file_protector(&a.id).erase();
        }
        crate::server::join::forget_pointer(&self.paths);
        let _ = std::fs::remove_file(self.paths.state_dir.join("device-id"));
        *st = State::NoAccount;
        tracing::warn!("this device was removed from the account on another device");
    }

    /// Derives the keys (Argon2id, on the blocking pool) and opens `parsed`
    /// with the password and Secret Key; a wrong one is counted (§12).
    /// Shared by `Unlock` and `Join`.
    pub(in crate::server) async fn open_counted(
        &self,
        parsed: vault::format::Parsed,
        password: &Arc<Password>,
        sk: &Arc<SecretKey>,
    ) -> Result<vault::Unlocked, AgentError> {
        self.open_counted_any(vec![parsed], 0, password, sk, None, Vec::new())
            .await
            .map(|o| o.vault)
    }

    /// [`Self::open_counted`] from the first of `copies` that opens (the
    /// device's own file, then other devices' parts); also says which.
    /// `newer`: see [`vault::unlock_any`] (its failing is not counted);
    /// `known`: the account keys this device has seen (empty: any).
    pub(in crate::server) async fn open_counted_any(
        &self,
        copies: Vec<vault::format::Parsed>,
        own: usize,
        password: &Arc<Password>,
        sk: &Arc<SecretKey>,
        newer: Option<Arc<SecretKey>>,
        known: Vec<[u8; 8]>,
    ) -> Result<vault::Opened, AgentError> {
        let (pw, key) = (password.clone(), sk.clone());
        // With no key recorded, the own file vouches for the vault taken.
        let own_copy = known.is_empty().then(|| copies.get(own).cloned()).flatten();
        let result = tokio::task::spawn_blocking(move || {
            let accept = |v: &vault::Unlocked| {
                crate::server::rollback::key_accepted(&known, own_copy.as_ref(), v)
            };
            let r = vault::unlock_any(copies, own, &pw, &key, newer.as_deref(), &accept);
            // The account key passed by value through these frames.
            crate::secret::scrub_stack();
            r
        })
        .await
        .map_err(internal)?;
        match result {
            Ok(v) => Ok(v),
            Err(UnlockError::WrongCredentials) => {
                Err(self.record_failure("wrong Master Password or Secret Key"))
            }
            Err(e @ UnlockError::OtherAccount { .. }) => {
                Err(err(ErrorCode::InvalidInput, e.to_string()))
            }
            Err(e @ UnlockError::UnknownKey) => {
                tracing::warn!("a copy of the vault under an unknown account key was refused");
                Err(err(ErrorCode::Corrupt, e.to_string()))
            }
            Err(e @ (UnlockError::Tampered | UnlockError::BadItem(_))) => {
                Err(err(ErrorCode::Corrupt, e.to_string()))
            }
            Err(e) => Err(internal(e)),
        }
    }

    /// The account this device has, if any.
    pub(in crate::server) fn existing_account(&self) -> Option<Account> {
        match &*self.read_state() {
            State::NoAccount => None,
            State::Locked(a) => Some(a.clone()),
            State::Unlocked(s) => Some(s.account.clone()),
        }
    }

    pub(in crate::server) fn backoff_error(&self, message: &str) -> Option<AgentError> {
        let remaining = self
            .attempts()
            .remaining(self.clock.unix_now(), Instant::now());
        if remaining.is_zero() {
            return None;
        }
        let mut e = err(
            ErrorCode::BackedOff,
            format!(
                "{message}: too many failed attempts; try again in {} s",
                remaining.as_secs().max(1)
            ),
        );
        e.retry_after_secs = remaining.as_secs().max(1);
        Some(e)
    }

    pub(in crate::server) fn record_failure(&self, message: &str) -> AgentError {
        let mut a = self.attempts();
        let delay = match a.record_failure(self.clock.unix_now(), Instant::now()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("cannot persist the failed-attempt counter: {e}");
                crate::attempts::delay_for(a.failures())
            }
        };
        let failures = a.failures();
        drop(a);
        tracing::warn!(failures, "failed unlock attempt");
        let free_left = crate::attempts::FREE_FAILURES.saturating_sub(failures);
        let hint = if delay.is_zero() {
            format!(
                "{free_left} more {} before keyward starts delaying attempts",
                if free_left == 1 { "try" } else { "tries" }
            )
        } else {
            format!("next attempt accepted in {} s", delay.as_secs())
        };
        let mut e = err(ErrorCode::WrongCredentials, format!("{message} ({hint})"));
        e.retry_after_secs = delay.as_secs();
        e
    }

    /// The protectors to try, in order.
    /// `newer`: the YubiKey wraps of parts with a later password wrap
    /// (see [`crate::server::sync::newer_card_wraps`]).
    fn candidates(
        &self,
        file: &vault::format::VaultFile,
        newer: &[vault::format::PivWrap],
        with: Option<&str>,
    ) -> Result<Candidates, AgentError> {
        let id = file.account_id;
        let mut out: Vec<Box<dyn Protector>> = Vec::new();
        let mut stale = Vec::new();
        let wanted =
            |kind: &str| with.is_none_or(|w| w == kind || w.starts_with(&format!("{kind}:")));
        // A stale protector holds an older Secret Key (it could not take a
        // new one): asking it would only fail as a wrong password and count
        // against the user.
        // Only this device's records: another device's keychain or file
        // says nothing about this one's (SECURITY.md §18).
        let mine_of = self.my_protector_records();
        let mine = |p: &&vault::format::ProtectorRecord| mine_of(p);
        let mut has = |k: ProtectorKind| {
            let fresh = file
                .protectors
                .iter()
                .filter(mine)
                .any(|p| p.kind == k && p.flags & FLAG_STALE == 0);
            if !fresh && file.protectors.iter().filter(mine).any(|p| p.kind == k) {
                stale.push(k.name());
            }
            fresh
        };
        for kind in &self.config.protectors {
            match kind.as_str() {
                "yubikey" => {
                    for w in &file.piv_wraps {
                        let this = format!("yubikey:{}", w.serial);
                        let full = crate::protect::yubikey::protector_id(w.serial, w.slot);
                        if with.is_none_or(|x| x == "yubikey" || x == this || x == full) {
                            let later = newer.iter().find(|n| {
                                (n.serial, n.slot, n.card_pk) == (w.serial, w.slot, w.card_pk)
                            });
                            out.push(Box::new(
                                YubiKeyProtector::new(w.clone(), id).with_newer(later),
                            ));
                        }
                    }
                }
                "keychain" if wanted("keychain") && has(ProtectorKind::Keychain) => {
                    out.push(Box::new(KeychainProtector::new(id)));
                }
                "file" if wanted("file") && has(ProtectorKind::File) => {
                    out.push(Box::new(self.file_protector(&id)));
                }
                _ => {}
            }
        }
        if let Some(w) = with
            && w != "none"
            && out.is_empty()
        {
            return Err(err(
                ErrorCode::Protector,
                match stale.first() {
                    Some(kind) => format!(
                        "the {kind} protector is stale (it holds an older Secret Key): unlock with \
                         the Secret Key from your Emergency Kit, then re-enroll it with \
                         `keyward protector add {kind}`"
                    ),
                    None => {
                        format!("no protector {w:?} is enrolled (see `keyward protector list`)")
                    }
                },
            ));
        }
        let mut reasons: Vec<String> = stale
            .iter()
            .map(|kind| {
                format!(
                    "{kind}: stale, it holds an older Secret Key (re-enroll it with \
                     `keyward protector add {kind}` once unlocked)"
                )
            })
            .collect();
        // Records of other devices only (a copied vault, a new device): say
        // so once, with what to do.
        for kind in [ProtectorKind::File, ProtectorKind::Keychain] {
            let here = file.protectors.iter().filter(mine).any(|p| p.kind == kind);
            let elsewhere = file
                .protectors
                .iter()
                .any(|p| p.kind == kind && !mine_of(p));
            if elsewhere && !here && wanted(kind.name()) {
                reasons.push(format!(
                    "{k}: the vault's {k} protector is another device's; this device keeps no \
                     Secret Key yet (after unlocking with it: `keyward protector add {k}`)",
                    k = kind.name()
                ));
            }
        }
        Ok((out, reasons))
    }

    /// Obtains the Secret Key from the protectors (or the request), and a
    /// newer one a YubiKey found sealed for it in another device's part.
    async fn secret_key_for_unlock(
        &self,
        file: &vault::format::VaultFile,
        newer: &[vault::format::PivWrap],
        req: &UnlockRequest,
        io: Arc<dyn UnlockIo>,
    ) -> Result<(SecretKey, Option<SecretKey>, String), AgentError> {
        if let Some(typed) = &req.secret_key {
            let text = typed.expose_str().ok_or_else(|| {
                err(
                    ErrorCode::InvalidInput,
                    "this Secret Key has a typo: it is not text",
                )
            })?;
            let sk =
                SecretKey::parse(text).map_err(|e| err(ErrorCode::InvalidInput, e.to_string()))?;
            return Ok((sk, None, "none".into()));
        }
        if req.with.as_deref() == Some("none") {
            return Err(err(
                ErrorCode::NeedSecretKey,
                "enter the Secret Key from your Emergency Kit",
            ));
        }
        let mut blocked = None;
        let mut cancelled = false;
        let (candidates, mut reasons) = self.candidates(file, newer, req.with.as_deref())?;
        let quiet = reasons.len();
        // A reason told as it happened (a notice, when another protector
        // is tried next) is not repeated in the final error.
        let mut told = 0;
        let last = candidates.len();
        for (n, p) in candidates.into_iter().enumerate() {
            let more = n + 1 < last;
            let id = p.id();
            let thread_io = io.clone();
            let pin = req.pin.clone();
            let fetched = tokio::task::spawn_blocking(move || {
                let preset = PresetPin {
                    pin: Mutex::new(pin),
                    inner: &*thread_io,
                };
                p.fetch_with_newer(&preset)
            })
            .await
            .map_err(internal)?;
            match fetched {
                Ok((sk, newer)) => return Ok((sk, newer, id)),
                Err(ProtectorError::Unavailable(why)) if more => {
                    io.notice(&format!("{id}: {why}; trying the next protector"));
                    told += 1;
                }
                Err(ProtectorError::Unavailable(why)) => {
                    reasons.push(format!("{id}: {why}"));
                }
                Err(e @ ProtectorError::WrongPin { tries_left, .. }) => {
                    // The user typed a wrong PIN: say so now (with the tries left)
                    // rather than falling through to other protectors.
                    let mut ae = err(ErrorCode::WrongPin, e.to_string());
                    ae.tries_left = Some(tries_left);
                    return Err(ae);
                }
                Err(e @ ProtectorError::PinBlocked { .. }) => {
                    if more {
                        io.notice(&format!("{id}: {e}; trying the next protector"));
                        told += 1;
                    } else {
                        reasons.push(format!("{id}: {e}"));
                    }
                    blocked.get_or_insert(e.to_string());
                }
                Err(ProtectorError::Cancelled) => {
                    // No PIN to be had (a script, a login): another protector may do.
                    reasons.push(format!("{id}: no PIN was given"));
                    cancelled = true;
                }
                Err(ProtectorError::Failed(why)) => {
                    reasons.push(format!("{id}: {why}"));
                }
            }
        }
        if let Some(blocked) = blocked {
            return Err(err(ErrorCode::PinBlocked, blocked));
        }
        if cancelled && req.pin.is_none() && told == 0 && reasons.len() == quiet + 1 {
            return Err(err(
                ErrorCode::Cancelled,
                "no PIN was given for the YubiKey (pass it with --pin-fd N in scripts)",
            ));
        }
        let why = match (reasons.is_empty(), told) {
            (true, 0) => "no protector on this device keeps the Secret Key".to_owned(),
            (true, _) => "no protector on this device could give the Secret Key".to_owned(),
            (false, _) => reasons.join("; "),
        };
        Err(err(
            ErrorCode::NeedSecretKey,
            format!("{why}; enter the Secret Key from your Emergency Kit"),
        ))
    }

    /// `Unlock`.
    pub async fn unlock(
        self: &Arc<Self>,
        req: UnlockRequest,
        io: Arc<dyn UnlockIo>,
    ) -> Result<Response, AgentError> {
        // Marked on arrival: a lock while this waits its turn behind
        // another unlock (a PIN prompt) counts too.
        let mark = self.lock_mark();
        let _heavy = self.heavy.lock().await;
        let account = match &*self.read_state() {
            State::NoAccount => return Err(no_account_error()),
            State::Unlocked(s) => {
                return Ok(self.unlocked_response(
                    &s.account.id,
                    &s.protector,
                    vec!["already unlocked".into()],
                ));
            }
            State::Locked(a) => a.clone(),
        };
        if let Some(e) = self.backoff_error("not unlocking") {
            return Err(e);
        }
        let password = Arc::new(password_from(&req.password)?);
        let typed = req.secret_key.is_some();
        let (mut parsed, own_missing) =
            crate::server::sync::read_own(&account.vault_path, &account.id).map_err(read_error)?;
        self.check_wrap_costs(&parsed.vault)?;
        let affordable = |f: &vault::format::VaultFile| self.check_wrap_costs(f).is_ok();
        let newer_cards =
            crate::server::sync::newer_card_wraps(&parsed.vault, &account.vault_path, affordable);
        let (sk, newer, protector) = self
            .secret_key_for_unlock(&parsed.vault, &newer_cards, &req, io)
            .await?;
        let (sk, newer) = (Arc::new(sk), newer.map(Arc::new));
        let mut reads = 1;
        let mut rekey_notes = Vec::new();
        let (writer, mut v, from_other, own_generation, own_replaced) = loop {
            let generation = parsed.vault.generation;
            // Other devices' parts may hold a newer password wrap (a new
            // password, Secret Key or account key made there).
            // Parts whose wraps cost more than this device accepts are
            // not tried (an attacker's part must not buy Argon2id runs).
            let (copies, own) = crate::server::sync::unlock_copies(
                parsed,
                &account.vault_path,
                &account.id,
                affordable,
            );
            // Kept for after the open: the own file, and the copies a
            // second rekey may have made (they carry a previous key; most
            // vaults never had one, and nothing is copied).
            let spare: Vec<(usize, vault::format::Parsed)> = copies
                .iter()
                .enumerate()
                .filter(|(i, c)| *i == own || !c.vault.previous_keys.is_empty())
                .map(|(i, c)| (i, c.clone()))
                .collect();
            rekey_notes.clear();
            let known = self.known_keys(&account.id);
            let opened = self
                .open_counted_any(copies, own, &password, &sk, newer.clone(), known)
                .await?;
            let (v, which) = (opened.vault, opened.index);
            // Replaced: it opened under a key refused, or another copy was
            // taken and the own file does not verify under its keys.
            let refused = opened.own_refused
                || (which != own && spare.iter().any(|(i, o)| *i == own && !v.knows_key_of(o)));
            // The copies after the one that opened were not tried; those
            // refused opened with these credentials (another rekey?).
            let untried = spare
                .into_iter()
                .filter(|(i, _)| *i > which)
                .map(|(_, c)| c)
                .collect();
            let v = self
                .take_in_other_rekeys(v, opened.refused, untried, &password, &sk, &mut rekey_notes)
                .await?;
            // What follows writes the file (settling, recording the
            // protector's use) and installs the session: under the writers'
            // lock, from the file as it is now. A change that was being
            // written when the agent locked (locking does not wait for it)
            // may have landed since the read above: then open that.
            #[cfg(test)]
            self.unlocks_at_writer.fetch_add(1, Ordering::SeqCst);
            let writer = self.writer();
            let (now, _) = crate::server::sync::read_own(&account.vault_path, &account.id)
                .map_err(read_error)?;
            if now.vault.generation == generation {
                break (writer, v, which != own, generation, refused);
            }
            drop(writer);
            if reads == 3 {
                return Err(err(
                    ErrorCode::Busy,
                    "the vault changed on disk three times while unlocking; try again",
                ));
            }
            reads += 1;
            self.check_wrap_costs(&now.vault)?;
            parsed = now;
        };
        if let Err(e) = self.attempts().reset() {
            tracing::warn!("cannot reset the failed-attempt counter: {e}");
        }
        let mut notes = rekey_notes;
        let now = self.clock.unix_now();
        self.bind_device(&mut v, &account.vault_path)?;
        if v.needs_settling() {
            match v.settle(&account.vault_path, now) {
                Ok(()) => {
                    notes.push(
                        "finished an interrupted change of the Secret Key or password".into(),
                    );
                    self.restore_stores(&mut v, &account.vault_path, now, &mut notes);
                }
                Err(e) => notes.push(format!("could not finish an interrupted change: {e}")),
            }
        }
        // The rollback check is on this device's own file as it was read,
        // before anything merged into it is written (SECURITY.md §13).
        if own_missing || own_replaced {
            // Its generation says nothing (there is none, or it is
            // someone else's): compared is the copy this is made from.
            let older = self
                .check_generation(&account.id, v.file().generation)
                .map(|_| {
                    format!(
                        " The copy it is made from (write generation {}) is older than this \
                         device last saw: it may be missing more.",
                        v.file().generation
                    )
                })
                .unwrap_or_default();
            notes.push(format!(
                "WARNING: this device's vault file {} was {}; it is made again from the other \
                 devices' copies: a change made on this device that had not reached them is \
                 lost.{older}",
                account.vault_path.display(),
                if own_missing {
                    "missing from its folder (deleted there, or by a sync engine)"
                } else {
                    "replaced by a vault under an account key this device has never seen"
                }
            ));
        } else if let Some(note) = self.check_generation(&account.id, own_generation) {
            notes.push(note);
        }
        if let Err(e) = self.open_on_device(&mut v, &account.vault_path, true, &mut notes) {
            if e.code == ErrorCode::PermissionDenied {
                // This device was removed: its link to the vault goes, so
                // that `keyward join` can set it up again.
                self.forget_removed_device(&writer);
            }
            return Err(e);
        }
        if from_other || typed {
            // Typed (after "the Secret Key was changed on another device"),
            // or a newer wrap from another device opened it: this device's
            // file and keychain protectors take the Secret Key in force.
            self.restore_stores(&mut v, &account.vault_path, now, &mut notes);
        }
        self.revoke_again(&mut v, &account.vault_path, &mut notes);
        if let Some(which) = protector_ref(&protector)
            && let Err(e) = v.touch_protector(&account.vault_path, which, now)
        {
            tracing::warn!("cannot record protector use: {e}");
        }
        if own_replaced && let Err(e) = v.persist_above(&account.vault_path, v.file().generation) {
            notes.push(format!("cannot write this device's vault file again: {e}"));
        }
        self.remember_generation(&account.id, v.file().generation);
        self.remember_wrap_costs(v.file());
        self.remember_keys(&v);
        let resp = self.unlocked_response(&account.id, &protector, notes);
        self.install_unless_locked(
            &writer,
            Session {
                account,
                vault: v,
                protector,
                unlocked_at: boot_clock(),
            },
            mark,
        )?;
        tracing::info!("unlocked");
        Ok(resp)
    }

    pub(in crate::server) fn unlocked_response(
        &self,
        id: &AccountId,
        protector: &str,
        notes: Vec<String>,
    ) -> Response {
        Response::Unlocked {
            account_id: id.to_string(),
            protector: protector.to_owned(),
            idle_lock_secs: self.config.idle_lock_seconds,
            lifetime_secs: self.config.lifetime_seconds,
            notes,
        }
    }

    /// Puts the Secret Key in force into every file/keychain protector.
    pub(in crate::server) fn restore_stores(
        &self,
        v: &mut vault::Unlocked,
        path: &Path,
        now: u64,
        notes: &mut Vec<String>,
    ) {
        let Some(sk) = v.secret_key() else { return };
        let kinds: Vec<(ProtectorKind, bool)> = v
            .file()
            .protectors
            .iter()
            .filter(|p| v.owns(p))
            .map(|p| (p.kind, p.flags & FLAG_STALE != 0))
            .collect();
        for (kind, stale) in kinds {
            let stored = match kind {
                ProtectorKind::File => self
                    .file_protector(&v.account_id())
                    .store(&sk)
                    .map_err(|e| e.to_string()),
                ProtectorKind::Keychain => self.keychain_store(&v.account_id(), &sk),
            };
            match stored {
                // It holds the key in force again: no longer stale.
                Ok(()) if stale => {
                    if let Err(e) = v.upsert_protector(path, kind, now) {
                        notes.push(format!("{} protector: {e}", kind.name()));
                    }
                }
                Ok(()) => {}
                Err(e) => notes.push(format!("{} protector: {e}", kind.name())),
            }
        }
    }

    /// Stores the Secret Key in the OS keychain (blocking, bounded by the protector's timeout).
    pub(in crate::server) fn keychain_store(
        &self,
        id: &AccountId,
        sk: &SecretKey,
    ) -> Result<(), String> {
        KeychainProtector::new(*id)
            .store(sk)
            .map_err(|e| e.to_string())
    }
}
