//! The node's open connections as the management API and metrics see
//! them: who each is, a snapshot of its channels and counters, and a way
//! to close it.
//!
//! Connection tasks count in plain fields they own and copy them here once
//! a second (see `Session::publish_snapshot`), so the hot path pays
//! nothing for statistics. Counters of closed connections are folded into
//! `retired`, so node totals never go backwards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use amq_protocol::types::FieldTable;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::unacked_view::{UnackedQuery, UnackedReport};

/// Message and byte counters of a connection (or of several, summed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes read from the socket.
    pub recv_oct: u64,
    /// Bytes written to the socket.
    pub send_oct: u64,
    /// Messages published (complete, valid publishes).
    pub published: u64,
    /// Publishes that reached at least one queue (or were held).
    pub routed: u64,
    /// Unroutable publishes dropped (not mandatory).
    pub unroutable_dropped: u64,
    /// Unroutable mandatory publishes returned.
    pub unroutable_returned: u64,
    /// Publishes received on confirm-mode channels.
    pub published_confirm: u64,
    /// Publisher confirms (acks) sent.
    pub confirmed: u64,
    /// Deliveries to consumers that ack.
    pub delivered_ack: u64,
    /// Deliveries to no-ack consumers.
    pub delivered_no_ack: u64,
    /// basic.get answers needing an ack.
    pub get_ack: u64,
    /// basic.get answers with no-ack.
    pub get_no_ack: u64,
    /// basic.get-empty answers.
    pub get_empty: u64,
    /// Deliveries and gets with the redelivered flag.
    pub redelivered: u64,
    /// Deliveries acked by the client.
    pub acked: u64,
    /// Published body sizes: how many fell in each of
    /// [`MESSAGE_SIZE_BOUNDS`] (the last counts the larger ones).
    pub size_buckets: [u64; MESSAGE_SIZE_BOUNDS.len() + 1],
    /// Sum of published body sizes.
    pub size_sum: u64,
}

/// Upper bounds of the message-size histogram's buckets, bytes (RabbitMQ's).
pub const MESSAGE_SIZE_BOUNDS: [u64; 8] = [
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
];

impl Totals {
    /// Add `other` into these.
    pub fn add(&mut self, o: &Totals) {
        self.recv_oct += o.recv_oct;
        self.send_oct += o.send_oct;
        self.published += o.published;
        self.routed += o.routed;
        self.unroutable_dropped += o.unroutable_dropped;
        self.unroutable_returned += o.unroutable_returned;
        self.published_confirm += o.published_confirm;
        self.confirmed += o.confirmed;
        self.delivered_ack += o.delivered_ack;
        self.delivered_no_ack += o.delivered_no_ack;
        self.get_ack += o.get_ack;
        self.get_no_ack += o.get_no_ack;
        self.get_empty += o.get_empty;
        self.redelivered += o.redelivered;
        self.acked += o.acked;
        for (a, b) in self.size_buckets.iter_mut().zip(o.size_buckets) {
            *a += b;
        }
        self.size_sum += o.size_sum;
    }

    /// Count a published body of `bytes`.
    pub fn observe_size(&mut self, bytes: u64) {
        let i = MESSAGE_SIZE_BOUNDS.partition_point(|b| *b < bytes);
        self.size_buckets[i] += 1;
        self.size_sum += bytes;
    }

    /// Deliveries and gets, RabbitMQ's `deliver_get`.
    pub fn deliver_get(&self) -> u64 {
        self.delivered_ack + self.delivered_no_ack + self.get_ack + self.get_no_ack
    }
}

/// Per-second rates of [`Totals`] over an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TotalsRates {
    /// Messages published.
    pub published: f64,
    /// Publisher confirms sent.
    pub confirmed: f64,
    /// Deliveries and gets.
    pub deliver_get: f64,
    /// Acks received.
    pub acked: f64,
    /// Redeliveries.
    pub redelivered: f64,
    /// Unroutable publishes returned.
    pub returned: f64,
    /// Unroutable publishes dropped.
    pub dropped: f64,
    /// Bytes read from clients.
    pub recv_oct: f64,
    /// Bytes written to clients.
    pub send_oct: f64,
}

impl TotalsRates {
    /// The rates from `a` to `b`, `ms` apart.
    pub fn between(a: &Totals, b: &Totals, ms: u64) -> Self {
        if ms == 0 {
            return TotalsRates::default();
        }
        let secs = ms as f64 / 1000.0;
        let r = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
        TotalsRates {
            published: r(a.published, b.published),
            confirmed: r(a.confirmed, b.confirmed),
            deliver_get: r(a.deliver_get(), b.deliver_get()),
            acked: r(a.acked, b.acked),
            redelivered: r(a.redelivered, b.redelivered),
            returned: r(a.unroutable_returned, b.unroutable_returned),
            dropped: r(a.unroutable_dropped, b.unroutable_dropped),
            recv_oct: r(a.recv_oct, b.recv_oct),
            send_oct: r(a.send_oct, b.send_oct),
        }
    }
}

