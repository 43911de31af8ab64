//! [`ChainSettlement`]: the matchmaker's on-chain side. The core loop hands it ended workflows
//! and slashing evidence; one background task turns them into transactions, one at a time (one
//! account, one nonce sequence), retrying transient errors.
//!
//! A workflow that ended is paid for the work accepted on it, completed or not (a failed
//! workflow's accepted tasks were honest work), and its escrow is then released: what is left
//! is credited to the requester at once instead of waiting for the escrow's deadline.
//!
//! Idempotent by construction: before paying, it reads `paidAttempt` for every task and skips
//! what is paid already (by this node before a restart, or by another matchmaker after a
//! failover); the contract itself pays a task at most once and uses each piece of evidence once.
//!
//! Nothing completed is left unpaid by a crash: the queue lives in memory, but what it is done
//! with is journaled in the store ([`Store::mark_chain_done`]). On start, and every
//! [`RESCAN`] after, every ended workflow and stored piece of evidence not journaled is
//! queued again (a matchmaker killed between a workflow's completion and its settle
//! transaction pays after its restart; a job that failed is retried).

use super::identity::{acceptance_of, calldata, proof_claim_of};
use super::retry::with_retry;
use crate::runtime::Settlement;
use crate::store::Store;
use crate::store::WorkflowState;
use proofmesh_chain::{
    workflow_key, Address, ChainError, MarketClient, OperatorPayout, SignedAcceptance,
};
use proofmesh_matchmaker::SlashEvidence;
use proofmesh_protocol::encoding;
use proofmesh_protocol::{ContentId, PublicKey, TaskIndex, WorkflowId};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most task lines per `settle` transaction (keeps each under the block gas limit).
pub const MAX_TASKS_PER_TX: usize = 256;

/// How long a missed-deadline report waits for block time to pass the signed deadline.
const DEADLINE_WAIT: Duration = Duration::from_secs(120);

/// How often the store is scanned for settlement not journaled as done.
pub const RESCAN: Duration = Duration::from_secs(30);

/// Tries per job before it is given up (journaled done, with an error in the log).
const MAX_TRIES: u32 = 5;

/// FAULT INJECTION, for the crash-before-settlement test only: when this environment variable
/// is set, the settler journals and sends nothing, as if the node died before settling.
pub const HOLD_ENV: &str = "PROOFMESH_FAULT_HOLD_SETTLEMENT";

enum Job {
    /// Pay the workflow's accepted work; then, with `release`, close its escrow so the rest
    /// goes back to the requester at once.
    Settle {
        workflow: WorkflowId,
        release: bool,
    },
    Slash(Box<SlashEvidence>),
}

impl Job {
    /// The journal key: the workflow id, or the evidence's content id (as the store keeps it).
    fn key(&self) -> ContentId {
        match self {
            Job::Settle { workflow, .. } => *workflow,
            Job::Slash(ev) => ContentId::of_bytes(&encoding::encode(ev.as_ref())),
        }
    }
}

/// Settlement on a ProofMarket. Cheap to call from the core loop: it only queues work.
pub struct ChainSettlement {
    jobs: mpsc::UnboundedSender<Job>,
    store: std::sync::Mutex<Option<oneshot::Sender<Store>>>,
}

impl std::fmt::Debug for ChainSettlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainSettlement").finish_non_exhaustive()
    }
}

impl ChainSettlement {
    /// Starts the settling task (on the current tokio runtime). It waits for the node's store
    /// ([`Self::attach_store`]) before it handles anything.
    pub fn spawn(client: MarketClient) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        let (store_tx, store_rx) = oneshot::channel();
        tokio::spawn(async move {
            let Ok(store) = store_rx.await else { return };
            run(client, store, rx).await;
        });
        ChainSettlement {
            jobs,
            store: std::sync::Mutex::new(Some(store_tx)),
        }
    }

    /// Hands over the node's store (opened by the node itself).
    pub fn attach_store(&self, store: Store) {
        if let Some(tx) = self
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = tx.send(store);
        }
    }
}

impl Settlement for ChainSettlement {
    fn slash(&self, evidence: &SlashEvidence) {
        let _ = self.jobs.send(Job::Slash(Box::new(evidence.clone())));
    }

    fn workflow_completed(&self, workflow: &WorkflowId, _outputs: &[(TaskIndex, ContentId)]) {
        let _ = self.jobs.send(Job::Settle {
            workflow: *workflow,
            release: true,
        });
    }

    fn settles_on_chain(&self) -> bool {
        true
    }

    fn workflow_failed(&self, workflow: &WorkflowId) {
        // This matchmaker failed it as the active one: it holds every result it accepted.
        let _ = self.jobs.send(Job::Settle {
            workflow: *workflow,
            release: true,
        });
    }
}

