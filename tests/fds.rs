//! File descriptors over the native channel (PROTOCOL.md, section 2.1),
//! with real processes: 250 fds with `Ready`, fds both ways from several
//! threads at once, and peers that send fds against the rules, for the
//! blocking and the tokio driver. After each case the fd tables of the
//! parent (this process) and of the child are what they were before.
//!
//! The tests count this process's fds: one at a time (`SERIAL`).

mod common;

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Mutex;

use readyfd::proto::{DecodeError, FrameError, Message, Role, SessionError};
use readyfd::{ChannelError, CloseReason, Incoming, ProtocolError, ReadyCommand, ReadyError};

use common::protocol::FdReq;
use common::{BOUND, helper, place_fds};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// This process's open fds, without the one the listing opens.
fn open_fds() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            !(target.starts_with("/proc") && target.ends_with("fd"))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_fds_back_to(before: &[String], what: &str) {
    let after = open_fds();
    let new: Vec<&String> = after.iter().filter(|fd| !before.contains(fd)).collect();
    assert!(
        new.is_empty(),
        "{what}: fds left open in the parent: {new:?}"
    );
}

/// The `u32` a `pipe_holding` pipe holds, read to its end.
fn content(fd: OwnedFd) -> u32 {
    let mut f = std::fs::File::from(fd);
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    u32::from_le_bytes(v.try_into().expect("4 bytes"))
}

fn pipe_holding(i: u32) -> OwnedFd {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    std::io::Write::write_all(&mut std::fs::File::from(w), &i.to_le_bytes()).unwrap();
    r
}

fn is_cloexec(fd: &OwnedFd) -> bool {
    let flags = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
    flags & nix::libc::FD_CLOEXEC != 0
}

/// Spawns and reaps one child with tokio once, so that the fds tokio opens
/// for good on first use (its `SIGCHLD` pipe) are open before any count.
fn warm_tokio() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        common::current_thread().block_on(async {
            let status = tokio::process::Command::new("true").status().await;
            assert!(status.unwrap().success());
        });
    });
}

fn fd_serve(n: u32) -> std::process::Command {
    let mut cmd = helper("fd-serve");
    cmd.arg(n.to_string());
    cmd
}

#[test]
fn two_hundred_fifty_fds_arrive_with_ready_in_order() {
    let _serial = serial();
    let before = open_fds();
    let mut child = ReadyCommand::new(fd_serve(250)).spawn().unwrap();
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    let fds = ch.take_ready_fds();
    assert_eq!(fds.len(), 250);
    assert!(fds.iter().all(is_cloexec), "received fds are close-on-exec");
    let got: Vec<u32> = fds.into_iter().map(content).collect();
    assert_eq!(got, (0..250).collect::<Vec<_>>());
    assert!(ch.take_ready_fds().is_empty(), "taken once");
    drop(ch);
    child.stop(BOUND).unwrap();
    drop(child);
    assert_fds_back_to(&before, "250 fds");
}

#[test]
fn two_hundred_fifty_fds_arrive_with_ready_in_order_async() {
    let _serial = serial();
    warm_tokio();
    let before = open_fds();
    let rt = common::current_thread();
    rt.block_on(async {
        let mut child = readyfd::tokio::ReadyCommand::new(fd_serve(250))
            .spawn()
            .unwrap();
        child.wait_ready(BOUND).await.unwrap();
        let fds = child.channel().unwrap().take_ready_fds();
        assert_eq!(fds.len(), 250);
        assert!(fds.iter().all(is_cloexec));
        let got: Vec<u32> = fds.into_iter().map(content).collect();
        assert_eq!(got, (0..250).collect::<Vec<_>>());
        child.stop(BOUND).await.unwrap();
    });
    // The runtime, with what its tasks hold.
    drop(rt);
    assert_fds_back_to(&before, "250 fds, tokio");
}

const THREADS: u32 = 4;
const PER_THREAD: u32 = 25;
const NOTIFIES: u32 = 8;
/// Round trips after which the child's fd table must be back as it was.
const SETTLE: usize = 100;

