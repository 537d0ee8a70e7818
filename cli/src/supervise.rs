//! Supervising PROGRAM: start it in a process group of its own, wait for
//! its readiness while handling signals, stay attached, run `--then`, and
//! stop it together with every process of its group.
//!
//! One thread decides (the main thread, which owns the signalfd); the only
//! other thread is the one blocked in the library's `wait_ready`, which
//! also draws the progress line. Every wait is an event wait: SIGCHLD, a
//! signal, the end of that thread, or a deadline that is a bound.
//!
//! readyfd makes itself the child subreaper of its descendants, so the
//! processes of PROGRAM's group whose parent died become its children: it
//! can reap them and know for certain when none is left, instead of
//! signalling and hoping.

use std::ffi::OsString;
use std::io::{self, Write as _};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use readyfd::{
    Channel, Incoming, OnTimeout, Protocol, Readiness, ReadyChild, ReadyCommand, ReadyError,
    RemoteErrorKind, SpawnError, describe_exit,
};

use crate::exit::{self, Failure, signal_code};
use crate::pidfd;
use crate::signals::{Event, Signals};
use crate::term::{Term, human, quoted};
use crate::watchdog::Watchdog;

/// How often the progress line is redrawn.
const TICK: Duration = Duration::from_millis(200);
/// How long a wait lasts before the progress line appears.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// What to start and how to treat it.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// The program, as given.
    pub(crate) program: OsString,
    /// Its arguments, placeholders already replaced.
    pub(crate) args: Vec<OsString>,
    /// What to call it in messages.
    pub(crate) name: String,
    /// The readiness protocol to offer.
    pub(crate) protocol: Protocol,
    /// The fd number of the channel (native and pipe).
    pub(crate) fd: RawFd,
    /// How long it may take to become ready.
    pub(crate) timeout: Duration,
    /// How long each step of stopping it may take.
    pub(crate) grace: Duration,
    /// Status updates after readiness as JSON lines on stdout.
    pub(crate) json: bool,
}

/// Makes readyfd the subreaper of its descendants (see the module docs).
/// A failure only weakens the clean-up, so it is reported and ignored.
pub(crate) fn become_subreaper(term: &Term) {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        term.message(format_args!(
            "cannot become the subreaper of PROGRAM's processes ({e}): processes it leaves behind may be missed"
        ));
    }
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopVia {
    /// PROGRAM had exited already.
    AlreadyExited,
    /// It acknowledged the native `Shutdown` request and exited.
    Shutdown,
    /// It exited after `SIGTERM` to its group.
    Sigterm,
    /// It had to be killed.
    Sigkill,
}

/// The result of [`Supervisor::stop`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopped {
    /// PROGRAM's exit status.
    pub(crate) status: ExitStatus,
    /// What ended it.
    pub(crate) via: StopVia,
    /// How long stopping took.
    pub(crate) took: Duration,
}

impl Stopped {
    /// `acknowledged Shutdown and exited with status 0`, in words.
    pub(crate) fn describe(&self) -> String {
        let how = describe_exit(self.status);
        match self.via {
            StopVia::AlreadyExited => format!("it had already ended: it {how}"),
            StopVia::Shutdown => format!("it acknowledged Shutdown and {how}"),
            StopVia::Sigterm => format!("SIGTERM to its process group; it {how}"),
            StopVia::Sigkill => {
                format!(
                    "it did not stop within the grace period: SIGKILL to its process group; it {how}"
                )
            }
        }
    }
}

/// PROGRAM's process group (its pid, since it leads the group).
#[derive(Debug, Clone, Copy)]
struct Group(Pid);

impl Group {
    /// Sends `signal` to every process of the group. A group that is gone
    /// is not an error.
    ///
    /// The group id cannot name another group while a member lives; once
    /// the group is empty and its leader reaped, the number could in theory
    /// be reused, which would take a full cycle of the pid space between two
    /// of our calls.
    fn signal(self, signal: Signal) {
        let _ = killpg(self.0, signal);
    }

    /// Sends `signal`, then `SIGCONT`, as systemd, s6 and runit do: a
    /// stopped process (`SIGSTOP`, Ctrl-Z) acts on nothing but `SIGKILL`
    /// until it is continued, so without it a stop would wait out the
    /// grace period and a forwarded signal would do nothing.
    fn signal_and_continue(self, signal: Signal) {
        self.signal(signal);
        if signal != Signal::SIGKILL && signal != Signal::SIGCONT {
            self.signal(Signal::SIGCONT);
        }
    }

    /// Whether any process (a zombie included) is still in the group.
    fn alive(self) -> bool {
        !matches!(killpg(self.0, None), Err(Errno::ESRCH))
    }
}

/// A running PROGRAM under supervision.
#[derive(Debug)]
pub(crate) struct Supervisor<'a> {
    /// The library's handle. Lent to [`serving`](Supervisor::serving) while
    /// the channel is served, `None` for that time.
    child: Option<ReadyChild>,
    /// PROGRAM's pid.
    pid: u32,
    /// PROGRAM's status, when it was reaped before its handle was lent out.
    reaped: Option<ExitStatus>,
    /// PROGRAM had exited 0 before its readiness was seen: what said ready
    /// was another process of its group (a wrapper's server).
    wrapper_before_ready: bool,
    group: Group,
    signals: &'a Signals,
    term: &'a Term,
    launch: Launch,
    /// What ends the groups if readyfd is killed outright.
    watchdog: Watchdog,
    /// When SIGTERM went to the group, if it did.
    term_sent: Option<Instant>,
    /// Whether SIGKILL went to the group.
    killed: bool,
    /// The main pid PROGRAM reported, once ready, when it is another process.
    main: Option<Main>,
    /// `--then` CMD's `sh` while it runs.
    then_pid: Option<u32>,
}

/// The main pid a program reported, when it is not PROGRAM itself.
#[derive(Debug)]
struct Main {
    pid: u32,
    /// A pidfd, when the main pid left PROGRAM's group (a daemon's
    /// `setsid`): the group's signals do not reach it, this does, and never
    /// a recycled pid.
    outside: Option<OwnedFd>,
    /// Its status as the shell reports it, once readyfd reaped it.
    status: Option<u8>,
}

