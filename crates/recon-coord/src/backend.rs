//! The primitives a coordination service provides (etcd, ZooKeeper,
//! PostgreSQL, …): a session, an election with a fencing revision,
//! versioned values under hierarchical keys, conditional transactions and
//! listings. [`Protocol`](crate::protocol::Protocol) builds the whole run
//! protocol on them, once.

use crate::port::Leadership;
use crate::types::MemberId;
use async_trait::async_trait;
use recon_core::ports::{FailureKind, PortError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// A key of one service's coordination state, relative to its prefix: a
/// path of segments. Segments are raw ids (a member, a unit, a run); each
/// backend encodes them into its own key syntax (escaping `/` for etcd,
/// more for ZooKeeper's node names), so no id reaches into another key's
/// namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Vec<String>);

impl Key {
    /// A top-level key.
    pub fn root(segment: impl Into<String>) -> Self {
        Self(vec![segment.into()])
    }

    /// The key of `segment` under this one.
    pub fn child(&self, segment: impl Into<String>) -> Self {
        let mut segments = self.0.clone();
        segments.push(segment.into());
        Self(segments)
    }

    /// Its segments, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The key in a path-like syntax: under `root`, each segment escaped
    /// by `escape` and preceded by `/` (with an empty `root`, the path has
    /// no leading `/`).
    pub fn path_under(&self, root: &str, escape: impl Fn(&str) -> String) -> String {
        let mut path = root.to_owned();
        for segment in &self.0 {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(&escape(segment));
        }
        path
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0.join("/"))
    }
}

/// An id as one key segment of a path-like key syntax (etcd's,
/// PostgreSQL's): `%` → `%25`, `/` → `%2F`.
pub fn escape_segment(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2F")
}

/// The id of an escaped segment; `None` if it is not one [`escape_segment`] makes.
pub fn unescape_segment(segment: &str) -> Option<String> {
    let mut id = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(position) = rest.find('%') {
        id.push_str(&rest[..position]);
        let escaped = rest.get(position..position + 3)?;
        match escaped {
            "%25" => id.push('%'),
            "%2F" => id.push('/'),
            _ => return None,
        }
        rest = &rest[position + 3..];
    }
    if rest.contains('/') {
        return None;
    }
    id.push_str(rest);
    Some(id)
}

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The bytes written (JSON for everything the protocol writes).
    pub value: Vec<u8>,
    /// Changes on every write of the key and never repeats for one key
    /// while it exists (etcd: the mod revision; ZooKeeper: the node's
    /// version; PostgreSQL: a sequence). [`Condition::Version`] compares it.
    pub version: u64,
    /// The value is bound to this member's current session (a lease, an
    /// ephemeral node): it vanishes with the session.
    pub own_session: bool,
}

impl Entry {
    /// The value read as JSON; `key` names it in the error.
    pub fn decode<T: DeserializeOwned>(&self, key: &Key) -> Result<T, PortError> {
        serde_json::from_slice(&self.value).map_err(|error| {
            PortError::with_source(FailureKind::Permanent, error)
                .context(format!("bad JSON at coordinator key {key}"))
        })
    }
}

/// A value as JSON bytes.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, PortError> {
    serde_json::to_vec(value).map_err(|error| {
        PortError::with_source(FailureKind::Permanent, error).context("encode JSON value")
    })
}

/// A failure retrying cannot fix (a bad value, a malformed key).
pub fn permanent(message: impl Into<String>) -> PortError {
    PortError::new(FailureKind::Permanent, message)
}

