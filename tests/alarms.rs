//! Resource alarms over TCP: a publishing connection is blocked (and told
//! with connection.blocked when it advertised the capability) while an alarm
//! is raised, consumers keep draining, and publishing resumes by itself with
//! connection.unblocked once the alarm clears. The alarms are driven by hand
//! (the monitor samples once an hour here), except in the last test, where
//! the real monitor sees a watermark below the broker's own memory use.

mod common;

use std::time::Duration;

use common::raw::{self, Raw};
use common::{declare_queue, ready_count, uniq, Broker};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::BasicProperties;
use tokio_stream::StreamExt;
use warren::alarms::AlarmState;

const MEMORY: AlarmState = AlarmState {
    memory: true,
    disk: false,
};
const DISK: AlarmState = AlarmState {
    memory: false,
    disk: true,
};

async fn broker_with_manual_alarms() -> Broker {
    Broker::start_with(|c| c.alarm_check_interval_ms = 3_600_000).await
}

/// A raw publish of a 3-byte body to the default exchange.
fn publish(channel: u16, queue: &str) -> Vec<u8> {
    let mut bytes = raw::basic_publish(channel, "", queue);
    bytes.extend(raw::content_header(channel, 3));
    bytes.extend(raw::frame(3, channel, b"abc"));
    bytes
}

/// Wait (bounded) until `queue` holds `n` ready messages.
async fn wait_for_ready(ch: &lapin::Channel, queue: &str, n: u32) {
    for _ in 0..100 {
        if ready_count(ch, queue).await.unwrap() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{queue} never held {n} messages");
}

/// connection.blocked's reason text.
fn blocked_reason(args: &[u8]) -> String {
    let len = usize::from(args[0]);
    String::from_utf8_lossy(&args[1..1 + len]).into_owned()
}

#[tokio::test]
async fn publishers_are_blocked_and_told_until_the_alarm_clears() {
    let broker = broker_with_manual_alarms().await;
    let (_conn, ch) = broker.channel().await;
    let q = uniq("alarm");
    declare_queue(&ch, &q).await;
    let mut publisher = Raw::handshake_caps(&broker, &["connection.blocked"]).await;
    publisher.open_channel(1).await;

    broker.alarms().set(MEMORY);
    publisher.send(&publish(1, &q)).await;
    let args = publisher.expect_method(0, 10, 60).await;
    assert_eq!(blocked_reason(&args), "low on memory");
    // The publish that ran into the alarm waits, unrouted, with the rest.
    publisher.send(&publish(1, &q)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ready_count(&ch, &q).await.unwrap(), 0);

    broker.alarms().set(AlarmState::default());
    publisher.expect_method(0, 10, 61).await;
    wait_for_ready(&ch, &q, 2).await;
    broker.stop().await;
}

#[tokio::test]
async fn consumers_keep_draining_while_publishers_are_blocked() {
    let broker = broker_with_manual_alarms().await;
    let (_conn, ch) = broker.channel().await;
    let q = uniq("drain");
    declare_queue(&ch, &q).await;
    for i in 0..5u8 {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    wait_for_ready(&ch, &q, 5).await;
    broker.alarms().set(DISK);
    let mut publisher = Raw::handshake_caps(&broker, &["connection.blocked"]).await;
    publisher.open_channel(1).await;
    publisher.send(&publish(1, &q)).await;
    let args = publisher.expect_method(0, 10, 60).await;
    assert_eq!(blocked_reason(&args), "low on disk");

    let (_c2, consumer_ch) = broker.channel().await;
    let mut consumer = consumer_ch
        .basic_consume(
            q.as_str().into(),
            "c".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    for _ in 0..5 {
        common::within(consumer.next()).await.unwrap().unwrap();
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_client_without_the_capability_is_blocked_silently() {
    let broker = broker_with_manual_alarms().await;
    let (_conn, ch) = broker.channel().await;
    let q = uniq("silent");
    declare_queue(&ch, &q).await;
    let mut publisher = Raw::handshake(&broker).await;
    publisher.open_channel(1).await;
    broker.alarms().set(AlarmState {
        memory: true,
        disk: true,
    });
    publisher.send(&publish(1, &q)).await;
    publisher.send(&publish(1, &q)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ready_count(&ch, &q).await.unwrap(), 0);
    broker.alarms().set(AlarmState::default());
    wait_for_ready(&ch, &q, 2).await;
    // Nothing was sent to it but its own answers.
    publisher.send(&raw::channel_close(1)).await;
    publisher.expect_method(1, 20, 41).await;
    broker.stop().await;
}

#[tokio::test]
async fn the_monitor_raises_the_memory_alarm_over_the_watermark() {
    let broker = Broker::start_with(|c| {
        c.memory_high_watermark = warren::alarms::size::WatermarkSetting::Absolute("1MB".into());
        c.alarm_check_interval_ms = 50;
    })
    .await;
    assert!(broker.alarms().current().memory);
    let mut publisher = Raw::handshake_caps(&broker, &["connection.blocked"]).await;
    publisher.open_channel(1).await;
    publisher.send(&publish(1, "nowhere")).await;
    let args = publisher.expect_method(0, 10, 60).await;
    assert_eq!(blocked_reason(&args), "low on memory");
    broker.stop().await;
}

/// A blocked connection that the broker closes (here: shutdown) is read
/// again, so the client's Close-Ok ends it at once instead of after the
/// Close-Ok timeout (3 s).
#[tokio::test]
async fn a_blocked_connection_closed_by_the_broker_reads_close_ok() {
    let broker = broker_with_manual_alarms().await;
    let mut publisher = Raw::handshake_caps(&broker, &["connection.blocked"]).await;
    publisher.open_channel(1).await;
    broker.alarms().set(MEMORY);
    publisher.send(&publish(1, "nowhere")).await;
    publisher.expect_method(0, 10, 60).await;
    let stopping = tokio::spawn(broker.stop());
    let close = raw::parse_close(&publisher.expect_method(0, 10, 50).await);
    assert_eq!(close.code, 320, "{close:?}");
    let sent = std::time::Instant::now();
    publisher.send(&raw::method(0, 10, 51, &[])).await;
    publisher.expect_eof().await;
    assert!(
        sent.elapsed() < Duration::from_millis(1500),
        "Close-Ok read only after {:?}",
        sent.elapsed()
    );
    stopping.await.unwrap();
}