/// What a wait inside [`Supervisor::serving`] ended on.
enum Step {
    /// PROGRAM has exited (not reaped yet).
    ProgramExited,
    /// `--then` CMD's `sh` exited with this status.
    CmdEnded(ExitStatus),
}

/// How `--then` went: CMD's status, and PROGRAM's if it failed meanwhile.
#[derive(Debug)]
pub(crate) struct ThenOutcome {
    /// CMD's status.
    pub(crate) cmd: ExitStatus,
    /// PROGRAM's status when it ended with a failure while CMD ran.
    pub(crate) program_failed: Option<ExitStatus>,
    /// Whether readyfd stopped CMD because of that failure.
    pub(crate) cmd_stopped: bool,
}

impl<'a> Supervisor<'a> {
    /// Starts PROGRAM, told of by `watchdog`, in a process group of its own,
    /// with the readiness channel, and with `SIGTERM` as its parent-death
    /// signal. The watchdog ends PROGRAM's group (and later CMD's) if
    /// readyfd dies without ending them itself (see [`crate::watchdog`]).
    ///
    /// # Errors
    /// [`exit::START`] when the program cannot be started, [`exit::SYSTEM`]
    /// when the channel or the watchdog cannot be set up.
    pub(crate) fn start(
        launch: Launch,
        watchdog: Watchdog,
        listeners: Vec<(String, std::os::fd::OwnedFd)>,
        signals: &'a Signals,
        term: &'a Term,
    ) -> Result<Self, Failure> {
        let mut cmd = Command::new(&launch.program);
        cmd.args(&launch.args).process_group(0);
        Signals::reset_in_child(&mut cmd);
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs in the forked child before exec; it makes
        // two system calls (prctl, getppid) on integers it captured by value,
        // allocates nothing and takes no lock: async-signal-safe.
        unsafe {
            cmd.pre_exec(move || die_with_parent(parent));
        }
        watchdog.register_in_child(&mut cmd);
        // readyfd is the subreaper of PROGRAM's processes and starts no
        // other child that could notify before readiness: a daemon
        // reparented to it descends from PROGRAM.
        let mut ready_cmd = ReadyCommand::new(cmd);
        for (name, fd) in listeners {
            ready_cmd.listen(name, fd);
        }
        let child = ready_cmd
            .protocol(launch.protocol)
            .fd(launch.fd)
            .accept_adopted(true)
            .on_timeout(OnTimeout::Leave)
            .spawn()
            .map_err(|e| spawn_failure(e, &launch))?;
        let pid = child.id();
        let group = Group(Pid::from_raw(pid as libc::pid_t));
        Ok(Supervisor {
            child: Some(child),
            pid,
            reaped: None,
            wrapper_before_ready: false,
            group,
            signals,
            term,
            launch,
            watchdog,
            term_sent: None,
            killed: false,
            main: None,
            then_pid: None,
        })
    }

    /// The last status text PROGRAM sent (native, systemd), whether with
    /// `Ready` or before it.
    pub(crate) fn last_status(&self) -> Option<String> {
        self.child.as_ref().and_then(|c| c.last_status())
    }

    /// The pid of PROGRAM (and id of its process group).
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    fn child(&mut self) -> io::Result<&mut ReadyChild> {
        self.child
            .as_mut()
            .ok_or_else(|| io::Error::other("readyfd bug: PROGRAM's handle is lent out"))
    }

    /// PROGRAM's exit status, reaping it, if it has exited; while the
    /// handle is lent out, its status is only looked at (`WNOWAIT`): the
    /// library's handle reaps it.
    fn program_status(&mut self) -> io::Result<Option<ExitStatus>> {
        match (&mut self.child, self.reaped) {
            (Some(c), _) => c.try_wait(),
            (None, Some(s)) => Ok(Some(s)),
            (None, None) => peek_exit(self.pid),
        }
    }

    /// The pids whose status belongs to someone: PROGRAM's (the library's
    /// handle), CMD's `sh` (std's `Child`) and the watchdog's.
    fn owned(&self) -> [u32; 3] {
        [
            self.pid,
            self.then_pid.unwrap_or(self.pid),
            self.watchdog.pid().unwrap_or(self.pid),
        ]
    }

    /// Reaps every other child that has exited (see [`reap_strays`]),
    /// keeping the main pid's status.
    fn reap_strays(&mut self) {
        let owned = self.owned();
        let main = &mut self.main;
        reap_strays(&owned, &mut |pid, code| {
            if let Some(m) = main.as_mut().filter(|m| m.pid == pid) {
                m.status = Some(code);
            }
        });
    }

    /// Runs `f` while a thread serves the native channel (see
    /// [`serve_channel`]): the child's notifications and status updates are
    /// read as they come, its requests answered `Unsupported`, so that it
    /// never stalls on a full channel. `f` gets the channel too (for
    /// `Shutdown`); PROGRAM's handle is lent out meanwhile, so `f` sees
    /// PROGRAM's exit through [`program_status`](Self::program_status)
    /// without reaping it.
    fn serving<R>(&mut self, f: impl FnOnce(&mut Self, Option<&Channel>) -> R) -> R {
        let Some(mut child) = self.child.take() else {
            return f(self, None);
        };
        // Reaped already (by the library, while waiting for readiness):
        // then there is nothing to look at with WNOWAIT.
        self.reaped = child.try_wait().ok().flatten();
        let stop = AtomicBool::new(false);
        let (term, json, pid) = (self.term, self.launch.json, self.pid);
        let name = self.launch.name.clone();
        let handle = child.channel();
        let r = std::thread::scope(|s| {
            let ch = handle.as_ref();
            if let Some(ch) = ch {
                let stop = &stop;
                let name = &name;
                // Without the thread, the channel is only not served.
                let _ = std::thread::Builder::new()
                    .name("readyfd-serve".into())
                    .spawn_scoped(s, move || serve_channel(ch, stop, term, json, name, pid));
            }
            let r = f(self, ch);
            stop.store(true, Ordering::Relaxed);
            r
        });
        self.child = Some(child);
        r
    }

