//! The blocking channel: one type for both ends of a native readyfd session.
//!
//! A [`Channel`] owns one AF_UNIX stream socket and one I/O thread. The
//! thread reads and decodes frames, answers `Ping`, routes each `Response`
//! to the thread waiting for it, and queues the peer's requests and
//! notifications for [`Channel::recv`]. Sends are made by the calling thread
//! directly while the socket has room (one `send` per batch of frames, with
//! `MSG_NOSIGNAL`); when it has not, the I/O thread takes over the rest, so
//! no thread ever blocks in `send` while holding up reads, and frames never
//! interleave on the wire.
//!
//! Memory is bounded on both paths: senders wait while more than
//! [`HIGH_WATER`] bytes are queued for the peer, and the I/O thread stops
//! reading while [`MAX_INCOMING`] messages wait in [`recv`](Channel::recv)'s
//! queue or our answers to the peer pile up, which pushes back on a peer
//! that floods.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nix::poll::{PollFd, PollFlags};
use readyfd_proto::codec::decode_body;
use readyfd_proto::{
    GoodbyeReason, Hello, Message, Ready, RemoteError, RemoteErrorKind, RequestBody, ResponseBody,
    Role, Session, SessionConfig, SessionError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ChannelError, CloseReason};
use crate::sys;

/// Bytes queued for the peer beyond which senders wait.
pub const HIGH_WATER: usize = 4 * 1024 * 1024;

/// Incoming requests and notifications queued for [`Channel::recv`] beyond
/// which the channel stops reading from the peer until some are taken.
///
/// This is back-pressure against a peer that floods, and it has a
/// consequence to know: while the queue is full nothing more is read, so an
/// answer to one of our own requests that arrives behind the backlog is not
/// seen either. A side that receives requests or notifications must keep
/// calling [`Channel::recv`] (on a thread of its own if need be) while it
/// also makes requests.
pub const MAX_INCOMING: usize = 1024;

/// How long dropping a channel waits for queued bytes to be written.
const DRAIN_ON_DROP: Duration = Duration::from_secs(2);

/// How much one read asks for.
const READ_CHUNK: usize = 64 * 1024;

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

/// Options of a [`Channel`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ChannelOptions {
    /// Limits enforced on the peer.
    pub session: SessionConfig,
    /// What a child does on `Shutdown` (ignored by parents).
    pub shutdown: ShutdownPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Nobody is writing.
    Idle,
    /// A caller's thread is writing.
    Caller,
    /// The socket was full: the I/O thread finishes the writing.
    Io,
}

/// What the I/O thread saw of the read side.
#[derive(Debug, Clone)]
pub(crate) enum ReadEnd {
    Open,
    /// The peer closed its end.
    Eof,
    Failed(CloseReason),
}

struct State {
    session: Session,
    out: Vec<u8>,
    /// How many bytes at the end of `out` are not written yet. Kept apart
    /// from `out`, which a writer takes out of the state while it sends.
    unsent: usize,
    writer: Writer,
    write_failed: Option<CloseReason>,
    local_closed: bool,
    read: ReadEnd,
    incoming: VecDeque<Incoming>,
    waiting: HashSet<u64>,
    responses: HashMap<u64, ResponseBody>,
    peer_hello: Option<Hello>,
    peer_goodbye: Option<readyfd_proto::Goodbye>,
    ready: Option<Ready>,
    last_status: Option<String>,
    child_exited: bool,
    raise_sigterm: bool,
    stop: bool,
}

impl State {
    fn pending_out(&self) -> usize {
        self.session.transmit_len() + self.unsent
    }

    /// Why a send cannot be made now, if it cannot.
    fn send_blocker(&self) -> Option<CloseReason> {
        send_blocker(
            self.write_failed.as_ref(),
            self.local_closed,
            self.peer_goodbye.as_ref(),
            &self.read,
        )
    }

    /// Why the read side is over, if it is: pending requests fail with it.
    fn read_blocker(&self) -> Option<CloseReason> {
        read_blocker(
            self.write_failed.as_ref(),
            self.local_closed,
            self.peer_goodbye.as_ref(),
            &self.read,
        )
    }
}

/// Why a send cannot be made now, if it cannot: the precedence of close
/// reasons, shared by the blocking and the async channel.
pub(crate) fn send_blocker(
    write_failed: Option<&CloseReason>,
    local_closed: bool,
    peer_goodbye: Option<&readyfd_proto::Goodbye>,
    read: &ReadEnd,
) -> Option<CloseReason> {
    if let Some(r) = write_failed {
        return Some(r.clone());
    }
    if local_closed {
        return Some(CloseReason::Local);
    }
    if let Some(g) = peer_goodbye {
        return Some(CloseReason::Goodbye(g.clone()));
    }
    match read {
        ReadEnd::Failed(r) => Some(r.clone()),
        _ => None,
    }
}

