#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The record-by-record merge of two copies of one vault
//! (`Unlocked::merge_from`, `src/vault/merge.rs`), checked on random
//! histories and on hand-picked cases.
//!
//! - Convergence: replicas A, B (and C, less often) of one vault run a
//!   random history (set, remove, add and revoke recovery codes, on any of
//!   them, with merges between any two in between; clocks from a small
//!   range so that equal `modified` times are frequent). After syncing
//!   (A takes in B and C, they take in A) they hold the same state (items,
//!   values, recovery codes, tombstones, item records), no further merge
//!   changes anything (`changed == false`), the written file opens to the
//!   same state, and the template vault merging the last copies of the
//!   three in any of the six orders ends equal to them.
//! - No lost acknowledged write: per name, the converged state is the write
//!   that no other write supersedes (a write supersedes the writes its
//!   replica had seen, and a concurrent write with an earlier `modified`);
//!   when two writes are concurrent and tie, either may win.
//! - Revocation wins: a revoked recovery code never comes back, whatever
//!   the merge order, even from a copy saved before the revocation or after
//!   the code was used on the other replica.
//! - Old copies change nothing: every copy saved during the history, merged
//!   into the converged vault, reports `changed == false` (so a removed item
//!   never comes back from an old copy).
//! - A forged copy (one byte changed under the MAC, checksum recomputed, or
//!   another account's vault with this account's id) is refused with
//!   `MergeError::NotVerified` and the vault is unchanged.
//!
//! The replicas are opened with a recovery code (no Argon2id run); one
//! template vault is made once (one Argon2id run) and copied into each case.
//! A failing case prints its history with what each step did.
//!
//! The tests at the end (`known bugs`) each show, on a fixed history, a way
//! the merge breaks these properties; see [`TOLERATE_KNOWN_BUGS`].

use keyward_agent::account::password::{KdfParams, Password};
use keyward_agent::account::recovery::RecoveryCode;
use keyward_agent::vault::format::{self, TombstoneKind};
use keyward_agent::vault::{self, MergeError, Unlocked};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The weakest parameters a new account accepts: keeps tests fast.
const FAST: KdfParams = KdfParams {
    m_kib: 19 * 1024,
    t: 2,
    p: 1,
};
/// The clock of every history: times are `BASE + 0..20`.
const BASE: u64 = 1_700_000_000;
/// The item names of the histories.
const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
/// The items of the template vault: (name, value), set at `BASE`.
const TEMPLATE_ITEMS: [(&str, &str); 2] = [("a", "a-template"), ("b", "b-template")];

fn pw(s: &str) -> Password {
    Password::new(s).unwrap()
}

/// A vault with [`TEMPLATE_ITEMS`] and one recovery code, made once.
struct Template {
    bytes: Vec<u8>,
    /// The recovery code that opens the replicas (its raw bytes).
    code: [u8; 32],
    code_id: [u8; 8],
    /// The ids of [`TEMPLATE_ITEMS`].
    item_ids: Vec<Vec<u8>>,
}

/// Item records by id: (id, nonce ‖ ciphertext).
fn records(v: &Unlocked) -> BTreeMap<Vec<u8>, Vec<u8>> {
    v.file()
        .items
        .iter()
        .map(|r| {
            (
                r.item_id.to_vec(),
                [&r.sealed.nonce[..], &r.sealed.ct].concat(),
            )
        })
        .collect()
}

/// The one item id whose record is new, changed or gone between two
/// [`records`].
fn touched(before: &BTreeMap<Vec<u8>, Vec<u8>>, after: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
    let ids: BTreeSet<&Vec<u8>> = before.keys().chain(after.keys()).collect();
    let mut t = ids
        .into_iter()
        .filter(|id| before.get(*id) != after.get(*id));
    let id = t.next().expect("an item changed").clone();
    assert!(t.next().is_none(), "one item changed");
    id
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault");
        let (mut v, _sk) = vault::create(&path, &pw("correct horse"), FAST, BASE).unwrap();
        let mut item_ids = Vec::new();
        for (name, value) in TEMPLATE_ITEMS {
            let before = records(&v);
            v.set(&path, name, value.as_bytes(), BASE).unwrap();
            item_ids.push(touched(&before, &records(&v)));
        }
        let (code, code_id) = v.add_recovery_code(&path, BASE).unwrap();
        Template {
            bytes: std::fs::read(&path).unwrap(),
            code: *code.expose(),
            code_id,
            item_ids,
        }
    })
}

/// Opens vault bytes with the template's recovery code (no Argon2id run).
fn open_bytes(bytes: &[u8]) -> Unlocked {
    let code = RecoveryCode::from_bytes(&template().code);
    vault::unlock_with_recovery_code(format::parse(bytes).unwrap(), &code).unwrap()
}

/// A temporary directory, in memory when the system has one (the vault
/// writes fsync).
fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

