//! Built-in programs and persistent workers.

use crate::common::*;
use proofmesh_operator::worker::{builtin_output, Builtin};
use proofmesh_operator::{BlobStore, CancellationToken, Outcome, ProgramSpec};
use proofmesh_protocol::messages::FailureCause;
use proofmesh_protocol::ContentId;
use std::time::Duration;

fn builtin(name: &str) -> ProgramSpec {
    ProgramSpec::Builtin {
        builtin: name.into(),
    }
}

#[tokio::test]
async fn builtin_noop_and_sleep() {
    let fx = Fixture::new(
        &[("noop", builtin("noop")), ("sleep", builtin("sleep"))],
        |_| {},
    );
    let input = fx.blobs.put(b"dep output").unwrap();
    let noop = spec("noop", &[], vec![input], Duration::from_secs(1));
    let report = fx
        .operator
        .run(noop.clone(), fx.lease(vec![]), Default::default())
        .await;
    let Outcome::Completed(signed) = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    signed.verify().unwrap();
    let expected = builtin_output(Builtin::Noop, &noop);
    assert_eq!(signed.result.output, ContentId::of_bytes(&expected));
    assert_eq!(fx.blobs.get(&signed.result.output).unwrap(), expected);

    let missing = ContentId::of_bytes(b"missing");
    let report = fx
        .operator
        .run(
            spec("noop", &[], vec![missing], Duration::from_secs(1)),
            fx.lease(vec![]),
            Default::default(),
        )
        .await;
    assert!(
        matches!(report.outcome, Outcome::Failed(f) if matches!(f.cause, FailureCause::Input(_)))
    );

    // Never short, also below the part the portable sleep leaves to a blocking thread (3 ms).
    for ms in [20, 2] {
        let report = fx
            .operator
            .run(
                spec(
                    "sleep",
                    &["--ms", &ms.to_string()],
                    vec![],
                    Duration::from_secs(1),
                ),
                fx.lease(vec![]),
                Default::default(),
            )
            .await;
        let Outcome::Completed(signed) = report.outcome else {
            panic!("{:?}", report.outcome)
        };
        assert!(signed.result.finished_ms >= signed.result.started_ms + ms);
    }

    let report = fx
        .operator
        .run(
            spec(
                "sleep",
                &["--ms", "5000"],
                vec![],
                Duration::from_millis(50),
            ),
            fx.lease(vec![]),
            Default::default(),
        )
        .await;
    assert!(matches!(report.outcome, Outcome::Failed(f) if f.cause == FailureCause::Timeout));

    let cancel = CancellationToken::new();
    let (op, c) = (fx.operator.clone(), cancel.clone());
    let lease = fx.lease(vec![]);
    let task = tokio::spawn(async move {
        op.run(
            spec(
                "sleep",
                &["--ms", "60000"],
                vec![],
                Duration::from_secs(120),
            ),
            lease,
            c,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    cancel.cancel();
    assert_eq!(task.await.unwrap().outcome, Outcome::Cancelled);

    let report = fx
        .operator
        .run(
            spec("sleep", &["--seconds", "1"], vec![], Duration::from_secs(1)),
            fx.lease(vec![]),
            Default::default(),
        )
        .await;
    assert!(
        matches!(report.outcome, Outcome::Failed(f) if matches!(&f.cause, FailureCause::Crashed { stderr_tail, .. } if stderr_tail.contains("--seconds")))
    );
}

// A line-protocol worker in sh: writes "<worker pid>:<CUDA_VISIBLE_DEVICES>:<first input>" to the
// output; args "hang" make it hang, "fail" make it answer an error.
const SH_WORKER: &str = r#"while IFS= read -r line; do
  id=$(printf '%s' "$line" | sed 's/.*"id":\([0-9]*\).*/\1/')
  out=$(printf '%s' "$line" | sed 's/.*"output":"\([^"]*\)".*/\1/')
  dir=$(printf '%s' "$line" | sed 's/.*"input_dir":"\([^"]*\)".*/\1/')
  case "$line" in
    *'"hang"'*) sleep 1000 ;;
    *'"fail"'*) echo "worker log: cannot prove" >&2; printf '{"id":%s,"ok":false,"error":"bad statement"}\n' "$id"; continue ;;
  esac
  printf '%s:%s:%s' "$$" "$CUDA_VISIBLE_DEVICES" "$(cat "$dir/000" 2>/dev/null)" > "$out"
  printf '{"id":%s,"ok":true}\n' "$id"
done"#;

#[tokio::test]
async fn persistent_worker_serves_many_tasks_and_restarts_after_timeout() {
    let fx = Fixture::new(&[], |_| {});
    let script = fx.script("worker.sh", SH_WORKER);
    let config = fx.operator.executor().config().clone().with_program(
        "w",
        "1",
        ProgramSpec::Worker {
            worker: vec![script],
        },
    );
    let store: std::sync::Arc<dyn BlobStore> = fx.blobs.clone();
    let op = proofmesh_operator::Operator::with_discovery(
        config,
        proofmesh_protocol::Keypair::generate(),
        Some(store),
        fx.operator.discovery().clone(),
    )
    .unwrap();
    let input = fx.blobs.put(b"in").unwrap();

    let run = |args: &'static [&'static str], gpus: Vec<u32>, timeout: Duration| {
        let lease = op
            .leases()
            .acquire(&proofmesh_operator::LeaseRequest::new(
                gpus.clone(),
                proofmesh_protocol::Resources {
                    gpu: gpus.len() as u32,
                    ..Default::default()
                },
            ))
            .unwrap();
        op.run(
            spec("w", args, vec![input], timeout),
            lease,
            CancellationToken::new(),
        )
    };
    let output = |report: proofmesh_operator::TaskReport| -> String {
        let Outcome::Completed(signed) = report.outcome else {
            panic!("{:?}", report.outcome)
        };
        signed.verify().unwrap();
        String::from_utf8(fx.blobs.get(&signed.result.output).unwrap()).unwrap()
    };
    let first = output(run(&[], vec![], Duration::from_secs(10)).await);
    let second = output(run(&[], vec![], Duration::from_secs(10)).await);
    let pid = first.split(':').next().unwrap().to_owned();
    assert_eq!(first, format!("{pid}::in"));
    assert_eq!(second, first, "same worker process serves the next task");
    // A different GPU set gets its own worker that sees only those GPUs.
    let on_gpu = output(run(&[], vec![2], Duration::from_secs(10)).await);
    assert!(
        on_gpu.ends_with(":2:in") && !on_gpu.starts_with(&format!("{pid}:")),
        "{on_gpu}"
    );

    let failed = run(&["fail"], vec![], Duration::from_secs(10)).await;
    let Outcome::Failed(f) = failed.outcome else {
        panic!("expected failure")
    };
    assert!(
        matches!(&f.cause, FailureCause::Crashed { stderr_tail, .. } if stderr_tail.contains("bad statement")),
        "{:?}",
        f.cause
    );

    let hung = run(&["hang"], vec![], Duration::from_millis(300)).await;
    assert!(
        matches!(hung.outcome, Outcome::Failed(ref f) if f.cause == FailureCause::Timeout),
        "{:?}",
        hung.outcome
    );
    let old_pid: i32 = pid.parse().unwrap();
    assert_eq!(
        survivors(&[old_pid], Duration::from_secs(5)),
        Vec::<i32>::new(),
        "hung worker killed"
    );
    let after = output(run(&[], vec![], Duration::from_secs(10)).await);
    assert!(
        !after.starts_with(&format!("{pid}:")),
        "fresh worker after a timeout: {after}"
    );
    op.shutdown().await;
    let new_pid: i32 = after.split(':').next().unwrap().parse().unwrap();
    assert_eq!(
        survivors(&[new_pid], Duration::from_secs(5)),
        Vec::<i32>::new(),
        "shutdown kills workers"
    );
}
