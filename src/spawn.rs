//! The parent side: spawn a child with a readiness channel and wait for it.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use readyfd_proto::{GoodbyeReason, Ready, Role};

use crate::channel::{Channel, ChannelOptions, ReadyEvent};
use crate::error::{CloseReason, ProtocolError, ReadyError, SpawnError};
use crate::sys::{self, Liveness};
use crate::{pipe, systemd};

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

/// What [`ReadyChild::wait_ready`] does to a child that is not ready in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnTimeout {
    /// Kill it (`SIGKILL`) and reap it. The default: a test that timed out
    /// leaves nothing behind.
    #[default]
    Kill,
    /// Leave it running; the caller decides.
    Leave,
}

/// How a child signalled readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReadyVia {
    /// A native `Ready` message.
    Message,
    /// It closed the channel while alive, without a message (native or pipe).
    Closed,
    /// A newline on the pipe.
    Newline,
    /// `READY=1` over `NOTIFY_SOCKET`.
    Notify,
}

/// A child's readiness, as [`ReadyChild::wait_ready`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Readiness {
    /// What the child announced. For a child that only closed its fd:
    /// the spawned pid, no addresses and the last status, if any.
    pub ready: Ready,
    /// How it signalled.
    pub via: ReadyVia,
    /// The pid readyfd spawned (compare with `ready.pid`).
    pub spawned_pid: u32,
    /// From spawn to readiness.
    pub elapsed: Duration,
}

impl Readiness {
    /// The pid the child claims, when it differs from the one spawned (a
    /// wrapper such as `sh -c`, or a daemon that forked, or systemd's
    /// `MAINPID=`).
    pub fn pid_mismatch(&self) -> Option<u32> {
        (self.ready.pid != self.spawned_pid).then_some(self.ready.pid)
    }
}

/// A [`Command`] to be spawned with a readiness channel.
///
/// # Example
/// ```no_run
/// use std::process::Command;
/// use std::time::Duration;
/// use readyfd::ReadyCommand;
///
/// let mut cmd = Command::new("my-server");
/// cmd.arg("--port=0");
/// let mut child = ReadyCommand::new(cmd).spawn()?;
/// let ready = child.wait_ready(Duration::from_secs(30))?;
/// println!("listening on {:?}", ready.ready.get("http"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ReadyCommand {
    cmd: Command,
    protocol: Protocol,
    fd: RawFd,
    options: ChannelOptions,
    on_timeout: OnTimeout,
}

/// Adds [`readyfd`](CommandExt::readyfd) to [`Command`].
pub trait CommandExt {
    /// Wraps the command for spawning with a readiness channel.
    fn readyfd(self) -> ReadyCommand;
}

impl CommandExt for Command {
    fn readyfd(self) -> ReadyCommand {
        ReadyCommand::new(self)
    }
}

impl ReadyCommand {
    /// Wraps `cmd`; its arguments, environment, stdio and directory are kept.
    /// The command is taken by value because spawning adds a `pre_exec` hook
    /// that belongs to one spawn only.
    pub fn new(cmd: Command) -> Self {
        ReadyCommand {
            cmd,
            protocol: Protocol::Native,
            fd: DEFAULT_FD,
            options: ChannelOptions::default(),
            on_timeout: OnTimeout::Kill,
        }
    }

