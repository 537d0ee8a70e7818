//! The watchdog: what ends PROGRAM's and CMD's process groups when readyfd
//! itself is ended in a way it cannot act on (`kill -9`, the OOM killer, a
//! crash).
//!
//! readyfd re-executes itself as `readyfd __watchdog GRACE_MS` before it
//! starts anything, in a process group of its own (so that neither a
//! terminal's Ctrl-C nor a signal to PROGRAM's or CMD's group reaches it),
//! with the read end of a pipe as its stdin and `/dev/null` as stdout and
//! stderr. readyfd holds the only write end (close-on-exec) and writes one
//! line per thing to end: `group PGID` for a process group, `pid PID` for
//! a daemon that left the group (the watchdog opens a pidfd for it at
//! once, so that a recycled pid is never signalled). At a normal exit,
//! readyfd writes `done` and waits for the watchdog to exit: it then does
//! nothing. Any other end of readyfd closes the pipe (the kernel closes
//! every fd of a dying process, `SIGKILL` included), the watchdog reads end
//! of file without `done`, and it sends `SIGTERM` and `SIGCONT` to each
//! group and process, then `SIGKILL` to what is left after the grace
//! period.
//!
//! Why a process and not only the parent-death signal: `PR_SET_PDEATHSIG`
//! reaches the one process that asked for it, not the helpers PROGRAM
//! started, not a server behind a wrapper (`sh -c 'server; ...'`), not CMD;
//! and a process cannot arrange anything after its own `SIGKILL`. A
//! re-executed binary rather than a bare `fork`: readyfd has threads by
//! then, and a forked child of a threaded process may only make
//! async-signal-safe calls, while the watchdog has to read, parse and wait.

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::exit::{self, Failure};
use crate::pidfd;
use crate::signals::Signals;

/// The hidden subcommand.
pub(crate) const COMMAND: &str = "__watchdog";

/// How long readyfd waits for the watchdog to exit after `done`.
const FINISH_BOUND: Duration = Duration::from_secs(1);

/// readyfd's side: the pipe's write end and the watchdog process.
#[derive(Debug)]
pub(crate) struct Watchdog {
    pipe: Option<File>,
    child: Option<Child>,
}

/// What failed when the watchdog could not be started: readyfd
/// re-executes itself through `/proc/self/exe`, which is missing where
/// `/proc` is not mounted (a bare container or chroot); say so, since the
/// error alone ("No such file or directory") names no file.
fn spawn_failed(what: &str, e: &std::io::Error, proc_mounted: bool) -> String {
    if e.kind() == std::io::ErrorKind::NotFound && !proc_mounted {
        format!(
            "{what}: /proc is not mounted, and readyfd re-executes itself as its watchdog \
             through /proc/self/exe (mount /proc, e.g. `mount -t proc proc /proc`)"
        )
    } else {
        what.to_string()
    }
}

impl Watchdog {
    /// Starts the watchdog with `grace` between `SIGTERM` and `SIGKILL`.
    ///
    /// # Errors
    /// When the pipe cannot be made or the binary cannot be re-executed.
    pub(crate) fn start(grace: Duration) -> Result<Watchdog, Failure> {
        let what = "cannot start readyfd's watchdog (what ends PROGRAM if readyfd is killed)";
        let (read, write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Failure::system(what, e))?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg(COMMAND)
            .arg(grace.as_millis().to_string())
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        Signals::reset_in_child(&mut cmd);
        let child = cmd.spawn().map_err(|e| {
            let proc_mounted = std::path::Path::new("/proc/self").exists();
            Failure::system(&spawn_failed(what, &e, proc_mounted), e)
        })?;
        Ok(Watchdog {
            pipe: Some(File::from(write)),
            child: Some(child),
        })
    }

