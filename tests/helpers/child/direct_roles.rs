//! Roles for `tests/direct.rs`, the direct channel:
//!
//! - `direct-echo [before|deliver]`: takes its channel as a `DirectChannel`
//!   (after `Ready`, or before it with `before`; with `deliver`, under
//!   `ShutdownPolicy::Deliver`: it acknowledges `Shutdown` and exits 0) and answers every request with
//!   its body and fds, as they came, on its one thread, and sends every
//!   notification back the same way, except `ask-parent`: it then asks the
//!   parent with the byte body `from the child` and notifies `answer: X`
//!   (or `error: E`). Some request bodies ask for more: `big-notify`
//!   (answer, then send the parent an 8 MiB
//!   notification at once), `crash` (exit 5 without answering),
//!   `die-leaving-grandchild` (fork a process that keeps the socket open,
//!   then exit 3 without answering; also as a notification).
//! - `direct-early`: speaks the protocol by hand: three notifications, a
//!   request and `Ready` in one write, before the parent can switch; then
//!   reports the answer to its request as a notification `got: ANSWER`.
//! - `direct-hostile KIND`: a valid start (`Hello`, `Ready`), then, once
//!   the parent sends anything, bytes that break the protocol (`oversize`:
//!   a header announcing 4 GiB; `garbage`: an HTTP request).

use std::io::{Read, Write};
use std::time::Duration;

use readyfd::proto::{Message, ResponseBody, Role, Session, SessionConfig};
use readyfd::{ChannelOptions, DirectChannel, Incoming, Parent, Ready, ShutdownPolicy};

use crate::{parent, park_forever, raw_fd3, unknown_role};

/// A bound against a parent that never answers.
const BOUND: Duration = Duration::from_secs(60);

/// The size of the `big-notify` notification.
const BIG: usize = 8 << 20;

pub(crate) fn run(role: &str, args: &[String]) {
    match role {
        "direct-echo" => echo(
            args.get(1).map(String::as_str) == Some("before"),
            args.get(1).map(String::as_str) == Some("deliver"),
        ),
        "direct-early" => early(),
        "direct-hostile" => hostile(args.get(1).map(String::as_str).unwrap_or("")),
        _ => unknown_role(role),
    }
}

fn direct() -> DirectChannel {
    into_direct(parent())
}

fn into_direct(p: Parent) -> DirectChannel {
    match p.into_direct() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("test child: {e}");
            std::process::exit(92);
        }
    }
}

fn echo(before: bool, deliver: bool) {
    let mut d = if before {
        let mut d = direct();
        d.ready(&Ready::new(std::process::id())).unwrap();
        d
    } else {
        let p = if deliver {
            let opts = ChannelOptions::new().shutdown(ShutdownPolicy::Deliver);
            match Parent::from_env_with(opts) {
                Ok(Some(p)) => p,
                _ => std::process::exit(90),
            }
        } else {
            parent()
        };
        p.ready(&Ready::new(std::process::id())).unwrap();
        into_direct(p)
    };
    while let Ok(inc) = d.recv() {
        match inc {
            Incoming::Request(mut req) => {
                let body = req.body();
                match &body[..] {
                    b"big-notify" => {
                        drop(req.respond_bytes(b"ok"));
                        d.notify_bytes(&vec![7u8; BIG]).unwrap();
                    }
                    b"crash" => std::process::exit(5),
                    b"die-leaving-grandchild" => die_leaving_grandchild(),
                    _ => {
                        let fds = req.take_fds();
                        drop(req.respond_bytes_with_fds(&body, fds));
                    }
                }
            }
            Incoming::Notify(n) if &n.body()[..] == b"ask-parent" => {
                let answer = match d.request_bytes_timeout(b"from the child", BOUND) {
                    Ok(a) => format!("answer: {}", String::from_utf8_lossy(&a)),
                    Err(e) => format!("error: {e}"),
                };
                d.notify_bytes(answer.as_bytes()).unwrap();
            }
            Incoming::Notify(n) if &n.body()[..] == b"die-leaving-grandchild" => {
                die_leaving_grandchild()
            }
            Incoming::Notify(mut n) => {
                let fds = n.take_fds();
                drop(d.notify_bytes_with_fds(&n.body(), fds));
            }
            Incoming::Shutdown(s) => {
                drop(s.acknowledge());
                std::process::exit(0);
            }
            _ => {}
        }
    }
}

