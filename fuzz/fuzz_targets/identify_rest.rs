//! Identification of `rest-json` and `rest-xml` calls (S3, S3 Control, Lambda, Route 53,
//! API Gateway...): arbitrary methods, paths, query keys, hosts (virtual-hosted S3),
//! headers and XML/JSON bodies.
#![no_main]

#[path = "common.rs"]
mod common;
#[path = "identify_common.rs"]
mod identify_common;

use libfuzzer_sys::fuzz_target;

const SERVICES: &[&str] = &[
    "s3",
    "s3",
    "s3",
    "lambda",
    "route53",
    "apigateway",
    "s3-object-lambda",
    "s3express",
    "glacier",
    "elasticfilesystem",
    "ses",
    "cloudfront",
    "eks",
];
const METHODS: &[&str] = &["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"];
const HOSTS: &[&str] = &[
    "localhost:8443",
    "127.0.0.1:8443",
    "bucket.localhost:8443",
    "[::1]:8443",
    "a.b.localhost",
    "X.localhost",
];
const PREFIXES: &[&str] = &[
    "/",
    "/bucket/",
    "/v20180820/",
    "/2015-03-31/functions/",
    "/2013-04-01/hostedzone/",
    "",
];

fuzz_target!(|data: &[u8]| {
    let mut input = common::Input::new(data);
    let signing_name = input.pick(SERVICES).to_string();
    let method = input.pick(METHODS).to_string();
    let host = input.pick(HOSTS).to_string();
    let prefix = input.pick(PREFIXES);
    let path = format!("{prefix}{}", input.string());
    let query_raw = input.string();
    let mut headers = http::HeaderMap::new();
    let n = input.byte() % 4;
    for _ in 0..n {
        let name = input.pick(&[
            "x-amz-account-id",
            "content-type",
            "x-amz-mfa",
            "x-amz-bypass-governance-retention",
            "x-amz-copy-source",
            "x-amz-expected-bucket-owner",
        ]);
        let value = input.string();
        common::add_header(&mut headers, name, value.as_bytes());
    }
    let buffered = input.byte() % 4 != 0;
    let body = input.rest().to_vec();
    identify_common::run(&identify_common::Owned {
        signing_name,
        region: "us-west-2".into(),
        method,
        path,
        query: airlock::sigv4::canonical::query_pairs(&query_raw).unwrap_or_default(),
        headers,
        host,
        body: buffered.then_some(body),
    });
});
