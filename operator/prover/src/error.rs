//! The library's error type: every variant names what was wrong.

use std::path::PathBuf;

use crate::circuits::CircuitKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a well-formed proof file (bad magic, version, length, encoding).
    #[error("malformed proof file: {0}")]
    MalformedProof(String),
    /// The proof file is well formed but the Groth16 proof does not verify.
    #[error("invalid {0} proof: Groth16 verification failed")]
    InvalidProof(CircuitKind),
    /// The bytes are not a well-formed witness (batch data) file.
    #[error("malformed witness file: {0}")]
    MalformedWitness(String),
    /// A stage got inputs that are individually valid but do not fit together or its arguments.
    #[error("bad stage input: {0}")]
    BadInput(String),
    /// Circuit keys could not be produced or do not match the embedded verifying keys.
    #[error("circuit keys: {0}")]
    Keys(String),
    /// Proving failed (the witness does not satisfy the circuit, or arkworks failed).
    #[error("proving {circuit} failed: {reason}")]
    Proving {
        circuit: CircuitKind,
        reason: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
