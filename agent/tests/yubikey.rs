#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The YubiKey protector end to end, through the real PC/SC stack: the
//! `yubikey` crate → pcscd → vpcd → the virtual YubiKey of
//! `tests/virtual-yubikey`, each test with its own pcscd in a private
//! network namespace.
//!
//! libpcsclite reads `PCSCLITE_CSOCK_NAME` once per process and the test
//! process cannot set it, so the parent test (`#[test]`) starts pcscd and the
//! cards, and an `#[ignore]`d child test (`child_*`), run in a new process by
//! `PcscEnv::run_child_test`, talks to the cards. Parents move cards in and
//! out and touch them between or during child runs; children share files
//! through the environment's directory (`KW_DIR`).
//!
//! Without root or the packages, the parents print `SKIPPED` and pass; with
//! `KEYWARD_REQUIRE_SERVICES=1` they fail instead.

use keyward_agent::account::AccountId;
use keyward_agent::account::password::{KdfParams, Password};
use keyward_agent::account::piv;
use keyward_agent::account::secret_key::SecretKey;
use keyward_agent::protect::yubikey::{
    self as yk, EnrollOptions, Enrolled, PIN_POLICY_ONCE, Touch, YubiKeyProtector,
};
use keyward_agent::protect::{Protector, ProtectorError, UnlockIo};
use keyward_agent::vault;
use keyward_client::{PromptKind, Secret};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use virtual_yubikey::harness::{CardConfig, PcscEnv, child_var};
use virtual_yubikey::state::Version;

/// The weakest parameters a new account accepts: keeps tests fast.
const FAST: KdfParams = KdfParams {
    m_kib: 19 * 1024,
    t: 2,
    p: 1,
};
const NOW: u64 = 1_700_000_000;
const DIR_VAR: &str = "KW_DIR";

// ------------------------------------------------------------------ helpers

