//! readyfd: know when the child you spawned is ready, and talk to it
//! afterwards.
//!
//! Tests, CI scripts and supervisors start servers and then guess when they
//! are ready, with a `sleep` or by polling a port. readyfd replaces the
//! guess with a notification over an inherited file descriptor: the parent
//! spawns the child with one end of a Unix socket pair (announced as
//! `READYFD=<fd>`); the child says `Ready` (with the addresses it bound)
//! when it is; and the same channel then carries typed requests, responses
//! and notifications both ways.
//!
//! # Parent: spawn and wait
//! ```no_run
//! use std::process::Command;
//! use std::time::Duration;
//! use readyfd::ReadyCommand;
//!
//! let mut child = ReadyCommand::new(Command::new("my-server")).spawn()?;
//! let readiness = child.wait_ready(Duration::from_secs(30))?;
//! println!("ready after {:?} at {:?}", readiness.elapsed, readiness.ready.addresses);
//! child.stop(Duration::from_secs(5))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Child: say ready
//! ```no_run
//! use std::net::TcpListener;
//! use readyfd::{Parent, Ready};
//!
//! let parent = Parent::from_env()?;
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! if let Some(parent) = &parent {
//!     parent.ready(&Ready::new(std::process::id()).address("http", listener.local_addr()?))?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Requests both ways
//! Any serde type is a request, a response or a notification body:
//! [`Channel::request`] sends and waits, [`Channel::recv`] yields the
//! peer's requests, each answered with [`IncomingRequest::respond`].
//! `Ping` and `Shutdown` are built in.
//!
//! A [`Channel`] is served by a background I/O thread. For the fastest
//! small round trips, either side may take its channel as a
//! [`DirectChannel`] ([`ReadyChild::take_direct`], [`Parent::into_direct`]),
//! whose calls do their I/O on the calling thread: a request is one
//! `sendmsg` and one `recvmsg`, at the price that nothing is read between
//! calls.
//!
//! # The other protocols
//! [`Protocol::Pipe`] speaks the `CHILD_READY_FD` pipe scheme of
//! "Readiness notifications in Go" (a newline, or a close while alive, is
//! ready; the text before it is the address), [`Protocol::Systemd`] is a
//! `NOTIFY_SOCKET` receiver for daemons that call `sd_notify` (`READY=1`).
//! Both report through the same [`Readiness`] and [`ReadyError`]; the
//! modules [`pipe`] and [`systemd`] say exactly what counts as ready, as
//! failed, and (for systemd) which senders are believed.
//!
//! On the child side, [`notify_ready`] speaks whichever protocol the
//! parent offered, so one server binary runs unchanged under readyfd, under
//! a parent written as the article shows, and under systemd `Type=notify`:
//! ```no_run
//! use readyfd::{NotifyError, Ready};
//!
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let ready = Ready::new(std::process::id()).address("http", listener.local_addr()?);
//! match readyfd::notify_ready(&ready) {
//!     Ok(_) | Err(NotifyError::NotOffered) => {}
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Socket activation
//! [`ReadyCommand::listen`] passes listening sockets the parent bound to
//! the child as systemd does (fds 3.., `LISTEN_FDS`, `LISTEN_FDNAMES`,
//! `LISTEN_PID` = the child's pid), so that clients can connect before the
//! child is ready (their connections wait in the backlog) and unmodified
//! socket-activatable programs take them; the readiness channel sits above
//! them. The child takes them by name with [`Listeners`]:
//! ```no_run
//! let mut listeners = readyfd::Listeners::from_env()?;
//! let http = listeners.take_tcp("http")?;
//! # let _ = http;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Async (tokio)
// The link resolves only with the feature: without it, the docs name the
// module in plain text (they are built both ways in CI).
#![cfg_attr(
    feature = "tokio",
    doc = "With the cargo feature `tokio`, the [`tokio` module](crate::tokio)"
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "With the cargo feature `tokio` (not enabled in this build), the `tokio` module"
)]
//! offers the same spawning, waiting and channel as futures, with one small
//! I/O task per channel instead of a thread, and cancel-safe requests from
//! any number of tasks over one channel.
//!
//! # Platform
//! Linux only, 5.3 or later: readyfd watches children through pidfds, waits
//! with epoll, hands descriptors over with `SCM_RIGHTS` and checks senders
//! with `SO_PEERCRED`, and makes itself a child subreaper in the command.
//! On any other system the crate does not build, and says so in one
//! `compile_error!` instead of a page of unresolved names. The wire protocol,
//! [`readyfd-proto`](proto), is plain Rust and builds anywhere.
//!
//! The minimum Rust version is 1.85 (edition 2024 and bincode 2), declared
//! in `Cargo.toml` as `rust-version` but not tested: CI builds and tests
//! with the current stable toolchain, and checks only that clippy's
//! `incompatible_msrv` lint finds no newer std API and that no dependency
//! in `Cargo.lock` declares a newer `rust-version`.
//!
//! # Dependencies, and the bincode advisory
//! serde, bytes, thiserror and nix; tokio with the `tokio` feature. Frames
//! are encoded with bincode 2.0.1 (pinned, in `readyfd-proto` only), which
//! is unmaintained: advisory
//! [RUSTSEC-2025-0141](https://rustsec.org/advisories/RUSTSEC-2025-0141).
//! The advisory reports the end of maintenance, not a vulnerability. readyfd
//! keeps bincode because a frozen encoder suits a wire format that is
//! specified on its own (`PROTOCOL.md`, with test vectors), decodes every
//! frame under a byte budget, fuzzes the decoders, and confines bincode to
//! one file, so it can be replaced by an encoder that writes the same bytes
//! without a change to the protocol. `deny.toml` acknowledges the advisory
//! with this reason, so `cargo deny check` passes while it stands.
//!
//! The `readyfd` command is a separate crate: `cargo install readyfd-cli`.
//! This crate has no binary to install (`cargo install readyfd` says so).
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![warn(unreachable_pub)]
// docs.rs builds with `--cfg docsrs` (Cargo.toml) on nightly: items behind
// a feature show a badge naming it.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "readyfd supports Linux only (5.3 or later: it needs pidfds, epoll and SO_PEERCRED); \
     this target is not Linux. The protocol crate, readyfd-proto, builds anywhere."
);

