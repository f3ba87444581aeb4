//! What one call became, in one type: the audit record's `event` and the log line's
//! `outcome` come from it, and it is derived from the error's typed [`Cause`] and
//! [`Origin`], never from its AWS error code (one code, `AccessDenied`, covers four
//! different stories an incident reader must tell apart).
//!
//! [`conclude`] ends every request: from the path's result and its [`Trace`] it makes the
//! answer (the upstream's, or the refusal in the protocol's shape), the log line and the
//! call's audit record, a [`CallRecord`].

use super::body::ProxyBody;
use super::error::{Cause, Origin, ProxyError, Shape};
use super::forward::Forwarded;
use super::request_id::RequestId;
use crate::audit::Fields;
use crate::identify::AwsCall;
use serde::Serialize;
use serde_json::Value;

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded without a receipt (allowed, or shadow mode).
    Forwarded,
    /// Forwarded under a receipt a human granted.
    ReceiptUsed,
    /// Refused: it needs a human's approval, and none is granted yet.
    ApprovalRequired,
    /// Refused by a policy `deny`.
    DeniedByPolicy,
    /// Refused: a human denied it.
    DeniedByApprover,
    /// Refused: the stored receipt does not verify.
    ReceiptInvalid,
    /// Refused: the agent's account cannot be reached (the record's `reason` says why).
    AccountUnreachable,
    /// Refused for any other reason (signature, limits, unidentified call, airlock's state);
    /// the record's `code` says which.
    Refused,
    /// airlock could not complete the call upstream (502, 503, 504 made by airlock).
    UpstreamFailure,
}

impl Outcome {
    /// The outcome of a call that reached the end of its path (`Ok`) or was refused.
    pub fn of<T>(result: &Result<T, ProxyError>, receipt_used: bool) -> Outcome {
        match result {
            Ok(_) if receipt_used => Outcome::ReceiptUsed,
            Ok(_) => Outcome::Forwarded,
            Err(e) => match (e.cause, e.origin) {
                (Cause::DeniedByPolicy, _) => Outcome::DeniedByPolicy,
                (Cause::ApprovalRequired, _) => Outcome::ApprovalRequired,
                (Cause::DeniedByApprover, _) => Outcome::DeniedByApprover,
                (Cause::ReceiptInvalid, _) => Outcome::ReceiptInvalid,
                (Cause::AccountUnreachable, _) => Outcome::AccountUnreachable,
                (Cause::Other, Origin::Upstream) => Outcome::UpstreamFailure,
                (Cause::Other, Origin::Downstream | Origin::Internal) => Outcome::Refused,
            },
        }
    }

    /// The audit record's `event`.
    pub fn event(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::ReceiptUsed => "receipt_used",
            Outcome::ApprovalRequired => "approval_required",
            Outcome::DeniedByPolicy => "denied_by_policy",
            Outcome::DeniedByApprover => "denied_by_approver",
            Outcome::ReceiptInvalid => "receipt_invalid",
            Outcome::AccountUnreachable => "account_unreachable",
            Outcome::Refused => "refused",
            Outcome::UpstreamFailure => "upstream_failure",
        }
    }
}

/// What one request became on its way, filled in as each phase finishes.
#[derive(Default)]
pub struct Trace {
    /// The agent whose signature verified (authenticate).
    pub agent: Option<String>,
    /// The call as identified, then as decided (a change set read adds resources).
    pub call: Option<AwsCall>,
    /// The environment, policy effect and rule (decide).
    pub environment: Option<String>,
    pub effect: Option<&'static str>,
    pub rule: Option<String>,
    /// The receipt and its approver (redeem).
    pub receipt: Option<(String, String)>,
}

/// The facts of a request known before its path starts.
pub struct RequestFacts<'a> {
    pub request_id: RequestId,
    pub shape: &'a Shape,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub latency_ms: u64,
}

/// The audit record of one call: one per request, whatever became of it. The field names
/// are the audit log's (`airlock audit`, `audit verify` and the tests read them); a field
/// that the call never reached is `null`, except `resources`, `region` and `account`,
/// which are there only once the call was identified.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    pub event: &'static str,
    pub request_id: RequestId,
    pub agent: Option<String>,
    pub service: Option<String>,
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Present once identified; `null` when airlock's account is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<Option<String>>,
    pub environment: Option<String>,
    pub decision: Option<&'static str>,
    pub rule: Option<String>,
    pub receipt: Option<String>,
    pub approver: Option<String>,
    pub latency_ms: u64,
    #[serde(flatten)]
    pub end: End,
}

