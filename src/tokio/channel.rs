//! The async channel: one type for both ends of a native readyfd session,
//! driven by one tokio task per channel.
//!
//! # Design
//!
//! Everything that outlives a single call lives in the channel's shared
//! state, behind one mutex that is never held across an `.await`: the
//! [`Session`] (which owns the frame decoder and the transmit queue), the
//! bytes taken from it and not yet written (with the write position), the
//! map from request ids to the waiting callers' places (answer and
//! waker), and the queue of the peer's requests
//! and notifications for [`Channel::recv`].
//!
//! - **Writing.** A call queues its frame into the session and then writes
//!   what is queued with non-blocking `send`s (`MSG_NOSIGNAL`), all under the
//!   mutex and without awaiting, so a frame is queued whole and written in
//!   queue order: frames never interleave. When the socket is full the I/O
//!   task takes over the writing (it waits for writability); callers keep
//!   queueing behind it.
//! - **Reading.** The I/O task reads whenever input arrives, and so does
//!   one caller waiting for input (an answer, a message, `Ready`), in the
//!   poll that the input causes: whichever is polled first reads, under the
//!   read buffer's lock, and the other finds nothing. The waiting caller
//!   thus gets its answer without a hop through the I/O task, and the I/O
//!   task still reads while no caller is polled. The bytes go to the
//!   session, which checks every protocol rule and answers `Ping`; the
//!   decoded messages are then routed: a response to the request that
//!   waits for it, a request or notification to the
//!   [`recv`](Channel::recv) queue.
//! - **Waiting.** A request future holds only its place in the map of
//!   pending requests (where its answer is filed). Its frame was queued
//!   (and the place taken) synchronously, in the same poll in which the
//!   request was sent, so no framing state ever sits in a future. Dropping
//!   the future gives the place up and tells the session to
//!   [abandon](readyfd_proto::Session::abandon_request) the id, so a late
//!   answer is dropped silently and cannot reach anyone else.
//!
//! Memory is bounded as in the blocking channel: senders wait while more
//! than [`HIGH_WATER`] bytes are queued for the peer, and the I/O task stops
//! reading while [`MAX_INCOMING`](crate::limits::MAX_INCOMING) messages wait in the `recv` queue or our
//! answers to the peer pile up, which pushes back on a peer that floods.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ::tokio::io::unix::AsyncFd;
use ::tokio::sync::Notify;
use ::tokio::time::{Instant, Sleep};
use bytes::{Bytes, BytesMut};
use readyfd_proto::{Hello, Ready, RequestBody, ResponseBody, Role, Session, SessionError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::core::{
    ChannelOptions, Core, HIGH_WATER, ReadEnd, ReadStep, ShutdownPolicy, decode_response,
    response_bytes,
};
use crate::error::{ChannelError, CloseReason};
use crate::incoming::{Incoming, Responder};
use crate::sys;
use crate::verdict::Seen;

/// How long the I/O task keeps writing what is queued after the channel was
/// dropped, for a peer that is slow to read.
const DRAIN_ON_DROP: Duration = Duration::from_secs(2);

/// How long a child that acknowledged `Shutdown` waits for the
/// acknowledgement to be written before it raises `SIGTERM` anyway.
const SIGTERM_AFTER: Duration = Duration::from_secs(1);

/// How much one read asks for.
const READ_CHUNK: usize = 64 * 1024;
// The frame decoder leaves this much room beyond a frame it has begun, so
// that a read never makes the buffer grow (and copy) under it.
const _: () = assert!(READ_CHUNK <= readyfd_proto::READ_AHEAD);

/// Rounds of work the I/O task does in one poll before it yields.
const ROUNDS_PER_POLL: usize = 32;

type Reply = Result<(ResponseBody, Vec<OwnedFd>), CloseReason>;

/// One of our requests waiting for its answer: the answer once it came,
/// and the waker of the future that waits for it. (Not a one-shot channel:
/// a caller that reads the socket itself takes its waker out first, so
/// that routing its own answer does not wake it again.)
#[derive(Default)]
struct Waiting {
    reply: Option<Reply>,
    waker: Option<Waker>,
}

impl Waiting {
    /// Files the answer (the first one: a request is answered once) and
    /// wakes the future waiting for it.
    fn answer(&mut self, reply: Reply) {
        if self.reply.is_none() {
            self.reply = Some(reply);
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

struct State {
    /// What the blocking and the tokio channel share.
    core: Core,
    /// Bytes taken from the session and not yet written, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// The socket was full: the I/O task writes until the queue is empty.
    io_writes: bool,
    /// The I/O task stopped reading (back-pressure): wake it when that ends.
    read_paused: bool,
    /// Our requests waiting for an answer.
    pending: HashMap<u64, Waiting>,
    /// The [`Channel`] was dropped: write what is queued, then stop.
    dropped: bool,
    /// The I/O task has finished (or was dropped).
    stopped: bool,
    /// The caller that reads the socket while it waits, besides the I/O
    /// task (see [`Channel::wait_reading`]): one at a time, so that input
    /// wakes one caller, not every one waiting.
    reader: Option<u64>,
    /// The number of the next caller that waits for input.
    next_reader: u64,
    task: Option<Waker>,
    /// A pidfd for the I/O task to watch instead of the spawned child's,
    /// until it takes it: the process that said `Ready` after a wrapper
    /// ([`Channel::watch_peer`]).
    watch: Option<OwnedFd>,
}

impl State {
    /// Queues a frame with `send` and keeps `fds` to go with its bytes
    /// ([`Core::queue_with_fds`], told what is taken but not written yet).
    fn queue<R>(
        &mut self,
        fds: Vec<OwnedFd>,
        send: impl FnOnce(&mut Session, usize) -> Result<R, SessionError>,
    ) -> Result<R, SessionError> {
        let unsent = self.out.len() - self.out_pos;
        self.core.queue_with_fds(unsent, fds, send)
    }

    fn pending_out(&self) -> usize {
        self.core.session.transmit_len() + (self.out.len() - self.out_pos)
    }

    fn send_blocker(&self) -> Option<CloseReason> {
        self.core.send_blocker()
    }

    fn read_blocker(&self) -> Option<CloseReason> {
        self.core.read_blocker()
    }

    fn wake_task(&mut self) {
        if let Some(w) = &self.task {
            w.wake_by_ref();
        }
    }

    /// Once the read side is over, no answer can come: every waiting
    /// request fails with the reason.
    fn fail_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Some(r) = self.read_blocker() {
            for w in self.pending.values_mut() {
                w.answer(Err(r.clone()));
            }
        }
    }
}

pub(crate) struct Inner {
    sock: AsyncFd<OwnedFd>,
    /// Bytes read and not yet decoded (the session's decoder keeps its
    /// place in them). Held by whoever reads, across the read and the
    /// decoding, so input is handled in order; taken before `state`.
    rbuf: Mutex<BytesMut>,
    state: Mutex<State>,
    /// Wakes `recv`, `wait_ready_event` and friends: something arrived or
    /// the channel closed.
    changed: Notify,
    /// Wakes senders waiting for the transmit queue to shrink.
    space: Notify,
    policy: ShutdownPolicy,
    /// What the peer may make us hold.
    limits: ChannelOptions,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half
        // updated in a way that matters more than the panic itself.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_rbuf(&self) -> MutexGuard<'_, BytesMut> {
        self.rbuf.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether input may be read now: the read side is open and neither
    /// back-pressure limit holds reading up.
    fn may_read(&self, st: &State) -> bool {
        st.core.may_read(&self.limits, st.pending_out())
    }

    /// One read, handed to the session, then what it decoded routed and
    /// what it produced written; by the I/O task or by a caller waiting for
    /// input. Returns whether the socket has nothing more to give (so that
    /// its readiness is to be cleared): it gave nothing, or less than asked
    /// for. Clearing after a short read saves an empty read per message,
    /// and loses nothing: tokio keeps readiness that arrived after it was
    /// handed out.
    ///
    /// `disarm` runs under the state's lock before what was read is routed.
    fn read_once(self: &Arc<Self>, disarm: impl Fn(&mut State)) -> bool {
        let mut rbuf = self.lock_rbuf();
        let fd = self.sock.get_ref().as_fd();
        // The worker thread's spare buffer, as on the blocking side: an
        // idle channel holds none (a thousand idle channels do not hold a
        // thousand 64 KiB buffers, each with a page touched).
        crate::channel::lend_spare(&mut rbuf);
        let r = sys::recv_stream(fd, &mut rbuf, READ_CHUNK);
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            crate::channel::keep_spare(&mut rbuf);
            return true;
        }
        let mut st = self.lock();
        let step = st.core.on_read(r, &mut rbuf);
        crate::channel::keep_spare(&mut rbuf);
        drop(rbuf);
        disarm(&mut st);
        dispatch(self, &mut st);
        self.flush(&mut st);
        st.fail_pending();
        drop(st);
        self.changed.notify_waiters();
        if step == ReadStep::Ended {
            // Senders waiting for room must hear that none will come.
            self.space.notify_waiters();
        }
        step == ReadStep::Drained
    }

    /// Writes what is queued, without blocking, as far as the socket takes
    /// it. Called with the lock held, so writers never interleave; when the
    /// socket is full the I/O task continues.
    fn flush(&self, st: &mut State) {
        if st.io_writes {
            // The I/O task writes; it takes our bytes from the session.
            return;
        }
        loop {
            if st.core.write_failed.is_some() {
                // Nothing can be written any more: drop what is queued.
                st.out.clear();
                st.out_pos = 0;
                let mut discard = std::mem::take(&mut st.out);
                let _ = st.core.session.poll_transmit(&mut discard);
                discard.clear();
                st.out = discard;
                st.core.discard_tx_fds();
                return;
            }
            if st.out_pos == st.out.len() {
                st.out.clear();
                st.out_pos = 0;
                let mut out = std::mem::take(&mut st.out);
                let more = st.core.session.poll_transmit(&mut out);
                st.out = out;
                if !more {
                    if st.core.goodbye_written(0) {
                        sys::shut_down_write(self.sock.get_ref().as_fd());
                    }
                    return;
                }
            }
            let plan = st.core.plan_write(st.out.len() - st.out_pos);
            let chunk = &st.out[st.out_pos..st.out_pos + plan.len];
            let fd = self.sock.get_ref().as_fd();
            let res = match &plan.fds {
                None => sys::send_nonblocking(fd, chunk),
                Some(f) => sys::send_with_fds(fd, chunk, &f.fds),
            };
            st.core.wrote(*res.as_ref().unwrap_or(&0), plan.fds);
            match res {
                Ok(n) => st.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    st.io_writes = true;
                    st.wake_task();
                    return;
                }
                Err(e) => self.write_failed(st, e),
            }
        }
    }

    /// Writing failed for good: every waiter hears it.
    fn write_failed(&self, st: &mut State, e: io::Error) {
        st.core.write_failed = Some(crate::core::write_failure(e));
        st.fail_pending();
        self.changed.notify_waiters();
        self.space.notify_waiters();
    }

    /// Starts a frame whose payload ends with the raw `body`; the caller
    /// then [`flush`](Self::flush)es. When nothing else is queued or being
    /// written (and no fds go with it), the body is written from `body`
    /// itself: `split` appends the frame's head to an empty buffer (a
    /// session `*_split` method), one vectored `sendmsg` writes head and
    /// body, and only what the socket did not take is copied into the
    /// queue (for the I/O task, once the socket has room). Otherwise
    /// `whole` queues the whole frame, as every other send does.
    fn send_body<R>(
        &self,
        st: &mut State,
        body: &[u8],
        fds: Vec<OwnedFd>,
        split: impl FnOnce(&mut State, &mut Vec<u8>) -> Result<R, SessionError>,
        whole: impl FnOnce(&mut State, Vec<OwnedFd>) -> Result<R, SessionError>,
    ) -> Result<R, ChannelError> {
        let idle = !st.io_writes && st.out_pos == st.out.len();
        if !st.core.body_may_go_direct(&fds, body.len(), idle) {
            return Ok(whole(st, fds)?);
        }
        let mut out = std::mem::take(&mut st.out);
        out.clear();
        st.out_pos = 0;
        let r = match split(st, &mut out) {
            Ok(r) => r,
            Err(e) => {
                st.out = out;
                return Err(e.into());
            }
        };
        let res = sys::send_vectored_nonblocking(self.sock.get_ref().as_fd(), &out, body);
        let n = *res.as_ref().unwrap_or(&0);
        st.core.wrote(n, None);
        // What is left goes through the queue, from which `flush` (or the
        // I/O task) writes it.
        crate::core::keep_unwritten(&mut out, body, n);
        st.out = out;
        if let Err(e) = res {
            if e.kind() != io::ErrorKind::WouldBlock {
                self.write_failed(st, e);
            }
        }
        Ok(r)
    }

    /// Queues with `f` and writes, without waiting for room (answers to
    /// the peer: they are bounded by the peer's requests, which stop being
    /// read while our output piles up).
    fn send_now(
        &self,
        fds: Vec<OwnedFd>,
        f: impl FnOnce(&mut Session, usize) -> Result<(), SessionError>,
    ) -> Result<(), ChannelError> {
        let mut st = self.lock();
        if let Some(r) = st.send_blocker() {
            return Err(ChannelError::Closed(r));
        }
        st.queue(fds, f)?;
        self.flush(&mut st);
        Ok(())
    }
}

/// One end of a native readyfd channel, async. See the
/// [module docs](crate::tokio).
///
/// `Channel` is `Send + Sync`, and cloning it is cheap: a clone is a
/// *handle* on the same channel, to move into a task that serves
/// [`recv`](Self::recv) while the owner awaits `Ready`. Every method takes
/// `&self`, and any number of tasks may have requests in flight at once;
/// each gets its own answer. Only the original (the one
/// [`ReadyChild`](crate::tokio::ReadyChild) or
/// [`Parent`](crate::tokio::Parent) holds) owns the channel: dropping it
/// says `Goodbye` to the peer, and its I/O task writes what is still queued
/// (for at most two seconds), then closes the socket and ends; from then on
/// every handle's calls fail with [`ChannelError::Closed`], so a serving
/// loop over [`recv`](Self::recv) ends by itself. Dropping a handle does
/// nothing; [`close`](Self::close) on a handle closes the channel for
/// everyone. This is the blocking [`crate::Channel`]'s rule too.
///
/// The channel's I/O task runs on the tokio runtime the channel was created
/// in; the methods may be called from any runtime (or from
/// `Runtime::block_on`) as long as that one runs.
pub struct Channel {
    inner: Arc<Inner>,
    /// Whether this is the owner (dropping it closes the channel), not a
    /// handle made by `clone`.
    owner: bool,
}

impl Clone for Channel {
    /// A handle on the same channel: it does not keep the channel open (see
    /// [`Channel`]).
    fn clone(&self) -> Self {
        Channel {
            inner: Arc::clone(&self.inner),
            owner: false,
        }
    }
}

impl Channel {
    /// Whether this is the owning `Channel` rather than a handle made by
    /// [`clone`](Clone::clone): dropping the owner closes the channel.
    pub fn is_owner(&self) -> bool {
        self.owner
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("Channel")
            .field("role", &st.core.session.role())
            .field("peer", &st.core.peer.hello)
            .field("ready", &st.core.peer.ready.is_some())
            .field("pending", &st.pending.len())
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Starts a channel over a connected AF_UNIX stream socket: queues our
    /// `Hello`, writes it, and spawns the I/O task on the current runtime.
    /// `pidfd`, for a parent, is watched so that a child's death is seen at
    /// once: the [`ReadyChild`](super::ReadyChild)'s own registration,
    /// shared (the task polls it with `poll_read_ready`, the only one to do
    /// so; the `ReadyChild` awaits `readable`, which has its own wakers), so
    /// that a child costs one pidfd, not two: every fd the parent holds is
    /// copied by each later `fork` and closed by each later `exec`.
    ///
    /// # Panics
    /// Outside a tokio runtime, or in one without I/O enabled.
    pub(crate) fn start(
        sock: OwnedFd,
        role: Role,
        pidfd: Option<Arc<AsyncFd<OwnedFd>>>,
        opts: ChannelOptions,
    ) -> io::Result<Channel> {
        let handle = ::tokio::runtime::Handle::try_current().unwrap_or_else(|_| {
            panic!("readyfd::tokio: must be called from within a tokio runtime")
        });
        sys::set_nonblocking(sock.as_fd(), true)?;
        // SAFETY: an `OwnedFd` keeps its fd open and returns the same number
        // from `as_raw_fd` until it is dropped, which the `AsyncFd` that
        // owns it does last.
        let sock = unsafe { AsyncFd::register(sock) }?;
        let inner = Arc::new(Inner {
            sock,
            rbuf: Mutex::new(BytesMut::new()),
            state: Mutex::new(State {
                core: Core::new(role, opts.session),
                out: Vec::new(),
                out_pos: 0,
                io_writes: false,
                read_paused: false,
                pending: HashMap::new(),
                dropped: false,
                stopped: false,
                reader: None,
                next_reader: 0,
                task: None,
                watch: None,
            }),
            changed: Notify::new(),
            space: Notify::new(),
            policy: opts.shutdown,
            limits: opts,
        });
        // Send our Hello now: it costs nothing and lets a peer that waits
        // for it proceed.
        {
            let mut st = inner.lock();
            inner.flush(&mut st);
        }
        handle.spawn(IoTask {
            inner: Arc::clone(&inner),
            pidfd,
            sigterm_at: None,
            drain_until: None,
        });
        Ok(Channel { inner, owner: true })
    }

    /// The peer's `Hello` (its pid and protocol version), once it arrived.
    pub fn peer(&self) -> Option<Hello> {
        self.inner.lock().core.peer.hello.clone()
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.inner.lock().core.session.role()
    }

    /// The last status line the child sent (parent side).
    pub fn last_status(&self) -> Option<String> {
        self.inner.lock().core.peer.last_status.clone()
    }

    /// Why the channel is closed, or `None` while it is open.
    pub fn closed(&self) -> Option<CloseReason> {
        self.inner.lock().read_blocker()
    }

    // ---- sending ----------------------------------------------------------

    /// Waits until the transmit queue has room, then runs `f` and writes,
    /// all in one poll: whatever `f` queued is either queued whole or not
    /// at all when this future is dropped.
    async fn send_with<R>(
        &self,
        f: impl FnOnce(&mut State) -> Result<R, ChannelError>,
    ) -> Result<R, ChannelError> {
        let mut f = Some(f);
        let mut space = pin!(self.inner.space.notified());
        let mut registered = false;
        loop {
            {
                let mut st = self.inner.lock();
                if let Some(r) = st.send_blocker() {
                    return Err(ChannelError::Closed(r));
                }
                if st.pending_out() < HIGH_WATER {
                    let f = f.take().expect("runs once");
                    let r = f(&mut st)?;
                    self.inner.flush(&mut st);
                    return Ok(r);
                }
            }
            // No room. Register for the wake-up first, then look again
            // before sleeping, so that a wake-up in between is not missed.
            if registered {
                space.as_mut().await;
                space.set(self.inner.space.notified());
                registered = false;
            } else {
                space.as_mut().enable();
                registered = true;
            }
        }
    }

    /// Child: announces readiness. Requests may be made and served before
    /// and after it.
    ///
    /// # Cancel safety
    /// Cancel safe: if the future is dropped before it completes, nothing
    /// was sent (it only waits for room in the transmit queue).
    ///
    /// # Errors
    /// [`ChannelError::NotAllowed`] from a parent or a second time;
    /// [`ChannelError::Closed`] when the parent has gone.
    pub async fn ready(&self, ready: &Ready) -> Result<(), ChannelError> {
        self.ready_with_fds(ready, Vec::new()).await
    }

    /// Child: announces readiness and hands the parent `fds` with it (at
    /// most [`MAX_FDS_PER_FRAME`](readyfd_proto::MAX_FDS_PER_FRAME)); our
    /// copies are closed once sent. The parent takes them with
    /// [`take_ready_fds`](Self::take_ready_fds).
    ///
    /// # Cancel safety
    /// As [`ready`](Self::ready); the fds of a dropped future are closed.
    ///
    /// # Errors
    /// As [`ready`](Self::ready), and [`ChannelError::Encode`] for more
    /// than 253 fds. On any error the fds are closed.
    pub async fn ready_with_fds(
        &self,
        ready: &Ready,
        fds: Vec<OwnedFd>,
    ) -> Result<(), ChannelError> {
        // A pid of 0 means "this process".
        // A pid of 0 means "this process", asked of the kernel only then: a
        // system call on the way to the parent's wake-up otherwise.
        let ready = if ready.pid == 0 {
            Cow::Owned(ready.clone().with_sender_pid(std::process::id()))
        } else {
            Cow::Borrowed(ready)
        };
        self.send_with(|st| Ok(st.queue(fds, |s, n| s.send_ready_with_fds(&ready, n))?))
            .await
    }

    /// Parent: takes the file descriptors the child sent with its `Ready`,
    /// owned and close-on-exec; empty before `Ready` arrived, when it
    /// carried none, and once taken. Those not taken are closed with the
    /// channel.
    pub fn take_ready_fds(&self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.inner.lock().core.peer.ready_fds)
    }

    /// Child: sends a status line (kept by the parent as
    /// [`last_status`](Self::last_status)).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`ready`](Self::ready).
    ///
    /// # Errors
    /// As [`ready`](Self::ready).
    pub async fn status(&self, text: &str) -> Result<(), ChannelError> {
        self.send_with(|st| Ok(st.core.session.send_status(text)?))
            .await
    }

    /// Sends a one-way application message.
    ///
    /// # Cancel safety
    /// Cancel safe: if the future is dropped before it completes, the
    /// message was not sent.
    ///
    /// # Errors
    /// [`ChannelError::Encode`] when it does not fit the peer's maximum
    /// frame; [`ChannelError::Closed`] when the channel is closed.
    pub async fn notify<T: Serialize + ?Sized>(&self, body: &T) -> Result<(), ChannelError> {
        self.send_with(|st| Ok(st.core.session.send_notify(body)?))
            .await
    }

    /// Sends a one-way application message with `fds` (at most
    /// [`MAX_FDS_PER_FRAME`](readyfd_proto::MAX_FDS_PER_FRAME)); our copies
    /// are closed once sent.
    ///
    /// # Cancel safety
    /// As [`notify`](Self::notify); the fds of a dropped future are closed.
    ///
    /// # Errors
    /// As [`notify`](Self::notify), and [`ChannelError::Encode`] for more
    /// than 253 fds. On any error the fds are closed.
    pub async fn notify_with_fds<T: Serialize + ?Sized>(
        &self,
        body: &T,
        fds: Vec<OwnedFd>,
    ) -> Result<(), ChannelError> {
        self.send_with(|st| Ok(st.queue(fds, |s, n| s.send_notify_with_fds(body, n))?))
            .await
    }

    /// Sends a one-way application message whose body is `body` as it is:
    /// with no serde work and no length prefix, written from `body` itself
    /// as [`request_bytes`](Self::request_bytes) writes its body
    /// (PROTOCOL.md, section 4, "Application bodies"). The peer reads it
    /// with [`Notification::body`](crate::Notification::body).
    ///
    /// # Cancel safety
    /// As [`notify`](Self::notify).
    ///
    /// # Errors
    /// As [`notify`](Self::notify).
    pub async fn notify_bytes(&self, body: &[u8]) -> Result<(), ChannelError> {
        self.notify_bytes_with_fds(body, Vec::new()).await
    }

    /// [`notify_bytes`](Self::notify_bytes) with `fds`, as
    /// [`notify_with_fds`](Self::notify_with_fds).
    ///
    /// # Cancel safety
    /// As [`notify_with_fds`](Self::notify_with_fds).
    ///
    /// # Errors
    /// As [`notify_with_fds`](Self::notify_with_fds). On any error the fds
    /// are closed.
    pub async fn notify_bytes_with_fds(
        &self,
        body: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), ChannelError> {
        self.send_with(|st| {
            self.inner.send_body(
                st,
                body,
                fds,
                |st, out| st.core.session.send_notify_bytes_split(body.len(), 0, out),
                |st, fds| st.queue(fds, |s, n| s.send_notify_bytes(body, n)),
            )
        })
        .await
    }

    /// Sends an application request and waits for its answer, decoded as
    /// `Resp`. Waits as long as the peer is there: bound it with
    /// [`request_timeout`](Self::request_timeout) or
    /// [`tokio::time::timeout`](::tokio::time::timeout).
    ///
    /// On a parent's channel, once the child is ready, the peer is the
    /// process that said `Ready`: when it exits, what it wrote before (the
    /// answer, perhaps) is still read, and then this fails with
    /// [`ChannelError::Closed`] ([`CloseReason::PeerClosed`]) even while
    /// another process (a grandchild that inherited the socket) keeps its
    /// end open and no end of stream comes (PROTOCOL.md §6.3).
    ///
    /// # Cancel safety
    /// Cancel safe, in the sense that matters for a request: dropping the
    /// future at any point never disturbs the channel or another request.
    /// Dropped before its frame was queued (while waiting for room), the
    /// request was not sent; dropped after, the request stays sent and its
    /// answer, when it comes, is discarded. Other requests, earlier or
    /// later, get their own answers.
    ///
    /// # Errors
    /// [`ChannelError::Remote`] when the peer failed it,
    /// [`ChannelError::Decode`] when the answer is not a `Resp`,
    /// [`ChannelError::Closed`] when the peer goes away first.
    pub async fn request<Req, Resp>(&self, req: &Req) -> Result<Resp, ChannelError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let (body, _fds) = self
            .call(Vec::new(), |s, _| s.send_app_request(req))
            .await?;
        decode_response(body)
    }

    /// [`request`](Self::request), handing the peer `fds` with the request
    /// (at most [`MAX_FDS_PER_FRAME`](readyfd_proto::MAX_FDS_PER_FRAME); our
    /// copies are closed once sent), and returning the fds the peer sent
    /// with its answer, owned and close-on-exec.
    ///
    /// # Cancel safety
    /// As [`request`](Self::request); fds that arrive with the answer to a
    /// dropped request are closed.
    ///
    /// # Errors
    /// As [`request`](Self::request), and [`ChannelError::Encode`] for more
    /// than 253 fds. On any error the fds given are closed.
    pub async fn request_with_fds<Req, Resp>(
        &self,
        req: &Req,
        fds: Vec<OwnedFd>,
    ) -> Result<(Resp, Vec<OwnedFd>), ChannelError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let (body, fds) = self
            .call(fds, |s, n| s.send_app_request_with_fds(req, n))
            .await?;
        Ok((decode_response(body)?, fds))
    }

    /// [`request`](Self::request) with a bound: after `timeout` it fails
    /// with [`ChannelError::Timeout`] and a late answer is discarded. The
    /// channel stays usable.
    ///
    /// # Cancel safety
    /// As [`request`](Self::request).
    ///
    /// # Errors
    /// As [`request`](Self::request), plus [`ChannelError::Timeout`].
    pub async fn request_timeout<Req, Resp>(
        &self,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, ChannelError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        match ::tokio::time::timeout(timeout, self.request(req)).await {
            Ok(r) => r,
            Err(_) => Err(ChannelError::Timeout(timeout)),
        }
    }

    /// Sends an application request whose body is `body` as it is (no serde
    /// work, no length prefix; from 2 KiB, when nothing else is being sent,
    /// written from `body` itself with the frame's head in one vectored
    /// `sendmsg`, and only what the socket does not take at once is copied,
    /// for the I/O task to write), and waits for
    /// the answer's body as it arrived: a [`Bytes`] that is a slice of the
    /// answer's frame, not a copy of it. An answer without a body (`Ok`) is
    /// empty; a typed answer comes as its encoding.
    ///
    /// # Cancel safety
    /// As [`request`](Self::request).
    ///
    /// # Errors
    /// [`ChannelError::Remote`] when the peer failed it,
    /// [`ChannelError::Encode`] when `body` does not fit the peer's maximum
    /// frame, [`ChannelError::Closed`] when the peer goes away first.
    pub async fn request_bytes(&self, body: &[u8]) -> Result<Bytes, ChannelError> {
        let (body, _fds) = self.call_bytes(body, Vec::new()).await?;
        response_bytes(body)
    }

    /// [`request_bytes`](Self::request_bytes), handing the peer `fds` with
    /// the request and returning the fds it sent with its answer, as
    /// [`request_with_fds`](Self::request_with_fds).
    ///
    /// # Cancel safety
    /// As [`request_with_fds`](Self::request_with_fds).
    ///
    /// # Errors
    /// As [`request_with_fds`](Self::request_with_fds).
    pub async fn request_bytes_with_fds(
        &self,
        body: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(Bytes, Vec<OwnedFd>), ChannelError> {
        let (body, fds) = self.call_bytes(body, fds).await?;
        Ok((response_bytes(body)?, fds))
    }

    /// [`request_bytes`](Self::request_bytes) with a bound, as
    /// [`request_timeout`](Self::request_timeout).
    ///
    /// # Cancel safety
    /// As [`request`](Self::request).
    ///
    /// # Errors
    /// As [`request_bytes`](Self::request_bytes), plus
    /// [`ChannelError::Timeout`].
    pub async fn request_bytes_timeout(
        &self,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, ChannelError> {
        match ::tokio::time::timeout(timeout, self.request_bytes(body)).await {
            Ok(r) => r,
            Err(_) => Err(ChannelError::Timeout(timeout)),
        }
    }

    /// Sends `Ping` (answered by the peer's library, not its application)
    /// and returns the round-trip time.
    ///
    /// # Cancel safety
    /// As [`request`](Self::request).
    ///
    /// # Errors
    /// [`ChannelError::Closed`] or [`ChannelError::Timeout`].
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, ChannelError> {
        let t0 = Instant::now();
        let call = self.call(Vec::new(), |s, _| s.send_request(RequestBody::Ping));
        match ::tokio::time::timeout(timeout, call).await {
            Ok(r) => r.map(|_| t0.elapsed()),
            Err(_) => Err(ChannelError::Timeout(timeout)),
        }
    }

    /// Parent: asks the child to stop within `grace` and waits up to
    /// `grace` for its acknowledgement (not for its exit).
    ///
    /// # Cancel safety
    /// As [`request`](Self::request): once sent, the request stays sent.
    ///
    /// # Errors
    /// [`ChannelError::NotAllowed`] from a child; [`ChannelError::Timeout`]
    /// when no acknowledgement came; [`ChannelError::Closed`].
    pub async fn shutdown(&self, grace: Duration) -> Result<(), ChannelError> {
        let grace_ms = Some(grace.as_millis().min(u128::from(u64::MAX)) as u64);
        let call = self.call(Vec::new(), |s, _| {
            s.send_request(RequestBody::Shutdown { grace_ms })
        });
        match ::tokio::time::timeout(grace, call).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(ChannelError::Timeout(grace)),
        }
    }

    /// Sends a request with `send` and waits for its answer.
    async fn call(
        &self,
        fds: Vec<OwnedFd>,
        send: impl FnOnce(&mut Session, usize) -> Result<u64, SessionError>,
    ) -> Result<(ResponseBody, Vec<OwnedFd>), ChannelError> {
        // Queued and registered in one critical section: from here on the
        // only state this future holds is its place in `pending`.
        let id = self
            .send_with(|st| {
                let id = st.queue(fds, send)?;
                Self::await_answer(st, id)
            })
            .await?;
        self.answer_to(id).await
    }

    /// [`call`](Self::call) with a raw body, written from `body` itself
    /// when it can be (see [`Inner::send_body`]).
    async fn call_bytes(
        &self,
        body: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(ResponseBody, Vec<OwnedFd>), ChannelError> {
        let id = self
            .send_with(|st| {
                // Registered before the frame is written: the answer may
                // be read as soon as it is.
                self.inner.send_body(
                    st,
                    body,
                    fds,
                    |st, out| {
                        let id =
                            st.core
                                .session
                                .send_app_request_bytes_split(body.len(), 0, out)?;
                        Ok(Self::await_answer(st, id))
                    },
                    |st, fds| {
                        let id = st.queue(fds, |s, n| s.send_app_request_bytes(body, n))?;
                        Ok(Self::await_answer(st, id))
                    },
                )?
            })
            .await?;
        self.answer_to(id).await
    }

    /// Registers for the answer to our request `id`, just queued; fails
    /// (and abandons it) when no answer can come any more.
    fn await_answer(st: &mut State, id: u64) -> Result<u64, ChannelError> {
        if let Some(r) = st.read_blocker() {
            st.core.session.abandon_request(id);
            return Err(ChannelError::Closed(r));
        }
        st.pending.insert(id, Waiting::default());
        Ok(id)
    }

    /// Waits for the answer to our request `id`.
    async fn answer_to(&self, id: u64) -> Result<(ResponseBody, Vec<OwnedFd>), ChannelError> {
        let mut answer = AnswerFuture {
            inner: &self.inner,
            id,
            done: false,
        };
        self.wait_reading(
            |cx| Pin::new(&mut answer).poll(cx),
            |st| {
                if let Some(w) = st.pending.get_mut(&id) {
                    w.waker = None;
                }
            },
        )
        .await
    }

    /// Waits until `check` is ready, and reads the socket meanwhile
    /// whenever it has input, as the I/O task does: whichever of the two is
    /// polled first reads, and the other finds nothing. A caller waiting for
    /// an answer (or a message, or `Ready`) then gets it in the very poll
    /// that the socket's readiness causes, instead of after the I/O task
    /// has read and woken it: on a current_thread runtime, one task wake-up
    /// and one `epoll_wait` fewer per message (the blocking channel's "one
    /// wake-up per message"). The I/O task goes on reading whenever no
    /// caller does, so a request whose task stopped polling it holds
    /// nothing up (`Ping` is still answered, `Shutdown` still seen).
    ///
    /// One caller reads at a time (the others wait for what it or the I/O
    /// task routes to them), so that input wakes one of them, not all.
    /// `check` registers its own wake-up when it returns `Pending`; `disarm`
    /// takes that registration back (if it can) before this future reads,
    /// so that routing what it read does not wake it for nothing (it looks
    /// again anyway). Reading stops while back-pressure holds it up, as the
    /// I/O task's does.
    async fn wait_reading<T>(
        &self,
        mut check: impl FnMut(&mut Context<'_>) -> Poll<T>,
        disarm: impl Fn(&mut State),
    ) -> T {
        let inner = &self.inner;
        let me = {
            let mut st = inner.lock();
            st.next_reader += 1;
            st.next_reader
        };
        // Gives the reader's place up however this future ends.
        let _reader = ReaderPlace { inner, me };
        let mut reads = 0usize;
        let mut read_input = true;
        loop {
            let mut readable = pin!(inner.sock.readable());
            let step = poll_fn(|cx| {
                if let Poll::Ready(t) = check(cx) {
                    return Poll::Ready(Ok(t));
                }
                if !read_input {
                    return Poll::Pending;
                }
                {
                    let mut st = inner.lock();
                    if !inner.may_read(&st) || st.reader.is_some_and(|r| r != me) {
                        return Poll::Pending;
                    }
                    st.reader = Some(me);
                }
                if reads >= ROUNDS_PER_POLL {
                    // A peer that keeps the socket busy (with pings, say)
                    // must not hold the runtime's thread: let other tasks
                    // run, then continue.
                    reads = 0;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                readable.as_mut().poll(cx).map(Err)
            })
            .await;
            match step {
                Ok(t) => return t,
                Err(Ok(mut guard)) => {
                    reads += 1;
                    if inner.read_once(&disarm) {
                        guard.clear_ready();
                    }
                }
                // The runtime's I/O driver is gone: the I/O task ends and
                // says so through `check`.
                Err(Err(_)) => read_input = false,
            }
        }
    }

    // ---- receiving --------------------------------------------------------

    /// Waits for the peer's next request, notification or (child, with
    /// [`ShutdownPolicy::Deliver`]) shutdown.
    ///
    /// On a parent's channel, once the child is ready, the peer has gone
    /// when the process that said `Ready` has exited, whoever else keeps
    /// its end of the socket open; what it wrote before is delivered first
    /// (PROTOCOL.md §6.3).
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken from the queue only in the poll that
    /// returns it, so dropping the future (in a `select!` branch that lost,
    /// for instance) loses nothing; the next `recv` gets it.
    ///
    /// # Errors
    /// [`ChannelError::Closed`] once the peer has gone and the queue is
    /// empty.
    pub async fn recv(&self) -> Result<Incoming, ChannelError> {
        self.wait_changed(|| self.try_recv().transpose()).await
    }

    /// [`wait_reading`](Self::wait_reading) for what reading announces
    /// through `changed`: waits until `look` finds something.
    async fn wait_changed<T>(&self, mut look: impl FnMut() -> Option<T>) -> T {
        let mut changed = pin!(self.inner.changed.notified());
        // Shared by the two closures, never at once (a `Mutex`, not a
        // `RefCell`, so that the future stays `Send`).
        let changed = Mutex::new(changed.as_mut());
        self.wait_reading(
            |cx| {
                let mut changed = changed.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    // As in `send_with`: register, look again, then sleep.
                    changed.as_mut().enable();
                    if let Some(t) = look() {
                        return Poll::Ready(t);
                    }
                    match changed.as_mut().poll(cx) {
                        Poll::Ready(()) => changed.set(self.inner.changed.notified()),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            },
            // A fresh registration, not enabled yet: what this caller reads
            // does not wake it (it looks again after reading anyway).
            |_| {
                let mut changed = changed.lock().unwrap_or_else(|p| p.into_inner());
                changed.set(self.inner.changed.notified());
            },
        )
        .await
    }

    /// [`recv`](Self::recv), giving up after `timeout` with `Ok(None)` (as
    /// the blocking channel's `recv_timeout`).
    ///
    /// # Cancel safety
    /// As [`recv`](Self::recv): a message is never lost to a timeout or a
    /// dropped future.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub async fn recv_timeout(&self, timeout: Duration) -> Result<Option<Incoming>, ChannelError> {
        match ::tokio::time::timeout(timeout, self.recv()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Takes the peer's next request or notification if one is queued,
    /// without waiting.
    ///
    /// # Errors
    /// [`ChannelError::Closed`] once the peer has gone and the queue is
    /// empty.
    pub fn try_recv(&self) -> Result<Option<Incoming>, ChannelError> {
        let mut st = self.inner.lock();
        if let Some(m) = st.core.peer.incoming.pop() {
            if st.read_paused {
                // The I/O task stopped reading: it may resume now.
                st.wake_task();
            }
            return Ok(Some(m));
        }
        match st.read_blocker() {
            Some(r) => Err(ChannelError::Closed(r)),
            None => Ok(None),
        }
    }

    /// Says `Goodbye` and stops sending. Requests still waiting fail with
    /// [`CloseReason::Local`]. Dropping the channel does this too.
    ///
    /// A child that closes (or drops) its channel before it sent `Ready`
    /// gives up, as with the blocking channel: its `Goodbye` says
    /// `ShuttingDown`, and its parent reports a failure.
    pub fn close(&self) {
        let mut st = self.inner.lock();
        if st.core.close() {
            self.inner.flush(&mut st);
        }
        st.fail_pending();
        drop(st);
        self.inner.changed.notify_waiters();
        self.inner.space.notify_waiters();
    }

    // ---- parent-side waiting ------------------------------------------------

    /// Waits until the child is ready, the channel ends, or the child exits
    /// (with the pidfd given to [`start`](Self::start), while
    /// `watch_exit`), and says what was seen; the caller bounds it with a
    /// timeout.
    pub(crate) async fn wait_ready_seen(&self, watch_exit: bool, pid: u32) -> Seen {
        let event = self
            .wait_changed(|| self.inner.lock().core.ready_event(watch_exit))
            .await;
        event.into_seen(pid, self.last_status())
    }

    /// Readiness was seen: from now on the process that said `Ready` is
    /// the peer, and its exit ends the read side once what it wrote before
    /// is read (PROTOCOL.md §6.3), as with the blocking channel's
    /// `watch_peer`. `other` is a pidfd on that process when it is not the
    /// spawned child (after a wrapper): the I/O task watches it instead,
    /// and the wrapper's exit ends nothing.
    /// The process that wrote the child's `Ready` frame, as the kernel
    /// attests it (PROTOCOL.md §6.4), if known; and no more credentials
    /// are asked for from now on (`SO_PASSCRED` off), as the blocking
    /// channel's.
    pub(crate) fn take_ready_writer(&self) -> Option<u32> {
        let writer = self.inner.lock().core.peer.ready_writer;
        let _ = sys::set_passcred(self.inner.sock.get_ref().as_fd(), false);
        writer
    }

    pub(crate) fn watch_peer(&self, other: Option<OwnedFd>) {
        let mut st = self.inner.lock();
        if st.stopped {
            return;
        }
        let spawned = other.is_none();
        if other.is_some() {
            st.watch = other;
            st.wake_task();
        }
        if st.core.watch_peer(spawned) {
            sys::shut_down_after_exit(self.inner.sock.get_ref().as_fd());
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        if !self.owner {
            // A handle: the owner decides when the channel ends.
            return;
        }
        self.close();
        let mut st = self.inner.lock();
        st.dropped = true;
        st.wake_task();
    }
}

/// The place of the caller `me` as the one that reads while it waits
/// ([`Channel::wait_reading`]), given up on drop.
struct ReaderPlace<'a> {
    inner: &'a Inner,
    me: u64,
}

impl Drop for ReaderPlace<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        if st.reader == Some(self.me) {
            st.reader = None;
        }
    }
}

/// The answer to one request, filed under its id in `pending`, and the
/// registration that dropping it undoes.
struct AnswerFuture<'a> {
    inner: &'a Inner,
    id: u64,
    done: bool,
}

impl Future for AnswerFuture<'_> {
    type Output = Result<(ResponseBody, Vec<OwnedFd>), ChannelError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut st = this.inner.lock();
        let reply = match st.pending.get_mut(&this.id) {
            Some(w) if w.reply.is_some() => {
                let reply = w.reply.take();
                st.pending.remove(&this.id);
                reply
            }
            Some(w) => {
                if !w.waker.as_ref().is_some_and(|k| k.will_wake(cx.waker())) {
                    w.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            None => None,
        };
        this.done = true;
        Poll::Ready(match reply {
            Some(Ok((ResponseBody::Error(e), _))) => Err(ChannelError::Remote(e)),
            Some(Ok(answer)) => Ok(answer),
            Some(Err(reason)) => Err(ChannelError::Closed(reason)),
            // Not waiting any more, unanswered: only when the I/O task
            // ended, which records why.
            None => Err(ChannelError::Closed(
                st.read_blocker().unwrap_or(CloseReason::Local),
            )),
        })
    }
}

impl Drop for AnswerFuture<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Abandoned: forget the waiter, and let the session drop the answer
        // when it comes instead of calling it a protocol error.
        let mut st = self.inner.lock();
        st.pending.remove(&self.id);
        st.core.session.abandon_request(self.id);
    }
}

