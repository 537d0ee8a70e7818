//! Blocking channels share one I/O thread, which ends with the last channel.
//! In a test binary of its own, with one test, so that no other test starts
//! threads while this one counts them.

mod common;

use common::{BOUND, spawn, stopped_cleanly};

/// The threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn two_hundred_blocking_channels_use_one_io_thread_which_ends_with_the_last() {
    let before = threads();
    let mut children: Vec<_> = (0..200).map(|_| spawn("ready")).collect();
    for c in &mut children {
        c.wait_ready(BOUND).unwrap();
    }
    assert_eq!(threads(), before + 1, "one I/O thread for 200 channels");
    // Every channel is served: each child's library answers a ping.
    for c in &children {
        c.channel().unwrap().ping(BOUND).unwrap();
    }
    for mut c in children {
        let status = c.stop(BOUND).unwrap().status;
        assert!(stopped_cleanly(status), "{status:?}");
    }
    // The last channel's drop joins the thread: no waiting needed.
    assert_eq!(
        threads(),
        before,
        "the I/O thread outlived the last channel"
    );
}
