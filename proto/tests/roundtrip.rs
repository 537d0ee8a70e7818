//! Property tests: every message survives encode/decode, however the byte
//! stream is split, and no input makes a decoder panic.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use readyfd_proto::codec::{decode_body, encode_body};
use readyfd_proto::{
    Address, DEFAULT_MAX_FRAME, EncodeError, Endpoint, Frame, FrameDecoder, Goodbye, GoodbyeReason,
    HEADER_LEN, Hello, MAGIC, Message, PROTOCOL_VERSION, Ready, RemoteError, RemoteErrorKind,
    RequestBody, ResponseBody, Role,
};

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(ip.into(), port))),
        // flowinfo and scope id are not carried (PROTOCOL.md): generate them
        // as zero here, and see `ipv6_flowinfo_and_scope_are_not_carried`.
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(
            ip.into(),
            port,
            0,
            0
        ))),
    ]
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, including NUL, newlines and astral characters.
    proptest::string::string_regex("(?s).{0,40}").unwrap()
}

fn address() -> impl Strategy<Value = Address> {
    prop_oneof![
        socket_addr().prop_map(Address::Tcp),
        socket_addr().prop_map(Address::Udp),
        text().prop_map(Address::Unix),
        text().prop_map(Address::Text),
    ]
}

fn ready() -> impl Strategy<Value = Ready> {
    (
        any::<u32>(),
        vec((text(), address()), 0..6),
        option::of(text()),
    )
        .prop_map(|(pid, addrs, status)| {
            let mut r = Ready::new(pid);
            r.addresses = addrs
                .into_iter()
                .map(|(name, address)| Endpoint::new(name, address))
                .collect();
            r.status = status;
            r
        })
}

fn body() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..200).prop_map(Bytes::from)
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Parent), Just(Role::Child)]
}

fn remote_error_kind() -> impl Strategy<Value = RemoteErrorKind> {
    prop_oneof![
        Just(RemoteErrorKind::Unsupported),
        Just(RemoteErrorKind::BadRequest),
        Just(RemoteErrorKind::Failed),
        Just(RemoteErrorKind::ShuttingDown),
        Just(RemoteErrorKind::Dropped),
    ]
}

fn goodbye_reason() -> impl Strategy<Value = GoodbyeReason> {
    prop_oneof![
        Just(GoodbyeReason::Done),
        Just(GoodbyeReason::ShuttingDown),
        Just(GoodbyeReason::ProtocolError),
        Just(GoodbyeReason::VersionMismatch),
    ]
}

/// Every message of version 1 (a `Hello` of another version is not carried
/// whole: see `hello_of_another_version_carries_only_its_version`).
fn message() -> impl Strategy<Value = Message> {
    let request = prop_oneof![
        Just(RequestBody::Ping),
        option::of(any::<u64>()).prop_map(|grace_ms| RequestBody::Shutdown { grace_ms }),
        body().prop_map(RequestBody::App),
    ];
    let response = prop_oneof![
        Just(ResponseBody::Ok),
        body().prop_map(ResponseBody::App),
        (remote_error_kind(), text())
            .prop_map(|(kind, message)| ResponseBody::Error(RemoteError { kind, message })),
    ];
    prop_oneof![
        (any::<u32>(), role(), any::<u32>()).prop_map(|(pid, role, max_frame)| Message::Hello(
            Hello {
                version: PROTOCOL_VERSION,
                pid,
                role,
                max_frame
            }
        )),
        ready().prop_map(Message::Ready),
        (any::<u64>(), request).prop_map(|(id, body)| Message::Request { id, body }),
        (any::<u64>(), response).prop_map(|(id, body)| Message::Response { id, body }),
        body().prop_map(Message::Notify),
        text().prop_map(Message::Status),
        (goodbye_reason(), text())
            .prop_map(|(reason, message)| Message::Goodbye(Goodbye { reason, message })),
    ]
}

fn encode(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(DEFAULT_MAX_FRAME, &mut out).expect("encodes");
    out
}

/// Decodes a stream fed in the given chunks; every chunk boundary is a split.
fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Message> {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(f) = dec.decode(&mut buf).expect("valid stream") {
            out.push(Message::decode(&f).expect("valid message"));
        }
    }
    assert!(
        dec.decode_eof(&mut buf)
            .expect("ends on a frame boundary")
            .is_none()
    );
    out
}

