//! The core task: the one place that owns the node's state. It `select!`s over network events,
//! commands from the handle and RPC, completions of background work (prechecks, operator
//! attempts, direct replies), the matchmaker's next deadline, the heartbeat / advert / announce
//! timers and shutdown. Everything slow (network round trips, proof verification, running
//! programs) happens in tracked background tasks that report back through `Internal`.
//!
//! Every message this node produces goes through [`Core::emit`]: it is signed, applied locally
//! exactly like a received one (gossip does not loop back), and queued for publication in order.
//!
//! Group commit: each loop iteration handles one input and then drains every input already
//! waiting (up to [`BATCH`]), writing through a deferred store handle (no fsync). Then
//! [`Core::commit`] syncs the store once and only then releases what the batch produced:
//! publications, direct sends and replies, RPC acknowledgements and progress. Nothing is
//! announced before it is durable, and a busy node pays one fsync per batch, not per message.
//!
//! One exception: a matchmaker's assignments go straight to their operators as the batch's
//! fsync starts, not after it, so an operator runs the task while the matchmaker's disk
//! catches up (~1 ms per hand-over on the critical path of a pipeline, bench/e2e.md). An
//! operator's word binds nobody else, and the assignment is gossiped, acknowledged and shown
//! as progress only once durable as before. If this node dies before its commit, the
//! assignment is forgotten with the batch: the restarted engine replays its log and decides
//! the task again. Given to another operator, the first one's acceptance and result name an
//! attempt that is not current and are dropped, as when a standby takes over. Given to the
//! same one, the new assignment differs (later deadlines) and the operator's repeated answer,
//! which names the first, is not taken; its result still counts if it comes before the
//! acceptance timeout, after which the attempt is cancelled and reassigned. Either way a crash
//! costs time, never work accepted: a submission is acknowledged only once durable, and a
//! result only once its verdict is.

use super::catch_up;
use super::matchmaking::MatchmakerRole;
use super::metrics::RuntimeMetrics;
use super::operating::{self, OperatorRole};
use super::settlement::Settlement;
use super::view::View;
use super::{Command, NodeError, Notifier};
use crate::bounded_set::BoundedSet;
use crate::network::{self, public_key_of, Client, Clock, NetworkEvent};
use crate::store::Store;
use proofmesh_operator::Outcome;
use proofmesh_protocol::messages::{
    Answer, Assignment, Dispatch, FailureCause, Heartbeat, MatchmakerAnnounce, OperatorAdvert,
    SignedResult, Submission, SyncReply, SyncRequest, SyncUpdate, TaskFailure, Verdict,
    WorkflowCancel, WorkflowFailure, MAX_BATCH,
};
use proofmesh_protocol::{Domain, Envelope, Keypair, Message, PublicKey, TaskIndex, WorkflowId};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The reason an operator that stops gives for the attempts it hands back.
pub const SHUTTING_DOWN: &str = "operator shutting down";

/// How long a stopping operator waits for its matchmakers to take in the attempts it hands
/// back.
const HAND_BACK_MAX: Duration = Duration::from_secs(2);

/// Inputs handled per iteration before the store syncs and the batch's output is released.
const BATCH: usize = 256;

/// How often the core looks for quiet workflows to catch up on (each has its own backoff).
const CATCH_UP_TICK: Duration = Duration::from_millis(250);

/// Peers asked per catch-up round: a matchmaker first (it decided the verdicts), and one more
/// in case that one is behind too.
const CATCH_UP_PEERS: usize = 2;

/// Longest a result's gossip copy waits for the direct copy to be answered (see
/// `Core::emit_direct_first`).
const GOSSIP_AFTER_DIRECT_MAX: Duration = Duration::from_millis(250);

/// When a node introduces itself again (an operator's advert, a matchmaker's announce) after
/// its first introductions (each delay after the one before), before settling into its period.
/// One can be lost in the connection churn of a network's start (sent on a connection that is
/// replaced right after), and until the next arrives, matchmakers schedule as if an operator
/// did not exist (seen in 1 of 7 devnet starts: 2 of 4 operators still unknown 3 s later, their
/// next advert due at 10 s) and two matchmakers that do not hear each other both take a new
/// workflow as theirs. A delay not shorter than the period is skipped.
const INTRODUCTION_RETRIES: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
];

/// How often state written lazily (task-state views) is made durable when nothing else syncs.
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// Something to do once the store has synced.
type Deferred = Box<dyn FnOnce() + Send>;

/// Accepted results an operator's new tasks take as inputs, with the small outputs that ride
/// beside them.
type Inputs = (Vec<SignedResult>, Vec<Vec<u8>>);

/// What travels with one operator's assignments, beyond what was pushed ahead of them (see
/// [`Core::push_inputs`]).
#[derive(Default)]
struct Carried {
    /// Inputs, to ride in the first of the assignments' envelopes.
    inputs: Option<Inputs>,
    /// The tasks' definitions ride in every one of them (the operator lacks a workflow).
    define: bool,
    /// Workflows whose submissions follow the assignments: sealed (or taken from the cache)
    /// only once the assignments are on their way.
    following: Vec<WorkflowId>,
}

/// Completions of background work, reported to the core.
#[derive(Debug)]
pub(crate) enum Internal {
    /// An envelope that reached us outside gossip (a direct reply).
    Received {
        envelope: Envelope,
        message: Message,
    },
    /// A result's precheck finished.
    Checked {
        result: proofmesh_protocol::messages::SignedResult,
        /// The verdict, and the output fetched and not stored yet.
        checked: super::verify::Checked,
        /// A relay's copy (`MatchmakerRole::relayed`), not an operator's own.
        relayed: bool,
    },
    /// An operator attempt ended.
    AttemptDone {
        key: operating::AttemptKey,
        outcome: Outcome,
    },
    /// A direct send to this peer failed: what we believe it holds may not have arrived.
    DirectFailed { peer: network::PeerId },
}

/// What was pushed to one operator and is not pushed again (see `push_inputs`): dependency
/// results by task, and the workflow's submission as [`WHOLE_WORKFLOW`].
type Pushed = BoundedSet<(WorkflowId, TaskIndex), 4096>;

/// In [`Pushed`], the workflow's submission itself (no task has this index: a workflow holds
/// fewer tasks than that).
const WHOLE_WORKFLOW: TaskIndex = TaskIndex::MAX;

/// In [`Pushed`], a workflow of independent tasks the operator runs from their definitions
/// alone: its submission is never sent (no task of it takes inputs).
const DEFINITIONS_ONLY: TaskIndex = TaskIndex::MAX - 1;

/// Where a message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Produced by this node.
    Local,
    /// Received from the network.
    Remote,
}

/// Remembers the last envelopes handled, by `(sender, nonce)`, so one that reaches us twice
/// (direct reply and gossip) is handled once.
struct Seen(BoundedSet<(PublicKey, u64), 200_000>);

impl Seen {
    /// True when new.
    fn insert(&mut self, envelope: &Envelope) -> bool {
        self.0.insert((envelope.sender, envelope.nonce))
    }
}

/// Shared, read-mostly parts of the node that background tasks also use.
#[derive(Clone)]
pub(crate) struct Shared {
    pub keypair: Keypair,
    pub me: PublicKey,
    pub domain: Domain,
    pub clock: Clock,
    pub ttl_ms: u64,
    pub store: Store,
    pub client: Client,
    pub metrics: RuntimeMetrics,
    pub tracker: TaskTracker,
    pub cancel: CancellationToken,
    /// Cancelled when the node stops as a crash would ([`super::NodeHandle::crash`]).
    pub crash: CancellationToken,
    pub internal: mpsc::UnboundedSender<Internal>,
    /// Envelopes to gossip, in order; with the peer that already has it (it asked for it as
    /// a direct answer), which then gets no second copy ([`Client::publish_beyond`]).
    pub publish: mpsc::UnboundedSender<(Envelope, Option<network::PeerId>)>,
    /// Result signatures already checked here (each is verified once per node).
    pub verified_results: super::verify::VerifiedResults,
    /// The matchmakers whose decisions count here; `None`: any signer's (no list configured).
    pub trusted_matchmakers: Option<Arc<HashSet<PublicKey>>>,
    /// Test fault injection: each durable commit waits this long first (`NodeOptions`).
    pub sync_delay: Duration,
}

impl Shared {
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Whether `key` is among the matchmakers this node was configured to trust (never
    /// true when none are configured, which trusts anyone's decisions but vouches for none).
    pub fn configured_to_trust(&self, key: &PublicKey) -> bool {
        self.trusted_matchmakers
            .as_ref()
            .is_some_and(|trusted| trusted.contains(key))
    }

    /// Whether a matchmaker's decision signed by `key` counts here: this node's own, or one
    /// of the trusted matchmakers' (anyone's when none are configured).
    pub fn trusts_matchmaker(&self, key: &PublicKey) -> bool {
        *key == self.me
            || self
                .trusted_matchmakers
                .as_ref()
                .is_none_or(|trusted| trusted.contains(key))
    }

    /// Run `fut` in the background until it ends or the node shuts down.
    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }
}

