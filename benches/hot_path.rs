//! Micro-benchmarks of the pure steps of airlock's request path: verify the agent's SigV4
//! signature, identify the AWS call, decide by policy, check a receipt.
//!
//! ```sh
//! cargo bench --features bench --bench hot_path
//! cargo bench --features bench --bench hot_path -- --warm-up-time 1 --measurement-time 3
//! cargo bench --features bench --bench hot_path -- identify/   # one group only
//! ```
//!
//! Every input is made the way it reaches airlock: requests are signed by `aws-sigv4` (the
//! signer of the AWS SDK for Rust) as an SDK would sign them, identification reads what
//! authentication forwards, the policy decides on identified calls, and the receipt is
//! signed by an approver key for the very call it is checked against. Setup asserts that
//! each step succeeds, so no benchmark measures an early error path.
//!
//! `metrics/` is what `src/metrics.rs` adds to one call.
//!
//! Not here: re-signing (`proxy::resign::resign` needs a `Proxy` and a `VerifiedRequest`,
//! which only `authenticate` can make), and everything with I/O (TLS, HTTP, the audit log,
//! the receipt store), which the end-to-end benchmark in `bench/` measures.

// Setup that cannot succeed should stop the run loudly.
#![allow(clippy::expect_used)]

use airlock::identify::{identify, AwsCall, Request};
use airlock::policy::{Effect, Mode, Policy, Rule};
use airlock::proxy::authenticate::{derive_key, DROPPED_HEADERS};
use airlock::receipt::{
    authorize, sign, ApproverKey, Binding, Decision, Receipt, ReceiptBody, TrustedKeys, Validity,
};
use airlock::secret::Secret;
use airlock::sigv4::{sha256_hex, PayloadClaim, Prepared, RequestHead, SigningKey};
use airlock::state::agents::Agent;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign as sdk_sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
    SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};
use time::OffsetDateTime;

// The proxy's allocator (src/main.rs): allocation is a large part of these paths.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ACCESS_KEY: &str = "AKIAAIRLOCKBENCH0001";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYBENCHKEY01";
const HOST: &str = "localhost:8443";
const REGION: &str = "us-east-1";
const ACCOUNT: &str = "111111111111";
const AGENT: &str = "claude";
const ENVIRONMENT: &str = "prod";
/// 2026-02-26T12:00:00Z: every request is signed then, and checked then.
const SIGNED_AT: i64 = 1_772_107_200;

fn signed_at() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(SIGNED_AT).expect("a valid timestamp")
}

/// A request as it arrives at airlock, signed by the agent's SDK.
struct Wire {
    method: &'static str,
    path: &'static str,
    query: &'static str,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Wire {
    fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: self.method,
            raw_path: self.path,
            raw_query: self.query,
            headers: &self.headers,
            host: HOST,
        }
    }
}

