//! Integration tests of the reference monolith (`recon-monolith`) against
//! real databases: the Source API checked against its OpenAPI contract,
//! a fuzzer driven by that contract, keyset pagination under concurrent writes, backup/restore, bad input,
//! seed determinism, the write path's versions and outbox, and all of it
//! again on a declared schema unlike the default one (the catalog).

mod backup_restore;
mod bad_input;
mod catalog;
mod fuzz;
mod pagination;
mod seed;
mod source_api;
mod support;
mod write_path;
