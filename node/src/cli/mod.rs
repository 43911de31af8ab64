//! Subcommands of the `proofmesh` binary.

pub mod keys;
pub mod workflow;
