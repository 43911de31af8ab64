//! Faults injected into a devnet of real `proofmesh node` processes (loopback only): the active
//! matchmaker SIGKILLed mid-workflow, nodes SIGKILLed and restarted mid-workflow (a matchmaker
//! on a slow disk among them), and an ordered stream submitted out of order. Tasks are the
//! prover's `sleep` program, so the faults, not the proofs, are what is exercised. (Operator
//! death and malicious operators, which involve on-chain slashing, are in the settlement tests.)

use crate::harness::{spec, wait_completed, wait_status, Net};
use proofmesh_matchmaker::{active_matchmaker, routing_key};
use proofmesh_node::config::NodeConfig;
use proofmesh_node::runtime::SYNC_DELAY_ENV;
use proofmesh_node::store::{Store, WorkflowState};
use proofmesh_protocol::spec::{self as wfspec, Format};
use proofmesh_protocol::{TaskIndex, Workflow, WorkflowId};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

/// `leaves` sleep tasks of `ms` each, then one root over all of them.
fn fan_in(name: &str, leaves: u32, ms: u64) -> String {
    format!(
        "name = \"{name}\"\n\
         [defaults]\nresources = {{ cpu = 1, memory_gb = 0.01 }}\ntimeout_s = 30\nmax_attempts = 5\n\
         [[task]]\nid = \"leaf\"\nprogram = \"sleep@1\"\ncount = {leaves}\nargs = [\"--ms\", \"{ms}\"]\n\
         [[task]]\nid = \"root\"\nprogram = \"sleep@1\"\ndeps = [\"leaf\"]\nargs = [\"--ms\", \"20\"]\n"
    )
}

fn parse(text: &str) -> (WorkflowId, Workflow) {
    let workflow = wfspec::load(text, Format::Toml)
        .expect("test workflow is valid")
        .0;
    (workflow.id(), workflow)
}

/// task -> (operator, output) of every accepted result in `store`.
fn accepted(store: &Store, id: &WorkflowId) -> BTreeMap<TaskIndex, (String, String)> {
    store
        .results(id)
        .expect("store readable")
        .into_iter()
        .map(|(t, r)| (t, (r.result.operator.to_hex(), r.result.output.to_hex())))
        .collect()
}

/// The matchmaker active for `workflow` (rendezvous hashing over both) and the other one.
fn active_and_standby(net: &Net, id: &WorkflowId, workflow: &Workflow) -> (String, String) {
    let mms = net.names("matchmaker");
    let keys: Vec<_> = mms.iter().map(|m| net.key(m)).collect();
    let active = active_matchmaker(&routing_key(id, workflow), &keys).expect("live set");
    let active = mms[keys.iter().position(|k| *k == active).expect("one of ours")].clone();
    let standby = mms.iter().find(|m| **m != active).expect("two").clone();
    (active, standby)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_matchmaker_sigkilled_mid_workflow_another_takes_over() {
    let net = Net::up(spec(Default::default(), 2, 2));
    // Every node trusts exactly the devnet's matchmakers, so the survivor's decisions count.
    let mut matchmakers: Vec<_> = net.names("matchmaker").iter().map(|n| net.key(n)).collect();
    matchmakers.sort();
    for node in net
        .names("gateway")
        .into_iter()
        .chain(net.names("operator"))
    {
        let path = &net.node(&node).config;
        let text = std::fs::read_to_string(path).expect("node config");
        let config = NodeConfig::from_toml(&text, path).expect("node config parses");
        let mut trusted = config.trusted_matchmakers().expect("valid keys");
        trusted.sort();
        assert_eq!(
            trusted, matchmakers,
            "{node} trusts the devnet's matchmakers"
        );
    }
    // `devnet status` tells scripts each node's key (what a joining node would list).
    let status = std::process::Command::new(crate::harness::proofmesh_bin())
        .args(["devnet", "status", "--dir"])
        .arg(net.dir.path())
        .output()
        .expect("devnet status runs");
    let status = String::from_utf8_lossy(&status.stdout);
    for name in net.names("matchmaker") {
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("name={name} ")))
            .unwrap_or_else(|| panic!("no status line for {name}:\n{status}"));
        assert!(
            line.split(' ')
                .any(|kv| kv == format!("key={}", net.key(&name).to_hex())),
            "{line}"
        );
    }
    // 8 leaves of 400 ms on 2 operators x 2 slots: two rounds, so the kill lands mid-workflow.
    let text = fan_in("e2e-takeover", 8, 400);
    let (wf_id, workflow) = parse(&text);
    let n = workflow.tasks.len();
    let (victim, survivor) = active_and_standby(&net, &wf_id, &workflow);

    let mut gw = net.rpc("gateway").await;
    let id = gw.submit_workflow(&text, "toml").await.expect("submit").id;
    assert_eq!(id, wf_id.to_hex());
    let before = wait_status(&mut gw, &id, "a first task done", WAIT, |s| s.done >= 1).await;
    assert!(
        (before.done as usize) < n,
        "the matchmaker must die mid-workflow"
    );
    net.kill(&victim);
    let killed_at = Instant::now();

    wait_completed(&mut gw, &id, "completion after takeover", WAIT, n).await;
    eprintln!(
        "takeover: {victim} killed at done={}, completed {:.2} s later",
        before.done,
        killed_at.elapsed().as_secs_f64()
    );
    // Each task counted once: operators' completed counters sum to the task count (a task whose
    // result was accepted twice, by the dead and by the new matchmaker, would count twice).
    let ops = gw.operators().await.expect("operators");
    let completed: u64 = ops.iter().map(|o| o.completed).sum();
    assert_eq!(completed as usize, n, "completed counters: {ops:?}");
    // CHAIN HOOK (settlement tests): with on-chain settlement enabled, also assert here that
    // the escrow paid each task exactly once (sum of payments == n x price).

    // Every node that accepted results agrees on one result per task: the survivor did not
    // re-run and accept a second result for a task the dead matchmaker had already accepted.
    drop(gw);
    net.stop("gateway");
    net.stop(&survivor);
    let gateway = accepted(&net.store("gateway"), &wf_id);
    let surviving = accepted(&net.store(&survivor), &wf_id);
    let dead = accepted(&net.store(&victim), &wf_id);
    assert_eq!(gateway.len(), n, "gateway holds every result");
    assert_eq!(
        surviving, gateway,
        "survivor and gateway agree on every result"
    );
    no_result_replaced(&net, &dead, &gateway);
}

