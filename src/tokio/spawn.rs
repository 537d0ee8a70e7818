//! The parent side, async: spawn a child through
//! [`tokio::process::Command`](::tokio::process::Command) with a readiness
//! channel and wait for it without blocking a thread.

use std::ffi::OsStr;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::process::ExitStatus;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use ::tokio::io::Interest;
use ::tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use ::tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use ::tokio::time::Instant;
use nix::poll::PollFlags;
use nix::sys::signal::Signal;
use readyfd_proto::Role;

use super::channel::Channel;
use crate::core::ChannelOptions;
use crate::error::{ReadyError, SpawnError};
use crate::pipe::PipeWaiter;
use crate::protocol::Protocol;
use crate::spawn::{Ours, Spec, StdCommand, prepare};
use crate::sys::{self, ProcStat};
use crate::systemd::{NotifyReceiver, NotifyState, StoredFd};
use crate::verdict::{
    Next, OnTimeout, Readiness, ReadyVia, Seen, StopVia, Stopped, UNDECIDED_GRACE, Verdict,
};

/// A [`tokio::process::Command`](::tokio::process::Command) to be spawned
/// with a readiness channel: the async counterpart of
/// [`crate::ReadyCommand`], with the same protocols and guarantees.
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use readyfd::tokio::ReadyCommand;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut cmd = tokio::process::Command::new("my-server");
/// cmd.arg("--port=0");
/// let mut child = ReadyCommand::new(cmd).spawn()?;
/// let ready = child.wait_ready(Duration::from_secs(30)).await?;
/// println!("listening on {:?}", ready.ready.get("http"));
/// child.stop(Duration::from_secs(5)).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ReadyCommand {
    cmd: Command,
    /// How to spawn and watch it (shared with the blocking builder).
    spec: Spec,
    /// Set by the first [`spawn`](Self::spawn): the command went to it.
    spawned: bool,
}

/// Adds [`readyfd`](ReadyCommandExt::readyfd) to
/// [`tokio::process::Command`](::tokio::process::Command), by value and
/// after its own setters (`&mut Command`): the async counterpart of
/// [`crate::ReadyCommandExt`].
pub trait ReadyCommandExt {
    /// Wraps the command for spawning with a readiness channel.
    ///
    /// On a `&mut Command`, the configured command is moved into the
    /// [`ReadyCommand`] and the borrowed one is left as a fresh
    /// `Command::new` of the same program, with nothing else set, as
    /// [`crate::ReadyCommandExt`] does.
    fn readyfd(self) -> ReadyCommand;
}

impl ReadyCommandExt for Command {
    fn readyfd(self) -> ReadyCommand {
        ReadyCommand::new(self)
    }
}

impl ReadyCommandExt for &mut Command {
    fn readyfd(self) -> ReadyCommand {
        let program = self.as_std().get_program().to_owned();
        ReadyCommand::new(std::mem::replace(self, Command::new(program)))
    }
}

impl From<Command> for ReadyCommand {
    fn from(cmd: Command) -> Self {
        ReadyCommand::new(cmd)
    }
}

impl From<std::process::Command> for ReadyCommand {
    fn from(cmd: std::process::Command) -> Self {
        ReadyCommand::new(cmd)
    }
}

impl StdCommand for Command {
    fn std(&self) -> &std::process::Command {
        self.as_std()
    }
}

crate::spawn::ready_command_setters!(Command);

impl ReadyCommand {
    /// Wraps `cmd` (a tokio or a std `Command`); its arguments,
    /// environment, stdio, directory and `kill_on_drop` are kept.
    pub fn new(cmd: impl Into<Command>) -> Self {
        ReadyCommand {
            cmd: cmd.into(),
            spec: Spec::default(),
            spawned: false,
        }
    }

