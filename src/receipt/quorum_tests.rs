//! M-of-N receipts: distinct approvers, duplicates, forged or unknown cosigners, denials,
//! and the config's quorum on top of the body's.

use super::*;
use crate::receipt::quorum::{join, MAX_QUORUM};

/// A body that needs `quorum` approvers, first approved (and signed) by `first`.
fn quorum_receipt(w: &World, first: &ApproverKey, quorum: u32) -> Receipt {
    let mut body = body_by(first, Decision::Approve);
    body.quorum = quorum;
    let _ = w;
    sign(body, first).expect("sign")
}

/// `key`'s approval of `partial`'s body, in their own name.
fn cosign(partial: &Receipt, key: &ApproverKey) -> Receipt {
    let view = partial.body.in_name_of(key.public().name(), &key.key_id());
    sign(view, key).expect("sign")
}

fn needs(r: Result<VerifiedReceipt, ReceiptError>) -> (usize, u32) {
    match r {
        Err(ReceiptError::QuorumNotMet { have, need }) => (have, need),
        other => panic!("expected an incomplete quorum, got {other:?}"),
    }
}

#[test]
fn two_distinct_approvers_complete_a_quorum_of_two() {
    let w = world();
    let first = quorum_receipt(&w, &w.alice, 2);
    // One approval of two: genuine, but it authorizes nothing.
    assert_eq!(needs(verify(&first, &w.trusted)), (1, 2));
    let v = verify_signatures(&first, &w.trusted).expect("genuine");
    assert!(!v.tally(&Quorum::default()).complete());

    let both = join(Some(first.clone()), cosign(&first, &w.bob)).expect("joins");
    let back = Receipt::from_json(both.to_json().expect("json").as_bytes()).expect("parses");
    assert_eq!(back, both);
    let v = verify(&back, &w.trusted).expect("verifies");
    assert_eq!(v.approvers(), ["alice", "bob"]);
    check_binding(&v, &request(), T0 + Duration::minutes(1)).expect("binds");
    // The receipt states its quorum, inside what was signed.
    assert_eq!(to_value(&back)["body"]["quorum"], json!(2));
}

#[test]
fn the_same_approver_twice_counts_once() {
    let w = world();
    let first = quorum_receipt(&w, &w.alice, 2);
    // Alice again with the same key...
    let again = join(Some(first.clone()), cosign(&first, &w.alice)).expect("joins");
    assert_eq!(needs(verify(&again, &w.trusted)), (1, 2));
    // ...and with a passkey of her own besides her key: still one person.
    let mut w = w;
    let mut auth = webauthn::soft::Authenticator::new("localhost");
    w.trusted
        .add_passkey(&auth.passkey("alice"))
        .expect("passkey");
    let passkey = auth.passkey("alice");
    let view = first.body.in_name_of(passkey.name(), passkey.key_id());
    let twice = join(Some(first.clone()), passkey_receipt(&w, &mut auth, view)).expect("joins");
    let v = verify_signatures(&twice, &w.trusted).expect("genuine");
    assert_eq!(v.approvers(), ["alice"]);
    assert_eq!(needs(verify(&twice, &w.trusted)), (1, 2));
}

