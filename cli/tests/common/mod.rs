//! Helpers of the end-to-end tests: run the `readyfd` binary with piped
//! stdio, read its output line by line as events arrive, and wait for it
//! with a bound (never a sleep).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A bound against hangs, not a synchronisation: generous on purpose.
pub const BOUND: Duration = Duration::from_secs(60);

/// The binary under test.
pub const READYFD: &str = env!("CARGO_BIN_EXE_readyfd");

/// `readyfd ARGS...`, with `READYFD_BIN` set for shell children that run
/// `"$READYFD_BIN" notify`, and no readiness variable inherited from
/// whoever runs the tests.
pub fn readyfd<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(READYFD);
    cmd.args(args);
    cmd.env("READYFD_BIN", READYFD);
    // Every process of this run inherits the tag (readyfd passes its
    // environment on), and the systemd receiver makes its socket directory
    // in a directory of this run's own: [`Running::finish`] checks that
    // neither a tagged process nor a directory is left.
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let tag = format!("{}-{n}", std::process::id());
    let dir = PathBuf::from(format!("/tmp/rfdt-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).expect("create the run's runtime directory");
    cmd.env(TAG_VAR, &tag).env("XDG_RUNTIME_DIR", &dir);
    for var in ["READYFD", "CHILD_READY_FD", "NOTIFY_SOCKET"] {
        cmd.env_remove(var);
    }
    // An ignored signal stays ignored across exec, and readyfd honours that
    // (as `nohup` means it): give it the default dispositions, whatever the
    // tests were started with (a background job ignores SIGINT).
    // SAFETY: runs in the forked child before exec; sigaction is
    // async-signal-safe and nothing is allocated.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
                nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigDfl)?;
            }
            Ok(())
        });
    }
    cmd
}

/// The variable that tags every process of one run (see [`readyfd`]).
pub const TAG_VAR: &str = "READYFD_TEST_RUN";

/// A running `readyfd`: its stdout as lines, its stderr collected, its exit
/// status when it comes.
pub struct Running {
    pub pid: u32,
    /// The run's tag and runtime directory, when started by [`readyfd`].
    run: Option<(String, PathBuf)>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    exit: Receiver<ExitStatus>,
}