    /// The watchdog's pid (readyfd's child, which only readyfd reaps).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Makes `cmd`'s process, which leads a process group of its own,
    /// tell the watchdog about its group itself, before it execs: then no
    /// moment exists in which it runs (and may already have been seen by
    /// the user, as `--then` CMD's first output) while the watchdog does not
    /// know it, whatever moment readyfd is killed at.
    pub(crate) fn register_in_child(&self, cmd: &mut Command) {
        let Some(fd) = self.pipe.as_ref().map(|p| p.as_raw_fd()) else {
            return;
        };
        // SAFETY: the closure runs in the forked child before exec; it
        // makes system calls only (getpid, sigaction, write) with a buffer on its stack,
        // allocates nothing and takes no lock: async-signal-safe. `fd` is
        // the write end of the pipe, open in the child until its exec
        // (close-on-exec); a write of at most PIPE_BUF bytes to a pipe is
        // atomic, so it never interleaves with readyfd's own lines.
        unsafe {
            cmd.pre_exec(move || {
                let mut buf = [0u8; 32];
                let n = group_line(nix::libc::getpid() as u32, &mut buf);
                // A watchdog that died must not kill this child with
                // SIGPIPE: ignored for the write, default again after.
                nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_IGN);
                nix::libc::write(fd, buf.as_ptr().cast(), n);
                nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_DFL);
                Ok(())
            });
        }
    }

    /// The watchdog removes the socket file at `path` if readyfd dies,
    /// after ending the processes, when it is still the file readyfd made
    /// (same device and inode). The path goes hex-encoded, so that any
    /// byte in it keeps the line one line (and under `PIPE_BUF`: a socket
    /// path is at most 108 bytes).
    pub(crate) fn watch_file(&mut self, path: &std::path::Path, dev: u64, ino: u64) {
        use std::fmt::Write as _;
        use std::os::unix::ffi::OsStrExt;
        let mut hex = String::with_capacity(2 * path.as_os_str().len());
        for b in path.as_os_str().as_bytes() {
            let _ = write!(hex, "{b:02x}");
        }
        self.say(&format!("file {dev} {ino} {hex}\n"));
    }

    /// From now on, the watchdog ends process `pid` if readyfd dies.
    pub(crate) fn watch_pid(&mut self, pid: u32) {
        self.say(&format!("pid {pid}\n"));
    }

    fn say(&mut self, line: &str) {
        // A few bytes into a pipe whose reader reads all the time: this
        // does not block. A watchdog that died (EPIPE) cannot be helped.
        if let Some(p) = &mut self.pipe {
            let _ = p.write_all(line.as_bytes());
        }
    }

    /// readyfd ends normally: the watchdog is told so, and reaped. A
    /// watchdog that does not exit within a second (someone stopped it) is
    /// killed: readyfd never hangs on it.
    pub(crate) fn finish(&mut self) {
        self.say("done\n");
        self.pipe = None;
        if let Some(mut c) = self.child.take() {
            let exited = pidfd::open(c.id()).is_ok_and(|fd| pidfd::wait_exit(&fd, FINISH_BOUND));
            if !exited {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Writes `group PID\n` into `buf` without allocating; returns its length.
fn group_line(pid: u32, buf: &mut [u8; 32]) -> usize {
    const HEAD: &[u8] = b"group ";
    buf[..HEAD.len()].copy_from_slice(HEAD);
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (pid, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[HEAD.len() + i] = digits[len - 1 - i];
    }
    buf[HEAD.len() + len] = b'\n';
    HEAD.len() + len + 1
}

/// What the watchdog was told to end, and to remove.
struct Watched {
    groups: Vec<Pid>,
    pids: Vec<OwnedFd>,
    /// Socket files: `(path, device, inode)`.
    files: Vec<(std::path::PathBuf, u64, u64)>,
}

/// A `file DEV INO HEXPATH` line's fields.
fn parse_file(rest: &str) -> Option<(std::path::PathBuf, u64, u64)> {
    use std::os::unix::ffi::OsStringExt;
    let mut f = rest.split(' ');
    let dev = f.next()?.parse().ok()?;
    let ino = f.next()?.parse().ok()?;
    let hex = f.next()?.as_bytes();
    if f.next().is_some() || hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = hex
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect();
    Some((std::ffi::OsString::from_vec(bytes?).into(), dev, ino))
}

/// Removes the socket files that are still the ones readyfd made.
fn remove_files(w: &Watched) {
    for (path, dev, ino) in &w.files {
        crate::listen::remove_if_ours(path, *dev, *ino);
    }
}

/// `readyfd __watchdog GRACE_MS`: reads stdin until `done` (exit, doing
/// nothing) or end of file (end everything it was told of).
///
/// # Errors
/// A usage error for a bad grace argument.
pub(crate) fn watchdog_main(grace: &str) -> Result<u8, Failure> {
    let grace = grace
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| Failure::new(exit::USAGE, format!("{COMMAND}: bad grace: {e}")))?;
    let mut w = Watched {
        groups: Vec::new(),
        pids: Vec::new(),
        files: Vec::new(),
    };
    let stdin = io::stdin().lock();
    for line in stdin.lines() {
        let Ok(line) = line else { break };
        match line.split_once(' ') {
            _ if line == "done" => return Ok(0),
            Some(("group", n)) => {
                if let Ok(n) = n.parse::<i32>() {
                    // Few: PROGRAM's group and CMD's.
                    if n > 1 && w.groups.len() < 16 {
                        w.groups.push(Pid::from_raw(n));
                    }
                }
            }
            Some(("file", rest)) => {
                if let Some(f) = parse_file(rest) {
                    if w.files.len() < 64 {
                        w.files.push(f);
                    }
                }
            }
            Some(("pid", n)) => {
                if let Some(fd) = n.parse::<u32>().ok().and_then(|n| pidfd::open(n).ok()) {
                    if w.pids.len() < 16 {
                        w.pids.push(fd);
                    }
                }
            }
            _ => {}
        }
    }
    end_all(&w, grace);
    remove_files(&w);
    Ok(0)
}

/// `SIGTERM` and `SIGCONT` to everything, `SIGKILL` after `grace` to
/// what is left. The watchdog is nobody's parent here, so it cannot wait
/// for exits: it looks every 20 ms (a bounded wait of a process that runs
/// only when readyfd is gone).
fn end_all(w: &Watched, grace: Duration) {
    let send = |s: Signal| {
        for g in &w.groups {
            let _ = killpg(*g, s);
        }
        for p in &w.pids {
            pidfd::signal(p, s);
        }
    };
    send(Signal::SIGTERM);
    send(Signal::SIGCONT);
    let gone = || {
        w.groups
            .iter()
            .all(|g| killpg(*g, None) == Err(Errno::ESRCH))
            && w.pids.iter().all(pidfd::exited)
    };
    // A grace beyond the clock's range is forever.
    let deadline = Instant::now().checked_add(grace);
    while !gone() && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !gone() {
        send(Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::spawn_failed;

    #[test]
    fn a_watchdog_that_cannot_start_without_proc_says_so() {
        let enoent = std::io::Error::from(std::io::ErrorKind::NotFound);
        let m = spawn_failed("cannot start", &enoent, false);
        assert!(m.contains("/proc is not mounted"), "{m}");
        // With /proc there, or another error, the error speaks for itself.
        assert_eq!(spawn_failed("cannot start", &enoent, true), "cannot start");
        let eacces = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(spawn_failed("cannot start", &eacces, false), "cannot start");
    }

    use super::*;

    #[test]
    fn file_lines() {
        let p = std::path::Path::new("/tmp/a b\n.sock");
        let mut hex = String::new();
        for b in p.as_os_str().as_encoded_bytes() {
            hex.push_str(&format!("{b:02x}"));
        }
        let (path, dev, ino) = parse_file(&format!("7 42 {hex}")).unwrap();
        assert_eq!((path.as_path(), dev, ino), (p, 7, 42));
        for bad in [
            "",
            "7",
            "7 42",
            "7 42 abc",
            "7 42 zz",
            "x 42 61",
            "7 42 61 extra",
        ] {
            assert!(parse_file(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn group_lines() {
        let mut buf = [0u8; 32];
        let n = group_line(4121, &mut buf);
        assert_eq!(&buf[..n], b"group 4121\n");
        let n = group_line(0, &mut buf);
        assert_eq!(&buf[..n], b"group 0\n");
        let n = group_line(u32::MAX, &mut buf);
        assert_eq!(&buf[..n], b"group 4294967295\n");
    }
}
