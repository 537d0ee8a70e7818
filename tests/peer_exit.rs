//! After readiness, the process that said `Ready` is the peer: when it
//! exits, the parent's channel delivers what it wrote before and then ends
//! as if it had closed, even while another process (a grandchild that
//! inherited its socket, a shell's background job) keeps its end open.
//! A wrapper's exit ends nothing. Both drivers, real processes (roles in
//! `tests/helpers/child/exit_roles.rs`), and no fd left afterwards.

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::sync::mpsc;

use readyfd::{ChannelError, ChannelOptions, CloseReason, Incoming, ReadyChild, ReadyCommand};

use common::{BOUND, CHILD, helper, kill_group, open_fds};

/// How many notifications the `flood-die` request makes the child send.
const FLOOD: u32 = 32;

/// One test at a time: each counts this process's fds.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` on a thread and fails the test if it does not end within
/// `BOUND` (instead of hanging the run).
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    bounded_within(BOUND, f)
}

/// [`bounded`], with a bound of `bound`.
fn bounded_within<T: Send + 'static>(
    bound: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(bound)
        .expect("the call did not end within its bound: it hangs")
}

/// Fails with what the fds open beyond `before` are. An fd that is gone
/// by the time it is looked at is not left behind: the listing's own
/// directory fd, when a thread of an earlier test held a number for a
/// moment while `before` was listed.
fn no_fd_left(before: &[String]) {
    let now = open_fds();
    let left: Vec<String> = now
        .iter()
        .filter(|fd| !before.contains(fd))
        .filter_map(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
            Some(format!("{fd} -> {}", target.display()))
        })
        .collect();
    assert!(left.is_empty(), "fds left behind: {left:?}");
}

fn is_peer_closed<T: std::fmt::Debug>(r: Result<T, ChannelError>) {
    match r {
        Err(ChannelError::Closed(CloseReason::PeerClosed)) => {}
        other => panic!("expected Closed(PeerClosed), got {other:?}"),
    }
}

/// `sh -c 'readyfd-test-child exit-serve $$ & exit 0'`: a wrapper that
/// starts the real child and exits 0; the child says `Ready` with its own
/// pid once the wrapper is gone.
fn wrapper() -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", r#""$0" exit-serve $$ & exit 0"#, CHILD]);
    cmd
}

fn spawn(cmd: Command) -> ReadyChild {
    ReadyCommand::new(cmd)
        .process_group(true)
        .spawn()
        .expect("spawn")
}

/// Ends the child (reaped, with `code`) and what it left in its group.
fn finish(mut child: ReadyChild, code: i32) {
    let status = child.wait_timeout(BOUND).unwrap().expect("exited");
    assert_eq!(status.code(), Some(code), "{status:?}");
    kill_group(child.id());
    drop(child);
}

#[test]
fn a_request_without_timeout_to_a_child_that_died_leaving_a_grandchild_fails_closed() {
    let _serial = serial();
    let fds = open_fds();
    let mut child = spawn(helper("exit-serve"));
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    // Answered while it lives.
    assert_eq!(&ch.request_bytes(b"hi").unwrap()[..], b"hi");
    // It dies without answering; its grandchild keeps the socket open, so
    // no end of stream comes: only its exit can end the wait.
    let ch2 = ch.clone();
    is_peer_closed(bounded(move || ch2.request_bytes(b"die")));
    // Later calls fail the same way at once.
    is_peer_closed(ch.request_bytes(b"anyone?"));
    is_peer_closed(ch.recv());
    is_peer_closed(ch.notify_bytes(b"x"));
    drop(ch);
    finish(child, 3);
    no_fd_left(&fds);
}

