//! The body codec: the one place that knows the body encoding is bincode.
//!
//! Every message field and every application body is encoded with bincode
//! 2.0.1's serde support under one pinned configuration, `CONFIG`:
//! little-endian, fixed-width integers, no implicit limit. Nothing outside this
//! module names a bincode type, so the encoding could be swapped (for example
//! for `wincode`, which writes the same bytes) by rewriting this file alone.
//!
//! Decoding is always from a complete frame payload, and always under a byte
//! limit derived from that payload's length, so a hostile inner length (a
//! `String` claiming 2^60 bytes) fails before anything is allocated for it.

use bincode::config::{self, Configuration, Fixint, LittleEndian, NoLimit};
use bincode::enc::write::Writer;
use std::fmt;

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, Visitor};

use crate::error::{DecodeError, EncodeError};

/// The pinned configuration. `standard()` with varints replaced by
/// fixed-width little-endian integers, which peers in other languages
/// implement with one `struct.pack` call per field.
const CONFIG: Configuration<LittleEndian, Fixint, NoLimit> = config::standard()
    .with_little_endian()
    .with_fixed_int_encoding();

/// A bincode writer that appends to a `Vec<u8>` and refuses to grow the
/// output past `limit` bytes, so encoding an oversized value stops early
/// instead of building the whole thing first.
struct LimitedWriter<'a> {
    out: &'a mut Vec<u8>,
    limit: usize,
}

impl Writer for LimitedWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        if self.out.len() + bytes.len() > self.limit {
            return Err(bincode::error::EncodeError::Other("limit"));
        }
        // serde hands a `Vec<u8>` over one byte at a time: a push is
        // cheaper than a one-byte `memcpy`.
        if let [b] = bytes {
            self.out.push(*b);
        } else {
            self.out.extend_from_slice(bytes);
        }
        Ok(())
    }
}

/// Appends the encoding of `value` to `out`, failing with
/// [`EncodeError::TooLarge`] once `out` would grow beyond `limit` bytes in
/// total. On error, `out` may hold a partial encoding: callers truncate it.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), EncodeError> {
    let start = out.len();
    let writer = LimitedWriter { out, limit };
    bincode::serde::encode_into_writer(value, writer, CONFIG).map_err(|e| match e {
        bincode::error::EncodeError::Other("limit") => EncodeError::TooLarge {
            len: None,
            max: limit.saturating_sub(start),
        },
        other => EncodeError::Serialize(other.to_string()),
    })
}

/// Decodes a `T` that must use every byte of `bytes`.
///
/// # Errors
/// [`DecodeError::TrailingBytes`] when the value ends before the slice does,
/// and every error of [`decode_prefix`].
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    exactly(decode_prefix(bytes)?, bytes.len())
}

/// Runs `$decode` with `$config` set to [`CONFIG`] under the limit
/// [`decode_prefix`] describes for a payload of `$bytes`, mapping bincode's
/// error; one instance per exponent, as the limit is a const generic.
macro_rules! with_limit_for {
    ($bytes:expr, |$config:ident| $decode:expr) => {{
        let need = $bytes.len().max(1).next_power_of_two();
        with_limit_for!(@bits need, $config, $decode,
            4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32)
    }};
    (@bits $need:ident, $config:ident, $decode:expr, $($bits:literal)*) => {{
        $(
            if $need <= (1usize << $bits) {
                let $config = CONFIG.with_limit::<{ 1usize << $bits }>();
                return $decode.map_err(DecodeError::from_bincode);
            }
        )*
        Err(DecodeError::LimitExceeded)
    }};
}

