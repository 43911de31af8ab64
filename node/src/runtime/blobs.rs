//! The operator's executor reads inputs from and writes outputs to the node's own store, so a
//! task's output is served to peers (and survives restarts) the moment it is produced.

use crate::store::{Store, StoreError};
use proofmesh_operator::{BlobError, BlobStore};
use proofmesh_protocol::ContentId;
use std::path::PathBuf;

/// [`BlobStore`] over the node's [`Store`].
#[derive(Clone, Debug)]
pub struct StoreBlobs(pub Store);

fn io(store: &Store, e: StoreError) -> BlobError {
    BlobError::Io {
        path: PathBuf::from(store.dir()),
        source: std::io::Error::other(e.to_string()),
    }
}

impl BlobStore for StoreBlobs {
    fn get(&self, id: &ContentId) -> Result<Vec<u8>, BlobError> {
        let bytes = self
            .0
            .blob(id)
            .map_err(|e| io(&self.0, e))?
            .ok_or(BlobError::NotFound(*id))?;
        proofmesh_operator::blob::check_bytes(id, &bytes)?;
        Ok(bytes)
    }

    fn put(&self, bytes: &[u8]) -> Result<ContentId, BlobError> {
        self.0.put_blob(bytes).map_err(|e| io(&self.0, e))
    }

    fn contains(&self, id: &ContentId) -> Result<bool, BlobError> {
        self.0.has_blob(id).map_err(|e| io(&self.0, e))
    }
}
