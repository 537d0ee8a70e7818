//! Native-protocol children written in other languages from
//! `proto/PROTOCOL.md` alone, without the Rust code: `tests/peers/child.py`
//! (Python 3, standard library only) and `tests/peers/go` (Go, standard
//! library only). They prove the spec is enough to write a peer: each takes
//! the channel, reports the TCP address it bound in `Ready`, sends a
//! `Status` and a `Notify`, answers `Ping`, a typed request (a `String`,
//! answered upper-cased) and `Shutdown`, and ends on `Goodbye` or end of
//! stream. Both drivers, blocking and tokio, are run against both peers;
//! so are the peers' hostile modes, which must get typed errors. The peers'
//! own checks are tested too: on `proto/vectors.json`, on descriptors that
//! are not their channel (section 1), and against a hand-written parent
//! that breaks the session rules.
//!
//! The tests count this process's fds, so they run one at a time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use readyfd::{
    Address, ChannelError, ChannelOptions, CloseReason, Incoming, ReadyCommand, ReadyVia,
    RemoteErrorKind, StopVia,
};
use readyfd_proto::{DecodeError, FrameError, SessionConfig, SessionError};

use common::{BOUND, first_line, python3};

/// One test at a time: they count the process's fds.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The peers' sources.
fn peers_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
    assert!(
        dir.join("child.py").is_file() && dir.join("go/main.go").is_file(),
        "the peers' sources are missing from {} (they are not in the published crate: \
         run these tests from a clone)",
        dir.display()
    );
    dir
}

/// The Go peer, built once per test binary run into `target/tmp`, with the
/// Go build cache and module path under `target/` too (nothing lands in
/// `$HOME`; no network: there are no dependencies and `GOPROXY=off`).
fn go_peer() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let found = Command::new("go")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "this test needs the Go toolchain on PATH (Debian: apt-get install golang-go)"
        );
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let out = tmp.join("readyfd-go-peer");
        let built = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(peers_dir().join("go"))
            .env("GOCACHE", tmp.join("go-cache"))
            .env("GOPATH", tmp.join("go-path"))
            .env("GOPROXY", "off")
            .env("CGO_ENABLED", "0")
            .output()
            .expect("run go build");
        assert!(
            built.status.success(),
            "go build of tests/peers/go failed:\n{}",
            String::from_utf8_lossy(&built.stderr)
        );
        out
    })
}

#[derive(Clone, Copy, Debug)]
enum Peer {
    Python,
    Go,
}

impl Peer {
    /// The peer's command, with `--hostile=MODE` when `hostile` is given.
    fn command(self, hostile: Option<&str>) -> Command {
        let mut cmd = match self {
            Peer::Python => {
                let mut cmd = python3();
                cmd.arg(peers_dir().join("child.py"));
                cmd
            }
            Peer::Go => Command::new(go_peer()),
        };
        if let Some(mode) = hostile {
            cmd.arg(format!("--hostile={mode}"));
        }
        cmd
    }

    /// What the peer calls itself: in its greeting, status and notification.
    fn name(self) -> &'static str {
        match self {
            Peer::Python => "python",
            Peer::Go => "go",
        }
    }
}

/// The process's open fds, without the one this listing itself opens.
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

fn assert_no_new_fds(peer: Peer, before: &[String]) {
    let after = open_fds();
    let new: Vec<&String> = after.iter().filter(|fd| !before.contains(fd)).collect();
    assert!(
        new.is_empty(),
        "{peer:?}: fds left open: {new:?} (before {before:?}, after {after:?})"
    );
}

/// The TCP address a peer reported in its `Ready`, with every other field
/// of the `Ready` checked.
fn checked_address(peer: Peer, r: &readyfd::Readiness, pid: u32) -> std::net::SocketAddr {
    assert_eq!(r.via, ReadyVia::Message, "{peer:?}");
    assert_eq!(r.ready.pid, pid, "{peer:?}: Ready names the peer's own pid");
    assert_eq!(r.pid_mismatch(), None);
    assert_eq!(r.ready.status.as_deref(), Some("listening"), "{peer:?}");
    assert_eq!(r.ready.addresses.len(), 1, "{peer:?}: {:?}", r.ready);
    let Some(Address::Tcp(addr)) = r.ready.get("http") else {
        panic!("{peer:?}: no tcp address named http: {:?}", r.ready)
    };
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    *addr
}

