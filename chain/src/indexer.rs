//! Event indexer: polls `eth_getLogs` over block ranges from a persisted cursor.
//!
//! Delivery is at-least-once: [`Indexer::poll`] returns the next events and advances the cursor
//! in memory; [`Indexer::commit`] persists it once the caller has stored what it got. After a
//! restart the indexer resumes from the last committed cursor.
//!
//! Reorgs: the cursor remembers the hash of the last block it read. If that block's hash has
//! changed (or the block is gone), the chain reorganised under us: the indexer rewinds by the
//! confirmation window, returns [`IndexerItem::Reorg`] (the caller drops what it had from those
//! blocks on) and re-reads them. Reorgs deeper than the window are not handled; on a real chain
//! pick a window above the deepest reorg you accept.

use crate::bindings::ProofMarket;
use crate::error::ChainError;
use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEventInterface;

/// Where the indexer is: the next block to read and the hash of the block before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// First block not yet read.
    pub next_block: u64,
    /// Hash of block `next_block - 1` as it was read (zero before the first read).
    pub last_hash: B256,
}

impl Cursor {
    /// 40 bytes: next_block (8, BE) || last_hash (32). For key-value stores.
    pub fn to_bytes(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..8].copy_from_slice(&self.next_block.to_be_bytes());
        b[8..].copy_from_slice(self.last_hash.as_slice());
        b
    }

    /// Inverse of [`Cursor::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 40 {
            return None;
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&b[..8]);
        Some(Cursor {
            next_block: u64::from_be_bytes(n),
            last_hash: B256::from_slice(&b[8..]),
        })
    }
}

/// Persistence of the cursor (the node implements it on its redb store).
pub trait CursorStore: Send {
    /// The last committed cursor, if any.
    fn load(&mut self) -> Result<Option<Cursor>, String>;
    /// Persists `cursor`.
    fn save(&mut self, cursor: &Cursor) -> Result<(), String>;
}

/// An in-memory store (tests; or a node that re-indexes from `start_block` on restart).
#[derive(Clone, Debug, Default)]
pub struct MemoryCursorStore {
    /// The saved cursor.
    pub cursor: Option<Cursor>,
}

impl CursorStore for MemoryCursorStore {
    fn load(&mut self) -> Result<Option<Cursor>, String> {
        Ok(self.cursor)
    }
    fn save(&mut self, cursor: &Cursor) -> Result<(), String> {
        self.cursor = Some(*cursor);
        Ok(())
    }
}

/// Indexer settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexerConfig {
    /// Block to start from when no cursor is stored (the market's deployment block).
    pub start_block: u64,
    /// Most blocks per `eth_getLogs` call.
    pub max_range: u64,
    /// How many blocks to re-read after a reorg is detected.
    pub reorg_window: u64,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        IndexerConfig {
            start_block: 0,
            max_range: 2_000,
            reorg_window: 12,
        }
    }
}

/// One decoded market event and where it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedEvent {
    /// Block number.
    pub block_number: u64,
    /// Block hash.
    pub block_hash: B256,
    /// Transaction hash.
    pub tx_hash: B256,
    /// Index of the log in its block (with the block hash, a unique id).
    pub log_index: u64,
    /// The event.
    pub event: ProofMarket::ProofMarketEvents,
}

/// What a poll yields, in chain order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexerItem {
    /// Blocks from `from_block` on were replaced: forget what you had from them; they are
    /// re-read and their events delivered again.
    Reorg {
        /// First block to forget.
        from_block: u64,
    },
    /// A market event.
    Event(Box<IndexedEvent>),
}

/// Polls one market's events.
pub struct Indexer<S: CursorStore> {
    provider: DynProvider,
    market: Address,
    store: S,
    cursor: Cursor,
    config: IndexerConfig,
}

impl<S: CursorStore> Indexer<S> {
    /// Resumes from the stored cursor, or starts at `config.start_block`.
    pub fn new(
        provider: DynProvider,
        market: Address,
        mut store: S,
        config: IndexerConfig,
    ) -> Result<Self, ChainError> {
        let cursor = store.load().map_err(ChainError::Cursor)?.unwrap_or(Cursor {
            next_block: config.start_block,
            last_hash: B256::ZERO,
        });
        Ok(Indexer {
            provider,
            market,
            store,
            cursor,
            config,
        })
    }

    /// The in-memory cursor (what the next poll starts from).
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Persists the in-memory cursor: everything returned so far has been handled.
    pub fn commit(&mut self) -> Result<(), ChainError> {
        self.store.save(&self.cursor).map_err(ChainError::Cursor)
    }

    /// The store (e.g. to inspect it in tests).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Reads every new block up to the chain head (at most `max_range` blocks per request).
    pub async fn poll(&mut self) -> Result<Vec<IndexerItem>, ChainError> {
        let mut items = Vec::new();
        if let Some(from_block) = self.detect_reorg().await? {
            items.push(IndexerItem::Reorg { from_block });
        }
        let head = self
            .provider
            .get_block_number()
            .await
            .map_err(|e| rpc("eth_blockNumber", e))?;
        while self.cursor.next_block <= head {
            let from = self.cursor.next_block;
            let to = head.min(from.saturating_add(self.config.max_range.max(1) - 1));
            let filter = Filter::new()
                .address(self.market)
                .from_block(from)
                .to_block(to);
            let logs = self
                .provider
                .get_logs(&filter)
                .await
                .map_err(|e| rpc("eth_getLogs", e))?;
            for log in logs {
                let event = match ProofMarket::ProofMarketEvents::decode_log(&log.inner) {
                    Ok(decoded) => decoded.data,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping undecodable ProofMarket log");
                        continue;
                    }
                };
                items.push(IndexerItem::Event(Box::new(IndexedEvent {
                    block_number: log.block_number.unwrap_or_default(),
                    block_hash: log.block_hash.unwrap_or_default(),
                    tx_hash: log.transaction_hash.unwrap_or_default(),
                    log_index: log.log_index.unwrap_or_default(),
                    event,
                })));
            }
            let hash = self.block_hash(to).await?.unwrap_or_default();
            self.cursor = Cursor {
                next_block: to + 1,
                last_hash: hash,
            };
        }
        Ok(items)
    }

    /// If the last read block changed, rewinds the cursor and returns the first block to forget.
    async fn detect_reorg(&mut self) -> Result<Option<u64>, ChainError> {
        if self.cursor.next_block == 0 || self.cursor.last_hash == B256::ZERO {
            return Ok(None);
        }
        let last = self.cursor.next_block - 1;
        if self.block_hash(last).await? == Some(self.cursor.last_hash) {
            return Ok(None);
        }
        let from_block = last
            .saturating_sub(self.config.reorg_window.saturating_sub(1))
            .max(self.config.start_block);
        tracing::warn!(
            last,
            from_block,
            "chain reorganised under the indexer; re-reading the window"
        );
        let prev = if from_block == 0 {
            None
        } else {
            self.block_hash(from_block - 1).await?
        };
        self.cursor = Cursor {
            next_block: from_block,
            last_hash: prev.unwrap_or_default(),
        };
        Ok(Some(from_block))
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>, ChainError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(|e| rpc("eth_getBlockByNumber", e))?;
        Ok(block.map(|b| b.header.hash))
    }
}

fn rpc(call: &'static str, e: impl std::fmt::Display) -> ChainError {
    ChainError::Rpc {
        call,
        message: e.to_string(),
    }
}
