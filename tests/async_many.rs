#![cfg(feature = "tokio")]
//! 500 children spawned and awaited concurrently from one current-thread
//! runtime: no thread per child (the process's thread count is checked
//! while all of them are alive), and no fd left behind afterwards. Alone in
//! its own test binary, so that no other test starts threads or opens fds
//! meanwhile.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use readyfd::ReadyVia;
use readyfd::tokio::{ReadyChild, ReadyCommand};
use tokio::process::Command;
use tokio::task::JoinSet;

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

fn open_fds() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A dropped channel's I/O task has been woken and finishes (closing the
/// socket) when it next runs: on this single-thread runtime, yielding lets
/// every woken task run first.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

async fn spawn_ready() -> ReadyChild {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_readyfd-test-child"));
    cmd.arg("ready");
    let mut child = ReadyCommand::new(cmd).spawn().expect("spawn helper");
    let pid = child.id();
    let r = child.wait_ready(BOUND).await.expect("ready");
    assert_eq!(r.via, ReadyVia::Message);
    assert_eq!(r.ready.pid, pid);
    child
}

async fn stop(mut child: ReadyChild) {
    let status = child.stop(BOUND).await.expect("stop");
    assert!(
        status.success() || status.signal() == Some(15),
        "{status:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn five_hundred_children_at_once_on_one_thread() {
    // Warm up whatever tokio and the process open lazily (the signal and
    // process drivers), then take the baseline.
    stop(spawn_ready().await).await;
    settle().await;
    let fds_before = open_fds();
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
    settle().await;
    assert_eq!(open_fds(), fds_before);
}
