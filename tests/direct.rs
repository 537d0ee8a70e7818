//! The direct channel (`DirectChannel`) with real processes: the
//! application's own thread does all the I/O, on either side or both.
//!
//! The helper roles are in `tests/helpers/child/direct_roles.rs`:
//! `direct-echo` (a child that takes its channel direct and echoes),
//! `direct-early` (a child that sends messages before the parent can
//! switch) and `direct-hostile` (a valid start, then bad bytes).

mod common;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use readyfd::proto::{FrameError, SessionError};
use readyfd::{
    ChannelError, CloseReason, DirectChannel, DirectError, Incoming, ReadyChild, ReadyCommand,
    StopVia,
};

use common::{BOUND, helper};

/// One test at a time: one of them counts this process's fds.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn ready(role: &str, args: &[&str]) -> ReadyChild {
    let mut cmd = helper(role);
    cmd.args(args);
    let mut child = ReadyCommand::new(cmd).process_group(true).spawn().unwrap();
    child.wait_ready(BOUND).unwrap();
    child
}

/// Runs `f` on a thread and fails the test if it does not end within
/// `bound` (instead of hanging the run).
fn bounded<T: Send + 'static>(bound: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(bound)
        .expect("the call did not end within its bound")
}

fn pipe_holding(i: u32) -> OwnedFd {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    std::io::Write::write_all(&mut std::fs::File::from(w), &i.to_le_bytes()).unwrap();
    r
}

fn content(fd: OwnedFd) -> u32 {
    let mut v = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut v).unwrap();
    u32::from_le_bytes(v.try_into().expect("4 bytes"))
}

fn next_note(d: &mut DirectChannel) -> Vec<u8> {
    match d.recv_timeout(BOUND).unwrap() {
        Some(Incoming::Notify(n)) => n.body().to_vec(),
        other => panic!("expected a notification, got {other:?}"),
    }
}

/// Round trips both ways, typed and raw, with fds and a ping, over a
/// direct channel on each side.
fn exercise_both_direct(d: &mut DirectChannel) {
    let back: String = d.request(&"hello".to_string()).unwrap();
    assert_eq!(back, "hello");
    let back: Vec<u64> = d.request_timeout(&vec![1u64, 2, 3], BOUND).unwrap();
    assert_eq!(back, [1, 2, 3]);
    let page: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(d.request_bytes(&page).unwrap(), page);
    let (body, fds) = d
        .request_bytes_with_fds(b"fds", vec![pipe_holding(7), pipe_holding(8)])
        .unwrap();
    assert_eq!(&body[..], b"fds");
    assert_eq!(fds.into_iter().map(content).collect::<Vec<_>>(), [7, 8]);
    d.ping(BOUND).unwrap();
    // Child to parent: the child asks while the parent waits in `recv`.
    d.notify_bytes(b"ask-parent").unwrap();
    match d.recv_timeout(BOUND).unwrap() {
        Some(Incoming::Request(r)) => {
            assert_eq!(&r.body()[..], b"from the child");
            r.respond_bytes(b"secret").unwrap();
        }
        other => panic!("expected the child's request, got {other:?}"),
    }
    assert_eq!(next_note(d), b"answer: secret");
    d.notify_bytes(b"echo me").unwrap();
    assert_eq!(next_note(d), b"echo me");
}

#[test]
fn round_trips_both_ways_with_both_sides_direct() {
    let _serial = serial();
    for when in ["after", "before"] {
        let mut child = ready("direct-echo", &[when]);
        let mut d = child.take_direct().unwrap();
        exercise_both_direct(&mut d);
        drop(d);
        // The child's recv ends with the channel: it exits 0.
        let status = child.wait_timeout(BOUND).unwrap().expect("exited");
        assert!(status.success(), "{when}: {status:?}");
    }
}

#[test]
fn parent_direct_child_on_the_background_channel() {
    let _serial = serial();
    let mut child = ready("bytes-echo", &[]);
    let mut d = child.take_direct().unwrap();
    for body in [&b""[..], b"hello", &vec![9u8; 100_000]] {
        assert_eq!(d.request_bytes(body).unwrap(), body);
        d.notify_bytes(body).unwrap();
        assert_eq!(next_note(&mut d), body);
    }
    let (_, fds) = d
        .request_bytes_with_fds(b"x", vec![pipe_holding(3)])
        .unwrap();
    assert_eq!(fds.into_iter().map(content).collect::<Vec<_>>(), [3]);
    d.ping(BOUND).unwrap();
    drop(d);
    // No channel left to ask Shutdown: stop signals.
    let stopped = child.stop(BOUND).unwrap();
    assert!(common::stopped_cleanly(stopped.status), "{stopped:?}");
}