    /// Waits until PROGRAM is ready, for at most the launch's timeout.
    ///
    /// A SIGINT, SIGTERM or SIGHUP meanwhile stops PROGRAM (SIGTERM to its
    /// group, SIGKILL after the grace period or at a second signal).
    ///
    /// # Errors
    /// A [`Failure`] with the exit code and message for a timeout, an exit
    /// before readiness, a protocol error or an interruption; PROGRAM and
    /// its group are stopped and reaped by then.
    pub(crate) fn wait_ready(&mut self) -> Result<Readiness, Failure> {
        let deadline = Instant::now() + self.launch.timeout;
        let (done_read, done_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| Failure::system("cannot create a pipe", e))?;
        let pid = self.pid;
        let owned = self.owned();
        let Supervisor {
            child,
            group,
            signals,
            term,
            launch,
            ..
        } = self;
        let Some(child) = child.as_mut() else {
            return Err(Failure::new(exit::INTERNAL, "PROGRAM's handle is lent out"));
        };
        let (group, signals, term, launch) = (*group, *signals, *term, &*launch);
        let (joined, interrupted, kill_at, killed) = std::thread::scope(|s| {
            let waiter = std::thread::Builder::new()
                .name("readyfd-wait".into())
                .spawn_scoped(s, move || {
                    // Dropped when this thread ends, however it ends: the
                    // main thread sees the pipe hang up.
                    let _done = done_write;
                    wait_with_progress(child, deadline, term, launch)
                });
            let waiter = match waiter {
                Ok(w) => w,
                Err(e) => {
                    return (
                        Err(Failure::system("cannot start a thread", e)),
                        None,
                        None,
                        false,
                    );
                }
            };
            let mut interrupted = None;
            let mut kill_at = None;
            let mut killed = false;
            loop {
                match signals.wait(Some(done_read.as_fd()), kill_at) {
                    Ok(Event::Other) => break,
                    // Orphans of PROGRAM's group are reaped as they end;
                    // PROGRAM itself is the waiting thread's to reap.
                    Ok(Event::Child) => reap_strays(&owned, &mut |_, _| {}),
                    Ok(Event::Signal { signal, .. }) if interrupted.is_none() => {
                        interrupted = Some(signal);
                        term.stop_progress();
                        term.message(format_args!(
                            "got {signal} while waiting for {} (pid {pid}): stopping it",
                            launch.name
                        ));
                        group.signal_and_continue(Signal::SIGTERM);
                        kill_at = Some(Instant::now() + launch.grace);
                    }
                    Ok(Event::Signal { .. }) | Ok(Event::Timeout) => {
                        group.signal(Signal::SIGKILL);
                        (kill_at, killed) = (None, true);
                    }
                    Err(_) => {
                        // Cannot watch signals any more: end the wait the
                        // hard way, which the waiting thread then reports.
                        group.signal(Signal::SIGKILL);
                        (kill_at, killed) = (None, true);
                        break;
                    }
                }
            }
            let joined = waiter.join().map_err(|_| {
                Failure::new(exit::INTERNAL, "the thread waiting for readiness panicked")
            });
            (joined, interrupted, kill_at, killed)
        });
        self.killed |= killed;
        if let Some(signal) = interrupted {
            self.term_sent = Some(kill_at.map_or_else(Instant::now, |k| k - self.launch.grace));
            let how = match self.stop(false) {
                Ok(s) => s.describe(),
                Err(e) => format!("stopping it failed: {e}"),
            };
            return Err(Failure::new(
                signal_code(signal as i32),
                format!(
                    "interrupted by {signal} before {} (pid {pid}) was ready; stopped it: {how}",
                    self.launch.name
                ),
            ));
        }
        match joined {
            Ok(Ok(readiness)) => {
                self.wrapper_before_ready = self
                    .child()
                    .and_then(|c| c.try_wait())
                    .is_ok_and(|s| s.is_some_and(|s| s.success()));
                let mut readiness = readiness;
                // What is reported (the ready line, READYFD_MAIN_PID) is the
                // main pid readyfd took, never a bare claim.
                readiness.ready.pid = self.adopt_main(readiness.ready.pid);
                readiness.main_pid = readiness.ready.pid;
                Ok(readiness)
            }
            Ok(Err(e)) => Err(self.ready_failure(e)),
            Err(f) => {
                let _ = self.stop(false);
                Err(f)
            }
        }
    }

    /// Takes note of the main pid PROGRAM reported, and returns the main
    /// pid readyfd takes. One that left PROGRAM's group (a daemon's
    /// `setsid`) is held by a pidfd and told to the watchdog, so that it is
    /// stopped with the group. Only PROGRAM's group or a descendant of
    /// readyfd is taken: a child could report any pid (readyfd's own, when
    /// `readyfd notify` is PROGRAM itself and was told its parent's pid, or
    /// an unrelated process), and readyfd signals, and tells CMD of, only
    /// what it started. Another pid is refused, with a message, and
    /// PROGRAM's pid stands.
    fn adopt_main(&mut self, main: u32) -> u32 {
        if main == self.pid || main == 0 {
            return self.pid;
        }
        let me = std::process::id();
        let in_group = nix::unistd::getpgid(Some(Pid::from_raw(main as libc::pid_t)))
            .is_ok_and(|g| g == self.group.0);
        let outside = if in_group {
            None
        } else {
            // Checked again after opening: the pidfd then holds that process.
            match pidfd::open(main)
                .ok()
                .filter(|_| pidfd::descends_from(main, me))
            {
                Some(fd) => Some(fd),
                None => {
                    self.term.message(format_args!(
                        "{} (pid {}) reported main pid {main}, which is neither in its process \
                         group nor a process readyfd started; ignored, the main pid is {}",
                        self.launch.name, self.pid, self.pid
                    ));
                    return self.main.as_ref().map_or(self.pid, |m| m.pid);
                }
            }
        };
        if outside.is_some() {
            self.watchdog.watch_pid(main);
        }
        self.main = Some(Main {
            pid: main,
            outside,
            status: None,
        });
        main
    }