/// How a run ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// The stdout lines not read before.
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl Running {
    /// Starts `cmd` with stdin, stdout and stderr piped.
    pub fn start(cmd: &mut Command) -> Running {
        let env = |name: &str| {
            cmd.get_envs()
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v)
                .map(|v| v.to_string_lossy().into_owned())
        };
        let run = env(TAG_VAR).zip(env("XDG_RUNTIME_DIR").map(PathBuf::from));
        let mut child: Child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start readyfd");
        let pid = child.id();
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            let _ = etx.send(s);
        });
        let (xtx, exit) = channel();
        std::thread::spawn(move || {
            let _ = xtx.send(child.wait().expect("wait for readyfd"));
        });
        Running {
            pid,
            run,
            stdin,
            lines,
            stderr,
            exit,
        }
    }

    /// The next line readyfd (or a child sharing its stdout) printed.
    pub fn line(&self) -> String {
        match self.lines.recv_timeout(BOUND) {
            Ok(l) => l,
            Err(e) => {
                self.kill();
                panic!("no line from readyfd within {BOUND:?}: {e}");
            }
        }
    }

    /// The next line, parsed as the `--json` object.
    pub fn json(&self) -> serde_json::Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    }

    /// Waits (bounded, yielding) until a process of this run whose command
    /// line starts with `needle` exists, and returns its pid: for a test
    /// that must not act before a shell has forked its command.
    pub fn wait_for_process(&self, needle: &str) -> u32 {
        let (tag, _) = self.run.as_ref().expect("a run started by readyfd()");
        let bound = std::time::Instant::now() + BOUND;
        loop {
            if let Some((pid, _)) = tagged(tag).into_iter().find(|(_, c)| c.starts_with(needle)) {
                return pid;
            }
            assert!(
                std::time::Instant::now() < bound,
                "no process {needle:?} within {BOUND:?}"
            );
            std::thread::yield_now();
        }
    }

    /// Writes a line to readyfd's stdin (which its children share).
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to stdin");
    }

    /// Closes readyfd's stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `signal` to readyfd itself.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid as i32), signal).expect("signal readyfd");
    }

    fn kill(&self) {
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
    }

    /// Waits for the exit and for the end of its output. stdin stays open
    /// until readyfd has exited (close it first with
    /// [`close_stdin`](Self::close_stdin) where that is the point).
    pub fn finish(self) -> Finished {
        self.finish_within(BOUND)
    }

    /// [`finish`](Self::finish), with a bound of `bound` on the exit.
    pub fn finish_within(mut self, bound: Duration) -> Finished {
        let status = match self.exit.recv_timeout(bound) {
            Ok(s) => s,
            Err(_) => {
                // What the run's processes were doing, for the diagnosis.
                let procs: Vec<String> = self
                    .run
                    .as_ref()
                    .map(|(tag, _)| tagged(tag))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(pid, cmdline)| {
                        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan"))
                            .unwrap_or_default();
                        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                            .unwrap_or_default();
                        let signals: Vec<&str> = status
                            .lines()
                            .filter(|l| l.starts_with("Sig") || l.starts_with("ShdPnd"))
                            .collect();
                        format!(
                            "{pid} {:?} {wchan} {cmdline} [{}]",
                            state(pid),
                            signals.join(" ")
                        )
                    })
                    .collect();
                self.kill();
                if let Some((_, dir)) = &self.run {
                    let _ = std::fs::remove_dir_all(dir);
                }
                panic!(
                    "readyfd did not exit within {bound:?}; its processes:\n{}",
                    procs.join("\n")
                );
            }
        };
        if let Some((tag, dir)) = &self.run {
            // readyfd killed outright cannot clean up itself: what it
            // leaves must end by itself (its watchdog's work), so wait for
            // that, bounded. Otherwise nothing may be left at its exit.
            let killed = std::os::unix::process::ExitStatusExt::signal(&status) == Some(9);
            assert_nothing_left(tag, dir, if killed { BOUND } else { Duration::ZERO });
        }
        self.stdin = None;
        let stderr = self
            .stderr
            .recv_timeout(BOUND)
            .expect("stderr closed (did a child keep it open?)");
        let mut stdout = Vec::new();
        loop {
            match self.lines.recv_timeout(BOUND) {
                Ok(l) => stdout.push(l),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("stdout not closed (did a child keep it open?): {e}"),
            }
        }
        Finished {
            code: status.code(),
            status,
            stdout,
            stderr,
        }
    }
}

/// Runs `cmd` to its end, with stdin at end of file.
pub fn run(cmd: &mut Command) -> Finished {
    let mut r = Running::start(cmd);
    r.close_stdin();
    r.finish()
}

/// Whether process `pid` is gone entirely (not even a zombie).
pub fn gone(pid: u64) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in the first `(pid N)` of a message.
pub fn pid_in(message: &str) -> u64 {
    let start = message.find("(pid ").expect("a pid in the message") + 5;
    let digits: String = message[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("pid digits")
}

/// The processes (zombies aside) whose environment holds `TAG_VAR=tag`.
pub fn tagged(tag: &str) -> Vec<(u32, String)> {
    let needle = format!("{TAG_VAR}={tag}");
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, cmdline));
        }
    }
    found
}

/// The shared check after every run: no process of the run is left
/// (PROGRAM's group, CMD's group, a daemon, a watchdog), waiting up to
/// `bound` for each to end, and the run's runtime directory is empty (no
/// socket directory left), after which it is removed.
pub fn assert_nothing_left(tag: &str, dir: &std::path::Path, bound: Duration) {
    let mut left_behind = Vec::new();
    for (pid, cmdline) in tagged(tag) {
        if let Some(fd) = pidfd(pid).filter(|fd| !wait_readable(fd, bound)) {
            left_behind.push((pid, cmdline, fd));
        }
    }
    if !left_behind.is_empty() {
        // Not left on a shared machine either: killed through the pidfds
        // before the verdict.
        for (_, _, fd) in &left_behind {
            // SAFETY: pidfd_send_signal on a pidfd we own; no memory passed.
            unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_pidfd_send_signal,
                    std::os::fd::AsRawFd::as_raw_fd(fd),
                    nix::libc::SIGKILL,
                    std::ptr::null::<nix::libc::siginfo_t>(),
                    0,
                );
            }
        }
        let _ = std::fs::remove_dir_all(dir);
        let list: Vec<_> = left_behind
            .iter()
            .map(|(p, c, _)| format!("{p} ({c})"))
            .collect();
        panic!("left behind by run {tag}: {}", list.join(", "));
    }
    let left: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    // Removed whatever the verdict, so that a failing run leaves no junk.
    let _ = std::fs::remove_dir_all(dir);
    assert!(left.is_empty(), "left in the runtime directory: {left:?}");
}

