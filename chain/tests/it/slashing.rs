//! Each slashing path end to end on anvil, balances to the wei.

use crate::common::{assert_balance, setup, wei, Env, ETH};
use proofmesh_chain::evidence::{acceptance, SignedAcceptance, SignedProofClaim};
use proofmesh_chain::{MarketClient, B256, U256};

struct Fixture {
    env: Env,
    op: MarketClient,
    requester: MarketClient,
    settler: MarketClient,
    wf: B256,
}

async fn fixture() -> Fixture {
    let env = setup().await;
    let op = env.operator(2 * ETH).await;
    let requester = env.actor(100).await;
    let settler = env.actor(10).await;
    let wf = B256::repeat_byte(0x22);
    let deadline = env.now().await + 3_600;
    requester
        .open_escrow(wf, settler.account(), deadline, 8, ETH)
        .await
        .expect("open escrow");
    Fixture {
        env,
        op,
        requester,
        settler,
        wf,
    }
}

fn share(amount: u128, bps: u16) -> u128 {
    amount * u128::from(bps) / 10_000
}

#[tokio::test]
async fn missed_deadline_is_slashed_once() {
    let f = fixture().await;
    let p = f.env.params.clone();
    let deadline_ms = (f.env.now().await + 60) * 1000;
    let evidence = SignedAcceptance::sign(
        f.op.signer(),
        f.op.chain_id(),
        f.op.address(),
        acceptance(f.wf, 0, 1, deadline_ms, ETH / 100),
    )
    .expect("sign acceptance");
    evidence
        .verify(f.op.chain_id(), f.op.address())
        .expect("evidence verifies off-chain");

    let err = f
        .settler
        .slash_missed_deadline(&evidence)
        .await
        .expect_err("deadline not passed");
    assert!(err.to_string().contains("DeadlineNotPassed"), "{err}");
    f.env.anvil.advance_time(61).await.unwrap();
    // Before the escrow deadline only the settler may report.
    let stranger = f.env.actor(1).await;
    let err = stranger
        .slash_missed_deadline(&evidence)
        .await
        .expect_err("not settler");
    assert!(
        err.to_string().contains("OnlySettlerBeforeEscrowDeadline"),
        "{err}"
    );

    f.settler
        .slash_missed_deadline(&evidence)
        .await
        .expect("slash");
    let err = f
        .settler
        .slash_missed_deadline(&evidence)
        .await
        .expect_err("same evidence twice");
    assert!(err.to_string().contains("EvidenceUsed"), "{err}");

    let penalty = p.missed_deadline_penalty;
    let to_req = share(penalty, p.requester_share_bps);
    let to_rep = share(penalty, p.reporter_share_bps);
    let r = f.op.reputation(f.op.account()).await.unwrap();
    assert_eq!((r.stake, r.slashed, r.failed), (2 * ETH - penalty, 1, 1));
    assert_eq!(
        f.env.market.total_burned().await.unwrap(),
        wei(penalty - to_req - to_rep)
    );

    // Both shares are paid out to the wei.
    let before = f.env.balance(&f.settler).await;
    let tx = f.settler.claim().await.expect("reporter claims");
    assert_balance(
        before,
        f.env.balance(&f.settler).await,
        wei(to_rep),
        &tx,
        "reporter share",
    );
    let before = f.env.balance(&f.requester).await;
    let tx = f.requester.claim().await.expect("requester claims");
    assert_balance(
        before,
        f.env.balance(&f.requester).await,
        wei(to_req),
        &tx,
        "requester share",
    );
    assert_eq!(
        f.env.market.paid_attempt(f.wf, 0).await.unwrap(),
        255,
        "attempt closed"
    );
}

#[tokio::test]
async fn invalid_proof_is_slashed_by_anyone() {
    let f = fixture().await;
    let p = f.env.params.clone();
    let inputs = vec![U256::from(42u64)];
    let claim = SignedProofClaim::sign(
        f.op.signer(),
        f.op.chain_id(),
        f.op.address(),
        f.wf,
        7,
        1,
        vec![0xde; 32].into(),
        inputs,
    )
    .expect("sign claim");
    claim
        .verify(f.op.chain_id(), f.op.address())
        .expect("claim verifies off-chain");
    let reporter = f.env.actor(1).await;

    // A tampered claim (other inputs than signed) is no evidence.
    let mut tampered = claim.clone();
    tampered.public_inputs = vec![U256::from(43u64)];
    let err = reporter
        .slash_invalid_proof(&tampered)
        .await
        .expect_err("tampered");
    assert!(err.to_string().contains("BadSignature"), "{err}");

    reporter
        .slash_invalid_proof(&claim)
        .await
        .expect("slash invalid proof");
    let err = reporter
        .slash_invalid_proof(&claim)
        .await
        .expect_err("twice");
    assert!(err.to_string().contains("EvidenceUsed"), "{err}");

    let penalty = p.invalid_proof_penalty;
    let r = f.op.reputation(f.op.account()).await.unwrap();
    assert_eq!((r.stake, r.slashed), (2 * ETH - penalty, 1));
    let before = f.env.balance(&reporter).await;
    let tx = reporter.claim().await.expect("claim");
    assert_balance(
        before,
        f.env.balance(&reporter).await,
        wei(share(penalty, p.reporter_share_bps)),
        &tx,
        "reporter",
    );
    assert_eq!(
        f.env.market.claimable(f.requester.account()).await.unwrap(),
        wei(share(penalty, p.requester_share_bps))
    );
}

#[tokio::test]
async fn declared_failure_costs_less_and_blocks_the_slash() {
    let f = fixture().await;
    let p = f.env.params.clone();
    let deadline_ms = (f.env.now().await + 60) * 1000;
    let acc = acceptance(f.wf, 3, 1, deadline_ms, ETH / 100);
    let evidence =
        SignedAcceptance::sign(f.op.signer(), f.op.chain_id(), f.op.address(), acc.clone())
            .unwrap();

    f.op.declare_failure(&acc).await.expect("declare failure");
    let r = f.op.reputation(f.op.account()).await.unwrap();
    assert_eq!(
        (r.stake, r.failed, r.slashed),
        (2 * ETH - p.failure_penalty, 1, 0)
    );
    assert!(p.failure_penalty < p.missed_deadline_penalty);
    assert_eq!(
        f.env.market.claimable(f.requester.account()).await.unwrap(),
        wei(share(p.failure_penalty, p.requester_share_bps))
    );

    f.env.anvil.advance_time(61).await.unwrap();
    let err = f
        .settler
        .slash_missed_deadline(&evidence)
        .await
        .expect_err("already closed");
    assert!(err.to_string().contains("EvidenceUsed"), "{err}");
    let err =
        f.op.declare_failure(&acceptance(f.wf, 4, 1, deadline_ms, 0))
            .await
            .expect_err("too late");
    assert!(err.to_string().contains("DeadlinePassed"), "{err}");
}
