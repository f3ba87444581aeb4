//! The adversarial suite (issue 5, item 4): crafted requests against the real server.
//!
//! Each test starts airlock in-process (port 0, its own state dir) in front of a stub
//! upstream that records every request, sends raw bytes over TLS (HTTP/1.1, or raw HTTP/2
//! frames), and checks what matters: the status and AWS error code, that nothing
//! destructive reached the upstream, that what did reach it is exactly what airlock
//! verified, and that the server still answers afterwards.
//!
//! A test marked `#[ignore = "BUG: …"]` shows a defect in `src/` that is not fixed yet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "adversarial/h2raw.rs"]
mod h2raw;
#[path = "adversarial/harness.rs"]
mod harness;
#[path = "adversarial/quorum.rs"]
mod quorum;
#[path = "adversarial/sign.rs"]
mod sign;
#[path = "adversarial/stub.rs"]
mod stub;

use harness::{Call, Harness, Payload, Resp, REGION};
use sign::{sha256_hex, Signing};
use stub::Seen;

// ---------------------------------------------------------------------------------------
// helpers

fn expect(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "status of {r:#?}");
    if !code.is_empty() {
        // JSON and CBOR services spell the refusal with an Exception suffix.
        let json = matches!(r.header("content-type"), Some(ct) if ct.contains("json") || ct.contains("cbor"));
        let want = if json && code == "AccessDenied" {
            "AccessDeniedException"
        } else {
            code
        };
        assert_eq!(r.code(), want, "AWS error code of {r:#?}");
    }
}

/// With `ADV_DEBUG` set, says which way a test that accepts two outcomes went.
fn outcome(r: &Resp) {
    if std::env::var_os("ADV_DEBUG").is_some() {
        eprintln!(
            "ADV_DEBUG outcome: {} {} {}",
            r.status,
            r.code(),
            r.message()
        );
    }
}

/// Refused with a 4xx (any code), not forwarded.
fn refused(r: &Resp) {
    if std::env::var_os("ADV_DEBUG").is_some() {
        eprintln!(
            "ADV_DEBUG refused: {} {} {}",
            r.status,
            r.code(),
            r.message()
        );
    }
    assert!(
        (400..500).contains(&r.status) || r.status == 0,
        "expected a refusal, got {r:#?}"
    );
}

/// The one request the upstream received.
fn forwarded_once(h: &Harness) -> Seen {
    let seen = h.stub.requests();
    assert_eq!(
        seen.len(),
        1,
        "expected exactly one upstream request: {seen:#?}"
    );
    seen.into_iter().next().unwrap()
}

/// Signed by airlock's real credentials, with nothing of the agent's left.
fn resigned(h: &Harness, seen: &Seen) {
    let auth = seen.header("authorization").unwrap_or_default();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAREALKEY/"),
        "not re-signed with the real key: {auth}"
    );
    for (k, v) in &seen.headers {
        assert!(
            !v.contains(&h.agent.key) && !v.contains(&h.agent.secret),
            "the agent's credentials leaked upstream in {k}: {v}"
        );
    }
    assert!(
        seen.header("x-amz-content-sha256").is_some(),
        "airlock always states the body's hash upstream"
    );
}

/// A 403 AccessDenied whose message carries the approval link.
fn gated(h: &Harness, r: &Resp) {
    expect(r, 403, "AccessDenied");
    let link = format!("http://localhost:{}/approvals/", h.approvals_port);
    assert!(
        r.message().contains(&link),
        "the refusal carries no approval link ({link}): {r:#?}"
    );
    h.assert_untouched();
}

const RDS_DELETE: &str =
    "Action=DeleteDBInstance&DBInstanceIdentifier=prod-db&SkipFinalSnapshot=true&Version=2014-10-31";
const RDS_DESCRIBE: &str = "Action=DescribeDBInstances&Version=2014-10-31";

// ---------------------------------------------------------------------------------------
// baseline: the harness forwards good calls exactly

#[tokio::test]
async fn baseline_sts_get_caller_identity_is_forwarded_exactly() {
    let h = Harness::start().await;
    let call = h.harmless();
    let r = h.send_call(&call).await;
    expect(&r, 200, "");
    assert!(r.body.contains("<Account>123456789012</Account>"));
    let seen = forwarded_once(&h);
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/");
    assert_eq!(seen.query, None);
    assert_eq!(seen.body, call.body);
    assert!(seen.complete);
    resigned(&h, &seen);
    h.assert_alive().await;
}

#[tokio::test]
async fn baseline_s3_get_object_is_forwarded_exactly() {
    let h = Harness::start().await;
    let call = h.s3("GET", "/my-bucket/dir/a%20b.txt", "versionId=v1");
    let r = h.send_call(&call).await;
    expect(&r, 200, "");
    let seen = forwarded_once(&h);
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/my-bucket/dir/a%20b.txt");
    assert_eq!(seen.query.as_deref(), Some("versionId=v1"));
    resigned(&h, &seen);
}

#[tokio::test]
async fn baseline_dynamodb_list_tables_is_forwarded_exactly() {
    let h = Harness::start().await;
    let call = h.json("dynamodb", "DynamoDB_20120810.ListTables", r#"{"Limit":5}"#);
    let r = h.send_call(&call).await;
    expect(&r, 200, "");
    let seen = forwarded_once(&h);
    assert_eq!(seen.path, "/");
    assert_eq!(seen.body, br#"{"Limit":5}"#);
    assert_eq!(
        seen.header("x-amz-target"),
        Some("DynamoDB_20120810.ListTables")
    );
    resigned(&h, &seen);
}

// ---------------------------------------------------------------------------------------
// destructive calls without a receipt: 403 AccessDenied with the approval link, upstream untouched

#[tokio::test]
async fn rds_delete_db_instance_without_receipt_is_refused_with_link() {
    let h = Harness::start().await;
    let r = h.send_call(&h.query("rds", RDS_DELETE)).await;
    gated(&h, &r);
    assert!(
        r.body.contains("<ErrorResponse>"),
        "query-protocol shape: {r:?}"
    );
    assert!(
        r.message().contains("rds:DeleteDBInstance on prod-db"),
        "{r:?}"
    );
    assert!(
        r.message().contains("IRREVERSIBLE"),
        "no final snapshot is irreversible: {r:?}"
    );
    assert_eq!(h.pending_count().await, 1);
    h.assert_alive().await;
}

#[tokio::test]
async fn s3_delete_bucket_without_receipt_is_refused_with_link() {
    let h = Harness::start().await;
    let r = h.send_call(&h.s3("DELETE", "/prod-bucket", "")).await;
    gated(&h, &r);
    assert!(
        r.body.contains("<Error><Code>AccessDenied</Code>"),
        "S3 shape: {r:?}"
    );
    assert!(r.message().contains("DeleteBucket"), "{r:?}");
    h.assert_alive().await;
}

#[tokio::test]
async fn s3_delete_objects_without_receipt_is_refused_with_link() {
    let h = Harness::start().await;
    let body =
        "<Delete><Object><Key>a.txt</Key></Object><Object><Key>b.txt</Key></Object></Delete>";
    let r = h
        .send_call(&h.s3("POST", "/prod-bucket", "delete").body(body))
        .await;
    gated(&h, &r);
    assert!(r.message().contains("DeleteObjects"), "{r:?}");
    assert!(
        r.message().contains("a.txt") && r.message().contains("b.txt"),
        "keys named: {r:?}"
    );
    h.assert_alive().await;
}

#[tokio::test]
async fn s3_delete_object_without_receipt_is_refused_with_link() {
    let h = Harness::start().await;
    let r = h
        .send_call(&h.s3("DELETE", "/prod-bucket/important.db", ""))
        .await;
    gated(&h, &r);
    h.assert_alive().await;
}

#[tokio::test]
async fn ec2_terminate_instances_without_receipt_is_refused_with_link() {
    let h = Harness::start().await;
    let r = h
        .send_call(&h.query(
            "ec2",
            "Action=TerminateInstances&InstanceId.1=i-0123456789abcdef0&Version=2016-11-15",
        ))
        .await;
    gated(&h, &r);
    assert!(
        r.body.contains("<Response><Errors><Error>"),
        "EC2 shape: {r:?}"
    );
    assert!(r.message().contains("i-0123456789abcdef0"), "{r:?}");
    h.assert_alive().await;
}

#[tokio::test]
async fn dynamodb_delete_table_without_receipt_is_refused_with_link() {
    let h = Harness::start().await;
    let r = h
        .send_call(&h.json(
            "dynamodb",
            "DynamoDB_20120810.DeleteTable",
            r#"{"TableName":"prod-table"}"#,
        ))
        .await;
    gated(&h, &r);
    assert!(r.body.contains("\"__type\""), "JSON shape: {r:?}");
    assert!(r.message().contains("prod-table"), "{r:?}");
    h.assert_alive().await;
}

#[tokio::test]
async fn lambda_delete_function_without_receipt_is_refused_with_link() {
    let h = Harness::start().await;
    let r = h
        .send_call(&h.call("lambda", "DELETE", "/2015-03-31/functions/prod-fn"))
        .await;
    gated(&h, &r);
    assert!(r.message().contains("prod-fn"), "{r:?}");
}

#[tokio::test]
async fn kms_schedule_key_deletion_without_receipt_is_refused_with_link() {
    let h = Harness::start().await;
    let mut call = h.json(
        "kms",
        "TrentService.ScheduleKeyDeletion",
        r#"{"KeyId":"1234abcd-12ab-34cd-56ef-1234567890ab","PendingWindowInDays":7}"#,
    );
    call.headers[0].1 = "application/x-amz-json-1.1".into();
    let r = h.send_call(&call).await;
    gated(&h, &r);
}

#[tokio::test]
async fn cloudwatch_delete_alarms_over_rpc_v2_cbor_is_refused_with_link() {
    let h = Harness::start().await;
    // {"AlarmNames": ["prod-alarm"]}
    let mut body = vec![0xa1, 0x6a];
    body.extend_from_slice(b"AlarmNames");
    body.extend_from_slice(&[0x81, 0x6a]);
    body.extend_from_slice(b"prod-alarm");
    let call = h
        .call(
            "monitoring",
            "POST",
            "/service/GraniteServiceVersion20100801/operation/DeleteAlarms",
        )
        .header("smithy-protocol", "rpc-v2-cbor")
        .header("Content-Type", "application/cbor")
        .body(body);
    let r = h.send_call(&call).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.body.contains("AccessDenied") && r.body.contains("/approvals/"),
        "{r:?}"
    );
    h.assert_untouched();
}

#[tokio::test]
async fn destructive_call_sent_as_a_get_query_string_is_refused_with_link() {
    let h = Harness::start().await;
    let mut call = h.call("rds", "GET", "/");
    call.query = RDS_DELETE.into();
    let r = h.send_call(&call).await;
    gated(&h, &r);
}

#[tokio::test]
async fn identical_retries_attach_to_one_pending_approval() {
    let h = Harness::start().await;
    let first = h.send_call(&h.query("rds", RDS_DELETE)).await;
    let second = h.send_call(&h.query("rds", RDS_DELETE)).await;
    gated(&h, &first);
    gated(&h, &second);
    let link = |r: &Resp| {
        r.message()
            .split("/approvals/")
            .nth(1)
            .map(|s| s.split(' ').next().unwrap_or("").to_string())
    };
    assert_eq!(
        link(&first),
        link(&second),
        "a retry opened a second approval"
    );
    assert_eq!(h.pending_count().await, 1);
}

#[tokio::test]
async fn approved_receipt_lets_exactly_one_identical_call_through() {
    let h = Harness::start().await;
    gated(&h, &h.send_call(&h.query("rds", RDS_DELETE)).await);
    assert_eq!(h.approve_all_pending().await.len(), 1);
    let call = h.query("rds", RDS_DELETE);
    let r = h.send_call(&call).await;
    expect(&r, 200, "");
    let seen = forwarded_once(&h);
    assert_eq!(
        seen.body, call.body,
        "the approved call goes upstream exactly as verified"
    );
    resigned(&h, &seen);
    // The receipt is spent: the next identical call is refused again.
    let again = h.send_call(&h.query("rds", RDS_DELETE)).await;
    expect(&again, 403, "AccessDenied");
    assert_eq!(h.stub.count(), 1);
}

#[tokio::test]
async fn receipt_for_one_db_instance_does_not_cover_another() {
    let h = Harness::start().await;
    gated(&h, &h.send_call(&h.query("rds", RDS_DELETE)).await);
    h.approve_all_pending().await;
    let other = RDS_DELETE.replace("prod-db", "prod-db-2");
    let r = h.send_call(&h.query("rds", &other)).await;
    gated(&h, &r);
}

#[tokio::test]
async fn receipt_for_keeping_a_final_snapshot_does_not_cover_skipping_it() {
    let h = Harness::start().await;
    let keep = RDS_DELETE.replace(
        "SkipFinalSnapshot=true",
        "SkipFinalSnapshot=false&FinalDBSnapshotIdentifier=last",
    );
    gated(&h, &h.send_call(&h.query("rds", &keep)).await);
    h.approve_all_pending().await;
    let skip = RDS_DELETE.to_string() + "&FinalDBSnapshotIdentifier=last";
    let r = h.send_call(&h.query("rds", &skip)).await;
    gated(&h, &r);
}

#[tokio::test]
async fn receipt_does_not_cover_the_same_call_with_an_extra_parameter() {
    let h = Harness::start().await;
    gated(&h, &h.send_call(&h.query("rds", RDS_DELETE)).await);
    h.approve_all_pending().await;
    let more = format!("{RDS_DELETE}&DeleteAutomatedBackups=true");
    gated(&h, &h.send_call(&h.query("rds", &more)).await);
}

// ---------------------------------------------------------------------------------------
// a receipt smuggled through the request never authorizes anything

#[tokio::test]
async fn receipt_in_unsigned_x_airlock_receipt_header_does_not_authorize() {
    let h = Harness::start().await;
    let w = h
        .query("rds", RDS_DELETE)
        .sign()
        .with("x-airlock-receipt", "rcpt_0123456789abcdef");
    gated(&h, &h.send(&w.to_bytes()).await);
}

#[tokio::test]
async fn receipt_in_signed_x_airlock_receipt_header_does_not_authorize() {
    let h = Harness::start().await;
    let call = h
        .query("rds", RDS_DELETE)
        .header("x-airlock-receipt", "rcpt_0123456789abcdef");
    gated(&h, &h.send_call(&call).await);
}

#[tokio::test]
async fn receipt_form_field_in_the_body_does_not_authorize() {
    let h = Harness::start().await;
    let form = format!("{RDS_DELETE}&Receipt=rcpt_0123456789abcdef&Approved=true");
    gated(&h, &h.send_call(&h.query("rds", &form)).await);
}

#[tokio::test]
async fn receipt_in_the_query_string_does_not_authorize() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.query = "Receipt=rcpt_0123456789abcdef".into();
    gated(&h, &h.send_call(&call).await);
}

#[tokio::test]
async fn receipt_member_in_a_json_body_does_not_authorize() {
    let h = Harness::start().await;
    let body = r#"{"TableName":"prod-table","Receipt":{"decision":"approve","uses":1000}}"#;
    gated(
        &h,
        &h.send_call(&h.json("dynamodb", "DynamoDB_20120810.DeleteTable", body))
            .await,
    );
}

#[tokio::test]
async fn a_real_receipt_of_another_call_smuggled_in_header_and_body_does_not_authorize() {
    let h = Harness::start().await;
    // A human approves deleting a staging database.
    let staging = RDS_DELETE.replace("prod-db", "staging-db");
    gated(&h, &h.send_call(&h.query("rds", &staging)).await);
    let ids = h.approve_all_pending().await;
    let json = h.receipt_json(&ids[0]).await;
    // The agent replays that receipt (header and body) for the production database.
    let encoded: String = sign::uri_encode(json.as_bytes(), false);
    let form = format!("{RDS_DELETE}&Receipt={encoded}");
    let compact: String = json.split_whitespace().collect::<Vec<_>>().join(" ");
    let call = h.query("rds", &form).header("x-airlock-receipt", &compact);
    gated(&h, &h.send_call(&call).await);
    let w = h
        .query("rds", RDS_DELETE)
        .sign()
        .with("x-airlock-receipt", &compact);
    gated(&h, &h.send(&w.to_bytes()).await);
}

#[tokio::test]
async fn receipt_header_on_an_allowed_call_is_not_forwarded() {
    let h = Harness::start().await;
    let w = h
        .harmless()
        .sign()
        .with("x-airlock-receipt", "rcpt_0123456789abcdef");
    expect(&h.send(&w.to_bytes()).await, 200, "");
    let seen = forwarded_once(&h);
    assert!(seen.header("x-airlock-receipt").is_none(), "{seen:#?}");
}

// ---------------------------------------------------------------------------------------
// receipts: one agent, one call, one use

#[tokio::test]
async fn receipt_approved_for_one_agent_does_not_cover_another_agent() {
    let h = Harness::start().await;
    gated(&h, &h.send_call(&h.query("rds", RDS_DELETE)).await);
    h.approve_all_pending().await;
    let other = h.add_agent("agent-2").await;
    let mut call = h.query("rds", RDS_DELETE);
    call.access_key = other.access_key_id.clone();
    call.secret = other.secret_access_key.expose().to_string();
    gated(&h, &h.send_call(&call).await);
}

#[tokio::test]
async fn another_agents_key_id_signed_with_own_secret_is_refused() {
    let h = Harness::start().await;
    let other = h.add_agent("agent-2").await;
    let mut call = h.harmless();
    call.access_key = other.access_key_id.clone();
    expect(&h.send_call(&call).await, 403, "SignatureDoesNotMatch");
    h.assert_untouched();
}

