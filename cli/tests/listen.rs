//! `readyfd run --listen`: the sockets bound before PROGRAM starts, passed
//! by socket activation, reported at once; a Python child that checks the
//! variables exactly as `sd_listen_fds` does and serves a connection made
//! before it is ready; `--then-after`; every bad input (a clear message,
//! exit 73 or 64, nothing left bound, no socket file left, someone else's
//! file untouched); the socket files removed at every end, SIGTERM too.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;

use common::{Running, readyfd, run};
use nix::sys::signal::Signal;

/// The runtime directory of a run started by `readyfd()`: checked empty
/// when the run finishes, so the socket files go there.
fn run_dir(cmd: &Command) -> PathBuf {
    cmd.get_envs()
        .find(|(k, _)| *k == "XDG_RUNTIME_DIR")
        .and_then(|(_, v)| v)
        .map(PathBuf::from)
        .unwrap()
}

/// Sends a line to `addr` and reads the answer's first line.
fn ask(addr: &str, line: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(common::BOUND)).unwrap();
    writeln!(s, "{line}").unwrap();
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    answer.trim_end().to_string()
}

/// `sd_listen_fds_with_names()` as systemd's sd-daemon.c checks, in Python:
/// LISTEN_PID must equal getpid(), LISTEN_FDS be 1..INT_MAX-3, as many
/// LISTEN_FDNAMES; FD_CLOEXEC set on each fd. The child waits for a line
/// on stdin before it says ready (pipe protocol), then answers one
/// connection per socket, in order.
const SD_CHILD: &str = r#"
import os, socket, sys, fcntl
def sd_listen_fds_with_names():
    e = os.environ.get("LISTEN_PID")
    if e is None or int(e) != os.getpid():
        return []
    n = int(os.environ["LISTEN_FDS"])
    if n <= 0 or n > 2**31 - 1 - 3:
        raise ValueError("LISTEN_FDS")
    names = os.environ.get("LISTEN_FDNAMES")
    names = names.split(":") if names is not None else ["unknown"] * n
    if len(names) != n:
        raise ValueError("LISTEN_FDNAMES")
    for fd in range(3, 3 + n):
        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
    return list(zip(range(3, 3 + n), names))
got = sd_listen_fds_with_names()
assert [n for _, n in got] == ["web", "unknown"], got
ready_fd = int(os.environ["CHILD_READY_FD"])
assert ready_fd == 3 + len(got), ready_fd
sys.stdin.readline()
os.write(ready_fd, b"\n")
os.close(ready_fd)
for fd, name in got:
    srv = socket.socket(fileno=fd)
    conn, _ = srv.accept()
    line = conn.makefile().readline()
    conn.sendall(("%s fd %d: %s" % (name, fd, line)).encode())
    conn.close()
"#;

#[test]
fn a_python_child_serves_connections_made_before_it_is_ready() {
    let mut cmd = readyfd(["run", "--json", "--protocol", "pipe"]);
    let sock = run_dir(&cmd).join("second.sock");
    cmd.args(["--listen", "web=tcp:127.0.0.1:0", "--listen"])
        .arg(format!("unix:{}", sock.display()))
        .args(["--", "python3", "-c", SD_CHILD]);
    let mut r = Running::start(&mut cmd);
    let listening = r.json();
    let pid = listening["pid"].as_u64().unwrap();
    assert_eq!(listening["format"], 1);
    let web = listening["listening"]["web"].as_str().unwrap().to_string();
    assert!(
        web.starts_with("127.0.0.1:") && !web.ends_with(":0"),
        "{listening}"
    );
    // Unnamed: keyed by its position, as addresses are.
    assert_eq!(listening["listening"]["1"], sock.display().to_string());
    assert!(sock.exists());
    // The child is not ready (it waits for stdin): the connection waits in
    // the backlog.
    let client = std::thread::spawn(move || ask(&web, "early"));
    let mut unix = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    writeln!(unix, "also early").unwrap();
    r.send("go");
    let ready = r.json();
    assert_eq!(ready["pid"].as_u64(), Some(pid));
    assert_eq!(ready["listening"], listening["listening"], "{ready}");
    assert_eq!(client.join().unwrap(), "web fd 3: early");
    let mut answer = String::new();
    BufReader::new(&unix).read_line(&mut answer).unwrap();
    assert_eq!(answer, "unknown fd 4: also early\n");
    let f = r.finish();
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(!sock.exists(), "the socket file readyfd made is removed");
}