#[test]
fn what_a_child_wrote_just_before_dying_is_delivered_before_the_end() {
    let _serial = serial();
    let fds = open_fds();
    let mut child = spawn(helper("exit-serve"));
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    let ch2 = ch.clone();
    let answer = bounded(move || ch2.request_bytes(b"last-words"));
    assert_eq!(&answer.unwrap()[..], b"last words");
    // The notification it sent after the answer, then the end.
    match bounded({
        let ch = ch.clone();
        move || ch.recv()
    }) {
        Ok(Incoming::Notify(n)) => assert_eq!(&n.body()[..], b"bye"),
        other => panic!("{other:?}"),
    }
    is_peer_closed(bounded({
        let ch = ch.clone();
        move || ch.recv()
    }));
    is_peer_closed(ch.request_bytes(b"anyone?"));
    drop(ch);
    finish(child, 3);
    no_fd_left(&fds);
}

#[test]
fn a_request_still_being_written_when_the_child_dies_fails_closed() {
    let _serial = serial();
    let fds = open_fds();
    let mut child = spawn(helper("exit-serve"));
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    assert_eq!(
        &ch.request_bytes(b"die-when-flooded").unwrap()[..],
        b"armed"
    );
    // The child dies once 64 KiB of this 8 MiB request arrived: the
    // requester is writing it, or waiting for room that the grandchild,
    // which never reads, would never make.
    let ch2 = ch.clone();
    is_peer_closed(bounded(move || ch2.request_bytes(&vec![0u8; 8 << 20])));
    drop(ch);
    finish(child, 3);
    no_fd_left(&fds);
}

/// The same with nobody left holding the child's end: the write fails
/// (`EPIPE`) as the exit is seen, and whichever comes first, the request
/// fails `PeerClosed`, never with the write's `io::Error` (a peer that
/// closed its end is a peer that closed). Several times, as the order
/// of the two differs from run to run.
#[test]
fn a_request_being_written_when_the_child_exits_alone_fails_closed() {
    let _serial = serial();
    let fds = open_fds();
    for _ in 0..5 {
        let mut child = spawn(helper("exit-serve"));
        child.wait_ready(BOUND).unwrap();
        let ch = child.channel().unwrap();
        assert_eq!(
            &ch.request_bytes(b"exit-when-flooded").unwrap()[..],
            b"armed"
        );
        let ch2 = ch.clone();
        is_peer_closed(bounded(move || ch2.request_bytes(&vec![0u8; 8 << 20])));
        is_peer_closed(ch.notify_bytes(b"x"));
        drop(ch);
        finish(child, 3);
    }
    no_fd_left(&fds);
}

/// [`a_request_being_written_when_the_child_exits_alone_fails_closed`]
/// over a direct channel.
#[test]
fn direct_a_request_being_written_when_the_child_exits_alone_fails_closed() {
    let _serial = serial();
    let fds = open_fds();
    for _ in 0..5 {
        let mut child = spawn(helper("exit-serve"));
        child.wait_ready(BOUND).unwrap();
        let mut d = child.take_direct().unwrap();
        assert_eq!(
            &d.request_bytes(b"exit-when-flooded").unwrap()[..],
            b"armed"
        );
        let mut d = bounded(move || {
            is_peer_closed(d.request_bytes(&vec![0u8; 8 << 20]));
            d
        });
        is_peer_closed(d.notify_bytes(b"x"));
        drop(d);
        finish(child, 3);
    }
    no_fd_left(&fds);
}

#[test]
fn a_full_recv_queue_at_the_exit_loses_nothing_and_the_end_follows() {
    let _serial = serial();
    let fds = open_fds();
    let mut child = ReadyCommand::new(helper("exit-serve"))
        .process_group(true)
        .channel_options(ChannelOptions::new().max_incoming(4))
        .spawn()
        .unwrap();
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    assert_eq!(&ch.request_bytes(b"flood-die").unwrap()[..], b"flooding");
    // It dies with 32 notifications sent; reading stops at 4 queued, and
    // the rest waits in the socket until they are taken.
    let pidfd = common::pidfd(child.id());
    assert!(common::ended(&pidfd), "the child did not exit");
    drop(pidfd);
    for i in 0..FLOOD {
        match bounded({
            let ch = ch.clone();
            move || ch.recv()
        }) {
            Ok(Incoming::Notify(n)) => assert_eq!(&n.body()[..], &i.to_le_bytes()),
            other => panic!("notification {i}: {other:?}"),
        }
    }
    is_peer_closed(bounded({
        let ch = ch.clone();
        move || ch.recv()
    }));
    drop(ch);
    finish(child, 3);
    no_fd_left(&fds);
}

