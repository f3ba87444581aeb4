//! Identification of `smithy-rpc-v2-cbor` calls: arbitrary paths and CBOR bodies.
#![no_main]

#[path = "common.rs"]
mod common;
#[path = "identify_common.rs"]
mod identify_common;

use libfuzzer_sys::fuzz_target;

const SERVICES: &[&str] = &[
    "monitoring",
    "gamelift",
    "snowball",
    "compute-optimizer",
    "dynamodb",
];
const PREFIXES: &[&str] = &[
    "/service/GraniteServiceVersion20100801/operation/",
    "/service/GameLift/operation/",
    "/service/",
    "/",
];

fuzz_target!(|data: &[u8]| {
    let mut input = common::Input::new(data);
    let signing_name = input.pick(SERVICES).to_string();
    let prefix = input.pick(PREFIXES);
    let protocol = input.pick(&["rpc-v2-cbor", "rpc-v2-cbor", "rpc-v2-json"]);
    let content_type = input.pick(&[
        "application/cbor",
        "application/cbor",
        "application/json",
        "",
    ]);
    let tail = input.string();
    let mut headers = http::HeaderMap::new();
    common::add_header(&mut headers, "smithy-protocol", protocol.as_bytes());
    if !content_type.is_empty() {
        common::add_header(&mut headers, "content-type", content_type.as_bytes());
    }
    let body = input.rest().to_vec();
    identify_common::run(&identify_common::Owned {
        signing_name,
        region: "us-east-1".into(),
        method: "POST".into(),
        path: format!("{prefix}{tail}"),
        query: Vec::new(),
        headers,
        host: "localhost:8443".into(),
        body: Some(body),
    });
});
