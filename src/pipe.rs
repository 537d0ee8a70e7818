//! The pipe protocol of "Readiness notifications in Go", parent side.
//!
//! The child inherits the write end of a pipe at fd N (`CHILD_READY_FD=N`).
//! It is ready when it writes a newline (s6's `notification-fd` rule), or
//! when it closes the fd while still alive (the article's rule). The text
//! it wrote before that is its ready data: an address, as Debian Code
//! Search's `-addrfd` and dbus-daemon's `--print-address=FD` write.
//!
//! Decisions, in the order the waiter applies them:
//! - **Data first.** Whatever the child wrote is read before its exit is
//!   looked at, so a newline written just before it died still counts as
//!   ready: the child said so while it was alive.
//! - **A newline is ready**, whatever follows. Only the text before the
//!   first newline is kept; the read end is closed at once, as s6 does, so
//!   a child that keeps writing gets `EPIPE` instead of blocking forever on
//!   a full pipe nobody reads.
//! - **EOF is ready only while the child is alive**, and never after the
//!   spawned process exited with the pipe still open (a wrapper): those
//!   rules are the readiness core's (`verdict.rs`, PROTOCOL.md §6), shared
//!   with the other protocols. This module only reports what it read.
//! - **The text is bounded** by [`PIPE_TEXT_LIMIT`]: one more byte without
//!   a newline is [`ProtocolError::PipeFlood`],
//!   and memory never grows past the bound.
//! - **Reporting.** The text, lossily decoded as UTF-8 and trimmed of
//!   surrounding whitespace, is the address named `""` in
//!   [`Ready::addresses`], parsed with [`Address`]'s `FromStr`
//!   (`127.0.0.1:41234` is TCP, `/run/app.sock` is Unix). A D-Bus style
//!   `unix:path=...,guid=...` stays whole as [`Address::Text`]. Empty text
//!   gives no address. `Ready::status` stays `None`: the pipe has no status
//!   channel. `Ready::pid` is the spawned pid.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use readyfd_proto::{Address, Ready};

use crate::error::ProtocolError;
use crate::sys;
use crate::verdict::{ReadyVia, Seen};

pub use crate::protocol::CHILD_READY_FD_ENV;

/// The most readiness text a pipe-protocol child may write before its
/// newline or close; one byte more is a
/// [`ProtocolError::PipeFlood`].
pub const PIPE_TEXT_LIMIT: usize = 4096;

/// The parent's read end of the readiness pipe and the text read so far.
#[derive(Debug)]
pub(crate) struct PipeWaiter {
    /// `None` once readiness is decided (ready, flood, EOF).
    read: Option<OwnedFd>,
    /// At most `PIPE_TEXT_LIMIT + 1` bytes.
    text: Vec<u8>,
}

impl PipeWaiter {
    /// A pipe whose read end (non-blocking) stays here; the write end, for
    /// the child, is returned close-on-exec.
    pub(crate) fn new() -> io::Result<(PipeWaiter, OwnedFd)> {
        let (read, write) = sys::pipe()?;
        // The two ends are separate open file descriptions: the child's
        // write end stays blocking.
        sys::set_nonblocking(read.as_fd(), true)?;
        let waiter = PipeWaiter {
            read: Some(read),
            text: Vec::new(),
        };
        Ok((waiter, write))
    }