pub(crate) struct Core {
    pub sh: Shared,
    nonce: u64,
    seen: Seen,
    pub view: View,
    pub mm: Option<MatchmakerRole>,
    pub op: Option<OperatorRole>,
    pub settlement: Arc<dyn Settlement>,
    pub progress: Notifier,
    last_advert: Option<Instant>,
    /// Output of the current batch, released by [`Core::commit`].
    outbox: Vec<Deferred>,
    /// The matchmaker that assigned each attempt this operator runs: its result goes to it
    /// directly (gossip carries it to everyone else).
    assigned_by: HashMap<operating::AttemptKey, PublicKey>,
    /// Matchmakers heard announcing: whom catch-up asks first.
    matchmakers: HashSet<PublicKey>,
    /// Untrusted signers of matchmaker decisions already warned about (once each: a flood of
    /// forgeries must not flood the log; the metric counts every one).
    untrusted_warned: BoundedSet<PublicKey, 1024>,
    /// Catch-up rounds so far (rotates the peers asked).
    catch_up_round: usize,
    /// When this node last ran discovery (ms); `None`: not yet (it runs once a peer is up).
    last_discovery: Option<u64>,
    /// Peers connected now (discovery needs someone to ask).
    connected: usize,
    /// Per operator, what was already pushed to it over its current connection (a task's
    /// inputs are often another task's too: the witness feeds every leaf).
    pushed: HashMap<PublicKey, Pushed>,
    /// Operators whose latest advert lists this node among the matchmakers they trust: their
    /// assignments carry task definitions in place of a workflow's submission where they can
    /// (see `push_inputs`).
    trusted_by: HashSet<PublicKey>,
    /// Keys heard advertising as operators: asked last in catch-up (see `catch_up_peers`).
    advertised: HashSet<PublicKey>,
    /// The last workflow whose submission was pushed, with its sealed push (`None`: too big
    /// to push); see [`Core::submission_push`].
    submission_push: Option<(WorkflowId, Option<Envelope>)>,
    /// While an assignment batch is taken in: this operator's answers to its parts, signed
    /// together once the whole batch is in.
    answering: Option<Vec<Answer>>,
    /// Who sent the direct request being handled: its answer goes back to it as the reply
    /// ([`Core::emit_answer`]).
    requester: Option<PublicKey>,
    /// Assignments this matchmaker decided in the current batch, not signed yet: they leave
    /// as the batch ends anyway, so they are signed then, one batch per operator
    /// ([`Core::send_assignments`]).
    unsent: Vec<Assignment>,
    /// Verdicts this matchmaker reached in the current batch, applied here already and
    /// signed together once the batch ends ([`Core::send_verdicts`]).
    unsigned_verdicts: Vec<Verdict>,
    /// Peers with a direct send waiting for the current batch to be durable: anything else
    /// for them in this batch waits too, so each peer gets what it is sent in decided order.
    held_for: HashSet<network::PeerId>,
    /// The results and failures this operator sent straight to their matchmakers, oldest
    /// first, kept while their envelopes are valid and sent again when that matchmaker
    /// connects anew ([`Core::resend_outcomes`]).
    outcomes: std::collections::VecDeque<(PublicKey, Envelope)>,
}

/// Most outcomes kept for [`Core::resend_outcomes`].
const MAX_OUTCOMES: usize = 4096;

/// When a direct send leaves (see [`Core::send_direct_attached`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leave {
    /// Once the batch that produced it is durable.
    Durable,
    /// At once, before the batch's fsync: assignments and what they carry, see
    /// [`Core::send_assignment_groups`].
    Now,
}

/// A timer that never fires when the role is off.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A node's periodic introduction of itself: fires at once, again after each of
/// [`INTRODUCTION_RETRIES`] shorter than `period`, then every `period`.
struct Introduction {
    timer: Interval,
    period: Duration,
    retries: std::slice::Iter<'static, Duration>,
}

impl Introduction {
    fn new(period: Duration) -> Self {
        Introduction {
            timer: interval(period),
            period,
            retries: INTRODUCTION_RETRIES.iter(),
        }
    }
}

