//! Node configuration: the example file parses, layering file -> env -> flags, and errors name
//! what to change.

use clap::Parser;
use proofmesh_node::config::{ConfigError, NodeArgs, NodeConfig};
use std::collections::HashMap;
use std::path::Path;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: NodeArgs,
}

fn args(flags: &[&str]) -> NodeArgs {
    Cli::try_parse_from(std::iter::once("proofmesh").chain(flags.iter().copied()))
        .unwrap()
        .args
}

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

/// A `node.toml` holding `text`, in a temporary directory (kept alive by the returned handle),
/// and its path.
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap().to_owned();
    (dir, path)
}

const EXAMPLE: &str = include_str!("../../node.example.toml");

#[test]
fn example_config_parses_to_the_defaults() {
    let config = NodeConfig::from_toml(EXAMPLE, Path::new("node.example.toml")).unwrap();
    config.validate().unwrap();
    assert_eq!(
        config,
        NodeConfig::default(),
        "the example documents the defaults"
    );
    assert_eq!(config.rpc.bind.port(), 7545);
    assert_eq!(config.listen_addrs().unwrap().len(), 1);
}

#[test]
fn commented_operator_sections_of_the_example_are_valid() {
    // The inline form, uncommented.
    let inline = EXAMPLE
        .replace("operator = false", "operator = true")
        .replace("# [operator]\n# work_dir", "[operator]\nwork_dir")
        .replace(
            "# max_concurrent = 4\n# queue_depth = 8\n# [operator.programs]\n# \"noop@1\"",
            "max_concurrent = 4\nqueue_depth = 8\n[operator.programs]\n\"noop@1\"",
        );
    let config = NodeConfig::from_toml(&inline, Path::new("inline.toml")).unwrap();
    config.validate().unwrap();
    let op = config
        .operator_config()
        .unwrap()
        .expect("operator role is on");
    assert_eq!(op.max_concurrent, 4);
    assert_eq!(op.queue_depth, 8, "not the default (4)");
    assert!(op.programs.contains_key("noop@1"));
}

#[test]
fn layering_file_then_env_then_flags() {
    let (_dir, file_s) = config_file(
        "data_dir = \"/from/file\"\n[network]\nnetwork_id = 5\n[chain]\nchain_id = 10\n",
    );
    let file_s = file_s.as_str();

    let c = NodeConfig::load_with_env(&args(&["--config", file_s]), env(&[])).unwrap();
    assert_eq!(
        (
            c.data_dir.to_str().unwrap(),
            c.network.network_id,
            c.chain.chain_id
        ),
        ("/from/file", 5, 10)
    );

    let e = env(&[
        ("PROOFMESH_NETWORK_ID", "6"),
        ("PROOFMESH_DATA_DIR", "/from/env"),
        ("PROOFMESH_MATCHMAKER", "true"),
    ]);
    let c = NodeConfig::load_with_env(&args(&["--config", file_s]), &e).unwrap();
    assert_eq!(
        (
            c.data_dir.to_str().unwrap(),
            c.network.network_id,
            c.chain.chain_id
        ),
        ("/from/env", 6, 10)
    );
    assert!(c.roles.matchmaker);

    let flags = args(&[
        "--config",
        file_s,
        "--network.id",
        "7",
        "--roles.matchmaker=false",
        "--rpc.bind",
        "127.0.0.1:9000",
    ]);
    let c = NodeConfig::load_with_env(&flags, &e).unwrap();
    assert_eq!(
        (c.data_dir.to_str().unwrap(), c.network.network_id),
        ("/from/env", 7)
    );
    assert!(!c.roles.matchmaker, "the flag beats the environment");
    assert_eq!(c.rpc.bind.port(), 9000);

    // PROOFMESH_CONFIG names the file when --config does not.
    let c = NodeConfig::load_with_env(&args(&[]), env(&[("PROOFMESH_CONFIG", file_s)])).unwrap();
    assert_eq!(c.chain.chain_id, 10);
}

#[test]
fn the_matchmaker_snapshot_period_layers_and_reaches_the_runtime() {
    let (_dir, file_s) =
        config_file("[roles]\nmatchmaker = true\n[matchmaker]\nsnapshot_every_events = 500\n");
    let file_s = file_s.as_str();
    let period = |c: &NodeConfig| c.matchmaker.snapshot_every_events;
    let c = NodeConfig::load_with_env(&args(&["--config", file_s]), env(&[])).unwrap();
    assert_eq!(period(&c), 500);
    let e = env(&[("PROOFMESH_MATCHMAKER_SNAPSHOT_EVERY_EVENTS", "600")]);
    let c = NodeConfig::load_with_env(&args(&["--config", file_s]), &e).unwrap();
    assert_eq!(period(&c), 600);
    let flags = args(&[
        "--config",
        file_s,
        "--matchmaker.snapshot-every-events",
        "700",
    ]);
    let c = NodeConfig::load_with_env(&flags, &e).unwrap();
    assert_eq!(period(&c), 700);
    c.validate().unwrap();
    let options = proofmesh_node::runtime::NodeOptions::from_config(&c).unwrap();
    let matchmaker = options.matchmaker.expect("the matchmaker role is on");
    assert_eq!(matchmaker.snapshot_every_events, 700);

    // Zero is refused, naming the field, its flag and its variable.
    let e = env(&[("PROOFMESH_MATCHMAKER_SNAPSHOT_EVERY_EVENTS", "0")]);
    let err = NodeConfig::load_with_env(&args(&["--config", file_s]), &e)
        .and_then(|c| c.validate().map(|()| c))
        .unwrap_err()
        .to_string();
    for part in [
        "matchmaker.snapshot_every_events",
        "--matchmaker.snapshot-every-events",
        "PROOFMESH_MATCHMAKER_SNAPSHOT_EVERY_EVENTS",
    ] {
        assert!(err.contains(part), "{err}");
    }
}

