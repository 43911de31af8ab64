//! Resource discovery: what this machine can offer, as a [`Capacity`].
//!
//! GPUs come from NVML (`libnvidia-ml`, loaded at run time, so a machine without the driver just
//! reports none), then `nvidia-smi` as a fallback, unless the config declares the list outright.
//! The result is capped and filtered by [`ResourceConfig`]. Discovery blocks (it may spawn
//! `nvidia-smi`): async callers wrap it in `spawn_blocking`.

use crate::config::ResourceConfig;
use proofmesh_protocol::messages::{Capacity, GpuInfo};
use std::path::Path;
use std::process::Command;

/// Where the GPU list came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuSource {
    /// NVML.
    Nvml,
    /// `nvidia-smi` output.
    NvidiaSmi,
    /// Declared in the config.
    Config,
    /// Disabled by config.
    Disabled,
    /// No probe found a GPU (or no driver).
    None,
}

/// The discovered capacity plus how it was found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Discovery {
    /// What to advertise (after caps and filters).
    pub capacity: Capacity,
    /// Where the GPU list came from.
    pub gpu_source: GpuSource,
    /// Why probes that were tried failed (e.g. "NVML: libnvidia-ml.so.1 not found").
    pub notes: Vec<String>,
}

/// Why `nvidia-smi` output could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("nvidia-smi output line {line}: {problem}")]
pub struct SmiParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// Discover the machine's resources, capped and filtered by `config`. Disk is the free space of
/// the filesystem holding `work_dir` (or its nearest existing ancestor).
pub fn discover(config: &ResourceConfig, work_dir: &Path) -> Discovery {
    let mut notes = Vec::new();
    let cpu = cpu_cores();
    let memory_mb = memory_mb().unwrap_or_else(|e| {
        notes.push(format!("memory: {e}"));
        0
    });
    let disk_mb = disk_free_mb(work_dir).unwrap_or_else(|e| {
        notes.push(format!("disk: {e}"));
        0
    });
    let (gpus, gpu_source) = if let Some(declared) = &config.gpus {
        (declared.clone(), GpuSource::Config)
    } else if config.disable_gpus {
        (Vec::new(), GpuSource::Disabled)
    } else {
        probe_gpus(config, &mut notes)
    };
    let raw = Capacity {
        cpu,
        memory_mb,
        disk_mb,
        gpus,
    };
    Discovery {
        capacity: apply_caps(raw, config),
        gpu_source,
        notes,
    }
}

/// Apply the config's caps and GPU filter to a raw capacity. Pure, so it is tested directly.
pub fn apply_caps(mut capacity: Capacity, config: &ResourceConfig) -> Capacity {
    if let Some(max) = config.max_cpu {
        capacity.cpu = capacity.cpu.min(max);
    }
    if let Some(max) = config.max_memory_mb {
        capacity.memory_mb = capacity.memory_mb.min(max);
    }
    if let Some(max) = config.max_disk_mb {
        capacity.disk_mb = capacity.disk_mb.min(max);
    }
    if let Some(keep) = &config.gpu_indices {
        capacity.gpus.retain(|g| keep.contains(&g.index));
    }
    capacity.gpus.sort_by_key(|g| g.index);
    capacity.gpus.dedup_by_key(|g| g.index);
    capacity
}

/// Cores this process may use (respects CPU affinity and cgroup quotas).
pub fn cpu_cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// Total memory in MiB: `MemTotal` from /proc/meminfo, lowered to the cgroup v2 limit if any.
pub fn memory_mb() -> Result<u64, String> {
    let meminfo =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    let total_kb = parse_meminfo_total_kb(&meminfo).ok_or("/proc/meminfo has no MemTotal line")?;
    let mut mb = total_kb / 1024;
    if let Ok(limit) = std::fs::read_to_string("/sys/fs/cgroup/memory.max") {
        if let Ok(bytes) = limit.trim().parse::<u64>() {
            mb = mb.min(bytes / (1024 * 1024));
        }
    }
    Ok(mb)
}

