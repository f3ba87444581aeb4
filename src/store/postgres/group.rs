//! Group commit of audit records: one appender task per store (per replica) takes whatever
//! records are queued, appends them after the chain's last record in one transaction under
//! the chain's advisory lock, and answers each caller once that transaction has committed.
//!
//! - **What a caller is told** is what it was told with one transaction per record: its
//!   record is in the chain, committed, before the call is answered. Grouping changes how
//!   many records share a commit, not what a commit promises.
//! - **Durable as the file store's records.** Batches of records that need not be durable
//!   (allowed calls') are appended on a connection of the task's own, taken out of the pool
//!   for good, whose session has `synchronous_commit = off`: the commit does not wait for
//!   its WAL to reach the disk (or a synchronous standby), and the WAL writer flushes it
//!   within three times `wal_writer_delay` (0.6 s by default), as the file store fdatasyncs
//!   its records within a second. A database that crashes in that window loses the last
//!   such records, never one before a record it kept (WAL is flushed in order), so the
//!   chain stays whole. A batch holding a record that must be durable
//!   (`audit_append_durable`) goes on a pooled connection, with the database's setting
//!   (raised to `on` where it is `off`); every other write of the store (ledger,
//!   approvals, plans, identities, the spool's draining) keeps the database's setting too:
//!   the session setting is made only once the connection can no longer return to the
//!   pool. A batch that fails drops the task's connection; the next batch makes another.
//! - **Order** is the queue's: records go into the chain in the order their callers queued
//!   them, batch after batch; a batch is one contiguous run of the one chain.
//! - **One statement per batch** while the chain ends where this task left it: the task
//!   keeps the last `seq` and hash it appended, and inserts the next batch with one
//!   statement that takes the chain's lock and writes only if the last `seq` is still that
//!   one (the primary key on `seq` refusing rows that lost a race). When the chain moved on
//!   (another replica or the spool appended), or the batch must be durable, it is the
//!   transaction that reads the last record under the lock, as the spool's draining does.
//! - **A batch that fails** (the database down, the chain's lock held past
//!   `AUDIT_APPEND_WAIT`, read-only) is kept in the spool by the task itself, record after
//!   record in queue order, before it takes the next batch; while records wait in the spool,
//!   every batch goes there behind them (the drain appends them to the chain in that order).
//!   So this replica's records reach the chain in the order they were queued, whoever
//!   waits for them. Without a spool (a CLI's store) they go back to their callers. If the
//!   task ends mid-batch (the store dropped, a panic), that batch is kept the same way.
//! - **After a failed batch** the task's connection is made anew, and the first batch on a
//!   new connection reads the chain's end under the lock rather than trust where its last
//!   batch left it (that batch may have been lost by a database that crashed before
//!   flushing it, and others may have appended in its place).

use super::spool::Spool;
use super::{
    append_in, db_error, durable_commit, ChainRows, AUDIT_APPEND_WAIT, AUDIT_LOCK, NOT_READY,
};
use crate::audit::{Fields, Position};
use deadpool_postgres::{ClientWrapper, Pool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The most records one transaction appends; more queued wait for the next one.
const MAX_BATCH: usize = 1024;

/// A caller's answer: committed, or why not and what became of the record.
pub(super) type Appended = Result<(), (String, NotAppended)>;

/// What became of a record the database did not take.
pub(super) enum NotAppended {
    /// Kept in the spool by the task, in queue order (behind every record queued before it,
    /// so the chain gets this replica's records in the order they were queued).
    Spooled,
    /// Handed back to its caller: there is no spool (a CLI's store).
    Back(Fields),
    /// Neither appended nor kept (the spool could not be written, or the task ended
    /// without answering, which nothing but a panic in it does): logged.
    Lost,
}

/// The queue in front of the appender task.
pub(super) struct Appender {
    queue: mpsc::UnboundedSender<Queued>,
    task: tokio::task::AbortHandle,
}

struct Queued {
    record: Fields,
    /// Must be durable at commit whatever the database's `synchronous_commit`.
    durable: bool,
    answer: oneshot::Sender<Appended>,
}

impl Drop for Appender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Appender {
    /// Starts the appender task over `pool`; nothing is appended while `ready` is false
    /// (the schema not yet checked). Records whose callers are gone go to `spool` when
    /// their batch fails. Needs a Tokio runtime.
    pub(super) fn start(pool: Pool, ready: Arc<AtomicBool>, spool: Option<Arc<Spool>>) -> Appender {
        let (queue, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(pool, ready, spool, rx)).abort_handle();
        Appender { queue, task }
    }

    /// Queues `record` and waits until the transaction holding it has committed.
    pub(super) async fn append(&self, record: Fields, durable: bool) -> Appended {
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            record,
            durable,
            answer,
        };
        if let Err(mpsc::error::SendError(q)) = self.queue.send(queued) {
            return Err((
                "the audit appender has stopped".into(),
                NotAppended::Back(q.record),
            ));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(("the audit appender stopped".into(), NotAppended::Lost)))
    }
}

