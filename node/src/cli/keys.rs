//! `proofmesh keys ...`: node key files. The format (comments plus 64 hex characters of the
//! ed25519 secret) is `Keypair::to_file_string`; [`read_key_file`] is the one way to load it.

use anyhow::Context;
use clap::Subcommand;
use proofmesh_protocol::Keypair;
use std::io::Write;
use std::path::{Path, PathBuf};
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
        KeysCommand::Generate { out } => {
            let keypair = Keypair::generate();
            write_key_file(&out, &keypair)?;
            println!("{}", keypair.public());
        }
        KeysCommand::Show { file } => {
            let keypair = read_key_file(&file)?;
            println!("{}", keypair.public());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Create `path` with mode 0600 (never overwriting) and write the key into it.
pub fn write_key_file(path: &Path, keypair: &Keypair) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    // create_new: fail if anything exists there, atomically (no check-then-create race).
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists; refusing to overwrite a key (choose another --out)",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot create {}: {e}", path.display())
        }
    })?;
    file.write_all(keypair.to_file_string().as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Load a key file written by `proofmesh keys generate`.
pub fn read_key_file(path: &Path) -> anyhow::Result<Keypair> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    if meta.len() > 64 * 1024 {
        anyhow::bail!("{} is {} bytes: not a key file", path.display(), meta.len());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    Keypair::from_file_string(&text).with_context(|| format!("key file {}", path.display()))
}
