//! Redeeming a plan receipt: a call that an entry of an approved plan covers goes through
//! with no hold (see `receipt::plan` for what "covers" means).
//!
//! Each entry is counted in the ledger under its own key (`<receipt id>#<index>`), so an
//! entry is single use (or as many uses as it grants) with the release rules of every
//! receipt: a use is given back when the upstream was never reached, answered 5xx or
//! throttled. An entry also closes once its call has succeeded, and a container's entries
//! (a `force_destroy` bucket's objects) once the container's own delete has succeeded
//! (`PlanGrant::closed_by`), so nothing of the plan acts on a re-created resource of the same
//! name. The approved plans are found in `Gate::plans` (`plan::index`), by agent and action;
//! only a receipt with an entry for the call is verified. An entry used up or closed,
//! another agent, another environment, a receipt outside its window or one that does not
//! verify: nothing is covered here, and the call is held or refused exactly as without a
//! plan. Once every entry with a limited number of uses is
//! used, the plan is spent; once its window has ended, expired (both recorded once).
//! Before an entry is reserved, the plan's status is read where plans are kept (one lookup),
//! so a plan another replica ended is not honoured by an index that has not caught up, and
//! the agent's key is looked up where agents are kept (`redeem::still_active`). An entry
//! whose last use is reserved by a call in flight on another replica is a 503 to retry, when
//! no other entry covers the call.

use super::error::ProxyError;
use super::redeem::{in_flight, state_error, still_active, Authorization, Signer};
use crate::gate::Gate;
use crate::identify::AwsCall;
use crate::plan::store::{PlanStatus, PlanStoreError};
use crate::receipt::{self, ReceiptError};
use crate::state::ledger::LedgerError;

/// Which entry of which plan a call is using.
pub struct PlanUse {
    pub plan_id: String,
    pub receipt_id: String,
    pub agent: String,
    pub index: usize,
    pub entry: receipt::PlanEntry,
    /// Every entry's ledger key and uses, for the spent check (`None`: unlimited).
    limits: Vec<(String, Option<u32>)>,
}

/// The ledger key of a plan receipt's entry.
fn entry_key(receipt_id: &str, index: usize) -> String {
    format!("{receipt_id}#{index}")
}

/// `quorum`: the approvers the config requires now for this call; a plan receipt whose
/// approvers do not meet it covers nothing here, and the call is held for that quorum one by
/// one, as without a plan.
pub async fn redeem(
    gate: &Gate,
    call: &AwsCall,
    agent: &str,
    environment: &str,
    quorum: &receipt::Quorum,
    signer: Signer<'_>,
) -> Result<Option<Authorization>, ProxyError> {
    // The in-memory index (`plan::index`): a map lookup, the files read only when changed.
    let plans = gate
        .plans
        .lookup(agent, &call.service, &call.operation)
        .map_err(state_error)?;
    if plans.is_empty() {
        return Ok(None);
    }
    let mut trusted = None;
    // An entry taken by a call in flight elsewhere: the answer if no other entry covers.
    let mut busy = None;
    let now = time::OffsetDateTime::now_utc();
    for plan in plans {
        let receipt_id = plan.receipt_id.as_str();
        // Only a receipt with an entry for this call is verified (the index is not).
        if receipt::covering_entries(&plan.receipt.body, agent, environment, call).is_empty() {
            continue;
        }
        // Read afresh: a passkey revoked while serve runs must stop counting at once.
        let trusted = match &mut trusted {
            Some(keys) => keys,
            empty => empty.insert(gate.store.trusted_keys().await.map_err(state_error)?),
        };
        // A plan whose receipt does not verify covers nothing; the call goes on to be held
        // or refused as without a plan (never an error for every call).
        let verified = match receipt::verify(&plan.receipt, trusted) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(plan = %plan.plan_id, receipt = %receipt_id, error = %e, "a stored plan receipt does not verify; it covers nothing");
                continue;
            }
        };
        if let Err(e) = verified.check_entry_quorum(quorum) {
            tracing::info!(plan = %plan.plan_id, receipt = %receipt_id, action = %call.action(), reason = %e, "the plan's approvers do not meet this call's quorum; it is held one by one");
            continue;
        }
        let body = verified.body();
        let Some(grant) = body.plan_grant().filter(|g| g.plan_id == plan.plan_id) else {
            tracing::error!(plan = %plan.plan_id, receipt = %receipt_id, "the stored receipt is not this plan's; it covers nothing");
            continue;
        };
        match receipt::check_window(body, now) {
            Ok(()) => {}
            Err(ReceiptError::Expired(_)) => {
                end(gate, &plan.plan_id, receipt_id, PlanStatus::Expired).await;
                continue;
            }
            Err(_) => continue,
        }
        // The index may be behind (another replica spent the plan, or its end was not
        // stored): where plans are kept says whether it is still approved. Unreadable: the
        // call is refused (fail closed).
        match gate.plans.plans().status(&plan.plan_id).await {
            Ok(PlanStatus::Approved) => {}
            Ok(_) | Err(PlanStoreError::NotFound(_)) => {
                tracing::info!(plan = %plan.plan_id, receipt = %receipt_id, "the plan is no longer approved where plans are kept (ended elsewhere); it covers nothing");
                gate.plans.remove(&plan.plan_id);
                continue;
            }
            Err(e) => {
                tracing::error!(plan = %plan.plan_id, error = %e, "cannot read the plan's status; refusing (fail closed)");
                return Err(ProxyError::state_unwritable(
                    "airlock cannot read where plans are kept, so it refuses calls a plan would cover (fail closed); calls that need none are still served. See airlock's log.",
                ));
            }
        }
        let limits: Vec<(String, Option<u32>)> = grant
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (entry_key(receipt_id, i), e.uses))
            .collect();
        // An entry that names the exact call goes before one that covers a container (the
        // object a plan destroys before the bucket that holds it), so the exact one is used.
        let mut covering = receipt::covering_entries(body, agent, environment, call);
        covering.sort_by_key(|i| grant.entries[*i].uses.is_none());
        for index in covering {
            let key = entry_key(receipt_id, index);
            let allowed = grant.entries[index].uses.unwrap_or(u32::MAX);
            if !gate.store.audit_writable() {
                return Err(ProxyError::state_unwritable(
                    "airlock cannot write its audit log, so it refuses calls that need a receipt (fail closed); calls that need none are still served. See airlock's log.",
                ));
            }
            let turn = gate.receipt_lock(&key).lock_owned().await;
            if let Some(done) = grant.closed_by(index) {
                // A container's delete that cannot be looked up counts as done: the entry
                // covers nothing then (fail closed).
                if has_succeeded(gate, &entry_key(receipt_id, done))
                    .await
                    .unwrap_or(true)
                {
                    continue;
                }
            }
            still_active(gate, signer).await?;
            match gate.store.reserve(&key, allowed).await {
                Ok(()) => {
                    tracing::info!(plan = %plan.plan_id, receipt = %receipt_id, entry = index, action = %call.action(), "plan receipt entry reserved");
                    let used = PlanUse {
                        plan_id: plan.plan_id.clone(),
                        receipt_id: receipt_id.to_owned(),
                        agent: agent.to_owned(),
                        index,
                        entry: grant.entries[index].clone(),
                        limits,
                    };
                    return Ok(Some(Authorization::for_plan_entry(
                        key,
                        body.approver.clone(),
                        allowed,
                        turn,
                        used,
                    )));
                }
                Err(LedgerError::UsedUp) => continue,
                Err(LedgerError::InFlight { idle }) => {
                    busy = busy.or(in_flight(gate, idle));
                    continue;
                }
                Err(e) => {
                    tracing::error!(plan = %plan.plan_id, error = %e, "cannot write the receipt ledger; refusing (fail closed)");
                    return Err(ProxyError::state_unwritable(
                        "airlock cannot write its receipt ledger, so it refuses calls that need a receipt (fail closed); calls that need none are still served. See airlock's log.",
                    ));
                }
            }
        }
    }
    busy.map_or(Ok(None), Err)
}

