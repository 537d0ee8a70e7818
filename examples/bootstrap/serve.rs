//! The bootstrap protocol of the `bootstrap` example: what a child asks its
//! parent for before it is ready, and the parent's serving loop. Shared
//! with `tests/bootstrap.rs` and the helper child's `bootstrap` role, so the
//! test runs the example's own code path.

use serde::{Deserialize, Serialize};

use readyfd::{Channel, Incoming, RemoteErrorKind};

/// What a child asks its parent for while it starts.
#[derive(Debug, Serialize, Deserialize)]
pub enum Ask {
    /// The configuration: answered with a [`Config`].
    Config,
    /// The secret of this name: answered with its value as a `String`.
    Secret(String),
}

/// The configuration a parent hands its child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Where the child should listen.
    pub listen: String,
    /// How many workers it should run.
    pub workers: u32,
}

/// Answers the child's [`Ask`]s on `ch` until the channel closes: when the
/// child goes away, or when the parent stops or drops its `ReadyChild`
/// (which closes every handle). No polling: the loop sleeps in
/// [`Channel::recv`]. Returns how many requests were answered.
pub fn serve(ch: &Channel, config: &Config, secret: impl Fn(&str) -> Option<String>) -> usize {
    let mut answered = 0;
    while let Ok(message) = ch.recv() {
        let Incoming::Request(req) = message else {
            continue; // notifications and the like: not ours
        };
        let sent = match req.decode::<Ask>() {
            Ok(Ask::Config) => req.respond(config),
            Ok(Ask::Secret(name)) => match secret(&name) {
                Some(value) => req.respond(&value),
                None => req.reject(RemoteErrorKind::Failed, format!("no secret {name:?}")),
            },
            Err(e) => req.reject(RemoteErrorKind::BadRequest, e.to_string()),
        };
        if sent.is_ok() {
            answered += 1;
        }
    }
    answered
}
