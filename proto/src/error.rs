//! One error type per layer: frames, message bodies, encoding, the session.

/// The frame layer failed: the byte stream is corrupt and must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame header announced a payload longer than this side accepts.
    /// Detected on the raw header, before anything is reserved for it.
    #[error(
        "frame of {len} bytes exceeds the maximum of {max} bytes (raise the limit on both sides, or send smaller messages)"
    )]
    TooLarge {
        /// The length the header announced.
        len: u64,
        /// The maximum in force.
        max: u32,
    },
    /// The stream ended inside a frame.
    #[error(
        "stream ended inside a frame: got {have} of {need} bytes (the peer closed or died mid-message)"
    )]
    Truncated {
        /// Bytes of the frame (header included) that arrived.
        have: usize,
        /// Bytes the frame needed (header included, where the header was complete).
        need: usize,
    },
}

/// A frame arrived whole, but its payload is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame's kind byte names no message of this protocol version.
    #[error("unknown message kind 0x{0:02x}")]
    UnknownKind(u8),
    /// The payload ended before the message did.
    #[error("message truncated: {additional} more bytes were needed")]
    UnexpectedEnd {
        /// How many more bytes the decoder wanted.
        additional: usize,
    },
    /// The message ended before the payload did.
    #[error("{extra} trailing bytes after the message inside its frame")]
    TrailingBytes {
        /// Bytes left over.
        extra: usize,
    },
    /// A string was not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// An enum discriminant, `Option` tag or `bool` had no valid meaning.
    #[error("invalid tag {tag} for {what}")]
    InvalidTag {
        /// The type being decoded.
        what: &'static str,
        /// The value found.
        tag: u32,
    },
    /// An inner length claimed more bytes than the payload can hold.
    #[error("an inner length exceeds the frame (hostile or corrupt length field)")]
    LimitExceeded,
    /// A `Hello` did not start with the magic bytes `RDFD`.
    #[error("bad magic {0:02x?}: the peer does not speak readyfd (expected \"RDFD\")")]
    BadMagic([u8; 4]),
    /// A frame flagged as carrying file descriptors is of a kind that may
    /// not carry any (`Hello`, `Status`, `Goodbye`).
    #[error("a {0} frame may not carry file descriptors")]
    FdsNotAllowed(&'static str),
    /// A frame flagged as carrying file descriptors announced 0 of them, or
    /// more than [`MAX_FDS_PER_FRAME`](crate::limits::MAX_FDS_PER_FRAME).
    #[error("a frame announced {0} file descriptors: the count must be 1 to 253")]
    BadFdCount(u8),
    /// Any other malformation, described by the decoder.
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// A value could not be encoded into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded message would exceed the maximum frame length.
    #[error("message too large: {} exceeds the maximum frame payload of {max} bytes", len.map_or_else(|| "it".to_string(), |l| format!("{l} bytes")))]
    TooLarge {
        /// The encoded length, when it was computed in full.
        len: Option<usize>,
        /// The maximum in force.
        max: usize,
    },
    /// More file descriptors than one frame may carry
    /// ([`MAX_FDS_PER_FRAME`](crate::limits::MAX_FDS_PER_FRAME)).
    #[error(
        "{count} file descriptors do not fit one message: at most {max} may travel together (send them in several messages)"
    )]
    TooManyFds {
        /// How many were attached.
        count: usize,
        /// The most a frame may carry.
        max: usize,
    },
    /// The value's `Serialize` implementation failed.
    #[error("cannot serialize message: {0}")]
    Serialize(String),
}

/// The session state machine refused input or output.
///
/// Errors caused by the peer's bytes (everything but [`SessionError::Encode`],
/// [`SessionError::Closed`] and [`SessionError::NotAllowed`]) mean the
/// channel is unusable and should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The byte stream is corrupt.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame held an invalid message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// An outgoing message could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The peer speaks another protocol version.
    #[error(
        "protocol version mismatch: we speak version {ours}, the peer speaks version {theirs} (build both sides from compatible readyfd releases)"
    )]
    VersionMismatch {
        /// Our version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
    /// The peer announced a receive maximum below [`MIN_MAX_FRAME`](crate::MIN_MAX_FRAME).
    #[error(
        "the peer announced a maximum frame of {announced} bytes, below the protocol minimum of {min}"
    )]
    MaxFrameTooSmall {
        /// What the peer announced.
        announced: u32,
        /// The protocol minimum.
        min: u32,
    },
    /// The peer announced the same role as ours (two parents or two children).
    #[error("both ends claim to be the {0}: the fd was handed to the wrong process")]
    RoleConflict(crate::Role),
    /// The first frame from the peer was not a `Hello`.
    #[error("expected Hello as the first message, got {0}")]
    HelloExpected(&'static str),
    /// The peer sent `Hello` twice.
    #[error("peer sent a second Hello")]
    DuplicateHello,
    /// The peer sent `Ready` twice.
    #[error("peer sent a second Ready")]
    SecondReady,
    /// The peer sent a message its role never sends (a parent sending `Ready`).
    #[error("the {role} may not send {kind}")]
    WrongDirection {
        /// The peer's role.
        role: crate::Role,
        /// The message kind.
        kind: &'static str,
    },
    /// A `Response` named an id we have no outstanding request for.
    #[error("response to request id {0}, which was never asked or was already answered")]
    UnknownResponseId(u64),
    /// The peer reused the id of one of its still unanswered requests.
    #[error("peer reused request id {0} while it was still unanswered")]
    DuplicateRequestId(u64),
    /// The peer has more unanswered requests than this side accepts.
    #[error("peer has more than {0} unanswered requests")]
    TooManyRequests(usize),
    /// The peer sent a frame after its `Goodbye`.
    #[error("peer sent {0} after Goodbye")]
    AfterGoodbye(&'static str),
    /// A frame announced a number of file descriptors other than the number
    /// that arrived with it (the read that held its first byte).
    #[error(
        "a {kind} frame announced {announced} file descriptors but {arrived} arrived with it (all were closed)"
    )]
    FdCountMismatch {
        /// The frame's kind, by name.
        kind: &'static str,
        /// What the frame announced (0 for a frame without the flag).
        announced: usize,
        /// What arrived with it.
        arrived: usize,
    },
    /// File descriptors arrived with bytes in which no frame starts: they
    /// belong to no message.
    #[error("{0} file descriptors arrived with no frame to carry them (all were closed)")]
    UnexpectedFds(usize),
    /// The control message that carried file descriptors was truncated
    /// (`MSG_CTRUNC`: this process ran out of descriptors, or the peer sent
    /// more than a frame may carry), so some were lost.
    #[error(
        "file descriptors were lost in transit (truncated control message: this process may have reached its descriptor limit)"
    )]
    FdsTruncated,
    /// We tried to send on a session that has ended.
    #[error("the channel is closed")]
    Closed,
    /// We tried to send something this role or state does not allow.
    #[error("not allowed: {0}")]
    NotAllowed(&'static str),
}