    /// Adopts the main pid a systemd program reported with `MAINPID=`
    /// (before readiness, or after it: the library keeps it current), so
    /// that a failed run and a stop reach it too.
    fn refresh_main(&mut self) {
        let reported = self
            .child
            .as_ref()
            .and_then(|c| c.notify_state())
            .and_then(|st| st.main_pid);
        if let Some(mp) = reported {
            if self.main.as_ref().is_none_or(|m| m.pid != mp) {
                self.adopt_main(mp);
            }
        }
    }

    /// Turns a failed wait into a message and an exit code, after stopping
    /// whatever is left of PROGRAM.
    fn ready_failure(&mut self, e: ReadyError) -> Failure {
        self.refresh_main();
        let name = self.launch.name.clone();
        let protocol = self.launch.protocol;
        let stopped = self.stop(false);
        let how = match &stopped {
            Ok(s) => s.describe(),
            Err(e) => format!("stopping it failed: {e}"),
        };
        match e {
            ReadyError::Exited {
                pid,
                status,
                last_status,
            } => Failure::new(
                exit::EXITED,
                format!(
                    "{name} (pid {pid}) {} before it was ready{}. Its own messages, if any, are above; \
                     run it by hand to see why.",
                    describe_exit(status),
                    last_status_note(last_status.as_deref()),
                ),
            ),
            ReadyError::Failed {
                pid,
                errno,
                message,
            } => Failure::new(
                exit::EXITED,
                format!(
                    "{name} (pid {pid}) reported that it could not start: {}{}; stopped it: {how}",
                    printable(&message),
                    errno
                        .filter(|_| !message.contains("ERRNO="))
                        .map(|n| format!(" (errno {n}: {})", Errno::from_raw(n).desc()))
                        .unwrap_or_default(),
                ),
            ),
            ReadyError::Timeout {
                pid, last_status, ..
            } => Failure::new(
                exit::TIMEOUT,
                format!(
                    "{name} (pid {pid}) was not ready after {}{}; stopped it: {how}. \
                     If it is only slow, raise --timeout. If it never says it is ready, \
                     check that it speaks --protocol {protocol}: {}",
                    human(self.launch.timeout),
                    last_status_note(last_status.as_deref()),
                    protocol_hint(protocol),
                ),
            ),
            ReadyError::Protocol { pid, source } => Failure::new(
                exit::PROTOCOL,
                format!(
                    "{name} (pid {pid}) broke the {protocol} readiness protocol: {source}; stopped it: {how}. \
                     Check that it speaks --protocol {protocol}: {}",
                    protocol_hint(protocol),
                ),
            ),
            ReadyError::Io(e) => Failure::new(
                exit::SYSTEM,
                format!(
                    "waiting for {name} to be ready failed: {}; stopped it: {how}",
                    exit::explain(&e)
                ),
            ),
            other => Failure::new(
                exit::INTERNAL,
                format!(
                    "waiting for {name} to be ready failed: {}; stopped it: {how}",
                    exit::chain(&other)
                ),
            ),
        }
    }

    /// Sends `signal` to PROGRAM's group and to a main pid outside it,
    /// each followed by `SIGCONT`.
    fn forward(&self, signal: Signal) {
        self.group.signal_and_continue(signal);
        if let Some(fd) = self.main.as_ref().and_then(|m| m.outside.as_ref()) {
            pidfd::signal(fd, signal);
            pidfd::signal(fd, Signal::SIGCONT);
        }
    }

    /// The pidfd of a main pid outside the group that still runs.
    fn outside_main(&self) -> Option<&OwnedFd> {
        self.main
            .as_ref()
            .and_then(|m| m.outside.as_ref())
            .filter(|fd| !pidfd::exited(fd))
    }

    /// Waits, serving the channel, until PROGRAM has exited (when
    /// `watch_program`) or `then` (CMD's `sh`) has ended, passing signals
    /// on: to CMD's group while CMD runs (PROGRAM is stopped once CMD has
    /// ended), to PROGRAM's otherwise. At `kill_at`, CMD's group gets
    /// `SIGKILL` (the end of the grace period of a stop).
    fn wait_program(
        &mut self,
        mut then: Option<&mut std::process::Child>,
        watch_program: bool,
        mut kill_at: Option<Instant>,
    ) -> io::Result<Step> {
        loop {
            if let Some(t) = then.as_deref_mut() {
                if let Some(status) = t.try_wait()? {
                    return Ok(Step::CmdEnded(status));
                }
            }
            if watch_program && self.program_status()?.is_some() {
                return Ok(Step::ProgramExited);
            }
            let cmd_group = then
                .as_deref()
                .map(|t| Group(Pid::from_raw(t.id() as libc::pid_t)));
            match self.signals.wait(None, kill_at)? {
                Event::Signal { signal, .. } => match cmd_group {
                    Some(g) => g.signal_and_continue(signal),
                    None => self.forward(signal),
                },
                Event::Timeout => {
                    if let Some(g) = cmd_group {
                        g.signal(Signal::SIGKILL);
                    }
                    kill_at = None;
                }
                Event::Child => self.reap_strays(),
                Event::Other => {}
            }
        }
    }

