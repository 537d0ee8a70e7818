//! The native protocol with real child processes (`tests/helpers/child`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use readyfd::{Address, ChannelError, CloseReason, Incoming, ReadyCommand, ReadyVia};
use readyfd_proto::RemoteErrorKind;

use common::before_ready::{self, After};
use common::hostile;
use common::{BOUND, TestReq, first_line, helper, spawn, stopped_cleanly};

#[test]
fn ready_with_several_addresses() {
    let mut child = spawn("ready");
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.via, ReadyVia::Message);
    assert_eq!(r.ready.pid, child.id());
    assert_eq!(r.pid_mismatch(), None);
    assert_eq!(r.ready.addresses.len(), 3);
    let Some(Address::Tcp(http)) = r.ready.get("http") else {
        panic!("no tcp address: {:?}", r.ready)
    };
    assert!(http.ip().is_loopback() && http.port() != 0);
    // The address works: the child bound it.
    std::net::TcpStream::connect(http).unwrap();
    assert_eq!(
        r.ready.get("admin"),
        Some(&Address::Unix("/run/test.sock".into()))
    );
    assert_eq!(r.ready.get(""), Some(&Address::Text("hello".into())));
    assert_eq!(r.ready.status.as_deref(), Some("serving"));
    assert_eq!(child.last_status().as_deref(), Some("serving"));
    let stopped = child.stop(Duration::from_secs(10)).unwrap();
    // Acknowledged Shutdown, then its default policy raised SIGTERM: a
    // clean stop, which the status alone would not tell.
    assert_eq!(stopped.via, readyfd::StopVia::Shutdown, "{stopped:?}");
    let status = stopped.status;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(15),
        "default policy: Shutdown acts as SIGTERM: {status:?}"
    );
    let mut child = spawn("ready-deliver");
    child.wait_ready(BOUND).unwrap();
    let status = child.stop(Duration::from_secs(10)).unwrap().status;
    assert!(
        status.success(),
        "Shutdown delivered, acknowledged, exit 0: {status:?}"
    );
}

#[test]
fn requests_both_ways_and_notifications() {
    let mut child = spawn("ready");
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    let echoed: String = ch.request(&TestReq::Echo("héllo".into())).unwrap();
    assert_eq!(echoed, "héllo");
    let sum: u64 = ch.request(&TestReq::Add(40, 2)).unwrap();
    assert_eq!(sum, 42);
    // The child asks us back while we wait for its answer.
    let ch2 = child.channel().unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| ch2.request::<_, Result<String, String>>(&TestReq::AskParent));
        match ch2.recv_timeout(BOUND).unwrap().expect("child's request") {
            Incoming::Request(req) => {
                assert_eq!(req.decode::<String>().unwrap(), "secret please");
                req.respond(&"s3cr3t").unwrap();
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(waiter.join().unwrap().unwrap(), Ok("s3cr3t".to_string()));
    });
    // Notifications from the child arrive in order, before the answer.
    let n: u32 = ch.request(&TestReq::Notify(5)).unwrap();
    assert_eq!(n, 5);
    for i in 0..5u32 {
        match ch.recv_timeout(BOUND).unwrap().unwrap() {
            Incoming::Notify(note) => assert_eq!(note.decode::<u32>().unwrap(), i),
            other => panic!("{other:?}"),
        }
    }
    // A remote failure and a body of the wrong type are typed errors.
    match ch.request::<_, u64>(&TestReq::Fail) {
        Err(ChannelError::Remote(e)) => assert_eq!(e.kind, RemoteErrorKind::Failed),
        other => panic!("{other:?}"),
    }
    match ch.request::<_, u64>(&"not a TestReq at all, just a string") {
        Err(ChannelError::Remote(e)) => assert_eq!(e.kind, RemoteErrorKind::BadRequest),
        other => panic!("{other:?}"),
    }
    ch.ping(BOUND).unwrap();
    assert!(stopped_cleanly(
        child.stop(Duration::from_secs(10)).unwrap().status
    ));
}

#[test]
fn requests_from_many_threads_interleave_correctly() {
    let mut child = spawn("ready");
    child.wait_ready(BOUND).unwrap();
    let ch = &child.channel().unwrap();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            s.spawn(move || {
                for i in 0..200u64 {
                    let sum: u64 = ch.request(&TestReq::Add(t * 1000, i)).unwrap();
                    assert_eq!(sum, t * 1000 + i);
                    let big = "x".repeat((i as usize * 997) % 70_000);
                    let back: String = ch.request(&TestReq::Echo(big.clone())).unwrap();
                    assert_eq!(back, big);
                }
            });
        }
    });
    assert!(stopped_cleanly(
        child.stop(Duration::from_secs(10)).unwrap().status
    ));
}