/// Why the read side is over, if it is (pending requests fail with it);
/// shared by the blocking and the async channel.
pub(crate) fn read_blocker(
    write_failed: Option<&CloseReason>,
    local_closed: bool,
    peer_goodbye: Option<&readyfd_proto::Goodbye>,
    read: &ReadEnd,
) -> Option<CloseReason> {
    if let Some(g) = peer_goodbye {
        return Some(CloseReason::Goodbye(g.clone()));
    }
    match read {
        ReadEnd::Open => write_failed.cloned().or(if local_closed {
            Some(CloseReason::Local)
        } else {
            None
        }),
        ReadEnd::Eof => Some(CloseReason::PeerClosed),
        ReadEnd::Failed(r) => Some(r.clone()),
    }
}

pub(crate) struct Inner {
    sock: OwnedFd,
    wake: OwnedFd,
    pidfd: Option<OwnedFd>,
    state: Mutex<State>,
    cond: Condvar,
    policy: ShutdownPolicy,
    max_frame: u32,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half
        // updated in a way that matters more than the panic itself.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(
        &self,
        g: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, State>, bool) {
        match deadline {
            None => (self.cond.wait(g).unwrap_or_else(|p| p.into_inner()), false),
            Some(d) => {
                let left = sys::remaining(d);
                if left.is_zero() {
                    return (g, true);
                }
                let (g, r) = self
                    .cond
                    .wait_timeout(g, left)
                    .unwrap_or_else(|p| p.into_inner());
                (g, r.timed_out() && Instant::now() >= d)
            }
        }
    }

    /// Writes what is queued, as `who`. Returns with the lock held.
    /// A caller hands over to the I/O thread when the socket is full; the
    /// I/O thread keeps the role until everything is out.
    fn flush<'a>(&'a self, mut st: MutexGuard<'a, State>, who: Writer) -> MutexGuard<'a, State> {
        match (st.writer, who) {
            (Writer::Idle, _) => st.writer = who,
            (Writer::Io, Writer::Io) => {}
            _ => return st, // the current writer will send our bytes too
        }
        loop {
            if st.write_failed.is_some() {
                let mut discard = std::mem::take(&mut st.out);
                discard.clear();
                let _ = st.session.poll_transmit(&mut discard);
                discard.clear();
                st.out = discard;
                st.unsent = 0;
                break;
            }
            if st.unsent == 0 {
                let mut out = std::mem::take(&mut st.out);
                out.clear();
                let more = st.session.poll_transmit(&mut out);
                st.unsent = out.len();
                st.out = out;
                if !more {
                    break;
                }
            }
            let out = std::mem::take(&mut st.out);
            let pos = out.len() - st.unsent;
            drop(st);
            let res = sys::send_nonblocking(self.sock.as_fd(), &out[pos..]);
            st = self.lock();
            st.out = out;
            match res {
                Ok(n) => {
                    st.unsent -= n;
                    if st.writer == Writer::Io {
                        // Senders waiting for room may proceed.
                        self.cond.notify_all();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if st.writer == Writer::Caller {
                        st.writer = Writer::Io;
                        sys::eventfd_wake(self.wake.as_fd());
                    }
                    return st;
                }
                Err(e) => {
                    st.write_failed = Some(CloseReason::Io(e.kind(), e.to_string()));
                }
            }
        }
        st.writer = Writer::Idle;
        self.cond.notify_all();
        st
    }
}

