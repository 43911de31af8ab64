//! Integration tests of the matchmaker: scenarios, fault handling, failover, replay, and
//! property tests driven by the seeded simulation.

mod common;
mod failover;
mod faults;
mod props;
mod queueing;
mod rendezvous;
mod scheduling;
mod simulation;
