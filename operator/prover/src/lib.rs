//! `proofmesh-prover`: real Groth16/BN254 proving stages usable as proofmesh workflow tasks.
//!
//! - [`circuits`]: the leaf, aggregate and final circuits and their shared public statement.
//! - [`poseidon`]: the Poseidon hash, natively and in-circuit.
//! - [`keys`]: the insecure deterministic dev setup, embedded verifying keys, cached proving keys.
//! - [`proof_file`]: the versioned proof file format; [`witness`]: the batch data format.
//! - [`stages`]: the stages (`witness`, `leaf`, `aggregate`, `final`) as functions of bytes, and
//!   [`verify_proof_bytes`], which nodes and matchmakers call to check a result.
//! - [`pipeline`]: the whole pipeline in one process; [`solidity`]: the on-chain verifier.
//!
//! Aggregation is NOT in-circuit recursion: an aggregating stage verifies its children natively
//! and proves a statement over their digests. See docs/proving.md for what that implies.

pub mod circuits;
pub mod error;
pub mod field;
mod header;
pub mod keys;
pub mod pipeline;
pub mod poseidon;
pub mod proof_file;
pub mod solidity;
pub mod stages;
pub mod witness;

pub use circuits::CircuitKind;
pub use error::{Error, Result};
pub use proof_file::ProofFile;
pub use stages::{verify_proof_bytes, PublicInputs};
