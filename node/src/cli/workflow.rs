//! `proofmesh workflow ...`

use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

/// Workflow file commands.
#[derive(Subcommand, Debug)]
pub enum WorkflowCommand {
    /// Check a workflow file and print a summary.
    Validate {
        /// Workflow file (TOML, or JSON by extension).
        file: PathBuf,
    },
    /// Print a workflow file's content id.
    Id {
        /// Workflow file.
        file: PathBuf,
    },
}

pub fn run(cmd: WorkflowCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkflowCommand::Validate { file } | WorkflowCommand::Id { file } => {
            anyhow::bail!("workflow commands are not built yet ({})", file.display())
        }
    }
}
