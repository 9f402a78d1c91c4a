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
}
