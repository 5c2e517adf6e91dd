//! AMQPS and HTTPS through real clients: lapin over TLS, EXTERNAL login
//! with a client certificate, the refusals RabbitMQ gives (no certificate,
//! an expired one, one from another CA, a client that does not trust the
//! server, plain AMQP on the TLS port), certificate reload with open
//! connections kept, and the management API over HTTPS.

mod common;

use std::sync::Arc;

use common::tls::{client_config, connect, Ca, Files};
use common::{within, Broker};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A broker with AMQPS on, its CA, and the management API.
struct TlsBroker {
    broker: Broker,
    ca: Ca,
    files: Files,
}

impl TlsBroker {
    async fn start(verify_peer: bool, fail_if_no_cert: bool) -> TlsBroker {
        Self::start_with(verify_peer, fail_if_no_cert, |_| {}).await
    }

    async fn start_with(
        verify_peer: bool,
        fail_if_no_cert: bool,
        adjust: impl FnOnce(&mut warren::Config),
    ) -> TlsBroker {
        let ca = Ca::new("Warren test CA");
        let dir = common::fresh_data_dir().join("tls");
        let files = Files::write(&dir, &ca.server(), &ca.pem);
        let broker = Broker::start_with(|cfg| {
            files.configure(cfg, verify_peer, fail_if_no_cert);
            cfg.management_port = common::free_port();
            adjust(cfg);
        })
        .await;
        TlsBroker { broker, ca, files }
    }

    fn url(&self, userinfo: &str, query: &str) -> String {
        let addr = self.broker.addr_of("amqp/ssl").expect("AMQPS on");
        format!("amqps://{userinfo}127.0.0.1:{}/%2f{query}", addr.port())
    }

    fn guest_url(&self) -> String {
        self.url("guest:guest@", "")
    }

    /// A user that may log in only with a certificate, with all permissions.
    async fn add_cert_user(&self, name: &str) {
        let b = &self.broker;
        let user = json!({"password_hash": "", "tags": ""});
        assert_eq!(
            b.api("PUT", &format!("/users/{name}"), Some(user)).await.0,
            201
        );
        let perms = json!({"configure": ".*", "write": ".*", "read": ".*"});
        let path = format!("/permissions/%2F/{name}");
        assert_eq!(b.api("PUT", &path, Some(perms)).await.0, 201);
    }
}

