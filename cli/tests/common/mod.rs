//! Helpers of the end-to-end tests: run the `readyfd` binary with piped
//! stdio, read its output line by line as events arrive, and wait for it
//! with a bound (never a sleep).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
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

/// A running `readyfd`: its stdout as lines, its stderr collected, its exit
/// status when it comes.
pub struct Running {
    pub pid: u32,
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
    pub fn finish(mut self) -> Finished {
        let status = match self.exit.recv_timeout(BOUND) {
            Ok(s) => s,
            Err(_) => {
                self.kill();
                panic!("readyfd did not exit within {BOUND:?}");
            }
        };
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
