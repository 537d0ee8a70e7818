//! The grammar, datagram by datagram, against a made-up process tree and
//! a clock the tests move: no processes, no sockets.

use super::*;
use readyfd_proto::Address;
use std::io;

/// Our pid, uid, the spawned child, and a process tree: 101 is the
/// child's child, 102 its grandchild, 200 a stranger; 300 is gone.
const US: u32 = 50;
const UID: u32 = 1000;
const CHILD: u32 = 100;

fn tree(pid: u32) -> io::Result<u32> {
    match pid {
        CHILD => Ok(US),
        101 => Ok(CHILD),
        102 => Ok(101),
        200 => Ok(1),
        // An orphan of the child's, reparented to us (we are a subreaper).
        400 => Ok(US),
        _ => Err(io::ErrorKind::NotFound.into()),
    }
}

fn no_proc(_: u32) -> io::Result<u32> {
    Err(io::ErrorKind::NotFound.into())
}

fn datagram(from: u32, uid: u32, len: usize, fds: Vec<OwnedFd>) -> Received {
    Received {
        len,
        truncated: false,
        creds: Some(Credentials {
            pid: from as i32,
            uid,
        }),
        fds,
    }
}

/// A core fed datagrams at a clock the test moves.
struct Feed {
    core: Core,
    now: Instant,
    parent_pid: fn(u32) -> io::Result<u32>,
}

impl Feed {
    fn new() -> Feed {
        Feed {
            core: Core::new(UID, US, true),
            now: Instant::now(),
            parent_pid: tree,
        }
    }

    fn without_proc() -> Feed {
        Feed {
            core: Core::new(UID, US, false),
            now: Instant::now(),
            parent_pid: no_proc,
        }
    }

    fn received(&mut self, payload: &[u8], received: Received) -> Option<Seen> {
        let parent_pid = self.parent_pid;
        self.core
            .handle(payload, received, CHILD, self.now, &parent_pid);
        self.core.decision(CHILD)
    }

    fn send(&mut self, from: u32, payload: &str) -> Option<Seen> {
        let d = datagram(from, UID, payload.len(), Vec::new());
        self.received(payload.as_bytes(), d)
    }

    fn send_fds(&mut self, payload: &str, fds: Vec<OwnedFd>) -> Option<Seen> {
        let d = datagram(CHILD, UID, payload.len(), fds);
        self.received(payload.as_bytes(), d)
    }
}

fn fds(n: usize) -> Vec<OwnedFd> {
    (0..n)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect()
}

fn ready_pid(seen: Option<Seen>) -> u32 {
    match seen {
        Some(Seen::Ready(r, ReadyVia::Notify)) => r.pid,
        other => panic!("not ready: {other:?}"),
    }
}

fn failed(seen: Option<Seen>) -> (Option<i32>, String) {
    match seen {
        Some(Seen::Failed { errno, message }) => (errno, message),
        other => panic!("not failed: {other:?}"),
    }
}

#[test]
fn ready_from_the_child_or_a_descendant_decides() {
    let mut f = Feed::new();
    assert!(f.send(CHILD, "STATUS=starting\n").is_none());
    assert_eq!(ready_pid(f.send(CHILD, "READY=1")), CHILD);
    let mut f = Feed::new();
    assert_eq!(ready_pid(f.send(102, "READY=1\n")), CHILD);
    assert_eq!(f.core.state().accepted, 1);
}

#[test]
fn ready_from_a_stranger_another_user_or_a_broken_chain_is_ignored() {
    let mut f = Feed::new();
    assert!(f.send(200, "READY=1").is_none());
    assert!(f.send(300, "READY=1").is_none());
    assert!(f.send(US, "READY=1").is_none());
    assert!(f.send(0, "READY=1").is_none());
    let d = datagram(CHILD, UID + 1, 7, Vec::new());
    assert!(f.received(b"READY=1", d).is_none());
    let mut d = datagram(CHILD, UID, 7, Vec::new());
    d.creds = None;
    assert!(f.received(b"READY=1", d).is_none());
    assert_eq!(f.core.state().ignored, 6);
    assert_eq!(f.core.state().accepted, 0);
    // root counts.
    let d = datagram(CHILD, 0, 7, Vec::new());
    assert_eq!(ready_pid(f.received(b"READY=1", d)), CHILD);
}

#[test]
fn of_ready_reloading_and_stopping_the_last_in_a_datagram_counts() {
    let mut f = Feed::new();
    assert!(f.send(CHILD, "READY=1\nRELOADING=1").is_none());
    assert!(f.core.state().reloading);
    assert_eq!(ready_pid(f.send(CHILD, "RELOADING=1\nREADY=1")), CHILD);
    assert!(!f.core.state().reloading);
    let mut f = Feed::new();
    let (_, message) = failed(f.send(CHILD, "READY=1\r\nSTOPPING=1"));
    assert!(message.contains("STOPPING=1"), "{message}");
}

