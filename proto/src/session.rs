//! The session state machine: what may be sent and received, and when.
//!
//! A [`Session`] owns no socket and no clock. Feed it what you read with
//! [`handle_input`](Session::handle_input) (and
//! [`handle_eof`](Session::handle_eof) when the stream ends); take what it
//! decoded with [`poll_event`](Session::poll_event); queue messages with the
//! `send_*` methods; and write out what
//! [`poll_transmit`](Session::poll_transmit) hands you. Call order for a
//! driver loop:
//!
//! 1. after every read: `handle_input`, then drain `poll_event`;
//! 2. after every `send_*`, `handle_input` or `handle_eof`: `poll_transmit`
//!    and write what it returned (the session answers `Ping` by itself, so
//!    input can produce output).
//!
//! A driver that passes file descriptors (PROTOCOL.md, section 2.1) calls
//! [`handle_input_fds`](Session::handle_input_fds) instead, saying how many
//! fds came with each read, keeps the fds in a queue, and drains
//! [`poll_event_fds`](Session::poll_event_fds), which says how many of them
//! belong to each message; on an error it closes the rest. To send fds it
//! uses the `send_*_with_fds` methods and writes each frame that carries
//! fds with one `sendmsg` of its own.
//!
//! The rules it enforces (see `PROTOCOL.md`): each side's first frame is
//! `Hello`, with the same version and the opposite role; only the child
//! sends `Ready` (at most once) and `Status`; only the parent sends
//! `Shutdown`; a `Response` names an id of ours that is unanswered; a
//! request id is not reused while unanswered; nothing follows `Goodbye`.
//!
//! # Example
//! ```
//! use bytes::BytesMut;
//! use readyfd_proto::{Message, Ready, Role, Session, SessionConfig};
//!
//! let mut parent = Session::new(Role::Parent, 100, SessionConfig::default());
//! let mut child = Session::new(Role::Child, 200, SessionConfig::default());
//! child.send_ready(&Ready::new(200).address("http", "127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap())).unwrap();
//!
//! let mut wire = Vec::new();
//! child.poll_transmit(&mut wire);
//! let mut buf = BytesMut::from(&wire[..]);
//! parent.handle_input(&mut buf).unwrap();
//! assert!(matches!(parent.poll_event(), Some(Message::Hello(_))));
//! match parent.poll_event() {
//!     Some(Message::Ready(r)) => assert_eq!(r.addresses[0].name, "http"),
//!     other => panic!("{other:?}"),
//! }
//! ```

use std::collections::{HashSet, VecDeque};

use bytes::BytesMut;
use serde::Serialize;

use crate::error::SessionError;
use crate::frame::{FrameDecoder, HEADER_LEN};
use crate::limits::{
    DEFAULT_MAX_FRAME, DEFAULT_MAX_UNANSWERED, MAX_GOODBYE_MESSAGE, MIN_MAX_FRAME,
};
use crate::message::{
    FD_FLAG, Goodbye, GoodbyeReason, Hello, Kind, Message, PROTOCOL_VERSION, Ready, RequestBody,
    ResponseBody, Role, encode_app_request, encode_app_request_bytes,
    encode_app_request_bytes_head, encode_app_response, encode_app_response_bytes,
    encode_app_response_bytes_head, encode_notify, encode_notify_bytes, encode_notify_bytes_head,
    encode_status,
};

/// A decoded frame and the file descriptors that arrived with it, from
/// [`Session::poll_event_fds`]. The session never sees a descriptor: it
/// counts them, and the driver keeps the descriptors themselves in a queue,
/// in arrival order; each `FdEvent` says how many of that queue's next ones
/// belong to this frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdEvent {
    /// The message, or `None` for a frame the session consumed itself (a
    /// `Ping`, a late answer to an abandoned request): its descriptors are
    /// for nobody and the driver closes them.
    pub message: Option<Message>,
    /// How many descriptors belong to this frame: the next `fds` of the
    /// driver's queue.
    pub fds: usize,
}

/// Limits a session enforces on its peer.
///
/// Built from [`SessionConfig::new`] (the defaults) with its setters, so
/// that limits added later break no caller:
/// ```
/// use readyfd_proto::SessionConfig;
/// let config = SessionConfig::new().max_unanswered(8);
/// assert_eq!(config.max_unanswered, 8);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// The longest frame payload accepted from the peer (announced to it in
    /// our `Hello`). Default [`DEFAULT_MAX_FRAME`] (16 MiB); values below
    /// [`MIN_MAX_FRAME`] are raised to it.
    pub max_frame: u32,
    /// How many of the peer's requests may be unanswered at once before the
    /// peer is considered hostile. Default [`DEFAULT_MAX_UNANSWERED`].
    pub max_unanswered: usize,
}

