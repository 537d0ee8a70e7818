//! Spawn/ready/stop cycles over the pipe and systemd protocols leave no fd
//! and no thread behind in the parent. Alone in its own test
//! binary, so that no other test opens fds or starts threads meanwhile.

mod common;

use std::process::Stdio;

use readyfd::{Protocol, ReadyCommand};

use common::{BOUND, compat, entries};

fn cycle(protocol: Protocol) {
    let mut cmd = compat("serve");
    cmd.stdin(Stdio::piped());
    let mut child = ReadyCommand::new(cmd).protocol(protocol).spawn().unwrap();
    child.wait_ready(BOUND).unwrap();
    // Stored fds, if any, are the caller's; none are sent here.
    assert!(child.take_stored_fds().is_empty());
    drop(child.child_mut().stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn cycles_leave_no_fd_thread_or_directory_behind() {
    for protocol in [Protocol::Pipe, Protocol::Systemd] {
        // Warm up (lazily opened fds), then count.
        cycle(protocol);
        let (fds, threads) = (entries("/proc/self/fd"), entries("/proc/self/task").len());
        for _ in 0..100 {
            cycle(protocol);
        }
        assert_eq!(entries("/proc/self/fd"), fds, "{protocol}");
        assert_eq!(
            entries("/proc/self/task").len(),
            threads,
            "{protocol}: drainer threads joined"
        );
    }
}
