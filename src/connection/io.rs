//! The socket side of a connection: a read buffer decoded into frames and a
//! `FrameWriter` flushed with one write per pass of the session loop.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::protocol::frame::decode_frame;
use crate::protocol::output::FrameWriter;
use crate::protocol::{DecodeError, Frame};
use crate::tls::Stream;

/// What reading a frame can end in besides a frame.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the socket or it failed.
    Closed,
    /// The bytes broke the protocol.
    Protocol(DecodeError),
}

/// Framed access to the socket.
#[derive(Debug)]
pub struct FrameIo {
    pub stream: Stream,
    pub rbuf: BytesMut,
    pub out: FrameWriter,
    pub frame_max: u32,
    /// Bytes read and written (the connection's statistics).
    pub recv_oct: u64,
    pub send_oct: u64,
}

impl FrameIo {
    pub fn new(stream: Stream, frame_max: u32) -> Self {
        FrameIo {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            out: FrameWriter::new(frame_max),
            frame_max,
            recv_oct: 0,
            send_oct: 0,
        }
    }

    /// Next complete frame from the buffer, if any.
    pub fn decoded(&mut self) -> Result<Option<Frame>, DecodeError> {
        decode_frame(&mut self.rbuf, self.frame_max)
    }

    /// Read until one frame is complete.
    pub async fn read_frame(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some(f) = self.decoded().map_err(ReadError::Protocol)? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    /// Read more bytes into the buffer.
    pub async fn fill(&mut self) -> Result<usize, ReadError> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(64 * 1024);
        }
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) | Err(_) => Err(ReadError::Closed),
            Ok(n) => {
                self.recv_oct += n as u64;
                Ok(n)
            }
        }
    }

    /// Write out the first `n` bytes encoded (the rest is held).
    pub async fn flush_prefix(&mut self, n: usize) -> std::io::Result<()> {
        let bytes = self.out.take_prefix(n);
        self.write(&bytes).await
    }

    /// Write out everything encoded so far.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let bytes = self.out.take();
        self.write(&bytes).await
    }

    /// End a TLS session with close_notify (as RabbitMQ does; clients on
    /// rustls report a truncation otherwise), within a second. TCP: nothing.
    pub async fn close_tls(&mut self) {
        if let Stream::Tls(_) = self.stream {
            let limit = std::time::Duration::from_secs(1);
            let _ = tokio::time::timeout(limit, self.stream.shutdown()).await;
        }
    }

    /// Write bytes out: TLS may keep the tail of a write in its own buffer
    /// until flushed, and a frame must not wait for the next write.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.send_oct += bytes.len() as u64;
        self.stream.write_all(bytes).await?;
        if let Stream::Tls(_) = self.stream {
            self.stream.flush().await?;
        }
        Ok(())
    }
}
