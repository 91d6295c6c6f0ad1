//! [`CrmWriter`]: a bounded queue in front of the [`Store`] so the call path never waits on the
//! database.
//!
//! The audio loop calls [`CrmWriter::submit`], which never awaits: the operation goes into a
//! bounded channel, or is handed back at once when the channel is full (logged loudly). One
//! writer task applies operations in submission order. Operations that queued up while the
//! previous write ran are written together in one transaction (up to [`MAX_BATCH`]): one commit
//! instead of one per row, so a busy server's backlog drains several times faster. If the
//! transaction fails for any reason it is rolled back and its operations are written one by
//! one as below, so one bad row never costs the others. A write that fails for a transient reason
//! (database down, pool exhausted, SQLite busy) is retried with capped exponential back-off until
//! it succeeds, so an outage delays rows but does not lose them; later operations wait behind it,
//! which keeps per-call order (a turn is never written after the call's end). A write the
//! database rejects for good (it cannot become valid by waiting) is logged at error level with
//! the call id and counted in [`WriterStats::rejected`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use sqlx::Any;
use sqlx::pool::PoolConnection;

use crate::model::{NewCall, NewRecording, NewTask, NewTurn, StreamEventRecord};
use crate::store::{
    Conn, append_turn_on, attach_recording_on, mark_call_ended_on, mark_call_streaming_on,
    record_incoming_call_on, record_stream_event_on, record_task_on,
};
use crate::{CrmError, Store};

/// Most queued operations written in one transaction. Large enough to amortise the commit,
/// small enough that the transaction holds SQLite's write lock for a few milliseconds at most.
const MAX_BATCH: usize = 64;

/// One write from the call path.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WriteOp {
    /// The incoming-call webhook (usually written directly; queued here when the caller prefers).
    IncomingCall(NewCall),
    /// The media stream started ([`Store::mark_call_streaming`]).
    StreamStarted {
        /// Twilio `CallSid`.
        call_sid: String,
        /// Media Streams `streamSid`.
        stream_sid: String,
        /// When.
        at_ms: i64,
    },
    /// A transcript turn ([`Store::append_turn`]).
    AppendTurn(NewTurn),
    /// The call ended ([`Store::mark_call_ended`]).
    CallEnded {
        /// Twilio `CallSid`.
        call_sid: String,
        /// When.
        at_ms: i64,
        /// Final status (`completed`, `failed`, …).
        status: String,
    },
    /// A stream lifecycle event ([`Store::record_stream_event`]).
    StreamEvent {
        /// Twilio `CallSid`.
        call_sid: String,
        /// The event.
        event: StreamEventRecord,
    },
    /// A finished recording ([`Store::attach_recording`]).
    Recording(NewRecording),
    /// A recording's encoded file replacing its spool: once the store references `recording`,
    /// the spool file at `replaces` is deleted (never before, so the store always points at a
    /// file that exists; if the store refuses the new reference, the spool stays).
    RecordingEncoded {
        /// The encoded file ([`crate::recording::encode_spool`]).
        recording: NewRecording,
        /// The spool file it replaces.
        replaces: String,
    },
    /// A follow-up task from the call ([`Store::record_task`]; a retry stores it once).
    Task(NewTask),
}

impl WriteOp {
    /// The call this write belongs to (for logs).
    #[must_use]
    pub fn call_sid(&self) -> &str {
        match self {
            WriteOp::IncomingCall(c) => &c.call_sid,
            WriteOp::AppendTurn(t) => &t.call_sid,
            WriteOp::Recording(r) | WriteOp::RecordingEncoded { recording: r, .. } => &r.call_sid,
            WriteOp::Task(t) => &t.call_sid,
            WriteOp::StreamStarted { call_sid, .. }
            | WriteOp::CallEnded { call_sid, .. }
            | WriteOp::StreamEvent { call_sid, .. } => call_sid,
        }
    }

    /// A short name of the operation (for logs).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            WriteOp::IncomingCall(_) => "incoming_call",
            WriteOp::StreamStarted { .. } => "stream_started",
            WriteOp::AppendTurn(_) => "append_turn",
            WriteOp::CallEnded { .. } => "call_ended",
            WriteOp::StreamEvent { .. } => "stream_event",
            WriteOp::Recording(_) => "recording",
            WriteOp::RecordingEncoded { .. } => "recording_encoded",
            WriteOp::Task(_) => "task",
        }
    }

    /// Writes the operation through `conn` (the pool or the writer's transaction). Side
    /// effects outside the database wait for [`WriteOp::after_commit`].
    async fn write(&self, conn: &mut Conn<'_>) -> Result<(), CrmError> {
        match self {
            WriteOp::IncomingCall(call) => record_incoming_call_on(conn, call).await.map(|_| ()),
            WriteOp::StreamStarted {
                call_sid,
                stream_sid,
                at_ms,
            } => mark_call_streaming_on(conn, call_sid, stream_sid, *at_ms).await,
            WriteOp::AppendTurn(turn) => append_turn_on(conn, turn).await,
            WriteOp::CallEnded {
                call_sid,
                at_ms,
                status,
            } => mark_call_ended_on(conn, call_sid, *at_ms, status).await,
            WriteOp::StreamEvent { call_sid, event } => {
                record_stream_event_on(conn, call_sid, event).await
            }
            WriteOp::Recording(rec) | WriteOp::RecordingEncoded { recording: rec, .. } => {
                attach_recording_on(conn, rec).await
            }
            WriteOp::Task(task) => record_task_on(conn, task).await.map(|_| ()),
        }
    }

    /// What happens once the write is committed: an encoded recording's spool is deleted only
    /// now, so the store always points at a file that exists.
    fn after_commit(&self) {
        if let WriteOp::RecordingEncoded {
            recording,
            replaces,
        } = self
            && let Err(e) = crate::recording::remove_spool(replaces)
        {
            // The store already points at the encoded file: a leftover spool only costs disk
            // space, so this is not a failed write.
            tracing::warn!(call_sid = %recording.call_sid, error = %e,
                "encoded recording stored; its spool could not be deleted");
        }
    }
}

