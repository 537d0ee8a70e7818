//! The direct channel: a native channel whose I/O the application's own
//! thread does, with no background reader.
//!
//! A [`Channel`](crate::Channel) is served by a shared I/O thread, so that
//! `Ping` is answered and `Shutdown` seen whatever the application does,
//! and so that any number of threads may use it. That costs, per message,
//! a `poll` before the `read` and the hand-over of the socket between the
//! waiting thread and the I/O thread (two `epoll_ctl`): 10 system calls
//! per small round trip where a plain blocking exchange makes 4. A
//! [`DirectChannel`] makes those 4: a request is one `sendmsg` and one
//! blocking `recvmsg` on the calling thread.
//!
//! It drives the same session and the same channel core as the blocking
//! and the tokio channel ([`crate::core`]), so what a message means, the
//! precedence of close reasons and the bounds on what the peer may make
//! us hold are the same; only who does the I/O, and when, differs.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nix::libc;
use nix::poll::{PollFd, PollFlags};
use readyfd_proto::{Hello, Ready, RequestBody, ResponseBody, Role, Session, SessionError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::channel::with_timeout;
use crate::core::{ChannelOptions, Core, ReadEnd, ReadStep, decode_response, response_bytes};
use crate::error::{ChannelError, CloseReason};
use crate::incoming::{Incoming, Responder};
use crate::sys;

/// How long a [`DirectChannel`] blocks in one read before it looks at the
/// clock and at the peer process: a request or `recv` without a deadline
/// notices a peer that died while another process keeps its end of the
/// socket open (so no end of stream comes) within this time. A read that
/// gets data returns at once, whatever the tick.
pub const DIRECT_TICK: Duration = Duration::from_millis(100);

/// How much one read asks for (as the blocking channel).
const READ_CHUNK: usize = 64 * 1024;

/// How long dropping a direct channel waits for queued bytes to be
/// written (as the blocking channel).
const DRAIN_ON_DROP: Duration = Duration::from_secs(2);

/// What a [`Channel`](crate::Channel) hands over when it becomes direct.
pub(crate) struct DirectParts {
    /// The socket (a copy; the channel's own closes with it).
    pub(crate) sock: OwnedFd,
    /// The pidfd of the process the channel watched, for a parent: the
    /// spawned child, or the process that said `Ready` after a wrapper.
    pub(crate) pidfd: Option<OwnedFd>,
    /// The session and everything the peer sent.
    pub(crate) core: Core,
    /// Bytes taken from the session and not all written yet.
    pub(crate) out: Vec<u8>,
    /// How many at the end of `out` are not written.
    pub(crate) unsent: usize,
    /// Bytes read and not decoded yet (part of a frame).
    pub(crate) rbuf: BytesMut,
    /// The channel's options.
    pub(crate) options: ChannelOptions,
}

/// What the direct channel shares with the requests it hands out (they
/// answer through it, from any thread).
struct Shared {
    sock: OwnedFd,
    st: Mutex<Out>,
}

/// The channel's state, under the lock: no system call that can block is
/// ever made while it is held (writes pass `MSG_DONTWAIT`).
struct Out {
    core: Core,
    out: Vec<u8>,
    unsent: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Out> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Out {
    /// Bytes queued for the peer and not written.
    fn pending(&self) -> usize {
        self.core.session.transmit_len() + self.unsent
    }

    /// Writes what is queued as far as the socket takes it now, never
    /// waiting; the rest stays queued.
    fn write_now(&mut self, sock: BorrowedFd<'_>) {
        loop {
            if self.core.write_failed.is_some() {
                self.out.clear();
                let _ = self.core.session.poll_transmit(&mut self.out);
                self.out.clear();
                self.unsent = 0;
                self.core.discard_tx_fds();
                return;
            }
            if self.unsent == 0 {
                self.out.clear();
                if !self.core.session.poll_transmit(&mut self.out) {
                    if self.core.goodbye_written(0) {
                        sys::shut_down_write(sock);
                    }
                    return;
                }
                self.unsent = self.out.len();
                if self.unsent == 0 {
                    return;
                }
            }
            let pos = self.out.len() - self.unsent;
            let plan = self.core.plan_write(self.unsent);
            let chunk = &self.out[pos..pos + plan.len];
            let res = match &plan.fds {
                None => sys::send_nonblocking(sock, chunk),
                Some(f) => sys::send_with_fds(sock, chunk, &f.fds),
            };
            self.core.wrote(*res.as_ref().unwrap_or(&0), plan.fds);
            match res {
                Ok(n) => self.unsent -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => self.core.write_failed = Some(crate::core::write_failure(e)),
            }
        }
    }

    /// Queues a frame with `send` (told how many `fds` go with it) and
    /// writes what the socket takes now.
    fn queue<R>(
        &mut self,
        sock: BorrowedFd<'_>,
        fds: Vec<OwnedFd>,
        send: impl FnOnce(&mut Session, usize) -> Result<R, SessionError>,
    ) -> Result<R, ChannelError> {
        if let Some(r) = self.core.send_blocker() {
            return Err(ChannelError::Closed(r));
        }
        let unsent = self.unsent;
        let r = self.core.queue_with_fds(unsent, fds, send)?;
        self.write_now(sock);
        Ok(r)
    }
}

impl Responder for Shared {
    /// An answer of the application (from any thread): queued and written
    /// as far as the socket takes it at once; what does not fit goes with
    /// the direct channel's next call.
    fn answer(
        &self,
        fds: Vec<OwnedFd>,
        f: &mut dyn FnMut(&mut Session, usize) -> Result<(), SessionError>,
    ) -> Result<(), ChannelError> {
        self.lock().queue(self.sock.as_fd(), fds, f)
    }

    /// A raw answer: copied into the queue (a direct channel's answers
    /// are written by whichever call comes next, not always at once, so
    /// the body cannot be written from the caller's buffer).
    fn answer_bytes(&self, id: u64, body: &[u8], fds: Vec<OwnedFd>) -> Result<(), ChannelError> {
        self.lock()
            .queue(self.sock.as_fd(), fds, |s: &mut Session, n| {
                s.send_app_response_bytes(id, body, n)
            })
    }
}

/// Why a [`DirectChannel::wait_for`] ended without what it waited for.
enum Waited {
    /// The deadline passed.
    Timeout,
    /// Reading is held back (the queue for `recv` is full) and nothing
    /// else can move: only the application can free it.
    Backlog,
}

/// The error of a request that cannot be read to its answer because the
/// peer's messages fill the queue for `recv`.
const BACKLOG: &str = "the peer's requests and notifications fill the queue for recv \
     (ChannelOptions::max_incoming): take them with recv or try_recv, then ask again";

/// A native channel driven by the application's own thread: no
/// background reader, each call does its I/O itself.
///
/// Obtained from a channel that is already set up, with everything it had
/// received (queued requests, notifications, their fds) and its session
/// state: [`ReadyChild::take_direct`](crate::ReadyChild::take_direct) on
/// the parent side (after [`wait_ready`](crate::ReadyChild::wait_ready)),
/// [`Parent::into_direct`](crate::Parent::into_direct) on the child side,
/// or [`Channel::into_direct`](crate::Channel::into_direct). The peer sees
/// no difference: the wire is the same.
///
/// A [`request`](Self::request) is one `sendmsg` and, in the common case,
/// one blocking `recvmsg` on the calling thread, as a plain blocking socket
/// exchange: no other thread is woken and no `poll` comes first. When the
/// socket is full, the request waits in `poll` for room and reads
/// meanwhile, so two peers writing large frames at each other never
/// deadlock. Whatever the peer sends while a call waits is handled there:
/// `Ping` is answered, answers are matched to the request, `Goodbye` ends
/// the channel, requests and notifications are queued for
/// [`recv`](Self::recv) (bounded as the background channel's are, by
/// [`ChannelOptions`]), and `Shutdown` follows the
/// [`ShutdownPolicy`](crate::ShutdownPolicy).
///
/// # The trade-off
/// Nothing happens between calls. While the application is not in a call
/// of this channel, nobody reads: the peer's `Ping` is answered, its
/// `Shutdown` seen (and, under the default policy, `SIGTERM` raised), and
/// its death noticed only at the next call, and a peer that sends while
/// nobody reads is held back by the socket buffer (its sends wait, or its
/// `notify` queues on its side). An answer the application gives through
/// [`IncomingRequest::respond`](crate::IncomingRequest::respond) is written
/// at once as far as the socket takes it; the rest goes with this channel's
/// next call. A call without a deadline blocks as long as the peer is
/// there; it wakes every [`DIRECT_TICK`](crate::limits::DIRECT_TICK) to
/// look at the clock and, on the parent side, at the child process, so a
/// child that died while a grandchild keeps the socket open ends the wait
/// with [`ChannelError::Closed`] within a tick. Calls take `&mut self`:
/// one thread at a time (the channel is `Send`, not shared).
///
/// Requests the application holds answer through the channel from any
/// thread. Dropping the direct channel answers the requests still queued
/// with [`RemoteErrorKind::Dropped`](crate::RemoteErrorKind::Dropped), says
/// `Goodbye`, gives queued bytes up to two seconds to go out, and shuts the
/// socket down.
///
/// # Example
/// ```no_run
/// use std::process::Command;
/// use std::time::Duration;
/// use readyfd::ReadyCommand;
///
/// let mut child = ReadyCommand::new(Command::new("my-server")).spawn()?;
/// child.wait_ready(Duration::from_secs(30))?;
/// let mut direct = child.take_direct()?;
/// let sum: u64 = direct.request(&(2u64, 3u64))?;
/// direct.shutdown(Duration::from_secs(5))?;
/// child.stop(Duration::from_secs(5))?;
/// # let _ = sum;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DirectChannel {
    shared: Arc<Shared>,
    /// The process whose exit ends the channel (parent side): the child,
    /// or the process that said `Ready` for it.
    pidfd: Option<OwnedFd>,
    /// Bytes read and not yet decoded; only the calling thread reads.
    rbuf: BytesMut,
    /// The request waiting for its answer (at most one: calls take
    /// `&mut self`), and its answer once read.
    waiting: Option<u64>,
    answer: Option<(ResponseBody, Vec<OwnedFd>)>,
    options: ChannelOptions,
    /// The receive timeout set on the socket now.
    rcvtimeo: Duration,
    /// This channel has handled the watched process's exit ([`on_exit`](Self::on_exit)).
    /// Its own flag, not the core's `child_exited`: the background channel
    /// may have seen the exit before the switch, without ending the read
    /// side, and the direct channel must still end it.
    exit_handled: bool,
}

impl fmt::Debug for DirectChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.shared.lock();
        f.debug_struct("DirectChannel")
            .field("role", &o.core.session.role())
            .field("peer", &o.core.peer.hello)
            .field("ready", &o.core.peer.ready.is_some())
            .finish_non_exhaustive()
    }
}

