#![cfg(feature = "tokio")]
//! The pipe and systemd protocols through the async API, against the same
//! kind of children as `tests/pipe.rs` and `tests/systemd.rs` (small
//! Python programs that speak the protocols the way existing programs do)
//! and our own child side (`readyfd-test-compat`).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use readyfd::limits::PIPE_TEXT_LIMIT;
use readyfd::{Address, Protocol, ProtocolError, ReadyError, ReadyVia};
use tokio::process::Command;

use common::aio::{finish, spawn_with_stdin as spawn};
use common::{BOUND, COMPAT, pipe_py, pipe_wrapper, sd_py};

// ---- pipe -------------------------------------------------------------------

#[tokio::test]
async fn pipe_address_then_close_and_newline_are_ready() {
    let mut child = spawn(
        pipe_py("os.write(fd, b'127.0.0.1:41234')\nos.close(fd)\nsys.stdin.read()"),
        Protocol::Pipe,
    );
    assert_eq!(child.protocol(), Protocol::Pipe);
    assert!(child.channel().is_none());
    let r = child.wait_ready(BOUND).await.unwrap().clone();
    assert_eq!(r.via, ReadyVia::Closed);
    assert_eq!(r.ready.pid, child.id());
    assert_eq!(
        r.ready.get(""),
        Some(&Address::Tcp("127.0.0.1:41234".parse().unwrap()))
    );
    finish(child).await;

    let mut child = spawn(
        pipe_py("os.write(fd, b'/run/app.sock\\nignored')\nsys.stdin.read()"),
        Protocol::Pipe,
    );
    let r = child.wait_ready(BOUND).await.unwrap().clone();
    assert_eq!(r.via, ReadyVia::Newline);
    assert_eq!(
        r.ready.get(""),
        Some(&Address::Unix("/run/app.sock".into()))
    );
    finish(child).await;
}

#[tokio::test]
async fn pipe_flood_is_a_protocol_error() {
    let script = format!(
        "os.write(fd, b'x' * {})\nsys.stdin.read()",
        PIPE_TEXT_LIMIT + 1
    );
    let mut child = spawn(pipe_py(&script), Protocol::Pipe);
    match child.wait_ready(BOUND).await {
        Err(ReadyError::Protocol {
            source: ProtocolError::PipeFlood { limit },
            ..
        }) => assert_eq!(limit, PIPE_TEXT_LIMIT),
        other => panic!("{other:?}"),
    }
    child.kill().await.unwrap();
}

#[tokio::test]
async fn pipe_exit_or_crash_before_ready_is_an_exit_seen_at_once() {
    let t0 = Instant::now();
    // The fd stays open (inherited by nobody else): only the pidfd tells.
    let mut child = spawn(pipe_py("sys.exit(4)"), Protocol::Pipe);
    match child.wait_ready(BOUND).await {
        Err(ReadyError::Exited { status, .. }) => assert_eq!(status.code(), Some(4)),
        other => panic!("{other:?}"),
    }
    let mut child = spawn(
        pipe_py("os.kill(os.getpid(), signal.SIGKILL)"),
        Protocol::Pipe,
    );
    match child.wait_ready(BOUND).await {
        Err(ReadyError::Exited { status, .. }) => assert_eq!(status.signal(), Some(9)),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < BOUND / 2, "{:?}", t0.elapsed());
}

#[tokio::test]
async fn pipe_newline_written_just_before_exiting_counts() {
    let mut child = spawn(
        pipe_py("os.write(fd, b'done\\n')\nsys.exit(0)"),
        Protocol::Pipe,
    );
    let r = child.wait_ready(BOUND).await.unwrap();
    assert_eq!(r.via, ReadyVia::Newline);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

#[tokio::test]
async fn pipe_silent_child_times_out_and_is_killed() {
    let mut child = spawn(pipe_py("sys.stdin.read()"), Protocol::Pipe);
    match child.wait_ready(Duration::from_millis(300)).await {
        Err(ReadyError::Timeout { killed, .. }) => assert!(killed),
        other => panic!("{other:?}"),
    }
    assert!(child.try_wait().unwrap().is_some(), "killed and reaped");
}

#[tokio::test]
async fn pipe_wrapper_that_exits_zero_hands_over_to_its_descendant() {
    // `sh -c 'server &'`: the shell exits 0 at once; the server writes its
    // newline only after the shell is gone.
    let mut child = spawn(pipe_wrapper(), Protocol::Pipe);
    let r = child.wait_ready(BOUND).await.unwrap().clone();
    assert_eq!(r.via, ReadyVia::Newline);
    let Some(Address::Text(pid)) = r.ready.get("") else {
        panic!("{:?}", r.ready)
    };
    assert_ne!(pid.parse::<u32>().unwrap(), child.id(), "the descendant");
    assert_eq!(child.try_wait().unwrap().map(|s| s.code()), Some(Some(0)));
    // Let the descendant go: it reads one byte of our stdin.
    let stdin = child.stdio_mut().stdin.take().unwrap();
    nix::unistd::write(stdin.into_owned_fd().unwrap(), b"x").unwrap();
}

// ---- systemd ----------------------------------------------------------------

#[tokio::test]
async fn systemd_extend_timeout_usec_extends_the_deadline() {
    let mut cmd = Command::new(COMPAT);
    cmd.arg("systemd-extend").stdout(Stdio::piped());
    let mut child = spawn(cmd, Protocol::Systemd);
    // The request is queued before the wait starts, so the wait's own
    // timeout is shorter than the child's delay whatever the machine's
    // speed. (A blocking read of one short line, before any wait.)
    let stdout = child.stdio_mut().stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(std::fs::File::from(stdout.into_owned_fd().unwrap())),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "extending");
    let r = child
        .wait_ready(Duration::from_millis(300))
        .await
        .unwrap()
        .clone();
    assert_eq!(r.ready.status.as_deref(), Some("extended"));
    assert!(r.elapsed > Duration::from_secs(1), "{:?}", r.elapsed);
    finish(child).await;
}

