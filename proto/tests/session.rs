//! The session rules of PROTOCOL.md, one test per rule, and every
//! `SessionError` a peer can cause.

use bytes::BytesMut;
use readyfd_proto::codec::encode_body;
use readyfd_proto::{
    DecodeError, Eof, FrameError, Goodbye, GoodbyeReason, Hello, Message, PROTOCOL_VERSION, Ready,
    RequestBody, ResponseBody, Role, Session, SessionConfig, SessionError,
};

fn parent() -> Session {
    Session::new(Role::Parent, 100, SessionConfig::default())
}

fn child() -> Session {
    Session::new(Role::Child, 200, SessionConfig::default())
}

fn hello(role: Role) -> Message {
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        pid: 7,
        role,
        max_frame: 1 << 20,
    })
}

fn wire(msgs: &[Message]) -> BytesMut {
    let mut out = Vec::new();
    for m in msgs {
        m.encode(u32::MAX, &mut out).unwrap();
    }
    BytesMut::from(&out[..])
}

/// Feeds `msgs`, as the peer's frames, to `s`.
fn feed(s: &mut Session, msgs: &[Message]) -> Result<(), SessionError> {
    s.handle_input(&mut wire(msgs))
}

fn events(s: &mut Session) -> Vec<Message> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn output(s: &mut Session) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.poll_transmit(&mut out);
    out
}

/// Moves everything `from` queued into `to`.
fn transfer(from: &mut Session, to: &mut Session) -> Result<(), SessionError> {
    to.handle_input(&mut BytesMut::from(&output(from)[..]))
}

fn app(id: u64) -> Message {
    Message::Request {
        id,
        body: RequestBody::App(vec![1, 2, 3].into()),
    }
}

fn ok(id: u64) -> Message {
    Message::Response {
        id,
        body: ResponseBody::Ok,
    }
}

// ---- Hello ----------------------------------------------------------------

#[test]
fn hello_is_queued_once_and_before_anything_else() {
    let mut c = child();
    assert!(output(&mut c).is_empty(), "nothing queued by new()");
    c.send_status("starting").unwrap();
    c.send_hello();
    c.send_ready(&Ready::new(200)).unwrap();
    let out = output(&mut c);
    let mut p = parent();
    p.handle_input(&mut BytesMut::from(&out[..])).unwrap();
    let kinds: Vec<_> = events(&mut p).iter().map(|m| m.kind().name()).collect();
    assert_eq!(kinds, ["Hello", "Status", "Ready"]);
    let Some(h) = p.peer() else { panic!() };
    assert_eq!(
        (h.version, h.pid, h.role),
        (PROTOCOL_VERSION, 200, Role::Child)
    );
}

#[test]
fn hello_does_not_wait_for_the_peer() {
    // Both sides send first; neither needs the other's Hello to start.
    let (mut p, mut c) = (parent(), child());
    p.send_hello();
    c.send_ready(&Ready::new(200)).unwrap();
    transfer(&mut c, &mut p).unwrap();
    transfer(&mut p, &mut c).unwrap();
    assert!(p.is_ready() && c.is_ready());
    assert_eq!(c.peer().map(|h| h.role), Some(Role::Parent));
}

#[test]
fn ready_before_hello_is_hello_expected() {
    let mut p = parent();
    let e = feed(&mut p, &[Message::Ready(Ready::new(1))]).unwrap_err();
    assert_eq!(e, SessionError::HelloExpected("Ready"));
}

#[test]
fn version_mismatch_names_both_versions() {
    let mut p = parent();
    let e = feed(
        &mut p,
        &[Message::Hello(Hello {
            version: 2,
            pid: 1,
            role: Role::Child,
            max_frame: 10,
        })],
    )
    .unwrap_err();
    assert_eq!(e, SessionError::VersionMismatch { ours: 1, theirs: 2 });
    let text = e.to_string();
    assert!(
        text.contains("version 1") && text.contains("version 2"),
        "{text}"
    );
}

