//! The approved plans the proxy looks in, kept in memory so that a gated call costs a map
//! lookup instead of reading and parsing every plan file and receipt.
//!
//! The files (`state/plans/`, `state/receipts/`) stay the source of truth: the index is
//! loaded from them at start, and read again whenever the plans directory has changed since
//! (a plan submitted, approved on the page or by `airlock plan approve` in another process,
//! spent, expired or edited by hand: each rewrites a file there, which changes the
//! directory's modification time). A directory changed so recently that a further change
//! could share its timestamp (coarse file-system clocks) is read again on every lookup until
//! it is older than [`RACY_MARGIN`], so no change is missed. The proxy also drops a plan it
//! ends itself at once ([`PlanIndex::remove`]).
//!
//! What the index holds is parsed, not verified: the proxy verifies a receipt's signatures
//! (against the keys trusted at that moment) before one of its entries is used.

use super::store::{PlanStatus, PlanStore, PlanStoreError};
use crate::receipt::Receipt;
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
    /// The plans directory's modification time when it was read, if old enough to trust;
    /// `None`: read it again at the next lookup.
    seen: Option<SystemTime>,
    /// The approved plans of an agent with an entry for the action, newest first.
    by_action: HashMap<ActionKey, Vec<Arc<ApprovedPlan>>>,
    /// How many times the files were read (for tests and the log).
    loads: u64,
}

pub struct PlanIndex {
    state_dir: PathBuf,
    plans_dir: PathBuf,
    loaded: Mutex<Loaded>,
}

impl PlanIndex {
    /// Reads the approved plans of `state_dir` (creating its plans directory if need be).
    pub fn load(state_dir: &std::path::Path) -> Result<PlanIndex, PlanStoreError> {
        PlanStore::open(state_dir)?;
        let index = PlanIndex {
            state_dir: state_dir.to_path_buf(),
            plans_dir: state_dir.join("plans"),
            loaded: Mutex::new(Loaded::default()),
        };
        index.refresh(&mut index.lock())?;
        Ok(index)
    }

    fn lock(&self) -> MutexGuard<'_, Loaded> {
        // A panic while the index was being replaced leaves it marked for a reload.
        self.loaded.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            guard.seen = None;
            guard
        })
    }

    fn dir_modified(&self) -> Result<SystemTime, PlanStoreError> {
        std::fs::metadata(&self.plans_dir)
            .and_then(|m| m.modified())
            .map_err(|e| PlanStoreError::Io(self.plans_dir.display().to_string(), e))
    }

    /// Reads the files again if the plans directory changed since they were read.
    fn refresh(&self, loaded: &mut Loaded) -> Result<(), PlanStoreError> {
        let now = SystemTime::now();
        let modified = self.dir_modified()?;
        if loaded.seen == Some(modified) {
            return Ok(());
        }
        let store = PlanStore::open(&self.state_dir)?;
        let mut by_action: HashMap<ActionKey, Vec<Arc<ApprovedPlan>>> = HashMap::new();
        for record in store.list()? {
            // An approved plan past its window stays until a call it would cover finds it
            // so: the proxy then records it expired (`plan_expired`) and drops it.
            if record.status != PlanStatus::Approved {
                continue;
            }
            let Some(receipt_id) = record.receipt_id.clone() else {
                continue;
            };
            let parsed = match crate::receipt::ReceiptId::parse(&receipt_id) {
                Some(_) => store
                    .read_receipt(&receipt_id)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| Receipt::from_json(&bytes).map_err(|e| e.to_string())),
                None => Err("not a receipt id".to_owned()),
            };
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
        loaded.by_action = by_action;
        loaded.loads += 1;
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

    /// Drops a plan the proxy ended (spent or expired).
    pub fn remove(&self, plan_id: &str) {
        let mut loaded = self.lock();
        for plans in loaded.by_action.values_mut() {
            plans.retain(|p| p.plan_id != plan_id);
        }
        loaded.by_action.retain(|_, plans| !plans.is_empty());
    }

    /// How many times the files were read.
    pub fn loads(&self) -> u64 {
        self.lock().loads
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