/// The one connection the API lists.
async fn only_connection(b: &Broker) -> Value {
    // Connections are listed once their task has registered them.
    for _ in 0..100 {
        let (_, list) = b.api("GET", "/connections", None).await;
        if let Some([one]) = list.as_array().map(Vec::as_slice) {
            return one.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("not exactly one connection listed");
}

#[tokio::test]
async fn lapin_publishes_and_consumes_over_tls() {
    within(async {
        let t = TlsBroker::start(false, false).await;
        let conn = connect(&t.guest_url(), &t.ca.pem, None)
            .await
            .expect("TLS connect");
        let ch = conn.create_channel().await.unwrap();
        common::declare_queue(&ch, "over-tls").await;
        common::confirm(&ch).await;
        // Larger than a TLS record (16 KiB) and than a frame, to cover
        // records split and joined under the frame decoder.
        let big = vec![7u8; 300_000];
        common::publish_confirmed(
            &ch,
            "over-tls",
            [b"small".to_vec(), big.clone()].into_iter(),
        )
        .await;
        let mut consumer = common::consume(&ch, "over-tls").await;
        let got = common::next_deliveries(&mut consumer, 2).await;
        assert_eq!(got[0].data, b"small");
        assert_eq!(got[1].data, big);
        let c = only_connection(&t.broker).await;
        assert_eq!(c["ssl"], true, "{c}");
        assert_eq!(c["ssl_protocol"], "tlsv1.3");
        assert_eq!(c["auth_mechanism"], "PLAIN");
        assert_eq!(c["peer_cert_subject"], Value::Null);
        let (_, overview) = t.broker.api("GET", "/overview", None).await;
        let protocols: Vec<&str> = overview["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["protocol"].as_str())
            .collect();
        assert!(protocols.contains(&"amqp/ssl"), "{protocols:?}");
        // The plain listener still serves.
        let (_plain, ch) = t.broker.channel().await;
        assert_eq!(common::ready_count(&ch, "over-tls").await.unwrap(), 0);
    })
    .await
}

#[tokio::test]
async fn external_logs_in_as_the_certificates_common_name() {
    within(async {
        let t = TlsBroker::start_with(true, false, |cfg| {
            cfg.auth_mechanisms = ["EXTERNAL", "PLAIN"].map(String::from).to_vec();
        })
        .await;
        t.add_cert_user("cert-user").await;
        let external = t.url("", "?auth_mechanism=external");
        let conn = connect(&external, &t.ca.pem, Some(&t.ca.client("cert-user")))
            .await
            .expect("EXTERNAL login");
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            "by-cert".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let c = only_connection(&t.broker).await;
        assert_eq!(c["user"], "cert-user", "{c}");
        assert_eq!(c["auth_mechanism"], "EXTERNAL");
        // rcgen writes CN first; RabbitMQ shows the RDNs last first.
        assert_eq!(c["peer_cert_subject"], "O=Warren tests,CN=cert-user");
        assert_eq!(c["peer_cert_issuer"], "CN=Warren test CA");
        conn.close(200, "bye".into()).await.unwrap();

        // A certificate naming no user is refused, and counted.
        let stranger = connect(&external, &t.ca.pem, Some(&t.ca.client("nobody"))).await;
        let err = stranger.expect_err("unknown user");
        assert_eq!(common::reply_code(&err), Some(403), "{err}");
        assert!(
            common::reply_text(&err).contains("mechanism EXTERNAL"),
            "{err}"
        );
        // Without a certificate EXTERNAL is refused alike (RabbitMQ
        // offers it and refuses); PLAIN still works since
        // fail_if_no_peer_cert is off.
        let no_cert = connect(&external, &t.ca.pem, None).await;
        let err = no_cert.expect_err("EXTERNAL without a certificate");
        assert_eq!(common::reply_code(&err), Some(403), "{err}");
        connect(&t.guest_url(), &t.ca.pem, None)
            .await
            .expect("PLAIN without a certificate");
        let (_, overview) = t.broker.api("GET", "/overview", None).await;
        let node = overview["node"].as_str().unwrap().to_string();
        let path = format!("/auth/attempts/{node}/source");
        let (_, attempts) = t.broker.api("GET", &path, None).await;
        let nobody = attempts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["username"] == "nobody")
            .cloned()
            .expect("the refused EXTERNAL login is counted");
        assert_eq!(nobody["auth_attempts_failed"], 1, "{nobody}");
    })
    .await
}

#[tokio::test]
async fn external_is_off_unless_configured() {
    within(async {
        // verify_peer alone (mutual TLS) keeps passwords: EXTERNAL needs
        // auth_mechanisms, as RabbitMQ needs it there and its plugin.
        let t = TlsBroker::start(true, false).await;
        t.add_cert_user("cert-user").await;
        let external = t.url("", "?auth_mechanism=external");
        let err = connect(&external, &t.ca.pem, Some(&t.ca.client("cert-user")))
            .await
            .expect_err("EXTERNAL not offered");
        assert_eq!(common::reply_code(&err), Some(403), "{err}");
        assert!(
            common::reply_text(&err).contains("unknown authentication mechanism"),
            "{err}"
        );
        // connection.start does not list it.
        let addr = t.broker.addr_of("amqp/ssl").unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls_client = client_config(&t.ca.pem, Some(&t.ca.client("cert-user")));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(tls_client)
            .connect(name, tcp)
            .await
            .unwrap();
        tls.write_all(common::raw::HEADER).await.unwrap();
        tls.flush().await.unwrap();
        let mut start = vec![0u8; 4096];
        let n = tls.read(&mut start).await.unwrap();
        let start = String::from_utf8_lossy(&start[..n]);
        assert!(
            start.contains("PLAIN AMQPLAIN") && !start.contains("EXTERNAL"),
            "{start}"
        );
    })
    .await
}

#[tokio::test]
async fn tls_connections_end_with_close_notify() {
    within(async {
        let t = TlsBroker::start(false, false).await;
        let addr = t.broker.addr_of("amqp/ssl").unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let connector = tokio_rustls::TlsConnector::from(client_config(&t.ca.pem, None));
        // A refused handshake (wrong protocol header) and a closed session:
        // both end with close_notify, so the client reads a clean end
        // rather than a truncation (UnexpectedEof).
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
        tls.write_all(b"HTTP/1.1").await.unwrap();
        tls.flush().await.unwrap();
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await.expect("a clean TLS end");
        assert_eq!(
            buf,
            common::raw::HEADER,
            "the supported header, then close_notify"
        );
    })
    .await
}

#[tokio::test]
async fn bad_certificates_and_plain_clients_are_refused() {
    within(async {
        let t = TlsBroker::start(true, true).await;
        let url = t.guest_url();
        // fail_if_no_peer_cert: no certificate, no connection.
        assert!(
            connect(&url, &t.ca.pem, None).await.is_err(),
            "no client certificate"
        );
        let expired = t.ca.expired_client("guest");
        assert!(
            connect(&url, &t.ca.pem, Some(&expired)).await.is_err(),
            "expired"
        );
        let other = Ca::new("Another CA");
        let foreign = other.client("guest");
        assert!(
            connect(&url, &t.ca.pem, Some(&foreign)).await.is_err(),
            "foreign CA"
        );
        // A client that does not trust the server's CA gives up itself.
        let good = t.ca.client("guest");
        assert!(
            connect(&url, &other.pem, Some(&good)).await.is_err(),
            "untrusted server"
        );
        // Plain AMQP on the TLS port: no AMQP answer, the socket ends.
        let addr = t.broker.addr_of("amqp/ssl").unwrap();
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(common::raw::HEADER).await.unwrap();
        let mut buf = Vec::new();
        let _ = plain.read_to_end(&mut buf).await;
        assert!(
            !buf.starts_with(b"AMQP") && !buf.starts_with(&[1, 0, 0]),
            "{buf:?}"
        );
        // And a good client still gets in.
        let conn = connect(&url, &t.ca.pem, Some(&good))
            .await
            .expect("valid certificate");
        conn.create_channel().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn reload_swaps_certificates_and_keeps_connections() {
    within(async {
        let t = TlsBroker::start(false, false).await;
        let before = connect(&t.guest_url(), &t.ca.pem, None).await.unwrap();
        let ch = before.create_channel().await.unwrap();
        common::declare_queue(&ch, "reload").await;
        common::confirm(&ch).await;

        let new_ca = Ca::new("Rotated CA");
        t.files.replace(&new_ca.server(), &new_ca.pem);
        assert_eq!(t.broker.reload_tls().await, 0);
        assert!(
            connect(&t.guest_url(), &t.ca.pem, None).await.is_err(),
            "old CA after reload"
        );
        let after = connect(&t.guest_url(), &new_ca.pem, None)
            .await
            .expect("new certificate");
        // The connection opened before the reload goes on.
        common::publish_confirmed(&ch, "reload", std::iter::once(b"still here".to_vec())).await;
        let got = ch
            .basic_get("reload".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(got.delivery.data, b"still here");
        after.create_channel().await.unwrap();

        // A broken file at reload keeps the certificates in use.
        std::fs::write(&t.files.key_file, "not a key").unwrap();
        assert_eq!(t.broker.reload_tls().await, 1);
        connect(&t.guest_url(), &new_ca.pem, None)
            .await
            .expect("previous certificate kept");
    })
    .await
}

/// GET `path` over HTTPS as guest; the status line and body.
async fn https_get(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    out
}

#[tokio::test]
async fn management_and_metrics_serve_https() {
    within(async {
        let ca = Ca::new("HTTPS CA");
        let files = Files::write(
            &common::fresh_data_dir().join("https"),
            &ca.server(),
            &ca.pem,
        );
        let b = Broker::start_with(|cfg| {
            let t = &mut cfg.management.tls;
            t.files.cert_file = files.cert_file.clone();
            t.files.key_file = files.key_file.clone();
            t.listener.port = common::free_port();
            t.listener.prometheus_port = common::free_port();
            cfg.management_port = common::free_port();
        })
        .await;
        let config = client_config(&ca.pem, None);
        let api = b.addr_of("https").expect("HTTPS API on");
        let overview = https_get(api, config.clone(), "/api/overview").await;
        assert!(overview.starts_with("HTTP/1.1 200"), "{overview}");
        assert!(overview.contains("\"https\"") && overview.contains("\"https/prometheus\""));
        let metrics = b.addr_of("https/prometheus").expect("HTTPS metrics on");
        let text = https_get(metrics, config, "/metrics").await;
        assert!(
            text.starts_with("HTTP/1.1 200") && text.contains("rabbitmq_identity_info"),
            "{text}"
        );
        // Plain HTTP stays on its own port.
        assert_eq!(b.api("GET", "/overview", None).await.0, 200);
    })
    .await
}
