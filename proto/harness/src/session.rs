//! The `session` target: a parent and a child [`Session`] driven as real
//! drivers would, with forged input mixed in, each checked against a model
//! of what its session must hold.

use std::collections::{BTreeSet, VecDeque};

use bytes::BytesMut;
use readyfd_proto::codec::encode_body;
use readyfd_proto::{
    DEFAULT_MAX_FRAME, EncodeError, Eof, FrameError, Goodbye, HEADER_LEN, MAX_FDS_PER_FRAME,
    MIN_MAX_FRAME, Message, PROTOCOL_VERSION, READ_AHEAD, RemoteError, RequestBody, ResponseBody,
    Role, Session, SessionConfig, SessionError,
};

use crate::alloc::{DECODE_EXPANSION, LimitGuard, SLACK};
use crate::input::{
    Input, arbitrary_error_kind, arbitrary_message, arbitrary_ready, arbitrary_reason,
};

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
/// File descriptors (counted, as the session counts them): bit 4 of an op
/// byte attaches fds, forged input with a count of its own (bit 5: a
/// truncated control message), honest sends (`Ready`, application
/// requests, responses and notifications) with 1 to 253. Delivery follows
/// the kernel: a read that reaches the first byte of a frame sent with fds
/// brings them and ends no later than that frame. Asserts, beside the
/// rules below: the counts the session hands out plus those it holds are
/// exactly the fds it was given (until it fails, then no more than that);
/// it never holds more than one frame's worth; an honest peer's fds come
/// out with its frames, in order, with their counts.
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
    let mut u = Input::new(data);
    let configs = [session_config(u.byte()), session_config(u.byte())];
    let biggest = configs
        .iter()
        .map(|c| c.max_frame as usize)
        .max()
        .unwrap_or(0);
    let _limit = LimitGuard::set(
        DECODE_EXPANSION * (biggest + HEADER_LEN + READ_AHEAD + FLUSH_AT + data.len()) + SLACK,
    );
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
        let with_fds = op & 0x10 != 0;
        me.next_fds = if with_fds && matches!((op >> 1) % 8, 2 | 3 | 7) {
            honest_fd_count(u.byte())
        } else {
            0
        };
        match (op >> 1) % 8 {
            0 => {
                let (fds, truncated) = if with_fds {
                    (usize::from(u.byte()), op & 0x20 != 0)
                } else {
                    (0, false)
                };
                let n = usize::from(u.byte());
                me.receive(u.bytes(n), true, fds, truncated);
            }
            1 => {
                let m = arbitrary_message(&mut u);
                let mut wire = Vec::new();
                m.encode(u32::MAX, &mut wire)
                    .expect("an arbitrary message encodes");
                me.receive(&wire, true, 0, false);
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
        me.next_fds = 0;
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

/// 1 to 3 fds mostly, sometimes the most a frame may carry.
fn honest_fd_count(b: u8) -> usize {
    if b == 0xff {
        MAX_FDS_PER_FRAME
    } else {
        1 + usize::from(b % 3)
    }
}

fn session_config(b: u8) -> SessionConfig {
    SessionConfig::new()
        .max_frame(SESSION_MAXES[usize::from(b & 3)])
        .max_unanswered(SESSION_UNANSWERED[usize::from((b >> 2) & 3)])
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
    /// fds attached to our next honest send (0: none).
    next_fds: usize,
    /// Frames in `pending` sent with fds: offset in `pending`, length,
    /// count.
    marks: VecDeque<(usize, usize, usize)>,
    /// fds handed to the session, and counted out of it in events.
    fds_in: usize,
    fds_out: usize,
    /// Counts of the honest peer's fd-carrying frames delivered to us, in
    /// order, not yet seen in an event.
    expected_fds: VecDeque<usize>,
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
            next_fds: 0,
            marks: VecDeque::new(),
            fds_in: 0,
            fds_out: 0,
            expected_fds: VecDeque::new(),
        }
    }

    fn flush(&mut self) {
        let _ = self.s.poll_transmit(&mut self.pending);
        assert_eq!(self.s.transmit_len(), 0);
    }

    fn receive(&mut self, bytes: &[u8], forged: bool, fds: usize, truncated: bool) {
        if self.ended {
            return; // the stream has ended; nothing more arrives
        }
        self.forged |= forged;
        self.received_any |= !bytes.is_empty();
        self.rx.extend_from_slice(bytes);
        self.fds_in += fds;
        let was_failed = self.failed.is_some();
        let r = self
            .s
            .handle_input_fds(&mut self.rx, bytes.len(), fds, truncated);
        self.drain_events(was_failed);
        self.settle(r.map(|()| None));
    }

    /// Delivers up to `n` bytes as one read, as the kernel would: a read
    /// that reaches the first byte of a frame sent with fds brings them and
    /// ends no later than that frame's end.
    fn deliver(&mut self, n: usize, peer: &mut Side) {
        let mut n = n.min(self.pending.len());
        let mut fds = 0;
        if let Some(&(at, len, count)) = self.marks.front() {
            if at < n {
                n = n.min(at + len);
                fds = count;
                self.marks.pop_front();
            }
        }
        for m in &mut self.marks {
            m.0 -= n;
        }
        let bytes: Vec<u8> = self.pending.drain(..n).collect();
        if fds > 0 && !peer.ended {
            peer.expected_fds.push_back(fds);
        }
        peer.receive(&bytes, false, fds, false);
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
        while let Some(event) = self.s.poll_event_fds() {
            assert!(!was_failed, "an event after failure: {event:?}");
            self.fds_out += event.fds;
            if event.fds > 0 && !self.forged {
                assert_eq!(
                    self.expected_fds.pop_front(),
                    Some(event.fds),
                    "fds out of order"
                );
            }
            let Some(m) = event.message else {
                assert!(event.fds > 0, "an empty event");
                continue;
            };
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
                m => panic!("a message the model does not know: {m:?}"),
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
                assert!(announced < min && *min == MIN_MAX_FRAME);
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
            SessionError::FdCountMismatch {
                announced, arrived, ..
            } => assert_ne!(announced, arrived),
            SessionError::UnexpectedFds(n) => assert!(*n > 0),
            SessionError::FdsTruncated => {}
            e => panic!("a session error the model does not know: {e:?}"),
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
        if self.failed.is_none() {
            assert_eq!(
                self.fds_in,
                self.fds_out + self.s.fds_held(),
                "fds lost or made up"
            );
            assert!(self.s.fds_held() <= MAX_FDS_PER_FRAME);
        } else {
            assert!(self.fds_out <= self.fds_in, "more fds out than in");
        }
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
        let arm = u.byte() % 9;
        if !matches!(arm, 1 | 6 | 7) {
            self.next_fds = 0; // a send that takes no fds
        }
        match arm {
            0 => {
                self.s.send_hello();
                assert_eq!(self.s.transmit_len(), before, "second Hello queued");
            }
            1 => {
                let ready = arbitrary_ready(u);
                let r = self.s.send_ready_with_fds(&ready, self.next_fds);
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
                let r = self.s.send_app_request_with_fds(&text, self.next_fds);
                let body = RequestBody::App(
                    encode_body(&text, usize::MAX)
                        .expect("a string encodes")
                        .into(),
                );
                self.expect_request(r, closed, None, body, before, peer_max, peer);
            }
            7 => {
                let text = u.string();
                let r = self.s.send_notify_with_fds(&text, self.next_fds);
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
        let fits = msg
            .encode_with_fds(self.next_fds, peer_max, &mut want)
            .is_ok();
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
                if self.next_fds > 0 {
                    let at = self.pending.len() + before;
                    self.marks.push_back((at, want.len(), self.next_fds));
                }
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
        let arm = u.byte() % 5;
        if arm < 3 {
            self.next_fds = 0; // an untyped response: no fds
        }
        let (r, body) = match arm {
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
                let r = self.s.send_app_response_with_fds(id, &text, self.next_fds);
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
