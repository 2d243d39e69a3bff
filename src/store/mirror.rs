//! A mirror: the sled layout held by the node, with another store (PostgreSQL) as the durable
//! copy.
//!
//! [`SledStore::mirror`](super::SledStore) opens a scratch sled database (`<data>/mirror`,
//! emptied at every start and removed when dropped), fills it from the remote when the node
//! becomes active, and from then on journals every raw change it applies
//! (a key put or removed, a group's tree dropped) in the order sled applied it. Reads never
//! leave the process, so no actor waits on a network round trip; a flush hands the journal to
//! the [`Remote`], which commits it in one transaction, conditional on this node's ownership,
//! and answers only after `COMMIT` returned. The key layout, the encoding and every rule of
//! what a write changes stay in one place (`sled_store.rs`) for both stores.

use sled::IVec;

use super::StoreError;
use crate::ids::GroupId;

/// One raw change of the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put {
        tree: IVec,
        key: IVec,
        value: IVec,
    },
    Remove {
        tree: IVec,
        key: IVec,
    },
    /// A group's whole tree went (the group was deleted).
    DropTree {
        tree: IVec,
    },
}

/// The durable side of a mirror.
pub trait Remote: Send + Sync {
    /// Commits `changes` (in order, after any earlier ones a failed commit kept) with this
    /// node's pending claims, in one transaction conditional on this node's ownership, and
    /// answers once it is committed. `claims` are the epochs the actors asking for this commit
    /// hold; the answer lists those of them that are fenced (none unless another claim came
    /// after theirs). A commit whose outcome is unknown (the connection was lost during it)
    /// keeps its changes for the next one: every change is idempotent.
    fn commit(
        &self,
        changes: Vec<Change>,
        claims: &[(GroupId, u64)],
    ) -> Result<Vec<GroupId>, StoreError>;
    /// Claims `group` for this node (its epoch + 1), committed with the next commit; returns
    /// the new epoch.
    fn claim(&self, group: &GroupId) -> Result<u64, StoreError>;
    /// Ok while writes are accepted (the remote is reachable and this node owns its groups).
    fn writable(&self) -> Result<(), StoreError>;
    /// Why this node lost ownership, if it did.
    fn fenced(&self) -> Option<String>;
}

/// The changes of one commit, reduced to one final state per key: the trees dropped (before
/// anything written to them after the drop), the keys removed and the keys written. Applying
/// them in that order gives what applying `changes` one by one gives.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    pub dropped: Vec<IVec>,
    pub removed: Vec<(IVec, IVec)>,
    pub put: Vec<(IVec, IVec, IVec)>,
}

impl Compacted {
    pub fn of(changes: Vec<Change>) -> Compacted {
        use std::collections::{BTreeMap, BTreeSet};
        let mut dropped = BTreeSet::new();
        let mut last: BTreeMap<(IVec, IVec), Option<IVec>> = BTreeMap::new();
        for change in changes {
            match change {
                Change::Put { tree, key, value } => {
                    last.insert((tree, key), Some(value));
                }
                Change::Remove { tree, key } => {
                    last.insert((tree, key), None);
                }
                Change::DropTree { tree } => {
                    last.retain(|(t, _), _| *t != tree);
                    dropped.insert(tree);
                }
            }
        }
        let mut out = Compacted {
            dropped: dropped.into_iter().collect(),
            ..Compacted::default()
        };
        for ((tree, key), value) in last {
            match value {
                Some(value) => out.put.push((tree, key, value)),
                None => out.removed.push((tree, key)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(tree: &str, key: &str, value: &str) -> Change {
        Change::Put {
            tree: tree.as_bytes().into(),
            key: key.as_bytes().into(),
            value: value.as_bytes().into(),
        }
    }

    fn remove(tree: &str, key: &str) -> Change {
        Change::Remove {
            tree: tree.as_bytes().into(),
            key: key.as_bytes().into(),
        }
    }

    #[test]
    fn the_last_change_of_a_key_wins_and_a_drop_clears_what_came_before_it() {
        let compacted = Compacted::of(vec![
            put("users", "a", "1"),
            put("users", "a", "2"),
            put("group:g", "m1", "x"),
            remove("users", "b"),
            Change::DropTree {
                tree: b"group:g".as_slice().into(),
            },
            put("group:g", "m2", "y"),
            put("users", "b", "3"),
            remove("users", "a"),
        ]);
        assert_eq!(compacted.dropped, vec![IVec::from(b"group:g".as_slice())]);
        assert_eq!(
            compacted.removed,
            vec![(IVec::from(b"users".as_slice()), IVec::from(b"a".as_slice()))]
        );
        let put: Vec<(String, String, String)> = compacted
            .put
            .iter()
            .map(|(t, k, v)| {
                let s = |b: &IVec| String::from_utf8_lossy(b).into_owned();
                (s(t), s(k), s(v))
            })
            .collect();
        assert_eq!(
            put,
            vec![
                ("group:g".into(), "m2".into(), "y".into()),
                ("users".into(), "b".into(), "3".into())
            ]
        );
    }
}
