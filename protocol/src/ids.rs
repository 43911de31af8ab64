//! Content ids: blake3 of bytes (blobs) or of a value's canonical encoding (workflows, results).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A 32-byte blake3 digest naming a blob or a canonically encoded value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct ContentId(pub [u8; 32]);

impl ContentId {
    /// The id of raw bytes (blobs: inputs, outputs, proofs).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        ContentId(*blake3::hash(bytes).as_bytes())
    }

    /// The id of a value: blake3 of its canonical encoding.
    pub fn of_value<T: Serialize>(value: &T) -> Self {
        Self::of_bytes(&crate::encoding::encode(value))
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 8 bytes as hex, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

/// Why a string is not a content id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid content id {input:?}: expected 64 hex characters (an optional 0x prefix is allowed)"
)]
pub struct ParseContentIdError {
    input: String,
}

impl FromStr for ContentId {
    type Err = ParseContentIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseContentIdError {
            input: s.chars().take(80).collect(),
        };
        let hexpart = s.strip_prefix("0x").unwrap_or(s);
        let bytes = hex::decode(hexpart).map_err(|_| err())?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| err())?;
        Ok(ContentId(arr))
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", self.short())
    }
}
