//! After its `Goodbye` is written, a side shuts its end down for writing,
//! so that a peer that reads to the end of stream (as a plain socket
//! program does) gets it while the application still holds the channel
//! (PROTOCOL.md §7). Before, the end came only when the channel's owner was
//! dropped, and such a peer waited for as long as the parent kept its
//! `ReadyChild`.
//!
//! The child is a few lines of Python that speak the protocol as §10's
//! worked example does: `Hello`, `Ready`, then read until the end of
//! stream, and say which frame kinds came before it.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BOUND, python3};
use readyfd::{ChannelError, ReadyCommand};

/// The child: `Hello` and `Ready`, then (with `garbage`) a frame of an
/// unknown kind, then reads to the end of stream and prints the kinds of
/// the frames it got, e.g. `1,7 eof`.
const CHILD_PY: &str = r#"
import os, socket, struct, sys
fd = int(os.environ["READYFD"])
s = socket.socket(fileno=fd)
def frame(kind, payload):
    return struct.pack("<IB", len(payload), kind) + payload
pid = os.getpid()
s.sendall(frame(0x01, b"RDFD" + struct.pack("<HIII", 1, pid, 1, 16 * 1024 * 1024)))
s.sendall(frame(0x02, struct.pack("<IQ", pid, 0) + b"\x00"))
if sys.argv[1] == "garbage":
    s.sendall(frame(0x2a, b""))
buf, kinds = b"", []
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
    while len(buf) >= 5:
        n, kind = struct.unpack("<IB", buf[:5])
        if len(buf) < 5 + n:
            break
        kinds.append(str(kind))
        buf = buf[5 + n:]
print(",".join(kinds) + " eof", flush=True)
"#;

fn child(mode: &str) -> Command {
    let mut cmd = python3();
    cmd.args(["-c", CHILD_PY, mode]).stdout(Stdio::piped());
    cmd
}

/// What the child printed once it saw the end of stream, waiting for its
/// exit with the channel's owner still alive (bounded: a child that never
/// sees the end is killed and the test fails).
fn ended_with(child: &mut readyfd::ReadyChild) -> String {
    let status = child.wait_timeout(BOUND).unwrap();
    if status.is_none() {
        let _ = child.kill();
        panic!("the child saw no end of stream while the parent held the channel");
    }
    let mut out = String::new();
    child
        .child_mut()
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out.trim().to_string()
}

#[test]
fn close_ends_the_stream_after_goodbye() {
    let mut child = ReadyCommand::new(child("quiet")).spawn().unwrap();
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    ch.close();
    // Hello, then Goodbye (7), then the end, with `child` still held.
    assert_eq!(ended_with(&mut child), "1,7 eof");
    drop(ch);
}

#[test]
fn a_protocol_error_ends_the_stream_after_goodbye() {
    let mut child = ReadyCommand::new(child("garbage")).spawn().unwrap();
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    // The unknown frame ends the session on our side: Goodbye, then the end.
    assert_eq!(ended_with(&mut child), "1,7 eof");
    assert!(matches!(
        ch.ping(Duration::from_secs(5)),
        Err(ChannelError::Closed(_))
    ));
}

#[test]
fn tokio_close_ends_the_stream_after_goodbye() {
    let rt = common::current_thread();
    rt.block_on(async {
        let mut child = readyfd::tokio::ReadyCommand::from(child("quiet"))
            .spawn()
            .unwrap();
        child.wait_ready(BOUND).await.unwrap();
        let ch = child.channel().unwrap().clone();
        ch.close();
        let status = tokio::time::timeout(BOUND, child.wait())
            .await
            .expect("the child saw no end of stream while the parent held the channel")
            .unwrap();
        assert!(status.success(), "{status:?}");
        drop(ch);
    });
}
