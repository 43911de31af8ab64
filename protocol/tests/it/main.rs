//! proofmesh-protocol integration tests: one binary, one module per concern.

mod envelope;
mod expansion;
mod fixtures;
mod keys;
mod props;
mod validation;

use std::path::PathBuf;

/// The repository root (examples live there).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Parse, expand and validate a file's text by its name.
pub fn load_file(
    path: &std::path::Path,
) -> Result<
    (proofmesh_protocol::Workflow, proofmesh_protocol::Summary),
    proofmesh_protocol::WorkflowError,
> {
    let text = std::fs::read_to_string(path).expect("fixture is readable");
    let format = proofmesh_protocol::Format::from_file_name(&path.to_string_lossy());
    proofmesh_protocol::spec::load(&text, format)
}
