//! A lean AMQP 0-9-1 client for load generation, built on Warren's own
//! frame codec: no per-message allocation on the publish path (frames are
//! encoded straight into one write buffer) and bodies are read as slices of
//! the read buffer.

use std::str::FromStr;
use std::sync::Arc;

use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use amq_protocol::types::{FieldTable, LongString, ShortString};
use amq_protocol::uri::{AMQPScheme, AMQPUri};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use warren::protocol::frame::decode_frame;
use warren::protocol::output::FrameWriter;
use warren::protocol::Frame;

/// Errors are strings: this is a tool, the message is what matters.
pub type Result<T> = std::result::Result<T, String>;

/// Connection parameters from an `amqp://` or `amqps://` URL.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
    /// For `amqps://`: the TLS client config.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    /// Parse `url`; an `amqps://` one needs `tls_ca`, the CA file to trust.
    pub fn parse(url: &str, tls_ca: Option<&str>) -> Result<Self> {
        let uri = AMQPUri::from_str(url).map_err(|e| format!("bad AMQP URL {url:?}: {e}"))?;
        let tls = match (uri.scheme, tls_ca) {
            (AMQPScheme::AMQPS, Some(ca)) => Some(crate::tls::client_config(ca)?),
            (AMQPScheme::AMQPS, None) => return Err("an amqps:// URL needs --tls-ca".into()),
            (AMQPScheme::AMQP, _) => None,
        };
        Ok(Target {
            host: uri.authority.host,
            port: uri.authority.port,
            user: uri.authority.userinfo.username,
            password: uri.authority.userinfo.password,
            vhost: uri.vhost,
            tls,
        })
    }

    /// Open the TCP connection, and TLS over it for `amqps://`; the two
    /// halves.
    async fn open(&self) -> Result<(ReadHalf, WriteHalf)> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", self.host, self.port))?;
        let _ = stream.set_nodelay(true);
        let Some(config) = &self.tls else {
            let (r, w) = stream.into_split();
            return Ok((Box::new(r), Box::new(w)));
        };
        let name = rustls_pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| format!("{}: {e}", self.host))?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake with {}:{} failed: {e}", self.host, self.port))?;
        let (r, w) = tokio::io::split(tls);
        Ok((Box::new(r), Box::new(w)))
    }
}

type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// The reading half of a connection.
pub struct Reader {
    stream: ReadHalf,
    buf: BytesMut,
    frame_max: u32,
}

impl Reader {
    /// Next frame, reading from the socket as needed.
    pub async fn frame(&mut self) -> Result<Frame> {
        loop {
            match decode_frame(&mut self.buf, self.frame_max) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(format!("bad frame from broker: {e:?}")),
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(256 * 1024);
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if n == 0 {
                return Err("broker closed the connection".into());
            }
        }
    }

    /// Next method frame, skipping heartbeats; a Close becomes an error.
    pub async fn method(&mut self) -> Result<(u16, AMQPClass)> {
        loop {
            match self.frame().await? {
                Frame::Method {
                    channel, method, ..
                } => {
                    return match *method {
                        AMQPClass::Connection(connection::AMQPMethod::Close(c)) => Err(format!(
                            "connection closed: {} {}",
                            c.reply_code, c.reply_text
                        )),
                        AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
                            Err(format!("channel closed: {} {}", c.reply_code, c.reply_text))
                        }
                        m => Ok((channel, m)),
                    }
                }
                Frame::Heartbeat { .. } => continue,
                other => return Err(format!("unexpected frame: {other:?}")),
            }
        }
    }
}

/// The writing half of a connection, with its frame buffer.
pub struct Writer {
    stream: WriteHalf,
    pub out: FrameWriter,
}

impl Writer {
    /// Write out what is buffered.
    pub async fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let bytes = self.out.take();
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        // TLS may hold the tail of a write until flushed (TCP: a no-op).
        self.stream
            .flush()
            .await
            .map_err(|e| format!("write failed: {e}"))
    }

    /// Queue one method frame.
    pub fn method(&mut self, channel: u16, m: AMQPClass) {
        self.out.method(channel, &m);
    }
}

/// An open connection with channel 1 open.
pub struct Client {
    pub reader: Reader,
    pub writer: Writer,
}

impl Client {
    /// Connect, log in with PLAIN, tune, open the vhost and channel 1.
    pub async fn connect(t: &Target, heartbeat_s: u16) -> Result<Self> {
        let (r, w) = t.open().await?;
        let mut c = Client {
            reader: Reader {
                stream: r,
                buf: BytesMut::with_capacity(256 * 1024),
                frame_max: 131_072,
            },
            writer: Writer {
                stream: w,
                out: FrameWriter::new(131_072),
            },
        };
        c.writer.out.raw(b"AMQP\x00\x00\x09\x01");
        c.writer.flush().await?;
        match c.reader.method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Start(_))) => {}
            other => return Err(format!("expected connection.start, got {other:?}")),
        }
        let response = format!("\0{}\0{}", t.user, t.password);
        c.writer.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: ShortString::from("PLAIN"),
                response: LongString::from(response),
                locale: ShortString::from("en_US"),
            })),
        );
        c.writer.flush().await?;
        let tune = match c.reader.method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
            other => {
                return Err(format!(
                    "expected connection.tune (login refused?), got {other:?}"
                ))
            }
        };
        let frame_max = match tune.frame_max {
            0 => 131_072,
            n => n.min(131_072),
        };
        c.reader.frame_max = frame_max;
        c.writer.out.set_frame_max(frame_max);
        c.writer.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max.max(1),
                frame_max,
                heartbeat: heartbeat_s,
            })),
        );
        c.writer.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: ShortString::from(t.vhost.as_str()),
            })),
        );
        c.writer.flush().await?;
        match c.reader.method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {}
            other => return Err(format!("expected connection.open-ok, got {other:?}")),
        }
        c.call(AMQPClass::Channel(channel::AMQPMethod::Open(
            channel::Open {},
        )))
        .await?;
        Ok(c)
    }

    /// Send a method on channel 1 and wait for its reply.
    pub async fn call(&mut self, m: AMQPClass) -> Result<AMQPClass> {
        self.writer.method(1, m);
        self.writer.flush().await?;
        Ok(self.reader.method().await?.1)
    }

    /// basic.qos on channel 1.
    pub async fn qos(&mut self, prefetch: u16) -> Result<()> {
        self.call(AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: prefetch,
            global: false,
        })))
        .await
        .map(|_| ())
    }

    /// Close politely (best effort).
    pub async fn close(mut self) {
        self.writer.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: ShortString::from("bye"),
                class_id: 0,
                method_id: 0,
            })),
        );
        let _ = self.writer.flush().await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            loop {
                match self.reader.frame().await {
                    Ok(Frame::Method { method, .. })
                        if matches!(
                            *method,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))
                        ) =>
                    {
                        break
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
        })
        .await;
    }
}