#[test]
fn human_line_and_then_environment() {
    let mut cmd = readyfd(["run", "--listen", "api=tcp:127.0.0.1:0", "--then"]);
    cmd.arg("echo \"$READYFD_LISTEN $READYFD_LISTEN_API\"")
        .args(["--", "sh", "-c", "exec \"$READYFD_BIN\" notify"]);
    let f = run(&mut cmd);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let line = f.stderr.lines().next().unwrap();
    let addr = line.rsplit("api=").next().unwrap();
    assert!(
        line.starts_with("readyfd: sh (pid ")
            && line.contains(") is starting, listening on api=127.0.0.1:"),
        "{}",
        f.stderr
    );
    assert_eq!(f.stdout, [format!("{addr} {addr}")]);
}

/// `--then-after listening` starts CMD before PROGRAM is ready: here it
/// never is (it waits for a line CMD sends through the socket).
#[test]
fn then_after_listening_does_not_wait_for_readiness() {
    let mut cmd = readyfd(["run", "--listen", "in=tcp:127.0.0.1:0", "--timeout", "1h"]);
    cmd.args(["--then-after", "listening", "--then"])
        .arg("python3 -c 'import os,socket; h,p=os.environ[\"READYFD_LISTEN_IN\"].rsplit(\":\",1); s=socket.create_connection((h,int(p))); s.sendall(b\"x\\n\"); print(s.makefile().readline().strip())'")
        .args(["--", "python3", "-c"])
        .arg("import socket; s=socket.socket(fileno=3); c,_=s.accept(); c.makefile().readline(); c.sendall(b'served before ready\\n'); import time; c.recv(1)");
    let f = run(&mut cmd);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert_eq!(f.stdout, ["served before ready"]);
}

/// Each bad input: a clear message, its exit status, nothing left bound
/// (readyfd is another process: its fds are gone with it; the library's
/// tests count fds), no socket file left, and a file
/// that was there already left untouched.
#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    // A port that was free, bound first and released when the second
    // --listen fails.
    let free_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = readyfd(["run"]);
    let dir = run_dir(&cmd);
    let first_sock = dir.join("first.sock");
    cmd.args(["--listen", &format!("a=tcp:127.0.0.1:{free_port}")])
        .arg("--listen")
        .arg(format!("b=unix:{}", first_sock.display()))
        .args(["--listen", &format!("c=tcp:{busy_addr}")])
        .args(["--", "true"]);
    let f = run(&mut cmd);
    assert_eq!(f.code, Some(73), "{}", f.stderr);
    assert_eq!(
        f.stderr.trim_end(),
        format!(
            "readyfd: --listen c=tcp:{busy_addr}: cannot bind {busy_addr}: the port is in use (choose another port, or 0 for any free one)"
        )
    );
    TcpListener::bind(("127.0.0.1", free_port)).expect("the first port was released");
    assert!(!first_sock.exists());

    // Someone else's file: refused, and left as it was.
    let elsewhere = std::env::temp_dir().join(format!("readyfd-listen-{}", std::process::id()));
    std::fs::create_dir_all(&elsewhere).unwrap();
    let theirs = elsewhere.join("theirs.sock");
    let other = std::os::unix::net::UnixListener::bind(&theirs).unwrap();
    let mut cmd = readyfd(["run"]);
    cmd.arg("--listen")
        .arg(format!("unix:{}", theirs.display()))
        .args(["--", "true"]);
    let f = run(&mut cmd);
    assert_eq!(f.code, Some(73), "{}", f.stderr);
    assert!(
        f.stderr
            .contains("already exists: readyfd does not remove a file it did not create"),
        "{}",
        f.stderr
    );
    assert!(theirs.exists(), "someone else's file is left alone");
    drop(other);
    std::fs::remove_dir_all(&elsewhere).unwrap();

    // A directory that does not exist.
    let f = run(&mut readyfd([
        "run",
        "--listen",
        "unix:/nonexistent-dir/x.sock",
        "--",
        "true",
    ]));
    assert_eq!(f.code, Some(73), "{}", f.stderr);
    assert!(
        f.stderr.contains("its directory does not exist"),
        "{}",
        f.stderr
    );

    // A directory no one may create files in (sysfs, even for root).
    let f = run(&mut readyfd([
        "run",
        "--listen",
        "unix:/sys/readyfd-test.sock",
        "--",
        "true",
    ]));
    assert_eq!(f.code, Some(73), "{}", f.stderr);
    assert!(
        f.stderr.starts_with(
            "readyfd: --listen unix:/sys/readyfd-test.sock: cannot create the socket file /sys/readyfd-test.sock: "
        ),
        "{}",
        f.stderr
    );
    assert!(!std::path::Path::new("/sys/readyfd-test.sock").exists());

    // An address of no interface here.
    let f = run(&mut readyfd([
        "run",
        "--listen",
        "tcp:192.0.2.1:0",
        "--",
        "true",
    ]));
    assert_eq!(f.code, Some(73), "{}", f.stderr);
    assert!(
        f.stderr.contains("no interface of this machine"),
        "{}",
        f.stderr
    );

    // Bad addresses and combinations: usage errors.
    for args in [
        vec!["--listen", "tcp:127.0.0.1"],
        vec!["--listen", "udp:127.0.0.1:0"],
        vec!["--listen", "tcp:127.0.0.1:99999"],
        vec!["--listen", "unix:"],
        vec!["--listen", "a=tcp:127.0.0.1:0", "--fd", "3"],
        vec!["--then-after", "listening", "--then", "true"],
        vec!["--then-after", "soon"],
    ] {
        let mut cmd = readyfd(["run"]);
        cmd.args(&args).args(["--", "true"]);
        let f = run(&mut cmd);
        assert_eq!(f.code, Some(64), "{args:?}: {}", f.stderr);
    }
    drop(busy);
}

