//! File descriptors in frames (PROTOCOL.md, section 2.1): the flag and its
//! count byte on the wire, and the session's accounting of which frame the
//! descriptors that arrived with a read belong to. Descriptors are only
//! counted here; the drivers keep the real ones.

use bytes::{Bytes, BytesMut};
use readyfd_proto::{
    DecodeError, EncodeError, FD_FLAG, FdEvent, Frame, Hello, MAX_FDS_PER_FRAME, Message,
    PROTOCOL_VERSION, Ready, RequestBody, Role, Session, SessionConfig, SessionError,
};

fn parent() -> Session {
    Session::new(Role::Parent, 100, SessionConfig::default())
}

fn child_hello() -> Vec<u8> {
    let mut out = Vec::new();
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        pid: 7,
        role: Role::Child,
        max_frame: 1 << 20,
    })
    .encode(u32::MAX, &mut out)
    .unwrap();
    out
}

fn notify(body: &[u8], fds: usize) -> Vec<u8> {
    let mut out = Vec::new();
    Message::Notify(Bytes::copy_from_slice(body))
        .encode_with_fds(fds, u32::MAX, &mut out)
        .unwrap();
    out
}

/// Feeds `reads` (bytes, fds) in order; returns the events and the first
/// error.
fn feed(s: &mut Session, reads: &[(&[u8], usize)]) -> Result<Vec<FdEvent>, SessionError> {
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for &(bytes, fds) in reads {
        buf.extend_from_slice(bytes);
        let r = s.handle_input_fds(&mut buf, bytes.len(), fds, false);
        events.extend(std::iter::from_fn(|| s.poll_event_fds()));
        r?;
    }
    Ok(events)
}

fn counts(events: &[FdEvent]) -> Vec<usize> {
    events.iter().map(|e| e.fds).collect()
}

#[test]
fn a_flagged_frame_is_the_kind_with_its_high_bit_then_the_count() {
    // Notify "hi" with 2 fds: len 3 (count byte + 2), kind 0x85, count 2.
    assert_eq!(notify(b"hi", 2), [3, 0, 0, 0, 0x85, 2, b'h', b'i']);
    // Without fds the frame is exactly the version-1 frame.
    let mut plain = Vec::new();
    Message::Notify(Bytes::from_static(b"hi"))
        .encode(u32::MAX, &mut plain)
        .unwrap();
    assert_eq!(notify(b"hi", 0), plain);
    let frame = Frame {
        kind: 0x85,
        payload: Bytes::from_static(&[2, b'h', b'i']),
    };
    assert_eq!(
        Message::decode_with_fds(&frame),
        Ok((Message::Notify(Bytes::from_static(b"hi")), 2))
    );
    // The plain decoder does not know the flag.
    assert_eq!(Message::decode(&frame), Err(DecodeError::UnknownKind(0x85)));
}

#[test]
fn only_kinds_with_a_body_may_carry_fds() {
    for kind in [0x81u8, 0x86, 0x87] {
        let frame = Frame {
            kind,
            payload: Bytes::from_static(&[1, 0]),
        };
        assert!(matches!(
            Message::decode_with_fds(&frame),
            Err(DecodeError::FdsNotAllowed(_))
        ));
    }
    for kind in [0x80u8, 0x88, 0xff] {
        let frame = Frame {
            kind,
            payload: Bytes::from_static(&[1]),
        };
        assert_eq!(
            Message::decode_with_fds(&frame),
            Err(DecodeError::UnknownKind(kind))
        );
    }
    let mut out = Vec::new();
    let status = Message::Status("x".into());
    assert!(matches!(
        status.encode_with_fds(1, u32::MAX, &mut out),
        Err(EncodeError::TooManyFds { count: 1, max: 0 })
    ));
    assert!(out.is_empty());
}

#[test]
fn a_count_of_zero_or_over_253_is_invalid() {
    for count in [0u8, 254, 255] {
        let frame = Frame {
            kind: 0x85,
            payload: Bytes::from(vec![count]),
        };
        assert_eq!(
            Message::decode_with_fds(&frame),
            Err(DecodeError::BadFdCount(count))
        );
    }
    let frame = Frame {
        kind: 0x85,
        payload: Bytes::new(),
    };
    assert!(matches!(
        Message::decode_with_fds(&frame),
        Err(DecodeError::UnexpectedEnd { .. })
    ));
    let mut out = Vec::new();
    assert!(matches!(
        Message::Notify(Bytes::new()).encode_with_fds(MAX_FDS_PER_FRAME + 1, u32::MAX, &mut out),
        Err(EncodeError::TooManyFds {
            count: 254,
            max: 253
        })
    ));
    Message::Notify(Bytes::new())
        .encode_with_fds(MAX_FDS_PER_FRAME, u32::MAX, &mut out)
        .unwrap();
    assert_eq!(out, [1, 0, 0, 0, 0x85, 253]);
}

