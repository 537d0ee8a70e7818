//! systemd's `sd_notify` protocol, parent side: a `NOTIFY_SOCKET` receiver
//! that judges a child the way systemd's manager judges a `Type=notify`
//! service.
//!
//! # The socket
//! An AF_UNIX datagram socket (close-on-exec, non-blocking, `SO_PASSCRED`)
//! bound as `notify` in a fresh directory made by `mkdtemp(3)` (random
//! name, created exclusively, mode 0700) under `$XDG_RUNTIME_DIR`, else the
//! temporary directory, else `/tmp` (whichever gives a path short enough
//! for `sun_path`). The child finds it in `NOTIFY_SOCKET`.
//!
//! Once readiness is decided, a thread (one per child) takes the socket
//! over and keeps reading it until the receiver, that is the
//! [`ReadyChild`](crate::ReadyChild), is dropped: later `STATUS=` updates
//! and stored fds are still recorded, barriers are still released. A
//! daemon's later `sd_notify` calls therefore neither block (libsystemd
//! sends blocking, and a Unix datagram queue holds only a few messages)
//! nor fail (`systemd-notify --ready` sends `READY=1`, then waits on a
//! barrier, and fails if that cannot be sent). On drop the thread stops
//! and the socket and its directory are removed.
//!
//! # Which senders count (our `NotifyAccess=`)
//! systemd's `NotifyAccess=all` accepts any process of the service's
//! cgroup. readyfd has no cgroup, so it accepts a datagram when its
//! `SCM_CREDENTIALS` (always present: `SO_PASSCRED` is on; a datagram
//! without them is dropped) name
//! - a uid that is ours or root (the 0700 directory already keeps other
//!   users out), and
//! - a pid that is the spawned child, the current main pid (`MAINPID=`),
//!   or a descendant of either, judged by following the parent pids in
//!   `/proc/<pid>/stat` (at most 64 steps).
//!
//! A sender whose chain is broken is ignored: one that was already reaped
//! when its datagram is read, or one reparented because a process between
//! it and the child exited first. That is systemd's own limitation for
//! datagrams of exited senders (systemd issue #2737), and its remedy works
//! here too: notify from the main process, announce `MAINPID=` before the
//! wrapper exits, or wait with `BARRIER=1` (`sd_notify_barrier`).
//!
//! # The grammar
//! As systemd's manager reads it: a datagram of at most 4096 bytes (larger
//! ones are dropped whole, whatever they say), no NUL byte except one at
//! the very end, split into `KEY=VALUE` lines at `\n` (and `\r`), empty
//! lines and unknown keys ignored, the final newline optional. Where a key
//! appears twice, the first counts; of `READY=1`, `RELOADING=1` and
//! `STOPPING=1`, the last one in a datagram counts. Several datagrams are
//! processed in order; readiness is decided by the first decisive one.
//!
//! | key | what readyfd does |
//! |---|---|
//! | `READY=1` | ready ([`ReadyVia::Notify`]); `Ready::pid` is the main pid |
//! | `STATUS=` | kept (latest wins, empty clears, non-UTF-8 ignored); `Ready::status` |
//! | `MAINPID=` | becomes the main pid if it is the child or a descendant (else refused); while it lives, the spawned process may exit without failing the wait; if it exits first while the spawned process lives, the wait fails |
//! | `STOPPING=1` | before ready: [`ReadyError::Failed`](crate::ReadyError::Failed), with the `ERRNO=` if any |
//! | `RELOADING=1`, `MONOTONIC_USEC=` | recorded; a later `READY=1` is still needed |
//! | `ERRNO=` | recorded (number or name, like systemd); by itself not a failure, as in systemd, where it only annotates the service. It becomes [`ReadyError::Failed`](crate::ReadyError::Failed)'s `errno` when `STOPPING=1` follows, or when the child exits before `READY=1` (then the wait fails with `Failed`, not `Exited`) |
//! | `BUSERROR=` | recorded, named in failure messages |
//! | `EXTEND_TIMEOUT_USEC=` | like systemd: the wait does not time out while less than that time has passed since the message, even past the caller's timeout; each message re-arms it (a later [`ReadyError::Timeout`](crate::ReadyError::Timeout) still names the caller's timeout) |
//! | `WATCHDOG=1`, `WATCHDOG_USEC=` | counted, recorded ([`NotifyState`]); readyfd runs no watchdog |
//! | `WATCHDOG=trigger` | before ready: failure, as systemd fails the service |
//! | `FDSTORE=1` + fds, `FDNAME=` | fds kept, named (invalid or missing name: `stored`), at most [`FDSTORE_MAX`] in all (more are closed); see [`ReadyChild::take_stored_fds`](crate::ReadyChild::take_stored_fds) |
//! | `FDSTOREREMOVE=1` + `FDNAME=` | the stored fds of that name are closed |
//! | `BARRIER=1` alone with one fd | the fd is closed once every earlier datagram is processed, which releases `sd_notify_barrier` |
//! | `X_READYFD_ADDRESS=name=address` | readyfd's own: the endpoints of `Ready::addresses` (the latest datagram that has them wins); sent by [`notify_ready`](crate::notify_ready) |
//! | anything else | ignored (`EXIT_STATUS=`, `FDPOLL=`, `NOTIFYACCESS=`, other `X_` keys) |
//!
//! fds that arrive with a datagram that does not store them, or with one
//! that is dropped, are closed at once (`MSG_CMSG_CLOEXEC`, then closed):
//! also when the control data was truncated. Memory does not grow with
//! what a child sends: one fixed buffer per datagram, the latest status,
//! a bounded fd store, and a bounded number of datagrams per round between
//! checks of the deadline and of the child's exit.

