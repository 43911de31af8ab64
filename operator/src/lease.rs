//! Leases: a running task's exclusive hold on exact GPUs, plus its VRAM, cores, memory and disk.
//!
//! The matchmaker reserves resources in its own view, but the operator is the authority on its
//! machine: [`LeaseManager::acquire`] refuses, with an error naming the resource, anything it
//! cannot honour (GPU busy or unknown, VRAM above the GPU's, not enough cores, memory or disk,
//! too many tasks). A [`Lease`] releases on drop, so a task that errors or panics never leaks a GPU.

use proofmesh_protocol::messages::{Capacity, GpuInfo};
use proofmesh_protocol::Resources;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a task asks to hold.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LeaseRequest {
    /// Exact GPU indices (as assigned by the matchmaker); `resources.gpu` must equal their count.
    pub gpus: Vec<u32>,
    /// Cores, memory, disk, and VRAM per GPU.
    pub resources: Resources,
}

impl LeaseRequest {
    /// A request for exactly these GPUs and resources.
    pub fn new(gpus: Vec<u32>, resources: Resources) -> Self {
        LeaseRequest { gpus, resources }
    }
}

/// Why a lease is refused. Each variant names the resource.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeaseError {
    /// `resources.gpu` and the number of GPU indices disagree.
    #[error("reservation asks for {requested} GPU(s) but names {named} GPU index(es)")]
    GpuCountMismatch {
        /// `resources.gpu`.
        requested: u32,
        /// Number of indices.
        named: usize,
    },
    /// The same GPU index appears twice.
    #[error("GPU {0} is named twice in the reservation")]
    DuplicateGpu(u32),
    /// No such GPU on this operator (or not offered).
    #[error("GPU {index} does not exist on this operator (offered: {offered:?})")]
    UnknownGpu {
        /// Requested index.
        index: u32,
        /// Indices this operator offers.
        offered: Vec<u32>,
    },
    /// The GPU is leased to another task.
    #[error("GPU {0} is busy with another task")]
    GpuBusy(u32),
    /// More VRAM than the GPU has.
    #[error("GPU {index} has {available_mb} MiB of VRAM, the task asks for {requested_mb} MiB")]
    Vram {
        /// GPU.
        index: u32,
        /// Asked.
        requested_mb: u64,
        /// The GPU's total.
        available_mb: u64,
    },
    /// Not enough free cores.
    #[error("not enough CPU cores: asks {requested}, {free} free of {total}")]
    Cpu {
        /// Asked.
        requested: u32,
        /// Free now.
        free: u32,
        /// Total offered.
        total: u32,
    },
    /// Not enough free memory.
    #[error("not enough memory: asks {requested_mb} MiB, {free_mb} MiB free of {total_mb} MiB")]
    Memory {
        /// Asked.
        requested_mb: u64,
        /// Free now.
        free_mb: u64,
        /// Total offered.
        total_mb: u64,
    },
    /// Not enough free scratch disk.
    #[error("not enough disk: asks {requested_mb} MiB, {free_mb} MiB free of {total_mb} MiB")]
    Disk {
        /// Asked.
        requested_mb: u64,
        /// Free now.
        free_mb: u64,
        /// Total offered.
        total_mb: u64,
    },
    /// The concurrent-task limit is reached.
    #[error("already running the maximum of {0} concurrent tasks")]
    TooManyTasks(usize),
}

impl LeaseError {
    /// True when the refusal may go away once running tasks finish (busy GPU, resources in use);
    /// false when the request can never fit this operator.
    pub fn is_transient(&self) -> bool {
        match self {
            LeaseError::GpuBusy(_) | LeaseError::TooManyTasks(_) => true,
            LeaseError::Cpu {
                requested, total, ..
            } => requested <= total,
            LeaseError::Memory {
                requested_mb,
                total_mb,
                ..
            }
            | LeaseError::Disk {
                requested_mb,
                total_mb,
                ..
            } => requested_mb <= total_mb,
            _ => false,
        }
    }
}

#[derive(Debug, Default)]
struct Held {
    gpus: BTreeSet<u32>,
    cpu: u32,
    memory_mb: u64,
    disk_mb: u64,
    tasks: usize,
}

#[derive(Debug)]
struct Shared {
    capacity: Capacity,
    max_tasks: usize,
    held: Mutex<Held>,
}

