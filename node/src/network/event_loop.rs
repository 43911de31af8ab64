//! The event loop: owns the swarm and `select!`s over swarm events, client commands, blob
//! reads, and the publish-retry and discovery timers. Peers' direct requests do not come
//! through here: each connection's task takes them in (`intake`).

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use libp2p::gossipsub::{self, MessageAcceptance, PublishError};
use libp2p::metrics::Recorder;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{identify, Multiaddr, PeerId, Swarm};
use proofmesh_protocol::encoding;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use super::blob::{BlobProvider, BlobRequest, BlobResponse};
use super::client::{Command, OwnEnvelope, Protocol, PublishOutcome};
use super::direct;
use super::metrics::NetworkMetrics;
use super::topics::Topic;
use super::validation::{self, Seen, Via};
use super::{NetworkConfig, NetworkError, NetworkEvent};

/// Events held for a node that is not keeping up, beyond its channel's capacity.
const OVERFLOW_MAX: usize = 65_536;

/// How long raw (fault-injection) publications wait for peers; envelopes wait until expiry.
const RAW_PUBLISH_PATIENCE: Duration = Duration::from_secs(60);

struct PendingPublish {
    topic: Topic,
    data: Vec<u8>,
    /// Give up after this (envelope expiry, in clock ms).
    give_up_at_ms: u64,
}

/// Least time between two DHT lookups of the same unreachable peer ([`Command::Reach`]).
const LOOKUP_EVERY: Duration = Duration::from_secs(5);

/// A blob request's answer, once computed.
type Answer = BoxFuture<'static, (ResponseChannel<Vec<u8>>, Vec<u8>)>;
type RequestReply = oneshot::Sender<Result<Vec<u8>, NetworkError>>;
type DialReply = oneshot::Sender<Result<PeerId, NetworkError>>;

/// First gap before bootstrap peers not connected are dialed again (it doubles each round).
const BOOTSTRAP_REDIAL_FIRST: Duration = Duration::from_millis(250);
/// Longest gap between two rounds of dialing bootstrap peers again.
const BOOTSTRAP_REDIAL_MAX: Duration = Duration::from_secs(30);

/// Owns the swarm; run it with `tokio::spawn(event_loop.run())`.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetworkEvent>,
    config: NetworkConfig,
    metrics: NetworkMetrics,
    libp2p_metrics: libp2p::metrics::Metrics,
    bootstrap: Vec<Multiaddr>,
    guard: validation::SharedGuard,
    pending_publish: VecDeque<PendingPublish>,
    pending_requests: HashMap<OutboundRequestId, (PeerId, RequestReply)>,
    pending_direct: HashMap<direct::RequestId, (PeerId, RequestReply)>,
    pending_dials: HashMap<ConnectionId, (Multiaddr, DialReply)>,
    /// When each peer whose address was unknown was last looked up ([`Command::Reach`]).
    lookups: HashMap<PeerId, std::time::Instant>,
    listen_waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
    answers: FuturesUnordered<Answer>,
    overflow: VecDeque<NetworkEvent>,
    kad_ready: bool,
    verified: validation::SharedVerified,
}

