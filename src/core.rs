//! The channel core: the rules of a native channel that the blocking and
//! the tokio channel share, with no locks and no system calls (the cut of
//! tokio-util's `FramedImpl` under `Framed`, or quinn's `proto::Connection`
//! under its `State`). It owns the session, what the peer sent
//! ([`PeerView`]), the precedence of close reasons, what a read's result
//! means, what a local close says, and what the channel shows of the
//! child's readiness. Each driver is a shell around it that does the I/O
//! and the waiting.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use readyfd_proto::{
    GoodbyeReason, Hello, Message, Ready, RemoteError, RemoteErrorKind, RequestBody, ResponseBody,
    Role, Session, SessionConfig, SessionError,
};
use serde::de::DeserializeOwned;

use crate::error::{ChannelError, CloseReason, ProtocolError};
use crate::incoming::{
    Incoming, IncomingRequest, Notification, Responder, ShutdownRequest, decode_as,
};
use crate::sys::StreamRead;
use crate::verdict::{ReadyVia, Seen};

/// Bytes queued for the peer beyond which senders wait.
pub const HIGH_WATER: usize = 4 * 1024 * 1024;

/// The smallest raw body (`request_bytes`, `respond_bytes`,
/// `notify_bytes`) that both drivers write from the caller's buffer, with
/// the frame's head in one vectored `sendmsg`, rather than copy into the
/// transmit queue: below it the copy costs less than the second buffer.
pub(crate) const DIRECT_BODY_MIN: usize = 2048;

/// Incoming requests and notifications queued for [`Channel::recv`](crate::Channel::recv) beyond
/// which the channel stops reading from the peer until some are taken.
///
/// This is back-pressure against a peer that floods, and it has a
/// consequence to know: while the queue is full nothing more is read, so an
/// answer to one of our own requests that arrives behind the backlog is not
/// seen either. A side that receives requests or notifications must keep
/// calling [`Channel::recv`](crate::Channel::recv) (on a thread of its own if need be) while it
/// also makes requests.
pub const MAX_INCOMING: usize = 1024;

/// Bytes of request and notification bodies queued for [`Channel::recv`](crate::Channel::recv)
/// beyond which the channel stops reading, as [`MAX_INCOMING`] does for
/// their number: what a flooding peer can make this side hold. Twice the
/// default largest frame, so that one largest message always fits.
///
/// [`Channel::recv`](crate::Channel::recv): crate::Channel::recv
pub const MAX_INCOMING_BYTES: usize = 2 * readyfd_proto::DEFAULT_MAX_FRAME as usize;

/// File descriptors held by requests and notifications queued for
/// [`Channel::recv`](crate::Channel::recv) beyond which the channel stops
/// reading, as [`MAX_INCOMING`] does for their number: a peer that floods
/// with descriptors cannot make this side hold more than this many (plus
/// one message's worth, at most 253) before the application takes some.
pub const MAX_INCOMING_FDS: usize = 1024;

/// What a child does when its parent sends `Shutdown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ShutdownPolicy {
    /// Acknowledge it, then send `SIGTERM` to this process, so a program
    /// that handles nothing stops as if `kill` had been used and a program
    /// with a `SIGTERM` handler runs it. The default.
    #[default]
    RaiseSigterm,
    /// Deliver it to the application as [`Incoming::Shutdown`].
    Deliver,
}

/// Options of a [`Channel`](crate::Channel).
///
/// Built from [`ChannelOptions::new`] (the defaults) with its setters, so
/// that options added later break no caller:
/// ```
/// use readyfd::{ChannelOptions, ShutdownPolicy};
/// let options = ChannelOptions::new()
///     .shutdown(ShutdownPolicy::Deliver)
///     .max_incoming(64);
/// assert_eq!(options.max_incoming, 64);
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ChannelOptions {
    /// Limits enforced on the peer.
    pub session: SessionConfig,
    /// What a child does on `Shutdown` (ignored by parents).
    pub shutdown: ShutdownPolicy,
    /// How many of the peer's requests and notifications may wait to be
    /// taken before reading pauses (default [`MAX_INCOMING`]).
    pub max_incoming: usize,
    /// How many bytes of their bodies may wait to be taken before reading
    /// pauses (default [`MAX_INCOMING_BYTES`]).
    pub max_incoming_bytes: usize,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            session: SessionConfig::default(),
            shutdown: ShutdownPolicy::default(),
            max_incoming: MAX_INCOMING,
            max_incoming_bytes: MAX_INCOMING_BYTES,
        }
    }
}

impl ChannelOptions {
    /// The default options (as [`Default`]).
    pub fn new() -> Self {
        ChannelOptions::default()
    }

    /// Sets the limits enforced on the peer.
    #[must_use]
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// Sets what a child does on `Shutdown` (ignored by parents).
    #[must_use]
    pub fn shutdown(mut self, shutdown: ShutdownPolicy) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Sets how many of the peer's requests and notifications may wait to
    /// be taken before reading pauses.
    #[must_use]
    pub fn max_incoming(mut self, max: usize) -> Self {
        self.max_incoming = max;
        self
    }

    /// Sets how many bytes of their bodies may wait to be taken before
    /// reading pauses.
    #[must_use]
    pub fn max_incoming_bytes(mut self, max: usize) -> Self {
        self.max_incoming_bytes = max;
        self
    }

    /// Whether `queue` holds as much as these options let a peer make us
    /// hold (reading then pauses until the application takes some).
    pub(crate) fn queue_full(&self, queue: &IncomingQueue) -> bool {
        queue.len() >= self.max_incoming.max(1)
            || queue.bytes >= self.max_incoming_bytes.max(1)
            || queue.fds >= MAX_INCOMING_FDS
    }
}

