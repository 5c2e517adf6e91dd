//! The open connection: the read/deliver/write loop, frame routing to
//! channels, error handling (soft → Channel.Close, hard → Connection.Close),
//! heartbeats, and cleanup when the connection ends.

use ahash::AHashMap as HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{access, channel, connection, tx, AMQPClass};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::backpressure::{AlarmBlock, Budgets, Throttle};
use super::channel::{distinct_queues, Channel, ChannelState};
use super::content::ContentState;
use super::handshake::{close_method, Opened};
use super::held::HeldOutput;
use super::io::FrameIo;
use crate::broker::connections::{ConnectionEntry, Totals};
use crate::broker::consumer::{ConnEvent, ConnHandle, Delivery};
use crate::broker::unacked_view::UnackedQuery;
use crate::broker::{Broker, VHost};
use crate::protocol::frame::erlang_binary;
use crate::protocol::{AmqpError, DecodeError, Frame};
use crate::store::SyncStatus;

/// Most events taken from the mailbox in one pass before writing.
const EVENTS_PER_PASS: usize = 512;
/// Output encoded in one pass at which events stop being taken from the
/// mailbox until it is written: what waits for a slow socket stays in the
/// mailbox, whose size the queues respect (`ConnHandle::has_room`).
const OUTPUT_BYTES_PER_PASS: usize = 1 << 20;
/// How often a held-back publisher checks whether its queues drained.
const FLOW_POLL: Duration = Duration::from_millis(2);
/// Least time a single socket write may take before the peer is given up.
const FLUSH_TIMEOUT_MIN: Duration = Duration::from_secs(30);
/// How long the socket stays open for the client to close after Close-Ok.
const CLIENT_CLOSE_LINGER: Duration = Duration::from_secs(5);
/// Time spent on one pass's input after which the connection lets other
/// tasks run before reading more.
const LONG_PASS: Duration = Duration::from_millis(1);
/// How long to wait for Close-Ok after sending Connection.Close.
const CLOSE_OK_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Session {
    pub(super) id: u64,
    pub(super) io: FrameIo,
    pub(super) broker: Arc<Broker>,
    pub(super) vhost: Arc<VHost>,
    pub(super) user: String,
    pub(super) conn: ConnHandle,
    events: UnboundedReceiver<ConnEvent>,
    pub(super) channels: HashMap<u16, Channel>,
    pub(super) channel_max: u16,
    heartbeat_s: u16,
    pub(super) cancel_notify: bool,
    /// Set when we sent Connection.Close: only Close-Ok matters now.
    pub(super) closing_since: Option<Instant>,
    pub(super) done: bool,
    /// The client sent Connection.Close: like RabbitMQ, leave closing the
    /// socket to it.
    client_closed: bool,
    /// Last consumer registration id handed out.
    pub(super) next_consumer_id: u64,
    /// Saturated queues and full requesters this connection published to:
    /// until they drain, input is not read (flow control).
    pub(super) throttled: Vec<Throttle>,
    /// Blocking by memory and disk alarms.
    pub(super) alarm: AlarmBlock,
    /// Byte budgets for what this connection may make Warren hold.
    pub(super) budgets: Budgets,
    /// Store sync rounds completed (confirms wait for them).
    sync: watch::Receiver<SyncStatus>,
    /// Highest sync round a confirm on this connection waits for.
    pub(super) sync_wanted: u64,
    /// A tx.commit whose Commit-Ok waits for this sync round: input is not
    /// read meanwhile, so nothing overtakes it.
    pub(super) commit_wait: Option<(u16, u64)>,
    /// Replies waiting for their durable change to be synced.
    pub(super) held: HeldOutput,
    /// Bytes the channels' unacked deliveries hold in memory (see
    /// `unacked.rs`).
    pub(super) unacked_bytes: Arc<AtomicU64>,
    /// This connection in the node's registry (see `stats.rs`).
    pub(super) entry: Arc<ConnectionEntry>,
    /// Counters, copied to `entry` once a second.
    pub(super) totals: Totals,
    /// Where the rates of the counters are taken from.
    pub(super) rate_window: super::stats::RateWindow,
    /// The last exchange a publish was allowed to (see `permissions.rs`).
    pub(super) publish_grant: super::permissions::PublishGrant,
    /// The time read once per pass (deliveries are stamped with it).
    pub(super) now: Instant,
    /// The management API's questions about unacked deliveries.
    unacked_queries: mpsc::Receiver<UnackedQuery>,
}

