//! Identification of `json` protocol calls: arbitrary `X-Amz-Target`s and JSON bodies.
#![no_main]

#[path = "common.rs"]
mod common;
#[path = "identify_common.rs"]
mod identify_common;

use libfuzzer_sys::fuzz_target;

const SERVICES: &[&str] = &[
    "dynamodb",
    "kms",
    "sqs",
    "logs",
    "monitoring",
    "ecs",
    "secretsmanager",
    "events",
    "kinesis",
    "ssm",
    "firehose",
    "states",
];
const TARGETS: &[&str] = &[
    "DynamoDB_20120810.",
    "TrentService.",
    "AmazonSQS.",
    "Logs_20140328.",
    "GraniteServiceVersion20100801.",
    "AmazonEC2ContainerServiceV20141113.",
    "secretsmanager.",
    "",
];
const CONTENT_TYPES: &[&str] = &[
    "application/x-amz-json-1.0",
    "application/x-amz-json-1.1",
    "application/json",
    "application/x-amz-json-1.0; charset=utf-8",
    "application/x-www-form-urlencoded",
    "",
];

fuzz_target!(|data: &[u8]| {
    let mut input = common::Input::new(data);
    let signing_name = input.pick(SERVICES).to_string();
    let prefix = input.pick(TARGETS);
    let content_type = input.pick(CONTENT_TYPES);
    let operation = input.string();
    let query_raw = input.string();
    let mut headers = http::HeaderMap::new();
    common::add_header(
        &mut headers,
        "x-amz-target",
        format!("{prefix}{operation}").as_bytes(),
    );
    if !content_type.is_empty() {
        common::add_header(&mut headers, "content-type", content_type.as_bytes());
    }
    let body = input.rest().to_vec();
    identify_common::run(&identify_common::Owned {
        signing_name,
        region: "us-east-1".into(),
        method: "POST".into(),
        path: "/".into(),
        query: airlock::sigv4::canonical::query_pairs(&query_raw).unwrap_or_default(),
        headers,
        host: "localhost:8443".into(),
        body: Some(body),
    });
});
