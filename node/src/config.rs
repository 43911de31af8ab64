//! Node configuration: a TOML file, then `PROOFMESH_*` environment variables, then flags, each
//! layer overriding the one before (foundry's layering). Every field can be set at every layer;
//! `node/node.example.toml` documents them all and [`ENV_VARS`] lists the variables.
//!
//! Flags come in one clap `Args` struct per subsystem with its own help heading (reth's
//! `args/` layout), all flattened into [`NodeArgs`]. The environment is applied by hand rather
//! than through clap's `env` attribute so the layering is explicit and testable with a fake
//! environment ([`NodeConfig::load_with_env`]).
//!
//! Errors name the field, the flag and the variable to change.

use crate::rpc::DEFAULT_PORT;
use clap::Args;
use libp2p::Multiaddr;
use proofmesh_operator::OperatorConfig;
use proofmesh_protocol::PublicKey;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Keys of the `[operator]` section that the node runtime reads itself
/// (`crate::runtime::NodeOptions::from_config`) rather than the operator crate:
/// `price_wei` (decimal string or integer), `eth_address` (0x + 40 hex), `heartbeat_ms`,
/// `advert_ms`, and `corrupt_results` (FAULT INJECTION for the malicious-operator test only:
/// the operator signs proofs with one byte flipped).
pub const RUNTIME_OPERATOR_KEYS: &[&str] = &[
    "price_wei",
    "eth_address",
    "heartbeat_ms",
    "advert_ms",
    "corrupt_results",
];

/// Default p2p port.
pub const DEFAULT_P2P_PORT: u16 = 7546;

/// What is wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source} (check --config / PROOFMESH_CONFIG)")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown or mistyped fields.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message (with line and column).
        message: String,
    },
    /// An environment variable does not parse.
    #[error("invalid environment variable {var}={value:?}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// A field has an invalid value (from any layer).
    #[error("invalid {field}: {message} (set `{field}` in the config file, {flag} or {env})")]
    Invalid {
        /// The TOML field, e.g. `network.listen`.
        field: &'static str,
        /// The flag that sets it.
        flag: &'static str,
        /// The environment variable that sets it.
        env: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The whole node configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Directory of the store (`store.redb`, `blobs/`) and, by default, the key file.
    pub data_dir: PathBuf,
    /// The node's ed25519 key file (`proofmesh keys generate`); default `<data_dir>/node.key`.
    pub key_file: Option<PathBuf>,
    /// p2p network.
    pub network: NetworkSection,
    /// Settlement chain.
    pub chain: ChainSection,
    /// Which roles this node runs (every node relays gossip and serves RPC).
    pub roles: RolesSection,
    /// Operator settings (used when `roles.operator = true`): either `config = "FILE"` naming an
    /// operator config file, or the operator config's fields inline (see
    /// `operator/operator.example.toml`).
    pub operator: Option<toml::Table>,
    /// Matchmaker settings (used when `roles.matchmaker = true`).
    pub matchmaker: MatchmakerSection,
    /// The store: how long finished workflows are kept.
    pub store: StoreSection,
    /// JSON-RPC, `/metrics` and `/health`.
    pub rpc: RpcConfig,
    /// Prometheus metrics.
    pub metrics: MetricsSection,
    /// Logging.
    pub log: LogSection,
}

/// `[network]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Peers to dial at start, each ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<String>,
    /// Network id: nodes with different ids ignore each other's messages.
    pub network_id: u64,
    /// Public keys (hex) of the matchmakers this node trusts: only they may announce
    /// themselves, assign and cancel tasks, fail workflows and say which results are accepted
    /// (gossiped verdicts, catch-up answers, pushed inputs). Empty: any node that signs such a
    /// message is believed, which only a closed development network can afford.
    pub matchmakers: Vec<String>,
}

/// `[chain]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainSection {
    /// Chain id (part of every envelope's domain).
    pub chain_id: u64,
    /// Ethereum JSON-RPC URL; none: no on-chain settlement.
    pub rpc_url: Option<String>,
    /// ProofMarket contract address (0x + 40 hex).
    pub contract: Option<String>,
    /// File holding this node's Ethereum private key (0x + 64 hex): an operator registers,
    /// stakes and signs evidence with it; a matchmaker settles and slashes with it.
    pub eth_key_file: Option<PathBuf>,
    /// Stake an operator puts up when it registers, wei (decimal string).
    pub stake_wei: String,
}