use std::ffi::c_int;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::libc;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, bind, setsockopt, socket, sockopt,
};
use readyfd_proto::{Endpoint, Ready};

use crate::sys;
use crate::verdict::{ReadyVia, Seen};

pub use crate::protocol::NOTIFY_SOCKET_ENV;

/// The largest datagram accepted, as in systemd (`PIPE_BUF`); larger ones
/// are dropped whole.
pub const NOTIFY_DATAGRAM_MAX: usize = 4096;

/// The most fds a child may keep in the fd store (`FDSTORE=1`); further
/// ones are closed.
pub const FDSTORE_MAX: usize = 64;

/// readyfd's own key, ignored by systemd: `X_READYFD_ADDRESS=name=address`.
pub(crate) const ADDRESS_KEY: &str = "X_READYFD_ADDRESS";

/// The fds one datagram can carry (the kernel's `SCM_MAX_FD`): the control
/// buffer holds that many, so a well-formed datagram is never truncated.
const MAX_FDS_PER_DATAGRAM: usize = 253;

/// Datagrams read per round before the deadline and the child are looked
/// at again: a flood cannot starve the timeout.
const BATCH: usize = 64;

/// Datagrams read after the child exited, before its exit is reported
/// (what it sent before dying counts).
const DRAIN_AFTER_EXIT: usize = 1024;

/// How many parent links the sender check follows.
const ANCESTRY_DEPTH: usize = 64;

/// The longest `FDNAME=`, as systemd's `fdname_is_valid`.
const FDNAME_MAX: usize = 255;

/// Endpoints kept from one datagram.
const ADDRESSES_MAX: usize = 64;

// SAFETY (for the `unsafe` in the constant): CMSG_SPACE is arithmetic on
// its argument.
const CTRL_LEN: usize = unsafe {
    (libc::CMSG_SPACE(size_of::<libc::ucred>() as u32)
        + libc::CMSG_SPACE((MAX_FDS_PER_DATAGRAM * size_of::<c_int>()) as u32)) as usize
};

/// Control-message space, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CtrlBuf([u8; CTRL_LEN]);

/// An fd a systemd-protocol child stored with `FDSTORE=1`.
#[derive(Debug)]
#[non_exhaustive]
pub struct StoredFd {
    /// Its `FDNAME=`, or `stored` when none (or an invalid one) was given.
    pub name: String,
    /// The fd, now owned by the parent (close-on-exec).
    pub fd: OwnedFd,
}

/// What a systemd-protocol child has told its parent so far, beyond
/// readiness itself. See [`ReadyChild::notify_state`](crate::ReadyChild::notify_state).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotifyState {
    /// The latest `STATUS=`.
    pub status: Option<String>,
    /// The accepted `MAINPID=`, if any.
    pub main_pid: Option<u32>,
    /// The latest `ERRNO=` (a positive errno; `ERRNO=0` clears it).
    pub errno: Option<i32>,
    /// The latest `BUSERROR=`.
    pub bus_error: Option<String>,
    /// Whether the last of `READY=1`/`RELOADING=1` was `RELOADING=1`.
    pub reloading: bool,
    /// The latest `MONOTONIC_USEC=`.
    pub monotonic_usec: Option<u64>,
    /// How many `WATCHDOG=1` pings arrived.
    pub watchdog_pings: u64,
    /// The latest `WATCHDOG_USEC=`.
    pub watchdog_usec: Option<u64>,
    /// The latest `EXTEND_TIMEOUT_USEC=`.
    pub extend_timeout_usec: Option<u64>,
    /// Datagrams accepted and processed (barriers excluded).
    pub accepted: u64,
    /// Datagrams dropped: from senders that do not count, without
    /// credentials, oversized, truncated or with a NUL byte inside.
    pub ignored: u64,
}

