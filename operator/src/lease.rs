//! Leases: a running task's exclusive hold on exact GPUs, plus its VRAM, cores, memory and disk.
//!
//! The matchmaker reserves resources in its own view, but the operator is the authority on its
//! machine: [`LeaseManager::acquire`] refuses, with an error naming the resource, anything it
//! cannot honour (GPU busy or unknown, VRAM above the GPU's, not enough cores, memory or disk,
//! too many tasks). A [`Lease`] releases on drop, so a task that errors or panics never leaks a GPU.
//!
//! [`LeaseManager::admit`] also queues: a request that does not fit *now* but will once running
//! tasks finish waits in a bounded FIFO and is granted, in arrival order among those that fit,
//! the moment a lease is released. Holding the next tasks on the machine hides the round trip
//! to the matchmaker between one task's end and the next one's start.

use proofmesh_protocol::messages::{Capacity, GpuInfo};
use proofmesh_protocol::Resources;
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

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
    /// It does not fit now and the wait queue is full.
    #[error("resources busy ({busy}) and all {depth} queue places taken")]
    QueueFull {
        /// Why it does not fit now.
        busy: Box<LeaseError>,
        /// Queue depth.
        depth: usize,
    },
}

impl LeaseError {
    /// True when the refusal may go away once running tasks finish (busy GPU, resources in use);
    /// false when the request can never fit this operator.
    pub fn is_transient(&self) -> bool {
        match self {
            LeaseError::GpuBusy(_) | LeaseError::TooManyTasks(_) | LeaseError::QueueFull { .. } => {
                true
            }
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
    /// Requests waiting for room, in arrival order.
    waiting: VecDeque<Waiter>,
    next_ticket: u64,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    request: LeaseRequest,
    grant: oneshot::Sender<Lease>,
}

impl Held {
    fn take(&mut self, request: &LeaseRequest) {
        let r = &request.resources;
        self.gpus.extend(request.gpus.iter().copied());
        self.cpu += r.cpu;
        self.memory_mb += r.memory_mb;
        self.disk_mb += r.disk_mb;
        self.tasks += 1;
    }
}

#[derive(Debug)]
struct Shared {
    capacity: Capacity,
    max_tasks: usize,
    max_waiting: usize,
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

/// What [`LeaseManager::admit`] gives: a lease now, or a place in the queue.
#[derive(Debug)]
pub enum Admission {
    /// It fits now.
    Now(Lease),
    /// It fits once running tasks finish; await [`Ticket::lease`].
    Queued(Ticket),
}

impl Admission {
    /// Wait for the lease (at once for [`Admission::Now`]).
    pub async fn lease(self) -> Lease {
        match self {
            Admission::Now(lease) => lease,
            Admission::Queued(ticket) => ticket.lease().await,
        }
    }
}

/// A queued request. Dropping it gives up its place (or the lease, if just granted).
#[derive(Debug)]
pub struct Ticket {
    shared: Arc<Shared>,
    ticket: u64,
    grant: Option<oneshot::Receiver<Lease>>,
}

impl Ticket {
    /// Wait until the request is granted.
    pub async fn lease(mut self) -> Lease {
        let grant = self.grant.take().expect("a ticket is awaited once");
        match grant.await {
            Ok(lease) => lease,
            // The sender lives in the queue until it grants; the queue outlives every ticket
            // (the ticket holds the shared state), so it cannot be dropped unsent.
            Err(_) => unreachable!("a queued lease request was dropped without an answer"),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.grant.is_some() {
            let mut held = self.shared.lock();
            held.waiting.retain(|w| w.ticket != self.ticket);
        }
    }
}

impl LeaseManager {
    /// A manager over `capacity`, allowing at most `max_tasks` concurrent leases and no queue.
    pub fn new(capacity: Capacity, max_tasks: usize) -> Self {
        Self::with_queue(capacity, max_tasks, 0)
    }

    /// A manager that also queues up to `max_waiting` requests (see [`Self::admit`]).
    pub fn with_queue(capacity: Capacity, max_tasks: usize, max_waiting: usize) -> Self {
        LeaseManager {
            shared: Arc::new(Shared {
                capacity,
                max_tasks,
                max_waiting,
                held: Mutex::new(Held::default()),
            }),
        }
    }

    /// Most leases alive at once.
    pub fn max_tasks(&self) -> usize {
        self.shared.max_tasks
    }

    /// How many requests may wait for room.
    pub fn queue_depth(&self) -> usize {
        self.shared.max_waiting
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.shared.lock().waiting.len()
    }

    /// A lease now if the request fits; else, if it will fit once running tasks finish and
    /// the queue has room, a ticket that is granted in arrival order; else refuse naming
    /// the resource. A request never jumps ahead of an earlier waiter that fits.
    pub fn admit(&self, request: &LeaseRequest) -> Result<Admission, LeaseError> {
        let mut held = self.shared.lock();
        let busy = match self.admissible(&held, request) {
            Ok(()) if held.waiting.is_empty() => {
                held.take(request);
                drop(held);
                return Ok(Admission::Now(self.lease(request)));
            }
            Ok(()) => None,
            Err(e) if e.is_transient() => {
                // Would it ever fit on an idle machine? (GPU names, VRAM and totals.)
                self.admissible(&Held::default(), request)?;
                Some(e)
            }
            Err(e) => return Err(e),
        };
        if held.waiting.len() >= self.shared.max_waiting {
            // It may fit now, but earlier requests wait first: as busy as a full machine.
            let busy = busy.unwrap_or(LeaseError::TooManyTasks(held.tasks));
            return Err(LeaseError::QueueFull {
                busy: Box::new(busy),
                depth: self.shared.max_waiting,
            });
        }
        let (tx, rx) = oneshot::channel();
        held.next_ticket += 1;
        let ticket = held.next_ticket;
        held.waiting.push_back(Waiter {
            ticket,
            request: request.clone(),
            grant: tx,
        });
        // Room may already be there (it fit, but earlier waiters came first): grant in order.
        let granted = self.grant_waiting(&mut held);
        drop(held);
        send_grants(granted);
        Ok(Admission::Queued(Ticket {
            shared: Arc::clone(&self.shared),
            ticket,
            grant: Some(rx),
        }))
    }

    fn lease(&self, request: &LeaseRequest) -> Lease {
        let mut gpus = request.gpus.clone();
        gpus.sort_unstable();
        Lease {
            shared: Arc::clone(&self.shared),
            gpus,
            resources: request.resources,
            released: AtomicBool::new(false),
        }
    }

    /// Take room for every waiter that fits, in arrival order; the leases are sent by the
    /// caller once the lock is released (a failed send drops the lease, which locks).
    fn grant_waiting(&self, held: &mut Held) -> Vec<(oneshot::Sender<Lease>, Lease)> {
        let mut granted = Vec::new();
        let mut k = 0;
        while k < held.waiting.len() {
            if held.waiting[k].grant.is_closed() {
                held.waiting.remove(k);
                continue;
            }
            if self.admissible(held, &held.waiting[k].request).is_ok() {
                let Some(w) = held.waiting.remove(k) else {
                    break;
                };
                held.take(&w.request);
                granted.push((w.grant, self.lease(&w.request)));
            } else {
                k += 1;
            }
        }
        granted
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
        held.take(request);
        drop(held);
        Ok(self.lease(request))
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

/// An exclusive hold on GPUs and resources; released when dropped, or earlier by
/// [`Lease::release`] (what it held stays readable).
#[derive(Debug)]
pub struct Lease {
    shared: Arc<Shared>,
    gpus: Vec<u32>,
    resources: Resources,
    released: AtomicBool,
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

    /// Give the GPUs and resources back now, once the program holding them has exited: the
    /// next task may start while this one's output is still being stored and signed. Once
    /// only; dropping the lease afterwards releases nothing again. Returns whether that
    /// granted a queued request (see [`Lease::hand_over`]).
    pub fn release(&self) -> bool {
        if self.released.swap(true, AtomicOrdering::AcqRel) {
            return false;
        }
        let mut held = self.shared.lock();
        for index in &self.gpus {
            held.gpus.remove(index);
        }
        held.cpu = held.cpu.saturating_sub(self.resources.cpu);
        held.memory_mb = held.memory_mb.saturating_sub(self.resources.memory_mb);
        held.disk_mb = held.disk_mb.saturating_sub(self.resources.disk_mb);
        held.tasks = held.tasks.saturating_sub(1);
        if held.waiting.is_empty() {
            return false;
        }
        let manager = LeaseManager {
            shared: Arc::clone(&self.shared),
        };
        let granted = manager.grant_waiting(&mut held);
        drop(held);
        let any = !granted.is_empty();
        send_grants(granted);
        any
    }

    /// [`Lease::release`] from a task about to store and sign its output: when that granted a
    /// queued task, step aside first so the queued task starts its program before this one's
    /// output is handled (on a busy runtime, a burst of tasks finishing together otherwise
    /// delays every next start by every finisher's output handling).
    pub async fn hand_over(&self) {
        if self.release() {
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// Hand granted leases to their waiters; one whose waiter just left is dropped (released).
fn send_grants(granted: Vec<(oneshot::Sender<Lease>, Lease)>) {
    for (tx, lease) in granted {
        let _ = tx.send(lease);
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

    fn queued(m: &LeaseManager, r: &LeaseRequest) -> Ticket {
        match m.admit(r).unwrap() {
            Admission::Queued(t) => t,
            Admission::Now(_) => panic!("expected to queue"),
        }
    }

    #[tokio::test]
    async fn queued_requests_are_granted_in_order_when_room_frees() {
        let m = LeaseManager::with_queue(
            Capacity {
                cpu: 2,
                memory_mb: 1000,
                disk_mb: 0,
                gpus: Vec::new(),
            },
            8,
            2,
        );
        let one = req(vec![], 1, 10, 0);
        let a = match m.admit(&one).unwrap() {
            Admission::Now(l) => l,
            Admission::Queued(_) => panic!("fits now"),
        };
        let b = m.admit(&one).unwrap().lease().await;
        // Both cores held: the next two wait, the third is refused naming the full queue.
        let first = queued(&m, &req(vec![], 2, 10, 0));
        let second = queued(&m, &one);
        assert_eq!(m.waiting(), 2);
        let full = m.admit(&one).unwrap_err();
        assert!(
            matches!(full, LeaseError::QueueFull { depth: 2, .. }),
            "{full}"
        );
        assert!(full.is_transient());
        // Never on this machine: refused at once, not queued.
        assert!(matches!(
            m.admit(&req(vec![], 3, 10, 0)),
            Err(LeaseError::Cpu { total: 2, .. })
        ));
        // One core frees: `first` needs two, so `second` (which fits) is granted; `first` keeps
        // its place.
        drop(a);
        let second = second.lease().await;
        assert_eq!(m.waiting(), 1);
        assert_eq!(m.usage().cpu, 2);
        drop(b);
        drop(second);
        let first = first.lease().await;
        assert_eq!((m.usage().cpu, m.usage().tasks, m.waiting()), (2, 1, 0));
        drop(first);
        assert_eq!(m.usage().tasks, 0);
    }

    #[tokio::test]
    async fn a_dropped_ticket_gives_up_its_place_and_its_grant() {
        let m = LeaseManager::with_queue(
            Capacity {
                cpu: 1,
                memory_mb: 1000,
                disk_mb: 0,
                gpus: Vec::new(),
            },
            8,
            1,
        );
        let one = req(vec![], 1, 10, 0);
        let held = m.acquire(&one).unwrap();
        let waiting = queued(&m, &one);
        drop(waiting);
        assert_eq!(m.waiting(), 0);
        let again = queued(&m, &one);
        drop(held);
        // Granted on release, then the ticket is dropped unread: the lease goes back.
        drop(again);
        assert_eq!((m.usage().tasks, m.usage().cpu), (0, 0));
        assert!(matches!(m.admit(&one).unwrap(), Admission::Now(_)));
    }
}
