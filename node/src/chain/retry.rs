//! Retrying chain calls: transport and RPC errors are transient (the node or chain restarts,
//! a connection drops); reverts are answers and are not retried here.

use proofmesh_chain::ChainError;
use std::future::Future;
use std::time::Duration;

/// Attempts before giving up on a transient error (about a minute of backoff in all).
pub const ATTEMPTS: u32 = 10;

/// Whether an error may go away by itself.
pub fn is_transient(e: &ChainError) -> bool {
    matches!(e, ChainError::Rpc { .. })
}

/// Runs `f` until it succeeds, fails with a non-transient error, or [`ATTEMPTS`] transient
/// failures happened, with exponential backoff from 100 ms to 10 s.
pub async fn with_retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, ChainError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ChainError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) && attempt < ATTEMPTS => {
                tracing::warn!(call = what, attempt, error = %e, "chain call failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