/// How a datagram moved the child's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Ready,
    Stopping,
    WatchdogTrigger,
    /// `READY=1` came from a process whose descent from the child cannot
    /// be checked (no `/proc`): refused, and said so.
    Unverifiable(u32),
}

/// What the datagrams established: shared between the waiting side and,
/// once readiness is decided, the thread that keeps reading.
#[derive(Debug)]
struct Core {
    euid: u32,
    state: NotifyState,
    phase: Phase,
    extended_until: Option<Instant>,
    addresses: Vec<Endpoint>,
    stored: Vec<StoredFd>,
    /// Whether `/proc` can be read (the sender check follows parent pids
    /// there).
    proc_ok: bool,
    /// A `MAINPID=` refused because its descent could not be checked.
    unverified_main: Option<u32>,
}

/// One datagram's metadata; its payload is in the caller's buffer.
struct Received {
    len: usize,
    truncated: bool,
    creds: Option<libc::ucred>,
    fds: Vec<OwnedFd>,
}

/// The thread that keeps reading after readiness is decided, and the
/// eventfd that stops it.
#[derive(Debug)]
struct Drainer {
    wake: OwnedFd,
    thread: JoinHandle<()>,
}

/// The receiving end of `NOTIFY_SOCKET` for one child.
#[derive(Debug)]
pub(crate) struct NotifyReceiver {
    /// The socket, while the waiting side reads it; `None` once a drainer
    /// took it over, or once closed.
    sock: Option<OwnedFd>,
    dir: PathBuf,
    path: PathBuf,
    /// Whether the socket file and directory still exist.
    on_disk: bool,
    core: Arc<Mutex<Core>>,
    /// A pidfd on the main pid, when `MAINPID=` named another process.
    main_watch: Option<(u32, OwnedFd)>,
    child_exited: bool,
    drainer: Option<Drainer>,
}

impl NotifyReceiver {
    /// Binds a fresh socket in a fresh private directory.
    pub(crate) fn new() -> io::Result<NotifyReceiver> {
        let dir = private_dir()?;
        let path = dir.join("notify");
        let core = Core {
            // SAFETY: geteuid has no preconditions and cannot fail.
            euid: unsafe { libc::geteuid() },
            state: NotifyState::default(),
            phase: Phase::Starting,
            extended_until: None,
            addresses: Vec::new(),
            stored: Vec::new(),
            proc_ok: sys::proc_available(),
            unverified_main: None,
        };
        // Built before the socket, so that its Drop removes the directory
        // on every error path below.
        let mut receiver = NotifyReceiver {
            sock: None,
            dir,
            path,
            on_disk: true,
            core: Arc::new(Mutex::new(core)),
            main_watch: None,
            child_exited: false,
            drainer: None,
        };
        let sock = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        // Before bind: no datagram can arrive without credentials.
        setsockopt(&sock, sockopt::PassCred, &true)?;
        bind(sock.as_raw_fd(), &UnixAddr::new(&receiver.path)?)?;
        receiver.sock = Some(sock);
        Ok(receiver)
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        lock(&self.core)
    }

    /// The value for `NOTIFY_SOCKET`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The latest `STATUS=`.
    pub(crate) fn last_status(&self) -> Option<String> {
        self.core().state.status.clone()
    }

    /// Everything recorded so far.
    pub(crate) fn state(&self) -> NotifyState {
        self.core().state.clone()
    }

    /// Hands over the fd store.
    pub(crate) fn take_stored_fds(&mut self) -> Vec<StoredFd> {
        std::mem::take(&mut self.core().stored)
    }

