//! Coverage of identification against AWS's own serializers: for every operation of every
//! service in the installed botocore, botocore builds and signs the request
//! (`tests/coverage/gen_requests.py`), and `airlock::identify::identify` must name exactly
//! that service and operation.
//!
//! Bars: 100% for `query`, `ec2`, `json` and `smithy-rpc-v2-cbor`; at least 99.5% for
//! `rest-json` and `rest-xml`. Every miss must be listed, with its reason, in
//! `tests/coverage/known-misses.txt`, and a listed miss that now passes fails the test too.
//!
//! Two answers other than the generating service and operation count as correct, and are
//! counted apart, because no byte of the request can tell them from the one generated:
//! - *same call*: the operation under another service of the signing family that defines
//!   it with the same name and the same wire form (docdb's and rds's `DeleteDBInstance`);
//! - *alias*: a deprecated operation read as the current one it is an alias of, with the
//!   same method, URI template, required query keys and headers (S3's
//!   `GetBucketLifecycle` read as `GetBucketLifecycleConfiguration`).
//!
//! A second serializer family runs through the same checks: the AWS SDK for JavaScript v3
//! builds and signs every operation of S3 and of a set of high-value services
//! (`tests/coverage/gen_requests_js.mjs`, from the same placeholder inputs), with its own
//! known misses in `tests/coverage/known-misses-js.txt` and the same bars. Operations that
//! only one of the two SDKs defines are counted and printed, not checked.
//!
//! Requests come from `AIRLOCK_COVERAGE_JSONL` (`AIRLOCK_COVERAGE_JS_JSONL`) when set, else
//! the generator is run with `python3` (botocore installed) or `node` (after `npm ci`).
//! Without node or the npm packages the JS test is skipped with a notice, unless `CI` is
//! set: then it fails. `AIRLOCK_COVERAGE_VERBOSE=1` prints every same-call and
//! alias reading (run with `--nocapture`); `AIRLOCK_COVERAGE_BUFFER_ALL=1` hands every S3
//! body to identification too, not only those [`s3_needs_body`] asks for.

// A test harness: a generator or fixture that cannot be read is a failed test.
#![allow(clippy::expect_used)]

use airlock::aws::model;
use airlock::identify::{identify, s3_needs_body, Request};
use airlock::sigv4::canonical::{normalized_path, query_pairs, s3_path};
use airlock::sigv4::uses_s3_rules;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Deserialize, Clone)]
struct Generated {
    service: String,
    operation: String,
    protocol: String,
    #[serde(default)]
    error: Option<String>,
    /// Set (to the SDK that has it) when only one of the two SDKs defines the operation.
    #[serde(default)]
    only_in: Option<String>,
    /// How the request was addressed when a service is built more than one way (the JS
    /// SDK's S3: `path-style`, `virtual-hosted`).
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    method: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body_b64: String,
    #[serde(default)]
    signing_name: String,
    #[serde(default)]
    region: String,
}

fn requests_file(dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("AIRLOCK_COVERAGE_JSONL") {
        return PathBuf::from(p);
    }
    let out = dir.join("requests.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/coverage/gen_requests.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("python3 runs (the coverage generator needs python3 with botocore)");
    assert!(status.success(), "{} failed", script.display());
    out
}

/// The JS SDK's requests, or `None` (after a notice) when node or the npm packages are
/// missing outside CI.
fn js_requests_file(dir: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AIRLOCK_COVERAGE_JS_JSONL") {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let packages = root
        .join("node_modules/@aws-sdk/client-s3/package.json")
        .exists();
    if !node || !packages {
        let missing = if node {
            "the npm packages (run `npm ci`)"
        } else {
            "node"
        };
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: the JS SDK coverage test needs {missing}"
        );
        eprintln!("skipped: the JS SDK coverage test needs {missing}");
        return None;
    }
    let out = dir.join("requests-js.jsonl");
    let script = root.join("tests/coverage/gen_requests_js.mjs");
    let status = Command::new("node")
        .arg(&script)
        .arg("--out")
        .arg(&out)
        .env("NODE_NO_WARNINGS", "1")
        .status()
        .expect("node runs");
    assert!(status.success(), "{} failed", script.display());
    Some(out)
}

