//! The Rust implementation against `vectors.json`, in both directions.
//!
//! The vectors are computed from PROTOCOL.md by `tests/gen_vectors.py` with
//! Python's `struct`, not by this crate, so agreement here means two
//! encoders written from the spec agree.

use std::collections::BTreeSet;

use bytes::BytesMut;
use readyfd_proto::{
    Address, DEFAULT_MAX_FRAME, DecodeError, Eof, Frame, FrameDecoder, FrameError, Goodbye,
    GoodbyeReason, Hello, Message, Ready, RemoteError, RemoteErrorKind, RequestBody, ResponseBody,
    Role, Session, SessionConfig, SessionError,
};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("../vectors.json")).expect("vectors.json parses")
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().unwrap_or_else(|| panic!("no list {key}"))
}

fn hex(s: &Value) -> Vec<u8> {
    let s = s.as_str().expect("hex string");
    assert!(s.len() % 2 == 0, "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn text(v: &Value) -> String {
    v.as_str().expect("string").to_string()
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// The one entry of an externally tagged JSON enum: `{"Tag": value}` or
/// `"Tag"`.
fn tagged(v: &Value) -> (&str, &Value) {
    match v {
        Value::String(s) => (s.as_str(), &Value::Null),
        Value::Object(m) if m.len() == 1 => {
            let (k, v) = m.iter().next().unwrap();
            (k.as_str(), v)
        }
        other => panic!("not a tagged enum: {other}"),
    }
}

fn role(v: &Value) -> Role {
    match v.as_str() {
        Some("Parent") => Role::Parent,
        Some("Child") => Role::Child,
        other => panic!("role {other:?}"),
    }
}

fn address(v: &Value) -> Address {
    match tagged(v) {
        ("Tcp", a) => Address::Tcp(text(a).parse().expect("socket address")),
        ("Udp", a) => Address::Udp(text(a).parse().expect("socket address")),
        ("Unix", p) => Address::Unix(text(p)),
        ("Text", t) => Address::Text(text(t)),
        (other, _) => panic!("address {other}"),
    }
}

fn remote_error_kind(v: &Value) -> RemoteErrorKind {
    match v.as_str() {
        Some("Unsupported") => RemoteErrorKind::Unsupported,
        Some("BadRequest") => RemoteErrorKind::BadRequest,
        Some("Failed") => RemoteErrorKind::Failed,
        Some("ShuttingDown") => RemoteErrorKind::ShuttingDown,
        Some("Dropped") => RemoteErrorKind::Dropped,
        other => panic!("error kind {other:?}"),
    }
}

fn goodbye_reason(v: &Value) -> GoodbyeReason {
    match v.as_str() {
        Some("Done") => GoodbyeReason::Done,
        Some("ShuttingDown") => GoodbyeReason::ShuttingDown,
        Some("ProtocolError") => GoodbyeReason::ProtocolError,
        Some("VersionMismatch") => GoodbyeReason::VersionMismatch,
        other => panic!("reason {other:?}"),
    }
}

/// The JSON form of PROTOCOL.md, "Test vectors", as a [`Message`].
fn message(v: &Value) -> Message {
    match tagged(v) {
        ("Hello", h) => Message::Hello(Hello {
            version: num(&h["version"]) as u16,
            pid: num(&h["pid"]) as u32,
            role: role(&h["role"]),
            max_frame: num(&h["max_frame"]) as u32,
        }),
        ("Ready", r) => {
            let mut ready = Ready::new(num(&r["pid"]) as u32);
            for e in r["addresses"].as_array().expect("addresses") {
                ready = ready.address(text(&e["name"]), address(&e["address"]));
            }
            if !r["status"].is_null() {
                ready = ready.status(text(&r["status"]));
            }
            Message::Ready(ready)
        }
        ("Request", r) => Message::Request {
            id: num(&r["id"]),
            body: match tagged(&r["body"]) {
                ("Ping", _) => RequestBody::Ping,
                ("Shutdown", s) => RequestBody::Shutdown {
                    grace_ms: s["grace_ms"].as_u64(),
                },
                ("App", b) => RequestBody::App(hex(b).into()),
                (other, _) => panic!("request body {other}"),
            },
        },
        ("Response", r) => Message::Response {
            id: num(&r["id"]),
            body: match tagged(&r["body"]) {
                ("Ok", _) => ResponseBody::Ok,
                ("App", b) => ResponseBody::App(hex(b).into()),
                ("Error", e) => ResponseBody::Error(RemoteError {
                    kind: remote_error_kind(&e["kind"]),
                    message: text(&e["message"]),
                }),
                (other, _) => panic!("response body {other}"),
            },
        },
        ("Notify", b) => Message::Notify(hex(b).into()),
        ("Status", s) => Message::Status(text(s)),
        ("Goodbye", g) => Message::Goodbye(Goodbye {
            reason: goodbye_reason(&g["reason"]),
            message: text(&g["message"]),
        }),
        (other, _) => panic!("message {other}"),
    }
}

/// Decodes exactly one frame from `bytes` with the default maximum.
fn one_frame(bytes: &[u8]) -> Frame {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut buf = BytesMut::from(bytes);
    let frame = dec
        .decode_eof(&mut buf)
        .expect("frame decodes")
        .expect("a whole frame");
    assert!(buf.is_empty(), "bytes after the frame");
    frame
}

#[test]
fn valid_vectors_encode_to_their_frames() {
    let v = vectors();
    for t in list(&v, "valid") {
        let m = message(&t["message"]);
        let mut out = Vec::new();
        m.encode(DEFAULT_MAX_FRAME, &mut out).expect("encodes");
        assert_eq!(out, hex(&t["frame"]), "vector {}", t["name"]);
    }
}

/// Every vector of `section` decodes from its frame to its message.
fn assert_vectors_decode(section: &str) {
    let v = vectors();
    for t in list(&v, section) {
        let frame = one_frame(&hex(&t["frame"]));
        assert_eq!(
            Message::decode(&frame),
            Ok(message(&t["message"])),
            "vector {}",
            t["name"]
        );
    }
}

#[test]
fn valid_vectors_decode_to_their_messages() {
    assert_vectors_decode("valid");
}

#[test]
fn valid_vectors_decode_split_byte_at_a_time() {
    let v = vectors();
    let mut stream = Vec::new();
    let mut want = Vec::new();
    for t in list(&v, "valid") {
        stream.extend(hex(&t["frame"]));
        want.push(message(&t["message"]));
    }
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in stream {
        buf.extend_from_slice(&[b]);
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            got.push(Message::decode(&f).unwrap());
        }
    }
    assert_eq!(got, want);
}

#[test]
fn decode_only_vectors() {
    assert_vectors_decode("decode_only");
}

fn check_frame_error(e: &FrameError, want: &Value, name: &Value) {
    match (e, want["error"].as_str().unwrap()) {
        (FrameError::TooLarge { len, max }, "TooLarge") => {
            assert_eq!(
                (*len, u64::from(*max)),
                (num(&want["len"]), num(&want["max"])),
                "{name}"
            );
        }
        (FrameError::Truncated { have, need }, "Truncated") => {
            assert_eq!(
                (*have as u64, *need as u64),
                (num(&want["have"]), num(&want["need"])),
                "{name}"
            );
        }
        (e, w) => panic!("{name}: got {e:?}, want {w}"),
    }
}

fn check_decode_error(e: &DecodeError, want: &Value, name: &Value) {
    match (e, want["error"].as_str().unwrap()) {
        (DecodeError::UnknownKind(k), "UnknownKind") => {
            assert_eq!(u64::from(*k), num(&want["kind"]), "{name}")
        }
        (DecodeError::TrailingBytes { extra }, "TrailingBytes") => {
            assert_eq!(*extra as u64, num(&want["extra"]), "{name}");
        }
        (DecodeError::InvalidTag { tag, .. }, "InvalidTag") => {
            assert_eq!(u64::from(*tag), num(&want["tag"]), "{name}")
        }
        (DecodeError::BadMagic(found), "BadMagic") => {
            assert_eq!(found.to_vec(), hex(&want["found"]), "{name}")
        }
        (DecodeError::UnexpectedEnd { .. }, "UnexpectedEnd")
        | (DecodeError::InvalidUtf8, "InvalidUtf8")
        | (DecodeError::LimitExceeded, "LimitExceeded") => {}
        (e, w) => panic!("{name}: got {e:?}, want {w}"),
    }
}

#[test]
fn invalid_vectors_fail_as_specified() {
    let v = vectors();
    for t in list(&v, "invalid") {
        let name = &t["name"];
        let want = &t["error"];
        let mut dec = FrameDecoder::new(num(&t["max_frame"]) as u32);
        let mut buf = BytesMut::from(&hex(&t["stream"])[..]);
        let reserved = buf.capacity();
        match (dec.decode_eof(&mut buf), want["layer"].as_str()) {
            (Err(e), Some("frame")) => {
                check_frame_error(&e, want, name);
                if matches!(e, FrameError::TooLarge { .. }) {
                    assert_eq!(
                        buf.capacity(),
                        reserved,
                        "{name}: reserved memory for a frame it rejected"
                    );
                }
            }
            (Ok(Some(frame)), Some("message")) => {
                assert!(buf.is_empty(), "{name}: one frame per vector");
                let e = Message::decode(&frame).expect_err(&format!("{name} decoded"));
                check_decode_error(&e, want, name);
            }
            (got, layer) => panic!("{name}: got {got:?}, want a {layer:?} error"),
        }
    }
}

fn check_session_error(e: &SessionError, want: &Value, name: &Value) {
    let w = want["error"].as_str().unwrap();
    let id = || num(&want["id"]);
    let kind = || text(&want["kind"]);
    match e {
        SessionError::Frame(f) => check_frame_error(f, want, name),
        SessionError::Decode(d) => check_decode_error(d, want, name),
        SessionError::HelloExpected(k) if w == "HelloExpected" => assert_eq!(*k, kind(), "{name}"),
        SessionError::SecondReady if w == "SecondReady" => {}
        SessionError::DuplicateHello if w == "DuplicateHello" => {}
        SessionError::WrongDirection { role: r, kind: k } if w == "WrongDirection" => {
            assert_eq!((*r, k.to_string()), (role(&want["role"]), kind()), "{name}");
        }
        SessionError::UnknownResponseId(i) if w == "UnknownResponseId" => {
            assert_eq!(*i, id(), "{name}")
        }
        SessionError::DuplicateRequestId(i) if w == "DuplicateRequestId" => {
            assert_eq!(*i, id(), "{name}")
        }
        SessionError::TooManyRequests(n) if w == "TooManyRequests" => {
            assert_eq!(*n as u64, num(&want["max"]), "{name}")
        }
        SessionError::VersionMismatch { ours, theirs } if w == "VersionMismatch" => {
            assert_eq!(
                (u64::from(*ours), u64::from(*theirs)),
                (num(&want["ours"]), num(&want["theirs"])),
                "{name}"
            );
        }
        SessionError::MaxFrameTooSmall { announced, min } if w == "MaxFrameTooSmall" => {
            assert_eq!(
                (u64::from(*announced), u64::from(*min)),
                (num(&want["announced"]), num(&want["min"])),
                "{name}"
            );
        }
        SessionError::RoleConflict(r) if w == "RoleConflict" => {
            assert_eq!(*r, role(&want["role"]), "{name}")
        }
        SessionError::AfterGoodbye(k) if w == "AfterGoodbye" => assert_eq!(*k, kind(), "{name}"),
        e => panic!("{name}: got {e:?}, want {w}"),
    }
}

#[test]
fn session_vectors() {
    let v = vectors();
    for t in list(&v, "sessions") {
        let name = &t["name"];
        let config = SessionConfig::new()
            .max_frame(num(&t["max_frame"]) as u32)
            .max_unanswered(num(&t["max_unanswered"]) as usize);
        let mut s = Session::new(role(&t["role"]), num(&t["pid"]) as u32, config);
        let mut buf = BytesMut::from(&hex(&t["stream"])[..]);
        let result = s.handle_eof(&mut buf);
        let mut events = Vec::new();
        while let Some(m) = s.poll_event() {
            events.push(m.kind().name().to_string());
        }
        let want = &t["result"];
        match result {
            Ok(eof) => {
                let want_eof = match want["eof"].as_str() {
                    Some("Silent") => Eof::Silent,
                    Some("AfterGoodbye") => Eof::AfterGoodbye,
                    Some("Abrupt") => Eof::Abrupt,
                    other => panic!("{name}: got {eof:?}, want {other:?} / {want}"),
                };
                assert_eq!(eof, want_eof, "{name}");
                let want_events: Vec<String> = list(want, "events").iter().map(text).collect();
                assert_eq!(events, want_events, "{name}");
            }
            Err(e) => check_session_error(&e, want, name),
        }
        let mut out = Vec::new();
        let _ = s.poll_transmit(&mut out);
        match t.get("output") {
            Some(o) => assert_eq!(out, hex(o), "{name}: output"),
            None => assert!(out.is_empty(), "{name}: unexpected output"),
        }
    }
}

/// The vectors name every kind and every variant: a new variant without a
/// vector fails here.
#[test]
fn vectors_cover_every_variant() {
    let v = vectors();
    let mut seen = BTreeSet::new();
    for t in list(&v, "valid") {
        let m = message(&t["message"]);
        seen.insert(m.kind().name().to_string());
        let mut note = |s: String| seen.insert(s);
        match &m {
            Message::Ready(r) => {
                note(format!("Ready.status.{}", r.status.is_some()));
                note(format!("Ready.addresses.{}", r.addresses.len().min(2)));
                for e in &r.addresses {
                    note(match &e.address {
                        Address::Tcp(a) => format!("Tcp.{}", if a.is_ipv4() { 4 } else { 6 }),
                        Address::Udp(a) => format!("Udp.{}", if a.is_ipv4() { 4 } else { 6 }),
                        Address::Unix(_) => "Unix".into(),
                        Address::Text(_) => "Text".into(),
                        _ => "other".into(),
                    });
                }
            }
            Message::Request { body, .. } => {
                note(match body {
                    RequestBody::Ping => "Ping".into(),
                    RequestBody::Shutdown { grace_ms } => {
                        format!("Shutdown.{}", grace_ms.is_some())
                    }
                    RequestBody::App(b) => format!("Request.App.{}", b.is_empty()),
                    _ => "other".into(),
                });
            }
            Message::Response { body, .. } => {
                note(match body {
                    ResponseBody::Ok => "Ok".into(),
                    ResponseBody::App(b) => format!("Response.App.{}", b.is_empty()),
                    ResponseBody::Error(e) => format!("{:?}", e.kind),
                    _ => "other".into(),
                });
            }
            Message::Notify(b) => {
                note(format!("Notify.{}", b.is_empty()));
            }
            Message::Goodbye(g) => {
                note(format!("{:?}", g.reason));
            }
            _ => {}
        }
    }
    let want = [
        "Hello",
        "Ready",
        "Request",
        "Response",
        "Notify",
        "Status",
        "Goodbye",
        "Ready.status.true",
        "Ready.status.false",
        "Ready.addresses.0",
        "Ready.addresses.1",
        "Ready.addresses.2",
        "Tcp.4",
        "Tcp.6",
        "Udp.4",
        "Udp.6",
        "Unix",
        "Text",
        "Ping",
        "Shutdown.true",
        "Shutdown.false",
        "Request.App.true",
        "Request.App.false",
        "Ok",
        "Response.App.true",
        "Response.App.false",
        "Unsupported",
        "BadRequest",
        "Failed",
        "ShuttingDown",
        "Dropped",
        "Notify.true",
        "Notify.false",
        "Done",
        "ProtocolError",
        "VersionMismatch",
    ];
    for w in want {
        assert!(seen.contains(w), "no valid vector covers {w}");
    }
    assert!(!seen.contains("other"));
    // `ShuttingDown` above is both a RemoteErrorKind and a GoodbyeReason:
    // check the reasons separately.
    let reasons: BTreeSet<String> = list(&v, "valid")
        .iter()
        .filter_map(|t| match message(&t["message"]) {
            Message::Goodbye(g) => Some(format!("{:?}", g.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 4, "every GoodbyeReason: {reasons:?}");
}

#[test]
fn every_invalid_class_has_a_vector() {
    let v = vectors();
    let errors: BTreeSet<&str> = list(&v, "invalid")
        .iter()
        .map(|t| t["error"]["error"].as_str().unwrap())
        .collect();
    for e in [
        "TooLarge",
        "Truncated",
        "UnknownKind",
        "TrailingBytes",
        "InvalidUtf8",
        "BadMagic",
        "InvalidTag",
        "UnexpectedEnd",
        "LimitExceeded",
    ] {
        assert!(errors.contains(e), "no invalid vector for {e}");
    }
}

/// Every session error a peer can cause has a session vector.
#[test]
fn every_session_error_has_a_vector() {
    let v = vectors();
    let errors: BTreeSet<&str> = list(&v, "sessions")
        .iter()
        .filter_map(|t| t["result"]["error"].as_str())
        .collect();
    for e in [
        "HelloExpected",
        "VersionMismatch",
        "RoleConflict",
        "MaxFrameTooSmall",
        "DuplicateHello",
        "SecondReady",
        "WrongDirection",
        "UnknownResponseId",
        "DuplicateRequestId",
        "TooManyRequests",
        "AfterGoodbye",
    ] {
        assert!(errors.contains(e), "no session vector for {e}");
    }
}

/// `vectors.json` is what `gen_vectors.py` writes (skipped without python3).
#[test]
fn vectors_json_is_up_to_date() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gen_vectors.py");
    match std::process::Command::new("python3")
        .arg(script)
        .arg("--check")
        .status()
    {
        Ok(status) => assert!(status.success(), "run python3 proto/tests/gen_vectors.py"),
        Err(e) => eprintln!("skipped: python3 not runnable ({e})"),
    }
}

// ---- file descriptors (PROTOCOL.md, section 2.1) ------------------------------

#[test]
fn fd_valid_vectors_both_ways() {
    let v = vectors();
    assert!(!list(&v, "fd_valid").is_empty());
    for t in list(&v, "fd_valid") {
        let msg = message(&t["message"]);
        let fds = num(&t["fds"]) as usize;
        let want = hex(&t["frame"]);
        let mut got = Vec::new();
        msg.encode_with_fds(fds, DEFAULT_MAX_FRAME, &mut got)
            .unwrap();
        assert_eq!(got, want, "{}", t["name"]);
        assert_eq!(
            Message::decode_with_fds(&one_frame(&want)),
            Ok((msg, fds)),
            "{}",
            t["name"]
        );
    }
}

#[test]
fn fd_invalid_vectors_fail_as_specified() {
    let v = vectors();
    for t in list(&v, "fd_invalid") {
        let name = &t["name"];
        let err = Message::decode_with_fds(&one_frame(&hex(&t["frame"]))).unwrap_err();
        let want = &t["error"];
        match (want["error"].as_str().unwrap(), &err) {
            ("FdsNotAllowed", DecodeError::FdsNotAllowed(kind)) => {
                assert_eq!(*kind, want["kind"].as_str().unwrap(), "{name}")
            }
            ("BadFdCount", DecodeError::BadFdCount(c)) => {
                assert_eq!(u64::from(*c), num(&want["count"]), "{name}")
            }
            ("UnknownKind", DecodeError::UnknownKind(k)) => {
                assert_eq!(u64::from(*k), num(&want["kind"]), "{name}")
            }
            ("UnexpectedEnd", DecodeError::UnexpectedEnd { .. }) => {}
            (w, e) => panic!("{name}: want {w}, got {e:?}"),
        }
    }
}

#[test]
fn fd_session_vectors() {
    let v = vectors();
    for t in list(&v, "fd_sessions") {
        let name = &t["name"];
        let mut s = Session::new(Role::Parent, 100, SessionConfig::default());
        let mut buf = BytesMut::new();
        let mut counts = Vec::new();
        let mut result = Ok(());
        for read in t["reads"].as_array().unwrap() {
            let bytes = hex(&read["bytes"]);
            buf.extend_from_slice(&bytes);
            let truncated = read["truncated"].as_bool().unwrap_or(false);
            result =
                s.handle_input_fds(&mut buf, bytes.len(), num(&read["fds"]) as usize, truncated);
            counts.extend(std::iter::from_fn(|| s.poll_event_fds()).map(|e| e.fds as u64));
            if result.is_err() {
                break;
            }
        }
        let want = &t["result"];
        match (want["error"].as_str(), result) {
            (None, Ok(())) => {
                let fds: Vec<u64> = want["fds"].as_array().unwrap().iter().map(num).collect();
                assert_eq!(counts, fds, "{name}");
            }
            (
                Some("FdCountMismatch"),
                Err(SessionError::FdCountMismatch {
                    announced, arrived, ..
                }),
            ) => {
                assert_eq!(announced as u64, num(&want["announced"]), "{name}");
                assert_eq!(arrived as u64, num(&want["arrived"]), "{name}");
            }
            (Some("UnexpectedFds"), Err(SessionError::UnexpectedFds(n))) => {
                assert_eq!(n as u64, num(&want["count"]), "{name}")
            }
            (Some("FdsTruncated"), Err(SessionError::FdsTruncated)) => {}
            (w, r) => panic!("{name}: want {w:?}, got {r:?}"),
        }
    }
}