/// How the call ended on the wire.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum End {
    /// The upstream answered (any status).
    Answered {
        upstream_status: u16,
        /// `-` when the upstream named none.
        aws_request_id: String,
    },
    /// airlock answered: a refusal, or a failure upstream.
    Refused {
        status: u16,
        code: &'static str,
        reason: String,
    },
}

impl CallRecord {
    /// A spent receipt's record is made durable before the agent hears back.
    pub fn durable(&self) -> bool {
        self.receipt.is_some()
    }

    /// The record as the audit writer takes it, with its time: serialized as it is, with
    /// no map of values in between.
    pub fn into_fields(self) -> Fields {
        let stamped = Stamped {
            time: crate::state::rfc3339_millis(time::OffsetDateTime::now_utc()),
            call: &self,
        };
        let why = match Fields::of(&stamped) {
            Ok(fields) => return fields,
            Err(why) => why,
        };
        let mut record = crate::audit::record(self.event);
        // Never expected; the line still says which call it was and how it ended.
        tracing::error!(request_id = %self.request_id, event = self.event, error = %why, "a call's audit record could not be written in full; keeping its request id, event and code");
        record.insert(
            "request_id".into(),
            Value::String(self.request_id.to_string()),
        );
        if let End::Refused { code, .. } = self.end {
            record.insert("code".into(), Value::String(code.into()));
        }
        record.into()
    }
}

/// A call's record with its time first, as every record starts.
#[derive(Serialize)]
struct Stamped<'a> {
    time: String,
    #[serde(flatten)]
    call: &'a CallRecord,
}

