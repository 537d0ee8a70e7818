//! The tokio side of the shared helpers: the same children, spawned with
//! `readyfd::tokio`.

use std::process::Stdio;

use readyfd::Protocol;
use readyfd::tokio::{ReadyChild, ReadyCommand};
use tokio::process::Command;

use super::{BOUND, helper};

/// `readyfd-test-child ROLE` as a tokio command, not spawned yet.
pub fn helper_async(role: &str) -> Command {
    Command::from(helper(role))
}

/// `readyfd-test-child ROLE`, spawned over the native protocol.
pub fn spawn(role: &str) -> ReadyChild {
    ReadyCommand::new(helper(role))
        .spawn()
        .expect("spawn helper")
}

/// `readyfd-test-child ROLE`, spawned and ready.
pub async fn ready_child(role: &str) -> ReadyChild {
    let mut child = spawn(role);
    child.wait_ready(BOUND).await.expect("ready");
    child
}

/// Spawns `cmd` over `protocol` with stdin piped (children that stay alive
/// block on it; dropping it lets them exit).
pub fn spawn_with_stdin(cmd: impl Into<Command>, protocol: Protocol) -> ReadyChild {
    ReadyCommand::new(cmd)
        .protocol(protocol)
        .command_mut_with(|c| {
            c.stdin(Stdio::piped());
        })
        .spawn()
        .expect("spawn")
}

/// Closes the stdin of a child from [`spawn_with_stdin`] and checks that it
/// exits 0.
pub async fn finish(mut child: ReadyChild) {
    drop(child.stdio_mut().stdin.take());
    let status = child
        .wait_timeout(BOUND)
        .await
        .unwrap()
        .expect("the child exits when stdin closes");
    assert!(status.success(), "{status:?}");
}
