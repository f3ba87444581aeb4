//! The one place where a failure becomes a response.
//!
//! Every failure on the request path is a [`ProxyError`]: who caused it ([`Origin`]), the
//! HTTP status, and the AWS error code and message. [`ProxyError::into_response`] renders
//! it in the body shape of the service's protocol, so SDKs and Terraform print it as they
//! would print AWS's own error. Messages never carry a secret.
//!
//! | status | codes |
//! |---|---|
//! | 400 | `IncompleteSignature`, `InvalidRequest`, `AuthorizationHeaderMalformed` (S3), `XAmzContentSHA256Mismatch`, `RequestHeaderSectionTooLarge` |
//! | 413 | `RequestEntityTooLarge`/`EntityTooLarge` (S3) |
//! | 403 | `MissingAuthenticationToken`, `InvalidClientTokenId`, `InvalidAccessKeyId` (S3), `SignatureDoesNotMatch`, `RequestExpired`, `RequestTimeTooSkewed` (S3), `AccessDenied` |
//! | 403 | `AccessDenied` (policy, or a call that needs an approved receipt: the message carries the link) |
//! | 403 | `AccessDenied`, `ExpiredToken` (the agent's `[[account]]` has no route, its role cannot be assumed, or airlock's own credentials expired: the message names the account and the reason) |
//! | 500 | `InternalFailure` (airlock has no real credentials, could not sign, or cannot record state) |
//! | 502 | `BadGateway` (upstream reset or unreadable mid-call) |
//! | 503 | `ServiceUnavailable` (upstream never reached; airlock at `max_connections`, S3: `SlowDown`; or airlock cannot write its receipt ledger or audit log, so it refuses calls that need a receipt; or the last use of the call's receipt is reserved by a call in flight on another replica) |
//! | 504 | `GatewayTimeout` (upstream too slow) |

use super::body::{full, ProxyBody};
use crate::aws::{model, Protocol};
use crate::sigv4::{AuthError, AuthErrorKind};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The agent's request (bad signature, too large, malformed).
    Downstream,
    /// The upstream (unreachable, slow, broken).
    Upstream,
    /// airlock itself (no credentials, a bug).
    Internal,
}

/// Why a refusal was made, set by the constructor that made it, so the audit record
/// names what happened without reading the error code (see [`super::outcome::Outcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Any other failure; its origin and code say more.
    Other,
    /// The policy denies the call.
    DeniedByPolicy,
    /// The call needs a receipt and none is approved yet.
    ApprovalRequired,
    /// A human denied the call.
    DeniedByApprover,
    /// The stored receipt for the call does not verify.
    ReceiptInvalid,
    /// The account the agent's key is bound to cannot be reached (no route, a role that
    /// cannot be assumed, airlock's own credentials expired, STS unreachable).
    AccountUnreachable,
}