async fn run(client: MarketClient, store: Store, mut rx: mpsc::UnboundedReceiver<Job>) {
    if std::env::var_os(HOLD_ENV).is_some() {
        tracing::warn!("{HOLD_ENV} is set (fault injection): settling nothing");
        while rx.recv().await.is_some() {}
        return;
    }
    let mut queue = Queue::default();
    let mut tries: HashMap<ContentId, u32> = HashMap::new();
    let mut first_scan = true;
    let mut unsettled_before: HashSet<ContentId> = HashSet::new();
    let mut rescan = tokio::time::interval(RESCAN);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while let Ok(job) = rx.try_recv() {
            queue.push(job);
        }
        if let Some(job) = queue.jobs.pop_front() {
            let key = job.key();
            let (what, outcome) = match job {
                Job::Settle { workflow, release } => (
                    "settle",
                    settle_workflow(&client, &store, &workflow, release).await,
                ),
                Job::Slash(ev) => ("slash", slash(&client, &store, &ev).await),
            };
            queue.queued.remove(&key);
            let done = match outcome {
                Ok(()) => true,
                Err(e) => {
                    let n = tries.entry(key).or_default();
                    *n += 1;
                    tracing::error!(job = what, error = %e, tries = *n, "on-chain settlement failed");
                    *n >= MAX_TRIES
                }
            };
            if done {
                tries.remove(&key);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                if let Err(e) = store.mark_chain_done(&key, now) {
                    tracing::error!(error = %e, "cannot journal settlement as done");
                }
            }
            continue;
        }
        tokio::select! {
            job = rx.recv() => match job {
                Some(job) => queue.push(job),
                None => return,
            },
            // The first tick is immediate: the backlog a restart left is queued at once. Later
            // scans queue only what was already unsettled at the scan before, so a workflow
            // another matchmaker is settling right now is left to it.
            _ = rescan.tick() => match backlog(&store) {
                Ok(jobs) => {
                    let keys: HashSet<ContentId> = jobs.iter().map(Job::key).collect();
                    let due: Vec<Job> = jobs
                        .into_iter()
                        .filter(|j| first_scan || unsettled_before.contains(&j.key()))
                        .collect();
                    if !due.is_empty() {
                        tracing::info!(jobs = due.len(), "settlement not journaled as done: queued again");
                    }
                    for job in due {
                        queue.push(job);
                    }
                    unsettled_before = keys;
                    first_scan = false;
                }
                Err(e) => tracing::error!(error = %e, "cannot scan the store for unsettled work"),
            },
        }
    }
}

/// Jobs in order, each at most once.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    queued: HashSet<ContentId>,
}

impl Queue {
    fn push(&mut self, job: Job) {
        if self.queued.insert(job.key()) {
            self.jobs.push_back(job);
        }
    }
}

/// Ended workflows and stored evidence whose settlement is not journaled as done.
///
/// A completed workflow's escrow is released after its payment: every node that holds it
/// completed holds every task's result, so whoever settles it pays all of them first. A failed
/// one is paid for what this node holds, but released only by the matchmaker that failed it
/// ([`Store::mark_release_owed`]): a node that learned of the failure may lack a result the
/// failing matchmaker accepted, and closing the escrow would leave that work unpaid for good.
fn backlog(store: &Store) -> Result<Vec<Job>, crate::store::StoreError> {
    let done = store.chain_done_ids()?;
    let owed = store.release_owed()?;
    let mut jobs = Vec::new();
    for (id, state) in store.workflows()? {
        if done.contains(&id) {
            continue;
        }
        match state {
            WorkflowState::Completed => jobs.push(Job::Settle {
                workflow: id,
                release: true,
            }),
            WorkflowState::Failed { .. } => jobs.push(Job::Settle {
                workflow: id,
                release: owed.contains(&id),
            }),
            _ => {}
        }
    }
    for (id, bytes) in store.evidence()? {
        if done.contains(&id) {
            continue;
        }
        match encoding::decode::<SlashEvidence>(&bytes) {
            Ok(ev) => jobs.push(Job::Slash(Box::new(ev))),
            Err(e) => {
                tracing::error!(evidence = %id.short(), error = %e, "undecodable slashing evidence in the store")
            }
        }
    }
    Ok(jobs)
}

/// The Ethereum address and price an operator advertised.
fn operator_terms(store: &Store, key: &PublicKey) -> Result<Option<(Address, u128)>, String> {
    let rec = store.operator(key).map_err(|e| e.to_string())?;
    Ok(rec
        .and_then(|r| r.advert)
        .and_then(|a| a.eth_address.map(|e| (Address::from(e), a.price_wei))))
}

