//! The SSH agent protocol's framing and field codec (draft-miller-ssh-agent,
//! as OpenSSH 9.x speaks it): every message is `u32 length | byte type |
//! fields`, fields are big-endian `u32`s, bytes and length-prefixed strings.
//!
//! Parsing never panics and never allocates more than the message holds: a
//! hostile frame gives [`Malformed`] (fuzzed by `tests/fuzz`, target `ssh`).

/// Largest message accepted (OpenSSH's `AGENT_MAX_LEN`): a longer length
/// prefix closes the connection before the body is read.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// Message numbers.
#[allow(missing_docs)]
pub mod msg {
    pub const FAILURE: u8 = 5;
    pub const SUCCESS: u8 = 6;
    pub const REMOVE_ALL_RSA_IDENTITIES: u8 = 9;
    pub const REQUEST_IDENTITIES: u8 = 11;
    pub const IDENTITIES_ANSWER: u8 = 12;
    pub const SIGN_REQUEST: u8 = 13;
    pub const SIGN_RESPONSE: u8 = 14;
    pub const ADD_IDENTITY: u8 = 17;
    pub const REMOVE_IDENTITY: u8 = 18;
    pub const REMOVE_ALL_IDENTITIES: u8 = 19;
    pub const ADD_SMARTCARD_KEY: u8 = 20;
    pub const REMOVE_SMARTCARD_KEY: u8 = 21;
    pub const LOCK: u8 = 22;
    pub const UNLOCK: u8 = 23;
    pub const ADD_ID_CONSTRAINED: u8 = 25;
    pub const ADD_SMARTCARD_KEY_CONSTRAINED: u8 = 26;
    pub const EXTENSION: u8 = 27;
    pub const EXTENSION_FAILURE: u8 = 28;
    pub const EXTENSION_RESPONSE: u8 = 29;
}

/// Key constraint types (in `ADD_ID_CONSTRAINED`).
#[allow(missing_docs)]
pub mod constraint {
    pub const LIFETIME: u8 = 1;
    pub const CONFIRM: u8 = 2;
    pub const MAXSIGN: u8 = 3;
    pub const EXTENSION: u8 = 255;
}

/// Sign request flags.
pub mod flags {
    /// `rsa-sha2-256`.
    pub const RSA_SHA2_256: u32 = 2;
    /// `rsa-sha2-512`.
    pub const RSA_SHA2_512: u32 = 4;
}

/// A message or field that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Reads fields from a message body.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.0
    }
    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    /// A byte.
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    /// A big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A length-prefixed string of bytes.
    pub fn string(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// A length-prefixed UTF-8 string.
    pub fn text(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.string()?).map_err(|_| Malformed)
    }
}

/// Writes a message.
#[derive(Debug, Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// A message of type `ty` (its length is filled in by [`Self::finish`]).
    pub fn new(ty: u8) -> Self {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&[0, 0, 0, 0, ty]);
        Writer(v)
    }
    /// A byte.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// A `u32`.
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// A length-prefixed string.
    pub fn string(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    /// The whole frame.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

/// A one-byte answer (`SUCCESS`, `FAILURE`, `EXTENSION_FAILURE`).
pub fn status(ty: u8) -> Vec<u8> {
    Writer::new(ty).finish()
}

/// A request, split into its fields (the key material of an add is parsed
/// by `keys`, which knows each key type's fields).
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `REQUEST_IDENTITIES`.
    Identities,
    /// `SIGN_REQUEST`.
    Sign {
        /// The key blob.
        key: &'a [u8],
        /// What to sign.
        data: &'a [u8],
        /// `flags::*`.
        flags: u32,
    },
    /// `ADD_IDENTITY` or `ADD_ID_CONSTRAINED`: the key, comment and
    /// constraints, unparsed.
    Add {
        /// Everything after the type byte.
        body: &'a [u8],
    },
    /// `REMOVE_IDENTITY`.
    Remove {
        /// The key blob.
        key: &'a [u8],
    },
    /// `REMOVE_ALL_IDENTITIES` (and the SSH-1 variant).
    RemoveAll,
    /// `LOCK`.
    Lock {
        /// The passphrase.
        passphrase: &'a [u8],
    },
    /// `UNLOCK`.
    Unlock {
        /// The passphrase.
        passphrase: &'a [u8],
    },
    /// `EXTENSION`.
    Extension {
        /// Its name.
        name: &'a str,
        /// Its contents (OpenSSH: the rest of the message, no string around it).
        body: &'a [u8],
    },
    /// A PKCS#11 request (not served: keyward keeps keys in the vault or on a YubiKey).
    Smartcard,
    /// Anything else.
    Unknown(u8),
}