/// What two converged replicas must agree on.
#[derive(PartialEq, Eq)]
struct State {
    /// (name, created, modified, value), sorted by name.
    items: Vec<(String, u64, u64, Vec<u8>)>,
    /// Recovery code ids (hex).
    codes: BTreeSet<String>,
    /// (kind, id, removed).
    tombstones: BTreeSet<(TombstoneKind, Vec<u8>, u64)>,
    /// Item records: id and nonce ‖ ciphertext.
    records: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "items [")?;
        for (name, created, modified, value) in &self.items {
            write!(
                f,
                " {name}={:?} (created {}, modified {})",
                String::from_utf8_lossy(value),
                secs(*created),
                secs(*modified)
            )?;
        }
        write!(f, " ], records [")?;
        for (id, sealed) in &self.records {
            write!(
                f,
                " {}:{}",
                short(id),
                vault::hex(&Sha256::digest(sealed)[..3])
            )?;
        }
        write!(f, " ], tombstones [")?;
        for (kind, id, removed) in &self.tombstones {
            let at = if *kind == TombstoneKind::Item {
                secs(*removed)
            } else {
                removed.to_string()
            };
            write!(f, " {kind:?} {}@{at}", short(id))?;
        }
        write!(f, " ], codes {:?}", self.codes)
    }
}

fn state(v: &Unlocked) -> State {
    let f = v.file();
    State {
        items: v
            .list()
            .into_iter()
            .map(|m| {
                let value = v
                    .get(&m.name)
                    .expect("a listed item opens")
                    .expose()
                    .to_vec();
                (m.name, m.created, m.modified, value)
            })
            .collect(),
        codes: f
            .recovery_wraps
            .iter()
            .map(|w| vault::hex(&w.code_id))
            .collect(),
        tombstones: f
            .tombstones
            .iter()
            .map(|t| (t.kind, t.id.clone(), t.removed))
            .collect(),
        records: records(v),
    }
}

/// Merges the file at `from` into `v` and writes `v` if it changed.
fn sync(v: &mut Unlocked, path: &Path, from: &Path) -> vault::MergeOutcome {
    let out = v.merge_from(&vault::read(from).unwrap()).unwrap();
    if out.changed {
        v.persist(path).unwrap();
    }
    out
}

// ---------------------------------------------------------------- histories

/// The replicas of a history: A and B, and C which joins in less often.
const REPLICAS: [&str; 3] = ["A", "B", "C"];

#[derive(Debug, Clone)]
enum Op {
    /// Sets `NAMES[name]` on replica `on` to a value unique to this step,
    /// at `BASE + at`.
    Set { on: usize, name: usize, at: u64 },
    /// Removes `NAMES[name]` if the replica has it.
    Remove { on: usize, name: usize, at: u64 },
    /// Adds a recovery code.
    AddCode { on: usize, at: u64 },
    /// Revokes the `pick`-th (mod their number) of the replica's codes.
    RevokeCode { on: usize, pick: usize },
    /// Merges replica `from`'s file into replica `into` (written if it
    /// changed; merging its own file must change nothing).
    Sync { into: usize, from: usize },
}

fn replica_index() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(0), 3 => Just(1), 1 => Just(2)]
}

fn op() -> impl Strategy<Value = Op> {
    let time = 0..20u64;
    prop_oneof![
        5 => (replica_index(), 0..NAMES.len(), time.clone())
            .prop_map(|(on, name, at)| Op::Set { on, name, at }),
        2 => (replica_index(), 0..NAMES.len(), time.clone())
            .prop_map(|(on, name, at)| Op::Remove { on, name, at }),
        1 => (replica_index(), time).prop_map(|(on, at)| Op::AddCode { on, at }),
        1 => (replica_index(), 0..8usize).prop_map(|(on, pick)| Op::RevokeCode { on, pick }),
        4 => (replica_index(), replica_index()).prop_map(|(into, from)| Op::Sync { into, from }),
    ]
}

/// One acknowledged write of an item name.
#[derive(Debug)]
struct Write {
    name: &'static str,
    /// `modified` of the item set, or the tombstone time of a removal.
    ts: u64,
    /// The value set, `None` for a removal.
    value: Option<Vec<u8>>,
    /// The writes its replica had seen (its causal past).
    past: BTreeSet<usize>,
    /// The item set or removed.
    item: Vec<u8>,
    /// For messages.
    label: String,
}

struct Replica {
    name: &'static str,
    _dir: tempfile::TempDir,
    path: PathBuf,
    v: Unlocked,
    /// Indices of the writes this replica has seen.
    seen: BTreeSet<usize>,
}

impl Replica {
    fn new(name: &'static str, bytes: &[u8], seen: BTreeSet<usize>) -> Self {
        let dir = tempdir();
        let path = dir.path().join("vault");
        std::fs::write(&path, bytes).unwrap();
        let v = open_bytes(bytes);
        Replica {
            name,
            _dir: dir,
            path,
            v,
            seen,
        }
    }
}

/// Fails the case with `msg` and the history so far.
macro_rules! ensure {
    ($cond:expr, $log:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(TestCaseError::fail(format!(
                "{}\n--- history ---\n{}",
                format!($($msg)+),
                $log
            )));
        }
    };
}

