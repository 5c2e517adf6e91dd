//! Group commit: one background thread makes buffered writes durable for
//! every queue at once, so one fsync covers every message that arrived
//! while the previous one ran.
//!
//! A writer that buffers a durable record registers its queue (once per
//! round) and gets a ticket: the number of the round that will flush it,
//! read under the same lock the thread takes a round's batch under, so it
//! is exact. Until that round flushes the queue, later writes to it carry
//! the same ticket (the queue keeps it). The thread runs rounds back to back while there is work:
//! take the registered sources, have each write its buffers to the OS and
//! hand over the files to sync, `fdatasync` them (policy `always`), then
//! publish the round number. Publishers send confirms for tickets up to
//! that number. A failed write or sync stops the store: the round is never
//! published, waiters get nacks, and later writes are refused.
//!
//! Locks: the source list's mutex is never held while a source is flushed
//! (a source takes its queue's lock), so writers — which register while
//! holding their queue's lock — cannot deadlock with the thread.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

/// Something with buffered writes: a queue's log.
pub trait SyncSource: Send + Sync {
    /// Write buffers to the OS and add the files that need syncing to `out`.
    fn flush_for_sync(&self, out: &mut Vec<Arc<File>>) -> io::Result<()>;
}

/// What publishers watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// Every ticket up to this is durable.
    pub synced: u64,
    /// The store failed: tickets above `synced` never will be.
    pub failed: bool,
}

struct Shared {
    status: watch::Sender<SyncStatus>,
    sources: Mutex<Vec<Weak<dyn SyncSource>>>,
    wake: Condvar,
    /// The round that will pick up work registered now.
    pending_round: AtomicU64,
    failed: AtomicBool,
    stop: AtomicBool,
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
            .finish()
    }
}

impl Syncer {
    /// Start the thread; `fsync` says whether rounds end with fdatasync.
    pub fn start(fsync: bool) -> io::Result<Self> {
        let (tx, rx) = watch::channel(SyncStatus::default());
        let shared = Arc::new(Shared {
            status: tx,
            sources: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            pending_round: AtomicU64::new(1),
            failed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("warren-sync".into())
            .spawn(move || run(&s, fsync))?;
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

    /// Whether the store has failed.
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// A durable write failed outside the sync thread: stop the store as a
    /// failed fsync would.
    pub fn fail(&self, error: &io::Error) {
        if !self.shared.failed.swap(true, Ordering::SeqCst) {
            tracing::error!(error = %error, "message store write failed; refusing further durable writes");
        }
        self.shared.status.send_modify(|s| s.failed = true);
    }

    /// A receiver of round completions.
    pub fn subscribe(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// Run a last round for what is registered, then stop the thread.
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

fn run(shared: &Shared, fsync: bool) {
    let status = &shared.status;
    let mut files: Vec<Arc<File>> = Vec::new();
    loop {
        let (batch, round) = {
            let mut sources = shared.sources.lock();
            while sources.is_empty() && !shared.stop.load(Ordering::SeqCst) {
                shared.wake.wait(&mut sources);
            }
            if sources.is_empty() {
                return;
            }
            let batch = std::mem::take(&mut *sources);
            (batch, shared.pending_round.fetch_add(1, Ordering::SeqCst))
        };
        if shared.failed.load(Ordering::Relaxed) {
            continue;
        }
        files.clear();
        let mut result = Ok(());
        for source in batch.iter().filter_map(Weak::upgrade) {
            result = result.and_then(|()| source.flush_for_sync(&mut files));
        }
        if fsync && result.is_ok() {
            files.sort_by_key(|f| Arc::as_ptr(f) as usize);
            files.dedup_by(|a, b| Arc::ptr_eq(a, b));
            result = files.iter().try_for_each(|f| f.sync_data());
        }
        match result {
            Ok(()) => {
                status.send_modify(|s| s.synced = round);
            }
            Err(e) => {
                tracing::error!(error = %e, "message store write or fsync failed; refusing further durable writes");
                shared.failed.store(true, Ordering::SeqCst);
                status.send_modify(|s| s.failed = true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(Mutex<u32>, Option<io::ErrorKind>);

    impl SyncSource for Counting {
        fn flush_for_sync(&self, _out: &mut Vec<Arc<File>>) -> io::Result<()> {
            *self.0.lock() += 1;
            match self.1 {
                Some(k) => Err(io::Error::from(k)),
                None => Ok(()),
            }
        }
    }

    fn wait_for(rx: &mut watch::Receiver<SyncStatus>, f: impl Fn(&SyncStatus) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !f(&rx.borrow()) {
            assert!(
                std::time::Instant::now() < deadline,
                "syncer did not progress"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn a_registered_write_is_covered_by_its_ticket() {
        let s = Syncer::start(false).unwrap();
        let src: Arc<dyn SyncSource> = Arc::new(Counting(Mutex::new(0), None));
        let ticket = s.register(Arc::downgrade(&src));
        let mut rx = s.subscribe();
        wait_for(&mut rx, |st| st.synced >= ticket);
        assert!(!s.failed());
    }

    #[test]
    fn a_failed_flush_stops_the_store() {
        let s = Syncer::start(true).unwrap();
        let src: Arc<dyn SyncSource> =
            Arc::new(Counting(Mutex::new(0), Some(io::ErrorKind::StorageFull)));
        let ticket = s.register(Arc::downgrade(&src));
        let mut rx = s.subscribe();
        wait_for(&mut rx, |st| st.failed);
        assert!(rx.borrow().synced < ticket);
        assert!(s.failed());
    }
}
