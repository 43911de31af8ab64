//! `proofmesh-prover`: real Groth16/BN254 proving stages usable as workflow tasks.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("proofmesh-prover: not built yet")
}
