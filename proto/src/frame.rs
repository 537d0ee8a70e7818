//! The frame layer: `[u32 little-endian payload length][u8 kind][payload]`.
//!
//! [`FrameDecoder`] follows tokio-util's `Decoder` contract: `Ok(Some(frame))`
//! removes exactly that frame's bytes from the buffer, `Ok(None)` means more
//! bytes are needed (nothing is consumed once the header is parsed, the
//! header is parsed once), and `Err` means the stream is corrupt and must be
//! closed.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::FrameError;

/// Bytes in a frame header: a `u32` little-endian payload length, then the
/// kind byte.
pub const HEADER_LEN: usize = 5;

/// One frame: a kind byte and its payload (possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload holds (see [`crate::Kind`]).
    pub kind: u8,
    /// The payload, `len` bytes as the header announced.
    pub payload: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    Head,
    Body { len: usize, kind: u8 },
}

/// How much room a [`FrameDecoder`] leaves beyond an incomplete frame in
/// its buffer: a driver that makes room for at most this many bytes before
/// each read (`BytesMut::reserve`) never moves a partial frame, so a large
/// payload is read once, in place. The readyfd drivers read 64 KiB at a
/// time.
pub const READ_AHEAD: usize = 64 * 1024;

/// Incremental frame decoder over a [`BytesMut`] read buffer.
///
/// # Example
/// ```
/// use bytes::BytesMut;
/// use readyfd_proto::frame::{FrameDecoder, encode_frame};
///
/// let mut wire = Vec::new();
/// encode_frame(0x05, b"hi", u32::MAX, &mut wire).unwrap();
/// let mut dec = FrameDecoder::new(1024);
/// let mut buf = BytesMut::from(&wire[..3]);
/// assert!(dec.decode(&mut buf).unwrap().is_none()); // need more bytes
/// buf.extend_from_slice(&wire[3..]);
/// let frame = dec.decode(&mut buf).unwrap().unwrap();
/// assert_eq!((frame.kind, &frame.payload[..]), (0x05, &b"hi"[..]));
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max: u32,
    state: DecodeState,
}

impl FrameDecoder {
    /// A decoder that accepts payloads of at most `max` bytes.
    pub fn new(max: u32) -> Self {
        FrameDecoder {
            max,
            state: DecodeState::Head,
        }
    }

    /// The maximum payload length this decoder accepts.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Whether a frame has been started (its header parsed) but not finished.
    pub fn in_frame(&self) -> bool {
        matches!(self.state, DecodeState::Body { .. })
    }

    /// The payload length of the frame begun but not finished, if any (its
    /// header is already consumed from the buffer).
    pub(crate) fn body_len(&self) -> Option<usize> {
        match self.state {
            DecodeState::Body { len, .. } => Some(len),
            DecodeState::Head => None,
        }
    }

    /// The kind byte of the frame begun but not finished, if any.
    pub(crate) fn body_kind(&self) -> Option<u8> {
        match self.state {
            DecodeState::Body { kind, .. } => Some(kind),
            DecodeState::Head => None,
        }
    }

