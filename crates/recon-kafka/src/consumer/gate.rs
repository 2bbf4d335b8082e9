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
/// rebalance — until every owner that paused has resumed
/// ([`ConsumerGate`]). The consumer keeps polling while paused, so it stays
/// in its group.
#[derive(Clone)]
pub struct PauseGate {
    pub(crate) commands: mpsc::UnboundedSender<GateCommand>,
    pub(crate) state: Arc<SharedState>,
}

impl PauseGate {
    /// Holds a pause for `owner`; see the type's docs.
    pub async fn pause(&self, owner: &str) -> Result<(), PortError> {
        let carried_out = {
            let mut owners = self.state.owners();
            owners.insert(owner.to_owned());
            self.send(GateCommand::Pause)?
        };
        wait(carried_out).await
    }

    /// Releases `owner`'s pause; consumption resumes once no owner holds
    /// one.
    pub async fn resume(&self, owner: &str) -> Result<(), PortError> {
        let carried_out = {
            let mut owners = self.state.owners();
            owners.remove(owner);
            if !owners.is_empty() {
                return Ok(());
            }
            self.send(GateCommand::Resume)?
        };
        wait(carried_out).await
    }

    /// Whether event application is paused.
    pub fn is_paused(&self) -> bool {
        self.state.is_paused()
    }

    /// Pause state, its owners, assignment and lag.
    pub fn status(&self) -> ConsumerStatus {
        self.state.status()
    }

    fn send(
        &self,
        command: fn(oneshot::Sender<()>) -> GateCommand,
    ) -> Result<oneshot::Receiver<()>, PortError> {
        let (done, carried_out) = oneshot::channel();
        self.commands.send(command(done)).map_err(|_| stopped())?;
        Ok(carried_out)
    }
}

/// Waits until the poll loop carried a command out.
async fn wait(carried_out: oneshot::Receiver<()>) -> Result<(), PortError> {
    carried_out.await.map_err(|_| stopped())
}

fn stopped() -> PortError {
    PortError::new(FailureKind::Permanent, "the consumer has stopped")
}

#[async_trait]
impl ConsumerGate for PauseGate {
    async fn pause(&self, owner: &str) -> Result<(), PortError> {
        PauseGate::pause(self, owner).await
    }

    async fn resume(&self, owner: &str) -> Result<(), PortError> {
        PauseGate::resume(self, owner).await
    }
}
