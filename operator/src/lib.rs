//! The operator: what runs on a GPU operator's machine. It discovers CPU, memory, disk and
//! NVIDIA GPUs, leases GPUs exclusively per task, runs prover programs it need not understand
//! (with timeouts and process-group kills), and returns signed results.
//!
//! - [`config`]: the TOML configuration ([`OperatorConfig`]).
//! - [`discovery`]: what this machine offers, as a protocol `Capacity`.
//! - [`lease`]: exclusive, RAII leases over that capacity.
//! - [`blob`]: the content-addressed blob store interface and a file-backed store.
//! - [`executor`]: running one attempt as a subprocess, under the program contract.
//! - [`worker`]: built-in programs and persistent workers for very short tasks.
//! - `workdir`: the pool of per-attempt work directories, cleaned off the task's path.
//! - [`result`]: building, signing and checking results.
//! - [`operator`]: all of the above behind one handle ([`Operator`]).

pub mod blob;
pub mod config;
pub mod discovery;
pub mod executor;
pub mod lease;
pub mod operator;
pub mod result;
mod workdir;
pub mod worker;

pub use blob::{BlobError, BlobStore, FsBlobStore, MemBlobStore};
pub use config::{OperatorConfig, ProgramSpec, ResourceConfig};
pub use discovery::{discover, Discovery, GpuSource};
pub use executor::{resolve_inputs, Diagnostics, Executor, Outcome, TaskReport, TaskSpec, Timings};
pub use lease::{Admission, Lease, LeaseError, LeaseManager, LeaseRequest, Ticket};
pub use operator::Operator;
pub use tokio_util::sync::CancellationToken;