/// The next introduction due (never, when the role is off).
async fn introduce(intro: &mut Option<Introduction>) {
    let Some(intro) = intro else {
        return std::future::pending().await;
    };
    intro.timer.tick().await;
    if let Some(&after) = intro.retries.next() {
        if after < intro.period {
            intro.timer = tokio::time::interval_at(Instant::now() + after, intro.period);
            intro
                .timer
                .set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
    }
}

fn interval(period: Duration) -> Interval {
    let mut i = tokio::time::interval(period.max(Duration::from_millis(1)));
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

impl Core {
    pub fn new(
        sh: Shared,
        view: View,
        mm: Option<MatchmakerRole>,
        op: Option<OperatorRole>,
        settlement: Arc<dyn Settlement>,
        progress: Notifier,
    ) -> Self {
        // Nonces must never repeat for this key, across restarts too: start from the clock in
        // microseconds (a node signs far fewer than a million messages per second).
        let nonce = sh.now().saturating_mul(1000);
        // Operators known before a restart, so that catch-up asks them last from the start.
        let advertised = match sh.store.operators() {
            Ok(ops) => ops.into_iter().map(|(key, _)| key).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the operators this node knew");
                HashSet::new()
            }
        };
        Core {
            sh,
            nonce,
            seen: Seen(BoundedSet::default()),
            view,
            mm,
            op,
            settlement,
            // Held until the batch that produced it is durable.
            progress: progress.held(),
            last_advert: None,
            outbox: Vec::new(),
            assigned_by: HashMap::new(),
            matchmakers: HashSet::new(),
            untrusted_warned: BoundedSet::default(),
            catch_up_round: 0,
            last_discovery: None,
            connected: 0,
            pushed: HashMap::new(),
            trusted_by: HashSet::new(),
            advertised,
            submission_push: None,
            answering: None,
            requester: None,
            unsent: Vec::new(),
            unsigned_verdicts: Vec::new(),
            held_for: HashSet::new(),
            outcomes: std::collections::VecDeque::new(),
        }
    }

    /// Queue `f` to run once the current batch is durable.
    pub(crate) fn after_commit(&mut self, f: impl FnOnce() + Send + 'static) {
        self.outbox.push(Box::new(f));
    }

    /// End of a batch: sync the store if anything durable is about to be announced, then
    /// announce it (in the order it was produced). The fsync runs on the blocking pool: the
    /// core waits for it, but the runtime's worker threads stay free for the network and
    /// every other task meanwhile.
    ///
    /// The assignments leave first and the verdicts are signed while the disk syncs (they
    /// only go to gossip, after it): a hand-over's next task no longer waits for its verdict's
    /// signature, and the core's turn per batch is one signature shorter. They are still
    /// published ahead of the assignments: a standby matchmaker ignores an assignment of a
    /// task whose dependencies it has not seen accepted.
    async fn commit(&mut self) {
        let assignments_from = self.outbox.len();
        self.send_assignments();
        let assignments_out = self.outbox.split_off(assignments_from);
        let announces = !self.outbox.is_empty()
            || !assignments_out.is_empty()
            || !self.unsigned_verdicts.is_empty()
            || self.progress.holds_durable();
        let syncing = if !announces || !self.sh.store.needs_sync() {
            // Nothing to make durable first: end the batch at once (it holds the store's
            // write lock).
            if let Err(e) = self.sh.store.end_batch() {
                tracing::error!(error = %e, "store batch commit failed");
            }
            // The batch is closed: the attempts it admitted start here, before its answers
            // leave.
            if let Some(op) = &mut self.op {
                op.start_admitted(true);
            }
            None
        } else {
            // Spawned to start while the batch syncs (it holds the store's write lock until
            // then; they may wait for it on other threads).
            if let Some(op) = &mut self.op {
                op.start_admitted(false);
            }
            // The batch's own commit is the durable one (one commit, one fsync).
            let (store, delay) = (self.sh.store.clone(), self.sh.sync_delay);
            Some(tokio::task::spawn_blocking(move || {
                durable_commit(&store, delay)
            }))
        };
        // Signed while the disk syncs, if it does.
        self.send_verdicts();
        self.outbox.extend(assignments_out);
        if let Some(syncing) = syncing {
            let (result, took) = match syncing.await {
                Ok(done) => done,
                // The blocking pool is gone (runtime shutting down): commit here.
                Err(_) => durable_commit(&self.sh.store, self.sh.sync_delay),
            };
            match result {
                Ok(true) => self.sh.metrics.store_sync.observe(took.as_secs_f64()),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "store sync failed; announcing anyway"),
            }
        }
        self.progress.release();
        for f in self.outbox.drain(..) {
            f();
        }
        self.held_for.clear();
    }

    pub async fn run(
        mut self,
        mut net: mpsc::Receiver<NetworkEvent>,
        mut commands: mpsc::Receiver<Command>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        let mut heartbeat = self
            .op
            .as_ref()
            .map(|o| interval(o.opts.heartbeat_interval));
        let mut advert = self
            .op
            .as_ref()
            .map(|o| Introduction::new(o.opts.advert_interval));
        let mut announce = self
            .mm
            .as_ref()
            .map(|m| Introduction::new(m.opts.announce_interval));
        let mut flush = interval(FLUSH_INTERVAL);
        let mut catch_up = interval(CATCH_UP_TICK);
        let cancel = self.sh.cancel.clone();
        loop {
            let deadline = self.mm.as_ref().and_then(|m| m.next_deadline());
            let wake = deadline.map(|d| {
                let now = self.sh.now();
                Instant::now() + Duration::from_millis(d.saturating_sub(now))
            });
            tokio::select! {
                _ = cancel.cancelled() => break,
                event = net.recv() => match event {
                    Some(event) => self.on_network(event),
                    None => {
                        tracing::error!("the network event loop stopped; shutting the node down");
                        cancel.cancel();
                        break;
                    }
                },
                Some(done) = internal.recv() => self.on_internal(done),
                Some(command) = commands.recv() => self.on_command(command),
                _ = async { match wake { Some(w) => tokio::time::sleep_until(w).await, None => std::future::pending().await } } => {
                    self.mm_tick();
                }
                _ = tick(&mut heartbeat) => self.heartbeat(),
                _ = introduce(&mut advert) => self.advert(),
                _ = introduce(&mut announce) => self.announce(),
                _ = catch_up.tick() => {
                    // The same 250 ms timer: the matchmaker's memory of finished workflows,
                    // then its snapshot and log (after, so the snapshot holds no finished one).
                    if let Some(mm) = self.mm.as_mut() {
                        mm.forget_finished(&self.sh);
                        mm.compact_log(&self.sh);
                    }
                    self.catch_up();
                }
                _ = flush.tick() => {
                    // Nothing is written yet this iteration: no batch is open.
                    let store = self.sh.store.clone();
                    let flushed = match tokio::task::spawn_blocking(move || store.flush()).await {
                        Ok(result) => result,
                        Err(_) => self.sh.store.flush(),
                    };
                    if let Err(e) = flushed {
                        tracing::error!(error = %e, "store flush failed");
                    }
                }
            }
            // Group commit: take in everything already waiting, then sync once.
            for _ in 0..BATCH {
                if let Ok(event) = net.try_recv() {
                    self.on_network(event);
                } else if let Ok(done) = internal.try_recv() {
                    self.on_internal(done);
                } else if let Ok(command) = commands.try_recv() {
                    self.on_command(command);
                } else {
                    break;
                }
            }
            self.commit().await;
        }
        // First, before the last commit's sync: the matchmakers presume an operator down a
        // few missed heartbeats after its last one.
        self.hand_back_attempts().await;
        self.commit().await;
        if let Err(e) = self.sh.store.flush() {
            tracing::error!(error = %e, "store flush at shutdown failed");
        }
        if let Some(op) = &mut self.op {
            op.cancel_all();
        }
        tracing::debug!("node core stopped");
    }

    /// On a graceful stop, declare every attempt this operator still holds failed
    /// (`Refused("operator shutting down")`), straight to the matchmaker that assigned it and on
    /// gossip, and wait (at most [`HAND_BACK_MAX`]) for those matchmakers to take the
    /// declarations in. The tasks move to other operators at once, and since a declared
    /// failure is not a missed deadline, nobody is slashed for them. Before, a restarted
    /// daemon (an upgrade) looked like a dead one: its tasks waited for the heartbeat timeout,
    /// and its accepted attempts were slashed at their deadlines.
    async fn hand_back_attempts(&mut self) {
        let Some(op) = self.op.as_ref().filter(|_| !self.sh.crash.is_cancelled()) else {
            return;
        };
        let held = op.held();
        if held.is_empty() {
            return;
        }
        let mut answers = Vec::new();
        let mut gossiped = Vec::new();
        for key in &held {
            let (workflow, task, attempt) = *key;
            let message = Message::Failure(TaskFailure {
                workflow,
                task,
                attempt,
                operator: self.sh.me,
                cause: FailureCause::Refused(SHUTTING_DOWN.into()),
            });
            let envelope = self.seal(&message);
            let assigner = self.assigned_by.get(key).filter(|mm| **mm != self.sh.me);
            if let Some(peer) = assigner.and_then(network::peer_id_of) {
                let client = &self.sh.client;
                answers.push(client.send_direct_in_order(peer, &envelope, Vec::new()));
            }
            // Gossiped too, for standby matchmakers and gateways, and awaited here: the
            // publishing task may not get to it before the network stops.
            let client = self.sh.client.clone();
            gossiped.push(async move { client.publish(&envelope).await });
        }
        tracing::info!(
            attempts = held.len(),
            "handing back the attempts this operator holds"
        );
        let sent = futures::future::join(
            futures::future::join_all(answers),
            futures::future::join_all(gossiped),
        );
        if tokio::time::timeout(HAND_BACK_MAX, sent).await.is_err() {
            tracing::warn!("some matchmaker did not take in the handed-back attempts in time");
        }
    }

    // ---- producing messages -------------------------------------------------------------------

    fn seal(&mut self, message: &Message) -> Envelope {
        self.nonce += 1;
        self.sh
            .metrics
            .envelopes_signed
            .get_or_create(&super::metrics::KindLabel {
                kind: format!("{:?}", message.kind()),
            })
            .inc();
        let expires = self.sh.now().saturating_add(self.sh.ttl_ms);
        Envelope::seal(
            &self.sh.keypair,
            self.sh.domain,
            message,
            self.nonce,
            expires,
        )
    }

    /// Sign `message`, apply it locally and queue it for gossip. Returns the envelope (for a
    /// direct reply or send).
    pub fn emit(&mut self, message: Message) -> Envelope {
        self.emit_beyond(message, None)
    }

    /// [`Self::emit`] of the answer to the direct request being handled
    /// ([`Core::requester`]): the requester has it as the reply, so gossip carries it only to
    /// the topic's other followers (none with a lone matchmaker, which would otherwise take
    /// in every acceptance twice).
    fn emit_answer(&mut self, message: Message) -> Envelope {
        let requester = self.requester.and_then(|k| network::peer_id_of(&k));
        self.emit_beyond(message, requester)
    }

    /// [`Self::emit`], gossiped beyond `has_it` (a peer that has the envelope already).
    fn emit_beyond(&mut self, message: Message, has_it: Option<network::PeerId>) -> Envelope {
        let envelope = self.seal(&message);
        self.seen.insert(&envelope);
        let publish = self.sh.publish.clone();
        let out = envelope.clone();
        self.after_commit(move || {
            let _ = publish.send((out, has_it));
        });
        let me = self.sh.me;
        self.on_message(me, message, Origin::Local);
        envelope
    }

    /// [`Self::emit`], but the envelope goes straight to `to` first (with `attachments` beside
    /// it) and to gossip only once `to` answered or the send failed; once `to` answered, only
    /// to the other peers following the topic (none: not gossiped at all).
    fn emit_direct_first(&mut self, message: Message, to: &PublicKey, attachments: Vec<Vec<u8>>) {
        let envelope = self.seal(&message);
        self.seen.insert(&envelope);
        if self.outcomes.len() >= MAX_OUTCOMES {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back((*to, envelope.clone()));
        let publish = self.sh.publish.clone();
        let gossip = envelope.clone();
        match network::peer_id_of(to) {
            Some(peer) => {
                let sh = self.sh.clone();
                self.held_for.insert(peer);
                self.after_commit(move || {
                    let answer = sh.client.send_direct_in_order(peer, &envelope, attachments);
                    let answered = direct(answer, sh.internal.clone(), peer);
                    let client = sh.client.clone();
                    sh.spawn(async move {
                        tokio::pin!(answered);
                        // Bounded: a matchmaker that hangs must not hold back the copy its
                        // standbys take over with.
                        let waited =
                            tokio::time::timeout(GOSSIP_AFTER_DIRECT_MAX, &mut answered).await;
                        if waited == Ok(true) {
                            if let Err(e) = client.publish_beyond(&gossip, peer).await {
                                tracing::debug!(kind = ?gossip.kind, error = %e, "publish failed");
                            }
                            return;
                        }
                        let _ = publish.send((gossip, None));
                        if waited.is_err() {
                            answered.await;
                        }
                    })
                });
            }
            None => self.after_commit(move || {
                let _ = publish.send((gossip, None));
            }),
        }
        let me = self.sh.me;
        self.on_message(me, message, Origin::Local);
    }

    /// Send `matchmaker`, which has just connected, the outcomes this operator sent it that are
    /// still valid. A matchmaker acknowledges a result as it arrives, before its verdict is
    /// durable, and one that was down missed the direct copy (gossip does not replay it): after
    /// a crash it would otherwise wait for them until the attempts' deadlines and then slash
    /// operators that did their work. One it had taken already it drops (a duplicate nonce,
    /// or an attempt no longer current).
    fn resend_outcomes(&mut self, matchmaker: PublicKey) {
        let now = self.sh.now();
        self.outcomes.retain(|(_, e)| e.expires_at_ms > now);
        let again: Vec<Envelope> = self
            .outcomes
            .iter()
            .filter(|(mm, _)| *mm == matchmaker)
            .map(|(_, e)| e.clone())
            .collect();
        if !again.is_empty() {
            tracing::debug!(matchmaker = %matchmaker, outcomes = again.len(), "sending outcomes again");
        }
        for envelope in again {
            self.send_direct(&matchmaker, envelope);
        }
    }

    /// Send an envelope straight to `to` (a cancellation, a result) once the batch is durable;
    /// an answering envelope is handled like any received message.
    pub fn send_direct(&mut self, to: &PublicKey, envelope: Envelope) {
        self.send_direct_attached(to, envelope, Vec::new(), Leave::Durable);
    }

    /// [`Self::send_direct`] with blobs the envelope names sent beside it, leaving as `leave`
    /// says, or once the batch is durable where something sent earlier in this batch to the
    /// same peer waits for that.
    fn send_direct_attached(
        &mut self,
        to: &PublicKey,
        envelope: Envelope,
        attachments: Vec<Vec<u8>>,
        leave: Leave,
    ) {
        let Some(peer) = network::peer_id_of(to) else {
            return;
        };
        let sh = self.sh.clone();
        // Handed to the network here, in batch order; only the wait for the answer is spawned.
        let send = move || {
            let answer = sh.client.send_direct_in_order(peer, &envelope, attachments);
            let answered = direct(answer, sh.internal.clone(), peer);
            sh.spawn(async move {
                answered.await;
            })
        };
        if leave == Leave::Now && !self.held_for.contains(&peer) {
            send();
        } else {
            self.held_for.insert(peer);
            self.after_commit(send);
        }
    }
}

/// End the store's batch with a durable commit, timed (`delay`: a test's slow disk, see
/// [`Shared::sync_delay`]).
fn durable_commit(
    store: &Store,
    delay: Duration,
) -> (Result<bool, crate::store::StoreError>, Duration) {
    let started = std::time::Instant::now();
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    (store.end_batch_durably(), started.elapsed())
}

/// What only a matchmaker decides: announcing itself, assigning and cancelling tasks, failing
/// workflows, accepting or rejecting results.
fn is_matchmaker_decision(message: &Message) -> bool {
    matches!(
        message,
        Message::MatchmakerAnnounce(_)
            | Message::Assignment(_)
            | Message::Assignments(_)
            | Message::Dispatch(_)
            | Message::Cancel(_)
            | Message::WorkflowFailed(_)
            | Message::Verdict(_)
            | Message::Verdicts(_)
    )
}

/// `items` in runs of at most [`MAX_BATCH`], in order.
fn batches<T>(mut items: Vec<T>) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(items.len().min(MAX_BATCH));
        out.push(std::mem::replace(&mut items, rest));
    }
    out
}

/// One run of [`batches`] as a message: a lone item as itself (`one`), more as a batch
/// (`many`).
fn one_or_many<T>(
    mut batch: Vec<T>,
    one: fn(T) -> Message,
    many: fn(Vec<T>) -> Message,
) -> Message {
    match batch.len() {
        1 => one(batch.remove(0)),
        _ => many(batch),
    }
}

/// `answers` as one message: a single one alone, several as a batch; `None` for none.
fn answers_message(mut answers: Vec<Answer>) -> Option<Message> {
    match answers.len() {
        0 => None,
        1 => answers.pop().map(Answer::into_message),
        _ => Some(Message::Answers(answers)),
    }
}

/// The answer to attempt `key` in this operator's own signed answer `envelope` (a single one
/// or a batch).
fn answer_in(envelope: &Envelope, key: operating::AttemptKey) -> Option<Answer> {
    match proofmesh_protocol::encoding::decode::<Message>(&envelope.payload).ok()? {
        Message::Answers(batch) => batch.into_iter().find(|a| a.attempt() == key),
        single => Answer::from_message(single),
    }
}

