//! Prover-agnostic execution of one attempt (see the program contract in the README).
//!
//! For a subprocess program: take an empty work dir ([`crate::workdir`]), materialize the inputs by content hash as
//! `inputs/000, 001, ...` (verified), spawn `argv + task args` in its own process group with the
//! contract's environment and `CUDA_VISIBLE_DEVICES` / `NVIDIA_VISIBLE_DEVICES` set to the leased
//! GPUs only, capture the tails of stdout and stderr, and wait for exit, timeout or cancellation.
//! Whatever happens, the whole process group is then SIGKILLed so no orphan survives the attempt
//! (dropping the future does the same). Success is exit 0 plus an output file, which is hashed
//! into the blob store and signed. Built-in and persistent-worker programs go through
//! [`crate::worker`].

use crate::blob::{BlobError, BlobStore};
use crate::config::{program_key, OperatorConfig, ProgramSpec};
use crate::lease::Lease;
use crate::result::{now_ms, sign_result, task_failure, Produced};
use crate::workdir::{WorkDir, WorkDirs, INPUTS};
use crate::worker::{Builtin, WorkerPool};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use proofmesh_protocol::messages::{FailureCause, SignedResult, TaskFailure};
use proofmesh_protocol::workflow::Input;
use proofmesh_protocol::{ContentId, Keypair, Program, PublicKey, Task, TaskIndex, WorkflowId};
use std::collections::VecDeque;
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// How long to wait for stdout/stderr to close after the group is killed. Only a process that
/// escaped the group (`setsid`) can hold them open longer.
const PIPE_DRAIN: Duration = Duration::from_secs(2);

/// One attempt to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    /// Workflow.
    pub workflow: WorkflowId,
    /// Task index in the workflow.
    pub task: TaskIndex,
    /// Task name, e.g. `leaf[3]` (`PROOFMESH_TASK`).
    pub name: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Program to run.
    pub program: Program,
    /// Extra arguments after the configured argv.
    pub args: Vec<String>,
    /// Inputs in order, resolved to content ids (dependency outputs and blobs).
    pub inputs: Vec<ContentId>,
    /// Wall-clock limit.
    pub timeout: Duration,
}

impl TaskSpec {
    /// The spec of attempt `attempt` of `task` (index `index` of workflow `workflow`), with its
    /// inputs already resolved (see [`resolve_inputs`]).
    pub fn from_task(
        workflow: WorkflowId,
        index: TaskIndex,
        task: &Task,
        attempt: u32,
        inputs: Vec<ContentId>,
    ) -> Self {
        TaskSpec {
            workflow,
            task: index,
            name: task.name.clone(),
            attempt,
            program: task.program.clone(),
            args: task.args.clone(),
            inputs,
            timeout: Duration::from_millis(task.timeout_ms),
        }
    }
}

/// Resolve a task's inputs to content ids; `output_of` gives a dependency's accepted output.
/// Returns the first dependency without one.
pub fn resolve_inputs(
    task: &Task,
    output_of: impl Fn(TaskIndex) -> Option<ContentId>,
) -> Result<Vec<ContentId>, TaskIndex> {
    task.inputs
        .iter()
        .map(|input| match input {
            Input::Blob(id) => Ok(*id),
            Input::Output(dep) => output_of(*dep).ok_or(*dep),
        })
        .collect()
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Success: the signed result.
    Completed(SignedResult),
    /// Failure to report (fail fast).
    Failed(TaskFailure),
    /// Cancelled by the caller; the process group is dead. Nothing to report.
    Cancelled,
}

/// Where the time of an attempt went, for overhead metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// Work dir and input materialization.
    pub setup: Duration,
    /// Spawn to exit (the program's own time plus process start).
    pub run: Duration,
    /// Output hashing, storing, signing, cleanup.
    pub collect: Duration,
}

/// What an attempt leaves for diagnostics besides its outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// Exit code, when the program exited.
    pub exit_code: Option<i32>,
    /// Signal that killed it, if any.
    pub signal: Option<i32>,
    /// Tail of stdout (bounded by `stdout_tail_bytes`).
    pub stdout_tail: String,
    /// Tail of stderr (bounded by `stderr_tail_bytes`).
    pub stderr_tail: String,
    /// The work dir, when kept for post-mortem.
    pub kept_work_dir: Option<PathBuf>,
    /// Time breakdown.
    pub timings: Timings,
}

/// Outcome plus diagnostics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskReport {
    /// How it ended.
    pub outcome: Outcome,
    /// Exit status, output tails, timings.
    pub diagnostics: Diagnostics,
}

