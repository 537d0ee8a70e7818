//! The readyfd wire protocol, sans-IO: this crate performs no system calls,
//! reads no clock and starts no threads. It turns bytes into checked
//! messages and messages into bytes; the `readyfd` crate drives it over a
//! socket, blocking or async, and a test or a fuzzer drives it over a
//! buffer.
//!
//! Three layers, each with its own error type:
//!
//! - [`frame`]: `[u32 LE length][u8 kind][payload]`, an incremental decoder
//!   with tokio-util's contract and a maximum checked before allocation
//!   ([`FrameError`]);
//! - [`message`]: the messages of protocol version 1, encoded with bincode
//!   2.0.1 under one pinned configuration ([`DecodeError`], [`EncodeError`]);
//!   application bodies are the application's own serde types;
//! - [`session`]: the state machine that enforces who may send what, and
//!   when ([`SessionError`]).
//!
//! [`limits`] holds the tuning numbers (frame maximums and their floor, the
//! bound on the peer's unanswered requests), [`codec`] the one body
//! encoding, and [`error`] the error type of each layer.
//!
//! `PROTOCOL.md` next to this crate is the normative specification, with
//! test vectors in `vectors.json`; a peer in another language needs nothing
//! else.
//!
//! # Example: a whole exchange in memory
//! ```
//! use bytes::BytesMut;
//! use readyfd_proto::{Message, RequestBody, ResponseBody, Role, Session, SessionConfig};
//!
//! let mut parent = Session::new(Role::Parent, 1, SessionConfig::default());
//! let mut child = Session::new(Role::Child, 2, SessionConfig::default());
//!
//! // The parent hands the child its configuration before it is ready.
//! let id = parent.send_app_request("config: fast=true").unwrap();
//! let mut wire = Vec::new();
//! let _ = parent.poll_transmit(&mut wire);
//! child.handle_input(&mut BytesMut::from(&wire[..])).unwrap();
//! assert!(matches!(child.poll_event(), Some(Message::Hello(_))));
//! let Some(Message::Request { id: got, body: RequestBody::App(bytes) }) = child.poll_event() else { panic!() };
//! let text: String = readyfd_proto::codec::decode_body(&bytes).unwrap();
//! assert_eq!((got, text.as_str()), (id, "config: fast=true"));
//! child.send_app_response(got, &true).unwrap();
//! ```
//!
//! # Fuzzing your own body types
//! Application bodies are your own serde types, decoded from bytes a peer
//! chose. [`codec::check_body`] is the one call a fuzz target for such a
//! type needs: it decodes any bytes as readyfd would on arrival and panics
//! when a decoded value does not survive the round trip. The fuzz harness
//! of this crate itself is not published (`proto/harness` in the
//! repository).
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![warn(unreachable_pub)]
#![forbid(unsafe_code)]

pub mod codec;
pub mod error;
pub mod frame;
pub mod limits;
pub mod message;
pub mod session;

pub use error::{DecodeError, EncodeError, FrameError, SessionError};
pub use frame::{Frame, FrameDecoder, HEADER_LEN, READ_AHEAD};
pub use limits::{DEFAULT_MAX_FRAME, MAX_FDS_PER_FRAME, MIN_MAX_FRAME};
pub use message::{
    Address, Endpoint, FD_FLAG, Goodbye, GoodbyeReason, Hello, Kind, MAGIC, Message,
    PROTOCOL_VERSION, Ready, RemoteError, RemoteErrorKind, RequestBody, ResponseBody, Role,
};
pub use session::{Eof, FdEvent, Session, SessionConfig};