/// One consumer, as its connection last reported it.
#[derive(Clone, Debug)]
pub struct ConsumerSnapshot {
    /// Consumer tag.
    pub tag: Arc<str>,
    /// Queue it consumes from.
    pub queue: Arc<str>,
    /// Deliveries must be acked.
    pub ack_required: bool,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// Its prefetch limit (0: none).
    pub prefetch: u32,
    /// basic.consume arguments.
    pub arguments: FieldTable,
}

/// One channel, as its connection last reported it.
#[derive(Clone, Debug, Default)]
pub struct ChannelSnapshot {
    /// Channel number.
    pub number: u16,
    /// Per-consumer prefetch set by basic.qos.
    pub prefetch_count: u32,
    /// Channel-wide prefetch set by basic.qos global.
    pub global_prefetch_count: u32,
    /// In confirm mode.
    pub confirm: bool,
    /// In a transaction (tx.select).
    pub transactional: bool,
    /// Deliveries not yet settled.
    pub unacked: u64,
    /// Publishes not yet confirmed.
    pub unconfirmed: u64,
    /// Its consumers.
    pub consumers: Vec<ConsumerSnapshot>,
    /// Its counters since it opened.
    pub totals: Totals,
    /// Their rates over the last few seconds.
    pub rates: TotalsRates,
}

/// What a connection task copies here every second.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Its counters since it opened.
    pub totals: Totals,
    /// Their rates over the last few seconds.
    pub rates: TotalsRates,
    /// Its open channels.
    pub channels: Vec<ChannelSnapshot>,
    /// Publishing is blocked by a resource alarm.
    pub blocked: bool,
}

/// An open connection.
#[derive(Debug)]
pub struct ConnectionEntry {
    /// Node-unique id.
    pub id: u64,
    /// RabbitMQ's name: `peer -> local`.
    pub name: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
    /// Authenticated user.
    pub user: String,
    /// Its vhost.
    pub vhost: Arc<str>,
    /// What the client sent in connection.start-ok.
    pub client_properties: FieldTable,
    /// Unix ms at open.
    pub connected_at_ms: u64,
    /// Negotiated limits.
    pub channel_max: u16,
    /// Negotiated frame size.
    pub frame_max: u32,
    /// Negotiated heartbeat, seconds.
    pub heartbeat_s: u16,
    /// Channels open on it now (for users' `max-channels`).
    pub open_channels: std::sync::atomic::AtomicU32,
    /// The SASL mechanism it logged in with.
    pub auth_mechanism: String,
    /// Its TLS session (None: plain TCP).
    pub tls: Option<TlsInfo>,
    close: CancellationToken,
    close_reason: Mutex<Option<String>>,
    snapshot: Mutex<Snapshot>,
    /// Where its task takes questions about its unacked deliveries.
    unacked_queries: mpsc::Sender<UnackedQuery>,
}

impl ConnectionEntry {
    /// The last snapshot its task published.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().clone()
    }

    /// Ask the connection to close with 320 CONNECTION_FORCED and `reason`.
    pub fn close(&self, reason: &str) {
        *self.close_reason.lock() = Some(reason.to_string());
        self.close.cancel();
    }

    /// Ask its task for its unacked deliveries (of one queue, or all),
    /// listing at most `limit`; None if it does not answer (see
    /// `unacked_view`).
    pub async fn unacked(
        &self,
        queue: Option<Arc<super::queue::Queue>>,
        limit: usize,
    ) -> Option<UnackedReport> {
        super::unacked_view::ask(&self.unacked_queries, queue, limit).await
    }

    /// The reason given to [`ConnectionEntry::close`], once it was called.
    pub fn close_reason(&self) -> Option<String> {
        self.close_reason.lock().clone()
    }
}

/// A TLS connection's session, as the management API shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// RabbitMQ's name of the version: `tlsv1.3` or `tlsv1.2`.
    pub protocol: String,
    /// The cipher suite's IANA name, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// The client certificate's subject, issuer and validity, if it sent one.
    pub peer_subject: Option<String>,
    /// Its issuer.
    pub peer_issuer: Option<String>,
    /// "not before - not after".
    pub peer_validity: Option<String>,
}

