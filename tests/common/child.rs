//! The `warren` binary as a child process, for tests that must kill it,
//! signal it or read its log: [`ChildBroker`] starts it on a data
//! directory, captures everything it prints and learns its port from the
//! `warren listening` line; [`connect`] opens a lapin connection to it.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use super::poll;

/// Upper bound for any single step with a child: starting to listen,
/// accepting a connection, exiting after SIGTERM (and, in the tests, one
/// delivery).
pub const STEP: Duration = Duration::from_secs(10);

/// The `warren` binary running as a child process; killed when dropped.
pub struct ChildBroker {
    child: Child,
    /// The port it listens on (0 for a child from [`ChildBroker::spawn`]).
    pub port: u16,
    output: Arc<Mutex<Vec<String>>>,
}

impl ChildBroker {
    /// Start `warren` on `data_dir` with `config` and wait until it listens.
    pub fn start(data_dir: &Path, config: &Path) -> ChildBroker {
        Self::start_with_api(data_dir, config, 0)
    }

    /// Start `warren` with its management API on `management_port` (0:
    /// off) and wait until it listens.
    pub fn start_with_api(data_dir: &Path, config: &Path, management_port: u16) -> ChildBroker {
        let (mut broker, listening) = Self::launch(data_dir, Some(config), management_port);
        match listening.recv_timeout(STEP) {
            Ok(port) => broker.port = port,
            Err(_) => panic!(
                "warren did not report listening within {STEP:?}; output:\n{}",
                broker.output()
            ),
        }
        broker
    }

    /// Start `warren` on `data_dir` with the default configuration without
    /// waiting for it to listen: for a child that is expected to refuse.
    pub fn spawn(data_dir: &Path) -> ChildBroker {
        Self::launch(data_dir, None, 0).0
    }

    /// Spawn the binary and capture its output; the receiver gets the port
    /// once it listens.
    fn launch(
        data_dir: &Path,
        config: Option<&Path>,
        management_port: u16,
    ) -> (ChildBroker, mpsc::Receiver<u16>) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
        command
            .arg("--port")
            .arg("0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--log-level")
            .arg("info")
            .arg("--management-port")
            .arg(management_port.to_string())
            .args(["--prometheus-port", "0"]);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn warren");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("child stdout");
        let stderr = child.stderr.take().expect("child stderr");
        capture(stdout, output.clone(), port_tx.clone());
        capture(stderr, output.clone(), port_tx);
        let broker = ChildBroker {
            child,
            port: 0,
            output,
        };
        (broker, port_rx)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (through kill(1)), then wait up to [`STEP`] for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(&pid)
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        match self.wait_for_exit(STEP).await {
            Some(status) => status,
            None => panic!(
                "warren did not exit within {STEP:?} of SIGTERM; output:\n{}",
                self.output()
            ),
        }
    }

    /// Poll the child until it exits or `limit` passes.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = &mut self.child;
        poll(limit, Duration::from_millis(20), || {
            child.try_wait().expect("poll the child")
        })
        .await
    }

    /// Everything the child printed so far.
    pub fn output(&self) -> String {
        self.lines().join("\n")
    }

    fn lines(&self) -> MutexGuard<'_, Vec<String>> {
        self.output
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The first line the child printed that matches `wanted`, waiting up
    /// to `patience` for it (the output threads may lag the child a
    /// little); None if there is none by then.
    pub async fn find_line(
        &self,
        wanted: impl Fn(&str) -> bool,
        patience: Duration,
    ) -> Option<String> {
        poll(patience, Duration::from_millis(20), || {
            self.lines().iter().find(|l| wanted(l)).cloned()
        })
        .await
    }

    /// The first log line matching `wanted`, waiting up to 5 s for it.
    pub async fn log_line(&self, wanted: impl Fn(&str) -> bool) -> String {
        match self.find_line(wanted, Duration::from_secs(5)).await {
            Some(line) => line,
            None => panic!("no such line in warren's log:\n{}", self.output()),
        }
    }

    pub fn assert_no_panic(&self) {
        let output = self.output();
        assert!(
            !output.contains("panicked"),
            "warren panicked; output:\n{output}"
        );
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // A failing test shows what the broker said last.
            let lines = self.lines();
            let tail = &lines[lines.len().saturating_sub(100)..];
            eprintln!("warren's last output lines:\n{}", tail.join("\n"));
        }
    }
}

/// A lapin connection as guest to vhost `/` of a broker on `port`, within
/// [`STEP`].
pub async fn connect(port: u16) -> Connection {
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    tokio::time::timeout(
        STEP,
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect("connecting to warren timed out")
    .expect("connect to warren")
}

/// Collect a child's output lines, reporting the port of the listening line.
fn capture(
    stream: impl Read + Send + 'static,
    output: Arc<Mutex<Vec<String>>>,
    port_tx: mpsc::Sender<u16>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            if let Some(port) = listening_port(&line) {
                let _ = port_tx.send(port);
            }
            output
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(line);
        }
    });
}

/// The port in a `warren listening addr=127.0.0.1:PORT` log line.
fn listening_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("warren listening")?..];
    let addr = rest[rest.find("addr=")? + "addr=".len()..]
        .split_whitespace()
        .next()?;
    addr.parse::<SocketAddr>().ok().map(|a| a.port())
}