/// The peer's greeting on its TCP listener: the address is the one it bound.
fn greeting(addr: std::net::SocketAddr) -> String {
    first_line(std::net::TcpStream::connect(addr).unwrap())
}

/// Whether a protocol error is the one a hostile mode must get.
type Check = fn(&SessionError) -> bool;

/// The typed error each hostile mode must get, and the bytes it sends.
const HOSTILE: [(&str, Check); 3] = [
    // A Notify of 4097 bytes to a parent that announced 4096: refused on
    // the header alone.
    ("oversized", |e| {
        matches!(
            e,
            SessionError::Frame(FrameError::TooLarge {
                len: 4097,
                max: 4096
            })
        )
    }),
    // `00000000 2a`: an empty frame of kind 0x2a.
    ("unknown-kind", |e| {
        matches!(e, SessionError::Decode(DecodeError::UnknownKind(0x2a)))
    }),
    // A Status whose string is `ff fe`.
    ("bad-utf8", |e| {
        matches!(e, SessionError::Decode(DecodeError::InvalidUtf8))
    }),
];

/// A parent that accepts frames of 4096 bytes at most (the minimum).
fn small_frames() -> ChannelOptions {
    ChannelOptions::new().session(SessionConfig::new().max_frame(4096))
}

/// Spawn, ready with the bound address, Status, Notify, a typed round
/// trip, a typed refusal, Ping, then `stop` through Shutdown with exit 0;
/// then a second run ended by the parent's Goodbye. No fd left behind.
fn blocking_session(peer: Peer) {
    let _serial = serial();
    let cmd = peer.command(None); // builds the Go peer before counting fds
    let before = open_fds();
    {
        let mut child = ReadyCommand::new(cmd).spawn().expect("spawn");
        let pid = child.id();
        let r = child.wait_ready(BOUND).unwrap().clone();
        let addr = checked_address(peer, &r, pid);
        assert_eq!(greeting(addr), format!("{} peer", peer.name()));

        let ch = child.channel().unwrap();
        // The peer sends Status, then Notify: once the Notify is here, so
        // is the Status.
        match ch.recv_timeout(BOUND).unwrap().expect("the peer's Notify") {
            Incoming::Notify(note) => {
                assert_eq!(
                    note.decode::<String>().unwrap(),
                    format!("hello from {}", peer.name())
                )
            }
            other => panic!("{peer:?}: {other:?}"),
        }
        assert_eq!(
            child.last_status(),
            Some(format!("serving from {}", peer.name()))
        );

        let up: String = ch.request(&"hello, peer: ünïcode").unwrap();
        assert_eq!(up, "HELLO, PEER: ÜNÏCODE");
        let empty: String = ch.request(&"").unwrap();
        assert_eq!(empty, "");
        match ch.request::<_, String>(&7u32) {
            Err(ChannelError::Remote(e)) => {
                assert_eq!(e.kind, RemoteErrorKind::BadRequest, "{peer:?}: {e:?}")
            }
            other => panic!("{peer:?}: a u32 is not a String: {other:?}"),
        }
        // A Notify of ours is one-way: the peer reads it and goes on.
        ch.notify(&"from the parent").unwrap();
        ch.ping(BOUND).unwrap();
        drop(ch);

        let stopped = child.stop(BOUND).unwrap();
        assert_eq!(stopped.via, StopVia::Shutdown, "{peer:?}: {stopped:?}");
        assert_eq!(stopped.status.code(), Some(0), "{peer:?}: {stopped:?}");

        // Goodbye from the parent: the peer closes and exits 0.
        let mut child = ReadyCommand::new(peer.command(None)).spawn().unwrap();
        child.wait_ready(BOUND).unwrap();
        let ch = child.channel().unwrap();
        ch.close();
        let status = child.wait_timeout(BOUND).unwrap().expect("exits");
        assert_eq!(status.code(), Some(0), "{peer:?}: {status:?}");
        assert!(
            matches!(ch.closed(), Some(CloseReason::Local)),
            "{:?}",
            ch.closed()
        );
    }
    assert_no_new_fds(peer, &before);
}

#[test]
fn python_peer_blocking() {
    blocking_session(Peer::Python);
}

