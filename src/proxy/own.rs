//! airlock's own calls to AWS, never an agent's: a query-protocol form POST signed with the
//! real credentials (`resign::sign_request`, the one signer) and sent through the same pooled client and
//! `[upstream]` as forwarded calls. They learn airlock's account (`caller`) and read
//! CloudFormation change sets (`changeset`). Every call is bounded in time and in the size
//! of the answer it reads.

use super::body::full;
use super::resign::{sign_request, Signing};
use super::Proxy;
use crate::aws::endpoint::Endpoint;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use std::time::Duration;

/// How long one call may take to answer, and then to send its body.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer read (a page of a change set is well under this).
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// An answer: its status and its whole body.
pub struct Answer {
    pub status: http::StatusCode,
    pub body: Bytes,
}

/// Sends `form` (`Action`, `Version` and the call's members) to `endpoint` as airlock.
/// `what` names the call in errors (`DescribeChangeSet`). The errors never carry a
/// credential.
pub async fn query_call(
    proxy: &Proxy,
    endpoint: &Endpoint,
    signing_name: &str,
    form: &[(String, String)],
    what: &str,
) -> Result<Answer, String> {
    let creds = proxy.credentials.get().await.map_err(|e| e.0)?;
    query_call_as(&proxy.client, creds, endpoint, signing_name, form, what).await
}

/// [`query_call`] signed with `creds` (airlock's own, or a session it holds in another
/// account), through `client`.
pub async fn query_call_as(
    client: &super::forward::Client,
    creds: aws_credential_types::Credentials,
    endpoint: &Endpoint,
    signing_name: &str,
    form: &[(String, String)],
    what: &str,
) -> Result<Answer, String> {
    let uri = format!("{}/", endpoint.base);
    let body = Bytes::from(form_body(form));
    let mut request = http::Request::builder()
        .method("POST")
        .uri(&uri)
        .header("content-type", FORM)
        .body(full(body.clone()))
        .map_err(|e| e.to_string())?;
    let payload_hash = crate::sigv4::sha256_hex(&body);
    let signing = Signing {
        region: &endpoint.signing_region,
        name: signing_name,
        payload_hash: &payload_hash,
    };
    sign_request(&mut request, &creds, signing).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("{what} timed out"))?
        .map_err(|e| format!("{what} failed: {e}"))?;
    let status = response.status();
    let body = tokio::time::timeout(
        TIMEOUT,
        Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect(),
    )
    .await
    .map_err(|_| format!("{what} timed out"))?
    .map_err(|e| format!("{what}: reading the answer: {e}"))?
    .to_bytes();
    Ok(Answer { status, body })
}

/// `application/x-www-form-urlencoded`, as botocore writes it: every byte but the unreserved
/// ones as `%XX`, a space as `+` (AWS reads `%20` too; moto, checking signatures, re-encodes
/// the form it parsed this way and would not match another spelling).
fn form_body(form: &[(String, String)]) -> String {
    // A `%` is always written `%25`, so `%20` can only stand for a space.
    crate::sigv4::canonical::encode_query(form).replace("%20", "+")
}

#[cfg(test)]
mod tests {
    #[test]
    fn forms_are_written_as_botocore_writes_them() {
        let form = [
            ("Action".to_string(), "CreateChangeSet".to_string()),
            (
                "TemplateBody".to_string(),
                "{\"a b\": \"50%20~\"}".to_string(),
            ),
        ];
        assert_eq!(
            super::form_body(&form),
            "Action=CreateChangeSet&TemplateBody=%7B%22a+b%22%3A+%2250%2520~%22%7D"
        );
    }
}
