//! Contract bindings generated at compile time from the forge artifacts committed in
//! `chain/abi/` (ABI + creation bytecode). `out/` is not committed; `chain/abi/update.sh`
//! rebuilds with forge and rewrites these files, and the `artifacts_are_fresh` test checks
//! that they match a fresh `forge build`.

#![allow(missing_docs, clippy::too_many_arguments)]

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    ProofMarket,
    "abi/ProofMarket.json"
);

alloy::sol!(
    /// Test-only fault-injection verifier: accepts exactly
    /// `abi.encode(keccak256(abi.encode(publicInputs)))`. Never deploy outside tests/devnets.
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    TestVerifier,
    "abi/TestVerifier.json"
);

alloy::sol!(
    /// The real on-chain verifier of proofmesh final proofs (Groth16/BN254), generated from the
    /// final circuit's verifying key; its constructor deploys the generated `Groth16Verifier`.
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    Groth16ProofVerifier,
    "abi/Groth16ProofVerifier.json"
);

/// Path of the committed artifact of `name` (for the freshness check).
pub fn artifact_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("abi")
        .join(format!("{name}.json"))
}
