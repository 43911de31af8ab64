//! Everything derived from the circuit keys is checked against a fresh deterministic setup, so a
//! circuit change without regeneration fails here (regenerate with the commands in the errors).

use std::path::PathBuf;

use proofmesh_prover::keys::{embedded_vk_bytes, setup, vk_to_bytes};
use proofmesh_prover::solidity::{self, Calldata};
use proofmesh_prover::{verify_proof_bytes, CircuitKind};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn embedded_verifying_keys_match_the_deterministic_setup() {
    for kind in CircuitKind::ALL {
        let pk = setup(kind).expect("setup");
        assert!(
            vk_to_bytes(&pk.vk) == embedded_vk_bytes(kind),
            "operator/prover/keys/{kind}.vk is stale: run \
             `proofmesh-prover export-keys --out operator/prover/keys` and rebuild"
        );
    }
}

#[test]
fn generated_solidity_is_up_to_date() {
    let dir = repo().join("contracts/src/generated");
    let expected = [
        (
            solidity::VERIFIER_FILE,
            solidity::render_verifier().expect("render"),
        ),
        (solidity::ADAPTER_FILE, solidity::render_adapter()),
    ];
    for (name, text) in expected {
        let on_disk = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            on_disk == text,
            "contracts/src/generated/{name} is stale: run \
             `proofmesh-prover export-verifier --out contracts/src/generated`"
        );
    }
}

#[test]
fn forge_fixture_is_a_valid_final_proof_and_up_to_date() {
    let dir = repo().join("contracts/test/fixtures");
    let proof = std::fs::read(dir.join("final.proof")).expect("fixture final.proof");
    let p = verify_proof_bytes(&proof).expect("the committed fixture proof verifies");
    assert_eq!(p.circuit, CircuitKind::Final);
    let calldata = Calldata::from_proof_file(&proof).expect("calldata");
    assert_eq!(calldata.proof.len(), 256);
    let sol = std::fs::read_to_string(dir.join("FinalProofFixture.sol")).unwrap_or_default();
    let raw = std::fs::read(dir.join("final.calldata")).unwrap_or_default();
    assert!(
        sol == calldata.to_solidity_fixture("FinalProofFixture") && raw == calldata.proof,
        "contracts/test/fixtures is stale: run `proofmesh-prover calldata \
         contracts/test/fixtures/final.proof --sol contracts/test/fixtures/FinalProofFixture.sol \
         --out contracts/test/fixtures/final.calldata`"
    );
}
