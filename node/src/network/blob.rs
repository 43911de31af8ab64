//! Blobs (inputs, outputs, proofs) move by request-response, never by gossip: a fetch asks for
//! a blob by blake3 hash, chunk by chunk (by offset), and the assembled bytes are checked
//! against the hash before anyone sees them.
//!
//! The whole blob is verified once complete (not chunk by chunk: that would need a verified
//! streaming tree such as bao), so a lying provider costs at most `max_blob_bytes` of transfer
//! before it is caught and the next peer is tried.

use proofmesh_protocol::ContentId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A slice of a blob as a provider returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobChunk {
    /// Length of the whole blob.
    pub total_len: u64,
    /// Bytes from the requested offset; at most the requested length.
    pub data: Vec<u8>,
}

/// Where the serving side reads blobs from; the node implements it over its store.
///
/// Called on a blocking thread, so implementations may read from disk.
pub trait BlobProvider: Send + Sync + 'static {
    /// Up to `max_len` bytes of blob `id` starting at `offset`, with the blob's total length;
    /// `Ok(None)` when this node does not have the blob.
    fn read_chunk(
        &self,
        id: &ContentId,
        offset: u64,
        max_len: usize,
    ) -> std::io::Result<Option<BlobChunk>>;
}

/// An in-memory [`BlobProvider`] (tests, and nodes that keep small blobs in memory).
#[derive(Clone, Debug, Default)]
pub struct MemoryBlobProvider {
    blobs: Arc<RwLock<HashMap<ContentId, Arc<Vec<u8>>>>>,
}

impl MemoryBlobProvider {
    /// An empty provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// Store `bytes` under their content id and return it.
    pub fn insert(&self, bytes: Vec<u8>) -> ContentId {
        let id = ContentId::of_bytes(&bytes);
        self.blobs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(bytes));
        id
    }
}

impl BlobProvider for MemoryBlobProvider {
    fn read_chunk(
        &self,
        id: &ContentId,
        offset: u64,
        max_len: usize,
    ) -> std::io::Result<Option<BlobChunk>> {
        let blobs = self.blobs.read().unwrap_or_else(|e| e.into_inner());
        let Some(blob) = blobs.get(id) else {
            return Ok(None);
        };
        Ok(Some(slice_chunk(blob, offset, max_len)))
    }
}

/// `[offset, offset + max_len)` of `blob`, clamped to its end.
pub fn slice_chunk(blob: &[u8], offset: u64, max_len: usize) -> BlobChunk {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(blob.len());
    let end = start.saturating_add(max_len).min(blob.len());
    BlobChunk {
        total_len: blob.len() as u64,
        data: blob[start..end].to_vec(),
    }
}

/// Wire request on `/proofmesh/blob/1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    /// blake3 of the blob.
    pub id: ContentId,
    /// First byte wanted.
    pub offset: u64,
    /// Most bytes wanted in this chunk.
    pub max_len: u32,
}

/// Wire response on `/proofmesh/blob/1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobResponse {
    /// A chunk.
    Chunk {
        /// Length of the whole blob.
        total_len: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The peer does not have this blob.
    NotFound,
    /// The peer failed to read it.
    Error(String),
}

/// Why a blob could not be fetched from one peer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    /// The peer does not have it.
    #[error("peer does not have blob {0}")]
    NotFound(ContentId),
    /// The peer reported a read failure.
    #[error("peer failed to read blob: {0}")]
    Remote(String),
    /// Larger than this node accepts.
    #[error("blob {id} is {size} bytes, over the {limit}-byte limit (raise max_blob_bytes)")]
    TooLarge {
        /// blob
        id: ContentId,
        /// claimed size
        size: u64,
        /// our limit
        limit: u64,
    },
    /// Chunks that do not fit together (changing total, empty or overlong chunk).
    #[error("inconsistent chunk for blob {id} at offset {offset}: {why}")]
    BadChunk {
        /// blob
        id: ContentId,
        /// offset requested
        offset: u64,
        /// what was wrong
        why: &'static str,
    },
    /// The assembled bytes do not hash to the requested id: the peer lied.
    #[error("blob {expected} failed verification: the bytes hash to {actual}")]
    HashMismatch {
        /// requested id
        expected: ContentId,
        /// hash of what arrived
        actual: ContentId,
    },
}

/// Sans-IO assembly of one blob from chunks, with the checks that keep a hostile peer from
/// making us allocate or loop without bound.
#[derive(Debug)]
pub struct BlobAssembler {
    id: ContentId,
    max_blob_bytes: u64,
    total_len: Option<u64>,
    data: Vec<u8>,
}

