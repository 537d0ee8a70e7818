//! Raw byte bodies over the native channel, with real processes, for the
//! blocking and the tokio driver: `request_bytes`, `notify_bytes` and
//! `respond_bytes` both ways (empty, small, 4 KiB and 1 MiB bodies), with
//! file descriptors, and against a peer that uses the typed (serde) API,
//! where the two meet: a raw body is the payload's remaining bytes, so it
//! is the encoding of whatever typed value the other side reads or wrote.
//!
//! The helper child `bytes-echo` answers each request with its body and
//! fds, and sends each notification back the same way.

mod common;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use bytes::Bytes;
use readyfd::proto::codec::encode_body;
use readyfd::{ChannelError, Incoming, ReadyCommand};

use common::protocol::TestReq;
use common::{BOUND, helper};

/// One test at a time: two of them count this process's fds.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn bodies() -> Vec<Bytes> {
    vec![
        Bytes::new(),
        Bytes::from_static(b"hello"),
        (0..4096u32).map(|i| (i * 31 % 251) as u8).collect(),
        (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect(),
    ]
}

fn pipe_holding(i: u32) -> OwnedFd {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    std::io::Write::write_all(&mut std::fs::File::from(w), &i.to_le_bytes()).unwrap();
    r
}

/// The `u32` a `pipe_holding` pipe holds, read to its end.
fn content(fd: OwnedFd) -> u32 {
    let mut v = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut v).unwrap();
    u32::from_le_bytes(v.try_into().expect("4 bytes"))
}

fn assert_fds_back_to(before: &[String], what: &str) {
    let after = common::open_fds();
    let new: Vec<&String> = after.iter().filter(|fd| !before.contains(fd)).collect();
    assert!(new.is_empty(), "{what}: fds left open: {new:?}");
}

// ---- blocking -----------------------------------------------------------

fn echo_child() -> readyfd::ReadyChild {
    let mut child = ReadyCommand::new(helper("bytes-echo")).spawn().unwrap();
    child.wait_ready(BOUND).unwrap();
    child
}

#[test]
fn byte_bodies_come_back_as_they_went_both_ways() {
    let _serial = serial();
    let mut child = echo_child();
    let ch = child.channel().unwrap();
    for body in bodies() {
        let back = ch.request_bytes(&body).unwrap();
        assert_eq!(back, body, "request of {} bytes", body.len());
        ch.notify_bytes(&body).unwrap();
        match ch.recv_timeout(BOUND).unwrap() {
            Some(Incoming::Notify(n)) => {
                assert_eq!(n.body(), body, "notification of {} bytes", body.len());
                assert_eq!(n.bytes(), &body[..]);
            }
            other => panic!("{other:?}"),
        }
    }
    drop(ch);
    child.stop(BOUND).unwrap();
}