/// Signs a request the way the AWS SDK for Rust does (`aws-sigv4`, header auth). S3 signs
/// `x-amz-content-sha256` and its paths unnormalised; the other services sign the body's
/// hash without sending it, so airlock hashes the body itself.
fn sdk_request(
    service: &str,
    method: &'static str,
    path: &'static str,
    query: &'static str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Wire {
    let mut settings = SigningSettings::default();
    if service == "s3" {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let identity = Credentials::new(ACCESS_KEY, SECRET, None, None, "bench").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(service)
        .time(UNIX_EPOCH + Duration::from_secs(SIGNED_AT as u64))
        .settings(settings)
        .build()
        .expect("signing parameters")
        .into();
    let uri = if query.is_empty() {
        format!("https://{HOST}{path}")
    } else {
        format!("https://{HOST}{path}?{query}")
    };
    let signable = SignableRequest::new(
        method,
        uri.as_str(),
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .expect("a signable request");
    let (instructions, _) = sdk_sign(signable, &params).expect("signed").into_parts();
    let mut request = http::Request::builder().method(method).uri(&uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(()).expect("a request");
    instructions.apply_to_request_http1x(&mut request);
    // What hyper hands the proxy: the Host header as the client sent it.
    let mut headers = request.headers().clone();
    headers.insert(http::header::HOST, http::HeaderValue::from_static(HOST));
    Wire {
        method,
        path,
        query,
        headers,
        body: body.to_vec(),
    }
}

/// `aws s3 cp s3://analytics-exports/reports/2026/02/q1-summary.csv -` (GetObject).
fn s3_get_object() -> Wire {
    sdk_request(
        "s3",
        "GET",
        "/analytics-exports/reports/2026/02/q1-summary.csv",
        "x-id=GetObject",
        &[
            ("user-agent", "aws-sdk-rust/1.3.9 os/linux lang/rust/1.89.0"),
            ("x-amz-user-agent", "aws-sdk-rust/1.3.9 api/s3/1.100.0"),
            (
                "amz-sdk-invocation-id",
                "b6d4f3a0-6c1b-4e0e-9f4a-2d5c1e7a9b10",
            ),
            ("amz-sdk-request", "attempt=1; max=3"),
        ],
        b"",
    )
}

/// RDS `DeleteDBInstance`, query protocol: a form POST whose signature covers its body.
fn rds_delete_db_instance() -> Wire {
    let body = b"Action=DeleteDBInstance&Version=2014-10-31&DBInstanceIdentifier=prod-orders-db&SkipFinalSnapshot=true&DeleteAutomatedBackups=true";
    let length = body.len().to_string();
    sdk_request(
        "rds",
        "POST",
        "/",
        "",
        &[
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("content-length", &length),
            (
                "user-agent",
                "aws-cli/2.27.0 md/command#rds.delete-db-instance",
            ),
        ],
        body,
    )
}

/// DynamoDB `DeleteTable`, JSON protocol (`X-Amz-Target`).
fn dynamodb_delete_table() -> Wire {
    let body = br#"{"TableName":"orders"}"#;
    let length = body.len().to_string();
    sdk_request(
        "dynamodb",
        "POST",
        "/",
        "",
        &[
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "DynamoDB_20120810.DeleteTable"),
            ("content-length", &length),
        ],
        body,
    )
}

/// Lambda `DeleteFunction`, rest-json (the operation is in the method and the URI).
fn lambda_delete_function() -> Wire {
    sdk_request(
        "lambda",
        "DELETE",
        "/2015-03-31/functions/prod-ingest",
        "",
        &[],
        b"",
    )
}

fn agent_key(wire: &Wire) -> SigningKey {
    let prepared = Prepared::from_head(&wire.head()).expect("signature fields parse");
    let agent = Agent {
        name: AGENT.into(),
        access_key_id: ACCESS_KEY.into(),
        secret: Secret::new(SECRET),
        account: None,
        account_id: None,
    };
    derive_key(&agent, &prepared.claim.scope)
}

/// What authentication does before any body byte moves, then the signature check: the
/// claimed payload hash when the request declares one, else the SHA-256 of the whole body
/// (as `proxy::authenticate` checks a buffered body).
fn verify(wire: &Wire, key: &SigningKey, now: OffsetDateTime) -> Prepared {
    let prepared = Prepared::from_head(&wire.head()).expect("signature fields parse");
    prepared.check_time(now).expect("in the clock-skew window");
    let payload = match prepared.payload {
        PayloadClaim::FromBody => sha256_hex(&wire.body),
        claim => claim.canonical().expect("a declared payload"),
    };
    prepared
        .check(key, &payload)
        .expect("the signature matches");
    prepared
}

/// The signed headers that authentication forwards (and identification reads).
fn forwarded_headers(wire: &Wire, prepared: &Prepared) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in &prepared.claim.signed_headers {
        if DROPPED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        for value in wire.headers.get_all(name.as_str()) {
            let name = http::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
            out.append(name, value.clone());
        }
    }
    out
}

/// A verified request, as identification sees it (what `VerifiedRequest` carries).
struct Verified {
    signing_name: String,
    method: &'static str,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    /// S3 object bodies stream; everything else was buffered.
    body: Option<Vec<u8>>,
}

impl Verified {
    fn of(wire: &Wire) -> Verified {
        let prepared = verify(wire, &agent_key(wire), signed_at());
        let s3 = prepared.claim.scope.service == "s3";
        Verified {
            signing_name: prepared.claim.scope.service.clone(),
            method: wire.method,
            path: prepared.path.forward.clone(),
            query: prepared.forwarded_query(),
            headers: forwarded_headers(wire, &prepared),
            body: (!s3).then(|| wire.body.clone()),
        }
    }

    fn request(&self) -> Request<'_> {
        Request {
            signing_name: &self.signing_name,
            region: REGION,
            method: self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            host: HOST,
            body: self.body.as_deref(),
            account: Some(ACCOUNT),
        }
    }

    /// Identifies it once, which also warms the lazily parsed model and route tables.
    fn call(&self, expected: &str) -> AwsCall {
        let call = identify(&self.request()).expect("identified");
        assert_eq!(call.action(), expected);
        call
    }
}

fn sigv4(c: &mut Criterion) {
    let now = signed_at();
    let get = s3_get_object();
    let get_key = agent_key(&get);
    verify(&get, &get_key, now);
    let mut group = c.benchmark_group("sigv4");
    group.bench_function("verify_header_get", |b| {
        b.iter(|| verify(black_box(&get), &get_key, now))
    });

    let post = rds_delete_db_instance();
    let post_key = agent_key(&post);
    verify(&post, &post_key, now);
    group.bench_function("verify_query_post", |b| {
        b.iter(|| verify(black_box(&post), &post_key, now))
    });

    let agent = Agent {
        name: AGENT.into(),
        access_key_id: ACCESS_KEY.into(),
        secret: Secret::new(SECRET),
        account: None,
        account_id: None,
    };
    let scope = Prepared::from_head(&post.head())
        .expect("signature fields parse")
        .claim
        .scope;
    group.bench_function("derive_key", |b| {
        b.iter(|| derive_key(black_box(&agent), black_box(&scope)))
    });
    group.finish();
}