/// Parses a message body (the bytes after the length prefix).
pub fn parse(body: &[u8]) -> Result<Request<'_>, Malformed> {
    let mut r = Reader(body);
    let ty = r.u8()?;
    let req = match ty {
        msg::REQUEST_IDENTITIES => Request::Identities,
        msg::SIGN_REQUEST => {
            let key = r.string()?;
            let data = r.string()?;
            let flags = r.u32()?;
            Request::Sign { key, data, flags }
        }
        msg::ADD_IDENTITY | msg::ADD_ID_CONSTRAINED => {
            return Ok(Request::Add { body: r.rest() });
        }
        msg::REMOVE_IDENTITY => Request::Remove { key: r.string()? },
        msg::REMOVE_ALL_IDENTITIES | msg::REMOVE_ALL_RSA_IDENTITIES => Request::RemoveAll,
        msg::LOCK => Request::Lock {
            passphrase: r.string()?,
        },
        msg::UNLOCK => Request::Unlock {
            passphrase: r.string()?,
        },
        msg::EXTENSION => {
            let name = r.text()?;
            return Ok(Request::Extension {
                name,
                body: r.rest(),
            });
        }
        msg::ADD_SMARTCARD_KEY | msg::REMOVE_SMARTCARD_KEY | msg::ADD_SMARTCARD_KEY_CONSTRAINED => {
            return Ok(Request::Smartcard);
        }
        other => return Ok(Request::Unknown(other)),
    };
    if !r.is_empty() {
        return Err(Malformed);
    }
    Ok(req)
}

/// Shell-style pattern match as OpenSSH's `match_pattern` (`*`, `?`).
pub fn glob(s: &str, pattern: &str) -> bool {
    // The classic greedy matcher: on a mismatch, go back to the last `*`
    // and let it take one more character (O(len × len), no recursion).
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if j < p.len() && (p[j] == '?' || (p[j] != '*' && p[j] == s[i])) {
            i += 1;
            j += 1;
        } else if j < p.len() && p[j] == '*' {
            star = Some((j, i));
            j += 1;
        } else if let Some((sj, si)) = star {
            j = sj + 1;
            i = si + 1;
            star = Some((sj, si + 1));
        } else {
            return false;
        }
    }
    p[j..].iter().all(|&c| c == '*')
}

/// OpenSSH's `match_pattern_list`: comma-separated patterns, `!` negates
/// (a negated match refuses at once).
pub fn glob_list(s: &str, list: &str) -> bool {
    let mut matched = false;
    for p in list.split(',') {
        if let Some(neg) = p.strip_prefix('!') {
            if glob(s, neg) {
                return false;
            }
        } else if glob(s, p) {
            matched = true;
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_truncation_is_refused() {
        let mut w = Writer::new(msg::SIGN_REQUEST);
        w.string(b"key");
        w.string(b"data");
        w.u32(flags::RSA_SHA2_256);
        let frame = w.finish();
        assert_eq!(&frame[..4], &((frame.len() - 4) as u32).to_be_bytes());
        assert_eq!(
            parse(&frame[4..]),
            Ok(Request::Sign {
                key: b"key",
                data: b"data",
                flags: 2
            })
        );
        for cut in 4..frame.len() {
            assert_eq!(parse(&frame[4..cut]), Err(Malformed), "cut at {cut}");
        }
        // Trailing bytes are refused too.
        let mut long = frame[4..].to_vec();
        long.push(0);
        assert_eq!(parse(&long), Err(Malformed));
        // A string longer than the message.
        assert_eq!(
            parse(&[msg::REMOVE_IDENTITY, 0xff, 0xff, 0xff, 0xff]),
            Err(Malformed)
        );
    }

    #[test]
    fn unknown_messages_are_named_not_refused() {
        assert_eq!(parse(&[200]), Ok(Request::Unknown(200)));
        assert_eq!(
            parse(&[msg::ADD_SMARTCARD_KEY, 1, 2]),
            Ok(Request::Smartcard)
        );
        assert_eq!(parse(&[]), Err(Malformed));
    }

    #[test]
    fn patterns_as_openssh_matches_them() {
        assert!(glob("host_a", "host_*"));
        assert!(glob("host_a", "host_?"));
        assert!(!glob("host_ab", "host_?"));
        assert!(!glob("alice", "--BADUSER"));
        assert!(glob("", "*"));
        assert!(glob_list(
            "/usr/lib/x/sk.so",
            "/usr/lib*/*,/usr/local/lib*/*"
        ));
        assert!(!glob_list("/tmp/sk.so", "/usr/lib*/*,/usr/local/lib*/*"));
        assert!(!glob_list(
            "/usr/lib/evil.so",
            "/usr/lib*/*,!/usr/lib/evil.so"
        ));
    }
}
