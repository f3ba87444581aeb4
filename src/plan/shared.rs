//! Where submitted plans are kept, behind one interface ([`Plans`]): the files of `[state]
//! dir` ([`PlanStore`], exactly as before), or PostgreSQL with `[state] database_url`
//! ([`PgStore`], over `store::postgres::plans`), so a plan submitted or decided through one
//! replica is the plan every replica sees and honours.
//!
//! Both keep the same records and run the same decision code: [`Plans::sign`] hands the plan
//! as stored, with the receipt of its quorum under way, to a step (`plan::quorum::record`)
//! and stores what it returns, with nothing else changing the plan meanwhile (the files'
//! lock, or the row locked in a transaction, on any replica).

use super::store::{ApprovedRecord, PlanRecord, PlanSigned, PlanStatus, PlanStore, PlanStoreError};
use crate::store::postgres::plans::{LockedPlan, PlanChange, PlanRow};
use crate::store::postgres::PgStore;
use futures_util::future::BoxFuture;

/// One approver's decision on a plan: given the plan as stored and the receipt of its
/// quorum under way (`None`: none), what to store.
pub type PlanSignStep<'a> =
    Box<dyn FnOnce(&PlanRecord, Option<Vec<u8>>) -> Result<PlanSigned, PlanStoreError> + Send + 'a>;

/// The submitted plans and their receipts.
pub trait Plans: Send + Sync {
    /// Stores a newly submitted plan under a fresh id, pending.
    fn submit(&self, record: PlanRecord) -> BoxFuture<'_, Result<PlanRecord, PlanStoreError>>;
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<PlanRecord, PlanStoreError>>;
    /// A plan's status as stored now (not as of its window: see [`PlanRecord::status_at`]).
    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<PlanStatus, PlanStoreError>>;
    /// Every plan, newest first.
    fn list(&self) -> BoxFuture<'_, Result<Vec<PlanRecord>, PlanStoreError>>;
    /// Records one approver's decision on a pending plan ([`PlanSignStep`]);
    /// [`PlanStoreError::NotPending`] when it was decided already.
    fn sign<'a>(
        &'a self,
        id: &'a str,
        step: PlanSignStep<'a>,
    ) -> BoxFuture<'a, Result<PlanRecord, PlanStoreError>>;
    /// Ends an approved plan (spent or expired). False when it was no longer approved.
    fn end<'a>(
        &'a self,
        id: &'a str,
        status: PlanStatus,
    ) -> BoxFuture<'a, Result<bool, PlanStoreError>>;
    fn read_receipt<'a>(
        &'a self,
        receipt_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, PlanStoreError>>;
    /// Every approved plan with its receipt, newest first (what `plan::index` holds).
    fn approved(&self) -> BoxFuture<'_, Result<Vec<ApprovedRecord>, PlanStoreError>>;
    /// Where a receipt is kept, for people: its file, or the database.
    fn receipt_location(&self, receipt_id: &str) -> String;
}

impl Plans for PlanStore {
    fn submit(&self, record: PlanRecord) -> BoxFuture<'_, Result<PlanRecord, PlanStoreError>> {
        Box::pin(async move { PlanStore::submit(self, record) })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<PlanRecord, PlanStoreError>> {
        Box::pin(async move { PlanStore::get(self, id) })
    }

    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<PlanStatus, PlanStoreError>> {
        Box::pin(async move { PlanStore::get(self, id).map(|p| p.status) })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<PlanRecord>, PlanStoreError>> {
        Box::pin(async move { PlanStore::list(self) })
    }

    fn sign<'a>(
        &'a self,
        id: &'a str,
        step: PlanSignStep<'a>,
    ) -> BoxFuture<'a, Result<PlanRecord, PlanStoreError>> {
        Box::pin(async move { PlanStore::sign(self, id, step) })
    }

    fn end<'a>(
        &'a self,
        id: &'a str,
        status: PlanStatus,
    ) -> BoxFuture<'a, Result<bool, PlanStoreError>> {
        Box::pin(async move { PlanStore::end(self, id, status) })
    }

    fn read_receipt<'a>(
        &'a self,
        receipt_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, PlanStoreError>> {
        Box::pin(async move { PlanStore::read_receipt(self, receipt_id) })
    }

    fn approved(&self) -> BoxFuture<'_, Result<Vec<ApprovedRecord>, PlanStoreError>> {
        Box::pin(async move { PlanStore::approved(self) })
    }

    fn receipt_location(&self, receipt_id: &str) -> String {
        self.receipt_path(receipt_id).display().to_string()
    }
}

