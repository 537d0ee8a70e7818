//! What the child sees, in one place: the protocols' names, the
//! environment variables that offer them, and taking over the fd a parent
//! handed down (validated once, for every child-side API).
//!
//! Imports point one way: this module depends on `sys` and `error` only;
//! the readiness core, the protocols, spawning and the child side depend
//! on it.

use std::fmt;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::fcntl::FdFlag;

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

/// The variable that names the native socket the parent made:
/// `READYFD_INODE=<st_dev>:<st_ino>` (decimal, as `fstat` reports them).
/// A child takes the fd `READYFD` names only if it is that socket, so a
/// grandchild that inherited the variable without the fd never takes an
/// unrelated fd. Parents should set it; a child accepts its absence (a
/// parent written before it existed, or in another language).
pub const READYFD_INODE_ENV: &str = "READYFD_INODE";

/// The pipe protocol's counterpart of [`READYFD_INODE_ENV`]: the identity
/// of the write end `CHILD_READY_FD` names.
pub const CHILD_READY_FD_INODE_ENV: &str = "CHILD_READY_FD_INODE";

/// The environment variable that names the notification socket
/// (`NOTIFY_SOCKET=/run/user/1000/readyfd-Ab12Cd/notify`).
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// The variables through which a parent offers a readiness protocol (the
/// first three, in the order [`notify_ready`](crate::notify_ready) looks at
/// them) and names the fd it passed. A program that starts other programs
/// may keep them out of their environment, so that a grandchild does not
/// look for its parent's channel (it would not take it: the fd is
/// close-on-exec and its identity is checked, but it would report an
/// error instead of "not offered"):
///
/// ```
/// use std::process::Command;
///
/// let mut cmd = Command::new("true");
/// for var in readyfd::env::READINESS_VARS {
///     cmd.env_remove(var);
/// }
/// ```
pub const READINESS_ENV_VARS: [&str; 5] = [
    READYFD_ENV,
    CHILD_READY_FD_ENV,
    NOTIFY_SOCKET_ENV,
    READYFD_INODE_ENV,
    CHILD_READY_FD_INODE_ENV,
];

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

/// `<st_dev>:<st_ino>` of an open fd: what the parent puts in
/// [`READYFD_INODE_ENV`] or [`CHILD_READY_FD_INODE_ENV`].
pub(crate) fn fd_identity(fd: BorrowedFd<'_>) -> std::io::Result<String> {
    let st = fstat(fd)?;
    Ok(format!("{}:{}", st.st_dev, st.st_ino))
}

/// Serialises taking an inherited fd between this process's threads: the
/// check that nobody took it yet and the taking are one step.
static TAKING: Mutex<()> = Mutex::new(());

/// Takes over the inherited fd `fd` that `var` names, after `check` (the
/// protocol's test of its kind) passed: the one way every child-side API
/// takes an fd its parent passed, and why those APIs are safe.
///
/// An fd that survived `exec` is not close-on-exec (exec closed those), and
/// taking it makes it close-on-exec: an fd that already is was taken by
/// this process before, or is another fd opened since at that number (Rust
/// opens every fd close-on-exec). Either way it is not ours to take, and it
/// is refused. The identity in `id_var`, when the parent set it, must be the
/// fd's own, so a process that inherited the variables without the fd (a
/// grandchild) takes nothing. The check and the taking hold one lock, so
/// two threads cannot both take the fd.
fn take_inherited(
    var: &'static str,
    id_var: &'static str,
    fd: RawFd,
    check: impl FnOnce(BorrowedFd<'_>) -> Result<(), &'static str>,
) -> Result<OwnedFd, EnvError> {
    let bad = |why| EnvError::BadFd { var, fd, why };
    if fd <= 2 {
        return Err(bad("is stdin, stdout or stderr"));
    }
    let _taking = TAKING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: only borrowed for the checks below; each fails cleanly
    // (EBADF) on a closed number, and nothing here closes it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = match nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD) {
        Ok(flags) => FdFlag::from_bits_truncate(flags),
        Err(_) => return Err(bad("is not open")),
    };
    if flags.contains(FdFlag::FD_CLOEXEC) {
        return Err(EnvError::AlreadyTaken { var, fd });
    }
    if let Some(expected) = std::env::var_os(id_var) {
        let found = fd_identity(borrowed).map_err(|e| EnvError::Unusable {
            var,
            fd,
            what: "could not read its identity (fstat)",
            source: std::sync::Arc::new(e),
        })?;
        let expected = expected.to_string_lossy();
        if !valid_identity(&expected) {
            return Err(EnvError::MalformedIdentity {
                var: id_var,
                value: expected.into_owned(),
            });
        }
        if found != expected {
            return Err(EnvError::NotInherited {
                var,
                fd,
                id_var,
                expected: expected.into_owned(),
                found,
            });
        }
    }
    check(borrowed).map_err(bad)?;
    sys::set_cloexec(borrowed).map_err(|e| EnvError::Unusable {
        var,
        fd,
        what: "could not make it close-on-exec",
        source: std::sync::Arc::new(e),
    })?;
    // SAFETY: the fd is open; it was inherited across exec and nobody in
    // this process took it before (it was not close-on-exec, and every
    // taker, this one included, makes it so under the lock we hold); and
    // when the parent named it, it is the very socket or pipe the parent
    // made. It is the parent's gift to this process's readyfd, taken once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `<digits>:<digits>`.
fn valid_identity(text: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    matches!(text.split_once(':'), Some((dev, ino)) if digits(dev) && digits(ino))
}

/// Validates the pipe fd `CHILD_READY_FD` names (a pipe or a socket, open
/// for writing, the one the parent made) and takes it over.
pub(crate) fn take_pipe_fd(fd: RawFd) -> Result<OwnedFd, EnvError> {
    take_inherited(CHILD_READY_FD_ENV, CHILD_READY_FD_INODE_ENV, fd, |fd| {
        let st = fstat(fd).map_err(|_| "is not open")?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind != SFlag::S_IFIFO && kind != SFlag::S_IFSOCK {
            return Err("is not a pipe or a socket");
        }
        let fl = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map_err(|_| "is not open")?;
        let mode = nix::fcntl::OFlag::from_bits_truncate(fl) & nix::fcntl::OFlag::O_ACCMODE;
        if mode == nix::fcntl::OFlag::O_RDONLY {
            return Err("is open for reading only (the parent must pass the pipe's write end)");
        }
        Ok(())
    })
}

/// Reads `READYFD`, validates the fd it names (an open AF_UNIX stream
/// socket, the one the parent made), makes it close-on-exec and takes it
/// over: the one way every child-side API finds its native channel.
/// `Ok(None)` when unset.
pub(crate) fn take_native() -> Result<Option<(RawFd, OwnedFd)>, EnvError> {
    let Some(fd) = env_fd(READYFD_ENV)? else {
        return Ok(None);
    };
    let owned = take_inherited(READYFD_ENV, READYFD_INODE_ENV, fd, |fd| {
        sys::check_unix_socket(fd, SockType::Stream)
    })?;
    Ok(Some((fd, owned)))
}
