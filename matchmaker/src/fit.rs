//! Whether an operator could ever run a task, and when none could, which requirement nobody
//! meets. The engine files tasks into classes by [`eligible`]; a task of a class no live operator
//! is eligible for waits, and [`unmatched`] tells its requester why, instead of leaving it to
//! find out at the deadline (users of other markets write their own resubmit loops for this).

use crate::operators::OperatorState;
use proofmesh_protocol::{Program, Resources};
use std::fmt;

/// The engine's static test: `op` runs `program`, asks at most `max_price` and has, in total,
/// what one attempt needs (busy or not).
pub fn eligible(op: &OperatorState, program: &Program, need: &Resources, max_price: u128) -> bool {
    op.runs(program) && op.price_wei <= max_price && op.could_fit(need)
}

/// Why no operator of a set is [`eligible`] for a task, naming the first requirement that nobody
/// meets, in the order an operator is filtered: program, capacity, price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unmatched {
    /// No operator at all.
    NoOperators,
    /// None runs the program.
    NoProgram {
        /// `name@version`.
        program: String,
        /// How many operators there are.
        operators: usize,
    },
    /// Those that run it are all too small for one attempt.
    TooSmall {
        /// `name@version`.
        program: String,
        /// What one attempt needs.
        need: Resources,
        /// The first requirement none of them meets alone, with the most any of them has; `None`
        /// when each is met by one of them but no one meets all.
        short: Option<Shortfall>,
        /// How many run the program.
        runners: usize,
    },
    /// Those that could run it all ask more than the ceiling.
    TooDear {
        /// `name@version`.
        program: String,
        /// The task's price ceiling, wei.
        max_price: u128,
        /// The lowest asking price among them, wei.
        cheapest: u128,
    },
}

/// One requirement of [`Resources`] that no operator meets, with the most any of them offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// Cores.
    Cpu(u32),
    /// Memory, MiB.
    Memory(u64),
    /// Scratch disk, MiB.
    Disk(u64),
    /// GPUs with at least the VRAM asked for.
    Gpus(u32),
}

/// `None` when some operator of `ops` is [`eligible`]; otherwise why none is.
pub fn unmatched<'a>(
    ops: impl IntoIterator<Item = &'a OperatorState>,
    program: &Program,
    need: &Resources,
    max_price: u128,
) -> Option<Unmatched> {
    let ops: Vec<&OperatorState> = ops.into_iter().collect();
    if ops.iter().any(|op| eligible(op, program, need, max_price)) {
        return None;
    }
    if ops.is_empty() {
        return Some(Unmatched::NoOperators);
    }
    let name = format!("{}@{}", program.name, program.version);
    let runners: Vec<&OperatorState> = ops.iter().copied().filter(|op| op.runs(program)).collect();
    if runners.is_empty() {
        return Some(Unmatched::NoProgram {
            program: name,
            operators: ops.len(),
        });
    }
    let fitting = runners.iter().filter(|op| op.could_fit(need));
    let Some(cheapest) = fitting.map(|op| op.price_wei).min() else {
        return Some(Unmatched::TooSmall {
            program: name,
            need: *need,
            short: shortfall(&runners, need),
            runners: runners.len(),
        });
    };
    Some(Unmatched::TooDear {
        program: name,
        max_price,
        cheapest,
    })
}

/// The lowest and highest asking price among the operators of `ops` [`eligible`] for a task,
/// or `None` when none is: what one attempt of it would cost, whichever of them runs it.
pub fn asks<'a>(
    ops: impl IntoIterator<Item = &'a OperatorState>,
    program: &Program,
    need: &Resources,
    max_price: u128,
) -> Option<(u128, u128)> {
    ops.into_iter()
        .filter(|op| eligible(op, program, need, max_price))
        .fold(None, |range, op| {
            let p = op.price_wei;
            Some(range.map_or((p, p), |(lo, hi): (u128, u128)| (lo.min(p), hi.max(p))))
        })
}