mod ancestry;
mod channel;
mod child;
mod core;
mod direct;
mod error;
mod incoming;
mod listen;
mod notify;
pub mod pipe;
mod protocol;
mod spawn;
mod sys;
pub mod systemd;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;
mod verdict;

/// The type of received byte bodies ([`IncomingRequest::body`],
/// [`Notification::body`], [`Channel::request_bytes`]), re-exported so that
/// you need not name a `bytes` version of your own.
#[doc(no_inline)]
pub use bytes::Bytes;
pub use channel::Channel;
pub use child::Parent;
pub use core::{ChannelOptions, ShutdownPolicy};
pub use direct::DirectChannel;
pub use error::{
    ChannelError, CloseReason, DirectError, EnvError, IntoDirectError, ListenError, ProtocolError,
    ReadyError, SpawnError, describe_exit,
};
pub use incoming::{Incoming, IncomingRequest, Notification, ShutdownRequest};
pub use listen::Listeners;
pub use notify::{Notified, Notifier, NotifyError, notify_ready};
pub use protocol::{Protocol, offered_protocol};

/// What a child finds in its environment, in one place: the variables
/// through which a parent offers a readiness protocol and passes listening
/// sockets, and the fd numbers they name unless told otherwise.
pub mod env {
    pub use crate::listen::{
        LISTEN_FDNAMES_ENV as LISTEN_FDNAMES, LISTEN_FDS_ENV as LISTEN_FDS, LISTEN_FDS_START,
        LISTEN_PID_ENV as LISTEN_PID,
    };
    pub use crate::protocol::{
        CHILD_READY_FD_ENV as CHILD_READY_FD, CHILD_READY_FD_INODE_ENV as CHILD_READY_FD_INODE,
        DEFAULT_FD, NOTIFY_SOCKET_ENV as NOTIFY_SOCKET, READINESS_ENV_VARS as READINESS_VARS,
        READYFD_ENV as READYFD, READYFD_INODE_ENV as READYFD_INODE,
    };
}
pub use spawn::{ReadyChild, ReadyCommand, ReadyCommandExt, spawn};
pub use systemd::{NotifyState, StoredFd};

/// The bounds readyfd keeps on what a peer can make it hold, and its other
/// tuning constants, in one place (the wire's own are in
/// [`proto::limits`]).
pub mod limits {
    pub use crate::core::{HIGH_WATER, MAX_INCOMING, MAX_INCOMING_BYTES, MAX_INCOMING_FDS};
    pub use crate::direct::DIRECT_TICK;
    pub use crate::pipe::PIPE_TEXT_LIMIT;
    pub use crate::systemd::{FDSTORE_MAX, NOTIFY_DATAGRAM_MAX};
    pub use readyfd_proto::MAX_FDS_PER_FRAME;
}

pub use readyfd_proto as proto;
pub use verdict::{OnTimeout, Readiness, ReadyVia, StopVia, Stopped};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
pub use readyfd_proto::{
    Address, Endpoint, GoodbyeReason, Ready, RemoteError, RemoteErrorKind, Role, SessionConfig,
};