#[tokio::test]
async fn systemd_datagrams_with_status_and_mainpid() {
    let mut child = spawn(
        sd_py(
            r#"
notify(b"STATUS=loading")
notify(b"STATUS=almost\n")
notify(b"READY=1\nSTATUS=serving\nMAINPID=%d\n" % os.getpid())
sys.stdin.read()
"#,
        ),
        Protocol::Systemd,
    );
    let r = child.wait_ready(BOUND).await.unwrap().clone();
    assert_eq!(r.via, ReadyVia::Notify);
    assert_eq!(r.ready.pid, child.id());
    assert_eq!(r.ready.status.as_deref(), Some("serving"));
    assert_eq!(child.last_status().as_deref(), Some("serving"));
    let state = child.notify_state().unwrap();
    assert_eq!(state.accepted, 3);
    assert_eq!(state.main_pid, Some(child.id()));
    finish(child).await;
}

#[tokio::test]
async fn systemd_junk_is_ignored_and_a_later_ready_counts() {
    let mut child = spawn(
        sd_py(
            r#"
notify(b"\xff\xfe garbage")
notify(b"=\n==\nNOKEY\nREADY=0\nX_UNKNOWN=1")
notify(b"x" * 5000)
notify(b"READY=1")
sys.stdin.read()
"#,
        ),
        Protocol::Systemd,
    );
    let r = child.wait_ready(BOUND).await.unwrap();
    assert_eq!(r.via, ReadyVia::Notify);
    finish(child).await;
}

#[tokio::test]
async fn systemd_stopping_before_ready_is_a_failure_and_an_exit_is_an_exit() {
    let mut child = spawn(
        sd_py("notify(b\"ERRNO=2\\nSTOPPING=1\")\nsys.stdin.read()"),
        Protocol::Systemd,
    );
    match child.wait_ready(BOUND).await {
        Err(ReadyError::Failed { errno, .. }) => assert_eq!(errno, Some(2)),
        other => panic!("{other:?}"),
    }
    child.kill().await.unwrap();

    let t0 = Instant::now();
    let mut child = spawn(
        sd_py("notify(b\"STATUS=loading\")\nos.kill(os.getpid(), signal.SIGKILL)"),
        Protocol::Systemd,
    );
    match child.wait_ready(BOUND).await {
        Err(ReadyError::Exited {
            status,
            last_status,
            ..
        }) => {
            assert_eq!(status.signal(), Some(9));
            assert_eq!(last_status.as_deref(), Some("loading"));
        }
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < BOUND / 2, "{:?}", t0.elapsed());
}

#[tokio::test]
async fn systemd_silent_child_times_out_and_is_killed() {
    let mut child = spawn(sd_py("sys.stdin.read()"), Protocol::Systemd);
    match child.wait_ready(Duration::from_millis(300)).await {
        Err(ReadyError::Timeout { killed, .. }) => assert!(killed),
        other => panic!("{other:?}"),
    }
    assert!(child.try_wait().unwrap().is_some(), "killed and reaped");
}

// ---- our own child side, under each protocol ------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_child_side_under_every_async_parent() {
    for protocol in [Protocol::Native, Protocol::Pipe, Protocol::Systemd] {
        let mut cmd = Command::new(COMPAT);
        cmd.arg("serve");
        let mut child = spawn(cmd, protocol);
        let r = child.wait_ready(BOUND).await.unwrap().clone();
        let Some(Address::Tcp(addr)) = r.ready.get("http").or(r.ready.get("")).cloned() else {
            panic!("{protocol}: no address: {:?}", r.ready)
        };
        let conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut report = Vec::new();
        loop {
            conn.readable().await.unwrap();
            let mut buf = [0u8; 512];
            match conn.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    report.extend_from_slice(&buf[..n]);
                    if report.ends_with(b"\n") {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let report = String::from_utf8(report).unwrap();
        assert!(
            report.starts_with(&format!("protocol={} ", protocol.name())),
            "{protocol}: {report}"
        );
        finish(child).await;
    }
}
