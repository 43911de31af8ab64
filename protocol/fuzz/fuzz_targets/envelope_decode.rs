//! Arbitrary bytes as an envelope and as a workflow: decoding is bounded and never panics;
//! whatever decodes re-encodes to the same bytes and still faces the signature check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proofmesh_protocol::{encoding, Domain, Envelope, Workflow};

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::from_bytes(data) {
        assert_eq!(env.to_bytes(), data, "decoding is canonical");
        let _ = env.open(Domain { network_id: 1, chain_id: 1 }, 0);
    }
    if let Ok(wf) = encoding::decode::<Workflow>(data) {
        let _ = wf.validate();
        let _ = wf.critical_path_remaining();
    }
});
