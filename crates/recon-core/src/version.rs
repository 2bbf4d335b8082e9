//! Entity versions assigned by the monolith at commit time.
//!
//! A version is `(generation, sequence)`, compared lexicographically.
//! `sequence` comes from one monotonic counter per monolith; `generation` is
//! bumped whenever the monolith is restored from a backup, so a write made
//! after a restore is newer than anything from before it even though the
//! restored counter went back.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The version of an entity or of a whole source snapshot (a watermark).
///
/// The derived ordering compares `generation` first, then `sequence`, which is
/// exactly the lexicographic order DESIGN §3 asks for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Version {
    /// Bumped by every restore of the monolith from a backup.
    pub generation: u64,
    /// Value of the monolith's monotonic change counter at commit time.
    pub sequence: u64,
}

impl Version {
    /// The lowest possible version; every real version is above it.
    pub const ZERO: Version = Version {
        generation: 0,
        sequence: 0,
    };

    /// Builds a version from its two parts.
    pub const fn new(generation: u64, sequence: u64) -> Self {
        Self {
            generation,
            sequence,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}", self.generation, self.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_dominates_sequence() {
        assert!(Version::new(2, 1) > Version::new(1, 1_000_000));
        assert!(Version::new(1, 5) > Version::new(1, 4));
        assert!(Version::ZERO < Version::new(0, 1));
    }

    #[test]
    fn serializes_as_object() {
        let json = serde_json::to_string(&Version::new(3, 42)).expect("serialize");
        assert_eq!(json, r#"{"generation":3,"sequence":42}"#);
    }
}
