//! The store's retention, run in the background: every [`NodeOptions::prune_every`], finished
//! workflows past their retention are pruned ([`Store::prune_finished`]), a budget of tasks at
//! a time, off the core (it never waits for a prune, only its commits may, briefly, for the
//! store's one writer).
//!
//! [`NodeOptions::prune_every`]: super::NodeOptions::prune_every

use super::metrics::RuntimeMetrics;
use crate::network::Clock;
use crate::store::{Retention, Store};
use std::time::Duration;

/// Prune what `retention` no longer keeps, every `every`, until the node stops.
pub(crate) async fn run(
    store: Store,
    retention: Retention,
    every: Duration,
    clock: Clock,
    metrics: RuntimeMetrics,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            let (store, retention, now) = (store.clone(), retention.clone(), clock());
            let pruning =
                match tokio::task::spawn_blocking(move || store.prune_finished(&retention, now))
                    .await
                {
                    Ok(Ok(pruning)) => pruning,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "store: pruning finished workflows failed");
                        break;
                    }
                    Err(_) => return,
                };
            for workflow in &pruning.workflows {
                metrics.workflow_pruned(workflow);
            }
            metrics.pruned_blob_bytes.inc_by(pruning.blob_bytes);
            if !pruning.workflows.is_empty() {
                tracing::info!(
                    workflows = pruning.workflows.len(),
                    blobs = pruning.blobs,
                    blob_bytes = pruning.blob_bytes,
                    "pruned finished workflows past their retention"
                );
            }
            if !pruning.more {
                break;
            }
            // Let the node's own commits through between slices.
            tokio::task::yield_now().await;
        }
    }
}