/// A batch being appended: whatever it still holds when dropped (the task aborted or
/// panicked) is handed back as not appended.
struct Batch {
    /// The records in queue order, and beside each its caller's answer and durability.
    records: Vec<Fields>,
    answers: Vec<(oneshot::Sender<Appended>, bool)>,
    spool: Option<Arc<Spool>>,
}

impl Batch {
    /// Answers every caller with `result`. On failure the task itself keeps the records in
    /// the spool, one after the other in queue order, before it takes the next batch (were
    /// each caller to spool its own, they would land in any order, and the next batch could
    /// reach the database ahead of them); without a spool they go back to their callers.
    fn answer(&mut self, result: &Result<(), String>) {
        let answers = self.answers.drain(..);
        for (record, (answer, durable)) in self.records.drain(..).zip(answers) {
            let Err(e) = result else {
                let _ = answer.send(Ok(()));
                continue;
            };
            let fate = match self.spool.as_deref() {
                Some(spool) => match spool.append(&record, durable) {
                    Ok(()) => NotAppended::Spooled,
                    Err(e) => {
                        tracing::error!(error = %e, "an audit record could not be written to PostgreSQL nor to the spool: it is lost");
                        NotAppended::Lost
                    }
                },
                None => NotAppended::Back(record),
            };
            if let Err(Err((_, NotAppended::Back(_)))) = answer.send(Err((e.clone(), fate))) {
                tracing::error!("an audit record whose caller stopped waiting could not be written to PostgreSQL and there is no spool: it is lost");
            }
        }
    }

    fn push(&mut self, q: Queued) {
        self.records.push(q.record);
        self.answers.push((q.answer, q.durable));
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if !self.records.is_empty() {
            self.answer(&Err("the audit appender stopped mid-batch".into()));
        }
    }
}

async fn run(
    pool: Pool,
    ready: Arc<AtomicBool>,
    spool: Option<Arc<Spool>>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    // Where this task's last batch left the chain, while nothing says it moved since.
    let mut end: Option<Position> = None;
    // The connection of this task's batches that need not be durable at commit.
    let mut own: Option<ClientWrapper> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = Batch {
            records: Vec::new(),
            answers: Vec::new(),
            spool: spool.clone(),
        };
        batch.push(first);
        while batch.records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        let durable = batch.answers.iter().any(|(_, durable)| *durable);
        let result = if spool.as_ref().is_some_and(|s| s.waiting()) {
            // Records kept in the spool go into the chain first (the drain's job); this
            // batch goes behind them.
            Err("records wait in the spool: these go behind them".to_string())
        } else if ready.load(Ordering::SeqCst) {
            append_batch(&pool, &mut own, &batch.records, durable, &mut end).await
        } else {
            Err(NOT_READY.to_string())
        };
        batch.answer(&result);
    }
}

