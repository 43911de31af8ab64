//! Shared fixtures: an operator over a fake 4-GPU capacity with scripts as programs.

use proofmesh_operator::config::ProgramSpec;
use proofmesh_operator::discovery::{Discovery, GpuSource};
use proofmesh_operator::{
    BlobStore, FsBlobStore, Lease, LeaseRequest, Operator, OperatorConfig, TaskReport, TaskSpec,
};
use proofmesh_protocol::messages::{Capacity, GpuInfo};
use proofmesh_protocol::{ContentId, Keypair, Program, Resources};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn fake_gpus(n: u32) -> Vec<GpuInfo> {
    (0..n)
        .map(|index| GpuInfo {
            index,
            model: "Fake H100".into(),
            vram_mb: 80_000,
            uuid: format!("GPU-fake-{index}"),
        })
        .collect()
}

pub fn fake_capacity() -> Capacity {
    Capacity {
        cpu: 16,
        memory_mb: 64_000,
        disk_mb: 100_000,
        gpus: fake_gpus(4),
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub operator: Operator,
    pub blobs: Arc<FsBlobStore>,
}

impl Fixture {
    /// `programs`: (name, spec); every program is version 1.
    pub fn new(
        programs: &[(&str, ProgramSpec)],
        tune: impl FnOnce(&mut OperatorConfig),
    ) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = OperatorConfig::new(dir.path().join("work"));
        for (name, spec) in programs {
            config = config.with_program(name, "1", spec.clone());
        }
        tune(&mut config);
        let blobs = Arc::new(FsBlobStore::open(dir.path().join("blobs")).expect("blob store"));
        let discovery = Discovery {
            capacity: fake_capacity(),
            gpu_source: GpuSource::Config,
            notes: vec![],
        };
        let store: Arc<dyn BlobStore> = blobs.clone();
        let operator =
            Operator::with_discovery(config, Keypair::generate(), Some(store), discovery)
                .expect("operator");
        Fixture {
            dir,
            operator,
            blobs,
        }
    }

    /// Write an executable shell script under the temp dir.
    pub fn script(&self, name: &str, body: &str) -> String {
        write_script(self.dir.path(), name, body)
    }

    pub fn lease(&self, gpus: Vec<u32>) -> Lease {
        let resources = Resources {
            cpu: 1,
            memory_mb: 100,
            gpu: gpus.len() as u32,
            vram_mb: 1000,
            disk_mb: 10,
        };
        self.operator
            .leases()
            .acquire(&LeaseRequest::new(gpus, resources))
            .expect("lease")
    }

    /// Run `spec` on a CPU-only lease, never cancelled.
    pub async fn run_cpu(&self, spec: TaskSpec) -> TaskReport {
        self.operator
            .run(spec, self.lease(vec![]), Default::default())
            .await
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub fn write_script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

pub fn cmd(argv: &[&str]) -> ProgramSpec {
    ProgramSpec::Command(argv.iter().map(|s| s.to_string()).collect())
}

pub fn spec(program: &str, args: &[&str], inputs: Vec<ContentId>, timeout: Duration) -> TaskSpec {
    TaskSpec {
        workflow: ContentId::of_bytes(b"workflow"),
        task: 3,
        name: "leaf[3]".into(),
        attempt: 2,
        program: Program {
            name: program.into(),
            version: "1".into(),
        },
        args: args.iter().map(|s| s.to_string()).collect(),
        inputs,
        timeout,
    }
}

/// True once `pid` is gone or a zombie (dead, waiting for a reaper that may never come in a
/// container whose init does not reap).
pub fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesized command name.
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("Z")
        }
    }
}

/// Waits (bounded) for every pid to die; returns the survivors.
pub fn survivors(pids: &[i32], within: Duration) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|&p| !is_dead(p)).collect();
        if alive.is_empty() || start.elapsed() > within {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Read pids a script wrote, one per line, waiting for the file to have `n` of them.
pub fn read_pids(path: &Path, n: usize) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let pids: Vec<i32> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.len() >= n || start.elapsed() > Duration::from_secs(5) {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