/// Every result the dead matchmaker accepted and announced is the one the gateway kept: the
/// gateway never heard a second, different result for a task. (One it stored in its last
/// moment, SIGKILLed before the verdict left, nobody else saw: that task ran again, and only
/// the dead one's store holds the first result.)
fn no_result_replaced(
    net: &Net,
    dead: &BTreeMap<TaskIndex, (String, String)>,
    gateway: &BTreeMap<TaskIndex, (String, String)>,
) {
    let log = net.log("gateway");
    assert!(
        !log.contains("a second, different result was accepted"),
        "the gateway heard two different accepted results for a task:\n{log}"
    );
    let kept = dead
        .iter()
        .filter(|(t, r)| gateway.get(t) == Some(r))
        .count();
    assert!(
        kept >= 1,
        "none of the dead matchmaker's {} accepted results is the gateway's",
        dead.len()
    );
}

/// A devnet whose standby matchmaker was down when the gateway took a workflow of 8 leaves of
/// `leaf_ms` and a root, once a first task is done (the workflow still running).
struct StandbyMissed {
    net: Net,
    gw: proofmesh_node::rpc::client::RpcClient,
    id: String,
    wf_id: WorkflowId,
    n: usize,
    active: String,
    standby: String,
}

async fn submitted_while_standby_down(name: &str, leaf_ms: u64) -> StandbyMissed {
    let net = Net::up(spec(Default::default(), 2, 2));
    let text = fan_in(name, 8, leaf_ms);
    let (wf_id, workflow) = parse(&text);
    let n = workflow.tasks.len();
    let (active, standby) = active_and_standby(&net, &wf_id, &workflow);
    net.kill(&standby);
    let mut gw = net.rpc("gateway").await;
    let id = gw.submit_workflow(&text, "toml").await.expect("submit").id;
    let before = wait_status(&mut gw, &id, "a first task done", WAIT, |s| s.done >= 1).await;
    assert!((before.done as usize) < n, "must still be running");
    StandbyMissed {
        net,
        gw,
        id,
        wf_id,
        n,
        active,
        standby,
    }
}

