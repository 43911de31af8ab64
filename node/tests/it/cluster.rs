//! Whole nodes in one process, over real loopback sockets (port 0) and temp dirs: a gateway,
//! matchmakers and operators (running the operator crate's built-in `sleep` program) schedule
//! and run workflows end to end, survive restarts, a matchmaker's death and an operator's death.

use proofmesh_matchmaker::{active_matchmaker, routing_key};
use proofmesh_node::network::{self, Multiaddr, NetworkConfig, NetworkEvent, PeerId, Topic};
use proofmesh_node::rpc::NodeApi;
use proofmesh_node::runtime::{
    Api, Node, NodeHandle, NodeOptions, OperatorOptions, Progress, WorkflowStatus,
};
use proofmesh_node::store::{TaskState, WorkflowState};
use proofmesh_operator::{OperatorConfig, ProgramSpec};
use proofmesh_protocol::messages::{
    Assignment, Capacity, OperatorAdvert, SignedResult, Submission, SyncReply, TaskResult,
};
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::{
    ContentId, Domain, Envelope, Keypair, Message, PublicKey, Resources, Workflow, WorkflowId,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;
use tokio::time::{sleep, Instant};

pub(crate) const DOMAIN: Domain = Domain {
    network_id: 77,
    chain_id: 31337,
};
const WAIT: Duration = Duration::from_secs(40);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Gateway,
    Matchmaker,
    Operator,
}

/// Test options for a node of `role` (no RPC; operators run the built-in `sleep` and `noop`).
pub(crate) fn options(dir: &Path, role: Role, bootstrap: &[Multiaddr]) -> NodeOptions {
    let mut o = NodeOptions::test(dir, DOMAIN);
    o.network.bootstrap = bootstrap.to_vec();
    o.rpc = None;
    match role {
        Role::Gateway => o,
        Role::Matchmaker => o.with_test_matchmaker(),
        Role::Operator => {
            let config = OperatorConfig::new(dir.join("operator"))
                .with_program(
                    "sleep",
                    "1",
                    ProgramSpec::Builtin {
                        builtin: "sleep".into(),
                    },
                )
                .with_program(
                    "noop",
                    "1",
                    ProgramSpec::Builtin {
                        builtin: "noop".into(),
                    },
                );
            let mut op = OperatorOptions::new(config);
            op.capacity = Some(Capacity {
                cpu: 2,
                memory_mb: 4096,
                disk_mb: 10_000,
                gpus: Vec::new(),
            });
            op.heartbeat_interval = Duration::from_millis(200);
            op.advert_interval = Duration::from_secs(1);
            o.operator = Some(op);
            o
        }
    }
}

/// The advert of an operator with four cores that runs `noop@1` for free.
pub(crate) fn noop_advert(operator: PublicKey) -> OperatorAdvert {
    OperatorAdvert {
        operator,
        eth_address: None,
        capacity: Capacity {
            cpu: 4,
            memory_mb: 8192,
            disk_mb: 10_000,
            gpus: Vec::new(),
        },
        programs: vec![proofmesh_protocol::Program {
            name: "noop".into(),
            version: "1".into(),
        }],
        price_wei: 0,
        queue: 0,
        max_tasks: 0,
        trusts: Vec::new(),
    }
}

/// The wall clock in ms since the epoch (envelopes sent to real nodes expire against it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A result for attempt 1 of `task`, run and signed by `keypair` itself, naming `output`.
pub(crate) fn self_signed_result(
    keypair: &Keypair,
    workflow: WorkflowId,
    task: u32,
    output: &[u8],
) -> SignedResult {
    SignedResult::sign(
        keypair,
        TaskResult {
            workflow,
            task,
            attempt: 1,
            operator: keypair.public(),
            output: ContentId::of_bytes(output),
            output_bytes: output.len() as u64,
            started_ms: 1,
            finished_ms: 2,
            resources: proofmesh_protocol::Resources::default(),
            gpus: Vec::new(),
        },
    )
}

/// Attempt 1 of `task`, assigned at `now` for one core: accept within 30 s, done within 60 s.
pub(crate) fn attempt_one(
    workflow: WorkflowId,
    task: u32,
    operator: PublicKey,
    matchmaker: PublicKey,
    now: u64,
    queued: bool,
) -> Assignment {
    Assignment {
        workflow,
        task,
        attempt: 1,
        operator,
        gpus: vec![],
        resources: Resources {
            cpu: 1,
            memory_mb: 64,
            ..Resources::default()
        },
        accept_by_ms: now + 30_000,
        deadline_ms: now + 60_000,
        price_wei: 0,
        matchmaker,
        queued,
    }
}

/// A plain network peer, no node behind it, signing as `keypair`: a matchmaker or forger a
/// test drives by hand. Keep the events receiver for as long as the peer is used.
pub(crate) fn plain_peer(
    keypair: &Keypair,
    bootstrap: Vec<Multiaddr>,
) -> (network::Client, tokio::sync::mpsc::Receiver<NetworkEvent>) {
    let mut config = NetworkConfig::test(DOMAIN);
    config.bootstrap = bootstrap;
    let mut registry = prometheus_client::registry::Registry::default();
    network::spawn(config, keypair, &mut registry).expect("network starts")
}

/// A test workflow from its TOML text.
pub(crate) fn toml_workflow(text: &str) -> Workflow {
    spec::load(text, Format::Toml)
        .expect("valid test workflow")
        .0
}

