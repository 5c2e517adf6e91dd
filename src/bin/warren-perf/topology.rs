//! The exchange, queues and bindings a run declares, and their removal.

use amq_protocol::protocol::{exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::client::{Client, Result, Target};
use crate::options::Options;

/// Declare everything; returns the queue names.
pub async fn declare(target: &Target, o: &Options) -> Result<Vec<String>> {
    let mut c = Client::connect(target, 0).await?;
    c.call(AMQPClass::Exchange(exchange::AMQPMethod::Declare(
        exchange::Declare {
            exchange: ShortString::from(o.exchange()),
            kind: ShortString::from(o.exchange_type.as_str()),
            passive: false,
            durable: o.persistent,
            auto_delete: false,
            internal: false,
            nowait: false,
            arguments: FieldTable::default(),
        },
    )))
    .await?;
    let mut names = Vec::new();
    for i in 0..o.queues {
        let name = format!("{}q{i}", o.prefix);
        c.call(AMQPClass::Queue(queue::AMQPMethod::Declare(
            queue::Declare {
                queue: ShortString::from(name.as_str()),
                passive: false,
                durable: o.persistent,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: o.queue_args.clone(),
            },
        )))
        .await?;
        bind(&mut c, o, &name, &o.binding_key(), headers_args(o)).await?;
        names.push(name);
    }
    // Bindings that match nothing, to make routing work harder.
    for i in 0..o.extra_bindings {
        let key = match i % 3 {
            0 => format!("other{i}.*.#"),
            1 => format!("*.nomatch{i}"),
            _ => format!("#.never{i}"),
        };
        bind(&mut c, o, &names[0], &key, FieldTable::default()).await?;
    }
    for i in 0..o.unrelated_bindings {
        let key = format!("unrelated.{i}.#");
        bind(&mut c, o, &names[0], &key, FieldTable::default()).await?;
    }
    c.close().await;
    Ok(names)
}

fn headers_args(o: &Options) -> FieldTable {
    let mut t = FieldTable::default();
    if o.exchange_type == "headers" {
        t.insert(
            ShortString::from("x-match"),
            AMQPValue::LongString(LongString::from("all")),
        );
        t.insert(
            ShortString::from("perf"),
            AMQPValue::LongString(LongString::from("1")),
        );
    }
    t
}

async fn bind(
    c: &mut Client,
    o: &Options,
    queue: &str,
    key: &str,
    arguments: FieldTable,
) -> Result<()> {
    c.call(AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
        queue: ShortString::from(queue),
        exchange: ShortString::from(o.exchange()),
        routing_key: ShortString::from(key),
        nowait: false,
        arguments,
    })))
    .await
    .map(|_| ())
}

/// Delete what `declare` made.
pub async fn delete(target: &Target, o: &Options, queues: &[String]) -> Result<()> {
    let mut c = Client::connect(target, 0).await?;
    for q in queues {
        c.call(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: ShortString::from(q.as_str()),
            if_unused: false,
            if_empty: false,
            nowait: false,
        })))
        .await?;
    }
    c.call(AMQPClass::Exchange(exchange::AMQPMethod::Delete(
        exchange::Delete {
            exchange: ShortString::from(o.exchange()),
            if_unused: false,
            nowait: false,
        },
    )))
    .await?;
    c.close().await;
    Ok(())
}
