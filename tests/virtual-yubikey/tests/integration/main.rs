// Test code: helpers outside #[test] functions may unwrap and panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! End-to-end tests of the virtual YubiKey through the real PC/SC stack:
//! pcscd + vpcd in a private network namespace, the card binary, and real
//! clients — the `yubikey` crate, the `pcsc` crate, yubico-piv-tool, OpenSC.
//!
//! One test binary (one link) with a module per concern. Each test starts its
//! own [`PcscEnv`], so tests run in parallel. Tests that call the `yubikey` or
//! `pcsc` crate do so in a child process (see `PcscEnv::run_child_test`): the
//! parent test sets up cards, the `#[ignore]`d child test named `child_*`
//! talks to them.

mod clients;
mod harness_api;
mod lifecycle;
mod raw;
mod yubikey_crate;

use std::time::Duration;

use virtual_yubikey::harness::{EnvOptions, PcscEnv};

/// A DER certificate (P-256, self-signed, valid to 2126) for write/read tests.
pub const TEST_CERT: &[u8] = include_bytes!("data/test-cert.der");

/// Starts an environment with the binary cargo built for these tests, or
/// skips (or fails under KEYWARD_REQUIRE_SERVICES=1).
pub fn start() -> Option<PcscEnv> {
    PcscEnv::start_with_or_skip(EnvOptions {
        card_binary: Some(env!("CARGO_BIN_EXE_virtual-yubikey").into()),
        timeout: Duration::from_secs(20),
    })
}

/// The libtest name of `name` in module `module_path` (which starts with the
/// crate name, which libtest leaves out).
pub fn test_name(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_, module)) => format!("{module}::{name}"),
        None => name.to_owned(),
    }
}

/// Runs the child test `name` of the calling module against `env`.
macro_rules! run_child {
    ($env:expr, $name:ident, $vars:expr) => {
        $env.run_child_test(&$crate::test_name(module_path!(), stringify!($name)), $vars)
            .unwrap_or_else(|e| panic!("{e}"))
    };
}
pub(crate) use run_child;

/// Raw APDU helpers for child tests that use the `pcsc` crate directly.
pub mod apdu {
    /// Connects to `reader` (shared, T=1), as the yubikey crate does.
    pub fn connect(reader: &str) -> (pcsc::Context, pcsc::Card) {
        let ctx = pcsc::Context::establish(pcsc::Scope::System).unwrap();
        let name = std::ffi::CString::new(reader).unwrap();
        let card = ctx
            .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::T1)
            .unwrap();
        (ctx, card)
    }

    /// Sends a hex APDU; returns the data and the status word.
    pub fn tx(card: &pcsc::Card, apdu: &str) -> (Vec<u8>, u16) {
        tx_bytes(card, &hex::decode(apdu.replace(' ', "")).unwrap())
    }

    /// Sends an APDU; returns the data and the status word.
    pub fn tx_bytes(card: &pcsc::Card, apdu: &[u8]) -> (Vec<u8>, u16) {
        let mut buf = [0u8; 4096];
        let resp = card.transmit(apdu, &mut buf).unwrap();
        let (data, sw) = resp.split_at(resp.len() - 2);
        (data.to_vec(), u16::from_be_bytes([sw[0], sw[1]]))
    }

    /// SELECT of the PIV applet.
    pub const SELECT_PIV: &str = "00 A4 04 00 05 A0 00 00 03 08";

    /// VERIFY with the default PIN.
    pub const VERIFY_DEFAULT_PIN: &str = "00 20 00 80 08 31 32 33 34 35 36 FF FF";
}
