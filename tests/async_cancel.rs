#![cfg(feature = "tokio")]
//! Cancellation safety of the async channel: requests, notifications and
//! `recv` dropped at every await point, followed by traffic that must come
//! out right (each request its own answer, nothing lost, nothing extra).
//!
//! The peer is the blocking helper role `ready`, which serves one request
//! at a time, in order: so "the answer arrived but was not taken yet" can
//! be produced on purpose, by completing a later request first.

mod common;

use std::future::Future;
use std::pin::pin;
use std::process::Stdio;
use std::task::Poll;
use std::time::Duration;

use readyfd::ChannelError;
use readyfd::tokio::{Channel, Incoming, ReadyCommand};

use common::aio::ready_child;
use common::{AsyncReq, BOUND, TestReq, helper};

/// Polls `fut` exactly once, then gives it back (still pending, or done).
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match std::pin::Pin::new(&mut *fut).poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

/// The channel's requests waiting for answers, from its `Debug` output.
fn pending_count(ch: &Channel) -> usize {
    let dbg = format!("{ch:?}");
    let rest = dbg.split("pending: ").nth(1).expect("pending in Debug");
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

async fn add(ch: &Channel, a: u64, b: u64) -> u64 {
    tokio::time::timeout(BOUND, ch.request(&TestReq::Add(a, b)))
        .await
        .expect("bound")
        .expect("answer")
}

/// One cancelled request, at a point chosen by `i`.
async fn cancel_one(ch: &Channel, i: u64) {
    let req = TestReq::Echo(format!("cancelled {i}"));
    match i % 7 {
        // Dropped before it was ever polled: nothing was sent.
        0 => drop(ch.request::<_, String>(&req)),
        // A zero timeout polls the request (it is queued and sent), then
        // drops it when the timer fires (timers have millisecond
        // resolution: the answer sometimes wins).
        1 => {
            let r = tokio::time::timeout(Duration::ZERO, ch.request::<_, String>(&req)).await;
            if let Ok(r) = r {
                assert_eq!(r.unwrap(), format!("cancelled {i}"));
            }
        }
        // Small timeouts: dropped at whatever point the race reaches,
        // sometimes after it completed.
        2 => {
            let t = Duration::from_micros((i * 37) % 400);
            if let Ok(r) = tokio::time::timeout(t, ch.request::<_, String>(&req)).await {
                assert_eq!(r.unwrap(), format!("cancelled {i}"));
            }
        }
        // `select!` against a branch that is ready at once: polled once,
        // then dropped. (On a multi-thread runtime the I/O task may route
        // the answer between the send and the first look at the one-shot,
        // so even one poll can see it.)
        3 => {
            tokio::select! {
                biased;
                r = ch.request::<_, String>(&req) => assert_eq!(r.unwrap(), format!("cancelled {i}")),
                () = std::future::ready(()) => {}
            }
        }
        // `select!` against a yield, unbiased: dropped at a random point.
        4 => {
            tokio::select! {
                r = ch.request::<_, String>(&req) => assert_eq!(r.unwrap(), format!("cancelled {i}")),
                () = tokio::task::yield_now() => {}
            }
        }
        // The answer arrived but was never taken: the peer answers in
        // order, so once a later request is answered, ours sits in its
        // one-shot. Then it is dropped.
        5 => {
            let mut fut = pin!(ch.request::<_, String>(&req));
            match poll_once(&mut fut).await {
                None => assert_eq!(add(ch, i, 0).await, i),
                // Answered within its first poll, as in case 3.
                Some(r) => assert_eq!(r.unwrap(), format!("cancelled {i}")),
            }
        }
        // Polled to completion by hand, for comparison.
        _ => {
            let r: String = ch.request(&req).await.unwrap();
            assert_eq!(r, format!("cancelled {i}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cancelled_requests_leave_the_channel_sound() {
    let mut child = ready_child("ready").await;
    let ch = child.channel().unwrap();
    for i in 0..1000u64 {
        cancel_one(&ch, i).await;
        // The next request gets its own answer, not a cancelled one's.
        assert_eq!(add(&ch, i, 1).await, i + 1, "after cancellation {i}");
        let tag = format!("normal {i}");
        let back: String = ch.request(&TestReq::Echo(tag.clone())).await.unwrap();
        assert_eq!(back, tag);
    }
    assert!(ch.closed().is_none(), "{:?}", ch.closed());
    assert_eq!(pending_count(&ch), 0, "no waiter left behind");
    ch.ping(BOUND).await.unwrap();
    child.stop(BOUND).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellations_from_many_tasks_do_not_cross_answers() {
    let mut child = ready_child("ready").await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16u64 {
        let ch = child.channel().unwrap();
        tasks.spawn(async move {
            for i in 0..100u64 {
                cancel_one(&ch, t * 1000 + i).await;
                assert_eq!(add(&ch, t, i).await, t + i);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let ch = child.channel().unwrap();
    assert!(ch.closed().is_none());
    assert_eq!(pending_count(&ch), 0);
    child.stop(BOUND).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_dropped_in_select_loses_nothing() {
    let mut child = ready_child("ready").await;
    let ch = child.channel().unwrap();
    // The child sends 500 notifications, then answers.
    let asked = tokio::spawn({
        let ch = ch.clone();
        async move { ch.request::<_, u32>(&TestReq::Notify(500)).await }
    });
    let mut got = Vec::new();
    let mut cancelled = 0u32;
    while got.len() < 500 {
        tokio::select! {
            r = ch.recv() => match r.unwrap() {
                Incoming::Notify(n) => got.push(n.decode::<u32>().unwrap()),
                other => panic!("{other:?}"),
            },
            () = tokio::task::yield_now() => cancelled += 1,
        }
    }
    assert_eq!(
        got,
        (0..500).collect::<Vec<u32>>(),
        "none lost, none reordered"
    );
    assert_eq!(asked.await.unwrap().unwrap(), 500);
    assert!(matches!(ch.try_recv(), Ok(None)));
    eprintln!("recv was cancelled {cancelled} times");
    child.stop(BOUND).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_while_waiting_for_room_sends_nothing() {
    // The async child answers `PauseUntilStdin`, then stops reading until
    // a line arrives on its stdin.
    let mut cmd = helper("async-child");
    cmd.stdin(Stdio::piped());
    let mut child = ReadyCommand::new(cmd).spawn().unwrap();
    child.wait_ready(BOUND).await.unwrap();
    let stdin = child.stdio_mut().stdin.take().unwrap();
    let stdin = stdin.into_owned_fd().unwrap();
    let ch = child.channel().unwrap();
    ch.request::<_, ()>(&AsyncReq::PauseUntilStdin)
        .await
        .unwrap();
    // Nobody takes our notifications now: the socket fills, then our
    // transmit queue reaches its high-water mark and `notify` waits for
    // room. (The timeout only detects that: no progress is possible until
    // the child is let go.)
    let body = vec![0x5au8; 1024];
    let mut sent = 0u64;
    loop {
        assert!(sent < 1_000_000, "back-pressure never engaged");
        match tokio::time::timeout(Duration::from_millis(500), ch.notify(&body)).await {
            Ok(r) => {
                r.unwrap();
                sent += 1;
            }
            Err(_) => break,
        }
    }
    assert!(
        sent as usize * body.len() >= readyfd::limits::HIGH_WATER,
        "{sent}"
    );
    // Cancel sends while they wait for room, at their first poll and
    // later. Had the request been sent, the child would emit a
    // notification for it; had a notification been sent, it would be
    // echoed.
    for t in [Duration::ZERO, Duration::from_millis(10)] {
        let r = tokio::time::timeout(t, ch.request::<_, u32>(&AsyncReq::Notify(1))).await;
        assert!(r.is_err());
        let r = tokio::time::timeout(t, ch.notify(&body)).await;
        assert!(r.is_err());
    }
    // Let the child go: it echoes every notification it gets, then
    // answers our last request.
    // (A pipe takes three bytes without blocking.)
    nix::unistd::write(&stdin, b"go\n").unwrap();
    let end = tokio::spawn({
        let ch = ch.clone();
        async move { ch.request::<_, String>(&AsyncReq::Echo("end".into())).await }
    });
    let mut echoed = 0u64;
    while echoed < sent {
        match tokio::time::timeout(BOUND, ch.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Incoming::Notify(_) => echoed += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(end.await.unwrap().unwrap(), "end");
    // Every notification that was sent came back, and nothing else: none
    // of the cancelled sends went out.
    match ch.try_recv() {
        Ok(None) => {}
        Ok(Some(extra)) => panic!("a cancelled send went out: {extra:?}"),
        Err(e) => panic!("{e}"),
    }
    let back: String = ch.request(&AsyncReq::Echo("after".into())).await.unwrap();
    assert_eq!(back, "after");
    child.stop(BOUND).await.unwrap();
}

#[tokio::test]
async fn closing_fails_waiting_requests_with_local() {
    let mut child = ready_child("ready").await;
    let ch = child.channel().unwrap();
    let asking = tokio::spawn({
        let ch = ch.clone();
        async move {
            ch.request::<_, Result<String, String>>(&TestReq::AskParent)
                .await
        }
    });
    let held = ch.recv().await.unwrap();
    ch.close();
    match asking.await.unwrap() {
        Err(ChannelError::Closed(readyfd::CloseReason::Local)) => {}
        other => panic!("{other:?}"),
    }
    match ch.notify(&1u32).await {
        Err(ChannelError::Closed(readyfd::CloseReason::Local)) => {}
        other => panic!("{other:?}"),
    }
    drop(held);
    child.stop(BOUND).await.unwrap();
}
