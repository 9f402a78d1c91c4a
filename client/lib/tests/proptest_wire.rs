#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests of the wire protocol: every request and response variant
//! with arbitrary fields round-trips through `encode`/`decode`, payloads are
//! prefix-free and strict, the field codec round-trips any sequence of
//! fields, and `FrameBuf` splits any stream of frames, read in any chunks.
//! (The fuzz targets in tests/fuzz check the other direction: arbitrary bytes.)

use keyward_client::frame::{FrameBuf, FrameError, MAX_FRAME};
use keyward_client::message::{
    DeviceInfo, InitRequest, OrganizerInfo, ProtectorAddRequest, UnlockRequest,
};
use keyward_client::wire::{DecodeError, Reader, Writer};
use keyward_client::{
    AgentError, AgentState, ErrorCode, ItemInfo, PromptKind, ProtectorInfo, RecoveryCodeInfo,
    Request, Response, Secret, StatusInfo,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use std::io::Read;

// ---------------------------------------------------------------- strategies

fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..24).prop_map(String::from_iter)
}

fn secret() -> impl Strategy<Value = Secret> {
    vec(any::<u8>(), 0..48).prop_map(Secret::new)
}

fn opt_secret() -> impl Strategy<Value = Option<Secret>> {
    option::of(secret())
}

/// A timestamp where 0 means "never" on the wire: `Some(0)` is not
/// representable (see `lossy_fields_are_documented`).
fn last_used() -> impl Strategy<Value = Option<u64>> {
    option::of(1..=u64::MAX)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u16>(), text()).prop_map(|(protocol, client)| Request::Hello { protocol, client }),
        Just(Request::Status),
        (secret(), text()).prop_map(|(password, protector)| Request::Init(InitRequest {
            password,
            protector
        })),
        (secret(), opt_secret(), opt_secret(), option::of(text())).prop_map(
            |(password, secret_key, pin, with)| Request::Unlock(UnlockRequest {
                password,
                secret_key,
                pin,
                with
            })
        ),
        Just(Request::Lock),
        text().prop_map(|name| Request::Get { name }),
        (text(), secret()).prop_map(|(name, value)| Request::Set { name, value }),
        Just(Request::List),
        text().prop_map(|name| Request::Remove { name }),
        (secret(), secret()).prop_map(|(old, new)| Request::ChangePassword { old, new }),
        secret().prop_map(|password| Request::RecoveryCodeNew { password }),
        Just(Request::RecoveryCodeList),
        (text(), secret()).prop_map(|(id, password)| Request::RecoveryCodeRevoke { id, password }),
        (secret(), secret())
            .prop_map(|(code, new_password)| Request::Recover { code, new_password }),
        secret().prop_map(|password| Request::SecretKeyRotate { password }),
        secret().prop_map(|password| Request::EmergencyKit { password }),
        (
            text(),
            option::of(any::<u32>()),
            option::of(any::<u8>()),
            option::of(text()),
            opt_secret(),
            opt_secret(),
            secret()
        )
            .prop_map(
                |(kind, serial, slot, touch, pin, management_key, password)| {
                    Request::ProtectorAdd(ProtectorAddRequest {
                        kind,
                        serial,
                        slot,
                        touch,
                        pin,
                        management_key,
                        password,
                    })
                }
            ),
        Just(Request::ProtectorList),
        (text(), secret()).prop_map(|(id, password)| Request::ProtectorRemove { id, password }),
        Just(Request::Shutdown),
        opt_secret().prop_map(|answer| Request::PromptReply { answer }),
        secret().prop_map(|password| Request::CheckPassword { password }),
        secret().prop_map(|code| Request::CheckRecoveryCode { code }),
        (text(), any::<bool>()).prop_map(|(out, force)| Request::Backup { out, force }),
        (text(), any::<bool>()).prop_map(|(path, older)| Request::Restore { path, older }),
        (text(), text()).prop_map(|(old, new)| Request::Rename { old, new }),
        Just(Request::OrganizerCreate),
        Just(Request::OrganizerShow),
        text().prop_map(|recipient| Request::OrganizerCheck { recipient }),
        (text(), text(), secret()).prop_map(|(recipient, name, password)| {
            Request::OrganizerAdd {
                recipient,
                name,
                password,
            }
        }),
        Just(Request::OrganizerList),
        (text(), secret())
            .prop_map(|(which, password)| Request::OrganizerRemove { which, password }),
        (text(), any::<u32>(), secret()).prop_map(|(vault, expires_hours, password)| {
            Request::OrganizerRecover {
                vault,
                expires_hours,
                password,
            }
        }),
        (text(), secret(), secret()).prop_map(|(grant, code, new_password)| {
            Request::RecoverWithGrant {
                grant,
                code,
                new_password,
            }
        }),
        (
            text(),
            option::of(any::<u32>()),
            option::of(any::<u8>()),
            option::of(text()),
            opt_secret(),
            text()
        )
            .prop_map(|(name, serial, slot, touch, pin, comment)| {
                Request::SshGenerateCard {
                    name,
                    serial,
                    slot,
                    touch,
                    pin,
                    comment,
                }
            }),
        (
            option::of(any::<u32>()),
            option::of(any::<u8>()),
            opt_secret()
        )
            .prop_map(|(serial, slot, pin)| Request::OrganizerCreateCard {
                serial,
                slot,
                pin
            }),
        (text(), any::<u32>(), opt_secret()).prop_map(|(vault, expires_hours, pin)| {
            Request::OrganizerRecoverCard {
                vault,
                expires_hours,
                pin,
            }
        }),
        (text(), secret(), secret(), text()).prop_map(|(path, password, secret_key, protector)| {
            Request::Join {
                path,
                password,
                secret_key,
                protector,
            }
        }),
        Just(Request::Sync),
        (text(), text()).prop_map(|(ours, theirs)| Request::MergeFiles { ours, theirs }),
        Just(Request::DeviceList),
        (text(), text()).prop_map(|(device, name)| Request::DeviceRename { device, name }),
        text().prop_map(|device| Request::DeviceRemove { device }),
        secret().prop_map(|password| Request::Rekey { password }),
    ]
}

