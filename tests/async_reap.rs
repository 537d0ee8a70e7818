#![cfg(feature = "tokio")]
//! An async `ReadyChild` dropped before its child was reaped leaves no
//! zombie: the child is reaped once it exits, by a task on the runtime, and
//! by a thread when that runtime shuts down first (or when the child is
//! dropped outside any runtime). The child is spawned by std and watched
//! through readyfd's own pidfd, not tokio's `Child`, so this is readyfd's
//! job now.

mod common;

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use readyfd::tokio::{ReadyChild, ReadyCommand};

use common::aio::helper_async;
use common::{BOUND, current_thread};

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time: a runtime running in another test could reap a
/// child for this one (tokio's orphan queue is process-wide), which would
/// hide a zombie left by the one that shut down.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `pid` is still a child of ours (running, or a zombie not yet
/// reaped). Looks without reaping it.
fn still_ours(pid: u32) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(Pid::from_raw(pid as i32)), flags) {
        Err(Errno::ECHILD) => false,
        Ok(_) => true,
        Err(e) => panic!("waitid({pid}): {e}"),
    }
}

/// Waits, yielding to the runtime's other tasks, until `pid` is reaped;
/// `false` if it still is not after `BOUND`.
async fn reaped_within_bound(pid: u32) -> bool {
    let deadline = Instant::now() + BOUND;
    while still_ours(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::task::yield_now().await;
    }
    true
}

/// The same outside a runtime (the reaper is a thread).
fn reaped_within_bound_blocking(pid: u32) -> bool {
    let deadline = Instant::now() + BOUND;
    while still_ours(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

/// `close-then-wait-stdin` spawned, ready (by closing its channel) and
/// still running until the returned stdin is dropped.
async fn running_child(cmd: tokio::process::Command) -> (ReadyChild, OwnedFd) {
    let mut cmd = cmd;
    cmd.stdin(Stdio::piped());
    let mut child = ReadyCommand::new(cmd).spawn().unwrap();
    child.wait_ready(BOUND).await.unwrap();
    let stdin = child.stdio_mut().stdin.take().unwrap();
    (child, stdin.into_owned_fd().unwrap())
}

#[test]
fn a_dropped_child_is_reaped_once_it_exits() {
    let _serial = serial();
    current_thread().block_on(async {
        let (child, stdin) = running_child(helper_async("close-then-wait-stdin")).await;
        let pid = child.id();
        drop(child);
        assert!(still_ours(pid), "it runs until its stdin closes");
        drop(stdin);
        assert!(reaped_within_bound(pid).await, "{pid} left unreaped");
    });
}

#[test]
fn kill_on_drop_kills_and_reaps() {
    let _serial = serial();
    // Ours (which also covers the group and the process readiness came
    // from) and tokio's own (the child only). `close` parks for ever after
    // closing its channel: only the kill ends it.
    for ours in [true, false] {
        current_thread().block_on(async {
            let mut cmd = helper_async("close");
            cmd.kill_on_drop(!ours);
            let mut rc = ReadyCommand::new(cmd);
            rc.kill_on_drop(ours);
            let mut child = rc.spawn().unwrap();
            child.wait_ready(BOUND).await.unwrap();
            let pid = child.id();
            drop(child);
            assert!(reaped_within_bound(pid).await, "ours {ours}: {pid} left");
        });
    }
}

/// Regression: with tokio's `Child`, a child dropped while running went to
/// tokio's orphan queue, which only a running runtime's SIGCHLD handling
/// empties: once the runtime had shut down, the child stayed a zombie for
/// the life of the process.
#[test]
fn a_child_dropped_before_its_runtime_shuts_down_is_reaped() {
    let _serial = serial();
    let rt = current_thread();
    let (pid, stdin) = rt.block_on(async {
        let (child, stdin) = running_child(helper_async("close-then-wait-stdin")).await;
        let pid = child.id();
        drop(child);
        (pid, stdin)
    });
    drop(rt);
    assert!(still_ours(pid), "it runs until its stdin closes");
    drop(stdin);
    assert!(reaped_within_bound_blocking(pid), "{pid} left a zombie");
}

#[test]
fn a_child_dropped_outside_any_runtime_is_reaped() {
    let _serial = serial();
    let rt = current_thread();
    let (child, stdin) = rt.block_on(running_child(helper_async("close-then-wait-stdin")));
    let pid = child.id();
    drop(child);
    drop(rt);
    assert!(still_ours(pid), "it runs until its stdin closes");
    drop(stdin);
    assert!(reaped_within_bound_blocking(pid), "{pid} left a zombie");
}