/// `protocol service operation` → reason, from `tests/coverage/<file>`.
fn known_misses(file: &str) -> BTreeMap<(String, String, String), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/coverage")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, reason) = line.split_once(" -- ").unwrap_or((line, ""));
        let parts: Vec<&str> = head.split_whitespace().collect();
        assert_eq!(parts.len(), 3, "{file}: bad line {line:?}");
        assert!(!reason.trim().is_empty(), "{file}: no reason on {line:?}");
        out.insert(
            (
                parts[0].to_string(),
                parts[1].to_string(),
                parts[2].to_string(),
            ),
            reason.trim().to_string(),
        );
    }
    out
}

/// The signed headers only, as the proxy forwards them (every header of an unsigned
/// request: nothing narrows them).
fn signed_headers(all: &BTreeMap<String, String>, host: &str) -> HeaderMap {
    let auth = all
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let signed: BTreeSet<String> = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .split(';')
        .map(str::to_string)
        .collect();
    let mut map = HeaderMap::new();
    for (k, v) in all {
        let lower = k.to_ascii_lowercase();
        if auth.is_empty() || signed.contains(&lower) {
            map.append(
                HeaderName::from_bytes(lower.as_bytes()).expect("header name"),
                HeaderValue::from_str(v).expect("header value"),
            );
        }
    }
    if auth.is_empty() || signed.contains("host") {
        map.insert("host", HeaderValue::from_str(host).expect("host"));
    }
    map
}

/// Whether `got` names the same call as `want` under another service of the family: the
/// same operation name and the same wire form.
fn same_call(want_service: &str, got_service: &str, operation: &str, protocol: &str) -> bool {
    let m = model::model();
    let (Some(a), Some(b)) = (m.services.get(want_service), m.services.get(got_service)) else {
        return false;
    };
    let (Some(oa), Some(ob)) = (a.operations().get(operation), b.operations().get(operation))
    else {
        return false;
    };
    if a.signing_name != b.signing_name {
        return false;
    }
    let shape = |uri: &str| {
        let mut out = String::new();
        let mut in_label = false;
        for c in uri.chars() {
            match c {
                '{' => in_label = true,
                '}' => {
                    in_label = false;
                    out.push_str("{}");
                }
                _ if in_label => {}
                c => out.push(c),
            }
        }
        out
    };
    match protocol {
        "query" | "ec2" => a.api_version == b.api_version,
        "json" | "smithy-rpc-v2-cbor" => a.target_prefix == b.target_prefix,
        _ => oa.method == ob.method && shape(&oa.uri) == shape(&ob.uri),
    }
}

/// Whether `got` is the current operation that deprecated `want` is an alias of: same
/// service, same method, URI template, required query keys and headers (S3's
/// `GetBucketLifecycle` and `GetBucketLifecycleConfiguration`).
fn alias_of(service: &str, want: &str, got: &str) -> bool {
    let m = model::model();
    let Some(s) = m.services.get(service) else {
        return false;
    };
    let (Some(a), Some(b)) = (s.operations().get(want), s.operations().get(got)) else {
        return false;
    };
    a.deprecated
        && !b.deprecated
        && a.method == b.method
        && a.uri == b.uri
        && a.required_query == b.required_query
        && a.required_headers == b.required_headers
}

#[test]
fn every_botocore_operation_is_identified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = requests_file(dir.path());
    let text = std::fs::read_to_string(&file).expect("requests file");
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: serde_json::Value =
        serde_json::from_str(lines.next().unwrap_or("{}")).expect("the header line");
    let built_by = format!("botocore {}", header["botocore"].as_str().unwrap_or("?"));
    assert_eq!(
        built_by,
        model::model().source,
        "the requests were built by another botocore than data/aws-model.json was generated \
         from: install that version (pip install botocore==...) or regenerate the model with \
         python3 tools/gen_aws_model.py"
    );
    check_family("botocore", lines, "known-misses.txt", false);
}

#[test]
fn every_js_sdk_operation_is_identified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(file) = js_requests_file(dir.path()) else {
        return;
    };
    let text = std::fs::read_to_string(&file).expect("requests file");
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: serde_json::Value =
        serde_json::from_str(lines.next().unwrap_or("{}")).expect("the header line");
    assert_eq!(header["sdk"], "aws-sdk-js-v3", "not the JS SDK's requests");
    println!("requests built by: {}", header["packages"]);
    check_family("JS SDK v3", lines, "known-misses-js.txt", true);
}