// A standby matchmaker that was down when a workflow was submitted never got the submission
// by gossip. Catch-up discovery (runtime/catch_up.rs) gives it to it after its restart, so when
// the active matchmaker then dies, the standby can take the workflow over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_matchmaker_down_at_submission_discovers_it_and_takes_over() {
    let StandbyMissed {
        mut net,
        mut gw,
        id,
        n,
        active,
        standby,
        ..
    } = submitted_while_standby_down("e2e-discovery", 400).await;
    net.restart(&standby);
    let mut sb = net.rpc(&standby).await;
    wait_status(
        &mut sb,
        &id,
        "the standby to discover the workflow",
        WAIT,
        |_| true,
    )
    .await;
    net.kill(&active);

    wait_completed(&mut sb, &id, "completion by the standby", WAIT, n).await;
    wait_completed(&mut gw, &id, "completion on the gateway", WAIT, n).await;
    let ops = gw.operators().await.expect("operators");
    let completed: u64 = ops.iter().map(|o| o.completed).sum();
    assert_eq!(completed as usize, n, "each task counted once: {ops:?}");
}

// Both matchmakers fail in turn: the standby is down when the workflow is submitted, and the
// active one dies before the standby is back. The standby, the only matchmaker left, learns
// the workflow and the results the dead one accepted from the gateway (catch-up), and must go
// on from there: the gateway keeps the first result accepted for each task, so running those
// tasks again would give each a second, different result. The gateway relays them as the dead
// one signed its verdicts (a result relayed bare counts only for an attempt the standby saw
// assigned; `it/relays.rs` shows both). Here the standby may also get those verdicts from
// gossip's own recent-message exchange as it reconnects: this test passed, once, with the
// gateway keeping no verdicts at all.
//
// It failed 5 of 55 runs while the restarted standby knew an operator only from its next
// periodic advert (10 s): gossip had missed the adverts sent as it connected, and a relayed
// result counts only from an operator it knows, so a task it sent out again finished first.
// Operators now send their advert straight to a peer that connects (it/introductions.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_matchmakers_down_in_turn_the_one_back_keeps_what_the_other_accepted() {
    // Leaves of 1.5 s: the standby takes the workflow over the moment it discovers it, before
    // the relayed results are checked (and, just restarted, before the operators' adverts that
    // make their results count), so the tasks it sends out again must not finish first. Real
    // proofs take far longer than that round trip.
    let StandbyMissed {
        mut net,
        mut gw,
        id,
        wf_id,
        n,
        active,
        standby,
    } = submitted_while_standby_down("e2e-in-turn", 1500).await;
    net.kill(&active);
    net.restart(&standby);
    let mut sb = net.rpc(&standby).await;
    wait_completed(&mut sb, &id, "completion by the standby", WAIT, n).await;
    wait_completed(&mut gw, &id, "completion on the gateway", WAIT, n).await;

    drop((gw, sb));
    net.stop("gateway");
    net.stop(&standby);
    let gateway = accepted(&net.store("gateway"), &wf_id);
    let dead = accepted(&net.store(&active), &wf_id);
    assert!(
        !dead.is_empty(),
        "the first matchmaker accepted results before it died"
    );
    // What it relays: the verdicts as the matchmakers signed them.
    assert!(
        !net.store("gateway").vouches(&wf_id).unwrap().is_empty(),
        "the gateway keeps the matchmakers' signed verdicts"
    );
    no_result_replaced(&net, &dead, &gateway);
    assert_eq!(
        accepted(&net.store(&standby), &wf_id),
        gateway,
        "the standby and the gateway agree on every result"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restarted_mid_workflow_loses_nothing() {
    restarted_mid_workflow(&["operator-1"], Downtime::Brief, None).await;
}

// The matchmaker's disk is slow (each durable commit waits 300 ms more), so while it is busy
// it is mostly syncing a commit whose assignments have already left for their operators
// (runtime/core_loop.rs): SIGKILLed then, it forgets assignments that operators hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matchmaker_with_a_slow_disk_restarted_mid_workflow_loses_nothing() {
    restarted_mid_workflow(&["matchmaker-0"], Downtime::Brief, Some(300)).await;
}

// The gateway and an operator stay down until the workflow has completed elsewhere, so every
// later result and the completion are gossiped while they cannot hear it: only catch-up sync
// (runtime/catch_up.rs) can bring them up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_operator_down_for_the_rest_of_a_workflow_catch_up_on_restart() {
    restarted_mid_workflow(&["gateway", "operator-1"], Downtime::UntilCompleted, None).await;
}

/// How long the victims stay down.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Downtime {
    /// Restarted at once: they rejoin the running workflow.
    Brief,
    /// Restarted only once the matchmaker has completed the workflow without them.
    UntilCompleted,
}

