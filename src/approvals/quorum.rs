//! One approver's decision on a pending call, made the same way from the approval page (a
//! passkey) and from the CLI (a key): which body they sign ([`body_to_sign`]), whether they
//! may add to the quorum ([`may_approve`]), storing their receipt, joined to an incomplete
//! quorum's ([`record`]), and the audit records of it ([`audit_records`]).
//!
//! A call that needs M approvers stays pending until M distinct approvers who count have
//! signed its one body (`receipt::quorum`); the receipt of an incomplete quorum is stored
//! with the pending approval and authorizes nothing. A denial is a receipt of its own: one
//! denial denies, whatever approvals came before.

use crate::receipt::{self, quorum, Binding, Decision, KeyId, Receipt, ReceiptBody, Tally};
use crate::state::approvals::{Approval, ApprovalError, ApprovalStore, Signed, Status};
use serde_json::{json, Map, Value};

/// "1 of 2 approvals": how far a pending call is toward its quorum.
pub fn progress(a: &Approval) -> String {
    format!(
        "{} of {} approvals",
        a.approved_by.len(),
        a.quorum.approvals.max(1)
    )
}

/// Refuses an approval that cannot add to `a`'s quorum: by a name that does not count for
/// this call, or by an approver already counted (the same person twice counts once).
pub fn may_approve(a: &Approval, approver: &str) -> Result<(), String> {
    if !a.quorum.counts(approver) {
        let names = a.quorum.approvers.as_deref().unwrap_or_default().join(", ");
        return Err(format!(
            "{approver:?} is not among the approvers who count for this call ({names})"
        ));
    }
    if a.approved_by.iter().any(|n| n == approver) {
        return Err(format!(
            "{approver:?} has already approved this call ({}): it needs another approver",
            progress(a)
        ));
    }
    Ok(())
}

/// The body `approver` (with `key_id`) signs for `a`: for an approval of a call whose quorum
/// is under way, the stored receipt's body in their name; otherwise `fresh` (a new body,
/// given the quorum the call needs). A denial always signs a fresh body.
pub fn body_to_sign(
    store: &ApprovalStore,
    a: &Approval,
    decision: Decision,
    (approver, key_id): (&str, &KeyId),
    fresh: impl FnOnce() -> ReceiptBody,
) -> Result<ReceiptBody, ApprovalError> {
    if decision == Decision::Approve && a.status == Status::Pending {
        if let Some(receipt_id) = &a.receipt_id {
            let partial = parse(&store.read_receipt(receipt_id)?)?;
            return Ok(partial.body.in_name_of(approver, key_id));
        }
    }
    let mut body = fresh();
    body.quorum = a.quorum.approvals.max(1);
    Ok(body)
}

fn parse(bytes: &[u8]) -> Result<Receipt, ApprovalError> {
    Receipt::from_json(bytes)
        .map_err(|e| ApprovalError::Refused(format!("the stored receipt does not read: {e}")))
}

/// What [`record`] stored.
pub struct Recorded {
    pub approval: Approval,
    pub receipt_id: String,
    pub decision: Decision,
    /// Toward the quorum (an approval only).
    pub tally: Option<Tally>,
}

/// Stores `single`, one approver's receipt over the body [`body_to_sign`] gave them: a
/// denial decides the call; an approval joins the stored receipt of the quorum under way,
/// and decides the call once enough distinct approvers who count have signed. Everything
/// is checked again under the store's lock, against `trusted`.
pub fn record(
    store: &ApprovalStore,
    trusted: &receipt::TrustedKeys,
    single: Receipt,
) -> Result<Recorded, ApprovalError> {
    let refused = |e: receipt::ReceiptError| ApprovalError::Refused(e.to_string());
    let decision = single.body.decision;
    let approver = single.body.approver.clone();
    let id = single.body.approval_id.clone();
    let mut tally = None;
    let approval = store.sign(&id, |a, stored| {
        if single.body.binding() != Binding::of(&a.call, &a.agent, &a.environment) {
            return Err(ApprovalError::Refused(
                "the receipt is for another call".into(),
            ));
        }
        if decision == Decision::Deny {
            receipt::verify_signatures(&single, trusted).map_err(refused)?;
            return Ok(Signed {
                receipt_id: single.body.id.as_str().to_owned(),
                receipt_json: single.to_json().map_err(refused)?.into_bytes(),
                status: Status::Denied,
                approved_by: a.approved_by.clone(),
                decided_by: approver.clone(),
            });
        }
        may_approve(a, &approver).map_err(ApprovalError::Refused)?;
        let partial = match (&a.receipt_id, stored) {
            (Some(_), Some(bytes)) => Some(parse(&bytes)?),
            _ => None,
        };
        if partial.is_none() && single.body.quorum < a.quorum.approvals {
            return Err(ApprovalError::Refused(format!(
                "the receipt states a quorum of {}, but this call needs {}",
                single.body.quorum, a.quorum.approvals
            )));
        }
        let joined = quorum::join(partial, single).map_err(|e| {
            ApprovalError::Refused(format!(
                "{e}: another approver decided meanwhile; start again"
            ))
        })?;
        let verified = receipt::verify_signatures(&joined, trusted).map_err(refused)?;
        let t = quorum::tally(&verified, &a.quorum);
        if !t.counted.contains(&approver) {
            return Err(ApprovalError::Refused(format!(
                "{approver:?} does not count toward this call's quorum"
            )));
        }
        let signed = Signed {
            receipt_id: joined.body.id.as_str().to_owned(),
            receipt_json: joined.to_json().map_err(refused)?.into_bytes(),
            status: if t.complete() {
                Status::Approved
            } else {
                Status::Pending
            },
            approved_by: t.counted.clone(),
            decided_by: t.counted.join(", "),
        };
        tally = Some(t);
        Ok(signed)
    })?;
    Ok(Recorded {
        receipt_id: approval.receipt_id.clone().unwrap_or_default(),
        approval,
        decision,
        tally,
    })
}

/// The audit records of one decision `via` the page or the CLI: for a call that needs
/// several approvers, `quorum_signature` for each approval as it arrives (who, k of M); then,
/// once decided, `approved` (with every approver) or `denied`.
pub fn audit_records(r: &Recorded, approver: &str, via: &str) -> Vec<Map<String, Value>> {
    let a = &r.approval;
    let mut out = Vec::new();
    if let Some(t) = r.tally.as_ref().filter(|t| t.need > 1) {
        let mut s =
            crate::audit::decision_record("quorum_signature", a, &r.receipt_id, approver, via);
        s.insert("approvals".into(), json!(t.have()));
        s.insert("quorum".into(), json!(t.need));
        s.insert(
            "reason".into(),
            json!(format!("{approver} approved: {} of {}", t.have(), t.need)),
        );
        out.push(s);
    }
    match a.status {
        Status::Approved => {
            let by = a.approved_by.join(", ");
            let mut d = crate::audit::decision(true, a, &r.receipt_id, &by, via);
            if a.quorum.approvals > 1 {
                d.insert("approvers".into(), json!(a.approved_by));
                d.insert("quorum".into(), json!(a.quorum.approvals));
            }
            out.push(d);
        }
        Status::Denied => {
            let mut d = crate::audit::decision(false, a, &r.receipt_id, approver, via);
            if a.quorum.approvals > 1 {
                d.insert("approvals_before".into(), json!(a.approved_by));
                d.insert("quorum".into(), json!(a.quorum.approvals));
            }
            out.push(d);
        }
        Status::Pending | Status::Closed => {}
    }
    out
}
