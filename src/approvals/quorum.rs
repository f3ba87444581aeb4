//! One approver's decision on a pending call, made the same way from the approval page (a
//! passkey) and from the CLI (a key): which body they sign ([`body_to_sign`]), whether they
//! may add to the quorum ([`may_approve`]), storing their receipt, joined to an incomplete
//! quorum's ([`record`]), and the audit records of it ([`audit_records`]). Joining and
//! counting is `receipt::collect`, which a Terraform plan's approvals go through too. All of
//! it goes through the [`Store`], so an approval decided on one replica's page or with one
//! machine's CLI is decided for every replica.
//!
//! A call that needs M approvers stays pending until M distinct approvers who count have
//! signed its one body (`receipt::quorum`); the receipt of an incomplete quorum is stored
//! with the pending approval and authorizes nothing. A denial is a receipt of its own: one
//! denial denies, whatever approvals came before.

use crate::receipt::collect::{self, Collects, Joined};
use crate::receipt::{
    self, Binding, Decision, KeyId, Receipt, ReceiptBody, Tally, VerifiedReceipt,
};
use crate::state::approvals::{Approval, ApprovalError, Signed, Status};
use crate::store::Store;
use serde_json::{json, Map, Value};

impl Collects for Approval {
    const NOUN: &'static str = "call";

    fn is_pending(&self) -> bool {
        self.status == Status::Pending
    }

    fn partial_receipt_id(&self) -> Option<&str> {
        self.receipt_id.as_deref()
    }

    fn approved_by(&self) -> &[String] {
        &self.approved_by
    }

    fn stated_quorum(&self) -> u32 {
        self.quorum.approvals.max(1)
    }

    fn does_not_count(&self, approver: &str, _so_far: &[String]) -> Option<String> {
        (!self.quorum.counts(approver)).then(|| {
            let names = self
                .quorum
                .approvers
                .as_deref()
                .unwrap_or_default()
                .join(", ");
            format!("{approver:?} is not among the approvers who count for this call ({names})")
        })
    }

    fn tally(&self, verified: &VerifiedReceipt) -> Tally {
        verified.tally(&self.quorum)
    }

    fn progress(&self) -> String {
        Approval::progress(self)
    }
}

async fn stored_receipt(store: &dyn Store, a: &Approval) -> Result<Option<Vec<u8>>, ApprovalError> {
    match a.receipt_id.as_deref() {
        Some(id) => store.read_receipt(id).await.map(Some),
        None => Ok(None),
    }
}

/// Refuses an approval that cannot add to `a`'s quorum: by a name that does not count for
/// this call, or by an approver already counted (the same person twice counts once).
pub async fn may_approve(store: &dyn Store, a: &Approval, approver: &str) -> Result<(), String> {
    collect::may_approve_with(
        a,
        stored_receipt(store, a).await.map_err(|e| e.to_string())?,
        approver,
    )
}

/// The body `approver` (with `key_id`) signs for `a`: for an approval of a call whose quorum
/// is under way, the stored receipt's body in their name; otherwise `fresh` (a new body,
/// given the quorum the call needs). A denial always signs a fresh body.
pub async fn body_to_sign(
    store: &dyn Store,
    a: &Approval,
    decision: Decision,
    who: (&str, &KeyId),
    fresh: impl FnOnce() -> ReceiptBody,
) -> Result<ReceiptBody, ApprovalError> {
    let stored = stored_receipt(store, a).await?;
    collect::body_to_sign_with(a, stored, decision, who, fresh).map_err(ApprovalError::Refused)
}

