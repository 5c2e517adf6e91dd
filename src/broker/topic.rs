//! Topic-exchange matching with a trie over the dot-separated words of the
//! binding patterns, so routing a key costs a walk of the trie, not a regex
//! per binding.
//!
//! RabbitMQ's rules: `*` matches exactly one word (which may be empty: `a.*.b`
//! matches `a..b`), `#` matches zero or more words, the empty routing key is
//! zero words (so it matches `#` and the empty pattern but not `*`).
//!
//! Cost: matching is a walk of an automaton whose states are (trie node,
//! words left, inside a `#`), each visited at most once, so a publish costs
//! at most trie nodes × key words whatever the patterns. Consecutive `#`
//! words mean the same as one and are stored as one.

use std::cell::RefCell;
use std::collections::HashSet;

use std::hash::Hash;

use super::IndexSet;

/// Destinations of type `D` indexed by topic pattern.
#[derive(Debug)]
pub struct TopicTrie<D: Eq + Hash + Clone> {
    root: Node<D>,
}

/// Children are boxed: a growing map of a million words moves pointers,
/// not nodes.
type Children<D> = hashbrown::HashMap<String, Box<Node<D>>, ahash::RandomState>;

#[derive(Debug)]
struct Node<D: Eq + Hash + Clone> {
    children: Children<D>,
    dests: IndexSet<D>,
}

impl<D: Eq + Hash + Clone> Default for Node<D> {
    fn default() -> Self {
        Node {
            children: Children::with_hasher(super::hasher()),
            dests: IndexSet::default(),
        }
    }
}

impl<D: Eq + Hash + Clone> Default for TopicTrie<D> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
        }
    }
}

/// Split a key or pattern into words; the empty string is zero words.
fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

/// A pattern's words with runs of `#` collapsed to one (`#.#` matches
/// exactly what `#` matches).
fn pattern_words(pattern: &str) -> Vec<&str> {
    let mut out = words(pattern);
    out.dedup_by(|a, b| *a == "#" && *b == "#");
    out
}

/// A binding pattern as the trie stores it: runs of `#` collapsed.
pub fn normalized(pattern: &str) -> String {
    pattern_words(pattern).join(".")
}

impl<D: Eq + Hash + Clone> TopicTrie<D> {
    /// Add `dest` under `pattern`; false if it was already there.
    pub fn insert(&mut self, pattern: &str, dest: D) -> bool {
        let mut node = &mut self.root;
        for w in pattern_words(pattern) {
            // One lookup; the word is allocated only for a new node.
            node = node.children.entry_ref(w).or_default();
        }
        node.dests.insert(dest)
    }

    /// Remove `dest` from `pattern`; false if it was not there.
    pub fn remove(&mut self, pattern: &str, dest: &D) -> bool {
        fn rec<D: Eq + Hash + Clone>(node: &mut Node<D>, ws: &[&str], dest: &D) -> bool {
            match ws.split_first() {
                None => node.dests.swap_remove(dest),
                Some((w, rest)) => {
                    let Some(child) = node.children.get_mut(*w) else {
                        return false;
                    };
                    let removed = rec(child, rest, dest);
                    if child.dests.is_empty() && child.children.is_empty() {
                        node.children.remove(*w);
                    }
                    removed
                }
            }
        }
        rec(&mut self.root, &pattern_words(pattern), dest)
    }

    /// Every destination whose pattern matches `key`, each once.
    pub fn matches(&self, key: &str, out: &mut IndexSet<D>) {
        let ws = words(key);
        SEEN.with(|cell| {
            let mut fresh = Seen::with_hasher(super::hasher());
            let mut kept = cell.try_borrow_mut();
            let seen = match kept.as_deref_mut() {
                Ok(seen) => seen,
                Err(_) => &mut fresh,
            };
            seen.clear();
            let mut walk = Walk {
                words: &ws,
                seen,
                out,
            };
            walk.at_node(&self.root, 0, false);
            if seen.capacity() > SEEN_KEPT {
                *seen = Seen::with_hasher(super::hasher());
            }
        });
    }
}

/// States of a walk: (node address, words consumed, inside the node's `#`).
type Seen = HashSet<(usize, usize, bool), ahash::RandomState>;

/// States a thread's set keeps room for between publishes (a pathological
/// pattern and key may need many more once).
const SEEN_KEPT: usize = 1024;

thread_local! {
    /// Each thread's set of visited states, cleared and reused by every
    /// match instead of allocated per publish.
    static SEEN: RefCell<Seen> = RefCell::new(Seen::with_hasher(super::hasher()));
}

/// One match of a key against the trie: the states already visited.
struct Walk<'a, 'k, D: Eq + Hash + Clone> {
    words: &'a [&'k str],
    seen: &'a mut Seen,
    out: &'a mut IndexSet<D>,
}

