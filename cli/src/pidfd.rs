//! Process handles that cannot name a recycled pid: `pidfd_open`,
//! `pidfd_send_signal`, and polling for the exit; plus the process facts
//! readyfd reads from `/proc`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;

/// A pidfd for `pid` (close-on-exec, as pidfd_open always makes it).
///
/// # Errors
/// ESRCH when no such process exists; EMFILE; ENOSYS before Linux 5.3.
pub(crate) fn open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` to the process behind `fd`. A process that has exited
/// (ESRCH) is not an error: there is nothing left to signal, and a pidfd
/// never reaches another process that got the same pid.
pub(crate) fn signal(fd: &OwnedFd, signal: Signal) {
    // SAFETY: pidfd_send_signal takes an fd we own, a signal number, a null
    // siginfo and flags; it touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Whether the process behind `fd` has exited (its pidfd is readable).
pub(crate) fn exited(fd: &OwnedFd) -> bool {
    wait_exit(fd, std::time::Duration::ZERO)
}

/// Waits up to `bound` for the process behind `fd` to exit; whether it did.
pub(crate) fn wait_exit(fd: &OwnedFd, bound: std::time::Duration) -> bool {
    let timeout = PollTimeout::try_from(bound).unwrap_or(PollTimeout::MAX);
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        return match poll(&mut fds, timeout) {
            Ok(n) => n > 0,
            // A signal is waiting in readyfd's signalfd: it is not lost.
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => false,
        };
    }
}

/// The parent pid and state letter of `pid`, from `/proc/PID/stat`.
pub(crate) fn parent_and_state(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name, in parentheses, may hold spaces and parentheses itself.
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((parent, state))
}

/// Whether `pid` descends from `ancestor` (a child, a grandchild...).
pub(crate) fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut p = pid;
    // A pid chain is short; the bound only guards against a loop read
    // while processes come and go.
    for _ in 0..256 {
        match parent_and_state(p) {
            Some((parent, _)) if parent == ancestor => return true,
            Some((parent, _)) if parent > 1 => p = parent,
            _ => return false,
        }
    }
    false
}

/// The children of this process, read from `/proc` (this kernel may have
/// no `/proc/PID/task/TID/children`).
pub(crate) fn children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_and_state(pid).is_some_and(|(parent, _)| parent == me))
        .collect()
}

/// The zombie children of this process (used only when `waitid` cannot
/// show them: see `supervise::reap_strays`).
pub(crate) fn zombie_children() -> Vec<u32> {
    children()
        .into_iter()
        .filter(|&pid| parent_and_state(pid).is_some_and(|(_, state)| state == 'Z'))
        .collect()
}
