//! Fuzzing entry points: one function per target in `fuzz/fuzz_targets/`,
//! and [`app_body`] for fuzzing an application's own body type inside
//! readyfd frames.
//!
//! Hidden from the documentation but always compiled (as rustls does), so
//! that the fuzz targets stay one-liners and plain `cargo test` on stable
//! replays the committed corpus and every past crash through this very code
//! (`tests/corpus_replay.rs`). Every function accepts any bytes at all and
//! panics only when an invariant of this crate is violated: that panic is
//! the finding a fuzzer reports.
//!
//! # Allocation bound
//!
//! While an entry point runs, it publishes a bound on the size of any single
//! allocation it may legitimately make; [`alloc_limit`] reads it. A global
//! allocator that checks every allocation against it (the fuzz crate
//! installs one, and so does `tests/corpus_replay.rs`) turns a hostile length
//! that makes this crate reserve memory it has not received into a crash.
//! With `max` the frame maximum in force and `n` the input length, the
//! bounds are built from three facts:
//!
//! - byte buffers (`BytesMut` read buffers, `Vec` write buffers) hold at most
//!   one frame plus unread input, and amortised growth at most doubles them:
//!   `2 * (max + HEADER_LEN + n)`;
//! - bincode's decode limit is the smallest power of two at least the
//!   payload length (`codec.rs`), and a `String` that claims up to that
//!   limit gets its zeroed buffer before the read runs out of payload: less
//!   than `2 * payload` bytes;
//! - a decoded `Ready` holds one [`Endpoint`] (64 bytes in memory on 64-bit
//!   targets) per at least 20 payload bytes, doubled by growth:
//!   [`DECODE_EXPANSION`] times the payload.
//!
//! [`SLACK`] covers fixed-size allocations (hash tables, panic messages).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{decode_body, encode_body};
use crate::error::{DecodeError, EncodeError, FrameError, SessionError};
use crate::frame::{DEFAULT_MAX_FRAME, Frame, FrameDecoder, HEADER_LEN, encode_frame};
use crate::message::{
    Address, Endpoint, Goodbye, GoodbyeReason, Hello, Kind, MAGIC, Message, PROTOCOL_VERSION,
    Ready, RemoteError, RemoteErrorKind, RequestBody, ResponseBody, Role,
};
use crate::session::{Eof, Session, SessionConfig};

/// Room for allocations whose size does not depend on the input.
pub const SLACK: usize = 64 * 1024;

/// The fewest payload bytes one [`Endpoint`] takes: an empty name (8-byte
/// length), the `Address` variant (4) and an empty path or text (8).
const MIN_ENDPOINT_WIRE: usize = 8 + 4 + 8;

/// How many times its payload length a decoded message may occupy in one
/// allocation: the `Vec<Endpoint>` of a `Ready` (see the module docs). At
/// least 2, which covers bincode's power-of-two limit.
pub const DECODE_EXPANSION: usize = {
    let e = 2 * std::mem::size_of::<Endpoint>().div_ceil(MIN_ENDPOINT_WIRE);
    if e < 2 { 2 } else { e }
};

/// serde's `Vec`, `HashMap` and friends reserve up to 1 MiB for whatever
/// element count the input claims (`serde::__private::size_hint::cautious`).
/// readyfd's own messages avoid that (see `Ready`), application types do
/// not, so [`app_body`] allows it.
pub const SERDE_PREALLOC: usize = 1024 * 1024;

thread_local! {
    static ALLOC_LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The largest single allocation the entry point running on this thread may
/// make, or `usize::MAX` outside of one. It never allocates, so a global
/// allocator may call it.
pub fn alloc_limit() -> usize {
    ALLOC_LIMIT.try_with(Cell::get).unwrap_or(usize::MAX)
}

/// Publishes a limit for the guard's lifetime, restoring the previous one
/// on drop (also when an invariant panics).
struct LimitGuard(usize);

impl LimitGuard {
    fn set(limit: usize) -> Self {
        LimitGuard(ALLOC_LIMIT.with(|l| l.replace(limit)))
    }
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        let _ = ALLOC_LIMIT.try_with(|l| l.set(self.0));
    }
}

/// Fuzz input as a source of choices: reads past the end give zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0; N];
        let b = self.bytes(N);
        a[..b.len()].copy_from_slice(b);
        a
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// Up to 31 bytes as text (lossy, so the fuzzer still steers it).
    fn string(&mut self) -> String {
        let n = usize::from(self.byte() % 32);
        String::from_utf8_lossy(self.bytes(n)).into_owned()
    }

    /// Up to 63 bytes.
    fn blob(&mut self) -> Bytes {
        let n = usize::from(self.byte() % 64);
        Bytes::copy_from_slice(self.bytes(n))
    }

    /// A request id: mostly small, so that ids collide.
    fn id(&mut self) -> u64 {
        let b = self.byte();
        if b & 0x80 == 0 {
            u64::from(b & 7)
        } else {
            self.u64()
        }
    }

    fn option_u64(&mut self) -> Option<u64> {
        (self.byte() & 1 == 1).then(|| self.u64())
    }
}