/// `[roles]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolesSection {
    /// Run tasks (needs the `[operator]` section).
    pub operator: bool,
    /// Schedule workflows.
    pub matchmaker: bool,
}

/// `[matchmaker]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchmakerSection {
    /// Events logged between two snapshots of the matchmaker's state: a restart restores the
    /// last snapshot and replays at most about this many events; older ones are dropped.
    pub snapshot_every_events: u64,
}

impl Default for MatchmakerSection {
    fn default() -> Self {
        MatchmakerSection {
            snapshot_every_events: crate::runtime::DEFAULT_SNAPSHOT_EVERY_EVENTS,
        }
    }
}

/// `[store]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Seconds a finished workflow (its tasks, results and the blobs no other workflow names)
    /// is kept after it finished, and after its on-chain settlement on a node that settles;
    /// then it is pruned, leaving only a record of how it ended. 0 keeps everything forever.
    pub retain_finished_secs: u64,
}

/// A week: long past any settlement, dispute or download of the final proof.
pub const DEFAULT_RETAIN_FINISHED_SECS: u64 = 7 * 24 * 3600;

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            retain_finished_secs: DEFAULT_RETAIN_FINISHED_SECS,
        }
    }
}

/// `[rpc]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcConfig {
    /// Serve RPC at all.
    pub enabled: bool,
    /// Address to bind; any non-loopback address requires `token`.
    pub bind: SocketAddr,
    /// Bearer token every request must carry when set.
    pub token: Option<String>,
}

/// `[metrics]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve `/metrics` on the RPC port.
    pub enabled: bool,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// tracing `EnvFilter` directive, e.g. `info,proofmesh_node=debug`.
    pub filter: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("proofmesh-data"),
            key_file: None,
            network: NetworkSection::default(),
            chain: ChainSection::default(),
            roles: RolesSection::default(),
            operator: None,
            matchmaker: MatchmakerSection::default(),
            store: StoreSection::default(),
            rpc: RpcConfig::default(),
            metrics: MetricsSection::default(),
            log: LogSection::default(),
        }
    }
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection {
            listen: vec![format!("/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}")],
            bootstrap: Vec::new(),
            network_id: 1,
            matchmakers: Vec::new(),
        }
    }
}

impl Default for ChainSection {
    fn default() -> Self {
        // anvil's chain id: the local devnet is the default target.
        ChainSection {
            chain_id: 31337,
            rpc_url: None,
            contract: None,
            eth_key_file: None,
            // The devnet market's minimum stake: 1 ETH.
            stake_wei: "1000000000000000000".into(),
        }
    }
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            enabled: true,
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT),
            token: None,
        }
    }
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection { enabled: true }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            filter: "info".into(),
        }
    }
}

/// Every environment variable the node reads, with the field it sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("PROOFMESH_CONFIG", "config file path (--config)"),
    ("PROOFMESH_DATA_DIR", "data_dir"),
    ("PROOFMESH_KEY_FILE", "key_file"),
    ("PROOFMESH_LISTEN", "network.listen (comma-separated)"),
    ("PROOFMESH_BOOTSTRAP", "network.bootstrap (comma-separated)"),
    ("PROOFMESH_NETWORK_ID", "network.network_id"),
    (
        "PROOFMESH_MATCHMAKERS",
        "network.matchmakers (comma-separated public keys)",
    ),
    ("PROOFMESH_CHAIN_ID", "chain.chain_id"),
    ("PROOFMESH_CHAIN_RPC_URL", "chain.rpc_url"),
    ("PROOFMESH_CONTRACT", "chain.contract"),
    ("PROOFMESH_ETH_KEY_FILE", "chain.eth_key_file"),
    ("PROOFMESH_STAKE_WEI", "chain.stake_wei"),
    ("PROOFMESH_OPERATOR", "roles.operator (true/false)"),
    ("PROOFMESH_MATCHMAKER", "roles.matchmaker (true/false)"),
    ("PROOFMESH_OPERATOR_CONFIG", "operator.config"),
    (
        "PROOFMESH_MATCHMAKER_SNAPSHOT_EVERY_EVENTS",
        "matchmaker.snapshot_every_events",
    ),
    (
        "PROOFMESH_STORE_RETAIN_FINISHED_SECS",
        "store.retain_finished_secs (0: keep forever)",
    ),
    ("PROOFMESH_RPC_ENABLED", "rpc.enabled (true/false)"),
    ("PROOFMESH_RPC_BIND", "rpc.bind"),
    ("PROOFMESH_RPC_TOKEN", "rpc.token"),
    ("PROOFMESH_METRICS", "metrics.enabled (true/false)"),
    ("PROOFMESH_LOG", "log.filter"),
];