/// The peer's requests and notifications waiting for `recv`, with the
/// bytes their bodies hold.
#[derive(Default)]
pub(crate) struct IncomingQueue {
    queue: VecDeque<Incoming>,
    bytes: usize,
    fds: usize,
}

impl IncomingQueue {
    /// What one message counts for: its body and a fixed share for the
    /// rest.
    fn weight(m: &Incoming) -> usize {
        const OVERHEAD: usize = 64;
        OVERHEAD
            + match m {
                Incoming::Request(r) => r.bytes().len(),
                Incoming::Notify(n) => n.bytes().len(),
                _ => 0,
            }
    }

    /// The fds a queued message holds, as it was queued.
    fn fd_count(m: &Incoming) -> usize {
        match m {
            Incoming::Request(r) => r.fds().len(),
            Incoming::Notify(n) => n.fds().len(),
            _ => 0,
        }
    }

    pub(crate) fn push(&mut self, m: Incoming) {
        self.bytes += Self::weight(&m);
        self.fds += Self::fd_count(&m);
        self.queue.push_back(m);
    }

    pub(crate) fn pop(&mut self) -> Option<Incoming> {
        let m = self.queue.pop_front()?;
        self.bytes -= Self::weight(&m);
        self.fds -= Self::fd_count(&m);
        Some(m)
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// The queued messages, to hand their requests a new responder.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Incoming> {
        self.queue.iter_mut()
    }

    /// Empties the queue (dropping a request answers it: do it outside
    /// the channel's lock).
    pub(crate) fn take(&mut self) -> VecDeque<Incoming> {
        self.bytes = 0;
        self.fds = 0;
        std::mem::take(&mut self.queue)
    }
}

/// What the I/O thread saw of the read side.
#[derive(Debug, Clone)]
pub(crate) enum ReadEnd {
    Open,
    /// The peer closed its end.
    Eof,
    Failed(CloseReason),
}

/// The state a native channel keeps whatever drives it.
pub(crate) struct Core {
    /// The protocol's state machine.
    pub(crate) session: Session,
    /// Why writing failed, if it did.
    pub(crate) write_failed: Option<CloseReason>,
    /// We closed (or dropped) our side.
    pub(crate) local_closed: bool,
    /// The local close came first, while both directions were open: what
    /// is still waiting fails with [`CloseReason::Local`] even if the peer's
    /// EOF (its answer to our `Goodbye`) is read before it looks.
    pub(crate) local_first: bool,
    /// What reading has come to.
    pub(crate) read: ReadEnd,
    /// What the peer sent, for the application and the bookkeeping.
    pub(crate) peer: PeerView,
    /// The child's pidfd fired before readiness (parent side).
    pub(crate) child_exited: bool,
    /// Whose exit ends the read side (parent side): see [`PeerExit`].
    peer_exit: PeerExit,
    /// Our end was shut down for writing after our `Goodbye` was written
    /// ([`goodbye_written`](Self::goodbye_written)).
    write_shut: bool,
    /// Fds received and not yet handed out with their message, in arrival
    /// order (the session counts them: [`Session::fds_held`]).
    rx_fds: VecDeque<OwnedFd>,
    /// Bytes of the stream written to the peer so far: where the next
    /// unwritten byte sits, to find the frames that carry fds.
    tx_written: u64,
    /// Frames queued with fds, in stream order.
    tx_fds: VecDeque<OutFds>,
    /// Who wrote the frames the last read completed, as far as the kernel
    /// attests it (`SO_PASSCRED`): see [`Writers`].
    writers: Writers,
}

/// The writer of what the channel reads, from the credentials each read
/// brings under `SO_PASSCRED` (a read never joins two writers' bytes): the
/// writer of a frame is known only when every read that brought its bytes
/// came from one process. A frame begun by one process and ended by
/// another (which no sound peer does) has no known writer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Writers {
    /// The one writer of every frame the last read completed, if known;
    /// also that of the bytes of a frame it began and left incomplete
    /// (conservative: attributed as the first frame of the read was).
    last_read: Option<u32>,
}

impl Writers {
    /// A read by `writer` (`None`: no credentials came); `begun`: whether
    /// a frame was begun before it. Returns the writer of the frames it
    /// completes.
    pub(crate) fn on_read(&mut self, writer: Option<u32>, begun: bool) -> Option<u32> {
        self.last_read = if begun && self.last_read != writer {
            None
        } else {
            writer
        };
        self.last_read
    }
}

/// What the exit of the process a parent's channel watches means
/// (PROTOCOL.md §6.3): before readiness it is for the verdict to judge;
/// from readiness on, the process that said `Ready` is the peer, and its
/// exit ends the read side, even while another process (a grandchild that
/// inherited the socket, a shell's background job) keeps the other end
/// open and no end of stream would ever come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerExit {
    /// Before readiness, and on a child's side: an exit ends nothing here
    /// (PROTOCOL.md §6.2 decides what it means).
    Undecided,
    /// The watched process said `Ready` (or was named by it): its exit
    /// ends the read side.
    Watched,
    /// It exited, and the driver has shut the socket down: what it wrote
    /// before is read, then the end of stream.
    Exited,
}

