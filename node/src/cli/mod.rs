//! Subcommands of the `proofmesh` binary.

pub mod devnet;
pub mod keys;
pub mod workflow;