    /// Stays attached until PROGRAM ends, passing SIGINT, SIGTERM and SIGHUP
    /// on to its process group (and to a main pid that left it), then stops
    /// what is left of the group. Returns PROGRAM's status as the shell
    /// reports it.
    ///
    /// A PROGRAM that exits 0 may have been a wrapper (`sh -c 'server &'`,
    /// a daemon that forks), whose server runs on in its group or as the
    /// main pid. It is taken as one when readiness came from another
    /// process (the main pid differs), when it had exited before its
    /// readiness was seen (then another process of its group said ready),
    /// or under `--protocol pipe`, whose message names no process. readyfd
    /// then follows the group and the main pid until both are gone and
    /// returns the status of the main pid, if readyfd reaped it, else the
    /// wrapper's. Any other exit ends the group and the main pid.
    ///
    /// # Errors
    /// When waiting or reading the signalfd fails.
    pub(crate) fn attach(&mut self) -> io::Result<u8> {
        let status = loop {
            self.serving(|s, _| s.wait_program(None, true, None))?;
            if let Some(st) = self.child()?.try_wait()? {
                break st;
            }
        };
        self.refresh_main();
        let wrapper = self.main.is_some()
            || self.wrapper_before_ready
            || self.launch.protocol == Protocol::Pipe;
        if !status.success() || !wrapper {
            self.cleanup_group()?;
            self.stop_main()?;
            self.end_descendants()?;
            return Ok(exit::status_code(status));
        }
        self.serving(|s, _| -> io::Result<()> {
            loop {
                s.reap_strays();
                let main = s.outside_main().map(|fd| fd.as_fd());
                if !s.group.alive() && main.is_none() {
                    return Ok(());
                }
                match s.signals.wait(main, None)? {
                    Event::Signal { signal, .. } => s.forward(signal),
                    Event::Child | Event::Other | Event::Timeout => {}
                }
            }
        })?;
        self.end_descendants()?;
        let main = self.main.as_ref().and_then(|m| m.status);
        Ok(main.unwrap_or(exit::status_code(status)))
    }

    /// Runs `sh -c cmd` with `env` added, in a process group of its own,
    /// and waits for it while serving the channel. Signals to readyfd go
    /// on to CMD's group (the terminal's too: CMD is not in the terminal's
    /// foreground group). When CMD's `sh` ends, what is left of its group
    /// (background jobs) is stopped like PROGRAM's. When PROGRAM ends with
    /// a failure meanwhile (a non-zero status, a signal: readyfd sends
    /// PROGRAM none while CMD runs), CMD's group is stopped at once and the
    /// outcome says so.
    ///
    /// # Errors
    /// [`exit::START`] when `sh` cannot be started; [`exit::SYSTEM`] when
    /// waiting fails. PROGRAM is left running for the caller to stop.
    pub(crate) fn run_then(
        &mut self,
        cmd: &str,
        env: &[(String, String)],
    ) -> Result<ThenOutcome, Failure> {
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(cmd).process_group(0);
        for var in readyfd::env::READINESS_VARS {
            sh.env_remove(var);
        }
        sh.envs(env.iter().map(|(k, v)| (k, v)));
        let tty = foreground_tty();
        if tty {
            // SAFETY: runs in the forked child before exec, before the
            // signal reset below: sigprocmask and tcsetpgrp (an ioctl) on
            // integers, no allocation, no lock. SIGTTOU is blocked so that
            // a process of a background group may take the terminal.
            unsafe {
                sh.pre_exec(|| {
                    let mut set = nix::sys::signal::SigSet::empty();
                    set.add(Signal::SIGTTOU);
                    set.thread_block()?;
                    libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
                    Ok(())
                });
            }
        }
        Signals::reset_in_child(&mut sh);
        let parent = nix::unistd::getpid();
        // SAFETY: as in `start`: prctl and getppid on captured integers.
        unsafe {
            sh.pre_exec(move || die_with_parent(parent));
        }
        self.watchdog.register_in_child(&mut sh);
        let mut then = sh.spawn().map_err(|e| {
            Failure::new(
                exit::START,
                format!("cannot start `sh -c` for --then: {}", exit::explain(&e)),
            )
        })?;
        let then_pid = then.id();
        self.then_pid = Some(then_pid);
        if tty {
            // Also here, whichever of the two runs first.
            set_foreground(then_pid as libc::pid_t);
        }
        let cmd_group = Group(Pid::from_raw(then_pid as libc::pid_t));
        let wait_err = |e: io::Error| Failure::system("waiting for --then CMD failed", e);
        let mut program_failed = None;
        // PROGRAM may have ended already, before CMD started: that is seen
        // (and reaped) here, and handled as an end seen later would be.
        let mut ended = self.program_status().map_err(wait_err)?;
        let mut watching = ended.is_none();
        let mut kill_at = None;
        let status = loop {
            if ended.is_none() {
                let step = self.serving(|s, _| s.wait_program(Some(&mut then), watching, kill_at));
                match step.map_err(wait_err)? {
                    Step::CmdEnded(status) => break status,
                    Step::ProgramExited => {
                        watching = false;
                        ended = self
                            .child()
                            .map_err(wait_err)?
                            .try_wait()
                            .map_err(wait_err)?;
                    }
                }
            }
            let Some(s) = ended.take() else {
                continue;
            };
            let (name, pid) = (self.launch.name.clone(), self.pid);
            if s.success() {
                self.term.message(format_args!(
                    "{name} (pid {pid}) {} while --then CMD was running",
                    describe_exit(s)
                ));
                continue;
            }
            self.term.message(format_args!(
                "{name} (pid {pid}) {} while --then CMD was running: stopping CMD",
                describe_exit(s)
            ));
            program_failed = Some(s);
            cmd_group.signal_and_continue(Signal::SIGTERM);
            kill_at = Some(Instant::now() + self.launch.grace);
        };
        self.then_pid = None;
        if tty {
            set_foreground(nix::unistd::getpgrp().as_raw());
        }
        self.end_group(cmd_group).map_err(wait_err)?;
        Ok(ThenOutcome {
            cmd: status,
            cmd_stopped: program_failed.is_some(),
            program_failed,
        })
    }

    /// Ends what is left of a group whose leader readyfd has reaped:
    /// SIGTERM and SIGCONT, the grace period, SIGKILL; reaps its members.
    fn end_group(&mut self, group: Group) -> io::Result<()> {
        self.reap_strays();
        if !group.alive() {
            return Ok(());
        }
        group.signal_and_continue(Signal::SIGTERM);
        let deadline = Instant::now() + self.launch.grace;
        loop {
            self.reap_strays();
            if !group.alive() {
                return Ok(());
            }
            match self.signals.wait(None, Some(deadline))? {
                Event::Timeout | Event::Signal { .. } => break,
                Event::Child | Event::Other => {}
            }
        }
        group.signal(Signal::SIGKILL);
        reap_group_blocking(group);
        Ok(())
    }

