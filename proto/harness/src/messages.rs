//! The `message_decode` target: one frame through [`Message::decode`], the
//! canonical re-encoding of what decodes, and the classification of what
//! does not.

use std::fmt;

use bytes::Bytes;
use readyfd_proto::codec::{decode_body, encode_body};
use readyfd_proto::{
    DecodeError, FD_FLAG, Frame, Goodbye, HEADER_LEN, Kind, MAGIC, MAX_FDS_PER_FRAME, Message,
    PROTOCOL_VERSION, Ready, RequestBody, ResponseBody, Role,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::alloc::{DECODE_EXPANSION, LimitGuard, SLACK};

/// Fuzzes [`Message::decode`] and [`Message::encode`]: `data[0]` is a
/// frame's kind byte and the rest its payload. Asserts:
///
/// - a decoded message re-encodes, and that encoding decodes to the same
///   message;
/// - the encoding is canonical: re-encoding gives back the original payload
///   byte for byte. The one exception is a `Hello` of another protocol
///   version, of which only the magic and the version are read (the rest of
///   its layout belongs to that version), so only those six bytes must
///   match. (At the value level one more thing is lost: an IPv6 address's
///   flow info and scope id are not carried. The decoder never produces
///   them, so the bytes stay canonical);
/// - errors are classified (never the catch-all `Invalid`) and consistent:
///   an unknown kind is `UnknownKind`, `Notify` never fails, an empty
///   payload of any other kind is a truncation, a payload with trailing
///   bytes decodes once they are cut off, `BadMagic` shows the bytes found;
/// - application bodies, decoded as a few readyfd types, never panic and
///   re-encode canonically when they decode;
/// - [`Message::decode_with_fds`] agrees: without [`FD_FLAG`] it is
///   `decode` with a count of 0; with it, a frame that decodes announces 1
///   to 253 fds, is the inner frame's message, and re-encodes with that
///   count to the same bytes; a frame that does not gets the error its
///   flag, count byte or inner frame calls for.
pub fn message_decode(data: &[u8]) {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let _limit = LimitGuard::set(DECODE_EXPANSION * data.len() + SLACK);
    let frame = Frame {
        kind,
        payload: Bytes::copy_from_slice(payload),
    };
    check_frame(&frame);
    check_fd_frame(&frame);
}

/// The `decode_with_fds` half of [`message_decode`].
fn check_fd_frame(frame: &Frame) {
    let got = Message::decode_with_fds(frame);
    if frame.kind & FD_FLAG == 0 {
        assert_eq!(got, Message::decode(frame).map(|m| (m, 0)));
        return;
    }
    let base = Kind::from_byte(frame.kind & !FD_FLAG);
    let inner = || Frame {
        kind: frame.kind & !FD_FLAG,
        payload: frame.payload.slice(1..),
    };
    match got {
        Ok((m, n)) => {
            assert!((1..=MAX_FDS_PER_FRAME).contains(&n), "{n} fds");
            assert_eq!(usize::from(frame.payload[0]), n);
            assert!(base.is_ok_and(Kind::may_carry_fds));
            assert_eq!(Message::decode(&inner()).as_ref(), Ok(&m));
            let mut wire = Vec::new();
            m.encode_with_fds(n, u32::MAX, &mut wire)
                .unwrap_or_else(|e| panic!("{m:?} with {n} fds does not re-encode: {e}"));
            assert_eq!(wire[4], frame.kind);
            assert_eq!(wire[HEADER_LEN..], frame.payload[..], "not canonical");
        }
        Err(e) => match base {
            Err(_) => assert_eq!(e, DecodeError::UnknownKind(frame.kind)),
            Ok(k) if !k.may_carry_fds() => {
                assert_eq!(e, DecodeError::FdsNotAllowed(k.name()))
            }
            Ok(_) => match frame.payload.first() {
                None => assert!(matches!(e, DecodeError::UnexpectedEnd { .. }), "{e:?}"),
                Some(&c) if c == 0 || usize::from(c) > MAX_FDS_PER_FRAME => {
                    assert_eq!(e, DecodeError::BadFdCount(c))
                }
                Some(_) => assert_eq!(Err(e), Message::decode(&inner())),
            },
        },
    }
}

fn check_frame(frame: &Frame) -> Option<Message> {
    let m = match Message::decode(frame) {
        Ok(m) => m,
        Err(e) => {
            check_decode_error(frame, &e);
            return None;
        }
    };
    assert_eq!(m.kind() as u8, frame.kind);
    let mut wire = Vec::new();
    m.encode(u32::MAX, &mut wire)
        .unwrap_or_else(|e| panic!("decoded {m:?} does not re-encode: {e}"));
    let len = u32::from_le_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
    assert_eq!(len + HEADER_LEN, wire.len(), "header length");
    let again = Message::decode(&Frame {
        kind: wire[4],
        payload: Bytes::copy_from_slice(&wire[HEADER_LEN..]),
    });
    assert_eq!(again.as_ref(), Ok(&m), "decode(encode(m)) != m");
    match &m {
        Message::Hello(h) if h.version != PROTOCOL_VERSION => {
            assert_eq!(wire[HEADER_LEN..HEADER_LEN + 6], frame.payload[..6]);
            assert_eq!((h.pid, h.role, h.max_frame), (0, Role::Parent, 0));
        }
        _ => assert_eq!(
            wire[HEADER_LEN..],
            frame.payload[..],
            "encoding of {m:?} is not canonical"
        ),
    }
    match &m {
        Message::Request {
            body: RequestBody::App(b),
            ..
        }
        | Message::Response {
            body: ResponseBody::App(b),
            ..
        }
        | Message::Notify(b) => {
            assert!(
                frame.payload.ends_with(b),
                "an application body is the payload's tail"
            );
            poke_body::<String>(b);
            poke_body::<Ready>(b);
            poke_body::<Goodbye>(b);
            // No `Vec`: serde pre-allocates up to 1 MiB for a claimed
            // count (see codec.rs), which `app_body` covers instead.
            poke_body::<(u8, Option<String>, [u8; 3], bool)>(b);
        }
        _ => {}
    }
    Some(m)
}

fn check_decode_error(frame: &Frame, e: &DecodeError) {
    let p = &frame.payload;
    let kind = match Kind::from_byte(frame.kind) {
        Ok(kind) => kind,
        Err(_) => {
            assert_eq!(*e, DecodeError::UnknownKind(frame.kind));
            return;
        }
    };
    assert!(
        kind != Kind::Notify,
        "a Notify payload is opaque, yet it failed: {e:?}"
    );
    if p.is_empty() {
        assert!(
            matches!(e, DecodeError::UnexpectedEnd { .. }),
            "empty {kind:?} payload gave {e:?}, not a truncation"
        );
    }
    match e {
        DecodeError::UnknownKind(_) => panic!("known kind {kind:?} reported unknown"),
        DecodeError::TrailingBytes { extra } => {
            assert!(
                *extra > 0 && *extra < p.len(),
                "{e:?} of a {}-byte payload",
                p.len()
            );
            let cut = Frame {
                kind: frame.kind,
                payload: p.slice(..p.len() - extra),
            };
            if let Err(e2) = Message::decode(&cut) {
                panic!("{e:?}, yet without them: {e2:?}");
            }
        }
        DecodeError::BadMagic(found) => {
            assert_eq!(kind, Kind::Hello);
            assert_eq!(found[..], p[..4]);
            assert_ne!(*found, MAGIC);
        }
        DecodeError::Invalid(what) => panic!("unclassified decode error: {what}"),
        DecodeError::UnexpectedEnd { .. }
        | DecodeError::InvalidUtf8
        | DecodeError::InvalidTag { .. }
        | DecodeError::LimitExceeded => {}
        e => panic!("a decode error the harness does not know: {e:?}"),
    }
}

/// Decodes `body` as a `T`; if it decodes, its encoding must be `body`.
fn poke_body<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(body: &[u8]) {
    if let Ok(v) = decode_body::<T>(body) {
        let enc = encode_body(&v, usize::MAX).expect("a decoded body re-encodes");
        assert_eq!(enc[..], body[..], "body encoding of {v:?} is not canonical");
    }
}
