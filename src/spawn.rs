//! The parent side: spawn a child with a readiness channel and wait for it.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::sys::signal::Signal;
use readyfd_proto::{Ready, Role};

use crate::channel::Channel;
use crate::core::ChannelOptions;
use crate::direct::DirectChannel;
use crate::error::{DirectError, ReadyError, SpawnError};
use crate::protocol::{CHILD_READY_FD_ENV, DEFAULT_FD, NOTIFY_SOCKET_ENV, Protocol, READYFD_ENV};
use crate::sys::{self, ProcStat};
use crate::verdict::{
    Next, OnTimeout, Readiness, ReadyVia, StopVia, Stopped, UNDECIDED_GRACE, Verdict,
};
use crate::{listen, pipe, systemd};

/// A [`Command`] to be spawned with a readiness channel.
///
/// A builder that chains as [`Command`] does: the setters take and return
/// `&mut Self`, and [`spawn`](Self::spawn) takes `&mut self`, so both a
/// one-line chain and a builder kept in a variable work.
///
/// # Example
/// ```no_run
/// use std::process::Command;
/// use std::time::Duration;
/// use readyfd::{Protocol, ReadyCommand, ReadyCommandExt};
///
/// // In one chain, std's setters first:
/// let mut child = Command::new("my-server").arg("--port=0").readyfd().spawn()?;
/// let ready = child.wait_ready(Duration::from_secs(30))?;
/// println!("listening on {:?}", ready.ready.get("http"));
///
/// // Or step by step:
/// let mut rc = ReadyCommand::new(Command::new("my-server"));
/// rc.protocol(Protocol::Native).kill_on_drop(true);
/// let mut other = rc.spawn()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ReadyCommand {
    cmd: Command,
    /// How to spawn and watch it (shared with the other API's builder).
    spec: Spec,
    /// Set by the first [`spawn`](Self::spawn): the command went to it.
    spawned: bool,
}

/// Adds [`readyfd`](ReadyCommandExt::readyfd) to [`Command`], by value
/// and after std's own setters (`&mut Command`).
///
/// Its name differs from [`std::os::unix::process::CommandExt`], so both
/// can be imported together.
pub trait ReadyCommandExt {
    /// Wraps the command for spawning with a readiness channel.
    ///
    /// On a `&mut Command` (what [`Command::arg`] and the other setters
    /// return), the configured command is moved into the [`ReadyCommand`]
    /// and the borrowed one is left as a fresh `Command::new` of the same
    /// program, with no arguments, environment changes or stdio settings:
    /// `Command` cannot be cloned, and a spawn adds a `pre_exec` hook that
    /// belongs to that spawn only.
    fn readyfd(self) -> ReadyCommand;
}

impl ReadyCommandExt for Command {
    fn readyfd(self) -> ReadyCommand {
        ReadyCommand::new(self)
    }
}

impl ReadyCommandExt for &mut Command {
    fn readyfd(self) -> ReadyCommand {
        let program = self.get_program().to_owned();
        ReadyCommand::new(std::mem::replace(self, Command::new(program)))
    }
}

impl From<Command> for ReadyCommand {
    fn from(cmd: Command) -> Self {
        ReadyCommand::new(cmd)
    }
}

ready_command_setters!(Command);

impl ReadyCommand {
    /// Wraps `cmd`; its arguments, environment, stdio and directory are kept.
    /// The command is taken by value because spawning adds a `pre_exec` hook
    /// that belongs to one spawn only.
    pub fn new(cmd: Command) -> Self {
        ReadyCommand {
            cmd,
            spec: Spec::default(),
            spawned: false,
        }
    }