// ---- (a) the frame decoder ------------------------------------------------

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
    let _limit = LimitGuard::set(2 * (max as usize + HEADER_LEN + input.len()) + SLACK);
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

// ---- (b) message decoding -------------------------------------------------

/// Fuzzes [`Message::decode`] and [`Message::encode`]: `data[0]` is a
/// frame's kind byte and the rest its payload. Asserts:
///
/// - a decoded message re-encodes, and that encoding decodes to the same
///   message;
/// - the encoding is canonical: re-encoding gives back the original payload
///   byte for byte. The one exception is a `Hello` of another protocol
///   version, of which only the magic and the version are read (the rest of
///   its layout belongs to that version), so only those six bytes must
///   match. (At the value level one more thing is lost: an IPv6 address's
///   flow info and scope id are not carried. The decoder never produces
///   them, so the bytes stay canonical);
/// - errors are classified (never the catch-all `Invalid`) and consistent:
///   an unknown kind is `UnknownKind`, `Notify` never fails, an empty
///   payload of any other kind is a truncation, a payload with trailing
///   bytes decodes once they are cut off, `BadMagic` shows the bytes found;
/// - application bodies, decoded as a few readyfd types, never panic and
///   re-encode canonically when they decode.
pub fn message_decode(data: &[u8]) {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let _limit = LimitGuard::set(DECODE_EXPANSION * data.len() + SLACK);
    check_frame(&Frame {
        kind,
        payload: Bytes::copy_from_slice(payload),
    });
}

fn check_frame(frame: &Frame) -> Option<Message> {
    let m = match Message::decode(frame) {
        Ok(m) => m,
        Err(e) => {
            check_decode_error(frame, &e);
            return None;
        }
    };
    assert_eq!(m.kind() as u8, frame.kind);
    let mut wire = Vec::new();
    m.encode(u32::MAX, &mut wire)
        .unwrap_or_else(|e| panic!("decoded {m:?} does not re-encode: {e}"));
    let len = u32::from_le_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
    assert_eq!(len + HEADER_LEN, wire.len(), "header length");
    let again = Message::decode(&Frame {
        kind: wire[4],
        payload: Bytes::copy_from_slice(&wire[HEADER_LEN..]),
    });
    assert_eq!(again.as_ref(), Ok(&m), "decode(encode(m)) != m");
    match &m {
        Message::Hello(h) if h.version != PROTOCOL_VERSION => {
            assert_eq!(wire[HEADER_LEN..HEADER_LEN + 6], frame.payload[..6]);
            assert_eq!((h.pid, h.role, h.max_frame), (0, Role::Parent, 0));
        }
        _ => assert_eq!(
            wire[HEADER_LEN..],
            frame.payload[..],
            "encoding of {m:?} is not canonical"
        ),
    }
    match &m {
        Message::Request {
            body: RequestBody::App(b),
            ..
        }
        | Message::Response {
            body: ResponseBody::App(b),
            ..
        }
        | Message::Notify(b) => {
            assert!(
                frame.payload.ends_with(b),
                "an application body is the payload's tail"
            );
            poke_body::<String>(b);
            poke_body::<Ready>(b);
            poke_body::<Goodbye>(b);
            // No `Vec`: serde pre-allocates up to 1 MiB for a claimed
            // count (see codec.rs), which `app_body` covers instead.
            poke_body::<(u8, Option<String>, [u8; 3], bool)>(b);
        }
        _ => {}
    }
    Some(m)
}

fn check_decode_error(frame: &Frame, e: &DecodeError) {
    let p = &frame.payload;
    let kind = match Kind::from_byte(frame.kind) {
        Ok(kind) => kind,
        Err(_) => {
            assert_eq!(*e, DecodeError::UnknownKind(frame.kind));
            return;
        }
    };
    assert!(
        kind != Kind::Notify,
        "a Notify payload is opaque, yet it failed: {e:?}"
    );
    if p.is_empty() {
        assert!(
            matches!(e, DecodeError::UnexpectedEnd { .. }),
            "empty {kind:?} payload gave {e:?}, not a truncation"
        );
    }
    match e {
        DecodeError::UnknownKind(_) => panic!("known kind {kind:?} reported unknown"),
        DecodeError::TrailingBytes { extra } => {
            assert!(
                *extra > 0 && *extra < p.len(),
                "{e:?} of a {}-byte payload",
                p.len()
            );
            let cut = Frame {
                kind: frame.kind,
                payload: p.slice(..p.len() - extra),
            };
            if let Err(e2) = Message::decode(&cut) {
                panic!("{e:?}, yet without them: {e2:?}");
            }
        }
        DecodeError::BadMagic(found) => {
            assert_eq!(kind, Kind::Hello);
            assert_eq!(found[..], p[..4]);
            assert_ne!(*found, MAGIC);
        }
        DecodeError::Invalid(what) => panic!("unclassified decode error: {what}"),
        DecodeError::UnexpectedEnd { .. }
        | DecodeError::InvalidUtf8
        | DecodeError::InvalidTag { .. }
        | DecodeError::LimitExceeded => {}
    }
}

