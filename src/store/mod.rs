//! The durable store: durable topology, message segments, acks, recovery
//! and group-commit fsync. Everything here is synchronous; queues call in
//! under their own lock and a background thread does the fsyncs.
//!
//! # Data directory
//! ```text
//! DATA/.lock                 held (flock) while a broker uses DATA
//! DATA/meta/00000003.snap    durable exchanges, queues, bindings (metadata.rs)
//! DATA/meta/00000004.log     changes since that snapshot
//! DATA/queues/q7/            one directory per durable queue
//!     00000001.seg           message records        (segment.rs, record.rs)
//!     00000001.ack           what became of them    (acks.rs)
//! DATA/queues/q7/p3/         a priority queue's level 3 (its own segments)
//! DATA/queues/q5.deleted/    a deleted queue's files, being unlinked (reaper.rs)
//! DATA/transient/t3/         spill files of non-durable queues (wiped at start)
//! ```
//!
//! # Why per-queue segments
//! Each queue owns its segment files (as LavinMQ does) rather than sharing
//! one log with per-queue indexes: a segment's lifetime is then one queue's
//! (deleted when all its records are settled, with no reference counting
//! across queues), a queue is read back with sequential reads of its own
//! files, purge and delete are file deletions, and recovery of one queue
//! touches only its directory. The price is that a persistent message
//! fanned out to N durable queues is written N times.
//!
//! # Memory
//! A queue keeps a bounded window of messages in memory
//! (`queue_memory_bytes`); beyond it messages stay on disk, counted per
//! segment, and are read back in order as consumers catch up. RAM per
//! message on disk is zero; per segment it is a few counters.
//!
//! # Durability (`fsync`)
//! - `always`: a persistent message on a durable queue is confirmed after
//!   its segment was fdatasync'ed (group commit: one fsync per round for
//!   everything written meanwhile).
//! - `never`: confirmed once written to the OS: survives a crash of Warren,
//!   not of the machine.
//!
//! Acks and delivery marks are written to the OS before the method that
//! caused them is answered, never fsynced: losing one on a power cut means
//! a redelivery, which at-least-once allows.
//!
//! # Full disk
//! A write refused for lack of space (ENOSPC, EDQUOT) puts the store in
//! [`StoreHealth::Full`]: durable writes are refused (publishers get
//! nacks) while the sync thread retries the writes it holds every 500 ms;
//! the first retry that writes and syncs them brings it back. Any other
//! write error, and any failed fsync, is [`StoreHealth::Failed`], until a
//! restart. [`Store::health`] tells which; [`syncer`] has the reasoning,
//! [`segment`] and [`queue_log`] how a failed write leaves the files.

pub mod access;
pub mod acks;
pub mod definitions;
pub mod file_cache;
pub mod metadata;
pub mod queue_log;
pub mod reaper;
pub mod record;
pub mod segment;
pub mod stream_log;
pub mod stream_offsets;
pub mod syncer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::{Config, Fsync};
use crate::message::Message;
pub use definitions::{Definitions, VhostDefinitions};
pub use queue_log::{DiskRef, QueueLog};
pub use syncer::{StoreHealth, SyncSource, SyncStatus, Syncer};

/// Bytes a message is counted for in a queue's memory window: body,
/// properties and the bookkeeping around them.
pub fn message_bytes(m: &Message) -> u64 {
    (m.body.len() + m.properties.len()) as u64 + 160
}

/// A broker's data directory, open.
#[derive(Debug)]
pub struct Store {
    data_dir: PathBuf,
    /// Durability policy.
    pub fsync: Fsync,
    /// Size at which a queue starts a new segment.
    pub segment_bytes: u64,
    /// A queue's in-memory window.
    pub window_bytes: u64,
    /// The group-commit thread.
    pub syncer: Syncer,
    /// The durable topology's log.
    pub metadata: Arc<metadata::MetaStore>,
    /// What the metadata held at start, until the broker takes it.
    recovered: Mutex<Option<Definitions>>,
    lock: Mutex<Option<File>>,
    next_queue_dir: AtomicU64,
    next_transient_dir: AtomicU64,
}