impl EventLoop {
    #[allow(clippy::too_many_arguments)] // one call site, in `network::new`
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetworkEvent>,
        config: NetworkConfig,
        metrics: NetworkMetrics,
        libp2p_metrics: libp2p::metrics::Metrics,
        bootstrap: Vec<Multiaddr>,
        verified: validation::SharedVerified,
        guard: validation::SharedGuard,
    ) -> Self {
        EventLoop {
            verified,
            swarm,
            commands,
            events,
            guard,
            config,
            metrics,
            libp2p_metrics,
            bootstrap,
            pending_publish: VecDeque::new(),
            pending_requests: HashMap::new(),
            pending_direct: HashMap::new(),
            pending_dials: HashMap::new(),
            lookups: HashMap::new(),
            listen_waiters: Vec::new(),
            answers: FuturesUnordered::new(),
            overflow: VecDeque::new(),
            kad_ready: false,
        }
    }

    /// Run until every [`super::Client`] is dropped.
    pub async fn run(mut self) {
        self.dial_bootstrap(true);
        // Bootstrap peers not connected are dialed again, 0.25 s after start and then at
        // doubling gaps up to 30 s. A devnet or a compose file starts every node at once, so
        // a peer may not listen yet when it is first dialed; one refused dial used to leave
        // the node off that peer for good, and off its gossip until a mesh formed elsewhere.
        let mut redial_gap = BOOTSTRAP_REDIAL_FIRST;
        let redial = tokio::time::sleep(redial_gap);
        tokio::pin!(redial);
        let mut retry = tokio::time::interval(self.config.publish_retry_interval);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut discovery = tokio::time::interval(self.config.kad_bootstrap_interval);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A separate handle, so waiting for room does not borrow `self` across the select.
        let events = self.events.clone();
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some((channel, bytes)) = self.answers.next(), if !self.answers.is_empty() => {
                    let sent = self.swarm.behaviour_mut().blob.send_response(channel, bytes);
                    if sent.is_err() {
                        tracing::debug!("requester went away before the answer");
                    }
                }
                permit = events.reserve(), if !self.overflow.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.overflow.pop_front() {
                            permit.send(event);
                        }
                    }
                    Err(_) => self.overflow.clear(), // the node dropped its receiver
                },
                _ = retry.tick(), if !self.pending_publish.is_empty() => self.retry_publish(None),
                () = &mut redial, if !self.bootstrap.is_empty() => {
                    self.dial_bootstrap(false);
                    redial_gap = (redial_gap * 2).min(BOOTSTRAP_REDIAL_MAX);
                    redial.as_mut().reset(tokio::time::Instant::now() + redial_gap);
                }
                _ = discovery.tick() => {
                    if self.kad_ready {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
            }
        }
        tracing::debug!("network event loop stopped: every client dropped");
    }

    /// Dial every bootstrap peer not connected and not being dialed (`first`: warn when an
    /// address cannot even be dialed; later rounds say so at debug level).
    fn dial_bootstrap(&mut self, first: bool) {
        for addr in &self.bootstrap {
            let Some(peer) = addr.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
                _ => None,
            }) else {
                continue; // `network::new` refuses such an address
            };
            if self.swarm.is_connected(&peer) {
                continue;
            }
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => {}
                Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) if first => tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer"),
                Err(e) => tracing::debug!(%addr, error = %e, "cannot dial bootstrap peer"),
            }
        }
    }

    /// Hand an event to the node without ever blocking the loop: the node may be waiting on
    /// a command reply while its event queue is full, so awaiting here could deadlock. Events
    /// that do not fit wait, in order, in `overflow`; past `OVERFLOW_MAX` new ones are dropped.
    fn emit(&mut self, event: NetworkEvent) {
        let event = if self.overflow.is_empty() {
            match self.events.try_send(event) {
                Ok(()) | Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(event)) => event,
            }
        } else {
            event
        };
        if self.overflow.len() >= OVERFLOW_MAX {
            tracing::warn!("node is not consuming network events; dropping one");
            self.metrics.dropped_event();
            return;
        }
        self.overflow.push_back(event);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish {
                topic,
                data,
                own,
                except,
                reply,
            } => {
                let _ = reply.send(self.publish(topic, data, own, except));
            }
            Command::Request {
                protocol,
                peer,
                data,
                reply,
            } => {
                let behaviour = self.swarm.behaviour_mut();
                match protocol {
                    Protocol::Direct => {
                        let id = behaviour.direct.send_request(&peer, data);
                        self.pending_direct.insert(id, (peer, reply));
                    }
                    Protocol::Blob => {
                        self.metrics.blob_request("outbound");
                        let id = behaviour.blob.send_request(&peer, data);
                        self.pending_requests.insert(id, (peer, reply));
                    }
                }
            }
            Command::Dial { addr, reply } => {
                let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_dials.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetworkError::Dial {
                            addr,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Reach { peer } => {
                if self.swarm.is_connected(&peer) {
                    return;
                }
                let opts = DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                match self.swarm.dial(opts) {
                    Ok(()) => {}
                    Err(DialError::NoAddresses) => {
                        // Rare (a peer never met): one lookup per peer per interval at most.
                        let now = std::time::Instant::now();
                        let due = self
                            .lookups
                            .get(&peer)
                            .is_none_or(|t| now.duration_since(*t) >= LOOKUP_EVERY);
                        if due {
                            // Forget lookups past their interval: the map stays as small as
                            // the set of peers looked up lately.
                            self.lookups
                                .retain(|_, t| now.duration_since(*t) < LOOKUP_EVERY);
                            self.lookups.insert(peer, now);
                            self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "cannot dial"),
                }
            }
            Command::ListenAddrs { reply } => {
                let addrs = self.listen_addrs();
                if addrs.is_empty() && !self.config.listen.is_empty() {
                    self.listen_waiters.push(reply);
                } else {
                    let _ = reply.send(addrs);
                }
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::TopicPeers {
                topic,
                mesh_only,
                reply,
            } => {
                let hash = topic.ident(self.config.domain.network_id).hash();
                let gossipsub = &self.swarm.behaviour().gossipsub;
                let peers = if mesh_only {
                    gossipsub.mesh_peers(&hash).copied().collect()
                } else {
                    gossipsub
                        .all_peers()
                        .filter(|(_, topics)| topics.contains(&&hash))
                        .map(|(p, _)| *p)
                        .collect()
                };
                let _ = reply.send(peers);
            }
            Command::PeerScore { peer, reply } => {
                let _ = reply.send(self.swarm.behaviour().gossipsub.peer_score(&peer));
            }
        }
    }

    fn listen_addrs(&self) -> Vec<Multiaddr> {
        let me = *self.swarm.local_peer_id();
        self.swarm
            .listeners()
            .map(|a| a.clone().with_p2p(me).unwrap_or_else(|a| a))
            .collect()
    }

    fn publish(
        &mut self,
        topic: Topic,
        data: Vec<u8>,
        own: Option<OwnEnvelope>,
        except: Option<PeerId>,
    ) -> Result<PublishOutcome, NetworkError> {
        let now = (self.config.clock)();
        let give_up_at_ms = match &own {
            Some(own) => {
                // Remember our own envelope so an echo is never delivered back to us.
                validation::lock_guard(&self.guard).observe(
                    &own.envelope,
                    own.digest,
                    Via::Gossip,
                    now,
                );
                own.envelope.expires_at_ms
            }
            None => now.saturating_add(RAW_PUBLISH_PATIENCE.as_millis() as u64),
        };
        let ident = topic.ident(self.config.domain.network_id);
        if let Some(except) = except {
            let hash = ident.hash();
            let (mut it, mut others) = (false, false);
            for (peer, topics) in self.swarm.behaviour().gossipsub.all_peers() {
                if !topics.contains(&&hash) {
                    continue;
                }
                if *peer == except {
                    it = true;
                } else {
                    others = true;
                }
            }
            // A lone matchmaker would take in a second copy of every result only to drop it.
            if it && !others {
                self.metrics.unneeded(topic.name());
                return Ok(PublishOutcome::Unneeded);
            }
        }
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(ident, data.clone())
        {
            Ok(_) => {
                self.metrics.published(topic.name());
                Ok(PublishOutcome::Sent)
            }
            Err(PublishError::Duplicate) => Ok(PublishOutcome::AlreadyPublished),
            Err(PublishError::NoPeersSubscribedToTopic) | Err(PublishError::AllQueuesFull(_)) => {
                if self.pending_publish.len() >= self.config.publish_queue_max {
                    return Err(NetworkError::PublishQueueFull(self.pending_publish.len()));
                }
                tracing::debug!(%topic, "no subscribed peer yet; publication queued");
                self.pending_publish.push_back(PendingPublish {
                    topic,
                    data,
                    give_up_at_ms,
                });
                Ok(PublishOutcome::Queued)
            }
            Err(PublishError::MessageTooLarge) => Err(NetworkError::TooLarge {
                size: data.len(),
                limit: self.config.max_message_bytes,
            }),
            Err(e) => Err(NetworkError::Publish {
                topic,
                reason: e.to_string(),
            }),
        }
    }

    /// Retry queued publications (all, or those of one topic after a peer subscribed to it).
    /// Those of a topic no connected peer subscribes to are not handed to gossipsub at all:
    /// a topic can stay without subscribers for good (a network's only matchmaker publishes
    /// verdicts that operators do not follow), and a failed publish copies and hashes the
    /// whole message, which for a queue of thousands, every retry tick, was most of a busy
    /// matchmaker's CPU.
    fn retry_publish(&mut self, only: Option<Topic>) {
        let now = (self.config.clock)();
        let network_id = self.config.domain.network_id;
        let mut subscribed: HashMap<Topic, bool> = HashMap::new();
        let mut keep = VecDeque::with_capacity(self.pending_publish.len());
        while let Some(p) = self.pending_publish.pop_front() {
            if only.is_some_and(|t| t != p.topic) {
                keep.push_back(p);
                continue;
            }
            if now > p.give_up_at_ms {
                // Normal for a topic nobody follows (see above): counted, logged at debug.
                tracing::debug!(topic = %p.topic, "queued publication expired before any peer subscribed");
                self.metrics.unsent(p.topic.name());
                continue;
            }
            let gossipsub = &self.swarm.behaviour().gossipsub;
            let any = *subscribed.entry(p.topic).or_insert_with(|| {
                let hash = p.topic.ident(network_id).hash();
                gossipsub
                    .all_peers()
                    .any(|(_, topics)| topics.contains(&&hash))
            });
            if !any {
                keep.push_back(p);
                continue;
            }
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(p.topic.ident(network_id), p.data.clone())
            {
                Ok(_) => {
                    tracing::debug!(topic = %p.topic, "queued publication sent");
                    self.metrics.published(p.topic.name());
                }
                Err(PublishError::Duplicate) => {}
                Err(PublishError::NoPeersSubscribedToTopic)
                | Err(PublishError::AllQueuesFull(_)) => keep.push_back(p),
                Err(e) => {
                    tracing::warn!(topic = %p.topic, error = %e, "dropping queued publication")
                }
            }
        }
        self.pending_publish = keep;
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.libp2p_metrics.record(&event);
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => {
                self.libp2p_metrics.record(&event);
                self.on_gossip(event);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Direct(event)) => self.on_direct(event),
            SwarmEvent::Behaviour(BehaviourEvent::Blob(event)) => self.on_blob(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => {
                self.libp2p_metrics.record(&event);
                if let identify::Event::Received { peer_id, info, .. } = event {
                    if info.protocols.contains(&KAD_PROTOCOL) {
                        for addr in info.listen_addrs {
                            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                        }
                        if !self.kad_ready {
                            self.kad_ready = true;
                            let _ = self.swarm.behaviour_mut().kad.bootstrap();
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.libp2p_metrics.record(&event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => {
                self.libp2p_metrics.record(&event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Limits(never)) => match never {},
            SwarmEvent::NewListenAddr { address, .. } => {
                let me = *self.swarm.local_peer_id();
                let address = address.with_p2p(me).unwrap_or_else(|a| a);
                tracing::info!(%address, "listening");
                let addrs = self.listen_addrs();
                for waiter in self.listen_waiters.drain(..) {
                    let _ = waiter.send(addrs.clone());
                }
                self.emit(NetworkEvent::Listening { address });
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some((_, reply)) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                self.metrics.set_peers(self.swarm.connected_peers().count());
                if num_established.get() == 1 {
                    tracing::debug!(%peer_id, "peer connected");
                    let key = super::identity::public_key_of(&peer_id);
                    self.emit(NetworkEvent::PeerConnected { peer: peer_id, key });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                self.metrics.set_peers(self.swarm.connected_peers().count());
                if num_established == 0 {
                    tracing::debug!(%peer_id, "peer disconnected");
                    self.emit(NetworkEvent::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                peer_id,
            } => {
                if let Some((addr, reply)) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(NetworkError::Dial {
                        addr,
                        reason: error.to_string(),
                    }));
                } else {
                    tracing::debug!(?peer_id, error = %error, "outgoing connection failed");
                }
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let network_id = self.config.domain.network_id;
                let Some(topic) = Topic::from_hash(&message.topic, network_id) else {
                    // We subscribe only to our topics; anything else is not ours to judge.
                    self.report(&message_id, &propagation_source, MessageAcceptance::Ignore);
                    return;
                };
                let now = (self.config.clock)();
                match validation::check_cached(
                    &message.data,
                    Some(topic),
                    self.config.domain,
                    now,
                    self.config.max_message_bytes,
                    &self.verified,
                ) {
                    Err(invalid) => {
                        tracing::debug!(peer = %propagation_source, %topic, reason = %invalid, "rejected gossip message");
                        self.metrics.rejected(topic.name(), invalid.label());
                        self.report(&message_id, &propagation_source, MessageAcceptance::Reject);
                    }
                    Ok((envelope, msg, digest)) => {
                        let seen = validation::lock_guard(&self.guard).observe(
                            &envelope,
                            digest,
                            Via::Gossip,
                            now,
                        );
                        match seen {
                            Seen::New => {
                                self.metrics.received(topic.name());
                                self.report(
                                    &message_id,
                                    &propagation_source,
                                    MessageAcceptance::Accept,
                                );
                                self.emit(NetworkEvent::Message {
                                    from: propagation_source,
                                    envelope,
                                    message: msg,
                                });
                            }
                            // Already delivered by the direct path: forward, do not deliver twice.
                            Seen::OtherPathOnly => self.report(
                                &message_id,
                                &propagation_source,
                                MessageAcceptance::Accept,
                            ),
                            Seen::Duplicate => {
                                self.metrics.ignored(topic.name());
                                self.report(
                                    &message_id,
                                    &propagation_source,
                                    MessageAcceptance::Ignore,
                                );
                            }
                        }
                    }
                }
            }
            gossipsub::Event::Subscribed { topic, .. } => {
                if let Some(topic) = Topic::from_hash(&topic, self.config.domain.network_id) {
                    if self.pending_publish.iter().any(|p| p.topic == topic) {
                        self.retry_publish(Some(topic));
                    }
                }
            }
            _ => {}
        }
    }

    fn report(
        &mut self,
        id: &gossipsub::MessageId,
        source: &PeerId,
        acceptance: MessageAcceptance,
    ) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, acceptance);
    }

    fn answer_outbound(&mut self, id: OutboundRequestId, result: Result<Vec<u8>, String>) {
        answer_request(&mut self.pending_requests, id, result);
    }

    fn answer_direct(&mut self, id: direct::RequestId, result: Result<Vec<u8>, String>) {
        answer_request(&mut self.pending_direct, id, result);
    }

    fn on_direct(&mut self, event: direct::Event) {
        match event {
            direct::Event::Response { id, response } => {
                self.metrics.direct("outbound", "answered");
                self.answer_direct(id, Ok(response));
            }
            direct::Event::OutboundFailure { id, error } => {
                self.metrics.direct("outbound", "failed");
                self.answer_direct(id, Err(error));
            }
            direct::Event::InboundFailure { peer, error } => {
                tracing::debug!(%peer, %error, "inbound direct stream failed");
            }
        }
    }

    fn on_blob(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    self.metrics.blob_request("inbound");
                    let provider: Arc<dyn BlobProvider> = self.config.blobs.clone();
                    let chunk_cap = self.config.blob_chunk_bytes;
                    self.answers.push(Box::pin(async move {
                        let response = serve_blob(provider, &request, chunk_cap).await;
                        if let BlobResponse::Error(e) = &response {
                            tracing::debug!(%peer, error = %e, "blob request failed");
                        }
                        (channel, encoding::encode(&response))
                    }));
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.answer_outbound(request_id, Ok(response)),
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => self.answer_outbound(request_id, Err(error.to_string())),
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound blob request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

/// Hand the outcome of our request `id` to whoever waits for it in `pending`.
fn answer_request<K: std::hash::Hash + Eq>(
    pending: &mut HashMap<K, (PeerId, RequestReply)>,
    id: K,
    result: Result<Vec<u8>, String>,
) {
    if let Some((peer, reply)) = pending.remove(&id) {
        let _ = reply.send(result.map_err(|reason| NetworkError::Request { peer, reason }));
    }
}

/// Answer one blob chunk request from the provider, on a blocking thread (it may read disk).
async fn serve_blob(
    provider: Arc<dyn BlobProvider>,
    request: &[u8],
    chunk_cap: usize,
) -> BlobResponse {
    let request: BlobRequest = match encoding::decode(request) {
        Ok(r) => r,
        Err(e) => return BlobResponse::Error(format!("malformed blob request: {e}")),
    };
    let max_len = (request.max_len as usize).min(chunk_cap);
    let (id, offset) = (request.id, request.offset);
    let read = tokio::task::spawn_blocking(move || provider.read_chunk(&id, offset, max_len)).await;
    match read {
        Ok(Ok(Some(chunk))) => {
            // Never send more than the cap, whatever the provider returned.
            let mut data = chunk.data;
            data.truncate(max_len);
            BlobResponse::Chunk {
                total_len: chunk.total_len,
                data,
            }
        }
        Ok(Ok(None)) => BlobResponse::NotFound,
        Ok(Err(e)) => BlobResponse::Error(format!("reading blob {}: {e}", id.short())),
        Err(e) => BlobResponse::Error(format!("blob reader panicked: {e}")),
    }
}
