//! A priority queue's ready messages (x-max-priority = N): N + 1 lanes,
//! one per priority level, each with its own log (`p<level>/` in a
//! durable queue's directory) and an equal share of the queue's window
//! (at least [`LANE_MIN_WINDOW_BYTES`]). The head is the head of the
//! highest lane that holds anything; a message's lane is its priority,
//! capped at N.
//!
//! Log numbers in [`DiskRef`]s: 0 is the queue directory's own log (the
//! single-log layout earlier versions wrote, read back whole at recovery
//! and kept until its records are settled), level L's lane is log L + 1.

use std::collections::VecDeque;
use std::io;
use std::path::Path;

use super::lane::Lane;
use crate::broker::message::{priority, Message, QueuedMessage};
use crate::store::{DiskRef, QueueLog, Store};

/// The smallest window a priority level gets, however many levels share
/// the queue's window (so a queue with 256 levels may hold up to 16 MiB).
pub const LANE_MIN_WINDOW_BYTES: u64 = 64 * 1024;

/// One lane per priority level.
#[derive(Debug)]
pub(super) struct PriorityLanes {
    /// Index = level.
    levels: Vec<Lane>,
    /// Log 0: the queue directory's own log (empty but for messages
    /// written before priority levels had their own logs).
    shared_log: Option<Box<QueueLog>>,
    max: u8,
}

/// What recovering the level logs found, added to the queue's totals.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    pub next_seq: u64,
    pub body_bytes: u64,
}

impl PriorityLanes {
    /// Levels 0..=`max` sharing `store`'s window; a durable queue brings
    /// its directory's `log`, beside which the level logs are recovered.
    pub fn new(
        store: &Store,
        log: Option<QueueLog>,
        max: u8,
        found: &mut Recovered,
    ) -> io::Result<Self> {
        let levels = u64::from(max) + 1;
        let window = (store.window_bytes / levels)
            .max(LANE_MIN_WINDOW_BYTES)
            .min(store.window_bytes);
        let dir = log.as_ref().map(|l| l.dir().to_path_buf());
        let mut lanes = PriorityLanes {
            levels: Vec::with_capacity(usize::from(max) + 1),
            shared_log: None,
            max,
        };
        for level in 0..=max {
            let log_id = u16::from(level) + 1;
            let lane_dir = dir.as_ref().map(|d| d.join(format!("p{level}")));
            let lane_log = match &lane_dir {
                Some(d) if d.exists() => Some(recover_level(store, d, log_id, found)?),
                _ => None,
            };
            lanes
                .levels
                .push(Lane::new(window, lane_log, log_id, lane_dir));
        }
        if let Some(mut shared) = log {
            let mut items: VecDeque<QueuedMessage> = VecDeque::new();
            shared.read_tail(u64::MAX, |r| items.push_back(r.into()));
            for m in items {
                let level = lanes.level_of(&m.message);
                lanes.levels[level].insert(m);
            }
            lanes.shared_log = Some(Box::new(shared));
        }
        Ok(lanes)
    }

    /// The level a message belongs to: its priority, capped at the
    /// queue's maximum.
    pub fn level_of(&self, m: &Message) -> usize {
        usize::from(priority(&m.properties).min(self.max)).min(self.levels.len() - 1)
    }

    /// The lane for `m`.
    pub fn lane_for(&mut self, m: &Message) -> &mut Lane {
        let level = self.level_of(m);
        &mut self.levels[level]
    }

    /// The lane delivery takes from: the highest that holds anything.
    pub fn head(&mut self) -> Option<&mut Lane> {
        self.levels.iter_mut().rev().find(|l| l.len() > 0)
    }

    /// The log a reference points into.
    pub fn log_of(&mut self, r: DiskRef) -> Option<&mut QueueLog> {
        match r.log {
            0 => self.shared_log.as_deref_mut(),
            id => self.levels.get_mut(usize::from(id) - 1)?.log(),
        }
    }

    /// The shared log (if any) and the lanes.
    pub fn parts(&mut self) -> (Option<&mut QueueLog>, &mut [Lane]) {
        (self.shared_log.as_deref_mut(), &mut self.levels)
    }

    /// The lanes.
    pub fn lanes(&self) -> &[Lane] {
        &self.levels
    }

    /// Delete the shared log's files (queue.delete): the queue directory,
    /// with the level logs in it.
    pub fn remove_shared_log(&mut self) {
        if let Some(log) = self.shared_log.take() {
            log.remove();
        }
    }
}

fn recover_level(
    store: &Store,
    dir: &Path,
    log_id: u16,
    found: &mut Recovered,
) -> io::Result<QueueLog> {
    let (mut log, report) = QueueLog::recover(dir, store.segment_bytes)?;
    log.set_id(log_id);
    // `qN/p<level>/`: the queue's directory entry is synced too.
    log.set_parents_to_sync(2);
    found.next_seq = found.next_seq.max(report.next_seq);
    found.body_bytes += report.body_bytes;
    Ok(log)
}