#[test]
fn two_parents_or_two_children_conflict() {
    let mut p = parent();
    assert_eq!(
        feed(&mut p, &[hello(Role::Parent)]),
        Err(SessionError::RoleConflict(Role::Parent))
    );
    let mut c = child();
    assert_eq!(
        feed(&mut c, &[hello(Role::Child)]),
        Err(SessionError::RoleConflict(Role::Child))
    );
}

#[test]
fn second_hello_is_an_error() {
    let mut p = parent();
    assert_eq!(
        feed(&mut p, &[hello(Role::Child), hello(Role::Child)]),
        Err(SessionError::DuplicateHello)
    );
}

// ---- Ready, Status, Shutdown ------------------------------------------------

#[test]
fn second_ready_is_an_error_and_failure_is_sticky() {
    let mut p = parent();
    let r = Message::Ready(Ready::new(1));
    let e = feed(&mut p, &[hello(Role::Child), r.clone(), r]).unwrap_err();
    assert_eq!(e, SessionError::SecondReady);
    assert!(p.is_ready(), "the first Ready counted");
    assert_eq!(
        feed(&mut p, &[Message::Notify(Default::default())]),
        Err(e.clone())
    );
    assert_eq!(p.handle_eof(&mut BytesMut::new()), Err(e));
}

#[test]
fn ready_from_the_parent_is_wrong_direction() {
    let mut c = child();
    let e = feed(
        &mut c,
        &[hello(Role::Parent), Message::Ready(Ready::new(1))],
    )
    .unwrap_err();
    assert_eq!(
        e,
        SessionError::WrongDirection {
            role: Role::Parent,
            kind: "Ready"
        }
    );
}

#[test]
fn status_from_the_parent_is_wrong_direction() {
    let mut c = child();
    let e = feed(&mut c, &[hello(Role::Parent), Message::Status("x".into())]).unwrap_err();
    assert_eq!(
        e,
        SessionError::WrongDirection {
            role: Role::Parent,
            kind: "Status"
        }
    );
}

#[test]
fn shutdown_from_the_child_is_wrong_direction() {
    let mut p = parent();
    let shutdown = Message::Request {
        id: 1,
        body: RequestBody::Shutdown { grace_ms: None },
    };
    let e = feed(&mut p, &[hello(Role::Child), shutdown]).unwrap_err();
    assert_eq!(
        e,
        SessionError::WrongDirection {
            role: Role::Child,
            kind: "Shutdown"
        }
    );
}

#[test]
fn sends_against_the_rules_are_refused_locally() {
    let mut p = parent();
    assert!(matches!(
        p.send_ready(&Ready::new(1)),
        Err(SessionError::NotAllowed(_))
    ));
    assert!(matches!(
        p.send_status("x"),
        Err(SessionError::NotAllowed(_))
    ));
    assert!(matches!(
        p.send_response(1, ResponseBody::Ok),
        Err(SessionError::NotAllowed(_))
    ));
    let mut c = child();
    assert!(matches!(
        c.send_request(RequestBody::Shutdown { grace_ms: Some(1) }),
        Err(SessionError::NotAllowed(_))
    ));
    c.send_ready(&Ready::new(1)).unwrap();
    assert!(matches!(
        c.send_ready(&Ready::new(1)),
        Err(SessionError::NotAllowed(_))
    ));
    c.send_goodbye(GoodbyeReason::Done, "").unwrap();
    assert!(c.goodbye_sent());
    assert_eq!(c.send_status("x"), Err(SessionError::Closed));
    assert_eq!(c.send_request(RequestBody::Ping), Err(SessionError::Closed));
    assert_eq!(c.send_notify(&()), Err(SessionError::Closed));
    assert_eq!(
        c.send_goodbye(GoodbyeReason::Done, ""),
        Err(SessionError::Closed)
    );
}

