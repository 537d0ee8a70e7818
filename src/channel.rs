//! The blocking channel: one type for both ends of a native readyfd session.
//!
//! A [`Channel`] owns one AF_UNIX stream socket (and, in a parent, the
//! child's pidfd). Every blocking channel of the process is served by one
//! shared I/O thread (the *reactor*: one epoll over every channel's socket
//! and pidfd), started by the first channel and stopped, and joined, when
//! the last one is dropped: a thousand channels cost one thread, no fd
//! beyond their sockets and pidfds, and no read buffer while idle.
//!
//! Input is read by a thread that waits for it (a caller waiting for its
//! answer, for the next message, or for `Ready` reads the socket itself, so
//! a message costs one wake-up, as with a plain blocking read), and by the
//! I/O thread while no caller waits. That caller sleeps in `poll` on the
//! socket and on a waker (an eventfd) taken from a small pool that the
//! reactor keeps (as many as channels read by a caller at once; one made up
//! front), so that a local close, a failed write or the child's exit ends
//! its wait too. Whoever reads decodes frames, answers `Ping`, routes each
//! `Response` to the thread waiting for it, and queues the peer's requests
//! and notifications for [`Channel::recv`]. A read buffer moves with the
//! thread that reads (a per-thread spare): a channel holds one only while
//! it is read or holds part of a frame.
//!
//! Sends are made by the calling thread directly while the socket has room
//! (one `send` per batch of frames, with `MSG_NOSIGNAL`). When it has not,
//! a caller that is going to wait for an answer anyway (`request`, `ping`,
//! `shutdown`) waits in `poll` for room and writes the whole frame itself,
//! up to its deadline; any other sender hands the rest to the I/O thread.
//! Either way no thread blocks while holding a lock, reads go on meanwhile
//! (so two peers writing large frames at each other do not deadlock), and
//! frames never interleave on the wire.
//!
//! Memory is bounded on both paths: senders wait while more than
//! [`HIGH_WATER`] bytes are queued for the peer, and reading stops while
//! [`MAX_INCOMING`](crate::limits::MAX_INCOMING) messages wait in [`recv`](Channel::recv)'s queue or our
//! answers to the peer pile up, which pushes back on a peer that floods.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use readyfd_proto::{Hello, Ready, RequestBody, ResponseBody, Role, Session, SessionError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::core::{
    ChannelOptions, Core, HIGH_WATER, ReadEnd, ReadStep, ReadyEvent, ShutdownPolicy,
    decode_response, response_bytes,
};
use crate::direct::{DirectChannel, DirectParts};
use crate::error::{ChannelError, CloseReason, DirectError, IntoDirectError};
use crate::incoming::{Incoming, Responder};
use crate::sys;
use crate::verdict::Seen;

/// How long dropping a channel waits for queued bytes to be written.
const DRAIN_ON_DROP: Duration = Duration::from_secs(2);

/// How much one read asks for.
const READ_CHUNK: usize = 64 * 1024;
// The frame decoder leaves this much room beyond a frame it has begun, so
// that a read never makes the buffer grow (and copy) under it.
const _: () = assert!(READ_CHUNK <= readyfd_proto::READ_AHEAD);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Nobody is writing.
    Idle,
    /// A caller's thread is writing.
    Caller,
    /// The socket was full: the I/O thread finishes the writing.
    Io,
}

/// Who reads the socket: the leader/follower hand-over that saves a wake-up.
///
/// A thread that waits for something the peer sends (an answer, a message,
/// `Ready`) reads the socket itself while it waits, instead of sleeping
/// until the I/O thread has read and woken it: one wake-up per message
/// instead of two, which is most of a small round trip's cost. The I/O
/// thread stops watching the socket for input meanwhile (an `epoll_ctl`,
/// which does not wake it) and takes over again when that thread is done,
/// so input is read even while nobody waits (a `Ping`, a `Shutdown`, the
/// peer going away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// The I/O thread watches the socket for input.
    Io,
    /// A waiting caller reads the socket itself.
    Caller,
}

/// The `epoll` tag of the shared I/O thread's own waker. A channel's
/// socket is tagged `id << 1`, its pidfd `id << 1 | 1`.
const TAG_WAKE: u64 = u64::MAX;

struct State {
    /// What the blocking and the tokio channel share.
    core: Core,
    out: Vec<u8>,
    /// How many bytes at the end of `out` are not written yet. Kept apart
    /// from `out`, which a writer takes out of the state while it sends.
    unsent: usize,
    writer: Writer,
    waiting: HashSet<u64>,
    responses: HashMap<u64, (ResponseBody, Vec<OwnedFd>)>,
    stop: bool,
    /// Who reads the socket.
    reader: Reader,
    /// What the I/O thread's epoll watches the socket for (`None`: the
    /// socket is not registered yet).
    registered: Option<EpollFlags>,
    /// Threads asleep on the condition variable (so that nobody pays for a
    /// notification nobody waits for).
    sleepers: usize,
    /// The waker of the caller that reads the socket (see [`Reader`]):
    /// that thread's own, set while it reads.
    reader_waker: Option<Arc<sys::Waker>>,
    /// The pidfd the I/O thread's epoll watches (parent side): the
    /// spawned child's, or, from readiness on after a wrapper, that of the
    /// process that said `Ready` ([`Channel::watch_peer`]).
    pidfd: Option<OwnedFd>,
}

impl State {
    /// Queues a frame with `send` and keeps `fds` to go with its bytes
    /// ([`Core::queue_with_fds`], told what is taken but not written yet).
    fn queue<R>(
        &mut self,
        fds: Vec<OwnedFd>,
        send: impl FnOnce(&mut Session, usize) -> Result<R, SessionError>,
    ) -> Result<R, SessionError> {
        let unsent = self.unsent;
        self.core.queue_with_fds(unsent, fds, send)
    }

    fn pending_out(&self) -> usize {
        self.core.session.transmit_len() + self.unsent
    }

    fn send_blocker(&self) -> Option<CloseReason> {
        self.core.send_blocker()
    }

    fn read_blocker(&self) -> Option<CloseReason> {
        self.core.read_blocker()
    }
}

pub(crate) struct Inner {
    sock: OwnedFd,
    /// The shared I/O thread that serves this channel: its epoll watches
    /// the pidfd ([`State::pidfd`]), and the socket as
    /// [`Inner::sync_interest`] registers it.
    reactor: Arc<Reactor>,
    /// This channel's number with the reactor (its epoll tags).
    id: u64,
    /// The bytes read and not yet decoded. Held by whoever reads the socket,
    /// across the read and the decoding, so input is handled in order; it is
    /// taken before `state`, never while `state` is held.
    rbuf: Mutex<BytesMut>,
    state: Mutex<State>,
    cond: Condvar,
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

