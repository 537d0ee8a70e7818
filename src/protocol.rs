//! What the child sees, in one place: the protocols' names, the
//! environment variables that offer them, and taking over the fd a parent
//! handed down (validated once, for every child-side API).
//!
//! Imports point one way: this module depends on `sys` and `error` only;
//! the readiness core, the protocols, spawning and the child side depend
//! on it.

use std::fmt;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::SockType;
use nix::sys::stat::{SFlag, fstat};

use crate::error::EnvError;
use crate::sys;

/// The environment variable that announces the native channel's fd.
pub const READYFD_ENV: &str = "READYFD";

/// The fd number the child's end is placed at unless told otherwise.
pub const DEFAULT_FD: RawFd = 3;

/// Which readiness protocol the parent offers the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// readyfd's own: a socket pair, `READYFD=<fd>`, typed messages both
    /// ways. A child that just closes the fd while alive is ready too.
    #[default]
    Native,
    /// The pipe scheme of "Readiness notifications in Go": `CHILD_READY_FD=<fd>`;
    /// a newline, or closing the fd while alive, is ready; text before it is
    /// the address.
    Pipe,
    /// systemd's `sd_notify`: `NOTIFY_SOCKET=<path>`; `READY=1` is ready.
    Systemd,
}

impl Protocol {
    /// `native`, `pipe` or `systemd`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Pipe => "pipe",
            Protocol::Systemd => "systemd",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(Protocol::Native),
            "pipe" => Ok(Protocol::Pipe),
            "systemd" | "sd_notify" | "notify" => Ok(Protocol::Systemd),
            other => Err(format!(
                "unknown protocol {other:?} (expected native, pipe or systemd)"
            )),
        }
    }
}

/// The environment variable that announces the pipe's fd number to the
/// child (`CHILD_READY_FD=3`), as in "Readiness notifications in Go".
pub const CHILD_READY_FD_ENV: &str = "CHILD_READY_FD";

/// The environment variable that names the notification socket
/// (`NOTIFY_SOCKET=/run/user/1000/readyfd-Ab12Cd/notify`).
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// The variables through which a parent offers a readiness protocol, in
/// the order [`notify_ready`](crate::notify_ready) looks at them. A program that starts other
/// programs should keep them out of their environment, so that a
/// grandchild does not take its parent's channel for its own:
///
/// ```
/// use std::process::Command;
///
/// let mut cmd = Command::new("true");
/// for var in readyfd::READINESS_ENV_VARS {
///     cmd.env_remove(var);
/// }
/// ```
pub const READINESS_ENV_VARS: [&str; 3] = [READYFD_ENV, CHILD_READY_FD_ENV, NOTIFY_SOCKET_ENV];

/// The protocol the environment offers, if any, by the variables alone
/// (nothing is opened or checked).
pub fn offered_protocol() -> Option<Protocol> {
    let set = |v: &str| std::env::var_os(v).is_some();
    if set(READYFD_ENV) {
        Some(Protocol::Native)
    } else if set(CHILD_READY_FD_ENV) {
        Some(Protocol::Pipe)
    } else if set(NOTIFY_SOCKET_ENV) {
        Some(Protocol::Systemd)
    } else {
        None
    }
}

/// Parses an fd-number variable: `Ok(None)` when unset.
pub(crate) fn env_fd(var: &'static str) -> Result<Option<RawFd>, EnvError> {
    let Some(value) = std::env::var_os(var) else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    match text.parse::<RawFd>() {
        Ok(fd) if fd >= 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(fd)),
        _ => Err(EnvError::Malformed {
            var,
            value: text.into_owned(),
        }),
    }
}

/// Validates fd `fd` as an AF_UNIX socket of type `ty` (or, for `None`, any
/// open fd), sets close-on-exec and takes ownership of it.
///
/// # Safety
/// Nothing else may own `fd`.
pub(crate) unsafe fn take_fd(
    var: &'static str,
    fd: RawFd,
    ty: SockType,
) -> Result<OwnedFd, EnvError> {
    if fd <= 2 {
        return Err(EnvError::BadFd {
            var,
            fd,
            why: "is stdin, stdout or stderr",
        });
    }
    // SAFETY: only borrowed for the duration of the checks; fstat fails
    // cleanly (EBADF) on a closed number, which is checked first.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return Err(EnvError::BadFd {
            var,
            fd,
            why: "is not open",
        });
    }
    sys::check_unix_socket(borrowed, ty).map_err(|why| EnvError::BadFd { var, fd, why })?;
    sys::set_cloexec(borrowed).map_err(|_| EnvError::BadFd {
        var,
        fd,
        why: "cannot be made close-on-exec",
    })?;
    // SAFETY: the fd is open and our caller promises nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Validates the pipe fd (open, a pipe or a socket, open for writing),
/// makes it close-on-exec and takes it over.
///
/// # Safety
/// Nothing else may own `fd`.
pub(crate) unsafe fn take_pipe_fd(fd: RawFd) -> Result<OwnedFd, EnvError> {
    let bad = |why| EnvError::BadFd {
        var: CHILD_READY_FD_ENV,
        fd,
        why,
    };
    if fd <= 2 {
        return Err(bad("is stdin, stdout or stderr"));
    }
    // SAFETY: only borrowed for the checks; each fails cleanly (EBADF) on
    // a closed number.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let st = fstat(borrowed).map_err(|_| bad("is not open"))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFIFO && kind != SFlag::S_IFSOCK {
        return Err(bad("is not a pipe or a socket"));
    }
    let fl = nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|_| bad("is not open"))?;
    let mode = nix::fcntl::OFlag::from_bits_truncate(fl) & nix::fcntl::OFlag::O_ACCMODE;
    if mode == nix::fcntl::OFlag::O_RDONLY {
        return Err(bad(
            "is open for reading only (the parent must pass the pipe's write end)",
        ));
    }
    sys::set_cloexec(borrowed).map_err(|_| bad("cannot be made close-on-exec"))?;
    // SAFETY: open, checked, and our caller promises nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads `READYFD`, validates the fd it names (an open AF_UNIX stream
/// socket), makes it close-on-exec and takes it over: the one way every
/// child-side API finds its native channel. `Ok(None)` when unset.
///
/// # Safety
/// Nothing else may own the fd the variable names.
pub(crate) unsafe fn take_native() -> Result<Option<(RawFd, OwnedFd)>, EnvError> {
    let Some(fd) = env_fd(READYFD_ENV)? else {
        return Ok(None);
    };
    // SAFETY: checked to be an open fd of the right kind first; our caller
    // promises nothing else owns it.
    let owned = unsafe { take_fd(READYFD_ENV, fd, SockType::Stream)? };
    Ok(Some((fd, owned)))
}
