//! Direct requests taken in on the task of the connection they came on ([`direct::Intake`]):
//! decoded, checked (the envelope's signature too, unless the connection's own peer signed it:
//! its handshake proved that already, see [`validation::check_direct`]), screened against
//! replays, their attachments kept, then handed straight to the node,
//! whose answer that task writes back. Through the swarm's one task, a request and its answer
//! each crossed one more task (tens of µs each on a busy node, bench/e2e.md), and every
//! connection's requests queued behind that task's other work.
//!
//! What this does not keep: the order of a peer's requests against the swarm's own events
//! about it (a request may reach the node before the peer's `PeerConnected`). Requests on one
//! connection keep their order.

use super::attachments::{self, SharedAttachments};
use super::client::{DirectRequest, DirectWire};
use super::direct::{self, Taken};
use super::metrics::NetworkMetrics;
use super::validation::{self, Seen, SharedGuard, Via};
use super::{Clock, DirectReply, DirectResponder, MessagePrecheck, NetworkConfig, NetworkEvent};
use futures::FutureExt;
use libp2p::PeerId;
use proofmesh_protocol::{encoding, ContentId, Domain, Message};
use std::sync::Arc;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::oneshot;

/// What every connection's intake shares.
pub(crate) struct Intake {
    domain: Domain,
    clock: Clock,
    max_message_bytes: usize,
    verified: validation::SharedVerified,
    guard: SharedGuard,
    attachments: SharedAttachments,
    metrics: NetworkMetrics,
    events: mpsc::Sender<NetworkEvent>,
    /// The node's own check of a message that checked out ([`NetworkConfig::precheck_message`]).
    then: Option<MessagePrecheck>,
}

impl Intake {
    pub(crate) fn new(
        config: &NetworkConfig,
        verified: validation::SharedVerified,
        guard: SharedGuard,
        attachments: SharedAttachments,
        metrics: NetworkMetrics,
        events: mpsc::Sender<NetworkEvent>,
    ) -> Self {
        Intake {
            domain: config.domain,
            clock: config.clock.clone(),
            max_message_bytes: config.max_message_bytes,
            verified,
            guard,
            attachments,
            metrics,
            events,
            then: config.precheck_message.clone(),
        }
    }

    /// The function each connection's handler calls.
    pub(crate) fn into_fn(self) -> direct::Intake {
        Arc::new(move |peer, request| self.take(peer, &request))
    }

    /// Take in one request from `peer`.
    fn take(&self, peer: PeerId, request: &[u8]) -> Taken {
        let now = (self.clock)();
        let reject =
            |reason: String| Taken::Answer(encoding::encode(&DirectWire::Rejected(reason)));
        let request = match encoding::decode::<DirectRequest>(request) {
            Ok(request) => request,
            Err(e) => {
                self.metrics.direct("inbound", "undecodable");
                return reject(format!("undecodable direct request: {e}"));
            }
        };
        let checked = validation::check_direct(
            &request.envelope,
            &peer,
            self.domain,
            now,
            self.max_message_bytes,
            &self.verified,
        );
        let (envelope, message, digest) = match checked {
            Ok(ok) => ok,
            Err(invalid) => {
                self.metrics.direct("inbound", invalid.label());
                return reject(invalid.to_string());
            }
        };
        let seen = validation::lock_guard(&self.guard).observe(&envelope, digest, Via::Direct, now);
        if seen == Seen::Duplicate {
            self.metrics.direct("inbound", "duplicate");
            return reject(format!(
                "duplicate nonce {} from {}",
                envelope.nonce, envelope.sender
            ));
        }
        // Only for a request that is new: a replay costs no more than its envelope's check.
        if let Some(then) = &self.then {
            then(&message);
        }
        if !request.attachments.is_empty() {
            self.keep_attachments(&peer, &message, request.attachments);
        }
        self.metrics.direct("inbound", "delivered");
        let (tx, rx) = oneshot::channel();
        let limit = self.max_message_bytes;
        let answer = async move { direct_answer_bytes(rx.await.ok(), limit) }.boxed();
        let event = NetworkEvent::DirectRequest {
            from: peer,
            envelope,
            message,
            responder: DirectResponder { tx },
        };
        let queued = match self.events.try_send(event) {
            // A node gone drops the responder with the event: answered as dropped.
            Ok(()) | Err(TrySendError::Closed(_)) => None,
            Err(TrySendError::Full(event)) => {
                let events = self.events.clone();
                Some(
                    async move {
                        let _ = events.send(event).await;
                    }
                    .boxed(),
                )
            }
        };
        Taken::Later { queued, answer }
    }

