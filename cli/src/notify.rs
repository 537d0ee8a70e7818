//! `readyfd notify`: the child side for shell scripts.
//!
//! A script started by `readyfd run` holds the channel's fd itself (it
//! inherited it), and `readyfd notify`, which the script runs, inherits it
//! in turn. The parent therefore sees nothing before notify speaks: native
//! and pipe parents wait for a message (or for every holder to close the
//! fd, which needs the script to close it too), and a datagram comes only
//! from notify. Once notify has said Ready and exited, the script's copy
//! keeps the channel open; that is harmless, the parent has its answer.
//!
//! Under systemd, a datagram from a process that has exited by the time
//! the manager reads it may be ignored (the sender can no longer be
//! identified: systemd issue #2737, and readyfd's receiver alike). notify
//! therefore follows `READY=1` with `BARRIER=1` and waits, as
//! `systemd-notify` does, until the manager has processed both.

use std::io;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, sendmsg, socket,
};
use readyfd::proto::{PROTOCOL_VERSION, SessionError};
use readyfd::{
    Address, Channel, CloseReason, GoodbyeReason, Notified, NotifyError, Ready, notify_ready,
};

use crate::args::NotifyArgs;
use crate::exit::{self, Failure};

/// How long notify waits for a systemd-style parent to confirm `BARRIER=1`
/// (`systemd-notify`'s default too).
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// The main pid notify reports by default: the script that ran it, its
/// parent; or notify itself when it leads its own process group, as the
/// program a supervisor started (`readyfd run` and systemd start each
/// program in a group of its own), whether exec'd directly or by a shell's
/// `exec`. A shell script's commands share the script's group, so there
/// the parent is the script. Without this, `exec readyfd notify` as
/// PROGRAM reported its parent, the supervisor itself.
fn default_main_pid() -> u32 {
    let me = nix::unistd::getpid();
    if nix::unistd::getpgrp() == me {
        me.as_raw() as u32
    } else {
        nix::unistd::getppid().as_raw() as u32
    }
}

/// Runs `readyfd notify`; returns the exit code.
///
/// # Errors
/// [`exit::NOT_OFFERED`] when the environment offers no protocol,
/// [`exit::NOTIFY_FAILED`] when the offered one fails, [`exit::USAGE`] for
/// a bad `--addr`.
pub(crate) fn notify(args: NotifyArgs) -> Result<u8, Failure> {
    let pid = args.pid.unwrap_or_else(default_main_pid);
    let mut ready = Ready::new(pid);
    for a in &args.addrs {
        let (name, address) = split_addr(a);
        if address.is_empty() {
            return Err(Failure::new(
                exit::USAGE,
                format!("--addr {a:?}: no address (write [NAME=]ADDR, e.g. http=127.0.0.1:8080)"),
            ));
        }
        let address = parse_address(address);
        ready = ready.address(name, address);
    }
    if let Some(s) = args.status {
        ready = ready.status(s);
    }
    match notify_ready(&ready) {
        Ok(Notified::Systemd) => match barrier(BARRIER_TIMEOUT) {
            Ok(true) => Ok(0),
            Ok(false) => Err(Failure::new(
                exit::NOTIFY_FAILED,
                format!(
                    "notify: READY=1 was sent to NOTIFY_SOCKET, but the parent did not confirm it \
                     (BARRIER=1) within {}s; it may have been dropped. Is the parent still there?",
                    BARRIER_TIMEOUT.as_secs()
                ),
            )),
            Err(e) => Err(Failure::new(
                exit::NOTIFY_FAILED,
                format!("notify: READY=1 was sent, but BARRIER=1 failed: {e}"),
            )),
        },
        Ok(Notified::Native(parent)) => check_peer_version(parent.channel()),
        Ok(_) => Ok(0),
        Err(NotifyError::NotOffered) => Err(Failure::new(
            exit::NOT_OFFERED,
            "notify: no readiness protocol in the environment (none of READYFD, CHILD_READY_FD and \
             NOTIFY_SOCKET is set). Run this script under `readyfd run -- SCRIPT`, a CHILD_READY_FD \
             parent, or systemd with Type=notify; a script that may run on its own can ignore \
             exit status 78.",
        )),
        Err(e @ NotifyError::Channel(_)) => Err(Failure::new(
            exit::NOTIFY_FAILED,
            format!(
                "notify: {}. The parent has gone, or readiness was reported already: call \
                 readyfd notify once.",
                exit::chain(&e)
            ),
        )),
        Err(e) => Err(Failure::new(
            exit::NOTIFY_FAILED,
            format!("notify: {}", exit::chain(&e)),
        )),
    }
}

