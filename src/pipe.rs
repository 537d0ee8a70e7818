//! The pipe protocol (parent side): placeholder, completed in issue 4.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Instant;

use crate::spawn::WaitOutcome;

/// The environment variable that announces the pipe's fd.
pub const CHILD_READY_FD_ENV: &str = "CHILD_READY_FD";

#[derive(Debug)]
pub(crate) struct PipeWaiter {
    read: OwnedFd,
}

impl PipeWaiter {
    pub(crate) fn new() -> io::Result<(PipeWaiter, OwnedFd)> {
        let (read, write) = crate::sys::pipe()?;
        Ok((PipeWaiter { read }, write))
    }

    pub(crate) fn wait(
        &mut self,
        _pidfd: BorrowedFd<'_>,
        _deadline: Instant,
        _ignore_exit: bool,
    ) -> WaitOutcome {
        let _ = &self.read;
        WaitOutcome::Io(io::Error::other("pipe protocol not implemented yet"))
    }
}
