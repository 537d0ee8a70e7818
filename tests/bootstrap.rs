//! Serving the child's requests while waiting for it (issue 13): a handle on
//! the channel (`ReadyChild::channel`, a cheap clone) serves on a thread or
//! task while `wait_ready` and `stop` take the `ReadyChild` by `&mut`, and
//! the serving loop ends when the channel closes, without polling. The
//! blocking cases run the `bootstrap` example's own serving loop
//! (`examples/bootstrap/serve.rs`) against the helper child's `bootstrap`
//! role, which asks for the example's configuration and secret.

mod common;

#[path = "../examples/bootstrap/serve.rs"]
mod bootstrap;

use std::sync::mpsc;

use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use readyfd::{ChannelError, CloseReason};

use bootstrap::Config;
use common::{BOUND, spawn, stopped_cleanly};

fn config() -> Config {
    Config {
        listen: "127.0.0.1:8080".into(),
        workers: 4,
    }
}

fn secret(name: &str) -> Option<String> {
    (name == "db-password").then(|| "hunter2".to_string())
}

#[test]
fn a_thread_serves_config_and_secret_while_wait_ready_runs() {
    let mut child = spawn("bootstrap");
    let ch = child.channel().unwrap();
    let server = std::thread::spawn(move || bootstrap::serve(&ch, &config(), secret));
    let r = child.wait_ready(BOUND).unwrap();
    assert_eq!(r.ready.status.as_deref(), Some("127.0.0.1:8080 4 hunter2"));
    assert!(stopped_cleanly(child.stop(BOUND).unwrap().status));
    // `stop` closed the channel: the serving loop ended by itself.
    assert_eq!(server.join().unwrap(), 2);
}

#[test]
fn dropping_the_ready_child_ends_a_thread_blocked_in_recv() {
    let mut child = spawn("ready");
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    let (tx, rx) = mpsc::channel();
    let (blocked_tx, blocked) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        blocked_tx.send(()).unwrap();
        tx.send(ch.recv().map(|_| ())).unwrap();
    });
    blocked.recv_timeout(BOUND).unwrap();
    let pid = child.id();
    // The handle does not keep the channel open: the `ReadyChild` owns it.
    drop(child);
    match rx.recv_timeout(BOUND) {
        Ok(Err(ChannelError::Closed(CloseReason::Local))) => {}
        other => panic!("{other:?}"),
    }
    waiter.join().unwrap();
    // The child's own `recv` saw our Goodbye and it exited: reap it.
    waitpid(Pid::from_raw(pid as i32), None).unwrap();
}

#[test]
fn dropping_a_handle_leaves_the_channel_open() {
    let mut child = spawn("ready");
    child.wait_ready(BOUND).unwrap();
    let handle = child.channel().unwrap();
    assert!(!handle.is_owner());
    drop(handle);
    child.channel().unwrap().ping(BOUND).unwrap();
    assert!(stopped_cleanly(child.stop(BOUND).unwrap().status));
}

#[test]
fn a_request_the_loop_cannot_serve_is_refused_not_left_waiting() {
    // The serving loop answers what it cannot serve with an error, and
    // keeps serving: the child sees the refusal, not a timeout.
    let mut child = spawn("ready");
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    let server = std::thread::spawn(move || bootstrap::serve(&ch, &config(), |_| None));
    // The helper's `AskParent` asks us for "secret please", which is not an
    // `Ask`: a bad request, reported back to us.
    let ch = child.channel().unwrap();
    let answer: Result<String, String> = ch.request(&common::TestReq::AskParent).unwrap();
    assert!(answer.is_err(), "{answer:?}");
    assert!(stopped_cleanly(child.stop(BOUND).unwrap().status));
    assert_eq!(server.join().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_serves_the_childs_request_while_wait_ready_runs() {
    let mut child = common::aio::spawn("config-first");
    let ch = child.channel().unwrap();
    let server = tokio::spawn(async move {
        let mut answered = 0;
        while let Ok(m) = ch.recv().await {
            if let readyfd::Incoming::Request(req) = m {
                assert_eq!(req.decode::<String>().unwrap(), "config");
                req.respond(&"mode=fast").unwrap();
                answered += 1;
            }
        }
        answered
    });
    let r = child.wait_ready(BOUND).await.unwrap();
    assert_eq!(r.ready.status.as_deref(), Some("mode=fast"));
    assert!(stopped_cleanly(child.stop(BOUND).await.unwrap().status));
    assert_eq!(server.await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_async_ready_child_ends_a_task_in_recv() {
    let mut child = common::aio::spawn("ready");
    child.wait_ready(BOUND).await.unwrap();
    let ch = child.channel().unwrap();
    assert!(!ch.is_owner());
    let waiter = tokio::spawn(async move { ch.recv().await.map(|_| ()) });
    let pid = child.id();
    drop(child);
    match tokio::time::timeout(BOUND, waiter).await {
        Ok(Ok(Err(ChannelError::Closed(_)))) => {}
        other => panic!("{other:?}"),
    }
    // The child saw our Goodbye and exits; tokio's orphan reaper may have
    // reaped it already (ECHILD), or we do.
    let reaped = tokio::task::spawn_blocking(move || waitpid(Pid::from_raw(pid as i32), None))
        .await
        .unwrap();
    assert!(
        matches!(reaped, Ok(_) | Err(nix::errno::Errno::ECHILD)),
        "{reaped:?}"
    );
}