#[tokio::test]
async fn concurrent_identical_calls_under_a_single_use_receipt_reach_upstream_once() {
    let h = Harness::start().await;
    gated(&h, &h.send_call(&h.query("rds", RDS_DELETE)).await);
    h.approve_all_pending().await;
    let prepared: Vec<Call> = (0..6).map(|_| h.query("rds", RDS_DELETE)).collect();
    let results = futures_util::future::join_all(prepared.iter().map(|c| h.send_call(c))).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 1, "{results:#?}");
    assert!(
        results.iter().all(|r| r.status == 200 || r.status == 403),
        "{results:#?}"
    );
    h.stub.settle().await;
    assert_eq!(
        h.stub.count(),
        1,
        "a single-use receipt let more than one call through"
    );
}

/// A plain-HTTP request to the approval page, as an agent with `curl` would send it.
async fn approvals_request(h: &Harness, method: &str, path: &str, body: &str) -> Resp {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", h.approvals_port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        h.approvals_port,
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    harness::read_responses(&mut tcp, 1)
        .await
        .into_iter()
        .next()
        .unwrap_or_default()
}

#[tokio::test]
async fn opening_the_approval_link_does_not_approve() {
    let h = Harness::start().await;
    let r = h.send_call(&h.query("rds", RDS_DELETE)).await;
    gated(&h, &r);
    let link = r.message();
    let path = format!(
        "/approvals/{}",
        link.split("/approvals/")
            .nth(1)
            .unwrap()
            .split([' ', ')'])
            .next()
            .unwrap()
    );
    let page = approvals_request(&h, "GET", &path, "").await;
    assert!(page.status != 0 && page.status < 500, "{page:?}");
    gated(&h, &h.send_call(&h.query("rds", RDS_DELETE)).await);
}

