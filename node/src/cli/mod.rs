//! Subcommands of the `proofmesh` binary.

pub mod bench;
pub mod bench_memory;
pub mod bench_pipeline;
pub mod cancel;
pub mod chain_args;
pub mod devnet;
pub mod escrow;
pub mod keys;
pub mod node;
pub mod operators;
pub mod quote;
pub mod result;
pub mod rpc_args;
pub mod status;
pub mod submit;
pub mod tasks;
pub mod workflow;
pub mod workflows;

/// Log to stderr at `filter` (a tracing `EnvFilter` directive; an invalid one logs warnings).
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

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