// ---- incoming ---------------------------------------------------------------

// The peer's requests are the blocking API's types: they answer through
// this channel's `send_now`.
impl Responder for Inner {
    fn answer(
        &self,
        fds: Vec<OwnedFd>,
        f: &mut dyn FnMut(&mut Session, usize) -> Result<(), SessionError>,
    ) -> Result<(), ChannelError> {
        self.send_now(fds, f)
    }

    fn answer_bytes(&self, id: u64, body: &[u8], fds: Vec<OwnedFd>) -> Result<(), ChannelError> {
        let mut st = self.lock();
        if let Some(r) = st.send_blocker() {
            return Err(ChannelError::Closed(r));
        }
        let r = self.send_body(
            &mut st,
            body,
            fds,
            |st, out| {
                st.core
                    .session
                    .send_app_response_bytes_split(id, body.len(), 0, out)
            },
            |st, fds| st.queue(fds, |s, n| s.send_app_response_bytes(id, body, n)),
        );
        self.flush(&mut st);
        r
    }
}

// ---- the I/O task -------------------------------------------------------------

/// The channel's I/O task: reads and decodes, routes, writes when the
/// socket was full, watches the child's pidfd, and finishes the channel
/// after it was dropped.
struct IoTask {
    inner: Arc<Inner>,
    /// The child's pidfd, shared with its `ReadyChild` (see
    /// [`Channel::start`]); dropped once it fired.
    pidfd: Option<Arc<AsyncFd<OwnedFd>>>,
    sigterm_at: Option<Pin<Box<Sleep>>>,
    drain_until: Option<Pin<Box<Sleep>>>,
}