/// A queued frame that carries fds: where it starts in the outgoing
/// stream, how long it is, and the fds, sent with its first bytes.
#[derive(Debug)]
pub(crate) struct OutFds {
    at: u64,
    len: usize,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Why the channel can no longer send after a write failed with `e`: a
/// peer whose end is closed (`EPIPE`, or `ECONNRESET`) is a peer that
/// closed, whichever of the write, the end of stream or its exit is seen
/// first ([`CloseReason::PeerClosed`]); any other error is the error.
pub(crate) fn write_failure(e: io::Error) -> CloseReason {
    match e.raw_os_error() {
        Some(nix::libc::EPIPE | nix::libc::ECONNRESET) => CloseReason::PeerClosed,
        _ => CloseReason::Io(Arc::new(e)),
    }
}

/// After a vectored write of a frame's head (`out`) and its raw `body`
/// took `written` bytes, leaves in `out` what is still to be written: the
/// rest of the head, if any, then the rest of the body. Both drivers queue
/// that for their usual writer.
pub(crate) fn keep_unwritten(out: &mut Vec<u8>, body: &[u8], written: usize) {
    if written < out.len() {
        out.drain(..written);
        out.extend_from_slice(body);
    } else {
        let from = written - out.len();
        out.clear();
        out.extend_from_slice(&body[from..]);
    }
}

/// What to write next ([`Core::plan_write`]): up to `len` bytes, with the
/// fds of the frame those bytes start, if they start one that has fds.
#[derive(Debug)]
pub(crate) struct WritePlan {
    pub(crate) len: usize,
    pub(crate) fds: Option<OutFds>,
}

impl Core {
    /// A core for `role` with our `Hello` queued.
    pub(crate) fn new(role: Role, config: SessionConfig) -> Core {
        if role == Role::Child {
            // So that a child that panics before `Ready` can say why.
            record_panics();
        }
        let mut session = Session::new(role, std::process::id(), config);
        session.send_hello();
        Core {
            session,
            write_failed: None,
            local_closed: false,
            local_first: false,
            read: ReadEnd::Open,
            peer: PeerView::default(),
            child_exited: false,
            peer_exit: PeerExit::Undecided,
            write_shut: false,
            rx_fds: VecDeque::new(),
            tx_written: 0,
            tx_fds: VecDeque::new(),
            writers: Writers::default(),
        }
    }

    /// Queues a frame with `send`, which is given the number of `fds` to
    /// announce, and keeps the fds to be sent with it. `unsent` is what the
    /// driver took from the session and has not written. On error the fds
    /// are closed (dropped) and nothing is queued.
    pub(crate) fn queue_with_fds<R>(
        &mut self,
        unsent: usize,
        fds: Vec<OwnedFd>,
        send: impl FnOnce(&mut Session, usize) -> Result<R, SessionError>,
    ) -> Result<R, SessionError> {
        if fds.is_empty() {
            return send(&mut self.session, 0);
        }
        let before = self.session.transmit_len();
        let at = self.tx_written + unsent as u64 + before as u64;
        let r = send(&mut self.session, fds.len())?;
        // Our Hello was queued when the core was made, so the bytes added
        // are exactly the frame.
        let len = self.session.transmit_len() - before;
        self.tx_fds.push_back(OutFds { at, len, fds });
        Ok(r)
    }

    /// What to write next out of `unsent` bytes: everything up to the next
    /// frame that carries fds; or that frame alone (up to its end, so the
    /// fds go with its bytes and no others'), with its fds.
    pub(crate) fn plan_write(&mut self, unsent: usize) -> WritePlan {
        match self.tx_fds.front() {
            Some(f) if f.at == self.tx_written => WritePlan {
                len: unsent.min(f.len),
                fds: self.tx_fds.pop_front(),
            },
            Some(f) => WritePlan {
                len: unsent.min((f.at - self.tx_written) as usize),
                fds: None,
            },
            None => WritePlan {
                len: unsent,
                fds: None,
            },
        }
    }

    /// Records a write of `n` bytes made after [`plan_write`](Self::plan_write)
    /// (0 on `EAGAIN`). Fds that went with bytes are closed here (the peer
    /// has its own copies); fds that did not go are put back.
    pub(crate) fn wrote(&mut self, n: usize, fds: Option<OutFds>) {
        self.tx_written += n as u64;
        if let (0, Some(f)) = (n, fds) {
            self.tx_fds.push_front(f);
        }
    }

    /// Writing failed for good: the fds still queued are closed.
    pub(crate) fn discard_tx_fds(&mut self) {
        self.tx_fds.clear();
    }

    /// The watched process exited (its pidfd fired). Before readiness that
    /// is recorded for the verdict ([`ready_event`](Self::ready_event));
    /// from readiness on ([`watch_peer`](Self::watch_peer)) it is the
    /// peer's exit. Returns whether the driver must now end the channel
    /// with [`sys::shut_down_after_exit`](crate::sys::shut_down_after_exit): the socket shut down,
    /// reading then gets what the peer wrote before it died, and then the
    /// end of stream, as if the peer had closed.
    ///
    /// The driver calls it once the frames the process wrote before it
    /// died have been read (as far as reading is allowed), so that a
    /// `Ready` among them wins over the exit.
    pub(crate) fn on_exit(&mut self) -> bool {
        match self.peer_exit {
            PeerExit::Undecided => {
                self.child_exited = true;
                false
            }
            PeerExit::Watched => {
                self.peer_exit = PeerExit::Exited;
                true
            }
            PeerExit::Exited => false,
        }
    }

    /// Readiness was seen (parent side): from now on the exit of the
    /// process that said `Ready` ends the read side (see [`on_exit`](Self::on_exit)).
    /// `spawned`: that process is the one watched so far (the spawned
    /// child), not one the driver is about to watch instead (after a
    /// wrapper). Returns whether it has exited already (its pidfd fired
    /// between its `Ready` and now): the driver must end the channel at
    /// once, as [`on_exit`](Self::on_exit) says.
    pub(crate) fn watch_peer(&mut self, spawned: bool) -> bool {
        if self.peer_exit != PeerExit::Undecided {
            return false;
        }
        if spawned && self.child_exited {
            self.peer_exit = PeerExit::Exited;
            true
        } else {
            self.peer_exit = PeerExit::Watched;
            false
        }
    }

