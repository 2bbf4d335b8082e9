//! Waiting on an observable condition with a deadline: what the tests do
//! instead of sleeping for a guessed time.

use anyhow::bail;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_until`] looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `condition` every [`POLL_INTERVAL`] until it holds. An error counts
/// as "not yet" (a process that is still starting refuses connections); the
/// last one is in the message when `timeout` passes.
pub async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match condition().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() > deadline {
            match last_error {
                Some(error) => {
                    bail!("timed out after {timeout:?} waiting for {what} (last error: {error:#})")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
