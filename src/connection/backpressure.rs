//! Why a connection stops reading its socket, and the byte budgets that
//! decide it. A connection that is not read sends nothing more, so each
//! of these bounds what one client can make Warren hold:
//! - a queue it published to is saturated, or the requester of a direct
//!   reply it sent is not reading its own socket ([`Throttle`]);
//! - a memory or disk alarm is raised and it publishes ([`AlarmBlock`]);
//! - a tx.commit waits for the store (see `tx_confirm`).
//!
//! Two budgets are enforced by refusal instead, since holding the
//! connection back could not shrink them (only reading more completes a
//! message or a transaction): the bytes announced by content headers still
//! arriving, checked at each header, and an uncommitted transaction's
//! bytes, checked at each publish.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::ShortString;
use tokio::sync::watch;

use super::content::ContentState;
use super::session::Session;
use super::unacked::UNACKED_MEMORY_BYTES;
use crate::alarms::AlarmState;
use crate::broker::consumer::ConnHandle;
use crate::broker::queue::Queue;
use crate::protocol::AmqpError;

/// Something this connection published to that cannot take more yet.
#[derive(Debug)]
pub enum Throttle {
    /// A queue over its flow watermark whose consumers are full.
    Queue(Arc<Queue>),
    /// The connection a direct reply went to, with a full mailbox.
    Requester(ConnHandle),
}

impl Throttle {
    /// Whether it still holds this connection back (re-checked while
    /// waiting).
    pub fn still_holds(&self) -> bool {
        match self {
            Throttle::Queue(q) => q.recheck_saturation(),
            Throttle::Requester(conn) => conn.is_backlogged(),
        }
    }

    fn is(&self, other: &Throttle) -> bool {
        match (self, other) {
            (Throttle::Queue(a), Throttle::Queue(b)) => Arc::ptr_eq(a, b),
            (Throttle::Requester(a), Throttle::Requester(b)) => a.id == b.id,
            _ => false,
        }
    }
}

/// Add `t` to the list unless it is there already.
pub fn add_throttle(list: &mut Vec<Throttle>, t: Throttle) {
    if !list.iter().any(|x| x.is(&t)) {
        list.push(t);
    }
}

/// Per-connection byte budgets.
#[derive(Clone, Copy, Debug)]
pub struct Budgets {
    /// Body bytes that the content headers of messages still arriving on
    /// this connection may announce in all. At least the largest message,
    /// so one message at a time always fits.
    pub content_bytes: u64,
    /// Bytes of publishes in uncommitted transactions; one more is refused.
    pub transaction_bytes: u64,
}

/// Alarm-driven blocking, RabbitMQ's way: a connection is blocked when it
/// publishes while an alarm is raised, told with connection.blocked if it
/// advertised the capability, and released with connection.unblocked.
#[derive(Debug)]
pub struct AlarmBlock {
    /// The broker's alarm state.
    pub alarms: watch::Receiver<AlarmState>,
    /// The client advertised `connection.blocked`.
    pub notify: bool,
    /// Input is not being read because of an alarm.
    pub blocked: bool,
}

impl Session {
    /// Page out the oldest unacked bodies once this connection's exceed
    /// their budget, down to half of it (hysteresis: not one page-out per
    /// delivery).
    pub(super) fn bound_unacked(&mut self) {
        if self.unacked_bytes.load(Ordering::Relaxed) <= UNACKED_MEMORY_BYTES {
            return;
        }
        let target = UNACKED_MEMORY_BYTES / 2;
        for ch in self.channels.values_mut() {
            ch.unacked.page_out(target);
            if self.unacked_bytes.load(Ordering::Relaxed) <= target {
                break;
            }
        }
    }

    /// Called for each basic.publish: block the connection if an alarm is
    /// raised. Nothing more is read or handled, that message's content
    /// included, until the alarms clear: as RabbitMQ, the publish that met
    /// the alarm is neither routed nor confirmed meanwhile.
    pub(super) fn block_if_alarmed(&mut self) {
        if self.alarm.blocked || !self.broker.alarms.raised() {
            return;
        }
        let state = *self.alarm.alarms.borrow();
        if !state.any() {
            return;
        }
        self.alarm.blocked = true;
        tracing::info!(
            reason = state.reason(),
            "publisher blocked by a resource alarm"
        );
        if self.alarm.notify {
            let blocked = connection::Blocked {
                reason: ShortString::from(state.reason()),
            };
            self.send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Blocked(blocked)),
            );
        }
    }

    /// The alarm state changed while blocked: unblock once all alarms are
    /// cleared (or the broker is going away).
    pub(super) fn alarm_changed(&mut self, still_watched: bool) {
        let state = *self.alarm.alarms.borrow_and_update();
        if still_watched && state.any() {
            return;
        }
        self.alarm.blocked = false;
        tracing::info!("publisher unblocked");
        if self.alarm.notify {
            let unblocked = connection::Unblocked {};
            self.send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Unblocked(unblocked)),
            );
        }
    }

    /// Refuse a content header announcing `body_size` when, with what the
    /// other incomplete messages of this connection announced, it would
    /// pass the content budget (AMQP lets channels interleave content, so
    /// one connection could otherwise hold many large partial messages).
    pub(super) fn check_content_budget(&self, body_size: u64) -> Result<(), AmqpError> {
        let announced: u64 = self
            .channels
            .values()
            .map(|ch| match &ch.content {
                ContentState::ExpectBody(p) => p.body_size,
                _ => 0,
            })
            .sum();
        refuse_over(
            announced + body_size,
            self.budgets.content_bytes,
            "messages still arriving on this connection",
        )
    }

    /// Whether input may be read now.
    pub(super) fn may_read(&self) -> bool {
        self.throttled.is_empty()
            && self.commit_wait.is_none()
            && !self.alarm.blocked
            && !self.done
            && !self.holds_too_much()
    }

    /// Refuse a transactional publish of `bytes` that would take this
    /// connection's uncommitted transactions over budget.
    pub(super) fn check_transaction_budget(&self, bytes: u64) -> Result<(), AmqpError> {
        let held: u64 = self
            .channels
            .values()
            .filter_map(|ch| ch.tx.as_ref())
            .map(|tx| tx.bytes)
            .sum();
        refuse_over(
            held + bytes,
            self.budgets.transaction_bytes,
            "uncommitted transactions on this connection",
        )
    }
}

/// The 406 for a budget that `total` would pass (`what` holds the bytes).
fn refuse_over(total: u64, limit: u64, what: &str) -> Result<(), AmqpError> {
    if total <= limit {
        return Ok(());
    }
    Err(
        AmqpError::precondition_failed(format!("{what} would hold more than {limit} bytes"))
            .at(60, 40),
    )
}