impl SessionConfig {
    /// The default limits (as [`Default`]).
    pub fn new() -> Self {
        SessionConfig::default()
    }

    /// Sets the longest frame payload accepted from the peer.
    #[must_use]
    pub fn max_frame(mut self, max: u32) -> Self {
        self.max_frame = max;
        self
    }

    /// Sets how many of the peer's requests may be unanswered at once.
    #[must_use]
    pub fn max_unanswered(mut self, max: usize) -> Self {
        self.max_unanswered = max;
        self
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_frame: DEFAULT_MAX_FRAME,
            max_unanswered: DEFAULT_MAX_UNANSWERED,
        }
    }
}

/// How the peer's stream ended, as classified by [`Session::handle_eof`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Eof {
    /// Not one byte arrived: the peer closed without speaking. From a child
    /// that is still alive, this is the minimal "ready" signal.
    Silent,
    /// After the peer's `Goodbye`: an orderly end.
    AfterGoodbye,
    /// The peer vanished without `Goodbye`: its unanswered requests are
    /// void and ours will never be answered.
    Abrupt,
}

/// The receiving half: what the peer has said so far.
#[derive(Debug)]
enum RecvState {
    /// Not one byte has arrived.
    Silent,
    /// Bytes arrived, but not yet the peer's whole `Hello`.
    Greeting,
    /// The peer's `Hello` arrived; `ready`: so did its `Ready` (a child's).
    Open { peer: Hello, ready: bool },
    /// The peer's `Goodbye` arrived: nothing more may.
    Closed { peer: Hello, ready: bool },
}

impl RecvState {
    fn peer(&self) -> Option<&Hello> {
        match self {
            RecvState::Open { peer, .. } | RecvState::Closed { peer, .. } => Some(peer),
            RecvState::Silent | RecvState::Greeting => None,
        }
    }

    fn ready(&self) -> bool {
        matches!(
            self,
            RecvState::Open { ready: true, .. } | RecvState::Closed { ready: true, .. }
        )
    }
}

/// The sending half: what we have queued so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendState {
    /// Nothing, not even our `Hello`.
    Silent,
    /// Our `Hello` is queued; `ready`: so is our `Ready` (a child's).
    Open { ready: bool },
    /// Our `Goodbye` is queued: nothing more may be.
    Closed { ready: bool },
}

impl SendState {
    fn ready(self) -> bool {
        matches!(
            self,
            SendState::Open { ready: true } | SendState::Closed { ready: true }
        )
    }
}

/// Request ids in flight, both ways.
#[derive(Debug)]
struct Requests {
    /// The id our next request gets.
    next_id: u64,
    /// Ours, waiting for the peer's response.
    awaiting: HashSet<u64>,
    /// Ours that the application gave up on: a late response is dropped.
    abandoned: HashSet<u64>,
    /// The peer's, waiting for our response.
    to_answer: HashSet<u64>,
}

/// One side of a readyfd session. See the [module docs](self).
#[derive(Debug)]
pub struct Session {
    role: Role,
    pid: u32,
    config: SessionConfig,
    decoder: FrameDecoder,
    recv: RecvState,
    send: SendState,
    /// The error that ended the session; every later input returns it. The
    /// two halves keep the phase they had, for inspection.
    failed: Option<SessionError>,
    requests: Requests,
    events: VecDeque<FdEvent>,
    tx: Vec<u8>,
    /// The stream offset of the first byte of the caller's read buffer:
    /// how many bytes the decoder has consumed so far.
    rx_pos: u64,
    /// Descriptors that arrived, by the stream offset of the frame they
    /// belong to (the last frame that starts in the read that brought
    /// them), in order; at most one entry between calls (for the frame not
    /// yet complete), two during one.
    owed: VecDeque<(u64, usize)>,
}

