//! The state store: what must hold across airlock replicas, behind one interface, so the
//! gate does not care where it is kept.
//!
//! - [`files::FileStore`], the default: the single-use ledger, the approvals and the audit
//!   log in `[state] dir`, exactly as one `serve` has always kept them (nothing to install).
//! - [`postgres::PgStore`], chosen with `[state] database_url` (or `AIRLOCK_DATABASE_URL`):
//!   the ledger, the audit chain and the approvals in PostgreSQL, each enforced by the
//!   database (a conditional update per use, appends serialised under an advisory lock, one
//!   open approval per call identity, a decision under the approval's row lock), so several
//!   replicas share them.
//!
//! [`open`] builds the one the config names, for `serve` or for a command, so the request
//! path, the approval page and `airlock approvals`/`approve`/`deny` all see the same
//! approvals.
//!
//! What the interface covers: the ledger (reserve, commit, release, how many uses are
//! committed), the audit chain (append, durable append, whether it can be written), the
//! approvals (the request path finds or opens them and waits on them; the page and the CLI
//! list, read and decide them), the revocation lookups (the trusted approver keys, an
//! agent key's revocation), and the agents, passkeys and enrollment links ([`identities`],
//! reached through [`Store::identities`]). Submitted Terraform plans are kept beside it
//! (`plan::shared`, over [`postgres::plans`]). With a database, every part of the state
//! that replicas must agree on is in it; each replica's own files keep only its audit
//! spool and its countersigning key.
//!
//! [`transfer`] moves a state between the two (`airlock db import`, `airlock db export`).

pub mod commands;
pub mod files;
pub mod identities;
mod open;
pub mod postgres;
pub mod transfer;
mod waiters;

pub use open::{for_command, for_serve, open, Opener};

use crate::audit::Fields;
use crate::identify::AwsCall;
use crate::policy::Decision;
use crate::receipt::TrustedKeys;
use crate::state::approvals::{Approval, ApprovalError, Signed};
use crate::state::ledger::LedgerError;
use futures_util::future::BoxFuture;

/// What must hold across replicas. Each method is one step the gate takes; an error means
/// the step could not be taken, and the gate fails closed on it.
pub trait Store: Send + Sync {
    /// `files` or `postgres`, for logs.
    fn kind(&self) -> &'static str;

    // The single-use ledger. `key` is a receipt id, or a plan entry's ledger key.

    /// Reserves one use, durably, if `allowed` uses are not all committed or reserved;
    /// [`LedgerError::UsedUp`] if they are, or [`LedgerError::InFlight`] when some are only
    /// reserved by another process (a replica) that may still give them back. Only this can
    /// make a use available to a call.
    fn reserve<'a>(&'a self, key: &'a str, allowed: u32) -> BoxFuture<'a, Result<(), LedgerError>>;
    /// The reserved use counts (the upstream answered with success or a final error).
    fn commit<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), LedgerError>>;
    /// The reserved use is given back (the upstream never acted).
    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), LedgerError>>;
    /// Uses committed so far.
    fn committed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u32, LedgerError>>;

    // The audit chain.

    /// Appends a record to the chain (written before this returns; durable within a second).
    /// False, with a log line, if it could not be written.
    fn audit_append(&self, record: Fields) -> BoxFuture<'_, bool>;
    /// Appends a record and waits until it is durable.
    fn audit_append_durable(&self, record: Fields) -> BoxFuture<'_, bool>;
    /// Makes what was appended durable now (the page's decisions, shutdown).
    fn audit_sync(&self) -> BoxFuture<'_, Result<(), String>>;
    /// False while the last append failed: calls that need a receipt are refused then.
    fn audit_writable(&self) -> bool;
    /// For `/healthz`: whether the chain can be appended to now, and if not, why.
    fn audit_health(&self) -> BoxFuture<'_, Result<(), String>>;

    // Pending approvals, as the request path sees them.

    /// The open (not closed) approval for a binding, if any.
    fn current_approval<'a>(
        &'a self,
        binding_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Approval>, ApprovalError>>;
    /// Attaches a blocked call to the pending approval for the same binding, or opens one.
    /// Returns it and whether it is new.
    fn find_or_open_pending<'a>(
        &'a self,
        blocked: BlockedCall<'a>,
    ) -> BoxFuture<'a, Result<(Approval, bool), ApprovalError>>;
    /// Closes an approval (used up, expired, denied and seen, or unverifiable).
    fn close_approval<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ApprovalError>>;
    /// The stored receipt's bytes.
    fn read_receipt<'a>(
        &'a self,
        receipt_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, ApprovalError>>;
    /// Records one approver's decision on a pending approval: `sign` gets the approval and
    /// the receipt already stored for it (an incomplete quorum's, else `None`) and says what
    /// to store; nothing else changes the approval meanwhile, on any replica. A decision
    /// (no longer pending) wakes the calls held on it. [`ApprovalError::NotPending`] when it
    /// was already decided or closed.
    fn decide<'a>(
        &'a self,
        id: &'a str,
        sign: SignStep<'a>,
    ) -> BoxFuture<'a, Result<Approval, ApprovalError>>;
    /// One approval by id ([`ApprovalError::NotFound`] when there is none).
    fn get_approval<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Approval, ApprovalError>>;
    /// The approvals as the page and `airlock approvals` list them: every pending one, and
    /// the others (decided or closed) too, the most recently changed `decided` of them
    /// (all with `None`). Newest first.
    fn list_approvals(
        &self,
        decided: Option<usize>,
    ) -> BoxFuture<'_, Result<Vec<Approval>, ApprovalError>>;
    /// Where a stored receipt is kept, as `airlock approve` tells a person.
    fn receipt_location(&self, receipt_id: &str) -> String;
    /// Says that an approval was decided, so calls waiting on it go on at once.
    fn approval_resolved(&self);
    /// Waits until the approval is no longer pending (true) or `deadline` passes (false).
    fn wait_resolved<'a>(
        &'a self,
        approval_id: &'a str,
        deadline: tokio::time::Instant,
    ) -> BoxFuture<'a, bool>;

    // Revocations.

    /// The keys a receipt may be signed with now: a revoked approver's key is not among
    /// them. Read afresh on every gated call.
    fn trusted_keys(&self) -> BoxFuture<'_, Result<TrustedKeys, String>>;
    /// Whether the agent key `access_key_id` was revoked (an unknown key counts as revoked).
    fn agent_revoked<'a>(&'a self, access_key_id: &'a str) -> BoxFuture<'a, Result<bool, String>>;

    /// Agents, passkeys and enrollments where this store keeps them (the page's and the
    /// CLI's way to them).
    fn identities(&self) -> &identities::Identities;
}

/// What [`Store::decide`] asks of the decision: given the pending approval and the receipt
/// stored for it, the receipt and status to store.
pub type SignStep<'a> =
    Box<dyn FnOnce(&Approval, Option<Vec<u8>>) -> Result<Signed, ApprovalError> + Send + 'a>;

/// A call that needs an approval it does not have, as redeem found it.
#[derive(Clone, Copy)]
pub struct BlockedCall<'a> {
    /// What "the same call" means: the SHA-256 of its canonical binding.
    pub binding_key: &'a str,
    pub call: &'a AwsCall,
    pub agent: &'a str,
    pub environment: &'a str,
    pub decision: &'a Decision,
}
