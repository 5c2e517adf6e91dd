//! Group commit: one background thread makes buffered writes durable for
//! every queue at once, so one fsync covers every message that arrived
//! while the previous one ran.
//!
//! A writer that buffers a durable record registers its queue (once per
//! round) and gets a ticket: the number of the round that will flush it,
//! read under the same lock the thread takes a round's batch under, so it
//! is exact. Until that round flushes the queue, later writes to it carry
//! the same ticket (the queue keeps it). The thread runs rounds back to
//! back while there is work: take the registered sources, have each write
//! its buffers to the OS and hand over the files to sync, `fdatasync` them
//! (policy `always`), then publish the round number. Publishers send
//! confirms for tickets up to that number.
//!
//! # Failures: full (for now) and failed (for good)
//! [`StoreHealth`] says which; [`SyncStatus::failed`] is set in both, so
//! publishers waiting for a confirm get basic.nack and new durable writes
//! are refused ([`Syncer::failed`]).
//! - **Full**: a `write()` failed with ENOSPC or EDQUOT. Those bytes never
//!   reached the page cache, and the writer cut the file back to its last
//!   good length and kept them buffered (see [`super::segment`]), so
//!   writing them again later puts them at the offsets already handed
//!   out. The round is not published; its sources (and the files it was
//!   to sync) are held, and every [`RETRY_INTERVAL`] (or at once, on
//!   [`Syncer::retry`]) the thread runs them again, with whatever was
//!   registered meanwhile, as a new round. When one succeeds, write and
//!   sync, its number is published (covering the held tickets, which are
//!   lower), and the store is healthy again. With nothing to retry (the
//!   full disk was met by an append, whose record was taken back) the
//!   retry is empty and simply lifts the refusal: the next write is the
//!   probe.
//! - **Failed**: any other write error, and every fsync error, ENOSPC
//!   included: after a failed fsync the kernel may have dropped the dirty
//!   pages, so a later fsync that succeeds proves nothing. No round is
//!   published again until a restart (which recovers from the files).
//!
//! Nothing is confirmed that was not written and synced: `synced` only
//! moves after a round in which every source flushed and every file
//! synced, and a source leaves the thread's hands only after its flush
//! succeeded. A nacked message may still be written later (nack means
//! "maybe lost").
//!
//! Locks: the source list's mutex is never held while a source is flushed
//! (a source takes its queue's lock), so writers — which register while
//! holding their queue's lock — cannot deadlock with the thread.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

/// How long a full store waits before it tries its held writes again.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Something with buffered writes: a queue's log.
pub trait SyncSource: Send + Sync {
    /// Write buffers to the OS and add the files that need syncing to `out`.
    /// After an error, what was not written must stay buffered (and the
    /// files not handed over stay due), for a retry.
    fn flush_for_sync(&self, out: &mut Vec<Arc<File>>) -> io::Result<()>;
}

/// The sync round that will flush a source's buffered writes: the one it
/// is registered for (`dirty`), or, registering `source` now, the next.
pub fn ticket_for(
    dirty: &mut Option<u64>,
    syncer: &Syncer,
    source: impl FnOnce() -> std::sync::Weak<dyn SyncSource>,
) -> u64 {
    *dirty.get_or_insert_with(|| syncer.register(source()))
}

/// What publishers watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// Every ticket up to this is durable.
    pub synced: u64,
    /// Durable writes are refused: the store is full or has failed
    /// ([`Syncer::health`] says which). Tickets above `synced` that are
    /// waiting now get nacks. Cleared again when a full store recovers.
    pub failed: bool,
}

/// Whether the store takes durable writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum StoreHealth {
    /// Writing and syncing.
    #[default]
    Ok = 0,
    /// Out of disk space (or quota): durable writes are refused and the
    /// held ones retried until they succeed.
    Full = 1,
    /// A write or fsync failed otherwise: refused until a restart.
    Failed = 2,
}

impl StoreHealth {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => StoreHealth::Ok,
            1 => StoreHealth::Full,
            _ => StoreHealth::Failed,
        }
    }
}

/// Whether an I/O error means the disk (or the quota) is full: the only
/// write error the store recovers from.
pub fn is_out_of_space(e: &io::Error) -> bool {
    // Out of descriptors (EMFILE, ENFILE) when a file is opened or created
    // is as passing as out of space: nothing was written, a retry may
    // succeed.
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(23 | 24))
}