impl BlobAssembler {
    /// Start fetching `id`, refusing blobs over `max_blob_bytes`.
    pub fn new(id: ContentId, max_blob_bytes: u64) -> Self {
        BlobAssembler {
            id,
            max_blob_bytes,
            total_len: None,
            data: Vec::new(),
        }
    }

    /// The offset of the next chunk to request, or `None` when complete.
    pub fn next_offset(&self) -> Option<u64> {
        match self.total_len {
            Some(total) if self.data.len() as u64 >= total => None,
            _ => Some(self.data.len() as u64),
        }
    }

    /// Feed the response to the request for [`Self::next_offset`].
    pub fn push(&mut self, response: BlobResponse) -> Result<(), BlobError> {
        let offset = self.data.len() as u64;
        let (total_len, data) = match response {
            BlobResponse::Chunk { total_len, data } => (total_len, data),
            BlobResponse::NotFound => return Err(BlobError::NotFound(self.id)),
            BlobResponse::Error(e) => return Err(BlobError::Remote(e)),
        };
        if total_len > self.max_blob_bytes {
            return Err(BlobError::TooLarge {
                id: self.id,
                size: total_len,
                limit: self.max_blob_bytes,
            });
        }
        let bad = |why| {
            Err(BlobError::BadChunk {
                id: self.id,
                offset,
                why,
            })
        };
        match self.total_len {
            None => self.total_len = Some(total_len),
            Some(t) if t != total_len => return bad("total length changed between chunks"),
            Some(_) => {}
        }
        if data.is_empty() && offset < total_len {
            return bad("empty chunk before the end");
        }
        if offset + data.len() as u64 > total_len {
            return bad("chunk runs past the end");
        }
        if self.data.is_empty() {
            // Bounded by max_blob_bytes, checked above.
            self.data
                .reserve_exact(usize::try_from(total_len).unwrap_or(0));
        }
        self.data.extend_from_slice(&data);
        Ok(())
    }

    /// The verified blob, once [`Self::next_offset`] is `None`.
    pub fn finish(self) -> Result<Vec<u8>, BlobError> {
        let actual = ContentId::of_bytes(&self.data);
        if actual != self.id {
            return Err(BlobError::HashMismatch {
                expected: self.id,
                actual,
            });
        }
        Ok(self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(
        provider: &dyn BlobProvider,
        id: ContentId,
        chunk: usize,
    ) -> Result<Vec<u8>, BlobError> {
        let mut asm = BlobAssembler::new(id, 1 << 20);
        while let Some(offset) = asm.next_offset() {
            let resp = match provider.read_chunk(&id, offset, chunk) {
                Ok(Some(c)) => BlobResponse::Chunk {
                    total_len: c.total_len,
                    data: c.data,
                },
                Ok(None) => BlobResponse::NotFound,
                Err(e) => BlobResponse::Error(e.to_string()),
            };
            asm.push(resp)?;
        }
        asm.finish()
    }

    #[test]
    fn assembles_and_verifies_chunks() {
        let p = MemoryBlobProvider::new();
        let blob: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let id = p.insert(blob.clone());
        assert_eq!(fetch(&p, id, 999).unwrap(), blob);
        assert_eq!(
            fetch(&p, ContentId::of_bytes(b"x"), 999),
            Err(BlobError::NotFound(ContentId::of_bytes(b"x")))
        );
        let empty = p.insert(vec![]);
        assert_eq!(fetch(&p, empty, 10).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn refuses_lies() {
        let id = ContentId::of_bytes(b"hello");
        let mut asm = BlobAssembler::new(id, 100);
        asm.push(BlobResponse::Chunk {
            total_len: 5,
            data: b"hellp".to_vec(),
        })
        .unwrap();
        assert!(matches!(asm.finish(), Err(BlobError::HashMismatch { .. })));

        let mut asm = BlobAssembler::new(id, 4);
        assert!(matches!(
            asm.push(BlobResponse::Chunk {
                total_len: 5,
                data: vec![]
            }),
            Err(BlobError::TooLarge { .. })
        ));

        let mut asm = BlobAssembler::new(id, 100);
        asm.push(BlobResponse::Chunk {
            total_len: 5,
            data: b"he".to_vec(),
        })
        .unwrap();
        assert!(matches!(
            asm.push(BlobResponse::Chunk {
                total_len: 6,
                data: b"l".to_vec()
            }),
            Err(BlobError::BadChunk { .. })
        ));

        let mut asm = BlobAssembler::new(id, 100);
        assert!(matches!(
            asm.push(BlobResponse::Chunk {
                total_len: 5,
                data: vec![]
            }),
            Err(BlobError::BadChunk { .. })
        ));
    }
}