/// SIGKILL `victims` once the first task is done, restart them on their data directories, and
/// check that the workflow completes, each task counted once, and each restarted store holds
/// it and every result. With `slow_sync_ms`, the victims run on a slow disk until the crash
/// (restarted with it first) and come back without it.
async fn restarted_mid_workflow(victims: &[&str], downtime: Downtime, slow_sync_ms: Option<u64>) {
    let mut net = Net::up(spec(Default::default(), 2, 1));
    if let Some(ms) = slow_sync_ms {
        for v in victims {
            net.stop(v);
            net.restart_with_env(v, &[(SYNC_DELAY_ENV, &ms.to_string())]);
        }
    }
    let text = fan_in("e2e-restart", 8, 400);
    let (wf_id, workflow) = parse(&text);
    let n = workflow.tasks.len();
    let mut gw = net.rpc("gateway").await;
    let id = gw.submit_workflow(&text, "toml").await.expect("submit").id;
    let before = wait_status(&mut gw, &id, "a first task done", WAIT, |s| s.done >= 1).await;
    assert!((before.done as usize) < n, "restart must land mid-workflow");
    drop(gw);
    // A crash, not a clean stop: SIGKILL, then start on the same directories.
    for v in victims {
        net.kill(v);
    }
    if downtime == Downtime::UntilCompleted {
        let mut mm = net.rpc("matchmaker-0").await;
        wait_status(&mut mm, &id, "completion without the victims", WAIT, |s| {
            s.state == "completed"
        })
        .await;
    }
    for v in victims {
        net.restart(v);
    }

    // First where the work is scheduled, then what the restarted gateway shows: tells a stalled
    // workflow apart from a gateway that never caught up on what it missed while down.
    let mut mm = net.rpc("matchmaker-0").await;
    wait_status(&mut mm, &id, "completion on the matchmaker", WAIT, |s| {
        s.state == "completed"
    })
    .await;
    // Every restarted node's own view (they all serve RPC) catches up on what it missed: a
    // gateway on every result, an operator on the outcome only (it holds the results of its
    // own tasks and their inputs, not everyone's; see README "Who hears what").
    for v in victims {
        let mut rpc = net.rpc(v).await;
        let what = format!("the restarted {v} to catch up");
        if v.starts_with("operator") {
            wait_status(&mut rpc, &id, &what, WAIT, |s| s.state == "completed").await;
        } else {
            wait_completed(&mut rpc, &id, &what, WAIT, n).await;
        }
    }
    let mut gw = net.rpc("gateway").await;
    wait_completed(&mut gw, &id, "the gateway to show completion", WAIT, n).await;
    // Each task counted once: a result accepted before the crash and again after it (or an
    // orphaned attempt's result taken as well) would count twice.
    let ops = gw.operators().await.expect("operators");
    let completed: u64 = ops.iter().map(|o| o.completed).sum();
    assert_eq!(completed as usize, n, "completed counters: {ops:?}");
    let result = gw.result(&id).await.expect("result");
    assert_eq!(result.outputs.len(), 1, "one final task: {result:?}");
    let root = gw
        .fetch_blob(&result.outputs[0].output)
        .await
        .expect("final output fetchable from the restarted gateway");
    assert!(root.starts_with(b"proofmesh-noop"), "sleep program output");
    drop(gw);

    net.stop("gateway");
    net.stop("operator-1");
    net.stop("matchmaker-0");
    let reference = accepted(&net.store("matchmaker-0"), &wf_id);
    assert_eq!(reference.len(), n);
    if slow_sync_ms.is_some() {
        // Nobody is blamed for the matchmaker's crash: the operators sent it again what it
        // had acknowledged but not made durable (or missed while down), so no attempt ran
        // into its deadline.
        let evidence = net
            .store("matchmaker-0")
            .evidence()
            .expect("store readable");
        assert!(
            evidence.is_empty(),
            "{} missed-deadline slashes of operators that did their work",
            evidence.len()
        );
    }
    for &name in victims {
        let store = net.store(name);
        let record = store
            .workflow(&wf_id)
            .expect("readable")
            .unwrap_or_else(|| panic!("{name} lost the workflow"));
        let held = accepted(&store, &wf_id);
        // Whatever a restarted node holds agrees with the matchmaker: nothing corrupted.
        for (task, r) in &held {
            assert_eq!(reference.get(task), Some(r), "{name}: task {task}");
        }
        // And it caught up on what it missed while down: the outcome, and for a gateway every
        // result (an operator keeps only the results it was given; the matchmakers and
        // gateways are the market's record of everyone's).
        assert_eq!(record.state, WorkflowState::Completed, "{name}");
        if !name.starts_with("operator") {
            assert_eq!(held, reference, "{name} holds every accepted result");
        }
    }
}