fn identification(c: &mut Criterion) {
    let cases = [
        ("s3_get_object", s3_get_object(), "s3:GetObject"),
        (
            "query_rds_delete_db_instance",
            rds_delete_db_instance(),
            "rds:DeleteDBInstance",
        ),
        (
            "json_dynamodb_delete_table",
            dynamodb_delete_table(),
            "dynamodb:DeleteTable",
        ),
        (
            "rest_json_lambda_delete_function",
            lambda_delete_function(),
            "lambda:DeleteFunction",
        ),
    ];
    let mut group = c.benchmark_group("identify");
    for (name, wire, action) in cases {
        let verified = Verified::of(&wire);
        verified.call(action);
        group.bench_function(name, |b| {
            b.iter(|| identify(black_box(&verified.request())))
        });
    }
    group.finish();
}

/// Five rules of the kind an operator writes (`[[rule]]` in the config), with globs over
/// actions, resources and agents, and `when` conditions; the built-in catalogue on.
fn policy() -> Policy {
    #[derive(serde::Deserialize)]
    struct File {
        rule: Vec<Rule>,
    }
    let file: File = toml::from_str(include_str!("five_rules.toml")).expect("the rules parse");
    assert_eq!(file.rule.len(), 5);
    Policy {
        mode: Mode::Enforce,
        rules: file.rule,
        builtin: true,
        irreversible_quorum: 1,
    }
}

fn decide(c: &mut Criterion) {
    let policy = policy();
    let mut group = c.benchmark_group("policy");
    let read = Verified::of(&s3_get_object()).call("s3:GetObject");
    assert_eq!(
        policy.decide(&read, AGENT, ENVIRONMENT).effect(),
        Effect::Allow
    );
    group.bench_function("decide_allowed_read", |b| {
        b.iter(|| policy.decide(black_box(&read), AGENT, ENVIRONMENT))
    });

    let delete = Verified::of(&rds_delete_db_instance()).call("rds:DeleteDBInstance");
    let decision = policy.decide(&delete, AGENT, ENVIRONMENT);
    assert_eq!(decision.effect(), Effect::RequireReceipt);
    assert!(decision.irreversible());
    group.bench_function("decide_destructive", |b| {
        b.iter(|| policy.decide(black_box(&delete), AGENT, ENVIRONMENT))
    });
    group.finish();
}

fn receipts(c: &mut Criterion) {
    let call = Verified::of(&rds_delete_db_instance()).call("rds:DeleteDBInstance");
    let alice = ApproverKey::generate("alice").expect("a key");
    let mut trusted = TrustedKeys::new();
    trusted.add_approver(&alice.public()).expect("trusted");
    let body = ReceiptBody::new(
        &Binding::of(&call, AGENT, ENVIRONMENT),
        "apr-bench",
        Decision::Approve,
        &alice.public(),
        Validity::starting(signed_at()),
    );
    let receipt = sign(body.clone(), &alice).expect("signed");
    // As the receipt store holds it.
    let file = receipt.to_json().expect("json").into_bytes();
    let now = signed_at() + time::Duration::minutes(1);
    let check = |file: &[u8]| {
        let binding = Binding::of(&call, AGENT, ENVIRONMENT);
        let receipt = Receipt::from_json(file).expect("parses");
        authorize(&receipt, &trusted, &binding, now).expect("authorizes")
    };
    check(&file);
    let mut group = c.benchmark_group("receipt");
    group.bench_function("verify", |b| b.iter(|| check(black_box(&file))));
    group.bench_function("canonical_json", |b| {
        b.iter(|| black_box(&body).canonical_bytes().expect("canonical"))
    });
    group.finish();
}

/// What the metrics add to one forwarded call: the clock read around each of its five
/// phases, the call's labels worked out and counted, and the audit append timed.
fn metrics(c: &mut Criterion) {
    use airlock::metrics::{audit_written, call_answered, observe, Phase, NO_CLASS};
    use airlock::proxy::body::full;
    use airlock::proxy::forward::Forwarded;
    use airlock::proxy::outcome::{upstream_error, Outcome};
    let answered = Ok(Forwarded {
        response: http::Response::new(full("")),
    });
    assert_eq!(Outcome::of(&answered, false), Outcome::Forwarded);
    let phases = [
        Phase::Authenticate,
        Phase::Identify,
        Phase::Decide,
        Phase::Resign,
        Phase::Forward,
    ];
    c.bench_function("metrics/forwarded_call", |b| {
        b.iter(|| {
            for phase in phases {
                let started = std::time::Instant::now();
                observe(black_box(phase), started.elapsed());
            }
            let event = Outcome::of(&answered, false).event();
            call_answered(
                Some(black_box("s3")),
                Some(NO_CLASS),
                event,
                upstream_error(&answered),
            );
            audit_written(Duration::from_micros(3), true);
        })
    });
}

criterion_group!(benches, sigv4, identification, decide, receipts, metrics);
criterion_main!(benches);
