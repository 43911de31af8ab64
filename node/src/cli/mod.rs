//! Subcommands of the `proofmesh` binary.

pub mod devnet;
pub mod keys;
pub mod workflow;
pub mod operators;
pub mod result;
pub mod rpc_args;
pub mod status;
pub mod submit;