/// Forks a process that keeps the socket open, and exits 3.
fn die_leaving_grandchild() -> ! {
    // SAFETY: this process has one thread (a direct channel has no I/O
    // thread), so the forked child may run anything; it only waits.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            // sleep-ok: it holds the socket open for the test, and ends by
            // itself at the latest then (the test kills its group first).
            std::thread::sleep(BOUND);
            std::process::exit(0);
        }
        nix::unistd::ForkResult::Parent { .. } => std::process::exit(3),
    }
}

fn early() {
    let mut f = std::fs::File::from(raw_fd3());
    let mut s = Session::new(Role::Child, std::process::id(), SessionConfig::default());
    s.send_hello();
    for i in 0..3u32 {
        s.send_notify_bytes(&i.to_le_bytes(), 0).unwrap();
    }
    let id = s.send_app_request_bytes(b"early", 0).unwrap();
    s.send_ready(&Ready::new(std::process::id())).unwrap();
    let mut out = Vec::new();
    while s.poll_transmit(&mut out) {}
    f.write_all(&out).unwrap();
    let mut buf = bytes::BytesMut::new();
    let answer = 'read: loop {
        let mut chunk = [0u8; 4096];
        let n = f.read(&mut chunk).unwrap();
        if n == 0 {
            std::process::exit(6);
        }
        buf.extend_from_slice(&chunk[..n]);
        s.handle_input(&mut buf).unwrap();
        while let Some(m) = s.poll_event() {
            if let Message::Response { id: got, body } = m {
                if got == id {
                    break 'read body;
                }
            }
        }
    };
    let text = match answer {
        ResponseBody::App(b) => format!("got: {}", String::from_utf8_lossy(&b)),
        other => format!("got: {other:?}"),
    };
    s.send_notify_bytes(text.as_bytes(), 0).unwrap();
    let mut out = Vec::new();
    while s.poll_transmit(&mut out) {}
    f.write_all(&out).unwrap();
    // Until the parent closes.
    let _ = f.read_to_end(&mut Vec::new());
}

fn hostile(kind: &str) {
    let mut f = std::fs::File::from(raw_fd3());
    let mut s = Session::new(Role::Child, std::process::id(), SessionConfig::default());
    s.send_ready(&Ready::new(std::process::id())).unwrap();
    let mut out = Vec::new();
    while s.poll_transmit(&mut out) {}
    f.write_all(&out).unwrap();
    // The parent's first bytes (its Hello comes at once; wait for more
    // than that: its first request).
    let mut seen = 0;
    let mut chunk = [0u8; 4096];
    while seen <= out_len_of_parent_hello() {
        let n = f.read(&mut chunk).unwrap();
        if n == 0 {
            std::process::exit(6);
        }
        seen += n;
    }
    let bytes: Vec<u8> = match kind {
        "oversize" => vec![0xff, 0xff, 0xff, 0xff, 0x02],
        "garbage" => b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        other => panic!("unknown kind {other:?}"),
    };
    f.write_all(&bytes).unwrap();
    park_forever();
}

/// How long the parent's `Hello` frame is on the wire.
fn out_len_of_parent_hello() -> usize {
    let mut s = Session::new(Role::Parent, 1, SessionConfig::default());
    s.send_hello();
    let mut out = Vec::new();
    while s.poll_transmit(&mut out) {}
    out.len()
}
