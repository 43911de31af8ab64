use crate::common::key;
use proofmesh_matchmaker::active_matchmaker;
use proofmesh_protocol::{ContentId, PublicKey};

fn wf(i: u32) -> ContentId {
    ContentId::of_bytes(&i.to_le_bytes())
}

#[test]
fn choice_is_deterministic_and_order_independent() {
    let live: Vec<PublicKey> = (1..=5).map(|i| key(i).public()).collect();
    let mut reversed = live.clone();
    reversed.reverse();
    for i in 0..200 {
        assert_eq!(
            active_matchmaker(&wf(i), &live),
            active_matchmaker(&wf(i), &reversed)
        );
    }
    assert_eq!(active_matchmaker(&wf(1), &[]), None);
}

#[test]
fn load_spreads_and_removal_moves_only_the_removed_ones_workflows() {
    let live: Vec<PublicKey> = (1..=4).map(|i| key(i).public()).collect();
    let mut counts = [0usize; 4];
    for i in 0..400 {
        let chosen = active_matchmaker(&wf(i), &live).expect("non-empty set");
        counts[live.iter().position(|k| *k == chosen).expect("member")] += 1;
    }
    assert!(counts.iter().all(|&c| c > 50), "uneven spread {counts:?}");
    let survivors = &live[1..];
    for i in 0..400 {
        let before = active_matchmaker(&wf(i), &live).expect("non-empty");
        let after = active_matchmaker(&wf(i), survivors).expect("non-empty");
        if before != live[0] {
            assert_eq!(
                before, after,
                "workflow {i} moved although its matchmaker stayed"
            );
        } else {
            assert_ne!(after, live[0]);
        }
    }
}
