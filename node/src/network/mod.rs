//! The proofmesh p2p layer on rust-libp2p, shaped as a cloneable [`Client`] that sends
//! commands to one [`EventLoop`] which owns the swarm (rust-libp2p's file-sharing example).
//! Nothing else touches the swarm.
//!
//! - Transport: TCP + noise + yamux; identify, ping, kademlia under `/proofmesh/kad/1.0.0`
//!   plus configured bootstrap peers.
//! - Gossip ([`topics`]): one gossipsub topic per message family, namespaced by network id.
//!   Every message is a signed [`Envelope`], checked before it is forwarded ([`validation`]):
//!   undecodable, oversized, badly signed, wrong network/chain/version, expired, or on the wrong
//!   topic is rejected and the forwarding peer's score drops; a duplicate `(sender, nonce)` is
//!   ignored. Message ids are blake3 of the bytes. A publish before any peer has subscribed is
//!   queued and retried.
//! - Direct requests (`/proofmesh/direct/3`) for latency-critical envelopes (an assignment to
//!   its operator, the acceptance back, a result to its matchmaker), with small blobs the
//!   envelope names sent beside it (a result's output, a pushed input: [`attachments`]), on one
//!   long-lived stream per connection and direction (`direct`).
//! - Blobs (`/proofmesh/blob/1`): fetched by blake3 hash in chunks and verified on arrival
//!   ([`blob`]); served from the node's [`BlobProvider`].
//! - Metrics: the network's own counters plus libp2p's, in the node's shared registry.
//!
//! Identity: the libp2p key is the node's protocol key ([`identity`]), so a [`PeerId`] and a
//! [`PublicKey`] convert both ways.

pub mod attachments;
mod behaviour;
pub mod blob;
mod client;
pub mod codec;
mod direct;
mod event_loop;
pub mod identity;
mod intake;
pub mod metrics;
pub mod topics;
pub mod validation;

pub use blob::{BlobChunk, BlobError, BlobProvider, MemoryBlobProvider};
pub use client::{Client, PublishOutcome};
pub use event_loop::EventLoop;
pub use identity::{peer_id_of, public_key_of};
pub use libp2p::{Multiaddr, PeerId};
pub use topics::Topic;
pub use validation::Invalid;

use libp2p::{noise, tcp, yamux};
use prometheus_client::registry::Registry;
use proofmesh_protocol::encoding::MAX_MESSAGE_BYTES;
use proofmesh_protocol::{ContentId, Domain, Envelope, Keypair, Message, PublicKey};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Milliseconds since the Unix epoch. Injected so tests control expiry checks.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// gossipsub tuning.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Mesh maintenance and lazy-gossip period. Eager forwarding does not wait for it.
    pub heartbeat_interval: Duration,
    /// Target mesh degree.
    pub mesh_n: usize,
    /// Below this, graft more peers.
    pub mesh_n_low: usize,
    /// Above this, prune peers.
    pub mesh_n_high: usize,
    /// Send own publications to every subscribed peer, not only the mesh (lower latency for
    /// the first hop, more bandwidth).
    pub flood_publish: bool,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            heartbeat_interval: Duration::from_millis(700),
            mesh_n: 6,
            mesh_n_low: 5,
            mesh_n_high: 12,
            flood_publish: true,
        }
    }
}

