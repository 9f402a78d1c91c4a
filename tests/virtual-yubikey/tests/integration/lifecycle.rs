//! The card's life in the reader: two cards at once, removal and
//! re-insertion with a state file, resets, and touch.

use std::time::{Duration, Instant};

use virtual_yubikey::harness::{CardConfig, child_var};
use virtual_yubikey::state::Version;
use yubikey::piv::{self, AlgorithmId, SlotId};
use yubikey::{Error, MgmKey, PinPolicy, Serial, TouchPolicy, YubiKey};

use crate::apdu::{SELECT_PIV, VERIFY_DEFAULT_PIN, connect, tx};
use crate::run_child;

#[test]
fn two_cards_with_different_serials() {
    let Some(env) = crate::start() else { return };
    let _a = env.insert_card(CardConfig::new(1001)).unwrap();
    let _b = env
        .insert_card(CardConfig::new(1002).reader(1).version(Version(5, 7, 1)))
        .unwrap();
    assert!(
        env.insert_card(CardConfig::new(1003)).is_err(),
        "reader 0 is taken"
    );
    run_child!(env, child_two_cards, &[]);
}

#[test]
#[ignore = "child of two_cards_with_different_serials"]
fn child_two_cards() {
    if child_var(virtual_yubikey::harness::SOCKET_VAR).is_none() {
        return;
    }
    let a = YubiKey::open_by_serial(Serial(1001)).unwrap();
    assert_eq!(
        (a.name(), a.version().to_string()),
        ("Virtual PCD 00 00", "5.4.3".into())
    );
    let b = YubiKey::open_by_serial(Serial(1002)).unwrap();
    assert_eq!(
        (b.name(), b.version().to_string()),
        ("Virtual PCD 00 01", "5.7.1".into())
    );
    drop((a, b));
    assert!(
        YubiKey::open().is_err(),
        "open() refuses to choose between two keys"
    );
}

#[test]
fn state_file_survives_removal_and_reinsertion() {
    let Some(env) = crate::start() else { return };
    let state = env.dir().join("card.json");
    let config = CardConfig::new(2002).state_file(&state);
    let card = env.insert_card(config.clone()).unwrap();
    let pubkey_file = env.dir().join("pubkey.hex");
    let vars = [("VYK_PUBKEY_FILE", pubkey_file.display().to_string())];
    run_child!(env, child_before_removal, &vars);
    card.remove().unwrap();
    assert!(state.exists());

    let _card = env.insert_card(config).unwrap();
    run_child!(env, child_after_reinsertion, &vars);

    // A state file belongs to one card.
    let err = env
        .insert_card(CardConfig::new(2003).state_file(&state).reader(1))
        .unwrap_err();
    assert!(
        err.to_string().contains("holds the card with serial 2002"),
        "{err}"
    );
}

#[test]
#[ignore = "child of state_file_survives_removal_and_reinsertion"]
fn child_before_removal() {
    let Some(pubkey_file) = child_var("VYK_PUBKEY_FILE") else {
        return;
    };
    let mut yk = YubiKey::open_by_serial(Serial(2002)).unwrap();
    yk.change_pin(b"123456", b"654321").unwrap();
    assert!(
        yk.verify_pin(b"123456").is_err(),
        "one wrong try, kept across removal"
    );
    yk.authenticate(MgmKey::default()).unwrap();
    let spki = piv::generate(
        &mut yk,
        SlotId::Authentication,
        AlgorithmId::EccP256,
        PinPolicy::Once,
        TouchPolicy::Never,
    )
    .unwrap();
    std::fs::write(
        pubkey_file,
        hex::encode(spki.subject_public_key.raw_bytes()),
    )
    .unwrap();
}

#[test]
#[ignore = "child of state_file_survives_removal_and_reinsertion"]
fn child_after_reinsertion() {
    let Some(pubkey_file) = child_var("VYK_PUBKEY_FILE") else {
        return;
    };
    let mut yk = YubiKey::open_by_serial(Serial(2002)).unwrap();
    assert_eq!(yk.get_pin_retries().unwrap(), 2);
    yk.verify_pin(b"654321").unwrap();
    let meta = piv::metadata(&mut yk, SlotId::Authentication).unwrap();
    let point = meta.public.unwrap().subject_public_key.raw_bytes().to_vec();
    assert_eq!(
        hex::encode(point),
        std::fs::read_to_string(pubkey_file).unwrap()
    );
}

