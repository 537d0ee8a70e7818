//! The readiness core: what counts as ready, as failed, as timed out, for
//! every protocol and both drivers, with no I/O.
//!
//! A protocol's waiter (the native channel, the pipe, the notify socket)
//! reports what it *saw* as a [`Seen`]; the driver (blocking or tokio) feeds
//! it to [`Verdict`], together with what the process did (its exit status,
//! whether it was alive when the channel ended), and does what the returned
//! [`Next`] says: keep waiting, reap, or stop with a result. The rules are
//! the table of `proto/PROTOCOL.md` §6, and nowhere else:
//!
//! - An explicit readiness message (a native `Ready`, a pipe newline,
//!   `READY=1`) is ready, whenever it is read: what a child said before it
//!   died still counts.
//! - The channel's end without a message is ready only while the spawned
//!   process is alive and not exiting, judged right after the end was seen.
//!   Ended by a dying process, it is that process's exit.
//! - The spawned process's exit while the channel is still open: a failure
//!   (with its status), except that an exit 0 under the native or pipe
//!   protocol is a wrapper handing the channel on (`sh -c 'server &'`); from
//!   then on only an explicit message makes the child ready, never the
//!   channel's end. (Another thread of the parent that forks at the wrong
//!   moment holds a copy of the channel until it execs, so a child's exit
//!   can come before the channel's end: the end proves nothing then.)
//! - A child that says it failed (a native `Goodbye` before `Ready`,
//!   `STOPPING=1`, ...) has failed; one that breaks the protocol, too.
//! - When whether the process was alive cannot be known (no `/proc`), the
//!   end of the channel is a clear [`ReadyError::Undecidable`], never
//!   "ready".

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use readyfd_proto::Ready;

use crate::error::{ProtocolError, ReadyError};
use crate::protocol::Protocol;
use crate::sys::Liveness;

/// What [`ReadyChild::wait_ready`](crate::ReadyChild::wait_ready) does to a
/// child that is not ready in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnTimeout {
    /// Kill it (`SIGKILL`) and reap it. The default: a test that timed out
    /// leaves nothing behind.
    #[default]
    Kill,
    /// Leave it running; the caller decides. A later `wait_ready` picks up
    /// where this one stopped.
    Leave,
}

/// How a child signalled readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReadyVia {
    /// A native `Ready` message.
    Message,
    /// It closed the channel while alive, without a message (native or
    /// pipe): the minimal signal.
    ///
    /// This one is ambiguous by nature: a program that fails and closes its
    /// descriptors while still alive (a Python child that raises closes its
    /// socket during interpreter shutdown, before it exits 1) looks exactly
    /// like one that is ready. A parent that relies on it can ask
    /// [`ReadyChild::try_wait`](crate::ReadyChild::try_wait) (or
    /// `wait_timeout`) whether the child died right after; `readyfd run`
    /// reports such a death as a failure of the run.
    Closed,
    /// A newline on the pipe.
    Newline,
    /// `READY=1` over `NOTIFY_SOCKET`.
    Notify,
}

/// A child's readiness, as [`ReadyChild::wait_ready`](crate::ReadyChild::wait_ready)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Readiness {
    /// What the child announced. For a child that only closed its fd:
    /// the spawned pid, no addresses and the last status, if any.
    pub ready: Ready,
    /// How it signalled.
    pub via: ReadyVia,
    /// The pid readyfd spawned (compare with `ready.pid`).
    pub spawned_pid: u32,
    /// The process readyfd takes as the main one: the one that
    /// [`stop`](crate::ReadyChild::stop) and
    /// [`kill_on_drop`](crate::ReadyCommand::kill_on_drop) end and wait
    /// for, and whose exit ends the native channel (PROTOCOL.md §6.3).
    /// `ready.pid` when the child named a process of its own there, by the
    /// rule of PROTOCOL.md §6.4: under the native protocol, the process
    /// that wrote the `Ready` frame (as the kernel attests it), a
    /// descendant of the spawned process (or one reparented to us, with
    /// [`accept_adopted`](crate::ReadyCommand::accept_adopted)), or, with
    /// [`process_group`](crate::ReadyCommand::process_group), a member of
    /// its process group; under systemd's, an accepted `MAINPID=`.
    /// Otherwise the claim is refused and this is `spawned_pid`: a child
    /// that names an unrelated process (pid 1, its own parent, any process
    /// of the same user) never gets it signalled, watched or waited for.
    /// `ready.pid != main_pid` tells a refused claim.
    pub main_pid: u32,
    /// From spawn to readiness.
    pub elapsed: Duration,
}

