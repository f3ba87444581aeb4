//! Phase 5, redeem: a call the policy said (in `decide`) needs a receipt goes on only with
//! a valid one. Everything it reads and writes is the [`Gate`]'s.
//!
//! The agent never presents a receipt (nothing in a request is trusted as one): airlock
//! looks up the approval for the call's exact binding (agent, environment, account, region,
//! service, operation, resources, parameter digest). Without an approved one, the call is
//! recorded as pending and refused with the approval link; identical retries attach to the
//! same pending approval (or the call is held while a human decides, `[approval]
//! hold_seconds`). With one, the receipt is verified against the trusted keys from
//! the config, bound to this call, and a use is reserved in the durable ledger before the
//! call is forwarded. Just before reserving, the agent's key is read again where agents are
//! kept ([`still_active`]): a key revoked meanwhile (on another replica, before this one's
//! followed agents caught up) spends nothing. A use taken by a call still in flight on
//! another replica is a 503 to retry, and the approval stays open ([`in_flight`]).
//! [`Authorization::finish`] commits the use, or releases it when the upstream was never
//! reached or answered with an error SDKs retry.
//!
//! Concurrent identical calls under one receipt go one at a time (a lock per receipt, held
//! from reserve to commit/release), so a receipt never covers more calls than it allows.

use super::decide::Decided;
use super::error::{Cause, ProxyError, Shape};
use super::forward::Forwarded;
use crate::gate::Gate;
use crate::policy::Decision;
use crate::receipt::{self, Binding, Receipt};
use crate::sigv4::AuthError;
use crate::state::approvals::{Approval, Status};
use crate::state::ledger::LedgerError;
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;

/// Proof that a receipt covers this call and one of its uses is reserved.
pub struct Authorization {
    pub receipt_id: String,
    pub approval_id: String,
    pub approver: String,
    allowed: u32,
    _turn: OwnedMutexGuard<()>,
    /// Set when an entry of a plan receipt covers the call (`receipt_id` is then the
    /// entry's ledger key).
    plan: Option<super::plan::PlanUse>,
}

/// The SHA-256 of the canonical binding: what "the same call" means for approvals.
pub fn binding_key(binding: &Binding) -> String {
    let v = serde_json::json!({
        "agent": binding.agent,
        "environment": binding.environment,
        "account": binding.account,
        "region": binding.region,
        "service": binding.service,
        "operation": binding.operation,
        "resources": binding.resources,
        "params_digest": binding.params_digest,
    });
    crate::sigv4::sha256_hex(v.to_string().as_bytes())
}

fn blocked(gate: &Gate, approval: &Approval, is_new: bool, decision: &Decision) -> ProxyError {
    let link = gate.approval_link(&approval.id);
    if is_new {
        crate::notify::blocked(&gate.config, approval, &link);
        tracing::warn!(
            approval = %approval.id, agent = %approval.agent, environment = %approval.environment,
            rule = %decision.rule(), irreversible = decision.irreversible(),
            "approval needed: {} → {link}", approval.summary()
        );
    }
    let irreversible = if decision.irreversible() {
        format!(
            " IRREVERSIBLE: {}.",
            decision.irreversible_reasons().join("; ")
        )
    } else {
        String::new()
    };
    ProxyError::access_denied(Cause::ApprovalRequired, format!(
        "airlock: {} (environment {}) needs a human's approval (rule {}).{irreversible} Approve at {link} (or: airlock approve {} --key FILE), then retry.",
        approval.summary(),
        approval.environment,
        decision.rule(),
        approval.id
    ))
}

/// The approval state cannot be read or written (a database that is down or read-only, a
/// disk that fails): 503, which SDKs retry, and a log line at most every
/// [`COMPLAIN_EVERY`] however many calls are refused.
pub(super) fn state_error(e: impl std::fmt::Display) -> ProxyError {
    static SAID: Complaint = Complaint::new();
    if SAID.time_to_say() {
        tracing::error!(error = %e, "cannot read or write approval state; refusing calls that need a receipt (fail closed; repeats are logged every 10 s); allowed calls are still served");
    }
    ProxyError::state_unwritable("airlock cannot read or write this call's approval state, so it refuses calls that need a receipt (fail closed); calls that need none are still served. See airlock's log.")
}

