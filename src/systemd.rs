//! The systemd protocol (parent side): placeholder, completed in issue 4.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Instant;

use crate::spawn::WaitOutcome;

/// The environment variable that names the notification socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

#[derive(Debug)]
pub(crate) struct NotifyReceiver {}

impl NotifyReceiver {
    pub(crate) fn new() -> io::Result<NotifyReceiver> {
        Err(io::Error::other("systemd protocol not implemented yet"))
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        std::path::Path::new("")
    }

    pub(crate) fn last_status(&self) -> Option<String> {
        None
    }

    pub(crate) fn wait(
        &mut self,
        _pidfd: BorrowedFd<'_>,
        _pid: u32,
        _deadline: Instant,
        _ignore_exit: bool,
    ) -> WaitOutcome {
        WaitOutcome::Io(io::Error::other("systemd protocol not implemented yet"))
    }
}
