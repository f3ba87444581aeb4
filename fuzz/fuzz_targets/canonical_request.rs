//! Canonical-request building over arbitrary request heads (`Prepared::from_head`).
//!
//! Input: method, path, query, host, service (one per line), then `name: value` header
//! lines. When the input carries no Authorization, a well-formed one is added over every
//! header it has, so the fuzzer spends its time in canonicalisation. Properties: no panic;
//! a non-S3 path is forwarded normalised (normalising it again changes nothing) and an S3
//! path exactly as sent; a signature made over airlock's own canonical request verifies.
#![no_main]

#[path = "common.rs"]
mod common;

use airlock::sigv4::canonical::normalized_path;
use airlock::sigv4::{uses_s3_rules, Prepared, RequestHead, Scope, SigningKey};
use libfuzzer_sys::fuzz_target;

const DATE: &str = "20260226T120000Z";
const SECRET: &str = "fuzz-secret";

fn head_of<'a>(
    method: &'a str,
    path: &'a str,
    query: &'a str,
    host: &'a str,
    headers: &'a http::HeaderMap,
) -> RequestHead<'a> {
    RequestHead {
        method,
        raw_path: path,
        raw_query: query,
        headers,
        host,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or("GET").to_string();
    let path = lines.next().unwrap_or("/").to_string();
    let query = lines.next().unwrap_or("").to_string();
    let host = lines.next().unwrap_or("localhost").to_string();
    let service = lines.next().unwrap_or("s3").trim().to_string();
    let mut headers = http::HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            common::add_header(&mut headers, name, value.trim().as_bytes());
        }
    }
    let service = if service.is_empty() {
        "s3".to_string()
    } else {
        service
    };
    let ours = !headers.contains_key(http::header::AUTHORIZATION);
    if ours {
        common::add_header(&mut headers, "x-amz-date", DATE.as_bytes());
        if uses_s3_rules(&service) && !headers.contains_key("x-amz-content-sha256") {
            common::add_header(&mut headers, "x-amz-content-sha256", b"UNSIGNED-PAYLOAD");
        }
    }
    let mut signed: Vec<String> = headers.keys().map(|k| k.as_str().to_string()).collect();
    signed.push("host".into());
    signed.sort();
    signed.dedup();
    let auth = |signature: &str| {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDFUZZ/20260226/us-east-1/{service}/aws4_request, SignedHeaders={}, Signature={signature}",
            signed.join(";")
        )
    };
    if ours {
        common::add_header(
            &mut headers,
            "authorization",
            auth(&"0".repeat(64)).as_bytes(),
        );
    }

    let head = head_of(&method, &path, &query, &host, &headers);
    let Ok(prepared) = Prepared::from_head(&head) else {
        return;
    };
    let s3 = uses_s3_rules(&prepared.claim.scope.service);
    if s3 {
        let sent = if path.is_empty() { "/" } else { path.as_str() };
        assert_eq!(
            prepared.path.forward, sent,
            "S3 paths are forwarded as sent"
        );
    } else {
        let again = normalized_path(&prepared.path.forward).expect("a forwarded path parses");
        assert_eq!(
            again.forward, prepared.path.forward,
            "forwarded path is not normalised"
        );
        assert_eq!(again.canonical, prepared.path.canonical);
    }
    let payload = prepared
        .payload
        .canonical()
        .unwrap_or_else(|| airlock::sigv4::EMPTY_SHA256.to_string());
    let _ = prepared.canonical_request(&payload);
    let _ = prepared.check_time(time::OffsetDateTime::UNIX_EPOCH);
    let scope: Scope = prepared.claim.scope.clone();
    let key = SigningKey::derive(SECRET, &scope);
    if !ours {
        let _ = prepared.check(&key, &payload);
        return;
    }
    // Sign what airlock canonicalised; the same head with that signature must verify.
    let signature = hex::encode(key.sign(&prepared.string_to_sign(&payload)));
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&auth(&signature)).expect("ascii"),
    );
    let head = head_of(&method, &path, &query, &host, &headers);
    let again = Prepared::from_head(&head).expect("the same head parses again");
    again
        .check(&key, &payload)
        .expect("a signature over airlock's own canonical request verifies");
});
