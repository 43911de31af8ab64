//! Signed results verify, and any tamper is rejected.

use proofmesh_operator::result::{verify_from, ResultError};
use proofmesh_protocol::messages::{SignedResult, TaskResult};
use proofmesh_protocol::{ContentId, Keypair, Resources};

fn signed(keypair: &Keypair) -> SignedResult {
    let result = TaskResult {
        workflow: ContentId::of_bytes(b"wf"),
        task: 17,
        attempt: 1,
        operator: keypair.public(),
        output: ContentId::of_bytes(b"proof"),
        output_bytes: 5,
        started_ms: 1_000,
        finished_ms: 2_000,
        resources: Resources {
            cpu: 2,
            memory_mb: 512,
            gpu: 1,
            vram_mb: 1024,
            disk_mb: 0,
        },
        gpus: vec![0],
    };
    SignedResult::sign(keypair, result)
}

#[test]
fn verifies_and_rejects_every_tamper() {
    let key = Keypair::generate();
    let good = signed(&key);
    good.verify().unwrap();
    verify_from(&good, &key.public()).unwrap();
    let tampers: [fn(&mut SignedResult); 9] = [
        |s| s.result.task += 1,
        |s| s.result.attempt += 1,
        |s| s.result.output.0[0] ^= 1,
        |s| s.result.output_bytes += 1,
        |s| s.result.finished_ms += 1,
        |s| s.result.resources.cpu += 1,
        |s| s.result.gpus = vec![1],
        |s| s.result.workflow.0[31] ^= 0x80,
        |s| s.signature.0[5] ^= 1,
    ];
    for (i, tamper) in tampers.iter().enumerate() {
        let mut bad = good.clone();
        tamper(&mut bad);
        assert!(bad.verify().is_err(), "tamper {i} accepted");
    }
    // Re-signed by someone else but claiming the assigned operator: rejected.
    let mallory = Keypair::generate();
    let mut forged = signed(&mallory);
    forged.result.operator = key.public();
    assert!(forged.verify().is_err());
    // Validly signed by the wrong operator: rejected by verify_from.
    let other = signed(&mallory);
    assert!(matches!(
        verify_from(&other, &key.public()),
        Err(ResultError::WrongOperator { .. })
    ));
}
