//! The operator score: on-chain counters, observed success rate and speed (recency-weighted),
//! price and current load, plus a shrinking exploration bonus for operators with little
//! history. All integer arithmetic, so every matchmaker and every replay computes the same
//! number.

use crate::config::Config;
use serde::{Deserialize, Serialize};

/// What is known about one operator's track record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reputation {
    /// Tasks completed, from the contract.
    pub chain_completed: u64,
    /// Tasks failed, from the contract.
    pub chain_failed: u64,
    /// Times slashed, from the contract.
    pub chain_slashed: u64,
    /// Results this matchmaker accepted from it.
    pub observed_ok: u64,
    /// Attempts of it that failed here.
    pub observed_failed: u64,
    /// Exponentially weighted recent success rate, per mille (weight 1/8 per outcome). It
    /// starts at the prior's mean (500, as the Beta posterior does): started at 1000, one
    /// failure left an operator scoring above one never tried (604 against 500), so an
    /// operator that accepts nothing kept winning tasks over fresh ones.
    pub recent_ok_permille: u32,
    /// Exponentially weighted duration relative to the program's median, per mille (1000 =
    /// median speed, 2000 = twice as slow).
    pub speed_permille: u32,
}

impl Default for Reputation {
    fn default() -> Self {
        Reputation {
            chain_completed: 0,
            chain_failed: 0,
            chain_slashed: 0,
            observed_ok: 0,
            observed_failed: 0,
            recent_ok_permille: 500,
            speed_permille: 1000,
        }
    }
}

fn ewma(old: u32, sample: u32) -> u32 {
    ((u64::from(old) * 7 + u64::from(sample)) / 8) as u32
}

/// Integer square root (floor), Newton's method.
fn isqrt(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let mut x = n;
    let mut y = x.div_ceil(2);
    while y < x {
        x = y;
        y = (x + n / x) / 2;
    }
    x
}

impl Reputation {
    /// Outcomes known from any source.
    pub fn outcomes(&self) -> u64 {
        self.chain_completed
            .saturating_add(self.chain_failed)
            .saturating_add(self.chain_slashed)
            .saturating_add(self.observed_ok)
            .saturating_add(self.observed_failed)
    }

    /// On probation: too little history to trust with many tasks at once.
    pub fn on_probation(&self, cfg: &Config) -> bool {
        self.outcomes() < u64::from(cfg.probation_tasks)
    }

    /// A result was accepted; `speed_permille` is its duration against the program median.
    pub fn record_success(&mut self, speed_permille: u32) {
        self.observed_ok = self.observed_ok.saturating_add(1);
        self.recent_ok_permille = ewma(self.recent_ok_permille, 1000);
        self.speed_permille = ewma(self.speed_permille, speed_permille.min(10_000));
    }

    /// An attempt failed (timeout, declared failure, invalid result, went down).
    pub fn record_failure(&mut self) {
        self.observed_failed = self.observed_failed.saturating_add(1);
        self.recent_ok_permille = ewma(self.recent_ok_permille, 0);
    }

    /// Score: higher is better. Reliability is the mean of a Beta(1 + successes, 1 + failures)
    /// posterior (a slash weighs `1 + slash_weight` failures), blended with the recent rate once
    /// this matchmaker has seen the operator work; then an exploration bonus that decays with
    /// history, and penalties for slowness, price and load.
    pub fn score(&self, cfg: &Config, price_wei: u128, inflight: u32, slots: u32) -> i64 {
        let ok = self.chain_completed.saturating_add(self.observed_ok);
        let bad = self
            .chain_failed
            .saturating_add(self.observed_failed)
            .saturating_add(self.chain_slashed.saturating_mul(1 + cfg.slash_weight));
        let beta = (1000u128 * u128::from(ok.saturating_add(1))
            / u128::from(ok.saturating_add(bad).saturating_add(2))) as i64;
        let observed = self.observed_ok + self.observed_failed;
        let reliability = if observed > 0 {
            (beta + i64::from(self.recent_ok_permille)) / 2
        } else {
            beta
        };
        let bonus = cfg.explore_bonus.saturating_mul(1000)
            / isqrt(1_000_000u64.saturating_mul(self.outcomes().saturating_add(1))).max(1) as i64;
        let slowness = (i64::from(self.speed_permille) - 1000).max(-500);
        let speed_penalty = cfg.speed_weight.saturating_mul(slowness) / 1000;
        let price_penalty = u128::from(cfg.price_weight.unsigned_abs())
            .saturating_mul(price_wei)
            .checked_div(cfg.price_ref_wei)
            .unwrap_or(0)
            .min(1_000_000) as i64;
        let load_penalty =
            cfg.load_weight.saturating_mul(i64::from(inflight)) / i64::from(slots.max(1));
        reliability + bonus - speed_penalty - price_penalty - load_penalty
    }
}

