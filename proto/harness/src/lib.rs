//! The fuzz harness of `readyfd-proto`, kept out of the published crate (as
//! rustls and quinn-proto keep theirs with their fuzz crates): one function
//! per target in `fuzz/fuzz_targets/`, the model each checks against, and
//! the bounded allocator they run under.
//!
//! The fuzz targets are one-liners over these functions, and this crate's
//! tests (`tests/corpus_replay.rs`) replay the committed corpus and every
//! past crash through the very same functions with plain `cargo test` on
//! stable. Every function accepts any bytes at all and panics only when an
//! invariant of `readyfd-proto` is violated: that panic is the finding a
//! fuzzer reports. Each publishes an allocation bound while it runs (see
//! [`alloc`]).
//!
//! | function | target | what it drives |
//! |---|---|---|
//! | [`frame_decoder`] | `frame_decoder` | `FrameDecoder`, whole vs. byte by byte vs. chunked |
//! | [`message_decode`] | `message_decode` | `Message::decode` and canonical re-encoding |
//! | [`session`] | `session` | two `Session`s against a model, with forged input |
//! | [`app_body`] | `app_body` | an application body type carried in frames ([`ExampleBody`]) |
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(unreachable_pub)]

pub mod alloc;
mod app_body;
mod frames;
mod input;
mod messages;
mod session;

pub use alloc::BoundedAlloc;
pub use app_body::{ExampleBody, app_body};
pub use frames::frame_decoder;
pub use messages::message_decode;
pub use session::session;