    /// Stops PROGRAM and every process of its group: the native `Shutdown`
    /// request first when `ask_first` (and the channel is open), then
    /// `SIGTERM` (and `SIGCONT`) to the group, then `SIGKILL`, each step
    /// after the grace period; then the rest of the group the same way, and
    /// a main pid that left the group. A signal to readyfd meanwhile skips
    /// to `SIGKILL`.
    ///
    /// # Errors
    /// When waiting fails.
    pub(crate) fn stop(&mut self, ask_first: bool) -> io::Result<Stopped> {
        let started = Instant::now();
        let grace = self.launch.grace;
        // What we sent before (an interruption while waiting) is what ends it.
        let mut via = match (self.killed, self.term_sent) {
            (true, _) => StopVia::Sigkill,
            (false, Some(_)) => StopVia::Sigterm,
            (false, None) => StopVia::AlreadyExited,
        };
        self.refresh_main();
        let mut status = self.child()?.try_wait()?;
        if status.is_none() && ask_first && self.term_sent.is_none() {
            // A stopped program (SIGSTOP, Ctrl-Z) could not answer: it is
            // continued first, as it would be after SIGTERM. Always, not
            // only when /proc shows it stopped: a stop signal sent just
            // before (a `kill -STOP` by CMD as it exited) may not have
            // taken effect yet, and would stop it right after our request.
            // SIGCONT cancels a pending or half-taken stop (the kernel
            // discards it), and does nothing to a running program but run
            // its SIGCONT handler if it has one.
            self.group.signal(Signal::SIGCONT);
            // Served meanwhile: a child flooding the channel can still
            // read the request and acknowledge it.
            let acknowledged = self.serving(|_, ch| {
                ch.is_some_and(|ch| ch.closed().is_none() && ch.shutdown(grace).is_ok())
            });
            if acknowledged {
                via = StopVia::Shutdown;
                status = self.wait_leader(Some(Instant::now() + grace))?;
            }
        }
        if status.is_none() {
            via = StopVia::Sigterm;
            let group = self.group;
            let sent = *self.term_sent.get_or_insert_with(|| {
                group.signal_and_continue(Signal::SIGTERM);
                Instant::now()
            });
            status = self.wait_leader(Some(sent + grace))?;
        }
        let status = match status {
            Some(s) => s,
            None => {
                via = StopVia::Sigkill;
                self.kill_group();
                match self.wait_leader(None)? {
                    Some(s) => s,
                    None => self.child()?.wait()?,
                }
            }
        };
        self.cleanup_group()?;
        self.stop_main()?;
        self.end_descendants()?;
        Ok(Stopped {
            status,
            via,
            took: started.elapsed(),
        })
    }

    fn kill_group(&mut self) {
        self.group.signal(Signal::SIGKILL);
        self.killed = true;
    }

    /// Waits for PROGRAM itself to exit, until `deadline`. A signal to
    /// readyfd meanwhile kills the group.
    fn wait_leader(&mut self, deadline: Option<Instant>) -> io::Result<Option<ExitStatus>> {
        loop {
            if let Some(s) = self.child()?.try_wait()? {
                return Ok(Some(s));
            }
            match self.signals.wait(None, deadline)? {
                Event::Timeout => return Ok(None),
                Event::Signal { signal, .. } => {
                    self.term.message(format_args!(
                        "got {signal} while stopping {}: killing it",
                        self.launch.name
                    ));
                    self.kill_group();
                }
                Event::Child => self.reap_strays(),
                Event::Other => {}
            }
        }
    }

    /// After PROGRAM itself has exited: ends the rest of its process group
    /// (SIGTERM unless it had one, the grace period, SIGKILL) and reaps it.
    fn cleanup_group(&mut self) -> io::Result<()> {
        self.reap_strays();
        if !self.group.alive() {
            return Ok(());
        }
        let group = self.group;
        let sent = *self.term_sent.get_or_insert_with(|| {
            group.signal_and_continue(Signal::SIGTERM);
            Instant::now()
        });
        let deadline = sent + self.launch.grace;
        loop {
            self.reap_strays();
            if !self.group.alive() {
                return Ok(());
            }
            match self.signals.wait(None, Some(deadline))? {
                Event::Timeout | Event::Signal { .. } => break,
                Event::Child | Event::Other => {}
            }
        }
        self.kill_group();
        reap_group_blocking(self.group);
        Ok(())
    }

    /// Stops every process still left that readyfd inherited as their
    /// subreaper: one that left PROGRAM's or CMD's group (`setsid`) without
    /// being reported as the main pid becomes readyfd's child once its
    /// parent has died, and by now every process of the groups has. Each is
    /// held by a pidfd (opened, then checked to be readyfd's child still, so
    /// never a recycled pid) and stopped as the groups are: SIGTERM and
    /// SIGCONT, the grace period, SIGKILL; their own children become
    /// readyfd's in turn, so this repeats until none is left.
    fn end_descendants(&mut self) -> io::Result<()> {
        let me = std::process::id();
        let watchdog = self.watchdog.pid();
        // Each round ends a generation; a bound against a fork bomb racing us.
        for _ in 0..64 {
            self.reap_strays();
            let held: Vec<OwnedFd> = pidfd::children()
                .into_iter()
                .filter(|&c| Some(c) != watchdog && c != self.pid)
                .filter_map(|c| {
                    let fd = pidfd::open(c).ok()?;
                    pidfd::parent_and_state(c)
                        .is_some_and(|(parent, state)| parent == me && state != 'Z')
                        .then_some(fd)
                })
                .collect();
            if held.is_empty() {
                return Ok(());
            }
            self.stop_held(&held)?;
        }
        self.reap_strays();
        Ok(())
    }

