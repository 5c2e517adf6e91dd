//! The files of the metadata directory: naming and listing them, reading
//! one into a [`State`], writing a snapshot, and compaction (a snapshot of
//! everything up to a closed log, then the files it replaces deleted).
//!
//! ```text
//! DATA/meta/00000007.snap    everything up to the end of log 7
//! DATA/meta/00000008.log     changes after it, appended
//! ```
//! Snapshot `S` stands for logs `<= S`; recovery reads the newest snapshot,
//! then every log above it in order. A snapshot is written to a temporary
//! file, fsynced and renamed, and only then are older files deleted, so a
//! crash at any point leaves a readable set.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::record::{self, Item, MetaOp, LOG_MAGIC, SNAPSHOT_MAGIC};
use super::state::State;
use crate::store::segment::{file_header, header_ok};

/// Bytes buffered while writing a snapshot.
const WRITE_CHUNK: usize = 1 << 20;

/// File name of log `id`.
pub fn log_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.log"))
}

/// File name of snapshot `id`.
pub fn snapshot_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.snap"))
}

/// What the directory holds, ids ascending.
#[derive(Debug, Default)]
pub struct Listing {
    /// Log ids.
    pub logs: Vec<u32>,
    /// Snapshot ids.
    pub snapshots: Vec<u32>,
    /// Unfinished snapshots (a crash during compaction).
    pub temporary: Vec<PathBuf>,
}

impl Listing {
    /// The newest snapshot that covers no log above `upto`.
    pub fn base(&self, upto: u32) -> Option<u32> {
        self.snapshots.iter().copied().filter(|&s| s <= upto).max()
    }
}

/// List the metadata directory.
pub fn list(dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".tmp") {
            listing.temporary.push(path.clone());
        } else if let Some(id) = id_of(name, ".log") {
            listing.logs.push(id);
        } else if let Some(id) = id_of(name, ".snap") {
            listing.snapshots.push(id);
        }
    }
    listing.logs.sort_unstable();
    listing.snapshots.sort_unstable();
    Ok(listing)
}

fn id_of(name: &str, ext: &str) -> Option<u32> {
    name.strip_suffix(ext)?.parse().ok()
}

/// How reading a file ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadReport {
    /// Bytes in the file.
    pub len: u64,
    /// Where a torn tail starts, if the file ends in one.
    pub torn_at: Option<u64>,
    /// The file header is not the expected one.
    pub bad_header: bool,
}

/// Apply every record of a log (`snapshot` false) or snapshot file to
/// `state`. Damaged records are logged and skipped.
pub fn read_into(dir: &Path, id: u32, snapshot: bool, state: &mut State) -> io::Result<ReadReport> {
    let (path, magic) = match snapshot {
        true => (snapshot_path(dir, id), SNAPSHOT_MAGIC),
        false => (log_path(dir, id), LOG_MAGIC),
    };
    let bytes = std::fs::read(&path)?;
    let mut report = ReadReport {
        len: bytes.len() as u64,
        ..Default::default()
    };
    if !header_ok(&bytes, magic, id) {
        report.bad_header = true;
        tracing::error!(file = %path.display(), "metadata file has a damaged header; reading its records anyway");
    }
    let mut payloads = Vec::new();
    for item in record::scan(&bytes) {
        match item {
            Item::Record(payload) => payloads.push(payload),
            Item::Corrupt { offset, resumed_at } => {
                tracing::error!(file = %path.display(), offset, resumed_at, "skipping a damaged metadata entry");
            }
            Item::Torn { offset } => {
                tracing::warn!(file = %path.display(), offset, "metadata file ends in a torn entry (a crash during a write)");
                report.torn_at = Some(offset);
            }
        }
    }
    apply_all(state, &payloads);
    Ok(report)
}

/// Records decoded per batch handed between threads.
const DECODE_BATCH: usize = 4096;

