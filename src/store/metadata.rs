//! The metadata log: durable exchanges, queues and bindings (and, later,
//! users, vhosts, permissions and policies) kept as a log of changes,
//! group-committed with the messages, and compacted into a snapshot in the
//! background.
//!
//! A change costs one record appended to a buffer (under this store's
//! mutex, taken by the vhost while it holds its topology lock, so records
//! land in the order the changes happened) and a ticket of the sync
//! thread's: the reply to the client waits for that round, as a confirm
//! does, while the connection goes on reading. The sync thread writes the
//! buffer and fsyncs the file with everything else of the round. Nothing
//! is rewritten per change, so a declare costs the same with 10 or 100,000
//! objects.
//!
//! When the open log passes its size limit (`metadata_log_bytes`, or the
//! last snapshot's size if larger) the sync thread starts the next log and
//! a background thread folds the closed ones into a snapshot
//! ([`files::compact`]). Recovery reads the newest snapshot and the logs
//! after it; a damaged entry is logged and skipped, a torn tail cut off.
//! A data directory with a `definitions.json` from an earlier version is
//! converted into a first snapshot at start.
//!
//! Formats: [`record`]; files and compaction: [`files`].

mod access_state;
pub mod files;
pub mod record;
pub mod state;

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::definitions::{self, Definitions};
use super::file_cache::{Access, CachedFile};
use super::segment::{file_header, AppendBuffer, FILE_HEADER_LEN};
use super::syncer::{SyncSource, Syncer};
pub use access_state::apply as apply_access;
pub use record::MetaOp;
use record::LOG_MAGIC;
use state::State;

/// The metadata directory, under the data directory.
pub const DIR: &str = "meta";
/// A `definitions.json` converted into a snapshot is renamed to this.
const MIGRATED: &str = "definitions.json.migrated";

/// The open metadata log.
#[derive(Debug)]
pub struct MetaStore {
    dir: PathBuf,
    fsync: bool,
    /// `metadata_log_bytes`.
    min_log_bytes: u64,
    inner: Mutex<Inner>,
    /// A compaction runs.
    compacting: Arc<AtomicBool>,
    /// Size of the newest snapshot.
    snapshot_bytes: Arc<AtomicU64>,
    /// Compactions finished (for tests and logs).
    compactions: Arc<AtomicU64>,
    /// The highest sync round handed out.
    last_ticket: AtomicU64,
    me: Weak<MetaStore>,
}

#[derive(Debug)]
struct Inner {
    log: AppendBuffer,
    id: u32,
    /// Bytes appended to the open log (written or buffered).
    len: u64,
    /// The sync round that will write what is buffered.
    ticket: Option<u64>,
    /// A file was created in the directory since its last fsync.
    dir_dirty: bool,
}