/// The socket file goes when readyfd ends on SIGTERM, before readiness and
/// after it (attached).
#[test]
fn socket_files_are_removed_on_sigterm() {
    for ready_first in [false, true] {
        let mut cmd = readyfd(["run", "--json"]);
        let sock = run_dir(&cmd).join("s.sock");
        let child = if ready_first {
            "\"$READYFD_BIN\" notify; exec sleep 1000"
        } else {
            "exec sleep 1000"
        };
        cmd.arg("--listen")
            .arg(format!("s=unix:{}", sock.display()))
            .args(["--", "sh", "-c", child]);
        let r = Running::start(&mut cmd);
        r.json();
        if ready_first {
            r.json();
        }
        assert!(sock.exists());
        r.signal(Signal::SIGTERM);
        let f = r.finish();
        assert_eq!(f.code, Some(128 + 15), "{}", f.stderr);
        assert!(!sock.exists(), "ready_first={ready_first}");
    }
}

/// dbus-daemon's `--address=systemd:` takes its socket with
/// `sd_listen_fds`: it serves a `GetId` call on the socket readyfd bound.
/// Skipped (with a note on stderr) where dbus-daemon or dbus-send is not
/// installed (Debian: `apt install dbus-daemon dbus-bin`).
#[test]
fn dbus_daemon_takes_its_socket_by_socket_activation() {
    let found = |p: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {p}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !found("dbus-daemon") || !found("dbus-send") {
        eprintln!("skipped: dbus-daemon or dbus-send is not installed");
        return;
    }
    let own = std::env::temp_dir().join(format!("readyfd-dbus-{}", std::process::id()));
    std::fs::create_dir_all(&own).unwrap();
    let mut cmd = readyfd(["run", "--protocol", "pipe", "--json"]);
    let sock = run_dir(&cmd).join("bus.sock");
    cmd.arg("--listen")
        .arg(format!("bus=unix:{}", sock.display()))
        .arg("--then")
        .arg(format!(
            "dbus-send --bus=unix:path={} --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.GetId",
            sock.display()
        ))
        // dbus-daemon makes $XDG_RUNTIME_DIR/dbus-1: give it a directory of
        // its own (env execs: the pid, and so LISTEN_PID, stays the same).
        .arg("--")
        .arg("env")
        .arg(format!("XDG_RUNTIME_DIR={}", own.display()))
        .args(["dbus-daemon", "--session", "--nofork"])
        .args(["--address=systemd:", "--print-address={fd}"]);
    let f = run(&mut cmd);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let ready: serde_json::Value = serde_json::from_str(&f.stdout[1]).unwrap();
    let address = ready["address"].as_str().unwrap();
    assert!(
        address.starts_with(&format!("unix:path={},guid=", sock.display())),
        "{address}"
    );
    assert!(
        f.stdout
            .iter()
            .any(|l| l.trim_start().starts_with("string \"")),
        "{:?}",
        f.stdout
    );
    assert!(!sock.exists());
    std::fs::remove_dir_all(own).unwrap();
}

/// With `--then-after listening`, a PROGRAM that fails while CMD runs
/// stops CMD at once, and the run fails with 68, as after readiness.
#[test]
fn then_after_listening_stops_cmd_when_program_fails() {
    let mut cmd = readyfd(["run", "--listen", "tcp:127.0.0.1:0"]);
    cmd.args(["--then-after", "listening", "--then", "exec sleep 1000"])
        .args(["--", "sh", "-c", "exit 3"]);
    let f = run(&mut cmd);
    assert_eq!(f.code, Some(68), "{}", f.stderr);
    assert!(
        f.stderr
            .contains("exited with status 3 while --then CMD was running: stopping CMD"),
        "{}",
        f.stderr
    );
}
