//! The messages of protocol version 1 and their encoding inside frames.
//!
//! Each message travels in one frame whose kind byte is its [`Kind`]. Fields
//! are encoded by [`crate::codec`]; application bodies (the payload of
//! [`Message::Notify`], the tail of an application [`RequestBody::App`] or
//! [`ResponseBody::App`]) are carried as the raw bytes of the application's
//! own encoding and decoded by the caller into its own types.
//!
//! This module owns every wire tag: the frame kinds ([`Kind`]), the
//! request and response body tags, and the `Hello` layout with its magic.
//! The session encodes through it (`encode_app_request` and friends) and
//! names no tag itself.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::{decode_exact, decode_prefix, encode_into};
use crate::error::{DecodeError, EncodeError};
use crate::frame::{Frame, HEADER_LEN, begin_frame, finish_frame};
use crate::limits::MAX_FDS_PER_FRAME;

/// The four bytes every `Hello` starts with.
pub const MAGIC: [u8; 4] = *b"RDFD";

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The bit of a frame's kind byte that says the frame carries file
/// descriptors: its payload then starts with one count byte (1 to
/// [`MAX_FDS_PER_FRAME`]), followed by the message's usual payload. Only
/// the kinds that carry a body may set it ([`Kind::may_carry_fds`]).
pub const FD_FLAG: u8 = 0x80;

/// The kind byte of a frame: which message its payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Kind {
    /// [`Message::Hello`], the first frame each side sends.
    Hello = 0x01,
    /// [`Message::Ready`], sent by the child at most once.
    Ready = 0x02,
    /// [`Message::Request`].
    Request = 0x03,
    /// [`Message::Response`].
    Response = 0x04,
    /// [`Message::Notify`].
    Notify = 0x05,
    /// [`Message::Status`].
    Status = 0x06,
    /// [`Message::Goodbye`].
    Goodbye = 0x07,
}

impl Kind {
    /// The kind for a frame's kind byte.
    ///
    /// # Errors
    /// [`DecodeError::UnknownKind`] for a byte that names no message.
    pub fn from_byte(b: u8) -> Result<Kind, DecodeError> {
        Ok(match b {
            0x01 => Kind::Hello,
            0x02 => Kind::Ready,
            0x03 => Kind::Request,
            0x04 => Kind::Response,
            0x05 => Kind::Notify,
            0x06 => Kind::Status,
            0x07 => Kind::Goodbye,
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }

    /// Whether a frame of this kind may carry file descriptors: the kinds
    /// with a body (`Ready`, `Request`, `Response`, `Notify`).
    pub fn may_carry_fds(self) -> bool {
        matches!(
            self,
            Kind::Ready | Kind::Request | Kind::Response | Kind::Notify
        )
    }

    /// The message's name, as used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hello => "Hello",
            Kind::Ready => "Ready",
            Kind::Request => "Request",
            Kind::Response => "Response",
            Kind::Notify => "Notify",
            Kind::Status => "Status",
            Kind::Goodbye => "Goodbye",
        }
    }
}

/// Which end of the channel a side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// The process that spawned the other (wire value 0).
    Parent,
    /// The spawned process (wire value 1).
    Child,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Parent => "parent",
            Role::Child => "child",
        })
    }
}

/// The first message on the channel, from each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's protocol version.
    pub version: u16,
    /// The sender's process id.
    pub pid: u32,
    /// The sender's role.
    pub role: Role,
    /// The longest frame payload the sender accepts; the receiver must not
    /// send longer ones.
    pub max_frame: u32,
}

#[derive(Serialize, Deserialize)]
struct HelloWire {
    magic: [u8; 4],
    version: u16,
    pid: u32,
    role: Role,
    max_frame: u32,
}

/// Where a ready child can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Address {
    /// A TCP socket address (wire variant 0).
    Tcp(SocketAddr),
    /// A UDP socket address (wire variant 1).
    Udp(SocketAddr),
    /// A Unix socket path; a leading `@` names the abstract namespace
    /// (wire variant 2).
    Unix(String),
    /// Anything else, as text: a URL, a D-Bus address, a display number
    /// (wire variant 3).
    Text(String),
}

