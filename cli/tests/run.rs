//! `readyfd run` end to end: each protocol, `--json`, `--then`, signal
//! forwarding, the `{fd}` placeholder, every exit code, and nothing left
//! behind.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{READYFD, Running, gone, pid_in, readyfd, run};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Panics with a clear message when `python3`, which some children and the
/// pty driver are written in, is not on PATH (Debian: `apt install python3`).
fn needs_python3() {
    let found = std::process::Command::new("python3")
        .arg("-c")
        .arg("")
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test needs python3 on PATH (Debian: apt install python3)"
    );
}

/// A shell child that says ready with `readyfd notify ARGS`, then waits for
/// a line on stdin (which the test controls) before exiting.
fn notify_then_read(notify_args: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("\"$READYFD_BIN\" notify {notify_args} || exit; read line; exit 0"),
    ]
}

fn pid_of(json: &Value) -> u64 {
    json["pid"].as_u64().expect("pid")
}

fn http_get(addr: &str) -> String {
    let addr: SocketAddr = addr.parse().expect("a socket address");
    let mut s = TcpStream::connect(addr).expect("connect to the ready server");
    s.set_read_timeout(Some(common::BOUND)).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r
}

// ---- native -----------------------------------------------------------------

#[test]
fn native_json_line_describes_readiness_and_the_server_answers() {
    let r = Running::start(&mut readyfd([
        "run",
        "--json",
        "--",
        READYFD,
        "__demo-server",
    ]));
    let j = r.json();
    let pid = pid_of(&j);
    assert_eq!(j["main_pid"].as_u64(), Some(pid));
    assert_eq!(j["protocol"], "native");
    let http = j["addresses"]["http"]
        .as_str()
        .expect("an http address")
        .to_string();
    assert_eq!(j["address"].as_str(), Some(http.as_str()));
    assert!(http.starts_with("127.0.0.1:"), "{http}");
    assert_eq!(
        j["status"].as_str(),
        Some(format!("serving http://{http}/").as_str())
    );
    assert!(j["ready_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{j}");
    let response = http_get(&http);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains(&format!("(pid {pid})")), "{response}");
    // Attached: SIGTERM goes on to the server, which dies of it.
    r.signal(Signal::SIGTERM);
    let f = r.finish();
    assert_eq!(f.code, Some(128 + 15), "{f:?}");
    assert!(gone(pid));
}

#[test]
fn human_line_on_stderr_without_json() {
    let f = run(&mut readyfd([
        "run",
        "--then",
        "true",
        "--",
        READYFD,
        "__demo-server",
    ]));
    assert_eq!(f.code, Some(0), "{f:?}");
    assert!(f.stdout.is_empty(), "{f:?}");
    let line = f.stderr.lines().next().unwrap_or_default();
    assert!(line.starts_with("readyfd: "), "{line}");
    assert!(line.contains("is ready after"), "{line}");
    assert!(line.contains("(native): http=127.0.0.1:"), "{line}");
    assert!(
        !f.stderr.contains('\r'),
        "no progress line without a terminal: {:?}",
        f.stderr
    );
}

