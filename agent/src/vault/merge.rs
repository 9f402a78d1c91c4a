//! Merging two copies of one vault, record by record (SECURITY.md §18).
//!
//! Several devices write the same account's vault while apart (each its
//! own part file in a synced folder, or a conflict copy a sync engine
//! kept). [`Unlocked::merge_from`] takes another copy into the vault in
//! memory: the copy must verify under this account's MAC key (a copy from
//! anyone without the account key is refused), and the result depends only
//! on the two states, not on which is "ours": merging is commutative,
//! associative and idempotent, so devices that have seen the same copies
//! hold the same vault whatever the order (the property test in
//! `tests/merge_props.rs` checks it).
//!
//! The rules:
//! - items by id: the later `modified` wins, ties by the sealed bytes;
//!   an item whose tombstone (by id, or by name) is at least as late as its
//!   `modified` is gone; of two live items with one name the later stays
//!   (the other is left out, with no tombstone);
//! - recovery codes by id: a revocation (tombstone) always wins;
//! - password wraps: the one of the latest credential epoch (SECURITY.md
//!   §6) wins, and YubiKey wraps follow it (they seal its Secret Key);
//! - protectors by (kind, device), YubiKeys by (serial, slot), organizer
//!   wraps by key: the later `added` wins, a tombstone at least as late
//!   removes; devices by id: the later rename wins, a removal is for good;
//! - SSH keys by id and by public key; tombstones and used grants: union.

use super::format::{
    self, DeviceRecord, ItemRecord, OrganizerWrap, Parsed, PasswordWrap, PivWrap, ProtectorRecord,
    RecoveryWrap, SshKeyRecord, Tombstone, TombstoneKind, UsedGrant, VaultFile,
};
use super::rekey::key_id;
use super::{ItemMeta, Unlocked};
use crate::account::items;
use crate::account::wrap::Sealed;
use std::collections::{BTreeMap, HashMap};

/// Why a copy was not merged. The vault is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// Another account's vault.
    #[error("it is the vault of account {0}, not of this account")]
    OtherAccount(String),
    /// The MAC does not verify: not written by someone with the account key.
    #[error(
        "it does not verify under this account's key: it was not written by keyward for this \
         account (forged, or damaged), and nothing of it was merged"
    )]
    NotVerified,
    /// An item of the copy does not decrypt although the MAC verified.
    #[error("item {0} of it cannot be decrypted; nothing of it was merged")]
    BadItem(usize),
    /// A change of the Secret Key is in flight in this vault.
    #[error("a change of the Secret Key is being finished; try again")]
    Busy,
}

/// What a merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Whether the vault in memory changed (it then needs writing).
    pub changed: bool,
    /// Whether the password wrap in force was replaced by a later one (a
    /// new password or Secret Key from another device): the Secret Key in
    /// memory, if any, is then forgotten.
    pub credentials_changed: bool,
}

/// The epoch of a password wrap: the number after `pw-` in its slot id
/// (SECURITY.md §6); 0 if it has none.
pub fn wrap_epoch(slot_id: &str) -> u64 {
    slot_id
        .strip_prefix("pw-")
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// What a password wrap's slot id says about the change that made it:
/// (Unix seconds, first 8 hex digits of the device id, `p` for a new
/// password or `s` for a new Secret Key), for slot ids that say it.
pub fn wrap_origin(slot_id: &str) -> Option<(u64, &str, char)> {
    let mut parts = slot_id.strip_prefix("pw-")?.split('-');
    let _epoch = parts.next()?;
    let time = parts.next()?.parse().ok()?;
    let device = parts.next()?;
    let kind = parts.next()?.chars().next()?;
    Some((time, device, kind))
}

/// The latest epoch of a vault's password wraps.
pub fn newest_epoch(v: &VaultFile) -> u64 {
    v.password_wraps
        .iter()
        .map(|w| wrap_epoch(&w.slot_id))
        .max()
        .unwrap_or(0)
}

/// The rank of a vault's latest password wrap (see [`wrap_rank`]).
pub(super) fn newest_wrap_rank(v: &VaultFile) -> Option<(u64, String, Vec<u8>)> {
    v.password_wraps.iter().map(wrap_rank).max()
}

fn wrap_rank(w: &PasswordWrap) -> (u64, String, Vec<u8>) {
    (
        wrap_epoch(&w.slot_id),
        w.slot_id.clone(),
        w.sealed.ct.clone(),
    )
}

fn sealed_rank(s: &Sealed) -> (Vec<u8>, [u8; 12]) {
    (s.ct.clone(), s.nonce)
}

/// Tombstones by (kind, id), the latest removal of each.
fn tombstone_map(a: &[Tombstone], b: &[Tombstone]) -> BTreeMap<(TombstoneKind, Vec<u8>), u64> {
    let mut m = BTreeMap::new();
    for t in a.iter().chain(b) {
        let e = m.entry((t.kind, t.id.clone())).or_insert(t.removed);
        *e = (*e).max(t.removed);
    }
    m
}

/// Merges two lists keyed by `key`: `pick` chooses between two records
/// with one key (it must be symmetric).
fn union_by<T: Clone, K: Ord>(
    a: &[T],
    b: &[T],
    key: impl Fn(&T) -> K,
    pick: impl Fn(&T, &T) -> T,
) -> Vec<T> {
    let mut m: BTreeMap<K, T> = BTreeMap::new();
    for x in a.iter().chain(b) {
        match m.entry(key(x)) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(x.clone());
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let p = pick(e.get(), x);
                e.insert(p);
            }
        }
    }
    m.into_values().collect()
}

