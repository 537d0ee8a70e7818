//! The async API, for tokio (cargo feature `tokio`).
//!
//! The same capabilities as the blocking API, without a thread per child or
//! per channel: [`ReadyCommand`] spawns through [`tokio::process::Command`],
//! [`ReadyChild::wait_ready`] is a future with the semantics (and the
//! [`Readiness`](crate::Readiness) and [`ReadyError`](crate::ReadyError)
//! types) of [`crate::ReadyChild::wait_ready`], and [`Channel`] is the
//! native channel, for both ends, with the blocking channel's semantics and
//! error types ([`ChannelError`](crate::ChannelError),
//! [`CloseReason`](crate::CloseReason)). The protocol rules are those of
//! [`readyfd_proto::Session`], which both drive.
//!
//! All three protocols are offered ([`ReadyCommand::protocol`]): the pipe
//! and systemd waits drive the same non-blocking steps as the blocking
//! waits, woken by the runtime's reactor instead of `poll(2)`.
//!
//! Each native channel runs one small I/O task on the runtime it was
//! created in; the runtime needs I/O and time enabled
//! (`Builder::enable_all`, or `#[tokio::main]`).
//!
//! # Parent: spawn, wait, talk
//! ```no_run
//! use std::time::Duration;
//! use readyfd::tokio::ReadyCommand;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut child = ReadyCommand::new(tokio::process::Command::new("my-server")).spawn()?;
//! let readiness = child.wait_ready(Duration::from_secs(30)).await?;
//! println!("ready after {:?} at {:?}", readiness.elapsed, readiness.ready.addresses);
//!
//! // Requests from many tasks over the one channel, each answered in turn.
//! let mut tasks = Vec::new();
//! for i in 0..8u32 {
//!     let ch = child.channel().unwrap().clone();
//!     tasks.push(tokio::spawn(async move { ch.request::<_, u32>(&i).await }));
//! }
//! for t in tasks {
//!     println!("{:?}", t.await?);
//! }
//! child.stop(Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Child: say ready, serve requests
//! ```no_run
//! use readyfd::Ready;
//! use readyfd::tokio::{Incoming, Parent};
//!
//! #[tokio::main] // multi-thread: `from_env` leaves the environment alone
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let Some(parent) = Parent::from_env()? else {
//!         return Ok(()); // not started by readyfd
//!     };
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     parent
//!         .ready(&Ready::new(std::process::id()).address("http", listener.local_addr()?))
//!         .await?;
//!     // Serve the parent's requests until it goes away.
//!     while let Ok(incoming) = parent.recv().await {
//!         if let Incoming::Request(req) = incoming {
//!             let n: u32 = req.decode()?;
//!             req.respond(&(n * 2))?;
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Cancellation
//! Dropping a future of this module at any `.await` never corrupts the
//! channel. All state that spans calls (the session and its frame decoder,
//! the read buffer, the bytes queued for writing and how far they were
//! written, the map of requests waiting for answers) lives in the channel;
//! a request future holds only the receiving end of its answer. A frame is
//! queued whole, in the same poll that decides to send it, so frames never
//! interleave. Each method documents what dropping it means under
//! `# Cancel safety`:
//!
//! - [`Channel::recv`] and [`Channel::recv_timeout`] are cancel safe:
//!   nothing is taken from the queue unless it is returned.
//! - [`Channel::notify`], [`Channel::ready`], [`Channel::status`] are cancel
//!   safe: dropped before they complete, they sent nothing.
//! - [`Channel::request`], [`Channel::request_timeout`], [`Channel::ping`]
//!   and [`Channel::shutdown`] are cancel safe for the channel: dropped
//!   before the request was queued it was not sent; dropped after, it stays
//!   sent and its late answer is discarded, never delivered to another
//!   request.
//! - [`ReadyChild::wait_ready`], [`ReadyChild::wait`] and
//!   [`ReadyChild::wait_timeout`] are cancel safe: a new call resumes.

mod channel;
mod child;
mod spawn;

// The peer's messages are the same types as in the blocking API.
pub use crate::incoming::{Incoming, IncomingRequest, Notification, ShutdownRequest};
pub use channel::Channel;
pub use child::Parent;
pub use spawn::{ChildStdio, ReadyChild, ReadyCommand, ReadyCommandExt, spawn};
