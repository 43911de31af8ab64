//! What one node runtime needs to start: identity, data directory, network, roles and timers.
//! The node configuration (file, environment, flags) is translated into this; tests build it
//! directly with [`NodeOptions::test`].

use crate::config::RpcConfig;
use crate::network::NetworkConfig;
use proofmesh_matchmaker::Config as MatchmakerConfig;
use proofmesh_operator::OperatorConfig;
use proofmesh_protocol::messages::{Capacity, EthAddress};
use proofmesh_protocol::{Domain, Keypair};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// FAULT INJECTION, for the slow-disk crash test only: when this environment variable is set
/// (milliseconds), a node started from its configuration waits that long before every
/// durable commit ([`NodeOptions::store_sync_delay`]).
pub const SYNC_DELAY_ENV: &str = "PROOFMESH_FAULT_SYNC_DELAY_MS";

/// Everything a node runtime needs.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Store, key file and (for operators) work directories live here.
    pub data_dir: PathBuf,
    /// The node key; `None` loads `<data_dir>/node.key` or creates it (mode 0600).
    pub keypair: Option<Keypair>,
    /// Network settings (listen addresses, bootstrap peers, gossip tuning). Its `blobs`
    /// provider is replaced by the node's store.
    pub network: NetworkConfig,
    /// The JSON-RPC server (`/`, `/metrics`, `/health`); `None` runs none.
    pub rpc: Option<RpcConfig>,
    /// Lifetime of the envelopes this node signs.
    pub message_ttl: Duration,
    /// Most bytes of the store's page cache (`None`: redb's default, 1 GiB). A cache, not a
    /// leak, but it grows with the database up to that size.
    pub store_cache_bytes: Option<usize>,
    /// Matchmaker role, if enabled.
    pub matchmaker: Option<MatchmakerOptions>,
    /// Operator role, if enabled.
    pub operator: Option<OperatorOptions>,
    /// The only keys whose matchmaker decisions (announcements, assignments, cancellations,
    /// workflow failures, verdicts) this node believes; empty believes any signer.
    pub trusted_matchmakers: Vec<proofmesh_protocol::PublicKey>,
    /// Fault injection for tests: every durable commit of the core's batches first waits
    /// this long (a slow disk). Zero otherwise.
    pub store_sync_delay: Duration,
    /// How long finished workflows are kept before they are pruned (`None`: forever). Its
    /// `require_settled` is set by the node from its settlement.
    pub retention: Option<crate::store::Retention>,
    /// How often the store is checked for finished workflows past their retention.
    pub prune_every: Duration,
}

/// How often a node looks for finished workflows to prune: retention is counted in hours or
/// days, and each look reads every workflow's small state record. A retention shorter than
/// four of these is looked at four times per retention period.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The retention `store.retain_finished_secs` asks for (`None` for 0: keep everything).
pub fn retention_for(retain_finished_secs: u64) -> Option<crate::store::Retention> {
    (retain_finished_secs > 0)
        .then(|| crate::store::Retention::keeping(Duration::from_secs(retain_finished_secs)))
}

/// Events between the matchmaker's snapshots: ~25 s of a busy matchmaker (a task logs ~2
/// events; ~2,000 noop tasks/s), so a restart replays at most that, well under a second.
pub const DEFAULT_SNAPSHOT_EVERY_EVENTS: u64 = 100_000;

/// The matchmaker role.
#[derive(Clone, Debug)]
pub struct MatchmakerOptions {
    /// Scheduling configuration; `me` is overwritten with the node key.
    pub config: MatchmakerConfig,
    /// How often this matchmaker announces that it is alive.
    pub announce_interval: Duration,
    /// A matchmaker not heard from for this long leaves the live set (its workflows move).
    pub live_timeout: Duration,
    /// Events logged between two snapshots of the matchmaker's state: a restart replays at
    /// most about this many, and the log's older events are dropped.
    pub snapshot_every_events: u64,
}

impl Default for MatchmakerOptions {
    fn default() -> Self {
        MatchmakerOptions {
            config: MatchmakerConfig::default(),
            announce_interval: Duration::from_secs(1),
            live_timeout: Duration::from_secs(4),
            snapshot_every_events: DEFAULT_SNAPSHOT_EVERY_EVENTS,
        }
    }
}

