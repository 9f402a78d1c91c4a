//! keyward's agent: all cryptography and all state.
//!
//! The crate is a library with a thin binary (`keyward-agent`). Its parts:
//!
//! - [`account`]: the construction of CRYPTO.md — Secret Key, Master Password
//!   and Argon2id, two-secret key derivation, wraps, recovery codes, the
//!   YubiKey wrap, items.
//! - [`vault`]: the vault file (format, atomic store) and the operations on an
//!   unlocked vault.
//! - [`harden`]: process hardening and locked memory (the only `unsafe`).
//! - [`secret`]: zeroizing newtypes for secrets, with no `Debug` output.
//! - [`kdf`]: HKDF and HMAC helpers.
//! - [`server`]: the socket, connections, requests and the agent's state.
//! - [`protect`]: where this device keeps the Secret Key.
//! - [`attempts`]: the persisted back-off after failed unlocks.
//! - [`config`], [`clock`]: settings and time, as parameters.
//!
//! `docs/SECURITY.md` is the normative description of formats and derivations.

pub mod account;
pub mod attempts;
pub mod clock;
pub mod config;
pub mod harden;
pub mod kdf;
pub mod protect;
pub mod secret;
pub mod server;
pub mod ssh;
pub mod vault;