/// Decodes `body` as a `T`; if it decodes, its encoding must be `body`.
fn poke_body<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(body: &[u8]) {
    if let Ok(v) = decode_body::<T>(body) {
        let enc = encode_body(&v, usize::MAX).expect("a decoded body re-encodes");
        assert_eq!(enc[..], body[..], "body encoding of {v:?} is not canonical");
    }
}

// ---- (c) the session ------------------------------------------------------

// At least MIN_MAX_FRAME (4096): smaller maxima are raised to it.
const SESSION_MAXES: [u32; 4] = [4096, 4100, 5000, 65_536];
const SESSION_UNANSWERED: [usize; 4] = [0, 1, 3, 65_536];

/// Queued output is handed to the peer once it grows past this.
const FLUSH_AT: usize = 8 * 1024;

/// Fuzzes [`Session`]: a parent and a child, each driven as a real driver
/// would, plus forged input. `data[0]` and `data[1]` pick each side's
/// limits; then each step takes an op byte (low bit: which side) and
/// operands:
///
/// - forged bytes, or a forged (well-formed, arbitrary) message, fed to the
///   side's `handle_input`;
/// - an honest call of the side's API (`send_*`, responses to its peer's
///   unanswered requests or to made-up ids, `abandon_request`);
/// - delivery of part of the side's output to the other side;
/// - `handle_eof`.
///
/// At the end all output is delivered and both sides see EOF. Asserts, on a
/// model kept beside each session:
///
/// - the set of outstanding request ids is exactly ours (sent, minus
///   answered, minus abandoned); new ids are fresh and increasing;
/// - the peer's unanswered requests are exactly those surfaced as events
///   and not yet answered: answering one succeeds once, any other id is
///   `NotAllowed`; never more than `max_unanswered`;
/// - every `send_*` result is the one the rules predict (`Closed` after
///   Goodbye, `NotAllowed` by role, otherwise success unless the frame is
///   over the peer's maximum), and a typed send queues the same bytes as
///   the untyped message with a pre-encoded body;
/// - events respect the rules (Hello first and once, nothing after
///   Goodbye, no Ping, Ready once from a child, responses only to
///   outstanding ids);
/// - failure is sticky, and each error agrees with the model (an unknown
///   response id is not outstanding, a duplicate id is unanswered...);
/// - two honest sides never fail, except for the limits an honest sender
///   cannot know (`TooManyRequests`, and a frame over the receiver's
///   maximum sent before the receiver's Hello arrived);
/// - EOF is classified `Silent`, `AfterGoodbye` or `Abrupt` as the model
///   predicts.
pub fn session(data: &[u8]) {
    let mut u = Input(data);
    let configs = [session_config(u.byte()), session_config(u.byte())];
    let biggest = configs
        .iter()
        .map(|c| c.max_frame as usize)
        .max()
        .unwrap_or(0);
    let _limit =
        LimitGuard::set(DECODE_EXPANSION * (biggest + HEADER_LEN + FLUSH_AT + data.len()) + SLACK);
    let mut sides = [
        Side::new(Role::Parent, 100, configs[0]),
        Side::new(Role::Child, 200, configs[1]),
    ];
    while !u.is_empty() {
        let op = u.byte();
        let [parent, child] = &mut sides;
        let (me, peer) = if op & 1 == 0 {
            (parent, child)
        } else {
            (child, parent)
        };
        match (op >> 1) % 8 {
            0 => {
                let n = usize::from(u.byte());
                me.receive(u.bytes(n), true);
            }
            1 => {
                let m = arbitrary_message(&mut u);
                let mut wire = Vec::new();
                m.encode(u32::MAX, &mut wire)
                    .expect("an arbitrary message encodes");
                me.receive(&wire, true);
            }
            2 | 3 => me.send(&mut u, peer),
            4 => {
                let n = usize::from(u.byte());
                me.deliver(if n == 0 { usize::MAX } else { n }, peer);
            }
            5 => me.abandon(&mut u),
            6 => me.eof(),
            _ => me.respond(&mut u, peer),
        }
        for side in [&mut *me, &mut *peer] {
            side.flush();
        }
        if me.pending.len() > FLUSH_AT {
            me.deliver(usize::MAX, peer);
        }
        let honest = !me.forged && !peer.forged;
        me.check(honest);
        peer.check(honest);
    }
    // Let the conversation settle (pongs answer pings), then end it.
    for _ in 0..3 {
        let [parent, child] = &mut sides;
        parent.deliver(usize::MAX, child);
        child.flush();
        child.deliver(usize::MAX, parent);
        parent.flush();
    }
    let honest = !sides[0].forged && !sides[1].forged;
    for side in &mut sides {
        side.eof();
        side.check(honest);
    }
}