    /// Whether to shut our end of the socket down for writing now: our
    /// `Goodbye` is written whole (`unwritten`: what the driver took from
    /// the session and has not written), and nothing can follow it. The
    /// peer then reads the `Goodbye` and the end of stream (PROTOCOL.md
    /// §7), instead of waiting on a socket this side keeps open for as long
    /// as its application holds the channel. True once; reading goes on.
    pub(crate) fn goodbye_written(&mut self, unwritten: usize) -> bool {
        if self.write_shut
            || unwritten > 0
            || self.write_failed.is_some()
            || !self.session.goodbye_sent()
            || self.session.transmit_len() > 0
        {
            return false;
        }
        self.write_shut = true;
        true
    }

    /// Whether the peer exited and its end of stream is still to be read.
    fn peer_exited(&self) -> bool {
        self.peer_exit == PeerExit::Exited
    }

    /// Why a send cannot be made now, if it cannot: the precedence of
    /// close reasons. Once the peer has exited nothing sent can reach it:
    /// a send fails with why the read side ended, or
    /// [`CloseReason::PeerClosed`] while what the peer wrote before is
    /// still being read.
    pub(crate) fn send_blocker(&self) -> Option<CloseReason> {
        if self.peer_exited() {
            return Some(self.read_blocker().unwrap_or(CloseReason::PeerClosed));
        }
        if let Some(r) = &self.write_failed {
            return Some(r.clone());
        }
        if self.local_closed {
            return Some(CloseReason::Local);
        }
        if let Some(g) = &self.peer.goodbye {
            return Some(CloseReason::Goodbye(g.clone()));
        }
        match &self.read {
            ReadEnd::Failed(r) => Some(r.clone()),
            _ => None,
        }
    }

    /// Whether input may be read now, whichever driver reads: the read
    /// side is open and neither back-pressure limit holds reading up (the
    /// queue for `recv` is full, or `pending_out` bytes of ours wait for a
    /// peer that does not read).
    pub(crate) fn may_read(&self, options: &ChannelOptions, pending_out: usize) -> bool {
        matches!(self.read, ReadEnd::Open)
            && !options.queue_full(&self.peer.incoming)
            && pending_out < HIGH_WATER + options.session.max_frame as usize
    }

    /// Whether a raw body may be written from the caller's buffer rather
    /// than copied into the queue: it is large enough for the copy to
    /// matter, carries no fds, and nothing else is queued or being written
    /// (`writer_idle`: the driver's own part of that), so frames cannot
    /// interleave.
    pub(crate) fn body_may_go_direct(
        &self,
        fds: &[OwnedFd],
        body_len: usize,
        writer_idle: bool,
    ) -> bool {
        fds.is_empty()
            && body_len >= DIRECT_BODY_MIN
            && writer_idle
            && self.session.transmit_len() == 0
            && self.write_failed.is_none()
    }

    /// Why the read side is over, if it is (pending requests fail with
    /// it). A local close made while nothing else had ended the channel
    /// stands first; a later close changes nothing. After the peer's exit,
    /// a write that failed (on the socket shut down) does not end it: what
    /// the peer wrote before it died (perhaps the answer) is read first,
    /// and the end of stream surely follows.
    pub(crate) fn read_blocker(&self) -> Option<CloseReason> {
        if self.local_first {
            return Some(CloseReason::Local);
        }
        if let Some(g) = &self.peer.goodbye {
            return Some(CloseReason::Goodbye(g.clone()));
        }
        match &self.read {
            ReadEnd::Open if self.peer_exited() => None,
            ReadEnd::Open => self.write_failed.clone(),
            ReadEnd::Eof => Some(CloseReason::PeerClosed),
            ReadEnd::Failed(r) => Some(r.clone()),
        }
    }

    /// Closes our side: says `Goodbye` (see [`farewell`]) if anything may
    /// still be sent, and records the close. Returns whether bytes were
    /// queued, for the driver to write.
    pub(crate) fn close(&mut self) -> bool {
        let mut queued = false;
        if self.send_blocker().is_none() && !self.session.goodbye_sent() {
            let (reason, message) = farewell(&self.session);
            queued = self.session.send_goodbye(reason, &message).is_ok();
        }
        if !self.local_closed {
            self.local_first = self.read_blocker().is_none();
        }
        self.local_closed = true;
        queued
    }

