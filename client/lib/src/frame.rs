//! Framing: a big-endian `u32` length, then that many bytes of payload.
//! Payloads larger than [`MAX_FRAME`] are refused as soon as the length is
//! read, before anything is allocated or read further.
//!
//! [`FrameBuf`] is a small read buffer (zeroized as frames are consumed and on
//! drop, since frames carry passwords and values) used by the clients and by
//! the agent; one `read` system call usually brings in a whole frame.

use std::io::{self, Read, Write};
use zeroize::Zeroize;

/// Largest payload, in bytes (64 KiB).
pub const MAX_FRAME: usize = 64 * 1024;
/// Size of the length prefix.
pub const HEADER: usize = 4;

/// Reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The peer closed the connection inside a frame.
    #[error("connection closed in the middle of a message")]
    Truncated,
    /// The announced payload is over the cap.
    #[error("message of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(u32),
    /// I/O.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A zeroizing read buffer that yields whole frames.
pub struct FrameBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Length of the frame handed out last, consumed on the next call.
    handed_out: usize,
}

impl Default for FrameBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

impl FrameBuf {
    /// A buffer large enough for the largest frame.
    pub fn new() -> Self {
        Self {
            buf: vec![0u8; HEADER + MAX_FRAME].into_boxed_slice(),
            start: 0,
            end: 0,
            handed_out: 0,
        }
    }

    fn consume_handed_out(&mut self) {
        if self.handed_out > 0 {
            let n = self.handed_out;
            self.buf[self.start..self.start + n].zeroize();
            self.start += n;
            self.handed_out = 0;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.end - self.start - self.handed_out
    }

    /// A complete buffered frame, if there is one: its payload's range.
    fn complete(&mut self) -> Result<Option<(usize, usize)>, FrameError> {
        self.consume_handed_out();
        let avail = self.end - self.start;
        if avail < HEADER {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.buf[self.start..self.start + HEADER]);
        let len = u32::from_be_bytes(len);
        if len as usize > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let total = HEADER + len as usize;
        if avail < total {
            // Make room for the rest of this frame.
            if self.start + total > self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                let old_start = self.start;
                self.end -= old_start;
                self.start = 0;
                self.buf[self.end..].zeroize();
            }
            return Ok(None);
        }
        self.handed_out = total;
        Ok(Some((self.start + HEADER, self.start + total)))
    }

