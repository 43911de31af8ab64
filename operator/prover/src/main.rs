//! `proofmesh-prover`: the proving stages as subcommands, following the program contract: inputs
//! are the files of `$PROOFMESH_INPUT_DIR` in name order (or `--input`, repeatable), the single
//! output goes to `$PROOFMESH_OUTPUT` (or `--out`). Any failure exits non-zero with the reason
//! on stderr.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use proofmesh_prover::{circuits, keys, pipeline, solidity, stages, CircuitKind};

#[derive(Parser)]
#[command(
    name = "proofmesh-prover",
    version,
    about = "Groth16/BN254 proving stages for proofmesh workflows"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Io {
    /// Input file, repeatable, in order (default: the files of $PROOFMESH_INPUT_DIR by name).
    #[arg(long = "input")]
    inputs: Vec<PathBuf>,
    /// Output file (default: $PROOFMESH_OUTPUT).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a batch's data (deterministic from the block number). Takes no inputs.
    Witness {
        #[arg(long)]
        block: u64,
        #[arg(long)]
        leaves: u32,
        #[command(flatten)]
        io: Io,
    },
    /// Prove knowledge of leaf INDEX's chunk of the witness (one input: the witness).
    Leaf {
        #[arg(long)]
        index: u64,
        #[command(flatten)]
        io: Io,
    },
    /// Verify 1 to 4 child proofs (leaf or aggregate) and prove their combined digest.
    Aggregate {
        #[command(flatten)]
        io: Io,
    },
    /// Verify the root proof and prove the batch commitment checked on-chain (one input).
    Final {
        /// Require the root proof to cover exactly this many leaves.
        #[arg(long)]
        leaves: Option<u64>,
        #[command(flatten)]
        io: Io,
    },
    /// Do nothing but hash the inputs into the output (orchestration benchmarks).
    Noop {
        #[command(flatten)]
        io: Io,
    },
    /// Sleep, then behave like noop (orchestration benchmarks).
    Sleep {
        #[arg(long)]
        ms: u64,
        #[command(flatten)]
        io: Io,
    },
    /// Run the whole pipeline locally, writing every artifact and DIR/final.proof.
    Pipeline {
        #[arg(long)]
        leaves: u32,
        #[arg(long, default_value_t = 1)]
        block: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a proof file of any circuit; exit 0 only if it is valid.
    Verify { file: PathBuf },
    /// Print a proof's on-chain form as JSON ({"proof":"0x..","publicInputs":[..]}).
    Calldata {
        file: PathBuf,
        /// Also write the raw abi.encode(uint256[8]) proof bytes here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write a Solidity fixture library (FinalProofFixture) here.
        #[arg(long)]
        sol: Option<PathBuf>,
    },
    /// Write the Solidity verifier and IProofVerifier adapter for the final circuit.
    ExportVerifier {
        #[arg(long, default_value = "contracts/src/generated")]
        out: PathBuf,
    },
    /// Run the deterministic setups and write the verifying keys embedded at build time.
    ExportKeys {
        #[arg(long, default_value = "operator/prover/keys")]
        out: PathBuf,
    },
    /// Print each circuit's size and setup time.
    Circuits,
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROOFMESH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("proofmesh-prover: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Witness { block, leaves, io } => {
            let _ = read_inputs(&io, 0..=0)?;
            write_output(&io, &stages::witness(block, leaves)?)
        }
        Command::Leaf { index, io } => {
            let inputs = read_inputs(&io, 1..=1)?;
            write_output(&io, &stages::leaf(&inputs[0], index)?)
        }
        Command::Aggregate { io } => {
            let inputs = read_inputs(&io, 1..=circuits::MAX_ARITY)?;
            write_output(&io, &stages::aggregate(&inputs)?)
        }
        Command::Final { leaves, io } => {
            let inputs = read_inputs(&io, 1..=1)?;
            write_output(&io, &stages::finalize(&inputs[0], leaves)?)
        }
        Command::Noop { io } => noop(&io, Duration::ZERO),
        Command::Sleep { ms, io } => noop(&io, Duration::from_millis(ms)),
        Command::Pipeline { leaves, block, out } => run_pipeline(block, leaves, &out),
        Command::Verify { file } => {
            let bytes = read(&file)?;
            let p = stages::verify_proof_bytes(&bytes)
                .with_context(|| format!("{} is not a valid proof", file.display()))?;
            println!(
                "valid {} proof: block={} first={} count={} digest=0x{}",
                p.circuit,
                p.block,
                p.first,
                p.count,
                hex::encode(p.digest)
            );
            Ok(())
        }
        Command::Calldata { file, out, sol } => {
            let calldata = solidity::Calldata::from_proof_file(&read(&file)?)
                .with_context(|| format!("reading {}", file.display()))?;
            if let Some(path) = out {
                std::fs::write(&path, &calldata.proof)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(path) = sol {
                std::fs::write(&path, calldata.to_solidity_fixture("FinalProofFixture"))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            println!("{}", calldata.to_json());
            Ok(())
        }
        Command::ExportVerifier { out } => {
            solidity::export(&out)?;
            println!(
                "wrote {} and {} in {}",
                solidity::VERIFIER_FILE,
                solidity::ADAPTER_FILE,
                out.display()
            );
            Ok(())
        }
        Command::ExportKeys { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for kind in CircuitKind::ALL {
                let pk = keys::setup(kind)?;
                let path = out.join(format!("{}.vk", kind.name()));
                std::fs::write(&path, keys::vk_to_bytes(&pk.vk))
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Circuits => {
            for kind in CircuitKind::ALL {
                let t = Instant::now();
                keys::setup(kind)?;
                println!(
                    "circuit={kind} constraints={} setup_ms={}",
                    circuits::num_constraints(kind)?,
                    t.elapsed().as_millis()
                );
            }
            Ok(())
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The stage's inputs, checked against the number it takes.
fn read_inputs(io: &Io, takes: std::ops::RangeInclusive<usize>) -> anyhow::Result<Vec<Vec<u8>>> {
    let paths = if !io.inputs.is_empty() {
        io.inputs.clone()
    } else if let Some(dir) = std::env::var_os("PROOFMESH_INPUT_DIR") {
        let dir = PathBuf::from(dir);
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing $PROOFMESH_INPUT_DIR {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing $PROOFMESH_INPUT_DIR {}", dir.display()))?;
        paths.sort();
        if let Some(n) = std::env::var("PROOFMESH_INPUTS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        {
            if n != paths.len() {
                bail!(
                    "$PROOFMESH_INPUTS says {n} inputs but {} holds {}",
                    dir.display(),
                    paths.len()
                );
            }
        }
        paths
    } else {
        Vec::new()
    };
    if !takes.contains(&paths.len()) {
        bail!(
            "this stage takes {} to {} inputs (--input or $PROOFMESH_INPUT_DIR), got {}",
            takes.start(),
            takes.end(),
            paths.len()
        );
    }
    paths.iter().map(|p| read(p)).collect()
}

fn write_output(io: &Io, bytes: &[u8]) -> anyhow::Result<()> {
    let path = match (&io.out, std::env::var_os("PROOFMESH_OUTPUT")) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => bail!("no output path: pass --out FILE or set $PROOFMESH_OUTPUT"),
    };
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Output: "proofmesh-noop" then the blake3 of each input, so the result depends on the inputs.
fn noop(io: &Io, sleep: Duration) -> anyhow::Result<()> {
    let inputs = read_inputs(io, 0..=usize::MAX)?;
    if !sleep.is_zero() {
        std::thread::sleep(sleep);
    }
    let mut out = b"proofmesh-noop\n".to_vec();
    for input in &inputs {
        out.extend_from_slice(blake3::hash(input).to_hex().as_bytes());
        out.push(b'\n');
    }
    write_output(io, &out)
}

fn run_pipeline(block: u64, leaves: u32, out: &Path) -> anyhow::Result<()> {
    let r = pipeline::run(block, leaves, out)?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = |v: &[Duration]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64
        }
    };
    println!(
        "leaves={} witness_ms={:.1} leaf_mean_ms={:.1} leaf_total_ms={:.1} aggregations={} \
         aggregate_mean_ms={:.1} final_ms={:.1} verify_ms={:.2} final_proof={}",
        r.leaves,
        ms(r.witness),
        mean(&r.leaf),
        r.leaf.iter().map(|d| ms(*d)).sum::<f64>(),
        r.aggregate.len(),
        mean(&r.aggregate),
        ms(r.finalize),
        ms(r.verify),
        r.final_proof.display()
    );
    Ok(())
}