/// Why [`CrmWriter::submit`] handed an operation back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The queue holds `capacity` operations already: the database is not keeping up.
    #[error(
        "CRM write queue full ({capacity} pending): the database is slow or down; {kind} for call {call_sid} was not queued"
    )]
    QueueFull {
        /// Queue capacity.
        capacity: usize,
        /// The operation's kind.
        kind: &'static str,
        /// The operation's call.
        call_sid: String,
        /// The operation, handed back so the caller may keep it.
        op: Box<WriteOp>,
    },
    /// The writer task is gone (it panicked or the runtime is shutting down).
    #[error("CRM writer task stopped; {kind} for call {call_sid} was not queued")]
    WriterStopped {
        /// The operation's kind.
        kind: &'static str,
        /// The operation's call.
        call_sid: String,
        /// The operation, handed back.
        op: Box<WriteOp>,
    },
}

/// Back-off between retries of a failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failure.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Counters of the writer task (observe with [`CrmWriter::stats`] / [`CrmWriter::watch_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Operations accepted into the queue.
    pub submitted: u64,
    /// Operations finished (written or rejected).
    pub processed: u64,
    /// Operations written.
    pub written: u64,
    /// Failed attempts that were (or will be) retried.
    pub failed_attempts: u64,
    /// Operations the database refused for good (logged with their call id).
    pub rejected: u64,
    /// Operations handed back because the queue was full.
    pub queue_full: u64,
    /// Transactions that wrote several queued operations at once (see the module docs).
    pub batches: u64,
}

/// Handle to the writer task. Cheap to clone; the task stops after the last handle is dropped
/// and the queue is drained.
#[derive(Clone)]
pub struct CrmWriter {
    tx: mpsc::Sender<WriteOp>,
    stats: Arc<watch::Sender<WriterStats>>,
    capacity: usize,
}

impl std::fmt::Debug for CrmWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmWriter")
            .field("capacity", &self.capacity)
            .field("stats", &*self.stats.borrow())
            .finish()
    }
}

impl CrmWriter {
    /// Starts the writer task with a queue of `capacity` operations (at least 1) and the
    /// default [`RetryPolicy`]. Must be called inside a tokio runtime.
    pub fn spawn(store: Store, capacity: usize) -> (CrmWriter, JoinHandle<()>) {
        Self::spawn_with(store, capacity, RetryPolicy::default())
    }

    /// [`CrmWriter::spawn`] with an explicit retry policy.
    pub fn spawn_with(
        store: Store,
        capacity: usize,
        retry: RetryPolicy,
    ) -> (CrmWriter, JoinHandle<()>) {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(watch::Sender::new(WriterStats::default()));
        let task = tokio::spawn(run_writer(store, rx, Arc::clone(&stats), retry));
        (
            CrmWriter {
                tx,
                stats,
                capacity,
            },
            task,
        )
    }

    /// Queues `op` without waiting. A full queue hands the operation back and logs an error.
    pub fn submit(&self, op: WriteOp) -> Result<(), SubmitError> {
        match self.tx.try_send(op) {
            Ok(()) => {
                // Counted after the send: the task may finish the op first, so readers use
                // saturating arithmetic (see `depth`).
                self.stats.send_modify(|s| s.submitted += 1);
                Ok(())
            }
            Err(err) => {
                let full = matches!(err, mpsc::error::TrySendError::Full(_));
                let op = err.into_inner();
                if full {
                    self.stats.send_modify(|s| s.queue_full += 1);
                }
                let kind = op.kind();
                let call_sid = op.call_sid().to_owned();
                if full {
                    tracing::error!(
                        call_sid = %call_sid, op = kind, capacity = self.capacity,
                        "CRM WRITE QUEUE FULL: database is not keeping up, write not queued"
                    );
                    Err(SubmitError::QueueFull {
                        capacity: self.capacity,
                        kind,
                        call_sid,
                        op: Box::new(op),
                    })
                } else {
                    tracing::error!(call_sid = %call_sid, op = kind, "CRM writer task stopped, write not queued");
                    Err(SubmitError::WriterStopped {
                        kind,
                        call_sid,
                        op: Box::new(op),
                    })
                }
            }
        }
    }