impl MetaStore {
    /// Open the metadata in `data_dir` (converting a legacy
    /// `definitions.json`) and return it with what it holds.
    pub fn open(
        data_dir: &Path,
        fsync: bool,
        min_log_bytes: u64,
    ) -> Result<(Arc<MetaStore>, Definitions), String> {
        let started = std::time::Instant::now();
        let dir = data_dir.join(DIR);
        let fail = |what: &str, p: &Path, e: io::Error| format!("{what} {}: {e}", p.display());
        std::fs::create_dir_all(&dir).map_err(|e| fail("cannot create", &dir, e))?;
        let mut listing = files::list(&dir).map_err(|e| fail("cannot list", &dir, e))?;
        for tmp in &listing.temporary {
            let _ = std::fs::remove_file(tmp);
        }
        let mut legacy_unloaded = Vec::new();
        if listing.snapshots.is_empty() && listing.logs.is_empty() {
            legacy_unloaded = migrate_legacy(data_dir, &dir, fsync)?;
            listing = files::list(&dir).map_err(|e| fail("cannot list", &dir, e))?;
        }
        let base = listing.base(u32::MAX);
        let mut state = State::default();
        let mut snapshot_bytes = 0;
        if let Some(b) = base {
            let r = files::read_into(&dir, b, true, &mut state)
                .map_err(|e| fail("cannot read", &files::snapshot_path(&dir, b), e))?;
            snapshot_bytes = r.len;
        }
        let after: Vec<u32> = listing
            .logs
            .iter()
            .copied()
            .filter(|&l| base.is_none_or(|b| l > b))
            .collect();
        let mut last = None;
        for &id in &after {
            let r = files::read_into(&dir, id, false, &mut state)
                .map_err(|e| fail("cannot read", &files::log_path(&dir, id), e))?;
            last = Some((id, r));
        }
        files::remove_replaced(&dir, &listing, base.unwrap_or(0));
        let inner = open_active(&dir, base.unwrap_or(0), last)
            .map_err(|e| fail("cannot open the metadata log in", &dir, e))?;
        tracing::info!(
            dir = %dir.display(),
            ops = state.ops,
            skipped = state.skipped,
            snapshot = base,
            logs = after.len(),
            ms = started.elapsed().as_millis() as u64,
            "metadata recovered"
        );
        let store = Arc::new_cyclic(|me| MetaStore {
            dir,
            fsync,
            min_log_bytes,
            inner: Mutex::new(inner),
            compacting: Arc::new(AtomicBool::new(false)),
            snapshot_bytes: Arc::new(AtomicU64::new(snapshot_bytes)),
            compactions: Arc::new(AtomicU64::new(0)),
            last_ticket: AtomicU64::new(0),
            me: me.clone(),
        });
        let mut defs = state.into_definitions();
        defs.unloaded_queue_dirs.extend(legacy_unloaded);
        Ok((store, defs))
    }

    /// Buffer `ops` and return the sync round that makes them durable. The
    /// caller holds the lock that orders the changes (the vhost's topology
    /// lock). Refused once the store has failed for good; while the disk
    /// is full they stay buffered and are written by the sync thread's
    /// retry (the memory they hold is the topology's own size), so what
    /// the topology did (a delete included) is what the log says.
    pub fn append(&self, syncer: &Syncer, ops: &[MetaOp]) -> io::Result<u64> {
        if syncer.health() == super::StoreHealth::Failed {
            return Err(io::Error::other(format!(
                "the store refuses durable writes ({:?})",
                syncer.health()
            )));
        }
        let mut inner = self.inner.lock();
        let before = inner.log.buf.len();
        for op in ops {
            if let Err(e) = record::encode(&mut inner.log.buf, op) {
                inner.log.buf.truncate(before);
                return Err(io::Error::other(e));
            }
        }
        inner.len += (inner.log.buf.len() - before) as u64;
        if let Some(t) = inner.ticket {
            return Ok(t);
        }
        let source: Weak<dyn SyncSource> = self.me.clone();
        let ticket = syncer.register(source);
        inner.ticket = Some(ticket);
        self.last_ticket.fetch_max(ticket, Ordering::SeqCst);
        Ok(ticket)
    }

    /// The sync round after which everything appended so far is durable:
    /// what a reply that changed nothing waits for (a redeclare must not
    /// be answered before another client's declare of the same queue is
    /// durable).
    pub fn last_ticket(&self) -> u64 {
        self.last_ticket.load(Ordering::SeqCst)
    }

    /// Compactions finished since start.
    pub fn compactions(&self) -> u64 {
        self.compactions.load(Ordering::SeqCst)
    }

