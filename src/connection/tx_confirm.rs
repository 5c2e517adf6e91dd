//! Transactions (tx.select/commit/rollback: publishes and settlements held
//! until commit, as RabbitMQ does) and publisher confirms (confirm.select).

use amq_protocol::protocol::{confirm, tx, AMQPClass};

use super::basic::Routed;
use super::channel::{Channel, Settle, Unacked};
use super::session::Session;
use crate::protocol::AmqpError;

/// What a transactional channel holds until commit.
#[derive(Debug, Default)]
pub struct TxBuffer {
    /// Messages validated and routed, enqueued at commit.
    pub publishes: Vec<Routed>,
    /// Deliveries acked/nacked/rejected in the transaction, already taken
    /// out of the channel's unacked list.
    pub settlements: Vec<(Vec<Unacked>, Settle)>,
}

impl TxBuffer {
    /// Rollback: give the settled deliveries back to the unacked list, in
    /// delivery-tag order; drop the publishes.
    pub fn roll_back(self, ch: &mut Channel) {
        let mut back: Vec<Unacked> = self.settlements.into_iter().flat_map(|(u, _)| u).collect();
        if back.is_empty() {
            return;
        }
        back.extend(ch.unacked.drain(..));
        back.sort_by_key(|u| u.tag);
        ch.unacked = back.into();
    }
}

impl Session {
    pub(super) fn tx_method(&mut self, id: u16, m: tx::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            tx::AMQPMethod::Select(_) => {
                let ch = self.channel_mut(id)?;
                if ch.confirm_seq.is_some() {
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
                    self.enqueue(id, r);
                }
                let ch = self.channel_mut(id)?;
                for (items, how) in buffer.settlements {
                    ch.settle(items, how);
                }
                self.send(id, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
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
                if ch.confirm_seq.is_none() {
                    ch.confirm_seq = Some(1);
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
