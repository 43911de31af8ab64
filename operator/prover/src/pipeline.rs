//! `proofmesh-prover pipeline`: the whole proving pipeline in one process (witness -> N leaves ->
//! binary aggregation tree -> final), writing every artifact, for scripts and benchmarks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::stages;

/// Timings and artifacts of one pipeline run.
#[derive(Debug, Clone)]
pub struct PipelineReport {
    pub leaves: u32,
    pub witness: Duration,
    /// One entry per leaf proof.
    pub leaf: Vec<Duration>,
    /// One entry per aggregation proof (each includes verifying its children).
    pub aggregate: Vec<Duration>,
    pub finalize: Duration,
    /// Verifying the final proof from its file.
    pub verify: Duration,
    pub final_proof: PathBuf,
}

fn write(path: PathBuf, bytes: &[u8]) -> Result<PathBuf> {
    std::fs::write(&path, bytes).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Runs the pipeline for `leaves` leaves of `block` into `out` (created if missing).
pub fn run(block: u64, leaves: u32, out: &Path) -> Result<PipelineReport> {
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;

    let t = Instant::now();
    let witness = stages::witness(block, leaves)?;
    let witness_time = t.elapsed();
    write(out.join("witness.bin"), &witness)?;

    let mut leaf_times = Vec::with_capacity(leaves as usize);
    let mut level = Vec::with_capacity(leaves as usize);
    for i in 0..leaves {
        let t = Instant::now();
        let proof = stages::leaf(&witness, u64::from(i))?;
        leaf_times.push(t.elapsed());
        write(out.join(format!("leaf-{i:04}.proof")), &proof)?;
        level.push(proof);
    }

    // Binary tree; a lone node at the end of a level moves up unchanged.
    let mut agg_times = Vec::new();
    let mut depth = 0;
    while level.len() > 1 {
        depth += 1;
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for (j, pair) in level.chunks(2).enumerate() {
            if pair.len() == 1 {
                next.push(pair[0].clone());
                continue;
            }
            let t = Instant::now();
            let proof = stages::aggregate(pair)?;
            agg_times.push(t.elapsed());
            write(out.join(format!("agg-{depth}-{j:04}.proof")), &proof)?;
            next.push(proof);
        }
        level = next;
    }

    let t = Instant::now();
    let final_proof = stages::finalize(&level[0], Some(u64::from(leaves)))?;
    let finalize_time = t.elapsed();
    let final_path = write(out.join("final.proof"), &final_proof)?;

    let t = Instant::now();
    stages::verify_proof_bytes(&final_proof)?;
    let verify_time = t.elapsed();

    Ok(PipelineReport {
        leaves,
        witness: witness_time,
        leaf: leaf_times,
        aggregate: agg_times,
        finalize: finalize_time,
        verify: verify_time,
        final_proof: final_path,
    })
}