/// A pidfd for `pid`, `None` when it is gone already.
pub fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as i32, 0) };
    // SAFETY: the kernel just returned this fd to us.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether `fd` becomes readable (a pidfd: the process ended; a pipe: data
/// or end of file) within `bound`.
pub fn wait_readable(fd: &OwnedFd, bound: Duration) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let timeout = nix::poll::PollTimeout::try_from(bound).unwrap_or(nix::poll::PollTimeout::MAX);
    matches!(nix::poll::poll(&mut fds, timeout), Ok(n) if n > 0)
}

/// The children of `pid` as (pid, state letter), from `/proc/*/stat`
/// (this kernel has no `/proc/PID/task/TID/children`).
pub fn children(pid: u32) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(c) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{c}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut f = rest.split(' ');
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if f.next().and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            found.push((c, state));
        }
    }
    found
}

/// The children of `pid` that are zombies now.
pub fn zombie_children(pid: u32) -> Vec<u32> {
    children(pid)
        .into_iter()
        .filter(|(_, s)| *s == 'Z')
        .map(|(c, _)| c)
        .collect()
}

/// The state letter of process `pid` (`R`, `S`, `T`, `Z`...), if it exists.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next())
}

/// `cmd` started with SIGCHLD ignored, SIGUSR1 ignored and SIGTERM, SIGUSR2
/// blocked: dispositions and a mask that some CI runners and shells pass
/// on, and that survive exec.
pub fn with_hostile_signals(cmd: &mut Command) -> &mut Command {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, signal};
    // SAFETY: runs in the forked child before exec; signal and
    // sigprocmask are async-signal-safe and nothing is allocated.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            signal(Signal::SIGCHLD, SigHandler::SigIgn)?;
            signal(Signal::SIGUSR1, SigHandler::SigIgn)?;
            let mut set = SigSet::empty();
            set.add(Signal::SIGTERM);
            set.add(Signal::SIGUSR2);
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
            Ok(())
        })
    }
}

/// A Python 3 child speaking the native protocol by hand (frames built
/// with `struct`, as PROTOCOL.md lays them out): `frame(tag, body)`,
/// `s(text)` (a string), `hello()`, `ready(addresses, status)` with
/// addresses as `(name, text)` pairs, `read_frame()`; then `body`.
pub fn native_python(body: &str) -> Vec<String> {
    let prelude = "import os, struct, sys, time\n\
        fd = int(os.environ['READYFD'])\n\
        def frame(tag, body=b''):\n\
        \x20   os.write(fd, struct.pack('<IB', len(body), tag) + body)\n\
        def s(t):\n\
        \x20   b = t.encode()\n\
        \x20   return struct.pack('<Q', len(b)) + b\n\
        def hello():\n\
        \x20   frame(1, b'RDFD' + struct.pack('<HIII', 1, os.getpid(), 1, 65536))\n\
        def ready(addresses=(), status=None):\n\
        \x20   b = struct.pack('<IQ', os.getpid(), len(addresses))\n\
        \x20   for name, text in addresses:\n\
        \x20       b += s(name) + struct.pack('<I', 3) + s(text)\n\
        \x20   b += b'\\0' if status is None else b'\\1' + s(status)\n\
        \x20   frame(2, b)\n\
        def read_exact(n):\n\
        \x20   b = b''\n\
        \x20   while len(b) < n:\n\
        \x20       c = os.read(fd, n - len(b))\n\
        \x20       if not c: raise EOFError\n\
        \x20       b += c\n\
        \x20   return b\n\
        def read_frame():\n\
        \x20   n, tag = struct.unpack('<IB', read_exact(5))\n\
        \x20   return tag, read_exact(n)\n";
    vec!["python3".into(), "-c".into(), format!("{prelude}{body}")]
}