    /// What one read's result means, handed to the session: the data, end
    /// of stream (`ECONNRESET` counts as one: a peer that closes with our
    /// bytes unread makes the kernel report it once its data is drained),
    /// a protocol error (answered with a `Goodbye`), or a failed read. The
    /// driver then routes what was decoded ([`PeerView::take_decoded`]) and
    /// writes what the session produced.
    ///
    /// Fds that came with the read are queued for the messages the session
    /// ties them to; whatever is left when the read side ends (an error, a
    /// frame cut short) is closed by [`dispatch`](Self::dispatch).
    pub(crate) fn on_read(
        &mut self,
        result: io::Result<StreamRead>,
        rbuf: &mut BytesMut,
    ) -> ReadStep {
        let result = match result {
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(StreamRead::default()),
            r => r,
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadStep::Empty,
            _ if !matches!(self.read, ReadEnd::Open) => ReadStep::Ended,
            Ok(StreamRead {
                n: 0,
                fds,
                truncated,
                ..
            }) => {
                self.writers.last_read = None;
                let eof = if fds.is_empty() && !truncated {
                    self.session.handle_eof(rbuf).map(|_| ())
                } else {
                    // Fds with no byte: they belong to no frame.
                    self.session.handle_input_fds(rbuf, 0, fds.len(), truncated)
                };
                self.read = match eof {
                    Ok(()) => ReadEnd::Eof,
                    Err(e) => ReadEnd::Failed(CloseReason::Protocol(e)),
                };
                ReadStep::Ended
            }
            Ok(StreamRead {
                n,
                short,
                fds,
                truncated,
                creds,
            }) => {
                let count = fds.len();
                self.rx_fds.extend(fds);
                let writer = creds.and_then(|c| u32::try_from(c.pid).ok().filter(|&p| p > 0));
                let begun = rbuf.len() > n || self.session.in_frame();
                self.writers.on_read(writer, begun);
                self.on_input(rbuf, n, count, truncated, short)
            }
            Err(e) => {
                self.read = ReadEnd::Failed(CloseReason::Io(Arc::new(e)));
                ReadStep::Ended
            }
        }
    }

    /// Hands `n` new bytes (and `fds` new fds) to the session.
    fn on_input(
        &mut self,
        rbuf: &mut BytesMut,
        n: usize,
        fds: usize,
        truncated: bool,
        short: bool,
    ) -> ReadStep {
        match self.session.handle_input_fds(rbuf, n, fds, truncated) {
            Err(e) => {
                say_protocol_error(&mut self.session, &e);
                self.read = ReadEnd::Failed(CloseReason::Protocol(e));
                ReadStep::Ended
            }
            Ok(()) if short => ReadStep::Drained,
            Ok(()) => ReadStep::Data,
        }
    }

    /// Routes everything the session decoded into [`PeerView`] (see
    /// [`PeerView::take_decoded`]).
    ///
    /// Each message takes its fds from the received ones. Once the read
    /// side has ended, the fds no message took are closed.
    pub(crate) fn dispatch(
        &mut self,
        policy: ShutdownPolicy,
        answer: impl Fn() -> Arc<dyn Responder>,
        response: impl FnMut(u64, ResponseBody, Vec<OwnedFd>),
    ) {
        let had_ready = self.peer.ready.is_some();
        self.peer.take_decoded(
            &mut self.session,
            &mut self.rx_fds,
            policy,
            answer,
            response,
        );
        if !had_ready && self.peer.ready.is_some() {
            // Decoded by the read just handed to `on_read`: every driver
            // routes right after each read.
            self.peer.ready_writer = self.writers.last_read;
        }
        if !matches!(self.read, ReadEnd::Open) {
            self.rx_fds.clear();
        }
    }

    /// What the channel shows of the child's readiness, if anything yet
    /// (the child's exit counts while `watch_exit`).
    pub(crate) fn ready_event(&self, watch_exit: bool) -> Option<ReadyEvent> {
        ReadyEvent::of(&self.peer, &self.read, self.child_exited && watch_exit)
    }
}

/// What one read came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadStep {
    /// Bytes were read and handed to the session; there may be more.
    Data,
    /// Bytes were read and handed to the session, and the read was short:
    /// the socket had nothing more at that moment, so reading again now
    /// would only be an empty system call.
    Drained,
    /// Nothing to read now.
    Empty,
    /// The read side ended (EOF, a protocol error, a failed read).
    Ended,
}

/// What a parent's channel shows of the child's readiness: the one reading
/// of the channel's state for the blocking and the async driver.
#[derive(Debug)]
pub(crate) enum ReadyEvent {
    Ready(Ready),
    Closed,
    Goodbye(readyfd_proto::Goodbye),
    Exited,
    Protocol(SessionError),
    Io(CloseReason),
    Timeout,
}

impl ReadyEvent {
    /// What the channel's state says, if anything yet. Input comes first:
    /// a `Ready` read before the exit was noticed wins.
    pub(crate) fn of(peer: &PeerView, read: &ReadEnd, exited: bool) -> Option<ReadyEvent> {
        if let Some(r) = &peer.ready {
            return Some(ReadyEvent::Ready(r.clone()));
        }
        match read {
            ReadEnd::Failed(CloseReason::Protocol(e)) => {
                return Some(ReadyEvent::Protocol(e.clone()));
            }
            ReadEnd::Failed(r) => return Some(ReadyEvent::Io(r.clone())),
            ReadEnd::Eof => {
                return Some(match &peer.goodbye {
                    Some(g) => ReadyEvent::Goodbye(g.clone()),
                    None => ReadyEvent::Closed,
                });
            }
            ReadEnd::Open => {}
        }
        if let Some(g) = &peer.goodbye {
            return Some(ReadyEvent::Goodbye(g.clone()));
        }
        exited.then_some(ReadyEvent::Exited)
    }