fn state() -> impl Strategy<Value = AgentState> {
    prop_oneof![
        Just(AgentState::Uninitialized),
        Just(AgentState::Locked),
        Just(AgentState::Unlocked),
    ]
}

fn prompt_kind() -> impl Strategy<Value = PromptKind> {
    prop_oneof![
        Just(PromptKind::Pin),
        Just(PromptKind::ManagementKey),
        Just(PromptKind::NewPin),
        Just(PromptKind::SecretKey),
        Just(PromptKind::Confirm),
    ]
}

/// A listing's entries.
fn items() -> impl Strategy<Value = Vec<ItemInfo>> {
    vec(
        (text(), any::<u64>(), any::<u64>()).prop_map(|(name, created, modified)| ItemInfo {
            name,
            created,
            modified,
        }),
        0..4,
    )
}

fn status() -> impl Strategy<Value = StatusInfo> {
    (
        state(),
        option::of(text()),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        option::of(text()),
        any::<u64>(),
        text(),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                state,
                account_id,
                idle_lock_in,
                lifetime_left,
                protector,
                backoff_secs,
                agent_version,
                pid,
                keys_mlocked,
            )| StatusInfo {
                state,
                account_id,
                idle_lock_in,
                lifetime_left,
                protector,
                backoff_secs,
                agent_version,
                pid,
                keys_mlocked,
            },
        )
}

