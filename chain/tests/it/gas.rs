//! The target as a real transaction: 512 tasks over 32 operators in one settlement.

use crate::common::{setup, ETH};
use proofmesh_chain::OperatorPayout;
use proofmesh_chain::B256;

#[tokio::test]
async fn settle_512_tasks_32_operators_under_10k_gas_per_task() {
    let env = setup().await;
    let mut ops = Vec::new();
    for _ in 0..32 {
        ops.push(env.operator(ETH).await);
    }
    let requester = env.actor(100).await;
    let settler = env.actor(10).await;
    let wf = B256::repeat_byte(0x33);
    let deadline = env.now().await + 3_600;
    requester
        .open_escrow(wf, settler.account(), deadline, 512, 10 * ETH)
        .await
        .expect("open escrow");
    let payouts: Vec<OperatorPayout> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| OperatorPayout {
            operator: op.account(),
            amount: ETH / 100,
            tasks: (0..16u32).map(|j| (i as u32 + j * 32, 1)).collect(),
        })
        .collect();
    let tx = settler.settle(wf, &payouts).await.expect("settle");
    let per_task = tx.gas_used / 512;
    eprintln!("settle 512 tasks / 32 operators: {} gas total, {per_task} gas per task (tx incl. calldata)", tx.gas_used);
    assert!(
        per_task <= 10_000,
        "amortized settlement gas {per_task} per task exceeds 10,000"
    );
    for op in &ops {
        assert_eq!(op.reputation(op.account()).await.unwrap().completed, 16);
    }
}
