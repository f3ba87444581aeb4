//! SigV4 as a client signs: airlock's signature with the real credentials on what it sends
//! upstream. The same canonical form as the verifier's ([`canonical`]), built once into one
//! buffer, and the signing key from a [`KeyCache`] (one HMAC chain per day, region and
//! service); the signature is the HMAC of the string to sign with that cached key. What it
//! signs matches the `aws-sigv4` crate's header signing byte for byte
//! (the tests compare the two): every header of the request but `authorization`,
//! `user-agent`, `x-amzn-trace-id` and `transfer-encoding`, plus `host`, `x-amz-date`,
//! `x-amz-content-sha256` and, for session credentials, `x-amz-security-token`. One
//! difference, on purpose: a header value's inner whitespace is folded as botocore and
//! airlock's verifier fold it (tabs too), where the crate folds spaces only; a value with a
//! tab is signed the way the agent's SDK signed it.
//!
//! Pure code: the caller passes the time and puts the resulting headers on the request.

use super::canonical::{self, push_normalized};
use super::key_cache::{KeyCache, ScopeRef};
use super::{sha256_hex, uses_s3_rules};
use http::{HeaderMap, HeaderValue};
use std::fmt::Write;

/// Headers that are never signed: the signature itself, and what proxies and hops change.
const UNSIGNED: &[&str] = &[
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "transfer-encoding",
];

/// Headers the signer sets itself (a value already on the request is replaced).
const SET_BY_SIGNER: &[&str] = &[
    "host",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
];

/// The credentials a request is signed with (borrowed; never printed).
pub struct Signer<'a> {
    pub access_key_id: &'a str,
    pub secret: &'a str,
    pub session_token: Option<&'a str>,
    pub keys: &'a KeyCache,
}

/// A request as it will be sent.
pub struct Outgoing<'a> {
    pub method: &'a str,
    /// The path as sent (encoded once).
    pub path: &'a str,
    /// The query as sent, without `?` (empty if none).
    pub query: &'a str,
    /// The Host it is sent with (the authority, without a default port).
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    /// What stands for the body: its hex SHA-256, or `UNSIGNED-PAYLOAD` and the like.
    pub payload_hash: &'a str,
}

/// Why a request could not be signed (never carries a credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// A header's value is not visible ASCII (its name).
    Header(String),
    /// The path or query cannot be put in canonical form.
    Request(String),
}

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignError::Header(name) => write!(f, "the header {name} is not visible ASCII"),
            SignError::Request(e) => f.write_str(e),
        }
    }
}

/// The headers that carry the signature, to put on the request.
pub struct Signature {
    pub amz_date: String,
    pub payload_hash: String,
    pub session_token: Option<String>,
    pub authorization: String,
}

impl Signature {
    /// Puts the signature's headers on `headers` (the token and authorization marked
    /// sensitive, as HTTP libraries then keep them out of their logs).
    pub fn apply(self, headers: &mut HeaderMap) -> Result<(), SignError> {
        let value = |name: &str, v: String, sensitive: bool| {
            let mut v = HeaderValue::try_from(v).map_err(|_| SignError::Header(name.into()))?;
            v.set_sensitive(sensitive);
            Ok::<_, SignError>(v)
        };
        headers.insert("x-amz-date", value("x-amz-date", self.amz_date, false)?);
        headers.insert(
            "x-amz-content-sha256",
            value("x-amz-content-sha256", self.payload_hash, false)?,
        );
        if let Some(token) = self.session_token {
            headers.insert(
                "x-amz-security-token",
                value("x-amz-security-token", token, true)?,
            );
        }
        headers.insert(
            http::header::AUTHORIZATION,
            value("authorization", self.authorization, true)?,
        );
        Ok(())
    }
}