#[test]
fn child_direct_parent_on_the_background_channel() {
    let _serial = serial();
    let mut child = ready("direct-echo", &[]);
    let ch = child.channel().unwrap();
    let back: String = ch.request(&"hi".to_string()).unwrap();
    assert_eq!(back, "hi");
    ch.ping(BOUND).unwrap();
    ch.notify_bytes(b"ask-parent").unwrap();
    match ch.recv_timeout(BOUND).unwrap() {
        Some(Incoming::Request(r)) => r.respond_bytes(b"from a thread").unwrap(),
        other => panic!("{other:?}"),
    }
    match ch.recv_timeout(BOUND).unwrap() {
        Some(Incoming::Notify(n)) => assert_eq!(&n.body()[..], b"answer: from a thread"),
        other => panic!("{other:?}"),
    }
    // Shutdown over the background channel reaches the direct child (in
    // its `recv`), which acknowledges it and raises SIGTERM on itself (the
    // default policy).
    let stopped = child.stop(BOUND).unwrap();
    assert_eq!(stopped.via, StopVia::Shutdown, "{stopped:?}");
    assert!(common::stopped_cleanly(stopped.status), "{stopped:?}");
}

#[test]
fn a_direct_child_under_the_deliver_policy_gets_shutdown_in_recv() {
    let _serial = serial();
    let mut child = ready("direct-echo", &["deliver"]);
    // The child answers Shutdown itself (from its `recv`) and exits 0.
    let stopped = child.stop(BOUND).unwrap();
    assert_eq!(stopped.via, StopVia::Shutdown, "{stopped:?}");
    assert!(stopped.status.success(), "{stopped:?}");
}