#[test]
fn errors_name_the_field_flag_and_variable() {
    let err = NodeConfig::load_with_env(&args(&["--network.listen", "not-a-multiaddr"]), env(&[]))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("network.listen")
            && msg.contains("--network.listen")
            && msg.contains("PROOFMESH_LISTEN"),
        "{msg}"
    );

    let err =
        NodeConfig::load_with_env(&args(&["--rpc.bind", "0.0.0.0:7545"]), env(&[])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("rpc.token") && msg.contains("PROOFMESH_RPC_TOKEN"),
        "{msg}"
    );
    NodeConfig::load_with_env(
        &args(&["--rpc.bind", "0.0.0.0:7545", "--rpc.token", "t"]),
        env(&[]),
    )
    .unwrap();

    let err =
        NodeConfig::load_with_env(&args(&[]), env(&[("PROOFMESH_CHAIN_ID", "abc")])).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Env {
                var: "PROOFMESH_CHAIN_ID",
                ..
            }
        ),
        "{err}"
    );

    let err =
        NodeConfig::load_with_env(&args(&["--chain.contract", "0x1234"]), env(&[])).unwrap_err();
    assert!(err.to_string().contains("20 bytes"), "{err}");

    let err = NodeConfig::load_with_env(
        &args(&["--network.bootstrap", "/ip4/127.0.0.1/tcp/1"]),
        env(&[]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/p2p/"), "{err}");

    let err = NodeConfig::load_with_env(&args(&["--roles.operator"]), env(&[])).unwrap_err();
    assert!(err.to_string().contains("[operator]"), "{err}");

    let err = NodeConfig::from_toml("[rpc]\nbindd = \"x\"\n", Path::new("bad.toml")).unwrap_err();
    assert!(
        err.to_string().contains("bindd") && err.to_string().contains("bad.toml"),
        "{err}"
    );
}

#[test]
fn test_config_uses_port_zero_and_a_fresh_dir() {
    let a = NodeConfig::test();
    let b = NodeConfig::test();
    assert_ne!(a.data_dir, b.data_dir);
    assert_eq!(a.rpc.bind.port(), 0);
    assert!(a.rpc.bind.ip().is_loopback());
    a.validate().unwrap();
}

#[test]
fn trusted_matchmakers_layer_like_every_field_and_a_bad_key_is_named() {
    let (k1, k2, k3) = ("11".repeat(32), "22".repeat(32), "33".repeat(32));
    let (_dir, file_s) = config_file(&format!("[network]\nmatchmakers = [\"{k1}\"]\n"));
    let file_s = file_s.as_str();
    let keys = |c: &NodeConfig| -> Vec<String> {
        c.trusted_matchmakers()
            .unwrap()
            .iter()
            .map(|k| k.to_hex())
            .collect()
    };

    let c = NodeConfig::load_with_env(&args(&["--config", file_s]), env(&[])).unwrap();
    assert_eq!(keys(&c), vec![k1.clone()]);
    let listed = format!("{k2},{k3}");
    let e = env(&[("PROOFMESH_MATCHMAKERS", listed.as_str())]);
    let c = NodeConfig::load_with_env(&args(&["--config", file_s]), &e).unwrap();
    assert_eq!(keys(&c), vec![k2, k3]);
    let c = NodeConfig::load_with_env(
        &args(&["--config", file_s, "--network.matchmaker", &k1]),
        &e,
    )
    .unwrap();
    assert_eq!(keys(&c), vec![k1.clone()], "the flag beats the environment");

    let err = NodeConfig::load_with_env(
        &args(&[
            "--network.matchmaker",
            &k1,
            "--network.matchmaker",
            "0xnot-a-key",
        ]),
        env(&[]),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("network.matchmakers")
            && msg.contains("entry 1")
            && msg.contains("0xnot-a-key")
            && msg.contains("--network.matchmaker")
            && msg.contains("PROOFMESH_MATCHMAKERS"),
        "{msg}"
    );
}

#[test]
fn committed_testnet_configs_are_valid_and_trust_exactly_its_matchmakers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testnet/config");
    let key_of = |node: &str| {
        let text = std::fs::read_to_string(root.join(node).join("node.key")).unwrap();
        proofmesh_protocol::Keypair::from_file_string(&text)
            .unwrap()
            .public()
    };
    let matchmakers = vec![key_of("matchmaker-0"), key_of("matchmaker-1")];
    let nodes = [
        "gateway",
        "matchmaker-0",
        "matchmaker-1",
        "operator-0",
        "operator-1",
        "operator-2",
        "operator-3",
    ];
    for node in nodes {
        let path = root.join(node).join("node.toml");
        let mut config = NodeConfig::from_toml(&std::fs::read_to_string(&path).unwrap(), &path)
            .unwrap_or_else(|e| panic!("{node}: {e}"));
        // docker-compose.yml hands the gateway (the only non-loopback RPC) its bearer token.
        if node == "gateway" {
            config.rpc.token = Some("testnet-local-token".into());
        }
        config.validate().unwrap_or_else(|e| panic!("{node}: {e}"));
        assert_eq!(
            config.trusted_matchmakers().unwrap(),
            matchmakers,
            "{node}: regenerate with testnet/gen-config.sh"
        );
    }
}