    /// The next frame's payload, if one is complete in the buffer.
    pub fn try_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        Ok(self.complete()?.map(|(a, b)| &self.buf[a..b]))
    }

    /// Free space at the end of the buffer (compacting first if needed). It
    /// is never empty when callers drain complete frames with `try_frame`
    /// before filling, since one frame always fits; `fill` checks anyway.
    fn spare(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// There must be room to read into: a zero-length read would look like
    /// the end of the stream.
    fn check_room(&mut self) -> Result<(), FrameError> {
        if self.spare().is_empty() {
            return Err(FrameError::Io(io::Error::other(
                "frame buffer full: take the complete frame first",
            )));
        }
        Ok(())
    }

    fn filled(&mut self, n: usize) -> Result<(), FrameError> {
        if n == 0 {
            return Err(if self.end == self.start {
                FrameError::Closed
            } else {
                FrameError::Truncated
            });
        }
        self.end += n;
        Ok(())
    }

    /// Reads once from `r` into the buffer (blocking).
    pub fn fill<R: Read + ?Sized>(&mut self, r: &mut R) -> Result<(), FrameError> {
        self.check_room()?;
        let n = loop {
            match r.read(self.spare()) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        self.filled(n)
    }

    /// Reads frames until one is complete (blocking) and returns its payload.
    pub fn read_frame<R: Read + ?Sized>(&mut self, r: &mut R) -> Result<&[u8], FrameError> {
        loop {
            if let Some((a, b)) = self.complete()? {
                return Ok(&self.buf[a..b]);
            }
            self.fill(r)?;
        }
    }

    /// Reads once from `r` into the buffer (async).
    #[cfg(feature = "async")]
    pub async fn fill_async<R: tokio::io::AsyncRead + Unpin + ?Sized>(
        &mut self,
        r: &mut R,
    ) -> Result<(), FrameError> {
        use tokio::io::AsyncReadExt;
        self.check_room()?;
        let n = r.read(self.spare()).await?;
        self.filled(n)
    }

    /// Reads until a frame is complete (async) and returns its payload.
    #[cfg(feature = "async")]
    pub async fn read_frame_async<R: tokio::io::AsyncRead + Unpin + ?Sized>(
        &mut self,
        r: &mut R,
    ) -> Result<&[u8], FrameError> {
        loop {
            if let Some((a, b)) = self.complete()? {
                return Ok(&self.buf[a..b]);
            }
            self.fill_async(r).await?;
        }
    }
}

/// Writes a whole frame (as built by `encode`) and zeroizes it if it held secrets.
pub fn write_frame<W: Write + ?Sized>(
    w: &mut W,
    (mut frame, secret): (Vec<u8>, bool),
) -> io::Result<()> {
    let r = w.write_all(&frame).and_then(|()| w.flush());
    if secret {
        frame.zeroize();
    }
    r
}

/// Async [`write_frame`].
#[cfg(feature = "async")]
pub async fn write_frame_async<W: tokio::io::AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    (mut frame, secret): (Vec<u8>, bool),
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let r = w.write_all(&frame).await;
    if secret {
        frame.zeroize();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// A reader that hands out one byte per read, like a slow peer.
    struct Trickle(Vec<u8>, usize);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.1 == self.0.len() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[self.1];
            self.1 += 1;
            Ok(1)
        }
    }

    #[test]
    fn frames_in_one_read_and_byte_by_byte() {
        let mut data = frame(b"one");
        data.extend(frame(b""));
        data.extend(frame(&[7u8; 1000]));
        for mut src in [
            Box::new(&data[..]) as Box<dyn Read>,
            Box::new(Trickle(data.clone(), 0)),
        ] {
            let mut fb = FrameBuf::new();
            assert_eq!(fb.read_frame(&mut src).unwrap(), b"one");
            assert_eq!(fb.read_frame(&mut src).unwrap(), b"");
            assert_eq!(fb.read_frame(&mut src).unwrap(), &[7u8; 1000][..]);
            assert!(matches!(fb.read_frame(&mut src), Err(FrameError::Closed)));
        }
    }

    #[test]
    fn largest_frame_passes_and_one_more_byte_is_refused_early() {
        let big = frame(&vec![1u8; MAX_FRAME]);
        let mut fb = FrameBuf::new();
        assert_eq!(fb.read_frame(&mut &big[..]).unwrap().len(), MAX_FRAME);
        // Only the 4-byte header of an oversized frame is needed to refuse it.
        let header = ((MAX_FRAME + 1) as u32).to_be_bytes();
        let mut fb = FrameBuf::new();
        assert!(
            matches!(fb.read_frame(&mut &header[..]), Err(FrameError::TooLarge(n)) if n as usize == MAX_FRAME + 1)
        );
        let mut fb = FrameBuf::new();
        assert!(matches!(
            fb.read_frame(&mut &[0xff; 4][..]),
            Err(FrameError::TooLarge(u32::MAX))
        ));
    }

    #[test]
    fn eof_inside_a_frame_is_truncation() {
        let data = frame(b"hello");
        let mut fb = FrameBuf::new();
        assert!(matches!(
            fb.read_frame(&mut &data[..6]),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn many_frames_wrap_around_the_buffer() {
        let mut data = Vec::new();
        for i in 0..200u32 {
            data.extend(frame(&vec![i as u8; 1000 + i as usize * 300]));
        }
        let mut fb = FrameBuf::new();
        let mut src = &data[..];
        for i in 0..200u32 {
            let f = fb.read_frame(&mut src).unwrap();
            assert_eq!(f.len(), 1000 + i as usize * 300);
            assert!(f.iter().all(|&b| b == i as u8));
        }
    }

    #[test]
    fn consumed_frames_are_wiped() {
        let mut data = frame(b"secret!!");
        data.extend(frame(b"x"));
        let mut fb = FrameBuf::new();
        let mut src = &data[..];
        assert_eq!(fb.read_frame(&mut src).unwrap(), b"secret!!");
        assert_eq!(fb.read_frame(&mut src).unwrap(), b"x");
        assert!(!fb.buf.windows(8).any(|w| w == b"secret!!"));
    }
}
