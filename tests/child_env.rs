//! The child side's reading of `READYFD`: absent, malformed, closed, not a
//! socket, the wrong kind of socket, not the parent's, taken twice, and the
//! good case.

mod common;

use std::os::fd::AsRawFd;

use common::{helper, place_fds};

fn env_check(value: Option<&str>, fd3: Option<std::os::fd::OwnedFd>) -> String {
    env_check_as("env-check", value, None, fd3)
}

fn env_check_as(
    role: &str,
    value: Option<&str>,
    inode: Option<&str>,
    fd3: Option<std::os::fd::OwnedFd>,
) -> String {
    let mut cmd = helper(role);
    cmd.env_remove("READYFD").env_remove("READYFD_INODE");
    if let Some(v) = value {
        cmd.env("READYFD", v);
    }
    if let Some(v) = inode {
        cmd.env("READYFD_INODE", v);
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
        "error: READYFD=47 names fd 47, which is not open (was it closed, e.g. by a daemon that closes every fd above 2, or by a launcher that does, as Python's subprocess does unless given close_fds=False?)"
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

fn stream_pair() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap()
}

/// `st_dev:st_ino`, as the parent writes it to `READYFD_INODE`.
fn identity(fd: &std::os::fd::OwnedFd) -> String {
    let st = nix::sys::stat::fstat(fd).unwrap();
    format!("{}:{}", st.st_dev, st.st_ino)
}

#[test]
fn a_good_fd_is_taken_once_and_the_environment_left_alone() {
    let (a, _b) = stream_pair();
    assert_eq!(
        env_check(Some("3"), Some(a)),
        "ok READYFD=Some(\"3\") again: error: READYFD=3 names fd 3, which this process has \
         already taken or opened anew (it is close-on-exec): an inherited fd is taken once per \
         process"
    );
}

#[test]
fn the_parents_fd_is_taken_when_its_identity_matches() {
    let (a, _b) = stream_pair();
    let id = identity(&a);
    let got = env_check_as("env-check", Some("3"), Some(&id), Some(a));
    assert!(got.starts_with("ok READYFD=Some(\"3\")"), "{got}");
}

/// A grandchild that inherited `READYFD` and `READYFD_INODE` but not the
/// fd, with an unrelated socket at that number: it must not take it.
#[test]
fn an_unrelated_fd_at_that_number_is_not_taken() {
    let (parents, _b) = stream_pair();
    let (unrelated, _d) = stream_pair();
    let id = identity(&parents);
    let found = identity(&unrelated);
    let got = env_check_as("env-check", Some("3"), Some(&id), Some(unrelated));
    assert_eq!(
        got,
        format!(
            "error: READYFD=3 names fd 3, which is not the fd the parent passed \
             (READYFD_INODE={id}, fd 3 is {found}): the variables were inherited without the \
             fd, so this process was not offered the channel"
        )
    );
}

#[test]
fn a_malformed_identity_is_a_typed_error() {
    for v in ["", "12", "a:b", "1:", ":2", "1:2:3", " 1:2"] {
        let (a, _b) = stream_pair();
        let got = env_check_as("env-check", Some("3"), Some(v), Some(a));
        assert_eq!(
            got,
            format!(
                "error: READYFD_INODE={v:?} is not an fd identity (<st_dev>:<st_ino>, in decimal)"
            ),
            "{v:?}"
        );
    }
}

/// The inherited fd was closed and this process opened another at its
/// number (close-on-exec, as Rust opens every fd): not taken, even without
/// `READYFD_INODE` to tell them apart.
#[test]
fn an_fd_opened_since_at_that_number_is_not_taken() {
    let (a, _b) = stream_pair();
    let got = env_check_as("env-check-reopened", Some("3"), None, Some(a));
    assert!(got.contains("already taken or opened anew"), "{got}");
}

/// The pipe's fd is checked and taken once the same way.
#[test]
fn the_pipe_fd_is_checked_and_taken_once() {
    let run = |inode: Option<&str>, fd: std::os::fd::OwnedFd| {
        let mut cmd = helper("pipe-env-check");
        for var in readyfd::env::READINESS_VARS {
            cmd.env_remove(var);
        }
        cmd.env("CHILD_READY_FD", "3");
        if let Some(v) = inode {
            cmd.env("CHILD_READY_FD_INODE", v);
        }
        place_fds(&mut cmd, &[(fd.as_raw_fd(), 3)]);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let (_r, w) = nix::unistd::pipe().unwrap();
    let id = identity(&w);
    let got = run(Some(&id), w);
    assert!(
        got.starts_with("ok pipe again: error: CHILD_READY_FD=3 names fd 3, which this process has already taken"),
        "{got}"
    );
    let (_r, w) = nix::unistd::pipe().unwrap();
    let (_r2, other) = nix::unistd::pipe().unwrap();
    let got = run(Some(&identity(&other)), w);
    assert!(
        got.starts_with(
            "error: CHILD_READY_FD=3 names fd 3, which is not the fd the parent passed"
        ),
        "{got}"
    );
}

/// With the fd table full, setting up the channel fails: the error says
/// so and keeps the cause (it used to be "could not be used", cause
/// dropped).
#[test]
fn an_exhausted_fd_table_is_named_with_its_cause() {
    let (a, _b) = stream_pair();
    let mut cmd = helper("env-check");
    cmd.env_remove("READYFD_INODE").env("READYFD", "3");
    place_fds(&mut cmd, &[(a.as_raw_fd(), 3)]);
    // SAFETY: setrlimit only: allocation-free and async-signal-safe. Five
    // fds: stdin, stdout, stderr, the channel and one more (the dynamic
    // loader needs it), while the channel's set-up needs two.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let lim = nix::libc::rlimit {
                rlim_cur: 5,
                rlim_max: 5,
            };
            if nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(
        got.starts_with(
            "error: READYFD=3: the channel could not be set up over it: Too many open files"
        ),
        "{got} {out:?}"
    );
}
