//! Integration tests of proofmesh-prover: real proofs end to end, stage input checks, the CLI
//! contract, and the staleness of everything generated from the keys.

mod cli;
mod generated;
mod pipeline;
mod stages;

use std::path::PathBuf;
use std::sync::OnceLock;

/// One real pipeline run (block 7, 4 leaves) shared by the tests of this binary.
pub struct Run {
    pub dir: PathBuf,
    pub witness: Vec<u8>,
    pub leaves: Vec<Vec<u8>>,
    pub root: Vec<u8>,
    pub final_proof: Vec<u8>,
}

pub const BLOCK: u64 = 7;

pub fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        // Kept for the whole test process: tests read the artifacts.
        let dir = tempfile::tempdir().expect("temp dir").keep();
        proofmesh_prover::pipeline::run(BLOCK, 4, &dir).expect("pipeline runs");
        let read = |name: &str| std::fs::read(dir.join(name)).expect(name);
        Run {
            witness: read("witness.bin"),
            leaves: (0..4)
                .map(|i| read(&format!("leaf-{i:04}.proof")))
                .collect(),
            root: read("agg-2-0000.proof"),
            final_proof: read("final.proof"),
            dir,
        }
    })
}

/// `bytes` with one bit flipped at `at`.
pub fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x01;
    out
}