// Every node's view applies the matchmaker's finalization rule (runtime/view.rs
// `finish_in_order`): a stream's workflow whose tasks are all done stays active until every
// earlier sequence the node knows of has finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_stream_submitted_out_of_order_finalizes_in_order() {
    let net = Net::up(spec(Default::default(), 3, 1));
    // Block k sleeps 1000 + (5 - k) x 250 ms: unordered, block 5 would finish first and block 1
    // last. Every block is submitted well inside 1 s, so the matchmaker knows all five before
    // any can finish (it cannot wait for a sequence it never heard of).
    let block = |k: u64| {
        format!(
            "name = \"e2e-block-{k}\"\n[ordering]\nstream = \"e2e-l2\"\nsequence = {k}\n\
             [[task]]\nid = \"prove\"\nprogram = \"sleep@1\"\nresources = {{ cpu = 1, memory_gb = 0.01 }}\n\
             args = [\"--ms\", \"{}\"]\n",
            1000 + (5 - k) * 250
        )
    };
    let mut gw = net.rpc("gateway").await;
    let mut ids = BTreeMap::new();
    for k in [5u64, 3, 1, 4, 2] {
        let id = gw
            .submit_workflow(&block(k), "toml")
            .await
            .expect("submit")
            .id;
        ids.insert(k, id);
    }
    // Watch the matchmaker (it finalizes) and the gateway (what the requester sees). Each round
    // reads sequences from 5 down to 1: since completion is monotone, seeing k completed and
    // then some j < k active in the same round proves j finalized after k.
    let mut watchers = [
        ("matchmaker-0", net.rpc("matchmaker-0").await),
        ("gateway", gw),
    ];
    // Gossip takes a moment: a watcher that has not heard of a block yet says "unknown id".
    for (name, client) in watchers.iter_mut() {
        for id in ids.values() {
            let what = format!("{name} to hear of every block");
            wait_status(client, id, &what, WAIT, |_| true).await;
        }
    }
    // The polling round in which each node first reported each block completed. Blocks that
    // finalize together (one earlier block releasing several held ones) share a round.
    let mut first_seen: BTreeMap<(&str, u64), u32> = BTreeMap::new();
    // The nodes that said, of a block whose task was done, which earlier block it waited for.
    let mut waits_seen = std::collections::BTreeSet::new();
    let started = Instant::now();
    for round in 0u32.. {
        let mut all = true;
        for (name, client) in watchers.iter_mut() {
            let mut later_completed: Option<u64> = None;
            for k in (1..=5u64).rev() {
                let s = client.status(&ids[&k]).await.expect("status");
                assert_ne!(s.state, "failed", "block {k} failed: {:?}", s.reason);
                if s.state == "completed" {
                    first_seen.entry((*name, k)).or_insert(round);
                    if later_completed.is_none() {
                        later_completed = Some(k);
                    }
                } else {
                    all = false;
                    assert!(
                        later_completed.is_none(),
                        "{name}: block {} completed while block {k} is still {}",
                        later_completed.unwrap_or_default(),
                        s.state
                    );
                    // Done but held back: the status names the earlier block it waits for.
                    if let Some(w) = s.waiting_for.as_deref() {
                        let earlier: u64 = w
                            .strip_prefix("sequence ")
                            .and_then(|r| r.split(' ').next())
                            .and_then(|q| q.parse().ok())
                            .unwrap_or_else(|| panic!("{name}: block {k} waits for {w:?}"));
                        assert!(earlier < k && w.contains("of stream e2e-l2"), "{name}: {w}");
                        assert!(w.contains(&ids[&earlier]), "{name}: {w} names its workflow");
                        waits_seen.insert(*name);
                    }
                }
            }
        }
        if all {
            break;
        }
        assert!(started.elapsed() < WAIT, "stream did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Block 5 was done ~1 s before block 1: both nodes said what it waited for meanwhile.
    assert_eq!(waits_seen.len(), 2, "{waits_seen:?}");
    for name in ["matchmaker-0", "gateway"] {
        let order: Vec<u64> = {
            let mut v: Vec<(u32, u64)> = (1..=5).map(|k| (first_seen[&(name, k)], k)).collect();
            v.sort();
            v.into_iter().map(|(_, k)| k).collect()
        };
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "{name} saw completions in order {order:?}");
    }
}