    /// Starts the child, and the channel's I/O task on the current
    /// runtime.
    ///
    /// As with [`crate::ReadyCommand::spawn`]: the child's end of the
    /// channel is created close-on-exec, placed at the chosen fd number
    /// inside `pre_exec` (which allocates nothing), and the parent's copy of
    /// it is closed as soon as the child is running. It spawns once: a
    /// later call fails with [`SpawnError::AlreadySpawned`] and starts
    /// nothing.
    ///
    /// # Errors
    /// [`SpawnError::AlreadySpawned`] when called again,
    /// [`SpawnError::ReservedFd`] for an fd below 3,
    /// [`SpawnError::FdTaken`] for an fd among the listening sockets',
    /// [`SpawnError::ListenName`] for a socket name `LISTEN_FDNAMES` cannot
    /// carry, [`SpawnError::Listen`] for a command with an `arg0` of its
    /// own and listening sockets,
    /// [`SpawnError::Channel`] when the channel cannot be created,
    /// [`SpawnError::Start`] when the program cannot be started,
    /// [`SpawnError::Watch`] when the child cannot be watched.
    ///
    /// # Panics
    /// Outside a tokio runtime, or in one without I/O and time enabled.
    pub fn spawn(&mut self) -> Result<ReadyChild, SpawnError> {
        if ::tokio::runtime::Handle::try_current().is_err() {
            panic!(
                "readyfd::tokio::ReadyCommand::spawn must be called from within a tokio runtime"
            );
        }
        let (mut cmd, mut spec) = self.take_for_spawn()?;
        let Spec {
            protocol,
            options,
            on_timeout,
            kill_on_drop,
            process_group,
            adopted,
            ..
        } = spec;
        let prepared = prepare(cmd.as_std_mut(), &mut spec)?;
        // Tokio's own `kill_on_drop` kills the child only, as tokio's
        // `Child` would.
        let kill_child_on_drop = cmd.get_kill_on_drop();
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let spawned_at = Instant::now();
        // Spawned by std, not by tokio's `Command::spawn`: tokio's `Child`
        // opens and registers a pidfd of its own, and every fd the parent
        // holds per child is copied by each later `fork` and closed by each
        // later `exec` (a thousand children: see the README, Performance).
        // The child is watched and reaped through our pidfd instead.
        let spawn_result = cmd.as_std_mut().spawn();
        // The command holds the pre_exec hook with our fd number, and our
        // copy of the child's end must go before anything else can inherit
        // it or the child's close can be missed.
        drop(cmd);
        let ours = prepared.into_ours();
        let mut child = spawn_result.map_err(|source| SpawnError::Start { program, source })?;
        let pid = child.id();
        let watched = watch(ours, pid, options).and_then(|(waiter, pidfd)| {
            let stdio = ChildStdio::from_std(&mut child)?;
            Ok((waiter, pidfd, stdio))
        });
        let (waiter, pidfd, stdio) = match watched {
            Ok(x) => x,
            Err(source) => {
                let _ = child.kill();
                reap_in_background(pid, None);
                return Err(SpawnError::Watch { pid, source });
            }
        };
        Ok(ReadyChild {
            child,
            stdio,
            kill_child_on_drop,
            pid,
            protocol,
            waiter,
            proc_stat: ProcStat::open(pid),
            pidfd,
            spawned_at,
            readiness: None,
            main: None,
            failed: false,
            verdict: Verdict::new(pid, protocol),
            on_timeout,
            kill_on_drop,
            group: process_group,
            adopted,
        })
    }
}

/// Sets up the watching side: the child's pidfd, and the native channel
/// (whose I/O task watches a pidfd of its own), the pipe, or the notify
/// socket.
fn watch(
    ours: Ours,
    pid: u32,
    options: ChannelOptions,
) -> io::Result<(Waiter, Arc<AsyncFd<OwnedFd>>)> {
    let pidfd = Arc::new(register(sys::pidfd_open(pid)?)?);
    let waiter = match ours {
        Ours::Native(sock) => {
            // One pidfd for both: see `Channel::start`.
            let ch = Channel::start(sock, Role::Parent, Some(Arc::clone(&pidfd)), options)?;
            Waiter::Native(ch)
        }
        // Registered now, not at each wait: a wait then needs no new fd
        // (it works with a full fd table).
        Ours::Pipe(waiter) => {
            let fd = waiter.fd().map(register_dup).transpose()?;
            Waiter::Pipe(waiter, fd.expect("a new pipe is open"))
        }
        Ours::Systemd(receiver) => {
            let fd = receiver.socket_fd().map(register_dup).transpose()?;
            Waiter::Systemd(receiver, fd.expect("a new socket is open"))
        }
    };
    Ok((waiter, pidfd))
}

/// Registers an fd we own for readability.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` keeps its fd open and returns the same number
    // from `as_raw_fd` until it is dropped, which the `AsyncFd` that owns
    // it does last.
    Ok(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?)
}

/// Registers a duplicate of `fd` (another fd on the same open file), so
/// that the original's owner may close it whenever it decides to.
fn register_dup(fd: BorrowedFd<'_>) -> io::Result<AsyncFd<OwnedFd>> {
    register(fd.try_clone_to_owned()?)
}

