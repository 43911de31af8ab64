//! Chain client integration tests against a real anvil (spawned per test on a free port).
//! They need `.tools/bin/anvil` (run `scripts/install-foundry`; `scripts/test` does) and fail,
//! not skip, without it.

mod artifacts;
mod common;
mod gas;
mod happy;
mod indexer;
mod slashing;
