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
use std::io;
use std::os::fd::{AsFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use readyfd::{
    OnTimeout, Protocol, Readiness, ReadyChild, ReadyCommand, ReadyError, SpawnError, describe_exit,
};

use crate::exit::{self, Failure, signal_code};
use crate::signals::{Event, Signals};
use crate::term::{Term, human, quoted};

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
    child: ReadyChild,
    group: Group,
    signals: &'a Signals,
    term: &'a Term,
    launch: Launch,
    /// When SIGTERM went to the group, if it did.
    term_sent: Option<Instant>,
    /// Whether SIGKILL went to the group.
    killed: bool,
    /// Other processes of the group that readyfd reaped, with their status
    /// as the shell reports it.
    reaped: Vec<(u32, u8)>,
}

impl<'a> Supervisor<'a> {
    /// Starts PROGRAM in a process group of its own, with the readiness
    /// channel, and with `SIGTERM` as its parent-death signal, so that even
    /// a readyfd killed with `SIGKILL` does not leave it running unnoticed.
    ///
    /// # Errors
    /// [`exit::START`] when the program cannot be started, [`exit::SYSTEM`]
    /// when the channel cannot be set up.
    pub(crate) fn start(
        launch: Launch,
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
        let child = ReadyCommand::new(cmd)
            .protocol(launch.protocol)
            .fd(launch.fd)
            .on_timeout(OnTimeout::Leave)
            .spawn()
            .map_err(|e| spawn_failure(e, &launch))?;
        let group = Group(Pid::from_raw(child.id() as libc::pid_t));
        Ok(Supervisor {
            child,
            group,
            signals,
            term,
            launch,
            term_sent: None,
            killed: false,
            reaped: Vec::new(),
        })
    }