/// Whom one catch-up round asks: connected matchmakers first, then any peer, rotating with
/// `round` so that a peer as far behind as we are is not asked forever.
fn catch_up_peers(
    mut peers: Vec<network::PeerId>,
    matchmakers: &HashSet<PublicKey>,
    operators: &HashSet<PublicKey>,
    round: usize,
) -> Vec<network::PeerId> {
    peers.sort();
    // Matchmakers first (they decided the verdicts), then the other full nodes (gateways keep
    // every result), and operators last: one that only operates follows no verdicts, so it
    // can tell of a workflow but holds none of its results (a matchmaker that discovered a
    // workflow from one ran again the tasks whose results a gateway held).
    let tier = |p: &network::PeerId| match public_key_of(p) {
        Some(k) if matchmakers.contains(&k) => 0,
        Some(k) if operators.contains(&k) => 2,
        _ => 1,
    };
    let mut tiers: [Vec<network::PeerId>; 3] = Default::default();
    for peer in peers {
        tiers[tier(&peer)].push(peer);
    }
    let mut asked = Vec::with_capacity(CATCH_UP_PEERS);
    for mut t in tiers {
        if !t.is_empty() {
            let n = round % t.len();
            t.rotate_left(n);
        }
        asked.extend(t);
    }
    asked.truncate(CATCH_UP_PEERS);
    asked
}

async fn direct(
    answer: impl std::future::Future<
        Output = Result<Option<(Envelope, Message)>, network::NetworkError>,
    >,
    internal: mpsc::UnboundedSender<Internal>,
    peer: network::PeerId,
) -> bool {
    match answer.await {
        Ok(Some((envelope, message))) => {
            let _ = internal.send(Internal::Received { envelope, message });
            true
        }
        Ok(None) => true,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "direct send failed (gossip carries it too)");
            let _ = internal.send(Internal::DirectFailed { peer });
            false
        }
    }
}

impl Core {
    // ---- inputs ---------------------------------------------------------------------------------

    fn on_network(&mut self, event: NetworkEvent) {
        match event {
            NetworkEvent::Message {
                envelope, message, ..
            } => {
                if self.seen.insert(&envelope) {
                    self.keep_vouch(&envelope, &message);
                    self.on_message(envelope.sender, message, Origin::Remote);
                }
            }
            NetworkEvent::DirectRequest {
                envelope,
                message,
                responder,
                ..
            } => {
                if !self.seen.insert(&envelope) {
                    responder.ack();
                    return;
                }
                // Nothing to answer and nothing the pusher waits on: acked at once.
                if let Message::SyncReply(push) = message {
                    responder.ack();
                    self.inputs_pushed(envelope.sender, push);
                    return;
                }
                // An operator waits for this answer only to gossip its result (for standby
                // matchmakers): acked at once, not after the verdict's commit, so that copy
                // does not reach this node in the middle of its next task.
                if let Message::Result(_) = message {
                    responder.ack();
                    self.on_message(envelope.sender, message, Origin::Remote);
                    return;
                }
                let before = (self.outbox.len(), self.sh.store.deferred_writes());
                self.requester = Some(envelope.sender);
                let answer = self.on_message(envelope.sender, message, Origin::Remote);
                self.requester = None;
                // Answered once what the request changed is durable.
                match answer {
                    Some(reply) => self.after_commit(move || responder.reply(reply)),
                    // It changed nothing that must be durable and produced nothing to
                    // announce (a result handed to the precheck): a bare ack need not wait
                    // for the batch's sync.
                    None if before == (self.outbox.len(), self.sh.store.deferred_writes()) => {
                        responder.ack()
                    }
                    None => self.after_commit(move || responder.ack()),
                }
            }
            NetworkEvent::PeerConnected { key, .. } => {
                // A new peer may know workflows we missed: discover again soon.
                self.connected += 1;
                let now = self.sh.now();
                if self
                    .last_discovery
                    .is_some_and(|t| now.saturating_sub(t) >= catch_up::REDISCOVER_AFTER)
                {
                    self.last_discovery = None;
                }
                // Someone new may not know us yet: re-advertise (rate-limited).
                if self.op.is_some()
                    && self
                        .last_advert
                        .is_none_or(|t| t.elapsed() > Duration::from_millis(200))
                {
                    self.advert();
                }
                if let (Some(key), Some(_)) = (key, &self.mm) {
                    tracing::trace!(peer = %key, "peer connected");
                }
                if let (Some(key), Some(_)) = (key, &self.op) {
                    self.advert_to(key);
                    self.resend_outcomes(key);
                }
            }
            NetworkEvent::PeerDisconnected { peer } => {
                self.connected = self.connected.saturating_sub(1);
                let Some(key) = public_key_of(&peer) else {
                    return;
                };
                self.pushed.remove(&key);
                let now = self.sh.now();
                if let Some(decisions) = self.mm.as_mut().map(|m| m.peer_gone(&self.sh, key, now)) {
                    self.act(decisions);
                }
            }
            NetworkEvent::Listening { .. } => {}
        }
    }

    fn on_internal(&mut self, done: Internal) {
        match done {
            Internal::Received { envelope, message } => {
                if self.seen.insert(&envelope) {
                    self.keep_vouch(&envelope, &message);
                    self.on_message(envelope.sender, message, Origin::Remote);
                }
            }
            Internal::Checked {
                result,
                checked,
                relayed,
            } => {
                let now = self.sh.now();
                if let Some(decisions) = self
                    .mm
                    .as_mut()
                    .map(|m| m.checked(&self.sh, now, result, checked, relayed))
                {
                    self.act(decisions);
                }
            }
            Internal::AttemptDone { key, outcome } => {
                if let Some(op) = &mut self.op {
                    op.finished(&key);
                }
                let matchmaker = self.assigned_by.remove(&key).filter(|mm| *mm != self.sh.me);
                let (message, output) = match outcome {
                    Outcome::Completed(result) => {
                        // Signed here: the verdict that carries it back needs no re-check.
                        self.sh.verified_results.insert_unchecked(&result);
                        let output = match matchmaker {
                            Some(_) => self.attachable_output(&result).into_iter().collect(),
                            None => Vec::new(),
                        };
                        (Message::Result(result), output)
                    }
                    Outcome::Failed(failure) => (Message::Failure(failure), Vec::new()),
                    Outcome::Cancelled => return,
                };
                match matchmaker {
                    // Straight to the matchmaker waiting for it, with a small output beside it so
                    // that its check need not fetch it back from here; gossiped once that send is
                    // answered, so the copy the matchmaker acts on is the one with the output.
                    Some(mm) => self.emit_direct_first(message, &mm, output),
                    None => {
                        self.emit(message);
                    }
                }
            }
            Internal::DirectFailed { peer } => {
                if let Some(key) = public_key_of(&peer) {
                    self.pushed.remove(&key);
                }
            }
        }
    }

    /// A result's output when it is small enough to ride beside a direct message naming it
    /// ([`network::attachments::MAX_ATTACHMENT_BYTES`]) and this node holds it.
    fn attachable_output(
        &self,
        result: &proofmesh_protocol::messages::SignedResult,
    ) -> Option<Vec<u8>> {
        let r = &result.result;
        if r.output_bytes > network::attachments::MAX_ATTACHMENT_BYTES as u64 {
            return None;
        }
        match self.sh.store.blob(&r.output) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read an output to attach; it will be fetched");
                None
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Submit {
                workflow,
                owner,
                owner_eth,
                escrow,
                submitted_at_ms,
                reply,
            } => {
                let result = match workflow.validate() {
                    Err(e) => Err(NodeError::InvalidWorkflow(e)),
                    Ok(_) => {
                        let id = workflow.id();
                        match self.sh.store.has_workflow(&id) {
                            // Known already: nothing changes (and nothing is re-gossiped).
                            Ok(true) => Ok((id, false)),
                            Err(e) => Err(NodeError::Store(e)),
                            Ok(false) => {
                                let submission = Submission {
                                    workflow,
                                    owner: owner.unwrap_or(self.sh.me),
                                    owner_eth,
                                    escrow,
                                    submitted_at_ms: submitted_at_ms
                                        .unwrap_or_else(|| self.sh.now()),
                                };
                                let envelope = self.emit(Message::Submission(submission));
                                self.hand_to_matchmakers(envelope);
                                // `emit` stored it; the reply leaves after the batch's sync.
                                match self.sh.store.has_workflow(&id) {
                                    Ok(true) => Ok((id, true)),
                                    Ok(false) => Err(NodeError::NotStored(id)),
                                    Err(e) => Err(NodeError::Store(e)),
                                }
                            }
                        }
                    }
                };
                self.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::FetchBlob { id, reply } => {
                if matches!(self.sh.store.has_blob(&id), Ok(true)) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                let client = self.sh.client.clone();
                let store = self.sh.store.unbatched();
                self.sh.spawn(async move {
                    let result = match client.fetch_blob(None, id).await {
                        Ok(bytes) => match tokio::task::spawn_blocking(move || {
                            store.put_blob_expected(&id, &bytes)
                        })
                        .await
                        {
                            Ok(Ok(true)) => Ok(()),
                            Ok(Ok(false)) => Err(NodeError::Rpc(format!(
                                "blob {} did not match its hash",
                                id.short()
                            ))),
                            Ok(Err(e)) => Err(NodeError::Store(e)),
                            Err(e) => Err(NodeError::Rpc(e.to_string())),
                        },
                        Err(e) => Err(NodeError::Network(e)),
                    };
                    let _ = reply.send(result);
                });
            }
            Command::Cancel {
                workflow,
                owner_eth_signature,
                reply,
            } => {
                let cancel = WorkflowCancel {
                    workflow,
                    owner_eth_signature,
                };
                let result = self.may_cancel(&cancel).map(|()| {
                    tracing::info!(workflow = %workflow.short(), "cancelling the workflow for its requester");
                    let envelope = self.emit(Message::CancelWorkflow(cancel));
                    self.hand_to_matchmakers(envelope);
                });
                self.after_commit(move || {
                    let _ = reply.send(result);
                });
            }
            Command::LiveMatchmakers { reply } => {
                let live = self
                    .mm
                    .as_ref()
                    .map(|m| m.live_set(self.sh.me))
                    .unwrap_or_default();
                let _ = reply.send(live);
            }
        }
    }

