//! `readyfd notify` under each protocol, with `readyfd run` as the parent
//! and with independent parents written in Python (the article's pipe
//! parent, an sd_notify receiver), and under none.

mod common;

use common::{READYFD, Running, readyfd, run};
use serde_json::Value;

/// `readyfd run --protocol P --json -- sh -c 'readyfd notify ARGS; read line'`:
/// the script exits 0 once the test closes stdin.
fn script_under(protocol: &str, notify_args: &str) -> Running {
    let script = format!("\"$READYFD_BIN\" notify {notify_args} || exit; read line; exit 0");
    Running::start(&mut readyfd([
        "run",
        "--protocol",
        protocol,
        "--json",
        "--",
        "sh",
        "-c",
        &script,
    ]))
}

#[test]
fn native_named_addresses_status_and_the_scripts_pid() {
    let mut r = script_under(
        "native",
        "--addr http=127.0.0.1:9 --addr unix:/run/a.sock --status up",
    );
    let j = r.json();
    assert_eq!(
        j["addresses"],
        serde_json::json!({"http": "127.0.0.1:9", "1": "/run/a.sock"})
    );
    assert_eq!(j["status"], "up");
    // notify reports the script that ran it, which readyfd started.
    assert_eq!(j["main_pid"], j["pid"]);
    r.close_stdin();
    assert_eq!(r.finish().code, Some(0));
}

#[test]
fn readiness_comes_when_notify_runs_not_before() {
    // The script holds the channel's fd from the start; only notify's
    // message makes it ready. The script waits for our line first, so a
    // JSON line that came early would lack the status.
    let mut r = Running::start(&mut readyfd([
        "run",
        "--json",
        "--",
        "sh",
        "-c",
        "echo script-started; read go; \"$READYFD_BIN\" notify --status after-go || exit; read end; exit 0",
    ]));
    assert_eq!(r.line(), "script-started");
    r.send("go");
    let j: Value = r.json();
    assert_eq!(j["status"], "after-go");
    r.close_stdin();
    assert_eq!(r.finish().code, Some(0));
}

#[test]
fn pipe_first_address_under_readyfd_run() {
    let mut r = script_under("pipe", "--addr http=127.0.0.1:9 --addr other=127.0.0.1:10");
    let j = r.json();
    assert_eq!(j["protocol"], "pipe");
    assert_eq!(
        j["address"], "127.0.0.1:9",
        "the pipe carries the first address"
    );
    r.close_stdin();
    assert_eq!(r.finish().code, Some(0));
}

#[test]
fn systemd_under_readyfd_run() {
    let mut r = script_under("systemd", "--addr http=127.0.0.1:9 --status up");
    let j = r.json();
    assert_eq!(j["protocol"], "systemd");
    assert_eq!(j["status"], "up");
    assert_eq!(j["addresses"]["http"], "127.0.0.1:9");
    r.close_stdin();
    assert_eq!(r.finish().code, Some(0));
}

#[test]
fn pipe_with_the_articles_parent() {
    // The parent of "Readiness notifications in Go", in Python: a pipe,
    // CHILD_READY_FD, read to EOF.
    let parent = "import os, subprocess, sys\n\
                  r, w = os.pipe()\n\
                  env = dict(os.environ, CHILD_READY_FD=str(w))\n\
                  p = subprocess.Popen(sys.argv[1:], pass_fds=(w,), env=env)\n\
                  os.close(w)\n\
                  data = b''\n\
                  while True:\n\
                  \x20   d = os.read(r, 4096)\n\
                  \x20   if not d:\n\
                  \x20       break\n\
                  \x20   data += d\n\
                  print(repr(data.decode()))\n\
                  sys.exit(p.wait())\n";
    let mut cmd = std::process::Command::new("python3");
    cmd.args([
        "-c",
        parent,
        READYFD,
        "notify",
        "--addr",
        "http=127.0.0.1:8080",
    ]);
    cmd.env_remove("READYFD").env_remove("NOTIFY_SOCKET");
    let f = run(&mut cmd);
    assert_eq!(f.code, Some(0), "{f:?}");
    assert_eq!(f.stdout, ["'127.0.0.1:8080\\n'"]);
}

#[test]
fn systemd_with_an_independent_receiver_and_its_barrier() {
    // An sd_notify receiver in Python: prints each datagram and closes the
    // fds that come with BARRIER=1, which releases notify.
    let receiver = "import os, socket, subprocess, sys, tempfile\n\
                    d = tempfile.mkdtemp()\n\
                    path = os.path.join(d, 'notify')\n\
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                    s.bind(path)\n\
                    env = dict(os.environ, NOTIFY_SOCKET=path)\n\
                    p = subprocess.Popen(sys.argv[1:], env=env)\n\
                    while True:\n\
                    \x20   msg, fds, _, _ = socket.recv_fds(s, 4096, 4)\n\
                    \x20   for fd in fds:\n\
                    \x20       os.close(fd)\n\
                    \x20   print(repr(msg.decode()))\n\
                    \x20   if msg == b'BARRIER=1':\n\
                    \x20       break\n\
                    code = p.wait()\n\
                    os.unlink(path)\n\
                    os.rmdir(d)\n\
                    sys.exit(code)\n";
    let mut cmd = std::process::Command::new("python3");
    cmd.args([
        "-c", receiver, READYFD, "notify", "--status", "up", "--pid", "4242",
    ]);
    cmd.env_remove("READYFD").env_remove("CHILD_READY_FD");
    let f = run(&mut cmd);
    assert_eq!(f.code, Some(0), "{f:?}");
    assert_eq!(f.stdout.len(), 2, "{f:?}");
    let ready = &f.stdout[0];
    for line in ["READY=1", "STATUS=up", "MAINPID=4242"] {
        assert!(ready.contains(line), "{line} in {ready}");
    }
    assert_eq!(f.stdout[1], "'BARRIER=1'");
}

