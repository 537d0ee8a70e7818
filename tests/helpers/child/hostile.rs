//! Children that break the native protocol on purpose, writing bytes by
//! hand: `hostile KIND` (one malformed start, for `tests/common/hostile.rs`),
//! `flood-raw` and `ask-raw`.

use std::io::{Read, Write};

use readyfd::Ready;
use readyfd::proto::{Message, ResponseBody, Role, Session, SessionConfig};

use crate::{hello_bytes, park_forever, raw_fd3, unknown_role};

pub(crate) fn run(role: &str, args: &[String]) {
    match role {
        // Raw bytes on the channel, then stay alive with the fd open, so
        // that only the content can decide.
        "hostile" => {
            let mut f = std::fs::File::from(raw_fd3());
            let bytes: Vec<u8> = match args.get(1).map(String::as_str) {
                // A frame header announcing 4 GiB.
                Some("oversize") => vec![0xff, 0xff, 0xff, 0xff, 0x02],
                Some("garbage") => b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                Some("badmagic") => {
                    let mut v = hello_bytes(readyfd::proto::PROTOCOL_VERSION);
                    v[HELLO_MAGIC].copy_from_slice(b"XXXX");
                    v
                }
                Some("version") => hello_bytes(9),
                // A Hello, then a frame cut short, then close.
                Some("truncated") => {
                    let mut v = hello_bytes(readyfd::proto::PROTOCOL_VERSION);
                    v.extend_from_slice(&[100, 0, 0, 0, 2, 1, 2, 3]);
                    f.write_all(&v).unwrap();
                    drop(f);
                    park_forever();
                }
                other => panic!("unknown hostile kind {other:?}"),
            };
            f.write_all(&bytes).unwrap();
            park_forever();
        }
        // A valid Hello, then Notify frames as fast as the socket takes
        // them. Prints how many bytes went out before the parent stopped
        // reading (the socket stayed full for a while).
        "flood-raw" => flood_raw(),
        // Send a request and Ready in one write, then report how the
        // request was answered (speaking the protocol by hand).
        "ask-raw" => {
            let mut f = std::fs::File::from(raw_fd3());
            let mut s = Session::new(Role::Child, std::process::id(), SessionConfig::default());
            s.send_app_request(&"please").unwrap();
            s.send_ready(&Ready::new(std::process::id())).unwrap();
            let mut out = Vec::new();
            let _ = s.poll_transmit(&mut out);
            f.write_all(&out).unwrap();
            let mut all = Vec::new();
            let _ = f.read_to_end(&mut all);
            let mut buf = bytes::BytesMut::from(&all[..]);
            let _ = s.handle_eof(&mut buf);
            while let Some(m) = s.poll_event() {
                if let Message::Response { body, .. } = m {
                    match body {
                        ResponseBody::Error(e) => println!("response {:?}", e.kind),
                        other => println!("response {other:?}"),
                    }
                }
            }
        }
        other => unknown_role(other),
    }
}

/// Where the magic bytes lie in [`hello_bytes`]: after the frame header
/// (length, 4 bytes; kind, 1 byte).
const HELLO_MAGIC: std::ops::Range<usize> = 5..9;

fn flood_raw() -> ! {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let fd = raw_fd3();
    nix::unistd::write(&fd, &hello_bytes(readyfd::proto::PROTOCOL_VERSION)).unwrap();
    let mut note = vec![0u8, 4, 0, 0, 5];
    note.extend(std::iter::repeat_n(0xabu8, 1024));
    let cap: u64 = 256 << 20;
    let mut sent: u64 = 0;
    let mut pos = 0;
    while sent < cap {
        match nix::sys::socket::send(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &note[pos..],
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => {
                sent += n as u64;
                pos = (pos + n) % note.len();
            }
            Err(nix::errno::Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                // sleep-ok: a bound, not a synchronisation: a parent
                // that still reads makes room well within it.
                if poll(&mut fds, PollTimeout::from(500u16)).unwrap() == 0 {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    println!("sent {sent}");
    std::io::stdout().flush().unwrap();
    park_forever();
}