/// Ends a request: the answer the agent gets and the call's audit record, both from its
/// [`Outcome`]. Logs one line.
pub fn conclude(
    result: Result<Forwarded, ProxyError>,
    trace: Trace,
    request: &RequestFacts<'_>,
) -> (http::Response<ProxyBody>, CallRecord) {
    let outcome = Outcome::of(&result, trace.receipt.is_some());
    let event = outcome.event();
    let RequestFacts {
        request_id,
        shape,
        method,
        path,
        latency_ms,
    } = *request;
    let service = trace
        .call
        .as_ref()
        .map(|c| c.service.clone())
        .or_else(|| shape.service.clone());
    let action = trace.call.as_ref().map(|c| c.action());
    let (log_agent, log_service) = (
        trace.agent.as_deref().unwrap_or("-"),
        shape.service.as_deref().unwrap_or("-"),
    );
    let operation = action.as_deref().unwrap_or("-");
    let (response, end) = match result {
        Ok(forwarded) => {
            let status = forwarded.response.status().as_u16();
            let upstream_id = forwarded
                .response
                .headers()
                .get("x-amz-request-id")
                .or_else(|| forwarded.response.headers().get("x-amzn-requestid"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            tracing::info!(agent = %log_agent, service = %log_service, %operation, %method, %path, status, latency_ms, %upstream_id, outcome = event, "forwarded");
            let end = End::Answered {
                upstream_status: status,
                aws_request_id: upstream_id,
            };
            (forwarded.response, end)
        }
        Err(e) => {
            tracing::info!(agent = %log_agent, service = %log_service, %operation, %method, %path, status = e.status.as_u16(), latency_ms, code = e.code, origin = ?e.origin, reason = %e.message, %request_id, outcome = event, "refused");
            let end = End::Refused {
                status: e.status.as_u16(),
                code: e.code,
                reason: e.message.clone(),
            };
            let head_only = *method == http::Method::HEAD;
            (e.into_response(shape, request_id.as_str(), head_only), end)
        }
    };
    let (receipt, approver) = trace.receipt.unzip();
    let record = CallRecord {
        event,
        request_id,
        service,
        action,
        resources: trace.call.as_ref().map(|c| {
            c.resources
                .iter()
                .map(crate::receipt::Binding::resource_name)
                .collect()
        }),
        region: trace.call.as_ref().map(|c| c.region.clone()),
        account: trace.call.map(|c| c.account),
        agent: trace.agent,
        environment: trace.environment,
        decision: trace.effect,
        rule: trace.rule,
        receipt,
        approver,
        latency_ms,
        end,
    };
    (response, record)
}

/// The kind of upstream failure a call ended in, for the metrics: airlock's own 503/502/504
/// for an upstream it could not complete the call with, or the upstream's own answer of a
/// server error or throttling (forwarded to the agent as it came).
pub fn upstream_error(result: &Result<Forwarded, ProxyError>) -> Option<&'static str> {
    match result {
        Err(e) if e.origin == Origin::Upstream => Some(match e.status.as_u16() {
            503 => "unreachable",
            504 => "timeout",
            _ => "broken",
        }),
        Err(_) => None,
        Ok(f) if f.response.status().as_u16() == 429 => Some("throttled"),
        Ok(f) if f.response.status().is_server_error() => Some("server_error"),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(result: Result<(), ProxyError>, receipt_used: bool) -> &'static str {
        Outcome::of(&result, receipt_used).event()
    }

    #[test]
    fn every_outcome_names_its_event() {
        assert_eq!(event(Ok(()), false), "forwarded");
        assert_eq!(event(Ok(()), true), "receipt_used");
        let denied = |cause| Err(ProxyError::access_denied(cause, "no"));
        assert_eq!(
            event(denied(Cause::ApprovalRequired), false),
            "approval_required"
        );
        assert_eq!(
            event(denied(Cause::DeniedByPolicy), false),
            "denied_by_policy"
        );
        assert_eq!(
            event(denied(Cause::DeniedByApprover), false),
            "denied_by_approver"
        );
        assert_eq!(
            event(denied(Cause::ReceiptInvalid), false),
            "receipt_invalid"
        );
        let unreachable = crate::accounts::Unreachable::no_route("claude", "prod");
        assert_eq!(
            event(Err(ProxyError::account_unreachable(&unreachable)), false),
            "account_unreachable"
        );
        // The same code, AccessDenied, without a cause is a plain refusal.
        assert_eq!(event(denied(Cause::Other), false), "refused");
        assert_eq!(event(Err(ProxyError::bad_request("x")), false), "refused");
        assert_eq!(event(Err(ProxyError::internal("x")), false), "refused");
        assert_eq!(
            event(Err(ProxyError::state_unwritable("x")), true),
            "refused"
        );
    }

    #[test]
    fn failures_upstream_are_told_apart_from_refusals() {
        for e in [
            ProxyError::unreachable("connection refused"),
            ProxyError::bad_gateway("reset"),
            ProxyError::gateway_timeout("slow"),
        ] {
            // A call under a receipt that failed upstream is still an upstream failure.
            assert_eq!(event(Err(e.clone()), false), "upstream_failure", "{e}");
            assert_eq!(event(Err(e), true), "upstream_failure");
        }
    }

    /// What a request on the path to a DynamoDB table left in its trace.
    fn trace(receipt: bool) -> Trace {
        let call = AwsCall {
            service: "dynamodb".into(),
            signing_name: "dynamodb".into(),
            operation: "DeleteTable".into(),
            region: "us-east-1".into(),
            account: None,
            resources: vec![crate::identify::Resource {
                member: "TableName".into(),
                value: "orders".into(),
                arn: Some("arn:aws:dynamodb:us-east-1:111111111111:table/orders".into()),
            }],
            params: Default::default(),
        };
        Trace {
            agent: Some("agent-a".into()),
            call: Some(call),
            environment: Some("prod".into()),
            effect: Some("require_receipt"),
            rule: Some("builtin:data-destruction".into()),
            receipt: receipt.then(|| ("r-1".into(), "alice".into())),
        }
    }

    /// The audit record `handle` writes for this result, as the writer gets it.
    fn audit(result: Result<Forwarded, ProxyError>, trace: Trace) -> (u16, Value) {
        let headers = http::HeaderMap::new();
        let shape = Shape::of(&headers, None);
        let facts = RequestFacts {
            request_id: RequestId::from_number(1),
            shape: &shape,
            method: &http::Method::POST,
            path: "/",
            latency_ms: 7,
        };
        let (response, record) = conclude(result, trace, &facts);
        let durable = record.durable();
        let written: Value = serde_json::from_slice(record.into_fields().as_bytes()).unwrap();
        assert_eq!(durable, !written["receipt"].is_null());
        (response.status().as_u16(), written)
    }

    fn answered(status: u16) -> Result<Forwarded, ProxyError> {
        let mut response = http::Response::new(super::super::body::full(""));
        *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
        response
            .headers_mut()
            .insert("x-amzn-requestid", http::HeaderValue::from_static("UP-1"));
        Ok(Forwarded { response })
    }

    #[test]
    fn a_forwarded_call_is_recorded_with_the_upstream_answer() {
        for (receipt, event) in [(false, "forwarded"), (true, "receipt_used")] {
            let (status, r) = audit(answered(200), trace(receipt));
            assert_eq!(status, 200);
            assert_eq!(r["event"], event);
            assert_eq!(r["request_id"], "AIRLOCK0000000000000001");
            assert_eq!(r["agent"], "agent-a");
            assert_eq!(r["service"], "dynamodb");
            assert_eq!(r["action"], "dynamodb:DeleteTable");
            assert_eq!(
                r["resources"],
                serde_json::json!(["arn:aws:dynamodb:us-east-1:111111111111:table/orders"])
            );
            assert_eq!(r["region"], "us-east-1");
            assert!(r["account"].is_null() && r.get("account").is_some());
            assert_eq!(r["environment"], "prod");
            assert_eq!(r["decision"], "require_receipt");
            assert_eq!(r["rule"], "builtin:data-destruction");
            assert_eq!(r["latency_ms"], 7);
            assert_eq!(r["upstream_status"], 200);
            assert_eq!(r["aws_request_id"], "UP-1");
            assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')));
            for absent in ["status", "code", "reason"] {
                assert!(r.get(absent).is_none(), "{absent} in {r}");
            }
            let (receipt_id, approver) = if receipt {
                ("r-1".into(), "alice".into())
            } else {
                (Value::Null, Value::Null)
            };
            assert_eq!(
                (r["receipt"].clone(), r["approver"].clone()),
                (receipt_id, approver)
            );
        }
    }

    #[test]
    fn every_refusal_is_recorded_with_its_event_code_and_reason() {
        let cases = [
            (Cause::ApprovalRequired, "approval_required"),
            (Cause::DeniedByPolicy, "denied_by_policy"),
            (Cause::DeniedByApprover, "denied_by_approver"),
            (Cause::ReceiptInvalid, "receipt_invalid"),
            (Cause::Other, "refused"),
        ];
        for (cause, event) in cases {
            let refusal = ProxyError::access_denied(cause, "airlock: no");
            let (status, r) = audit(Err(refusal), trace(false));
            assert_eq!(status, 403);
            assert_eq!(r["event"], event);
            assert_eq!(r["status"], 403);
            assert_eq!(r["code"], "AccessDenied");
            assert_eq!(r["reason"], "airlock: no");
            assert_eq!(r["action"], "dynamodb:DeleteTable");
            assert!(r.get("upstream_status").is_none() && r.get("aws_request_id").is_none());
        }
        let (status, r) = audit(Err(ProxyError::gateway_timeout("slow")), trace(true));
        assert_eq!(
            (status, r["event"].clone()),
            (504, "upstream_failure".into())
        );
        assert_eq!(r["receipt"], "r-1");
    }

    #[test]
    fn a_call_refused_before_it_was_identified_has_no_call_fields() {
        let (status, r) = audit(Err(ProxyError::bad_request("bad")), Trace::default());
        assert_eq!(status, 400);
        assert_eq!(r["event"], "refused");
        for null in [
            "agent",
            "service",
            "action",
            "environment",
            "decision",
            "rule",
            "receipt",
            "approver",
        ] {
            assert!(r[null].is_null() && r.get(null).is_some(), "{null} in {r}");
        }
        for absent in ["resources", "region", "account"] {
            assert!(r.get(absent).is_none(), "{absent} in {r}");
        }
    }

    #[test]
    fn upstream_failures_are_named_by_kind() {
        let kind = |e: ProxyError| upstream_error(&Err(e));
        assert_eq!(
            kind(ProxyError::unreachable("refused")),
            Some("unreachable")
        );
        assert_eq!(kind(ProxyError::bad_gateway("reset")), Some("broken"));
        assert_eq!(kind(ProxyError::gateway_timeout("slow")), Some("timeout"));
        assert_eq!(kind(ProxyError::bad_request("x")), None);
        assert_eq!(upstream_error(&answered(200)), None);
        assert_eq!(upstream_error(&answered(404)), None);
        assert_eq!(upstream_error(&answered(429)), Some("throttled"));
        assert_eq!(upstream_error(&answered(500)), Some("server_error"));
    }
}
