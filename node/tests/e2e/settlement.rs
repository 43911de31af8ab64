//! On-chain settlement end to end: real `proofmesh node` processes, a real anvil started by the
//! devnet with the market deployed over the real Groth16 verifier, real proofs. Payments are
//! checked to the wei against the prices operators advertised; slashes against the contract's
//! reputation counters and the burn.

use crate::harness::{chain_spec, eventually, wait_completed, wait_status, Net};
use proofmesh_chain::{workflow_key, U256};
use proofmesh_node::chain::settler::HOLD_ENV;
use proofmesh_node::devnet::DEFAULT_PRICES_WEI;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(180);
const ETH: u128 = 1_000_000_000_000_000_000;

/// The demo pipeline (witness -> 4 leaves -> aggregation tree -> final), real proofs.
fn demo() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workflows/demo.toml"),
    )
    .expect("examples/workflows/demo.toml")
}

/// Runs `proofmesh ARGS --devnet DIR` (signing as the devnet's requester) and returns its
/// standard output; panics with its error output if it fails.
fn cli(net: &Net, args: &[&str]) -> String {
    let out = std::process::Command::new(crate::harness::proofmesh_bin())
        .args(args)
        .arg("--devnet")
        .arg(net.dir.path())
        .output()
        .expect("proofmesh runs");
    assert!(
        out.status.success(),
        "proofmesh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until a settler released the escrow of `key` (closed, nothing held), having paid
/// `paid` first.
async fn released(
    market: &proofmesh_chain::MarketClient,
    key: proofmesh_chain::B256,
    paid: u128,
) -> proofmesh_chain::bindings::ProofMarket::Escrow {
    eventually("the escrow's release", WAIT, || async {
        let e = market.escrow(key).await.map_err(|e| e.to_string())?;
        if e.refunded && e.held == 0 && e.paid == paid {
            Ok(e)
        } else {
            Err(format!(
                "closed={} held={} paid={} (want {paid})",
                e.refunded, e.held, e.paid
            ))
        }
    })
    .await
}

/// What the operators are owed for their completed tasks: completed x price, summed.
fn owed(by_op: &BTreeMap<String, (u128, u64)>) -> u128 {
    by_op.values().map(|(p, c)| p * u128::from(*c)).sum()
}

/// Tasks completed, over every operator.
fn tasks_done(by_op: &BTreeMap<String, (u128, u64)>) -> usize {
    by_op.values().map(|(_, c)| *c as usize).sum()
}

/// Operator name -> (advertised price, tasks completed per the gateway).
async fn completed_by(net: &Net) -> BTreeMap<String, (u128, u64)> {
    let mut gw = net.rpc("gateway").await;
    let infos = gw.operators().await.expect("operators");
    net.names("operator")
        .into_iter()
        .map(|name| {
            let key = net.key(&name).to_hex();
            let info = infos
                .iter()
                .find(|o| o.key == key)
                .unwrap_or_else(|| panic!("gateway does not list {name}"));
            assert_eq!(
                info.eth_address.as_deref().map(str::to_lowercase),
                Some(format!("{:#x}", net.eth(&name))),
                "{name} advertises its devnet Ethereum address"
            );
            (
                name,
                (info.price_wei.parse().expect("price"), info.completed),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_pays_the_agreed_amounts_to_the_wei() {
    let net = Net::up(chain_spec(2, 1));
    let market = net.market().await;
    // Registered and staked on start, bound to their node keys.
    for name in net.names("operator") {
        let eth = net.eth(&name);
        let rep = market.reputation(eth).await.expect("reputation");
        assert_eq!(rep.stake, ETH, "{name} staked the devnet stake");
        assert_eq!(
            market.registered_node_key(eth).await.expect("operatorInfo"),
            Some(proofmesh_chain::B256::from(net.key(&name).0)),
            "{name} bound its node key"
        );
    }
    let requester = net.requester().signer.address();
    let before = market.balance(requester).await.expect("balance");
    // Quoted first, at the operators' asks: every stage can run (once the gateway heard both).
    let mut gw = net.rpc("gateway").await;
    let deadline = std::time::Instant::now() + WAIT;
    let quote = loop {
        let q = gw.quote(&demo(), "toml").await.expect("quote");
        if q.operators == 2 && q.unmatched_tasks == 0 {
            break q;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never quoted whole: {q:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };

    let (id, workflow) = net.submit_with_escrow(&demo()).await;
    let n = workflow.tasks.len();
    let max = proofmesh_node::chain::escrow::max_payment(&workflow);
    assert_eq!(quote.id, id.to_hex());
    assert_eq!(
        quote.escrow_wei,
        max.to_string(),
        "the quote names the escrow"
    );
    // The requester paid the whole ceiling (plus gas) into the escrow.
    let after = market.balance(requester).await.expect("balance");
    assert!(before - after >= U256::from(max));
    wait_completed(&mut gw, &id.to_hex(), "completion", WAIT, n).await;
    // The final proof verifies.
    let result = gw.result(&id.to_hex()).await.expect("result");
    assert_eq!(result.outputs.len(), 1);
    let proof = gw
        .fetch_blob(&result.outputs[0].output)
        .await
        .expect("final proof");
    proofmesh_prover::verify_proof_bytes(&proof).expect("the final proof verifies");

    // Each operator is paid exactly completed x its price, and the escrow paid the sum.
    let by_op = completed_by(&net).await;
    let expected = owed(&by_op);
    assert_eq!(tasks_done(&by_op), n, "every task counted once: {by_op:?}");
    let key = workflow_key(&id);
    let escrow = eventually("settlement", WAIT, || async {
        let e = market.escrow(key).await.map_err(|e| e.to_string())?;
        if e.paid == expected {
            Ok(e)
        } else {
            Err(format!("paid {} of {expected}", e.paid))
        }
    })
    .await;
    assert!(expected > 0 && expected <= max, "paid within the escrow");
    let (lowest, highest): (u128, u128) = (
        quote.lowest_wei.parse().expect("wei"),
        quote.highest_wei.parse().expect("wei"),
    );
    assert!(
        lowest <= expected && expected <= highest,
        "paid {expected}, quoted {lowest}..={highest}"
    );
    // Every task done, by the operator whose result was accepted, none retried; and the
    // gateway lists the workflow completed.
    let tasks = gw
        .tasks(&id.to_hex(), &proofmesh_node::rpc::TaskQuery::default())
        .await
        .expect("tasks");
    assert_eq!(tasks.len(), n);
    let results = gw.result(&id.to_hex()).await.expect("result");
    for t in &tasks {
        assert_eq!(
            (t.state.as_str(), t.failed_attempts.len()),
            ("done", 0),
            "{t:?}"
        );
        assert!(t.operator.is_some(), "{t:?}");
    }
    assert_eq!(
        tasks
            .iter()
            .find(|t| t.task == results.outputs[0].task)
            .and_then(|t| t.operator.clone()),
        Some(results.outputs[0].operator.clone()),
        "the final task's operator is the one whose proof was accepted"
    );
    let listed = gw
        .workflows(Some("completed"), 50)
        .await
        .expect("workflows");
    assert!(
        listed
            .iter()
            .any(|w| w.id == id.to_hex() && w.done == n as u64),
        "{listed:?}"
    );
    // Then the settler closes the escrow: the rest is the requester's at once, not only after
    // the deadline.
    let escrow = released(&market, key, escrow.paid).await;
    assert_eq!(escrow.paid, expected, "nothing paid after the release");
    assert!(
        escrow.proofAccepted,
        "the final proof was recorded on-chain: the market's verifier accepted it"
    );
    assert_eq!(
        market.claimable(requester).await.expect("claimable"),
        U256::from(max - expected),
        "the rest of the escrow, credited to the requester to the wei"
    );
    // The CLI shows the escrow closed and withdraws the rest.
    let shown = cli(&net, &["escrow", &id.to_hex()]);
    for kv in [
        "closed=true".to_owned(),
        "released=true".to_owned(),
        "proof_accepted=true".to_owned(),
        "held_wei=0".to_owned(),
        format!("paid_wei={expected}"),
        format!("requester_claimable_wei={}", max - expected),
    ] {
        assert!(shown.split_whitespace().any(|p| p == kv), "{kv} in {shown}");
    }
    let before_claim = market.balance(requester).await.expect("balance");
    let claimed = cli(&net, &["claim"]);
    assert!(
        claimed
            .split_whitespace()
            .any(|p| p == format!("claimed_wei={}", max - expected)),
        "{claimed}"
    );
    assert_eq!(
        market.claimable(requester).await.expect("claimable"),
        U256::ZERO,
        "claimed"
    );
    let rose = market.balance(requester).await.expect("balance") - before_claim;
    let rest = U256::from(max - expected);
    // Less the claim's gas: ~30k gas at devnet prices, far below 0.0001 ETH.
    assert!(
        rose <= rest && rose + U256::from(ETH / 10_000) >= rest,
        "the claim moved the rest ({rest} wei) to the requester, less gas: rose {rose}"
    );
    // Under load one operator may do every task; when both worked, prices tell them apart.
    if by_op.values().all(|(_, c)| *c > 0) {
        assert!(expected < max, "prices differ per operator: {by_op:?}");
    }
    for (name, (price, completed)) in &by_op {
        let eth = net.eth(name);
        assert!(DEFAULT_PRICES_WEI.contains(price), "{name} price {price}");
        assert_eq!(
            market.claimable(eth).await.expect("claimable"),
            U256::from(price * u128::from(*completed)),
            "{name}: paid completed x price, to the wei"
        );
        let rep = market.reputation(eth).await.expect("reputation");
        assert_eq!(
            u64::from(rep.completed),
            *completed,
            "{name} on-chain completed"
        );
        assert_eq!((rep.failed, rep.slashed), (0, 0), "{name} clean");
    }
    for t in 0..n as u32 {
        let paid = market.paid_attempt(key, t).await.expect("paidAttempt");
        assert!(
            (1..=254).contains(&paid),
            "task {t} paid once (attempt {paid})"
        );
    }
}

// The settler's queue is in memory; what it finished is journaled in the store. A matchmaker
// that dies after a workflow completed but before its settle transaction must pay on restart.
// The fault (dying in exactly that window) is injected with `HOLD_ENV`: the settler sends
// nothing, as if the node had died first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matchmaker_killed_before_settling_pays_after_restart() {
    let mut net = Net::up(chain_spec(2, 1));
    let market = net.market().await;
    hold_settlement(&mut net);

    let (id, workflow) = net
        .submit_with_escrow(&sleepers("e2e-settle-after-crash", 4, 100, 60))
        .await;
    let n = workflow.tasks.len();
    let key = workflow_key(&id);
    let mut mm = net.rpc("matchmaker-0").await;
    wait_completed(&mut mm, &id.to_hex(), "completion", WAIT, n).await;
    let mut gw = net.rpc("gateway").await;
    wait_completed(&mut gw, &id.to_hex(), "completion on the gateway", WAIT, n).await;
    drop(gw);
    // Its retention (1 s) passes several times over, but what is not paid yet is kept.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = mm
        .status(&id.to_hex())
        .await
        .expect("kept until it is settled");
    assert_eq!(status.state, "completed");
    drop(mm);
    unhold_settlement(&mut net, &market, key).await;
    let by_op = completed_by(&net).await;
    let expected = owed(&by_op);
    // Paid, then released, from the store's backlog (the job in memory died with the node).
    released(&market, key, expected).await;
    for t in 0..n as u32 {
        let paid = market.paid_attempt(key, t).await.expect("paidAttempt");
        assert!(
            (1..=254).contains(&paid),
            "task {t} paid once (attempt {paid})"
        );
    }
    for (name, (price, completed)) in &by_op {
        assert_eq!(
            market.claimable(net.eth(name)).await.expect("claimable"),
            U256::from(price * u128::from(*completed)),
            "{name}: paid completed x price, to the wei"
        );
    }
    // Settled: now the matchmaker prunes it (its retention passed long ago).
    let mut mm = net.rpc("matchmaker-0").await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match mm.status(&id.to_hex()).await {
            Ok(status) => assert_eq!(status.state, "completed"),
            Err(proofmesh_node::rpc::ClientError::Rpc { code, message }) => {
                assert_eq!(
                    code,
                    proofmesh_node::rpc::codes::PRUNED_WORKFLOW,
                    "{message}"
                );
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never pruned once settled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `leaves` sleep tasks of `ms` each with a short deadline, then a root; priced.
fn sleepers(name: &str, leaves: u32, ms: u64, timeout_s: u64) -> String {
    format!(
        "name = \"{name}\"\n\
         [defaults]\nresources = {{ cpu = 1, memory_gb = 0.01 }}\ntimeout_s = {timeout_s}\nmax_attempts = 5\n\
         max_price_wei = \"1000000000000000\"\n\
         [[task]]\nid = \"leaf\"\nprogram = \"sleep@1\"\ncount = {leaves}\nargs = [\"--ms\", \"{ms}\"]\n\
         [[task]]\nid = \"root\"\nprogram = \"sleep@1\"\ndeps = [\"leaf\"]\nargs = [\"--ms\", \"20\"]\n"
    )
}

/// [`sleepers`] whose root fails every one of its `attempts` (the prover refuses an unknown
/// flag): the leaves succeed, then the workflow fails.
fn failing_root(name: &str, leaves: u32, attempts: u32) -> String {
    sleepers(name, leaves, 50, 60)
        .replace("max_attempts = 5", &format!("max_attempts = {attempts}"))
        .replace("args = [\"--ms\", \"20\"]", "args = [\"--no-such-flag\"]")
}

/// Polls `gw` until the workflow failed (panics if it completes, or after [`WAIT`]).
async fn wait_failed(
    gw: &mut proofmesh_node::rpc::RpcClient,
    id: &proofmesh_protocol::WorkflowId,
) -> proofmesh_node::rpc::WorkflowStatus {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = gw.status(&id.to_hex()).await.expect("status");
        if s.state == "failed" {
            return s;
        }
        assert_ne!(s.state, "completed", "the root cannot succeed");
        assert!(std::time::Instant::now() < deadline, "never failed: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Restarts the matchmaker with its settler held (`HOLD_ENV`): it settles nothing, as if it
/// died in the window between deciding and settling.
fn hold_settlement(net: &mut Net) {
    net.kill("matchmaker-0");
    net.restart_with_env("matchmaker-0", &[(HOLD_ENV, "1"), RETAIN_1_S]);
}

/// Finished workflows kept for a second only (a node that settles keeps them until settled).
const RETAIN_1_S: (&str, &str) = ("PROOFMESH_STORE_RETAIN_FINISHED_SECS", "1");

/// After [`hold_settlement`]: checks nothing of `key`'s escrow was paid, then kills the
/// matchmaker (dying in the window) and starts it again without the fault: its store says
/// what is unsettled.
async fn unhold_settlement(
    net: &mut Net,
    market: &proofmesh_chain::MarketClient,
    key: proofmesh_chain::B256,
) {
    assert_eq!(
        market.escrow(key).await.expect("escrow").paid,
        0,
        "nothing is paid while the settler is held"
    );
    net.kill("matchmaker-0");
    net.restart_with_env("matchmaker-0", &[RETAIN_1_S]);
}

/// A workflow that fails for good still owes its accepted work: the matchmaker that failed it
/// pays every accepted task, then releases the escrow, so the requester gets the rest at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_workflow_pays_the_work_done_and_hands_the_rest_back() {
    let net = Net::up(chain_spec(2, 1));
    let market = net.market().await;
    // The root, run only after the leaves, fails every attempt.
    let (id, workflow) = net
        .submit_with_escrow(&failing_root("e2e-failed-escrow", 4, 2))
        .await;
    let n = workflow.tasks.len();
    let max = proofmesh_node::chain::escrow::max_payment(&workflow);
    let mut gw = net.rpc("gateway").await;
    let status = wait_failed(&mut gw, &id).await;
    assert_eq!(
        status.done as usize,
        n - 1,
        "every leaf accepted: {status:?}"
    );

    let by_op = completed_by(&net).await;
    let expected = owed(&by_op);
    assert_eq!(
        tasks_done(&by_op),
        n - 1,
        "the leaves, counted once: {by_op:?}"
    );
    let key = workflow_key(&id);
    released(&market, key, expected).await;
    for t in 0..n as u32 {
        let paid = market.paid_attempt(key, t).await.expect("paidAttempt");
        if t as usize == n - 1 {
            assert_eq!(paid, 0, "the failed root is not paid");
        } else {
            assert!((1..=254).contains(&paid), "leaf {t} paid once ({paid})");
        }
    }
    for (name, (price, completed)) in &by_op {
        assert_eq!(
            market.claimable(net.eth(name)).await.expect("claimable"),
            U256::from(price * u128::from(*completed)),
            "{name}: paid for its accepted leaves, to the wei"
        );
    }
    let requester = net.requester().signer.address();
    assert_eq!(
        market.claimable(requester).await.expect("claimable"),
        U256::from(max - expected),
        "the rest of the escrow is the requester's before its deadline"
    );
}

/// The matchmaker that failed a workflow dies before settling it: after its restart it still
/// pays the accepted work and releases the escrow (the release it owes is in its store; a node
/// that only heard of the failure would pay but not release).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matchmaker_killed_before_settling_a_failed_workflow_releases_it_after_restart() {
    let mut net = Net::up(chain_spec(2, 1));
    let market = net.market().await;
    hold_settlement(&mut net);
    let (id, workflow) = net
        .submit_with_escrow(&failing_root("e2e-failed-after-crash", 3, 1))
        .await;
    let n = workflow.tasks.len();
    let max = proofmesh_node::chain::escrow::max_payment(&workflow);
    let mut gw = net.rpc("gateway").await;
    wait_failed(&mut gw, &id).await;
    drop(gw);
    let key = workflow_key(&id);
    unhold_settlement(&mut net, &market, key).await;
    let by_op = completed_by(&net).await;
    let expected = owed(&by_op);
    assert_eq!(tasks_done(&by_op), n - 1, "the leaves: {by_op:?}");
    released(&market, key, expected).await;
    assert_eq!(
        market
            .claimable(net.requester().signer.address())
            .await
            .expect("claimable"),
        U256::from(max - expected)
    );
}

/// The requester cancels a running workflow with `proofmesh cancel`, signed by the key that
/// paid its escrow: its tasks stop, the leaves accepted so far are paid, and the rest of the
/// escrow is the requester's at once. A cancellation signed by any other key is refused with
/// the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_workflow_stops_pays_what_was_accepted_and_hands_back_the_rest() {
    let net = Net::up(chain_spec(2, 1));
    let market = net.market().await;
    let (id, workflow) = net
        .submit_with_escrow(&sleepers("e2e-cancel", 12, 1_000, 60))
        .await;
    let n = workflow.tasks.len();
    let max = proofmesh_node::chain::escrow::max_payment(&workflow);
    let mut gw = net.rpc("gateway").await;
    let started = wait_status(&mut gw, &id.to_hex(), "a first leaf accepted", WAIT, |s| {
        s.done >= 1
    })
    .await;
    assert!((started.done as usize) < n, "still running: {started:?}");
    let gw_rpc = net.node("gateway").rpc.clone();

    // Another key's cancellation is refused, naming who signed it and who may.
    let stranger = net.dir.path().join("stranger.key");
    std::fs::write(
        &stranger,
        format!("{:x}", proofmesh_chain::B256::repeat_byte(0x5a)),
    )
    .expect("key file");
    let out = std::process::Command::new(crate::harness::proofmesh_bin())
        .args(["cancel", &id.to_hex(), "--rpc", &gw_rpc, "--eth-key"])
        .arg(&stranger)
        .arg("--devnet")
        .arg(net.dir.path())
        .output()
        .expect("proofmesh runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a stranger cannot cancel");
    assert!(err.contains("but the workflow's requester is"), "{err}");
    assert_eq!(
        gw.status(&id.to_hex()).await.expect("status").state,
        "active"
    );

    let shown = cli(&net, &["cancel", &id.to_hex(), "--rpc", &gw_rpc, "--wait"]);
    assert!(shown.contains("state=failed"), "{shown}");
    assert!(shown.contains("cancelled by its requester"), "{shown}");
    let done = gw.status(&id.to_hex()).await.expect("status").done as usize;
    assert!(done < n, "cancelled before the end: {done} of {n}");

    // The accepted leaves are paid, nothing else; the rest goes back to the requester.
    let by_op = completed_by(&net).await;
    let accepted = tasks_done(&by_op);
    assert_eq!(accepted, done, "the gateway's counts: {by_op:?}");
    let expected = owed(&by_op);
    let key = workflow_key(&id);
    released(&market, key, expected).await;
    let mut paid_tasks = 0;
    for t in 0..n as u32 {
        if market.paid_attempt(key, t).await.expect("paidAttempt") != 0 {
            paid_tasks += 1;
        }
    }
    assert_eq!(paid_tasks, done, "each accepted task paid, and only those");
    let requester = net.requester().signer.address();
    assert_eq!(
        market.claimable(requester).await.expect("claimable"),
        U256::from(max - expected),
        "the rest of the escrow, to the wei"
    );
    // Nothing of it runs any more: the count stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        gw.status(&id.to_hex()).await.expect("status").done as usize,
        done
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sigkilled_mid_task_is_slashed_for_the_missed_deadline() {
    let mut spec = chain_spec(2, 1);
    // One slot each and no queue: with 4 ready leaves both operators run one, so the victim
    // holds an accepted attempt when it dies (one it had only queued would not be slashed).
    spec.operator_max_concurrent = 1;
    spec.operator_queue_depth = 0;
    let net = Net::up(spec);
    let market = net.market().await;
    let (id, workflow) = net
        .submit_with_escrow(&sleepers("e2e-sigkill", 4, 2500, 6))
        .await;
    let n = workflow.tasks.len();
    let mut gw = net.rpc("gateway").await;
    // The victim holds an accepted attempt when it dies: its own view shows the task running
    // (it may have finished one before, when the other operator started late on a loaded
    // machine). The gateway's count of running tasks could not tell: under load it once showed
    // two while the other operator's acceptance of its next task overtook the verdict on its
    // last, with the victim idle, and nothing was slashed.
    let victim = "operator-0";
    let mut own = net.rpc(victim).await;
    wait_status(
        &mut own,
        &id.to_hex(),
        "the victim running a task",
        WAIT,
        |s| s.stages.iter().map(|st| st.running).sum::<u64>() >= 1,
    )
    .await;
    let done_before = gw.status(&id.to_hex()).await.expect("status").done as usize;
    drop(own);
    net.kill(victim);

    wait_completed(&mut gw, &id.to_hex(), "completion after the kill", WAIT, n).await;
    let eth = net.eth(victim);
    let stake_before = ETH;
    let rep = eventually("the missed-deadline slash", WAIT, || async {
        let r = market.reputation(eth).await.map_err(|e| e.to_string())?;
        if r.slashed >= 1 {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    assert_eq!(rep.slashed, 1, "one accepted attempt missed: one slash");
    assert_eq!(rep.failed, 1, "counted as failed");
    assert_eq!(
        rep.stake,
        stake_before - ETH / 2,
        "the devnet missed-deadline penalty (0.5 ETH) left its stake"
    );
    // The survivor is paid for everything it did, the victim for nothing it did not finish.
    let by_op = completed_by(&net).await;
    let survivor = "operator-1";
    let (price, completed) = by_op[survivor];
    assert!(
        completed as usize >= n - 1 - done_before,
        "survivor did the rest: {by_op:?}"
    );
    let key = workflow_key(&id);
    eventually("settlement", WAIT, || async {
        let paid = market.escrow(key).await.map_err(|e| e.to_string())?.paid;
        let want = owed(&by_op);
        if paid == want {
            Ok(())
        } else {
            Err(format!("paid {paid}, want {want}"))
        }
    })
    .await;
    assert_eq!(
        market
            .claimable(net.eth(survivor))
            .await
            .expect("claimable"),
        U256::from(price * u128::from(completed))
    );
    // The requester was credited the rest of the escrow once the workflow completed, and its
    // share of the slash on top.
    let paid = market.escrow(key).await.expect("escrow").paid;
    let rest = proofmesh_node::chain::escrow::max_payment(&workflow) - paid;
    released(&market, key, paid).await;
    let requester = net.requester().signer.address();
    assert!(
        market.claimable(requester).await.expect("claimable") > U256::from(rest),
        "the requester got its share of the slash beside the rest of the escrow ({rest} wei)"
    );
}

/// The demo pipeline with three final proofs over the same root, so a final-only bidder gets one.
fn triple_final() -> String {
    demo()
        .replace("name = \"demo\"", "name = \"e2e-malicious\"")
        .replace("max_attempts = 3", "max_attempts = 5")
        .replace(
            "program = \"final@1\"\n",
            "program = \"final@1\"\ncount = 3\n",
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_final_proof_is_caught_reassigned_and_slashed_on_chain() {
    let mut spec = chain_spec(2, 1);
    // operator-0 bids only for final proofs and corrupts them; operator-1 (one slot) is honest,
    // so of three ready finals operator-0 surely gets one.
    spec.malicious_operators = vec![0];
    spec.malicious_programs = vec!["final".into()];
    spec.operator_max_concurrent = 1;
    let net = Net::up(spec);
    let market = net.market().await;
    let text = triple_final();
    assert!(text.contains("count = 3"), "demo.toml changed shape");
    let (id, workflow) = net.submit_with_escrow(&text).await;
    let n = workflow.tasks.len();
    let mut gw = net.rpc("gateway").await;
    wait_completed(&mut gw, &id.to_hex(), "completion", WAIT, n).await;
    // Every accepted final proof verifies: the corrupted ones were caught.
    let result = gw.result(&id.to_hex()).await.expect("result");
    assert_eq!(result.outputs.len(), 3);
    for out in &result.outputs {
        let proof = gw.fetch_blob(&out.output).await.expect("proof");
        proofmesh_prover::verify_proof_bytes(&proof).expect("accepted final proofs verify");
    }
    let eth = net.eth("operator-0");
    let why = || {
        let log = std::fs::read_to_string(&net.node("matchmaker-0").log).unwrap_or_default();
        log.lines()
            .filter(|l| {
                ["slash", "claim", "rejected", "settle"]
                    .iter()
                    .any(|k| l.contains(k))
            })
            .map(|l| l.chars().take(400).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let rep = eventually(
        "the invalid-proof slash",
        Duration::from_secs(60),
        || async {
            let r = market.reputation(eth).await.map_err(|e| e.to_string())?;
            if r.slashed >= 1 {
                Ok(r)
            } else {
                Err(format!("{r:?}; matchmaker log:\n{}", why()))
            }
        },
    )
    .await;
    assert_eq!(rep.completed, 0, "the cheater is never paid");
    assert_eq!(
        rep.stake, 0,
        "the invalid-proof penalty (1 ETH) took its whole stake"
    );
    assert!(
        market.total_burned().await.expect("burned") > U256::ZERO,
        "part of the slash is burned"
    );
    assert_eq!(
        market.claimable(eth).await.expect("claimable"),
        U256::ZERO,
        "nothing paid to the cheater"
    );
    // Everything was done, and paid, by the honest operator.
    let honest = net.eth("operator-1");
    let price = DEFAULT_PRICES_WEI[1];
    eventually("settlement", WAIT, || async {
        let c = market.claimable(honest).await.map_err(|e| e.to_string())?;
        if c == U256::from(price * n as u128) {
            Ok(())
        } else {
            Err(format!("claimable {c}"))
        }
    })
    .await;
}
