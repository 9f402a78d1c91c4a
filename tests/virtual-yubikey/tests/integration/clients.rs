//! Independent clients against the card: Yubico's yubico-piv-tool and
//! OpenSC's pkcs15-tool. They are separate processes, given the
//! environment's `PCSCLITE_CSOCK_NAME`.

use std::path::Path;
use std::process::Command;

use virtual_yubikey::harness::{CardConfig, CardHandle, PcscEnv, require_or_skip};

/// Runs `cmd` and returns its stdout and stderr (the tools report on both);
/// on failure, panics with everything needed to see why.
fn run(mut cmd: Command, card: &CardHandle) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- card log\n{}",
        out.status,
        card.log()
    );
    format!("{stdout}{stderr}")
}

fn piv_tool(env: &PcscEnv, card: &CardHandle, args: &[&str]) -> String {
    let mut cmd = env.command("yubico-piv-tool");
    cmd.args(["-r", &card.reader_name()]).args(args);
    run(cmd, card)
}

/// Generates a P-256 key in `slot` with yubico-piv-tool and makes a
/// certificate for it with openssl (yubico-piv-tool's own `selfsign` is
/// broken with OpenSSL 3): a throwaway CA signs the card's public key.
fn generate_with_certificate(env: &PcscEnv, card: &CardHandle, slot: &str) -> std::path::PathBuf {
    let dir = env.dir();
    let public = dir.join(format!("{slot}-public.pem"));
    let ca_key = dir.join("ca-key.pem");
    let cert = dir.join(format!("{slot}-cert.pem"));
    let p = |p: &Path| p.display().to_string();
    piv_tool(
        env,
        card,
        &[
            "-a",
            "generate",
            "-s",
            slot,
            "-A",
            "ECCP256",
            "-o",
            &p(&public),
        ],
    );
    let mut cmd = Command::new("openssl");
    cmd.args([
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &p(&ca_key),
    ]);
    run(cmd, card);
    let mut cmd = Command::new("openssl");
    cmd.args([
        "x509",
        "-new",
        "-subj",
        "/CN=virtual-yubikey slot",
        "-days",
        "2",
    ])
    .args([
        "-key",
        &p(&ca_key),
        "-force_pubkey",
        &p(&public),
        "-out",
        &p(&cert),
    ]);
    run(cmd, card);
    cert
}

#[test]
fn yubico_piv_tool() {
    if !require_or_skip("yubico-piv-tool") || !require_or_skip("openssl") {
        return;
    }
    let Some(env) = crate::start() else { return };
    let card = env.insert_card(CardConfig::new(7_654_321)).unwrap();

    let status = piv_tool(&env, &card, &["-a", "status"]);
    assert!(status.contains("Version:\t5.4.3"), "{status}");
    assert!(status.contains("Serial Number:\t7654321"), "{status}");
    assert!(status.contains("PIN tries left:\t3"), "{status}");

    let cert = generate_with_certificate(&env, &card, "9d");
    let cert = cert.display().to_string();
    let decipher = piv_tool(
        &env,
        &card,
        &[
            "-a",
            "verify-pin",
            "-P",
            "123456",
            "-a",
            "test-decipher",
            "-s",
            "9d",
            "-i",
            &cert,
        ],
    );
    assert!(
        decipher.contains("Successfully performed ECDH exchange with card"),
        "{decipher}"
    );
    let signature = piv_tool(
        &env,
        &card,
        &[
            "-a",
            "verify-pin",
            "-P",
            "123456",
            "-a",
            "test-signature",
            "-s",
            "9d",
            "-i",
            &cert,
        ],
    );
    assert!(
        signature.contains("Successful ECDSA verification"),
        "{signature}"
    );

    piv_tool(
        &env,
        &card,
        &["-a", "import-certificate", "-s", "9d", "-i", &cert],
    );
    let status = piv_tool(&env, &card, &["-a", "status"]);
    assert!(status.contains("Slot 9d:"), "{status}");
    assert!(
        status.contains("Subject DN:\tCN=virtual-yubikey slot"),
        "{status}"
    );

    // Wrong PIN: the tool reports the tries left.
    let mut cmd = env.command("yubico-piv-tool");
    cmd.args([
        "-r",
        &card.reader_name(),
        "-a",
        "verify-pin",
        "-P",
        "000000",
    ]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let status = piv_tool(&env, &card, &["-a", "status"]);
    assert!(status.contains("PIN tries left:\t2"), "{status}");
}

#[test]
fn yubico_piv_tool_picks_the_card_by_reader() {
    if !require_or_skip("yubico-piv-tool") {
        return;
    }
    let Some(env) = crate::start() else { return };
    let a = env.insert_card(CardConfig::new(111)).unwrap();
    let b = env.insert_card(CardConfig::new(222).reader(1)).unwrap();
    assert!(piv_tool(&env, &a, &["-a", "status"]).contains("Serial Number:\t111\n"));
    assert!(piv_tool(&env, &b, &["-a", "status"]).contains("Serial Number:\t222\n"));
}

#[test]
fn opensc_pkcs15_tool() {
    if !require_or_skip("yubico-piv-tool")
        || !require_or_skip("openssl")
        || !require_or_skip("pkcs15-tool")
    {
        return;
    }
    let Some(env) = crate::start() else { return };
    let card = env.insert_card(CardConfig::new(8_888_888)).unwrap();
    let cert = generate_with_certificate(&env, &card, "9a");
    piv_tool(
        &env,
        &card,
        &[
            "-a",
            "import-certificate",
            "-s",
            "9a",
            "-i",
            &cert.display().to_string(),
        ],
    );

    let mut cmd = env.command("pkcs15-tool");
    cmd.args(["--reader", &card.reader_name(), "-D"]);
    let dump = run(cmd, &card);
    for expected in [
        "PIN [PIN]",
        "PIN [PIV PUK]",
        "Private EC Key [PIV AUTH key]",
        "Key ref        : 154 (0x9A)",
        "X.509 Certificate [Certificate for PIV Authentication]",
        "Data object 'Discovery Object'",
    ] {
        assert!(dump.contains(expected), "no {expected:?} in:\n{dump}");
    }
}