/// The later of two by `rank`, the same whichever comes first.
fn later<'a, T, R: Ord>(x: &'a T, y: &'a T, rank: impl Fn(&T) -> R) -> &'a T {
    if rank(y) > rank(x) { y } else { x }
}

/// One item of either side: its record and what its plaintext says.
struct Candidate {
    record: ItemRecord,
    meta: ItemMeta,
}

impl Unlocked {
    /// Takes `other` (a copy of this account's vault, parsed) into this
    /// vault in memory, record by record. Nothing is written: if
    /// [`MergeOutcome::changed`], the caller writes the vault.
    pub fn merge_from(&mut self, other: &Parsed) -> Result<MergeOutcome, MergeError> {
        self.merge_impl(other, Some(&[]))
    }

    /// [`Self::merge_from`] for this device's own file, which may still be
    /// under an account key this vault retired (a `rekey` made on another
    /// device, SECURITY.md §18.6): only that file is taken in under a
    /// previous key, never another device's — whoever still holds an old
    /// key (a removed device, a revoked recovery code and an old copy)
    /// cannot get anything merged. And only under `key` (an id), when
    /// given: the key this device had in force before this vault's — the
    /// one it wrote its file under before it saw the rekey. The file is in
    /// the folder: a holder of a key retired earlier could put one there.
    pub fn merge_own_from(
        &mut self,
        own: &Parsed,
        key: Option<[u8; 8]>,
    ) -> Result<MergeOutcome, MergeError> {
        match key {
            Some(id) => self.merge_impl(own, Some(&[id])),
            None => self.merge_impl(own, None),
        }
    }

    /// `previous`: the ids of the previous keys a copy may be under
    /// (`None`: any this vault holds).
    fn merge_impl(
        &mut self,
        other: &Parsed,
        previous: Option<&[[u8; 8]]>,
    ) -> Result<MergeOutcome, MergeError> {
        if other.vault.account_id != self.file.account_id {
            return Err(MergeError::OtherAccount(other.vault.account_id.to_string()));
        }
        // A change of the Secret Key in flight, here or in the copy: its
        // new wrap may never have been shown to the user (SECURITY.md §18.3).
        if self.needs_settling() || other.vault.password_wraps.len() > 1 {
            return Err(MergeError::Busy);
        }
        // A copy written before a rekey verifies under an earlier account
        // key this vault keeps (record 0x0d): taken as if written now.
        let converted;
        let theirs = if other.mac_ok(&self.keys.mac_key) {
            &other.vault
        } else {
            let old = match previous {
                Some([]) => None,
                _ => self
                    .previous_key_for(other)
                    .filter(|k| previous.is_none_or(|ids| ids.contains(&key_id(k.expose())))),
            }
            .ok_or(MergeError::NotVerified)?;
            converted = self
                .converted_from_previous_key(&other.vault, &old)
                .map_err(|_| MergeError::NotVerified)?;
            &converted
        };
        self.merge_file(theirs)
    }

