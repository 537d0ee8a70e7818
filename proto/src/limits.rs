//! The protocol's tuning numbers: how large a frame may be, how many of the
//! peer's requests may wait for an answer, how long a `Goodbye` message may
//! be. Each is a default or a floor that `PROTOCOL.md` names; the wire
//! format's own constants ([`HEADER_LEN`](crate::HEADER_LEN),
//! [`MAGIC`](crate::MAGIC), [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION))
//! live with the layer they describe.

/// The default maximum payload length, 16 MiB, on both the sending and the
/// receiving side ([`SessionConfig::max_frame`](crate::SessionConfig::max_frame)).
pub const DEFAULT_MAX_FRAME: u32 = 16 * 1024 * 1024;

/// The smallest receive maximum a side may announce: every peer can always
/// be sent a `Ping` answer, a `Goodbye` and a status line. A `Hello` that
/// announces less is a session error, and a configured maximum below it is
/// raised to it.
pub const MIN_MAX_FRAME: u32 = 4096;

/// How many of the peer's requests may wait for an answer at once by
/// default ([`SessionConfig::max_unanswered`](crate::SessionConfig::max_unanswered)).
pub const DEFAULT_MAX_UNANSWERED: usize = 65_536;

/// The longest `Goodbye` message, in bytes, that
/// [`Session::send_goodbye`](crate::Session::send_goodbye) sends; a longer
/// one is cut at a character boundary.
pub const MAX_GOODBYE_MESSAGE: usize = 4096;

/// The most file descriptors one frame may carry: the kernel's
/// `SCM_MAX_FD`, the most one `sendmsg` can pass on Linux. The count
/// travels in one byte, and a frame that announces more (or none, with the
/// flag set) is invalid.
pub const MAX_FDS_PER_FRAME: usize = 253;