/// One end of a native readyfd channel.
///
/// A `Channel` owns one AF_UNIX stream socket and one I/O thread. The
/// thread reads and decodes frames, answers `Ping`, routes each response to
/// the thread waiting for it, and queues the peer's requests and
/// notifications for [`recv`](Self::recv). Sends are made by the calling
/// thread directly while the socket has room (with `MSG_NOSIGNAL`); when it
/// has not, the I/O thread writes the rest, so frames never interleave and
/// no thread blocks in `send` while reads are held up. Memory is bounded
/// both ways: senders wait while more than [`HIGH_WATER`] bytes are queued,
/// and reading pauses while [`MAX_INCOMING`] messages wait to be taken.
///
/// `Channel` is `Send + Sync`: share it between threads by reference or in
/// an `Arc`. Dropping it says `Goodbye` to the peer, closes the socket and
/// stops its I/O thread.
pub struct Channel {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("Channel")
            .field("role", &st.session.role())
            .field("peer", &st.peer_hello)
            .field("ready", &st.ready.is_some())
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Starts a channel over a connected AF_UNIX stream socket: queues our
    /// `Hello` and starts the I/O thread. `pidfd`, for a parent, is watched
    /// so that a child's death is seen at once.
    pub(crate) fn start(
        sock: OwnedFd,
        role: Role,
        pidfd: Option<OwnedFd>,
        opts: ChannelOptions,
    ) -> io::Result<Channel> {
        sys::set_nonblocking(sock.as_fd(), true)?;
        let wake = sys::eventfd()?;
        let mut session = Session::new(role, std::process::id(), opts.session);
        session.send_hello();
        let inner = Arc::new(Inner {
            sock,
            wake,
            pidfd,
            state: Mutex::new(State {
                session,
                out: Vec::new(),
                unsent: 0,
                writer: Writer::Idle,
                write_failed: None,
                local_closed: false,
                read: ReadEnd::Open,
                incoming: VecDeque::new(),
                waiting: HashSet::new(),
                responses: HashMap::new(),
                peer_hello: None,
                peer_goodbye: None,
                ready: None,
                last_status: None,
                child_exited: false,
                raise_sigterm: false,
                stop: false,
            }),
            cond: Condvar::new(),
            policy: opts.shutdown,
            max_frame: opts.session.max_frame,
        });
        // Send our Hello now: it costs nothing and lets a peer that waits
        // for it proceed.
        drop(inner.flush(inner.lock(), Writer::Caller));
        let io = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("readyfd-io".into())
            .spawn(move || {
                // The I/O thread must never leave waiters hanging: whatever
                // ends it (a poll failure, a bug that panics), the channel is
                // marked closed and everyone waiting is woken.
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| io_loop(&io)));
                let mut st = io.lock();
                if matches!(st.read, ReadEnd::Open) && !st.stop {
                    let why = match outcome {
                        Ok(()) => "the channel's I/O thread stopped".to_string(),
                        Err(_) => "the channel's I/O thread panicked".to_string(),
                    };
                    st.read = ReadEnd::Failed(CloseReason::Io(io::ErrorKind::Other, why));
                }
                io.cond.notify_all();
            })?;
        Ok(Channel {
            inner,
            thread: Some(thread),
        })
    }

    /// The peer's `Hello` (its pid and protocol version), once it arrived.
    pub fn peer(&self) -> Option<Hello> {
        self.inner.lock().peer_hello.clone()
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.inner.lock().session.role()
    }

    /// The last status line the child sent (parent side).
    pub fn last_status(&self) -> Option<String> {
        self.inner.lock().last_status.clone()
    }

    /// Why the channel is closed, or `None` while it is open.
    pub fn closed(&self) -> Option<CloseReason> {
        self.inner.lock().read_blocker()
    }

    // ---- sending ----------------------------------------------------------

    fn send<R>(
        &self,
        deadline: Option<Instant>,
        f: impl FnOnce(&mut State) -> Result<R, SessionError>,
    ) -> Result<R, ChannelError> {
        let mut st = self.inner.lock();
        loop {
            if let Some(r) = st.send_blocker() {
                return Err(ChannelError::Closed(r));
            }
            if st.pending_out() < HIGH_WATER {
                break;
            }
            let (g, timed_out) = self.inner.wait(st, deadline);
            st = g;
            if timed_out {
                return Err(ChannelError::Timeout(Duration::ZERO));
            }
        }
        let r = f(&mut st)?;
        drop(self.inner.flush(st, Writer::Caller));
        Ok(r)
    }

    /// Child: announces readiness. Requests may be made and served before
    /// and after it.
    ///
    /// # Errors
    /// [`ChannelError::NotAllowed`] from a parent or a second time;
    /// [`ChannelError::Closed`] when the parent has gone.
    pub fn ready(&self, ready: &Ready) -> Result<(), ChannelError> {
        self.send(None, |st| st.session.send_ready(ready))
    }

    /// Child: sends a status line (shown by `readyfd run` while it waits, and
    /// kept by the parent as [`last_status`](Self::last_status)).
    ///
    /// # Errors
    /// As [`ready`](Self::ready).
    pub fn status(&self, text: &str) -> Result<(), ChannelError> {
        self.send(None, |st| st.session.send_status(text))
    }

    /// Sends a one-way application message.
    ///
    /// # Errors
    /// [`ChannelError::Encode`] when it does not fit the peer's maximum
    /// frame; [`ChannelError::Closed`] when the channel is closed.
    pub fn notify<T: Serialize + ?Sized>(&self, body: &T) -> Result<(), ChannelError> {
        self.send(None, |st| st.session.send_notify(body))
    }

    /// Sends an application request and waits for its answer, decoded as
    /// `Resp`. Waits as long as the peer is there; see
    /// [`request_timeout`](Self::request_timeout).
    ///
    /// # Errors
    /// [`ChannelError::Remote`] when the peer failed it,
    /// [`ChannelError::Decode`] when the answer is not a `Resp`,
    /// [`ChannelError::Closed`] when the peer goes away first.
    pub fn request<Req, Resp>(&self, req: &Req) -> Result<Resp, ChannelError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let body = self.call(None, |s| s.send_app_request(req))?;
        decode_response(body)
    }

    /// [`request`](Self::request) with a bound: after `timeout` it fails
    /// with [`ChannelError::Timeout`] and a late answer is discarded.
    ///
    /// # Errors
    /// As [`request`](Self::request), plus [`ChannelError::Timeout`].
    pub fn request_timeout<Req, Resp>(
        &self,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, ChannelError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let body = self
            .call(Some(Instant::now() + timeout), |s| s.send_app_request(req))
            .map_err(|e| with_timeout(e, timeout))?;
        decode_response(body)
    }

    /// Sends `Ping` (answered by the peer's library, not its application)
    /// and returns the round-trip time.
    ///
    /// # Errors
    /// [`ChannelError::Closed`] or [`ChannelError::Timeout`].
    pub fn ping(&self, timeout: Duration) -> Result<Duration, ChannelError> {
        let t0 = Instant::now();
        self.call(Some(t0 + timeout), |s| s.send_request(RequestBody::Ping))
            .map_err(|e| with_timeout(e, timeout))?;
        Ok(t0.elapsed())
    }

    /// Parent: asks the child to stop within `grace` and waits up to
    /// `grace` for its acknowledgement (not for its exit).
    ///
    /// # Errors
    /// [`ChannelError::NotAllowed`] from a child; [`ChannelError::Timeout`]
    /// when no acknowledgement came; [`ChannelError::Closed`].
    pub fn shutdown(&self, grace: Duration) -> Result<(), ChannelError> {
        let grace_ms = Some(grace.as_millis().min(u128::from(u64::MAX)) as u64);
        self.call(Some(Instant::now() + grace), |s| {
            s.send_request(RequestBody::Shutdown { grace_ms })
        })
        .map_err(|e| with_timeout(e, grace))?;
        Ok(())
    }

    fn call(
        &self,
        deadline: Option<Instant>,
        send: impl FnOnce(&mut Session) -> Result<u64, SessionError>,
    ) -> Result<ResponseBody, ChannelError> {
        let id = self.send(deadline, |st| {
            let id = send(&mut st.session)?;
            st.waiting.insert(id);
            Ok(id)
        })?;
        let mut st = self.inner.lock();
        loop {
            if let Some(body) = st.responses.remove(&id) {
                st.waiting.remove(&id);
                return match body {
                    ResponseBody::Error(e) => Err(ChannelError::Remote(e)),
                    other => Ok(other),
                };
            }
            if let Some(r) = st.read_blocker() {
                st.waiting.remove(&id);
                return Err(ChannelError::Closed(r));
            }
            let (g, timed_out) = self.inner.wait(st, deadline);
            st = g;
            if timed_out && !st.responses.contains_key(&id) {
                st.waiting.remove(&id);
                st.session.abandon_request(id);
                return Err(ChannelError::Timeout(Duration::ZERO));
            }
        }
    }

    // ---- receiving --------------------------------------------------------

    /// Waits for the peer's next request, notification or (child, with
    /// [`ShutdownPolicy::Deliver`]) shutdown.
    ///
    /// # Errors
    /// [`ChannelError::Closed`] once the peer has gone and the queue is
    /// empty.
    pub fn recv(&self) -> Result<Incoming, ChannelError> {
        self.recv_until(None)?
            .ok_or(ChannelError::Timeout(Duration::ZERO))
    }

    /// [`recv`](Self::recv), giving up after `timeout` with `Ok(None)`.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Incoming>, ChannelError> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<Option<Incoming>, ChannelError> {
        let mut st = self.inner.lock();
        loop {
            if let Some(m) = st.incoming.pop_front() {
                if st.incoming.len() + 1 == MAX_INCOMING {
                    // The I/O thread may have stopped reading: let it resume.
                    sys::eventfd_wake(self.inner.wake.as_fd());
                }
                return Ok(Some(m));
            }
            if let Some(r) = st.read_blocker() {
                return Err(ChannelError::Closed(r));
            }
            let (g, timed_out) = self.inner.wait(st, deadline);
            st = g;
            if timed_out && st.incoming.is_empty() {
                return Ok(None);
            }
        }
    }

    /// Says `Goodbye` and stops sending. Requests still waiting fail with
    /// [`CloseReason::Local`]. Dropping the channel does this too.
    pub fn close(&self) {
        let mut st = self.inner.lock();
        if st.send_blocker().is_none() && !st.session.goodbye_sent() {
            let _ = st.session.send_goodbye(GoodbyeReason::Done, "");
            st = self.inner.flush(st, Writer::Caller);
        }
        st.local_closed = true;
        self.inner.cond.notify_all();
    }

    // ---- parent-side waiting ------------------------------------------------

    /// Waits until the child is ready, the channel ends, the child exits
    /// (with the pidfd given to [`start`](Self::start)) or `deadline`.
    pub(crate) fn wait_ready_event(&self, deadline: Instant, ignore_exit: bool) -> ReadyEvent {
        let mut st = self.inner.lock();
        loop {
            if let Some(r) = &st.ready {
                return ReadyEvent::Ready(r.clone());
            }
            match &st.read {
                ReadEnd::Failed(CloseReason::Protocol(e)) => {
                    return ReadyEvent::Protocol(e.clone());
                }
                ReadEnd::Failed(r) => return ReadyEvent::Io(r.clone()),
                ReadEnd::Eof => return ReadyEvent::Closed,
                ReadEnd::Open => {}
            }
            if let Some(g) = &st.peer_goodbye {
                return ReadyEvent::Goodbye(g.clone());
            }
            if st.child_exited && !ignore_exit {
                return ReadyEvent::Exited;
            }
            let (g, timed_out) = self.inner.wait(st, Some(deadline));
            st = g;
            if timed_out {
                return ReadyEvent::Timeout;
            }
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // Requests nobody took are answered `Dropped` before our Goodbye, so
        // the peer's callers get a clear error. Each one also holds the
        // channel's state alive: leaving them queued would keep the socket,
        // eventfd and pidfd open for good.
        let unconsumed = std::mem::take(&mut self.inner.lock().incoming);
        drop(unconsumed);
        self.close();
        {
            // Give what is queued (a last Ready or answer) a bounded chance
            // to reach a peer that is slow to read, then stop.
            let deadline = Instant::now() + DRAIN_ON_DROP;
            let mut st = self.inner.lock();
            while st.writer != Writer::Idle && st.write_failed.is_none() {
                let (g, timed_out) = self.inner.wait(st, Some(deadline));
                st = g;
                if timed_out {
                    break;
                }
            }
            st.stop = true;
        }
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&self.inner.sock),
            nix::sys::socket::Shutdown::Both,
        );
        sys::eventfd_wake(self.inner.wake.as_fd());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Whatever arrived meanwhile: dropped outside the lock (dropping an
        // IncomingRequest takes it).
        let late = std::mem::take(&mut self.inner.lock().incoming);
        drop(late);
    }
}

