//! Transactions (tx.select/commit/rollback: publishes and settlements held
//! until commit, as RabbitMQ does) and publisher confirms (confirm.select;
//! a confirm waits until the store has synced what the publish wrote).

use std::collections::VecDeque;

use amq_protocol::protocol::{confirm, tx, AMQPClass};

use super::channel::{Channel, Settle, Unacked};
use super::publish::Routed;
use super::session::Session;
use crate::broker::queue::Stored;
use crate::protocol::AmqpError;
use crate::store::syncer::StoreHealth;
use crate::store::SyncStatus;

/// A confirm-mode channel's publishes not yet confirmed to the client.
/// Confirms go out in publish order, so one ack or nack with `multiple`
/// covers a run of them.
#[derive(Debug)]
pub struct Confirms {
    next: u64,
    sent_up_to: u64,
    /// Consecutive publishes with the same outcome: the last one's number,
    /// the sync round they wait for (0: none), and whether they fail.
    waiting: VecDeque<(u64, u64, bool)>,
    /// Publishes acked since the connection last took this count (for
    /// its statistics).
    pub acks_sent: u64,
}

impl Default for Confirms {
    fn default() -> Self {
        Confirms {
            next: 1,
            sent_up_to: 0,
            waiting: VecDeque::new(),
            acks_sent: 0,
        }
    }
}

impl Confirms {
    /// Record the outcome of the next publish; returns the sync round it
    /// waits for (0 for none).
    pub fn push(&mut self, outcome: Stored) -> u64 {
        let seq = self.next;
        self.next += 1;
        let (ticket, nack) = match outcome {
            Stored::Done => (0, false),
            Stored::AfterSync(t) => (t, false),
            Stored::Failed | Stored::Rejected(_) => (0, true),
        };
        match self.waiting.back_mut() {
            // A publish behind one that waits for a later round is
            // confirmed with it anyway.
            Some((last, t, n)) if *n == nack && *last + 1 == seq && ticket <= *t => {
                *last = seq;
                *t
            }
            _ => {
                self.waiting.push_back((seq, ticket, nack));
                ticket
            }
        }
    }

    /// Send (through `emit(tag, multiple, ack)`) every confirm that `status`
    /// settles, in order: acks for synced publishes, nacks for failed ones
    /// and, once the store has failed, for those it will never sync.
    pub fn release(&mut self, status: SyncStatus, mut emit: impl FnMut(u64, bool, bool)) {
        let mut run: Option<(u64, bool)> = None;
        while let Some(&(last, ticket, nack)) = self.waiting.front() {
            let ack = !nack && ticket <= status.synced;
            if !ack && !nack && !status.failed {
                break;
            }
            self.waiting.pop_front();
            match &mut run {
                Some((end, kind)) if *kind == ack => *end = last,
                _ => {
                    if let Some((end, kind)) = run.take() {
                        self.emit_run(end, kind, &mut emit);
                    }
                    run = Some((last, ack));
                }
            }
        }
        if let Some((end, kind)) = run {
            self.emit_run(end, kind, &mut emit);
        }
    }

    /// Publishes not yet confirmed or nacked.
    pub fn pending(&self) -> u64 {
        (self.next - 1).saturating_sub(self.sent_up_to)
    }

    /// Confirm (or nack) everything up to `end` in one method.
    fn emit_run(&mut self, end: u64, ack: bool, emit: &mut impl FnMut(u64, bool, bool)) {
        emit(end, end > self.sent_up_to + 1, ack);
        if ack {
            self.acks_sent += end - self.sent_up_to;
        }
        self.sent_up_to = end;
    }
}

/// What a transactional channel holds until commit.
#[derive(Debug, Default)]
pub struct TxBuffer {
    /// Messages validated and routed, enqueued at commit.
    pub publishes: Vec<Routed>,
    /// Bytes `publishes` hold, bookkeeping included (the connection's
    /// transaction budget).
    pub bytes: u64,
    /// Deliveries acked/nacked/rejected in the transaction, already taken
    /// out of the channel's unacked list.
    pub settlements: Vec<(Vec<Unacked>, Settle)>,
}

impl TxBuffer {
    /// Rollback: give the settled deliveries back to the unacked list, in
    /// delivery-tag order; drop the publishes.
    pub fn roll_back(self, ch: &mut Channel) {
        let back: Vec<Unacked> = self.settlements.into_iter().flat_map(|(u, _)| u).collect();
        ch.unacked.put_back(back);
    }
}