impl fmt::Display for Address {
    /// The bare address, as a client would use it: `127.0.0.1:8080`,
    /// `/run/app.sock`, or the text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) | Address::Udp(a) => a.fmt(f),
            Address::Unix(p) | Address::Text(p) => f.write_str(p),
        }
    }
}

impl FromStr for Address {
    type Err = std::convert::Infallible;

    /// Parses `tcp:HOST:PORT`, `udp:HOST:PORT`, `unix:PATH`; a bare socket
    /// address is TCP, a bare absolute path (or `@name`) is Unix, anything
    /// else is [`Address::Text`]. Never fails.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("tcp:") {
            if let Ok(a) = rest.trim_start_matches("//").parse() {
                return Ok(Address::Tcp(a));
            }
        }
        if let Some(rest) = s.strip_prefix("udp:") {
            if let Ok(a) = rest.trim_start_matches("//").parse() {
                return Ok(Address::Udp(a));
            }
        }
        if let Some(rest) = s.strip_prefix("unix:") {
            return Ok(Address::Unix(rest.to_string()));
        }
        if let Ok(a) = s.parse() {
            return Ok(Address::Tcp(a));
        }
        if s.starts_with('/') || (s.starts_with('@') && s.len() > 1) {
            return Ok(Address::Unix(s.to_string()));
        }
        Ok(Address::Text(s.to_string()))
    }
}

impl Address {
    /// The socket address of a TCP or UDP address, by value; `None` for a
    /// Unix path or text.
    ///
    /// ```
    /// use readyfd_proto::Address;
    /// let a: Address = "127.0.0.1:8080".parse().unwrap();
    /// assert_eq!(a.as_socket_addr().map(|a| a.port()), Some(8080));
    /// assert_eq!(Address::Unix("/run/app.sock".into()).as_socket_addr(), None);
    /// ```
    pub fn as_socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Address::Tcp(a) | Address::Udp(a) => Some(*a),
            Address::Unix(_) | Address::Text(_) => None,
        }
    }
}

impl From<SocketAddr> for Address {
    /// A TCP address.
    fn from(a: SocketAddr) -> Self {
        Address::Tcp(a)
    }
}

/// A named address: `"http"` -> `127.0.0.1:41234`. Made with
/// [`Endpoint::new`] (or [`Ready::address`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Endpoint {
    /// The endpoint's name, chosen by the child (`"http"`, `"grpc"`); may be
    /// empty.
    pub name: String,
    /// Where it is.
    pub address: Address,
}

impl Endpoint {
    /// The address `address` named `name`.
    pub fn new(name: impl Into<String>, address: impl Into<Address>) -> Self {
        Endpoint {
            name: name.into(),
            address: address.into(),
        }
    }
}

/// The child's announcement that it is ready.
///
/// Made with [`Ready::new`] (or [`Ready::default`]) and its setters; the
/// fields are public to read and to assign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Ready {
    /// The pid the child claims as its main process (a wrapper such as
    /// `sh -c` may report another pid than the one spawned). `0`, as
    /// [`Ready::default`] leaves it, means "not said": this crate does no
    /// system calls, so the sending side fills in its own pid before it
    /// encodes (see [`Ready::with_sender_pid`]).
    pub pid: u32,
    /// Where the child can be reached, in the child's order.
    #[serde(deserialize_with = "deserialize_endpoints")]
    pub addresses: Vec<Endpoint>,
    /// A one-line status text.
    pub status: Option<String>,
}

impl Ready {
    /// A `Ready` for `pid` with no addresses and no status.
    pub fn new(pid: u32) -> Self {
        Ready {
            pid,
            addresses: Vec::new(),
            status: None,
        }
    }

    /// Adds a named address.
    #[must_use]
    pub fn address(mut self, name: impl Into<String>, address: impl Into<Address>) -> Self {
        self.addresses.push(Endpoint {
            name: name.into(),
            address: address.into(),
        });
        self
    }

    /// Sets the status line.
    #[must_use]
    pub fn status(mut self, status: impl Into<String>) -> Self {
        self.status = Some(status.into());
        self
    }