    /// Starts the child.
    ///
    /// The child's end of the channel is created close-on-exec, placed at
    /// the chosen fd number inside `pre_exec` (which allocates nothing), and
    /// the parent's copy of it is closed as soon as the child is running, so
    /// that no other child spawned concurrently can inherit it and the
    /// child's close is seen as EOF.
    ///
    /// A `ReadyCommand` spawns once: the first call takes the command
    /// (with its `pre_exec` hook, which places this spawn's channel), and
    /// any later call fails with [`SpawnError::AlreadySpawned`] without
    /// starting anything. Build a new `ReadyCommand` for another child.
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
    pub fn spawn(&mut self) -> Result<ReadyChild, SpawnError> {
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
        let prepared = prepare(&mut cmd, &mut spec)?;
        let program = cmd.get_program().to_string_lossy().into_owned();
        let spawned_at = Instant::now();
        let spawn_result = cmd.spawn();
        // The command holds the pre_exec hook with our fd number: drop it
        // before anything else can reuse that number.
        drop(cmd);
        let ours = prepared.into_ours();
        let child = spawn_result.map_err(|source| SpawnError::Start { program, source })?;
        let pid = child.id();
        let (waiter, pidfd) = match finish_spawn(ours, pid, options) {
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
            proc_stat: ProcStat::open(pid),
            pidfd,
            waiter,
            protocol,
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

/// Checks `fd`, creates the protocol's channel, and sets up `cmd`: the
/// other protocols' variables removed, this one's set, and the `pre_exec`
/// hook that places the child's end (shared by the blocking and the async
/// `spawn`).
pub(crate) fn prepare(cmd: &mut Command, spec: &mut Spec) -> Result<Prepared, SpawnError> {
    let (protocol, adopted) = (spec.protocol, spec.adopted);
    let listeners = std::mem::take(&mut spec.listeners);
    let count = listeners.len() as RawFd;
    for l in &listeners {
        if let Some(why) = listen::bad_name(&l.name) {
            return Err(SpawnError::ListenName {
                name: l.name.clone(),
                why,
            });
        }
    }
    // The channel sits above the listeners unless told where.
    let fd = spec.fd.unwrap_or(DEFAULT_FD + count);
    set_up_process(cmd, spec.process_group, spec.parent_death_signal);
    if fd < 3 && protocol != Protocol::Systemd {
        return Err(SpawnError::ReservedFd(fd));
    }
    if protocol != Protocol::Systemd && fd < listen::LISTEN_FDS_START + count {
        return Err(SpawnError::FdTaken { fd, count });
    }
    // Whatever the protocol, the child must not see another protocol's
    // variables inherited from our own parent, nor sockets passed to us.
    for var in crate::protocol::READINESS_ENV_VARS {
        cmd.env_remove(var);
    }
    listen::strip_listen_vars(cmd);
    let channel = match protocol {
        Protocol::Native => {
            let (ours, theirs) = sys::stream_pair().map_err(SpawnError::Channel)?;
            // The writer of `Ready` is then known (PROTOCOL.md §6.4).
            sys::set_passcred(ours.as_fd(), true).map_err(SpawnError::Channel)?;
            cmd.env(READYFD_ENV, fd.to_string());
            PreparedChannel::Native { ours, theirs }
        }
        Protocol::Pipe => {
            let (waiter, theirs) = pipe::PipeWaiter::new().map_err(SpawnError::Channel)?;
            cmd.env(CHILD_READY_FD_ENV, fd.to_string());
            PreparedChannel::Pipe { waiter, theirs }
        }
        Protocol::Systemd => {
            let receiver = systemd::NotifyReceiver::new(adopted).map_err(SpawnError::Channel)?;
            cmd.env(NOTIFY_SOCKET_ENV, receiver.path());
            PreparedChannel::Systemd { receiver }
        }
    };
    let mut prepared = Prepared {
        channel,
        listeners: listeners.into_iter().map(|l| (l.name, l.fd)).collect(),
    };
    if let Some(theirs) = prepared.channel.child_end_mut() {
        // What the child checks before it takes the fd: so that a process
        // that inherits the variables without the fd never takes another.
        let id_var = match protocol {
            Protocol::Pipe => crate::protocol::CHILD_READY_FD_INODE_ENV,
            _ => crate::protocol::READYFD_INODE_ENV,
        };
        let id = crate::protocol::fd_identity(theirs.as_fd()).map_err(SpawnError::Channel)?;
        cmd.env(id_var, id);
    }
    let above_limit = |source: io::Error| {
        if source.raw_os_error() == Some(nix::libc::EINVAL) {
            SpawnError::FdAboveLimit {
                fd,
                limit: sys::fd_limit(),
            }
        } else {
            SpawnError::Channel(source)
        }
    };
    if prepared.listeners.is_empty() {
        if let Some(theirs) = prepared.channel.child_end_mut() {
            // std makes, before the fork, a close-on-exec pipe on which the
            // child reports a failed `exec`; it takes the lowest free
            // numbers, and placing our end over it in the child would send
            // std's report down our channel. Holding `fd` now (when it is
            // free) keeps that pipe off it.
            sys::claim_fd_number(theirs, fd).map_err(above_limit)?;
            let src = theirs.as_raw_fd();
            // SAFETY: the closure runs in the forked child before exec and
            // calls only `dup2`/`fcntl` on integers it captured by value: it
            // allocates nothing and takes no lock (async-signal-safe).
            unsafe {
                cmd.pre_exec(move || sys::place_fd_in_child(src, fd));
            }
        }
        return Ok(prepared);
    }
    // Socket activation: the listeners at 3.., the channel's end at `fd`,
    // and LISTEN_PID, known only in the child.
    let names: Vec<&str> = prepared.listeners.iter().map(|(n, _)| n.as_str()).collect();
    let extra = [
        (listen::LISTEN_FDS_ENV, count.to_string()),
        (listen::LISTEN_FDNAMES_ENV, names.join(":")),
    ];
    let moves = {
        let Prepared { channel, listeners } = &mut prepared;
        let mut fds: Vec<(&mut OwnedFd, RawFd)> = listeners
            .iter_mut()
            .enumerate()
            .map(|(i, (_, fd))| (fd, listen::LISTEN_FDS_START + i as RawFd))
            .collect();
        if let Some(theirs) = channel.child_end_mut() {
            fds.push((theirs, fd));
        }
        listen::arrange(&mut fds).map_err(above_limit)?
    };
    let mut image = listen::ExecImage::new(cmd, &extra, moves)?;
    // SAFETY: the closure is the last one registered, and runs in the
    // forked child before std's own exec, which it replaces. It allocates
    // nothing and takes no lock: `dup2`/`fcntl` on numbers and the pid's
    // digits written into a slot of an environment built before the fork
    // (all owned by the closure, so alive as long as the `Command`), then
    // `environ` pointed at that array and `execvp`, the very steps std
    // takes at that point (std sets `environ` only after the closures, so
    // setting a variable there any other way is lost or unsound). See
    // `ExecImage`.
    unsafe {
        cmd.pre_exec(move || image.exec_in_child());
    }
    Ok(prepared)
}

/// Puts the child in a process group of its own and asks for its parent
/// death signal, as the builder asked (shared by both `spawn`s).
pub(crate) fn set_up_process(cmd: &mut Command, group: bool, parent_death_signal: Option<i32>) {
    if group {
        cmd.process_group(0);
    }
    if let Some(signal) = parent_death_signal {
        let parent = nix::unistd::getpid().as_raw();
        // SAFETY: the closure runs in the forked child before exec and
        // calls only `prctl` and `getppid` on integers it captured by
        // value: it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || sys::set_parent_death_signal(signal, parent));
        }
    }
}

/// What `prepare` made before the spawn: the protocol's channel and the
/// listening sockets, whose copies we close once the child runs.
pub(crate) struct Prepared {
    channel: PreparedChannel,
    listeners: Vec<(String, OwnedFd)>,
}

/// A protocol's channel, made before the spawn.
pub(crate) enum PreparedChannel {
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

/// What the builder of either API says about how to spawn and watch the
/// child: everything but the command itself.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) protocol: Protocol,
    /// The channel's fd in the child; by default 3, above the listeners.
    pub(crate) fd: Option<RawFd>,
    /// Listening sockets passed by socket activation, in fd order.
    pub(crate) listeners: Vec<listen::Passed>,
    pub(crate) options: ChannelOptions,
    pub(crate) on_timeout: OnTimeout,
    /// Whether a sender reparented to us counts (systemd only).
    pub(crate) adopted: bool,
    /// Kill (group too) and reap on drop.
    pub(crate) kill_on_drop: bool,
    /// The child leads a process group of its own.
    pub(crate) process_group: bool,
    /// `PR_SET_PDEATHSIG` for the child.
    pub(crate) parent_death_signal: Option<i32>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            protocol: Protocol::Native,
            fd: None,
            listeners: Vec::new(),
            options: ChannelOptions::default(),
            on_timeout: OnTimeout::Kill,
            adopted: false,
            kill_on_drop: false,
            process_group: false,
            parent_death_signal: None,
        }
    }
}

