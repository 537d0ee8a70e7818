//! Blocking channels share one I/O thread, which ends with the last channel,
//! and leave no fd behind. In a test binary of its own, with one test, so
//! that no other test starts threads or opens fds while this one counts them.

mod common;

use common::{BOUND, open_fds, spawn, stopped_cleanly};

/// The threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn two_hundred_blocking_channels_use_one_io_thread_which_ends_with_the_last() {
    let (threads_before, fds_before) = (threads(), open_fds());
    let mut children: Vec<_> = (0..200).map(|_| spawn("ready")).collect();
    // Awaited from 8 threads at once: several callers read their channels
    // at the same time, each with a waker of the pool.
    std::thread::scope(|s| {
        for chunk in children.chunks_mut(25) {
            s.spawn(move || {
                for c in chunk {
                    c.wait_ready(BOUND).unwrap();
                }
            });
        }
    });
    assert_eq!(
        threads(),
        threads_before + 1,
        "one I/O thread for 200 channels"
    );
    // Every channel is served: each child's library answers a ping.
    for c in &children {
        c.channel().unwrap().ping(BOUND).unwrap();
    }
    for mut c in children {
        let status = c.stop(BOUND).unwrap().status;
        assert!(stopped_cleanly(status), "{status:?}");
    }
    // The last channel's drop joins the thread and closes the reactor's
    // fds: no waiting needed.
    assert_eq!(
        threads(),
        threads_before,
        "the I/O thread outlived the last channel"
    );
    assert_eq!(open_fds(), fds_before, "fds left open");
}
