//! Asking a cluster for a run without being one of its members
//! (`recon reconcile --cluster`): the request is merged into the pending one
//! (compare-and-swap on the request key), also while a run is in progress;
//! the leader picks it up as the next run. [`run_progress`] follows a run
//! by its id (`--wait`).

use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::member::within;
use crate::settings::EtcdSecurity;
use etcd_client::{Client, Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp};
use recon_coord::protocol::{Collection, Keys as ProtocolKeys};
use recon_coord::{AbortRequest, RunRequest, RunState, abort_target};
pub use recon_coord::{Requested, RunProgress};
use std::time::Duration;

/// A client of `endpoints` for one-off requests.
async fn connect(endpoints: &[String], security: &EtcdSecurity) -> Result<Client> {
    let options = security.connect_options(REQUEST_DEADLINE)?;
    within(
        REQUEST_DEADLINE,
        "connect",
        Client::connect(endpoints, Some(options)),
    )
    .await
}

/// Deadline of one request of a non-member.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Where the run `run_id` of the service under `prefix` stands.
pub async fn run_progress(
    endpoints: &[String],
    security: &EtcdSecurity,
    prefix: &str,
    run_id: &str,
) -> Result<RunProgress> {
    let client = connect(endpoints, security).await?;
    let keys = Keys::new(prefix);
    let mut kv = client.kv_client();
    // The history keeps the barrier once the run's own keys are purged.
    let mut barrier = None;
    for key in [ProtocolKeys::history(run_id), ProtocolKeys::barrier(run_id)] {
        let read = within(
            REQUEST_DEADLINE,
            "read barrier",
            kv.get(keys.path(&key), None),
        )
        .await?;
        if let Some(entry) = read.kvs().first() {
            barrier = Some(decode_json(entry.value(), "the run's barrier")?);
            break;
        }
    }
    let current = read_current_run(&mut kv, &keys)
        .await?
        .filter(|run| run.run_id == run_id);
    let done_prefix = keys.children_prefix(&ProtocolKeys::collection(run_id, Collection::Done));
    let options = GetOptions::new().with_prefix().with_count_only();
    let done = within(
        REQUEST_DEADLINE,
        "count done units",
        kv.get(done_prefix, Some(options)),
    )
    .await?;
    Ok(RunProgress {
        current,
        units_done: usize::try_from(done.count()).unwrap_or(usize::MAX),
        barrier,
    })
}

/// Asks the leader of the service under `prefix` to abort the run in
/// progress (`run_id`, or whichever is current); returns the run's id.
/// Fails, naming it, if that run is not in progress.
pub async fn request_abort(
    endpoints: &[String],
    security: &EtcdSecurity,
    prefix: &str,
    run_id: Option<&str>,
    abort: &AbortRequest,
) -> Result<String> {
    let client = connect(endpoints, security).await?;
    let keys = Keys::new(prefix);
    let mut kv = client.kv_client();
    let current = read_current_run(&mut kv, &keys)
        .await?
        .map(|run| run.run_id);
    let target = abort_target(run_id, current).map_err(|reason| Error::Unexpected {
        operation: "request abort",
        reason,
    })?;
    let value = serde_json::to_vec(abort).map_err(|error| Error::Unexpected {
        operation: "encode the abort request",
        reason: error.to_string(),
    })?;
    within(
        REQUEST_DEADLINE,
        "put abort request",
        kv.put(keys.path(&ProtocolKeys::abort(&target)), value, None),
    )
    .await?;
    Ok(target)
}

/// Merges `request` into `<prefix>/request`.
pub async fn request_run(
    endpoints: &[String],
    security: &EtcdSecurity,
    prefix: &str,
    request: &RunRequest,
) -> Result<Requested> {
    let deadline = REQUEST_DEADLINE;
    let client = connect(endpoints, security).await?;
    let keys = Keys::new(prefix);
    let key = keys.path(&ProtocolKeys::request());
    let mut kv = client.kv_client();
    for _attempt in 0..10 {
        let read = within(deadline, "read request", kv.get(key.clone(), None)).await?;
        let (pending, merged, read_revision) = match read.kvs().first() {
            Some(entry) => {
                let earlier: RunRequest = decode_json(entry.value(), "the pending run request")?;
                (earlier.merge(request.clone()), true, entry.mod_revision())
            }
            None => (request.clone(), false, 0),
        };
        let value = serde_json::to_vec(&pending).map_err(|error| Error::Unexpected {
            operation: "encode the run request",
            reason: error.to_string(),
        })?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                read_revision,
            )])
            .and_then([TxnOp::put(key.clone(), value, None)]);
        if within(deadline, "put request", kv.txn(txn))
            .await?
            .succeeded()
        {
            let queued_behind = read_current_run(&mut kv, &keys)
                .await?
                .map(|run| run.run_id);
            return Ok(Requested {
                pending,
                merged,
                queued_behind,
            });
        }
    }
    Err(Error::Unexpected {
        operation: "put request",
        reason: "the pending run request kept changing while it was merged".into(),
    })
}

/// The current run, if any.
async fn read_current_run(kv: &mut KvClient, keys: &Keys) -> Result<Option<RunState>> {
    let read = within(
        REQUEST_DEADLINE,
        "read current run",
        kv.get(keys.path(&ProtocolKeys::current_run()), None),
    )
    .await?;
    match read.kvs().first() {
        Some(entry) => decode_json(entry.value(), "the current run").map(Some),
        None => Ok(None),
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|error| Error::Unexpected {
        operation: what,
        reason: error.to_string(),
    })
}
