//! Fuzz input as a source of choices, and the arbitrary protocol values
//! (messages, addresses, reasons) built from it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::Bytes;
use readyfd_proto::{
    Address, Goodbye, GoodbyeReason, Hello, Message, PROTOCOL_VERSION, Ready, RemoteError,
    RemoteErrorKind, RequestBody, ResponseBody, Role,
};

/// Fuzz input as a source of choices: reads past the end give zeros.
pub(crate) struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input(data)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    pub(crate) fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0; N];
        let b = self.bytes(N);
        a[..b.len()].copy_from_slice(b);
        a
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// Up to 31 bytes as text (lossy, so the fuzzer still steers it).
    pub(crate) fn string(&mut self) -> String {
        let n = usize::from(self.byte() % 32);
        String::from_utf8_lossy(self.bytes(n)).into_owned()
    }

    /// Up to 63 bytes.
    pub(crate) fn blob(&mut self) -> Bytes {
        let n = usize::from(self.byte() % 64);
        Bytes::copy_from_slice(self.bytes(n))
    }

    /// A request id: mostly small, so that ids collide.
    pub(crate) fn id(&mut self) -> u64 {
        let b = self.byte();
        if b & 0x80 == 0 {
            u64::from(b & 7)
        } else {
            self.u64()
        }
    }

    pub(crate) fn option_u64(&mut self) -> Option<u64> {
        (self.byte() & 1 == 1).then(|| self.u64())
    }
}
fn arbitrary_role(b: u8) -> Role {
    if b & 1 == 0 {
        Role::Parent
    } else {
        Role::Child
    }
}

pub(crate) fn arbitrary_reason(u: &mut Input<'_>) -> GoodbyeReason {
    match u.byte() % 4 {
        0 => GoodbyeReason::Done,
        1 => GoodbyeReason::ShuttingDown,
        2 => GoodbyeReason::ProtocolError,
        _ => GoodbyeReason::VersionMismatch,
    }
}

pub(crate) fn arbitrary_error_kind(u: &mut Input<'_>) -> RemoteErrorKind {
    match u.byte() % 5 {
        0 => RemoteErrorKind::Unsupported,
        1 => RemoteErrorKind::BadRequest,
        2 => RemoteErrorKind::Failed,
        3 => RemoteErrorKind::ShuttingDown,
        _ => RemoteErrorKind::Dropped,
    }
}

fn arbitrary_socket_addr(u: &mut Input<'_>) -> SocketAddr {
    if u.byte() & 1 == 0 {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u.array::<4>()), u.u16()))
    } else {
        // flowinfo and scope id are not carried on the wire (PROTOCOL.md).
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(u.array::<16>()),
            u.u16(),
            0,
            0,
        ))
    }
}

fn arbitrary_address(u: &mut Input<'_>) -> Address {
    match u.byte() % 4 {
        0 => Address::Tcp(arbitrary_socket_addr(u)),
        1 => Address::Udp(arbitrary_socket_addr(u)),
        2 => Address::Unix(u.string()),
        _ => Address::Text(u.string()),
    }
}

pub(crate) fn arbitrary_ready(u: &mut Input<'_>) -> Ready {
    let mut ready = Ready::new(u.u32());
    for _ in 0..u.byte() % 4 {
        let name = u.string();
        ready = ready.address(name, arbitrary_address(u));
    }
    if u.byte() & 1 == 1 {
        ready = ready.status(u.string());
    }
    ready
}

/// A well-formed message with arbitrary fields (it may break every session
/// rule).
pub(crate) fn arbitrary_message(u: &mut Input<'_>) -> Message {
    match u.byte() % 7 {
        0 => Message::Hello(Hello {
            version: if u.byte() & 3 == 0 {
                u.u16()
            } else {
                PROTOCOL_VERSION
            },
            pid: u.u32(),
            role: arbitrary_role(u.byte()),
            max_frame: u.u32(),
        }),
        1 => Message::Ready(arbitrary_ready(u)),
        2 => Message::Request {
            id: u.id(),
            body: match u.byte() % 3 {
                0 => RequestBody::Ping,
                1 => RequestBody::Shutdown {
                    grace_ms: u.option_u64(),
                },
                _ => RequestBody::App(u.blob()),
            },
        },
        3 => Message::Response {
            id: u.id(),
            body: match u.byte() % 3 {
                0 => ResponseBody::Ok,
                1 => ResponseBody::App(u.blob()),
                _ => ResponseBody::Error(RemoteError {
                    kind: arbitrary_error_kind(u),
                    message: u.string(),
                }),
            },
        },
        4 => Message::Notify(u.blob()),
        5 => Message::Status(u.string()),
        _ => Message::Goodbye(Goodbye {
            reason: arbitrary_reason(u),
            message: u.string(),
        }),
    }
}