/// What a transaction needs to hold, checked atomically with its writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist.
    Absent(Key),
    /// The key exists.
    Present(Key),
    /// The key exists and was last written at this version.
    Version(Key, u64),
    /// The key exists and holds exactly these bytes.
    Value(Key, Vec<u8>),
    /// The key exists and is bound to this member's current session.
    OwnSession(Key),
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Creates or replaces the key; `session_bound` ties it to this
    /// member's session (it vanishes with it).
    Put {
        /// Where.
        key: Key,
        /// What.
        value: Vec<u8>,
        /// Whether it lives only as long as this member's session.
        session_bound: bool,
    },
    /// Deletes the key if it exists.
    Delete(Key),
    /// Deletes this key and every key under it. A backend
    /// that cannot do it in one transaction (ZooKeeper's request size)
    /// may do it in several once the guard and conditions held; the
    /// protocol only uses it for keys nobody writes any more.
    DeleteTree(Key),
}

impl Write {
    /// A plain (persistent) put.
    pub fn put(key: Key, value: Vec<u8>) -> Self {
        Self::Put {
            key,
            value,
            session_bound: false,
        }
    }
}

/// Who may commit a transaction, checked atomically with its writes.
#[derive(Debug, Clone, Copy)]
pub enum Guard<'a> {
    /// Anyone with a live session (every write checks the session).
    Session,
    /// Only while this leadership holds: the election's fencing revision is
    /// still `leadership.epoch` and names this member.
    Leader(&'a Leadership),
    /// Only while no member campaigns for leadership (ending an orphaned
    /// run).
    NoCandidate,
}

/// A conditional transaction: all writes or none.
#[derive(Debug, Clone)]
pub struct Txn<'a> {
    /// Who may commit it.
    pub guard: Guard<'a>,
    /// What must hold.
    pub conditions: Vec<Condition>,
    /// What it writes.
    pub writes: Vec<Write>,
}

impl<'a> Txn<'a> {
    /// A transaction under `guard` with no conditions yet.
    pub fn new(guard: Guard<'a>) -> Self {
        Self {
            guard,
            conditions: Vec::new(),
            writes: Vec::new(),
        }
    }

    /// Adds a condition.
    pub fn when(mut self, condition: Condition) -> Self {
        self.conditions.push(condition);
        self
    }

    /// Adds a write.
    pub fn then(mut self, write: Write) -> Self {
        self.writes.push(write);
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Guard and conditions held; everything was written.
    Done,
    /// The guard failed: another leadership holds, or a member campaigns.
    /// Nothing was written.
    Stale,
    /// The guard held but a condition failed. Nothing was written.
    Conflict,
}

/// A coordination service's primitives, for one member's session under one
/// service's prefix.
///
/// Every write fails with [`session_lost`](crate::session_lost) once the
/// session is gone. Reads of session-bound values never return those of a
/// session that has ended.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// This member's id.
    fn member_id(&self) -> &str;

    /// Cancelled when this member's session is lost.
    fn session_lost(&self) -> CancellationToken;

    /// Waits until this member leads (or `cancel` fires, then
    /// [`FailureKind::Cancelled`]). A later leadership has a higher epoch.
    async fn campaign(&self, cancel: &CancellationToken) -> Result<Leadership, PortError>;

    /// Gives leadership up.
    async fn resign(&self, leadership: &Leadership) -> Result<(), PortError>;

    /// The current leader and its epoch, if any.
    async fn leader(&self) -> Result<Option<(MemberId, u64)>, PortError>;

    /// The value at `key`.
    async fn get(&self, key: &Key) -> Result<Option<Entry>, PortError>;

    /// The values directly under `parent`, keyed by their last segment, in
    /// ascending key order.
    async fn children(&self, parent: &Key) -> Result<Vec<(String, Entry)>, PortError>;

    /// The last segments of the keys directly under `parent`, ascending
    /// (no values read).
    async fn child_names(&self, parent: &Key) -> Result<Vec<String>, PortError>;

    /// The values of the last `limit` keys directly under `parent`, in
    /// descending key order.
    async fn last_children(&self, parent: &Key, limit: usize) -> Result<Vec<Entry>, PortError>;

    /// Commits `txn` atomically (see [`Outcome`]); `operation` names it in
    /// traces and errors.
    async fn commit(&self, operation: &'static str, txn: Txn<'_>) -> Result<Outcome, PortError>;
}