    /// The address named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Address> {
        self.addresses
            .iter()
            .find(|e| e.name == name)
            .map(|e| &e.address)
    }

    /// The TCP or UDP socket address named `name`, by value: `None` when
    /// there is no such name, or it names a Unix path or text.
    ///
    /// ```
    /// use readyfd_proto::Ready;
    /// let ready = Ready::new(4122).address("http", std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
    /// assert_eq!(ready.socket_addr("http").map(|a| a.port()), Some(8080));
    /// assert_eq!(ready.socket_addr("grpc"), None);
    /// ```
    pub fn socket_addr(&self, name: &str) -> Option<SocketAddr> {
        self.get(name).and_then(Address::as_socket_addr)
    }

    /// This `Ready` with `pid` as its pid when it names none (pid `0`, as
    /// [`Ready::default`] leaves it); a pid already set is kept. The
    /// sending side calls it with its own pid, so that a child that
    /// said nothing is reported as itself, never as pid 0.
    ///
    /// ```
    /// use readyfd_proto::Ready;
    /// assert_eq!(Ready::default().with_sender_pid(4122).pid, 4122);
    /// assert_eq!(Ready::new(7).with_sender_pid(4122).pid, 7);
    /// ```
    #[must_use]
    pub fn with_sender_pid(mut self, pid: u32) -> Self {
        if self.pid == 0 {
            self.pid = pid;
        }
        self
    }
}

/// Deserializes `Ready::addresses` without trusting the claimed element
/// count for preallocation. serde's own `Vec` impl reserves up to 1 MiB for
/// whatever count the wire claims, so a 30-byte `Ready` claiming 2^60
/// endpoints would allocate 1 MiB before failing; here the vector grows only
/// as elements actually decode (each takes at least 20 payload bytes).
fn deserialize_endpoints<'de, D>(d: D) -> Result<Vec<Endpoint>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Endpoints;
    impl<'de> serde::de::Visitor<'de> for Endpoints {
        type Value = Vec<Endpoint>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence of endpoints")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
            while let Some(e) = seq.next_element()? {
                v.push(e);
            }
            Ok(v)
        }
    }
    d.deserialize_seq(Endpoints)
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestBody {
    /// Answer with [`ResponseBody::Ok`] (wire tag 0). Answered by the
    /// library itself, never by application code.
    Ping,
    /// Stop gracefully within `grace_ms` milliseconds (or a default when
    /// `None`) (wire tag 1).
    Shutdown {
        /// How long the sender will wait before it escalates to signals.
        grace_ms: Option<u64>,
    },
    /// An application request: the bytes are the application's encoding
    /// (wire tag 2).
    App(Bytes),
}

/// What a response answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseBody {
    /// Success with no body: the answer to `Ping` and `Shutdown` (wire tag 0).
    Ok,
    /// Success with an application body (wire tag 1).
    App(Bytes),
    /// The request failed on the other side (wire tag 2).
    Error(RemoteError),
}

/// A request that failed on the side that served it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteError {
    /// The class of failure.
    pub kind: RemoteErrorKind,
    /// What went wrong, for people.
    pub message: String,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for RemoteError {}

/// Classes of [`RemoteError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// Nobody on that side serves this kind of request (wire 0).
    Unsupported,
    /// The request body could not be decoded as the server's type (wire 1).
    BadRequest,
    /// The handler ran and reported failure (wire 2).
    Failed,
    /// The server is shutting down and takes no more requests (wire 3).
    ShuttingDown,
    /// The server dropped the request without answering it (wire 4).
    Dropped,
}

/// Why a side ends the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum GoodbyeReason {
    /// Done with the channel; nothing is wrong (wire 0).
    Done,
    /// The process is shutting down (wire 1).
    ShuttingDown,
    /// The peer broke the protocol; the message says how (wire 2).
    ProtocolError,
    /// The peer speaks an incompatible version (wire 3).
    VersionMismatch,
}

/// The last message a side sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Goodbye {
    /// Why.
    pub reason: GoodbyeReason,
    /// Details for people; may be empty.
    pub message: String,
}