    /// Decodes the next frame from `src`.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] when a header announces more than the
    /// maximum; the check is made on the raw header value before any byte
    /// is reserved. After an error the stream must be closed.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let (len, kind) = match self.state {
            DecodeState::Head => {
                if src.len() < HEADER_LEN {
                    return Ok(None);
                }
                let raw = u32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                if raw > self.max {
                    return Err(FrameError::TooLarge {
                        len: u64::from(raw),
                        max: self.max,
                    });
                }
                let kind = src[4];
                src.advance(HEADER_LEN);
                // `raw <= max <= u32::MAX`, which fits in usize on every
                // platform this crate builds for (it needs 32-bit pointers).
                let len = raw as usize;
                // Room for the rest of the payload and then some: a driver
                // that reads into the spare capacity then sees a short read
                // when the frame is complete and nothing follows (so it
                // need not read again to learn that the socket is empty,
                // while the payload it just got is still alive and the
                // buffer cannot be reused). For a frame still incomplete,
                // the room goes `READ_AHEAD` beyond it, so that a driver
                // that makes room for up to that much before each read
                // never reallocates the buffer, which would copy the
                // partial payload: it is read in place, where its first
                // bytes landed.
                let missing = len.saturating_sub(src.len());
                if missing > 0 {
                    src.reserve(missing + READ_AHEAD);
                } else {
                    src.reserve(HEADER_LEN);
                }
                self.state = DecodeState::Body { len, kind };
                (len, kind)
            }
            DecodeState::Body { len, kind } => (len, kind),
        };
        if src.len() < len {
            return Ok(None);
        }
        self.state = DecodeState::Head;
        Ok(Some(Frame {
            kind,
            payload: src.split_to(len).freeze(),
        }))
    }

    /// Like [`decode`](Self::decode), for when the stream has ended: a
    /// complete frame is still returned, and leftover bytes of a partial
    /// frame are [`FrameError::Truncated`].
    ///
    /// # Errors
    /// [`FrameError::Truncated`] for a partial frame, and the errors of
    /// [`decode`](Self::decode).
    pub fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        match self.state {
            DecodeState::Head if src.is_empty() => Ok(None),
            DecodeState::Head => Err(FrameError::Truncated {
                have: src.len(),
                need: HEADER_LEN,
            }),
            DecodeState::Body { len, .. } => Err(FrameError::Truncated {
                have: HEADER_LEN + src.len(),
                need: HEADER_LEN + len,
            }),
        }
    }
}

/// Appends one frame (header and payload) to `out`.
///
/// # Errors
/// [`FrameError::TooLarge`] when `payload` is longer than `max`; nothing is
/// written then.
pub fn encode_frame(
    kind: u8,
    payload: &[u8],
    max: u32,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    if payload.len() > max as usize {
        return Err(FrameError::TooLarge {
            len: payload.len() as u64,
            max,
        });
    }
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    Ok(())
}

/// Writes a header for a payload that the caller appends afterwards: returns
/// the offset to pass to [`finish_frame`].
pub(crate) fn begin_frame(kind: u8, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, kind]);
    start
}

