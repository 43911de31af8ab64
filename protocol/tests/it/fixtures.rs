//! Every example must validate; every invalid fixture must fail with the message its first
//! line (`# expect: ...`, or a `.expect` file next to JSON) promises.

use crate::{load_file, repo_root};
use std::path::PathBuf;

fn files_in(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
        .expect("directory exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("toml" | "json")
            )
        })
        .collect();
    files.sort();
    files
}

/// The substring an invalid fixture's error must contain.
pub fn expected_message(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).expect("fixture is readable");
    if let Some(rest) = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# expect: "))
    {
        return rest.to_owned();
    }
    let side = PathBuf::from(format!("{}.expect", path.display()));
    std::fs::read_to_string(&side)
        .unwrap_or_else(|_| panic!("{} has no expectation", path.display()))
        .trim()
        .to_owned()
}

pub fn invalid_fixtures() -> Vec<PathBuf> {
    files_in("protocol/tests/fixtures/invalid")
}

#[test]
fn every_example_is_valid() {
    let examples = files_in("examples/workflows");
    let names: Vec<String> = examples
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in [
        "zksync-batch.toml",
        "minimal.toml",
        "demo.toml",
        "sleep-pipeline.toml",
        "realtime-block.toml",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "missing example {required}"
        );
    }
    for path in examples {
        let (wf, summary) = load_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(summary.tasks, wf.tasks.len());
        assert!(summary.critical_path_tasks >= 1);
    }
}

#[test]
fn every_invalid_fixture_fails_with_its_message() {
    let fixtures = invalid_fixtures();
    assert!(fixtures.len() >= 20, "only {} fixtures", fixtures.len());
    for path in fixtures {
        let expected = expected_message(&path);
        match load_file(&path) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&expected),
                    "{}:\n  got      {msg}\n  expected {expected}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn json_and_toml_of_the_same_workflow_have_the_same_id() {
    let (toml_wf, _) = load_file(&repo_root().join("examples/workflows/demo.toml")).unwrap();
    let (json_wf, _) =
        load_file(&repo_root().join("protocol/tests/fixtures/valid/demo.json")).unwrap();
    assert_eq!(toml_wf, json_wf);
    assert_eq!(toml_wf.id(), json_wf.id());
}