/// Why an executor cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The work dir cannot be created.
    #[error("cannot create work dir {path}: {source}")]
    WorkDir {
        /// Dir.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

pub(crate) struct Inner {
    pub(crate) config: OperatorConfig,
    pub(crate) keypair: Keypair,
    pub(crate) blobs: Arc<dyn BlobStore>,
    work_dirs: Arc<WorkDirs>,
    seq: AtomicU64,
    workers: WorkerPool,
}

/// Runs attempts. Cheap to clone; clones share the worker pool.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("operator", &self.inner.keypair.public())
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor for `config`, signing with `keypair`, reading and writing blobs in `blobs`.
    pub fn new(
        config: OperatorConfig,
        keypair: Keypair,
        blobs: Arc<dyn BlobStore>,
    ) -> Result<Self, ExecutorError> {
        config.validate()?;
        let work_dirs =
            WorkDirs::open(&config.work_dir).map_err(|source| ExecutorError::WorkDir {
                path: config.work_dir.join("tasks"),
                source,
            })?;
        let inner = Inner {
            config,
            keypair,
            blobs,
            work_dirs,
            seq: AtomicU64::new(0),
            workers: WorkerPool::default(),
        };
        Ok(Executor {
            inner: Arc::new(inner),
        })
    }

    /// The key results are signed with.
    pub fn operator(&self) -> PublicKey {
        self.inner.keypair.public()
    }

    /// The blob store.
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.inner.blobs
    }

    /// The configuration in force.
    pub fn config(&self) -> &OperatorConfig {
        &self.inner.config
    }

    /// Whether `program` is configured.
    pub fn supports(&self, program: &Program) -> bool {
        self.inner
            .config
            .programs
            .contains_key(&program_key(program))
    }

    /// Run one attempt under `lease`. Never panics on program behaviour; every way it can end is
    /// an [`Outcome`]. The lease is released once the program has exited, before its output is
    /// collected, stored and signed (at the latest when this returns or the future is dropped).
    pub async fn run(&self, spec: TaskSpec, lease: Lease, cancel: CancellationToken) -> TaskReport {
        let operator = self.operator();
        let Some(program) = self.inner.config.programs.get(&program_key(&spec.program)) else {
            let why = format!(
                "program {} is not configured on this operator",
                program_key(&spec.program)
            );
            return report_failure(operator, &spec, FailureCause::Refused(why));
        };
        match program {
            ProgramSpec::Builtin { builtin } => match Builtin::parse(builtin) {
                Some(b) => crate::worker::run_builtin(&self.inner, b, &spec, &lease, cancel).await,
                None => report_failure(
                    operator,
                    &spec,
                    FailureCause::Refused(format!("unknown built-in {builtin}")),
                ),
            },
            ProgramSpec::Command(argv) => {
                let argv = argv.clone();
                self.run_attempt(&spec, &lease, cancel, |ctx| {
                    run_command(&self.inner, argv, ctx)
                })
                .await
            }
            ProgramSpec::Worker { worker } => {
                let key = (program_key(&spec.program), lease.visible_devices());
                let worker = self.inner.workers.get(key, worker.clone());
                self.run_attempt(&spec, &lease, cancel, |ctx| worker.run(&self.inner, ctx))
                    .await
            }
        }
    }

    /// Stop every persistent worker (their process groups are killed) and wait for the work
    /// dirs of finished attempts to be cleaned.
    pub async fn shutdown(&self) {
        self.inner.workers.shutdown().await;
        let inner = Arc::clone(&self.inner);
        let _ = tokio::task::spawn_blocking(move || inner.work_dirs.flush()).await;
    }

    /// Block until the work dirs of attempts that have returned are emptied (for reuse) or
    /// removed; cleaning runs on a background thread, off the attempts' path.
    pub fn flush_work_dirs(&self) {
        self.inner.work_dirs.flush();
    }

    /// The shared skeleton of file-based attempts: work dir + inputs, `body` runs the program,
    /// then the output is collected, stored and signed, and the work dir removed.
    async fn run_attempt<'a, F, Fut>(
        &'a self,
        spec: &'a TaskSpec,
        lease: &'a Lease,
        cancel: CancellationToken,
        body: F,
    ) -> TaskReport
    where
        F: FnOnce(RunContext<'a>) -> Fut,
        Fut: std::future::Future<Output = RunEnd>,
    {
        let inner = &self.inner;
        let operator = inner.keypair.public();
        let t0 = Instant::now();
        let started_ms = now_ms();
        let guard = WorkDirGuard {
            name: format!(
                "{}-{}-{}-{}",
                spec.workflow.short(),
                spec.task,
                spec.attempt,
                inner.seq.fetch_add(1, Ordering::Relaxed)
            ),
            keep: inner.config.keep_failed_work_dirs,
        };
        let (blobs, inputs, work_dirs) = (
            Arc::clone(&inner.blobs),
            spec.inputs.clone(),
            Arc::clone(&inner.work_dirs),
        );
        let setup = tokio::task::spawn_blocking(move || {
            let work_dir = work_dirs
                .acquire()
                .map_err(|e| SetupError::Operator(format!("cannot create a work dir: {e}")))?;
            let materialized = materialize_inputs(&*blobs, &inputs, work_dir.path());
            Ok::<_, SetupError>((work_dir, materialized))
        })
        .await;
        let work_dir = match setup {
            Ok(Ok((work_dir, Ok(())))) => work_dir,
            Ok(Ok((work_dir, Err(e)))) => {
                let mut report = report_failure(operator, spec, e.into_cause());
                report.diagnostics.kept_work_dir = guard.finish(work_dir, false);
                return report;
            }
            Ok(Err(e)) => return report_failure(operator, spec, e.into_cause()),
            Err(join) => {
                let why = format!("input materialization panicked: {join}");
                return report_failure(operator, spec, SetupError::Operator(why).into_cause());
            }
        };
        let dir = work_dir.path().to_owned();
        let setup_time = t0.elapsed();
        let ctx = RunContext {
            spec,
            lease,
            dir: dir.clone(),
            cancel,
        };
        let end = body(ctx).await;
        // The program has exited (or was killed): collecting its output needs no GPU.
        lease.hand_over().await;
        let t1 = Instant::now();
        let mut diagnostics = end.diagnostics;
        diagnostics.timings.setup = setup_time;
        diagnostics.timings.run = t1 - t0 - setup_time;
        let outcome = match end.status {
            EndStatus::Cancelled => Outcome::Cancelled,
            EndStatus::TimedOut => {
                Outcome::Failed(task_failure(operator, spec, FailureCause::Timeout))
            }
            EndStatus::Failed(cause) => Outcome::Failed(task_failure(operator, spec, cause)),
            EndStatus::Succeeded => {
                let finished_ms = now_ms();
                match collect_output(inner, &dir, &diagnostics).await {
                    Ok((output, output_bytes)) => {
                        let produced = Produced {
                            output,
                            output_bytes,
                            started_ms,
                            finished_ms,
                        };
                        Outcome::Completed(sign_result(&inner.keypair, spec, lease, produced))
                    }
                    Err(cause) => Outcome::Failed(task_failure(operator, spec, cause)),
                }
            }
        };
        let ok = matches!(outcome, Outcome::Completed(_));
        diagnostics.kept_work_dir = guard.finish(work_dir, ok);
        diagnostics.timings.collect = t1.elapsed();
        TaskReport {
            outcome,
            diagnostics,
        }
    }
}