    fn wait<'a>(
        &self,
        mut g: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, State>, bool) {
        let (mut g, timed_out) = match deadline {
            None => {
                g.sleepers += 1;
                (self.cond.wait(g).unwrap_or_else(|p| p.into_inner()), false)
            }
            Some(d) => {
                let left = sys::remaining(d);
                if left.is_zero() {
                    return (g, true);
                }
                g.sleepers += 1;
                let (g, r) = self
                    .cond
                    .wait_timeout(g, left)
                    .unwrap_or_else(|p| p.into_inner());
                (g, r.timed_out() && Instant::now() >= d)
            }
        };
        g.sleepers -= 1;
        (g, timed_out)
    }

    /// Wakes the threads asleep on the condition variable, if any.
    fn notify(&self, st: &State) {
        if st.sleepers > 0 {
            self.cond.notify_all();
        }
    }

    /// Wakes every waiter, the caller reading the socket included: for
    /// changes that are not input (a close, a failed write, an exit).
    fn wake_waiters(&self, st: &State) {
        self.notify(st);
        if let (Reader::Caller, Some(w)) = (st.reader, &st.reader_waker) {
            w.wake();
        }
    }

    /// Whether input may be read now: the read side is open and neither
    /// back-pressure limit holds reading up.
    fn may_read(&self, st: &State) -> bool {
        !st.stop && st.core.may_read(&self.limits, st.pending_out())
    }

    /// Registers with the I/O thread's epoll what it must watch the socket
    /// for now: input when it is the reader and reading is allowed, room
    /// when it is the writer. Changing the registration does not wake the
    /// I/O thread. A socket it has no interest in stays registered
    /// `EPOLLONESHOT` with no events: a hung-up socket reports `EPOLLHUP`
    /// whatever is asked, and one-shot makes that at most one wake-up, where
    /// a plain registration would spin; and `EPOLL_CTL_MOD` costs less than
    /// taking the socket out and putting it back (which allocates).
    fn sync_interest(&self, st: &mut State) {
        if st.stop {
            // The channel has left the reactor (or is leaving it): it must
            // not come back under a tag nobody serves.
            return;
        }
        let mut want = EpollFlags::empty();
        if st.reader == Reader::Io && self.may_read(st) {
            want |= EpollFlags::EPOLLIN;
        }
        if st.writer == Writer::Io {
            want |= EpollFlags::EPOLLOUT;
        }
        if st.registered == Some(want) {
            return;
        }
        let flags = if want.is_empty() {
            EpollFlags::EPOLLONESHOT
        } else {
            want
        };
        let tag = self.id << 1;
        let r = if st.registered.is_none() {
            self.reactor
                .epoll
                .add(self.sock.as_fd(), EpollEvent::new(flags, tag))
        } else {
            self.reactor
                .epoll
                .modify(self.sock.as_fd(), &mut EpollEvent::new(flags, tag))
        };
        match r {
            Ok(()) => st.registered = Some(want),
            Err(e) => {
                // Only a kernel out of memory gets here: the channel cannot
                // be driven any more, and everyone waiting must hear it.
                let e = io::Error::from(e);
                if matches!(st.core.read, ReadEnd::Open) {
                    st.core.read = ReadEnd::Failed(CloseReason::Io(Arc::new(e)));
                }
                self.wake_waiters(st);
            }
        }
    }

    /// Waits until `check` returns something, and returns it; or, once
    /// `deadline` has passed, returns the state with `check` having failed
    /// under it one last time (so a timeout can be cleaned up atomically).
    ///
    /// The waiting thread reads the socket itself when no other thread is
    /// (see [`Reader`]); otherwise it sleeps on the condition variable
    /// until whoever reads has handed something over.
    fn wait_for<'a, T>(
        self: &'a Arc<Self>,
        deadline: Option<Instant>,
        mut check: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<T, MutexGuard<'a, State>> {
        let mut st = self.lock();
        loop {
            if let Some(t) = check(&mut st) {
                return Ok(t);
            }
            // A thread without a waker of its own (none could be made)
            // sleeps, and the I/O thread reads for it.
            let waker = if st.reader == Reader::Io && self.may_read(&st) {
                take_waker()
            } else {
                None
            };
            if let Some(waker) = waker {
                st.reader = Reader::Caller;
                st.reader_waker = Some(Arc::clone(&waker));
                self.sync_interest(&mut st);
                drop(st);
                let led = self.lead(deadline, &waker, &mut check);
                st = self.lock();
                st.reader = Reader::Io;
                st.reader_waker = None;
                self.sync_interest(&mut st);
                // Nobody wakes it any more: its next user may have it.
                give_back_waker(waker);
                // A thread that waited meanwhile may read now.
                self.notify(&st);
                if let Some(t) = led {
                    return Ok(t);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return check(&mut st).ok_or(st);
                }
                // Reading stopped (back-pressure, or the read side ended):
                // look again.
                continue;
            }
            let (g, timed_out) = self.wait(st, deadline);
            st = g;
            if timed_out {
                return check(&mut st).ok_or(st);
            }
        }
    }

    /// The reading caller's loop: read and decode what is there, look with
    /// `check`, sleep in `poll` on the socket until more comes. Returns
    /// `None` when the deadline passes or reading must stop.
    fn lead<T>(
        self: &Arc<Self>,
        deadline: Option<Instant>,
        waker: &sys::Waker,
        check: &mut impl FnMut(&mut State) -> Option<T>,
    ) -> Option<T> {
        lend_spare(&mut self.lock_rbuf());
        let r = self.lead_inner(deadline, waker, check);
        // The read buffer is held while reading only: an idle channel holds
        // none (a thousand channels must not hold 64 KiB each).
        keep_spare(&mut self.lock_rbuf());
        r
    }

    fn lead_inner<T>(
        self: &Arc<Self>,
        deadline: Option<Instant>,
        waker: &sys::Waker,
        check: &mut impl FnMut(&mut State) -> Option<T>,
    ) -> Option<T> {
        // The first look reads nothing: `poll` says at once if input is
        // there, and an empty read would be a system call for nothing.
        let mut readable = false;
        loop {
            {
                // `check` runs with the read buffer held: what another
                // thread read before we got it has been decoded and routed,
                // and nothing can be read between our last look and our
                // poll.
                let mut rbuf = self.lock_rbuf();
                loop {
                    let step = if readable {
                        read_step(self, &mut rbuf, Writer::Caller)
                    } else {
                        ReadStep::Empty
                    };
                    let mut st = self.lock();
                    if let Some(t) = check(&mut st) {
                        return Some(t);
                    }
                    if !self.may_read(&st) {
                        return None;
                    }
                    // A peer that keeps the socket busy must not hold the
                    // deadline off: look at it after every read (a `poll`
                    // with a passed deadline still reports a readable
                    // socket, so the poll alone does not end the wait).
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return None;
                    }
                    if step != ReadStep::Data {
                        break;
                    }
                }
            }
            let mut fds = [
                PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
                PollFd::new(waker.as_fd(), PollFlags::POLLIN),
            ];
            match sys::poll_until(&mut fds, deadline) {
                Ok(0) => return None,
                Ok(_) => {
                    readable = true;
                    if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                        waker.drain();
                    }
                }
                Err(e) => {
                    let mut st = self.lock();
                    if matches!(st.core.read, ReadEnd::Open) {
                        st.core.read = ReadEnd::Failed(CloseReason::Io(Arc::new(e)));
                    }
                    self.wake_waiters(&st);
                    return check(&mut st);
                }
            }
        }
    }

    /// One read by the calling thread, without taking the socket from the
    /// I/O thread, if nobody else reads it now: for input that is likely
    /// there already. What it reads is routed as any read's.
    fn read_now(self: &Arc<Self>) {
        {
            let st = self.lock();
            if st.reader != Reader::Io || !self.may_read(&st) {
                return;
            }
        }
        // Whoever holds the buffer is reading, and routes what is there.
        if let Ok(mut rbuf) = self.rbuf.try_lock() {
            lend_spare(&mut rbuf);
            read_step(self, &mut rbuf, Writer::Caller);
            keep_spare(&mut rbuf);
        }
    }

    /// Writes what is queued, as `who`. Returns with the lock held.
    /// A caller hands over to the I/O thread when the socket is full; the
    /// I/O thread keeps the role until everything is out.
    fn flush<'a>(&'a self, st: MutexGuard<'a, State>, who: Writer) -> MutexGuard<'a, State> {
        self.flush_until(st, who, None)
    }

    /// [`flush`](Self::flush) by a caller that is going to wait anyway (for
    /// the answer to the request it queued): while the socket is full it
    /// waits in `poll` for room, until `deadline`, and writes the rest
    /// itself, instead of handing it to the I/O thread (a large message
    /// then costs no hand-over and no wake-up of another thread). Reads are
    /// not held up meanwhile: this thread holds no lock while it waits, and
    /// the I/O thread (or another waiting caller) reads, so two peers that
    /// both write large frames at once do not deadlock. At the deadline the
    /// I/O thread takes over what is left, as with `flush`.
    fn flush_waiting<'a>(
        &'a self,
        st: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        self.flush_until(st, Writer::Caller, Some(deadline))
    }

    fn flush_until<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        who: Writer,
        wait: Option<Option<Instant>>,
    ) -> MutexGuard<'a, State> {
        match (st.writer, who) {
            (Writer::Idle, _) => st.writer = who,
            (Writer::Io, Writer::Io) => {}
            _ => return st, // the current writer will send our bytes too
        }
        loop {
            if st.core.write_failed.is_some() {
                let mut discard = std::mem::take(&mut st.out);
                discard.clear();
                let _ = st.core.session.poll_transmit(&mut discard);
                discard.clear();
                st.out = discard;
                st.unsent = 0;
                st.core.discard_tx_fds();
                break;
            }
            if st.unsent == 0 {
                let mut out = std::mem::take(&mut st.out);
                out.clear();
                let more = st.core.session.poll_transmit(&mut out);
                st.unsent = out.len();
                st.out = out;
                if !more {
                    break;
                }
            }
            let out = std::mem::take(&mut st.out);
            let pos = out.len() - st.unsent;
            let unsent = st.unsent;
            let plan = st.core.plan_write(unsent);
            drop(st);
            let chunk = &out[pos..pos + plan.len];
            let res = match &plan.fds {
                None => sys::send_nonblocking(self.sock.as_fd(), chunk),
                Some(f) => sys::send_with_fds(self.sock.as_fd(), chunk, &f.fds),
            };
            st = self.lock();
            st.out = out;
            st.core.wrote(*res.as_ref().unwrap_or(&0), plan.fds);
            match res {
                Ok(n) => {
                    st.unsent -= n;
                    if st.writer == Writer::Io {
                        // Senders waiting for room may proceed.
                        self.notify(&st);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let (Writer::Caller, Some(deadline)) = (st.writer, wait) {
                        if deadline.is_none_or(|d| Instant::now() < d) {
                            drop(st);
                            let room =
                                sys::wait_fd(self.sock.as_fd(), PollFlags::POLLOUT, deadline);
                            st = self.lock();
                            if matches!(room, Ok(r) if !r.is_empty()) {
                                continue;
                            }
                        }
                    }
                    if st.writer == Writer::Caller {
                        // The I/O thread writes the rest when there is room:
                        // registering that is all it takes to tell it.
                        st.writer = Writer::Io;
                        self.sync_interest(&mut st);
                    }
                    return st;
                }
                Err(e) => {
                    st.core.write_failed = Some(crate::core::write_failure(e));
                }
            }
        }
        st.writer = Writer::Idle;
        let unsent = st.unsent;
        if st.core.goodbye_written(unsent) {
            sys::shut_down_write(self.sock.as_fd());
        }
        // Reading may have been held up by what was queued.
        self.sync_interest(&mut st);
        if st.core.write_failed.is_some() {
            self.wake_waiters(&st);
        } else {
            self.notify(&st);
        }
        st
    }
}

