//! The default store: everything in `[state] dir`, as one `serve` keeps it (the ledger in
//! `ledger.jsonl`, approvals and receipts under `approvals/` and `receipts/`, the audit log
//! under `audit/`, agents and passkeys in their JSON files). Each method is the file code
//! that ran before the store existed, unchanged: the ledger fsyncs before a call is
//! forwarded, and a held call wakes when this process decides its approval (or looks again
//! every [`HOLD_TICK`]). A command's store ([`FileStore::for_command`]) has no ledger and
//! appends its audit records one by one under the log's lock, as the CLI always has.

use super::identities::Identities;
use super::waiters::Waiters;
use super::{BlockedCall, SignStep, Store};
use crate::audit::{AuditLog, Fields};
use crate::config::Config;
use crate::receipt::TrustedKeys;
use crate::state::approvals::{Approval, ApprovalError, ApprovalStore, Status};
use crate::state::ledger::{Ledger, LedgerError};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// How often a held call looks at its approval when nothing wakes it.
const HOLD_TICK: Duration = Duration::from_millis(250);

pub struct FileStore {
    config: Arc<Config>,
    /// `serve`'s alone (a command never spends a receipt).
    ledger: Option<Ledger>,
    approvals: ApprovalStore,
    /// `serve`'s writer; a command appends under the log's lock ([`crate::audit::append_now`]).
    audit: Option<AuditLog>,
    /// The calls held on approvals, woken when this process decides theirs (the page).
    waiters: Waiters,
    /// Agents, passkeys and enrollments in the same directory.
    identities: Identities,
}

impl FileStore {
    /// Opens the ledger and the approvals in `[state] dir` and starts the audit writer.
    pub fn open(config: Arc<Config>) -> Result<FileStore, String> {
        let approvals = ApprovalStore::open(&config.state_dir).map_err(|e| e.to_string())?;
        let ledger = Ledger::open(&config.state_dir).map_err(|e| e.to_string())?;
        let audit = AuditLog::start(&config.state_dir, &config.audit).map_err(|e| e.to_string())?;
        Ok(FileStore {
            identities: Identities::Files(config.state_dir.clone()),
            config,
            ledger: Some(ledger),
            approvals,
            audit: Some(audit),
            waiters: Waiters::default(),
        })
    }

    /// The approvals in `[state] dir`, for a command: no ledger, no audit writer.
    pub fn for_command(config: Arc<Config>) -> Result<FileStore, String> {
        let approvals = ApprovalStore::open(&config.state_dir).map_err(|e| e.to_string())?;
        Ok(FileStore {
            identities: Identities::Files(config.state_dir.clone()),
            config,
            ledger: None,
            approvals,
            audit: None,
            waiters: Waiters::default(),
        })
    }

    fn ledger(&self) -> Result<&Ledger, LedgerError> {
        self.ledger.as_ref().ok_or_else(|| {
            LedgerError::Io(
                "the ledger".into(),
                std::io::Error::other("only serve keeps the single-use ledger"),
            )
        })
    }

    /// A command's append: under the log's lock, durable before it returns.
    fn append_now(&self, record: Fields) -> bool {
        match crate::audit::append_now(&self.config.state_dir, record) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "could not append an audit record");
                false
            }
        }
    }
}