/// The same with a `DirectChannel`, whose calls watch the exit
/// themselves: the exit is seen while the queue is full, and the end must
/// still follow once the queue has been emptied.
#[test]
fn direct_a_full_recv_queue_at_the_exit_loses_nothing_and_the_end_follows() {
    let _serial = serial();
    let fds = open_fds();
    let mut child = ReadyCommand::new(helper("exit-serve"))
        .process_group(true)
        .channel_options(ChannelOptions::new().max_incoming(4))
        .spawn()
        .unwrap();
    child.wait_ready(BOUND).unwrap();
    let mut d = child.take_direct().unwrap();
    assert_eq!(&d.request_bytes(b"flood-die").unwrap()[..], b"flooding");
    let pidfd = common::pidfd(child.id());
    assert!(common::ended(&pidfd), "the child did not exit");
    drop(pidfd);
    // A send that waits for room (nobody reads: the grandchild holds the
    // socket) reads meanwhile until the queue is full, and may see the
    // exit then. Queued, or refused: either way not delivered, and not
    // what this test is about.
    let (_, mut d) = bounded(move || (d.notify_bytes(&vec![0u8; 8 << 20]), d));
    let mut d = bounded(move || {
        for i in 0..FLOOD {
            match d.recv() {
                Ok(Incoming::Notify(n)) => assert_eq!(&n.body()[..], &i.to_le_bytes()),
                other => panic!("notification {i}: {other:?}"),
            }
        }
        d
    });
    // The grandchild holds the socket for `BOUND`, so the end must come
    // from the exit, well before the grandchild's own end would bring it.
    let d = bounded_within(BOUND / 4, move || {
        is_peer_closed(d.recv());
        d
    });
    drop(d);
    finish(child, 3);
    no_fd_left(&fds);
}

#[test]
fn a_child_that_died_before_wait_ready_returned_still_ends_the_channel() {
    let _serial = serial();
    let fds = open_fds();
    let mut child = spawn(helper("exit-early"));
    // Its pidfd fires before readiness is even looked at: the exit is
    // first the verdict's business, and becomes the peer's end once the
    // `Ready` it sent is taken.
    let pidfd = common::pidfd(child.id());
    assert!(common::ended(&pidfd), "the child did not exit");
    drop(pidfd);
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    is_peer_closed(bounded(move || ch.request_bytes(b"anyone?")));
    finish(child, 3);
    no_fd_left(&fds);
}

#[test]
fn a_wrapper_exit_ends_nothing_the_exit_of_the_process_that_said_ready_does() {
    let _serial = serial();
    let fds = open_fds();
    let mut child = spawn(wrapper());
    let main = child.wait_ready(BOUND).unwrap().pid_mismatch();
    assert!(main.is_some(), "Ready came from the wrapper itself");
    // The wrapper exited 0 before `Ready` was sent; the channel works on.
    let status = child
        .wait_timeout(BOUND)
        .unwrap()
        .expect("the wrapper exited");
    assert_eq!(status.code(), Some(0));
    let ch = child.channel().unwrap();
    assert_eq!(
        &ch.request_bytes(b"still there").unwrap()[..],
        b"still there"
    );
    let ch2 = ch.clone();
    is_peer_closed(bounded(move || ch2.request_bytes(b"die")));
    drop(ch);
    kill_group(child.id());
    drop(child);
    no_fd_left(&fds);
}