/// The Python peer written from PROTOCOL.md alone (`tests/peers/child.py`,
/// also run against the library by `tests/foreign_peers.rs`): the ready
/// line carries the address it bound, `--then` reaches it there, and the
/// stop goes through `Shutdown`, which the peer acknowledges and exits 0.
#[test]
fn json_line_of_the_python_peer_written_from_the_spec() {
    needs_python3();
    let peer = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/peers/child.py");
    let greet = "import os, socket\n\
        host, port = os.environ['READYFD_ADDR_HTTP'].rsplit(':', 1)\n\
        with socket.create_connection((host, int(port))) as c:\n\
        \x20   print('then: ' + c.makefile().readline().strip())";
    let f = run(&mut readyfd([
        "run",
        "--json",
        "--then",
        &format!("python3 -c \"{greet}\""),
        "--",
        "python3",
        peer,
    ]));
    assert_eq!(f.code, Some(0), "{f:?}");
    let j: Value = serde_json::from_str(&f.stdout[0]).expect("the ready line is JSON");
    assert_eq!(j["format"], 1, "{j}");
    assert_eq!(j["protocol"], "native", "{j}");
    assert_eq!(j["main_pid"].as_u64(), Some(pid_of(&j)), "{j}");
    let http = j["addresses"]["http"].as_str().expect("an http address");
    assert_eq!(j["address"].as_str(), Some(http), "{j}");
    assert!(
        http.strip_prefix("127.0.0.1:")
            .and_then(|p| p.parse::<u16>().ok())
            .is_some_and(|p| p != 0),
        "{http}"
    );
    // The Ready's status, or the Status the peer sends right after it.
    assert!(
        ["listening", "serving from python"].contains(&j["status"].as_str().unwrap_or("")),
        "{j}"
    );
    assert!(f.stdout.contains(&"then: python peer".to_string()), "{f:?}");
    assert!(
        f.stderr
            .contains("acknowledged Shutdown and exited with status 0"),
        "{f:?}"
    );
}

// ---- pipe and systemd (the library's issue 4) ---------------------------------

#[test]
fn pipe_shell_child_writes_its_address_to_fd_3() {
    let f = run(&mut readyfd([
        "run",
        "--protocol",
        "pipe",
        "--json",
        "--then",
        "echo \"then $READYFD_ADDR\"",
        "--",
        "sh",
        "-c",
        "echo 127.0.0.1:1234 >&3; exec sleep 1000 # sleep-ok: plays a server that runs on",
    ]));
    assert_eq!(f.code, Some(0), "{f:?}");
    let j: Value = serde_json::from_str(&f.stdout[0]).unwrap();
    assert_eq!(j["protocol"], "pipe");
    assert_eq!(j["address"], "127.0.0.1:1234");
    assert_eq!(
        j["addresses"]["0"], "127.0.0.1:1234",
        "unnamed: keyed by position"
    );
    assert_eq!(f.stdout[1], "then 127.0.0.1:1234");
    assert!(gone(pid_of(&j)));
}

#[test]
fn pipe_python_child_writes_without_newline_and_closes() {
    needs_python3();
    // Debian Code Search's -addrfd: the address, no newline, close.
    let script = "import os, signal\n\
                  fd = int(os.environ['CHILD_READY_FD'])\n\
                  os.write(fd, b'127.0.0.1:4321')\n\
                  os.close(fd)\n\
                  signal.pause()\n";
    let f = run(&mut readyfd([
        "run",
        "--protocol",
        "pipe",
        "--json",
        "--then",
        "true",
        "--",
        "python3",
        "-c",
        script,
    ]));
    assert_eq!(f.code, Some(0), "{f:?}");
    let j: Value = serde_json::from_str(&f.stdout[0]).unwrap();
    assert_eq!(j["address"], "127.0.0.1:4321");
}

#[test]
fn systemd_python_child_sends_ready_to_notify_socket() {
    needs_python3();
    let script = "import os, signal, socket\n\
                  a = os.environ['NOTIFY_SOCKET']\n\
                  a = '\\0' + a[1:] if a.startswith('@') else a\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                  s.sendto(b'STATUS=loading', a)\n\
                  s.sendto(b'READY=1\\nSTATUS=serving\\n', a)\n\
                  signal.pause()\n";
    let f = run(&mut readyfd([
        "run",
        "--protocol",
        "systemd",
        "--json",
        "--then",
        "echo \"then $READYFD_MAIN_PID\"",
        "--",
        "python3",
        "-c",
        script,
    ]));
    assert_eq!(f.code, Some(0), "{f:?}");
    let j: Value = serde_json::from_str(&f.stdout[0]).unwrap();
    assert_eq!(j["protocol"], "systemd");
    assert_eq!(j["status"], "serving");
    assert_eq!(f.stdout[1], format!("then {}", pid_of(&j)));
    assert!(gone(pid_of(&j)));
}

