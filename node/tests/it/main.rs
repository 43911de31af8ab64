//! proofmesh-node integration tests: one binary, one module per area.

mod network;
