//! Integration tests of the operator crate (one binary, see the workspace rules).

mod blob;
mod common;
mod discovery;
mod executor;
mod lease;
mod result;
mod worker;
