//! The body codec: the one place that knows the body encoding is bincode.
//!
//! Every message field and every application body is encoded with bincode
//! 2.0.1's serde support under one pinned configuration, [`CONFIG`]-equivalent:
//! little-endian, fixed-width integers, no implicit limit. Nothing outside this
//! module names a bincode type, so the encoding could be swapped (for example
//! for `wincode`, which writes the same bytes) by rewriting this file alone.
//!
//! Decoding is always from a complete frame payload, and always under a byte
//! limit derived from that payload's length, so a hostile inner length (a
//! `String` claiming 2^60 bytes) fails before anything is allocated for it.

use bincode::config::{self, Configuration, Fixint, LittleEndian, NoLimit};
use bincode::enc::write::Writer;
use serde::Serialize;
use serde::de::DeserializeOwned;

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
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        if self.out.len() + bytes.len() > self.limit {
            return Err(bincode::error::EncodeError::Other("limit"));
        }
        self.out.extend_from_slice(bytes);
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

/// Decodes a `T` from the start of `bytes`, returning it and the number of
/// bytes it used. Allocation for inner lengths is bounded by twice
/// `bytes.len()` (see [`decode_limited`]).
pub(crate) fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    decode_limited(bytes)
}

/// Decodes a `T` that must use every byte of `bytes`.
///
/// # Errors
/// [`DecodeError::TrailingBytes`] when the value ends before the slice does,
/// and every error of [`decode_prefix`].
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

/// bincode's limit is a const generic: pick the smallest power of two that
/// is at least the payload length, so that a valid message always fits and a
/// hostile claim can reserve at most twice the (already bounded) frame.
///
/// Only byte buffers (`String`, `Vec<u8>`) claim against the limit; serde
/// sequences of other types pre-allocate at most serde's cautious 1 MiB and
/// then fail when the payload runs out of bytes.
fn decode_limited<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    macro_rules! dispatch {
        ($($bits:literal)*) => {{
            let need = bytes.len().max(1).next_power_of_two();
            $(
                if need <= (1usize << $bits) {
                    return bincode::serde::decode_from_slice::<T, _>(
                        bytes,
                        CONFIG.with_limit::<{ 1usize << $bits }>(),
                    )
                    .map_err(DecodeError::from_bincode);
                }
            )*
            Err(DecodeError::LimitExceeded)
        }};
    }
    dispatch!(4 6 8 10 12 14 16 18 20 22 24 26 28 30 32)
}

impl DecodeError {
    fn from_bincode(e: bincode::error::DecodeError) -> Self {
        use bincode::error::DecodeError as B;
        match e {
            B::UnexpectedEnd { additional } => DecodeError::UnexpectedEnd { additional },
            B::LimitExceeded => DecodeError::LimitExceeded,
            B::Utf8 { .. } => DecodeError::InvalidUtf8,
            B::UnexpectedVariant { found, type_name, .. } => DecodeError::InvalidTag {
                what: type_name,
                tag: found,
            },
            B::InvalidBooleanValue(v) | B::InvalidCharEncoding([v, ..]) => {
                DecodeError::InvalidTag { what: "bool or char", tag: u32::from(v) }
            }
            other => DecodeError::Invalid(other.to_string()),
        }
    }
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
/// # Errors
/// Any [`DecodeError`]: truncated input, invalid UTF-8, an unknown enum
/// variant, trailing bytes, or an inner length beyond the payload.
pub fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_exact(bytes)
}