#[test]
fn fds_belong_to_the_last_frame_that_starts_in_their_read() {
    let mut wire = child_hello();
    wire.extend(notify(b"a", 0));
    wire.extend(notify(b"b", 3));
    let mut s = parent();
    let events = feed(&mut s, &[(&wire, 3)]).unwrap();
    assert_eq!(counts(&events), [0, 0, 3]);
    assert_eq!(s.fds_held(), 0);
}

#[test]
fn fds_wait_for_their_frame_to_be_whole() {
    let hello = child_hello();
    let frame = notify(b"body", 2);
    let mut s = parent();
    // The read that brings the fds holds only the frame's first two bytes.
    let events = feed(&mut s, &[(&hello, 0), (&frame[..2], 2)]).unwrap();
    assert_eq!(counts(&events), [0]);
    assert_eq!(s.fds_held(), 2);
    let mut buf = BytesMut::from(&frame[..2]);
    let mut s = parent();
    s.handle_input(&mut BytesMut::from(&hello[..])).unwrap();
    s.handle_input_fds(&mut buf, 2, 2, false).unwrap();
    buf.extend_from_slice(&frame[2..7]);
    s.handle_input_fds(&mut buf, 5, 0, false).unwrap();
    assert_eq!(s.fds_held(), 2);
    buf.extend_from_slice(&frame[7..]);
    s.handle_input_fds(&mut buf, frame.len() - 7, 0, false)
        .unwrap();
    assert_eq!(s.poll_event_fds().map(|e| e.fds), Some(0)); // Hello
    let e = s.poll_event_fds().unwrap();
    assert_eq!(e.fds, 2);
    assert!(matches!(e.message, Some(Message::Notify(b)) if &b[..] == b"body"));
    assert_eq!(s.fds_held(), 0);
}

#[test]
fn fewer_fds_than_announced_is_a_mismatch() {
    let frame = notify(b"x", 3);
    let err = feed(&mut parent(), &[(&child_hello(), 0), (&frame, 2)]).unwrap_err();
    assert_eq!(
        err,
        SessionError::FdCountMismatch {
            kind: "Notify",
            announced: 3,
            arrived: 2
        }
    );
    let err = feed(&mut parent(), &[(&child_hello(), 0), (&frame, 0)]).unwrap_err();
    assert!(matches!(
        err,
        SessionError::FdCountMismatch {
            announced: 3,
            arrived: 0,
            ..
        }
    ));
}

#[test]
fn more_fds_than_announced_is_a_mismatch() {
    let frame = notify(b"x", 3);
    let err = feed(&mut parent(), &[(&child_hello(), 0), (&frame, 4)]).unwrap_err();
    assert!(matches!(
        err,
        SessionError::FdCountMismatch {
            announced: 3,
            arrived: 4,
            ..
        }
    ));
}

#[test]
fn fds_on_a_frame_without_the_flag_are_a_mismatch() {
    let frame = notify(b"x", 0);
    let err = feed(&mut parent(), &[(&child_hello(), 0), (&frame, 1)]).unwrap_err();
    assert!(matches!(
        err,
        SessionError::FdCountMismatch {
            announced: 0,
            arrived: 1,
            ..
        }
    ));
}

#[test]
fn an_earlier_frame_in_the_read_that_announces_fds_got_none() {
    // Only the last frame that starts in a read can have its fds.
    let mut wire = child_hello();
    wire.extend(notify(b"a", 1));
    wire.extend(notify(b"b", 1));
    let err = feed(&mut parent(), &[(&wire, 1)]).unwrap_err();
    assert!(matches!(
        err,
        SessionError::FdCountMismatch {
            announced: 1,
            arrived: 0,
            ..
        }
    ));
}

#[test]
fn fds_with_bytes_where_no_frame_starts_belong_to_nothing() {
    let hello = child_hello();
    let frame = notify(b"a long enough body", 0);
    let err = feed(
        &mut parent(),
        &[(&hello, 0), (&frame[..3], 0), (&frame[3..10], 7)],
    )
    .unwrap_err();
    assert_eq!(err, SessionError::UnexpectedFds(7));
    // No bytes at all.
    let err = feed(&mut parent(), &[(&hello, 0), (b"", 1)]).unwrap_err();
    assert_eq!(err, SessionError::UnexpectedFds(1));
    // Nothing follows an incomplete header's frame start either.
    let err = feed(
        &mut parent(),
        &[(&hello, 0), (&frame[..2], 0), (&frame[2..4], 1)],
    )
    .unwrap_err();
    assert_eq!(err, SessionError::UnexpectedFds(1));
}

