//! The API's conventions (issue 13 item 7), for the blocking and the tokio
//! API alike: the builder chains as std's `Command` does and spawns once,
//! `.readyfd()` follows std's setters and imports beside std's
//! `CommandExt`, both channels have `try_recv` and `recv_timeout`, and
//! `signal` takes a plain signal number.

mod common;

use std::io;
// Both traits in scope at once: this file does not compile if their names
// clash (E0252), as `readyfd::CommandExt` did.
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use readyfd::{Address, Incoming, Protocol, ReadyCommand, ReadyCommandExt, SpawnError};

use common::{BOUND, CHILD, TestReq, helper, stopped_cleanly};

#[test]
fn readyfd_follows_std_setters_beside_std_command_ext() {
    let mut cmd = Command::new(CHILD);
    // `.arg()` and std's `CommandExt::arg0` return `&mut Command`.
    let mut child = cmd.arg0("renamed").arg("ready").readyfd().spawn().unwrap();
    // The role ran (an unknown one exits at once): the arguments went along.
    let r = child.wait_ready(BOUND).unwrap();
    assert_eq!(r.ready.get(""), Some(&Address::Text("hello".into())));
    // The borrowed command is left bare, of the same program.
    assert_eq!(cmd.get_program(), CHILD);
    assert_eq!(cmd.get_args().count(), 0);
    assert!(stopped_cleanly(child.stop(BOUND).unwrap().status));
}

#[test]
fn the_builder_chains_in_one_line_and_step_by_step() {
    // One chain on a temporary.
    let mut a = ReadyCommand::new(helper("ready"))
        .protocol(Protocol::Native)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Kept in a variable, set up in steps, from `From<Command>`.
    let mut rc = ReadyCommand::from(helper("ready"));
    rc.protocol(Protocol::Native);
    rc.kill_on_drop(true).command_mut_with(|c| {
        c.env("UNUSED_BY_THE_CHILD", "1");
    });
    let mut b = rc.spawn().unwrap();
    for child in [&mut a, &mut b] {
        child.wait_ready(BOUND).unwrap();
        assert!(stopped_cleanly(child.stop(BOUND).unwrap().status));
    }
}

#[test]
fn a_second_spawn_is_refused_and_starts_nothing() {
    const NAME: &str = "blocking-second-spawn";
    let mut cmd = helper("ready");
    cmd.arg0(NAME);
    let mut rc = ReadyCommand::new(cmd);
    let mut first = rc.spawn().unwrap();
    match rc.spawn() {
        Err(SpawnError::AlreadySpawned { program }) => assert_eq!(program, CHILD),
        other => panic!("{other:?}"),
    }
    assert_eq!(children_named(NAME), [first.id()], "a second process");
    let e = io::Error::from(rc.spawn().unwrap_err());
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    // The first child is untouched.
    first.wait_ready(BOUND).unwrap();
    assert!(stopped_cleanly(first.stop(BOUND).unwrap().status));
}

#[test]
fn try_recv_takes_what_is_there_without_waiting() {
    let mut child = ReadyCommand::new(helper("ready")).spawn().unwrap();
    child.wait_ready(BOUND).unwrap();
    let ch = child.channel().unwrap();
    let t0 = Instant::now();
    assert!(ch.try_recv().unwrap().is_none());
    assert!(t0.elapsed() < Duration::from_secs(5), "try_recv waited");
    // The notifications come before the answer on the stream: once it is
    // here, all three have been read.
    let n: u32 = ch.request(&TestReq::Notify(3)).unwrap();
    assert_eq!(n, 3);
    for i in 0..3u32 {
        match ch.try_recv().unwrap() {
            Some(Incoming::Notify(note)) => assert_eq!(note.decode::<u32>().unwrap(), i),
            other => panic!("{other:?}"),
        }
    }
    assert!(ch.try_recv().unwrap().is_none());
    assert!(stopped_cleanly(child.stop(BOUND).unwrap().status));
    let after = ch.try_recv();
    assert!(after.is_err(), "closed after stop: {after:?}");
}