/// How a round ends with its files: `File::sync_data`, or a stand-in in
/// tests.
type SyncFn = fn(&File) -> io::Result<()>;

struct Shared {
    status: watch::Sender<SyncStatus>,
    sources: Mutex<Vec<Weak<dyn SyncSource>>>,
    wake: Condvar,
    /// The round that will pick up work registered now.
    pending_round: AtomicU64,
    health: AtomicU8,
    /// Retry a full store now rather than at the next interval.
    retry_now: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    fn health(&self) -> StoreHealth {
        StoreHealth::from_u8(self.health.load(Ordering::SeqCst))
    }

    /// Publish `synced` (if given) and whether writes are refused now.
    fn publish(&self, synced: Option<u64>) {
        self.status.send_modify(|s| {
            if let Some(round) = synced {
                s.synced = round;
            }
            s.failed = self.health() != StoreHealth::Ok;
        });
    }

    /// Record a failure: out of space makes a healthy store full; anything
    /// else fails it for good.
    fn fail(&self, error: &io::Error, during_fsync: bool) {
        let full = !during_fsync && is_out_of_space(error);
        let changed = match full {
            true => self
                .health
                .compare_exchange(
                    StoreHealth::Ok as u8,
                    StoreHealth::Full as u8,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok(),
            false => {
                self.health
                    .swap(StoreHealth::Failed as u8, Ordering::SeqCst)
                    != StoreHealth::Failed as u8
            }
        };
        if changed && full {
            tracing::warn!(error = %error, retry_ms = RETRY_INTERVAL.as_millis() as u64, "message store is out of disk space; refusing durable writes until a retry succeeds");
        } else if changed {
            tracing::error!(error = %error, during_fsync, "message store write or fsync failed; refusing further durable writes");
        }
        self.publish(None);
    }
}

/// The group-commit thread and its handles.
pub struct Syncer {
    shared: Arc<Shared>,
    status: watch::Receiver<SyncStatus>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("status", &*self.status.borrow())
            .field("health", &self.health())
            .finish()
    }
}

impl Syncer {
    /// Start the thread; `fsync` says whether rounds end with fdatasync.
    pub fn start(fsync: bool) -> io::Result<Self> {
        Self::start_with(fsync, File::sync_data)
    }

