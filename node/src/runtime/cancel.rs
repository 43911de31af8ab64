//! Who may cancel a workflow: its requester, and nobody else. A cancellation is checked where
//! it enters (the RPC node, for a clear answer) and where it takes effect (the active
//! matchmaker, which fails the workflow as cancelled, so its accepted work is paid and the
//! rest of its escrow released).

use proofmesh_chain::{evidence, workflow_key, Address};
use proofmesh_protocol::messages::{Submission, WorkflowCancel};
use proofmesh_protocol::PublicKey;

/// Whether `cancel`, signed (its envelope) by `signer`, may cancel the workflow of
/// `submission`: the envelope's signer is the submission's owner key, or the cancel carries
/// the signature of the account that paid the escrow. The error names what is wrong.
pub fn authorize(
    submission: &Submission,
    signer: &PublicKey,
    cancel: &WorkflowCancel,
) -> Result<(), String> {
    let Some(signature) = &cancel.owner_eth_signature else {
        if *signer == submission.owner {
            return Ok(());
        }
        let mut why = format!(
            "only the workflow's owner may cancel it without an Ethereum signature: sent by node {signer}, owned by node {}",
            submission.owner
        );
        if submission.owner_eth.is_some() {
            why.push_str(
                "; sign it with the key that paid its escrow (proofmesh cancel --eth-key FILE, or --devnet DIR)",
            );
        }
        return Err(why);
    };
    let (Some(owner), Some(escrow)) = (submission.owner_eth, submission.escrow.as_ref()) else {
        return Err(
            "the workflow has no escrow, so no Ethereum account owns it: cancel it through the node it was submitted to, without a signature"
                .to_owned(),
        );
    };
    let owner = Address::from(owner);
    let signed_by = evidence::cancel_signer(
        signature,
        workflow_key(&cancel.workflow),
        escrow.chain_id,
        Address::from(escrow.contract),
    )
    .map_err(|e| format!("cancel signature: {e}"))?;
    if signed_by == owner {
        Ok(())
    } else {
        Err(format!(
            "the cancel is signed by {signed_by:#x}, but the workflow's requester is {owner:#x}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proofmesh_chain::PrivateKeySigner;
    use proofmesh_protocol::identity::Keypair;
    use proofmesh_protocol::messages::EscrowRef;

    fn submission(owner: PublicKey, eth: Option<&PrivateKeySigner>) -> Submission {
        let workflow = proofmesh_protocol::spec::load(
            "name = \"c\"\n[[task]]\nid = \"t\"\nprogram = \"noop@1\"\n",
            proofmesh_protocol::spec::Format::Toml,
        )
        .expect("valid")
        .0;
        Submission {
            workflow,
            owner,
            owner_eth: eth.map(|s| s.address().into_array()),
            escrow: eth.map(|_| EscrowRef {
                chain_id: 31337,
                contract: [0x42; 20],
            }),
            submitted_at_ms: 0,
        }
    }

    #[test]
    fn only_the_owner_node_or_the_paying_account_may_cancel() {
        let owner = Keypair::generate().public();
        let other = Keypair::generate().public();
        let requester = PrivateKeySigner::random();
        let s = submission(owner, Some(&requester));
        let id = s.workflow.id();
        let plain = WorkflowCancel {
            workflow: id,
            owner_eth_signature: None,
        };
        assert!(authorize(&s, &owner, &plain).is_ok());
        let err = authorize(&s, &other, &plain).expect_err("not the owner");
        assert!(err.contains("only the workflow's owner"), "{err}");
        assert!(err.contains("the key that paid its escrow"), "{err}");

        let signed = |by: &PrivateKeySigner| WorkflowCancel {
            workflow: id,
            owner_eth_signature: Some(
                evidence::sign_cancel(by, workflow_key(&id), 31337, Address::repeat_byte(0x42))
                    .expect("sign"),
            ),
        };
        // Relayed by any node, signed by the requester's account.
        assert!(authorize(&s, &other, &signed(&requester)).is_ok());
        let stranger = PrivateKeySigner::random();
        let err = authorize(&s, &owner, &signed(&stranger)).expect_err("not the requester");
        assert!(err.contains("but the workflow's requester is"), "{err}");
        let bad = WorkflowCancel {
            workflow: id,
            owner_eth_signature: Some(vec![1; 10]),
        };
        let err = authorize(&s, &owner, &bad).expect_err("malformed");
        assert!(err.contains("cancel signature"), "{err}");
        // Without an escrow no account owns it.
        let err = authorize(&submission(owner, None), &owner, &signed(&requester))
            .expect_err("no escrow");
        assert!(err.contains("no escrow"), "{err}");
    }
}
