//! Thin, fd-owning wrappers over the system calls readyfd needs. Every fd
//! is created close-on-exec and wrapped in an [`OwnedFd`] at once, so every
//! error path closes it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, socketpair};

/// A connected AF_UNIX stream socket pair, both ends close-on-exec.
pub(crate) fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// A pipe `(read, write)`, both ends close-on-exec.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// `pidfd_open(2)`: an fd that becomes readable when process `pid` exits.
/// The pid must be an unreaped child of ours, so it cannot have been reused.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new fd
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us, and nothing else owns it.
    // pidfds are always created close-on-exec.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// An eventfd used to wake a thread blocked in `poll`.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    let e = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
    Ok(OwnedFd::from(e))
}

/// Adds one to an eventfd (never blocks: a full counter is already a wake-up).
pub(crate) fn eventfd_wake(fd: BorrowedFd<'_>) {
    let one = 1u64.to_ne_bytes();
    let _ = nix::unistd::write(fd, &one);
}

/// Resets an eventfd.
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut b = [0u8; 8];
    let _ = nix::unistd::read(fd, &mut b);
}

/// Sets or clears `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags & !OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Sets close-on-exec.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// One `send` with `MSG_NOSIGNAL | MSG_DONTWAIT`, retried on EINTR: never
/// raises SIGPIPE, never blocks. `Ok(0)` only for an empty buffer;
/// `WouldBlock` when the socket buffer is full.
pub(crate) fn send_nonblocking(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    loop {
        match nix::sys::socket::send(
            fd.as_raw_fd(),
            buf,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Reads what is available into the spare capacity of `buf`, made at least
/// `want` bytes (more when `buf` already has room, such as a frame decoder
/// reserved for a large frame: one read then takes all the socket holds),
/// retrying on EINTR. Returns the count and whether the read was short (less
/// than the room offered: the fd had nothing more at that moment).
/// `Ok((0, _))` is end of stream; `WouldBlock` when nothing is there (the fd
/// must be non-blocking).
pub(crate) fn read_into(
    fd: BorrowedFd<'_>,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<(usize, bool)> {
    buf.reserve(want.max(1));
    let spare = buf.spare_capacity_mut();
    let len = spare.len();
    loop {
        // SAFETY: `spare` is writable memory owned by `buf` of at least `len`
        // bytes; read(2) writes at most `len` bytes into it and we only
        // extend `buf` over the bytes it reports as written.
        let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), len) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: read(2) initialised exactly `n <= len` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok((n, n < len));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits until `fd` is ready for `events` or `deadline` passes (`None`:
/// forever). Returns the revents, empty on timeout. Retries on EINTR.
pub(crate) fn wait_fd(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
) -> io::Result<PollFlags> {
    let mut fds = [PollFd::new(fd, events)];
    poll_until(&mut fds, deadline)?;
    Ok(fds[0].revents().unwrap_or(PollFlags::empty()))
}

/// `poll(2)` until something is ready or `deadline` passes, retrying on
/// EINTR with the remaining time. Returns the number of ready fds.
pub(crate) fn poll_until(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up, so we never wake a hair early and spin.
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(fds, timeout) {
            Ok(n) => return Ok(n as usize),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What `/proc/<pid>/stat` says of a process that is our unreaped child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Running (or stopped): not exiting.
    Alive,
    /// Exiting, a zombie, or gone.
    Exiting,
}

/// Whether our child `pid` is alive. A process that has begun to exit has
/// `PF_EXITING` in its flags before the kernel closes its fds, so a closed
/// channel observed together with `Alive` was closed by a living process:
/// this resolves the "EOF is ambiguous" pitfall without sleeping.
pub(crate) fn liveness(pid: u32) -> Liveness {
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Liveness::Exiting;
    };
    // Fields after the parenthesised command name: state ppid pgrp session
    // tty_nr tpgid flags ...
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Liveness::Exiting;
    };
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next().unwrap_or("X");
    let flags: u64 = fields.nth(5).and_then(|f| f.parse().ok()).unwrap_or(0);
    if matches!(state, "Z" | "X" | "x") || flags & PF_EXITING != 0 {
        Liveness::Exiting
    } else {
        Liveness::Alive
    }
}

/// Checks that `fd` is an AF_UNIX socket of type `ty`.
pub(crate) fn check_unix_socket(fd: BorrowedFd<'_>, ty: SockType) -> Result<(), &'static str> {
    use nix::sys::socket::{UnixAddr, getsockname, getsockopt, sockopt};
    use nix::sys::stat::{SFlag, fstat};
    let st = fstat(fd).map_err(|_| "is not an open file descriptor")?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err("is not a socket");
    }
    match getsockopt(&fd, sockopt::SockType) {
        Ok(t) if t == ty => {}
        Ok(_) => {
            return Err(if ty == SockType::Stream {
                "is not a stream socket"
            } else {
                "is not a datagram socket"
            });
        }
        Err(_) => return Err("is not a socket"),
    }
    match getsockname::<UnixAddr>(fd.as_raw_fd()) {
        Ok(_) => Ok(()),
        Err(_) => Err("is not an AF_UNIX socket"),
    }
}

/// Runs in the forked child before exec (from `pre_exec`): puts `src` at
/// fd number `dst` and makes it inheritable. Allocation-free and
/// async-signal-safe: only `dup2` and `fcntl`.
///
/// `dup2` onto the same number is a no-op that leaves close-on-exec set, so
/// that case clears the flag with `fcntl` instead.
pub(crate) fn place_fd_in_child(src: RawFd, dst: RawFd) -> io::Result<()> {
    if src == dst {
        // SAFETY: fcntl on an fd number with integer arguments; no memory is
        // touched and nothing is allocated (async-signal-safe).
        let flags = unsafe { libc::fcntl(src, libc::F_GETFD) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(src, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    } else {
        // SAFETY: dup2 on two fd numbers; async-signal-safe, allocation-free.
        // The new descriptor at `dst` does not have close-on-exec set.
        if unsafe { libc::dup2(src, dst) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The time left until `deadline`, zero when it has passed.
pub(crate) fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
