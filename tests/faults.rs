//! Faults: what airlock does when the upstream, its own disk, or its own process fails.
//!
//! - **Upstream faults** (in-process airlock in front of [`upstream::Upstream`], a raw-TCP
//!   upstream that refuses, resets, hangs or answers garbage on demand): the agent gets an
//!   AWS-shaped 503/502/504, never a hang and never a cut-short body passed off as whole;
//!   a receipt use is given back only when the call never reached the upstream.
//! - **State faults** (the real binary, its ledger or audit log on `/dev/full` or turned
//!   into a directory): calls that need a receipt are refused (fail closed), allowed calls
//!   are still served, and the log says why; an unusable state dir stops `serve` at start
//!   with a message, not a panic.
//! - **Process faults** (the real binary): SIGKILL at random moments under load loses no
//!   acknowledged audit record and no committed receipt use; SIGTERM lets calls in flight
//!   at the upstream finish.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "adversarial/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "faults/served.rs"]
mod served;
#[allow(dead_code)]
#[path = "adversarial/sign.rs"]
mod sign;
#[allow(dead_code)]
#[path = "adversarial/stub.rs"]
mod stub;
#[allow(dead_code)]
#[path = "faults/upstream.rs"]
mod upstream;

use bytes::Bytes;
use harness::{Harness, Options, Resp, Wire};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use served::Served;
use std::time::{Duration, Instant};
use upstream::{Fault, Upstream, ACCOUNT};

const RDS_DELETE: &str =
    "Action=DeleteDBInstance&DBInstanceIdentifier=prod-db&SkipFinalSnapshot=true&Version=2014-10-31";
const CALLER: &str = "Action=GetCallerIdentity&Version=2011-06-15";

/// airlock in-process in front of a faulty upstream, with a 1-second response timeout.
async fn start() -> (Harness, Upstream) {
    let up = Upstream::start().await;
    let h = Harness::start_with(Options {
        endpoint: Some(up.endpoint()),
        response_timeout_secs: 1,
        ..Default::default()
    })
    .await;
    // airlock asks for its own account at start: let that settle before any fault.
    up.wait_for("GetCallerIdentity", 1).await;
    (h, up)
}

/// An AWS-shaped error: the status, and the code where the protocol puts it.
fn expect_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "status of {r:#?}");
    assert_eq!(r.code(), code, "AWS error code of {r:#?}");
    assert!(
        r.header("x-amzn-requestid").is_some(),
        "no request id: {r:#?}"
    );
}

/// The S3 shape: `<Error><Code>` in `application/xml`.
fn s3_shaped(r: &Resp) {
    assert_eq!(r.header("content-type"), Some("application/xml"), "{r:#?}");
    assert!(r.body.contains("<Error><Code>"), "{r:#?}");
}

/// The query shape: `<ErrorResponse><Error><Type>Receiver</Type>`.
fn query_shaped(r: &Resp) {
    assert!(
        r.body
            .contains("<ErrorResponse><Error><Type>Receiver</Type>"),
        "{r:#?}"
    );
}

/// airlock still forwards a good call once the upstream behaves again.
async fn alive(h: &Harness, up: &Upstream) {
    up.restore().await;
    let r = h.send_call(&h.query("sts", CALLER)).await;
    assert_eq!(
        r.status, 200,
        "airlock no longer serves a good call: {r:#?}"
    );
    assert!(r.body.contains(ACCOUNT), "{r:#?}");
}

/// One HTTP/1.1 connection to airlock through hyper's own client, which checks framing
/// (a body shorter than its `Content-Length`, a chunked body without its last chunk).
struct Agent {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    conn: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Result<Bytes, hyper::Error>,
}

impl Agent {
    async fn connect(h: &Harness) -> Agent {
        let tls = h.connect(&[b"http/1.1"]).await;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("handshake");
        Agent {
            sender,
            conn: tokio::spawn(conn),
        }
    }

