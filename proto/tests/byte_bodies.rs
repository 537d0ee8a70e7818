//! Raw byte bodies (PROTOCOL.md, section 4, "Application bodies"): the
//! `*_bytes` senders write exactly the frames of the messages whose `App`
//! body is those bytes, with no serde work; a received body is a slice of
//! the frame it came in, never a copy; and a serde `Vec<u8>` is the same
//! wire as `serde_bytes`.

use bytes::{Bytes, BytesMut};
use readyfd_proto::codec::{decode_body, encode_body};
use readyfd_proto::{
    EncodeError, Hello, Message, PROTOCOL_VERSION, RequestBody, ResponseBody, Role, Session,
    SessionConfig, SessionError,
};

const HELLO_FRAME: usize = 23;

fn bodies() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"hi".to_vec(),
        (0..4096u32).map(|i| (i * 7) as u8).collect(),
    ]
}

fn session(role: Role) -> Session {
    Session::new(role, 100, SessionConfig::default())
}

/// What `s` queued, without the `Hello` it queues first.
fn sent_after_hello(s: &mut Session) -> Vec<u8> {
    let mut wire = Vec::new();
    assert!(s.poll_transmit(&mut wire));
    assert_eq!(wire[4], 0x01, "the first frame is the Hello");
    wire.split_off(HELLO_FRAME)
}

fn frame(m: &Message, fds: usize) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode_with_fds(fds, u32::MAX, &mut out).unwrap();
    out
}

fn hello(role: Role, max_frame: u32) -> Vec<u8> {
    frame(
        &Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            pid: 7,
            role,
            max_frame,
        }),
        0,
    )
}

#[test]
fn a_byte_request_is_the_app_request_of_those_bytes() {
    for body in bodies() {
        for fds in [0, 2] {
            let mut s = session(Role::Child);
            let id = s.send_app_request_bytes(&body, fds).unwrap();
            let want = frame(
                &Message::Request {
                    id,
                    body: RequestBody::App(Bytes::from(body.clone())),
                },
                fds,
            );
            assert_eq!(
                sent_after_hello(&mut s),
                want,
                "{} bytes, {fds} fds",
                body.len()
            );
        }
    }
}

#[test]
fn a_byte_notification_is_the_notify_of_those_bytes() {
    for body in bodies() {
        for fds in [0, 3] {
            let mut s = session(Role::Parent);
            s.send_notify_bytes(&body, fds).unwrap();
            let want = frame(&Message::Notify(Bytes::from(body.clone())), fds);
            assert_eq!(
                sent_after_hello(&mut s),
                want,
                "{} bytes, {fds} fds",
                body.len()
            );
        }
    }
}

#[test]
fn a_byte_response_is_the_app_response_of_those_bytes() {
    for body in bodies() {
        for fds in [0, 1] {
            let mut parent = session(Role::Parent);
            let mut input = BytesMut::new();
            input.extend_from_slice(&hello(Role::Child, 1 << 20));
            input.extend_from_slice(&frame(
                &Message::Request {
                    id: 9,
                    body: RequestBody::App(Bytes::new()),
                },
                0,
            ));
            parent.handle_input(&mut input).unwrap();
            while parent.poll_event().is_some() {}
            parent.send_app_response_bytes(9, &body, fds).unwrap();
            let want = frame(
                &Message::Response {
                    id: 9,
                    body: ResponseBody::App(Bytes::from(body.clone())),
                },
                fds,
            );
            assert_eq!(sent_after_hello(&mut parent), want);
            // Answered: a second answer is refused.
            assert!(matches!(
                parent.send_app_response_bytes(9, &body, 0),
                Err(SessionError::NotAllowed(_))
            ));
        }
    }
}

#[test]
fn a_byte_body_over_the_peer_maximum_is_refused_and_nothing_is_queued() {
    let mut s = session(Role::Parent);
    let mut input = BytesMut::from(&hello(Role::Child, 4096)[..]);
    s.handle_input(&mut input).unwrap();
    s.send_hello();
    let mut wire = Vec::new();
    let _ = s.poll_transmit(&mut wire);
    // Request head: id (8) and tag (4); 4096 - 12 bytes fit exactly.
    let fits = vec![1u8; 4096 - 12];
    s.send_app_request_bytes(&fits, 0).unwrap();
    let _ = s.poll_transmit(&mut wire);
    let big = vec![1u8; 4096 - 11];
    for r in [
        s.send_app_request_bytes(&big, 0).map(|_| ()),
        s.send_notify_bytes(&vec![0u8; 4097], 0),
    ] {
        assert!(
            matches!(r, Err(SessionError::Encode(EncodeError::TooLarge { .. }))),
            "{r:?}"
        );
    }
    assert!(!s.poll_transmit(&mut wire), "a refused body queues nothing");
}

