//! The rates the API shows (`*_details.rate`): every few seconds, read each
//! queue's counters and the node's totals and keep the rate since the last
//! reading. One reading per object, so memory does not grow with traffic
//! or time (RabbitMQ keeps sample histories in a statistics database).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::broker::connections::Totals;
use crate::broker::message::now_ms;
use crate::broker::Broker;

/// Time between readings (RabbitMQ's default collection interval).
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Node-wide rates, per second, of the last interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeRates {
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

#[derive(Debug, Default)]
struct Last {
    at_ms: u64,
    totals: Totals,
    rates: NodeRates,
}

/// The node's last reading.
#[derive(Debug, Default)]
pub struct Sampler {
    last: Mutex<Last>,
}

impl Sampler {
    /// Node rates of the last interval.
    pub fn node_rates(&self) -> NodeRates {
        self.last.lock().rates
    }

    /// Read every queue and the node totals once.
    pub fn sample(&self, broker: &Broker) {
        let now = now_ms();
        for v in broker.vhosts() {
            for q in v.queues() {
                q.stats.sample(now, q.gauges().ready);
            }
        }
        let totals = broker.connections.totals();
        let mut last = self.last.lock();
        if last.at_ms != 0 && now > last.at_ms {
            let secs = (now - last.at_ms) as f64 / 1000.0;
            let (a, b) = (&last.totals, &totals);
            let r = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
            last.rates = NodeRates {
                published: r(a.published, b.published),
                confirmed: r(a.confirmed, b.confirmed),
                deliver_get: r(a.deliver_get(), b.deliver_get()),
                acked: r(a.acked, b.acked),
                redelivered: r(a.redelivered, b.redelivered),
                returned: r(a.unroutable_returned, b.unroutable_returned),
                dropped: r(a.unroutable_dropped, b.unroutable_dropped),
                recv_oct: r(a.recv_oct, b.recv_oct),
                send_oct: r(a.send_oct, b.send_oct),
            };
        }
        last.at_ms = now;
        last.totals = totals;
    }
}

/// Take a reading every [`INTERVAL`] until `shutdown`.
pub async fn run(broker: Arc<Broker>, sampler: Arc<Sampler>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // 10,000 queues take a few ms: off the async workers.
        let (b, s) = (broker.clone(), sampler.clone());
        let _ = tokio::task::spawn_blocking(move || s.sample(&b)).await;
    }
}