    async fn send(&mut self, wire: &Wire) -> Answer {
        let mut req = http::Request::builder()
            .method(wire.method.as_str())
            .uri(wire.target.as_str());
        for (k, v) in &wire.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(wire.body.clone())))
            .expect("request");
        let resp = tokio::time::timeout(harness::IO_TIMEOUT, self.sender.send_request(req))
            .await
            .expect("airlock did not answer (a hang)")
            .expect("a response head");
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(harness::IO_TIMEOUT, body.collect())
            .await
            .expect("the body neither ended nor broke (a hang)")
            .map(|c| c.to_bytes());
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    /// The connection has ended (airlock closed it).
    async fn closed(self) {
        // It ends with an error (the cut) or without; it must end.
        let _ended = tokio::time::timeout(Duration::from_secs(5), self.conn)
            .await
            .expect("airlock left the connection open after breaking its response")
            .expect("connection task");
    }
}

// ---------------------------------------------------------------------------------------
// upstream faults: AWS-shaped 503 / 502 / 504

#[tokio::test]
async fn refused_upstream_is_a_503_in_s3_xml() {
    let (h, up) = start().await;
    up.refuse().await;
    let r = h.send_call(&h.s3("GET", "/my-bucket/key.txt", "")).await;
    expect_error(&r, 503, "ServiceUnavailable");
    s3_shaped(&r);
    assert!(r.message().contains("could not connect"), "{r:#?}");
    alive(&h, &up).await;
}

#[tokio::test]
async fn refused_upstream_is_a_503_in_json() {
    let (h, up) = start().await;
    up.refuse().await;
    let call = h.json("dynamodb", "DynamoDB_20120810.ListTables", "{}");
    let r = h.send_call(&call).await;
    expect_error(&r, 503, "ServiceUnavailable");
    assert_eq!(r.header("x-amzn-errortype"), Some("ServiceUnavailable"));
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("a JSON error body");
    assert_eq!(v["__type"], "ServiceUnavailable", "{r:#?}");
    alive(&h, &up).await;
}

#[tokio::test]
async fn upstream_reset_before_answering_is_a_502_and_the_agent_connection_stays_usable() {
    let (h, up) = start().await;
    let mut agent = Agent::connect(&h).await;
    up.set(Fault::Reset);
    let a = agent.send(&h.query("sts", CALLER).sign()).await;
    assert_eq!(a.status, 502);
    let body = String::from_utf8(a.body.expect("a whole error body").to_vec()).unwrap();
    assert!(body.contains("<Code>BadGateway</Code>"), "{body}");
    assert!(
        body.contains("<ErrorResponse><Error><Type>Receiver</Type>"),
        "{body}"
    );
    assert_eq!(
        up.count("GetCallerIdentity"),
        2,
        "the upstream read the call"
    );
    // The same connection carries the next call.
    up.set(Fault::Answer);
    let a = agent.send(&h.query("sts", CALLER).sign()).await;
    assert_eq!(a.status, 200);
    assert!(String::from_utf8_lossy(&a.body.expect("body")).contains(ACCOUNT));
}

/// The upstream promised more than it sent: the agent gets the head, then a body that
/// breaks (its client sees the cut), and the connection closes; airlock keeps serving.
async fn cut_short(fault: Fault) {
    let (h, up) = start().await;
    let mut agent = Agent::connect(&h).await;
    up.set(fault);
    let a = agent
        .send(&h.s3("GET", "/my-bucket/big.bin", "").sign())
        .await;
    assert_eq!(a.status, 200, "the head was forwarded before the cut");
    if fault == Fault::PartialThenReset {
        assert_eq!(
            a.headers
                .get("content-length")
                .and_then(|v| v.to_str().ok()),
            Some("1000")
        );
    }
    assert!(
        a.body.is_err(),
        "a cut-short body reached the agent as a whole one: {:?}",
        a.body
    );
    agent.closed().await;
    alive(&h, &up).await;
}

#[tokio::test]
async fn upstream_reset_mid_body_is_not_passed_off_as_complete() {
    cut_short(Fault::PartialThenReset).await;
}

#[tokio::test]
async fn upstream_reset_mid_chunked_body_is_not_passed_off_as_complete() {
    cut_short(Fault::PartialChunkedThenReset).await;
}

#[tokio::test]
async fn hanging_upstream_is_a_504_within_the_response_timeout() {
    let (h, up) = start().await;
    up.set(Fault::Hang);
    let started = Instant::now();
    let r = h.send_call(&h.query("sts", CALLER)).await;
    let took = started.elapsed();
    eprintln!("FIGURE time to 504 with response_timeout_secs = 1: {took:?}");
    expect_error(&r, 504, "GatewayTimeout");
    query_shaped(&r);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "the 504 came after {took:?}, not just after the 1 s timeout"
    );
    alive(&h, &up).await;
}