    /// The read end to watch for readability; `None` once decided.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.read.as_ref().map(|r| r.as_fd())
    }

    /// One non-blocking step, for any driver: reads what the pipe holds
    /// and reports what it saw. `child_exited`: child `pid`'s pidfd fired
    /// (and its exit is watched). `None`: watch [`fd`](Self::fd) (and the
    /// pidfd, while its exit is watched) and step again.
    pub(crate) fn step(&mut self, pid: u32, child_exited: bool) -> Option<Seen> {
        match self.read_available(pid) {
            Some(seen) => Some(seen),
            // Open though the child is gone: a descendant holds it.
            None if child_exited => Some(Seen::Exit),
            None => None,
        }
    }

    /// Waits for the newline, the close or (with `watch_exit`) the exit of
    /// child `pid`, whose pidfd is `pidfd`, until `deadline`.
    pub(crate) fn wait(
        &mut self,
        pidfd: BorrowedFd<'_>,
        pid: u32,
        deadline: Instant,
        watch_exit: bool,
    ) -> Seen {
        loop {
            if let Some(seen) = self.step(pid, false) {
                return seen;
            }
            let Some(read) = self.fd() else {
                return Seen::Io(io::Error::other("the readiness pipe is already closed"));
            };
            let mut fds = [
                PollFd::new(read, PollFlags::POLLIN),
                PollFd::new(pidfd, PollFlags::POLLIN),
            ];
            let watched = if watch_exit {
                &mut fds[..]
            } else {
                &mut fds[..1]
            };
            match sys::poll_until(watched, Some(deadline)) {
                Err(e) => return Seen::Io(e),
                Ok(0) => return Seen::Timeout,
                Ok(_) => {}
            }
            if watch_exit && fds[1].revents().is_some_and(|r| !r.is_empty()) {
                // Data first: what the child wrote before it died counts.
                return self.step(pid, true).unwrap_or(Seen::Exit);
            }
        }
    }

    /// Reads what the pipe holds, without blocking, until it is empty, a
    /// newline arrives, the text overflows or the pipe reaches EOF.
    fn read_available(&mut self, pid: u32) -> Option<Seen> {
        let Some(read) = &self.read else {
            return Some(Seen::Io(io::Error::other(
                "the readiness pipe is already closed",
            )));
        };
        let mut chunk = [0u8; PIPE_TEXT_LIMIT + 1];
        loop {
            // Never more than one byte past the limit: memory is bounded.
            let room = PIPE_TEXT_LIMIT + 1 - self.text.len();
            match nix::unistd::read(read.as_fd(), &mut chunk[..room]) {
                Ok(0) => {
                    self.read = None;
                    let text = std::mem::take(&mut self.text);
                    return Some(Seen::End(ready_with_text(pid, &text)));
                }
                Ok(n) => {
                    let start = self.text.len();
                    self.text.extend_from_slice(&chunk[..n]);
                    if let Some(i) = self.text[start..].iter().position(|&b| b == b'\n') {
                        self.read = None;
                        let mut text = std::mem::take(&mut self.text);
                        text.truncate(start + i);
                        return Some(Seen::Ready(ready_with_text(pid, &text), ReadyVia::Newline));
                    }
                    if self.text.len() > PIPE_TEXT_LIMIT {
                        self.read = None;
                        self.text = Vec::new();
                        return Some(Seen::Protocol(ProtocolError::PipeFlood {
                            limit: PIPE_TEXT_LIMIT,
                        }));
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return None,
                Err(e) => return Some(Seen::Io(e.into())),
            }
        }
    }
}

/// The `Ready` of a pipe-protocol child: its text as the address `""`.
fn ready_with_text(pid: u32, text: &[u8]) -> Ready {
    let text = String::from_utf8_lossy(text);
    let text = text.trim();
    let ready = Ready::new(pid);
    if text.is_empty() {
        ready
    } else {
        ready.address("", parse_address(text))
    }
}

/// [`Address`]'s `FromStr`, except that a `unix:` text that is not a path
/// (D-Bus's `unix:path=/run/bus,guid=...`, `unix:abstract=...`) is kept
/// whole as text instead of losing its prefix.
pub(crate) fn parse_address(text: &str) -> Address {
    match text.parse::<Address>() {
        Ok(Address::Unix(p)) if !(p.starts_with('/') || p.starts_with('@')) => {
            Address::Text(text.to_string())
        }
        Ok(a) => a,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_becomes_the_unnamed_address() {
        let r = ready_with_text(7, b"127.0.0.1:41234");
        assert_eq!(r.pid, 7);
        assert_eq!(
            r.get(""),
            Some(&Address::Tcp("127.0.0.1:41234".parse().unwrap()))
        );
        assert_eq!(r.status, None);
        let r = ready_with_text(7, b" /run/app.sock\r");
        assert_eq!(r.get(""), Some(&Address::Unix("/run/app.sock".into())));
        let dbus = "unix:path=/tmp/dbus-x,guid=0123";
        assert_eq!(
            ready_with_text(7, dbus.as_bytes()).get(""),
            Some(&Address::Text(dbus.into()))
        );
        assert_eq!(
            ready_with_text(7, b"0").get(""),
            Some(&Address::Text("0".into()))
        );
        assert_eq!(
            ready_with_text(7, b"unix:/run/x").get(""),
            Some(&Address::Unix("/run/x".into()))
        );
        assert!(ready_with_text(7, b"  \n").addresses.is_empty());
        assert_eq!(
            ready_with_text(7, b"\xff").get(""),
            Some(&Address::Text("\u{fffd}".into()))
        );
    }
}
