//! The account's devices (record 0x0b): added at `init` and `join`,
//! renamed, removed (SECURITY.md §18).

use super::format::{DeviceId, DeviceRecord, Tombstone, TombstoneKind};
use super::{ChangeError, Unlocked};
use std::path::Path;

impl Unlocked {
    /// Adds a device record in memory (the caller writes the vault).
    pub fn add_device(&mut self, d: DeviceRecord) {
        self.file.devices.retain(|x| x.id != d.id);
        self.file.devices.push(d);
    }

    /// Renames a device and writes the vault.
    pub fn rename_device(
        &mut self,
        path: &Path,
        id: &DeviceId,
        name: &str,
        now: u64,
    ) -> Result<(), ChangeError> {
        if !self.file.devices.iter().any(|d| &d.id == id) {
            return Err(ChangeError::NotFound("device", super::hex(id)));
        }
        self.change(path, |v| {
            for d in v.file.devices.iter_mut().filter(|d| &d.id == id) {
                // Later than the name it replaces, whatever the clocks say.
                d.named = now.max(d.named + 1);
                d.name = name.to_owned();
            }
            Ok(())
        })
    }

    /// Removes a device for good, with its file and keychain protector
    /// records, and writes the vault.
    pub fn remove_device(
        &mut self,
        path: &Path,
        id: &DeviceId,
        now: u64,
    ) -> Result<(), ChangeError> {
        if !self.file.devices.iter().any(|d| &d.id == id) {
            return Err(ChangeError::NotFound("device", super::hex(id)));
        }
        self.change(path, |v| {
            v.file.devices.retain(|d| &d.id != id);
            v.tombstone(TombstoneKind::Device, id.to_vec(), now);
            let gone: Vec<_> = v
                .file
                .protectors
                .iter()
                .filter(|p| &p.device == id)
                .cloned()
                .collect();
            for p in gone {
                v.file.protectors.retain(|x| x != &p);
                v.tombstone(
                    TombstoneKind::Protector,
                    Tombstone::protector_id(p.kind, &p.device),
                    now.max(p.added),
                );
            }
            Ok(())
        })
    }
}
