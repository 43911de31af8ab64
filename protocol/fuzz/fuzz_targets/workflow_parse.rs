//! Arbitrary text as a TOML and a JSON workflow file: parse, expand and validate never panic,
//! and anything accepted validates again and has a stable id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proofmesh_protocol::spec::{self, Format};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for format in [Format::Toml, Format::Json] {
        if let Ok((wf, summary)) = spec::load(text, format) {
            assert_eq!(summary.tasks, wf.tasks.len());
            assert!(wf.validate().is_ok());
            assert_eq!(wf.id(), wf.clone().id());
        }
    }
});