#[test]
fn a_forged_or_unknown_cosigner_is_refused() {
    let w = world();
    let first = quorum_receipt(&w, &w.alice, 2);

    // A key airlock does not trust.
    let mallory = join(Some(first.clone()), cosign(&first, &w.mallory)).expect("joins");
    assert_eq!(
        verify(&mallory, &w.trusted).expect_err("refused"),
        ReceiptError::UntrustedKey(w.mallory.key_id())
    );

    // Bob's name put on alice's approval afterwards: what she signed no longer matches.
    let mut forged = join(Some(first.clone()), cosign(&first, &w.alice)).expect("joins");
    forged.cosigners[0].approver = "bob".into();
    forged.cosigners[0].approver_key_id = w.bob.key_id();
    assert_eq!(
        verify(&forged, &w.trusted).expect_err("refused"),
        ReceiptError::BadSignature(w.alice.key_id())
    );

    // Alice signing in bob's name with her own key.
    let in_bobs_name =
        sign(first.body.in_name_of("bob", &w.alice.key_id()), &w.alice).expect("sign");
    let forged = join(Some(first.clone()), in_bobs_name).expect("joins");
    assert!(matches!(
        verify(&forged, &w.trusted),
        Err(ReceiptError::ApproverMismatch { .. })
    ));

    // Bob's key named, alice's signature given.
    let view = first.body.in_name_of("bob", &w.bob.key_id());
    let alice_sig = sign(view, &w.alice).expect("sign").signatures;
    let mut forged = first.clone();
    forged.cosigners.push(Cosigner {
        approver: "bob".into(),
        approver_key_id: w.bob.key_id(),
        webauthn: None,
        signatures: alice_sig,
    });
    assert_eq!(
        verify(&forged, &w.trusted).expect_err("refused"),
        ReceiptError::ApproverDidNotSign(w.bob.key_id())
    );

    // Bob's signature over another body (a longer window) is not joined...
    let mut other = first.body.in_name_of("bob", &w.bob.key_id());
    other.expires_at = other.expires_at.saturating_add(Duration::hours(1));
    let other = sign(other, &w.bob).expect("sign");
    assert!(matches!(
        join(Some(first.clone()), other.clone()),
        Err(ReceiptError::Quorum(_))
    ));
    // ...and moved in by hand it does not verify.
    let mut moved = first.clone();
    moved.cosigners.push(Cosigner {
        approver: "bob".into(),
        approver_key_id: w.bob.key_id(),
        webauthn: None,
        signatures: other.signatures,
    });
    assert_eq!(
        verify(&moved, &w.trusted).expect_err("refused"),
        ReceiptError::BadSignature(w.bob.key_id())
    );

    // The body edited after both signed (the quorum lowered).
    let both = join(Some(first.clone()), cosign(&first, &w.bob)).expect("joins");
    let mut v = to_value(&both);
    v["body"]["uses"] = json!(5);
    assert!(matches!(
        reparse(&v).and_then(|r| verify(&r, &w.trusted)),
        Err(ReceiptError::BadSignature(_))
    ));
    let mut v = to_value(&first);
    v["body"].as_object_mut().expect("body").remove("quorum");
    assert_eq!(
        reparse(&v)
            .and_then(|r| verify(&r, &w.trusted))
            .expect_err("refused"),
        ReceiptError::BadSignature(w.alice.key_id())
    );
}

#[test]
fn one_denial_denies() {
    let w = world();
    let first = quorum_receipt(&w, &w.alice, 2);
    let mut no = first.body.in_name_of("bob", &w.bob.key_id());
    no.decision = Decision::Deny;
    let no = sign(no, &w.bob).expect("sign");
    // Never joined to the approvals...
    assert!(matches!(
        join(Some(first.clone()), no.clone()),
        Err(ReceiptError::Quorum(_))
    ));
    // ...and on its own it is genuine and authorizes nothing, whatever its quorum.
    let v = verify(&no, &w.trusted).expect("a denial needs no quorum");
    assert_eq!(
        check_binding(&v, &request(), T0 + Duration::minutes(1)).expect_err("denied"),
        ReceiptError::Denied {
            approver: "bob".into()
        }
    );
    // Cosigners on a denial are refused outright.
    let mut both = join(Some(first.clone()), cosign(&first, &w.bob)).expect("joins");
    both.body.decision = Decision::Deny;
    assert_eq!(
        verify(&both, &w.trusted).expect_err("refused"),
        ReceiptError::Quorum("a denial has no cosigners")
    );
}

#[test]
fn the_config_can_require_more_and_name_who_counts() {
    let w = world();
    let first = quorum_receipt(&w, &w.alice, 2);
    let both = join(Some(first.clone()), cosign(&first, &w.bob)).expect("joins");
    let v = verify(&both, &w.trusted).expect("verifies");
    // The config now needs three.
    let three = Quorum {
        approvals: 3,
        approvers: None,
    };
    assert_eq!(
        v.check_quorum(&three).expect_err("refused"),
        ReceiptError::QuorumNotMet { have: 2, need: 3 }
    );
    // Only alice and carol count: bob's approval does not.
    let named = Quorum {
        approvals: 2,
        approvers: Some(vec!["alice".into(), "carol".into()]),
    };
    assert_eq!(
        v.check_quorum(&named).expect_err("refused"),
        ReceiptError::QuorumNotMet { have: 1, need: 2 }
    );
    // A receipt for one approver does not meet a config that needs two.
    let single = verify(&approved(&w), &w.trusted).expect("verifies");
    assert_eq!(
        single
            .check_quorum(&Quorum {
                approvals: 2,
                approvers: None
            })
            .expect_err("refused"),
        ReceiptError::QuorumNotMet { have: 1, need: 2 }
    );
    single
        .check_quorum(&Quorum::default())
        .expect("one is enough");
}