    /// The protocol to offer (default [`Protocol::Native`]).
    #[must_use]
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The fd number the child receives its end at (default 3; native and
    /// pipe only). Must be 3 or above.
    #[must_use]
    pub fn fd(mut self, fd: RawFd) -> Self {
        self.fd = fd;
        self
    }

    /// Options of the native channel.
    #[must_use]
    pub fn channel_options(mut self, options: ChannelOptions) -> Self {
        self.options = options;
        self
    }

    /// What a timed-out wait does to the child (default [`OnTimeout::Kill`]).
    #[must_use]
    pub fn on_timeout(mut self, on_timeout: OnTimeout) -> Self {
        self.on_timeout = on_timeout;
        self
    }

    /// The wrapped command, to change it further.
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Changes the wrapped command in a builder chain.
    #[must_use]
    pub fn command_mut_with(mut self, f: impl FnOnce(&mut Command)) -> Self {
        f(&mut self.cmd);
        self
    }

    /// Starts the child.
    ///
    /// The child's end of the channel is created close-on-exec, placed at
    /// the chosen fd number inside `pre_exec` (which allocates nothing), and
    /// the parent's copy of it is closed as soon as the child is running, so
    /// that no other child spawned concurrently can inherit it and the
    /// child's close is seen as EOF.
    ///
    /// # Errors
    /// [`SpawnError::ReservedFd`] for an fd below 3,
    /// [`SpawnError::Channel`] when the channel cannot be created,
    /// [`SpawnError::Start`] when the program cannot be started,
    /// [`SpawnError::Watch`] when the child cannot be watched.
    pub fn spawn(self) -> Result<ReadyChild, SpawnError> {
        let ReadyCommand {
            mut cmd,
            protocol,
            fd,
            options,
            on_timeout,
        } = self;
        let prepared = prepare(&mut cmd, protocol, fd)?;
        let program = cmd.get_program().to_string_lossy().into_owned();
        let spawned_at = Instant::now();
        let spawn_result = cmd.spawn();
        // The command holds the pre_exec hook with our fd number: drop it
        // before anything else can reuse that number.
        drop(cmd);
        let child = spawn_result.map_err(|source| SpawnError::Start { program, source })?;
        let pid = child.id();
        let (waiter, pidfd) = match finish_spawn(prepared, pid, options) {
            Ok(x) => x,
            Err(source) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(SpawnError::Watch { pid, source });
            }
        };
        Ok(ReadyChild {
            child,
            pid,
            pidfd,
            waiter,
            protocol,
            spawned_at,
            readiness: None,
            failed: false,
            exited_ok: false,
            on_timeout,
        })
    }
}

/// Checks `fd`, creates the protocol's channel, and sets up `cmd`: the
/// other protocols' variables removed, this one's set, and the `pre_exec`
/// hook that places the child's end (shared by the blocking and the async
/// `spawn`).
pub(crate) fn prepare(
    cmd: &mut Command,
    protocol: Protocol,
    fd: RawFd,
) -> Result<Prepared, SpawnError> {
    if fd < 3 && protocol != Protocol::Systemd {
        return Err(SpawnError::ReservedFd(fd));
    }
    // Whatever the protocol, the child must not see another protocol's
    // variables inherited from our own parent.
    for var in [
        READYFD_ENV,
        pipe::CHILD_READY_FD_ENV,
        systemd::NOTIFY_SOCKET_ENV,
    ] {
        cmd.env_remove(var);
    }
    let prepared = match protocol {
        Protocol::Native => {
            let (ours, theirs) = sys::stream_pair().map_err(SpawnError::Channel)?;
            cmd.env(READYFD_ENV, fd.to_string());
            Prepared::Native { ours, theirs }
        }
        Protocol::Pipe => {
            let (waiter, theirs) = pipe::PipeWaiter::new().map_err(SpawnError::Channel)?;
            cmd.env(pipe::CHILD_READY_FD_ENV, fd.to_string());
            Prepared::Pipe { waiter, theirs }
        }
        Protocol::Systemd => {
            let receiver = systemd::NotifyReceiver::new().map_err(SpawnError::Channel)?;
            cmd.env(systemd::NOTIFY_SOCKET_ENV, receiver.path());
            Prepared::Systemd { receiver }
        }
    };
    if let Some(theirs) = prepared.child_end() {
        let src = theirs.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and
        // calls only `dup2`/`fcntl` on integers it captured by value: it
        // allocates nothing and takes no lock (async-signal-safe).
        unsafe {
            cmd.pre_exec(move || sys::place_fd_in_child(src, fd));
        }
    }
    Ok(prepared)
}

/// A protocol's channel, made before the spawn.
pub(crate) enum Prepared {
    Native {
        ours: OwnedFd,
        theirs: OwnedFd,
    },
    Pipe {
        waiter: pipe::PipeWaiter,
        theirs: OwnedFd,
    },
    Systemd {
        receiver: systemd::NotifyReceiver,
    },
}

impl Prepared {
    fn child_end(&self) -> Option<&OwnedFd> {
        match self {
            Prepared::Native { theirs, .. } | Prepared::Pipe { theirs, .. } => Some(theirs),
            Prepared::Systemd { .. } => None,
        }
    }
}

/// Closes our copy of the child's end (by dropping it) and sets up the
/// watching side.
fn finish_spawn(
    prepared: Prepared,
    pid: u32,
    options: ChannelOptions,
) -> io::Result<(Waiter, OwnedFd)> {
    let pidfd = sys::pidfd_open(pid)?;
    let waiter = match prepared {
        Prepared::Native { ours, theirs } => {
            drop(theirs);
            let watch = pidfd.try_clone()?;
            Waiter::Native(Channel::start(ours, Role::Parent, Some(watch), options)?)
        }
        Prepared::Pipe { waiter, theirs } => {
            drop(theirs);
            Waiter::Pipe(waiter)
        }
        Prepared::Systemd { receiver } => Waiter::Systemd(receiver),
    };
    Ok((waiter, pidfd))
}