/// What a program body sees.
pub(crate) struct RunContext<'a> {
    pub(crate) spec: &'a TaskSpec,
    pub(crate) lease: &'a Lease,
    pub(crate) dir: PathBuf,
    pub(crate) cancel: CancellationToken,
}

impl RunContext<'_> {
    pub(crate) fn input_dir(&self) -> PathBuf {
        self.dir.join(INPUTS)
    }
    pub(crate) fn output_path(&self) -> PathBuf {
        self.dir.join("output")
    }
}

pub(crate) enum EndStatus {
    Succeeded,
    TimedOut,
    Cancelled,
    Failed(FailureCause),
}

pub(crate) struct RunEnd {
    pub(crate) status: EndStatus,
    pub(crate) diagnostics: Diagnostics,
}

pub(crate) fn report_failure(
    operator: PublicKey,
    spec: &TaskSpec,
    cause: FailureCause,
) -> TaskReport {
    TaskReport {
        outcome: Outcome::Failed(task_failure(operator, spec, cause)),
        diagnostics: Diagnostics::default(),
    }
}

enum SetupError {
    Input(String),
    Operator(String),
}

impl SetupError {
    fn into_cause(self) -> FailureCause {
        match self {
            SetupError::Input(why) => FailureCause::Input(why),
            // Local trouble (disk full, permissions): the operator cannot honour the task.
            SetupError::Operator(why) => FailureCause::Refused(format!("operator error: {why}")),
        }
    }
}