/// The first bytes of an item id, in hex.
fn short(id: &[u8]) -> String {
    vault::hex(&id[..3])
}

fn secs(t: u64) -> String {
    format!("+{}", t.wrapping_sub(BASE))
}

/// Whether write `j` supersedes write `i` (both on one name): `j`'s
/// replica had seen `i`, or they are concurrent and `j` is strictly later.
fn supersedes(writes: &[Write], j: usize, i: usize) -> bool {
    let (wi, wj) = (&writes[i], &writes[j]);
    wj.past.contains(&i) || (!wi.past.contains(&j) && !wj.past.contains(&i) && wj.ts > wi.ts)
}

/// The writes one of which must be the converged state of `name` (an
/// empty list: no item), or `None` if any state is acceptable.
///
/// 1. If no two concurrent writes on the name tie, the write that no other
///    supersedes, if there is one. (There may be none: a replica whose
///    clock is behind the tombstone it just wrote re-creates the name with
///    an earlier time, and a concurrent write lands in between.)
/// 2. Else the writes with the greatest time, unless a write followed one
///    of them on its replica (then anything goes).
fn expected(writes: &[Write], name: &str) -> Option<Vec<usize>> {
    let on: Vec<usize> = (0..writes.len())
        .filter(|&i| writes[i].name == name)
        .collect();
    if on.is_empty() {
        return Some(Vec::new());
    }
    let concurrent =
        |i: usize, j: usize| !writes[i].past.contains(&j) && !writes[j].past.contains(&i);
    let ties = on.iter().any(|&i| {
        on.iter()
            .any(|&j| i != j && concurrent(i, j) && writes[i].ts == writes[j].ts)
    });
    if !ties {
        let winners: Vec<usize> = on
            .iter()
            .copied()
            .filter(|&i| !on.iter().any(|&j| j != i && supersedes(writes, j, i)))
            .collect();
        if winners.len() == 1 {
            return Some(winners);
        }
    }
    let top = on.iter().map(|&i| writes[i].ts).max()?;
    let latest: Vec<usize> = on
        .iter()
        .copied()
        .filter(|&i| writes[i].ts == top)
        .collect();
    let followed = latest
        .iter()
        .any(|&i| on.iter().any(|&j| writes[j].past.contains(&i)));
    (!followed).then_some(latest)
}

/// What a write leaves: `Some((value, modified))`, `None` for a removal.
fn outcome(w: &Write) -> Option<(Vec<u8>, u64)> {
    w.value.clone().map(|v| (v, w.ts))
}

/// Whether the random test lets the merge bugs that the fixed tests at the
/// end of this file show pass (so that it can look for others while they
/// are open):
/// - a removal does not remove an item of the same name that the remover
///   had not seen ([`a_removal_removes_an_unseen_item_of_the_same_name`]);
/// - the result depends on the order of the merges
///   ([`three_copies_merge_to_the_same_tombstones_in_any_order`],
///   [`three_copies_merge_to_the_same_items_in_any_order`]): tolerated
///   if every name still ends in a state the oracle accepts;
/// - two items of one name can both be lost
///   ([`two_items_of_one_name_are_not_both_lost`]).
///
/// With it set, 15,000 random histories passed (5 runs of 3,000 cases).
const TOLERATE_KNOWN_BUGS: bool = false;

/// The first known bug: `got` is an item set, on another item id, by a
/// write that an expected removal had not seen.
fn unseen_item_survives(
    writes: &[Write],
    expected: &[usize],
    name: &str,
    got: &Option<(Vec<u8>, u64)>,
) -> bool {
    let Some(got) = got else { return false };
    let Some(w) = (0..writes.len())
        .find(|&i| writes[i].name == name && outcome(&writes[i]).as_ref() == Some(got))
    else {
        return false;
    };
    expected.iter().any(|&r| {
        writes[r].value.is_none()
            && !writes[r].past.contains(&w)
            && writes[r].item != writes[w].item
    })
}

/// The third known bug: no item, although the name was set on more than
/// one item id.
fn both_items_lost(writes: &[Write], name: &str, got: &Option<(Vec<u8>, u64)>) -> bool {
    let items: BTreeSet<&Vec<u8>> = writes
        .iter()
        .filter(|w| w.name == name && w.value.is_some())
        .map(|w| &w.item)
        .collect();
    got.is_none() && items.len() > 1
}