#[derive(Debug)]
enum Waiter {
    Native(Channel),
    Pipe(pipe::PipeWaiter),
    Systemd(systemd::NotifyReceiver),
}

/// What a protocol's waiter saw; shared by the three protocols.
#[derive(Debug)]
pub(crate) enum WaitOutcome {
    /// Ready, with what the child said.
    Ready(Ready, ReadyVia),
    /// The channel closed without a readiness message: ready if the child
    /// is alive, else it exited.
    Closed,
    /// The child exited (the pidfd fired) and nothing more can come.
    Exited,
    /// The child reported failure.
    Failed {
        /// An errno it reported.
        errno: Option<i32>,
        /// What it said.
        message: String,
    },
    /// The child broke the protocol.
    Protocol(ProtocolError),
    /// Nothing before the deadline.
    Timeout,
    /// A system call failed.
    Io(io::Error),
}

/// The native channel's view of the wait, as a protocol-independent
/// outcome (shared by the blocking and the async driver).
pub(crate) fn native_outcome(ev: ReadyEvent) -> WaitOutcome {
    match ev {
        ReadyEvent::Ready(r) => WaitOutcome::Ready(r, ReadyVia::Message),
        ReadyEvent::Closed => WaitOutcome::Closed,
        ReadyEvent::Goodbye(g) if g.reason == GoodbyeReason::Done => WaitOutcome::Closed,
        ReadyEvent::Goodbye(g) => match g.reason {
            GoodbyeReason::ProtocolError | GoodbyeReason::VersionMismatch => {
                WaitOutcome::Protocol(ProtocolError::Other(format!(
                    "the child rejected us ({:?}): {}",
                    g.reason, g.message
                )))
            }
            _ => WaitOutcome::Failed {
                errno: None,
                message: if g.message.is_empty() {
                    format!("{:?}", g.reason)
                } else {
                    g.message
                },
            },
        },
        ReadyEvent::Exited => WaitOutcome::Exited,
        ReadyEvent::Protocol(e) => WaitOutcome::Protocol(ProtocolError::Session(e)),
        ReadyEvent::Io(CloseReason::Io(kind, msg)) => WaitOutcome::Io(io::Error::new(kind, msg)),
        ReadyEvent::Io(other) => WaitOutcome::Io(io::Error::other(other.to_string())),
        ReadyEvent::Timeout => WaitOutcome::Timeout,
    }
}

/// What a `wait_ready` loop does next with an outcome.
#[derive(Debug)]
pub(crate) enum Step {
    /// Done: the child is ready.
    Ready(Ready, ReadyVia),
    /// The child exited or is exiting: reap it (within the deadline), then
    /// ask [`after_reap`].
    Reap {
        /// It closed the channel by dying (rather than the pidfd firing).
        after_close: bool,
    },
    /// Done: it failed.
    Fail(ReadyError),
    /// The deadline passed: apply [`OnTimeout`], then fail with
    /// [`ReadyError::Timeout`].
    Timeout,
}

/// The protocol-independent rules of `wait_ready`, shared by the blocking
/// and the async driver: a channel closed by a living child (or after a
/// wrapper exited 0) is ready with no data; one closed by dying is an exit.
pub(crate) fn ready_step(
    outcome: WaitOutcome,
    pid: u32,
    exited_ok: bool,
    last_status: impl FnOnce() -> Option<String>,
) -> Step {
    match outcome {
        WaitOutcome::Ready(ready, via) => Step::Ready(ready, via),
        WaitOutcome::Closed => {
            if exited_ok || sys::liveness(pid) == Liveness::Alive {
                let ready = Ready {
                    pid,
                    addresses: Vec::new(),
                    status: last_status(),
                };
                Step::Ready(ready, ReadyVia::Closed)
            } else {
                // It closed by dying: wait for the exit to be complete.
                Step::Reap { after_close: true }
            }
        }
        WaitOutcome::Exited => Step::Reap { after_close: false },
        WaitOutcome::Failed { errno, message } => Step::Fail(ReadyError::Failed {
            pid,
            errno,
            message,
        }),
        WaitOutcome::Protocol(source) => Step::Fail(ReadyError::Protocol { pid, source }),
        WaitOutcome::Io(e) => Step::Fail(ReadyError::Io(e)),
        WaitOutcome::Timeout => Step::Timeout,
    }
}