fn session_config(b: u8) -> SessionConfig {
    SessionConfig {
        max_frame: SESSION_MAXES[usize::from(b & 3)],
        max_unanswered: SESSION_UNANSWERED[usize::from((b >> 2) & 3)],
    }
}

/// One side and the model of what its session must hold.
struct Side {
    s: Session,
    role: Role,
    config: SessionConfig,
    /// Delivered, not yet consumed.
    rx: BytesMut,
    /// Taken from `poll_transmit`, not yet delivered.
    pending: Vec<u8>,
    failed: Option<SessionError>,
    ended: bool,
    received_any: bool,
    /// This side was fed bytes its honest peer did not produce.
    forged: bool,
    /// The peer sent a frame over our maximum before it had our Hello.
    may_see_too_large: bool,
    outstanding: BTreeSet<u64>,
    unanswered: BTreeSet<u64>,
    last_id: u64,
    peer_hello: bool,
    ready: bool,
    goodbye_sent: bool,
    goodbye_received: bool,
}

impl Side {
    fn new(role: Role, pid: u32, config: SessionConfig) -> Self {
        Side {
            s: Session::new(role, pid, config),
            role,
            config,
            rx: BytesMut::new(),
            pending: Vec::new(),
            failed: None,
            ended: false,
            received_any: false,
            forged: false,
            may_see_too_large: false,
            outstanding: BTreeSet::new(),
            unanswered: BTreeSet::new(),
            last_id: 0,
            peer_hello: false,
            ready: false,
            goodbye_sent: false,
            goodbye_received: false,
        }
    }

    fn flush(&mut self) {
        let _ = self.s.poll_transmit(&mut self.pending);
        assert_eq!(self.s.transmit_len(), 0);
    }

    fn receive(&mut self, bytes: &[u8], forged: bool) {
        if self.ended {
            return; // the stream has ended; nothing more arrives
        }
        self.forged |= forged;
        self.received_any |= !bytes.is_empty();
        self.rx.extend_from_slice(bytes);
        let was_failed = self.failed.is_some();
        let r = self.s.handle_input(&mut self.rx);
        self.drain_events(was_failed);
        self.settle(r.map(|()| None));
    }

    fn deliver(&mut self, n: usize, peer: &mut Side) {
        let n = n.min(self.pending.len());
        let bytes: Vec<u8> = self.pending.drain(..n).collect();
        peer.receive(&bytes, false);
    }

    fn eof(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        let was_failed = self.failed.is_some();
        let r = self.s.handle_eof(&mut self.rx);
        self.drain_events(was_failed);
        if let (None, Ok(eof)) = (&self.failed, &r) {
            let expect = if !self.received_any {
                Eof::Silent
            } else if self.goodbye_received {
                Eof::AfterGoodbye
            } else {
                Eof::Abrupt
            };
            assert_eq!(*eof, expect);
            assert!(self.rx.is_empty(), "clean EOF with bytes left over");
        }
        self.settle(r.map(Some));
    }

    /// Checks an input result against the stickiness rule and the model.
    fn settle(&mut self, r: Result<Option<Eof>, SessionError>) {
        match (&self.failed, r) {
            (Some(f), r) => assert_eq!(r, Err(f.clone()), "failure is not sticky"),
            (None, Ok(_)) => {}
            (None, Err(e)) => {
                self.check_error(&e);
                self.failed = Some(e);
            }
        }
    }

    fn drain_events(&mut self, was_failed: bool) {
        while let Some(m) = self.s.poll_event() {
            assert!(!was_failed, "an event after failure: {m:?}");
            assert!(!self.goodbye_received, "an event after Goodbye: {m:?}");
            if let Message::Hello(h) = &m {
                assert!(!self.peer_hello, "second Hello surfaced");
                assert_eq!(h.version, PROTOCOL_VERSION);
                assert_ne!(h.role, self.role);
                assert_eq!(self.s.peer(), Some(h));
                self.peer_hello = true;
                continue;
            }
            assert!(self.peer_hello, "{m:?} surfaced before Hello");
            match m {
                Message::Hello(_) => unreachable!(),
                Message::Ready(_) => {
                    assert_eq!(self.role, Role::Parent, "a child received Ready");
                    assert!(!self.ready, "second Ready surfaced");
                    self.ready = true;
                }
                Message::Status(_) => {
                    assert_eq!(self.role, Role::Parent, "a child received Status")
                }
                Message::Request { id, body } => {
                    assert!(body != RequestBody::Ping, "Ping surfaced");
                    if matches!(body, RequestBody::Shutdown { .. }) {
                        assert_eq!(self.role, Role::Child, "a parent received Shutdown");
                    }
                    assert!(
                        self.unanswered.insert(id),
                        "request id {id} surfaced twice while unanswered"
                    );
                    assert!(self.unanswered.len() <= self.config.max_unanswered);
                }
                Message::Response { id, .. } => {
                    assert!(
                        self.outstanding.remove(&id),
                        "response to {id}, which is not outstanding"
                    );
                }
                Message::Notify(_) => {}
                Message::Goodbye(_) => {
                    self.goodbye_received = true;
                    self.unanswered.clear();
                }
            }
        }
    }

