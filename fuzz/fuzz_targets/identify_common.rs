//! Runs identification on one request and checks what holds for any answer.

use airlock::identify::{identify, Request};

pub struct Owned {
    pub signing_name: String,
    pub region: String,
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: http::HeaderMap,
    pub host: String,
    pub body: Option<Vec<u8>>,
}

pub fn run(o: &Owned) {
    let request = Request {
        signing_name: &o.signing_name,
        region: &o.region,
        method: &o.method,
        path: &o.path,
        query: &o.query,
        headers: &o.headers,
        host: &o.host,
        body: o.body.as_deref(),
        account: Some("123456789012"),
    };
    let first = identify(&request);
    // Deterministic: the same bytes always read as the same call.
    let second = identify(&request);
    assert_eq!(first, second);
    if let Ok(call) = first {
        assert!(!call.operation.is_empty());
        assert!(call.action().contains(':'));
        let _ = call.params_digest();
        for r in &call.resources {
            if let Some(arn) = &r.arn {
                assert!(arn.starts_with("arn:"), "{arn}");
            }
        }
    }
}