/// Our side of a protocol's channel, once our copy of the child's end is
/// closed (shared by the blocking and the async `spawn`).
pub(crate) enum Ours {
    Native(OwnedFd),
    Pipe(pipe::PipeWaiter),
    Systemd(systemd::NotifyReceiver),
}

impl Prepared {
    /// Closes our copy of the child's end and keeps our side. Call it as
    /// soon as the child runs (or failed to start): until then the child's
    /// close cannot be seen as the end of the channel.
    pub(crate) fn into_ours(self) -> Ours {
        drop(self.listeners);
        match self.channel {
            PreparedChannel::Native { ours, theirs } => {
                drop(theirs);
                Ours::Native(ours)
            }
            PreparedChannel::Pipe { waiter, theirs } => {
                drop(theirs);
                Ours::Pipe(waiter)
            }
            PreparedChannel::Systemd { receiver } => Ours::Systemd(receiver),
        }
    }
}

impl PreparedChannel {
    fn child_end_mut(&mut self) -> Option<&mut OwnedFd> {
        match self {
            PreparedChannel::Native { theirs, .. } | PreparedChannel::Pipe { theirs, .. } => {
                Some(theirs)
            }
            PreparedChannel::Systemd { .. } => None,
        }
    }
}

/// A pid a child named as its main process in readiness, and what decides
/// whether readyfd takes it (PROTOCOL.md §6.4); shared by both drivers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MainClaim {
    /// The pid named (`Ready.pid`, or systemd's accepted `MAINPID=`).
    pub(crate) named: u32,
    /// The pid spawned.
    pub(crate) spawned: u32,
    pub(crate) protocol: Protocol,
    /// The process that wrote the native `Ready` frame, as the kernel
    /// attests it (`SO_PASSCRED`), if known.
    pub(crate) writer: Option<u32>,
    /// The child leads a process group of its own.
    pub(crate) group: bool,
    /// A process reparented to us counts (`accept_adopted`).
    pub(crate) adopted: bool,
}

