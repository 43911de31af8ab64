//! Subprocess execution: process-group kills, cancellation, crashes, output hashing, inputs,
//! the contract's environment.

use crate::common::*;
use proofmesh_operator::{BlobStore, CancellationToken, Outcome};
use proofmesh_protocol::messages::{Assignment, FailureCause};
use proofmesh_protocol::{ContentId, PublicKey, Resources};
use std::time::Duration;

// Starts a background grandchild `sleep 1000`, records both pids in $1, then blocks.
const SPAWNS_GRANDCHILD: &str =
    "sleep 1000 &\necho $! > \"$1.tmp\"\necho $$ >> \"$1.tmp\"\nmv \"$1.tmp\" \"$1\"\nwait";

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let fx = Fixture::new(&[], |_| {});
    let script = fx.script("hang.sh", SPAWNS_GRANDCHILD);
    let fx = Fixture {
        operator: rebuild(&fx, "hang", &script),
        ..fx
    };
    let pidfile = fx.path("pids");
    let pidfile_arg = pidfile.display().to_string();
    let spec = spec("hang", &[&pidfile_arg], vec![], Duration::from_millis(500));
    let report = fx
        .operator
        .run(spec, fx.lease(vec![]), CancellationToken::new())
        .await;
    match &report.outcome {
        Outcome::Failed(f) => assert_eq!(f.cause, FailureCause::Timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(
        report.diagnostics.signal,
        Some(9),
        "leader killed by SIGKILL"
    );
    let pids = read_pids(&pidfile, 2);
    assert_eq!(pids.len(), 2, "script recorded grandchild and itself");
    assert_eq!(
        survivors(&pids, Duration::from_secs(5)),
        Vec::<i32>::new(),
        "no orphan survives"
    );
    assert_eq!(fx.operator.leases().usage().tasks, 0, "lease released");
}

/// Rebuild the fixture's operator with one more program (scripts live in the fixture's dir).
fn rebuild(fx: &Fixture, name: &str, script: &str) -> proofmesh_operator::Operator {
    let mut config = fx.operator.executor().config().clone();
    config = config.with_program(name, "1", cmd(&[script]));
    let discovery = fx.operator.discovery().clone();
    let store: std::sync::Arc<dyn BlobStore> = fx.blobs.clone();
    proofmesh_operator::Operator::with_discovery(
        config,
        proofmesh_protocol::Keypair::generate(),
        Some(store),
        discovery,
    )
    .expect("operator")
}

#[tokio::test]
async fn cancellation_kills_the_group() {
    let fx = Fixture::new(&[], |_| {});
    let script = fx.script("hang.sh", SPAWNS_GRANDCHILD);
    let fx = Fixture {
        operator: rebuild(&fx, "hang", &script),
        ..fx
    };
    let pidfile = fx.path("pids");
    let arg = pidfile.display().to_string();
    let cancel = CancellationToken::new();
    let task = {
        let (op, cancel) = (fx.operator.clone(), cancel.clone());
        let lease = fx.lease(vec![0]);
        let spec = spec("hang", &[&arg], vec![], Duration::from_secs(60));
        tokio::spawn(async move { op.run(spec, lease, cancel).await })
    };
    let pids = tokio::task::spawn_blocking(move || read_pids(&pidfile, 2))
        .await
        .unwrap();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| !is_dead(p)), "running before cancel");
    cancel.cancel();
    let report = task.await.unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!(survivors(&pids, Duration::from_secs(5)), Vec::<i32>::new());
    assert!(
        fx.operator.leases().usage().busy_gpus.is_empty(),
        "GPU lease released"
    );
}

#[tokio::test]
async fn dropping_the_future_kills_the_group() {
    let fx = Fixture::new(&[], |_| {});
    let script = fx.script("hang.sh", SPAWNS_GRANDCHILD);
    let fx = Fixture {
        operator: rebuild(&fx, "hang", &script),
        ..fx
    };
    let pidfile = fx.path("pids");
    let arg = pidfile.display().to_string();
    let spec = spec("hang", &[&arg], vec![], Duration::from_secs(60));
    let fut = fx
        .operator
        .run(spec, fx.lease(vec![1]), CancellationToken::new());
    assert!(
        tokio::time::timeout(Duration::from_millis(700), fut)
            .await
            .is_err(),
        "still running"
    );
    let pids = read_pids(&pidfile, 2);
    assert_eq!(pids.len(), 2);
    assert_eq!(survivors(&pids, Duration::from_secs(5)), Vec::<i32>::new());
    assert_eq!(fx.operator.leases().usage().tasks, 0);
}