impl Readiness {
    /// The main process readyfd took ([`main_pid`](Self::main_pid)), when
    /// it is not the one spawned (a wrapper such as `sh -c`, or a daemon
    /// that forked, or systemd's `MAINPID=`). A pid the child named and
    /// readyfd refused (PROTOCOL.md §6.4) is not reported here: compare
    /// `ready.pid` with `main_pid` for that.
    pub fn pid_mismatch(&self) -> Option<u32> {
        (self.main_pid != self.spawned_pid).then_some(self.main_pid)
    }

    /// The TCP or UDP socket address the child announced as `name`, by
    /// value, so a borrowed `Readiness` (what
    /// [`wait_ready`](crate::ReadyChild::wait_ready) returns) needs no
    /// clone: `None` when there is no such name, or it names a Unix path
    /// or text (use [`Ready::get`] for those).
    pub fn socket_addr(&self, name: &str) -> Option<std::net::SocketAddr> {
        self.ready.socket_addr(name)
    }
}

/// What a protocol's waiter saw.
/// What ended a child that [`ReadyChild::stop`](crate::ReadyChild::stop)
/// stopped (both APIs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopVia {
    /// It had exited before `stop` was called.
    AlreadyExited,
    /// It acknowledged the native `Shutdown` request and exited within the
    /// grace period, whatever its status: a child whose
    /// [`ShutdownPolicy`](crate::ShutdownPolicy) raises `SIGTERM` on
    /// itself shows "killed by signal 15" and still stopped cleanly.
    Shutdown,
    /// It exited within the grace period after `SIGTERM` (and `SIGCONT`).
    Sigterm,
    /// It had to be killed with `SIGKILL`.
    Sigkill,
}

/// How [`ReadyChild::stop`](crate::ReadyChild::stop) ended the child: what
/// ended it and the spawned process's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stopped {
    /// What ended it.
    pub via: StopVia,
    /// The exit status of the spawned process.
    pub status: ExitStatus,
}

impl Stopped {
    pub(crate) fn new(via: StopVia, status: ExitStatus) -> Self {
        Stopped { via, status }
    }
}

/// `acknowledged Shutdown, then was killed by signal 15 (SIGTERM)`, and so
/// on: how it was stopped, then how it ended.
impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.via {
            StopVia::AlreadyExited => "had already ended",
            StopVia::Shutdown => "acknowledged Shutdown",
            StopVia::Sigterm => "was sent SIGTERM",
            StopVia::Sigkill => "had to be killed (SIGKILL)",
        };
        write!(f, "{how}, then {}", crate::describe_exit(self.status))
    }
}

#[derive(Debug)]
pub(crate) enum Seen {
    /// An explicit readiness message: ready, whenever it is read.
    Ready(Ready, ReadyVia),
    /// The channel ended without one; `Ready` is what readiness would be
    /// (the pipe's text, the native channel's last status).
    End(Ready),
    /// The spawned process's exit (its pidfd fired) while the channel is
    /// still open and nothing decisive was read.
    Exit,
    /// The child reported that it failed.
    Failed {
        /// An errno it reported.
        errno: Option<i32>,
        /// What it said.
        message: String,
    },
    /// The child broke the protocol.
    Protocol(ProtocolError),
    /// A system call failed.
    Io(io::Error),
    /// Nothing before the deadline.
    Timeout,
}

/// What the driver does next.
#[derive(Debug)]
pub(crate) enum Next {
    /// Done: the child is ready.
    Ready(Ready, ReadyVia),
    /// Keep waiting on the protocol's channel, and on the spawned
    /// process's exit while [`Verdict::watches_exit`] says so.
    Wait,
    /// Wait for the spawned process's exit status, until
    /// [`Verdict::reap_deadline`], and feed it to [`Verdict::on_exit`]; if
    /// it does not come, ask [`Verdict::on_reap_timeout`].
    Reap,
    /// Done: it failed.
    Fail(ReadyError),
    /// The deadline passed: apply [`OnTimeout`], then fail with
    /// [`ReadyError::Timeout`].
    Timeout,
}

