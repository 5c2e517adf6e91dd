//! The thread that samples memory use and free disk space and raises or
//! clears the alarms. It does blocking reads of `/proc` and a `statvfs` of
//! the data directory, so it runs on its own thread, never on the async
//! workers.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::size::WatermarkSetting;
use super::{AlarmState, Alarms};

/// What the monitor checks against.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The memory high watermark.
    pub memory: WatermarkSetting,
    /// Free bytes below which the disk alarm is raised (0: never).
    pub disk_free_bytes: u64,
    /// The directory whose file system is watched.
    pub data_dir: PathBuf,
    /// Time between samples.
    pub interval: Duration,
}

/// The running monitor; stops its thread when dropped.
#[derive(Debug)]
pub struct Monitor {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Take a first sample at once (so a broker that starts over its limits
    /// starts with the alarm raised), then sample on a thread.
    pub fn start(alarms: Arc<Alarms>, limits: Limits) -> std::io::Result<Monitor> {
        let available = memory_available();
        let watermark = limits.memory.bytes(available);
        tracing::info!(
            memory_watermark_bytes = watermark,
            memory_available_bytes = available,
            disk_free_limit_bytes = limits.disk_free_bytes,
            "resource alarms set"
        );
        alarms.set(sample(&alarms, &limits, watermark));
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("warren-alarms".into())
            .spawn(move || loop {
                match stopped.recv_timeout(limits.interval) {
                    Err(RecvTimeoutError::Timeout) => {
                        alarms.set(sample(&alarms, &limits, watermark))
                    }
                    _ => return,
                }
            })?;
        Ok(Monitor {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sample(alarms: &Alarms, limits: &Limits, watermark: u64) -> AlarmState {
    let rss = resident_bytes();
    let free = disk_free_bytes(&limits.data_dir);
    alarms.record(super::Readings {
        memory_used: rss.unwrap_or(0),
        memory_limit: watermark,
        disk_free: free.unwrap_or(0),
        disk_free_limit: limits.disk_free_bytes,
    });
    let memory = rss.is_some_and(|rss| rss > watermark);
    let disk = limits.disk_free_bytes > 0 && free.is_some_and(|free| free < limits.disk_free_bytes);
    AlarmState { memory, disk }
}

/// The process's resident set size.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&status, "VmRSS:")
}

/// `Key:   1234 kB` from a /proc file, in bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// Memory Warren may use: the machine's, or its cgroup's limit if lower.
pub fn memory_available() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| kib_field(&t, "MemTotal:"))
        .unwrap_or(u64::MAX);
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .filter_map(|t| t.trim().parse::<u64>().ok())
    .min()
    .unwrap_or(u64::MAX);
    total.min(cgroup)
}

/// Bytes an unprivileged writer can still use on `dir`'s file system.
pub fn disk_free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_parse() {
        assert_eq!(kib_field("VmRSS:\t  2048 kB\n", "VmRSS:"), Some(2 << 20));
        assert_eq!(kib_field("VmHWM: 1 kB\n", "VmRSS:"), None);
        assert!(resident_bytes().is_some_and(|b| b > 0));
        assert!(memory_available() > 0);
        assert!(disk_free_bytes(Path::new("/")).is_some());
    }

    #[test]
    fn an_absolute_watermark_below_use_raises_the_memory_alarm() {
        let limits = Limits {
            memory: WatermarkSetting::Absolute("1kB".into()),
            disk_free_bytes: u64::MAX,
            data_dir: std::env::temp_dir(),
            interval: Duration::from_millis(10),
        };
        let alarms = Arc::new(Alarms::default());
        let monitor = Monitor::start(alarms.clone(), limits).unwrap();
        assert_eq!(
            alarms.current(),
            AlarmState {
                memory: true,
                disk: true
            }
        );
        drop(monitor);
    }
}