/// What [`Channel::wait_ready_event`] saw.
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

fn with_timeout(e: ChannelError, t: Duration) -> ChannelError {
    match e {
        ChannelError::Timeout(_) => ChannelError::Timeout(t),
        other => other,
    }
}

pub(crate) fn decode_response<T: DeserializeOwned>(body: ResponseBody) -> Result<T, ChannelError> {
    let bytes = match body {
        ResponseBody::App(b) => b,
        ResponseBody::Ok => Bytes::new(),
        ResponseBody::Error(e) => return Err(ChannelError::Remote(e)),
        _ => Bytes::new(),
    };
    decode_body(&bytes).map_err(|source| ChannelError::Decode {
        type_name: std::any::type_name::<T>(),
        source,
    })
}

// ---- incoming ---------------------------------------------------------------

/// The channel side that writes the answers of [`IncomingRequest`] and
/// [`ShutdownRequest`]: the blocking channel and the async one each
/// implement it, so both hand out the same request types.
pub(crate) trait Answer: Send + Sync {
    /// Queues what `f` adds to the session and writes it, without waiting
    /// for the peer.
    fn answer(
        &self,
        f: &mut dyn FnMut(&mut Session) -> Result<(), SessionError>,
    ) -> Result<(), ChannelError>;
}

impl Answer for Inner {
    fn answer(
        &self,
        f: &mut dyn FnMut(&mut Session) -> Result<(), SessionError>,
    ) -> Result<(), ChannelError> {
        send_on(self, |st| f(&mut st.session))
    }
}

