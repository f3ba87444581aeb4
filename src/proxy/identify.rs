//! Phase 3, identify: the verified request as an AWS call (the pure `crate::identify`,
//! given the account of airlock's real credentials). Anything that matches no operation of
//! its service is refused, never forwarded as "unknown".

use super::authenticate::{VerifiedBody, VerifiedRequest};
use super::error::ProxyError;
use super::Proxy;
use crate::identify::{AwsCall, Request};

pub async fn identify(proxy: &Proxy, v: &VerifiedRequest) -> Result<AwsCall, ProxyError> {
    let account = proxy.account().await;
    let body = match &v.body {
        VerifiedBody::Full { content, .. } => Some(content.as_ref()),
        VerifiedBody::Stream { .. } => None,
    };
    let request = Request {
        signing_name: &v.scope.service,
        region: &v.scope.region,
        method: v.method.as_str(),
        path: &v.path,
        query: &v.query,
        headers: &v.headers,
        host: &v.host,
        body,
        account: account.as_deref(),
    };
    crate::identify::identify(&request).map_err(|e| ProxyError::unidentified(e.code, e.message))
}