impl Session {
    /// A new session for the side `role` of process `pid`. Nothing is queued
    /// yet: the first `send_*` (or [`send_hello`](Self::send_hello)) queues
    /// our `Hello` ahead of it.
    pub fn new(role: Role, pid: u32, mut config: SessionConfig) -> Self {
        config.max_frame = config.max_frame.max(MIN_MAX_FRAME);
        Session {
            role,
            pid,
            config,
            decoder: FrameDecoder::new(config.max_frame),
            recv: RecvState::Silent,
            send: SendState::Silent,
            failed: None,
            requests: Requests {
                next_id: 1,
                awaiting: HashSet::new(),
                abandoned: HashSet::new(),
                to_answer: HashSet::new(),
            },
            events: VecDeque::new(),
            tx: Vec::new(),
            rx_pos: 0,
            owed: VecDeque::new(),
        }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer's `Hello`, once it arrived.
    pub fn peer(&self) -> Option<&Hello> {
        self.recv.peer()
    }

    /// Whether the child's `Ready` has passed: sent (on the child's
    /// session) or received (on the parent's).
    pub fn is_ready(&self) -> bool {
        // Only a child's send half and a parent's receive half ever get
        // there: a parent may not send `Ready`, a child may not receive it.
        self.send.ready() || self.recv.ready()
    }

    /// Whether we sent `Goodbye` (no more sends are possible).
    pub fn goodbye_sent(&self) -> bool {
        matches!(self.send, SendState::Closed { .. })
    }

    /// Whether the peer sent `Goodbye`.
    pub fn goodbye_received(&self) -> bool {
        matches!(self.recv, RecvState::Closed { .. })
    }

    /// Our requests still waiting for a response.
    pub fn outstanding(&self) -> impl Iterator<Item = u64> + '_ {
        self.requests.awaiting.iter().copied()
    }

    /// Bytes queued for the peer and not yet taken by
    /// [`poll_transmit`](Self::poll_transmit). Drivers stop reading while
    /// this is large, so a peer that never reads cannot grow it.
    pub fn transmit_len(&self) -> usize {
        self.tx.len()
    }

    /// Whether input stopped inside a frame: its header is read and its
    /// body is not complete (the bytes of the body that did come are still
    /// in the caller's buffer). With an empty buffer and `false`, the next
    /// byte read starts a frame.
    pub fn in_frame(&self) -> bool {
        self.decoder.in_frame()
    }

    /// The most a payload to the peer may hold: what its `Hello` announced,
    /// or the default until then.
    pub fn peer_max_frame(&self) -> u32 {
        self.peer().map_or(DEFAULT_MAX_FRAME, |h| h.max_frame)
    }

    // ---- inputs -------------------------------------------------------

    /// Decodes and checks every complete frame in `buf`, consuming them.
    /// Decoded messages are queued for [`poll_event`](Self::poll_event);
    /// `Ping` requests are answered into the transmit queue.
    ///
    /// # Errors
    /// Any [`SessionError`] caused by the peer; the session is then failed
    /// and every later call returns the same error.
    pub fn handle_input(&mut self, buf: &mut BytesMut) -> Result<(), SessionError> {
        self.handle_input_fds(buf, 0, 0, false)
    }