impl DirectChannel {
    /// Takes over what a channel hands over: its queued requests answer
    /// through this channel from now on, and the socket is made blocking
    /// with a receive timeout of one tick.
    pub(crate) fn from_parts(p: DirectParts) -> DirectChannel {
        let setup = sys::set_nonblocking(p.sock.as_fd(), false)
            .and_then(|()| sys::set_recv_timeout(p.sock.as_fd(), DIRECT_TICK));
        let shared = Arc::new(Shared {
            sock: p.sock,
            st: Mutex::new(Out {
                core: p.core,
                out: p.out,
                unsent: p.unsent,
            }),
        });
        {
            let mut o = shared.lock();
            let responder = Arc::clone(&shared) as Arc<dyn Responder>;
            // The old channel's last references go here (its socket copy
            // and pidfd close with them).
            for m in o.core.peer.incoming.iter_mut() {
                match m {
                    Incoming::Request(r) => r.retarget(Arc::clone(&responder)),
                    Incoming::Shutdown(s) => s.retarget(Arc::clone(&responder)),
                    _ => {}
                }
            }
            if let Err(e) = setup {
                // Without a blocking socket and its tick, reads would spin
                // or never wake: the channel ends with the reason.
                if matches!(o.core.read, ReadEnd::Open) {
                    o.core.read = ReadEnd::Failed(CloseReason::Io(Arc::new(e)));
                }
            }
        }
        DirectChannel {
            shared,
            pidfd: p.pidfd,
            rbuf: p.rbuf,
            waiting: None,
            answer: None,
            options: p.options,
            rcvtimeo: DIRECT_TICK,
            exit_handled: false,
        }
    }