    /// Takes `theirs`, a copy verified under (or converted to) this
    /// vault's account key, into this vault, record by record.
    pub(super) fn merge_file(&mut self, theirs: &VaultFile) -> Result<MergeOutcome, MergeError> {
        let ours = &self.file;
        // The common case, a copy with the same records in the same order
        // (a part written from the state this vault already has): done.
        if same_records_in_order(ours, theirs) {
            return Ok(MergeOutcome::default());
        }
        let tombs = tombstone_map(&ours.tombstones, &theirs.tombstones);
        let removed_at = |kind: TombstoneKind, id: &[u8]| tombs.get(&(kind, id.to_vec())).copied();

        // Credentials: the latest epoch's password wrap, and its YubiKeys.
        let best = |f: &VaultFile| {
            f.password_wraps
                .iter()
                .max_by(|a, b| wrap_rank(a).cmp(&wrap_rank(b)))
                .cloned()
        };
        let (Some(our_wrap), Some(their_wrap)) = (best(ours), best(theirs)) else {
            // The parser refuses a vault without a password wrap.
            return Err(MergeError::NotVerified);
        };
        let our_epoch = wrap_epoch(&our_wrap.slot_id);
        let their_epoch = wrap_epoch(&their_wrap.slot_id);
        let wrap = later(&our_wrap, &their_wrap, wrap_rank).clone();
        let piv_rank = |p: &PivWrap| (p.added, p.sealed.ct.clone());
        let piv_pick = |x: &PivWrap, y: &PivWrap| {
            let mut w = later(x, y, piv_rank).clone();
            w.last_used = x.last_used.max(y.last_used);
            w
        };
        let piv_key = |p: &PivWrap| (p.serial, p.slot);
        let mut piv_wraps = match our_epoch.cmp(&their_epoch) {
            std::cmp::Ordering::Greater => union_by(&ours.piv_wraps, &[], piv_key, piv_pick),
            std::cmp::Ordering::Less => union_by(&theirs.piv_wraps, &[], piv_key, piv_pick),
            std::cmp::Ordering::Equal if our_wrap == their_wrap => {
                union_by(&ours.piv_wraps, &theirs.piv_wraps, piv_key, piv_pick)
            }
            // Two changes of one epoch: the winner's cards only.
            std::cmp::Ordering::Equal if wrap == our_wrap => {
                union_by(&ours.piv_wraps, &[], piv_key, piv_pick)
            }
            std::cmp::Ordering::Equal => union_by(&theirs.piv_wraps, &[], piv_key, piv_pick),
        };
        piv_wraps.retain(|p| {
            removed_at(
                TombstoneKind::Yubikey,
                &format::Tombstone::yubikey_id(p.serial, p.slot),
            )
            .is_none_or(|t| t < p.added)
        });

        let recovery_wraps: Vec<RecoveryWrap> = union_by(
            &ours.recovery_wraps,
            &theirs.recovery_wraps,
            |r| r.code_id,
            |x, y| {
                let mut w = later(x, y, |r| (r.created, r.sealed.ct.clone())).clone();
                w.last_used = x.last_used.max(y.last_used);
                w
            },
        )
        .into_iter()
        .filter(|r| removed_at(TombstoneKind::RecoveryCode, &r.code_id).is_none())
        .collect();

        let protectors: Vec<ProtectorRecord> = union_by(
            &ours.protectors,
            &theirs.protectors,
            |p| (p.kind.to_byte(), p.device),
            |x, y| {
                let mut w = later(x, y, |p| p.added).clone();
                w.last_used = x.last_used.max(y.last_used);
                if x.added == y.added {
                    w.flags = x.flags | y.flags;
                }
                w
            },
        )
        .into_iter()
        .filter(|p| {
            removed_at(
                TombstoneKind::Protector,
                &Tombstone::protector_id(p.kind, &p.device),
            )
            .is_none_or(|t| t < p.added)
        })
        .collect();

        let devices: Vec<DeviceRecord> = union_by(
            &ours.devices,
            &theirs.devices,
            |d| d.id,
            |x, y| {
                let mut w = later(x, y, |d| (d.named, d.name.clone())).clone();
                w.added = x.added.min(y.added);
                w
            },
        )
        .into_iter()
        .filter(|d| removed_at(TombstoneKind::Device, &d.id).is_none())
        .collect();

        let mut organizers = ours.organizers.clone();
        organizers.key = match (&ours.organizers.key, &theirs.organizers.key) {
            (Some(a), Some(b)) => Some(later(a, b, |k| (k.created, k.key_id)).clone()),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        organizers.card = match (&ours.organizers.card, &theirs.organizers.card) {
            (Some(a), Some(b)) => Some(later(a, b, |c| (c.created, c.card_pk)).clone()),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        if let (Some(k), Some(c)) = (&organizers.key, &organizers.card) {
            // One organizer key per vault: the later one.
            if c.created > k.created || (c.created == k.created && c.card_pk[..8] > k.key_id[..]) {
                organizers.key = None;
            } else {
                organizers.card = None;
            }
        }
        organizers.wraps = union_by(
            &ours.organizers.wraps,
            &theirs.organizers.wraps,
            |w| w.org_pk,
            |x, y| later(x, y, |w: &OrganizerWrap| (w.added, w.sealed.ct.clone())).clone(),
        )
        .into_iter()
        .filter(|w| removed_at(TombstoneKind::OrganizerWrap, &w.org_pk).is_none_or(|t| t < w.added))
        .collect();
        organizers.used_grants = union_by(
            &ours.organizers.used_grants,
            &theirs.organizers.used_grants,
            |g| g.grant_id,
            |x, y| UsedGrant {
                grant_id: x.grant_id,
                used: x.used.min(y.used),
            },
        );

        let mut new_tombs: Vec<Tombstone> = Vec::new();
        // SSH keys: by id; one record per public key (the smaller id stays).
        let mut ssh_keys: Vec<SshKeyRecord> = union_by(
            &ours.ssh_keys,
            &theirs.ssh_keys,
            |k| k.key_id,
            |x, y| later(x, y, |k| sealed_rank(&k.sealed)).clone(),
        )
        .into_iter()
        .filter(|k| removed_at(TombstoneKind::SshKey, &k.key_id).is_none())
        .collect();
        let mut by_public: HashMap<Vec<u8>, [u8; 16]> = HashMap::new();
        for k in &ssh_keys {
            let e = by_public.entry(k.public.clone()).or_insert(k.key_id);
            *e = (*e).min(k.key_id);
        }
        ssh_keys.retain(|k| {
            let keep = by_public.get(&k.public) == Some(&k.key_id);
            if !keep {
                new_tombs.push(Tombstone {
                    kind: TombstoneKind::SshKey,
                    id: k.key_id.to_vec(),
                    removed: 0,
                });
            }
            keep
        });

        // Items.
        let (items, metas) = self.merge_items(theirs, &removed_at)?;

        let mut tombstones: Vec<Tombstone> = tombs
            .iter()
            .map(|((kind, id), removed)| Tombstone {
                kind: *kind,
                id: id.clone(),
                removed: *removed,
            })
            .collect();
        for t in new_tombs {
            match tombstones
                .iter_mut()
                .find(|x| x.kind == t.kind && x.id == t.id)
            {
                Some(x) => x.removed = x.removed.max(t.removed),
                None => tombstones.push(t),
            }
        }
        tombstones.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));

        let merged = VaultFile {
            account_id: ours.account_id,
            created: ours.created.min(theirs.created),
            // This file's own write counter: the next write is its + 1
            // (and a merge that is not written leaves it as it was).
            generation: ours.generation,
            password_wraps: vec![wrap.clone()],
            recovery_wraps,
            piv_wraps,
            protectors,
            organizers,
            ssh_keys,
            devices,
            tombstones,
            previous_keys: union_by(
                &ours.previous_keys,
                &theirs.previous_keys,
                |k| k.key_id,
                |x, y| later(x, y, |k| (k.retired, k.sealed.ct.clone())).clone(),
            ),
            items,
        };
        let changed = !same_content(&self.file, &merged);
        let credentials_changed = wrap != our_wrap;
        if changed {
            let index = metas
                .iter()
                .enumerate()
                .map(|(i, m)| (m.name.clone(), i))
                .collect();
            self.file = merged;
            self.meta = metas;
            self.index = index;
        }
        if credentials_changed {
            // The Secret Key in memory belongs to the superseded wrap.
            self.keys.secret_key = [0; crate::account::secret_key::LEN];
            self.opened_with = None;
        }
        Ok(MergeOutcome {
            changed,
            credentials_changed,
        })
    }

