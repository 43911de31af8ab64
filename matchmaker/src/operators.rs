//! One operator as the matchmaker sees it: capacity, exact reservations (GPUs by index, VRAM,
//! cores, memory, disk), liveness and the tasks it holds.

use crate::reputation::Reputation;
use proofmesh_protocol::messages::OperatorAdvert;
use proofmesh_protocol::{Program, PublicKey, Resources};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Most GPUs tracked per operator; an advert listing more is truncated (logged).
pub const MAX_GPUS: usize = 64;

/// One GPU of an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuSlot {
    /// Driver index.
    pub index: u32,
    /// VRAM in MiB.
    pub vram_mb: u64,
    /// Serving a task (a GPU serves one task at a time).
    pub busy: bool,
}

/// Operator state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorState {
    /// Node key.
    pub key: PublicKey,
    /// Programs it runs, sorted.
    pub programs: Vec<Program>,
    /// Asking price per task.
    pub price_wei: u128,
    /// Total cores, memory, disk.
    pub total: Resources,
    /// Unreserved cores, memory, disk (`gpu`/`vram_mb` unused: GPUs are tracked per slot).
    pub free: Resources,
    /// GPUs, sorted by VRAM then index so that best fit is the first free one that is big enough.
    pub gpus: Vec<GpuSlot>,
    /// Presumed alive.
    pub up: bool,
    /// When it is presumed down without further news (ms).
    pub expiry_ms: u64,
    /// Attempts it holds: (workflow slot, task).
    pub tasks: BTreeSet<(u32, u32)>,
    /// CPU tasks it accepts beyond what fits now (advertised).
    pub queue: u32,
    /// Most attempts it runs at once (advertised; 0: no limit beyond resources).
    pub max_tasks: u32,
    /// Held attempts without a reservation in this view: queued on the machine, or gossiped
    /// by another matchmaker ahead of the release that makes their room.
    pub unreserved: u32,
    /// Track record.
    pub rep: Reputation,
    /// Scheduling classes it is statically eligible for (program, price, total capacity).
    pub classes: Vec<u32>,
    /// Its key in the classes' operator sets (negated score), while it is a member.
    pub set_key: i64,
}

impl OperatorState {
    /// A new operator from its advert.
    pub fn from_advert(advert: &OperatorAdvert) -> Self {
        let mut op = OperatorState {
            key: advert.operator,
            programs: Vec::new(),
            price_wei: 0,
            total: Resources::default(),
            free: Resources::default(),
            gpus: Vec::new(),
            up: true,
            expiry_ms: 0,
            tasks: BTreeSet::new(),
            queue: 0,
            max_tasks: 0,
            unreserved: 0,
            rep: Reputation::default(),
            classes: Vec::new(),
            set_key: 0,
        };
        op.apply_advert(advert);
        op
    }

    /// Take a (re-)advert's capacity, keeping current reservations: free capacity is the new
    /// total minus what held attempts reserve, and busy GPUs stay busy by index.
    pub fn apply_advert(&mut self, advert: &OperatorAdvert) {
        let c = &advert.capacity;
        if c.gpus.len() > MAX_GPUS {
            tracing::warn!(operator = %advert.operator, gpus = c.gpus.len(), "advert lists more than {MAX_GPUS} GPUs; extra GPUs ignored");
        }
        let used_cpu = self.total.cpu.saturating_sub(self.free.cpu);
        let used_mem = self.total.memory_mb.saturating_sub(self.free.memory_mb);
        let used_disk = self.total.disk_mb.saturating_sub(self.free.disk_mb);
        let busy: Vec<u32> = self
            .gpus
            .iter()
            .filter(|g| g.busy)
            .map(|g| g.index)
            .collect();
        self.total = Resources {
            cpu: c.cpu,
            memory_mb: c.memory_mb,
            gpu: 0,
            vram_mb: 0,
            disk_mb: c.disk_mb,
        };
        self.free = Resources {
            cpu: c.cpu.saturating_sub(used_cpu),
            memory_mb: c.memory_mb.saturating_sub(used_mem),
            gpu: 0,
            vram_mb: 0,
            disk_mb: c.disk_mb.saturating_sub(used_disk),
        };
        let mut gpus: Vec<GpuSlot> = c
            .gpus
            .iter()
            .take(MAX_GPUS)
            .map(|g| GpuSlot {
                index: g.index,
                vram_mb: g.vram_mb,
                busy: busy.contains(&g.index),
            })
            .collect();
        gpus.sort_by_key(|g| (g.vram_mb, g.index));
        gpus.dedup_by_key(|g| g.index);
        self.gpus = gpus;
        let mut programs = advert.programs.clone();
        programs.sort();
        programs.dedup();
        self.programs = programs;
        self.price_wei = advert.price_wei;
        self.queue = advert.queue;
        self.max_tasks = advert.max_tasks;
    }

