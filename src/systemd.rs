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
//! wrapper exits, or wait with `BARRIER=1` (`sd_notify_barrier`). A parent
//! that is the child subreaper of its descendants and has no other child
//! that could notify (as `readyfd run`) can ask, with
//! [`ReadyCommand::accept_adopted`](crate::ReadyCommand::accept_adopted),
//! that a sender whose chain reaches the parent itself (an orphan
//! reparented to it: a daemon that double-forked) count as well.
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
//! | `READY=1` | ready ([`ReadyVia::Notify`](crate::ReadyVia::Notify)); `Ready::pid` is the main pid |
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

// This file owns the receiver: the socket and its directory, the waits,
// and the thread that keeps reading. What a datagram means is decided in
// `grammar`, without I/O.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, bind, setsockopt, socket, sockopt,
};

use crate::sys;
use crate::verdict::Seen;

mod grammar;

pub use crate::protocol::NOTIFY_SOCKET_ENV;
use grammar::Core;
pub(crate) use grammar::format_endpoint;
pub use grammar::{FDSTORE_MAX, NOTIFY_DATAGRAM_MAX, NotifyState, StoredFd};

/// Datagrams read per round before the deadline and the child are looked
/// at again: a flood cannot starve the timeout.
const BATCH: usize = 64;

/// Datagrams read after the child exited, before its exit is reported
/// (what it sent before dying counts).
const DRAIN_AFTER_EXIT: usize = 1024;

/// The thread that keeps reading after readiness is decided, and the
/// waker that stops it.
#[derive(Debug)]
struct Drainer {
    wake: Arc<sys::Waker>,
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
    /// Binds a fresh socket in a fresh private directory. With `adopted`,
    /// a sender reparented to this process counts as the child's
    /// descendant.
    pub(crate) fn new(adopted: bool) -> io::Result<NotifyReceiver> {
        let dir = private_dir()?;
        let path = dir.join("notify");
        let mut core = Core::new(sys::euid(), std::process::id(), sys::proc_available());
        core.accept_adopted(adopted);
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
        self.core().state().status.clone()
    }

    /// Everything recorded so far.
    pub(crate) fn state(&self) -> NotifyState {
        self.core().state().clone()
    }

    /// Hands over the fd store.
    pub(crate) fn take_stored_fds(&mut self) -> Vec<StoredFd> {
        self.core().take_stored()
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
        match self.core().extended_until() {
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
        let main = self.core().state().main_pid.filter(|&m| m != pid);
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
            let received = match sys::recv_datagram(sock.as_fd(), &mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(e) => return Some(Seen::Io(e)),
            };
            let mut core = lock(&self.core);
            core.handle(&buf, received, pid, Instant::now(), &sys::parent_pid);
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
        let Ok(wake) = sys::Waker::new() else { return };
        let wake = Arc::new(wake);
        let theirs = Arc::clone(&wake);
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
            d.wake.wake();
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
fn drain(sock: OwnedFd, wake: Arc<sys::Waker>, core: Arc<Mutex<Core>>, pid: u32) {
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
            match sys::recv_datagram(sock.as_fd(), &mut buf) {
                Ok(Some(received)) => {
                    lock(&core).handle(&buf, received, pid, Instant::now(), &sys::parent_pid)
                }
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
        match sys::mkdtemp(&template) {
            Ok(dir) => return Ok(dir),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_lives_in_a_private_directory_removed_on_drop() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let r = NotifyReceiver::new(false).unwrap();
        let dir = r.path().parent().unwrap().to_path_buf();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert!(std::fs::metadata(r.path()).unwrap().file_type().is_socket());
        assert!(r.path().as_os_str().len() < 108);
        drop(r);
        assert!(!dir.exists());
    }
}
