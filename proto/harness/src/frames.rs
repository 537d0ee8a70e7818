//! The `frame_decoder` target: [`FrameDecoder`] on one byte stream, fed
//! three ways, against the bytes it was given.

use bytes::BytesMut;
use readyfd_proto::frame::encode_frame;
use readyfd_proto::{FrameDecoder, FrameError, HEADER_LEN, READ_AHEAD};

use crate::alloc::{LimitGuard, SLACK};

/// Frame maximums [`frame_decoder`] picks from: the edges (nothing, one byte,
/// a header's worth) and a few sizes up to 64 KiB.
const FRAME_MAXES: [u32; 8] = [0, 1, 5, 17, 255, 4096, 65_535, 65_536];

/// Fuzzes [`FrameDecoder`]. `data[0]` picks the maximum, `data[1]` a
/// chunking; the rest is the byte stream. The stream is decoded three ways
/// (whole, one byte at a time, in the chosen chunks), each followed by
/// `decode_eof`, and asserts:
///
/// - every frame's payload is at most the maximum;
/// - no byte is lost or invented: frames taken + header held + buffered ==
///   bytes fed, so consumed <= input;
/// - the frames, re-encoded, are exactly the input's prefix they came from;
/// - errors carry consistent numbers, and nothing is consumed by a failed
///   `decode`;
/// - all three ways yield the same frames and the same final result.
pub fn frame_decoder(data: &[u8]) {
    let [a, seed, input @ ..] = data else {
        return;
    };
    let max = FRAME_MAXES[usize::from(a & 7)];
    let _limit =
        LimitGuard::set(2 * (max as usize + HEADER_LEN + READ_AHEAD + input.len()) + SLACK);
    let whole = run_frames(input, max, &mut std::iter::empty());
    let bytewise = run_frames(input, max, &mut std::iter::repeat(1));
    assert_eq!(
        bytewise, whole,
        "byte-at-a-time differs from the whole buffer"
    );
    let chunked = run_frames(input, max, &mut chunk_sizes(*seed));
    assert_eq!(
        chunked, whole,
        "chunking {seed} differs from the whole buffer"
    );
}

/// What one decoding of a stream produced.
#[derive(Debug, PartialEq)]
struct FrameRun {
    /// The decoded frames, re-encoded back to back.
    frames: Vec<u8>,
    /// How the stream ended: cleanly, or the first error.
    end: Result<(), FrameError>,
}

/// Chunk sizes from a seed: a small linear congruential sequence, so that
/// header and body boundaries fall everywhere.
fn chunk_sizes(seed: u8) -> impl Iterator<Item = usize> {
    let mut x = u32::from(seed);
    let span = usize::from(seed) * 4 + 1;
    std::iter::from_fn(move || {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        Some(1 + (x >> 16) as usize % span)
    })
}

/// Feeds `input` to a fresh decoder in chunks of the given sizes (the rest
/// at once when they run out).
fn run_frames(input: &[u8], max: u32, sizes: &mut dyn Iterator<Item = usize>) -> FrameRun {
    let mut dec = FrameDecoder::new(max);
    assert_eq!(dec.max(), max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = input;
    let mut fed = 0usize;
    let end = 'run: loop {
        let n = sizes.next().unwrap_or(usize::MAX).max(1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        buf.extend_from_slice(chunk);
        fed += n;
        loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(
                        f.payload.len() <= max as usize,
                        "payload of {} over max {max}",
                        f.payload.len()
                    );
                    encode_frame(f.kind, &f.payload, max, &mut frames)
                        .expect("a decoded frame re-encodes under the same maximum");
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(buf.len(), before, "a failed decode consumed bytes");
                    match e {
                        FrameError::TooLarge { len, max: m } => {
                            assert_eq!(m, max);
                            assert!(len > u64::from(max));
                        }
                        FrameError::Truncated { .. } => {
                            panic!("decode reported truncation before EOF")
                        }
                        e => panic!("a frame error the harness does not know: {e:?}"),
                    }
                    break 'run Err(e);
                }
            }
        }
        let held = if dec.in_frame() { HEADER_LEN } else { 0 };
        assert_eq!(
            frames.len() + held + buf.len(),
            fed,
            "bytes lost or invented"
        );
        if rest.is_empty() {
            break match dec.decode_eof(&mut buf) {
                Ok(None) => {
                    assert!(buf.is_empty() && !dec.in_frame());
                    Ok(())
                }
                Ok(Some(f)) => panic!("decode_eof found a frame decode missed: {f:?}"),
                Err(e) => {
                    let FrameError::Truncated { have, need } = e else {
                        panic!("decode_eof after a clean decode failed with {e:?}")
                    };
                    assert!(have < need && have == held + buf.len(), "{e:?}");
                    assert!(need > HEADER_LEN || !dec.in_frame());
                    Err(e)
                }
            };
        }
    };
    assert!(frames.len() <= input.len());
    assert_eq!(
        frames[..],
        input[..frames.len()],
        "frames differ from the bytes they were decoded from"
    );
    FrameRun { frames, end }
}
