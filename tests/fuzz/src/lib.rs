//! Helpers shared by keyward's fuzz targets (and by `examples/seed.rs`):
//! independent reference models written from `docs/PROTOCOL.md`,
//! `docs/SECURITY.md` and ISO 7816-4, against which the real parsers are
//! checked, and small tools to turn fuzz bytes into structured inputs.

use keyward_client::{ItemInfo, Request, Response, Secret};

// ------------------------------------------------------------------ bytes

/// A cursor over fuzz input that never fails: past the end it yields zeros.
#[derive(Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// Reads `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }
    /// Whether everything was consumed.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// One byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    /// Big-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }
}

/// A tiny deterministic PRNG (xorshift64*), for chunk sizes and choices
/// derived from a fuzz byte.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded; any seed works.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

// ------------------------------------------------------------------ frames

/// How a byte stream must split into frames (PROTOCOL.md §2), as the
/// reference for `FrameBuf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The stream ends exactly after the last frame.
    Closed,
    /// It ends inside a frame (or inside a length prefix).
    Truncated,
    /// A length prefix announces more than `MAX_FRAME` bytes.
    TooLarge(u32),
}

/// The payload ranges of the complete frames of `stream`, and how it ends.
pub fn model_frames(stream: &[u8], max_frame: usize) -> (Vec<std::ops::Range<usize>>, StreamEnd) {
    let mut frames = Vec::new();
    let mut pos = 0usize;
    loop {
        let left = stream.len() - pos;
        if left == 0 {
            return (frames, StreamEnd::Closed);
        }
        if left < 4 {
            return (frames, StreamEnd::Truncated);
        }
        let len = u32::from_be_bytes([
            stream[pos],
            stream[pos + 1],
            stream[pos + 2],
            stream[pos + 3],
        ]);
        if len as usize > max_frame {
            return (frames, StreamEnd::TooLarge(len));
        }
        if left < 4 + len as usize {
            return (frames, StreamEnd::Truncated);
        }
        frames.push(pos + 4..pos + 4 + len as usize);
        pos += 4 + len as usize;
    }
}

/// A reader that hands out a stream in pseudo-random chunks of at most `max`
/// bytes, and counts what it handed out.
#[derive(Debug)]
pub struct Chunked<'a> {
    data: &'a [u8],
    pos: usize,
    rng: Rng,
    max: usize,
}

impl<'a> Chunked<'a> {
    /// Chunks of 1..=`max` bytes.
    pub fn new(data: &'a [u8], seed: u64, max: usize) -> Self {
        Self {
            data,
            pos: 0,
            rng: Rng::new(seed),
            max: max.max(1),
        }
    }
    /// Bytes handed out so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }
}

impl std::io::Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.data.len() - self.pos;
        let n = (1 + self.rng.below(self.max)).min(left).min(buf.len());
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

// ------------------------------------------------------------------ messages

/// Whether a request carries a secret field (its frame must then be flagged
/// for zeroization by `encode`).
pub fn request_has_secret(r: &Request) -> bool {
    match r {
        Request::Init(_)
        | Request::Unlock(_)
        | Request::Set { .. }
        | Request::ChangePassword { .. }
        | Request::RecoveryCodeNew { .. }
        | Request::Recover { .. }
        | Request::SecretKeyRotate { .. }
        | Request::EmergencyKit { .. }
        | Request::ProtectorAdd(_)
        | Request::RecoveryCodeRevoke { .. }
        | Request::ProtectorRemove { .. }
        | Request::CheckPassword { .. }
        | Request::CheckRecoveryCode { .. }
        | Request::OrganizerAdd { .. }
        | Request::OrganizerRemove { .. }
        | Request::OrganizerRecover { .. }
        | Request::RecoverWithGrant { .. }
        | Request::SshImport { .. }
        | Request::Join { .. }
        | Request::Rekey { .. } => true,
        Request::PromptReply { answer } => answer.is_some(),
        // Its one secret, the PIN, is optional: the frame is secret when it is there.
        Request::SshGenerateCard { pin, .. }
        | Request::OrganizerCreateCard { pin, .. }
        | Request::OrganizerRecoverCard { pin, .. } => pin.is_some(),
        Request::Hello { .. }
        | Request::Status
        | Request::Lock
        | Request::Get { .. }
        | Request::List
        | Request::Remove { .. }
        | Request::RecoveryCodeList
        | Request::ProtectorList
        | Request::Backup { .. }
        | Request::Restore { .. }
        | Request::Rename { .. }
        | Request::Shutdown
        | Request::SessionEnd { .. }
        | Request::OrganizerCreate
        | Request::OrganizerShow
        | Request::OrganizerCheck { .. }
        | Request::OrganizerList
        | Request::SshGenerate { .. }
        | Request::SshList
        | Request::SshRemove { .. }
        | Request::SshApprove { .. }
        | Request::Sync
        | Request::MergeFiles { .. }
        | Request::DeviceList
        | Request::DeviceRename { .. }
        | Request::DeviceRemove { .. } => false,
    }
}

