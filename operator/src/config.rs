//! Operator configuration, read from TOML (see `operator/operator.example.toml`, which comments
//! every field). Every field has a default so a minimal file only names `work_dir` and programs.

use proofmesh_protocol::messages::GpuInfo;
use proofmesh_protocol::Program;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default bound on the captured tail of stdout and of stderr, per task.
pub const DEFAULT_TAIL_BYTES: usize = 64 * 1024;

/// Everything the operator needs to discover, lease and execute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Root of per-attempt work directories (`<work_dir>/tasks/s<n>`, recycled; see
    /// `workdir.rs`); its filesystem is the one whose free space is advertised as disk.
    pub work_dir: PathBuf,
    /// Directory of the built-in file blob store; `None` means `<work_dir>/blobs`.
    #[serde(default)]
    pub blob_dir: Option<PathBuf>,
    /// Program table: `"name@version"` -> how to run it.
    #[serde(default)]
    pub programs: BTreeMap<String, ProgramSpec>,
    /// Most tasks running at once, whatever the resources would allow.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Tasks accepted beyond what runs now: each waits on this machine (in arrival order) and
    /// starts the moment a running task frees its resources, so the round trip to the
    /// matchmaker between two tasks is not idle time. Matchmakers queue only CPU tasks (GPU
    /// tasks run for long enough that the round trip does not matter). 0 turns it off.
    #[serde(default = "default_queue_depth")]
    pub queue_depth: usize,
    /// Bytes of stdout and of stderr kept (the tail) per task for diagnostics.
    #[serde(default = "default_tail")]
    pub stdout_tail_bytes: usize,
    /// Bytes of stderr kept (the tail); also what a crash report carries.
    #[serde(default = "default_tail")]
    pub stderr_tail_bytes: usize,
    /// Largest output file accepted, in bytes.
    #[serde(default = "default_max_output")]
    pub max_output_bytes: u64,
    /// Keep a failed attempt's work directory for post-mortem, as
    /// `<work_dir>/failed/<workflow>-<task>-<attempt>-<n>` (successful ones are emptied).
    #[serde(default)]
    pub keep_failed_work_dirs: bool,
    /// Extra environment variables for every program (the contract's variables win).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What to advertise: caps and overrides on discovery.
    #[serde(default)]
    pub resources: ResourceConfig,
}

/// How one (name, version) runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProgramSpec {
    /// A subprocess per attempt: this argv, then the task's args (the program contract).
    Command(Vec<String>),
    /// A built-in program run in-process (`noop`, `sleep`): no process at all.
    Builtin {
        /// Built-in name: `noop` or `sleep`.
        builtin: String,
    },
    /// A long-lived worker subprocess speaking the line protocol of [`crate::worker`].
    Worker {
        /// argv of the worker process.
        worker: Vec<String>,
    },
}

/// Caps and overrides on what discovery finds. `None` means "as discovered".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Advertise at most this many CPU cores.
    #[serde(default)]
    pub max_cpu: Option<u32>,
    /// Advertise at most this much memory, in MiB.
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    /// Advertise at most this much scratch disk, in MiB.
    #[serde(default)]
    pub max_disk_mb: Option<u64>,
    /// Offer only these GPU indices (as the driver numbers them); others stay private.
    #[serde(default)]
    pub gpu_indices: Option<Vec<u32>>,
    /// Do not probe for GPUs at all (CPU-only operator).
    #[serde(default)]
    pub disable_gpus: bool,
    /// A fully declared GPU list used instead of probing (tests, or hosts where probing fails).
    #[serde(default)]
    pub gpus: Option<Vec<GpuInfo>>,
    /// Path or file name of libnvidia-ml (default `libnvidia-ml.so.1`).
    #[serde(default)]
    pub nvml_library: Option<PathBuf>,
    /// Skip the `nvidia-smi` fallback when NVML is unavailable.
    #[serde(default)]
    pub disable_nvidia_smi: bool,
}

