//! The `proofmesh workflow` and `proofmesh keys` commands, run as the real binary.

use proofmesh_protocol::spec::{self, Format};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn proofmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proofmesh"))
        .args(args)
        .output()
        .expect("the proofmesh binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn workflow_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .expect("directory exists")
        .map(|e| e.expect("entry").path())
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

/// What an invalid fixture's error must say: its `# expect:` line, or `FILE.expect`.
fn expected(path: &Path) -> String {
    let body = std::fs::read_to_string(path).expect("fixture readable");
    match body
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# expect: "))
    {
        Some(e) => e.to_owned(),
        None => std::fs::read_to_string(format!("{}.expect", path.display()))
            .expect("expect file")
            .trim()
            .to_owned(),
    }
}

fn assert_no_panic(out: &Output) {
    let err = text(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.to_lowercase().contains("backtrace"),
        "{err}"
    );
}

#[test]
fn validate_accepts_every_example_and_prints_a_summary() {
    let examples = workflow_files("examples/workflows");
    assert!(examples.len() >= 5);
    for path in examples {
        let out = proofmesh(&["workflow", "validate", path.to_str().unwrap()]);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
        assert!(stdout.contains("valid workflow"), "{stdout}");
        for key in [
            "tasks:",
            "edges:",
            "critical path:",
            "resources:",
            "price ceiling:",
        ] {
            assert!(
                stdout.contains(key),
                "{} summary lacks {key}:\n{stdout}",
                path.display()
            );
        }
    }
    let out = proofmesh(&[
        "workflow",
        "validate",
        repo()
            .join("examples/workflows/zksync-batch.toml")
            .to_str()
            .unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("tasks:          1025 "), "{stdout}");
    assert!(stdout.contains("critical path:  12 tasks"), "{stdout}");
}

#[test]
fn validate_rejects_every_invalid_fixture_with_its_message() {
    let fixtures = workflow_files("protocol/tests/fixtures/invalid");
    assert!(fixtures.len() >= 20);
    for path in fixtures {
        let out = proofmesh(&["workflow", "validate", path.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{} was accepted", path.display());
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", path.display());
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(
            stderr.contains(&expected(&path)),
            "{}:\n got {stderr}\n want {}",
            path.display(),
            expected(&path)
        );
        assert!(out.stdout.is_empty());
        assert_no_panic(&out);
    }
}

#[test]
fn validate_reports_missing_and_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = proofmesh(&["workflow", "validate", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );

    let binary = dir.path().join("bin.toml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let out = proofmesh(&["workflow", "validate", binary.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not UTF-8"),
        "{}",
        text(&out.stderr)
    );
    assert_no_panic(&out);
}

#[test]
fn id_prints_the_content_id_of_the_expanded_workflow() {
    for name in ["demo.toml", "zksync-batch.toml", "realtime-block.toml"] {
        let path = repo().join("examples/workflows").join(name);
        let out = proofmesh(&["workflow", "id", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let printed = text(&out.stdout).trim().to_owned();
        let (wf, _) = spec::load(&std::fs::read_to_string(&path).unwrap(), Format::Toml).unwrap();
        assert_eq!(printed, wf.id().to_hex());
        assert_eq!(printed.len(), 64);
    }
    // The JSON twin of demo.toml has the same id.
    let toml_id = proofmesh(&[
        "workflow",
        "id",
        repo()
            .join("examples/workflows/demo.toml")
            .to_str()
            .unwrap(),
    ]);
    let json_id = proofmesh(&[
        "workflow",
        "id",
        repo()
            .join("protocol/tests/fixtures/valid/demo.json")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(toml_id.stdout, json_id.stdout);
}

#[test]
fn keys_generate_writes_0600_refuses_to_overwrite_and_show_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    let out = proofmesh(&["keys", "generate", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = text(&out.stdout).trim().to_owned();
    assert_eq!(public.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key file mode {mode:o}");
    }
    let before = std::fs::read(&key).unwrap();

    let again = proofmesh(&["keys", "generate", "--out", key.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("refusing to overwrite"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "the existing key was modified"
    );

    let show = proofmesh(&["keys", "show", key.to_str().unwrap()]);
    assert!(show.status.success(), "{}", text(&show.stderr));
    assert_eq!(text(&show.stdout).trim(), public);

    let other = dir.path().join("other.key");
    let out = proofmesh(&["keys", "generate", "--out", other.to_str().unwrap()]);
    assert_ne!(
        text(&out.stdout).trim(),
        public,
        "two generated keys are equal"
    );
}

#[test]
fn keys_show_rejects_a_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "# proofmesh node key\nnot-a-key\n").unwrap();
    let out = proofmesh(&["keys", "show", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: key file") && stderr.contains("line 2"),
        "{stderr}"
    );
    assert_no_panic(&out);
}
