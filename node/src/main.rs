//! `proofmesh`: the proofmesh node daemon and command-line interface. A thin clap layer over the
//! library code; each subcommand lives in its own module under `cli/`.

mod cli;

#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// proofmesh: define a workflow, submit it, get a proof.
#[derive(Parser, Debug)]
#[command(name = "proofmesh", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate workflow files and compute their ids.
    #[command(subcommand)]
    Workflow(cli::workflow::WorkflowCommand),
    /// Generate and inspect node keys.
    #[command(subcommand)]
    Keys(cli::keys::KeysCommand),
    /// Run a local network of node processes.
    #[command(subcommand)]
    Devnet(cli::devnet::DevnetCommand),
    /// What a workflow file would cost at the asks of the operators a node saw lately, and which
    /// stages none could run (exit 3), before any escrow is opened.
    Quote(cli::quote::QuoteArgs),
    /// Submit a workflow file to a node; prints its id (--wait: follow it to the end).
    Submit(cli::submit::SubmitArgs),
    /// Show a workflow's state and per-stage progress (non-zero exit for an unknown id; --wait:
    /// follow it to the end).
    Status(cli::status::StatusArgs),
    /// List a workflow's tasks with their attempts and why failed ones failed (--state,
    /// --retried).
    Tasks(cli::tasks::TasksArgs),
    /// List the workflows a node holds, newest first (--state, --limit).
    Workflows(cli::workflows::WorkflowsArgs),
    /// Download a completed workflow's final outputs.
    Result(cli::result::ResultArgs),
    /// List known operators with their reputation counters.
    Operators(cli::operators::OperatorsArgs),
    /// Cancel a workflow as its requester: its tasks stop, accepted work is paid, the rest of
    /// the escrow goes back (--wait: until its status says failed).
    Cancel(cli::cancel::CancelArgs),
    /// Show a workflow's escrow on-chain (--refund: take back what is left after its deadline).
    Escrow(cli::escrow::EscrowArgs),
    /// Withdraw what the market credited to a key (an operator's pay, a released escrow).
    Claim(cli::escrow::ClaimArgs),
    /// Run a node (any mix of roles) until Ctrl-C or SIGTERM.
    Node(Box<proofmesh_node::config::NodeArgs>),
    /// Benchmarks over in-process nodes; the last line is `key=value` pairs.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `node` logs at its configuration's `log.filter` (file, then PROOFMESH_LOG, then the flag),
    // set once that is resolved; every other command at PROOFMESH_LOG or warnings only.
    if !matches!(cli.command, Command::Node(_)) {
        cli::init_logging(&std::env::var("PROOFMESH_LOG").unwrap_or_else(|_| "warn".into()));
    }
    let result = match cli.command {
        Command::Workflow(cmd) => cli::workflow::run(cmd),
        Command::Keys(cmd) => cli::keys::run(cmd),
        Command::Devnet(cmd) => cli::devnet::run(cmd),
        Command::Quote(args) => cli::quote::run(args),
        Command::Submit(args) => cli::submit::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::Tasks(args) => cli::tasks::run(args),
        Command::Workflows(args) => cli::workflows::run(args),
        Command::Result(args) => cli::result::run(args),
        Command::Operators(args) => cli::operators::run(args),
        Command::Cancel(args) => cli::cancel::run(args),
        Command::Escrow(args) => cli::escrow::run_escrow(args),
        Command::Claim(args) => cli::escrow::run_claim(args),
        Command::Node(args) => cli::node::run(*args),
        Command::Bench(cmd) => cli::bench::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line, never a backtrace.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