/// A protocol message, as it travels in one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// The handshake.
    Hello(Hello),
    /// The child is ready.
    Ready(Ready),
    /// A request; answer it with a `Response` of the same id.
    Request {
        /// Chosen by the sender, unique among its unanswered requests.
        id: u64,
        /// What it asks.
        body: RequestBody,
    },
    /// The answer to the peer's request `id`.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        body: ResponseBody,
    },
    /// A one-way application message; its payload is the application's
    /// encoding and may be empty (a unit type).
    Notify(Bytes),
    /// A status line from the child, before or after `Ready`.
    Status(String),
    /// The sender ends the session: it sends nothing more.
    Goodbye(Goodbye),
}

/// The head of a request body on the wire: the variant index is the tag
/// (`Ping` 0, `Shutdown` 1, `App` 2), and an `App` body follows as raw
/// bytes.
#[derive(Serialize, Deserialize)]
enum RequestTag {
    Ping,
    Shutdown { grace_ms: Option<u64> },
    App,
}

/// The head of a response body on the wire: `Ok` 0, `App` 1 (raw bytes
/// follow), `Error` 2.
#[derive(Serialize, Deserialize)]
enum ResponseTag {
    Ok,
    App,
    Error(RemoteError),
}

impl Message {
    /// The frame kind this message travels in.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::Ready(_) => Kind::Ready,
            Message::Request { .. } => Kind::Request,
            Message::Response { .. } => Kind::Response,
            Message::Notify(_) => Kind::Notify,
            Message::Status(_) => Kind::Status,
            Message::Goodbye(_) => Kind::Goodbye,
        }
    }

    /// Appends this message as one frame to `out`.
    ///
    /// # Errors
    /// [`EncodeError::TooLarge`] when the payload would exceed `max` bytes;
    /// `out` is left as it was.
    pub fn encode(&self, max: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.encode_with_fds(0, max, out)
    }

    /// Appends this message as one frame to `out`, announcing `fds` file
    /// descriptors ([`FD_FLAG`]); with `fds == 0` this is
    /// [`encode`](Self::encode), byte for byte. The descriptors themselves
    /// travel beside the bytes (`SCM_RIGHTS`): that is the driver's part.
    ///
    /// # Errors
    /// [`EncodeError::TooManyFds`] for more than [`MAX_FDS_PER_FRAME`], or
    /// any at all on a kind that may not carry them;
    /// [`EncodeError::TooLarge`] as for [`encode`](Self::encode). `out` is
    /// left as it was.
    pub fn encode_with_fds(
        &self,
        fds: usize,
        max: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        write_frame_fds(self.kind(), fds, max, out, |out, limit| match self {
            Message::Hello(h) => encode_into(
                &HelloWire {
                    magic: MAGIC,
                    version: h.version,
                    pid: h.pid,
                    role: h.role,
                    max_frame: h.max_frame,
                },
                out,
                limit,
            ),
            Message::Ready(r) => encode_into(r, out, limit),
            Message::Request { id, body } => {
                let (tag, app) = match body {
                    RequestBody::Ping => (RequestTag::Ping, None),
                    RequestBody::Shutdown { grace_ms } => (
                        RequestTag::Shutdown {
                            grace_ms: *grace_ms,
                        },
                        None,
                    ),
                    RequestBody::App(b) => (RequestTag::App, Some(b)),
                };
                encode_into(&(id, tag), out, limit)?;
                append_raw(app, out, limit)
            }
            Message::Response { id, body } => {
                let (tag, app) = match body {
                    ResponseBody::Ok => (ResponseTag::Ok, None),
                    ResponseBody::App(b) => (ResponseTag::App, Some(b)),
                    ResponseBody::Error(e) => (ResponseTag::Error(e.clone()), None),
                };
                encode_into(&(id, tag), out, limit)?;
                append_raw(app, out, limit)
            }
            Message::Notify(b) => append_raw(Some(b), out, limit),
            Message::Status(s) => encode_into(s, out, limit),
            Message::Goodbye(g) => encode_into(g, out, limit),
        })
    }

    /// Decodes the message a frame holds, and how many file descriptors the
    /// frame announces (0 without [`FD_FLAG`]). Unlike
    /// [`decode`](Self::decode), accepts the flag.
    ///
    /// # Errors
    /// [`DecodeError::FdsNotAllowed`] for the flag on a kind without a
    /// body, [`DecodeError::BadFdCount`] for a count of 0 or over
    /// [`MAX_FDS_PER_FRAME`], [`DecodeError::UnexpectedEnd`] for a flagged
    /// frame without its count byte, and the errors of
    /// [`decode`](Self::decode).
    pub fn decode_with_fds(frame: &Frame) -> Result<(Message, usize), DecodeError> {
        if frame.kind & FD_FLAG == 0 {
            return Ok((Message::decode(frame)?, 0));
        }
        let kind = match Kind::from_byte(frame.kind & !FD_FLAG) {
            Ok(k) => k,
            Err(_) => return Err(DecodeError::UnknownKind(frame.kind)),
        };
        if !kind.may_carry_fds() {
            return Err(DecodeError::FdsNotAllowed(kind.name()));
        }
        let Some(&count) = frame.payload.first() else {
            return Err(DecodeError::UnexpectedEnd { additional: 1 });
        };
        if count == 0 || usize::from(count) > MAX_FDS_PER_FRAME {
            return Err(DecodeError::BadFdCount(count));
        }
        let inner = Frame {
            kind: kind as u8,
            payload: frame.payload.slice(1..),
        };
        Ok((Message::decode(&inner)?, usize::from(count)))
    }

    /// Decodes the message a frame holds. A frame flagged as carrying file
    /// descriptors ([`FD_FLAG`]) is an unknown kind here: see
    /// [`decode_with_fds`](Self::decode_with_fds).
    ///
    /// # Errors
    /// [`DecodeError`] when the kind is unknown or the payload is not a
    /// valid encoding of that kind's message, including trailing bytes.
    pub fn decode(frame: &Frame) -> Result<Message, DecodeError> {
        let p = &frame.payload;
        Ok(match Kind::from_byte(frame.kind)? {
            Kind::Hello => Message::Hello(decode_hello(p)?),
            Kind::Ready => Message::Ready(decode_exact(p)?),
            Kind::Request => {
                let ((id, tag), used): ((u64, RequestTag), usize) = decode_prefix(p)?;
                let body = match tag {
                    RequestTag::Ping => RequestBody::Ping,
                    RequestTag::Shutdown { grace_ms } => RequestBody::Shutdown { grace_ms },
                    RequestTag::App => RequestBody::App(p.slice(used..)),
                };
                if !matches!(body, RequestBody::App(_)) {
                    no_trailing(p, used)?;
                }
                Message::Request { id, body }
            }
            Kind::Response => {
                let ((id, tag), used): ((u64, ResponseTag), usize) = decode_prefix(p)?;
                let body = match tag {
                    ResponseTag::Ok => ResponseBody::Ok,
                    ResponseTag::App => ResponseBody::App(p.slice(used..)),
                    ResponseTag::Error(e) => ResponseBody::Error(e),
                };
                if !matches!(body, ResponseBody::App(_)) {
                    no_trailing(p, used)?;
                }
                Message::Response { id, body }
            }
            Kind::Notify => Message::Notify(p.clone()),
            Kind::Status => Message::Status(decode_exact(p)?),
            Kind::Goodbye => Message::Goodbye(decode_exact(p)?),
        })
    }
}