#[test]
fn go_peer_blocking() {
    blocking_session(Peer::Go);
}

/// Each hostile mode gets its typed error after Ready, and the parent says
/// `Goodbye(ProtocolError)`: the peer waits for it and exits 0 (4 if the
/// stream ended without it, 5 for another reason).
fn blocking_hostile(peer: Peer) {
    let _serial = serial();
    let cmds: Vec<_> = HOSTILE
        .iter()
        .map(|(mode, _)| peer.command(Some(mode)))
        .collect();
    let before = open_fds();
    for (cmd, (mode, check)) in cmds.into_iter().zip(HOSTILE) {
        let mut child = ReadyCommand::new(cmd)
            .channel_options(small_frames())
            .spawn()
            .unwrap();
        let pid = child.id();
        let r = child.wait_ready(BOUND).unwrap().clone();
        checked_address(peer, &r, pid);
        let ch = child.channel().unwrap();
        match ch.recv_timeout(BOUND) {
            Err(ChannelError::Closed(CloseReason::Protocol(e))) => {
                assert!(check(&e), "{peer:?} {mode}: {e:?}");
                assert!(!e.to_string().is_empty());
            }
            other => panic!("{peer:?} {mode}: {other:?}"),
        }
        assert!(
            matches!(ch.closed(), Some(CloseReason::Protocol(ref e)) if check(e)),
            "{peer:?} {mode}: {:?}",
            ch.closed()
        );
        drop(ch);
        let status = child.wait_timeout(BOUND).unwrap().expect("exits");
        assert_eq!(
            status.code(),
            Some(0),
            "{peer:?} {mode}: the parent said Goodbye(ProtocolError): {status:?}"
        );
    }
    assert_no_new_fds(peer, &before);
}

#[test]
fn python_peer_hostile_blocking() {
    blocking_hostile(Peer::Python);
}

#[test]
fn go_peer_hostile_blocking() {
    blocking_hostile(Peer::Go);
}

/// Each peer decodes the frames of `proto/vectors.json` (section 9) as it
/// reads its channel: the valid ones decode, and each invalid one fails
/// with its error class (UnexpectedEnd and LimitExceeded taken as one, as
/// section 7 allows). Frames with descriptors are UnknownKind to these
/// peers, which do not support them (section 8).
#[test]
fn the_peers_decode_the_vectors_as_the_reference_does() {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/vectors.json");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&vectors).unwrap()).unwrap();
    let count: usize = ["valid", "decode_only", "invalid", "fd_valid", "fd_invalid"]
        .iter()
        .map(|part| json[part].as_array().unwrap().len())
        .sum();
    for peer in [Peer::Python, Peer::Go] {
        let out = peer
            .command(None)
            .arg(format!("--check-vectors={}", vectors.display()))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{peer:?}: {stdout}\n{stderr}");
        assert_eq!(
            stdout,
            format!("{count} vectors checked, 0 failed\n"),
            "{peer:?}: {stderr}"
        );
    }
}

/// A frame: the length, the kind, the payload (PROTOCOL.md section 2).
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(payload);
    f
}

/// A `Hello` frame of `version`, `role` and `max_frame`.
fn hello(version: u16, role: u32, max_frame: u32) -> Vec<u8> {
    let mut p = b"RDFD".to_vec();
    p.extend_from_slice(&version.to_le_bytes());
    p.extend_from_slice(&4121u32.to_le_bytes());
    p.extend_from_slice(&role.to_le_bytes());
    p.extend_from_slice(&max_frame.to_le_bytes());
    frame(1, &p)
}