    /// As the readiness core sees it. A `Goodbye` before `Ready`, whatever
    /// its reason, is the child giving up (or rejecting us): never the
    /// minimal "closed while alive" signal, which is a bare end of stream.
    pub(crate) fn into_seen(self, pid: u32, last_status: Option<String>) -> Seen {
        match self {
            ReadyEvent::Ready(r) => Seen::Ready(r, ReadyVia::Message),
            ReadyEvent::Closed => Seen::End({
                let mut ready = Ready::new(pid);
                ready.status = last_status;
                ready
            }),
            ReadyEvent::Goodbye(g) => match g.reason {
                GoodbyeReason::ProtocolError | GoodbyeReason::VersionMismatch => {
                    Seen::Protocol(ProtocolError::Other(format!(
                        "the child rejected us ({:?}): {}",
                        g.reason, g.message
                    )))
                }
                reason => Seen::Failed {
                    errno: None,
                    message: if g.message.is_empty() {
                        format!("it said Goodbye ({reason:?}) before it was ready")
                    } else {
                        format!(
                            "it said Goodbye ({reason:?}) before it was ready: {}",
                            g.message
                        )
                    },
                },
            },
            ReadyEvent::Exited => Seen::Exit,
            ReadyEvent::Protocol(e) => Seen::Protocol(ProtocolError::Session(e)),
            ReadyEvent::Io(CloseReason::Io(e)) => Seen::Io(match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e),
            }),
            ReadyEvent::Io(other) => Seen::Io(io::Error::other(other.to_string())),
            ReadyEvent::Timeout => Seen::Timeout,
        }
    }
}

/// The `Goodbye` a side says when it closes: `Done`, except for a child
/// that has not sent `Ready`, which gives up (`ShuttingDown`, with the
/// panic message while its thread panics; see [`panic_message`]).
pub(crate) fn farewell(session: &Session) -> (GoodbyeReason, String) {
    if session.role() == Role::Parent || session.is_ready() {
        return (GoodbyeReason::Done, String::new());
    }
    let message = if std::thread::panicking() {
        match panic_message() {
            Some(m) => format!("gave up: panicked: {m}"),
            None => "gave up: panicked".to_string(),
        }
    } else {
        "gave up: its channel was closed before it was ready".to_string()
    };
    (GoodbyeReason::ShuttingDown, message)
}

/// The message of the panic the current thread is unwinding from, as
/// recorded by a panic hook that readyfd installs (once, chaining to the
/// hook already there) when a child takes its channel.
fn panic_message() -> Option<String> {
    LAST_PANIC.with(|p| p.borrow().clone())
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Installs the hook behind [`panic_message`] (once per process).
pub(crate) fn record_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned());
            // Bounded: it travels in a Goodbye.
            let text = text.map(|mut t| {
                if t.len() > 512 {
                    let mut cut = 512;
                    while !t.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    t.truncate(cut);
                }
                t
            });
            // `try_with`: a panic during thread teardown has no slot.
            let _ = LAST_PANIC.try_with(|p| *p.borrow_mut() = text);
            previous(info);
        }));
    });
}

pub(crate) fn decode_response<T: DeserializeOwned>(body: ResponseBody) -> Result<T, ChannelError> {
    decode_as(&response_bytes(body)?)
}

/// The raw body of an answer, as the `*_bytes` requests return it: an
/// `App` body as it arrived (a slice of its frame), empty for `Ok`.
pub(crate) fn response_bytes(body: ResponseBody) -> Result<Bytes, ChannelError> {
    Ok(match body {
        ResponseBody::App(b) => b,
        ResponseBody::Ok => Bytes::new(),
        ResponseBody::Error(e) => return Err(ChannelError::Remote(e)),
        _ => Bytes::new(),
    })
}

/// What both drivers keep of what the peer sent, filled by
/// [`take_decoded`](Self::take_decoded).
#[derive(Default)]
pub(crate) struct PeerView {
    /// Requests and notifications for `recv`.
    pub(crate) incoming: IncomingQueue,
    /// The peer's `Hello`.
    pub(crate) hello: Option<Hello>,
    /// The peer's `Goodbye`.
    pub(crate) goodbye: Option<readyfd_proto::Goodbye>,
    /// The child's `Ready`.
    pub(crate) ready: Option<Ready>,
    /// The process that wrote the child's `Ready` frame, as the kernel
    /// attests it (`SO_PASSCRED` on the parent's end): `None` when no
    /// credentials came or the frame had more than one writer.
    pub(crate) ready_writer: Option<u32>,
    /// The fds that came with the child's `Ready`, until taken.
    pub(crate) ready_fds: Vec<OwnedFd>,
    /// The child's last status line.
    pub(crate) last_status: Option<String>,
    /// A `Shutdown` asks for SIGTERM once its acknowledgement is written.
    pub(crate) raise_sigterm: bool,
}

impl PeerView {
    /// Routes everything `session` has decoded (see [`next_routed`]) into
    /// this view: requests are queued holding `answer()` to be answered
    /// through, and answers to our own requests go to `response`.
    pub(crate) fn take_decoded(
        &mut self,
        session: &mut Session,
        rx_fds: &mut VecDeque<OwnedFd>,
        policy: ShutdownPolicy,
        answer: impl Fn() -> Arc<dyn Responder>,
        mut response: impl FnMut(u64, ResponseBody, Vec<OwnedFd>),
    ) {
        while let Some((routed, fds)) = next_routed(session, rx_fds, policy) {
            match routed {
                Routed::Hello(h) => self.hello = Some(h),
                Routed::Ready(r) => {
                    if r.status.is_some() {
                        self.last_status.clone_from(&r.status);
                    }
                    self.ready = Some(r);
                    self.ready_fds = fds;
                }
                Routed::Status(s) => self.last_status = Some(s),
                Routed::RaiseSigterm => self.raise_sigterm = true,
                Routed::Shutdown { id, grace } => self.incoming.push(Incoming::Shutdown(
                    ShutdownRequest::new(id, grace, answer()),
                )),
                Routed::Request { id, body } => self.incoming.push(Incoming::Request(
                    IncomingRequest::new(id, body, fds, answer()),
                )),
                Routed::Response { id, body } => response(id, body, fds),
                Routed::Notify(body) => self
                    .incoming
                    .push(Incoming::Notify(Notification::new(body, fds))),
                Routed::Goodbye(g) => self.goodbye = Some(g),
            }
        }
    }
}