/// Checks every name of `v` against [`expected`].
fn check_names(writes: &[Write], v: &Unlocked) -> Result<(), String> {
    let list = v.list();
    for name in NAMES {
        let got = list.iter().find(|m| m.name == name).map(|m| {
            let value = v.get(name).unwrap().expose().to_vec();
            (value, m.modified)
        });
        let Some(ok) = expected(writes, name) else {
            continue;
        };
        let want: Vec<Option<(Vec<u8>, u64)>> = if ok.is_empty() {
            vec![None]
        } else {
            ok.iter().map(|&i| outcome(&writes[i])).collect()
        };
        if want.contains(&got)
            || (TOLERATE_KNOWN_BUGS
                && (unseen_item_survives(writes, &ok, name, &got)
                    || both_items_lost(writes, name, &got)))
        {
            continue;
        }
        let show = |o: &Option<(Vec<u8>, u64)>| match o {
            Some((v, m)) => format!("{:?} modified {}", String::from_utf8_lossy(v), secs(*m)),
            None => "absent".into(),
        };
        let writes_on: Vec<String> = writes
            .iter()
            .enumerate()
            .filter(|(_, w)| w.name == name)
            .map(|(i, w)| {
                format!(
                    "w{i} {} (item {}) ts {} value {:?} past {:?}",
                    w.label,
                    short(&w.item),
                    secs(w.ts),
                    w.value.as_deref().map(String::from_utf8_lossy),
                    w.past
                )
            })
            .collect();
        return Err(format!(
            "name {name:?}: got {}, expected one of [{}]\nwrites on it:\n  {}",
            show(&got),
            want.iter().map(show).collect::<Vec<_>>().join(", "),
            writes_on.join("\n  ")
        ));
    }
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let t = template();
    let mut writes: Vec<Write> = TEMPLATE_ITEMS
        .iter()
        .zip(&t.item_ids)
        .map(|((name, value), item)| Write {
            name: NAMES.iter().find(|n| *n == name).unwrap(),
            ts: BASE,
            value: Some(value.as_bytes().to_vec()),
            past: BTreeSet::new(),
            item: item.clone(),
            label: format!("template {name} = {value}"),
        })
        .collect();
    let initial: BTreeSet<usize> = (0..writes.len()).collect();
    let mut reps: Vec<Replica> = REPLICAS
        .iter()
        .map(|name| Replica::new(name, &t.bytes, initial.clone()))
        .collect();
    let mut log = String::new();
    // Every copy of a replica's file written during the history.
    let mut snapshots: Vec<(String, Vec<u8>)> = vec![("template".into(), t.bytes.clone())];
    let mut codes: BTreeMap<[u8; 8], RecoveryCode> = BTreeMap::new();
    codes.insert(t.code_id, RecoveryCode::from_bytes(&t.code));
    let mut revoked: BTreeSet<[u8; 8]> = BTreeSet::new();

    for (step, op) in ops.iter().enumerate() {
        let on = match *op {
            Op::Set { on, .. }
            | Op::Remove { on, .. }
            | Op::AddCode { on, .. }
            | Op::RevokeCode { on, .. } => on,
            Op::Sync { into, .. } => into,
        };
        let (from_path, from_seen) = match *op {
            Op::Sync { from, .. } => (reps[from].path.clone(), reps[from].seen.clone()),
            _ => (PathBuf::new(), BTreeSet::new()),
        };
        let r = &mut reps[on];
        let _ = write!(log, "#{step} {}: ", r.name);
        match *op {
            Op::Set { name, at, .. } => {
                let name = NAMES[name];
                let value = format!("{name}#{step}");
                let before = r.v.list().into_iter().find(|m| m.name == name);
                let recs = records(&r.v);
                r.v.set(&r.path, name, value.as_bytes(), BASE + at).unwrap();
                let item = touched(&recs, &records(&r.v));
                let m = r.v.list().into_iter().find(|m| m.name == name).unwrap();
                let _ = write!(
                    log,
                    "set {name} = {value:?} at {} ({} {}) -> modified {} [w{}]",
                    secs(BASE + at),
                    before.map_or("new item".into(), |b| format!(
                        "edit of modified {}",
                        secs(b.modified)
                    )),
                    short(&item),
                    secs(m.modified),
                    writes.len(),
                );
                writes.push(Write {
                    name,
                    ts: m.modified,
                    value: Some(value.into_bytes()),
                    past: r.seen.clone(),
                    item,
                    label: format!("#{step} {} set {name}", r.name),
                });
                r.seen.insert(writes.len() - 1);
            }
            Op::Remove { name, at, .. } => {
                let name = NAMES[name];
                if let Some(m) = r.v.list().into_iter().find(|m| m.name == name) {
                    let recs = records(&r.v);
                    r.v.remove(&r.path, name, BASE + at).unwrap();
                    let item = touched(&recs, &records(&r.v));
                    let ts = (BASE + at).max(m.modified);
                    let _ = write!(
                        log,
                        "remove {name} (item {}, modified {}) at {} -> tombstone {} [w{}]",
                        short(&item),
                        secs(m.modified),
                        secs(BASE + at),
                        secs(ts),
                        writes.len(),
                    );
                    writes.push(Write {
                        name,
                        ts,
                        value: None,
                        past: r.seen.clone(),
                        item,
                        label: format!("#{step} {} remove {name}", r.name),
                    });
                    r.seen.insert(writes.len() - 1);
                } else {
                    let _ = write!(log, "remove {name}: absent, skipped");
                }
            }
            Op::AddCode { at, .. } => {
                let (code, id) = r.v.add_recovery_code(&r.path, BASE + at).unwrap();
                let _ = write!(log, "add recovery code {}", vault::hex(&id));
                codes.insert(id, code);
            }
            Op::RevokeCode { pick, .. } => {
                let mut ids: Vec<[u8; 8]> =
                    r.v.file()
                        .recovery_wraps
                        .iter()
                        .map(|w| w.code_id)
                        .collect();
                ids.sort_unstable();
                if ids.is_empty() {
                    let _ = write!(log, "revoke: no code, skipped");
                } else {
                    let id = ids[pick % ids.len()];
                    r.v.revoke_recovery_code(&r.path, &vault::hex(&id)).unwrap();
                    let _ = write!(log, "revoke recovery code {}", vault::hex(&id));
                    revoked.insert(id);
                }
            }
            Op::Sync { from, .. } => {
                let out = sync(&mut r.v, &r.path, &from_path);
                let _ = write!(
                    log,
                    "merge from {}: changed {}, credentials changed {}",
                    REPLICAS[from], out.changed, out.credentials_changed
                );
                ensure!(
                    !out.credentials_changed,
                    log,
                    "a merge without a password change changed the credentials"
                );
                ensure!(
                    from != on || !out.changed,
                    log,
                    "merging a replica's own file changed it"
                );
                r.seen.extend(from_seen);
            }
        }
        let names: Vec<String> =
            r.v.list()
                .into_iter()
                .map(|m| format!("{}@{}", m.name, secs(m.modified)))
                .collect();
        let _ = writeln!(log, "  => {} holds [{}]", r.name, names.join(" "));
        snapshots.push((
            format!("{} after #{step}", r.name),
            std::fs::read(&r.path).unwrap(),
        ));
    }

    // The last copies before the final syncs.
    let last: Vec<Vec<u8>> = reps
        .iter()
        .map(|r| std::fs::read(&r.path).unwrap())
        .collect();

    // Sync: A takes in B and C, then B and C take in A.
    let _ = write!(log, "final:");
    for (into, from) in [(0, 1), (0, 2), (1, 0), (2, 0)] {
        let from_path = reps[from].path.clone();
        let r = &mut reps[into];
        let out = sync(&mut r.v, &r.path, &from_path);
        let _ = write!(
            log,
            " {}<-{} changed {};",
            REPLICAS[into], REPLICAS[from], out.changed
        );
    }
    let _ = writeln!(log);
    let all: BTreeSet<usize> = (0..writes.len()).collect();
    for r in &mut reps {
        r.seen.clone_from(&all);
    }
    let sa = state(&reps[0].v);
    for r in &reps[1..] {
        let s = state(&r.v);
        ensure!(
            s == sa,
            log,
            "replicas differ after syncing:\nA: {sa:?}\n{}: {s:?}",
            r.name
        );
    }

    // Idempotence: no merge between them changes anything any more.
    for into in 0..reps.len() {
        for from in 0..reps.len() {
            let from_path = reps[from].path.clone();
            let r = &mut reps[into];
            let out = sync(&mut r.v, &r.path, &from_path);
            ensure!(
                !out.changed,
                log,
                "merging again ({}<-{}) changed the vault",
                REPLICAS[into],
                REPLICAS[from]
            );
        }
    }
    ensure!(state(&reps[0].v) == sa, log, "merging again changed A");

    // No lost acknowledged write.
    let a = &mut reps[0];
    if let Err(e) = check_names(&writes, &a.v) {
        ensure!(false, log, "A: {e}");
    }

    // Recovery codes: revoked ones are gone for good, the others all there.
    for id in &revoked {
        let h = vault::hex(id);
        ensure!(
            !sa.codes.contains(&h),
            log,
            "revoked recovery code {h} is back"
        );
        ensure!(
            sa.tombstones
                .iter()
                .any(|(k, tid, _)| *k == TombstoneKind::RecoveryCode && tid[..] == id[..]),
            log,
            "revoked recovery code {h} has no tombstone"
        );
    }
    let want: BTreeSet<String> = codes
        .keys()
        .filter(|id| !revoked.contains(*id))
        .map(|id| vault::hex(id))
        .collect();
    ensure!(
        sa.codes == want,
        log,
        "recovery codes: got {:?}, expected {want:?}",
        sa.codes
    );

    // The written file opens (no two items with one name) to the same state.
    if let Some((_, code)) = codes.iter().find(|(id, _)| !revoked.contains(*id)) {
        let reopened = vault::unlock_with_recovery_code(vault::read(&a.path).unwrap(), code);
        ensure!(
            reopened.is_ok(),
            log,
            "A's written file does not open: {:?}",
            reopened.err()
        );
        ensure!(
            state(&reopened.unwrap()) == sa,
            log,
            "A's written file holds another state than A in memory"
        );
    }

    // Order does not matter: the template, merging the last copies of the
    // replicas in any order, ends equal to A.
    for order in [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ] {
        let mut c = Replica::new("T", &t.bytes, BTreeSet::new());
        let copy = c.path.with_file_name("copy");
        for &i in &order {
            std::fs::write(&copy, &last[i]).unwrap();
            sync(&mut c.v, &c.path, &copy);
        }
        let sc = state(&c.v);
        if sc != sa {
            let order: Vec<&str> = order.iter().map(|&i| REPLICAS[i]).collect();
            let why = format!(
                "the template merged with the last copies in the order {order:?} differs from \
                 A:\nit: {sc:?}\nA:  {sa:?}"
            );
            ensure!(TOLERATE_KNOWN_BUGS, log, "{why}");
            // Tolerated: it must still hold what the oracle accepts.
            ensure!(sc.codes == sa.codes, log, "{why}");
            if let Err(e) = check_names(&writes, &c.v) {
                ensure!(false, log, "{why}\n{e}");
            }
        }
    }

    // Every earlier copy is already in the converged vault.
    let old = a.path.with_file_name("old");
    for (label, bytes) in &snapshots {
        std::fs::write(&old, bytes).unwrap();
        let out = a.v.merge_from(&vault::read(&old).unwrap()).unwrap();
        ensure!(
            !out.changed,
            log,
            "merging the old copy {label} changed the converged vault (now {:?})",
            state(&a.v)
        );
    }
    Ok(())
}

