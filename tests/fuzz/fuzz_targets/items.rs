//! The item plaintext decoder (`account::items::decode`).
//!
//! Checks: whatever decodes re-encodes (`items::encode`) to exactly the same
//! bytes (canonical), has a name that `check_name` accepts and a value within
//! the length field; no strict prefix decodes. And the other way round: an
//! item built from the input (name and value cut from it) with a name that
//! `check_name` accepts decodes back to itself.
#![no_main]

use keyward_agent::account::items::{self, check_name};
use keyward_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(item) = items::decode(data) {
        let enc = items::encode(&item.name, item.value.expose(), item.created, item.modified);
        assert!(enc.expose() == data, "item re-encoding differs");
        assert!(check_name(&item.name).is_ok());
        assert!(item.name.len() <= items::MAX_NAME);
        assert!(items::decode(&data[..data.len() - 1]).is_none());
    }

    let mut b = Bytes::new(data);
    let name_len = usize::from(b.u16() % 300);
    let name = String::from_utf8_lossy(b.take(name_len)).into_owned();
    let created = u64::from_be_bytes(b.take(8).try_into().unwrap_or([7; 8]));
    let modified = u64::from_be_bytes(b.take(8).try_into().unwrap_or([9; 8]));
    let value = b.rest();
    let pt = items::encode(&name, value, created, modified);
    match items::decode(pt.expose()) {
        Some(item) => {
            assert_eq!(item.name, name);
            assert!(item.value.expose() == value);
            assert_eq!((item.created, item.modified), (created, modified));
        }
        None => assert!(check_name(&name).is_err(), "valid item {name:?} refused"),
    }
});