#[test]
fn messages_queued_before_the_switch_are_not_lost() {
    let _serial = serial();
    let mut child = ready("direct-early", &[]);
    // Everything the child sent came before its Ready, so the background
    // channel has read and queued it by the time wait_ready returned.
    let mut d = child.take_direct().unwrap();
    for i in 0..3u32 {
        match d.try_recv().unwrap() {
            Some(Incoming::Notify(n)) => assert_eq!(&n.body()[..], &i.to_le_bytes()),
            other => panic!("notification {i}: {other:?}"),
        }
    }
    // The request queued before the switch is answered through the direct
    // channel.
    match d.try_recv().unwrap() {
        Some(Incoming::Request(r)) => {
            assert_eq!(&r.body()[..], b"early");
            r.respond_bytes(b"late but here").unwrap();
        }
        other => panic!("the early request: {other:?}"),
    }
    assert_eq!(next_note(&mut d), b"got: late but here");
    drop(d);
    let status = child.wait_timeout(BOUND).unwrap().expect("exited");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_peer_that_crashes_mid_request_is_a_typed_error() {
    let _serial = serial();
    let mut child = ready("direct-echo", &[]);
    let mut d = child.take_direct().unwrap();
    match d.request_bytes(b"crash") {
        Err(ChannelError::Closed(CloseReason::PeerClosed)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(d.closed(), Some(CloseReason::PeerClosed));
    // Later calls fail the same way, at once.
    assert!(matches!(
        d.request_bytes(b"again"),
        Err(ChannelError::Closed(_))
    ));
    let status = child.wait_timeout(BOUND).unwrap().expect("exited");
    assert_eq!(status.code(), Some(5));
}

#[test]
fn a_grandchild_holding_the_socket_does_not_hang_a_request() {
    let _serial = serial();
    let mut child = ready("direct-echo", &[]);
    let d = child.take_direct().unwrap();
    let t0 = Instant::now();
    let (r, d) = bounded(BOUND, move || {
        let mut d = d;
        (d.request_bytes(b"die-leaving-grandchild"), d)
    });
    let took = t0.elapsed();
    match r {
        Err(ChannelError::Closed(CloseReason::PeerClosed)) => {}
        other => panic!("{other:?}"),
    }
    // Noticed at a tick after the exit, not at a timeout.
    assert!(
        took < readyfd::limits::DIRECT_TICK * 20,
        "took {took:?} to notice the child's death"
    );
    // A send larger than the socket takes does not wait for room that the
    // grandchild, which never reads, would never make.
    let d = bounded(Duration::from_secs(10), move || {
        let mut d = d;
        let _ = d.notify_bytes(&vec![0u8; 8 << 20]);
        d
    });
    drop(d);
    let status = child.wait_timeout(BOUND).unwrap().expect("exited");
    assert_eq!(status.code(), Some(3));
    // The grandchild is still in the group: end it.
    common::kill_group(child.id());
}

#[test]
fn a_child_that_died_before_the_switch_leaving_a_grandchild_does_not_hang_a_request() {
    let _serial = serial();
    let mut child = ready("direct-echo", &[]);
    // The child dies while the background channel serves us (which notes
    // its exit); a grandchild keeps the socket open.
    let ch = child.channel().unwrap();
    ch.notify_bytes(b"die-leaving-grandchild").unwrap();
    drop(ch);
    let status = child.wait_timeout(BOUND).unwrap().expect("exited");
    assert_eq!(status.code(), Some(3));
    let d = child.take_direct().unwrap();
    let t0 = Instant::now();
    let (r, d) = bounded(Duration::from_secs(10), move || {
        let mut d = d;
        (d.request_bytes(b"anyone?"), d)
    });
    match r {
        Err(ChannelError::Closed(CloseReason::PeerClosed)) => {}
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < readyfd::limits::DIRECT_TICK * 20);
    drop(d);
    common::kill_group(child.id());
}

#[test]
fn large_frames_both_ways_at_once_do_not_deadlock() {
    let _serial = serial();
    const LEN: usize = 8 << 20;
    // Both sides direct: the child writes an 8 MiB notification while the
    // parent writes an 8 MiB request; each reads while it waits for room.
    let mut child = ready("direct-echo", &[]);
    let d = child.take_direct().unwrap();
    let d = bounded(BOUND, move || {
        let mut d = d;
        assert_eq!(&d.request_bytes(b"big-notify").unwrap()[..], b"ok");
        let body = vec![3u8; LEN];
        let back = d.request_bytes(&body).unwrap();
        assert!(back == body, "the echo differs");
        match d.recv_timeout(BOUND).unwrap() {
            Some(Incoming::Notify(n)) => assert!(n.body().len() == LEN && n.body()[0] == 7),
            other => panic!("{other:?}"),
        }
        d
    });
    drop(d);
    assert!(child.wait_timeout(BOUND).unwrap().is_some());
    // The parent on the background channel, the child direct.
    let mut child = ready("direct-echo", &[]);
    let ch = child.channel().unwrap();
    bounded(BOUND, move || {
        assert_eq!(&ch.request_bytes(b"big-notify").unwrap()[..], b"ok");
        let body = vec![4u8; LEN];
        assert!(ch.request_bytes(&body).unwrap() == body);
        match ch.recv_timeout(BOUND).unwrap() {
            Some(Incoming::Notify(n)) => assert_eq!(n.body().len(), LEN),
            other => panic!("{other:?}"),
        }
    });
    let stopped = child.stop(BOUND).unwrap();
    assert_eq!(stopped.via, StopVia::Shutdown, "{stopped:?}");
    assert!(common::stopped_cleanly(stopped.status), "{stopped:?}");
}

#[test]
fn hostile_bytes_after_the_switch_are_typed_errors() {
    let _serial = serial();
    for kind in ["oversize", "garbage"] {
        let mut child = ready("direct-hostile", &[kind]);
        let mut d = child.take_direct().unwrap();
        let e = match d.request_bytes(b"anything") {
            Err(ChannelError::Closed(CloseReason::Protocol(e))) => e,
            other => panic!("{kind}: {other:?}"),
        };
        let expected = match kind {
            "oversize" => matches!(
                e,
                SessionError::Frame(FrameError::TooLarge {
                    len: 0xffff_ffff,
                    ..
                })
            ),
            _ => matches!(
                e,
                SessionError::Frame(FrameError::TooLarge { .. }) | SessionError::Decode(_)
            ),
        };
        assert!(expected, "{kind}: {e:?}");
        assert!(!e.to_string().is_empty());
        assert!(matches!(d.closed(), Some(CloseReason::Protocol(_))));
        drop(d);
        child.kill().unwrap();
        common::kill_group(child.id());
    }
}

#[test]
fn switching_is_refused_with_a_typed_error_and_changes_nothing() {
    let _serial = serial();
    let mut child = ReadyCommand::new(helper("direct-echo")).spawn().unwrap();
    assert_eq!(child.take_direct().unwrap_err(), DirectError::NotReady);
    child.wait_ready(BOUND).unwrap();
    let handle = child.channel().unwrap();
    assert_eq!(child.take_direct().unwrap_err(), DirectError::Shared);
    // The channel works on as before, through the handle and the child.
    assert_eq!(&handle.request_bytes(b"still").unwrap()[..], b"still");
    // A handle is not the owner.
    let e = handle.clone().into_direct().unwrap_err();
    assert_eq!(e.error, DirectError::NotOwner);
    assert!(!e.into_inner().is_owner());
    drop(handle);
    let mut d = child.take_direct().unwrap();
    assert_eq!(child.take_direct().unwrap_err(), DirectError::AlreadyTaken);
    assert!(child.channel().is_none());
    assert_eq!(&d.request_bytes(b"direct").unwrap()[..], b"direct");
    // Stopping: Shutdown through the direct channel, then `stop` waits.
    d.shutdown(BOUND).unwrap();
    drop(d);
    let stopped = child.stop(BOUND).unwrap();
    assert!(common::stopped_cleanly(stopped.status), "{stopped:?}");
}

#[test]
fn a_direct_session_leaves_no_fd_behind() {
    let _serial = serial();
    let before = common::open_fds();
    {
        let mut child = ready("direct-echo", &[]);
        let mut d = child.take_direct().unwrap();
        exercise_both_direct(&mut d);
        drop(d);
        assert!(child.wait_timeout(BOUND).unwrap().is_some());
    }
    let after = common::open_fds();
    assert_eq!(before, after, "fds left open");
}
