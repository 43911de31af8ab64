//! A local multi-process network for development, demos and end-to-end tests: `proofmesh devnet
//! up | status | down`. Everything lives under one directory: per-node configs, keys, stores,
//! logs, and `devnet.toml`, the state file that `status` and `down` read.
//!
//! Nodes are separate `proofmesh node --config FILE` processes (not threads), so killing one with
//! SIGKILL is a real crash.

use crate::config::{NodeConfig, RolesSection};
use crate::network::identity::peer_id_of;
use crate::rpc::client::RpcClient;
use anyhow::{bail, Context, Result};
use proofmesh_protocol::Keypair;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Name of the state file inside the devnet directory.
pub const STATE_FILE: &str = "devnet.toml";

/// What `devnet up` builds.
#[derive(Clone, Debug)]
pub struct DevnetSpec {
    /// Directory holding everything.
    pub dir: PathBuf,
    /// Number of operator nodes.
    pub operators: usize,
    /// Number of matchmaker nodes.
    pub matchmakers: usize,
    /// The `proofmesh` binary to run the nodes with.
    pub proofmesh: PathBuf,
    /// The `proofmesh-prover` binary the operators run tasks with.
    pub prover: PathBuf,
    /// Network id.
    pub network_id: u64,
    /// Chain id and, when settling on-chain, the chain RPC URL and contract address.
    pub chain_id: u64,
    /// Ethereum JSON-RPC URL for on-chain settlement (None: no chain).
    pub chain_rpc: Option<String>,
    /// ProofMarket contract address.
    pub contract: Option<String>,
    /// Operators that return corrupted proofs (fault injection for the malicious-operator test).
    pub malicious_operators: Vec<usize>,
    /// Extra `[operator]` table entries for every operator (e.g. `max_concurrent`).
    pub operator_max_concurrent: usize,
    /// Every operator's `queue_depth` (CPU tasks held beyond what runs now).
    pub operator_queue_depth: usize,
    /// Start anvil (`.tools/bin/anvil` or `$PROOFMESH_ANVIL`) under the devnet directory, deploy
    /// the market over the real Groth16 verifier, and give every matchmaker and operator a funded
    /// Ethereum key (operators register and stake on start). Overrides `chain_rpc`/`contract`.
    pub anvil: bool,
    /// Asking price of operator i, wei (`operator_prices[i % len]`); empty: 0 without a chain,
    /// else [`DEFAULT_PRICES_WEI`].
    pub operator_prices: Vec<u128>,
    /// Programs the malicious operators offer (empty: all). E.g. `["final"]` makes them bid
    /// only for the final proof, the one the chain can check.
    pub malicious_programs: Vec<String>,
    /// Every matchmaker's `snapshot_every_events` (tests take snapshots often, so that
    /// restarts restore them).
    pub matchmaker_snapshot_every_events: u64,
}

/// Operators' asking prices on a devnet with a chain: different, so payments tell them apart,
/// and at most the demo workflow's `max_price_wei` (0.001 ETH).
pub const DEFAULT_PRICES_WEI: [u128; 4] = [
    1_000_000_000_000_000,
    900_000_000_000_000,
    800_000_000_000_000,
    700_000_000_000_000,
];

/// Balance given to every devnet account, wei (100 ETH).
pub const DEVNET_BALANCE_WEI: u128 = 100_000_000_000_000_000_000;

/// One node of a running devnet, as `status` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetNode {
    /// e.g. `gateway`, `matchmaker-0`, `operator-2`.
    pub name: String,
    /// `gateway`, `matchmaker` or `operator`.
    pub role: String,
    /// JSON-RPC URL.
    pub rpc: String,
    /// p2p multiaddr including `/p2p/<peer id>`.
    pub p2p: String,
    /// Process id.
    pub pid: u32,
    /// Node config file (to restart the node).
    pub config: PathBuf,
    /// Log file.
    pub log: PathBuf,
    /// The node's public key (hex).
    pub public_key: String,
    /// Its Ethereum address, when the devnet settles on-chain.
    #[serde(default)]
    pub eth: Option<String>,
}

/// The chain of a devnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetChain {
    /// JSON-RPC URL.
    pub rpc: String,
    /// anvil's pid (0: an external chain this devnet did not start).
    pub pid: u32,
    /// Chain id.
    pub chain_id: u64,
    /// ProofMarket address.
    pub contract: String,
    /// The requester's key file (funded; `proofmesh submit --devnet DIR` pays escrows with it).
    pub requester_key: PathBuf,
    /// Every matchmaker's Ethereum address: the settlers a requester names on its escrow.
    pub settlers: Vec<String>,
}