    /// The pid of PROGRAM (and id of its process group).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
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
        let pid = self.pid();
        let Supervisor {
            child,
            group,
            signals,
            term,
            launch,
            ..
        } = self;
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
                    Ok(Event::Child) => {}
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
            Ok(Ok(readiness)) => Ok(readiness),
            Ok(Err(e)) => Err(self.ready_failure(e)),
            Err(f) => {
                let _ = self.stop(false);
                Err(f)
            }
        }
    }

    /// Turns a failed wait into a message and an exit code, after stopping
    /// whatever is left of PROGRAM.
    fn ready_failure(&mut self, e: ReadyError) -> Failure {
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
                format!("waiting for {name} to be ready failed: {e}; stopped it: {how}"),
            ),
            other => Failure::new(
                exit::INTERNAL,
                format!("waiting for {name} to be ready failed: {other}; stopped it: {how}"),
            ),
        }
    }

    /// Stays attached until PROGRAM ends, passing SIGINT, SIGTERM and SIGHUP
    /// on to its process group, then stops what is left of the group.
    /// Returns PROGRAM's status as the shell reports it.
    ///
    /// A PROGRAM that exits 0 while readiness came from another process
    /// (`main_pid`) was a wrapper (`sh -c 'server &'`, a daemon that forks),
    /// whether it exited before or after that process said Ready: what it
    /// started runs on in its group, and readyfd follows the group until it
    /// is empty and returns the status of the main pid, if readyfd reaped
    /// it, else the wrapper's. Any other exit ends the group.
    ///
    /// # Errors
    /// When waiting or reading the signalfd fails.
    pub(crate) fn attach(&mut self, main_pid: u32) -> io::Result<u8> {
        let status = loop {
            if let Some(s) = self.child.exit_status()? {
                break s;
            }
            if let Event::Signal { signal, .. } = self.signals.wait(None, None)? {
                self.group.signal_and_continue(signal);
            }
        };
        if !status.success() || main_pid == self.pid() {
            self.cleanup_group()?;
            return Ok(exit::status_code(status));
        }
        loop {
            self.reap_group();
            if !self.group.alive() {
                break;
            }
            if let Event::Signal { signal, .. } = self.signals.wait(None, None)? {
                self.group.signal_and_continue(signal);
            }
        }
        let main = self
            .reaped
            .iter()
            .find(|(p, _)| *p == main_pid)
            .map(|(_, c)| *c);
        Ok(main.unwrap_or(exit::status_code(status)))
    }

    /// Runs `sh -c cmd` with `env` added and waits for it. Signals sent to
    /// readyfd with `kill` are passed on to it; those from the terminal
    /// reached it already (it is in the terminal's foreground group).
    ///
    /// # Errors
    /// [`exit::START`] when `sh` cannot be started; [`exit::SYSTEM`] when
    /// waiting fails. PROGRAM is left running for the caller to stop.
    pub(crate) fn run_then(
        &mut self,
        cmd: &str,
        env: &[(String, String)],
    ) -> Result<ExitStatus, Failure> {
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(cmd);
        for var in readyfd::READINESS_ENV_VARS {
            sh.env_remove(var);
        }
        sh.envs(env.iter().map(|(k, v)| (k, v)));
        Signals::reset_in_child(&mut sh);
        let mut then = sh.spawn().map_err(|e| {
            Failure::new(exit::START, format!("cannot start `sh -c` for --then: {e}"))
        })?;
        let wait_err = |e: io::Error| Failure::system("waiting for --then CMD failed", e);
        let mut watching = self.child.exit_status().map_err(wait_err)?.is_none();
        loop {
            if let Some(status) = then.try_wait().map_err(wait_err)? {
                return Ok(status);
            }
            if watching {
                if let Some(s) = self.child.exit_status().map_err(wait_err)? {
                    watching = false;
                    self.term.message(format_args!(
                        "{} (pid {}) {} while --then CMD was still running",
                        self.launch.name,
                        self.pid(),
                        describe_exit(s)
                    ));
                }
            }
            if let Event::Signal {
                signal,
                from_terminal: false,
            } = self.signals.wait(None, None).map_err(wait_err)?
            {
                let _ = kill(Pid::from_raw(then.id() as libc::pid_t), signal);
            }
        }
    }

    /// Stops PROGRAM and every process of its group: the native `Shutdown`
    /// request first when `ask_first` (and the channel is open), then
    /// `SIGTERM` to the group, then `SIGKILL`, each step after the grace
    /// period; then the rest of the group the same way. A signal to readyfd
    /// meanwhile skips to `SIGKILL`.
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
        let mut status = self.child.exit_status()?;
        if status.is_none() && ask_first && self.term_sent.is_none() {
            let acknowledged = self
                .child
                .channel()
                .is_some_and(|ch| ch.closed().is_none() && ch.shutdown(grace).is_ok());
            if acknowledged {
                via = StopVia::Shutdown;
                status = self.wait_leader(Some(Instant::now() + grace))?;
            }
        }
        if status.is_none() {
            via = StopVia::Sigterm;
            let sent = *self.term_sent.get_or_insert_with(|| {
                self.group.signal_and_continue(Signal::SIGTERM);
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
                    None => self.child.wait()?,
                }
            }
        };
        self.cleanup_group()?;
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
            if let Some(s) = self.child.exit_status()? {
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
                Event::Child | Event::Other => {}
            }
        }
    }

    /// After PROGRAM itself has exited: ends the rest of its process group
    /// (SIGTERM unless it had one, the grace period, SIGKILL) and reaps it.
    fn cleanup_group(&mut self) -> io::Result<()> {
        self.reap_group();
        if !self.group.alive() {
            return Ok(());
        }
        let sent = *self.term_sent.get_or_insert_with(|| {
            self.group.signal_and_continue(Signal::SIGTERM);
            Instant::now()
        });
        let deadline = sent + self.launch.grace;
        loop {
            self.reap_group();
            if !self.group.alive() {
                return Ok(());
            }
            match self.signals.wait(None, Some(deadline))? {
                Event::Timeout | Event::Signal { .. } => break,
                Event::Child | Event::Other => {}
            }
        }
        self.kill_group();
        // Every member is dying now, and those whose parent died are our
        // children (we are their subreaper): reap until none is left.
        loop {
            match waitid(Id::PGid(self.group.0), WaitPidFlag::WEXITED) {
                Ok(st) => self.note_reaped(st),
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Reaps, without waiting, the processes of the group that are our
    /// children and have exited. Only once PROGRAM itself is reaped: its
    /// status belongs to the library's handle.
    fn reap_group(&mut self) {
        if !matches!(self.child.exit_status(), Ok(Some(_))) {
            return;
        }
        loop {
            match waitid(
                Id::PGid(self.group.0),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
            ) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(st) => self.note_reaped(st),
            }
        }
    }

    fn note_reaped(&mut self, st: WaitStatus) {
        match st {
            WaitStatus::Exited(pid, code) => {
                self.reaped.push((pid.as_raw() as u32, (code & 0xff) as u8))
            }
            WaitStatus::Signaled(pid, sig, _) => self
                .reaped
                .push((pid.as_raw() as u32, signal_code(sig as i32))),
            _ => {}
        }
    }
}

impl Drop for Supervisor<'_> {
    /// A safety net for early returns and panics: whatever of PROGRAM's
    /// group still runs is killed, and PROGRAM reaped. The normal paths
    /// ([`stop`](Supervisor::stop), [`attach`](Supervisor::attach)) have
    /// left nothing by then, and this does nothing.
    fn drop(&mut self) {
        if matches!(self.child.exit_status(), Ok(None)) {
            self.group.signal(Signal::SIGKILL);
            let _ = self.child.wait();
        }
        if self.group.alive() {
            self.group.signal(Signal::SIGKILL);
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
            format!("cannot start {}: {other}", launch.name),
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
