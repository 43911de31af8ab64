//! Gossip topics. Each carries fixed message kinds, and topic names are namespaced by network
//! id so two proofmesh networks sharing peers never mix traffic.

use libp2p::gossipsub::{IdentTopic, TopicHash};
use proofmesh_protocol::MessageKind;

/// A proofmesh gossip topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Workflow submissions.
    Submissions,
    /// Assignments (also sent directly to the operator; gossip keeps every view consistent).
    Assignments,
    /// Operators' acceptances of assignments.
    Acceptances,
    /// Signed results and declared failures.
    Results,
    /// Matchmaker verdicts on results.
    Verdicts,
    /// Operator adverts.
    Adverts,
    /// Operator heartbeats.
    Heartbeats,
    /// Matchmakers announcing themselves (apart from heartbeats: every node wants to know its
    /// matchmakers, few need every operator's heartbeat).
    Matchmakers,
}

impl Topic {
    /// Every topic: what a matchmaker or gateway subscribes to (it keeps the whole market's
    /// state).
    pub const ALL: [Topic; 8] = [
        Topic::Submissions,
        Topic::Assignments,
        Topic::Acceptances,
        Topic::Results,
        Topic::Verdicts,
        Topic::Adverts,
        Topic::Heartbeats,
        Topic::Matchmakers,
    ];

    /// What a node that only operates subscribes to: who the matchmakers are. Its assignments
    /// come to it directly, with the workflow's definition (the first time) and the accepted
    /// results of the task's dependencies pushed ahead of them; the rest of its view
    /// (other tasks' progress, completion, failure) it pulls by catch-up sync. Other tasks'
    /// assignments, acceptances, results and verdicts, and other operators' adverts and
    /// heartbeats, are none of its business: with every operator receiving and verifying every
    /// task's messages the network's work per task grows with the number of operators, and
    /// adding operators stops adding throughput. The same holds for workflow definitions:
    /// each is pushed to the operators that get its tasks rather than flooded to every
    /// operator and relayed between them (bench/e2e.md, the 32-operator first wave).
    /// It still *publishes* on the topics it does not subscribe to: gossipsub sends those to
    /// the connected peers that subscribe (its matchmakers), which is why an operator must
    /// bootstrap to at least one matchmaker or full node.
    pub const OPERATOR: [Topic; 1] = [Topic::Matchmakers];

    /// Short name, used in the topic string and as a metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Submissions => "submissions",
            Topic::Assignments => "assignments",
            Topic::Acceptances => "acceptances",
            Topic::Results => "results",
            Topic::Verdicts => "verdicts",
            Topic::Adverts => "adverts",
            Topic::Heartbeats => "heartbeats",
            Topic::Matchmakers => "matchmakers",
        }
    }

    /// The topic a message of `kind` is published on; `None` for direct-only kinds.
    pub fn for_kind(kind: MessageKind) -> Option<Topic> {
        Some(match kind {
            // A cancellation goes where submissions go: to every matchmaker and gateway.
            MessageKind::WorkflowSubmission | MessageKind::WorkflowCancel => Topic::Submissions,
            MessageKind::Assignment
            | MessageKind::AssignmentBatch
            | MessageKind::Dispatch
            | MessageKind::Cancel => Topic::Assignments,
            // A batch's refusals travel with its acceptances.
            MessageKind::Acceptance | MessageKind::AnswerBatch => Topic::Acceptances,
            MessageKind::TaskResult | MessageKind::TaskFailure => Topic::Results,
            MessageKind::Verdict | MessageKind::VerdictBatch | MessageKind::WorkflowFailed => {
                Topic::Verdicts
            }
            MessageKind::OperatorAdvert => Topic::Adverts,
            MessageKind::Heartbeat => Topic::Heartbeats,
            MessageKind::MatchmakerAnnounce => Topic::Matchmakers,
            MessageKind::SyncRequest | MessageKind::SyncReply => return None,
        })
    }

    /// Whether an envelope of `kind` may travel on this topic (never, for direct-only kinds).
    pub fn carries(self, kind: MessageKind) -> bool {
        Topic::for_kind(kind) == Some(self)
    }

    /// The gossipsub topic on network `network_id`, e.g. `/proofmesh/7/results/1`.
    pub fn ident(self, network_id: u64) -> IdentTopic {
        IdentTopic::new(format!("/proofmesh/{network_id}/{}/1", self.name()))
    }

    /// The topic a gossipsub hash names on network `network_id`, if it is one of ours.
    pub fn from_hash(hash: &TopicHash, network_id: u64) -> Option<Topic> {
        Topic::ALL
            .into_iter()
            .find(|t| t.ident(network_id).hash() == *hash)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_namespaced_and_round_trip() {
        for t in Topic::ALL {
            assert_eq!(Topic::from_hash(&t.ident(3).hash(), 3), Some(t));
            assert_eq!(Topic::from_hash(&t.ident(3).hash(), 4), None);
        }
        assert!(Topic::Results.carries(MessageKind::TaskFailure));
        assert!(!Topic::Results.carries(MessageKind::Heartbeat));
        assert!(!Topic::Heartbeats.carries(MessageKind::MatchmakerAnnounce));
        for t in Topic::ALL {
            assert!(!t.carries(MessageKind::SyncRequest), "sync is direct only");
            assert!(!t.carries(MessageKind::SyncReply), "sync is direct only");
        }
    }
}
