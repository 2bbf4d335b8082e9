//! The node layout under a service's prefix (see the crate docs for the
//! table), and how ids become node names.
//!
//! Ids become single path segments: `%` and `/` are escaped as etcd's keys
//! do (`%25`, `%2F`), and so is what ZooKeeper refuses in a node name — a
//! leading `.` (the names `.` and `..`), control characters and the code
//! points ZooKeeper reserves — as `%XX` per UTF-8 byte. Escaping is
//! canonical: a segment is only read back if escaping its id gives it again.

use recon_coord::backend::Key;

/// Builds every path of one service's coordination state.
#[derive(Debug, Clone)]
pub(crate) struct Nodes {
    root: String,
}

/// The children of the root that exist for the coordinator's life; created
/// (with the root) on connect.
pub(crate) const DIRECTORIES: [&str; 6] =
    ["members", "election", "run", "runs", "triggers", "history"];

impl Nodes {
    /// Paths under `prefix` (a trailing `/` is ignored).
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            root: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// The root node, without a trailing `/`.
    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    /// A child of the root.
    pub(crate) fn directory(&self, name: &str) -> String {
        format!("{}/{name}", self.root)
    }

    pub(crate) fn members(&self) -> String {
        self.directory("members")
    }

    pub(crate) fn member(&self, member: &str) -> String {
        format!("{}/{}", self.members(), escape(member))
    }

    /// The election's parent node.
    /// The node of a protocol key: its segments escaped, under the root.
    pub(crate) fn path(&self, key: &Key) -> String {
        key.path_under(&self.root, escape)
    }

    pub(crate) fn election(&self) -> String {
        self.directory("election")
    }

    /// The path a session's candidate node is created with; ZooKeeper
    /// appends a ten-digit sequence number.
    pub(crate) fn candidate_prefix(&self, session_id: i64) -> String {
        format!("{}/{}", self.election(), candidate_name_prefix(session_id))
    }
}

/// The name a session's candidate node starts with: the session id in
/// lowercase hex, then `-` (ZooKeeper appends the sequence). One session
/// has at most one candidate, and finds it again by this name after a
/// create whose answer was lost.
pub(crate) fn candidate_name_prefix(session_id: i64) -> String {
    format!("{:016x}-", session_id as u64)
}

/// The sequence number of a candidate node's name; `None` if the name is
/// not one the election makes.
pub(crate) fn candidate_sequence(name: &str) -> Option<u64> {
    let (_, digits) = name.rsplit_once('-')?;
    if digits.len() < 10 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The election's order: candidate names by sequence number, lowest (the
/// leader) first. Names that are not candidates are left out.
pub(crate) fn election_order(names: &[String]) -> Vec<(u64, String)> {
    let mut order: Vec<(u64, String)> = names
        .iter()
        .filter_map(|name| candidate_sequence(name).map(|sequence| (sequence, name.clone())))
        .collect();
    order.sort();
    order
}

/// Whether ZooKeeper refuses `character` in a node name (its list also has
/// the surrogates U+D800–U+DFFF, which a Rust `char` never is).
fn refused(character: char) -> bool {
    matches!(character,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{e000}'..='\u{f8ff}' | '\u{fff0}'..='\u{ffff}')
}

/// An id as one node name.
pub(crate) fn escape(id: &str) -> String {
    let mut name = String::with_capacity(id.len());
    for (position, character) in id.char_indices() {
        let must_escape = character == '%'
            || character == '/'
            || (character == '.' && position == 0)
            || refused(character);
        if must_escape {
            let mut bytes = [0_u8; 4];
            for byte in character.encode_utf8(&mut bytes).bytes() {
                name.push_str(&format!("%{byte:02X}"));
            }
        } else {
            name.push(character);
        }
    }
    name
}

/// The id of a node name; `None` if [`escape`] does not make it.
pub(crate) fn unescape(name: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(name.len());
    let mut rest = name.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    let id = String::from_utf8(bytes).ok()?;
    (escape(&id) == name).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use recon_coord::protocol::{Collection, Keys};

    #[test]
    fn ids_round_trip_as_one_valid_node_name() {
        for id in [
            "plain",
            "a/b",
            "50%",
            "%2F",
            "/",
            ".",
            "..",
            ".hidden",
            "a.b.",
            "zookeeper",
            "tab\there",
            "é-ü",
            "\u{e000}private",
            "tenant-1/users/after=a%2Fb",
        ] {
            let name = escape(id);
            assert!(!name.contains('/'), "{name} holds a slash");
            assert!(!name.starts_with('.'), "{name} starts with a dot");
            assert!(
                !name.chars().any(refused),
                "{name} holds a refused character"
            );
            assert_eq!(unescape(&name).as_deref(), Some(id), "{name}");
        }
    }

    #[test]
    fn malformed_or_non_canonical_names_are_refused() {
        for name in ["%", "%2", "%zz", "%41", "a/b", ".x", "%2f", "%FF"] {
            assert_eq!(unescape(name), None, "{name}");
        }
    }

    #[test]
    fn paths_sit_under_the_prefix_without_double_slashes() {
        let nodes = Nodes::new("/recon/users-svc/");
        assert_eq!(nodes.member("m/1"), "/recon/users-svc/members/m%2F1");
        assert_eq!(
            nodes.candidate_prefix(0x1a2b),
            "/recon/users-svc/election/0000000000001a2b-"
        );
        assert_eq!(
            nodes.path(&Keys::entry("run-1", Collection::Claims, "t1")),
            "/recon/users-svc/runs/run-1/claims/t1"
        );
        assert_eq!(
            nodes.path(&Keys::current_run()),
            "/recon/users-svc/run/current"
        );
        assert_eq!(
            nodes.path(&Keys::plan_page("r", 3)),
            "/recon/users-svc/runs/r/plan-pages/000003"
        );
    }

    #[test]
    fn the_lowest_sequence_leads_whatever_the_session() {
        let names: Vec<String> = [
            "00000000000000ff-0000000012",
            "0000000000000001-0000000013",
            "0000000000000abc-0000000003",
            "not-a-candidate",
            "0000000000000002-2147483648",
        ]
        .iter()
        .map(|name| name.to_string())
        .collect();
        let order = election_order(&names);
        let sequences: Vec<u64> = order.iter().map(|(sequence, _)| *sequence).collect();
        assert_eq!(sequences, [3, 12, 13, 2_147_483_648]);
        assert_eq!(order[0].1, "0000000000000abc-0000000003");
    }

    #[test]
    fn candidate_names_carry_their_session() {
        let name = format!("{}0000000042", candidate_name_prefix(-1));
        assert!(name.starts_with("ffffffffffffffff-"));
        assert_eq!(candidate_sequence(&name), Some(42));
        assert_eq!(candidate_sequence("x-12"), None);
    }
}
