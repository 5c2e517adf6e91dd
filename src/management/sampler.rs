//! The rates the API shows (`*_details.rate`): every few seconds, read each
//! queue's and exchange's counters and the node's totals and keep the rate since the last
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
pub use crate::broker::connections::TotalsRates as NodeRates;

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
                let g = q.gauges();
                q.stats.sample(now, g.ready, g.consumers);
            }
            for x in v.exchanges() {
                x.stats.sample(now);
            }
        }
        let totals = broker.connections.totals();
        let mut last = self.last.lock();
        if last.at_ms != 0 && now > last.at_ms {
            last.rates = NodeRates::between(&last.totals, &totals, now - last.at_ms);
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