fn response() -> impl Strategy<Value = Response> {
    let notes = || vec(text(), 0..4);
    prop_oneof![
        (any::<u16>(), text(), any::<u32>()).prop_map(|(protocol, agent_version, pid)| {
            Response::HelloOk {
                protocol,
                agent_version,
                pid,
            }
        }),
        Just(Response::Ok),
        status().prop_map(Response::Status),
        secret().prop_map(Response::Value),
        items().prop_map(Response::Items),
        items().prop_map(Response::ItemsPart),
        (text(), secret(), text(), text()).prop_map(
            |(account_id, secret_key, protector, vault_path)| Response::Created {
                account_id,
                secret_key,
                protector,
                vault_path,
            }
        ),
        (text(), text(), any::<u64>(), any::<u64>(), notes()).prop_map(
            |(account_id, protector, idle_lock_secs, lifetime_secs, notes)| Response::Unlocked {
                account_id,
                protector,
                idle_lock_secs,
                lifetime_secs,
                notes,
            }
        ),
        (text(), secret()).prop_map(|(id, code)| Response::RecoveryCode { id, code }),
        vec(
            (text(), any::<u64>(), last_used()).prop_map(|(id, created, last_used)| {
                RecoveryCodeInfo {
                    id,
                    created,
                    last_used,
                }
            }),
            0..4
        )
        .prop_map(Response::RecoveryCodes),
        (secret(), notes())
            .prop_map(|(secret_key, notes)| Response::NewSecretKey { secret_key, notes }),
        (text(), secret(), text()).prop_map(|(account_id, secret_key, vault_path)| {
            Response::Kit {
                account_id,
                secret_key,
                vault_path,
            }
        }),
        vec(
            (
                text(),
                text(),
                text(),
                any::<u64>(),
                last_used(),
                any::<bool>()
            )
                .prop_map(|(id, kind, details, added, last_used, stale)| {
                    ProtectorInfo {
                        id,
                        kind,
                        details,
                        added,
                        last_used,
                        stale,
                    }
                }),
            0..4
        )
        .prop_map(Response::Protectors),
        (text(), notes()).prop_map(|(id, notes)| Response::ProtectorAdded { id, notes }),
        (text(), any::<u64>(), any::<u64>()).prop_map(|(path, generation, items)| {
            Response::BackedUp {
                path,
                generation,
                items,
            }
        }),
        notes().prop_map(|notes| Response::Restored { notes }),
        (text(), text()).prop_map(|(recipient, fingerprint)| Response::OrganizerKey {
            recipient,
            fingerprint
        }),
        (text(), text(), any::<u32>(), any::<u8>()).prop_map(
            |(recipient, fingerprint, serial, slot)| Response::OrganizerCardKey {
                recipient,
                fingerprint,
                serial,
                slot,
            }
        ),
        vec(
            (text(), text(), any::<u64>(), any::<bool>()).prop_map(
                |(name, fingerprint, added, required)| OrganizerInfo {
                    name,
                    fingerprint,
                    added,
                    required,
                }
            ),
            0..4
        )
        .prop_map(Response::Organizers),
        (text(), text(), notes()).prop_map(|(fingerprint, name, notes)| {
            Response::OrganizerChanged {
                fingerprint,
                name,
                notes,
            }
        }),
        (text(), text(), any::<u64>(), secret(), text()).prop_map(
            |(account_id, grant_id, expires, code, grant)| Response::GrantMade {
                account_id,
                grant_id,
                expires,
                code,
                grant,
            }
        ),
        (notes(), notes()).prop_map(|(notes, refused)| Response::Synced { notes, refused }),
        (notes(), notes()).prop_map(|(revoked_codes, notes)| Response::Rekeyed {
            revoked_codes,
            notes
        }),
        vec(
            (text(), text(), any::<u64>(), any::<bool>(), notes()).prop_map(
                |(id, name, added, this, protectors)| DeviceInfo {
                    id,
                    name,
                    added,
                    this,
                    protectors,
                }
            ),
            0..3
        )
        .prop_map(Response::Devices),
        (prompt_kind(), text()).prop_map(|(kind, message)| Response::Prompt { kind, message }),
        text().prop_map(|message| Response::Notice { message }),
        // Codes come from the wire value, so a known code is never `Unknown`.
        (any::<u16>(), text(), any::<u64>(), option::of(any::<u8>())).prop_map(
            |(code, message, retry_after_secs, tries_left)| Response::Error(AgentError {
                code: ErrorCode::from_u16(code),
                message,
                retry_after_secs,
                tries_left,
            })
        ),
    ]
}

