//! Receipts end to end: sign, write, read, verify, bind — and every way that must fail.

use super::webauthn::soft::Authenticator;
use super::*;
use crate::identify::{AwsCall, Resource};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2026-02-26 12:00:00 UTC);

fn delete_db(instance: &str, skip_final_snapshot: bool) -> AwsCall {
    let mut params = BTreeMap::new();
    params.insert("DBInstanceIdentifier".to_owned(), instance.to_owned());
    params.insert(
        "SkipFinalSnapshot".to_owned(),
        skip_final_snapshot.to_string(),
    );
    AwsCall {
        service: "rds".into(),
        signing_name: "rds".into(),
        operation: "DeleteDBInstance".into(),
        region: "eu-west-1".into(),
        account: Some("111111111111".into()),
        resources: vec![Resource {
            member: "DBInstanceIdentifier".into(),
            value: instance.into(),
            arn: Some(format!("arn:aws:rds:eu-west-1:111111111111:db:{instance}")),
        }],
        params,
    }
}

struct World {
    alice: ApproverKey,
    bob: ApproverKey,
    airlock: ApproverKey,
    mallory: ApproverKey,
    trusted: TrustedKeys,
}

fn world() -> World {
    let key = |name| ApproverKey::generate(name).expect("key");
    let (alice, bob, airlock, mallory) = (key("alice"), key("bob"), key("airlock"), key("mallory"));
    let mut trusted = TrustedKeys::new();
    trusted.add_approver(&alice.public()).expect("alice");
    trusted.add_approver(&bob.public()).expect("bob");
    trusted.add_airlock(&airlock.public()).expect("airlock");
    World {
        alice,
        bob,
        airlock,
        mallory,
        trusted,
    }
}

fn request() -> Binding {
    Binding::of(&delete_db("prod-db", false), "claude", "prod")
}

fn body_by(key: &ApproverKey, decision: Decision) -> ReceiptBody {
    ReceiptBody::new(
        &request(),
        "apr-1",
        decision,
        &key.public(),
        Validity::starting(T0),
    )
}

fn approved(w: &World) -> Receipt {
    sign(body_by(&w.alice, Decision::Approve), &w.alice).expect("sign")
}

fn to_value(r: &Receipt) -> Value {
    serde_json::from_str(&r.to_json().expect("json")).expect("value")
}

fn reparse(v: &Value) -> Result<Receipt, ReceiptError> {
    Receipt::from_json(v.to_string().as_bytes())
}

const BODY_FIELDS: [&str; 19] = [
    "format",
    "id",
    "decision",
    "agent",
    "environment",
    "account",
    "region",
    "service",
    "operation",
    "resources",
    "params_digest",
    "issued_at",
    "not_before",
    "expires_at",
    "uses",
    "approver",
    "approver_key_id",
    "webauthn",
    "approval_id",
];

fn assertion() -> WebAuthnAssertion {
    WebAuthnAssertion {
        credential_id: "Y3JlZA".into(),
        authenticator_data: "YXV0aA".into(),
        client_data_json: "e30".into(),
        signature: "c2ln".into(),
        batch: Vec::new(),
    }
}

#[test]
fn round_trip() {
    let w = world();
    let receipt = approved(&w);
    let text = receipt.to_json().expect("json");
    let back = Receipt::from_json(text.as_bytes()).expect("parses");
    assert_eq!(back, receipt);

    let verified = verify(&back, &w.trusted).expect("verifies");
    assert_eq!(verified.body().decision, Decision::Approve);
    assert_eq!(verified.signers().len(), 1);
    assert_eq!(verified.signers()[0].name, "alice");
    assert_eq!(verified.signers()[0].role, Role::Approver);
    check_binding(&verified, &request(), T0 + Duration::minutes(1)).expect("binds");
    authorize(&back, &w.trusted, &request(), T0).expect("authorizes");

    let b = verified.body();
    assert_eq!(b.approver_key_id, w.alice.key_id());
    assert_eq!(b.expires_at.to_string(), "2026-02-26T12:15:00Z");
    assert_eq!(b.uses, 1);
    assert_eq!(
        b.resources,
        ["arn:aws:rds:eu-west-1:111111111111:db:prod-db"]
    );
    assert_eq!(b.params_digest, delete_db("prod-db", false).params_digest());
}

