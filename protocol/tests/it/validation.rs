//! Validation of canonical workflows (as they arrive from the network), at scale.

use proofmesh_protocol::workflow::Input;
use proofmesh_protocol::{Program, Resources, Task, Workflow, WorkflowError};

pub fn task(name: String, deps: Vec<u32>) -> Task {
    Task {
        name,
        program: Program {
            name: "noop".into(),
            version: "1".into(),
        },
        args: vec![],
        inputs: deps.iter().map(|&d| Input::Output(d)).collect(),
        deps,
        resources: Resources {
            cpu: 1,
            memory_mb: 64,
            ..Default::default()
        },
        timeout_ms: 1_000,
        max_attempts: 1,
        max_price_wei: 0,
    }
}

fn chain(n: u32) -> Workflow {
    let tasks = (0..n)
        .map(|i| task(format!("t{i}"), if i == 0 { vec![] } else { vec![i - 1] }))
        .collect();
    Workflow {
        name: "chain".into(),
        ordering: None,
        deadline_ms: 0,
        tasks,
    }
}

/// Run `f` on a thread with a deliberately small stack: recursion over 100,000 tasks would
/// overflow it.
fn small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn chain_of_100_000_tasks_validates_on_a_small_stack() {
    let summary = small_stack(|| {
        let w = chain(100_000);
        let remaining = w.critical_path_remaining().unwrap();
        assert_eq!(remaining[0], 100_000 * 1_000);
        assert_eq!(remaining[99_999], 1_000);
        let order = w.topological_order().unwrap();
        assert!(order.windows(2).all(|p| p[0] < p[1]));
        w.validate().unwrap()
    });
    assert_eq!(summary.tasks, 100_000);
    assert_eq!(summary.edges, 99_999);
    assert_eq!(summary.critical_path_tasks, 100_000);
    assert_eq!(summary.critical_path_timeout_ms, 100_000_000);
}

#[test]
fn cycle_of_100_000_tasks_is_found_and_the_path_is_abbreviated() {
    let err = small_stack(|| {
        let mut w = chain(100_000);
        // t0 depends on t99999: one cycle through every task.
        w.tasks[0] = task("t0".into(), vec![99_999]);
        w.validate().unwrap_err()
    });
    let WorkflowError::Cycle { path } = err else {
        panic!("expected a cycle, got {err}")
    };
    assert!(path.starts_with("t0 -> t99999 -> t99998"), "{path}");
    assert!(path.contains("more) ..."), "{path}");
    assert!(path.ends_with("-> t0"), "{path}");
}

#[test]
fn more_than_100_000_tasks_is_refused() {
    let w = chain(100_001);
    assert!(matches!(
        w.validate(),
        Err(WorkflowError::TooManyTasks { count: 100_001, .. })
    ));
}

#[test]
fn workflow_level_errors() {
    let ok = chain(3);
    assert!(ok.validate().is_ok());

    let mut w = ok.clone();
    w.tasks.clear();
    assert_eq!(w.validate(), Err(WorkflowError::Empty));

    let mut w = ok.clone();
    w.tasks[2].name = "t0".into();
    assert_eq!(
        w.validate(),
        Err(WorkflowError::DuplicateId { id: "t0".into() })
    );

    let mut w = ok.clone();
    w.tasks[1] = task("t1".into(), vec![1]);
    assert_eq!(
        w.validate(),
        Err(WorkflowError::SelfDependency { task: "t1".into() })
    );

    let mut w = ok.clone();
    w.tasks[1].resources = Resources {
        cpu: 0,
        gpu: 0,
        ..Default::default()
    };
    assert_eq!(
        w.validate(),
        Err(WorkflowError::NoCompute { task: "t1".into() })
    );

    // A GPU-only task is fine.
    let mut w = ok.clone();
    w.tasks[1].resources = Resources {
        cpu: 0,
        gpu: 1,
        vram_mb: 1024,
        ..Default::default()
    };
    assert!(w.validate().is_ok());

    let mut w = ok.clone();
    w.tasks[1].resources.memory_mb = u64::MAX;
    assert!(w
        .validate()
        .unwrap_err()
        .to_string()
        .contains("task \"t1\": field resources.memory_gb"));

    let mut w = ok.clone();
    w.tasks[2].timeout_ms = 0;
    assert!(w
        .validate()
        .unwrap_err()
        .to_string()
        .contains("task \"t2\": field timeout_s = 0 s is out of range"));

    let mut w = ok.clone();
    w.tasks[2].program.name = "bad name".into();
    assert!(w
        .validate()
        .unwrap_err()
        .to_string()
        .contains("task \"t2\": field program"));

    let mut w = ok;
    w.deadline_ms = u64::MAX;
    assert!(matches!(
        w.validate(),
        Err(WorkflowError::DeadlineOutOfRange { .. })
    ));
}

#[test]
fn critical_path_remaining_prefers_the_heavier_branch() {
    // root -> fast (1 s) -> sink ; root -> slow (10 s) -> sink
    let mut tasks = vec![
        task("root".into(), vec![]),
        task("fast".into(), vec![0]),
        task("slow".into(), vec![0]),
    ];
    tasks[2].timeout_ms = 10_000;
    tasks.push(task("sink".into(), vec![1, 2]));
    let w = Workflow {
        name: "d".into(),
        ordering: None,
        deadline_ms: 0,
        tasks,
    };
    assert_eq!(
        w.critical_path_remaining().unwrap(),
        vec![12_000, 2_000, 11_000, 1_000]
    );
    assert_eq!(w.validate().unwrap().critical_path_timeout_ms, 12_000);
}
