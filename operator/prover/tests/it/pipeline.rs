use ark_bn254::Fr;
use proofmesh_prover::circuits::{aggregate_digest, final_commitment, leaf_digest, MAX_ARITY};
use proofmesh_prover::witness::Witness;
use proofmesh_prover::{field, verify_proof_bytes, CircuitKind, Error};

use crate::{flip, run, BLOCK};

#[test]
fn final_proof_verifies_and_commits_to_the_batch() {
    let run = run();
    let p = verify_proof_bytes(&run.final_proof).expect("final proof verifies");
    assert_eq!(p.circuit, CircuitKind::Final);
    assert_eq!((p.block, p.first, p.count), (BLOCK, 0, 4));

    // Recompute the commitment from the batch data alone: the proofs must attest to exactly it.
    let w = Witness::decode(&run.witness).expect("witness decodes");
    let d: Vec<Fr> = w
        .leaves
        .iter()
        .enumerate()
        .map(|(i, c)| leaf_digest(BLOCK, i as u64, c))
        .collect();
    let pad = |a: Fr, b: Fr| {
        let mut s = [Fr::from(0u64); MAX_ARITY];
        s[0] = a;
        s[1] = b;
        s
    };
    let left = aggregate_digest(BLOCK, 0, 2, &pad(d[0], d[1]));
    let right = aggregate_digest(BLOCK, 2, 2, &pad(d[2], d[3]));
    let root = aggregate_digest(BLOCK, 0, 4, &pad(left, right));
    assert_eq!(
        p.digest,
        field::to_be_bytes(&final_commitment(BLOCK, 4, root))
    );

    for (i, leaf) in run.leaves.iter().enumerate() {
        let p = verify_proof_bytes(leaf).expect("leaf proof verifies");
        assert_eq!(
            (p.circuit, p.first, p.count),
            (CircuitKind::Leaf, i as u64, 1)
        );
        assert_eq!(p.digest, field::to_be_bytes(&d[i]));
    }
    let p = verify_proof_bytes(&run.root).expect("root proof verifies");
    assert_eq!(
        (p.circuit, p.first, p.count),
        (CircuitKind::Aggregate, 0, 4)
    );
    assert_eq!(p.digest, field::to_be_bytes(&root));
}

#[test]
fn every_one_byte_tamper_of_the_final_proof_fails() {
    let proof = &run().final_proof;
    for at in 0..proof.len() {
        let err = verify_proof_bytes(&flip(proof, at)).expect_err("tampered proof must fail");
        assert!(
            matches!(err, Error::MalformedProof(_) | Error::InvalidProof(_)),
            "byte {at}: unexpected error {err}"
        );
    }
}

#[test]
fn a_proof_relabelled_as_another_circuit_fails() {
    let mut proof = run().root.clone();
    proof[5] = CircuitKind::Final.tag();
    assert!(matches!(
        verify_proof_bytes(&proof),
        Err(Error::InvalidProof(CircuitKind::Final))
    ));
}

#[test]
fn truncated_and_extended_files_are_malformed() {
    let proof = &run().final_proof;
    for bad in [&proof[..proof.len() - 1], &proof[..3], &[][..]] {
        assert!(matches!(
            verify_proof_bytes(bad),
            Err(Error::MalformedProof(_))
        ));
    }
    let mut long = proof.clone();
    long.push(0);
    assert!(matches!(
        verify_proof_bytes(&long),
        Err(Error::MalformedProof(_))
    ));
}