/// How often, at most, one kind of refusal for want of writable state is logged.
const COMPLAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// One kind of log line said at most once per [`COMPLAIN_EVERY`]: an outage under load is
/// one line per interval, not one per call.
struct Complaint(std::sync::Mutex<Option<std::time::Instant>>);

impl Complaint {
    const fn new() -> Complaint {
        Complaint(std::sync::Mutex::new(None))
    }

    fn time_to_say(&self) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < COMPLAIN_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Who signed a gated call: the key looked up again just before a use is reserved, and how
/// a refusal must look.
#[derive(Clone, Copy)]
pub struct Signer<'a> {
    pub access_key_id: &'a str,
    pub shape: &'a Shape,
}

/// The signer's key, looked up where agents are kept (not in the request path's followed
/// set, which may be behind a revocation made on another replica by up to its poll): a key
/// revoked meanwhile spends no use. A lookup that fails is a 503 (fail closed).
pub(super) async fn still_active(gate: &Gate, signer: Signer<'_>) -> Result<(), ProxyError> {
    match gate.store.agent_revoked(signer.access_key_id).await {
        Ok(false) => Ok(()),
        Ok(true) => {
            tracing::warn!(access_key_id = %signer.access_key_id, "a call that needs a receipt was signed with a key revoked since this replica last loaded the agents: refused, no use spent");
            Err(ProxyError::auth(AuthError::unknown_key(), signer.shape))
        }
        Err(e) => Err(state_error(e)),
    }
}

/// How long past the longest a forwarded call can take (`[upstream]` connect and response
/// timeouts) a reservation may still be given back by the call that made it.
const IN_FLIGHT_MARGIN: Duration = Duration::from_secs(60);

/// A receipt whose uses are all taken but not all committed: a call under it is in flight
/// on another replica and may give its use back (its upstream was not reached, or answered
/// with an error SDKs retry). The approval stays open and the caller gets a 503 to retry,
/// unless the uses have not changed for longer than any call can take: then the
/// reservation was left by a replica stopped mid-call, and the use counts as spent.
pub(super) fn in_flight(gate: &Gate, idle: Duration) -> Option<ProxyError> {
    let upstream = &gate.config.upstream;
    let longest = upstream.connect_timeout + upstream.response_timeout + IN_FLIGHT_MARGIN;
    (idle < longest).then(|| {
        ProxyError::busy(
            "airlock: the last use of this call's receipt is taken by a call still in flight; retry in a moment (if that call does not go through, its use is given back)",
        )
    })
}

/// The receipt for this decided call, or the refusal that says what is missing.
pub async fn redeem(
    gate: &Gate,
    decided: &Decided,
    signer: Signer<'_>,
) -> Result<Authorization, ProxyError> {
    find_and_reserve(gate, decided, signer)
        .await
        .map_err(|e| decided.explain(e))
}

