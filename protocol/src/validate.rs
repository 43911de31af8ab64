//! Validation of workflows, the limits it enforces, and the graph functions built on it
//! (topological order, critical path).
//!
//! Every check is iterative (Kahn's algorithm, no recursion), so a 100,000-task chain cannot
//! overflow the stack, and no check panics on any input. Errors name the task and the key at
//! fault so that a person can fix the file from the message alone.

use crate::encoding;
use crate::resources::Resources;
use crate::workflow::{Input, Program, Task, TaskIndex, Workflow};
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// Most tasks a workflow may have after expansion.
pub const MAX_TASKS: usize = 100_000;
/// Most dependency edges a workflow may have after expansion.
pub const MAX_EDGES: usize = 1_000_000;
/// Largest workflow file accepted (4 MiB); the expanded workflow must also encode to at most
/// [`encoding::MAX_MESSAGE_BYTES`].
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Longest `[[task]]` id in a file.
pub const MAX_ID_LEN: usize = 64;
/// Longest expanded task name, workflow name or stream name.
pub const MAX_NAME_LEN: usize = 128;
/// Longest program name or version.
pub const MAX_PROGRAM_LEN: usize = 64;
/// Most arguments per task.
pub const MAX_ARGS: usize = 256;
/// Longest single argument, in bytes.
pub const MAX_ARG_LEN: usize = 4096;
/// Widest aggregation tree node.
pub const MAX_ARITY: u32 = 1024;
/// CPU cores per task.
pub const MAX_CPU: u32 = 1024;
/// Memory per task: 16 TiB, in MiB.
pub const MAX_MEMORY_MB: u64 = 16 * 1024 * 1024;
/// GPUs per task.
pub const MAX_GPU: u32 = 64;
/// VRAM per GPU: 1 TiB, in MiB.
pub const MAX_VRAM_MB: u64 = 1024 * 1024;
/// Scratch disk per task: 1 PiB, in MiB.
pub const MAX_DISK_MB: u64 = 1024 * 1024 * 1024;
/// Shortest per-attempt timeout: 1 ms (0 would fail every attempt at once).
pub const MIN_TIMEOUT_MS: u64 = 1;
/// Longest per-attempt timeout: 7 days.
pub const MAX_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// Most attempts per task.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest workflow deadline: 30 days (0 means no deadline).
pub const MAX_DEADLINE_MS: u64 = 30 * 24 * 3600 * 1000;

/// The key of a task an error is about, printed as it is written in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Field {
    Id,
    Program,
    Args,
    Inputs,
    Deps,
    Cpu,
    Memory,
    Gpu,
    Vram,
    Disk,
    Timeout,
    MaxAttempts,
    MaxPrice,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Id => "id",
            Field::Program => "program",
            Field::Args => "args",
            Field::Inputs => "inputs",
            Field::Deps => "deps",
            Field::Cpu => "resources.cpu",
            Field::Memory => "resources.memory_gb",
            Field::Gpu => "resources.gpu",
            Field::Vram => "resources.vram_gb",
            Field::Disk => "resources.disk_gb",
            Field::Timeout => "timeout_s",
            Field::MaxAttempts => "max_attempts",
            Field::MaxPrice => "max_price_wei",
        })
    }
}

