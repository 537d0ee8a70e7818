//! Which process a native `Ready { pid, .. }` makes the main process
//! (PROTOCOL.md §6.4): only the process that wrote the `Ready`, a
//! descendant of the spawned child, or (with `process_group`) a member of
//! its group. Any other pid is refused: not signalled, not watched, not
//! waited for, and `Readiness::main_pid` stays the spawned pid. Both
//! drivers, real processes (roles in `tests/helpers/child/native.rs`).

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

use readyfd::{Readiness, ReadyCommand};

use common::{BOUND, CHILD, ended, kill_group, pidfd};

/// How long `stop` may take here: a bound against a hang (the grace is
/// one second, and the child acknowledges `Shutdown` at once).
const STOP_BOUND: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(1);

/// A process of ours that nobody else should touch: `sleep` in a process
/// group of its own (never the test process, never pid 1).
struct Bystander(Child);

impl Bystander {
    fn start() -> Bystander {
        Bystander(
            Command::new("sleep")
                .arg("1000")
                .process_group(0)
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn assert_alive(&mut self) {
        assert!(
            self.0.try_wait().unwrap().is_none(),
            "the bystander {} was ended by readyfd",
            self.pid()
        );
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        // Only while it is ours to signal: a reaped pid may be reused.
        if matches!(self.0.try_wait(), Ok(None)) {
            kill_group(self.pid());
            let _ = self.0.wait();
        }
    }
}

fn ready_as(pid: u32) -> Command {
    let mut cmd = Command::new(CHILD);
    cmd.args(["ready-as", &pid.to_string()]);
    cmd
}

/// What the refusal looks like: the claim is kept as said, the main pid is
/// the spawned one.
fn assert_refused(r: &Readiness, named: u32) {
    assert_eq!(r.ready.pid, named, "the claim is reported as said");
    assert_eq!(r.main_pid, r.spawned_pid, "{named} was adopted");
    assert_eq!(r.pid_mismatch(), None);
}

/// Runs `f` on a thread; fails the test if it takes longer than `bound`.
fn within<T: Send + 'static>(bound: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(bound).expect("it hung")
}

#[test]
fn a_ready_naming_a_bystander_does_not_make_stop_signal_it() {
    let mut bystander = Bystander::start();
    let named = bystander.pid();
    let mut child = ReadyCommand::new(ready_as(named)).spawn().unwrap();
    let pid = child.id();
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_refused(&r, named);
    let (stopped, mut child) = within(STOP_BOUND, move || {
        let s = child.stop(GRACE);
        (s, child)
    });
    stopped.unwrap();
    assert!(child.try_wait().unwrap().is_some(), "the child {pid} runs");
    bystander.assert_alive();
}

#[test]
fn a_ready_naming_our_own_pid_is_refused() {
    let named = std::process::id();
    let mut child = ReadyCommand::new(ready_as(named)).spawn().unwrap();
    let r = child.wait_ready(BOUND).unwrap().clone();
    assert_refused(&r, named);
    let (stopped, mut child) = within(STOP_BOUND, move || {
        let s = child.stop(GRACE);
        (s, child)
    });
    stopped.unwrap();
    assert!(child.try_wait().unwrap().is_some());
}

/// The direct channel watches what the channel watched: the spawned child,
/// never a refused pid, so the bystander's end ends nothing.
#[test]
fn the_direct_channel_does_not_watch_a_refused_pid() {
    let mut bystander = Bystander::start();
    let named = bystander.pid();
    let mut child = ReadyCommand::new(ready_as(named)).spawn().unwrap();
    assert_refused(child.wait_ready(BOUND).unwrap(), named);
    let mut direct = child.take_direct().unwrap();
    kill_group(named);
    bystander.0.wait().unwrap();
    let back: String = direct
        .request_timeout(&common::TestReq::Echo("still here".into()), BOUND)
        .unwrap();
    assert_eq!(back, "still here");
    drop(direct);
    let (stopped, mut child) = within(STOP_BOUND, move || {
        let s = child.stop(GRACE);
        (s, child)
    });
    stopped.unwrap();
    assert!(child.try_wait().unwrap().is_some());
}

/// (a): the process that wrote `Ready` names itself, after its wrapper
/// exited (reparented away, no process group: neither (b) nor (c) holds):
/// adopted, and stopped.
#[test]
fn the_writer_of_ready_is_adopted_after_a_wrapper() {
    let mut cmd = Command::new(CHILD);
    cmd.arg("writer-wrapper");
    let mut child = ReadyCommand::new(cmd).spawn().unwrap();
    let r = child.wait_ready(BOUND).unwrap().clone();
    let server = r.ready.pid;
    assert_ne!(server, child.id());
    assert_eq!(r.main_pid, server);
    assert_eq!(r.pid_mismatch(), Some(server));
    let watch = pidfd(server);
    child.stop(Duration::from_secs(5)).unwrap();
    assert!(ended(&watch), "the server {server} still runs after stop");
}

/// (c): a member of the child's process group, named by another process
/// after the wrapper exited: adopted with `process_group(true)`, refused
/// without.
#[test]
fn a_member_of_the_childs_group_is_adopted_only_with_process_group() {
    for group in [true, false] {
        let mut cmd = Command::new(CHILD);
        cmd.arg("group-wrapper");
        let mut child = ReadyCommand::new(cmd).process_group(group).spawn().unwrap();
        let r = child.wait_ready(BOUND).unwrap().clone();
        let server = r.ready.pid;
        assert_ne!(server, child.id());
        let watch = pidfd(server);
        if group {
            assert_eq!(r.main_pid, server, "group member refused");
            assert_eq!(r.pid_mismatch(), Some(server));
        } else {
            assert_refused(&r, server);
        }
        let stopped = within(STOP_BOUND, move || child.stop(GRACE));
        stopped.unwrap();
        if group {
            assert!(ended(&watch), "the server {server} still runs after stop");
        } else {
            // Refused: left alone (the writer ends with the channel).
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&watch),
                nix::poll::PollFlags::POLLIN,
            )];
            let fired = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap();
            assert_eq!(fired, 0, "the refused {server} was ended by readyfd");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(server as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            assert!(ended(&watch));
        }
    }
}