#[test]
fn status_first_in_a_datagram_latest_across_datagrams_empty_clears() {
    let mut f = Feed::new();
    f.send(CHILD, "STATUS=one\nSTATUS=two");
    assert_eq!(f.core.state().status.as_deref(), Some("one"));
    f.send(CHILD, "STATUS=three\n");
    assert_eq!(f.core.state().status.as_deref(), Some("three"));
    let d = datagram(CHILD, UID, 9, Vec::new());
    f.received(b"STATUS=\xff", d);
    assert_eq!(f.core.state().status.as_deref(), Some("three"));
    f.send(CHILD, "STATUS=");
    assert_eq!(f.core.state().status, None);
}

#[test]
fn mainpid_is_accepted_only_when_it_descends_from_the_child() {
    let mut f = Feed::new();
    f.send(CHILD, "MAINPID=200");
    f.send(CHILD, "MAINPID=300");
    f.send(CHILD, "MAINPID=0");
    f.send(CHILD, "MAINPID=x");
    assert_eq!(f.core.state().main_pid, None);
    f.send(CHILD, "MAINPID=101");
    assert_eq!(f.core.state().main_pid, Some(101));
    // The main pid's descendants count too, and it names readiness.
    assert_eq!(ready_pid(f.send(102, "READY=1")), 101);
}

#[test]
fn stopping_before_ready_fails_with_the_errno_and_status() {
    let mut f = Feed::new();
    let (errno, message) = failed(f.send(CHILD, "STATUS=no port\nERRNO=98\nSTOPPING=1"));
    assert_eq!(errno, Some(98));
    assert!(
        message.contains("no port") && message.contains("ERRNO=98"),
        "{message}"
    );
}

#[test]
fn errno_alone_fails_only_at_exit_and_zero_clears_it() {
    let mut f = Feed::new();
    assert!(f.send(CHILD, "ERRNO=EADDRINUSE").is_none());
    assert_eq!(f.core.state().errno, Some(nix::libc::EADDRINUSE));
    let (errno, _) = failed(Some(f.core.exit_outcome()));
    assert_eq!(errno, Some(nix::libc::EADDRINUSE));
    f.send(CHILD, "ERRNO=EBOGUS");
    assert_eq!(f.core.state().errno, Some(nix::libc::EADDRINUSE));
    f.send(CHILD, "ERRNO=0");
    assert_eq!(f.core.state().errno, None);
    assert!(matches!(f.core.exit_outcome(), Seen::Exit));
}

#[test]
fn extend_timeout_counts_from_the_injected_clock_and_never_shrinks() {
    let mut f = Feed::new();
    let t0 = f.now;
    f.send(CHILD, "EXTEND_TIMEOUT_USEC=5000000");
    assert_eq!(f.core.extended_until(), Some(t0 + Duration::from_secs(5)));
    f.now = t0 + Duration::from_secs(1);
    f.send(CHILD, "EXTEND_TIMEOUT_USEC=1000000");
    assert_eq!(f.core.extended_until(), Some(t0 + Duration::from_secs(5)));
    f.now = t0 + Duration::from_secs(10);
    f.send(CHILD, "EXTEND_TIMEOUT_USEC=1000000");
    assert_eq!(f.core.extended_until(), Some(t0 + Duration::from_secs(11)));
    assert_eq!(f.core.state().extend_timeout_usec, Some(1_000_000));
    // "No timeout for now" is far away, not a panic.
    f.send(CHILD, &format!("EXTEND_TIMEOUT_USEC={}", u64::MAX));
    assert!(f.core.extended_until().unwrap() > t0 + Duration::from_secs(86400 * 365));
}

#[test]
fn watchdog_pings_are_counted_and_a_trigger_before_ready_fails() {
    let mut f = Feed::new();
    f.send(CHILD, "WATCHDOG=1\nWATCHDOG_USEC=30");
    f.send(CHILD, "WATCHDOG=1");
    assert_eq!(f.core.state().watchdog_pings, 2);
    assert_eq!(f.core.state().watchdog_usec, Some(30));
    let (_, message) = failed(f.send(CHILD, "WATCHDOG=trigger"));
    assert!(message.contains("WATCHDOG=trigger"), "{message}");
}

