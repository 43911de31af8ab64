//! The short-task paths, where spawning a process per task would dominate the task itself.
//!
//! - **Built-ins** (`noop`, `sleep`) run in-process: inputs are checked present in the blob store
//!   (not copied), the output is a 32-byte digest of the program name, args and input ids, stored
//!   and signed. No file system work besides storing the output.
//! - **Persistent workers**: one long-lived subprocess per (program, leased GPU set), started on
//!   first use, serving one task at a time over a line protocol on stdin/stdout. Inputs and
//!   output files follow the program contract exactly as for a subprocess (the operator
//!   materializes and hashes them); only the process start is saved.
//!
//! ## Line protocol
//! The operator writes one JSON object per line to the worker's stdin:
//! `{"id":7,"task":"leaf[3]","attempt":1,"args":["--ms","10"],"input_dir":"/…/inputs","inputs":2,"output":"/…/output","gpus":"0"}`
//! and the worker answers on stdout with one line, `{"id":7,"ok":true}` or
//! `{"id":7,"ok":false,"error":"why"}`, after writing the output file. Logs go to stderr (the
//! operator keeps its tail). The worker's environment carries `CUDA_VISIBLE_DEVICES` /
//! `NVIDIA_VISIBLE_DEVICES` for its GPU set and `PROOFMESH_WORKER=1`. On timeout or cancellation
//! the worker's whole process group is killed and a fresh one starts for the next task.
//! [`serve_stdio`] implements the worker side.

use crate::executor::{
    contract_env, exit_parts, report_failure, Diagnostics, EndStatus, GroupGuard, Inner, Outcome,
    RunContext, RunEnd, Tail, TaskReport, TaskSpec, Timings,
};
use crate::lease::Lease;
use crate::result::{now_ms, sign_result, task_failure, Produced};
use proofmesh_protocol::messages::FailureCause;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

/// The in-process programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// Does nothing; output is a digest of its inputs.
    Noop,
    /// Sleeps `--ms N` milliseconds (cancellable; on Linux the last ≤ 250 µs may be spun so it
    /// ends on time), then as `noop`.
    Sleep,
}

impl Builtin {
    /// By name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "noop" => Some(Builtin::Noop),
            "sleep" => Some(Builtin::Sleep),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Builtin::Noop => "noop",
            Builtin::Sleep => "sleep",
        }
    }
}

/// `--ms N` or `--ms=N`, and nothing else.
fn sleep_ms(args: &[String]) -> Result<u64, String> {
    let value = match args {
        [flag, value] if flag == "--ms" => value.as_str(),
        [one] if one.starts_with("--ms=") => &one["--ms=".len()..],
        [flag] if flag == "--ms" => return Err("sleep: --ms needs a value".to_owned()),
        [] => return Err("sleep: missing --ms N".to_owned()),
        _ => {
            return Err(format!(
                "sleep: unexpected arguments {args:?} (usage: sleep --ms N)"
            ))
        }
    };
    value
        .parse()
        .map_err(|_| format!("sleep: --ms {value:?} is not a number of milliseconds"))
}

/// Sleep `d`: never short, and late by a few tens of microseconds rather than tokio's ~1 ms.
/// tokio's timer wheel ticks in whole milliseconds and parks in whole milliseconds, so
/// `tokio::time::sleep(10 ms)` measured 11.1 ms on average here: that lateness is the stand-in
/// workload's, not orchestration's, yet the pipeline and scaling benches (whose ideal is the
/// nominal duration) counted it as overhead.
///
/// On Linux a one-shot `timerfd` does it: the kernel's high-resolution timer fires on time (no
/// timer slack) and the runtime's own reactor wakes the task, one thread wake-up in all. That
/// wake-up is still late: a virtual CPU that halted while every task slept takes ~90-180 µs to
/// run again here (Python's `time.sleep` overshoots as much), ~1.5% of a 10 ms task and half
/// the pipeline bench's excess over its bound. So the timer is armed early by the lateness
/// recently seen ([`WakeLead`]), and a wake-up that comes before the deadline spins out the
/// rest (at most [`WakeLead::MAX`], ~55 µs on average under the pipeline bench's load: a
/// prover computes all along anyway). The portable way ([`blocking_tail_sleep`]) woke its
/// blocking thread ~130 µs late on 2 busy cores, then the task another ~130 µs later.
async fn precise_sleep(d: Duration) {
    let start = std::time::Instant::now();
    let deadline = start + d;
    #[cfg(target_os = "linux")]
    {
        let armed = d.saturating_sub(WAKE_LEAD.get());
        match timerfd_sleep(armed).await {
            Ok(()) => {
                let woke = std::time::Instant::now();
                if !armed.is_zero() {
                    WAKE_LEAD.observe(woke.saturating_duration_since(start + armed));
                }
                if deadline.saturating_duration_since(woke) <= WakeLead::MAX {
                    spin_until(deadline);
                    return;
                }
                // Woken far too early (never seen): sleep the rest the portable way.
            }
            // Out of descriptors, say: sleep the rest the portable way.
            Err(e) => {
                tracing::debug!(error = %e, "timerfd unavailable; sleeping on a blocking thread")
            }
        }
    }
    blocking_tail_sleep(deadline).await;
}