/// The ledger key that records an entry's call succeeded (2xx).
fn done_key(entry_key: &str) -> String {
    format!("{entry_key}!done")
}

/// Whether the call of the entry under `entry_key` has succeeded.
async fn has_succeeded(gate: &Gate, entry_key: &str) -> Result<bool, LedgerError> {
    Ok(gate.store.committed(&done_key(entry_key)).await? >= 1)
}

/// After the call: a committed use is audited. An entry is finished when its call succeeded
/// or its uses are all taken (a `DeleteBucket` refused while the bucket still holds objects
/// uses one and is sent again); when every entry with limited uses is finished, the plan is
/// spent.
pub async fn settled(gate: &Gate, used: &PlanUse, committed: bool, succeeded: bool) {
    if !committed {
        return;
    }
    if succeeded {
        let key = done_key(&entry_key(&used.receipt_id, used.index));
        let recorded = match gate.store.reserve(&key, u32::MAX).await {
            Ok(()) => gate.store.commit(&key).await,
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            tracing::error!(plan = %used.plan_id, error = %e, "could not record a plan entry's success");
        }
    }
    gate.store
        .audit_append(
            crate::plan::records::entry_used(
                &used.plan_id,
                &used.receipt_id,
                &used.agent,
                used.index,
                &used.entry,
            )
            .into(),
        )
        .await;
    let mut all_used = true;
    for (key, uses) in &used.limits {
        let Some(n) = uses else { continue };
        // A count that cannot be read is not "used": the plan stays open (it is spent at
        // the next settled use, or expires with its window).
        let entry_done = gate.store.committed(key).await.is_ok_and(|c| c >= *n)
            || has_succeeded(gate, key).await.unwrap_or(false);
        if !entry_done {
            all_used = false;
            break;
        }
    }
    if all_used {
        end(gate, &used.plan_id, &used.receipt_id, PlanStatus::Spent).await;
    }
}

/// Marks an approved plan spent or expired (where plans are kept, and in the index), and
/// audits it once (the store says which replica's end was the first). Removed from the
/// index before (no further use here) and after (no reload read before the end puts it
/// back).
async fn end(gate: &Gate, plan_id: &str, receipt_id: &str, status: PlanStatus) {
    gate.plans.remove(plan_id);
    let ended = gate.plans.plans().end(plan_id, status).await;
    gate.plans.remove(plan_id);
    match ended {
        Ok(true) => {
            tracing::info!(plan = %plan_id, receipt = %receipt_id, status = status.as_str(), "plan receipt covers nothing more");
            let event = if status == PlanStatus::Spent {
                "plan_spent"
            } else {
                "plan_expired"
            };
            gate.store
                .audit_append(crate::plan::records::ended(event, plan_id, receipt_id).into())
                .await;
        }
        Ok(false) => {}
        Err(e) => tracing::error!(plan = %plan_id, error = %e, "could not end the plan"),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
