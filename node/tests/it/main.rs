//! proofmesh-node integration tests: one binary, one module per area.

mod batches;
mod cancel;
mod cli_workflow;
mod cluster;
mod config;
mod gossip_order;
mod introductions;
mod late_workflow;
mod memory;
mod network;
mod relays;
mod retention;
mod rpc;
mod snapshots;
mod store;
mod trust;
mod unmatched;