/// Patches the length of a frame begun at `start`, or removes the partial
/// frame and fails when its payload exceeds `max`.
pub(crate) fn finish_frame(start: usize, max: u32, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = out.len() - start - HEADER_LEN;
    if len > max as usize {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len: len as u64,
            max,
        });
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::DEFAULT_MAX_FRAME;

    fn frame_bytes(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(kind, payload, DEFAULT_MAX_FRAME, &mut v).unwrap();
        v
    }

    /// A driver reads as `recv_stream` does: it makes room for 64 KiB,
    /// then the kernel fills at most the spare capacity. A large frame's
    /// payload must be read where its first bytes landed once the header
    /// was parsed: moving it would copy the whole frame again (the
    /// driver's 64 KiB reserve used to reallocate the buffer once the
    /// frame's remaining bytes were fewer than that).
    #[test]
    fn read_incomplete_body_of_a_large_frame_in_place() {
        const CHUNK: usize = 64 * 1024;
        for len in [CHUNK - 3, CHUNK + 7, 1 << 20, (1 << 20) + 12345] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            // A small frame first, still held (as a queued message is)
            // when the large one arrives: the buffer is shared.
            let mut wire = frame_bytes(5, b"earlier");
            wire.extend_from_slice(&frame_bytes(5, &payload));
            let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut buf = BytesMut::new();
            let mut fed = 0;
            let mut body_at = None;
            let mut earlier = None;
            let frame = loop {
                buf.reserve(CHUNK);
                let room = buf.capacity() - buf.len();
                // A read takes what the peer has written so far: here
                // 50 000 bytes at a time.
                let n = room.min(wire.len() - fed).min(50_000);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
                if earlier.is_none() {
                    earlier = dec.decode(&mut buf).unwrap();
                    assert!(earlier.is_some());
                }
                match dec.decode(&mut buf).unwrap() {
                    Some(f) => break f,
                    None => {
                        if dec.in_frame() && body_at.is_none() {
                            body_at = Some(buf.as_ptr() as usize);
                        }
                    }
                }
            };
            assert_eq!(&frame.payload[..], &payload[..]);
            assert_eq!(&earlier.unwrap().payload[..], b"earlier");
            if let Some(at) = body_at {
                assert_eq!(
                    frame.payload.as_ptr() as usize,
                    at,
                    "a {len}-byte payload was moved after its header was read"
                );
            }
        }
    }

    #[test]
    fn read_incomplete_head() {
        let wire = frame_bytes(7, b"abc");
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::from(&wire[..4]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 4, "nothing consumed before the head is whole");
        buf.extend_from_slice(&wire[4..]);
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((f.kind, &f.payload[..]), (7, &b"abc"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn read_incomplete_body() {
        let wire = frame_bytes(2, b"hello world");
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::from(&wire[..HEADER_LEN + 3]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(dec.in_frame());
        buf.extend_from_slice(&wire[HEADER_LEN + 3..]);
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&f.payload[..], b"hello world");
        assert!(!dec.in_frame());
    }

    #[test]
    fn every_split_point_equals_whole_buffer() {
        let mut wire = frame_bytes(1, b"first");
        wire.extend(frame_bytes(3, b""));
        wire.extend(frame_bytes(4, &[9u8; 300]));
        let whole = {
            let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut buf = BytesMut::from(&wire[..]);
            let mut v = Vec::new();
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                v.push(f);
            }
            v
        };
        assert_eq!(whole.len(), 3);
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                for chunk in [&wire[..a], &wire[a..b], &wire[b..]] {
                    buf.extend_from_slice(chunk);
                    while let Some(f) = dec.decode(&mut buf).unwrap() {
                        got.push(f);
                    }
                }
                assert_eq!(got, whole, "split at {a} and {b}");
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let mut wire = frame_bytes(1, b"x");
        wire.extend(frame_bytes(2, b"yz"));
        let mut dec = FrameDecoder::new(16);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in &wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f.payload.to_vec());
            }
        }
        assert_eq!(got, vec![b"x".to_vec(), b"yz".to_vec()]);
    }

    #[test]
    fn max_length_is_checked_on_the_raw_header() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1][..]);
        let err = dec.decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: 0xffff_ffff,
                max: DEFAULT_MAX_FRAME
            }
        );
        assert!(
            buf.capacity() < 1024,
            "nothing reserved for the bogus length"
        );
    }

    #[test]
    fn exactly_max_is_accepted_one_more_is_not() {
        let mut dec = FrameDecoder::new(4);
        let mut buf = BytesMut::from(&frame_bytes(1, b"abcd")[..]);
        assert!(dec.decode(&mut buf).unwrap().is_some());
        let mut buf = BytesMut::from(&frame_bytes(1, b"abcde")[..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(FrameError::TooLarge { len: 5, max: 4 })
        ));
        let mut out = Vec::new();
        assert!(encode_frame(1, b"abcde", 4, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn zero_length_payload_is_a_frame() {
        let mut dec = FrameDecoder::new(0);
        let mut buf = BytesMut::from(&frame_bytes(5, b"")[..]);
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((f.kind, f.payload.len()), (5, 0));
    }

    #[test]
    fn eof_inside_head_and_body_is_truncated() {
        let wire = frame_bytes(1, b"abcdef");
        let mut dec = FrameDecoder::new(64);
        let mut buf = BytesMut::from(&wire[..2]);
        assert_eq!(
            dec.decode_eof(&mut buf),
            Err(FrameError::Truncated {
                have: 2,
                need: HEADER_LEN
            })
        );
        let mut dec = FrameDecoder::new(64);
        let mut buf = BytesMut::from(&wire[..HEADER_LEN + 2]);
        assert_eq!(
            dec.decode_eof(&mut buf),
            Err(FrameError::Truncated {
                have: HEADER_LEN + 2,
                need: HEADER_LEN + 6
            })
        );
        let mut dec = FrameDecoder::new(64);
        let mut buf = BytesMut::new();
        assert_eq!(dec.decode_eof(&mut buf), Ok(None));
    }
}
