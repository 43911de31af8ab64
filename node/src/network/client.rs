//! The cloneable handle: every method sends one command to the event loop and awaits its
//! oneshot reply. Work that needs no swarm (encoding, checking answers, assembling blobs)
//! happens here, off the event loop.

use libp2p::{Multiaddr, PeerId};
use proofmesh_protocol::{encoding, ContentId, Domain, Envelope, Message};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::attachments::{self, SharedAttachments, MAX_ATTACHMENT_BYTES};
use super::blob::{BlobAssembler, BlobError, BlobRequest, BlobResponse};
use super::topics::Topic;
use super::validation;
use super::{Clock, NetworkConfig, NetworkError};

/// What happened to a publication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Handed to gossipsub for at least one peer.
    Sent,
    /// No peer is subscribed yet: queued, and retried until it is sent or expires.
    Queued,
    /// The same bytes were published before (message ids are content hashes).
    AlreadyPublished,
    /// Not gossiped: the only connected peer following the topic is the one that already has
    /// it ([`Client::publish_beyond`]).
    Unneeded,
}

/// Which request-response protocol a request uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Direct,
    Blob,
}

/// A request on `/proofmesh/direct/3`, encoded canonically: an envelope's wire bytes and,
/// beside it (outside what is signed), blobs it names: a result's output, or the outputs of
/// the results an input push carries. Each must hash to an output id the envelope names or is
/// dropped on arrival ([`super::attachments`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DirectRequest {
    pub envelope: Vec<u8>,
    pub attachments: Vec<Vec<u8>>,
}

/// The answer on `/proofmesh/direct/3`, encoded canonically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum DirectWire {
    Ack,
    Reply(Vec<u8>),
    Rejected(String),
}

/// The replay-guard record of a publication.
#[derive(Clone, Debug)]
pub(crate) struct OwnEnvelope {
    pub envelope: Envelope,
    pub digest: [u8; 32],
}