impl MainClaim {
    /// The main pid readyfd takes, and a pidfd on it when it is not the
    /// spawned process (none for one adopted that is gone already: it is
    /// then neither signalled nor waited for).
    ///
    /// A native claim is taken when the named process wrote the `Ready`
    /// itself, descends from the spawned process (or, with `adopted`, was
    /// reparented to us), or is in the spawned process's group (with
    /// `group`); the last two are checked with a pidfd already open and
    /// the process still running, so that they are about the process the
    /// pidfd holds, not a later one with its pid. Any other pid, and one
    /// whose descent cannot be checked (no `/proc`), is refused: the main
    /// pid stays the spawned one. A systemd `MAINPID=` comes here already
    /// checked by the receiver's own rule.
    pub(crate) fn adopt(&self) -> (u32, Option<OwnedFd>) {
        let (named, spawned) = (self.named, self.spawned);
        if named == spawned || named == 0 {
            return (spawned, None);
        }
        if self.protocol != Protocol::Native {
            return (named, sys::pidfd_open(named).ok());
        }
        let fd = sys::pidfd_open(named).ok();
        if self.writer == Some(named) {
            return (named, fd);
        }
        let Some(fd) = fd else {
            return (spawned, None);
        };
        let in_group = self.group
            && nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(named as i32)))
                .is_ok_and(|g| g.as_raw() as u32 == spawned);
        let ancestry = crate::ancestry::Ancestry {
            ours: std::process::id(),
            adopted: self.adopted,
            proc_ok: sys::proc_available(),
        };
        let taken =
            in_group || ancestry.descends(named, |p| p == spawned, &sys::parent_pid) == Some(true);
        if taken && !sys::pidfd_exited(fd.as_fd()) {
            (named, Some(fd))
        } else {
            (spawned, None)
        }
    }
}

/// Sets up the watching side of a spawned child.
fn finish_spawn(ours: Ours, pid: u32, options: ChannelOptions) -> io::Result<(Waiter, OwnedFd)> {
    let pidfd = sys::pidfd_open(pid)?;
    let waiter = match ours {
        Ours::Native(sock) => {
            let watch = pidfd.try_clone()?;
            Waiter::Native(Channel::start(sock, Role::Parent, Some(watch), options)?)
        }
        Ours::Pipe(waiter) => Waiter::Pipe(waiter),
        Ours::Systemd(receiver) => Waiter::Systemd(receiver),
    };
    Ok((waiter, pidfd))
}

#[derive(Debug)]
enum Waiter {
    Native(Channel),
    /// The native channel, taken by [`ReadyChild::take_direct`] after
    /// readiness; what the child's last status was then.
    Direct(Option<String>),
    Pipe(pipe::PipeWaiter),
    Systemd(systemd::NotifyReceiver),
}

