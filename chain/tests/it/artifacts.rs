//! The committed artifacts in chain/abi must match a fresh `forge build` of contracts/.

use proofmesh_chain::anvil::{forge_path, repo_root};
use proofmesh_chain::bindings::artifact_path;
use std::process::Command;

#[test]
fn artifacts_are_fresh() {
    let forge = forge_path();
    assert!(
        forge.exists(),
        "{} not found: run scripts/install-foundry (scripts/test does) or set PROOFMESH_FORGE",
        forge.display()
    );
    let contracts = repo_root().join("contracts");
    let out = Command::new(&forge)
        .arg("build")
        .arg("--quiet")
        .current_dir(&contracts)
        .output()
        .expect("run forge build");
    assert!(
        out.status.success(),
        "forge build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (file, name) in [
        ("ProofMarket.sol", "ProofMarket"),
        ("TestVerifier.sol", "TestVerifier"),
        ("Groth16ProofVerifier.sol", "Groth16ProofVerifier"),
    ] {
        let fresh: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                contracts
                    .join("out")
                    .join(file)
                    .join(format!("{name}.json")),
            )
            .expect("read forge output"),
        )
        .expect("parse forge output");
        let committed: serde_json::Value = serde_json::from_slice(
            &std::fs::read(artifact_path(name)).expect("read committed artifact"),
        )
        .expect("parse committed artifact");
        assert_eq!(
            fresh["abi"], committed["abi"],
            "chain/abi/{name}.json ABI is stale: run chain/abi/update.sh"
        );
        assert_eq!(
            fresh["bytecode"]["object"], committed["bytecode"]["object"],
            "chain/abi/{name}.json bytecode is stale: run chain/abi/update.sh"
        );
    }
}