impl Future for IoTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        for _ in 0..ROUNDS_PER_POLL {
            match this.round(cx) {
                Round::Progress => {}
                Round::Idle => return Poll::Pending,
                Round::Finished => return Poll::Ready(()),
            }
        }
        // Plenty to do: let other tasks run, then continue. The wake-up is
        // deferred as `yield_now` defers it, until the runtime has polled
        // its drivers: a plain `wake_by_ref` made the task ready again at
        // once, and a current_thread runtime polls its timers only every
        // 61 task polls while tasks are ready, so a peer that keeps the
        // socket full (tiny frames, a large send buffer) held a request's
        // timeout off for seconds.
        let _ = pin!(::tokio::task::yield_now()).poll(cx);
        Poll::Pending
    }
}

enum Round {
    Progress,
    Idle,
    Finished,
}

impl IoTask {
    /// One round over everything the task watches. Every source that is
    /// not ready has registered `cx`'s waker when this returns `Idle`.
    fn round(&mut self, cx: &mut Context<'_>) -> Round {
        // A handle of our own, so that a readiness guard (which borrows the
        // socket) can live while `self` reads.
        let inner = Arc::clone(&self.inner);
        let mut progress = false;
        let (io_writes, reading, dropped) = {
            let mut st = self.inner.lock();
            if !st.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                st.task = Some(cx.waker().clone());
            }
            if let Some(pidfd) = st.watch.take() {
                // A pidfd that cannot be registered (no memory) leaves the
                // channel to the peer's end of stream.
                // SAFETY: as for the pidfd in `Channel::start`.
                self.pidfd = unsafe {
                    AsyncFd::register_with_interest(pidfd, ::tokio::io::Interest::READABLE)
                }
                .ok()
                .map(Arc::new);
            }
            let reading = self.inner.may_read(&st);
            st.read_paused = !reading && matches!(st.core.read, ReadEnd::Open);
            (st.io_writes, reading, st.dropped)
        };