/// Decodes a `Hello`, checking magic and version before the rest, so that a
/// later version whose `Hello` grew is still reported as a version mismatch
/// rather than as garbage.
fn decode_hello(p: &[u8]) -> Result<Hello, DecodeError> {
    if p.len() >= 4 && p[..4] != MAGIC {
        return Err(DecodeError::BadMagic([p[0], p[1], p[2], p[3]]));
    }
    if p.len() >= 6 {
        let version = u16::from_le_bytes([p[4], p[5]]);
        if version != PROTOCOL_VERSION {
            // The session turns this into a version mismatch.
            return Ok(Hello {
                version,
                pid: 0,
                role: Role::Parent,
                max_frame: 0,
            });
        }
    }
    let w: HelloWire = decode_exact(p)?;
    Ok(Hello {
        version: w.version,
        pid: w.pid,
        role: w.role,
        max_frame: w.max_frame,
    })
}

fn no_trailing(p: &[u8], used: usize) -> Result<(), DecodeError> {
    if used == p.len() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes {
            extra: p.len() - used,
        })
    }
}

fn append_raw(body: Option<&Bytes>, out: &mut Vec<u8>, limit: usize) -> Result<(), EncodeError> {
    match body {
        Some(b) => append_bytes(b, out, limit),
        None => Ok(()),
    }
}

