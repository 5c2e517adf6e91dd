//! A vhost's housekeeping task: it wakes queues whose head message expires,
//! routes dead letters to their dead-letter exchange (with `x-death`), and
//! settles a dead letter's record in its old queue once the copies are
//! stored (synced, for persistent messages on durable queues), so a crash
//! in the middle of the move loses nothing (at worst the message is in
//! both queues after recovery).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

use super::VHost;
use crate::broker::chores::Chore;
use crate::broker::dead_letter::{is_cycle, republished};
use crate::broker::message::{decode_properties, now_ms, Message};
use crate::broker::queue::{Queue, Stored};
use crate::store::{DiskRef, SyncStatus};

/// What to do for a queue at a time.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Expire messages at its head.
    Head,
    /// Delete it if it has gone unused for its x-expires.
    Unused,
    /// Route the vhost's delayed messages that are due.
    Delayed,
}

/// A queue to wake at a time.
struct Due(u64, Weak<Queue>, Wake);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// The wake-ups ahead, earliest first. A queue arms its timer again
/// whenever its head comes to expire earlier, which leaves the later
/// wake-up in the heap, stale (the queue ignores it); so the latest time
/// each queue armed is remembered, and stale entries are dropped whenever
/// they outnumber the live ones, instead of piling up (ever-earlier
/// per-message expirations would add one per publish).
#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<Due>>,
    /// Per (queue, kind): the time it armed last.
    armed: ahash::AHashMap<(usize, WakeKey), u64>,
}

/// `Wake` as a map key. The vhost's delayed messages arm their wake-up the
/// same way a queue does (only ever earlier; a stale one is ignored by
/// `take_due`), so they are keyed alike, under one key per vhost.
type WakeKey = u8;

fn key(due: &Due) -> (usize, WakeKey) {
    let kind = match due.2 {
        Wake::Head => 0,
        Wake::Unused => 1,
        Wake::Delayed => 2,
    };
    (due.1.as_ptr() as usize, kind)
}

impl Timers {
    fn push(&mut self, due: Due) {
        self.armed.insert(key(&due), due.0);
        self.heap.push(Reverse(due));
        if self.heap.len() > 64 && self.heap.len() > 2 * self.armed.len() {
            let armed = &self.armed;
            self.heap
                .retain(|Reverse(d)| armed.get(&key(d)) == Some(&d.0));
        }
    }

    fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(d)| d.0)
    }

    /// The earliest wake-up if it is due at `now`.
    fn pop_due(&mut self, now: u64) -> Option<Due> {
        if self.next_at()? > now {
            return None;
        }
        let Reverse(due) = self.heap.pop()?;
        let k = key(&due);
        if self.armed.get(&k) == Some(&due.0) {
            self.armed.remove(&k);
        }
        Some(due)
    }
}

/// A record to settle once its copies elsewhere are synced: a dead
/// letter's in its old queue, or a delayed message's in the delayed log.
#[derive(Debug)]
pub(super) enum Pending {
    Queue(Arc<Queue>, DiskRef),
    Delayed(DiskRef),
}

/// Records waiting for their sync round.
pub(super) type Waiting = Vec<(u64, Pending)>;

impl VHost {
    /// Start the housekeeping task (once; needs a tokio runtime).
    pub fn start_housekeeping(self: &Arc<Self>) {
        if let Some(rx) = self.chore_rx.lock().take() {
            let sync = self.store.syncer.subscribe();
            tokio::spawn(run(Arc::downgrade(self), rx, sync));
        }
        // Recovered queues may hold messages that expired while the broker
        // was down, or that expire later: have each look at its head.
        let queues: Vec<Arc<Queue>> = self.names.read().queues.values().cloned().collect();
        for q in queues {
            q.expire_due(None);
            q.touch();
        }
        self.delayed.reschedule();
    }

    /// Settle the records whose copies are synced up to round `synced`
    /// (at shutdown, after the last sync round: u64::MAX).
    pub fn settle_pending(&self, synced: u64) {
        let done: Waiting = {
            let mut pending = self.pending.lock();
            let (done, rest) = std::mem::take(&mut *pending)
                .into_iter()
                .partition(|(round, _)| *round <= synced);
            *pending = rest;
            done
        };
        for (_, p) in done {
            match p {
                Pending::Queue(q, r) => q.settle([r]),
                Pending::Delayed(r) => self.delayed.settle([r]),
            }
        }
    }

    /// Route a queue's dead letters; records whose copies must be synced
    /// first go to `pending`.
    fn route_dead_letters(&self, source: &Arc<Queue>) {
        let letters = source.take_dead_letters();
        let (dlx, dlx_key) = source.dead_letter_target();
        let Some(dlx) = dlx.as_deref() else {
            source.settle(letters.iter().filter_map(|d| d.message.disk));
            return;
        };
        let now_s = now_ms() / 1000;
        let mut settle_now = Vec::new();
        for letter in letters {
            let old = &letter.message.message;
            let key = match &dlx_key {
                Some(k) => k.clone(),
                None => old.routing_key.to_string(),
            };
            let (message, deaths) = republished(old, &source.name, letter.reason, dlx, &key, now_s);
            // A missing dead-letter exchange drops the message, as in RabbitMQ.
            let stored = self.route_and_store(Arc::new(message), |q| !is_cycle(&deaths, &q.name));
            if let Some(r) = letter.message.disk {
                self.settle_when_stored(stored, Pending::Queue(source.clone(), r), &mut settle_now);
            }
        }
        if !settle_now.is_empty() {
            source.settle(settle_now);
        }
    }