/// The body of a received `App` request or `Notify` points into the read
/// buffer the frame was decoded from: no byte of it was copied.
#[test]
fn a_received_byte_body_is_a_slice_of_the_read_buffer() {
    let body: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    let mut wire = hello(Role::Child, 1 << 20);
    let request_at = wire.len();
    wire.extend_from_slice(&frame(
        &Message::Request {
            id: 1,
            body: RequestBody::App(Bytes::from(body.clone())),
        },
        0,
    ));
    let notify_at = wire.len();
    wire.extend_from_slice(&frame(&Message::Notify(Bytes::from(body.clone())), 2));
    let mut buf = BytesMut::with_capacity(64 * 1024);
    buf.extend_from_slice(&wire);
    let base = buf.as_ptr() as usize;
    let mut s = session(Role::Parent);
    s.handle_input_fds(&mut buf, wire.len(), 2, false).unwrap();
    let mut got = Vec::new();
    while let Some(e) = s.poll_event_fds() {
        got.extend(e.message);
    }
    let [
        Message::Hello(_),
        Message::Request {
            body: RequestBody::App(req),
            ..
        },
        Message::Notify(note),
    ] = &got[..]
    else {
        panic!("{got:?}");
    };
    assert_eq!((&req[..], &note[..]), (&body[..], &body[..]));
    // Header (5), then id and tag (12) for the request; header (5) and
    // the count byte (1) for the flagged notification.
    assert_eq!(req.as_ptr() as usize, base + request_at + 5 + 12);
    assert_eq!(note.as_ptr() as usize, base + notify_at + 5 + 1);
}

/// PROTOCOL.md section 3: a `Vec<u8>` is a `u64` count then the bytes,
/// which is also what `serde_bytes` writes; so either side may switch to
/// `serde_bytes` (or to raw bodies holding that encoding) without the
/// other noticing.
#[test]
fn a_vec_of_bytes_and_serde_bytes_are_the_same_wire() {
    for body in bodies() {
        let plain = encode_body(&body, usize::MAX).unwrap();
        let fast = encode_body(serde_bytes::Bytes::new(&body), usize::MAX).unwrap();
        assert_eq!(plain, fast);
        assert_eq!(&plain[..8], &(body.len() as u64).to_le_bytes());
        let back: serde_bytes::ByteBuf = decode_body(&plain).unwrap();
        assert_eq!(back.into_vec(), body);
        let back: Vec<u8> = decode_body(&fast).unwrap();
        assert_eq!(back, body);
    }
}

/// A raw body carries no length: a serde peer reads it as a type whose
/// encoding is those bytes, a fixed-size array for one, or the unit type
/// for an empty body; and a serde body is received raw as its encoding.
#[test]
fn raw_bodies_and_serde_bodies_meet_where_the_encodings_do() {
    let mut a = session(Role::Child);
    let mut b = session(Role::Child);
    a.send_app_request_bytes(&encode_body(&("x", 5u32), usize::MAX).unwrap(), 0)
        .unwrap();
    b.send_app_request(&("x", 5u32)).unwrap();
    assert_eq!(sent_after_hello(&mut a), sent_after_hello(&mut b));
    assert_eq!(decode_body::<[u8; 3]>(b"abc").unwrap(), *b"abc");
    decode_body::<()>(b"").unwrap();
    assert!(decode_body::<serde_bytes::ByteBuf>(b"abc").is_err());
}