#[test]
fn none_offered_is_78() {
    let f = run(&mut readyfd(["notify", "--addr", "127.0.0.1:1"]));
    assert_eq!(f.code, Some(78), "{f:?}");
    assert!(
        f.stderr
            .contains("READYFD, CHILD_READY_FD and NOTIFY_SOCKET"),
        "{}",
        f.stderr
    );
}

#[test]
fn unusable_channel_is_74() {
    // READYFD names an fd that is not open (a daemon that closed it).
    let f = run(readyfd(["notify"]).env("READYFD", "9"));
    assert_eq!(f.code, Some(74), "{f:?}");
    assert!(f.stderr.contains("READYFD=9"), "{}", f.stderr);
}

#[test]
fn empty_address_is_a_usage_error() {
    let f = run(&mut readyfd(["notify", "--addr", "http="]));
    assert_eq!(f.code, Some(64), "{f:?}");
}

#[test]
fn dbus_address_stays_whole() {
    // PROTOCOL.md §11: `unix:path=...,guid=...` is a D-Bus address, text,
    // not the Unix path `path=/x,guid=1`.
    let mut r = script_under(
        "native",
        "--addr bus=unix:path=/x,guid=1 --addr unix:/run/b.sock",
    );
    let j = r.json();
    assert_eq!(
        j["addresses"],
        serde_json::json!({"bus": "unix:path=/x,guid=1", "1": "/run/b.sock"})
    );
    r.close_stdin();
    assert_eq!(r.finish().code, Some(0));
}

#[test]
fn parent_of_another_protocol_version_is_refused() {
    // A native parent in Python whose Hello says version 2: notify must not
    // report success to a parent that cannot take its Ready.
    let parent = "import os, socket, struct, subprocess, sys\n\
                  p, c = socket.socketpair()\n\
                  hello = b'RDFD' + struct.pack('<HIII', 2, os.getpid(), 0, 16 << 20)\n\
                  p.sendall(struct.pack('<IB', len(hello), 1) + hello)\n\
                  env = dict(os.environ, READYFD=str(c.fileno()))\n\
                  k = subprocess.Popen(sys.argv[1:], pass_fds=(c.fileno(),), env=env)\n\
                  c.close()\n\
                  sys.exit(k.wait())\n";
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", parent, READYFD, "notify", "--status", "up"]);
    cmd.env_remove("CHILD_READY_FD").env_remove("NOTIFY_SOCKET");
    let f = run(&mut cmd);
    assert_eq!(f.code, Some(74), "{f:?}");
    assert!(f.stderr.contains("version 2"), "{}", f.stderr);
}

/// `readyfd run --json --protocol P --then 'echo ...' -- sh -c SCRIPT`: the
/// ready line and what CMD was told, as (json, READYFD_PID line).
fn main_pid_under(protocol: &str, script: &str) -> (Value, String, String) {
    let f = run(&mut readyfd([
        "run",
        "--protocol",
        protocol,
        "--json",
        "--then",
        "echo \"then $READYFD_PID $READYFD_MAIN_PID\"",
        "--",
        "sh",
        "-c",
        script,
    ]));
    let json = f
        .stdout
        .iter()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no ready line: {f:?}"));
    let then = f
        .stdout
        .iter()
        .find(|l| l.starts_with("then "))
        .unwrap_or_else(|| panic!("CMD did not run: {f:?}"))
        .clone();
    (serde_json::from_str(json).unwrap(), then, f.stderr)
}

#[test]
fn notify_as_the_program_itself_reports_its_own_pid() {
    // `exec` makes notify the program readyfd started: its parent is
    // readyfd, which it reported as the main pid before.
    for protocol in ["native", "systemd"] {
        let (j, then, _) = main_pid_under(protocol, "exec \"$READYFD_BIN\" notify --status up");
        assert_eq!(j["main_pid"], j["pid"], "{protocol}: {j}");
        assert_eq!(then, format!("then {0} {0}", j["pid"]), "{protocol}");
    }
}

#[test]
fn a_main_pid_readyfd_did_not_start_is_refused() {
    // pid 1 is not PROGRAM's, nor anything readyfd started: it must not
    // become the main pid that CMD is told of (and may signal).
    let (j, then, stderr) = main_pid_under(
        "native",
        "\"$READYFD_BIN\" notify --pid 1 || exit; exec sleep 600",
    );
    assert_eq!(j["main_pid"], j["pid"], "{j}");
    assert_eq!(then, format!("then {0} {0}", j["pid"]));
    assert!(
        stderr.contains("reported main pid 1, which is neither"),
        "{stderr}"
    );
}