/// What a connection registers with when it opens.
#[derive(Debug)]
pub struct NewConnection {
    /// Node-unique id.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
    /// Authenticated user.
    pub user: String,
    /// Its vhost.
    pub vhost: Arc<str>,
    /// connection.start-ok's client properties.
    pub client_properties: FieldTable,
    /// Negotiated channel_max.
    pub channel_max: u16,
    /// Negotiated frame_max.
    pub frame_max: u32,
    /// Negotiated heartbeat.
    pub heartbeat_s: u16,
    /// The SASL mechanism it logged in with.
    pub auth_mechanism: String,
    /// Its TLS session (None: plain TCP).
    pub tls: Option<TlsInfo>,
    /// Cancelled to close it.
    pub close: CancellationToken,
    /// Where its task takes questions about its unacked deliveries.
    pub unacked_queries: mpsc::Sender<UnackedQuery>,
}

/// The registry of open connections and node-wide churn counters.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<BTreeMap<u64, Arc<ConnectionEntry>>>,
    /// Connections admitted under a connection limit and not registered
    /// yet (between the check and open-ok), counted as open by the next
    /// check. Its lock is taken before `open`'s, and makes a check and its
    /// admission one step, so two clients cannot both take the last slot.
    admitted: Mutex<Vec<Admitted>>,
    retired: Mutex<Totals>,
    /// Connections opened since start.
    pub opened_total: AtomicU64,
    /// Connections closed since start.
    pub closed_total: AtomicU64,
    /// Channels opened since start.
    pub channels_opened_total: AtomicU64,
    /// Channels closed since start.
    pub channels_closed_total: AtomicU64,
}

/// A connection admitted under a limit, not yet registered.
#[derive(Debug)]
struct Admitted {
    id: u64,
    user: String,
    vhost: Arc<str>,
}

impl Connections {
    /// Admit connection `id` of `user` to `vhost` if `check`, given how
    /// many connections that vhost and that user have (open or admitted),
    /// allows it; the count and the admission are one step.
    pub fn admit<E>(
        &self,
        id: u64,
        user: &str,
        vhost: &Arc<str>,
        check: impl FnOnce(usize, usize) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut admitted = self.admitted.lock();
        let (mut in_vhost, mut of_user) = (0, 0);
        let mut count = |u: &str, v: &str| {
            in_vhost += usize::from(v == &**vhost);
            of_user += usize::from(u == user);
        };
        for a in admitted.iter() {
            count(&a.user, &a.vhost);
        }
        for c in self.open.lock().values() {
            count(&c.user, &c.vhost);
        }
        check(in_vhost, of_user)?;
        admitted.push(Admitted {
            id,
            user: user.to_string(),
            vhost: vhost.clone(),
        });
        Ok(())
    }

    /// Drop an admission whose connection will not open (no-op if none).
    pub fn forget_admission(&self, id: u64) {
        self.admitted.lock().retain(|a| a.id != id);
    }

    /// Add an opened connection.
    pub fn register(&self, c: NewConnection) -> Arc<ConnectionEntry> {
        let entry = Arc::new(ConnectionEntry {
            id: c.id,
            name: format!("{} -> {}", c.peer, c.local),
            peer: c.peer,
            local: c.local,
            user: c.user,
            vhost: c.vhost,
            client_properties: c.client_properties,
            connected_at_ms: crate::broker::message::now_ms(),
            channel_max: c.channel_max,
            frame_max: c.frame_max,
            heartbeat_s: c.heartbeat_s,
            open_channels: Default::default(),
            auth_mechanism: c.auth_mechanism,
            tls: c.tls,
            close: c.close,
            close_reason: Mutex::new(None),
            snapshot: Mutex::new(Snapshot::default()),
            unacked_queries: c.unacked_queries,
        });
        // Registered before its admission ends, so a concurrent check
        // counts it once, never zero times.
        let mut admitted = self.admitted.lock();
        self.open.lock().insert(c.id, entry.clone());
        admitted.retain(|a| a.id != c.id);
        drop(admitted);
        self.opened_total.fetch_add(1, Relaxed);
        entry
    }

    /// Replace a connection's snapshot.
    pub fn publish(&self, entry: &ConnectionEntry, snapshot: Snapshot) {
        *entry.snapshot.lock() = snapshot;
    }

    /// Remove a closed connection, keeping its final counters.
    pub fn deregister(&self, id: u64, last: &Totals) {
        if self.open.lock().remove(&id).is_some() {
            self.retired.lock().add(last);
            self.closed_total.fetch_add(1, Relaxed);
        }
    }

    /// How many open connections `f` picks.
    pub fn count_matching(&self, f: impl Fn(&ConnectionEntry) -> bool) -> usize {
        self.open.lock().values().filter(|c| f(c)).count()
    }