#[derive(Default)]
struct Counts {
    total: usize,
    exact: usize,
    same_call: usize,
    alias: usize,
    missed: usize,
}

impl Counts {
    fn identified(&self) -> usize {
        self.exact + self.same_call + self.alias
    }

    fn percent(&self) -> f64 {
        100.0 * self.identified() as f64 / self.total.max(1) as f64
    }

    fn add(&mut self, other: &Counts) {
        self.total += other.total;
        self.exact += other.exact;
        self.same_call += other.same_call;
        self.alias += other.alias;
        self.missed += other.missed;
    }
}

/// Runs every request of one serializer family through `identify` and its ambiguous
/// variants, prints the counts (per protocol; per service and protocol too when
/// `per_service`), and fails on an unlisted miss, a listed miss that passes, an accepted
/// variant, or a protocol below its bar.
fn check_family<'a>(
    family: &str,
    lines: impl Iterator<Item = &'a str>,
    known_misses_file: &str,
    per_service: bool,
) {
    let known = known_misses(known_misses_file);
    // (service, protocol) → counts.
    let mut counts: BTreeMap<(String, String), Counts> = BTreeMap::new();
    let mut one_sdk_only: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut unsigned = Vec::new();
    let mut unlisted = Vec::new();
    let mut misses = BTreeSet::new();
    let verbose = std::env::var_os("AIRLOCK_COVERAGE_VERBOSE").is_some();
    let mut accepted_mutations = Vec::new();
    let mut mutation_count = 0usize;

    for line in lines {
        let mut g: Generated = serde_json::from_str(line).expect("a JSON line");
        if let Some(sdk) = &g.only_in {
            one_sdk_only
                .entry((g.service.clone(), sdk.clone()))
                .or_default()
                .push(g.operation.clone());
            continue;
        }
        if g.error.is_none() && g.signing_name.is_empty() {
            // Sent without a signature (STS AssumeRoleWithWebIdentity in the JS SDK): the
            // proxy refuses it with MissingAuthenticationToken before identification;
            // read it as the service's signing name would be.
            unsigned.push(format!("{}:{}", g.service, g.operation));
            g.signing_name = model::model()
                .services
                .get(&g.service)
                .map(|s| s.signing_name.clone())
                .unwrap_or_default();
        }
        // `s3@virtual-hosted`: counted, and listed as a known miss, apart.
        let label = match &g.variant {
            Some(v) => format!("{}@{v}", g.service),
            None => g.service.clone(),
        };
        let key = (g.protocol.clone(), label.clone(), g.operation.clone());
        let c = counts.entry((label, g.protocol.clone())).or_default();
        c.total += 1;
        let outcome: Result<(String, String), String> = match &g.error {
            Some(e) => Err(e.clone()),
            None => run(&g),
        };
        if g.error.is_none() {
            for (what, mutated) in mutations(&g) {
                if let Ok((s, o)) = run(&mutated) {
                    if o == g.operation {
                        accepted_mutations.push(format!(
                            "{} {}:{} {what}: still read as {s}:{o}",
                            g.protocol, g.service, g.operation
                        ));
                    }
                }
                mutation_count += 1;
            }
        }
        match outcome {
            Ok((s, o)) if s == g.service && o == g.operation => c.exact += 1,
            Ok((s, o)) if o == g.operation && same_call(&g.service, &s, &o, &g.protocol) => {
                c.same_call += 1;
                if verbose {
                    println!("same call: {} {}:{} read as {s}:{o}", key.0, key.1, key.2);
                }
            }
            Ok((s, o)) if s == g.service && alias_of(&s, &g.operation, &o) => {
                c.alias += 1;
                if verbose {
                    println!("alias: {} {}:{} read as {s}:{o}", key.0, key.1, key.2);
                }
            }
            other => {
                c.missed += 1;
                misses.insert(key.clone());
                if !known.contains_key(&key) {
                    let got = match other {
                        Ok((s, o)) => format!("identified as {s}:{o}"),
                        Err(e) => e,
                    };
                    unlisted.push(format!("{} {} {} -- {got}", key.0, key.1, key.2));
                }
            }
        }
    }

    let mut by_protocol: BTreeMap<&str, Counts> = BTreeMap::new();
    for ((_, protocol), c) in &counts {
        by_protocol.entry(protocol.as_str()).or_default().add(c);
    }
    let row = |name: &str, c: &Counts| {
        println!(
            "  {:<36} {:>6} {:>6} {:>10} {:>6} {:>6} {:>9.2}%",
            name,
            c.total,
            c.exact,
            c.same_call,
            c.alias,
            c.missed,
            c.percent()
        );
    };
    println!("identification coverage ({family} requests):");
    println!(
        "  {:<36} {:>6} {:>6} {:>10} {:>6} {:>6} {:>10}",
        "service / protocol", "total", "exact", "same-call", "alias", "missed", "identified"
    );
    if per_service {
        for ((service, protocol), c) in &counts {
            row(&format!("{service} ({protocol})"), c);
        }
    }
    let mut failures = Vec::new();
    for (protocol, c) in &by_protocol {
        row(&format!("all {protocol}"), c);
        let bar = match *protocol {
            "rest-json" | "rest-xml" => 99.5,
            _ => 100.0,
        };
        if c.percent() < bar {
            failures.push(format!("{protocol}: {:.2}% < {bar}%", c.percent()));
        }
    }
    if !unsigned.is_empty() {
        println!(
            "  sent unsigned (refused before identification; read under the service's \
             signing name): {}",
            unsigned.join(" ")
        );
    }
    for ((service, sdk), operations) in &one_sdk_only {
        println!(
            "  {service}: {} operations only in {sdk} (not checked): {}",
            operations.len(),
            operations.join(" ")
        );
    }
    println!(
        "  ambiguous variants refused: {} of {mutation_count}",
        mutation_count - accepted_mutations.len()
    );
    assert!(
        accepted_mutations.is_empty(),
        "{} ambiguous variants were identified:\n{}",
        accepted_mutations.len(),
        accepted_mutations
            .iter()
            .take(50)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let fixed: Vec<String> = known
        .keys()
        .filter(|k| !misses.contains(*k))
        .map(|k| format!("{} {} {}", k.0, k.1, k.2))
        .collect();
    assert!(
        unlisted.is_empty(),
        "{} misses are not in tests/coverage/{known_misses_file}:\n{}",
        unlisted.len(),
        unlisted.join("\n")
    );
    assert!(
        fixed.is_empty(),
        "listed in {known_misses_file} but now identified (remove them):\n{}",
        fixed.join("\n")
    );
    assert!(failures.is_empty(), "below the bar: {failures:?}");
}

/// Feeds one generated request to `identify` exactly as the proxy would: the path as it
/// forwards it, the decoded query pairs, the signed headers, and the body when buffered.
fn run(g: &Generated) -> Result<(String, String), String> {
    let (raw_path, raw_query) = g.target.split_once('?').unwrap_or((g.target.as_str(), ""));
    let path = if uses_s3_rules(&g.signing_name) {
        s3_path(raw_path)
    } else {
        normalized_path(raw_path)
    }
    .map_err(|e| format!("path: {e:?}"))?
    .forward;
    let query = query_pairs(raw_query).map_err(|e| format!("query: {e:?}"))?;
    let headers = signed_headers(&g.headers, &g.host);
    let body = base64::engine::general_purpose::STANDARD
        .decode(&g.body_b64)
        .map_err(|e| format!("body: {e}"))?;
    // S3 bodies stream, except the few that identification needs.
    let s3_family = matches!(g.service.as_str(), "s3" | "s3control");
    let buffered = !s3_family
        || s3_needs_body(&g.method, &query)
        || std::env::var_os("AIRLOCK_COVERAGE_BUFFER_ALL").is_some();
    let req = Request {
        signing_name: &g.signing_name,
        region: &g.region,
        method: &g.method,
        path: &path,
        query: &query,
        headers: &headers,
        host: &g.host,
        body: buffered.then_some(body.as_slice()),
        account: Some("111111111111"),
    };
    let call = identify(&req).map_err(|e| format!("{}: {}", e.code, e.message))?;
    // Every URI label of the operation is a resource, read from the path.
    if let Some(op) = model::model()
        .services
        .get(&call.service)
        .and_then(|s| s.operations().get(&call.operation))
    {
        for label in &op.labels {
            let found = call.resources.iter().find(|r| &r.member == label);
            match found {
                Some(r) if !r.value.is_empty() => {}
                _ => return Err(format!("the label {label} is not among the resources")),
            }
        }
        if call.service == "s3" {
            for r in &call.resources {
                let want = match r.member.as_str() {
                    "Bucket" => "amzn-s3-demo-bucket",
                    "Key" => "dir/key name+1.txt",
                    _ => continue,
                };
                if r.value != want {
                    return Err(format!("S3 {} read as {:?}", r.member, r.value));
                }
            }
        }
    }
    Ok((call.service, call.operation))
}

/// Variants of a generated request that airlock must not read as the same operation:
/// query protocols with `Action` repeated, or also in the query string, or the form sent
/// as another content type; JSON and CBOR bodies with a duplicate key; JSON with the
/// target of a service of another signing name; REST requests with a literal query key
/// in another case (`?Delete`).
fn mutations(g: &Generated) -> Vec<(&'static str, Generated)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = b64.decode(&g.body_b64).unwrap_or_default();
    let with_body = |b: Vec<u8>| Generated {
        body_b64: b64.encode(b),
        ..g.clone()
    };
    let mut out = Vec::new();
    match g.protocol.as_str() {
        "query" | "ec2" => {
            let mut twice = body.clone();
            twice.extend_from_slice(format!("&Action={}", g.operation).as_bytes());
            out.push(("with Action twice", with_body(twice)));
            let mut both = g.clone();
            both.target = format!("/?Action={}", g.operation);
            out.push(("with Action in the query and the body", both));
            let mut text = g.clone();
            for (k, v) in text.headers.iter_mut() {
                if k.eq_ignore_ascii_case("content-type") {
                    *v = "text/plain".into();
                }
            }
            out.push(("as text/plain", text));
        }
        "json" => {
            let mut dup = b"{\"Dup\":1,\"Dup\":2".to_vec();
            if body.len() > 2 {
                dup.push(b',');
                dup.extend_from_slice(&body[1..]);
            } else {
                dup.push(b'}');
            }
            out.push(("with a duplicate JSON key", with_body(dup)));
            let mut other = g.clone();
            for (k, v) in other.headers.iter_mut() {
                if k.eq_ignore_ascii_case("x-amz-target") {
                    let op = v.rsplit('.').next().unwrap_or("").to_string();
                    *v = if g.signing_name == "dynamodb" {
                        format!("AmazonSQS.{op}")
                    } else {
                        format!("DynamoDB_20120810.{op}")
                    };
                }
            }
            out.push(("with the target of another service", other));
        }
        "smithy-rpc-v2-cbor" => {
            // A definite map {"Dup": 1, "Dup": 2} in front of nothing else.
            let dup = vec![
                0xa2, 0x63, b'D', b'u', b'p', 0x01, 0x63, b'D', b'u', b'p', 0x02,
            ];
            out.push(("with a duplicate CBOR key", with_body(dup)));
        }
        _ => {
            let m = model::model();
            let literals = m
                .services
                .get(&g.service)
                .and_then(|s| s.operations().get(&g.operation))
                .map(|op| {
                    op.uri
                        .split_once('?')
                        .map(|(_, q)| q.to_string())
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            for literal in literals.split('&').filter(|l| !l.is_empty()) {
                let key = literal.split('=').next().unwrap_or("");
                let upper = {
                    let mut c = key.chars();
                    match c.next() {
                        Some(f) if f.is_ascii_lowercase() => {
                            f.to_ascii_uppercase().to_string() + c.as_str()
                        }
                        _ => continue,
                    }
                };
                let (path, query) = g.target.split_once('?').unwrap_or((g.target.as_str(), ""));
                let renamed: Vec<String> = query
                    .split('&')
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once('=')
                            .map_or((pair, None), |(k, v)| (k, Some(v)));
                        let k = if k == key { upper.as_str() } else { k };
                        v.map_or(k.to_string(), |v| format!("{k}={v}"))
                    })
                    .collect();
                let mut changed = g.clone();
                changed.target = format!("{path}?{}", renamed.join("&"));
                out.push(("with a query key in another case", changed));
            }
        }
    }
    out
}
