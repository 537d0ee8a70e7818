//! What the integration tests share: the helper children and how to start
//! them, their application protocols, the Python children of the pipe and
//! systemd protocols, fd listings, and the tables that run against both
//! drivers (blocking here, tokio in [`aio`]).
//!
//! Each test binary uses a part of it.
#![allow(dead_code)]

#[cfg(feature = "tokio")]
pub mod aio;
pub mod before_ready;
pub mod hostile;
pub mod protocol;

#[allow(unused_imports)] // each test binary uses a part
pub use protocol::{AsyncReq, TestReq};

use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use readyfd::{Protocol, ReadyChild, ReadyCommand};

/// A bound against hangs, not a synchronisation: generous on purpose.
pub const BOUND: Duration = Duration::from_secs(60);

/// The helper child of the native protocol (`tests/helpers/child`).
pub const CHILD: &str = env!("CARGO_BIN_EXE_readyfd-test-child");

/// The helper child of the pipe and systemd protocols
/// (`tests/helpers/compat.rs`).
pub const COMPAT: &str = env!("CARGO_BIN_EXE_readyfd-test-compat");

/// `readyfd-test-child ROLE`, not spawned yet.
pub fn helper(role: &str) -> Command {
    let mut cmd = Command::new(CHILD);
    cmd.arg(role);
    cmd
}

/// `readyfd-test-compat ROLE`, not spawned yet.
pub fn compat(role: &str) -> Command {
    let mut cmd = Command::new(COMPAT);
    cmd.arg(role);
    cmd
}

/// `readyfd-test-child ROLE`, spawned over the native protocol.
pub fn spawn(role: &str) -> ReadyChild {
    ReadyCommand::new(helper(role))
        .spawn()
        .expect("spawn helper")
}

/// Spawns `cmd` over `protocol` with stdin piped (children that stay alive
/// block on it; dropping it lets them exit).
pub fn spawn_with_stdin(cmd: Command, protocol: Protocol) -> ReadyChild {
    ReadyCommand::new(cmd)
        .protocol(protocol)
        .command_mut_with(|c| {
            c.stdin(Stdio::piped());
        })
        .spawn()
        .expect("spawn")
}

/// Closes the stdin of a child from [`spawn_with_stdin`] and checks that it
/// exits 0.
pub fn finish(mut child: ReadyChild) {
    drop(child.child_mut().stdin.take());
    let status = child
        .wait_timeout(BOUND)
        .unwrap()
        .expect("the child exits when stdin closes");
    assert!(status.success(), "{status:?}");
}

/// `stop` ends a child that keeps the default shutdown policy with its own
/// SIGTERM; one that handles Shutdown itself exits 0.
pub fn stopped_cleanly(status: ExitStatus) -> bool {
    status.success() || status.signal() == Some(15)
}

/// An exit code, or `-signal` for a child killed by a signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| -status.signal().unwrap_or(0))
}

/// The names of the entries of `dir`, sorted (`/proc/self/fd`,
/// `/proc/self/task`).
pub fn entries(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The process's open fds, sorted.
pub fn open_fds() -> Vec<String> {
    entries("/proc/self/fd")
}

/// Panics with a clear message if `python3` is not on PATH: some children
/// are Python programs that speak the protocols the way existing programs
/// do.
pub fn needs_python3() {
    let found = Command::new("python3")
        .args(["-c", ""])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test needs python3 on PATH (Debian: apt install python3)"
    );
}

/// `python3`, not spawned yet (see [`needs_python3`]).
pub fn python3() -> Command {
    needs_python3();
    Command::new("python3")
}

/// `python3 -c SCRIPT` with `fd` = `int(os.environ["CHILD_READY_FD"])`
/// defined first (the pipe protocol).
pub fn pipe_py(script: &str) -> Command {
    let mut cmd = python3();
    cmd.arg("-c").arg(format!(
        "import os, sys, signal\nfd = int(os.environ['CHILD_READY_FD'])\n{script}"
    ));
    cmd
}

/// What libsystemd's client side does, in Python: `notify(msg, fds)` is
/// `sd_pid_notify_with_fds` (a fresh datagram socket, `sendmsg` to the
/// path or the abstract `@name`, fds in `SCM_RIGHTS`); `barrier()` is
/// `sd_notify_barrier` (send `BARRIER=1` with a pipe's write end, wait for
/// the pipe to hang up; exit 7 if it never does).
pub const SD_PRELUDE: &str = r#"
import array, os, select, signal, socket, sys
def notify(msg, fds=()):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    s.sendmsg([msg], anc, 0, addr)
    s.close()
def hangs_up(r):
    p = select.poll()
    p.register(r, 0)
    return bool(p.poll(60000))
def barrier():
    r, w = os.pipe()
    notify(b"BARRIER=1", [w])
    os.close(w)
    if not hangs_up(r):
        sys.exit(7)
    os.close(r)
"#;

/// `python3 -c SCRIPT` with [`SD_PRELUDE`] first (the systemd protocol).
pub fn sd_py(script: &str) -> Command {
    let mut cmd = python3();
    cmd.arg("-c").arg(format!("{SD_PRELUDE}\n{script}"));
    cmd
}

/// `sh -c 'server &'` over the pipe protocol: the shell exits 0 at once;
/// the server (Python), which inherited the pipe, writes its pid and a
/// newline only after the shell is gone (it waits on a pidfd of the shell,
/// or finds it reaped already), then waits for a byte on fd 4, which
/// carries the shell's stdin.
pub fn pipe_wrapper() -> Command {
    let grandchild = r#"
import os, select, sys
try:
    shell = os.pidfd_open(int(sys.argv[1]))
    if not select.select([shell], [], [], 60)[0]:
        sys.exit(9)
except ProcessLookupError:
    pass
os.write(3, b"%d\n" % os.getpid())
os.read(4, 1)
"#;
    needs_python3();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "exec 4<&0; python3 -c \"$1\" $$ & exit 0",
        "sh",
        grandchild,
    ]);
    cmd
}

/// Ends what a test started in a process group of its own: the whole group.
pub fn kill_group(pgid: u32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// A pidfd of `pid` (not necessarily our child).
pub fn pidfd(pid: u32) -> OwnedFd {
    // SAFETY: pidfd_open takes integers and returns a new fd or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as i32, 0) };
    assert!(
        fd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the kernel just gave us this fd.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Waits for the process behind `pidfd` to end; whether it did within ten
/// seconds.
pub fn ended(pidfd: &OwnedFd) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16)).unwrap() == 1
}

/// A current-thread tokio runtime, for the tests that drive both APIs from
/// one `#[test]`.
#[cfg(feature = "tokio")]
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Makes the fds of `placed`, `(fd, at)`, open at number `at` in the child
/// of `cmd`, without close-on-exec (the parent's `fd` stays as it is).
pub fn place_fds(cmd: &mut Command, placed: &[(RawFd, RawFd)]) {
    let placed = placed.to_vec();
    // SAFETY: only dup2/fcntl on integers between fork and exec: no
    // allocation, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for &(src, dst) in &placed {
                // dup2 onto the same number would leave close-on-exec set.
                let rc = if src == dst {
                    nix::libc::fcntl(dst, nix::libc::F_SETFD, 0)
                } else {
                    nix::libc::dup2(src, dst)
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The first line `r` gives (a child's stdout, a server's greeting),
/// without its newline.
pub fn first_line(r: impl std::io::Read) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(r), &mut line).unwrap();
    line.trim_end_matches('\n').to_string()
}
