//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and every
//! past crash (`fuzz/regressions/<target>/`) through the same harness
//! functions the fuzz targets call, on stable, under the same bounded
//! allocator in its recording mode. Each regression also has its own named
//! test below.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use readyfd_proto::codec::decode_body;
use readyfd_proto::{
    DecodeError, Frame, Hello, MIN_MAX_FRAME, Message, PROTOCOL_VERSION, RequestBody, ResponseBody,
    Role, Session, SessionConfig, SessionError,
};
use readyfd_proto_harness::alloc::{self, BoundedAlloc, Excess};
use readyfd_proto_harness::{ExampleBody, app_body, frame_decoder, message_decode, session};

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc::recording();

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Runs one input, failing with its path on a panic or an allocation over
/// the limit.
fn run(path: &Path, data: &[u8], f: fn(&[u8])) {
    let _ = alloc::take_excess();
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(data))) {
        let msg = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("?");
        panic!("{}: {msg}", path.display());
    }
    if let Some(Excess { size, limit }) = alloc::take_excess() {
        panic!(
            "{}: allocation of {size} bytes over the limit of {limit}",
            path.display()
        );
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    paths.sort();
    paths
}

fn replay(target: &str, f: fn(&[u8])) {
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(!corpus.is_empty(), "no committed corpus for {target}");
    for path in corpus
        .iter()
        .chain(&files(&fuzz_dir().join("regressions").join(target)))
    {
        run(path, &fs::read(path).expect("readable file"), f);
    }
}

fn regression(target: &str, name: &str, f: fn(&[u8])) -> Vec<u8> {
    let path = fuzz_dir().join("regressions").join(target).join(name);
    let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    run(&path, &data, f);
    data
}

/// Replays a `message_decode` regression, then decodes it as the frame it
/// holds (`[kind][payload]`).
fn decode_regression(name: &str) -> Result<Message, DecodeError> {
    let data = regression("message_decode", name, message_decode);
    Message::decode(&Frame {
        kind: data[0],
        payload: data[1..].to_vec().into(),
    })
}

#[test]
fn corpus_frame_decoder() {
    replay("frame_decoder", frame_decoder);
}

#[test]
fn corpus_message_decode() {
    replay("message_decode", message_decode);
}

#[test]
fn corpus_session() {
    replay("session", session);
}

#[test]
fn corpus_app_body() {
    replay("app_body", app_body::<ExampleBody>);
}

/// A Ping the library could not answer (the peer had announced a maximum
/// frame smaller than the 12-byte `Response Ok`) stayed among the peer's
/// unanswered requests, so a later `send_response` for that id tried to
/// answer the library's own Ping. Since then a `Hello` announcing less than
/// `MIN_MAX_FRAME` is refused outright, so the Ping is never reached.
#[test]
fn regression_ping_unanswerable_left_unanswered() {
    regression("session", "ping-unanswerable-left-unanswered", session);

    let mut c = Session::new(Role::Child, 2, SessionConfig::default());
    let mut wire = Vec::new();
    let tiny = Hello {
        version: PROTOCOL_VERSION,
        pid: 1,
        role: Role::Parent,
        max_frame: 0,
    };
    Message::Hello(tiny).encode(u32::MAX, &mut wire).unwrap();
    Message::Request {
        id: 7,
        body: RequestBody::Ping,
    }
    .encode(u32::MAX, &mut wire)
    .unwrap();
    let e = c.handle_input(&mut BytesMut::from(&wire[..])).unwrap_err();
    assert!(
        matches!(
            e,
            SessionError::MaxFrameTooSmall {
                announced: 0,
                min: MIN_MAX_FRAME
            }
        ),
        "{e:?}"
    );
    assert!(matches!(
        c.send_response(7, ResponseBody::Ok),
        Err(SessionError::NotAllowed(_))
    ));
}

/// An out-of-range enum variant index (a `GoodbyeReason` of `0xffffffff`)
/// was reported as the catch-all `DecodeError::Invalid` instead of
/// `InvalidTag`: serde's derived enums reject the index themselves and
/// bincode passes their message on as text.
#[test]
fn regression_goodbye_reason_variant_index_unclassified() {
    assert_eq!(
        decode_regression("goodbye-reason-variant-index-unclassified"),
        Err(DecodeError::InvalidTag {
            what: "enum variant",
            tag: u32::MAX
        })
    );
}

/// The same for `SocketAddr`, whose own enum rejects a variant other than
/// `V4`/`V6` with a different text.
#[test]
fn regression_socketaddr_variant_index_unclassified() {
    assert_eq!(
        decode_regression("socketaddr-variant-index-unclassified"),
        Err(DecodeError::InvalidTag {
            what: "SocketAddr variant",
            tag: 0x002a_0000
        })
    );
}

/// The target decoded application bodies as a tuple holding a `Vec<u8>`,
/// for which serde pre-allocates up to 1 MiB whatever the payload; the
/// codec docs wrongly said `Vec<u8>` was bounded by the payload. The
/// harness no longer does that, and the 1 MiB is documented (and allowed
/// for in `app_body`).
#[test]
fn regression_notify_body_vec_preallocates_1mib() {
    let data = regression(
        "message_decode",
        "notify-body-vec-preallocates-1mib",
        message_decode,
    );
    let r = decode_body::<(u8, Option<String>, Vec<u8>)>(&data[1..]);
    assert!(
        matches!(
            r,
            Err(DecodeError::UnexpectedEnd { .. } | DecodeError::LimitExceeded)
        ),
        "{r:?}"
    );
}
