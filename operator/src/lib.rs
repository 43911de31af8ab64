//! The operator: what runs on a GPU operator's machine. It discovers CPU, memory, disk and
//! NVIDIA GPUs, leases GPUs exclusively per task, runs prover programs it need not understand
//! (with timeouts and process-group kills), and returns signed results.