    /// Whether the machine could ever run `r` (on totals, ignoring reservations).
    pub fn could_fit(&self, r: &Resources) -> bool {
        r.cpu <= self.total.cpu
            && r.memory_mb <= self.total.memory_mb
            && r.disk_mb <= self.total.disk_mb
            && self.gpus.iter().filter(|g| g.vram_mb >= r.vram_mb).count() >= r.gpu as usize
    }

    /// Whether one more attempt may hold a reservation (run) under the advertised task limit.
    fn below_max_tasks(&self) -> bool {
        let running = (self.tasks.len() as u32).saturating_sub(self.unreserved);
        self.max_tasks == 0 || running < self.max_tasks
    }

    /// Whether `r` fits in what is free now.
    pub fn fits(&self, r: &Resources) -> bool {
        self.below_max_tasks()
            && r.cpu <= self.free.cpu
            && r.memory_mb <= self.free.memory_mb
            && r.disk_mb <= self.free.disk_mb
            && (r.gpu == 0
                || self
                    .gpus
                    .iter()
                    .filter(|g| !g.busy && g.vram_mb >= r.vram_mb)
                    .take(r.gpu as usize)
                    .count()
                    >= r.gpu as usize)
    }

    /// Whether a task needing `r` may wait in its queue: a CPU task the machine could run,
    /// with a queue place free.
    pub fn can_queue(&self, r: &Resources) -> bool {
        r.gpu == 0 && self.unreserved < self.queue && self.could_fit(r)
    }

    /// Whether a task needing `r` may be assigned now: it fits, or it may wait in the queue.
    pub fn takes(&self, r: &Resources) -> bool {
        self.fits(r) || self.can_queue(r)
    }

    /// Reserve `r`, choosing GPUs by best fit (smallest VRAM that suffices). Returns the GPU
    /// indices, or `None` (and reserves nothing) when it does not fit.
    pub fn reserve(&mut self, r: &Resources) -> Option<Vec<u32>> {
        if !self.fits(r) {
            return None;
        }
        let mut chosen = Vec::with_capacity(r.gpu as usize);
        for g in self.gpus.iter_mut() {
            if chosen.len() == r.gpu as usize {
                break;
            }
            if !g.busy && g.vram_mb >= r.vram_mb {
                g.busy = true;
                chosen.push(g.index);
            }
        }
        self.take(r);
        Some(chosen)
    }

    /// Reserve `r` on exactly the GPUs `indices` (another matchmaker chose them). Returns false,
    /// reserving nothing, when that would oversubscribe this view.
    pub fn reserve_exact(&mut self, r: &Resources, indices: &[u32]) -> bool {
        let cpu_ok = self.below_max_tasks()
            && r.cpu <= self.free.cpu
            && r.memory_mb <= self.free.memory_mb
            && r.disk_mb <= self.free.disk_mb;
        let gpus_ok = indices.len() == r.gpu as usize
            && indices.iter().all(|i| {
                self.gpus
                    .iter()
                    .any(|g| g.index == *i && !g.busy && g.vram_mb >= r.vram_mb)
            });
        let distinct = indices.iter().collect::<BTreeSet<_>>().len() == indices.len();
        if !(cpu_ok && gpus_ok && distinct) {
            return false;
        }
        for g in self.gpus.iter_mut() {
            if indices.contains(&g.index) {
                g.busy = true;
            }
        }
        self.take(r);
        true
    }

    fn take(&mut self, r: &Resources) {
        self.free.cpu -= r.cpu;
        self.free.memory_mb -= r.memory_mb;
        self.free.disk_mb -= r.disk_mb;
    }

    /// Release a reservation made by [`Self::reserve`] or [`Self::reserve_exact`].
    pub fn release(&mut self, r: &Resources, indices: &[u32]) {
        self.free.cpu = (self.free.cpu + r.cpu).min(self.total.cpu);
        self.free.memory_mb = (self.free.memory_mb + r.memory_mb).min(self.total.memory_mb);
        self.free.disk_mb = (self.free.disk_mb + r.disk_mb).min(self.total.disk_mb);
        for g in self.gpus.iter_mut() {
            if indices.contains(&g.index) {
                g.busy = false;
            }
        }
    }

    /// Parallel slots, for the load penalty: GPUs, or cores on a CPU-only machine.
    pub fn slots(&self) -> u32 {
        if self.gpus.is_empty() {
            self.total.cpu.max(1)
        } else {
            self.gpus.len() as u32
        }
    }

    /// Whether it supports `program` (exact name and version).
    pub fn runs(&self, program: &Program) -> bool {
        self.programs.binary_search(program).is_ok()
    }
}