/// The state file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DevnetState {
    /// All nodes, gateway first.
    pub nodes: Vec<DevnetNode>,
    /// The chain, when the devnet settles on-chain.
    #[serde(default)]
    pub chain: Option<DevnetChain>,
}

impl DevnetState {
    /// Read `DIR/devnet.toml`.
    pub fn load(dir: &Path) -> Result<DevnetState> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no devnet at {} (run `proofmesh devnet up --dir {}`)",
                path.display(),
                dir.display()
            )
        })?;
        toml::from_str(&text)
            .with_context(|| format!("corrupt devnet state file {}", path.display()))
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, toml::to_string(self)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// `key=value` lines, one per node (and one for the chain), for scripts.
    pub fn status_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .chain
            .iter()
            .map(|c| {
                format!(
                    "name=anvil role=chain rpc={} p2p=- pid={} alive={} chain_id={} contract={}",
                    c.rpc,
                    c.pid,
                    c.pid == 0 || pid_alive(c.pid),
                    c.chain_id,
                    c.contract
                )
            })
            .collect();
        lines.extend(self.nodes.iter().map(|n| {
            // key= is what another node lists in `network.matchmakers` to trust this one.
            let mut line = format!(
                "name={} role={} rpc={} p2p={} pid={} alive={} key={}",
                n.name,
                n.role,
                n.rpc,
                n.p2p,
                n.pid,
                pid_alive(n.pid),
                n.public_key
            );
            if let Some(eth) = &n.eth {
                line.push_str(&format!(" eth={eth}"));
            }
            line
        }));
        lines
    }
}

/// A free TCP port on loopback, for a node started a moment later (seen with `bind(0)`'s pick:
/// a demo's gateway failing with "address already in use"); shared with the chain's anvil, so
/// one process never hands out a port twice.
pub fn free_port() -> Result<u16> {
    Ok(proofmesh_chain::anvil::free_loopback_port()?)
}

/// Whether a process is still running (and not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    // Dead means every thread has exited: after SIGKILL the main thread can turn zombie (`Z`)
    // while the others are still exiting and holding the process's files (the store's lock).
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|stat| {
                // Field 3 is the state; the command name before it may hold spaces or ')'.
                stat.rsplit_once(')')
                    .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            })
            .unwrap_or(false)
    })
}

