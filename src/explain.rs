//! `airlock explain FILE...`: what airlock would make of raw HTTP/1.1 requests, without
//! forwarding anything or checking signatures: the same parsing, identification and policy
//! as the proxy, so people writing policy (and tests) see exactly what the gate sees.

use crate::config::Config;
use crate::identify;
use crate::proxy::authenticate::signed_headers;
use crate::sigv4::{Prepared, RequestHead};
use serde_json::{json, Value};
use std::path::Path;

/// One JSON object for one request file.
pub fn explain_file(config: &Config, path: &Path, account: Option<&str>) -> Value {
    let shown = path.display().to_string();
    match explain_bytes(config, path, account) {
        Ok(mut v) => {
            v["file"] = json!(shown);
            v
        }
        Err(e) => json!({ "file": shown, "error": e }),
    }
}

fn explain_bytes(config: &Config, path: &Path, account: Option<&str>) -> Result<Value, String> {
    let raw = std::fs::read(path).map_err(|e| e.to_string())?;
    explain_request(config, &raw, account)
}

/// What airlock would make of one raw HTTP/1.1 request (head and body).
pub fn explain_request(
    config: &Config,
    raw: &[u8],
    account: Option<&str>,
) -> Result<Value, String> {
    let mut headers_buf = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers_buf);
    let head_len = match req
        .parse(raw)
        .map_err(|e| format!("not an HTTP/1.1 request: {e}"))?
    {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Err("the request head is incomplete".into()),
    };
    let method = req.method.ok_or("no method")?.to_string();
    let target = req.path.ok_or("no request target")?.to_string();
    let mut headers = http::HeaderMap::new();
    for h in req.headers.iter() {
        let name = http::HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| format!("header {}: {e}", h.name))?;
        let value = http::HeaderValue::from_bytes(h.value)
            .map_err(|e| format!("header {}: {e}", h.name))?;
        headers.append(name, value);
    }
    let mut body = raw.get(head_len..).unwrap_or_default();
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        body = body
            .get(..len)
            .ok_or("the body is shorter than Content-Length")?;
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
    let head = RequestHead {
        method: &method,
        raw_path,
        raw_query,
        headers: &headers,
        host: &host,
    };
    let prepared = Prepared::from_head(&head).map_err(|e| e.message)?;
    let query = prepared.forwarded_query();
    let chunked = matches!(
        prepared.payload,
        crate::sigv4::PayloadClaim::SignedChunks { .. }
    );
    let forwarded_headers = signed_headers(&headers, &prepared.claim.signed_headers, chunked);
    let scope = &prepared.claim.scope;
    let request = identify::Request {
        signing_name: &scope.service,
        region: &scope.region,
        method: &method,
        path: &prepared.path.forward,
        query: &query,
        headers: &forwarded_headers,
        host: &host,
        // What the gate reads: S3 bodies it streams unread are not shown to identification.
        body: identify::reads_body(&scope.service, &method, &prepared.query).then_some(body),
        account,
    };
    let agent = crate::store::identities::run_blocking(config, async |ids| ids.agents().await)
        .ok()
        .and_then(|f| {
            f.agents
                .into_iter()
                .find(|a| a.access_key_id == prepared.claim.access_key_id)
        })
        .map(|a| a.name)
        .unwrap_or_else(|| "-".to_string());
    let base = json!({ "service": scope.service, "region": scope.region, "agent": agent });
    let call = match identify::identify(&request) {
        Ok(c) => c,
        Err(e) => {
            let mut v = base;
            v["operation"] = Value::Null;
            v["error"] = json!(format!("{}: {}", e.code, e.message));
            v["decision"] = json!("refuse");
            v["rule"] = json!("unidentified");
            return Ok(v);
        }
    };
    let environment = config.environment_of(call.account.as_deref(), &call.region);
    let decision = config.policy.decide(&call, &agent, &environment);
    let resources: Vec<Value> = call
        .resources
        .iter()
        .map(|r| json!({ "member": r.member, "value": r.value, "arn": r.arn }))
        .collect();
    Ok(json!({
        "service": call.service,
        "region": call.region,
        "operation": call.operation,
        "action": call.action(),
        "resources": resources,
        "params": call.params,
        "agent": agent,
        "environment": environment,
        "decision": decision.effect().as_str(),
        "rule": decision.rule(),
        "class": decision.class(),
        "reason": decision.reason(),
        "irreversible": decision.irreversible(),
        "approvals": decision.quorum().approvals,
        "approvers": decision.quorum().approvers,
        "mode": match config.policy.mode { crate::policy::Mode::Enforce => "enforce", crate::policy::Mode::Shadow => "shadow" },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An S3 request whose body the gate streams unread: explain does not read it either.
    #[test]
    fn explain_reads_the_body_only_where_the_gate_does() {
        let config = Config::parse(
            Path::new("/nonexistent/airlock/config/airlock.toml"),
            crate::config::EXAMPLE,
        )
        .expect("the example config");
        let request = |target: &str, body: &str| {
            format!(
                "PUT {target} HTTP/1.1\r\nHost: localhost:8443\r\nX-Amz-Date: 20260101T000000Z\r\n\
                 X-Amz-Content-Sha256: UNSIGNED-PAYLOAD\r\n\
                 Authorization: AWS4-HMAC-SHA256 Credential=AIRLOCKEXAMPLEKEY01/20260101/us-east-1/s3/aws4_request, \
                 SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                "0".repeat(64),
                body.len()
            )
        };
        // PutBucketTagging: the gate streams its body, so a body that is not XML changes nothing.
        let tagging = explain_request(
            &config,
            request("/bucket?tagging", "not xml").as_bytes(),
            None,
        )
        .expect("explained");
        assert_eq!(tagging["operation"], "PutBucketTagging", "{tagging}");
        assert!(tagging.get("error").is_none(), "{tagging}");
        // PutBucketVersioning: the gate reads its body, and so does explain.
        let versioning = explain_request(
            &config,
            request("/bucket?versioning", "not xml").as_bytes(),
            None,
        )
        .expect("explained");
        assert!(versioning["error"].is_string(), "{versioning}");
    }
}