/// One header of the canonical form: from the request, or set by the signer.
enum Value<'a> {
    Request(&'a http::HeaderName),
    Own(&'a str),
}

/// Signs `request` for `region` and `service` at `amz_date` (`20261205T120000Z`).
pub fn sign(
    request: &Outgoing<'_>,
    signer: &Signer<'_>,
    region: &str,
    service: &str,
    amz_date: &str,
) -> Result<Signature, SignError> {
    let date = amz_date.get(..8).unwrap_or(amz_date);

    // The canonical URI: S3's as sent; every other service's normalised and encoded again.
    let path = if uses_s3_rules(service) {
        canonical::s3_path(request.path)
    } else {
        canonical::normalized_path(request.path)
    }
    .map_err(|e| SignError::Request(e.message))?
    .canonical;
    let mut pairs =
        canonical::query_pairs(request.query).map_err(|e| SignError::Request(e.message))?;
    pairs.retain(|(k, v)| !(k.is_empty() && v.is_empty()));
    let query = canonical::canonical_query(&pairs, None);

    let mut headers: Vec<(&str, Value<'_>)> = Vec::with_capacity(request.headers.keys_len() + 4);
    for name in request.headers.keys() {
        if !UNSIGNED.contains(&name.as_str()) && !SET_BY_SIGNER.contains(&name.as_str()) {
            headers.push((name.as_str(), Value::Request(name)));
        }
    }
    headers.push(("host", Value::Own(request.host)));
    headers.push(("x-amz-date", Value::Own(amz_date)));
    headers.push(("x-amz-content-sha256", Value::Own(request.payload_hash)));
    if let Some(token) = signer.session_token {
        headers.push(("x-amz-security-token", Value::Own(token)));
    }
    headers.sort_unstable_by(|a, b| a.0.cmp(b.0));

    let mut creq = String::with_capacity(256 + path.len() + query.len() + headers.len() * 48);
    creq.push_str(request.method);
    creq.push('\n');
    creq.push_str(&path);
    creq.push('\n');
    creq.push_str(&query);
    creq.push('\n');
    for (name, value) in &headers {
        creq.push_str(name);
        creq.push(':');
        match value {
            Value::Own(v) => push_normalized(&mut creq, v),
            Value::Request(name) => {
                for (i, v) in request.headers.get_all(*name).iter().enumerate() {
                    let v = v
                        .to_str()
                        .map_err(|_| SignError::Header(name.as_str().to_owned()))?;
                    if i > 0 {
                        creq.push(',');
                    }
                    push_normalized(&mut creq, v);
                }
            }
        }
        creq.push('\n');
    }
    creq.push('\n');
    let signed_from = creq.len();
    for (i, (name, _)) in headers.iter().enumerate() {
        if i > 0 {
            creq.push(';');
        }
        creq.push_str(name);
    }
    let signed_headers_end = creq.len();
    creq.push('\n');
    creq.push_str(request.payload_hash);

    let scope = ScopeRef {
        date,
        region,
        service,
    };
    let mut string_to_sign = String::with_capacity(160);
    string_to_sign.push_str("AWS4-HMAC-SHA256\n");
    string_to_sign.push_str(amz_date);
    string_to_sign.push('\n');
    push_scope(&mut string_to_sign, &scope);
    string_to_sign.push('\n');
    string_to_sign.push_str(&sha256_hex(creq.as_bytes()));

    // The cached key's HMAC of the string to sign, in lower-case hex.
    let key = signer.keys.key(signer.access_key_id, signer.secret, scope);
    let signature = super::hex_lower(&key.sign(&string_to_sign));

    let signed_headers = &creq[signed_from..signed_headers_end];
    let mut authorization = String::with_capacity(160 + signed_headers.len());
    authorization.push_str("AWS4-HMAC-SHA256 Credential=");
    authorization.push_str(signer.access_key_id);
    authorization.push('/');
    push_scope(&mut authorization, &scope);
    authorization.push_str(", SignedHeaders=");
    authorization.push_str(signed_headers);
    authorization.push_str(", Signature=");
    authorization.push_str(&signature);
    Ok(Signature {
        amz_date: amz_date.to_owned(),
        payload_hash: request.payload_hash.to_owned(),
        session_token: signer.session_token.map(str::to_owned),
        authorization,
    })
}

fn push_scope(out: &mut String, scope: &ScopeRef<'_>) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{scope}");
}

#[cfg(test)]
mod tests;
