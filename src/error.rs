//! Error types of the I/O layer, one per concern.

use std::io;
use std::os::fd::RawFd;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use readyfd_proto::{DecodeError, EncodeError, Goodbye, RemoteError, SessionError};

/// Spawning a child with a readiness channel failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The requested fd number is stdin, stdout, stderr or negative.
    #[error(
        "cannot hand the readiness fd to the child as fd {0}: fds 0-2 are stdin, stdout and stderr (choose 3 or above)"
    )]
    ReservedFd(RawFd),
    /// The requested fd number is not below the fd limit (`ulimit -n`).
    #[error(
        "cannot hand the readiness fd to the child as fd {fd}: the fd limit (ulimit -n) is {limit}; choose a number below it, or raise the limit"
    )]
    FdAboveLimit {
        /// The fd number asked for.
        fd: RawFd,
        /// The soft limit on open fds.
        limit: u64,
    },
    /// Creating the socket pair, pipe or notify socket failed.
    #[error("cannot create the readiness channel")]
    Channel(#[source] io::Error),
    /// The program could not be started.
    #[error("cannot start {program}")]
    Start {
        /// The program as given.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// [`spawn`](crate::ReadyCommand::spawn) was called again on a
    /// `ReadyCommand` whose command already went to an earlier spawn.
    #[error(
        "cannot spawn {program} again from the same ReadyCommand: its command went to the first spawn (build a new ReadyCommand for another child)"
    )]
    AlreadySpawned {
        /// The program.
        program: String,
    },
    /// The fd asked for the channel is one of the listening sockets' slots
    /// (3 to 3+n-1, where socket activation puts them).
    #[error(
        "cannot hand the readiness fd to the child as fd {fd}: fds 3 to {last} hold the {count} listening socket(s) (leave fd() unset to have it placed above them, or choose {next} or above)",
        last = 2 + .count, next = 3 + .count
    )]
    FdTaken {
        /// The fd number asked for.
        fd: RawFd,
        /// How many listening sockets are passed.
        count: RawFd,
    },
    /// A listening socket's name is not one `LISTEN_FDNAMES` can carry.
    #[error(
        "cannot pass a listening socket named {name:?}: the name {why} (use printable ASCII without ':', at most 255 bytes)"
    )]
    ListenName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The listening sockets cannot be passed to this command.
    #[error("cannot pass listening sockets: {why}")]
    Listen {
        /// Why.
        why: String,
    },
    /// The child started but could not be watched (`pidfd_open` failed).
    #[error("cannot watch child {pid}{}", watch_hint(.source))]
    Watch {
        /// The child's pid.
        pid: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What to do about a failed `pidfd_open`: a kernel without it, or the
/// process's fd table full.
fn watch_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(nix::libc::ENOSYS) => " (readyfd needs Linux 5.3 or later)",
        Some(nix::libc::EMFILE | nix::libc::ENFILE) => {
            " (too many open files: raise the limit, ulimit -n, or close fds)"
        }
        _ => "",
    }
}

/// Waiting for readiness failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadyError {
    /// The child exited (or was killed) before it was ready.
    #[error("child {pid} {} before it was ready{}", describe_exit(*.status), last_status_suffix(.last_status))]
    Exited {
        /// The child's pid.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
        /// The last status text it sent, if any.
        last_status: Option<String>,
    },
    /// The child was not ready in time.
    #[error("child {pid} was not ready after {}{}{}", humanize(*.waited), if *.killed { "; it was killed" } else { "; it is still running" }, last_status_suffix(.last_status))]
    Timeout {
        /// The child's pid.
        pid: u32,
        /// How long we waited.
        waited: Duration,
        /// Whether readyfd killed the child (see [`OnTimeout`](crate::OnTimeout)).
        killed: bool,
        /// The last status text it sent, if any.
        last_status: Option<String>,
    },
    /// The child broke the readiness protocol.
    #[error("child {pid} broke the readiness protocol")]
    Protocol {
        /// The child's pid.
        pid: u32,
        /// What was wrong.
        #[source]
        source: ProtocolError,
    },
    /// The child reported that it failed to start (sd_notify `ERRNO=`,
    /// `STOPPING=1` before `READY=1`, or a native `Goodbye`).
    #[error("child {pid} reported failure before it was ready: {message}")]
    Failed {
        /// The child's pid.
        pid: u32,
        /// The errno it reported, if any.
        errno: Option<i32>,
        /// What it said.
        message: String,
    },
    /// The child closed the channel without a readiness message, and
    /// whether it was alive then cannot be known (no readable `/proc`), so
    /// it is judged neither ready nor failed.
    #[error(
        "child {pid} closed the readiness channel without saying it is ready, and readyfd cannot tell whether it was alive then ({why}): have it send an explicit readiness message (a native Ready, a newline on the pipe, READY=1), or make /proc readable"
    )]
    Undecidable {
        /// The child's pid.
        pid: u32,
        /// Why liveness cannot be known.
        why: String,
    },
    /// `wait_ready` was called again after an earlier call failed.
    #[error("readiness of child {pid} was already decided by an earlier failed wait")]
    AlreadyFailed {
        /// The child's pid.
        pid: u32,
    },
    /// An operating-system call failed while waiting.
    #[error("waiting for readiness failed")]
    Io(#[from] io::Error),
}

