//! The proofmesh protocol: everything two proofmesh processes must agree on, and nothing that
//! touches a socket, a disk or a clock.
//!
//! - [`ids`]: content ids (blake3 of the canonical encoding).
//! - [`resources`]: what a task needs and what an operator offers.
//! - [`workflow`]: the expanded workflow DAG that is hashed, gossiped and scheduled.
//! - [`spec`]: the workflow file format (TOML/JSON) and its expansion into a [`Workflow`].
//! - [`validate`]: validation, limits, topological order and critical path.
//! - [`encoding`]: canonical, bounded bincode 2.
//! - [`identity`]: ed25519 keys and strict signature verification.
//! - [`envelope`]: the signed, domain-separated, expiring wrapper around every network message.
//! - [`replay`]: a bounded memory of `(sender, nonce)` pairs that rejects replayed envelopes.
//! - [`messages`]: the messages nodes exchange.
//!
//! Time is always passed in by the caller as milliseconds since the Unix epoch.

pub mod encoding;
pub mod envelope;
pub mod identity;
pub mod ids;
pub mod messages;
pub mod replay;
pub mod resources;
pub mod spec;
pub mod validate;
pub mod workflow;

pub use envelope::{Domain, Envelope, EnvelopeError, MessageKind};
pub use identity::{KeyFileError, Keypair, PublicKey, Signature, SignatureError};
pub use ids::ContentId;
pub use messages::Message;
pub use replay::{ReplayError, ReplayGuard};
pub use resources::Resources;
pub use spec::{Format, WorkflowSpec};
pub use validate::{Summary, WorkflowError};
pub use workflow::{Ordering, Program, Task, TaskIndex, Workflow, WorkflowId};

/// Version of the wire protocol; part of every envelope's signed domain.
pub const PROTOCOL_VERSION: u16 = 1;