    /// The socket to watch for readability; `None` once readiness is
    /// decided.
    pub(crate) fn socket_fd(&self) -> Option<BorrowedFd<'_>> {
        self.sock.as_ref().map(|s| s.as_fd())
    }

    /// A pidfd on the main pid, to watch too, when `MAINPID=` named
    /// another process than the spawned one.
    pub(crate) fn main_pid_fd(&self) -> Option<BorrowedFd<'_>> {
        self.main_watch.as_ref().map(|(_, fd)| fd.as_fd())
    }

    /// Whether the spawned child's pidfd is still to be watched.
    pub(crate) fn watches_child(&self, ignore_exit: bool) -> bool {
        !ignore_exit && !self.child_exited
    }

    /// The caller's `deadline`, extended by `EXTEND_TIMEOUT_USEC=`: the
    /// wait times out when this passes.
    pub(crate) fn deadline(&self, deadline: Instant) -> Instant {
        match self.core().extended_until {
            Some(e) if e > deadline => e,
            _ => deadline,
        }
    }

    /// One non-blocking step, for any driver: processes a bounded number of
    /// queued datagrams and decides if it can. `child_exited`: child
    /// `pid`'s pidfd fired; `main_exited`: [`main_pid_fd`](Self::main_pid_fd)
    /// fired. `None`: watch [`socket_fd`](Self::socket_fd), the pidfd
    /// (while [`watches_child`](Self::watches_child)) and
    /// [`main_pid_fd`](Self::main_pid_fd) until [`deadline`](Self::deadline),
    /// and step again. Once decided (anything but `Timeout` and `Io`), a
    /// thread takes the socket over and keeps reading it.
    pub(crate) fn step(
        &mut self,
        pid: u32,
        child_exited: bool,
        main_exited: bool,
        ignore_exit: bool,
    ) -> Option<Seen> {
        let outcome = self.step_inner(pid, child_exited, main_exited, ignore_exit);
        if outcome
            .as_ref()
            .is_some_and(|o| !matches!(o, Seen::Timeout | Seen::Io(_)))
        {
            self.hand_over(pid);
        }
        outcome
    }

    fn step_inner(
        &mut self,
        pid: u32,
        child_exited: bool,
        main_exited: bool,
        ignore_exit: bool,
    ) -> Option<Seen> {
        let exit_seen = child_exited || main_exited;
        // After an exit, what was sent before it counts: read it all.
        let max = if exit_seen { DRAIN_AFTER_EXIT } else { BATCH };
        if let Some(outcome) = self.receive(pid, max) {
            return Some(outcome);
        }
        if child_exited {
            self.child_exited = true;
        }
        if main_exited {
            let main = self.main_watch.take().map_or(pid, |(p, _)| p);
            if !self.child_exited && !ignore_exit {
                return Some(
                    self.core()
                        .failure(format!("its main process {main} (MAINPID=) exited")),
                );
            }
            return Some(self.core().exit_outcome());
        }
        self.watch_main_pid(pid);
        if self.child_exited && self.main_watch.is_none() {
            return Some(self.core().exit_outcome());
        }
        // Nothing decisive; or the spawned process exited but the main pid
        // it announced lives on, and that one is waited for.
        None
    }

    /// Opens a pidfd on a new main pid (`MAINPID=` of another process). One
    /// that is already gone is not watched: when the spawned child exits
    /// too, the wait ends.
    fn watch_main_pid(&mut self, pid: u32) {
        let main = self.core().state.main_pid.filter(|&m| m != pid);
        if main == self.main_watch.as_ref().map(|(p, _)| *p) {
            return;
        }
        self.main_watch = main.and_then(|m| Some((m, sys::pidfd_open(m).ok()?)));
    }

    /// Waits for `READY=1` (or a failure, or the exit of child `pid`, whose
    /// pidfd is `pidfd`) until `deadline`, as extended by
    /// `EXTEND_TIMEOUT_USEC=`. With `ignore_exit` the child's exit is not
    /// watched.
    pub(crate) fn wait(
        &mut self,
        pidfd: BorrowedFd<'_>,
        pid: u32,
        deadline: Instant,
        ignore_exit: bool,
    ) -> Seen {
        let (mut child_exited, mut main_exited) = (false, false);
        loop {
            if let Some(outcome) = self.step(pid, child_exited, main_exited, ignore_exit) {
                return outcome;
            }
            let until = self.deadline(deadline);
            // Checked on every round: a flood keeps the socket readable.
            if Instant::now() >= until {
                return Seen::Timeout;
            }
            let Some(sock) = self.socket_fd() else {
                return Seen::Io(io::Error::other(
                    "the notification socket is already handed over",
                ));
            };
            let watch_child = self.watches_child(ignore_exit);
            let mut fds = Vec::with_capacity(3);
            fds.push(PollFd::new(sock, PollFlags::POLLIN));
            if watch_child {
                fds.push(PollFd::new(pidfd, PollFlags::POLLIN));
            }
            if let Some(main) = self.main_pid_fd() {
                fds.push(PollFd::new(main, PollFlags::POLLIN));
            }
            if let Err(e) = sys::poll_until(&mut fds, Some(until)) {
                return Seen::Io(e);
            }
            let fired = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            child_exited = watch_child && fired(1);
            main_exited = self.main_watch.is_some() && fired(if watch_child { 2 } else { 1 });
        }
    }

    /// Reads and processes up to `max` queued datagrams. `Some` when
    /// readiness is decided or reading failed.
    fn receive(&mut self, pid: u32, max: usize) -> Option<Seen> {
        let mut buf = [0u8; NOTIFY_DATAGRAM_MAX];
        let sock = self.sock.as_ref()?;
        for _ in 0..max {
            let received = match recv_datagram(sock.as_fd(), &mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(e) => return Some(Seen::Io(e)),
            };
            let mut core = lock(&self.core);
            core.handle(&buf, received, pid);
            if let Some(outcome) = core.decision(pid) {
                return Some(outcome);
            }
        }
        None
    }

    /// Readiness is decided: a thread takes the socket over and keeps
    /// reading it (status updates, fd store, barriers), so that a daemon's
    /// later `sd_notify` calls neither block on a full queue nor fail (as
    /// `systemd-notify --ready`'s barrier would if the socket were gone).
    /// Without a thread, the socket is closed instead.
    fn hand_over(&mut self, pid: u32) {
        let Some(sock) = self.sock.take() else { return };
        let Ok(wake) = sys::eventfd() else { return };
        let Ok(theirs) = wake.try_clone() else { return };
        let core = Arc::clone(&self.core);
        let thread = std::thread::Builder::new()
            .name(format!("readyfd-notify-{pid}"))
            .spawn(move || drain(sock, theirs, core, pid));
        if let Ok(thread) = thread {
            self.drainer = Some(Drainer { wake, thread });
        }
    }
}