/// What broke a readiness protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The native session failed (bad frame, version mismatch, ...).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The pipe protocol's text exceeded its bound without a newline.
    #[error("more than {limit} bytes of readiness text without a newline (flood)")]
    PipeFlood {
        /// The bound.
        limit: usize,
    },
    /// Any other violation, described.
    #[error("{0}")]
    Other(String),
}

/// Why a channel is closed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer said `Goodbye`.
    Goodbye(Goodbye),
    /// The peer closed its end without a word, or died (on a parent's
    /// channel after readiness: the process that said `Ready` exited,
    /// whoever else still holds its end; PROTOCOL.md §6.3). Also when a
    /// write found the peer's end closed (`EPIPE`, `ECONNRESET`) before
    /// the end of stream or the exit was seen: the same event.
    PeerClosed,
    /// This side closed the channel.
    Local,
    /// The peer broke the protocol.
    Protocol(SessionError),
    /// A socket call failed (other than a write to a closed peer, which is
    /// [`PeerClosed`](Self::PeerClosed)), or the channel's I/O thread or task ended
    /// (a panic, a runtime shut down): the `io::Error` says which, and is
    /// the [`source`](std::error::Error::source). In an `Arc`, so that the
    /// reason stays `Clone` (every waiter gets it).
    Io(Arc<io::Error>),
}

/// Two reasons are equal when they are the same case with equal contents;
/// two [`CloseReason::Io`] when their errors have the same kind, OS error
/// code and text (an `io::Error` has no equality of its own).
impl PartialEq for CloseReason {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (CloseReason::Goodbye(a), CloseReason::Goodbye(b)) => a == b,
            (CloseReason::PeerClosed, CloseReason::PeerClosed)
            | (CloseReason::Local, CloseReason::Local) => true,
            (CloseReason::Protocol(a), CloseReason::Protocol(b)) => a == b,
            (CloseReason::Io(a), CloseReason::Io(b)) => same_io_error(a, b),
            _ => false,
        }
    }
}

impl Eq for CloseReason {}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Goodbye(g) if g.message.is_empty() => {
                write!(f, "the peer said goodbye ({:?})", g.reason)
            }
            CloseReason::Goodbye(g) => {
                write!(f, "the peer said goodbye ({:?}: {})", g.reason, g.message)
            }
            CloseReason::PeerClosed => f.write_str("the peer closed the channel or exited"),
            CloseReason::Local => f.write_str("this side closed the channel"),
            // The session error is the source, not part of the message.
            CloseReason::Protocol(_) => f.write_str("the peer broke the protocol"),
            // The io::Error is the source, not part of the message.
            CloseReason::Io(_) => f.write_str("the channel's I/O failed"),
        }
    }
}

impl std::error::Error for CloseReason {
    /// The protocol violation, for [`CloseReason::Protocol`]; the
    /// `io::Error`, for [`CloseReason::Io`].
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CloseReason::Protocol(e) => Some(e),
            CloseReason::Io(e) => Some(&**e),
            _ => None,
        }
    }
}