#[cfg(feature = "tokio")]
mod tokio_driver {
    use super::*;
    use common::current_thread;

    async fn stop_within(child: &mut readyfd::tokio::ReadyChild) {
        tokio::time::timeout(STOP_BOUND, child.stop(GRACE))
            .await
            .expect("stop hung")
            .unwrap();
    }

    #[test]
    fn async_a_ready_naming_a_bystander_does_not_make_stop_signal_it() {
        let mut bystander = Bystander::start();
        let named = bystander.pid();
        current_thread().block_on(async {
            let mut child = readyfd::tokio::ReadyCommand::new(ready_as(named))
                .spawn()
                .unwrap();
            let r = child.wait_ready(BOUND).await.unwrap().clone();
            assert_refused(&r, named);
            stop_within(&mut child).await;
            assert!(child.try_wait().unwrap().is_some(), "the child runs");
        });
        bystander.assert_alive();
    }

    #[test]
    fn async_the_writer_of_ready_is_adopted_after_a_wrapper() {
        current_thread().block_on(async {
            let mut cmd = Command::new(CHILD);
            cmd.arg("writer-wrapper");
            let mut child = readyfd::tokio::ReadyCommand::new(cmd).spawn().unwrap();
            let r = child.wait_ready(BOUND).await.unwrap().clone();
            let server = r.ready.pid;
            assert_eq!(r.main_pid, server);
            let watch = pidfd(server);
            stop_within(&mut child).await;
            assert!(ended(&watch), "the server {server} still runs after stop");
        });
    }

    #[test]
    fn async_a_member_of_the_childs_group_is_adopted_with_process_group() {
        current_thread().block_on(async {
            let mut cmd = Command::new(CHILD);
            cmd.arg("group-wrapper");
            let mut child = readyfd::tokio::ReadyCommand::new(cmd)
                .process_group(true)
                .spawn()
                .unwrap();
            let r = child.wait_ready(BOUND).await.unwrap().clone();
            let server = r.ready.pid;
            assert_eq!(r.main_pid, server, "group member refused");
            let watch = pidfd(server);
            stop_within(&mut child).await;
            assert!(ended(&watch), "the server {server} still runs after stop");
        });
    }
}