/// How long an end of the channel whose cause cannot be judged (no
/// `/proc`) waits for the process's exit before it is reported as
/// undecidable. A dying process has closed its descriptors a few
/// microseconds before it can be reaped; this only chooses between two
/// failures, never between ready and failed.
pub(crate) const UNDECIDED_GRACE: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
enum Phase {
    /// Nothing decisive yet; the spawned process's exit is watched.
    Waiting,
    /// Its exit was seen with the channel open: the status decides.
    ExitSeen,
    /// It exited 0 with the channel open (a wrapper): only an explicit
    /// message can make it ready now.
    HandedOn(ExitStatus),
    /// The channel ended while it was exiting: its status is the verdict.
    EndedByExit,
    /// The channel ended and whether it was alive cannot be known.
    Undecided(String),
    /// Decided: ready or failed.
    Decided,
}

/// The readiness rules for one spawned process; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    pid: u32,
    protocol: Protocol,
    phase: Phase,
}

impl Verdict {
    pub(crate) fn new(pid: u32, protocol: Protocol) -> Verdict {
        Verdict {
            pid,
            protocol,
            phase: Phase::Waiting,
        }
    }

    /// Whether the spawned process's exit is still to be watched (and
    /// reported as [`Seen::Exit`]).
    pub(crate) fn watches_exit(&self) -> bool {
        matches!(self.phase, Phase::Waiting)
    }

    /// Whether the next step is a reap (also when a wait resumes after a
    /// timeout or a cancellation during one).
    pub(crate) fn reaping(&self) -> bool {
        matches!(
            self.phase,
            Phase::ExitSeen | Phase::EndedByExit | Phase::Undecided(_)
        )
    }

    /// Until when a reap waits: the caller's deadline, or less while the
    /// cause of the channel's end is undecided.
    pub(crate) fn reap_deadline<I: Ord + Copy>(&self, deadline: I, grace_end: I) -> I {
        match self.phase {
            Phase::Undecided(_) => deadline.min(grace_end),
            _ => deadline,
        }
    }

    /// Feeds what the protocol's waiter saw. `liveness` is asked only when
    /// the channel ended without a message, right after that end was seen.
    pub(crate) fn on_seen(&mut self, seen: Seen, liveness: impl FnOnce() -> Liveness) -> Next {
        let next = match seen {
            Seen::Ready(ready, via) => Next::Ready(ready, via),
            Seen::End(ready) => match &self.phase {
                Phase::HandedOn(status) => Next::Fail(self.exited(*status, None)),
                _ => match liveness() {
                    Liveness::Alive => Next::Ready(ready, ReadyVia::Closed),
                    Liveness::Exiting => {
                        self.phase = Phase::EndedByExit;
                        Next::Reap
                    }
                    Liveness::Unknown(why) => {
                        self.phase = Phase::Undecided(why);
                        Next::Reap
                    }
                },
            },
            Seen::Exit => {
                self.phase = Phase::ExitSeen;
                Next::Reap
            }
            Seen::Failed { errno, message } => Next::Fail(ReadyError::Failed {
                pid: self.pid,
                errno,
                message,
            }),
            Seen::Protocol(source) => Next::Fail(ReadyError::Protocol {
                pid: self.pid,
                source,
            }),
            Seen::Io(e) => Next::Fail(ReadyError::Io(e)),
            Seen::Timeout => Next::Timeout,
        };
        self.settle(&next);
        next
    }

    /// Feeds the spawned process's exit status, after [`Next::Reap`].
    pub(crate) fn on_exit(&mut self, status: ExitStatus, last_status: Option<String>) -> Next {
        let next = match self.phase {
            Phase::ExitSeen if status.success() && self.protocol != Protocol::Systemd => {
                self.phase = Phase::HandedOn(status);
                Next::Wait
            }
            _ => Next::Fail(self.exited(status, last_status)),
        };
        self.settle(&next);
        next
    }

