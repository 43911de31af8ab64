//! The node runtime: joins the store, the network, the RPC server and the roles into one
//! running peer (foundry's `anvil::try_spawn` shape: the binary is a thin layer, tests spawn
//! whole nodes in-process).
//!
//! [`Node::spawn`] opens the store, loads or creates the node key, builds the metrics registry,
//! starts the network and one core task that owns all node state (see [`core_loop`]). The
//! returned [`NodeHandle`] exposes addresses and identity, submits workflows and reads status;
//! dropping it (or [`NodeHandle::shutdown`]) stops everything.
//!
//! - [`options`]: what a node needs to start.
//! - [`view`]: every node's gossip-fed view of workflows and tasks (status works anywhere).
//! - [`matchmaking`]: the matchmaker role (event log, replay, live set, decisions).
//! - [`operating`]: the operator role (leases, attempts, results).
//! - [`verify`]: result prechecks (output hash, proof verification) and the replayable checker.
//! - [`blobs`]: the operator's blob store backed by the node's store.
//! - [`settlement`]: the hook on-chain settlement plugs into.
//! - `pruning`: the store's retention of finished workflows, run in the background.
//! - [`metrics`]: the runtime's Prometheus metrics.

pub mod blobs;
pub(crate) mod cancel;
pub(crate) mod catch_up;
pub(crate) mod core_loop;
pub(crate) mod matchmaking;
pub mod metrics;
pub(crate) mod operating;
pub mod options;
mod pruning;
mod rpc_api;
pub mod settlement;
pub mod verify;
pub(crate) mod view;

pub use options::{
    MatchmakerOptions, NodeOptions, OperatorOptions, DEFAULT_SNAPSHOT_EVERY_EVENTS, SYNC_DELAY_ENV,
};
pub use settlement::{NoSettlement, Settlement};

use crate::network::{self, Client, Multiaddr, PeerId};
use crate::store::{Store, StoreError, TaskRecord, TaskState, WorkflowRecord, WorkflowState};
use core_loop::{Core, Shared};
use prometheus_client::registry::Registry;
use proofmesh_operator::Operator;
use proofmesh_protocol::messages::{EscrowRef, EthAddress, Submission};
use proofmesh_protocol::{
    Envelope, Keypair, PublicKey, TaskIndex, Workflow, WorkflowError, WorkflowId,
};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// File name of the node key inside the data directory.
pub const KEY_FILE: &str = "node.key";

/// Why a node could not start or a request failed. Messages say what to change.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key file is unreadable or malformed.
    #[error("node key {path}: {reason} (delete it to generate a new identity, or point data_dir elsewhere)")]
    Key {
        /// The key file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The network could not start.
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    /// The operator role could not start.
    #[error("operator role: {0}")]
    Operator(String),
    /// The RPC server could not start.
    #[error("rpc: {0}")]
    Rpc(String),
    /// A submitted workflow is invalid.
    #[error("invalid workflow: {0}")]
    InvalidWorkflow(WorkflowError),
    /// The workflow was accepted but is not in the store (a store failure was logged).
    #[error("workflow {0} could not be stored; see the node log")]
    NotStored(WorkflowId),
    /// The node is shutting down.
    #[error("the node has stopped")]
    Stopped,
    /// A cancellation names a workflow this node does not hold.
    #[error("unknown workflow {0}")]
    UnknownWorkflow(WorkflowId),
    /// A cancellation this node refuses (not the requester's, or the workflow has ended).
    #[error("cannot cancel workflow {workflow}: {reason}")]
    CancelRefused {
        /// The workflow.
        workflow: WorkflowId,
        /// Why, naming what is wrong.
        reason: String,
    },
}

/// A change in some workflow, for progress subscriptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A workflow was accepted or finished.
    Workflow {
        /// Workflow.
        workflow: WorkflowId,
        /// Its new state.
        state: WorkflowState,
    },
    /// A task changed state.
    Task {
        /// Workflow.
        workflow: WorkflowId,
        /// Task.
        task: TaskIndex,
        /// Its new state.
        state: TaskState,
    },
}

