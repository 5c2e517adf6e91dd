//! Bounded open files: every segment and ack file of every queue is a
//! [`CachedFile`], a path whose descriptor is opened on first use and may
//! be closed again when too many are open, so descriptors do not grow with
//! the number of queues (an idle queue's files are the first to go).
//!
//! Descriptors are a per-process resource (the limit is the process's), so
//! there is one cache per process, sized by the `max_open_files` key of
//! the broker that opened a store last (default: half the descriptor
//! limit, the rest being left for sockets).
//!
//! Eviction is the clock algorithm: a use of an open file only sets its
//! `referenced` bit (no lock shared between files, so the hot path costs
//! one atomic store); opening a file when the cache is full walks the ring
//! of open files, giving each referenced one a second chance. A file is
//! closed when its last user lets go: the sync thread holds a descriptor
//! it is about to fsync, so a file's writes and its fsync always use the
//! same descriptor.
//!
//! Locks: a file's slot mutex is never held while the ring's is taken
//! (the ring's holder may take slots).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

/// Open files at most when nothing configured it (tests, tools).
const DEFAULT_CAPACITY: usize = 4096;

/// The process's cache.
static CACHE: FileCache = FileCache::new(DEFAULT_CAPACITY);

#[derive(Debug)]
struct FileCache {
    /// Open files, in clock order.
    ring: Mutex<VecDeque<Weak<CachedFile>>>,
    /// Files with a descriptor in their slot.
    open: AtomicUsize,
    capacity: AtomicUsize,
}

/// Set how many files may be open at once (at least 16).
pub fn set_capacity(files: usize) {
    CACHE.capacity.store(files.max(16), Ordering::SeqCst);
}

/// How many files may be open at once.
pub fn capacity() -> usize {
    CACHE.capacity.load(Ordering::SeqCst)
}

/// How many cached files hold a descriptor now.
pub fn open_files() -> usize {
    CACHE.open.load(Ordering::SeqCst)
}

/// Open `path` to read and write, creating it (and its directory) if
/// missing, never truncating it: writers keep their own offsets.
pub fn open_for_writing(path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            open()
        }
        other => other,
    }
}

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read only; the file must exist.
    Read,
    /// Read and write, created (with its directory) if missing, never
    /// truncated: writers keep their own offsets.
    Write,
}

/// A file whose descriptor comes and goes.
#[derive(Debug)]
pub struct CachedFile {
    /// The process's cache (a test's own in unit tests).
    cache: &'static FileCache,
    path: PathBuf,
    access: Access,
    slot: Mutex<Option<Arc<File>>>,
    referenced: AtomicBool,
}

impl CachedFile {
    /// A file opened on first use.
    pub fn lazy(path: PathBuf, access: Access) -> Arc<CachedFile> {
        Self::lazy_in(&CACHE, path, access)
    }

    fn lazy_in(cache: &'static FileCache, path: PathBuf, access: Access) -> Arc<CachedFile> {
        Arc::new(CachedFile {
            cache,
            path,
            access,
            slot: Mutex::new(None),
            referenced: AtomicBool::new(false),
        })
    }

    /// A file already open (its descriptor joins the cache).
    pub fn adopt(path: PathBuf, access: Access, file: File) -> Arc<CachedFile> {
        let cached = Self::lazy(path, access);
        *cached.slot.lock() = Some(Arc::new(file));
        cached.referenced.store(true, Ordering::Relaxed);
        cached.cache.opened(Arc::downgrade(&cached));
        cached
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, opening it if it was closed (or never opened).
    pub fn get(self: &Arc<Self>) -> io::Result<Arc<File>> {
        if let Some(f) = &*self.slot.lock() {
            self.referenced.store(true, Ordering::Relaxed);
            return Ok(f.clone());
        }
        let file = Arc::new(self.open()?);
        {
            let mut slot = self.slot.lock();
            if let Some(f) = &*slot {
                // Opened meanwhile by another user: keep that one.
                return Ok(f.clone());
            }
            *slot = Some(file.clone());
        }
        // Just opened: not the first to close.
        self.referenced.store(true, Ordering::Relaxed);
        self.cache.opened(Arc::downgrade(self));
        Ok(file)
    }

    fn open(&self) -> io::Result<File> {
        match self.access {
            Access::Read => File::open(&self.path),
            Access::Write => open_for_writing(&self.path),
        }
    }

    /// Close the descriptor now (it is reopened on the next use).
    fn close(&self) {
        if self.slot.lock().take().is_some() {
            self.cache.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for CachedFile {
    fn drop(&mut self) {
        if self.slot.get_mut().take().is_some() {
            self.cache.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl FileCache {
    const fn new(capacity: usize) -> Self {
        FileCache {
            ring: parking_lot::const_mutex(VecDeque::new()),
            open: AtomicUsize::new(0),
            capacity: AtomicUsize::new(capacity),
        }
    }

    /// A file got a descriptor: count it, and close others while over
    /// capacity.
    fn opened(&self, file: Weak<CachedFile>) {
        self.open.fetch_add(1, Ordering::SeqCst);
        let mut victims = Vec::new();
        {
            let mut ring = self.ring.lock();
            ring.push_back(file);
            let capacity = self.capacity.load(Ordering::SeqCst);
            // Each entry is looked at twice at most: once to clear its bit,
            // once to close it.
            let mut steps = 2 * ring.len();
            while self.open.load(Ordering::SeqCst) > capacity + victims.len() && steps > 0 {
                steps -= 1;
                let Some(weak) = ring.pop_front() else {
                    break;
                };
                let Some(f) = weak.upgrade() else {
                    continue;
                };
                if f.referenced.swap(false, Ordering::Relaxed) {
                    ring.push_back(weak);
                } else {
                    victims.push(f);
                }
            }
            // Entries of files dropped or closed elsewhere are skipped as
            // the hand meets them; keep the ring from growing past them.
            if ring.len() > 2 * capacity + 64 {
                ring.retain(|w| w.upgrade().is_some_and(|f| f.slot.lock().is_some()));
            }
        }
        for f in victims {
            f.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_stay_under_the_capacity_and_files_reopen() {
        let dir = std::env::temp_dir().join(format!("warren-fc-{}", rand::random::<u64>()));
        // A cache of its own: brokers started by other tests size the
        // process's.
        let cache: &'static FileCache = Box::leak(Box::new(FileCache::new(16)));
        let files: Vec<_> = (0..50)
            .map(|i| CachedFile::lazy_in(cache, dir.join(format!("sub/{i}")), Access::Write))
            .collect();
        let ours =
            |files: &[Arc<CachedFile>]| files.iter().filter(|f| f.slot.lock().is_some()).count();
        for (i, f) in files.iter().enumerate() {
            use std::os::unix::fs::FileExt;
            f.get().unwrap().write_all_at(&[i as u8], 0).unwrap();
        }
        assert!(ours(&files) <= 16, "{} open", ours(&files));
        assert_eq!(cache.open.load(Ordering::SeqCst), ours(&files));
        for (i, f) in files.iter().enumerate() {
            use std::os::unix::fs::FileExt;
            let mut b = [0u8];
            f.get().unwrap().read_exact_at(&mut b, 0).unwrap();
            assert_eq!(b[0], i as u8);
        }
        drop(files);
        assert_eq!(cache.open.load(Ordering::SeqCst), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
