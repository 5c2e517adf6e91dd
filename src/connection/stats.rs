//! What a connection tells the node's registry about itself: its counters
//! (kept per channel in plain fields, bumped where each event happens; the
//! connection's are its channels' plus those of channels already closed),
//! their rates over the last few seconds, and a snapshot of its channels
//! and consumers, copied once a second so the management API reads them
//! without asking the connection task. Messages in and out of each
//! exchange are counted per channel too and added to the exchanges at
//! each snapshot.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::channel::Channel;
use super::session::Session;
use crate::broker::connections::{
    ChannelSnapshot, ConsumerSnapshot, Snapshot, Totals, TotalsRates,
};
use crate::broker::message::Message;
use crate::broker::VHost;

/// The interval rates are taken over (the management sampler's).
const RATE_INTERVAL: Duration = Duration::from_secs(5);

/// Messages published into and routed out of each exchange, as counted
/// by one channel since they were last handed to the exchanges. The
/// exchange last published to is kept apart: a channel mostly publishes to
/// one, and a name compare is cheaper than a hash.
#[derive(Debug, Default)]
pub struct ExchangeCounts {
    last: Option<(Arc<str>, (u64, u64))>,
    others: HashMap<Arc<str>, (u64, u64)>,
}

impl ExchangeCounts {
    /// Count `publish_in` and `publish_out` messages of `exchange`.
    pub fn add(&mut self, exchange: &Arc<str>, publish_in: u64, publish_out: u64) {
        if let Some((name, counts)) = &mut self.last {
            if **name == **exchange {
                counts.0 += publish_in;
                counts.1 += publish_out;
                return;
            }
        }
        self.spill();
        self.last = Some((exchange.clone(), (publish_in, publish_out)));
    }

    fn spill(&mut self) {
        if let Some((name, (i, o))) = self.last.take() {
            let counts = self.others.entry(name).or_default();
            counts.0 += i;
            counts.1 += o;
        }
    }

    /// Every exchange's counts, emptying these.
    pub fn take(&mut self) -> impl Iterator<Item = (Arc<str>, (u64, u64))> + '_ {
        self.spill();
        self.others.drain()
    }
}

/// The counters at the start of the current rate interval, and the rates
/// of the last one.
#[derive(Debug)]
pub(super) struct RateWindow {
    since: Instant,
    connection: Totals,
    channels: HashMap<u16, Totals>,
    rates: TotalsRates,
    channel_rates: HashMap<u16, TotalsRates>,
}

impl Default for RateWindow {
    fn default() -> Self {
        RateWindow {
            since: Instant::now(),
            connection: Totals::default(),
            channels: HashMap::new(),
            rates: TotalsRates::default(),
            channel_rates: HashMap::new(),
        }
    }
}

impl RateWindow {
    /// Drop what is kept for a closed channel.
    fn forget(&mut self, id: u16) {
        self.channels.remove(&id);
        self.channel_rates.remove(&id);
    }

    /// Move to a new interval if the current one is over.
    fn roll<'a>(
        &mut self,
        connection: &Totals,
        channels: impl Iterator<Item = &'a Channel> + Clone,
    ) {
        let ms = self.since.elapsed().as_millis() as u64;
        if ms < RATE_INTERVAL.as_millis() as u64 {
            return;
        }
        self.rates = TotalsRates::between(&self.connection, connection, ms);
        let zero = Totals::default();
        self.channel_rates = channels
            .clone()
            .map(|ch| {
                let base = self.channels.get(&ch.id).unwrap_or(&zero);
                (ch.id, TotalsRates::between(base, &ch.totals, ms))
            })
            .collect();
        self.since = Instant::now();
        self.connection = *connection;
        self.channels = channels.map(|ch| (ch.id, ch.totals)).collect();
    }
}

impl Session {
    /// The counters of channel `id` (the connection's own when the channel
    /// is gone).
    pub(super) fn counts(&mut self, id: u16) -> &mut Totals {
        match self.channels.get_mut(&id) {
            Some(ch) => &mut ch.totals,
            None => &mut self.totals,
        }
    }

    /// Count a complete publish on channel `id`.
    pub(super) fn count_published(&mut self, id: u16, message: &Message) {
        let bytes = message.body.len() as u64;
        match self.channels.get_mut(&id) {
            Some(ch) => {
                ch.totals.published += 1;
                ch.totals.observe_size(bytes);
                ch.exchange_counts.add(&message.exchange, 1, 0);
            }
            None => {
                self.totals.published += 1;
                self.totals.observe_size(bytes);
            }
        }
    }

