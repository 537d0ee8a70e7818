//! The child side of all three protocols: one call that speaks whichever
//! the parent offered, so that one server binary runs unchanged under a
//! readyfd parent, a parent written as "Readiness notifications in Go"
//! shows, and systemd's `Type=notify`.
//!
//! The variables are looked at in this order, and the first one set
//! decides: `READYFD` (native), `CHILD_READY_FD` (pipe), `NOTIFY_SOCKET`
//! (systemd). Nothing here changes the environment (which is unsound while
//! other threads run); see [`env::READINESS_VARS`](crate::env::READINESS_VARS) for keeping the variables
//! from the programs you start.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, sendto, socket};
use nix::sys::stat::{SFlag, fstat};
use readyfd_proto::Ready;

use crate::child::Parent;
use crate::error::{ChannelError, EnvError};
use crate::protocol::{CHILD_READY_FD_ENV, NOTIFY_SOCKET_ENV, Protocol, env_fd, take_pipe_fd};
use crate::systemd::{NOTIFY_DATAGRAM_MAX, format_endpoint};

/// The child could not tell its parent it is ready.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// None of the protocol variables is set: this process was not started
    /// by a parent that waits for its readiness. Usually not an error a
    /// server should die of.
    #[error(
        "no readiness notification was asked for: none of READYFD, CHILD_READY_FD and NOTIFY_SOCKET is set (not started by readyfd, a CHILD_READY_FD parent or systemd Type=notify)"
    )]
    NotOffered,
    /// A protocol variable is set but unusable (not a number, a closed fd,
    /// an fd of the wrong kind).
    #[error(transparent)]
    Env(#[from] EnvError),
    /// `NOTIFY_SOCKET` is neither an absolute path nor an abstract `@name`.
    #[error("NOTIFY_SOCKET={value:?} is neither an absolute socket path nor an abstract @name")]
    BadSocket {
        /// The variable's value.
        value: String,
    },
    /// `NOTIFY_SOCKET` names a transport readyfd does not speak
    /// (`vsock:CID:PORT`, used by virtual machine managers).
    #[error(
        "NOTIFY_SOCKET={value:?} is an AF_VSOCK address, which readyfd does not support (use sd_notify from libsystemd)"
    )]
    Unsupported {
        /// The variable's value.
        value: String,
    },
    /// The native channel refused the message (the parent has gone, or
    /// `Ready` was already sent).
    #[error("cannot tell the readyfd parent")]
    Channel(#[from] ChannelError),
    /// Writing to the pipe or sending the datagram failed.
    #[error("cannot notify the parent over the {protocol} protocol (has the parent gone?)")]
    Io {
        /// The protocol spoken.
        protocol: Protocol,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl From<NotifyError> for io::Error {
    fn from(e: NotifyError) -> Self {
        let kind = match &e {
            NotifyError::NotOffered => io::ErrorKind::NotFound,
            NotifyError::Env(_) | NotifyError::BadSocket { .. } => io::ErrorKind::InvalidInput,
            NotifyError::Unsupported { .. } => io::ErrorKind::Unsupported,
            NotifyError::Channel(_) => io::ErrorKind::BrokenPipe,
            NotifyError::Io { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}

/// What [`notify_ready`] told the parent through. Dropping a
/// [`Notified::Native`] closes the channel: keep it.
#[derive(Debug)]
#[non_exhaustive]
#[must_use = "dropping a native Notified closes the channel to the parent"]
pub enum Notified {
    /// The native channel. Keep it: it carries requests both ways, and
    /// dropping it closes the channel.
    Native(Parent),
    /// The pipe: the first address and a newline were written, and the fd
    /// is closed.
    Pipe,
    /// A `READY=1` datagram was sent to `NOTIFY_SOCKET`.
    Systemd,
}

impl Notified {
    /// The protocol that was spoken.
    pub fn protocol(&self) -> Protocol {
        match self {
            Notified::Native(_) => Protocol::Native,
            Notified::Pipe => Protocol::Pipe,
            Notified::Systemd => Protocol::Systemd,
        }
    }
}

/// The child's handle on whichever protocol its parent offered, for status
/// updates before readiness. [`notify_ready`] is the one-call shorthand.
#[derive(Debug)]
pub struct Notifier {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Native(Parent),
    Pipe(PipeEnd),
    Systemd(UnixAddr),
}

/// The pipe's write end. Closing it while alive means "ready" to a pipe
/// parent, so a notifier dropped before readiness (a child that gives up)
/// does not close it: it stays open, close-on-exec, until this process
/// exits, and the parent sees that exit instead of a false "ready".
#[derive(Debug)]
struct PipeEnd(Option<OwnedFd>);

impl Drop for PipeEnd {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            std::mem::forget(fd);
        }
    }
}

impl Notifier {
    /// Finds the protocol the parent offered (`READYFD`, then
    /// `CHILD_READY_FD`, then `NOTIFY_SOCKET`) and takes over its fd. The
    /// fd is made close-on-exec at once; the environment is not changed.
    /// The fd is taken once per process, and only if it is the one the
    /// parent made (see [`Parent::from_env`]).
    ///
    /// # Errors
    /// [`NotifyError::NotOffered`] when no variable is set;
    /// [`NotifyError::Env`] when `READYFD` or `CHILD_READY_FD` is not a
    /// number or names an fd that is closed, of the wrong kind (the
    /// native fd must be an AF_UNIX stream socket; the pipe fd a pipe or a
    /// socket, open for writing), not the parent's, or already taken;
    /// [`NotifyError::BadSocket`] or [`NotifyError::Unsupported`] for a
    /// `NOTIFY_SOCKET` that is not a Unix socket address.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        if let Some(parent) = Parent::from_env()? {
            return Ok(Notifier {
                kind: Kind::Native(parent),
            });
        }
        if let Some(fd) = env_fd(CHILD_READY_FD_ENV)? {
            let fd = take_pipe_fd(fd)?;
            return Ok(Notifier {
                kind: Kind::Pipe(PipeEnd(Some(fd))),
            });
        }
        if let Some(value) = std::env::var_os(NOTIFY_SOCKET_ENV) {
            return Ok(Notifier {
                kind: Kind::Systemd(notify_addr(value.as_bytes())?),
            });
        }
        Err(NotifyError::NotOffered)
    }

    /// The protocol offered.
    pub fn protocol(&self) -> Protocol {
        match self.kind {
            Kind::Native(_) => Protocol::Native,
            Kind::Pipe(_) => Protocol::Pipe,
            Kind::Systemd(_) => Protocol::Systemd,
        }
    }

    /// Sends a one-line status text (native `Status`, systemd `STATUS=`);
    /// newlines become spaces, and a systemd status is cut to fit one
    /// datagram. The pipe has no status channel: there it does nothing.
    ///
    /// # Errors
    /// [`NotifyError::Channel`] when the native parent has gone;
    /// [`NotifyError::Io`] when the datagram cannot be sent.
    pub fn status(&self, text: &str) -> Result<(), NotifyError> {
        let line = one_line(text);
        match &self.kind {
            Kind::Native(parent) => Ok(parent.status(&line)?),
            Kind::Pipe(_) => Ok(()),
            Kind::Systemd(addr) => {
                let mut msg = String::from("STATUS=");
                push_truncated(&mut msg, &line, NOTIFY_DATAGRAM_MAX);
                send_datagram(addr, msg.as_bytes())
            }
        }
    }

    /// Tells the parent the child is ready, in its protocol:
    /// - native: the [`Ready`] message, whole;
    /// - pipe: the first address (as `Display` shows it: `127.0.0.1:41234`,
    ///   `/run/app.sock`), then a newline, then the fd is closed. The
    ///   newline satisfies s6-style parents; parents that read to EOF (the
    ///   article's, Debian Code Search's) trim it. No address: just the
    ///   newline;
    /// - systemd: one datagram `READY=1`, `STATUS=` (if any, one line),
    ///   `MAINPID=` (`ready.pid`, or this process when it is 0), and one
    ///   `X_READYFD_ADDRESS=name=address` per address that fits in the
    ///   4096-byte datagram (systemd ignores them; a readyfd parent reads
    ///   them into `Ready::addresses`).
    ///
    /// # Errors
    /// [`NotifyError::Channel`] when the native channel refuses (the
    /// parent has gone, `Ready` was sent before); [`NotifyError::Io`] when
    /// writing the pipe or sending the datagram fails. A pipe parent that
    /// has gone is an `EPIPE` error as long as `SIGPIPE` is ignored, which
    /// is how Rust programs start; a program that restored `SIGPIPE`'s
    /// default is killed by it, as by any write to such a pipe.
    pub fn ready(self, ready: &Ready) -> Result<Notified, NotifyError> {
        match self.kind {
            Kind::Native(parent) => {
                parent.ready(ready)?;
                Ok(Notified::Native(parent))
            }
            Kind::Pipe(mut end) => {
                let fd = end.0.take().expect("the pipe's fd is held until ready");
                let mut text = ready
                    .addresses
                    .first()
                    .map(|e| e.address.to_string())
                    .unwrap_or_default();
                text.push('\n');
                if let Err(source) = write_all(fd.as_fd(), text.as_bytes()) {
                    // Not written: closing would still say "ready".
                    std::mem::forget(fd);
                    return Err(NotifyError::Io {
                        protocol: Protocol::Pipe,
                        source,
                    });
                }
                drop(fd);
                Ok(Notified::Pipe)
            }
            Kind::Systemd(addr) => {
                send_datagram(&addr, ready_datagram(ready).as_bytes())?;
                Ok(Notified::Systemd)
            }
        }
    }
}

/// Tells the parent, over whichever protocol it offered, that this process
/// is ready: [`Notifier::from_env`] then [`Notifier::ready`]. The
/// environment is not changed: remove [`env::READINESS_VARS`](crate::env::READINESS_VARS) from the
/// commands this process starts.
///
/// # Example
/// ```no_run
/// use std::net::TcpListener;
/// use readyfd::{Notified, NotifyError, Ready};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let ready = Ready::new(std::process::id())
///     .address("http", listener.local_addr()?)
///     .status("serving");
/// let _keep = match readyfd::notify_ready(&ready) {
///     Ok(Notified::Native(parent)) => Some(parent), // keep the channel open
///     Ok(_) => None,
///     Err(NotifyError::NotOffered) => None, // started by hand: fine
///     Err(e) => return Err(e.into()),
/// };
/// // ... serve on `listener` ...
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`Notifier::from_env`] and [`Notifier::ready`];
/// [`NotifyError::NotOffered`] when no protocol is offered.
pub fn notify_ready(ready: &Ready) -> Result<Notified, NotifyError> {
    Notifier::from_env()?.ready(ready)
}