fn default_max_concurrent() -> usize {
    64
}
fn default_queue_depth() -> usize {
    4
}
fn default_tail() -> usize {
    DEFAULT_TAIL_BYTES
}
fn default_max_output() -> u64 {
    4 * 1024 * 1024 * 1024
}

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read operator config {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown/mistyped fields.
    #[error("invalid operator config: {0}")]
    Parse(String),
    /// A program key is not `name@version`.
    #[error("program key {0:?} must be \"name@version\", e.g. \"leaf@1\"")]
    ProgramKey(String),
    /// A program's argv is empty or its built-in unknown.
    #[error("program {key}: {problem}")]
    Program {
        /// The `name@version` key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// `max_concurrent` is zero.
    #[error("max_concurrent must be at least 1")]
    NoConcurrency,
}

impl OperatorConfig {
    /// A config with defaults and no programs, rooted at `work_dir`.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        OperatorConfig {
            work_dir: work_dir.into(),
            blob_dir: None,
            programs: BTreeMap::new(),
            max_concurrent: default_max_concurrent(),
            queue_depth: default_queue_depth(),
            stdout_tail_bytes: DEFAULT_TAIL_BYTES,
            stderr_tail_bytes: DEFAULT_TAIL_BYTES,
            max_output_bytes: default_max_output(),
            keep_failed_work_dirs: false,
            env: BTreeMap::new(),
            resources: ResourceConfig::default(),
        }
    }

    /// Parse and validate TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: OperatorConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Read, parse and validate a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Add a program (builder style, for tests and embedding).
    pub fn with_program(mut self, name: &str, version: &str, spec: ProgramSpec) -> Self {
        self.programs.insert(format!("{name}@{version}"), spec);
        self
    }

    /// Check program keys and specs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent == 0 {
            return Err(ConfigError::NoConcurrency);
        }
        for (key, spec) in &self.programs {
            parse_program_key(key)?;
            let problem = match spec {
                ProgramSpec::Command(argv) | ProgramSpec::Worker { worker: argv }
                    if argv.is_empty() =>
                {
                    Some("argv is empty".to_owned())
                }
                ProgramSpec::Builtin { builtin }
                    if crate::worker::Builtin::parse(builtin).is_none() =>
                {
                    Some(format!("unknown built-in {builtin:?} (known: noop, sleep)"))
                }
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(ConfigError::Program {
                    key: key.clone(),
                    problem,
                });
            }
        }
        Ok(())
    }

    /// The blob directory in force.
    pub fn blob_dir(&self) -> PathBuf {
        self.blob_dir
            .clone()
            .unwrap_or_else(|| self.work_dir.join("blobs"))
    }

    /// Programs this operator can run, for its advert.
    pub fn program_list(&self) -> Vec<Program> {
        self.programs
            .keys()
            .filter_map(|k| parse_program_key(k).ok())
            .collect()
    }
}

/// Split `"name@version"`; the version is after the last `@`.
pub fn parse_program_key(key: &str) -> Result<Program, ConfigError> {
    match key.rsplit_once('@') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => Ok(Program {
            name: name.to_owned(),
            version: version.to_owned(),
        }),
        _ => Err(ConfigError::ProgramKey(key.to_owned())),
    }
}

/// The key a program is configured under.
pub fn program_key(program: &Program) -> String {
    format!("{}@{}", program.name, program.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../operator.example.toml");
        let config = OperatorConfig::from_toml(text).expect("example config is valid");
        assert!(config.programs.contains_key("leaf@1"));
        assert_eq!(
            config.programs["noop@1"],
            ProgramSpec::Builtin {
                builtin: "noop".into()
            }
        );
        assert!(matches!(
            config.programs["sleep@1"],
            ProgramSpec::Worker { .. }
        ));
    }

    #[test]
    fn rejects_bad_keys_and_fields() {
        let bad_key = "work_dir = \"/tmp/x\"\n[programs]\n\"leaf\" = [\"a\"]\n";
        assert!(
            matches!(OperatorConfig::from_toml(bad_key), Err(ConfigError::ProgramKey(k)) if k == "leaf")
        );
        let empty = "work_dir = \"/tmp/x\"\n[programs]\n\"leaf@1\" = []\n";
        assert!(matches!(
            OperatorConfig::from_toml(empty),
            Err(ConfigError::Program { .. })
        ));
        let builtin = "work_dir = \"/tmp/x\"\n[programs]\n\"x@1\" = { builtin = \"fly\" }\n";
        let err = OperatorConfig::from_toml(builtin).unwrap_err().to_string();
        assert!(err.contains("fly"), "{err}");
        let unknown = "work_dir = \"/tmp/x\"\nmax_cpus = 3\n";
        let err = OperatorConfig::from_toml(unknown).unwrap_err().to_string();
        assert!(err.contains("max_cpus"), "{err}");
    }

    #[test]
    fn program_key_round_trip() {
        let p = parse_program_key("groth16-leaf@1.2").unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str()),
            ("groth16-leaf", "1.2")
        );
        assert_eq!(program_key(&p), "groth16-leaf@1.2");
        assert!(parse_program_key("@1").is_err());
        assert!(parse_program_key("x@").is_err());
    }
}