    /// Count a publish that reached at least one queue.
    pub(super) fn count_routed(&mut self, id: u16, exchange: &Arc<str>) {
        match self.channels.get_mut(&id) {
            Some(ch) => {
                ch.totals.routed += 1;
                ch.exchange_counts.add(exchange, 0, 1);
            }
            None => self.totals.routed += 1,
        }
    }

    /// Fold a closing channel's counters into the connection's.
    pub(super) fn retire_counts(&mut self, ch: &mut Channel) {
        if let Some(c) = ch.confirms.as_mut() {
            ch.totals.confirmed += std::mem::take(&mut c.acks_sent);
        }
        self.totals.add(&std::mem::take(&mut ch.totals));
        hand_to_exchanges(&self.vhost, &mut ch.exchange_counts);
        // The number may be reused by a new channel: its rates start anew.
        self.rate_window.forget(ch.id);
    }

    /// Copy counters, rates and channels to the registry.
    pub(super) fn publish_snapshot(&mut self) {
        for ch in self.channels.values_mut() {
            hand_to_exchanges(&self.vhost, &mut ch.exchange_counts);
        }
        let totals = self.current_totals();
        self.rate_window.roll(&totals, self.channels.values());
        let window = &self.rate_window;
        let channels = self
            .channels
            .values()
            .map(|ch| channel_snapshot(ch, window.channel_rates.get(&ch.id)))
            .collect();
        let snapshot = Snapshot {
            totals,
            rates: window.rates,
            channels,
            blocked: self.alarm.blocked,
        };
        self.broker.connections.publish(&self.entry, snapshot);
    }

    /// The counters as they are now.
    fn current_totals(&self) -> Totals {
        let mut totals = Totals {
            recv_oct: self.io.recv_oct,
            send_oct: self.io.send_oct,
            ..self.totals
        };
        for ch in self.channels.values() {
            totals.add(&ch.totals);
        }
        totals
    }

    /// The counters at the end (the registry keeps them for node totals).
    pub(super) fn final_totals(&mut self) -> Totals {
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            if let Some(mut ch) = self.channels.remove(&id) {
                self.retire_counts(&mut ch);
                self.channels.insert(id, ch);
            }
        }
        self.current_totals()
    }
}

/// Add a channel's exchange counts to the exchanges (one atomic add per
/// exchange, not per message).
fn hand_to_exchanges(vhost: &VHost, counts: &mut ExchangeCounts) {
    for (name, (i, o)) in counts.take() {
        if let Some(x) = vhost.find_exchange(&name) {
            x.stats.add(i, o);
        }
    }
}

fn channel_snapshot(ch: &Channel, rates: Option<&TotalsRates>) -> ChannelSnapshot {
    ChannelSnapshot {
        number: ch.id,
        prefetch_count: ch.consumer_prefetch,
        global_prefetch_count: ch.credit.prefetch.load(Ordering::Relaxed),
        confirm: ch.confirms.is_some(),
        transactional: ch.tx.is_some(),
        unacked: ch.unacked.len() as u64,
        unconfirmed: ch.confirms.as_ref().map_or(0, |c| c.pending()),
        consumers: ch
            .consumers
            .iter()
            .map(|(tag, c)| ConsumerSnapshot {
                tag: tag.clone(),
                queue: c.queue.name.clone(),
                ack_required: !c.no_ack,
                exclusive: c.exclusive,
                prefetch: c.prefetch,
                arguments: c.arguments.clone(),
            })
            .collect(),
        totals: ch.totals,
        rates: rates.copied().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_channel_number_starts_its_rates_anew() {
        let mut w = RateWindow {
            since: Instant::now() - RATE_INTERVAL,
            ..RateWindow::default()
        };
        let mut old = Channel::new(1, Arc::default());
        old.totals.published = 1_000;
        w.roll(&Totals::default(), [&old].into_iter());
        w.forget(1);
        let mut new = Channel::new(1, Arc::default());
        new.totals.published = 50;
        w.since = Instant::now() - RATE_INTERVAL;
        w.roll(&Totals::default(), [&new].into_iter());
        let published = w.channel_rates[&1].published;
        assert!((8.0..=10.0).contains(&published), "{published}");
    }

    #[test]
    fn exchange_counts_add_up_across_exchanges() {
        let mut c = ExchangeCounts::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        c.add(&a, 1, 0);
        c.add(&Arc::from("a"), 0, 1);
        c.add(&b, 1, 1);
        c.add(&a, 1, 0);
        let mut all: Vec<_> = c.take().collect();
        all.sort();
        assert_eq!(all, [(a, (2, 1)), (b, (1, 1))]);
        assert_eq!(c.take().count(), 0);
    }
}