/// The address in `NOTIFY_SOCKET`: `/path` or `@abstract`.
fn notify_addr(value: &[u8]) -> Result<UnixAddr, NotifyError> {
    let text = || String::from_utf8_lossy(value).into_owned();
    match value {
        [b'/', ..] => UnixAddr::new(value).map_err(|_| NotifyError::BadSocket { value: text() }),
        [b'@', name @ ..] if !name.is_empty() => {
            UnixAddr::new_abstract(name).map_err(|_| NotifyError::BadSocket { value: text() })
        }
        v if v.starts_with(b"vsock:") || v.starts_with(b"vsock-") => {
            Err(NotifyError::Unsupported { value: text() })
        }
        _ => Err(NotifyError::BadSocket { value: text() }),
    }
}

/// One datagram, like libsystemd's `sd_notify`: a fresh close-on-exec
/// socket, `MSG_NOSIGNAL`, credentials added by the kernel.
fn send_datagram(addr: &UnixAddr, msg: &[u8]) -> Result<(), NotifyError> {
    let io_err = |source: io::Error| NotifyError::Io {
        protocol: Protocol::Systemd,
        source,
    };
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| io_err(e.into()))?;
    loop {
        match sendto(sock.as_raw_fd(), msg, addr, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io_err(e.into())),
        }
    }
}

