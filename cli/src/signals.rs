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
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals readyfd passes on or stops on.
pub(crate) const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Undoes what readyfd's own parent may have left it: SIGCHLD ignored
/// (then the kernel reaps every child at once and no wait ever sees an exit
/// status) and signals blocked. Called first thing in `main`, before any
/// thread exists. SIGINT, SIGTERM and SIGHUP keep an inherited "ignore"
/// (`nohup` means it); readyfd's children get every signal reset anyway
/// ([`Signals::reset_in_child`]).
///
/// # Errors
/// When sigaction or sigprocmask fails (it cannot, for these arguments).
pub(crate) fn reset_inherited() -> io::Result<()> {
    // SAFETY: setting the default action installs no handler: nothing of
    // ours runs in signal context.
    unsafe { nix::sys::signal::signal(Signal::SIGCHLD, nix::sys::signal::SigHandler::SigDfl) }?;
    SigSet::empty().thread_set_mask()?;
    Ok(())
}

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
}

impl Signals {
    /// Blocks SIGINT, SIGTERM, SIGHUP and SIGCHLD in the calling thread and
    /// opens a signalfd for them.
    ///
    /// Call it on the main thread before any other thread exists: threads
    /// inherit the mask, so no thread can then take one of these signals
    /// with its default action. Every child must get a clean signal state
    /// with [`reset_in_child`](Self::reset_in_child): a mask survives
    /// `exec`, and std's `Command` leaves it as it is.
    ///
    /// # Errors
    /// When `sigprocmask` or `signalfd` fails.
    pub(crate) fn block() -> io::Result<Signals> {
        let mut mask = SigSet::empty();
        for s in FORWARDED {
            mask.add(s);
        }
        mask.add(Signal::SIGCHLD);
        mask.thread_block()?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(io::Error::from)?;
        Ok(Signals { fd })
    }

    /// Makes `cmd`'s process start with the signal state of a fresh
    /// process: nothing blocked, every signal at its default action. A mask
    /// and an ignored signal survive `exec`, and std's `Command` resets only
    /// SIGPIPE: without this, a program would inherit the signals readyfd
    /// blocks for itself (one with SIGTERM blocked could not be stopped),
    /// and whatever readyfd's own parent ignored (an ignored SIGCHLD breaks
    /// every program that waits for its children), as systemd and
    /// dumb-init also reset.
    pub(crate) fn reset_in_child(cmd: &mut Command) {
        // SAFETY: the closure runs in the forked child before exec; it makes
        // only the sigprocmask and rt_sigaction system calls, with a set and
        // an all-zero kernel `sigaction` (SIG_DFL, no flags, empty mask) on
        // its stack: no allocation, no lock, async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                SigSet::empty().thread_set_mask()?;
                // The raw call, not libc's `signal`: glibc refuses the two
                // real-time signals it keeps for itself (32, 33), and those
                // can arrive ignored too. 64 is the kernel's _NSIG; the
                // kernel's sigset is 8 bytes.
                let dfl = [0u64; 4];
                for n in 1..=64 {
                    if n != libc::SIGKILL && n != libc::SIGSTOP {
                        libc::syscall(
                            libc::SYS_rt_sigaction,
                            n,
                            dfl.as_ptr(),
                            std::ptr::null_mut::<u64>(),
                            8,
                        );
                    }
                }
                Ok(())
            });
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