#[tokio::test]
async fn crash_reports_exit_code_and_bounded_stderr_tail() {
    let fx = Fixture::new(&[], |c| c.stderr_tail_bytes = 1024);
    let body = "echo to-stdout\ni=0\nwhile [ $i -lt 3000 ]; do echo \"noise line $i\" >&2; i=$((i+1)); done\n\
                echo 'fatal: bad witness' >&2\nexit 3";
    let script = fx.script("crash.sh", body);
    let fx = Fixture {
        operator: rebuild(&fx, "crash", &script),
        ..fx
    };
    let report = fx
        .run_cpu(spec("crash", &[], vec![], Duration::from_secs(30)))
        .await;
    let Outcome::Failed(failure) = &report.outcome else {
        panic!("expected failure, got {:?}", report.outcome)
    };
    let FailureCause::Crashed {
        exit_code,
        stderr_tail,
    } = &failure.cause
    else {
        panic!("{:?}", failure.cause)
    };
    assert_eq!(*exit_code, Some(3));
    assert!(
        stderr_tail.ends_with("fatal: bad witness\n"),
        "{stderr_tail:?}"
    );
    assert!(
        stderr_tail.len() <= 1024,
        "tail bounded, got {}",
        stderr_tail.len()
    );
    assert!(!stderr_tail.contains("noise line 0\n"), "head dropped");
    assert_eq!(report.diagnostics.stdout_tail, "to-stdout\n");
    assert_eq!((failure.task, failure.attempt), (3, 2));
    assert_eq!(failure.operator, fx.operator.public_key());
}

#[tokio::test]
async fn missing_program_binary_is_a_crash_not_a_panic() {
    let fx = Fixture::new(&[("ghost", cmd(&["/nonexistent/prover"]))], |_| {});
    let report = fx
        .run_cpu(spec("ghost", &[], vec![], Duration::from_secs(5)))
        .await;
    let Outcome::Failed(f) = report.outcome else {
        panic!("expected failure")
    };
    assert!(
        matches!(&f.cause, FailureCause::Crashed { exit_code: None, stderr_tail } if stderr_tail.contains("/nonexistent/prover"))
    );
}

#[tokio::test]
async fn success_without_output_file_fails() {
    let fx = Fixture::new(&[("lazy", cmd(&["/bin/sh", "-c", "exit 0"]))], |_| {});
    let report = fx
        .run_cpu(spec("lazy", &[], vec![], Duration::from_secs(5)))
        .await;
    let Outcome::Failed(f) = report.outcome else {
        panic!("expected failure")
    };
    assert!(
        matches!(&f.cause, FailureCause::Crashed { exit_code: Some(0), stderr_tail } if stderr_tail.contains("no output file"))
    );
}

