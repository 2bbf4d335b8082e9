//! The in-process coordinator: several members in one process share a hub
//! (`recon_coord::memory`, the run protocol over an in-memory backend). It
//! is the single-instance default (one member, no etcd) and runs the
//! demo's three replicas; tests expel members to simulate a lost session.

pub use recon_coord::memory::{
    MemoryCoordinator as InProcessCoordinator, MemoryHub as InProcessHub,
};