impl Inner {
    /// Sends a frame whose payload ends with the raw `body`, then writes
    /// what is queued as [`flush_until`](Self::flush_until) does with
    /// `wait`. When nothing else is queued or being written (and no fds go
    /// with it), the body is written from `body` itself: `split` appends
    /// the frame's head to an empty buffer (a session `*_split` method),
    /// and one vectored `sendmsg` writes head and body; only what the
    /// socket did not take is copied into the queue, for the writer that
    /// finishes it. Otherwise `whole` queues the whole frame, as every
    /// other send does.
    fn send_body<'a, R>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        wait: Option<Option<Instant>>,
        body: &[u8],
        fds: Vec<OwnedFd>,
        split: impl FnOnce(&mut State, &mut Vec<u8>) -> Result<R, SessionError>,
        whole: impl FnOnce(&mut State, Vec<OwnedFd>) -> Result<R, SessionError>,
    ) -> Result<R, ChannelError> {
        let idle = st.writer == Writer::Idle && st.unsent == 0;
        if !st.core.body_may_go_direct(&fds, body.len(), idle) {
            let r = whole(&mut st, fds)?;
            drop(self.flush_until(st, Writer::Caller, wait));
            return Ok(r);
        }
        let mut out = std::mem::take(&mut st.out);
        out.clear();
        let r = match split(&mut st, &mut out) {
            Ok(r) => r,
            Err(e) => {
                st.out = out;
                return Err(e.into());
            }
        };
        // Counted as unsent while it is written without the lock, so that
        // a frame with fds queued meanwhile knows where it starts, and
        // nobody else writes (frames never interleave).
        let total = out.len() + body.len();
        st.unsent = total;
        st.writer = Writer::Caller;
        drop(st);
        let res = sys::send_vectored_nonblocking(self.sock.as_fd(), &out, body);
        let mut st = self.lock();
        let n = *res.as_ref().unwrap_or(&0);
        st.core.wrote(n, None);
        st.unsent = total - n;
        // What is left goes through the queue: `flush_until` writes it (or
        // hands it to the I/O thread) from `out`.
        crate::core::keep_unwritten(&mut out, body, n);
        st.out = out;
        if let Err(e) = res {
            if e.kind() != io::ErrorKind::WouldBlock {
                st.core.write_failed = Some(crate::core::write_failure(e));
            }
        }
        st.writer = Writer::Idle;
        drop(self.flush_until(st, Writer::Caller, wait));
        Ok(r)
    }
}