fn db_error(e: String) -> PlanStoreError {
    PlanStoreError::Io("the plans in PostgreSQL".into(), std::io::Error::other(e))
}

fn parse(record: &str) -> Result<PlanRecord, PlanStoreError> {
    serde_json::from_str(record)
        .map_err(|e| PlanStoreError::Corrupt("a plan in PostgreSQL".into(), e))
}

fn row_of(p: &PlanRecord) -> Result<PlanRow, PlanStoreError> {
    Ok(PlanRow {
        id: p.id.clone(),
        status: p.status.as_str().to_owned(),
        agent: p.agent.clone(),
        receipt_id: p.receipt_id.clone(),
        submitted_at: p.submitted_at.clone(),
        record: serde_json::to_string(p)
            .map_err(|e| PlanStoreError::Corrupt("a plan for PostgreSQL".into(), e))?,
    })
}

impl Plans for PgStore {
    fn submit(&self, record: PlanRecord) -> BoxFuture<'_, Result<PlanRecord, PlanStoreError>> {
        Box::pin(async move {
            let record = record.submitted_now();
            self.insert_plan(&row_of(&record)?)
                .await
                .map_err(db_error)?;
            Ok(record)
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<PlanRecord, PlanStoreError>> {
        Box::pin(async move {
            match self.plan_record(id).await.map_err(db_error)? {
                Some(record) => parse(&record),
                None => Err(PlanStoreError::NotFound(id.to_owned())),
            }
        })
    }

    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<PlanStatus, PlanStoreError>> {
        Box::pin(async move {
            let status = self
                .plan_status(id)
                .await
                .map_err(db_error)?
                .ok_or_else(|| PlanStoreError::NotFound(id.to_owned()))?;
            PlanStatus::parse(&status).ok_or_else(|| {
                db_error(format!(
                    "plan {id} has a status airlock does not know: {status:?}"
                ))
            })
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<PlanRecord>, PlanStoreError>> {
        Box::pin(async move {
            self.plan_records()
                .await
                .map_err(db_error)?
                .iter()
                .map(|r| parse(r))
                .collect()
        })
    }

    fn sign<'a>(
        &'a self,
        id: &'a str,
        step: PlanSignStep<'a>,
    ) -> BoxFuture<'a, Result<PlanRecord, PlanStoreError>> {
        Box::pin(
            self.decide_plan(id, db_error, move |locked: Option<LockedPlan>| {
                let locked = locked.ok_or_else(|| PlanStoreError::NotFound(id.to_owned()))?;
                let mut p = parse(&locked.record)?;
                p.check_pending()?;
                let signed = step(&p, locked.stored_receipt)?;
                let receipt = p.take_signed(signed);
                Ok((
                    PlanChange {
                        row: row_of(&p)?,
                        receipt: Some(receipt),
                    },
                    p,
                ))
            }),
        )
    }

    fn end<'a>(
        &'a self,
        id: &'a str,
        status: PlanStatus,
    ) -> BoxFuture<'a, Result<bool, PlanStoreError>> {
        Box::pin(async move {
            self.end_plan(id, PlanStatus::Approved.as_str(), status.as_str())
                .await
                .map_err(db_error)
        })
    }

    fn read_receipt<'a>(
        &'a self,
        receipt_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, PlanStoreError>> {
        Box::pin(async move {
            self.plan_receipt(receipt_id)
                .await
                .map_err(db_error)?
                .ok_or_else(|| PlanStoreError::NotFound(format!("receipt {receipt_id}")))
        })
    }

    fn approved(&self) -> BoxFuture<'_, Result<Vec<ApprovedRecord>, PlanStoreError>> {
        Box::pin(async move {
            let rows = self.approved_plans().await.map_err(db_error)?;
            let mut out = Vec::with_capacity(rows.len());
            for (record, receipt) in rows {
                // A record that does not read covers nothing; the others still count.
                match parse(&record) {
                    Ok(p) => out.push((p, receipt.ok_or_else(|| "no such receipt".to_owned()))),
                    Err(e) => {
                        tracing::error!(error = %e, "a plan in PostgreSQL does not read; it covers nothing")
                    }
                }
            }
            Ok(out)
        })
    }

    fn receipt_location(&self, receipt_id: &str) -> String {
        format!("{receipt_id} (in PostgreSQL: airlock_receipts)")
    }
}

/// For tests over the files: their steps never wait, so each is done when first polled.
#[cfg(test)]
pub(crate) fn at_once<T>(step: impl std::future::Future<Output = T>) -> T {
    futures_util::FutureExt::now_or_never(step).expect("a step over the files never waits")
}
