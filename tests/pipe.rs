//! The pipe protocol, parent side (`Protocol::Pipe`, `CHILD_READY_FD`),
//! against real children: small Python programs written the way existing
//! programs speak the protocol, and our own child side.

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use readyfd::limits::PIPE_TEXT_LIMIT;
use readyfd::{Address, Protocol, ProtocolError, ReadyChild, ReadyCommand, ReadyError, ReadyVia};

use common::{BOUND, finish, first_line, pipe_py as py, pipe_wrapper, python3, spawn_with_stdin};

fn spawn(cmd: Command) -> ReadyChild {
    spawn_with_stdin(cmd, Protocol::Pipe)
}

#[test]
fn address_without_newline_then_close_is_ready_with_the_address() {
    // Debian Code Search's -addrfd: the address, no newline, close.
    let mut child = spawn(py(
        "os.write(fd, b'127.0.0.1:41234')\nos.close(fd)\nsys.stdin.read()",
    ));
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.via, ReadyVia::Closed);
    assert_eq!(r.ready.pid, child.id());
    assert_eq!(r.ready.addresses.len(), 1);
    assert_eq!(
        r.ready.get(""),
        Some(&Address::Tcp("127.0.0.1:41234".parse().unwrap()))
    );
    assert_eq!(r.ready.status, None);
    finish(child);
}

#[test]
fn a_bare_close_is_ready_with_no_data() {
    // The article's child: close the fd, nothing written.
    let mut child = spawn(py("os.close(fd)\nsys.stdin.read()"));
    let r = child.wait_ready(BOUND).unwrap();
    assert_eq!(r.via, ReadyVia::Closed);
    assert!(r.ready.addresses.is_empty());
    finish(child);
}

#[test]
fn a_newline_is_ready_while_the_fd_stays_open() {
    // s6's notification-fd, dbus-daemon --print-address, Xorg -displayfd:
    // the text and a newline; the fd stays open.
    let cases: [(&str, Option<Address>); 5] = [
        (
            "unix:path=/tmp/dbus-test,guid=0123abcd",
            Some(Address::Text(
                "unix:path=/tmp/dbus-test,guid=0123abcd".into(),
            )),
        ),
        ("0", Some(Address::Text("0".into()))),
        ("/run/app.sock", Some(Address::Unix("/run/app.sock".into()))),
        (
            "[::1]:8080\r",
            Some(Address::Tcp("[::1]:8080".parse().unwrap())),
        ),
        ("", None),
    ];
    for (text, expected) in cases {
        let script = format!(
            "os.write(fd, {text:?}.encode() + b'\\nignored after the newline')\nsys.stdin.read()"
        );
        let mut child = spawn(py(&script));
        let r = child.wait_ready(BOUND).unwrap().clone();
        assert_eq!(r.via, ReadyVia::Newline, "{text:?}");
        assert_eq!(r.ready.get("").cloned(), expected, "{text:?}");
        assert_eq!(r.ready.addresses.len(), usize::from(!text.is_empty()));
        finish(child);
    }
}

#[test]
fn the_text_is_bounded_and_a_flood_is_a_protocol_error() {
    // Exactly the limit, then a newline: ready, all of it kept.
    let script = format!("os.write(fd, b'a' * {PIPE_TEXT_LIMIT} + b'\\n')\nsys.stdin.read()");
    let mut child = spawn(py(&script));
    let r = child.wait_ready(BOUND).unwrap();
    assert_eq!(
        r.ready.get(""),
        Some(&Address::Text("a".repeat(PIPE_TEXT_LIMIT)))
    );
    finish(child);

    // One byte more without a newline, the fd held open: a flood, decided
    // by the count alone.
    let script = format!(
        "os.write(fd, b'a' * {})\nsys.stdin.read()",
        PIPE_TEXT_LIMIT + 1
    );
    let mut child = spawn(py(&script));
    match child.wait_ready(BOUND) {
        Err(ReadyError::Protocol {
            source: ProtocolError::PipeFlood { limit },
            ..
        }) => {
            assert_eq!(limit, PIPE_TEXT_LIMIT)
        }
        other => panic!("{other:?}"),
    }
    finish(child);
}

#[test]
fn a_child_that_writes_without_end_sees_epipe() {
    // The parent closes its read end on a flood: the child's write fails
    // (EPIPE) instead of blocking forever on a full pipe, and nothing grows.
    let mut cmd = py(
        "try:\n    while True: os.write(fd, b'x' * 65536)\nexcept BrokenPipeError:\n    print('epipe', flush=True)\nsys.stdin.read()",
    );
    cmd.stdout(Stdio::piped());
    let mut child = spawn(cmd);
    assert!(matches!(
        child.wait_ready(BOUND),
        Err(ReadyError::Protocol { .. })
    ));
    let line = first_line(child.child_mut().stdout.take().unwrap());
    assert_eq!(
        line.trim(),
        "epipe",
        "the read end was closed, so the child is not stuck on a full pipe"
    );
    finish(child);
}