    /// An error from input: it must agree with the model.
    fn check_error(&self, e: &SessionError) {
        match e {
            SessionError::UnknownResponseId(id) => assert!(!self.outstanding.contains(id)),
            SessionError::DuplicateRequestId(id) => assert!(self.unanswered.contains(id)),
            SessionError::TooManyRequests(n) => {
                assert_eq!(*n, self.config.max_unanswered);
                assert!(self.unanswered.len() >= *n);
            }
            SessionError::AfterGoodbye(_) => assert!(self.goodbye_received),
            SessionError::DuplicateHello => assert!(self.peer_hello),
            SessionError::HelloExpected(_) | SessionError::VersionMismatch { .. } => {
                assert!(!self.peer_hello);
                if let SessionError::VersionMismatch { ours, theirs } = e {
                    assert_eq!(*ours, PROTOCOL_VERSION);
                    assert_ne!(*theirs, PROTOCOL_VERSION);
                }
            }
            SessionError::RoleConflict(r) => {
                assert!(!self.peer_hello);
                assert_eq!(*r, self.role);
            }
            SessionError::MaxFrameTooSmall { announced, min } => {
                assert!(!self.peer_hello);
                assert!(announced < min && *min == crate::MIN_MAX_FRAME);
            }
            SessionError::SecondReady => assert!(self.ready && self.role == Role::Parent),
            SessionError::WrongDirection { role, .. } => {
                assert!(self.peer_hello);
                assert_ne!(*role, self.role);
            }
            SessionError::Frame(FrameError::TooLarge { max, .. }) => {
                assert_eq!(*max, self.config.max_frame)
            }
            SessionError::Frame(FrameError::Truncated { have, need }) => assert!(have < need),
            SessionError::Closed | SessionError::NotAllowed(_) => {
                panic!("input failed with a send error: {e:?}")
            }
            // Every peer accepts at least MIN_MAX_FRAME, so an automatic
            // answer always fits: input can never fail to encode.
            SessionError::Encode(_) => panic!("input failed with an encode error: {e:?}"),
            SessionError::Decode(_) => {}
        }
    }

    /// Model invariants, and the honest-peers rule.
    fn check(&mut self, honest: bool) {
        assert_eq!(self.s.role(), self.role);
        let outstanding: BTreeSet<u64> = self.s.outstanding().collect();
        assert_eq!(
            outstanding, self.outstanding,
            "outstanding ids differ from the model"
        );
        assert_eq!(self.s.is_ready(), self.ready);
        assert_eq!(self.s.goodbye_sent(), self.goodbye_sent);
        assert_eq!(self.s.goodbye_received(), self.goodbye_received);
        assert_eq!(self.s.peer().is_some(), self.peer_hello);
        let peer_max = self.s.peer().map_or(DEFAULT_MAX_FRAME, |h| h.max_frame);
        assert_eq!(self.s.peer_max_frame(), peer_max);
        if let Some(f) = &self.failed {
            assert_eq!(
                self.s.handle_input(&mut BytesMut::new()),
                Err(f.clone()),
                "failure is not sticky"
            );
            if honest {
                let excused = match f {
                    SessionError::TooManyRequests(_) => true,
                    SessionError::Frame(FrameError::TooLarge { .. }) => self.may_see_too_large,
                    SessionError::Frame(FrameError::Truncated { .. }) => self.ended,
                    _ => false,
                };
                assert!(
                    excused,
                    "two honest sides, and the {} failed: {f}",
                    self.role
                );
            }
        }
    }

    /// Records a successful send of a `len`-byte frame: the peer may see it
    /// over its maximum if we did not know that maximum yet.
    fn sent(&mut self, len: usize, peer: &mut Side) {
        if self.s.peer().is_none() && len > HEADER_LEN + peer.config.max_frame as usize {
            peer.may_see_too_large = true;
        }
    }

    /// `s.transmit_len()` before a send, with our Hello queued (every send
    /// queues it first, even one that then fails).
    fn mark(&mut self) -> usize {
        self.s.send_hello();
        self.s.transmit_len()
    }