/// The same through a `DirectChannel` taken after the wrapper's exit: it
/// watches the process that said `Ready`, as the channel it came from did.
#[test]
fn direct_after_a_wrapper_the_exit_of_the_process_that_said_ready_ends_it() {
    let _serial = serial();
    let fds = open_fds();
    let mut child = spawn(wrapper());
    let main = child.wait_ready(BOUND).unwrap().pid_mismatch();
    assert!(main.is_some(), "Ready came from the wrapper itself");
    let status = child
        .wait_timeout(BOUND)
        .unwrap()
        .expect("the wrapper exited");
    assert_eq!(status.code(), Some(0));
    let mut d = child.take_direct().unwrap();
    assert_eq!(
        &d.request_bytes(b"still there").unwrap()[..],
        b"still there"
    );
    // Its grandchild holds the socket for `BOUND`: the end must come from
    // the exit of the process that said `Ready`, well before.
    let d = bounded_within(BOUND / 4, move || {
        is_peer_closed(d.request_bytes(b"die"));
        d
    });
    drop(d);
    kill_group(child.id());
    drop(child);
    no_fd_left(&fds);
}

// ---- the same with the tokio API ----------------------------------------------

#[cfg(feature = "tokio")]
mod aio {
    use super::*;
    use readyfd::tokio::{ReadyChild, ReadyCommand};

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(BOUND, f)
            .await
            .expect("the call did not end within its bound: it hangs")
    }

    fn spawn(cmd: Command) -> ReadyChild {
        ReadyCommand::new(cmd)
            .process_group(true)
            .spawn()
            .expect("spawn")
    }

    async fn finish(mut child: ReadyChild, code: i32) {
        let status = child.wait_timeout(BOUND).await.unwrap().expect("exited");
        assert_eq!(status.code(), Some(code), "{status:?}");
        kill_group(child.id());
        drop(child);
    }

    /// Spawns and reaps one child with tokio once, so that the fds tokio
    /// opens for good on first use (its `SIGCHLD` pipe) are open before
    /// any count (as `tests/fds.rs` does).
    fn warm_tokio() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            common::current_thread().block_on(async {
                let status = tokio::process::Command::new("true").status().await;
                assert!(status.unwrap().success());
            });
        });
    }

    #[test]
    fn async_a_request_to_a_child_that_died_leaving_a_grandchild_fails_closed() {
        let _serial = serial();
        warm_tokio();
        let fds = open_fds();
        common::current_thread().block_on(async {
            let mut child = spawn(helper("exit-serve"));
            child.wait_ready(BOUND).await.unwrap();
            let ch = child.channel().unwrap();
            assert_eq!(&ch.request_bytes(b"hi").await.unwrap()[..], b"hi");
            is_peer_closed(within(ch.request_bytes(b"die")).await);
            is_peer_closed(ch.request_bytes(b"anyone?").await);
            is_peer_closed(within(ch.recv()).await);
            is_peer_closed(ch.notify_bytes(b"x").await);
            drop(ch);
            finish(child, 3).await;
        });
        no_fd_left(&fds);
    }

    #[test]
    fn async_what_a_child_wrote_just_before_dying_is_delivered_before_the_end() {
        let _serial = serial();
        warm_tokio();
        let fds = open_fds();
        common::current_thread().block_on(async {
            let mut child = spawn(helper("exit-serve"));
            child.wait_ready(BOUND).await.unwrap();
            let ch = child.channel().unwrap();
            let answer = within(ch.request_bytes(b"last-words")).await;
            assert_eq!(&answer.unwrap()[..], b"last words");
            match within(ch.recv()).await {
                Ok(Incoming::Notify(n)) => assert_eq!(&n.body()[..], b"bye"),
                other => panic!("{other:?}"),
            }
            is_peer_closed(within(ch.recv()).await);
            is_peer_closed(ch.request_bytes(b"anyone?").await);
            drop(ch);
            finish(child, 3).await;
        });
        no_fd_left(&fds);
    }

    #[test]
    fn async_a_request_still_being_written_when_the_child_dies_fails_closed() {
        let _serial = serial();
        warm_tokio();
        let fds = open_fds();
        common::current_thread().block_on(async {
            let mut child = spawn(helper("exit-serve"));
            child.wait_ready(BOUND).await.unwrap();
            let ch = child.channel().unwrap();
            let armed = within(ch.request_bytes(b"die-when-flooded")).await;
            assert_eq!(&armed.unwrap()[..], b"armed");
            is_peer_closed(within(ch.request_bytes(&vec![0u8; 8 << 20])).await);
            drop(ch);
            finish(child, 3).await;
        });
        no_fd_left(&fds);
    }

    #[test]
    fn async_a_request_being_written_when_the_child_exits_alone_fails_closed() {
        let _serial = serial();
        warm_tokio();
        let fds = open_fds();
        common::current_thread().block_on(async {
            for _ in 0..5 {
                let mut child = spawn(helper("exit-serve"));
                child.wait_ready(BOUND).await.unwrap();
                let ch = child.channel().unwrap();
                let armed = within(ch.request_bytes(b"exit-when-flooded")).await;
                assert_eq!(&armed.unwrap()[..], b"armed");
                is_peer_closed(within(ch.request_bytes(&vec![0u8; 8 << 20])).await);
                is_peer_closed(ch.notify_bytes(b"x").await);
                drop(ch);
                finish(child, 3).await;
            }
        });
        no_fd_left(&fds);
    }

    #[test]
    fn async_a_full_recv_queue_at_the_exit_loses_nothing_and_the_end_follows() {
        let _serial = serial();
        warm_tokio();
        let fds = open_fds();
        common::current_thread().block_on(async {
            let mut child = ReadyCommand::new(helper("exit-serve"))
                .process_group(true)
                .channel_options(ChannelOptions::new().max_incoming(4))
                .spawn()
                .unwrap();
            child.wait_ready(BOUND).await.unwrap();
            let ch = child.channel().unwrap();
            let first = within(ch.request_bytes(b"flood-die")).await.unwrap();
            assert_eq!(&first[..], b"flooding");
            let pidfd = common::pidfd(child.id());
            assert!(common::ended(&pidfd), "the child did not exit");
            drop(pidfd);
            for i in 0..FLOOD {
                match within(ch.recv()).await {
                    Ok(Incoming::Notify(n)) => assert_eq!(&n.body()[..], &i.to_le_bytes()),
                    other => panic!("notification {i}: {other:?}"),
                }
            }
            is_peer_closed(within(ch.recv()).await);
            drop(ch);
            finish(child, 3).await;
        });
        no_fd_left(&fds);
    }

    #[test]
    fn async_a_child_that_died_before_wait_ready_returned_still_ends_the_channel() {
        let _serial = serial();
        warm_tokio();
        let fds = open_fds();
        common::current_thread().block_on(async {
            let mut child = spawn(helper("exit-early"));
            let pidfd = common::pidfd(child.id());
            assert!(common::ended(&pidfd), "the child did not exit");
            drop(pidfd);
            child.wait_ready(BOUND).await.unwrap();
            let ch = child.channel().unwrap();
            is_peer_closed(within(ch.request_bytes(b"anyone?")).await);
            drop(ch);
            finish(child, 3).await;
        });
        no_fd_left(&fds);
    }

    #[test]
    fn async_a_wrapper_exit_ends_nothing_the_exit_of_the_process_that_said_ready_does() {
        let _serial = serial();
        warm_tokio();
        let fds = open_fds();
        common::current_thread().block_on(async {
            let mut child = spawn(wrapper());
            let main = child.wait_ready(BOUND).await.unwrap().pid_mismatch();
            assert!(main.is_some(), "Ready came from the wrapper itself");
            let status = child
                .wait_timeout(BOUND)
                .await
                .unwrap()
                .expect("the wrapper exited");
            assert_eq!(status.code(), Some(0));
            let ch = child.channel().unwrap();
            let back = ch.request_bytes(b"still there").await.unwrap();
            assert_eq!(&back[..], b"still there");
            is_peer_closed(within(ch.request_bytes(b"die")).await);
            drop(ch);
            kill_group(child.id());
            drop(child);
        });
        no_fd_left(&fds);
    }
}