/// Cases of the random histories: `PROPTEST_CASES`, or 256.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // No regression files next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_histories_converge_and_keep_the_last_write(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        run(&ops)?;
    }
}

// ---------------------------------------------------------------- fixed cases

/// A replica of the template in its own directory.
fn replica() -> Replica {
    Replica::new("R", &template().bytes, BTreeSet::new())
}

/// Writes `bytes` next to `near` and parses them.
fn parsed_copy(near: &Path, bytes: &[u8]) -> format::Parsed {
    let p = near.with_file_name("copy");
    std::fs::write(&p, bytes).unwrap();
    vault::read(&p).unwrap()
}

#[test]
fn a_revoked_code_stays_revoked_whatever_the_order() {
    let mut a = replica();
    let mut b = replica();
    let (code, id) = a.v.add_recovery_code(&a.path, BASE + 1).unwrap();
    sync(&mut b.v, &b.path, &a.path);
    assert!(b.v.file().recovery_wraps.iter().any(|w| w.code_id == id));
    let a_before = std::fs::read(&a.path).unwrap();

    // B uses the code (opens a copy of its vault with it, records the use)
    // while A revokes it.
    let b_copy = std::fs::read(&b.path).unwrap();
    vault::unlock_with_recovery_code(format::parse(&b_copy).unwrap(), &code).unwrap();
    b.v.touch_recovery_code(&b.path, &id, BASE + 5).unwrap();
    let b_used = std::fs::read(&b.path).unwrap();
    a.v.revoke_recovery_code(&a.path, &vault::hex(&id)).unwrap();
    let a_revoked = std::fs::read(&a.path).unwrap();
    let has = |v: &Unlocked| v.file().recovery_wraps.iter().any(|w| w.code_id == id);
    assert!(!has(&a.v));

    // A takes in B's copy where the code was used: still revoked.
    let out = a.v.merge_from(&parsed_copy(&a.path, &b_used)).unwrap();
    assert!(!has(&a.v), "B's use of the code brought it back");
    assert!(!out.changed, "B's copy had nothing newer than A: {out:?}");
    // B takes in A's revocation.
    let out = b.v.merge_from(&parsed_copy(&b.path, &a_revoked)).unwrap();
    assert!(out.changed);
    b.v.persist(&b.path).unwrap();
    assert!(!has(&b.v));
    // Old copies from before the revocation change nothing, on either side.
    for old in [&a_before, &b_copy, &b_used] {
        for r in [&mut a, &mut b] {
            let out = r.v.merge_from(&parsed_copy(&r.path, old)).unwrap();
            assert!(!has(&r.v), "an old copy brought the revoked code back");
            assert!(!out.changed, "an old copy changed the vault: {out:?}");
        }
    }
    // A third copy, from before the code existed, merging in every order.
    let orders: [[&Vec<u8>; 3]; 3] = [
        [&a_before, &b_used, &a_revoked],
        [&a_revoked, &a_before, &b_used],
        [&b_used, &a_revoked, &a_before],
    ];
    for order in orders {
        let mut c = replica();
        for copy in order {
            let out = c.v.merge_from(&parsed_copy(&c.path, copy)).unwrap();
            if out.changed {
                c.v.persist(&c.path).unwrap();
            }
        }
        assert!(!has(&c.v), "the revoked code is back in a third copy");
        assert_eq!(state(&c.v), state(&a.v));
    }
    // The revoked code no longer opens the merged vault.
    let merged = std::fs::read(&b.path).unwrap();
    assert!(vault::unlock_with_recovery_code(format::parse(&merged).unwrap(), &code).is_err());
}

