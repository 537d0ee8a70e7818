//! What the peer sends that the application handles, the same types for
//! the blocking and the tokio channel: requests (answered through
//! [`Responder`], which each channel implements), notifications and the
//! parent's `Shutdown`.

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use readyfd_proto::codec::decode_body;
use readyfd_proto::{RemoteError, RemoteErrorKind, ResponseBody, Session, SessionError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ChannelError;

/// The channel side that writes the answers of [`IncomingRequest`] and
/// [`ShutdownRequest`]: the blocking channel and the async one each
/// implement it, so both hand out the same request types.
pub(crate) trait Responder: Send + Sync {
    /// Queues what `f` adds to the session (told how many `fds` to
    /// announce; they are sent with that frame) and writes it, without
    /// waiting for the peer. On error the fds are closed.
    fn answer(
        &self,
        fds: Vec<OwnedFd>,
        f: &mut dyn FnMut(&mut Session, usize) -> Result<(), SessionError>,
    ) -> Result<(), ChannelError>;

    /// Answers the peer's request `id` with the raw `body` (and `fds`), as
    /// `answer` with `send_app_response_bytes` does; the driver may write
    /// the body from `body` itself rather than copy it.
    fn answer_bytes(&self, id: u64, body: &[u8], fds: Vec<OwnedFd>) -> Result<(), ChannelError>;
}

/// Something the peer sent that the application handles.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A request: answer it with [`IncomingRequest::respond`].
    Request(IncomingRequest),
    /// A one-way message.
    Notify(Notification),
    /// The parent asks this child to stop (only with
    /// [`ShutdownPolicy::Deliver`](crate::ShutdownPolicy::Deliver)).
    Shutdown(ShutdownRequest),
}

/// A request from the peer. Dropping it unanswered answers it with a
/// [`RemoteErrorKind::Dropped`] error, so the peer never waits forever.
///
/// Answering does not wait: the answer is queued and written as far as the
/// socket takes it, the rest by the channel's I/O thread (or task).
pub struct IncomingRequest {
    id: u64,
    body: Bytes,
    fds: Vec<OwnedFd>,
    answer: Option<Arc<dyn Responder>>,
}

impl fmt::Debug for IncomingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingRequest")
            .field("id", &self.id)
            .field("len", &self.body.len())
            .field("fds", &self.fds.len())
            .finish()
    }
}

impl IncomingRequest {
    pub(crate) fn new(
        id: u64,
        body: Bytes,
        fds: Vec<OwnedFd>,
        answer: Arc<dyn Responder>,
    ) -> IncomingRequest {
        IncomingRequest {
            id,
            body,
            fds,
            answer: Some(answer),
        }
    }

    /// Answers through `answer` from now on (a channel that becomes a
    /// [`DirectChannel`](crate::DirectChannel) takes its queued requests).
    pub(crate) fn retarget(&mut self, answer: Arc<dyn Responder>) {
        if let Some(a) = &mut self.answer {
            *a = answer;
        }
    }

    /// The file descriptors the peer sent with the request (close-on-exec),
    /// in the order it attached them. They are closed when the request is
    /// dropped, unless taken with [`take_fds`](Self::take_fds).
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// Takes ownership of the file descriptors the peer sent with the
    /// request; later calls return none.
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fds)
    }

    /// The request's id (unique among the peer's unanswered requests).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The raw body, in the application's encoding.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// The raw body as a [`Bytes`]: a slice of the frame it arrived in,
    /// shared rather than copied (cloning it only counts a reference). It
    /// is what the peer sent with
    /// [`Channel::request_bytes`](crate::Channel::request_bytes), byte for
    /// byte, or the encoding of the value it sent with
    /// [`Channel::request`](crate::Channel::request).
    ///
    /// Sharing has a cost: while any such `Bytes` lives, so does the read
    /// buffer it is a slice of (64 KiB or more, with the frames read along
    /// with it). Copy out (`to_vec`) a small body that you keep for long.
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }

    /// Decodes the body as `T`.
    ///
    /// # Errors
    /// [`ChannelError::Decode`] when it is not a `T`. Answer such a request
    /// with [`reject`](Self::reject) and [`RemoteErrorKind::BadRequest`].
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ChannelError> {
        decode_as(&self.body)
    }

    /// Answers with `body`.
    ///
    /// # Errors
    /// [`ChannelError::Encode`] when `body` is too large for the peer (the
    /// request is then answered with an error instead);
    /// [`ChannelError::Closed`].
    pub fn respond<T: Serialize + ?Sized>(self, body: &T) -> Result<(), ChannelError> {
        self.respond_with_fds(body, Vec::new())
    }

    /// Answers with `body` and hands the peer `fds` (at most
    /// [`MAX_FDS_PER_FRAME`](readyfd_proto::MAX_FDS_PER_FRAME)), which travel
    /// with the answer's bytes (`SCM_RIGHTS`); our copies are closed once
    /// sent. The peer gets them with its answer
    /// ([`Channel::request_with_fds`](crate::Channel::request_with_fds)).
    ///
    /// # Errors
    /// As [`respond`](Self::respond), and [`ChannelError::Encode`] for more
    /// than 253 fds (the request is then answered with an error). On any
    /// error the fds are closed.
    pub fn respond_with_fds<T: Serialize + ?Sized>(
        mut self,
        body: &T,
        fds: Vec<OwnedFd>,
    ) -> Result<(), ChannelError> {
        let answer = self.answer.take().expect("answered once");
        let id = self.id;
        let r = answer.answer(fds, &mut |s, n| s.send_app_response_with_fds(id, body, n));
        if let Err(ChannelError::Encode(e)) = &r {
            // The peer still gets an answer: an error that says why.
            let _ = answer_error(&*answer, id, RemoteErrorKind::Failed, e.to_string());
        }
        r
    }

    /// Answers with `body` as it is: the answer's payload is these bytes,
    /// with no serde work, written from `body` itself when nothing else is
    /// being sent (2 KiB and up; only what the socket does not take at once
    /// is copied, for the channel to write later) (PROTOCOL.md,
    /// section 4, "Application bodies"). The peer gets them back as they
    /// are from [`Channel::request_bytes`](crate::Channel::request_bytes).
    ///
    /// # Errors
    /// As [`respond`](Self::respond).
    pub fn respond_bytes(self, body: &[u8]) -> Result<(), ChannelError> {
        self.respond_bytes_with_fds(body, Vec::new())
    }

    /// [`respond_bytes`](Self::respond_bytes), handing the peer `fds` with
    /// the answer, as [`respond_with_fds`](Self::respond_with_fds) does.
    ///
    /// # Errors
    /// As [`respond_with_fds`](Self::respond_with_fds). On any error the
    /// fds are closed.
    pub fn respond_bytes_with_fds(
        mut self,
        body: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), ChannelError> {
        let answer = self.answer.take().expect("answered once");
        let id = self.id;
        let r = answer.answer_bytes(id, body, fds);
        if let Err(ChannelError::Encode(e)) = &r {
            let _ = answer_error(&*answer, id, RemoteErrorKind::Failed, e.to_string());
        }
        r
    }

    /// Answers with an error of kind `kind`.
    ///
    /// # Errors
    /// [`ChannelError::Closed`].
    pub fn reject(
        mut self,
        kind: RemoteErrorKind,
        message: impl Into<String>,
    ) -> Result<(), ChannelError> {
        let answer = self.answer.take().expect("answered once");
        answer_error(&*answer, self.id, kind, message.into())
    }
}

