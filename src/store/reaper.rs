//! Deleting directories off the caller's path. A deleted queue's files may
//! be gigabytes, and the queue is deleted under the topology and queue
//! locks: so its directory is only renamed aside there (`q7` becomes
//! `q7.deleted`, one metadata operation) and one background thread unlinks
//! it. A crash in between leaves the renamed directory, which the next
//! start removes with the other directories no definition refers to.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::OnceLock;

static REAPER: OnceLock<Option<Sender<PathBuf>>> = OnceLock::new();

fn reaper() -> Option<&'static Sender<PathBuf>> {
    REAPER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<PathBuf>();
            let spawned = std::thread::Builder::new()
                .name("warren-reaper".into())
                .spawn(move || {
                    for dir in rx {
                        remove_now(&dir);
                    }
                });
            spawned.ok().map(|_| tx)
        })
        .as_ref()
}

fn remove_now(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted queue's directory")
        }
    }
}

/// Remove `dir` and everything in it: renamed aside now, unlinked in the
/// background (at once, if no background thread could be started).
pub fn remove_dir(dir: &Path) {
    let mut aside = dir.as_os_str().to_owned();
    aside.push(".deleted");
    let aside = PathBuf::from(aside);
    let target = match std::fs::rename(dir, &aside) {
        Ok(()) => aside,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot rename a deleted queue's directory aside");
            dir.to_path_buf()
        }
    };
    match reaper() {
        Some(tx) => {
            if let Err(mpsc::SendError(target)) = tx.send(target) {
                remove_now(&target);
            }
        }
        None => remove_now(&target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_gone_soon_and_its_name_free_at_once() {
        let base = std::env::temp_dir().join(format!("warren-reaper-{}", rand::random::<u64>()));
        let dir = base.join("q1");
        std::fs::create_dir_all(dir.join("p3")).unwrap();
        std::fs::write(dir.join("p3").join("00000001.seg"), b"x").unwrap();
        remove_dir(&dir);
        assert!(!dir.exists(), "the name is free at once");
        for _ in 0..200 {
            if std::fs::read_dir(&base).unwrap().next().is_none() {
                let _ = std::fs::remove_dir(&base);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the renamed directory was never removed");
    }
}