/// Checks a whole frame: its length prefix, that the payload decodes to
/// `expected` with `decode`, that no strict prefix decodes, and that a
/// trailing byte is refused.
fn check_frame<T: PartialEq + std::fmt::Debug>(
    frame: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
    expected: &T,
) -> Result<(), TestCaseError> {
    prop_assert!(frame.len() >= 5);
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    prop_assert_eq!(len, frame.len() - 4);
    let payload = &frame[4..];
    prop_assert_eq!(&decode(payload)?, expected);
    for n in 0..payload.len() {
        prop_assert!(
            decode(&payload[..n]).is_err(),
            "prefix of {} bytes decoded",
            n
        );
    }
    let mut longer = payload.to_vec();
    longer.push(0);
    prop_assert_eq!(decode(&longer).err(), Some(DecodeError::Trailing(1)));
    Ok(())
}

// ---------------------------------------------------------------- messages

proptest! {
    #[test]
    fn every_request_round_trips(req in request()) {
        let (frame, _) = req.encode();
        check_frame(&frame, Request::decode, &req)?;
        // Canonical: re-encoding the decoded request gives the same bytes.
        prop_assert_eq!(Request::decode(&frame[4..])?.encode().0, frame);
    }

    #[test]
    fn every_response_round_trips(resp in response()) {
        let (frame, _) = resp.encode();
        check_frame(&frame, Response::decode, &resp)?;
        prop_assert_eq!(Response::decode(&frame[4..])?.encode().0, frame);
    }

    #[test]
    fn secrets_are_flagged_and_never_in_debug(req in request(), resp in response()) {
        let (_, secret) = req.encode();
        let has_secret = match &req {
            Request::PromptReply { answer } => answer.is_some(),
            Request::SshGenerateCard { pin, .. }
            | Request::OrganizerCreateCard { pin, .. }
            | Request::OrganizerRecoverCard { pin, .. } => pin.is_some(),
            Request::ProtectorAdd(_) | Request::RecoveryCodeRevoke { .. }
            | Request::ProtectorRemove { .. }
            | Request::CheckPassword { .. } | Request::CheckRecoveryCode { .. }
            | Request::Init(_) | Request::Unlock(_) | Request::Set { .. }
            | Request::ChangePassword { .. } | Request::RecoveryCodeNew { .. }
            | Request::Recover { .. } | Request::SecretKeyRotate { .. }
            | Request::EmergencyKit { .. }
            | Request::OrganizerAdd { .. } | Request::OrganizerRemove { .. }
            | Request::OrganizerRecover { .. } | Request::RecoverWithGrant { .. }
            | Request::Join { .. } | Request::Rekey { .. } => true,
            _ => false,
        };
        prop_assert_eq!(secret, has_secret, "{:?}", req);
        let (_, secret) = resp.encode();
        let has_secret = matches!(
            resp,
            Response::Value(_) | Response::Created { .. } | Response::RecoveryCode { .. }
                | Response::NewSecretKey { .. } | Response::Kit { .. }
                | Response::GrantMade { .. }
        );
        prop_assert_eq!(secret, has_secret, "{:?}", resp);
        // A secret of 8+ bytes of marker text never shows in Debug output.
        let marker = Secret::from("\u{1F511}secret-marker\u{1F511}");
        let d = format!("{:?}", Request::Set { name: "n".into(), value: marker.clone() });
        prop_assert!(!d.contains("secret-marker"));
        let d = format!("{:?}", Response::Value(marker));
        prop_assert!(!d.contains("secret-marker"));
    }

    /// The wire carries "never" as 0 and error codes as numbers: these two
    /// value-level aliases are the only non-injective spots of the codec
    /// (byte-level it is canonical, see the fuzz targets).
    #[test]
    fn lossy_fields_are_documented(id in text(), created in any::<u64>(), code in 1u16..=21) {
        let r = Response::RecoveryCodes(vec![RecoveryCodeInfo { id: id.clone(), created, last_used: Some(0) }]);
        let back = Response::decode(&r.encode().0[4..])?;
        prop_assert_eq!(back, Response::RecoveryCodes(vec![RecoveryCodeInfo { id, created, last_used: None }]));
        let e = Response::Error(AgentError::new(ErrorCode::Unknown(code), "m"));
        let back = Response::decode(&e.encode().0[4..])?;
        prop_assert_eq!(back, Response::Error(AgentError::new(ErrorCode::from_u16(code), "m")));
        prop_assert!(!matches!(ErrorCode::from_u16(code), ErrorCode::Unknown(_)));
    }

    #[test]
    fn error_codes_round_trip(v in any::<u16>()) {
        prop_assert_eq!(ErrorCode::from_u16(v).to_u16(), v);
    }

    #[test]
    fn arbitrary_payloads_never_panic(bytes in vec(any::<u8>(), 0..64)) {
        if let Ok(r) = Request::decode(&bytes) {
            prop_assert_eq!(&r.encode().0[4..], &bytes[..]);
        }
        if let Ok(r) = Response::decode(&bytes) {
            prop_assert_eq!(&r.encode().0[4..], &bytes[..]);
        }
    }
}