/// One end of a native readyfd channel.
///
/// A `Channel` owns one AF_UNIX stream socket; one I/O thread, shared by
/// every blocking channel of the process (started by the first, ended with
/// the last), serves it. A thread that waits for input (an answer, the
/// next message, `Ready`) reads the socket itself while no other thread
/// does, so each message costs one wake-up; the I/O thread reads while
/// nobody waits, so `Ping` is answered and a `Shutdown` seen whatever the
/// application is doing. Whoever reads decodes frames, answers `Ping`,
/// routes each response to the thread waiting for it, and queues the peer's
/// requests and notifications for [`recv`](Self::recv). Sends are made by
/// the calling thread directly while the socket has room (with
/// `MSG_NOSIGNAL`); when it has not, a requester writes the rest of its
/// request itself as the peer makes room, and any other sender leaves it to
/// the I/O thread, so frames never interleave and reads are never held up.
/// Memory is bounded
/// both ways: senders wait while more than [`HIGH_WATER`] bytes are queued,
/// and reading pauses while [`MAX_INCOMING`](crate::limits::MAX_INCOMING) messages wait to be taken.
///
/// `Channel` is `Send + Sync`, and cloning it is cheap: a clone is a
/// *handle* on the same channel, to move into a thread that serves
/// [`recv`](Self::recv) while the owner waits for `Ready` or does other
/// work. Only the original (the one [`ReadyChild`](crate::ReadyChild) or
/// [`Parent`](crate::Parent) holds) owns the channel: dropping it says
/// `Goodbye` to the peer, closes the socket and takes it from the I/O
/// thread (ending that thread if it was the last channel), and
/// from then on every handle's calls fail with [`ChannelError::Closed`] (a
/// thread blocked in [`recv`](Self::recv) returns it at once, so a serving
/// loop `while let Ok(m) = ch.recv() { .. }` ends without polling).
/// Dropping a handle does nothing; [`close`](Self::close) on a handle
/// closes the channel for everyone.
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
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Starts a channel over a connected AF_UNIX stream socket: queues our
    /// `Hello` and hands the channel to the shared I/O thread (started if
    /// this is the only channel). `pidfd`, for a parent, is watched
    /// so that a child's death is seen at once.
    pub(crate) fn start(
        sock: OwnedFd,
        role: Role,
        pidfd: Option<OwnedFd>,
        opts: ChannelOptions,
    ) -> io::Result<Channel> {
        sys::set_nonblocking(sock.as_fd(), true)?;
        let reactor = Reactor::acquire()?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::new(Inner {
            sock,
            reactor: Arc::clone(&reactor),
            id,
            // Allocated when there is something to read (see `lead`).
            rbuf: Mutex::new(BytesMut::new()),
            state: Mutex::new(State {
                core: Core::new(role, opts.session),
                out: Vec::new(),
                unsent: 0,
                writer: Writer::Idle,
                waiting: HashSet::new(),
                responses: HashMap::new(),
                stop: false,
                reader: Reader::Io,
                registered: None,
                sleepers: 0,
                reader_waker: None,
                pidfd,
            }),
            cond: Condvar::new(),
            policy: opts.shutdown,
            limits: opts,
        });
        // Served from now on: the socket is registered (by `flush`) only
        // once the I/O thread can find the channel.
        if let Err(e) = reactor.add(&inner) {
            inner.lock().stop = true;
            reactor.remove(&inner);
            Reactor::release(&reactor);
            return Err(e);
        }
        // Send our Hello now: it costs nothing and lets a peer that waits
        // for it proceed.
        drop(inner.flush(inner.lock(), Writer::Caller));
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

    fn send<R>(
        &self,
        deadline: Option<Instant>,
        f: impl FnOnce(&mut State) -> Result<R, SessionError>,
    ) -> Result<R, ChannelError> {
        self.send_as(deadline, false, f)
    }

    /// Queues a frame with `f` once there is room under [`HIGH_WATER`], and
    /// writes it: as far as the socket takes it, the rest by the I/O
    /// thread; or, for a caller that `waits` for an answer anyway, all of
    /// it, by this thread (see [`Inner::flush_waiting`]).
    fn send_as<R>(
        &self,
        deadline: Option<Instant>,
        waits: bool,
        f: impl FnOnce(&mut State) -> Result<R, SessionError>,
    ) -> Result<R, ChannelError> {
        let mut st = self.room(deadline)?;
        let r = f(&mut st)?;
        if waits {
            drop(self.inner.flush_waiting(st, deadline));
        } else {
            drop(self.inner.flush(st, Writer::Caller));
        }
        Ok(r)
    }

    /// The state, once fewer than [`HIGH_WATER`] bytes are queued.
    fn room(&self, deadline: Option<Instant>) -> Result<MutexGuard<'_, State>, ChannelError> {
        let mut st = self.inner.lock();
        loop {
            if let Some(r) = st.send_blocker() {
                return Err(ChannelError::Closed(r));
            }
            if st.pending_out() < HIGH_WATER {
                return Ok(st);
            }
            let (g, timed_out) = self.inner.wait(st, deadline);
            st = g;
            if timed_out {
                return Err(ChannelError::Timeout(Duration::ZERO));
            }
        }
    }

    /// Child: announces readiness. Requests may be made and served before
    /// and after it.
    ///
    /// # Errors
    /// [`ChannelError::NotAllowed`] from a parent or a second time;
    /// [`ChannelError::Closed`] when the parent has gone.
    pub fn ready(&self, ready: &Ready) -> Result<(), ChannelError> {
        self.ready_with_fds(ready, Vec::new())
    }

    /// Child: announces readiness and hands the parent `fds` with it (a
    /// listening socket, a log pipe...; at most
    /// [`MAX_FDS_PER_FRAME`](readyfd_proto::MAX_FDS_PER_FRAME)). Our copies
    /// are closed once sent. The parent takes them with
    /// [`take_ready_fds`](Self::take_ready_fds).
    ///
    /// # Errors
    /// As [`ready`](Self::ready), and [`ChannelError::Encode`] for more
    /// than 253 fds. On any error the fds are closed.
    pub fn ready_with_fds(&self, ready: &Ready, fds: Vec<OwnedFd>) -> Result<(), ChannelError> {
        // A pid of 0 means "this process", asked of the kernel only then: a
        // system call on the way to the parent's wake-up otherwise.
        let ready = if ready.pid == 0 {
            Cow::Owned(ready.clone().with_sender_pid(std::process::id()))
        } else {
            Cow::Borrowed(ready)
        };
        self.send(None, |st| {
            st.queue(fds, |s, n| s.send_ready_with_fds(&ready, n))
        })
    }

    /// Parent: takes the file descriptors the child sent with its `Ready`
    /// ([`ready_with_fds`](Self::ready_with_fds)), owned and close-on-exec;
    /// empty before `Ready` arrived, when it carried none, and once taken.
    /// Those not taken are closed with the channel.
    pub fn take_ready_fds(&self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.inner.lock().core.peer.ready_fds)
    }

    /// Child: sends a status line (shown by `readyfd run` while it waits, and
    /// kept by the parent as [`last_status`](Self::last_status)).
    ///
    /// # Errors
    /// As [`ready`](Self::ready).
    pub fn status(&self, text: &str) -> Result<(), ChannelError> {
        self.send(None, |st| st.core.session.send_status(text))
    }

    /// Sends a one-way application message.
    ///
    /// # Errors
    /// [`ChannelError::Encode`] when it does not fit the peer's maximum
    /// frame; [`ChannelError::Closed`] when the channel is closed.
    pub fn notify<T: Serialize + ?Sized>(&self, body: &T) -> Result<(), ChannelError> {
        self.send(None, |st| st.core.session.send_notify(body))
    }

    /// Sends a one-way application message with `fds` (at most
    /// [`MAX_FDS_PER_FRAME`](readyfd_proto::MAX_FDS_PER_FRAME)); our copies
    /// are closed once sent. The peer finds them in the
    /// [`Notification`](crate::Notification).
    ///
    /// # Errors
    /// As [`notify`](Self::notify), and [`ChannelError::Encode`] for more
    /// than 253 fds. On any error the fds are closed.
    pub fn notify_with_fds<T: Serialize + ?Sized>(
        &self,
        body: &T,
        fds: Vec<OwnedFd>,
    ) -> Result<(), ChannelError> {
        self.send(None, |st| {
            st.queue(fds, |s, n| s.send_notify_with_fds(body, n))
        })
    }

    /// Sends a one-way application message whose body is `body` as it is:
    /// with no serde work and no length prefix, written from `body` itself
    /// as [`request_bytes`](Self::request_bytes) writes its body
    /// (the frame delimits it; PROTOCOL.md, section 4, "Application
    /// bodies"). The peer reads it with
    /// [`Notification::body`](crate::Notification::body).
    ///
    /// # Errors
    /// As [`notify`](Self::notify).
    pub fn notify_bytes(&self, body: &[u8]) -> Result<(), ChannelError> {
        self.notify_bytes_with_fds(body, Vec::new())
    }

    /// [`notify_bytes`](Self::notify_bytes) with `fds`, as
    /// [`notify_with_fds`](Self::notify_with_fds).
    ///
    /// # Errors
    /// As [`notify_with_fds`](Self::notify_with_fds). On any error the fds
    /// are closed.
    pub fn notify_bytes_with_fds(
        &self,
        body: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), ChannelError> {
        let st = self.room(None)?;
        self.inner.send_body(
            st,
            None,
            body,
            fds,
            |st, out| st.core.session.send_notify_bytes_split(body.len(), 0, out),
            |st, fds| st.queue(fds, |s, n| s.send_notify_bytes(body, n)),
        )
    }

    /// Sends an application request and waits for its answer, decoded as
    /// `Resp`. Waits as long as the peer is there; see
    /// [`request_timeout`](Self::request_timeout).
    ///
    /// On a parent's channel, once the child is ready, the peer is the
    /// process that said `Ready`: when it exits, what it wrote before (the
    /// answer, perhaps) is still read, and then this fails with
    /// [`ChannelError::Closed`] ([`CloseReason::PeerClosed`]) even while
    /// another process (a grandchild that inherited the socket) keeps its
    /// end open and no end of stream comes (PROTOCOL.md §6.3).
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
        let (body, _fds) = self.call(None, Vec::new(), |s, _| s.send_app_request(req))?;
        decode_response(body)
    }

    /// [`request`](Self::request), handing the peer `fds` with the request
    /// (at most [`MAX_FDS_PER_FRAME`](readyfd_proto::MAX_FDS_PER_FRAME); our
    /// copies are closed once sent), and returning the fds the peer sent
    /// with its answer ([`IncomingRequest::respond_with_fds`](crate::IncomingRequest::respond_with_fds)),
    /// owned and close-on-exec.
    ///
    /// # Errors
    /// As [`request`](Self::request), and [`ChannelError::Encode`] for more
    /// than 253 fds. On any error the fds given are closed, and so are any
    /// that came with the answer.
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(ch: &readyfd::Channel) -> Result<(), Box<dyn std::error::Error>> {
    /// let log = std::fs::File::create("/tmp/app.log")?;
    /// let (ok, fds): (bool, _) = ch.request_with_fds(&"take this log", vec![log.into()])?;
    /// # let _ = (ok, fds); Ok(()) }
    /// ```
    pub fn request_with_fds<Req, Resp>(
        &self,
        req: &Req,
        fds: Vec<OwnedFd>,
    ) -> Result<(Resp, Vec<OwnedFd>), ChannelError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let (body, fds) = self.call(None, fds, |s, n| s.send_app_request_with_fds(req, n))?;
        Ok((decode_response(body)?, fds))
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
        let (body, _fds) = self
            .call(Some(sys::deadline_after(timeout)), Vec::new(), |s, _| {
                s.send_app_request(req)
            })
            .map_err(|e| with_timeout(e, timeout))?;
        decode_response(body)
    }

    /// Sends an application request whose body is `body` as it is (no serde
    /// work, no length prefix), and waits for the answer's body as it arrived: a [`Bytes`] that is a slice of the
    /// answer's frame, not a copy of it. The peer reads the request with
    /// [`IncomingRequest::body`](crate::IncomingRequest::body) and may
    /// answer with [`respond_bytes`](crate::IncomingRequest::respond_bytes)
    /// or with any typed body (then this returns its encoding). An answer
    /// without a body (`Ok`) is empty.
    ///
    /// From 2 KiB, when nothing else is being sent, the body is written
    /// from `body` itself, with the frame's head, in one vectored
    /// `sendmsg`; only what the socket does not take at once is copied, and
    /// this thread writes it as the peer makes room.
    ///
    /// # Errors
    /// [`ChannelError::Remote`] when the peer failed it,
    /// [`ChannelError::Encode`] when `body` does not fit the peer's maximum
    /// frame, [`ChannelError::Closed`] when the peer goes away first.
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(ch: &readyfd::Channel) -> Result<(), readyfd::ChannelError> {
    /// let page = vec![0u8; 4096];
    /// let echoed: bytes::Bytes = ch.request_bytes(&page)?;
    /// assert_eq!(echoed, page);
    /// # Ok(()) }
    /// ```
    pub fn request_bytes(&self, body: &[u8]) -> Result<Bytes, ChannelError> {
        let (body, _fds) = self.call_bytes(None, body, Vec::new())?;
        response_bytes(body)
    }

    /// [`request_bytes`](Self::request_bytes), handing the peer `fds` with
    /// the request and returning the fds it sent with its answer, as
    /// [`request_with_fds`](Self::request_with_fds).
    ///
    /// # Errors
    /// As [`request_with_fds`](Self::request_with_fds).
    pub fn request_bytes_with_fds(
        &self,
        body: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(Bytes, Vec<OwnedFd>), ChannelError> {
        let (body, fds) = self.call_bytes(None, body, fds)?;
        Ok((response_bytes(body)?, fds))
    }

    /// [`request_bytes`](Self::request_bytes) with a bound, as
    /// [`request_timeout`](Self::request_timeout).
    ///
    /// # Errors
    /// As [`request_bytes`](Self::request_bytes), plus
    /// [`ChannelError::Timeout`].
    pub fn request_bytes_timeout(
        &self,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, ChannelError> {
        let (body, _fds) = self
            .call_bytes(Some(sys::deadline_after(timeout)), body, Vec::new())
            .map_err(|e| with_timeout(e, timeout))?;
        response_bytes(body)
    }

    /// Sends `Ping` (answered by the peer's library, not its application)
    /// and returns the round-trip time.
    ///
    /// # Errors
    /// [`ChannelError::Closed`] or [`ChannelError::Timeout`].
    pub fn ping(&self, timeout: Duration) -> Result<Duration, ChannelError> {
        let t0 = Instant::now();
        self.call(Some(sys::deadline_after(timeout)), Vec::new(), |s, _| {
            s.send_request(RequestBody::Ping)
        })
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
        self.call(Some(sys::deadline_after(grace)), Vec::new(), |s, _| {
            s.send_request(RequestBody::Shutdown { grace_ms })
        })
        .map_err(|e| with_timeout(e, grace))?;
        Ok(())
    }

    fn call(
        &self,
        deadline: Option<Instant>,
        fds: Vec<OwnedFd>,
        send: impl FnOnce(&mut Session, usize) -> Result<u64, SessionError>,
    ) -> Result<(ResponseBody, Vec<OwnedFd>), ChannelError> {
        let id = self.send_as(deadline, true, |st| {
            let id = st.queue(fds, send)?;
            st.waiting.insert(id);
            Ok(id)
        })?;
        self.answer_to(deadline, id)
    }

    /// [`call`](Self::call) with a raw body, written from `body` itself
    /// when it can be (see [`Inner::send_body`]).
    fn call_bytes(
        &self,
        deadline: Option<Instant>,
        body: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(ResponseBody, Vec<OwnedFd>), ChannelError> {
        let st = self.room(deadline)?;
        let id = self.inner.send_body(
            st,
            Some(deadline),
            body,
            fds,
            |st, out| {
                let id = st
                    .core
                    .session
                    .send_app_request_bytes_split(body.len(), 0, out)?;
                st.waiting.insert(id);
                Ok(id)
            },
            |st, fds| {
                let id = st.queue(fds, |s, n| s.send_app_request_bytes(body, n))?;
                st.waiting.insert(id);
                Ok(id)
            },
        )?;
        self.answer_to(deadline, id)
    }

    /// Waits for the answer to our request `id`.
    fn answer_to(
        &self,
        deadline: Option<Instant>,
        id: u64,
    ) -> Result<(ResponseBody, Vec<OwnedFd>), ChannelError> {
        let answer = self.inner.wait_for(deadline, |st| {
            if let Some((body, fds)) = st.responses.remove(&id) {
                st.waiting.remove(&id);
                return Some(match body {
                    ResponseBody::Error(e) => Err(ChannelError::Remote(e)),
                    other => Ok((other, fds)),
                });
            }
            st.read_blocker().map(|r| {
                st.waiting.remove(&id);
                Err(ChannelError::Closed(r))
            })
        });
        answer.unwrap_or_else(|mut st| {
            st.waiting.remove(&id);
            st.core.session.abandon_request(id);
            Err(ChannelError::Timeout(Duration::ZERO))
        })
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
        self.recv_until(Some(sys::deadline_after(timeout)))
    }

    /// Takes the peer's next request or notification if one is queued or
    /// already readable on the socket, without waiting: `Ok(None)` when
    /// there is none yet (as the tokio channel's `try_recv`).
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<Option<Incoming>, ChannelError> {
        self.recv_until(Some(Instant::now()))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<Option<Incoming>, ChannelError> {
        let inner = &self.inner;
        let next = inner.wait_for(deadline, |st| {
            let was_full = inner.limits.queue_full(&st.core.peer.incoming);
            if let Some(m) = st.core.peer.incoming.pop() {
                if was_full {
                    // Reading may have stopped on a full queue: resume it.
                    inner.sync_interest(st);
                }
                return Some(Ok(Some(m)));
            }
            st.read_blocker().map(|r| Err(ChannelError::Closed(r)))
        });
        next.unwrap_or(Ok(None))
    }

    /// Says `Goodbye` and stops sending. Requests still waiting fail with
    /// [`CloseReason::Local`]. Dropping the channel does this too.
    ///
    /// A child that closes (or drops) its channel before it sent `Ready`
    /// gives up: its `Goodbye` says `ShuttingDown` (with the panic message
    /// when the thread is panicking), and its parent reports a failure
    /// before readiness, not a ready child.
    pub fn close(&self) {
        let mut st = self.inner.lock();
        if st.core.close() {
            st = self.inner.flush(st, Writer::Caller);
        }
        self.inner.wake_waiters(&st);
    }

    // ---- parent-side waiting ------------------------------------------------

    /// Waits until the child is ready, the channel ends, the child exits
    /// (with the pidfd given to [`start`](Self::start), while `watch_exit`)
    /// or `deadline`, and says what was seen.
    pub(crate) fn wait_ready_seen(&self, deadline: Instant, watch_exit: bool, pid: u32) -> Seen {
        // A child that is ready before its parent waits (a fast one, or
        // one of several waited for in turn; on one CPU, any child that
        // runs while its parent is preempted) has its `Ready` in the socket
        // already: one read takes it, where taking the socket from the I/O
        // thread, a `poll` and handing it back would be three more system
        // calls. When nothing is there yet, this costs one empty read,
        // once per child.
        self.inner.read_now();
        let event = self
            .inner
            .wait_for(Some(deadline), |st| st.core.ready_event(watch_exit));
        event
            .unwrap_or(ReadyEvent::Timeout)
            .into_seen(pid, self.last_status())
    }

    /// Readiness was seen: from now on the process that said `Ready` is
    /// the peer, and its exit ends the read side once what it wrote before
    /// is read (PROTOCOL.md §6.3), even while another process keeps its end
    /// of the socket open. `other` is a pidfd on that process when it is
    /// not the spawned child (after a wrapper): it is watched instead, and
    /// the wrapper's exit ends nothing. `None`: the spawned child said
    /// `Ready`; if it has exited already, the channel ends now.
    /// The process that wrote the child's `Ready` frame, as the kernel
    /// attests it (PROTOCOL.md §6.4), if known; and no more credentials
    /// are asked for from now on (`SO_PASSCRED` off). Parent side, once
    /// readiness is decided.
    pub(crate) fn take_ready_writer(&self) -> Option<u32> {
        let writer = self.inner.lock().core.peer.ready_writer;
        // Readiness is decided: no read needs its writer any more, and a
        // read with credentials may stop short of what the socket holds.
        let _ = sys::set_passcred(self.inner.sock.as_fd(), false);
        writer
    }

    pub(crate) fn watch_peer(&self, other: Option<OwnedFd>) {
        let inner = &self.inner;
        let spawned = other.is_none();
        let mut st = inner.lock();
        if st.stop {
            return;
        }
        if let Some(pidfd) = other {
            // Under the channel's lock, which `on_exit` takes before it
            // looks at the pidfd: it sees one or the other, whole.
            if let Some(old) = st.pidfd.take() {
                let _ = inner.reactor.epoll.delete(old.as_fd());
            }
            let added = inner.reactor.epoll.add(
                pidfd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, inner.id << 1 | 1),
            );
            if added.is_err() {
                // Only a kernel out of memory gets here: the channel then
                // ends with the peer's end of stream only, as before.
                return;
            }
            st.pidfd = Some(pidfd);
        }
        if st.core.watch_peer(spawned) {
            sys::shut_down_after_exit(inner.sock.as_fd());
            inner.wake_waiters(&st);
        }
    }
}

// ---- direct mode ----------------------------------------------------------

impl Channel {
    /// Makes this channel a [`DirectChannel`]: no I/O thread serves it any
    /// more, and the calling thread does all its I/O (see
    /// [`DirectChannel`] for what that gains and costs). The session's
    /// state, what was read and not yet decoded, what was queued for
    /// [`recv`](Self::recv) (requests, notifications, their fds) and what
    /// was queued for the peer move over: no message is lost, and the peer
    /// sees nothing change.
    ///
    /// # Errors
    /// Refused, with this channel given back unchanged
    /// ([`IntoDirectError::into_inner`]), when this is a handle
    /// ([`DirectError::NotOwner`]), when other handles or requests taken
    /// and not answered are alive ([`DirectError::Shared`]), or when a
    /// request still waits for its answer ([`DirectError::RequestInFlight`]).
    pub fn into_direct(self) -> Result<DirectChannel, IntoDirectError<Channel>> {
        self.into_direct_parts().map(DirectChannel::from_parts)
    }

    pub(crate) fn into_direct_parts(mut self) -> Result<DirectParts, IntoDirectError<Channel>> {
        if !self.owner {
            return Err(IntoDirectError::new(DirectError::NotOwner, self));
        }
        let (sock, pidfd) = {
            let mut st = self.inner.lock();
            if !st.waiting.is_empty() {
                drop(st);
                return Err(IntoDirectError::new(DirectError::RequestInFlight, self));
            }
            // Who holds the channel: this owner, the I/O thread's registry,
            // and each request queued for `recv` (it answers through the
            // channel). Anything more is a handle or a request the
            // application holds. Counted under the lock, under which alone
            // the I/O thread queues requests; nothing else can make a
            // handle without one.
            let queued = st
                .core
                .peer
                .incoming
                .iter_mut()
                .filter(|m| matches!(m, Incoming::Request(_) | Incoming::Shutdown(_)))
                .count();
            if Arc::strong_count(&self.inner) != 2 + queued {
                drop(st);
                return Err(IntoDirectError::new(DirectError::Shared, self));
            }
            // The direct channel's own copies (the originals close with
            // the old channel): taken first, so that a refusal leaves
            // everything as it was.
            let dup = |fd: &OwnedFd| fd.try_clone();
            let copies = dup(&self.inner.sock)
                .and_then(|s| Ok((s, st.pidfd.as_ref().map(dup).transpose()?)));
            let Ok(copies) = copies else {
                drop(st);
                return Err(IntoDirectError::new(DirectError::NoFds, self));
            };
            // The I/O thread reads no more, and registers nothing.
            st.stop = true;
            copies
        };
        // Once out of the reactor, the I/O thread never touches the channel
        // again (it finished what it was doing with it).
        self.inner.reactor.remove(&self.inner);
        Reactor::release(&self.inner.reactor);
        // The read buffer before the state, as everywhere.
        let rbuf = std::mem::take(&mut *self.inner.lock_rbuf());
        let mut st = self.inner.lock();
        let role = st.core.session.role();
        let core = std::mem::replace(&mut st.core, Core::new(role, self.inner.limits.session));
        let parts = DirectParts {
            sock,
            pidfd,
            core,
            out: std::mem::take(&mut st.out),
            unsent: std::mem::take(&mut st.unsent),
            rbuf,
            options: self.inner.limits,
        };
        drop(st);
        // Not the owner any more: dropping it must not close the socket the
        // direct channel now drives (a copy of it; the original closes
        // with the last request still holding the old channel, once the
        // direct channel has given them a new responder).
        self.owner = false;
        Ok(parts)
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        if !self.owner {
            // A handle: the owner decides when the channel ends.
            return;
        }
        // Requests nobody took are answered `Dropped` before our Goodbye, so
        // the peer's callers get a clear error. Each one also holds the
        // channel's state alive: leaving them queued would keep the socket,
        // eventfd and pidfd open for good.
        let unconsumed = self.inner.lock().core.peer.incoming.take();
        drop(unconsumed);
        self.close();
        {
            // Give what is queued (a last Ready or answer) a bounded chance
            // to reach a peer that is slow to read, then stop.
            let deadline = Instant::now() + DRAIN_ON_DROP;
            let mut st = self.inner.lock();
            while st.writer != Writer::Idle && st.core.write_failed.is_none() {
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
        // Once out of the reactor, the I/O thread never touches the
        // channel again; the last channel out stops the thread.
        self.inner.reactor.remove(&self.inner);
        Reactor::release(&self.inner.reactor);
        // Whatever arrived meanwhile: dropped outside the lock (dropping an
        // IncomingRequest takes it).
        let late = self.inner.lock().core.peer.incoming.take();
        drop(late);
    }
}

/// A timeout error says how long the caller waited (the inner wait
/// knows only its deadline); any other error stands.
pub(crate) fn with_timeout(e: ChannelError, t: Duration) -> ChannelError {
    match e {
        ChannelError::Timeout(_) => ChannelError::Timeout(t),
        other => other,
    }
}

impl Responder for Inner {
    fn answer(
        &self,
        fds: Vec<OwnedFd>,
        f: &mut dyn FnMut(&mut Session, usize) -> Result<(), SessionError>,
    ) -> Result<(), ChannelError> {
        send_on(self, |st| st.queue(fds, f))
    }

    fn answer_bytes(&self, id: u64, body: &[u8], fds: Vec<OwnedFd>) -> Result<(), ChannelError> {
        let st = self.lock();
        if let Some(r) = st.send_blocker() {
            return Err(ChannelError::Closed(r));
        }
        self.send_body(
            st,
            None,
            body,
            fds,
            |st, out| {
                st.core
                    .session
                    .send_app_response_bytes_split(id, body.len(), 0, out)
            },
            |st, fds| st.queue(fds, |s, n| s.send_app_response_bytes(id, body, n)),
        )
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

// ---- the shared I/O thread -----------------------------------------------------

/// Numbers of channels with the reactor (their epoll tags).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The running reactor, if any, and how many channels it serves.
static SHARED: Mutex<Option<Running>> = Mutex::new(None);

struct Running {
    reactor: Arc<Reactor>,
    thread: JoinHandle<()>,
    channels: usize,
    /// Idle wakers for reading callers (see [`take_waker`]).
    wakers: Vec<Arc<sys::Waker>>,
}

/// Idle wakers kept for reading callers beyond which one given back is
/// closed.
const IDLE_WAKERS: usize = 4;

/// The one I/O thread of the process, shared by every blocking channel: one
/// epoll over every channel's socket (as each channel's
/// [`Inner::sync_interest`] registers it) and pidfd, and its own waker. It
/// is started by the first channel and stopped (joined) by the last one to
/// go, so an idle process has no thread of ours; it never keeps a process
/// from exiting (Rust ends the process when `main` returns, whatever
/// threads remain).
struct Reactor {
    epoll: Epoll,
    wake: sys::Waker,
    /// The channels it serves. The I/O thread holds this lock while it
    /// handles a batch of events, so once a channel is taken out
    /// ([`remove`](Self::remove)), the thread never touches it again.
    channels: Mutex<Registry>,
    /// The thread ended abnormally: new channels start another.
    dead: AtomicBool,
}

#[derive(Default)]
struct Registry {
    map: HashMap<u64, Arc<Inner>>,
    stop: bool,
}

impl Reactor {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shared() -> MutexGuard<'static, Option<Running>> {
        SHARED.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running reactor, counted as serving one more channel; started
    /// if there is none.
    fn acquire() -> io::Result<Arc<Reactor>> {
        let mut shared = Reactor::shared();
        if let Some(r) = shared.as_mut() {
            if !r.reactor.dead.load(Ordering::Acquire) {
                r.channels += 1;
                return Ok(Arc::clone(&r.reactor));
            }
        }
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake = sys::Waker::new()?;
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, TAG_WAKE))?;
        let first_waker = sys::Waker::new()?;
        let reactor = Arc::new(Reactor {
            epoll,
            wake,
            channels: Mutex::new(Registry::default()),
            dead: AtomicBool::new(false),
        });
        let r = Arc::clone(&reactor);
        let thread = std::thread::Builder::new()
            .name("readyfd-io".into())
            // Small: the thread's frames are shallow, and its stack is
            // most of what it costs.
            .stack_size(128 * 1024)
            .spawn(move || r.run())?;
        // A dead reactor's thread has ended or is ending: let it go.
        *shared = Some(Running {
            reactor: Arc::clone(&reactor),
            thread,
            channels: 1,
            // One made up front: a process with one channel then has all
            // the fds it will have before its first wait.
            wakers: vec![Arc::new(first_waker)],
        });
        Ok(reactor)
    }

    /// One channel less; the last one stops the thread and waits for it.
    fn release(reactor: &Arc<Reactor>) {
        let mut shared = Reactor::shared();
        let last = match shared.as_mut() {
            Some(r) if Arc::ptr_eq(&r.reactor, reactor) => {
                r.channels -= 1;
                r.channels == 0
            }
            _ => false,
        };
        if !last {
            return;
        }
        let Some(running) = shared.take() else { return };
        drop(shared);
        running.reactor.lock().stop = true;
        running.reactor.wake.wake();
        let _ = running.thread.join();
    }

    /// Makes the channel findable by its tags, and watches its pidfd.
    fn add(&self, inner: &Arc<Inner>) -> io::Result<()> {
        let mut reg = self.lock();
        reg.map.insert(inner.id, Arc::clone(inner));
        if let Some(p) = &inner.lock().pidfd {
            self.epoll.add(
                p.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, inner.id << 1 | 1),
            )?;
        }
        Ok(())
    }

    /// Takes the channel out (its `stop` is set, so it does not register
    /// again): from then on the I/O thread does not touch it.
    fn remove(&self, inner: &Inner) {
        let mut reg = self.lock();
        reg.map.remove(&inner.id);
        // Errors: not registered (never, or no longer).
        let _ = self.epoll.delete(inner.sock.as_fd());
        if let Some(p) = &inner.lock().pidfd {
            let _ = self.epoll.delete(p.as_fd());
        }
    }

    fn run(self: Arc<Self>) {
        // The I/O thread must never leave waiters hanging: whatever ends
        // it (a wait failure, a bug that panics), every channel it serves
        // is marked closed and everyone waiting is woken.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve()));
        self.dead.store(true, Ordering::Release);
        let reg = self.lock();
        if reg.stop {
            return;
        }
        for inner in reg.map.values() {
            let mut st = inner.lock();
            if matches!(st.core.read, ReadEnd::Open) && !st.stop {
                let why = match &outcome {
                    Ok(()) => "the channels' I/O thread stopped".to_string(),
                    Err(_) => "the channels' I/O thread panicked".to_string(),
                };
                st.core.read = ReadEnd::Failed(CloseReason::Io(Arc::new(io::Error::other(why))));
            }
            inner.wake_waiters(&st);
        }
    }

    fn serve(&self) {
        let mut events = [EpollEvent::empty(); 64];
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            let reg = self.lock();
            if reg.stop {
                return;
            }
            for ev in &events[..n] {
                let tag = ev.data();
                if tag == TAG_WAKE {
                    self.wake.drain();
                    continue;
                }
                // A channel taken out since the wait: nothing to do.
                let Some(inner) = reg.map.get(&(tag >> 1)) else {
                    continue;
                };
                if tag & 1 == 0 {
                    on_socket(inner, ev.events());
                } else {
                    on_exit(inner);
                }
                let mut st = inner.lock();
                inner.sync_interest(&mut st);
            }
        }
    }
}

/// The I/O thread's part when a channel's socket is ready.
fn on_socket(inner: &Arc<Inner>, sock: EpollFlags) {
    if sock.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) {
        let st = inner.lock();
        if st.writer == Writer::Io {
            drop(inner.flush(st, Writer::Io));
        }
    }
    if sock.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) {
        // Unless a waiting caller has become the reader meanwhile, or
        // is reading right now (it reads until the socket is empty).
        if let Ok(mut rbuf) = inner.rbuf.try_lock() {
            lend_spare(&mut rbuf);
            read_available(inner, &mut rbuf, false);
            keep_spare(&mut rbuf);
        }
    }
}

/// The I/O thread's part when the watched process exits: the spawned
/// child before readiness (for the verdict), the peer from then on
/// ([`Core::on_exit`]: the channel then ends once what it wrote is read).
fn on_exit(inner: &Arc<Inner>) {
    // The process exited. Frames it wrote before dying are already in the
    // socket buffer: take them first (whoever is the reader), so `Ready`
    // wins.
    {
        let mut rbuf = inner.lock_rbuf();
        lend_spare(&mut rbuf);
        read_available(inner, &mut rbuf, true);
        keep_spare(&mut rbuf);
    }
    let mut st = inner.lock();
    // The pidfd watched now must be the one that fired: an event taken from
    // epoll just before `watch_peer` put another in its place (a wrapper's
    // exit) says nothing about the peer.
    match &st.pidfd {
        Some(p) if sys::pidfd_exited(p.as_fd()) => {
            let _ = inner.reactor.epoll.delete(p.as_fd());
        }
        _ => return,
    }
    if st.core.on_exit() {
        sys::shut_down_after_exit(inner.sock.as_fd());
    }
    inner.wake_waiters(&st);
}

/// The largest read buffer a thread keeps for its next read.
const MAX_SPARE: usize = 4 * 1024 * 1024;

thread_local! {
    /// The read buffer this thread used last, kept for its next read of
    /// any channel: a channel holds a read buffer only while it is being
    /// read or holds part of a frame, and a thread that reads one message
    /// after another (a caller's round trips, the I/O thread) does not
    /// allocate (nor, for a large frame, fault in) a buffer each time.
    static SPARE: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// Gives a channel that holds no read buffer this thread's spare one.
pub(crate) fn lend_spare(rbuf: &mut BytesMut) {
    if rbuf.capacity() == 0 {
        let _ = SPARE.try_with(|s| std::mem::swap(rbuf, &mut s.borrow_mut()));
    }
}

/// Takes a read buffer that holds nothing from its channel, as this
/// thread's spare (freed if too large to keep).
pub(crate) fn keep_spare(rbuf: &mut BytesMut) {
    if rbuf.is_empty() && rbuf.capacity() > 0 {
        let buf = std::mem::take(rbuf);
        if buf.capacity() <= MAX_SPARE {
            let _ = SPARE.try_with(|s| *s.borrow_mut() = buf);
        }
    }
}

/// A waker for [`Inner::wait_for`]'s reading caller, from the reactor's
/// idle ones (or a new one): there are as many as channels being read by a
/// caller at once, not one per channel nor per thread, and none once no
/// channel is left. `None` when none can be made (no fd left): the caller
/// then sleeps and the I/O thread reads for it. A waker comes back with a
/// wake-up perhaps still pending: its next user just looks once more.
fn take_waker() -> Option<Arc<sys::Waker>> {
    if let Some(w) = Reactor::shared().as_mut().and_then(|r| r.wakers.pop()) {
        return Some(w);
    }
    sys::Waker::new().ok().map(Arc::new)
}

/// Gives a waker back for the next reading caller (closed if enough are
/// idle, or once no channel is left).
fn give_back_waker(w: Arc<sys::Waker>) {
    let mut shared = Reactor::shared();
    if let Some(r) = shared.as_mut() {
        if r.wakers.len() < IDLE_WAKERS {
            r.wakers.push(w);
            return;
        }
    }
    drop(shared);
    drop(w);
}

/// The I/O thread's reading: until the socket is drained (or a bound of
/// reads, to stay fair), while it is the reader (or whoever is, with
/// `any_reader`: a caller reading is woken to look).
fn read_available(inner: &Arc<Inner>, rbuf: &mut BytesMut, any_reader: bool) {
    for _ in 0..16 {
        {
            let st = inner.lock();
            if !inner.may_read(&st) || !(any_reader || st.reader == Reader::Io) {
                return;
            }
        }
        if read_step(inner, rbuf, Writer::Io) != ReadStep::Data {
            return;
        }
    }
}

/// Reads once (the caller holds the read buffer), hands the bytes to the
/// session, routes what it decoded, and sends what it produced, as `who`.
fn read_step(inner: &Arc<Inner>, rbuf: &mut BytesMut, who: Writer) -> ReadStep {
    let r = sys::recv_stream(inner.sock.as_fd(), rbuf, READ_CHUNK);
    if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
        return ReadStep::Empty;
    }
    let mut st = inner.lock();
    let step = st.core.on_read(r, rbuf);
    dispatch(inner, &mut st);
    let st = finish_input(inner, st, who);
    inner.notify(&st);
    step
}

/// After input: send what the session produced (pongs, acknowledgements),
/// as `who`, then raise SIGTERM if a Shutdown asked for it.
fn finish_input<'a>(
    inner: &'a Inner,
    st: MutexGuard<'a, State>,
    who: Writer,
) -> MutexGuard<'a, State> {
    let mut st = if st.core.session.transmit_len() > 0 {
        inner.flush(st, who)
    } else {
        st
    };
    if st.core.peer.raise_sigterm {
        st.core.peer.raise_sigterm = false;
        // Make sure the acknowledgement is out before the signal may end us:
        // whoever holds the writer role (perhaps a caller's thread in the
        // middle of a send, or the I/O thread) must have written everything
        // queued.
        let deadline = Instant::now() + Duration::from_secs(1);
        while (st.pending_out() > 0 || st.writer != Writer::Idle)
            && st.core.write_failed.is_none()
            && Instant::now() < deadline
        {
            st = match (st.writer, who) {
                (Writer::Idle, _) => inner.flush(st, who),
                (Writer::Io, Writer::Io) => {
                    drop(st);
                    let _ = sys::wait_fd(inner.sock.as_fd(), PollFlags::POLLOUT, Some(deadline));
                    inner.flush(inner.lock(), Writer::Io)
                }
                _ => inner.wait(st, Some(deadline)).0,
            };
        }
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM);
    }
    st
}