    fn start_with(fsync: bool, sync: SyncFn) -> io::Result<Self> {
        let (tx, rx) = watch::channel(SyncStatus::default());
        let shared = Arc::new(Shared {
            status: tx,
            sources: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            pending_round: AtomicU64::new(1),
            health: AtomicU8::new(StoreHealth::Ok as u8),
            retry_now: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("warren-sync".into())
            .spawn(move || run(&s, fsync.then_some(sync)))?;
        Ok(Syncer {
            shared,
            status: rx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Register a source with new buffered writes; returns the round that
    /// will flush (and sync) them.
    pub fn register(&self, source: Weak<dyn SyncSource>) -> u64 {
        let mut sources = self.shared.sources.lock();
        sources.push(source);
        let ticket = self.shared.pending_round.load(Ordering::SeqCst);
        drop(sources);
        self.shared.wake.notify_one();
        ticket
    }

    /// Whether durable writes are refused now: the store is full (until a
    /// retry succeeds) or has failed (for good). Cheap: one atomic load.
    pub fn failed(&self) -> bool {
        self.health() != StoreHealth::Ok
    }

    /// Whether the store takes durable writes, is full, or has failed.
    /// Cheap: one atomic load.
    pub fn health(&self) -> StoreHealth {
        self.shared.health()
    }

    /// A durable write failed outside the sync thread (an append, a
    /// segment roll): out of space makes the store full (retried), any
    /// other error stops it as a failed fsync does.
    pub fn fail(&self, error: &io::Error) {
        // Under the lock the thread waits with, so that it cannot miss the
        // change between its check and its wait.
        let sources = self.shared.sources.lock();
        self.shared.fail(error, false);
        drop(sources);
        self.shared.wake.notify_one();
    }

    /// Have a full store retry its writes now instead of at the next
    /// interval (e.g. once space was freed). Does nothing otherwise.
    pub fn retry(&self) {
        let sources = self.shared.sources.lock();
        if self.health() == StoreHealth::Full {
            self.shared.retry_now.store(true, Ordering::SeqCst);
        }
        drop(sources);
        self.shared.wake.notify_one();
    }

    /// A receiver of round completions.
    pub fn subscribe(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// Run a last round for what is registered (one last try if the store
    /// is full), then stop the thread.
    pub fn stop(&self) {
        {
            // Under the lock the thread waits with, so the wake-up cannot
            // fall between its check and its wait.
            let _sources = self.shared.sources.lock();
            self.shared.stop.store(true, Ordering::SeqCst);
        }
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread: rounds until stopped. `sync`: how files are synced (None:
/// policy `never`).
fn run(shared: &Shared, sync: Option<SyncFn>) {
    let mut files: Vec<Arc<File>> = Vec::new();
    // The sources of a round that ran out of space, for the next one.
    let mut held: Vec<Weak<dyn SyncSource>> = Vec::new();
    while let Some((batch, round)) = next_round(shared, &mut held) {
        let retrying = match shared.health() {
            StoreHealth::Failed => continue,
            health => health == StoreHealth::Full,
        };
        match flush_and_sync(&batch, &mut files, sync) {
            Ok(()) => {
                files.clear();
                let recovered = retrying
                    && shared
                        .health
                        .compare_exchange(
                            StoreHealth::Full as u8,
                            StoreHealth::Ok as u8,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        )
                        .is_ok();
                if recovered {
                    tracing::info!(
                        round,
                        "message store writes succeed again; durable writes accepted"
                    );
                }
                shared.publish(Some(round));
            }
            Err((e, during_fsync)) => {
                shared.fail(&e, during_fsync);
                // Kept (files too) only while a retry can still succeed.
                held = batch;
                if shared.health() == StoreHealth::Failed {
                    held.clear();
                    files.clear();
                }
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
            }
        }
    }
}

/// Wait for the next round's work, then take it: the held sources and the
/// registered ones. A full store waits for its retry time instead. None
/// when stopped with nothing left to do.
fn next_round(
    shared: &Shared,
    held: &mut Vec<Weak<dyn SyncSource>>,
) -> Option<(Vec<Weak<dyn SyncSource>>, u64)> {
    let mut sources = shared.sources.lock();
    let mut retry_at: Option<Instant> = None;
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst);
        if shared.health() == StoreHealth::Full && !stopping {
            let at = *retry_at.get_or_insert_with(|| Instant::now() + RETRY_INTERVAL);
            if shared.retry_now.swap(false, Ordering::SeqCst) || Instant::now() >= at {
                break;
            }
            shared.wake.wait_until(&mut sources, at);
            continue;
        }
        if !sources.is_empty() || !held.is_empty() {
            break;
        }
        if stopping {
            return None;
        }
        shared.wake.wait(&mut sources);
    }
    let round = shared.pending_round.fetch_add(1, Ordering::SeqCst);
    if held.is_empty() {
        return Some((std::mem::take(&mut *sources), round));
    }
    held.append(&mut sources);
    drop(sources);
    // A retry: a held source that registered again is flushed once.
    held.sort_by_key(|w| w.as_ptr().cast::<()>() as usize);
    held.dedup_by(|a, b| Weak::ptr_eq(a, b));
    held.retain(|w| w.strong_count() > 0);
    Some((std::mem::take(held), round))
}

/// Flush every source, then sync the files (kept in `files` until a round
/// succeeds: a source hands its files over once). The error says whether
/// it came from an fsync.
fn flush_and_sync(
    batch: &[Weak<dyn SyncSource>],
    files: &mut Vec<Arc<File>>,
    sync: Option<SyncFn>,
) -> Result<(), (io::Error, bool)> {
    for source in batch.iter().filter_map(Weak::upgrade) {
        source.flush_for_sync(files).map_err(|e| (e, false))?;
    }
    if let Some(sync) = sync {
        files.sort_by_key(|f| Arc::as_ptr(f) as usize);
        files.dedup_by(|a, b| Arc::ptr_eq(a, b));
        files
            .iter()
            .try_for_each(|f| sync(f))
            .map_err(|e| (e, true))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
