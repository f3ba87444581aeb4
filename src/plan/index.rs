//! The approved plans the proxy looks in, kept in memory so that a gated call costs a map
//! lookup instead of reading and parsing every plan and receipt.
//!
//! Where plans are kept stays the source of truth ([`Plans`]); the index follows it:
//!
//! - **Files** ([`PlanIndex::load`]): loaded at start, and read again whenever the plans
//!   directory has changed since (a plan submitted, approved on the page or by `airlock plan
//!   approve` in another process, spent, expired or edited by hand: each rewrites a file
//!   there, which changes the directory's modification time). A directory changed so
//!   recently that a further change could share its timestamp (coarse file-system clocks) is
//!   read again on every lookup until it is older than [`RACY_MARGIN`], so no change is
//!   missed.
//! - **PostgreSQL** ([`PlanIndex::follow`]): loaded from the database, and loaded again by a
//!   task of its own whenever a replica announces a plan change (`NOTIFY`, sent in the
//!   changing transaction), every second while it cannot listen or its last load failed,
//!   and every few seconds in any case (`store::postgres::plans::follow`). A lookup never
//!   waits on the database.
//!
//! The proxy also drops a plan it ends itself at once ([`PlanIndex::remove`]). What the index
//! holds is parsed, not verified: the proxy verifies a receipt's signatures (against the keys
//! trusted at that moment) before one of its entries is used.

use super::shared::Plans;
use super::store::{ApprovedRecord, PlanStore, PlanStoreError};
use crate::receipt::Receipt;
use crate::secret::Secret;
use crate::store::postgres::PgStore;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// How old the plans directory's modification time must be before the index trusts it.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);

/// A plan whose file says approved (its receipt's window may have ended since).
#[derive(Debug)]
pub struct ApprovedPlan {
    pub plan_id: String,
    pub receipt_id: String,
    /// The stored receipt, parsed, not verified.
    pub receipt: Receipt,
}

/// `(agent, service, operation)`.
type ActionKey = (String, String, String);

#[derive(Default)]
struct Loaded {
    /// Files: the plans directory's modification time when it was read, if old enough to
    /// trust; `None`: read it again at the next lookup. (Unused with a database.)
    seen: Option<SystemTime>,
    /// The approved plans of an agent with an entry for the action, newest first.
    by_action: HashMap<ActionKey, Vec<Arc<ApprovedPlan>>>,
    /// How many times the plans were read (for tests and the log).
    loads: u64,
    /// One sequence for reads started and plans removed, so their order is known.
    epoch: u64,
    /// The epoch at which the plans held were read (the read's start).
    read_at: u64,
    /// Plans the proxy removed, with the epoch of each removal, until a read started after
    /// it is held: a read that started before may still hold the plan (its end was not yet
    /// committed), and must not put it back.
    removed: Vec<(u64, String)>,
}

impl Loaded {
    /// The next epoch: a read starting, or a removal.
    fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    /// Holds `fresh`, read from the epoch `started` on, unless a read started later is held
    /// already; without the plans removed since it started.
    fn hold(&mut self, started: u64, mut fresh: HashMap<ActionKey, Vec<Arc<ApprovedPlan>>>) {
        if started < self.read_at {
            return;
        }
        self.removed.retain(|(at, _)| *at > started);
        for (_, plan_id) in &self.removed {
            without(&mut fresh, plan_id);
        }
        self.read_at = started;
        self.by_action = fresh;
        self.loads += 1;
    }
}

/// `by_action` without plan `plan_id`.
fn without(by_action: &mut HashMap<ActionKey, Vec<Arc<ApprovedPlan>>>, plan_id: &str) {
    for plans in by_action.values_mut() {
        plans.retain(|p| p.plan_id != plan_id);
    }
    by_action.retain(|_, plans| !plans.is_empty());
}

/// Where the plans are, and how the index learns of changes.
enum Source {
    /// `state/plans/`: read again at a lookup when the directory changed.
    Files {
        store: Arc<PlanStore>,
        plans_dir: PathBuf,
    },
    /// PostgreSQL: reloaded by the following task ([`PlanIndex::follow`]), ended with the
    /// index.
    Database {
        store: Arc<PgStore>,
        follower: Mutex<Option<tokio::task::AbortHandle>>,
    },
}

pub struct PlanIndex {
    source: Source,
    loaded: Mutex<Loaded>,
}

impl Drop for PlanIndex {
    fn drop(&mut self) {
        if let Source::Database { follower, .. } = &self.source {
            if let Some(task) = follower.lock().ok().and_then(|mut f| f.take()) {
                task.abort();
            }
        }
    }
}

/// The index of `approved` plans by agent and action (the order kept: newest first).
fn by_action(approved: Vec<ApprovedRecord>) -> HashMap<ActionKey, Vec<Arc<ApprovedPlan>>> {
    let mut by_action: HashMap<ActionKey, Vec<Arc<ApprovedPlan>>> = HashMap::new();
    for (record, receipt) in approved {
        // An approved plan past its window stays until a call it would cover finds it so:
        // the proxy then records it expired (`plan_expired`) and drops it.
        let Some(receipt_id) = record.receipt_id.clone() else {
            continue;
        };
        let parsed =
            receipt.and_then(|bytes| Receipt::from_json(&bytes).map_err(|e| e.to_string()));
        let receipt = match parsed {
            Ok(r) => r,
            Err(e) => {
                // It covers nothing; its calls are held or refused as without a plan.
                tracing::error!(plan = %record.id, receipt = %receipt_id, error = %e, "a stored plan receipt cannot be read; it covers nothing");
                continue;
            }
        };
        let mut actions: Vec<(String, String)> = receipt
            .body
            .plan
            .iter()
            .flat_map(|g| g.entries.iter())
            .map(|e| (e.service.clone(), e.operation.clone()))
            .collect();
        actions.sort();
        actions.dedup();
        let plan = Arc::new(ApprovedPlan {
            plan_id: record.id.clone(),
            receipt_id,
            receipt,
        });
        for (service, operation) in actions {
            by_action
                .entry((record.agent.clone(), service, operation))
                .or_default()
                .push(Arc::clone(&plan));
        }
    }
    by_action
}