async fn find_and_reserve(
    gate: &Gate,
    decided: &Decided,
    signer: Signer<'_>,
) -> Result<Authorization, ProxyError> {
    let (call, agent, environment, decision) = (
        decided.call(),
        decided.agent(),
        decided.environment(),
        decided.decision(),
    );
    // An approved plan that covers this exact call lets it through with no hold.
    if let Some(authorization) =
        super::plan::redeem(gate, call, agent, environment, decision.quorum(), signer).await?
    {
        return Ok(authorization);
    }
    let binding = Binding::of(call, agent, environment);
    let key = binding_key(&binding);
    let store = &gate.store;
    // At most a few rounds: an approval found used up or expired is closed, and the next
    // round opens a new pending one.
    let mut held_once = false;
    for _ in 0..4 {
        let current = store.current_approval(&key).await.map_err(state_error)?;
        let approval = match current {
            None
            | Some(Approval {
                status: Status::Pending,
                ..
            }) => {
                let (a, is_new) = store
                    .find_or_open_pending(crate::store::BlockedCall {
                        binding_key: &key,
                        call,
                        agent,
                        environment,
                        decision,
                    })
                    .await
                    .map_err(state_error)?;
                let refusal = blocked(gate, &a, is_new, decision);
                if held_once || !gate.hold(&a.id).await {
                    return Err(refusal);
                }
                held_once = true;
                continue;
            }
            Some(a) if a.status == Status::Denied => {
                store.close_approval(&a.id).await.map_err(state_error)?;
                return Err(ProxyError::access_denied(
                    Cause::DeniedByApprover,
                    format!(
                        "airlock: {} was denied by {}; retrying asks again",
                        a.summary(),
                        a.decided_by.as_deref().unwrap_or("an approver")
                    ),
                ));
            }
            Some(a) => a,
        };
        let Some(receipt_id) = approval.receipt_id.clone() else {
            store
                .close_approval(&approval.id)
                .await
                .map_err(state_error)?;
            continue;
        };
        let bytes = store.read_receipt(&receipt_id).await.map_err(state_error)?;
        // Read afresh: a passkey enrolled while serve runs must count at once.
        let trusted = store.trusted_keys().await.map_err(state_error)?;
        // The quorum the config requires now, besides the one the receipt states.
        let checked = Receipt::from_json(&bytes).and_then(|r| {
            let v = receipt::authorize(&r, &trusted, &binding, time::OffsetDateTime::now_utc())?;
            v.check_quorum(decision.quorum())?;
            Ok(v)
        });
        let verified = match checked {
            Ok(v) => v,
            Err(
                e @ (receipt::ReceiptError::Expired(_) | receipt::ReceiptError::NotYetValid(_)),
            ) => {
                tracing::info!(approval = %approval.id, error = %e, "receipt not valid now; asking again");
                store
                    .close_approval(&approval.id)
                    .await
                    .map_err(state_error)?;
                continue;
            }
            Err(e) => {
                tracing::error!(approval = %approval.id, receipt = %receipt_id, error = %e, "a stored receipt does not verify; refusing");
                store
                    .close_approval(&approval.id)
                    .await
                    .map_err(state_error)?;
                return Err(ProxyError::access_denied(
                    Cause::ReceiptInvalid,
                    format!(
                        "airlock: the receipt for {} does not verify ({e}); ask for a new approval",
                        approval.summary()
                    ),
                ));
            }
        };
        let allowed = verified.body().uses;
        let approver = verified.approvers().join(", ");
        if !store.audit_writable() {
            static SAID: Complaint = Complaint::new();
            if SAID.time_to_say() {
                tracing::error!(approval = %approval.id, receipt = %receipt_id, "the audit log cannot be written; refusing calls that need a receipt (fail closed; repeats are logged every 10 s)");
            }
            return Err(ProxyError::state_unwritable(
                "airlock cannot write its audit log, so it refuses calls that need a receipt (fail closed); calls that need none are still served. See airlock's log.",
            ));
        }
        let turn = gate.receipt_lock(&receipt_id).lock_owned().await;
        still_active(gate, signer).await?;
        match store.reserve(&receipt_id, allowed).await {
            Ok(()) => {
                tracing::info!(approval = %approval.id, receipt = %receipt_id, %approver, "receipt use reserved");
                return Ok(Authorization {
                    receipt_id,
                    approval_id: approval.id,
                    approver,
                    allowed,
                    _turn: turn,
                    plan: None,
                });
            }
            Err(e @ (LedgerError::UsedUp | LedgerError::InFlight { .. })) => {
                if let LedgerError::InFlight { idle } = e {
                    if let Some(busy) = in_flight(gate, idle) {
                        tracing::info!(approval = %approval.id, receipt = %receipt_id, ?idle, "the receipt's last use is reserved by a call in flight (another replica's); 503 to retry, the approval stays open");
                        return Err(busy);
                    }
                    tracing::warn!(approval = %approval.id, receipt = %receipt_id, ?idle, "the receipt's last use has been reserved longer than any call takes (a replica stopped mid-call): it counts as spent");
                }
                drop(turn);
                store
                    .close_approval(&approval.id)
                    .await
                    .map_err(state_error)?;
                continue;
            }
            Err(e) => {
                static SAID: Complaint = Complaint::new();
                if SAID.time_to_say() {
                    tracing::error!(approval = %approval.id, receipt = %receipt_id, error = %e, "cannot write the receipt ledger; refusing calls that need a receipt (fail closed; repeats are logged every 10 s); allowed calls are still served");
                }
                return Err(ProxyError::state_unwritable(
                    "airlock cannot write its receipt ledger, so it refuses calls that need a receipt (fail closed); calls that need none are still served. See airlock's log.",
                ));
            }
        }
    }
    Err(ProxyError::internal(
        "airlock could not settle this call's approval state; retry",
    ))
}