/// The operator role.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    /// Programs, work directory, caps. An empty `work_dir` means `<data_dir>/operator`.
    pub config: OperatorConfig,
    /// Advertise exactly this capacity instead of discovering the machine (tests, or a
    /// deliberately smaller offer).
    pub capacity: Option<Capacity>,
    /// Asking price per task, in wei.
    pub price_wei: u128,
    /// Ethereum address for stake and payment.
    pub eth_address: Option<EthAddress>,
    /// Heartbeat period (lists running tasks).
    pub heartbeat_interval: Duration,
    /// Period of re-publishing the advert (so matchmakers that join later learn about us).
    pub advert_interval: Duration,
    /// How long to wait for a dependency's accepted result or the workflow to show up in the
    /// local view before failing an attempt with an input error.
    pub input_wait: Duration,
    /// How long past an attempt's deadline this operator remembers it (and its signed
    /// answer), so that the same assignment sent again gets the same answer; one that comes
    /// later is refused. A long-running operator kept every attempt it ever took.
    pub remember_attempts_for: Duration,
    /// FAULT INJECTION, for the malicious-operator test only: flip one byte of every proof this
    /// operator produces (programs `leaf`, `aggregate`, `final`) and sign the corrupted output,
    /// so that verification, reassignment and slashing can be exercised. Never set it otherwise.
    pub corrupt_results: bool,
    /// With on-chain settlement: the Ethereum key that signs acceptances and final-proof
    /// claims (set by `crate::chain::prepare`).
    pub eth: Option<crate::chain::EthIdentity>,
}

impl OperatorOptions {
    /// An operator with `config`, default timers and no fault injection.
    pub fn new(config: OperatorConfig) -> Self {
        OperatorOptions {
            config,
            capacity: None,
            price_wei: 0,
            eth_address: None,
            heartbeat_interval: Duration::from_secs(1),
            advert_interval: Duration::from_secs(10),
            input_wait: Duration::from_secs(10),
            remember_attempts_for: Duration::from_secs(60),
            corrupt_results: false,
            eth: None,
        }
    }
}

impl NodeOptions {
    /// A plain node (gateway: no roles) with production defaults for `domain`.
    pub fn new(data_dir: impl Into<PathBuf>, domain: Domain) -> Self {
        NodeOptions {
            data_dir: data_dir.into(),
            keypair: None,
            network: NetworkConfig::new(domain),
            rpc: None,
            message_ttl: Duration::from_secs(120),
            store_cache_bytes: None,
            matchmaker: None,
            operator: None,
            trusted_matchmakers: Vec::new(),
            store_sync_delay: Duration::ZERO,
            retention: retention_for(crate::config::DEFAULT_RETAIN_FINISHED_SECS),
            prune_every: DEFAULT_PRUNE_EVERY,
        }
    }

    /// For in-process tests: loopback port 0 for p2p and RPC, fast gossip, short timers.
    pub fn test(data_dir: impl Into<PathBuf>, domain: Domain) -> Self {
        NodeOptions {
            network: NetworkConfig::test(domain),
            rpc: Some(RpcConfig {
                enabled: true,
                bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                token: None,
            }),
            // Tests that prune say so.
            retention: None,
            ..NodeOptions::new(data_dir, domain)
        }
    }

    /// Enable the matchmaker role with test timers (fast heartbeats and takeover).
    pub fn with_test_matchmaker(mut self) -> Self {
        let config = MatchmakerConfig {
            heartbeat_interval_ms: 200,
            missed_heartbeats: 5,
            accept_timeout_ms: 2_000,
            result_grace_ms: 2_000,
            ..MatchmakerConfig::default()
        };
        self.matchmaker = Some(MatchmakerOptions {
            config,
            announce_interval: Duration::from_millis(200),
            live_timeout: Duration::from_millis(1_000),
            snapshot_every_events: DEFAULT_SNAPSHOT_EVERY_EVENTS,
        });
        self
    }
}

