//! The `app_body` target: an application's own body type, decoded from
//! arbitrary bytes and carried between two sessions; and [`ExampleBody`],
//! the stand-in type the committed target fuzzes.

use std::collections::BTreeMap;
use std::fmt;

use bytes::{Bytes, BytesMut};
use readyfd_proto::codec::{check_body, encode_body};
use readyfd_proto::{
    Address, Endpoint, FrameDecoder, Message, Ready, RemoteError, RequestBody, ResponseBody, Role,
    Session, SessionConfig,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::alloc::{DECODE_EXPANSION, LimitGuard, SERDE_PREALLOC, SLACK};

/// Fuzzes an application's body type `T` as readyfd carries it.
///
/// If `data[0]` is even, the rest is one body; if odd, the rest is a byte
/// stream whose `Request`, `Response` and `Notify` frames carry the bodies.
/// Each body goes through [`check_body`], the published check an
/// application runs in its own fuzz target (decodes as a `T`, re-encodes,
/// and the re-encoding decodes to an equal `T`); for each that decodes,
/// this asserts on top that a typed request, response and notification
/// carrying it between two [`Session`]s arrive with exactly the bytes of
/// `encode_body` and decode to that value.
///
/// `T`'s `PartialEq` must hold for every decoded value (no `f32`/`f64` that
/// can be NaN). The allocation bound allows [`SERDE_PREALLOC`] on top of
/// [`DECODE_EXPANSION`] times the input, which assumes `T` is not much
/// larger in memory than on the wire.
pub fn app_body<T>(data: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let _limit = LimitGuard::set(DECODE_EXPANSION * data.len() + SERDE_PREALLOC + SLACK);
    if mode & 1 == 0 {
        carry::<T>(rest);
        return;
    }
    let mut dec = FrameDecoder::new(u32::try_from(rest.len()).unwrap_or(u32::MAX));
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(frame)) = dec.decode(&mut buf) {
        if let Ok(
            Message::Notify(body)
            | Message::Request {
                body: RequestBody::App(body),
                ..
            }
            | Message::Response {
                body: ResponseBody::App(body),
                ..
            },
        ) = Message::decode(&frame)
        {
            carry::<T>(&body);
        }
    }
}

/// Checks `body` as a `T`, and when it is one, carries it between two
/// sessions as a typed request, notification and response.
fn carry<T>(body: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    let Some(value) = check_body::<T>(body) else {
        return;
    };
    let bytes = Bytes::from(encode_body(&value, usize::MAX).expect("a checked body re-encodes"));

    let mut parent = Session::new(Role::Parent, 1, SessionConfig::default());
    let mut child = Session::new(Role::Child, 2, SessionConfig::default());
    let id = parent
        .send_app_request(&value)
        .expect("a typed request is sent");
    parent.send_notify(&value).expect("a typed notify is sent");
    let [request, notify] = deliver(&mut parent, &mut child);
    assert_eq!(
        request,
        Message::Request {
            id,
            body: RequestBody::App(bytes.clone()),
        },
        "the typed request differs from encode_body"
    );
    assert_eq!(
        notify,
        Message::Notify(bytes.clone()),
        "the typed notify differs from encode_body"
    );
    assert_eq!(check_body::<T>(&bytes).as_ref(), Some(&value));

    child
        .send_app_response(id, &value)
        .expect("a typed response is sent");
    let [response] = deliver(&mut child, &mut parent);
    assert_eq!(
        response,
        Message::Response {
            id,
            body: ResponseBody::App(bytes),
        },
        "the typed response differs from encode_body"
    );
}

/// Hands everything `from` queued to `to`, and returns the `N` messages
/// that arrive after `from`'s `Hello` (and asserts there are no more).
fn deliver<const N: usize>(from: &mut Session, to: &mut Session) -> [Message; N] {
    let mut wire = Vec::new();
    let _ = from.poll_transmit(&mut wire);
    to.handle_input(&mut BytesMut::from(&wire[..]))
        .expect("an honest peer's frames are accepted");
    assert!(matches!(to.poll_event(), Some(Message::Hello(_))));
    let got: Vec<Message> = std::iter::from_fn(|| to.poll_event()).collect();
    got.try_into().unwrap_or_else(|got: Vec<Message>| {
        panic!("{} messages arrived, not {N}: {got:?}", got.len())
    })
}

/// A stand-in application body for the `app_body` fuzz target: most shapes
/// of the serde data model an application uses (not floats, see
/// [`app_body`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum ExampleBody {
    Config {
        name: String,
        verbose: bool,
        workers: Option<u16>,
        tags: Vec<String>,
        limits: BTreeMap<String, u64>,
    },
    Job(u64, Vec<u8>, char),
    Listen(Vec<Address>, Option<Endpoint>),
    Pair((i32, i64), [u8; 3], u128),
    Unit,
    Nested(Vec<Vec<u32>>),
    Reply(Result<Ready, RemoteError>),
}