/// Something the peer sent that the application handles.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A request: answer it with [`IncomingRequest::respond`].
    Request(IncomingRequest),
    /// A one-way message.
    Notify(Notification),
    /// The parent asks this child to stop (only with
    /// [`ShutdownPolicy::Deliver`]).
    Shutdown(ShutdownRequest),
}

/// A request from the peer. Dropping it unanswered answers it with a
/// [`RemoteErrorKind::Dropped`] error, so the peer never waits forever.
///
/// Answering does not wait: the answer is queued and written as far as the
/// socket takes it, the rest by the channel's I/O thread (or task).
pub struct IncomingRequest {
    id: u64,
    body: Bytes,
    answer: Option<Arc<dyn Answer>>,
}

impl fmt::Debug for IncomingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingRequest")
            .field("id", &self.id)
            .field("len", &self.body.len())
            .finish()
    }
}

impl IncomingRequest {
    pub(crate) fn new(id: u64, body: Bytes, answer: Arc<dyn Answer>) -> IncomingRequest {
        IncomingRequest {
            id,
            body,
            answer: Some(answer),
        }
    }

    /// The request's id (unique among the peer's unanswered requests).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The raw body, in the application's encoding.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// Decodes the body as `T`.
    ///
    /// # Errors
    /// [`ChannelError::Decode`] when it is not a `T`. Answer such a request
    /// with [`reject`](Self::reject) and [`RemoteErrorKind::BadRequest`].
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ChannelError> {
        decode_body(&self.body).map_err(|source| ChannelError::Decode {
            type_name: std::any::type_name::<T>(),
            source,
        })
    }