// ---------------------------------------------------------------- field codec

#[derive(Debug, Clone, PartialEq)]
enum Field {
    U8(u8),
    Bool(bool),
    U16(u16),
    U32(u32),
    U64(u64),
    Bytes(Vec<u8>),
    Str(String),
    Secret(Vec<u8>),
    Opt(Option<u32>),
    List(Vec<String>),
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        any::<u8>().prop_map(Field::U8),
        any::<bool>().prop_map(Field::Bool),
        any::<u16>().prop_map(Field::U16),
        any::<u32>().prop_map(Field::U32),
        any::<u64>().prop_map(Field::U64),
        vec(any::<u8>(), 0..40).prop_map(Field::Bytes),
        text().prop_map(Field::Str),
        vec(any::<u8>(), 0..40).prop_map(Field::Secret),
        option::of(any::<u32>()).prop_map(Field::Opt),
        vec(text(), 0..5).prop_map(Field::List),
    ]
}

fn write_field(w: &mut Writer, f: &Field) {
    match f {
        Field::U8(v) => w.u8(*v),
        Field::Bool(v) => w.bool(*v),
        Field::U16(v) => w.u16(*v),
        Field::U32(v) => w.u32(*v),
        Field::U64(v) => w.u64(*v),
        Field::Bytes(v) => w.bytes(v),
        Field::Str(v) => w.str(v),
        Field::Secret(v) => w.secret(&Secret::from_slice(v)),
        Field::Opt(v) => w.opt(v.as_ref(), |w, x| w.u32(*x)),
        Field::List(v) => w.list(v, |w, s| w.str(s)),
    }
}

fn read_field(r: &mut Reader<'_>, like: &Field) -> Result<Field, DecodeError> {
    Ok(match like {
        Field::U8(_) => Field::U8(r.u8("u8")?),
        Field::Bool(_) => Field::Bool(r.bool("bool")?),
        Field::U16(_) => Field::U16(r.u16("u16")?),
        Field::U32(_) => Field::U32(r.u32("u32")?),
        Field::U64(_) => Field::U64(r.u64("u64")?),
        Field::Bytes(_) => Field::Bytes(r.bytes("bytes")?.to_vec()),
        Field::Str(_) => Field::Str(r.str("str")?),
        Field::Secret(_) => Field::Secret(r.secret("secret")?.expose().to_vec()),
        Field::Opt(_) => Field::Opt(r.opt("opt", |r| r.u32("opt"))?),
        Field::List(_) => Field::List(r.list("list", 4, |r| r.str("list"))?),
    })
}