/// Decodes a `T` from the start of `bytes`, returning it and the number of
/// bytes it used, under a limit derived from `bytes.len()`.
///
/// bincode's limit is a const generic: pick the smallest power of two, at
/// least 16, that is at least the payload length, so that a valid message
/// always fits and a hostile claim can reserve less than twice the (already
/// bounded) payload, or 16 bytes for a tiny one. Every exponent from 4 to 32 is instantiated: stepping
/// by two would halve the copies of each decoder but let a claim reserve
/// four times the payload.
///
/// The limit counts every byte read (each integer claims its width) plus
/// each string's claimed length before its buffer is allocated. A claim that
/// takes the total past the limit fails at once with
/// [`DecodeError::LimitExceeded`]; a claim within it gets its zeroed buffer,
/// then fails with [`DecodeError::UnexpectedEnd`] when the payload runs out.
/// Which of the two a truncated message reports thus depends on the
/// payload's length; both mean the same to a peer.
///
/// Only strings and byte buffers (`String`, and `serde_bytes`-style
/// `deserialize_byte_buf`) claim their length. serde sequences, `Vec<u8>`
/// included, go through `deserialize_seq`, which claims nothing: they
/// pre-allocate at most serde's cautious 1 MiB and then fail when the
/// payload runs out of bytes. readyfd's own messages hold no sequence but
/// `Ready::addresses`, which does not pre-allocate from the claim.
pub(crate) fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    with_limit_for!(bytes, |config| bincode::serde::decode_from_slice::<T, _>(
        bytes, config
    ))
}

/// `(value, used)` of a decoding that must use every byte of a payload of
/// `len` bytes.
fn exactly<T>((value, used): (T, usize), len: usize) -> Result<T, DecodeError> {
    if used != len {
        return Err(DecodeError::TrailingBytes { extra: len - used });
    }
    Ok(value)
}

impl DecodeError {
    fn from_bincode(e: bincode::error::DecodeError) -> Self {
        use bincode::error::DecodeError as B;
        match e {
            B::UnexpectedEnd { additional } => DecodeError::UnexpectedEnd { additional },
            B::LimitExceeded => DecodeError::LimitExceeded,
            B::Utf8 { .. } => DecodeError::InvalidUtf8,
            B::UnexpectedVariant {
                found, type_name, ..
            } => DecodeError::InvalidTag {
                what: type_name,
                tag: found,
            },
            B::InvalidBooleanValue(v) | B::InvalidCharEncoding([v, ..]) => {
                DecodeError::InvalidTag {
                    what: "bool or char",
                    tag: u32::from(v),
                }
            }
            B::OtherString(msg) => match serde_variant_index(&msg) {
                Some((what, tag)) => DecodeError::InvalidTag { what, tag },
                None => DecodeError::Invalid(msg),
            },
            other => DecodeError::Invalid(other.to_string()),
        }
    }
}

/// serde rejects an out-of-range enum variant index itself, with text that
/// bincode passes on as a string: ``invalid value: integer `7`, expected
/// variant index 0 <= i < 4`` from derived enums, ``invalid value: integer
/// `7`, expected `V4` or `V6` `` from `SocketAddr`. Recover the index and
/// the enum, so that a bad tag is classified as [`DecodeError::InvalidTag`]
/// like a bad `Option` or `bool` tag.
fn serde_variant_index(msg: &str) -> Option<(&'static str, u32)> {
    let rest = msg.strip_prefix("invalid value: integer `")?;
    let (n, expected) = rest.split_once('`')?;
    let what = if expected.starts_with(", expected variant index") {
        "enum variant"
    } else if expected == ", expected `V4` or `V6`" {
        "SocketAddr variant"
    } else {
        return None;
    };
    Some((what, n.parse().ok()?))
}

/// Encodes an application value as a standalone body (what a `Notify`
/// payload or the tail of an application `Request`/`Response` holds).
///
/// # Errors
/// [`EncodeError::TooLarge`] past `limit` bytes, [`EncodeError::Serialize`]
/// when the value's `Serialize` impl fails.
pub fn encode_body<T: Serialize + ?Sized>(value: &T, limit: usize) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(value, &mut out, limit)?;
    Ok(out)
}