    /// [`handle_input`](Self::handle_input) for a read that also brought
    /// `fds` file descriptors: the last `new` bytes of `buf` are that
    /// read's bytes, and `truncated` says the kernel cut its control
    /// message (`MSG_CTRUNC`). The descriptors belong to the last frame
    /// that starts within those `new` bytes (PROTOCOL.md, section 2.1),
    /// which must announce exactly that many; every other frame must
    /// announce none. Each frame's count comes out with it from
    /// [`poll_event_fds`](Self::poll_event_fds), once the frame is whole;
    /// until then [`fds_held`](Self::fds_held) counts them.
    ///
    /// # Errors
    /// [`SessionError::FdsTruncated`], [`SessionError::UnexpectedFds`] (no
    /// frame starts in the read), [`SessionError::FdCountMismatch`], and
    /// every error of [`handle_input`](Self::handle_input). After an error
    /// the driver closes every descriptor it holds that no event claimed.
    pub fn handle_input_fds(
        &mut self,
        buf: &mut BytesMut,
        new: usize,
        fds: usize,
        truncated: bool,
    ) -> Result<(), SessionError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !buf.is_empty() && matches!(self.recv, RecvState::Silent) {
            self.recv = RecvState::Greeting;
        }
        if truncated {
            return Err(self.fail(SessionError::FdsTruncated));
        }
        if fds > 0 {
            let end = self.rx_pos + buf.len() as u64;
            let start = end - new.min(buf.len()) as u64;
            match self.last_frame_start(buf, start, end) {
                Some(at) => self.owed.push_back((at, fds)),
                None => return Err(self.fail(SessionError::UnexpectedFds(fds))),
            }
        }
        loop {
            let start = match self.decoder.body_len() {
                Some(_) => self.rx_pos - HEADER_LEN as u64,
                None => self.rx_pos,
            };
            let before = buf.len();
            let decoded = self.decoder.decode(buf);
            self.rx_pos += (before - buf.len()) as u64;
            let frame = match decoded {
                Ok(Some(f)) => f,
                Ok(None) => {
                    return match self.check_partial_frame(buf) {
                        Ok(()) => Ok(()),
                        Err(e) => Err(self.fail(e)),
                    };
                }
                Err(e) => return Err(self.fail(e.into())),
            };
            let arrived = match self.owed.front() {
                Some(&(at, n)) if at == start => {
                    self.owed.pop_front();
                    n
                }
                // Owed to a frame that was passed over: cannot happen with
                // `last_frame_start`, refused all the same.
                Some(&(at, n)) if at < start => {
                    return Err(self.fail(SessionError::UnexpectedFds(n)));
                }
                _ => 0,
            };
            let (msg, announced) = match Message::decode_with_fds(&frame) {
                Ok(m) => m,
                Err(e) => return Err(self.fail(e.into())),
            };
            if announced != arrived {
                return Err(self.fail(SessionError::FdCountMismatch {
                    kind: msg.kind().name(),
                    announced,
                    arrived,
                }));
            }
            if let Err(e) = self.accept(msg, announced) {
                return Err(self.fail(e));
            }
        }
    }

    /// Checks the frame not yet complete against the fds owed to it as
    /// soon as its kind byte and count byte are here, rather than when it
    /// is whole (which a hostile peer may never make it): a frame without
    /// [`FD_FLAG`](crate::FD_FLAG), or with another count, is a mismatch
    /// at once.
    fn check_partial_frame(&self, buf: &[u8]) -> Result<(), SessionError> {
        let Some(&(at, arrived)) = self.owed.front() else {
            return Ok(());
        };
        let (kind, count) = match self.decoder.body_kind() {
            Some(kind) if at + HEADER_LEN as u64 == self.rx_pos => (Some(kind), buf.first()),
            None if at == self.rx_pos => (buf.get(4).copied(), buf.get(5)),
            _ => return Ok(()),
        };
        let Some(kind) = kind else {
            return Ok(());
        };
        let announced = if kind & FD_FLAG == 0 {
            0
        } else {
            match count {
                Some(&c) => usize::from(c),
                None => return Ok(()),
            }
        };
        if announced == arrived {
            return Ok(());
        }
        Err(SessionError::FdCountMismatch {
            kind: Kind::from_byte(kind & !FD_FLAG).map_or("unknown", Kind::name),
            announced,
            arrived,
        })
    }

    /// The stream offset of the last frame that starts in `[start, end)`,
    /// walking the frame headers from the frame being decoded; `None` when
    /// no frame starts there.
    fn last_frame_start(&self, buf: &[u8], start: u64, end: u64) -> Option<u64> {
        let header = HEADER_LEN as u64;
        let (mut at, mut len) = match self.decoder.body_len() {
            Some(len) => (self.rx_pos - header, Some(len as u64)),
            None => (self.rx_pos, None),
        };
        let mut owner = None;
        while at < end {
            if at >= start {
                owner = Some(at);
            }
            let len = match len.take() {
                Some(len) => len,
                None => {
                    let off = (at - self.rx_pos) as usize;
                    let Some(h) = buf.get(off..off + 4) else {
                        break; // its header is not all here: the last frame
                    };
                    if buf.len() < off + HEADER_LEN {
                        break;
                    }
                    u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]))
                }
            };
            at = at.saturating_add(header + len);
        }
        owner
    }

    /// The peer's stream ended. Complete frames still in `buf` are handled
    /// first.
    ///
    /// # Errors
    /// [`FrameError::Truncated`](crate::FrameError::Truncated) when `buf`
    /// ends inside a frame, and any error of
    /// [`handle_input`](Self::handle_input).
    pub fn handle_eof(&mut self, buf: &mut BytesMut) -> Result<Eof, SessionError> {
        self.handle_input(buf)?;
        if let Err(e) = self.decoder.decode_eof(buf) {
            return Err(self.fail(e.into()));
        }
        if let Some(&(_, n)) = self.owed.front() {
            return Err(self.fail(SessionError::UnexpectedFds(n)));
        }
        self.requests.abandoned.clear();
        Ok(match self.recv {
            RecvState::Silent => Eof::Silent,
            RecvState::Closed { .. } => Eof::AfterGoodbye,
            RecvState::Greeting | RecvState::Open { .. } => Eof::Abrupt,
        })
    }

    // ---- outputs ------------------------------------------------------

    /// The next decoded message, in arrival order.
    ///
    /// A frame that carried file descriptors is returned all the same: a
    /// driver that accepts descriptors uses
    /// [`poll_event_fds`](Self::poll_event_fds) instead, which says how
    /// many belong to each message.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.events.pop_front()?.message {
                return Some(m);
            }
        }
    }

    /// The next decoded frame and how many of the received file
    /// descriptors belong to it, in arrival order (see [`FdEvent`]). The
    /// counts of all events, plus [`fds_held`](Self::fds_held), add up to
    /// every descriptor handed to
    /// [`handle_input_fds`](Self::handle_input_fds) before an error.
    #[must_use]
    pub fn poll_event_fds(&mut self) -> Option<FdEvent> {
        self.events.pop_front()
    }

    /// Descriptors received for frames not yet complete (they come out
    /// with their frame). At most [`MAX_FDS_PER_FRAME`](crate::limits::MAX_FDS_PER_FRAME)
    /// between calls of [`handle_input_fds`](Self::handle_input_fds).
    pub fn fds_held(&self) -> usize {
        self.owed.iter().map(|&(_, n)| n).sum()
    }

    /// Appends every queued outgoing byte to `out` and returns whether there
    /// were any. When `out` is empty the buffers are swapped, so a driver
    /// that alternates two buffers never copies or reallocates.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.tx.is_empty() {
            return false;
        }
        if out.is_empty() {
            std::mem::swap(out, &mut self.tx);
        } else {
            out.extend_from_slice(&self.tx);
            self.tx.clear();
        }
        true
    }

    // ---- sending ------------------------------------------------------

    /// Queues our `Hello` if it has not been queued yet. Every other
    /// `send_*` does this first by itself.
    pub fn send_hello(&mut self) {
        if self.send != SendState::Silent {
            return;
        }
        self.send = SendState::Open { ready: false };
        let hello = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            pid: self.pid,
            role: self.role,
            max_frame: self.config.max_frame,
        });
        // A Hello is 18 bytes: it always fits.
        let _ = hello.encode(u32::MAX, &mut self.tx);
    }

    /// Queues `Ready` (child only, once).
    ///
    /// # Errors
    /// [`SessionError::NotAllowed`] from a parent or a second time;
    /// [`SessionError::Encode`] when it exceeds the peer's maximum.
    pub fn send_ready(&mut self, ready: &Ready) -> Result<(), SessionError> {
        self.send_ready_with_fds(ready, 0)
    }

    /// [`send_ready`](Self::send_ready), announcing `fds` file descriptors
    /// that the driver sends with this frame (PROTOCOL.md, section 2.1).
    ///
    /// # Errors
    /// As [`send_ready`](Self::send_ready), and
    /// [`EncodeError::TooManyFds`](crate::EncodeError::TooManyFds) over
    /// [`MAX_FDS_PER_FRAME`](crate::limits::MAX_FDS_PER_FRAME).
    pub fn send_ready_with_fds(&mut self, ready: &Ready, fds: usize) -> Result<(), SessionError> {
        self.start_send()?;
        if self.role != Role::Child {
            return Err(SessionError::NotAllowed("only the child sends Ready"));
        }
        if self.send.ready() {
            return Err(SessionError::NotAllowed("Ready was already sent"));
        }
        let max = self.peer_max_frame();
        Message::Ready(ready.clone()).encode_with_fds(fds, max, &mut self.tx)?;
        self.send = SendState::Open { ready: true };
        Ok(())
    }

    /// Queues a status line (child only).
    ///
    /// # Errors
    /// [`SessionError::NotAllowed`] from a parent; encoding errors.
    pub fn send_status(&mut self, status: &str) -> Result<(), SessionError> {
        self.start_send()?;
        if self.role != Role::Child {
            return Err(SessionError::NotAllowed("only the child sends Status"));
        }
        encode_status(status, self.peer_max_frame(), &mut self.tx)?;
        Ok(())
    }

    /// Queues a built-in request (`Ping`, or `Shutdown` from the parent) or
    /// an application request with pre-encoded bytes, and returns its id.
    ///
    /// # Errors
    /// [`SessionError::NotAllowed`] for `Shutdown` from the child; encoding
    /// errors; [`SessionError::Closed`] after `Goodbye`.
    pub fn send_request(&mut self, body: RequestBody) -> Result<u64, SessionError> {
        self.start_send()?;
        if matches!(body, RequestBody::Shutdown { .. }) && self.role != Role::Parent {
            return Err(SessionError::NotAllowed("only the parent sends Shutdown"));
        }
        let id = self.requests.next_id;
        self.queue(&Message::Request { id, body })?;
        Ok(self.sent_request(id))
    }

    /// Queues an application request, encoding `body` straight into the
    /// frame, and returns its id.
    ///
    /// # Errors
    /// As [`send_request`](Self::send_request).
    pub fn send_app_request<T: Serialize + ?Sized>(
        &mut self,
        body: &T,
    ) -> Result<u64, SessionError> {
        self.send_app_request_with_fds(body, 0)
    }

    /// [`send_app_request`](Self::send_app_request), announcing `fds` file
    /// descriptors that the driver sends with this frame.
    ///
    /// # Errors
    /// As [`send_app_request`](Self::send_app_request), and
    /// [`EncodeError::TooManyFds`](crate::EncodeError::TooManyFds).
    pub fn send_app_request_with_fds<T: Serialize + ?Sized>(
        &mut self,
        body: &T,
        fds: usize,
    ) -> Result<u64, SessionError> {
        self.start_send()?;
        let id = self.requests.next_id;
        encode_app_request(id, body, fds, self.peer_max_frame(), &mut self.tx)?;
        Ok(self.sent_request(id))
    }

    /// Queues an application request whose body is `body` as it is (no
    /// serde work: the frame's payload is the request head, then these
    /// bytes), announcing `fds` file descriptors (0 for none), and returns
    /// its id.
    ///
    /// # Errors
    /// As [`send_app_request_with_fds`](Self::send_app_request_with_fds).
    pub fn send_app_request_bytes(&mut self, body: &[u8], fds: usize) -> Result<u64, SessionError> {
        self.start_send()?;
        let id = self.requests.next_id;
        encode_app_request_bytes(id, body, fds, self.peer_max_frame(), &mut self.tx)?;
        Ok(self.sent_request(id))
    }

    /// [`send_app_request_bytes`](Self::send_app_request_bytes) that
    /// leaves the body to the driver, which writes it from the caller's
    /// buffer (a vectored write) instead of copying it into the transmit
    /// queue. Appends to `out` everything queued for the peer, as
    /// [`poll_transmit`](Self::poll_transmit) does, ending with this
    /// frame's header and request head; the frame is whole once the driver
    /// has written those bytes and then the `body_len` bytes of the body,
    /// with nothing in between. Returns the request's id.
    ///
    /// # Errors
    /// As [`send_app_request_bytes`](Self::send_app_request_bytes); on an
    /// error nothing is appended to `out`.
    pub fn send_app_request_bytes_split(
        &mut self,
        body_len: usize,
        fds: usize,
        out: &mut Vec<u8>,
    ) -> Result<u64, SessionError> {
        self.start_send()?;
        let id = self.requests.next_id;
        encode_app_request_bytes_head(id, body_len, fds, self.peer_max_frame(), &mut self.tx)?;
        let _ = self.poll_transmit(out);
        Ok(self.sent_request(id))
    }

    /// Gives up waiting for our request `id`: a response that arrives later
    /// is dropped silently rather than treated as a protocol error.
    pub fn abandon_request(&mut self, id: u64) {
        if self.requests.awaiting.remove(&id) {
            self.requests.abandoned.insert(id);
        }
    }

    /// Queues the answer to the peer's request `id`.
    ///
    /// # Errors
    /// [`SessionError::NotAllowed`] when `id` is not an unanswered request
    /// of the peer's; encoding errors.
    pub fn send_response(&mut self, id: u64, body: ResponseBody) -> Result<(), SessionError> {
        self.start_response(id)?;
        self.queue(&Message::Response { id, body })?;
        self.requests.to_answer.remove(&id);
        Ok(())
    }

    /// Queues an application answer to the peer's request `id`, encoding
    /// `body` straight into the frame.
    ///
    /// # Errors
    /// As [`send_response`](Self::send_response).
    pub fn send_app_response<T: Serialize + ?Sized>(
        &mut self,
        id: u64,
        body: &T,
    ) -> Result<(), SessionError> {
        self.send_app_response_with_fds(id, body, 0)
    }

    /// [`send_app_response`](Self::send_app_response), announcing `fds`
    /// file descriptors that the driver sends with this frame.
    ///
    /// # Errors
    /// As [`send_app_response`](Self::send_app_response), and
    /// [`EncodeError::TooManyFds`](crate::EncodeError::TooManyFds).
    pub fn send_app_response_with_fds<T: Serialize + ?Sized>(
        &mut self,
        id: u64,
        body: &T,
        fds: usize,
    ) -> Result<(), SessionError> {
        self.start_response(id)?;
        encode_app_response(id, body, fds, self.peer_max_frame(), &mut self.tx)?;
        self.requests.to_answer.remove(&id);
        Ok(())
    }

    /// Queues an application answer to the peer's request `id` whose body
    /// is `body` as it is (no serde work), announcing `fds` file
    /// descriptors (0 for none).
    ///
    /// # Errors
    /// As [`send_app_response_with_fds`](Self::send_app_response_with_fds).
    pub fn send_app_response_bytes(
        &mut self,
        id: u64,
        body: &[u8],
        fds: usize,
    ) -> Result<(), SessionError> {
        self.start_response(id)?;
        encode_app_response_bytes(id, body, fds, self.peer_max_frame(), &mut self.tx)?;
        self.requests.to_answer.remove(&id);
        Ok(())
    }

    /// [`send_app_response_bytes`](Self::send_app_response_bytes) that
    /// leaves the body to the driver, as
    /// [`send_app_request_bytes_split`](Self::send_app_request_bytes_split)
    /// does: appends to `out` everything queued and this frame's header and
    /// head, which the driver writes followed by the body's `body_len`
    /// bytes.
    ///
    /// # Errors
    /// As [`send_app_response_bytes`](Self::send_app_response_bytes); on an
    /// error nothing is appended to `out`.
    pub fn send_app_response_bytes_split(
        &mut self,
        id: u64,
        body_len: usize,
        fds: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), SessionError> {
        self.start_response(id)?;
        encode_app_response_bytes_head(id, body_len, fds, self.peer_max_frame(), &mut self.tx)?;
        let _ = self.poll_transmit(out);
        self.requests.to_answer.remove(&id);
        Ok(())
    }

    /// Queues a one-way application message.
    ///
    /// # Errors
    /// Encoding errors; [`SessionError::Closed`] after `Goodbye`.
    pub fn send_notify<T: Serialize + ?Sized>(&mut self, body: &T) -> Result<(), SessionError> {
        self.send_notify_with_fds(body, 0)
    }

    /// [`send_notify`](Self::send_notify), announcing `fds` file
    /// descriptors that the driver sends with this frame.
    ///
    /// # Errors
    /// As [`send_notify`](Self::send_notify), and
    /// [`EncodeError::TooManyFds`](crate::EncodeError::TooManyFds).
    pub fn send_notify_with_fds<T: Serialize + ?Sized>(
        &mut self,
        body: &T,
        fds: usize,
    ) -> Result<(), SessionError> {
        self.start_send()?;
        encode_notify(body, fds, self.peer_max_frame(), &mut self.tx)?;
        Ok(())
    }

    /// Queues a one-way application message whose payload is `body` as it
    /// is (no serde work), announcing `fds` file descriptors (0 for none).
    ///
    /// # Errors
    /// As [`send_notify_with_fds`](Self::send_notify_with_fds).
    pub fn send_notify_bytes(&mut self, body: &[u8], fds: usize) -> Result<(), SessionError> {
        self.start_send()?;
        encode_notify_bytes(body, fds, self.peer_max_frame(), &mut self.tx)?;
        Ok(())
    }

    /// [`send_notify_bytes`](Self::send_notify_bytes) that leaves the body
    /// to the driver, as
    /// [`send_app_request_bytes_split`](Self::send_app_request_bytes_split)
    /// does.
    ///
    /// # Errors
    /// As [`send_notify_bytes`](Self::send_notify_bytes); on an error
    /// nothing is appended to `out`.
    pub fn send_notify_bytes_split(
        &mut self,
        body_len: usize,
        fds: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), SessionError> {
        self.start_send()?;
        encode_notify_bytes_head(body_len, fds, self.peer_max_frame(), &mut self.tx)?;
        let _ = self.poll_transmit(out);
        Ok(())
    }

    /// Queues `Goodbye`; nothing can be sent after it. A `message` longer
    /// than [`MAX_GOODBYE_MESSAGE`] bytes is cut to it, at a character
    /// boundary.
    ///
    /// # Errors
    /// [`SessionError::Closed`] when it was already sent.
    pub fn send_goodbye(
        &mut self,
        reason: GoodbyeReason,
        message: &str,
    ) -> Result<(), SessionError> {
        self.start_send()?;
        let g = Goodbye {
            reason,
            message: truncate_utf8(message, MAX_GOODBYE_MESSAGE).to_string(),
        };
        self.queue(&Message::Goodbye(g))?;
        self.send = SendState::Closed {
            ready: self.send.ready(),
        };
        Ok(())
    }

    // ---- internals ----------------------------------------------------

    fn fail(&mut self, e: SessionError) -> SessionError {
        self.failed = Some(e.clone());
        e
    }

    /// Refuses to send after our `Goodbye`; otherwise queues our `Hello`
    /// if it is not queued yet.
    fn start_send(&mut self) -> Result<(), SessionError> {
        if self.goodbye_sent() {
            return Err(SessionError::Closed);
        }
        self.send_hello();
        Ok(())
    }

    /// [`start_send`](Self::start_send), and refuses a response to an id
    /// that is not the peer's unanswered request.
    fn start_response(&mut self, id: u64) -> Result<(), SessionError> {
        self.start_send()?;
        if !self.requests.to_answer.contains(&id) {
            return Err(SessionError::NotAllowed(
                "response to an id that is not an unanswered request of the peer",
            ));
        }
        Ok(())
    }

    /// Records our request `id` as sent and awaiting its response.
    fn sent_request(&mut self, id: u64) -> u64 {
        self.requests.next_id += 1;
        self.requests.awaiting.insert(id);
        id
    }

    fn queue(&mut self, msg: &Message) -> Result<(), SessionError> {
        let max = self.peer_max_frame();
        msg.encode(max, &mut self.tx).map_err(SessionError::from)
    }

    fn accept(&mut self, msg: Message, fds: usize) -> Result<(), SessionError> {
        let (peer_role, ready) = match &self.recv {
            RecvState::Closed { .. } => {
                return Err(SessionError::AfterGoodbye(msg.kind().name()));
            }
            RecvState::Silent | RecvState::Greeting => return self.accept_hello(msg),
            RecvState::Open { peer, ready } => (peer.role, *ready),
        };
        match &msg {
            Message::Hello(_) => return Err(SessionError::DuplicateHello),
            Message::Ready(_) => {
                if peer_role != Role::Child {
                    return Err(SessionError::WrongDirection {
                        role: peer_role,
                        kind: "Ready",
                    });
                }
                if ready {
                    return Err(SessionError::SecondReady);
                }
                self.recv_ready();
            }
            Message::Status(_) => {
                if peer_role != Role::Child {
                    return Err(SessionError::WrongDirection {
                        role: peer_role,
                        kind: "Status",
                    });
                }
            }
            Message::Request { id, body } => {
                if matches!(body, RequestBody::Shutdown { .. }) && peer_role != Role::Parent {
                    return Err(SessionError::WrongDirection {
                        role: peer_role,
                        kind: "Shutdown",
                    });
                }
                if self.requests.to_answer.contains(id) {
                    return Err(SessionError::DuplicateRequestId(*id));
                }
                if self.requests.to_answer.len() >= self.config.max_unanswered {
                    return Err(SessionError::TooManyRequests(self.config.max_unanswered));
                }
                if matches!(body, RequestBody::Ping) {
                    self.discard_fds(fds);
                    return self.answer_ping(*id);
                }
                self.requests.to_answer.insert(*id);
            }
            Message::Response { id, .. } => {
                if !self.requests.awaiting.remove(id) {
                    if self.requests.abandoned.remove(id) {
                        self.discard_fds(fds);
                        return Ok(());
                    }
                    return Err(SessionError::UnknownResponseId(*id));
                }
            }
            Message::Notify(_) => {}
            Message::Goodbye(_) => {
                let RecvState::Open { peer, ready } =
                    std::mem::replace(&mut self.recv, RecvState::Silent)
                else {
                    unreachable!("checked above: the receiving half is open")
                };
                self.recv = RecvState::Closed { peer, ready };
                self.requests.to_answer.clear();
            }
        }
        self.events.push_back(FdEvent {
            message: Some(msg),
            fds,
        });
        Ok(())
    }

    /// Tells the driver to close the descriptors of a frame the session
    /// consumed itself.
    fn discard_fds(&mut self, fds: usize) {
        if fds > 0 {
            self.events.push_back(FdEvent { message: None, fds });
        }
    }

    /// The peer's first message, which must be a `Hello` we can talk to.
    fn accept_hello(&mut self, msg: Message) -> Result<(), SessionError> {
        let Message::Hello(h) = msg else {
            return Err(SessionError::HelloExpected(msg.kind().name()));
        };
        if h.version != PROTOCOL_VERSION {
            return Err(SessionError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: h.version,
            });
        }
        if h.role == self.role {
            return Err(SessionError::RoleConflict(h.role));
        }
        if h.max_frame < MIN_MAX_FRAME {
            return Err(SessionError::MaxFrameTooSmall {
                announced: h.max_frame,
                min: MIN_MAX_FRAME,
            });
        }
        self.recv = RecvState::Open {
            peer: h.clone(),
            ready: false,
        };
        self.events.push_back(FdEvent {
            message: Some(Message::Hello(h)),
            fds: 0,
        });
        Ok(())
    }

    fn recv_ready(&mut self) {
        if let RecvState::Open { ready, .. } = &mut self.recv {
            *ready = true;
        }
    }

    /// Answers the peer's `Ping` here: the application never sees it. After
    /// our `Goodbye` nothing may be sent, so the ping goes unanswered.
    fn answer_ping(&mut self, id: u64) -> Result<(), SessionError> {
        if self.goodbye_sent() {
            return Ok(());
        }
        self.requests.to_answer.insert(id);
        let answered = self.send_response(id, ResponseBody::Ok);
        // Answered, or unanswerable (a Pong over the peer's announced
        // maximum): never left for the application.
        self.requests.to_answer.remove(&id);
        answered
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