#[test]
fn shutdown_reaches_the_child_as_a_request() {
    let (mut p, mut c) = (parent(), child());
    let id = p
        .send_request(RequestBody::Shutdown {
            grace_ms: Some(2500),
        })
        .unwrap();
    transfer(&mut p, &mut c).unwrap();
    let ev = events(&mut c);
    assert_eq!(
        ev[1],
        Message::Request {
            id,
            body: RequestBody::Shutdown {
                grace_ms: Some(2500)
            }
        }
    );
    c.send_response(id, ResponseBody::Ok).unwrap();
    transfer(&mut c, &mut p).unwrap();
    assert_eq!(events(&mut p)[1], ok(id));
    assert_eq!(p.outstanding().count(), 0);
}

// ---- requests and responses -------------------------------------------------

#[test]
fn ping_is_answered_by_the_library_from_either_side() {
    for (mut a, mut b) in [(parent(), child()), (child(), parent())] {
        let id = a.send_request(RequestBody::Ping).unwrap();
        assert_eq!(a.outstanding().collect::<Vec<_>>(), [id]);
        transfer(&mut a, &mut b).unwrap();
        assert_eq!(
            events(&mut b).len(),
            1,
            "only the Hello surfaces, never the Ping"
        );
        transfer(&mut b, &mut a).unwrap();
        let ev = events(&mut a);
        assert!(
            matches!(&ev[..], [Message::Hello(h), pong] if h.role == b.role() && *pong == ok(id)),
            "{ev:?}"
        );
        assert_eq!(a.outstanding().count(), 0);
        // The Ping's id is not the application's to answer.
        assert!(matches!(
            b.send_response(id, ResponseBody::Ok),
            Err(SessionError::NotAllowed(_))
        ));
    }
}

#[test]
fn ping_after_our_goodbye_goes_unanswered() {
    let mut c = child();
    c.send_goodbye(GoodbyeReason::ShuttingDown, "bye").unwrap();
    let _ = output(&mut c);
    feed(
        &mut c,
        &[
            hello(Role::Parent),
            Message::Request {
                id: 3,
                body: RequestBody::Ping,
            },
        ],
    )
    .unwrap();
    assert!(output(&mut c).is_empty());
}

#[test]
fn response_to_an_unknown_id_is_an_error() {
    let mut p = parent();
    assert_eq!(
        feed(&mut p, &[hello(Role::Child), ok(7)]),
        Err(SessionError::UnknownResponseId(7))
    );
}

#[test]
fn a_second_response_to_the_same_id_is_an_error() {
    let (mut p, mut c) = (parent(), child());
    let id = p.send_request(RequestBody::App(vec![0].into())).unwrap();
    transfer(&mut p, &mut c).unwrap();
    c.send_response(id, ResponseBody::Ok).unwrap();
    assert!(matches!(
        c.send_response(id, ResponseBody::Ok),
        Err(SessionError::NotAllowed(_))
    ));
    let mut twice = BytesMut::from(&output(&mut c)[..]);
    twice.extend_from_slice(&wire(&[ok(id)]));
    assert_eq!(
        p.handle_input(&mut twice),
        Err(SessionError::UnknownResponseId(id))
    );
}

#[test]
fn duplicate_unanswered_request_id_is_an_error_answered_ids_are_reusable() {
    let mut c = child();
    feed(&mut c, &[hello(Role::Parent), app(5)]).unwrap();
    c.send_response(5, ResponseBody::Ok).unwrap();
    feed(&mut c, &[app(5)]).unwrap();
    assert_eq!(
        feed(&mut c, &[app(5)]),
        Err(SessionError::DuplicateRequestId(5))
    );
}

#[test]
fn too_many_unanswered_requests() {
    let config = SessionConfig::new().max_unanswered(2);
    let mut c = Session::new(Role::Child, 200, config);
    feed(&mut c, &[hello(Role::Parent), app(1), app(2)]).unwrap();
    c.send_response(1, ResponseBody::Ok).unwrap();
    feed(&mut c, &[app(3)]).unwrap();
    assert_eq!(
        feed(&mut c, &[app(4)]),
        Err(SessionError::TooManyRequests(2))
    );
}