/// Everything the network needs; built by the node from its configuration.
#[derive(Clone)]
pub struct NetworkConfig {
    /// The network and chain this node serves; envelopes for others are rejected.
    pub domain: Domain,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/7400`.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and seed kademlia with; each must end in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Source of "now" for expiry checks.
    pub clock: Clock,
    /// Where blobs served to other peers are read from.
    pub blobs: Arc<dyn BlobProvider>,
    /// Run on a connection's own task with each new direct request whose envelope checked out
    /// there (see `intake.rs`): checks of the message itself that the node would
    /// otherwise make on its one core task, remembered where the node will find them.
    pub precheck_message: Option<MessagePrecheck>,
    /// Largest envelope accepted (gossip or direct).
    pub max_message_bytes: usize,
    /// gossipsub tuning.
    pub gossip: GossipConfig,
    /// Topics this node subscribes to (receives and forwards); it may publish on any.
    pub subscriptions: Vec<Topic>,
    /// How often queued publications are retried.
    pub publish_retry_interval: Duration,
    /// Most publications held while no peer is subscribed; more are refused.
    pub publish_queue_max: usize,
    /// Most `(sender, nonce)` pairs remembered for replay protection.
    pub replay_guard_capacity: usize,
    /// Bytes per blob chunk.
    pub blob_chunk_bytes: usize,
    /// Largest blob this node will fetch.
    pub max_blob_bytes: u64,
    /// Timeout of one direct request or blob chunk.
    pub request_timeout: Duration,
    /// Close connections idle this long.
    pub idle_connection_timeout: Duration,
    /// Period of kademlia random walks (peer discovery).
    pub kad_bootstrap_interval: Duration,
    /// Serve the Kademlia DHT (and so be found by other peers' random walks). A node that only
    /// operates runs kad as a client: it still finds the network's servers (matchmakers,
    /// gateways) through them, but other operators never discover and dial it. As a server
    /// every operator ended up connected to every other one (33 in-process nodes held 619
    /// connections), and each connection's gossip, pings and polling cost the CPU that an
    /// operator's next task needed (bench/e2e.md, "Operators run kad as clients").
    pub kad_server: bool,
    /// Most established connections.
    pub max_connections: u32,
    /// Capacity of the event channel. The loop never waits for the node: beyond this, events
    /// queue inside the loop (up to 65,536, in order), then new ones are dropped and counted.
    pub event_buffer: usize,
}

impl NetworkConfig {
    /// Production defaults for `domain`, listening on an OS-chosen port on loopback: the node
    /// configuration sets `listen` to a reachable address.
    pub fn new(domain: Domain) -> Self {
        NetworkConfig {
            domain,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")],
            bootstrap: Vec::new(),
            clock: system_clock(),
            blobs: Arc::new(MemoryBlobProvider::new()),
            precheck_message: None,
            max_message_bytes: MAX_MESSAGE_BYTES,
            gossip: GossipConfig::default(),
            subscriptions: Topic::ALL.to_vec(),
            publish_retry_interval: Duration::from_millis(250),
            publish_queue_max: 4096,
            replay_guard_capacity: 200_000,
            blob_chunk_bytes: 1024 * 1024,
            max_blob_bytes: 2 * 1024 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            idle_connection_timeout: Duration::from_secs(120),
            kad_bootstrap_interval: Duration::from_secs(60),
            kad_server: true,
            max_connections: 256,
            event_buffer: 4096,
        }
    }

    /// For in-process tests: loopback port 0, fast heartbeats and retries.
    pub fn test(domain: Domain) -> Self {
        NetworkConfig {
            gossip: GossipConfig {
                heartbeat_interval: Duration::from_millis(100),
                ..GossipConfig::default()
            },
            publish_retry_interval: Duration::from_millis(50),
            request_timeout: Duration::from_secs(10),
            kad_bootstrap_interval: Duration::from_secs(5),
            ..NetworkConfig::new(domain)
        }
    }
}

impl fmt::Debug for NetworkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkConfig")
            .field("domain", &self.domain)
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("gossip", &self.gossip)
            .field("blob_chunk_bytes", &self.blob_chunk_bytes)
            .field("max_blob_bytes", &self.max_blob_bytes)
            .finish_non_exhaustive()
    }
}

/// What the network tells the node.
#[derive(Debug)]
pub enum NetworkEvent {
    /// A validated gossip message, delivered once per `(sender, nonce)`. `from` is the peer
    /// that forwarded it; the author is `envelope.sender`.
    Message {
        /// forwarding peer
        from: PeerId,
        /// the checked envelope
        envelope: Envelope,
        /// its decoded payload
        message: Message,
    },
    /// A validated direct request; answer through `responder` (dropping it answers with a
    /// rejection).
    DirectRequest {
        /// requesting peer
        from: PeerId,
        /// the checked envelope
        envelope: Envelope,
        /// its decoded payload
        message: Message,
        /// where the answer goes
        responder: DirectResponder,
    },
    /// First connection to a peer opened.
    PeerConnected {
        /// the peer
        peer: PeerId,
        /// its protocol key, when the peer id is an ed25519 key
        key: Option<PublicKey>,
    },
    /// Last connection to a peer closed.
    PeerDisconnected {
        /// the peer
        peer: PeerId,
    },
    /// The node listens on a new address.
    Listening {
        /// full address including `/p2p/<own peer id>`
        address: Multiaddr,
    },
}

/// The answer to a direct request.
#[derive(Debug)]
pub enum DirectReply {
    /// Received; nothing to send back.
    Ack,
    /// Answer with an envelope (e.g. the operator's acceptance of an assignment).
    Reply(Envelope),
    /// Refused, with a reason the requester sees.
    Reject(String),
}

/// Answers one incoming direct request.
#[derive(Debug)]
pub struct DirectResponder {
    tx: oneshot::Sender<DirectReply>,
}

impl DirectResponder {
    /// Acknowledge.
    pub fn ack(self) {
        let _ = self.tx.send(DirectReply::Ack);
    }

    /// Answer with an envelope.
    pub fn reply(self, envelope: Envelope) {
        let _ = self.tx.send(DirectReply::Reply(envelope));
    }

    /// Refuse, with a reason.
    pub fn reject(self, reason: impl Into<String>) {
        let _ = self.tx.send(DirectReply::Reject(reason.into()));
    }
}

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The transport could not be built.
    #[error("building the libp2p transport failed: {0}")]
    Transport(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason} (check the network listen address)")]
    Listen {
        /// the address
        addr: Multiaddr,
        /// why
        reason: String,
    },
    /// A bootstrap address is unusable.
    #[error("bootstrap address {addr}: {reason}")]
    Bootstrap {
        /// the address
        addr: Multiaddr,
        /// why
        reason: String,
    },
    /// Dialing failed.
    #[error("dialing {addr} failed: {reason}")]
    Dial {
        /// the address
        addr: Multiaddr,
        /// why
        reason: String,
    },
    /// The envelope or bytes are too large to publish.
    #[error("message of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// size
        size: usize,
        /// limit
        limit: usize,
    },
    /// The message kind travels only by direct request-response.
    #[error("{kind:?} messages are sent directly to one peer, never gossiped")]
    DirectOnly {
        /// kind
        kind: proofmesh_protocol::MessageKind,
    },
    /// Publishing failed for a reason other than missing peers.
    #[error("publishing on {topic} failed: {reason}")]
    Publish {
        /// topic
        topic: Topic,
        /// why
        reason: String,
    },
    /// Too many publications are waiting for peers.
    #[error("{0} publications are already waiting for peers; is this node connected to anyone?")]
    PublishQueueFull(usize),
    /// A direct request or blob chunk request failed in transport.
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// peer
        peer: PeerId,
        /// why
        reason: String,
    },
    /// The peer refused a direct request.
    #[error("{peer} refused the direct message: {reason}")]
    Rejected {
        /// peer
        peer: PeerId,
        /// its reason
        reason: String,
    },
    /// The peer's answer was malformed or its envelope invalid.
    #[error("invalid answer from {peer}: {reason}")]
    InvalidReply {
        /// peer
        peer: PeerId,
        /// what was wrong
        reason: String,
    },
    /// No peer delivered a verified copy of the blob.
    #[error("blob {id} unavailable: {}", describe_attempts(attempts))]
    BlobUnavailable {
        /// blob
        id: ContentId,
        /// each peer tried and why it failed
        attempts: Vec<(PeerId, BlobError)>,
    },
    /// The event loop has stopped.
    #[error("the network event loop has stopped")]
    Stopped,
}

fn describe_attempts(attempts: &[(PeerId, BlobError)]) -> String {
    if attempts.is_empty() {
        return "no connected peer to ask".into();
    }
    attempts
        .iter()
        .map(|(p, e)| format!("{p}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Build the network: the [`Client`] handle, the stream of [`NetworkEvent`]s and the
/// [`EventLoop`] to spawn (`tokio::spawn(event_loop.run())`). Registers metrics into
/// `registry` (the node's `/metrics` registry). Must be called inside a tokio runtime.
pub fn new(
    config: NetworkConfig,
    keypair: &Keypair,
    registry: &mut Registry,
) -> Result<(Client, mpsc::Receiver<NetworkEvent>, EventLoop), NetworkError> {
    let key = identity::libp2p_keypair(keypair);
    let libp2p_metrics = libp2p::metrics::Metrics::new(registry);
    let metrics = metrics::NetworkMetrics::register(registry);

    let behaviour_config = config.clone();
    let verified = validation::SharedVerified::default();
    let guard: validation::SharedGuard = Arc::new(std::sync::Mutex::new(
        validation::ReplayGuard::new(config.replay_guard_capacity),
    ));
    let attachments = attachments::SharedAttachments::default();
    let (event_tx, event_rx) = mpsc::channel(config.event_buffer.max(1));
    let intake = intake::Intake::new(
        &config,
        verified.clone(),
        guard.clone(),
        attachments.clone(),
        metrics.clone(),
        event_tx.clone(),
    )
    .into_fn();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key| {
            behaviour::Behaviour::new(key, &behaviour_config, intake)
                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(config.idle_connection_timeout)
                // Every peer speaks every protocol we open streams for, so the opener sends its
                // request with the protocol proposal instead of waiting a round trip for the
                // listener to confirm it (a failed proposal still fails the stream).
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();

    for t in &config.subscriptions {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&t.ident(config.domain.network_id))
            .map_err(|e| NetworkError::Transport(format!("subscribing to {t}: {e}")))?;
    }
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetworkError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    let mut bootstrap = Vec::new();
    for addr in &config.bootstrap {
        let Some(peer) = addr.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
            _ => None,
        }) else {
            return Err(NetworkError::Bootstrap {
                addr: addr.clone(),
                reason: "must end in /p2p/<peer id> (the peer id is printed by the node at start)"
                    .into(),
            });
        };
        swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        bootstrap.push(addr.clone());
    }

    let local_peer_id = *swarm.local_peer_id();
    let (command_tx, command_rx) = mpsc::channel(1024);
    let client = Client::new(
        command_tx,
        local_peer_id,
        &config,
        verified.clone(),
        attachments.clone(),
    );
    let event_loop = EventLoop::new(
        swarm,
        command_rx,
        event_tx,
        config,
        metrics,
        libp2p_metrics,
        bootstrap,
        verified,
        guard,
    );
    Ok((client, event_rx, event_loop))
}

/// See [`NetworkConfig::precheck_message`].
pub type MessagePrecheck = Arc<dyn Fn(&Message) + Send + Sync>;

/// [`new`], with the event loop spawned on the current tokio runtime. It stops when every
/// [`Client`] clone is dropped.
pub fn spawn(
    config: NetworkConfig,
    keypair: &Keypair,
    registry: &mut Registry,
) -> Result<(Client, mpsc::Receiver<NetworkEvent>), NetworkError> {
    let (client, events, event_loop) = new(config, keypair, registry)?;
    tokio::spawn(event_loop.run());
    Ok((client, events))
}