impl Store {
    /// Open (creating) the data directory: take its lock, clear transient
    /// spill files, load the definitions, and remove queue directories no
    /// definition refers to (a delete interrupted by a crash).
    pub fn open(config: &Config) -> Result<Store, String> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir.join("queues"))
            .map_err(|e| io_err("cannot create data directory", dir, e))?;
        let lock_path = dir.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err("cannot open", &lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(format!(
                "data directory {} is in use by another Warren (lock {} is held)",
                dir.display(),
                lock_path.display()
            ));
        }
        let transient = dir.join("transient");
        if transient.exists() {
            std::fs::remove_dir_all(&transient)
                .map_err(|e| io_err("cannot clear", &transient, e))?;
        }
        let fsync = config.fsync == Fsync::Always;
        file_cache::set_capacity(open_files_limit(config.max_open_files));
        let (metadata, recovered) =
            metadata::MetaStore::open(dir, fsync, config.metadata_log_bytes)?;
        set_aside_unloaded(dir, &recovered.unloaded_queue_dirs)?;
        let known: std::collections::HashSet<String> = recovered
            .vhosts
            .values()
            .flat_map(|v| v.queues.iter().map(|q| q.dir.clone()))
            .collect();
        let mut highest = 0;
        let queues = dir.join("queues");
        let entries = std::fs::read_dir(&queues).map_err(|e| io_err("cannot list", &queues, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_prefix('q').and_then(|n| n.parse::<u64>().ok()) {
                highest = highest.max(n);
            }
            if !known.contains(&name) {
                tracing::info!(dir = %entry.path().display(), "removing the directory of a deleted queue");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        for k in &known {
            if let Some(n) = k.strip_prefix('q').and_then(|n| n.parse::<u64>().ok()) {
                highest = highest.max(n);
            }
        }
        let syncer =
            Syncer::start(fsync).map_err(|e| format!("cannot start the sync thread: {e}"))?;
        Ok(Store {
            data_dir: dir.clone(),
            fsync: config.fsync,
            segment_bytes: config.segment_bytes,
            window_bytes: config.queue_memory_bytes,
            syncer,
            metadata,
            recovered: Mutex::new(Some(recovered)),
            lock: Mutex::new(Some(lock)),
            next_queue_dir: AtomicU64::new(highest + 1),
            next_transient_dir: AtomicU64::new(1),
        })
    }

    /// The durable topology found at start (once; empty afterwards).
    pub fn take_recovered(&self) -> Definitions {
        self.recovered.lock().take().unwrap_or_default()
    }

    /// Make `ops` durable: the sync round to wait for (see
    /// [`metadata::MetaStore::append`]).
    pub fn append_metadata(&self, ops: &[metadata::MetaOp]) -> std::io::Result<u64> {
        self.metadata.append(&self.syncer, ops)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether durable writes are taken, refused while the disk is full,
    /// or refused for good. Cheap: one atomic load.
    pub fn health(&self) -> StoreHealth {
        self.syncer.health()
    }

    /// A new durable queue directory name.
    pub fn new_queue_dir(&self) -> String {
        format!("q{}", self.next_queue_dir.fetch_add(1, Ordering::Relaxed))
    }

    /// The path of a durable queue's directory.
    pub fn queue_path(&self, dir: &str) -> PathBuf {
        self.data_dir.join("queues").join(dir)
    }

    /// A fresh directory path for a non-durable queue's spill files.
    pub fn transient_path(&self) -> PathBuf {
        let n = self.next_transient_dir.fetch_add(1, Ordering::Relaxed);
        self.data_dir.join("transient").join(format!("t{n}"))
    }

    /// Make everything written durable, stop the sync thread and release
    /// the directory lock.
    pub fn close(&self) {
        self.syncer.stop();
        if let Some(f) = self.lock.lock().take() {
            let _ = f.unlock();
        }
    }
}

/// Move the directories of queues whose definitions could not be loaded to
/// `DATA/unloaded/`, where their messages wait for an operator instead of
/// being deleted as a deleted queue's would be.
fn set_aside_unloaded(data_dir: &Path, dirs: &[String]) -> Result<(), String> {
    if dirs.is_empty() {
        return Ok(());
    }
    let aside = data_dir.join("unloaded");
    std::fs::create_dir_all(&aside).map_err(|e| io_err("cannot create", &aside, e))?;
    for d in dirs {
        let from = data_dir.join("queues").join(d);
        if !from.exists() || d.contains('/') || d.contains("..") {
            continue;
        }
        let to = aside.join(format!("{d}-{}", std::process::id()));
        std::fs::rename(&from, &to).map_err(|e| io_err("cannot set aside", &from, e))?;
        tracing::error!(from = %from.display(), to = %to.display(), "the definition of this queue could not be loaded; its messages were set aside");
    }
    Ok(())
}

/// `max_open_files`, or half the descriptor limit when it is 0 (the other
/// half for sockets, the metadata log and directories being synced).
fn open_files_limit(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    (soft / 2).clamp(64, 1 << 20) as usize
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}
