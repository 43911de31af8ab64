//! End-to-end tests: whole networks of real `proofmesh node` processes on loopback, started and
//! faulted (SIGKILL, restarts) from the outside. Run one file at a time with
//! `cargo test -p proofmesh-node --test e2e -- --test-threads=1` after
//! `cargo build -p proofmesh-prover` (the operators run `proofmesh-prover` programs).

mod faults;
mod harness;
mod readiness;
mod settlement;