#[test]
fn a_passkey_cosigner_is_checked_like_a_passkey_approval() {
    let (w, mut auth) = passkey_world();
    let first = quorum_receipt(&w, &w.alice, 2);
    let passkey = auth.passkey("carol");
    let view = first.body.in_name_of(passkey.name(), passkey.key_id());
    let theirs = passkey_receipt(&w, &mut auth, view);
    let both = join(Some(first.clone()), theirs).expect("joins");
    let v = verify(&both, &w.trusted).expect("verifies");
    assert_eq!(v.approvers(), ["alice", "carol"]);

    // Without airlock's countersignature the assertion alone does not count.
    let mut bare = both.clone();
    bare.cosigners[0].signatures.clear();
    bare.cosigners[0].signatures.push(
        sign(first.body.in_name_of("carol", passkey.key_id()), &w.bob)
            .expect("sign")
            .signatures
            .remove(0),
    );
    assert!(verify(&bare, &w.trusted).is_err());
}

#[test]
fn one_approver_receipts_are_written_as_before() {
    let w = world();
    let r = approved(&w);
    let v = to_value(&r);
    // No new field in the body or the envelope: the canonical bytes an older airlock
    // signed are the bytes this one checks.
    assert!(v["body"].get("quorum").is_none());
    assert!(v.get("cosigners").is_none());
    assert_eq!(
        v["body"].as_object().expect("body").len(),
        BODY_FIELDS.len()
    );
    // A quorum of one has one form only, and so does an empty cosigner list.
    for (path, value) in [("quorum", json!(1)), ("quorum", json!(0))] {
        let mut e = v.clone();
        e["body"][path] = value;
        assert!(matches!(reparse(&e), Err(ReceiptError::Malformed(_))));
    }
    let mut e = v.clone();
    e["body"]["quorum"] = json!(MAX_QUORUM + 1);
    assert!(matches!(reparse(&e), Err(ReceiptError::Malformed(_))));
    let mut e = v.clone();
    e["cosigners"] = json!([]);
    assert!(matches!(reparse(&e), Err(ReceiptError::Malformed(_))));
    // A cosigner on a body that needs one approver is refused.
    let mut extra = r.clone();
    extra.cosigners.push(Cosigner {
        approver: "bob".into(),
        approver_key_id: w.bob.key_id(),
        webauthn: None,
        signatures: cosign(&r, &w.bob).signatures,
    });
    assert!(matches!(
        verify(&extra, &w.trusted),
        Err(ReceiptError::Quorum(_))
    ));
}

#[test]
fn a_body_alone_is_held_to_the_most_any_matching_rule_requires() {
    let w = world();
    let mut body = body_by(&w.alice, Decision::Approve);
    let call = body.bound_call();
    assert_eq!(call.action(), "rds:DeleteDBInstance");
    assert!(
        call.params.is_empty(),
        "a receipt carries only the parameters' digest"
    );
    assert_eq!(
        call.resources[0].arn.as_deref(),
        Some("arn:aws:rds:eu-west-1:111111111111:db:prod-db")
    );
    // A rule that needs two for deletes without a final snapshot: the approved call kept
    // one, but the body cannot show it, so the body is held to two.
    let policy = crate::policy::Policy {
        rules: toml::from_str::<std::collections::BTreeMap<String, Vec<crate::policy::Rule>>>(
            concat!(
                r#"rule = [{ name = "two-without-final-snapshot", effect = "require_receipt", "#,
                r#"actions = ["rds:DeleteDBInstance"], resources = ["DBInstanceIdentifier=prod-*"], "#,
                r#"environments = ["prod"], agents = ["claude"], "#,
                r#"when = { SkipFinalSnapshot = "true" }, approvals = 2 }]"#
            ),
        )
        .expect("rules")
        .remove("rule")
        .expect("rule"),
        ..Default::default()
    };
    let required = policy.quorum_bound(&call, &body.agent, &body.environment);
    assert_eq!(required.approvals, 2);
    let signed = sign(body.clone(), &w.alice).expect("sign");
    let v = verify_signatures(&signed, &w.trusted).expect("genuine");
    assert!(!v.tally(&required).complete());
    // A resource bound as `member=value` is matched as such; another agent, environment or
    // resource matches no rule: one approver.
    body.resources = vec!["DBInstanceIdentifier=prod-db".into()];
    let call = body.bound_call();
    assert_eq!(call.resources[0].member, "DBInstanceIdentifier");
    assert_eq!(call.resources[0].value, "prod-db");
    assert_eq!(policy.quorum_bound(&call, "claude", "prod").approvals, 2);
    assert_eq!(
        policy.quorum_bound(&call, "someone-else", "prod").approvals,
        1
    );
    assert_eq!(policy.quorum_bound(&call, "claude", "staging").approvals, 1);
    body.resources = vec!["DBInstanceIdentifier=test-db".into()];
    assert_eq!(
        policy
            .quorum_bound(&body.bound_call(), "claude", "prod")
            .approvals,
        1
    );
}