/// The example of PROTOCOL.md section 4, "Application bodies".
#[test]
fn the_protocol_example_of_a_byte_body_and_a_typed_one() {
    let mut raw = session(Role::Child);
    assert_eq!(raw.send_app_request_bytes(b"hi", 0).unwrap(), 1);
    let mut typed = session(Role::Child);
    assert_eq!(typed.send_app_request(&b"hi".to_vec()).unwrap(), 1);
    let head = [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
    let payload = |wire: Vec<u8>| wire[5..].to_vec();
    assert_eq!(
        payload(sent_after_hello(&mut raw)),
        [&head[..], b"hi"].concat()
    );
    assert_eq!(
        payload(sent_after_hello(&mut typed)),
        [&head[..], &[2, 0, 0, 0, 0, 0, 0, 0], b"hi"].concat()
    );
}

/// The `*_split` senders leave the body to the driver: what they append,
/// followed by the body, is byte for byte what the copying sender queues
/// (everything queued before it included: here the `Hello`), and the
/// session's state moves as it does.
#[test]
fn a_split_frame_and_its_body_are_the_frame_the_copying_sender_queues() {
    for body in bodies() {
        for fds in [0, 2] {
            let mut copied = session(Role::Child);
            let id = copied.send_app_request_bytes(&body, fds).unwrap();
            let mut want = Vec::new();
            assert!(copied.poll_transmit(&mut want));

            let mut split = session(Role::Child);
            let mut got = Vec::new();
            let split_id = split
                .send_app_request_bytes_split(body.len(), fds, &mut got)
                .unwrap();
            assert_eq!(split_id, id);
            assert_eq!(split.transmit_len(), 0, "nothing is left queued");
            got.extend_from_slice(&body);
            assert_eq!(got, want, "request of {} bytes, {fds} fds", body.len());
            assert_eq!(split.outstanding().collect::<Vec<_>>(), vec![id]);

            let mut copied = session(Role::Parent);
            copied.send_notify_bytes(&body, fds).unwrap();
            let mut want = Vec::new();
            assert!(copied.poll_transmit(&mut want));
            let mut split = session(Role::Parent);
            let mut got = Vec::new();
            split
                .send_notify_bytes_split(body.len(), fds, &mut got)
                .unwrap();
            got.extend_from_slice(&body);
            assert_eq!(got, want, "notification of {} bytes", body.len());
        }
    }
}

#[test]
fn a_split_response_is_the_response_the_copying_sender_queues() {
    let asked = |s: &mut Session| {
        let mut input = BytesMut::new();
        input.extend_from_slice(&hello(Role::Child, 1 << 20));
        input.extend_from_slice(&frame(
            &Message::Request {
                id: 9,
                body: RequestBody::App(Bytes::new()),
            },
            0,
        ));
        s.handle_input(&mut input).unwrap();
        while s.poll_event().is_some() {}
    };
    for body in bodies() {
        let mut copied = session(Role::Parent);
        asked(&mut copied);
        copied.send_app_response_bytes(9, &body, 1).unwrap();
        let mut want = Vec::new();
        assert!(copied.poll_transmit(&mut want));

        let mut split = session(Role::Parent);
        asked(&mut split);
        let mut got = Vec::new();
        split
            .send_app_response_bytes_split(9, body.len(), 1, &mut got)
            .unwrap();
        got.extend_from_slice(&body);
        assert_eq!(got, want, "{} bytes", body.len());
        // Answered: a second answer is refused, split or not.
        assert!(matches!(
            split.send_app_response_bytes_split(9, 0, 0, &mut got),
            Err(SessionError::NotAllowed(_))
        ));
    }
}

/// A split frame is held to the peer's maximum like a copied one, body
/// included, and a refused one appends nothing.
#[test]
fn a_split_body_over_the_peer_maximum_is_refused_and_nothing_is_appended() {
    let mut s = session(Role::Parent);
    let mut input = BytesMut::from(&hello(Role::Child, 4096)[..]);
    s.handle_input(&mut input).unwrap();
    let mut wire = Vec::new();
    s.send_app_request_bytes_split(4096 - 12, 0, &mut wire)
        .unwrap();
    let before = wire.len();
    for r in [
        s.send_app_request_bytes_split(4096 - 11, 0, &mut wire)
            .map(|_| ()),
        s.send_notify_bytes_split(4097, 0, &mut wire),
        s.send_app_request_bytes_split(usize::MAX, 0, &mut wire)
            .map(|_| ()),
    ] {
        assert!(
            matches!(r, Err(SessionError::Encode(EncodeError::TooLarge { .. }))),
            "{r:?}"
        );
    }
    assert_eq!(wire.len(), before, "a refused body appends nothing");
    assert!(!s.poll_transmit(&mut wire), "and queues nothing");
}

/// A `serde_bytes::ByteBuf` body decodes by one copy out of the payload
/// (not into a zero-filled buffer of the claimed length first), and means
/// exactly what it did: the same values, the same errors for a short or
/// hostile claim and for trailing bytes, inside other types too.
#[test]
fn a_byte_buffer_body_decodes_as_before_from_every_input() {
    use serde_bytes::ByteBuf;

    for body in bodies() {
        let wire = encode_body(&ByteBuf::from(body.clone()), usize::MAX).unwrap();
        assert_eq!(decode_body::<ByteBuf>(&wire).unwrap().into_vec(), body);
        let nested = (
            7u32,
            ByteBuf::from(body.clone()),
            Some(ByteBuf::from(body.clone())),
        );
        let wire = encode_body(&nested, usize::MAX).unwrap();
        assert_eq!(
            decode_body::<(u32, ByteBuf, Option<ByteBuf>)>(&wire).unwrap(),
            nested
        );
    }
    // A claim of 2^40 bytes in a 20-byte body: refused before anything is
    // allocated for it.
    let mut hostile = (1u64 << 40).to_le_bytes().to_vec();
    hostile.extend_from_slice(&[0u8; 12]);
    assert!(matches!(
        decode_body::<ByteBuf>(&hostile),
        Err(readyfd_proto::DecodeError::LimitExceeded)
    ));
    // A claim one byte beyond the body.
    let mut short = 13u64.to_le_bytes().to_vec();
    short.extend_from_slice(&[1u8; 12]);
    assert!(matches!(
        decode_body::<ByteBuf>(&short),
        Err(readyfd_proto::DecodeError::UnexpectedEnd { .. })
    ));
    // A byte left over.
    let mut long = 11u64.to_le_bytes().to_vec();
    long.extend_from_slice(&[1u8; 12]);
    assert!(matches!(
        decode_body::<ByteBuf>(&long),
        Err(readyfd_proto::DecodeError::TrailingBytes { extra: 1 })
    ));
}