/// Several threads send fds with requests while the child sends fds back
/// in answers and in notifications from several threads of its own.
#[test]
fn fds_both_ways_from_several_threads() {
    let _serial = serial();
    let before = open_fds();
    let mut child = ReadyCommand::new(fd_serve(0)).spawn().unwrap();
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    let child_before: usize = ch.request(&FdReq::CountFds).unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let ch = ch.clone();
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let tag = t * 1000 + i;
                    let fds = vec![pipe_holding(tag), pipe_holding(tag + 500)];
                    let (n, back): (u32, _) = ch.request_with_fds(&FdReq::Echo, fds).unwrap();
                    assert_eq!(n, 2);
                    let got: Vec<u32> = back.into_iter().map(content).collect();
                    assert_eq!(got, [tag, tag + 500]);
                }
            });
        }
        let ch2 = ch.clone();
        s.spawn(move || {
            let n: u32 = ch2.request(&FdReq::NotifyBack(NOTIFIES)).unwrap();
            assert_eq!(n, NOTIFIES);
        });
        let mut seen = Vec::new();
        while seen.len() < NOTIFIES as usize {
            match ch.recv_timeout(BOUND).unwrap() {
                Some(Incoming::Notify(mut n)) => {
                    let i: u32 = n.decode().unwrap();
                    let fds = n.take_fds();
                    assert_eq!(fds.len(), 1);
                    assert_eq!(content(fds.into_iter().next().unwrap()), i);
                    seen.push(i);
                }
                other => panic!("{other:?}"),
            }
        }
        seen.sort();
        assert_eq!(seen, (0..NOTIFIES).collect::<Vec<_>>());
    });
    // A child thread that wrote a frame with fds closes its copies once it
    // has the channel's lock back after the `sendmsg`, which may be after
    // the parent read the frame and asked: ask again, a bounded number of
    // round trips (each lets that thread run), until the table is back.
    let mut child_after: usize = ch.request(&FdReq::CountFds).unwrap();
    for _ in 0..SETTLE {
        if child_after == child_before {
            break;
        }
        child_after = ch.request(&FdReq::CountFds).unwrap();
    }
    assert_eq!(child_after, child_before, "the child's fd table");
    drop(ch);
    child.stop(BOUND).unwrap();
    drop(child);
    assert_fds_back_to(&before, "both ways");
}

#[test]
fn fds_both_ways_from_several_tasks_async() {
    let _serial = serial();
    warm_tokio();
    let before = open_fds();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut child = readyfd::tokio::ReadyCommand::new(fd_serve(0))
            .spawn()
            .unwrap();
        child.wait_ready(BOUND).await.unwrap();
        let ch = child.channel().unwrap();
        let child_before: usize = ch.request(&FdReq::CountFds).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..THREADS {
            let ch = ch.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..PER_THREAD {
                    let tag = t * 1000 + i;
                    let fds = vec![pipe_holding(tag), pipe_holding(tag + 500)];
                    let (n, back): (u32, _) = ch.request_with_fds(&FdReq::Echo, fds).await.unwrap();
                    assert_eq!(n, 2);
                    let got: Vec<u32> = back.into_iter().map(content).collect();
                    assert_eq!(got, [tag, tag + 500]);
                }
            }));
        }
        let ch2 = ch.clone();
        tasks.push(tokio::spawn(async move {
            let n: u32 = ch2.request(&FdReq::NotifyBack(NOTIFIES)).await.unwrap();
            assert_eq!(n, NOTIFIES);
        }));
        let mut seen = Vec::new();
        while seen.len() < NOTIFIES as usize {
            match tokio::time::timeout(BOUND, ch.recv())
                .await
                .unwrap()
                .unwrap()
            {
                Incoming::Notify(mut n) => {
                    let i: u32 = n.decode().unwrap();
                    let fds = n.take_fds();
                    assert_eq!(fds.len(), 1);
                    assert_eq!(content(fds.into_iter().next().unwrap()), i);
                    seen.push(i);
                }
                other => panic!("{other:?}"),
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        seen.sort();
        assert_eq!(seen, (0..NOTIFIES).collect::<Vec<_>>());
        // As in the blocking test: the child's writers close their copies
        // of sent fds just after their `sendmsg`.
        let mut child_after: usize = ch.request(&FdReq::CountFds).await.unwrap();
        for _ in 0..SETTLE {
            if child_after == child_before {
                break;
            }
            child_after = ch.request(&FdReq::CountFds).await.unwrap();
        }
        assert_eq!(child_after, child_before, "the child's fd table");
        drop(ch);
        child.stop(BOUND).await.unwrap();
    });
    drop(rt);
    assert_fds_back_to(&before, "both ways, tokio");
}