    /// Stops the processes behind `held` (pidfds, so never a recycled pid)
    /// as the groups are stopped: SIGTERM and SIGCONT, the grace period,
    /// SIGKILL; reaping strays meanwhile.
    fn stop_held(&mut self, held: &[OwnedFd]) -> io::Result<()> {
        for fd in held {
            pidfd::signal(fd, Signal::SIGTERM);
            pidfd::signal(fd, Signal::SIGCONT);
        }
        let deadline = Instant::now() + self.launch.grace;
        let mut kill = false;
        while let Some(fd) = held.iter().find(|fd| !pidfd::exited(fd)) {
            if kill {
                for fd in held {
                    pidfd::signal(fd, Signal::SIGKILL);
                }
            }
            match self
                .signals
                .wait(Some(fd.as_fd()), (!kill).then_some(deadline))?
            {
                Event::Timeout | Event::Signal { .. } => kill = true,
                Event::Child => self.reap_strays(),
                Event::Other => {}
            }
        }
        Ok(())
    }

    /// Stops a main pid that left PROGRAM's group (a daemon), as the group
    /// is stopped: SIGTERM and SIGCONT, the grace period, SIGKILL; through
    /// its pidfd, so never a recycled pid.
    fn stop_main(&mut self) -> io::Result<()> {
        let Some(fd) = self
            .outside_main()
            .map(|fd| fd.as_fd().try_clone_to_owned())
        else {
            self.reap_strays();
            return Ok(());
        };
        self.stop_held(&[fd?])?;
        self.reap_strays();
        Ok(())
    }
}

impl Drop for Supervisor<'_> {
    /// A safety net for early returns and panics: whatever of PROGRAM's
    /// group (and a main pid outside it, and CMD's group) still runs is
    /// killed, and PROGRAM reaped. The normal paths
    /// ([`stop`](Supervisor::stop), [`attach`](Supervisor::attach)) have
    /// left nothing by then, and this does nothing.
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            if matches!(c.try_wait(), Ok(None)) {
                self.group.signal(Signal::SIGKILL);
                let _ = c.wait();
            }
        }
        if self.group.alive() {
            self.group.signal(Signal::SIGKILL);
        }
        if let Some(fd) = self.outside_main() {
            pidfd::signal(fd, Signal::SIGKILL);
        }
        if let Some(cmd) = self.then_pid {
            Group(Pid::from_raw(cmd as libc::pid_t)).signal(Signal::SIGKILL);
        }
        self.watchdog.finish();
    }
}

/// Reaps every exited child of readyfd except the `owned` pids, whose
/// status belongs to someone (the library's handle, std's `Child`), and
/// calls `note` with each pid and status as the shell reports it. Orphans
/// of PROGRAM's and CMD's groups become readyfd's children (it is their
/// subreaper), and are reaped here as they end.
///
/// It looks with `waitid(P_ALL, WNOWAIT)` first and reaps only that pid,
/// so that an owned child's status is never taken. When what it sees is an
/// owned child (whose owner has not reaped it yet), the others may hide
/// behind it: it then reads this process's zombie children from `/proc`.
fn reap_strays(owned: &[u32], note: &mut dyn FnMut(u32, u8)) {
    let mut reap = |pid: u32| -> bool {
        match waitpid(
            Pid::from_raw(pid as libc::pid_t),
            Some(WaitPidFlag::WNOHANG),
        ) {
            Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                if let Some(code) = shell_code(st) {
                    note(pid, code);
                }
                true
            }
            _ => false,
        }
    };
    loop {
        let peek = waitid(
            Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        );
        let pid = match peek {
            Ok(st) => match st.pid() {
                Some(p) => p.as_raw() as u32,
                None => return,
            },
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        };
        if owned.contains(&pid) {
            for z in pidfd::zombie_children() {
                if !owned.contains(&z) {
                    reap(z);
                }
            }
            return;
        }
        if !reap(pid) {
            return;
        }
    }
}

/// After SIGKILL to `group`: reaps its members until none is left that is
/// readyfd's child (those whose parent died become readyfd's children, as
/// it is their subreaper).
fn reap_group_blocking(group: Group) {
    while let Ok(_) | Err(Errno::EINTR) = waitid(Id::PGid(group.0), WaitPidFlag::WEXITED) {}
}

/// Whether readyfd's stdin is a terminal whose foreground process group is
/// readyfd's: then `--then` CMD, in a group of its own, is given the
/// terminal (as a shell gives it to a foreground job), so that it can read
/// from it and gets Ctrl-C directly, and readyfd takes it back after.
fn foreground_tty() -> bool {
    // SAFETY: isatty, tcgetpgrp and getpgrp take integers and touch no
    // memory of ours.
    unsafe {
        libc::isatty(libc::STDIN_FILENO) == 1
            && libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp()
    }
}

/// Makes `pgrp` the terminal's foreground process group, with SIGTTOU
/// blocked (readyfd may be in a background group by then, and a blocked
/// SIGTTOU lets it proceed instead of stopping it).
fn set_foreground(pgrp: libc::pid_t) {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(Signal::SIGTTOU);
    let Ok(()) = set.thread_block() else { return };
    // SAFETY: tcsetpgrp is an ioctl on fd 0 with an integer.
    unsafe { libc::tcsetpgrp(libc::STDIN_FILENO, pgrp) };
    let _ = set.thread_unblock();
}

/// The status of an exited or killed process as the shell reports it.
fn shell_code(st: WaitStatus) -> Option<u8> {
    match st {
        WaitStatus::Exited(_, code) => Some((code & 0xff) as u8),
        WaitStatus::Signaled(_, sig, _) => Some(signal_code(sig as i32)),
        _ => None,
    }
}

