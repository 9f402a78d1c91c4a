#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! One YubiKey on two devices of one account (issue 17, SECURITY.md §18.5):
//! two homes with their own agents sharing the vault's folder, one virtual
//! card (pcscd + vpcd in a private network namespace) that both see, as a
//! card carried from one computer to the other.

use keyward_agent::account::AccountId;
use keyward_agent::account::piv;
use keyward_agent::account::secret_key::SecretKey;
use keyward_agent::vault::format;
use keyward_e2e::{Home, Run};
use std::path::PathBuf;
use std::time::Duration;
use virtual_yubikey::harness::{CardConfig, PcscEnv};

const PW: &str = "one card two devices";
const PIN: &str = "123456";

fn with_card(h: &Home, extra: &[&str]) -> Run {
    let mut args = vec!["unlock", "--password-stdin", "--pin-fd", "3", "--json"];
    args.extend(extra);
    h.run_with(&args, Some(PW.as_bytes()), Some(PIN.as_bytes()))
}

/// Device A with an account and a YubiKey enrolled on it, device B joined
/// to A's folder (with the file protector), both seeing the card.
fn two_devices_one_card(env: &PcscEnv, touch: &str) -> (Home, Home, String, String) {
    let a = Home::new();
    a.set_env(env.pcsc_env());
    let (account, sk) = a.init(PW);
    a.run_with(
        &[
            "protector",
            "add",
            "yubikey",
            "--touch",
            touch,
            "--pin-fd",
            "3",
            "--json",
            "--password-stdin",
        ],
        Some(PW.as_bytes()),
        Some(PIN.as_bytes()),
    )
    .expect_code(0);
    a.run_with(&["set", "--force", "shared"], Some(b"from a"), None)
        .expect_code(0);
    let b = Home::new();
    b.set_env(env.pcsc_env());
    b.join(
        &a.paths.data_dir,
        &sk,
        PW,
        &["--protector", "file", "--json"],
    )
    .expect_code(0);
    (a, b, account, sk)
}

/// The part device `h` writes (its pointer names it).
fn part_of(h: &Home, account: &str) -> PathBuf {
    let named = std::fs::read_to_string(h.paths.state_dir.join("vault-path")).unwrap();
    let part = PathBuf::from(named.trim());
    let name = part.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("vault-{account}.")) && name.len() == 49,
        "not a part: {name}"
    );
    part
}