impl Session {
    pub(super) fn tx_method(&mut self, id: u16, m: tx::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            tx::AMQPMethod::Select(_) => {
                let ch = self.channel_mut(id)?;
                if ch.confirms.is_some() {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if ch.tx.is_none() {
                    ch.tx = Some(TxBuffer::default());
                }
                self.send(id, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
                Ok(())
            }
            tx::AMQPMethod::Commit(_) => {
                let ch = self.channel_mut(id)?;
                let Some(buffer) = ch.tx.replace(TxBuffer::default()) else {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                };
                let mut stored = Stored::Done;
                for mut r in buffer.publishes {
                    // A queue deleted (and maybe declared again) since the
                    // publish is looked up by name, as RabbitMQ routes to
                    // queue names at commit.
                    r.queues = r
                        .queues
                        .into_iter()
                        .filter_map(|q| match q.is_deleted() {
                            true => self.vhost.find_queue(&q.name),
                            false => Some(q),
                        })
                        .collect();
                    stored = stored.and(self.enqueue(id, r));
                }
                let ch = self.channel_mut(id)?;
                for (items, how) in buffer.settlements {
                    ch.settle(items, how);
                }
                match stored {
                    Stored::Failed => return Err(store_failed(self.broker.store.health())),
                    // Commit-Ok once the persistent messages are synced.
                    Stored::AfterSync(ticket) | Stored::Rejected(ticket) if ticket > 0 => {
                        self.commit_wait = Some((id, ticket));
                        self.sync_wanted = self.sync_wanted.max(ticket);
                    }
                    Stored::AfterSync(_) | Stored::Rejected(_) | Stored::Done => {
                        self.send(id, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
                    }
                }
                Ok(())
            }
            tx::AMQPMethod::Rollback(_) => {
                let ch = self.channel_mut(id)?;
                let Some(buffer) = ch.tx.replace(TxBuffer::default()) else {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                };
                buffer.roll_back(ch);
                self.send(
                    id,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
                Ok(())
            }
            _ => Err(AmqpError::command_invalid(
                "unexpected tx method from client",
            )),
        }
    }

    pub(super) fn confirm_method(
        &mut self,
        id: u16,
        m: confirm::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match m {
            confirm::AMQPMethod::Select(s) => {
                let ch = self.channel_mut(id)?;
                if ch.tx.is_some() {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                if ch.confirms.is_none() {
                    ch.confirms = Some(Confirms::default());
                }
                if !s.nowait {
                    self.send(
                        id,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            _ => Err(AmqpError::command_invalid(
                "unexpected confirm method from client",
            )),
        }
    }
}

/// 541: a persistent message could not be stored and there is no confirm
/// to nack.
/// The 541 for a persistent publish the store refused: out of disk space
/// (it recovers by itself) or failed (until a restart).
pub fn store_failed(health: StoreHealth) -> AmqpError {
    let text = match health {
        StoreHealth::Full => {
            "the message store is out of disk space; persistent messages cannot be accepted until space is freed"
        }
        _ => "the message store failed; persistent messages cannot be accepted",
    };
    AmqpError::new(crate::protocol::ErrorKind::InternalError, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(c: &mut Confirms, synced: u64, failed: bool) -> Vec<(u64, bool, bool)> {
        let mut out = Vec::new();
        c.release(SyncStatus { synced, failed }, |t, m, a| out.push((t, m, a)));
        out
    }

    #[test]
    fn confirms_wait_for_their_round_and_go_out_in_order() {
        let mut c = Confirms::default();
        c.push(Stored::Done);
        c.push(Stored::AfterSync(3));
        c.push(Stored::Done);
        c.push(Stored::AfterSync(4));
        assert_eq!(released(&mut c, 2, false), vec![(1, false, true)]);
        // The Done publish behind round 3 goes out with it.
        assert_eq!(released(&mut c, 3, false), vec![(3, true, true)]);
        assert_eq!(released(&mut c, 4, false), vec![(4, false, true)]);
    }

    #[test]
    fn failures_are_nacked_in_place() {
        let mut c = Confirms::default();
        c.push(Stored::Done);
        c.push(Stored::Failed);
        c.push(Stored::Done);
        assert_eq!(
            released(&mut c, 0, false),
            vec![(1, false, true), (2, false, false), (3, false, true)]
        );
        c.push(Stored::AfterSync(9));
        c.push(Stored::AfterSync(9));
        assert_eq!(released(&mut c, 5, true), vec![(5, true, false)]);
    }
}