#[test]
fn abandoned_request_late_response_is_dropped_silently_once() {
    let (mut p, mut c) = (parent(), child());
    let id = p.send_request(RequestBody::App(vec![].into())).unwrap();
    transfer(&mut p, &mut c).unwrap();
    p.abandon_request(id);
    assert_eq!(p.outstanding().count(), 0);
    c.send_response(id, ResponseBody::Ok).unwrap();
    transfer(&mut c, &mut p).unwrap();
    let ev = events(&mut p);
    assert_eq!(ev.len(), 1, "only the child's Hello: {ev:?}");
    // The abandonment is used up: another response to it is an error.
    assert_eq!(
        feed(&mut p, &[ok(id)]),
        Err(SessionError::UnknownResponseId(id))
    );
}

#[test]
fn typed_sends_equal_untyped_sends_with_pre_encoded_bodies() {
    #[derive(serde::Serialize)]
    struct Config<'a> {
        name: &'a str,
        workers: Option<u16>,
    }
    let value = Config {
        name: "fast",
        workers: Some(4),
    };
    let body = encode_body(&value, usize::MAX).unwrap();

    let (mut typed, mut untyped) = (parent(), parent());
    let a = typed.send_app_request(&value).unwrap();
    let b = untyped
        .send_request(RequestBody::App(body.clone().into()))
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(output(&mut typed), output(&mut untyped), "typed request");
    typed.send_notify(&value).unwrap();
    let mut want = Vec::new();
    Message::Notify(body.clone().into())
        .encode(u32::MAX, &mut want)
        .unwrap();
    assert_eq!(output(&mut typed), want, "typed notify");

    let (mut typed, mut untyped) = (child(), child());
    for s in [&mut typed, &mut untyped] {
        feed(s, &[hello(Role::Parent), app(9)]).unwrap();
    }
    typed.send_app_response(9, &value).unwrap();
    untyped
        .send_response(9, ResponseBody::App(body.into()))
        .unwrap();
    assert_eq!(output(&mut typed), output(&mut untyped), "typed response");
}

// ---- limits -------------------------------------------------------------------

#[test]
fn sender_respects_the_peers_announced_maximum() {
    let mut c = child();
    let small = Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        pid: 1,
        role: Role::Parent,
        max_frame: 4096,
    });
    feed(&mut c, &[small]).unwrap();
    assert_eq!(c.peer_max_frame(), 4096);
    c.send_hello();
    let _ = output(&mut c);
    let e = c.send_notify(&"x".repeat(4090)).unwrap_err();
    assert!(
        matches!(
            e,
            SessionError::Encode(readyfd_proto::EncodeError::TooLarge { max: 4096, .. })
        ),
        "{e:?}"
    );
    assert_eq!(c.transmit_len(), 0, "nothing queued");
    c.send_notify(&"x".repeat(4088)).unwrap(); // 8 + 4088 = 4096 bytes: exactly the maximum
}

#[test]
fn a_maximum_below_the_protocol_minimum_is_refused() {
    let mut c = child();
    let tiny = Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        pid: 1,
        role: Role::Parent,
        max_frame: readyfd_proto::MIN_MAX_FRAME - 1,
    });
    assert_eq!(
        feed(&mut c, &[tiny]),
        Err(SessionError::MaxFrameTooSmall {
            announced: 4095,
            min: 4096
        })
    );
}

#[test]
fn frame_over_our_maximum_is_corrupt() {
    // A configured maximum below the protocol minimum is raised to it.
    let mut p = Session::new(Role::Parent, 1, SessionConfig::new().max_frame(32));
    let mut buf = wire(&[hello(Role::Child), Message::Status("y".repeat(4100))]);
    assert_eq!(
        p.handle_input(&mut buf),
        Err(SessionError::Frame(FrameError::TooLarge {
            len: 4108,
            max: 4096
        }))
    );
}

