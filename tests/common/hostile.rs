//! Children that break the native protocol on purpose (the role `hostile
//! KIND`): one table, run against the blocking driver (`tests/native.rs`)
//! and the tokio driver (`tests/async_native.rs`).

use readyfd::{CloseReason, ProtocolError, ReadyError};
use readyfd_proto::{DecodeError, FrameError, SessionError};

/// Whether a protocol error is the one a kind of hostile child must get.
pub type Check = fn(&ProtocolError) -> bool;

/// Each `hostile` kind, with the typed error it must get.
pub const CASES: [(&str, Check); 5] = [
    ("oversize", |e| {
        matches!(
            e,
            ProtocolError::Session(SessionError::Frame(FrameError::TooLarge {
                len: 0xffff_ffff,
                ..
            }))
        )
    }),
    ("garbage", |e| {
        matches!(
            e,
            ProtocolError::Session(
                SessionError::Frame(FrameError::TooLarge { .. })
                    | SessionError::Decode(_)
                    | SessionError::HelloExpected(_)
            )
        )
    }),
    ("badmagic", |e| {
        matches!(
            e,
            ProtocolError::Session(SessionError::Decode(DecodeError::BadMagic(_)))
        )
    }),
    ("version", |e| {
        matches!(
            e,
            ProtocolError::Session(SessionError::VersionMismatch { ours: 1, theirs: 9 })
        )
    }),
    ("truncated", |e| {
        matches!(
            e,
            ProtocolError::Session(SessionError::Frame(FrameError::Truncated { .. }))
        )
    }),
];

/// Checks what one driver saw of one hostile child: the typed error of
/// `check` with a message (naming both versions for `version`), and the
/// channel closed for a protocol error.
pub fn assert_rejected<T: std::fmt::Debug>(
    kind: &str,
    check: Check,
    ready: Result<T, ReadyError>,
    closed: Option<CloseReason>,
) {
    match ready {
        Err(ReadyError::Protocol { source, .. }) => {
            assert!(check(&source), "{kind}: {source:?}");
            let msg = source.to_string();
            assert!(!msg.is_empty(), "{kind}");
            if kind == "version" {
                assert!(
                    msg.contains("version 1") && msg.contains("version 9"),
                    "{msg}"
                );
            }
        }
        other => panic!("{kind}: {other:?}"),
    }
    assert!(
        matches!(closed, Some(CloseReason::Protocol(_))),
        "{kind}: the channel is closed with the same reason: {closed:?}"
    );
}
