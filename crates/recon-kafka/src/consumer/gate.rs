//! The pause gate: a handle to pause and resume a replica's consumer.

use super::state::{ConsumerStatus, SharedState};
use async_trait::async_trait;
use recon_core::ports::{ConsumerGate, FailureKind, PortError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// A request to the poll loop; answered once carried out.
pub(crate) enum GateCommand {
    Pause(oneshot::Sender<()>),
    Resume(oneshot::Sender<()>),
}

/// Pauses and resumes the consumer it was created with. Cheap to clone.
///
/// [`PauseGate::pause`] returns once the batch that was in flight is applied,
/// committed to the store and its offsets committed to Kafka; from then on no
/// event is applied — including on partitions assigned later by a
/// rebalance — until [`PauseGate::resume`]. The consumer keeps polling while
/// paused, so it stays in its group.
#[derive(Clone)]
pub struct PauseGate {
    pub(crate) commands: mpsc::UnboundedSender<GateCommand>,
    pub(crate) state: Arc<SharedState>,
}

impl PauseGate {
    /// Pauses event application; see the type's docs.
    pub async fn pause(&self) -> Result<(), PortError> {
        self.request(GateCommand::Pause).await
    }

    /// Resumes event application.
    pub async fn resume(&self) -> Result<(), PortError> {
        self.request(GateCommand::Resume).await
    }

    /// Whether event application is paused.
    pub fn is_paused(&self) -> bool {
        self.state.is_paused()
    }

    /// Pause state, assignment and lag.
    pub fn status(&self) -> ConsumerStatus {
        self.state.status()
    }

    async fn request(
        &self,
        command: fn(oneshot::Sender<()>) -> GateCommand,
    ) -> Result<(), PortError> {
        let (done, carried_out) = oneshot::channel();
        let stopped = || PortError::new(FailureKind::Permanent, "the consumer has stopped");
        self.commands.send(command(done)).map_err(|_| stopped())?;
        carried_out.await.map_err(|_| stopped())
    }
}

#[async_trait]
impl ConsumerGate for PauseGate {
    async fn pause(&self) -> Result<(), PortError> {
        PauseGate::pause(self).await
    }

    async fn resume(&self) -> Result<(), PortError> {
        PauseGate::resume(self).await
    }
}
