//! Plan receipts: signed, verified and redeemed entry by entry through the receipt path.

use super::plan::*;
use super::*;
use crate::identify::AwsCall;
use crate::receipt::{check_binding, check_window, Decision};
use time::macros::datetime;

fn entry() -> PlanEntry {
    PlanEntry {
        address: "aws_dynamodb_table.items".into(),
        environment: "staging".into(),
        account: Some("111111111111".into()),
        region: "eu-west-1".into(),
        service: "dynamodb".into(),
        operation: "DeleteTable".into(),
        resources: vec!["arn:aws:dynamodb:eu-west-1:111111111111:table/items".into()],
        params: [("TableName".to_owned(), "items".to_owned())].into(),
        free: Vec::new(),
        uses: Some(1),
    }
}

fn delete_table(name: &str) -> AwsCall {
    AwsCall {
        service: "dynamodb".into(),
        signing_name: "dynamodb".into(),
        operation: "DeleteTable".into(),
        region: "eu-west-1".into(),
        account: Some("111111111111".into()),
        resources: Vec::new(),
        params: [("TableName".to_owned(), name.to_owned())].into(),
    }
}

fn plan_receipt(key: &ApproverKey, decision: Decision) -> Receipt {
    let binding = Binding {
        agent: "terraform".into(),
        environment: "staging".into(),
        account: Some("111111111111".into()),
        region: "eu-west-1".into(),
        service: PLAN_SERVICE.into(),
        operation: PLAN_OPERATION.into(),
        resources: vec!["terraform-plan:p1".into()],
        params_digest: "d".repeat(64),
    };
    let mut body = ReceiptBody::new(
        &binding,
        "p1",
        decision,
        &key.public(),
        Validity::starting(datetime!(2026-02-26 12:00:00 UTC)),
    );
    body.plan = Some(PlanGrant {
        plan_id: "p1".into(),
        digest: "d".repeat(64),
        digest_scope: DigestScope::ResourceChangesAndState,
        created_at: Some("2026-02-26T11:59:00Z".into()),
        entries: vec![entry()],
    });
    sign(body, key).expect("sign")
}

fn trusted(key: &ApproverKey) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add_approver(&key.public()).expect("trusted");
    t
}

#[test]
fn a_plan_receipt_is_signed_and_verified_like_any_receipt() {
    let alice = ApproverKey::generate("alice").expect("key");
    let r = plan_receipt(&alice, Decision::Approve);
    let read = Receipt::from_json(r.to_json().expect("json").as_bytes()).expect("reads back");
    let v = verify(&read, &trusted(&alice)).expect("verifies");
    assert_eq!(
        covering_entries(v.body(), "terraform", "staging", &delete_table("items")),
        [0]
    );
    // Another agent, environment or table: nothing.
    assert!(covering_entries(v.body(), "other", "staging", &delete_table("items")).is_empty());
    assert!(covering_entries(v.body(), "terraform", "prod", &delete_table("items")).is_empty());
    assert!(covering_entries(v.body(), "terraform", "staging", &delete_table("other")).is_empty());
    // Never a single call's receipt, whatever its fields say.
    let as_call = Binding::of(&delete_table("items"), "terraform", "staging");
    assert!(check_binding(&v, &as_call, datetime!(2026-02-26 12:01:00 UTC)).is_err());
    assert!(check_window(v.body(), datetime!(2026-02-26 12:01:00 UTC)).is_ok());
    assert!(check_window(v.body(), datetime!(2026-02-26 13:00:00 UTC)).is_err());
}

#[test]
fn an_edited_entry_or_an_untrusted_signer_is_refused() {
    let alice = ApproverKey::generate("alice").expect("key");
    let mallory = ApproverKey::generate("alice").expect("key");
    let mut edited = plan_receipt(&alice, Decision::Approve);
    if let Some(grant) = edited.body.plan.as_mut() {
        grant.entries[0]
            .params
            .insert("TableName".into(), "other".into());
    }
    assert!(matches!(
        verify(&edited, &trusted(&alice)),
        Err(ReceiptError::BadSignature(_))
    ));
    let mut more_uses = plan_receipt(&alice, Decision::Approve);
    if let Some(grant) = more_uses.body.plan.as_mut() {
        grant.entries[0].uses = None;
    }
    assert!(verify(&more_uses, &trusted(&alice)).is_err());
    let forged = plan_receipt(&mallory, Decision::Approve);
    assert!(matches!(
        verify(&forged, &trusted(&alice)),
        Err(ReceiptError::UntrustedKey(_))
    ));
    // A denial covers nothing.
    let denied = plan_receipt(&alice, Decision::Deny);
    let v = verify(&denied, &trusted(&alice)).expect("a denial verifies");
    assert!(covering_entries(v.body(), "terraform", "staging", &delete_table("items")).is_empty());
}

#[test]
fn a_plan_receipt_must_say_it_is_one() {
    let alice = ApproverKey::generate("alice").expect("key");
    let mut r = plan_receipt(&alice, Decision::Approve);
    r.body.service = "dynamodb".into();
    r.signatures.clear();
    let r = sign(r.body, &alice).expect("sign");
    assert!(matches!(
        verify(&r, &trusted(&alice)),
        Err(ReceiptError::Malformed(_))
    ));
}

#[test]
fn a_plan_receipt_meets_a_calls_quorum_only_with_enough_distinct_approvers() {
    // What the proxy asks of a plan receipt before any entry covers a call: the quorum the
    // config requires for that call (see `proxy::plan::redeem`).
    let alice = ApproverKey::generate("alice").expect("key");
    let v = verify(&plan_receipt(&alice, Decision::Approve), &trusted(&alice)).expect("verifies");
    assert!(v.check_quorum(&Quorum::default()).is_ok());
    let two = Quorum {
        approvals: 2,
        approvers: None,
    };
    assert!(matches!(
        v.check_quorum(&two),
        Err(ReceiptError::QuorumNotMet { have: 1, need: 2 })
    ));
    let only_bob = Quorum {
        approvals: 1,
        approvers: Some(vec!["bob".into()]),
    };
    assert!(v.check_quorum(&only_bob).is_err());
}

/// The digest's scope is signed with the grant; a plan receipt that does not state it is not
/// read at all (it covers nothing), and one whose scope was changed no longer verifies.
#[test]
fn a_plan_receipt_states_what_its_digest_binds() {
    let alice = ApproverKey::generate("alice").expect("key");
    let r = plan_receipt(&alice, Decision::Approve);
    let mut json: serde_json::Value =
        serde_json::from_str(&r.to_json().expect("json")).expect("parses");
    assert_eq!(
        json["body"]["plan"]["digest_scope"],
        "resource_changes+state"
    );
    json["body"]["plan"]["digest_scope"] = "resource_changes".into();
    let edited = Receipt::from_json(json.to_string().as_bytes()).expect("reads");
    assert!(verify(&edited, &trusted(&alice)).is_err());
    json["body"]["plan"]
        .as_object_mut()
        .expect("grant")
        .remove("digest_scope");
    assert!(Receipt::from_json(json.to_string().as_bytes()).is_err());
}
