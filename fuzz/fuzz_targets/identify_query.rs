//! Identification of `query` and `ec2` protocol calls: arbitrary query strings, form bodies,
//! content types and paths.
#![no_main]

#[path = "common.rs"]
mod common;
#[path = "identify_common.rs"]
mod identify_common;

use libfuzzer_sys::fuzz_target;

const SERVICES: &[&str] = &[
    "rds",
    "ec2",
    "sts",
    "iam",
    "sns",
    "monitoring",
    "elasticloadbalancing",
    "ses",
    "cloudformation",
    "autoscaling",
    "elasticache",
    "redshift",
    "sqs",
];
const CONTENT_TYPES: &[&str] = &[
    "application/x-www-form-urlencoded; charset=utf-8",
    "application/x-www-form-urlencoded",
    "Application/X-WWW-Form-Urlencoded; Charset=UTF-8",
    "application/x-www-form-urlencoded; charset=utf-16",
    "text/plain",
    "application/json",
    "",
];

fuzz_target!(|data: &[u8]| {
    let mut input = common::Input::new(data);
    let signing_name = input.pick(SERVICES).to_string();
    let method = input.pick(&["POST", "GET", "PUT", "post"]).to_string();
    let path = input.pick(&["/", "/", "/", "//", "/x"]).to_string();
    let content_type = input.pick(CONTENT_TYPES);
    let query_raw = input.string();
    let query = airlock::sigv4::canonical::query_pairs(&query_raw).unwrap_or_default();
    let mut headers = http::HeaderMap::new();
    if !content_type.is_empty() {
        common::add_header(&mut headers, "content-type", content_type.as_bytes());
    }
    let body = input.rest().to_vec();
    identify_common::run(&identify_common::Owned {
        signing_name,
        region: "eu-west-1".into(),
        method,
        path,
        query,
        headers,
        host: "localhost:8443".into(),
        body: Some(body),
    });
});