type Check = fn(&SessionError) -> bool;

/// Each `fd-hostile` kind, with the typed error it must get.
const HOSTILE: [(&str, Check); 7] = [
    ("flood", |e| {
        matches!(
            e,
            SessionError::UnexpectedFds(_)
                | SessionError::Frame(FrameError::TooLarge { .. })
                | SessionError::Decode(_)
        )
    }),
    ("status", |e| {
        *e == SessionError::Decode(DecodeError::FdsNotAllowed("Status"))
    }),
    ("fewer", |e| {
        *e == SessionError::FdCountMismatch {
            kind: "Notify",
            announced: 3,
            arrived: 2,
        }
    }),
    ("more", |e| {
        *e == SessionError::FdCountMismatch {
            kind: "Notify",
            announced: 2,
            arrived: 3,
        }
    }),
    ("unflagged", |e| {
        *e == SessionError::FdCountMismatch {
            kind: "Notify",
            announced: 0,
            arrived: 1,
        }
    }),
    // The kernel may glue the fd-carrying bytes to the frame's first
    // bytes in one read (the fds then seem to belong to that frame, which
    // announced none), or deliver them in a read of their own (where no
    // frame starts).
    ("no-frame", |e| {
        *e == SessionError::UnexpectedFds(1)
            || *e
                == SessionError::FdCountMismatch {
                    kind: "Notify",
                    announced: 0,
                    arrived: 1,
                }
    }),
    ("close-mid", |e| {
        matches!(e, SessionError::Frame(FrameError::Truncated { .. }))
    }),
];

fn hostile_cmd(kind: &str) -> std::process::Command {
    let mut cmd = helper("fd-hostile");
    cmd.arg(kind);
    cmd
}

fn assert_hostile<T: std::fmt::Debug>(
    kind: &str,
    check: Check,
    ready: Result<T, ReadyError>,
    closed: Option<CloseReason>,
) {
    match ready {
        Err(ReadyError::Protocol {
            source: ProtocolError::Session(e),
            ..
        }) => assert!(check(&e), "{kind}: {e:?}"),
        other => panic!("{kind}: {other:?}"),
    }
    assert!(
        matches!(closed, Some(CloseReason::Protocol(_))),
        "{kind}: {closed:?}"
    );
}

#[test]
fn children_that_send_fds_against_the_rules_get_typed_errors() {
    let _serial = serial();
    for (kind, check) in HOSTILE {
        let before = open_fds();
        let mut child = ReadyCommand::new(hostile_cmd(kind))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let ready = child.wait_ready(BOUND).map(|r| r.via);
        let closed = child.channel().unwrap().closed();
        assert_hostile(kind, check, ready, closed);
        child.kill().unwrap();
        drop(child);
        assert_fds_back_to(&before, kind);
    }
}

#[test]
fn children_that_send_fds_against_the_rules_get_typed_errors_async() {
    let _serial = serial();
    warm_tokio();
    for (kind, check) in HOSTILE {
        let before = open_fds();
        let rt = common::current_thread();
        rt.block_on(async {
            let mut child = readyfd::tokio::ReadyCommand::new(hostile_cmd(kind))
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let ready = child.wait_ready(BOUND).await.map(|r| r.via);
            let closed = child.channel().unwrap().closed();
            assert_hostile(kind, check, ready, closed);
            child.kill().await.unwrap();
        });
        // The runtime, with what its tasks hold.
        drop(rt);
        assert_fds_back_to(&before, kind);
    }
}

