//! Data directories for tests that restart, crash or damage a broker:
//! [`DataDir`], a fresh directory (with room for a config file beside it)
//! that is removed when the test passes and kept when it fails, and the
//! disk space the files under a directory take ([`disk_use`],
//! [`wait_for_disk_below`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{fresh_data_dir, poll};

/// A fresh data directory (and a config file beside it), removed when the
/// test passes and kept, with its path printed, when it fails.
pub struct DataDir(PathBuf);

impl DataDir {
    pub fn new() -> DataDir {
        DataDir(fresh_data_dir())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Where message segments live.
    pub fn queues(&self) -> PathBuf {
        self.0.join("queues")
    }

    pub fn config_path(&self) -> PathBuf {
        PathBuf::from(format!("{}.toml", self.0.display()))
    }

    /// Write a config file (only the keys that differ from the defaults).
    pub fn write_config(&self, toml: &str) -> PathBuf {
        let path = self.config_path();
        std::fs::write(&path, toml).expect("write the config file");
        path
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping the data directory {}", self.0.display());
        } else {
            remove_dir(&self.0);
            let _ = std::fs::remove_file(self.config_path());
        }
    }
}

/// Remove a directory, trying again for a moment while it does not go: a
/// server that is shutting down may still write a file there.
fn remove_dir(dir: &Path) {
    for _ in 0..50 {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound && dir.exists() => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

/// Total size of the files under `path` (0 if it does not exist).
pub fn disk_use(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_use(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Wait until the files under `path` take fewer than `limit` bytes (space
/// may be released in the background), and return what they take then;
/// panics after `patience`.
pub async fn wait_for_disk_below(path: &Path, limit: u64, patience: Duration) -> u64 {
    let mut used = 0;
    let below = poll(patience, Duration::from_millis(50), || {
        used = disk_use(path);
        (used < limit).then_some(used)
    })
    .await;
    below.unwrap_or_else(|| {
        panic!(
            "{} still holds {used} bytes after {patience:?} (expected under {limit})",
            path.display()
        )
    })
}
