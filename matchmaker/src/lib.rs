//! The matchmaker: a deterministic, sans-IO scheduler. It takes timestamped events (workflow
//! submitted, operator advert/heartbeat, acceptance, result, failure) and returns decisions
//! (assignments, cancellations, verdicts, slashing evidence, workflow outcomes), with no clock,
//! socket or thread inside, so it can be tested exhaustively, simulated at scale and replayed
//! from a log.
//!
//! - [`config`]: timeouts and scoring weights.
//! - [`event`]: what goes in ([`Event`]) and what comes out ([`Decision`]).
//! - [`engine`]: the state machine ([`Matchmaker`]).
//! - [`operators`]: per-operator capacity, exact reservations and liveness.
//! - [`fit`]: whether an operator could ever run a task, and why none could.
//! - [`reputation`]: the operator score (on-chain counters, observed behaviour, price, load).
//! - [`checker`]: pluggable result verification.
//! - [`rendezvous`]: which of several matchmakers is active for a workflow.
//! - [`sim`]: a seeded discrete-event simulation of operators, used by tests and the
//!   `simulate` example.

pub mod checker;
pub mod config;
pub mod engine;
pub mod event;
pub mod fit;
pub mod operators;
pub mod rendezvous;
pub mod reputation;
pub mod sim;

pub use checker::{AcceptAll, ResultChecker, SignatureChecker};
pub use config::Config;
pub use engine::{Matchmaker, MemoryEstimate, Snapshot, SnapshotRef, SNAPSHOT_FORMAT};
pub use event::{AttemptCause, AttemptRecord, Decision, Event, FailureReason, SlashEvidence};
pub use rendezvous::{active_matchmaker, routing_key};