impl Shared {
    // A panic while holding the lock cannot leave `Held` half-updated (each update is a few
    // integer ops after all checks), so a poisoned lock is safe to keep using.
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Hands out leases over a fixed capacity. Cheap to clone; clones share state.
#[derive(Clone, Debug)]
pub struct LeaseManager {
    shared: Arc<Shared>,
}

/// What is in use right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    /// GPU indices leased.
    pub busy_gpus: Vec<u32>,
    /// Cores leased.
    pub cpu: u32,
    /// Memory leased, MiB.
    pub memory_mb: u64,
    /// Disk leased, MiB.
    pub disk_mb: u64,
    /// Leases alive.
    pub tasks: usize,
}

impl LeaseManager {
    /// A manager over `capacity`, allowing at most `max_tasks` concurrent leases.
    pub fn new(capacity: Capacity, max_tasks: usize) -> Self {
        LeaseManager {
            shared: Arc::new(Shared {
                capacity,
                max_tasks,
                held: Mutex::new(Held::default()),
            }),
        }
    }

    /// The capacity leases are drawn from.
    pub fn capacity(&self) -> &Capacity {
        &self.shared.capacity
    }

    /// What is leased now.
    pub fn usage(&self) -> Usage {
        let held = self.shared.lock();
        Usage {
            busy_gpus: held.gpus.iter().copied().collect(),
            cpu: held.cpu,
            memory_mb: held.memory_mb,
            disk_mb: held.disk_mb,
            tasks: held.tasks,
        }
    }

    /// Check a request without taking anything.
    pub fn check(&self, request: &LeaseRequest) -> Result<(), LeaseError> {
        let held = self.shared.lock();
        self.admissible(&held, request)
    }

    /// Take an exclusive lease, or refuse naming the resource that does not fit.
    pub fn acquire(&self, request: &LeaseRequest) -> Result<Lease, LeaseError> {
        let mut held = self.shared.lock();
        self.admissible(&held, request)?;
        let r = &request.resources;
        held.gpus.extend(request.gpus.iter().copied());
        held.cpu += r.cpu;
        held.memory_mb += r.memory_mb;
        held.disk_mb += r.disk_mb;
        held.tasks += 1;
        drop(held);
        let mut gpus = request.gpus.clone();
        gpus.sort_unstable();
        Ok(Lease {
            shared: Arc::clone(&self.shared),
            gpus,
            resources: request.resources,
        })
    }

    fn gpu(&self, index: u32) -> Option<&GpuInfo> {
        self.shared.capacity.gpus.iter().find(|g| g.index == index)
    }

    fn admissible(&self, held: &Held, request: &LeaseRequest) -> Result<(), LeaseError> {
        let cap = &self.shared.capacity;
        let r = &request.resources;
        if held.tasks >= self.shared.max_tasks {
            return Err(LeaseError::TooManyTasks(self.shared.max_tasks));
        }
        if r.gpu as usize != request.gpus.len() {
            return Err(LeaseError::GpuCountMismatch {
                requested: r.gpu,
                named: request.gpus.len(),
            });
        }
        let mut seen = BTreeSet::new();
        for &index in &request.gpus {
            if !seen.insert(index) {
                return Err(LeaseError::DuplicateGpu(index));
            }
            let gpu = self.gpu(index).ok_or_else(|| LeaseError::UnknownGpu {
                index,
                offered: cap.gpus.iter().map(|g| g.index).collect(),
            })?;
            if r.vram_mb > gpu.vram_mb {
                return Err(LeaseError::Vram {
                    index,
                    requested_mb: r.vram_mb,
                    available_mb: gpu.vram_mb,
                });
            }
            if held.gpus.contains(&index) {
                return Err(LeaseError::GpuBusy(index));
            }
        }
        let free_cpu = cap.cpu.saturating_sub(held.cpu);
        if r.cpu > free_cpu {
            return Err(LeaseError::Cpu {
                requested: r.cpu,
                free: free_cpu,
                total: cap.cpu,
            });
        }
        let free_mem = cap.memory_mb.saturating_sub(held.memory_mb);
        if r.memory_mb > free_mem {
            return Err(LeaseError::Memory {
                requested_mb: r.memory_mb,
                free_mb: free_mem,
                total_mb: cap.memory_mb,
            });
        }
        let free_disk = cap.disk_mb.saturating_sub(held.disk_mb);
        if r.disk_mb > free_disk {
            return Err(LeaseError::Disk {
                requested_mb: r.disk_mb,
                free_mb: free_disk,
                total_mb: cap.disk_mb,
            });
        }
        Ok(())
    }
}

/// An exclusive hold on GPUs and resources; released when dropped.
#[derive(Debug)]
pub struct Lease {
    shared: Arc<Shared>,
    gpus: Vec<u32>,
    resources: Resources,
}