/// Each peer checks what a parent sends as sections 2 to 5 say: a parent
/// written by hand here breaks one rule per case, and the peer answers
/// with `Goodbye` (`ProtocolError`, or `VersionMismatch`) after its own
/// `Hello` and `Ready`, says why on stderr and exits 3.
#[test]
fn the_peers_refuse_a_parent_that_breaks_the_session() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let parent = hello(1, 0, 1 << 24);
    let status = frame(6, &[&5u64.to_le_bytes()[..], b"hello"].concat());
    let ok_response = frame(4, &[&5u64.to_le_bytes()[..], &0u32.to_le_bytes()].concat());
    let ready = frame(
        2,
        &[&1u32.to_le_bytes()[..], &0u64.to_le_bytes(), &[0]].concat(),
    );
    let cases: [(Vec<u8>, u32, &str); 8] = [
        (hello(1, 1, 1 << 24), 2, "role conflict"),
        (
            hello(9, 0, 1 << 24),
            3,
            "version mismatch: ours 1, theirs 9",
        ),
        (hello(1, 0, 4095), 2, "max_frame too small"),
        (status.clone(), 2, "expected Hello first"),
        ([&parent[..], &parent].concat(), 2, "duplicate Hello"),
        ([&parent[..], &ready].concat(), 2, "wrong direction"),
        (
            [&parent[..], &ok_response].concat(),
            2,
            "unknown response id",
        ),
        (
            [&parent[..], &[0xff, 0xff, 0xff, 0xff, 5]].concat(),
            2,
            "too large",
        ),
    ];
    let _serial = serial();
    for peer in [Peer::Python, Peer::Go] {
        for (input, reason, says) in &cases {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            let mut cmd = peer.command(None);
            cmd.env("READYFD", "3").env_remove("READYFD_INODE");
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            common::place_fds(&mut cmd, &[(theirs.as_raw_fd(), 3)]);
            let child = cmd.spawn().unwrap();
            drop(cmd);
            drop(theirs);
            let mut ours = ours;
            ours.write_all(input).unwrap();
            let mut got = Vec::new();
            ours.read_to_end(&mut got).unwrap();
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{peer:?} {says}: {stderr}");
            assert!(stderr.contains(says), "{peer:?}: {stderr:?} lacks {says:?}");
            // Its frames: Hello, Ready, Status and Notify once it has read
            // a valid Hello, then the Goodbye with its reason.
            let mut kinds = Vec::new();
            let mut rest = &got[..];
            let mut last = &[][..];
            while rest.len() >= 5 {
                let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                kinds.push(rest[4]);
                last = &rest[5..5 + len];
                rest = &rest[5 + len..];
            }
            assert!(rest.is_empty(), "{peer:?} {says}: {got:02x?}");
            let hello_ok = input.starts_with(&parent);
            let want: &[u8] = if hello_ok {
                &[1, 2, 6, 5, 7]
            } else {
                &[1, 2, 7]
            };
            assert_eq!(kinds, want, "{peer:?} {says}");
            assert_eq!(
                u32::from_le_bytes(last[..4].try_into().unwrap()),
                *reason,
                "{peer:?} {says}"
            );
        }
    }
}

/// Section 1, child side, as each peer implements it: without `READYFD`,
/// with one that names no socket, and with a socket whose identity is not
/// `READYFD_INODE`'s, the peer refuses the channel (exit 2, saying why)
/// and sends nothing.
#[test]
fn the_peers_refuse_a_descriptor_that_is_not_their_channel() {
    use std::os::fd::AsRawFd;
    let _serial = serial();
    for peer in [Peer::Python, Peer::Go] {
        let (ours, theirs) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        // (what the peer says, its environment, whether the socket is at 3)
        type Case = (&'static str, &'static [(&'static str, &'static str)], bool);
        let cases: [Case; 4] = [
            ("READYFD is not set", &[], false),
            ("READYFD=0 is not a socket", &[("READYFD", "0")], false),
            (
                "inherited the variables without the descriptor",
                &[("READYFD", "3"), ("READYFD_INODE", "1:1")],
                true,
            ),
            (
                "is not <dev>:<ino>",
                &[("READYFD", "3"), ("READYFD_INODE", "8")],
                true,
            ),
        ];
        for (says, vars, placed) in cases {
            let mut cmd = peer.command(None);
            cmd.env_remove("READYFD").env_remove("READYFD_INODE");
            cmd.envs(vars.iter().copied());
            cmd.stdin(std::process::Stdio::null());
            if placed {
                common::place_fds(&mut cmd, &[(theirs.as_raw_fd(), 3)]);
            }
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{peer:?} {says}: {stderr}");
            assert!(stderr.contains(says), "{peer:?}: {stderr:?} lacks {says:?}");
        }
        // Nothing was sent on the socket it was right to refuse.
        drop(theirs);
        let mut buf = [0u8; 16];
        assert_eq!(nix::unistd::read(&ours, &mut buf).unwrap(), 0);
    }
}

