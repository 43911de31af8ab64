//! Subcommands of the `proofmesh` binary.

pub mod bench;
pub mod bench_pipeline;
pub mod chain_args;
pub mod devnet;
pub mod keys;
pub mod node;
pub mod operators;
pub mod result;
pub mod rpc_args;
pub mod status;
pub mod submit;
pub mod workflow;
