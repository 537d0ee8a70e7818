#![cfg(feature = "tokio")]
//! 500 children spawned and awaited concurrently from one current-thread
//! runtime: no thread per child, two fds per ready child and a few KiB of heap
//! (all checked while all of them are alive), and no fd left behind
//! afterwards. Alone in its own test binary, so that no other test starts
//! threads, opens fds or allocates meanwhile.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use readyfd::ReadyVia;
use readyfd::tokio::ReadyChild;
use tokio::process::Command;
use tokio::task::JoinSet;

use common::aio::spawn;
use common::{open_fds, stopped_cleanly};

const CHILDREN: usize = 500;

/// What a child may hold in the parent once it is ready: its socket and
/// its pidfd (shared by the `ReadyChild` and the channel's task; its
/// `/proc/<pid>/stat`, a third, is closed once readiness is decided).
/// Every fd the parent holds is copied by each later `fork` and closed by
/// each later `exec`, so this is what a thousand children cost per spawn.
const FDS_PER_CHILD: usize = 2;

/// The heap a ready, idle child may hold in the parent: its channel's
/// state, the I/O task, two reactor registrations; no read buffer (a
/// 64 KiB one per channel made each cost 64 KiB).
const HEAP_PER_CHILD: isize = 8 * 1024;

/// The global allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE_HEAP: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to `System` unchanged; the counter is a
// side effect only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's guarantees are `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_HEAP.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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
    let heap_before = LIVE_HEAP.load(Ordering::Relaxed);

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
        let fds_during = open_fds().len();
        let heap_during = LIVE_HEAP.load(Ordering::Relaxed);
        let mut stopping = JoinSet::new();
        for c in children {
            stopping.spawn(stop(c));
        }
        while let Some(r) = stopping.join_next().await {
            r.unwrap();
        }
        (threads_during, fds_during, heap_during)
    };
    let (threads_during, fds_during, heap_during) =
        tokio::time::timeout(BOUND, all).await.expect("bound");
    assert!(
        threads_during <= threads_before + 1,
        "{threads_during} threads with {CHILDREN} children alive, {threads_before} before"
    );
    eprintln!("threads: {threads_before} before, {threads_during} with {CHILDREN} children alive");
    // The slack: the children `Vec` and `JoinSet`s, and what tokio grows.
    let fds_per_child = (fds_during - fds_before.len()) as f64 / CHILDREN as f64;
    eprintln!(
        "fds: {} before, {fds_during} with {CHILDREN} children alive",
        fds_before.len()
    );
    assert!(
        fds_during <= fds_before.len() + FDS_PER_CHILD * CHILDREN + 8,
        "{fds_per_child:.2} fds per child, {FDS_PER_CHILD} at most"
    );
    let heap_per_child = (heap_during - heap_before) / CHILDREN as isize;
    eprintln!("heap: {heap_per_child} bytes per child alive");
    assert!(
        heap_per_child <= HEAP_PER_CHILD,
        "{heap_per_child} bytes of heap per child, {HEAP_PER_CHILD} at most"
    );
    assert_eq!(fds_return_to(&fds_before).await, fds_before);
}