impl Drop for IncomingRequest {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            let _ = answer_error(
                &*answer,
                self.id,
                RemoteErrorKind::Dropped,
                "the request was dropped without an answer".into(),
            );
        }
    }
}

fn answer_error(
    answer: &dyn Responder,
    id: u64,
    kind: RemoteErrorKind,
    message: String,
) -> Result<(), ChannelError> {
    let error = RemoteError { kind, message };
    answer.answer(Vec::new(), &mut |s, _| {
        s.send_response(id, ResponseBody::Error(error.clone()))
    })
}

/// A one-way message from the peer, with the file descriptors it carried.
#[derive(Debug)]
pub struct Notification {
    body: Bytes,
    fds: Vec<OwnedFd>,
}

impl Notification {
    /// A notification carrying `body` and `fds` (also made by the async
    /// channel).
    pub(crate) fn new(body: Bytes, fds: Vec<OwnedFd>) -> Notification {
        Notification { body, fds }
    }

    /// The file descriptors the peer sent with it (close-on-exec), in the
    /// order it attached them; closed with the notification unless taken.
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// Takes ownership of the file descriptors; later calls return none.
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fds)
    }

    /// The raw body, in the application's encoding.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// The raw body as a [`Bytes`]: a slice of the frame it arrived in,
    /// shared rather than copied. It is what the peer sent with
    /// [`Channel::notify_bytes`](crate::Channel::notify_bytes), byte for
    /// byte, or the encoding of the value it sent with
    /// [`Channel::notify`](crate::Channel::notify).
    ///
    /// As with [`IncomingRequest::body`], the read buffer it shares lives
    /// as long as it does: copy out a small body that you keep for long.
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }

    /// Decodes the body as `T`.
    ///
    /// # Errors
    /// [`ChannelError::Decode`] when it is not a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ChannelError> {
        decode_as(&self.body)
    }
}

/// The parent's request that this child stop. Dropping it acknowledges it.
pub struct ShutdownRequest {
    id: u64,
    grace: Option<Duration>,
    answer: Option<Arc<dyn Responder>>,
}

impl fmt::Debug for ShutdownRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownRequest")
            .field("grace", &self.grace)
            .finish()
    }
}

impl ShutdownRequest {
    pub(crate) fn new(
        id: u64,
        grace: Option<Duration>,
        answer: Arc<dyn Responder>,
    ) -> ShutdownRequest {
        ShutdownRequest {
            id,
            grace,
            answer: Some(answer),
        }
    }

    /// As [`IncomingRequest::retarget`].
    pub(crate) fn retarget(&mut self, answer: Arc<dyn Responder>) {
        if let Some(a) = &mut self.answer {
            *a = answer;
        }
    }

    /// How long the parent waits before it escalates to signals.
    pub fn grace(&self) -> Option<Duration> {
        self.grace
    }

    /// Acknowledges the request (the parent then waits for the exit).
    ///
    /// # Errors
    /// [`ChannelError::Closed`].
    pub fn acknowledge(mut self) -> Result<(), ChannelError> {
        let answer = self.answer.take().expect("answered once");
        let id = self.id;
        answer.answer(Vec::new(), &mut |s, _| {
            s.send_response(id, ResponseBody::Ok)
        })
    }
}

impl Drop for ShutdownRequest {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            let id = self.id;
            let _ = answer.answer(Vec::new(), &mut |s, _| {
                s.send_response(id, ResponseBody::Ok)
            });
        }
    }
}

/// Decodes an application body as `T`, naming `T` in the error.
pub(crate) fn decode_as<T: DeserializeOwned>(body: &[u8]) -> Result<T, ChannelError> {
    decode_body(body).map_err(|source| ChannelError::Decode {
        type_name: std::any::type_name::<T>(),
        source,
    })
}
