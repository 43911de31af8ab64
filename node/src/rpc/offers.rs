//! What the operators a node saw lately offer a workflow, judged by the matchmaker's own
//! eligibility test ([`proofmesh_matchmaker::fit`]): which stages none of them could run, and
//! what its tasks would cost at their asking prices. `pm_submitWorkflow` returns the first as
//! warnings and `pm_status` names them per stage (such tasks wait for an operator that may never
//! come, and the requester should hear that at once rather than at the deadline);
//! `pm_quoteWorkflow` returns both before any escrow is opened.

use super::api::{Quote, UnmatchedStage};
use crate::store::{OperatorRecord, Store, StoreError};
use proofmesh_matchmaker::fit;
use proofmesh_matchmaker::operators::OperatorState;
use proofmesh_protocol::{PublicKey, Resources, Task, Workflow};
use std::collections::HashMap;

/// A scheduling class of tasks: what decides which operators could run one.
type Class<'a> = (&'a str, &'a str, Resources, u128);

fn class_of(task: &Task) -> Class<'_> {
    (
        task.program.name.as_str(),
        task.program.version.as_str(),
        task.resources,
        task.max_price_wei,
    )
}

/// An operator counts as present when its last advert is at most this old. Operators advertise
/// every 10 s by default; a minute leaves room for a missed one or two.
pub const SEEN_WITHIN_MS: u64 = 60_000;

/// The stage a task belongs to: its name before `[` (`prove[17]` is in `prove`).
pub fn stage_of(task_name: &str) -> &str {
    task_name.split('[').next().unwrap_or(task_name)
}

/// The operators whose advert is at most [`SEEN_WITHIN_MS`] old at `now_ms`, as the matchmaker
/// sees them.
pub fn present_operators(
    records: &[(PublicKey, OperatorRecord)],
    now_ms: u64,
) -> Vec<OperatorState> {
    records
        .iter()
        .filter(|(_, r)| r.stats.last_seen_ms.saturating_add(SEEN_WITHIN_MS) >= now_ms)
        .filter_map(|(_, r)| r.advert.as_ref().map(OperatorState::from_advert))
        .collect()
}

/// For each stage of `wf` that `include` selects, in the order its first task appears, why the
/// first of its tasks that no operator of `ops` could run finds none; stages every task of which
/// some operator could run are left out.
pub fn unmatched_stages(
    wf: &Workflow,
    ops: &[OperatorState],
    include: impl Fn(&str) -> bool,
) -> Vec<UnmatchedStage> {
    let mut out: Vec<UnmatchedStage> = Vec::new();
    let mut explained: HashMap<Class<'_>, Option<String>> = HashMap::new();
    for task in &wf.tasks {
        let stage = stage_of(&task.name);
        if !include(stage) || out.iter().any(|u| u.stage == stage) {
            continue;
        }
        let why = explained.entry(class_of(task)).or_insert_with(|| {
            fit::unmatched(ops, &task.program, &task.resources, task.max_price_wei)
                .map(|u| u.to_string())
        });
        if let Some(reason) = why {
            out.push(UnmatchedStage {
                stage: stage.to_owned(),
                reason: reason.clone(),
            });
        }
    }
    out
}

/// What `wf` would cost at the asks of `ops`, and which of its stages none of them could run.
pub fn quote(wf: &Workflow, ops: &[OperatorState]) -> Quote {
    let mut asks: HashMap<Class<'_>, Option<(u128, u128)>> = HashMap::new();
    let (mut escrow, mut lowest, mut highest, mut unmatched_tasks) = (0u128, 0u128, 0u128, 0u64);
    for task in &wf.tasks {
        escrow = escrow.saturating_add(task.max_price_wei);
        let range = *asks
            .entry(class_of(task))
            .or_insert_with(|| fit::asks(ops, &task.program, &task.resources, task.max_price_wei));
        match range {
            Some((lo, hi)) => {
                lowest = lowest.saturating_add(lo);
                highest = highest.saturating_add(hi);
            }
            None => unmatched_tasks += 1,
        }
    }
    Quote {
        id: wf.id().to_hex(),
        tasks: wf.tasks.len() as u64,
        escrow_wei: escrow.to_string(),
        lowest_wei: lowest.to_string(),
        highest_wei: highest.to_string(),
        operators: ops.len() as u64,
        unmatched_tasks,
        unmatched: unmatched_stages(wf, ops, |_| true),
    }
}

