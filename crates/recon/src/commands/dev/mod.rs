//! The development commands, apart from the replica's: the reference
//! monolith (`recon monolith`), its workload (`recon seed`), the demo on
//! embedded defaults (`recon demo`) and the benchmarks (`recon bench …`).
//! They use the replica's commands; nothing of the replica uses them.

pub mod bench;
pub mod demo;
pub mod monolith;
pub mod seed;
