//! A devnet of real `proofmesh node` processes for end-to-end tests (proofmesh_node::devnet),
//! with the faults the tests inject from outside: SIGKILL, restart on the same data directory.
//! Dropping a [`Net`] stops every process it started (including restarted ones).

#![allow(dead_code)]

use proofmesh_chain::{Address, MarketClient};
use proofmesh_node::chain::escrow;
use proofmesh_node::chain::setup::read_eth_key;
use proofmesh_node::chain::ChainParams;
use proofmesh_node::devnet::{self, DevnetChain, DevnetNode, DevnetSpec};
use proofmesh_node::rpc::{RpcClient, WorkflowStatus};
use proofmesh_node::store::Store;
use proofmesh_protocol::messages::Submission;
use proofmesh_protocol::spec::{self as wfspec, Format};
use proofmesh_protocol::PublicKey;
use proofmesh_protocol::{encoding, Keypair, Workflow, WorkflowId};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The `proofmesh` binary cargo built for this test target.
pub fn proofmesh_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_proofmesh"))
}

/// `proofmesh-prover`: `$PROOFMESH_PROVER`, else next to `proofmesh` in the same target dir.
pub fn prover_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PROOFMESH_PROVER") {
        return PathBuf::from(p);
    }
    let path = proofmesh_bin().with_file_name("proofmesh-prover");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p proofmesh-prover` first (or set PROOFMESH_PROVER)",
        path.display()
    );
    path
}

/// A default spec for `operators` operators and `matchmakers` matchmakers in `dir`, no chain.
pub fn spec(dir: PathBuf, operators: usize, matchmakers: usize) -> DevnetSpec {
    DevnetSpec {
        dir,
        operators,
        matchmakers,
        proofmesh: proofmesh_bin(),
        prover: prover_bin(),
        network_id: 4242,
        chain_id: 31337,
        chain_rpc: None,
        contract: None,
        malicious_operators: Vec::new(),
        operator_max_concurrent: 2,
        operator_queue_depth: 4,
        anvil: false,
        operator_prices: Vec::new(),
        malicious_programs: Vec::new(),
        // Every few dozen events: the restart and takeover tests then restore matchmakers from
        // snapshots, with the log's older events dropped.
        matchmaker_snapshot_every_events: 20,
    }
}

/// As [`spec`], settling on a fresh anvil the devnet starts (market deployed over the real
/// Groth16 verifier; operators register and stake on start; default prices
/// [`devnet::DEFAULT_PRICES_WEI`]).
pub fn chain_spec(operators: usize, matchmakers: usize) -> DevnetSpec {
    DevnetSpec {
        anvil: true,
        ..spec(PathBuf::new(), operators, matchmakers)
    }
}

/// A running devnet.
pub struct Net {
    /// Holds every node's directory; removed on drop.
    pub dir: TempDir,
    /// Nodes as started, with current pids (restarts update them).
    pub nodes: Vec<DevnetNode>,
    /// The chain, for a [`chain_spec`] devnet.
    pub chain: Option<DevnetChain>,
}

impl Net {
    /// Start `spec` (its `dir` is replaced by a fresh temp dir); ready when it returns.
    pub fn up(mut spec: DevnetSpec) -> Net {
        let dir = tempfile::tempdir().expect("temp dir");
        spec.dir = dir.path().to_path_buf();
        let state = match devnet::up(&spec) {
            Ok(s) => s,
            Err(e) => {
                // Do not leak the nodes that did start.
                if let Ok(s) = devnet::DevnetState::load(dir.path()) {
                    for n in &s.nodes {
                        devnet::signal(n.pid, "KILL");
                    }
                    for c in s.chain.iter().filter(|c| c.pid != 0) {
                        devnet::signal(c.pid, "KILL");
                    }
                }
                panic!("devnet up failed: {e:#}");
            }
        };
        // `devnet::up` returns once the gateway and every matchmaker know every operator.
        Net {
            dir,
            nodes: state.nodes,
            chain: state.chain,
        }
    }

    /// The node called `name` (`gateway`, `matchmaker-0`, `operator-1`, ...).
    pub fn node(&self, name: &str) -> &DevnetNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in this devnet"))
    }

    /// Names of the nodes with `role`.
    pub fn names(&self, role: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| n.name.clone())
            .collect()
    }

    /// The protocol key of node `name`.
    pub fn key(&self, name: &str) -> PublicKey {
        PublicKey::from_hex(&self.node(name).public_key).expect("devnet state holds hex keys")
    }

    /// An RPC client to node `name`.
    pub async fn rpc(&self, name: &str) -> RpcClient {
        RpcClient::connect(&self.node(name).rpc, None)
            .await
            .unwrap_or_else(|e| panic!("cannot reach {name}'s RPC: {e}"))
    }

    /// SIGKILL node `name` and wait until the process is gone.
    pub fn kill(&self, name: &str) {
        let pid = self.node(name).pid;
        devnet::signal(pid, "KILL");
        wait_dead(pid, name);
    }

    /// SIGTERM node `name` (graceful), SIGKILL after 10 s; wait until it is gone.
    pub fn stop(&self, name: &str) {
        let pid = self.node(name).pid;
        devnet::signal(pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while devnet::pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        devnet::signal(pid, "KILL");
        wait_dead(pid, name);
    }

    /// Start node `name` again on its config and data directory (it must be stopped) and wait
    /// until it serves RPC.
    pub fn restart(&mut self, name: &str) {
        self.restart_with_env(name, &[]);
    }

    /// [`Net::restart`] with `env` added to the node's environment (fault injection).
    pub fn restart_with_env(&mut self, name: &str, env: &[(&str, &str)]) {
        let node = self.node(name).clone();
        assert!(!devnet::pid_alive(node.pid), "{name} is still running");
        let pid = devnet::spawn_node(&proofmesh_bin(), &node.config, &node.log, env)
            .unwrap_or_else(|e| panic!("cannot restart {name}: {e:#}"));
        let slot = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("known node");
        slot.pid = pid;
        devnet::wait_healthy(slot, Instant::now() + Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Open the store of a STOPPED node (redb allows one process at a time).
    pub fn store(&self, name: &str) -> Store {
        let node = self.node(name);
        assert!(
            !devnet::pid_alive(node.pid),
            "stop {name} before opening its store"
        );
        let data = node.config.with_file_name("data");
        Store::open(&data).unwrap_or_else(|e| panic!("{name}'s store at {}: {e}", data.display()))
    }

    /// Node `name`'s whole log.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(&self.node(name).log).unwrap_or_default()
    }

    /// The tail of node `name`'s log, for failure messages.
    pub fn log_tail(&self, name: &str) -> String {
        devnet::log_tail(&self.node(name).log, 30)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::env::var_os("PROOFMESH_E2E_KEEP").is_some() {
            eprintln!("PROOFMESH_E2E_KEEP: keeping {}", self.dir.path().display());
            self.dir.disable_cleanup(true);
        }
        for n in &self.nodes {
            devnet::signal(n.pid, "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.nodes.iter().any(|n| devnet::pid_alive(n.pid)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for n in self.nodes.iter().filter(|n| devnet::pid_alive(n.pid)) {
            devnet::signal(n.pid, "KILL");
        }
        // A failed test shows what every node logged (CI keeps nothing else).
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!(
                    "---- {} log (last 40 lines)\n{}",
                    n.name,
                    devnet::log_tail(&n.log, 40)
                );
            }
        }
        // The chain last (nodes may settle while stopping); KILL: its dumped state is not needed.
        if let Some(c) = self.chain.as_ref().filter(|c| c.pid != 0) {
            devnet::signal(c.pid, "KILL");
        }
    }
}

// ------------------------------------------------------------------ chain

impl Net {
    /// The devnet's chain (panics for a devnet without one).
    pub fn chain(&self) -> &DevnetChain {
        self.chain
            .as_ref()
            .expect("this devnet has no chain: start it with chain_spec")
    }

    /// Chain parameters signing as the devnet's (funded) requester.
    pub fn requester(&self) -> ChainParams {
        let c = self.chain();
        ChainParams {
            rpc_url: c.rpc.clone(),
            contract: c.contract.parse().expect("contract address"),
            chain_id: c.chain_id,
            signer: read_eth_key(&c.requester_key).expect("requester key"),
            stake_wei: 0,
        }
    }

    /// A client of the market, signing as the requester.
    pub async fn market(&self) -> MarketClient {
        proofmesh_node::chain::setup::connect(&self.requester())
            .await
            .expect("connect to the devnet chain")
    }

    /// Node `name`'s Ethereum address.
    pub fn eth(&self, name: &str) -> Address {
        self.node(name)
            .eth
            .as_deref()
            .unwrap_or_else(|| panic!("{name} has no Ethereum key"))
            .parse()
            .expect("address")
    }

    /// Opens the escrow of `text` (every matchmaker a settler), then submits it to the gateway
    /// with the escrow reference, as `proofmesh submit --devnet` does. Returns the workflow id.
    pub async fn submit_with_escrow(&self, text: &str) -> (WorkflowId, Workflow) {
        let workflow = wfspec::load(text, Format::Toml)
            .expect("test workflow is valid")
            .0;
        let settlers: Vec<Address> = self
            .chain()
            .settlers
            .iter()
            .map(|s| s.parse().expect("settler address"))
            .collect();
        let opened = escrow::open_escrow(&self.requester(), &workflow, &settlers)
            .await
            .expect("open escrow");
        assert!(
            opened.new,
            "a fresh devnet has no escrow for this workflow yet"
        );
        assert_eq!(opened.amount_wei, escrow::max_payment(&workflow));
        let submission = Submission {
            workflow: workflow.clone(),
            owner: Keypair::generate().public(),
            owner_eth: Some(self.requester().signer.address().into_array()),
            escrow: Some(opened.escrow),
            submitted_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis() as u64,
        };
        let mut gw = self.rpc("gateway").await;
        let out: proofmesh_node::rpc::SubmitOutcome = gw
            .call(
                "pm_submitWorkflow",
                serde_json::json!({ "submission": hex::encode(encoding::encode(&submission)) }),
            )
            .await
            .expect("submit");
        assert_eq!(out.id, workflow.id().to_hex());
        (workflow.id(), workflow)
    }
}

/// Polls `probe` every 200 ms until it returns `Some` or `timeout` passes (then panics naming
/// `what` and the last observation).
pub async fn eventually<T, O: std::fmt::Debug, F, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, O>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(v) => return v,
            Err(o) => o,
        };
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn wait_dead(pid: u32, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while devnet::pid_alive(pid) {
        assert!(Instant::now() < deadline, "{name} (pid {pid}) does not die");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Poll `id`'s status on `client` until `done` holds or `timeout` passes (then panic with the
/// last status and `what`).
pub async fn wait_status(
    client: &mut RpcClient,
    id: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&WorkflowStatus) -> bool,
) -> WorkflowStatus {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(s) = client.status(id).await {
            assert_ne!(s.state, "failed", "workflow failed: {:?}", s.reason);
            if done(&s) {
                return s;
            }
            last = Some(s);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Wait until `id` is completed on `client`, and check that all of its `tasks` tasks are done
/// there.
pub async fn wait_completed(
    client: &mut RpcClient,
    id: &str,
    what: &str,
    timeout: Duration,
    tasks: usize,
) -> WorkflowStatus {
    let status = wait_status(client, id, what, timeout, |s| s.state == "completed").await;
    assert_eq!(status.done as usize, tasks, "{what}: every task done");
    status
}
