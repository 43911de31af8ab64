//! A local multi-process network for development, demos and end-to-end tests: `proofmesh devnet
//! up | status | down`. Everything lives under one directory: per-node configs, keys, stores,
//! logs, and `devnet.toml`, the state file that `status` and `down` read.
//!
//! Nodes are separate `proofmesh node --config FILE` processes (not threads), so killing one with
//! SIGKILL is a real crash.

use crate::config::{NodeConfig, RolesSection};
use crate::network::identity::peer_id_of;
use anyhow::{bail, Context, Result};
use proofmesh_protocol::Keypair;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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
}

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
}

/// The state file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DevnetState {
    /// All nodes, gateway first.
    pub nodes: Vec<DevnetNode>,
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

    /// `key=value` lines, one per node, for scripts.
    pub fn status_lines(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "name={} role={} rpc={} p2p={} pid={} alive={}",
                    n.name,
                    n.role,
                    n.rpc,
                    n.p2p,
                    n.pid,
                    pid_alive(n.pid)
                )
            })
            .collect()
    }
}

/// A free TCP port on loopback (bind port 0, read it, release it).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether a process is still running (and not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 is the state; `Z` is a zombie (dead, not yet reaped).
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
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
    let mut bootstrap: Vec<String> = Vec::new();
    for (name, role) in roles {
        let node_dir = dir.join(&name);
        std::fs::create_dir_all(&node_dir)?;
        let key_file = node_dir.join("node.key");
        let keypair = if key_file.exists() {
            Keypair::from_file_string(&std::fs::read_to_string(&key_file)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", key_file.display()))?
        } else {
            let kp = Keypair::generate();
            std::fs::write(&key_file, kp.to_file_string())?;
            kp
        };
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
        cfg.chain.chain_id = spec.chain_id;
        cfg.chain.rpc_url = spec.chain_rpc.clone();
        cfg.chain.contract = spec.contract.clone();
        cfg.rpc.bind = SocketAddr::from(([127, 0, 0, 1], rpc_port));
        cfg.log.filter = "info".into();
        if role == "operator" {
            let index: usize = name
                .rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            cfg.operator = Some(operator_table(
                spec,
                &node_dir,
                spec.malicious_operators.contains(&index),
            )?);
        }
        let config_path = node_dir.join("node.toml");
        std::fs::write(
            &config_path,
            toml::to_string(&cfg).context("serializing node config")?,
        )?;

        let log = node_dir.join("node.log");
        let pid = spawn_node(&spec.proofmesh, &config_path, &log)?;
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
        });
        state.save(&dir)?;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &state.nodes {
        wait_healthy(node, deadline)?;
    }
    Ok(state)
}

fn operator_table(spec: &DevnetSpec, node_dir: &Path, malicious: bool) -> Result<toml::Table> {
    let prover = spec.prover.display().to_string();
    let mut programs = toml::Table::new();
    for stage in ["witness", "leaf", "aggregate", "final", "sleep", "noop"] {
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
    table.insert("programs".into(), toml::Value::Table(programs));
    if malicious {
        table.insert("corrupt_results".into(), true.into());
    }
    Ok(table)
}

/// Start one node process in its own process group, output to its log file.
pub fn spawn_node(proofmesh: &Path, config: &Path, log: &Path) -> Result<u32> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let child = Command::new(proofmesh)
        .arg("node")
        .arg("--config")
        .arg(config)
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
                "node {} exited during start-up; see its log {}",
                node.name,
                node.log.display()
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

/// Stop every node: SIGTERM, then SIGKILL after `grace`.
pub fn down(dir: &Path, grace: Duration) -> Result<DevnetState> {
    let state = DevnetState::load(dir)?;
    for node in &state.nodes {
        signal(node.pid, "TERM");
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && state.nodes.iter().any(|n| pid_alive(n.pid)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for node in state.nodes.iter().filter(|n| pid_alive(n.pid)) {
        signal(node.pid, "KILL");
    }
    Ok(state)
}

/// Send a signal by name with `kill(1)` (keeps this crate free of unsafe and of libc bindings).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}