    fn send(&mut self, u: &mut Input<'_>, peer: &mut Side) {
        let closed = self.goodbye_sent;
        let before = self.mark();
        let peer_max = self.s.peer_max_frame();
        match u.byte() % 9 {
            0 => {
                self.s.send_hello();
                assert_eq!(self.s.transmit_len(), before, "second Hello queued");
            }
            1 => {
                let ready = arbitrary_ready(u);
                let r = self.s.send_ready(&ready);
                let refused = (self.role != Role::Child || self.ready).then_some(());
                if let Some(len) =
                    self.expect(r, closed, refused, &Message::Ready(ready), before, peer_max)
                {
                    self.ready = true;
                    self.sent(len, peer);
                }
            }
            2 => {
                let status = u.string();
                let r = self.s.send_status(&status);
                let refused = (self.role != Role::Child).then_some(());
                if let Some(len) = self.expect(
                    r,
                    closed,
                    refused,
                    &Message::Status(status),
                    before,
                    peer_max,
                ) {
                    self.sent(len, peer);
                }
            }
            3..=5 => {
                let body = match u.byte() % 3 {
                    0 => RequestBody::Ping,
                    1 => RequestBody::Shutdown {
                        grace_ms: u.option_u64(),
                    },
                    _ => RequestBody::App(u.blob()),
                };
                let shutdown = matches!(body, RequestBody::Shutdown { .. });
                let r = self.s.send_request(body.clone());
                let refused = (shutdown && self.role != Role::Parent).then_some(());
                self.expect_request(r, closed, refused, body, before, peer_max, peer);
            }
            6 => {
                let text = u.string();
                let r = self.s.send_app_request(&text);
                let body = RequestBody::App(
                    encode_body(&text, usize::MAX)
                        .expect("a string encodes")
                        .into(),
                );
                self.expect_request(r, closed, None, body, before, peer_max, peer);
            }
            7 => {
                let text = u.string();
                let r = self.s.send_notify(&text);
                let body = encode_body(&text, usize::MAX).expect("a string encodes");
                if let Some(len) = self.expect(
                    r,
                    closed,
                    None,
                    &Message::Notify(body.into()),
                    before,
                    peer_max,
                ) {
                    self.sent(len, peer);
                }
            }
            _ => {
                let reason = arbitrary_reason(u);
                let text = u.string();
                let r = self.s.send_goodbye(reason, &text);
                let g = Message::Goodbye(Goodbye {
                    reason,
                    message: text,
                });
                if let Some(len) = self.expect(r, closed, None, &g, before, peer_max) {
                    self.goodbye_sent = true;
                    self.sent(len, peer);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn expect_request(
        &mut self,
        r: Result<u64, SessionError>,
        closed: bool,
        refused: Option<()>,
        body: RequestBody,
        before: usize,
        peer_max: u32,
        peer: &mut Side,
    ) {
        let id = *r.as_ref().unwrap_or(&(self.last_id + 1));
        let msg = Message::Request { id, body };
        if let Some(len) = self.expect(r.map(|_| ()), closed, refused, &msg, before, peer_max) {
            assert!(id > self.last_id, "request id {id} is not fresh");
            self.last_id = id;
            assert!(self.outstanding.insert(id));
            self.sent(len, peer);
        }
    }

    /// Checks a send's result against the rules; on success, that exactly
    /// `msg`'s frame was queued. Returns that frame's length on success.
    fn expect(
        &mut self,
        r: Result<(), SessionError>,
        closed: bool,
        refused: Option<()>,
        msg: &Message,
        before: usize,
        peer_max: u32,
    ) -> Option<usize> {
        let mut want = Vec::new();
        let fits = msg.encode(peer_max, &mut want).is_ok();
        match r {
            Ok(()) => {
                assert!(
                    !closed && refused.is_none() && fits,
                    "{msg:?} was sent against the rules"
                );
                let mut queued = Vec::new();
                let _ = self.s.poll_transmit(&mut queued);
                assert_eq!(
                    queued[before..],
                    want[..],
                    "queued bytes differ from {msg:?}"
                );
                self.pending.extend_from_slice(&queued);
                Some(want.len())
            }
            Err(e) => {
                assert_eq!(self.s.transmit_len(), before, "a failed send queued bytes");
                match e {
                    SessionError::Closed => assert!(closed),
                    SessionError::NotAllowed(_) => {
                        assert!(!closed && refused.is_some(), "{msg:?}: {e}")
                    }
                    SessionError::Encode(EncodeError::TooLarge { max, .. }) => {
                        assert!(!closed && refused.is_none() && !fits, "{msg:?}: {e}");
                        assert_eq!(max, peer_max as usize);
                    }
                    e => panic!("send of {msg:?} failed with {e:?}"),
                }
                None
            }
        }
    }

    fn respond(&mut self, u: &mut Input<'_>, peer: &mut Side) {
        let closed = self.goodbye_sent;
        let pick = u.byte();
        let id = match self.unanswered.iter().nth(usize::from(pick >> 1)) {
            Some(&id) if pick & 1 == 1 => id,
            _ => u.id(),
        };
        let refused = (!self.unanswered.contains(&id)).then_some(());
        let before = self.mark();
        let peer_max = self.s.peer_max_frame();
        let (r, body) = match u.byte() % 5 {
            0 => (self.s.send_response(id, ResponseBody::Ok), ResponseBody::Ok),
            1 => {
                let b = ResponseBody::App(u.blob());
                (self.s.send_response(id, b.clone()), b)
            }
            2 => {
                let b = ResponseBody::Error(RemoteError {
                    kind: arbitrary_error_kind(u),
                    message: u.string(),
                });
                (self.s.send_response(id, b.clone()), b)
            }
            _ => {
                let text = u.string();
                let r = self.s.send_app_response(id, &text);
                let b = ResponseBody::App(
                    encode_body(&text, usize::MAX)
                        .expect("a string encodes")
                        .into(),
                );
                (r, b)
            }
        };
        if let Some(len) = self.expect(
            r,
            closed,
            refused,
            &Message::Response { id, body },
            before,
            peer_max,
        ) {
            assert!(self.unanswered.remove(&id));
            self.sent(len, peer);
        }
    }

    fn abandon(&mut self, u: &mut Input<'_>) {
        let pick = u.byte();
        let id = match self.outstanding.iter().nth(usize::from(pick >> 1)) {
            Some(&id) if pick & 1 == 1 => id,
            _ => u.id(),
        };
        self.s.abandon_request(id);
        self.outstanding.remove(&id);
    }
}

fn arbitrary_role(b: u8) -> Role {
    if b & 1 == 0 {
        Role::Parent
    } else {
        Role::Child
    }
}

fn arbitrary_reason(u: &mut Input<'_>) -> GoodbyeReason {
    match u.byte() % 4 {
        0 => GoodbyeReason::Done,
        1 => GoodbyeReason::ShuttingDown,
        2 => GoodbyeReason::ProtocolError,
        _ => GoodbyeReason::VersionMismatch,
    }
}

fn arbitrary_error_kind(u: &mut Input<'_>) -> RemoteErrorKind {
    match u.byte() % 5 {
        0 => RemoteErrorKind::Unsupported,
        1 => RemoteErrorKind::BadRequest,
        2 => RemoteErrorKind::Failed,
        3 => RemoteErrorKind::ShuttingDown,
        _ => RemoteErrorKind::Dropped,
    }
}

fn arbitrary_socket_addr(u: &mut Input<'_>) -> SocketAddr {
    if u.byte() & 1 == 0 {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u.array::<4>()), u.u16()))
    } else {
        // flowinfo and scope id are not carried on the wire (PROTOCOL.md).
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(u.array::<16>()),
            u.u16(),
            0,
            0,
        ))
    }
}

