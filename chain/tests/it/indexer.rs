//! The indexer reads every event, resumes from its cursor, and survives a reorg.

use crate::common::{setup, ETH};
use proofmesh_chain::bindings::ProofMarket::ProofMarketEvents;
use proofmesh_chain::evidence::verify_binding;
use proofmesh_chain::{Indexer, IndexerConfig, IndexerItem, MemoryCursorStore, B256, U256};
use proofmesh_protocol::identity::PublicKey;

fn events(items: &[IndexerItem]) -> Vec<&ProofMarketEvents> {
    items
        .iter()
        .filter_map(|i| match i {
            IndexerItem::Event(e) => Some(&e.event),
            IndexerItem::Reorg { .. } => None,
        })
        .collect()
}

#[tokio::test]
async fn indexes_resumes_and_handles_reorg() {
    let env = setup().await;
    let op = env.operator(2 * ETH).await;
    let requester = env.actor(10).await;
    let wf = B256::repeat_byte(0x44);
    requester
        .open_escrow(wf, requester.account(), env.now().await + 600, 2, ETH)
        .await
        .unwrap();

    let provider = env.anvil.provider().await.unwrap();
    let config = IndexerConfig {
        start_block: 0,
        max_range: 2,
        reorg_window: 4,
    };
    let mut ix = Indexer::new(
        provider.clone(),
        env.market.address(),
        MemoryCursorStore::default(),
        config,
    )
    .unwrap();
    let first = ix.poll().await.unwrap();
    let evs = events(&first);
    assert_eq!(evs.len(), 2, "registration and escrow: {evs:?}");
    match evs[0] {
        ProofMarketEvents::OperatorRegistered(r) => {
            assert_eq!(r.operator, op.account());
            // The binding signature in the event verifies against the node key.
            verify_binding(
                &PublicKey(r.nodeKey.0),
                &r.nodeKeySig,
                env.anvil.chain_id(),
                env.market.address(),
                r.operator,
            )
            .expect("binding signature");
        }
        other => panic!("expected OperatorRegistered, got {other:?}"),
    }
    assert!(
        matches!(evs[1], ProofMarketEvents::EscrowOpened(e) if e.workflowId == wf && e.amount == U256::from(ETH))
    );
    ix.commit().unwrap();
    let store = ix.store().clone();

    // A restart resumes after what was committed: only new events come back.
    op.stake(5).await.unwrap();
    let mut ix = Indexer::new(provider.clone(), env.market.address(), store, config).unwrap();
    let second = ix.poll().await.unwrap();
    let evs = events(&second);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(matches!(evs[0], ProofMarketEvents::Staked(s) if s.amount == U256::from(5u64)));
    assert!(ix.poll().await.unwrap().is_empty(), "nothing new");
    ix.commit().unwrap();

    // Reorg: the block with the stake of 7 is replaced by one with a stake of 9.
    let snap = env.anvil.snapshot().await.unwrap();
    op.stake(7).await.unwrap();
    let before = ix.poll().await.unwrap();
    assert!(
        matches!(events(&before)[..], [ProofMarketEvents::Staked(s)] if s.amount == U256::from(7u64))
    );
    let reorged_block = ix.cursor().next_block - 1;
    env.anvil.revert(snap).await.unwrap();
    op.stake(9).await.unwrap();
    let after = ix.poll().await.unwrap();
    match after.first() {
        Some(IndexerItem::Reorg { from_block }) => {
            assert!(*from_block <= reorged_block, "rewinds to {from_block}")
        }
        other => panic!("expected a reorg first, got {other:?}"),
    }
    let evs = events(&after);
    assert!(
        evs.iter()
            .any(|e| matches!(e, ProofMarketEvents::Staked(s) if s.amount == U256::from(9u64))),
        "the new block's event: {evs:?}"
    );
    assert!(
        !evs.iter()
            .any(|e| matches!(e, ProofMarketEvents::Staked(s) if s.amount == U256::from(7u64))),
        "the orphaned event is gone: {evs:?}"
    );
}