    /// The sum of `value` over the open connections `f` picks.
    pub fn sum_matching(
        &self,
        f: impl Fn(&ConnectionEntry) -> bool,
        value: impl Fn(&ConnectionEntry) -> u64,
    ) -> u64 {
        self.open
            .lock()
            .values()
            .filter(|c| f(c))
            .map(|c| value(c))
            .sum()
    }

    /// The open connections, oldest first.
    pub fn list(&self) -> Vec<Arc<ConnectionEntry>> {
        self.open.lock().values().cloned().collect()
    }

    /// A connection by its RabbitMQ name.
    pub fn by_name(&self, name: &str) -> Option<Arc<ConnectionEntry>> {
        self.open.lock().values().find(|c| c.name == name).cloned()
    }

    /// How many are open.
    pub fn count(&self) -> usize {
        self.open.lock().len()
    }

    /// Counters of every connection since start (closed ones included).
    pub fn totals(&self) -> Totals {
        let mut t = *self.retired.lock();
        for c in self.list() {
            t.add(&c.snapshot.lock().totals);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(id: u64, port: u16) -> NewConnection {
        NewConnection {
            id,
            peer: SocketAddr::from(([127, 0, 0, 1], port)),
            local: SocketAddr::from(([127, 0, 0, 1], 5672)),
            user: "guest".into(),
            vhost: Arc::from("/"),
            client_properties: FieldTable::default(),
            channel_max: 2047,
            frame_max: 131072,
            heartbeat_s: 60,
            auth_mechanism: "PLAIN".into(),
            tls: None,
            close: CancellationToken::new(),
            unacked_queries: mpsc::channel(1).0,
        }
    }

    #[test]
    fn admissions_count_until_registered_or_forgotten() {
        let c = Connections::default();
        let vhost: Arc<str> = Arc::from("/");
        let at_most_one = |in_vhost: usize, _| if in_vhost < 1 { Ok(()) } else { Err(()) };
        // Admitted, not registered yet: the next check counts it (before,
        // only registered connections counted, so two concurrent opens
        // could both pass a limit of one).
        assert_eq!(c.admit(1, "guest", &vhost, at_most_one), Ok(()));
        assert_eq!(c.admit(2, "guest", &vhost, at_most_one), Err(()));
        c.forget_admission(1);
        assert_eq!(c.admit(2, "guest", &vhost, at_most_one), Ok(()));
        // Registering ends the admission: counted once, not twice.
        c.register(new(2, 1000));
        let counted = |v: usize, u: usize| {
            if (v, u) == (1, 1) {
                Ok(())
            } else {
                Err((v, u))
            }
        };
        assert_eq!(c.admit(3, "guest", &vhost, counted), Ok(()));
        c.forget_admission(3);
        assert_eq!(
            c.admit(4, "other", &Arc::from("v"), |v, u| Err::<(), _>((v, u))),
            Err((0, 0))
        );
    }

    #[test]
    fn totals_keep_closed_connections() {
        let reg = Connections::default();
        let a = reg.register(new(1, 40000));
        reg.register(new(2, 40001));
        assert_eq!(a.name, "127.0.0.1:40000 -> 127.0.0.1:5672");
        let t = Totals {
            published: 5,
            ..Totals::default()
        };
        reg.publish(
            &a,
            Snapshot {
                totals: t,
                ..Snapshot::default()
            },
        );
        assert_eq!(reg.totals().published, 5);
        reg.deregister(
            1,
            &Totals {
                published: 7,
                ..Totals::default()
            },
        );
        reg.deregister(1, &t);
        assert_eq!(reg.totals().published, 7, "final counters, counted once");
        assert_eq!(reg.count(), 1);
        assert!(reg.by_name("127.0.0.1:40001 -> 127.0.0.1:5672").is_some());
        assert_eq!(reg.closed_total.load(Relaxed), 1);
    }

    #[test]
    fn sizes_fall_in_rabbitmq_buckets() {
        let mut t = Totals::default();
        for b in [0, 100, 101, 5_000_000, 200_000_000] {
            t.observe_size(b);
        }
        assert_eq!(t.size_buckets, [2, 1, 0, 0, 0, 1, 0, 0, 1]);
        assert_eq!(t.size_sum, 205_000_201);
    }

    #[test]
    fn close_records_the_reason_and_cancels() {
        let reg = Connections::default();
        let a = reg.register(new(1, 40000));
        a.close("Closed via management plugin");
        assert!(a.close.is_cancelled());
        assert_eq!(
            a.close_reason().as_deref(),
            Some("Closed via management plugin")
        );
    }
}
