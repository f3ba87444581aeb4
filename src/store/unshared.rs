//! TEMPORARY, for tests while the rest of the state moves into PostgreSQL (this commit is
//! dropped when that is merged): with `AIRLOCK_TEST_UNSHARED_OK=1`, `serve` starts with a
//! `database_url` although agents, passkeys, enrollments, revocations and plans are still
//! in `[state] dir` (replicas then share that directory), and the PostgreSQL store takes
//! the trusted keys and agent revocations from the files.

use super::{BlockedCall, SignStep, Store};
use crate::audit::Fields;
use crate::config::Config;
use crate::receipt::TrustedKeys;
use crate::state::approvals::{Approval, ApprovalError};
use crate::state::ledger::LedgerError;
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// The variable that lets `serve` run on a database that does not hold all the state.
pub const ESCAPE_HATCH: &str = "AIRLOCK_TEST_UNSHARED_OK";

pub fn allowed() -> bool {
    std::env::var(ESCAPE_HATCH).as_deref() == Ok("1")
}

/// `inner` (PostgreSQL), with the parts not yet in it read from the files.
pub fn wrap(inner: Arc<dyn Store>, config: Arc<Config>) -> Result<Arc<dyn Store>, String> {
    if !allowed() {
        return Ok(inner);
    }
    let files = super::files::FileStore::for_command(config)?;
    Ok(Arc::new(Unshared { inner, files }))
}

struct Unshared {
    inner: Arc<dyn Store>,
    /// Where the trusted keys and the agents' revocations are read.
    files: super::files::FileStore,
}

impl Store for Unshared {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn reserve<'a>(&'a self, key: &'a str, allowed: u32) -> BoxFuture<'a, Result<(), LedgerError>> {
        self.inner.reserve(key, allowed)
    }
    fn commit<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), LedgerError>> {
        self.inner.commit(key)
    }
    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), LedgerError>> {
        self.inner.release(key)
    }
    fn committed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u32, LedgerError>> {
        self.inner.committed(key)
    }
    fn audit_append(&self, record: Fields) -> BoxFuture<'_, bool> {
        self.inner.audit_append(record)
    }
    fn audit_append_durable(&self, record: Fields) -> BoxFuture<'_, bool> {
        self.inner.audit_append_durable(record)
    }
    fn audit_sync(&self) -> BoxFuture<'_, Result<(), String>> {
        self.inner.audit_sync()
    }
    fn audit_writable(&self) -> bool {
        self.inner.audit_writable()
    }
    fn audit_health(&self) -> BoxFuture<'_, Result<(), String>> {
        self.inner.audit_health()
    }
    fn current_approval<'a>(
        &'a self,
        binding_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Approval>, ApprovalError>> {
        self.inner.current_approval(binding_key)
    }
    fn find_or_open_pending<'a>(
        &'a self,
        blocked: BlockedCall<'a>,
    ) -> BoxFuture<'a, Result<(Approval, bool), ApprovalError>> {
        self.inner.find_or_open_pending(blocked)
    }
    fn close_approval<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ApprovalError>> {
        self.inner.close_approval(id)
    }
    fn read_receipt<'a>(
        &'a self,
        receipt_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, ApprovalError>> {
        self.inner.read_receipt(receipt_id)
    }
    fn decide<'a>(
        &'a self,
        id: &'a str,
        sign: SignStep<'a>,
    ) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        self.inner.decide(id, sign)
    }
    fn get_approval<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        self.inner.get_approval(id)
    }
    fn list_approvals(
        &self,
        decided: Option<usize>,
    ) -> BoxFuture<'_, Result<Vec<Approval>, ApprovalError>> {
        self.inner.list_approvals(decided)
    }
    fn receipt_location(&self, receipt_id: &str) -> String {
        self.inner.receipt_location(receipt_id)
    }
    fn approval_resolved(&self) {
        self.inner.approval_resolved()
    }
    fn wait_resolved<'a>(
        &'a self,
        approval_id: &'a str,
        deadline: tokio::time::Instant,
    ) -> BoxFuture<'a, bool> {
        self.inner.wait_resolved(approval_id, deadline)
    }
    fn trusted_keys(&self) -> BoxFuture<'_, Result<TrustedKeys, String>> {
        self.files.trusted_keys()
    }
    fn agent_revoked<'a>(&'a self, access_key_id: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        self.files.agent_revoked(access_key_id)
    }
}