    /// Operations queued or being written right now.
    #[must_use]
    pub fn depth(&self) -> usize {
        let s = *self.stats.borrow();
        usize::try_from(s.submitted.saturating_sub(s.processed)).unwrap_or(usize::MAX)
    }

    /// Queue capacity.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Current counters.
    #[must_use]
    pub fn stats(&self) -> WriterStats {
        *self.stats.borrow()
    }

    /// A receiver that sees every counter change (for metrics and tests).
    #[must_use]
    pub fn watch_stats(&self) -> watch::Receiver<WriterStats> {
        self.stats.subscribe()
    }

    /// Waits until every operation submitted before this call is finished. While the database
    /// is down this waits for it: wrap in `tokio::time::timeout` at shutdown.
    pub async fn flush(&self) {
        let target = self.stats.borrow().submitted;
        let mut rx = self.stats.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|s| s.processed >= target).await;
    }
}

async fn run_writer(
    store: Store,
    mut rx: mpsc::Receiver<WriteOp>,
    stats: Arc<watch::Sender<WriterStats>>,
    retry: RetryPolicy,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // While operations wait, the writer keeps a connection of its own: under load, webhooks
    // take and return pool connections hundreds of times a second, and a writer queuing with
    // them for each write fell seconds behind (measured: the queue grew to 4,000-5,000
    // operations in bursts at 1,000 calls). Dropped after any failure, so a broken connection
    // is not kept.
    let mut conn: Option<PoolConnection<Any>> = None;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let n = batch.len() as u64;
        match write_queued(&store, &mut conn, &batch).await {
            Ok(()) => {
                // Kept while work waits; handed back when the queue is empty, so an idle
                // writer holds nothing (shutdown closes the pool after the last flush) and a
                // one-connection pool is free between writes.
                if rx.is_empty() || !store.can_dedicate_a_connection() {
                    conn = None;
                }
                batch.iter().for_each(WriteOp::after_commit);
                stats.send_modify(|s| {
                    s.written += n;
                    s.processed += n;
                    if n > 1 {
                        s.batches += 1;
                    }
                });
                batch.clear();
                continue;
            }
            Err(err) => {
                // Rolled back: nothing of the batch is stored. Write the operations one by
                // one, so a row the database refuses is rejected alone and an outage is
                // retried with back-off.
                conn = None;
                tracing::debug!(ops = n, error = %err,
                    "CRM write failed on the writer's connection; writing its operations one by one");
            }
        }
        for op in batch.drain(..) {
            write_with_retry(&store, &op, &stats, retry, &rx).await;
            stats.send_modify(|s| s.processed += 1);
        }
    }
    tracing::debug!("CRM writer drained and stopped");
}

/// Writes `ops` in order on the writer's connection (taken when missing): one alone as it is,
/// several in one transaction, which any error rolls back whole.
async fn write_queued(
    store: &Store,
    conn: &mut Option<PoolConnection<Any>>,
    ops: &[WriteOp],
) -> Result<(), CrmError> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(store.dedicated_connection().await?),
    };
    if let [op] = ops {
        return op.write(&mut Conn::Held(conn)).await;
    }
    let mut tx = sqlx::Connection::begin(&mut **conn).await?;
    for op in ops {
        op.write(&mut Conn::Held(&mut tx)).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Writes one operation, retrying transient failures with capped exponential back-off until it
/// is stored or rejected for good.
async fn write_with_retry(
    store: &Store,
    op: &WriteOp,
    stats: &watch::Sender<WriterStats>,
    retry: RetryPolicy,
    rx: &mpsc::Receiver<WriteOp>,
) {
    let mut backoff = retry.initial_backoff;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        match op.write(&mut store.conn()).await {
            Ok(()) => {
                op.after_commit();
                if attempt > 1 {
                    tracing::info!(
                        call_sid = op.call_sid(),
                        op = op.kind(),
                        attempt,
                        "CRM write succeeded after retry"
                    );
                }
                stats.send_modify(|s| s.written += 1);
                return;
            }
            Err(err) if err.is_transient() => {
                stats.send_modify(|s| s.failed_attempts += 1);
                // First failures are warnings; a long outage escalates to errors.
                if attempt >= 5 {
                    tracing::error!(call_sid = op.call_sid(), op = op.kind(), attempt, error = %err,
                        retry_in_ms = backoff.as_millis() as u64, pending = rx.len(), "CRM write failing, will retry");
                } else {
                    tracing::warn!(call_sid = op.call_sid(), op = op.kind(), attempt, error = %err,
                        retry_in_ms = backoff.as_millis() as u64, "CRM write failed, will retry");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(retry.max_backoff);
            }
            Err(err) => {
                tracing::error!(call_sid = op.call_sid(), op = op.kind(), error = %err, row = ?op,
                    "CRM write rejected by the database and cannot succeed by retrying; row not stored");
                stats.send_modify(|s| s.rejected += 1);
                return;
            }
        }
    }
}
