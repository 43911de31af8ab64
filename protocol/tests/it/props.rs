//! Property tests: round trips, id stability, tamper rejection, and "never panics".

use crate::envelope::DOMAIN;
use proofmesh_protocol::encoding;
use proofmesh_protocol::messages::{
    Acceptance, Assignment, FailureCause, Heartbeat, Submission, TaskFailure,
};
use proofmesh_protocol::spec::{self, Format};
use proofmesh_protocol::workflow::Input;
use proofmesh_protocol::{
    ContentId, Envelope, Keypair, Message, Ordering, Program, PublicKey, Resources, Task, Workflow,
};
use proptest::prelude::*;

fn arb_id() -> impl Strategy<Value = ContentId> {
    any::<[u8; 32]>().prop_map(ContentId)
}

fn arb_key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

fn arb_resources() -> impl Strategy<Value = Resources> {
    (
        0u32..64,
        0u64..1 << 20,
        0u32..8,
        0u64..1 << 17,
        0u64..1 << 20,
    )
        .prop_map(|(cpu, memory_mb, gpu, vram_mb, disk_mb)| Resources {
            cpu,
            memory_mb,
            gpu,
            vram_mb,
            disk_mb,
        })
}

/// (task fields, dependency selectors): selectors are reduced modulo the task's index.
fn arb_task() -> impl Strategy<Value = (Task, Vec<u32>)> {
    (
        "[a-z]{1,8}",
        "[a-z]{1,6}",
        prop::collection::vec(".{0,12}", 0..3),
        prop::collection::vec(arb_id(), 0..2),
        arb_resources(),
        1u64..1 << 40,
        1u32..10,
        any::<u128>(),
        prop::collection::vec(any::<u32>(), 0..4),
    )
        .prop_map(
            |(name, prog, args, blobs, resources, timeout_ms, max_attempts, max_price_wei, sel)| {
                let task = Task {
                    name,
                    program: Program {
                        name: prog,
                        version: "1".into(),
                    },
                    args,
                    inputs: blobs.into_iter().map(Input::Blob).collect(),
                    deps: vec![],
                    resources,
                    timeout_ms,
                    max_attempts,
                    max_price_wei,
                };
                (task, sel)
            },
        )
}

fn arb_workflow() -> impl Strategy<Value = Workflow> {
    (
        "[a-z-]{1,12}",
        prop::option::of(
            ("[a-z]{1,8}", any::<u64>())
                .prop_map(|(stream, sequence)| Ordering { stream, sequence }),
        ),
        any::<u64>(),
        prop::collection::vec(arb_task(), 1..12),
    )
        .prop_map(|(name, ordering, deadline_ms, tasks)| {
            let tasks = tasks
                .into_iter()
                .enumerate()
                .map(|(i, (mut t, sel))| {
                    t.name = format!("{}{i}", t.name); // unique
                    if i > 0 {
                        let mut deps: Vec<u32> = sel.iter().map(|s| s % i as u32).collect();
                        deps.sort_unstable();
                        deps.dedup();
                        let mut inputs: Vec<Input> =
                            deps.iter().map(|&d| Input::Output(d)).collect();
                        inputs.append(&mut t.inputs);
                        t.inputs = inputs;
                        t.deps = deps;
                    }
                    t
                })
                .collect();
            Workflow {
                name,
                ordering,
                deadline_ms,
                tasks,
            }
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            arb_key(),
            any::<u64>(),
            prop::collection::vec((arb_id(), any::<u32>(), any::<u32>()), 0..4)
        )
            .prop_map(|(operator, at_ms, running)| Message::Heartbeat(Heartbeat {
                operator,
                at_ms,
                running
            })),
        (
            arb_workflow(),
            arb_key(),
            prop::option::of(any::<[u8; 20]>()),
            any::<u64>()
        )
            .prop_map(
                |(workflow, owner, owner_eth, submitted_at_ms)| Message::Submission(Submission {
                    workflow,
                    owner,
                    owner_eth,
                    escrow: None,
                    submitted_at_ms
                })
            ),
        (
            arb_id(),
            any::<u32>(),
            any::<u32>(),
            arb_key(),
            prop::collection::vec(any::<u32>(), 0..4),
            arb_resources(),
            any::<u64>(),
            any::<u128>()
        )
            .prop_map(
                |(workflow, task, attempt, operator, gpus, resources, t, price_wei)| {
                    Message::Assignment(Assignment {
                        workflow,
                        task,
                        attempt,
                        operator,
                        gpus,
                        resources,
                        accept_by_ms: t / 2,
                        deadline_ms: t,
                        price_wei,
                        matchmaker: operator,
                        queued: t % 2 == 0,
                    })
                }
            ),
        (arb_id(), arb_id(), any::<u32>(), arb_key(), any::<u64>()).prop_map(
            |(assignment, workflow, task, operator, at)| {
                Message::Acceptance(Acceptance {
                    assignment,
                    workflow,
                    task,
                    attempt: 1,
                    operator,
                    accepted_at_ms: at,
                    eth: None,
                })
            }
        ),
        (
            arb_id(),
            any::<u32>(),
            arb_key(),
            prop::option::of(any::<i32>()),
            ".{0,40}"
        )
            .prop_map(|(workflow, task, operator, exit_code, stderr_tail)| {
                Message::Failure(TaskFailure {
                    workflow,
                    task,
                    attempt: 2,
                    operator,
                    cause: FailureCause::Crashed {
                        exit_code,
                        stderr_tail,
                    },
                })
            }),
    ]
}