/// Why a workflow file or workflow is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    /// The file is not valid TOML/JSON, or a key has the wrong type or is unknown.
    #[error("malformed {format} at line {line}, column {column}: {message}")]
    Syntax {
        /// `TOML` or `JSON`.
        format: &'static str,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("workflow file is {size} bytes, larger than the {limit}-byte limit")]
    FileTooLarge {
        /// File size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// The expanded workflow would encode to more than the message limit.
    #[error("the expanded workflow is larger than the {limit}-byte message limit{}", at.as_ref().map(|t| format!(" (reached at task {t:?})")).unwrap_or_default())]
    EncodedTooLarge {
        /// Limit.
        limit: usize,
        /// Task being expanded when the limit was reached.
        at: Option<String>,
    },
    /// No tasks at all.
    #[error("workflow has no tasks: add at least one [[task]] with an id and a program")]
    Empty,
    /// Bad `[[task]]` id.
    #[error("task id {id:?} is invalid: use 1 to 64 characters from A-Z a-z 0-9 _ - .")]
    InvalidId {
        /// The id.
        id: String,
    },
    /// Two entries (or two expanded tasks) share an id.
    #[error("duplicate task id {id:?}: every task id must be unique")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// Keys that cannot be combined.
    #[error("task {task:?}: {detail}")]
    Conflict {
        /// Task.
        task: String,
        /// What conflicts.
        detail: String,
    },
    /// `count` out of range.
    #[error("task {task:?}: field count = {count} must be between 1 and {max}", max = MAX_TASKS)]
    InvalidCount {
        /// Task.
        task: String,
        /// Given count.
        count: u64,
    },
    /// `aggregate.arity` out of range.
    #[error("task {task:?}: field aggregate.arity = {arity} must be between 2 and {max}", max = MAX_ARITY)]
    InvalidArity {
        /// Task.
        task: String,
        /// Given arity.
        arity: u32,
    },
    /// `aggregate.over` names nothing.
    #[error("task {task:?}: field aggregate.over = {over:?} names no task or group")]
    UnknownAggregateTarget {
        /// Task.
        task: String,
        /// Given target.
        over: String,
    },
    /// More than [`MAX_TASKS`] tasks after expansion.
    #[error("workflow expands to {count} tasks (reached at task {at:?}), more than the limit of {limit}")]
    TooManyTasks {
        /// Count so far.
        count: u64,
        /// Limit.
        limit: usize,
        /// Entry that crossed the limit.
        at: String,
    },
    /// More than [`MAX_EDGES`] dependency edges after expansion.
    #[error("workflow expands to more than {limit} dependency edges (reached at task {at:?})")]
    TooManyEdges {
        /// Limit.
        limit: usize,
        /// Task that crossed the limit.
        at: String,
    },
    /// A dependency names nothing.
    #[error("task {task:?}: field deps: unknown dependency {dep:?} (no task, group member or tree node has that id)")]
    UnknownDependency {
        /// Task.
        task: String,
        /// The reference.
        dep: String,
    },
    /// A task depends on itself (directly, or through its own group).
    #[error("task {task:?}: field deps: a task cannot depend on itself")]
    SelfDependency {
        /// Task.
        task: String,
    },
    /// A dependency cycle; `path` reads `a -> b -> a` ("a depends on b, which depends on a").
    #[error("dependency cycle: {path} (each task depends on the next)")]
    Cycle {
        /// The cycle, first task repeated at the end.
        path: String,
    },
    /// No `program`.
    #[error("task {task:?}: missing field program (e.g. program = \"leaf@1\")")]
    MissingProgram {
        /// Task.
        task: String,
    },
    /// Malformed program.
    #[error("task {task:?}: field program = {value:?} is invalid: {reason}")]
    InvalidProgram {
        /// Task.
        task: String,
        /// As written.
        value: String,
        /// Why.
        reason: String,
    },
    /// An `inputs` entry is not a blob id.
    #[error("task {task:?}: field inputs: {value:?} is not a blob id (64 hex characters)")]
    InvalidBlob {
        /// Task.
        task: String,
        /// As written.
        value: String,
    },
    /// A value of the wrong sign or kind.
    #[error("task {task:?}: field {field} = {value} is invalid: expected {expected}")]
    InvalidValue {
        /// Task.
        task: String,
        /// Key.
        field: Field,
        /// As written.
        value: String,
        /// What is expected.
        expected: String,
    },
    /// Neither CPU nor GPU.
    #[error("task {task:?}: field resources: a task needs at least one CPU core or one GPU (cpu = 0 and gpu = 0)")]
    NoCompute {
        /// Task.
        task: String,
    },
    /// VRAM asked without a GPU.
    #[error("task {task:?}: field resources.vram_gb is set but resources.gpu = 0: ask for a GPU or drop vram_gb")]
    VramWithoutGpu {
        /// Task.
        task: String,
    },
    /// A value outside its documented bounds.
    #[error("task {task:?}: field {field} = {value} is out of range: allowed {allowed}")]
    OutOfRange {
        /// Task.
        task: String,
        /// Key.
        field: Field,
        /// Value (in the unit of `allowed`).
        value: String,
        /// The bounds, with unit.
        allowed: String,
    },
    /// Deadline out of bounds.
    #[error(
        "field deadline_s = {value} is out of range: allowed 0 (none) up to 2592000 s (30 days)"
    )]
    DeadlineOutOfRange {
        /// As written (seconds).
        value: String,
    },
    /// A workflow-level name is unusable.
    #[error("field {field} = {value:?} is invalid: use 1 to 128 printable characters")]
    InvalidName {
        /// `name` or `ordering.stream`.
        field: &'static str,
        /// As written.
        value: String,
    },
    /// (Canonical form) a dependency index outside the task list.
    #[error(
        "task {task:?}: field deps: task index {dep} does not exist (the workflow has {len} tasks)"
    )]
    DanglingDependency {
        /// Task.
        task: String,
        /// Index.
        dep: TaskIndex,
        /// Number of tasks.
        len: usize,
    },
    /// (Canonical form) deps not strictly ascending: the same workflow would have two ids.
    #[error(
        "task {task:?}: field deps must be sorted ascending without duplicates (canonical form)"
    )]
    NonCanonicalDeps {
        /// Task.
        task: String,
    },
    /// (Canonical form) an output input that is not a dependency.
    #[error("task {task:?}: field inputs: reads the output of task index {input}, which is not one of its deps")]
    InputNotDependency {
        /// Task.
        task: String,
        /// Index.
        input: TaskIndex,
    },
}