#[tokio::test]
async fn output_is_hashed_stored_and_signed() {
    let body = "cat \"$PROOFMESH_INPUT_DIR/000\" \"$PROOFMESH_INPUT_DIR/001\" > \"$PROOFMESH_OUTPUT\"\nprintf '%s' \"$1\" >> \"$PROOFMESH_OUTPUT\"";
    let fx = Fixture::new(
        &[("concat", cmd(&["/bin/sh", "-c", body, "concat"]))],
        |_| {},
    );
    let a = fx.blobs.put(b"alpha-").unwrap();
    let b = fx.blobs.put(b"beta-").unwrap();
    let lease = fx.lease(vec![2]);
    let resources = *lease.resources();
    let report = fx
        .operator
        .run(
            spec("concat", &["gamma"], vec![a, b], Duration::from_secs(10)),
            lease,
            Default::default(),
        )
        .await;
    let Outcome::Completed(signed) = report.outcome else {
        panic!("expected success, got {:?}", report.outcome)
    };
    let expected = b"alpha-beta-gamma";
    assert_eq!(signed.result.output, ContentId::of_bytes(expected));
    assert_eq!(signed.result.output_bytes, expected.len() as u64);
    assert_eq!(fx.blobs.get(&signed.result.output).unwrap(), expected);
    assert_eq!(signed.result.gpus, vec![2]);
    assert_eq!(signed.result.resources, resources);
    assert_eq!((signed.result.task, signed.result.attempt), (3, 2));
    assert!(signed.result.started_ms <= signed.result.finished_ms);
    signed.verify().expect("signature verifies");
    assert_eq!(signed.result.operator, fx.operator.public_key());
    // The work dir of a successful attempt is emptied for reuse: one slot, holding only an
    // empty `inputs/`.
    fx.operator.executor().flush_work_dirs();
    let pools: Vec<_> = std::fs::read_dir(fx.dir.path().join("work/tasks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(pools.len(), 1, "{pools:?}");
    let slots: Vec<_> = std::fs::read_dir(&pools[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(slots.len(), 1, "{slots:?}");
    let names: Vec<_> = std::fs::read_dir(&slots[0])
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["inputs"]);
    assert_eq!(
        std::fs::read_dir(slots[0].join("inputs")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn recycled_work_dir_holds_nothing_from_the_previous_attempt() {
    // Prints its work dir and what it finds in it and in its inputs; `dirty` litters first,
    // `crash` exits 1.
    let body = "l=\"$(pwd; ls -A .; echo --; ls -A \"$PROOFMESH_INPUT_DIR\")\"\n\
                case \"$1\" in dirty) mkdir -p scratch/deep; echo j > scratch/deep/f; echo j > junk;; \
                crash) exit 1;; esac\n\
                printf '%s' \"$l\" > \"$PROOFMESH_OUTPUT\"";
    let fx = Fixture::new(&[("ls", cmd(&["/bin/sh", "-c", body, "ls"]))], |_| {});
    let input = fx.blobs.put(b"in").unwrap();
    let run = |arg: &'static str| {
        fx.operator.run(
            spec("ls", &[arg], vec![input], Duration::from_secs(10)),
            fx.lease(vec![]),
            CancellationToken::new(),
        )
    };
    let listing = |report: proofmesh_operator::TaskReport| {
        let Outcome::Completed(signed) = report.outcome else {
            panic!("expected success, got {:?}", report.outcome)
        };
        String::from_utf8(fx.blobs.get(&signed.result.output).unwrap()).unwrap()
    };
    let first = listing(run("dirty").await);
    fx.operator.executor().flush_work_dirs();
    let second = listing(run("clean").await);
    let (dir1, seen1) = first.split_once('\n').unwrap();
    let (dir2, seen2) = second.split_once('\n').unwrap();
    assert_eq!(dir1, dir2, "the slot was reused");
    assert_eq!(seen1, "inputs\n--\n000");
    assert_eq!(
        seen2, "inputs\n--\n000",
        "no scratch, junk or old output left"
    );

    // A failed attempt's slot is removed, not recycled.
    fx.operator.executor().flush_work_dirs();
    let report = run("crash").await;
    assert!(matches!(report.outcome, Outcome::Failed(_)));
    fx.operator.executor().flush_work_dirs();
    assert!(!std::path::Path::new(dir1).exists(), "failed slot removed");
}

#[tokio::test]
async fn corrupted_or_missing_input_is_refused_before_running() {
    let marker = "ran-marker";
    let fx = Fixture::new(
        &[(
            "touch",
            cmd(&[
                "/bin/sh",
                "-c",
                "touch \"$1\"; touch \"$PROOFMESH_OUTPUT\"",
                "x",
            ]),
        )],
        |c| {
            c.keep_failed_work_dirs = true;
        },
    );
    let marker_path = fx.path(marker).display().to_string();
    let good = fx.blobs.put(b"the real input").unwrap();
    std::fs::write(fx.blobs.path_of(&good), b"tampered bytes").unwrap();
    let report = fx
        .run_cpu(spec(
            "touch",
            &[&marker_path],
            vec![good],
            Duration::from_secs(5),
        ))
        .await;
    let Outcome::Failed(f) = &report.outcome else {
        panic!("expected failure")
    };
    assert!(
        matches!(&f.cause, FailureCause::Input(why) if why.contains("corrupt") && why.contains("input 0")),
        "{:?}",
        f.cause
    );
    assert!(
        !fx.path(marker).exists(),
        "program never ran on a corrupt input"
    );
    let kept = report
        .diagnostics
        .kept_work_dir
        .expect("failed work dir kept as configured");
    assert!(
        !kept.join("inputs/000").exists(),
        "corrupt bytes not left for the program"
    );

    let missing = ContentId::of_bytes(b"never stored");
    let report = fx
        .run_cpu(spec(
            "touch",
            &[&marker_path],
            vec![missing],
            Duration::from_secs(5),
        ))
        .await;
    let Outcome::Failed(f) = &report.outcome else {
        panic!("expected failure")
    };
    assert!(
        matches!(&f.cause, FailureCause::Input(why) if why.contains("not found")),
        "{:?}",
        f.cause
    );
}

#[tokio::test]
async fn child_sees_the_contract_env_and_only_its_leased_gpus() {
    let body = "printf '%s|%s|%s|%s|%s|%s|%s' \"$CUDA_VISIBLE_DEVICES\" \"$NVIDIA_VISIBLE_DEVICES\" \"$PROOFMESH_INPUTS\" \
                \"$PROOFMESH_TASK\" \"$PROOFMESH_ATTEMPT\" \"$EXTRA\" \"$(basename \"$(dirname \"$PROOFMESH_OUTPUT\")\" | cut -c1-1)\" > \"$PROOFMESH_OUTPUT\"\n\
                [ \"$(pwd)\" = \"$(dirname \"$PROOFMESH_OUTPUT\")\" ] || exit 9\n[ -d \"$PROOFMESH_INPUT_DIR\" ] || exit 8";
    let fx = Fixture::new(&[("env", cmd(&["/bin/sh", "-c", body]))], |c| {
        c.env.insert("EXTRA".into(), "extra-var".into());
        c.env
            .insert("CUDA_VISIBLE_DEVICES".into(), "0,1,2,3".into()); // contract wins
    });
    let input = fx.blobs.put(b"i").unwrap();
    for (gpus, expected) in [(vec![3, 1], "1,3"), (vec![], ""), (vec![0], "0")] {
        let report = fx
            .operator
            .run(
                spec("env", &[], vec![input], Duration::from_secs(5)),
                fx.lease(gpus),
                Default::default(),
            )
            .await;
        let Outcome::Completed(signed) = report.outcome else {
            panic!("expected success: {:?}", report)
        };
        let seen = String::from_utf8(fx.blobs.get(&signed.result.output).unwrap()).unwrap();
        // The work dir is a pool slot `s<n>`.
        assert_eq!(
            seen,
            format!("{expected}|{expected}|1|leaf[3]|2|extra-var|s")
        );
    }
}

#[tokio::test]
async fn operator_refuses_what_it_cannot_honour() {
    let fx = Fixture::new(
        &[(
            "noop",
            proofmesh_operator::ProgramSpec::Builtin {
                builtin: "noop".into(),
            },
        )],
        |_| {},
    );
    let _held = fx.lease(vec![1]);
    let assignment = |gpus: Vec<u32>, vram_mb| Assignment {
        workflow: ContentId::of_bytes(b"workflow"),
        task: 3,
        attempt: 2,
        operator: fx.operator.public_key(),
        gpus: gpus.clone(),
        resources: Resources {
            cpu: 1,
            memory_mb: 1,
            gpu: gpus.len() as u32,
            vram_mb,
            disk_mb: 0,
        },
        accept_by_ms: 0,
        deadline_ms: 0,
        price_wei: 0,
        matchmaker: PublicKey::default(),
        queued: false,
    };
    let cases = [
        (assignment(vec![1], 10), "GPU 1 is busy"),
        (assignment(vec![9], 10), "GPU 9 does not exist"),
        (assignment(vec![0], 90_000), "VRAM"),
    ];
    for (a, needle) in cases {
        let report = fx
            .operator
            .execute(
                &a,
                spec("noop", &[], vec![], Duration::from_secs(1)),
                Default::default(),
            )
            .await;
        let Outcome::Failed(f) = report.outcome else {
            panic!("expected refusal")
        };
        assert!(
            matches!(&f.cause, FailureCause::Refused(why) if why.contains(needle)),
            "{:?} lacks {needle}",
            f.cause
        );
    }
    let report = fx
        .operator
        .execute(
            &assignment(vec![0], 10),
            spec("prove", &[], vec![], Duration::from_secs(1)),
            Default::default(),
        )
        .await;
    assert!(
        matches!(report.outcome, Outcome::Failed(f) if matches!(&f.cause, FailureCause::Refused(w) if w.contains("prove@1")))
    );
    let ok = fx
        .operator
        .execute(
            &assignment(vec![0], 10),
            spec("noop", &[], vec![], Duration::from_secs(1)),
            Default::default(),
        )
        .await;
    assert!(matches!(ok.outcome, Outcome::Completed(_)));
}
