//! airlock's own AWS account, from `sts:GetCallerIdentity` with the real credentials, sent
//! through the same upstream as every forwarded call (see [`super::own`]). Receipts and ARNs
//! carry it.

use super::Proxy;
use crate::aws::endpoint::Endpoint;

pub async fn caller_account(proxy: &Proxy) -> Result<String, String> {
    let base = match &proxy.config.upstream.endpoint {
        Some(e) => e.base().to_owned(),
        None => "https://sts.us-east-1.amazonaws.com".to_string(),
    };
    let endpoint = Endpoint {
        base,
        signing_region: "us-east-1".into(),
        service: "sts".into(),
    };
    let form = [
        ("Action".to_string(), "GetCallerIdentity".to_string()),
        ("Version".to_string(), "2011-06-15".to_string()),
    ];
    let answer =
        super::own::query_call(proxy, &endpoint, "sts", &form, "GetCallerIdentity").await?;
    let text = String::from_utf8_lossy(&answer.body);
    if !answer.status.is_success() {
        return Err(format!("GetCallerIdentity answered {}", answer.status));
    }
    let account = text
        .split("<Account>")
        .nth(1)
        .and_then(|rest| rest.split("</Account>").next())
        .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| "GetCallerIdentity gave no account".to_string())?;
    Ok(account.to_string())
}