/// Requests to the core task.
#[derive(Debug)]
pub(crate) enum Command {
    /// A submission (owner `None`: this node's key, submitted now).
    Submit {
        workflow: Workflow,
        owner: Option<PublicKey>,
        owner_eth: Option<EthAddress>,
        escrow: Option<EscrowRef>,
        submitted_at_ms: Option<u64>,
        reply: oneshot::Sender<Result<(WorkflowId, bool), NodeError>>,
    },
    LiveMatchmakers {
        reply: oneshot::Sender<Vec<PublicKey>>,
    },
    /// Its requester cancels a workflow (`owner_eth_signature`: see
    /// [`proofmesh_protocol::messages::WorkflowCancel`]).
    Cancel {
        workflow: WorkflowId,
        owner_eth_signature: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    /// Fetch a blob from peers into the store.
    FetchBlob {
        id: proofmesh_protocol::ContentId,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
}

/// Progress fan-out: typed events for in-process subscribers and workflow ids for the RPC's
/// `pm_progress` subscriptions.
#[derive(Clone, Debug)]
pub(crate) struct Notifier {
    pub progress: broadcast::Sender<Progress>,
    pub changes: broadcast::Sender<WorkflowId>,
    /// The core's notifier holds progress back until the store has synced (see
    /// [`Notifier::held`]); others send at once.
    pub held: Option<Arc<Mutex<Vec<Progress>>>>,
}

impl Notifier {
    pub fn send(&self, p: Progress) {
        if let Some(held) = &self.held {
            held.lock().unwrap_or_else(PoisonError::into_inner).push(p);
            return;
        }
        self.deliver(p);
    }

    fn deliver(&self, p: Progress) {
        let id = match &p {
            Progress::Workflow { workflow, .. } | Progress::Task { workflow, .. } => *workflow,
        };
        let _ = self.progress.send(p);
        let _ = self.changes.send(id);
    }

    /// A notifier that holds what it is sent until [`Notifier::release`].
    pub fn held(&self) -> Notifier {
        Notifier {
            progress: self.progress.clone(),
            changes: self.changes.clone(),
            held: Some(Arc::default()),
        }
    }

    /// Whether held progress reports a durable fact (a result, a workflow's state), which
    /// must not be announced before the store syncs.
    pub fn holds_durable(&self) -> bool {
        let Some(held) = &self.held else { return false };
        held.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|p| match p {
                Progress::Workflow { .. } => true,
                Progress::Task { state, .. } => {
                    matches!(state, TaskState::Done { .. } | TaskState::Failed)
                }
            })
    }

    /// Send everything held.
    pub fn release(&self) {
        let Some(held) = &self.held else { return };
        let out = std::mem::take(&mut *held.lock().unwrap_or_else(PoisonError::into_inner));
        for p in out {
            self.deliver(p);
        }
    }
}

/// A workflow and the state of each of its tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowStatus {
    /// The stored workflow.
    pub record: WorkflowRecord,
    /// Every task's record, by index (pending tasks included).
    pub tasks: Vec<TaskRecord>,
}

impl WorkflowStatus {
    /// Tasks in state `label` (`pending`, `assigned`, `running`, `done`, ...).
    pub fn count(&self, label: &str) -> usize {
        self.tasks
            .iter()
            .filter(|t| t.state.label() == label)
            .count()
    }
}

/// Cheap-to-clone access to a running node, for the RPC server, tools and tests. It holds no
/// network handle, so keeping a clone never keeps a stopped node's network alive.
#[derive(Clone, Debug)]
pub struct Api {
    commands: mpsc::Sender<Command>,
    store: Store,
    notifier: Notifier,
    public_key: PublicKey,
    peer_id: PeerId,
    pub(crate) info: crate::rpc::NodeInfo,
    /// Whether this node follows operator adverts (a matchmaker or gateway does; a node that
    /// only operates does not, so it cannot say which stages no operator could run).
    pub(crate) hears_adverts: bool,
}