    /// Route the delayed messages that are due, as if published now (an
    /// exchange deleted meanwhile drops them).
    fn fire_delayed(&self, at_ms: u64) {
        let mut settle_now = Vec::new();
        for held in self.delayed.take_due(now_ms(), at_ms) {
            let stored = self.route_and_store(held.message, |_| true);
            if let Some(r) = held.disk {
                self.settle_when_stored(stored, Pending::Delayed(r), &mut settle_now);
            }
        }
        if !settle_now.is_empty() {
            self.delayed.settle(settle_now);
        }
    }

    /// Route `message` by its exchange and routing key and put it on the
    /// target queues that `keep` accepts.
    fn route_and_store(&self, message: Arc<Message>, keep: impl Fn(&Queue) -> bool) -> Stored {
        let props = decode_properties(&message.properties);
        let mut targets = Vec::new();
        let _ = self.route(
            &message.exchange,
            &[&message.routing_key],
            props.as_ref(),
            &mut targets,
        );
        targets
            .iter()
            .filter(|q| keep(q))
            .fold(Stored::Done, |s, q| s.and(q.publish(message.clone())))
    }

    /// A moved message's old record: settled now (`settle_now`, same
    /// owner), after the sync round of its copies (`pending`), or kept when
    /// the copies could not be stored (it comes back after a restart).
    fn settle_when_stored(&self, stored: Stored, old: Pending, settle_now: &mut Vec<DiskRef>) {
        match stored {
            Stored::Failed => {}
            s if s.sync_round() > 0 => self.pending.lock().push((s.sync_round(), old)),
            _ => match old {
                Pending::Queue(_, r) | Pending::Delayed(r) => settle_now.push(r),
            },
        }
    }
}

async fn run(
    vhost: Weak<VHost>,
    mut chores: UnboundedReceiver<Chore>,
    mut sync: watch::Receiver<SyncStatus>,
) {
    let mut timers = Timers::default();
    // Whether the store refused writes (a full disk) when last seen: once
    // it recovers, queues whose read-back of spilled messages failed need a
    // dispatch, as nothing else may touch them. So every change of the sync
    // status is watched, not only while confirms wait.
    let mut refusing = sync.borrow().failed;
    loop {
        let next = timers.next_at();
        let sleep = async {
            match next {
                // One ms late rather than early: expiry compares with the
                // wall clock.
                Some(at) => {
                    tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()) + 1)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            chore = chores.recv() => match chore {
                None => return,
                Some(Chore::Expire { at_ms, queue }) => timers.push(Due(at_ms, queue, Wake::Head)),
                Some(Chore::ExpireQueue { at_ms, queue }) => timers.push(Due(at_ms, queue, Wake::Unused)),
                Some(Chore::FireDelayed { at_ms }) => timers.push(Due(at_ms, Weak::new(), Wake::Delayed)),
                Some(Chore::DeadLetters(queue)) => {
                    let (Some(v), Some(q)) = (vhost.upgrade(), queue.upgrade()) else {
                        continue;
                    };
                    v.route_dead_letters(&q);
                }
            },
            _ = sleep => {
                let now = now_ms();
                while let Some(Due(at, q, wake)) = timers.pop_due(now) {
                    match (wake, q.upgrade(), vhost.upgrade()) {
                        (Wake::Delayed, _, Some(v)) => v.fire_delayed(at),
                        (Wake::Head, Some(q), _) => q.expire_due(Some(at)),
                        (Wake::Unused, Some(q), Some(v)) => v.expire_queue(&q),
                        _ => {}
                    }
                }
            }
            changed = sync.changed() => {
                if changed.is_err() {
                    return;
                }
                let status = *sync.borrow_and_update();
                if let Some(v) = vhost.upgrade() {
                    v.settle_pending(status.synced);
                    if refusing && !status.failed {
                        v.dispatch_all();
                    }
                }
                refusing = status.failed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superseded_wake_ups_do_not_pile_up() {
        // One queue (only the pointer is used, as the key).
        let weak: Weak<Queue> = Weak::new();
        let mut timers = Timers::default();
        for at in (0..100_000u64).rev() {
            timers.push(Due(1_000_000 + at, weak.clone(), Wake::Head));
        }
        assert!(timers.heap.len() <= 130, "{}", timers.heap.len());
        let due = timers.pop_due(u64::MAX).map(|d| d.0);
        assert_eq!(due, Some(1_000_000));
    }

    #[test]
    fn superseded_delayed_wake_ups_do_not_pile_up_either() {
        let mut timers = Timers::default();
        for at in (0..100_000u64).rev() {
            timers.push(Due(1_000_000 + at, Weak::new(), Wake::Delayed));
        }
        assert!(timers.heap.len() <= 130, "{}", timers.heap.len());
    }
}