    fn sock(&self) -> BorrowedFd<'_> {
        self.shared.sock.as_fd()
    }

    /// The peer's `Hello` (its pid and protocol version), once it arrived.
    pub fn peer(&self) -> Option<Hello> {
        self.shared.lock().core.peer.hello.clone()
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.shared.lock().core.session.role()
    }

    /// The last status line the child sent (parent side).
    pub fn last_status(&self) -> Option<String> {
        self.shared.lock().core.peer.last_status.clone()
    }

    /// Why the channel is closed, or `None` while it is open (as far as
    /// this side has read: nothing is read between calls).
    pub fn closed(&self) -> Option<CloseReason> {
        self.shared.lock().core.read_blocker()
    }

    /// Parent: takes the file descriptors the child sent with its `Ready`,
    /// as [`Channel::take_ready_fds`](crate::Channel::take_ready_fds).
    pub fn take_ready_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.shared.lock().core.peer.ready_fds)
    }

    // ---- sending ----------------------------------------------------------

    /// Queues a frame and writes it whole before returning (reading
    /// meanwhile, so a peer that writes to us at the same time is not
    /// deadlocked). When the peer's messages fill the queue for `recv`
    /// before it is written, the rest waits for the next call.
    fn send<R>(
        &mut self,
        fds: Vec<OwnedFd>,
        send: impl FnOnce(&mut Session, usize) -> Result<R, SessionError>,
    ) -> Result<R, ChannelError> {
        let r = self.shared.lock().queue(self.sock(), fds, send)?;
        self.drain_out(None);
        Ok(r)
    }

    /// Waits until everything queued is written, writing failed, the
    /// watched process has exited (whoever still holds its end of the
    /// socket may never read), or `deadline`.
    fn drain_out(&mut self, deadline: Option<Instant>) {
        let _ = self.wait_for(deadline, |me| {
            let o = me.shared.lock();
            (o.pending() == 0 || o.core.write_failed.is_some() || me.exit_handled).then_some(())
        });
    }

    /// Child: announces readiness, as [`Channel::ready`](crate::Channel::ready).
    ///
    /// # Errors
    /// [`ChannelError::NotAllowed`] from a parent or a second time;
    /// [`ChannelError::Closed`] when the parent has gone.
    pub fn ready(&mut self, ready: &Ready) -> Result<(), ChannelError> {
        self.ready_with_fds(ready, Vec::new())
    }

    /// Child: announces readiness with `fds`, as
    /// [`Channel::ready_with_fds`](crate::Channel::ready_with_fds).
    ///
    /// # Errors
    /// As [`ready`](Self::ready), and [`ChannelError::Encode`] for more
    /// than 253 fds. On any error the fds are closed.
    pub fn ready_with_fds(&mut self, ready: &Ready, fds: Vec<OwnedFd>) -> Result<(), ChannelError> {
        let ready = ready.clone().with_sender_pid(std::process::id());
        self.send(fds, |s, n| s.send_ready_with_fds(&ready, n))
    }

    /// Child: sends a status line, as [`Channel::status`](crate::Channel::status).
    ///
    /// # Errors
    /// As [`ready`](Self::ready).
    pub fn status(&mut self, text: &str) -> Result<(), ChannelError> {
        self.send(Vec::new(), |s, _| s.send_status(text))
    }

    /// Sends a one-way application message, written whole before this
    /// returns.
    ///
    /// # Errors
    /// [`ChannelError::Encode`] when it does not fit the peer's maximum
    /// frame; [`ChannelError::Closed`] when the channel is closed.
    pub fn notify<T: Serialize + ?Sized>(&mut self, body: &T) -> Result<(), ChannelError> {
        self.send(Vec::new(), |s, _| s.send_notify(body))
    }

    /// [`notify`](Self::notify) with `fds`, as
    /// [`Channel::notify_with_fds`](crate::Channel::notify_with_fds).
    ///
    /// # Errors
    /// As [`notify`](Self::notify), and [`ChannelError::Encode`] for more
    /// than 253 fds. On any error the fds are closed.
    pub fn notify_with_fds<T: Serialize + ?Sized>(
        &mut self,
        body: &T,
        fds: Vec<OwnedFd>,
    ) -> Result<(), ChannelError> {
        self.send(fds, |s, n| s.send_notify_with_fds(body, n))
    }

    /// A one-way message whose body is `body` as it is, as
    /// [`Channel::notify_bytes`](crate::Channel::notify_bytes).
    ///
    /// # Errors
    /// As [`notify`](Self::notify).
    pub fn notify_bytes(&mut self, body: &[u8]) -> Result<(), ChannelError> {
        self.notify_bytes_with_fds(body, Vec::new())
    }

    /// [`notify_bytes`](Self::notify_bytes) with `fds`.
    ///
    /// # Errors
    /// As [`notify_with_fds`](Self::notify_with_fds).
    pub fn notify_bytes_with_fds(
        &mut self,
        body: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), ChannelError> {
        self.send(fds, |s, n| s.send_notify_bytes(body, n))
    }

    /// Sends an application request and waits for its answer, decoded as
    /// `Resp`, on this thread: one `sendmsg`, then one blocking `recvmsg`
    /// in the common case. Waits as long as the peer is there.
    ///
    /// # Errors
    /// [`ChannelError::Remote`] when the peer failed it,
    /// [`ChannelError::Decode`] when the answer is not a `Resp`,
    /// [`ChannelError::Closed`] when the peer goes away first (the child
    /// process exiting counts, on the parent side, even while another
    /// process keeps the socket open), [`ChannelError::NotAllowed`] when
    /// the peer's requests and notifications fill the queue for
    /// [`recv`](Self::recv) before the answer could be read (take them,
    /// then ask again; the late answer is discarded).
    pub fn request<Req, Resp>(&mut self, req: &Req) -> Result<Resp, ChannelError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let (body, _fds) = self.call(None, Vec::new(), |s, _| s.send_app_request(req))?;
        decode_response(body)
    }

    /// [`request`](Self::request), handing the peer `fds` and returning the
    /// fds of its answer, as
    /// [`Channel::request_with_fds`](crate::Channel::request_with_fds).
    ///
    /// # Errors
    /// As [`request`](Self::request), and [`ChannelError::Encode`] for more
    /// than 253 fds. On any error the fds given are closed.
    pub fn request_with_fds<Req, Resp>(
        &mut self,
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
        &mut self,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, ChannelError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let deadline = Some(sys::deadline_after(timeout));
        let (body, _fds) = self
            .call(deadline, Vec::new(), |s, _| s.send_app_request(req))
            .map_err(|e| with_timeout(e, timeout))?;
        decode_response(body)
    }

    /// A request whose body is `body` as it is, answered with the raw
    /// answer body, as [`Channel::request_bytes`](crate::Channel::request_bytes).
    ///
    /// # Errors
    /// As [`request`](Self::request) (no `Decode`).
    pub fn request_bytes(&mut self, body: &[u8]) -> Result<Bytes, ChannelError> {
        let (body, _fds) = self.call(None, Vec::new(), |s, _| s.send_app_request_bytes(body, 0))?;
        response_bytes(body)
    }

    /// [`request_bytes`](Self::request_bytes) with fds both ways.
    ///
    /// # Errors
    /// As [`request_with_fds`](Self::request_with_fds).
    pub fn request_bytes_with_fds(
        &mut self,
        body: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(Bytes, Vec<OwnedFd>), ChannelError> {
        let (body, fds) = self.call(None, fds, |s, n| s.send_app_request_bytes(body, n))?;
        Ok((response_bytes(body)?, fds))
    }

    /// [`request_bytes`](Self::request_bytes) with a bound.
    ///
    /// # Errors
    /// As [`request_timeout`](Self::request_timeout).
    pub fn request_bytes_timeout(
        &mut self,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, ChannelError> {
        let deadline = Some(sys::deadline_after(timeout));
        let (body, _fds) = self
            .call(deadline, Vec::new(), |s, _| {
                s.send_app_request_bytes(body, 0)
            })
            .map_err(|e| with_timeout(e, timeout))?;
        response_bytes(body)
    }

    /// Sends `Ping` and returns the round-trip time.
    ///
    /// # Errors
    /// [`ChannelError::Closed`] or [`ChannelError::Timeout`].
    pub fn ping(&mut self, timeout: Duration) -> Result<Duration, ChannelError> {
        let t0 = Instant::now();
        self.call(Some(sys::deadline_after(timeout)), Vec::new(), |s, _| {
            s.send_request(RequestBody::Ping)
        })
        .map_err(|e| with_timeout(e, timeout))?;
        Ok(t0.elapsed())
    }

    /// Parent: asks the child to stop within `grace` and waits up to
    /// `grace` for its acknowledgement (not for its exit), as
    /// [`Channel::shutdown`](crate::Channel::shutdown). Then
    /// [`ReadyChild::stop`](crate::ReadyChild::stop) waits for the exit
    /// (and signals a child that does not go).
    ///
    /// # Errors
    /// [`ChannelError::NotAllowed`] from a child; [`ChannelError::Timeout`]
    /// when no acknowledgement came; [`ChannelError::Closed`].
    pub fn shutdown(&mut self, grace: Duration) -> Result<(), ChannelError> {
        let grace_ms = Some(grace.as_millis().min(u128::from(u64::MAX)) as u64);
        self.call(Some(sys::deadline_after(grace)), Vec::new(), |s, _| {
            s.send_request(RequestBody::Shutdown { grace_ms })
        })
        .map_err(|e| with_timeout(e, grace))?;
        Ok(())
    }

    fn call(
        &mut self,
        deadline: Option<Instant>,
        fds: Vec<OwnedFd>,
        send: impl FnOnce(&mut Session, usize) -> Result<u64, SessionError>,
    ) -> Result<(ResponseBody, Vec<OwnedFd>), ChannelError> {
        let id = self.shared.lock().queue(self.sock(), fds, send)?;
        self.waiting = Some(id);
        self.answer = None;
        let r = self.wait_for(deadline, |me| {
            if let Some(a) = me.answer.take() {
                return Some(Ok(a));
            }
            me.shared
                .lock()
                .core
                .read_blocker()
                .map(|r| Err(ChannelError::Closed(r)))
        });
        self.waiting = None;
        match r {
            Ok(Ok((ResponseBody::Error(e), _))) => Err(ChannelError::Remote(e)),
            Ok(answer) => answer,
            Err(w) => {
                self.shared.lock().core.session.abandon_request(id);
                Err(match w {
                    Waited::Timeout => ChannelError::Timeout(Duration::ZERO),
                    Waited::Backlog => ChannelError::NotAllowed(BACKLOG),
                })
            }
        }
    }

    // ---- receiving --------------------------------------------------------

    /// Waits for the peer's next request, notification or (child, with
    /// [`ShutdownPolicy::Deliver`](crate::ShutdownPolicy::Deliver))
    /// shutdown, reading on this thread.
    ///
    /// # Errors
    /// [`ChannelError::Closed`] once the peer has gone and the queue is
    /// empty.
    pub fn recv(&mut self) -> Result<Incoming, ChannelError> {
        self.recv_until(None)?
            .ok_or(ChannelError::Timeout(Duration::ZERO))
    }

    /// [`recv`](Self::recv), giving up after `timeout` with `Ok(None)`.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Incoming>, ChannelError> {
        self.recv_until(Some(sys::deadline_after(timeout)))
    }

    /// Takes the peer's next request or notification if one is queued or
    /// already readable on the socket, without waiting: `Ok(None)` when
    /// there is none yet.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Option<Incoming>, ChannelError> {
        if let Some(r) = self.next_incoming() {
            return r.map(Some);
        }
        self.shared.lock().write_now(self.sock());
        for _ in 0..16 {
            if !self.may_read(&self.shared.lock()) {
                break;
            }
            if self.read_once(false) != ReadStep::Data {
                break;
            }
        }
        self.next_incoming().transpose()
    }

    /// What is queued for `recv`, or why nothing will come.
    fn next_incoming(&mut self) -> Option<Result<Incoming, ChannelError>> {
        let mut o = self.shared.lock();
        if let Some(m) = o.core.peer.incoming.pop() {
            return Some(Ok(m));
        }
        o.core.read_blocker().map(|r| Err(ChannelError::Closed(r)))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<Option<Incoming>, ChannelError> {
        match self.wait_for(deadline, Self::next_incoming) {
            Ok(r) => r.map(Some),
            Err(Waited::Timeout) => Ok(None),
            // The queue was empty when looked at: not reachable, but a
            // clear error all the same.
            Err(Waited::Backlog) => Err(ChannelError::NotAllowed(BACKLOG)),
        }
    }

    /// Says `Goodbye` (written as far as the socket takes it now) and stops
    /// sending; later calls fail with [`CloseReason::Local`]. Dropping the
    /// channel does this too, and waits a bounded time for the bytes to
    /// go.
    pub fn close(&mut self) {
        let mut o = self.shared.lock();
        if o.core.close() {
            o.write_now(self.shared.sock.as_fd());
        }
    }

    // ---- the I/O --------------------------------------------------------

    /// Whether input may be read now: the read side is open and neither
    /// back-pressure limit holds reading up (the background channel's
    /// rule).
    fn may_read(&self, o: &Out) -> bool {
        o.core.may_read(&self.options, o.pending())
    }

    /// Reads once, blocking up to the socket's receive timeout or not at
    /// all, hands the bytes to the session, routes what it decoded, and
    /// writes what it produced (pongs, acknowledgements).
    fn read_once(&mut self, block: bool) -> ReadStep {
        let flags = if block { 0 } else { libc::MSG_DONTWAIT };
        let r = sys::recv_stream_flags(self.shared.sock.as_fd(), &mut self.rbuf, READ_CHUNK, flags);
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            return ReadStep::Empty;
        }
        let shared = &self.shared;
        let mut o = shared.lock();
        let step = o.core.on_read(r, &mut self.rbuf);
        let (waiting, answer) = (self.waiting, &mut self.answer);
        o.core.dispatch(
            self.options.shutdown,
            || Arc::clone(shared) as Arc<dyn Responder>,
            |id, body, fds| {
                if Some(id) == waiting {
                    *answer = Some((body, fds));
                }
            },
        );
        o.write_now(shared.sock.as_fd());
        let sigterm = std::mem::take(&mut o.core.peer.raise_sigterm);
        drop(o);
        if sigterm {
            // The acknowledgement goes out first (bounded), then SIGTERM,
            // as the background channel does.
            self.drain_out(Some(Instant::now() + Duration::from_secs(1)));
            let _ =
                nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM);
        }
        step
    }

    /// The watched process exited: take what it wrote before (a `Ready`,
    /// an answer), then end the channel as the background channel does
    /// (PROTOCOL.md §6.3): our end is shut down both ways, so that reading
    /// gets what is still queued in the socket and then the end of stream,
    /// even while another process keeps the peer's end open. Whoever holds
    /// it now is not the peer. When the `recv` queue is full, what is left
    /// in the socket waits there until the application takes messages, and
    /// the end follows it.
    fn on_exit(&mut self) {
        self.exit_handled = true;
        for _ in 0..64 {
            if !self.may_read(&self.shared.lock()) {
                break;
            }
            if self.read_once(false) != ReadStep::Data {
                break;
            }
        }
        {
            let mut o = self.shared.lock();
            // A direct channel exists only after readiness: the process
            // watched is the one that said `Ready`, the peer.
            if !o.core.on_exit() {
                o.core.watch_peer(true);
            }
        }
        sys::shut_down_after_exit(self.sock());
    }

    /// Sets the socket's receive timeout (one system call, only when it
    /// changes).
    fn set_rcvtimeo(&mut self, t: Duration) {
        // Whole milliseconds near a deadline: not a call per wait.
        let t = if t >= DIRECT_TICK {
            DIRECT_TICK
        } else {
            Duration::from_millis(t.as_millis() as u64 + 1)
        };
        if t != self.rcvtimeo && sys::set_recv_timeout(self.sock(), t).is_ok() {
            self.rcvtimeo = t;
        }
    }

    /// Does the channel's I/O until `check` returns something, or
    /// `deadline` passes.
    ///
    /// With nothing to write, it blocks in `recvmsg` (up to a tick, or to
    /// the deadline when that is nearer) and no `poll` comes first; with
    /// bytes to write, it waits in `poll` for room or input and does both.
    /// At each tick it looks whether the watched process has exited.
    fn wait_for<T>(
        &mut self,
        deadline: Option<Instant>,
        mut check: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<T, Waited> {
        loop {
            if let Some(t) = check(self) {
                return Ok(t);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(Waited::Timeout);
            }
            let tick_end = match deadline {
                Some(d) => d.min(now + DIRECT_TICK),
                None => now + DIRECT_TICK,
            };
            let (pending, may_read) = {
                let o = self.shared.lock();
                if matches!(o.core.read, ReadEnd::Open)
                    && self.options.queue_full(&o.core.peer.incoming)
                {
                    // Nothing can be read until the application takes
                    // what is queued, which it cannot while in this call.
                    return Err(Waited::Backlog);
                }
                (o.pending() > 0, self.may_read(&o))
            };
            if !pending && !may_read {
                let o = self.shared.lock();
                if matches!(o.core.read, ReadEnd::Open) {
                    return Err(Waited::Backlog);
                }
                // The read side is over and `check` did not care: nothing
                // more will come.
                drop(o);
                return match deadline {
                    Some(_) => Err(Waited::Timeout),
                    None => Err(Waited::Backlog),
                };
            }
            if !pending {
                self.set_rcvtimeo(tick_end.saturating_duration_since(now));
                if self.read_once(true) == ReadStep::Empty {
                    self.on_tick();
                }
                continue;
            }
            let mut sock_events = PollFlags::POLLOUT;
            if may_read {
                sock_events |= PollFlags::POLLIN;
            }
            let (sock_ev, exited) = {
                let sock = self.shared.sock.as_fd();
                let mut fds = [
                    PollFd::new(sock, sock_events),
                    match &self.pidfd {
                        Some(p) => PollFd::new(p.as_fd(), PollFlags::POLLIN),
                        None => PollFd::new(sock, PollFlags::empty()),
                    },
                ];
                let n = if self.pidfd.is_some() { 2 } else { 1 };
                if let Err(e) = sys::poll_until(&mut fds[..n], Some(tick_end)) {
                    // The channel cannot be driven any more, either way.
                    let e = CloseReason::Io(Arc::new(e));
                    let mut o = self.shared.lock();
                    if matches!(o.core.read, ReadEnd::Open) {
                        o.core.read = ReadEnd::Failed(e.clone());
                    }
                    o.core.write_failed.get_or_insert(e);
                    continue;
                }
                let ev = |i: usize| {
                    fds.get(i)
                        .and_then(|f| f.revents())
                        .unwrap_or(PollFlags::empty())
                };
                (ev(0), n == 2 && !ev(1).is_empty())
            };
            if sock_ev.intersects(PollFlags::POLLOUT | PollFlags::POLLERR | PollFlags::POLLHUP) {
                self.shared.lock().write_now(self.sock());
            }
            if may_read
                && sock_ev.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP)
            {
                self.read_once(false);
            }
            if exited && !self.exit_handled {
                self.on_exit();
            }
        }
    }

    /// A blocking read saw nothing for a tick: has the watched process
    /// exited?
    fn on_tick(&mut self) {
        let exited = match &self.pidfd {
            Some(p) => !self.exit_handled && sys::pidfd_exited(p.as_fd()),
            None => false,
        };
        if exited {
            self.on_exit();
        }
    }
}