#[tokio::test]
async fn garbage_status_line_is_a_502() {
    let (h, up) = start().await;
    up.set(Fault::GarbageStatusLine);
    let r = h.send_call(&h.query("sts", CALLER)).await;
    expect_error(&r, 502, "BadGateway");
    query_shaped(&r);
    alive(&h, &up).await;
}

#[tokio::test]
async fn random_bytes_are_a_502() {
    let (h, up) = start().await;
    up.set(Fault::RandomBytes);
    let r = h.send_call(&h.s3("GET", "/my-bucket/key.txt", "")).await;
    expect_error(&r, 502, "BadGateway");
    s3_shaped(&r);
    alive(&h, &up).await;
}

// ---------------------------------------------------------------------------------------
// upstream faults under a receipt: a use is given back only when the call never reached
// the upstream (redeem.rs, `Authorization::finish`)

/// A gated call refused once, then approved: the receipt id.
async fn approved(h: &Harness) -> String {
    let r = h.send_call(&h.query("rds", RDS_DELETE)).await;
    expect_error(&r, 403, "AccessDenied");
    let ids = h.approve_all_pending().await;
    assert_eq!(ids.len(), 1);
    ids.into_iter().next().unwrap()
}

/// The audit log's events for the calls of one operation (records with a request id), in
/// order: what a reader after an incident sees of them.
async fn audit_events(h: &Harness, operation: &str) -> Vec<String> {
    h.audit_records()
        .await
        .iter()
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        .filter(|v| v.get("request_id").is_some())
        .filter(|v| v["action"].as_str().is_some_and(|a| a.ends_with(operation)))
        .map(|v| v["event"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn refused_upstream_gives_the_receipt_use_back() {
    let (h, up) = start().await;
    let receipt = approved(&h).await;
    up.refuse().await;
    let r = h.send_call(&h.query("rds", RDS_DELETE)).await;
    expect_error(&r, 503, "ServiceUnavailable");
    assert_eq!(up.count("DeleteDBInstance"), 0);
    assert_eq!(h.ledger_events(&receipt).await, ["reserve", "release"]);
    // The upstream is back: the same receipt covers the retry, once.
    up.restore().await;
    let r = h.send_call(&h.query("rds", RDS_DELETE)).await;
    assert_eq!(r.status, 200, "the retry under the given-back use: {r:#?}");
    assert_eq!(up.count("DeleteDBInstance"), 1);
    assert_eq!(
        h.ledger_events(&receipt).await,
        ["reserve", "release", "reserve", "commit"]
    );
    let r = h.send_call(&h.query("rds", RDS_DELETE)).await;
    expect_error(&r, 403, "AccessDenied");
    assert_eq!(up.count("DeleteDBInstance"), 1);
    assert_eq!(
        audit_events(&h, "DeleteDBInstance").await,
        [
            "approval_required",
            "upstream_failure",
            "receipt_used",
            "approval_required"
        ]
    );
}

/// The upstream read the gated call, then failed: it may have acted, so the use counts.
async fn spends_the_use(fault: Fault, status: u16, code: &str) {
    let (h, up) = start().await;
    let receipt = approved(&h).await;
    up.set(fault);
    let r = h.send_call(&h.query("rds", RDS_DELETE)).await;
    expect_error(&r, status, code);
    query_shaped(&r);
    assert_eq!(
        up.count("DeleteDBInstance"),
        1,
        "the upstream read the call"
    );
    assert_eq!(h.ledger_events(&receipt).await, ["reserve", "commit"]);
    up.restore().await;
    let r = h.send_call(&h.query("rds", RDS_DELETE)).await;
    expect_error(&r, 403, "AccessDenied");
    assert_eq!(
        up.count("DeleteDBInstance"),
        1,
        "a spent receipt covered a retry"
    );
    assert_eq!(
        audit_events(&h, "DeleteDBInstance").await,
        ["approval_required", "upstream_failure", "approval_required"]
    );
    alive(&h, &up).await;
}

#[tokio::test]
async fn upstream_reset_after_reading_a_gated_call_spends_the_use() {
    spends_the_use(Fault::Reset, 502, "BadGateway").await;
}

#[tokio::test]
async fn hanging_upstream_on_a_gated_call_spends_the_use() {
    spends_the_use(Fault::Hang, 504, "GatewayTimeout").await;
}

#[tokio::test]
async fn garbage_answer_to_a_gated_call_spends_the_use() {
    spends_the_use(Fault::GarbageStatusLine, 502, "BadGateway").await;
}

// ---------------------------------------------------------------------------------------
// state faults (the real binary): the ledger or the audit log cannot be written

/// The real binary in front of an answering upstream.
async fn served() -> (Served, Upstream) {
    let up = Upstream::start().await;
    let s = Served::new(&up.endpoint(), 1);
    (s, up)
}

/// A gated call refused for want of an approval, and the approval's id.
async fn refused_for_approval(s: &Served) -> String {
    let r = s.send(&s.query("rds", RDS_DELETE)).await;
    expect_error(&r, 403, "AccessDenied");
    served::approval_id(&r)
}

/// The real binary serving, with an approved receipt for `RDS_DELETE`: its id.
async fn serving_with_a_receipt() -> (Served, Upstream, String) {
    let (mut s, up) = served().await;
    s.start();
    let approval = refused_for_approval(&s).await;
    let receipt = s.approve(&approval).expect("approve");
    (s, up, receipt)
}

/// An allowed call is forwarded and answered.
async fn reads_are_served(s: &Served) {
    let r = s.send(&s.query("sts", CALLER)).await;
    assert_eq!(r.status, 200, "an allowed call was not served: {r:#?}");
    assert!(r.body.contains(ACCOUNT), "{r:#?}");
}

/// The approved gated call is refused with a 503 that names what cannot be written, and
/// never reaches the upstream.
async fn refused_fail_closed(s: &Served, up: &Upstream, what: &str) {
    let r = s.send(&s.query("rds", RDS_DELETE)).await;
    expect_error(&r, 503, "ServiceUnavailable");
    query_shaped(&r);
    assert!(
        r.message().contains(what) && r.message().contains("fail closed"),
        "{r:#?}"
    );
    assert_eq!(
        up.count("DeleteDBInstance"),
        0,
        "a call that needs a receipt was forwarded unrecorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_ledger_refuses_gated_calls_and_serves_reads() {
    if harness::file_store_only("a state fault on the file store's own files (ledger.jsonl, the audit log, the state dir); the database's outages have their own tests in tests/team_store.rs") {
        return;
    }
    let (mut s, up) = served().await;
    std::os::unix::fs::symlink("/dev/full", s.state.join("ledger.jsonl")).unwrap();
    s.start();
    reads_are_served(&s).await;
    let approval = refused_for_approval(&s).await;
    s.approve(&approval).expect("approve");
    refused_fail_closed(&s, &up, "receipt ledger").await;
    let log = s.log();
    assert!(
        log.contains("cannot write the receipt ledger") && log.contains("No space left on device"),
        "no clear log line:\n{log}"
    );
    reads_are_served(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_audit_log_refuses_gated_calls_and_serves_reads() {
    if harness::file_store_only("a state fault on the file store's own files (ledger.jsonl, the audit log, the state dir); the database's outages have their own tests in tests/team_store.rs") {
        return;
    }
    let (mut s, up) = served().await;
    std::fs::create_dir(s.state.join("audit")).unwrap();
    std::os::unix::fs::symlink("/dev/full", s.state.join("audit/00000001.jsonl")).unwrap();
    s.start();
    s.wait_for_log("the audit log cannot be written");
    assert!(s.log().contains("No space left on device"), "{}", s.log());
    reads_are_served(&s).await;
    let approval = refused_for_approval(&s).await;
    // The CLI records the decision, then says it could not write the audit record.
    let said = s
        .approve(&approval)
        .expect_err("approve wrote to /dev/full");
    assert!(said.contains("the decision is recorded"), "{said}");
    refused_fail_closed(&s, &up, "audit log").await;
    assert!(
        s.ledger().is_empty(),
        "a use was reserved: {:?}",
        s.ledger()
    );
    reads_are_served(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_log_refuses_gated_calls_until_it_is_back() {
    if harness::file_store_only("a state fault on the file store's own files (ledger.jsonl, the audit log, the state dir); the database's outages have their own tests in tests/team_store.rs") {
        return;
    }
    let (s, up, receipt) = serving_with_a_receipt().await;
    // The log's segment is moved aside and a directory takes its place: every append fails.
    let log_path = s.state.join("audit/00000001.jsonl");
    let aside = s.state.join("audit/00000001.jsonl.aside");
    std::fs::rename(&log_path, &aside).unwrap();
    std::fs::create_dir(&log_path).unwrap();
    // serve notices when its lease on the log's lock ends (within 20 ms); until then its
    // records go on into the file moved aside, which is not lost.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.log().contains("the audit log cannot be written") {
        assert!(
            std::time::Instant::now() < deadline,
            "serve never noticed:\n{}",
            s.log()
        );
        reads_are_served(&s).await;
    }
    reads_are_served(&s).await;
    refused_fail_closed(&s, &up, "audit log").await;
    let log = s.log();
    assert!(
        log.contains("the audit log cannot be written"),
        "no clear log line:\n{log}"
    );
    // Back: the next record is written, and the receipt (unspent) covers the call once.
    std::fs::remove_dir(&log_path).unwrap();
    std::fs::rename(&aside, &log_path).unwrap();
    reads_are_served(&s).await;
    let r = s.send(&s.query("rds", RDS_DELETE)).await;
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(up.count("DeleteDBInstance"), 1);
    let events: Vec<_> = s
        .ledger()
        .into_iter()
        .filter(|(r, _)| *r == receipt)
        .map(|(_, e)| e)
        .collect();
    assert_eq!(events, ["reserve", "commit"]);
    assert!(s.log().contains("the audit log can be written again"));
    let verify = s.cli(&["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
}

/// Breaks a state dir.
type Breaks = fn(&std::path::Path);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_state_dir_stops_serve_with_a_clear_error() {
    if harness::file_store_only("a state fault on the file store's own files (ledger.jsonl, the audit log, the state dir); the database's outages have their own tests in tests/team_store.rs") {
        return;
    }
    let up = Upstream::start().await;
    let cases: [(&str, Breaks); 3] = [
        ("ledger.jsonl", |state| {
            std::fs::create_dir(state.join("ledger.jsonl")).unwrap()
        }),
        ("audit", |state| {
            std::fs::write(state.join("audit"), "not a directory").unwrap()
        }),
        ("state", |state| {
            std::fs::remove_dir_all(state).unwrap();
            std::fs::write(state, "not a directory").unwrap();
        }),
    ];
    for (name, break_it) in cases {
        let mut s = Served::new(&up.endpoint(), 1);
        break_it(&s.state);
        let status = s.start_expecting_exit();
        let log = s.log();
        eprintln!(
            "FIGURE state dir broken at {name}: serve exited with {status}; it said: {}",
            log.trim()
        );
        assert!(!status.success(), "{name}: serve exited 0:\n{log}");
        assert!(
            !log.contains("panicked"),
            "{name}: serve panicked instead of saying what is wrong:\n{log}"
        );
        assert!(
            log.contains(name),
            "{name}: the message does not name it:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// process faults (the real binary): SIGKILL at any moment, SIGTERM drains

/// One answer the agent received: what was asked, the status, and the request id it
/// carried (airlock's for its own refusals, the upstream's for forwarded answers).
#[derive(Debug)]
struct Acked {
    binding: Option<String>,
    status: u16,
    id: String,
}

fn delete_form(db: &str) -> String {
    format!("Action=DeleteDBInstance&DBInstanceIdentifier={db}&SkipFinalSnapshot=true&Version=2014-10-31")
}

/// Sends one call; the answer if one came back (head and all).
async fn ask(
    port: u16,
    tls: &std::sync::Arc<rustls::ClientConfig>,
    call: &harness::Call,
    binding: Option<&str>,
) -> Option<Acked> {
    let r = served::send_to(port, tls, &call.sign().to_bytes()).await;
    (r.status != 0).then(|| Acked {
        binding: binding.map(str::to_string),
        status: r.status,
        id: r.header("x-amzn-requestid").unwrap_or("").to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_acknowledged_record_and_no_committed_use() {
    if harness::file_store_only("drives the real binary (faults/served.rs) on the file store and reads its ledger.jsonl and audit log; not yet switched to PostgreSQL") {
        return;
    }
    use rand::Rng;
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    const ROUNDS: usize = 5;
    const USES: u32 = 20;
    const NEW_BINDINGS_PER_ROUND: usize = 3;
    const WORKERS: usize = 6;

    let up = Upstream::start().await;
    up.set_jitter(Duration::from_millis(20));
    let mut s = Served::new(&up.endpoint(), USES);
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut receipts: HashMap<String, String> = HashMap::new(); // binding → its one receipt
    let mut unanswered = 0usize;
    let started = Instant::now();

    for round in 0..ROUNDS {
        s.start();
        let (port, tls, agent) = (s.port, s.ca(), s.agent());
        // New bindings, each approved once (one receipt of USES uses, never another).
        for i in 0..NEW_BINDINGS_PER_ROUND {
            let db = format!("kill-{round}-{i}");
            let call = agent.query("rds", &delete_form(&db));
            let r = served::send_to(port, &tls, &call.sign().to_bytes()).await;
            expect_error(&r, 403, "AccessDenied");
            acked.lock().unwrap().push(Acked {
                binding: Some(db.clone()),
                status: r.status,
                id: r.header("x-amzn-requestid").unwrap().to_string(),
            });
            let receipt = s.approve(&served::approval_id(&r)).expect("approve");
            receipts.insert(db, receipt);
        }
        let bindings: Vec<String> = receipts.keys().cloned().collect();
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (tls, agent, stop, acked) = (
                    Arc::clone(&tls),
                    agent.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&acked),
                );
                let (bindings, round) = (bindings.clone(), round);
                tokio::spawn(async move {
                    let mut lost = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        let (call, binding) = {
                            let mut rng = rand::thread_rng();
                            if rng.gen_bool(0.4) {
                                (agent.query("sts", CALLER), None)
                            } else {
                                // Mostly this round's bindings, sometimes older (spent) ones.
                                let fresh = &bindings[bindings.len() - NEW_BINDINGS_PER_ROUND..];
                                let pool = if round > 0 && rng.gen_bool(0.2) {
                                    &bindings[..]
                                } else {
                                    fresh
                                };
                                let db = pool[rng.gen_range(0..pool.len())].clone();
                                (agent.query("rds", &delete_form(&db)), Some(db))
                            }
                        };
                        match ask(port, &tls, &call, binding.as_deref()).await {
                            Some(a) => acked.lock().unwrap().push(a),
                            None => lost += 1,
                        }
                    }
                    lost
                })
            })
            .collect();
        let moment = Duration::from_millis(rand::thread_rng().gen_range(100..700));
        tokio::time::sleep(moment).await;
        s.kill();
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            unanswered += w.await.unwrap();
        }
    }

    // Once more, on the state the kills left: every binding asked for more than its uses.
    s.start();
    let (port, tls, agent) = (s.port, s.ca(), s.agent());
    let last: Vec<_> = receipts
        .keys()
        .map(|db| {
            let (tls, agent, db) = (Arc::clone(&tls), agent.clone(), db.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for _ in 0..=USES {
                    let call = agent.query("rds", &delete_form(&db));
                    let a = ask(port, &tls, &call, Some(&db)).await.expect("an answer");
                    assert!(a.status == 200 || a.status == 403, "{a:?}");
                    answers.push(a);
                }
                answers
            })
        })
        .collect();
    for answers in last {
        let answers = answers.await.unwrap();
        acked.lock().unwrap().extend(answers);
    }
    s.terminate();
    assert!(s
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|st| st.success()));
    let took = started.elapsed();

    // The audit chain holds, and every answer the agent received is on the record.
    let verify = s.cli(&["audit", "verify"]);
    assert!(verify.status.success(), "audit verify: {verify:?}");
    let records = s.audit();
    let on_record: HashSet<&str> = records
        .iter()
        .flat_map(|r| [r["request_id"].as_str(), r["aws_request_id"].as_str()])
        .flatten()
        .collect();
    let acked = acked.lock().unwrap();
    for a in acked.iter() {
        assert!(!a.id.is_empty(), "an answer without a request id: {a:?}");
        assert!(
            on_record.contains(a.id.as_str()),
            "the agent was answered ({a:?}) but the audit log has no record of it"
        );
    }

    // No receipt was honoured more than its uses, across the kills; every use the agent
    // saw succeed is committed in the ledger, and every call that reached the upstream
    // had a use reserved and not given back.
    let ledger = s.ledger();
    let mut spent_by_kills = 0;
    for (db, receipt) in &receipts {
        let events: Vec<&str> = ledger
            .iter()
            .filter(|(r, _)| r == receipt)
            .map(|(_, e)| e.as_str())
            .collect();
        let count = |e: &str| events.iter().filter(|x| **x == e).count();
        let (reserves, commits, releases) = (count("reserve"), count("commit"), count("release"));
        let reached = up.count(&format!("DBInstanceIdentifier={db}&"));
        let ok = acked
            .iter()
            .filter(|a| a.binding.as_deref() == Some(db.as_str()) && a.status == 200)
            .count();
        assert!(
            reached <= USES as usize,
            "{db}: a receipt of {USES} uses let {reached} calls reach the upstream (ledger {events:?})"
        );
        assert!(
            reached <= reserves - releases,
            "{db}: {reached} calls reached the upstream under {reserves} reservations, {releases} given back"
        );
        assert!(
            ok <= commits,
            "{db}: the agent saw {ok} successes, the ledger committed {commits} ({events:?})"
        );
        spent_by_kills += reserves - commits - releases;
    }
    let ok = acked.iter().filter(|a| a.status == 200).count();
    eprintln!(
        "FIGURE SIGKILL: {ROUNDS} kills in {took:?}; {} answers checked against {} audit records ({ok} of them 200s), {unanswered} calls unanswered (in flight at a kill, or sent just after it); {} receipts of {USES} uses checked, {spent_by_kills} use(s) counted spent by a kill mid-call; {} torn audit tail(s) recovered",
        acked.len(),
        records.len(),
        receipts.len(),
        s.log().matches("ended in a torn record").count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_calls_in_flight_at_the_upstream_finish() {
    if harness::file_store_only("drives the real binary (faults/served.rs) on the file store and reads its ledger.jsonl and audit log; not yet switched to PostgreSQL") {
        return;
    }
    let (mut s, up, receipt) = serving_with_a_receipt().await;
    up.set_delay(Duration::from_millis(1500));
    let (port, tls, agent) = (s.port, s.ca(), s.agent());
    let before = up.count("GetCallerIdentity");
    let mut calls: Vec<_> = (0..3).map(|_| (agent.query("sts", CALLER), None)).collect();
    calls.push((agent.query("rds", RDS_DELETE), Some("prod-db")));
    let in_flight: Vec<_> = calls
        .into_iter()
        .map(|(call, binding)| {
            let tls = std::sync::Arc::clone(&tls);
            tokio::spawn(async move { ask(port, &tls, &call, binding).await })
        })
        .collect();
    up.wait_for("GetCallerIdentity", before + 3).await;
    up.wait_for("DeleteDBInstance", 1).await;
    let signalled = Instant::now();
    s.terminate();
    // No new connections once the signal is in (while the calls are still at the upstream)...
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(
            signalled.elapsed() < Duration::from_secs(3),
            "airlock still accepts connections after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...but every call in flight gets its answer, and then airlock exits cleanly.
    for call in in_flight {
        let a = call
            .await
            .unwrap()
            .expect("a call in flight was cut off by SIGTERM");
        assert_eq!(a.status, 200, "{a:?}");
    }
    let status = s.wait_exit(Duration::from_secs(10)).expect("serve exits");
    let took = signalled.elapsed();
    eprintln!("FIGURE SIGTERM: 4 calls in flight at a 1.5 s upstream finished; serve exited {took:?} after the signal");
    assert!(status.success(), "{status}");
    assert_eq!(
        s.ledger()
            .into_iter()
            .filter(|(r, _)| *r == receipt)
            .map(|(_, e)| e)
            .collect::<Vec<_>>(),
        ["reserve", "commit"]
    );
    assert!(s.log().contains("all in-flight requests finished"));
}
