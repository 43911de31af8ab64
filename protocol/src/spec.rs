//! The workflow file format (TOML, or JSON with the same keys) and its expansion into the
//! canonical [`Workflow`].
//!
//! A file lists `[[task]]` entries. An entry is a single task, a *group* (`count = N`: tasks
//! `id[0]..id[N-1]`) or an *aggregation tree* (`aggregate = { over = "g", arity = k }`: a k-ary
//! tree of tasks over the members of `g`, whose root is named `id`). Expansion turns that into
//! concrete tasks with integer dependencies; the full format is documented in
//! `docs/workflow-format.md`.
//!
//! Expansion bounds everything it allocates (tasks, edges, bytes) *before* allocating it, so a
//! hostile file (`count = 4000000000`, a group depending on a huge group) is refused cheaply.

use crate::ids::ContentId;
use crate::resources::Resources;
use crate::validate::{self, Field, WorkflowError};
use crate::workflow::{Input, Ordering, Program, Task, TaskIndex, Workflow};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;

/// Which syntax a workflow file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// TOML (the default).
    Toml,
    /// JSON with the same keys.
    Json,
}

impl Format {
    /// JSON for a `.json` file name, TOML otherwise.
    pub fn from_file_name(name: &str) -> Format {
        if name.to_ascii_lowercase().ends_with(".json") {
            Format::Json
        } else {
            Format::Toml
        }
    }

    fn label(self) -> &'static str {
        match self {
            Format::Toml => "TOML",
            Format::Json => "JSON",
        }
    }
}

/// Defaults applied to a task that leaves a key out.
pub mod defaults {
    /// CPU cores.
    pub const CPU: u32 = 1;
    /// Memory, MiB (1 GiB).
    pub const MEMORY_MB: u64 = 1024;
    /// Per-attempt timeout, seconds.
    pub const TIMEOUT_S: u64 = 600;
    /// Attempts before the workflow fails.
    pub const MAX_ATTEMPTS: u32 = 3;
    /// Workflow deadline, seconds.
    pub const DEADLINE_S: u64 = 3600;
    /// Aggregation tree arity.
    pub const ARITY: u32 = 2;
}

/// A parsed workflow file, before expansion.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// Workflow name.
    pub name: String,
    /// Seconds from submission to final result (0 = no deadline).
    #[serde(default)]
    pub deadline_s: Option<f64>,
    /// Stream ordering.
    #[serde(default)]
    pub ordering: Option<OrderingSpec>,
    /// Defaults for every task's resources, timeout, attempts and price.
    #[serde(default)]
    pub defaults: DefaultsSpec,
    /// Task entries, in file order.
    #[serde(default, rename = "task", alias = "tasks")]
    pub tasks: Vec<TaskSpec>,
}

/// `[ordering]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderingSpec {
    /// Stream name.
    pub stream: String,
    /// Position in the stream.
    pub sequence: u64,
}

/// `[defaults]`: keys every `[[task]]` inherits unless it sets them itself.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSpec {
    /// Resources (merged key by key with a task's own).
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// Per-attempt timeout in seconds.
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Attempts.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Price ceiling in wei.
    #[serde(default)]
    pub max_price_wei: Option<Price>,
}

/// One `[[task]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Id, unique in the file; `[A-Za-z0-9_.-]`, at most 64 characters.
    pub id: String,
    /// `"name@version"` or `{ name, version }`.
    #[serde(default)]
    pub program: Option<ProgramSpec>,
    /// Program arguments; `{index}`, `{count}`, `{level}`, `{name}` are substituted.
    #[serde(default)]
    pub args: Vec<String>,
    /// Blob ids (64 hex characters) passed after the dependency outputs.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Task, group or member ids this depends on (placeholders are substituted).
    #[serde(default)]
    pub deps: Vec<String>,
    /// Resources (merged key by key over `[defaults]`).
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// Per-attempt timeout in seconds.
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Attempts.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Price ceiling in wei.
    #[serde(default)]
    pub max_price_wei: Option<Price>,
    /// Makes this entry a group of `count` tasks.
    #[serde(default)]
    pub count: Option<u64>,
    /// Makes this entry an aggregation tree.
    #[serde(default)]
    pub aggregate: Option<AggregateSpec>,
}