    /// Answers with `body`.
    ///
    /// # Errors
    /// [`ChannelError::Encode`] when `body` is too large for the peer (the
    /// request is then answered with an error instead);
    /// [`ChannelError::Closed`].
    pub fn respond<T: Serialize + ?Sized>(mut self, body: &T) -> Result<(), ChannelError> {
        let answer = self.answer.take().expect("answered once");
        let id = self.id;
        let r = answer.answer(&mut |s| s.send_app_response(id, body));
        if let Err(ChannelError::Encode(e)) = &r {
            // The peer still gets an answer: an error that says why.
            let _ = answer_error(&*answer, id, RemoteErrorKind::Failed, e.to_string());
        }
        r
    }

    /// Answers with an error of kind `kind`.
    ///
    /// # Errors
    /// [`ChannelError::Closed`].
    pub fn reject(
        mut self,
        kind: RemoteErrorKind,
        message: impl Into<String>,
    ) -> Result<(), ChannelError> {
        let answer = self.answer.take().expect("answered once");
        answer_error(&*answer, self.id, kind, message.into())
    }
}

impl Drop for IncomingRequest {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            let _ = answer_error(
                &*answer,
                self.id,
                RemoteErrorKind::Dropped,
                "the request was dropped without an answer".into(),
            );
        }
    }
}

fn answer_error(
    answer: &dyn Answer,
    id: u64,
    kind: RemoteErrorKind,
    message: String,
) -> Result<(), ChannelError> {
    let error = RemoteError { kind, message };
    answer.answer(&mut |s| s.send_response(id, ResponseBody::Error(error.clone())))
}

/// A one-way message from the peer.
#[derive(Debug, Clone)]
pub struct Notification {
    body: Bytes,
}

impl Notification {
    /// A notification carrying `body` (also made by the async channel).
    pub(crate) fn new(body: Bytes) -> Notification {
        Notification { body }
    }

    /// The raw body, in the application's encoding.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// Decodes the body as `T`.
    ///
    /// # Errors
    /// [`ChannelError::Decode`] when it is not a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ChannelError> {
        decode_body(&self.body).map_err(|source| ChannelError::Decode {
            type_name: std::any::type_name::<T>(),
            source,
        })
    }
}

/// The parent's request that this child stop. Dropping it acknowledges it.
pub struct ShutdownRequest {
    id: u64,
    grace: Option<Duration>,
    answer: Option<Arc<dyn Answer>>,
}