#[test]
fn reset_clears_only_volatile_state() {
    let Some(env) = crate::start() else { return };
    let card = env.insert_card(CardConfig::new(3003)).unwrap();
    run_child!(env, child_reset, &[("VYK_READER", card.reader_name())]);
}

#[test]
#[ignore = "child of reset_clears_only_volatile_state"]
fn child_reset() {
    let Some(reader) = child_var("VYK_READER") else {
        return;
    };
    let (_ctx, mut card) = connect(&reader);
    let reset = |card: &mut pcsc::Card| {
        card.reconnect(
            pcsc::ShareMode::Shared,
            pcsc::Protocols::T1,
            pcsc::Disposition::ResetCard,
        )
        .unwrap();
        assert_eq!(tx(card, SELECT_PIV).1, 0x9000);
    };
    assert_eq!(tx(&card, SELECT_PIV).1, 0x9000);
    // A wrong PIN: the counter is persistent.
    assert_eq!(
        tx(&card, "00 20 00 80 08 30 30 30 30 30 30 FF FF").1,
        0x63C2
    );
    reset(&mut card);
    assert_eq!(tx(&card, "00 20 00 80").1, 0x63C2);
    // The verified flag is volatile.
    assert_eq!(tx(&card, VERIFY_DEFAULT_PIN).1, 0x9000);
    assert_eq!(tx(&card, "00 20 00 80").1, 0x9000);
    reset(&mut card);
    assert_eq!(tx(&card, "00 20 00 80").1, 0x63C3);
    // So is the management-key authentication; keys are not.
    drop(card);
    let mut yk = YubiKey::open().unwrap();
    yk.authenticate(MgmKey::default()).unwrap();
    piv::generate(
        &mut yk,
        SlotId::Signature,
        AlgorithmId::EccP256,
        PinPolicy::Default,
        TouchPolicy::Default,
    )
    .unwrap();
    drop(yk); // resets the card
    let mut yk = YubiKey::open().unwrap();
    assert_eq!(
        piv::generate(
            &mut yk,
            SlotId::Signature,
            AlgorithmId::EccP256,
            PinPolicy::Default,
            TouchPolicy::Default
        )
        .err(),
        Some(Error::AuthenticationError)
    );
    assert!(
        piv::metadata(&mut yk, SlotId::Signature).is_ok(),
        "the key is still there"
    );
}

#[test]
fn touch_by_file_and_signal_and_timeout() {
    let Some(env) = crate::start() else { return };
    let card = env
        .insert_card(CardConfig::new(4004).touch_timeout(Duration::from_secs(1)))
        .unwrap();
    std::thread::scope(|s| {
        let toucher = s.spawn(|| {
            // First request: touch with the file, while the card waits.
            card.wait_for_touch_request(1, Duration::from_secs(20))
                .unwrap();
            assert!(card.is_waiting_for_touch());
            card.touch().unwrap();
            // Second request: touch with SIGUSR1.
            card.wait_for_touch_request(2, Duration::from_secs(20))
                .unwrap();
            let status = std::process::Command::new("kill")
                .args(["-USR1", &card.pid().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            // Third request: no touch.
        });
        run_child!(env, child_touch, &[("VYK_SERIAL", "4004".to_owned())]);
        toucher.join().unwrap();
    });
    let log = card.log();
    assert!(log.contains("touch timed out"), "{log}");
    assert_eq!(card.touch_requests(), 3);
}

#[test]
#[ignore = "child of touch_by_file_and_signal_and_timeout"]
fn child_touch() {
    let Some(serial) = child_var("VYK_SERIAL") else {
        return;
    };
    let mut yk = YubiKey::open_by_serial(Serial(serial.parse().unwrap())).unwrap();
    yk.authenticate(MgmKey::default()).unwrap();
    let slot = SlotId::KeyManagement;
    piv::generate(
        &mut yk,
        slot,
        AlgorithmId::EccP256,
        PinPolicy::Never,
        TouchPolicy::Always,
    )
    .unwrap();
    let hash = [7u8; 32];
    piv::sign_data(&mut yk, &hash, AlgorithmId::EccP256, slot).expect("touched with the file");
    piv::sign_data(&mut yk, &hash, AlgorithmId::EccP256, slot).expect("touched with SIGUSR1");
    let start = Instant::now();
    assert_eq!(
        piv::sign_data(&mut yk, &hash, AlgorithmId::EccP256, slot).err(),
        Some(Error::AuthenticationError),
        "no touch: 6982, as a real YubiKey answers"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
}
