#![cfg(feature = "tokio")]
//! 500 children spawned and awaited concurrently from one current-thread
//! runtime: no thread per child (the process's thread count is checked
//! while all of them are alive), and no fd left behind afterwards. Alone in
//! its own test binary, so that no other test starts threads or opens fds
//! meanwhile.

mod common;

use std::time::{Duration, Instant};

use readyfd::ReadyVia;
use readyfd::tokio::ReadyChild;
use tokio::process::Command;
use tokio::task::JoinSet;

use common::aio::spawn;
use common::{open_fds, stopped_cleanly};

const CHILDREN: usize = 500;

/// A bound against hangs, not a synchronisation: generous on purpose (500
/// processes start on two cores).
const BOUND: Duration = Duration::from_secs(300);

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("Threads:"))
        .expect("Threads: in /proc/self/status");
    line["Threads:".len()..].trim().parse().unwrap()
}

/// Waits until the process's fds are `expected` again, or `BOUND` has
/// passed, and returns what they are then. A dropped channel's I/O task
/// closes its socket when it next runs: on this single-thread runtime it
/// runs while this task yields.
async fn fds_return_to(expected: &[String]) -> Vec<String> {
    let deadline = Instant::now() + BOUND;
    loop {
        let now = open_fds();
        if now == expected || Instant::now() >= deadline {
            return now;
        }
        tokio::task::yield_now().await;
    }
}

async fn spawn_ready() -> ReadyChild {
    let mut child = spawn("ready");
    let pid = child.id();
    let r = child.wait_ready(BOUND).await.expect("ready");
    assert_eq!(r.via, ReadyVia::Message);
    assert_eq!(r.ready.pid, pid);
    child
}

async fn stop(mut child: ReadyChild) {
    let status = child.stop(BOUND).await.expect("stop").status;
    assert!(stopped_cleanly(status), "{status:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn five_hundred_children_at_once_on_one_thread() {
    // Warm up what tokio opens lazily (the signal and process drivers) with
    // a plain child, then take the baseline; one readyfd child must leave
    // it as it was.
    let status = Command::new("true").status().await.expect("spawn true");
    assert!(status.success());
    let fds_before = open_fds();
    stop(spawn_ready().await).await;
    assert_eq!(fds_return_to(&fds_before).await, fds_before, "one child");
    let threads_before = threads();

    let all = async {
        let mut spawning = JoinSet::new();
        for _ in 0..CHILDREN {
            spawning.spawn(spawn_ready());
        }
        let mut children = Vec::with_capacity(CHILDREN);
        while let Some(c) = spawning.join_next().await {
            children.push(c.unwrap());
        }
        // All 500 are alive and ready at this point, each with its channel
        // and pidfd registered on this one thread's reactor.
        let threads_during = threads();
        let mut stopping = JoinSet::new();
        for c in children {
            stopping.spawn(stop(c));
        }
        while let Some(r) = stopping.join_next().await {
            r.unwrap();
        }
        threads_during
    };
    let threads_during = tokio::time::timeout(BOUND, all).await.expect("bound");
    assert!(
        threads_during <= threads_before + 1,
        "{threads_during} threads with {CHILDREN} children alive, {threads_before} before"
    );
    eprintln!("threads: {threads_before} before, {threads_during} with {CHILDREN} children alive");
    assert_eq!(fds_return_to(&fds_before).await, fds_before);
}