    /// Whether this node may send `cancel`: it holds the workflow, the workflow has not ended,
    /// and the requester signed it (or this node owns it).
    fn may_cancel(&self, cancel: &WorkflowCancel) -> Result<(), NodeError> {
        let id = cancel.workflow;
        let refused = |reason: String| NodeError::CancelRefused {
            workflow: id,
            reason,
        };
        let Some(record) = self.sh.store.workflow(&id)? else {
            return Err(match self.sh.store.tombstone(&id)? {
                Some(t) => refused(format!(
                    "it has ended ({}) and was pruned from this node's store",
                    t.state.label()
                )),
                None => NodeError::UnknownWorkflow(id),
            });
        };
        if record.state != crate::store::WorkflowState::Active {
            return Err(refused(format!("it has ended ({})", record.state.label())));
        }
        super::cancel::authorize(&record.submission, &self.sh.me, cancel).map_err(refused)
    }

    /// Send a submission this node accepted straight to every matchmaker it knows of (those it
    /// trusts and those it heard announce), besides gossip. Gossip reaches a node only through
    /// a peer whose mesh holds it, which takes a heartbeat after it connects, and a message
    /// missed then is never offered again: a matchmaker that had just started learned the
    /// workflow only at its next discovery round, 5 s later. Had the active one died meanwhile,
    /// it took the workflow over without the results already accepted and ran those tasks
    /// again (a second, different result per task). Receivers drop the copy they see second.
    fn hand_to_matchmakers(&mut self, envelope: Envelope) {
        let mut to: Vec<PublicKey> = self.matchmakers.iter().copied().collect();
        if let Some(trusted) = &self.sh.trusted_matchmakers {
            to.extend(trusted.iter().copied());
        }
        to.sort();
        to.dedup();
        let me = self.sh.me;
        for matchmaker in to.into_iter().filter(|k| *k != me) {
            self.send_direct(&matchmaker, envelope.clone());
        }
    }

    /// Apply one message (received or our own). Returns the answer to send back when it came
    /// as a direct request (an operator's acceptance or refusal of an assignment).
    pub fn on_message(
        &mut self,
        sender: PublicKey,
        message: Message,
        origin: Origin,
    ) -> Option<Envelope> {
        let now = self.sh.now();
        let mut reply = None;
        // Authorship: a message about an operator or matchmaker must be signed by it.
        let author_ok = match &message {
            // A cancellation's authority is its requester's, checked against the submission.
            Message::Submission(_)
            | Message::Verdict(_)
            | Message::Verdicts(_)
            | Message::CancelWorkflow(_) => true,
            Message::OperatorAdvert(a) => a.operator == sender,
            Message::Heartbeat(h) => h.operator == sender,
            Message::Assignment(a) => a.matchmaker == sender,
            Message::Assignments(batch) => batch.iter().all(|a| a.matchmaker == sender),
            Message::Dispatch(d) => d.assignments.iter().all(|a| a.matchmaker == sender),
            Message::Acceptance(a) => a.operator == sender,
            Message::Answers(batch) => batch.iter().all(|a| *a.operator() == sender),
            Message::Result(r) => r.result.operator == sender,
            Message::Failure(f) => f.operator == sender,
            Message::MatchmakerAnnounce(a) => a.matchmaker == sender,
            Message::Cancel(c) => c.matchmaker == sender,
            Message::WorkflowFailed(f) => f.matchmaker == sender,
            Message::SyncRequest(_) | Message::SyncReply(_) => true,
        };
        if !author_ok {
            tracing::debug!(kind = ?message.kind(), %sender, "dropping a message signed by someone it does not speak for");
            return None;
        }
        // A matchmaker's decision (an accepted result included, however it came: gossip,
        // catch-up answer, pushed input) counts only from a trusted matchmaker.
        if is_matchmaker_decision(&message) && !self.sh.trusts_matchmaker(&sender) {
            self.sh.metrics.untrusted_decisions.inc();
            if self.untrusted_warned.insert(sender) {
                tracing::warn!(kind = ?message.kind(), %sender, "ignoring matchmaker decisions from a key that is not among network.matchmakers (warned once per key; counted in proofmesh_untrusted_decisions)");
            } else {
                tracing::debug!(kind = ?message.kind(), %sender, "ignoring a matchmaker's decision from an untrusted key");
            }
            // An assignment sent to us is refused with the reason, so a matchmaker left out
            // of our list by mistake learns why at once. Only it gets the refusal (signed, not
            // applied: our view never took the assignment in).
            let me = self.sh.me;
            let refuse = |a: &Assignment| {
                (a.operator == me).then(|| {
                    Answer::Refused(TaskFailure {
                        workflow: a.workflow,
                        task: a.task,
                        attempt: a.attempt,
                        operator: me,
                        cause: FailureCause::Refused(format!(
                            "matchmaker {sender} is not among this operator's network.matchmakers"
                        )),
                    })
                })
            };
            let refusals: Vec<Answer> = match &message {
                _ if self.op.is_none() => Vec::new(),
                Message::Assignment(a) => refuse(a).into_iter().collect(),
                Message::Assignments(batch) => batch.iter().filter_map(refuse).collect(),
                Message::Dispatch(d) => d.assignments.iter().filter_map(refuse).collect(),
                _ => Vec::new(),
            };
            return answers_message(refusals).map(|m| self.seal(&m));
        }
        match message {
            Message::SyncRequest(request) => {
                if origin == Origin::Local {
                    return None;
                }
                let answer = catch_up::answer(&self.sh, &self.view, &request);
                return Some(self.seal(&Message::SyncReply(answer)));
            }
            Message::SyncReply(reply) => {
                self.caught_up(sender, reply);
                return None;
            }
            // A batch is taken in part by part, each as if it had come alone.
            Message::Assignments(batch) => return self.assignment_batch(sender, batch, origin),
            // The inputs first, as a push ahead of the assignments would have brought them;
            // only the operator addressed takes them (others hold the verdicts already).
            // Task definitions are taken on the word of a matchmaker this node was configured
            // to trust (as its assignments are); any other's wait for the workflow.
            Message::Dispatch(d) => {
                let mine = d
                    .assignments
                    .first()
                    .is_some_and(|a| a.operator == self.sh.me);
                if !(mine && origin == Origin::Remote) {
                    return self.assignment_batch(sender, d.assignments, origin);
                }
                let Some(op) = &mut self.op else {
                    return self.assignment_batch(sender, d.assignments, origin);
                };
                if self.sh.configured_to_trust(&sender) {
                    op.definitions = d
                        .assignments
                        .iter()
                        .map(|a| (a.workflow, a.task))
                        .zip(d.tasks)
                        .collect();
                }
                self.take_inputs(sender, d.inputs);
                let answer = self.assignment_batch(sender, d.assignments, origin);
                if let Some(op) = &mut self.op {
                    op.definitions.clear();
                }
                return answer;
            }
            Message::Answers(batch) => {
                for answer in batch {
                    self.on_message(sender, answer.into_message(), origin);
                }
                return None;
            }
            Message::Verdicts(batch) => {
                for verdict in batch {
                    self.on_message(sender, Message::Verdict(verdict), origin);
                }
                return None;
            }
            _ => {}
        }
        // Without a matchmaker role nothing else reads a submission: the view keeps it
        // without a copy (a 512-task workflow's, on each of 32 operators in a first wave).
        let message = match message {
            Message::Submission(s) if self.mm.is_none() => {
                let local = origin == Origin::Local;
                self.view
                    .submission(&self.sh, &self.progress, Cow::Owned(s), local, now);
                return reply;
            }
            message => message,
        };
        let mut new_submission = true;
        match &message {
            Message::Submission(s) => {
                let local = origin == Origin::Local;
                match self
                    .view
                    .submission(&self.sh, &self.progress, Cow::Borrowed(s), local, now)
                {
                    Some(new) => new_submission = new,
                    None => return None,
                }
            }
            Message::OperatorAdvert(a) => {
                self.advertised.insert(a.operator);
                if a.trusts.contains(&self.sh.me) {
                    self.trusted_by.insert(a.operator);
                } else {
                    self.trusted_by.remove(&a.operator);
                }
                self.view.advert(&self.sh, a, now)
            }
            Message::MatchmakerAnnounce(a) => {
                if a.matchmaker != self.sh.me {
                    self.matchmakers.insert(a.matchmaker);
                    // A node that only operates is a kad client, absent from every routing
                    // table: a matchmaker that joins or restarts after it cannot find it, so
                    // it connects to every matchmaker it hears of (a no-op when connected).
                    if self.mm.is_none() && self.op.is_some() {
                        if let Some(peer) = network::peer_id_of(&a.matchmaker) {
                            self.sh.client.reach(peer);
                        }
                    }
                }
            }
            Message::Heartbeat(_) | Message::Result(_) => {}
            Message::Assignment(a) => {
                self.view.assignment(&self.sh, &self.progress, a);
                if a.operator == self.sh.me && self.op.is_some() {
                    reply = self.operator_assignment(a);
                }
            }
            Message::Acceptance(a) => self.view.acceptance(&self.sh, &self.progress, a),
            Message::Failure(f) => self.view.failure(&self.sh, &self.progress, f),
            Message::Verdict(v) => self.view.verdict(&self.sh, &self.progress, v, now),
            Message::Cancel(c) => {
                if c.operator == self.sh.me {
                    if let Some(op) = &mut self.op {
                        op.cancel(&(c.workflow, c.task, c.attempt), &c.reason);
                    }
                }
                self.view.cancelled(&self.sh, &self.progress, c);
            }
            Message::WorkflowFailed(f) => self.view.workflow_failed(&self.sh, &self.progress, f),
            // Only a matchmaker acts on it (below); the view learns the outcome from the
            // active matchmaker's failure that follows.
            Message::CancelWorkflow(_) => {}
            Message::SyncRequest(_)
            | Message::SyncReply(_)
            | Message::Assignments(_)
            | Message::Dispatch(_)
            | Message::Answers(_)
            | Message::Verdicts(_) => return None,
        }
        if self.mm.is_some() {
            // Decisions this node's matchmaker made itself are not fed back to it.
            let own_decision = origin == Origin::Local && is_matchmaker_decision(&message);
            let skip =
                own_decision || (matches!(message, Message::Submission(_)) && !new_submission);
            if !skip {
                let decisions = match self.mm.as_mut() {
                    Some(m) => m.on_message(&self.sh, &self.view, sender, message, now),
                    None => Vec::new(),
                };
                self.act(decisions);
            }
        }
        reply
    }