proptest! {
    #[test]
    fn decode_of_encode_is_identity(m in message()) {
        let wire = encode(&m);
        let len = u32::from_le_bytes(wire[..4].try_into().unwrap()) as usize;
        prop_assert_eq!(len + HEADER_LEN, wire.len());
        prop_assert_eq!(wire[4], m.kind() as u8);
        let frame = Frame { kind: wire[4], payload: Bytes::copy_from_slice(&wire[HEADER_LEN..]) };
        prop_assert_eq!(Message::decode(&frame), Ok(m));
    }

    #[test]
    fn any_split_decodes_like_the_whole_stream(
        msgs in vec(message(), 1..8),
        cuts in vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let wire: Vec<u8> = msgs.iter().flat_map(encode).collect();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut at = 0;
        for p in points {
            chunks.push(&wire[at..p]);
            at = p;
        }
        chunks.push(&wire[at..]);
        let whole = decode_chunks([&wire[..]]);
        prop_assert_eq!(&whole, &msgs);
        prop_assert_eq!(decode_chunks(chunks), whole.clone());
        prop_assert_eq!(decode_chunks(wire.chunks(1)), whole);
    }

    #[test]
    fn encode_respects_the_maximum(m in message(), max in 0u32..300) {
        let full = encode(&m);
        let payload = full.len() - HEADER_LEN;
        let mut out = vec![0xAA; 3];
        match m.encode(max, &mut out) {
            Ok(()) => {
                prop_assert!(payload <= max as usize);
                prop_assert_eq!(&out[3..], &full[..]);
            }
            Err(EncodeError::TooLarge { max: m2, .. }) => {
                prop_assert!(payload > max as usize);
                prop_assert_eq!(m2, max as usize);
                prop_assert_eq!(out, vec![0xAA; 3], "a failed encode leaves the buffer as it was");
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn hello_of_another_version_carries_only_its_version(
        version in any::<u16>(),
        pid in any::<u32>(),
        role in role(),
        max_frame in any::<u32>(),
        tail in vec(any::<u8>(), 0..20),
    ) {
        let mut payload = MAGIC.to_vec();
        payload.extend(version.to_le_bytes());
        payload.extend(pid.to_le_bytes());
        payload.extend((role as u32).to_le_bytes());
        payload.extend(max_frame.to_le_bytes());
        let frame = Frame { kind: 1, payload: Bytes::from(payload.clone()) };
        let got = Message::decode(&frame);
        if version == PROTOCOL_VERSION {
            prop_assert_eq!(got, Ok(Message::Hello(Hello { version, pid, role, max_frame })));
        } else {
            let placeholder = Message::Hello(Hello { version, pid: 0, role: Role::Parent, max_frame: 0 });
            prop_assert_eq!(got, Ok(placeholder.clone()));
            // Whatever follows the version, a later layout included.
            payload.truncate(6);
            payload.extend(tail);
            prop_assert_eq!(Message::decode(&Frame { kind: 1, payload: payload.into() }), Ok(placeholder));
        }
    }

    #[test]
    fn ipv6_flowinfo_and_scope_are_not_carried(ip in any::<[u8; 16]>(), port: u16, flow: u32, scope: u32) {
        let sent = SocketAddr::V6(SocketAddrV6::new(ip.into(), port, flow, scope));
        let m = Message::Ready(Ready::new(1).address("a", sent));
        let wire = encode(&m);
        let frame = Frame { kind: wire[4], payload: Bytes::copy_from_slice(&wire[HEADER_LEN..]) };
        let Ok(Message::Ready(r)) = Message::decode(&frame) else { panic!() };
        let want = SocketAddr::V6(SocketAddrV6::new(ip.into(), port, 0, 0));
        prop_assert_eq!(r.get("a"), Some(&Address::Tcp(want)));
    }

    #[test]
    fn message_decode_never_panics(kind: u8, payload in vec(any::<u8>(), 0..300)) {
        let _ = Message::decode(&Frame { kind, payload: payload.into() });
    }

    #[test]
    fn decode_body_never_panics(bytes in vec(any::<u8>(), 0..300)) {
        let _ = decode_body::<String>(&bytes);
        let _ = decode_body::<Ready>(&bytes);
        let _ = decode_body::<Goodbye>(&bytes);
        let _ = decode_body::<RemoteError>(&bytes);
        let _ = decode_body::<Vec<u32>>(&bytes);
        let _ = decode_body::<(u64, Option<bool>, char)>(&bytes);
    }

    #[test]
    fn decode_body_of_encode_body_is_identity(r in ready(), s in text(), n: u64) {
        let bytes = encode_body(&(r.clone(), s.clone(), n), usize::MAX).unwrap();
        prop_assert_eq!(decode_body::<(Ready, String, u64)>(&bytes), Ok((r, s, n)));
    }
}

#[test]
fn encode_body_respects_its_limit() {
    let s = "x".repeat(100);
    assert_eq!(encode_body(&s, 108).map(|b| b.len()), Ok(108));
    assert!(matches!(
        encode_body(&s, 107),
        Err(EncodeError::TooLarge { .. })
    ));
}