#[derive(Debug)]
enum Waiter {
    /// The owning handle: dropping it (with the `ReadyChild`) closes the
    /// channel.
    Native(Channel),
    /// The waiter, and its pipe registered with the reactor.
    Pipe(PipeWaiter, AsyncFd<OwnedFd>),
    /// The receiver, and its socket registered with the reactor.
    Systemd(NotifyReceiver, AsyncFd<OwnedFd>),
}

/// The stdio handles of a spawned child, as
/// [`tokio::process::Child`](::tokio::process::Child) has them: `Some` for
/// each stream the command set to [`Stdio::piped`](std::process::Stdio::piped).
/// Take one (`stdin.take()`) to own it; dropping the child's stdin closes
/// it.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ChildStdio {
    /// The child's stdin.
    pub stdin: Option<ChildStdin>,
    /// The child's stdout.
    pub stdout: Option<ChildStdout>,
    /// The child's stderr.
    pub stderr: Option<ChildStderr>,
}

impl ChildStdio {
    /// Takes std's pipes out of `child` and registers them with the
    /// reactor.
    fn from_std(child: &mut std::process::Child) -> io::Result<ChildStdio> {
        Ok(ChildStdio {
            stdin: child.stdin.take().map(ChildStdin::from_std).transpose()?,
            stdout: child.stdout.take().map(ChildStdout::from_std).transpose()?,
            stderr: child.stderr.take().map(ChildStderr::from_std).transpose()?,
        })
    }
}

/// Reaps the child `pid` once it exits, without blocking anybody: a task
/// on the current runtime that awaits its pidfd (`pidfd`, or a new one),
/// or, outside a runtime, when no pidfd can be had, or once the runtime
/// shuts down with the child still running, a thread that waits for it.
/// The pid must be an unreaped child of ours that nothing else will reap.
fn reap_in_background(pid: u32, pidfd: Option<Arc<AsyncFd<OwnedFd>>>) {
    if reap_now(pid) {
        return;
    }
    let handle = ::tokio::runtime::Handle::try_current();
    let pidfd = match pidfd {
        Some(fd) => Some(fd),
        None if handle.is_ok() => sys::pidfd_open(pid).and_then(register).map(Arc::new).ok(),
        None => None,
    };
    match (handle, pidfd) {
        (Ok(handle), Some(pidfd)) => {
            let reaper = Reaper { pid, done: false };
            handle.spawn(async move {
                let mut reaper = reaper;
                // Readable once the child is a zombie, and from then on. An
                // error (the runtime shuts down) leaves it to the thread.
                while pidfd.readable().await.is_ok() {
                    if reap_now(reaper.pid) {
                        reaper.done = true;
                        return;
                    }
                    ::tokio::task::yield_now().await;
                }
            });
        }
        _ => reap_on_a_thread(pid),
    }
}

/// Reaps `pid` if it has exited; `true` when it is reaped (or cannot be:
/// somebody else reaped it).
fn reap_now(pid: u32) -> bool {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return false,
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) | Err(_) => return true,
        }
    }
}

/// The last resort: a thread that waits for `pid` and ends with it.
fn reap_on_a_thread(pid: u32) {
    let _ = std::thread::Builder::new()
        .name("readyfd-reaper".into())
        .spawn(move || {
            use nix::sys::wait::waitpid;
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            while waitpid(pid, None) == Err(nix::errno::Errno::EINTR) {}
        });
}

/// The background reaper's task: when the task is dropped before the child
/// was reaped (its runtime shut down), a thread takes over.
struct Reaper {
    pid: u32,
    done: bool,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if !self.done && !reap_now(self.pid) {
            reap_on_a_thread(self.pid);
        }
    }
}