/// Pays every task's accepted attempt of `wf` that is not paid yet, per operator, in batches;
/// then, with `release`, closes the escrow (the rest is credited to the requester). An escrow
/// another settler closed already is done.
pub async fn settle_workflow(
    client: &MarketClient,
    store: &Store,
    wf: &WorkflowId,
    release: bool,
) -> Result<(), String> {
    let Some(record) = store.workflow(wf).map_err(|e| e.to_string())? else {
        return Err(format!("workflow {} is not in the store", wf.short()));
    };
    let Some(escrow) = record.submission.escrow.clone() else {
        tracing::info!(workflow = %wf.short(), "no escrow: nothing to settle on-chain");
        return Ok(());
    };
    if Address::from(escrow.contract) != client.address() || escrow.chain_id != client.chain_id() {
        tracing::warn!(workflow = %wf.short(), "escrow is on another market; not settling it");
        return Ok(());
    }
    let key = workflow_key(wf);
    let me = client.account();
    if !with_retry("isSettler", || client.is_settler(key, me))
        .await
        .map_err(|e| e.to_string())?
    {
        tracing::warn!(workflow = %wf.short(), account = %me, "this matchmaker is not a settler of the escrow; leaving payment to one that is");
        return Ok(());
    }
    let mut lines: BTreeMap<Address, OperatorPayout> = BTreeMap::new();
    // Final proofs: the results whose operator signed an on-chain claim for them.
    let mut finals = Vec::new();
    for (task, result) in store.results(wf).map_err(|e| e.to_string())? {
        if result.eth_claim.is_some() {
            finals.push(result.clone());
        }
        let paid = with_retry("paidAttempt", || client.paid_attempt(key, task))
            .await
            .map_err(|e| e.to_string())?;
        if (1..=254).contains(&paid) {
            continue; // paid already: by us before a restart, or by another matchmaker
        }
        let r = &result.result;
        let Some((operator, price)) = operator_terms(store, &r.operator)? else {
            tracing::warn!(task, operator = %r.operator, "operator advertised no Ethereum address; its task is not paid on-chain");
            continue;
        };
        let line = lines.entry(operator).or_insert_with(|| OperatorPayout {
            operator,
            amount: 0,
            tasks: Vec::new(),
        });
        line.amount += price;
        line.tasks.push((task, r.attempt));
    }
    // Split into transactions of at most MAX_TASKS_PER_TX tasks, whole operators where possible.
    let mut batches: Vec<Vec<OperatorPayout>> = vec![Vec::new()];
    let mut in_batch = 0;
    for line in lines.into_values() {
        let price_each = line.amount / line.tasks.len().max(1) as u128;
        for chunk in line.tasks.chunks(MAX_TASKS_PER_TX) {
            if in_batch + chunk.len() > MAX_TASKS_PER_TX {
                batches.push(Vec::new());
                in_batch = 0;
            }
            in_batch += chunk.len();
            if let Some(b) = batches.last_mut() {
                b.push(OperatorPayout {
                    operator: line.operator,
                    amount: price_each * chunk.len() as u128,
                    tasks: chunk.to_vec(),
                });
            }
        }
    }
    for batch in batches.into_iter().filter(|b| !b.is_empty()) {
        let tasks: usize = batch.iter().map(|p| p.tasks.len()).sum();
        let total: u128 = batch.iter().map(|p| p.amount).sum();
        let out = match with_retry("settle", || client.settle(key, &batch)).await {
            Ok(out) => out,
            Err(e) if closed(&e) => {
                tracing::info!(workflow = %wf.short(), "escrow closed by another settler: nothing more to pay");
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        };
        tracing::info!(workflow = %wf.short(), operators = batch.len(), tasks, total_wei = total, gas = out.gas_used, tx = %out.tx_hash, "settled on-chain");
    }
    if record.state == WorkflowState::Completed {
        record_final_proof(client, store, key, &finals).await?;
    }
    if release {
        match with_retry("release", || client.release(key)).await {
            Ok(out) => {
                tracing::info!(workflow = %wf.short(), tx = %out.tx_hash, "escrow released: the rest is the requester's to claim")
            }
            Err(e) if closed(&e) => {
                tracing::info!(workflow = %wf.short(), "escrow closed already");
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Records a completed workflow's final proof on-chain (`submitFinalProof`: the market's
/// verifier checks it and the escrow says `proofAccepted`), so a requester's contract can rely
/// on the proof without checking it again off-chain. Once per escrow: skipped when another
/// settler (or this one before a restart) recorded one. A proof the verifier refuses is not an
/// error here (the matchmaker accepted it after checking it; the contract's word is logged).
async fn record_final_proof(
    client: &MarketClient,
    store: &Store,
    key: proofmesh_chain::B256,
    finals: &[proofmesh_protocol::messages::SignedResult],
) -> Result<(), String> {
    let Some(result) = finals.first() else {
        return Ok(());
    };
    let escrow = with_retry("escrow", || client.escrow(key))
        .await
        .map_err(|e| e.to_string())?;
    if escrow.proofAccepted {
        return Ok(());
    }
    let bytes = store
        .blob(&result.result.output)
        .map_err(|e| e.to_string())?
        .ok_or("the final proof is not in the store")?;
    let (proof, inputs) = calldata(&bytes)?;
    match with_retry("submitFinalProof", || {
        client.submit_final_proof(key, proof.clone().into(), inputs.clone())
    })
    .await
    {
        Ok(out) => {
            tracing::info!(task = result.result.task, tx = %out.tx_hash, gas = out.gas_used, "final proof recorded on-chain")
        }
        Err(ChainError::Reverted { reason, .. }) => {
            tracing::error!(task = result.result.task, %reason, "the market's verifier refused the final proof")
        }
        Err(e) => return Err(e.to_string()),
    }
    Ok(())
}

/// The escrow was released or refunded already (by another settler, or by this node before a
/// restart).
fn closed(e: &ChainError) -> bool {
    matches!(e, ChainError::Reverted { reason, .. }
        if reason.contains("EscrowClosed") || reason.contains("AlreadyRefunded"))
}

/// Reports slashing evidence on-chain, where the contract can check it.
pub async fn slash(
    client: &MarketClient,
    store: &Store,
    evidence: &SlashEvidence,
) -> Result<(), String> {
    match evidence {
        SlashEvidence::MissedDeadline { acceptance, .. } => {
            let Some(eth) = &acceptance.eth else {
                tracing::warn!(task = acceptance.task, "missed deadline, but the acceptance carries no Ethereum signature: evidence kept off-chain only");
                return Ok(());
            };
            let Some((operator, _)) = operator_terms(store, &acceptance.operator)? else {
                return Err(format!(
                    "operator {} advertised no Ethereum address",
                    acceptance.operator
                ));
            };
            let ev = SignedAcceptance {
                operator,
                acceptance: acceptance_of(
                    &acceptance.workflow,
                    acceptance.task,
                    acceptance.attempt,
                    eth,
                ),
                signature: eth.signature.clone().into(),
            };
            ev.verify(client.chain_id(), client.address())
                .map_err(|e| format!("acceptance signature does not verify: {e}"))?;
            let started = tokio::time::Instant::now();
            loop {
                match with_retry("slashMissedDeadline", || client.slash_missed_deadline(&ev)).await
                {
                    Ok(out) => {
                        tracing::warn!(%operator, task = acceptance.task, attempt = acceptance.attempt, tx = %out.tx_hash, "slashed on-chain: missed deadline");
                        return Ok(());
                    }
                    // Block time lags the matchmaker's clock by up to a second or two.
                    Err(ChainError::Reverted { reason, .. })
                        if reason.contains("DeadlineNotPassed")
                            && started.elapsed() < DEADLINE_WAIT =>
                    {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => return unless_used(e),
                }
            }
        }
        SlashEvidence::InvalidResult { result, reason } => {
            if result.eth_claim.is_none() {
                tracing::info!(task = result.result.task, %reason, "invalid result without an on-chain claim (only final proofs are checkable on-chain): reassigned, not slashed on-chain");
                return Ok(());
            }
            let Some((operator, _)) = operator_terms(store, &result.result.operator)? else {
                return Err(format!(
                    "operator {} advertised no Ethereum address",
                    result.result.operator
                ));
            };
            let bytes = store
                .blob(&result.result.output)
                .map_err(|e| e.to_string())?
                .ok_or("the invalid proof is not in the store")?;
            let claim = proof_claim_of(result, operator, &bytes)?;
            claim
                .verify(client.chain_id(), client.address())
                .map_err(|e| format!("proof claim signature does not verify: {e}"))?;
            let out = match with_retry("slashInvalidProof", || client.slash_invalid_proof(&claim))
                .await
            {
                Ok(out) => out,
                Err(e) => return unless_used(e),
            };
            tracing::warn!(%operator, task = claim.task, attempt = claim.attempt, tx = %out.tx_hash, "slashed on-chain: invalid final proof");
            Ok(())
        }
    }
}

/// A slash that failed: an error, unless the contract refused evidence it has used before
/// (slashed already, by this node before a restart or by another matchmaker): that is done.
fn unless_used(e: ChainError) -> Result<(), String> {
    match &e {
        ChainError::Reverted { reason, .. } if reason.contains("EvidenceUsed") => {
            tracing::info!(error = %e, "evidence already used on-chain (slashed before): nothing to do");
            Ok(())
        }
        _ => Err(e.to_string()),
    }
}