    // ---- roles ----------------------------------------------------------------------------------

    /// An assignment batch, part by part. The parts addressed to this operator are answered
    /// together: one signature for the batch instead of one per part.
    fn assignment_batch(
        &mut self,
        sender: PublicKey,
        batch: Vec<Assignment>,
        origin: Origin,
    ) -> Option<Envelope> {
        let outer = self.answering.replace(Vec::new());
        for a in batch {
            self.on_message(sender, Message::Assignment(a), origin);
        }
        let answers = std::mem::replace(&mut self.answering, outer).unwrap_or_default();
        let keys: Vec<_> = answers
            .iter()
            .map(|a| (a.attempt(), matches!(a, Answer::Accepted(_))))
            .collect();
        let envelope = self.emit_answer(answers_message(answers)?);
        for (key, accepted) in keys {
            if accepted {
                self.assigned_by.insert(key, sender);
            }
            if let Some(op) = &mut self.op {
                op.answered.insert(key, envelope.clone());
            }
        }
        Some(envelope)
    }

    /// An assignment addressed to this operator: the signed answer, or `None` inside a batch
    /// (the answer joins [`Core::answering`]).
    fn operator_assignment(&mut self, a: &Assignment) -> Option<Envelope> {
        let now = self.sh.now();
        let key = (a.workflow, a.task, a.attempt);
        // The same attempt again (e.g. re-sent by a matchmaker that took over): same answer.
        if let Some(envelope) = self.op.as_ref()?.answered.get(&key) {
            let Some(batch) = self.answering.as_mut() else {
                return Some(envelope.clone());
            };
            batch.extend(answer_in(envelope, key));
            return None;
        }
        let answer = self
            .op
            .as_mut()?
            .on_assignment(&self.sh, &self.view, a, now)?;
        if let Some(batch) = self.answering.as_mut() {
            batch.push(answer);
            return None;
        }
        let accepted = matches!(answer, Answer::Accepted(_));
        let envelope = self.emit_answer(answer.into_message());
        if accepted {
            self.assigned_by.insert(key, a.matchmaker);
        }
        if let Some(op) = &mut self.op {
            op.answered.insert(key, envelope.clone());
        }
        Some(envelope)
    }

    fn mm_tick(&mut self) {
        let now = self.sh.now();
        if let Some(decisions) = self.mm.as_mut().map(|m| m.tick(&self.sh, now)) {
            self.act(decisions);
        }
    }

    /// Carry out the matchmaker's decisions. Assignments wait for the end of the batch
    /// ([`Core::unsent`]); a cancellation goes out after the assignments decided before it.
    fn act(&mut self, decisions: Vec<proofmesh_matchmaker::Decision>) {
        for decision in decisions {
            let Some(message) = super::matchmaking::decision_message(self, decision) else {
                continue;
            };
            let message = match message {
                Message::Assignment(a) => {
                    self.unsent.push(a);
                    continue;
                }
                Message::Verdict(v) => {
                    let me = self.sh.me;
                    self.on_message(me, Message::Verdict(v.clone()), Origin::Local);
                    self.unsigned_verdicts.push(v);
                    continue;
                }
                message => message,
            };
            let direct_to = match &message {
                Message::Cancel(c) => {
                    self.send_verdicts();
                    self.send_assignments();
                    Some(c.operator)
                }
                _ => None,
            };
            let envelope = self.emit(message);
            if let Some(to) = direct_to {
                if to != self.sh.me {
                    self.send_direct(&to, envelope);
                }
            }
        }
    }

    /// Sign and send the [`Core::unsent`] assignments, those to one operator together (up to
    /// [`MAX_BATCH`] under one signature, in the order decided: a task that runs now ahead of
    /// a queued one), behind one push of their inputs ([`Core::push_inputs`]).
    fn send_assignments(&mut self) {
        // Applying a batch here can decide more (this node's own operator answers it at once).
        while !self.unsent.is_empty() {
            let assignments = std::mem::take(&mut self.unsent);
            self.send_assignment_groups(assignments);
        }
    }

    /// Sign and gossip the [`Core::unsigned_verdicts`], up to [`MAX_BATCH`] under one
    /// signature: standby matchmakers and gateways check one envelope per batch, not per task.
    fn send_verdicts(&mut self) {
        let verdicts = std::mem::take(&mut self.unsigned_verdicts);
        for batch in batches(verdicts) {
            let message = one_or_many(batch, Message::Verdict, Message::Verdicts);
            let envelope = self.seal(&message);
            self.seen.insert(&envelope);
            let publish = self.sh.publish.clone();
            self.after_commit(move || {
                let _ = publish.send((envelope, None));
            });
        }
    }

    /// Each operator's envelopes leave at once ([`Leave::Now`], see the module's doc), each
    /// connection keeping the order they were decided in.
    fn send_assignment_groups(&mut self, assignments: Vec<Assignment>) {
        let mut groups: Vec<Vec<Assignment>> = Vec::new();
        let mut group_of: HashMap<PublicKey, usize> = HashMap::new();
        for a in assignments {
            let i = *group_of.entry(a.operator).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[i].push(a);
        }
        // Submissions that follow their tasks' definitions, sent once every operator has its
        // assignments: in a first wave, each operator starts before any of them takes in a
        // whole workflow.
        let mut following: Vec<(PublicKey, WorkflowId)> = Vec::new();
        for group in groups {
            let operator = group[0].operator;
            let remote = operator != self.sh.me;
            let carried = if remote {
                self.push_inputs(operator, &group)
            } else {
                Carried::default()
            };
            following.extend(carried.following.into_iter().map(|id| (operator, id)));
            let mut inputs = carried.inputs;
            for batch in batches(group) {
                // The first message carries the inputs that were not pushed on their own;
                // every one carries its tasks' definitions when they are carried.
                let tasks = if carried.define {
                    self.definitions(&batch)
                } else {
                    Vec::new()
                };
                let (message, attached) = match inputs.take() {
                    Some((inputs, attached)) => (
                        Message::Dispatch(Dispatch {
                            inputs,
                            assignments: batch,
                            tasks,
                        }),
                        attached,
                    ),
                    None if !tasks.is_empty() => (
                        Message::Dispatch(Dispatch {
                            inputs: Vec::new(),
                            assignments: batch,
                            tasks,
                        }),
                        Vec::new(),
                    ),
                    None => (
                        one_or_many(batch, Message::Assignment, Message::Assignments),
                        Vec::new(),
                    ),
                };
                let envelope = self.emit(message);
                if remote {
                    self.send_direct_attached(&operator, envelope, attached, Leave::Now);
                }
            }
        }
        for (operator, id) in following {
            // Not readable from the store now (`None`): a later assignment tries again.
            let Some(push) = self.submission_push_to(operator, &id) else {
                continue;
            };
            if let Some(envelope) = push {
                self.send_direct_attached(&operator, envelope, Vec::new(), Leave::Now);
            }
        }
    }

    /// The definitions of `batch`'s tasks, in its order (see [`Dispatch::tasks`]); none if
    /// one is missing (not reached: the matchmaker assigns only tasks of workflows it holds).
    fn definitions(&self, batch: &[Assignment]) -> Vec<proofmesh_protocol::Task> {
        batch
            .iter()
            .map(|a| {
                let workflow = self.view.workflows.get(&a.workflow)?;
                workflow.tasks.get(a.task as usize).cloned()
            })
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default()
    }