/// Busy-wait to `deadline` (callers bound how far off it is).
#[cfg(target_os = "linux")]
fn spin_until(deadline: std::time::Instant) {
    while std::time::Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

/// How early [`precise_sleep`] arms its timer: a running estimate of the median of how late
/// its timers woke (frugal streaming: a step up after a later wake-up, a step down after an
/// earlier one). Under load the lateness spreads wide (the pipeline bench: a quarter of wake-ups
/// within ~80 µs, a tenth later than ~400 µs); aiming at its 80th percentile instead ended no
/// sooner and spun more. Capped at [`WakeLead::MAX`], so a busy machine's long delays neither
/// set it nor make every later sleep spin long. One per process: the lateness is the machine's,
/// not a task's. Relaxed loads and stores; a lost update only slows the estimate.
#[cfg(target_os = "linux")]
struct WakeLead(AtomicU64);

#[cfg(target_os = "linux")]
static WAKE_LEAD: WakeLead = WakeLead(AtomicU64::new(0));

#[cfg(target_os = "linux")]
impl WakeLead {
    /// The most a timer is armed early, and so the longest spin.
    const MAX: Duration = Duration::from_micros(250);
    /// Step of the estimate, in nanoseconds (from zero to ~150 µs in 30 sleeps).
    const STEP: u64 = 5_000;

    fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    /// Fold in one wake-up's lateness.
    fn observe(&self, late: Duration) {
        let old = self.0.load(Ordering::Relaxed);
        let new = if late.as_nanos() > u128::from(old) {
            (old + Self::STEP).min(Self::MAX.as_nanos() as u64)
        } else {
            old.saturating_sub(Self::STEP)
        };
        self.0.store(new, Ordering::Relaxed);
    }
}

/// [`precise_sleep`] on a `timerfd` registered with the runtime's reactor; dropping the future
/// (a cancelled task) closes the descriptor and with it the timer.
#[cfg(target_os = "linux")]
async fn timerfd_sleep(d: Duration) -> std::io::Result<()> {
    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    if d.is_zero() {
        return Ok(());
    }
    let timer = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?;
    timer.set(
        Expiration::OneShot(TimeSpec::from_duration(d)),
        TimerSetTimeFlags::empty(),
    )?;
    // Deprecated as unsound for a type whose descriptor can change or close while registered;
    // `Timer` owns its descriptor and never gives it up (`register_with_interest` is the same
    // call made `unsafe`, which this workspace forbids).
    #[allow(deprecated)]
    let timer =
        tokio::io::unix::AsyncFd::with_interest(Timer(timer), tokio::io::Interest::READABLE)?;
    loop {
        let mut ready = timer.readable().await?;
        // Readable once it has expired; reading the expiry count clears that.
        match ready.try_io(|t| match t.get_ref().0.wait() {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EAGAIN) => Err(std::io::ErrorKind::WouldBlock.into()),
            Err(e) => Err(e.into()),
        }) {
            Ok(done) => return done,
            // Woken without an expiry to read: wait again.
            Err(_would_block) => continue,
        }
    }
}

/// What tokio's `AsyncFd` needs of a `TimerFd` (`AsRawFd`; nix gives it `AsFd` only).
#[cfg(target_os = "linux")]
struct Timer(nix::sys::timerfd::TimerFd);