    /// The merged items (sorted by id) and their metadata.
    fn merge_items(
        &self,
        theirs: &VaultFile,
        removed_at: &impl Fn(TombstoneKind, &[u8]) -> Option<u64>,
    ) -> Result<(Vec<ItemRecord>, Vec<ItemMeta>), MergeError> {
        let id = self.file.account_id;
        let mut by_id: BTreeMap<items::ItemId, Candidate> = BTreeMap::new();
        for (rec, meta) in self.file.items.iter().zip(&self.meta) {
            by_id.insert(
                rec.item_id,
                Candidate {
                    record: rec.clone(),
                    meta: meta.clone(),
                },
            );
        }
        for (i, rec) in theirs.items.iter().enumerate() {
            if by_id
                .get(&rec.item_id)
                .is_some_and(|c| c.record.sealed == rec.sealed)
            {
                continue;
            }
            let item = items::open(&self.keys.item_key, &id, &rec.item_id, &rec.sealed)
                .map_err(|_| MergeError::BadItem(i))?;
            let cand = Candidate {
                record: rec.clone(),
                meta: ItemMeta {
                    name: item.name,
                    created: item.created,
                    modified: item.modified,
                },
            };
            match by_id.entry(rec.item_id) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(cand);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    let rank = |c: &Candidate| (c.meta.modified, sealed_rank(&c.record.sealed));
                    if rank(&cand) > rank(e.get()) {
                        e.insert(cand);
                    }
                }
            }
        }
        // Gone: removed by id, or by name (a removal also covers an item of
        // its name that the removing device never saw), up to its time.
        let names_removed = self
            .file
            .tombstones
            .iter()
            .chain(&theirs.tombstones)
            .any(|t| t.kind == TombstoneKind::ItemName);
        by_id.retain(|item_id, c| {
            removed_at(TombstoneKind::Item, item_id).is_none_or(|t| t < c.meta.modified)
                && (!names_removed
                    || removed_at(TombstoneKind::ItemName, &self.name_id(&c.meta.name))
                        .is_none_or(|t| t < c.meta.modified))
        });
        // One live item per name: the later (then the larger id) stays.
        let mut by_name: HashMap<String, (u64, items::ItemId)> =
            HashMap::with_capacity(by_id.len());
        for (item_id, c) in &by_id {
            let e = by_name
                .entry(c.meta.name.clone())
                .or_insert((c.meta.modified, *item_id));
            *e = (*e).max((c.meta.modified, *item_id));
        }
        // The others are left out without a tombstone: they lose to the
        // same item in any later merge (a removal of the winner removes
        // them too, by name), and come back only if edited later.
        by_id.retain(|item_id, c| by_name[c.meta.name.as_str()].1 == *item_id);
        Ok(by_id.into_values().map(|c| (c.record, c.meta)).unzip())
    }
}