/// Appends `body` as it is (one copy, checked against `limit` before
/// anything is reserved).
fn append_bytes(body: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), EncodeError> {
    if out.len().saturating_add(body.len()) > limit {
        return Err(EncodeError::TooLarge {
            len: None,
            max: limit,
        });
    }
    out.extend_from_slice(body);
    Ok(())
}

/// Appends a `Request` frame for our request `id` whose application body
/// is `body`, encoded straight into the frame (the bytes of
/// `Message::Request { id, body: RequestBody::App(encode_body(body)) }`).
pub(crate) fn encode_app_request<T: Serialize + ?Sized>(
    id: u64,
    body: &T,
    fds: usize,
    max: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    encode_app(Kind::Request, &(id, RequestTag::App), body, fds, max, out)
}

/// Appends a `Response` frame answering the peer's request `id` with the
/// application body `body`, encoded straight into the frame.
pub(crate) fn encode_app_response<T: Serialize + ?Sized>(
    id: u64,
    body: &T,
    fds: usize,
    max: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    encode_app(Kind::Response, &(id, ResponseTag::App), body, fds, max, out)
}

/// Appends a frame of `kind` whose payload is `head`, then `body`.
fn encode_app<H: Serialize, T: Serialize + ?Sized>(
    kind: Kind,
    head: &H,
    body: &T,
    fds: usize,
    max: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    write_frame_fds(kind, fds, max, out, |out, limit| {
        encode_into(head, out, limit)?;
        encode_into(body, out, limit)
    })
}

/// Appends a `Request` frame for our request `id` whose application body
/// is `body` itself, copied once into the frame with no serde work (the
/// bytes of `Message::Request { id, body: RequestBody::App(body) }`).
pub(crate) fn encode_app_request_bytes(
    id: u64,
    body: &[u8],
    fds: usize,
    max: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    encode_app_bytes(Kind::Request, &(id, RequestTag::App), body, fds, max, out)
}

/// Appends a `Response` frame answering the peer's request `id` whose
/// application body is `body` itself (no serde work).
pub(crate) fn encode_app_response_bytes(
    id: u64,
    body: &[u8],
    fds: usize,
    max: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    encode_app_bytes(Kind::Response, &(id, ResponseTag::App), body, fds, max, out)
}

/// Appends a `Notify` frame whose payload is `body` itself (no serde work).
pub(crate) fn encode_notify_bytes(
    body: &[u8],
    fds: usize,
    max: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    write_frame_fds(Kind::Notify, fds, max, out, |out, limit| {
        append_bytes(body, out, limit)
    })
}

/// Appends a frame of `kind` whose payload is `head`, then the raw `body`.
fn encode_app_bytes<H: Serialize>(
    kind: Kind,
    head: &H,
    body: &[u8],
    fds: usize,
    max: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    write_frame_fds(kind, fds, max, out, |out, limit| {
        encode_into(head, out, limit)?;
        append_bytes(body, out, limit)
    })
}

