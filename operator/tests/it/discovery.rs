//! Discovery on this machine, and its CPU-only path.

use crate::common::fake_gpus;
use proofmesh_operator::discovery::{apply_caps, cpu_cores, discover, GpuSource};
use proofmesh_operator::ResourceConfig;

#[test]
fn discovers_sane_cpu_memory_disk() {
    let dir = tempfile::tempdir().unwrap();
    let d = discover(
        &ResourceConfig::default(),
        &dir.path().join("not-yet-created"),
    );
    let cores = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(d.capacity.cpu, cores);
    assert!(
        d.capacity.memory_mb >= 256,
        "memory {} MiB",
        d.capacity.memory_mb
    );
    assert!(d.capacity.disk_mb > 0, "disk {} MiB", d.capacity.disk_mb);
    // Whatever this machine has, every advertised GPU is complete.
    for gpu in &d.capacity.gpus {
        assert!(
            gpu.vram_mb > 0 && !gpu.model.is_empty() && gpu.uuid.starts_with("GPU-"),
            "{gpu:?}"
        );
    }
    assert_eq!(
        d.capacity.gpus.is_empty(),
        d.gpu_source == GpuSource::None,
        "{d:?}"
    );
}

#[test]
fn no_driver_means_cpu_only() {
    let config = ResourceConfig {
        nvml_library: Some("/nonexistent/libnvidia-ml.so.1".into()),
        disable_nvidia_smi: true,
        ..ResourceConfig::default()
    };
    let d = discover(&config, std::env::temp_dir().as_path());
    assert!(d.capacity.gpus.is_empty());
    assert_eq!(d.gpu_source, GpuSource::None);
    assert!(
        d.notes.iter().any(|n| n.starts_with("NVML")),
        "{:?}",
        d.notes
    );
    assert!(d.capacity.cpu >= 1);
    let disabled = discover(
        &ResourceConfig {
            disable_gpus: true,
            ..ResourceConfig::default()
        },
        std::env::temp_dir().as_path(),
    );
    assert!(disabled.capacity.gpus.is_empty());
    assert_eq!(disabled.gpu_source, GpuSource::Disabled);
}

#[test]
fn declared_gpus_caps_and_filters() {
    let config = ResourceConfig {
        gpus: Some(fake_gpus(4)),
        gpu_indices: Some(vec![1, 3]),
        max_cpu: Some(1),
        max_memory_mb: Some(100),
        ..ResourceConfig::default()
    };
    let d = discover(&config, std::env::temp_dir().as_path());
    assert_eq!(d.gpu_source, GpuSource::Config);
    assert_eq!(
        d.capacity.gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!((d.capacity.cpu, d.capacity.memory_mb), (1, 100));
    // Caps never raise what was found.
    let raised = apply_caps(
        d.capacity.clone(),
        &ResourceConfig {
            max_cpu: Some(10_000),
            ..Default::default()
        },
    );
    assert_eq!(raised.cpu, 1);
    assert!(cpu_cores() >= 1);
}
