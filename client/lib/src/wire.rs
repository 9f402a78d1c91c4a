//! The field codec: big-endian integers, length-prefixed strings and bytes,
//! options and lists. Decoding is strict and never panics.

use crate::secret::Secret;
use zeroize::Zeroize;

/// A message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ended inside a field.
    #[error("message ends inside the field {0}")]
    Short(&'static str),
    /// A string is not UTF-8.
    #[error("the field {0} is not valid UTF-8")]
    Utf8(&'static str),
    /// A value out of its range (an enum, a boolean, an option tag).
    #[error("the field {0} has an invalid value")]
    Invalid(&'static str),
    /// Bytes left after the message.
    #[error("{0} unexpected bytes after the message")]
    Trailing(usize),
    /// An unknown message tag.
    #[error("unknown message type 0x{0:02x}")]
    UnknownTag(u8),
    /// An empty payload.
    #[error("empty message")]
    Empty,
}

/// Builds a payload.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
    /// Whether secrets were written (the buffer is then zeroized on drop).
    secret: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.secret {
            self.buf.zeroize();
        }
    }
}

impl Writer {
    /// A writer for a frame whose payload starts with `tag`. The first four
    /// bytes are reserved for the frame length, so that [`Writer::finish`]
    /// returns a whole frame, sent with one write.
    pub fn new(tag: u8) -> Self {
        let mut w = Self {
            buf: Vec::with_capacity(64),
            secret: false,
        };
        w.u32(0);
        w.u8(tag);
        w
    }
    /// Makes room for `n` more bytes. Growing by hand: a `Vec` that grows by
    /// itself frees its old buffer without wiping it, and frames carry secrets.
    fn reserve(&mut self, n: usize) {
        let need = self.buf.len() + n;
        if need <= self.buf.capacity() {
            return;
        }
        let mut bigger = Vec::with_capacity(need.max(2 * self.buf.capacity()));
        bigger.extend_from_slice(&self.buf);
        let mut old = std::mem::replace(&mut self.buf, bigger);
        old.zeroize();
    }

    fn put(&mut self, b: &[u8]) {
        self.reserve(b.len());
        self.buf.extend_from_slice(b);
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    /// A boolean as one byte (0 or 1).
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    /// Big-endian u16.
    pub fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }
    /// Big-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
    /// Big-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }
    /// u32 length and the bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.reserve(4 + b.len());
        self.u32(b.len() as u32);
        self.put(b);
    }
    /// A string (u32 length and UTF-8).
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    /// A secret (as bytes); the buffer becomes secret.
    pub fn secret(&mut self, s: &Secret) {
        self.secret = true;
        self.bytes(s.expose());
    }
    /// An option: 0, or 1 and the value.
    pub fn opt<T>(&mut self, v: Option<&T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                f(self, x);
            }
        }
    }
    /// A list: u32 count and the items.
    pub fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.u32(items.len() as u32);
        for x in items {
            f(self, x);
        }
    }
    /// The whole frame (length prefix and payload). If secrets were written
    /// (second value) the caller must zeroize the buffer after sending it.
    pub fn finish(mut self) -> (Vec<u8>, bool) {
        let len = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        (std::mem::take(&mut self.buf), self.secret)
    }
}

/// Reads a payload.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Short(what));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    /// A boolean (0 or 1).
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid(what)),
        }
    }
    /// Big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// Big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    /// Length-prefixed bytes (borrowed).
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    /// A string.
    pub fn str(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes(what)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8(what))
    }
    /// A secret.
    pub fn secret(&mut self, what: &'static str) -> Result<Secret, DecodeError> {
        Ok(Secret::from_slice(self.bytes(what)?))
    }
    /// An option.
    pub fn opt<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => f(self).map(Some),
            _ => Err(DecodeError::Invalid(what)),
        }
    }
    /// A list. The count is checked against the bytes left (each item takes
    /// at least `min_item` bytes) before anything is allocated.
    pub fn list<T>(
        &mut self,
        what: &'static str,
        min_item: usize,
        mut f: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item.max(1)) > self.buf.len() {
            return Err(DecodeError::Short(what));
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(f(self)?);
        }
        Ok(v)
    }
    /// Requires that everything was read.
    pub fn end(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let mut w = Writer::new(7);
        w.u16(0x1234);
        w.u64(u64::MAX);
        w.str("héllo");
        w.opt(Some(&5u32), |w, v| w.u32(*v));
        w.opt::<u32>(None, |w, v| w.u32(*v));
        w.list(&["a", "b"], |w, s| w.str(s));
        w.bool(true);
        let (frame, secret) = w.finish();
        assert!(!secret);
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        let buf = &frame[4..];
        let mut r = Reader::new(buf);
        assert_eq!(r.u8("tag").unwrap(), 7);
        assert_eq!(r.u16("a").unwrap(), 0x1234);
        assert_eq!(r.u64("b").unwrap(), u64::MAX);
        assert_eq!(r.str("c").unwrap(), "héllo");
        assert_eq!(r.opt("d", |r| r.u32("d")).unwrap(), Some(5));
        assert_eq!(r.opt("e", |r| r.u32("e")).unwrap(), None);
        assert_eq!(r.list("f", 4, |r| r.str("f")).unwrap(), ["a", "b"]);
        assert!(r.bool("g").unwrap());
        r.end().unwrap();
        for n in 0..buf.len() {
            let mut r = Reader::new(&buf[..n]);
            let res = (|| {
                r.u8("tag")?;
                r.u16("a")?;
                r.u64("b")?;
                r.str("c")?;
                r.opt("d", |r| r.u32("d"))?;
                r.opt("e", |r| r.u32("e"))?;
                r.list("f", 4, |r| r.str("f"))?;
                r.bool("g")
            })();
            assert!(res.is_err(), "prefix of {n} bytes decoded");
        }
    }

    #[test]
    fn absurd_list_counts_do_not_allocate() {
        let buf = [0xff, 0xff, 0xff, 0xff];
        let mut r = Reader::new(&buf);
        assert_eq!(r.list("x", 1, |r| r.u8("x")), Err(DecodeError::Short("x")));
    }

    #[test]
    fn invalid_utf8_and_option_tags() {
        let mut r = Reader::new(&[0, 0, 0, 2, 0xc3, 0x28]);
        assert_eq!(r.str("name"), Err(DecodeError::Utf8("name")));
        let mut r = Reader::new(&[2]);
        assert_eq!(r.opt("o", |r| r.u8("o")), Err(DecodeError::Invalid("o")));
    }
}
