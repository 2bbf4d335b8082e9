//! The coordinator of a replica's current cluster session, shared between
//! the membership loop (which connects and reconnects) and the readers of
//! the cluster's state (the admin API).

use super::Coordinator;
use std::sync::{Arc, RwLock};

/// The coordinator of the current session, if connected; the admin API
/// reads it for `GET /cluster` and `POST /reconcile`.
#[derive(Clone, Default)]
pub struct CoordinatorSlot {
    current: Arc<RwLock<Option<Arc<dyn Coordinator>>>>,
}

impl CoordinatorSlot {
    /// A slot holding `coordinator`.
    pub fn holding(coordinator: Option<Arc<dyn Coordinator>>) -> Self {
        Self {
            current: Arc::new(RwLock::new(coordinator)),
        }
    }

    /// The current session's coordinator; `None` while disconnected.
    pub fn get(&self) -> Option<Arc<dyn Coordinator>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Holds the new session's coordinator, or `None` once it is lost.
    pub fn set(&self, coordinator: Option<Arc<dyn Coordinator>>) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = coordinator;
    }
}