    /// Send `operator` what it needs to start the tasks of `assignments`, just ahead of them
    /// (same connection, sent first): a workflow's submission the first time (gossip may not
    /// have brought it yet, and an operator waits for it before running anything), and the
    /// accepted results of the tasks' dependencies (operators follow no verdicts on gossip,
    /// `Topic::OPERATOR`). Those results are returned to travel in the assignments' own
    /// envelope ([`Message::Dispatch`]) when they fit in one message, else pushed here in as
    /// many as they need. A result missing here (not accepted yet, so the task would not be
    /// ready) is left to the operator's catch-up. Nothing already sent to this operator is
    /// sent again: forgotten when the connection drops or a direct send to it fails, since it
    /// may not have arrived.
    ///
    /// An operator that trusts this matchmaker (its advert says so) needs a workflow only to
    /// keep the accepted results its tasks take, so its tasks travel with their definitions
    /// ([`Carried::define`]) wherever it does not hold their workflow yet. The submission of a
    /// workflow with dependencies goes just ahead of assignments that carry inputs, or else
    /// follows the first ones (it arrives while they run, before any input is due); that of a
    /// workflow of independent tasks is never sent (32 operators taking in a 512-task workflow
    /// was half of a first wave, bench/e2e.md). Each is decided once per connection.
    fn push_inputs(&mut self, operator: PublicKey, assignments: &[Assignment]) -> Carried {
        let mut chunks: Vec<Vec<SignedResult>> = vec![Vec::new()];
        let mut budget = catch_up::REPLY_BUDGET;
        let trusted = self.trusted_by.contains(&operator);
        let mut carried = Carried::default();
        // Workflows new to an operator that trusts us, and whether any of their tasks has
        // dependencies (decided below, once the inputs are known).
        let mut new: Vec<(WorkflowId, bool)> = Vec::new();
        // Submissions to send ahead of everything else.
        let mut ahead: Vec<Envelope> = Vec::new();
        for a in assignments {
            let Some(workflow) = self.view.workflows.get(&a.workflow) else {
                continue;
            };
            let Some(deps) = workflow.tasks.get(a.task as usize).map(|t| t.deps.clone()) else {
                continue;
            };
            let pushed = self.pushed.entry(operator).or_default();
            if pushed.contains(&(a.workflow, WHOLE_WORKFLOW)) {
                // Held (or on its way) already.
            } else if pushed.contains(&(a.workflow, DEFINITIONS_ONLY)) {
                carried.define = true;
            } else if trusted {
                if !new.iter().any(|(id, _)| *id == a.workflow) {
                    let has_deps = workflow.tasks.iter().any(|t| !t.deps.is_empty());
                    new.push((a.workflow, has_deps));
                }
            } else if let Some(push) = self.submission_push_to(operator, &a.workflow) {
                ahead.extend(push);
            }
            let pushed = self.pushed.entry(operator).or_default();
            for dep in deps {
                if pushed.contains(&(a.workflow, dep)) {
                    continue;
                }
                let result = match self.sh.store.result(&a.workflow, dep) {
                    Ok(Some(r)) => {
                        pushed.insert((a.workflow, dep));
                        r
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading a dependency's result failed");
                        continue;
                    }
                };
                let size = proofmesh_protocol::encoding::encode(&result).len();
                if size > budget {
                    chunks.push(Vec::new());
                    budget = catch_up::REPLY_BUDGET;
                }
                budget = budget.saturating_sub(size);
                chunks.last_mut().expect("one chunk at least").push(result);
            }
        }
        let no_inputs = chunks.len() == 1 && chunks[0].is_empty();
        for (id, has_deps) in new {
            if !has_deps {
                self.pushed
                    .entry(operator)
                    .or_default()
                    .insert((id, DEFINITIONS_ONLY));
                carried.define = true;
                continue;
            }
            // With inputs, the submission goes first: they are kept only for a workflow held.
            // Without, it follows, sealed (and marked pushed) only once the assignments left:
            // sealing a 1,025-task submission took ~1.4 ms ahead of a pipeline's first task.
            if no_inputs {
                if self.view.workflows.get(&id).is_none() {
                    continue;
                }
                carried.define = true;
                carried.following.push(id);
                continue;
            }
            let Some(push) = self.submission_push_to(operator, &id) else {
                continue;
            };
            ahead.extend(push);
        }
        for envelope in ahead {
            self.send_direct_attached(&operator, envelope, Vec::new(), Leave::Now);
        }
        // Small outputs ride along, so the operator need not fetch its inputs (from the
        // operators that made them, often another one); its own it has already.
        let attachable = |core: &Self, accepted: &[SignedResult]| -> Vec<Vec<u8>> {
            accepted
                .iter()
                .filter(|r| r.result.operator != operator)
                .filter_map(|r| core.attachable_output(r))
                .collect()
        };
        // All of them in one chunk (the usual case): they ride in the assignments' own
        // envelope, a `Message::Dispatch`.
        if chunks.len() == 1 {
            let accepted = chunks.pop().unwrap_or_default();
            if !accepted.is_empty() {
                let outputs = attachable(self, &accepted);
                carried.inputs = Some((accepted, outputs));
            }
            return carried;
        }
        for accepted in chunks {
            if accepted.is_empty() {
                continue;
            }
            let outputs = attachable(self, &accepted);
            let mut workflows: Vec<SyncUpdate> = Vec::new();
            for result in accepted {
                let workflow = result.result.workflow;
                match workflows.iter_mut().find(|u| u.workflow == workflow) {
                    Some(update) => update.accepted.push(result),
                    None => workflows.push(SyncUpdate {
                        workflow,
                        accepted: vec![result],
                        failed: None,
                        completed: false,
                        vouched: Vec::new(),
                        pruned: false,
                    }),
                }
            }
            let push = Message::SyncReply(SyncReply {
                workflows,
                submissions: Vec::new(),
                more: false,
            });
            let envelope = self.seal(&push);
            self.send_direct_attached(&operator, envelope, outputs, Leave::Now);
        }
        carried
    }

    /// [`Self::submission_push`], marked as pushed to `operator` when the store holds it.
    /// Decided once per connection: a workflow too big to push (`Some(None)`) travels to it by
    /// gossip and catch-up only.
    fn submission_push_to(
        &mut self,
        operator: PublicKey,
        id: &WorkflowId,
    ) -> Option<Option<Envelope>> {
        let push = self.submission_push(id)?;
        self.pushed
            .entry(operator)
            .or_default()
            .insert((*id, WHOLE_WORKFLOW));
        Some(push)
    }

    /// The push of a workflow's submission: `None` when the store does not hold it,
    /// `Some(None)` when it is too big to push. One sealed envelope serves every operator
    /// (it names no recipient, and each node takes a `(sender, nonce)` once): reading,
    /// encoding and signing a 512-task submission again for each of 32 operators cost the
    /// matchmaker ~0.9 ms apiece in the batch that assigns the first wave.
    fn submission_push(&mut self, id: &WorkflowId) -> Option<Option<Envelope>> {
        let now = self.sh.now();
        if let Some((cached, envelope)) = &self.submission_push {
            // Resealed once half its lifetime is gone, so no receiver finds it expired.
            let fresh = envelope
                .as_ref()
                .is_none_or(|e| e.expires_at_ms.saturating_sub(now) > self.sh.ttl_ms / 2);
            if cached == id && fresh {
                return Some(envelope.clone());
            }
        }
        let record = self.sh.store.workflow(id).ok().flatten()?;
        let push = Message::SyncReply(SyncReply {
            workflows: Vec::new(),
            submissions: vec![record.submission],
            more: false,
        });
        let envelope = self.seal(&push);
        let envelope = (envelope.payload.len() <= catch_up::REPLY_BUDGET).then_some(envelope);
        self.submission_push = Some((*id, envelope.clone()));
        Some(envelope)
    }

    // ---- catch-up sync (see `catch_up`) ---------------------------------------------------------

    /// Ask peers about the workflows that have been quiet too long, and now and then which
    /// active workflows this node has never heard of.
    fn catch_up(&mut self) {
        let now = self.sh.now();
        let wants = self.view.catch_up_wants(now);
        let discover = self.connected > 0
            && self.wants_discovery()
            && self
                .last_discovery
                .is_none_or(|t| now.saturating_sub(t) >= catch_up::DISCOVER_EVERY);
        if wants.is_empty() && !discover {
            return;
        }
        let known_active = discover.then(|| {
            self.last_discovery = Some(now);
            self.view.active_ids(catch_up::MAX_KNOWN_ACTIVE)
        });
        let message = Message::SyncRequest(SyncRequest {
            workflows: wants,
            known_active,
        });
        let envelope = self.seal(&message);
        let matchmakers = self.matchmakers.clone();
        let operators = self.advertised.clone();
        let round = self.catch_up_round;
        self.catch_up_round += 1;
        self.sh.metrics.catch_up_requests.inc();
        let sh = self.sh.clone();
        self.sh.spawn(async move {
            let Ok(peers) = sh.client.peers().await else {
                return;
            };
            for peer in catch_up_peers(peers, &matchmakers, &operators, round) {
                let answer = sh.client.send_direct_in_order(peer, &envelope, Vec::new());
                let answered = direct(answer, sh.internal.clone(), peer);
                sh.spawn(async move {
                    answered.await;
                });
            }
        });
    }

    /// Whether this node looks for active workflows it has never heard of. A node that only
    /// operates needs a workflow only to run its tasks, and its matchmaker sends that with
    /// their assignments (or their definitions instead): it discovers only while an attempt
    /// still waits for one. Otherwise each fetched, decoded and stored every active workflow
    /// every few seconds (operators took in a 512-task workflow 8 times during one
    /// `bench scaling`, bench/e2e.md).
    fn wants_discovery(&self) -> bool {
        match &self.op {
            Some(op) if self.mm.is_none() && self.view.is_polled() => {
                op.awaits_a_workflow(&self.view)
            }
            _ => true,
        }
    }

    /// A peer's answer: its accepted results go through the same path as gossiped verdicts
    /// (operator signature checked, one result per task), a failure through the view.
    fn caught_up(&mut self, from: PublicKey, reply: SyncReply) {
        for submission in reply.submissions {
            let id = submission.workflow.id();
            // An answer may carry one this node finished meanwhile (it lists active ones only).
            if self.view.workflows.get(&id).is_none() {
                tracing::info!(workflow = %id.short(), peer = %from, "discovered a workflow gossip missed");
            }
            self.on_message(from, Message::Submission(submission), Origin::Remote);
            // Whatever happened to it since: ask at the next round.
            self.view.catch_up_soon(&id);
        }
        for update in reply.workflows {
            let id = update.workflow;
            let before = self.view.done(&id);
            for statement in update.vouched {
                self.take_statement(from, statement);
            }
            let vouched = self.view.done(&id).saturating_sub(before);
            let learned = vouched + self.take_accepted(from, &id, update.accepted);
            if learned > 0 {
                self.sh.metrics.caught_up_results.inc_by(learned as u64);
                tracing::info!(workflow = %id.short(), learned, peer = %from, "caught up on results gossip missed");
            }
            // A matchmaker pruned it: it ended and was settled long ago, and the results this
            // node lacks are gone.
            let pruned_there = update.pruned && self.matchmakers.contains(&from);
            if pruned_there && (update.completed || update.failed.is_some()) {
                self.ended_elsewhere(&id, update.completed);
            }
            // A failure is a matchmaker's decision: taken only from one heard announcing (and
            // trusted), as if gossiped, so this node's matchmaker learns it too.
            if let Some(reason) = update.failed.filter(|_| self.matchmakers.contains(&from)) {
                let failure = WorkflowFailure {
                    workflow: id,
                    matchmaker: from,
                    reason,
                };
                self.on_message(from, Message::WorkflowFailed(failure), Origin::Remote);
            }
            // An outcome-only view (operator-only node) takes completion from a matchmaker's
            // word; a full view completes by holding every result itself, unless the
            // matchmaker pruned the workflow: a gateway or matchmaker that was down meanwhile
            // would show it active and ask about it for good.
            let outcome_only = self.view.is_polled() || update.pruned;
            if update.completed && outcome_only && self.matchmakers.contains(&from) {
                self.view.completed(&self.sh, &self.progress, &id);
            }
            if reply.more {
                self.view.catch_up_soon(&id);
            }
        }
    }