    /// Keep the blobs attached to a direct request for the work that will want them (a
    /// result's check, a task's inputs), each only if it is an output the (already
    /// validated) message names; anything else is dropped, and that work fetches as it would
    /// have without an attachment.
    fn keep_attachments(&self, peer: &PeerId, message: &Message, blobs: Vec<Vec<u8>>) {
        let named: Vec<(ContentId, u64)> = match message {
            Message::Result(r) => vec![(r.result.output, r.result.output_bytes)],
            Message::SyncReply(reply) => reply
                .workflows
                .iter()
                .flat_map(|u| &u.accepted)
                .map(|r| (r.result.output, r.result.output_bytes))
                .collect(),
            Message::Dispatch(d) => d
                .inputs
                .iter()
                .map(|r| (r.result.output, r.result.output_bytes))
                .collect(),
            _ => Vec::new(),
        };
        for bytes in blobs {
            let id = ContentId::of_bytes(&bytes);
            if named.contains(&(id, bytes.len() as u64)) {
                attachments::lock(&self.attachments).insert(id, bytes);
            } else {
                tracing::debug!(%peer, kind = ?message.kind(), "dropped a direct attachment the message does not name");
                self.metrics.direct("inbound", "attachment_dropped");
            }
        }
    }
}

/// The bytes answering a direct request (`None`: the node dropped it unanswered). An answer
/// over `limit` becomes a refusal naming its size: the requester's stream would refuse the
/// oversized frame and fail, and with it every other request on that connection.
fn direct_answer_bytes(reply: Option<DirectReply>, limit: usize) -> Vec<u8> {
    let wire = match reply {
        Some(DirectReply::Ack) => DirectWire::Ack,
        Some(DirectReply::Reply(envelope)) => DirectWire::Reply(envelope.to_bytes()),
        Some(DirectReply::Reject(reason)) => DirectWire::Rejected(reason),
        None => DirectWire::Rejected("the node dropped the request without answering".into()),
    };
    let bytes = encoding::encode(&wire);
    if bytes.len() <= limit {
        return bytes;
    }
    encoding::encode(&DirectWire::Rejected(format!(
        "the answer of {} bytes exceeds the {limit}-byte message limit",
        bytes.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proofmesh_protocol::messages::Heartbeat;
    use proofmesh_protocol::{Envelope, Keypair};

    fn answer_of(taken: Taken) -> DirectWire {
        match taken {
            Taken::Answer(bytes) => encoding::decode(&bytes).unwrap(),
            Taken::Later { .. } => panic!("expected an answer at once"),
        }
    }

    /// A connection takes in a request only when its whole check passes (remembering it as
    /// verified and running the node's own check only then), once per nonce, and hands it
    /// to the node in order, waiting for room when the node's queue is full. The connection's
    /// peer here is not the envelopes' signer, so every signature is checked (the own-peer
    /// case is `validation`'s test).
    #[tokio::test]
    async fn a_connection_hands_on_only_requests_that_verify_once_each_in_order() {
        let domain = Domain {
            network_id: 7,
            chain_id: 1,
        };
        let mut config = NetworkConfig::new(domain);
        let handed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = handed.clone();
        config.precheck_message = Some(Arc::new(move |m: &Message| {
            sink.lock().unwrap().push(m.clone());
        }));
        let verified = validation::SharedVerified::default();
        let guard = Arc::new(std::sync::Mutex::new(validation::ReplayGuard::new(64)));
        // Room for one event: the second request waits for it.
        let (events, mut node) = mpsc::channel(1);
        let intake = Intake::new(
            &config,
            verified.clone(),
            guard,
            SharedAttachments::default(),
            NetworkMetrics::default(),
            events,
        );
        let kp = Keypair::generate();
        let peer = PeerId::random();
        let heartbeat = |at_ms| {
            Message::Heartbeat(Heartbeat {
                operator: kp.public(),
                at_ms,
                running: Vec::new(),
            })
        };
        let request = |envelope: &Envelope| {
            encoding::encode(&DirectRequest {
                envelope: envelope.to_bytes(),
                attachments: Vec::new(),
            })
        };
        let known = |envelope: &Envelope| {
            verified
                .lock()
                .unwrap()
                .contains(blake3::hash(&envelope.to_bytes()).as_bytes())
        };

        let mut forged = Envelope::seal(&kp, domain, &heartbeat(1), 2, u64::MAX);
        forged.sender = Keypair::generate().public();
        let other_network = Envelope::seal(
            &kp,
            Domain {
                network_id: 8,
                chain_id: 1,
            },
            &heartbeat(1),
            3,
            u64::MAX,
        );
        let expired = Envelope::seal(&kp, domain, &heartbeat(1), 4, 1);
        for (bad, why) in [
            (&forged, "signature"),
            (&other_network, "network"),
            (&expired, "expired"),
        ] {
            match answer_of(intake.take(peer, &request(bad))) {
                DirectWire::Rejected(reason) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{why}: expected a refusal, got {other:?}"),
            }
            assert!(!known(bad), "{bad:?} must not count as verified");
        }
        match answer_of(intake.take(peer, b"not a direct request")) {
            DirectWire::Rejected(reason) => assert!(reason.contains("undecodable"), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(handed.lock().unwrap().is_empty());
        assert!(node.try_recv().is_err(), "nothing reaches the node");

        let first = Envelope::seal(&kp, domain, &heartbeat(1), 1, u64::MAX);
        let second = Envelope::seal(&kp, domain, &heartbeat(2), 5, u64::MAX);
        let Taken::Later {
            queued: None,
            answer: first_answer,
        } = intake.take(peer, &request(&first))
        else {
            panic!("the first request goes straight in");
        };
        assert!(known(&first));
        match answer_of(intake.take(peer, &request(&first))) {
            DirectWire::Rejected(reason) => assert!(reason.contains("duplicate nonce"), "{reason}"),
            other => panic!("a replay must be refused, got {other:?}"),
        }
        let Taken::Later {
            queued: Some(queued),
            answer: second_answer,
        } = intake.take(peer, &request(&second))
        else {
            panic!("the second request waits for room");
        };
        assert_eq!(*handed.lock().unwrap(), vec![heartbeat(1), heartbeat(2)]);
        let waiting = tokio::spawn(queued);
        for (want, answer) in [(1, first_answer), (2, second_answer)] {
            let Some(NetworkEvent::DirectRequest {
                from,
                message,
                responder,
                ..
            }) = node.recv().await
            else {
                panic!("expected request {want}");
            };
            assert_eq!((from, message), (peer, heartbeat(want)));
            if want == 1 {
                responder.ack();
                assert_eq!(
                    encoding::decode::<DirectWire>(&answer.await).unwrap(),
                    DirectWire::Ack
                );
            } else {
                drop(responder);
                assert_eq!(
                    encoding::decode::<DirectWire>(&answer.await).unwrap(),
                    DirectWire::Rejected("the node dropped the request without answering".into())
                );
            }
        }
        waiting.await.unwrap();
    }

    #[test]
    fn an_answer_over_the_limit_becomes_a_refusal_naming_its_size() {
        let kp = Keypair::generate();
        let heartbeat = Message::Heartbeat(Heartbeat {
            operator: kp.public(),
            at_ms: 1,
            running: Vec::new(),
        });
        let domain = Domain {
            network_id: 1,
            chain_id: 1,
        };
        let envelope = Envelope::seal(&kp, domain, &heartbeat, 1, u64::MAX);
        let fits = direct_answer_bytes(Some(DirectReply::Reply(envelope.clone())), 1 << 20);
        assert_eq!(
            encoding::decode::<DirectWire>(&fits).unwrap(),
            DirectWire::Reply(envelope.to_bytes())
        );
        let limit = envelope.to_bytes().len() / 2;
        let refused = direct_answer_bytes(Some(DirectReply::Reply(envelope)), limit);
        match encoding::decode::<DirectWire>(&refused).unwrap() {
            DirectWire::Rejected(reason) => {
                assert!(
                    reason.contains(&format!("exceeds the {limit}-byte")),
                    "{reason}"
                )
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(
            encoding::decode::<DirectWire>(&direct_answer_bytes(None, limit)).unwrap(),
            DirectWire::Rejected("the node dropped the request without answering".into())
        );
    }
}
