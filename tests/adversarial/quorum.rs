//! A quorum at the proxy: an approval the state calls approved still needs, in its receipt,
//! as many distinct approvers as the body states and as the config requires now. The state
//! is written directly here (as an older airlock, or an edit, could leave it): nothing on the
//! way in checked the quorum, so only the proxy's own check stands between it and the call.

use super::harness::{Harness, Options, Resp};
use super::{expect, gated, RDS_DELETE};
use airlock::receipt::{self, Binding, Decision, ReceiptBody, Validity};
use airlock::state::approvals::{Signed, Status};

/// Every pending approval marked approved, with alice's one-signature receipt stating
/// `quorum`.
async fn approved_by_alice_alone(h: &Harness, quorum: u32) {
    let store = h.store().await;
    for pending in store.list_approvals(Some(0)).await.expect("list") {
        if pending.status != Status::Pending {
            continue;
        }
        let binding = Binding::of(&pending.call, &pending.agent, &pending.environment);
        let validity = Validity::starting(time::OffsetDateTime::now_utc());
        let mut body = ReceiptBody::new(
            &binding,
            &pending.id,
            Decision::Approve,
            &h.approver.public(),
            validity,
        );
        body.quorum = quorum;
        let signed = receipt::sign(body, &h.approver).expect("sign");
        let stored = Signed {
            receipt_id: signed.body.id.as_str().to_owned(),
            receipt_json: signed.to_json().expect("json").into_bytes(),
            status: Status::Approved,
            approved_by: vec!["alice".into()],
            decided_by: "alice".into(),
        };
        store
            .decide(&pending.id, Box::new(move |_, _| Ok(stored)))
            .await
            .expect("stored");
    }
}

/// The incident's call gated, approved in the state by alice alone (receipt stating
/// `stated`), then sent again: the harness and the answer.
async fn after_alice_alone(options: Options, stated: u32) -> (Harness, Resp) {
    let h = Harness::start_with(options).await;
    gated(&h, &h.send_call(&h.query("rds", RDS_DELETE)).await);
    approved_by_alice_alone(&h, stated).await;
    let r = h.send_call(&h.query("rds", RDS_DELETE)).await;
    (h, r)
}

fn refused_for_want_of_a_second(h: &Harness, r: &Resp) {
    expect(r, 403, "AccessDenied");
    assert!(r.message().contains("needs 2"), "{r:#?}");
    h.assert_untouched();
}

#[tokio::test]
async fn one_approver_does_not_do_where_the_config_requires_two() {
    // Deleting a database without a final snapshot cannot be undone: two approvers.
    let two = Options {
        set: vec![("approval", "irreversible_quorum = 2")],
        ..Default::default()
    };
    let (h, r) = after_alice_alone(two, 1).await;
    refused_for_want_of_a_second(&h, &r);
}

#[tokio::test]
async fn a_receipt_short_of_its_own_quorum_authorizes_nothing() {
    // The config needs one approver, but the receipt says it needs two.
    let (h, r) = after_alice_alone(Options::default(), 2).await;
    refused_for_want_of_a_second(&h, &r);
}

#[tokio::test]
async fn one_approver_still_does_where_one_is_required() {
    // The same state with the default quorum: the call goes through (old setups unchanged).
    let (h, r) = after_alice_alone(Options::default(), 1).await;
    expect(&r, 200, "");
    assert_eq!(h.stub.count(), 1);
}
