//! Every stage rejects bad input with an error that says what is wrong.

use proofmesh_prover::stages::{aggregate, finalize, leaf, witness};
use proofmesh_prover::Error;

use crate::{flip, run};

fn bad_input(result: Result<Vec<u8>, Error>, needle: &str) {
    match result {
        Err(e) => assert!(
            e.to_string().contains(needle),
            "error {e:?} should mention {needle:?}"
        ),
        Ok(_) => panic!("stage accepted bad input (expected an error mentioning {needle:?})"),
    }
}

#[test]
fn witness_rejects_out_of_range_leaf_counts() {
    bad_input(witness(1, 0), "out of range");
    bad_input(witness(1, 1_000_000), "out of range");
    assert_eq!(
        witness(3, 2).expect("valid"),
        witness(3, 2).expect("valid"),
        "deterministic"
    );
    assert_ne!(witness(3, 2).expect("valid"), witness(4, 2).expect("valid"));
}

#[test]
fn leaf_rejects_bad_witnesses_and_indices() {
    let w = &run().witness;
    bad_input(leaf(&w[..w.len() - 1], 0), "expected exactly");
    bad_input(leaf(&flip(w, 0), 0), "magic");
    bad_input(leaf(&run().final_proof, 0), "magic");
    bad_input(leaf(w, 4), "--index 4 is out of range");
    // A scalar >= the field modulus is not canonical.
    let mut big = w.clone();
    big[21..53].fill(0xff);
    bad_input(leaf(&big, 0), "not canonical");
}

#[test]
fn aggregate_rejects_invalid_or_mismatched_children() {
    let r = run();
    bad_input(aggregate(&[]), "1 to 4 child proofs");
    bad_input(
        aggregate(&vec![r.leaves[0].clone(); 5]),
        "1 to 4 child proofs",
    );
    bad_input(
        aggregate(&[r.leaves[0].clone(), flip(&r.leaves[1], 100)]),
        "child proof 1",
    );
    bad_input(
        aggregate(&[r.leaves[0].clone(), r.leaves[2].clone()]),
        "not contiguous",
    );
    bad_input(
        aggregate(&[r.leaves[0].clone(), r.leaves[0].clone()]),
        "not contiguous",
    );
    bad_input(
        aggregate(std::slice::from_ref(&r.final_proof)),
        "final proof",
    );
    bad_input(
        aggregate(std::slice::from_ref(&r.witness)),
        "malformed proof",
    );
}

#[test]
fn aggregate_accepts_children_in_any_order() {
    let r = run();
    let p = aggregate(&[r.leaves[3].clone(), r.leaves[2].clone()]).expect("aggregates");
    let p = proofmesh_prover::verify_proof_bytes(&p).expect("verifies");
    assert_eq!((p.first, p.count), (2, 2));
}

#[test]
fn final_rejects_bad_roots() {
    let r = run();
    bad_input(finalize(&flip(&r.root, 60), None), "root proof");
    bad_input(finalize(&r.final_proof, None), "already a final proof");
    bad_input(finalize(&r.leaves[1], None), "from leaf 0");
    bad_input(finalize(&r.root, Some(5)), "covers 4 leaves");
}