impl Session {
    pub fn new(
        id: u64,
        io: FrameIo,
        broker: Arc<Broker>,
        opened: Opened,
        entry: Arc<ConnectionEntry>,
        unacked_queries: mpsc::Receiver<UnackedQuery>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let sync = broker.store.syncer.subscribe();
        let alarm = AlarmBlock {
            alarms: broker.alarms.subscribe(),
            notify: opened.blocked_notify,
            blocked: false,
        };
        let budgets = Budgets {
            content_bytes: broker.config.max_message_size,
            transaction_bytes: broker.config.max_transaction_bytes,
        };
        Session {
            id,
            io,
            vhost: opened.vhost,
            user: opened.user,
            conn: ConnHandle::new(id, tx),
            events: rx,
            broker,
            channels: HashMap::new(),
            channel_max: opened.channel_max,
            heartbeat_s: opened.heartbeat_s,
            cancel_notify: opened.cancel_notify,
            closing_since: None,
            done: false,
            client_closed: false,
            next_consumer_id: 0,
            throttled: Vec::new(),
            alarm,
            budgets,
            sync,
            sync_wanted: 0,
            commit_wait: None,
            held: HeldOutput::default(),
            unacked_bytes: Arc::new(AtomicU64::new(0)),
            entry,
            totals: Totals::default(),
            rate_window: Default::default(),
            publish_grant: Default::default(),
            now: Instant::now(),
            unacked_queries,
        }
    }

    /// Serve until the connection ends; returns its final counters.
    pub async fn run(mut self, shutdown: CancellationToken) -> Totals {
        self.main_loop(shutdown).await;
        // Nothing answers from here on: askers learn it at once.
        self.unacked_queries.close();
        self.cleanup();
        let totals = self.final_totals();
        self.io.close_tls().await;
        if self.client_closed {
            // Discard anything that still arrives until the client closes
            // the socket, for a bounded time.
            let linger = async {
                while self.io.fill().await.is_ok() {
                    self.io.rbuf.clear();
                }
            };
            let _ = tokio::time::timeout(CLIENT_CLOSE_LINGER, linger).await;
        }
        totals
    }