impl Api {
    /// Validate, durably store and gossip a workflow (owned by this node's key); returns its id
    /// once it is stored.
    pub async fn submit(&self, workflow: Workflow) -> Result<WorkflowId, NodeError> {
        self.submit_with(workflow, None, None).await
    }

    /// Cancels `workflow` for its requester: this node checks that it may (it owns the
    /// workflow, or `owner_eth_signature` is the paying account's, see
    /// [`proofmesh_protocol::messages::WorkflowCancel`]), then gossips the cancellation and
    /// hands it to every matchmaker it knows. The active matchmaker fails the workflow; its
    /// status says so once that is heard.
    pub async fn cancel(
        &self,
        workflow: WorkflowId,
        owner_eth_signature: Option<Vec<u8>>,
    ) -> Result<(), NodeError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Cancel {
                workflow,
                owner_eth_signature,
                reply,
            })
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// As [`Self::submit`], with the requester's Ethereum address and escrow.
    pub async fn submit_with(
        &self,
        workflow: Workflow,
        owner_eth: Option<EthAddress>,
        escrow: Option<EscrowRef>,
    ) -> Result<WorkflowId, NodeError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Submit {
            workflow,
            owner: None,
            owner_eth,
            escrow,
            submitted_at_ms: None,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?.map(|(id, _)| id)
    }

    /// Submit a complete submission built by a client; returns its id and whether it was new.
    pub async fn submit_submission(&self, s: Submission) -> Result<(WorkflowId, bool), NodeError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Submit {
            workflow: s.workflow,
            owner: Some(s.owner),
            owner_eth: s.owner_eth,
            escrow: s.escrow,
            submitted_at_ms: Some(s.submitted_at_ms),
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Fetch blob `id` from peers into this node's store (no-op when it is there already).
    pub async fn fetch_blob(&self, id: proofmesh_protocol::ContentId) -> Result<(), NodeError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::FetchBlob { id, reply })
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// A workflow's record and task states, or `None` if this node has not seen it.
    pub fn status(&self, id: &WorkflowId) -> Result<Option<WorkflowStatus>, StoreError> {
        let Some(record) = self.store.workflow(id)? else {
            return Ok(None);
        };
        let mut tasks = vec![TaskRecord::default(); record.submission.workflow.tasks.len()];
        for (i, rec) in self.store.tasks(id)? {
            if let Some(slot) = tasks.get_mut(i as usize) {
                *slot = rec;
            }
        }
        Ok(Some(WorkflowStatus { record, tasks }))
    }

    /// Progress events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Progress> {
        self.notifier.progress.subscribe()
    }

    /// The live matchmakers this node's matchmaker sees (empty if it is not one).
    pub async fn live_matchmakers(&self) -> Result<Vec<PublicKey>, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::LiveMatchmakers { reply })
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// The store (read it; the core task writes it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This node's protocol key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// This node's libp2p peer id (the same key).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }
}