/// Apply `payloads` to `state` in order, decoding them on two helper
/// threads (alternate batches, a few batches ahead) while this thread
/// applies: JSON decoding is most of a restart's metadata work, and only
/// applying must be in order.
fn apply_all(state: &mut State, payloads: &[&[u8]]) {
    if payloads.len() < 2 * DECODE_BATCH {
        for payload in payloads {
            state.apply_payload(payload);
        }
        return;
    }
    let batches: Vec<&[&[u8]]> = payloads.chunks(DECODE_BATCH).collect();
    std::thread::scope(|scope| {
        let lanes: Vec<_> = (0..2)
            .map(|lane| {
                let (tx, rx) = mpsc::sync_channel::<Vec<serde_json::Result<MetaOp>>>(2);
                let mine: Vec<&[&[u8]]> = batches.iter().skip(lane).step_by(2).copied().collect();
                scope.spawn(move || {
                    for batch in mine {
                        let decoded = batch.iter().map(|p| serde_json::from_slice(p)).collect();
                        if tx.send(decoded).is_err() {
                            return;
                        }
                    }
                });
                rx
            })
            .collect();
        for (i, batch) in batches.iter().enumerate() {
            match lanes[i % 2].recv() {
                Ok(decoded) => {
                    for (payload, op) in batch.iter().zip(decoded) {
                        state.apply_decoded(payload, op);
                    }
                }
                // A decoder is gone: decode here.
                Err(_) => batch.iter().for_each(|p| state.apply_payload(p)),
            }
        }
    });
}

/// Write `state` as snapshot `id`: temporary file, fsync, rename, fsync the
/// directory. Returns its size.
pub fn write_snapshot(dir: &Path, id: u32, state: &State, fsync: bool) -> io::Result<u64> {
    let path = snapshot_path(dir, id);
    let tmp = path.with_extension("snap.tmp");
    let mut file = File::create(&tmp)?;
    let mut buf = file_header(SNAPSHOT_MAGIC, id).to_vec();
    let mut total = 0u64;
    let mut put = |buf: &mut Vec<u8>, file: &mut File| -> io::Result<()> {
        if buf.len() >= WRITE_CHUNK {
            file.write_all(buf)?;
            total += buf.len() as u64;
            buf.clear();
        }
        Ok(())
    };
    for op in state.ops() {
        record::encode(&mut buf, &op).map_err(io::Error::other)?;
        put(&mut buf, &mut file)?;
    }
    for payload in state.unloaded_entries() {
        record::encode_raw(&mut buf, payload);
        put(&mut buf, &mut file)?;
    }
    file.write_all(&buf)?;
    total += buf.len() as u64;
    if fsync {
        file.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(total)
}

/// Fold every file up to log `upto` into snapshot `upto`, then delete what
/// it replaces. Returns the snapshot's size.
pub fn compact(dir: &Path, upto: u32, fsync: bool) -> io::Result<u64> {
    let listing = list(dir)?;
    let base = listing.base(upto);
    let mut state = State::default();
    if let Some(b) = base {
        read_into(dir, b, true, &mut state)?;
    }
    for &log in listing.logs.iter().filter(|&&l| l <= upto) {
        if base.is_none_or(|b| log > b) {
            read_into(dir, log, false, &mut state)?;
        }
    }
    let bytes = write_snapshot(dir, upto, &state, fsync)?;
    remove_replaced(dir, &listing, upto);
    Ok(bytes)
}

/// Delete the snapshots older than `snapshot` and the logs it covers.
pub fn remove_replaced(dir: &Path, listing: &Listing, snapshot: u32) {
    let old_snaps = listing.snapshots.iter().filter(|&&s| s < snapshot);
    let old_logs = listing.logs.iter().filter(|&&l| l <= snapshot);
    let paths = old_snaps
        .map(|&s| snapshot_path(dir, s))
        .chain(old_logs.map(|&l| log_path(dir, l)));
    for path in paths {
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), %error, "cannot remove a compacted metadata file");
        }
    }
}

/// fsync a directory (after creating, renaming or removing in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