/// Two `noop` tasks, the second taking the first's output: `made`, then `uses`.
pub(crate) fn made_then_used(name: &str) -> Workflow {
    let text = format!(
        "name = \"{name}\"\n[[task]]\nid = \"made\"\nprogram = \"noop@1\"\n\n[[task]]\nid = \"uses\"\nprogram = \"noop@1\"\ndeps = [\"made\"]\n"
    );
    toml_workflow(&text)
}

/// `workflow` submitted by `owner`, now, without escrow.
pub(crate) fn submitted_by(workflow: Workflow, owner: PublicKey) -> Submission {
    Submission {
        workflow,
        owner,
        owner_eth: None,
        escrow: None,
        submitted_at_ms: now_ms(),
    }
}

/// What a matchmaker pushes ahead of a workflow's first assignment to an operator: its
/// submission (by `owner`, now).
pub(crate) fn submission_push(workflow: Workflow, owner: PublicKey) -> Message {
    Message::SyncReply(SyncReply {
        workflows: Vec::new(),
        submissions: vec![submitted_by(workflow, owner)],
        more: false,
    })
}

/// Send `envelope` straight to `peer`, again until it is delivered (the connection may still
/// be forming): its answer, `None` for a bare acknowledgement.
pub(crate) async fn deliver(
    client: &network::Client,
    peer: PeerId,
    envelope: &Envelope,
) -> Option<(Envelope, Message)> {
    let deadline = Instant::now() + WAIT;
    loop {
        match client.send_direct(peer, envelope).await {
            Ok(answer) => return answer,
            Err(e) => {
                assert!(Instant::now() < deadline, "not delivered: {e}");
                sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Start a node on `options` again, retrying while a stopped one still holds the store (a
/// dropped node releases it asynchronously).
pub(crate) async fn spawn_again(options: impl Fn() -> NodeOptions) -> NodeHandle {
    for _ in 0..50 {
        match Node::spawn(options()).await {
            Ok(h) => return h,
            Err(_) => sleep(Duration::from_millis(100)).await,
        }
    }
    Node::spawn(options())
        .await
        .expect("node restarts on its data dir")
}

/// A matchmaker on `matchmaker`, and a test operator in `operator_dir` bootstrapped to it.
pub(crate) async fn matchmaker_and_operator(
    matchmaker: NodeOptions,
    operator_dir: &Path,
) -> (NodeHandle, NodeHandle) {
    let mm = Node::spawn(matchmaker).await.expect("matchmaker starts");
    let op = Node::spawn(options(operator_dir, Role::Operator, mm.listen_addrs()))
        .await
        .expect("operator starts");
    (mm, op)
}

/// The sum of a metric's samples (every label set) in a node's Prometheus registry.
pub(crate) fn metric(handle: &NodeHandle, name: &str) -> f64 {
    let mut text = String::new();
    let registry = handle.registry();
    let registry = registry.lock().expect("registry lock");
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("metrics encode");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Member {
    name: String,
    role: Role,
    dir: TempDir,
    handle: Option<NodeHandle>,
}

impl Member {
    fn api(&self) -> &Api {
        self.handle.as_ref().expect("node is running").api()
    }

    fn key(&self) -> PublicKey {
        self.handle.as_ref().expect("node is running").public_key()
    }

    async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }

    /// Stop as a crash would: an operator hands back nothing it holds.
    async fn crash(&mut self) {
        if let Some(h) = self.handle.take() {
            h.crash().await;
        }
    }
}

struct Cluster {
    members: Vec<Member>,
}

impl Cluster {
    /// Start nodes in order; each dials every node started before it (a full mesh).
    async fn start(roles: &[(&str, Role)]) -> Cluster {
        // `RUST_LOG=proofmesh_node=debug` shows what the nodes do when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut members: Vec<Member> = Vec::new();
        for (name, role) in roles {
            let dir = tempfile::tempdir().expect("temp dir");
            let boot = members
                .iter()
                .flat_map(|m| m.handle.as_ref().expect("up").listen_addrs().to_vec())
                .collect::<Vec<_>>();
            let handle = Node::spawn(options(dir.path(), *role, &boot))
                .await
                .expect("node starts");
            members.push(Member {
                name: (*name).to_string(),
                role: *role,
                dir,
                handle: Some(handle),
            });
        }
        let cluster = Cluster { members };
        cluster.wait_connected().await;
        cluster.wait_matchmakers().await;
        cluster
    }

    fn get(&self, name: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.name == name)
            .expect("member exists")
    }

    fn get_mut(&mut self, name: &str) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .expect("member exists")
    }

    fn running(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.handle.is_some())
    }

    /// Every running node is connected to every other, except that two operators need not
    /// be: neither is a kad server, so unless one bootstrapped to the other they never meet.
    async fn wait_connected(&self) {
        for m in self.running() {
            let want: BTreeSet<PeerId> = self
                .running()
                .filter(|o| o.name != m.name)
                .filter(|o| !(m.role == Role::Operator && o.role == Role::Operator))
                .filter_map(|o| network::peer_id_of(&o.handle.as_ref().expect("up").public_key()))
                .collect();
            wait_peers(m.handle.as_ref().expect("up"), &m.name, &want).await;
        }
    }

    /// [`Cluster::start`], then [`Cluster::wait_adverts`]: ready to schedule on every operator.
    async fn ready(roles: &[(&str, Role)]) -> Cluster {
        let cluster = Cluster::start(roles).await;
        cluster.wait_adverts().await;
        cluster
    }

    /// The gateway and every matchmaker running know every running operator (its advert has
    /// arrived): before then a matchmaker schedules as if the operator did not exist.
    async fn wait_adverts(&self) {
        let operators: BTreeSet<String> = self
            .running()
            .filter(|m| m.role == Role::Operator)
            .map(|m| m.key().to_hex())
            .collect();
        let deadline = Instant::now() + WAIT;
        for m in self
            .running()
            .filter(|m| matches!(m.role, Role::Gateway | Role::Matchmaker))
        {
            loop {
                let known: BTreeSet<String> = NodeApi::operators(m.api())
                    .await
                    .expect("up")
                    .into_iter()
                    .map(|o| o.key)
                    .collect();
                if known.is_superset(&operators) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} knows operators {known:?}, not all of {operators:?}",
                    m.name
                );
                sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Every running matchmaker sees every running matchmaker.
    async fn wait_matchmakers(&self) {
        let keys: BTreeSet<PublicKey> = self
            .running()
            .filter(|m| m.role == Role::Matchmaker)
            .map(|m| m.key())
            .collect();
        let deadline = Instant::now() + WAIT;
        for m in self.running().filter(|m| m.role == Role::Matchmaker) {
            loop {
                let live: BTreeSet<PublicKey> = m
                    .api()
                    .live_matchmakers()
                    .await
                    .expect("up")
                    .into_iter()
                    .collect();
                if live == keys {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} sees matchmakers {live:?}, want {keys:?}",
                    m.name
                );
                sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn shutdown(mut self) {
        for m in &mut self.members {
            m.stop().await;
        }
    }
}

/// `leaves` sleeps of `leaf_ms` (each `cpu` cores), then a 20 ms sleep that depends on them all.
pub(crate) fn sleep_workflow(name: &str, leaves: u32, leaf_ms: u32, cpu: u32) -> Workflow {
    let text = format!(
        r#"
name = "{name}"
[defaults]
resources = {{ cpu = {cpu}, memory_gb = 0.5 }}
timeout_s = 20
max_attempts = 4

[[task]]
id = "leaf"
program = "sleep@1"
args = ["--ms", "{leaf_ms}"]
count = {leaves}

[[task]]
id = "root"
program = "sleep@1"
args = ["--ms", "20"]
deps = ["leaf"]
"#
    );
    toml_workflow(&text)
}

async fn wait_status(
    api: &Api,
    id: &WorkflowId,
    what: &str,
    pred: impl Fn(&WorkflowStatus) -> bool,
) -> WorkflowStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = api.status(id).expect("store readable") {
            if pred(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: workflow is {:?}, tasks {:?}",
                status.record.state,
                status
                    .tasks
                    .iter()
                    .map(|t| t.state.label())
                    .collect::<Vec<_>>()
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: workflow unknown"
            );
        }
        sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn wait_completed(api: &Api, id: &WorkflowId) -> WorkflowStatus {
    let status = wait_status(api, id, "completion", |s| {
        s.record.state != WorkflowState::Active
    })
    .await;
    assert_eq!(
        status.record.state,
        WorkflowState::Completed,
        "workflow should complete"
    );
    status
}

/// Accepted results by task, asserting every task has exactly one.
fn results_of(api: &Api, id: &WorkflowId, tasks: usize) -> BTreeMap<u32, ContentId> {
    let results = api.store().results(id).expect("store readable");
    assert_eq!(results.len(), tasks, "every task has an accepted result");
    results
        .into_iter()
        .map(|(t, r)| (t, ContentId::of_value(&r)))
        .collect()
}

/// Distinct accepted result ids per task, from a progress subscription.
fn drain_done(
    rx: &mut tokio::sync::broadcast::Receiver<Progress>,
    seen: &mut BTreeMap<u32, BTreeSet<ContentId>>,
) {
    while let Ok(p) = rx.try_recv() {
        if let Progress::Task {
            task,
            state: TaskState::Done { result },
            ..
        } = p
        {
            seen.entry(task).or_default().insert(result);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sleep_workflow_completes_across_gateway_matchmakers_and_operators() {
    let cluster = Cluster::start(&[
        ("gw", Role::Gateway),
        ("mm1", Role::Matchmaker),
        ("mm2", Role::Matchmaker),
        ("op1", Role::Operator),
        ("op2", Role::Operator),
        ("op3", Role::Operator),
    ])
    .await;
    // Operators follow only matchmaker announcements on gossip (a workflow's definition is
    // pushed to them with their first assignment of it); matchmakers and the gateway follow
    // everything.
    let gw_handle = cluster.get("gw").handle.as_ref().expect("up");
    for (topic, followers) in [
        (Topic::Submissions, ["mm1", "mm2"].as_slice()),
        (Topic::Matchmakers, &["mm1", "mm2", "op1", "op2", "op3"]),
        (Topic::Verdicts, &["mm1", "mm2"]),
        (Topic::Results, &["mm1", "mm2"]),
        (Topic::Heartbeats, &["mm1", "mm2"]),
    ] {
        let want: BTreeSet<PeerId> = followers
            .iter()
            .map(|name| cluster.get(name).handle.as_ref().expect("up").peer_id())
            .collect();
        let deadline = Instant::now() + WAIT;
        loop {
            let got: BTreeSet<PeerId> = gw_handle
                .topic_peers(topic)
                .await
                .expect("network up")
                .into_iter()
                .collect();
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{topic}: subscribed {got:?}, want {followers:?}"
            );
            sleep(Duration::from_millis(50)).await;
        }
    }
    let gw = cluster.get("gw").api().clone();
    let mut progress = gw.subscribe();
    // The root depends on every leaf: its operator learns their results from the matchmaker's
    // push (operators follow no verdicts), and every operator's view still completes below
    // (catch-up sync, outcome only).
    let workflow = sleep_workflow("happy", 6, 150, 1);
    let n = workflow.tasks.len();
    let id = gw.submit(workflow.clone()).await.expect("submit accepted");
    // Stored before the acknowledgement.
    assert!(gw.store().has_workflow(&id).expect("store readable"));

    wait_completed(&gw, &id).await;
    let reference = results_of(&gw, &id, n);
    // Every node saw the same workflow complete. The gateway and matchmakers hold every
    // result; an operator asks catch-up for the outcome only and holds just the results it
    // was given (its tasks' inputs), each the same as everyone's.
    let root = u32::try_from(n - 1).expect("few tasks");
    let root_operator = gw
        .store()
        .result(&id, root)
        .expect("readable")
        .expect("root done")
        .result
        .operator;
    for m in cluster.running() {
        wait_completed(m.api(), &id).await;
        let held: BTreeMap<u32, ContentId> = m
            .api()
            .store()
            .results(&id)
            .expect("readable")
            .into_iter()
            .map(|(t, r)| (t, ContentId::of_value(&r)))
            .collect();
        if m.role != Role::Operator {
            assert_eq!(held, reference, "{} agrees on every result", m.name);
            continue;
        }
        for (task, result) in &held {
            assert_eq!(reference.get(task), Some(result), "{}: task {task}", m.name);
        }
        assert!(
            held.len() < n,
            "{} completed from the outcome, without pulling every result",
            m.name
        );
        if m.key() == root_operator {
            assert!(
                (0..root).all(|leaf| held.contains_key(&leaf)),
                "{} ran the root with every leaf's result pushed: holds {:?}",
                m.name,
                held.keys().collect::<Vec<_>>()
            );
        }
    }
    // An operator-only node's writes are copies of the matchmakers' record and never wait for
    // an fsync (runtime `copies_only`): the workflow's definition it was pushed included. The
    // matchmakers sync before announcing, and hold every accepted output themselves (the
    // precheck's copy, durable with the verdict).
    for m in cluster.running().filter(|m| m.role == Role::Operator) {
        let syncs = metric(
            m.handle.as_ref().expect("up"),
            "proofmesh_store_sync_seconds_count",
        );
        assert_eq!(syncs, 0.0, "{} never waits on an fsync", m.name);
        // The root's inputs made by other operators came beside their results (in the root's
        // dispatch) and were kept as the dispatch was taken in: nothing was fetched.
        let fetches = metric(
            m.handle.as_ref().expect("up"),
            "p2p_blob_requests_total{direction=\"outbound\"}",
        );
        assert_eq!(fetches, 0.0, "{} fetched no blob", m.name);
        assert!(
            m.api().store().has_workflow(&id).expect("readable"),
            "{} holds the pushed workflow",
            m.name
        );
    }
    let keys = [cluster.get("mm1").key(), cluster.get("mm2").key()];
    let active = active_matchmaker(&routing_key(&id, &workflow), &keys).expect("two matchmakers");
    let active = cluster
        .running()
        .find(|m| m.role == Role::Matchmaker && m.key() == active)
        .expect("the active matchmaker runs");
    for (task, r) in gw.store().results(&id).expect("readable") {
        assert!(
            active
                .api()
                .store()
                .has_blob(&r.result.output)
                .expect("readable"),
            "{} holds task {task}'s output",
            active.name
        );
    }
    let mut seen = BTreeMap::new();
    drain_done(&mut progress, &mut seen);
    assert_eq!(seen.len(), n, "a done event per task");
    assert!(
        seen.values().all(|s| s.len() == 1),
        "no task was accepted with two different results: {seen:?}"
    );
    // The work was spread: more than one operator produced results.
    let producers: BTreeSet<PublicKey> = gw
        .store()
        .results(&id)
        .expect("readable")
        .into_iter()
        .map(|(_, r)| r.result.operator)
        .collect();
    assert!(
        producers.len() >= 2,
        "tasks spread over operators, got {producers:?}"
    );
    // A workflow submitted through an operator's own RPC is accepted there, so it is durable
    // there before the reply: the one case an operator syncs.
    let op1 = cluster.get("op1");
    let second = op1
        .api()
        .submit(sleep_workflow("via-operator", 1, 10, 1))
        .await
        .expect("submit accepted");
    assert!(op1.api().store().has_workflow(&second).expect("readable"));
    let syncs = metric(
        op1.handle.as_ref().expect("up"),
        "proofmesh_store_sync_seconds_count",
    );
    assert_eq!(syncs, 1.0, "op1 synced the submission it accepted");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_nodes_keep_workflows_and_results() {
    let mut cluster = Cluster::start(&[
        ("gw", Role::Gateway),
        ("mm", Role::Matchmaker),
        ("op", Role::Operator),
    ])
    .await;
    let gw = cluster.get("gw").api().clone();
    let workflow = sleep_workflow("restart", 3, 50, 1);
    let n = workflow.tasks.len();
    let id = gw.submit(workflow).await.expect("submit accepted");
    wait_completed(&gw, &id).await;
    let before = results_of(&gw, &id, n);
    let mm_before = results_of(cluster.get("mm").api(), &id, n);
    let gw_key = cluster.get("gw").key();
    // Every node keeps a copy of accepted outputs (fetched in the background): wait for them.
    let outputs: Vec<ContentId> = gw
        .store()
        .results(&id)
        .expect("readable")
        .into_iter()
        .map(|(_, r)| r.result.output)
        .collect();
    let deadline = Instant::now() + WAIT;
    while !outputs
        .iter()
        .all(|o| gw.store().has_blob(o).expect("readable"))
    {
        assert!(
            Instant::now() < deadline,
            "gateway never fetched the accepted outputs"
        );
        sleep(Duration::from_millis(20)).await;
    }
    drop(gw);

    // Stop everything (the gateway by dropping its handle, i.e. without a graceful shutdown
    // call), then bring the gateway and the matchmaker back on the same data directories.
    for name in ["gw", "mm", "op"] {
        let m = cluster.get_mut(name);
        if name == "gw" {
            drop(m.handle.take());
            sleep(Duration::from_millis(500)).await;
        } else {
            m.stop().await;
        }
    }
    for name in ["gw", "mm"] {
        let m = cluster.get_mut(name);
        let (dir, role) = (m.dir.path().to_path_buf(), m.role);
        m.handle = Some(spawn_again(|| options(&dir, role, &[])).await);
    }
    let gw = cluster.get("gw").api().clone();
    assert_eq!(
        cluster.get("gw").key(),
        gw_key,
        "same identity from the key file"
    );
    let status = gw
        .status(&id)
        .expect("readable")
        .expect("workflow survived the restart");
    assert_eq!(status.record.state, WorkflowState::Completed);
    assert_eq!(results_of(&gw, &id, n), before, "gateway kept every result");
    let mm = cluster.get("mm").api();
    assert_eq!(
        results_of(mm, &id, n),
        mm_before,
        "matchmaker kept every result"
    );
    assert!(
        mm.store().last_event_seq().expect("readable").is_some(),
        "matchmaker kept its event log"
    );
    // Every accepted output is still served from the gateway's own store.
    for (_, r) in gw.store().results(&id).expect("readable") {
        assert!(
            gw.store().has_blob(&r.result.output).expect("readable"),
            "output blob kept"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn active_matchmaker_dies_and_the_other_takes_over() {
    let mut cluster = Cluster::start(&[
        ("gw", Role::Gateway),
        ("mm1", Role::Matchmaker),
        ("mm2", Role::Matchmaker),
        ("op1", Role::Operator),
        ("op2", Role::Operator),
    ])
    .await;
    let gw = cluster.get("gw").api().clone();
    let mut progress = gw.subscribe();
    // 8 leaves of 300 ms on 4 slots: at least two rounds, so the death lands mid-workflow.
    let workflow = sleep_workflow("takeover", 8, 300, 1);
    let n = workflow.tasks.len();
    let wf_id = workflow.id();
    let keys = [cluster.get("mm1").key(), cluster.get("mm2").key()];
    let active =
        active_matchmaker(&routing_key(&wf_id, &workflow), &keys).expect("two live matchmakers");
    let (active_name, survivor) = if active == keys[0] {
        ("mm1", "mm2")
    } else {
        ("mm2", "mm1")
    };
    let id = gw.submit(workflow).await.expect("submit accepted");
    assert_eq!(id, wf_id);

    wait_status(&gw, &id, "a first task done", |s| s.count("done") >= 1).await;
    let done_before = gw
        .status(&id)
        .expect("readable")
        .expect("known")
        .count("done");
    assert!(done_before < n, "the matchmaker must die mid-workflow");
    cluster.get_mut(active_name).stop().await;

    wait_completed(&gw, &id).await;
    let reference = results_of(&gw, &id, n);
    assert_eq!(
        results_of(cluster.get(survivor).api(), &id, n),
        reference,
        "survivor agrees"
    );
    let mut seen = BTreeMap::new();
    drain_done(&mut progress, &mut seen);
    assert!(
        seen.values().all(|s| s.len() == 1),
        "no task accepted twice: {seen:?}"
    );
    cluster.shutdown().await;
}

/// A workflow the active matchmaker failed (here: its owner cancelled it) ends in the standby's
/// engine too, which lets go of its attempts, and the standby runs nothing of it when it takes
/// over after the active one stops. Before, the standby's engine never heard of the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_workflow_ends_on_the_standby_and_is_not_run_again_when_it_takes_over() {
    let mut cluster = Cluster::ready(&[
        ("gw", Role::Gateway),
        ("mm1", Role::Matchmaker),
        ("mm2", Role::Matchmaker),
        ("op1", Role::Operator),
    ])
    .await;
    let gw = cluster.get("gw").api().clone();
    // Attempts whose deadlines pass 3 s after they start (1 s plus the 2 s grace): a standby
    // that missed the failure takes them for lost then, and sends the tasks out again.
    let text = r#"
name = "cancelled-takeover"
[defaults]
resources = { cpu = 1, memory_gb = 0.5 }
timeout_s = 1
max_attempts = 4

[[task]]
id = "leaf"
program = "sleep@1"
args = ["--ms", "2500"]
count = 8
"#;
    let workflow = toml_workflow(text);
    let keys = [cluster.get("mm1").key(), cluster.get("mm2").key()];
    let active = active_matchmaker(&routing_key(&workflow.id(), &workflow), &keys)
        .expect("two live matchmakers");
    let (active_name, standby, standby_key) = if active == keys[0] {
        ("mm1", "mm2", keys[1])
    } else {
        ("mm2", "mm1", keys[0])
    };
    let id = gw.submit(workflow).await.expect("submit accepted");
    wait_status(&gw, &id, "a task running", |s| {
        s.tasks
            .iter()
            .any(|t| matches!(t.state, TaskState::Running { .. }))
    })
    .await;
    gw.cancel(id, None).await.expect("the owner cancels");
    wait_status(
        cluster.get(standby).api(),
        &id,
        "the standby hears the failure",
        |s| matches!(s.record.state, WorkflowState::Failed { .. }),
    )
    .await;
    // Its engine holds the workflow finished: the role lets go of its attempts (every 250 ms).
    let deadline = Instant::now() + WAIT;
    let held = || {
        metric(
            cluster.get(standby).handle.as_ref().expect("up"),
            "proofmesh_matchmaker_workflows",
        )
    };
    while held() != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the standby still keeps {} workflows' attempts",
            held()
        );
        sleep(Duration::from_millis(50)).await;
    }
    let op = cluster.get("op1").handle.as_ref().expect("up");
    let attempts = metric(op, "proofmesh_operator_attempts");
    assert!(attempts >= 1.0, "the operator ran the first wave");

    cluster.get_mut(active_name).stop().await;
    let deadline = Instant::now() + WAIT;
    while cluster
        .get(standby)
        .api()
        .live_matchmakers()
        .await
        .expect("up")
        != vec![standby_key]
    {
        assert!(
            Instant::now() < deadline,
            "the standby never saw the active one go"
        );
        sleep(Duration::from_millis(50)).await;
    }
    // Past the first cancelled attempts' deadlines.
    sleep(Duration::from_millis(4_500)).await;
    let op = cluster.get("op1").handle.as_ref().expect("up");
    assert_eq!(
        metric(op, "proofmesh_operator_attempts"),
        attempts,
        "no attempt of the cancelled workflow was assigned again"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_dies_mid_task_and_its_task_is_reassigned() {
    let mut cluster = Cluster::start(&[
        ("gw", Role::Gateway),
        ("mm", Role::Matchmaker),
        ("op1", Role::Operator),
        ("op2", Role::Operator),
    ])
    .await;
    let gw = cluster.get("gw").api().clone();
    // Each task takes a whole operator (2 cores) for 1.5 s.
    let workflow = sleep_workflow("reassign", 3, 1500, 2);
    let n = workflow.tasks.len();
    let id = gw.submit(workflow).await.expect("submit accepted");
    let ops = [
        ("op1", cluster.get("op1").key()),
        ("op2", cluster.get("op2").key()),
    ];

    let status = wait_status(&gw, &id, "a task running", |s| {
        s.tasks
            .iter()
            .any(|t| matches!(t.state, TaskState::Running { .. }))
    })
    .await;
    let (victim_task, victim_key) = status
        .tasks
        .iter()
        .enumerate()
        .find_map(|(i, t)| match t.state {
            TaskState::Running { operator, .. } => Some((i as u32, operator)),
            _ => None,
        })
        .expect("a running task");
    let victim = ops
        .iter()
        .find(|(_, k)| *k == victim_key)
        .expect("runs on an operator")
        .0;
    let killed_at = Instant::now();
    cluster.get_mut(victim).crash().await;

    wait_completed(&gw, &id).await;
    assert!(killed_at.elapsed() < WAIT);
    let results = gw.store().results(&id).expect("readable");
    assert_eq!(results.len(), n);
    let (_, reassigned) = results
        .iter()
        .find(|(t, _)| *t == victim_task)
        .expect("victim task has a result");
    assert_ne!(
        reassigned.result.operator, victim_key,
        "the dead operator's task ran elsewhere"
    );
    assert!(
        reassigned.result.attempt >= 2,
        "the task needed another attempt"
    );
    // The gateway heard why the first attempt ended (the matchmaker's call-back), and counts it.
    let record = gw.store().task(&id, victim_task).expect("readable");
    let lost = record
        .attempts
        .iter()
        .find(|a| a.operator == victim_key)
        .expect("the dead operator's attempt is recorded");
    assert_eq!(
        lost.cause.as_deref(),
        Some("operator went down"),
        "{record:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_that_stops_hands_back_its_attempts_and_is_not_slashed() {
    let mut cluster = Cluster::ready(&[
        ("gw", Role::Gateway),
        ("mm", Role::Matchmaker),
        ("op1", Role::Operator),
        ("op2", Role::Operator),
    ])
    .await;
    let gw = cluster.get("gw").api().clone();
    // One task taking a whole operator (2 cores) for 1.5 s. Its attempt's deadline is the
    // test matchmaker's accept window, the task's 2 s timeout and the 2 s grace after it is
    // assigned (~6 s): a crashed operator's evidence is stored then.
    let text = r#"
name = "hand-back"
[defaults]
resources = { cpu = 2, memory_gb = 0.5 }
timeout_s = 2

[[task]]
id = "prove"
program = "sleep@1"
args = ["--ms", "1500"]
"#;
    let workflow = toml_workflow(text);
    let id = gw.submit(workflow).await.expect("submit accepted");
    let status = wait_status(&gw, &id, "the task running", |s| {
        matches!(s.tasks[0].state, TaskState::Running { .. })
    })
    .await;
    let TaskState::Running { operator, .. } = status.tasks[0].state else {
        unreachable!("waited for it")
    };
    let (holder, other) = if operator == cluster.get("op1").key() {
        ("op1", "op2")
    } else {
        ("op2", "op1")
    };
    let other_key = cluster.get(other).key();
    let stopped_at = Instant::now();
    cluster.get_mut(holder).stop().await;

    // The matchmaker took the declaration in (the operator waited for its answer). The gateway
    // hears it on gossip, best effort as the operator goes: if it has attempt 1 at all, it has
    // it handed back, not lost (the matchmaker gossips a call-back for an operator gone down).
    let handed_back = Some("operator refused: operator shutting down");
    let mm = cluster.get("mm").handle.as_ref().expect("up");
    for (name, api) in [("mm", mm.api()), ("gw", &gw)] {
        let status = wait_completed(api, &id).await;
        let record = &status.tasks[0];
        let first = record.attempts.iter().find(|a| a.attempt == 1);
        if name == "gw" && first.is_none() {
            continue;
        }
        assert_eq!(
            first.map(|a| (a.operator, a.cause.as_deref())),
            Some((operator, handed_back)),
            "{name}: the first attempt was handed back: {record:?}"
        );
    }
    let results = gw.store().results(&id).expect("readable");
    assert_eq!(
        results[0].1.result.operator, other_key,
        "it ran on the other operator"
    );
    // Past the first attempt's deadline (it was assigned before the stop): no evidence against
    // the operator that stopped. Without the hand-back, the evidence is stored ~6 s after the
    // stop (checked by disabling it).
    sleep(Duration::from_secs(7).saturating_sub(stopped_at.elapsed())).await;
    assert!(
        mm.api().store().evidence().expect("readable").is_empty(),
        "no slashing evidence for attempts handed back"
    );
    cluster.shutdown().await;
}

/// A `final@1` stand-in that outputs its input (a valid proof) unchanged: honest operators
/// return a proof that verifies; one with `corrupt_results` flips a byte of it.
fn proof_options(dir: &Path, bootstrap: &[Multiaddr], corrupt: bool) -> NodeOptions {
    let mut o = options(dir, Role::Operator, bootstrap);
    let op = o.operator.as_mut().expect("operator options");
    let copy = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        "cp \"$PROOFMESH_INPUT_DIR/000\" \"$PROOFMESH_OUTPUT\"".to_string(),
    ];
    op.config = op
        .config
        .clone()
        .with_program("final", "1", ProgramSpec::Command(copy));
    op.corrupt_results = corrupt;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupted_proofs_are_rejected_slashed_and_reassigned() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contracts/test/fixtures/final.proof");
    let proof = std::fs::read(&fixture).expect("the final-proof fixture exists");
    proofmesh_prover::verify_proof_bytes(&proof).expect("the fixture is a valid proof");

    let mut cluster = Cluster::start(&[("gw", Role::Gateway), ("mm", Role::Matchmaker)]).await;
    let boot: Vec<Multiaddr> = cluster
        .running()
        .flat_map(|m| m.handle.as_ref().expect("up").listen_addrs().to_vec())
        .collect();
    for (name, corrupt) in [("honest", false), ("cheat", true)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let handle = Node::spawn(proof_options(dir.path(), &boot, corrupt))
            .await
            .expect("operator starts");
        cluster.members.push(Member {
            name: name.into(),
            role: Role::Operator,
            dir,
            handle: Some(handle),
        });
    }
    cluster.wait_connected().await;
    // The cheat must be offered work: known to the matchmaker before the submission.
    cluster.wait_adverts().await;
    let gw = cluster.get("gw").api().clone();
    let proof_id = gw.store().put_blob(&proof).expect("blob stored");
    let text = format!(
        r#"
name = "proofs"
[defaults]
resources = {{ cpu = 2, memory_gb = 0.5 }}
timeout_s = 20
max_attempts = 4

[[task]]
id = "final"
program = "final@1"
inputs = ["{proof_id}"]
count = 4
"#
    );
    let workflow = toml_workflow(&text);
    let n = workflow.tasks.len();
    let id = gw.submit(workflow).await.expect("submit accepted");
    wait_completed(&gw, &id).await;

    let honest = cluster.get("honest").key();
    let cheat = cluster.get("cheat").key();
    for (task, r) in gw.store().results(&id).expect("readable") {
        assert_eq!(
            r.result.operator, honest,
            "task {task}: only verified proofs are accepted"
        );
        assert_eq!(
            r.result.output, proof_id,
            "task {task}: the accepted output is the valid proof"
        );
    }
    assert_eq!(results_of(&gw, &id, n).len(), n);
    // The cheat was caught at least once (it is offered work while it has no bad record), and
    // the matchmaker kept the evidence against it.
    let evidence = cluster
        .get("mm")
        .api()
        .store()
        .evidence()
        .expect("readable");
    let decoded: Vec<proofmesh_matchmaker::SlashEvidence> = evidence
        .iter()
        .map(|(_, bytes)| proofmesh_protocol::encoding::decode(bytes).expect("evidence decodes"))
        .collect();
    assert!(
        decoded.iter().any(|e| matches!(e, proofmesh_matchmaker::SlashEvidence::InvalidResult { result, .. } if result.result.operator == cheat)),
        "invalid-result evidence against the cheat: {decoded:?}"
    );
    assert!(
        decoded.iter().all(|e| match e {
            proofmesh_matchmaker::SlashEvidence::InvalidResult { result, .. } =>
                result.result.operator == cheat,
            proofmesh_matchmaker::SlashEvidence::MissedDeadline { acceptance, .. } =>
                acceptance.operator == cheat,
        }),
        "no evidence against the honest operator"
    );
    let status = gw.status(&id).expect("readable").expect("known");
    assert!(
        status
            .tasks
            .iter()
            .flat_map(|t| &t.attempts)
            .any(|a| a.operator == cheat
                && a.cause
                    .as_deref()
                    .is_some_and(|c| c.contains("invalid result"))),
        "the gateway's view records the rejected attempt"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_queues_tasks_beyond_its_cores_and_never_oversubscribes_them() {
    let cluster = Cluster::start(&[("mm", Role::Matchmaker), ("op", Role::Operator)]).await;
    let mm = cluster.get("mm").api().clone();
    let op = cluster.get("op").key();
    // Each leaf takes both of the operator's cores for 500 ms: one runs at a time, and the
    // operator's queue (4 places by default) holds the other three.
    let workflow = sleep_workflow("queued", 4, 500, 2);
    let mut progress = mm.subscribe();
    let id = mm.submit(workflow).await.expect("submit accepted");
    let mut accepted = BTreeSet::new();
    let first_done = loop {
        let event = tokio::time::timeout(WAIT, progress.recv())
            .await
            .expect("progress in time")
            .expect("progress stream open");
        match event {
            Progress::Task {
                workflow,
                task,
                state: TaskState::Running { operator, .. },
            } if workflow == id => {
                assert_eq!(operator, op);
                accepted.insert(task);
            }
            Progress::Task {
                workflow,
                task,
                state: TaskState::Done { .. },
            } if workflow == id => break task,
            _ => {}
        }
    };
    // All four leaves were handed over and accepted before the first could finish.
    assert_eq!(
        accepted,
        (0..4).collect::<BTreeSet<u32>>(),
        "accepted before task {first_done} finished"
    );
    wait_completed(&mm, &id).await;
    // The machine ran them one after another: no two leases of both cores overlapped.
    let mut spans: Vec<(u64, u64)> = mm
        .store()
        .results(&id)
        .expect("readable")
        .into_iter()
        .filter(|(task, _)| *task < 4)
        .map(|(_, r)| (r.result.started_ms, r.result.finished_ms))
        .collect();
    spans.sort();
    assert_eq!(spans.len(), 4);
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "runs overlap: {spans:?}");
    }
    // The four leaves went to the operator as one signed batch and were answered by one; the
    // root, ready alone later, went with its four inputs in one signed dispatch.
    let signed = |name: &str, kind: &str| {
        let handle = cluster.get(name).handle.as_ref().expect("running");
        metric(
            handle,
            &format!("proofmesh_envelopes_signed_total{{kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(signed("mm", "AssignmentBatch"), 1.0);
    assert_eq!(signed("mm", "Dispatch"), 1.0);
    assert_eq!(signed("mm", "Assignment"), 0.0);
    assert_eq!(signed("op", "AnswerBatch"), 1.0);
    assert_eq!(signed("op", "Acceptance"), 1.0);
    cluster.shutdown().await;
}

/// Start a node of `role` bootstrapped to `bootstrap`, with kad's periodic random walk slowed
/// to once a minute: what a test sees connect is the work of the first walk and of the node's
/// own rules, not of a later walk.
async fn spawn_slow_walking(dir: &Path, role: Role, bootstrap: &[Multiaddr]) -> NodeHandle {
    let mut o = options(dir, role, bootstrap);
    o.network.kad_bootstrap_interval = Duration::from_secs(60);
    Node::spawn(o).await.expect("node starts")
}

async fn wait_peers(node: &NodeHandle, name: &str, want: &BTreeSet<PeerId>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let peers: BTreeSet<PeerId> = node.peers().await.expect("up").into_iter().collect();
        if want.is_subset(&peers) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is connected to {peers:?}, wants {want:?}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// A matchmaker and `n` operators bootstrapped to it alone (all walking slowly), once it is
/// connected to all of them; with the operators' peer ids.
async fn matchmaker_with_operators(
    root: &Path,
    n: usize,
) -> (NodeHandle, Vec<NodeHandle>, BTreeSet<PeerId>) {
    let mm = spawn_slow_walking(&root.join("mm"), Role::Matchmaker, &[]).await;
    let boot = mm.listen_addrs().to_vec();
    let mut ops = Vec::new();
    for i in 0..n {
        let dir = root.join(format!("op{i}"));
        ops.push(spawn_slow_walking(&dir, Role::Operator, &boot).await);
    }
    let op_peers: BTreeSet<PeerId> = ops
        .iter()
        .filter_map(|o| network::peer_id_of(&o.public_key()))
        .collect();
    wait_peers(&mm, "the matchmaker", &op_peers).await;
    (mm, ops, op_peers)
}

/// Operators find the matchmaker they bootstrap to, and through it the network's servers, but
/// not one another: a node that only operates runs kad as a client, so no one's random walk
/// turns it up. As servers, every operator ended up connected to every other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_connect_to_matchmakers_not_to_each_other() {
    let root = tempfile::tempdir().expect("temp dir");
    let (mm, ops, _) = matchmaker_with_operators(root.path(), 4).await;
    // Each operator's first walk (on identifying the matchmaker) has run by now.
    sleep(Duration::from_millis(1_500)).await;
    let mm_peer = network::peer_id_of(&mm.public_key()).expect("ed25519 key");
    for (i, op) in ops.iter().enumerate() {
        let peers = op.peers().await.expect("up");
        assert_eq!(
            peers,
            vec![mm_peer],
            "operator {i} is connected to {peers:?}"
        );
    }
    assert_eq!(mm.peers().await.expect("up").len(), ops.len());
    for op in ops {
        op.shutdown().await;
    }
    mm.shutdown().await;
}

/// A matchmaker that joins after the operators cannot find them (they are in no routing
/// table); they connect to it as soon as they hear its announcement, relayed by the matchmaker
/// they know, so it can dispatch to them if it takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_connect_to_a_matchmaker_that_joins_after_them() {
    let root = tempfile::tempdir().expect("temp dir");
    let (first, ops, op_peers) = matchmaker_with_operators(root.path(), 2).await;
    let boot = first.listen_addrs().to_vec();
    let late = spawn_slow_walking(&root.path().join("mm1"), Role::Matchmaker, &boot).await;
    wait_peers(&late, "the late matchmaker", &op_peers).await;
    for op in ops {
        op.shutdown().await;
    }
    late.shutdown().await;
    first.shutdown().await;
}
