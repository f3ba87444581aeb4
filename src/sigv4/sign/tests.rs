//! The signer against the `aws-sigv4` crate (the same time, credentials and request must give
//! the same `Authorization`), and against airlock's own verifier.

use super::*;
use crate::sigv4::{Prepared, RequestHead};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use std::time::{Duration, SystemTime};

const AKID: &str = "AKIAAIRLOCKREAL00001";
const SECRET: &str = "real/secret/wJalrXUtnFEMI/K7MDENG+bPxRfiCY";
const AMZ_DATE: &str = "20261205T123456Z";

fn at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_474_096) // 2026-12-05T12:34:56Z
}

struct Case {
    method: &'static str,
    /// `https://host/path?query`
    uri: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    payload_hash: &'static str,
    service: &'static str,
    token: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            method: "GET",
            uri: "https://s3.eu-west-1.amazonaws.com/bucket/a%20b/../c//d+e.txt?list-type=2&prefix=a%20b&empty=",
            headers: vec![("x-amz-meta-note", "  two   spaces ")],
            payload_hash: "UNSIGNED-PAYLOAD",
            service: "s3",
            token: None,
        },
        Case {
            method: "PUT",
            uri: "https://127.0.0.1:4566/bench-bucket/hello.txt",
            headers: vec![
                ("content-type", "text/plain"),
                ("user-agent", "aws-cli/2 not signed"),
                ("x-amzn-trace-id", "Root=1-not-signed"),
                ("x-amz-meta-list", "1"),
                ("x-amz-meta-list", "2"),
            ],
            payload_hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            service: "s3",
            token: Some("session/token+with=odd&bytes"),
        },
        Case {
            method: "POST",
            uri: "https://sts.amazonaws.com/",
            headers: vec![(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
            payload_hash: "9a0e3e8c2d1f0e6b0ab8ff8f2e12b4ab45bbf3e1d2d0c7c3d0ff2e7c9a4b1c22",
            service: "sts",
            token: None,
        },
        Case {
            method: "POST",
            uri: "https://lambda.us-east-1.amazonaws.com/2015-03-31/functions/my%20fn%3A1/invocations?Qualifier=%24LATEST",
            headers: vec![("x-amz-target", "x"), ("content-encoding", "gzip")],
            payload_hash: "0c1bd2bc7a1e2eb3ac0b4a4fd9d5b5e3f1e8e6d4c2b0a9f8e7d6c5b4a3928170",
            service: "lambda",
            token: Some("token"),
        },
    ]
}

fn header_map(case: &Case) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in &case.headers {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

/// The crate's `Authorization` for the case.
fn crate_authorization(case: &Case) -> String {
    let mut settings = SigningSettings::default();
    if uses_s3_rules(case.service) {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let identity = Credentials::new(AKID, SECRET, case.token.map(str::to_owned), None, "t").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name(case.service)
        .time(at())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        case.method,
        case.uri,
        case.headers.iter().copied(),
        SignableBody::Precomputed(case.payload_hash.to_owned()),
    )
    .unwrap();
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
        .unwrap()
        .into_parts();
    let mut request = http::Request::builder().uri(case.uri).body(()).unwrap();
    instructions.apply_to_request_http1x(&mut request);
    request.headers()["authorization"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn ours(case: &Case, keys: &KeyCache) -> (Signature, HeaderMap) {
    let uri: http::Uri = case.uri.parse().unwrap();
    let headers = header_map(case);
    let outgoing = Outgoing {
        method: case.method,
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        host: uri.authority().unwrap().as_str(),
        headers: &headers,
        payload_hash: case.payload_hash,
    };
    let signer = Signer {
        access_key_id: AKID,
        secret: SECRET,
        session_token: case.token,
        keys,
    };
    let signature = sign(&outgoing, &signer, "eu-west-1", case.service, AMZ_DATE).unwrap();
    (signature, headers)
}

#[test]
fn signs_as_the_aws_sigv4_crate_does() {
    let keys = KeyCache::default();
    for case in cases() {
        let expected = crate_authorization(&case);
        // Twice: the second time with the cached key.
        for _ in 0..2 {
            let (signature, _) = ours(&case, &keys);
            assert_eq!(signature.authorization, expected, "{}", case.uri);
            assert_eq!(signature.amz_date, AMZ_DATE);
            assert_eq!(signature.payload_hash, case.payload_hash);
            assert_eq!(signature.session_token.as_deref(), case.token);
        }
    }
    assert_eq!(keys.len(), 3, "one key per service and day");
}

#[test]
fn airlocks_verifier_accepts_the_signature_and_refuses_it_changed() {
    let keys = KeyCache::default();
    for case in cases() {
        let (signature, mut headers) = ours(&case, &keys);
        signature.apply(&mut headers).unwrap();
        assert!(headers["authorization"].is_sensitive());
        let uri: http::Uri = case.uri.parse().unwrap();
        let check = |headers: &HeaderMap, path: &str| {
            let head = RequestHead {
                method: case.method,
                raw_path: path,
                raw_query: uri.query().unwrap_or(""),
                headers,
                host: uri.authority().unwrap().as_str(),
            };
            let prepared = Prepared::from_head(&head)?;
            let key = crate::sigv4::SigningKey::derive(SECRET, &prepared.claim.scope);
            prepared.check(&key, case.payload_hash)
        };
        check(&headers, uri.path()).unwrap_or_else(|e| panic!("{}: {e}", case.uri));
        assert!(check(&headers, "/other").is_err());
        let mut changed = headers.clone();
        changed.insert("x-amz-date", HeaderValue::from_static("20261205T123457Z"));
        assert!(check(&changed, uri.path()).is_err());
    }
}

#[test]
fn a_header_that_is_not_visible_ascii_is_named() {
    let keys = KeyCache::default();
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-amz-meta-name",
        HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
    );
    let outgoing = Outgoing {
        method: "GET",
        path: "/b/k",
        query: "",
        host: "s3.amazonaws.com",
        headers: &headers,
        payload_hash: "UNSIGNED-PAYLOAD",
    };
    let signer = Signer {
        access_key_id: AKID,
        secret: SECRET,
        session_token: None,
        keys: &keys,
    };
    assert_eq!(
        sign(&outgoing, &signer, "us-east-1", "s3", AMZ_DATE).err(),
        Some(SignError::Header("x-amz-meta-name".into()))
    );
}