/// A decoded message, after the rules every driver applies the same way:
/// what the session handed over that the application (or the driver's
/// bookkeeping) must see; [`PeerView::take_decoded`] files it for both
/// drivers.
#[derive(Debug)]
enum Routed {
    /// The peer's `Hello`.
    Hello(Hello),
    /// The child's `Ready`.
    Ready(Ready),
    /// A status line from the child.
    Status(String),
    /// `Shutdown` under [`ShutdownPolicy::RaiseSigterm`]: it is already
    /// acknowledged in the session's transmit queue; raise `SIGTERM` once
    /// that acknowledgement is written.
    RaiseSigterm,
    /// `Shutdown` under [`ShutdownPolicy::Deliver`], for the application.
    Shutdown {
        /// The request's id.
        id: u64,
        /// The grace the parent gives.
        grace: Option<Duration>,
    },
    /// An application request, for the application.
    Request {
        /// The request's id.
        id: u64,
        /// Its body, in the application's encoding.
        body: Bytes,
    },
    /// The answer to one of our requests.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        body: ResponseBody,
    },
    /// A one-way message.
    Notify(Bytes),
    /// The peer's `Goodbye`.
    Goodbye(readyfd_proto::Goodbye),
}

/// The next decoded message of `session`, routed, with the fds that came
/// with it (taken from `rx_fds`): `Shutdown` is handled according to
/// `policy`, a built-in request this version does not know is answered
/// `Unsupported` (the application never sees it), and `Ping` never gets
/// here (the session answers it). Fds of frames nobody receives (a `Ping`,
/// a `Shutdown`, `Goodbye`...) are closed here.
fn next_routed(
    session: &mut Session,
    rx_fds: &mut VecDeque<OwnedFd>,
    policy: ShutdownPolicy,
) -> Option<(Routed, Vec<OwnedFd>)> {
    loop {
        let event = session.poll_event_fds()?;
        // Allocates nothing for a frame without fds.
        let fds: Vec<OwnedFd> = rx_fds.drain(..event.fds.min(rx_fds.len())).collect();
        let Some(message) = event.message else {
            continue; // consumed by the session: `fds` are closed here
        };
        let routed = match message {
            Message::Hello(h) => Routed::Hello(h),
            Message::Ready(r) => Routed::Ready(r),
            Message::Status(s) => Routed::Status(s),
            Message::Request { id, body } => match body {
                RequestBody::Shutdown { grace_ms } => match policy {
                    ShutdownPolicy::RaiseSigterm => {
                        let _ = session.send_response(id, ResponseBody::Ok);
                        Routed::RaiseSigterm
                    }
                    ShutdownPolicy::Deliver => Routed::Shutdown {
                        id,
                        grace: grace_ms.map(Duration::from_millis),
                    },
                },
                RequestBody::App(body) => Routed::Request { id, body },
                _ => {
                    let _ = session.send_response(
                        id,
                        ResponseBody::Error(RemoteError {
                            kind: RemoteErrorKind::Unsupported,
                            message: "unknown built-in request".into(),
                        }),
                    );
                    continue;
                }
            },
            Message::Response { id, body } => Routed::Response { id, body },
            Message::Notify(body) => Routed::Notify(body),
            Message::Goodbye(g) => Routed::Goodbye(g),
            _ => continue,
        };
        let fds = match routed {
            Routed::Ready(_)
            | Routed::Request { .. }
            | Routed::Response { .. }
            | Routed::Notify(_) => fds,
            _ => Vec::new(),
        };
        return Some((routed, fds));
    }
}

/// Queues the `Goodbye` that tells the peer why its input was refused.
pub(crate) fn say_protocol_error(session: &mut Session, e: &SessionError) {
    let reason = if matches!(e, SessionError::VersionMismatch { .. }) {
        GoodbyeReason::VersionMismatch
    } else {
        GoodbyeReason::ProtocolError
    };
    let _ = session.send_goodbye(reason, &e.to_string());
}

#[cfg(test)]
mod keep_unwritten_tests {
    use super::keep_unwritten;