#[test]
fn an_old_copy_does_not_bring_back_a_removed_item() {
    let mut a = replica();
    a.v.set(&a.path, "x", b"old secret", BASE + 3).unwrap();
    // The item edited later than the clock of its removal.
    a.v.set(&a.path, "x", b"newer secret", BASE + 9).unwrap();
    let old = std::fs::read(&a.path).unwrap();
    a.v.remove(&a.path, "x", BASE + 2).unwrap();
    a.v.remove(&a.path, "a", BASE + 2).unwrap();
    let before = state(&a.v);
    let out = a.v.merge_from(&parsed_copy(&a.path, &old)).unwrap();
    assert!(!out.changed, "{out:?}");
    assert!(a.v.get("x").is_none());
    assert!(a.v.get("a").is_none());
    assert_eq!(state(&a.v), before);
    // Also in another replica that still has the item, once it merged A.
    let mut b = replica();
    b.v.merge_from(&parsed_copy(&b.path, &old)).unwrap();
    b.v.persist(&b.path).unwrap();
    assert!(b.v.get("x").is_some());
    sync(&mut b.v, &b.path, &a.path);
    assert!(b.v.get("x").is_none());
    assert!(b.v.get("a").is_none());
    let out = b.v.merge_from(&parsed_copy(&b.path, &old)).unwrap();
    assert!(!out.changed, "{out:?}");
    assert_eq!(state(&b.v), before);
    // The template itself (older still).
    let out =
        b.v.merge_from(&parsed_copy(&b.path, &template().bytes))
            .unwrap();
    assert!(!out.changed, "{out:?}");
}

