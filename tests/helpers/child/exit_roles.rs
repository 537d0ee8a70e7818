//! Roles for `tests/peer_exit.rs`, a peer that dies after `Ready` while a
//! process it forked keeps its end of the socket open:
//!
//! - `exit-serve [WRAPPER_PID]`: says `Ready` with its own pid (after the
//!   process `WRAPPER_PID` has exited, when given: it was started by a
//!   wrapper that must be gone first), then answers requests on its one
//!   thread (a direct channel: forking is safe). `last-words`: answers
//!   `last words`, notifies `bye`, then forks a process that keeps the
//!   socket open and exits 3. `die`: the same without a word.
//!   `die-when-flooded`: answers `armed`, reads nothing more, and once
//!   64 KiB the parent sent wait unread, does as `die` (the parent is then
//!   in the middle of a larger frame).
//!   `exit-when-flooded`: the same as `die-when-flooded`, but it leaves
//!   no process behind: its end of the socket is closed when it exits.
//!   `flood-die`: answers `flooding`, notifies the numbers 0 to 31 (u32,
//!   little-endian), then the same. Anything else is echoed.
//! - `exit-early`: says `Ready`, forks a process that keeps the socket
//!   open, and exits 3 at once.

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use readyfd::{Incoming, Ready};

use crate::{parent, unknown_role};

/// How long the process left behind keeps the socket open at most (the
/// tests end its group long before).
const BOUND: Duration = Duration::from_secs(60);

/// How many notifications `flood-die` sends before it dies.
const FLOOD: u32 = 32;

pub(crate) fn run(role: &str, args: &[String]) {
    match role {
        "exit-serve" => serve(args.get(1).map(|p| p.parse().expect("a pid"))),
        "exit-early" => {
            let p = parent();
            p.ready(&Ready::new(std::process::id())).unwrap();
            // Whatever of `Ready` is not written yet moves to the direct
            // channel, which writes it.
            let d = p.into_direct().expect("direct");
            drop_leaving_grandchild(d)
        }
        _ => unknown_role(role),
    }
}

fn serve(wrapper: Option<i32>) {
    if let Some(pid) = wrapper {
        wait_gone(pid);
    }
    // A copy of the socket, to see how much the parent has sent unread.
    let spy = std::env::var("READYFD")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        // SAFETY: READYFD names the socket the parent handed us, open
        // until `parent()` takes it (just below), and only borrowed here.
        .map(|n| unsafe { std::os::fd::BorrowedFd::borrow_raw(n) }.try_clone_to_owned())
        .expect("READYFD")
        .expect("dup");
    let p = parent();
    p.ready(&Ready::new(std::process::id())).unwrap();
    let mut d = p.into_direct().expect("direct");
    while let Ok(inc) = d.recv() {
        if let Incoming::Request(req) = inc {
            match &req.body()[..] {
                b"last-words" => {
                    req.respond_bytes(b"last words").unwrap();
                    d.notify_bytes(b"bye").unwrap();
                    drop_leaving_grandchild(d)
                }
                b"die" => drop_leaving_grandchild(d),
                b"die-when-flooded" => {
                    req.respond_bytes(b"armed").unwrap();
                    die_when_flooded(d, spy.as_fd(), true)
                }
                b"exit-when-flooded" => {
                    req.respond_bytes(b"armed").unwrap();
                    die_when_flooded(d, spy.as_fd(), false)
                }
                b"flood-die" => {
                    req.respond_bytes(b"flooding").unwrap();
                    for i in 0..FLOOD {
                        d.notify_bytes(&i.to_le_bytes()).unwrap();
                    }
                    drop_leaving_grandchild(d)
                }
                body => {
                    let body = body.to_vec();
                    req.respond_bytes(&body).unwrap();
                }
            }
        }
    }
}

/// Reads nothing more, and once the parent has written at least 64 KiB
/// that nobody reads (the start of a frame far larger, which it is then
/// still writing, or waiting for room to write), exits 3: after forking a
/// process that keeps the socket open when `leave_grandchild`.
fn die_when_flooded(
    d: readyfd::DirectChannel,
    spy: std::os::fd::BorrowedFd<'_>,
    leave_grandchild: bool,
) -> ! {
    loop {
        let mut fds = [nix::poll::PollFd::new(spy, nix::poll::PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE).unwrap();
        let mut queued: nix::libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, the bytes queued for reading.
        let r = unsafe { nix::libc::ioctl(spy.as_raw_fd(), nix::libc::FIONREAD, &mut queued) };
        assert_eq!(r, 0, "FIONREAD: {}", std::io::Error::last_os_error());
        if queued >= 64 * 1024 {
            if leave_grandchild {
                drop_leaving_grandchild(d)
            }
            // Never dropped: dropping would say `Goodbye`.
            std::mem::forget(d);
            std::process::exit(3)
        }
    }
}

/// Waits until process `pid` has exited (at once if it is gone already).
fn wait_gone(pid: i32) {
    // SAFETY: pidfd_open takes integers and returns a new fd or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return; // gone (and reaped) already
    }
    // SAFETY: the kernel just gave us this fd.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE).unwrap();
}

/// Forks a process that keeps the socket open, and exits 3 without
/// closing the channel (the frames written so far are on their way).
fn drop_leaving_grandchild(d: readyfd::DirectChannel) -> ! {
    // Never dropped: dropping would say `Goodbye` and shut the socket down.
    std::mem::forget(d);
    // SAFETY: this process has one thread (its channel is direct, and the
    // I/O thread of the channel it came from was joined when it went), so
    // the forked child may run anything; it only sleeps and `_exit`s.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            // sleep-ok: it holds the socket open for the test, and ends by
            // itself at the latest then (the test kills its group first).
            std::thread::sleep(BOUND);
            // SAFETY: `_exit` ends the process at once, which is all we want.
            unsafe { nix::libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { .. } => std::process::exit(3),
    }
}
