//! Which stages of a workflow no operator seen lately could run, and why, by the matchmaker's
//! own eligibility test ([`proofmesh_matchmaker::fit`]). `pm_submitWorkflow` returns them as
//! warnings and `pm_status` names them per stage: such tasks wait for an operator that may never
//! come, and the requester should hear that at once rather than at the deadline.

use super::api::UnmatchedStage;
use crate::store::{OperatorRecord, Store, StoreError};
use proofmesh_matchmaker::fit;
use proofmesh_matchmaker::operators::OperatorState;
use proofmesh_protocol::{PublicKey, Resources, Workflow};
use std::collections::HashMap;

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
    let mut explained: HashMap<(&str, &str, Resources, u128), Option<String>> = HashMap::new();
    for task in &wf.tasks {
        let stage = stage_of(&task.name);
        if !include(stage) || out.iter().any(|u| u.stage == stage) {
            continue;
        }
        let key = (
            task.program.name.as_str(),
            task.program.version.as_str(),
            task.resources,
            task.max_price_wei,
        );
        let why = explained.entry(key).or_insert_with(|| {
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

/// What `pm_submitWorkflow` warns of: every stage of `wf` that no operator `store` saw lately
/// could run.
pub fn on_submit(
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
