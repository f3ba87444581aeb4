//! airlock's own AWS account, from `sts:GetCallerIdentity` with the real credentials, sent
//! through the same upstream as every forwarded call. Receipts and ARNs carry it.

use super::body::full;
use super::Proxy;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use http_body_util::BodyExt;
use std::time::{Duration, SystemTime};

const BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

pub async fn caller_account(proxy: &Proxy) -> Result<String, String> {
    let creds = proxy.credentials.get().await.map_err(|e| e.0)?;
    let (base, region) = match &proxy.config.upstream.endpoint {
        Some(e) => (
            e.to_string().trim_end_matches('/').to_string(),
            "us-east-1".to_string(),
        ),
        None => (
            "https://sts.us-east-1.amazonaws.com".to_string(),
            "us-east-1".to_string(),
        ),
    };
    let uri = format!("{base}/");
    let headers = [(
        "content-type",
        "application/x-www-form-urlencoded; charset=utf-8",
    )];
    let identity = creds.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("sts")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        "POST",
        uri.as_str(),
        headers.iter().copied(),
        SignableBody::Bytes(BODY.as_bytes()),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let mut request = http::Request::builder()
        .method("POST")
        .uri(&uri)
        .header("content-type", headers[0].1)
        .body(full(BODY))
        .map_err(|e| e.to_string())?;
    instructions.apply_to_request_http1x(&mut request);
    let response = tokio::time::timeout(Duration::from_secs(15), proxy.client.request(request))
        .await
        .map_err(|_| "GetCallerIdentity timed out".to_string())?
        .map_err(|e| format!("GetCallerIdentity failed: {e}"))?;
    let status = response.status();
    let body = tokio::time::timeout(Duration::from_secs(15), response.into_body().collect())
        .await
        .map_err(|_| "GetCallerIdentity timed out".to_string())?
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        return Err(format!("GetCallerIdentity answered {status}"));
    }
    let account = text
        .split("<Account>")
        .nth(1)
        .and_then(|rest| rest.split("</Account>").next())
        .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| "GetCallerIdentity gave no account".to_string())?;
    Ok(account.to_string())
}