/// A parent that sends fds against the rules: the child gets a typed error
/// and its fd table is what it was before the parent's first byte.
#[test]
fn a_hostile_parent_leaves_the_childs_fd_table_as_it_was() {
    let _serial = serial();
    let kinds = [
        "flood",
        "fewer",
        "more",
        "unflagged",
        "status",
        "no-frame",
        "close-mid",
    ];
    // The child's blocking driver, then its tokio driver.
    for (role, kind) in ["fd-victim", "async-fd-victim"]
        .into_iter()
        .flat_map(|r| kinds.map(|k| (r, k)))
    {
        let (ours, theirs) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let mut cmd = helper(role);
        cmd.env("READYFD", "3").stdout(Stdio::piped());
        place_fds(&mut cmd, &[(theirs.as_raw_fd(), 3)]);
        let mut proc = cmd.spawn().unwrap();
        drop(theirs);
        let mut out = std::io::BufReader::new(proc.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let child_before = line.trim().strip_prefix("before ").unwrap().to_string();
        hostile_parent(&ours, kind);
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let status = proc.wait().unwrap();
        assert!(status.success(), "{role} {kind}: {status:?} {rest}");
        assert!(
            rest.contains(&format!("after {child_before}\n")),
            "{role} {kind}: the child's fd count went from {child_before} to: {rest}"
        );
        assert!(
            rest.contains("error Closed(Protocol("),
            "{role} {kind}: {rest}"
        );
    }
}

/// What the `fd-hostile` child does, done by a parent.
fn hostile_parent(sock: &OwnedFd, kind: &str) {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let null = std::fs::File::open("/dev/null").unwrap();
    let n = null.as_raw_fd();
    let send = |bytes: &[u8], fds: &[i32]| {
        let iov = [std::io::IoSlice::new(bytes)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsg: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
        let _ = sendmsg::<()>(sock.as_raw_fd(), &iov, cmsg, MsgFlags::MSG_NOSIGNAL, None);
    };
    let mut hello = Vec::new();
    Message::Hello(readyfd::proto::Hello {
        version: readyfd::proto::PROTOCOL_VERSION,
        pid: std::process::id(),
        role: Role::Parent,
        max_frame: 1 << 20,
    })
    .encode(u32::MAX, &mut hello)
    .unwrap();
    send(&hello, &[]);
    let notify = |count: u8, body: &[u8]| {
        let mut p = Vec::new();
        if count > 0 {
            p.push(count);
        }
        p.extend_from_slice(body);
        let mut v = (p.len() as u32).to_le_bytes().to_vec();
        v.push(if count > 0 { 0x85 } else { 0x05 });
        v.extend(p);
        v
    };
    match kind {
        "flood" => {
            for _ in 0..4 {
                send(b"GARBAGE GARBAGE GARBAGE", &[n; 250]);
            }
        }
        "status" => send(&[3, 0, 0, 0, 0x86, 1, 0, 0], &[n]),
        "fewer" => send(&notify(3, b"x"), &[n; 2]),
        "more" => send(&notify(2, b"x"), &[n; 3]),
        "unflagged" => send(&notify(0, b"x"), &[n]),
        "no-frame" => {
            let f = notify(0, &[7; 100]);
            send(&f[..20], &[]);
            send(&f[20..40], &[n]);
        }
        "close-mid" => {
            let f = notify(5, &[7; 100]);
            send(&f[..30], &[n; 5]);
            let _ = nix::sys::socket::shutdown(sock.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn more_than_253_fds_is_an_encode_error_and_closes_them() {
    let _serial = serial();
    let mut child = ReadyCommand::new(fd_serve(0)).spawn().unwrap();
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    let before = open_fds();
    let fds: Vec<OwnedFd> = (0..254).map(pipe_holding).collect();
    match ch.request_with_fds::<_, u32>(&FdReq::Echo, fds) {
        Err(ChannelError::Encode(e)) => assert!(e.to_string().contains("254"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_fds_back_to(&before, "254 fds");
    // The channel is still usable.
    let (n, back): (u32, _) = ch
        .request_with_fds(&FdReq::Echo, vec![pipe_holding(9)])
        .unwrap();
    assert_eq!((n, back.len()), (1, 1));
    drop(back);
    drop(ch);
    child.stop(BOUND).unwrap();
}