/// `resources = { cpu, memory_gb, gpu, vram_gb, disk_gb }`; GB are GiB, fractions allowed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    /// CPU cores.
    pub cpu: Option<u32>,
    /// Memory in GiB.
    pub memory_gb: Option<f64>,
    /// Whole GPUs.
    pub gpu: Option<u32>,
    /// VRAM per GPU in GiB.
    pub vram_gb: Option<f64>,
    /// Scratch disk in GiB.
    pub disk_gb: Option<f64>,
}

/// `aggregate = { over, arity }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSpec {
    /// The group (or task) whose outputs the tree aggregates.
    pub over: String,
    /// Children per node, at least 2.
    #[serde(default)]
    pub arity: Option<u32>,
}

/// A program as written: `"leaf@1"` or `{ name = "leaf", version = "1" }` (version may be an
/// integer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgramSpec {
    /// `"name@version"`, checked at expansion so the error can name the task.
    Short(String),
    /// Table form.
    Table {
        /// Name.
        name: String,
        /// Version.
        version: String,
    },
}

impl<'de> Deserialize<'de> for ProgramSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ProgramSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a program as \"name@version\" or { name = \"..\", version = \"..\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ProgramSpec, E> {
                Ok(ProgramSpec::Short(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ProgramSpec, A::Error> {
                let (mut name, mut version) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "name" => name = Some(map.next_value::<String>()?),
                        "version" => version = Some(map.next_value::<StrOrInt>()?.0),
                        other => return Err(de::Error::unknown_field(other, &["name", "version"])),
                    }
                }
                Ok(ProgramSpec::Table {
                    name: name.ok_or_else(|| de::Error::missing_field("name"))?,
                    version: version.ok_or_else(|| de::Error::missing_field("version"))?,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A string, or a non-negative integer kept as its decimal string.
struct StrOrInt(String);

impl<'de> Deserialize<'de> for StrOrInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOrInt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a non-negative integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrInt, E> {
                Ok(StrOrInt(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrOrInt, E> {
                Ok(StrOrInt(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrOrInt, E> {
                u64::try_from(v)
                    .map(|v| StrOrInt(v.to_string()))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A price in wei: an integer, or a decimal string for values beyond 2^63 (`"1_000"` style
/// underscores allowed in strings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price(pub u128);

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Price;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a price in wei: a non-negative integer or a decimal string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Price, E> {
                let digits: String = v.chars().filter(|&c| c != '_').collect();
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::invalid_value(de::Unexpected::Str(v), &self));
                }
                digits
                    .parse::<u128>()
                    .map(Price)
                    .map_err(|_| E::custom(format!("price {v:?} does not fit in 128 bits")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Price, E> {
                Ok(Price(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Price, E> {
                u64::try_from(v)
                    .map(|v| Price(v.into()))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse a workflow file's text. Only syntax and key types are checked here; see
/// [`WorkflowSpec::expand`] and [`load`].
pub fn parse(text: &str, format: Format) -> Result<WorkflowSpec, WorkflowError> {
    if text.len() > validate::MAX_FILE_BYTES {
        return Err(WorkflowError::FileTooLarge {
            size: text.len(),
            limit: validate::MAX_FILE_BYTES,
        });
    }
    match format {
        Format::Toml => toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(text, s.start))
                .unwrap_or((0, 0));
            WorkflowError::Syntax {
                format: format.label(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        }),
        Format::Json => serde_json::from_str(text).map_err(|e| {
            let (line, column) = (e.line(), e.column());
            let full = e.to_string();
            let suffix = format!(" at line {line} column {column}");
            let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
            WorkflowError::Syntax {
                format: format.label(),
                line,
                column,
                message,
            }
        }),
    }
}

/// Parse, expand and validate: the one call a tool needs.
pub fn load(text: &str, format: Format) -> Result<(Workflow, validate::Summary), WorkflowError> {
    let workflow = parse(text, format)?.expand()?;
    let summary = workflow.validate()?;
    Ok((workflow, summary))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// What an entry expands into.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Single,
    Group { count: u32 },
    Tree { arity: u32, leaves: u32 },
}

/// Where an entry's tasks sit in the expanded list.
#[derive(Clone, Copy, Debug)]
struct Placed {
    shape: Shape,
    first: TaskIndex,
    len: u32,
}

impl Placed {
    /// The task a bare reference to this entry's id names when it must be one task (the root
    /// of a tree, the task itself), or all members of a group.
    fn members(&self) -> std::ops::Range<TaskIndex> {
        match self.shape {
            Shape::Single => self.first..self.first + 1,
            Shape::Group { .. } => self.first..self.first + self.len,
            // The root is the last node of a tree.
            Shape::Tree { .. } => self.first + self.len - 1..self.first + self.len,
        }
    }
}

/// Level sizes of a tree over `leaves` outputs: a node per full or partial chunk of `arity`,
/// except that a lone leftover is carried up a level instead of getting a one-child node (so a
/// binary tree over n leaves has n - 1 nodes). Always at least one node (the root).
fn tree_levels(leaves: u32, arity: u32) -> Vec<u32> {
    let mut levels = Vec::new();
    let mut width = leaves;
    loop {
        let nodes = width / arity + u32::from(width % arity >= 2);
        let carried = u32::from(width % arity == 1);
        if nodes == 0 {
            // A single output: one root with one child.
            levels.push(1);
            break;
        }
        levels.push(nodes);
        width = nodes + carried;
        if width == 1 {
            break;
        }
    }
    levels
}

/// Variables substituted into `args` and `deps`.
struct Vars<'a> {
    index: u64,
    count: u64,
    level: u64,
    name: &'a str,
}

/// Replace `{index}`, `{count}`, `{level}` and `{name}`; any other brace is kept verbatim.
fn substitute(s: &str, vars: &Vars<'_>) -> String {
    substitute_cow(s, vars).into_owned()
}

/// As [`substitute`], borrowing when there is nothing to replace.
fn substitute_cow<'s>(s: &'s str, vars: &Vars<'_>) -> std::borrow::Cow<'s, str> {
    if !s.contains('{') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut rest = s;
    while let Some(pos) = rest.find('{') {
        use std::fmt::Write;
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        // Writing to a String cannot fail.
        let token_len = if tail.starts_with("{index}") {
            let _ = write!(out, "{}", vars.index);
            7
        } else if tail.starts_with("{count}") {
            let _ = write!(out, "{}", vars.count);
            7
        } else if tail.starts_with("{level}") {
            let _ = write!(out, "{}", vars.level);
            7
        } else if tail.starts_with("{name}") {
            out.push_str(vars.name);
            6
        } else {
            out.push('{');
            1
        };
        rest = &tail[token_len..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Is `id` a valid entry id: 1..=64 characters of `[A-Za-z0-9_.-]`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= validate::MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Seconds (possibly fractional) to milliseconds, or `None` if negative, NaN or huge.
fn seconds_to_ms(s: f64) -> Option<u64> {
    if !(0.0..=1e12).contains(&s) {
        return None;
    }
    Some((s * 1000.0).round() as u64)
}

/// GiB (possibly fractional) to MiB, or `None` if negative, NaN or huge.
fn gib_to_mib(g: f64) -> Option<u64> {
    if !(0.0..=1e12).contains(&g) {
        return None;
    }
    Some((g * 1024.0).round() as u64)
}

impl WorkflowSpec {
    /// Expand groups and trees into concrete tasks, resolve dependencies and fill defaults.
    ///
    /// Errors name the entry (or expanded task) and the key at fault. The result still needs
    /// [`Workflow::validate`] for cycles and bounds ([`load`] does both).
    pub fn expand(&self) -> Result<Workflow, WorkflowError> {
        if self.tasks.is_empty() {
            return Err(WorkflowError::Empty);
        }
        let deadline_ms = match self.deadline_s {
            None => defaults::DEADLINE_S * 1000,
            Some(s) => seconds_to_ms(s).ok_or(WorkflowError::DeadlineOutOfRange {
                value: s.to_string(),
            })?,
        };

        // Pass 1: ids, shapes and sizes, bounded before anything is allocated per task.
        let mut by_id: HashMap<&str, usize> = HashMap::with_capacity(self.tasks.len());
        for (i, t) in self.tasks.iter().enumerate() {
            if !valid_id(&t.id) {
                return Err(WorkflowError::InvalidId {
                    id: truncate(&t.id),
                });
            }
            if by_id.insert(t.id.as_str(), i).is_some() {
                return Err(WorkflowError::DuplicateId { id: t.id.clone() });
            }
        }
        let mut shapes = Vec::with_capacity(self.tasks.len());
        for t in &self.tasks {
            let shape = match (&t.count, &t.aggregate) {
                (Some(_), Some(_)) => {
                    return Err(WorkflowError::Conflict {
                        task: t.id.clone(),
                        detail: "`count` and `aggregate` cannot be combined (a tree's size follows from its group)"
                            .into(),
                    })
                }
                (&Some(count), None) => {
                    if count == 0 || count > validate::MAX_TASKS as u64 {
                        return Err(WorkflowError::InvalidCount { task: t.id.clone(), count });
                    }
                    Shape::Group { count: count as u32 }
                }
                (None, Some(agg)) => {
                    let arity = agg.arity.unwrap_or(defaults::ARITY);
                    if !(2..=validate::MAX_ARITY).contains(&arity) {
                        return Err(WorkflowError::InvalidArity { task: t.id.clone(), arity });
                    }
                    Shape::Tree { arity, leaves: 0 } // leaves resolved below
                }
                (None, None) => Shape::Single,
            };
            shapes.push(shape);
        }
        // Tree sizes follow from their target's size (a group's count; a task or a tree root
        // counts as one output), so no entry's size depends on another tree's: no recursion.
        for (i, t) in self.tasks.iter().enumerate() {
            if let (Shape::Tree { arity, .. }, Some(agg)) = (shapes[i], &t.aggregate) {
                let target = *by_id.get(agg.over.as_str()).ok_or_else(|| {
                    WorkflowError::UnknownAggregateTarget {
                        task: t.id.clone(),
                        over: truncate(&agg.over),
                    }
                })?;
                if target == i {
                    return Err(WorkflowError::SelfDependency { task: t.id.clone() });
                }
                let leaves = match shapes[target] {
                    Shape::Group { count } => count,
                    Shape::Single | Shape::Tree { .. } => 1,
                };
                shapes[i] = Shape::Tree { arity, leaves };
            }
        }
        let mut placed = Vec::with_capacity(self.tasks.len());
        let mut total: u64 = 0;
        for (t, &shape) in self.tasks.iter().zip(&shapes) {
            let len = match shape {
                Shape::Single => 1,
                Shape::Group { count } => count,
                Shape::Tree { arity, leaves } => tree_levels(leaves, arity).iter().sum(),
            };
            let first = total;
            total += u64::from(len);
            if total > validate::MAX_TASKS as u64 {
                return Err(WorkflowError::TooManyTasks {
                    count: total,
                    limit: validate::MAX_TASKS,
                    at: t.id.clone(),
                });
            }
            placed.push(Placed {
                shape,
                first: first as TaskIndex,
                len,
            });
        }

        // Pass 2: build tasks. `budget` tracks encoded bytes and edges so a small file cannot
        // expand into gigabytes (a 1 MB argument copied into 100,000 tasks).
        let mut budget = Budget::default();
        let mut tasks: Vec<Task> = Vec::with_capacity(total as usize);
        for (i, t) in self.tasks.iter().enumerate() {
            let p = placed[i];
            let common = self.common(t)?;
            match p.shape {
                Shape::Single | Shape::Group { .. } => {
                    let count = u64::from(p.len);
                    for member in 0..p.len {
                        let name = match p.shape {
                            Shape::Group { .. } => format!("{}[{member}]", t.id),
                            _ => t.id.clone(),
                        };
                        let vars = Vars {
                            index: member.into(),
                            count,
                            level: 0,
                            name: &name,
                        };
                        let me = p.first + member;
                        let mut deps = Vec::new();
                        for d in &t.deps {
                            let d = substitute_cow(d, &vars);
                            resolve(&d, &name, me, &by_id, &placed, &mut budget, &mut deps)?;
                        }
                        tasks.push(build(&common, t, &vars, deps, &mut budget)?);
                    }
                }
                Shape::Tree { arity, leaves } => {
                    let over = t
                        .aggregate
                        .as_ref()
                        .map(|a| a.over.as_str())
                        .unwrap_or_default();
                    let target = by_id.get(over).map(|&k| placed[k]).ok_or_else(|| {
                        WorkflowError::UnknownAggregateTarget {
                            task: t.id.clone(),
                            over: truncate(over),
                        }
                    })?;
                    let levels = tree_levels(leaves, arity);
                    let mut width: Vec<TaskIndex> = target.members().collect();
                    let mut next_index = p.first;
                    for (level, &nodes) in levels.iter().enumerate() {
                        let mut next_width = Vec::with_capacity(nodes as usize + 1);
                        for (node, children) in width.chunks(arity as usize).enumerate() {
                            if children.len() == 1 && width.len() > 1 {
                                next_width.push(children[0]); // carried up
                                continue;
                            }
                            let is_root = level + 1 == levels.len();
                            let name = if is_root {
                                t.id.clone()
                            } else {
                                format!("{}[{level}][{node}]", t.id)
                            };
                            let vars = Vars {
                                index: node as u64,
                                count: nodes.into(),
                                level: level as u64,
                                name: &name,
                            };
                            let me = next_index;
                            next_index += 1;
                            budget.edges(children.len(), &t.id)?;
                            let mut deps = children.to_vec();
                            for d in &t.deps {
                                let d = substitute_cow(d, &vars);
                                resolve(&d, &name, me, &by_id, &placed, &mut budget, &mut deps)?;
                            }
                            tasks.push(build(&common, t, &vars, deps, &mut budget)?);
                            next_width.push(me);
                        }
                        width = next_width;
                    }
                    debug_assert_eq!(next_index, p.first + p.len);
                }
            }
        }

        let ordering = self.ordering.as_ref().map(|o| Ordering {
            stream: o.stream.clone(),
            sequence: o.sequence,
        });
        Ok(Workflow {
            name: self.name.clone(),
            ordering,
            deadline_ms,
            tasks,
        })
    }
}

/// Resolve one dependency reference of task `name` (index `me`) and append the task indices it
/// names to `out`.
fn resolve(
    reference: &str,
    name: &str,
    me: TaskIndex,
    by_id: &HashMap<&str, usize>,
    placed: &[Placed],
    budget: &mut Budget,
    out: &mut Vec<TaskIndex>,
) -> Result<(), WorkflowError> {
    let unknown = || WorkflowError::UnknownDependency {
        task: name.to_owned(),
        dep: truncate(reference),
    };
    let (base, indices) = match reference.find('[') {
        None => (reference, ""),
        Some(pos) => (&reference[..pos], &reference[pos..]),
    };
    let &target = by_id.get(base).ok_or_else(unknown)?;
    let p = placed[target];
    let range = if indices.is_empty() {
        p.members()
    } else {
        let parsed = parse_indices(indices).ok_or_else(unknown)?;
        let at = match (p.shape, parsed.as_slice()) {
            (Shape::Group { count }, &[i]) if i < u64::from(count) => p.first + i as u32,
            (Shape::Tree { arity, leaves }, &[level, node]) => {
                tree_node_index(p.first, &tree_levels(leaves, arity), level, node)
                    .ok_or_else(unknown)?
            }
            _ => return Err(unknown()),
        };
        at..at + 1
    };
    if range.contains(&me) {
        return Err(WorkflowError::SelfDependency {
            task: name.to_owned(),
        });
    }
    budget.edges(range.len(), name)?;
    out.extend(range);
    Ok(())
}

impl WorkflowSpec {
    /// Resolved keys shared by all tasks of an entry.
    fn common(&self, t: &TaskSpec) -> Result<Common, WorkflowError> {
        let program = match &t.program {
            None => return Err(WorkflowError::MissingProgram { task: t.id.clone() }),
            Some(ProgramSpec::Short(s)) => match s.split_once('@') {
                Some((name, version)) => Program {
                    name: name.to_owned(),
                    version: version.to_owned(),
                },
                None => {
                    return Err(WorkflowError::InvalidProgram {
                        task: t.id.clone(),
                        value: truncate(s),
                        reason: "expected \"name@version\", e.g. \"leaf@1\"".into(),
                    })
                }
            },
            Some(ProgramSpec::Table { name, version }) => Program {
                name: name.clone(),
                version: version.clone(),
            },
        };
        validate::check_program(&t.id, &program)?;
        // Bound arguments before substitution multiplies them.
        if t.args.len() > validate::MAX_ARGS
            || t.args.iter().any(|a| a.len() > validate::MAX_ARG_LEN)
        {
            return Err(WorkflowError::OutOfRange {
                task: t.id.clone(),
                field: Field::Args,
                value: format!(
                    "{} arguments, longest {} bytes",
                    t.args.len(),
                    t.args.iter().map(String::len).max().unwrap_or(0)
                ),
                allowed: format!(
                    "at most {} arguments of at most {} bytes",
                    validate::MAX_ARGS,
                    validate::MAX_ARG_LEN
                ),
            });
        }
        let d = &self.defaults.resources;
        let r = &t.resources;
        let gib = |field: Field,
                   v: Option<f64>,
                   dv: Option<f64>,
                   default: u64|
         -> Result<u64, WorkflowError> {
            match v.or(dv) {
                None => Ok(default),
                Some(g) => gib_to_mib(g).ok_or_else(|| WorkflowError::InvalidValue {
                    task: t.id.clone(),
                    field,
                    value: g.to_string(),
                    expected: "a non-negative number of GiB".into(),
                }),
            }
        };
        let resources = Resources {
            cpu: r.cpu.or(d.cpu).unwrap_or(defaults::CPU),
            memory_mb: gib(Field::Memory, r.memory_gb, d.memory_gb, defaults::MEMORY_MB)?,
            gpu: r.gpu.or(d.gpu).unwrap_or(0),
            vram_mb: gib(Field::Vram, r.vram_gb, d.vram_gb, 0)?,
            disk_mb: gib(Field::Disk, r.disk_gb, d.disk_gb, 0)?,
        };
        let timeout_ms = match t.timeout_s.or(self.defaults.timeout_s) {
            None => defaults::TIMEOUT_S * 1000,
            Some(s) => seconds_to_ms(s).ok_or_else(|| WorkflowError::InvalidValue {
                task: t.id.clone(),
                field: Field::Timeout,
                value: s.to_string(),
                expected: "a non-negative number of seconds".into(),
            })?,
        };
        let mut blobs = Vec::with_capacity(t.inputs.len());
        for s in &t.inputs {
            let id: ContentId = s.parse().map_err(|_| WorkflowError::InvalidBlob {
                task: t.id.clone(),
                value: truncate(s),
            })?;
            blobs.push(Input::Blob(id));
        }
        Ok(Common {
            program,
            resources,
            timeout_ms,
            max_attempts: t
                .max_attempts
                .or(self.defaults.max_attempts)
                .unwrap_or(defaults::MAX_ATTEMPTS),
            max_price_wei: t
                .max_price_wei
                .or(self.defaults.max_price_wei)
                .map(|p| p.0)
                .unwrap_or(0),
            blobs,
        })
    }
}

/// One concrete task: `deps` in written order become the `Input::Output`s (deduplicated),
/// followed by the blobs; `Task::deps` is the sorted set.
fn build(
    c: &Common,
    t: &TaskSpec,
    vars: &Vars<'_>,
    written: Vec<TaskIndex>,
    budget: &mut Budget,
) -> Result<Task, WorkflowError> {
    let mut inputs = Vec::with_capacity(written.len() + c.blobs.len());
    let mut deps = written;
    if deps.len() <= 16 {
        for (k, &d) in deps.iter().enumerate() {
            if !deps[..k].contains(&d) {
                inputs.push(Input::Output(d));
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(deps.len());
        inputs.extend(
            deps.iter()
                .filter(|&&d| seen.insert(d))
                .map(|&d| Input::Output(d)),
        );
    }
    inputs.extend(c.blobs.iter().cloned());
    deps.sort_unstable();
    deps.dedup();
    let args: Vec<String> = t.args.iter().map(|a| substitute(a, vars)).collect();
    let name = vars.name.to_owned();
    budget.bytes(
        name.len() + args.iter().map(|a| a.len() + 1).sum::<usize>() + 33 * c.blobs.len() + 48,
        &name,
    )?;
    Ok(Task {
        name,
        program: c.program.clone(),
        args,
        inputs,
        deps,
        resources: c.resources,
        timeout_ms: c.timeout_ms,
        max_attempts: c.max_attempts,
        max_price_wei: c.max_price_wei,
    })
}

struct Common {
    program: Program,
    resources: Resources,
    timeout_ms: u64,
    max_attempts: u32,
    max_price_wei: u128,
    blobs: Vec<Input>,
}

/// Running totals checked during expansion.
#[derive(Default)]
struct Budget {
    edges: usize,
    bytes: usize,
}

impl Budget {
    fn edges(&mut self, n: usize, at: &str) -> Result<(), WorkflowError> {
        self.edges = self.edges.saturating_add(n);
        if self.edges > validate::MAX_EDGES {
            return Err(WorkflowError::TooManyEdges {
                limit: validate::MAX_EDGES,
                at: at.to_owned(),
            });
        }
        // Each edge costs at least a dependency and an input in the encoding.
        self.bytes(2 * n, at)
    }

    fn bytes(&mut self, n: usize, at: &str) -> Result<(), WorkflowError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > crate::encoding::MAX_MESSAGE_BYTES {
            return Err(WorkflowError::EncodedTooLarge {
                limit: crate::encoding::MAX_MESSAGE_BYTES,
                at: Some(at.to_owned()),
            });
        }
        Ok(())
    }
}

/// `[3]` -> [3], `[1][0]` -> [1, 0].
fn parse_indices(s: &str) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let close = inner.find(']')?;
        let digits = &inner[..close];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || out.len() >= 2 {
            return None;
        }
        out.push(digits.parse().ok()?);
        rest = &inner[close + 1..];
    }
    Some(out)
}

/// Index of tree node `[level][node]`, if that node exists as a named (non-root) node.
fn tree_node_index(first: TaskIndex, levels: &[u32], level: u64, node: u64) -> Option<TaskIndex> {
    let level = usize::try_from(level).ok()?;
    if level + 1 >= levels.len() {
        return None; // the root is named by the bare id
    }
    if node >= u64::from(levels[level]) {
        return None;
    }
    let before: u32 = levels[..level].iter().sum();
    Some(first + before + node as u32)
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(77).collect();
        t.push_str("...");
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_tree_over_512_has_511_nodes() {
        let levels = tree_levels(512, 2);
        assert_eq!(levels, vec![256, 128, 64, 32, 16, 8, 4, 2, 1]);
        assert_eq!(levels.iter().sum::<u32>(), 511);
    }

    #[test]
    fn binary_tree_over_n_has_n_minus_1_nodes() {
        for n in 2..300 {
            assert_eq!(tree_levels(n, 2).iter().sum::<u32>(), n - 1, "n = {n}");
        }
        assert_eq!(tree_levels(1, 2), vec![1]);
        assert_eq!(tree_levels(5, 4), vec![1, 1]);
        assert_eq!(tree_levels(9, 3), vec![3, 1]);
    }

    #[test]
    fn substitution_replaces_known_placeholders_only() {
        let v = Vars {
            index: 3,
            count: 8,
            level: 1,
            name: "p[3]",
        };
        assert_eq!(
            substitute("--index {index}/{count} {level} {name} {other} {", &v),
            "--index 3/8 1 p[3] {other} {"
        );
        assert_eq!(substitute("plain", &v), "plain");
    }

    #[test]
    fn line_column_is_one_based() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 0), (1, 1));
        assert_eq!(line_column("é\nx", 1), (1, 1));
    }

    #[test]
    fn index_references_parse() {
        assert_eq!(parse_indices("[3]"), Some(vec![3]));
        assert_eq!(parse_indices("[1][20]"), Some(vec![1, 20]));
        assert_eq!(parse_indices("[]"), None);
        assert_eq!(parse_indices("[1"), None);
        assert_eq!(parse_indices("[1][2][3]"), None);
        assert_eq!(parse_indices("[-1]"), None);
    }
}
