#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! docs/SECURITY.md §11.1, "What each request needs", from the attacker's
//! side: a process of the user that talks to the agent directly (a raw
//! protocol client, not the CLI) sends each request without what the table
//! says it needs, and is refused with nothing changed.

use keyward_client::message::{ErrorCode, ProtectorAddRequest, Request, Response};
use keyward_client::{ClientError, Secret};
use keyward_e2e::Home;

const PW: &str = "correct horse battery staple";
const WRONG: &str = "not the password";

fn code_of(r: Result<Response, ClientError>) -> Option<ErrorCode> {
    match r {
        Err(ClientError::Agent(e)) => Some(e.code),
        Ok(_) => None,
        Err(other) => panic!("not an agent error: {other}"),
    }
}

fn vault_bytes(home: &Home) -> Vec<u8> {
    let vault = std::fs::read_dir(&home.paths.data_dir)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(".kwv"))
        .unwrap()
        .path();
    std::fs::read(vault).unwrap()
}

/// The rows of the table that need the Master Password, each as a raw
/// request carrying `password`.
fn password_rows(password: &str) -> Vec<(&'static str, Request)> {
    let pw = || Secret::from(password);
    vec![
        (
            "ProtectorAdd file",
            Request::ProtectorAdd(ProtectorAddRequest {
                kind: "file".into(),
                password: pw(),
                ..Default::default()
            }),
        ),
        (
            "ProtectorAdd keychain",
            Request::ProtectorAdd(ProtectorAddRequest {
                kind: "keychain".into(),
                password: pw(),
                ..Default::default()
            }),
        ),
        (
            "ProtectorRemove",
            Request::ProtectorRemove {
                id: "file".into(),
                password: pw(),
            },
        ),
        (
            "RecoveryCodeRevoke",
            Request::RecoveryCodeRevoke {
                id: "0".into(),
                password: pw(),
            },
        ),
        (
            "RecoveryCodeNew",
            Request::RecoveryCodeNew { password: pw() },
        ),
        (
            "SecretKeyRotate",
            Request::SecretKeyRotate { password: pw() },
        ),
        ("EmergencyKit", Request::EmergencyKit { password: pw() }),
        (
            "ChangePassword",
            Request::ChangePassword {
                old: pw(),
                new: Secret::from("a brand new password for the attacker"),
            },
        ),
    ]
}

/// An unlocked agent whose Secret Key is kept by no protector (typed at
/// each unlock): the account the finding was about, where writing the Secret
/// Key to a file would give the attacker something it could not read before.
#[test]
fn requests_that_need_the_password_are_refused_without_it_and_change_nothing() {
    let home = Home::new();
    let r = home
        .run_with(
            &[
                "init",
                "--password-fd",
                "3",
                "--protector",
                "none",
                "--json",
            ],
            None,
            Some(PW.as_bytes()),
        )
        .expect_code(0);
    assert_eq!(r.json()["protector"], "none", "{r}");
    // A recovery code and the file protector exist, so that revoking and
    // removing have something to take away.
    home.ok_pw(&["recovery-code", "new"], PW);
    let file_key = [&home.paths.data_dir, &home.paths.state_dir]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("secret-key-"));
    assert!(!file_key, "no protector was asked for");
    let codes_before = home.ok(&["recovery-code", "list", "--json"]).json();
    let before = vault_bytes(&home);

    let mut c = home.client();
    for (row, req) in password_rows(WRONG) {
        // Past the free failures the agent backs off; a refusal is then
        // code 7, still before any work.
        let got = code_of(c.call(&req));
        assert!(
            matches!(
                got,
                Some(ErrorCode::WrongCredentials | ErrorCode::BackedOff)
            ),
            "{row} with a wrong password: {got:?}"
        );
        assert_eq!(vault_bytes(&home), before, "{row} changed the vault");
    }
    // The wrong passwords were counted: the agent now backs off.
    assert!(
        home.status()["backoff_seconds"].as_u64().unwrap() > 0,
        "wrong passwords were not counted"
    );
    let leaked = [&home.paths.data_dir, &home.paths.state_dir]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("secret-key-"));
    assert!(!leaked, "the Secret Key was written to a file");
    assert_eq!(
        home.ok(&["recovery-code", "list", "--json"]).json(),
        codes_before
    );

    // Locked, none of them runs at all (not even with the right password).
    home.ok(&["lock"]);
    let mut c = home.client();
    for (row, req) in password_rows(PW) {
        let got = code_of(c.call(&req));
        assert!(
            matches!(got, Some(ErrorCode::Locked | ErrorCode::BackedOff)),
            "{row} while locked: {got:?}"
        );
    }
    assert_eq!(vault_bytes(&home), before);
}

/// The rows that need only an unlocked agent, and those that need nothing.
#[test]
fn requests_that_need_an_unlocked_agent_are_refused_while_locked() {
    let home = Home::new();
    home.init(PW);
    home.ok(&["lock"]);
    let mut c = home.client();
    let unlocked_only = [
        Request::Get { name: "x".into() },
        Request::List,
        Request::Set {
            name: "x".into(),
            value: Secret::from("v"),
        },
        Request::Remove { name: "x".into() },
    ];
    for req in &unlocked_only {
        assert_eq!(
            code_of(c.call(req)),
            Some(ErrorCode::Locked),
            "{req:?} while locked"
        );
    }
    // What needs nothing answers while locked, and gives nothing secret.
    for req in [
        Request::Status,
        Request::RecoveryCodeList,
        Request::ProtectorList,
        Request::Lock,
    ] {
        assert!(c.call(&req).is_ok(), "{req:?} while locked");
    }
    // Recover needs a recovery code: a well-formed wrong one is refused
    // and counted.
    let other = Home::new();
    other.init("other");
    let code = other
        .ok_pw(&["recovery-code", "new", "--json"], "other")
        .json()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = code_of(c.call(&Request::Recover {
        code: Secret::from(code.as_str()),
        new_password: Secret::from("an attacker's new password"),
    }));
    assert_eq!(got, Some(ErrorCode::WrongRecoveryCode));
    // Unlock needs the password: a wrong one is counted.
    let got = code_of(
        c.call(&Request::Unlock(keyward_client::message::UnlockRequest {
            password: Secret::from(WRONG),
            ..Default::default()
        })),
    );
    assert_eq!(got, Some(ErrorCode::WrongCredentials));
    // Init needs no account: refused on this one.
    let got = code_of(c.call(&Request::Init(keyward_client::message::InitRequest {
        password: Secret::from("another account"),
        protector: "file".into(),
    })));
    assert_eq!(got, Some(ErrorCode::Exists));
    // A PromptReply needs a prompt in progress.
    let got = code_of(c.call(&Request::PromptReply { answer: None }));
    assert_eq!(got, Some(ErrorCode::BadRequest));
}
