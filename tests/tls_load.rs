//! TLS under load and over the process's life: a thousand clients that
//! stall their handshake and a thousand that complete one at once, while
//! another client keeps publishing; the handshake timeout; the binary
//! reloading its certificates on SIGHUP and refusing an unreadable one at
//! boot with exit code 2.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::child::ChildBroker;
use common::tls::{client_config, connect, Ca, Files};
use common::{bounded, Broker};
use lapin::options::BasicPublishOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STALLED: usize = 1000;
const HANDSHAKES: usize = 1000;

/// A TLS handshake, then the AMQP header and the start of connection.start.
async fn handshake(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let Ok(mut tls) = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    else {
        return false;
    };
    if tls.write_all(common::raw::HEADER).await.is_err() || tls.flush().await.is_err() {
        return false;
    }
    let mut frame_start = [0u8; 7];
    tls.read_exact(&mut frame_start).await.is_ok() && frame_start[0] == 1
}

/// Publish with confirms until `stop`, counting confirms.
async fn keep_publishing(ch: lapin::Channel, confirmed: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let confirm = ch
            .basic_publish(
                "".into(),
                "steady".into(),
                BasicPublishOptions::default(),
                b"tick",
                Default::default(),
            )
            .await
            .expect("publish");
        assert!(confirm.await.expect("confirm").is_ack());
        confirmed.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_stalled_or_many_do_not_stall_a_publisher() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    bounded(Duration::from_secs(120), async {
        let ca = Ca::new("Load CA");
        let files = Files::write(&common::fresh_data_dir().join("tls"), &ca.server(), &ca.pem);
        let b = Broker::start_with(|cfg| {
            files.configure(cfg, false, false);
            cfg.tls.files.handshake_timeout_ms = 60_000;
        })
        .await;
        let addr = b.addr_of("amqp/ssl").unwrap();
        let url = format!("amqps://guest:guest@127.0.0.1:{}/%2f", addr.port());
        let conn = connect(&url, &ca.pem, None).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        common::declare_queue(&ch, "steady").await;
        common::confirm(&ch).await;
        let confirmed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = tokio::spawn(keep_publishing(ch, confirmed.clone(), stop.clone()));

        // Clients that open a TLS record and then say nothing.
        let mut stalled = Vec::with_capacity(STALLED);
        for _ in 0..STALLED {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
            stalled.push(s);
        }
        let before = confirmed.load(Ordering::Relaxed);
        let started = Instant::now();
        let config = client_config(&ca.pem, None);
        let storm: Vec<_> = (0..HANDSHAKES)
            .map(|_| tokio::spawn(handshake(addr, config.clone())))
            .collect();
        let mut completed = 0;
        for h in storm {
            completed += h.await.unwrap() as usize;
        }
        let during = confirmed.load(Ordering::Relaxed) - before;
        let took = started.elapsed();
        eprintln!("{HANDSHAKES} handshakes in {took:?} beside {STALLED} stalled ones; {during} confirms meanwhile");
        assert_eq!(completed, HANDSHAKES, "every real handshake completes");
        assert!(during > 0, "the publisher went on during the storm");
        // With the stalled clients still there, a new client gets in.
        let late = connect(&url, &ca.pem, None).await.expect("connect beside stalled clients");
        late.create_channel().await.unwrap();
        stop.store(true, Ordering::Relaxed);
        publisher.await.unwrap();
        drop(stalled);
    })
    .await
}

#[tokio::test]
async fn a_stalled_handshake_is_cut_off_after_its_timeout() {
    common::within(async {
        let ca = Ca::new("Timeout CA");
        let files = Files::write(&common::fresh_data_dir().join("tls"), &ca.server(), &ca.pem);
        let b = Broker::start_with(|cfg| {
            files.configure(cfg, false, false);
            cfg.tls.files.handshake_timeout_ms = 200;
        })
        .await;
        let mut s = TcpStream::connect(b.addr_of("amqp/ssl").unwrap())
            .await
            .unwrap();
        s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the broker closes a stalled handshake");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    })
    .await
}

/// A config file with `[tls]` on these files (port 0).
fn config_file(dir: &std::path::Path, files: &Files) -> std::path::PathBuf {
    let path = dir.join("warren.toml");
    let text = format!(
        "[tls]\nport = 0\ncert_file = {:?}\nkey_file = {:?}\n",
        files.cert_file, files.key_file
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn sighup_reloads_the_binarys_certificates() {
    bounded(Duration::from_secs(60), async {
        let dir = common::fresh_data_dir();
        let ca = Ca::new("Before SIGHUP");
        let files = Files::write(&dir.join("tls"), &ca.server(), &ca.pem);
        let child = ChildBroker::start(&dir.join("data"), &config_file(&dir, &files));
        let line = child.log_line(|l| l.contains("amqp/ssl")).await;
        let addr = line[line.find("addr=").unwrap() + 5..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        let url = format!("amqps://guest:guest@{addr}/%2f");
        let open = connect(&url, &ca.pem, None).await.expect("before SIGHUP");
        let ch = open.create_channel().await.unwrap();

        let rotated = Ca::new("After SIGHUP");
        files.replace(&rotated.server(), &rotated.pem);
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &child.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        child
            .log_line(|l| l.contains("TLS certificates reloaded"))
            .await;
        connect(&url, &rotated.pem, None)
            .await
            .expect("the new certificate");
        assert!(
            connect(&url, &ca.pem, None).await.is_err(),
            "the old one is gone"
        );
        // The connection from before the reload is still up.
        common::declare_queue(&ch, "after-hup").await;
        child.assert_no_panic();
    })
    .await
}

#[tokio::test]
async fn an_unreadable_certificate_stops_the_boot_with_code_2() {
    bounded(Duration::from_secs(30), async {
        let dir = common::fresh_data_dir();
        let config = dir.join("warren.toml");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            &config,
            "[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n",
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
            .args([
                "--port",
                "0",
                "--management-port",
                "0",
                "--prometheus-port",
                "0",
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("`tls.cert_file`") && err.contains("/nonexistent/cert.pem"),
            "{err}"
        );
    })
    .await
}