// `dir` is an empty slot with an empty `inputs/` (see `workdir`).
fn materialize_inputs(
    blobs: &dyn BlobStore,
    inputs: &[ContentId],
    dir: &Path,
) -> Result<(), SetupError> {
    let input_dir = dir.join(INPUTS);
    for (i, id) in inputs.iter().enumerate() {
        let dest = input_dir.join(format!("{i:03}"));
        blobs.materialize(id, &dest).map_err(|e| match e {
            BlobError::NotFound(_) | BlobError::Corrupt { .. } => {
                SetupError::Input(format!("input {i}: {e}"))
            }
            BlobError::Io { .. } => SetupError::Operator(format!("input {i}: {e}")),
        })?;
    }
    Ok(())
}

async fn collect_output(
    inner: &Inner,
    dir: &Path,
    diagnostics: &Diagnostics,
) -> Result<(ContentId, u64), FailureCause> {
    let output = dir.join("output");
    let note = |msg: String| FailureCause::Crashed {
        exit_code: diagnostics.exit_code,
        stderr_tail: format!("{}[operator] {msg}", diagnostics.stderr_tail),
    };
    enum Collected {
        Missing,
        TooBig(u64),
        Stored(Result<(ContentId, u64), BlobError>),
    }
    let (blobs, max) = (Arc::clone(&inner.blobs), inner.config.max_output_bytes);
    let path = output.clone();
    // One blocking hop for the size check and the store.
    let collected = tokio::task::spawn_blocking(move || match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => Collected::Missing,
        Ok(m) if m.len() > max => Collected::TooBig(m.len()),
        Ok(_) => Collected::Stored(blobs.put_file(&path)),
        Err(_) => Collected::Missing,
    })
    .await;
    match collected {
        Ok(Collected::Missing) => Err(note(format!(
            "program succeeded but wrote no output file at {}",
            output.display()
        ))),
        Ok(Collected::TooBig(size)) => Err(note(format!(
            "output is {size} bytes, above max_output_bytes {}",
            inner.config.max_output_bytes
        ))),
        Ok(Collected::Stored(Ok(stored))) => Ok(stored),
        Ok(Collected::Stored(Err(e))) => Err(FailureCause::Refused(format!(
            "operator error: storing output: {e}"
        ))),
        Err(join) => Err(FailureCause::Refused(format!(
            "operator error: storing output panicked: {join}"
        ))),
    }
}

/// What happens to the work dir when the attempt ends: recycled after success, kept as
/// `<work_dir>/failed/<name>` after a failure if configured, otherwise removed. A dropped
/// attempt drops its [`WorkDir`], which removes it. All of it runs in the background.
struct WorkDirGuard {
    name: String,
    keep: bool,
}

impl WorkDirGuard {
    fn finish(self, work_dir: WorkDir, ok: bool) -> Option<PathBuf> {
        if ok {
            work_dir.recycle();
            None
        } else if self.keep {
            work_dir.keep(&self.name)
        } else {
            drop(work_dir);
            None
        }
    }
}

/// The contract's environment for one attempt.
pub(crate) fn contract_env(ctx: &RunContext<'_>) -> Vec<(&'static str, String)> {
    let gpus = ctx.lease.visible_devices();
    vec![
        ("PROOFMESH_INPUT_DIR", ctx.input_dir().display().to_string()),
        ("PROOFMESH_INPUTS", ctx.spec.inputs.len().to_string()),
        ("PROOFMESH_OUTPUT", ctx.output_path().display().to_string()),
        ("PROOFMESH_TASK", ctx.spec.name.clone()),
        ("PROOFMESH_ATTEMPT", ctx.spec.attempt.to_string()),
        ("CUDA_VISIBLE_DEVICES", gpus.clone()),
        ("NVIDIA_VISIBLE_DEVICES", gpus),
        // CUDA numbers devices fastest-first by default; NVML and nvidia-smi number them by PCI
        // bus. Leases use the latter, so make CUDA agree.
        ("CUDA_DEVICE_ORDER", "PCI_BUS_ID".to_owned()),
    ]
}

/// A process group that is SIGKILLed when this guard is dropped or [`GroupGuard::kill`]ed.
pub(crate) struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    pub(crate) fn new(pid: Option<u32>) -> Self {
        GroupGuard {
            pgid: pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw),
        }
    }

    /// Kill the whole group now. The leader may already have exited and been reaped: its pid
    /// stays reserved while any group member lives, and pids are not reused for a long time
    /// after, so this never hits an unrelated process.
    pub(crate) fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            match killpg(pgid, Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => tracing::warn!(pgid = pgid.as_raw(), error = %e, "killpg failed"),
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Keeps the last `cap` bytes written.
#[derive(Debug)]
pub(crate) struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
}

