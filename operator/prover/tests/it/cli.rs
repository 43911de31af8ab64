//! The binary follows the program contract: inputs from $PROOFMESH_INPUT_DIR in name order,
//! output to $PROOFMESH_OUTPUT, non-zero exit and a clear stderr on bad input.

use std::process::{Command, Output};

use crate::{flip, run};

fn prover() -> Command {
    Command::new(env!("CARGO_BIN_EXE_proofmesh-prover"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `args` as a task would: inputs materialized as inputs/000.., output path in the env.
fn task(args: &[&str], inputs: &[&[u8]]) -> (Output, Option<Vec<u8>>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let input_dir = dir.path().join("inputs");
    std::fs::create_dir(&input_dir).expect("inputs dir");
    for (i, bytes) in inputs.iter().enumerate() {
        std::fs::write(input_dir.join(format!("{i:03}")), bytes).expect("write input");
    }
    let output = dir.path().join("output");
    let out = prover()
        .args(args)
        .env("PROOFMESH_INPUT_DIR", &input_dir)
        .env("PROOFMESH_INPUTS", inputs.len().to_string())
        .env("PROOFMESH_OUTPUT", &output)
        .env("PROOFMESH_TASK", "test")
        .output()
        .expect("spawn proofmesh-prover");
    (out, std::fs::read(&output).ok())
}

#[test]
fn stages_run_under_the_program_contract() {
    let r = run();
    let (out, witness) = task(&["witness", "--block", "7", "--leaves", "4"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        witness.as_deref(),
        Some(r.witness.as_slice()),
        "witness is deterministic"
    );

    let (out, agg) = task(&["aggregate"], &[&r.leaves[0], &r.leaves[1]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let p = proofmesh_prover::verify_proof_bytes(&agg.expect("output written")).expect("verifies");
    assert_eq!((p.first, p.count), (0, 2));
}

#[test]
fn bad_inputs_exit_non_zero_with_a_reason() {
    let r = run();
    type Case<'a> = (Vec<&'a str>, Vec<&'a [u8]>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            vec!["leaf", "--index", "9"],
            vec![&r.witness],
            "out of range",
        ),
        (
            vec!["leaf", "--index", "0"],
            vec![b"garbage"],
            "malformed witness",
        ),
        (vec!["leaf", "--index", "0"], vec![], "takes 1 to 1 inputs"),
        (
            vec!["aggregate"],
            vec![&r.leaves[0], &r.leaves[3]],
            "not contiguous",
        ),
        (vec!["final"], vec![&r.leaves[2]], "from leaf 0"),
    ];
    for (args, inputs, needle) in cases {
        let (out, _) = task(&args, &inputs);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            stderr(&out).contains(needle),
            "{args:?}: stderr {:?} lacks {needle:?}",
            stderr(&out)
        );
    }
    let tampered = flip(&r.leaves[1], 80);
    let (out, output) = task(&["aggregate"], &[&r.leaves[0], &tampered]);
    assert!(
        !out.status.success() && output.is_none(),
        "no output for an invalid child"
    );
    assert!(stderr(&out).contains("child proof 1"), "{}", stderr(&out));
}

#[test]
fn verify_exits_zero_only_for_valid_proofs() {
    let r = run();
    let path = r.dir.join("final.proof");
    let out = prover().arg("verify").arg(&path).output().expect("spawn");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid final proof"));

    let bad = r.dir.join("tampered.proof");
    std::fs::write(&bad, flip(&r.final_proof, 200)).expect("write");
    let out = prover().arg("verify").arg(&bad).output().expect("spawn");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a valid proof"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn noop_and_sleep_write_an_input_dependent_output() {
    let (out, a) = task(&["noop"], &[b"one"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, b) = task(&["noop"], &[b"two"]);
    assert!(a.is_some() && a != b);
    let started = std::time::Instant::now();
    let (out, c) = task(&["sleep", "--ms", "50"], &[b"one"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() >= std::time::Duration::from_millis(50));
    assert_eq!(a, c);
}