    async fn main_loop(&mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_read = Instant::now();
        let mut last_write = Instant::now();
        let mut shutting_down = false;
        let mut done_at: Option<Instant> = None;
        let mut long_pass = false;
        // Once done, held replies (a Close-Ok may be behind them) still go
        // out when their round is synced, for a bounded time.
        while !self.done || (self.holds_output() && self.sync_wanted > 0) {
            if self.done && done_at.get_or_insert_with(Instant::now).elapsed() > CLOSE_OK_TIMEOUT {
                return;
            }
            // Not `biased`: a client that publishes without pause must not
            // starve the deliveries to its own consumers.
            tokio::select! {
                _ = shutdown.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    let text = match self.entry.close_reason() {
                        Some(reason) => reason,
                        None => "broker forced connection closure with reason 'shutdown'".into(),
                    };
                    self.connection_error(AmqpError::new(
                        crate::protocol::ErrorKind::ConnectionForced,
                        text,
                    ));
                }
                _ = tokio::time::sleep(FLOW_POLL), if !self.throttled.is_empty() => {
                    self.throttled.retain(Throttle::still_holds);
                    // Time spent held back is not the client's silence.
                    last_read = Instant::now();
                }
                r = self.alarm.alarms.changed(), if self.alarm.blocked => {
                    self.alarm_changed(r.is_ok());
                    last_read = Instant::now();
                    // Frames read before the block are handled first.
                    self.process_input();
                }
                r = self.io.fill(), if self.may_read() => match r {
                    Err(_) => return,
                    Ok(_) => {
                        last_read = Instant::now();
                        self.process_input();
                        long_pass = last_read.elapsed() >= LONG_PASS;
                    }
                },
                // Once done, nothing more is encoded behind the Close-Ok.
                Some(ev) = self.events.recv(), if !self.done => {
                    self.now = Instant::now();
                    self.handle_event(ev);
                    for _ in 0..EVENTS_PER_PASS {
                        if self.io.out.len() >= OUTPUT_BYTES_PER_PASS {
                            break;
                        }
                        match self.events.try_recv() {
                            Ok(ev) => self.handle_event(ev),
                            Err(_) => break,
                        }
                    }
                }
                Some(q) = self.unacked_queries.recv() => {
                    self.now = Instant::now();
                    self.answer_unacked(q);
                }
                r = self.sync.changed(), if self.waits_for_sync() => {
                    if r.is_err() {
                        // The store closed (shutdown): nothing more will sync.
                        self.sync_wanted = 0;
                    }
                }
                _ = tick.tick() => {
                    self.expire_deliveries();
                    self.publish_snapshot();
                    if self.alarm.blocked {
                        // As RabbitMQ: a blocked client is not expected to
                        // be heard from.
                        last_read = Instant::now();
                    }
                    if let Some(since) = self.closing_since {
                        if since.elapsed() > CLOSE_OK_TIMEOUT {
                            return;
                        }
                    }
                    let hb = Duration::from_secs(u64::from(self.heartbeat_s));
                    if self.heartbeat_s > 0 {
                        if last_read.elapsed() > hb * 2 {
                            tracing::info!(heartbeat_s = self.heartbeat_s, "missed heartbeats from client, closing");
                            return;
                        }
                        let due = last_write.elapsed() >= (hb / 2).max(Duration::from_secs(1));
                        if due && !self.done {
                            self.io.out.heartbeat();
                        }
                    }
                }
            }
            self.end_of_pass();
            let status = *self.sync.borrow();
            let sendable = self.releasable_output(status);
            if sendable > 0 {
                // A peer that stops reading must not hold this task (and
                // the messages it has in flight) forever.
                let limit =
                    Duration::from_secs(u64::from(self.heartbeat_s) * 2).max(FLUSH_TIMEOUT_MIN);
                match tokio::time::timeout(limit, self.io.flush_prefix(sendable)).await {
                    Ok(Ok(())) => {
                        self.held.advance(sendable);
                        last_write = Instant::now();
                    }
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::info!(
                            timeout_s = limit.as_secs(),
                            "peer stopped reading, closing"
                        );
                        return;
                    }
                }
            }
            if std::mem::take(&mut long_pass) {
                // A client whose socket always has more for us would keep
                // this worker thread until tokio's budget (counted in
                // reads, not time) runs out: seconds, when each method is
                // costly. Let the other connections run.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Sync rounds done so far.
    pub(super) fn sync_status(&self) -> SyncStatus {
        *self.sync.borrow()
    }

    /// Whether some confirm waits for a sync round not yet done.
    fn waits_for_sync(&self) -> bool {
        let status = *self.sync.borrow();
        self.sync_wanted > status.synced && !status.failed
    }

    /// Work done once per loop pass, before writing.
    fn end_of_pass(&mut self) {
        use amq_protocol::protocol::basic::{AMQPMethod, Ack, Nack};
        if self.done {
            // Only held replies (and the Close-Ok behind them) go out now.
            return;
        }
        let status = *self.sync.borrow_and_update();
        if let Some((id, ticket)) = self.commit_wait {
            if status.synced >= ticket {
                self.commit_wait = None;
                self.send(id, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
                // Frames that arrived behind the commit.
                self.process_input();
            } else if status.failed {
                self.commit_wait = None;
                self.connection_error(super::tx_confirm::store_failed(self.broker.store.health()));
            }
        }
        for ch in self.channels.values_mut() {
            let Some(confirms) = ch.confirms.as_mut() else {
                continue;
            };
            ch.totals.confirmed += std::mem::take(&mut confirms.acks_sent);
            let out = &mut self.io.out;
            confirms.release(status, |delivery_tag, multiple, ack| {
                let m = match ack {
                    true => AMQPMethod::Ack(Ack {
                        delivery_tag,
                        multiple,
                    }),
                    false => AMQPMethod::Nack(Nack {
                        delivery_tag,
                        multiple,
                        requeue: false,
                    }),
                };
                out.method(ch.id, &AMQPClass::Basic(m));
            });
        }
        if self.conn.take_starved() {
            let consumers = self.channels.values().flat_map(|ch| ch.consumers.values());
            for queue in distinct_queues(consumers.map(|c| &c.queue)) {
                queue.dispatch();
            }
        }
    }

    /// Decode and handle every complete frame in the read buffer.
    fn process_input(&mut self) {
        self.now = Instant::now();
        while !self.done && self.commit_wait.is_none() && !self.alarm.blocked {
            let frame = match self.io.decoded() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(DecodeError::Close(e)) => {
                    // The stream cannot be trusted after a framing error:
                    // report it and close without waiting for Close-Ok.
                    tracing::info!(error = %e, "framing error");
                    self.io.out.method(0, &close_method(&e));
                    self.done = true;
                    return;
                }
                Err(DecodeError::Drop(why)) => {
                    tracing::info!(reason = %why, "dropping connection");
                    self.done = true;
                    return;
                }
            };
            if let Err(e) = self.handle_frame(frame) {
                self.connection_error(e);
            }
        }
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<(), AmqpError> {
        if self.closing_since.is_some() {
            if let Frame::Method {
                channel: 0, method, ..
            } = &frame
            {
                match **method {
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => self.done = true,
                    AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                        self.send(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        );
                        self.done = true;
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        match frame {
            Frame::Heartbeat { channel: 0 } => Ok(()),
            Frame::Heartbeat { .. } => {
                Err(AmqpError::unexpected_frame("type 8, all octets = <<>>"))
            }
            Frame::Method {
                channel: 0,
                method,
                class_id,
                method_id,
                ..
            } => self
                .connection_method(*method)
                .map_err(|e| e.at(class_id, method_id)),
            Frame::Header {
                channel: 0,
                class_id,
                body_size,
                properties,
            } => {
                let mut payload = class_id.to_be_bytes().to_vec();
                payload.extend_from_slice(&[0, 0]);
                payload.extend_from_slice(&body_size.to_be_bytes());
                payload.extend_from_slice(&properties);
                Err(AmqpError::unexpected_frame(format!(
                    "type 2, all octets = {}",
                    erlang_binary(&payload)
                )))
            }
            Frame::Body {
                channel: 0,
                payload,
            } => Err(AmqpError::unexpected_frame(format!(
                "type 3, all octets = {}",
                erlang_binary(&payload)
            ))),
            frame => self.channel_frame(frame),
        }
    }

    fn connection_method(&mut self, method: AMQPClass) -> Result<(), AmqpError> {
        match method {
            AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                tracing::debug!(code = c.reply_code, text = %c.reply_text, "client closed connection");
                self.send(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.done = true;
                self.client_closed = true;
                Ok(())
            }
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                self.send(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                );
                Ok(())
            }
            _ => Err(AmqpError::channel_error(
                "unexpected method in connection state running",
            )),
        }
    }

    fn channel_frame(&mut self, frame: Frame) -> Result<(), AmqpError> {
        let id = frame.channel();
        let Some(ch) = self.channels.get_mut(&id) else {
            return match frame {
                Frame::Method {
                    method,
                    class_id,
                    method_id,
                    ..
                } => {
                    match *method {
                        AMQPClass::Channel(channel::AMQPMethod::Open(_)) => self.open_channel(id),
                        _ => Err(AmqpError::channel_error("expected 'channel.open'")
                            .at(class_id, method_id)),
                    }
                }
                _ => Err(AmqpError::channel_error("expected 'channel.open'")),
            };
        };
        if ch.state == ChannelState::Closing {
            // Our Channel.Close awaits its Close-Ok: everything else is
            // discarded (the spec's rule), and a Close that crossed ours
            // is answered but the channel still waits for the Close-Ok.
            if let Frame::Method { method, .. } = frame {
                match *method {
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                        self.channels.remove(&id);
                    }
                    AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                        self.send(
                            id,
                            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        );
                    }
                    AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                        return Err(
                            AmqpError::channel_error("second 'channel.open' seen").at(20, 10)
                        );
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        let result = match frame {
            Frame::Method {
                method,
                class_id,
                method_id,
                raw_args,
                ..
            } => {
                match &ch.content {
                    ContentState::Idle => {}
                    ContentState::ExpectHeader(_) => {
                        return Err(AmqpError::unexpected_frame(
                            "expected content header for class 60, got non content header frame instead",
                        )
                        .at(60, 40))
                    }
                    ContentState::ExpectBody(_) => {
                        return Err(AmqpError::unexpected_frame(
                            "expected content body, got non content body frame instead",
                        )
                        .at(60, 40))
                    }
                }
                self.channel_method(id, *method, &raw_args)
                    .map_err(|e| e.at(class_id, method_id))
            }
            Frame::Header {
                class_id,
                body_size,
                properties,
                ..
            } => self.content_header(id, class_id, body_size, properties),
            Frame::Body { payload, .. } => self.content_body(id, payload),
            Frame::Heartbeat { .. } => Ok(()),
        };
        match result {
            Err(e) if !e.kind.is_hard() => {
                self.channel_error(id, e);
                Ok(())
            }
            other => other,
        }
    }

    fn channel_method(&mut self, id: u16, method: AMQPClass, raw: &[u8]) -> Result<(), AmqpError> {
        match method {
            AMQPClass::Channel(m) => self.channel_class(id, m),
            AMQPClass::Exchange(m) => self.exchange_method(id, m),
            AMQPClass::Queue(m) => self.queue_method(id, m),
            AMQPClass::Basic(m) => self.basic_method(id, m, raw),
            AMQPClass::Tx(m) => self.tx_method(id, m),
            AMQPClass::Confirm(m) => self.confirm_method(id, m),
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.send(
                    id,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
                Ok(())
            }
            _ => Err(AmqpError::command_invalid("unexpected method on a channel")),
        }
    }

    pub(super) fn send(&mut self, channel: u16, method: AMQPClass) {
        self.io.out.method(channel, &method);
    }

    fn cleanup(&mut self) {
        self.release_all_channels();
        // Deliveries still in the mailbox were never seen by the client.
        self.events.close();
        while let Ok(ev) = self.events.try_recv() {
            if let ConnEvent::Deliver(d) = ev {
                self.conn.delivery_taken(d.size());
                let Delivery {
                    queue,
                    message,
                    credit,
                    ..
                } = d;
                if let Some(c) = credit {
                    c.release();
                }
                if let Some(queue) = queue {
                    queue.return_undelivered(message);
                }
            }
        }
        self.vhost.delete_exclusive_queues(self.id);
    }
}