#[test]
fn one_yubikey_unlocks_both_devices_and_still_does_after_a_new_secret_key_on_one() {
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let _card = env.insert_card(CardConfig::new(44_444_444)).unwrap();
    let (a, b, account, _sk) = two_devices_one_card(&env, "never");

    // The card enrolled on A opens B too (its wrap is not a device's own).
    b.ok(&["lock"]);
    let r = with_card(&b, &["--with", "yubikey"]).expect_code(0);
    assert_eq!(r.json()["protector"], "yubikey:44444444:82", "{}", r.stdout);
    assert_eq!(b.ok(&["get", "shared"]).stdout, "from a");

    // A makes a new Secret Key while B is apart (its agent stopped): A
    // re-makes the card's wrap with the new key.
    b.stop_agent();
    let new_sk = a.rotate_secret_key(PW);
    a.run_with(&["set", "--force", "after"], Some(b"the rotation"), None)
        .expect_code(0);
    let own = part_of(&b, &account);
    let before = std::fs::read(&own).unwrap();

    // B's card unlock works at once: no "enter the new Secret Key".
    let r = with_card(&b, &["--with", "yubikey"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(b.ok(&["get", "after"]).stdout, "the rotation");
    assert_ne!(
        std::fs::read(&own).unwrap(),
        before,
        "B's part was not rewritten"
    );
    // B's own file now seals the new key for the card, and B's file
    // protector took the new Secret Key: unlocking with it works too.
    b.ok(&["lock"]);
    b.unlock(PW).expect_code(0);
    assert_eq!(b.status()["protector"], "file");
    // The old Secret Key no longer opens B; the new one does.
    b.ok(&["lock"]);
    b.run_with(
        &["unlock", "--password-stdin", "--secret-key-fd", "3"],
        Some(PW.as_bytes()),
        Some(new_sk.as_bytes()),
    )
    .expect_code(0);
}

/// A card enrolled with `--touch always`: after a new Secret Key made on
/// another device, B's unlock asks the card twice (its own wrap, then the
/// newer one) and says so.
#[test]
fn a_card_that_wants_a_touch_is_touched_twice_after_a_new_secret_key_elsewhere() {
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let card = env
        .insert_card(CardConfig::new(66_666_666).touch_timeout(Duration::from_secs(15)))
        .unwrap();
    let card = std::sync::Arc::new(card);
    // Enrolling and joining touch nothing; each unlock below does.
    let (a, b, _account, _sk) = two_devices_one_card(&env, "always");
    b.stop_agent();
    a.rotate_secret_key(PW);
    let seen = card.touch_requests();
    let toucher = card.clone();
    let t = std::thread::spawn(move || {
        for n in 1..=2 {
            toucher
                .wait_for_touch_request(seen + n, Duration::from_secs(20))
                .unwrap();
            toucher.touch().unwrap();
        }
    });
    let r = with_card(&b, &["--with", "yubikey"]);
    t.join().unwrap();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("once more"), "{}", r.stderr);
    assert_eq!(b.ok(&["get", "shared"]).stdout, "from a");
}

/// Someone who can write the synced folder (but has no account key) puts
/// a part beside B's with a later password wrap and the card's wrap
/// re-made around a Secret Key of their choosing: the card opens it (it is
/// sealed to the card's public key, which the vault shows), but B's unlock
/// goes on with the key its own file seals, and the forged key is not a
/// failed attempt.
#[test]
fn a_forged_part_sealing_another_secret_key_to_the_card_does_not_stop_the_unlock() {
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let _card = env.insert_card(CardConfig::new(55_555_555)).unwrap();
    let (_a, b, account, _sk) = two_devices_one_card(&env, "never");
    b.ok(&["lock"]);
    let own = part_of(&b, &account);
    let mut parsed = format::parse(&std::fs::read(&own).unwrap()).unwrap();
    let id = AccountId::parse(&account).unwrap();
    let chosen = SecretKey::generate(&id).unwrap();
    for w in &mut parsed.vault.piv_wraps {
        let (epk, key) = piv::enroll(&w.card_pk).unwrap();
        w.epk = epk;
        w.sealed = piv::seal_secret_key(&key, &id, w.serial, w.slot, &chosen).unwrap();
    }
    for w in &mut parsed.vault.password_wraps {
        w.slot_id = format!("pw-9999-{}-{}-s", 2_000_000_000u64, "ee".repeat(4));
    }
    let forged = own
        .parent()
        .unwrap()
        .join(format!("vault-{account}.{}.kwv", "ee".repeat(16)));
    std::fs::write(&forged, parsed.vault.encode(&[7; 32])).unwrap();

    for _ in 0..4 {
        let r = with_card(&b, &["--with", "yubikey"]);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        assert_eq!(b.ok(&["get", "shared"]).stdout, "from a");
        b.ok(&["lock"]);
    }
    // Four unlocks went through, each trying the forged key first; a
    // wrong password is still one failure (not one per key tried).
    let r = b.run_with(
        &[
            "unlock",
            "--password-stdin",
            "--pin-fd",
            "3",
            "--with",
            "yubikey",
        ],
        Some(b"not the password"),
        Some(PIN.as_bytes()),
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("2 more tries"), "{}", r.stderr);
    assert!(forged.exists(), "the forged part must be left in place");
}

fn yubikey_ids(h: &Home) -> Vec<String> {
    h.ok(&["protector", "list", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .filter(|id| id.starts_with("yubikey:"))
        .collect()
}

/// `protector add yubikey` and `join --protector yubikey` with a card the
/// vault already has a key on use that key as it is (no second key on the
/// card); a card the vault does not know is enrolled.
#[test]
fn a_card_already_enrolled_is_used_as_it_is_by_protector_add_and_join() {
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let _card = env
        .insert_card(CardConfig::new(77_777_777).reader(0))
        .unwrap();
    let (a, b, _account, sk) = two_devices_one_card(&env, "never");
    let add = [
        "protector",
        "add",
        "yubikey",
        "--pin-fd",
        "3",
        "--password-stdin",
    ];
    let r = b
        .run_with(
            &[&add[..], &["--json"]].concat(),
            Some(PW.as_bytes()),
            Some(PIN.as_bytes()),
        )
        .expect_code(0);
    let j = r.json();
    assert_eq!(j["id"], "yubikey:77777777:82");
    assert!(
        j["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("already enrolled:"),
        "{j}"
    );
    let r = b
        .run_with(&add, Some(PW.as_bytes()), Some(PIN.as_bytes()))
        .expect_code(0);
    assert!(
        r.stderr.contains("already enrolled") && !r.stderr.contains("Enrolled yubikey"),
        "{r}"
    );
    assert_eq!(yubikey_ids(&b), ["yubikey:77777777:82"]);

    // C joins with the card: the key already on it.
    let folder = a.paths.data_dir.to_str().unwrap().to_owned();
    let join = |h: &Home, extra: &[&str], fds: &[(u32, &[u8])]| {
        let mut args = vec![
            "join",
            &folder,
            "--secret-key-fd",
            "3",
            "--password-stdin",
            "--json",
        ];
        args.extend(extra);
        h.run_with_fds(&args, Some(format!("{PW}\n").as_bytes()), fds)
    };
    let sk_line = format!("{sk}\n");
    let c = Home::new();
    c.set_env(env.pcsc_env());
    let r = join(&c, &["--protector", "yubikey"], &[(3, sk_line.as_bytes())]).expect_code(0);
    assert_eq!(r.json()["protector"], "yubikey:77777777:82", "{r}");
    c.ok(&["lock"]);
    let r = with_card(&c, &["--with", "yubikey"]).expect_code(0);
    assert_eq!(r.json()["protector"], "yubikey:77777777:82");
    assert_eq!(c.ok(&["get", "shared"]).stdout, "from a");

    // D joins with a second card the vault does not know: enrolled.
    let _second = env
        .insert_card(CardConfig::new(88_888_888).reader(1))
        .unwrap();
    let d = Home::new();
    d.set_env(env.pcsc_env());
    let r = join(
        &d,
        &[
            "--protector",
            "yubikey",
            "--serial",
            "88888888",
            "--pin-fd",
            "4",
        ],
        &[(3, sk_line.as_bytes()), (4, PIN.as_bytes())],
    )
    .expect_code(0);
    assert_eq!(r.json()["protector"], "yubikey:88888888:82", "{r}");
    d.ok(&["lock"]);
    let r = with_card(&d, &["--with", "yubikey:88888888"]).expect_code(0);
    assert_eq!(r.json()["protector"], "yubikey:88888888:82");

    // Card options without `--protector yubikey` are refused before
    // anything happens.
    let e = Home::new();
    let r = join(
        &e,
        &["--protector", "file", "--pin-fd", "4"],
        &[(3, sk_line.as_bytes()), (4, PIN.as_bytes())],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("go with --protector yubikey"), "{r}");
    assert_eq!(e.status()["state"], "uninitialized");
}

/// A vault of someone who knows the Master Password but has neither the
/// Secret Key nor the account key, for `account`, built from the layout of
/// `like` (its devices and protectors; no item): their own account key,
/// a password wrap (epoch 9999) that opens with the password and a Secret
/// Key of theirs, and every YubiKey wrap re-made around that Secret Key
/// (the cards' public keys are in every copy). Its MAC is right under
/// their key.
fn attackers_vault(like: &std::path::Path, account: &str) -> Vec<u8> {
    use keyward_agent::account::password::{Password, derive_km};
    use keyward_agent::account::wrap::{self, Purpose};
    let id = AccountId::parse(account).unwrap();
    let mut v = format::parse(&std::fs::read(like).unwrap()).unwrap().vault;
    let sk = SecretKey::generate(&id).unwrap();
    let key = [0x5a; 32];
    let mut w = v.password_wraps[0].clone();
    w.slot_id = format!("pw-9999-{}-{}-s", 2_000_000_000u64, "ee".repeat(4));
    let km = derive_km(&Password::new(PW).unwrap(), &w.salt16, &id, &w.params).unwrap();
    let auk = keyward_agent::account::auk(&km, &sk.derive_ks());
    w.sealed = wrap::seal(auk.expose(), Purpose::Password, &id, &w.slot_id, &key).unwrap();
    v.password_wraps = vec![w];
    for p in &mut v.piv_wraps {
        let (epk, k) = piv::enroll(&p.card_pk).unwrap();
        p.epk = epk;
        p.sealed = piv::seal_secret_key(&k, &id, p.serial, p.slot, &sk).unwrap();
    }
    v.items.clear();
    v.recovery_wraps.clear();
    v.previous_keys.clear();
    v.ssh_keys.clear();
    v.organizers = Default::default();
    v.tombstones.clear();
    v.generation += 1000;
    let mac_key = keyward_agent::account::vault_mac_key(&key, &id);
    v.encode(mac_key.expose())
}

/// Someone who knows the Master Password and can write the synced folder
/// puts a vault of their own beside B's ([`attackers_vault`]): B's card
/// opens the Secret Key they sealed to it, and that key with the password
/// opens their vault, but it proves no account key B has seen: refused.
/// B's unlock goes on with its own file, B's protectors keep the real
/// Secret Key. The same vault in place of B's own file: the card unlock is
/// refused (not counted), and the file protector's unlock makes B's file
/// again from A's.
#[test]
fn a_vault_of_someone_who_knows_the_password_is_never_taken_for_the_account() {
    let Some(env) = PcscEnv::start_or_skip() else {
        return;
    };
    let _card = env.insert_card(CardConfig::new(99_999_999)).unwrap();
    let (_a, b, account, _sk) = two_devices_one_card(&env, "never");
    b.ok(&["lock"]);
    let own = part_of(&b, &account);
    let theirs = attackers_vault(&own, &account);
    let beside = own
        .parent()
        .unwrap()
        .join(format!("vault-{account}.{}.kwv", "ee".repeat(16)));
    std::fs::write(&beside, &theirs).unwrap();
    let r = with_card(&b, &["--with", "yubikey"]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(b.ok(&["get", "shared"]).stdout, "from a");
    b.ok(&["lock"]);
    b.unlock(PW).expect_code(0);
    assert_eq!(b.status()["protector"], "file");
    assert_eq!(b.ok(&["get", "shared"]).stdout, "from a");
    std::fs::remove_file(&beside).unwrap();

    // In place of B's own file.
    b.ok(&["lock"]);
    std::fs::write(&own, &theirs).unwrap();
    let r = with_card(&b, &["--with", "yubikey"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("never seen"), "{r}");
    let r = b.unlock(PW).expect_code(0);
    assert!(!r.stderr.contains("more tries"), "{r}");
    assert_eq!(b.ok(&["get", "shared"]).stdout, "from a");
    assert_ne!(
        std::fs::read(&own).unwrap(),
        theirs,
        "B's file is still theirs"
    );
    b.ok(&["lock"]);
    let r = with_card(&b, &["--with", "yubikey"]);
    assert_eq!(r.code, 0, "{r}");
}