/// Whether a response carries a secret field.
pub fn response_has_secret(r: &Response) -> bool {
    match r {
        Response::Value(_)
        | Response::Created { .. }
        | Response::RecoveryCode { .. }
        | Response::NewSecretKey { .. }
        | Response::Kit { .. }
        | Response::GrantMade { .. } => true,
        Response::HelloOk { .. }
        | Response::Ok
        | Response::Status(_)
        | Response::Items(_)
        | Response::ItemsPart(_)
        | Response::Unlocked { .. }
        | Response::RecoveryCodes(_)
        | Response::Protectors(_)
        | Response::ProtectorAdded { .. }
        | Response::Prompt { .. }
        | Response::Notice { .. }
        | Response::StillInUse { .. }
        | Response::BackedUp { .. }
        | Response::Restored { .. }
        | Response::OrganizerKey { .. }
        | Response::OrganizerCardKey { .. }
        | Response::Organizers(_)
        | Response::SshKeys(_)
        | Response::OrganizerChanged { .. }
        | Response::Synced { .. }
        | Response::Devices(_)
        | Response::Rekeyed { .. }
        | Response::Error(_) => false,
    }
}

/// The payloads of `stream`, which must be whole frames and nothing else
/// (PROTOCOL.md §2, by [`model_frames`]), each within `max_frame`.
pub fn whole_frames(stream: &[u8], max_frame: usize) -> Vec<&[u8]> {
    let (frames, end) = model_frames(stream, max_frame);
    assert_eq!(end, StreamEnd::Closed, "not a sequence of whole frames");
    frames.into_iter().map(|r| &stream[r]).collect()
}

/// Bytes an item takes in a listing frame (PROTOCOL.md §6: `name: str`,
/// `created: u64`, `modified: u64`).
pub fn item_wire_len(i: &ItemInfo) -> usize {
    4 + i.name.len() + 8 + 8
}

/// Checks the frames a listing (`Items`, or `ItemsPart` when `part`) was
/// encoded to, against PROTOCOL.md §6: every payload within `max_frame`;
/// all frames but the last are `ItemsPart`, the last is `Items` (or
/// `ItemsPart` for a part); together they hold `items` in order; frames are
/// filled greedily (the first item of a frame would not have fitted in the
/// one before); a listing that fits is exactly one frame.
pub fn check_listing_frames(items: &[ItemInfo], part: bool, stream: &[u8], max_frame: usize) {
    let payloads = whole_frames(stream, max_frame);
    assert!(!payloads.is_empty());
    let total = 5 + items.iter().map(item_wire_len).sum::<usize>();
    if total <= max_frame {
        assert_eq!(payloads.len(), 1, "a listing that fits is one frame");
    }
    let mut all = Vec::new();
    let mut previous: Option<usize> = None;
    for (k, p) in payloads.iter().enumerate() {
        let last = k + 1 == payloads.len();
        let v = match Response::decode(p) {
            Ok(Response::ItemsPart(v)) if !last || part => v,
            Ok(Response::Items(v)) if last && !part => v,
            other => panic!("frame {k} of {} is {other:?}", payloads.len()),
        };
        if let (Some(size), Some(first)) = (previous, v.first()) {
            assert!(
                size + item_wire_len(first) > max_frame,
                "frame {k}: its first item fitted in the frame before"
            );
        }
        previous = Some(p.len());
        all.extend(v);
    }
    assert!(all == items, "the frames do not hold the listing");
}

/// The same secret length, other bytes: if `Debug` showed any secret byte,
/// the output for the blinded message would differ.
fn blind(s: &Secret) -> Secret {
    let other: Vec<u8> = s.expose().iter().map(|b| b ^ 0x5A).collect();
    Secret::new(other)
}

fn blind_opt(s: &Option<Secret>) -> Option<Secret> {
    s.as_ref().map(blind)
}

