//! A long `sd_notify` flood before `READY=1` leaves the parent's memory
//! flat. Alone in its own test binary, so that no other test allocates
//! (or panics and symbolises a backtrace) in this process meanwhile.

mod common;

use std::process::Stdio;

use readyfd::{Protocol, ReadyCommand};

use common::{BOUND, python3};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_long_flood_then_ready_keeps_memory_flat() {
    // 20000 datagrams of 4 KiB (80 MiB) before READY=1: memory stays flat.
    const N: u64 = 20_000;
    let script = format!(
        r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for i in range({N}):
    s.sendto(b"STATUS=flood %d " % i + b"x" * 4000, os.environ["NOTIFY_SOCKET"])
s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
sys.stdin.read()
"#
    );
    let mut cmd = python3();
    cmd.args(["-c", &script]).stdin(Stdio::piped());
    let mut child = ReadyCommand::new(cmd)
        .protocol(Protocol::Systemd)
        .spawn()
        .unwrap();
    let before = rss_kib();
    let r = child.wait_ready(BOUND).unwrap().clone();
    let grown = rss_kib().saturating_sub(before);
    assert_eq!(
        r.ready
            .status
            .as_deref()
            .map(|s| s.starts_with(&format!("flood {} ", N - 1))),
        Some(true)
    );
    assert_eq!(child.notify_state().unwrap().accepted, N + 1);
    assert!(
        grown < 16 * 1024,
        "grew by {grown} KiB while receiving 80 MiB"
    );
    drop(child.child_mut().stdin.take());
    assert!(child.wait().unwrap().success());
}