/// `READY=1`, `STATUS=`, `MAINPID=`, then the addresses that fit.
fn ready_datagram(ready: &Ready) -> String {
    let pid = if ready.pid == 0 {
        std::process::id()
    } else {
        ready.pid
    };
    let mut msg = format!("READY=1\nMAINPID={pid}\n");
    if let Some(status) = &ready.status {
        msg.push_str("STATUS=");
        // Keep room for the newline.
        push_truncated(&mut msg, &one_line(status), NOTIFY_DATAGRAM_MAX - 1);
        msg.push('\n');
    }
    for line in ready.addresses.iter().filter_map(format_endpoint) {
        if msg.len() + line.len() < NOTIFY_DATAGRAM_MAX {
            msg.push_str(&line);
            msg.push('\n');
        }
    }
    msg
}

/// `text` with line breaks (and NULs, which would void a datagram) turned
/// into spaces.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r', '\0'], " ")
}

/// Appends as much of `text` as keeps `out` within `max` bytes, cut at a
/// character boundary.
fn push_truncated(out: &mut String, text: &str, max: usize) {
    let room = max.saturating_sub(out.len());
    let mut end = text.len().min(room);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&text[..end]);
}

/// `write(2)` until all is written, retrying on EINTR. A socket is written
/// with `MSG_NOSIGNAL`; a pipe relies on Rust programs ignoring `SIGPIPE`
/// (the default), so a parent that has gone is an `EPIPE` error.
fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    let is_socket = fstat(fd)
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK)
        .unwrap_or(false);
    while !buf.is_empty() {
        let r = if is_socket {
            nix::sys::socket::send(fd.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL)
        } else {
            nix::unistd::write(fd, buf)
        };
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use readyfd_proto::Address;

    #[test]
    fn socket_addresses() {
        assert!(notify_addr(b"/run/x/notify").is_ok());
        assert!(notify_addr(b"@name").is_ok());
        assert!(matches!(
            notify_addr(b"@"),
            Err(NotifyError::BadSocket { .. })
        ));
        assert!(matches!(
            notify_addr(b"relative"),
            Err(NotifyError::BadSocket { .. })
        ));
        assert!(matches!(
            notify_addr(b""),
            Err(NotifyError::BadSocket { .. })
        ));
        assert!(matches!(
            notify_addr(b"vsock:2:1234"),
            Err(NotifyError::Unsupported { .. })
        ));
    }

    #[test]
    fn ready_datagram_fits_and_stays_on_lines() {
        let r = Ready::new(42)
            .status("a\nb")
            .address("http", Address::Tcp("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(
            ready_datagram(&r),
            "READY=1\nMAINPID=42\nSTATUS=a b\nX_READYFD_ADDRESS=http=tcp:127.0.0.1:8080\n"
        );
        let long = Ready::new(1)
            .status("é".repeat(5000))
            .address("x", Address::Text("y".into()));
        let d = ready_datagram(&long);
        assert!(d.len() <= NOTIFY_DATAGRAM_MAX, "{}", d.len());
        assert!(d.starts_with("READY=1\n") && d.ends_with('\n'));
        assert!(!d.contains("X_READYFD"), "no room left for the address");
    }
}
