//! A local anvil for tests and devnets: the pinned binary from `scripts/install-foundry`, on a
//! free loopback port, killed on drop.

use crate::error::ChainError;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the anvil binary is: `$PROOFMESH_ANVIL`, else `<repo>/.tools/bin/anvil`.
pub fn anvil_path() -> PathBuf {
    match std::env::var_os("PROOFMESH_ANVIL") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(".tools/bin/anvil"),
    }
}

/// Where forge is: `$PROOFMESH_FORGE`, else `<repo>/.tools/bin/forge`.
pub fn forge_path() -> PathBuf {
    match std::env::var_os("PROOFMESH_FORGE") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(".tools/bin/forge"),
    }
}

/// The repository root (this crate's parent directory).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// A running anvil, killed when dropped.
#[derive(Debug)]
pub struct AnvilInstance {
    child: Child,
    port: u16,
    chain_id: u64,
}

impl AnvilInstance {
    /// Starts anvil on a free port with chain id 31337 and waits until it answers.
    pub async fn spawn() -> Result<Self, ChainError> {
        let bin = anvil_path();
        if !bin.exists() {
            return Err(ChainError::Anvil(format!(
                "{} not found: run scripts/install-foundry (scripts/test does) or set PROOFMESH_ANVIL",
                bin.display()
            )));
        }
        let mut last_err = String::new();
        // A port picked by binding :0 can be taken again before anvil binds it: retry.
        for _ in 0..3 {
            let port = free_port()?;
            let chain_id = 31_337;
            let child = Command::new(&bin)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--chain-id",
                    &chain_id.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| ChainError::Anvil(format!("cannot start {}: {e}", bin.display())))?;
            let mut me = AnvilInstance {
                child,
                port,
                chain_id,
            };
            match me.wait_ready(Duration::from_secs(15)).await {
                Ok(()) => return Ok(me),
                Err(e) => last_err = e.to_string(),
            }
        }
        Err(ChainError::Anvil(format!(
            "anvil did not come up: {last_err}"
        )))
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), ChainError> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ChainError::Anvil(format!(
                    "anvil exited early with {status}"
                )));
            }
            if let Ok(p) = ProviderBuilder::new().connect(&self.endpoint()).await {
                if p.get_chain_id().await.is_ok() {
                    return Ok(());
                }
            }
            if start.elapsed() > timeout {
                return Err(ChainError::Anvil(format!(
                    "no answer on {} after {timeout:?}",
                    self.endpoint()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// HTTP JSON-RPC endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// A read-only provider.
    pub async fn provider(&self) -> Result<DynProvider, ChainError> {
        let p = ProviderBuilder::new()
            .connect(&self.endpoint())
            .await
            .map_err(|e| ChainError::Anvil(format!("connect: {e}")))?;
        Ok(p.erased())
    }

    /// A fresh random account holding `wei` (set with `anvil_setBalance`).
    pub async fn funded_signer(&self, wei: U256) -> Result<PrivateKeySigner, ChainError> {
        let signer = PrivateKeySigner::random();
        self.set_balance(signer.address(), wei).await?;
        Ok(signer)
    }

    /// Sets an account's balance.
    pub async fn set_balance(&self, account: Address, wei: U256) -> Result<(), ChainError> {
        let p = self.provider().await?;
        p.raw_request::<_, serde_json::Value>("anvil_setBalance".into(), (account, wei))
            .await
            .map_err(|e| ChainError::Anvil(format!("anvil_setBalance: {e}")))?;
        Ok(())
    }

    /// Moves block time forward by `seconds` and mines a block.
    pub async fn advance_time(&self, seconds: u64) -> Result<(), ChainError> {
        let p = self.provider().await?;
        p.raw_request::<_, serde_json::Value>("evm_increaseTime".into(), (seconds,))
            .await
            .map_err(|e| ChainError::Anvil(format!("evm_increaseTime: {e}")))?;
        self.mine(1).await
    }

    /// Mines `blocks` empty blocks.
    pub async fn mine(&self, blocks: u64) -> Result<(), ChainError> {
        let p = self.provider().await?;
        p.raw_request::<_, serde_json::Value>("anvil_mine".into(), (blocks,))
            .await
            .map_err(|e| ChainError::Anvil(format!("anvil_mine: {e}")))?;
        Ok(())
    }

    /// Snapshots the chain state (`evm_snapshot`); returns the snapshot id.
    pub async fn snapshot(&self) -> Result<U256, ChainError> {
        let p = self.provider().await?;
        p.raw_request::<_, U256>("evm_snapshot".into(), ())
            .await
            .map_err(|e| ChainError::Anvil(format!("evm_snapshot: {e}")))
    }

    /// Reverts to a snapshot (`evm_revert`), dropping every later block: a reorg.
    pub async fn revert(&self, id: U256) -> Result<(), ChainError> {
        let p = self.provider().await?;
        let ok = p
            .raw_request::<_, bool>("evm_revert".into(), (id,))
            .await
            .map_err(|e| ChainError::Anvil(format!("evm_revert: {e}")))?;
        if ok {
            Ok(())
        } else {
            Err(ChainError::Anvil(format!("evm_revert({id}) refused")))
        }
    }
}

impl Drop for AnvilInstance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, ChainError> {
    free_loopback_port().map_err(|e| ChainError::Anvil(format!("no free port: {e}")))
}

/// A free TCP port on loopback, for a process started a moment later (anvil, a devnet node).
///
/// Not `bind(0)`'s pick: within one process two picks never repeat (a counter walks the range),
/// so tests spawning anvils in parallel threads cannot be handed the same port, where the
/// second anvil failed to bind while its readiness check reached the first one's, and two
/// tests shared a chain (seen: a transaction of one failing in the middle of another). Taken
/// below the kernel's ephemeral range (32768+ on Linux), since a port `bind(0)` hands out is
/// also what outgoing connections get, which can take it before the process binds it. Spread
/// by pid so concurrent processes rarely collide; falls back to `bind(0)`.
pub fn free_loopback_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let base = std::process::id().wrapping_mul(7_919);
    for _ in 0..64 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + base.wrapping_add(n.wrapping_mul(97)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_picked_in_parallel_threads_never_repeat() {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..50)
                        .map(|_| free_loopback_port().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u16> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let picked = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), picked, "a port was handed out twice");
        assert!(all.iter().all(|&p| p < 32_768), "below the ephemeral range");
    }
}
