//! Flow control: a queue whose consumers' connections cannot take more
//! holds back its publishers instead of growing without bound, and lets
//! them go again once the consumer catches up.

mod common;

use std::time::Duration;

use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use amq_protocol::types::{FieldTable, LongString, ShortString};
use bytes::BytesMut;
use common::{declare_queue, uniq, within, Broker};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::BasicProperties;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren::protocol::frame::decode_frame;
use warren::protocol::output::FrameWriter;
use warren::protocol::Frame;

/// A consumer on a raw socket: it subscribes in no-ack mode and then
/// reads nothing until told to, so the broker's writes to it back up.
struct StalledConsumer {
    stream: TcpStream,
    rbuf: BytesMut,
}

impl StalledConsumer {
    async fn subscribe(port: u16, queue: &str) -> Self {
        let mut me = StalledConsumer {
            stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            rbuf: BytesMut::new(),
        };
        me.stream.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
        me.expect(10, 10).await; // start
        me.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: ShortString::from("PLAIN"),
                response: LongString::from("\0guest\0guest"),
                locale: ShortString::from("en_US"),
            })),
        )
        .await;
        me.expect(10, 30).await; // tune
        me.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 16,
                frame_max: 131_072,
                heartbeat: 0,
            })),
        )
        .await;
        me.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: ShortString::from("/"),
            })),
        )
        .await;
        me.expect(10, 41).await;
        me.send(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await;
        me.expect(20, 11).await;
        me.send(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: ShortString::from(queue),
                consumer_tag: ShortString::from("stalled"),
                no_local: false,
                no_ack: true,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await;
        me.expect(60, 21).await;
        me
    }

    async fn send(&mut self, ch: u16, m: AMQPClass) {
        let mut w = FrameWriter::new(131_072);
        w.method(ch, &m);
        self.stream.write_all(&w.take()).await.unwrap();
    }

    async fn frame(&mut self) -> Frame {
        loop {
            if let Some(f) = decode_frame(&mut self.rbuf, 131_072).unwrap() {
                return f;
            }
            assert!(
                self.stream.read_buf(&mut self.rbuf).await.unwrap() > 0,
                "eof"
            );
        }
    }

    async fn expect(&mut self, class: u16, method: u16) {
        match self.frame().await {
            Frame::Method {
                class_id,
                method_id,
                ..
            } if (class_id, method_id) == (class, method) => {}
            other => panic!("expected {class}.{method}, got {other:?}"),
        }
    }

    /// Read and count deliveries until `n` arrived.
    async fn drain(&mut self, n: u64) {
        let mut got = 0;
        while got < n {
            if let Frame::Method {
                class_id: 60,
                method_id: 60,
                ..
            } = self.frame().await
            {
                got += 1;
            }
        }
    }
}

async fn ready_count(broker: &Broker, queue_name: &str) -> u32 {
    let (_c, ch) = broker.channel().await;
    ch.queue_declare(
        queue_name.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_holds_publishers_back_and_releases_them() {
    within(async {
        let broker = Broker::start().await;
        let q = uniq("flow");
        let (_pc, pch) = broker.channel().await;
        declare_queue(&pch, &q).await;
        let mut consumer = StalledConsumer::subscribe(broker.port, &q).await;

        // Publish far more than the consumer's socket and mailbox can hold.
        const TOTAL: u64 = 40_000;
        let body = vec![b'x'; 4096];
        let publisher = {
            let (pconn, pch) = broker.channel().await;
            let q = q.clone();
            tokio::spawn(async move {
                for _ in 0..TOTAL {
                    pch.basic_publish(
                        "".into(),
                        q.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default(),
                    )
                    .await
                    .unwrap();
                }
                drop(pconn);
            })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !publisher.is_finished(),
            "the publisher should be held back"
        );
        let ready = ready_count(&broker, &q).await;
        assert!(
            ready <= (warren::broker::queue::FLOW_HIGH_WATERMARK as u32) * 2,
            "ready messages grew to {ready} though the consumer is stalled"
        );

        // Once the consumer reads, everything flows.
        let drain = tokio::spawn(async move {
            consumer.drain(TOTAL).await;
            consumer
        });
        publisher.await.unwrap();
        let _consumer = drain.await.unwrap();
        assert_eq!(ready_count(&broker, &q).await, 0);
    })
    .await
}