impl Lease {
    /// Leased GPU indices, ascending.
    pub fn gpus(&self) -> &[u32] {
        &self.gpus
    }

    /// Leased resources.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// The GPUs as `CUDA_VISIBLE_DEVICES` wants them: `"0,3"`, or `""` for none.
    pub fn visible_devices(&self) -> String {
        self.gpus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut held = self.shared.lock();
        for index in &self.gpus {
            held.gpus.remove(index);
        }
        held.cpu = held.cpu.saturating_sub(self.resources.cpu);
        held.memory_mb = held.memory_mb.saturating_sub(self.resources.memory_mb);
        held.disk_mb = held.disk_mb.saturating_sub(self.resources.disk_mb);
        held.tasks = held.tasks.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager() -> LeaseManager {
        let gpu = |index, vram_mb| GpuInfo {
            index,
            model: "fake".into(),
            vram_mb,
            uuid: format!("GPU-{index}"),
        };
        LeaseManager::new(
            Capacity {
                cpu: 8,
                memory_mb: 1000,
                disk_mb: 100,
                gpus: vec![gpu(0, 80_000), gpu(1, 24_000)],
            },
            3,
        )
    }

    fn req(gpus: Vec<u32>, cpu: u32, memory_mb: u64, vram_mb: u64) -> LeaseRequest {
        let gpu = gpus.len() as u32;
        LeaseRequest::new(
            gpus,
            Resources {
                cpu,
                memory_mb,
                gpu,
                vram_mb,
                disk_mb: 0,
            },
        )
    }

    #[test]
    fn refusals_name_the_resource() {
        let m = manager();
        let held = m.acquire(&req(vec![0], 2, 100, 40_000)).unwrap();
        assert_eq!(
            m.acquire(&req(vec![0], 1, 1, 1)).unwrap_err(),
            LeaseError::GpuBusy(0)
        );
        assert!(m
            .acquire(&req(vec![0], 1, 1, 1))
            .unwrap_err()
            .is_transient());
        let unknown = m.acquire(&req(vec![7], 1, 1, 1)).unwrap_err();
        assert_eq!(
            unknown,
            LeaseError::UnknownGpu {
                index: 7,
                offered: vec![0, 1]
            }
        );
        assert!(!unknown.is_transient());
        assert!(matches!(
            m.acquire(&req(vec![1], 1, 1, 40_000)),
            Err(LeaseError::Vram { index: 1, .. })
        ));
        assert_eq!(
            m.acquire(&req(vec![1, 1], 1, 1, 1)).unwrap_err(),
            LeaseError::DuplicateGpu(1)
        );
        let cpu = m.acquire(&req(vec![], 7, 1, 0)).unwrap_err();
        assert_eq!(
            cpu,
            LeaseError::Cpu {
                requested: 7,
                free: 6,
                total: 8
            }
        );
        assert!(cpu.to_string().contains("CPU"));
        assert!(matches!(
            m.acquire(&req(vec![], 1, 901, 0)),
            Err(LeaseError::Memory { free_mb: 900, .. })
        ));
        let mut mismatch = req(vec![1], 1, 1, 1);
        mismatch.resources.gpu = 2;
        assert_eq!(
            m.acquire(&mismatch).unwrap_err(),
            LeaseError::GpuCountMismatch {
                requested: 2,
                named: 1
            }
        );
        drop(held);
        assert_eq!(m.usage().tasks, 0);
        assert!(m.acquire(&req(vec![0], 8, 1000, 80_000)).is_ok());
    }

    #[test]
    fn drop_releases_and_task_limit_holds() {
        let m = manager();
        let a = m.acquire(&req(vec![1, 0], 1, 10, 0)).unwrap();
        assert_eq!(a.gpus(), &[0, 1]);
        assert_eq!(a.visible_devices(), "0,1");
        let _b = m.acquire(&req(vec![], 1, 10, 0)).unwrap();
        let _c = m.acquire(&req(vec![], 1, 10, 0)).unwrap();
        assert_eq!(
            m.acquire(&req(vec![], 1, 10, 0)).unwrap_err(),
            LeaseError::TooManyTasks(3)
        );
        assert_eq!(m.usage().busy_gpus, vec![0, 1]);
        drop(a);
        let usage = m.usage();
        assert_eq!(
            (
                usage.busy_gpus.len(),
                usage.cpu,
                usage.memory_mb,
                usage.tasks
            ),
            (0, 2, 20, 2)
        );
    }
}