/// `bytes` with the trailing checksum recomputed.
fn fix_checksum(mut bytes: Vec<u8>) -> Vec<u8> {
    let n = bytes.len() - format::CHECKSUM_LEN;
    let sum = Sha256::digest(&bytes[..n]);
    bytes[n..].copy_from_slice(&sum);
    bytes
}

#[test]
fn a_forged_copy_is_refused() {
    // This test opens the vault with its password, as the agent does.
    let dir = tempdir();
    let path = dir.path().join("vault");
    let (mut v, sk) = vault::create(&path, &pw("correct horse"), FAST, BASE).unwrap();
    v.set(&path, "github", b"ghp_secret", BASE + 1).unwrap();
    v.set(&path, "aws", b"AKIA-secret", BASE + 2).unwrap();
    drop(v);
    let mut a = vault::unlock(vault::read(&path).unwrap(), &pw("correct horse"), &sk).unwrap();
    let good = std::fs::read(&path).unwrap();
    let before = state(&a);
    let file_before = a.file().clone();

    let mac_at = good.len() - format::CHECKSUM_LEN - format::MAC_LEN;
    let generation_at = format::ENVELOPE_HEADER + 6 + 8 + 7;
    let mut forged = Vec::new();
    for (what, at) in [
        ("the generation", generation_at),
        ("the created time", format::ENVELOPE_HEADER + 6 + 7),
        ("the last byte of the last record", mac_at - 1),
        ("the middle of the records", (generation_at + mac_at) / 2),
        ("the MAC", mac_at + 5),
    ] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x01;
        forged.push((what.to_string(), fix_checksum(bytes)));
    }
    // Another account's vault, with this account's id patched in: it
    // verifies under its own key, not under this account's.
    let other_dir = tempdir();
    let other_path = other_dir.path().join("vault");
    let (mut o, _) = vault::create(&other_path, &pw("correct horse"), FAST, BASE).unwrap();
    o.set(&other_path, "github", b"attacker", BASE + 19)
        .unwrap();
    o.set(&other_path, "evil", b"attacker", BASE + 19).unwrap();
    let other = std::fs::read(&other_path).unwrap();
    let err = a.merge_from(&format::parse(&other).unwrap()).unwrap_err();
    assert!(matches!(err, MergeError::OtherAccount(_)), "{err:?}");
    let mut patched = other.clone();
    let id_at = format::ENVELOPE_HEADER;
    patched[id_at..id_at + 6].copy_from_slice(&good[id_at..id_at + 6]);
    forged.push(("another account's vault".into(), fix_checksum(patched)));

    for (what, bytes) in forged {
        let parsed = match format::parse(&bytes) {
            Ok(p) => p,
            // Not a copy the merge could see (the format refuses it first).
            Err(e) => panic!("the copy with {what} changed does not parse: {e}"),
        };
        let err = a.merge_from(&parsed).unwrap_err();
        assert_eq!(err, MergeError::NotVerified, "copy with {what} changed");
        assert_eq!(state(&a), before, "copy with {what} changed");
        assert_eq!(a.file(), &file_before, "copy with {what} changed");
    }
    // The genuine copy still merges (and changes nothing).
    let out = a.merge_from(&format::parse(&good).unwrap()).unwrap();
    assert!(!out.changed);
}

// ---------------------------------------------------------------- known bugs
//
// Each of these fails with the merge as it is; the random test finds them
// too (unless `TOLERATE_KNOWN_BUGS`).

/// The template, with `copies` merged into it in that order.
fn merged(copies: &[&[u8]]) -> Replica {
    let mut r = replica();
    for copy in copies {
        let out = r.v.merge_from(&parsed_copy(&r.path, copy)).unwrap();
        if out.changed {
            r.v.persist(&r.path).unwrap();
        }
    }
    r
}

/// The value of `name`, for messages.
fn value_of(v: &Unlocked, name: &str) -> Option<String> {
    v.get(name)
        .map(|s| String::from_utf8_lossy(s.expose()).into_owned())
}