impl Drop for DirectChannel {
    fn drop(&mut self) {
        // Requests nobody took are answered `Dropped` before our Goodbye
        // (outside the lock: dropping one answers through it).
        let unconsumed = self.shared.lock().core.peer.incoming.take();
        drop(unconsumed);
        self.close();
        self.drain_out(Some(Instant::now() + DRAIN_ON_DROP));
        // Requests the application still holds keep `shared`, not the
        // connection: their answers fail with `Closed`.
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&self.shared.sock),
            nix::sys::socket::Shutdown::Both,
        );
        let late = self.shared.lock().core.peer.incoming.take();
        drop(late);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::channel::Channel;
    use crate::error::DirectError;

    const BOUND: Duration = Duration::from_secs(60);

    fn assert_send<T: Send>() {}

    #[test]
    fn a_direct_channel_is_send() {
        assert_send::<DirectChannel>();
    }

    #[test]
    fn a_request_with_a_deadline_nearer_than_a_tick_ends_at_it() {
        // The peer stays silent: only the deadline ends the wait, and it
        // must not wait out a whole tick.
        let (ours, _peer) = sys::stream_pair().unwrap();
        let ch = Channel::start(ours, Role::Parent, None, ChannelOptions::default()).unwrap();
        let mut d = ch.into_direct().unwrap();
        let timeout = Duration::from_millis(30);
        let t0 = Instant::now();
        match d.request_timeout::<_, u64>(&1u64, timeout) {
            Err(ChannelError::Timeout(t)) => assert_eq!(t, timeout),
            other => panic!("{other:?}"),
        }
        let took = t0.elapsed();
        assert!(took >= timeout, "{took:?}");
        assert!(took < DIRECT_TICK, "waited {took:?}, a whole tick");
        // A later call without a deadline has its tick back: the channel
        // is still usable (and the timed-out request was abandoned).
        assert!(d.closed().is_none());
    }

    #[test]
    fn a_request_behind_a_full_recv_queue_is_a_typed_error_not_a_hang() {
        // The peer sends more notifications than the queue for `recv`
        // holds, then nothing: the answer can never be read while they
        // wait, and only the application can take them.
        let (ours, peer) = sys::stream_pair().unwrap();
        let opts = ChannelOptions::default().max_incoming(4);
        let ch = Channel::start(ours, Role::Parent, None, opts).unwrap();
        let mut d = ch.into_direct().unwrap();
        let mut session = Session::new(Role::Child, 1, crate::SessionConfig::default());
        for i in 0..10u8 {
            session.send_notify_bytes(&[i], 0).unwrap();
        }
        let mut out = Vec::new();
        while session.poll_transmit(&mut out) {}
        sys::set_nonblocking(peer.as_fd(), false).unwrap();
        let mut peer = std::os::unix::net::UnixStream::from(peer);
        std::io::Write::write_all(&mut peer, &out).unwrap();
        match d.request_timeout::<_, u64>(&1u64, BOUND) {
            Err(ChannelError::NotAllowed(m)) => assert!(m.contains("recv"), "{m}"),
            other => panic!("{other:?}"),
        }
        // All ten come out, in order, as the queue makes room.
        for i in 0..10u8 {
            match d.recv_timeout(BOUND).unwrap() {
                Some(Incoming::Notify(n)) => assert_eq!(n.bytes(), [i]),
                other => panic!("{i}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_request_in_flight_refuses_the_switch_and_changes_nothing() {
        let (ours, peer) = sys::stream_pair().unwrap();
        sys::set_nonblocking(peer.as_fd(), false).unwrap();
        let ch = Channel::start(ours, Role::Parent, None, ChannelOptions::default()).unwrap();
        let mut peer = std::os::unix::net::UnixStream::from(peer);
        peer.set_read_timeout(Some(BOUND)).unwrap();
        let mut session = Session::new(Role::Child, 1, crate::SessionConfig::default());
        session.send_hello();
        // Our Hello first: requests wait for the peer's (its frame limit).
        let mut out = Vec::new();
        while session.poll_transmit(&mut out) {}
        std::io::Write::write_all(&mut peer, &out).unwrap();
        std::thread::scope(|s| {
            let handle = ch.clone();
            let pinger = s.spawn(move || handle.ping(BOUND));
            // The Ping on the wire means the request is in flight. The
            // peer's session answers it by itself: its Pong is queued.
            let mut buf = BytesMut::new();
            while session.transmit_len() == 0 {
                let mut chunk = [0u8; 256];
                let n = peer.read(&mut chunk).unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
                session.handle_input(&mut buf).unwrap();
                while session.poll_event().is_some() {}
            }
            let e = ch.into_direct().unwrap_err();
            assert_eq!(e.error, DirectError::RequestInFlight);
            let ch = e.into_inner();
            assert!(ch.is_owner());
            // Still driven by the background channel: the answer arrives.
            let mut out = Vec::new();
            while session.poll_transmit(&mut out) {}
            std::io::Write::write_all(&mut peer, &out).unwrap();
            assert!(pinger.join().unwrap().is_ok());
            // Nothing in flight, no handle left: now it switches.
            assert!(ch.into_direct().is_ok());
        });
    }
}
