#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Two `rekey`s made on two copies of one vault while apart, reconciled
//! (`Unlocked::reconcile`, SECURITY.md §18.6): whichever copy the unlock
//! opened first, both end under the same account key (the later password
//! wrap's) with every write of both, and each then merges the other's
//! writes as an ordinary copy.

use keyward_agent::account::organizer::OrganizerSecret;
use keyward_agent::account::password::{KdfParams, Password};
use keyward_agent::account::secret_key::SecretKey;
use keyward_agent::vault::{self, MergeError, Unlocked};
use std::path::Path;

const FAST: KdfParams = KdfParams {
    m_kib: 19 * 1024,
    t: 2,
    p: 1,
};
const BASE: u64 = 1_700_000_000;

fn pw() -> Password {
    Password::new("two rekeys apart").unwrap()
}

fn open(path: &Path, sk: &SecretKey) -> Unlocked {
    vault::unlock(vault::read(path).unwrap(), &pw(), sk).unwrap()
}

fn value(v: &Unlocked, name: &str) -> Option<Vec<u8>> {
    v.get(name).map(|s| s.expose().to_vec())
}

#[test]
fn two_rekeys_made_apart_reconcile_to_one_key_in_either_order() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a"), dir.path().join("b"));
    let (mut v, sk) = vault::create(&pa, &pw(), FAST, BASE).unwrap();
    v.set(&pa, "shared", b"0", BASE).unwrap();
    std::fs::copy(&pa, &pb).unwrap();
    let mut a = open(&pa, &sk);
    let mut b = open(&pb, &sk);
    a.rekey(&pa, &pw(), FAST, BASE + 10).unwrap();
    a.set(&pa, "a", b"1", BASE + 11).unwrap();
    // After its rekey, A adds a recovery code and an organizer.
    a.add_recovery_code(&pa, BASE + 11).unwrap();
    let org_secret = OrganizerSecret::generate().unwrap();
    let org = org_secret.recipient().unwrap();
    a.add_organizer(&pa, &org, "family", false, BASE + 11)
        .unwrap();
    // A later second: B's rekey ranks later (its slot id carries the
    // system clock's time), so A's key is the one not kept.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    b.rekey(&pb, &pw(), FAST, BASE + 12).unwrap();
    b.set(&pb, "b", b"2", BASE + 13).unwrap();
    drop((a, b));
    // Before: neither copy can take the other in.
    let mut a = open(&pa, &sk);
    assert_eq!(
        a.merge_from(&vault::read(&pb).unwrap()).unwrap_err(),
        MergeError::NotVerified
    );

    let a_key = open(&pa, &sk).proven_key_ids()[0];
    let mut got = Vec::new();
    let mut kept = Vec::new();
    for (first, second) in [(&pa, &pb), (&pb, &pa)] {
        let (mut v, r) = open(first, &sk).reconcile(open(second, &sk), BASE + 20);
        // B's key stays (the later wrap); A's code wraps A's key, which the
        // vault no longer uses: lost, and counted for the user.
        assert_ne!(v.proven_key_ids()[0], a_key, "A's key was kept");
        let lost = r.unwrap().unwrap();
        assert_eq!(lost.len(), 1);
        assert!(v.file().recovery_wraps.is_empty());
        // Revoked (a tombstone), as a rekey revokes.
        assert!(v.file().tombstones.iter().any(|t| t.id[..] == lost[0][..]));
        kept.push(v.proven_key_ids()[0]);
        // A's organizer is wrapped again for the key kept.
        let w = v
            .organizer_wrap(&org)
            .expect("A's organizer was lost")
            .clone();
        let key = org_secret
            .open_wrap(&w.epk, &v.account_id(), &w.sealed)
            .unwrap();
        assert_eq!(vault::key_id(key.expose()), v.proven_key_ids()[0]);
        assert!(v.file().generation >= vault::read(&pa).unwrap().vault.generation);
        for (name, want) in [("shared", b"0"), ("a", b"1"), ("b", b"2")] {
            assert_eq!(value(&v, name).as_deref(), Some(&want[..]), "{name}");
        }
        let out = dir
            .path()
            .join(format!("{}-first", first.file_name().unwrap().display()));
        v.persist_above(&out, 0).unwrap();
        got.push(out);
    }
    assert_eq!(kept[0], kept[1], "the two orders kept different keys");
    // The same account key either way: each written result merges into
    // the other as an ordinary copy (no previous key allowed), and into a
    // vault opened from either result.
    let (x, y) = (&got[0], &got[1]);
    let mut vx = open(x, &sk);
    vx.merge_from(&vault::read(y).unwrap()).unwrap();
    let mut vy = open(y, &sk);
    vy.merge_from(&vault::read(x).unwrap()).unwrap();
    // Both original copies are taken in as this device's own file (one
    // under a previous key: sealed again, with fresh nonces), bringing
    // nothing new.
    // A's file is under A's key, a previous key of the result: taken in as
    // this device's own file only if that key was the one in force here
    // (a holder of an earlier retired key could write the file).
    let b_key = open(&pb, &sk).proven_key_ids()[0];
    assert_eq!(
        vx.merge_own_from(&vault::read(&pa).unwrap(), Some(b_key))
            .unwrap_err(),
        MergeError::NotVerified
    );
    vx.merge_own_from(&vault::read(&pa).unwrap(), Some(a_key))
        .unwrap();
    let items = vx.file().items.len();
    for p in [&pa, &pb] {
        vx.merge_own_from(&vault::read(p).unwrap(), None).unwrap();
        assert_eq!(vx.file().items.len(), items, "{}", p.display());
        for (name, want) in [("shared", b"0"), ("a", b"1"), ("b", b"2")] {
            assert_eq!(value(&vx, name).as_deref(), Some(&want[..]), "{name}");
        }
    }

    // A vault of another account is not reconciled, and nothing changes.
    let other_path = dir.path().join("other");
    let (other, _) = vault::create(&other_path, &pw(), FAST, BASE).unwrap();
    let before = vx.file().clone();
    let (back, r) = vx.reconcile(other, BASE + 30);
    assert!(matches!(r, Err(MergeError::OtherAccount(_))), "{r:?}");
    assert_eq!(back.file(), &before);
}