#[test]
fn the_child_asks_with_a_byte_body_and_is_answered_with_one() {
    let _serial = serial();
    let mut child = echo_child();
    let ch = child.channel().unwrap();
    std::thread::scope(|s| {
        let asker = s.spawn(|| ch.request_bytes(b"ask-parent").unwrap());
        match ch.recv_timeout(BOUND).unwrap() {
            Some(Incoming::Request(req)) => {
                assert_eq!(req.body(), Bytes::from_static(b"from the child"));
                req.respond_bytes(b"the answer").unwrap();
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(asker.join().unwrap(), Bytes::from_static(b"the answer"));
    });
    drop(ch);
    child.stop(BOUND).unwrap();
}

/// An answer too large for the peer is refused, and the peer still gets
/// an answer: an error that says why.
#[test]
fn a_byte_answer_over_the_peers_maximum_is_answered_with_an_error() {
    let _serial = serial();
    let mut child = echo_child();
    let ch = child.channel().unwrap();
    std::thread::scope(|s| {
        let asker = s.spawn(|| ch.request_bytes(b"ask-parent").unwrap());
        match ch.recv_timeout(BOUND).unwrap() {
            Some(Incoming::Request(req)) => {
                let huge = vec![0u8; 16 << 20];
                match req.respond_bytes(&huge) {
                    Err(ChannelError::Encode(_)) => {}
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
        let said = String::from_utf8(asker.join().unwrap().to_vec()).unwrap();
        assert!(said.starts_with("error: "), "{said}");
        assert!(said.contains("Failed"), "{said}");
    });
    drop(ch);
    child.stop(BOUND).unwrap();
}

#[test]
fn fds_travel_with_byte_bodies() {
    let _serial = serial();
    let before = common::open_fds();
    let mut child = echo_child();
    let ch = child.channel().unwrap();
    let body: Bytes = vec![9u8; 4096].into();
    let (back, fds) = ch
        .request_bytes_with_fds(&body, vec![pipe_holding(1), pipe_holding(2)])
        .unwrap();
    assert_eq!(back, body);
    assert_eq!(fds.into_iter().map(content).collect::<Vec<_>>(), [1, 2]);
    ch.notify_bytes_with_fds(b"", vec![pipe_holding(3)])
        .unwrap();
    match ch.recv_timeout(BOUND).unwrap() {
        Some(Incoming::Notify(mut n)) => {
            assert!(n.body().is_empty());
            let fds = n.take_fds();
            assert_eq!(fds.into_iter().map(content).collect::<Vec<_>>(), [3]);
        }
        other => panic!("{other:?}"),
    }
    drop(ch);
    child.stop(BOUND).unwrap();
    drop(child);
    assert_fds_back_to(&before, "fds with byte bodies");
}

/// A typed request reaches a raw server as its encoding, and the raw echo
/// of it decodes as the same type; a raw request holding a typed value's
/// encoding is served by a typed server (`ready` serves [`TestReq`]); a
/// raw 4-byte notification is the typed `u32` it encodes.
#[test]
fn byte_bodies_meet_the_typed_api_where_the_encodings_do() {
    let _serial = serial();
    let mut child = echo_child();
    let ch = child.channel().unwrap();
    let v = ("x".to_string(), 5u32, vec![1u8, 2, 3]);
    let back: (String, u32, Vec<u8>) = ch.request(&v).unwrap();
    assert_eq!(back, v);
    drop(ch);
    child.stop(BOUND).unwrap();

    let mut typed = ReadyCommand::new(helper("ready")).spawn().unwrap();
    typed.wait_ready(BOUND).unwrap();
    let ch = typed.channel().unwrap();
    let req = encode_body(&TestReq::Add(2, 3), usize::MAX).unwrap();
    let sum = ch.request_bytes(&req).unwrap();
    assert_eq!(&sum[..], 5u64.to_le_bytes());
    ch.notify_bytes(&7u32.to_le_bytes()).unwrap();
    match ch.recv_timeout(BOUND).unwrap() {
        Some(Incoming::Notify(n)) => assert_eq!(n.decode::<u32>().unwrap(), 7),
        other => panic!("{other:?}"),
    }
    // Not a `TestReq`: the typed server rejects it, and says why.
    match ch.request_bytes(b"\x09\0\0\0") {
        Err(ChannelError::Remote(e)) => {
            assert_eq!(e.kind, readyfd::RemoteErrorKind::BadRequest, "{e}")
        }
        other => panic!("{other:?}"),
    }
    drop(ch);
    typed.stop(BOUND).unwrap();
}

#[test]
fn a_byte_body_over_the_peers_maximum_is_refused_and_the_channel_stays() {
    let _serial = serial();
    let mut child = echo_child();
    let ch = child.channel().unwrap();
    // A notification's payload may be 16 MiB exactly; a request's head
    // takes 12 bytes of it.
    let huge = vec![0u8; (16 << 20) + 1];
    match ch.request_bytes(&huge) {
        Err(ChannelError::Encode(e)) => assert!(e.to_string().contains("16777216"), "{e}"),
        other => panic!("{other:?}"),
    }
    match ch.notify_bytes(&huge) {
        Err(ChannelError::Encode(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(ch.request_bytes(b"still here").unwrap(), &b"still here"[..]);
    drop(ch);
    child.stop(BOUND).unwrap();
}

// ---- tokio --------------------------------------------------------------

async fn echo_child_async() -> readyfd::tokio::ReadyChild {
    let mut child = readyfd::tokio::ReadyCommand::new(helper("bytes-echo"))
        .spawn()
        .unwrap();
    child.wait_ready(BOUND).await.unwrap();
    child
}

#[test]
fn byte_bodies_come_back_as_they_went_both_ways_async() {
    let _serial = serial();
    common::current_thread().block_on(async {
        let mut child = echo_child_async().await;
        let ch = child.channel().unwrap();
        for body in bodies() {
            let back = ch.request_bytes(&body).await.unwrap();
            assert_eq!(back, body, "request of {} bytes", body.len());
            ch.notify_bytes(&body).await.unwrap();
            match ch.recv_timeout(BOUND).await.unwrap() {
                Some(Incoming::Notify(n)) => assert_eq!(n.body(), body),
                other => panic!("{other:?}"),
            }
        }
        let back = ch.request_bytes_timeout(b"bounded", BOUND).await.unwrap();
        assert_eq!(back, Bytes::from_static(b"bounded"));
        drop(ch);
        child.stop(BOUND).await.unwrap();
    });
}

#[test]
fn the_child_asks_with_a_byte_body_and_is_answered_with_one_async() {
    let _serial = serial();
    common::current_thread().block_on(async {
        let mut child = echo_child_async().await;
        let ch = child.channel().unwrap();
        let serve = async {
            match ch.recv_timeout(BOUND).await.unwrap() {
                Some(Incoming::Request(req)) => {
                    assert_eq!(req.body(), Bytes::from_static(b"from the child"));
                    req.respond_bytes(b"the answer").unwrap();
                }
                other => panic!("{other:?}"),
            }
        };
        let (answer, ()) = tokio::join!(ch.request_bytes(b"ask-parent"), serve);
        assert_eq!(answer.unwrap(), Bytes::from_static(b"the answer"));
        drop(ch);
        child.stop(BOUND).await.unwrap();
    });
}

#[test]
fn fds_travel_with_byte_bodies_async() {
    let _serial = serial();
    // tokio's own fds (its SIGCHLD pipe) are opened for good on first use.
    common::current_thread().block_on(async {
        let mut child = echo_child_async().await;
        child.stop(BOUND).await.unwrap();
    });
    let before = common::open_fds();
    let rt = common::current_thread();
    rt.block_on(async {
        let mut child = echo_child_async().await;
        let ch = child.channel().unwrap();
        let body: Bytes = vec![9u8; 4096].into();
        let (back, fds) = ch
            .request_bytes_with_fds(&body, vec![pipe_holding(1), pipe_holding(2)])
            .await
            .unwrap();
        assert_eq!(back, body);
        assert_eq!(fds.into_iter().map(content).collect::<Vec<_>>(), [1, 2]);
        ch.notify_bytes_with_fds(b"", vec![pipe_holding(3)])
            .await
            .unwrap();
        match ch.recv_timeout(BOUND).await.unwrap() {
            Some(Incoming::Notify(mut n)) => {
                assert!(n.body().is_empty());
                let fds = n.take_fds();
                assert_eq!(fds.into_iter().map(content).collect::<Vec<_>>(), [3]);
            }
            other => panic!("{other:?}"),
        }
        drop(ch);
        child.stop(BOUND).await.unwrap();
    });
    // The runtime, with what its tasks hold.
    drop(rt);
    assert_fds_back_to(&before, "fds with byte bodies, tokio");
}

#[test]
fn byte_bodies_meet_the_typed_api_where_the_encodings_do_async() {
    let _serial = serial();
    common::current_thread().block_on(async {
        let mut child = echo_child_async().await;
        let ch = child.channel().unwrap();
        let v = ("x".to_string(), 5u32, vec![1u8, 2, 3]);
        let back: (String, u32, Vec<u8>) = ch.request(&v).await.unwrap();
        assert_eq!(back, v);
        let raw = ch
            .request_bytes(&encode_body(&v, usize::MAX).unwrap())
            .await
            .unwrap();
        assert_eq!(raw, encode_body(&v, usize::MAX).unwrap());
        drop(ch);
        child.stop(BOUND).await.unwrap();
    });
}