/// Appends the start of a frame of `kind` whose payload is what `fill`
/// appends, then a raw body of `body_len` bytes that the caller writes
/// itself right after these bytes: the header's length counts the body,
/// which is checked against `max` with the rest.
fn write_frame_before_body(
    kind: Kind,
    fds: usize,
    body_len: usize,
    max: u32,
    out: &mut Vec<u8>,
    fill: impl FnOnce(&mut Vec<u8>, usize) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    write_frame_fds(kind, fds, max, out, |out, limit| {
        fill(out, limit)?;
        if out.len().saturating_add(body_len) > limit {
            return Err(EncodeError::TooLarge {
                len: None,
                max: limit,
            });
        }
        Ok(())
    })?;
    // `fill`'s check held the whole payload to `max`, so this fits in the
    // header's `u32`.
    let len = (out.len() - start - HEADER_LEN + body_len) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// The head of a `Request` frame for our request `id` whose raw body of
/// `body_len` bytes the caller writes right after it (the bytes of
/// [`encode_app_request_bytes`] up to the body).
pub(crate) fn encode_app_request_bytes_head(
    id: u64,
    body_len: usize,
    fds: usize,
    max: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    write_frame_before_body(Kind::Request, fds, body_len, max, out, |out, limit| {
        encode_into(&(id, RequestTag::App), out, limit)
    })
}

/// The head of a `Response` frame answering the peer's request `id`, whose
/// raw body of `body_len` bytes the caller writes right after it.
pub(crate) fn encode_app_response_bytes_head(
    id: u64,
    body_len: usize,
    fds: usize,
    max: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    write_frame_before_body(Kind::Response, fds, body_len, max, out, |out, limit| {
        encode_into(&(id, ResponseTag::App), out, limit)
    })
}

/// The head of a `Notify` frame whose raw payload of `body_len` bytes the
/// caller writes right after it.
pub(crate) fn encode_notify_bytes_head(
    body_len: usize,
    fds: usize,
    max: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    write_frame_before_body(Kind::Notify, fds, body_len, max, out, |_, _| Ok(()))
}

/// Appends a `Notify` frame whose payload is `body`'s encoding.
pub(crate) fn encode_notify<T: Serialize + ?Sized>(
    body: &T,
    fds: usize,
    max: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    write_frame_fds(Kind::Notify, fds, max, out, |out, limit| {
        encode_into(body, out, limit)
    })
}

/// Appends a `Status` frame, without copying `status` into a `Message`.
pub(crate) fn encode_status(status: &str, max: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    write_frame(Kind::Status, max, out, |out, limit| {
        encode_into(status, out, limit)
    })
}

/// Runs `fill` to append a payload after a fresh header, then patches the
/// length; on any error `out` is restored and the error names the maximum.
fn write_frame(
    kind: Kind,
    max: u32,
    out: &mut Vec<u8>,
    fill: impl FnOnce(&mut Vec<u8>, usize) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    write_frame_fds(kind, 0, max, out, fill)
}

/// [`write_frame`] for a frame that announces `fds` file descriptors: with
/// none, the plain frame; otherwise the kind byte has [`FD_FLAG`] and the
/// payload starts with the count.
fn write_frame_fds(
    kind: Kind,
    fds: usize,
    max: u32,
    out: &mut Vec<u8>,
    fill: impl FnOnce(&mut Vec<u8>, usize) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    if fds > MAX_FDS_PER_FRAME || (fds > 0 && !kind.may_carry_fds()) {
        return Err(EncodeError::TooManyFds {
            count: fds,
            max: if kind.may_carry_fds() {
                MAX_FDS_PER_FRAME
            } else {
                0
            },
        });
    }
    let start = if fds == 0 {
        begin_frame(kind as u8, out)
    } else {
        let start = begin_frame(kind as u8 | FD_FLAG, out);
        out.push(fds as u8);
        start
    };
    let limit = (start + HEADER_LEN).saturating_add(max as usize);
    match fill(out, limit) {
        Ok(()) => finish_frame(start, max, out).map_err(|e| match e {
            crate::error::FrameError::TooLarge { len, .. } => EncodeError::TooLarge {
                len: Some(len as usize),
                max: max as usize,
            },
            crate::error::FrameError::Truncated { .. } => EncodeError::Serialize(e.to_string()),
        }),
        Err(EncodeError::TooLarge { .. }) => {
            out.truncate(start);
            Err(EncodeError::TooLarge {
                len: None,
                max: max as usize,
            })
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}
