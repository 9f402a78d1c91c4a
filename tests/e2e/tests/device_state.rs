#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! What belongs to this device stays out of the vault's folder (issue 17):
//! a folder that is backed up or synced to other devices holds the vault,
//! never the Secret Key. An older keyward kept the file protector's Secret
//! Key beside the vault; the agent moves it at start.

use keyward_e2e::Home;
use keyward_e2e::files_under;

const PW: &str = "device state master password";

fn secret_part(sk: &str) -> String {
    // The Secret Key's random symbols, without dashes (as a file could hold
    // them in any grouping, look for the longest group too).
    sk.split('-').max_by_key(|g| g.len()).unwrap().to_owned()
}

#[test]
fn the_vault_folder_never_holds_the_secret_key() {
    let home = Home::new();
    let (_, sk) = home.init(PW);
    assert_eq!(home.status()["protector"], "file");
    home.run_with(&["set", "a"], Some(b"1"), None)
        .expect_code(0);
    home.ok(&["lock"]);
    home.unlock(PW).expect_code(0);
    let needle = secret_part(&sk);
    assert!(needle.len() >= 5, "{sk}");
    for (path, bytes) in files_under(&home.paths.data_dir) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&sk) && !text.contains(&needle),
            "{} (in the vault's folder) holds the Secret Key",
            path.display()
        );
    }
    // It is in the state directory, 0600.
    let account = home.status()["account_id"].as_str().unwrap().to_owned();
    let file = home.paths.state_dir.join(format!("secret-key-{account}"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&file).unwrap().contains(&sk));
}

#[test]
fn a_secret_key_file_an_older_keyward_left_beside_the_vault_is_moved() {
    let home = Home::new();
    let (_, sk) = home.init(PW);
    let account = home.status()["account_id"].as_str().unwrap().to_owned();
    home.stop_agent();
    // Where keyward kept it before: the data directory.
    let new_place = home.paths.state_dir.join(format!("secret-key-{account}"));
    let old_place = home.paths.data_dir.join(format!("secret-key-{account}"));
    std::fs::rename(&new_place, &old_place).unwrap();
    // The next agent moves it, and unlocks with it.
    home.unlock(PW).expect_code(0);
    assert!(!old_place.exists(), "still beside the vault");
    assert!(std::fs::read_to_string(&new_place).unwrap().contains(&sk));
    assert_eq!(home.status()["protector"], "file");
    let log = std::fs::read_to_string(home.paths.state_dir.join("agent.log")).unwrap();
    assert!(
        log.contains("moved the file protector's Secret Key"),
        "{log}"
    );

    // A different key left beside the vault is not taken for the right one:
    // both stay, the log says so, and the unlock uses the state directory's.
    home.stop_agent();
    std::fs::write(&old_place, "K1-not-the-key\n").unwrap();
    std::fs::set_permissions(
        &old_place,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    home.unlock(PW).expect_code(0);
    assert!(old_place.exists());
    let log = std::fs::read_to_string(home.paths.state_dir.join("agent.log")).unwrap();
    assert!(
        log.contains("could not move the file protector's Secret Key"),
        "{log}"
    );
}
