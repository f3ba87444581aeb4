//! The gate: what stands between a call that needs a human's approval and AWS, shared by
//! the request path (`proxy::redeem`) and the approval page (`approvals`).
//!
//! It owns the store (pending and decided approvals, their receipts, the single-use
//! ledger, the audit log: in files or in PostgreSQL), the calls held while a human
//! decides, and the keys a receipt may be signed with. It knows nothing of HTTP clients, agents or AWS credentials:
//! those are the proxy's ([`crate::proxy::Proxy`]). The approval page takes a gate, not a
//! proxy, so it can reach only what deciding an approval needs.

use crate::config::Config;
use crate::store::Store;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use tokio::sync::{Mutex, Semaphore};

pub struct Gate {
    pub config: Arc<Config>,
    /// What must hold across replicas: the ledger, the audit chain, the approvals the
    /// request path opens and waits on and the page lists and decides, the revocation
    /// lookups ([`crate::store`]).
    pub store: Arc<dyn Store>,
    /// The approved Terraform plans, in memory (`plan::index`), and where plans are kept
    /// (`PlanIndex::plans`: the files, or with a database `PlanIndex::follow`).
    pub plans: Arc<crate::plan::index::PlanIndex>,
    /// Slots for calls held while a human decides (`[approval] max_held`).
    held: Semaphore,
    /// One lock per receipt: identical calls under one receipt go one at a time.
    receipt_locks: DashMap<String, Arc<Mutex<()>>>,
    /// The approval page's bound port, for links.
    approvals_port: AtomicU16,
}

impl Gate {
    /// Opens the store the config names ([`crate::store::for_serve`]: the files, or
    /// PostgreSQL, reached in the background and listened to) and starts the audit writer.
    pub async fn open(config: Arc<Config>) -> Result<Gate, String> {
        let (store, postgres) = crate::store::for_serve(Arc::clone(&config)).await?;
        let plans = match (postgres, &config.database_url) {
            (Some(pg), Some(url)) => crate::plan::index::PlanIndex::follow(pg, url)?,
            _ => crate::plan::index::PlanIndex::load(&config.state_dir)
                .map(Arc::new)
                .map_err(|e| e.to_string())?,
        };
        let gate = Gate {
            store,
            plans,
            held: Semaphore::new(config.approval.max_held),
            receipt_locks: DashMap::new(),
            approvals_port: AtomicU16::new(config.approvals_addr.port()),
            config,
        };
        // The keys are read per gated call (a passkey enrolled while serving counts at
        // once); the files' are read here too so a bad set fails at start. A database may
        // be down now: its keys are checked on first use (failing closed).
        if gate.config.database_url.is_none() {
            crate::signing::trusted_keys(&gate.config)?;
        }
        Ok(gate)
    }

    pub fn set_approvals_port(&self, port: u16) {
        self.approvals_port.store(port, Ordering::Relaxed);
    }

    pub fn approvals_port(&self) -> u16 {
        self.approvals_port.load(Ordering::Relaxed)
    }

    /// The link a human opens for an approval.
    pub fn approval_link(&self, id: &str) -> String {
        self.config.approval_link(self.approvals_port(), id)
    }

    /// Calls held now while a human decides (the metrics' gauge).
    pub fn held_calls(&self) -> usize {
        let max_held = self.config.approval.max_held;
        max_held.saturating_sub(self.held.available_permits())
    }

    /// Tells the calls held on this approval that it was decided.
    pub fn approvals_decided(&self) {
        self.store.approval_resolved();
    }

    /// The lock that lets identical calls under one receipt go one at a time.
    pub(crate) fn receipt_lock(&self, receipt_id: &str) -> Arc<Mutex<()>> {
        Arc::clone(
            self.receipt_locks
                .entry(receipt_id.to_string())
                .or_default()
                .value(),
        )
    }

    /// Holds a blocked call while a human decides: true when the approval was decided
    /// within `[approval] hold_seconds`. No thread per held call: the store wakes it
    /// ([`Store::wait_resolved`]). At most
    /// `[approval] max_held` calls wait; the rest are answered at once.
    pub(crate) async fn hold(&self, approval_id: &str) -> bool {
        let hold = self.config.approval.hold;
        if hold.is_zero() {
            return false;
        }
        let Ok(_slot) = self.held.try_acquire() else {
            tracing::warn!(approval = %approval_id, "too many calls held; answering at once");
            return false;
        };
        let deadline = tokio::time::Instant::now() + hold;
        self.store.wait_resolved(approval_id, deadline).await
    }
}
