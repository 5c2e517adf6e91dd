//! Wake-ups for parked consumers: how a consumer's credit, a channel's
//! credit or a connection's mailbox tells the queues that parked consumers
//! on it that it can take more again (see `consumer_set`).
//!
//! A queue registers its [`WakeList`] with the [`Waiters`] of each thing it
//! has consumers parked on, and unregisters once none are parked there any
//! more. Whatever frees that thing (an ack's credit release, a qos change, a
//! mailbox drained by its connection) calls [`Waiters::notify`], which
//! appends a [`Wake`] to each registered queue's list; the freeing side then
//! asks those queues to dispatch, as it did before parking existed, and
//! dispatch reads the list first.
//!
//! Lock order: a queue's state, then a `Waiters`, then a `WakeList`. The
//! freeing side takes only the last two, in that order.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ahash::AHashMap;
use indexmap::IndexMap;
use parking_lot::Mutex;

use super::consumer_set::Key;

/// What became free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wake {
    /// This consumer's own prefetch credit.
    Consumer(Key),
    /// Channel-wide credit of (connection id, channel).
    Channel(u64, u16),
    /// The mailbox of this connection.
    Connection(u64),
}

/// A queue's inbox of wake-ups, each with how many units came free.
#[derive(Debug)]
pub struct WakeList {
    id: u64,
    /// One entry per thing that freed up (units summed), so the list is
    /// bounded by what the queue waits on, however long nobody reads it.
    pending: Mutex<IndexMap<Wake, u32, ahash::RandomState>>,
    /// Whether `pending` may hold anything: read without the lock on every
    /// pick (the common case is an empty list). Set under the lock before
    /// the notifier dispatches the queue, so that dispatch sees it.
    any: AtomicBool,
}

static NEXT_LIST: AtomicU64 = AtomicU64::new(1);

impl WakeList {
    /// An empty list with a process-unique id.
    pub fn new() -> Arc<WakeList> {
        Arc::new(WakeList {
            id: NEXT_LIST.fetch_add(1, Ordering::Relaxed),
            pending: Mutex::new(IndexMap::default()),
            any: AtomicBool::new(false),
        })
    }

    fn push(&self, wake: Wake, units: u32) {
        let mut pending = self.pending.lock();
        let n = pending.entry(wake).or_insert(0);
        *n = n.saturating_add(units);
        self.any.store(true, Ordering::Release);
    }

    /// Take what has arrived.
    pub fn take(&self) -> Vec<(Wake, u32)> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut pending = self.pending.lock();
        self.any.store(false, Ordering::Relaxed);
        if pending.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut *pending).into_iter().collect()
    }
}

/// The queues waiting on one thing, each with what to tell it.
#[derive(Debug, Default)]
pub struct Waiters(Mutex<AHashMap<u64, (Arc<WakeList>, Wake)>>);

impl Waiters {
    /// Tell `list` `wake` whenever this frees up (once per list).
    pub fn register(&self, list: &Arc<WakeList>, wake: Wake) {
        self.0.lock().insert(list.id, (list.clone(), wake));
    }

    /// Stop telling `list`.
    pub fn unregister(&self, list: &WakeList) {
        self.0.lock().remove(&list.id);
    }

    /// `units` came free: tell every registered list.
    pub fn notify(&self, units: u32) {
        let waiters = self.0.lock();
        for (list, wake) in waiters.values() {
            list.push(*wake, units);
        }
    }

    /// How many lists are registered (tests).
    pub fn len(&self) -> usize {
        self.0.lock().len()
    }

    /// No list is registered (tests).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
