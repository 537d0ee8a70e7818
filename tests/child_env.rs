//! The child side's reading of `READYFD`: absent, malformed, closed, not a
//! socket, the wrong kind of socket, and the good case.

mod common;

use std::os::fd::AsRawFd;

use common::{helper, place_fds};

fn env_check(value: Option<&str>, fd3: Option<std::os::fd::OwnedFd>) -> String {
    let mut cmd = helper("env-check");
    cmd.env_remove("READYFD");
    if let Some(v) = value {
        cmd.env("READYFD", v);
    }
    if let Some(fd) = &fd3 {
        place_fds(&mut cmd, &[(fd.as_raw_fd(), 3)]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn absent_is_not_an_error() {
    assert_eq!(env_check(None, None), "none");
}

#[test]
fn malformed_values_are_typed_errors() {
    for v in ["", "abc", "-1", " 3", "3x", "99999999999999"] {
        let got = env_check(Some(v), None);
        assert!(
            got.starts_with("error: READYFD=") && got.contains("is not a file descriptor number"),
            "{v:?}: {got}"
        );
    }
}

#[test]
fn a_closed_fd_is_named() {
    let got = env_check(Some("47"), None);
    assert_eq!(
        got,
        "error: READYFD=47 names fd 47, which is not open (was it closed, e.g. by a daemon that closes every fd above 2?)"
    );
}

#[test]
fn stdio_is_refused() {
    let got = env_check(Some("1"), None);
    assert!(got.contains("is stdin, stdout or stderr"), "{got}");
}

#[test]
fn a_pipe_is_not_a_socket() {
    let (r, _w) = nix::unistd::pipe().unwrap();
    let got = env_check(Some("3"), Some(r));
    assert!(got.contains("which is not a socket"), "{got}");
}

#[test]
fn a_datagram_socket_is_not_a_stream() {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (a, _b) = socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let got = env_check(Some("3"), Some(a));
    assert!(got.contains("is not a stream socket"), "{got}");
}

#[test]
fn a_tcp_socket_is_not_af_unix() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let got = env_check(Some("3"), Some(s.into()));
    assert!(got.contains("is not an AF_UNIX socket"), "{got}");
}

#[test]
fn a_good_fd_is_taken_and_the_variable_removed() {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (a, _b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    assert_eq!(env_check(Some("3"), Some(a)), "ok READYFD=None");
}