fn parse_meminfo_total_kb(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Free space (for unprivileged users) of the filesystem holding `path`, in MiB.
pub fn disk_free_mb(path: &Path) -> Result<u64, String> {
    let mut probe = path;
    // The work dir may not exist yet: measure the filesystem it will be created on.
    while !probe.exists() {
        probe = probe
            .parent()
            .ok_or_else(|| format!("no existing ancestor of {}", path.display()))?;
    }
    let stat = nix::sys::statvfs::statvfs(probe)
        .map_err(|e| format!("statvfs {}: {e}", probe.display()))?;
    // fsblkcnt_t and c_ulong are 32 bits on some targets.
    #[allow(clippy::useless_conversion)]
    let bytes = u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size()));
    Ok(bytes / (1024 * 1024))
}

fn probe_gpus(config: &ResourceConfig, notes: &mut Vec<String>) -> (Vec<GpuInfo>, GpuSource) {
    match nvml_gpus(config) {
        Ok(gpus) if !gpus.is_empty() => return (gpus, GpuSource::Nvml),
        Ok(_) => notes.push("NVML: driver loaded, 0 devices".to_owned()),
        Err(e) => notes.push(format!("NVML: {e}")),
    }
    if config.disable_nvidia_smi {
        return (Vec::new(), GpuSource::None);
    }
    match nvidia_smi_gpus() {
        Ok(gpus) if !gpus.is_empty() => (gpus, GpuSource::NvidiaSmi),
        Ok(_) => {
            notes.push("nvidia-smi: 0 devices".to_owned());
            (Vec::new(), GpuSource::None)
        }
        Err(e) => {
            notes.push(format!("nvidia-smi: {e}"));
            (Vec::new(), GpuSource::None)
        }
    }
}

/// List GPUs through NVML.
pub fn nvml_gpus(config: &ResourceConfig) -> Result<Vec<GpuInfo>, String> {
    use nvml_wrapper::Nvml;
    let nvml = match &config.nvml_library {
        Some(path) => Nvml::builder().lib_path(path.as_os_str()).init(),
        None => Nvml::init(),
    }
    .map_err(|e| e.to_string())?;
    let count = nvml
        .device_count()
        .map_err(|e| format!("device count: {e}"))?;
    let mut gpus = Vec::with_capacity(count as usize);
    for index in 0..count {
        let device = nvml
            .device_by_index(index)
            .map_err(|e| format!("device {index}: {e}"))?;
        let model = device
            .name()
            .map_err(|e| format!("device {index} name: {e}"))?;
        let memory = device
            .memory_info()
            .map_err(|e| format!("device {index} memory: {e}"))?;
        let uuid = device
            .uuid()
            .map_err(|e| format!("device {index} uuid: {e}"))?;
        gpus.push(GpuInfo {
            index,
            model,
            vram_mb: memory.total / (1024 * 1024),
            uuid,
        });
    }
    Ok(gpus)
}

/// The query the fallback runs; [`parse_nvidia_smi`] reads its output.
pub const NVIDIA_SMI_ARGS: [&str; 2] = [
    "--query-gpu=index,name,memory.total,uuid",
    "--format=csv,noheader,nounits",
];

/// List GPUs by running `nvidia-smi`.
pub fn nvidia_smi_gpus() -> Result<Vec<GpuInfo>, String> {
    let output = Command::new("nvidia-smi")
        .args(NVIDIA_SMI_ARGS)
        .output()
        .map_err(|e| format!("cannot run nvidia-smi: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "nvidia-smi exited with {}: {}",
            output.status,
            stderr.trim()
        ));
    }
    parse_nvidia_smi(&String::from_utf8_lossy(&output.stdout)).map_err(|e| e.to_string())
}

