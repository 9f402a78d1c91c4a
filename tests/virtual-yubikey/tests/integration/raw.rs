//! Raw APDUs through the `pcsc` crate, for what no available client does:
//! AES management keys (the yubikey crate 0.8 and yubico-piv-tool 2.2 speak
//! only 3DES), and long chained commands and responses.

use virtual_yubikey::crypto::MgmtAlgorithm;
use virtual_yubikey::harness::{CardConfig, child_var};
use virtual_yubikey::state::{DEFAULT_MGMT_KEY, Version};
use virtual_yubikey::tlv;
use yubikey::{Error, MgmKey, Serial, YubiKey};

use crate::apdu::{SELECT_PIV, connect, tx, tx_bytes};
use crate::run_child;

#[test]
fn aes_management_key_on_firmware_5_7() {
    let Some(env) = crate::start() else { return };
    let card = env
        .insert_card(CardConfig::new(5005).version(Version(5, 7, 1)))
        .unwrap();
    run_child!(env, child_aes, &[("VYK_READER", card.reader_name())]);
}

/// Mutual authentication with raw APDUs; returns the final status word.
fn authenticate(card: &pcsc::Card, alg: MgmtAlgorithm, key: &[u8]) -> u16 {
    let p1 = alg.to_byte();
    let n = alg.block_len();
    let (data, sw) = tx_bytes(card, &[0, 0x87, p1, 0x9B, 4, 0x7C, 2, 0x80, 0]);
    if sw != 0x9000 {
        return sw;
    }
    let witness = tlv::find(
        &tlv::parse_all(tlv::parse_single(&data, 0x7C).unwrap()).unwrap(),
        0x80,
    )
    .unwrap()
    .to_vec();
    assert_eq!(witness.len(), n);
    let witness = alg.decrypt(key, &witness).unwrap();
    let challenge = vec![0xA5; n];
    let mut inner = tlv::encode(0x80, &witness);
    tlv::write(&mut inner, 0x81, &challenge);
    let body = tlv::encode(0x7C, &inner);
    let mut apdu = vec![0, 0x87, p1, 0x9B, body.len() as u8];
    apdu.extend(body);
    let (data, sw) = tx_bytes(card, &apdu);
    if sw == 0x9000 {
        let inner = tlv::parse_single(&data, 0x7C).unwrap();
        let response = tlv::parse_single(inner, 0x82).unwrap();
        assert_eq!(
            response,
            alg.encrypt(key, &challenge).unwrap(),
            "the card proved the key"
        );
    }
    sw
}

#[test]
#[ignore = "child of aes_management_key_on_firmware_5_7"]
fn child_aes() {
    let Some(reader) = child_var("VYK_READER") else {
        return;
    };
    let (_ctx, card) = connect(&reader);
    assert_eq!(tx(&card, SELECT_PIV).1, 0x9000);
    // Metadata: AES-192, default.
    let (meta, sw) = tx(&card, "00 F7 00 9B 00");
    assert_eq!((sw, &meta[..3]), (0x9000, &[0x01, 0x01, 0x0A][..]));
    // 3DES is the wrong algorithm here; AES-192 with the default key works.
    assert_eq!(
        authenticate(&card, MgmtAlgorithm::Tdes, &DEFAULT_MGMT_KEY),
        0x6A80
    );
    assert_eq!(authenticate(&card, MgmtAlgorithm::Aes192, &[1; 24]), 0x6982);
    assert_eq!(
        authenticate(&card, MgmtAlgorithm::Aes192, &DEFAULT_MGMT_KEY),
        0x9000
    );
    // Authenticated: generate works.
    let (data, sw) = tx(&card, "00 47 00 9A 05 AC 03 80 01 11");
    assert_eq!((sw, &data[..3]), (0x9000, &[0x7F, 0x49, 0x43][..]));
    // Change to AES-256 and use it.
    let key256 = [0x3C; 32];
    let mut set = vec![0, 0xFF, 0xFF, 0xFF, 35, 0x0C, 0x9B, 32];
    set.extend(key256);
    assert_eq!(tx_bytes(&card, &set).1, 0x9000);
    assert_eq!(
        authenticate(&card, MgmtAlgorithm::Aes192, &DEFAULT_MGMT_KEY),
        0x6A80
    );
    assert_eq!(authenticate(&card, MgmtAlgorithm::Aes256, &key256), 0x9000);
    drop(card);

    // The yubikey crate 0.8 authenticates with 3DES only, so it is refused.
    let mut yk = YubiKey::open_by_serial(Serial(5005)).unwrap();
    assert_eq!(
        yk.authenticate(MgmKey::default()),
        Err(Error::AuthenticationError)
    );
}

#[test]
fn long_objects_chain_both_ways() {
    let Some(env) = crate::start() else { return };
    let card = env.insert_card(CardConfig::new(6006)).unwrap();
    run_child!(
        env,
        child_long_objects,
        &[("VYK_READER", card.reader_name())]
    );
}

#[test]
#[ignore = "child of long_objects_chain_both_ways"]
fn child_long_objects() {
    let Some(reader) = child_var("VYK_READER") else {
        return;
    };
    let (_ctx, card) = connect(&reader);
    assert_eq!(tx(&card, SELECT_PIV).1, 0x9000);
    assert_eq!(
        authenticate(&card, MgmtAlgorithm::Tdes, &DEFAULT_MGMT_KEY),
        0x9000
    );
    let value: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut body = tlv::encode(0x5C, &[0x5F, 0xC1, 0x10]);
    tlv::write(&mut body, 0x53, &value);
    let chunks: Vec<&[u8]> = body.chunks(255).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let cla = if i + 1 < chunks.len() { 0x10 } else { 0x00 };
        let mut apdu = vec![cla, 0xDB, 0x3F, 0xFF, chunk.len() as u8];
        apdu.extend_from_slice(chunk);
        assert_eq!(tx_bytes(&card, &apdu).1, 0x9000);
    }
    let (mut got, mut sw) = tx(&card, "00 CB 3F FF 05 5C 03 5F C1 10 00");
    let mut rounds = 1;
    while sw >> 8 == 0x61 {
        let (more, next) = tx(&card, "00 C0 00 00 00");
        got.extend(more);
        sw = next;
        rounds += 1;
    }
    assert_eq!(sw, 0x9000);
    assert_eq!(rounds, 12, "3004 bytes in 256-byte pieces");
    assert_eq!(tlv::parse_single(&got, 0x53).unwrap(), &value[..]);
}