impl Drop for NotifyReceiver {
    fn drop(&mut self) {
        if let Some(d) = self.drainer.take() {
            sys::eventfd_wake(d.wake.as_fd());
            let _ = d.thread.join();
        }
        self.sock = None;
        if std::mem::take(&mut self.on_disk) {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// The drainer thread: reads and processes datagrams until woken.
fn drain(sock: OwnedFd, wake: OwnedFd, core: Arc<Mutex<Core>>, pid: u32) {
    let mut buf = [0u8; NOTIFY_DATAGRAM_MAX];
    loop {
        let mut fds = [
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        if sys::poll_until(&mut fds, None).is_err()
            || fds[1].revents().is_some_and(|r| !r.is_empty())
        {
            return;
        }
        // Bounded rounds, so that a wake-up is seen during a flood.
        for _ in 0..BATCH {
            match recv_datagram(sock.as_fd(), &mut buf) {
                Ok(Some(received)) => lock(&core).handle(&buf, received, pid),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    // A panic while holding it cannot leave the state inconsistent in a
    // way that matters more than losing it.
    core.lock().unwrap_or_else(|e| e.into_inner())
}

impl Core {
    /// Readiness, if the datagrams so far decide it.
    fn decision(&self, pid: u32) -> Option<Seen> {
        match self.phase {
            Phase::Starting => None,
            Phase::Ready => {
                let ready = Ready {
                    pid: self.state.main_pid.unwrap_or(pid),
                    addresses: self.addresses.clone(),
                    status: self.state.status.clone(),
                };
                Some(Seen::Ready(ready, ReadyVia::Notify))
            }
            Phase::Stopping => Some(self.failure("it sent STOPPING=1 before READY=1".to_string())),
            Phase::WatchdogTrigger => {
                Some(self.failure("it sent WATCHDOG=trigger before READY=1".to_string()))
            }
            Phase::Unverifiable(sender) => Some(self.failure(format!(
                "READY=1 came from process {sender}, which cannot be checked to descend from child {pid} without a readable /proc: send it from the child itself, or mount /proc"
            ))),
        }
    }

    /// The child is gone and nothing more can come.
    fn exit_outcome(&self) -> Seen {
        if let Some(main) = self.unverified_main {
            return self.failure(format!(
                "it exited after announcing MAINPID={main}, which cannot be checked to descend from it without a readable /proc: mount /proc"
            ));
        }
        if self.state.errno.is_some() {
            self.failure("it exited".to_string())
        } else {
            Seen::Exit
        }
    }

    fn failure(&self, what: String) -> Seen {
        let mut details = Vec::new();
        if let Some(s) = &self.state.status {
            details.push(format!("status {s:?}"));
        }
        if let Some(e) = self.state.errno {
            details.push(format!(
                "ERRNO={e}: {}",
                nix::errno::Errno::from_raw(e).desc()
            ));
        }
        if let Some(b) = &self.state.bus_error {
            details.push(format!("BUSERROR={b}"));
        }
        let message = if details.is_empty() {
            what
        } else {
            format!("{what} ({})", details.join("; "))
        };
        Seen::Failed {
            errno: self.state.errno,
            message,
        }
    }

    /// Processes one datagram. Every fd it carried that is not stored is
    /// closed on return.
    fn handle(&mut self, buf: &[u8; NOTIFY_DATAGRAM_MAX], received: Received, spawned: u32) {
        let Received {
            len,
            truncated,
            creds,
            fds,
        } = received;
        let Some(creds) = creds else {
            self.state.ignored += 1;
            return;
        };
        if truncated || len > NOTIFY_DATAGRAM_MAX {
            self.state.ignored += 1;
            return;
        }
        let mut payload = &buf[..len];
        // One trailing NUL is tolerated, as systemd does; any other is not.
        if let [rest @ .., 0] = payload {
            payload = rest;
        }
        if payload.contains(&0) {
            self.state.ignored += 1;
            return;
        }
        let tags: Vec<&[u8]> = payload
            .split(|&b| b == b'\n' || b == b'\r')
            .filter(|t| !t.is_empty())
            .collect();
        // A barrier needs no authorisation: all it does is close its fd,
        // which happens on return, after every earlier datagram.
        if tags.len() == 1 && tags[0] == b"BARRIER=1" {
            return;
        }
        match self.authorized(&creds, spawned) {
            Some(true) => {}
            Some(false) => {
                self.state.ignored += 1;
                return;
            }
            None => {
                self.state.ignored += 1;
                if self.phase == Phase::Starting && tags.contains(&&b"READY=1"[..]) {
                    self.phase = Phase::Unverifiable(creds.pid as u32);
                }
                return;
            }
        }
        self.state.accepted += 1;
        self.apply(&tags, fds, spawned);
    }

    fn apply(&mut self, tags: &[&[u8]], fds: Vec<OwnedFd>, spawned: u32) {
        let first = |key: &str| {
            tags.iter().find_map(|t| {
                t.strip_prefix(key.as_bytes())
                    .and_then(|v| v.strip_prefix(b"="))
            })
        };
        let number =
            |key: &str| first(key).and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
        let now = Instant::now();

        if let Some(v) = first("MAINPID") {
            if let Some(new) = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
            {
                self.set_main_pid(new, spawned);
            }
        }
        if let Some(us) = number("MONOTONIC_USEC") {
            self.state.monotonic_usec = Some(us);
        }
        // Of READY=1, RELOADING=1 and STOPPING=1 the last one counts.
        for t in tags.iter().rev() {
            match *t {
                b"READY=1" => {
                    self.phase = Phase::Ready;
                    self.state.reloading = false;
                }
                b"RELOADING=1" => self.state.reloading = true,
                b"STOPPING=1" => self.phase = Phase::Stopping,
                _ => continue,
            }
            break;
        }
        if let Some(v) = first("STATUS") {
            if v.is_empty() {
                self.state.status = None;
            } else if let Ok(s) = std::str::from_utf8(v) {
                self.state.status = Some(s.to_string());
            }
        }
        if let Some(v) = first("ERRNO") {
            if let Some(e) = std::str::from_utf8(v).ok().and_then(parse_errno) {
                self.state.errno = (e != 0).then_some(e);
            }
        }
        if let Some(v) = first("BUSERROR") {
            if let Ok(s) = std::str::from_utf8(v) {
                self.state.bus_error = (!s.is_empty()).then(|| s.to_string());
            }
        }
        if let Some(us) = number("EXTEND_TIMEOUT_USEC") {
            self.state.extend_timeout_usec = Some(us);
            // A huge value means "no timeout for now": cap it far away.
            let until = now
                .checked_add(Duration::from_micros(us))
                .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
            if self.extended_until.is_none_or(|e| until > e) {
                self.extended_until = Some(until);
            }
        }
        match first("WATCHDOG") {
            Some(b"1") => self.state.watchdog_pings += 1,
            Some(b"trigger") if self.phase == Phase::Starting => {
                self.phase = Phase::WatchdogTrigger
            }
            _ => {}
        }
        if let Some(us) = number("WATCHDOG_USEC") {
            self.state.watchdog_usec = Some(us);
        }
        let name = first("FDNAME").and_then(fdname);
        if tags.contains(&&b"FDSTOREREMOVE=1"[..]) {
            if let Some(name) = &name {
                self.stored.retain(|s| &s.name != name);
            }
        }
        if tags.contains(&&b"FDSTORE=1"[..]) {
            let name = name.unwrap_or_else(|| "stored".to_string());
            let room = FDSTORE_MAX.saturating_sub(self.stored.len());
            // The rest are closed when `fds` drops.
            for fd in fds.into_iter().take(room) {
                self.stored.push(StoredFd {
                    name: name.clone(),
                    fd,
                });
            }
        }
        let addresses: Vec<Endpoint> = tags
            .iter()
            .filter_map(|t| t.strip_prefix(ADDRESS_KEY.as_bytes())?.strip_prefix(b"="))
            .filter_map(|v| parse_endpoint(std::str::from_utf8(v).ok()?))
            .take(ADDRESSES_MAX)
            .collect();
        if !addresses.is_empty() {
            self.addresses = addresses;
        }
    }

    /// Like systemd, refuses a main pid outside the service: here, one that
    /// is neither the child nor a descendant.
    fn set_main_pid(&mut self, new: u32, spawned: u32) {
        if new == 0 || Some(new) == self.state.main_pid {
            return;
        }
        match self.descends(new, spawned) {
            Some(true) => self.state.main_pid = Some(new),
            Some(false) => {}
            None => self.unverified_main = Some(new),
        }
    }

    /// Our `NotifyAccess=`; see the module docs. `None`: it cannot be
    /// checked (no `/proc`).
    fn authorized(&self, creds: &libc::ucred, spawned: u32) -> Option<bool> {
        if creds.uid != self.euid && creds.uid != 0 {
            return Some(false);
        }
        match u32::try_from(creds.pid) {
            Ok(pid) if pid > 0 => self.descends(pid, spawned),
            _ => Some(false),
        }
    }

    /// Whether `pid` is the spawned child, the main pid, or a descendant of
    /// either; `None` when that cannot be checked because `/proc` cannot be
    /// read.
    fn descends(&self, pid: u32, spawned: u32) -> Option<bool> {
        let ours = std::process::id();
        let mut p = pid;
        for _ in 0..ANCESTRY_DEPTH {
            if p == spawned || Some(p) == self.state.main_pid {
                return Some(true);
            }
            if p <= 1 || p == ours {
                return Some(false);
            }
            match sys::parent_pid(p) {
                Ok(pp) => p = pp,
                Err(_) if !self.proc_ok => return None,
                Err(_) => return Some(false),
            }
        }
        Some(false)
    }
}

/// A fresh 0700 directory whose `notify` entry fits in `sun_path`.
fn private_dir() -> io::Result<PathBuf> {
    // sun_path is 108 bytes including the terminating NUL.
    const SUN_PATH_MAX: usize = 107;
    let mut bases = Vec::new();
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR") {
        bases.push(PathBuf::from(xdg));
    }
    bases.push(std::env::temp_dir());
    bases.push(PathBuf::from("/tmp"));
    let mut last = io::Error::new(
        io::ErrorKind::InvalidInput,
        "no directory short enough for a socket path",
    );
    for base in bases {
        if !base.is_absolute() {
            continue;
        }
        let template = base.join("readyfd-XXXXXX");
        if template.as_os_str().len() + "/notify".len() > SUN_PATH_MAX {
            continue;
        }
        match mkdtemp(&template) {
            Ok(dir) => return Ok(dir),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `mkdtemp(3)`: a new directory, mode 0700, named after `template` with
/// its trailing `XXXXXX` replaced by random characters, created
/// exclusively (an existing name is never reused).
fn mkdtemp(template: &Path) -> io::Result<PathBuf> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut buf = std::ffi::CString::new(template.as_os_str().as_bytes())?.into_bytes_with_nul();
    // SAFETY: `buf` is a writable NUL-terminated string; mkdtemp rewrites
    // its last six characters in place and touches nothing else.
    if unsafe { libc::mkdtemp(buf.as_mut_ptr().cast()) }.is_null() {
        return Err(io::Error::last_os_error());
    }
    buf.pop();
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// One `recvmsg` without blocking: `Ok(None)` when the queue is empty.
/// Received fds are owned at once (and close-on-exec), also when the
/// control data was truncated.
fn recv_datagram(
    sock: BorrowedFd<'_>,
    buf: &mut [u8; NOTIFY_DATAGRAM_MAX],
) -> io::Result<Option<Received>> {
    let mut ctrl = CtrlBuf([0; CTRL_LEN]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.0.as_mut_ptr().cast();
    msg.msg_controllen = CTRL_LEN as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC;
    let n = loop {
        // SAFETY: `msg` points at `iov` (into `buf`) and `ctrl`, both live
        // and writable for the lengths given; the kernel writes within them.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    };
    let mut creds = None;
    let mut fds = Vec::new();
    // SAFETY: `msg` was filled by recvmsg; its msg_controllen now covers
    // only complete control messages the kernel wrote into `ctrl`.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: non-null headers from CMSG_FIRSTHDR/CMSG_NXTHDR lie
        // within `ctrl`, which is aligned for cmsghdr.
        let hdr = unsafe { &*cmsg };
        // SAFETY: CMSG_DATA points just past the header, inside `ctrl`.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        let data_len = (hdr.cmsg_len as usize).saturating_sub(data as usize - cmsg as usize);
        match (hdr.cmsg_level, hdr.cmsg_type) {
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                for i in 0..data_len / size_of::<c_int>() {
                    // SAFETY: the kernel wrote `data_len` bytes of fd numbers
                    // there; read_unaligned copes with any alignment.
                    let fd = unsafe { std::ptr::read_unaligned(data.cast::<c_int>().add(i)) };
                    // SAFETY: the kernel just installed this fd for us;
                    // nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) if data_len >= size_of::<libc::ucred>() => {
                // SAFETY: a complete ucred is there, as just checked.
                creds = Some(unsafe { std::ptr::read_unaligned(data.cast::<libc::ucred>()) });
            }
            _ => {}
        }
        // SAFETY: `cmsg` is a header within `msg`'s control buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    let truncated = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    Ok(Some(Received {
        len: n,
        truncated,
        creds,
        fds,
    }))
}

/// `ERRNO=` as systemd's `parse_errno`: a number in 0..4096, or a name.
fn parse_errno(s: &str) -> Option<i32> {
    const ERRNO_MAX: i32 = 4095;
    if let Ok(n) = s.parse::<i32>() {
        return (0..=ERRNO_MAX).contains(&n).then_some(n);
    }
    if !s.starts_with('E') {
        return None;
    }
    (1..=ERRNO_MAX).find(|&n| {
        let e = nix::errno::Errno::from_raw(n);
        e != nix::errno::Errno::UnknownErrno && format!("{e:?}") == s
    })
}

/// A valid `FDNAME=` (systemd's `fdname_is_valid`: printable ASCII but
/// `:`, at most 255 bytes).
fn fdname(v: &[u8]) -> Option<String> {
    let ok = v.len() <= FDNAME_MAX && v.iter().all(|&b| (b' '..=b'~').contains(&b) && b != b':');
    ok.then(|| String::from_utf8_lossy(v).into_owned())
}

/// `name=address` of `X_READYFD_ADDRESS`; a `text:` address is text as is.
fn parse_endpoint(v: &str) -> Option<Endpoint> {
    let (name, addr) = v.split_once('=')?;
    let address = match addr.strip_prefix("text:") {
        Some(t) => readyfd_proto::Address::Text(t.to_string()),
        None => crate::pipe::parse_address(addr),
    };
    Some(Endpoint {
        name: name.to_string(),
        address,
    })
}

/// `X_READYFD_ADDRESS=name=address` for `endpoint`, or `None` when it
/// cannot be written on one line.
pub(crate) fn format_endpoint(endpoint: &Endpoint) -> Option<String> {
    use readyfd_proto::Address;
    let addr = match &endpoint.address {
        Address::Tcp(a) => format!("tcp:{a}"),
        Address::Udp(a) => format!("udp:{a}"),
        Address::Unix(p) => format!("unix:{p}"),
        Address::Text(t) => format!("text:{t}"),
        other => format!("text:{other}"),
    };
    let line = format!("{ADDRESS_KEY}={}={addr}", endpoint.name);
    let one_line = !endpoint.name.contains('=') && !line.contains(['\n', '\r', '\0']);
    one_line.then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use readyfd_proto::Address;

    #[test]
    fn errno_numbers_and_names() {
        assert_eq!(parse_errno("98"), Some(98));
        assert_eq!(parse_errno("0"), Some(0));
        assert_eq!(parse_errno("EADDRINUSE"), Some(libc::EADDRINUSE));
        assert_eq!(parse_errno("-1"), None);
        assert_eq!(parse_errno("4096"), None);
        assert_eq!(parse_errno("EWHATEVER"), None);
        assert_eq!(parse_errno("x"), None);
    }

    #[test]
    fn fdnames() {
        assert_eq!(fdname(b"web").as_deref(), Some("web"));
        assert_eq!(fdname(b"").as_deref(), Some(""));
        assert_eq!(fdname(b"a:b"), None);
        assert_eq!(fdname(b"a\x01"), None);
        assert_eq!(fdname(&[b'a'; 256]), None);
    }

    #[test]
    fn endpoints_round_trip() {
        let cases = [
            Endpoint {
                name: "http".into(),
                address: Address::Tcp("127.0.0.1:80".parse().unwrap()),
            },
            Endpoint {
                name: "dns".into(),
                address: Address::Udp("[::1]:53".parse().unwrap()),
            },
            Endpoint {
                name: "".into(),
                address: Address::Unix("@abstract".into()),
            },
            Endpoint {
                name: "bus".into(),
                address: Address::Text("unix:path=/x,guid=1".into()),
            },
            Endpoint {
                name: "odd".into(),
                address: Address::Text("tcp:1.2.3.4:5".into()),
            },
        ];
        for e in cases {
            let line = format_endpoint(&e).unwrap();
            let value = line.strip_prefix("X_READYFD_ADDRESS=").unwrap();
            assert_eq!(parse_endpoint(value), Some(e));
        }
        let bad = Endpoint {
            name: "a=b".into(),
            address: Address::Text("x".into()),
        };
        assert_eq!(format_endpoint(&bad), None);
        let bad = Endpoint {
            name: "a".into(),
            address: Address::Text("x\ny".into()),
        };
        assert_eq!(format_endpoint(&bad), None);
    }

    #[test]
    fn the_socket_lives_in_a_private_directory_removed_on_drop() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let r = NotifyReceiver::new().unwrap();
        let dir = r.path().parent().unwrap().to_path_buf();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert!(std::fs::metadata(r.path()).unwrap().file_type().is_socket());
        assert!(r.path().as_os_str().len() < 108);
        drop(r);
        assert!(!dir.exists());
    }
}