impl Authorization {
    /// A use of a plan receipt's entry, reserved under the entry's own lock.
    pub(super) fn for_plan_entry(
        ledger_key: String,
        approver: String,
        allowed: u32,
        turn: OwnedMutexGuard<()>,
        plan: super::plan::PlanUse,
    ) -> Authorization {
        Authorization {
            receipt_id: ledger_key,
            approval_id: plan.plan_id.clone(),
            approver,
            allowed,
            _turn: turn,
            plan: Some(plan),
        }
    }

    /// Commits the use when the upstream answered with success or a final error; releases
    /// it when the upstream was never reached, the request never completed, or the answer
    /// is one SDKs retry (throttling, 5xx).
    pub async fn finish(self, gate: &Gate, result: &Result<Forwarded, ProxyError>) {
        let release = match result {
            Ok(f) => {
                let status = f.response.status();
                let throttled = f
                    .response
                    .headers()
                    .get("x-amzn-errortype")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| {
                        t.starts_with("Throttling") || t.starts_with("TooManyRequests")
                    });
                status.is_server_error() || status.as_u16() == 429 || throttled
            }
            // Never reached (connection refused, connect timeout: 503), or our own check
            // stopped the body (a downstream error): the upstream did not act. Reached, then
            // reset, hung (504) or answered garbage (502): it may have acted, so count it.
            Err(e) => {
                use super::error::Origin;
                (e.origin == Origin::Upstream && e.status == http::StatusCode::SERVICE_UNAVAILABLE)
                    || e.origin == Origin::Downstream
            }
        };
        let succeeded = matches!(result, Ok(f) if f.response.status().is_success());
        self.settle(gate, release, succeeded).await;
    }

    /// Gives the reserved use back: the call was never sent (its account could not be
    /// reached).
    pub async fn release(self, gate: &Gate) {
        self.settle(gate, true, false).await;
    }

    /// `succeeded`: the upstream answered with success (a plan entry is then done).
    async fn settle(self, gate: &Gate, release: bool, succeeded: bool) {
        let store = &gate.store;
        let outcome = if release {
            store.release(&self.receipt_id).await
        } else {
            store.commit(&self.receipt_id).await
        };
        match outcome {
            Ok(()) => crate::metrics::receipt_use_settled(!release),
            Err(e) => {
                tracing::error!(receipt = %self.receipt_id, error = %e, "could not record the receipt use")
            }
        }
        if let Some(plan) = &self.plan {
            super::plan::settled(gate, plan, !release, succeeded).await;
        } else if !release
            && store
                .committed(&self.receipt_id)
                .await
                .is_ok_and(|n| n >= self.allowed)
        {
            if let Err(e) = store.close_approval(&self.approval_id).await {
                tracing::error!(approval = %self.approval_id, error = %e, "could not close the spent approval");
            }
        }
        tracing::info!(receipt = %self.receipt_id, approver = %self.approver, committed = !release, "receipt use settled");
    }
}