/// The batch's records after the chain's last, in one transaction. A durable batch takes a
/// pooled connection (the database's `synchronous_commit`, raised to `on` where it is
/// `off`) and reads the last record under the lock ([`append_in`]). Any other goes on the
/// task's own connection (`own`, made when there is none), whose session has
/// `synchronous_commit = off`: one statement when the chain still ends where this task's
/// last batch left it ([`append_at`]), else [`append_in`]. A batch that fails drops that
/// connection (the next batch makes another). `end` is where the chain ends after.
async fn append_batch(
    pool: &Pool,
    own: &mut Option<ClientWrapper>,
    records: &[Fields],
    durable: bool,
    end: &mut Option<Position>,
) -> Result<(), String> {
    let at = end.take();
    if durable {
        let mut client = pool.get().await.map_err(db_error)?;
        let tx = client.transaction().await.map_err(db_error)?;
        durable_commit(&tx).await?;
        let after = append_in(&tx, records).await?;
        tx.commit().await.map_err(db_error)?;
        *end = Some(after);
        return Ok(());
    }
    let (mut client, at) = match own.take().filter(|client| !client.is_closed()) {
        Some(client) => (client, at),
        // A new connection: what the last batch committed may since have been lost (a
        // database that crashed before flushing it, a failover), and others may have
        // appended in its place, so the chain's end is read under the lock, never assumed.
        None => (own_connection(pool).await?, None),
    };
    let after = append_async(&mut client, at, records).await?;
    *own = Some(client);
    *end = Some(after);
    Ok(())
}

/// A connection taken out of `pool` for good (the pool makes another in its place), with
/// `synchronous_commit = off` and a `lock_timeout` of [`AUDIT_APPEND_WAIT`] for its whole
/// session: the settings are made only once the connection can no longer go back to the
/// pool, so no other statement ever runs under them. The lock timeout bounds how long a
/// chain's lock held by a stuck client holds up the calls whose records wait: the
/// statement fails (nothing written, so nothing can be written twice) and the records go
/// to the spool.
async fn own_connection(pool: &Pool) -> Result<ClientWrapper, String> {
    let client = deadpool_postgres::Object::take(pool.get().await.map_err(db_error)?);
    client
        .batch_execute(&format!(
            "SET synchronous_commit = off; SET lock_timeout = {}",
            AUDIT_APPEND_WAIT.as_millis()
        ))
        .await
        .map_err(db_error)?;
    Ok(client)
}

/// A batch that need not be durable at commit, on the task's own connection: at `at` in
/// one statement, or after the last record read under the lock. Where the chain ends after.
async fn append_async(
    client: &mut ClientWrapper,
    at: Option<Position>,
    records: &[Fields],
) -> Result<Position, String> {
    if let Some(at) = at {
        if let Some(after) = append_at(client, at, records).await? {
            return Ok(after);
        }
    }
    let tx = client.transaction().await.map_err(db_error)?;
    let after = append_in(&tx, records).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(after)
}

/// The records appended at `at` by one statement (its own transaction), under the chain's
/// lock, only if the chain's last `seq` is still the one before `at`; that record is this
/// task's own (rows are never changed), so its hash is `at`'s. `None` when the chain moved
/// on (another replica, or the spool's draining, appended since) and nothing was written:
/// the statement's snapshot may predate a commit made while it waited for the lock, and
/// then the primary key on `seq` refuses the rows, which is also `None`.
async fn append_at(
    client: &ClientWrapper,
    at: Position,
    records: &[Fields],
) -> Result<Option<Position>, String> {
    let Some(last_seq) = at
        .next_seq
        .checked_sub(1)
        .and_then(|s| i64::try_from(s).ok())
    else {
        return Ok(None);
    };
    let statement = client
        .prepare_cached(
            "WITH chain_lock AS (SELECT pg_advisory_xact_lock($1))
             INSERT INTO airlock_audit (seq, record)
             SELECT rows.seq, rows.record
               FROM chain_lock, unnest($2::bigint[], $3::text[]) AS rows (seq, record)
              WHERE (SELECT max(seq) FROM airlock_audit) = $4",
        )
        .await
        .map_err(db_error)?;
    let rows = ChainRows::after(at, records)?;
    let lines = rows.lines();
    match client
        .execute(&statement, &[&AUDIT_LOCK, &rows.seqs, &lines, &last_seq])
        .await
    {
        Ok(n) if n == records.len() as u64 => Ok(Some(rows.end)),
        Ok(0) => Ok(None),
        Ok(n) => Err(format!(
            "appending {} audit records wrote {n} rows",
            records.len()
        )),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => Ok(None),
        Err(e) => Err(db_error(e)),
    }
}
