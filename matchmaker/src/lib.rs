//! The matchmaker: a deterministic, sans-IO scheduler. It takes timestamped events (workflow
//! submitted, operator advert/heartbeat, acceptance, result, failure) and returns decisions
//! (assignments, reassignments, verdicts, slashing evidence), with no clock, socket or thread
//! inside, so it can be tested exhaustively, simulated at scale and replayed from a log.
