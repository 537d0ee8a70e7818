//! Signals as events: SIGINT, SIGTERM, SIGHUP and SIGCHLD are blocked and
//! read from a signalfd, which is polled together with whatever else the
//! caller waits for. No handler, no polling loop: a blocked signal waits in
//! the fd until it is read, so none is lost between two waits.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::time::Instant;

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals readyfd passes on or stops on.
pub(crate) const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// What [`Signals::wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// SIGINT, SIGTERM or SIGHUP arrived.
    Signal {
        /// Which.
        signal: Signal,
        /// Sent by the terminal (Ctrl-C, hang-up) to the whole foreground
        /// process group, rather than by `kill` to readyfd.
        from_terminal: bool,
    },
    /// SIGCHLD: some child changed state; look at the children of interest.
    Child,
    /// The other fd became readable or hung up.
    Other,
    /// The deadline passed.
    Timeout,
}

/// The blocked signals and their signalfd.
#[derive(Debug)]
pub(crate) struct Signals {
    fd: SignalFd,
    /// The mask readyfd started with, which its children get back.
    original: SigSet,
}

impl Signals {
    /// Blocks SIGINT, SIGTERM, SIGHUP and SIGCHLD in the calling thread and
    /// opens a signalfd for them.
    ///
    /// Call it on the main thread before any other thread exists: threads
    /// inherit the mask, so no thread can then take one of these signals
    /// with its default action. Every child must get the original mask
    /// back with [`restore_in_child`](Self::restore_in_child): a mask
    /// survives `exec`, and std's `Command` leaves it as it is.
    ///
    /// # Errors
    /// When `sigprocmask` or `signalfd` fails.
    pub(crate) fn block() -> io::Result<Signals> {
        let mut mask = SigSet::empty();
        for s in FORWARDED {
            mask.add(s);
        }
        mask.add(Signal::SIGCHLD);
        let original = mask.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        Ok(Signals { fd, original })
    }

    /// Makes `cmd`'s process start with the signal mask readyfd started
    /// with, not with the signals readyfd blocks for itself (a program
    /// with SIGTERM blocked could not be stopped by it).
    pub(crate) fn restore_in_child(&self, cmd: &mut Command) {
        let original = self.original;
        // SAFETY: the closure runs in the forked child before exec and makes
        // one system call (pthread_sigmask) with a set it captured by value:
        // no allocation, no lock, async-signal-safe.
        unsafe {
            cmd.pre_exec(move || Ok(original.thread_set_mask()?));
        }
    }

    /// Waits for the next event: a pending signal first, then whichever of
    /// a signal, `other` becoming readable (or hung up) and `deadline`
    /// (`None`: none) comes first.
    ///
    /// # Errors
    /// When reading the signalfd or `poll` fails.
    pub(crate) fn wait(
        &self,
        other: Option<BorrowedFd<'_>>,
        deadline: Option<Instant>,
    ) -> io::Result<Event> {
        loop {
            if let Some(info) = self.fd.read_signal()? {
                let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                return Ok(if signal == Signal::SIGCHLD {
                    Event::Child
                } else {
                    Event::Signal {
                        signal,
                        from_terminal: info.ssi_code == libc::SI_KERNEL,
                    }
                });
            }
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Event::Timeout);
                    }
                    // Rounded up, so that we never wake a hair early and spin.
                    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = vec![PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            if let Some(o) = other {
                fds.push(PollFd::new(o, PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let fired = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            if fds.len() > 1 && fired(&fds[1]) && !fired(&fds[0]) {
                return Ok(Event::Other);
            }
            // A signal is read at the top of the loop; a timeout is seen
            // there too, as no time left.
        }
    }
}
