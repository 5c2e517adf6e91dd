//! A stream's tracked consumer offsets (Kafka's committed offsets, as
//! LavinMQ keeps them for AMQP consumers): for each tracking name, the
//! next offset its consumer is to read (one past its last ack). Kept in memory and in
//! the stream's `offsets` file, appended to on each ack and rewritten
//! whole once it holds mostly stale entries.
//!
//! ```text
//! offsets = entry*
//! entry   = name_len:u16 name offset:u64 crc:u32     (little-endian)
//! crc     = CRC-32 of name_len, name and offset
//! ```
//! Entries are written to the OS before the ack that caused them is
//! answered, never fsynced, like a classic queue's ack entries: losing the
//! newest on a power cut means a consumer resumes a little earlier, which
//! at-least-once allows. A torn last entry is ignored at start.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

/// Tracking names kept per stream; beyond it the least recently updated
/// one is forgotten (each consumer tag a client invents would otherwise
/// grow the file and the map without end).
pub const MAX_TRACKED: usize = 10_000;
/// Longest tracking name stored (a consumer tag is a short string).
const MAX_NAME: usize = 255;

/// Tracked offsets of one stream.
#[derive(Debug)]
pub struct StreamOffsets {
    path: PathBuf,
    offsets: IndexMap<String, u64, ahash::RandomState>,
    file: Option<File>,
    /// Entries in the file (stale ones included).
    entries: usize,
}

impl StreamOffsets {
    /// No offsets yet, for a new stream in `dir` (no file I/O).
    pub fn empty(dir: &Path) -> Self {
        StreamOffsets {
            path: dir.join("offsets"),
            offsets: IndexMap::default(),
            file: None,
            entries: 0,
        }
    }

    /// The offsets stored in `dir` (none if there is no file yet).
    /// Blocking file I/O: run at start or declare, off the async workers.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let path = dir.join("offsets");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut offsets = IndexMap::default();
        let mut entries = 0;
        let mut rest = &bytes[..];
        while let Some((name, offset, len)) = decode(rest) {
            offsets.shift_remove(&name);
            offsets.insert(name, offset);
            if offsets.len() > MAX_TRACKED {
                offsets.shift_remove_index(0);
            }
            entries += 1;
            rest = &rest[len..];
        }
        if !rest.is_empty() {
            tracing::warn!(path = %path.display(), bytes = rest.len(), "ignoring a torn entry at the end of a stream's offsets");
        }
        let mut me = StreamOffsets {
            path,
            offsets,
            file: None,
            entries,
        };
        if !rest.is_empty() {
            // The next append must not follow the fragment.
            me.rewrite()?;
        }
        Ok(me)
    }

    /// The next offset stored for `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.offsets.get(name).copied()
    }

    /// Every tracked name and offset.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.offsets.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Store `offset` for `name` (written to the OS before returning).
    pub fn store(&mut self, name: &str, offset: u64) -> io::Result<()> {
        let name = &name[..floor_char_boundary(name, MAX_NAME)];
        if self.offsets.get(name) == Some(&offset) {
            return Ok(());
        }
        self.offsets.shift_remove(name);
        self.offsets.insert(name.to_string(), offset);
        if self.offsets.len() > MAX_TRACKED {
            self.offsets.shift_remove_index(0);
        }
        if self.entries > 4 * self.offsets.len() + 64 {
            return self.rewrite();
        }
        let mut buf = Vec::with_capacity(name.len() + 14);
        encode(&mut buf, name, offset);
        self.append_file()?.write_all(&buf)?;
        self.entries += 1;
        Ok(())
    }

    fn append_file(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.file = Some(f);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("offsets file not open"))
    }

    /// Replace the file with one entry per name (written aside, then
    /// renamed over it, so a crash leaves the old or the new whole).
    fn rewrite(&mut self) -> io::Result<()> {
        let mut buf = Vec::new();
        for (name, offset) in &self.offsets {
            encode(&mut buf, name, *offset);
        }
        let tmp = self.path.with_extension("tmp");
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&tmp, &buf)?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = None;
        self.entries = self.offsets.len();
        Ok(())
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn encode(out: &mut Vec<u8>, name: &str, offset: u64) {
    let start = out.len();
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The entry at the start of `buf`: name, offset and its length.
fn decode(buf: &[u8]) -> Option<(String, u64, usize)> {
    let (n, rest) = buf.split_first_chunk::<2>()?;
    let n = u16::from_le_bytes(*n) as usize;
    let name = rest.get(..n)?;
    let offset = u64::from_le_bytes(rest.get(n..n + 8)?.try_into().ok()?);
    let crc = u32::from_le_bytes(rest.get(n + 8..n + 12)?.try_into().ok()?);
    if crc32fast::hash(&buf[..2 + n + 8]) != crc {
        return None;
    }
    let name = String::from_utf8(name.to_vec()).ok()?;
    Some((name, offset, 2 + n + 12))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        std::env::temp_dir().join(format!("warren-offsets-{}", rand::random::<u64>()))
    }

    #[test]
    fn offsets_come_back_after_reopening() {
        let d = dir();
        let mut o = StreamOffsets::open(&d).unwrap();
        o.store("a", 5).unwrap();
        o.store("b", 7).unwrap();
        o.store("a", 9).unwrap();
        let o = StreamOffsets::open(&d).unwrap();
        assert_eq!(
            (o.get("a"), o.get("b"), o.get("c")),
            (Some(9), Some(7), None)
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_last_entry_is_ignored_and_the_file_stays_usable() {
        let d = dir();
        let mut o = StreamOffsets::open(&d).unwrap();
        o.store("a", 5).unwrap();
        o.store("b", 6).unwrap();
        let path = d.join("offsets");
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let mut o = StreamOffsets::open(&d).unwrap();
        assert_eq!((o.get("a"), o.get("b")), (Some(5), None));
        o.store("c", 1).unwrap();
        let o = StreamOffsets::open(&d).unwrap();
        assert_eq!((o.get("a"), o.get("c")), (Some(5), Some(1)));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_file_is_compacted_and_names_are_bounded() {
        let d = dir();
        let mut o = StreamOffsets::open(&d).unwrap();
        for i in 0..1_000 {
            o.store("same", i).unwrap();
        }
        let len = std::fs::metadata(d.join("offsets")).unwrap().len();
        assert!(len < 100 * 18, "compacted: {len} bytes");
        for i in 0..MAX_TRACKED as u64 + 5 {
            o.store(&format!("t{i}"), i).unwrap();
        }
        let o = StreamOffsets::open(&d).unwrap();
        assert_eq!(o.iter().count(), MAX_TRACKED);
        assert_eq!(o.get("same"), None, "the least recently updated went first");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