/// A running node. Dropping it stops the node (without waiting); [`NodeHandle::shutdown`]
/// stops it and waits until every task has ended and the store is closed.
pub struct NodeHandle {
    api: Api,
    listen_addrs: Vec<Multiaddr>,
    rpc_addr: Option<std::net::SocketAddr>,
    registry: Arc<Mutex<Registry>>,
    /// `None` once shutting down: the network stops when its last client is dropped.
    client: Option<Client>,
    cancel: CancellationToken,
    /// Cancelled before `cancel` by [`NodeHandle::crash`].
    crash: CancellationToken,
    supervisor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.api.peer_id)
            .field("listen_addrs", &self.listen_addrs)
            .field("rpc_addr", &self.rpc_addr)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// The API (clone it freely).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// p2p addresses, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// The RPC server's address, if one runs.
    pub fn rpc_addr(&self) -> Option<std::net::SocketAddr> {
        self.rpc_addr
    }

    /// This node's protocol key.
    pub fn public_key(&self) -> PublicKey {
        self.api.public_key
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.api.peer_id
    }

    /// The shared metrics registry (network, libp2p and runtime metrics).
    pub fn registry(&self) -> Arc<Mutex<Registry>> {
        self.registry.clone()
    }

    /// The network client, while the node runs.
    fn client(&self) -> Result<&Client, NodeError> {
        self.client.as_ref().ok_or(NodeError::Stopped)
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerId>, NodeError> {
        Ok(self.client()?.peers().await?)
    }

    /// Peers known to subscribe to gossip `topic`.
    pub async fn topic_peers(&self, topic: network::Topic) -> Result<Vec<PeerId>, NodeError> {
        Ok(self.client()?.topic_peers(topic).await?)
    }

    /// Dial another node.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        Ok(self.client()?.dial(addr).await?)
    }

    /// Stop the node as a crash would, for fault-injection tests: unlike
    /// [`NodeHandle::shutdown`], an operator hands back none of the attempts it holds (they
    /// wait for its heartbeats to stop being missed, and an accepted one is slashed at its
    /// deadline). The store is closed afterwards, as after a shutdown.
    pub async fn crash(self) {
        self.crash.cancel();
        self.shutdown().await;
    }

    /// Stop the node and wait until it has fully stopped (the store is closed afterwards, so
    /// the same data directory can be opened again). An operator first hands back the attempts
    /// it holds, so they move at once and nobody is slashed for them.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.client = None;
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.await;
        }
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Load `<dir>/node.key`, or create it (mode 0600) with a fresh key.
pub fn load_or_create_key(dir: &Path) -> Result<Keypair, NodeError> {
    let path = dir.join(KEY_FILE);
    let err = |reason: String| NodeError::Key {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Keypair::from_file_string(&text).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            let keypair = Keypair::generate();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| err(e.to_string()))?;
            file.write_all(keypair.to_file_string().as_bytes())
                .map_err(|e| err(e.to_string()))?;
            file.sync_all().map_err(|e| err(e.to_string()))?;
            Ok(keypair)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The node runtime.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Start a node in-process with the default (no-op) settlement.
    pub async fn spawn(options: NodeOptions) -> Result<NodeHandle, NodeError> {
        Self::spawn_with(options, Arc::new(NoSettlement)).await
    }

    /// Start a node with a settlement implementation (the chain integration).
    pub async fn spawn_with(
        options: NodeOptions,
        settlement: Arc<dyn Settlement>,
    ) -> Result<NodeHandle, NodeError> {
        let store = {
            let dir = options.data_dir.clone();
            let cache = options.store_cache_bytes;
            tokio::task::spawn_blocking(move || Store::open_with_cache(&dir, cache))
                .await
                .map_err(|e| NodeError::Rpc(e.to_string()))??
        };
        let keypair = match options.keypair.clone() {
            Some(k) => k,
            None => load_or_create_key(&options.data_dir)?,
        };
        let me = keypair.public();
        let mut registry = Registry::default();
        let runtime_metrics = metrics::RuntimeMetrics::register(&mut registry);

        let mut net_config = options.network.clone();
        net_config.blobs = Arc::new(store.clone());
        // A node that only operates follows little on gossip (see `Topic::OPERATOR`).
        let lean = options.matchmaker.is_none() && options.operator.is_some();
        if lean {
            net_config.subscriptions = network::Topic::OPERATOR.to_vec();
            // Found through matchmakers, never by other operators (`NetworkConfig::kad_server`).
            net_config.kad_server = false;
        }
        let verified_results = verify::VerifiedResults::default();
        if options.matchmaker.is_some() {
            // A result's own signature is checked where its envelope's was, on the task of the
            // connection it came on, in parallel with other connections' results; the core
            // finds it verified. On the core it took ~50 µs each in series (a round's 64 results
            // at 32 operators: ~3 ms of the core's time; the makespan moved within its noise,
            // bench/e2e.md).
            let verified = verified_results.clone();
            net_config.precheck_message =
                Some(Arc::new(move |message: &proofmesh_protocol::Message| {
                    if let proofmesh_protocol::Message::Result(result) = message {
                        let _ = verified.verify(result);
                    }
                }));
        }
        let clock = net_config.clock.clone();
        let domain = net_config.domain;
        let (client, net_events, event_loop) = network::new(net_config, &keypair, &mut registry)?;
        let event_loop = tokio::spawn(event_loop.run());

        let cancel = CancellationToken::new();
        let crash = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let (publish_tx, publish_rx) = mpsc::unbounded_channel::<(Envelope, Option<PeerId>)>();
        let (commands_tx, commands_rx) = mpsc::channel(1024);
        let notifier = Notifier {
            progress: broadcast::channel(4096).0,
            changes: broadcast::channel(4096).0,
            held: None,
        };

        let sh = Shared {
            keypair: keypair.clone(),
            me,
            domain,
            clock,
            ttl_ms: options.message_ttl.as_millis() as u64,
            // Group commit: the core syncs once per batch of messages, before announcing any.
            // One write transaction per batch, too (background work gets unbatched handles).
            // A node that only operates keeps no record of its own (see `copies_only`): its
            // writes never wait for a sync.
            store: copies_only(&store, lean).batched(),
            client: client.clone(),
            metrics: runtime_metrics,
            tracker: tracker.clone(),
            cancel: cancel.clone(),
            crash: crash.clone(),
            internal: internal_tx,
            publish: publish_tx,
            verified_results,
            trusted_matchmakers: (!options.trusted_matchmakers.is_empty())
                .then(|| Arc::new(options.trusted_matchmakers.iter().copied().collect())),
            sync_delay: options.store_sync_delay,
        };
        if sh.trusted_matchmakers.is_none() {
            tracing::warn!("network.matchmakers is empty: any node's verdicts and assignments are believed (fine for a closed development network only)");
        }
        // Publications leave in the order they were emitted.
        sh.spawn(publisher(client.clone(), publish_rx));
        if let Some(mut retention) = options.retention.clone() {
            retention.require_settled = settlement.settles_on_chain();
            // Before any work comes in: a blob put from now on is kept its grace.
            store.track_blob_puts(retention.blob_grace);
            sh.spawn(pruning::run(
                store.clone(),
                retention,
                options.prune_every,
                sh.clock.clone(),
                sh.metrics.clone(),
            ));
        }

        let mut view = {
            let sh = sh.clone();
            tokio::task::spawn_blocking(move || view::View::load(&sh))
                .await
                .map_err(|e| NodeError::Rpc(e.to_string()))??
        };
        view.set_polled(lean);
        let mm = match options.matchmaker.clone() {
            Some(opts) => {
                let store = store.clone();
                Some(
                    tokio::task::spawn_blocking(move || {
                        matchmaking::MatchmakerRole::start(&store, opts, me)
                    })
                    .await
                    .map_err(|e| NodeError::Rpc(e.to_string()))??,
                )
            }
            None => None,
        };
        let op = match options.operator.clone() {
            Some(mut opts) => {
                if opts.config.work_dir.as_os_str().is_empty() {
                    opts.config.work_dir = options.data_dir.join("operator");
                }
                let blobs: Arc<dyn proofmesh_operator::BlobStore> =
                    // Outputs are synced by the core before the result announcing them leaves,
                    // unless this node only operates (then the matchmaker's copy is the record).
                    Arc::new(blobs::StoreBlobs(copies_only(&store, lean)));
                let (config, key, capacity) =
                    (opts.config.clone(), keypair.clone(), opts.capacity.clone());
                let operator = tokio::task::spawn_blocking(move || match capacity {
                    Some(capacity) => {
                        let discovery = proofmesh_operator::Discovery {
                            capacity,
                            gpu_source: proofmesh_operator::GpuSource::Config,
                            notes: Vec::new(),
                        };
                        Operator::with_discovery(config, key, Some(blobs), discovery)
                    }
                    None => Operator::start(config, key, Some(blobs)),
                })
                .await
                .map_err(|e| NodeError::Operator(e.to_string()))?
                .map_err(|e| NodeError::Operator(e.to_string()))?;
                Some(operating::OperatorRole::new(operator, opts))
            }
            None => None,
        };
        let operator_for_shutdown = op.as_ref().map(|o| o.operator.clone());

        let listen_addrs = client.listen_addrs().await?;
        let peer_id = client.local_peer_id();
        let mut roles = Vec::new();
        if mm.is_some() {
            roles.push("matchmaker".to_owned());
        }
        if op.is_some() {
            roles.push("operator".to_owned());
        }
        let info = crate::rpc::NodeInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            node_key: me.to_hex(),
            peer_id: Some(peer_id.to_string()),
            network_id: domain.network_id,
            chain_id: domain.chain_id,
            roles,
            listen: listen_addrs.iter().map(|a| a.to_string()).collect(),
            peers: None,
            chain_height: None,
            workflows: 0,
            live_matchmakers: None,
        };
        let api = Api {
            commands: commands_tx,
            store: store.clone(),
            notifier: notifier.clone(),
            public_key: me,
            peer_id,
            info,
            hears_adverts: !lean,
        };
        let node_metrics = crate::metrics::NodeMetrics::register(&mut registry);
        let registry = Arc::new(Mutex::new(registry));

        let rpc = match &options.rpc {
            Some(config) => Some(
                crate::rpc::spawn(
                    config,
                    Arc::new(api.clone()),
                    registry.clone(),
                    Some(node_metrics),
                )
                .await
                .map_err(|e| NodeError::Rpc(e.to_string()))?,
            ),
            None => None,
        };
        let rpc_addr = rpc.as_ref().map(|r| r.local_addr());

        let core = Core::new(sh, view, mm, op, settlement, notifier);
        let core_task = tokio::spawn(core.run(net_events, commands_rx, internal_rx));
        let supervisor = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let _ = core_task.await;
                cancel.cancel();
                if let Some(rpc) = rpc {
                    rpc.stop().await;
                }
                tracker.close();
                tracker.wait().await;
                if let Some(operator) = operator_for_shutdown {
                    operator.shutdown().await;
                }
                // Every client clone is gone now; the event loop ends and releases the store.
                let _ = event_loop.await;
            })
        };
        tracing::info!(peer = %peer_id, key = %me, addrs = ?listen_addrs, "node started");
        Ok(NodeHandle {
            api,
            listen_addrs,
            rpc_addr,
            registry,
            client: Some(client),
            cancel,
            crash,
            supervisor: Some(supervisor),
        })
    }
}

