//! The application protocols the tests speak with the helper children;
//! shared by the tests and by the children (`tests/helpers/child`, which
//! includes this file).

use serde::{Deserialize, Serialize};

/// The protocol of the blocking helper roles (`serve`).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum TestReq {
    Echo(String),
    Add(u64, u64),
    /// Ask the parent for its `Secret` request in return, and report it.
    AskParent,
    /// Send `n` notifications, then answer.
    Notify(u32),
    Fail,
}

/// The protocol of the `async-child` role.
#[derive(Debug, Serialize, Deserialize)]
pub enum AsyncReq {
    Echo(String),
    /// Ask the parent `"secret please"`; answer with its answer.
    AskParent,
    /// Send the notifications `0..n`, then answer `n`.
    Notify(u32),
    /// Held until `n` of them have arrived; then all are answered, in the
    /// reverse order of their arrival, each with its own `value`.
    Hold {
        n: usize,
        value: u64,
    },
    Fail,
    /// Answer, then block the child's only runtime thread until a line
    /// arrives on its stdin: nothing is read from the parent meanwhile.
    PauseUntilStdin,
}

/// The protocol of the `fd-serve` role: file descriptors both ways.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum FdReq {
    /// Answer with the fds that came with the request, in their order;
    /// the answer is how many there were.
    Echo,
    /// Answer with how many fds the child has open.
    CountFds,
    /// From `n` threads at once, notify `i` with a pipe whose content is
    /// `i` (4 bytes, little-endian); then answer `n`.
    NotifyBack(u32),
}