    /// A workflow a matchmaker ended and pruned while this node was down (longer than the
    /// retention period). That one settled it before pruning it (a node that settles keeps a
    /// workflow until its settlement is journaled done), so this node journals its settlement
    /// done too, and its matchmaker, if any, ends a completed one without a word rather than
    /// run again the tasks whose results are gone (a failed one ends there with the failure
    /// that follows). The view takes how it ended next.
    fn ended_elsewhere(&mut self, id: &WorkflowId, completed: bool) {
        if !self.view.tracks(id) {
            return;
        }
        let now = self.sh.now();
        if let Err(e) = self.sh.store.mark_chain_done(id, now) {
            tracing::warn!(error = %e, "journaling a pruned workflow's settlement failed");
        }
        tracing::info!(workflow = %id.short(), "a matchmaker ended and pruned this workflow while this node was down");
        if !completed {
            return;
        }
        if let Some(decisions) = self
            .mm
            .as_mut()
            .map(|m| m.ended_elsewhere(&self.sh, *id, now))
        {
            self.act(decisions);
        }
    }

    /// A trusted matchmaker's signed statement of accepted results that `from` relayed
    /// ([`SyncUpdate::vouched`]): taken as that matchmaker's own decisions, as if gossip had
    /// brought it however long ago it was signed, and kept to relay on where this node keeps
    /// such statements. One signed by a key whose decisions do not count here is ignored like
    /// any such decision.
    fn take_statement(&mut self, from: PublicKey, statement: Envelope) {
        let message = match statement.open_statement(self.sh.domain) {
            Ok(message) if catch_up::accepted_by(&message).is_some() => message,
            Ok(message) => {
                tracing::debug!(peer = %from, kind = ?message.kind(), "dropping a relayed statement that accepts no results");
                return;
            }
            Err(e) => {
                tracing::debug!(peer = %from, error = %e, "dropping a relayed statement that does not open");
                return;
            }
        };
        self.keep_vouch(&statement, &message);
        let signer = statement.sender;
        match message {
            // Its accepted results only: what else it said was for the node it answered.
            Message::SyncReply(reply) if self.sh.trusts_matchmaker(&signer) => {
                for update in reply.workflows {
                    self.take_accepted(signer, &update.workflow, update.accepted);
                }
            }
            Message::SyncReply(_) => {
                self.sh.metrics.untrusted_decisions.inc();
            }
            verdicts => {
                self.on_message(signer, verdicts, Origin::Remote);
            }
        }
    }

    /// Keep a trusted matchmaker's signed statement of accepted results (`Store::keep_vouch`)
    /// where this node relays what matchmakers decided: a gateway (a full view without a
    /// matchmaker role; a matchmaker's answer is its own word), on a network whose matchmakers
    /// are listed (elsewhere anyone's word counts already). Only for workflows it shows active,
    /// or has not heard of yet: a finished one is not taken over.
    fn keep_vouch(&self, statement: &Envelope, message: &Message) {
        if self.mm.is_some()
            || self.view.is_polled()
            || statement.sender == self.sh.me
            || !self.sh.configured_to_trust(&statement.sender)
        {
            return;
        }
        let Some(accepted) = catch_up::accepted_by(message) else {
            return;
        };
        let mut workflows: Vec<WorkflowId> = accepted.into_iter().map(|(w, _)| w).collect();
        workflows.sort();
        workflows.dedup();
        workflows
            .retain(|id| self.view.tracks(id) || !self.sh.store.has_workflow(id).unwrap_or(true));
        if workflows.is_empty() {
            return;
        }
        if let Err(e) = self.sh.store.lazy().keep_vouch(&workflows, statement) {
            tracing::warn!(error = %e, "keeping a matchmaker's verdicts to relay failed");
        }
    }

    /// A matchmaker's push of an assigned task's dependency results (see `push_inputs`):
    /// taken like a catch-up answer's results, but not counted as something gossip missed.
    fn inputs_pushed(&mut self, from: PublicKey, push: SyncReply) {
        for submission in push.submissions {
            self.on_message(from, Message::Submission(submission), Origin::Remote);
        }
        for update in push.workflows {
            self.take_inputs(from, update.accepted);
        }
    }

    /// Accepted results a matchmaker sent as inputs of tasks it assigns here (a push, or a
    /// [`Message::Dispatch`]'s), taken like a catch-up answer's results.
    ///
    /// A node that only operates takes them on the word of a matchmaker it was configured to
    /// trust, which checked each operator's signature before accepting the result: checking
    /// it again here was ~2% of a pipeline's CPU (every input made by another operator). The
    /// output bytes are still checked against the result's hash. Nodes that keep the market's
    /// record (matchmakers, gateways) check every signature.
    fn take_inputs(&mut self, from: PublicKey, results: Vec<SignedResult>) {
        if self.view.is_polled() && self.sh.configured_to_trust(&from) {
            for result in &results {
                self.sh.verified_results.insert_unchecked(result);
            }
        }
        // One workflow's results at a time (in practice there is one).
        let mut results = results.into_iter().peekable();
        while let Some(first) = results.next() {
            let workflow = first.result.workflow;
            let mut run = vec![first];
            while let Some(next) = results.next_if(|r| r.result.workflow == workflow) {
                run.push(next);
            }
            self.take_accepted(from, &workflow, run);
        }
    }

    /// Accepted results from a peer, through the same path as gossiped verdicts (operator
    /// signature checked, one result per task); how many were new. A peer that is not a
    /// trusted matchmaker may answer catch-up too (with submissions): its word on which
    /// results were accepted is not taken, quietly (it is no attack).
    fn take_accepted(
        &mut self,
        from: PublicKey,
        id: &WorkflowId,
        results: Vec<proofmesh_protocol::messages::SignedResult>,
    ) -> usize {
        if !results.is_empty() && !self.sh.trusts_matchmaker(&from) {
            // Nobody vouches for their acceptance: a matchmaker checks them itself (the one
            // left after the active one died learns that one's results only this way).
            match self.mm.as_mut() {
                Some(m) => m.relayed(&self.sh, &self.view, results, self.sh.now()),
                None => {
                    tracing::debug!(peer = %from, "not taking accepted results from a peer that is not a trusted matchmaker")
                }
            }
            return 0;
        }
        let before = self.view.done(id);
        for result in results {
            self.on_message(
                from,
                Message::Verdict(Verdict::Accepted(result)),
                Origin::Remote,
            );
        }
        self.view.done(id).saturating_sub(before)
    }

    fn heartbeat(&mut self) {
        let running = self.op.as_ref().map(|o| o.running()).unwrap_or_default();
        let hb = Heartbeat {
            operator: self.sh.me,
            at_ms: self.sh.now(),
            running,
        };
        self.emit(Message::Heartbeat(hb));
    }

    fn advert(&mut self) {
        let Some(advert) = self.own_advert() else {
            return;
        };
        self.last_advert = Some(Instant::now());
        self.emit(Message::OperatorAdvert(advert));
    }

    /// Send this operator's advert straight to `peer`, which has just connected. Gossip reaches
    /// a new peer only once its subscriptions are known, so the advert gossiped on connecting
    /// can miss it, and a matchmaker back from a crash would know this operator only at the
    /// next period (10 s): meanwhile it gives it no task, and cannot take the results this
    /// operator delivered to the matchmaker that died (a catch-up's relayed results count only
    /// from operators it knows, `MatchmakerRole::relayed`).
    fn advert_to(&mut self, peer: PublicKey) {
        let Some(advert) = self.own_advert() else {
            return;
        };
        let envelope = self.seal(&Message::OperatorAdvert(advert));
        self.seen.insert(&envelope);
        self.send_direct(&peer, envelope);
    }

    /// This operator's advert as of now (`None` when the node does not operate).
    fn own_advert(&self) -> Option<OperatorAdvert> {
        let op = self.op.as_ref()?;
        Some(OperatorAdvert {
            operator: self.sh.me,
            eth_address: op.opts.eth_address,
            capacity: op.operator.capacity().clone(),
            programs: op.operator.programs(),
            price_wei: op.opts.price_wei,
            queue: u32::try_from(op.operator.leases().queue_depth()).unwrap_or(u32::MAX),
            max_tasks: u32::try_from(op.operator.leases().max_tasks()).unwrap_or(u32::MAX),
            trusts: self
                .sh
                .trusted_matchmakers
                .as_ref()
                .map(|keys| {
                    let mut keys: Vec<PublicKey> = keys.iter().copied().collect();
                    keys.sort();
                    keys
                })
                .unwrap_or_default(),
        })
    }

    fn announce(&mut self) {
        let now = self.sh.now();
        self.emit(Message::MatchmakerAnnounce(MatchmakerAnnounce {
            matchmaker: self.sh.me,
            at_ms: now,
        }));
        if let Some(decisions) = self.mm.as_mut().map(|m| m.refresh_live(&self.sh, now)) {
            self.act(decisions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_up_asks_matchmakers_first_and_rotates() {
        let keys: Vec<PublicKey> = (0..4).map(|_| Keypair::generate().public()).collect();
        let peers: Vec<network::PeerId> = keys.iter().filter_map(network::peer_id_of).collect();
        let mm: HashSet<PublicKey> = [keys[2]].into_iter().collect();
        let mm_peer = network::peer_id_of(&keys[2]).expect("ed25519 key");
        let none = HashSet::new();
        let mut seconds = HashSet::new();
        for round in 0..6 {
            let asked = catch_up_peers(peers.clone(), &mm, &none, round);
            assert_eq!(asked.len(), CATCH_UP_PEERS);
            assert_eq!(asked[0], mm_peer, "round {round}: the matchmaker first");
            seconds.insert(asked[1]);
        }
        assert_eq!(
            seconds.len(),
            3,
            "the second question rotates over the other peers"
        );
        assert!(catch_up_peers(Vec::new(), &mm, &none, 0).is_empty());
    }

    #[test]
    fn catch_up_asks_operators_only_after_every_other_peer() {
        let keys: Vec<PublicKey> = (0..4).map(|_| Keypair::generate().public()).collect();
        let peers: Vec<network::PeerId> = keys.iter().filter_map(network::peer_id_of).collect();
        // keys[0] is a gateway; the other three only operate.
        let operators: HashSet<PublicKey> = keys[1..].iter().copied().collect();
        let gateway = network::peer_id_of(&keys[0]).expect("ed25519 key");
        for round in 0..6 {
            let asked = catch_up_peers(peers.clone(), &HashSet::new(), &operators, round);
            assert_eq!(asked.len(), CATCH_UP_PEERS);
            assert_eq!(asked[0], gateway, "round {round}: the full node first");
        }
    }
}