impl PlanIndex {
    /// Reads the approved plans of `state_dir` (creating its plans directory if need be).
    pub fn load(state_dir: &std::path::Path) -> Result<PlanIndex, PlanStoreError> {
        let index = PlanIndex {
            source: Source::Files {
                store: Arc::new(PlanStore::open(state_dir)?),
                plans_dir: state_dir.join("plans"),
            },
            loaded: Mutex::new(Loaded::default()),
        };
        index.refresh(&mut index.lock())?;
        Ok(index)
    }

    /// The approved plans in the database of `store` (at `url`), followed by a task that
    /// loads them at once, then again on every change any replica announces, every second
    /// while the announcements cannot be heard or the last load failed, and every few
    /// seconds in any case. Until the first load (or while the
    /// database cannot be read at start) the index is empty: a call a plan would cover is
    /// held or refused as without one. Needs a Tokio runtime (not an async caller).
    pub fn follow(store: Arc<PgStore>, url: &Secret) -> Result<Arc<PlanIndex>, String> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("following the plans in PostgreSQL needs a Tokio runtime".into());
        }
        let index = Arc::new(PlanIndex {
            source: Source::Database {
                store,
                follower: Mutex::new(None),
            },
            loaded: Mutex::new(Loaded::default()),
        });
        // The task holds the index weakly: dropping the index ends it. A database that stays
        // unreadable is logged once, and again when it can be read.
        let weak = Arc::downgrade(&index);
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = crate::store::postgres::plans::follow(url, move || {
            let (weak, failing) = (weak.clone(), Arc::clone(&failing));
            async move {
                // Gone: nothing to read for, so nothing failed.
                let Some(index) = weak.upgrade() else {
                    return true;
                };
                let result = index.reload().await;
                let was_failing =
                    failing.swap(result.is_err(), std::sync::atomic::Ordering::SeqCst);
                match &result {
                    Err(e) if !was_failing => {
                        tracing::warn!(error = %e, "the approved plans cannot be read from PostgreSQL; the index keeps what it had until they can")
                    }
                    Ok(()) if was_failing => {
                        tracing::info!("the approved plans are read from PostgreSQL again")
                    }
                    _ => {}
                }
                // A failed read is tried again every second, notification or not.
                result.is_ok()
            }
        })?;
        if let Source::Database { follower, .. } = &index.source {
            *follower.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
        Ok(index)
    }

    /// Where the plans are kept: the page, the commands and the proxy submit, decide and end
    /// plans through it.
    pub fn plans(&self) -> Arc<dyn Plans> {
        match &self.source {
            Source::Files { store, .. } => Arc::clone(store) as Arc<dyn Plans>,
            Source::Database { store, .. } => Arc::clone(store) as Arc<dyn Plans>,
        }
    }

    /// Reads every approved plan again, now, and replaces the index with them.
    /// A plan the proxy removed meanwhile stays out if this read may predate its end.
    pub async fn reload(&self) -> Result<(), PlanStoreError> {
        let started = self.lock().next_epoch();
        let fresh = by_action(self.plans().approved().await?);
        self.lock().hold(started, fresh);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Loaded> {
        // A panic while the index was being replaced leaves it marked for a reload.
        self.loaded.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            guard.seen = None;
            guard
        })
    }

    /// Files: reads them again if the plans directory changed since they were read. With a
    /// database, nothing: the following task reloads.
    fn refresh(&self, loaded: &mut Loaded) -> Result<(), PlanStoreError> {
        let Source::Files { store, plans_dir } = &self.source else {
            return Ok(());
        };
        let now = SystemTime::now();
        let modified = std::fs::metadata(plans_dir)
            .and_then(|m| m.modified())
            .map_err(|e| PlanStoreError::Io(plans_dir.display().to_string(), e))?;
        if loaded.seen == Some(modified) {
            return Ok(());
        }
        // Read under the lock, after every removal so far.
        let started = loaded.next_epoch();
        loaded.hold(started, by_action(store.approved()?));
        // Trusted only once no later change can share the timestamp read.
        let settled = now
            .duration_since(modified)
            .is_ok_and(|age| age >= RACY_MARGIN);
        loaded.seen = settled.then_some(modified);
        Ok(())
    }

    /// The approved plans of `agent` with an entry for `service:operation`, newest first.
    pub fn lookup(
        &self,
        agent: &str,
        service: &str,
        operation: &str,
    ) -> Result<Vec<Arc<ApprovedPlan>>, PlanStoreError> {
        let mut loaded = self.lock();
        self.refresh(&mut loaded)?;
        let key = (agent.to_owned(), service.to_owned(), operation.to_owned());
        Ok(loaded.by_action.get(&key).cloned().unwrap_or_default())
    }

    /// Drops a plan the proxy ends (spent or expired), also from the result of any read
    /// already under way: the proxy calls it before the end (to stop using the plan at once)
    /// and again once the end is stored (so no read from before it puts the plan back).
    pub fn remove(&self, plan_id: &str) {
        let mut loaded = self.lock();
        let at = loaded.next_epoch();
        loaded.removed.push((at, plan_id.to_owned()));
        without(&mut loaded.by_action, plan_id);
    }

    /// How many times the plans were read.
    pub fn loads(&self) -> u64 {
        self.lock().loads
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