#[cfg(target_os = "linux")]
impl std::os::fd::AsRawFd for Timer {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// The portable [`precise_sleep`]: tokio's sleep, then the last stretch (never more than
/// [`PRECISE_TAIL`]) on a blocking thread (`nanosleep`), so a cancelled sleep frees that
/// thread soon.
async fn blocking_tail_sleep(deadline: std::time::Instant) {
    let d = deadline.saturating_duration_since(std::time::Instant::now());
    if let Some(coarse) = d.checked_sub(PRECISE_TAIL) {
        tokio::time::sleep(coarse).await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if !left.is_zero() {
            std::thread::sleep(left);
        }
    })
    .await;
}

/// How much of a sleep [`blocking_tail_sleep`] leaves to a blocking thread: more than the
/// timer wheel's lateness (one tick, plus a park rounded up to the next).
const PRECISE_TAIL: Duration = Duration::from_millis(3);

/// The output of a built-in: blake3 of a tag, the program name, the task's workflow and index,
/// its args and its input ids. So, as with a real prover, every task has its own output (the
/// 512 identical leaves of a `count = 512` group too, which would otherwise share one blob and
/// skip every transfer a real workflow pays for), a retry reproduces it, and it depends on the
/// inputs.
pub fn builtin_output(builtin: Builtin, spec: &TaskSpec) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"proofmesh/builtin-output/v2\0");
    h.update(builtin.name().as_bytes());
    h.update(&spec.workflow.0);
    h.update(&spec.task.to_le_bytes());
    for arg in &spec.args {
        h.update(&(arg.len() as u64).to_le_bytes());
        h.update(arg.as_bytes());
    }
    for id in &spec.inputs {
        h.update(&id.0);
    }
    *h.finalize().as_bytes()
}

pub(crate) async fn run_builtin(
    inner: &Inner,
    builtin: Builtin,
    spec: &TaskSpec,
    lease: &Lease,
    cancel: CancellationToken,
) -> TaskReport {
    let operator = inner.keypair.public();
    let t0 = Instant::now();
    let started_ms = now_ms();
    for (i, id) in spec.inputs.iter().enumerate() {
        match inner.blobs.contains(id) {
            Ok(true) => {}
            Ok(false) => {
                return report_failure(
                    operator,
                    spec,
                    FailureCause::Input(format!("input {i}: blob {id} not found")),
                )
            }
            Err(e) => {
                return report_failure(
                    operator,
                    spec,
                    FailureCause::Refused(format!("operator error: input {i}: {e}")),
                )
            }
        }
    }
    let setup = t0.elapsed();
    if builtin == Builtin::Sleep {
        let ms = match sleep_ms(&spec.args) {
            Ok(ms) => ms,
            Err(why) => {
                let cause = FailureCause::Crashed {
                    exit_code: Some(2),
                    stderr_tail: why,
                };
                return report_failure(operator, spec, cause);
            }
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => return TaskReport { outcome: Outcome::Cancelled, diagnostics: Diagnostics::default() },
            () = tokio::time::sleep(spec.timeout), if Duration::from_millis(ms) > spec.timeout => {
                return report_failure(operator, spec, FailureCause::Timeout);
            }
            () = precise_sleep(Duration::from_millis(ms)) => {}
        }
    } else if cancel.is_cancelled() {
        return TaskReport {
            outcome: Outcome::Cancelled,
            diagnostics: Diagnostics::default(),
        };
    }
    let t1 = Instant::now();
    let finished_ms = now_ms();
    lease.hand_over().await;
    let bytes = builtin_output(builtin, spec);
    let outcome = match inner.blobs.put(&bytes) {
        Ok(output) => {
            let produced = Produced {
                output,
                output_bytes: bytes.len() as u64,
                started_ms,
                finished_ms,
            };
            Outcome::Completed(sign_result(&inner.keypair, spec, lease, produced))
        }
        Err(e) => Outcome::Failed(task_failure(
            operator,
            spec,
            FailureCause::Refused(format!("operator error: {e}")),
        )),
    };
    let timings = Timings {
        setup,
        run: t1 - t0 - setup,
        collect: t1.elapsed(),
    };
    TaskReport {
        outcome,
        diagnostics: Diagnostics {
            exit_code: Some(0),
            timings,
            ..Diagnostics::default()
        },
    }
}