#[test]
fn invalid_message_is_a_decode_error() {
    let mut p = parent();
    let mut buf = wire(&[hello(Role::Child)]);
    buf.extend_from_slice(&[1, 0, 0, 0, 0x09, 0]);
    assert_eq!(
        p.handle_input(&mut buf),
        Err(SessionError::Decode(DecodeError::UnknownKind(9)))
    );
}

// ---- Goodbye and EOF ------------------------------------------------------------

#[test]
fn nothing_may_follow_goodbye() {
    let mut p = parent();
    let bye = Message::Goodbye(Goodbye {
        reason: GoodbyeReason::Done,
        message: String::new(),
    });
    let e = feed(
        &mut p,
        &[hello(Role::Child), bye, Message::Notify(Default::default())],
    )
    .unwrap_err();
    assert_eq!(e, SessionError::AfterGoodbye("Notify"));
    assert!(p.goodbye_received());
}

#[test]
fn goodbye_voids_the_peers_unanswered_requests() {
    let mut c = child();
    let bye = Message::Goodbye(Goodbye {
        reason: GoodbyeReason::ShuttingDown,
        message: "bye".into(),
    });
    feed(&mut c, &[hello(Role::Parent), app(1), bye]).unwrap();
    assert!(matches!(
        c.send_response(1, ResponseBody::Ok),
        Err(SessionError::NotAllowed(_))
    ));
}

#[test]
fn goodbye_message_is_cut_at_4096_bytes_on_a_char_boundary() {
    let (mut c, mut p) = (child(), parent());
    c.send_goodbye(GoodbyeReason::ProtocolError, &"é".repeat(3000))
        .unwrap();
    transfer(&mut c, &mut p).unwrap();
    let Some(Message::Goodbye(g)) = events(&mut p).pop() else {
        panic!()
    };
    assert_eq!(g.message.len(), 4096);
    assert!(g.message.chars().all(|ch| ch == 'é'));
}

#[test]
fn eof_without_a_byte_is_silent() {
    let mut p = parent();
    assert_eq!(p.handle_eof(&mut BytesMut::new()), Ok(Eof::Silent));
}

#[test]
fn eof_after_goodbye_is_orderly() {
    let mut p = parent();
    let mut buf = wire(&[
        hello(Role::Child),
        Message::Goodbye(Goodbye {
            reason: GoodbyeReason::Done,
            message: String::new(),
        }),
    ]);
    assert_eq!(p.handle_eof(&mut buf), Ok(Eof::AfterGoodbye));
}

#[test]
fn eof_without_goodbye_is_abrupt() {
    let mut p = parent();
    let mut buf = wire(&[hello(Role::Child), Message::Ready(Ready::new(1))]);
    assert_eq!(p.handle_eof(&mut buf), Ok(Eof::Abrupt));
    assert_eq!(
        events(&mut p).len(),
        2,
        "complete frames before EOF are delivered"
    );
}

#[test]
fn eof_inside_a_frame_is_truncated() {
    let mut p = parent();
    let full = wire(&[hello(Role::Child)]);
    let mut buf = BytesMut::from(&full[..full.len() - 1]);
    assert_eq!(
        p.handle_eof(&mut buf),
        Err(SessionError::Frame(FrameError::Truncated {
            have: full.len() - 1,
            need: full.len()
        }))
    );
    let mut p = parent();
    assert_eq!(
        p.handle_eof(&mut BytesMut::from(&[7u8][..])),
        Err(SessionError::Frame(FrameError::Truncated {
            have: 1,
            need: 5
        }))
    );
}

#[test]
fn eof_forgets_abandoned_requests() {
    let mut p = parent();
    let id = p.send_request(RequestBody::Ping).unwrap();
    p.abandon_request(id);
    feed(&mut p, &[hello(Role::Child)]).unwrap();
    assert_eq!(p.handle_eof(&mut BytesMut::new()), Ok(Eof::Abrupt));
}

