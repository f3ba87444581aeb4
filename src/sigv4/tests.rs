//! The verifier against independent signers: the `aws-sigv4` crate here, and botocore
//! through the recorded vectors in `tests/fixtures/sigv4/botocore.jsonl`. Each accepted
//! request is also tampered with (body, path, a signed header, the date) and must then fail.

use super::*;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use std::time::{Duration, SystemTime};

const AKID: &str = "AIRLOCKTESTAGENT0001";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYTESTSECRET";

fn signed_at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_772_107_200) // 2026-02-26T12:00:00Z
}

struct Req {
    method: String,
    target: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Signs with the aws-sigv4 crate (the independent signer).
fn crate_sign(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    service: &str,
    presign: bool,
) -> Req {
    let s3 = uses_s3_rules(service);
    let mut settings = SigningSettings::default();
    if s3 {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = aws_sigv4::http_request::PayloadChecksumKind::XAmzSha256;
    }
    if presign {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(900));
    }
    let identity = Credentials::new(AKID, SECRET, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(service)
        .time(signed_at())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let uri = format!("https://localhost:8443{target}");
    let mut all: Vec<(&str, &str)> = vec![("host", "localhost:8443")];
    all.extend_from_slice(headers);
    let signable_body = if presign && s3 {
        SignableBody::UnsignedPayload
    } else {
        SignableBody::Bytes(body)
    };
    let signable =
        SignableRequest::new(method, uri.clone(), all.iter().copied(), signable_body).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder().method(method).uri(&uri);
    for (k, v) in &all {
        req = req.header(*k, *v);
    }
    let mut req = req.body(()).unwrap();
    instructions.apply_to_request_http1x(&mut req);
    let target = req.uri().path_and_query().unwrap().as_str().to_string();
    Req {
        method: method.into(),
        target,
        headers: req.headers().clone(),
        body: body.to_vec(),
    }
}

fn now() -> ::time::OffsetDateTime {
    ::time::OffsetDateTime::from(signed_at())
}

/// The server side, end to end for one buffered request.
fn verify(req: &Req, secret: &str, at: ::time::OffsetDateTime) -> Result<(), AuthError> {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let host = req
        .headers
        .get("host")
        .map(|h| h.to_str().unwrap().to_string())
        .unwrap_or_default();
    let head = RequestHead {
        method: &req.method,
        raw_path: path,
        raw_query: query,
        headers: &req.headers,
        host: &host,
    };
    let prepared = Prepared::from_head(&head)?;
    prepared.check_time(at)?;
    let key = SigningKey::derive(secret, &prepared.claim.scope);
    let hash = match prepared.payload {
        PayloadClaim::FromBody => sha256_hex(&req.body),
        PayloadClaim::Hash(h) => {
            if sha256_hex(&req.body) != hex::encode(h) {
                return Err(AuthError::payload_mismatch());
            }
            hex::encode(h)
        }
        other => other.canonical().unwrap(),
    };
    prepared.check(&key, &hash)
}

/// Every way of changing a signed request that must break it.
fn tampered(req: &Req) -> Vec<(String, Req)> {
    let mut out = Vec::new();
    let clone = |r: &Req| Req {
        method: r.method.clone(),
        target: r.target.clone(),
        headers: r.headers.clone(),
        body: r.body.clone(),
    };
    let unsigned_body = req.target.contains("X-Amz-Signature=")
        || req
            .headers
            .get("x-amz-content-sha256")
            .is_some_and(|v| v.to_str().unwrap().contains("UNSIGNED"));
    if !req.body.is_empty() && !unsigned_body {
        let mut r = clone(req);
        r.body[0] ^= 1;
        out.push(("body byte".to_string(), r));
    }
    let mut r = clone(req);
    let (p, q) = r
        .target
        .split_once('?')
        .map(|(p, q)| (p.to_string(), format!("?{q}")))
        .unwrap_or((r.target.clone(), String::new()));
    r.target = format!("{p}/zz{q}");
    out.push(("path".to_string(), r));
    let mut r = clone(req);
    r.method = if r.method == "GET" {
        "DELETE".into()
    } else {
        "GET".into()
    };
    out.push(("method".to_string(), r));
    let mut r = clone(req);
    let (p, q) = r.target.split_once('?').unwrap_or((&r.target, ""));
    r.target = if q.is_empty() {
        format!("{p}?extra=1")
    } else {
        format!("{p}?{q}&extra=1")
    };
    out.push(("query".to_string(), r));
    if let Some(date) = req.headers.get("x-amz-date") {
        let mut r = clone(req);
        let d = date.to_str().unwrap().replace("T12", "T11");
        r.headers.insert("x-amz-date", d.parse().unwrap());
        out.push(("date".to_string(), r));
    }
    for name in req.headers.keys() {
        let n = name.as_str();
        if matches!(
            n,
            "authorization" | "x-amz-date" | "x-amz-content-sha256" | "host"
        ) || !is_signed(req, n)
        {
            continue;
        }
        let mut r = clone(req);
        let v = format!("{}x", r.headers.get(n).unwrap().to_str().unwrap());
        r.headers.insert(name.clone(), v.parse().unwrap());
        out.push((format!("header {n}"), r));
    }
    out
}

fn is_signed(req: &Req, name: &str) -> bool {
    let auth = req
        .headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    auth.split("SignedHeaders=")
        .nth(1)
        .map(|s| s.split(',').next().unwrap().split(';').any(|h| h == name))
        .unwrap_or(false)
}

fn assert_verifies_and_tampering_fails(
    name: &str,
    req: &Req,
    secret: &str,
    at: ::time::OffsetDateTime,
) {
    if let Err(e) = verify(req, secret, at) {
        panic!("{name}: rejected a good request: {e:?}");
    }
    for (what, bad) in tampered(req) {
        assert!(
            verify(&bad, secret, at).is_err(),
            "{name}: accepted after tampering with the {what}"
        );
    }
    assert!(
        verify(req, "wrong-secret", at).is_err(),
        "{name}: accepted with a wrong secret"
    );
}

#[test]
fn crate_signed_requests_verify_and_tampering_fails() {
    let json = [
        ("content-type", "application/x-amz-json-1.0"),
        ("x-amz-target", "DynamoDB_20120810.ListTables"),
    ];
    let form = [(
        "content-type",
        "application/x-www-form-urlencoded; charset=utf-8",
    )];
    let cases: Vec<(&str, Req)> = vec![
        (
            "query post",
            crate_sign(
                "POST",
                "/",
                &form,
                b"Action=DescribeDBInstances&Version=2014-10-31",
                "rds",
                false,
            ),
        ),
        (
            "json post",
            crate_sign("POST", "/", &json, b"{}", "dynamodb", false),
        ),
        (
            "rest-json path with space",
            crate_sign(
                "GET",
                "/2015-03-31/functions/my%20fn",
                &[],
                b"",
                "lambda",
                false,
            ),
        ),
        (
            "rest-json dot segments",
            crate_sign("GET", "/a/./b/../c", &[], b"", "lambda", false),
        ),
        (
            "rest-json double slash",
            crate_sign("GET", "//a//b/", &[], b"", "lambda", false),
        ),
        (
            "percent in path",
            crate_sign("GET", "/a%25b/%E6%97%A5", &[], b"", "lambda", false),
        ),
        (
            "repeated and empty query",
            crate_sign("GET", "/x?b=2&a=1&a=0&e=&f", &[], b"", "lambda", false),
        ),
        (
            "header runs of spaces",
            crate_sign(
                "GET",
                "/",
                &[("x-amz-meta-note", "  a   b  c ")],
                b"",
                "lambda",
                false,
            ),
        ),
        (
            "s3 put with spaces and plus",
            crate_sign(
                "PUT",
                "/bucket/a%20b%2Bc",
                &[],
                b"object bytes",
                "s3",
                false,
            ),
        ),
        (
            "s3 key with dots",
            crate_sign("GET", "/bucket/a/../b//c", &[], b"", "s3", false),
        ),
        (
            "s3 unicode key",
            crate_sign("GET", "/bucket/%C3%A9t%C3%A9", &[], b"", "s3", false),
        ),
        (
            "s3 subresource",
            crate_sign("GET", "/bucket?acl", &[], b"", "s3", false),
        ),
        (
            "s3 presigned get",
            crate_sign("GET", "/bucket/key%20one", &[], b"", "s3", true),
        ),
        (
            "sts presigned",
            crate_sign(
                "GET",
                "/?Action=GetCallerIdentity&Version=2011-06-15",
                &[],
                b"",
                "sts",
                true,
            ),
        ),
    ];
    for (name, req) in &cases {
        assert_verifies_and_tampering_fails(name, req, SECRET, now());
    }
}

#[test]
fn clock_skew_is_fifteen_minutes() {
    let req = crate_sign(
        "POST",
        "/",
        &[],
        b"Action=GetCallerIdentity&Version=2011-06-15",
        "sts",
        false,
    );
    assert!(verify(&req, SECRET, now() + ::time::Duration::minutes(14)).is_ok());
    let late = verify(&req, SECRET, now() + ::time::Duration::minutes(16)).unwrap_err();
    assert_eq!(late.kind, AuthErrorKind::Expired);
    let early = verify(&req, SECRET, now() - ::time::Duration::minutes(16)).unwrap_err();
    assert_eq!(early.kind, AuthErrorKind::Expired);
}

#[test]
fn presigned_urls_expire() {
    let req = crate_sign("GET", "/bucket/key", &[], b"", "s3", true);
    assert!(verify(&req, SECRET, now() + ::time::Duration::seconds(899)).is_ok());
    let e = verify(&req, SECRET, now() + ::time::Duration::seconds(900)).unwrap_err();
    assert_eq!(e.kind, AuthErrorKind::Expired);
    let mut longer = Req {
        method: req.method.clone(),
        target: req.target.replace("X-Amz-Expires=900", "X-Amz-Expires=901"),
        headers: req.headers.clone(),
        body: vec![],
    };
    assert!(
        verify(&longer, SECRET, now()).is_err(),
        "tampered expiry accepted"
    );
    longer.target = req
        .target
        .replace("X-Amz-Expires=900", "X-Amz-Expires=604801");
    assert!(verify(&longer, SECRET, now()).is_err());
}

#[test]
fn a_body_that_does_not_match_its_declared_hash_fails() {
    let req = crate_sign("PUT", "/bucket/k", &[], b"the real body", "s3", false);
    let swapped = Req {
        method: req.method.clone(),
        target: req.target.clone(),
        headers: req.headers.clone(),
        body: b"another body!".to_vec(),
    };
    assert_eq!(
        verify(&swapped, SECRET, now()).unwrap_err().kind,
        AuthErrorKind::PayloadMismatch
    );
}

#[test]
fn two_signatures_are_ambiguity() {
    let req = crate_sign("GET", "/bucket/key", &[], b"", "s3", true);
    let mut both = Req {
        method: req.method.clone(),
        target: req.target.clone(),
        headers: req.headers.clone(),
        body: vec![],
    };
    let header = crate_sign("GET", "/bucket/key", &[], b"", "s3", false);
    both.headers.insert(
        "authorization",
        header.headers.get("authorization").unwrap().clone(),
    );
    assert_eq!(
        verify(&both, SECRET, now()).unwrap_err().kind,
        AuthErrorKind::Incomplete
    );
}

// ---- botocore vectors ----

#[derive(serde::Deserialize)]
struct Vector {
    name: String,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body_b64: String,
    secret: String,
    now: String,
}

#[test]
fn botocore_signed_requests_verify_and_tampering_fails() {
    use base64::Engine;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sigv4/botocore.jsonl"
    );
    let text = std::fs::read_to_string(path)
        .expect("fixture missing: run python3 tests/fixtures/gen_sigv4_vectors.py");
    let mut count = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Vector = serde_json::from_str(line).unwrap();
        let mut headers = HeaderMap::new();
        for (k, val) in &v.headers {
            headers.append(
                http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                val.parse().unwrap(),
            );
        }
        let body = base64::engine::general_purpose::STANDARD
            .decode(&v.body_b64)
            .unwrap();
        let at =
            ::time::OffsetDateTime::parse(&v.now, &::time::format_description::well_known::Rfc3339)
                .unwrap();
        let req = Req {
            method: v.method.clone(),
            target: v.target.clone(),
            headers,
            body,
        };
        if v.name.contains("non-utf8") {
            // airlock refuses query strings that do not decode to UTF-8 (a deliberate choice:
            // no AWS API needs them, and every later phase reads the query as text).
            assert_eq!(
                verify(&req, &v.secret, at).unwrap_err().kind,
                AuthErrorKind::Malformed,
                "{}",
                v.name
            );
            continue;
        }
        assert_verifies_and_tampering_fails(&v.name, &req, &v.secret, at);
        count += 1;
    }
    assert!(count >= 40, "only {count} botocore vectors");
}

#[test]
fn hex_lower_is_the_hex_crates_encoding() {
    use rand::RngCore;
    assert_eq!(hex_lower(&[]), "");
    assert_eq!(hex_lower(&[0x00, 0x0f, 0xf0, 0xff, 0x9a]), "000ff0ff9a");
    let mut bytes = [0u8; 257];
    for len in [1, 20, 32, 257] {
        rand::thread_rng().fill_bytes(&mut bytes[..len]);
        assert_eq!(hex_lower(&bytes[..len]), hex::encode(&bytes[..len]));
    }
}
