//! The child side (`readyfd::notify_ready`), run by parents that are not
//! readyfd: a Rust parent that does exactly what the Go code of
//! "Readiness notifications in Go" does, a Python parent, and a Python
//! sd_notify receiver; and by readyfd's native parent. The child is
//! `tests/helpers/compat.rs`.

mod common;

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use readyfd::{Address, ReadyCommand, ReadyVia};

use common::{BOUND, COMPAT, compat, first_line, place_fds, python3};

/// The article's parent, in Rust: a pipe, the write end at `fd` in the
/// child (`ExtraFiles`), `CHILD_READY_FD=<fd>`, the parent's write end
/// closed after `Start`, then `ReadAll` with a read deadline.
fn article_parent(mut cmd: Command, fd: RawFd) -> (Child, String) {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    let w_raw = w.as_raw_fd();
    cmd.env("CHILD_READY_FD", fd.to_string())
        .stdin(Stdio::piped());
    place_fds(&mut cmd, &[(w_raw, fd)]);
    let child = cmd.spawn().unwrap();
    drop(cmd);
    drop(w); // "Close the write end of the pipe in the parent"
    (child, read_all_with_deadline(r, Instant::now() + BOUND))
}

/// `r.SetReadDeadline(...)` then `ioutil.ReadAll(r)`.
fn read_all_with_deadline(r: OwnedFd, deadline: Instant) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32).unwrap();
        let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
        assert!(
            poll(&mut fds, ms).unwrap() > 0,
            "awaiting readiness: deadline exceeded"
        );
        match nix::unistd::read(r.as_fd(), &mut buf).unwrap() {
            0 => return String::from_utf8(out).unwrap(),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn report_of(addr: &str) -> String {
    let line = first_line(std::net::TcpStream::connect(addr).unwrap());
    line.trim().to_string()
}

fn finish(mut child: Child) {
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_parent_written_like_the_article_gets_our_address() {
    for fd in [3, 6] {
        let (child, text) = article_parent(compat("serve"), fd);
        // ReadAll returns "addr\n": the Go parent trims it and connects.
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text:?}"
        );
        let addr = text.trim();
        assert!(addr.parse::<std::net::SocketAddr>().is_ok(), "{addr:?}");
        assert_eq!(
            report_of(addr),
            format!(
                "protocol=pipe fd={fd}:closed READYFD=unset CHILD_READY_FD={fd} NOTIFY_SOCKET=unset \
                 READYFD_INODE=unset CHILD_READY_FD_INODE=unset"
            ),
            "the fd is closed (that is what ends ReadAll), the environment untouched"
        );
        finish(child);
    }
}

