//! Resources a task asks for (and an operator offers). Units are integral so that comparisons
//! and sums are exact and encodings canonical.

use serde::{Deserialize, Serialize};

/// What one task needs to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Resources {
    /// CPU cores.
    pub cpu: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Number of whole GPUs (a GPU serves one task at a time).
    pub gpu: u32,
    /// VRAM required on each of those GPUs, in MiB.
    pub vram_mb: u64,
    /// Scratch disk in MiB.
    pub disk_mb: u64,
}

impl Resources {
    /// True when `self` fits inside `available`, component by component.
    pub fn fits_in(&self, available: &Resources) -> bool {
        self.cpu <= available.cpu
            && self.memory_mb <= available.memory_mb
            && self.gpu <= available.gpu
            && self.vram_mb <= available.vram_mb
            && self.disk_mb <= available.disk_mb
    }
}
