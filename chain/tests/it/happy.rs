//! Escrow, batch settlement, claims, final proof, refund: balances to the wei.

use crate::common::{assert_balance, setup, wei, ETH};
use proofmesh_chain::bindings::TestVerifier;
use proofmesh_chain::{OperatorPayout, B256, U256};

#[tokio::test]
async fn happy_path_pays_exactly() {
    let env = setup().await;
    let a = env.operator(2 * ETH).await;
    let b = env.operator(3 * ETH).await;
    let requester = env.actor(100).await;
    let settler = env.actor(10).await;
    assert_eq!(a.reputation(a.account()).await.unwrap().stake, 2 * ETH);

    // Open: the requester pays exactly the escrow plus gas.
    let wf = B256::repeat_byte(0x11);
    let deadline = env.now().await + 3_600;
    let before = env.balance(&requester).await;
    let tx = requester
        .open_escrow(wf, settler.account(), deadline, 4, ETH)
        .await
        .expect("open escrow");
    let after = env.balance(&requester).await;
    assert_eq!(
        after,
        before - wei(ETH) - tx.fee_wei,
        "escrow debit to the wei"
    );
    let e = env.market.escrow(wf).await.unwrap();
    assert_eq!(
        (e.requester, e.settler, e.held, e.taskCount),
        (requester.account(), settler.account(), ETH, 4)
    );

    // Settle one batch over two operators.
    let payouts = vec![
        OperatorPayout {
            operator: a.account(),
            amount: 3 * ETH / 10,
            tasks: vec![(0, 1), (1, 1)],
        },
        OperatorPayout {
            operator: b.account(),
            amount: 4 * ETH / 10,
            tasks: vec![(2, 1), (3, 2)],
        },
    ];
    // Only the settler may pay.
    let err = requester
        .settle(wf, &payouts)
        .await
        .expect_err("requester is not the settler");
    assert!(err.to_string().contains("NotSettler"), "{err}");
    settler.settle(wf, &payouts).await.expect("settle");
    // Never twice.
    let err = settler
        .settle(wf, &payouts[..1])
        .await
        .expect_err("double pay");
    assert!(err.to_string().contains("TaskAlreadyPaid"), "{err}");
    assert_eq!(
        env.market.claimable(a.account()).await.unwrap(),
        wei(3 * ETH / 10)
    );
    assert_eq!(
        env.market.claimable(b.account()).await.unwrap(),
        wei(4 * ETH / 10)
    );
    assert_eq!(env.market.paid_attempt(wf, 3).await.unwrap(), 2);
    let reps = env
        .market
        .reputations(&[a.account(), b.account()])
        .await
        .unwrap();
    assert_eq!((reps[0].completed, reps[1].completed), (2, 2));

    // Operator A claims its payment.
    let before = env.balance(&a).await;
    let tx = a.claim().await.expect("claim");
    assert_balance(
        before,
        env.balance(&a).await,
        wei(3 * ETH / 10),
        &tx,
        "operator claim",
    );

    // The settler records the verified final proof.
    let inputs = vec![U256::from(7u64)];
    let verifier = TestVerifier::new(env.verifier, env.market.provider().clone());
    let good = verifier.validProof(inputs.clone()).call().await.unwrap();
    let err = settler
        .submit_final_proof(wf, vec![1u8; 32].into(), inputs.clone())
        .await
        .expect_err("bad proof");
    assert!(err.to_string().contains("InvalidProof"), "{err}");
    settler
        .submit_final_proof(wf, good, inputs)
        .await
        .expect("final proof");
    assert!(env.market.escrow(wf).await.unwrap().proofAccepted);

    // After the deadline the requester gets back exactly what is left.
    let err = requester.refund(wf).await.expect_err("too early");
    assert!(err.to_string().contains("EscrowNotExpired"), "{err}");
    env.anvil.advance_time(3_601).await.unwrap();
    let before = env.balance(&requester).await;
    let tx = requester.refund(wf).await.expect("refund");
    assert_balance(
        before,
        env.balance(&requester).await,
        wei(3 * ETH / 10),
        &tx,
        "refund",
    );

    // The contract holds exactly the stakes and B's unclaimed payment.
    let held = env.market.balance(env.market.address()).await.unwrap();
    assert_eq!(held, wei(5 * ETH + 4 * ETH / 10));
}

/// A settler closes an ended workflow's escrow at once: the requester gets the rest through
/// `claim` without waiting for the deadline, and nothing more can be paid from it.
#[tokio::test]
async fn release_hands_the_rest_back_before_the_deadline() {
    let env = setup().await;
    let a = env.operator(2 * ETH).await;
    let requester = env.actor(100).await;
    let settler = env.actor(10).await;
    let wf = B256::repeat_byte(0x22);
    let deadline = env.now().await + 3_600;
    requester
        .open_escrow(wf, settler.account(), deadline, 4, ETH)
        .await
        .expect("open escrow");
    let paid = OperatorPayout {
        operator: a.account(),
        amount: 3 * ETH / 10,
        tasks: vec![(0, 1)],
    };
    settler.settle(wf, &[paid]).await.expect("settle");
    let err = requester.release(wf).await.expect_err("not a settler");
    assert!(err.to_string().contains("NotSettler"), "{err}");
    settler.release(wf).await.expect("release");
    let e = env.market.escrow(wf).await.unwrap();
    assert_eq!(
        (e.held, e.paid, e.refunded, e.released),
        (0, 3 * ETH / 10, true, true)
    );
    assert_eq!(
        env.market.claimable(requester.account()).await.unwrap(),
        wei(7 * ETH / 10),
        "the rest, credited to the requester"
    );
    let late = OperatorPayout {
        operator: a.account(),
        amount: 1,
        tasks: vec![(1, 1)],
    };
    let err = settler.settle(wf, &[late]).await.expect_err("closed");
    assert!(err.to_string().contains("EscrowClosed"), "{err}");
    let err = settler.release(wf).await.expect_err("twice");
    assert!(err.to_string().contains("AlreadyRefunded"), "{err}");
    let before = env.balance(&requester).await;
    let tx = requester.claim().await.expect("claim");
    assert_balance(
        before,
        env.balance(&requester).await,
        wei(7 * ETH / 10),
        &tx,
        "requester claim",
    );
}

#[tokio::test]
async fn unbonding_waits_for_the_delay() {
    let env = setup().await;
    let a = env.operator(3 * ETH).await;
    a.request_unbond(2 * ETH).await.expect("unbond");
    let err = a.withdraw().await.expect_err("still unbonding");
    assert!(err.to_string().contains("StillUnbonding"), "{err}");
    env.anvil
        .advance_time(env.params.unbonding_delay_s)
        .await
        .unwrap();
    let before = env.balance(&a).await;
    let tx = a.withdraw().await.expect("withdraw");
    assert_balance(before, env.balance(&a).await, wei(2 * ETH), &tx, "withdraw");
    let r = a.reputation(a.account()).await.unwrap();
    assert_eq!((r.stake, r.unbonding), (ETH, 0));
    assert!(r.stakeTime > U256::ZERO, "stake-time accrues");
}