/// A channel operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The channel is closed; pending and later requests fail with this.
    #[error("the channel is closed")]
    Closed(#[source] CloseReason),
    /// The peer answered the request with an error.
    #[error("the peer failed the request: {0}")]
    Remote(RemoteError),
    /// A message could not be encoded (too large for the peer, or its
    /// `Serialize` failed).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A body did not decode as the expected type.
    #[error("cannot decode the peer's message as {type_name}")]
    Decode {
        /// The type it was decoded as.
        type_name: &'static str,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// No answer within the given time (the channel stays usable; a late
    /// answer is discarded).
    #[error("no answer within {}", humanize(*.0))]
    Timeout(Duration),
    /// This side may not do that (a parent sending `Ready`, answering twice).
    #[error("not allowed: {0}")]
    NotAllowed(&'static str),
    /// A system call failed.
    #[error("a system call on the channel failed")]
    Io(#[source] Arc<io::Error>),
}

impl From<SessionError> for ChannelError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Encode(e) => ChannelError::Encode(e),
            SessionError::NotAllowed(m) => ChannelError::NotAllowed(m),
            SessionError::Closed => ChannelError::Closed(CloseReason::Local),
            other => ChannelError::Closed(CloseReason::Protocol(other)),
        }
    }
}

impl From<ChannelError> for io::Error {
    fn from(e: ChannelError) -> Self {
        let kind = match &e {
            ChannelError::Closed(_) => io::ErrorKind::BrokenPipe,
            ChannelError::Timeout(_) => io::ErrorKind::TimedOut,
            ChannelError::Encode(_) | ChannelError::Decode { .. } => io::ErrorKind::InvalidData,
            ChannelError::NotAllowed(_) => io::ErrorKind::PermissionDenied,
            ChannelError::Io(e) => e.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

impl From<ReadyError> for io::Error {
    fn from(e: ReadyError) -> Self {
        let kind = match &e {
            ReadyError::Timeout { .. } => io::ErrorKind::TimedOut,
            ReadyError::Protocol { .. } => io::ErrorKind::InvalidData,
            ReadyError::Io(e) => e.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

impl From<SpawnError> for io::Error {
    fn from(e: SpawnError) -> Self {
        let kind = match &e {
            SpawnError::ReservedFd(_)
            | SpawnError::AlreadySpawned { .. }
            | SpawnError::FdTaken { .. }
            | SpawnError::ListenName { .. }
            | SpawnError::Listen { .. } => io::ErrorKind::InvalidInput,
            SpawnError::Start { source, .. } => source.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Taking the listening sockets passed by socket activation failed
/// ([`Listeners`](crate::Listeners)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// A socket-activation variable has a value `sd_listen_fds` rejects.
    #[error("{var}={value:?} {why}")]
    Malformed {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A passed fd number is not open.
    #[error(
        "fd {fd} was passed as a listening socket but is not open (was it closed, e.g. by code that closes every fd above 2?)"
    )]
    NotOpen {
        /// The fd number.
        fd: RawFd,
    },
    /// The sockets were already taken in this process.
    #[error(
        "the listening sockets of this process were already taken (Listeners::from_env takes them once per process: keep the Listeners and take from it)"
    )]
    AlreadyTaken,
    /// No socket is left under that name.
    #[error("no listening socket named {name:?} is left (passed: {})", if .passed.is_empty() { "none".to_string() } else { .passed.join(", ") })]
    NoSuchName {
        /// The name asked for.
        name: String,
        /// The names passed (taken or not).
        passed: Vec<String>,
    },
    /// The socket is not of the kind asked for.
    #[error("the listening socket {name:?} (fd {fd}) {why}")]
    WrongKind {
        /// Its name.
        name: String,
        /// Its fd number.
        fd: RawFd,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl From<ListenError> for io::Error {
    fn from(e: ListenError) -> Self {
        let kind = match &e {
            ListenError::NoSuchName { .. } => io::ErrorKind::NotFound,
            ListenError::Malformed { .. } | ListenError::WrongKind { .. } => {
                io::ErrorKind::InvalidInput
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// The child side found no usable channel in its environment.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The variable is set but is not a file descriptor number.
    #[error("{var}={value:?} is not a file descriptor number")]
    Malformed {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The variable names an fd that is closed or of the wrong type.
    #[error(
        "{var}={fd} names fd {fd}, which {why} (was it closed, e.g. by a daemon that closes every fd above 2, or by a launcher that does, as Python's subprocess does unless given close_fds=False?)"
    )]
    BadFd {
        /// The variable's name.
        var: &'static str,
        /// The fd number.
        fd: RawFd,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The fd is the one the parent passed, but a system call on it, or
    /// setting up the channel over it, failed: the cause says why (an
    /// exhausted fd table, no thread could be started).
    #[error("{var}={fd}: {what}")]
    Unusable {
        /// The variable's name.
        var: &'static str,
        /// The fd number.
        fd: RawFd,
        /// What failed: "could not make fd 3 close-on-exec", say.
        what: &'static str,
        /// Why.
        #[source]
        source: Arc<io::Error>,
    },
    /// The identity the parent put in `READYFD_INODE` (or
    /// `CHILD_READY_FD_INODE`) is not `<st_dev>:<st_ino>`.
    #[error("{var}={value:?} is not an fd identity (<st_dev>:<st_ino>, in decimal)")]
    MalformedIdentity {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The fd is not the one the parent made: its identity differs from the
    /// one the parent put in `id_var`. The variables were inherited without
    /// the fd (a grandchild of the readyfd parent, say), and the fd at that
    /// number is another one: it is left alone.
    #[error(
        "{var}={fd} names fd {fd}, which is not the fd the parent passed ({id_var}={expected}, fd {fd} is {found}): the variables were inherited without the fd, so this process was not offered the channel"
    )]
    NotInherited {
        /// The variable's name.
        var: &'static str,
        /// The fd number.
        fd: RawFd,
        /// The variable that holds the parent's fd's identity.
        id_var: &'static str,
        /// Its value: `<st_dev>:<st_ino>`.
        expected: String,
        /// The identity of the fd found at that number.
        found: String,
    },
    /// The fd was already taken by this process (a second `from_env`, say),
    /// or the number now holds an fd this process opened: it is
    /// close-on-exec, which an fd inherited across `exec` is not until it is
    /// taken. Inherited fds are taken once per process.
    #[error(
        "{var}={fd} names fd {fd}, which this process has already taken or opened anew (it is close-on-exec): an inherited fd is taken once per process"
    )]
    AlreadyTaken {
        /// The variable's name.
        var: &'static str,
        /// The fd number.
        fd: RawFd,
    },
}

impl PartialEq for EnvError {
    fn eq(&self, other: &Self) -> bool {
        use EnvError::*;
        match (self, other) {
            (Malformed { var, value }, Malformed { var: v, value: w })
            | (MalformedIdentity { var, value }, MalformedIdentity { var: v, value: w }) => {
                var == v && value == w
            }
            (
                BadFd { var, fd, why },
                BadFd {
                    var: v,
                    fd: f,
                    why: w,
                },
            ) => var == v && fd == f && why == w,
            (
                Unusable {
                    var,
                    fd,
                    what,
                    source,
                },
                Unusable {
                    var: v,
                    fd: f,
                    what: w,
                    source: s,
                },
            ) => var == v && fd == f && what == w && same_io_error(source, s),
            (
                NotInherited {
                    var,
                    fd,
                    id_var,
                    expected,
                    found,
                },
                NotInherited {
                    var: v,
                    fd: f,
                    id_var: i,
                    expected: e,
                    found: g,
                },
            ) => var == v && fd == f && id_var == i && expected == e && found == g,
            (AlreadyTaken { var, fd }, AlreadyTaken { var: v, fd: f }) => var == v && fd == f,
            _ => false,
        }
    }
}

impl Eq for EnvError {}

/// Two shared I/O errors are equal when they are one, or alike in kind,
/// errno and text.
fn same_io_error(a: &Arc<io::Error>, b: &Arc<io::Error>) -> bool {
    Arc::ptr_eq(a, b)
        || (a.kind() == b.kind()
            && a.raw_os_error() == b.raw_os_error()
            && a.to_string() == b.to_string())
}

/// Plain-words description of an exit status: `exited with status 3`,
/// `was killed by signal 9 (SIGKILL)`.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        format!("was killed by signal {sig} ({name}{core})")
    } else {
        format!("ended ({status})")
    }
}

fn last_status_suffix(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (its last status: {s:?})"),
        None => String::new(),
    }
}

/// `1.5s`, `250ms`: short human durations for messages.
pub(crate) fn humanize(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::os::unix::process::ExitStatusExt;

    use readyfd_proto::{FrameError, GoodbyeReason, RemoteErrorKind};

    use super::*;

    fn io() -> io::Error {
        io::Error::from_raw_os_error(nix::libc::EMFILE)
    }

    /// Every variant that can be built here, with whether it has an
    /// underlying cause.
    fn every_error() -> Vec<(Box<dyn Error + 'static>, bool)> {
        let goodbye = Goodbye {
            reason: GoodbyeReason::ShuttingDown,
            message: "bye".into(),
        };
        let session = SessionError::Frame(FrameError::Truncated { have: 1, need: 9 });
        let close = [
            CloseReason::Goodbye(goodbye),
            CloseReason::PeerClosed,
            CloseReason::Local,
            CloseReason::Protocol(session.clone()),
        ];
        let mut all: Vec<(Box<dyn Error>, bool)> = vec![
            (Box::new(SpawnError::ReservedFd(2)), false),
            (
                Box::new(SpawnError::FdAboveLimit { fd: 9, limit: 8 }),
                false,
            ),
            (Box::new(SpawnError::Channel(io())), true),
            (
                Box::new(SpawnError::Start {
                    program: "app".into(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                }),
                true,
            ),
            (
                Box::new(SpawnError::Watch {
                    pid: 5,
                    source: io(),
                }),
                true,
            ),
            (
                Box::new(ReadyError::Exited {
                    pid: 5,
                    status: ExitStatus::from_raw(3 << 8),
                    last_status: Some("loading".into()),
                }),
                false,
            ),
            (
                Box::new(ReadyError::Timeout {
                    pid: 5,
                    waited: Duration::from_secs(2),
                    killed: true,
                    last_status: None,
                }),
                false,
            ),
            (
                Box::new(ReadyError::Protocol {
                    pid: 5,
                    source: ProtocolError::Session(session.clone()),
                }),
                true,
            ),
            (
                Box::new(ReadyError::Protocol {
                    pid: 5,
                    source: ProtocolError::PipeFlood { limit: 4096 },
                }),
                true,
            ),
            (
                Box::new(ReadyError::Failed {
                    pid: 5,
                    errno: Some(2),
                    message: "no config".into(),
                }),
                false,
            ),
            (
                Box::new(ReadyError::Undecidable {
                    pid: 5,
                    why: "no /proc".into(),
                }),
                false,
            ),
            (Box::new(ReadyError::AlreadyFailed { pid: 5 }), false),
            (Box::new(ReadyError::Io(io())), true),
            (Box::new(ProtocolError::Other("odd".into())), false),
            (
                Box::new(ChannelError::Remote(RemoteError {
                    kind: RemoteErrorKind::Failed,
                    message: "nope".into(),
                })),
                false,
            ),
            (
                Box::new(ChannelError::Encode(EncodeError::TooLarge {
                    len: Some(9),
                    max: 8,
                })),
                false,
            ),
            (
                Box::new(ChannelError::Decode {
                    type_name: "u32",
                    source: DecodeError::UnknownKind(9),
                }),
                true,
            ),
            (
                Box::new(ChannelError::Timeout(Duration::from_millis(5))),
                false,
            ),
            (Box::new(ChannelError::NotAllowed("twice")), false),
            (Box::new(ChannelError::Io(Arc::new(io()))), true),
            (
                Box::new(EnvError::Malformed {
                    var: "READYFD",
                    value: "x".into(),
                }),
                false,
            ),
            (
                Box::new(EnvError::BadFd {
                    var: "READYFD",
                    fd: 9,
                    why: "is closed",
                }),
                false,
            ),
            (
                Box::new(EnvError::Unusable {
                    var: "READYFD",
                    fd: 9,
                    what: "the channel could not be set up over it",
                    source: Arc::new(io()),
                }),
                true,
            ),
        ];
        for c in close {
            let protocol = matches!(c, CloseReason::Protocol(_));
            all.push((Box::new(c.clone()), protocol));
            all.push((Box::new(ChannelError::Closed(c)), true));
        }
        // A failed socket call: its io::Error is the source, not text in
        // the message (it was text only, printed once and lost as a cause).
        let close_io = || CloseReason::Io(Arc::new(io()));
        all.push((Box::new(close_io()), true));
        all.push((Box::new(ChannelError::Closed(close_io())), true));
        // The child side's errors, which live in notify.rs.
        all.push((
            Box::new(crate::NotifyError::Channel(ChannelError::Closed(
                CloseReason::PeerClosed,
            ))),
            true,
        ));
        all.push((
            Box::new(crate::NotifyError::Io {
                protocol: crate::Protocol::Pipe,
                source: io::Error::from(io::ErrorKind::BrokenPipe),
            }),
            true,
        ));
        all
    }

    /// What anyhow and eyre print: each error, then each source after it.
    /// A message that repeats its source's text prints it twice.
    #[test]
    fn no_error_repeats_its_source_and_every_cause_is_a_source() {
        for (e, has_cause) in every_error() {
            let text = e.to_string();
            assert!(!text.is_empty(), "{e:?} has no message");
            // Lowercase, unless it starts with a variable's name (READYFD=).
            let first: String = text
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            assert!(
                first.chars().next().is_some_and(char::is_lowercase)
                    || (first.len() > 1 && first == first.to_uppercase()),
                "{text:?} does not start lowercase"
            );
            assert_eq!(e.source().is_some(), has_cause, "{e:?}: source()");
            let mut outer = text;
            let mut next = e.source();
            while let Some(cause) = next {
                let inner = cause.to_string();
                assert!(
                    !outer.contains(&inner),
                    "{outer:?} repeats its source {inner:?}: anyhow prints it twice"
                );
                outer = inner;
                next = cause.source();
            }
        }
    }

    /// The io::Error conversions keep the whole chain below them.
    #[test]
    fn io_error_conversions_keep_the_cause() {
        let e = io::Error::from(SpawnError::Start {
            program: "app".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        });
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let inner = e.get_ref().and_then(|e| e.source()).map(|s| s.to_string());
        assert_eq!(
            inner,
            Some(io::Error::from(io::ErrorKind::NotFound).to_string())
        );
        let e = io::Error::from(ChannelError::Io(Arc::new(io())));
        assert_eq!(e.raw_os_error(), None);
        assert!(e.get_ref().and_then(|e| e.source()).is_some());
    }
}

/// Why a channel could not be made a [`DirectChannel`](crate::DirectChannel):
/// nothing was changed, and the channel works on as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirectError {
    /// Other handles on the channel (clones), or requests of the peer that
    /// the application took and has not answered, are alive: each would
    /// go on using the background channel. Drop (or answer) them first.
    #[error(
        "other handles on the channel (clones) or unanswered requests taken from it are alive: drop or answer them first"
    )]
    Shared,
    /// A request made on the channel (from another thread) still waits for
    /// its answer.
    #[error("a request is still waiting for its answer on the channel")]
    RequestInFlight,
    /// This is a handle made by `clone`, not the channel's owner.
    #[error("this is a handle (a clone) on the channel, not its owner")]
    NotOwner,
    /// The child has not been seen ready yet: call
    /// [`ReadyChild::wait_ready`](crate::ReadyChild::wait_ready) first, so
    /// that readiness is judged by the rules of PROTOCOL.md §6.
    #[error("the child is not ready yet: call wait_ready first")]
    NotReady,
    /// The child was spawned with another protocol than the native one.
    #[error("the child does not speak the native protocol: there is no channel to take")]
    NotNative,
    /// No file descriptor was left for the direct channel's copy of the
    /// socket (`EMFILE`).
    #[error("no file descriptor left to take the channel over (EMFILE)")]
    NoFds,
    /// The channel was taken before.
    #[error("the channel was already taken as a direct channel")]
    AlreadyTaken,
}

/// A refused switch to direct mode, with what was to be switched, given
/// back unchanged ([`into_inner`](Self::into_inner)).
#[derive(thiserror::Error)]
#[error("cannot switch the channel to direct mode: {error}")]
pub struct IntoDirectError<T> {
    /// Why.
    pub error: DirectError,
    original: T,
}

impl<T> IntoDirectError<T> {
    pub(crate) fn new(error: DirectError, original: T) -> Self {
        IntoDirectError { error, original }
    }

    /// What was to be switched, unchanged.
    pub fn into_inner(self) -> T {
        self.original
    }
}

impl<T> std::fmt::Debug for IntoDirectError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntoDirectError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}