/// Whether two vaults hold the same records in the same order (whatever
/// their generation).
fn same_records_in_order(a: &VaultFile, b: &VaultFile) -> bool {
    a.account_id == b.account_id
        && a.created == b.created
        && a.items.len() == b.items.len()
        && a.password_wraps == b.password_wraps
        && a.recovery_wraps == b.recovery_wraps
        && a.piv_wraps == b.piv_wraps
        && a.protectors == b.protectors
        && a.organizers == b.organizers
        && a.ssh_keys == b.ssh_keys
        && a.devices == b.devices
        && a.tombstones == b.tombstones
        && a.previous_keys == b.previous_keys
        && a.items == b.items
}

/// Whether two vaults hold the same records, whatever their order and
/// generation.
fn same_content(a: &VaultFile, b: &VaultFile) -> bool {
    fn sorted<T: Clone, K: Ord>(v: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
        let mut v = v.to_vec();
        v.sort_by_key(|x| key(x));
        v
    }
    fn items(f: &VaultFile) -> Vec<(&items::ItemId, &Sealed)> {
        let mut v: Vec<(&items::ItemId, &Sealed)> =
            f.items.iter().map(|r| (&r.item_id, &r.sealed)).collect();
        v.sort_by_key(|x| x.0);
        v
    }
    a.account_id == b.account_id
        && a.created == b.created
        && a.password_wraps == b.password_wraps
        && sorted(&a.recovery_wraps, |r| r.code_id) == sorted(&b.recovery_wraps, |r| r.code_id)
        && sorted(&a.piv_wraps, |p| (p.serial, p.slot))
            == sorted(&b.piv_wraps, |p| (p.serial, p.slot))
        && sorted(&a.protectors, |p| (p.kind.to_byte(), p.device))
            == sorted(&b.protectors, |p| (p.kind.to_byte(), p.device))
        && a.organizers.key == b.organizers.key
        && a.organizers.card == b.organizers.card
        && sorted(&a.organizers.wraps, |w| w.org_pk) == sorted(&b.organizers.wraps, |w| w.org_pk)
        && sorted(&a.organizers.used_grants, |g| g.grant_id)
            == sorted(&b.organizers.used_grants, |g| g.grant_id)
        && sorted(&a.ssh_keys, |k| k.key_id) == sorted(&b.ssh_keys, |k| k.key_id)
        && sorted(&a.devices, |d| d.id) == sorted(&b.devices, |d| d.id)
        && sorted(&a.previous_keys, |k| k.key_id) == sorted(&b.previous_keys, |k| k.key_id)
        && sorted(&a.tombstones, |t| (t.kind, t.id.clone()))
            == sorted(&b.tombstones, |t| (t.kind, t.id.clone()))
        && items(a) == items(b)
}
