//! Hostile lengths inside a frame fail at once, without allocating for
//! what they claim. The harness's allocator records the largest single
//! allocation each thread makes.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use readyfd_proto::codec::decode_body;
use readyfd_proto::{
    DEFAULT_MAX_FRAME, DecodeError, Endpoint, Frame, FrameDecoder, FrameError, Message,
};
use readyfd_proto_harness::BoundedAlloc;
use readyfd_proto_harness::alloc::{self, Excess, peak_of, with_limit};

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc::recording();

/// Runs `f`, returning its result and the largest single allocation it made.
fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = Instant::now();
    let (r, most) = peak_of(f);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "a hostile length must fail at once"
    );
    (r, most)
}

fn frame(kind: u8, payload: Vec<u8>) -> Frame {
    Frame {
        kind,
        payload: Bytes::from(payload),
    }
}

const HUGE: u64 = 1 << 60;

#[test]
fn string_claiming_2_60_bytes_allocates_nothing_for_it() {
    let f = frame(6, HUGE.to_le_bytes().to_vec());
    let (r, most) = peak(|| Message::decode(&f));
    assert_eq!(r, Err(DecodeError::LimitExceeded));
    assert!(most < 256, "allocated {most} bytes");
}

#[test]
fn vec_claiming_2_60_endpoints_allocates_nothing_for_it() {
    let mut p = 1u32.to_le_bytes().to_vec();
    p.extend(HUGE.to_le_bytes());
    let f = frame(2, p);
    let (r, most) = peak(|| Message::decode(&f));
    assert!(
        matches!(
            r,
            Err(DecodeError::LimitExceeded | DecodeError::UnexpectedEnd { .. })
        ),
        "{r:?}"
    );
    // At most room for 16 endpoints, whatever the claim.
    assert!(
        most <= 16 * std::mem::size_of::<Endpoint>(),
        "allocated {most} bytes"
    );

    // With real endpoints behind the claim, growth follows what arrived.
    let mut p = 1u32.to_le_bytes().to_vec();
    p.extend(HUGE.to_le_bytes());
    for _ in 0..3 {
        p.extend(0u64.to_le_bytes()); // name ""
        p.extend(2u32.to_le_bytes()); // Unix
        p.extend(0u64.to_le_bytes()); // path ""
    }
    let f = frame(2, p);
    let (r, most) = peak(|| Message::decode(&f));
    assert!(r.is_err());
    assert!(most < 2048, "allocated {most} bytes");
}

#[test]
fn endpoint_name_claiming_2_60_bytes_allocates_nothing_for_it() {
    let mut p = 1u32.to_le_bytes().to_vec();
    p.extend(1u64.to_le_bytes());
    p.extend(HUGE.to_le_bytes());
    p.push(b'a');
    let f = frame(2, p);
    let (r, most) = peak(|| Message::decode(&f));
    assert_eq!(r, Err(DecodeError::LimitExceeded));
    assert!(most < 1024, "allocated {most} bytes");
}

#[test]
fn header_claiming_4_gib_reserves_nothing() {
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1][..]);
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let (r, most) = peak(|| dec.decode(&mut buf));
    assert_eq!(
        r,
        Err(FrameError::TooLarge {
            len: 0xffff_ffff,
            max: DEFAULT_MAX_FRAME
        })
    );
    assert_eq!(most, 0);
}

#[test]
fn a_claim_within_the_budget_allocates_less_than_twice_the_payload() {
    // A 600-byte Status payload has a 1024-byte budget: a string may claim
    // up to 1016 bytes and gets its buffer before the payload runs out.
    for claim in [100u64, 600, 1000, 1016] {
        let mut p = claim.to_le_bytes().to_vec();
        p.resize(600, b'x');
        let f = frame(6, p);
        let (r, most) = peak(|| Message::decode(&f));
        if claim + 8 == 600 {
            assert!(r.is_ok());
        } else {
            assert!(r.is_err(), "{claim}");
        }
        assert!(most < 2 * 600, "claim {claim}: allocated {most} bytes");
    }
}

#[test]
fn application_sequences_preallocate_at_most_serde_s_one_mib() {
    // Documented in codec.rs: serde's own cap, not the payload, bounds it.
    let p = HUGE.to_le_bytes();
    let (r, most) = peak(|| decode_body::<Vec<u32>>(&p));
    assert!(r.is_err());
    assert!(most <= 1024 * 1024, "allocated {most} bytes");
}

/// The bound the corpus replay relies on: an allocation over the limit in
/// force is recorded (and reported once), one within it is not, and the
/// limit ends with `with_limit`.
#[test]
fn an_allocation_over_the_limit_is_recorded() {
    let _ = alloc::take_excess();
    let within = with_limit(4096, || std::hint::black_box(vec![0u8; 1000]));
    assert_eq!(alloc::take_excess(), None);
    let over = with_limit(4096, || std::hint::black_box(vec![0u8; 5000]));
    assert_eq!(
        alloc::take_excess(),
        Some(Excess {
            size: 5000,
            limit: 4096
        })
    );
    assert_eq!(alloc::take_excess(), None, "reported once");
    assert_eq!(alloc::limit(), usize::MAX);
    let after = std::hint::black_box(vec![0u8; 5000]);
    assert_eq!(alloc::take_excess(), None, "no limit outside with_limit");
    assert_eq!(within.len() + over.len() + after.len(), 11_000);
}
