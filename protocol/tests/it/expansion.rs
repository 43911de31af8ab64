//! Expansion of groups, trees, placeholders and defaults into concrete tasks.

use crate::{load_file, repo_root};
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::workflow::Input;
use proofmesh_protocol::{Task, Workflow, WorkflowError};

fn load(text: &str) -> Result<Workflow, WorkflowError> {
    spec::load(text, Format::Toml).map(|(w, _)| w)
}

fn by_name<'a>(w: &'a Workflow, name: &str) -> (u32, &'a Task) {
    let i = w
        .tasks
        .iter()
        .position(|t| t.name == name)
        .unwrap_or_else(|| panic!("no task {name}"));
    (i as u32, &w.tasks[i])
}

#[test]
fn zksync_pipeline_expands_to_1025_tasks_of_the_right_shape() {
    let path = repo_root().join("examples/workflows/zksync-batch.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let significant = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count();
    assert!(
        significant <= 32,
        "the zkSync example should be about 30 lines, has {significant}"
    );
    let (w, s) = load_file(&path).unwrap();
    assert_eq!(w.tasks.len(), 1025);
    assert_eq!(s.tasks, 1025);
    let count = |p: &str| w.tasks.iter().filter(|t| t.program.name == p).count();
    assert_eq!(
        (
            count("witness"),
            count("leaf"),
            count("aggregate"),
            count("final")
        ),
        (1, 512, 511, 1)
    );
    // witness -> leaf: 512, tree: 2 per node = 1022, final: 1.
    assert_eq!(s.edges, 512 + 1022 + 1);
    // witness, leaf, 9 tree levels, final.
    assert_eq!(s.critical_path_tasks, 12);
    assert_eq!((s.roots, s.sinks), (1, 1));

    let (witness, wt) = by_name(&w, "witness");
    assert_eq!(
        (wt.resources.cpu, wt.resources.gpu, wt.resources.memory_mb),
        (16, 0, 64 * 1024)
    );
    let (_, leaf7) = by_name(&w, "leaf[7]");
    assert_eq!(leaf7.args, vec!["--index", "7"]);
    assert_eq!(leaf7.deps, vec![witness]);
    assert_eq!(leaf7.inputs, vec![Input::Output(witness)]);
    // Defaults merged key by key.
    assert_eq!(
        (
            leaf7.resources.cpu,
            leaf7.resources.gpu,
            leaf7.resources.vram_mb
        ),
        (4, 1, 24 * 1024)
    );
    assert_eq!(leaf7.max_price_wei, 2_000_000_000_000_000);

    // First tree level pairs leaves in order; each node's inputs are its children's outputs.
    let (l0, _) = by_name(&w, "leaf[0]");
    let (l1, _) = by_name(&w, "leaf[1]");
    let (n00, node) = by_name(&w, "agg[0][0]");
    assert_eq!(node.inputs, vec![Input::Output(l0), Input::Output(l1)]);
    let (n01, _) = by_name(&w, "agg[0][1]");
    let (_, up) = by_name(&w, "agg[1][0]");
    assert_eq!(up.inputs, vec![Input::Output(n00), Input::Output(n01)]);
    let (root, r) = by_name(&w, "agg");
    assert_eq!(r.deps.len(), 2);
    let (_, fin) = by_name(&w, "final");
    assert_eq!(fin.deps, vec![root]);
    assert_eq!(fin.timeout_ms, 1_200_000);
    assert!(
        w.tasks.iter().all(|t| t.name != "agg[8][0]"),
        "the root is named by the bare id"
    );
}

#[test]
fn kary_tree_carries_a_lone_leftover_up() {
    let w = load(
        r#"
name = "t"
[[task]]
id = "p"
program = "leaf@1"
count = 5
[[task]]
id = "agg"
program = "aggregate@1"
aggregate = { over = "p", arity = 2 }
args = ["{level}", "{index}", "{count}", "{name}"]
"#,
    )
    .unwrap();
    // 5 leaves: level 0 = (p0,p1) (p2,p3), p4 carried; level 1 = (n0,n1), p4 carried; root = (n, p4).
    assert_eq!(w.tasks.len(), 5 + 4);
    let (p4, _) = by_name(&w, "p[4]");
    let (n10, n) = by_name(&w, "agg[1][0]");
    assert_eq!(n.args, vec!["1", "0", "1", "agg[1][0]"]);
    let (_, root) = by_name(&w, "agg");
    assert_eq!(root.inputs, vec![Input::Output(n10), Input::Output(p4)]);
    assert_eq!(root.args, vec!["2", "0", "1", "agg"]);
}

#[test]
fn four_ary_tree_and_tree_over_a_single_task() {
    let w = load(
        r#"
name = "t"
[[task]]
id = "p"
program = "leaf@1"
count = 16
[[task]]
id = "agg"
program = "aggregate@1"
aggregate = { over = "p", arity = 4 }
[[task]]
id = "one"
program = "noop@1"
[[task]]
id = "wrap"
program = "aggregate@1"
aggregate = { over = "one" }
"#,
    )
    .unwrap();
    assert_eq!(w.tasks.len(), 16 + 5 + 1 + 1);
    let (_, root) = by_name(&w, "agg");
    assert_eq!(root.deps.len(), 4);
    let (one, _) = by_name(&w, "one");
    let (_, wrap) = by_name(&w, "wrap");
    assert_eq!(wrap.deps, vec![one]);
}

#[test]
fn deps_order_becomes_input_order_and_blobs_follow() {
    let blob = "ab".repeat(32);
    let w = load(&format!(
        r#"
name = "t"
[[task]]
id = "a"
program = "noop@1"
[[task]]
id = "b"
program = "noop@1"
[[task]]
id = "c"
program = "noop@1"
deps = ["b", "a", "b"]
inputs = ["{blob}"]
"#
    ))
    .unwrap();
    let (_, c) = by_name(&w, "c");
    assert_eq!(c.deps, vec![0, 1], "deps are the sorted set");
    assert_eq!(
        c.inputs,
        vec![
            Input::Output(1),
            Input::Output(0),
            Input::Blob(blob.parse().unwrap())
        ]
    );
}

#[test]
fn members_tree_nodes_and_index_placeholders_in_deps() {
    let w = load(
        r#"
name = "t"
[[task]]
id = "chunk"
program = "noop@1"
count = 3
[[task]]
id = "proof"
program = "leaf@1"
count = 3
deps = ["chunk[{index}]"]
[[task]]
id = "agg"
program = "aggregate@1"
aggregate = { over = "proof", arity = 2 }
[[task]]
id = "audit"
program = "noop@1"
deps = ["proof[2]", "agg[0][0]", "agg"]
"#,
    )
    .unwrap();
    for i in 0..3 {
        let (c, _) = by_name(&w, &format!("chunk[{i}]"));
        let (_, p) = by_name(&w, &format!("proof[{i}]"));
        assert_eq!(p.deps, vec![c]);
    }
    let (p2, _) = by_name(&w, "proof[2]");
    let (n, _) = by_name(&w, "agg[0][0]");
    let (root, _) = by_name(&w, "agg");
    let (_, audit) = by_name(&w, "audit");
    assert_eq!(
        audit.inputs,
        vec![Input::Output(p2), Input::Output(n), Input::Output(root)]
    );
}

#[test]
fn defaults_fill_what_a_task_leaves_out() {
    let w = load(
        r#"
name = "t"
[[task]]
id = "a"
program = { name = "noop", version = "2" }
"#,
    )
    .unwrap();
    let t = &w.tasks[0];
    assert_eq!(
        (t.program.name.as_str(), t.program.version.as_str()),
        ("noop", "2")
    );
    assert_eq!(
        (t.resources.cpu, t.resources.memory_mb, t.resources.gpu),
        (1, 1024, 0)
    );
    assert_eq!(
        (t.timeout_ms, t.max_attempts, t.max_price_wei),
        (600_000, 3, 0)
    );
    assert_eq!(w.deadline_ms, 3_600_000);
    assert_eq!(w.ordering, None);
}

#[test]
fn ordering_prices_and_fractional_units() {
    let w = load(
        r#"
name = "t"
deadline_s = 1.5
[ordering]
stream = "blocks"
sequence = 42
[[task]]
id = "a"
program = "noop@1"
resources = { cpu = 2, memory_gb = 0.5, gpu = 2, vram_gb = 1.25, disk_gb = 10 }
timeout_s = 0.25
max_price_wei = "340282366920938463463374607431768211455"
"#,
    )
    .unwrap();
    let o = w.ordering.as_ref().unwrap();
    assert_eq!((o.stream.as_str(), o.sequence), ("blocks", 42));
    assert_eq!(w.deadline_ms, 1500);
    let t = &w.tasks[0];
    assert_eq!(
        (
            t.resources.memory_mb,
            t.resources.vram_mb,
            t.resources.disk_mb
        ),
        (512, 1280, 10240)
    );
    assert_eq!(t.timeout_ms, 250);
    assert_eq!(t.max_price_wei, u128::MAX);
}

#[test]
fn structural_errors_name_task_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            "name = \"t\"\n[[task]]\nid = \"a\"\nprogram = \"noop@1\"\ncount = 2\naggregate = { over = \"a\" }\n",
            "task \"a\": `count` and `aggregate` cannot be combined",
        ),
        ("name = \"t\"\n[[task]]\nid = \"a\"\nprogram = \"noop@\"\n", "task \"a\": field program = \"noop@\" is invalid"),
        (
            "name = \"t\"\n[[task]]\nid = \"a\"\nprogram = \"noop@1\"\nmax_attempts = 0\n",
            "task \"a\": field max_attempts = 0 is out of range: allowed 1 to 100",
        ),
        ("name = \"t\"\n[[task]]\nid = \"a\"\nprogram = \"noop@1\"\nresources = { gpu = 65 }\n", "field resources.gpu = 65"),
        ("name = \"\"\n[[task]]\nid = \"a\"\nprogram = \"noop@1\"\n", "field name = \"\" is invalid"),
        ("name = \"t\"\ndeadline_s = 99999999\n[[task]]\nid = \"a\"\nprogram = \"noop@1\"\n", "field deadline_s = 99999999"),
        ("name = \"t\"\n[[task]]\nid = \"a\"\nprogram = \"noop@1\"\nargs = [\"a\\u0000b\"]\n", "task \"a\": field args"),
        (
            "name = \"t\"\n[[task]]\nid = \"g\"\nprogram = \"noop@1\"\ncount = 2\n[[task]]\nid = \"x\"\nprogram = \"noop@1\"\ndeps = [\"g[0][0]\"]\n",
            "task \"x\": field deps: unknown dependency \"g[0][0]\"",
        ),
    ];
    for (text, expected) in cases {
        let err = load(text).expect_err(text).to_string();
        assert!(err.contains(expected), "got {err}\nexpected {expected}");
    }
}

