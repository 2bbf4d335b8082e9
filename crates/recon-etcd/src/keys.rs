//! The key layout under a service's prefix (see the crate docs for the
//! table). Ids become single key segments: `%` and `/` are escaped so that an
//! id can never reach into another key's namespace.

/// Builds every key of one service's coordination state.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    root: String,
}

impl Keys {
    /// Keys under `prefix` (a trailing `/` is ignored).
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            root: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// The prefix every key starts with, without a trailing `/`.
    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    pub(crate) fn members_prefix(&self) -> String {
        format!("{}/members/", self.root)
    }

    pub(crate) fn member(&self, member: &str) -> String {
        format!("{}{}", self.members_prefix(), escape(member))
    }

    /// The election's name for etcd's election API.
    pub(crate) fn election_name(&self) -> String {
        format!("{}/election", self.root)
    }

    /// Every candidate's key starts with this.
    pub(crate) fn election_prefix(&self) -> String {
        format!("{}/", self.election_name())
    }

    /// The key etcd's election API creates for a candidate holding `lease`
    /// (`<name>/<lease in lowercase hex>`, as etcd's `concurrency.Election`).
    pub(crate) fn election_key(&self, lease: i64) -> String {
        format!("{}{lease:x}", self.election_prefix())
    }

    /// The incarnation of this etcd's coordination state (set once).
    pub(crate) fn incarnation(&self) -> String {
        format!("{}/incarnation", self.root)
    }

    pub(crate) fn request(&self) -> String {
        format!("{}/request", self.root)
    }

    pub(crate) fn current_run(&self) -> String {
        format!("{}/run/current", self.root)
    }

    fn run(&self, run_id: &str) -> String {
        format!("{}/runs/{}", self.root, escape(run_id))
    }

    /// Every key of one run ends up under this prefix.
    pub(crate) fn run_prefix(&self, run_id: &str) -> String {
        format!("{}/", self.run(run_id))
    }

    pub(crate) fn plan(&self, run_id: &str) -> String {
        format!("{}/plan", self.run(run_id))
    }

    /// The prefix of a plan's pages of units.
    pub(crate) fn plan_pages(&self, run_id: &str) -> String {
        format!("{}/plan-pages/", self.run(run_id))
    }

    /// A trigger mark (the last schedule slot fired, the last source
    /// generation seen).
    pub(crate) fn trigger(&self, name: &str) -> String {
        format!("{}/triggers/{}", self.root, escape(name))
    }

    /// The prefix of the run history: one copy of each barrier, keyed by
    /// run id (which orders by start time).
    pub(crate) fn history_prefix(&self) -> String {
        format!("{}/history/", self.root)
    }

    pub(crate) fn history(&self, run_id: &str) -> String {
        format!("{}{}", self.history_prefix(), escape(run_id))
    }

    /// An operator's request to abort the run.
    pub(crate) fn abort(&self, run_id: &str) -> String {
        format!("{}/abort", self.run(run_id))
    }

    pub(crate) fn barrier(&self, run_id: &str) -> String {
        format!("{}/barrier", self.run(run_id))
    }

    /// The prefix of one collection of a run: `acks`, `assign`, `claims` or
    /// `done`.
    pub(crate) fn collection(&self, run_id: &str, collection: Collection) -> String {
        format!("{}/{}/", self.run(run_id), collection.segment())
    }

    /// One entry of a run's collection.
    pub(crate) fn entry(&self, run_id: &str, collection: Collection, id: &str) -> String {
        format!("{}{}", self.collection(run_id, collection), escape(id))
    }
}

/// The per-run collections keyed by a member or a unit id.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Collection {
    /// Pause acknowledgements, keyed by member.
    Acks,
    /// Assignments, keyed by unit.
    Assign,
    /// Claims, keyed by unit.
    Claims,
    /// Done-records, keyed by unit.
    Done,
}

impl Collection {
    fn segment(self) -> &'static str {
        match self {
            Self::Acks => "acks",
            Self::Assign => "assign",
            Self::Claims => "claims",
            Self::Done => "done",
        }
    }
}

/// An id as one key segment: `%` → `%25`, `/` → `%2F`.
pub(crate) fn escape(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2F")
}

/// The id of an escaped segment; `None` if it is not one [`escape`] makes.
pub(crate) fn unescape(segment: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_slashes_and_percents_round_trip_as_one_segment() {
        for id in [
            "plain",
            "a/b",
            "50%",
            "%2F",
            "/",
            "tenant-1/users/after=a%2Fb",
        ] {
            let segment = escape(id);
            assert!(!segment.contains('/'), "{segment} holds a slash");
            assert_eq!(unescape(&segment).as_deref(), Some(id));
        }
    }

    #[test]
    fn malformed_segments_are_refused() {
        for segment in ["%", "%2", "%41", "a/b"] {
            assert_eq!(unescape(segment), None, "{segment}");
        }
    }

    #[test]
    fn keys_sit_under_the_prefix_without_double_slashes() {
        let keys = Keys::new("/recon/users-svc/");
        assert_eq!(keys.member("m/1"), "/recon/users-svc/members/m%2F1");
        assert_eq!(keys.election_key(0x1a2b), "/recon/users-svc/election/1a2b");
        assert_eq!(
            keys.entry("run-1", Collection::Claims, "t1"),
            "/recon/users-svc/runs/run-1/claims/t1"
        );
        assert_eq!(keys.current_run(), "/recon/users-svc/run/current");
        assert_eq!(keys.barrier("r"), "/recon/users-svc/runs/r/barrier");
    }
}