/// A spawned child with a readiness channel: the async counterpart of
/// [`crate::ReadyChild`].
///
/// Dropping it does not kill the child unless the command asked for
/// [`kill_on_drop`](ReadyCommand::kill_on_drop) (or tokio's own, which
/// kills the child only); either way the child is reaped in the background
/// once it exits (by a task on the runtime, which watches its pidfd; by a
/// thread if that runtime is gone). Use [`stop`](Self::stop) or
/// [`kill`](Self::kill).
#[derive(Debug)]
pub struct ReadyChild {
    /// Spawned by std (see [`ReadyCommand::spawn`]), without its stdio,
    /// which is in `stdio`.
    child: std::process::Child,
    stdio: ChildStdio,
    /// Tokio's `kill_on_drop` was set on the command: kill the child (only).
    kill_child_on_drop: bool,
    pid: u32,
    protocol: Protocol,
    waiter: Waiter,
    /// Its `/proc/<pid>/stat`, held from spawn on (see [`ProcStat`]) until
    /// readiness is decided.
    proc_stat: ProcStat,
    /// The child's pidfd: readable once it has exited. Shared with the
    /// native channel's I/O task, which polls it with `poll_read_ready`:
    /// here it is only awaited with `readable` (or polled for the pipe and
    /// systemd protocols, which have no such task).
    pidfd: Arc<AsyncFd<OwnedFd>>,
    spawned_at: Instant,
    readiness: Option<Readiness>,
    /// The process readiness came from, when it is not the spawned one.
    main: Option<AsyncFd<OwnedFd>>,
    failed: bool,
    verdict: Verdict,
    on_timeout: OnTimeout,
    kill_on_drop: bool,
    /// The child leads a process group of its own (pgid = pid).
    group: bool,
    /// A main pid reparented to us counts (`accept_adopted`).
    adopted: bool,
}

impl Drop for ReadyChild {
    /// With [`kill_on_drop`](ReadyCommand::kill_on_drop): kills the
    /// child, its group and the process readiness came from with
    /// `SIGKILL` (with tokio's own `kill_on_drop`, the child only). Then
    /// reaps the child in the background once it exits, unless it was
    /// reaped already.
    fn drop(&mut self) {
        if self.kill_on_drop {
            let _ = self.signal_all(Signal::SIGKILL);
        } else if self.kill_child_on_drop {
            let _ = self.child.kill();
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            reap_in_background(self.pid, Some(Arc::clone(&self.pidfd)));
        }
    }
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

    /// A handle on the native channel, for requests both ways (native
    /// protocol only). It is usable at once, also before readiness: move it
    /// into a task that serves the child's requests (configuration,
    /// secrets) while [`wait_ready`](Self::wait_ready) runs. The handle is
    /// a cheap clone that does not keep the channel open: [`stop`](Self::stop)
    /// and dropping the `ReadyChild` close it, and a task awaiting
    /// [`Channel::recv`] then gets [`ChannelError::Closed`](crate::ChannelError::Closed).
    ///
    /// From readiness on, the channel's peer is the process that said
    /// `Ready` (the spawned one, or the one it named after a wrapper, whose
    /// own exit then ends nothing): once it has exited, the channel
    /// delivers what it wrote before and then ends as if it had closed
    /// ([`ChannelError::Closed`](crate::ChannelError::Closed) with
    /// [`CloseReason::PeerClosed`](crate::CloseReason::PeerClosed)), even
    /// while another process keeps its end of the socket open, so no
    /// request waits for a dead child (PROTOCOL.md §6.3).
    pub fn channel(&self) -> Option<Channel> {
        match &self.waiter {
            Waiter::Native(c) => Some(Channel::clone(c)),
            _ => None,
        }
    }

