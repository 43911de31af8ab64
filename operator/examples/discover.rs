//! Print what this machine would advertise, as JSON.
//!
//! `cargo run -p proofmesh-operator --example discover [-- --config operator.toml]`
//!
//! Without a config, discovery runs with no caps against the system temp dir. On a GPU host the
//! output lists each GPU (index, model, VRAM MiB, UUID) and `gpu_source` says whether NVML or
//! `nvidia-smi` found them; `notes` explains failed probes.

use anyhow::Context;
use proofmesh_operator::{discover, OperatorConfig, ResourceConfig};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (resources, work_dir) = match args.as_slice() {
        [] => (ResourceConfig::default(), std::env::temp_dir()),
        [flag, path] if flag == "--config" => {
            let config = OperatorConfig::load(&PathBuf::from(path)).context("loading --config")?;
            (config.resources, config.work_dir)
        }
        _ => anyhow::bail!("usage: discover [--config FILE]"),
    };
    let discovery = discover(&resources, &work_dir);
    println!("{}", serde_json::to_string_pretty(&discovery)?);
    Ok(())
}