/// A change that always alters the workflow's value.
fn mutate(w: &mut Workflow, which: usize, k: usize) {
    let i = k % w.tasks.len();
    match which % 8 {
        0 => w.name.push('x'),
        1 => w.deadline_ms = w.deadline_ms.wrapping_add(1),
        2 => {
            w.ordering = if w.ordering.is_some() {
                None
            } else {
                Some(Ordering {
                    stream: "s".into(),
                    sequence: 0,
                })
            }
        }
        3 => w.tasks[i].timeout_ms ^= 1,
        4 => w.tasks[i].args.push(String::new()),
        5 => w.tasks[i].resources.cpu ^= 1,
        6 => w.tasks[i].max_price_wei ^= 1,
        _ => w.tasks[i].program.version.push('1'),
    }
}

const TOML_FRAGMENTS: &[&str] = &[
    "name = \"x\"\n",
    "[[task]]\n",
    "id = \"a\"\n",
    "id = \"b\"\n",
    "id = \"agg\"\n",
    "program = \"noop@1\"\n",
    "program = { name = \"p\", version = 2 }\n",
    "count = 3\n",
    "count = 0\n",
    "count = 99999999999\n",
    "deps = [\"a\"]\n",
    "deps = [\"b[1]\", \"agg[0][0]\"]\n",
    "deps = [\"agg\"]\n",
    "aggregate = { over = \"a\", arity = 2 }\n",
    "aggregate = { over = \"b\" }\n",
    "resources = { cpu = 0 }\n",
    "resources = { cpu = 2, memory_gb = 1e300, gpu = 1, vram_gb = 0.5 }\n",
    "timeout_s = -1\n",
    "timeout_s = nan\n",
    "[ordering]\n",
    "stream = \"s\"\n",
    "sequence = 1\n",
    "[defaults]\n",
    "max_price_wei = \"12\"\n",
    "args = [\"{index}\", \"{name}{\"]\n",
    "inputs = [\"00\"]\n",
    "deadline_s = 1e20\n",
    "= [\n",
    "\"\n",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn messages_round_trip(msg in arb_message()) {
        let bytes = encoding::encode(&msg);
        let back: Message = encoding::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(encoding::encoded_len(&msg), bytes.len());
    }

    #[test]
    fn workflows_round_trip_and_ids_are_stable(w in arb_workflow()) {
        let bytes = encoding::encode(&w);
        let back: Workflow = encoding::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &w);
        prop_assert_eq!(back.id(), w.id());
        prop_assert_eq!(w.clone().id(), w.id());
        prop_assert_eq!(encoding::encode(&back), bytes.clone());
        // Validation skips exact encoding when this bound is under the limit: it must be a bound.
        prop_assert!(proofmesh_protocol::validate::encoded_upper_bound(&w) >= bytes.len());
    }

    #[test]
    fn any_change_changes_the_id(w in arb_workflow(), which in 0usize..8, k in any::<usize>()) {
        let mut changed = w.clone();
        mutate(&mut changed, which, k);
        prop_assert_ne!(&changed, &w);
        prop_assert_ne!(changed.id(), w.id());
    }

    #[test]
    fn any_single_bit_flip_of_a_signed_envelope_is_rejected(
        secret in any::<[u8; 32]>(),
        msg in arb_message(),
        nonce in any::<u64>(),
        bit in any::<prop::sample::Index>(),
    ) {
        let kp = Keypair::from_secret_bytes(secret);
        let env = Envelope::seal(&kp, DOMAIN, &msg, nonce, u64::MAX);
        let mut bytes = env.to_bytes();
        prop_assert!(Envelope::from_bytes(&bytes).unwrap().open(DOMAIN, 0).is_ok());
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let rejected = match Envelope::from_bytes(&bytes) {
            Err(_) => true,
            Ok(tampered) => tampered.open(DOMAIN, 0).is_err(),
        };
        prop_assert!(rejected, "bit {} flipped and the envelope still opened", bit);
    }

    #[test]
    fn parsing_arbitrary_strings_never_panics(text in ".{0,300}", json in any::<bool>()) {
        let format = if json { Format::Json } else { Format::Toml };
        if let Ok((w, s)) = spec::load(&text, format) {
            prop_assert_eq!(s.tasks, w.tasks.len());
        }
    }

    #[test]
    fn parsing_toml_like_input_never_panics(parts in prop::collection::vec(prop::sample::select(TOML_FRAGMENTS), 0..40)) {
        let text: String = parts.concat();
        match spec::load(&text, Format::Toml) {
            Ok((w, s)) => {
                prop_assert_eq!(s.tasks, w.tasks.len());
                prop_assert!(w.validate().is_ok());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(env) = Envelope::from_bytes(&bytes) {
            // Anything that decodes re-encodes to the same bytes (canonical), and still has to
            // pass the signature check.
            prop_assert_eq!(env.to_bytes(), bytes.clone());
            let _ = env.open(DOMAIN, 0);
        }
        if let Ok(w) = encoding::decode::<Workflow>(&bytes) {
            let _ = w.validate();
            let _ = w.critical_path_remaining();
        }
    }
}
