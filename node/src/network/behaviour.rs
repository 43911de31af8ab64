//! The libp2p behaviour: which protocols run, in which order, with which settings.
//!
//! Behaviours that can refuse come first (connection limits), as in lighthouse. gossipsub
//! runs in anonymous mode: every payload is a signed [`proofmesh_protocol::Envelope`], so a second
//! libp2p signature per message would only cost CPU on every hop; authenticity comes from
//! validation instead, and message ids are content hashes.

use libp2p::gossipsub::{
    self, MessageId, PeerScoreParams, PeerScoreThresholds, TopicScoreParams, ValidationMode,
};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{connection_limits, identify, identity, kad, ping, request_response, StreamProtocol};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::codec::BytesCodec;
use super::topics::Topic;
use super::NetworkConfig;

/// Kademlia protocol name: private, so proofmesh peers never join the public IPFS DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/proofmesh/kad/1.0.0");
/// Chunked blob transfer.
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/proofmesh/blob/1");
/// identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/proofmesh/id/1.0.0";

/// Room for gossipsub's protobuf framing around a maximal envelope.
const GOSSIP_FRAMING_BYTES: usize = 64 * 1024;
/// Room for the blob response's encoding around a chunk.
const BLOB_FRAMING_BYTES: usize = 1024;

/// Peers whose listen addresses identify remembers (least recently seen forgotten first).
const IDENTIFY_CACHE: usize = 4096;

/// Every protocol a proofmesh peer speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub direct: super::direct::Behaviour,
    pub blob: request_response::Behaviour<BytesCodec>,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
}

impl Behaviour {
    pub(crate) fn new(
        key: &identity::Keypair,
        config: &NetworkConfig,
        intake: super::direct::Intake,
    ) -> Result<Self, String> {
        let peer_id = key.public().to_peer_id();

        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_per_peer(Some(2)),
        );

        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Anonymous,
            gossip_config(config)?,
        )?;
        let (params, thresholds) = score_params(config.domain.network_id);
        gossipsub.with_peer_score(params, thresholds)?;

        let rr_config =
            request_response::Config::default().with_request_timeout(config.request_timeout);
        let direct = super::direct::Behaviour::new(
            config.max_message_bytes,
            config.max_message_bytes + BLOB_FRAMING_BYTES,
            config.request_timeout,
            intake,
        );
        let blob = request_response::Behaviour::with_codec(
            BytesCodec::new(
                BLOB_FRAMING_BYTES,
                config.blob_chunk_bytes + BLOB_FRAMING_BYTES,
            ),
            [(BLOB_PROTOCOL, request_response::ProtocolSupport::Full)],
            rr_config,
        );

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config.set_query_timeout(Duration::from_secs(30));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Set explicitly: kad's automatic mode waits for a confirmed external address, which
        // private and loopback networks never get, and would leave every peer a client.
        kad.set_mode(Some(if config.kad_server {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        }));

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                .with_agent_version(format!("proofmesh/{}", env!("CARGO_PKG_VERSION")))
                // The addresses peers listen on, kept for dialing them again: the only way a
                // matchmaker finds an operator (a kad client, absent from every routing table)
                // whose connection closed.
                .with_cache_size(IDENTIFY_CACHE),
        );
        let ping = ping::Behaviour::new(ping::Config::new());

        Ok(Behaviour {
            limits,
            gossipsub,
            direct,
            blob,
            kad,
            identify,
            ping,
        })
    }
}

fn gossip_config(config: &NetworkConfig) -> Result<gossipsub::Config, String> {
    let g = &config.gossip;
    gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Anonymous)
        // Hold every message until the event loop has checked the envelope.
        .validate_messages()
        // Content hash: the same envelope is the same message whoever forwards it.
        .message_id_fn(|m: &gossipsub::Message| {
            MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
        })
        // Slightly above the envelope limit, so an oversized envelope reaches validation (and
        // penalizes its sender) instead of silently failing to decode in the framing.
        .max_transmit_size(config.max_message_bytes + GOSSIP_FRAMING_BYTES)
        .heartbeat_interval(g.heartbeat_interval)
        .mesh_n(g.mesh_n)
        .mesh_n_low(g.mesh_n_low)
        .mesh_n_high(g.mesh_n_high)
        .mesh_outbound_min(g.mesh_n_low.min(g.mesh_n / 2).saturating_sub(1))
        .flood_publish(g.flood_publish)
        // Anonymous messages carry no author, so a peer that received our publication by
        // another path first forwards it back to us in good faith. gossipsub's default treats
        // that as an invalid message (-100 x count^2 here): two such echoes graylisted honest
        // peers, and a node then silently stopped hearing them (lost heartbeats and verdicts
        // under load, the rotating-publisher tail in bench/network.md). An echo is just a
        // duplicate: the duplicate cache and the replay guard already drop it, unpenalized.
        .allow_self_origin(true)
        .build()
        .map_err(|e| format!("gossipsub configuration: {e}"))
}

/// Peer scoring: invalid messages are what costs a peer; quiet honest peers are not punished.
///
/// One rejected message scores -100 (weight x count^2), below the publish threshold; two score
/// -400 and the peer is graylisted (its messages dropped unread). The penalty decays by 1% a
/// second, so a peer that sent one bad message recovers in minutes.
fn score_params(network_id: u64) -> (PeerScoreParams, PeerScoreThresholds) {
    let topic = TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        time_in_mesh_quantum: Duration::from_secs(1),
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 20.0,
        // Traffic is bursty (heartbeats aside); a delivery-rate floor would punish quiet peers.
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.99,
        ..TopicScoreParams::default()
    };
    let mut params = PeerScoreParams {
        topics: Topic::ALL
            .iter()
            .map(|t| (t.ident(network_id).hash(), topic.clone()))
            .collect(),
        topic_score_cap: 50.0,
        ..PeerScoreParams::default()
    };
    // Devnets run many peers on one host; colocation on loopback is not a Sybil signal.
    params
        .ip_colocation_factor_whitelist
        .insert(IpAddr::V4(Ipv4Addr::LOCALHOST));
    params
        .ip_colocation_factor_whitelist
        .insert(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let thresholds = PeerScoreThresholds {
        gossip_threshold: -50.0,
        publish_threshold: -100.0,
        graylist_threshold: -350.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    };
    (params, thresholds)
}
