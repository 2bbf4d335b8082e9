//! Asking a cluster for a run without being one of its members
//! (`recon reconcile --cluster`): the request is merged into the pending one
//! (compare-and-swap on the request node's version), also while a run is
//! in progress; the leader picks it up as the next run. [`run_progress`]
//! follows a run by its id (`--wait`), [`request_abort`] asks the leader to
//! abort one. Each call opens a short session of its own and closes it.

use crate::error::{Error, Result, within};
use crate::nodes::Nodes;
use crate::settings::{validate_prefix, validate_servers};
use crate::zk::persistent;
use recon_coord::protocol::{Collection, Keys};
use recon_coord::{
    AbortRequest, Barrier, Requested, RunProgress, RunRequest, RunState, abort_target,
};
use std::time::Duration;
use zookeeper_client as zk;

/// Deadline of one request of a non-member.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// The session timeout of a non-member's short session.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a merge re-reads a request that changed under the write.
const REQUEST_ATTEMPTS: usize = 10;

/// A short session on `servers` for one-off requests under `prefix`.
async fn connect(servers: &str, prefix: &str) -> Result<(zk::Client, Nodes)> {
    validate_servers(servers)?;
    validate_prefix(prefix)?;
    let connector = zk::Client::connector().with_session_timeout(SESSION_TIMEOUT);
    let client = within(REQUEST_DEADLINE, "connect", connector.connect(servers)).await?;
    Ok((client, Nodes::new(prefix)))
}

/// Where the run `run_id` of the service under `prefix` stands.
pub async fn run_progress(servers: &str, prefix: &str, run_id: &str) -> Result<RunProgress> {
    let (client, nodes) = connect(servers, prefix).await?;
    // The history keeps the barrier once the run's own nodes are purged.
    let mut barrier = None;
    for path in [
        nodes.path(&Keys::history(run_id)),
        nodes.path(&Keys::barrier(run_id)),
    ] {
        if let Some(found) = read_json::<Barrier>(&client, &path, "read barrier").await? {
            barrier = Some(found);
            break;
        }
    }
    let current = read_json::<RunState>(
        &client,
        &nodes.path(&Keys::current_run()),
        "read current run",
    )
    .await?
    .filter(|run| run.run_id == run_id);
    let done = nodes.path(&Keys::collection(run_id, Collection::Done));
    let units_done = match within(
        REQUEST_DEADLINE,
        "count done units",
        client.get_children(&done),
    )
    .await
    {
        Ok((_, stat)) => usize::try_from(stat.num_children).unwrap_or(0),
        Err(Error::ZooKeeper {
            source: zk::Error::NoNode,
            ..
        }) => 0,
        Err(error) => return Err(error),
    };
    Ok(RunProgress {
        current,
        units_done,
        barrier,
    })
}

/// Asks the leader of the service under `prefix` to abort the run in
/// progress (`run_id`, or whichever is current); returns the run's id.
/// Fails, naming it, if that run is not in progress.
pub async fn request_abort(
    servers: &str,
    prefix: &str,
    run_id: Option<&str>,
    abort: &AbortRequest,
) -> Result<String> {
    let (client, nodes) = connect(servers, prefix).await?;
    let current = read_json::<RunState>(
        &client,
        &nodes.path(&Keys::current_run()),
        "read current run",
    )
    .await?
    .map(|run| run.run_id);
    let target = abort_target(run_id, current).map_err(|reason| Error::Unexpected {
        operation: "request abort",
        reason,
    })?;
    let value = encode(abort, "encode the abort request")?;
    let path = nodes.path(&Keys::abort(&target));
    let set = client.set_data(&path, &value, None);
    match within(REQUEST_DEADLINE, "put abort request", set).await {
        Ok(_) => {}
        Err(Error::ZooKeeper {
            source: zk::Error::NoNode,
            ..
        }) => {
            let parent = nodes.path(&Keys::run(&target));
            within(
                REQUEST_DEADLINE,
                "create run node",
                client.mkdir(&parent, &persistent()),
            )
            .await?;
            let create = client.create(&path, &value, &persistent());
            match within(REQUEST_DEADLINE, "put abort request", create).await {
                Ok(_) => {}
                // Asked at the same moment by someone else: theirs stands.
                Err(Error::ZooKeeper {
                    source: zk::Error::NodeExists,
                    ..
                }) => {}
                Err(error) => return Err(error),
            }
        }
        Err(error) => return Err(error),
    }
    Ok(target)
}

/// Merges `request` into `<prefix>/request`.
pub async fn request_run(servers: &str, prefix: &str, request: &RunRequest) -> Result<Requested> {
    let (client, nodes) = connect(servers, prefix).await?;
    let path = nodes.path(&Keys::request());
    within(
        REQUEST_DEADLINE,
        "create the prefix",
        client.mkdir(nodes.root(), &persistent()),
    )
    .await?;
    for _attempt in 0..REQUEST_ATTEMPTS {
        let read = within(REQUEST_DEADLINE, "read request", client.get_data(&path)).await;
        let written = match read {
            Ok((data, stat)) => {
                let earlier: RunRequest = decode(&data, "the pending run request")?;
                let pending = earlier.merge(request.clone());
                let value = encode(&pending, "encode the run request")?;
                let set = client.set_data(&path, &value, Some(stat.version));
                within(REQUEST_DEADLINE, "put request", set)
                    .await
                    .map(|_| (pending, true))
            }
            Err(Error::ZooKeeper {
                source: zk::Error::NoNode,
                ..
            }) => {
                let value = encode(request, "encode the run request")?;
                let create = client.create(&path, &value, &persistent());
                within(REQUEST_DEADLINE, "put request", create)
                    .await
                    .map(|_| (request.clone(), false))
            }
            Err(error) => return Err(error),
        };
        match written {
            Ok((pending, merged)) => {
                let queued_behind = read_json::<RunState>(
                    &client,
                    &nodes.path(&Keys::current_run()),
                    "read current run",
                )
                .await?
                .map(|run| run.run_id);
                return Ok(Requested {
                    pending,
                    merged,
                    queued_behind,
                });
            }
            Err(Error::ZooKeeper {
                source: zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode,
                ..
            }) => continue,
            Err(error) => return Err(error),
        }
    }
    Err(Error::Unexpected {
        operation: "put request",
        reason: "the pending run request kept changing while it was merged".into(),
    })
}

/// The node's value as JSON, if it exists.
async fn read_json<T: serde::de::DeserializeOwned>(
    client: &zk::Client,
    path: &str,
    operation: &'static str,
) -> Result<Option<T>> {
    match within(REQUEST_DEADLINE, operation, client.get_data(path)).await {
        Ok((data, _)) => decode(&data, operation).map(Some),
        Err(Error::ZooKeeper {
            source: zk::Error::NoNode,
            ..
        }) => Ok(None),
        Err(error) => Err(error),
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|error| Error::Unexpected {
        operation: what,
        reason: error.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|error| Error::Unexpected {
        operation: what,
        reason: error.to_string(),
    })
}