/// What `proofmesh workflow validate` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Tasks after expansion.
    pub tasks: usize,
    /// Dependency edges.
    pub edges: usize,
    /// Tasks without dependencies.
    pub roots: usize,
    /// Tasks nothing depends on.
    pub sinks: usize,
    /// Longest dependency chain, in tasks.
    pub critical_path_tasks: usize,
    /// Heaviest dependency chain by per-attempt timeout, in ms: the worst-case makespan of one
    /// attempt each with unlimited operators.
    pub critical_path_timeout_ms: u64,
    /// Sum of every task's resources (the ceiling if all ran at once).
    pub total: ResourceTotals,
    /// Component-wise maximum over tasks: the smallest machine that can run every task.
    pub largest: Resources,
    /// Sum of every task's `max_price_wei` (one attempt each).
    pub max_price_wei_total: u128,
    /// Tasks per program, `name@version`.
    pub programs: BTreeMap<String, usize>,
}

/// An upper bound on a workflow's canonical (bincode varint) encoding: every integer at its
/// widest varint (u32 5 bytes, u64 9, u128 17), every length prefix 9 bytes.
pub fn encoded_upper_bound(w: &Workflow) -> usize {
    const U32: usize = 5;
    const U64: usize = 9;
    const U128: usize = 17;
    let string = |s: &str| U64 + s.len();
    let mut total = string(&w.name)
        + 1
        + w.ordering.as_ref().map_or(0, |o| string(&o.stream) + U64)
        + U64
        + U64;
    for t in &w.tasks {
        total += string(&t.name) + string(&t.program.name) + string(&t.program.version);
        total += U64 + t.args.iter().map(|a| string(a)).sum::<usize>();
        total += U64 + t.inputs.len() * (U32 + 32); // variant tag + the larger variant (a blob id)
        total += U64 + t.deps.len() * U32;
        total += U32 + U64 + U32 + U64 + U64; // resources
        total += U64 + U32 + U128;
    }
    total
}