#[test]
fn large_messages_from_many_threads_cross_full_socket_buffers() {
    // Bodies far larger than the socket buffer: every send ends in a
    // partial write and a handover to the I/O thread, on both sides.
    let mut child = spawn("ready");
    child.wait_ready(BOUND).unwrap();
    let ch = &child.channel().unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            s.spawn(move || {
                for i in 0..6usize {
                    let big: String =
                        std::iter::repeat_n(char::from(b'a' + t), (i + 1) * 700_000).collect();
                    let back: String = ch.request(&TestReq::Echo(big.clone())).unwrap();
                    assert!(back == big, "thread {t} round {i}: wrong answer");
                }
            });
        }
    });
    assert!(stopped_cleanly(
        child.stop(Duration::from_secs(10)).unwrap().status
    ));
}

#[test]
fn parent_hands_configuration_before_ready() {
    let mut child = spawn("config-first");
    let ch = child.channel().unwrap();
    match ch.recv_timeout(BOUND).unwrap().expect("config request") {
        Incoming::Request(req) => {
            assert_eq!(req.decode::<String>().unwrap(), "config");
            req.respond(&"mode=fast").unwrap();
        }
        other => panic!("{other:?}"),
    }
    let r = child.wait_ready(BOUND).unwrap();
    assert_eq!(r.ready.status.as_deref(), Some("mode=fast"));
    child.stop(Duration::from_secs(10)).unwrap();
}

/// The table of `common::before_ready`, with the blocking driver.
#[test]
fn children_that_end_or_hang_before_ready() {
    for case in before_ready::cases() {
        let mut child = ReadyCommand::new(case.command())
            .on_timeout(case.on_timeout)
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let first = child.wait_ready(case.timeout).map(|r| r.via);
        let took = t0.elapsed();
        let second = match case.after {
            After::AlreadyFailed => Some(child.wait_ready(BOUND).map(|r| r.via)),
            _ => None,
        };
        let exited = child.try_wait().unwrap().is_some();
        case.assert_seen(first, took, second, exited);
        let _ = child.kill();
    }
}

#[test]
fn closing_without_a_word_while_alive_is_ready() {
    let mut child = spawn("close");
    let r = child.wait_ready(BOUND).unwrap();
    assert_eq!(r.via, ReadyVia::Closed);
    assert!(r.ready.addresses.is_empty());
    child.kill().unwrap();
}

#[test]
/// The child leaves its environment alone (`from_env` is safe), so a
/// grandchild sees `READYFD`, but not the fd, and takes nothing.
fn grandchildren_inherit_no_fd_and_take_nothing() {
    let mut child = spawn("grandchild");
    let r = child.wait_ready(BOUND).unwrap();
    let status = r.ready.status.clone().unwrap();
    let (own, report) = status.split_once('|').unwrap();
    assert!(own.starts_with("socket:["), "{own}");
    assert!(
        report.ends_with(
            " READYFD=3 from_env=error: READYFD=3 names fd 3, which is not open (was it closed, e.g. by a daemon that closes every fd above 2, or by a launcher that does, as Python's subprocess does unless given close_fds=False?)"
        ),
        "{report}"
    );
    assert!(
        !report.contains(own),
        "the channel leaked into the grandchild: {report}"
    );
    child.stop(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_wrapper_that_exits_zero_hands_readiness_to_its_descendant() {
    let mut child = spawn("fork-ready");
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.via, ReadyVia::Message);
    let claimed = r
        .pid_mismatch()
        .expect("the descendant reports its own pid");
    assert_ne!(claimed, child.id());
    // Stop the descendant over the channel.
    child.channel().unwrap().shutdown(BOUND).unwrap();
}

#[test]
fn hostile_children_get_typed_errors() {
    for (kind, check) in hostile::CASES {
        let mut cmd = helper("hostile");
        cmd.arg(kind);
        let mut child = ReadyCommand::new(cmd).spawn().unwrap();
        let ready = child.wait_ready(BOUND).map(|r| r.via);
        let closed = child.channel().unwrap().closed();
        hostile::assert_rejected(kind, check, ready, closed);
        child.kill().unwrap();
    }
}

#[test]
fn version_mismatch_names_both_versions() {
    let mut cmd = helper("hostile");
    cmd.arg("version");
    let mut child = ReadyCommand::new(cmd).spawn().unwrap();
    let err = child.wait_ready(BOUND).unwrap_err();
    child.kill().unwrap();
    // The versions are in the cause, as anyhow prints the chain.
    let mut msg = err.to_string();
    let mut next = std::error::Error::source(&err);
    while let Some(cause) = next {
        msg = format!("{msg}: {cause}");
        next = cause.source();
    }
    assert!(
        msg.contains("version 1") && msg.contains("version 9"),
        "{msg}"
    );
}

#[test]
fn the_child_sees_eof_when_its_parent_dies() {
    let mut middle = helper("middle").stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(middle.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("grandchild "), "{line}");
    middle.kill().unwrap();
    middle.wait().unwrap();
    // The grandchild (which shares the stdout pipe) notices and says so.
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "parent gone");
}