/// What [`record`] stored.
#[derive(Debug)]
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
/// is checked again while the store holds the approval ([`Store::decide`]: the file lock,
/// or the row locked in PostgreSQL), against `trusted`.
pub async fn record(
    store: &dyn Store,
    trusted: &receipt::TrustedKeys,
    single: Receipt,
) -> Result<Recorded, ApprovalError> {
    let refused = |e: receipt::ReceiptError| ApprovalError::Refused(e.to_string());
    let decision = single.body.decision;
    let approver = single.body.approver.clone();
    let id = single.body.approval_id.clone();
    let mut tally = None;
    let sign = Box::new(|a: &Approval, stored: Option<Vec<u8>>| {
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
        let Joined {
            receipt: joined,
            tally: t,
        } = collect::join_approval(a, stored, single, trusted).map_err(ApprovalError::Refused)?;
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
    });
    let approval = store.decide(&id, sign).await?;
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

#[cfg(test)]
mod tests {
    //! The stored side of a quorum: what `airlock approve` and the page do, against a real
    //! state dir (the files' store, as a command opens it).

    use super::*;
    use crate::identify::{AwsCall, Resource};
    use crate::receipt::{ApproverKey, TrustedKeys, Validity};
    use crate::store::files::FileStore;
    use crate::store::BlockedCall;

    struct Setup {
        _dir: tempfile::TempDir,
        runtime: tokio::runtime::Runtime,
        store: FileStore,
        trusted: TrustedKeys,
        keys: Vec<ApproverKey>,
        id: String,
    }

    fn setup(approvals: u32, approvers: Option<&[&str]>) -> Setup {
        let dir = tempfile::tempdir().expect("dir");
        let text = format!(
            "[listen]\nproxy = \"127.0.0.1:0\"\napprovals = \"127.0.0.1:0\"\n[state]\ndir = \"{}\"\n",
            dir.path().display()
        );
        let config =
            crate::config::Config::parse(&dir.path().join("airlock.toml"), &text).expect("config");
        let store = FileStore::for_command(std::sync::Arc::new(config)).expect("store");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let call = AwsCall {
            service: "rds".into(),
            signing_name: "rds".into(),
            operation: "DeleteDBSnapshot".into(),
            region: "eu-west-1".into(),
            account: Some("111111111111".into()),
            resources: vec![Resource {
                member: "DBSnapshotIdentifier".into(),
                value: "nightly".into(),
                arn: None,
            }],
            params: [("DBSnapshotIdentifier".to_owned(), "nightly".to_owned())].into(),
        };
        let approvers = approvers
            .map(|names| format!("approvers = {names:?}"))
            .unwrap_or_default();
        let rule: crate::policy::Rule = toml::from_str(&format!(
            "name = \"two\"\neffect = \"require_receipt\"\nactions = [\"rds:DeleteDBSnapshot\"]\napprovals = {approvals}\n{approvers}"
        ))
        .expect("rule");
        let policy = crate::policy::Policy {
            rules: vec![rule],
            ..Default::default()
        };
        let decision = policy.decide(&call, "agent", "prod");
        assert_eq!(decision.quorum().approvals, approvals);
        let binding = Binding::of(&call, "agent", "prod");
        let binding_key = crate::proxy::redeem::binding_key(&binding);
        let blocked = BlockedCall {
            binding_key: &binding_key,
            call: &call,
            agent: "agent",
            environment: "prod",
            decision: &decision,
        };
        let (a, _) = runtime
            .block_on(store.find_or_open_pending(blocked))
            .expect("pending");
        let keys: Vec<ApproverKey> = ["alice", "bob", "carol"]
            .iter()
            .map(|n| ApproverKey::generate(n).expect("key"))
            .collect();
        let mut trusted = TrustedKeys::new();
        for k in &keys {
            trusted.add_approver(&k.public()).expect("trusted");
        }
        Setup {
            _dir: dir,
            runtime,
            store,
            trusted,
            keys,
            id: a.id,
        }
    }

    /// `who` approves or denies as `airlock approve/deny` does.
    fn decide(
        s: &Setup,
        who: usize,
        decision: Decision,
        ttl_secs: u64,
    ) -> Result<Recorded, String> {
        let key = &s.keys[who];
        let public = key.public();
        s.runtime.block_on(async {
            let a = s
                .store
                .get_approval(&s.id)
                .await
                .map_err(|e| e.to_string())?;
            if decision == Decision::Approve {
                may_approve(&s.store, &a, public.name()).await?;
            }
            let body = body_to_sign(
                &s.store,
                &a,
                decision,
                (public.name(), public.key_id()),
                || {
                    let mut validity = Validity::starting(time::OffsetDateTime::now_utc());
                    validity.ttl = std::time::Duration::from_secs(ttl_secs);
                    let binding = Binding::of(&a.call, &a.agent, &a.environment);
                    ReceiptBody::new(&binding, &a.id, decision, &public, validity)
                },
            )
            .await
            .map_err(|e| e.to_string())?;
            let signed = receipt::sign(body, key).map_err(|e| e.to_string())?;
            record(&s.store, &s.trusted, signed)
                .await
                .map_err(|e| e.to_string())
        })
    }

    #[test]
    fn two_distinct_approvers_decide_and_each_signature_is_audited() {
        let s = setup(2, None);
        let first = decide(&s, 0, Decision::Approve, 900).expect("alice");
        assert_eq!(first.approval.status, Status::Pending);
        assert_eq!(first.approval.progress(), "1 of 2 approvals");
        let events: Vec<Value> = audit_records(&first, "alice", "cli")
            .into_iter()
            .map(|r| json!([r["event"], r["approver"], r["approvals"], r["quorum"]]))
            .collect();
        assert_eq!(events, [json!(["quorum_signature", "alice", 1, 2])]);

        // Alice again is refused, before and under the lock.
        let again = decide(&s, 0, Decision::Approve, 900).expect_err("twice");
        assert!(again.contains("already approved"), "{again}");

        let second = decide(&s, 1, Decision::Approve, 900).expect("bob");
        assert_eq!(second.approval.status, Status::Approved);
        assert_eq!(second.approval.approved_by, ["alice", "bob"]);
        assert_eq!(second.receipt_id, first.receipt_id, "one receipt, one body");
        let events: Vec<Value> = audit_records(&second, "bob", "cli")
            .into_iter()
            .map(|r| json!([r["event"], r["approver"]]))
            .collect();
        assert_eq!(
            events,
            [
                json!(["quorum_signature", "bob"]),
                json!(["approved", "alice, bob"])
            ]
        );
        let stored = s
            .runtime
            .block_on(s.store.read_receipt(&second.receipt_id))
            .expect("receipt");
        let r = Receipt::from_json(&stored).expect("parses");
        let v = receipt::verify(&r, &s.trusted).expect("complete");
        assert_eq!(v.approvers(), ["alice", "bob"]);
        // Decided: nobody adds to it any more.
        assert!(decide(&s, 2, Decision::Approve, 900).is_err());
    }

    #[test]
    fn a_name_that_does_not_count_is_refused_and_one_denial_denies() {
        let s = setup(2, Some(&["alice", "bob"]));
        let carol = decide(&s, 2, Decision::Approve, 900).expect_err("carol");
        assert!(carol.contains("not among the approvers"), "{carol}");
        decide(&s, 0, Decision::Approve, 900).expect("alice");
        // Carol may still say no: one denial, by anyone trusted, denies.
        let no = decide(&s, 2, Decision::Deny, 900).expect("carol denies");
        assert_eq!(no.approval.status, Status::Denied);
        assert_eq!(no.approval.decided_by.as_deref(), Some("carol"));
        let events: Vec<Value> = audit_records(&no, "carol", "cli")
            .into_iter()
            .map(|r| r["event"].clone())
            .collect();
        assert_eq!(events, [json!("denied")]);
        assert!(decide(&s, 1, Decision::Approve, 900).is_err());
    }

    #[test]
    fn approvals_lapse_with_the_first_receipts_window() {
        let s = setup(2, None);
        decide(&s, 0, Decision::Approve, 1).expect("alice, for one second");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        // Bob's approval starts over: alice's has lapsed, so it is 1 of 2 again...
        let bob = decide(&s, 1, Decision::Approve, 900).expect("bob");
        assert_eq!(bob.approval.status, Status::Pending);
        assert_eq!(bob.approval.approved_by, ["bob"]);
        // ...and alice may approve again.
        let alice = decide(&s, 0, Decision::Approve, 900).expect("alice again");
        assert_eq!(alice.approval.status, Status::Approved);
        assert_eq!(alice.approval.approved_by, ["bob", "alice"]);
    }
}