/// After a [`Step::Reap`]: `None` to keep waiting (a wrapper such as
/// `sh -c 'server &'` or a forking daemon exited 0 while a descendant still
/// holds the channel; `exited_ok` is set), or the error to report.
pub(crate) fn after_reap(
    status: ExitStatus,
    after_close: bool,
    protocol: Protocol,
    exited_ok: &mut bool,
    pid: u32,
    last_status: Option<String>,
) -> Option<ReadyError> {
    if !after_close && status.success() && protocol != Protocol::Systemd && !*exited_ok {
        *exited_ok = true;
        return None;
    }
    Some(ReadyError::Exited {
        pid,
        status,
        last_status,
    })
}

/// A spawned child with a readiness channel.
///
/// Dropping it does not kill the child (as with [`std::process::Child`]);
/// use [`stop`](Self::stop) or [`kill`](Self::kill).
#[derive(Debug)]
pub struct ReadyChild {
    child: Child,
    pid: u32,
    pidfd: OwnedFd,
    waiter: Waiter,
    protocol: Protocol,
    spawned_at: Instant,
    readiness: Option<Readiness>,
    failed: bool,
    exited_ok: bool,
    on_timeout: OnTimeout,
}

impl ReadyChild {
    /// The pid of the spawned process.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The protocol offered.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The native channel, for requests both ways (native protocol only).
    /// It is usable at once, also before readiness: a parent can hand its
    /// child configuration or a secret this way.
    pub fn channel(&self) -> Option<&Channel> {
        match &self.waiter {
            Waiter::Native(c) => Some(c),
            _ => None,
        }
    }

    /// The underlying [`Child`], for its stdio handles.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Readiness, once [`wait_ready`](Self::wait_ready) has seen it.
    pub fn readiness(&self) -> Option<&Readiness> {
        self.readiness.as_ref()
    }

    /// The last status text the child sent (native `Status`, the `status`
    /// of `Ready`, or sd_notify `STATUS=`).
    pub fn last_status(&self) -> Option<String> {
        match &self.waiter {
            Waiter::Native(c) => c.last_status(),
            Waiter::Pipe(_) => None,
            Waiter::Systemd(r) => r.last_status(),
        }
    }

    /// What a [`Protocol::Systemd`] child has sent besides readiness
    /// (`ERRNO=`, `MAINPID=`, watchdog pings, ...), kept current after
    /// readiness too; `None` for the other protocols.
    pub fn notify_state(&self) -> Option<systemd::NotifyState> {
        match &self.waiter {
            Waiter::Systemd(r) => Some(r.state()),
            _ => None,
        }
    }

    /// Takes the fds a [`Protocol::Systemd`] child stored with `FDSTORE=1`
    /// (with their `FDNAME=`) so far, before or after readiness; empty for
    /// the other protocols, and until more are stored.
    pub fn take_stored_fds(&mut self) -> Vec<systemd::StoredFd> {
        match &mut self.waiter {
            Waiter::Systemd(r) => r.take_stored_fds(),
            _ => Vec::new(),
        }
    }

    /// Waits until the child is ready, for at most `timeout`.
    ///
    /// Returns at once when the child exits first (it is watched with a
    /// pidfd, not polled). A child that closes its end of the channel while
    /// alive is ready with no data; one that closes it by dying is not.
    /// Calling it again after success returns the same readiness.
    ///
    /// # Errors
    /// [`ReadyError::Exited`], [`ReadyError::Timeout`] (the child is killed
    /// unless [`OnTimeout::Leave`] was chosen), [`ReadyError::Protocol`],
    /// [`ReadyError::Failed`], [`ReadyError::Io`].
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<&Readiness, ReadyError> {
        if self.readiness.is_none() {
            if self.failed {
                return Err(ReadyError::AlreadyFailed { pid: self.pid });
            }
            let deadline = Instant::now() + timeout;
            match self.wait_ready_until(deadline, timeout) {
                Ok(r) => self.readiness = Some(r),
                Err(e) => {
                    self.failed = !matches!(e, ReadyError::Timeout { killed: false, .. });
                    return Err(e);
                }
            }
        }
        Ok(self.readiness.as_ref().expect("set above"))
    }