    /// The child's stdio handles (those the command set to
    /// [`Stdio::piped`](std::process::Stdio::piped)), as
    /// [`tokio::process::Child`](::tokio::process::Child) has them:
    /// `child.stdio_mut().stdin.take()`.
    pub fn stdio_mut(&mut self) -> &mut ChildStdio {
        &mut self.stdio
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
            Waiter::Pipe(..) => None,
            Waiter::Systemd(r, _) => r.last_status(),
        }
    }

    /// What a [`Protocol::Systemd`] child has sent besides readiness, as
    /// [`crate::ReadyChild::notify_state`]; `None` for the other protocols.
    pub fn notify_state(&self) -> Option<NotifyState> {
        match &self.waiter {
            Waiter::Systemd(r, _) => Some(r.state()),
            _ => None,
        }
    }

    /// Takes the fds a [`Protocol::Systemd`] child stored with `FDSTORE=1`
    /// so far, as [`crate::ReadyChild::take_stored_fds`]; empty for the
    /// other protocols.
    pub fn take_stored_fds(&mut self) -> Vec<StoredFd> {
        match &mut self.waiter {
            Waiter::Systemd(r, _) => r.take_stored_fds(),
            _ => Vec::new(),
        }
    }

    /// Waits until the child is ready, for at most `timeout`, with the
    /// semantics of [`crate::ReadyChild::wait_ready`] (the same readiness
    /// core decides: the table of `PROTOCOL.md` §6); the child's pidfd is
    /// watched through the runtime's reactor, not polled. On timeout the
    /// child is killed unless [`OnTimeout::Leave`] was chosen. Calling it
    /// again after success returns the same readiness. A pid the child
    /// names in `Ready` becomes the main process
    /// ([`Readiness::main_pid`](crate::Readiness::main_pid)) only by the
    /// rule of `PROTOCOL.md` §6.4, as there.
    ///
    /// # Cancel safety
    /// Cancel safe: what the child sent so far is recorded by the channel,
    /// the pipe's waiter or the notify receiver, not by this future, so a
    /// dropped wait loses nothing and a new call picks up where it left off
    /// (with a new timeout). A wait dropped while it was
    /// killing a timed-out child may leave that child killed but not yet
    /// reaped.
    ///
    /// # Errors
    /// [`ReadyError::Exited`], [`ReadyError::Timeout`],
    /// [`ReadyError::Protocol`], [`ReadyError::Failed`],
    /// [`ReadyError::Undecidable`], [`ReadyError::AlreadyFailed`],
    /// [`ReadyError::Io`].
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<&Readiness, ReadyError> {
        if self.readiness.is_none() {
            if self.failed {
                return Err(ReadyError::AlreadyFailed { pid: self.pid });
            }
            let deadline = Instant::from_std(sys::deadline_after(timeout));
            match self.wait_ready_until(deadline, timeout).await {
                Ok(mut r) => {
                    let writer = match &self.waiter {
                        Waiter::Native(ch) => ch.take_ready_writer(),
                        _ => None,
                    };
                    let claim = crate::spawn::MainClaim {
                        named: r.ready.pid,
                        spawned: self.pid,
                        protocol: self.protocol,
                        writer,
                        group: self.group,
                        adopted: self.adopted,
                    };
                    let (main_pid, main) = claim.adopt();
                    r.main_pid = main_pid;
                    self.main = main.and_then(|fd| register(fd).ok());
                    if let Waiter::Native(ch) = &self.waiter {
                        // As the blocking `ReadyChild`: the process that
                        // said `Ready` is the peer now (PROTOCOL.md §6.3).
                        match (r.pid_mismatch(), &self.main) {
                            (None, _) => ch.watch_peer(None),
                            (Some(_), Some(main)) => {
                                if let Ok(main) = main.get_ref().try_clone() {
                                    ch.watch_peer(Some(main));
                                }
                            }
                            (Some(_), None) => {}
                        }
                    }
                    self.readiness = Some(r);
                    // Liveness is asked only while readiness is undecided.
                    self.proc_stat.close();
                }
                Err(e) => {
                    self.failed = !matches!(e, ReadyError::Timeout { killed: false, .. });
                    return Err(e);
                }
            }
        }
        Ok(self.readiness.as_ref().expect("set above"))
    }

    async fn wait_ready_until(
        &mut self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Readiness, ReadyError> {
        let mut next = self.look(deadline).await;
        loop {
            next = match next {
                Next::Ready(ready, via) => return Ok(self.readiness_of(ready, via)),
                Next::Fail(e) => return Err(e),
                Next::Timeout => return Err(self.timed_out(timeout).await?),
                Next::Wait => self.look(deadline).await,
                Next::Reap => {
                    let grace_end = Instant::now() + UNDECIDED_GRACE;
                    let until = self.verdict.reap_deadline(deadline, grace_end);
                    match self.wait_until(Some(until)).await? {
                        Some(status) => self.verdict.on_exit(status, self.last_status()),
                        None => self.verdict.on_reap_timeout(Instant::now() >= deadline),
                    }
                }
            };
        }
    }

    /// Asks the protocol's waiter what it sees (until `deadline`), and the
    /// readiness core what that means.
    async fn look(&mut self, deadline: Instant) -> Next {
        if self.verdict.reaping() {
            return Next::Reap;
        }
        let pid = self.pid;
        let watch_exit = self.verdict.watches_exit();
        let seen = match &mut self.waiter {
            Waiter::Native(ch) => {
                let seen = ch.wait_ready_seen(watch_exit, pid);
                ::tokio::time::timeout_at(deadline, seen)
                    .await
                    .unwrap_or(Seen::Timeout)
            }
            Waiter::Pipe(p, fd) => {
                let wait = wait_pipe(p, fd, &self.pidfd, pid, watch_exit);
                ::tokio::time::timeout_at(deadline, wait)
                    .await
                    .unwrap_or(Seen::Timeout)
            }
            Waiter::Systemd(r, sock) => {
                wait_systemd(r, sock, &self.pidfd, pid, deadline, !watch_exit).await
            }
        };
        let (stat, pidfd) = (&self.proc_stat, self.pidfd.get_ref().as_fd());
        self.verdict.on_seen(seen, || stat.liveness(pidfd))
    }

    /// Applies [`OnTimeout`] and says how the wait ended.
    async fn timed_out(&mut self, timeout: Duration) -> io::Result<ReadyError> {
        let killed = self.on_timeout == OnTimeout::Kill && self.child.try_wait()?.is_none();
        if killed {
            self.kill().await?;
        }
        Ok(ReadyError::Timeout {
            pid: self.pid,
            waited: timeout,
            killed,
            last_status: self.last_status(),
        })
    }

    fn readiness_of(&self, ready: readyfd_proto::Ready, via: ReadyVia) -> Readiness {
        Readiness {
            ready,
            via,
            spawned_pid: self.pid,
            main_pid: self.pid,
            elapsed: self.spawned_at.elapsed(),
        }
    }

    /// The exit status if the child has exited (reaping it), without waiting.
    ///
    /// # Errors
    /// When `waitpid` fails.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// The former name of [`try_wait`](Self::try_wait).
    ///
    /// # Errors
    /// As [`try_wait`](Self::try_wait).
    #[deprecated(
        since = "0.1.0",
        note = "use try_wait, as std::process::Child names it"
    )]
    pub fn exit_status(&mut self) -> io::Result<Option<ExitStatus>> {
        self.try_wait()
    }

    /// Waits for the child to exit. Unlike
    /// [`tokio::process::Child::wait`](::tokio::process::Child::wait), and
    /// like [`crate::ReadyChild::wait`], it leaves the child's stdin open.
    ///
    /// # Cancel safety
    /// Cancel safe.
    ///
    /// # Errors
    /// When `waitpid` fails.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        Ok(self.wait_until(None).await?.expect("no deadline"))
    }

    /// Waits for the child to exit, for at most `timeout`; `Ok(None)` when
    /// it is still running. Leaves stdin open, as [`wait`](Self::wait).
    ///
    /// # Cancel safety
    /// Cancel safe.
    ///
    /// # Errors
    /// When `waitpid` fails.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::from_std(sys::deadline_after(timeout));
        self.wait_until(Some(deadline)).await
    }

    /// Waits for the pidfd to fire, then reaps. Not tokio's `Child::wait`:
    /// that one closes stdin first, which would cut off a descendant that a
    /// wrapper handed it to (and it differs from the blocking API).
    async fn wait_until(&mut self, deadline: Option<Instant>) -> io::Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            let exited = self.pidfd.readable();
            let guard = match deadline {
                Some(d) => match ::tokio::time::timeout_at(d, exited).await {
                    Ok(guard) => guard?,
                    Err(_) => return Ok(None),
                },
                None => exited.await?,
            };
            // Readable once the child is a zombie, and from then on: reap.
            drop(guard);
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            ::tokio::task::yield_now().await;
        }
    }

    /// Sends the signal numbered `signal` (`libc::SIGTERM`, or any number
    /// from 1 to `SIGRTMAX`) to the child (nothing when it was already
    /// reaped), and with [`process_group`](ReadyCommand::process_group) to
    /// what is left of its group.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] for a number that is not a signal
    /// (0, negative, above `SIGRTMAX`), with nothing sent; otherwise when
    /// `kill` fails.
    pub fn signal(&mut self, signal: i32) -> io::Result<()> {
        sys::check_signal(signal)?;
        self.send_signal(signal)
    }

    fn send_signal(&mut self, signal: i32) -> io::Result<()> {
        if self.group {
            sys::signal_group(self.pid, signal)?;
        }
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        sys::signal_pid(self.pid, signal)
    }

    /// Kills the child (and with
    /// [`process_group`](ReadyCommand::process_group) its group) with
    /// `SIGKILL` and reaps it.
    ///
    /// # Errors
    /// When `kill` or `waitpid` fails.
    pub async fn kill(&mut self) -> io::Result<ExitStatus> {
        if self.group {
            sys::signal_group(self.pid, Signal::SIGKILL as i32)?;
        }
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.child.kill()?;
        self.wait().await
    }

    /// Stops what readiness came from, gracefully, as
    /// [`crate::ReadyChild::stop`]: a native `Shutdown` request first (the
    /// child has `grace` to exit), then `SIGTERM` (and `SIGCONT`) and
    /// another `grace`, then `SIGKILL`; after a wrapper, the main process
    /// readiness named too (never a pid readyfd refused: `PROTOCOL.md`
    /// §6.4). Returns what ended it and the spawned process's
    /// status, as there; with
    /// [`process_group`](ReadyCommand::process_group), it covers the group
    /// as there.
    ///
    /// # Errors
    /// When signalling or reaping fails.
    pub async fn stop(&mut self, grace: Duration) -> io::Result<Stopped> {
        let stopped = self.stop_leader(grace).await?;
        if self.group {
            sys::signal_group(self.pid, Signal::SIGKILL as i32)?;
        }
        // The child is gone: the channel ends now, for every handle, not
        // when the I/O thread gets to the end of the stream.
        if let Waiter::Native(ch) = &self.waiter {
            ch.close();
        }
        Ok(stopped)
    }

    async fn stop_leader(&mut self, grace: Duration) -> io::Result<Stopped> {
        if let Some(s) = self.child.try_wait()? {
            if self.wait_all(Some(Instant::now())).await?.is_some() {
                return Ok(Stopped::new(StopVia::AlreadyExited, s));
            }
        }
        if let Waiter::Native(ch) = &self.waiter {
            // A handle (not the owner: dropping it, with a cancelled stop,
            // closes nothing), so that `self` can be borrowed meanwhile.
            let ch = Channel::clone(ch);
            if ch.closed().is_none() && ch.shutdown(grace).await.is_ok() {
                if let Some(s) = self
                    .wait_all(Some(Instant::from_std(sys::deadline_after(grace))))
                    .await?
                {
                    return Ok(Stopped::new(StopVia::Shutdown, s));
                }
            }
        }
        if let Some(s) = self.wait_all(Some(Instant::now())).await? {
            return Ok(Stopped::new(StopVia::AlreadyExited, s));
        }
        self.signal_all(Signal::SIGTERM)?;
        self.signal_all(Signal::SIGCONT)?;
        let deadline = Instant::from_std(sys::deadline_after(grace));
        if let Some(s) = self.wait_all(Some(deadline)).await? {
            return Ok(Stopped::new(StopVia::Sigterm, s));
        }
        self.signal_all(Signal::SIGKILL)?;
        let status = self.wait_all(None).await?.expect("no deadline");
        Ok(Stopped::new(StopVia::Sigkill, status))
    }

    /// Signals the spawned process and the one readiness came from.
    fn signal_all(&mut self, signal: Signal) -> io::Result<()> {
        if let Some(main) = &self.main {
            sys::pidfd_signal(main.get_ref().as_fd(), signal as i32)?;
        }
        self.send_signal(signal as i32)
    }

    /// Waits until both the spawned process (reaped) and the one readiness
    /// came from have exited, or `deadline`.
    async fn wait_all(&mut self, deadline: Option<Instant>) -> io::Result<Option<ExitStatus>> {
        let Some(status) = self.wait_until(deadline).await? else {
            return Ok(None);
        };
        let Some(main) = &self.main else {
            return Ok(Some(status));
        };
        let exited = main.readable();
        let ended = match deadline {
            Some(d) => ::tokio::time::timeout_at(d, exited).await.is_ok(),
            None => exited.await.is_ok(),
        };
        Ok(ended.then_some(status))
    }
}