#[test]
fn demo_server_speaks_every_protocol() {
    for protocol in ["native", "pipe", "systemd"] {
        let r = Running::start(&mut readyfd([
            "run",
            "--protocol",
            protocol,
            "--json",
            "--",
            READYFD,
            "__demo-server",
        ]));
        let j = r.json();
        let addr = j["address"].as_str().expect("an address").to_string();
        assert!(http_get(&addr).starts_with("HTTP/1.1 200 OK"), "{protocol}");
        r.signal(Signal::SIGTERM);
        let f = r.finish();
        assert_eq!(f.code, Some(128 + 15), "{protocol}: {f:?}");
    }
}

// ---- --then -------------------------------------------------------------------

#[test]
fn then_gets_the_environment_and_its_status_is_the_exit_status() {
    let program =
        notify_then_read("--addr http=127.0.0.1:9 --addr unix:/run/x.sock --addr alt-v2=/tmp/s");
    let mut args: Vec<String> = [
        "run",
        "--json",
        "--then",
        "echo \"$READYFD_PID|$READYFD_MAIN_PID|$READYFD_ADDR|$READYFD_ADDR_HTTP|$READYFD_ADDR_1|$READYFD_ADDR_ALT_V2|${READYFD-unset}\"; exit 3",
        "--",
    ]
    .map(String::from)
    .to_vec();
    args.extend(program);
    let mut r = Running::start(&mut readyfd(&args));
    let j = r.json();
    let pid = pid_of(&j);
    assert_eq!(
        j["addresses"],
        serde_json::json!({"http": "127.0.0.1:9", "1": "/run/x.sock", "alt-v2": "/tmp/s"})
    );
    assert_eq!(
        r.line(),
        format!("{pid}|{pid}|127.0.0.1:9|127.0.0.1:9|/run/x.sock|/tmp/s|unset")
    );
    r.close_stdin();
    let f = r.finish();
    assert_eq!(f.code, Some(3), "CMD's status: {f:?}");
    assert!(gone(pid));
}

#[test]
fn then_stops_a_native_program_with_shutdown() {
    let f = run(&mut readyfd([
        "run",
        "--json",
        "--then",
        "true",
        "--",
        READYFD,
        "__demo-server",
    ]));
    assert_eq!(f.code, Some(0), "{f:?}");
    let j: Value = serde_json::from_str(&f.stdout[0]).unwrap();
    assert!(
        f.stderr
            .contains("acknowledged Shutdown and exited with status 0"),
        "{}",
        f.stderr
    );
    assert!(gone(pid_of(&j)));
}

#[test]
fn then_signal_passes_on_to_cmd_and_program_is_stopped() {
    let r = Running::start(&mut readyfd([
        "run",
        "--json",
        "--then",
        "echo then-started; exec cat",
        "--",
        READYFD,
        "__demo-server",
    ]));
    let j = r.json();
    assert_eq!(r.line(), "then-started");
    r.signal(Signal::SIGTERM);
    let f = r.finish();
    assert_eq!(
        f.code,
        Some(128 + 15),
        "CMD (cat) died of the SIGTERM passed on: {f:?}"
    );
    assert!(f.stderr.contains("acknowledged Shutdown"), "{}", f.stderr);
    assert!(gone(pid_of(&j)));
}

#[test]
fn then_leaves_no_process_of_the_program_behind() {
    // A background child, and one that ignores SIGTERM and is orphaned
    // (its subshell exits at once): both must be gone when readyfd exits.
    let script = "sleep 1000 & a=$! # sleep-ok: a helper that runs on\n\
                  (trap '' TERM; sleep 1000 & echo $! > \"$1\") # sleep-ok\n\
                  \"$READYFD_BIN\" notify --status \"$a $(cat \"$1\")\"\n\
                  wait";
    let tmp = std::env::temp_dir().join(format!("readyfd-cli-test-{}", std::process::id()));
    let f = run(&mut readyfd([
        "run",
        "--json",
        "--grace",
        "300ms",
        "--then",
        "true",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        tmp.to_str().unwrap(),
    ]));
    let _ = std::fs::remove_file(&tmp);
    assert_eq!(f.code, Some(0), "{f:?}");
    let j: Value = serde_json::from_str(&f.stdout[0]).unwrap();
    let pids: Vec<u64> = j["status"]
        .as_str()
        .unwrap()
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{j}");
    for pid in pids.into_iter().chain([pid_of(&j)]) {
        assert!(gone(pid), "process {pid} is left behind: {f:?}");
    }
}