#[derive(Debug, Clone)]
pub struct ProxyError {
    pub origin: Origin,
    pub cause: Cause,
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ProxyError {
    fn new(
        origin: Origin,
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ProxyError {
            origin,
            cause: Cause::Other,
            status,
            code,
            message: message.into(),
        }
    }

    /// An authentication failure, with S3's codes where S3 uses its own.
    pub fn auth(e: AuthError, shape: &Shape) -> Self {
        use AuthErrorKind::*;
        let s3 = shape.s3;
        let presigned = shape.presigned;
        let (status, code) = match e.kind {
            Missing if s3 => (StatusCode::FORBIDDEN, "AccessDenied"),
            Missing => (StatusCode::FORBIDDEN, "MissingAuthenticationToken"),
            Incomplete if s3 && presigned => {
                (StatusCode::BAD_REQUEST, "AuthorizationQueryParametersError")
            }
            Incomplete if s3 => (StatusCode::BAD_REQUEST, "AuthorizationHeaderMalformed"),
            Incomplete => (StatusCode::BAD_REQUEST, "IncompleteSignature"),
            Unsupported | Malformed => (StatusCode::BAD_REQUEST, "InvalidRequest"),
            UnknownKey if s3 => (StatusCode::FORBIDDEN, "InvalidAccessKeyId"),
            UnknownKey => (StatusCode::FORBIDDEN, "InvalidClientTokenId"),
            BadToken if s3 => (StatusCode::BAD_REQUEST, "InvalidToken"),
            BadToken => (StatusCode::FORBIDDEN, "InvalidClientTokenId"),
            Mismatch => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"),
            Expired if s3 && presigned => (StatusCode::FORBIDDEN, "AccessDenied"),
            Expired if s3 => (StatusCode::FORBIDDEN, "RequestTimeTooSkewed"),
            Expired => (StatusCode::FORBIDDEN, "RequestExpired"),
            PayloadMismatch => (StatusCode::BAD_REQUEST, "XAmzContentSHA256Mismatch"),
        };
        let message = if e.kind == UnknownKey && s3 {
            "The AWS Access Key Id you provided does not exist in our records.".to_string()
        } else {
            e.message
        };
        Self::new(Origin::Downstream, status, code, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            Origin::Downstream,
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            message,
        )
    }

    pub fn too_large(limit: usize, shape: &Shape) -> Self {
        let code = if shape.s3 {
            "EntityTooLarge"
        } else {
            "RequestEntityTooLarge"
        };
        Self::new(
            Origin::Downstream,
            StatusCode::PAYLOAD_TOO_LARGE,
            code,
            format!("The request body is larger than airlock's limit of {limit} bytes ([limits] max_buffered_body_bytes)."),
        )
    }

    /// Headers over `[limits] max_header_bytes` or `max_header_count`. S3's code and status;
    /// the other protocols get the same code in their own envelope.
    pub fn headers_too_large(message: impl Into<String>) -> Self {
        Self::new(
            Origin::Downstream,
            StatusCode::BAD_REQUEST,
            "RequestHeaderSectionTooLarge",
            message,
        )
    }

    /// airlock is serving `[limits] max_connections` already. A 503 that SDKs retry with
    /// backoff (S3 names it `SlowDown`).
    pub fn over_capacity(max_connections: usize, shape: &Shape) -> Self {
        Self::new(
            Origin::Internal,
            StatusCode::SERVICE_UNAVAILABLE,
            if shape.s3 { "SlowDown" } else { "ServiceUnavailable" },
            format!("airlock is serving its maximum of {max_connections} connections ([limits] max_connections); retry shortly."),
        )
    }

    pub fn no_credentials(reason: &str) -> Self {
        Self::new(
            Origin::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            format!("airlock cannot forward this call: {reason}. Give airlock its own AWS credentials (environment, profile, SSO or role) and retry."),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            Origin::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            message,
        )
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(
            Origin::Upstream,
            StatusCode::BAD_GATEWAY,
            "BadGateway",
            message,
        )
    }

    /// The upstream was never reached (connection refused, DNS, connect timeout).
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(
            Origin::Upstream,
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    /// airlock cannot write the state a call must leave behind (its receipt ledger, its
    /// audit log): the call is refused until it can (fail closed).
    pub fn state_unwritable(message: impl Into<String>) -> Self {
        Self::new(
            Origin::Internal,
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    /// Another call holds what this one needs for a moment (the last use of its receipt,
    /// reserved by a call in flight on another replica): retry.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(
            Origin::Internal,
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    /// Refused by policy, for want of a receipt, by a human, or for a receipt that does not
    /// verify: one response, told apart by its cause.
    pub fn access_denied(cause: Cause, message: impl Into<String>) -> Self {
        ProxyError {
            cause,
            ..Self::new(
                Origin::Downstream,
                StatusCode::FORBIDDEN,
                "AccessDenied",
                message,
            )
        }
    }

    /// The agent's account cannot be reached: what a person must fix, naming the account.
    pub fn account_unreachable(why: &crate::accounts::Unreachable) -> Self {
        use crate::accounts::UnreachableKind::*;
        let (origin, status, code) = match why.kind {
            NoRoute | RoleRefused => (Origin::Internal, StatusCode::FORBIDDEN, "AccessDenied"),
            SourceExpired => (Origin::Internal, StatusCode::FORBIDDEN, "ExpiredToken"),
            StsUnreachable => (
                Origin::Upstream,
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
            ),
        };
        ProxyError {
            cause: Cause::AccountUnreachable,
            ..Self::new(origin, status, code, why.message.clone())
        }
    }

    /// A request airlock could not identify as an AWS call of its service.
    pub fn unidentified(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Origin::Downstream, StatusCode::BAD_REQUEST, code, message)
    }

    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(
            Origin::Upstream,
            StatusCode::GATEWAY_TIMEOUT,
            "GatewayTimeout",
            message,
        )
    }

    /// Renders the error in the protocol's shape.
    pub fn into_response(
        mut self,
        shape: &Shape,
        request_id: &str,
        head_only: bool,
    ) -> Response<ProxyBody> {
        // JSON-protocol services name the same refusal with an Exception suffix.
        if self.code == "AccessDenied"
            && matches!(
                shape.protocol,
                Protocol::Json | Protocol::RestJson | Protocol::RpcV2Cbor
            )
        {
            self.code = "AccessDeniedException";
        }
        let (content_type, body) = render(&self, shape, request_id);
        let mut resp = Response::new(if head_only {
            full(Vec::new())
        } else {
            full(body)
        });
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-amzn-requestid", v.clone());
            h.insert("x-amz-request-id", v);
        }
        if matches!(shape.protocol, Protocol::Json | Protocol::RestJson) {
            h.insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        }
        if shape.protocol == Protocol::RpcV2Cbor {
            h.insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
        }
        resp
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

const JSON_1_0: &str = "application/x-amz-json-1.0";
const JSON_1_1: &str = "application/x-amz-json-1.1";

/// How errors for one request must look, decided from its head before anything else.
#[derive(Debug, Clone)]
pub struct Shape {
    pub protocol: Protocol,
    pub s3: bool,
    pub presigned: bool,
    pub service: Option<String>,
    /// The awsJson content type to answer with: the request's own (`application/x-amz-json-1.0`
    /// for DynamoDB, 1.1 for most others), else the one the service's model names.
    pub json_content_type: &'static str,
}

impl Shape {
    /// Reads the signing service from the credential scope (header or query) and the
    /// protocol from the request's own markers, falling back to the service's model.
    pub fn of(headers: &HeaderMap, query: Option<&str>) -> Shape {
        let auth = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let from_auth = auth.and_then(|a| a.split("Credential=").nth(1));
        let query_cred = query.and_then(|q| {
            q.split('&')
                .find_map(|p| p.strip_prefix("X-Amz-Credential="))
        });
        let presigned = auth.is_none() && query_cred.is_some();
        let service = from_auth
            .map(str::to_string)
            .or_else(|| query_cred.map(|c| c.replace("%2F", "/").replace("%2f", "/")))
            .and_then(|c| {
                c.split('/')
                    .nth(3)
                    .map(|s| s.split([',', ' ']).next().unwrap_or("").to_string())
            })
            .filter(|s| !s.is_empty());
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        // SigV2 is refused, but in S3's shape when it is S3's SigV2 (presigned or header).
        let sigv2 = auth.is_some_and(|a| a.starts_with("AWS "))
            || query.is_some_and(|q| q.contains("AWSAccessKeyId="));
        let s3 = service.as_deref().is_some_and(crate::sigv4::uses_s3_rules)
            || (service.is_none() && sigv2);
        let modeled = service.as_deref().and_then(|s| {
            model()
                .by_signing_name(s)
                .find_map(|(_, svc)| svc.protocols.first())
                .and_then(|p| Protocol::from_model(p))
        });
        let protocol = if s3 {
            Protocol::RestXml
        } else if header("smithy-protocol") == "rpc-v2-cbor" {
            Protocol::RpcV2Cbor
        } else if headers.contains_key("x-amz-target")
            || header("content-type").starts_with("application/x-amz-json")
        {
            Protocol::Json
        } else if header("content-type").starts_with("application/x-www-form-urlencoded") {
            if modeled == Some(Protocol::Ec2) {
                Protocol::Ec2
            } else {
                Protocol::Query
            }
        } else {
            modeled.unwrap_or(Protocol::Query)
        };
        // Read only when a JSON-protocol error is rendered: the model is not searched for
        // the other protocols.
        let json_1_0 = protocol == Protocol::Json
            && match header("content-type") {
                ct if ct.starts_with(JSON_1_0) => true,
                ct if ct.starts_with(JSON_1_1) => false,
                _ => service.as_deref().is_some_and(|s| {
                    model()
                        .by_signing_name(s)
                        .find_map(|(_, svc)| svc.json_version.as_deref())
                        == Some("1.0")
                }),
            };
        Shape {
            protocol,
            s3,
            presigned,
            service,
            json_content_type: if json_1_0 { JSON_1_0 } else { JSON_1_1 },
        }
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn render(e: &ProxyError, shape: &Shape, request_id: &str) -> (&'static str, Vec<u8>) {
    let (code, msg, rid) = (e.code, xml_escape(&e.message), xml_escape(request_id));
    let kind = if e.origin == Origin::Downstream {
        "Sender"
    } else {
        "Receiver"
    };
    match shape.protocol {
        Protocol::Json | Protocol::RestJson => {
            let body = serde_json::json!({ "__type": code, "message": e.message, "Message": e.message });
            let ct = if shape.protocol == Protocol::Json { shape.json_content_type } else { "application/json" };
            (ct, body.to_string().into_bytes())
        }
        Protocol::RpcV2Cbor => ("application/cbor", cbor_text_map(&[("__type", code), ("message", &e.message)])),
        Protocol::Ec2 => (
            "text/xml",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{msg}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>").into_bytes(),
        ),
        Protocol::RestXml if shape.s3 => (
            "application/xml",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{msg}</Message><RequestId>{rid}</RequestId></Error>").into_bytes(),
        ),
        Protocol::Query | Protocol::RestXml => (
            "text/xml",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{msg}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>").into_bytes(),
        ),
    }
}

/// A CBOR map of text strings (all an rpc-v2-cbor error body needs).
fn cbor_text_map(entries: &[(&str, &str)]) -> Vec<u8> {
    fn head(out: &mut Vec<u8>, major: u8, len: usize) {
        let m = major << 5;
        match len {
            0..=23 => out.push(m | len as u8),
            24..=0xff => out.extend_from_slice(&[m | 24, len as u8]),
            0x100..=0xffff => {
                out.push(m | 25);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(m | 26);
                out.extend_from_slice(&(len as u32).to_be_bytes());
            }
        }
    }
    let mut out = Vec::new();
    head(&mut out, 5, entries.len());
    for (k, v) in entries {
        head(&mut out, 3, k.len());
        out.extend_from_slice(k.as_bytes());
        head(&mut out, 3, v.len());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AIRLOCKX/20260226/us-west-2/SERVICE/aws4_request, SignedHeaders=host, Signature=00";

    #[test]
    fn shapes_follow_the_service_protocol() {
        let shape = |svc: &str, extra: &[(&str, &str)]| {
            let auth = AUTH.replace("SERVICE", svc);
            let mut all = vec![("authorization", auth.as_str())];
            all.extend_from_slice(extra);
            Shape::of(&headers(&all), None)
        };
        assert_eq!(
            shape(
                "rds",
                &[("content-type", "application/x-www-form-urlencoded")]
            )
            .protocol,
            Protocol::Query
        );
        assert_eq!(
            shape(
                "ec2",
                &[("content-type", "application/x-www-form-urlencoded")]
            )
            .protocol,
            Protocol::Ec2
        );
        assert_eq!(
            shape(
                "dynamodb",
                &[("x-amz-target", "DynamoDB_20120810.ListTables")]
            )
            .protocol,
            Protocol::Json
        );
        assert_eq!(shape("lambda", &[]).protocol, Protocol::RestJson);
        // awsJson answers in the request's JSON version, else the service's (DynamoDB: 1.0).
        let dynamodb = shape(
            "dynamodb",
            &[("x-amz-target", "DynamoDB_20120810.DeleteTable")],
        );
        let e = ProxyError::bad_request("x");
        assert_eq!(render(&e, &dynamodb, "RID").0, JSON_1_0);
        let kinesis = shape(
            "kinesis",
            &[("x-amz-target", "Kinesis_20131202.ListStreams")],
        );
        assert_eq!(render(&e, &kinesis, "RID").0, JSON_1_1);
        let asked = shape("dynamodb", &[("content-type", JSON_1_1)]);
        assert_eq!(render(&e, &asked, "RID").0, JSON_1_1);
        assert!(shape("s3", &[]).s3);
        assert_eq!(
            shape("monitoring", &[("smithy-protocol", "rpc-v2-cbor")]).protocol,
            Protocol::RpcV2Cbor
        );
        let q = Shape::of(
            &HeaderMap::new(),
            Some(
                "X-Amz-Credential=AK%2F20260226%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=1",
            ),
        );
        assert!(q.s3 && q.presigned);
    }

    #[test]
    fn bodies_are_escaped_and_shaped() {
        let e = ProxyError::bad_request("a <b> & c");
        let shape = Shape {
            protocol: Protocol::Query,
            s3: false,
            presigned: false,
            service: None,
            json_content_type: JSON_1_1,
        };
        let (_, body) = render(&e, &shape, "RID");
        let body = String::from_utf8(body).unwrap();
        assert!(
            body.contains("<Code>InvalidRequest</Code>") && body.contains("a &lt;b&gt; &amp; c"),
            "{body}"
        );
        let cbor = cbor_text_map(&[("__type", "X")]);
        assert_eq!(
            cbor,
            [0xa1, 0x66, b'_', b'_', b't', b'y', b'p', b'e', 0x61, b'X']
        );
    }
}