/// Summed resources (u64 so 100,000 tasks cannot overflow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ResourceTotals {
    pub cpu: u64,
    pub memory_mb: u64,
    pub gpu: u64,
    pub vram_mb: u64,
    pub disk_mb: u64,
}

/// Program names and versions: 1..=64 characters of `[A-Za-z0-9_.-]`.
pub(crate) fn check_program(task: &str, p: &Program) -> Result<(), WorkflowError> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_PROGRAM_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    if ok(&p.name) && ok(&p.version) {
        return Ok(());
    }
    Err(WorkflowError::InvalidProgram {
        task: task.to_owned(),
        value: format!("{}@{}", short(&p.name), short(&p.version)),
        reason: "name and version must each be 1 to 64 characters from A-Z a-z 0-9 _ - .".into(),
    })
}

fn check_name(field: &'static str, s: &str) -> Result<(), WorkflowError> {
    if s.is_empty() || s.len() > MAX_NAME_LEN || s.chars().any(char::is_control) {
        return Err(WorkflowError::InvalidName {
            field,
            value: short(s),
        });
    }
    Ok(())
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

fn range<T: PartialOrd + fmt::Display>(
    task: &str,
    field: Field,
    value: T,
    min: T,
    max: T,
    allowed: impl FnOnce() -> String,
) -> Result<(), WorkflowError> {
    if value < min || value > max {
        return Err(WorkflowError::OutOfRange {
            task: task.to_owned(),
            field,
            value: value.to_string(),
            allowed: allowed(),
        });
    }
    Ok(())
}

/// Resource and timeout bounds of one task.
fn check_task_bounds(t: &crate::workflow::Task) -> Result<(), WorkflowError> {
    let n = t.name.as_str();
    let r = &t.resources;
    if r.cpu == 0 && r.gpu == 0 {
        return Err(WorkflowError::NoCompute { task: n.to_owned() });
    }
    range(n, Field::Cpu, r.cpu, 0, MAX_CPU, || {
        format!("0 to {MAX_CPU} cores")
    })?;
    range(n, Field::Memory, r.memory_mb, 0, MAX_MEMORY_MB, || {
        format!("0 to {MAX_MEMORY_MB} MiB (16 TiB)")
    })?;
    range(n, Field::Gpu, r.gpu, 0, MAX_GPU, || {
        format!("0 to {MAX_GPU} GPUs")
    })?;
    range(n, Field::Vram, r.vram_mb, 0, MAX_VRAM_MB, || {
        format!("0 to {MAX_VRAM_MB} MiB (1 TiB) per GPU")
    })?;
    range(n, Field::Disk, r.disk_mb, 0, MAX_DISK_MB, || {
        format!("0 to {MAX_DISK_MB} MiB (1 PiB)")
    })?;
    if r.gpu == 0 && r.vram_mb > 0 {
        return Err(WorkflowError::VramWithoutGpu { task: n.to_owned() });
    }
    range(
        n,
        Field::Timeout,
        t.timeout_ms,
        MIN_TIMEOUT_MS,
        MAX_TIMEOUT_MS,
        || format!("{MIN_TIMEOUT_MS} ms to {MAX_TIMEOUT_MS} ms (7 days)"),
    )
    .map_err(|e| match e {
        // Report the timeout in the unit the file uses.
        WorkflowError::OutOfRange { task, field, .. } => WorkflowError::OutOfRange {
            task,
            field,
            value: format!("{} s", t.timeout_ms as f64 / 1000.0),
            allowed: "0.001 s to 604800 s (7 days)".into(),
        },
        other => other,
    })?;
    range(
        n,
        Field::MaxAttempts,
        t.max_attempts,
        1,
        MAX_ATTEMPTS,
        || format!("1 to {MAX_ATTEMPTS}"),
    )?;
    if t.args.len() > MAX_ARGS {
        return Err(WorkflowError::OutOfRange {
            task: n.to_owned(),
            field: Field::Args,
            value: format!("{} arguments", t.args.len()),
            allowed: format!("at most {MAX_ARGS} arguments"),
        });
    }
    for a in &t.args {
        if a.len() > MAX_ARG_LEN || a.contains('\0') {
            return Err(WorkflowError::InvalidValue {
                task: n.to_owned(),
                field: Field::Args,
                value: format!("{:?}", short(a)),
                expected: format!(
                    "arguments of at most {MAX_ARG_LEN} bytes without NUL characters"
                ),
            });
        }
    }
    Ok(())
}

/// Dependents of every task in compressed (CSR) form: `targets[offsets[i]..offsets[i + 1]]`
/// are the tasks that depend on task `i`.
struct Dependents {
    offsets: Vec<u32>,
    targets: Vec<TaskIndex>,
}

impl Dependents {
    /// Caller guarantees every dep index is in range.
    fn build(wf: &Workflow) -> Dependents {
        let n = wf.tasks.len();
        let mut offsets = vec![0u32; n + 1];
        for t in &wf.tasks {
            for &d in &t.deps {
                offsets[d as usize + 1] += 1;
            }
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut targets = vec![0; offsets[n] as usize];
        for (i, t) in wf.tasks.iter().enumerate() {
            for &d in &t.deps {
                let slot = &mut fill[d as usize];
                targets[*slot as usize] = i as TaskIndex;
                *slot += 1;
            }
        }
        Dependents { offsets, targets }
    }

    fn of(&self, i: usize) -> &[TaskIndex] {
        &self.targets[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

impl Workflow {
    /// Check everything: names, programs, bounds, canonical form, dependency indices, cycles
    /// and the encoded size. Returns a [`Summary`] of a valid workflow.
    ///
    /// Run this on every workflow that arrives from a file or from the network.
    pub fn validate(&self) -> Result<Summary, WorkflowError> {
        let n = self.tasks.len();
        if n == 0 {
            return Err(WorkflowError::Empty);
        }
        if n > MAX_TASKS {
            return Err(WorkflowError::TooManyTasks {
                count: n as u64,
                limit: MAX_TASKS,
                at: self.tasks[MAX_TASKS].name.clone(),
            });
        }
        check_name("name", &self.name)?;
        if let Some(o) = &self.ordering {
            check_name("ordering.stream", &o.stream)?;
        }
        if self.deadline_ms > MAX_DEADLINE_MS {
            return Err(WorkflowError::DeadlineOutOfRange {
                value: (self.deadline_ms as f64 / 1000.0).to_string(),
            });
        }
        let mut names = HashSet::with_capacity(n);
        let mut edges = 0usize;
        for (i, t) in self.tasks.iter().enumerate() {
            if t.name.is_empty()
                || t.name.len() > MAX_NAME_LEN
                || t.name.chars().any(char::is_control)
            {
                return Err(WorkflowError::InvalidId { id: short(&t.name) });
            }
            if !names.insert(t.name.as_str()) {
                return Err(WorkflowError::DuplicateId { id: t.name.clone() });
            }
            check_program(&t.name, &t.program)?;
            check_task_bounds(t)?;
            for (k, &d) in t.deps.iter().enumerate() {
                check_dependency_index(t, i, d, n)?;
                if k > 0 && t.deps[k - 1] >= d {
                    return Err(WorkflowError::NonCanonicalDeps {
                        task: t.name.clone(),
                    });
                }
            }
            for input in &t.inputs {
                if let Input::Output(d) = *input {
                    if t.deps.binary_search(&d).is_err() {
                        return Err(WorkflowError::InputNotDependency {
                            task: t.name.clone(),
                            input: d,
                        });
                    }
                }
            }
            edges += t.deps.len();
            if edges > MAX_EDGES {
                return Err(WorkflowError::TooManyEdges {
                    limit: MAX_EDGES,
                    at: t.name.clone(),
                });
            }
        }
        // Exact encoding costs as much as the rest of validation; a cheap upper bound settles
        // all but huge workflows.
        if encoded_upper_bound(self) > encoding::MAX_MESSAGE_BYTES
            && encoding::encoded_len(self) > encoding::MAX_MESSAGE_BYTES
        {
            return Err(WorkflowError::EncodedTooLarge {
                limit: encoding::MAX_MESSAGE_BYTES,
                at: None,
            });
        }

        let dependents = Dependents::build(self);
        let order = self.kahn(&dependents)?;

        // Longest chains, forward over the topological order.
        let mut depth = vec![0usize; n];
        let mut weight = vec![0u64; n];
        let (mut critical_path_tasks, mut critical_path_timeout_ms) = (0, 0);
        let mut total = ResourceTotals::default();
        let mut largest = Resources::default();
        let mut max_price_wei_total: u128 = 0;
        // Keyed by borrowed strings: one allocation per program, not per task.
        let mut by_program: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for &i in &order {
            let t = &self.tasks[i as usize];
            let (d, w) = t.deps.iter().fold((0, 0), |(d, w), &p| {
                (d.max(depth[p as usize]), w.max(weight[p as usize]))
            });
            depth[i as usize] = d + 1;
            weight[i as usize] = w.saturating_add(t.timeout_ms);
            critical_path_tasks = critical_path_tasks.max(d + 1);
            critical_path_timeout_ms = critical_path_timeout_ms.max(weight[i as usize]);
            let r = &t.resources;
            total.cpu += u64::from(r.cpu);
            total.memory_mb += r.memory_mb;
            total.gpu += u64::from(r.gpu);
            total.vram_mb += r.vram_mb * u64::from(r.gpu);
            total.disk_mb += r.disk_mb;
            largest.cpu = largest.cpu.max(r.cpu);
            largest.memory_mb = largest.memory_mb.max(r.memory_mb);
            largest.gpu = largest.gpu.max(r.gpu);
            largest.vram_mb = largest.vram_mb.max(r.vram_mb);
            largest.disk_mb = largest.disk_mb.max(r.disk_mb);
            max_price_wei_total = max_price_wei_total.saturating_add(t.max_price_wei);
            *by_program
                .entry((t.program.name.as_str(), t.program.version.as_str()))
                .or_default() += 1;
        }
        let programs = by_program
            .into_iter()
            .map(|((name, version), count)| (format!("{name}@{version}"), count))
            .collect();
        Ok(Summary {
            tasks: n,
            edges,
            roots: self.tasks.iter().filter(|t| t.deps.is_empty()).count(),
            sinks: (0..n).filter(|&i| dependents.of(i).is_empty()).count(),
            critical_path_tasks,
            critical_path_timeout_ms,
            total,
            largest,
            max_price_wei_total,
            programs,
        })
    }

    /// Kahn's algorithm over valid indices: a topological order (dependencies first, ties by
    /// index), or the cycle.
    fn kahn(&self, dependents: &Dependents) -> Result<Vec<TaskIndex>, WorkflowError> {
        let n = self.tasks.len();
        let mut pending: Vec<u32> = self.tasks.iter().map(|t| t.deps.len() as u32).collect();
        let mut order: Vec<TaskIndex> = (0..n as TaskIndex)
            .filter(|&i| pending[i as usize] == 0)
            .collect();
        let mut next = 0;
        while next < order.len() {
            let i = order[next] as usize;
            next += 1;
            for &d in dependents.of(i) {
                pending[d as usize] -= 1;
                if pending[d as usize] == 0 {
                    order.push(d);
                }
            }
        }
        if order.len() == n {
            return Ok(order);
        }
        Err(WorkflowError::Cycle {
            path: self.cycle_path(&pending),
        })
    }

    /// A cycle among the tasks Kahn could not order. Each of them still waits on at least one
    /// dependency that is itself unordered, so walking such dependencies must revisit a task.
    fn cycle_path(&self, pending: &[u32]) -> String {
        let Some(start) = pending.iter().position(|&p| p > 0) else {
            return String::from("(none)");
        };
        let mut position = vec![usize::MAX; self.tasks.len()];
        let mut walk: Vec<usize> = Vec::new();
        let mut cur = start;
        while position[cur] == usize::MAX {
            position[cur] = walk.len();
            walk.push(cur);
            match self.tasks[cur]
                .deps
                .iter()
                .find(|&&d| pending[d as usize] > 0)
            {
                Some(&d) => cur = d as usize,
                None => break, // cannot happen for a task Kahn left behind
            }
        }
        let from = if position[cur] == usize::MAX {
            0
        } else {
            position[cur]
        };
        let mut cycle: Vec<&str> = walk[from..]
            .iter()
            .map(|&i| self.tasks[i].name.as_str())
            .collect();
        cycle.push(&self.tasks[walk[from]].name);
        // Keep messages readable for huge cycles.
        if cycle.len() > 24 {
            let hidden = cycle.len() - 20;
            let mut short: Vec<String> = cycle[..10].iter().map(|s| s.to_string()).collect();
            short.push(format!("... ({hidden} more) ..."));
            short.extend(cycle[cycle.len() - 10..].iter().map(|s| s.to_string()));
            return short.join(" -> ");
        }
        cycle.join(" -> ")
    }

    /// A topological order (every task after its dependencies; ties broken by index).
    /// Checks dependency indices and cycles, nothing else.
    pub fn topological_order(&self) -> Result<Vec<TaskIndex>, WorkflowError> {
        self.check_indices()?;
        self.kahn(&Dependents::build(self))
    }

    /// For each task, the heaviest chain of per-attempt timeouts from it (inclusive) to the
    /// end of the workflow, in ms: a scheduler's critical-path priority. Checks indices and
    /// cycles, nothing else.
    pub fn critical_path_remaining(&self) -> Result<Vec<u64>, WorkflowError> {
        let order = self.topological_order()?;
        let mut remaining = vec![0u64; self.tasks.len()];
        let mut below = vec![0u64; self.tasks.len()];
        for &i in order.iter().rev() {
            let t = &self.tasks[i as usize];
            remaining[i as usize] = below[i as usize].saturating_add(t.timeout_ms);
            for &d in &t.deps {
                below[d as usize] = below[d as usize].max(remaining[i as usize]);
            }
        }
        Ok(remaining)
    }

    /// For each task, the tasks that depend on it, ascending.
    pub fn dependents(&self) -> Result<Vec<Vec<TaskIndex>>, WorkflowError> {
        self.check_indices()?;
        let d = Dependents::build(self);
        Ok((0..self.tasks.len()).map(|i| d.of(i).to_vec()).collect())
    }

    fn check_indices(&self) -> Result<(), WorkflowError> {
        let n = self.tasks.len();
        for (i, t) in self.tasks.iter().enumerate() {
            for &d in &t.deps {
                check_dependency_index(t, i, d, n)?;
            }
        }
        Ok(())
    }
}

/// `d`, a dependency of task `i` (`t`) in a workflow of `n` tasks, names another task of it.
fn check_dependency_index(t: &Task, i: usize, d: TaskIndex, n: usize) -> Result<(), WorkflowError> {
    if d as usize >= n {
        return Err(WorkflowError::DanglingDependency {
            task: t.name.clone(),
            dep: d,
            len: n,
        });
    }
    if d as usize == i {
        return Err(WorkflowError::SelfDependency {
            task: t.name.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::{Program, Task};

    fn task(name: &str, deps: Vec<TaskIndex>, timeout_ms: u64) -> Task {
        Task {
            name: name.into(),
            program: Program {
                name: "noop".into(),
                version: "1".into(),
            },
            args: vec![],
            inputs: deps.iter().map(|&d| Input::Output(d)).collect(),
            deps,
            resources: Resources {
                cpu: 1,
                memory_mb: 1,
                ..Default::default()
            },
            timeout_ms,
            max_attempts: 1,
            max_price_wei: 0,
        }
    }

    fn wf(tasks: Vec<Task>) -> Workflow {
        Workflow {
            name: "t".into(),
            ordering: None,
            deadline_ms: 0,
            tasks,
        }
    }

    #[test]
    fn diamond_summary_and_critical_path() {
        // a <- b, a <- c (slow), b,c <- d
        let w = wf(vec![
            task("a", vec![], 10),
            task("b", vec![0], 20),
            task("c", vec![0], 50),
            task("d", vec![1, 2], 5),
        ]);
        let s = w.validate().unwrap();
        assert_eq!((s.tasks, s.edges, s.roots, s.sinks), (4, 4, 1, 1));
        assert_eq!(s.critical_path_tasks, 3);
        assert_eq!(s.critical_path_timeout_ms, 65);
        assert_eq!(w.critical_path_remaining().unwrap(), vec![65, 25, 55, 5]);
        assert_eq!(w.topological_order().unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(
            w.dependents().unwrap(),
            vec![vec![1, 2], vec![3], vec![3], vec![]]
        );
    }

    #[test]
    fn cycle_path_is_printed() {
        let w = wf(vec![
            task("a", vec![1], 1),
            task("b", vec![2], 1),
            task("c", vec![0], 1),
            task("x", vec![], 1),
        ]);
        assert_eq!(
            w.validate(),
            Err(WorkflowError::Cycle {
                path: "a -> b -> c -> a".into()
            })
        );
        assert!(w.topological_order().is_err());
        assert!(w.critical_path_remaining().is_err());
    }

    #[test]
    fn canonical_form_is_enforced() {
        let mut w = wf(vec![
            task("a", vec![], 1),
            task("b", vec![], 1),
            task("c", vec![1, 0], 1),
        ]);
        assert_eq!(
            w.validate(),
            Err(WorkflowError::NonCanonicalDeps { task: "c".into() })
        );
        w.tasks[2] = task("c", vec![0], 1);
        w.tasks[2].inputs.push(Input::Output(1));
        assert_eq!(
            w.validate(),
            Err(WorkflowError::InputNotDependency {
                task: "c".into(),
                input: 1
            })
        );
        w.tasks[2] = task("c", vec![7], 1);
        assert_eq!(
            w.validate(),
            Err(WorkflowError::DanglingDependency {
                task: "c".into(),
                dep: 7,
                len: 3
            })
        );
    }

    /// The graph queries that skip full validation still refuse a dependency that names no
    /// other task (one index check serves them and `validate`).
    #[test]
    fn graph_queries_refuse_bad_dependency_indices() {
        let dangling = wf(vec![task("a", vec![], 1), task("b", vec![5], 1)]);
        let expected = WorkflowError::DanglingDependency {
            task: "b".into(),
            dep: 5,
            len: 2,
        };
        assert_eq!(dangling.topological_order(), Err(expected.clone()));
        assert_eq!(dangling.dependents().map(|_| ()), Err(expected));
        let own = wf(vec![task("a", vec![], 1), task("b", vec![1], 1)]);
        let expected = WorkflowError::SelfDependency { task: "b".into() };
        assert_eq!(own.validate().map(|_| ()), Err(expected.clone()));
        assert_eq!(own.topological_order(), Err(expected.clone()));
        assert_eq!(own.dependents().map(|_| ()), Err(expected));
    }
}