#[test]
fn attached_program_exit_ends_its_group_and_gives_its_status() {
    let mut r = Running::start(&mut readyfd([
        "run",
        "--json",
        "--",
        "sh",
        "-c",
        "sleep 1000 & \"$READYFD_BIN\" notify --status $! && read line; exit 4 # sleep-ok",
    ]));
    let j = r.json();
    let helper: u64 = j["status"].as_str().unwrap().parse().unwrap();
    r.close_stdin();
    let f = r.finish();
    assert_eq!(f.code, Some(4), "{f:?}");
    assert!(gone(helper), "the background helper is left behind");
}

#[test]
fn attached_program_exiting_right_after_readiness_still_ends_its_group() {
    // PROGRAM exits the moment its helper has said Ready: whether readyfd
    // sees the exit before or after the Ready, it is PROGRAM ending (with a
    // failure status, so not a wrapper handing over), and the background
    // `sleep` must not keep readyfd waiting.
    let mut r = Running::start(&mut readyfd([
        "run",
        "--json",
        "--",
        "sh",
        "-c",
        "sleep 1000 & \"$READYFD_BIN\" notify --status $! || exit; exit 4 # sleep-ok",
    ]));
    let j = r.json();
    let helper: u64 = j["status"].as_str().unwrap().parse().unwrap();
    r.close_stdin();
    let f = r.finish();
    assert_eq!(f.code, Some(4), "{f:?}");
    assert!(gone(helper), "the background helper is left behind");
}

#[test]
fn attached_wrapper_follows_the_group_and_gives_the_main_pids_status() {
    // `sh -c 'server &'`: the shell exits 0 at once; the server it left
    // in the group says Ready with its own pid.
    let r = Running::start(&mut readyfd([
        "run",
        "--json",
        "--",
        "sh",
        "-c",
        "\"$READYFD_BIN\" __demo-server &",
    ]));
    let j = r.json();
    let main = j["main_pid"].as_u64().unwrap();
    assert_ne!(main, pid_of(&j), "{j}");
    assert!(http_get(j["address"].as_str().unwrap()).starts_with("HTTP/1.1 200 OK"));
    r.signal(Signal::SIGTERM);
    let f = r.finish();
    assert_eq!(
        f.code,
        Some(128 + 15),
        "the server's status, not the wrapper's 0: {f:?}"
    );
    assert!(gone(main));
}

#[test]
fn a_wrapper_that_exits_after_its_server_is_ready_is_still_a_wrapper() {
    // The shell outlives the server's Ready (it waits for a line), then
    // exits 0: the order of the two must not matter, the server runs on.
    let mut r = Running::start(&mut readyfd([
        "run",
        "--json",
        "--",
        "sh",
        "-c",
        "\"$READYFD_BIN\" __demo-server & read line; exit 0",
    ]));
    let j = r.json();
    let main = j["main_pid"].as_u64().unwrap();
    let wrapper = pid_of(&j);
    assert_ne!(main, wrapper, "{j}");
    let address = j["address"].as_str().unwrap().to_string();
    assert!(http_get(&address).starts_with("HTTP/1.1 200 OK"));
    r.close_stdin();
    // Synchronise on the wrapper's exit (readyfd reaps it), then use the
    // server again.
    let bound = std::time::Instant::now() + common::BOUND;
    while !gone(wrapper) {
        assert!(
            std::time::Instant::now() < bound,
            "the wrapper did not exit"
        );
        std::thread::yield_now();
    }
    assert!(http_get(&address).starts_with("HTTP/1.1 200 OK"));
    r.signal(Signal::SIGTERM);
    let f = r.finish();
    assert_eq!(f.code, Some(128 + 15), "the server's status: {f:?}");
    assert!(gone(main));
}

