//! proofmesh-node integration tests: one binary, one module per area.

mod network;
mod cluster;
mod store;
mod rpc;
mod config;
mod cli_workflow;
