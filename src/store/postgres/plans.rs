//! Submitted Terraform plans in PostgreSQL, so that a plan submitted, approved or ended
//! through one replica is the plan every replica honours.
//!
//! - A plan is a row of `airlock_plans`: its record as JSON (what `plan::store::PlanRecord`
//!   serialises to) with `status`, `agent`, `receipt_id` and `submitted_at` beside it. Its
//!   receipts (the quorum's under way, the approving or denying one) are rows of
//!   `airlock_receipts`, with every other receipt.
//! - Deciding a plan ([`PgStore::decide_plan`]) locks its row for the transaction: two
//!   approvers' signatures, through two replicas at once, join the quorum one after the
//!   other, and the second sees the first's receipt.
//! - Every change (submitted, decided, ended) sends `NOTIFY` on [`PLANS_CHANNEL`] in its
//!   own transaction, so it is announced exactly when it is committed. [`follow`] keeps a
//!   connection on `LISTEN` (with TCP keepalives, so one that dies silently is noticed in
//!   seconds) and calls its reload once listening and on every notification; every
//!   [`PLANS_POLL`] while that connection is down or the last reload failed; and every
//!   [`PLANS_REFRESH`] regardless, so a lost notification is made up for.
//!
//! The types here are plain (JSON text, bytes): `store` sits below `plan` in the module
//! graph, and `plan::shared` maps these rows onto its records.

use super::{db_error, listen_config, listen_once, receipt_in, tls, PgStore, LISTEN_RETRY};
use crate::secret::Secret;
use futures_util::pin_mut;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The schema's plans table. It uses no table of another migration but `airlock_receipts`
/// (version 2), so it can take any number after that.
pub(super) const MIGRATION: &str = "CREATE TABLE airlock_plans (
        id text PRIMARY KEY,
        status text NOT NULL
            CHECK (status IN ('pending', 'approved', 'denied', 'spent', 'expired')),
        agent text NOT NULL,
        receipt_id text,
        submitted_at text NOT NULL,
        record jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX airlock_plans_by_status ON airlock_plans (status);";

/// The channel a changed plan's id is announced on (sent in the changing transaction).
pub const PLANS_CHANNEL: &str = "airlock_plan_changed";

/// How often [`follow`] reloads while it is not listening (its connection is down) or its
/// last reload failed.
pub const PLANS_POLL: Duration = Duration::from_secs(1);

/// How often [`follow`] reloads while listening and reading well: what bounds a change
/// missed by a connection that died without a word, before its keepalives say so.
pub const PLANS_REFRESH: Duration = Duration::from_secs(5);

/// A plan as its row holds it.
#[derive(Debug, Clone)]
pub struct PlanRow {
    pub id: String,
    /// `pending`, `approved`, `denied`, `spent` or `expired` (the record's own status).
    pub status: String,
    pub agent: String,
    pub receipt_id: Option<String>,
    pub submitted_at: String,
    /// The whole record, JSON.
    pub record: String,
}

/// A plan's row as [`PgStore::decide_plan`] found it, locked: its record and the receipt
/// its `receipt_id` names, if any.
pub struct LockedPlan {
    pub record: String,
    pub stored_receipt: Option<Vec<u8>>,
}

/// What a decision stores: the plan's new row, and the receipt (id, bytes) it now names.
pub struct PlanChange {
    pub row: PlanRow,
    pub receipt: Option<(String, Vec<u8>)>,
}

/// Announces a change of plan `id` to every replica when the transaction commits.
async fn announce(client: &impl tokio_postgres::GenericClient, id: &str) -> Result<(), String> {
    client
        .execute("SELECT pg_notify($1, $2)", &[&PLANS_CHANNEL, &id])
        .await
        .map_err(db_error)
        .map(|_| ())
}

/// `row` as a new row of `airlock_plans` (a submission, or `airlock db import`).
pub(crate) async fn insert_row(
    client: &impl tokio_postgres::GenericClient,
    row: &PlanRow,
) -> Result<(), String> {
    client
        .execute(
            "INSERT INTO airlock_plans (id, status, agent, receipt_id, submitted_at, record)
             VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)",
            &[
                &row.id,
                &row.status,
                &row.agent,
                &row.receipt_id,
                &row.submitted_at,
                &row.record,
            ],
        )
        .await
        .map_err(db_error)
        .map(|_| ())
}

