//! A software YubiKey PIV card behind the real PC/SC stack, for tests.
//!
//! keyward's YubiKey protector must be tested through the path it uses in
//! production — the `yubikey` crate, the `pcsc` crate, pcscd, a reader — on
//! machines without a YubiKey. vsmartcard's `vpcd` is a pcscd reader driver
//! whose "card" is a program on a TCP socket; this crate is that program: a
//! YubiKey 5 PIV applet in Rust, plus a harness that runs pcscd, vpcd and
//! cards in a private network namespace for the test suite.
//!
//! ```text
//!  test / agent ──► yubikey crate ──► pcsc crate ──► libpcsclite ──► pcscd
//!        (PCSCLITE_CSOCK_NAME = private socket)                        │ vpcd driver
//!                                                    TCP 127.0.0.1:35963 (in a netns)
//!                                                                      ▼
//!  virtual-yubikey binary:  vpcd::serve ─► card::Card ─► piv::Piv ─► state::CardState
//!                                                    (hardware::Hardware: clock, RNG, touch)
//! ```
//!
//! # Modules, from the wire inwards
//!
//! - [`vpcd`]: vpcd's socket protocol (length-prefixed frames, control codes
//!   for power, reset and ATR) and the connection loop.
//! - [`apdu`]: parsing command APDUs (short and extended), response APDUs,
//!   the status words the card uses.
//! - [`card`]: the card as a reader sees it — ATR, reset, SELECT of the PIV,
//!   OTP and management applets, command chaining (CLA `10`) and response
//!   chaining (`61xx` + GET RESPONSE).
//! - [`piv`]: the PIV applet proper, one submodule per concern (PIN and PUK,
//!   management key, asymmetric keys, data objects). Pure: bytes in, bytes
//!   out, with the persistent [`state::CardState`], a volatile
//!   [`piv::Session`], and a [`hardware::Hardware`] for time, randomness and
//!   touch, so every rule is unit-tested without sockets or sleeps.
//! - [`tlv`]: BER-TLV encoding and decoding.
//! - [`crypto`]: P-256 (generate, ECDSA, ECDH) and the 3DES/AES block
//!   operations of management-key authentication, over RustCrypto.
//! - [`state`]: what a real card keeps across power cycles (serial, version,
//!   PIN/PUK and counters, management key, keys, objects), optionally saved to
//!   a JSON file after every change so a test can re-insert the same card.
//! - [`hardware`]: the clock/RNG/touch trait and the real implementation (a
//!   touch is SIGUSR1 or a touch file; timeout answered with `6982` as on a
//!   real YubiKey).
//! - [`cli`] and [`run`]: the `virtual-yubikey` binary's flags, its main loop,
//!   and `pcsc-wait` (a PC/SC client that waits for a reader state).
//! - [`harness`]: the Rust API tests use — [`harness::PcscEnv`] (pcscd in a
//!   fresh network and mount namespace with its own socket),
//!   [`harness::CardHandle`] (a running card), and the skip-or-fail rule for
//!   missing services ([`harness::require_or_skip`]).
//!
//! # What the card implements
//!
//! SELECT; GET VERSION; GET SERIAL (and the OTP applet's serial command for
//! firmware 4); VERIFY, CHANGE REFERENCE and RESET RETRY with persistent
//! retry counters; SET PIN RETRIES; RESET; management-key AUTHENTICATE
//! (mutual and single, 3DES and AES-128/192/256; the default key is 3DES
//! before firmware 5.7 and AES-192 from 5.7) and SET MANAGEMENT KEY (with the
//! touch flag); GENERATE and IMPORT of P-256 keys with PIN policy (never,
//! once, always) and touch policy (never, always, cached for 15 s); ECDSA
//! signing and ECDH through AUTHENTICATE; GET DATA and PUT DATA of objects
//! (discovery object built in, printed-information object behind the PIN);
//! GET METADATA; command chaining and GET RESPONSE.
//!
//! Not implemented (answered as a real card answers an unknown or
//! unsupported request): RSA and P-384 keys, attestation, key move/delete,
//! biometric policies, secure messaging. See README.md.

pub mod apdu;
pub mod card;
pub mod cli;
pub mod crypto;
pub mod hardware;
pub mod harness;
pub mod piv;
pub mod run;
pub mod state;
pub mod tlv;
pub mod vpcd;
