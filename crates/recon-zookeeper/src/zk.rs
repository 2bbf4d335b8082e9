//! Requests to ZooKeeper with a deadline, errors mapped to port errors,
//! JSON values, and multi transactions built from [`Op`]s.
//!
//! A request's outcome has two layers: the outer `Err` is what the caller
//! cannot act on (timeout, connection loss: `Transient`; the session over:
//! `SessionLost` and the session cancelled), the inner `Err` a ZooKeeper
//! answer about the nodes (no node, exists, bad version, not empty) that
//! the caller decides on.

use crate::error::{ends_session, permanent, port_error, session_lost, timed_out};
use crate::session::Session;
use recon_core::ports::{FailureKind, PortError};
use serde::Serialize;
use std::future::Future;
use zookeeper_client as zk;

/// Reads batched into one multi-read (values here are small).
const READ_BATCH: usize = 100;

/// How often a transaction whose create-or-set nodes changed under it (or
/// whose parents were missing) is resolved and sent again.
const PUT_ATTEMPTS: usize = 5;

/// A node's value and stat.
pub(crate) type Entry = (Vec<u8>, zk::Stat);

/// One operation of a multi transaction.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Fails unless the node exists at this version (-1: any version).
    Check { path: String, version: i32 },
    /// Creates the node; fails if it exists. Missing parents are created
    /// (persistent) and the transaction retried.
    Create {
        path: String,
        data: Vec<u8>,
        ephemeral: bool,
    },
    /// Sets the node's value; fails unless it exists at this version.
    Set {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    /// Deletes the node; fails unless it exists at this version (-1: any)
    /// without children.
    Delete { path: String, version: i32 },
    /// Creates or overwrites a persistent node (resolved to a create or a
    /// versioned set before sending; a race is retried here, never reported).
    Put { path: String, data: Vec<u8> },
}

/// What a transaction came to.
#[derive(Debug)]
pub(crate) enum Transacted {
    /// Every operation was applied.
    Done,
    /// Nothing was applied: the operation at `index` failed with `error`.
    Failed { index: usize, error: zk::Error },
}

/// Whether a ZooKeeper error is an answer about nodes (the caller's to
/// decide), not a failure of the request.
fn about_nodes(error: &zk::Error) -> bool {
    matches!(
        error,
        zk::Error::NoNode
            | zk::Error::NodeExists
            | zk::Error::BadVersion
            | zk::Error::NotEmpty
            | zk::Error::NoChildrenForEphemerals
    )
}

/// The ACL of every node: recon's nodes are open to whoever can reach the
/// ensemble (as etcd's keys without authentication).
pub(crate) fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

pub(crate) fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

impl Session {
    /// The client, or `StaleEpoch` once the session is lost.
    pub(crate) fn alive(&self) -> Result<zk::Client, PortError> {
        self.client().ok_or_else(|| session_lost(&self.member))
    }