proptest! {
    #[test]
    fn field_sequences_round_trip(tag in any::<u8>(), fields in vec(field(), 0..12)) {
        let mut w = Writer::new(tag);
        for f in &fields {
            write_field(&mut w, f);
        }
        let secret = fields.iter().any(|f| matches!(f, Field::Secret(_)));
        let (frame, flagged) = w.finish();
        prop_assert_eq!(flagged, secret);
        prop_assert_eq!(u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize, frame.len() - 4);
        let payload = &frame[4..];
        let mut r = Reader::new(payload);
        prop_assert_eq!(r.u8("tag")?, tag);
        for f in &fields {
            prop_assert_eq!(&read_field(&mut r, f)?, f);
        }
        r.end()?;
        // Every strict prefix fails somewhere.
        for n in 0..payload.len() {
            let mut r = Reader::new(&payload[..n]);
            let res = (|| {
                r.u8("tag")?;
                for f in &fields {
                    read_field(&mut r, f)?;
                }
                r.end()
            })();
            prop_assert!(res.is_err(), "prefix of {} bytes read", n);
        }
    }

    /// A list count that cannot fit in what is left is refused before any
    /// allocation, whatever the item size.
    #[test]
    fn absurd_list_counts_are_refused(count in 1u32.., min_item in 1usize..64, rest in vec(any::<u8>(), 0..64)) {
        prop_assume!((count as usize).saturating_mul(min_item) > rest.len());
        let mut buf = count.to_be_bytes().to_vec();
        buf.extend(&rest);
        let mut r = Reader::new(&buf);
        prop_assert_eq!(r.list("x", min_item, |r| r.u8("x")), Err(DecodeError::Short("x")));
    }

    #[test]
    fn invalid_bools_and_option_tags(b in 2u8..) {
        prop_assert_eq!(Reader::new(&[b]).bool("b"), Err(DecodeError::Invalid("b")));
        prop_assert_eq!(Reader::new(&[b, 0, 0, 0, 0]).opt("o", |r| r.u32("o")), Err(DecodeError::Invalid("o")));
    }
}

// ---------------------------------------------------------------- frames

/// Hands out a stream in chunks of the given sizes (cycled).
struct Chunks {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    turn: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = self.sizes[self.turn % self.sizes.len()];
        self.turn += 1;
        let n = want.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..300),
        1 => (0usize..=MAX_FRAME, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn frames_split_in_any_chunks(
        payloads in vec(payload(), 0..12),
        sizes in vec(1usize..5000, 1..8),
        tail in vec(any::<u8>(), 0..4),
    ) {
        let mut data = Vec::new();
        for p in &payloads {
            data.extend((p.len() as u32).to_be_bytes());
            data.extend(p);
        }
        // A partial header or frame at the end is a truncation.
        data.extend(&tail);
        let mut src = Chunks { data, pos: 0, sizes, turn: 0 };
        let mut fb = FrameBuf::new();
        for p in &payloads {
            prop_assert_eq!(fb.read_frame(&mut src).unwrap(), &p[..]);
        }
        let end = fb.read_frame(&mut src);
        if tail.is_empty() {
            prop_assert!(matches!(end, Err(FrameError::Closed)));
        } else {
            prop_assert!(matches!(end, Err(FrameError::Truncated)));
        }
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header(len in (MAX_FRAME as u32 + 1)..) {
        let mut fb = FrameBuf::new();
        let header = len.to_be_bytes();
        prop_assert!(matches!(fb.read_frame(&mut &header[..]), Err(FrameError::TooLarge(n)) if n == len));
    }
}