impl<D: Eq + Hash + Clone> Walk<'_, '_, D> {
    /// At `node` with `at` words consumed. Only states below a `#` can be
    /// reached twice (by different splits of the key), so only those are
    /// remembered: a walk through patterns without `#` touches no set.
    fn at_node(&mut self, node: &Node<D>, at: usize, under_hash: bool) {
        if under_hash
            && !self
                .seen
                .insert((node as *const Node<D> as usize, at, false))
        {
            return;
        }
        if let Some(hash) = node.children.get("#") {
            self.in_hash(hash, at);
        }
        match self.words.get(at) {
            None => self.out.extend(node.dests.iter().cloned()),
            Some(w) => {
                if let Some(child) = node.children.get(*w) {
                    self.at_node(child, at + 1, under_hash);
                }
                if *w != "*" {
                    if let Some(star) = node.children.get("*") {
                        self.at_node(star, at + 1, under_hash);
                    }
                }
            }
        }
    }

    /// At the `#` node `hash`, which may swallow the word at `at` and any
    /// after it, or stop swallowing here.
    fn in_hash(&mut self, hash: &Node<D>, at: usize) {
        let mut at = at;
        loop {
            if !self
                .seen
                .insert((hash as *const Node<D> as usize, at, true))
            {
                return;
            }
            self.at_node(hash, at, true);
            if at >= self.words.len() {
                return;
            }
            at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, key: &str) -> bool {
        let mut t = TopicTrie::default();
        t.insert(pattern, 1);
        let mut out = IndexSet::default();
        t.matches(key, &mut out);
        !out.is_empty()
    }

    #[test]
    fn literal_words() {
        assert!(matches("a.b.c", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
    }

    #[test]
    fn star_matches_exactly_one_word() {
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.c"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.*.b", "a..b"));
        assert!(matches("*.*", "."));
        assert!(matches("*.*", "a."));
        assert!(!matches("*", ""));
    }

    #[test]
    fn hash_matches_zero_or_more_words() {
        assert!(matches("#", ""));
        assert!(matches("#", "a.b.c"));
        assert!(matches("a.#", "a"));
        assert!(matches("a.#", "a.b.c"));
        assert!(matches("#.c", "c"));
        assert!(matches("a.#.c", "a.c"));
        assert!(matches("a.#.c", "a.x.y.c"));
        assert!(!matches("a.#.c", "a.x.y"));
        assert!(!matches("#.*", ""));
        assert!(matches("#.*", "a"));
        assert!(matches("#.#", ""));
    }

    #[test]
    fn hash_dot_only_matches_trailing_dot() {
        assert!(matches("#.", "a."));
        assert!(matches("#.", "."));
        assert!(!matches("#.", "a"));
    }

    #[test]
    fn empty_pattern_matches_only_empty_key() {
        assert!(matches("", ""));
        assert!(!matches("", "a"));
    }

    #[test]
    fn literal_star_in_key_is_not_double_counted() {
        let mut t = TopicTrie::default();
        t.insert("*", 1);
        let mut out = IndexSet::default();
        t.matches("*", &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn overlapping_patterns_give_one_copy() {
        let mut t = TopicTrie::default();
        t.insert("a.*", "q");
        t.insert("a.#", "q");
        t.insert("#", "q");
        t.insert("#", "r");
        let mut out = IndexSet::default();
        t.matches("a.b", &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn many_hashes_against_a_long_key_stay_fast() {
        let mut t = TopicTrie::default();
        t.insert("#.#.#.#.#.#.#.#.#.#.x", 1);
        let key = vec!["a"; 200].join(".");
        let mut out = IndexSet::default();
        t.matches(&key, &mut out);
        assert!(out.is_empty());
        t.matches(&format!("{key}.x"), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_hundred_hashes_against_a_long_key_visit_few_states() {
        let mut t = TopicTrie::default();
        let pattern = format!("{}.x", vec!["#"; 127].join("."));
        t.insert(&pattern, 1);
        t.insert(&vec!["#.a"; 60].join("."), 2);
        let key = vec!["a"; 128].join(".");
        let ws = words(&key);
        let mut out = IndexSet::default();
        let mut seen = Seen::with_hasher(crate::broker::hasher());
        let mut walk = Walk {
            words: &ws,
            seen: &mut seen,
            out: &mut out,
        };
        walk.at_node(&t.root, 0, false);
        // Runs of `#` are one node: 3 nodes for the first pattern, 120 for
        // the second; each state at most once per key position and mode.
        assert!(
            walk.seen.len() <= 2 * (3 + 120 + 1) * 129,
            "{}",
            walk.seen.len()
        );
        assert_eq!(out.iter().copied().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn runs_of_hashes_are_one_entry() {
        assert_eq!(normalized("a.#.#.b"), normalized("a.#.b"));
        assert_ne!(normalized("a.#.b"), normalized("a.*.b"));
        assert!(matches("#.#.#", ""));
        assert!(matches("a.#.#.c", "a.c"));
        assert!(matches("a.#.#.c", "a.b.b.c"));
    }

    #[test]
    fn remove_prunes() {
        let mut t = TopicTrie::default();
        t.insert("a.b.#", 1);
        assert!(t.remove("a.b.#", &1));
        assert!(!t.remove("a.b.#", &1));
        assert!(t.root.children.is_empty());
    }
}
