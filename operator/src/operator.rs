//! [`Operator`]: discovery, leases and execution behind one cloneable handle, which is what the
//! node embeds. Typical flow for an [`Assignment`]: [`Operator::reserve`] (refusal -> declare a
//! `Refused` failure instead of accepting), sign the acceptance, then [`Operator::run`].

use crate::blob::{BlobStore, FsBlobStore};
use crate::config::OperatorConfig;
use crate::discovery::{discover, Discovery};
use crate::executor::{Executor, ExecutorError, TaskReport, TaskSpec};
use crate::lease::{Admission, Lease, LeaseError, LeaseManager, LeaseRequest};
use proofmesh_protocol::messages::{Assignment, Capacity, FailureCause};
use proofmesh_protocol::{Keypair, Program, PublicKey};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why an operator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// Executor setup (config, work dir).
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    /// The blob store cannot be opened.
    #[error(transparent)]
    Blob(#[from] crate::blob::BlobError),
}

/// The operator role of a node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Operator {
    discovery: Arc<Discovery>,
    leases: LeaseManager,
    executor: Executor,
}

impl Operator {
    /// Discover resources (blocking: may run `nvidia-smi`; call from `spawn_blocking` in async
    /// code) and build the operator. `blobs: None` opens an [`FsBlobStore`] at the config's
    /// `blob_dir`.
    pub fn start(
        config: OperatorConfig,
        keypair: Keypair,
        blobs: Option<Arc<dyn BlobStore>>,
    ) -> Result<Self, OperatorError> {
        let discovery = discover(&config.resources, &config.work_dir);
        Self::with_discovery(config, keypair, blobs, discovery)
    }

    /// As [`Operator::start`] with an already known capacity (tests, or a cached discovery).
    pub fn with_discovery(
        config: OperatorConfig,
        keypair: Keypair,
        blobs: Option<Arc<dyn BlobStore>>,
        discovery: Discovery,
    ) -> Result<Self, OperatorError> {
        let blobs = match blobs {
            Some(b) => b,
            None => Arc::new(FsBlobStore::open(config.blob_dir())?),
        };
        let leases = LeaseManager::with_queue(
            discovery.capacity.clone(),
            config.max_concurrent,
            config.queue_depth,
        );
        let executor = Executor::new(config, keypair, blobs)?;
        Ok(Operator {
            discovery: Arc::new(discovery),
            leases,
            executor,
        })
    }

    /// What this operator advertises.
    pub fn capacity(&self) -> &Capacity {
        &self.discovery.capacity
    }

    /// How discovery went (GPU source, failed probes).
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// Programs it can run (for the advert).
    pub fn programs(&self) -> Vec<Program> {
        self.executor.config().program_list()
    }

    /// The signing key's public half.
    pub fn public_key(&self) -> PublicKey {
        self.executor.operator()
    }

    /// The lease manager.
    pub fn leases(&self) -> &LeaseManager {
        &self.leases
    }

    /// The executor.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Lease what an assignment reserves, or refuse naming the resource.
    pub fn reserve(&self, assignment: &Assignment) -> Result<Lease, LeaseError> {
        self.leases.acquire(&LeaseRequest::new(
            assignment.gpus.clone(),
            assignment.resources,
        ))
    }

    /// Lease what an assignment reserves now; or, for one the matchmaker marked `queued`,
    /// queue it until running tasks free room (see [`LeaseManager::admit`]); or refuse naming
    /// the resource. An unqueued assignment that does not fit now is refused, not queued: its
    /// deadline allows for no wait.
    pub fn admit(&self, assignment: &Assignment) -> Result<Admission, LeaseError> {
        let request = LeaseRequest::new(assignment.gpus.clone(), assignment.resources);
        if assignment.queued {
            self.leases.admit(&request)
        } else {
            self.leases.acquire(&request).map(Admission::Now)
        }
    }

    /// Run an attempt under its lease.
    pub async fn run(&self, spec: TaskSpec, lease: Lease, cancel: CancellationToken) -> TaskReport {
        self.executor.run(spec, lease, cancel).await
    }

    /// Reserve and run; a refused reservation or an unconfigured program becomes a `Refused`
    /// failure report.
    pub async fn execute(
        &self,
        assignment: &Assignment,
        spec: TaskSpec,
        cancel: CancellationToken,
    ) -> TaskReport {
        if !self.executor.supports(&spec.program) {
            let why = format!(
                "program {}@{} is not configured",
                spec.program.name, spec.program.version
            );
            return crate::executor::report_failure(
                self.public_key(),
                &spec,
                FailureCause::Refused(why),
            );
        }
        match self.reserve(assignment) {
            Ok(lease) => self.run(spec, lease, cancel).await,
            Err(e) => crate::executor::report_failure(
                self.public_key(),
                &spec,
                FailureCause::Refused(e.to_string()),
            ),
        }
    }

    /// Stop persistent workers.
    pub async fn shutdown(&self) {
        self.executor.shutdown().await;
    }
}
