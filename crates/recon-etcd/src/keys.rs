//! The protocol's keys (`recon_coord::protocol::keys`) as etcd keys under a
//! service's prefix (see the crate docs for the table). Ids become single
//! key segments: `%` and `/` are escaped so that an id can never reach into
//! another key's namespace.

pub(crate) use recon_coord::backend::{
    Key, escape_segment as escape, unescape_segment as unescape,
};
use recon_coord::protocol::Keys as ProtocolKeys;

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

    pub(crate) fn member(&self, member: &str) -> String {
        self.path(&ProtocolKeys::member(member))
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

    /// The etcd key of a protocol key: its segments escaped, under the
    /// prefix.
    pub(crate) fn path(&self, key: &Key) -> String {
        key.path_under(&self.root, escape)
    }

    /// Every key directly under `key` starts with this.
    pub(crate) fn children_prefix(&self, key: &Key) -> String {
        format!("{}/", self.path(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recon_coord::protocol::Collection;

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
            keys.path(&ProtocolKeys::entry("run-1", Collection::Claims, "t1")),
            "/recon/users-svc/runs/run-1/claims/t1"
        );
        assert_eq!(
            keys.path(&ProtocolKeys::current_run()),
            "/recon/users-svc/run/current"
        );
        assert_eq!(
            keys.children_prefix(&ProtocolKeys::history_root()),
            "/recon/users-svc/history/"
        );
    }
}