/// PROGRAM's status, if it has exited, without reaping it (`WNOWAIT`).
fn peek_exit(pid: u32) -> io::Result<Option<ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        return match waitid(Id::Pid(Pid::from_raw(pid as libc::pid_t)), flags) {
            Ok(WaitStatus::Exited(_, code)) => Ok(Some(ExitStatus::from_raw((code & 0xff) << 8))),
            Ok(WaitStatus::Signaled(_, sig, core)) => Ok(Some(ExitStatus::from_raw(
                sig as i32 | if core { 0x80 } else { 0 },
            ))),
            Ok(_) => Ok(None),
            Err(Errno::EINTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

/// Serves the native channel while `stop` is not set: notifications are
/// read and dropped, requests answered `Unsupported` (PROTOCOL.md: a side
/// with no handler answers so), and the status text is shown when it
/// changed: on the progress line on a terminal, as one more JSON line with
/// `--json` (`{"format":1,"pid":..,"status":".."}`), at most one per [`TICK`] (a flood
/// of updates shows the latest, nothing piles up). Wakes every [`TICK`] to
/// look at `stop`.
fn serve_channel(ch: &Channel, stop: &AtomicBool, term: &Term, json: bool, name: &str, pid: u32) {
    let mut shown = ch.last_status();
    let mut next_show = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let idle = match ch.recv_timeout(TICK) {
            Ok(Some(Incoming::Request(r))) => {
                let _ = r.reject(
                    RemoteErrorKind::Unsupported,
                    "readyfd run serves no requests",
                );
                false
            }
            Ok(Some(_)) => false,
            Ok(None) => true,
            Err(_) => true,
        };
        let now = Instant::now();
        if !idle && now < next_show {
            continue;
        }
        let status = ch.last_status();
        if status != shown {
            next_show = now + TICK;
            if let Some(text) = &status {
                if json {
                    let line = serde_json::json!({
                        "format": crate::report::JSON_FORMAT,
                        "pid": pid,
                        "status": text,
                    });
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                } else {
                    term.progress(&format!(
                        "readyfd: {name} (pid {pid}) is ready; status {}",
                        quoted(text)
                    ));
                }
            }
            shown = status;
        }
        if ch.closed().is_some() && idle {
            // Gone, and every last status shown.
            return;
        }
    }
}

/// Runs in the forked child before exec: asks for SIGTERM when readyfd
/// dies, and checks that readyfd did not die before the request.
fn die_with_parent(parent: Pid) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
    if nix::unistd::getppid() != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// The thread that waits for readiness: the library's `wait_ready` in
/// slices of [`TICK`] on a terminal (to redraw the progress line), in one
/// piece otherwise.
fn wait_with_progress(
    child: &mut ReadyChild,
    deadline: Instant,
    term: &Term,
    launch: &Launch,
) -> Result<Readiness, ReadyError> {
    let started = Instant::now();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let slice = if term.wants_progress() {
            left.min(TICK)
        } else {
            left
        };
        match child.wait_ready(slice) {
            Ok(r) => {
                let r = r.clone();
                term.clear();
                return Ok(r);
            }
            Err(ReadyError::Timeout { killed: false, .. }) if Instant::now() < deadline => {
                let waited = started.elapsed();
                if waited >= PROGRESS_AFTER {
                    let status = child
                        .last_status()
                        .map(|s| format!(", last status {}", quoted(&s)))
                        .unwrap_or_default();
                    term.progress(&format!(
                        "readyfd: waiting for {} to be ready: {:.1}s, pid {}, {}{status}",
                        launch.name,
                        waited.as_secs_f64(),
                        child.id(),
                        launch.protocol,
                    ));
                }
            }
            Err(e) => {
                term.clear();
                return Err(e);
            }
        }
    }
}

fn spawn_failure(e: SpawnError, launch: &Launch) -> Failure {
    match e {
        SpawnError::Start { program, source } => {
            let why = match source.kind() {
                io::ErrorKind::NotFound => {
                    "not found. Check the name, or give its path (is it on PATH? \
                     for a script, does the interpreter on its #! line exist?)"
                        .to_string()
                }
                io::ErrorKind::PermissionDenied => {
                    "permission denied. Is it executable (chmod +x), and not a directory?"
                        .to_string()
                }
                _ if source.raw_os_error() == Some(libc::EMFILE)
                    || source.raw_os_error() == Some(libc::ENFILE) =>
                {
                    return Failure::system(&format!("cannot start {program}"), source);
                }
                _ => source.to_string(),
            };
            Failure::new(exit::START, format!("cannot start {program}: {why}"))
        }
        SpawnError::ReservedFd(fd) => Failure::new(
            exit::USAGE,
            format!("--fd {fd}: fds 0-2 are stdin, stdout and stderr; choose 3 or above"),
        ),
        e @ (SpawnError::ListenName { .. } | SpawnError::FdTaken { .. }) => {
            Failure::new(exit::USAGE, e.to_string())
        }
        SpawnError::Channel(source) => Failure::system(
            &format!("cannot create the readiness channel for {}", launch.name),
            source,
        ),
        SpawnError::Watch { pid, source } => {
            if source.raw_os_error() == Some(libc::ENOSYS) {
                Failure::new(
                    exit::SYSTEM,
                    format!(
                        "cannot watch {} (pid {pid}): this kernel has no pidfd_open; \
                         readyfd needs Linux 5.3 or later",
                        launch.name
                    ),
                )
            } else {
                Failure::system(
                    &format!("cannot watch {} (pid {pid}, stopped)", launch.name),
                    source,
                )
            }
        }
        other => Failure::new(
            exit::SYSTEM,
            format!("cannot start {}: {}", launch.name, exit::chain(&other)),
        ),
    }
}

/// Text from the child, with control characters (escape sequences, line
/// breaks) shown as `?`, so that it cannot garble the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn last_status_note(s: Option<&str>) -> String {
    s.map(|s| format!(" (its last status: {})", quoted(s)))
        .unwrap_or_default()
}

/// What speaks which protocol, for messages about a program that does not.
fn protocol_hint(p: Protocol) -> &'static str {
    match p {
        Protocol::Native => {
            "native is spoken by programs using the readyfd library or `readyfd notify`; \
             a program that writes its address to an fd speaks pipe, an sd_notify daemon speaks systemd."
        }
        Protocol::Pipe => {
            "pipe means writing a line (the address) to the fd in CHILD_READY_FD, or closing it; \
             an sd_notify daemon speaks systemd, a readyfd-library program native."
        }
        Protocol::Systemd => {
            "systemd means sd_notify(\"READY=1\") to NOTIFY_SOCKET (Type=notify); \
             a program that writes its address to an fd speaks pipe."
        }
        _ => "see `readyfd run --help`.",
    }
}
