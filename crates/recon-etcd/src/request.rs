//! Asking a cluster for a run without being one of its members
//! (`recon reconcile --cluster`): one put of the request key. The leader
//! picks it up; a pending request is replaced by a newer one.

use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::member::within;
use etcd_client::{Client, ConnectOptions};
use recon_engine::cluster::RunRequest;
use std::time::Duration;

/// Writes `<prefix>/request`.
pub async fn request_run(endpoints: &[String], prefix: &str, request: &RunRequest) -> Result<()> {
    let deadline = Duration::from_secs(5);
    let options = ConnectOptions::new().with_connect_timeout(deadline);
    let client = within(
        deadline,
        "connect",
        Client::connect(endpoints, Some(options)),
    )
    .await?;
    let value = serde_json::to_vec(request).map_err(|error| Error::Unexpected {
        operation: "encode the run request",
        reason: error.to_string(),
    })?;
    let mut kv = client.kv_client();
    within(
        deadline,
        "put request",
        kv.put(Keys::new(prefix).request(), value, None),
    )
    .await?;
    Ok(())
}