/// One task for a persistent worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRequest {
    /// Request id, echoed in the response.
    pub id: u64,
    /// Task name (`PROOFMESH_TASK`).
    pub task: String,
    /// Attempt (`PROOFMESH_ATTEMPT`).
    pub attempt: u32,
    /// The task's args.
    pub args: Vec<String>,
    /// Directory of `000`, `001`, ... (`PROOFMESH_INPUT_DIR`).
    pub input_dir: String,
    /// Number of inputs (`PROOFMESH_INPUTS`).
    pub inputs: usize,
    /// Where to write the output (`PROOFMESH_OUTPUT`).
    pub output: String,
    /// Leased GPUs, comma-separated (the worker's own `CUDA_VISIBLE_DEVICES`).
    pub gpus: String,
}

/// A worker's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerResponse {
    /// The request id.
    pub id: u64,
    /// Whether the output was written.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Serve the line protocol on stdin/stdout until stdin closes: the worker side, for a program
/// binary's `worker` subcommand. `handler` runs one task (writing `req.output`).
pub fn serve_stdio(
    mut handler: impl FnMut(&WorkerRequest) -> Result<(), String>,
) -> std::io::Result<()> {
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<WorkerRequest>(&line) {
            Ok(req) => match handler(&req) {
                Ok(()) => WorkerResponse {
                    id: req.id,
                    ok: true,
                    error: None,
                },
                Err(e) => WorkerResponse {
                    id: req.id,
                    ok: false,
                    error: Some(e),
                },
            },
            Err(e) => WorkerResponse {
                id: 0,
                ok: false,
                error: Some(format!("bad request: {e}")),
            },
        };
        let text = serde_json::to_string(&response).map_err(std::io::Error::other)?;
        writeln!(stdout, "{text}")?;
        stdout.flush()?;
    }
    Ok(())
}

/// Persistent workers by (program key, GPU set).
#[derive(Default)]
pub(crate) struct WorkerPool {
    workers: Mutex<HashMap<(String, String), Arc<Worker>>>,
}

impl WorkerPool {
    pub(crate) fn get(&self, key: (String, String), argv: Vec<String>) -> Arc<Worker> {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let gpus = key.1.clone();
        Arc::clone(
            workers
                .entry(key)
                .or_insert_with(|| Arc::new(Worker::new(argv, gpus))),
        )
    }

    pub(crate) async fn shutdown(&self) {
        let workers: Vec<_> = self
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, w)| w)
            .collect();
        for worker in workers {
            if let Some(mut proc) = worker.state.lock().await.take() {
                proc.group.kill();
                let _ = proc.child.wait().await;
            }
        }
    }
}

struct WorkerProc {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    group: GroupGuard,
    next_id: u64,
}

pub(crate) struct Worker {
    argv: Vec<String>,
    gpus: String,
    state: tokio::sync::Mutex<Option<WorkerProc>>,
    stderr: Arc<Mutex<Tail>>,
}

impl Worker {
    fn new(argv: Vec<String>, gpus: String) -> Self {
        Worker {
            argv,
            gpus,
            state: tokio::sync::Mutex::new(None),
            stderr: Arc::new(Mutex::new(Tail::new(64 * 1024))),
        }
    }

    fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .to_string_lossy()
    }

    fn spawn(&self, inner: &Inner) -> std::io::Result<WorkerProc> {
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("worker argv is empty"))?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .envs(&inner.config.env)
            .env("CUDA_VISIBLE_DEVICES", &self.gpus)
            .env("NVIDIA_VISIBLE_DEVICES", &self.gpus)
            .env("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
            .env("PROOFMESH_WORKER", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let group = GroupGuard::new(child.id());
        let missing = || std::io::Error::other("worker pipes missing");
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(missing)?).lines();
        if let Some(mut err) = child.stderr.take() {
            let tail = Arc::clone(&self.stderr);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tail.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(&buf[..n]);
                }
            });
        }
        Ok(WorkerProc {
            child,
            stdin,
            stdout,
            group,
            next_id: 1,
        })
    }

    pub(crate) async fn run(&self, inner: &Inner, ctx: RunContext<'_>) -> RunEnd {
        let deadline = tokio::time::Instant::now() + ctx.spec.timeout;
        let mut diagnostics = Diagnostics::default();
        let end = |status, diagnostics| RunEnd {
            status,
            diagnostics,
        };
        // Queueing for a busy worker counts against the task's timeout.
        let mut slot = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => return end(EndStatus::Cancelled, diagnostics),
            () = tokio::time::sleep_until(deadline) => return end(EndStatus::TimedOut, diagnostics),
            slot = self.state.lock() => slot,
        };
        if slot.is_none() {
            match self.spawn(inner) {
                Ok(proc) => *slot = Some(proc),
                Err(e) => {
                    let stderr_tail =
                        format!("[operator] cannot start worker {:?}: {e}", self.argv);
                    return end(
                        EndStatus::Failed(FailureCause::Crashed {
                            exit_code: None,
                            stderr_tail,
                        }),
                        diagnostics,
                    );
                }
            }
        }
        let Some(proc) = slot.as_mut() else {
            return end(
                EndStatus::Failed(FailureCause::Refused(
                    "operator error: worker slot empty".into(),
                )),
                diagnostics,
            );
        };
        let env: HashMap<_, _> = contract_env(&ctx).into_iter().collect();
        let get = |k: &str| env.get(k).cloned().unwrap_or_default();
        let id = proc.next_id;
        proc.next_id += 1;
        let request = WorkerRequest {
            id,
            task: ctx.spec.name.clone(),
            attempt: ctx.spec.attempt,
            args: ctx.spec.args.clone(),
            input_dir: get("PROOFMESH_INPUT_DIR"),
            inputs: ctx.spec.inputs.len(),
            output: get("PROOFMESH_OUTPUT"),
            gpus: get("CUDA_VISIBLE_DEVICES"),
        };
        let exchange = async {
            let mut line = serde_json::to_string(&request).map_err(|e| e.to_string())?;
            line.push('\n');
            proc.stdin
                .write_all(line.as_bytes())
                .await
                .map_err(|e| format!("writing request: {e}"))?;
            proc.stdin
                .flush()
                .await
                .map_err(|e| format!("writing request: {e}"))?;
            loop {
                let line = proc
                    .stdout
                    .next_line()
                    .await
                    .map_err(|e| format!("reading response: {e}"))?;
                let line = line.ok_or("worker closed its stdout")?;
                let response: WorkerResponse = serde_json::from_str(&line)
                    .map_err(|e| format!("malformed response {line:?}: {e}"))?;
                // A response to an abandoned earlier request (its caller was dropped) is skipped.
                if response.id == id {
                    return Ok(response);
                }
            }
        };
        let result = tokio::select! {
            biased;
            r = exchange => Some(r),
            () = ctx.cancel.cancelled() => None,
            () = tokio::time::sleep_until(deadline) => None,
        };
        let status: Result<EndStatus, String> = match result {
            Some(Ok(WorkerResponse { ok: true, .. })) => {
                diagnostics.exit_code = Some(0);
                return end(EndStatus::Succeeded, diagnostics);
            }
            Some(Ok(WorkerResponse { error, .. })) => {
                // Worker stderr is read by another task: what it logged just before answering
                // may not be in the tail yet (best effort), while `error` always is.
                tokio::task::yield_now().await;
                diagnostics.stderr_tail = self.stderr_tail();
                let stderr_tail =
                    format!("{}{}", diagnostics.stderr_tail, error.unwrap_or_default());
                return end(
                    EndStatus::Failed(FailureCause::Crashed {
                        exit_code: None,
                        stderr_tail,
                    }),
                    diagnostics,
                );
            }
            Some(Err(why)) => Err(why),
            None if ctx.cancel.is_cancelled() => Ok(EndStatus::Cancelled),
            None => Ok(EndStatus::TimedOut),
        };
        // The worker is dead, broken, or busy with a task we gave up on: kill it; the next task
        // starts a fresh one.
        if let Some(mut proc) = slot.take() {
            proc.group.kill();
            if let Ok(code) = proc.child.wait().await {
                (diagnostics.exit_code, diagnostics.signal) = exit_parts(code);
            }
        }
        diagnostics.stderr_tail = self.stderr_tail();
        let status = status.unwrap_or_else(|why| {
            let stderr_tail = format!("{}[operator] worker failed: {why}", diagnostics.stderr_tail);
            EndStatus::Failed(FailureCause::Crashed {
                exit_code: diagnostics.exit_code,
                stderr_tail,
            })
        });
        end(status, diagnostics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_args() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(sleep_ms(&a(&["--ms", "10"])), Ok(10));
        assert_eq!(sleep_ms(&a(&["--ms=7"])), Ok(7));
        assert!(sleep_ms(&a(&["--ms"])).is_err());
        assert!(sleep_ms(&a(&["--ms", "x"])).unwrap_err().contains("\"x\""));
        assert!(sleep_ms(&a(&["--sec", "1"])).unwrap_err().contains("--sec"));
        assert!(sleep_ms(&[]).is_err());
    }

    /// The stand-in's sleeps may be late (scheduling) but never short, whichever way they sleep.
    #[tokio::test]
    async fn precise_sleeps_are_never_short() {
        for ms in [0, 1, 4, 12] {
            let d = Duration::from_millis(ms);
            assert_precise_sleep_not_short(ms).await;
            let t = std::time::Instant::now();
            blocking_tail_sleep(t + d).await;
            assert!(
                t.elapsed() >= d,
                "blocking_tail_sleep({ms} ms) took {:?}",
                t.elapsed()
            );
            #[cfg(target_os = "linux")]
            {
                let t = std::time::Instant::now();
                timerfd_sleep(d).await.unwrap();
                assert!(
                    t.elapsed() >= d,
                    "timerfd_sleep({ms} ms) took {:?}",
                    t.elapsed()
                );
            }
        }
    }

    /// The lead follows the median lateness within its cap; armed as early as it ever is, a
    /// sleep still ends no sooner than asked: the spin covers the rest.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_wake_lead_follows_the_median_and_an_early_armed_sleep_is_never_short() {
        let lead = WakeLead(AtomicU64::new(0));
        // Wake-ups on time, 50 µs and 100 µs late in turn: the estimate settles at the median.
        for k in 0..600u64 {
            lead.observe(Duration::from_micros(k % 3 * 50));
        }
        let settled = lead.get().as_micros();
        assert!((40..=60).contains(&settled), "{settled} µs");
        for _ in 0..100 {
            lead.observe(Duration::from_secs(1));
        }
        assert_eq!(lead.get(), WakeLead::MAX, "capped");
        for _ in 0..1000 {
            lead.observe(Duration::ZERO);
        }
        assert_eq!(lead.get(), Duration::ZERO);
        WAKE_LEAD
            .0
            .store(WakeLead::MAX.as_nanos() as u64, Ordering::Relaxed);
        for ms in [0, 1, 2, 5] {
            assert_precise_sleep_not_short(ms).await;
        }
        assert!(WAKE_LEAD.get() <= WakeLead::MAX);
    }

    async fn assert_precise_sleep_not_short(ms: u64) {
        let d = Duration::from_millis(ms);
        let t = std::time::Instant::now();
        precise_sleep(d).await;
        assert!(
            t.elapsed() >= d,
            "precise_sleep({ms} ms) took {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn builtin_output_depends_on_everything() {
        use proofmesh_protocol::ContentId;
        let id = ContentId::of_bytes(b"x");
        let spec = |task: u32, args: &[&str], inputs: Vec<ContentId>| TaskSpec {
            workflow: ContentId::of_bytes(b"wf"),
            task,
            name: format!("t[{task}]"),
            attempt: 1,
            program: proofmesh_protocol::Program {
                name: "noop".into(),
                version: "1".into(),
            },
            args: args.iter().map(|a| a.to_string()).collect(),
            inputs,
            timeout: Duration::from_secs(1),
        };
        let base = builtin_output(Builtin::Noop, &spec(0, &[], vec![id]));
        assert_ne!(
            base,
            builtin_output(Builtin::Sleep, &spec(0, &[], vec![id]))
        );
        assert_ne!(
            base,
            builtin_output(Builtin::Noop, &spec(0, &["a"], vec![id]))
        );
        assert_ne!(base, builtin_output(Builtin::Noop, &spec(0, &[], vec![])));
        assert_ne!(base, builtin_output(Builtin::Noop, &spec(1, &[], vec![id])));
        let mut other_workflow = spec(0, &[], vec![id]);
        other_workflow.workflow = ContentId::of_bytes(b"other");
        assert_ne!(base, builtin_output(Builtin::Noop, &other_workflow));
        let mut retry = spec(0, &[], vec![id]);
        retry.attempt = 2;
        assert_eq!(
            base,
            builtin_output(Builtin::Noop, &retry),
            "a retry reproduces it"
        );
    }

    #[test]
    fn tail_keeps_last_bytes() {
        let mut t = Tail::new(4);
        t.push(b"ab");
        t.push(b"cdef");
        assert_eq!(t.to_string_lossy(), "cdef");
        t.push(b"g");
        assert_eq!(t.to_string_lossy(), "defg");
        t.push(b"0123456789");
        assert_eq!(t.to_string_lossy(), "6789");
    }
}
