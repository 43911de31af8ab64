//! The proofmesh node as a library: the `proofmesh` binary is a thin clap layer over it, and
//! tests spawn whole nodes in-process on port 0 with a temp dir.
//!
//! - [`network`]: libp2p swarm behind a cloneable handle and one event loop.
//! - [`store`]: the redb-backed durable store.
//! - [`rpc`]: JSON-RPC over HTTP and WebSocket, `/metrics` and `/health`.
//! - [`metrics`]: the shared Prometheus registry.
//! - [`chain`]: on-chain settlement (register and stake, escrow payment, slashing).
//! - [`config`]: node configuration (file, environment, flags).
//! - [`devnet`]: a local network of node processes (`proofmesh devnet`).
//! - [`bounded_set`]: bounded de-duplication caches.
//! - [`runtime`]: the running node: roles, core loop and handle ([`runtime::Node::spawn`]).

pub mod bounded_set;
pub mod chain;
pub mod config;
pub mod devnet;
pub mod held;
pub mod metrics;
pub mod network;
pub mod rpc;
pub mod runtime;
pub mod store;