/// A spawned child with a readiness channel.
///
/// Dropping it does not kill the child (as with [`std::process::Child`])
/// unless the command asked for
/// [`kill_on_drop`](ReadyCommand::kill_on_drop); use [`stop`](Self::stop)
/// or [`kill`](Self::kill).
#[derive(Debug)]
pub struct ReadyChild {
    child: Child,
    pid: u32,
    /// Its `/proc/<pid>/stat`, held from spawn on (see [`ProcStat`]).
    proc_stat: ProcStat,
    pidfd: OwnedFd,
    waiter: Waiter,
    protocol: Protocol,
    spawned_at: Instant,
    readiness: Option<Readiness>,
    /// The process readiness came from, when it is not the spawned one
    /// (after a wrapper): a pidfd, so that a reused pid is never signalled.
    main: Option<OwnedFd>,
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
    /// With [`kill_on_drop`](ReadyCommand::kill_on_drop): kills the child
    /// (and its group, and the process readiness came from) with `SIGKILL`
    /// and reaps it, also while a panic unwinds.
    fn drop(&mut self) {
        if !self.kill_on_drop {
            return;
        }
        let _ = self.signal_all(Signal::SIGKILL);
        let _ = self.kill();
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
    /// into a thread that serves the child's requests (configuration,
    /// secrets) while [`wait_ready`](Self::wait_ready) runs. The handle is
    /// a cheap clone that does not keep the channel open: [`stop`](Self::stop)
    /// and dropping the `ReadyChild` close it, and a thread blocked in
    /// [`Channel::recv`] then returns [`ChannelError::Closed`](crate::ChannelError::Closed).
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
            Waiter::Native(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// Takes the native channel as a [`DirectChannel`]: driven by the
    /// calling thread with no background reader, for the fastest small
    /// round trips (one `sendmsg` and one `recvmsg` per request; see
    /// [`DirectChannel`] for what nobody reading between calls means).
    /// Everything the channel had received and not handed out (requests,
    /// notifications, fds, the child's `Ready` fds) moves over.
    ///
    /// Only after [`wait_ready`](Self::wait_ready) has seen the child
    /// ready: readiness is judged by the background channel, by the rules
    /// of PROTOCOL.md §6, and the direct channel changes none of them. It
    /// watches the main process (the spawned one, or the one `Ready` named
    /// after a wrapper and readyfd took, [`Readiness::main_pid`]; never a
    /// refused one): once that has exited, a call that finds
    /// nothing more to read fails with
    /// [`ChannelError::Closed`](crate::ChannelError::Closed), even while
    /// another process keeps the socket open.
    ///
    /// Afterwards [`channel`](Self::channel) is `None`, and
    /// [`stop`](Self::stop) cannot ask `Shutdown` (it has no channel): it
    /// signals at once (`SIGTERM`, then `SIGKILL` after `grace`). To stop
    /// a child gracefully, ask it through the direct channel first:
    /// ```no_run
    /// # fn demo(mut child: readyfd::ReadyChild) -> Result<(), Box<dyn std::error::Error>> {
    /// # use std::time::Duration;
    /// let mut direct = child.take_direct()?;
    /// // ... requests ...
    /// direct.shutdown(Duration::from_secs(5))?; // acknowledged
    /// drop(direct);
    /// child.stop(Duration::from_secs(5))?; // waits for the exit, signals if need be
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`DirectError::NotNative`] for another protocol,
    /// [`DirectError::NotReady`] before readiness,
    /// [`DirectError::AlreadyTaken`] a second time; and as
    /// [`Channel::into_direct`] (handles from [`channel`](Self::channel)
    /// still alive: [`DirectError::Shared`]). On error the channel stays
    /// as it was.
    pub fn take_direct(&mut self) -> Result<DirectChannel, DirectError> {
        match &self.waiter {
            Waiter::Native(_) => {}
            Waiter::Direct(_) => return Err(DirectError::AlreadyTaken),
            _ => return Err(DirectError::NotNative),
        }
        if self.readiness.is_none() {
            return Err(DirectError::NotReady);
        }
        let status = self.last_status();
        let Waiter::Native(ch) = std::mem::replace(&mut self.waiter, Waiter::Direct(status)) else {
            unreachable!("matched above");
        };
        // The channel watches the process that said `Ready` since
        // `wait_ready` (`watch_peer`), and the direct channel takes a copy
        // of that pidfd.
        match ch.into_direct() {
            Ok(direct) => Ok(direct),
            Err(e) => {
                let error = e.error;
                self.waiter = Waiter::Native(e.into_inner());
                Err(error)
            }
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
            Waiter::Direct(status) => status.clone(),
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
    /// pidfd, not polled). What counts as ready is the table of
    /// `PROTOCOL.md` §6: an explicit message (`Ready`, a newline,
    /// `READY=1`) whenever it is read; the channel's end without one only
    /// while the spawned process is alive, and never once it has exited
    /// (a wrapper that exited 0 leaves only explicit messages to count).
    ///
    /// A pid the child names in `Ready` other than its own becomes the
    /// main process ([`Readiness::main_pid`]) only by the rule of
    /// `PROTOCOL.md` §6.4: the process that wrote the `Ready` (the kernel
    /// attests it), a descendant of the spawned process, or, with
    /// [`process_group`](ReadyCommand::process_group), a member of its
    /// group. Any other pid is refused (readiness stands, and the main
    /// process stays the spawned one): it is never signalled, watched or
    /// waited for.
    /// Calling it again after success returns the same readiness; after a
    /// timeout with [`OnTimeout::Leave`], it picks up where it stopped.
    ///
    /// # Errors
    /// [`ReadyError::Exited`], [`ReadyError::Timeout`] (the child is killed
    /// unless [`OnTimeout::Leave`] was chosen), [`ReadyError::Protocol`],
    /// [`ReadyError::Failed`], [`ReadyError::Undecidable`] (no `/proc`),
    /// [`ReadyError::Io`].
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<&Readiness, ReadyError> {
        if self.readiness.is_none() {
            if self.failed {
                return Err(ReadyError::AlreadyFailed { pid: self.pid });
            }
            let deadline = sys::deadline_after(timeout);
            match self.wait_ready_until(deadline, timeout) {
                Ok(mut r) => {
                    let writer = match &self.waiter {
                        Waiter::Native(ch) => ch.take_ready_writer(),
                        _ => None,
                    };
                    let claim = MainClaim {
                        named: r.ready.pid,
                        spawned: self.pid,
                        protocol: self.protocol,
                        writer,
                        group: self.group,
                        adopted: self.adopted,
                    };
                    (r.main_pid, self.main) = claim.adopt();
                    if let Waiter::Native(ch) = &self.waiter {
                        // The process that said `Ready` is the peer now: its
                        // exit ends the channel (PROTOCOL.md §6.3). One it
                        // named that cannot be watched (gone and reaped
                        // already) leaves the channel to its end of stream.
                        match (r.pid_mismatch(), &self.main) {
                            (None, _) => ch.watch_peer(None),
                            (Some(_), Some(main)) => {
                                if let Ok(main) = main.try_clone() {
                                    ch.watch_peer(Some(main));
                                }
                            }
                            (Some(_), None) => {}
                        }
                    }
                    self.readiness = Some(r);
                }
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
        let mut next = self.look(deadline);
        loop {
            next = match next {
                Next::Ready(ready, via) => return Ok(self.readiness_of(ready, via)),
                Next::Fail(e) => return Err(e),
                Next::Timeout => return Err(self.timed_out(timeout)?),
                Next::Wait => self.look(deadline),
                Next::Reap => {
                    let grace_end = Instant::now() + UNDECIDED_GRACE;
                    let until = self.verdict.reap_deadline(deadline, grace_end);
                    match self.wait_deadline(Some(until))? {
                        Some(status) => self.verdict.on_exit(status, self.last_status()),
                        None => self.verdict.on_reap_timeout(Instant::now() >= deadline),
                    }
                }
            };
        }
    }

    /// Asks the protocol's waiter what it sees (until `deadline`), and the
    /// readiness core what that means.
    fn look(&mut self, deadline: Instant) -> Next {
        if self.verdict.reaping() {
            return Next::Reap;
        }
        let pid = self.pid;
        let watch_exit = self.verdict.watches_exit();
        let seen = match &mut self.waiter {
            Waiter::Native(ch) => ch.wait_ready_seen(deadline, watch_exit, pid),
            // Not reached: the channel is taken only after readiness, which
            // `wait_ready` then returns without looking.
            Waiter::Direct(_) => crate::verdict::Seen::Io(io::Error::other(
                "the channel was taken by take_direct before readiness",
            )),
            Waiter::Pipe(p) => p.wait(self.pidfd.as_fd(), pid, deadline, watch_exit),
            Waiter::Systemd(r) => r.wait(self.pidfd.as_fd(), pid, deadline, !watch_exit),
        };
        let (stat, pidfd) = (&self.proc_stat, self.pidfd.as_fd());
        self.verdict.on_seen(seen, || stat.liveness(pidfd))
    }

    /// Applies [`OnTimeout`] and says how the wait ended.
    fn timed_out(&mut self, timeout: Duration) -> io::Result<ReadyError> {
        let killed = self.on_timeout == OnTimeout::Kill && self.child.try_wait()?.is_none();
        if killed {
            self.kill()?;
        }
        Ok(ReadyError::Timeout {
            pid: self.pid,
            waited: timeout,
            killed,
            last_status: self.last_status(),
        })
    }

    fn readiness_of(&self, ready: Ready, via: ReadyVia) -> Readiness {
        Readiness {
            ready,
            via,
            spawned_pid: self.pid,
            main_pid: self.pid,
            elapsed: self.spawned_at.elapsed(),
        }
    }

    /// The exit status if the child has exited (reaping it), without
    /// waiting, as [`Child::try_wait`]. After a [`ReadyVia::Closed`] readiness, this is the cheap
    /// way to ask whether the child died right after closing.
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

    /// Waits for the child to exit, for at most `timeout`; `Ok(None)` when
    /// it is still running. Uses the pidfd: no polling loop. Leaves stdin
    /// open, as [`wait`](Self::wait).
    ///
    /// # Errors
    /// When `poll` or `waitpid` fails.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        self.wait_deadline(Some(sys::deadline_after(timeout)))
    }

    /// Waits for the child to exit. Unlike [`Child::wait`], it leaves the
    /// child's stdin open (a descendant that a wrapper handed it to may
    /// still read it), as the tokio API's does.
    ///
    /// # Errors
    /// When `waitpid` fails.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.wait_deadline(None)? {
                return Ok(status);
            }
        }
    }

    fn wait_deadline(&mut self, deadline: Option<Instant>) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.child.try_wait()? {
            return Ok(Some(s));
        }
        let ev = sys::wait_fd(self.pidfd.as_fd(), PollFlags::POLLIN, deadline)?;
        if ev.is_empty() {
            return Ok(None);
        }
        self.child.try_wait()
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
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if self.group {
            sys::signal_group(self.pid, Signal::SIGKILL as i32)?;
        }
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.child.kill()?;
        self.wait()
    }