    fn wait_ready_until(
        &mut self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Readiness, ReadyError> {
        let pid = self.pid;
        loop {
            let outcome = match &mut self.waiter {
                Waiter::Native(ch) => native_outcome(ch.wait_ready_event(deadline, self.exited_ok)),
                Waiter::Pipe(p) => p.wait(self.pidfd.as_fd(), pid, deadline, self.exited_ok),
                Waiter::Systemd(r) => r.wait(self.pidfd.as_fd(), pid, deadline, self.exited_ok),
            };
            match ready_step(outcome, pid, self.exited_ok, || self.last_status()) {
                Step::Ready(ready, via) => return Ok(self.readiness_of(ready, via)),
                Step::Fail(e) => return Err(e),
                Step::Reap { after_close } => {
                    let status = self.reap(deadline, timeout)?;
                    let last_status = self.last_status();
                    let protocol = self.protocol;
                    match after_reap(
                        status,
                        after_close,
                        protocol,
                        &mut self.exited_ok,
                        pid,
                        last_status,
                    ) {
                        None => continue,
                        Some(e) => return Err(e),
                    }
                }
                Step::Timeout => {
                    let killed =
                        self.on_timeout == OnTimeout::Kill && self.exit_status()?.is_none();
                    if killed {
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                    }
                    return Err(ReadyError::Timeout {
                        pid,
                        waited: timeout,
                        killed,
                        last_status: self.last_status(),
                    });
                }
            }
        }
    }

    fn readiness_of(&self, ready: Ready, via: ReadyVia) -> Readiness {
        Readiness {
            ready,
            via,
            spawned_pid: self.pid,
            elapsed: self.spawned_at.elapsed(),
        }
    }

    /// Waits (bounded by `deadline`) for an exit that is known to be under
    /// way, and reaps it.
    fn reap(&mut self, deadline: Instant, timeout: Duration) -> Result<ExitStatus, ReadyError> {
        match self.wait_deadline(Some(deadline))? {
            Some(status) => Ok(status),
            None => Err(ReadyError::Timeout {
                pid: self.pid,
                waited: timeout,
                killed: false,
                last_status: self.last_status(),
            }),
        }
    }

    /// The exit status if the child has exited (reaping it), without waiting.
    ///
    /// # Errors
    /// When `waitpid` fails.
    pub fn exit_status(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits for the child to exit, for at most `timeout`; `Ok(None)` when
    /// it is still running. Uses the pidfd: no polling loop.
    ///
    /// # Errors
    /// When `poll` or `waitpid` fails.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        self.wait_deadline(Some(Instant::now() + timeout))
    }

    /// Waits for the child to exit.
    ///
    /// # Errors
    /// When `waitpid` fails.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait()
    }

    fn wait_deadline(&mut self, deadline: Option<Instant>) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.child.try_wait()? {
            return Ok(Some(s));
        }
        let ev = sys::wait_fd(self.pidfd.as_fd(), PollFlags::POLLIN, deadline)?;
        if ev.is_empty() {
            return Ok(None);
        }
        self.child.wait().map(Some)
    }

    /// Sends `signal` to the child.
    ///
    /// # Errors
    /// When `kill` fails (the child was already reaped).
    pub fn signal(&mut self, signal: Signal) -> io::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        kill(Pid::from_raw(self.pid as i32), signal).map_err(io::Error::from)
    }

    /// Kills the child with `SIGKILL` and reaps it.
    ///
    /// # Errors
    /// When `kill` or `waitpid` fails.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        self.child.kill()?;
        self.child.wait()
    }

    /// Stops the child gracefully: native `Shutdown` first (the child has
    /// `grace` to exit), then `SIGTERM` and another `grace`, then `SIGKILL`.
    /// Returns how it ended.
    ///
    /// # Errors
    /// When signalling or reaping fails.
    pub fn stop(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        if let Some(s) = self.child.try_wait()? {
            return Ok(s);
        }
        if let Waiter::Native(ch) = &self.waiter {
            if ch.closed().is_none() && ch.shutdown(grace).is_ok() {
                if let Some(s) = self.wait_timeout(grace)? {
                    return Ok(s);
                }
            }
        }
        self.signal(Signal::SIGTERM)?;
        if let Some(s) = self.wait_timeout(grace)? {
            return Ok(s);
        }
        self.kill()
    }
}

/// Spawns `program` with `args` over the native protocol: a shorthand for
/// `ReadyCommand::new(Command::new(program).args(args)).spawn()`.
///
/// # Errors
/// As [`ReadyCommand::spawn`].
pub fn spawn<I, S>(program: impl AsRef<OsStr>, args: I) -> Result<ReadyChild, SpawnError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    ReadyCommand::new(cmd).spawn()
}
