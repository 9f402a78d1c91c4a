#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Syncthing pair harness itself (`keyward_e2e::syncthing`): a file
//! written on one device reaches the other, both ways; after edits on both
//! sides while apart the two settle on the same contents; nothing listens
//! beyond 127.0.0.1; and no process outlives the pair.

use keyward_e2e::syncthing::{self, Pair, Side, folder_contents, is_conflict_copy};
use std::path::Path;
use std::time::{Duration, Instant};

const SYNC: Duration = Duration::from_secs(60);

fn assert_loopback_only(pair: &Pair, when: &str) {
    let sockets = pair.sockets();
    assert!(
        sockets.iter().any(|s| s.contains("LISTEN")),
        "{when}: no listening socket found for pids {:?}; the check sees nothing",
        pair.pids()
    );
    let bad = pair.non_loopback_sockets();
    assert!(
        bad.is_empty(),
        "{when}: Syncthing has sockets beyond loopback:\n{}\nall sockets:\n{}",
        bad.join("\n"),
        sockets.join("\n")
    );
}

fn gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn pair_syncs_both_ways_and_settles_after_apart_edits() {
    if !keyward_e2e::require("syncthing", syncthing::available()) {
        return;
    }
    let t0 = Instant::now();
    let root = tempfile::Builder::new()
        .prefix("keyward-syncthing-")
        .tempdir()
        .unwrap();
    let a = root.path().join("folder-a");
    let b = root.path().join("folder-b");
    let mut pair = Pair::start(root.path(), &a, &b);
    eprintln!("started in {:?}", t0.elapsed());
    let mut all_pids = pair.pids();
    assert_eq!(all_pids.len(), 2, "one process per device: {all_pids:?}");
    assert_loopback_only(&pair, "after start");

    // A → B: once wait_synced returns, B has it (no polling here).
    std::fs::write(a.join("note.txt"), "written on A\n").unwrap();
    pair.wait_synced(SYNC);
    assert_eq!(
        std::fs::read_to_string(b.join("note.txt")).unwrap(),
        "written on A\n"
    );
    eprintln!("A -> B at {:?}", t0.elapsed());

    // B → A: a new file and an edit of A's.
    std::fs::write(b.join("other.txt"), "written on B\n").unwrap();
    std::fs::write(b.join("note.txt"), "written on A, then edited on B\n").unwrap();
    pair.wait_synced(SYNC);
    assert_eq!(
        std::fs::read_to_string(a.join("other.txt")).unwrap(),
        "written on B\n"
    );
    assert_eq!(
        std::fs::read_to_string(a.join("note.txt")).unwrap(),
        "written on A, then edited on B\n"
    );
    assert_eq!(folder_contents(&a), folder_contents(&b));
    eprintln!("B -> A at {:?}", t0.elapsed());

    // Apart: the same file changed differently on each side.
    let old_b = pair.pid(Side::B).unwrap();
    pair.stop_device(Side::B);
    assert!(gone(old_b), "B (pid {old_b}) still runs after stop_device");
    assert_eq!(pair.pid(Side::B), None);
    let on_a = "changed on A while apart\n";
    let on_b = "changed on B while apart (longer)\n";
    std::fs::write(a.join("note.txt"), on_a).unwrap();
    std::fs::write(b.join("note.txt"), on_b).unwrap();
    pair.start_device(Side::B);
    all_pids.extend(pair.pids());
    pair.wait_synced(SYNC);
    assert_loopback_only(&pair, "after B restarted");
    let ca = folder_contents(&a);
    let cb = folder_contents(&b);
    assert_eq!(
        ca,
        cb,
        "the two folders differ after wait_synced\n{}",
        pair.logs_tail()
    );
    let kept = String::from_utf8_lossy(&ca["note.txt"]).into_owned();
    assert!(
        kept == on_a || kept == on_b,
        "note.txt is neither side's version: {kept:?}"
    );
    let conflicts: Vec<(&String, String)> = ca
        .iter()
        .filter(|(name, _)| is_conflict_copy(name))
        .map(|(name, body)| (name, String::from_utf8_lossy(body).into_owned()))
        .collect();
    for (name, body) in &conflicts {
        assert!(
            (body == on_a || body == on_b) && *body != kept,
            "conflict copy {name} holds {body:?}; kept {kept:?}"
        );
    }
    let winner = if kept == on_a { "A" } else { "B" };
    if conflicts.is_empty() {
        eprintln!(
            "apart edits: {winner}'s version kept, NO conflict copy (the other edit is lost)"
        );
    } else {
        eprintln!(
            "apart edits: {winner}'s version kept, conflict copies: {:?}",
            conflicts.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
    }
    eprintln!("apart and together again at {:?}", t0.elapsed());

    drop(pair);
    for pid in &all_pids {
        assert!(gone(*pid), "syncthing pid {pid} survived the pair");
    }
    eprintln!("whole test: {:?}", t0.elapsed());
}