/// Routes decoded messages to their waiters and queues.
fn dispatch(inner: &Arc<Inner>, st: &mut State) {
    let State {
        core,
        waiting,
        responses,
        ..
    } = st;
    core.dispatch(
        inner.policy,
        || Arc::clone(inner) as Arc<dyn Responder>,
        |id, body, fds| {
            if waiting.contains(&id) {
                responses.insert(id, (body, fds));
            }
        },
    );
}

#[cfg(test)]
mod tests {
    //! The reading hand-over, observed from inside: which thread reads is
    //! internal state, so these tests synchronise on it directly.

    use readyfd_proto::{Message, SessionConfig};

    use super::*;

    const BOUND: Duration = Duration::from_secs(60);

    fn reader_is(ch: &Channel, who: Reader) -> bool {
        ch.inner.lock().reader == who
    }

    #[test]
    fn a_local_close_wakes_the_thread_reading_the_socket() {
        // The peer stays silent: only the close can end the wait.
        let (ours, _peer) = sys::stream_pair().unwrap();
        let ch = Channel::start(ours, Role::Parent, None, ChannelOptions::default()).unwrap();
        std::thread::scope(|s| {
            // The ping's own deadline lies beyond the bound we wait for its
            // end: a close that does not wake it fails the test.
            let (tx, rx) = std::sync::mpsc::channel();
            let ch = &ch;
            s.spawn(move || tx.send(ch.ping(BOUND * 2)));
            // Bounded: a ping that never becomes the reader fails here, not
            // by hanging the test run.
            let deadline = std::time::Instant::now() + BOUND;
            while !reader_is(ch, Reader::Caller) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the ping never became the reader"
                );
                std::thread::yield_now();
            }
            ch.close();
            match rx.recv_timeout(BOUND) {
                Ok(Err(ChannelError::Closed(CloseReason::Local))) => {}
                Ok(other) => panic!("{other:?}"),
                Err(_) => panic!("the close did not wake the waiting thread"),
            }
        });
    }

    /// Answers every request with the length of its body, until the
    /// channel closes.
    fn serve_lengths(ch: &Channel) {
        while let Ok(m) = ch.recv() {
            if let Incoming::Request(r) = m {
                let body: Vec<u8> = r.decode().unwrap();
                r.respond(&(body.len() as u64)).unwrap();
            }
        }
    }

    #[test]
    fn both_sides_writing_8_mib_at_once_do_not_deadlock() {
        // Each requester writes its whole frame itself, blocking while the
        // socket is full: the other side's I/O thread must keep reading
        // meanwhile, or both would wait for room forever.
        const LEN: usize = 8 << 20;
        let (a, b) = sys::stream_pair().unwrap();
        let parent = Channel::start(a, Role::Parent, None, ChannelOptions::default()).unwrap();
        let child = Channel::start(b, Role::Child, None, ChannelOptions::default()).unwrap();
        let body = &vec![7u8; LEN];
        std::thread::scope(|s| {
            let (p, c) = (parent.clone(), child.clone());
            s.spawn(move || serve_lengths(&p));
            s.spawn(move || serve_lengths(&c));
            let (p, c) = (&parent, &child);
            let from_parent = s.spawn(move || p.request_timeout::<_, u64>(body, BOUND));
            let from_child = s.spawn(move || c.request_timeout::<_, u64>(body, BOUND));
            assert_eq!(from_parent.join().unwrap().unwrap(), LEN as u64);
            assert_eq!(from_child.join().unwrap().unwrap(), LEN as u64);
            parent.close();
            child.close();
        });
    }

    /// Answers every request with its own body, raw, and checks that each
    /// notification came with exactly one fd, a pipe holding its body.
    fn echo_bytes(ch: &Channel) {
        while let Ok(m) = ch.recv() {
            match m {
                Incoming::Request(r) => {
                    let body = r.body();
                    r.respond_bytes(&body).unwrap();
                }
                Incoming::Notify(mut n) => {
                    let fds = n.take_fds();
                    assert_eq!(fds.len(), 1, "a notification lost its fd");
                    let mut got = Vec::new();
                    io::Read::read_to_end(
                        &mut std::fs::File::from(fds.into_iter().next().unwrap()),
                        &mut got,
                    )
                    .unwrap();
                    assert_eq!(got, n.body(), "an fd went with another frame");
                }
                _ => {}
            }
        }
    }

    #[test]
    fn both_sides_writing_8_mib_byte_bodies_at_once_do_not_deadlock() {
        // Byte bodies are written from the caller's buffer as far as the
        // socket takes them; the rest is queued and written as the peer
        // reads. Both sides at once, answered with as large a body.
        const LEN: usize = 8 << 20;
        let (a, b) = sys::stream_pair().unwrap();
        let parent = Channel::start(a, Role::Parent, None, ChannelOptions::default()).unwrap();
        let child = Channel::start(b, Role::Child, None, ChannelOptions::default()).unwrap();
        let body: &Vec<u8> = &(0..LEN).map(|i| (i % 251) as u8).collect();
        std::thread::scope(|s| {
            let (p, c) = (parent.clone(), child.clone());
            s.spawn(move || echo_bytes(&p));
            s.spawn(move || echo_bytes(&c));
            let (p, c) = (&parent, &child);
            let from_parent = s.spawn(move || p.request_bytes_timeout(body, BOUND));
            let from_child = s.spawn(move || c.request_bytes_timeout(body, BOUND));
            assert!(from_parent.join().unwrap().unwrap() == body[..]);
            assert!(from_child.join().unwrap().unwrap() == body[..]);
            parent.close();
            child.close();
        });
    }

    #[test]
    fn byte_bodies_and_fds_sent_from_many_threads_keep_their_frames() {
        // Large byte bodies written from the callers' buffers while other
        // threads queue frames with fds: every fd must go with the bytes
        // of its own frame (the peer's session refuses anything else and
        // the channel would close), and every body must come back whole.
        let (a, b) = sys::stream_pair().unwrap();
        let parent = Channel::start(a, Role::Parent, None, ChannelOptions::default()).unwrap();
        let child = Channel::start(b, Role::Child, None, ChannelOptions::default()).unwrap();
        const REQUESTERS: usize = 3;
        let requesting = &std::sync::atomic::AtomicUsize::new(REQUESTERS);
        std::thread::scope(|s| {
            let c = child.clone();
            s.spawn(move || echo_bytes(&c));
            let mut notifiers = Vec::new();
            for t in 0..2u8 {
                let p = parent.clone();
                notifiers.push(s.spawn(move || {
                    let mut i = 0u32;
                    while requesting.load(Ordering::Relaxed) > 0 {
                        let body = format!("thread {t} note {i}").into_bytes();
                        let (r, w) = sys::pipe().unwrap();
                        io::Write::write_all(&mut std::fs::File::from(w), &body).unwrap();
                        p.notify_bytes_with_fds(&body, vec![r]).unwrap();
                        i += 1;
                        if i % 16 == 0 {
                            // The child has taken every notification sent
                            // before its answer: a bound on fds in flight.
                            p.request_bytes_timeout(b"sync", BOUND).unwrap();
                        }
                    }
                }));
            }
            let mut requesters = Vec::new();
            for t in 0..REQUESTERS as u8 {
                let p = parent.clone();
                requesters.push(s.spawn(move || {
                    // The notifiers stop when the requests end, however
                    // they end (a failed one must not leave them looping).
                    struct Done<'a>(&'a std::sync::atomic::AtomicUsize);
                    impl Drop for Done<'_> {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    let _done = Done(requesting);
                    for i in 0..20usize {
                        let len = (3 << 20) + i * 4099 + usize::from(t);
                        let body: Vec<u8> = (0..len).map(|k| (k % 241) as u8 ^ t).collect();
                        let back = p.request_bytes_timeout(&body, BOUND).unwrap();
                        assert!(back == body[..], "thread {t}, request {i}");
                    }
                }));
            }
            let requests: Vec<_> = requesters.into_iter().map(|h| h.join()).collect();
            let notes: Vec<_> = notifiers.into_iter().map(|h| h.join()).collect();
            if requests.iter().chain(&notes).any(|r| r.is_err()) {
                // Unblock the echoing thread before the scope joins it.
                parent.close();
                child.close();
                panic!("a sender failed (see above)");
            }
            // Everything before it was read and checked by the child.
            assert!(parent.request_bytes_timeout(&[1u8; 4096], BOUND).unwrap() == [1u8; 4096][..]);
            assert_eq!(parent.closed(), None);
            parent.close();
            child.close();
        });
    }

    #[test]
    fn after_a_reading_wait_times_out_the_io_thread_reads_again() {
        let (ours, peer) = sys::stream_pair().unwrap();
        let ch = Channel::start(ours, Role::Parent, None, ChannelOptions::default()).unwrap();
        match ch.ping(Duration::from_millis(20)) {
            Err(ChannelError::Timeout(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(reader_is(&ch, Reader::Io));
        // Nobody waits on our side now: the peer's Ping is answered by the
        // I/O thread, or not at all.
        sys::set_nonblocking(peer.as_fd(), false).unwrap();
        let mut peer = std::os::unix::net::UnixStream::from(peer);
        peer.set_read_timeout(Some(BOUND)).unwrap();
        let mut session = Session::new(Role::Child, 1, SessionConfig::default());
        session.send_hello();
        let id = session.send_request(RequestBody::Ping).unwrap();
        let mut out = Vec::new();
        while session.poll_transmit(&mut out) {}
        io::Write::write_all(&mut peer, &out).unwrap();
        let mut buf = BytesMut::new();
        let pong = loop {
            let mut chunk = [0u8; 4096];
            let n = io::Read::read(&mut peer, &mut chunk).unwrap();
            assert!(n > 0, "the channel closed instead of answering");
            buf.extend_from_slice(&chunk[..n]);
            session.handle_input(&mut buf).unwrap();
            if let Some(body) = std::iter::from_fn(|| session.poll_event()).find_map(|m| match m {
                Message::Response { id: got, body } if got == id => Some(body),
                _ => None,
            }) {
                break body;
            }
        };
        assert_eq!(pong, ResponseBody::Ok);
    }
}