/// An [`UnlockIo`] that answers prompts from a script (kind and answer; `None`
/// = the user cancelled) and records prompts and notices. An unexpected
/// prompt fails the test.
struct ScriptIo {
    script: Mutex<VecDeque<(PromptKind, Option<&'static str>)>>,
    prompts: Mutex<Vec<(PromptKind, String)>>,
    notices: Mutex<Vec<String>>,
}

impl ScriptIo {
    fn new(script: &[(PromptKind, Option<&'static str>)]) -> Self {
        ScriptIo {
            script: Mutex::new(script.iter().copied().collect()),
            prompts: Mutex::new(Vec::new()),
            notices: Mutex::new(Vec::new()),
        }
    }

    fn none() -> Self {
        Self::new(&[])
    }

    fn pin(pin: &'static str) -> Self {
        Self::new(&[(PromptKind::Pin, Some(pin))])
    }

    fn prompts(&self) -> Vec<(PromptKind, String)> {
        self.prompts.lock().unwrap().clone()
    }

    fn notices(&self) -> Vec<String> {
        self.notices.lock().unwrap().clone()
    }

    fn assert_used_up(&self) {
        let left = self.script.lock().unwrap();
        assert!(left.is_empty(), "unused answers: {left:?}");
    }
}

impl UnlockIo for ScriptIo {
    fn prompt(&self, kind: PromptKind, message: &str) -> Option<Secret> {
        self.prompts
            .lock()
            .unwrap()
            .push((kind, message.to_owned()));
        let (want, answer) = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| panic!("unexpected prompt {kind:?}: {message}"));
        assert_eq!(kind, want, "prompt {message:?}");
        answer.map(|a| Secret::from_slice(a.as_bytes()))
    }

    fn notice(&self, message: &str) {
        self.notices.lock().unwrap().push(message.to_owned());
    }
}

fn secret(s: &str) -> Option<Secret> {
    Some(Secret::from_slice(s.as_bytes()))
}

/// Runs child test `name` of this binary against `env`.
fn run_child(env: &PcscEnv, name: &str, vars: &[(&str, String)]) {
    if let Err(e) = env.run_child_test(name, vars) {
        panic!("{e}");
    }
}

fn dir_var(env: &PcscEnv) -> [(&'static str, String); 1] {
    [(DIR_VAR, env.dir().display().to_string())]
}

/// A vault with the Secret Key sealed for `card`; the Secret Key's display
/// form is kept in `dir/sk` for later child runs.
fn vault_for(dir: &Path, card: &Enrolled) -> (PathBuf, SecretKey) {
    let path = dir.join(format!("vault-{}-{:02x}.kwv", card.serial, card.slot));
    let (mut v, sk) =
        vault::create(&path, &Password::new("correct horse").unwrap(), FAST, NOW).unwrap();
    v.add_piv(
        &path,
        card.serial,
        card.slot,
        card.pin_policy,
        card.touch_policy,
        &card.card_pk,
        NOW,
    )
    .unwrap();
    std::fs::write(dir.join("sk"), sk.display().expose()).unwrap();
    std::fs::write(dir.join("vault-path"), path.display().to_string()).unwrap();
    (path, sk)
}

/// The protector of the (only) PIV wrap of the vault at `path`, as the agent
/// builds it from the file.
fn protector(path: &Path) -> YubiKeyProtector {
    let parsed = vault::read(path).unwrap();
    assert_eq!(parsed.vault.piv_wraps.len(), 1);
    YubiKeyProtector::new(parsed.vault.piv_wraps[0].clone(), parsed.vault.account_id)
}

fn saved(dir: &Path) -> (PathBuf, String) {
    let path = std::fs::read_to_string(dir.join("vault-path")).unwrap();
    let sk = std::fs::read_to_string(dir.join("sk")).unwrap();
    (PathBuf::from(path), sk)
}

fn fetch(p: &YubiKeyProtector, io: &ScriptIo) -> Result<SecretKey, ProtectorError> {
    let r = p.fetch(io);
    io.assert_used_up();
    r
}

fn enroll(opts: &EnrollOptions, io: &ScriptIo) -> Result<Enrolled, ProtectorError> {
    let r = yk::enroll(opts, io);
    io.assert_used_up();
    r
}

fn err_text<T>(r: Result<T, ProtectorError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn with_pin(serial: Option<u32>, pin: &str) -> EnrollOptions {
    EnrollOptions {
        serial,
        pin: secret(pin),
        ..EnrollOptions::default()
    }
}

/// Keeps the default PIN and the default management key (answers for enroll).
const KEEP_DEFAULTS: &[(PromptKind, Option<&str>)] = &[
    (PromptKind::NewPin, Some("")),
    (PromptKind::Confirm, Some("n")),
];

// ------------------------------------------------------- a factory-new card

#[test]
fn factory_card_enroll_unlock_wrong_pins_and_block() {
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let _card = env.insert_card(CardConfig::new(20_000_001)).unwrap();
    run_child(&env, "child_factory_card", &dir_var(&env));
}

#[test]
#[ignore = "child of factory_card_enroll_unlock_wrong_pins_and_block"]
fn child_factory_card() {
    let Some(dir) = child_var(DIR_VAR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    const SERIAL: u32 = 20_000_001;

    // Listing spends nothing and sees the factory defaults.
    let cards = yk::list_cards().unwrap();
    assert_eq!(cards.len(), 1, "{cards:?}");
    let c = &cards[0];
    assert_eq!(
        (c.serial, c.firmware_string(), c.reader.as_str()),
        (SERIAL, "5.4.3".into(), "Virtual PCD 00 00")
    );
    assert_eq!(
        (
            c.pin_default,
            c.pin_tries_left,
            c.puk_default,
            c.management_key_default,
            c.management_key_unsupported
        ),
        (Some(true), Some(3), Some(true), Some(true), false)
    );

    // Enroll: the default PIN is noticed and replaced; the default
    // management key is kept (declined) with a warning.
    let io = ScriptIo::new(&[
        (PromptKind::Pin, Some("123456")),
        (PromptKind::NewPin, Some("24681357")),
        (PromptKind::Confirm, Some("n")),
    ]);
    let first = enroll(&EnrollOptions::default(), &io).unwrap();
    assert_eq!(io.prompts()[0].1, format!("PIN of YubiKey {SERIAL}"));
    assert!(io.prompts()[1].1.contains("factory default 123456"));
    assert_eq!(
        (
            first.serial,
            first.slot,
            first.pin_policy,
            first.touch_policy
        ),
        (SERIAL, 0x82, PIN_POLICY_ONCE, 1)
    );
    assert_eq!(first.card_pk[0], 4);
    let notes = first.notes.join("\n");
    assert!(
        notes.contains("was changed from the factory default"),
        "{notes}"
    );
    assert!(
        notes.contains("WARNING") && notes.contains("factory-default management key"),
        "{notes}"
    );
    assert!(notes.contains("PUK"), "{notes}");
    assert!(!notes.contains("WARNING: the PIN"), "{notes}");
    let after = yk::list_cards().unwrap();
    assert_eq!(after[0].pin_default, Some(false));

    // The vault seals the Secret Key for the card's public key; the agent
    // builds the protector from the stored record and unlocks with the PIN.
    let (path, sk) = vault_for(&dir, &first);
    let p = protector(&path);
    assert_eq!(p.id(), format!("yubikey:{SERIAL}:82"));
    assert_eq!(p.kind(), "yubikey");
    let d = p.describe();
    assert!(
        d.contains("slot 82") && d.contains("PIN policy once") && d.contains("touch policy never"),
        "{d}"
    );
    let io = ScriptIo::pin("24681357");
    let got = fetch(&p, &io).unwrap();
    assert_eq!(got.expose_compact(), sk.expose_compact());
    assert_eq!(io.prompts()[0].1, format!("PIN of YubiKey {SERIAL}"));
    assert!(io.notices().is_empty(), "{:?}", io.notices());

    // A second enrollment takes the next free retired slot; the PIN is no
    // longer the default (no new-PIN prompt); this time the management key is
    // replaced by a random PIN-protected one.
    let io = ScriptIo::new(&[(PromptKind::Confirm, Some("y"))]);
    let second = enroll(&with_pin(None, "24681357"), &io).unwrap();
    assert_eq!(second.slot, 0x83);
    assert!(
        second.notes.join("\n").contains("replaced by a random key"),
        "{:?}",
        second.notes
    );
    assert_eq!(
        yk::list_cards().unwrap()[0].management_key_default,
        Some(false)
    );
    // The third finds the PIN-protected management key by itself: no prompts.
    let io = ScriptIo::none();
    let third = enroll(&with_pin(Some(SERIAL), "24681357"), &io).unwrap();
    assert_eq!(third.slot, 0x84);
    assert!(
        third.notes.len() == 1 && third.notes[0].contains("The PUK"),
        "{:?}",
        third.notes
    );
    // A named slot that holds a key is not overwritten.
    let io = ScriptIo::none();
    let opts = EnrollOptions {
        slot: Some(0x82),
        ..with_pin(Some(SERIAL), "24681357")
    };
    let e = err_text(enroll(&opts, &io));
    assert!(
        e.contains("slot 82") && e.contains("already holds a key"),
        "{e}"
    );
    // A slot that is not a key slot is refused before anything happens.
    let opts = EnrollOptions {
        slot: Some(0x9b),
        ..with_pin(Some(SERIAL), "24681357")
    };
    assert!(err_text(enroll(&opts, &ScriptIo::none())).contains("not a PIV key slot"));

    // The first vault still unlocks (the other enrollments used other slots).
    let got = fetch(&p, &ScriptIo::pin("24681357")).unwrap();
    assert_eq!(got.expose_compact(), sk.expose_compact());

    // Cancelling, and a PIN of the wrong length, cost no try.
    let io = ScriptIo::new(&[(PromptKind::Pin, None)]);
    assert!(matches!(fetch(&p, &io), Err(ProtectorError::Cancelled)));
    let e = err_text(fetch(&p, &ScriptIo::pin("12")));
    assert!(e.contains("6 to 8 characters"), "{e}");
    assert_eq!(yk::list_cards().unwrap()[0].pin_tries_left, Some(3));

    // Wrong PINs count down; the right one resets the counter.
    for left in [2, 1] {
        match fetch(&p, &ScriptIo::pin("00000000")) {
            Err(ProtectorError::WrongPin { serial, tries_left }) => {
                assert_eq!((serial, tries_left), (SERIAL, left));
            }
            other => panic!("expected a wrong PIN, got {:?}", other.map(|_| ())),
        }
    }
    let io = ScriptIo::pin("24681357");
    fetch(&p, &io).unwrap();
    assert!(io.prompts()[0].1.contains("last try"), "{:?}", io.prompts());
    assert_eq!(yk::list_cards().unwrap()[0].pin_tries_left, Some(3));

    // Three wrong PINs block it; then it is not even asked for.
    for left in [2, 1] {
        assert!(matches!(
            fetch(&p, &ScriptIo::pin("11111111")),
            Err(ProtectorError::WrongPin { tries_left, .. }) if tries_left == left
        ));
    }
    assert!(matches!(
        fetch(&p, &ScriptIo::pin("11111111")),
        Err(ProtectorError::PinBlocked { serial: SERIAL })
    ));
    let io = ScriptIo::none();
    let e = fetch(&p, &io);
    assert!(
        matches!(e, Err(ProtectorError::PinBlocked { serial: SERIAL })),
        "{:?}",
        e.map(|_| ())
    );
    assert!(io.prompts().is_empty());
    assert_eq!(yk::list_cards().unwrap()[0].pin_tries_left, Some(0));
}

// ------------------------------------- card removed, wrong card, file alone

#[test]
fn without_the_card_and_pin_the_vault_file_opens_nothing() {
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let state = env.dir().join("card-20000002.json");
    let real = CardConfig::new(20_000_002).state_file(&state);
    let card = env.insert_card(real.clone()).unwrap();
    run_child(&env, "child_enroll_keeping_defaults", &dir_var(&env));

    // No card at all.
    card.remove().unwrap();
    run_child(&env, "child_card_absent", &dir_var(&env));

    // Another card with the same serial (a clone attempt, or a reset card).
    let impostor = env.insert_card(CardConfig::new(20_000_002)).unwrap();
    run_child(&env, "child_impostor_card", &dir_var(&env));
    impostor.remove().unwrap();

    // The real card, re-inserted, still opens it with the PIN.
    let _card = env.insert_card(real).unwrap();
    run_child(&env, "child_real_card_again", &dir_var(&env));
}

#[test]
#[ignore = "child of without_the_card_and_pin_the_vault_file_opens_nothing"]
fn child_enroll_keeping_defaults() {
    let Some(dir) = child_var(DIR_VAR) else {
        return;
    };
    // Another application already uses slot 82.
    {
        use yubikey::piv::{AlgorithmId, RetiredSlotId, SlotId};
        let mut card = yubikey::YubiKey::open_by_serial(yubikey::Serial(20_000_002)).unwrap();
        card.authenticate(yubikey::MgmKey::default()).unwrap();
        yubikey::piv::generate(
            &mut card,
            SlotId::Retired(RetiredSlotId::R1),
            AlgorithmId::EccP256,
            yubikey::PinPolicy::Once,
            yubikey::TouchPolicy::Never,
        )
        .unwrap();
    }
    // Naming that slot fails, after the PIN was changed: the error says so.
    let opts = EnrollOptions {
        slot: Some(0x82),
        ..with_pin(None, "123456")
    };
    let io = ScriptIo::new(&[
        (PromptKind::NewPin, Some("87654321")),
        (PromptKind::Confirm, Some("n")),
    ]);
    let e = err_text(enroll(&opts, &io));
    assert!(
        e.contains("already holds a key")
            && e.contains(
                "(already done on YubiKey 20000002: its PIN was changed to the new PIN you entered)"
            ),
        "{e}"
    );
    let mut card = yubikey::YubiKey::open_by_serial(yubikey::Serial(20_000_002)).unwrap();
    card.change_pin(b"87654321", b"123456").unwrap();
    drop(card);

    let io = ScriptIo::new(KEEP_DEFAULTS);
    let e = enroll(&with_pin(None, "123456"), &io).unwrap();
    assert_eq!((e.serial, e.slot), (20_000_002, 0x83));
    let notes = e.notes.join("\n");
    assert!(
        notes.contains("WARNING: the PIN of YubiKey 20000002 is still the factory default 123456"),
        "{notes}"
    );
    assert!(notes.contains("factory-default management key"), "{notes}");
    let (path, sk) = vault_for(Path::new(&dir), &e);
    let got = fetch(&protector(&path), &ScriptIo::pin("123456")).unwrap();
    assert_eq!(got.expose_compact(), sk.expose_compact());
}

#[test]
#[ignore = "child of without_the_card_and_pin_the_vault_file_opens_nothing"]
fn child_card_absent() {
    let Some(dir) = child_var(DIR_VAR) else {
        return;
    };
    let (path, sk_text) = saved(Path::new(&dir));
    let p = protector(&path);

    // Absent: unavailable (so the agent tries other protectors), at once,
    // naming the serial, without asking for the PIN.
    let io = ScriptIo::none();
    let start = Instant::now();
    let e = fetch(&p, &io);
    let Err(ProtectorError::Unavailable(msg)) = e else {
        panic!("expected unavailable, got {:?}", e.map(|_| ()));
    };
    assert!(msg.contains("YubiKey 20000002 is not inserted"), "{msg}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(io.prompts().is_empty());

    // With an insert timeout: a notice, a bounded wait, the same answer.
    let io = ScriptIo::none();
    let start = Instant::now();
    let p2 = protector(&path).with_insert_timeout(Duration::from_millis(500));
    assert!(matches!(
        fetch(&p2, &io),
        Err(ProtectorError::Unavailable(_))
    ));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        io.notices(),
        vec!["Insert YubiKey 20000002 (waiting up to 0.5 s)…".to_owned()]
    );
    assert!(yk::list_cards().unwrap().is_empty());
    let e = err_text(enroll(&with_pin(None, "123456"), &ScriptIo::none()));
    assert!(e.contains("no YubiKey is inserted"), "{e}");

    // The file alone: the wrap holds public keys only. The Secret Key is not
    // in it, and no key computable from public data opens the sealed box.
    let bytes = std::fs::read(&path).unwrap();
    let parsed = vault::read(&path).unwrap();
    let wrap = &parsed.vault.piv_wraps[0];
    let id: AccountId = parsed.vault.account_id;
    let sk = SecretKey::parse(&sk_text).unwrap();
    let compact = sk.expose_compact();
    assert!(!bytes.windows(compact.len()).any(|w| w == compact));
    assert!(
        !bytes
            .windows(sk_text.len())
            .any(|w| w == sk_text.as_bytes())
    );
    for guess in [&wrap.epk[1..], &wrap.card_pk[1..], &[0u8; 32][..]] {
        let x: [u8; 32] = guess.try_into().unwrap();
        let key = piv::wrap_key(&x, &wrap.epk, &wrap.card_pk);
        assert!(piv::open_secret_key(&key, &id, wrap.serial, wrap.slot, &wrap.sealed).is_err());
    }
}

#[test]
#[ignore = "child of without_the_card_and_pin_the_vault_file_opens_nothing"]
fn child_impostor_card() {
    let Some(dir) = child_var(DIR_VAR) else {
        return;
    };
    let (path, _) = saved(Path::new(&dir));
    let p = protector(&path);
    // Fresh card, same serial: slot 83 is empty; refused before the PIN.
    let io = ScriptIo::none();
    let e = err_text(fetch(&p, &io));
    assert!(e.contains("slot 83 of YubiKey 20000002 is empty"), "{e}");
    // Give it keys in 82 and 83: now 83 holds another key.
    for slot in [0x82, 0x83] {
        let io = ScriptIo::new(KEEP_DEFAULTS);
        assert_eq!(enroll(&with_pin(None, "123456"), &io).unwrap().slot, slot);
    }
    let e = err_text(fetch(&p, &ScriptIo::none()));
    assert!(e.contains("holds another key"), "{e}");

    // Even when the impostor's key is made to do the ECDH on the stored
    // ephemeral key (bypassing the check above), the result opens nothing.
    let parsed = vault::read(&path).unwrap();
    let wrap = &parsed.vault.piv_wraps[0];
    let mut card = yubikey::YubiKey::open_by_serial(yubikey::Serial(20_000_002)).unwrap();
    card.verify_pin(b"123456").unwrap();
    let shared = yubikey::piv::decrypt_data(
        &mut card,
        &piv::uncompress(&wrap.epk).unwrap(),
        yubikey::piv::AlgorithmId::EccP256,
        yubikey::piv::SlotId::try_from(0x83).unwrap(),
    )
    .unwrap();
    drop(card);
    let x: [u8; 32] = shared.as_slice().try_into().unwrap();
    let key = piv::wrap_key(&x, &wrap.epk, &wrap.card_pk);
    assert!(
        piv::open_secret_key(
            &key,
            &parsed.vault.account_id,
            wrap.serial,
            wrap.slot,
            &wrap.sealed
        )
        .is_err()
    );
}

#[test]
#[ignore = "child of without_the_card_and_pin_the_vault_file_opens_nothing"]
fn child_real_card_again() {
    let Some(dir) = child_var(DIR_VAR) else {
        return;
    };
    let (path, sk_text) = saved(Path::new(&dir));
    let got = fetch(&protector(&path), &ScriptIo::pin("123456")).unwrap();
    assert_eq!(got.display().expose(), sk_text);
}

// ---------------------------------------------------------------- two cards

#[test]
fn two_cards_need_a_serial() {
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let _a = env.insert_card(CardConfig::new(1001)).unwrap();
    let _b = env.insert_card(CardConfig::new(1002).reader(1)).unwrap();
    run_child(&env, "child_two_cards", &dir_var(&env));
}

#[test]
#[ignore = "child of two_cards_need_a_serial"]
fn child_two_cards() {
    let Some(dir) = child_var(DIR_VAR) else {
        return;
    };
    let serials: Vec<u32> = yk::list_cards().unwrap().iter().map(|c| c.serial).collect();
    assert_eq!(serials, vec![1001, 1002]);

    let io = ScriptIo::none();
    let e = err_text(enroll(&EnrollOptions::default(), &io));
    assert_eq!(
        e,
        "several YubiKeys are present (serials 1001, 1002): pick one with --serial"
    );
    let e = err_text(enroll(&with_pin(Some(1003), "123456"), &ScriptIo::none()));
    assert!(e.contains("YubiKey 1003 is not inserted"), "{e}");

    let io = ScriptIo::new(KEEP_DEFAULTS);
    let e = enroll(&with_pin(Some(1002), "123456"), &io).unwrap();
    assert_eq!((e.serial, e.slot), (1002, 0x82));
    let (path, sk) = vault_for(Path::new(&dir), &e);
    let got = fetch(&protector(&path), &ScriptIo::pin("123456")).unwrap();
    assert_eq!(got.expose_compact(), sk.expose_compact());
    // The other card was not touched.
    let cards = yk::list_cards().unwrap();
    assert_eq!(cards[0].management_key_default, Some(true));
}

// ----------------------------------------------- firmware 5.7 (AES default)

/// A 3DES management key that is not the default.
const CUSTOM_3DES: &str = "8a2b3c4d5e6f70819293a4b5c6d7e8f90112233445566778";

#[test]
fn firmware_5_7_needs_a_3des_management_key() {
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let _aes = env
        .insert_card(CardConfig::new(3001).version(Version(5, 7, 1)))
        .unwrap();
    let mut tdes = CardConfig::new(3002).version(Version(5, 7, 1)).reader(1);
    tdes.mgmt_key = Some(format!("3des:{CUSTOM_3DES}"));
    let _tdes = env.insert_card(tdes).unwrap();
    run_child(&env, "child_firmware_5_7", &dir_var(&env));
}

#[test]
#[ignore = "child of firmware_5_7_needs_a_3des_management_key"]
fn child_firmware_5_7() {
    let Some(dir) = child_var(DIR_VAR) else {
        return;
    };
    let cards = yk::list_cards().unwrap();
    assert_eq!(
        cards
            .iter()
            .map(|c| (c.serial, c.management_key_unsupported))
            .collect::<Vec<_>>(),
        vec![(3001, true), (3002, false)]
    );
    assert!(cards[0].to_string().contains("-a TDES"), "{}", cards[0]);

    // AES: a clear error, before the PIN is asked for.
    let io = ScriptIo::none();
    let e = err_text(enroll(
        &EnrollOptions {
            serial: Some(3001),
            ..EnrollOptions::default()
        },
        &io,
    ));
    assert!(
        e.contains("AES management key")
            && e.contains("ykman piv access change-management-key -a TDES"),
        "{e}"
    );

    // 3DES on 5.7: a wrong key is refused; when none is given, it is asked for.
    let opts = EnrollOptions {
        management_key: secret("0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778"),
        ..with_pin(Some(3002), "123456")
    };
    let e = err_text(enroll(
        &opts,
        &ScriptIo::new(&[(PromptKind::NewPin, Some(""))]),
    ));
    assert!(
        e.contains("is not the management key of YubiKey 3002"),
        "{e}"
    );
    let io = ScriptIo::new(&[
        (PromptKind::NewPin, Some("")),
        (PromptKind::ManagementKey, Some(CUSTOM_3DES)),
    ]);
    let e = enroll(&with_pin(Some(3002), "123456"), &io).unwrap();
    assert_eq!(e.slot, 0x82);
    let opts = EnrollOptions {
        management_key: secret(CUSTOM_3DES),
        ..with_pin(Some(3002), "123456")
    };
    let second = enroll(&opts, &ScriptIo::new(&[(PromptKind::NewPin, Some(""))])).unwrap();
    assert_eq!(second.slot, 0x83);
    // Unlocking needs no management key: fine on any firmware.
    let (path, sk) = vault_for(Path::new(&dir), &e);
    let got = fetch(&protector(&path), &ScriptIo::pin("123456")).unwrap();
    assert_eq!(got.expose_compact(), sk.expose_compact());
}

// -------------------------------------------------------------------- touch

#[test]
fn touch_policy_always_asks_for_a_touch_and_times_out_without_one() {
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let card = env
        .insert_card(CardConfig::new(4001).touch_timeout(Duration::from_secs(1)))
        .unwrap();
    std::thread::scope(|s| {
        // Touch on the card's first request only.
        let toucher = s.spawn(|| {
            card.wait_for_touch_request(1, Duration::from_secs(30))
                .unwrap();
            card.touch().unwrap();
        });
        run_child(&env, "child_touch", &dir_var(&env));
        toucher.join().unwrap();
    });
    assert_eq!(card.touch_requests(), 2, "{}", card.log());
}

#[test]
#[ignore = "child of touch_policy_always_asks_for_a_touch_and_times_out_without_one"]
fn child_touch() {
    let Some(dir) = child_var(DIR_VAR) else {
        return;
    };
    let opts = EnrollOptions {
        touch: Touch::Always,
        ..with_pin(Some(4001), "123456")
    };
    let e = enroll(&opts, &ScriptIo::new(KEEP_DEFAULTS)).unwrap();
    assert_eq!(e.touch_policy, 2);
    let (path, sk) = vault_for(Path::new(&dir), &e);
    let p = protector(&path);
    assert!(p.describe().contains("touch policy always"));

    // Touched (by the parent, when the card asks): unlocks, after a notice.
    let io = ScriptIo::pin("123456");
    let got = fetch(&p, &io).unwrap();
    assert_eq!(got.expose_compact(), sk.expose_compact());
    assert_eq!(
        io.notices(),
        vec!["Touch your YubiKey 4001 (it is blinking)…".to_owned()]
    );

    // Not touched: the card gives up after its timeout, with a clear error.
    let io = ScriptIo::pin("123456");
    let start = Instant::now();
    let e = err_text(fetch(&p, &io));
    assert!(
        e.contains("timed out waiting for a touch on YubiKey 4001"),
        "{e}"
    );
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert_eq!(io.notices().len(), 1);
}