#[cfg(feature = "tokio")]
mod aio {
    use super::*;
    use readyfd::tokio::{Incoming, ReadyCommand};

    /// [`blocking_session`], driven from tokio.
    async fn session(peer: Peer) {
        let mut child = ReadyCommand::new(peer.command(None)).spawn().unwrap();
        let pid = child.id();
        let r = child.wait_ready(BOUND).await.unwrap().clone();
        let addr = checked_address(peer, &r, pid);
        // The address works (the blocking read is a few bytes on loopback).
        assert_eq!(greeting(addr), format!("{} peer", peer.name()));

        let ch = child.channel().unwrap();
        match ch.recv_timeout(BOUND).await.unwrap().expect("Notify") {
            Incoming::Notify(note) => assert_eq!(
                note.decode::<String>().unwrap(),
                format!("hello from {}", peer.name())
            ),
            other => panic!("{peer:?}: {other:?}"),
        }
        assert_eq!(
            child.last_status(),
            Some(format!("serving from {}", peer.name()))
        );
        let up: String = ch.request(&"hello, peer: ünïcode").await.unwrap();
        assert_eq!(up, "HELLO, PEER: ÜNÏCODE");
        match ch.request::<_, String>(&7u32).await {
            Err(ChannelError::Remote(e)) => {
                assert_eq!(e.kind, RemoteErrorKind::BadRequest, "{peer:?}: {e:?}")
            }
            other => panic!("{peer:?}: {other:?}"),
        }
        ch.notify(&"from the parent").await.unwrap();
        ch.ping(BOUND).await.unwrap();
        drop(ch);
        let stopped = child.stop(BOUND).await.unwrap();
        assert_eq!(stopped.via, StopVia::Shutdown, "{peer:?}: {stopped:?}");
        assert_eq!(stopped.status.code(), Some(0), "{peer:?}: {stopped:?}");

        let mut child = ReadyCommand::new(peer.command(None)).spawn().unwrap();
        child.wait_ready(BOUND).await.unwrap();
        let ch = child.channel().unwrap();
        ch.close();
        let status = child.wait_timeout(BOUND).await.unwrap().expect("exits");
        assert_eq!(status.code(), Some(0), "{peer:?}: {status:?}");
    }

    async fn hostile(peer: Peer) {
        for (mode, check) in HOSTILE {
            let mut child = ReadyCommand::new(peer.command(Some(mode)))
                .channel_options(small_frames())
                .spawn()
                .unwrap();
            child.wait_ready(BOUND).await.unwrap();
            let ch = child.channel().unwrap();
            match ch.recv_timeout(BOUND).await {
                Err(ChannelError::Closed(CloseReason::Protocol(e))) => {
                    assert!(check(&e), "{peer:?} {mode}: {e:?}")
                }
                other => panic!("{peer:?} {mode}: {other:?}"),
            }
            drop(ch);
            let status = child.wait_timeout(BOUND).await.unwrap().expect("exits");
            assert_eq!(status.code(), Some(0), "{peer:?} {mode}: {status:?}");
        }
    }

    /// Spawns and reaps one child with tokio once, so that the fds tokio
    /// opens for good on first use (its `SIGCHLD` pipe) are open before any
    /// count.
    fn warm_tokio() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            common::current_thread().block_on(async {
                let status = tokio::process::Command::new("true").status().await;
                assert!(status.unwrap().success());
            });
        });
    }

    /// Counts fds around a current-thread runtime that lives only for `f`.
    fn counted<F: std::future::Future<Output = ()>>(peer: Peer, f: impl FnOnce(Peer) -> F) {
        let _serial = serial();
        drop(peer.command(None)); // builds the Go peer before counting fds
        warm_tokio();
        let before = open_fds();
        common::current_thread().block_on(f(peer));
        assert_no_new_fds(peer, &before);
    }

    #[test]
    fn python_peer_tokio() {
        counted(Peer::Python, session);
    }

    #[test]
    fn go_peer_tokio() {
        counted(Peer::Go, session);
    }

    #[test]
    fn python_peer_hostile_tokio() {
        counted(Peer::Python, hostile);
    }

    #[test]
    fn go_peer_hostile_tokio() {
        counted(Peer::Go, hostile);
    }
}