#[test]
fn signal_takes_a_number_and_refuses_what_is_not_a_signal() {
    let mut child = ReadyCommand::new(helper("ready")).spawn().unwrap();
    child.wait_ready(BOUND).unwrap();
    for bad in [0, -1, 65, i32::MAX] {
        let e = child.signal(bad).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}: {e}");
        assert!(e.to_string().contains("not a signal number"), "{e}");
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "a refused signal was sent"
    );
    child.signal(nix::libc::SIGKILL).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait().unwrap().signal(), Some(nix::libc::SIGKILL));
}

/// The pids of this test process's children whose `argv[0]` is `name`
/// (from `/proc`; the other tests' children run beside them).
fn children_named(name: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir(format!("/proc/{me}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).next() == Some(name.as_bytes()))
        })
        .collect()
}

#[cfg(feature = "tokio")]
mod tokio_api {
    use super::*;
    use readyfd::tokio::{ReadyCommand, ReadyCommandExt};

    #[tokio::test]
    async fn readyfd_follows_tokio_setters() {
        let mut cmd = tokio::process::Command::new(CHILD);
        let mut child = cmd.arg("ready").readyfd().spawn().unwrap();
        let r = child.wait_ready(BOUND).await.unwrap();
        assert_eq!(r.ready.get(""), Some(&Address::Text("hello".into())));
        assert_eq!(cmd.as_std().get_args().count(), 0);
        assert!(stopped_cleanly(child.stop(BOUND).await.unwrap().status));
    }

    #[tokio::test]
    async fn the_builder_chains_and_spawns_once() {
        const NAME: &str = "tokio-second-spawn";
        let mut cmd = helper("ready");
        cmd.arg0(NAME);
        let mut rc = ReadyCommand::from(cmd);
        rc.protocol(Protocol::Native).kill_on_drop(true);
        let mut child = rc.spawn().unwrap();
        match rc.spawn() {
            Err(SpawnError::AlreadySpawned { program }) => assert_eq!(program, CHILD),
            other => panic!("{other:?}"),
        }
        assert_eq!(children_named(NAME), [child.id()], "a second process");
        child.wait_ready(BOUND).await.unwrap();
        assert!(stopped_cleanly(child.stop(BOUND).await.unwrap().status));
    }

    #[tokio::test]
    async fn recv_timeout_gives_up_with_none_and_loses_nothing() {
        let mut child = ReadyCommand::new(helper("ready")).spawn().unwrap();
        child.wait_ready(BOUND).await.unwrap();
        let ch = child.channel().unwrap().clone();
        // Nothing comes: the bound under test is short on purpose.
        let t0 = Instant::now();
        assert!(
            ch.recv_timeout(Duration::from_millis(50))
                .await
                .unwrap()
                .is_none()
        );
        assert!(t0.elapsed() >= Duration::from_millis(50));
        let n: u32 = ch.request(&TestReq::Notify(3)).await.unwrap();
        assert_eq!(n, 3);
        for i in 0..3u32 {
            match ch.recv_timeout(BOUND).await.unwrap() {
                Some(Incoming::Notify(note)) => assert_eq!(note.decode::<u32>().unwrap(), i),
                other => panic!("{other:?}"),
            }
        }
        assert!(stopped_cleanly(child.stop(BOUND).await.unwrap().status));
        assert!(ch.recv_timeout(BOUND).await.is_err(), "closed after stop");
    }

    #[tokio::test]
    async fn signal_takes_a_number_and_refuses_what_is_not_a_signal() {
        let mut child = ReadyCommand::new(helper("ready")).spawn().unwrap();
        child.wait_ready(BOUND).await.unwrap();
        for bad in [0, -1, 65, i32::MAX] {
            let e = child.signal(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}: {e}");
        }
        assert!(child.try_wait().unwrap().is_none());
        child.signal(nix::libc::SIGKILL).unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            child.wait().await.unwrap().signal(),
            Some(nix::libc::SIGKILL)
        );
    }
}