#[tokio::test]
async fn posting_to_the_decide_api_without_a_passkey_does_not_approve() {
    let h = Harness::start().await;
    let r = h.send_call(&h.query("rds", RDS_DELETE)).await;
    gated(&h, &r);
    let id = r
        .message()
        .split("/approvals/")
        .nth(1)
        .unwrap()
        .split([' ', ')', ','])
        .next()
        .unwrap()
        .to_string();
    for step in ["begin", "finish"] {
        let body = format!(r#"{{"ids":["{id}"],"id":"{id}","decision":"approve","approve":true}}"#);
        let answer = approvals_request(&h, "POST", &format!("/api/decide/{step}"), &body).await;
        assert_ne!(
            answer.status / 100,
            2,
            "the decide API accepted an agent's POST at {step}: {answer:?}"
        );
    }
    gated(&h, &h.send_call(&h.query("rds", RDS_DELETE)).await);
}

// ---------------------------------------------------------------------------------------
// a signature over one body, another body sent

#[tokio::test]
async fn signature_over_one_body_with_another_body_sent_is_refused() {
    let h = Harness::start().await;
    let w = h.query("rds", RDS_DESCRIBE).sign().with_body(RDS_DELETE);
    expect(&h.send(&w.to_bytes()).await, 403, "SignatureDoesNotMatch");
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn json_body_swapped_after_signing_is_refused() {
    let h = Harness::start().await;
    let w = h
        .json(
            "dynamodb",
            "DynamoDB_20120810.DescribeTable",
            r#"{"TableName":"prod-table"}"#,
        )
        .sign()
        .with_body(r#"{"TableName":"prod-tablf"}"#);
    expect(&h.send(&w.to_bytes()).await, 403, "SignatureDoesNotMatch");
    h.assert_untouched();
}

#[tokio::test]
async fn bytes_appended_after_the_signed_body_are_refused() {
    let h = Harness::start().await;
    let w = h.query("rds", RDS_DESCRIBE).sign();
    let longer = format!("{RDS_DESCRIBE}&Action=DeleteDBInstance&DBInstanceIdentifier=prod-db");
    let w = w.with_body(longer);
    expect(&h.send(&w.to_bytes()).await, 403, "SignatureDoesNotMatch");
    h.assert_untouched();
}

#[tokio::test]
async fn s3_put_object_body_differing_from_declared_sha256_never_completes_upstream() {
    let h = Harness::start().await;
    let declared = vec![b'a'; 20000];
    let sent = vec![b'b'; 20000];
    let w = h
        .s3("PUT", "/my-bucket/object.bin", "")
        .body(&declared)
        .sign()
        .with_body(&sent);
    let r = h.send(&w.to_bytes()).await;
    expect(&r, 400, "XAmzContentSHA256Mismatch");
    // Earlier pieces may have gone out (the upstream then sees an aborted request); the
    // body never ends cleanly.
    never_completed(&h, sent.len(), b"not-in-the-body").await;
    h.stub.clear();
    h.assert_alive().await;
}

#[tokio::test]
async fn s3_delete_objects_body_differing_from_declared_sha256_is_refused() {
    let h = Harness::start().await;
    let declared = "<Delete><Object><Key>tmp/a</Key></Object></Delete>";
    let sent = "<Delete><Object><Key>prod/a</Key></Object></Delete>";
    let w = h
        .s3("POST", "/my-bucket", "delete")
        .body(declared)
        .sign()
        .with_body(sent);
    expect(
        &h.send(&w.to_bytes()).await,
        400,
        "XAmzContentSHA256Mismatch",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn unsigned_payload_on_a_query_service_body_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.payload = Payload::Literal("UNSIGNED-PAYLOAD".into());
    let r = h.send_call(&call).await;
    expect(&r, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn declared_sha256_not_matching_a_query_body_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DESCRIBE);
    call.payload = Payload::Literal(sha256_hex(b"something else"));
    let r = h.send_call(&call).await;
    expect(&r, 400, "XAmzContentSHA256Mismatch");
    h.assert_untouched();
}

#[tokio::test]
async fn streaming_unsigned_trailer_on_a_query_service_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", "");
    call.payload = Payload::Literal("STREAMING-UNSIGNED-PAYLOAD-TRAILER".into());
    call.body = b"1a\r\nAction=DeleteDBInstance&D\r\n0\r\n\r\n".to_vec();
    let r = h.send_call(&call).await;
    expect(&r, 400, "InvalidRequest");
    h.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// headers added after signing are never forwarded (and never trusted)

#[tokio::test]
async fn unsigned_headers_added_after_signing_are_not_forwarded() {
    let h = Harness::start().await;
    let w = h
        .harmless()
        .sign()
        .with("x-amz-meta-injected", "evil")
        .with("X-Forwarded-For", "10.0.0.1")
        .with("x-amz-security-token-2", "x");
    expect(&h.send(&w.to_bytes()).await, 200, "");
    let seen = forwarded_once(&h);
    for name in [
        "x-amz-meta-injected",
        "x-forwarded-for",
        "x-amz-security-token-2",
    ] {
        assert!(
            seen.header(name).is_none(),
            "{name} was forwarded: {seen:#?}"
        );
    }
}

#[tokio::test]
async fn unsigned_acl_header_on_an_s3_put_is_not_forwarded() {
    let h = Harness::start().await;
    let w = h
        .s3("PUT", "/my-bucket/report.csv", "")
        .body("a,b\n")
        .sign()
        .with("x-amz-acl", "public-read")
        .with("x-amz-grant-full-control", "id=attacker");
    expect(&h.send(&w.to_bytes()).await, 200, "");
    let seen = forwarded_once(&h);
    assert!(seen.header("x-amz-acl").is_none(), "{seen:#?}");
    assert!(
        seen.header("x-amz-grant-full-control").is_none(),
        "{seen:#?}"
    );
    assert_eq!(seen.body, b"a,b\n");
    assert!(seen.complete);
}

#[tokio::test]
async fn signed_acl_header_on_an_s3_put_is_forwarded_as_signed() {
    let h = Harness::start().await;
    let call = h
        .s3("PUT", "/my-bucket/report.csv", "")
        .body("a,b\n")
        .header("x-amz-acl", "private");
    expect(&h.send_call(&call).await, 200, "");
    let seen = forwarded_once(&h);
    assert_eq!(seen.header("x-amz-acl"), Some("private"));
}

#[tokio::test]
async fn unsigned_x_amz_target_is_not_trusted() {
    let h = Harness::start().await;
    let mut call = h.json(
        "dynamodb",
        "DynamoDB_20120810.DeleteTable",
        r#"{"TableName":"prod-table"}"#,
    );
    call.unsigned.push("x-amz-target".into());
    let r = h.send_call(&call).await;
    refused(&r);
    assert_ne!(r.status, 200);
    h.assert_untouched();
}

#[tokio::test]
async fn x_amz_target_added_after_signing_is_not_trusted() {
    let h = Harness::start().await;
    // Signed as a JSON call without a target; the target is added afterwards.
    let mut call = h.json(
        "dynamodb",
        "DynamoDB_20120810.DeleteTable",
        r#"{"TableName":"prod-table"}"#,
    );
    call.headers.retain(|(k, _)| k != "X-Amz-Target");
    let w = call
        .sign()
        .with("X-Amz-Target", "DynamoDB_20120810.DeleteTable");
    let r = h.send(&w.to_bytes()).await;
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn unsigned_content_type_is_not_trusted_for_a_query_body() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.unsigned.push("content-type".into());
    let r = h.send_call(&call).await;
    expect(&r, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn unsigned_session_token_added_after_signing_is_refused() {
    let h = Harness::start().await;
    let w = h
        .harmless()
        .sign()
        .with("X-Amz-Security-Token", "FwoGZXIvYXdzEJr");
    let r = h.send(&w.to_bytes()).await;
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn unsigned_x_amz_date_is_refused() {
    let h = Harness::start().await;
    let mut call = h.harmless();
    call.unsigned.push("x-amz-date".into());
    let r = h.send_call(&call).await;
    expect(&r, 400, "IncompleteSignature");
    h.assert_untouched();
}

#[tokio::test]
async fn signed_hop_by_hop_headers_are_not_forwarded() {
    let h = Harness::start().await;
    let call = h
        .harmless()
        .header("Keep-Alive", "timeout=5")
        .header("Upgrade", "h2c")
        .header("Proxy-Authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
        .header("Connection", "keep-alive, Upgrade");
    let r = h.send_call(&call).await;
    expect(&r, 200, "");
    let seen = forwarded_once(&h);
    for name in ["keep-alive", "upgrade", "proxy-authorization"] {
        assert!(seen.header(name).is_none(), "{name} forwarded: {seen:#?}");
    }
}

#[tokio::test]
async fn method_override_header_cannot_turn_a_read_into_a_delete() {
    let h = Harness::start().await;
    let call = h
        .call("lambda", "GET", "/2015-03-31/functions/prod-fn")
        .header("X-HTTP-Method-Override", "DELETE");
    let r = h.send_call(&call).await;
    outcome(&r);
    if r.status == 200 {
        let seen = forwarded_once(&h);
        assert_eq!(seen.method, "GET");
        assert!(
            seen.header("x-http-method-override").is_none(),
            "a signed method override rode along to AWS: {seen:?}"
        );
    } else {
        refused(&r);
        h.assert_untouched();
    }
}

// ---------------------------------------------------------------------------------------
// a signed header duplicated with another value

#[tokio::test]
async fn signed_header_duplicated_with_another_value_fails_the_signature() {
    let h = Harness::start().await;
    let w = h
        .s3("PUT", "/my-bucket/a.txt", "")
        .body("x")
        .header("x-amz-meta-owner", "alice")
        .sign()
        .with("x-amz-meta-owner", "mallory");
    expect(&h.send(&w.to_bytes()).await, 403, "SignatureDoesNotMatch");
    h.assert_untouched();
}

#[tokio::test]
async fn signed_multi_valued_header_is_forwarded_with_every_value() {
    let h = Harness::start().await;
    let call = h
        .s3("PUT", "/my-bucket/a.txt", "")
        .body("x")
        .header("x-amz-meta-list", "one")
        .header("x-amz-meta-list", "two");
    expect(&h.send_call(&call).await, 200, "");
    let seen = forwarded_once(&h);
    assert_eq!(seen.headers_named("x-amz-meta-list"), vec!["one", "two"]);
}

#[tokio::test]
async fn duplicate_x_amz_date_is_refused() {
    let h = Harness::start().await;
    let w = h.harmless().sign();
    let date = w.header("x-amz-date").unwrap().to_string();
    let w = w.with("X-Amz-Date", &date);
    expect(&h.send(&w.to_bytes()).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn duplicate_content_type_is_refused() {
    let h = Harness::start().await;
    let call = h
        .query("rds", RDS_DESCRIBE)
        .header("Content-Type", "text/plain");
    let r = h.send_call(&call).await;
    expect(&r, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn duplicate_x_amz_target_is_refused() {
    let h = Harness::start().await;
    let call = h
        .json("dynamodb", "DynamoDB_20120810.ListTables", "{}")
        .header("X-Amz-Target", "DynamoDB_20120810.DeleteTable");
    let r = h.send_call(&call).await;
    expect(&r, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn duplicate_unsigned_x_amz_target_is_refused_or_dropped() {
    let h = Harness::start().await;
    let w = h
        .json("dynamodb", "DynamoDB_20120810.ListTables", "{}")
        .sign()
        .with("X-Amz-Target", "DynamoDB_20120810.DeleteTable");
    let r = h.send(&w.to_bytes()).await;
    // Either refused as ambiguous, or the signature fails; never forwarded.
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn duplicate_authorization_header_is_refused() {
    let h = Harness::start().await;
    let w = h.harmless().sign();
    let auth = w.header("authorization").unwrap().to_string();
    let w = w.with("Authorization", &auth);
    expect(&h.send(&w.to_bytes()).await, 400, "IncompleteSignature");
    h.assert_untouched();
}

#[tokio::test]
async fn duplicate_x_amz_content_sha256_is_refused() {
    let h = Harness::start().await;
    let w = h
        .s3("GET", "/my-bucket/a.txt", "")
        .sign()
        .with("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
    let r = h.send(&w.to_bytes()).await;
    expect(&r, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn duplicate_host_header_is_refused() {
    let h = Harness::start().await;
    let w = h.harmless().sign().with("Host", "evil.example");
    let r = h.send(&w.to_bytes()).await;
    expect(&r, 400, "");
    h.assert_untouched();
}

#[tokio::test]
async fn header_name_in_another_case_is_the_same_header() {
    let h = Harness::start().await;
    let w = h
        .query("rds", RDS_DESCRIBE)
        .sign()
        .with("content-TYPE", "application/json");
    let r = h.send(&w.to_bytes()).await;
    expect(&r, 400, "InvalidRequest");
    h.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// Host and :authority

#[tokio::test]
async fn absolute_form_target_disagreeing_with_host_is_refused() {
    let h = Harness::start().await;
    let mut w = h.harmless().sign();
    w.target = "https://sts.amazonaws.com/".into();
    let r = h.send(&w.to_bytes()).await;
    expect(&r, 400, "InvalidRequest");
    assert!(r.message().contains("Host"), "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn absolute_form_target_agreeing_with_host_is_served_as_verified() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut w = call.sign();
    w.target = format!("https://{}/", h.host());
    let r = h.send(&w.to_bytes()).await;
    expect(&r, 200, "");
    let seen = forwarded_once(&h);
    assert_eq!(seen.path, "/");
    assert_eq!(seen.body, call.body);
}

#[tokio::test]
async fn host_signed_as_one_value_and_sent_as_another_is_refused() {
    let h = Harness::start().await;
    let mut call = h.harmless();
    call.host = "sts.amazonaws.com".into();
    let w = call.sign();
    let w = replace_header(w, "Host", &h.host());
    expect(&h.send(&w.to_bytes()).await, 403, "SignatureDoesNotMatch");
    h.assert_untouched();
}

#[tokio::test]
async fn missing_host_is_refused() {
    let h = Harness::start().await;
    let w = h.harmless().sign().without("Host");
    let r = h.send(&w.to_bytes()).await;
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn host_with_trailing_dot_or_other_case_is_verified_as_sent() {
    let h = Harness::start().await;
    // The signature covers the Host as sent; a Host the signer did not sign fails.
    let call = h.harmless();
    let w = replace_header(call.sign(), "Host", &format!("LOCALHOST:{}", h.port));
    expect(&h.send(&w.to_bytes()).await, 403, "SignatureDoesNotMatch");
    h.assert_untouched();
}

/// The signed request with one header's value replaced after signing.
fn replace_header(mut w: harness::Wire, name: &str, value: &str) -> harness::Wire {
    for (k, v) in w.headers.iter_mut() {
        if k.eq_ignore_ascii_case(name) {
            *v = value.to_string();
        }
    }
    w
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 smuggling: whatever the framing, airlock forwards only the body it verified

/// `body` as one chunk of chunked framing.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n0\r\n\r\n");
    out
}

/// A signed request whose body is framed by the caller: the head (without Content-Length),
/// so the test appends its own framing headers and body.
fn head_without_framing(w: &harness::Wire) -> Vec<u8> {
    let w = w.clone().without("Content-Length");
    let mut out = format!("{} {} HTTP/1.1\r\n", w.method, w.target).into_bytes();
    for (k, v) in &w.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out
}

#[tokio::test]
async fn content_length_with_transfer_encoding_forwards_only_the_verified_body() {
    let h = Harness::start().await;
    let call = h.harmless();
    let w = call.sign();
    let smuggled = h.query("rds", RDS_DELETE).sign().to_bytes();
    let framed = chunked(&call.body);
    let mut bytes = head_without_framing(&w);
    // A front end reading Content-Length would take the chunked framing plus the smuggled request.
    bytes.extend_from_slice(
        format!("Content-Length: {}\r\n", framed.len() + smuggled.len()).as_bytes(),
    );
    bytes.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
    bytes.extend_from_slice(&framed);
    bytes.extend_from_slice(&smuggled);
    let responses = h.send_expecting(&bytes, 2).await;
    let first = &responses[0];
    outcome(first);
    assert!(first.status == 200 || first.status == 400, "{first:?}");
    for seen in h.stub.requests() {
        assert_eq!(
            seen.body, call.body,
            "forwarded a body other than the verified one: {seen:?}"
        );
        assert!(seen.header("transfer-encoding").is_none() || seen.body == call.body);
    }
    if let Some(second) = responses.get(1) {
        // Read as a request of its own, the smuggled call meets the gate like any other.
        assert_ne!(second.status, 200, "{second:?}");
    }
    assert!(h
        .stub
        .requests()
        .iter()
        .all(|s| !s.body_text().contains("DeleteDBInstance")));
    h.assert_alive().await;
}

#[tokio::test]
async fn transfer_encoding_with_short_content_length_forwards_only_the_verified_body() {
    let h = Harness::start().await;
    let call = h.harmless();
    let w = call.sign();
    let framed = chunked(&call.body);
    let mut bytes = head_without_framing(&w);
    bytes.extend_from_slice(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n");
    bytes.extend_from_slice(&framed);
    let r = h.send(&bytes).await;
    outcome(&r);
    assert!(r.status == 200 || r.status == 400, "{r:?}");
    for seen in h.stub.requests() {
        assert_eq!(seen.body, call.body);
        assert_eq!(
            seen.header("content-length"),
            Some(call.body.len().to_string().as_str())
        );
    }
}

#[tokio::test]
async fn two_different_content_lengths_are_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let w = call.sign();
    let mut bytes = head_without_framing(&w);
    bytes.extend_from_slice(
        format!(
            "Content-Length: {}\r\nContent-Length: 5\r\n\r\n",
            call.body.len()
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(&call.body);
    let r = h.send(&bytes).await;
    refused(&r);
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn two_equal_signed_content_lengths_are_read_as_one_and_forwarded_exactly() {
    let h = Harness::start().await;
    let mut call = h.harmless();
    call.sign_content_length = true;
    let len = call.body.len().to_string();
    call.headers.push(("Content-Length".into(), len));
    call.content_length = false;
    let w = call.sign();
    let w = w.with("Content-Length", &call.body.len().to_string());
    let r = h.send(&w.to_bytes()).await;
    outcome(&r);
    // Identical values are one length (RFC 9110 §8.6); nothing is ambiguous about them.
    if r.status == 200 {
        let seen = forwarded_once(&h);
        assert_eq!(seen.body, call.body);
        assert_eq!(
            seen.headers_named("content-length"),
            vec![call.body.len().to_string()]
        );
    } else {
        refused(&r);
        h.assert_untouched();
    }
}

#[tokio::test]
async fn obsolete_line_folding_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless().header("x-amz-meta-folded", "one");
    let w = call.sign();
    let bytes = String::from_utf8(w.to_bytes()).unwrap().replace(
        "x-amz-meta-folded: one\r\n",
        "x-amz-meta-folded: one\r\n two\r\n",
    );
    let r = h.send(bytes.as_bytes()).await;
    refused(&r);
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn obsolete_line_folding_hiding_a_header_is_refused() {
    let h = Harness::start().await;
    let w = h.query("rds", RDS_DESCRIBE).sign();
    let bytes = String::from_utf8(w.to_bytes()).unwrap().replace(
        "charset=utf-8\r\n",
        "charset=utf-8\r\n X-Amz-Target: DynamoDB_20120810.DeleteTable\r\n",
    );
    let r = h.send(bytes.as_bytes()).await;
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn bare_lf_line_endings_are_refused_or_forwarded_exactly() {
    let h = Harness::start().await;
    let call = h.harmless();
    let w = call.sign();
    let text = String::from_utf8(w.to_bytes()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let bytes = format!("{}\n\n{body}", head.replace("\r\n", "\n"));
    let r = h.send(bytes.as_bytes()).await;
    outcome(&r);
    if r.status == 200 {
        let seen = forwarded_once(&h);
        assert_eq!(seen.body, call.body);
    } else {
        refused(&r);
        h.assert_untouched();
    }
    h.assert_alive().await;
}

#[tokio::test]
async fn bare_lf_inside_the_head_cannot_split_a_header() {
    let h = Harness::start().await;
    let call = h.harmless().header("x-amz-meta-note", "a");
    let w = call.sign();
    let bytes = String::from_utf8(w.to_bytes()).unwrap().replace(
        "x-amz-meta-note: a\r\n",
        "x-amz-meta-note: a\nX-Amz-Target: DynamoDB_20120810.DeleteTable\r\n",
    );
    let r = h.send(bytes.as_bytes()).await;
    outcome(&r);
    if r.status == 200 {
        let seen = forwarded_once(&h);
        assert!(
            seen.header("x-amz-target").is_none(),
            "an unsigned header rode along: {seen:?}"
        );
    } else {
        refused(&r);
        h.assert_untouched();
    }
}

#[tokio::test]
async fn bare_cr_in_a_header_value_is_refused() {
    let h = Harness::start().await;
    let w = h.harmless().sign();
    let bytes = String::from_utf8(w.to_bytes()).unwrap().replacen(
        "\r\n",
        "\r\nx-amz-meta-x: a\rX-Amz-Target: DynamoDB_20120810.DeleteTable\r\n",
        1,
    );
    let r = h.send(bytes.as_bytes()).await;
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn nul_byte_in_a_header_value_is_refused() {
    let h = Harness::start().await;
    let mut bytes = h.harmless().sign().to_bytes();
    let at = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
    bytes.splice(at..at, b"\r\nx-amz-meta-x: a\x00b".iter().copied());
    let r = h.send(&bytes).await;
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn space_before_the_colon_of_a_header_is_refused() {
    let h = Harness::start().await;
    let w = h.harmless().sign();
    let bytes = String::from_utf8(w.to_bytes())
        .unwrap()
        .replace("Content-Type:", "Content-Type :");
    let r = h.send(bytes.as_bytes()).await;
    refused(&r);
    h.assert_untouched();
}

async fn send_with_chunk_header(h: &Harness, size_line: &str) -> Resp {
    let call = h.harmless();
    let w = call.sign();
    let mut bytes = head_without_framing(&w);
    bytes.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
    bytes.extend_from_slice(format!("{size_line}\r\n").as_bytes());
    bytes.extend_from_slice(&call.body);
    bytes.extend_from_slice(b"\r\n0\r\n\r\n");
    h.send(&bytes).await
}

#[tokio::test]
async fn negative_chunk_size_is_refused() {
    let h = Harness::start().await;
    refused(&send_with_chunk_header(&h, "-2b").await);
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn overflowing_chunk_size_is_refused() {
    let h = Harness::start().await;
    refused(&send_with_chunk_header(&h, "1000000000000002b").await);
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn hex_prefixed_chunk_size_is_refused() {
    let h = Harness::start().await;
    refused(&send_with_chunk_header(&h, "0x2b").await);
    h.assert_untouched();
}

#[tokio::test]
async fn non_hex_chunk_size_is_refused() {
    let h = Harness::start().await;
    refused(&send_with_chunk_header(&h, "2g").await);
    h.assert_untouched();
}

#[tokio::test]
async fn empty_chunk_size_is_refused() {
    let h = Harness::start().await;
    refused(&send_with_chunk_header(&h, "").await);
    h.assert_untouched();
}

#[tokio::test]
async fn chunk_size_smaller_than_its_data_is_refused() {
    let h = Harness::start().await;
    refused(&send_with_chunk_header(&h, "5").await);
    h.assert_untouched();
}

#[tokio::test]
async fn invalid_chunk_size_in_a_streamed_s3_upload_never_completes_upstream() {
    let h = Harness::start().await;
    let mut call = h.s3("PUT", "/my-bucket/stream.bin", "");
    call.payload = Payload::Literal("UNSIGNED-PAYLOAD".into());
    call.content_length = false;
    let mut head = head_without_framing(&call.sign());
    head.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
    let mut first = format!("{:x}\r\n", 4096).into_bytes();
    first.extend_from_slice(&[b'a'; 4096]);
    first.extend_from_slice(b"\r\n");
    let mut second = format!("{:x}\r\n", 4096).into_bytes();
    second.extend_from_slice(&[b'b'; 4096]);
    second.extend_from_slice(b"\r\n");
    let broken = b"zz\r\nGET /prod-bucket?delete HTTP/1.1\r\n\r\n".to_vec();
    let r = h
        .send_pieces(
            &[head, first, second, broken],
            std::time::Duration::from_millis(30),
        )
        .await;
    outcome(&r);
    assert_ne!(r.status, 200, "{r:?}");
    never_completed(&h, 8192, b"prod-bucket?delete").await;
    h.stub.clear();
    h.assert_alive().await;
}

#[tokio::test]
async fn transfer_encoding_other_than_chunked_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut bytes = head_without_framing(&call.sign());
    bytes.extend_from_slice(b"Transfer-Encoding: gzip\r\n\r\n");
    bytes.extend_from_slice(&call.body);
    refused(&h.send(&bytes).await);
    h.assert_untouched();
}

#[tokio::test]
async fn chunked_followed_by_another_transfer_encoding_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut bytes = head_without_framing(&call.sign());
    bytes.extend_from_slice(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n");
    bytes.extend_from_slice(&chunked(&call.body));
    refused(&h.send(&bytes).await);
    h.assert_untouched();
}

#[tokio::test]
async fn content_length_with_a_sign_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut bytes = head_without_framing(&call.sign());
    bytes.extend_from_slice(format!("Content-Length: +{}\r\n\r\n", call.body.len()).as_bytes());
    bytes.extend_from_slice(&call.body);
    refused(&h.send(&bytes).await);
    h.assert_untouched();
}

#[tokio::test]
async fn http_1_0_with_transfer_encoding_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut bytes = head_without_framing(&call.sign());
    let text = String::from_utf8(bytes.clone())
        .unwrap()
        .replacen("HTTP/1.1", "HTTP/1.0", 1);
    bytes = text.into_bytes();
    bytes.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
    bytes.extend_from_slice(&chunked(&call.body));
    refused(&h.send(&bytes).await);
    h.assert_untouched();
}

#[tokio::test]
async fn content_length_shorter_than_the_signed_body_is_refused() {
    let h = Harness::start().await;
    let call = h.query("rds", RDS_DESCRIBE);
    let w = call.sign();
    let mut bytes = head_without_framing(&w);
    bytes.extend_from_slice(format!("Content-Length: {}\r\n\r\n", call.body.len() - 10).as_bytes());
    bytes.extend_from_slice(&call.body);
    let responses = h.send_expecting(&bytes, 2).await;
    expect(&responses[0], 403, "SignatureDoesNotMatch");
    if let Some(second) = responses.get(1) {
        refused(second);
    }
    h.assert_untouched();
}

#[tokio::test]
async fn pipelined_destructive_call_after_an_allowed_one_is_still_gated() {
    let h = Harness::start().await;
    let mut bytes = h.harmless().sign().to_bytes();
    bytes.extend_from_slice(&h.query("rds", RDS_DELETE).sign().to_bytes());
    let responses = h.send_expecting(&bytes, 2).await;
    assert_eq!(responses.len(), 2, "{responses:?}");
    expect(&responses[0], 200, "");
    expect(&responses[1], 403, "AccessDenied");
    let seen = forwarded_once(&h);
    assert!(seen.body_text().contains("GetCallerIdentity"));
}

#[tokio::test]
async fn lower_case_method_is_not_read_as_post() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.method = "post".into();
    let r = h.send_call(&call).await;
    refused(&r);
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn request_line_with_a_space_in_the_path_is_refused() {
    let h = Harness::start().await;
    let mut w = h.harmless().sign();
    w.target = "/a b".into();
    let bytes = w.to_bytes();
    refused(&h.send(&bytes).await);
    h.assert_untouched();
}

#[tokio::test]
async fn upgrade_to_h2c_is_not_honoured_or_forwarded() {
    let h = Harness::start().await;
    let w = h
        .harmless()
        .sign()
        .with("Connection", "Upgrade, HTTP2-Settings")
        .with("Upgrade", "h2c")
        .with("HTTP2-Settings", "AAMAAABkAAQAAP__");
    let r = h.send(&w.to_bytes()).await;
    expect(&r, 200, "");
    let seen = forwarded_once(&h);
    assert!(
        seen.header("upgrade").is_none() && seen.header("http2-settings").is_none(),
        "{seen:?}"
    );
}

// ---------------------------------------------------------------------------------------
// HTTP/2: odd pseudo-headers, sent as raw frames

/// The h2 header list of a signed call: pseudo-headers first, then the signed headers
/// (lower case), without `host`.
fn h2_fields(call: &Call) -> Vec<(String, String)> {
    let w = call.sign();
    let mut out = vec![
        (":method".to_string(), w.method.clone()),
        (":scheme".to_string(), "https".to_string()),
        (":authority".to_string(), call.host.clone()),
        (":path".to_string(), w.target.clone()),
    ];
    for (k, v) in &w.headers {
        if !k.eq_ignore_ascii_case("host") {
            out.push((k.to_ascii_lowercase(), v.clone()));
        }
    }
    out
}

fn refs(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn h2_code(r: &h2raw::H2Resp) -> String {
    Resp {
        status: r.status,
        headers: Vec::new(),
        body: r.body.clone(),
        body_bytes: r.body.clone().into_bytes(),
    }
    .code()
}

/// Refused at the HTTP/2 layer or with a 4xx; never a 2xx.
fn h2_refused(r: &h2raw::H2Resp) {
    assert!(
        r.refused_by_protocol() || (400..500).contains(&r.status),
        "expected a refusal: {r:?}"
    );
}

async fn h2_send(h: &Harness, fields: &[(String, String)], body: &[u8]) -> h2raw::H2Resp {
    h2raw::exchange(h, &refs(fields), body).await
}

#[tokio::test]
async fn h2_signed_call_is_forwarded_exactly() {
    let h = Harness::start().await;
    let call = h.harmless();
    let r = h2_send(&h, &h2_fields(&call), &call.body).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("123456789012"));
    let seen = forwarded_once(&h);
    assert_eq!(seen.body, call.body);
    assert_eq!(seen.path, "/");
    resigned(&h, &seen);
}

#[tokio::test]
async fn h2_destructive_call_is_gated_like_http1() {
    let h = Harness::start().await;
    let call = h.query("rds", RDS_DELETE);
    let r = h2_send(&h, &h2_fields(&call), &call.body).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(h2_code(&r), "AccessDenied");
    assert!(r.body.contains("/approvals/"));
    h.assert_untouched();
}

#[tokio::test]
async fn h2_authority_and_host_disagreeing_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields.push(("host".into(), "sts.amazonaws.com".into()));
    let r = h2_send(&h, &fields, &call.body).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(h2_code(&r), "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn h2_authority_and_host_agreeing_is_served() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields.push(("host".into(), h.host()));
    let r = h2_send(&h, &fields, &call.body).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(forwarded_once(&h).body, call.body);
}

#[tokio::test]
async fn h2_host_header_instead_of_authority_is_verified_as_sent() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields: Vec<(String, String)> = h2_fields(&call)
        .into_iter()
        .filter(|(k, _)| k != ":authority")
        .collect();
    fields.push(("host".into(), h.host()));
    let r = h2_send(&h, &fields, &call.body).await;
    if r.status == 200 {
        assert_eq!(forwarded_once(&h).body, call.body);
    } else {
        h2_refused(&r);
        h.assert_untouched();
    }
}

#[tokio::test]
async fn h2_unknown_pseudo_header_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields.insert(1, (":evil".into(), "DeleteDBInstance".into()));
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn h2_duplicate_path_pseudo_header_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields.insert(1, (":path".into(), "/?Action=DeleteDBInstance".into()));
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_duplicate_method_pseudo_header_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields.insert(1, (":method".into(), "DELETE".into()));
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_duplicate_authority_pseudo_header_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields.insert(1, (":authority".into(), "sts.amazonaws.com".into()));
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_missing_method_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let fields: Vec<_> = h2_fields(&call)
        .into_iter()
        .filter(|(k, _)| k != ":method")
        .collect();
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_missing_path_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let fields: Vec<_> = h2_fields(&call)
        .into_iter()
        .filter(|(k, _)| k != ":path")
        .collect();
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_missing_scheme_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let fields: Vec<_> = h2_fields(&call)
        .into_iter()
        .filter(|(k, _)| k != ":scheme")
        .collect();
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_pseudo_header_after_a_regular_header_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    let path = fields.remove(3);
    fields.push(path);
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_response_pseudo_header_in_a_request_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields.insert(0, (":status".into(), "200".into()));
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_upper_case_header_name_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields.push((
        "X-Amz-Target".into(),
        "DynamoDB_20120810.DeleteTable".into(),
    ));
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_connection_specific_header_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields.push(("connection".into(), "keep-alive".into()));
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_transfer_encoding_header_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields.push(("transfer-encoding".into(), "chunked".into()));
    h2_refused(&h2_send(&h, &fields, &chunked(&call.body)).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_te_other_than_trailers_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields.push(("te".into(), "gzip".into()));
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_path_without_leading_slash_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields[3].1 = "sts".into();
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_header_value_with_a_line_break_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields.push((
        "x-amz-meta-a".into(),
        "a\r\nx-amz-target: DynamoDB_20120810.DeleteTable".into(),
    ));
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_content_length_disagreeing_with_data_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    for (k, v) in fields.iter_mut() {
        if k == "content-length" {
            *v = (call.body.len() + 10).to_string();
        }
    }
    h2_refused(&h2_send(&h, &fields, &call.body).await);
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn h2_lower_case_method_is_not_read_as_post() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.method = "post".into();
    h2_refused(&h2_send(&h, &h2_fields(&call), &call.body).await);
    h.assert_untouched();
}

#[tokio::test]
async fn h2_connect_method_is_refused() {
    let h = Harness::start().await;
    let fields = vec![
        (":method".to_string(), "CONNECT".to_string()),
        (
            ":authority".to_string(),
            "rds.eu-west-1.amazonaws.com:443".to_string(),
        ),
    ];
    let r = h2_send(&h, &fields, b"").await;
    assert_ne!(r.status, 200, "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn h2_hyper_client_with_host_disagreeing_with_authority_is_refused() {
    use http_body_util::BodyExt;
    let h = Harness::start().await;
    let call = h.harmless();
    let w = call.sign();
    let tls = h.connect(&[b"h2"]).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("https://{}/", h.host()));
    for (k, v) in &w.headers {
        if k.eq_ignore_ascii_case("host") {
            req = req.header("host", "sts.amazonaws.com");
        } else if !k.eq_ignore_ascii_case("content-length") {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(
            call.body.clone(),
        )))
        .unwrap();
    let resp = tokio::time::timeout(harness::IO_TIMEOUT, sender.send_request(req))
        .await
        .unwrap();
    match resp {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
            assert!(String::from_utf8_lossy(&body).contains("InvalidRequest"));
        }
        Err(e) => panic!("hyper's client failed: {e}"),
    }
    h.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// paths: normalisation and encoded separators must not let airlock and AWS read different calls

#[tokio::test]
async fn dot_segments_in_a_rest_path_are_resolved_before_identification() {
    let h = Harness::start().await;
    let call = h.call("lambda", "DELETE", "/2015-03-31/functions/decoy/../prod-fn");
    let r = h.send_call(&call).await;
    gated(&h, &r);
    assert!(
        r.message().contains("prod-fn") && !r.message().contains("decoy"),
        "{r:?}"
    );
}

#[tokio::test]
async fn dot_segments_in_an_allowed_rest_path_are_forwarded_resolved() {
    let h = Harness::start().await;
    let call = h.call(
        "lambda",
        "GET",
        "/2015-03-31/functions/decoy/./../my-fn/configuration",
    );
    expect(&h.send_call(&call).await, 200, "");
    let seen = forwarded_once(&h);
    assert_eq!(
        seen.path, "/2015-03-31/functions/my-fn/configuration",
        "forwarded as identified"
    );
}

#[tokio::test]
async fn encoded_dot_segments_on_a_query_service_are_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.path = "/%2e%2e/".into();
    let r = h.send_call(&call).await;
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn encoded_dot_segments_in_a_rest_path_are_not_resolved_differently() {
    let h = Harness::start().await;
    // `%2e%2e` is a label value, not a dot segment, for airlock and the service alike.
    let call = h.call(
        "lambda",
        "GET",
        "/2015-03-31/functions/x/%2e%2e/prod-fn/configuration",
    );
    let r = h.send_call(&call).await;
    if r.status == 200 {
        let seen = forwarded_once(&h);
        assert_eq!(
            seen.path,
            "/2015-03-31/functions/x/%2e%2e/prod-fn/configuration"
        );
    } else {
        refused(&r);
        h.assert_untouched();
    }
}

#[tokio::test]
async fn encoded_dot_segments_hiding_a_delete_are_gated_or_refused() {
    let h = Harness::start().await;
    let call = h.call(
        "lambda",
        "DELETE",
        "/2015-03-31/functions/prod-fn/%2e%2e/%2e%2e/functions/decoy",
    );
    let r = h.send_call(&call).await;
    outcome(&r);
    assert!(r.status == 403 || (400..500).contains(&r.status), "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn double_slashes_on_a_query_service_are_forwarded_as_verified() {
    let h = Harness::start().await;
    let mut call = h.harmless();
    call.path = "//".into();
    expect(&h.send_call(&call).await, 200, "");
    let seen = forwarded_once(&h);
    assert_eq!(
        seen.path, "/",
        "forwarded as it was normalised for the signature"
    );
}

#[tokio::test]
async fn query_service_at_another_path_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.path = "/admin".into();
    let r = h.send_call(&call).await;
    expect(&r, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn encoded_slash_in_a_rest_label_stays_in_the_label() {
    let h = Harness::start().await;
    let call = h.call("lambda", "GET", "/2015-03-31/functions/a%2Fb/configuration");
    let r = h.send_call(&call).await;
    expect(&r, 200, "");
    let seen = forwarded_once(&h);
    assert_eq!(
        seen.path, "/2015-03-31/functions/a%2Fb/configuration",
        "not decoded on the way"
    );
}

#[tokio::test]
async fn encoded_slash_cannot_turn_a_delete_into_another_route() {
    let h = Harness::start().await;
    // One label to airlock; never forwarded as two segments.
    let call = h.call(
        "lambda",
        "DELETE",
        "/2015-03-31/functions/prod-fn%2Fpolicy%2Fsid",
    );
    let r = h.send_call(&call).await;
    outcome(&r);
    assert_eq!(r.status, 403, "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn s3_key_with_encoded_slash_is_forwarded_verbatim() {
    let h = Harness::start().await;
    let call = h.s3("GET", "/my-bucket/a%2Fb%2F..%2Fc", "");
    expect(&h.send_call(&call).await, 200, "");
    assert_eq!(forwarded_once(&h).path, "/my-bucket/a%2Fb%2F..%2Fc");
}

#[tokio::test]
async fn s3_dot_dot_key_get_is_forwarded_verbatim() {
    let h = Harness::start().await;
    let call = h.s3("GET", "/my-bucket/a/../b", "");
    expect(&h.send_call(&call).await, 200, "");
    assert_eq!(
        forwarded_once(&h).path,
        "/my-bucket/a/../b",
        "S3 keys are never normalised"
    );
}

#[tokio::test]
async fn s3_dot_dot_key_cannot_turn_into_delete_bucket() {
    let h = Harness::start().await;
    // To a normalising reader this is `DELETE /prod-bucket` (DeleteBucket).
    let r = h.send_call(&h.s3("DELETE", "/prod-bucket/x/..", "")).await;
    gated(&h, &r);
}

#[tokio::test]
async fn s3_double_slash_key_is_forwarded_verbatim() {
    let h = Harness::start().await;
    let call = h.s3("GET", "/my-bucket//etc//passwd", "");
    expect(&h.send_call(&call).await, 200, "");
    assert_eq!(forwarded_once(&h).path, "/my-bucket//etc//passwd");
}

#[tokio::test]
async fn s3_empty_bucket_segment_is_refused() {
    let h = Harness::start().await;
    let r = h.send_call(&h.s3("DELETE", "//prod-bucket", "")).await;
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn s3_delete_bucket_with_trailing_slash_is_never_forwarded_ungated() {
    let h = Harness::start().await;
    let r = h.send_call(&h.s3("DELETE", "/prod-bucket/", "")).await;
    outcome(&r);
    assert!(r.status == 403 || (400..500).contains(&r.status), "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn s3_capitalised_delete_subresource_is_not_read_as_delete_objects() {
    let h = Harness::start().await;
    let body = "<Delete><Object><Key>a</Key></Object></Delete>";
    let r = h
        .send_call(&h.s3("POST", "/prod-bucket", "Delete").body(body))
        .await;
    // S3 reads `?Delete` as no subresource; either way it is not forwarded unidentified.
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn s3_delete_subresource_given_twice_is_refused() {
    let h = Harness::start().await;
    let body = "<Delete><Object><Key>a</Key></Object></Delete>";
    let r = h
        .send_call(&h.s3("POST", "/prod-bucket", "delete&delete").body(body))
        .await;
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn s3_delete_objects_with_a_value_on_the_subresource_is_still_gated() {
    let h = Harness::start().await;
    let body = "<Delete><Object><Key>a</Key></Object></Delete>";
    let r = h
        .send_call(&h.s3("POST", "/prod-bucket", "delete=no").body(body))
        .await;
    outcome(&r);
    assert_ne!(r.status, 200, "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn s3_virtual_hosted_delete_bucket_is_gated() {
    let h = Harness::start().await;
    let mut call = h.s3("DELETE", "/", "");
    call.host = format!("prod-bucket.localhost:{}", h.port);
    let r = h.send_call(&call).await;
    gated(&h, &r);
    assert!(r.message().contains("prod-bucket"), "{r:?}");
}

#[tokio::test]
async fn s3_virtual_hosted_get_goes_upstream_path_style() {
    let h = Harness::start().await;
    let mut call = h.s3("GET", "/dir/file.txt", "");
    call.host = format!("my-bucket.localhost:{}", h.port);
    expect(&h.send_call(&call).await, 200, "");
    assert_eq!(forwarded_once(&h).path, "/my-bucket/dir/file.txt");
}

#[tokio::test]
async fn s3_virtual_hosted_bucket_and_path_bucket_are_read_together() {
    let h = Harness::start().await;
    // Host names bucket `decoy`; the path's first segment is part of the key.
    let mut call = h.s3("DELETE", "/prod-bucket", "");
    call.host = format!("decoy.localhost:{}", h.port);
    let r = h.send_call(&call).await;
    gated(&h, &r);
    assert!(
        r.message().contains("DeleteObject"),
        "read as DeleteObject in decoy: {r:?}"
    );
}

#[tokio::test]
async fn s3_control_path_is_read_as_s3_control() {
    let h = Harness::start().await;
    let mut call = h.s3("DELETE", "/v20180820/accesspoint/prod-ap", "");
    call.headers
        .push(("x-amz-account-id".into(), "123456789012".into()));
    let r = h.send_call(&call).await;
    gated(&h, &r);
    assert!(r.message().contains("DeleteAccessPoint"), "{r:?}");
}

#[tokio::test]
async fn malformed_percent_escape_in_the_path_is_refused() {
    let h = Harness::start().await;
    let r = h.send_call(&h.s3("DELETE", "/prod-bucket/%zz", "")).await;
    refused(&r);
    let r = h
        .send_call(&h.call("lambda", "DELETE", "/2015-03-31/functions/%4"))
        .await;
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn rest_path_matching_no_operation_is_refused() {
    let h = Harness::start().await;
    let r = h
        .send_call(&h.call("lambda", "DELETE", "/2015-03-31/nothing-here"))
        .await;
    expect(&r, 400, "UnknownOperationException");
    h.assert_untouched();
}

#[tokio::test]
async fn non_utf8_percent_escape_in_a_query_is_refused() {
    let h = Harness::start().await;
    let call = h.s3("GET", "/my-bucket/a", "prefix=%ff");
    refused(&h.send_call(&call).await);
    h.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// X-Amz-Date: 15 minutes of skew, no more

fn dated(h: &Harness, offset: time::Duration) -> Call {
    let mut call = h.harmless();
    call.time = time::OffsetDateTime::now_utc() + offset;
    call
}

#[tokio::test]
async fn x_amz_date_an_hour_in_the_past_is_refused() {
    let h = Harness::start().await;
    expect(
        &h.send_call(&dated(&h, time::Duration::hours(-1))).await,
        403,
        "RequestExpired",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn x_amz_date_an_hour_in_the_future_is_refused() {
    let h = Harness::start().await;
    expect(
        &h.send_call(&dated(&h, time::Duration::hours(1))).await,
        403,
        "RequestExpired",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn x_amz_date_sixteen_minutes_ahead_is_refused() {
    let h = Harness::start().await;
    expect(
        &h.send_call(&dated(&h, time::Duration::minutes(16))).await,
        403,
        "RequestExpired",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn x_amz_date_fourteen_minutes_old_is_accepted() {
    let h = Harness::start().await;
    expect(
        &h.send_call(&dated(&h, time::Duration::minutes(-14))).await,
        200,
        "",
    );
    forwarded_once(&h);
}

#[tokio::test]
async fn x_amz_date_in_1970_is_refused() {
    let h = Harness::start().await;
    let mut call = h.harmless();
    call.time = time::OffsetDateTime::UNIX_EPOCH;
    expect(&h.send_call(&call).await, 403, "RequestExpired");
    h.assert_untouched();
}

#[tokio::test]
async fn x_amz_date_in_the_year_9999_is_refused() {
    let h = Harness::start().await;
    let mut call = h.harmless();
    call.time = time::macros::datetime!(9999-12-31 23:59:59 UTC);
    expect(&h.send_call(&call).await, 403, "RequestExpired");
    h.assert_untouched();
}

#[tokio::test]
async fn malformed_x_amz_date_is_refused() {
    let h = Harness::start().await;
    let w = h.harmless().sign();
    let date = w.header("x-amz-date").unwrap().to_string();
    let w = replace_header(w, "X-Amz-Date", date.trim_end_matches('Z'));
    refused(&h.send(&w.to_bytes()).await);
    h.assert_untouched();
}

#[tokio::test]
async fn credential_scope_date_disagreeing_with_x_amz_date_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless();
    let w = call.sign();
    let today = &w.date[..8];
    let auth = w
        .header("authorization")
        .unwrap()
        .replacen(today, "20200101", 1);
    let w = replace_header(w, "Authorization", &auth);
    expect(&h.send(&w.to_bytes()).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn date_header_far_in_the_past_is_refused() {
    let h = Harness::start().await;
    let mut call = h.harmless();
    call.time = time::OffsetDateTime::now_utc() - time::Duration::days(2);
    let w = call.sign();
    // Sign with `date` instead of `x-amz-date`.
    let http_date = httpdate_of(call.time);
    let headers: Vec<(String, String)> = vec![
        ("Host".into(), h.host()),
        ("Date".into(), http_date.clone()),
        (
            "Content-Type".into(),
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        ),
    ];
    let signed = vec![
        "content-type".to_string(),
        "date".to_string(),
        "host".to_string(),
    ];
    let hash = sha256_hex(&call.body);
    let s = Signing {
        access_key: &h.agent.key,
        secret: &h.agent.secret,
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        signed: &signed,
        payload_hash: &hash,
        date: &w.date,
        region: REGION,
        service: "sts",
        presigned: false,
    };
    let mut bytes = b"POST / HTTP/1.1\r\n".to_vec();
    for (k, v) in &headers {
        bytes.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    bytes.extend_from_slice(
        format!(
            "Authorization: {}\r\nContent-Length: {}\r\n\r\n",
            s.authorization(),
            call.body.len()
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(&call.body);
    expect(&h.send(&bytes).await, 403, "RequestExpired");
    h.assert_untouched();
}

fn httpdate_of(t: time::OffsetDateTime) -> String {
    let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        days[t.weekday().number_days_from_monday() as usize],
        t.day(),
        months[u8::from(t.month()) as usize - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

// ---------------------------------------------------------------------------------------
// presigned URLs

#[tokio::test]
async fn presigned_url_with_a_seven_day_expiry_is_accepted() {
    let h = Harness::start().await;
    let w = h.s3("GET", "/my-bucket/report.pdf", "").presign(604_800);
    expect(&h.send(&w.to_bytes()).await, 200, "");
    let seen = forwarded_once(&h);
    assert_eq!(seen.path, "/my-bucket/report.pdf");
    assert!(
        seen.query.as_deref().unwrap_or("").is_empty()
            || !seen.query.as_deref().unwrap_or("").contains("X-Amz-"),
        "presign parameters forwarded: {seen:?}"
    );
    resigned(&h, &seen);
}

#[tokio::test]
async fn presigned_url_with_a_tampered_expiry_is_refused() {
    let h = Harness::start().await;
    let mut w = h.s3("GET", "/my-bucket/report.pdf", "").presign(60);
    w.target = w.target.replace("X-Amz-Expires=60", "X-Amz-Expires=604800");
    expect(&h.send(&w.to_bytes()).await, 403, "SignatureDoesNotMatch");
    h.assert_untouched();
}

#[tokio::test]
async fn presigned_url_over_seven_days_is_refused() {
    let h = Harness::start().await;
    let w = h.s3("GET", "/my-bucket/report.pdf", "").presign(604_801);
    expect(
        &h.send(&w.to_bytes()).await,
        400,
        "AuthorizationQueryParametersError",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn expired_presigned_url_is_refused() {
    let h = Harness::start().await;
    let mut call = h.s3("GET", "/my-bucket/report.pdf", "");
    call.time = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    let w = call.presign(3600);
    expect(&h.send(&w.to_bytes()).await, 403, "AccessDenied");
    h.assert_untouched();
}

#[tokio::test]
async fn presigned_url_dated_in_the_future_is_refused() {
    let h = Harness::start().await;
    let mut call = h.s3("GET", "/my-bucket/report.pdf", "");
    call.time = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
    let w = call.presign(3600);
    expect(&h.send(&w.to_bytes()).await, 403, "AccessDenied");
    h.assert_untouched();
}

#[tokio::test]
async fn presigned_url_with_an_extra_query_parameter_is_refused() {
    let h = Harness::start().await;
    let mut w = h.s3("GET", "/my-bucket/report.pdf", "").presign(600);
    w.target.push_str("&versionId=older");
    expect(&h.send(&w.to_bytes()).await, 403, "SignatureDoesNotMatch");
    h.assert_untouched();
}

#[tokio::test]
async fn presigned_url_turned_into_a_delete_is_refused() {
    let h = Harness::start().await;
    let mut w = h.s3("GET", "/prod-bucket/important.db", "").presign(600);
    w.method = "DELETE".into();
    expect(&h.send(&w.to_bytes()).await, 403, "SignatureDoesNotMatch");
    h.assert_untouched();
}

#[tokio::test]
async fn presigned_delete_object_is_gated() {
    let h = Harness::start().await;
    let w = h.s3("DELETE", "/prod-bucket/important.db", "").presign(600);
    gated(&h, &h.send(&w.to_bytes()).await);
}

#[tokio::test]
async fn presigned_query_together_with_an_authorization_header_is_refused() {
    let h = Harness::start().await;
    let call = h.s3("GET", "/my-bucket/report.pdf", "");
    let signed = call.sign();
    let mut w = call.presign(600);
    w.headers.push((
        "Authorization".into(),
        signed.header("authorization").unwrap().to_string(),
    ));
    expect(
        &h.send(&w.to_bytes()).await,
        400,
        "AuthorizationHeaderMalformed",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn presigned_signature_given_twice_is_refused() {
    let h = Harness::start().await;
    let mut w = h.s3("GET", "/my-bucket/report.pdf", "").presign(600);
    w.target
        .push_str(&format!("&X-Amz-Signature={}", "0".repeat(64)));
    expect(
        &h.send(&w.to_bytes()).await,
        400,
        "AuthorizationQueryParametersError",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn presigned_parameter_in_another_case_is_refused() {
    let h = Harness::start().await;
    let mut w = h.s3("GET", "/my-bucket/report.pdf", "").presign(600);
    w.target
        .push_str(&format!("&x-amz-signature={}", "0".repeat(64)));
    refused(&h.send(&w.to_bytes()).await);
    h.assert_untouched();
}

#[tokio::test]
async fn presigned_sigv4a_algorithm_is_refused() {
    let h = Harness::start().await;
    let mut w = h.s3("GET", "/my-bucket/report.pdf", "").presign(600);
    w.target = w
        .target
        .replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256");
    let r = h.send(&w.to_bytes()).await;
    expect(&r, 400, "InvalidRequest");
    assert!(r.message().contains("SigV4"), "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn presigned_non_s3_call_with_a_body_is_refused() {
    let h = Harness::start().await;
    let mut call = h.call("rds", "POST", "/");
    call.body = RDS_DELETE.as_bytes().to_vec();
    let w = call
        .presign(600)
        .with("Content-Type", "application/x-www-form-urlencoded");
    refused(&h.send(&w.to_bytes()).await);
    h.assert_untouched();
}

#[tokio::test]
async fn presigned_non_s3_destructive_call_is_gated() {
    let h = Harness::start().await;
    let mut call = h.call("rds", "GET", "/");
    call.query = RDS_DELETE.into();
    let w = call.presign(600);
    gated(&h, &h.send(&w.to_bytes()).await);
}

// ---------------------------------------------------------------------------------------
// signed aws-chunked uploads: no unverified byte, never a complete body that failed

const CHUNK: usize = 8192;

fn upload_chunks() -> Vec<Vec<u8>> {
    (0..3).map(|i| vec![b'1' + i as u8; CHUNK]).collect()
}

/// A signed-chunk PutObject: the head (signed), and the framing one piece per chunk.
fn chunk_upload(
    h: &Harness,
    chunks: &[Vec<u8>],
    decoded_len: usize,
    tamper: impl Fn(usize, String) -> String,
) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut call = h.s3("PUT", "/my-bucket/upload.bin", "");
    call.payload = Payload::Literal("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into());
    call.content_length = false;
    call.headers
        .push(("Content-Encoding".into(), "aws-chunked".into()));
    call.headers.push((
        "x-amz-decoded-content-length".into(),
        decoded_len.to_string(),
    ));
    let w = call.sign();
    let pieces = sign::signed_chunks(&w.key, &w.date, &w.scope, &w.signature, chunks, tamper);
    let total: usize = pieces.iter().map(Vec::len).sum();
    let mut head = head_without_framing(&w);
    head.extend_from_slice(format!("Content-Length: {total}\r\n\r\n").as_bytes());
    (head, pieces)
}

async fn send_upload(h: &Harness, head: Vec<u8>, pieces: Vec<Vec<u8>>) -> Resp {
    let mut all = vec![head];
    all.extend(pieces);
    h.send_pieces(&all, std::time::Duration::from_millis(30))
        .await
}

/// The upstream never received the whole body, nor any byte of `forbidden` (a chunk that
/// failed).
async fn never_completed(h: &Harness, total: usize, forbidden: &[u8]) {
    h.stub.settle().await;
    for seen in h.stub.requests() {
        assert!(
            !seen.complete || seen.body.len() < total,
            "complete body forwarded: {} bytes",
            seen.body.len()
        );
        assert!(
            !seen.complete,
            "the upstream saw a cleanly ended body of {} bytes",
            seen.body.len()
        );
        assert!(
            !seen.body.windows(forbidden.len()).any(|w| w == forbidden),
            "unverified bytes reached the upstream"
        );
    }
}

#[tokio::test]
async fn signed_chunk_upload_is_forwarded_decoded_and_complete() {
    let h = Harness::start().await;
    let chunks = upload_chunks();
    let (head, pieces) = chunk_upload(&h, &chunks, 3 * CHUNK, |_, s| s);
    let r = send_upload(&h, head, pieces).await;
    expect(&r, 200, "");
    let seen = forwarded_once(&h);
    assert!(seen.complete);
    assert_eq!(seen.body, chunks.concat(), "forwarded decoded");
    assert!(seen.header("x-amz-decoded-content-length").is_none());
    assert!(!seen
        .header("content-encoding")
        .unwrap_or("")
        .contains("aws-chunked"));
    resigned(&h, &seen);
}

#[tokio::test]
async fn signed_chunk_upload_with_a_wrong_third_chunk_signature_never_completes_upstream() {
    let h = Harness::start().await;
    let chunks = upload_chunks();
    let (head, pieces) = chunk_upload(&h, &chunks, 3 * CHUNK, |i, s| {
        if i == 2 {
            format!("{}{}", if s.starts_with('0') { '1' } else { '0' }, &s[1..])
        } else {
            s
        }
    });
    let r = send_upload(&h, head, pieces).await;
    expect(&r, 403, "SignatureDoesNotMatch");
    never_completed(&h, 3 * CHUNK, &chunks[2][..64]).await;
    h.assert_alive().await;
}

#[tokio::test]
async fn signed_chunk_upload_with_a_wrong_final_chunk_signature_never_completes_upstream() {
    let h = Harness::start().await;
    let chunks = upload_chunks();
    let (head, pieces) = chunk_upload(&h, &chunks, 3 * CHUNK, |i, s| {
        if i == 3 {
            "f".repeat(64)
        } else {
            s
        }
    });
    let r = send_upload(&h, head, pieces).await;
    expect(&r, 403, "SignatureDoesNotMatch");
    // Every data chunk verified, but the stream did not: the last piece is held back.
    never_completed(&h, 3 * CHUNK, &chunks[2][..64]).await;
}

#[tokio::test]
async fn signed_chunk_upload_with_reordered_chunks_is_aborted() {
    let h = Harness::start().await;
    let chunks = upload_chunks();
    let (head, mut pieces) = chunk_upload(&h, &chunks, 3 * CHUNK, |_, s| s);
    pieces.swap(1, 2);
    let r = send_upload(&h, head, pieces).await;
    expect(&r, 403, "SignatureDoesNotMatch");
    never_completed(&h, 3 * CHUNK, &chunks[2][..64]).await;
}

#[tokio::test]
async fn signed_chunk_without_a_signature_is_aborted() {
    let h = Harness::start().await;
    let chunks = upload_chunks();
    let (head, mut pieces) = chunk_upload(&h, &chunks, 3 * CHUNK, |_, s| s);
    let mut bare = format!("{:x}\r\n", CHUNK).into_bytes();
    bare.extend_from_slice(&chunks[1]);
    bare.extend_from_slice(b"\r\n");
    // Keep the Content-Length right: pad the framing difference away by trimming nothing;
    // the decoder must refuse the unsigned chunk before anything else.
    pieces[1] = bare;
    let total: usize = pieces.iter().map(Vec::len).sum();
    let head = String::from_utf8(head).unwrap();
    let head = head.split("Content-Length: ").next().unwrap().to_string()
        + &format!("Content-Length: {total}\r\n\r\n");
    let r = send_upload(&h, head.into_bytes(), pieces).await;
    assert!(r.status == 400 || r.status == 403, "{r:?}");
    never_completed(&h, 3 * CHUNK, &chunks[1][..64]).await;
}

#[tokio::test]
async fn signed_chunk_upload_longer_than_its_decoded_length_is_aborted() {
    let h = Harness::start().await;
    let chunks = upload_chunks();
    let (head, pieces) = chunk_upload(&h, &chunks, 2 * CHUNK + 10, |_, s| s);
    let r = send_upload(&h, head, pieces).await;
    assert_eq!(r.status, 400, "{r:?}");
    never_completed(&h, 3 * CHUNK, &chunks[2][..64]).await;
}

#[tokio::test]
async fn signed_chunk_upload_shorter_than_its_decoded_length_is_aborted() {
    let h = Harness::start().await;
    let chunks = upload_chunks();
    let (head, pieces) = chunk_upload(&h, &chunks, 3 * CHUNK + 1, |_, s| s);
    let r = send_upload(&h, head, pieces).await;
    assert_eq!(r.status, 400, "{r:?}");
    never_completed(&h, 3 * CHUNK, b"\x00\x01\x02").await;
}

#[tokio::test]
async fn signed_chunk_upload_with_data_after_the_final_chunk_is_aborted() {
    let h = Harness::start().await;
    let chunks = upload_chunks();
    let (head, mut pieces) = chunk_upload(&h, &chunks, 3 * CHUNK, |_, s| s);
    pieces.push(b"GET /prod-bucket?delete HTTP/1.1\r\n\r\n".to_vec());
    let total: usize = pieces.iter().map(Vec::len).sum();
    let head = String::from_utf8(head).unwrap();
    let head = head.split("Content-Length: ").next().unwrap().to_string()
        + &format!("Content-Length: {total}\r\n\r\n");
    let r = send_upload(&h, head.into_bytes(), pieces).await;
    assert!(r.status == 400 || r.status == 403, "{r:?}");
    never_completed(&h, 3 * CHUNK, b"prod-bucket?delete").await;
}

#[tokio::test]
async fn signed_chunks_on_a_non_s3_service_are_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", "");
    call.payload = Payload::Literal("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into());
    call.headers.push((
        "x-amz-decoded-content-length".into(),
        RDS_DELETE.len().to_string(),
    ));
    call.content_length = false;
    let w = call.sign();
    let pieces = sign::signed_chunks(
        &w.key,
        &w.date,
        &w.scope,
        &w.signature,
        &[RDS_DELETE.as_bytes().to_vec()],
        |_, s| s,
    );
    let w = w.with_body(pieces.concat());
    expect(&h.send(&w.to_bytes()).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn signed_chunks_on_delete_objects_are_refused() {
    let h = Harness::start().await;
    let body = b"<Delete><Object><Key>a</Key></Object></Delete>".to_vec();
    let mut call = h.s3("POST", "/prod-bucket", "delete");
    call.payload = Payload::Literal("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into());
    call.headers
        .push(("Content-Encoding".into(), "aws-chunked".into()));
    call.headers.push((
        "x-amz-decoded-content-length".into(),
        body.len().to_string(),
    ));
    call.content_length = false;
    let w = call.sign();
    let pieces = sign::signed_chunks(&w.key, &w.date, &w.scope, &w.signature, &[body], |_, s| s);
    let w = w.with_body(pieces.concat());
    refused(&h.send(&w.to_bytes()).await);
    h.assert_untouched();
}

#[tokio::test]
async fn unsigned_trailer_document_with_a_wrong_decoded_length_is_refused() {
    let h = Harness::start().await;
    let doc = b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>";
    let mut framing = format!("{:x}\r\n", doc.len()).into_bytes();
    framing.extend_from_slice(doc);
    framing.extend_from_slice(b"\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n");
    let mut call = h.s3("PUT", "/my-bucket", "versioning");
    call.payload = Payload::Literal("STREAMING-UNSIGNED-PAYLOAD-TRAILER".into());
    call.headers
        .push(("Content-Encoding".into(), "aws-chunked".into()));
    call.headers
        .push(("x-amz-trailer".into(), "x-amz-checksum-crc32".into()));
    // The framing holds the whole document; the declared length only a prefix of it.
    call.headers
        .push(("x-amz-decoded-content-length".into(), "10".into()));
    call.body = framing;
    let r = h.send_call(&call).await;
    refused(&r);
    h.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// query protocol: Action read exactly once, from exactly one place

#[tokio::test]
async fn duplicate_action_in_query_and_body_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DESCRIBE);
    call.query = "Action=DeleteDBInstance&DBInstanceIdentifier=prod-db".into();
    expect(&h.send_call(&call).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn same_action_in_query_and_body_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DESCRIBE);
    call.query = "Action=DescribeDBInstances".into();
    expect(&h.send_call(&call).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn duplicate_action_in_the_body_is_refused() {
    let h = Harness::start().await;
    let form = format!("{RDS_DESCRIBE}&Action=DeleteDBInstance&DBInstanceIdentifier=prod-db");
    expect(
        &h.send_call(&h.query("rds", &form)).await,
        400,
        "InvalidRequest",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn duplicate_action_in_the_query_string_is_refused() {
    let h = Harness::start().await;
    let mut call = h.call("rds", "GET", "/");
    call.query = "Action=DescribeDBInstances&Action=DeleteDBInstance&DBInstanceIdentifier=prod-db&Version=2014-10-31".into();
    expect(&h.send_call(&call).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn action_spelled_in_another_case_is_refused() {
    let h = Harness::start().await;
    let form = format!("{RDS_DESCRIBE}&action=DeleteDBInstance&DBInstanceIdentifier=prod-db");
    let r = h.send_call(&h.query("rds", &form)).await;
    expect(&r, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn action_in_upper_case_alone_is_refused() {
    let h = Harness::start().await;
    let form = "ACTION=DeleteDBInstance&DBInstanceIdentifier=prod-db&Version=2014-10-31";
    let r = h.send_call(&h.query("rds", form)).await;
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn percent_encoded_action_name_is_read_as_action() {
    let h = Harness::start().await;
    let form = RDS_DELETE.replacen("Action", "%41ction", 1);
    gated(&h, &h.send_call(&h.query("rds", &form)).await);
}

#[tokio::test]
async fn percent_encoded_action_value_is_read_decoded() {
    let h = Harness::start().await;
    let form = RDS_DELETE.replacen("DeleteDBInstance", "%44elete%44%42Instance", 1);
    gated(&h, &h.send_call(&h.query("rds", &form)).await);
}

#[tokio::test]
async fn percent_encoded_action_in_the_body_with_plain_action_in_the_query_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", &RDS_DELETE.replacen("Action", "%41ction", 1));
    call.query = "Action=DescribeDBInstances".into();
    expect(&h.send_call(&call).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn plus_encoded_space_in_action_is_not_an_operation() {
    let h = Harness::start().await;
    let form = RDS_DELETE.replacen("DeleteDBInstance", "DeleteDBInstance+", 1);
    let r = h.send_call(&h.query("rds", &form)).await;
    expect(&r, 400, "InvalidAction");
    h.assert_untouched();
}

#[tokio::test]
async fn action_value_in_another_case_is_refused() {
    let h = Harness::start().await;
    let form = RDS_DELETE.replacen("DeleteDBInstance", "deletedbinstance", 1);
    expect(
        &h.send_call(&h.query("rds", &form)).await,
        400,
        "InvalidAction",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn action_with_a_nul_byte_is_refused() {
    let h = Harness::start().await;
    let form = RDS_DELETE.replacen(
        "DeleteDBInstance",
        "DescribeDBInstances%00DeleteDBInstance",
        1,
    );
    expect(
        &h.send_call(&h.query("rds", &form)).await,
        400,
        "InvalidAction",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn missing_action_is_refused() {
    let h = Harness::start().await;
    let r = h
        .send_call(&h.query("rds", "DBInstanceIdentifier=prod-db&Version=2014-10-31"))
        .await;
    expect(&r, 400, "MissingAction");
    h.assert_untouched();
}

#[tokio::test]
async fn duplicate_resource_parameter_is_refused() {
    let h = Harness::start().await;
    let form = format!("{RDS_DELETE}&DBInstanceIdentifier=staging-db");
    expect(
        &h.send_call(&h.query("rds", &form)).await,
        400,
        "InvalidRequest",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn resource_parameter_split_between_query_and_body_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.query = "DBInstanceIdentifier=staging-db".into();
    expect(&h.send_call(&call).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn query_body_with_a_text_plain_content_type_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.headers[0].1 = "text/plain".into();
    expect(&h.send_call(&call).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn query_body_with_a_json_content_type_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.headers[0].1 = "application/x-amz-json-1.0".into();
    refused(&h.send_call(&call).await);
    h.assert_untouched();
}

#[tokio::test]
async fn query_body_in_another_charset_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.headers[0].1 = "application/x-www-form-urlencoded; charset=utf-16".into();
    expect(&h.send_call(&call).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn query_body_without_a_content_type_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.headers.clear();
    expect(&h.send_call(&call).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn query_body_on_a_get_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.method = "GET".into();
    expect(&h.send_call(&call).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn query_body_with_gzip_content_encoding_is_refused() {
    let h = Harness::start().await;
    // What AWS would decompress, airlock cannot classify.
    let gz: Vec<u8> = vec![0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03];
    let call = h
        .query("rds", "")
        .body(gz)
        .header("Content-Encoding", "gzip");
    refused(&h.send_call(&call).await);
    h.assert_untouched();
}

#[tokio::test]
async fn form_body_with_content_encoding_gzip_is_never_forwarded_as_plain() {
    let h = Harness::start().await;
    // A plain form labelled gzip: AWS would try to decompress what airlock read as text.
    let call = h
        .query("rds", RDS_DESCRIBE)
        .header("Content-Encoding", "gzip");
    let r = h.send_call(&call).await;
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]

async fn aws_chunked_content_encoding_on_a_query_service_is_refused() {
    let h = Harness::start().await;
    // aws-chunked is S3's framing; a service that decoded it would read the chunk data,
    // while the form airlock reads glues the first key to the size line.
    let mut call = h.query("rds", "");
    call.query = "Action=DescribeDBInstances&Version=2014-10-31".into();
    call.body = b"2d\r\nAction=DeleteDBInstance&DBInstanceIdentifier=prod-db\r\n0\r\n\r\n".to_vec();
    call.headers
        .push(("Content-Encoding".into(), "aws-chunked".into()));
    let r = h.send_call(&call).await;
    outcome(&r);
    refused(&r);
    h.assert_untouched();
}

#[tokio::test]
async fn form_field_glued_to_a_line_break_is_not_read_as_action() {
    let h = Harness::start().await;
    let mut call = h.query(
        "rds",
        "x=1\r\nAction=DeleteDBInstance&DBInstanceIdentifier=prod-db",
    );
    call.query = "Action=DescribeDBInstances&Version=2014-10-31".into();
    let r = h.send_call(&call).await;
    outcome(&r);
    // Either refused, or forwarded as the Describe airlock read, never as a delete.
    if r.status == 200 {
        let seen = forwarded_once(&h);
        assert_eq!(
            seen.query.as_deref(),
            Some("Action=DescribeDBInstances&Version=2014-10-31")
        );
    } else {
        refused(&r);
        h.assert_untouched();
    }
}

#[tokio::test]
async fn query_call_with_an_unknown_version_is_refused() {
    let h = Harness::start().await;
    let form = RDS_DELETE.replace("2014-10-31", "2013-01-10");
    expect(
        &h.send_call(&h.query("rds", &form)).await,
        400,
        "InvalidParameterValue",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn query_body_that_is_not_utf8_is_refused() {
    let h = Harness::start().await;
    let mut body = RDS_DESCRIBE.as_bytes().to_vec();
    body.extend_from_slice(b"&Filters.member.1.Name=\xff\xfe");
    refused(&h.send_call(&h.query("rds", "").body(body)).await);
    h.assert_untouched();
}

// destruction hiding behind other verbs

#[tokio::test]
async fn rds_backups_turned_off_needs_a_receipt() {
    let h = Harness::start().await;
    let form = "Action=ModifyDBInstance&DBInstanceIdentifier=prod-db&BackupRetentionPeriod=0&ApplyImmediately=true&Version=2014-10-31";
    gated(&h, &h.send_call(&h.query("rds", form)).await);
}

#[tokio::test]
async fn rds_backups_turned_off_with_zero_spelled_00_needs_a_receipt() {
    let h = Harness::start().await;
    let form = "Action=ModifyDBInstance&DBInstanceIdentifier=prod-db&BackupRetentionPeriod=00&ApplyImmediately=true&Version=2014-10-31";
    gated(&h, &h.send_call(&h.query("rds", form)).await);
}

#[tokio::test]
async fn rds_backups_turned_off_with_zero_spelled_plus_0_needs_a_receipt() {
    let h = Harness::start().await;
    let form = "Action=ModifyDBInstance&DBInstanceIdentifier=prod-db&BackupRetentionPeriod=%2B0&ApplyImmediately=true&Version=2014-10-31";
    gated(&h, &h.send_call(&h.query("rds", form)).await);
}

#[tokio::test]
async fn rds_deletion_protection_off_in_upper_case_needs_a_receipt() {
    let h = Harness::start().await;
    let form = "Action=ModifyDBInstance&DBInstanceIdentifier=prod-db&DeletionProtection=FALSE&Version=2014-10-31";
    gated(&h, &h.send_call(&h.query("rds", form)).await);
}

#[tokio::test]
async fn ec2_termination_protection_off_needs_a_receipt() {
    let h = Harness::start().await;
    let form = "Action=ModifyInstanceAttribute&InstanceId=i-0123456789abcdef0&DisableApiTermination.Value=false&Version=2016-11-15";
    gated(&h, &h.send_call(&h.query("ec2", form)).await);
}

#[tokio::test]
async fn rds_modify_without_destruction_is_forwarded_exactly() {
    let h = Harness::start().await;
    let form = "Action=ModifyDBInstance&DBInstanceIdentifier=prod-db&BackupRetentionPeriod=7&Version=2014-10-31";
    expect(&h.send_call(&h.query("rds", form)).await, 200, "");
    assert_eq!(forwarded_once(&h).body_text(), form);
}

// ---------------------------------------------------------------------------------------
// JSON protocols: one reading of the body, one service per target

#[tokio::test]
async fn json_body_with_duplicate_keys_is_refused() {
    let h = Harness::start().await;
    let body = r#"{"TableName":"scratch","TableName":"prod-table"}"#;
    let r = h
        .send_call(&h.json("dynamodb", "DynamoDB_20120810.DescribeTable", body))
        .await;
    expect(&r, 400, "SerializationException");
    h.assert_untouched();
}

#[tokio::test]
async fn json_body_with_duplicate_keys_on_a_delete_is_refused() {
    let h = Harness::start().await;
    let body = r#"{"TableName":"scratch","TableName":"prod-table"}"#;
    let r = h
        .send_call(&h.json("dynamodb", "DynamoDB_20120810.DeleteTable", body))
        .await;
    expect(&r, 400, "SerializationException");
    h.assert_untouched();
    assert_eq!(
        h.pending_count().await,
        0,
        "no approval for a call that cannot be read one way"
    );
}

#[tokio::test]
async fn json_body_with_duplicate_nested_keys_is_refused() {
    let h = Harness::start().await;
    let body = r#"{"TableName":"t","DeletionProtectionEnabled":true,"StreamSpecification":{"StreamEnabled":true,"StreamEnabled":false}}"#;
    let r = h
        .send_call(&h.json("dynamodb", "DynamoDB_20120810.UpdateTable", body))
        .await;
    expect(&r, 400, "SerializationException");
    h.assert_untouched();
}

#[tokio::test]
async fn json_body_with_a_duplicate_key_spelled_with_an_escape_is_refused() {
    let h = Harness::start().await;
    let body = r#"{"TableName":"scratch","Table\u004eame":"prod-table"}"#;
    let r = h
        .send_call(&h.json("dynamodb", "DynamoDB_20120810.DescribeTable", body))
        .await;
    expect(&r, 400, "SerializationException");
    h.assert_untouched();
}

#[tokio::test]
async fn json_key_spelled_with_an_escape_is_read_decoded() {
    let h = Harness::start().await;
    let body = r#"{"Table\u004eame":"prod-table"}"#;
    gated(
        &h,
        &h.send_call(&h.json("dynamodb", "DynamoDB_20120810.DeleteTable", body))
            .await,
    );
}

#[tokio::test]
async fn json_body_with_trailing_data_is_refused() {
    let h = Harness::start().await;
    let body = r#"{"TableName":"scratch"}{"TableName":"prod-table"}"#;
    let r = h
        .send_call(&h.json("dynamodb", "DynamoDB_20120810.DescribeTable", body))
        .await;
    expect(&r, 400, "SerializationException");
    h.assert_untouched();
}

#[tokio::test]
async fn json_body_that_is_not_an_object_is_refused() {
    let h = Harness::start().await;
    let r = h
        .send_call(&h.json(
            "dynamodb",
            "DynamoDB_20120810.DescribeTable",
            r#"["TableName"]"#,
        ))
        .await;
    expect(&r, 400, "SerializationException");
    h.assert_untouched();
}

#[tokio::test]
async fn json_body_with_a_byte_order_mark_is_refused() {
    let h = Harness::start().await;
    let mut body = b"\xef\xbb\xbf".to_vec();
    body.extend_from_slice(br#"{"TableName":"prod-table"}"#);
    let call = h
        .json("dynamodb", "DynamoDB_20120810.DeleteTable", "")
        .body(body);
    refused(&h.send_call(&call).await);
    h.assert_untouched();
}

#[tokio::test]
async fn dynamodb_deletion_protection_off_needs_a_receipt() {
    let h = Harness::start().await;
    let body = r#"{"TableName":"prod-table","DeletionProtectionEnabled":false}"#;
    gated(
        &h,
        &h.send_call(&h.json("dynamodb", "DynamoDB_20120810.UpdateTable", body))
            .await,
    );
}

#[tokio::test]
async fn x_amz_target_of_another_service_is_refused() {
    let h = Harness::start().await;
    let r = h
        .send_call(&h.json(
            "dynamodb",
            "AmazonSQS.DeleteQueue",
            r#"{"QueueUrl":"https://sqs/prod"}"#,
        ))
        .await;
    expect(&r, 400, "UnknownOperationException");
    h.assert_untouched();
}

#[tokio::test]
async fn x_amz_target_of_a_destructive_service_under_a_harmless_scope_is_refused() {
    let h = Harness::start().await;
    // Signed for SQS; the target names DynamoDB's DeleteTable.
    let r = h
        .send_call(&h.json(
            "sqs",
            "DynamoDB_20120810.DeleteTable",
            r#"{"TableName":"prod-table"}"#,
        ))
        .await;
    expect(&r, 400, "UnknownOperationException");
    h.assert_untouched();
}

#[tokio::test]
async fn x_amz_target_prefix_in_another_case_is_refused() {
    let h = Harness::start().await;
    let r = h
        .send_call(&h.json(
            "dynamodb",
            "dynamodb_20120810.DeleteTable",
            r#"{"TableName":"prod-table"}"#,
        ))
        .await;
    expect(&r, 400, "UnknownOperationException");
    h.assert_untouched();
}

#[tokio::test]
async fn x_amz_target_operation_in_another_case_is_refused() {
    let h = Harness::start().await;
    let r = h
        .send_call(&h.json(
            "dynamodb",
            "DynamoDB_20120810.deleteTable",
            r#"{"TableName":"prod-table"}"#,
        ))
        .await;
    expect(&r, 400, "UnknownOperationException");
    h.assert_untouched();
}

#[tokio::test]
async fn x_amz_target_with_two_dots_is_refused() {
    let h = Harness::start().await;
    let r = h
        .send_call(&h.json(
            "dynamodb",
            "DynamoDB_20120810.ListTables.DeleteTable",
            r#"{"TableName":"prod-table"}"#,
        ))
        .await;
    expect(&r, 400, "UnknownOperationException");
    h.assert_untouched();
}

#[tokio::test]
async fn json_call_with_a_form_content_type_is_refused() {
    let h = Harness::start().await;
    let mut call = h.json("dynamodb", "DynamoDB_20120810.ListTables", "{}");
    call.headers[0].1 = "application/x-www-form-urlencoded".into();
    expect(&h.send_call(&call).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn json_call_with_a_query_string_action_is_refused() {
    let h = Harness::start().await;
    let mut call = h.json("dynamodb", "DynamoDB_20120810.ListTables", "{}");
    call.query = "Action=DeleteTable&TableName=prod-table".into();
    expect(&h.send_call(&call).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn json_call_to_a_path_other_than_root_is_refused() {
    let h = Harness::start().await;
    let mut call = h.json("dynamodb", "DynamoDB_20120810.ListTables", "{}");
    call.path = "/DeleteTable".into();
    expect(&h.send_call(&call).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn json_and_cbor_markers_together_are_refused() {
    let h = Harness::start().await;
    let call = h
        .json(
            "monitoring",
            "GraniteServiceVersion20100801.DescribeAlarms",
            "{}",
        )
        .header("smithy-protocol", "rpc-v2-cbor");
    expect(&h.send_call(&call).await, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn cbor_path_naming_another_service_is_refused() {
    let h = Harness::start().await;
    let call = h
        .call(
            "monitoring",
            "POST",
            "/service/DynamoDB_20120810/operation/DeleteTable",
        )
        .header("smithy-protocol", "rpc-v2-cbor")
        .header("Content-Type", "application/cbor")
        .body([0xa0]);
    expect(&h.send_call(&call).await, 400, "UnknownOperationException");
    h.assert_untouched();
}

#[tokio::test]
async fn cbor_body_with_duplicate_keys_is_refused() {
    let h = Harness::start().await;
    // {"AlarmNames": ["a"], "AlarmNames": ["prod"]}
    let mut body = vec![0xa2, 0x6a];
    body.extend_from_slice(b"AlarmNames");
    body.extend_from_slice(&[0x81, 0x61, b'a', 0x6a]);
    body.extend_from_slice(b"AlarmNames");
    body.extend_from_slice(&[0x81, 0x64]);
    body.extend_from_slice(b"prod");
    let call = h
        .call(
            "monitoring",
            "POST",
            "/service/GraniteServiceVersion20100801/operation/DescribeAlarms",
        )
        .header("smithy-protocol", "rpc-v2-cbor")
        .header("Content-Type", "application/cbor")
        .body(body);
    expect(&h.send_call(&call).await, 400, "SerializationException");
    h.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// S3 documents: what decides how destructive a call is must be read as S3 reads it

const VERSIONING: &str = "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>STATUS</Status></VersioningConfiguration>";

#[tokio::test]
async fn s3_versioning_enabled_is_forwarded_exactly() {
    let h = Harness::start().await;
    let body = VERSIONING.replace("STATUS", "Enabled");
    expect(
        &h.send_call(&h.s3("PUT", "/my-bucket", "versioning").body(&body))
            .await,
        200,
        "",
    );
    let seen = forwarded_once(&h);
    assert_eq!(seen.body_text(), body);
    assert_eq!(seen.query.as_deref(), Some("versioning="));
}

#[tokio::test]
async fn s3_versioning_suspended_needs_a_receipt() {
    let h = Harness::start().await;
    let body = VERSIONING.replace("STATUS", "Suspended");
    gated(
        &h,
        &h.send_call(&h.s3("PUT", "/prod-bucket", "versioning").body(body))
            .await,
    );
}

#[tokio::test]
async fn s3_versioning_suspended_spelled_with_a_character_reference_needs_a_receipt() {
    let h = Harness::start().await;
    let body = VERSIONING.replace("STATUS", "&#83;uspended");
    gated(
        &h,
        &h.send_call(&h.s3("PUT", "/prod-bucket", "versioning").body(body))
            .await,
    );
}

#[tokio::test]
async fn s3_versioning_suspended_in_cdata_needs_a_receipt() {
    let h = Harness::start().await;
    let body = VERSIONING.replace("STATUS", "<![CDATA[Suspended]]>");
    gated(
        &h,
        &h.send_call(&h.s3("PUT", "/prod-bucket", "versioning").body(body))
            .await,
    );
}

#[tokio::test]
async fn s3_versioning_suspended_split_by_a_comment_needs_a_receipt() {
    let h = Harness::start().await;
    let body = VERSIONING.replace("STATUS", "Suspen<!-- -->ded");
    let r = h
        .send_call(&h.s3("PUT", "/prod-bucket", "versioning").body(body))
        .await;
    assert_ne!(r.status, 200, "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn s3_lifecycle_expiration_needs_a_receipt() {
    let h = Harness::start().await;
    let body = "<LifecycleConfiguration><Rule><ID>x</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>";
    gated(
        &h,
        &h.send_call(&h.s3("PUT", "/prod-bucket", "lifecycle").body(body))
            .await,
    );
}

#[tokio::test]
async fn s3_delete_objects_with_a_doctype_is_refused() {
    let h = Harness::start().await;
    let body =
        "<!DOCTYPE d [<!ENTITY k \"prod/db\">]><Delete><Object><Key>&k;</Key></Object></Delete>";
    let r = h
        .send_call(&h.s3("POST", "/prod-bucket", "delete").body(body))
        .await;
    expect(&r, 400, "MalformedXML");
    h.assert_untouched();
}

#[tokio::test]
async fn s3_delete_objects_object_with_two_keys_is_refused() {
    let h = Harness::start().await;
    let body = "<Delete><Object><Key>tmp/a</Key><Key>prod/db</Key></Object></Delete>";
    let r = h
        .send_call(&h.s3("POST", "/prod-bucket", "delete").body(body))
        .await;
    expect(&r, 400, "MalformedXML");
    h.assert_untouched();
}

#[tokio::test]
async fn s3_delete_objects_keys_are_read_decoded() {
    let h = Harness::start().await;
    let body = "<Delete><Object><Key>prod&#47;db</Key></Object></Delete>";
    let r = h
        .send_call(&h.s3("POST", "/prod-bucket", "delete").body(body))
        .await;
    gated(&h, &r);
    assert!(r.message().contains("prod/db"), "{r:?}");
}

#[tokio::test]
async fn s3_versioning_suspended_with_an_attribute_on_status_needs_a_receipt() {
    let h = Harness::start().await;
    let body = VERSIONING.replace(
        "<Status>STATUS</Status>",
        "<Status a=\"b\">Suspended</Status>",
    );
    gated(
        &h,
        &h.send_call(&h.s3("PUT", "/prod-bucket", "versioning").body(body))
            .await,
    );
}

#[tokio::test]
async fn s3_lifecycle_expiration_in_utf16_is_refused_or_gated() {
    let h = Harness::start().await;
    let text = "<LifecycleConfiguration><Rule><ID>x</ID><Filter></Filter><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>";
    let mut body = vec![0xff, 0xfe];
    for unit in text.encode_utf16() {
        body.extend_from_slice(&unit.to_le_bytes());
    }
    let r = h
        .send_call(&h.s3("PUT", "/prod-bucket", "lifecycle").body(body))
        .await;
    outcome(&r);
    assert!(r.status == 403 || (400..500).contains(&r.status), "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn receipt_for_deleting_some_keys_does_not_cover_more_keys() {
    let h = Harness::start().await;
    let one = "<Delete><Object><Key>tmp/a</Key></Object></Delete>";
    gated(
        &h,
        &h.send_call(&h.s3("POST", "/prod-bucket", "delete").body(one))
            .await,
    );
    h.approve_all_pending().await;
    let two =
        "<Delete><Object><Key>tmp/a</Key></Object><Object><Key>prod/db</Key></Object></Delete>";
    gated(
        &h,
        &h.send_call(&h.s3("POST", "/prod-bucket", "delete").body(two))
            .await,
    );
}

#[tokio::test]

async fn s3_versioning_with_two_status_elements_is_refused_or_gated() {
    let h = Harness::start().await;
    // A reader that keeps the last of two elements suspends versioning.
    let body = VERSIONING.replace(
        "<Status>STATUS</Status>",
        "<Status>Enabled</Status><Status>Suspended</Status>",
    );
    let r = h
        .send_call(&h.s3("PUT", "/prod-bucket", "versioning").body(body))
        .await;
    outcome(&r);
    assert!(r.status == 403 || (400..500).contains(&r.status), "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn s3_versioning_suspended_with_surrounding_whitespace_needs_a_receipt() {
    let h = Harness::start().await;
    let body = VERSIONING.replace("STATUS", "\n  Suspended\n");
    gated(
        &h,
        &h.send_call(&h.s3("PUT", "/prod-bucket", "versioning").body(body))
            .await,
    );
}

#[tokio::test]
async fn s3_lifecycle_noncurrent_version_expiration_needs_a_receipt() {
    let h = Harness::start().await;
    let body = "<LifecycleConfiguration><Rule><ID>x</ID><Filter></Filter><Status>Enabled</Status><NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays></NoncurrentVersionExpiration></Rule></LifecycleConfiguration>";
    gated(
        &h,
        &h.send_call(&h.s3("PUT", "/prod-bucket", "lifecycle").body(body))
            .await,
    );
}

#[tokio::test]
async fn s3_lifecycle_without_expiration_is_forwarded_exactly() {
    let h = Harness::start().await;
    let body = "<LifecycleConfiguration><Rule><ID>x</ID><Filter></Filter><Status>Enabled</Status><Transition><Days>30</Days><StorageClass>GLACIER</StorageClass></Transition></Rule></LifecycleConfiguration>";
    expect(
        &h.send_call(&h.s3("PUT", "/my-bucket", "lifecycle").body(body))
            .await,
        200,
        "",
    );
    assert_eq!(forwarded_once(&h).body_text(), body);
}

// ---------------------------------------------------------------------------------------
// authentication schemes and keys

#[tokio::test]
async fn sigv2_authorization_header_is_refused_with_a_hint() {
    let h = Harness::start().await;
    let w = replace_header(
        h.harmless().sign(),
        "Authorization",
        &format!("AWS {}:frJIUN8DYpKDtOLCwo//yllqDzg=", h.agent.key),
    );
    let r = h.send(&w.to_bytes()).await;
    expect(&r, 400, "InvalidRequest");
    assert!(r.message().contains("SigV4"), "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn sigv2_presigned_query_is_refused_with_a_hint() {
    let h = Harness::start().await;
    let target = format!(
        "/prod-bucket/important.db?AWSAccessKeyId={}&Expires=1893456000&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D",
        h.agent.key
    );
    let bytes = format!("DELETE {target} HTTP/1.1\r\nHost: {}\r\n\r\n", h.host());
    let r = h.send(bytes.as_bytes()).await;
    expect(&r, 400, "InvalidRequest");
    assert!(r.message().contains("s3v4"), "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn sigv4a_authorization_header_is_refused() {
    let h = Harness::start().await;
    let w = h.harmless().sign();
    let auth = w
        .header("authorization")
        .unwrap()
        .replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256");
    let w = replace_header(w, "Authorization", &auth).with("X-Amz-Region-Set", "*");
    let r = h.send(&w.to_bytes()).await;
    expect(&r, 400, "InvalidRequest");
    h.assert_untouched();
}

#[tokio::test]
async fn unknown_access_key_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.access_key = "AIRLOCKNOSUCHAGENT7".into();
    expect(&h.send_call(&call).await, 403, "InvalidClientTokenId");
    h.assert_untouched();
    assert_eq!(
        h.pending_count().await,
        0,
        "an unauthenticated call opened an approval"
    );
}

#[tokio::test]
async fn real_aws_key_presented_as_an_agent_key_is_refused() {
    let h = Harness::start().await;
    let mut call = h.harmless();
    call.access_key = "AKIAREALKEY".into();
    call.secret = "realsecret".into();
    expect(&h.send_call(&call).await, 403, "InvalidClientTokenId");
    h.assert_untouched();
}

#[tokio::test]
async fn wrong_secret_is_refused() {
    let h = Harness::start().await;
    let mut call = h.harmless();
    call.secret = "not-the-secret".into();
    expect(&h.send_call(&call).await, 403, "SignatureDoesNotMatch");
    h.assert_untouched();
}

#[tokio::test]
async fn revoked_agent_is_refused() {
    let h = Harness::start().await;
    expect(&h.send_call(&h.harmless()).await, 200, "");
    h.stub.clear();
    h.store()
        .await
        .identities()
        .revoke_agent(&h.agent.name)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = h.send_call(&h.harmless()).await;
        if r.status == 403 {
            expect(&r, 403, "InvalidClientTokenId");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a revoked agent is still served: {r:?}"
        );
        h.stub.clear();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    h.assert_untouched();
}

#[tokio::test]
async fn session_token_is_refused() {
    let h = Harness::start().await;
    let call = h.harmless().header(
        "X-Amz-Security-Token",
        "FwoGZXIvYXdzEJr//////////wEaDEXAMPLE",
    );
    expect(&h.send_call(&call).await, 403, "InvalidClientTokenId");
    h.assert_untouched();
}

#[tokio::test]
async fn presigned_session_token_is_refused() {
    let h = Harness::start().await;
    let mut call = h.s3("GET", "/my-bucket/a", "");
    call.query = "X-Amz-Security-Token=FwoGZXIvYXdzEJr".into();
    let w = call.presign(600);
    expect(&h.send(&w.to_bytes()).await, 400, "InvalidToken");
    h.assert_untouched();
}

#[tokio::test]
async fn missing_signature_is_refused() {
    let h = Harness::start().await;
    let w = h.query("rds", RDS_DELETE).sign().without("Authorization");
    expect(
        &h.send(&w.to_bytes()).await,
        403,
        "MissingAuthenticationToken",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn lower_case_algorithm_is_refused() {
    let h = Harness::start().await;
    let w = h.harmless().sign();
    let auth = w
        .header("authorization")
        .unwrap()
        .replace("AWS4-HMAC-SHA256", "aws4-hmac-sha256");
    let w = replace_header(w, "Authorization", &auth);
    expect(&h.send(&w.to_bytes()).await, 400, "IncompleteSignature");
    h.assert_untouched();
}

#[tokio::test]
async fn signature_in_upper_case_hex_is_refused() {
    let h = Harness::start().await;
    let w = h.harmless().sign();
    let auth = w.header("authorization").unwrap().to_string();
    let (head, sig) = auth.split_once("Signature=").unwrap();
    let w = replace_header(
        w,
        "Authorization",
        &format!("{head}Signature={}", sig.to_uppercase()),
    );
    expect(&h.send(&w.to_bytes()).await, 400, "IncompleteSignature");
    h.assert_untouched();
}

#[tokio::test]
async fn signed_headers_without_host_are_refused() {
    let h = Harness::start().await;
    let w = h.harmless().sign();
    let auth = w.header("authorization").unwrap().replace(";host;", ";");
    let w = replace_header(w, "Authorization", &auth);
    expect(&h.send(&w.to_bytes()).await, 400, "IncompleteSignature");
    h.assert_untouched();
}

#[tokio::test]
async fn unknown_service_in_the_credential_scope_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.service = "rds-but-not".into();
    refused(&h.send_call(&call).await);
    h.assert_untouched();
}

#[tokio::test]
async fn service_in_the_scope_in_another_case_is_refused() {
    let h = Harness::start().await;
    let mut call = h.query("rds", RDS_DELETE);
    call.service = "RDS".into();
    refused(&h.send_call(&call).await);
    h.assert_untouched();
}

#[tokio::test]
async fn extra_authorization_component_is_refused() {
    let h = Harness::start().await;
    let w = h.harmless().sign();
    let auth = format!("{}, Receipt=rcpt_0123", w.header("authorization").unwrap());
    let w = replace_header(w, "Authorization", &auth);
    expect(&h.send(&w.to_bytes()).await, 400, "IncompleteSignature");
    h.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// limits: an AWS-shaped error, never a hang

#[tokio::test]
async fn oversized_query_body_gets_an_aws_shaped_413() {
    let h = Harness::start().await;
    let form = format!(
        "{RDS_DESCRIBE}&Filters.member.1.Name={}",
        "x".repeat(100 * 1024)
    );
    let r = h.send_call(&h.query("rds", &form)).await;
    expect(&r, 413, "RequestEntityTooLarge");
    assert!(r.message().contains("max_buffered_body_bytes"), "{r:?}");
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn oversized_chunked_query_body_gets_a_413_not_a_hang() {
    let h = Harness::start().await;
    let form = format!(
        "{RDS_DESCRIBE}&Filters.member.1.Name={}",
        "x".repeat(100 * 1024)
    );
    let call = h.query("rds", &form);
    let mut bytes = head_without_framing(&call.sign());
    bytes.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
    for piece in form.as_bytes().chunks(8192) {
        bytes.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        bytes.extend_from_slice(piece);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    let r = h.send(&bytes).await;
    expect(&r, 413, "RequestEntityTooLarge");
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn oversized_delete_objects_body_gets_an_s3_shaped_413() {
    let h = Harness::start().await;
    let keys: String = (0..3000)
        .map(|i| format!("<Object><Key>k{i:08}</Key></Object>"))
        .collect();
    let body = format!("<Delete>{keys}</Delete>");
    let r = h
        .send_call(&h.s3("POST", "/prod-bucket", "delete").body(body))
        .await;
    expect(&r, 413, "EntityTooLarge");
    assert!(
        r.body.starts_with("<?xml") && r.body.contains("<Error>"),
        "{r:?}"
    );
    h.assert_untouched();
}

#[tokio::test]
async fn oversized_json_body_gets_a_json_shaped_413() {
    let h = Harness::start().await;
    let body = format!(r#"{{"TableName":"t","Pad":"{}"}}"#, "x".repeat(100 * 1024));
    let r = h
        .send_call(&h.json("dynamodb", "DynamoDB_20120810.DeleteTable", &body))
        .await;
    expect(&r, 413, "RequestEntityTooLarge");
    assert!(r.body.contains("\"__type\""), "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn declared_oversized_content_length_is_refused_before_the_body_arrives() {
    let h = Harness::start().await;
    let call = h.query("rds", RDS_DESCRIBE);
    let mut bytes = head_without_framing(&call.sign());
    // Declares 10 MiB but sends only the head: airlock must answer without waiting.
    bytes.extend_from_slice(b"Content-Length: 10485760\r\n\r\n");
    let r = h.send(&bytes).await;
    expect(&r, 413, "RequestEntityTooLarge");
    h.assert_untouched();
}

#[tokio::test]
async fn huge_header_block_is_refused_not_a_hang() {
    let h = Harness::start().await;
    let w = h
        .harmless()
        .sign()
        .with("x-amz-meta-pad", &"p".repeat(300 * 1024));
    refused(&h.send(&w.to_bytes()).await);
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn too_many_headers_are_refused_not_a_hang() {
    let h = Harness::start().await;
    let mut w = h.harmless().sign();
    for i in 0..500 {
        w = w.with(&format!("x-amz-meta-h{i}"), "v");
    }
    refused(&h.send(&w.to_bytes()).await);
    h.assert_untouched();
    h.assert_alive().await;
}

/// A harness with these settings replacing its own (`("limits", "max_connections = 2")`).
fn limits(set: &[(&'static str, &'static str)]) -> harness::Options {
    harness::Options {
        set: set.to_vec(),
        ..Default::default()
    }
}

/// Which AWS error envelope a response is in.
fn envelope(r: &Resp) -> &'static str {
    let ct = r.header("content-type").unwrap_or("");
    if ct == "application/cbor" {
        "cbor"
    } else if ct.contains("json") && r.body.contains("\"__type\"") {
        "json"
    } else if r.body.contains("<ErrorResponse>") {
        "query"
    } else if r.body.contains("<Response><Errors>") {
        "ec2"
    } else if r.body.starts_with("<?xml") && r.body.contains("<Error><Code>") {
        "s3"
    } else {
        "none"
    }
}

/// A signed call with `n` extra (unsigned) headers.
fn with_headers(call: &Call, n: usize) -> harness::Wire {
    (0..n).fold(call.sign(), |w, i| w.with(&format!("x-pad-{i}"), "v"))
}

/// Every record of the audit chain, one per line.
async fn audit_text(h: &Harness) -> String {
    h.audit_records()
        .await
        .iter()
        .map(|r| format!("{r}\n"))
        .collect()
}

/// Waits for an audit record that contains every one of `needles`.
async fn audited(h: &Harness, needles: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + harness::IO_TIMEOUT;
    loop {
        let text = audit_text(h).await;
        if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no audit record with {needles:?} in:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A good call gets through again (connections closing on airlock's side may take a moment).
async fn alive_soon(h: &Harness) {
    let deadline = tokio::time::Instant::now() + harness::IO_TIMEOUT;
    loop {
        let r = h.send_call(&h.harmless()).await;
        if r.status == 200 {
            h.stub.clear();
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "airlock does not serve again: {r:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn too_many_headers_is_refused_aws_shaped_and_not_forwarded() {
    let h = Harness::start().await;
    // Over the default max_header_count (128), under hyper's own backstop (256).
    let r = h.send(&with_headers(&h.harmless(), 150).to_bytes()).await;
    expect(&r, 400, "RequestHeaderSectionTooLarge");
    assert_eq!(envelope(&r), "query", "{r:?}");
    assert!(r.message().contains("max_header_count"), "{r:?}");
    h.assert_untouched();
    let record = audited(&h, &["RequestHeaderSectionTooLarge"]).await;
    assert!(record.contains("\"refused\""), "{record}");
    h.assert_alive().await;
}

#[tokio::test]
async fn oversized_header_section_is_refused_aws_shaped_over_http1() {
    let h = Harness::start().await;
    // Over the default max_header_bytes (32 KiB), under hyper's backstop (twice that).
    let w = h
        .s3("GET", "/my-bucket/key", "")
        .sign()
        .with("x-amz-meta-pad", &"p".repeat(40 * 1024));
    let r = h.send(&w.to_bytes()).await;
    expect(&r, 400, "RequestHeaderSectionTooLarge");
    assert_eq!(envelope(&r), "s3", "{r:?}");
    assert!(r.message().contains("max_header_bytes"), "{r:?}");
    assert!(
        !r.body.contains("ppppp"),
        "the answer echoes the header: {r:?}"
    );
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn oversized_header_section_is_refused_aws_shaped_over_h2() {
    let h = Harness::start().await;
    let call = h.s3("GET", "/my-bucket/key", "");
    let mut fields = h2_fields(&call);
    fields.push(("x-amz-meta-pad".into(), "p".repeat(40 * 1024)));
    let r = h2_send(&h, &fields, b"").await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(h2_code(&r), "RequestHeaderSectionTooLarge", "{r:?}");
    assert!(r.body.contains("<Error><Code>"), "S3's envelope: {r:?}");
    let many: Vec<(String, String)> = h2_fields(&h.harmless())
        .into_iter()
        .chain((0..150).map(|i| (format!("x-pad-{i}"), "v".to_string())))
        .collect();
    let r = h2_send(&h, &many, &h.harmless().body).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(h2_code(&r), "RequestHeaderSectionTooLarge", "{r:?}");
    assert!(r.body.contains("<ErrorResponse>"), "{r:?}");
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn header_limit_refusals_come_in_each_protocols_envelope() {
    let h = Harness::start_with(limits(&[("limits", "max_header_count = 32")])).await;
    let monitoring = h
        .call(
            "monitoring",
            "POST",
            "/service/GraniteServiceVersion20100801/operation/ListMetrics",
        )
        .header("smithy-protocol", "rpc-v2-cbor")
        .header("Content-Type", "application/cbor")
        .body([0xa0]);
    let cases: Vec<(&str, Call)> = vec![
        ("s3", h.s3("GET", "/my-bucket", "list-type=2")),
        (
            "json",
            h.json("dynamodb", "DynamoDB_20120810.ListTables", "{}"),
        ),
        ("json", h.call("lambda", "GET", "/2015-03-31/functions/")),
        ("query", h.query("rds", RDS_DESCRIBE)),
        (
            "ec2",
            h.query("ec2", "Action=DescribeInstances&Version=2016-11-15"),
        ),
        ("cbor", monitoring),
    ];
    for (want, call) in cases {
        let r = h.send(&with_headers(&call, 40).to_bytes()).await;
        expect(&r, 400, "RequestHeaderSectionTooLarge");
        assert_eq!(envelope(&r), want, "{} {}: {r:?}", call.service, call.path);
        if want == "json" {
            assert_eq!(
                r.header("x-amzn-errortype"),
                Some("RequestHeaderSectionTooLarge")
            );
        }
    }
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn header_limits_are_configurable_and_requests_under_them_pass() {
    let h = Harness::start_with(limits(&[("limits", "max_header_bytes = 4096")])).await;
    let under = h.harmless().sign().with("x-pad", &"p".repeat(2048));
    let r = h.send(&under.to_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
    h.stub.clear();
    let over = h.harmless().sign().with("x-pad", &"p".repeat(5000));
    let r = h.send(&over.to_bytes()).await;
    expect(&r, 400, "RequestHeaderSectionTooLarge");
    assert!(r.message().contains("4096"), "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn past_the_parser_backstop_hyper_answers_a_bare_431() {
    let h = Harness::start().await;
    // Far past twice max_header_bytes: hyper's parser refuses before airlock sees it.
    let w = h
        .harmless()
        .sign()
        .with("x-amz-meta-pad", &"p".repeat(300 * 1024));
    let r = h.send(&w.to_bytes()).await;
    assert_eq!(r.status, 431, "{r:?}");
    let mut many = h.harmless().sign();
    for i in 0..300 {
        many = many.with(&format!("x-pad-{i}"), "v");
    }
    let r = h.send(&many.to_bytes()).await;
    assert_eq!(r.status, 431, "{r:?}");
    let call = h.harmless();
    let mut fields = h2_fields(&call);
    fields.push(("x-amz-meta-pad".into(), "p".repeat(100 * 1024)));
    let r = h2_send(&h, &fields, &call.body).await;
    assert_eq!(r.status, 431, "{r:?}");
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_by_the_header_read_timeout() {
    let h = Harness::start_with(limits(&[("limits", "header_read_timeout_secs = 1")])).await;
    let bytes = h.harmless().sign().to_bytes();
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    // One byte every 100 ms: the head would take far longer than the timeout.
    let pieces: Vec<Vec<u8>> = bytes[..head_end].iter().map(|b| vec![*b]).collect();
    let started = std::time::Instant::now();
    let r = h
        .send_pieces(&pieces, std::time::Duration::from_millis(100))
        .await;
    let elapsed = started.elapsed();
    // hyper closes without an answer (there is no request to answer yet).
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        elapsed < std::time::Duration::from_secs(pieces.len() as u64 / 10),
        "the trickle went on for {elapsed:?}"
    );
    h.assert_untouched();
    h.assert_alive().await;
}

/// Reads until the server closes; how long that took.
async fn time_to_close<S: tokio::io::AsyncRead + Unpin>(io: &mut S) -> std::time::Duration {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(harness::IO_TIMEOUT, io.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection stayed open for {:?}", harness::IO_TIMEOUT),
        }
    }
}

/// Closed by an idle or header-read timeout of 1 s, not by the test's own 10 s limit.
fn closed_soon(waited: std::time::Duration) {
    assert!(
        waited < std::time::Duration::from_secs(4),
        "closed after {waited:?}"
    );
}

/// One good call on a kept-alive HTTP/1.1 connection; how long airlock then keeps it open.
async fn closed_after_a_request(h: &Harness) -> std::time::Duration {
    use tokio::io::AsyncWriteExt;
    let mut tls = h.connect(&[b"http/1.1"]).await;
    tls.write_all(&h.harmless().sign().to_bytes())
        .await
        .unwrap();
    let r = harness::read_responses(&mut tls, 1).await;
    assert_eq!(r[0].status, 200, "{r:?}");
    time_to_close(&mut tls).await
}

#[tokio::test]
async fn idle_connection_is_closed_after_idle_timeout() {
    let h = Harness::start_with(limits(&[
        ("limits", "idle_timeout_secs = 1"),
        ("limits", "header_read_timeout_secs = 8"),
    ]))
    .await;
    // HTTP/1.1, kept alive after a request.
    closed_soon(closed_after_a_request(&h).await);
    // TLS, then never a byte of HTTP.
    let mut silent = h.connect(&[b"http/1.1"]).await;
    closed_soon(time_to_close(&mut silent).await);
    // h2 with no stream: GOAWAY (NO_ERROR).
    let started = std::time::Instant::now();
    assert_eq!(h2raw::wait_for_close(&h).await, Some(0));
    closed_soon(started.elapsed());
    h.stub.clear();
    h.assert_alive().await;
}

#[tokio::test]
async fn a_kept_alive_http1_connection_also_closes_at_the_header_read_timeout() {
    // hyper's header-read timer runs while an HTTP/1.1 connection waits for its next
    // request: the shorter of the two timeouts closes it.
    let h = Harness::start_with(limits(&[
        ("limits", "idle_timeout_secs = 60"),
        ("limits", "header_read_timeout_secs = 1"),
    ]))
    .await;
    closed_soon(closed_after_a_request(&h).await);
}

#[tokio::test]
async fn a_busy_connection_is_not_idle() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start_with(limits(&[
        ("limits", "idle_timeout_secs = 1"),
        ("limits", "header_read_timeout_secs = 8"),
    ]))
    .await;
    // A body that takes longer than the idle timeout to arrive is still served.
    let call = h.harmless();
    let bytes = call.sign().to_bytes();
    let (head, body) = bytes.split_at(bytes.len() - call.body.len());
    let mut tls = h.connect(&[b"http/1.1"]).await;
    tls.write_all(head).await.unwrap();
    for piece in body.chunks(body.len() / 4 + 1) {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        tls.write_all(piece).await.unwrap();
    }
    let r = harness::read_responses(&mut tls, 1).await;
    assert_eq!(r[0].status, 200, "{r:?}");
    // Had it counted as idle, it would have been told to close after this response.
    assert_ne!(r[0].header("connection"), Some("close"), "{r:?}");
    tls.write_all(&h.harmless().sign().to_bytes())
        .await
        .unwrap();
    let r = harness::read_responses(&mut tls, 1).await;
    assert_eq!(
        r[0].status, 200,
        "the kept-alive connection was closed: {r:?}"
    );
}

#[tokio::test]
async fn connections_over_the_cap_get_503_not_a_hang() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start_with(limits(&[("limits", "max_connections = 2")])).await;
    let held = vec![h.connect(&[b"http/1.1"]).await, h.connect(&[b"h2"]).await];
    // Let the accept loop take both before the next connection.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let r = h.send_call(&h.harmless()).await;
    expect(&r, 503, "ServiceUnavailable");
    assert_eq!(envelope(&r), "query", "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(r.message().contains("max_connections"), "{r:?}");
    let r = h.send_call(&h.s3("GET", "/my-bucket/key", "")).await;
    expect(&r, 503, "SlowDown");
    assert_eq!(envelope(&r), "s3", "{r:?}");
    let r = h
        .send_call(&h.json("dynamodb", "DynamoDB_20120810.ListTables", "{}"))
        .await;
    expect(&r, 503, "ServiceUnavailable");
    assert_eq!(envelope(&r), "json", "{r:?}");
    // Over h2 too.
    let call = h.harmless();
    let r = h2_send(&h, &h2_fields(&call), &call.body).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(h2_code(&r), "ServiceUnavailable");
    // One request per over-the-cap HTTP/1.1 connection: then it is closed.
    let mut tls = h.connect(&[b"http/1.1"]).await;
    tls.write_all(&h.harmless().sign().to_bytes())
        .await
        .unwrap();
    let r = harness::read_responses(&mut tls, 1).await;
    assert_eq!(r[0].status, 503);
    time_to_close(&mut tls).await;
    h.assert_untouched();
    drop(held);
    alive_soon(&h).await;
}

#[tokio::test]
async fn connections_past_the_overflow_budget_are_closed_at_once() {
    let h = Harness::start_with(limits(&[("limits", "max_connections = 1")])).await;
    let held = h.connect(&[b"http/1.1"]).await;
    // Plain TCP connections that never start TLS fill the overflow budget (64).
    let mut overflow = Vec::new();
    for _ in 0..64 {
        overflow.push(
            tokio::net::TcpStream::connect(("127.0.0.1", h.port))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", h.port))
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(h.tls_config(&[b"http/1.1"]));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let handshake = tokio::time::timeout(harness::IO_TIMEOUT, connector.connect(name, tcp))
        .await
        .expect("a hang instead of a close");
    assert!(handshake.is_err(), "served past the overflow budget");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "closed only after {:?}",
        started.elapsed()
    );
    drop(overflow);
    drop(held);
    alive_soon(&h).await;
    h.assert_untouched();
}

#[tokio::test]
async fn held_calls_past_max_held_are_answered_at_once() {
    let h = Harness::start_with(limits(&[
        ("approval", "hold_seconds = 3"),
        ("approval", "max_held = 1"),
    ]))
    .await;
    let first_call = h.query("rds", RDS_DELETE).sign().to_bytes();
    let first = h.send(&first_call);
    let second = async {
        // Let the first call take the only slot: wait until it is pending (it is held then).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while h.pending_count().await == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the first call was never held"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let form = "Action=DeleteDBInstance&DBInstanceIdentifier=other-db&SkipFinalSnapshot=true&Version=2014-10-31";
        let started = std::time::Instant::now();
        let r = h.send_call(&h.query("rds", form)).await;
        (r, started.elapsed())
    };
    let (first, (second, waited)) = tokio::join!(first, second);
    gated(&h, &second);
    assert!(
        waited < std::time::Duration::from_secs(2),
        "the second call was held {waited:?}"
    );
    gated(&h, &first);
}

#[tokio::test]
async fn oversized_signed_chunk_is_refused_s3_shaped() {
    let h = Harness::start().await;
    // The harness allows 65536-byte chunks.
    let chunks = vec![vec![b'x'; 70_000]];
    let (head, pieces) = chunk_upload(&h, &chunks, 70_000, |_, s| s);
    let r = send_upload(&h, head, pieces).await;
    expect(&r, 400, "InvalidRequest");
    assert_eq!(envelope(&r), "s3", "{r:?}");
    assert!(r.message().contains("max_chunk_bytes"), "{r:?}");
    never_completed(&h, 70_000, &[b'x'; 64]).await;
    h.assert_alive().await;
}

// ---------------------------------------------------------------------------------------
// resources read as AWS reads them (user rules scoped by resource)

fn with_rule(rule: &str) -> harness::Options {
    harness::Options {
        extra: rule.to_string(),
        ..Default::default()
    }
}

const DENY_PROD_DB_CHANGES: &str = r#"
[[rule]]
name = "no-prod-db-changes"
effect = "deny"
actions = ["rds:ModifyDBInstance"]
resources = ["arn:aws:rds:*:*:db:prod-*"]
reason = "prod databases are changed by humans"
"#;

#[tokio::test]
async fn user_rule_on_an_rds_instance_applies_to_its_name() {
    let h = Harness::start_with(with_rule(DENY_PROD_DB_CHANGES)).await;
    let form = "Action=ModifyDBInstance&DBInstanceIdentifier=prod-db&AllocatedStorage=100&Version=2014-10-31";
    let r = h.send_call(&h.query("rds", form)).await;
    expect(&r, 403, "AccessDenied");
    assert!(r.message().contains("no-prod-db-changes"), "{r:?}");
    h.assert_untouched();
}

#[tokio::test]
async fn user_rule_on_an_rds_instance_cannot_be_dodged_with_upper_case() {
    let h = Harness::start_with(with_rule(DENY_PROD_DB_CHANGES)).await;
    // RDS stores identifiers in lower case: `PROD-DB` is `prod-db`.
    let form = "Action=ModifyDBInstance&DBInstanceIdentifier=PROD-DB&AllocatedStorage=100&Version=2014-10-31";
    let r = h.send_call(&h.query("rds", form)).await;
    expect(&r, 403, "AccessDenied");
    h.assert_untouched();
}

const DENY_PROD_LAMBDA_INVOKE: &str = r#"
[[rule]]
name = "no-prod-invoke"
effect = "deny"
actions = ["lambda:Invoke"]
resources = ["arn:aws:lambda:*:*:function:prod-*"]
"#;

#[tokio::test]
async fn user_rule_on_a_function_applies_to_its_name_arn_and_partial_arn() {
    let h = Harness::start_with(with_rule(DENY_PROD_LAMBDA_INVOKE)).await;
    for name in [
        "prod-fn",
        "prod-fn:live",
        "arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Aprod-fn",
        "123456789012%3Afunction%3Aprod-fn",
    ] {
        let call = h
            .call(
                "lambda",
                "POST",
                &format!("/2015-03-31/functions/{name}/invocations"),
            )
            .body("{}");
        let r = h.send_call(&call).await;
        expect(&r, 403, "AccessDenied");
    }
    h.assert_untouched();
}

const DENY_PROD_PARAMETER_GROUPS: &str = r#"
[[rule]]
name = "no-prod-parameter-changes"
effect = "deny"
actions = ["rds:ModifyDBParameterGroup"]
resources = ["arn:aws:rds:*:*:pg:prod-*"]
"#;

fn modify_parameter_group(name: &str) -> String {
    format!(
        "Action=ModifyDBParameterGroup&DBParameterGroupName={name}&Parameters.Parameter.1.ParameterName=rds.force_ssl&Parameters.Parameter.1.ParameterValue=0&Parameters.Parameter.1.ApplyMethod=immediate&Version=2014-10-31"
    )
}

#[tokio::test]
async fn user_rule_on_an_rds_parameter_group_applies_to_its_name() {
    let h = Harness::start_with(with_rule(DENY_PROD_PARAMETER_GROUPS)).await;
    let r = h
        .send_call(&h.query("rds", &modify_parameter_group("prod-pg")))
        .await;
    expect(&r, 403, "AccessDenied");
    h.assert_untouched();
}

#[tokio::test]

async fn user_rule_on_an_rds_parameter_group_cannot_be_dodged_with_upper_case() {
    let h = Harness::start_with(with_rule(DENY_PROD_PARAMETER_GROUPS)).await;
    // RDS stores parameter group names in lower case too: `PROD-PG` is `prod-pg`.
    let r = h
        .send_call(&h.query("rds", &modify_parameter_group("PROD-PG")))
        .await;
    expect(&r, 403, "AccessDenied");
    h.assert_untouched();
}

#[tokio::test]
async fn user_rule_on_an_rds_instance_applies_to_its_arn_in_upper_case() {
    let h = Harness::start_with(with_rule(DENY_PROD_DB_CHANGES)).await;
    let form = "Action=ModifyDBInstance&DBInstanceIdentifier=arn%3Aaws%3Ards%3Aeu-west-1%3A123456789012%3Adb%3APROD-DB&AllocatedStorage=100&Version=2014-10-31";
    expect(
        &h.send_call(&h.query("rds", form)).await,
        403,
        "AccessDenied",
    );
    h.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// parsers under stress: refused, never a crash

#[tokio::test]
async fn cbor_operation_name_percent_encoded_is_read_decoded() {
    let h = Harness::start().await;
    let mut body = vec![0xa1, 0x6a];
    body.extend_from_slice(b"AlarmNames");
    body.extend_from_slice(&[0x81, 0x64]);
    body.extend_from_slice(b"prod");
    let call = h
        .call(
            "monitoring",
            "POST",
            "/service/GraniteServiceVersion20100801/operation/Delete%41larms",
        )
        .header("smithy-protocol", "rpc-v2-cbor")
        .header("Content-Type", "application/cbor")
        .body(body);
    let r = h.send_call(&call).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.code(), "AccessDeniedException");
    h.assert_untouched();
}

#[tokio::test]
async fn semicolon_separated_form_fields_are_not_split() {
    let h = Harness::start().await;
    let form = "Action=DescribeDBInstances;Action=DeleteDBInstance&DBInstanceIdentifier=prod-db&Version=2014-10-31";
    let r = h.send_call(&h.query("rds", form)).await;
    expect(&r, 400, "InvalidAction");
    h.assert_untouched();
}

#[tokio::test]
async fn encoded_ampersand_in_action_is_not_a_separator() {
    let h = Harness::start().await;
    let form = "Action=DescribeDBInstances%26Action%3DDeleteDBInstance&DBInstanceIdentifier=prod-db&Version=2014-10-31";
    expect(
        &h.send_call(&h.query("rds", form)).await,
        400,
        "InvalidAction",
    );
    h.assert_untouched();
}

#[tokio::test]
async fn deeply_nested_json_is_refused_without_a_crash() {
    let h = Harness::start().await;
    let body = format!(
        r#"{{"TableName":"t","X":{}{}}}"#,
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let r = h
        .send_call(&h.json("dynamodb", "DynamoDB_20120810.DescribeTable", &body))
        .await;
    expect(&r, 400, "SerializationException");
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn deeply_nested_cbor_is_refused_without_a_crash() {
    let h = Harness::start().await;
    let mut body = vec![0xa1, 0x61, b'X'];
    body.extend(std::iter::repeat_n(0x81u8, 20_000));
    body.push(0x00);
    let call = h
        .call(
            "monitoring",
            "POST",
            "/service/GraniteServiceVersion20100801/operation/DescribeAlarms",
        )
        .header("smithy-protocol", "rpc-v2-cbor")
        .header("Content-Type", "application/cbor")
        .body(body);
    let r = h.send_call(&call).await;
    assert_eq!(r.status, 400, "{r:?}");
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn deeply_nested_xml_is_refused_without_a_crash() {
    let h = Harness::start().await;
    let body = format!(
        "<Delete>{}{}</Delete>",
        "<Object>".repeat(1000),
        "</Object>".repeat(1000)
    );
    let r = h
        .send_call(&h.s3("POST", "/prod-bucket", "delete").body(body))
        .await;
    expect(&r, 400, "MalformedXML");
    h.assert_untouched();
    h.assert_alive().await;
}

#[tokio::test]
async fn xml_entity_expansion_is_refused() {
    let h = Harness::start().await;
    let body = "<?xml version=\"1.0\"?><!DOCTYPE v [<!ENTITY a \"Suspended\">]><VersioningConfiguration><Status>&a;</Status></VersioningConfiguration>";
    let r = h
        .send_call(&h.s3("PUT", "/prod-bucket", "versioning").body(body))
        .await;
    expect(&r, 400, "MalformedXML");
    h.assert_untouched();
}

#[tokio::test]
async fn xml_declaring_another_encoding_is_refused() {
    let h = Harness::start().await;
    let body = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>";
    let r = h
        .send_call(&h.s3("PUT", "/prod-bucket", "versioning").body(body))
        .await;
    expect(&r, 400, "MalformedXML");
    h.assert_untouched();
}
