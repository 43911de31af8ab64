//! Gossip propagation on loopback: N nodes in one process (real TCP + noise + yamux sockets on
//! 127.0.0.1), one publishes signed envelopes, and we time until every other node has validated
//! and delivered each one.
//!
//! `cargo bench -p proofmesh-node --bench gossip -- [--nodes 20] [--messages 500] [--running 0]
//! [--heartbeat-ms 700] [--gap-ms 5] [--rotate]`
//!
//! `--running K` pads each heartbeat with K running-task entries (about 40 bytes each) to test
//! larger messages; `--rotate` publishes from every node in turn instead of node 0 only.
//! The last line is `key=value` pairs.

use prometheus_client::registry::Registry;
use proofmesh_node::network::{self, Clock, NetworkConfig, NetworkEvent};
use proofmesh_protocol::messages::Heartbeat;
use proofmesh_protocol::{ContentId, Domain, Envelope, Keypair, Message};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const DOMAIN: Domain = Domain {
    network_id: 1,
    chain_id: 31337,
};

struct Args {
    nodes: usize,
    messages: usize,
    running: usize,
    heartbeat_ms: u64,
    gap_ms: u64,
    rotate: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        nodes: 20,
        messages: 500,
        running: 0,
        heartbeat_ms: 700,
        gap_ms: 5,
        rotate: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = |i: usize| argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match argv[i].as_str() {
            "--nodes" => a.nodes = val(i).map_or(a.nodes, |v| v as usize),
            "--messages" => a.messages = val(i).map_or(a.messages, |v| v as usize),
            "--running" => a.running = val(i).map_or(a.running, |v| v as usize),
            "--heartbeat-ms" => a.heartbeat_ms = val(i).unwrap_or(a.heartbeat_ms),
            "--gap-ms" => a.gap_ms = val(i).unwrap_or(a.gap_ms),
            "--rotate" => {
                a.rotate = true;
                i += 1;
                continue;
            }
            // `cargo bench` passes `--bench`; ignore what we do not know.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a.nodes = a.nodes.max(2);
    a
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let clock: Clock = network::system_clock();
    let n = args.nodes;
    // (node index, nonce, instant delivered)
    let (tx, mut deliveries) = mpsc::unbounded_channel::<(usize, u64, Instant)>();
    let mut clients = Vec::new();
    let mut keys = Vec::new();
    let mut addrs: Vec<network::Multiaddr> = Vec::new();
    for i in 0..n {
        let keypair = Keypair::generate();
        let mut config = NetworkConfig::new(DOMAIN);
        config.clock = clock.clone();
        config.gossip.heartbeat_interval = Duration::from_millis(args.heartbeat_ms);
        // Bootstrap to the first node and the previous one; kademlia finds the rest.
        let mut boot: Vec<_> = addrs.first().cloned().into_iter().collect();
        if i > 1 {
            boot.push(addrs[i - 1].clone());
        }
        config.bootstrap = boot;
        let mut registry = Registry::default();
        let (client, mut events) =
            network::spawn(config, &keypair, &mut registry).expect("node starts");
        let addr = client.listen_addrs().await.expect("listening").remove(0);
        let tx = tx.clone();
        tokio::spawn(async move {
            let _registry = registry;
            while let Some(event) = events.recv().await {
                if let NetworkEvent::Message { envelope, .. } = event {
                    let _ = tx.send((i, envelope.nonce, Instant::now()));
                }
            }
        });
        clients.push(client);
        keys.push(keypair);
        addrs.push(addr);
    }

    // Wait for every node to have a full-ish mesh on the heartbeat topic.
    let setup = Instant::now();
    loop {
        let mut ready = 0;
        for c in &clients {
            if c.mesh_peers(network::Topic::Heartbeats)
                .await
                .map(|p| p.len())
                .unwrap_or(0)
                >= 4.min(n - 1)
            {
                ready += 1;
            }
        }
        if ready == n {
            break;
        }
        assert!(
            setup.elapsed() < Duration::from_secs(60),
            "mesh did not form: {ready}/{n} nodes ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut degree = 0;
    for c in &clients {
        degree += c.peers().await.map(|p| p.len()).unwrap_or(0);
    }
    eprintln!(
        "mesh formed in {:?}; mean connections per node {:.1}",
        setup.elapsed(),
        degree as f64 / n as f64
    );

    let warmup = 20;
    let mut all_ms = Vec::new();
    let mut each_ms = Vec::new();
    let mut lost = 0usize;
    let started = Instant::now();
    for k in 0..(warmup + args.messages) {
        let publisher = if args.rotate { k % n } else { 0 };
        let nonce = k as u64 + 1;
        let running = (0..args.running)
            .map(|j| (ContentId::of_bytes(&j.to_le_bytes()), j as u32, 1))
            .collect();
        let msg = Message::Heartbeat(Heartbeat {
            operator: keys[publisher].public(),
            at_ms: clock(),
            running,
        });
        let env = Envelope::seal(&keys[publisher], DOMAIN, &msg, nonce, clock() + 60_000);
        let t0 = Instant::now();
        clients[publisher].publish(&env).await.expect("publish");
        let mut last = t0;
        let mut last_node = usize::MAX;
        let mut got = 0;
        let deadline = t0 + Duration::from_secs(5);
        while got < n - 1 {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, deliveries.recv()).await {
                Ok(Some((node, nonce_got, at))) if nonce_got == nonce => {
                    got += 1;
                    if at >= last {
                        last = at;
                        last_node = node;
                    }
                    if k >= warmup {
                        each_ms.push(at.duration_since(t0).as_secs_f64() * 1e3);
                    }
                }
                Ok(Some(_)) => {} // a straggler from an earlier message
                _ => break,
            }
        }
        if k >= warmup && last.duration_since(t0) > Duration::from_millis(200) {
            // Which publisher and which last receiver the slow path involves (diagnosis).
            let mesh = clients[last_node]
                .mesh_peers(network::Topic::Heartbeats)
                .await
                .map(|p| p.len())
                .unwrap_or(0);
            let peers = clients[last_node]
                .peers()
                .await
                .map(|p| p.len())
                .unwrap_or(0);
            let pub_peers = clients[publisher]
                .peers()
                .await
                .map(|p| p.len())
                .unwrap_or(0);
            eprintln!(
                "slow: message {k} from node {publisher} ({pub_peers} peers) reached node {last_node} ({peers} peers, mesh {mesh}) after {:.1} ms",
                last.duration_since(t0).as_secs_f64() * 1e3
            );
        }
        if k >= warmup {
            if got < n - 1 {
                lost += 1;
            } else {
                all_ms.push(last.duration_since(t0).as_secs_f64() * 1e3);
            }
        }
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    let elapsed = started.elapsed();
    all_ms.sort_by(f64::total_cmp);
    each_ms.sort_by(f64::total_cmp);
    let bytes = {
        let running = (0..args.running)
            .map(|j| (ContentId::of_bytes(&j.to_le_bytes()), j as u32, 1))
            .collect();
        let msg = Message::Heartbeat(Heartbeat {
            operator: keys[0].public(),
            at_ms: 0,
            running,
        });
        Envelope::seal(&keys[0], DOMAIN, &msg, 0, 0)
            .to_bytes()
            .len()
    };
    eprintln!(
        "{} messages of {bytes} bytes to {} peers in {:.1?}: all-delivered P50 {:.2} ms, P90 {:.2} ms, P99 {:.2} ms, max {:.2} ms; per-delivery P50 {:.2} ms, P99 {:.2} ms; lost {lost}",
        args.messages,
        n - 1,
        elapsed,
        percentile(&all_ms, 50.0),
        percentile(&all_ms, 90.0),
        percentile(&all_ms, 99.0),
        all_ms.last().copied().unwrap_or(f64::NAN),
        percentile(&each_ms, 50.0),
        percentile(&each_ms, 99.0),
    );
    println!(
        "nodes={n} messages={} bytes={bytes} heartbeat_ms={} rotate={} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} delivery_p50_ms={:.2} delivery_p99_ms={:.2} lost={lost}",
        args.messages,
        args.heartbeat_ms,
        args.rotate,
        percentile(&all_ms, 50.0),
        percentile(&all_ms, 90.0),
        percentile(&all_ms, 99.0),
        all_ms.last().copied().unwrap_or(f64::NAN),
        percentile(&each_ms, 50.0),
        percentile(&each_ms, 99.0),
    );
}