    /// Start the next log and fold the closed ones into a snapshot on a
    /// background thread. A failure leaves the current log open.
    fn roll(&self, inner: &mut Inner) {
        let next = inner.id + 1;
        let file = match create_log(&self.dir, next) {
            Ok(f) => f,
            Err(error) => {
                tracing::warn!(%error, "cannot start a new metadata log; compacting later");
                return;
            }
        };
        let closed = inner.id;
        inner.log = file;
        inner.id = next;
        inner.len = FILE_HEADER_LEN;
        inner.dir_dirty = true;
        self.compacting.store(true, Ordering::SeqCst);
        let (dir, fsync) = (self.dir.clone(), self.fsync);
        let (busy, size, count) = (
            self.compacting.clone(),
            self.snapshot_bytes.clone(),
            self.compactions.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("warren-meta-compact".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                match files::compact(&dir, closed, fsync) {
                    Ok(bytes) => {
                        size.store(bytes, Ordering::SeqCst);
                        count.fetch_add(1, Ordering::SeqCst);
                        let ms = started.elapsed().as_millis() as u64;
                        tracing::info!(snapshot = closed, bytes, ms, "metadata compacted");
                    }
                    Err(error) => {
                        tracing::error!(%error, "metadata compaction failed; the logs are kept")
                    }
                }
                busy.store(false, Ordering::SeqCst);
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the metadata compaction thread");
            self.compacting.store(false, Ordering::SeqCst);
        }
    }
}

impl SyncSource for MetaStore {
    fn flush_for_sync(&self, out: &mut Vec<Arc<File>>) -> io::Result<()> {
        let mut inner = self.inner.lock();
        inner.ticket = None;
        inner.log.flush()?;
        out.push(inner.log.file()?);
        if inner.dir_dirty {
            out.push(Arc::new(File::open(&self.dir)?));
            inner.dir_dirty = false;
        }
        let limit = self
            .min_log_bytes
            .max(self.snapshot_bytes.load(Ordering::SeqCst));
        if inner.len > limit && !self.compacting.load(Ordering::SeqCst) {
            self.roll(&mut inner);
        }
        Ok(())
    }
}

/// A new, empty log `id`, its header written.
fn create_log(dir: &Path, id: u32) -> io::Result<AppendBuffer> {
    let path = files::log_path(dir, id);
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let file = CachedFile::adopt(path, Access::Write, file);
    let mut log = AppendBuffer::new(file, 0, file_header(LOG_MAGIC, id).to_vec());
    if let Err(e) = log.flush() {
        // Not left behind empty: the next roll would find its name taken.
        let _ = std::fs::remove_file(files::log_path(dir, id));
        return Err(e);
    }
    Ok(log)
}

/// The log to append to: the last one read (its torn tail cut off), or a
/// new one after `base` (or after a last log whose header is damaged).
fn open_active(dir: &Path, base: u32, last: Option<(u32, files::ReadReport)>) -> io::Result<Inner> {
    let (log, id, len) = match last {
        Some((id, r)) if !r.bad_header => {
            let end = r.torn_at.unwrap_or(r.len);
            let path = files::log_path(dir, id);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            if end < r.len {
                file.set_len(end)?;
            }
            let file = CachedFile::adopt(path, Access::Write, file);
            (AppendBuffer::new(file, end, Vec::new()), id, end)
        }
        Some((id, _)) => (create_log(dir, id + 1)?, id + 1, FILE_HEADER_LEN),
        None => (create_log(dir, base + 1)?, base + 1, FILE_HEADER_LEN),
    };
    Ok(Inner {
        log,
        id,
        len,
        ticket: None,
        dir_dirty: true,
    })
}

/// Convert a `definitions.json` written by an earlier version into
/// snapshot 0, then rename it out of the way. Returns the directories of
/// the queues whose entries did not load (set aside at this start).
fn migrate_legacy(data_dir: &Path, dir: &Path, fsync: bool) -> Result<Vec<String>, String> {
    let legacy = data_dir.join(definitions::FILE_NAME);
    let bytes = match std::fs::read(&legacy) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", legacy.display())),
    };
    let mut defs = definitions::parse(&bytes)
        .map_err(|e| format!("{} is not valid: {e}", legacy.display()))?;
    if defs.version != definitions::VERSION {
        return Err(format!(
            "{} has format version {}, this Warren reads version {}",
            legacy.display(),
            defs.version,
            definitions::VERSION
        ));
    }
    let unloaded = std::mem::take(&mut defs.unloaded_queue_dirs);
    let mut state = State::default();
    state.load_definitions(defs);
    files::write_snapshot(dir, 0, &state, fsync)
        .map_err(|e| format!("cannot convert {}: {e}", legacy.display()))?;
    let to = data_dir.join(MIGRATED);
    std::fs::rename(&legacy, &to)
        .map_err(|e| format!("cannot rename {}: {e}", legacy.display()))?;
    tracing::info!(from = %legacy.display(), to = %to.display(), "definitions converted to the metadata log");
    Ok(unloaded)
}

#[cfg(test)]
mod tests;