/// Decodes an application body that must fill `bytes` exactly.
///
/// A body that is a byte buffer itself (`serde_bytes::ByteBuf`, which asks
/// serde for a `byte_buf`) is copied once out of `bytes`, rather than into
/// a zero-filled buffer of the claimed length first as bincode does.
///
/// # Errors
/// Any [`DecodeError`]: truncated input, invalid UTF-8, an unknown enum
/// variant, trailing bytes, or an inner length beyond the payload.
pub fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    exactly(decode_body_prefix(bytes)?, bytes.len())
}

/// [`decode_prefix`] through [`BorrowBytes`].
fn decode_body_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    with_limit_for!(bytes, |config| bincode::serde::seed_decode_from_slice(
        BorrowBytes::<T>(PhantomData),
        bytes,
        config
    ))
}

/// Deserializes a `T` through [`BytesFromInput`].
struct BorrowBytes<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for BorrowBytes<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(BytesFromInput(d))
    }
}

/// A deserializer that answers a request for an owned byte buffer
/// (`deserialize_byte_buf`) with the bytes borrowed from the input
/// (`deserialize_bytes`): the visitor copies them once into its buffer
/// (`to_vec`), where bincode would first allocate a zero-filled buffer of
/// the claimed length and then copy into it. The wire is the same (a `u64`
/// length, then the bytes), and no buffer is sized by a claim: a borrowed
/// slice exists in the input or the decoding fails. Everything else is
/// passed on as it is; it applies to the top-level value (and only there:
/// nested values are decoded by bincode's own deserializer).
struct BytesFromInput<D>(D);

macro_rules! pass_on {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method(visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for BytesFromInput<D> {
    type Error = D::Error;

    pass_on!(
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_option
        deserialize_unit deserialize_seq deserialize_map deserialize_identifier
        deserialize_ignored_any
    );

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_bytes(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// Decodes `bytes` as an application body of type `T`, as readyfd decodes
/// one on arrival, and when it decodes, checks that the value survives the
/// round trip: its encoding decodes to an equal value. Returns the value, or
/// `None` when the bytes are not a `T`.
///
/// This is the check for a fuzz target of your own body types: any bytes
/// at all are fair input, and a panic is a finding. Byte-for-byte equality
/// with `bytes` is not required: a `HashMap` with a duplicate key, for one,
/// decodes fine and re-encodes shorter. bincode has no recursion limit, so
/// a recursive `T` (`enum Tree { Node(Vec<Tree>) }`) lets a deep enough
/// body overflow the stack: bound the depth in the type, or the input length
/// in the target.
///
/// # Panics
/// When a decoded value does not re-encode, or its encoding does not decode
/// to an equal value: `T`'s `Serialize`, `Deserialize` and `PartialEq`
/// disagree (a float that can be NaN, a `Deserialize` that normalises
/// what `Serialize` keeps).
///
/// # Example
/// A cargo-fuzz target `fuzz/fuzz_targets/command.rs` is the line
/// `libfuzzer_sys::fuzz_target!(|data: &[u8]| { check_body::<Command>(data); });`
/// around this call:
/// ```
/// use readyfd_proto::codec::{check_body, encode_body};
///
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// enum Command {
///     Start { name: String },
///     Stop(u32),
/// }
///
/// let bytes = encode_body(&Command::Stop(7), usize::MAX).unwrap();
/// assert_eq!(check_body::<Command>(&bytes), Some(Command::Stop(7)));
/// assert_eq!(check_body::<Command>(b"\x05\0\0\0"), None); // no variant 5
/// ```
pub fn check_body<T>(bytes: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    let value = decode_body::<T>(bytes).ok()?;
    let again = encode_body(&value, usize::MAX)
        .unwrap_or_else(|e| panic!("decoded {value:?} does not re-encode: {e}"));
    match decode_body::<T>(&again) {
        Ok(v) if v == value => Some(value),
        other => panic!("decoded {value:?}, whose encoding decodes to {other:?}"),
    }
}
