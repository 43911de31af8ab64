//! Ethereum settlement: deploy and drive the ProofMarket contract (register and stake operators,
//! escrow workflows, settle in batches, slash on evidence, read reputation) and index its events.
