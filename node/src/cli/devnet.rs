//! `proofmesh devnet up | status | down`: a local network of separate node processes.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use proofmesh_node::devnet::{self, DevnetSpec, DevnetState};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Devnet commands.
#[derive(Subcommand, Debug)]
pub enum DevnetCommand {
    /// Start a local network and return once it is ready (every node healthy, every
    /// matchmaker hearing every matchmaker, every operator known to them and the gateway).
    Up(UpArgs),
    /// Print one `key=value` line per node: name= role= rpc= p2p= pid= alive= key= (its public
    /// key, for `network.matchmakers`; and eth= on a chain), after a `name=anvil role=chain rpc= pid= contract=` line when the devnet has one.
    Status(DirArg),
    /// Stop every node of the devnet, then its anvil (SIGTERM, then SIGKILL after 10 s).
    Down(DirArg),
}

/// `--dir`.
#[derive(Args, Debug)]
pub struct DirArg {
    /// Directory holding the devnet's configs, keys, data and logs.
    #[arg(long, default_value = ".devnet", env = "PROOFMESH_DEVNET_DIR")]
    pub dir: PathBuf,
}

/// `devnet up` arguments.
#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Operator nodes.
    #[arg(long, default_value_t = 4)]
    operators: usize,
    /// Matchmaker nodes.
    #[arg(long, default_value_t = 2)]
    matchmakers: usize,
    /// Tasks each operator runs at once at most.
    #[arg(long, default_value_t = 2)]
    operator_max_concurrent: usize,
    /// Tasks each operator holds queued beyond what runs now (CPU tasks; 0: none).
    #[arg(long, default_value_t = 4)]
    operator_queue_depth: usize,
    /// Network id.
    #[arg(long, default_value_t = 1337)]
    network_id: u64,
    /// Chain id (anvil's by default).
    #[arg(long, default_value_t = 31337)]
    chain_id: u64,
    /// Run without a chain: no anvil, no escrow, no payment or slashing on-chain.
    #[arg(long, conflicts_with_all = ["chain_rpc", "contract"])]
    no_chain: bool,
    /// Settle on this external chain instead of starting anvil (needs --contract; nodes get no
    /// Ethereum keys from the devnet then, so set them in the node configs).
    #[arg(long, requires = "contract")]
    chain_rpc: Option<String>,
    /// ProofMarket contract address.
    #[arg(long)]
    contract: Option<String>,
    /// Operator indices that return corrupted proofs (fault injection, for tests).
    #[arg(long, value_delimiter = ',')]
    malicious: Vec<usize>,
    /// Programs the malicious operators offer (comma-separated; default all), e.g. `final`.
    #[arg(long, value_delimiter = ',')]
    malicious_programs: Vec<String>,
    /// The `proofmesh-prover` binary (default: next to this binary).
    #[arg(long)]
    prover: Option<PathBuf>,
}

pub fn run(cmd: DevnetCommand) -> Result<ExitCode> {
    match cmd {
        DevnetCommand::Up(args) => {
            let me = std::env::current_exe().context("cannot locate the proofmesh binary")?;
            let prover = args
                .prover
                .unwrap_or_else(|| me.with_file_name("proofmesh-prover"));
            anyhow::ensure!(
                prover.exists(),
                "{} not found: build it (`cargo build --release -p proofmesh-prover`) or pass --prover",
                prover.display()
            );
            let anvil = !args.no_chain && args.chain_rpc.is_none();
            let spec = DevnetSpec {
                dir: args.dir.dir,
                operators: args.operators,
                matchmakers: args.matchmakers,
                proofmesh: me,
                prover,
                network_id: args.network_id,
                chain_id: args.chain_id,
                chain_rpc: args.chain_rpc,
                contract: args.contract,
                malicious_operators: args.malicious,
                operator_max_concurrent: args.operator_max_concurrent,
                operator_queue_depth: args.operator_queue_depth,
                anvil,
                operator_prices: Vec::new(),
                malicious_programs: args.malicious_programs,
                matchmaker_snapshot_every_events:
                    proofmesh_node::runtime::DEFAULT_SNAPSHOT_EVERY_EVENTS,
            };
            let state = devnet::up(&spec)?;
            for line in state.status_lines() {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        DevnetCommand::Status(dir) => {
            let state = DevnetState::load(&dir.dir)?;
            for line in state.status_lines() {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        DevnetCommand::Down(dir) => {
            let state = devnet::down(&dir.dir, Duration::from_secs(10))?;
            println!(
                "stopped {} nodes{}",
                state.nodes.len(),
                if state.chain.as_ref().is_some_and(|c| c.pid != 0) {
                    " and anvil"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
