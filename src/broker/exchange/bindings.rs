//! The bindings of one exchange, indexed so that bind, unbind and the
//! removal of every binding to one destination cost O(1) per binding
//! touched, however many bindings the exchange has.
//!
//! Bindings are grouped by destination and *table key*: the key under
//! which the routing table stores them (the routing key; for a topic
//! exchange the pattern with runs of `#` collapsed, since `a.#.#` and `a.#`
//! share one trie entry). A group holds the bindings that differ only in
//! their arguments, almost always one. The routing table needs an entry
//! for a group while the group is not empty, and a fanout exchange needs a
//! destination while it has any group.

use std::sync::Arc;

use indexmap::Equivalent;

use super::super::IndexSet;

/// Maps keyed by destinations and keys: ahash, as the routing tables.
type IndexMap<K, V> = indexmap::IndexMap<K, V, ahash::RandomState>;

use super::{Binding, Destination};

/// What adding a binding changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// An identical binding exists.
    Duplicate,
    /// The first of its group: the routing table needs the entry.
    FirstOfGroup,
    /// Joined a group that already has the routing table entry.
    Joined,
}

/// What removing a binding changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Removed {
    /// There was no such binding.
    Missing,
    /// Its group is empty now: the routing table entry may go.
    LastOfGroup,
    /// Others of its group remain.
    Left,
}

/// A group's destination and table key; the key is shared with
/// `by_dest` (one allocation per group, not two).
type GroupKey = (Destination, Arc<str>);

/// A [`GroupKey`] made of borrowed parts, to look groups up without
/// allocating: it hashes as the tuple does (field by field).
#[derive(Hash)]
struct GroupRef<'a>(&'a Destination, &'a str);

impl Equivalent<GroupKey> for GroupRef<'_> {
    fn equivalent(&self, key: &GroupKey) -> bool {
        *self.0 == key.0 && self.1 == &*key.1
    }
}

/// An exchange's bindings.
#[derive(Debug, Default)]
pub struct BindingSet {
    groups: IndexMap<GroupKey, Vec<Binding>>,
    /// The table keys of each destination's groups.
    by_dest: IndexMap<Destination, IndexSet<Arc<str>>>,
    len: usize,
}

impl BindingSet {
    /// Add `binding`, stored under `table_key`; also the table key as the
    /// set keeps it.
    pub fn add(&mut self, binding: Binding, table_key: &str) -> (Added, Arc<str>) {
        if let Some((_, key, group)) = self
            .groups
            .get_full_mut(&GroupRef(&binding.dest, table_key))
        {
            let key = key.1.clone();
            if group.contains(&binding) {
                return (Added::Duplicate, key);
            }
            group.push(binding);
            self.len += 1;
            return (Added::Joined, key);
        }
        let key: Arc<str> = Arc::from(table_key);
        let dest = binding.dest.clone();
        self.groups
            .insert((dest.clone(), key.clone()), vec![binding]);
        self.len += 1;
        self.by_dest.entry(dest).or_default().insert(key.clone());
        (Added::FirstOfGroup, key)
    }

    /// Remove `binding`, stored under `table_key`.
    pub fn remove(&mut self, binding: &Binding, table_key: &str) -> Removed {
        let key = GroupRef(&binding.dest, table_key);
        let Some(group) = self.groups.get_mut(&key) else {
            return Removed::Missing;
        };
        let Some(pos) = group.iter().position(|b| b == binding) else {
            return Removed::Missing;
        };
        group.swap_remove(pos);
        self.len -= 1;
        if !group.is_empty() {
            return Removed::Left;
        }
        self.groups.swap_remove(&key);
        if let Some(keys) = self.by_dest.get_mut(&binding.dest) {
            keys.swap_remove(table_key);
            if keys.is_empty() {
                self.by_dest.swap_remove(&binding.dest);
            }
        }
        Removed::LastOfGroup
    }

    /// Remove every binding to `dest`: the table keys its groups had, and
    /// how many bindings went.
    pub fn remove_dest(&mut self, dest: &Destination) -> (Vec<Arc<str>>, usize) {
        let Some(keys) = self.by_dest.swap_remove(dest) else {
            return (Vec::new(), 0);
        };
        let mut gone = 0;
        for k in &keys {
            if let Some(group) = self.groups.swap_remove(&GroupRef(dest, k)) {
                gone += group.len();
            }
        }
        self.len -= gone;
        (keys.into_iter().collect(), gone)
    }

    /// Whether an identical binding exists.
    pub fn contains(&self, binding: &Binding, table_key: &str) -> bool {
        self.groups
            .get(&GroupRef(&binding.dest, table_key))
            .is_some_and(|g| g.contains(binding))
    }

    /// Whether any binding goes to `dest`.
    pub fn has_dest(&self, dest: &Destination) -> bool {
        self.by_dest.contains_key(dest)
    }

    /// Every binding.
    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.groups.values().flatten()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::types::{AMQPValue, FieldTable};

    use super::*;

    fn b(dest: &str, key: &str, arg: Option<i32>) -> Binding {
        let mut arguments = FieldTable::default();
        if let Some(v) = arg {
            arguments.insert("x".into(), AMQPValue::LongInt(v));
        }
        Binding {
            dest: Destination::Queue(Arc::from(dest)),
            routing_key: key.to_string(),
            arguments,
        }
    }

    #[test]
    fn groups_share_one_table_entry_until_the_last_goes() {
        let mut set = BindingSet::default();
        let k = || "k";
        assert_eq!(set.add(b("q", "k", None), k()).0, Added::FirstOfGroup);
        assert_eq!(set.add(b("q", "k", None), k()).0, Added::Duplicate);
        assert_eq!(set.add(b("q", "k", Some(1)), k()).0, Added::Joined);
        assert_eq!(set.iter().count(), 2);
        assert_eq!(set.remove(&b("q", "k", Some(2)), "k"), Removed::Missing);
        assert_eq!(set.remove(&b("q", "k", None), "k"), Removed::Left);
        assert!(set.has_dest(&b("q", "k", None).dest));
        assert_eq!(set.remove(&b("q", "k", Some(1)), "k"), Removed::LastOfGroup);
        assert!(!set.has_dest(&b("q", "k", None).dest));
        assert!(set.is_empty());
    }

    #[test]
    fn removing_a_destination_takes_all_its_groups() {
        let mut set = BindingSet::default();
        for i in 0..1000 {
            set.add(b("q", &format!("k{i}"), None), &format!("k{i}"));
            set.add(b("other", &format!("k{i}"), None), &format!("k{i}"));
        }
        let (keys, n) = set.remove_dest(&b("q", "", None).dest);
        assert_eq!((keys.len(), n), (1000, 1000));
        assert_eq!(set.iter().count(), 1000);
        assert!(set.iter().all(|x| x.dest == b("other", "", None).dest));
        assert!(set.contains(&b("other", "k5", None), "k5"));
        assert!(!set.contains(&b("q", "k5", None), "k5"));
    }
}