async fn publisher(client: Client, mut rx: mpsc::UnboundedReceiver<(Envelope, Option<PeerId>)>) {
    while let Some((envelope, has_it)) = rx.recv().await {
        let published = match has_it {
            Some(peer) => client.publish_beyond(&envelope, peer).await,
            None => client.publish(&envelope).await,
        };
        if let Err(e) = published {
            tracing::debug!(kind = ?envelope.kind, error = %e, "publish failed");
        }
    }
}

/// The store handle a node writes its state through. Per task, what a node that only
/// operates (`lean`) stores is a copy of what matchmakers hold durably: its dependencies'
/// results (pushed again over a new connection, or caught up) and its own outputs (a
/// matchmaker stores each output durably, with its verdict, before accepting it;
/// `matchmaking::spawn_precheck`). So those writes are lazy (made durable by the periodic
/// flush), never the cause of an fsync between a finished task and its result leaving, or an
/// assignment arriving and its acceptance: in the 1,025-task pipeline each operator's core
/// was waiting on an fsync (~0.8 ms each) for about a fifth of the run. So are workflow
/// definitions it received (`View::submission`); one submitted through its own RPC is durable.
fn copies_only(store: &Store, lean: bool) -> Store {
    if lean {
        store.lazy()
    } else {
        store.deferred()
    }
}