impl fmt::Debug for ShutdownRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownRequest")
            .field("grace", &self.grace)
            .finish()
    }
}

impl ShutdownRequest {
    pub(crate) fn new(
        id: u64,
        grace: Option<Duration>,
        answer: Arc<dyn Answer>,
    ) -> ShutdownRequest {
        ShutdownRequest {
            id,
            grace,
            answer: Some(answer),
        }
    }

    /// How long the parent waits before it escalates to signals.
    pub fn grace(&self) -> Option<Duration> {
        self.grace
    }

    /// Acknowledges the request (the parent then waits for the exit).
    ///
    /// # Errors
    /// [`ChannelError::Closed`].
    pub fn acknowledge(mut self) -> Result<(), ChannelError> {
        let answer = self.answer.take().expect("answered once");
        let id = self.id;
        answer.answer(&mut |s| s.send_response(id, ResponseBody::Ok))
    }
}

impl Drop for ShutdownRequest {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            let id = self.id;
            let _ = answer.answer(&mut |s| s.send_response(id, ResponseBody::Ok));
        }
    }
}

fn send_on(
    inner: &Inner,
    f: impl FnOnce(&mut State) -> Result<(), SessionError>,
) -> Result<(), ChannelError> {
    let mut st = inner.lock();
    if let Some(r) = st.send_blocker() {
        return Err(ChannelError::Closed(r));
    }
    f(&mut st)?;
    drop(inner.flush(st, Writer::Caller));
    Ok(())
}

// ---- the I/O thread -----------------------------------------------------------

fn io_loop(inner: &Arc<Inner>) {
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut watch_pid = inner.pidfd.is_some();
    loop {
        let (want_read, want_write) = {
            let st = inner.lock();
            if st.stop {
                return;
            }
            let reading = matches!(st.read, ReadEnd::Open)
                && st.incoming.len() < MAX_INCOMING
                && st.pending_out() < HIGH_WATER + inner.max_frame as usize;
            (reading, st.writer == Writer::Io)
        };
        let mut events = PollFlags::empty();
        if want_read {
            events |= PollFlags::POLLIN;
        }
        if want_write {
            events |= PollFlags::POLLOUT;
        }
        // The socket is polled only when we want something of it: a hung-up
        // socket reports POLLHUP whatever is asked, and must not spin us
        // while reading is paused.
        let mut fds = [
            PollFd::new(inner.wake.as_fd(), PollFlags::POLLIN),
            PollFd::new(inner.wake.as_fd(), PollFlags::empty()),
            PollFd::new(inner.wake.as_fd(), PollFlags::empty()),
        ];
        let mut n = 1;
        let sock_at = if events.is_empty() {
            None
        } else {
            fds[n] = PollFd::new(inner.sock.as_fd(), events);
            n += 1;
            Some(n - 1)
        };
        let pid_at = match (&inner.pidfd, watch_pid) {
            (Some(p), true) => {
                fds[n] = PollFd::new(p.as_fd(), PollFlags::POLLIN);
                n += 1;
                Some(n - 1)
            }
            _ => None,
        };
        let fds = &mut fds[..n];
        if sys::poll_until(fds, None).is_err() {
            return;
        }
        let rev = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .unwrap_or(PollFlags::empty())
        };
        let (wake_ev, sock_ev, pid_ev) = (rev(Some(0)), rev(sock_at), rev(pid_at));
        if !wake_ev.is_empty() {
            sys::eventfd_drain(inner.wake.as_fd());
        }
        if want_write
            && sock_ev.intersects(PollFlags::POLLOUT | PollFlags::POLLERR | PollFlags::POLLHUP)
        {
            drop(inner.flush(inner.lock(), Writer::Io));
        }
        if want_read
            && sock_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
        {
            read_available(inner, &mut rbuf);
        }
        if !pid_ev.is_empty() {
            // The child exited. Frames it wrote before dying are already in
            // the socket buffer: take them first, so `Ready` wins.
            read_available(inner, &mut rbuf);
            watch_pid = false;
            let mut st = inner.lock();
            st.child_exited = true;
            inner.cond.notify_all();
        }
    }
}