/// `sd_notify_barrier(3)`: sends `BARRIER=1` with the write end of a new
/// pipe to `NOTIFY_SOCKET` and waits until the manager closes it, which it
/// does once every earlier datagram is processed (or when it closes the
/// socket). `Ok(false)` when that took longer than `timeout`.
fn barrier(timeout: Duration) -> io::Result<bool> {
    let Some(value) = std::env::var_os(readyfd::env::NOTIFY_SOCKET) else {
        return Ok(true);
    };
    let addr = match value.as_bytes() {
        [b'@', name @ ..] => UnixAddr::new_abstract(name)?,
        path => UnixAddr::new(path)?,
    };
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let (wait_end, sent_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let iov = [IoSlice::new(b"BARRIER=1")];
    let fds = [sent_end.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    loop {
        match sendmsg(
            sock.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            Some(&addr),
        ) {
            Ok(_) => break,
            Err(Errno::EINTR) => {}
            // The socket took READY=1 and is gone now: its owner has stopped
            // listening (readyfd's receiver closes it once it has decided),
            // so there is nothing left to wait for.
            Err(Errno::ENOENT | Errno::ECONNREFUSED) => return Ok(true),
            Err(e) => return Err(e.into()),
        }
    }
    // Only the manager's copy may keep the pipe open now.
    drop(sent_end);
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut pfd = [PollFd::new(wait_end.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut pfd,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long notify waits for the native parent's answer to a `Ping`, which
/// proves that the parent read our `Hello` and `Ready` in its own version.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// After `Ready` on the native channel: pings the parent, so that its
/// `Hello` has surely arrived (it comes first on the stream), and fails
/// when the parent speaks another protocol version, which means it did not
/// take our `Ready`. A parent that has closed the channel since, or does
/// not answer in time, had it delivered all the same.
fn check_peer_version(ch: &Channel) -> Result<u8, Failure> {
    let _ = ch.ping(PEER_TIMEOUT);
    let theirs = match (ch.peer(), ch.closed()) {
        (Some(h), _) if h.version != PROTOCOL_VERSION => Some(h.version),
        (_, Some(CloseReason::Protocol(SessionError::VersionMismatch { theirs, .. }))) => {
            Some(theirs)
        }
        (_, Some(CloseReason::Goodbye(g))) if g.reason == GoodbyeReason::VersionMismatch => Some(0),
        _ => None,
    };
    match theirs {
        None => Ok(0),
        Some(v) => Err(Failure::new(
            exit::NOTIFY_FAILED,
            format!(
                "notify: the parent speaks {} of the readyfd protocol and this readyfd notify speaks \
                 version {PROTOCOL_VERSION}, so it did not take the readiness: use a readyfd \
                 notify from the same release as the parent",
                if v == 0 {
                    "another version".to_string()
                } else {
                    format!("version {v}")
                }
            ),
        )),
    }
}

/// An `--addr` value as an [`Address`]: `tcp:`, `udp:` and `unix:` prefixes,
/// a bare socket address (TCP), an absolute path or `@name` (Unix), other
/// text as it is. A D-Bus address (`unix:path=/x,guid=1`,
/// `unix:abstract=...`) is text too, kept whole, as PROTOCOL.md §11 has
/// it for the pipe: `unix:` followed by `key=value` pairs is not a path.
fn parse_address(s: &str) -> Address {
    if let Some(rest) = s.strip_prefix("unix:") {
        if !rest.starts_with('/') && !rest.starts_with('@') && rest.contains('=') {
            return Address::Text(s.to_string());
        }
    }
    match s.parse() {
        Ok(a) => a,
        Err(never) => match never {},
    }
}

/// `http=127.0.0.1:80` -> (`http`, `127.0.0.1:80`); `127.0.0.1:80` and
/// `unix:path=/run/bus,guid=1` (no NAME before the first `=`) -> (``, all).
/// NAME is ASCII letters, digits, `_`, `-` and `.`.
fn split_addr(s: &str) -> (&str, &str) {
    match s.split_once('=') {
        Some((name, addr))
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) =>
        {
            (name, addr)
        }
        _ => ("", s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        assert_eq!(split_addr("http=127.0.0.1:80"), ("http", "127.0.0.1:80"));
        assert_eq!(split_addr("127.0.0.1:80"), ("", "127.0.0.1:80"));
        assert_eq!(
            split_addr("unix:path=/run/bus,guid=1"),
            ("", "unix:path=/run/bus,guid=1")
        );
        assert_eq!(split_addr("db.primary=/run/pg"), ("db.primary", "/run/pg"));
        assert_eq!(split_addr("=x"), ("", "=x"));
        assert_eq!(split_addr("a="), ("a", ""));
    }

    #[test]
    fn dbus_addresses_stay_whole() {
        let (name, addr) = split_addr("bus=unix:path=/x,guid=1");
        assert_eq!(name, "bus");
        assert_eq!(
            parse_address(addr),
            Address::Text("unix:path=/x,guid=1".into())
        );
        assert_eq!(
            parse_address("unix:/run/a=b.sock"),
            Address::Unix("/run/a=b.sock".into())
        );
    }
}