    #[test]
    fn what_a_vectored_write_left_is_kept_in_order() {
        let body = b"BODY";
        let mut out = b"head".to_vec();
        keep_unwritten(&mut out, body, 2);
        assert_eq!(out, b"adBODY");
        let mut out = b"head".to_vec();
        keep_unwritten(&mut out, body, 5);
        assert_eq!(out, b"ODY");
        let mut out = b"head".to_vec();
        keep_unwritten(&mut out, body, 8);
        assert!(out.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(len: usize) -> Incoming {
        Incoming::Notify(Notification::new(Bytes::from(vec![7u8; len]), Vec::new()))
    }

    fn parent_core() -> Core {
        Core::new(Role::Parent, SessionConfig::default())
    }

    #[test]
    fn an_exit_before_readiness_is_only_recorded_for_the_verdict() {
        let mut core = parent_core();
        assert!(
            !core.on_exit(),
            "an exit before readiness ended the channel"
        );
        assert!(core.child_exited);
        assert_eq!(core.send_blocker(), None);
        assert_eq!(core.read_blocker(), None);
    }

    #[test]
    fn a_write_to_a_closed_peer_is_the_peer_closing_any_other_failure_is_itself() {
        for errno in [nix::libc::EPIPE, nix::libc::ECONNRESET] {
            assert_eq!(
                write_failure(io::Error::from_raw_os_error(errno)),
                CloseReason::PeerClosed
            );
        }
        let other = write_failure(io::Error::from_raw_os_error(nix::libc::ENOBUFS));
        assert_eq!(
            other,
            CloseReason::Io(Arc::new(io::Error::from_raw_os_error(nix::libc::ENOBUFS)))
        );
    }

    #[test]
    fn the_exit_of_the_process_that_said_ready_ends_the_channel_once() {
        let mut core = parent_core();
        assert!(!core.watch_peer(true));
        assert!(core.on_exit(), "the peer's exit did not end the channel");
        assert!(!core.on_exit(), "ended twice");
        // Until the end of stream is read, what the peer wrote may still
        // come: waiting requests wait, even if a write failed meanwhile
        // (on the socket shut down); sends fail.
        core.write_failed = Some(CloseReason::Io(Arc::new(io::Error::from_raw_os_error(
            nix::libc::EPIPE,
        ))));
        assert_eq!(core.read_blocker(), None);
        assert_eq!(core.send_blocker(), Some(CloseReason::PeerClosed));
        core.read = ReadEnd::Eof;
        assert_eq!(core.read_blocker(), Some(CloseReason::PeerClosed));
        assert_eq!(core.send_blocker(), Some(CloseReason::PeerClosed));
    }

    #[test]
    fn a_child_that_exited_before_its_readiness_was_taken_ends_the_channel_at_once() {
        let mut core = parent_core();
        assert!(!core.on_exit());
        assert!(core.watch_peer(true), "the exit seen before was forgotten");
        assert!(!core.on_exit());
        // A second call changes nothing.
        assert!(!core.watch_peer(true));
    }

    #[test]
    fn after_a_wrapper_its_exit_seen_before_readiness_ends_nothing() {
        let mut core = parent_core();
        // The wrapper exits 0 before the process it started says Ready.
        assert!(!core.on_exit());
        assert!(
            !core.watch_peer(false),
            "the wrapper's exit ended the channel"
        );
        assert_eq!(core.send_blocker(), None);
        // The process that said Ready, now watched, exits.
        assert!(core.on_exit());
    }

    #[test]
    fn the_incoming_queue_is_bounded_in_bytes_as_well_as_in_messages() {
        let opts = ChannelOptions {
            max_incoming: 10,
            max_incoming_bytes: 3000,
            ..ChannelOptions::default()
        };
        let mut q = IncomingQueue::default();
        q.push(note(1000));
        q.push(note(1000));
        assert!(!opts.queue_full(&q));
        q.push(note(1000));
        // 3 bodies of 1000 bytes and their overhead: over 3000 bytes.
        assert!(opts.queue_full(&q));
        assert!(q.pop().is_some());
        assert!(!opts.queue_full(&q));
        // Small messages hit the count first.
        let mut q = IncomingQueue::default();
        for _ in 0..10 {
            q.push(note(0));
        }
        assert!(opts.queue_full(&q));
        assert_eq!(q.take().len(), 10);
        assert_eq!((q.len(), q.bytes), (0, 0));
    }

    /// A frame's writer is known only when every read that brought its
    /// bytes came from one process (PROTOCOL.md §6.4).
    #[test]
    fn a_frame_has_a_writer_only_when_one_process_wrote_all_of_it() {
        let mut w = Writers::default();
        assert_eq!(w.on_read(Some(7), false), Some(7), "whole frames");
        assert_eq!(w.on_read(Some(7), true), Some(7), "the rest of 7's frame");
        assert_eq!(w.on_read(Some(8), true), None, "8 ends 7's frame");
        assert_eq!(w.on_read(Some(8), true), None, "still that frame");
        assert_eq!(w.on_read(Some(8), false), Some(8), "a new frame");
        assert_eq!(w.on_read(None, false), None, "no credentials");
        assert_eq!(w.on_read(None, true), None);
    }

    /// The writer of the `Ready` frame is recorded as the read that
    /// completed it attributes it, and not changed by later reads.
    #[test]
    fn the_writer_of_ready_is_the_one_of_the_read_that_completed_it() {
        let mut child = Session::new(Role::Child, 9, SessionConfig::default());
        let (mut hello, mut ready) = (Vec::new(), Vec::new());
        child.send_hello();
        while child.poll_transmit(&mut hello) {}
        child.send_ready(&Ready::new(42)).unwrap();
        while child.poll_transmit(&mut ready) {}
        let read = |core: &mut Core, bytes: &mut BytesMut, data: &[u8], pid: i32| {
            bytes.extend_from_slice(data);
            let r = StreamRead {
                n: data.len(),
                creds: Some(crate::sys::Credentials { pid, uid: 0 }),
                ..StreamRead::default()
            };
            core.on_read(Ok(r), bytes);
            core.dispatch(ShutdownPolicy::default(), || unreachable!(), |_, _, _| {});
        };
        let (mut core, mut bytes) = (parent_core(), BytesMut::new());
        read(&mut core, &mut bytes, &hello, 9);
        // Half of `Ready` from 9, the rest from 42: no known writer.
        let (a, b) = ready.split_at(ready.len() / 2);
        read(&mut core, &mut bytes, a, 9);
        read(&mut core, &mut bytes, b, 42);
        assert!(core.peer.ready.is_some());
        assert_eq!(core.peer.ready_writer, None);

        let (mut core, mut bytes) = (parent_core(), BytesMut::new());
        read(&mut core, &mut bytes, &hello, 9);
        read(&mut core, &mut bytes, &ready, 42);
        assert_eq!(core.peer.ready_writer, Some(42));
        // A later read changes nothing.
        read(&mut core, &mut bytes, &hello[..2], 7);
        assert_eq!(core.peer.ready_writer, Some(42));
    }
}