fn arbitrary_address(u: &mut Input<'_>) -> Address {
    match u.byte() % 4 {
        0 => Address::Tcp(arbitrary_socket_addr(u)),
        1 => Address::Udp(arbitrary_socket_addr(u)),
        2 => Address::Unix(u.string()),
        _ => Address::Text(u.string()),
    }
}

fn arbitrary_ready(u: &mut Input<'_>) -> Ready {
    let mut ready = Ready::new(u.u32());
    for _ in 0..u.byte() % 4 {
        let name = u.string();
        ready = ready.address(name, arbitrary_address(u));
    }
    if u.byte() & 1 == 1 {
        ready = ready.status(u.string());
    }
    ready
}

/// A well-formed message with arbitrary fields (it may break every session
/// rule).
fn arbitrary_message(u: &mut Input<'_>) -> Message {
    match u.byte() % 7 {
        0 => Message::Hello(Hello {
            version: if u.byte() & 3 == 0 {
                u.u16()
            } else {
                PROTOCOL_VERSION
            },
            pid: u.u32(),
            role: arbitrary_role(u.byte()),
            max_frame: u.u32(),
        }),
        1 => Message::Ready(arbitrary_ready(u)),
        2 => Message::Request {
            id: u.id(),
            body: match u.byte() % 3 {
                0 => RequestBody::Ping,
                1 => RequestBody::Shutdown {
                    grace_ms: u.option_u64(),
                },
                _ => RequestBody::App(u.blob()),
            },
        },
        3 => Message::Response {
            id: u.id(),
            body: match u.byte() % 3 {
                0 => ResponseBody::Ok,
                1 => ResponseBody::App(u.blob()),
                _ => ResponseBody::Error(RemoteError {
                    kind: arbitrary_error_kind(u),
                    message: u.string(),
                }),
            },
        },
        4 => Message::Notify(u.blob()),
        5 => Message::Status(u.string()),
        _ => Message::Goodbye(Goodbye {
            reason: arbitrary_reason(u),
            message: u.string(),
        }),
    }
}

// ---- (d) an application's own body type -----------------------------------