#[test]
fn program_gets_sigterm_when_readyfd_is_killed_outright() {
    let r = Running::start(&mut readyfd([
        "run",
        "--json",
        "--",
        READYFD,
        "__demo-server",
    ]));
    let pid = pid_of(&r.json());
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as i32, 0) };
    assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel just returned this fd to us.
    let pidfd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    r.signal(Signal::SIGKILL);
    let f = r.finish();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&f.status),
        Some(9)
    );
    // Its parent-death signal ends the server, which is not readyfd's
    // child any more: wait for its exit on the pidfd.
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let n = nix::poll::poll(
        &mut fds,
        nix::poll::PollTimeout::try_from(common::BOUND).unwrap(),
    )
    .unwrap();
    assert_eq!(n, 1, "the server outlived readyfd");
}

// ---- signals while attached -----------------------------------------------------

#[test]
fn signal_is_forwarded_and_the_childs_exit_status_passes_through() {
    let r = Running::start(&mut readyfd([
        "run",
        "--json",
        "--",
        "sh",
        "-c",
        "trap 'exit 7' TERM; \"$READYFD_BIN\" notify; sleep 1000 & wait # sleep-ok",
    ]));
    let j = r.json();
    r.signal(Signal::SIGTERM);
    let f = r.finish();
    assert_eq!(f.code, Some(7), "{f:?}");
    assert!(gone(pid_of(&j)));
}

#[test]
fn child_killed_by_the_forwarded_signal_gives_128_plus_n() {
    for (signal, n) in [(Signal::SIGINT, 2), (Signal::SIGHUP, 1)] {
        let r = Running::start(&mut readyfd([
            "run",
            "--json",
            "--",
            READYFD,
            "__demo-server",
        ]));
        let j = r.json();
        r.signal(signal);
        let f = r.finish();
        assert_eq!(f.code, Some(128 + n), "{signal}: {f:?}");
        assert!(gone(pid_of(&j)));
    }
}

// ---- {fd} --------------------------------------------------------------------------

#[test]
fn fd_placeholder_is_replaced_in_args() {
    // Native: the script checks what it got, then closes the fd while
    // alive, which is readiness without a message.
    let f = run(&mut readyfd([
        "run",
        "--fd",
        "7",
        "--then",
        "true",
        "--",
        "sh",
        "-c",
        "[ \"$1\" = --print-address=7 ] && [ \"$READYFD\" = 7 ] || exit 9; exec 7>&-; exec sleep 1000 # sleep-ok",
        "sh",
        "--print-address={fd}",
    ]));
    assert_eq!(f.code, Some(0), "{f:?}");
    // Pipe: the program writes to the fd it was told on its command line.
    let f = run(&mut readyfd([
        "run",
        "--protocol",
        "pipe",
        "--fd",
        "5",
        "--json",
        "--then",
        "true",
        "--",
        "sh",
        "-c",
        "echo 127.0.0.1:5555 >&\"$1\"; exec sleep 1000 # sleep-ok",
        "sh",
        "{fd}",
    ]));
    assert_eq!(f.code, Some(0), "{f:?}");
    let j: Value = serde_json::from_str(&f.stdout[0]).unwrap();
    assert_eq!(j["address"], "127.0.0.1:5555");
}

// ---- exit codes ------------------------------------------------------------------------

