//! The audit records of plans: submitted, each quorum signature, approved (by whom, how many
//! calls) or denied, each entry used, spent or expired. Written with `audit::record`, into the same hash chain.

use crate::plan::store::PlanRecord;
use crate::receipt::PlanEntry;
use serde_json::{json, Map, Value};

fn plan_record(event: &str, p: &PlanRecord) -> Map<String, Value> {
    let mut r = crate::audit::record(event);
    r.insert("plan".into(), json!(p.id));
    r.insert("agent".into(), json!(p.agent));
    r.insert("environment".into(), json!(p.environment_label()));
    r.insert("digest".into(), json!(p.digest));
    r
}

pub fn submitted(p: &PlanRecord) -> Map<String, Value> {
    use crate::plan::mapping::Coverage;
    let mut r = plan_record("plan_submitted", p);
    let not_covered: Vec<&str> = p
        .destroyed
        .iter()
        .filter(|d| matches!(d.coverage, Coverage::NotCovered { .. }))
        .map(|d| d.address.as_str())
        .collect();
    r.insert("destroyed".into(), json!(p.destroyed.len()));
    r.insert("calls".into(), json!(p.entries.len()));
    r.insert("not_covered".into(), json!(not_covered));
    r.insert(
        "reason".into(),
        json!(format!(
            "plan {} destroys {} resources; {} calls covered, {} resources not covered",
            p.id,
            p.destroyed.len(),
            p.entries.len(),
            not_covered.len()
        )),
    );
    r
}

pub fn approved(p: &PlanRecord, receipt_id: &str, approver: &str, via: &str) -> Map<String, Value> {
    let mut r = plan_record("plan_approved", p);
    r.insert("receipt".into(), json!(receipt_id));
    r.insert("approver".into(), json!(approver));
    r.insert("via".into(), json!(via));
    r.insert("calls".into(), json!(p.entries.len()));
    r.insert(
        "reason".into(),
        json!(format!(
            "plan {} approved by {approver} ({via}): {} calls covered",
            p.id,
            p.entries.len()
        )),
    );
    r
}

/// One approval of a plan that needs several approvers, as it arrives: who, and `k` of `m`.
pub fn quorum_signature(
    p: &PlanRecord,
    receipt_id: &str,
    approver: &str,
    via: &str,
    (k, m): (usize, u32),
) -> Map<String, Value> {
    let mut r = plan_record("quorum_signature", p);
    r.insert("receipt".into(), json!(receipt_id));
    r.insert("approver".into(), json!(approver));
    r.insert("via".into(), json!(via));
    r.insert("approvals".into(), json!(k));
    r.insert("quorum".into(), json!(m));
    r.insert(
        "reason".into(),
        json!(format!("{approver} approved plan {}: {k} of {m}", p.id)),
    );
    r
}

/// A plan denied: one denial denies it, whatever approvals came before (`approvals_before`).
pub fn denied(p: &PlanRecord, receipt_id: &str, approver: &str, via: &str) -> Map<String, Value> {
    let mut r = plan_record("plan_denied", p);
    r.insert("receipt".into(), json!(receipt_id));
    r.insert("approver".into(), json!(approver));
    r.insert("via".into(), json!(via));
    r.insert("approvals_before".into(), json!(p.approved_by));
    r.insert(
        "reason".into(),
        json!(format!("plan {} denied by {approver} ({via})", p.id)),
    );
    r
}

/// One entry used: the call it covered went to AWS and counts.
pub fn entry_used(
    plan_id: &str,
    receipt_id: &str,
    agent: &str,
    index: usize,
    entry: &PlanEntry,
) -> Map<String, Value> {
    let mut r = crate::audit::record("plan_entry_used");
    r.insert("plan".into(), json!(plan_id));
    r.insert("receipt".into(), json!(receipt_id));
    r.insert("agent".into(), json!(agent));
    r.insert("environment".into(), json!(entry.environment));
    r.insert("entry".into(), json!(index));
    r.insert("address".into(), json!(entry.address));
    r.insert("action".into(), json!(entry.action()));
    r.insert("resources".into(), json!(entry.resources));
    r
}

/// The plan's receipt covers nothing more: `plan_spent` or `plan_expired`.
pub fn ended(event: &str, plan_id: &str, receipt_id: &str) -> Map<String, Value> {
    let mut r = crate::audit::record(event);
    r.insert("plan".into(), json!(plan_id));
    r.insert("receipt".into(), json!(receipt_id));
    r
}