pub(crate) enum Command {
    Publish {
        topic: Topic,
        data: Vec<u8>,
        /// `None` for fault-injection raw bytes.
        own: Option<OwnEnvelope>,
        /// A peer that already has it: when it is the only one following the topic, the
        /// publication is left out.
        except: Option<PeerId>,
        reply: oneshot::Sender<Result<PublishOutcome, NetworkError>>,
    },
    Request {
        protocol: Protocol,
        peer: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, NetworkError>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, NetworkError>>,
    },
    /// Connect to `peer` unless connected or dialing already (see [`Client::reach`]).
    Reach {
        peer: PeerId,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    TopicPeers {
        topic: Topic,
        mesh_only: bool,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    PeerScore {
        peer: PeerId,
        reply: oneshot::Sender<Option<f64>>,
    },
}

/// Handle to the network. Cheap to clone; the event loop stops when the last clone drops.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    domain: Domain,
    clock: Clock,
    max_message_bytes: usize,
    blob_chunk_bytes: usize,
    max_blob_bytes: u64,
    verified: validation::SharedVerified,
    attachments: SharedAttachments,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("local_peer_id", &self.local_peer_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        local_peer_id: PeerId,
        config: &NetworkConfig,
        verified: validation::SharedVerified,
        attachments: SharedAttachments,
    ) -> Self {
        Client {
            verified,
            attachments,
            commands,
            local_peer_id,
            domain: config.domain,
            clock: config.clock.clone(),
            max_message_bytes: config.max_message_bytes,
            blob_chunk_bytes: config.blob_chunk_bytes,
            max_blob_bytes: config.max_blob_bytes,
        }
    }

    /// This node's peer id (its protocol key).
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetworkError::Stopped)?;
        rx.await.map_err(|_| NetworkError::Stopped)
    }

    /// Gossip an envelope on the topic of its kind. Before any peer has subscribed the
    /// publication is queued ([`PublishOutcome::Queued`]) and retried until it expires.
    pub async fn publish(&self, envelope: &Envelope) -> Result<PublishOutcome, NetworkError> {
        self.publish_except(envelope, None).await
    }

    /// [`Self::publish`] of an envelope `peer` already has (it answered a direct send of it):
    /// left out ([`PublishOutcome::Unneeded`]) when `peer` is the only connected peer that
    /// follows the topic. With no follower at all it is queued as usual.
    pub async fn publish_beyond(
        &self,
        envelope: &Envelope,
        peer: PeerId,
    ) -> Result<PublishOutcome, NetworkError> {
        self.publish_except(envelope, Some(peer)).await
    }

    async fn publish_except(
        &self,
        envelope: &Envelope,
        except: Option<PeerId>,
    ) -> Result<PublishOutcome, NetworkError> {
        let data = envelope.to_bytes();
        if data.len() > self.max_message_bytes {
            return Err(NetworkError::TooLarge {
                size: data.len(),
                limit: self.max_message_bytes,
            });
        }
        let topic = Topic::for_kind(envelope.kind).ok_or(NetworkError::DirectOnly {
            kind: envelope.kind,
        })?;
        let own = OwnEnvelope {
            envelope: envelope.clone(),
            digest: *blake3::hash(&data).as_bytes(),
        };
        self.call(|reply| Command::Publish {
            topic,
            data,
            own: Some(own),
            except,
            reply,
        })
        .await?
    }

    /// Fault injection for tests: gossip arbitrary bytes on `topic`, unchecked, so that peers'
    /// validation and scoring can be exercised. Honest nodes never call this.
    pub async fn publish_raw(
        &self,
        topic: Topic,
        data: Vec<u8>,
    ) -> Result<PublishOutcome, NetworkError> {
        self.call(|reply| Command::Publish {
            topic,
            data,
            own: None,
            except: None,
            reply,
        })
        .await?
    }

    /// Send an envelope straight to `peer` and wait for its answer: `Ok(None)` for an
    /// acknowledgement, `Ok(Some(..))` for an answering envelope (checked like any other).
    pub async fn send_direct(
        &self,
        peer: PeerId,
        envelope: &Envelope,
    ) -> Result<Option<(Envelope, Message)>, NetworkError> {
        self.send_direct_in_order(peer, envelope, Vec::new()).await
    }

    /// A blob that arrived beside a direct message naming it (already checked to hash to
    /// `id`), taken once; [`Self::fetch_blob`] looks here first.
    pub fn take_attachment(&self, id: &ContentId) -> Option<Vec<u8>> {
        attachments::lock(&self.attachments).take(id)
    }

    /// [`Self::send_direct`], but the request is handed to the network before this returns,
    /// so requests to one peer leave in the order of these calls (an input push ahead of its
    /// assignment, a running task's assignment ahead of a queued one); the returned future
    /// only waits for the answer. Under backpressure (the command queue full) the hand-over
    /// moves into the future and the order is no longer promised.
    ///
    /// `attachments`: blobs the envelope names, sent beside it (each at most
    /// [`MAX_ATTACHMENT_BYTES`], all within the message limit; the rest are left off and
    /// fetched as usual).
    pub fn send_direct_in_order(
        &self,
        peer: PeerId,
        envelope: &Envelope,
        attachments: Vec<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<Option<(Envelope, Message)>, NetworkError>>
           + Send
           + 'static {
        let wire = envelope.to_bytes();
        let mut room = self.max_message_bytes.saturating_sub(wire.len() + 16);
        let attachments = attachments
            .into_iter()
            .filter(|a| {
                let fits = a.len() <= MAX_ATTACHMENT_BYTES && a.len() + 8 <= room;
                if fits {
                    room -= a.len() + 8;
                }
                fits
            })
            .collect();
        let data = encoding::encode(&DirectRequest {
            envelope: wire,
            attachments,
        });
        let client = self.clone();
        let (reply, answer) = oneshot::channel();
        let mut early = None;
        let mut later = None;
        if data.len() > self.max_message_bytes {
            early = Some(NetworkError::TooLarge {
                size: data.len(),
                limit: self.max_message_bytes,
            });
        } else {
            let command = Command::Request {
                protocol: Protocol::Direct,
                peer,
                data,
                reply,
            };
            match self.commands.try_send(command) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(command)) => later = Some(command),
                Err(mpsc::error::TrySendError::Closed(_)) => early = Some(NetworkError::Stopped),
            }
        }
        async move {
            if let Some(e) = early {
                return Err(e);
            }
            if let Some(command) = later {
                client
                    .commands
                    .send(command)
                    .await
                    .map_err(|_| NetworkError::Stopped)?;
            }
            let answer = answer.await.map_err(|_| NetworkError::Stopped)??;
            client.direct_answer(peer, &answer)
        }
    }

    fn direct_answer(
        &self,
        peer: PeerId,
        answer: &[u8],
    ) -> Result<Option<(Envelope, Message)>, NetworkError> {
        let invalid = |reason: String| NetworkError::InvalidReply { peer, reason };
        match encoding::decode::<DirectWire>(answer).map_err(|e| invalid(e.to_string()))? {
            DirectWire::Ack => Ok(None),
            DirectWire::Rejected(reason) => Err(NetworkError::Rejected { peer, reason }),
            DirectWire::Reply(bytes) => {
                let (envelope, message, _) = validation::check_direct(
                    &bytes,
                    &peer,
                    self.domain,
                    (self.clock)(),
                    self.max_message_bytes,
                    &self.verified,
                )
                .map_err(|e| invalid(e.to_string()))?;
                Ok(Some((envelope, message)))
            }
        }
    }

    async fn request(
        &self,
        protocol: Protocol,
        peer: PeerId,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, NetworkError> {
        self.call(|reply| Command::Request {
            protocol,
            peer,
            data,
            reply,
        })
        .await?
    }

    /// Fetch blob `id` from `from`, or, if `None`, from each connected peer in turn until one
    /// returns bytes that hash to `id`. Lying or failing peers are skipped and reported in the
    /// error if none succeeds. A blob that already arrived beside a direct message naming it
    /// ([`super::attachments`]) is taken instead, with no request.
    pub async fn fetch_blob(
        &self,
        from: Option<PeerId>,
        id: ContentId,
    ) -> Result<Vec<u8>, NetworkError> {
        if let Some(bytes) = self.take_attachment(&id) {
            return Ok(bytes);
        }
        let candidates = match from {
            Some(peer) => vec![peer],
            None => self.peers().await?,
        };
        let mut attempts = Vec::new();
        for peer in candidates {
            match self.fetch_blob_from(peer, id).await {
                Ok(bytes) => return Ok(bytes),
                Err(e) => {
                    tracing::debug!(%peer, blob = %id.short(), error = %e, "blob fetch attempt failed");
                    attempts.push((peer, e));
                }
            }
        }
        Err(NetworkError::BlobUnavailable { id, attempts })
    }

    async fn fetch_blob_from(&self, peer: PeerId, id: ContentId) -> Result<Vec<u8>, BlobError> {
        let mut assembler = BlobAssembler::new(id, self.max_blob_bytes);
        let max_len = u32::try_from(self.blob_chunk_bytes).unwrap_or(u32::MAX);
        while let Some(offset) = assembler.next_offset() {
            let request = encoding::encode(&BlobRequest {
                id,
                offset,
                max_len,
            });
            let answer = self
                .request(Protocol::Blob, peer, request)
                .await
                .map_err(|e| BlobError::Remote(e.to_string()))?;
            let response: BlobResponse =
                encoding::decode(&answer).map_err(|e| BlobError::Remote(e.to_string()))?;
            assembler.push(response)?;
        }
        assembler.finish()
    }

    /// Dial `addr` (with or without `/p2p/<peer id>`) and wait for the connection.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetworkError> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// Make sure a connection to `peer` exists or is being made: dialed at the addresses the
    /// node knows for it (its routing table, identify's cache), else looked up on the DHT.
    /// Never waits; a full command queue skips it (the caller asks again).
    pub fn reach(&self, peer: PeerId) {
        let _ = self.commands.try_send(Command::Reach { peer });
    }

    /// Addresses this node listens on, each ending in `/p2p/<own peer id>`; waits until the
    /// first listener is up.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerId>, NetworkError> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// Peers known to be subscribed to `topic`.
    pub async fn topic_peers(&self, topic: Topic) -> Result<Vec<PeerId>, NetworkError> {
        self.call(|reply| Command::TopicPeers {
            topic,
            mesh_only: false,
            reply,
        })
        .await
    }

    /// Peers in this node's gossip mesh for `topic`.
    pub async fn mesh_peers(&self, topic: Topic) -> Result<Vec<PeerId>, NetworkError> {
        self.call(|reply| Command::TopicPeers {
            topic,
            mesh_only: true,
            reply,
        })
        .await
    }

    /// gossipsub's score of `peer` as seen by this node (negative after invalid messages).
    pub async fn peer_score(&self, peer: PeerId) -> Result<Option<f64>, NetworkError> {
        self.call(|reply| Command::PeerScore { peer, reply }).await
    }
}