        if io_writes {
            match inner.sock.poll_write_ready(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    let mut st = self.inner.lock();
                    st.io_writes = false;
                    self.inner.flush(&mut st);
                    if st.io_writes {
                        guard.clear_ready();
                    }
                    drop(st);
                    self.inner.space.notify_waiters();
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    let mut st = self.inner.lock();
                    st.core.write_failed = Some(crate::core::write_failure(e));
                    st.io_writes = false;
                    self.inner.flush(&mut st); // discards what is queued
                    st.fail_pending();
                    drop(st);
                    self.notify_all();
                    progress = true;
                }
                Poll::Pending => {}
            }
        }

        if reading {
            match inner.sock.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    if inner.read_once(|_| {}) {
                        guard.clear_ready();
                    }
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    self.read_failed(e);
                    progress = true;
                }
                Poll::Pending => {}
            }
        }

        if let Some(pidfd) = &self.pidfd {
            if pidfd.poll_read_ready(cx).is_ready() {
                // The child exited. Frames it wrote before dying are
                // already in the socket buffer: take them first, so that
                // `Ready` wins.
                self.pidfd = None;
                for _ in 0..16 {
                    if !inner.may_read(&inner.lock()) || inner.read_once(|_| {}) {
                        break;
                    }
                }
                let mut st = self.inner.lock();
                // Unless `watch_peer` has just put another pidfd in its
                // place (a wrapper's exit says nothing about the peer).
                if st.watch.is_none() && st.core.on_exit() {
                    // The socket reports the end once what is queued is
                    // read: this task reads it, waiters are woken then.
                    sys::shut_down_after_exit(self.inner.sock.get_ref().as_fd());
                }
                drop(st);
                self.inner.changed.notify_waiters();
                progress = true;
            }
        }

        if self.poll_sigterm(cx) {
            progress = true;
        }

        if dropped && self.poll_drained(cx) {
            self.finish();
            return Round::Finished;
        }
        if progress {
            Round::Progress
        } else {
            Round::Idle
        }
    }

    fn read_failed(&self, e: io::Error) {
        let mut st = self.inner.lock();
        if matches!(st.core.read, ReadEnd::Open) {
            st.core.read = ReadEnd::Failed(CloseReason::Io(Arc::new(e)));
        }
        st.fail_pending();
        drop(st);
        self.notify_all();
    }

    /// A child that acknowledged `Shutdown` under
    /// [`ShutdownPolicy::RaiseSigterm`] raises `SIGTERM` once the
    /// acknowledgement is written (or after a bound).
    fn poll_sigterm(&mut self, cx: &mut Context<'_>) -> bool {
        let mut st = self.inner.lock();
        if !st.core.peer.raise_sigterm {
            return false;
        }
        let written = st.pending_out() == 0 || st.core.write_failed.is_some();
        let timer = self
            .sigterm_at
            .get_or_insert_with(|| Box::pin(::tokio::time::sleep(SIGTERM_AFTER)));
        if written || timer.as_mut().poll(cx).is_ready() {
            st.core.peer.raise_sigterm = false;
            self.sigterm_at = None;
            drop(st);
            let _ =
                nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM);
            return true;
        }
        false
    }

    /// After the channel was dropped: whether what was queued is written
    /// (or cannot be, or the bound passed).
    fn poll_drained(&mut self, cx: &mut Context<'_>) -> bool {
        let st = self.inner.lock();
        if st.pending_out() == 0 || st.core.write_failed.is_some() {
            return true;
        }
        drop(st);
        let timer = self
            .drain_until
            .get_or_insert_with(|| Box::pin(::tokio::time::sleep(DRAIN_ON_DROP)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// Ends the channel: the peer sees EOF at once (even while an
    /// [`IncomingRequest`](crate::IncomingRequest) keeps the socket alive),
    /// waiters are woken, and the queue of unanswered incoming messages is
    /// emptied.
    fn finish(&mut self) {
        let _ = nix::sys::socket::shutdown(
            self.inner.sock.get_ref().as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
        self.stop("the channel was dropped");
    }

    /// Marks the task as ended. Also empties the `recv` queue: its requests
    /// hold the channel's state alive, and dropping them answers them
    /// (outside the lock, since that takes it).
    fn stop(&mut self, why: &str) {
        let mut st = self.inner.lock();
        if st.stopped {
            return;
        }
        st.stopped = true;
        st.task = None;
        if matches!(st.core.read, ReadEnd::Open) && !st.core.local_closed {
            st.core.read =
                ReadEnd::Failed(CloseReason::Io(Arc::new(io::Error::other(why.to_string()))));
        }
        st.fail_pending();
        let queued = st.core.peer.incoming.take();
        drop(st);
        drop(queued);
        self.notify_all();
    }

    fn notify_all(&self) {
        self.inner.changed.notify_waiters();
        self.inner.space.notify_waiters();
    }
}

impl Drop for IoTask {
    fn drop(&mut self) {
        // Finished normally, or dropped with its runtime: either way nobody
        // may wait for it any more.
        self.stop("the tokio runtime that ran the channel's I/O task shut down");
    }
}

/// Routes decoded messages to their waiters and queues.
fn dispatch(inner: &Arc<Inner>, st: &mut State) {
    let State { core, pending, .. } = st;
    core.dispatch(
        inner.policy,
        || Arc::clone(inner) as Arc<dyn Responder>,
        |id, body, fds| {
            // No sender: the request was abandoned (its future dropped).
            if let Some(w) = pending.get_mut(&id) {
                w.answer(Ok((body, fds)));
            }
        },
    );
}

// The futures are `Send`: a task awaiting them may move between the worker
// threads of a multi-thread runtime. Checked here, at compile time.
const _: () = {
    fn is_send<T: Send>(_: &T) {}
    #[allow(dead_code)]
    fn futures_are_send(ch: &Channel) {
        is_send(&ch.recv());
        is_send(&ch.request::<u32, u32>(&1));
        is_send(&ch.request_bytes(b""));
        is_send(&ch.ready(&Ready::new(0)));
        is_send(&ch.wait_ready_seen(true, 1));
    }
};
#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(60);

    async fn echo_bytes(ch: Channel) {
        while let Ok(m) = ch.recv().await {
            if let Incoming::Request(r) = m {
                let body = r.body();
                r.respond_bytes(&body).unwrap();
            }
        }
    }

    #[test]
    fn both_sides_writing_8_mib_byte_bodies_at_once_do_not_deadlock() {
        // Each side writes as much of its body as the socket takes from the
        // caller's buffer; the rest is queued for the I/O task, which must
        // keep reading while it waits for room. Both ways at once, answered
        // with as large a body, on one thread.
        const LEN: usize = 8 << 20;
        let rt = ::tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, b) = sys::stream_pair().unwrap();
            let parent = Channel::start(a, Role::Parent, None, ChannelOptions::default()).unwrap();
            let child = Channel::start(b, Role::Child, None, ChannelOptions::default()).unwrap();
            let body: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
            ::tokio::spawn(echo_bytes(parent.clone()));
            ::tokio::spawn(echo_bytes(child.clone()));
            let (from_parent, from_child) = ::tokio::join!(
                parent.request_bytes_timeout(&body, BOUND),
                child.request_bytes_timeout(&body, BOUND),
            );
            assert!(from_parent.unwrap() == body[..]);
            assert!(from_child.unwrap() == body[..]);
        });
    }
}