/// Why a [`crate::config::NodeConfig`] cannot become [`NodeOptions`].
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// The configuration itself is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A runtime key of the `[operator]` section is malformed.
    #[error("operator.{key}: {problem}")]
    OperatorKey {
        /// The key.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The key file cannot be read.
    #[error("key file {path}: {problem} (generate one with `proofmesh keys generate --out FILE`)")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl NodeOptions {
    /// Translate the node configuration (file, environment, flags) into runtime options.
    pub fn from_config(config: &crate::config::NodeConfig) -> Result<NodeOptions, OptionsError> {
        let domain = Domain {
            network_id: config.network.network_id,
            chain_id: config.chain.chain_id,
        };
        let mut network = NetworkConfig::new(domain);
        let listen = config.listen_addrs()?;
        if !listen.is_empty() {
            network.listen = listen;
        }
        network.bootstrap = config.bootstrap_addrs()?;
        let trusted_matchmakers = config.trusted_matchmakers()?;
        // An explicit key file must exist; the default `<data_dir>/node.key` is created if absent.
        let keypair = match &config.key_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| OptionsError::Key {
                    path: path.clone(),
                    problem: e.to_string(),
                })?;
                Some(
                    Keypair::from_file_string(&text).map_err(|e| OptionsError::Key {
                        path: path.clone(),
                        problem: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        let mut options = NodeOptions::new(config.data_dir.clone(), domain);
        options.network = network;
        options.keypair = keypair;
        options.trusted_matchmakers = trusted_matchmakers;
        if let Some(value) = std::env::var_os(SYNC_DELAY_ENV) {
            let value = value.to_string_lossy().into_owned();
            let ms: u64 = value.parse().map_err(|_| crate::config::ConfigError::Env {
                var: SYNC_DELAY_ENV,
                value: value.clone(),
                message: "must be a number of milliseconds".into(),
            })?;
            tracing::warn!(
                "{SYNC_DELAY_ENV} is set (fault injection): every durable commit waits {ms} ms"
            );
            options.store_sync_delay = Duration::from_millis(ms);
        }
        options.rpc = config.rpc.enabled.then(|| config.rpc.clone());
        options.retention = retention_for(config.store.retain_finished_secs);
        // A retention shorter than four periods is looked at four times per retention.
        options.prune_every = DEFAULT_PRUNE_EVERY
            .min(Duration::from_secs(config.store.retain_finished_secs) / 4)
            .max(Duration::from_millis(100));
        if config.roles.matchmaker {
            options.matchmaker = Some(MatchmakerOptions {
                snapshot_every_events: config.matchmaker.snapshot_every_events,
                ..MatchmakerOptions::default()
            });
        }
        if let Some(operator_config) = config.operator_config()? {
            let mut op = OperatorOptions::new(operator_config);
            let table = config.operator.clone().unwrap_or_default();
            let int = |key: &'static str| -> Result<Option<u64>, OptionsError> {
                match table.get(key) {
                    None => Ok(None),
                    Some(v) => v
                        .as_integer()
                        .and_then(|i| u64::try_from(i).ok())
                        .map(Some)
                        .ok_or(OptionsError::OperatorKey {
                            key,
                            problem: "must be a non-negative integer".into(),
                        }),
                }
            };
            if let Some(ms) = int("heartbeat_ms")? {
                op.heartbeat_interval = Duration::from_millis(ms.max(1));
            }
            if let Some(ms) = int("advert_ms")? {
                op.advert_interval = Duration::from_millis(ms.max(1));
            }
            if let Some(v) = table.get("price_wei") {
                let parsed = match v {
                    toml::Value::Integer(i) => u128::try_from(*i).ok(),
                    toml::Value::String(s) => s.parse().ok(),
                    _ => None,
                };
                op.price_wei = parsed.ok_or(OptionsError::OperatorKey {
                    key: "price_wei",
                    problem: "must be a non-negative integer or a decimal string".into(),
                })?;
            }
            if let Some(v) = table.get("eth_address") {
                let bad = || OptionsError::OperatorKey {
                    key: "eth_address",
                    problem: "must be 0x followed by 40 hex digits".into(),
                };
                let s = v.as_str().ok_or_else(bad)?;
                let bytes =
                    hex::decode(s.strip_prefix("0x").ok_or_else(bad)?).map_err(|_| bad())?;
                op.eth_address = Some(bytes.try_into().map_err(|_| bad())?);
            }
            if let Some(v) = table.get("corrupt_results") {
                op.corrupt_results = v.as_bool().ok_or(OptionsError::OperatorKey {
                    key: "corrupt_results",
                    problem: "must be true or false".into(),
                })?;
            }
            options.operator = Some(op);
        }
        Ok(options)
    }
}