    /// Awaits `request` under the deadline; see the module docs for the two
    /// layers of the outcome.
    pub(crate) async fn call<T>(
        &self,
        operation: &str,
        request: impl Future<Output = Result<T, zk::Error>>,
    ) -> Result<Result<T, zk::Error>, PortError> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Err(_elapsed) => Err(timed_out(operation)),
            Ok(Ok(value)) => Ok(Ok(value)),
            Ok(Err(error)) if about_nodes(&error) => Ok(Err(error)),
            Ok(Err(error)) => Err(self.failure(operation, error)),
        }
    }

    /// A failure of a request as a port error; a session that is over is
    /// lost here at once.
    pub(crate) fn failure(&self, operation: &str, error: zk::Error) -> PortError {
        if ends_session(&error) {
            self.end();
            return session_lost(&self.member);
        }
        port_error(operation, error)
    }

    /// The node's value and stat, if it exists.
    pub(crate) async fn get(&self, path: &str) -> Result<Option<Entry>, PortError> {
        let client = self.alive()?;
        match self.call("get", client.get_data(path)).await? {
            Ok(entry) => Ok(Some(entry)),
            Err(zk::Error::NoNode) => Ok(None),
            Err(error) => Err(self.failure("get", error)),
        }
    }

    /// The node's stat, if it exists.
    pub(crate) async fn stat(&self, path: &str) -> Result<Option<zk::Stat>, PortError> {
        let client = self.alive()?;
        match self.call("exists", client.check_stat(path)).await? {
            Ok(stat) => Ok(stat),
            Err(error) => Err(self.failure("exists", error)),
        }
    }

    /// The names of the node's children, sorted; none if it does not exist.
    pub(crate) async fn children(&self, path: &str) -> Result<Vec<String>, PortError> {
        let client = self.alive()?;
        match self
            .call("list children", client.list_children(path))
            .await?
        {
            Ok(mut names) => {
                names.sort();
                Ok(names)
            }
            Err(zk::Error::NoNode) => Ok(Vec::new()),
            Err(error) => Err(self.failure("list children", error)),
        }
    }

    /// The values of `paths` (`None` where a node does not exist), read in
    /// batches of consistent multi-reads.
    pub(crate) async fn read_many(
        &self,
        paths: &[String],
    ) -> Result<Vec<Option<Entry>>, PortError> {
        let mut entries = Vec::with_capacity(paths.len());
        for batch in paths.chunks(READ_BATCH) {
            let client = self.alive()?;
            let mut reader = client.new_multi_reader();
            for path in batch {
                reader
                    .add_get_data(path)
                    .map_err(|error| port_error("read nodes", error))?;
            }
            let results = match self.call("read nodes", reader.commit()).await? {
                Ok(results) => results,
                Err(error) => return Err(self.failure("read nodes", error)),
            };
            for result in results {
                match result {
                    zk::MultiReadResult::Data { data, stat } => entries.push(Some((data, stat))),
                    zk::MultiReadResult::Error {
                        err: zk::Error::NoNode,
                    } => entries.push(None),
                    zk::MultiReadResult::Error { err } => {
                        return Err(self.failure("read nodes", err));
                    }
                    other => {
                        return Err(permanent(format!("unexpected multi-read answer {other:?}")));
                    }
                }
            }
        }
        Ok(entries)
    }

    /// Creates `path`'s parent and its ancestors (persistent, empty).
    pub(crate) async fn make_parents(&self, path: &str) -> Result<(), PortError> {
        let Some((parent, _)) = path.rsplit_once('/') else {
            return Ok(());
        };
        if parent.is_empty() {
            return Ok(());
        }
        let client = self.alive()?;
        match self
            .call("create parents", client.mkdir(parent, &persistent()))
            .await?
        {
            Ok(()) => Ok(()),
            Err(error) => Err(self.failure("create parents", error)),
        }
    }

    /// Runs `ops` as one multi transaction: all or nothing. `Put`s are
    /// resolved first; a `Put` or `Create` failing for a race or a missing
    /// parent is retried here, any other failed operation is reported.
    pub(crate) async fn transact(
        &self,
        operation: &str,
        ops: Vec<Op>,
    ) -> Result<Transacted, PortError> {
        for _attempt in 0..PUT_ATTEMPTS {
            let resolved = self.resolve_puts(&ops).await?;
            let client = self.alive()?;
            let mut writer = client.new_multi_writer();
            for op in &resolved {
                add(&mut writer, op).map_err(|error| port_error(operation, error))?;
            }
            let (index, error) = match tokio::time::timeout(self.request_timeout, writer.commit())
                .await
            {
                Err(_elapsed) => return Err(timed_out(operation)),
                Ok(Ok(_results)) => return Ok(Transacted::Done),
                Ok(Err(zk::MultiWriteError::OperationFailed { index, source })) => (index, source),
                Ok(Err(zk::MultiWriteError::RequestFailed { source })) => {
                    return Err(self.failure(operation, source));
                }
            };
            let retry_here = match (&ops[index], &resolved[index], &error) {
                (Op::Put { .. }, _, zk::Error::NodeExists | zk::Error::BadVersion) => true,
                (Op::Put { .. }, Op::Set { .. }, zk::Error::NoNode) => true,
                (_, Op::Create { path, .. }, zk::Error::NoNode) => {
                    self.make_parents(path).await?;
                    true
                }
                _ => false,
            };
            if !retry_here {
                if !about_nodes(&error) {
                    return Err(self.failure(operation, error));
                }
                return Ok(Transacted::Failed { index, error });
            }
        }
        Err(PortError::new(
            recon_core::ports::FailureKind::Transient,
            format!("ZooKeeper {operation}: nodes kept changing under the transaction"),
        ))
    }

    /// `ops` with every `Put` turned into a create or a versioned set.
    async fn resolve_puts(&self, ops: &[Op]) -> Result<Vec<Op>, PortError> {
        let mut resolved = Vec::with_capacity(ops.len());
        for op in ops {
            let Op::Put { path, data } = op else {
                resolved.push(op.clone());
                continue;
            };
            let path = path.clone();
            let data = data.clone();
            resolved.push(match self.stat(&path).await? {
                Some(stat) => Op::Set {
                    path,
                    data,
                    version: stat.version,
                },
                None => Op::Create {
                    path,
                    data,
                    ephemeral: false,
                },
            });
        }
        Ok(resolved)
    }
}

fn add(writer: &mut zk::MultiWriter<'_>, op: &Op) -> Result<(), zk::Error> {
    match op {
        Op::Check { path, version } => writer.add_check_version(path, *version),
        Op::Create {
            path,
            data,
            ephemeral: true,
        } => writer.add_create(path, data, &ephemeral()),
        Op::Create { path, data, .. } | Op::Put { path, data } => {
            writer.add_create(path, data, &persistent())
        }
        Op::Set {
            path,
            data,
            version,
        } => writer.add_set_data(path, data, Some(*version)),
        Op::Delete { path, version } => writer.add_delete(path, Some(*version)),
    }
}

/// A value as JSON bytes.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, PortError> {
    serde_json::to_vec(value).map_err(|error| {
        PortError::with_source(FailureKind::Permanent, error).context("encode JSON value")
    })
}
