//! The systemd protocol, parent side (`Protocol::Systemd`, `NOTIFY_SOCKET`),
//! against real children: Python programs that send what libsystemd's
//! `sd_notify` sends (byte for byte, with fds and barriers), the real
//! `systemd-notify` (Debian package `systemd`), and our own child side.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use readyfd::{Address, Protocol, ReadyChild, ReadyError, ReadyVia};

use common::{BOUND, COMPAT, finish, first_line, sd_py as py, spawn_with_stdin};

fn spawn(cmd: Command) -> ReadyChild {
    spawn_with_stdin(cmd, Protocol::Systemd)
}

/// Waits for `child`'s verdict, which must be a failure: its pid, errno
/// and message.
fn failure(child: &mut ReadyChild) -> (u32, Option<i32>, String) {
    match child.wait_ready(BOUND) {
        Err(ReadyError::Failed {
            pid,
            errno,
            message,
        }) => (pid, errno, message),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sd_notify_datagrams_with_status_and_mainpid() {
    // Several datagrams, with and without the final newline.
    let mut child = spawn(py(r#"
notify(b"STATUS=loading")
notify(b"STATUS=almost\n")
notify(b"READY=1\nSTATUS=serving\nMAINPID=%d\n" % os.getpid())
sys.stdin.read()
"#));
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.via, ReadyVia::Notify);
    assert_eq!(r.ready.pid, child.id());
    assert_eq!(r.pid_mismatch(), None);
    assert_eq!(r.ready.status.as_deref(), Some("serving"));
    assert!(r.ready.addresses.is_empty());
    assert_eq!(child.last_status().as_deref(), Some("serving"));
    let state = child.notify_state().unwrap();
    assert_eq!(state.accepted, 3);
    assert_eq!(state.ignored, 0);
    assert_eq!(state.main_pid, Some(child.id()));
    finish(child);
}

#[test]
fn the_real_systemd_notify_is_understood() {
    // systemd-notify (Debian package `systemd`) sends on behalf of its
    // parent shell, then waits on a barrier, which readyfd releases.
    assert!(
        Command::new("systemd-notify")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "systemd-notify is missing: install the Debian package `systemd` (.ci/run does)"
    );
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "systemd-notify --status=starting && systemd-notify --ready --status=up && echo notified && exec cat",
    ]);
    cmd.stdout(Stdio::piped());
    let mut child = spawn(cmd);
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.via, ReadyVia::Notify);
    assert_eq!(r.ready.status.as_deref(), Some("up"));
    assert_eq!(r.ready.pid, child.id());
    // Its barrier was released: it returned, and successfully.
    let line = first_line(child.child_mut().stdout.take().unwrap());
    assert_eq!(line.trim(), "notified");
    finish(child);
}