#[test]
fn an_exit_is_never_ready() {
    // EOF caused by death: whatever was written without a newline, and
    // whatever the status, this is "exited before ready".
    type Check = fn(std::process::ExitStatus) -> bool;
    let cases: [(&str, Check); 3] = [
        ("os.write(fd, b'127.0.0.1:1')\nsys.exit(0)", |s| {
            s.code() == Some(0)
        }),
        ("sys.exit(1)", |s| s.code() == Some(1)),
        (
            "os.write(fd, b'half an addr')\nos.kill(os.getpid(), signal.SIGKILL)",
            |s| s.signal() == Some(9),
        ),
    ];
    for (script, check) in cases {
        let mut child = spawn(py(script));
        match child.wait_ready(BOUND) {
            Err(ReadyError::Exited { status, pid, .. }) => {
                assert_eq!(pid, child.id());
                assert!(check(status), "{script}: {status:?}");
            }
            other => panic!("{script}: {other:?}"),
        }
    }
}

#[test]
fn a_newline_written_just_before_exiting_counts() {
    // Data first: the child said "ready" while it was alive.
    let mut child = spawn(py("os.write(fd, b'bye\\n')\nsys.exit(3)"));
    let r = child.wait_ready(BOUND).unwrap();
    assert_eq!(r.via, ReadyVia::Newline);
    assert_eq!(r.ready.get(""), Some(&Address::Text("bye".into())));
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

#[test]
fn a_silent_child_times_out_and_is_killed() {
    let mut child = spawn(py("sys.stdin.read()"));
    match child.wait_ready(Duration::from_millis(300)) {
        Err(ReadyError::Timeout { killed, .. }) => assert!(killed),
        other => panic!("{other:?}"),
    }
    assert!(child.try_wait().unwrap().is_some(), "killed and reaped");
}

#[test]
fn another_fd_number_and_a_program_that_takes_it_on_argv() {
    // The fd number is configurable; a program that wants it on its
    // command line gets it there (the CLI substitutes a placeholder).
    let mut cmd = python3();
    cmd.args([
        "-c",
        "import os, sys\nfd = int(sys.argv[1])\nos.write(fd, ('argv=%s env=%s\\n' % (sys.argv[1], os.environ['CHILD_READY_FD'])).encode())\nsys.stdin.read()",
        "5",
    ]);
    let mut child = ReadyCommand::new(cmd)
        .protocol(Protocol::Pipe)
        .fd(5)
        .command_mut_with(|c| {
            c.stdin(Stdio::piped());
        })
        .spawn()
        .unwrap();
    let r = child.wait_ready(BOUND).unwrap();
    assert_eq!(r.ready.get(""), Some(&Address::Text("argv=5 env=5".into())));
    finish(child);
}

#[test]
fn our_child_side_under_our_pipe_parent() {
    for fd in [3, 7] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_readyfd-test-compat"));
        cmd.arg("serve");
        let mut child = ReadyCommand::new(cmd)
            .protocol(Protocol::Pipe)
            .fd(fd)
            .command_mut_with(|c| {
                c.stdin(Stdio::piped());
            })
            .spawn()
            .unwrap();
        let r = child.wait_ready(BOUND).unwrap().clone();
        assert_eq!(r.via, ReadyVia::Newline);
        let Some(Address::Tcp(addr)) = r.ready.get("") else {
            panic!("{:?}", r.ready)
        };
        let line = first_line(std::net::TcpStream::connect(addr).unwrap());
        let (head, tail) = line
            .trim()
            .split_once(" READYFD_INODE=unset CHILD_READY_FD_INODE=")
            .unwrap();
        assert!(
            tail.split_once(':').is_some(),
            "the pipe's identity: {tail}"
        );
        assert_eq!(
            head,
            format!(
                "protocol=pipe fd={fd}:closed READYFD=unset CHILD_READY_FD={fd} NOTIFY_SOCKET=unset"
            ),
            "the fd is closed after the newline; the environment is untouched"
        );
        finish(child);
    }
}

#[test]
fn a_wrapper_that_exits_zero_hands_the_pipe_to_its_descendant() {
    // `sh -c 'server &'`: the shell exits 0 at once; the server, which
    // inherited the pipe, writes its newline only after the shell is gone.
    let mut child = spawn(pipe_wrapper());
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.via, ReadyVia::Newline);
    let Some(Address::Text(pid)) = r.ready.get("") else {
        panic!("{:?}", r.ready)
    };
    let pid: u32 = pid.parse().unwrap();
    assert_ne!(pid, child.id(), "the descendant, not the wrapper");
    assert_eq!(child.try_wait().unwrap().map(|s| s.code()), Some(Some(0)));
    // Let the descendant go: it reads one byte of our stdin.
    child
        .child_mut()
        .stdin
        .take()
        .unwrap()
        .write_all(b"x")
        .unwrap();
}
