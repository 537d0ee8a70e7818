//! `readyfd run --listen` serves a program that takes its socket with the
//! `listenfd` crate (an unmodified socket-activatable Rust server), with
//! `--then-after listening`: CMD connects while the server is starting and
//! never says it is ready at all.
//!
//! This binary has its own `main` (`harness = false`): it re-executes
//! itself as the server and as the client (role variable
//! `READYFD_LISTENFD_ROLE`), as jobserver-rs' client-of-myself does.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const ROLE: &str = "READYFD_LISTENFD_ROLE";

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("server") => server(),
        Ok("client") => client(),
        _ => {
            served_through_readyfd_run();
            println!("listenfd: 1 passed, 0 failed");
        }
    }
}

/// Takes fd 3 with `listenfd` (which checks LISTEN_PID and LISTEN_FDS) and
/// answers each connection's first line with `listenfd <name>: <line>`,
/// until stopped. It never reports readiness.
fn server() {
    let mut fds = listenfd::ListenFd::from_env();
    assert_eq!(fds.len(), 1, "LISTEN_FDS");
    let listener = fds
        .take_tcp_listener(0)
        .expect("fd 3 is a TCP listener")
        .expect("fd 3 was passed");
    let name = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for conn in listener.incoming() {
        let conn = conn.expect("accept");
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).expect("read");
        (&conn)
            .write_all(format!("listenfd {name}: {line}").as_bytes())
            .expect("write");
    }
}

/// Connects to `$READYFD_LISTEN_HTTP`, sends a line and prints the answer.
fn client() {
    let addr = std::env::var("READYFD_LISTEN_HTTP").expect("READYFD_LISTEN_HTTP");
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"hello\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    print!("{answer}");
}

fn served_through_readyfd_run() {
    let me = std::env::current_exe().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_readyfd"))
        .args(["run", "--listen", "http=tcp:127.0.0.1:0", "--json"])
        .args(["--then-after", "listening", "--grace", "10s", "--then"])
        .arg(format!("{ROLE}=client '{}'", me.display()))
        .arg("--")
        .arg(&me)
        .env(ROLE, "server")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("{\"format\":1,\"pid\":")
            && lines[0].contains("\"listening\":{\"http\":\"127.0.0.1:"),
        "{stdout}"
    );
    assert_eq!(lines[1], "listenfd http: hello", "{stdout}\n{stderr}");
}