/// Start every node, then wait until each serves `/health` and the gateway sees every operator.
pub fn up(spec: &DevnetSpec) -> Result<DevnetState> {
    if spec.dir.join(STATE_FILE).exists() {
        let state = DevnetState::load(&spec.dir)?;
        if state.nodes.iter().any(|n| pid_alive(n.pid)) {
            bail!(
                "a devnet is already running in {} (run `proofmesh devnet down --dir {}` first)",
                spec.dir.display(),
                spec.dir.display()
            );
        }
    }
    if spec.matchmakers == 0 {
        bail!("--matchmakers must be at least 1: nothing would schedule work");
    }
    if spec.operators == 0 {
        bail!("--operators must be at least 1: nothing would run tasks");
    }
    std::fs::create_dir_all(&spec.dir)
        .with_context(|| format!("cannot create {}", spec.dir.display()))?;
    let dir = spec.dir.canonicalize()?;

    let mut roles: Vec<(String, &str)> = vec![("gateway".into(), "gateway")];
    roles.extend((0..spec.matchmakers).map(|i| (format!("matchmaker-{i}"), "matchmaker")));
    roles.extend((0..spec.operators).map(|i| (format!("operator-{i}"), "operator")));

    let mut state = DevnetState::default();
    let mut chain_rpc = spec.chain_rpc.clone();
    let mut contract = spec.contract.clone();
    let mut funder = None;
    if spec.anvil {
        let (c, f) = start_chain(spec, &dir).context("starting the devnet chain")?;
        chain_rpc = Some(c.rpc.clone());
        contract = Some(c.contract.clone());
        funder = Some(f);
        state.chain = Some(c);
        state.save(&dir)?;
    }
    // Every node trusts exactly the devnet's matchmakers: their keys come first.
    let mut matchmaker_keys = Vec::new();
    for (name, role) in &roles {
        if *role == "matchmaker" {
            matchmaker_keys.push(node_key(&dir.join(name))?.public().to_hex());
        }
    }
    let mut bootstrap: Vec<String> = Vec::new();
    for (name, role) in roles {
        let node_dir = dir.join(&name);
        let key_file = node_dir.join("node.key");
        let keypair = node_key(&node_dir)?;
        let peer = peer_id_of(&keypair.public()).context("node key is not a valid ed25519 key")?;
        let p2p_port = free_port()?;
        let rpc_port = free_port()?;
        let p2p = format!("/ip4/127.0.0.1/tcp/{p2p_port}/p2p/{peer}");

        let mut cfg = NodeConfig {
            data_dir: node_dir.join("data"),
            key_file: Some(key_file.clone()),
            roles: RolesSection {
                operator: role == "operator",
                matchmaker: role == "matchmaker",
            },
            ..NodeConfig::default()
        };
        cfg.network.listen = vec![format!("/ip4/127.0.0.1/tcp/{p2p_port}")];
        cfg.network.bootstrap = bootstrap.clone();
        cfg.network.network_id = spec.network_id;
        cfg.network.matchmakers = matchmaker_keys.clone();
        cfg.chain.chain_id = spec.chain_id;
        cfg.chain.rpc_url = chain_rpc.clone();
        cfg.chain.contract = contract.clone();
        cfg.matchmaker.snapshot_every_events = spec.matchmaker_snapshot_every_events;
        let mut eth = None;
        if let (Some(funder), true) = (&funder, role != "gateway") {
            let key_path = node_dir.join("eth.key");
            let address = funder.account(&key_path)?;
            cfg.chain.eth_key_file = Some(key_path);
            if role == "matchmaker" {
                if let Some(c) = state.chain.as_mut() {
                    c.settlers.push(address.clone());
                }
            }
            eth = Some(address);
        }
        cfg.rpc.bind = SocketAddr::from(([127, 0, 0, 1], rpc_port));
        cfg.log.filter = "info".into();
        if role == "operator" {
            let index: usize = name
                .rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let price = match (&spec.operator_prices[..], chain_rpc.is_some()) {
                ([], false) => 0,
                ([], true) => DEFAULT_PRICES_WEI[index % DEFAULT_PRICES_WEI.len()],
                (prices, _) => prices[index % prices.len()],
            };
            cfg.operator = Some(operator_table(
                spec,
                &node_dir,
                spec.malicious_operators.contains(&index),
                price,
            )?);
        }
        let config_path = node_dir.join("node.toml");
        std::fs::write(
            &config_path,
            toml::to_string(&cfg).context("serializing node config")?,
        )?;

        let log = node_dir.join("node.log");
        let pid = spawn_node(&spec.proofmesh, &config_path, &log, &[])?;
        // A devnet is small: every node dials every node started before it, so gossip never
        // depends on a sparse mesh forming under load.
        bootstrap.push(p2p.clone());
        state.nodes.push(DevnetNode {
            name,
            role: role.into(),
            rpc: format!("http://127.0.0.1:{rpc_port}"),
            p2p,
            pid,
            config: config_path,
            log,
            public_key: keypair.public().to_hex(),
            eth,
        });
        state.save(&dir)?;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &state.nodes {
        wait_healthy(node, deadline)?;
    }
    wait_ready(&state, deadline)?;
    Ok(state)
}

/// Wait until every matchmaker hears every matchmaker, and the gateway and every matchmaker
/// list every operator. Two matchmakers that do not hear each other yet both take a new
/// workflow as theirs and assign its tasks twice; one that has not heard an operator's advert
/// schedules as if that operator did not exist (and `proofmesh operators` leaves it out).
fn wait_ready(state: &DevnetState, deadline: Instant) -> Result<()> {
    let keys = |role: &str| -> Vec<(String, String)> {
        state
            .nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| (n.name.clone(), n.public_key.clone()))
            .collect()
    };
    let (operators, matchmakers) = (keys("operator"), keys("matchmaker"));
    let watchers: Vec<(String, String, bool)> = state
        .nodes
        .iter()
        .filter(|n| n.role == "gateway" || n.role == "matchmaker")
        .map(|n| (n.name.clone(), n.rpc.clone(), n.role == "matchmaker"))
        .collect();
    on_fresh_runtime(move || async move {
        for (watcher, rpc, is_matchmaker) in &watchers {
            loop {
                let (mut live, mut known) = (Vec::new(), Vec::new());
                if let Ok(mut client) = RpcClient::connect(rpc, None).await {
                    if let Ok(info) = client.node_info().await {
                        live = info.live_matchmakers.unwrap_or_default();
                    }
                    if let Ok(ops) = client.operators().await {
                        known = ops.into_iter().map(|o| o.key).collect();
                    }
                }
                let unheard = matchmakers
                    .iter()
                    .filter(|(_, key)| *is_matchmaker && !live.contains(key));
                let unknown = operators.iter().filter(|(_, key)| !known.contains(key));
                let missing: Vec<&str> = unheard
                    .chain(unknown)
                    .map(|(name, _)| name.as_str())
                    .collect();
                if missing.is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{watcher} has not heard from {} in time (their announces or adverts never reached it); see the nodes' logs",
                        missing.join(", ")
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    })
}

/// The key of the node in `node_dir` (`node.key`), created on first use.
fn node_key(node_dir: &Path) -> Result<Keypair> {
    std::fs::create_dir_all(node_dir)?;
    let key_file = node_dir.join("node.key");
    if key_file.exists() {
        return Keypair::from_file_string(&std::fs::read_to_string(&key_file)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", key_file.display()));
    }
    let kp = Keypair::generate();
    std::fs::write(&key_file, kp.to_file_string())?;
    Ok(kp)
}

fn operator_table(
    spec: &DevnetSpec,
    node_dir: &Path,
    malicious: bool,
    price_wei: u128,
) -> Result<toml::Table> {
    let prover = spec.prover.display().to_string();
    let mut programs = toml::Table::new();
    for stage in ["witness", "leaf", "aggregate", "final", "sleep", "noop"] {
        if malicious
            && !spec.malicious_programs.is_empty()
            && !spec.malicious_programs.iter().any(|p| p == stage)
        {
            continue;
        }
        programs.insert(
            format!("{stage}@1"),
            toml::Value::Array(vec![prover.clone().into(), stage.into()]),
        );
    }
    let mut table = toml::Table::new();
    table.insert(
        "work_dir".into(),
        node_dir.join("work").display().to_string().into(),
    );
    table.insert(
        "max_concurrent".into(),
        (spec.operator_max_concurrent as i64).into(),
    );
    table.insert(
        "queue_depth".into(),
        (spec.operator_queue_depth as i64).into(),
    );
    table.insert("programs".into(), toml::Value::Table(programs));
    table.insert("price_wei".into(), price_wei.to_string().into());
    if malicious {
        table.insert("corrupt_results".into(), true.into());
    }
    Ok(table)
}

/// Start one node process in its own process group, output to its log file, with `env` added
/// to its environment.
pub fn spawn_node(
    proofmesh: &Path,
    config: &Path,
    log: &Path,
    env: &[(&str, &str)],
) -> Result<u32> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let child = Command::new(proofmesh)
        .arg("node")
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        // Its own group: Ctrl-C in the terminal that ran `devnet up` does not reach it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", proofmesh.display()))?;
    Ok(child.id())
}

/// GET `/health` on the node's RPC port until it answers 200 or the deadline passes.
pub fn wait_healthy(node: &DevnetNode, deadline: Instant) -> Result<()> {
    let addr = node.rpc.trim_start_matches("http://").to_string();
    loop {
        if http_get_ok(&addr, "/health") {
            return Ok(());
        }
        if !pid_alive(node.pid) {
            bail!(
                "node {} exited during start-up; see its log {}; it ends:\n{}",
                node.name,
                node.log.display(),
                log_tail(&node.log, 20)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "node {} did not become healthy at {} in time; see {}",
                node.name,
                node.rpc,
                node.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `lines` lines of a log file, for error messages (the file may be gone by the time
/// someone reads the message, e.g. a test's temporary directory).
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn http_get_ok(addr: &str, path: &str) -> bool {
    let Ok(sock) = addr.parse::<SocketAddr>() else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&sock, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 32];
    let n = stream.read(&mut buf).unwrap_or(0);
    std::str::from_utf8(&buf[..n])
        .map(|s| s.starts_with("HTTP/1.1 200"))
        .unwrap_or(false)
}

/// Stop every node, then the devnet's anvil: SIGTERM, then SIGKILL after `grace`.
pub fn down(dir: &Path, grace: Duration) -> Result<DevnetState> {
    let state = DevnetState::load(dir)?;
    let nodes: Vec<u32> = state.nodes.iter().map(|n| n.pid).collect();
    stop_pids(&nodes, grace);
    // The chain last: nodes may still be settling while they shut down.
    if let Some(c) = state.chain.as_ref().filter(|c| c.pid != 0) {
        stop_pids(&[c.pid], grace);
    }
    Ok(state)
}

fn stop_pids(pids: &[u32], grace: Duration) {
    for &pid in pids {
        signal(pid, "TERM");
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|&p| pid_alive(p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in pids.iter().filter(|&&p| pid_alive(p)) {
        signal(pid, "KILL");
    }
}

/// Starts anvil under `DIR/anvil/` (state dumped there on exit), deploys the market over the
/// real Groth16 verifier, and creates a funded requester key. Returns the chain and a funder
/// for the nodes' keys.
fn start_chain(spec: &DevnetSpec, dir: &Path) -> Result<(DevnetChain, Funder)> {
    let bin = proofmesh_chain::anvil::anvil_path();
    if !bin.exists() {
        bail!(
            "{} not found: run scripts/install-foundry (or set PROOFMESH_ANVIL), or pass --no-chain",
            bin.display()
        );
    }
    let anvil_dir = dir.join("anvil");
    std::fs::create_dir_all(&anvil_dir)?;
    let port = free_port()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(anvil_dir.join("anvil.log"))?;
    let child = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--chain-id", &spec.chain_id.to_string()])
        .arg("--dump-state")
        .arg(anvil_dir.join("state.json"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let rpc = format!("http://127.0.0.1:{port}");
    let pid = child.id();
    let requester_key = dir.join("requester.eth.key");
    let deployed = on_fresh_runtime({
        let rpc = rpc.clone();
        let requester_key = requester_key.clone();
        let chain_id = spec.chain_id;
        move || async move { deploy(&rpc, chain_id, &requester_key).await }
    });
    let contract = match deployed {
        Ok(c) => c,
        Err(e) => {
            signal(pid, "KILL");
            return Err(e.context(format!("see {}", anvil_dir.join("anvil.log").display())));
        }
    };
    let chain = DevnetChain {
        rpc: rpc.clone(),
        pid,
        chain_id: spec.chain_id,
        contract,
        requester_key,
        settlers: Vec::new(),
    };
    Ok((chain, Funder { rpc }))
}

/// Waits for anvil, deploys verifier + market with a fresh funded deployer, and writes the
/// funded requester key. Returns the market address.
async fn deploy(rpc: &str, chain_id: u64, requester_key: &Path) -> Result<String> {
    use alloy::providers::{Provider, ProviderBuilder};
    use proofmesh_chain::{client, MarketClient, MarketParams, PrivateKeySigner};
    let deadline = Instant::now() + Duration::from_secs(30);
    let provider = loop {
        if let Ok(p) = ProviderBuilder::new().connect(rpc).await {
            if let Ok(id) = p.get_chain_id().await {
                anyhow::ensure!(id == chain_id, "{rpc} serves chain id {id}, not {chain_id}");
                break p.erased();
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "anvil did not answer on {rpc} in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deployer = PrivateKeySigner::random();
    set_balance(&provider, deployer.address()).await?;
    let signing = client::connect(rpc, deployer.clone()).await?;
    let verifier = client::deploy_groth16_verifier(&signing).await?;
    let market = MarketClient::deploy(rpc, deployer, verifier, &MarketParams::devnet()).await?;
    let requester = PrivateKeySigner::random();
    set_balance(&provider, requester.address()).await?;
    crate::chain::setup::write_eth_key(requester_key, &requester)?;
    Ok(format!("{:#x}", market.address()))
}

async fn set_balance(
    provider: &alloy::providers::DynProvider,
    account: proofmesh_chain::Address,
) -> Result<()> {
    use alloy::providers::Provider;
    provider
        .raw_request::<_, serde_json::Value>(
            "anvil_setBalance".into(),
            (account, proofmesh_chain::U256::from(DEVNET_BALANCE_WEI)),
        )
        .await
        .context("anvil_setBalance")?;
    Ok(())
}

/// Creates funded Ethereum keys for devnet nodes.
struct Funder {
    rpc: String,
}

impl Funder {
    /// The key at `path` (created if missing), funded; returns its address.
    fn account(&self, path: &Path) -> Result<String> {
        use proofmesh_chain::PrivateKeySigner;
        let signer = if path.exists() {
            crate::chain::setup::read_eth_key(path)?
        } else {
            let s = PrivateKeySigner::random();
            crate::chain::setup::write_eth_key(path, &s)?;
            s
        };
        let rpc = self.rpc.clone();
        let address = signer.address();
        on_fresh_runtime(move || async move {
            use alloy::providers::{Provider, ProviderBuilder};
            let p = ProviderBuilder::new().connect(&rpc).await?.erased();
            set_balance(&p, address).await
        })?;
        Ok(format!("{address:#x}"))
    }
}

/// Runs async chain code from sync devnet code, on its own thread and runtime (so it works
/// whether or not the caller is inside a tokio runtime).
fn on_fresh_runtime<T, F, Fut>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("devnet setup thread panicked"))?
}

/// Send a signal by name with `kill(1)` (keeps this crate free of unsafe and of libc bindings).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}