#[test]
fn a_python_parent_reading_to_eof_gets_our_address() {
    // An independent peer: Python's os.pipe, pass_fds, and a read to EOF.
    let script = r#"
import os, select, socket, subprocess, sys
r, w = os.pipe()
env = dict(os.environ, CHILD_READY_FD=str(w))
child = subprocess.Popen([sys.argv[1], "serve"], env=env, pass_fds=[w], stdin=subprocess.PIPE)
os.close(w)
data = b""
while True:
    if not select.select([r], [], [], 60)[0]:
        sys.exit(9)
    chunk = os.read(r, 4096)
    if not chunk:
        break
    data += chunk
host, port = data.decode().strip().rsplit(":", 1)
with socket.create_connection((host, int(port))) as s:
    print("fd=%d text=%r report=%s" % (w, data.decode(), s.makefile().readline().strip()), flush=True)
child.stdin.close()
sys.exit(child.wait())
"#;
    let out = python3().args(["-c", script, COMPAT]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let fd = line
        .split_whitespace()
        .next()
        .unwrap()
        .strip_prefix("fd=")
        .unwrap()
        .to_string();
    assert!(line.contains("text='127.0.0.1:"), "{line}");
    assert!(line.contains("\\n' report=protocol=pipe"), "{line}");
    assert!(line.contains(&format!("fd={fd}:closed")), "{line}");
    assert!(line.contains(&format!("CHILD_READY_FD={fd} ")), "{line}");
}

#[test]
fn a_python_sd_notify_receiver_gets_ready_status_and_mainpid() {
    // An independent receiver, on a path and on an abstract name: what it
    // receives from `Notifier::status` and `Notifier::ready`, with the
    // sender's credentials.
    let script = r#"
import os, socket, struct, subprocess, sys, tempfile
kind = sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
if kind == "path":
    name = os.path.join(tempfile.mkdtemp(), "notify")
    s.bind(name)
else:
    name = "@readyfd-test-%d" % os.getpid()
    s.bind("\0" + name[1:])
s.settimeout(60)
child = subprocess.Popen([sys.argv[1], "status-then-ready"], env=dict(os.environ, NOTIFY_SOCKET=name), stdin=subprocess.PIPE)
for _ in range(2):
    data, anc, flags, addr = s.recvmsg(4096, socket.CMSG_SPACE(12))
    pid = [struct.unpack("iII", c)[0] for (l, t, c) in anc if t == socket.SCM_CREDENTIALS][0]
    print("%s from %s" % (data, "child" if pid == child.pid else pid), flush=True)
child.stdin.close()
sys.exit(child.wait())
"#;
    for kind in ["path", "abstract"] {
        let out = python3()
            .args(["-c", script, COMPAT, kind])
            .output()
            .unwrap();
        assert!(out.status.success(), "{kind}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "b'STATUS=loading config' from child", "{kind}");
        let ready = lines[1];
        assert!(ready.starts_with("b'READY=1\\nMAINPID="), "{kind}: {ready}");
        assert!(
            ready.ends_with("\\nSTATUS=up\\n' from child"),
            "{kind}: {ready}"
        );
    }
}

#[test]
fn a_readyfd_native_parent_gets_the_whole_ready_and_keeps_the_channel() {
    let mut child = ReadyCommand::new(compat("serve"))
        .command_mut_with(|c| {
            c.stdin(Stdio::piped());
        })
        .spawn()
        .unwrap();
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_eq!(r.via, ReadyVia::Message);
    assert_eq!(r.ready.status.as_deref(), Some("serving"));
    let Some(Address::Tcp(addr)) = r.ready.get("http") else {
        panic!("{:?}", r.ready)
    };
    // The parent named the socket it passed: the child took that one.
    let report = report_of(&addr.to_string());
    let (head, inode) = report.split_once(" READYFD_INODE=").unwrap();
    assert_eq!(
        head,
        "protocol=native fd=3:open READYFD=3 CHILD_READY_FD=unset NOTIFY_SOCKET=unset"
    );
    let (inode, rest) = inode.split_once(' ').unwrap();
    assert_eq!(rest, "CHILD_READY_FD_INODE=unset");
    let (dev, ino) = inode.split_once(':').unwrap();
    assert!(
        dev.parse::<u64>().is_ok() && ino.parse::<u64>().is_ok(),
        "{inode}"
    );
    // Notified::Native kept the channel open: it still answers.
    child.channel().unwrap().ping(BOUND).unwrap();
    drop(child.child_mut().stdin.take());
    assert!(child.wait().unwrap().success());
}

/// Runs `compat report` with exactly `env` (plus PATH) and `extra` fds:
/// its one-line account of what `notify_ready` did.
fn report(env: &[(&str, String)], extra: &[(&OwnedFd, RawFd)]) -> String {
    let mut cmd = compat("report");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let placed: Vec<(RawFd, RawFd)> = extra.iter().map(|(fd, at)| (fd.as_raw_fd(), *at)).collect();
    place_fds(&mut cmd, &placed);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn the_offered_protocol_is_found_in_order_and_errors_are_clear() {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    let s = |v: &str| v.to_string();
    // Nothing offered: a clear, non-fatal error.
    assert_eq!(report(&[], &[]), "offered=none not-offered");
    // The pipe, at fd 5.
    assert_eq!(
        report(&[("CHILD_READY_FD", s("5"))], &[(&w, 5)]),
        "offered=pipe ok pipe"
    );
    // CHILD_READY_FD comes before NOTIFY_SOCKET.
    assert_eq!(
        report(
            &[
                ("CHILD_READY_FD", s("5")),
                ("NOTIFY_SOCKET", s("/nonexistent/notify"))
            ],
            &[(&w, 5)]
        ),
        "offered=pipe ok pipe"
    );
    // READYFD comes first: here it names a pipe, which is an error.
    let msg = report(
        &[("READYFD", s("5")), ("CHILD_READY_FD", s("5"))],
        &[(&w, 5)],
    );
    assert!(
        msg.starts_with("offered=native error: READYFD=5") && msg.contains("not a socket"),
        "{msg}"
    );
    let cases = [
        (
            vec![("CHILD_READY_FD", s("three"))],
            "is not a file descriptor number",
        ),
        (vec![("CHILD_READY_FD", s("9"))], "is not open"),
        (
            vec![("CHILD_READY_FD", s("0"))],
            "is stdin, stdout or stderr",
        ),
        (vec![("NOTIFY_SOCKET", s("vsock:2:1234"))], "AF_VSOCK"),
        (
            vec![("NOTIFY_SOCKET", s("relative/notify"))],
            "neither an absolute socket path",
        ),
        (
            vec![("NOTIFY_SOCKET", s("/nonexistent/notify"))],
            "over the systemd protocol",
        ),
    ];
    for (env, expected) in cases {
        let msg = report(&env, &[]);
        assert!(
            msg.contains(" error: ") && msg.contains(expected),
            "{env:?}: {msg}"
        );
    }
    // The read end of the pipe is not something to write readiness to.
    let msg = report(&[("CHILD_READY_FD", s("5"))], &[(&r, 5)]);
    assert!(msg.contains("reading only"), "{msg}");
    // What the child wrote through the pipe at fd 5 (twice "ok pipe").
    drop(w);
    let mut text = String::new();
    std::fs::File::from(r).read_to_string(&mut text).unwrap();
    assert_eq!(text, "\n\n", "no address: just the newline, each time");
}