#[test]
fn junk_is_ignored_and_a_later_ready_counts() {
    let mut child = spawn(py(r#"
notify(b"")
notify(b"\x00\x01garbage")
notify(b"READY=1\x00STATUS=nul inside")
notify(b"READY=0\nREADY=yes\nREADY=1junk\nREADY\n=\n==\nMAINPID=abc\nMAINPID=0\nERRNO=xyz\nEXTEND_TIMEOUT_USEC=-5\nX_OTHER=1\nFDSTORE=1")
notify(b"STATUS=\xff\xfe")
notify(b"READY=1\nSTATUS=oversized " + b"x" * 5000)
notify(b"STATUS=real\r\nREADY=1\0")
sys.stdin.read()
"#));
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.via, ReadyVia::Notify);
    assert_eq!(
        r.ready.status.as_deref(),
        Some("real"),
        "the oversized READY=1 was dropped whole"
    );
    assert_eq!(r.ready.pid, child.id());
    let state = child.notify_state().unwrap();
    assert_eq!(
        state.ignored, 3,
        "two with NUL inside, one oversized: {state:?}"
    );
    assert_eq!(state.accepted, 4);
    assert_eq!(state.errno, None);
    assert!(child.take_stored_fds().is_empty());
    finish(child);
}

#[test]
fn fds_that_are_not_stored_are_closed() {
    // Without FDSTORE=1, in an oversized datagram, and from a barrier with
    // two fds: each is closed, which the child sees as a hang-up.
    let mut child = spawn(py(r#"
r1, w1 = os.pipe()
notify(b"X_FOO=1", [w1])
os.close(w1)
if not hangs_up(r1): sys.exit(7)
r2, w2 = os.pipe()
notify(b"STATUS=" + b"x" * 5000, [w2])
os.close(w2)
if not hangs_up(r2): sys.exit(8)
r3, w3 = os.pipe()
r4, w4 = os.pipe()
notify(b"BARRIER=1", [w3, w4])
os.close(w3)
os.close(w4)
if not hangs_up(r3) or not hangs_up(r4): sys.exit(9)
notify(b"READY=1\nSTATUS=fds closed")
sys.stdin.read()
"#));
    let r = child.wait_ready(BOUND).unwrap();
    assert_eq!(r.ready.status.as_deref(), Some("fds closed"));
    finish(child);
}

#[test]
fn a_barrier_is_released_after_earlier_messages() {
    let mut child = spawn(py(r#"
notify(b"STATUS=before the barrier")
barrier()
notify(b"READY=1\nSTATUS=after the barrier")
sys.stdin.read()
"#));
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.ready.status.as_deref(), Some("after the barrier"));
    assert_eq!(
        child.notify_state().unwrap().accepted,
        2,
        "the barrier itself is not a message"
    );
    finish(child);
}

#[test]
fn the_fd_store_keeps_named_fds_bounded() {
    let mut child = spawn(py(r#"
ra, wa = os.pipe()
rb, wb = os.pipe()
rc, wc = os.pipe()
notify(b"FDSTORE=1\nFDNAME=alpha", [ra])
notify(b"FDSTORE=1\nFDNAME=bad:name", [rb])
notify(b"FDSTORE=1\nFDNAME=gone", [rc])
for fd in (ra, rb, rc): os.close(fd)
notify(b"FDSTOREREMOVE=1\nFDNAME=gone")
barrier()
try:
    os.write(wc, b"x")
    sys.exit(8)
except BrokenPipeError:
    pass
many = [os.open("/dev/null", os.O_RDONLY) for _ in range(70)]
notify(b"FDSTORE=1\nFDNAME=many", many)
os.write(wa, b"A")
os.write(wb, b"B")
notify(b"READY=1")
sys.stdin.read()
"#));
    child.wait_ready(BOUND).unwrap();
    let stored = child.take_stored_fds();
    assert_eq!(
        stored.len(),
        readyfd::limits::FDSTORE_MAX,
        "bounded: the rest were closed"
    );
    let names: Vec<&str> = stored.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names[..2],
        ["alpha", "stored"],
        "an invalid FDNAME= falls back to `stored`"
    );
    assert!(names[2..].iter().all(|n| *n == "many"));
    for (s, expected) in stored.into_iter().zip(["A", "B"]) {
        let mut f = std::fs::File::from(s.fd);
        let mut b = [0u8; 1];
        f.read_exact(&mut b).unwrap();
        assert_eq!(&b, expected.as_bytes(), "{}", s.name);
    }
    assert!(child.take_stored_fds().is_empty(), "taken once");
    finish(child);
}

#[test]
fn stopping_before_ready_is_a_failure_with_the_errno() {
    let mut child = spawn(py(r#"
notify(b"STATUS=cannot bind\nERRNO=98\nSTOPPING=1\n")
sys.stdin.read()
"#));
    let (pid, errno, message) = failure(&mut child);
    assert_eq!(pid, child.id());
    assert_eq!(errno, Some(98));
    assert!(
        message.contains("STOPPING=1")
            && message.contains("cannot bind")
            && message.contains("ERRNO=98"),
        "{message}"
    );
    finish(child);
}

#[test]
fn an_errno_and_an_exit_is_a_failure_with_the_errno() {
    let mut child = spawn(py(r#"
notify(b"ERRNO=ENOENT\nSTATUS=config missing")
sys.exit(1)
"#));
    let (_, errno, message) = failure(&mut child);
    assert_eq!(errno, Some(2));
    assert!(
        message.contains("exited") && message.contains("config missing"),
        "{message}"
    );
    assert_eq!(child.wait().unwrap().code(), Some(1));
}

#[test]
fn an_errno_alone_is_not_a_failure() {
    // As in systemd, ERRNO= annotates; it does not fail by itself.
    let mut child = spawn(py(r#"
notify(b"ERRNO=5")
notify(b"WATCHDOG=1\nWATCHDOG_USEC=2000000")
notify(b"RELOADING=1\nMONOTONIC_USEC=123")
notify(b"READY=1")
sys.stdin.read()
"#));
    child.wait_ready(BOUND).unwrap();
    let state = child.notify_state().unwrap();
    assert_eq!(state.errno, Some(5));
    assert_eq!(state.watchdog_pings, 1);
    assert_eq!(state.watchdog_usec, Some(2_000_000));
    assert_eq!(state.monotonic_usec, Some(123));
    assert!(
        !state.reloading,
        "READY=1 after RELOADING=1 ends the reload"
    );
    finish(child);
}

#[test]
fn watchdog_trigger_before_ready_is_a_failure() {
    let mut child = spawn(py("notify(b\"WATCHDOG=trigger\")\nsys.stdin.read()"));
    let (_, _, message) = failure(&mut child);
    assert!(message.contains("WATCHDOG=trigger"), "{message}");
    finish(child);
}

#[test]
fn a_crash_or_an_exit_before_ready_is_an_exit() {
    let mut child = spawn(py(
        "notify(b\"STATUS=loading\")\nos.kill(os.getpid(), signal.SIGKILL)",
    ));
    match child.wait_ready(BOUND) {
        Err(ReadyError::Exited {
            status,
            last_status,
            ..
        }) => {
            assert_eq!(status.signal(), Some(9));
            assert_eq!(
                last_status.as_deref(),
                Some("loading"),
                "sent before dying, still read"
            );
        }
        other => panic!("{other:?}"),
    }
    let mut child = spawn(py("sys.exit(0)"));
    match child.wait_ready(BOUND) {
        Err(ReadyError::Exited { status, .. }) => assert_eq!(status.code(), Some(0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ready_sent_just_before_exiting_counts() {
    let mut child = spawn(py("notify(b\"READY=1\\nSTATUS=done\")\nsys.exit(0)"));
    let r = child.wait_ready(BOUND).unwrap();
    assert_eq!(r.ready.status.as_deref(), Some("done"));
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn an_unrelated_sender_is_ignored_and_the_socket_is_private() {
    // The child prints its NOTIFY_SOCKET and waits for a line; meanwhile the
    // test process (not a descendant of the child) sends READY=1 itself.
    let mut cmd = py(r#"
print(os.environ["NOTIFY_SOCKET"], flush=True)
sys.stdin.readline()
notify(b"READY=1\nSTATUS=genuine")
sys.stdin.read()
"#);
    cmd.stdout(Stdio::piped());
    let mut child = spawn(cmd);
    let path = first_line(child.child_mut().stdout.take().unwrap());
    let path = std::path::PathBuf::from(path.trim());
    let dir = path.parent().unwrap().to_path_buf();
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o700,
        "{}",
        dir.display()
    );
    assert_eq!(
        meta.uid(),
        std::fs::metadata("/proc/self").unwrap().uid(),
        "ours"
    );
    assert!(std::fs::metadata(&path).unwrap().file_type().is_socket());

    let impostor = UnixDatagram::unbound().unwrap();
    impostor
        .send_to(b"READY=1\nSTATUS=impostor", &path)
        .unwrap();
    writeln!(child.child_mut().stdin.as_mut().unwrap()).unwrap();
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.ready.status.as_deref(), Some("genuine"));
    assert_eq!(child.notify_state().unwrap().ignored, 1);
    drop(child.child_mut().stdin.take());
    child.wait().unwrap();
    drop(child);
    assert!(!dir.exists(), "socket and directory are removed on drop");
}

#[test]
fn notifications_after_ready_are_still_read() {
    // A daemon that keeps sending STATUS= after READY=1 neither blocks nor
    // fails; its status stays current and its barrier is released.
    let mut cmd = py(r#"
notify(b"READY=1\nSTATUS=starting to serve")
for i in range(100):
    notify(b"STATUS=serving %d" % i)
r, w = os.pipe()
notify(b"FDSTORE=1\nFDNAME=late", [r])
barrier()
print("done", flush=True)
sys.stdin.read()
"#);
    cmd.stdout(Stdio::piped());
    let mut child = spawn(cmd);
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.ready.status.as_deref(), Some("starting to serve"));
    let line = first_line(child.child_mut().stdout.take().unwrap());
    assert_eq!(line.trim(), "done");
    assert_eq!(child.last_status().as_deref(), Some("serving 99"));
    let stored = child.take_stored_fds();
    assert_eq!(
        stored.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["late"]
    );
    finish(child);
}

#[test]
fn the_socket_directory_is_removed_on_drop() {
    let mut cmd = py("print(os.environ[\"NOTIFY_SOCKET\"], flush=True)\nsys.stdin.read()");
    cmd.stdout(Stdio::piped());
    let mut child = spawn(cmd);
    let path = first_line(child.child_mut().stdout.take().unwrap());
    let dir = std::path::PathBuf::from(path.trim())
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(dir.exists());
    child.kill().unwrap();
    drop(child);
    assert!(!dir.exists());
}

#[test]
fn a_wrapper_hands_over_with_mainpid_and_exits() {
    // The wrapper forks the real server; the server announces MAINPID=
    // (and waits until that is processed, with a barrier), the wrapper
    // exits 0, then the server says READY=1 after its parent is gone.
    let mut child = spawn(py(r#"
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    parent = os.pidfd_open(os.getppid())
    notify(b"MAINPID=%d\nSTATUS=taking over" % os.getpid())
    barrier()
    os.write(go_w, b"go")
    if not select.select([parent], [], [], 60)[0]: sys.exit(9)
    notify(b"READY=1\nSTATUS=main")
    sys.stdin.read()
    sys.exit(0)
os.read(go_r, 2)
os._exit(0)
"#));
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.via, ReadyVia::Notify);
    assert_eq!(r.ready.status.as_deref(), Some("main"));
    let main = r
        .pid_mismatch()
        .expect("the server's pid, not the wrapper's");
    assert_eq!(child.notify_state().unwrap().main_pid, Some(main));
    assert_eq!(child.wait().unwrap().code(), Some(0), "the wrapper");
    // The server shares our stdin pipe: closing it lets it exit.
    drop(child.child_mut().stdin.take());
}

#[test]
fn the_main_process_exiting_while_the_wrapper_lives_is_a_failure() {
    let mut child = spawn(py(r#"
pid = os.fork()
if pid == 0:
    notify(b"MAINPID=%d" % os.getpid())
    barrier()
    os._exit(0)
sys.stdin.read()
"#));
    let (_, _, message) = failure(&mut child);
    assert!(message.contains("MAINPID"), "{message}");
    finish(child);
}

#[test]
fn extend_timeout_usec_extends_the_deadline() {
    let mut cmd = Command::new(COMPAT);
    cmd.arg("systemd-extend").stdout(Stdio::piped());
    let mut child = spawn(cmd);
    // The request is queued before the wait starts, so the wait's own
    // timeout is shorter than the child's delay whatever the machine's
    // speed.
    let line = first_line(child.child_mut().stdout.take().unwrap());
    assert_eq!(line.trim(), "extending");
    let timeout = Duration::from_millis(300);
    let r = child.wait_ready(timeout).unwrap().clone();
    assert_eq!(r.ready.status.as_deref(), Some("extended"));
    assert!(
        r.elapsed > Duration::from_secs(1),
        "waited past the caller's timeout: {:?}",
        r.elapsed
    );
    assert_eq!(
        child.notify_state().unwrap().extend_timeout_usec,
        Some(60_000_000)
    );
    finish(child);
}

#[test]
fn a_flood_without_ready_times_out() {
    let mut cmd = py(r#"
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=flood 0", os.environ["NOTIFY_SOCKET"])
print("flooding", flush=True)
i = 0
while True:
    i += 1
    s.sendto(b"STATUS=flood %d " % i + b"x" * 4000, os.environ["NOTIFY_SOCKET"])
"#);
    cmd.stdout(Stdio::piped());
    let mut child = spawn(cmd);
    let line = first_line(child.child_mut().stdout.take().unwrap());
    assert_eq!(line.trim(), "flooding");
    match child.wait_ready(Duration::from_millis(300)) {
        Err(ReadyError::Timeout {
            killed,
            last_status,
            ..
        }) => {
            assert!(killed);
            assert!(
                last_status
                    .as_deref()
                    .is_some_and(|s| s.starts_with("flood ")),
                "{last_status:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn our_child_side_under_our_systemd_parent() {
    let mut cmd = Command::new(COMPAT);
    cmd.arg("serve");
    let mut child = spawn(cmd);
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.via, ReadyVia::Notify);
    assert_eq!(r.ready.pid, child.id());
    assert_eq!(r.ready.status.as_deref(), Some("serving"));
    let Some(Address::Tcp(addr)) = r.ready.get("http") else {
        panic!("the address travels as X_READYFD_ADDRESS: {:?}", r.ready)
    };
    let line = first_line(std::net::TcpStream::connect(addr).unwrap());
    assert!(
        line.starts_with(
            "protocol=systemd fd=none READYFD=unset CHILD_READY_FD=unset NOTIFY_SOCKET=/"
        ),
        "{line}"
    );
    finish(child);
}

#[test]
fn a_status_before_ready_through_the_notifier() {
    let mut cmd = Command::new(COMPAT);
    cmd.arg("status-then-ready");
    let mut child = spawn(cmd);
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.ready.status.as_deref(), Some("up"));
    assert_eq!(
        r.ready.pid,
        child.id(),
        "Ready::new(0) sends this process's pid"
    );
    assert_eq!(child.notify_state().unwrap().accepted, 2);
    finish(child);
}
