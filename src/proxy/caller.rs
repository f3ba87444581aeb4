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
    let form = crate::accounts::caller_identity_form();
    let answer =
        super::own::query_call(proxy, &endpoint, "sts", &form, "GetCallerIdentity").await?;
    let text = String::from_utf8_lossy(&answer.body);
    if !answer.status.is_success() {
        return Err(format!("GetCallerIdentity answered {}", answer.status));
    }
    let account = crate::accounts::caller_account(&text)
        .ok_or_else(|| "GetCallerIdentity gave no account".to_string())?;
    Ok(account)
}
