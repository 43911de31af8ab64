//! Signed envelopes: the only thing that crosses the network.
//!
//! The signature covers a fixed domain tag, the protocol version, network id, chain id, message
//! kind, sender, nonce, expiry and payload, so a message signed for one network, chain or
//! purpose is useless on another, and an expired one is refused.

use crate::encoding::{self, DecodeError};
use crate::identity::{Keypair, PublicKey, Signature, SignatureError};
use crate::messages::Message;
use crate::PROTOCOL_VERSION;
use serde::{Deserialize, Serialize};

/// Domain-separation tag prepended to everything an envelope signs.
const ENVELOPE_TAG: &[u8] = b"proofmesh/envelope/v1\0";

/// Which network and chain a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Domain {
    /// proofmesh network id (separates testnets from each other).
    pub network_id: u64,
    /// Ethereum chain id where this network settles.
    pub chain_id: u64,
}

/// What an envelope carries; part of the signed domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MessageKind {
    /// [`crate::messages::Submission`]
    WorkflowSubmission,
    /// [`crate::messages::OperatorAdvert`]
    OperatorAdvert,
    /// [`crate::messages::Heartbeat`]
    Heartbeat,
    /// [`crate::messages::Assignment`]
    Assignment,
    /// [`crate::messages::Acceptance`]
    Acceptance,
    /// [`crate::messages::SignedResult`]
    TaskResult,
    /// [`crate::messages::TaskFailure`]
    TaskFailure,
    /// [`crate::messages::Verdict`]
    Verdict,
    /// [`crate::messages::MatchmakerAnnounce`]
    MatchmakerAnnounce,
    /// [`crate::messages::CancelAttempt`]
    Cancel,
    /// [`crate::messages::WorkflowFailure`]
    WorkflowFailed,
    /// [`crate::messages::SyncRequest`] (direct only, never gossiped)
    SyncRequest,
    /// [`crate::messages::SyncReply`] (direct only, never gossiped)
    SyncReply,
    /// [`crate::messages::Message::Assignments`]
    AssignmentBatch,
    /// [`crate::messages::Message::Answers`]
    AnswerBatch,
    /// [`crate::messages::Message::Verdicts`]
    VerdictBatch,
    /// [`crate::messages::Message::Dispatch`]
    Dispatch,
    /// [`crate::messages::WorkflowCancel`]
    WorkflowCancel,
}

impl MessageKind {
    /// Whether this kind travels only by direct request-response: gossip must reject it.
    pub fn direct_only(self) -> bool {
        matches!(self, MessageKind::SyncRequest | MessageKind::SyncReply)
    }
}

/// A signed message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version of the sender.
    pub version: u16,
    /// Network and chain.
    pub domain: Domain,
    /// What the payload is.
    pub kind: MessageKind,
    /// Who signed.
    pub sender: PublicKey,
    /// Per-sender nonce; with `sender` it identifies the message for replay protection.
    pub nonce: u64,
    /// Milliseconds since the epoch after which the message is refused.
    pub expires_at_ms: u64,
    /// Canonical encoding of the [`Message`].
    pub payload: Vec<u8>,
    /// Signature over all of the above.
    pub signature: Signature,
}

