//! Phase 7, forward: the signed request through a pooled keep-alive client
//! ([`crate::net::https_client`]: webpki roots only), bodies streamed both ways. An upstream that cannot be reached answers 503, one that breaks
//! mid-call 502, one that is too slow 504: all AWS-shaped, all retried by SDKs.

use super::body::{BoxError, ProxyBody};
use super::error::{ProxyError, Shape};
use super::resign::SignedRequest;
use crate::config::Upstream;
use crate::sigv4::AuthError;
use http_body_util::BodyExt;

pub type Client = crate::net::HttpsClient<ProxyBody>;

/// The upstream client (see [`crate::net::https_client`]).
pub fn client(upstream: &Upstream) -> Client {
    crate::net::https_client(upstream.connect_timeout)
}

/// Response headers that describe the upstream hop only.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// What the forward phase learned, for the log line.
pub struct Forwarded {
    pub response: http::Response<ProxyBody>,
}

pub async fn forward(
    client: &Client,
    upstream: &Upstream,
    signed: SignedRequest,
    shape: &Shape,
) -> Result<Forwarded, ProxyError> {
    let (request, endpoint, failure) = signed.into_parts();
    let sent = tokio::time::timeout(upstream.response_timeout, client.request(request)).await;
    let check_failure = || -> Option<AuthError> {
        failure
            .as_ref()
            .and_then(|f| f.lock().ok().and_then(|mut s| s.take()))
    };
    let response = match sent {
        Err(_) => {
            return Err(ProxyError::gateway_timeout(format!(
                "{} did not answer within {} seconds",
                endpoint.base,
                upstream.response_timeout.as_secs()
            )))
        }
        Ok(Err(e)) => {
            if let Some(auth) = check_failure() {
                return Err(ProxyError::auth(auth, shape));
            }
            // Not connected: the upstream never saw the call (a receipt use is given back).
            // Connected: it may have read the call and acted on it.
            if e.is_connect() {
                return Err(ProxyError::unreachable(format!(
                    "airlock could not connect to {}: {}",
                    endpoint.base,
                    root_cause(&e)
                )));
            }
            return Err(ProxyError::bad_gateway(format!(
                "airlock failed talking to {}: {}",
                endpoint.base,
                root_cause(&e)
            )));
        }
        Ok(Ok(r)) => r,
    };
    // The upstream may answer before the body is done; a failed check still wins.
    if let Some(auth) = check_failure() {
        return Err(ProxyError::auth(auth, shape));
    }
    let (mut parts, body) = response.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(*h);
    }
    let body = body.map_err(|e| -> BoxError { Box::new(e) }).boxed();
    Ok(Forwarded {
        response: http::Response::from_parts(parts, body),
    })
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