#[test]
fn timeout_is_75_and_the_program_is_stopped() {
    let f = run(&mut readyfd([
        "run",
        "--timeout",
        "300ms",
        "--",
        "sh",
        "-c",
        "exec sleep 1000 # sleep-ok: a server that never says it is ready",
    ]));
    assert_eq!(f.code, Some(75), "{f:?}");
    assert!(
        f.stderr.contains("was not ready after 300ms"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr.contains("--timeout"),
        "says what to try: {}",
        f.stderr
    );
    assert!(gone(pid_in(&f.stderr)));
}

#[test]
fn exit_before_ready_is_69() {
    let f = run(&mut readyfd([
        "run",
        "--",
        "sh",
        "-c",
        "echo cannot bind >&2; exit 3",
    ]));
    assert_eq!(f.code, Some(69), "{f:?}");
    assert!(f.stderr.starts_with("cannot bind\n"), "{}", f.stderr);
    assert!(
        f.stderr
            .contains("exited with status 3 before it was ready"),
        "{}",
        f.stderr
    );
}

#[test]
fn reported_failure_is_69() {
    needs_python3();
    let script = "import os, signal, socket\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                  s.sendto(b'STATUS=port in use\\nERRNO=98\\nSTOPPING=1', os.environ['NOTIFY_SOCKET'])\n\
                  signal.pause()\n";
    let f = run(&mut readyfd([
        "run",
        "--protocol",
        "systemd",
        "--timeout",
        "30s",
        "--",
        "python3",
        "-c",
        script,
    ]));
    assert_eq!(f.code, Some(69), "{f:?}");
    assert!(
        f.stderr.contains("reported that it could not start"),
        "{}",
        f.stderr
    );
    assert!(f.stderr.contains("Address already in use"), "{}", f.stderr);
    assert!(gone(pid_in(&f.stderr)));
}

#[test]
fn protocol_error_is_76() {
    let f = run(&mut readyfd([
        "run",
        "--",
        "sh",
        "-c",
        "printf 'this is not a readyfd hello' >&3; exec sleep 1000 # sleep-ok",
    ]));
    assert_eq!(f.code, Some(76), "{f:?}");
    assert!(
        f.stderr.contains("broke the native readiness protocol"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr.contains("--protocol"),
        "says what to try: {}",
        f.stderr
    );
    assert!(gone(pid_in(&f.stderr)));
}

#[test]
fn program_that_cannot_start_is_66() {
    let f = run(&mut readyfd([
        "run",
        "--",
        "/nonexistent/readyfd-test-program",
    ]));
    assert_eq!(f.code, Some(66), "{f:?}");
    assert!(f.stderr.contains("not found"), "{}", f.stderr);
    let f = run(&mut readyfd(["run", "--", "/etc/passwd"]));
    assert_eq!(f.code, Some(66), "{f:?}");
    assert!(f.stderr.contains("permission denied"), "{}", f.stderr);
}

#[test]
fn interrupted_while_waiting_is_128_plus_n_and_the_program_is_stopped() {
    let r = Running::start(&mut readyfd([
        "run",
        "--",
        "sh",
        "-c",
        "echo $$; exec sleep 1000 # sleep-ok: a server that never says it is ready",
    ]));
    let pid: u64 = r.line().parse().unwrap();
    r.signal(Signal::SIGINT);
    let f = r.finish();
    assert_eq!(f.code, Some(128 + 2), "{f:?}");
    assert!(f.stderr.contains("interrupted by SIGINT"), "{}", f.stderr);
    assert!(gone(pid));
}

#[test]
fn failing_system_call_is_71() {
    needs_python3();
    // Room for four fds: 0-2 and readyfd's signalfd, none for the channel's
    // socket pair. python3 closes every inherited fd above 2 first.
    let limit = "import resource, subprocess, sys\n\
                 four = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (4, 4))\n\
                 sys.exit(subprocess.call(sys.argv[1:], preexec_fn=four))\n";
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", limit, READYFD, "run", "--", "true"]);
    let f = run(&mut cmd);
    assert_eq!(f.code, Some(71), "{f:?}");
    assert!(f.stderr.contains("Too many open files"), "{}", f.stderr);
}

// ---- progress ------------------------------------------------------------------------

#[test]
fn progress_line_only_on_a_terminal() {
    needs_python3();
    // On a terminal (a pty made by python3): drawn, then erased. The server
    // is ready only once the driver has seen the progress line on the pty
    // (it then writes a line to the server's stdin): no race against the
    // one-second threshold.
    let on_line = "read line; \"$READYFD_BIN\" notify --status up";
    let driver = "import os, pty, subprocess, sys\n\
                  m, s = pty.openpty()\n\
                  p = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=s)\n\
                  os.close(s)\n\
                  out = b''\n\
                  while True:\n\
                  \x20   try:\n\
                  \x20       d = os.read(m, 4096)\n\
                  \x20   except OSError:\n\
                  \x20       break\n\
                  \x20   if not d:\n\
                  \x20       break\n\
                  \x20   out += d\n\
                  \x20   if p.stdin and b'waiting for' in out:\n\
                  \x20       p.stdin.write(b'go\\n')\n\
                  \x20       p.stdin.close()\n\
                  \x20       p.stdin = None\n\
                  p.wait()\n\
                  sys.stdout.write(out.decode('utf-8', 'replace'))\n\
                  sys.exit(p.returncode)\n";
    let mut tty = std::process::Command::new("python3");
    tty.args([
        "-c", driver, READYFD, "run", "--then", "true", "--", "sh", "-c", on_line,
    ])
    .env("READYFD_BIN", READYFD);
    let f = run(&mut tty);
    assert_eq!(f.code, Some(0), "{f:?}");
    let screen = f.stdout.join("\n");
    // The first line is drawn once a second has passed: "1.0s" unless the
    // machine stalled; the count is checked for its shape.
    let drawn = screen
        .split("readyfd: waiting for sh to be ready: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no progress line: {screen:?}"));
    let secs = drawn.split('s').next().unwrap();
    assert!(
        secs.parse::<f64>().is_ok_and(|s| s >= 1.0) && secs.contains('.'),
        "{screen:?}"
    );
    assert!(screen.contains(", native"), "{screen:?}");
    assert!(
        screen.contains("\r\x1b[2Kreadyfd: sh (pid "),
        "erased before the ready line: {screen:?}"
    );
    // Not on a terminal: nothing of it, though the wait outlasts the
    // threshold.
    let slow = "sleep 1.3 # sleep-ok: plays a server slower than the 1 s threshold\n\
                \"$READYFD_BIN\" notify --status up";
    let f = run(&mut readyfd([
        "run", "--then", "true", "--", "sh", "-c", slow,
    ]));
    assert_eq!(f.code, Some(0), "{f:?}");
    assert!(!f.stderr.contains("waiting for"), "{:?}", f.stderr);
    assert!(!f.stderr.contains('\x1b'), "{:?}", f.stderr);
}

#[test]
fn json_lines_carry_their_format_version() {
    let mut r = Running::start(&mut readyfd(
        ["run", "--json", "--"]
            .into_iter()
            .map(String::from)
            .chain(notify_then_read("--addr http=127.0.0.1:9")),
    ));
    let j: Value = r.json();
    assert_eq!(j["format"], 1, "{j}");
    r.close_stdin();
    assert_eq!(r.finish().code, Some(0));
}

#[test]
fn status_then_ready_without_status_reports_the_last_status() {
    // A native child in Python (PROTOCOL.md §10): Hello, Status "warming
    // up", then Ready with no status; it exits once the parent has sent
    // something after its Hello (the Shutdown after --then).
    let script = "import os, struct, sys\n\
                  fd = int(os.environ['READYFD'])\n\
                  def frame(kind, payload):\n\
                  \x20   return struct.pack('<IB', len(payload), kind) + payload\n\
                  def string(s):\n\
                  \x20   b = s.encode()\n\
                  \x20   return struct.pack('<Q', len(b)) + b\n\
                  hello = b'RDFD' + struct.pack('<HIII', 1, os.getpid(), 1, 16 << 20)\n\
                  os.write(fd, frame(1, hello) + frame(6, string('warming up'))\n\
                  \x20        + frame(2, struct.pack('<IQ', os.getpid(), 0) + b'\\x00'))\n\
                  got = b''\n\
                  while len(got) <= 23:\n\
                  \x20   d = os.read(fd, 4096)\n\
                  \x20   if not d:\n\
                  \x20       break\n\
                  \x20   got += d\n\
                  sys.exit(0)\n";
    let f = run(&mut readyfd([
        "run", "--json", "--then", "true", "--", "python3", "-c", script,
    ]));
    assert_eq!(f.code, Some(0), "{f:?}");
    let j: Value = serde_json::from_str(&f.stdout[0]).unwrap();
    assert_eq!(j["status"], "warming up", "{j}");
}