/// Parse `nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader,nounits`.
/// Model names may contain spaces but not commas, so a line is exactly four comma-separated
/// fields; memory is in MiB.
pub fn parse_nvidia_smi(text: &str) -> Result<Vec<GpuInfo>, SmiParseError> {
    let mut gpus = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |problem: String| SmiParseError {
            line: i + 1,
            problem,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [index, model, memory, uuid] = fields[..] else {
            return Err(err(format!(
                "expected 4 comma-separated fields, got {}: {line:?}",
                fields.len()
            )));
        };
        let index = index
            .parse()
            .map_err(|_| err(format!("index {index:?} is not a number")))?;
        let vram_mb = memory.parse().map_err(|_| {
            err(format!(
                "memory.total {memory:?} is not a number of MiB (use nounits)"
            ))
        })?;
        if model.is_empty() || uuid.is_empty() {
            return Err(err("empty name or uuid".to_owned()));
        }
        gpus.push(GpuInfo {
            index,
            model: model.to_owned(),
            vram_mb,
            uuid: uuid.to_owned(),
        });
    }
    Ok(gpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from an 8x H100 host and a 2x RTX host (nvidia-smi 550).
    const H100_SAMPLE: &str = "\
0, NVIDIA H100 80GB HBM3, 81559, GPU-5f2f1a44-2c39-8b0e-6f0c-3c9ad4a6c7e1
1, NVIDIA H100 80GB HBM3, 81559, GPU-0b7e2f55-9f4e-1f5a-23d1-8a1e93f0b2c4
";
    const MIXED_SAMPLE: &str =
        "0, NVIDIA GeForce RTX 4090, 24564, GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\r\n\
1, NVIDIA RTX A6000, 49140, GPU-11111111-2222-3333-4444-555555555555\r\n\r\n";

    #[test]
    fn parses_captured_nvidia_smi_output() {
        let gpus = parse_nvidia_smi(H100_SAMPLE).unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[1].index, 1);
        assert_eq!(gpus[1].model, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpus[1].vram_mb, 81559);
        assert_eq!(gpus[1].uuid, "GPU-0b7e2f55-9f4e-1f5a-23d1-8a1e93f0b2c4");
        let mixed = parse_nvidia_smi(MIXED_SAMPLE).unwrap();
        assert_eq!(
            mixed.iter().map(|g| g.vram_mb).collect::<Vec<_>>(),
            vec![24564, 49140]
        );
        assert_eq!(parse_nvidia_smi("").unwrap(), vec![]);
    }

    #[test]
    fn rejects_malformed_nvidia_smi_output() {
        let units = parse_nvidia_smi("0, NVIDIA H100, 81559 MiB, GPU-x\n").unwrap_err();
        assert_eq!(units.line, 1);
        assert!(units.problem.contains("memory.total"));
        let short = parse_nvidia_smi("0, NVIDIA H100, 81559, GPU-x\n1, x\n").unwrap_err();
        assert_eq!(short.line, 2);
        assert!(parse_nvidia_smi("zero, A, 1, GPU-x").is_err());
    }

    #[test]
    fn meminfo_parse() {
        let text = "MemTotal:       16384256 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_meminfo_total_kb(text), Some(16_384_256));
        assert_eq!(parse_meminfo_total_kb("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn caps_and_gpu_filter() {
        let gpu = |index| GpuInfo {
            index,
            model: "T".into(),
            vram_mb: 1000,
            uuid: format!("GPU-{index}"),
        };
        let raw = Capacity {
            cpu: 16,
            memory_mb: 64_000,
            disk_mb: 1_000,
            gpus: vec![gpu(2), gpu(0), gpu(1)],
        };
        let config = ResourceConfig {
            max_cpu: Some(4),
            max_memory_mb: Some(100_000),
            max_disk_mb: Some(10),
            gpu_indices: Some(vec![0, 2]),
            ..ResourceConfig::default()
        };
        let capped = apply_caps(raw, &config);
        assert_eq!(
            (capped.cpu, capped.memory_mb, capped.disk_mb),
            (4, 64_000, 10)
        );
        assert_eq!(
            capped.gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
            vec![0, 2]
        );
    }
}