/// `r` with every secret replaced by different bytes of the same length.
pub fn blind_request(r: &Request) -> Request {
    let mut r = r.clone();
    match &mut r {
        Request::Init(i) => i.password = blind(&i.password),
        Request::Unlock(u) => {
            u.password = blind(&u.password);
            u.secret_key = blind_opt(&u.secret_key);
            u.pin = blind_opt(&u.pin);
        }
        Request::Set { value, .. } => *value = blind(value),
        Request::ChangePassword { old, new } => {
            *old = blind(old);
            *new = blind(new);
        }
        Request::RecoveryCodeNew { password }
        | Request::SecretKeyRotate { password }
        | Request::EmergencyKit { password }
        | Request::RecoveryCodeRevoke { password, .. }
        | Request::ProtectorRemove { password, .. }
        | Request::CheckPassword { password }
        | Request::OrganizerAdd { password, .. }
        | Request::OrganizerRemove { password, .. }
        | Request::OrganizerRecover { password, .. } => *password = blind(password),
        Request::RecoverWithGrant {
            code, new_password, ..
        } => {
            *code = blind(code);
            *new_password = blind(new_password);
        }
        Request::CheckRecoveryCode { code } => *code = blind(code),
        Request::Recover { code, new_password } => {
            *code = blind(code);
            *new_password = blind(new_password);
        }
        Request::ProtectorAdd(p) => {
            p.pin = blind_opt(&p.pin);
            p.management_key = blind_opt(&p.management_key);
            p.password = blind(&p.password);
        }
        Request::Join {
            password,
            secret_key,
            ..
        } => {
            *password = blind(password);
            *secret_key = blind(secret_key);
        }
        Request::Rekey { password } => *password = blind(password),
        Request::PromptReply { answer } => *answer = blind_opt(answer),
        Request::SshGenerateCard { pin, .. }
        | Request::OrganizerCreateCard { pin, .. }
        | Request::OrganizerRecoverCard { pin, .. } => *pin = blind_opt(pin),
        _ => {}
    }
    r
}

/// `r` with every secret replaced by different bytes of the same length.
pub fn blind_response(r: &Response) -> Response {
    let mut r = r.clone();
    match &mut r {
        Response::Value(v) => *v = blind(v),
        Response::Created { secret_key, .. }
        | Response::NewSecretKey { secret_key, .. }
        | Response::Kit { secret_key, .. } => *secret_key = blind(secret_key),
        Response::RecoveryCode { code, .. } | Response::GrantMade { code, .. } => {
            *code = blind(code)
        }
        _ => {}
    }
    r
}

// ------------------------------------------------------------------ typed text

/// The dash-like characters that Secret Key and recovery-code parsing ignore
/// (SECURITY.md: `-`, `_`, U+2010–U+2015, U+2212).
pub fn is_dash(c: char) -> bool {
    matches!(c, '-' | '_' | '\u{2010}'..='\u{2015}' | '\u{2212}')
}