/// Spawns `program` with `args` over the native protocol: a
/// shorthand for `ReadyCommand::new(Command::new(program).args(args)).spawn()`.
///
/// # Errors
/// As [`ReadyCommand::spawn`].
///
/// # Panics
/// Outside a tokio runtime.
pub fn spawn<I, S>(program: impl AsRef<OsStr>, args: I) -> Result<ReadyChild, SpawnError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    ReadyCommand::new(cmd).spawn()
}

// ---- pipe and systemd: their waiters' non-blocking steps, driven here -------

/// The pipe protocol's wait: [`PipeWaiter::step`] whenever the pipe or the
/// child's pidfd is readable. The deadline is the caller's. Cancel safe:
/// the text read so far stays in the waiter.
async fn wait_pipe(
    p: &mut PipeWaiter,
    pipe: &AsyncFd<OwnedFd>,
    pidfd: &AsyncFd<OwnedFd>,
    pid: u32,
    watch_exit: bool,
) -> Seen {
    if let Some(seen) = p.step(pid, false) {
        return seen;
    }
    if p.fd().is_none() {
        return Seen::Io(io::Error::other("the readiness pipe is already closed"));
    }
    loop {
        let watch_child = watch_exit.then_some(pidfd);
        let (guard, child_exited) = match readable(pipe, watch_child, None).await {
            Ok(x) => x,
            Err(e) => return Seen::Io(e),
        };
        if child_exited {
            // Data first: what the child wrote before it died counts.
            return p.step(pid, true).unwrap_or(Seen::Exit);
        }
        if let Some(seen) = p.step(pid, false) {
            return seen;
        }
        clear_if_drained(guard);
    }
}