/// What `pm_submitWorkflow` warns of: every stage of `wf` that no operator `store` saw lately
/// could run.
pub fn unmatched_in(
    store: &Store,
    wf: &Workflow,
    now_ms: u64,
) -> Result<Vec<UnmatchedStage>, StoreError> {
    let ops = present_operators(&store.operators()?, now_ms);
    Ok(unmatched_stages(wf, &ops, |_| true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OperatorStats;
    use proofmesh_protocol::messages::{Capacity, OperatorAdvert};
    use proofmesh_protocol::spec::{self, Format};

    fn record(key: u8, cpu: u32, seen_ms: u64, advert: bool) -> (PublicKey, OperatorRecord) {
        let advert = advert.then(|| OperatorAdvert {
            operator: PublicKey([key; 32]),
            eth_address: None,
            capacity: Capacity {
                cpu,
                memory_mb: 4_096,
                disk_mb: 1_000,
                gpus: Vec::new(),
            },
            programs: vec![proofmesh_protocol::Program {
                name: "sleep".into(),
                version: "1".into(),
            }],
            price_wei: 0,
            queue: 0,
            max_tasks: 0,
            trusts: Vec::new(),
        });
        let stats = OperatorStats {
            last_seen_ms: seen_ms,
            ..OperatorStats::default()
        };
        (PublicKey([key; 32]), OperatorRecord { advert, stats })
    }

    #[test]
    fn only_operators_seen_within_the_minute_with_an_advert_count() {
        let now = 1_000_000;
        let records = [
            record(1, 2, now - SEEN_WITHIN_MS, true),
            record(2, 64, now - SEEN_WITHIN_MS - 1, true),
            record(3, 64, now, false),
        ];
        let ops = present_operators(&records, now);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].key, PublicKey([1; 32]));
    }

    #[test]
    fn a_quote_sums_the_asks_of_those_that_could_run_each_task() {
        let text = r#"
name = "q"
[defaults]
max_price_wei = 100
[[task]]
id = "leaf"
program = "sleep@1"
count = 3
[[task]]
id = "big"
program = "sleep@1"
resources = { cpu = 8 }
[[task]]
id = "final"
program = "prove@2"
max_price_wei = 7
"#;
        let wf = spec::load(text, Format::Toml).expect("valid").0;
        let mut records = vec![record(1, 2, 0, true), record(2, 16, 0, true)];
        for (r, price) in records.iter_mut().zip([10, 50]) {
            r.1.advert.as_mut().expect("advert").price_wei = price;
        }
        let q = quote(&wf, &present_operators(&records, 0));
        assert_eq!(q.id, wf.id().to_hex());
        assert_eq!((q.tasks, q.operators, q.unmatched_tasks), (5, 2, 1));
        assert_eq!(q.escrow_wei, "407");
        // Three leaves at 10 or 50, `big` only on the 16-core one at 50.
        assert_eq!(
            (q.lowest_wei.as_str(), q.highest_wei.as_str()),
            ("80", "200")
        );
        assert_eq!(q.unmatched.len(), 1);
        assert_eq!(q.unmatched[0].stage, "final");
    }

    #[test]
    fn one_reason_per_selected_stage_in_the_order_of_its_first_task() {
        let text = r#"
name = "w"
[[task]]
id = "big"
program = "sleep@1"
resources = { cpu = 8 }
count = 3
[[task]]
id = "small"
program = "sleep@1"
[[task]]
id = "other"
program = "prove@2"
"#;
        let wf = spec::load(text, Format::Toml).expect("valid").0;
        let ops = present_operators(&[record(1, 2, 0, true)], 0);
        let all = unmatched_stages(&wf, &ops, |_| true);
        let names: Vec<&str> = all.iter().map(|u| u.stage.as_str()).collect();
        assert_eq!(names, ["big", "other"]);
        assert_eq!(all[1].reason, "no operator runs prove@2 (1 known)");
        let some = unmatched_stages(&wf, &ops, |s| s != "big");
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].stage, "other");
        assert_eq!(stage_of("big[2]"), "big");
    }
}
