//! `proofmesh keys ...`

use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

/// Key commands.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate a new ed25519 node key.
    Generate {
        /// Where to write the key (mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Show the public key of a key file.
    Show {
        /// Key file.
        file: PathBuf,
    },
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Generate { out } | KeysCommand::Show { file: out } => {
            anyhow::bail!("keys commands are not built yet ({})", out.display())
        }
    }
}