/// The systemd protocol's wait: [`NotifyReceiver::step`] whenever the
/// socket, the child's pidfd or the main pid's pidfd is readable, until
/// `deadline` as extended by `EXTEND_TIMEOUT_USEC=`. Cancel safe: what the
/// datagrams established stays in the receiver.
async fn wait_systemd(
    r: &mut NotifyReceiver,
    sock: &AsyncFd<OwnedFd>,
    pidfd: &AsyncFd<OwnedFd>,
    pid: u32,
    deadline: Instant,
    ignore_exit: bool,
) -> Seen {
    let (mut child_exited, mut main_exited) = (false, false);
    // The main pid's pidfd (a duplicate), and the number it watches.
    let mut main: Option<(RawFd, AsyncFd<OwnedFd>)> = None;
    loop {
        let outcome = r.step(pid, child_exited, main_exited, ignore_exit);
        (child_exited, main_exited) = (false, false);
        if let Some(outcome) = outcome {
            return outcome;
        }
        // Checked on every round: a flood keeps the socket readable.
        let until = Instant::from_std(r.deadline(deadline.into_std()));
        if Instant::now() >= until {
            return Seen::Timeout;
        }
        if r.socket_fd().is_none() {
            return Seen::Io(io::Error::other(
                "the notification socket is already handed over",
            ));
        }
        // `MAINPID=` may name a new process at any step.
        let main_now = r
            .main_pid_fd()
            .map(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd));
        if main.as_ref().map(|(n, _)| *n) != main_now {
            main = match r.main_pid_fd().map(register_dup) {
                Some(Ok(fd)) => main_now.map(|n| (n, fd)),
                Some(Err(e)) => return Seen::Io(e),
                None => None,
            };
        }
        let watch_child = r.watches_child(ignore_exit).then_some(pidfd);
        let ready = readable(sock, watch_child, main.as_ref().map(|(_, fd)| fd));
        match ::tokio::time::timeout_at(until, ready).await {
            // The deadline may have been extended meanwhile: look again.
            Err(_) => continue,
            Ok(Err(e)) => return Seen::Io(e),
            Ok(Ok((None, exited))) => (child_exited, main_exited) = (exited, !exited),
            Ok(Ok((guard, _))) => {
                // Let `step` read first; clear the readiness only if the
                // socket is then found empty.
                if let Some(outcome) = r.step(pid, false, false, ignore_exit) {
                    return outcome;
                }
                clear_if_drained(guard);
            }
        }
    }
}

