//! `proofmesh workflow ...`: check a workflow file and compute its id, offline.

use anyhow::Context;
use clap::Subcommand;
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::validate::Summary;
use proofmesh_protocol::Workflow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Workflow file commands.
#[derive(Subcommand, Debug)]
pub enum WorkflowCommand {
    /// Check a workflow file and print a summary.
    Validate {
        /// Workflow file (TOML, or JSON by extension).
        file: PathBuf,
    },
    /// Print a workflow file's content id.
    Id {
        /// Workflow file.
        file: PathBuf,
    },
}

pub fn run(cmd: WorkflowCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkflowCommand::Validate { file } => {
            let (workflow, summary) = load(&file)?;
            print!("{}", render(&file, &workflow, &summary));
        }
        WorkflowCommand::Id { file } => {
            let (workflow, _) = load(&file)?;
            println!("{}", workflow.id());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Read, parse, expand and validate a workflow file; errors name the file.
pub fn load(file: &Path) -> anyhow::Result<(Workflow, Summary)> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    // Refuse huge files before reading them into memory.
    if meta.len() > proofmesh_protocol::validate::MAX_FILE_BYTES as u64 {
        anyhow::bail!(
            "{}: file is {} bytes, larger than the {}-byte limit",
            file.display(),
            meta.len(),
            proofmesh_protocol::validate::MAX_FILE_BYTES
        );
    }
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            file.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let format = Format::from_file_name(&file.to_string_lossy());
    spec::load(&text, format).with_context(|| file.display().to_string())
}

fn gib(mib: u64) -> String {
    let g = mib as f64 / 1024.0;
    if g.fract() == 0.0 {
        format!("{g:.0} GiB")
    } else {
        format!("{g:.2} GiB")
    }
}

/// The human-readable summary `validate` prints.
fn render(file: &Path, w: &Workflow, s: &Summary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{}: valid workflow {:?}", file.display(), w.name);
    let _ = writeln!(out, "  id:             {}", w.id());
    let _ = writeln!(
        out,
        "  tasks:          {} ({} without dependencies, {} final)",
        s.tasks, s.roots, s.sinks
    );
    let _ = writeln!(out, "  edges:          {}", s.edges);
    let _ = writeln!(
        out,
        "  critical path:  {} tasks, {:.1} s of timeouts",
        s.critical_path_tasks,
        s.critical_path_timeout_ms as f64 / 1000.0
    );
    let programs: Vec<String> = s
        .programs
        .iter()
        .map(|(p, n)| format!("{p} x{n}"))
        .collect();
    let _ = writeln!(out, "  programs:       {}", programs.join(", "));
    let t = &s.total;
    let _ = writeln!(
        out,
        "  resources:      {} cores, {} memory, {} GPUs, {} VRAM, {} disk (sum over tasks)",
        t.cpu,
        gib(t.memory_mb),
        t.gpu,
        gib(t.vram_mb),
        gib(t.disk_mb)
    );
    let l = &s.largest;
    let _ = writeln!(
        out,
        "  largest task:   {} cores, {} memory, {} GPUs x {} VRAM, {} disk",
        l.cpu,
        gib(l.memory_mb),
        l.gpu,
        gib(l.vram_mb),
        gib(l.disk_mb)
    );
    let _ = writeln!(
        out,
        "  price ceiling:  {} wei (sum of max_price_wei)",
        s.max_price_wei_total
    );
    let deadline = if w.deadline_ms == 0 {
        "none".to_owned()
    } else {
        format!("{:.0} s", w.deadline_ms as f64 / 1000.0)
    };
    let _ = writeln!(out, "  deadline:       {deadline}");
    let ordering = match &w.ordering {
        Some(o) => format!("stream {:?}, sequence {}", o.stream, o.sequence),
        None => "none".to_owned(),
    };
    let _ = writeln!(out, "  ordering:       {ordering}");
    let encoded = proofmesh_protocol::encoding::encoded_len(w);
    let _ = writeln!(out, "  encoded size:   {encoded} bytes");
    out
}
