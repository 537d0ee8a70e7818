//! Roles that pass file descriptors over the native channel: a child that
//! hands fds both ways (`fd-serve N`), a child that reports its fd table
//! around a hostile parent (`fd-victim`), and children that send fds
//! against the rules, with `sendmsg` by hand (`fd-hostile KIND`).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use readyfd::{Incoming, Ready, RemoteErrorKind};

use crate::protocol::FdReq;
use crate::{hello_bytes, parent, park_forever, raw_fd3, unknown_role};

pub(crate) fn run(role: &str, args: &[String]) {
    match role {
        // Ready with N pipes, the i-th holding `i`; then serve `FdReq` from
        // four threads until the parent goes.
        "fd-serve" => {
            let n: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let p = parent();
            let fds = (0..n).map(pipe_holding).collect();
            p.ready_with_fds(&Ready::new(std::process::id()), fds)
                .unwrap();
            let ch = p.channel();
            std::thread::scope(|s| {
                for _ in 0..4 {
                    let ch = ch.clone();
                    s.spawn(move || serve(&ch));
                }
            });
        }
        // Print the fd count, wait for the channel to fail, print the
        // error and the fd count again.
        "fd-victim" => {
            let p = parent();
            println!("before {}", count_fds());
            std::io::stdout().flush().unwrap();
            let err = loop {
                match p.recv() {
                    Ok(m) => drop(m),
                    Err(e) => break e,
                }
            };
            println!("error {err:?}");
            println!("after {}", count_fds());
            std::io::stdout().flush().unwrap();
        }
        "fd-hostile" => hostile(args.get(1).map(String::as_str).unwrap_or("")),
        _ => unknown_role(role),
    }
}

fn serve(ch: &readyfd::Channel) {
    while let Ok(inc) = ch.recv() {
        let Incoming::Request(mut req) = inc else {
            continue; // notifications (and their fds) are dropped
        };
        match req.decode::<FdReq>() {
            Ok(FdReq::Echo) => {
                let fds = req.take_fds();
                let n = fds.len() as u32;
                drop(req.respond_with_fds(&n, fds));
            }
            Ok(FdReq::CountFds) => drop(req.respond(&count_fds())),
            Ok(FdReq::NotifyBack(n)) => {
                std::thread::scope(|s| {
                    for i in 0..n {
                        s.spawn(move || ch.notify_with_fds(&i, vec![pipe_holding(i)]).unwrap());
                    }
                });
                drop(req.respond(&n));
            }
            Err(e) => drop(req.reject(RemoteErrorKind::BadRequest, e.to_string())),
        }
    }
}

/// The read end of a pipe that holds `i` (4 bytes, little-endian) and
/// then end of file.
pub(crate) fn pipe_holding(i: u32) -> OwnedFd {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut w = std::fs::File::from(w);
    w.write_all(&i.to_le_bytes()).unwrap();
    r
}

/// This process's open fds, without the one the listing opens.
fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count() - 1
}

/// One `sendmsg` of `bytes` with `fds` (the same fd may be passed many
/// times: the receiver gets a new fd for each). Errors are ignored: the
/// parent may have stopped reading.
fn send_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) {
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsg: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    let _ = sendmsg::<()>(sock, &iov, cmsg, MsgFlags::MSG_NOSIGNAL, None);
}

/// A `Notify` frame announcing `count` fds (none: no flag) with `body`.
fn notify_frame(count: u8, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    let kind = if count == 0 {
        0x05
    } else {
        payload.push(count);
        0x85
    };
    payload.extend_from_slice(body);
    let mut v = (payload.len() as u32).to_le_bytes().to_vec();
    v.push(kind);
    v.extend(payload);
    v
}

/// After a valid `Hello`, fds against the rules; then stay alive (or,
/// `close-mid`, exit) so that only the content decides.
fn hostile(kind: &str) {
    let sock = raw_fd3();
    let fd = sock.as_raw_fd();
    let null = std::fs::File::open("/dev/null").unwrap();
    let n = null.as_raw_fd();
    send_fds(fd, &hello_bytes(readyfd::proto::PROTOCOL_VERSION), &[]);
    match kind {
        // 1000 fds with garbage bytes, 250 per sendmsg.
        "flood" => {
            for _ in 0..4 {
                send_fds(fd, b"GARBAGE GARBAGE GARBAGE", &[n; 250]);
            }
        }
        // A Status frame flagged as carrying one fd.
        "status" => {
            let mut f = vec![3, 0, 0, 0, 0x86, 1];
            f.extend_from_slice(&[0, 0]);
            send_fds(fd, &f, &[n]);
        }
        "fewer" => send_fds(fd, &notify_frame(3, b"x"), &[n; 2]),
        "more" => send_fds(fd, &notify_frame(2, b"x"), &[n; 3]),
        "unflagged" => send_fds(fd, &notify_frame(0, b"x"), &[n]),
        // A frame's first bytes without fds, then more of it with fds.
        "no-frame" => {
            let f = notify_frame(0, &[7; 100]);
            send_fds(fd, &f[..20], &[]);
            send_fds(fd, &f[20..40], &[n]);
        }
        // Half a frame with its 5 fds, then exit.
        "close-mid" => {
            let f = notify_frame(5, &[7; 100]);
            send_fds(fd, &f[..30], &[n; 5]);
            std::process::exit(0);
        }
        other => panic!("unknown fd-hostile kind {other:?}"),
    }
    park_forever();
}
