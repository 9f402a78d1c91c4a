//! What belongs to this device and not to the vault's folder (which may be
//! backed up, or synced to the user's other devices): the file protector's
//! Secret Key, the failed-attempt counter, the generation mark and the other
//! rollback records all live in the state directory (SECURITY.md §9, §13).

use super::state::{Agent, State};
use crate::protect::file::FileProtector;

impl Agent {
    /// Moves what an older keyward kept beside the vault (the file
    /// protector's Secret Key) into the state directory. Run at start,
    /// before any client is served; a failure is logged and leaves the
    /// files where they were (the unlock then says what is missing).
    pub fn migrate_device_state(&self) {
        let id = match &*self.read_state() {
            State::Locked(a) => a.id,
            State::Unlocked(s) => s.account.id,
            State::NoAccount => return,
        };
        self.migrate_to_part();
        let file = FileProtector::new(&self.paths.state_dir, &id, self.uid);
        match file.migrate_from(&self.paths.data_dir) {
            Ok(true) => tracing::info!(
                to = %file.path().display(),
                "moved the file protector's Secret Key out of the vault's directory"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!("could not move the file protector's Secret Key: {e}"),
        }
    }

    /// A device that joined before devices wrote parts of their own wrote
    /// the file it joined (the first device's): it now writes a part of its
    /// own, starting as a copy of that file (SECURITY.md §18.1).
    fn migrate_to_part(&self) {
        if !super::join::pointer_file(&self.paths).exists() {
            return;
        }
        let account = match &*self.read_state() {
            State::Locked(a) => a.clone(),
            _ => return,
        };
        if !super::sync::is_main_file(&account.vault_path, &account.id) {
            return;
        }
        let Ok(device) = self.device_id() else { return };
        let dir = account
            .vault_path
            .parent()
            .unwrap_or(std::path::Path::new("/"));
        let part = super::sync::part_path(dir, &account.id, &device);
        let moved = crate::vault::store::read_limited(
            &account.vault_path,
            crate::vault::format::MAX_FILE_LEN,
        )
        .and_then(|bytes| crate::vault::store::write_atomic(&part, &bytes))
        .map_err(|e| e.to_string())
        .and_then(|()| {
            super::join::write_pointer(&self.paths, self.uid, &part).map_err(|e| e.message)
        });
        match moved {
            Ok(()) => {
                tracing::info!(part = %part.display(), "this device now writes a part of its own");
                *self.write_state() = State::Locked(super::state::Account {
                    id: account.id,
                    vault_path: part,
                });
            }
            Err(e) => tracing::warn!("could not give this device a part of its own: {e}"),
        }
    }
}
