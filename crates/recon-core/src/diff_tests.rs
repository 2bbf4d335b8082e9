use super::*;
use crate::{Record, Tenant};
use proptest::prelude::*;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::rc::Rc;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    key: String,
    version: Version,
    name: String,
}

impl DiffItem for Item {
    type Key = String;
    fn diff_key(&self) -> &String {
        &self.key
    }
    fn diff_version(&self) -> Version {
        self.version
    }
    fn diff_hash(&self) -> RowHash {
        Record::from(Tenant {
            id: self.key.clone(),
            name: self.name.clone(),
        })
        .row_hash()
    }
}

type Table = BTreeMap<String, (Version, String)>;

fn items(table: &Table) -> Vec<Item> {
    table
        .iter()
        .map(|(key, (version, name))| Item {
            key: key.clone(),
            version: *version,
            name: name.clone(),
        })
        .collect()
}

fn ok_stream(items: Vec<Item>) -> impl Iterator<Item = Result<Item, Infallible>> {
    items.into_iter().map(Ok)
}

fn table_strategy() -> impl Strategy<Value = Table> {
    prop::collection::btree_map(
        "[a-d]{1,3}",
        (
            (0u64..3, 0u64..20).prop_map(|(g, s)| Version::new(g, s)),
            "[xy]{0,2}",
        ),
        0..40,
    )
}

/// Applies a diff the way the engine does: missing and changed are set to the
/// source's data and version, phantoms are removed.
fn apply(replica: &mut Table, entries: Vec<DiffEntry<Item, Item>>) {
    for entry in entries {
        match entry {
            DiffEntry::Missing(source) | DiffEntry::Changed { source, .. } => {
                replica.insert(source.key, (source.version, source.name));
            }
            DiffEntry::Phantom(replica_item) => {
                replica.remove(&replica_item.key);
            }
            DiffEntry::Equal { .. } => {}
        }
    }
}

fn diff(source: &Table, replica: &Table) -> Vec<DiffEntry<Item, Item>> {
    merge_diff(ok_stream(items(source)), ok_stream(items(replica)))
        .collect::<Result<Vec<_>, _>>()
        .expect("infallible inputs in order")
}

proptest! {
    #[test]
    fn applying_the_diff_makes_replica_equal_to_source(source in table_strategy(), replica in table_strategy()) {
        let mut repaired = replica.clone();
        apply(&mut repaired, diff(&source, &replica));
        prop_assert_eq!(&repaired, &source);
        // And a second diff finds nothing left to do.
        let nothing_left = diff(&source, &repaired).iter().all(|entry| !entry.needs_write());
        prop_assert!(nothing_left);
    }

    #[test]
    fn diff_of_equal_streams_is_empty(table in table_strategy()) {
        let entries = diff(&table, &table);
        prop_assert_eq!(entries.len(), table.len());
        let all_equal = entries.iter().all(|entry| matches!(entry, DiffEntry::Equal { .. }));
        prop_assert!(all_equal);
    }

    #[test]
    fn every_key_is_classified_once(source in table_strategy(), replica in table_strategy()) {
        let entries = diff(&source, &replica);
        let union: std::collections::BTreeSet<&String> = source.keys().chain(replica.keys()).collect();
        prop_assert_eq!(entries.len(), union.len());
        for entry in &entries {
            match entry {
                DiffEntry::Missing(item) => prop_assert!(!replica.contains_key(&item.key)),
                DiffEntry::Phantom(item) => prop_assert!(!source.contains_key(&item.key)),
                DiffEntry::Changed { source: s, replica: r } => {
                    prop_assert_eq!(&s.key, &r.key);
                    prop_assert!(s.version != r.version || s.name != r.name);
                }
                DiffEntry::Equal { source: s, replica: r } => prop_assert_eq!(s, r),
            }
        }
    }

    #[test]
    fn memory_is_bounded_by_one_item_per_side(source in table_strategy(), replica in table_strategy()) {
        // Count items pulled from each input but not yet emitted in an entry:
        // the merge may hold at most one head per side, whatever the sizes.
        let pulled_source = Rc::new(Cell::new(0usize));
        let pulled_replica = Rc::new(Cell::new(0usize));
        let source_counter = pulled_source.clone();
        let replica_counter = pulled_replica.clone();
        let source_stream = ok_stream(items(&source)).inspect(move |_| source_counter.set(source_counter.get() + 1));
        let replica_stream = ok_stream(items(&replica)).inspect(move |_| replica_counter.set(replica_counter.get() + 1));
        let (mut emitted_source, mut emitted_replica) = (0usize, 0usize);
        for entry in merge_diff(source_stream, replica_stream) {
            match entry.expect("ordered") {
                DiffEntry::Missing(_) => emitted_source += 1,
                DiffEntry::Phantom(_) => emitted_replica += 1,
                DiffEntry::Changed { .. } | DiffEntry::Equal { .. } => {
                    emitted_source += 1;
                    emitted_replica += 1;
                }
            }
            prop_assert!(pulled_source.get() - emitted_source <= 1);
            prop_assert!(pulled_replica.get() - emitted_replica <= 1);
        }
    }
}

fn item(key: &str, sequence: u64) -> Item {
    Item {
        key: key.into(),
        version: Version::new(1, sequence),
        name: "n".into(),
    }
}

#[test]
fn same_version_different_data_is_changed() {
    let source = vec![item("a", 1)];
    let mut corrupted = item("a", 1);
    corrupted.name = "corrupted".into();
    let entries: Vec<_> = merge_diff(ok_stream(source), ok_stream(vec![corrupted]))
        .collect::<Result<_, _>>()
        .expect("ordered");
    assert!(matches!(entries[0], DiffEntry::Changed { .. }));
}

#[test]
fn source_error_stops_the_merge_before_any_later_phantom() {
    let source = vec![Ok(item("a", 1)), Err("page 2 failed"), Ok(item("z", 1))];
    let replica: Vec<Result<Item, &str>> =
        vec![Ok(item("a", 1)), Ok(item("m", 1)), Ok(item("n", 1))];
    let entries: Vec<_> = merge_diff(source.into_iter(), replica.into_iter()).collect();
    assert_eq!(entries.len(), 2, "equal, then the error, then nothing");
    assert!(matches!(entries[0], Ok(DiffEntry::Equal { .. })));
    assert!(matches!(
        entries[1],
        Err(MergeError::Input {
            side: Side::Source,
            ..
        })
    ));
}

#[test]
fn keys_going_backwards_stop_the_merge() {
    let source = vec![item("b", 1), item("a", 1)];
    let entries: Vec<_> = merge_diff(ok_stream(source), ok_stream(vec![])).collect();
    assert!(matches!(
        entries.last(),
        Some(Err(MergeError::OutOfOrder {
            side: Side::Source,
            ..
        }))
    ));
}

#[test]
fn duplicate_keys_stop_the_merge() {
    let replica = vec![item("a", 1), item("a", 2)];
    let entries: Vec<_> = merge_diff(ok_stream(vec![]), ok_stream(replica)).collect();
    assert!(matches!(
        entries.last(),
        Some(Err(MergeError::OutOfOrder {
            side: Side::Replica,
            ..
        }))
    ));
}
