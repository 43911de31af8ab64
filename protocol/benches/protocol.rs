//! Protocol hot paths: load the 1,025-task pipeline (parse + expand + validate), encode and
//! decode it, seal and open an envelope. Results: bench/protocol.md.

use criterion::{criterion_group, criterion_main, Criterion};
use proofmesh_protocol::messages::{Heartbeat, Submission};
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::{encoding, Domain, Envelope, Keypair, Message, Workflow};
use std::hint::black_box;

const PIPELINE: &str = include_str!("../../examples/workflows/zksync-batch.toml");
const DOMAIN: Domain = Domain {
    network_id: 1,
    chain_id: 31337,
};

fn workflow(c: &mut Criterion) {
    let (wf, _) = spec::load(PIPELINE, Format::Toml).expect("example is valid");
    assert_eq!(wf.tasks.len(), 1025);
    c.bench_function("pipeline_1025/parse", |b| {
        b.iter(|| spec::parse(black_box(PIPELINE), Format::Toml).unwrap())
    });
    let parsed = spec::parse(PIPELINE, Format::Toml).unwrap();
    c.bench_function("pipeline_1025/expand", |b| {
        b.iter(|| black_box(&parsed).expand().unwrap())
    });
    c.bench_function("pipeline_1025/validate", |b| {
        b.iter(|| black_box(&wf).validate().unwrap())
    });
    c.bench_function("pipeline_1025/parse_expand_validate", |b| {
        b.iter(|| spec::load(black_box(PIPELINE), Format::Toml).unwrap())
    });
    let bytes = encoding::encode(&wf);
    c.bench_function("pipeline_1025/encode", |b| {
        b.iter(|| encoding::encode(black_box(&wf)))
    });
    c.bench_function("pipeline_1025/decode", |b| {
        b.iter(|| encoding::decode::<Workflow>(black_box(&bytes)).unwrap())
    });
    c.bench_function("pipeline_1025/id", |b| b.iter(|| black_box(&wf).id()));
    c.bench_function("pipeline_1025/critical_path_remaining", |b| {
        b.iter(|| black_box(&wf).critical_path_remaining().unwrap())
    });
}

fn envelope(c: &mut Criterion) {
    let kp = Keypair::generate();
    let hb = Message::Heartbeat(Heartbeat {
        operator: kp.public(),
        at_ms: 1,
        running: vec![],
    });
    c.bench_function("envelope/heartbeat/seal", |b| {
        b.iter(|| Envelope::seal(&kp, DOMAIN, black_box(&hb), 1, u64::MAX))
    });
    let env = Envelope::seal(&kp, DOMAIN, &hb, 1, u64::MAX);
    let wire = env.to_bytes();
    c.bench_function("envelope/heartbeat/decode_open", |b| {
        b.iter(|| {
            Envelope::from_bytes(black_box(&wire))
                .unwrap()
                .open(DOMAIN, 0)
                .unwrap()
        })
    });
    c.bench_function("envelope/heartbeat/seal_decode_open", |b| {
        b.iter(|| {
            let wire = Envelope::seal(&kp, DOMAIN, black_box(&hb), 1, u64::MAX).to_bytes();
            Envelope::from_bytes(&wire)
                .unwrap()
                .open(DOMAIN, 0)
                .unwrap()
        })
    });
    // The largest routine message: a submission of the 1,025-task pipeline (~62 KB).
    let (wf, _) = spec::load(PIPELINE, Format::Toml).unwrap();
    let sub = Message::Submission(Submission {
        workflow: wf,
        owner: kp.public(),
        owner_eth: None,
        escrow: None,
        submitted_at_ms: 1,
    });
    c.bench_function("envelope/submission_1025/seal_decode_open", |b| {
        b.iter(|| {
            let wire = Envelope::seal(&kp, DOMAIN, black_box(&sub), 1, u64::MAX).to_bytes();
            Envelope::from_bytes(&wire)
                .unwrap()
                .open(DOMAIN, 0)
                .unwrap()
        })
    });
}

criterion_group!(benches, workflow, envelope);
criterion_main!(benches);