    /// The reap's deadline passed without an exit.
    pub(crate) fn on_reap_timeout(&mut self, deadline_passed: bool) -> Next {
        if let (Phase::Undecided(why), false) = (&self.phase, deadline_passed) {
            let next = Next::Fail(ReadyError::Undecidable {
                pid: self.pid,
                why: why.clone(),
            });
            self.phase = Phase::Decided;
            return next;
        }
        // Still reaping: a later wait resumes here.
        Next::Timeout
    }

    fn exited(&self, status: ExitStatus, last_status: Option<String>) -> ReadyError {
        ReadyError::Exited {
            pid: self.pid,
            status,
            last_status,
        }
    }

    fn settle(&mut self, next: &Next) {
        if matches!(next, Next::Ready(..) | Next::Fail(_)) {
            self.phase = Phase::Decided;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn end() -> Seen {
        Seen::End(Ready::new(7))
    }

    #[test]
    fn an_end_while_alive_is_ready_and_while_dying_is_the_exit() {
        let mut v = Verdict::new(7, Protocol::Native);
        assert!(matches!(
            v.on_seen(end(), || Liveness::Alive),
            Next::Ready(_, ReadyVia::Closed)
        ));
        let mut v = Verdict::new(7, Protocol::Pipe);
        assert!(matches!(v.on_seen(end(), || Liveness::Exiting), Next::Reap));
        assert!(v.reaping());
        assert!(matches!(
            v.on_exit(exit(0), None),
            Next::Fail(ReadyError::Exited { .. })
        ));
    }

    #[test]
    fn after_an_exit_0_only_a_message_is_ready() {
        for protocol in [Protocol::Native, Protocol::Pipe] {
            let mut v = Verdict::new(7, protocol);
            assert!(matches!(
                v.on_seen(Seen::Exit, || unreachable!()),
                Next::Reap
            ));
            assert!(matches!(v.on_exit(exit(0), None), Next::Wait));
            assert!(!v.watches_exit());
            // The end is not asked about liveness: it proves nothing now.
            let mut w = v.clone();
            assert!(matches!(
                w.on_seen(end(), || panic!("liveness asked")),
                Next::Fail(ReadyError::Exited { .. })
            ));
            assert!(matches!(
                v.on_seen(Seen::Ready(Ready::new(8), ReadyVia::Message), || {
                    unreachable!()
                }),
                Next::Ready(..)
            ));
        }
    }

    #[test]
    fn an_exit_with_the_channel_open_fails_unless_it_is_a_wrapper() {
        let mut v = Verdict::new(7, Protocol::Native);
        v.on_seen(Seen::Exit, || unreachable!());
        assert!(matches!(v.on_exit(exit(3), None), Next::Fail(_)));
        // systemd has no wrapper rule of this kind (MAINPID= is its way).
        let mut v = Verdict::new(7, Protocol::Systemd);
        v.on_seen(Seen::Exit, || unreachable!());
        assert!(matches!(v.on_exit(exit(0), None), Next::Fail(_)));
    }

    #[test]
    fn an_undecidable_end_is_a_clear_error_or_the_exit() {
        let mut v = Verdict::new(7, Protocol::Native);
        let why = || Liveness::Unknown("no /proc".into());
        assert!(matches!(v.on_seen(end(), why), Next::Reap));
        assert_eq!(v.reap_deadline(10, 3), 3);
        assert!(matches!(
            v.clone().on_reap_timeout(false),
            Next::Fail(ReadyError::Undecidable { .. })
        ));
        assert!(matches!(v.clone().on_reap_timeout(true), Next::Timeout));
        assert!(matches!(
            v.on_exit(exit(1), None),
            Next::Fail(ReadyError::Exited { .. })
        ));
    }

    #[test]
    fn a_reap_that_times_out_resumes() {
        let mut v = Verdict::new(7, Protocol::Pipe);
        v.on_seen(end(), || Liveness::Exiting);
        assert!(matches!(v.on_reap_timeout(true), Next::Timeout));
        assert!(v.reaping());
        assert!(matches!(v.on_exit(exit(0), None), Next::Fail(_)));
    }
}