impl Store for FileStore {
    fn kind(&self) -> &'static str {
        "files"
    }

    fn reserve<'a>(&'a self, key: &'a str, allowed: u32) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move { self.ledger()?.reserve(key, allowed) })
    }

    fn commit<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move { self.ledger()?.commit(key) })
    }

    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move { self.ledger()?.release(key) })
    }

    fn committed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u32, LedgerError>> {
        Box::pin(async move { Ok(self.ledger()?.usage(key).committed) })
    }

    fn audit_append(&self, record: Fields) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            match &self.audit {
                Some(audit) => audit.write(record),
                None => self.append_now(record),
            }
        })
    }

    fn audit_append_durable(&self, record: Fields) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            match &self.audit {
                Some(audit) => audit.write_durable(record).await,
                None => self.append_now(record),
            }
        })
    }

    fn audit_sync(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match &self.audit {
                Some(audit) => audit.sync().map_err(|e| e.to_string()),
                None => Ok(()),
            }
        })
    }

    fn audit_writable(&self) -> bool {
        self.audit.as_ref().is_none_or(AuditLog::writable)
    }

    fn audit_health(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match &self.audit {
                Some(audit) => audit.check_writable(),
                None => Ok(()),
            }
        })
    }

    fn current_approval<'a>(
        &'a self,
        binding_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Approval>, ApprovalError>> {
        Box::pin(async move { self.approvals.current(binding_key) })
    }

    fn find_or_open_pending<'a>(
        &'a self,
        b: BlockedCall<'a>,
    ) -> BoxFuture<'a, Result<(Approval, bool), ApprovalError>> {
        Box::pin(async move {
            self.approvals
                .record_blocked(b.binding_key, b.call, b.agent, b.environment, b.decision)
        })
    }

    fn close_approval<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ApprovalError>> {
        Box::pin(async move { self.approvals.close(id) })
    }

    fn read_receipt<'a>(
        &'a self,
        receipt_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, ApprovalError>> {
        Box::pin(async move { self.approvals.read_receipt(receipt_id) })
    }

    fn decide<'a>(
        &'a self,
        id: &'a str,
        sign: SignStep<'a>,
    ) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        Box::pin(async move {
            let a = self.approvals.sign(id, sign)?;
            if a.status != Status::Pending {
                self.waiters.wake(id);
            }
            Ok(a)
        })
    }

    fn get_approval<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        Box::pin(async move { self.approvals.get(id) })
    }

    fn list_approvals(
        &self,
        decided: Option<usize>,
    ) -> BoxFuture<'_, Result<Vec<Approval>, ApprovalError>> {
        Box::pin(async move {
            let all = self.approvals.list()?;
            let Some(limit) = decided else {
                return Ok(all);
            };
            let (pending, mut others): (Vec<_>, Vec<_>) =
                all.into_iter().partition(|a| a.status == Status::Pending);
            others.sort_by(|a, b| changed_at(b).cmp(changed_at(a)));
            others.truncate(limit);
            let mut out = pending;
            out.extend(others);
            out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
            Ok(out)
        })
    }

    fn receipt_location(&self, receipt_id: &str) -> String {
        self.approvals
            .receipt_path(receipt_id)
            .display()
            .to_string()
    }

    fn approval_resolved(&self) {
        self.waiters.wake_all();
    }

    fn wait_resolved<'a>(
        &'a self,
        approval_id: &'a str,
        deadline: tokio::time::Instant,
    ) -> BoxFuture<'a, bool> {
        Box::pin(
            self.waiters
                .wait(approval_id, deadline, HOLD_TICK, move || {
                    std::future::ready(self.approvals.get(approval_id).map(|a| a.status))
                }),
        )
    }

    fn trusted_keys(&self) -> BoxFuture<'_, Result<TrustedKeys, String>> {
        Box::pin(async move { crate::signing::trusted_keys(&self.config) })
    }

    fn agent_revoked<'a>(&'a self, access_key_id: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(self.identities.agent_revoked(access_key_id))
    }

    fn identities(&self) -> &Identities {
        &self.identities
    }
}

