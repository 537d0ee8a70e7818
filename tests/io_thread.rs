//! Blocking channels share one I/O thread, which ends with the last channel,
//! and leave no fd behind. In a test binary of its own, with one test, so
//! that no other test starts threads or opens fds while this one counts them.

mod common;

use common::{BOUND, open_fds, spawn, stopped_cleanly};

/// The live threads of this process named `name` (all of them for `None`).
/// A thread that has ended but is not reaped yet (it may linger in
/// `/proc/self/task` for a moment after `join` returned) has `PF_EXITING`
/// set, and is not counted.
fn threads(name: Option<&str>) -> usize {
    const PF_EXITING: u64 = 0x4;
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("stat")).ok())
        .filter(|stat| {
            let open = stat.find('(').unwrap();
            let close = stat.rfind(')').unwrap();
            // state ppid pgrp session tty_nr tpgid flags ...
            let flags: u64 = stat[close + 1..]
                .split_whitespace()
                .nth(6)
                .unwrap()
                .parse()
                .unwrap();
            flags & PF_EXITING == 0 && name.is_none_or(|n| &stat[open + 1..close] == n)
        })
        .count()
}

#[test]
fn two_hundred_blocking_channels_use_one_io_thread_which_ends_with_the_last() {
    let (threads_before, fds_before) = (threads(None), open_fds());
    assert_eq!(threads(Some("readyfd-io")), 0);
    let mut children: Vec<_> = (0..200).map(|_| spawn("ready")).collect();
    // Awaited from 8 threads at once: several callers read their channels
    // at the same time, each with a waker of the pool.
    std::thread::scope(|s| {
        let waiters: Vec<_> = children
            .chunks_mut(25)
            .map(|chunk| {
                s.spawn(move || {
                    for c in chunk {
                        c.wait_ready(BOUND).unwrap();
                    }
                })
            })
            .collect();
        // Joined, not only finished (as the end of the scope would wait
        // for): then they are exiting, and not counted below.
        for w in waiters {
            w.join().unwrap();
        }
    });
    assert_eq!(
        threads(Some("readyfd-io")),
        1,
        "one I/O thread for 200 channels"
    );
    assert_eq!(threads(None), threads_before + 1, "no other thread left");
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
        threads(Some("readyfd-io")),
        0,
        "the I/O thread outlived the last channel"
    );
    assert_eq!(threads(None), threads_before);
    assert_eq!(open_fds(), fds_before, "fds left open");
}
