#![cfg(feature = "tokio")]
//! The async API (`readyfd::tokio`) with real child processes
//! (`tests/helpers/child`): the cases of `tests/native.rs`, driven from
//! tokio, against blocking children and against the async child role.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Instant;

use readyfd::tokio::{Incoming, ReadyCommand};
use readyfd::{Address, ChannelError, CloseReason, ReadyVia, RemoteErrorKind};

use common::aio::spawn;
use common::before_ready::{self, After};
use common::hostile;
use common::{AsyncReq, BOUND, TestReq, helper, stopped_cleanly};

#[tokio::test]
async fn ready_with_several_addresses_then_stop() {
    let mut child = spawn("ready");
    let r = child.wait_ready(BOUND).await.unwrap().clone();
    assert_eq!(r.via, ReadyVia::Message);
    assert_eq!(r.ready.pid, child.id());
    assert_eq!(r.pid_mismatch(), None);
    assert_eq!(r.ready.addresses.len(), 3);
    let Some(Address::Tcp(http)) = r.ready.get("http") else {
        panic!("no tcp address: {:?}", r.ready)
    };
    tokio::net::TcpStream::connect(http).await.unwrap();
    assert_eq!(r.ready.status.as_deref(), Some("serving"));
    assert_eq!(child.last_status().as_deref(), Some("serving"));
    // A second wait returns the same readiness.
    assert_eq!(child.wait_ready(BOUND).await.unwrap(), &r);
    let stopped = child.stop(BOUND).await.unwrap();
    // Acknowledged Shutdown, then its default policy raised SIGTERM: a
    // clean stop, which the status alone would not tell.
    assert_eq!(stopped.via, readyfd::StopVia::Shutdown, "{stopped:?}");
    let status = stopped.status;
    assert_eq!(
        status.signal(),
        Some(15),
        "default policy: SIGTERM: {status:?}"
    );

    let mut child = spawn("ready-deliver");
    child.wait_ready(BOUND).await.unwrap();
    let status = child.stop(BOUND).await.unwrap().status;
    assert!(
        status.success(),
        "Shutdown delivered, acknowledged, exit 0: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_both_ways_and_notifications() {
    let mut child = spawn("ready");
    child.wait_ready(BOUND).await.unwrap();
    let ch = child.channel().unwrap();
    let echoed: String = ch.request(&TestReq::Echo("héllo".into())).await.unwrap();
    assert_eq!(echoed, "héllo");
    let sum: u64 = ch.request(&TestReq::Add(40, 2)).await.unwrap();
    assert_eq!(sum, 42);
    // The child asks us back while we wait for its answer.
    let asking = tokio::spawn({
        let ch = ch.clone();
        async move {
            ch.request::<_, Result<String, String>>(&TestReq::AskParent)
                .await
        }
    });
    match ch.recv().await.unwrap() {
        Incoming::Request(req) => {
            assert_eq!(req.decode::<String>().unwrap(), "secret please");
            req.respond(&"s3cr3t").unwrap();
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(asking.await.unwrap().unwrap(), Ok("s3cr3t".to_string()));
    // Notifications from the child arrive in order, before the answer.
    let n: u32 = ch.request(&TestReq::Notify(5)).await.unwrap();
    assert_eq!(n, 5);
    for i in 0..5u32 {
        match ch.recv().await.unwrap() {
            Incoming::Notify(note) => assert_eq!(note.decode::<u32>().unwrap(), i),
            other => panic!("{other:?}"),
        }
    }
    // Our notification is echoed back.
    ch.notify(&77u32).await.unwrap();
    match ch.recv().await.unwrap() {
        Incoming::Notify(note) => assert_eq!(note.decode::<u32>().unwrap(), 77),
        other => panic!("{other:?}"),
    }
    // A remote failure and a body of the wrong type are typed errors.
    match ch.request::<_, u64>(&TestReq::Fail).await {
        Err(ChannelError::Remote(e)) => assert_eq!(e.kind, RemoteErrorKind::Failed),
        other => panic!("{other:?}"),
    }
    match ch.request::<_, u64>(&"not a TestReq").await {
        Err(ChannelError::Remote(e)) => assert_eq!(e.kind, RemoteErrorKind::BadRequest),
        other => panic!("{other:?}"),
    }
    match ch.request::<_, u64>(&TestReq::Echo("x".into())).await {
        Err(ChannelError::Decode { .. }) => {}
        other => panic!("{other:?}"),
    }
    ch.ping(BOUND).await.unwrap();
    assert!(stopped_cleanly(child.stop(BOUND).await.unwrap().status));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_over_one_channel_get_their_own_answers() {
    let mut child = spawn("ready");
    child.wait_ready(BOUND).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..64u64 {
        let ch = child.channel().unwrap();
        tasks.spawn(async move {
            for i in 0..50u64 {
                let sum: u64 = ch.request(&TestReq::Add(t * 1000, i)).await.unwrap();
                assert_eq!(sum, t * 1000 + i);
                let big =
                    format!("{t}:{i}:") + &"x".repeat((i as usize * 1997 + t as usize) % 70_000);
                let back: String = ch.request(&TestReq::Echo(big.clone())).await.unwrap();
                assert_eq!(back, big);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert!(stopped_cleanly(child.stop(BOUND).await.unwrap().status));
}

#[tokio::test]
async fn parent_hands_configuration_before_ready() {
    let mut child = spawn("config-first");
    match child.channel().unwrap().recv().await.unwrap() {
        Incoming::Request(req) => {
            assert_eq!(req.decode::<String>().unwrap(), "config");
            req.respond(&"mode=fast").unwrap();
        }
        other => panic!("{other:?}"),
    }
    let r = child.wait_ready(BOUND).await.unwrap();
    assert_eq!(r.ready.status.as_deref(), Some("mode=fast"));
    child.stop(BOUND).await.unwrap();
}

/// The table of `common::before_ready`, with the tokio driver.
#[tokio::test]
async fn children_that_end_or_hang_before_ready() {
    for case in before_ready::cases() {
        let mut child = ReadyCommand::new(case.command())
            .on_timeout(case.on_timeout)
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let first = child.wait_ready(case.timeout).await.map(|r| r.via);
        let took = t0.elapsed();
        let second = match case.after {
            After::AlreadyFailed => Some(child.wait_ready(BOUND).await.map(|r| r.via)),
            _ => None,
        };
        let exited = child.try_wait().unwrap().is_some();
        case.assert_seen(first, took, second, exited);
        let _ = child.kill().await;
    }
}

#[tokio::test]
async fn closing_without_a_word_while_alive_is_ready() {
    let mut child = spawn("close");
    let r = child.wait_ready(BOUND).await.unwrap();
    assert_eq!(r.via, ReadyVia::Closed);
    assert!(r.ready.addresses.is_empty());
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_wrapper_that_exits_zero_hands_readiness_to_its_descendant() {
    let mut child = spawn("fork-ready");
    let r = child.wait_ready(BOUND).await.unwrap().clone();
    assert_eq!(r.via, ReadyVia::Message);
    let claimed = r
        .pid_mismatch()
        .expect("the descendant reports its own pid");
    assert_ne!(claimed, child.id());
    child.channel().unwrap().shutdown(BOUND).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_children_get_typed_errors() {
    for (kind, check) in hostile::CASES {
        let mut cmd = helper("hostile");
        cmd.arg(kind);
        let mut child = ReadyCommand::new(cmd).spawn().unwrap();
        let ready = child.wait_ready(BOUND).await.map(|r| r.via);
        let closed = child.channel().unwrap().closed();
        hostile::assert_rejected(kind, check, ready, closed);
        child.kill().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_requests_fail_when_the_peer_dies() {
    let mut child = spawn("ready");
    child.wait_ready(BOUND).await.unwrap();
    let ch = child.channel().unwrap();
    // Ask for something the child never answers: it asks us back and we
    // never reply; then it dies.
    let waiter = tokio::spawn({
        let ch = ch.clone();
        async move {
            ch.request::<_, Result<String, String>>(&TestReq::AskParent)
                .await
        }
    });
    let held = ch.recv().await.unwrap();
    child.signal(nix::libc::SIGKILL).unwrap();
    match waiter.await.unwrap() {
        Err(ChannelError::Closed(CloseReason::PeerClosed)) => {}
        other => panic!("{other:?}"),
    }
    // Later requests fail at once too.
    match ch.request::<_, u64>(&TestReq::Add(1, 2)).await {
        Err(ChannelError::Closed(_)) => {}
        other => panic!("{other:?}"),
    }
    drop(held);
    child.wait().await.unwrap();
}

// ---- against the async child role -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_child_requests_both_ways() {
    let mut child = spawn("async-child");
    let r = child.wait_ready(BOUND).await.unwrap().clone();
    assert_eq!(r.via, ReadyVia::Message);
    assert_eq!(r.ready.pid, child.id());
    assert!(matches!(r.ready.get("http"), Some(Address::Tcp(_))));
    assert_eq!(r.ready.status.as_deref(), Some("serving async"));
    let ch = child.channel().unwrap();
    assert_eq!(ch.peer().unwrap().pid, child.id());

    let s: String = ch.request(&AsyncReq::Echo("ü".into())).await.unwrap();
    assert_eq!(s, "ü");
    // The async child asks back while serving our request.
    let asking = tokio::spawn({
        let ch = ch.clone();
        async move {
            ch.request::<_, Result<String, String>>(&AsyncReq::AskParent)
                .await
        }
    });
    match ch.recv().await.unwrap() {
        Incoming::Request(req) => {
            assert_eq!(req.decode::<String>().unwrap(), "secret please");
            req.respond(&"open sesame").unwrap();
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(asking.await.unwrap().unwrap(), Ok("open sesame".into()));
    // An incoming request dropped unanswered is answered `Dropped`.
    let asking = tokio::spawn({
        let ch = ch.clone();
        async move {
            ch.request::<_, Result<String, String>>(&AsyncReq::AskParent)
                .await
        }
    });
    drop(ch.recv().await.unwrap());
    let answer = asking.await.unwrap().unwrap().unwrap_err();
    assert!(answer.contains("Dropped"), "{answer}");

    let n: u32 = ch.request(&AsyncReq::Notify(3)).await.unwrap();
    assert_eq!(n, 3);
    for i in 0..3u32 {
        match ch.recv().await.unwrap() {
            Incoming::Notify(note) => assert_eq!(note.decode::<u32>().unwrap(), i),
            other => panic!("{other:?}"),
        }
    }
    match ch.request::<_, ()>(&AsyncReq::Fail).await {
        Err(ChannelError::Remote(e)) => assert_eq!(e.kind, RemoteErrorKind::Failed),
        other => panic!("{other:?}"),
    }
    ch.ping(BOUND).await.unwrap();
    let status = child.stop(BOUND).await.unwrap().status;
    assert_eq!(
        status.signal(),
        Some(15),
        "default policy: SIGTERM: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_out_of_order_reach_their_own_requests() {
    // The async child holds each batch of 8 requests and answers them in
    // reverse order: routing by id must give every task its own answer.
    let mut child = spawn("async-child");
    child.wait_ready(BOUND).await.unwrap();
    for round in 0..20u64 {
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..8u64 {
            let ch = child.channel().unwrap();
            let value = round * 100 + k;
            tasks.spawn(async move {
                let got: u64 = ch.request(&AsyncReq::Hold { n: 8, value }).await.unwrap();
                assert_eq!(got, value);
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    }
    child.stop(BOUND).await.unwrap();
}

/// A waiting request reads the socket itself (the first one polled takes
/// that place), but a request whose task stops polling it must not stop the
/// reading: the I/O task reads meanwhile, so pings are answered and the
/// child's own requests arrive. On a current_thread runtime, where the
/// I/O task and the application share one thread.
#[tokio::test]
async fn a_request_nobody_polls_holds_up_no_input() {
    let mut child = spawn("async-child");
    child.wait_ready(BOUND).await.unwrap();
    let ch = child.channel().unwrap().clone();
    // Held by the child until a second `Hold` arrives.
    let mut held = std::pin::pin!(ch.request::<_, u64>(&AsyncReq::Hold { n: 2, value: 7 }));
    tokio::select! {
        biased;
        r = &mut held => panic!("answered early: {r:?}"),
        () = std::future::ready(()) => {}
    }
    // `held` waits, unpolled from here on: everything below needs input
    // read by someone else.
    let run = async {
        ch.ping(BOUND).await.unwrap();
        let asking = ch.request::<_, Result<String, String>>(&AsyncReq::AskParent);
        let serving = async {
            match ch.recv().await.unwrap() {
                Incoming::Request(req) => {
                    assert_eq!(req.decode::<String>().unwrap(), "secret please");
                    req.respond(&"open sesame").unwrap();
                }
                other => panic!("{other:?}"),
            }
        };
        let (answer, ()) = tokio::join!(asking, serving);
        assert_eq!(answer.unwrap(), Ok("open sesame".into()));
        let second: u64 = ch
            .request(&AsyncReq::Hold { n: 2, value: 8 })
            .await
            .unwrap();
        assert_eq!(second, 8);
    };
    tokio::time::timeout(BOUND, run)
        .await
        .expect("input was left unread while a request went unpolled");
    // Its answer came meanwhile, and is there when it is polled again.
    assert_eq!(held.await.unwrap(), 7);
    child.stop(BOUND).await.unwrap();
}

#[tokio::test]
async fn async_child_delivers_shutdown_and_exits_zero() {
    let mut cmd = helper("async-child");
    cmd.arg("deliver");
    let mut child = ReadyCommand::new(cmd).spawn().unwrap();
    child.wait_ready(BOUND).await.unwrap();
    let status = child.stop(BOUND).await.unwrap().status;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn async_child_exits_when_the_parent_closes() {
    let mut child = ReadyCommand::new(helper("async-child"))
        .command_mut_with(|c| {
            c.stdin(Stdio::null());
        })
        .spawn()
        .unwrap();
    child.wait_ready(BOUND).await.unwrap();
    child.channel().unwrap().close();
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_channel_whose_runtime_shut_down_fails_instead_of_hanging() {
    // The channel's I/O task runs on the runtime that made it. When that
    // runtime goes, calls from another runtime fail at once with the
    // reason; they never wait for answers nobody can read.
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut child = first.block_on(async {
        let mut child = spawn("ready");
        child.wait_ready(BOUND).await.unwrap();
        child
    });
    let ch = child.channel().unwrap();
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        let r = tokio::time::timeout(BOUND, ch.request::<_, u64>(&TestReq::Add(1, 2)))
            .await
            .expect("no hang");
        match r {
            Err(ChannelError::Closed(CloseReason::Io(why))) => {
                assert!(why.to_string().contains("runtime"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    });
    child.signal(nix::libc::SIGKILL).unwrap();
}
