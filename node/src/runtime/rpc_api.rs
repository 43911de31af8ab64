//! The RPC server's [`NodeApi`] over a running node: submissions go through the core task
//! (validated, stored before the answer, gossiped, fed to the local matchmaker); reads are
//! answered from the store by [`StoreApi`]'s logic; blobs missing locally are fetched from peers.

use super::{Api, NodeError};
use crate::network::BlobChunk;
use crate::rpc::{
    ApiError, NodeApi, NodeInfo, OperatorInfo, Quote, ResultInfo, StoreApi, SubmitOutcome,
    SubmitRequest, TaskInfo, TaskQuery, WorkflowListing, WorkflowStatus,
};
use proofmesh_protocol::{ContentId, Workflow, WorkflowId};
use tokio::sync::broadcast;

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::InvalidWorkflow(e) => ApiError::Invalid(format!("invalid workflow: {e}")),
            NodeError::UnknownWorkflow(id) => ApiError::UnknownWorkflow(id),
            refused @ NodeError::CancelRefused { .. } => ApiError::Invalid(refused.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl Api {
    /// The store-only API answers every read.
    fn reads(&self) -> StoreApi {
        let api = StoreApi::new(self.store.clone(), self.public_key, self.info.clone());
        if self.hears_adverts {
            api
        } else {
            api.blind_to_operators()
        }
    }
}

#[async_trait::async_trait]
impl NodeApi for Api {
    async fn submit(&self, request: SubmitRequest) -> Result<SubmitOutcome, ApiError> {
        let reads = self.reads();
        let (id, new, tasks, unmatched) = match request {
            SubmitRequest::Workflow(workflow) => {
                let tasks = workflow.tasks.len() as u64;
                let known = self.store.has_workflow(&workflow.id())?;
                let unmatched = reads.unmatched(&workflow)?;
                let id = Api::submit(self, workflow).await?;
                (id, !known, tasks, unmatched)
            }
            SubmitRequest::Submission(s) => {
                let tasks = s.workflow.tasks.len() as u64;
                let unmatched = reads.unmatched(&s.workflow)?;
                let (id, new) = self.submit_submission(*s).await?;
                (id, new, tasks, unmatched)
            }
        };
        Ok(SubmitOutcome {
            id: id.to_hex(),
            new,
            tasks,
            unmatched,
        })
    }

    async fn status(&self, id: WorkflowId) -> Result<WorkflowStatus, ApiError> {
        NodeApi::status(&self.reads(), id).await
    }

    fn changes(&self) -> broadcast::Receiver<WorkflowId> {
        self.notifier.changes.subscribe()
    }

    async fn result(&self, id: WorkflowId) -> Result<ResultInfo, ApiError> {
        NodeApi::result(&self.reads(), id).await
    }

    async fn blob(
        &self,
        id: ContentId,
        offset: u64,
        max_len: usize,
    ) -> Result<BlobChunk, ApiError> {
        if !self.store.has_blob(&id)? {
            self.fetch_blob(id)
                .await
                .map_err(|_| ApiError::UnknownBlob(id))?;
        }
        NodeApi::blob(&self.reads(), id, offset, max_len).await
    }

    async fn cancel(
        &self,
        id: WorkflowId,
        owner_eth_signature: Option<Vec<u8>>,
    ) -> Result<(), ApiError> {
        Ok(Api::cancel(self, id, owner_eth_signature).await?)
    }

    async fn operators(&self) -> Result<Vec<OperatorInfo>, ApiError> {
        NodeApi::operators(&self.reads()).await
    }

    async fn quote(&self, workflow: Workflow) -> Result<Quote, ApiError> {
        NodeApi::quote(&self.reads(), workflow).await
    }

    async fn tasks(&self, id: WorkflowId, query: TaskQuery) -> Result<Vec<TaskInfo>, ApiError> {
        NodeApi::tasks(&self.reads(), id, query).await
    }

    async fn workflows(
        &self,
        state: Option<String>,
        limit: usize,
    ) -> Result<Vec<WorkflowListing>, ApiError> {
        NodeApi::workflows(&self.reads(), state, limit).await
    }

    async fn node_info(&self) -> Result<NodeInfo, ApiError> {
        let mut info = NodeApi::node_info(&self.reads()).await?;
        if info.roles.iter().any(|r| r == "matchmaker") {
            let live = self.live_matchmakers().await?;
            info.live_matchmakers = Some(live.iter().map(|k| k.to_hex()).collect());
        }
        Ok(info)
    }
}