#[test]
fn a_whole_conversation() {
    let (mut p, mut c) = (parent(), child());
    p.send_hello();
    c.send_status("loading").unwrap();
    c.send_ready(&Ready::new(200).address(
        "http",
        "127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap(),
    ))
    .unwrap();
    transfer(&mut c, &mut p).unwrap();
    transfer(&mut p, &mut c).unwrap();
    let id = p.send_app_request(&"hello").unwrap();
    let ping = c.send_request(RequestBody::Ping).unwrap();
    transfer(&mut p, &mut c).unwrap();
    transfer(&mut c, &mut p).unwrap(); // the child's Ping
    transfer(&mut p, &mut c).unwrap(); // the parent's Pong
    let ev = events(&mut c);
    assert!(
        matches!(&ev[..], [Message::Hello(_), Message::Request { .. }, Message::Response { id: pong, body: ResponseBody::Ok }] if *pong == ping),
        "{ev:?}"
    );
    c.send_app_response(id, &"world").unwrap();
    c.send_goodbye(GoodbyeReason::Done, "").unwrap();
    let mut rest = BytesMut::from(&output(&mut c)[..]);
    assert_eq!(p.handle_eof(&mut rest), Ok(Eof::AfterGoodbye));
    let ev = events(&mut p);
    let kinds: Vec<_> = ev.iter().map(|m| m.kind().name()).collect();
    assert_eq!(kinds, ["Hello", "Status", "Ready", "Response", "Goodbye"]);
    assert_eq!(p.outstanding().count(), 0);
}

/// The receive and send halves are separate phases: the peer's `Ready`,
/// `Hello` and `Goodbye` stay known after a later failure, and our own
/// readiness stays after our `Goodbye`.
#[test]
fn readiness_and_goodbye_outlive_later_phases() {
    let mut p = parent();
    let ready = Message::Ready(Ready::new(7));
    let bye = Message::Goodbye(Goodbye {
        reason: GoodbyeReason::Done,
        message: String::new(),
    });
    feed(&mut p, &[hello(Role::Child), ready, bye]).unwrap();
    assert!(p.is_ready() && p.goodbye_received() && !p.goodbye_sent());
    assert_eq!(
        feed(&mut p, &[Message::Status("late".into())]),
        Err(SessionError::AfterGoodbye("Status"))
    );
    assert!(p.is_ready() && p.goodbye_received());
    assert_eq!(p.peer().map(|h| h.pid), Some(7));

    let mut c = child();
    assert!(!c.is_ready());
    c.send_ready(&Ready::new(200)).unwrap();
    c.send_goodbye(GoodbyeReason::Done, "").unwrap();
    assert!(c.is_ready() && c.goodbye_sent() && !c.goodbye_received());
    assert!(c.peer().is_none(), "nothing received yet");
    assert_eq!(
        c.send_ready(&Ready::new(200)),
        Err(SessionError::Closed),
        "closed before it is a second Ready"
    );
}

/// Bytes that are not yet a whole `Hello` leave the session without a
/// peer; the rest of the `Hello` completes it.
#[test]
fn a_hello_split_across_reads_is_accepted_once_whole() {
    let mut p = parent();
    let bytes = wire(&[hello(Role::Child)]);
    let mut buf = BytesMut::from(&bytes[..10]);
    p.handle_input(&mut buf).unwrap();
    assert!(p.peer().is_none());
    assert!(events(&mut p).is_empty());
    buf.extend_from_slice(&bytes[10..]);
    p.handle_input(&mut buf).unwrap();
    assert_eq!(p.peer().map(|h| h.role), Some(Role::Child));
    assert_eq!(events(&mut p), vec![hello(Role::Child)]);
    assert_eq!(p.handle_eof(&mut buf), Ok(Eof::Abrupt));
}
