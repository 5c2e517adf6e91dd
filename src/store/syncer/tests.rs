//! The sync thread's failure model, with sources and an fsync that fail
//! on demand: out of space is retried until it succeeds, anything else
//! (and any failed fsync) stops the store for good.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use super::*;

/// A source whose flushes fail while `error` is set. It hands its file
/// over at its first flush, failed or not, and never again: the thread
/// must keep it until a round succeeds.
struct Flaky {
    flushes: Mutex<u32>,
    error: Mutex<Option<io::ErrorKind>>,
    file: Mutex<Option<Arc<File>>>,
}

impl Flaky {
    fn new(error: Option<io::ErrorKind>, file: Option<Arc<File>>) -> Arc<Flaky> {
        Arc::new(Flaky {
            flushes: Mutex::new(0),
            error: Mutex::new(error),
            file: Mutex::new(file),
        })
    }

    fn register(self: &Arc<Self>, s: &Syncer) -> u64 {
        let me: Arc<dyn SyncSource> = self.clone();
        s.register(Arc::downgrade(&me))
    }
}

impl SyncSource for Flaky {
    fn flush_for_sync(&self, out: &mut Vec<Arc<File>>) -> io::Result<()> {
        *self.flushes.lock() += 1;
        out.extend(self.file.lock().take());
        match *self.error.lock() {
            Some(k) => Err(io::Error::from(k)),
            None => Ok(()),
        }
    }
}

fn wait_for(rx: &watch::Receiver<SyncStatus>, what: &str, f: impl Fn(&SyncStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f(&rx.borrow()) {
        assert!(Instant::now() < deadline, "syncer did not get to: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn temp_file() -> (std::path::PathBuf, Arc<File>) {
    let path = std::env::temp_dir().join(format!("warren-sync-{}", rand::random::<u64>()));
    let file = File::create(&path).expect("create a temp file");
    (path, Arc::new(file))
}

#[test]
fn a_registered_write_is_covered_by_its_ticket() {
    let s = Syncer::start(false).unwrap();
    let src = Flaky::new(None, None);
    let ticket = src.register(&s);
    wait_for(&s.subscribe(), "the ticket", |st| st.synced >= ticket);
    assert_eq!(s.health(), StoreHealth::Ok);
}

#[test]
fn a_write_error_other_than_no_space_stops_the_store_for_good() {
    let s = Syncer::start(true).unwrap();
    let src = Flaky::new(Some(io::ErrorKind::PermissionDenied), None);
    let ticket = src.register(&s);
    let rx = s.subscribe();
    wait_for(&rx, "failed", |st| st.failed);
    assert_eq!(s.health(), StoreHealth::Failed);
    *src.error.lock() = None;
    std::thread::sleep(RETRY_INTERVAL + Duration::from_millis(200));
    assert_eq!(*src.flushes.lock(), 1, "a failed store retried");
    assert!(rx.borrow().synced < ticket && rx.borrow().failed);
}

#[test]
fn out_of_space_is_retried_until_a_write_succeeds() {
    let s = Syncer::start(true).unwrap();
    let src = Flaky::new(Some(io::ErrorKind::StorageFull), None);
    let ticket = src.register(&s);
    let rx = s.subscribe();
    wait_for(&rx, "refusing", |st| st.failed);
    assert_eq!(s.health(), StoreHealth::Full);
    assert!(s.failed(), "a full store must refuse durable writes");
    // Retried on its own, without a new registration.
    let deadline = Instant::now() + Duration::from_secs(3);
    while *src.flushes.lock() < 2 {
        assert!(Instant::now() < deadline, "no retry");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(rx.borrow().synced < ticket, "published a round that failed");
    *src.error.lock() = None;
    s.retry();
    wait_for(&rx, "recovered", |st| st.synced >= ticket && !st.failed);
    assert_eq!(s.health(), StoreHealth::Ok);
    // And it goes on as before.
    let next = src.register(&s);
    wait_for(&rx, "the next ticket", |st| st.synced >= next);
}

#[test]
fn quota_exceeded_counts_as_out_of_space() {
    assert!(is_out_of_space(&io::Error::from_raw_os_error(28)));
    assert!(is_out_of_space(&io::Error::from_raw_os_error(122)));
    assert!(!is_out_of_space(&io::Error::from_raw_os_error(5)));
}

fn no_space_fsync(_: &File) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::StorageFull))
}

#[test]
fn a_failed_fsync_is_permanent_even_when_out_of_space() {
    let s = Syncer::start_with(true, no_space_fsync).unwrap();
    let (path, file) = temp_file();
    let src = Flaky::new(None, Some(file));
    src.register(&s);
    wait_for(&s.subscribe(), "failed", |st| st.failed);
    assert_eq!(s.health(), StoreHealth::Failed);
    let _ = std::fs::remove_file(path);
}

/// Inodes of the files synced by `recording_fsync`, for the test below.
static SYNCED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn recording_fsync(f: &File) -> io::Result<()> {
    SYNCED.lock().push(f.metadata()?.ino());
    f.sync_data()
}

#[test]
fn files_handed_over_in_a_round_that_ran_out_of_space_are_synced_by_the_retry() {
    let s = Syncer::start_with(true, recording_fsync).unwrap();
    let (path, file) = temp_file();
    let ino = file.metadata().unwrap().ino();
    let src = Flaky::new(Some(io::ErrorKind::StorageFull), Some(file));
    let ticket = src.register(&s);
    let rx = s.subscribe();
    wait_for(&rx, "refusing", |st| st.failed);
    assert!(!SYNCED.lock().contains(&ino), "synced in a failed round");
    *src.error.lock() = None;
    s.retry();
    wait_for(&rx, "recovered", |st| st.synced >= ticket && !st.failed);
    assert!(
        SYNCED.lock().contains(&ino),
        "a file of the failed round was not synced before its round was published"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_full_store_met_outside_the_thread_lifts_the_refusal_after_an_interval() {
    let s = Syncer::start(true).unwrap();
    s.fail(&io::Error::from(io::ErrorKind::StorageFull));
    assert_eq!(s.health(), StoreHealth::Full);
    assert!(s.subscribe().borrow().failed);
    // Nothing is held: the empty retry lets the next write be the probe.
    wait_for(&s.subscribe(), "lifted", |st| !st.failed);
    assert_eq!(s.health(), StoreHealth::Ok);
    // Any other error is for good.
    s.fail(&io::Error::from(io::ErrorKind::InvalidData));
    assert_eq!(s.health(), StoreHealth::Failed);
    s.fail(&io::Error::from(io::ErrorKind::StorageFull));
    assert_eq!(s.health(), StoreHealth::Failed, "a failed store came back");
}

#[test]
fn stopping_a_full_store_tries_once_and_returns() {
    let s = Syncer::start(true).unwrap();
    let src = Flaky::new(Some(io::ErrorKind::StorageFull), None);
    src.register(&s);
    wait_for(&s.subscribe(), "refusing", |st| st.failed);
    let started = Instant::now();
    s.stop();
    assert!(started.elapsed() < Duration::from_secs(2), "stop hung");
    assert_eq!(s.health(), StoreHealth::Full);
}