#[test]
fn every_field_is_written_even_when_null() {
    let w = world();
    let mut body = body_by(&w.alice, Decision::Approve);
    body.account = None;
    let receipt = sign(body, &w.alice).expect("sign");
    let v = to_value(&receipt);
    let keys: Vec<&str> = v["body"]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = BODY_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(v["body"]["account"], Value::Null);
    assert_eq!(v["body"]["webauthn"], Value::Null);
    let canonical =
        String::from_utf8(receipt.body.canonical_bytes().expect("bytes")).expect("utf8");
    assert!(canonical.contains(r#""account":null"#), "{canonical}");
    assert!(canonical.contains(r#""webauthn":null"#), "{canonical}");
    verify(&receipt, &w.trusted).expect("verifies");
}

/// Other values for `field` that still parse, so the signature check is what catches them.
fn edits(field: &str, v: &Value, w: &World) -> Vec<Value> {
    let s = v.as_str().unwrap_or_default();
    let shift = |secs: i64| {
        let t = Timestamp::parse(s).expect("a time");
        json!(Timestamp::from_datetime(t.as_datetime() + Duration::seconds(secs)).to_string())
    };
    let flip_hex = || {
        let mut t = s.to_owned();
        let last = if t.ends_with('0') { "1" } else { "0" };
        t.pop();
        json!(t + last)
    };
    match field {
        "format" => vec![json!("airlock-receipt/2")],
        "id" | "params_digest" => vec![flip_hex()],
        "decision" => vec![json!("deny")],
        "agent" | "environment" | "region" | "service" | "operation" | "approver"
        | "approval_id" => vec![json!(format!("{s}x")), json!(""), json!(s.to_uppercase())],
        "account" => vec![Value::Null, json!("222222222222")],
        "resources" => vec![
            json!([]),
            json!(["arn:aws:rds:eu-west-1:111111111111:db:staging-db"]),
            json!([v[0].clone(), "DBInstanceIdentifier=x"]),
        ],
        "issued_at" => vec![shift(-1)],
        "not_before" => vec![shift(-1), shift(1)],
        "expires_at" => vec![shift(3600), shift(-1)],
        "uses" => vec![json!(2), json!(0), json!(u32::MAX)],
        "approver_key_id" => vec![
            json!(w.bob.key_id().as_str()),
            json!(w.airlock.key_id().as_str()),
        ],
        "webauthn" => vec![serde_json::to_value(assertion()).expect("value")],
        other => panic!("no edit for body field {other:?}: add one here"),
    }
}

#[test]
fn every_body_field_edited_after_signing_is_rejected() {
    let w = world();
    let original = to_value(&approved(&w));
    let fields: Vec<String> = original["body"]
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(fields.len(), BODY_FIELDS.len());
    let mut tried = 0;
    for field in &fields {
        for edit in edits(field, &original["body"][field], &w) {
            assert_ne!(
                edit, original["body"][field],
                "{field}: edit changes nothing"
            );
            let mut v = original.clone();
            v["body"][field] = edit.clone();
            let result = reparse(&v).and_then(|r| verify(&r, &w.trusted));
            match (field.as_str(), result) {
                ("format", Err(ReceiptError::UnknownFormat { .. })) => {}
                (_, Err(ReceiptError::BadSignature(k))) => assert_eq!(k, w.alice.key_id()),
                (_, other) => panic!("{field} = {edit}: expected a bad signature, got {other:?}"),
            }
            tried += 1;
        }
    }
    assert!(tried > BODY_FIELDS.len());
}

/// A passkey approval as the approval page makes it: body for the passkey, assertion over
/// its challenge, airlock's countersignature.
fn passkey_receipt(w: &World, auth: &mut Authenticator, body: ReceiptBody) -> Receipt {
    let challenge = body.passkey_challenge().expect("challenge");
    let mut body = body;
    body.webauthn = Some(auth.assert(&challenge, "http://localhost:8444"));
    let mut r = Receipt {
        body,
        signatures: Vec::new(),
        cosigners: Vec::new(),
    };
    r.countersign(&w.airlock).expect("countersign");
    r
}

fn passkey_body(auth: &Authenticator, name: &str, decision: Decision) -> ReceiptBody {
    // Made as a key approval's body, then turned into the passkey's.
    let mut body = body_by(
        &ApproverKey::generate("placeholder").expect("key"),
        decision,
    );
    let passkey = auth.passkey(name);
    body.approver = passkey.name().to_owned();
    body.approver_key_id = passkey.key_id().clone();
    body
}

fn passkey_world() -> (World, Authenticator) {
    let mut w = world();
    let auth = Authenticator::new("localhost");
    w.trusted
        .add_passkey(&auth.passkey("carol"))
        .expect("passkey");
    (w, auth)
}

#[test]
fn a_passkey_approval_verifies_and_binds() {
    let (w, mut auth) = passkey_world();
    let r = {
        let b = passkey_body(&auth, "carol", Decision::Approve);
        passkey_receipt(&w, &mut auth, b)
    };
    let text = r.to_json().expect("json");
    let back = Receipt::from_json(text.as_bytes()).expect("parses");
    let v = verify(&back, &w.trusted).expect("verifies");
    let roles: Vec<Role> = v.signers().iter().map(|s| s.role).collect();
    assert_eq!(roles, vec![Role::Airlock, Role::Passkey]);
    assert_eq!(v.signers()[1].name, "carol");
    check_binding(&v, &request(), T0 + Duration::minutes(1)).expect("binds");
    let other = Binding::of(&delete_db("staging-db", false), "claude", "prod");
    assert!(check_binding(&v, &other, T0 + Duration::minutes(1)).is_err());
}

#[test]
fn a_passkey_approval_needs_every_part() {
    let (w, mut auth) = passkey_world();
    let body = passkey_body(&auth, "carol", Decision::Approve);

    // Not countersigned by airlock (an approver's key instead).
    let mut r = passkey_receipt(&w, &mut auth, body.clone());
    r.signatures.clear();
    r.countersign(&w.alice).expect("sign");
    assert_eq!(
        verify(&r, &w.trusted).expect_err("refused"),
        ReceiptError::NotCountersigned
    );

    // A passkey that is not enrolled.
    let mut stranger = Authenticator::new("localhost");
    let r = {
        let b = passkey_body(&stranger, "carol", Decision::Approve);
        passkey_receipt(&w, &mut stranger, b)
    };
    assert!(matches!(
        verify(&r, &w.trusted),
        Err(ReceiptError::UntrustedKey(_))
    ));

    // The enrolled passkey, but the body names someone else.
    let mut named = body.clone();
    named.approver = "alice".into();
    let r = passkey_receipt(&w, &mut auth, named);
    assert!(matches!(
        verify(&r, &w.trusted),
        Err(ReceiptError::ApproverMismatch { .. })
    ));

    // An assertion made for another body, moved into this one (airlock re-countersigning
    // even, so only the assertion check can catch it).
    let other = passkey_body(&auth, "carol", Decision::Approve);
    let moved = passkey_receipt(&w, &mut auth, other).body.webauthn;
    let mut r = Receipt {
        body: body.clone(),
        signatures: Vec::new(),
        cosigners: Vec::new(),
    };
    r.body.webauthn = moved;
    r.countersign(&w.airlock).expect("countersign");
    assert_eq!(
        verify(&r, &w.trusted).expect_err("refused"),
        ReceiptError::Passkey(WebAuthnError::Challenge)
    );

    // A denial turned into an approval after the touch.
    let mut r = {
        let b = passkey_body(&auth, "carol", Decision::Deny);
        passkey_receipt(&w, &mut auth, b)
    };
    r.body.decision = Decision::Approve;
    r.signatures.clear();
    r.countersign(&w.airlock).expect("countersign");
    assert_eq!(
        verify(&r, &w.trusted).expect_err("refused"),
        ReceiptError::Passkey(WebAuthnError::Challenge)
    );

    // A passkey denial verifies, and authorizes nothing.
    let r = {
        let b = passkey_body(&auth, "carol", Decision::Deny);
        passkey_receipt(&w, &mut auth, b)
    };
    let v = verify(&r, &w.trusted).expect("a genuine denial");
    assert!(matches!(
        check_binding(&v, &request(), T0),
        Err(ReceiptError::Denied { .. })
    ));
}

#[test]
fn every_passkey_field_edited_after_signing_is_rejected() {
    let (w, mut auth) = passkey_world();
    let receipt = {
        let b = passkey_body(&auth, "carol", Decision::Approve);
        passkey_receipt(&w, &mut auth, b)
    };
    verify(&receipt, &w.trusted).expect("untouched, it verifies");
    let original = to_value(&receipt);
    for field in [
        "credential_id",
        "authenticator_data",
        "client_data_json",
        "signature",
    ] {
        let mut v = original.clone();
        v["body"]["webauthn"][field] = json!("QUFB");
        let r = reparse(&v).expect("parses");
        // airlock's signature covers the whole body...
        assert_eq!(
            verify(&r, &w.trusted).expect_err(field),
            ReceiptError::BadSignature(w.airlock.key_id())
        );
        // ...and even re-countersigned, the assertion itself does not check out.
        let mut r = r;
        r.signatures.clear();
        r.countersign(&w.airlock).expect("countersign");
        assert!(
            matches!(verify(&r, &w.trusted), Err(ReceiptError::Passkey(_))),
            "{field}"
        );
    }
    let mut v = original.clone();
    v["body"]["webauthn"]["batch"] = json!(["00"]);
    assert_eq!(
        verify(&reparse(&v).expect("parses"), &w.trusted).expect_err("batch"),
        ReceiptError::BadSignature(w.airlock.key_id())
    );
}

#[test]
fn one_touch_approves_a_batch_and_each_receipt_stands_alone() {
    let (w, mut auth) = passkey_world();
    let bodies: Vec<ReceiptBody> = (0..3)
        .map(|i| {
            let mut b = passkey_body(&auth, "carol", Decision::Approve);
            b.approval_id = format!("apr-{i}");
            b
        })
        .collect();
    let hashes: Vec<[u8; 32]> = bodies
        .iter()
        .map(|b| b.passkey_challenge().expect("challenge"))
        .collect();
    let batch: Vec<String> = hashes.iter().map(hex::encode).collect();
    let assertion = auth.assert(&webauthn::batch_challenge(&hashes), "http://localhost:8444");
    let receipts: Vec<Receipt> = bodies
        .iter()
        .map(|b| {
            let mut b = b.clone();
            let mut a = assertion.clone();
            a.batch = batch.clone();
            b.webauthn = Some(a);
            let mut r = Receipt {
                body: b,
                signatures: Vec::new(),
                cosigners: Vec::new(),
            };
            r.countersign(&w.airlock).expect("countersign");
            r
        })
        .collect();
    for r in &receipts {
        let back = Receipt::from_json(r.to_json().expect("json").as_bytes()).expect("parses");
        verify(&back, &w.trusted).expect("each verifies alone");
    }

    // Each way of bending the batch, re-countersigned so only the passkey check decides.
    let bent = |edit: &dyn Fn(&mut Vec<String>)| {
        let mut r = receipts[0].clone();
        if let Some(a) = r.body.webauthn.as_mut() {
            edit(&mut a.batch);
        }
        r.signatures.clear();
        r.countersign(&w.airlock).expect("countersign");
        verify(&r, &w.trusted).expect_err("refused")
    };
    // Without its own entry.
    assert!(matches!(
        bent(&|b| {
            b.remove(0);
        }),
        ReceiptError::Passkey(WebAuthnError::Batch(_))
    ));
    // A sibling dropped: the list no longer hashes to what was signed.
    assert_eq!(
        bent(&|b| {
            b.remove(2);
        }),
        ReceiptError::Passkey(WebAuthnError::Challenge)
    );
    // Reordered.
    assert_eq!(
        bent(&|b| b.swap(1, 2)),
        ReceiptError::Passkey(WebAuthnError::Challenge)
    );
    // Its own entry twice.
    assert!(matches!(
        bent(&|b| {
            let first = b[0].clone();
            b.push(first);
        }),
        ReceiptError::Passkey(WebAuthnError::Batch(_))
    ));
    // A batch of one (a single approval has an empty batch, one form only).
    assert!(matches!(
        bent(&|b| b.truncate(1)),
        ReceiptError::Passkey(WebAuthnError::Batch(_))
    ));
    // Upper-case hex.
    assert!(matches!(
        bent(&|b| b[1] = b[1].to_uppercase()),
        ReceiptError::Passkey(WebAuthnError::Batch(_))
    ));
}

#[test]
fn edited_signatures_are_rejected() {
    let w = world();
    let original = to_value(&approved(&w));

    let mut v = original.clone();
    v["signatures"][0]["key_id"] = json!(w.bob.key_id().as_str());
    assert_eq!(
        verify(&reparse(&v).expect("parses"), &w.trusted).map(|_| ()),
        Err(ReceiptError::BadSignature(w.bob.key_id()))
    );

    let mut receipt = approved(&w);
    let mut bytes = receipt.signatures[0].signature.to_bytes();
    bytes[10] ^= 1;
    receipt.signatures[0].signature = ed25519_dalek::Signature::from_bytes(&bytes);
    assert_eq!(
        verify(&receipt, &w.trusted).map(|_| ()),
        Err(ReceiptError::BadSignature(w.alice.key_id()))
    );

    // The same signature with S + L (the group order): valid maths, non-canonical encoding.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut receipt = approved(&w);
    let mut bytes = receipt.signatures[0].signature.to_bytes();
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(bytes[32 + i]) + u16::from(L[i]) + carry;
        bytes[32 + i] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    receipt.signatures[0].signature = ed25519_dalek::Signature::from_bytes(&bytes);
    assert_eq!(
        verify(&receipt, &w.trusted).map(|_| ()),
        Err(ReceiptError::BadSignature(w.alice.key_id()))
    );
}

#[test]
fn untrusted_signers_are_rejected() {
    let w = world();

    // Signed by a key the config does not list, even though it names itself "mallory" or
    // claims to be alice.
    let by_mallory = sign(body_by(&w.mallory, Decision::Approve), &w.mallory).expect("sign");
    assert_eq!(
        verify(&by_mallory, &w.trusted).map(|_| ()),
        Err(ReceiptError::UntrustedKey(w.mallory.key_id()))
    );
    let mut posing = body_by(&w.alice, Decision::Approve);
    posing.approver_key_id = w.mallory.key_id();
    let posing = sign(posing, &w.mallory).expect("sign");
    assert_eq!(
        verify(&posing, &w.trusted).map(|_| ()),
        Err(ReceiptError::UntrustedKey(w.mallory.key_id()))
    );

    // A valid approval plus an untrusted signature is still rejected.
    let mut extra = approved(&w);
    extra.countersign(&w.mallory).expect("countersign");
    assert_eq!(
        verify(&extra, &w.trusted).map(|_| ()),
        Err(ReceiptError::UntrustedKey(w.mallory.key_id()))
    );

    // No signature at all; the same signature twice.
    let mut unsigned = approved(&w);
    unsigned.signatures.clear();
    assert_eq!(
        verify(&unsigned, &w.trusted).map(|_| ()),
        Err(ReceiptError::Unsigned)
    );
    let mut twice = approved(&w);
    twice.signatures.push(twice.signatures[0].clone());
    assert_eq!(
        verify(&twice, &w.trusted).map(|_| ()),
        Err(ReceiptError::DuplicateSignature(w.alice.key_id()))
    );
    let mut again = approved(&w);
    assert_eq!(
        again.countersign(&w.alice),
        Err(ReceiptError::DuplicateSignature(w.alice.key_id()))
    );
}

#[test]
fn the_approver_named_must_be_the_one_who_signed() {
    let w = world();

    // Alice signs a body that says bob approved (with bob's key id): bob never signed.
    let mut says_bob = body_by(&w.bob, Decision::Approve);
    says_bob.id = ReceiptId::random();
    let says_bob = sign(says_bob, &w.alice).expect("sign");
    assert_eq!(
        verify(&says_bob, &w.trusted).map(|_| ()),
        Err(ReceiptError::ApproverDidNotSign(w.bob.key_id()))
    );

    // Alice's key, but the name bob.
    let mut renamed = body_by(&w.alice, Decision::Approve);
    renamed.approver = "bob".into();
    let renamed = sign(renamed, &w.alice).expect("sign");
    assert!(matches!(
        verify(&renamed, &w.trusted),
        Err(ReceiptError::ApproverMismatch { ref holder, ref claimed, .. })
            if holder == "alice" && claimed == "bob"
    ));

    // airlock's own key approves nothing by itself.
    let by_airlock = sign(body_by(&w.airlock, Decision::Approve), &w.airlock).expect("sign");
    assert_eq!(
        verify(&by_airlock, &w.trusted).map(|_| ()),
        Err(ReceiptError::NotAnApproverKey(w.airlock.key_id()))
    );

    // Countersigned by airlock: fine, two signers.
    let mut both = approved(&w);
    both.countersign(&w.airlock).expect("countersign");
    let verified = authorize(&both, &w.trusted, &request(), T0).expect("authorizes");
    let roles: Vec<Role> = verified.signers().iter().map(|s| s.role).collect();
    assert_eq!(roles, [Role::Approver, Role::Airlock]);
}

#[test]
fn a_denial_verifies_but_never_authorizes() {
    let w = world();
    let denial = sign(body_by(&w.alice, Decision::Deny), &w.alice).expect("sign");
    let verified = verify(&denial, &w.trusted).expect("a genuine denial");
    assert_eq!(verified.body().decision, Decision::Deny);
    let denied = ReceiptError::Denied {
        approver: "alice".into(),
    };
    assert_eq!(
        check_binding(&verified, &request(), T0),
        Err(denied.clone())
    );
    assert_eq!(
        authorize(&denial, &w.trusted, &request(), T0).map(|_| ()),
        Err(denied)
    );
}

#[test]
fn binding_must_match_the_call_exactly() {
    let w = world();
    let verified = verify(&approved(&w), &w.trusted).expect("verifies");
    let field_of = |b: Binding| match check_binding(&verified, &b, T0) {
        Err(ReceiptError::Mismatch { field, .. }) => field,
        other => panic!("expected a mismatch, got {other:?}"),
    };

    assert_eq!(
        field_of(Binding::of(
            &delete_db("staging-db", false),
            "claude",
            "prod"
        )),
        "resources"
    );
    assert_eq!(
        field_of(Binding::of(&delete_db("prod-db", true), "claude", "prod")),
        "params_digest"
    );
    assert_eq!(
        field_of(Binding::of(&delete_db("prod-db", false), "codex", "prod")),
        "agent"
    );
    assert_eq!(
        field_of(Binding::of(
            &delete_db("prod-db", false),
            "claude",
            "staging"
        )),
        "environment"
    );

    let mut other = delete_db("prod-db", false);
    other.account = Some("222222222222".into());
    assert_eq!(field_of(Binding::of(&other, "claude", "prod")), "account");
    other.account = None;
    assert_eq!(field_of(Binding::of(&other, "claude", "prod")), "account");

    let mut other = delete_db("prod-db", false);
    other.region = "us-east-1".into();
    assert_eq!(field_of(Binding::of(&other, "claude", "prod")), "region");

    let mut other = delete_db("prod-db", false);
    other.service = "docdb".into();
    assert_eq!(field_of(Binding::of(&other, "claude", "prod")), "service");

    let mut other = delete_db("prod-db", false);
    other.operation = "DeleteDBCluster".into();
    assert_eq!(field_of(Binding::of(&other, "claude", "prod")), "operation");

    // Same resource named by member=value instead of its ARN: not the same binding.
    let mut other = delete_db("prod-db", false);
    other.resources[0].arn = None;
    assert_eq!(field_of(Binding::of(&other, "claude", "prod")), "resources");

    // The message names the check and both values, quoted.
    let err = check_binding(
        &verified,
        &Binding::of(&delete_db("staging-db", false), "claude", "prod"),
        T0,
    )
    .expect_err("mismatch");
    let msg = err.to_string();
    assert!(
        msg.contains("resources") && msg.contains("prod-db") && msg.contains("staging-db"),
        "{msg}"
    );
}

#[test]
fn time_window_is_not_before_inclusive_expiry_exclusive() {
    let w = world();
    let verified = verify(&approved(&w), &w.trusted).expect("verifies");
    let at = |t| check_binding(&verified, &request(), t);
    assert_eq!(at(T0), Ok(()));
    assert_eq!(at(T0 + Duration::seconds(899)), Ok(()));
    let expires = Timestamp::parse("2026-02-26T12:15:00Z").expect("time");
    assert_eq!(
        at(T0 + Duration::minutes(15)),
        Err(ReceiptError::Expired(expires))
    );
    assert_eq!(
        at(T0 + Duration::days(30)),
        Err(ReceiptError::Expired(expires))
    );
    let starts = Timestamp::from_datetime(T0);
    assert_eq!(
        at(T0 - Duration::seconds(1)),
        Err(ReceiptError::NotYetValid(starts))
    );
    assert_eq!(
        at(T0 - Duration::nanoseconds(1)),
        Err(ReceiptError::NotYetValid(starts))
    );
}

#[test]
fn times_must_be_in_order() {
    let w = world();
    let check = |edit: &dyn Fn(&mut ReceiptBody)| {
        let mut body = body_by(&w.alice, Decision::Approve);
        edit(&mut body);
        verify(&sign(body, &w.alice).expect("sign"), &w.trusted).map(|_| ())
    };
    let at = |s: &str| Timestamp::parse(s).expect("time");
    assert!(matches!(
        check(&|b| b.expires_at = b.not_before),
        Err(ReceiptError::Times(_))
    ));
    assert!(matches!(
        check(&|b| b.not_before = at("2026-02-26T12:30:00Z")),
        Err(ReceiptError::Times(_))
    ));
    assert!(matches!(
        check(&|b| b.issued_at = at("2026-02-26T12:01:01Z")),
        Err(ReceiptError::Times(_))
    ));
    assert_eq!(check(&|b| b.issued_at = at("2026-02-26T12:01:00Z")), Ok(()));
    assert_eq!(check(&|b| b.uses = 0), Err(ReceiptError::NoUses));
}

#[test]
fn validity_follows_the_grant() {
    let w = world();
    let body = ReceiptBody::new(
        &request(),
        "apr-2",
        Decision::Approve,
        &w.bob.public(),
        Validity {
            issued_at: T0 + Duration::milliseconds(700),
            ttl: std::time::Duration::from_secs(3600),
            uses: 3,
        },
    );
    assert_eq!(body.issued_at.to_string(), "2026-02-26T12:00:00Z");
    assert_eq!(body.not_before, body.issued_at);
    assert_eq!(body.expires_at.to_string(), "2026-02-26T13:00:00Z");
    assert_eq!((body.uses, body.approver.as_str()), (3, "bob"));
    assert_eq!(body.binding(), request());
    assert_ne!(body.id, body_by(&w.bob, Decision::Approve).id);
}

fn assert_parse_error(v: &Value, what: &str, expect: &str) {
    match reparse(v) {
        Err(e @ (ReceiptError::Malformed(_) | ReceiptError::Json(_))) => {
            assert!(
                e.to_string().contains(expect),
                "{what}: {e} lacks {expect:?}"
            )
        }
        other => panic!("{what}: expected a parse error, got {other:?}"),
    }
}

#[test]
fn missing_fields_are_parse_errors() {
    let w = world();
    let original = to_value(&approved(&w));
    for field in BODY_FIELDS {
        let mut v = original.clone();
        v["body"].as_object_mut().expect("object").remove(field);
        assert_parse_error(&v, field, &format!("missing field `{field}`"));
    }
    for field in ["key_id", "algorithm", "signature"] {
        let mut v = original.clone();
        v["signatures"][0]
            .as_object_mut()
            .expect("object")
            .remove(field);
        assert_parse_error(&v, field, &format!("missing field `{field}`"));
    }
    for field in ["body", "signatures"] {
        let mut v = original.clone();
        v.as_object_mut().expect("object").remove(field);
        assert_parse_error(&v, field, &format!("missing field `{field}`"));
    }
    let mut with_passkey = original.clone();
    with_passkey["body"]["webauthn"] = serde_json::to_value(assertion()).expect("value");
    for field in [
        "credential_id",
        "authenticator_data",
        "client_data_json",
        "signature",
        "batch",
    ] {
        let mut v = with_passkey.clone();
        v["body"]["webauthn"]
            .as_object_mut()
            .expect("object")
            .remove(field);
        assert_parse_error(&v, field, &format!("missing field `{field}`"));
    }
}

#[test]
fn null_where_a_value_is_required_is_a_parse_error() {
    let w = world();
    let original = to_value(&approved(&w));
    for field in BODY_FIELDS {
        let mut v = original.clone();
        v["body"][field] = Value::Null;
        let result = reparse(&v);
        match field {
            "account" | "webauthn" => assert!(result.is_ok(), "{field} may be null"),
            "format" => assert!(matches!(result, Err(ReceiptError::UnknownFormat { .. }))),
            _ => assert_parse_error(&v, field, "null"),
        }
    }
    for field in ["key_id", "algorithm", "signature"] {
        let mut v = original.clone();
        v["signatures"][0][field] = Value::Null;
        assert_parse_error(&v, field, "null");
    }
}

#[test]
fn unknown_fields_are_parse_errors() {
    let w = world();
    let original = to_value(&approved(&w));
    let mut v = original.clone();
    v["extra"] = json!(1);
    assert_parse_error(&v, "top", "unknown field `extra`");
    let mut v = original.clone();
    v["body"]["resource"] = json!("arn:aws:rds:eu-west-1:111111111111:db:staging-db");
    assert_parse_error(&v, "body", "unknown field `resource`");
    let mut v = original.clone();
    v["signatures"][0]["public_key"] = json!("AAAA");
    assert_parse_error(&v, "signature", "unknown field `public_key`");
    let mut v = original.clone();
    let mut passkey = serde_json::to_value(assertion()).expect("value");
    passkey["user_verified"] = json!(true);
    v["body"]["webauthn"] = passkey;
    assert_parse_error(&v, "webauthn", "unknown field `user_verified`");
}

#[test]
fn duplicate_keys_are_parse_errors() {
    let w = world();
    let text = approved(&w).to_json().expect("json");
    let cases = [
        // Either order: a reader that keeps the first and one that keeps the last disagree.
        text.replacen("\"agent\": ", "\"agent\": \"codex\", \"agent\": ", 1),
        text.replacen(
            "\"agent\": \"claude\"",
            "\"agent\": \"claude\", \"agent\": \"codex\"",
            1,
        ),
        text.replacen(
            "\"agent\": \"claude\"",
            "\"agent\": \"claude\", \"agent\": \"claude\"",
            1,
        ),
        text.replacen(
            "\"key_id\": ",
            "\"key_id\": \"0000000000000000\", \"key_id\": ",
            1,
        ),
        text.replacen("\"body\": ", "\"signatures\": [], \"body\": ", 1),
        text.replacen("\"agent\"", "\"\\u0061gent\": \"codex\", \"agent\"", 1),
    ];
    for (i, dup) in cases.iter().enumerate() {
        assert_ne!(dup, &text, "case {i} did not apply");
        match Receipt::from_json(dup.as_bytes()) {
            Err(ReceiptError::Json(e)) => assert!(e.contains("duplicate key"), "case {i}: {e}"),
            other => panic!("case {i}: expected a duplicate-key error, got {other:?}"),
        }
    }
}

#[test]
fn wrong_types_and_non_canonical_values_are_parse_errors() {
    let w = world();
    let original = to_value(&approved(&w));
    let body_cases = [
        ("uses", json!("1")),
        ("uses", json!(-1)),
        ("uses", json!(4_294_967_296u64)),
        ("uses", json!(true)),
        (
            "resources",
            json!("arn:aws:rds:eu-west-1:111111111111:db:prod-db"),
        ),
        ("resources", json!([1])),
        ("account", json!(111111111111u64)),
        ("agent", json!(["claude"])),
        ("decision", json!("APPROVE")),
        ("decision", json!("approved")),
        ("issued_at", json!("2026-02-26T12:00:00+00:00")),
        ("issued_at", json!("2026-02-26T12:00:00.000Z")),
        ("issued_at", json!("2026-02-26 12:00:00Z")),
        ("issued_at", json!("2026-02-26t12:00:00z")),
        ("issued_at", json!("2026-2-26T12:00:00Z")),
        ("issued_at", json!(1_772_107_200)),
        ("id", json!("ABCDEF0123456789ABCDEF0123456789")),
        ("id", json!("abc")),
        ("approver_key_id", json!("0123456789abcde")),
        ("webauthn", json!("assertion")),
        (
            "webauthn",
            json!({"credential_id": "a+b/", "authenticator_data": "", "client_data_json": "", "signature": ""}),
        ),
    ];
    for (field, value) in body_cases {
        let mut v = original.clone();
        v["body"][field] = value.clone();
        assert_parse_error(&v, &format!("{field} = {value}"), "");
    }
    let sig_cases = [
        ("algorithm", json!("ed448")),
        ("algorithm", json!("Ed25519")),
        ("signature", json!("AAAA")),
        ("signature", json!("not base64")),
        ("key_id", json!(7)),
    ];
    for (field, value) in sig_cases {
        let mut v = original.clone();
        v["signatures"][0][field] = value.clone();
        assert_parse_error(&v, &format!("{field} = {value}"), "");
    }
    let mut v = original.clone();
    v["signatures"] = json!({});
    assert_parse_error(&v, "signatures object", "");

    // Floats are refused by the reader itself, even where an integer would do.
    let text = original.to_string().replace("\"uses\":1", "\"uses\":1.0");
    assert!(matches!(
        Receipt::from_json(text.as_bytes()),
        Err(ReceiptError::Json(_))
    ));
    let text = original.to_string().replace("\"uses\":1", "\"uses\":1e0");
    assert!(matches!(
        Receipt::from_json(text.as_bytes()),
        Err(ReceiptError::Json(_))
    ));
    // Trailing data, not JSON, too large.
    let text = format!("{original}{{}}");
    assert!(matches!(
        Receipt::from_json(text.as_bytes()),
        Err(ReceiptError::Json(_))
    ));
    assert!(matches!(
        Receipt::from_json(b"\xff"),
        Err(ReceiptError::Json(_))
    ));
    let big = vec![b' '; MAX_RECEIPT_BYTES + 1];
    assert!(matches!(
        Receipt::from_json(&big),
        Err(ReceiptError::Malformed(_))
    ));
}

#[test]
fn another_format_is_named() {
    let w = world();
    let mut v = to_value(&approved(&w));
    v["body"]["format"] = json!("airlock-receipt/2");
    v["body"]["new_field"] = json!(1);
    let err = reparse(&v).expect_err("refused");
    assert_eq!(
        err,
        ReceiptError::UnknownFormat {
            found: "\"airlock-receipt/2\"".into()
        }
    );
    assert!(err.to_string().contains("airlock-receipt/1"));
}

/// Writes `v` with every object's keys reversed and whitespace everywhere.
fn scrambled(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .rev()
                .map(|(k, v)| format!("\n  {} :\t{}", Value::String(k.clone()), scrambled(v)))
                .collect();
            format!("{{ {} \n}}", items.join(" ,"))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(scrambled).collect();
            format!("[ {} ]", items.join(" , "))
        }
        other => other.to_string(),
    }
}

#[test]
fn canonical_bytes_do_not_depend_on_the_file_layout() {
    let w = world();
    let mut body = body_by(&w.alice, Decision::Approve);
    body.webauthn = Some(assertion());
    let receipt = sign(body, &w.alice).expect("sign");
    let v = to_value(&receipt);
    let text = scrambled(&v);
    assert!(
        text.find("\"signatures\"") < text.find("\"body\""),
        "{text}"
    );
    let back = Receipt::from_json(text.as_bytes()).expect("parses");
    assert_eq!(back, receipt);
    assert_eq!(
        back.body.canonical_bytes().expect("bytes"),
        receipt.body.canonical_bytes().expect("bytes")
    );
}

#[test]
fn canonical_bytes_are_exactly_these() {
    let w = world();
    let mut body = body_by(&w.alice, Decision::Approve);
    body.id = ReceiptId::parse("0123456789abcdef0123456789abcdef").expect("id");
    body.approver_key_id = KeyId::parse("00112233445566aa").expect("key id");
    body.params_digest = "d".repeat(64);
    body.webauthn = Some(assertion());
    let canonical = String::from_utf8(body.canonical_bytes().expect("bytes")).expect("utf8");
    let expected = concat!(
        r#"{"account":"111111111111","agent":"claude","approval_id":"apr-1","#,
        r#""approver":"alice","approver_key_id":"00112233445566aa","decision":"approve","#,
        r#""environment":"prod","expires_at":"2026-02-26T12:15:00Z","#,
        r#""format":"airlock-receipt/1","id":"0123456789abcdef0123456789abcdef","#,
        r#""issued_at":"2026-02-26T12:00:00Z","not_before":"2026-02-26T12:00:00Z","#,
        r#""operation":"DeleteDBInstance","params_digest":""#,
        "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
        r#"","region":"eu-west-1","#,
        r#""resources":["arn:aws:rds:eu-west-1:111111111111:db:prod-db"],"#,
        r#""service":"rds","uses":1,"#,
        r#""webauthn":{"authenticator_data":"YXV0aA","batch":[],"client_data_json":"e30","#,
        r#""credential_id":"Y3JlZA","signature":"c2ln"}}"#
    );
    assert_eq!(canonical, expected);
}

#[test]
fn passkey_challenge_covers_everything_but_the_assertion() {
    let w = world();
    let body = body_by(&w.alice, Decision::Approve);
    let challenge = body.passkey_challenge().expect("challenge");
    let mut with_assertion = body.clone();
    with_assertion.webauthn = Some(assertion());
    assert_eq!(
        with_assertion.passkey_challenge().expect("challenge"),
        challenge
    );
    let mut other = body.clone();
    other.resources = vec!["DBInstanceIdentifier=staging-db".into()];
    assert_ne!(other.passkey_challenge().expect("challenge"), challenge);
}

#[test]
fn keys_from_a_receipt_are_never_trusted() {
    // The receipt format has no place for a key: a public key smuggled in is an unknown field.
    let w = world();
    let mut v = to_value(&sign(body_by(&w.mallory, Decision::Approve), &w.mallory).expect("sign"));
    v["trusted_keys"] = json!([w.mallory.public().config_value()]);
    assert_parse_error(&v, "smuggled key", "unknown field");
    // And an empty trust store trusts nothing.
    let receipt = approved(&w);
    assert_eq!(
        verify(&receipt, &TrustedKeys::new()).map(|_| ()),
        Err(ReceiptError::UntrustedKey(w.alice.key_id()))
    );
}

#[test]
fn a_key_written_to_disk_signs_receipts_that_verify() {
    let w = world();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("carol.key");
    let public = keygen(&path, "carol").expect("keygen");
    let block = config_block(&public);
    // As the config would: name and public_key from the [[approver]] block.
    let value_of = |key: &str| {
        block
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .and_then(|l| l.strip_suffix('"'))
            .expect("line")
            .to_owned()
    };
    let from_config =
        ApproverPublic::from_config(&value_of("name"), &value_of("public_key")).expect("parses");
    let mut trusted = w.trusted.clone();
    trusted.add_approver(&from_config).expect("add");

    let carol = ApproverKey::load(&path).expect("load");
    let receipt = sign(body_by(&carol, Decision::Approve), &carol).expect("sign");
    let verified = authorize(&receipt, &trusted, &request(), T0).expect("authorizes");
    assert_eq!(verified.signers()[0].name, "carol");
    assert_eq!(
        verify(&receipt, &w.trusted).map(|_| ()),
        Err(ReceiptError::UntrustedKey(carol.key_id()))
    );
}

#[test]
fn errors_never_show_key_material() {
    let w = world();
    let public = w.alice.public().public_key();
    let receipt = approved(&w);
    let sig = to_value(&receipt)["signatures"][0]["signature"]
        .as_str()
        .expect("sig")
        .to_owned();
    let mut errors = vec![
        verify(&receipt, &TrustedKeys::new())
            .map(|_| ())
            .expect_err("untrusted"),
        verify(
            &sign(body_by(&w.alice, Decision::Deny), &w.alice).expect("sign"),
            &w.trusted,
        )
        .and_then(|v| check_binding(&v, &request(), T0))
        .expect_err("denied"),
    ];
    let mut tampered = receipt.clone();
    tampered.body.agent = "codex".into();
    errors.push(verify(&tampered, &w.trusted).map(|_| ()).expect_err("bad"));
    for e in errors {
        let msg = e.to_string();
        assert!(!msg.contains(&public) && !msg.contains(&sig), "{msg}");
    }
}

#[path = "quorum_tests.rs"]
mod quorum_tests;