/// Running median of a program's task durations, by the "frugal" streaming estimator (move
/// towards each sample by a step proportional to the estimate): O(1) memory and time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramStats {
    /// Current median estimate in ms (0 before the first sample).
    pub median_ms: u64,
    /// Samples seen.
    pub samples: u64,
}

impl ProgramStats {
    /// Add a duration sample.
    pub fn add(&mut self, ms: u64) {
        if self.samples == 0 {
            self.median_ms = ms;
        } else {
            let step = (self.median_ms / 16).max(1);
            if ms > self.median_ms {
                self.median_ms = self.median_ms.saturating_add(step.min(ms - self.median_ms));
            } else if ms < self.median_ms {
                self.median_ms -= step.min(self.median_ms - ms);
            }
        }
        self.samples += 1;
    }

    /// Duration against the median, per mille (1000 when no median yet).
    pub fn speed_permille(&self, ms: u64) -> u32 {
        if self.median_ms == 0 {
            return 1000;
        }
        (u128::from(ms) * 1000 / u128::from(self.median_ms)).min(u128::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isqrt_is_floor_sqrt() {
        for n in [0u64, 1, 2, 3, 4, 15, 16, 17, 1_000_000, u64::MAX] {
            let r = isqrt(n);
            assert!(u128::from(r) * u128::from(r) <= u128::from(n));
            assert!(u128::from(r + 1) * u128::from(r + 1) > u128::from(n));
        }
    }

    #[test]
    fn failures_and_slashes_lower_the_score() {
        let cfg = Config::default();
        let good = Reputation {
            chain_completed: 100,
            ..Default::default()
        };
        let failing = Reputation {
            chain_completed: 100,
            chain_failed: 20,
            ..Default::default()
        };
        let slashed = Reputation {
            chain_completed: 100,
            chain_failed: 5,
            chain_slashed: 5,
            ..Default::default()
        };
        assert!(good.score(&cfg, 0, 0, 1) > failing.score(&cfg, 0, 0, 1));
        assert!(failing.score(&cfg, 0, 0, 1) > slashed.score(&cfg, 0, 0, 1));
        // Load and price lower it too.
        assert!(good.score(&cfg, 0, 0, 4) > good.score(&cfg, 0, 2, 4));
        assert!(good.score(&cfg, 0, 0, 1) > good.score(&cfg, cfg.price_ref_wei, 0, 1));
    }

    #[test]
    fn observed_failures_rank_below_no_history_and_successes_above() {
        let cfg = Config::default();
        let untried = Reputation::default();
        let mut failed = Reputation::default();
        failed.record_failure();
        let mut worked = Reputation::default();
        worked.record_success(1000);
        let score = |r: &Reputation| r.score(&cfg, 0, 0, 1);
        assert!(
            score(&failed) < score(&untried),
            "one failure beats no history"
        );
        assert!(score(&worked) > score(&untried));
        for _ in 0..20 {
            failed.record_failure();
        }
        assert!(
            score(&failed) < score(&untried),
            "many failures beat no history"
        );
    }

    #[test]
    fn frugal_median_converges() {
        let mut p = ProgramStats::default();
        for i in 0..2000u64 {
            p.add(90 + (i * 7919) % 21); // uniform-ish on 90..=110
        }
        assert!((95..=105).contains(&p.median_ms), "median {}", p.median_ms);
    }
}