impl Tail {
    pub(crate) fn new(cap: usize) -> Self {
        Tail {
            buf: VecDeque::with_capacity(cap.min(64 * 1024)),
            cap,
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(self.cap)..];
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow.min(self.buf.len()));
        self.buf.extend(bytes);
    }

    pub(crate) fn to_string_lossy(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let mut v = Vec::with_capacity(self.buf.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        String::from_utf8_lossy(&v).into_owned()
    }
}

async fn read_tail(mut reader: impl AsyncRead + Unpin, cap: usize) -> String {
    let mut tail = Tail::new(cap);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => tail.push(&buf[..n]),
        }
    }
    tail.to_string_lossy()
}

pub(crate) fn exit_parts(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    (status.code(), status.signal())
}

async fn run_command(inner: &Inner, argv: Vec<String>, ctx: RunContext<'_>) -> RunEnd {
    let config = &inner.config;
    let mut diagnostics = Diagnostics::default();
    let Some((program, fixed_args)) = argv.split_first() else {
        let cause = FailureCause::Refused("program argv is empty".into());
        return RunEnd {
            status: EndStatus::Failed(cause),
            diagnostics,
        };
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(fixed_args)
        .args(&ctx.spec.args)
        .current_dir(&ctx.dir)
        .envs(&config.env)
        .envs(contract_env(&ctx))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group: a timeout or cancel kills the program and everything it spawned.
        .process_group(0);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let cause = FailureCause::Crashed {
                exit_code: None,
                stderr_tail: format!("[operator] cannot start {program:?}: {e}"),
            };
            return RunEnd {
                status: EndStatus::Failed(cause),
                diagnostics,
            };
        }
    };
    let mut group = GroupGuard::new(child.id());
    let stdout = child
        .stdout
        .take()
        .map(|s| tokio::spawn(read_tail(s, config.stdout_tail_bytes)));
    let stderr = child
        .stderr
        .take()
        .map(|s| tokio::spawn(read_tail(s, config.stderr_tail_bytes)));

    enum End {
        Exited(std::io::Result<ExitStatus>),
        TimedOut,
        Cancelled,
    }
    let end = tokio::select! {
        biased;
        status = child.wait() => End::Exited(status),
        () = ctx.cancel.cancelled() => End::Cancelled,
        () = tokio::time::sleep(ctx.spec.timeout) => End::TimedOut,
    };
    // Always: background processes of a finished program must not outlive the attempt either.
    group.kill();
    let end = match end {
        End::TimedOut | End::Cancelled => {
            // The group kill already hit the leader; this covers a program that left its group.
            let _ = child.start_kill();
            // Reap the killed leader; its status is just the signal.
            if let Ok(status) = child.wait().await {
                (diagnostics.exit_code, diagnostics.signal) = exit_parts(status);
            }
            end
        }
        exited => exited,
    };
    if let End::Exited(Ok(status)) = &end {
        (diagnostics.exit_code, diagnostics.signal) = exit_parts(*status);
    }
    diagnostics.stdout_tail = drain(stdout).await;
    diagnostics.stderr_tail = drain(stderr).await;
    let status = match end {
        End::Cancelled => EndStatus::Cancelled,
        End::TimedOut => EndStatus::TimedOut,
        End::Exited(Ok(status)) if status.success() => EndStatus::Succeeded,
        End::Exited(Ok(_)) => EndStatus::Failed(FailureCause::Crashed {
            exit_code: diagnostics.exit_code,
            stderr_tail: diagnostics.stderr_tail.clone(),
        }),
        End::Exited(Err(e)) => EndStatus::Failed(FailureCause::Crashed {
            exit_code: None,
            stderr_tail: format!(
                "{}[operator] cannot wait for the program: {e}",
                diagnostics.stderr_tail
            ),
        }),
    };
    RunEnd {
        status,
        diagnostics,
    }
}

async fn drain(reader: Option<tokio::task::JoinHandle<String>>) -> String {
    let Some(handle) = reader else {
        return String::new();
    };
    let abort = handle.abort_handle();
    match tokio::time::timeout(PIPE_DRAIN, handle).await {
        Ok(Ok(tail)) => tail,
        Ok(Err(_)) => String::new(),
        Err(_) => {
            abort.abort();
            "[operator] output pipe still held open by a process outside the task's group"
                .to_owned()
        }
    }
}
