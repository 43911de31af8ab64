//! Lease exclusivity under random concurrent acquire/release over a fake GPU list, checked by an
//! observer that is independent of the manager's own bookkeeping.

use crate::common::fake_gpus;
use proofmesh_operator::{Admission, LeaseError, LeaseManager, LeaseRequest};
use proofmesh_protocol::messages::Capacity;
use proofmesh_protocol::Resources;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
struct Op {
    gpus: Vec<u32>,
    cpu: u32,
    memory_mb: u64,
    vram_mb: u64,
    hold: usize,
}

fn op() -> impl Strategy<Value = Op> {
    (
        prop::collection::vec(0u32..6, 0..3),
        0u32..6,
        0u64..3000,
        0u64..100_000,
        0usize..4,
    )
        .prop_map(|(gpus, cpu, memory_mb, vram_mb, hold)| Op {
            gpus,
            cpu,
            memory_mb,
            vram_mb,
            hold,
        })
}

#[derive(Default)]
struct Observed {
    gpus: BTreeSet<u32>,
    cpu: u32,
    memory_mb: u64,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn no_gpu_held_twice_and_sums_within_capacity(
        threads in prop::collection::vec(prop::collection::vec(op(), 1..40), 2..5),
        max_tasks in 1usize..6,
    ) {
        // GPUs 0..4 exist (index 4 and 5 do not); GPU 3 has little VRAM.
        let mut gpus = fake_gpus(4);
        gpus[3].vram_mb = 16_000;
        let capacity = Capacity { cpu: 8, memory_mb: 4096, disk_mb: 0, gpus };
        let manager = LeaseManager::new(capacity.clone(), max_tasks);
        let observed = Arc::new(Mutex::new(Observed::default()));
        let handles: Vec<_> = threads.into_iter().map(|ops| {
            let (manager, observed, capacity) = (manager.clone(), Arc::clone(&observed), capacity.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let mut held = Vec::new();
                for op in ops {
                    let resources = Resources { cpu: op.cpu, memory_mb: op.memory_mb, gpu: op.gpus.len() as u32, vram_mb: op.vram_mb, disk_mb: 0 };
                    match manager.acquire(&LeaseRequest::new(op.gpus.clone(), resources)) {
                        Ok(lease) => {
                            let mut o = observed.lock().unwrap();
                            for g in lease.gpus() {
                                if !o.gpus.insert(*g) { return Err(format!("GPU {g} held twice")); }
                                let gpu = capacity.gpus.iter().find(|x| x.index == *g).ok_or(format!("unknown GPU {g} leased"))?;
                                if op.vram_mb > gpu.vram_mb { return Err(format!("VRAM over GPU {g}")); }
                            }
                            o.cpu += op.cpu;
                            o.memory_mb += op.memory_mb;
                            if o.cpu > capacity.cpu || o.memory_mb > capacity.memory_mb {
                                return Err(format!("oversubscribed: cpu {} mem {}", o.cpu, o.memory_mb));
                            }
                            drop(o);
                            held.push(lease);
                        }
                        Err(LeaseError::GpuCountMismatch { .. }) => return Err("count mismatch on a consistent request".into()),
                        Err(_) => {}
                    }
                    // Release some leases (oldest first), updating the observer *before* drop.
                    while held.len() > op.hold {
                        let lease = held.remove(0);
                        let mut o = observed.lock().unwrap();
                        for g in lease.gpus() { o.gpus.remove(g); }
                        o.cpu -= lease.resources().cpu;
                        o.memory_mb -= lease.resources().memory_mb;
                        drop(o);
                        drop(lease);
                    }
                }
                for lease in held {
                    let mut o = observed.lock().unwrap();
                    for g in lease.gpus() { o.gpus.remove(g); }
                    o.cpu -= lease.resources().cpu;
                    o.memory_mb -= lease.resources().memory_mb;
                }
                Ok(())
            })
        }).collect();
        for h in handles {
            let outcome = h.join().map_err(|_| TestCaseError::fail("thread panicked"))?;
            prop_assert!(outcome.is_ok(), "{:?}", outcome);
        }
        let usage = manager.usage();
        prop_assert_eq!((usage.tasks, usage.cpu, usage.memory_mb), (0, 0, 0));
        prop_assert!(usage.busy_gpus.is_empty());
    }
}

