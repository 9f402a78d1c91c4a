#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The independent implementation (Python, written from docs/SECURITY.md
//! alone) must agree with every vector this code produced.

use std::process::Command;

#[test]
fn the_independent_implementation_agrees_with_every_vector() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/independent/keyward_independent.py"
    );
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let has_deps = Command::new("/usr/bin/python3")
        .args(["-c", "import cryptography, argon2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_deps {
        assert!(
            std::env::var("KEYWARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "python3-cryptography and python3-argon2 are required (tests/ci.sh installs them)"
        );
        eprintln!(
            "SKIPPED: /usr/bin/python3 with python3-cryptography and python3-argon2 is not available"
        );
        return;
    }
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASS  overall"), "{stdout}");
}
