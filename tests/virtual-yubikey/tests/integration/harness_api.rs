//! The harness's own rules: finding the card binary the way other crates'
//! tests do, and skip-or-fail for missing services.

use std::process::Command;

use virtual_yubikey::harness::{self, CHILD_VAR, REQUIRE_SERVICES_VAR};

/// Other crates' tests have no `CARGO_BIN_EXE_virtual-yubikey`; the harness
/// builds the binary with `$CARGO` (set by `cargo test`) — which must not
/// deadlock on cargo's build lock — or finds it next to the test binary.
#[test]
fn card_binary_is_found_without_cargo_bin_exe() {
    let bin = harness::card_binary().unwrap();
    assert!(bin.is_file(), "{}", bin.display());
    assert_eq!(bin.file_name().unwrap(), "virtual-yubikey");
    let out = Command::new(&bin).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("pcsc-wait"));
}

#[test]
fn missing_services_skip_unless_required() {
    let exe = std::env::current_exe().unwrap();
    let name = crate::test_name(module_path!(), "child_missing_service");
    let run = |required: Option<&str>| {
        let mut cmd = Command::new(&exe);
        cmd.args([&name, "--exact", "--ignored", "--nocapture"])
            .env(CHILD_VAR, "1");
        match required {
            Some(v) => cmd.env(REQUIRE_SERVICES_VAR, v),
            None => cmd.env_remove(REQUIRE_SERVICES_VAR),
        };
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run(None);
    assert!(
        ok && text.contains("SKIPPED") && text.contains("no-such-tool-xyz"),
        "{text}"
    );
    let (ok, text) = run(Some("0"));
    assert!(ok && text.contains("SKIPPED"), "{text}");
    let (ok, text) = run(Some("1"));
    assert!(!ok && text.contains("a failure, not a skip"), "{text}");
}

#[test]
#[ignore = "child of missing_services_skip_unless_required"]
fn child_missing_service() {
    if std::env::var_os(CHILD_VAR).is_none() {
        return;
    }
    // Not a Debian package either, so nothing gets installed.
    assert!(!harness::require_or_skip("no-such-tool-xyz"));
}