#[test]
fn the_fd_store_is_named_bounded_and_removable() {
    let mut f = Feed::new();
    f.send_fds("FDSTORE=1\nFDNAME=web", fds(2));
    f.send_fds("FDSTORE=1\nFDNAME=bad:name", fds(1));
    // Fds of a datagram that does not store them are closed.
    f.send_fds("STATUS=x", fds(3));
    let names: Vec<String> = f.core.stored.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, ["web", "web", "stored"]);
    f.send_fds("FDSTOREREMOVE=1\nFDNAME=web", Vec::new());
    assert_eq!(f.core.stored.len(), 1);
    f.send_fds("FDSTORE=1", fds(FDSTORE_MAX));
    assert_eq!(f.core.take_stored().len(), FDSTORE_MAX);
    assert!(f.core.take_stored().is_empty());
}

#[test]
fn oversized_truncated_and_nul_datagrams_are_ignored_whole() {
    let mut f = Feed::new();
    let mut big = b"READY=1\n".to_vec();
    big.resize(NOTIFY_DATAGRAM_MAX + 1, b'x');
    let d = datagram(CHILD, UID, big.len(), Vec::new());
    assert!(f.received(&big, d).is_none());
    // Longer than the buffer that holds it: the kernel cut it.
    let d = datagram(CHILD, UID, 100, Vec::new());
    assert!(f.received(b"READY=1", d).is_none());
    let mut d = datagram(CHILD, UID, 7, Vec::new());
    d.truncated = true;
    assert!(f.received(b"READY=1", d).is_none());
    let d = datagram(CHILD, UID, 9, Vec::new());
    assert!(f.received(b"READY=1\0\n", d).is_none());
    assert_eq!(f.core.state().ignored, 4);
    // One trailing NUL is fine.
    let d = datagram(CHILD, UID, 8, Vec::new());
    assert_eq!(ready_pid(f.received(b"READY=1\0", d)), CHILD);
}

#[test]
fn a_barrier_is_neither_counted_nor_checked() {
    let mut f = Feed::new();
    let d = datagram(200, UID, 9, fds(1));
    assert!(f.received(b"BARRIER=1", d).is_none());
    assert_eq!((f.core.state().accepted, f.core.state().ignored), (0, 0));
}

#[test]
fn addresses_of_the_latest_datagram_that_has_them_win() {
    let mut f = Feed::new();
    f.send(CHILD, "X_READYFD_ADDRESS=a=tcp:127.0.0.1:1");
    f.send(
        CHILD,
        "X_READYFD_ADDRESS=b=text:x\nX_READYFD_ADDRESS=c=text:y",
    );
    match f.send(CHILD, "READY=1") {
        Some(Seen::Ready(r, _)) => {
            let names: Vec<&str> = r.addresses.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, ["b", "c"]);
        }
        other => panic!("not ready: {other:?}"),
    }
}

#[test]
fn without_proc_ready_from_a_descendant_is_a_clear_failure() {
    let mut f = Feed::without_proc();
    // The child itself needs no lookup.
    f.send(CHILD, "STATUS=up");
    assert_eq!(f.core.state().accepted, 1);
    let (_, message) = failed(f.send(102, "READY=1"));
    assert!(
        message.contains("process 102") && message.contains("/proc"),
        "{message}"
    );
    // With /proc, the same broken chain is only ignored.
    let mut f = Feed {
        parent_pid: no_proc,
        ..Feed::new()
    };
    assert!(f.send(102, "READY=1").is_none());
}

#[test]
fn without_proc_an_unverifiable_mainpid_fails_the_exit() {
    let mut f = Feed::without_proc();
    assert!(f.send(CHILD, "MAINPID=101").is_none());
    assert_eq!(f.core.state().main_pid, None);
    let (_, message) = failed(Some(f.core.exit_outcome()));
    assert!(message.contains("MAINPID=101"), "{message}");
}

#[test]
fn errno_numbers_and_names() {
    assert_eq!(parse_errno("98"), Some(98));
    assert_eq!(parse_errno("0"), Some(0));
    assert_eq!(parse_errno("EADDRINUSE"), Some(nix::libc::EADDRINUSE));
    assert_eq!(parse_errno("-1"), None);
    assert_eq!(parse_errno("4096"), None);
    assert_eq!(parse_errno("EWHATEVER"), None);
    assert_eq!(parse_errno("x"), None);
}

#[test]
fn fdnames() {
    assert_eq!(fdname(b"web").as_deref(), Some("web"));
    assert_eq!(fdname(b"").as_deref(), Some(""));
    assert_eq!(fdname(b"a:b"), None);
    assert_eq!(fdname(b"a\x01"), None);
    assert_eq!(fdname(&[b'a'; 256]), None);
}