/// When an approval last changed, as far as its record tells: decided, else last seen.
fn changed_at(a: &Approval) -> &str {
    a.decided_at.as_deref().unwrap_or(&a.last_seen_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::AwsCall;
    use crate::policy::Policy;
    use crate::state::approvals::Signed;
    use std::time::Instant;

    fn approved_by(who: &str) -> SignStep<'_> {
        Box::new(move |_, stored| {
            assert!(stored.is_none(), "a receipt was stored before any decision");
            Ok(Signed {
                receipt_id: "rcpt-files".into(),
                receipt_json: b"{}".to_vec(),
                status: Status::Approved,
                approved_by: vec![who.to_owned()],
                decided_by: who.to_owned(),
            })
        })
    }

    /// A store over the files of `dir`.
    fn store_in(dir: &std::path::Path) -> Arc<FileStore> {
        let text = format!(
            "[listen]\nproxy = \"127.0.0.1:0\"\napprovals = \"127.0.0.1:0\"\n[state]\ndir = \"{}\"\n",
            dir.display()
        );
        let config = Config::parse(&dir.join("airlock.toml"), &text).expect("config");
        Arc::new(FileStore::open(Arc::new(config)).expect("store"))
    }

    /// A DynamoDB DeleteTable of `table`, and what the built-in rules decide for it.
    fn delete_table(table: &str) -> (AwsCall, crate::policy::Decision) {
        let call = AwsCall {
            service: "dynamodb".into(),
            signing_name: "dynamodb".into(),
            operation: "DeleteTable".into(),
            region: "us-east-1".into(),
            account: None,
            resources: Vec::new(),
            params: [("TableName".to_owned(), table.to_owned())].into(),
        };
        let policy = Policy {
            builtin: true,
            ..Policy::default()
        };
        let decision = policy.decide(&call, "ci-agent", "prod");
        (call, decision)
    }

    /// A receipt once issued is never replaced: a grant of another approval naming its id
    /// is refused; a quorum's second signature is stored over its own receipt.
    #[tokio::test(flavor = "current_thread")]
    async fn a_decision_never_replaces_an_issued_receipt() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store_in(dir.path());
        let (call, decision) = delete_table("orders");
        let mut ids = Vec::new();
        for binding_key in ["binding-x", "binding-y"] {
            let blocked = BlockedCall {
                binding_key,
                call: &call,
                agent: "ci-agent",
                environment: "prod",
                decision: &decision,
            };
            ids.push(
                store
                    .find_or_open_pending(blocked)
                    .await
                    .expect("open")
                    .0
                    .id,
            );
        }
        let grant = |bytes: &'static [u8], status, by: &'static str| -> SignStep<'static> {
            Box::new(move |_, _| {
                Ok(Signed {
                    receipt_id: "rcpt-issued".into(),
                    receipt_json: bytes.to_vec(),
                    status,
                    approved_by: vec![by.to_owned()],
                    decided_by: by.to_owned(),
                })
            })
        };
        store
            .decide(&ids[0], grant(b"issued", Status::Approved, "alice"))
            .await
            .expect("grant");
        let refused = store
            .decide(&ids[1], grant(b"forged", Status::Approved, "mallory"))
            .await;
        assert!(
            matches!(&refused, Err(ApprovalError::Refused(e)) if e.contains("already stored")),
            "{refused:?}"
        );
        assert_eq!(store.read_receipt("rcpt-issued").await.unwrap(), b"issued");
        let y = store.get_approval(&ids[1]).await.expect("y");
        assert_eq!((y.status, y.receipt_id), (Status::Pending, None));
    }

    /// A decision through the store wakes the call held on it at once (not at the next
    /// look, a quarter of a second later), and a second decision is refused.
    #[tokio::test(flavor = "current_thread")]
    async fn a_decision_wakes_the_held_call_and_a_second_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store_in(dir.path());
        let (call, decision) = delete_table("orders");
        let blocked = BlockedCall {
            binding_key: "files-binding",
            call: &call,
            agent: "ci-agent",
            environment: "prod",
            decision: &decision,
        };
        let (pending, is_new) = store.find_or_open_pending(blocked).await.expect("open");
        assert!(is_new && pending.status == Status::Pending);
        let held = {
            let store = Arc::clone(&store);
            let id = pending.id.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                (store.wait_resolved(&id, deadline).await, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !held.is_finished(),
            "the held call went on before any decision"
        );
        let decided_at = Instant::now();
        let decided = store
            .decide(&pending.id, approved_by("alice"))
            .await
            .expect("decide");
        assert_eq!(decided.status, Status::Approved);
        let (woke, at) = held.await.expect("task");
        assert!(woke, "the held call did not see the decision");
        let waited = at.saturating_duration_since(decided_at);
        assert!(
            waited < Duration::from_millis(150),
            "the held call went on {waited:?} after the decision (not woken by it)"
        );
        // Listed as the page and the CLI list it: no longer pending.
        assert!(store
            .list_approvals(Some(0))
            .await
            .expect("list")
            .is_empty());
        let all = store.list_approvals(None).await.expect("list");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].status, Status::Approved);
        let again = store.decide(&pending.id, approved_by("bob")).await;
        assert!(matches!(
            again,
            Err(ApprovalError::NotPending(_, Status::Approved))
        ));
    }
}