/// SECURITY.md's Secret Key normalisation: drop white space and dashes,
/// upper-case ASCII, leave other characters as they are.
pub fn normalise_secret_key(input: &str) -> Vec<char> {
    input
        .chars()
        .filter(|c| !c.is_whitespace() && !is_dash(*c))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// SECURITY.md's recovery-code normalisation: drop white space and dashes,
/// map `O`/`o` → `0` and `I`/`i`/`L`/`l` → `1`, upper-case ASCII; drop a
/// leading `RC1` unless exactly 52 symbols remain.
pub fn normalise_recovery_code(input: &str) -> Vec<char> {
    let syms: Vec<char> = input
        .chars()
        .filter(|c| !c.is_whitespace() && !is_dash(*c))
        .map(|c| match c {
            'O' | 'o' => '0',
            'I' | 'i' | 'L' | 'l' => '1',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    if syms.len() != 52 && syms.starts_with(&['R', 'C', '1']) {
        syms[3..].to_vec()
    } else {
        syms
    }
}

/// Retypes `shown` (a displayed key or code) the way a person might: lower
/// case, other separators (spaces, tabs, en dashes, none), surrounding white
/// space and, with `aliases`, Crockford's look-alikes for 0 and 1. Every
/// choice comes from `b`.
pub fn retype(shown: &str, b: &mut Bytes<'_>, aliases: bool) -> String {
    const SEPARATORS: [&str; 8] = ["-", " ", "", "\u{2013}", "_", "\t", "  ", " - "];
    let mut out = String::new();
    if b.u8() & 1 == 1 {
        out.push_str(" \t");
    }
    for c in shown.chars() {
        let d = b.u8();
        if c == '-' {
            out.push_str(SEPARATORS[usize::from(d) % SEPARATORS.len()]);
            continue;
        }
        let c = if aliases && c == '0' && d & 2 != 0 {
            if d & 4 != 0 { 'O' } else { 'o' }
        } else if aliases && c == '1' && d & 2 != 0 {
            ['I', 'i', 'L', 'l'][usize::from(d >> 2) % 4]
        } else {
            c
        };
        out.push(if d & 1 == 1 {
            c.to_ascii_lowercase()
        } else {
            c
        });
        if d & 0x80 != 0 {
            out.push(' ');
        }
    }
    if b.u8() & 1 == 1 {
        out.push('\n');
    }
    out
}

// ------------------------------------------------------------------ vault

/// Offset of the record count in a version-1 vault file.
pub const VAULT_COUNT_AT: usize = 18 + 6 + 8 + 8;

/// The records of a vault file that `parse` accepted: (type, whole record bytes).
pub fn vault_records(file: &[u8]) -> Vec<(u8, &[u8])> {
    let count = u32::from_be_bytes([
        file[VAULT_COUNT_AT],
        file[VAULT_COUNT_AT + 1],
        file[VAULT_COUNT_AT + 2],
        file[VAULT_COUNT_AT + 3],
    ]);
    let mut pos = VAULT_COUNT_AT + 4;
    let mut out = Vec::new();
    for _ in 0..count {
        let ty = file[pos];
        let len = u32::from_be_bytes([file[pos + 1], file[pos + 2], file[pos + 3], file[pos + 4]])
            as usize;
        out.push((ty, &file[pos..pos + 5 + len]));
        pos += 5 + len;
    }
    out
}

/// The byte ranges of the records of a would-be vault file, if its record
/// area walks cleanly (count, then type and length of each, ending exactly
/// where the MAC starts); `None` otherwise. Never panics.
pub fn try_vault_records(file: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let end = file.len().checked_sub(32 + 32)?;
    let count = file.get(VAULT_COUNT_AT..VAULT_COUNT_AT + 4)?;
    let count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]);
    let mut pos = VAULT_COUNT_AT + 4;
    let mut out = Vec::new();
    for _ in 0..count {
        let h = file.get(pos..pos + 5).filter(|_| pos + 5 <= end)?;
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        let next = pos.checked_add(5 + len).filter(|&n| n <= end)?;
        out.push(pos..next);
        pos = next;
    }
    (pos == end).then_some(out)
}

/// Rewrites the records of `file` in another order (`how` picks a rotation
/// and whether to reverse), if its record area walks cleanly.
pub fn permute_vault_records(file: &mut [u8], how: u8) {
    let Some(ranges) = try_vault_records(file) else {
        return;
    };
    if ranges.len() < 2 {
        return;
    }
    let mut records: Vec<Vec<u8>> = ranges.iter().map(|r| file[r.clone()].to_vec()).collect();
    if how & 1 == 1 {
        records.reverse();
    }
    let k = usize::from(how >> 1) % records.len();
    records.rotate_left(k);
    let start = ranges[0].start;
    let mut at = start;
    for r in records {
        file[at..at + r.len()].copy_from_slice(&r);
        at += r.len();
    }
}

/// Sets the length field and recomputes the checksum of a would-be vault
/// file, so that fuzzing reaches the body parser.
pub fn fix_vault_envelope(file: &mut [u8]) {
    use sha2::{Digest, Sha256};
    if file.len() < 18 + 32 {
        return;
    }
    let n = file.len();
    file[10..18].copy_from_slice(&(n as u64).to_be_bytes());
    let sum = Sha256::digest(&file[..n - 32]);
    file[n - 32..].copy_from_slice(&sum);
}

// ------------------------------------------------------------------ APDUs

/// ISO 7816-4 encoding of a parsed command, short or extended as parsed:
/// `parse` is canonical iff this gives back the input.
pub fn encode_command(c: &virtual_yubikey::apdu::Command<'_>) -> Vec<u8> {
    let mut v = vec![c.cla, c.ins, c.p1, c.p2];
    let n = c.data.len();
    if c.extended {
        if n > 0 {
            v.push(0);
            v.extend_from_slice(&(n as u16).to_be_bytes());
            v.extend_from_slice(c.data);
            if let Some(le) = c.le {
                v.extend_from_slice(&(le as u16).to_be_bytes());
            }
        } else if let Some(le) = c.le {
            v.push(0);
            v.extend_from_slice(&(le as u16).to_be_bytes());
        }
    } else {
        if n > 0 {
            v.push(n as u8);
            v.extend_from_slice(c.data);
        }
        if let Some(le) = c.le {
            v.push(le as u8);
        }
    }
    v
}
