//! Matchmaker configuration: timeouts, liveness and scoring weights.

use proofmesh_protocol::PublicKey;
use serde::{Deserialize, Serialize};

/// Everything tunable. `Config::default()` suits a local network; the simulator and tests
/// shrink the timeouts to virtual milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// This matchmaker's node key (goes into every assignment it makes).
    pub me: PublicKey,
    /// How often operators are expected to heartbeat, in ms.
    pub heartbeat_interval_ms: u64,
    /// After this many missed heartbeats an operator is presumed down.
    pub missed_heartbeats: u32,
    /// How long an operator has to accept an assignment, in ms.
    pub accept_timeout_ms: u64,
    /// Added to a task's own timeout to form the result deadline (transfer and signing slack).
    pub result_grace_ms: u64,
    /// Operators with fewer observed + on-chain outcomes than this are on probation.
    pub probation_tasks: u32,
    /// Most tasks a probationary operator holds at once while an established operator fits.
    pub probation_inflight: u32,
    /// Score points (of 1000) of the exploration bonus for an operator with no history; it
    /// shrinks as 1/sqrt(1 + outcomes) (UCB-style, deterministic).
    pub explore_bonus: i64,
    /// Score points lost per unit of (duration / program median - 1).
    pub speed_weight: i64,
    /// Score points lost when the asking price equals `price_ref_wei`.
    pub price_weight: i64,
    /// Reference price for `price_weight`.
    pub price_ref_wei: u128,
    /// Score points lost at full load (spreads bursts across operators).
    pub load_weight: i64,
    /// How many slashes weigh like one failure more (a slash counts `1 + slash_weight` failures).
    pub slash_weight: u64,
    /// How many ready tasks of one class are examined when the head cannot be placed (only when
    /// the sole free operator is the one that just failed it).
    pub max_skip: usize,
    /// Attempts of one task that may be lost to operators going down before the workflow
    /// fails. Such losses do not use up the task's own `max_attempts` (operator churn is not
    /// the task's fault), but a task that keeps taking its operators down (out of memory,
    /// a driver crash) must not loop forever.
    pub max_operator_losses: u32,
    /// How long a task refused by an operator waits before it is placed again, in ms: long
    /// enough for the refuser's running tasks (or our view of them) to change, short against
    /// the tasks themselves (a refusal for lack of room is usually a race that is over).
    /// Doubled with each further refusal of the same task, up to 64 times this.
    pub refusal_backoff_ms: u64,
    /// How long a finished workflow stays in the engine, in ms: late messages about it are
    /// ignored meanwhile. After it, the workflow leaves (its slot is reused), so a long-running
    /// matchmaker's state and snapshots do not grow with its history. Far longer than any
    /// message lives (envelopes expire after 120 s); what still refers to the workflow then
    /// (missed-deadline evidence to report, a place in its stream) holds it longer.
    pub retire_after_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            me: PublicKey::default(),
            heartbeat_interval_ms: 1_000,
            missed_heartbeats: 3,
            accept_timeout_ms: 2_000,
            result_grace_ms: 2_000,
            probation_tasks: 3,
            probation_inflight: 1,
            explore_bonus: 150,
            speed_weight: 200,
            price_weight: 100,
            price_ref_wei: 1_000_000_000_000_000,
            load_weight: 300,
            slash_weight: 4,
            max_skip: 32,
            max_operator_losses: 8,
            refusal_backoff_ms: 100,
            retire_after_ms: 600_000,
        }
    }
}

impl Config {
    /// Silence after which an operator is presumed down.
    pub fn liveness_timeout_ms(&self) -> u64 {
        self.heartbeat_interval_ms
            .saturating_mul(u64::from(self.missed_heartbeats.max(1)))
    }
}