/// `cpu` cores, `gpus` fake GPUs and a little memory.
fn cores_and_gpus(cpu: u32, gpus: u32) -> Capacity {
    Capacity {
        cpu,
        memory_mb: 100,
        disk_mb: 0,
        gpus: fake_gpus(gpus),
    }
}

/// GPU `gpu` and one core.
fn one_gpu_one_core(gpu: u32) -> LeaseRequest {
    LeaseRequest::new(
        vec![gpu],
        Resources {
            gpu: 1,
            cpu: 1,
            ..Resources::default()
        },
    )
}

#[test]
fn a_panicking_task_does_not_leak_its_gpu() {
    let manager = LeaseManager::new(cores_and_gpus(4, 1), 4);
    let m = manager.clone();
    let joined = std::thread::spawn(move || {
        let _lease = m.acquire(&one_gpu_one_core(0)).unwrap();
        panic!("task crashed");
    })
    .join();
    assert!(joined.is_err());
    assert!(manager.usage().busy_gpus.is_empty());
    assert!(manager
        .acquire(&LeaseRequest::new(
            vec![0],
            Resources {
                gpu: 1,
                ..Resources::default()
            }
        ))
        .is_ok());
}

#[test]
fn a_lease_released_early_gives_back_once_and_stays_readable() {
    let manager = LeaseManager::new(cores_and_gpus(2, 2), 4);
    let one = one_gpu_one_core;
    let (first, second) = (
        manager.acquire(&one(0)).unwrap(),
        manager.acquire(&one(1)).unwrap(),
    );
    assert!(manager.acquire(&one(0)).is_err(), "GPU 0 is held");

    // Released while the lease still exists (its program exited, its output is being signed):
    // GPU 0 and its core are free at once, and the lease still says what it held.
    assert!(!first.release(), "nothing was queued to grant");
    assert_eq!(first.gpus(), &[0]);
    assert_eq!(first.resources().cpu, 1);
    let next = manager.acquire(&one(0)).expect("GPU 0 is free again");
    // Neither a second release nor the drop gives anything back again: that would free the
    // core and GPU that `next` and `second` hold.
    assert!(!first.release());
    drop(first);
    let usage = manager.usage();
    assert_eq!((usage.tasks, usage.cpu), (2, 2));
    assert_eq!(usage.busy_gpus.len(), 2);
    assert!(
        manager.acquire(&one(0)).is_err(),
        "GPU 0 is held by the next task"
    );
    drop((next, second));
    assert_eq!(manager.usage().cpu, 0);
}

/// A finishing task hands its lease over before handling its output: the queued task it grants
/// starts first. On a busy runtime a burst of tasks finishing together otherwise delays every
/// next start by every finisher's output handling.
#[tokio::test]
async fn a_hand_over_starts_the_granted_task_before_the_output_is_handled() {
    let manager = LeaseManager::with_queue(cores_and_gpus(1, 1), 4, 1);
    let request = one_gpu_one_core(0);
    let running = manager.acquire(&request).unwrap();
    let ticket = match manager.admit(&request).unwrap() {
        Admission::Queued(ticket) => ticket,
        Admission::Now(_) => panic!("GPU 0 is held: the request must queue"),
    };
    let order = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::clone(&order);
    let next = tokio::spawn(async move {
        let lease = ticket.lease().await;
        started.lock().unwrap().push("next task started");
        lease
    });
    // Let the queued task wait on its grant.
    tokio::task::yield_now().await;
    running.hand_over().await;
    order.lock().unwrap().push("output handled");
    let lease = next.await.unwrap();
    assert_eq!(lease.gpus(), &[0]);
    assert_eq!(
        *order.lock().unwrap(),
        ["next task started", "output handled"]
    );
    // Released once: dropping it now gives nothing back twice.
    drop(running);
    assert_eq!(manager.usage().tasks, 1);
}
