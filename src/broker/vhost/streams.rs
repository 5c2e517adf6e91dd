//! Declaring a stream queue and bringing one back at start: the queue's
//! directory holds the stream's segments and tracked offsets instead of a
//! classic queue's log (see `broker::stream`, `store::stream_log`).

use std::sync::Arc;

use amq_protocol::protocol::queue;

use super::topology::Topology;
use super::{QueueInfo, VHost};
use crate::broker::queue::{Queue, QueueDef};
use crate::broker::stream::options::Retention;
use crate::broker::stream::StreamQueue;
use crate::protocol::{AmqpError, ErrorKind};
use crate::store::definitions::QueueDef as StoredQueue;
use crate::store::stream_log::StreamLog;
use crate::store::stream_offsets::StreamOffsets;

impl VHost {
    /// queue.declare of a new stream (checked as durable, not exclusive,
    /// not auto-delete by `check_queue_type`). No file is touched: the
    /// directory appears with the first segment.
    pub(super) fn declare_stream(
        &self,
        topo: &mut Topology,
        name: &str,
        d: &queue::Declare,
    ) -> Result<QueueInfo, AmqpError> {
        let retention = Retention::from_arguments(&d.arguments, name, &self.name)?;
        let dir = self.store.new_queue_dir();
        let path = self.store.queue_path(&dir);
        let internal = |e: std::io::Error| {
            tracing::error!(queue = %name, path = %path.display(), error = %e, "cannot create a stream");
            AmqpError::new(
                ErrorKind::InternalError,
                format!("cannot create the store of queue '{name}': {e}"),
            )
        };
        let log = StreamLog::create(&path, retention.segment_bytes).map_err(internal)?;
        let stream = StreamQueue::new(
            log,
            StreamOffsets::empty(&path),
            retention,
            self.store.clone(),
        );
        let def = QueueDef {
            name,
            vhost: &self.name,
            disk_dir: Some(dir),
            exclusive_owner: None,
            auto_delete: false,
            arguments: d.arguments.clone(),
        };
        let queue = Arc::new(Queue::new_stream(def, stream, self.queue_context()));
        topo.insert_queue(queue);
        let ticket = self.commit(topo).inspect_err(|_| {
            if let Some(q) = topo.unregister_queue(name) {
                q.mark_deleted();
            }
            topo.journal.clear();
        })?;
        Ok(QueueInfo {
            name: name.to_string(),
            message_count: 0,
            consumer_count: 0,
            ticket,
        })
    }

    /// A stream with the segments and offsets its directory holds (at
    /// start, on a recovery thread).
    pub(super) fn recover_stream(&self, q: &StoredQueue) -> Result<Arc<Queue>, String> {
        let path = self.store.queue_path(&q.dir);
        let fail = |e: std::io::Error| {
            format!(
                "cannot recover stream '{}' from {}: {e}",
                q.name,
                path.display()
            )
        };
        // Checked at declare; a file edited since falls back to defaults.
        let retention =
            Retention::from_arguments(&q.arguments, &q.name, &self.name).unwrap_or_default();
        let (log, report) = StreamLog::recover(&path, retention.segment_bytes).map_err(fail)?;
        let mut offsets = StreamOffsets::open(&path).map_err(fail)?;
        // A place past the end (its records were lost with the machine,
        // never confirmed) is the end: the next message there is new.
        let end = log.next_offset();
        let past: Vec<String> = offsets
            .iter()
            .filter(|(_, next)| *next > end)
            .map(|(name, _)| name.to_string())
            .collect();
        for name in past {
            offsets.store(&name, end).map_err(fail)?;
        }
        tracing::info!(
            vhost = %self.name,
            queue = %q.name,
            first_offset = log.first_offset(),
            next_offset = log.next_offset(),
            torn_segments = report.torn_segments,
            "recovered stream"
        );
        let stream = StreamQueue::new(log, offsets, retention, self.store.clone());
        let def = self.recovered_def(q);
        Ok(Arc::new(Queue::new_stream(
            def,
            stream,
            self.queue_context(),
        )))
    }
}
