//! What `proofmesh devnet up` promises when it returns: a network ready for a workflow.

use crate::harness::{spec, Net};
use std::collections::BTreeSet;

// A matchmaker that has not heard an operator's advert schedules as if the operator did not
// exist, so `devnet up` returns only once the gateway and every matchmaker know every operator
// (before operators advertised again at 0.25, 0.75 and 1.75 s, an advert lost in the start-up's
// connection churn could leave an operator unknown, and idle, through a whole demo). Without
// that wait this failed in 11 of 15 runs: health comes before the adverts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_up_returns_once_every_matchmaker_knows_every_operator() {
    let net = Net::up(spec(Default::default(), 4, 2));
    let operators: BTreeSet<String> = net
        .names("operator")
        .iter()
        .map(|name| net.key(name).to_hex())
        .collect();
    assert_eq!(operators.len(), 4);
    let mut watchers = vec!["gateway".to_string()];
    watchers.extend(net.names("matchmaker"));
    assert_eq!(watchers.len(), 3);
    for name in watchers {
        let known: BTreeSet<String> = net
            .rpc(&name)
            .await
            .operators()
            .await
            .unwrap_or_else(|e| panic!("{name}'s operators: {e}"))
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(known, operators, "{name} right after devnet up");
    }
}