/// Three replicas each create "e" (at +0, +1, +5). Merging the copies into
/// one vault in two orders gives two vaults: the item of +0 loses to that
/// of +1 first (tombstone at +1) or to that of +5 (tombstone at +5).
#[test]
fn three_copies_merge_to_the_same_tombstones_in_any_order() {
    let copies: Vec<Vec<u8>> = [0, 1, 5]
        .iter()
        .map(|&at| {
            let mut r = replica();
            r.v.set(&r.path, "e", format!("e at +{at}").as_bytes(), BASE + at)
                .unwrap();
            std::fs::read(&r.path).unwrap()
        })
        .collect();
    let one = merged(&[&copies[0], &copies[1], &copies[2]]);
    let two = merged(&[&copies[0], &copies[2], &copies[1]]);
    assert_eq!(value_of(&one.v, "e").as_deref(), Some("e at +5"));
    assert_eq!(
        state(&one.v),
        state(&two.v),
        "the same copies merged in two orders"
    );
}

/// Two items named "c" (set at +15 on R1 and R2) are both edited to +16,
/// the one with the larger id (L) on a third replica R3. R(L) takes in the
/// other (W): L at +15 loses, tombstone at +16. R3 takes in W: W ties with
/// L at +16 and loses on the id, tombstone at +16. R3 takes in R(L): L's
/// tombstone at +16 removes L at +16. R3 has no "c" at all, though nobody
/// removed it; the others follow once they take in R3.
#[test]
fn two_items_of_one_name_are_not_both_lost() {
    let mut r1 = replica();
    let mut r2 = replica();
    let mut r3 = replica();
    r1.v.set(&r1.path, "c", b"from R1", BASE + 15).unwrap();
    r2.v.set(&r2.path, "c", b"from R2", BASE + 15).unwrap();
    let new_id = |r: &Replica| {
        records(&r.v)
            .into_keys()
            .find(|id| !template().item_ids.contains(id))
            .unwrap()
    };
    let (w, l) = if new_id(&r1) < new_id(&r2) {
        (&mut r1, &mut r2)
    } else {
        (&mut r2, &mut r1)
    };
    w.v.set(&w.path, "c", b"W edited", BASE).unwrap();
    sync(&mut r3.v, &r3.path, &l.path);
    r3.v.set(&r3.path, "c", b"L edited", BASE).unwrap();
    assert_eq!(
        r3.v.list().iter().find(|m| m.name == "c").unwrap().modified,
        BASE + 16
    );
    sync(&mut l.v, &l.path, &w.path);
    assert_eq!(value_of(&l.v, "c").as_deref(), Some("W edited"));
    sync(&mut r3.v, &r3.path, &w.path);
    sync(&mut r3.v, &r3.path, &l.path);
    let got = value_of(&r3.v, "c");
    assert!(
        got.is_some(),
        "\"c\" was set on two items (both last at +16) and never removed, but R3 has none: {:?}",
        state(&r3.v)
    );
}

/// A removal at +6 is the last write of "c", but an item "c" that the
/// remover never saw (another id, set at +3 on B) survives it, on both
/// replicas, for good: the removed name is back with an older value. (Had A
/// set "c" at +6 instead of removing it, B's item would have lost.)
#[test]
fn a_removal_removes_an_unseen_item_of_the_same_name() {
    let mut a = replica();
    let mut b = replica();
    a.v.set(&a.path, "c", b"from A", BASE + 5).unwrap();
    b.v.set(&b.path, "c", b"from B", BASE + 3).unwrap();
    a.v.remove(&a.path, "c", BASE + 6).unwrap();
    sync(&mut a.v, &a.path, &b.path);
    sync(&mut b.v, &b.path, &a.path);
    assert_eq!(state(&a.v), state(&b.v));
    assert_eq!(
        value_of(&a.v, "c"),
        None,
        "A removed \"c\" at +6, after every other write of it"
    );
}

/// C sets "c" at +7, A takes it in and removes it (tombstone at +7), B sets
/// "c" at +0 (another item). Merged in the order A, B, C the item of B
/// stays (nothing live had its name when it came); in the order B, C, A it
/// loses to C's item, then C's item is removed: "c" is gone.
#[test]
fn three_copies_merge_to_the_same_items_in_any_order() {
    let mut a = replica();
    let mut b = replica();
    let mut c = replica();
    c.v.set(&c.path, "c", b"from C", BASE + 7).unwrap();
    b.v.set(&b.path, "c", b"from B", BASE).unwrap();
    sync(&mut a.v, &a.path, &c.path);
    a.v.remove(&a.path, "c", BASE).unwrap();
    let [ca, cb, cc] = [&a, &b, &c].map(|r| std::fs::read(&r.path).unwrap());
    let one = merged(&[&ca, &cb, &cc]);
    let two = merged(&[&cb, &cc, &ca]);
    assert_eq!(
        (value_of(&one.v, "c"), state(&one.v)),
        (value_of(&two.v, "c"), state(&two.v)),
        "the same copies merged in two orders"
    );
}
