//! Nothing outlives a parent that panics or is killed (issue 13 item 2):
//! `kill_on_drop` with `process_group` kills the server and what it
//! started in the background while the parent unwinds, and
//! `parent_death_signal` reaches a child whose parent was killed with
//! `SIGKILL`. The parents are helper children of their own
//! (`tests/helpers/child/drop_roles.rs`), so that this process does not
//! panic or die.

mod common;

use std::io::Write;
use std::process::{Child, Stdio};

use common::{CHILD, ended, exit_code, first_line, helper, kill_group, pidfd};

/// Starts `ROLE DRIVER CHILD` with piped stdio; its first line: the
/// server's pid and its background helper's (or `None`).
fn start(role: &str, driver: &str) -> (Child, u32, Option<u32>) {
    let mut cmd = helper(role);
    cmd.args([driver, CHILD])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut parent = cmd.spawn().unwrap();
    let line = first_line(parent.stdout.as_mut().unwrap());
    let mut words = line.split(' ');
    let server = words.next().unwrap().parse().expect(&line);
    let bg = words.next().and_then(|w| w.parse().ok());
    (parent, server, bg)
}

fn drivers() -> Vec<&'static str> {
    let mut d = vec!["blocking"];
    if cfg!(feature = "tokio") {
        d.push("tokio");
    }
    d
}

#[test]
fn kill_on_drop_with_process_group_leaves_nothing_after_a_panic() {
    for driver in drivers() {
        let (mut parent, server, bg) = start("drop-parent", driver);
        let bg = bg.expect("the server started a helper");
        let (server_fd, bg_fd) = (pidfd(server), pidfd(bg));
        // Now the parent panics, its ReadyChild still in scope.
        parent.stdin.take().unwrap().write_all(b"\n").unwrap();
        let status = parent.wait().unwrap();
        assert_eq!(exit_code(status), 101, "{driver}: the parent panicked");
        let (server_gone, bg_gone) = (ended(&server_fd), ended(&bg_fd));
        // Whatever is left would hold our stdout: clean up before failing.
        kill_group(server);
        assert!(server_gone, "{driver}: the server outlived the panic");
        assert!(
            bg_gone,
            "{driver}: the server's background helper outlived the panic"
        );
    }
}

#[test]
fn parent_death_signal_reaches_the_child_of_a_killed_parent() {
    for driver in drivers() {
        let (mut parent, server, _) = start("pdeath-parent", driver);
        let server_fd = pidfd(server);
        parent.kill().unwrap();
        parent.wait().unwrap();
        let gone = ended(&server_fd);
        if !gone {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(server as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(gone, "{driver}: the server outlived its killed parent");
    }
}

#[test]
fn stop_with_process_group_ends_what_the_child_started() {
    let mut cmd = helper("drop-server");
    cmd.arg("bg");
    let mut child = readyfd::ReadyCommand::new(cmd)
        .process_group(true)
        .spawn()
        .unwrap();
    let r = child.wait_ready(common::BOUND).unwrap();
    let bg: u32 = r.ready.status.as_deref().unwrap().parse().unwrap();
    let bg_fd = pidfd(bg);
    let stopped = child.stop(std::time::Duration::from_secs(5)).unwrap();
    let bg_gone = ended(&bg_fd);
    kill_group(child.id());
    assert!(bg_gone, "the background helper outlived stop: {stopped:?}");
}