#[test]
fn endpoints_round_trip() {
    let cases = [
        Endpoint::new("http", Address::Tcp("127.0.0.1:80".parse().unwrap())),
        Endpoint::new("dns", Address::Udp("[::1]:53".parse().unwrap())),
        Endpoint::new("", Address::Unix("@abstract".into())),
        Endpoint::new("bus", Address::Text("unix:path=/x,guid=1".into())),
        Endpoint::new("odd", Address::Text("tcp:1.2.3.4:5".into())),
    ];
    for e in cases {
        let line = format_endpoint(&e).unwrap();
        let value = line.strip_prefix("X_READYFD_ADDRESS=").unwrap();
        assert_eq!(parse_endpoint(value), Some(e));
    }
    let bad = Endpoint::new("a=b", Address::Text("x".into()));
    assert_eq!(format_endpoint(&bad), None);
    let bad = Endpoint::new("a", Address::Text("x\ny".into()));
    assert_eq!(format_endpoint(&bad), None);
}

/// Keys the generated datagrams are made of, so that random lines often
/// mean something.
const KEYS: &[&str] = &[
    "READY=1",
    "RELOADING=1",
    "STOPPING=1",
    "STATUS=",
    "MAINPID=",
    "ERRNO=",
    "BUSERROR=",
    "EXTEND_TIMEOUT_USEC=",
    "WATCHDOG=",
    "WATCHDOG_USEC=",
    "MONOTONIC_USEC=",
    "FDNAME=",
    "FDSTOREREMOVE=1",
    "X_READYFD_ADDRESS=",
    "BARRIER=1",
];

fn line() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    (proptest::sample::select(KEYS), "[ -~]{0,12}").prop_map(|(k, v)| {
        if k.ends_with('=') {
            format!("{k}{v}")
        } else {
            k.to_string()
        }
    })
}

proptest::proptest! {
    /// Whatever bytes come, nothing panics and every datagram but a lone
    /// barrier is counted once, as accepted or as ignored.
    #[test]
    fn any_datagram_is_counted_once(
        payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        from in proptest::sample::select(&[CHILD, 101, 200, 300][..]),
    ) {
        let mut f = Feed::new();
        let _ = f.received(&payload, datagram(from, UID, payload.len(), Vec::new()));
        let s = f.core.state();
        let body = payload.strip_suffix(&[0]).unwrap_or(&payload);
        let mut lines = body.split(|&b| b == b'\n' || b == b'\r').filter(|l| !l.is_empty());
        let barrier = !body.contains(&0)
            && lines.next() == Some(&b"BARRIER=1"[..])
            && lines.next().is_none();
        proptest::prop_assert_eq!(s.accepted + s.ignored, u64::from(!barrier));
    }

    /// `\n`, `\r\n`, `\r`, blank lines and a final newline all split the
    /// same lines: the state after a datagram does not depend on them.
    #[test]
    fn line_endings_do_not_matter(
        lines in proptest::collection::vec(line(), 0..8),
        sep in proptest::sample::select(&["\r\n", "\r", "\n\n"][..]),
        last in proptest::sample::select(&["", "\n", "\r\n"][..]),
    ) {
        let mut plain = Feed::new();
        let mut other = Feed { now: plain.now, ..Feed::new() };
        let a = plain.send(CHILD, &lines.join("\n"));
        let b = other.send(CHILD, &format!("{}{last}", lines.join(sep)));
        proptest::prop_assert_eq!(plain.core.state(), other.core.state());
        proptest::prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
        proptest::prop_assert_eq!(plain.core.extended_until(), other.core.extended_until());
    }

    /// Against a reference: the status is the first `STATUS=` of the latest
    /// datagram that has a UTF-8 one, `None` when that one is empty.
    #[test]
    fn status_follows_the_reference(
        datagrams in proptest::collection::vec(proptest::collection::vec(line(), 0..4), 0..6),
    ) {
        let mut f = Feed::new();
        let mut expected = None;
        for lines in &datagrams {
            f.send(CHILD, &lines.join("\n"));
            if lines.len() == 1 && lines[0] == "BARRIER=1" {
                continue;
            }
            if let Some(s) = lines.iter().find_map(|l| l.strip_prefix("STATUS=")) {
                expected = (!s.is_empty()).then(|| s.to_string());
            }
        }
        proptest::prop_assert_eq!(&f.core.state().status, &expected);
    }
}

#[test]
fn an_orphan_reparented_to_us_counts_only_when_asked() {
    let mut f = Feed::new();
    assert!(f.send(400, "READY=1").is_none());
    assert_eq!(f.core.state().ignored, 1);
    let mut f = Feed::new();
    f.core.accept_adopted(true);
    assert_eq!(ready_pid(f.send(400, "READY=1")), CHILD);
    // Never our own datagrams, nor a stranger's.
    let mut f = Feed::new();
    f.core.accept_adopted(true);
    assert!(f.send(US, "READY=1").is_none());
    assert!(f.send(200, "READY=1").is_none());
}