impl PgStore {
    /// Stores a newly submitted plan and announces it.
    pub async fn insert_plan(&self, row: &PlanRow) -> Result<(), String> {
        let mut client = self.pool.get().await.map_err(db_error)?;
        let tx = client.transaction().await.map_err(db_error)?;
        insert_row(&*tx, row).await?;
        announce(&*tx, &row.id).await?;
        tx.commit().await.map_err(db_error)
    }

    /// One plan's record, if there is such a plan.
    pub async fn plan_record(&self, id: &str) -> Result<Option<String>, String> {
        let client = self.pool.get().await.map_err(db_error)?;
        let row = client
            .query_opt(
                "SELECT record::text FROM airlock_plans WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// One plan's status (`None`: no such plan): one primary-key lookup, what the proxy
    /// asks before it uses an entry of a plan its index holds.
    pub async fn plan_status(&self, id: &str) -> Result<Option<String>, String> {
        let client = self.pool.get().await.map_err(db_error)?;
        let row = client
            .query_opt("SELECT status FROM airlock_plans WHERE id = $1", &[&id])
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Every plan's record, newest first.
    pub async fn plan_records(&self) -> Result<Vec<String>, String> {
        let client = self.pool.get().await.map_err(db_error)?;
        let rows = client
            .query(
                "SELECT record::text FROM airlock_plans ORDER BY submitted_at DESC, id",
                &[],
            )
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Every approved plan's record with the bytes of the receipt it names (`None`: no such
    /// receipt), in one query: what the plan index is loaded from.
    pub async fn approved_plans(&self) -> Result<Vec<(String, Option<Vec<u8>>)>, String> {
        let client = self.pool.get().await.map_err(db_error)?;
        let rows = client
            .query(
                "SELECT p.record::text, r.receipt FROM airlock_plans p
                 LEFT JOIN airlock_receipts r ON r.id = p.receipt_id
                 WHERE p.status = 'approved'
                 ORDER BY p.submitted_at DESC, p.id",
                &[],
            )
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// A stored receipt's bytes, if there is such a receipt.
    pub async fn plan_receipt(&self, receipt_id: &str) -> Result<Option<Vec<u8>>, String> {
        let client = self.pool.get().await.map_err(db_error)?;
        match receipt_in(&**client, receipt_id).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(crate::state::approvals::ApprovalError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Decides plan `id` with its row locked until the transaction ends, so nothing else
    /// changes it meanwhile, on any replica: `step` gets the plan as stored (`None`: there is
    /// no such plan) and says what to store, and what to return. The change is announced at
    /// commit. Database errors are made into `E` by `to_error`.
    pub async fn decide_plan<T, E>(
        &self,
        id: &str,
        to_error: impl Fn(String) -> E + Send,
        step: impl FnOnce(Option<LockedPlan>) -> Result<(PlanChange, T), E> + Send,
    ) -> Result<T, E> {
        let db = |e: tokio_postgres::Error| to_error(db_error(e));
        let mut client = self.pool.get().await.map_err(|e| to_error(db_error(e)))?;
        let tx = client.transaction().await.map_err(db)?;
        let found = tx
            .query_opt(
                "SELECT record::text, receipt_id FROM airlock_plans WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(db)?;
        // The receipt of the quorum under way: the only one a decision may replace.
        let under_way: Option<String> = found.as_ref().and_then(|row| row.get(1));
        let locked = match found {
            None => None,
            Some(row) => {
                let stored_receipt = match &under_way {
                    None => None,
                    Some(r) => Some(
                        receipt_in(&*tx, r)
                            .await
                            .map_err(|e| to_error(e.to_string()))?,
                    ),
                };
                Some(LockedPlan {
                    record: row.get(0),
                    stored_receipt,
                })
            }
        };
        let (change, out) = step(locked)?;
        if let Some((receipt_id, receipt)) = &change.receipt {
            // The quorum's receipt, joined by one more signature, is stored over itself;
            // any other id is new, and one that clashes with a stored receipt is an error
            // (a decision never overwrites a receipt it does not own).
            let statement = if under_way.as_ref() == Some(receipt_id) {
                "INSERT INTO airlock_receipts (id, receipt) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET receipt = EXCLUDED.receipt, stored_at = now()"
            } else {
                "INSERT INTO airlock_receipts (id, receipt) VALUES ($1, $2)"
            };
            tx.execute(statement, &[receipt_id, receipt])
                .await
                .map_err(db)?;
        }
        let row = &change.row;
        tx.execute(
            "UPDATE airlock_plans SET status = $2, agent = $3, receipt_id = $4,
                record = $5::text::jsonb, updated_at = now()
             WHERE id = $1",
            &[&id, &row.status, &row.agent, &row.receipt_id, &row.record],
        )
        .await
        .map_err(db)?;
        announce(&*tx, id).await.map_err(&to_error)?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    /// Moves plan `id` from status `from` to `to` (an approved plan spent or expired), and
    /// announces it. False when it was not in `from` (another replica ended it first), so
    /// the end is recorded once.
    pub async fn end_plan(&self, id: &str, from: &str, to: &str) -> Result<bool, String> {
        let mut client = self.pool.get().await.map_err(db_error)?;
        let tx = client.transaction().await.map_err(db_error)?;
        let changed = tx
            .execute(
                "UPDATE airlock_plans
                 SET status = $3, record = jsonb_set(record, '{status}', to_jsonb($3::text)),
                     updated_at = now()
                 WHERE id = $1 AND status = $2",
                &[&id, &from, &to],
            )
            .await
            .map_err(db_error)?;
        if changed == 0 {
            return Ok(false);
        }
        announce(&*tx, id).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }
}

/// Calls `reload` whenever a plan may have changed on any replica: once the connection on
/// `LISTEN` is made (what changed while nobody listened), on every notification (several
/// arriving during one reload make one more), every [`PLANS_POLL`] while there is no such
/// connection (it is made again every few seconds) or the last reload failed (it said
/// `false`), and every [`PLANS_REFRESH`] in any case. Runs until aborted; needs a Tokio
/// runtime.
pub fn follow<F, Fut>(url: &Secret, reload: F) -> Result<tokio::task::AbortHandle, String>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let config = listen_config(url)?;
    let tls = tls()?;
    let changed = Arc::new(Notify::new());
    let listening = Arc::new(AtomicBool::new(false));
    let listener = {
        let (changed, listening) = (Arc::clone(&changed), Arc::clone(&listening));
        async move {
            loop {
                // Listening from the first wake-up `listen_once` gives (it wakes once its
                // `LISTEN` is in place); until then, and once it ended, the reloader polls.
                let established = changed.notified();
                pin_mut!(established);
                established.as_mut().enable();
                let heard = |_: Option<&str>| changed.notify_waiters();
                let listen = listen_once(&config, tls.clone(), PLANS_CHANNEL, &heard);
                pin_mut!(listen);
                let ended = tokio::select! {
                    ended = &mut listen => ended,
                    _ = established => {
                        listening.store(true, Ordering::SeqCst);
                        listen.await
                    }
                };
                listening.store(false, Ordering::SeqCst);
                changed.notify_waiters();
                if let Err(e) = ended {
                    tracing::warn!(error = %e, poll = ?PLANS_POLL, "not listening for plans changed on other replicas; polling until the connection is back");
                }
                tokio::time::sleep(LISTEN_RETRY).await;
            }
        }
    };
    let reloader = async move {
        loop {
            // Registered before the reload, so a change announced during it is not missed.
            let woken = changed.notified();
            pin_mut!(woken);
            woken.as_mut().enable();
            let read = reload().await;
            let next = if read && listening.load(Ordering::SeqCst) {
                PLANS_REFRESH
            } else {
                PLANS_POLL
            };
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(next) => {}
            }
        }
    };
    let task = tokio::spawn(async move {
        futures_util::future::join(listener, reloader).await;
    });
    Ok(task.abort_handle())
}
