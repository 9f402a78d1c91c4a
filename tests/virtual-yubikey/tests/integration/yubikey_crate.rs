//! The `yubikey` crate (0.8, feature `untested`) against the card: what the
//! keyward YubiKey protector relies on.

use virtual_yubikey::harness::{CardConfig, child_var};
use yubikey::piv::{self, AlgorithmId, ManagementAlgorithmId, Origin, RetiredSlotId, SlotId};
use yubikey::{Error, MgmKey, PinPolicy, Serial, TouchPolicy, YubiKey};

use crate::run_child;

const SERIAL: u32 = 14_285_714;

#[test]
fn yubikey_crate_operations() {
    let Some(env) = crate::start() else { return };
    let _card = env.insert_card(CardConfig::new(SERIAL)).unwrap();
    run_child!(env, child_operations, &[("VYK_SERIAL", SERIAL.to_string())]);
}

/// The public point (65 bytes, uncompressed) in an SPKI from the crate.
fn point(spki: &yubikey::piv::SlotMetadata) -> Vec<u8> {
    spki.public
        .as_ref()
        .expect("metadata has the public key")
        .subject_public_key
        .raw_bytes()
        .to_vec()
}

#[test]
#[ignore = "child of yubikey_crate_operations"]
fn child_operations() {
    let Some(serial) = child_var("VYK_SERIAL") else {
        return;
    };
    let serial: u32 = serial.parse().unwrap();

    // Open by serial: select, version, serial.
    let mut yk = YubiKey::open_by_serial(Serial(serial)).unwrap();
    assert_eq!(yk.serial(), Serial(serial));
    assert_eq!(yk.version().to_string(), "5.4.3");
    assert_eq!(yk.name(), "Virtual PCD 00 00");

    // PIN: tries, a wrong one, the right one.
    assert_eq!(yk.get_pin_retries().unwrap(), 3);
    assert_eq!(yk.verify_pin(b"000000"), Err(Error::WrongPin { tries: 2 }));
    assert_eq!(yk.get_pin_retries().unwrap(), 2);
    yk.verify_pin(b"123456").unwrap();
    assert_eq!(yk.get_pin_retries().unwrap(), 3);

    // Management key: default works, another does not.
    let other = MgmKey::new([0x42; 24]).unwrap();
    assert_eq!(
        yk.authenticate(other.clone()),
        Err(Error::AuthenticationError)
    );
    yk.authenticate(MgmKey::default()).unwrap();

    // Generate P-256 in a retired slot, PIN once, no touch.
    let slot = SlotId::Retired(RetiredSlotId::R1);
    let spki = piv::generate(
        &mut yk,
        slot,
        AlgorithmId::EccP256,
        PinPolicy::Once,
        TouchPolicy::Never,
    )
    .unwrap();
    let card_point = spki.subject_public_key.raw_bytes().to_vec();
    assert_eq!((card_point.len(), card_point[0]), (65, 4));

    // Metadata of the new key, of the PIN and of the management key.
    let meta = piv::metadata(&mut yk, slot).unwrap();
    assert_eq!(
        meta.algorithm,
        ManagementAlgorithmId::Asymmetric(AlgorithmId::EccP256)
    );
    assert_eq!(meta.policy, Some((PinPolicy::Once, TouchPolicy::Never)));
    assert_eq!(meta.origin, Some(Origin::Generated));
    assert_eq!(point(&meta), card_point);
    let pin_meta = piv::metadata(&mut yk, SlotId::Management(piv::ManagementSlotId::Pin)).unwrap();
    assert_eq!(pin_meta.default, Some(true));
    assert_eq!(
        pin_meta.retries.map(|r| (r.retry_count, r.remaining_count)),
        Some((3, 3))
    );
    let mgm_meta = piv::metadata(
        &mut yk,
        SlotId::Management(piv::ManagementSlotId::Management),
    )
    .unwrap();
    assert_eq!(mgm_meta.algorithm, ManagementAlgorithmId::ThreeDes);
    assert!(
        piv::metadata(&mut yk, SlotId::Retired(RetiredSlotId::R2)).is_err(),
        "empty slot"
    );

    // ECDH: the card's answer is the host's P-256 computation. (The PIN
    // check above re-selected the applet, which un-verified the PIN.)
    yk.verify_pin(b"123456").unwrap();
    let host = p256::SecretKey::from_slice(&[0x5A; 32]).unwrap();
    let host_point = host.public_key().to_sec1_bytes();
    let shared = piv::decrypt_data(&mut yk, &host_point, AlgorithmId::EccP256, slot).unwrap();
    let card_public = p256::PublicKey::from_sec1_bytes(&card_point).unwrap();
    let expected = p256::ecdh::diffie_hellman(host.to_nonzero_scalar(), card_public.as_affine());
    assert_eq!(shared.as_slice(), expected.raw_secret_bytes().as_slice());

    // Sign: a valid ECDSA signature by the slot's key.
    let hash = [0x11; 32];
    let der = piv::sign_data(&mut yk, &hash, AlgorithmId::EccP256, slot).unwrap();
    let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    p256::ecdsa::VerifyingKey::from(card_public)
        .verify_prehash(&hash, &sig)
        .unwrap();

    // Certificate write and read back (a 433-byte object: chained PUT DATA,
    // GET RESPONSE on the way back).
    let cert = yubikey::Certificate::from_bytes(crate::TEST_CERT.to_vec()).unwrap();
    cert.write(&mut yk, slot, yubikey::certificate::CertInfo::Uncompressed)
        .unwrap();
    let back = yubikey::Certificate::read(&mut yk, slot).unwrap();
    assert_eq!(back.subject(), "CN=virtual-yubikey test certificate");
    let keys = yk.piv_keys().unwrap();
    assert_eq!(
        keys.iter().map(|k| k.slot()).collect::<Vec<_>>(),
        vec![slot]
    );

    // A changed management key (the crate's 3DES only).
    let new_key = MgmKey::new([
        0x10, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76, 0x87, 0x98, 0xA9, 0xBA, 0xCB, 0xDC, 0xED, 0xFE,
        0x0F, 0x1E, 0x2D, 0x3C, 0x4B, 0x5A, 0x69, 0x78, 0x87,
    ])
    .unwrap();
    new_key.set_manual(&mut yk, false).unwrap();
    assert_eq!(
        yk.authenticate(MgmKey::default()),
        Err(Error::AuthenticationError)
    );
    yk.authenticate(new_key).unwrap();
    MgmKey::set_default(&mut yk).unwrap();
    yk.authenticate(MgmKey::default()).unwrap();

    // Change PIN and PUK, block the PIN, unblock it with the PUK.
    yk.change_pin(b"123456", b"24681357").unwrap();
    assert_eq!(
        yk.change_pin(b"123456", b"999999"),
        Err(Error::WrongPin { tries: 2 })
    );
    yk.change_puk(b"12345678", b"87654321").unwrap();
    // The wrong CHANGE REFERENCE above cost a try: two wrong PINs block it.
    for tries in [1, 0] {
        assert_eq!(yk.verify_pin(b"000000"), Err(Error::WrongPin { tries }));
    }
    assert_eq!(
        yk.verify_pin(b"24681357"),
        Err(Error::WrongPin { tries: 0 }),
        "blocked"
    );
    assert_eq!(yk.change_pin(b"24681357", b"111111"), Err(Error::PinLocked));
    assert_eq!(
        yk.unblock_pin(b"12345678", b"135790"),
        Err(Error::WrongPin { tries: 2 })
    );
    yk.unblock_pin(b"87654321", b"135790").unwrap();
    yk.verify_pin(b"135790").unwrap();
    assert_eq!(yk.get_pin_retries().unwrap(), 3);

    // ECDH with PIN policy "once" needs the PIN again in a new session.
    drop(yk); // the crate resets the card on drop
    let mut yk = YubiKey::open_by_serial(Serial(serial)).unwrap();
    assert_eq!(
        piv::decrypt_data(&mut yk, &host_point, AlgorithmId::EccP256, slot),
        Err(Error::AuthenticationError)
    );
    yk.verify_pin(b"135790").unwrap();
    piv::decrypt_data(&mut yk, &host_point, AlgorithmId::EccP256, slot).unwrap();
}