/// Why an envelope was refused. Each variant names what to check.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The envelope itself could not be decoded.
    #[error("envelope: {0}")]
    Decode(#[from] DecodeError),
    /// Sent by a different protocol version.
    #[error("protocol version {got}, this node speaks {expected}")]
    Version {
        /// version in the envelope
        got: u16,
        /// our version
        expected: u16,
    },
    /// Sent for another network.
    #[error("network id {got}, this node is on network {expected}")]
    WrongNetwork {
        /// network id in the envelope
        got: u64,
        /// ours
        expected: u64,
    },
    /// Sent for another chain.
    #[error("chain id {got}, this node settles on chain {expected}")]
    WrongChain {
        /// chain id in the envelope
        got: u64,
        /// ours
        expected: u64,
    },
    /// Expired.
    #[error("expired at {expires_at_ms} ms, now is {now_ms} ms")]
    Expired {
        /// expiry in the envelope
        expires_at_ms: u64,
        /// caller's clock
        now_ms: u64,
    },
    /// Bad signature or key.
    #[error("{0}")]
    Signature(#[from] SignatureError),
    /// The payload is not a valid message.
    #[error("payload: {0}")]
    Payload(DecodeError),
    /// The payload decodes to a different kind than the envelope claims.
    #[error("envelope says {claimed:?} but carries {actual:?}")]
    KindMismatch {
        /// kind in the header
        claimed: MessageKind,
        /// kind of the payload
        actual: MessageKind,
    },
    /// A batch of assignments or answers that breaks the batch rules.
    #[error("{0}")]
    Batch(String),
}

impl Envelope {
    /// Sign `message` for `domain`.
    pub fn seal(
        keypair: &Keypair,
        domain: Domain,
        message: &Message,
        nonce: u64,
        expires_at_ms: u64,
    ) -> Envelope {
        let mut env = Envelope {
            version: PROTOCOL_VERSION,
            domain,
            kind: message.kind(),
            sender: keypair.public(),
            nonce,
            expires_at_ms,
            payload: encoding::encode(message),
            signature: Signature([0; 64]),
        };
        env.signature = keypair.sign(&env.signing_bytes());
        env
    }

    /// The exact bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let header = (
            self.version,
            self.domain,
            self.kind,
            self.sender,
            self.nonce,
            self.expires_at_ms,
        );
        let mut out = Vec::with_capacity(ENVELOPE_TAG.len() + 96 + self.payload.len());
        out.extend_from_slice(ENVELOPE_TAG);
        out.extend_from_slice(&encoding::encode(&header));
        out.extend_from_slice(&encoding::encode(&self.payload));
        out
    }

    /// Canonical bytes of the whole envelope, as sent on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decode wire bytes (bounded) without checking anything else.
    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        Ok(encoding::decode(bytes)?)
    }

    /// Check version, domain, expiry and signature, then decode the payload.
    pub fn open(&self, domain: Domain, now_ms: u64) -> Result<Message, EnvelopeError> {
        self.check_header(domain, now_ms)?;
        self.sender.verify(&self.signing_bytes(), &self.signature)?;
        self.decode_message()
    }

    /// [`Envelope::open`] without the signature check, for an envelope whose exact bytes
    /// already passed [`Envelope::open`] (the caller matched them by content hash): version,
    /// domain, expiry and payload are still checked.
    pub fn open_verified(&self, domain: Domain, now_ms: u64) -> Result<Message, EnvelopeError> {
        self.check_header(domain, now_ms)?;
        self.decode_message()
    }

    /// [`Envelope::open`] without the expiry check, for a signed statement of fact relayed
    /// long after it was made: a matchmaker's verdict that accepted a result stays true, and a
    /// relayer shows it as the matchmaker signed it (`SyncUpdate::vouched`). Expiry guards
    /// against replaying an action; replaying a verdict changes nothing.
    pub fn open_statement(&self, domain: Domain) -> Result<Message, EnvelopeError> {
        self.check_domain(domain)?;
        self.sender.verify(&self.signing_bytes(), &self.signature)?;
        self.decode_message()
    }

    fn check_header(&self, domain: Domain, now_ms: u64) -> Result<(), EnvelopeError> {
        self.check_domain(domain)?;
        if now_ms > self.expires_at_ms {
            return Err(EnvelopeError::Expired {
                expires_at_ms: self.expires_at_ms,
                now_ms,
            });
        }
        Ok(())
    }

    fn check_domain(&self, domain: Domain) -> Result<(), EnvelopeError> {
        if self.version != PROTOCOL_VERSION {
            return Err(EnvelopeError::Version {
                got: self.version,
                expected: PROTOCOL_VERSION,
            });
        }
        if self.domain.network_id != domain.network_id {
            return Err(EnvelopeError::WrongNetwork {
                got: self.domain.network_id,
                expected: domain.network_id,
            });
        }
        if self.domain.chain_id != domain.chain_id {
            return Err(EnvelopeError::WrongChain {
                got: self.domain.chain_id,
                expected: domain.chain_id,
            });
        }
        Ok(())
    }

    fn decode_message(&self) -> Result<Message, EnvelopeError> {
        let message: Message = encoding::decode(&self.payload).map_err(EnvelopeError::Payload)?;
        if message.kind() != self.kind {
            return Err(EnvelopeError::KindMismatch {
                claimed: self.kind,
                actual: message.kind(),
            });
        }
        if let Some(problem) = message.batch_problem() {
            return Err(EnvelopeError::Batch(problem));
        }
        Ok(message)
    }
}
