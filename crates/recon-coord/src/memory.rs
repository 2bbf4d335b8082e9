//! The in-process backend: several members in one process share a
//! [`MemoryHub`]. It is the single-instance default (one member, no etcd),
//! runs the demo's three replicas, and is the smallest complete example of
//! the primitives; tests [`MemoryHub::expel`] members to simulate a lost
//! session.
//!
//! Everything is one map under one mutex: a transaction checks its guard
//! and conditions and writes while holding it. The election is the
//! protocol's layout: a candidate is a session-bound value under
//! `election/<session>`, the candidate created first leads, its creation
//! revision is the epoch.

use crate::backend::{Backend, Condition, Entry, Guard, Key, Outcome, Txn, Write, encode};
use crate::port::{Leadership, session_lost};
use crate::protocol::{ELECTION, Keys, Protocol};
use crate::types::{MemberId, MemberInfo, MemberRole, now_unix_ms};
use async_trait::async_trait;
use recon_core::ports::{FailureKind, PortError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a waiting candidate looks at the election.
const CAMPAIGN_POLL: Duration = Duration::from_millis(20);

/// The coordinator of one in-process member.
pub type MemoryCoordinator = Protocol<MemoryBackend>;

/// A stored value.
#[derive(Debug, Clone)]
struct Stored {
    value: Vec<u8>,
    version: u64,
    created: u64,
    session: Option<u64>,
}

#[derive(Default)]
struct HubState {
    entries: BTreeMap<Vec<String>, Stored>,
    /// Live sessions: their member and token.
    sessions: BTreeMap<u64, (MemberId, CancellationToken)>,
    /// The last revision handed out (versions, creations, session ids).
    revision: u64,
}

impl HubState {
    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// The first candidate: its key, member and creation revision.
    fn first_candidate(&self) -> Option<(Vec<String>, MemberId, u64)> {
        let prefix = [ELECTION.to_owned()];
        self.entries
            .iter()
            .filter(|(key, _)| key.len() == 2 && key.starts_with(&prefix))
            .min_by_key(|(_, stored)| stored.created)
            .map(|(key, stored)| {
                let member = String::from_utf8_lossy(&stored.value).into_owned();
                (key.clone(), member, stored.created)
            })
    }

    /// Ends `session`: its token cancelled, its session-bound values gone.
    fn end_session(&mut self, session: u64) {
        if let Some((_, token)) = self.sessions.remove(&session) {
            token.cancel();
        }
        self.entries
            .retain(|_, stored| stored.session != Some(session));
    }

    fn holds(&self, condition: &Condition, session: u64) -> bool {
        let stored = |key: &Key| self.entries.get(key.segments());
        match condition {
            Condition::Absent(key) => stored(key).is_none(),
            Condition::Present(key) => stored(key).is_some(),
            Condition::Version(key, version) => {
                stored(key).is_some_and(|stored| stored.version == *version)
            }
            Condition::Value(key, value) => {
                stored(key).is_some_and(|stored| stored.value == *value)
            }
            Condition::OwnSession(key) => {
                stored(key).is_some_and(|stored| stored.session == Some(session))
            }
        }
    }

    fn apply(&mut self, write: Write, session: u64) {
        match write {
            Write::Put {
                key,
                value,
                session_bound,
            } => {
                let version = self.next_revision();
                let session = session_bound.then_some(session);
                let segments = key.segments().to_vec();
                let created = self
                    .entries
                    .get(&segments)
                    .map_or(version, |stored| stored.created);
                self.entries.insert(
                    segments,
                    Stored {
                        value,
                        version,
                        created,
                        session,
                    },
                );
            }
            Write::Delete(key) => {
                self.entries.remove(key.segments());
            }
            Write::DeleteTree(key) => {
                let prefix = key.segments();
                self.entries
                    .retain(|segments, _| !segments.starts_with(prefix));
            }
        }
    }
}

/// The shared state of in-process members. Cheap to clone.
#[derive(Clone, Default)]
pub struct MemoryHub {
    state: Arc<Mutex<HubState>>,
}

impl MemoryHub {
    /// A hub whose first leader gets an election epoch of at least
    /// `first_epoch`. The store epochs its leaders write with come from
    /// the store, whatever this is.
    pub fn new(first_epoch: u64) -> Self {
        let hub = Self::default();
        hub.lock().revision = first_epoch.saturating_sub(1);
        hub
    }

    /// Adds a member that reconciles and returns its coordinator.
    pub fn join(&self, id: &str) -> MemoryCoordinator {
        self.join_as(id, MemberRole::Reconciler)
    }

    /// Adds a member with `role` and returns its coordinator.
    pub fn join_as(&self, id: &str, role: MemberRole) -> MemoryCoordinator {
        let token = CancellationToken::new();
        let info = MemberInfo {
            id: id.to_owned(),
            admin_url: None,
            joined_unix_ms: now_unix_ms(),
            role,
        };
        let mut state = self.lock();
        let session = state.next_revision();
        state
            .sessions
            .insert(session, (id.to_owned(), token.clone()));
        let registered = encode(&info).map(|value| Write::Put {
            key: Keys::member(id),
            value,
            session_bound: true,
        });
        if let Ok(write) = registered {
            state.apply(write, session);
        }
        drop(state);
        Protocol::new(MemoryBackend {
            hub: self.clone(),
            member: id.to_owned(),
            session,
            token,
        })
    }

    /// Simulates a member's session expiring: its session and leadership
    /// end, its session-bound values vanish.
    pub fn expel(&self, id: &str) {
        let mut state = self.lock();
        let sessions: Vec<u64> = state
            .sessions
            .iter()
            .filter(|(_, (member, _))| member == id)
            .map(|(session, _)| *session)
            .collect();
        for session in sessions {
            state.end_session(session);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One member's session on a [`MemoryHub`].
#[derive(Clone)]
pub struct MemoryBackend {
    hub: MemoryHub,
    member: MemberId,
    session: u64,
    token: CancellationToken,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MemoryBackend")
            .field("member", &self.member)
            .field("session", &self.session)
            .finish()
    }
}

impl MemoryBackend {
    fn candidate(&self) -> Key {
        Key::root(ELECTION).child(self.session.to_string())
    }

    fn alive(&self) -> Result<(), PortError> {
        if self.token.is_cancelled() {
            return Err(session_lost(&self.member));
        }
        Ok(())
    }

    fn entry(&self, stored: &Stored) -> Entry {
        Entry {
            value: stored.value.clone(),
            version: stored.version,
            own_session: stored.session == Some(self.session),
        }
    }

    /// The values directly under `parent`, ascending.
    fn list(&self, parent: &Key) -> Vec<(String, Entry)> {
        let prefix = parent.segments();
        self.hub
            .lock()
            .entries
            .range(prefix.to_vec()..)
            .take_while(|(segments, _)| segments.starts_with(prefix))
            .filter(|(segments, _)| segments.len() == prefix.len() + 1)
            .map(|(segments, stored)| (segments[prefix.len()].clone(), self.entry(stored)))
            .collect()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn member_id(&self) -> &str {
        &self.member
    }

    fn session_lost(&self) -> CancellationToken {
        self.token.clone()
    }

    async fn campaign(&self, cancel: &CancellationToken) -> Result<Leadership, PortError> {
        let own = self.candidate();
        // A member that already leads (or stands) waits until that ends
        // before campaigning again, as on every backend.
        while self.hub.lock().entries.contains_key(own.segments()) {
            self.alive()?;
            tokio::select! {
                _ = cancel.cancelled() => {
                    return Err(PortError::new(FailureKind::Cancelled, "campaign cancelled"));
                }
                _ = self.token.cancelled() => {}
                _ = tokio::time::sleep(CAMPAIGN_POLL) => {}
            }
        }
        let stand = Txn::new(Guard::Session).then(Write::Put {
            key: own.clone(),
            value: self.member.as_bytes().to_vec(),
            session_bound: true,
        });
        self.commit("campaign", stand).await?;
        loop {
            self.alive()?;
            if let Some((key, _, epoch)) = self.hub.lock().first_candidate()
                && key == own.segments()
            {
                return Ok(Leadership {
                    epoch,
                    store_epoch: 0,
                    incarnation: 0,
                    lost: self.token.child_token(),
                });
            }
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.hub.lock().entries.remove(own.segments());
                    return Err(PortError::new(FailureKind::Cancelled, "campaign cancelled"));
                }
                _ = self.token.cancelled() => {}
                _ = tokio::time::sleep(CAMPAIGN_POLL) => {}
            }
        }
    }

    async fn resign(&self, leadership: &Leadership) -> Result<(), PortError> {
        leadership.lost.cancel();
        let mut state = self.hub.lock();
        let own = self.candidate();
        if state
            .entries
            .get(own.segments())
            .is_some_and(|stored| stored.created == leadership.epoch)
        {
            state.entries.remove(own.segments());
        }
        Ok(())
    }

    async fn leader(&self) -> Result<Option<(MemberId, u64)>, PortError> {
        Ok(self
            .hub
            .lock()
            .first_candidate()
            .map(|(_, member, epoch)| (member, epoch)))
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>, PortError> {
        let state = self.hub.lock();
        Ok(state
            .entries
            .get(key.segments())
            .map(|stored| self.entry(stored)))
    }

    async fn children(&self, parent: &Key) -> Result<Vec<(String, Entry)>, PortError> {
        Ok(self.list(parent))
    }

    async fn child_names(&self, parent: &Key) -> Result<Vec<String>, PortError> {
        Ok(self
            .list(parent)
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    async fn last_children(&self, parent: &Key, limit: usize) -> Result<Vec<Entry>, PortError> {
        let mut children = self.list(parent);
        children.reverse();
        children.truncate(limit);
        Ok(children.into_iter().map(|(_, entry)| entry).collect())
    }

    async fn commit(&self, _operation: &'static str, txn: Txn<'_>) -> Result<Outcome, PortError> {
        self.alive()?;
        let mut state = self.hub.lock();
        let guard_holds = match txn.guard {
            Guard::Session => true,
            Guard::NoCandidate => state.first_candidate().is_none(),
            Guard::Leader(leadership) => {
                state.first_candidate().is_some_and(|(key, member, epoch)| {
                    key == self.candidate().segments()
                        && member == self.member
                        && epoch == leadership.epoch
                })
            }
        };
        if !guard_holds {
            return Ok(Outcome::Stale);
        }
        if !txn
            .conditions
            .iter()
            .all(|condition| state.holds(condition, self.session))
        {
            return Ok(Outcome::Conflict);
        }
        for write in txn.writes {
            state.apply(write, self.session);
        }
        Ok(Outcome::Done)
    }
}