/// Flags of `proofmesh node`.
#[derive(Args, Clone, Debug, Default)]
pub struct NodeArgs {
    /// Config file (TOML); see node/node.example.toml. [env: PROOFMESH_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (store and default key file). [env: PROOFMESH_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Node key file. [env: PROOFMESH_KEY_FILE]
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    #[command(flatten)]
    pub network: NetworkArgs,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub roles: RoleArgs,
    #[command(flatten)]
    pub matchmaker: MatchmakerArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub rpc: RpcArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// p2p flags.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Network")]
pub struct NetworkArgs {
    /// Listen multiaddr (repeatable). [env: PROOFMESH_LISTEN, comma-separated]
    #[arg(long = "network.listen", value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// Bootstrap peer multiaddr ending in /p2p/<peer id> (repeatable). [env: PROOFMESH_BOOTSTRAP]
    #[arg(long = "network.bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// Network id. [env: PROOFMESH_NETWORK_ID]
    #[arg(long = "network.id", value_name = "ID")]
    pub network_id: Option<u64>,
    /// Public key (hex) of a trusted matchmaker (repeatable). [env: PROOFMESH_MATCHMAKERS,
    /// comma-separated]
    #[arg(long = "network.matchmaker", value_name = "PUBLIC_KEY")]
    pub matchmakers: Vec<String>,
}

/// Chain flags.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Chain")]
pub struct ChainArgs {
    /// Chain id. [env: PROOFMESH_CHAIN_ID]
    #[arg(long = "chain.id", value_name = "ID")]
    pub chain_id: Option<u64>,
    /// Ethereum JSON-RPC URL. [env: PROOFMESH_CHAIN_RPC_URL]
    #[arg(long = "chain.rpc-url", value_name = "URL")]
    pub rpc_url: Option<String>,
    /// ProofMarket contract address. [env: PROOFMESH_CONTRACT]
    #[arg(long = "chain.contract", value_name = "ADDRESS")]
    pub contract: Option<String>,
    #[arg(long = "chain.eth-key-file", value_name = "FILE")]
    pub eth_key_file: Option<PathBuf>,
    #[arg(long = "chain.stake-wei", value_name = "WEI")]
    pub stake_wei: Option<String>,
}

/// Role flags.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Roles")]
pub struct RoleArgs {
    /// Run the operator role. [env: PROOFMESH_OPERATOR]
    #[arg(long = "roles.operator", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub operator: Option<bool>,
    /// Run the matchmaker role. [env: PROOFMESH_MATCHMAKER]
    #[arg(long = "roles.matchmaker", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub matchmaker: Option<bool>,
    /// Operator config file (replaces an inline [operator] section). [env: PROOFMESH_OPERATOR_CONFIG]
    #[arg(long = "operator.config", value_name = "FILE")]
    pub operator_config: Option<PathBuf>,
}

/// RPC and metrics flags.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "RPC")]
pub struct RpcArgs {
    /// Serve RPC. [env: PROOFMESH_RPC_ENABLED]
    #[arg(long = "rpc.enabled", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub enabled: Option<bool>,
    /// RPC bind address (host:port). [env: PROOFMESH_RPC_BIND]
    #[arg(long = "rpc.bind", value_name = "ADDR")]
    pub bind: Option<String>,
    /// RPC bearer token (required for a non-loopback bind). [env: PROOFMESH_RPC_TOKEN]
    #[arg(long = "rpc.token", value_name = "TOKEN")]
    pub token: Option<String>,
    /// Serve /metrics. [env: PROOFMESH_METRICS]
    #[arg(long = "metrics.enabled", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub metrics: Option<bool>,
}

/// Matchmaker flags.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Matchmaker")]
pub struct MatchmakerArgs {
    /// Events between snapshots of the matchmaker's state (a restart replays at most about
    /// this many). [env: PROOFMESH_MATCHMAKER_SNAPSHOT_EVERY_EVENTS]
    #[arg(long = "matchmaker.snapshot-every-events", value_name = "EVENTS")]
    pub snapshot_every_events: Option<u64>,
}

/// Store flags.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Store")]
pub struct StoreArgs {
    /// Seconds a finished workflow is kept (after its settlement, on a node that settles)
    /// before it is pruned; 0 keeps everything forever. [env:
    /// PROOFMESH_STORE_RETAIN_FINISHED_SECS]
    #[arg(long = "store.retain-finished-secs", value_name = "SECS")]
    pub retain_finished_secs: Option<u64>,
}

/// Logging flags.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log filter, e.g. `info,proofmesh_node=debug`. [env: PROOFMESH_LOG]
    #[arg(long = "log.filter", value_name = "FILTER")]
    pub filter: Option<String>,
}

fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::Env {
            var,
            value: value.into(),
            message: "expected true or false".into(),
        }),
    }
}

fn parse_num(var: &'static str, value: &str) -> Result<u64, ConfigError> {
    value.trim().parse().map_err(|e| ConfigError::Env {
        var,
        value: value.into(),
        message: format!("{e}"),
    })
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn parse_bind(raw: &str, source: Source) -> Result<SocketAddr, ConfigError> {
    raw.trim().parse().map_err(|e| match source {
        Source::Env => ConfigError::Env {
            var: "PROOFMESH_RPC_BIND",
            value: raw.into(),
            message: format!("{e}; expected host:port, e.g. 127.0.0.1:{DEFAULT_PORT}"),
        },
        Source::Flag => invalid(
            "rpc.bind",
            format!("{raw:?} is not host:port ({e}), e.g. 127.0.0.1:{DEFAULT_PORT}"),
        ),
    })
}

#[derive(Clone, Copy)]
enum Source {
    Env,
    Flag,
}

fn invalid(field: &'static str, message: String) -> ConfigError {
    let (flag, env) = match field {
        "data_dir" => ("--data-dir", "PROOFMESH_DATA_DIR"),
        "key_file" => ("--key-file", "PROOFMESH_KEY_FILE"),
        "network.listen" => ("--network.listen", "PROOFMESH_LISTEN"),
        "network.bootstrap" => ("--network.bootstrap", "PROOFMESH_BOOTSTRAP"),
        "network.network_id" => ("--network.id", "PROOFMESH_NETWORK_ID"),
        "network.matchmakers" => ("--network.matchmaker", "PROOFMESH_MATCHMAKERS"),
        "chain.chain_id" => ("--chain.id", "PROOFMESH_CHAIN_ID"),
        "chain.rpc_url" => ("--chain.rpc-url", "PROOFMESH_CHAIN_RPC_URL"),
        "chain.contract" => ("--chain.contract", "PROOFMESH_CONTRACT"),
        "chain.eth_key_file" => ("--chain.eth-key-file", "PROOFMESH_ETH_KEY_FILE"),
        "chain.stake_wei" => ("--chain.stake-wei", "PROOFMESH_STAKE_WEI"),
        "roles.operator" => ("--roles.operator", "PROOFMESH_OPERATOR"),
        "operator" | "operator.config" => ("--operator.config", "PROOFMESH_OPERATOR_CONFIG"),
        "matchmaker.snapshot_every_events" => (
            "--matchmaker.snapshot-every-events",
            "PROOFMESH_MATCHMAKER_SNAPSHOT_EVERY_EVENTS",
        ),
        "rpc.bind" => ("--rpc.bind", "PROOFMESH_RPC_BIND"),
        "rpc.token" => ("--rpc.token", "PROOFMESH_RPC_TOKEN"),
        "log.filter" => ("--log.filter", "PROOFMESH_LOG"),
        _ => ("its flag", "its PROOFMESH_* variable"),
    };
    ConfigError::Invalid {
        field,
        flag,
        env,
        message,
    }
}

static TEST_DIRS: AtomicU64 = AtomicU64::new(0);

impl NodeConfig {
    /// Parse a config file's text (`path` is only for error messages).
    pub fn from_toml(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Read a config file.
    pub fn from_file(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// File (if `--config`/`PROOFMESH_CONFIG`), then the process environment, then flags;
    /// validated.
    pub fn load(args: &NodeArgs) -> Result<NodeConfig, ConfigError> {
        Self::load_with_env(args, |k| std::env::var(k).ok())
    }

    /// [`NodeConfig::load`] with an explicit environment (tests).
    pub fn load_with_env(
        args: &NodeArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<NodeConfig, ConfigError> {
        let path = args
            .config
            .clone()
            .or_else(|| env("PROOFMESH_CONFIG").map(PathBuf::from));
        let mut config = match path {
            Some(p) => Self::from_file(&p)?,
            None => NodeConfig::default(),
        };
        config.apply_env(&env)?;
        config.apply_args(args)?;
        config.validate()?;
        Ok(config)
    }

    /// Override fields from `PROOFMESH_*` variables.
    pub fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("PROOFMESH_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = env("PROOFMESH_KEY_FILE") {
            self.key_file = Some(v.into());
        }
        if let Some(v) = env("PROOFMESH_LISTEN") {
            self.network.listen = split_list(&v);
        }
        if let Some(v) = env("PROOFMESH_BOOTSTRAP") {
            self.network.bootstrap = split_list(&v);
        }
        if let Some(v) = env("PROOFMESH_NETWORK_ID") {
            self.network.network_id = parse_num("PROOFMESH_NETWORK_ID", &v)?;
        }
        if let Some(v) = env("PROOFMESH_MATCHMAKERS") {
            self.network.matchmakers = split_list(&v);
        }
        if let Some(v) = env("PROOFMESH_CHAIN_ID") {
            self.chain.chain_id = parse_num("PROOFMESH_CHAIN_ID", &v)?;
        }
        if let Some(v) = env("PROOFMESH_CHAIN_RPC_URL") {
            self.chain.rpc_url = Some(v);
        }
        if let Some(v) = env("PROOFMESH_CONTRACT") {
            self.chain.contract = Some(v);
        }
        if let Some(v) = env("PROOFMESH_ETH_KEY_FILE") {
            self.chain.eth_key_file = Some(v.into());
        }
        if let Some(v) = env("PROOFMESH_STAKE_WEI") {
            self.chain.stake_wei = v;
        }
        if let Some(v) = env("PROOFMESH_OPERATOR") {
            self.roles.operator = parse_bool("PROOFMESH_OPERATOR", &v)?;
        }
        if let Some(v) = env("PROOFMESH_MATCHMAKER") {
            self.roles.matchmaker = parse_bool("PROOFMESH_MATCHMAKER", &v)?;
        }
        if let Some(v) = env("PROOFMESH_OPERATOR_CONFIG") {
            self.set_operator_file(v.into());
        }
        if let Some(v) = env("PROOFMESH_RPC_ENABLED") {
            self.rpc.enabled = parse_bool("PROOFMESH_RPC_ENABLED", &v)?;
        }
        if let Some(v) = env("PROOFMESH_RPC_BIND") {
            self.rpc.bind = parse_bind(&v, Source::Env)?;
        }
        if let Some(v) = env("PROOFMESH_RPC_TOKEN") {
            self.rpc.token = Some(v);
        }
        if let Some(v) = env("PROOFMESH_METRICS") {
            self.metrics.enabled = parse_bool("PROOFMESH_METRICS", &v)?;
        }
        if let Some(v) = env("PROOFMESH_MATCHMAKER_SNAPSHOT_EVERY_EVENTS") {
            self.matchmaker.snapshot_every_events =
                parse_num("PROOFMESH_MATCHMAKER_SNAPSHOT_EVERY_EVENTS", &v)?;
        }
        if let Some(v) = env("PROOFMESH_STORE_RETAIN_FINISHED_SECS") {
            self.store.retain_finished_secs =
                parse_num("PROOFMESH_STORE_RETAIN_FINISHED_SECS", &v)?;
        }
        if let Some(v) = env("PROOFMESH_LOG") {
            self.log.filter = v;
        }
        Ok(())
    }

    /// Override fields from flags.
    pub fn apply_args(&mut self, args: &NodeArgs) -> Result<(), ConfigError> {
        if let Some(v) = &args.data_dir {
            self.data_dir = v.clone();
        }
        if let Some(v) = &args.key_file {
            self.key_file = Some(v.clone());
        }
        if !args.network.listen.is_empty() {
            self.network.listen = args.network.listen.clone();
        }
        if !args.network.bootstrap.is_empty() {
            self.network.bootstrap = args.network.bootstrap.clone();
        }
        if let Some(v) = args.network.network_id {
            self.network.network_id = v;
        }
        if !args.network.matchmakers.is_empty() {
            self.network.matchmakers = args.network.matchmakers.clone();
        }
        if let Some(v) = args.chain.chain_id {
            self.chain.chain_id = v;
        }
        if let Some(v) = &args.chain.rpc_url {
            self.chain.rpc_url = Some(v.clone());
        }
        if let Some(v) = &args.chain.contract {
            self.chain.contract = Some(v.clone());
        }
        if let Some(v) = &args.chain.eth_key_file {
            self.chain.eth_key_file = Some(v.clone());
        }
        if let Some(v) = &args.chain.stake_wei {
            self.chain.stake_wei = v.clone();
        }
        if let Some(v) = args.roles.operator {
            self.roles.operator = v;
        }
        if let Some(v) = args.roles.matchmaker {
            self.roles.matchmaker = v;
        }
        if let Some(v) = &args.roles.operator_config {
            self.set_operator_file(v.clone());
        }
        if let Some(v) = args.rpc.enabled {
            self.rpc.enabled = v;
        }
        if let Some(v) = &args.rpc.bind {
            self.rpc.bind = parse_bind(v, Source::Flag)?;
        }
        if let Some(v) = &args.rpc.token {
            self.rpc.token = Some(v.clone());
        }
        if let Some(v) = args.rpc.metrics {
            self.metrics.enabled = v;
        }
        if let Some(v) = args.matchmaker.snapshot_every_events {
            self.matchmaker.snapshot_every_events = v;
        }
        if let Some(v) = args.store.retain_finished_secs {
            self.store.retain_finished_secs = v;
        }
        if let Some(v) = &args.log.filter {
            self.log.filter = v.clone();
        }
        Ok(())
    }

    fn set_operator_file(&mut self, path: PathBuf) {
        let mut table = toml::Table::new();
        table.insert(
            "config".into(),
            toml::Value::String(path.to_string_lossy().into_owned()),
        );
        self.operator = Some(table);
    }

    /// Check every field; the error names what to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".into()));
        }
        self.listen_addrs()?;
        self.bootstrap_addrs()?;
        self.trusted_matchmakers()?;
        if let Some(c) = &self.chain.contract {
            self.contract_address()
                .map_err(|m| invalid("chain.contract", format!("{c:?}: {m}")))?;
        }
        self.stake_wei()
            .map_err(|m| invalid("chain.stake_wei", m))?;
        if self.chain.rpc_url.is_some()
            && (self.roles.operator || self.roles.matchmaker)
            && (self.chain.contract.is_none() || self.chain.eth_key_file.is_none())
        {
            return Err(invalid(
                if self.chain.contract.is_none() {
                    "chain.contract"
                } else {
                    "chain.eth_key_file"
                },
                "an operator or matchmaker with chain.rpc_url set needs chain.contract and chain.eth_key_file".into(),
            ));
        }
        if let Some(url) = &self.chain.rpc_url {
            if !(url.starts_with("http://")
                || url.starts_with("https://")
                || url.starts_with("ws://"))
            {
                return Err(invalid(
                    "chain.rpc_url",
                    format!("{url:?} must start with http://, https:// or ws://"),
                ));
            }
        }
        if self.rpc.enabled
            && !self.rpc.bind.ip().is_loopback()
            && self.rpc.token.as_deref().unwrap_or("").is_empty()
        {
            return Err(invalid(
                "rpc.token",
                format!(
                    "rpc.bind {} is not a loopback address, so a bearer token is required",
                    self.rpc.bind
                ),
            ));
        }
        if self.matchmaker.snapshot_every_events == 0 {
            return Err(invalid(
                "matchmaker.snapshot_every_events",
                "must be at least 1 (events between snapshots; the default is 100000)".into(),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(invalid("log.filter", format!("{:?}: {e}", self.log.filter)));
        }
        if self.roles.operator {
            self.operator_config()?;
        }
        Ok(())
    }

    /// The key file path (default `<data_dir>/node.key`).
    pub fn key_path(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("node.key"))
    }

    /// Parsed `network.listen`.
    pub fn listen_addrs(&self) -> Result<Vec<Multiaddr>, ConfigError> {
        parse_addrs(&self.network.listen, "network.listen")
    }

    /// Parsed `network.matchmakers` (empty: trust any matchmaker).
    pub fn trusted_matchmakers(&self) -> Result<Vec<PublicKey>, ConfigError> {
        self.network
            .matchmakers
            .iter()
            .enumerate()
            .map(|(i, k)| {
                PublicKey::from_hex(k.trim()).ok_or_else(|| {
                    invalid(
                        "network.matchmakers",
                        format!(
                            "entry {i} ({k:?}) is not a public key: 64 hex digits, as \
                             `proofmesh keys show` prints"
                        ),
                    )
                })
            })
            .collect()
    }

    /// Parsed `network.bootstrap`; each must end in `/p2p/<peer id>`.
    pub fn bootstrap_addrs(&self) -> Result<Vec<Multiaddr>, ConfigError> {
        let addrs = parse_addrs(&self.network.bootstrap, "network.bootstrap")?;
        for (i, a) in addrs.iter().enumerate() {
            if !a
                .iter()
                .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            {
                return Err(invalid(
                    "network.bootstrap",
                    format!("entry {i} ({a}) must end in /p2p/<peer id> (the peer id the node prints at start)"),
                ));
            }
        }
        Ok(addrs)
    }

    /// Parsed `chain.contract` (20 bytes), if set.
    pub fn stake_wei(&self) -> Result<u128, String> {
        self.chain
            .stake_wei
            .trim()
            .parse()
            .map_err(|e| format!("{:?} is not a wei amount: {e}", self.chain.stake_wei))
    }

    pub fn contract_address(&self) -> Result<Option<[u8; 20]>, String> {
        let Some(c) = &self.chain.contract else {
            return Ok(None);
        };
        let hexpart = c.strip_prefix("0x").ok_or("must start with 0x")?;
        let bytes = hex::decode(hexpart).map_err(|e| format!("not hex: {e}"))?;
        let arr: [u8; 20] = bytes
            .try_into()
            .map_err(|_| "must be 20 bytes (40 hex digits)".to_string())?;
        Ok(Some(arr))
    }

    /// The operator config: `None` when the operator role is off; the file named by
    /// `operator.config`, or the inline `[operator]` table.
    pub fn operator_config(&self) -> Result<Option<OperatorConfig>, ConfigError> {
        if !self.roles.operator {
            return Ok(None);
        }
        let Some(table) = &self.operator else {
            return Err(invalid(
                "operator",
                "roles.operator is true but there is no [operator] section: add `[operator] config = \"FILE\"` or the operator fields inline".into(),
            ));
        };
        if let Some(path) = table.get("config") {
            let Some(path) = path.as_str() else {
                return Err(invalid(
                    "operator.config",
                    "must be a file path string".into(),
                ));
            };
            if table.len() > 1 {
                return Err(invalid(
                    "operator.config",
                    "give either operator.config or inline operator fields, not both".into(),
                ));
            }
            return OperatorConfig::load(Path::new(path))
                .map(Some)
                .map_err(|e| invalid("operator.config", e.to_string()));
        }
        // Keys the node runtime reads itself (see `RUNTIME_OPERATOR_KEYS`) are not operator-crate fields.
        let mut table = table.clone();
        for key in RUNTIME_OPERATOR_KEYS {
            table.remove(*key);
        }
        let text = toml::to_string(&table).map_err(|e| invalid("operator", e.to_string()))?;
        OperatorConfig::from_toml(&text)
            .map(Some)
            .map_err(|e| invalid("operator", e.to_string()))
    }

    /// A config for tests: a fresh directory under the system temp dir, p2p and RPC on
    /// loopback port 0. The caller removes `data_dir` when done (or points it at a `TempDir`).
    pub fn test() -> NodeConfig {
        let n = TEST_DIRS.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let data_dir =
            std::env::temp_dir().join(format!("proofmesh-test-{}-{n}-{nanos}", std::process::id()));
        NodeConfig {
            data_dir,
            network: NetworkSection {
                listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
                bootstrap: Vec::new(),
                network_id: 1,
                matchmakers: Vec::new(),
            },
            rpc: RpcConfig {
                enabled: true,
                bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                token: None,
            },
            log: LogSection {
                filter: "warn".into(),
            },
            ..NodeConfig::default()
        }
    }
}

fn parse_addrs(raw: &[String], field: &'static str) -> Result<Vec<Multiaddr>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<Multiaddr>()
                .map_err(|e| invalid(field, format!("entry {i} ({s:?}) is not a multiaddr: {e}; e.g. /ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}")))
        })
        .collect()
}
