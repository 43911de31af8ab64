//! The proofmesh protocol: everything two proofmesh processes must agree on, and nothing that
//! touches a socket, a disk or a clock.
//!
//! - [`ids`]: content ids (blake3 of the canonical encoding).
//! - [`resources`]: what a task needs and what an operator offers.
//! - [`workflow`]: the expanded workflow DAG that is hashed, gossiped and scheduled.
//! - [`encoding`]: canonical, bounded bincode 2.
//! - [`identity`]: ed25519 keys and strict signature verification.
//! - [`envelope`]: the signed, domain-separated, expiring wrapper around every network message.
//! - [`messages`]: the messages nodes exchange.
//!
//! Time is always passed in by the caller as milliseconds since the Unix epoch.

pub mod encoding;
pub mod envelope;
pub mod identity;
pub mod ids;
pub mod messages;
pub mod resources;
pub mod workflow;

pub use envelope::{Domain, Envelope, EnvelopeError, MessageKind};
pub use identity::{Keypair, PublicKey, Signature, SignatureError};
pub use ids::ContentId;
pub use messages::Message;
pub use resources::Resources;
pub use workflow::{Ordering, Program, Task, TaskIndex, Workflow, WorkflowId};

/// Version of the wire protocol; part of every envelope's signed domain.
pub const PROTOCOL_VERSION: u16 = 1;