#[test]
fn group_cycle_through_tree_is_reported() {
    let err = load(
        r#"
name = "t"
[[task]]
id = "w"
program = "noop@1"
deps = ["agg"]
[[task]]
id = "p"
program = "leaf@1"
count = 2
deps = ["w"]
[[task]]
id = "agg"
program = "aggregate@1"
aggregate = { over = "p" }
"#,
    )
    .unwrap_err();
    assert_eq!(
        err,
        WorkflowError::Cycle {
            path: "w -> agg -> p[0] -> w".into()
        }
    );
}

#[test]
fn oversized_file_is_refused_before_parsing() {
    let text = format!("name = \"t\"\n# {}\n", "x".repeat(4 * 1024 * 1024));
    assert!(matches!(
        spec::parse(&text, Format::Toml),
        Err(WorkflowError::FileTooLarge { .. })
    ));
}

#[test]
fn huge_arguments_cannot_blow_up_expansion() {
    // 256 args of 4 KiB x 100,000 members would be 100 GB; the byte budget stops it early.
    let arg = "y".repeat(4096);
    let args: Vec<String> = (0..256).map(|_| format!("\"{arg}\"")).collect();
    let text = format!(
        "name = \"t\"\n[[task]]\nid = \"a\"\nprogram = \"noop@1\"\ncount = 100000\nargs = [{}]\n",
        args.join(",")
    );
    let err = load(&text).unwrap_err();
    assert!(
        matches!(err, WorkflowError::EncodedTooLarge { .. }),
        "{err}"
    );
}

#[test]
fn deeply_nested_input_is_an_error_not_a_stack_overflow() {
    let toml = format!("a = {}", "[".repeat(200_000));
    assert!(matches!(
        spec::parse(&toml, Format::Toml),
        Err(WorkflowError::Syntax { .. })
    ));
    let json = "[".repeat(200_000);
    assert!(matches!(
        spec::parse(&json, Format::Json),
        Err(WorkflowError::Syntax { .. })
    ));
}