/// Fuzzes an application's body type `T` as readyfd carries it. Call it
/// from your own fuzz target:
///
/// ```no_run
/// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)] struct MyRequest;
/// // fuzz/fuzz_targets/my_request.rs:
/// // libfuzzer_sys::fuzz_target!(|data: &[u8]| readyfd_proto::fuzzing::app_body::<MyRequest>(data));
/// readyfd_proto::fuzzing::app_body::<MyRequest>(b"\x00");
/// ```
///
/// If `data[0]` is even, the rest is one body; if odd, the rest is a byte
/// stream whose `Request`, `Response` and `Notify` frames carry the bodies.
/// For each body that decodes as a `T`, asserts that it re-encodes, that
/// the re-encoding decodes to an equal `T`, and that a typed request,
/// response and notification carrying it between two [`Session`]s arrive
/// with exactly those bytes and that value.
///
/// `T`'s `PartialEq` must hold for every decoded value (no `f32`/`f64` that
/// can be NaN). Byte-for-byte equality with the original body is not
/// asserted: a `HashMap` with duplicate keys, for one, decodes fine and
/// re-encodes shorter. bincode has no recursion limit: a recursive `T`
/// (`enum Tree { Node(Vec<Tree>) }`) lets a deep enough body overflow the
/// stack, so bound the depth in the type or check the input length. The
/// allocation bound allows [`SERDE_PREALLOC`] on top of
/// [`DECODE_EXPANSION`] times the input, which assumes `T` is not much
/// larger in memory than on the wire.
pub fn app_body<T>(data: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let _limit = LimitGuard::set(DECODE_EXPANSION * data.len() + SERDE_PREALLOC + SLACK);
    if mode & 1 == 0 {
        check_app_body::<T>(rest);
        return;
    }
    let mut dec = FrameDecoder::new(u32::try_from(rest.len()).unwrap_or(u32::MAX));
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(frame)) = dec.decode(&mut buf) {
        if let Ok(
            Message::Notify(body)
            | Message::Request {
                body: RequestBody::App(body),
                ..
            }
            | Message::Response {
                body: ResponseBody::App(body),
                ..
            },
        ) = Message::decode(&frame)
        {
            check_app_body::<T>(&body);
        }
    }
}

fn check_app_body<T>(body: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    let Ok(value) = decode_body::<T>(body) else {
        return;
    };
    let bytes = encode_body(&value, usize::MAX).expect("a decoded body re-encodes");
    let again: T = decode_body(&bytes).expect("a re-encoded body decodes");
    assert_eq!(again, value, "decode(encode(value)) != value");

    let mut parent = Session::new(Role::Parent, 1, SessionConfig::default());
    let mut child = Session::new(Role::Child, 2, SessionConfig::default());
    let id = parent
        .send_app_request(&value)
        .expect("a typed request is sent");
    parent.send_notify(&value).expect("a typed notify is sent");
    let mut wire = Vec::new();
    let _ = parent.poll_transmit(&mut wire);
    child
        .handle_input(&mut BytesMut::from(&wire[..]))
        .expect("the child accepts it");
    assert!(matches!(child.poll_event(), Some(Message::Hello(_))));
    let Some(Message::Request {
        id: got,
        body: RequestBody::App(b),
    }) = child.poll_event()
    else {
        panic!("the typed request did not arrive")
    };
    assert_eq!(
        (got, &b[..]),
        (id, &bytes[..]),
        "the typed request differs from encode_body"
    );
    let Some(Message::Notify(b)) = child.poll_event() else {
        panic!("the typed notify did not arrive")
    };
    assert_eq!(
        b[..],
        bytes[..],
        "the typed notify differs from encode_body"
    );
    let v: T = decode_body(&b).expect("the body decodes on arrival");
    assert_eq!(v, value);

    child
        .send_app_response(id, &value)
        .expect("a typed response is sent");
    let mut wire = Vec::new();
    let _ = child.poll_transmit(&mut wire);
    parent
        .handle_input(&mut BytesMut::from(&wire[..]))
        .expect("the parent accepts it");
    assert!(matches!(parent.poll_event(), Some(Message::Hello(_))));
    let Some(Message::Response {
        id: got,
        body: ResponseBody::App(b),
    }) = parent.poll_event()
    else {
        panic!("the typed response did not arrive")
    };
    assert_eq!(
        (got, &b[..]),
        (id, &bytes[..]),
        "the typed response differs from encode_body"
    );
}

/// A stand-in application body for the `app_body` fuzz target: most shapes
/// of the serde data model an application uses (not floats, see
/// [`app_body`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum ExampleBody {
    Config {
        name: String,
        verbose: bool,
        workers: Option<u16>,
        tags: Vec<String>,
        limits: BTreeMap<String, u64>,
    },
    Job(u64, Vec<u8>, char),
    Listen(Vec<Address>, Option<Endpoint>),
    Pair((i32, i64), [u8; 3], u128),
    Unit,
    Nested(Vec<Vec<u32>>),
    Reply(Result<Ready, RemoteError>),
}