#[test]
fn pending_requests_fail_when_the_peer_dies() {
    let mut child = spawn("ready");
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    std::thread::scope(|s| {
        // Ask for something the child will never answer: it asks us back and
        // we never reply, then we kill it.
        let waiter = s.spawn(|| ch.request::<_, Result<String, String>>(&TestReq::AskParent));
        let req = ch.recv_timeout(BOUND).unwrap().expect("child asks back");
        // Kill it while our request is pending.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        match waiter.join().unwrap() {
            Err(ChannelError::Closed(CloseReason::PeerClosed)) => {}
            other => panic!("{other:?}"),
        }
        drop(req);
    });
    child.wait().unwrap();
}

#[test]
fn sixty_four_threads_spawning_at_once_never_leak_channels() {
    // Each child signals readiness only by closing its fd. If any child's
    // fd leaked into a sibling, its EOF would never come and the wait
    // would hang until the bound.
    let children: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| {
                s.spawn(|| {
                    let mut c = ReadyCommand::new(helper("close-then-wait-stdin"))
                        .command_mut_with(|c| {
                            c.stdin(Stdio::piped());
                        })
                        .spawn()
                        .unwrap();
                    let r = c.wait_ready(BOUND).unwrap().clone();
                    assert_eq!(r.via, ReadyVia::Closed);
                    c
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for mut c in children {
        drop(c.child_mut().stdin.take());
        assert!(c.wait().unwrap().success());
    }
}

#[test]
fn channel_is_shareable_across_threads() {
    let mut child = spawn("ready");
    child.wait_ready(BOUND).unwrap();
    let child = Arc::new(std::sync::Mutex::new(child));
    let c2 = Arc::clone(&child);
    std::thread::spawn(move || {
        let g = c2.lock().unwrap();
        let v: String = g
            .channel()
            .unwrap()
            .request(&TestReq::Echo("t".into()))
            .unwrap();
        assert_eq!(v, "t");
    })
    .join()
    .unwrap();
    child.lock().unwrap().stop(BOUND).unwrap();
}

#[test]
fn a_flooding_child_meets_back_pressure() {
    // The child writes notifications nobody reads. The parent must stop
    // reading once MAX_INCOMING are queued, so the child's socket fills up.
    let mut child = ReadyCommand::new(helper("flood-raw"))
        .command_mut_with(|c| {
            c.stdout(Stdio::piped());
        })
        .spawn()
        .unwrap();
    let line = first_line(child.child_mut().stdout.take().unwrap());
    let sent: u64 = line.trim().strip_prefix("sent ").unwrap().parse().unwrap();
    // Queue (1024 frames of 1029 bytes), one read chunk, socket buffers.
    let bound = (readyfd::limits::MAX_INCOMING as u64) * 1029 + (64 << 10) + (4 << 20);
    assert!(sent < bound, "the parent kept reading: {sent} bytes");
    // What was queued is intact and in order.
    let ch = child.channel().unwrap();
    for _ in 0..readyfd::limits::MAX_INCOMING {
        match ch.recv_timeout(BOUND).unwrap().unwrap() {
            Incoming::Notify(n) => assert_eq!(n.bytes(), &[0xab; 1024][..]),
            other => panic!("{other:?}"),
        }
    }
    child.kill().unwrap();
}

// ---- the reading hand-over -------------------------------------------------
//
// A thread that waits (for an answer, a message, `Ready`) reads the socket
// itself while no other thread does; the I/O thread reads otherwise. These
// tests put every kind of waiter on one channel at once, and end waits by
// means other than the answer. (The unit tests in `src/channel.rs` pin
// down which thread reads; these cannot see it.)

#[test]
fn waiters_of_every_kind_share_one_socket() {
    let mut child = spawn("ready");
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    const ROUNDS: u32 = 100;
    std::thread::scope(|s| {
        // One thread takes every notification; the child sends `n` of them
        // before answering `Notify(n)`.
        let receiver = s.spawn(|| {
            let mut seen = 0u32;
            let want = (1..=ROUNDS).sum::<u32>() * 2;
            while seen < want {
                match ch.recv_timeout(BOUND).unwrap().expect("a notification") {
                    Incoming::Notify(_) => seen += 1,
                    other => panic!("{other:?}"),
                }
            }
            seen
        });
        for _ in 0..2 {
            s.spawn(|| {
                for n in 1..=ROUNDS {
                    let back: u32 = ch.request(&TestReq::Notify(n)).unwrap();
                    assert_eq!(back, n);
                }
            });
        }
        s.spawn(|| {
            for i in 0..300u64 {
                let sum: u64 = ch.request(&TestReq::Add(i, 1)).unwrap();
                assert_eq!(sum, i + 1);
                ch.ping(BOUND).unwrap();
            }
        });
        assert_eq!(receiver.join().unwrap(), (1..=ROUNDS).sum::<u32>() * 2);
    });
    assert!(stopped_cleanly(
        child.stop(Duration::from_secs(10)).unwrap().status
    ));
}

#[test]
fn a_local_close_ends_a_wait_for_an_answer() {
    let mut child = spawn("ready");
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    std::thread::scope(|s| {
        // The child answers `AskParent` only once we answer its own request,
        // which we hold back until after the close.
        let waiter = s.spawn(|| ch.request::<_, Result<String, String>>(&TestReq::AskParent));
        // Synchronise on the child's request having arrived (read by the
        // waiting thread, or by this one, or by the I/O thread).
        let asked = match ch
            .recv_timeout(BOUND)
            .unwrap()
            .expect("the child's request")
        {
            Incoming::Request(r) => r,
            other => panic!("{other:?}"),
        };
        ch.close();
        match waiter.join().unwrap() {
            Err(ChannelError::Closed(CloseReason::Local)) => {}
            other => panic!("{other:?}"),
        }
        drop(asked);
    });
    drop(child.kill());
}

#[test]
fn a_timed_out_request_leaves_the_channel_working() {
    let mut child = spawn("ready");
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    // Nobody answers the child's request yet, so `AskParent` times out.
    match ch.request_timeout::<_, Result<String, String>>(
        &TestReq::AskParent,
        Duration::from_millis(50),
    ) {
        Err(ChannelError::Timeout(_)) => {}
        other => panic!("{other:?}"),
    }
    // The channel still reads: pings are answered, requests go both ways.
    ch.ping(BOUND).unwrap();
    match ch
        .recv_timeout(BOUND)
        .unwrap()
        .expect("the child's request")
    {
        Incoming::Request(req) => req.respond(&"late").unwrap(),
        other => panic!("{other:?}"),
    }
    // The child's late answer to the abandoned request is dropped; the next
    // request gets its own.
    let sum: u64 = ch.request(&TestReq::Add(2, 3)).unwrap();
    assert_eq!(sum, 5);
    assert!(stopped_cleanly(
        child.stop(Duration::from_secs(10)).unwrap().status
    ));
}

/// A byte bound on what the peer may make us hold pauses reading (here,
/// about a dozen small notifications at a time) without losing or
/// reordering anything: 3000 notifications arrive in order while our own
/// request's answer waits behind them.
#[test]
fn a_byte_bound_on_the_incoming_queue_loses_nothing() {
    let opts = readyfd::ChannelOptions::new().max_incoming_bytes(1000);
    let mut child = ReadyCommand::new(helper("ready"))
        .channel_options(opts)
        .spawn()
        .unwrap();
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    std::thread::scope(|s| {
        let asked = s.spawn(|| ch.request::<_, u32>(&TestReq::Notify(3000)));
        for want in 0..3000u32 {
            match ch.recv_timeout(BOUND).unwrap() {
                Some(Incoming::Notify(n)) => assert_eq!(n.decode::<u32>().unwrap(), want),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(asked.join().unwrap().unwrap(), 3000);
    });
    child.stop(BOUND).unwrap();
}

/// `Ready::default()` says pid 0, "this process": the child's library
/// sends its own pid (it used to send 0, and `readyfd run --json` showed
/// `"main_pid": 0`).
#[test]
fn a_default_ready_names_the_child_itself() {
    let mut child = spawn("ready-default");
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.ready.pid, child.id());
    assert_eq!(r.pid_mismatch(), None);
    child.stop(BOUND).unwrap();
}
