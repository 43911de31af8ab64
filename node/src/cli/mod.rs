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

/// The async runtime every command runs on (the node and the benches alike). tokio's defaults:
/// a shorter `event_interval` (3, 11) or `global_queue_interval` (7) measured no better on the
/// scaling bench and worse on the pipeline (bench/e2e.md).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