/// Waits until `fd` is readable (its guard), or the child's pidfd fires
/// (`(None, true)`), or the other pidfd `also` fires (`(None, false)`).
/// Exits are looked at first.
async fn readable<'a>(
    fd: &'a AsyncFd<OwnedFd>,
    child: Option<&AsyncFd<OwnedFd>>,
    also: Option<&AsyncFd<OwnedFd>>,
) -> io::Result<(Option<AsyncFdReadyGuard<'a, OwnedFd>>, bool)> {
    poll_fn(|cx| {
        if let Some(c) = child {
            if c.poll_read_ready(cx).is_ready() {
                return Poll::Ready(Ok((None, true)));
            }
        }
        if let Some(m) = also {
            if m.poll_read_ready(cx).is_ready() {
                return Poll::Ready(Ok((None, false)));
            }
        }
        match fd.poll_read_ready(cx) {
            Poll::Ready(Ok(guard)) => Poll::Ready(Ok((Some(guard), false))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Clears the reactor's readiness of a guard's fd when the fd really has
/// nothing to read (a zero-timeout `poll`), as tokio requires: a step may
/// stop reading after a bounded batch with data still queued.
fn clear_if_drained(guard: Option<AsyncFdReadyGuard<'_, OwnedFd>>) {
    let Some(mut guard) = guard else { return };
    let fd = guard.get_ref().get_ref().as_fd();
    let now = std::time::Instant::now();
    if sys::wait_fd(fd, PollFlags::POLLIN, Some(now)).is_ok_and(|ev| ev.is_empty()) {
        guard.clear_ready();
    }
}