/// Reads until the socket is drained (or a bound of reads, to stay fair),
/// handing everything to the session.
fn read_available(inner: &Arc<Inner>, rbuf: &mut BytesMut) {
    for _ in 0..16 {
        {
            let st = inner.lock();
            if !matches!(st.read, ReadEnd::Open) {
                return;
            }
        }
        // A peer that closes with our bytes unread makes the kernel report
        // ECONNRESET once its data is drained: that is its EOF.
        let r = match sys::read_into(inner.sock.as_fd(), rbuf, READ_CHUNK) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(0),
            r => r,
        };
        match r {
            Ok(0) => {
                let mut st = inner.lock();
                let r = st.session.handle_eof(rbuf);
                st.read = match r {
                    Ok(_) => ReadEnd::Eof,
                    Err(e) => ReadEnd::Failed(CloseReason::Protocol(e)),
                };
                dispatch(inner, &mut st);
                let st = finish_input(inner, st);
                inner.cond.notify_all();
                drop(st);
                return;
            }
            Ok(_) => {
                let mut st = inner.lock();
                let r = st.session.handle_input(rbuf);
                dispatch(inner, &mut st);
                if let Err(e) = r {
                    say_protocol_error(&mut st.session, &e);
                    st.read = ReadEnd::Failed(CloseReason::Protocol(e));
                }
                let st = finish_input(inner, st);
                inner.cond.notify_all();
                if st.incoming.len() >= MAX_INCOMING {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                let mut st = inner.lock();
                st.read = ReadEnd::Failed(CloseReason::Io(e.kind(), e.to_string()));
                inner.cond.notify_all();
                return;
            }
        }
    }
}

/// After input: send what the session produced (pongs, acknowledgements),
/// then raise SIGTERM if a Shutdown asked for it.
fn finish_input<'a>(inner: &'a Arc<Inner>, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    let mut st = if st.session.transmit_len() > 0 {
        inner.flush(st, Writer::Io)
    } else {
        st
    };
    if st.raise_sigterm {
        st.raise_sigterm = false;
        // Make sure the acknowledgement is out before the signal may end us:
        // whoever holds the writer role (perhaps a caller's thread in the
        // middle of a send) must have written everything queued.
        let deadline = Instant::now() + Duration::from_secs(1);
        while (st.pending_out() > 0 || st.writer != Writer::Idle)
            && st.write_failed.is_none()
            && Instant::now() < deadline
        {
            st = match st.writer {
                Writer::Idle => inner.flush(st, Writer::Io),
                Writer::Io => {
                    drop(st);
                    let _ = sys::wait_fd(inner.sock.as_fd(), PollFlags::POLLOUT, Some(deadline));
                    inner.flush(inner.lock(), Writer::Io)
                }
                Writer::Caller => inner.wait(st, Some(deadline)).0,
            };
        }
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM);
    }
    st
}

/// Routes decoded messages to their waiters and queues.
fn dispatch(inner: &Arc<Inner>, st: &mut State) {
    while let Some(routed) = next_routed(&mut st.session, inner.policy) {
        match routed {
            Routed::Hello(h) => st.peer_hello = Some(h),
            Routed::Ready(r) => {
                if r.status.is_some() {
                    st.last_status.clone_from(&r.status);
                }
                st.ready = Some(r);
            }
            Routed::Status(s) => st.last_status = Some(s),
            Routed::RaiseSigterm => st.raise_sigterm = true,
            Routed::Shutdown { id, grace } => {
                st.incoming
                    .push_back(Incoming::Shutdown(ShutdownRequest::new(
                        id,
                        grace,
                        Arc::clone(inner) as Arc<dyn Answer>,
                    )))
            }
            Routed::Request { id, body } => {
                st.incoming
                    .push_back(Incoming::Request(IncomingRequest::new(
                        id,
                        body,
                        Arc::clone(inner) as Arc<dyn Answer>,
                    )))
            }
            Routed::Response { id, body } => {
                if st.waiting.contains(&id) {
                    st.responses.insert(id, body);
                }
            }
            Routed::Notify(body) => st
                .incoming
                .push_back(Incoming::Notify(Notification::new(body))),
            Routed::Goodbye(g) => st.peer_goodbye = Some(g),
        }
    }
}

/// A decoded message, after the rules every driver applies the same way:
/// what the session handed over that the application (or the driver's
/// bookkeeping) must see. Shared by the blocking and the async channel.
#[derive(Debug)]
pub(crate) enum Routed {
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

/// The next decoded message of `session`, routed: `Shutdown` is handled
/// according to `policy`, a built-in request this version does not know is
/// answered `Unsupported` (the application never sees it), and `Ping` never
/// gets here (the session answers it).
pub(crate) fn next_routed(session: &mut Session, policy: ShutdownPolicy) -> Option<Routed> {
    loop {
        let routed = match session.poll_event()? {
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
        return Some(routed);
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