/// The first requirement of `need` that no operator of `ops` meets on its own.
fn shortfall(ops: &[&OperatorState], need: &Resources) -> Option<Shortfall> {
    let most = |f: &dyn Fn(&OperatorState) -> u64| ops.iter().map(|op| f(op)).max().unwrap_or(0);
    let cpu = most(&|op| u64::from(op.total.cpu));
    let memory = most(&|op| op.total.memory_mb);
    let disk = most(&|op| op.total.disk_mb);
    let gpus = most(&|op| op.gpus.iter().filter(|g| g.vram_mb >= need.vram_mb).count() as u64);
    if cpu < u64::from(need.cpu) {
        Some(Shortfall::Cpu(cpu as u32))
    } else if memory < need.memory_mb {
        Some(Shortfall::Memory(memory))
    } else if disk < need.disk_mb {
        Some(Shortfall::Disk(disk))
    } else if gpus < u64::from(need.gpu) {
        Some(Shortfall::Gpus(gpus as u32))
    } else {
        None
    }
}

impl fmt::Display for Unmatched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmatched::NoOperators => write!(f, "no operator is known"),
            Unmatched::NoProgram { program, operators } => {
                write!(f, "no operator runs {program} ({operators} known)")
            }
            Unmatched::TooSmall {
                program,
                need,
                short,
                runners,
            } => {
                let most = match short {
                    Some(Shortfall::Cpu(most)) => {
                        write!(f, "needs {} cores", need.cpu)?;
                        u64::from(*most)
                    }
                    Some(Shortfall::Memory(most)) => {
                        write!(f, "needs {} MiB of memory", need.memory_mb)?;
                        *most
                    }
                    Some(Shortfall::Disk(most)) => {
                        write!(f, "needs {} MiB of disk", need.disk_mb)?;
                        *most
                    }
                    Some(Shortfall::Gpus(most)) => {
                        write!(
                            f,
                            "needs {} GPU(s) with {} MiB of VRAM",
                            need.gpu, need.vram_mb
                        )?;
                        u64::from(*most)
                    }
                    None => {
                        return write!(
                            f,
                            "needs {} cores, {} MiB of memory, {} MiB of disk and {} GPU(s) with \
                             {} MiB of VRAM at once; no operator running {program} ({runners}) has \
                             them all",
                            need.cpu, need.memory_mb, need.disk_mb, need.gpu, need.vram_mb
                        )
                    }
                };
                write!(
                    f,
                    "; operators running {program} ({runners}) have at most {most}"
                )
            }
            Unmatched::TooDear {
                program,
                max_price,
                cheapest,
            } => write!(
                f,
                "its price ceiling is {max_price} wei; operators that could run {program} ask at \
                 least {cheapest} wei"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proofmesh_protocol::messages::{Capacity, GpuInfo, OperatorAdvert};
    use proofmesh_protocol::PublicKey;
    use proptest::prelude::*;

    fn program(name: &str) -> Program {
        Program {
            name: name.into(),
            version: "1".into(),
        }
    }

    fn op(
        key: u8,
        programs: &[&str],
        cpu: u32,
        memory_mb: u64,
        vram: &[u64],
        price: u128,
    ) -> OperatorState {
        OperatorState::from_advert(&OperatorAdvert {
            operator: PublicKey([key; 32]),
            eth_address: None,
            capacity: Capacity {
                cpu,
                memory_mb,
                disk_mb: 10_000,
                gpus: vram
                    .iter()
                    .enumerate()
                    .map(|(i, &vram_mb)| GpuInfo {
                        index: i as u32,
                        model: "test".into(),
                        vram_mb,
                        uuid: format!("GPU-{key}-{i}"),
                    })
                    .collect(),
            },
            programs: programs.iter().map(|p| program(p)).collect(),
            price_wei: price,
            queue: 0,
            max_tasks: 0,
            trusts: Vec::new(),
        })
    }

    fn need(cpu: u32, memory_mb: u64, gpu: u32, vram_mb: u64) -> Resources {
        Resources {
            cpu,
            memory_mb,
            gpu,
            vram_mb,
            disk_mb: 0,
        }
    }

    #[test]
    fn an_eligible_operator_means_nothing_to_explain() {
        let ops = [
            op(1, &["leaf"], 4, 8_192, &[], 10),
            op(2, &["leaf"], 16, 65_536, &[81_920], 50),
        ];
        assert_eq!(
            unmatched(&ops, &program("leaf"), &need(2, 4_096, 0, 0), 10),
            None
        );
        assert_eq!(
            unmatched(&ops, &program("leaf"), &need(8, 4_096, 1, 40_000), 50),
            None
        );
    }

    #[test]
    fn it_names_the_first_requirement_nobody_meets() {
        let ops = [
            op(1, &["leaf"], 4, 8_192, &[24_576], 10),
            op(2, &["leaf", "agg"], 16, 65_536, &[], 50),
        ];
        assert_eq!(
            unmatched(&[], &program("leaf"), &need(1, 1, 0, 0), 10),
            Some(Unmatched::NoOperators)
        );
        let none = unmatched(&ops, &program("wrap"), &need(1, 1, 0, 0), 10).unwrap();
        assert_eq!(none.to_string(), "no operator runs wrap@1 (2 known)");
        let gpu = unmatched(&ops, &program("leaf"), &need(1, 1, 1, 40_960), 100).unwrap();
        assert_eq!(
            gpu.to_string(),
            "needs 1 GPU(s) with 40960 MiB of VRAM; operators running leaf@1 (2) have at most 0"
        );
        let cpu = unmatched(&ops, &program("agg"), &need(32, 1, 0, 0), 100).unwrap();
        assert_eq!(
            cpu.to_string(),
            "needs 32 cores; operators running agg@1 (1) have at most 16"
        );
        let memory = unmatched(&ops, &program("leaf"), &need(2, 100_000, 0, 0), 100).unwrap();
        assert!(
            matches!(
                memory,
                Unmatched::TooSmall {
                    short: Some(Shortfall::Memory(65_536)),
                    runners: 2,
                    ..
                }
            ),
            "{memory:?}"
        );
        // Each requirement is met by one of them, all of them by none.
        let apart = unmatched(&ops, &program("leaf"), &need(8, 1, 1, 1_000), 100).unwrap();
        assert!(
            matches!(apart, Unmatched::TooSmall { short: None, .. }),
            "{apart:?}"
        );
        assert!(apart.to_string().contains("has them all"), "{apart}");
        let dear = unmatched(&ops, &program("leaf"), &need(2, 1, 0, 0), 5).unwrap();
        assert_eq!(
            dear.to_string(),
            "its price ceiling is 5 wei; operators that could run leaf@1 ask at least 10 wei"
        );
        // Only those that could run it count for the cheapest price.
        let dear = unmatched(&ops, &program("leaf"), &need(8, 1, 0, 0), 5).unwrap();
        assert!(
            matches!(dear, Unmatched::TooDear { cheapest: 50, .. }),
            "{dear:?}"
        );
    }

    #[test]
    fn asks_span_the_eligible_operators_only() {
        let ops = [
            op(1, &["leaf"], 4, 8_192, &[], 10),
            op(2, &["leaf"], 16, 65_536, &[], 50),
            op(3, &["leaf"], 16, 65_536, &[], 90),
            op(4, &["agg"], 64, 65_536, &[], 1),
        ];
        let leaf = program("leaf");
        assert_eq!(asks(&ops, &leaf, &need(2, 1, 0, 0), 100), Some((10, 90)));
        assert_eq!(asks(&ops, &leaf, &need(2, 1, 0, 0), 60), Some((10, 50)));
        assert_eq!(asks(&ops, &leaf, &need(8, 1, 0, 0), 100), Some((50, 90)));
        assert_eq!(asks(&ops, &leaf, &need(32, 1, 0, 0), 100), None);
    }

    proptest! {
        /// An explanation exactly when no operator is eligible: what the requester is told agrees
        /// with what the engine does.
        #[test]
        fn explained_exactly_when_nobody_is_eligible(
            ops in prop::collection::vec(
                (prop::bool::ANY, 1u32..8, 1u64..4, prop::collection::vec(1u64..4, 0..3), 0u128..4),
                0..5,
            ),
            cpu in 0u32..9, memory in 0u64..5, gpu in 0u32..3, vram in 0u64..5, max_price in 0u128..4,
        ) {
            let ops: Vec<OperatorState> = ops
                .iter()
                .enumerate()
                .map(|(i, (leaf, cpu, mem, vram, price))| {
                    op(i as u8, if *leaf { &["leaf"] } else { &["agg"] }, *cpu, *mem, vram, *price)
                })
                .collect();
            let need = need(cpu, memory, gpu, vram);
            let any = ops.iter().any(|o| eligible(o, &program("leaf"), &need, max_price));
            let why = unmatched(&ops, &program("leaf"), &need, max_price);
            prop_assert_eq!(why.is_none(), any, "{:?}", why);
            let range = asks(&ops, &program("leaf"), &need, max_price);
            prop_assert_eq!(range.is_some(), any);
            if let Some((lo, hi)) = range {
                prop_assert!(lo <= hi && hi <= max_price);
            }
        }
    }
}
