//! Length-prefixed framing: a 4-byte big-endian unsigned length, then the payload.
//!
//! The length comes from an untrusted peer, so it is checked against a limit before anything is
//! allocated, and the buffer grows only as bytes actually arrive (a peer announcing 64 MiB and
//! sending nothing costs us nothing).
use std::io::{self, Read, Write};

pub const HEADER_LEN: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed")]
    Closed,
    #[error("connection closed in the middle of a frame ({got} of {want} bytes received)")]
    Truncated { got: usize, want: usize },
    #[error("frame of {len} bytes is larger than the server's limit of {max} bytes (--max-frame-bytes)")]
    TooLarge { len: usize, max: usize },
    #[error("timed out waiting for data (--read-timeout)")]
    Timeout,
    #[error("{0}")]
    Io(io::Error),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::Timeout,
            _ => FrameError::Io(e),
        }
    }
}

/// Reads one frame's payload. `Closed` only when the stream ends exactly at a frame boundary.
pub fn read_frame<R: Read>(r: &mut R, max_len: usize) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Err(FrameError::Closed);
    }
    if got < HEADER_LEN {
        return Err(FrameError::Truncated { got, want: HEADER_LEN });
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    // Start small and let the vector grow with the data that really arrives.
    let mut payload = Vec::with_capacity(len.min(1 << 20));
    let got = r.take(len as u64).read_to_end(&mut payload)?;
    if got < len {
        return Err(FrameError::Truncated { got: HEADER_LEN + got, want: HEADER_LEN + len });
    }
    Ok(payload)
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A buffer that starts with room for the header, so a payload can be serialised straight into
/// it and sent with one write.
pub fn buffer_with_header() -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(&[0; HEADER_LEN]);
    buf
}

/// Fills in the header of a buffer made by `buffer_with_header` and writes it.
pub fn write_framed<W: Write>(w: &mut W, mut buf: Vec<u8>) -> io::Result<()> {
    let len = buf.len() - HEADER_LEN;
    let len = u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    buf[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    w.write_all(&buf)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut b = buffer_with_header();
        b.extend_from_slice(payload);
        let mut out = Vec::new();
        write_framed(&mut out, b).unwrap();
        out
    }

    #[test]
    fn round_trip_several_frames() {
        let mut wire = framed(b"hello");
        wire.extend(framed(b""));
        wire.extend(framed(&[7u8; 70_000]));
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r, 1 << 20).unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 1 << 20).unwrap(), b"");
        assert_eq!(read_frame(&mut r, 1 << 20).unwrap(), vec![7u8; 70_000]);
        assert!(matches!(read_frame(&mut r, 1 << 20), Err(FrameError::Closed)));
    }

    #[test]
    fn oversized_length_is_refused_before_reading() {
        let wire = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        match read_frame(&mut &wire[..], 64 << 20) {
            Err(FrameError::TooLarge { len, max }) => assert_eq!((len, max), (u32::MAX as usize, 64 << 20)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn half_sent_frames_are_truncated_not_closed() {
        assert!(matches!(read_frame(&mut &[0u8, 0][..], 100), Err(FrameError::Truncated { got: 2, want: 4 })));
        let wire = [0, 0, 0, 10, 1, 2, 3];
        assert!(matches!(read_frame(&mut &wire[..], 100), Err(FrameError::Truncated { got: 7, want: 14 })));
    }
}