#[test]
fn a_truncated_control_message_is_an_error() {
    let mut s = parent();
    let mut buf = BytesMut::from(&child_hello()[..]);
    let n = buf.len();
    assert_eq!(
        s.handle_input_fds(&mut buf, n, 0, true),
        Err(SessionError::FdsTruncated)
    );
    // Sticky, like every error from input.
    assert_eq!(
        s.handle_input(&mut BytesMut::new()),
        Err(SessionError::FdsTruncated)
    );
}

#[test]
fn fds_of_a_frame_the_session_consumes_are_handed_back_to_close() {
    let mut ping = Vec::new();
    Message::Request {
        id: 5,
        body: RequestBody::Ping,
    }
    .encode_with_fds(2, u32::MAX, &mut ping)
    .unwrap();
    let mut s = parent();
    let events = feed(&mut s, &[(&child_hello(), 0), (&ping, 2)]).unwrap();
    assert_eq!(
        events[1],
        FdEvent {
            message: None,
            fds: 2
        }
    );
    // And `poll_event` alone never shows it.
    let mut s = parent();
    let mut buf = BytesMut::from(&child_hello()[..]);
    buf.extend_from_slice(&ping);
    let n = buf.len();
    s.handle_input_fds(&mut buf, n, 2, false).unwrap();
    assert!(matches!(s.poll_event(), Some(Message::Hello(_))));
    assert_eq!(s.poll_event(), None);
}

#[test]
fn a_session_sends_what_it_announces() {
    let mut child = Session::new(Role::Child, 200, SessionConfig::default());
    child.send_ready_with_fds(&Ready::new(200), 4).unwrap();
    let id = child.send_app_request_with_fds(&7u8, 1).unwrap();
    child.send_notify_with_fds(&(), 253).unwrap();
    assert!(matches!(
        child.send_notify_with_fds(&(), 254),
        Err(SessionError::Encode(EncodeError::TooManyFds { .. }))
    ));
    let mut wire = Vec::new();
    let _ = child.poll_transmit(&mut wire);
    // Frames: Hello, Ready (4), Request (1), Notify (253).
    let mut buf = BytesMut::from(&wire[..]);
    let mut p = parent();
    let mut got = Vec::new();
    // Deliver as the kernel would: each flagged frame starts a read that
    // ends with it.
    let mut kinds = Vec::new();
    while !buf.is_empty() {
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize + 5;
        let kind = buf[4];
        kinds.push(kind);
        let fds = if kind & FD_FLAG != 0 {
            usize::from(buf[5])
        } else {
            0
        };
        let chunk = buf.split_to(len);
        got.push((chunk.to_vec(), fds));
    }
    assert_eq!(kinds, [0x01, 0x82, 0x83, 0x85]);
    let reads: Vec<(&[u8], usize)> = got.iter().map(|(b, n)| (&b[..], *n)).collect();
    let events = feed(&mut p, &reads).unwrap();
    assert_eq!(counts(&events), [0, 4, 1, 253]);
    assert!(matches!(&events[2].message, Some(Message::Request { id: got, .. }) if *got == id));
}

#[test]
fn a_frame_not_yet_whole_is_checked_as_soon_as_its_count_is_here() {
    // A hostile sender's fd-carrying sendmsg that starts mid-frame is glued
    // by the kernel to the bytes before it: the fds then seem to belong to
    // the frame that started earlier in the read. Its kind byte already
    // says it carries none, so the error comes at once, not when (if ever)
    // the frame is whole.
    let frame = notify(&[7; 100], 0);
    let mut read = child_hello();
    read.extend_from_slice(&frame[..40]);
    let err = feed(&mut parent(), &[(&read, 1)]).unwrap_err();
    assert_eq!(
        err,
        SessionError::FdCountMismatch {
            kind: "Notify",
            announced: 0,
            arrived: 1
        }
    );
    // A flagged frame whose count byte disagrees, before its body.
    let frame = notify(&[7; 100], 5);
    let err = feed(&mut parent(), &[(&child_hello(), 0), (&frame[..6], 4)]).unwrap_err();
    assert!(matches!(
        err,
        SessionError::FdCountMismatch {
            announced: 5,
            arrived: 4,
            ..
        }
    ));
    // The header in one read without fds, its count byte in the next with
    // them: no frame starts in that read, so they belong to nothing.
    let err = feed(
        &mut parent(),
        &[(&child_hello(), 0), (&frame[..5], 0), (&frame[5..6], 5)],
    )
    .unwrap_err();
    assert_eq!(err, SessionError::UnexpectedFds(5));
}