    /// Stops what readiness came from, gracefully: native `Shutdown` first
    /// (the child has `grace` to exit), then `SIGTERM` (and `SIGCONT`, for
    /// a stopped process) and another `grace`, then `SIGKILL`. After a
    /// wrapper (`sh -c 'server &'`), the main process readiness named
    /// ([`Readiness::main_pid`]) is stopped too, through a pidfd taken at
    /// readiness (so a reused pid is never signalled), although the
    /// spawned process is long gone. A pid the child named that readyfd
    /// refused (`PROTOCOL.md` §6.4: not the writer of `Ready`, not a
    /// descendant, not in the child's group) is never signalled nor waited
    /// for.
    /// Returns what ended it ([`StopVia::Shutdown`] for a child that
    /// acknowledged `Shutdown` and exited in time, even by raising
    /// `SIGTERM` on itself) and the spawned process's status.
    ///
    /// With [`process_group`](ReadyCommand::process_group), the signals go
    /// to the whole group, and whatever of the group is still running
    /// once the child has exited is killed with `SIGKILL`.
    ///
    /// # Errors
    /// When signalling or reaping fails.
    pub fn stop(&mut self, grace: Duration) -> io::Result<Stopped> {
        let stopped = self.stop_leader(grace)?;
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

    fn stop_leader(&mut self, grace: Duration) -> io::Result<Stopped> {
        if let Some(s) = self.child.try_wait()? {
            if self.main_exited(Some(Instant::now()))? {
                return Ok(Stopped::new(StopVia::AlreadyExited, s));
            }
        }
        if let Waiter::Native(ch) = &self.waiter {
            if ch.closed().is_none() && ch.shutdown(grace).is_ok() {
                if let Some(s) = self.wait_all(Some(sys::deadline_after(grace)))? {
                    return Ok(Stopped::new(StopVia::Shutdown, s));
                }
            }
        }
        if let Some(s) = self.wait_all(Some(Instant::now()))? {
            return Ok(Stopped::new(StopVia::AlreadyExited, s));
        }
        self.signal_all(Signal::SIGTERM)?;
        self.signal_all(Signal::SIGCONT)?;
        if let Some(s) = self.wait_all(Some(sys::deadline_after(grace)))? {
            return Ok(Stopped::new(StopVia::Sigterm, s));
        }
        self.signal_all(Signal::SIGKILL)?;
        let status = self.wait_all(None)?.expect("no deadline");
        Ok(Stopped::new(StopVia::Sigkill, status))
    }

    /// Signals the spawned process and the one readiness came from.
    fn signal_all(&mut self, signal: Signal) -> io::Result<()> {
        if let Some(main) = &self.main {
            sys::pidfd_signal(main.as_fd(), signal as i32)?;
        }
        self.send_signal(signal as i32)
    }

    /// Waits until both the spawned process (reaped) and the one readiness
    /// came from have exited, or `deadline`.
    fn wait_all(&mut self, deadline: Option<Instant>) -> io::Result<Option<ExitStatus>> {
        let Some(status) = self.wait_deadline(deadline)? else {
            return Ok(None);
        };
        Ok(self.main_exited(deadline)?.then_some(status))
    }

    /// Whether the process readiness came from (if not the spawned one)
    /// has exited by `deadline`.
    fn main_exited(&self, deadline: Option<Instant>) -> io::Result<bool> {
        match &self.main {
            Some(main) => Ok(!sys::wait_fd(main.as_fd(), PollFlags::POLLIN, deadline)?.is_empty()),
            None => Ok(true),
        }
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

/// The std [`Command`] inside either API's command.
pub(crate) trait StdCommand {
    fn std(&self) -> &Command;
}

impl StdCommand for Command {
    fn std(&self) -> &Command {
        self
    }
}

/// The builder methods of `ReadyCommand`, the same for the blocking and the
/// tokio API (which differ only in the `Command` they wrap).
macro_rules! ready_command_setters {
    ($command:ty) => {
        impl ReadyCommand {
            /// The protocol to offer (default [`Protocol::Native`](crate::Protocol::Native)).
            pub fn protocol(&mut self, protocol: crate::Protocol) -> &mut Self {
                self.spec.protocol = protocol;
                self
            }

            /// The fd number the child receives its end at (native and
            /// pipe only; default 3, or just above the
            /// [listening sockets](Self::listen)). Any number from 3 up,
            /// below the fd limit (`ulimit -n`), and not one of the
            /// listening sockets' (else [`spawn`](Self::spawn) fails with
            /// [`SpawnError::FdTaken`](crate::SpawnError::FdTaken)).
            pub fn fd(&mut self, fd: std::os::fd::RawFd) -> &mut Self {
                self.spec.fd = Some(fd);
                self
            }

            /// Passes a listening socket (a `TcpListener`, a
            /// `UnixListener`, or any [`OwnedFd`](std::os::fd::OwnedFd))
            /// under `name`, by socket activation as systemd does it: the
            /// child finds the sockets at fds 3 onwards in the order they
            /// were added, `LISTEN_FDS=<count>`, `LISTEN_FDNAMES=<a>:<b>`
            /// and `LISTEN_PID=<its own pid>`, so that unmodified
            /// socket-activatable programs (`sd_listen_fds`, the `listenfd`
            /// crate, [`Listeners`](crate::Listeners)) take them. The
            /// readiness fd then sits above them (3 + count) unless
            /// [`fd`](Self::fd) says otherwise.
            ///
            /// Connections made before the child accepts wait in the
            /// socket's backlog: a client may connect as soon as `spawn`
            /// returns. Our copy of each socket is closed once the child
            /// runs. The name must be printable ASCII without `:`, at most
            /// 255 bytes (else [`SpawnError::ListenName`](crate::SpawnError::ListenName)).
            ///
            /// The child is then started by an `exec` of readyfd's own (the
            /// pid is written into `LISTEN_PID` between fork and exec), with
            /// the program, arguments and environment the command says; a
            /// command with an `arg0` of its own is refused
            /// ([`SpawnError::Listen`](crate::SpawnError::Listen)).
            pub fn listen(
                &mut self,
                name: impl Into<String>,
                socket: impl Into<std::os::fd::OwnedFd>,
            ) -> &mut Self {
                self.spec.listeners.push(crate::listen::Passed {
                    name: name.into(),
                    fd: socket.into(),
                });
                self
            }

            /// Options of the native channel.
            pub fn channel_options(&mut self, options: crate::ChannelOptions) -> &mut Self {
                self.spec.options = options;
                self
            }

            /// Under [`Protocol::Systemd`](crate::Protocol::Systemd), also
            /// believe a sender whose chain of parents reaches this process
            /// rather than the child: a daemon that double-forked and was
            /// reparented to us; under the native protocol, also take such
            /// a process as the main one when `Ready` names it
            /// (`PROTOCOL.md` §6.4). Only sound for a parent that is the child
            /// subreaper of its descendants (`PR_SET_CHILD_SUBREAPER`) and
            /// has no other children that could notify, as `readyfd run`
            /// is; default off.
            pub fn accept_adopted(&mut self, accept: bool) -> &mut Self {
                self.spec.adopted = accept;
                self
            }

            /// Kill the child with `SIGKILL` when its `ReadyChild` is
            /// dropped, also while a panic unwinds, with its process group
            /// under [`process_group`](Self::process_group) and the process
            /// readiness came from after a wrapper; the blocking API reaps
            /// it there, tokio's in the background. Default off: dropping
            /// leaves the child running.
            pub fn kill_on_drop(&mut self, kill: bool) -> &mut Self {
                self.spec.kill_on_drop = kill;
                self
            }

            /// Start the child as the leader of a process group of its own
            /// (`setpgid(0, 0)`), so that what it starts in the background
            /// belongs to it: `signal`, `kill`, `stop` and a
            /// [`kill_on_drop`](Self::kill_on_drop) then signal the whole
            /// group as well as the child. It also takes the child out of
            /// the terminal's foreground group: Ctrl-C no longer reaches it
            /// directly. Default off.
            pub fn process_group(&mut self, group: bool) -> &mut Self {
                self.spec.process_group = group;
                self
            }

            /// Ask the kernel to send the child `signal` (a number such as
            /// `libc::SIGTERM`) when its parent dies, even by `SIGKILL`
            /// (`PR_SET_PDEATHSIG`, Linux). The request is made in the
            /// child before exec, which then checks that the parent is
            /// still there: if it died first, the child exits at once.
            ///
            /// The signal comes when the *thread* that spawned the child
            /// exits, not the whole process: spawn from a thread that lives
            /// as long as the child should (the main thread, or a runtime
            /// worker that is not retired). It is cleared when the child
            /// execs a set-uid or set-gid program. An invalid number makes
            /// [`spawn`](Self::spawn) fail with
            /// [`SpawnError::Start`](crate::SpawnError::Start). Default: no
            /// signal.
            pub fn parent_death_signal(&mut self, signal: i32) -> &mut Self {
                self.spec.parent_death_signal = Some(signal);
                self
            }

            /// What a timed-out wait does to the child (default
            /// [`OnTimeout::Kill`](crate::OnTimeout::Kill)).
            pub fn on_timeout(&mut self, on_timeout: crate::OnTimeout) -> &mut Self {
                self.spec.on_timeout = on_timeout;
                self
            }

            /// Takes the command for the one spawn it is good for, leaving a
            /// bare command of the same program in its place.
            fn take_for_spawn(
                &mut self,
            ) -> Result<($command, crate::spawn::Spec), crate::SpawnError> {
                let program = crate::spawn::StdCommand::std(&self.cmd)
                    .get_program()
                    .to_owned();
                if self.spawned {
                    return Err(crate::SpawnError::AlreadySpawned {
                        program: program.to_string_lossy().into_owned(),
                    });
                }
                self.spawned = true;
                let cmd = std::mem::replace(&mut self.cmd, <$command>::new(program));
                Ok((cmd, std::mem::take(&mut self.spec)))
            }

            /// The wrapped command, to change it further.
            pub fn command_mut(&mut self) -> &mut $command {
                &mut self.cmd
            }

            /// Changes the wrapped command in a builder chain.
            pub fn command_mut_with(&mut self, f: impl FnOnce(&mut $command)) -> &mut Self {
                f(&mut self.cmd);
                self
            }
        }
    };
}
pub(crate) use ready_command_setters;

#[cfg(test)]
mod tests {
    use super::*;

    /// The child learns the identity of the fd it is given, so that a
    /// process that inherits the variables without the fd takes nothing.
    #[test]
    fn the_child_is_told_its_fds_identity() {
        for (protocol, var, other) in [
            (Protocol::Native, "READYFD_INODE", "CHILD_READY_FD_INODE"),
            (Protocol::Pipe, "CHILD_READY_FD_INODE", "READYFD_INODE"),
        ] {
            let mut cmd = Command::new("true");
            // Inherited from our own parent: must not reach the child.
            cmd.env(other, "1:2");
            let mut spec = Spec {
                protocol,
                ..Spec::default()
            };
            let mut prepared = prepare(&mut cmd, &mut spec).unwrap();
            let theirs = prepared.channel.child_end_mut().unwrap();
            let want = crate::protocol::fd_identity(theirs.as_fd()).unwrap();
            let envs: Vec<_> = cmd.get_envs().collect();
            assert!(
                envs.contains(&(OsStr::new(var), Some(OsStr::new(&want)))),
                "{protocol}: {envs:?}"
            );
            assert!(
                envs.contains(&(OsStr::new(other), None)),
                "{protocol}: {envs:?}"
            );
        }
    }
}
