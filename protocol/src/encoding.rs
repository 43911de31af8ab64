//! Canonical encoding: bincode 2 (serde mode) with the standard configuration and a hard size
//! limit on decode, so a hostile length prefix cannot make us allocate gigabytes.
//!
//! Canonical because every encoded type uses only ordered containers (`Vec`, `BTreeMap`) and
//! bincode's standard configuration is deterministic: the same value always gives the same bytes,
//! which is what content ids and signatures are computed over.

use serde::{de::DeserializeOwned, Serialize};

/// Largest encoded message accepted anywhere in the protocol (4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Largest of a node's own durable records that it reads back ([`decode_with_limit`]): an entry
/// of its matchmaker's log, or a snapshot of that matchmaker (256 MiB).
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Input is larger than the limit before decoding even starts.
    #[error("message is {size} bytes, larger than the {limit}-byte limit")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("undecodable message: {0}")]
    Malformed(String),
    /// Valid prefix, but bytes left over: not canonical.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Encode a value canonically. Encoding our own types cannot fail (no maps with non-string
/// keys, no unsized sequences), so this panics only on a programming error.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("protocol types always encode")
}

/// Decode a value, refusing oversized input, malformed bytes and trailing garbage.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_with_limit(bytes, MAX_MESSAGE_BYTES)
}

/// As [`decode`] with another limit: tighter for a message, or looser (up to
/// [`MAX_RECORD_BYTES`]) for a node's own durable records, which may be larger than any message.
pub fn decode_with_limit<T: DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, DecodeError> {
    let limit = limit.min(MAX_RECORD_BYTES);
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    // bincode's limit (what a length prefix may claim) is a compile-time constant: the
    // message limit, or the record limit for a node's own records.
    let decoded = if limit <= MAX_MESSAGE_BYTES {
        bincode::serde::decode_from_slice(bytes, config())
    } else {
        let records = bincode::config::standard().with_limit::<MAX_RECORD_BYTES>();
        bincode::serde::decode_from_slice(bytes, records)
    };
    let (value, read) = decoded.map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - read));
    }
    Ok(value)
}

/// Counts bytes instead of storing them.
struct Counter(usize);

impl bincode::enc::write::Writer for Counter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0 += bytes.len();
        Ok(())
    }
}

/// Length of [`encode`]'s output, without allocating it.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    let mut counter = Counter(0);
    bincode::serde::encode_into_writer(value, &mut counter, bincode::config::standard())
        .expect("protocol types always encode");
    counter.0
}
