//! Types shared by `echo_server` and `parent`: the application's own
//! requests, carried over the readyfd channel beside the built-in ones.

use serde::{Deserialize, Serialize};

/// Requests the parent sends to the echo server.
#[derive(Debug, Serialize, Deserialize)]
pub enum EchoRequest {
    /// How much has the server done so far?
    Stats,
}

/// The answer to [`EchoRequest::Stats`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Bytes echoed back.
    pub bytes: u64,
    /// Milliseconds since the server started.
    pub uptime_ms: u64,
}
