//! Phase 6, re-sign: the verified request, signed anew with airlock's real credentials
//! (`aws-sigv4`) for the upstream that serves it. The agent's signature, token and date are
//! already gone (see `authenticate::DROPPED_HEADERS`); what is signed here is exactly what
//! is sent.

use super::authenticate::{SignedAs, VerifiedBody, VerifiedRequest};
use super::body::{full, FailureSlot, ProxyBody};
use super::error::ProxyError;
use super::Proxy;
use crate::aws::endpoint::{self, Endpoint};
use crate::aws::model;
use crate::identify::AwsCall;
use crate::sigv4::key_cache::KeyCache;
use crate::sigv4::sign::{sign, Outgoing, Signer};
use crate::sigv4::PayloadClaim;
use aws_credential_types::Credentials;
use http_body_util::BodyExt;
use std::sync::LazyLock;

/// A request ready for the upstream: made only here, taken apart only by `forward`.
pub struct SignedRequest {
    request: http::Request<ProxyBody>,
    endpoint: Endpoint,
    /// Set when the streamed body failed a check on its way out.
    failure: Option<FailureSlot>,
}

impl SignedRequest {
    /// The request, where it goes, and the slot a failed body check is reported in.
    pub(crate) fn into_parts(self) -> (http::Request<ProxyBody>, Endpoint, Option<FailureSlot>) {
        (self.request, self.endpoint, self.failure)
    }
}

/// How one request is signed with the real credentials.
pub struct Signing<'a> {
    pub region: &'a str,
    /// The signing name (`s3`, `cloudformation`).
    pub name: &'a str,
    /// What stands for the body: its hex SHA-256, or `UNSIGNED-PAYLOAD` and the like.
    pub payload_hash: &'a str,
}

pub use crate::sigv4::sign::SignError;

/// The real credentials' signing keys, derived once per access key, day, region and
/// service for every upstream call of the process (forwarded and airlock's own).
static UPSTREAM_KEYS: LazyLock<KeyCache> = LazyLock::new(KeyCache::default);

/// The one signing sequence ([`crate::sigv4::sign`]), for forwarded calls and airlock's own
/// (`own`): signs the request's method, URI and headers as they are now, then adds the
/// signature's headers to it.
pub fn sign_request<B>(
    request: &mut http::Request<B>,
    credentials: &Credentials,
    how: Signing<'_>,
) -> Result<(), SignError> {
    let uri = request.uri();
    let host = signed_host(uri)
        .ok_or_else(|| SignError::Request("the upstream URI has no host".to_owned()))?;
    let outgoing = Outgoing {
        method: request.method().as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        host,
        headers: request.headers(),
        payload_hash: how.payload_hash,
    };
    let signer = Signer {
        access_key_id: credentials.access_key_id(),
        secret: credentials.secret_access_key(),
        session_token: credentials.session_token(),
        keys: &UPSTREAM_KEYS,
    };
    let amz_date = crate::sigv4::time::format_amz_date(time::OffsetDateTime::now_utc());
    let signature = sign(&outgoing, &signer, how.region, how.name, &amz_date)?;
    signature.apply(request.headers_mut())
}

/// The Host a request to `uri` is sent with: its authority, without the scheme's default
/// port (as HTTP clients send it).
fn signed_host(uri: &http::Uri) -> Option<&str> {
    let authority = uri.authority()?;
    let default = matches!(
        (uri.scheme_str(), authority.port_u16()),
        (Some("http"), Some(80)) | (Some("https"), Some(443))
    );
    Some(if default {
        authority.host()
    } else {
        authority.as_str()
    })
}

/// Where the call goes: the configured emulator, or the real endpoint of the service
/// identification named (not the signing name: `s3` also signs S3 Control).
pub fn endpoint_for(
    proxy: &Proxy,
    v: &VerifiedRequest,
    call: &AwsCall,
) -> Result<Endpoint, ProxyError> {
    endpoint_of(proxy, &call.service, &v.scope.region).map_err(ProxyError::bad_request)
}

/// Where a call of `service` in `region` goes (forwarded, or airlock's own).
pub fn endpoint_of(proxy: &Proxy, service: &str, region: &str) -> Result<Endpoint, String> {
    if let Some(upstream) = &proxy.config.upstream.endpoint {
        return Ok(Endpoint {
            base: upstream.base().to_owned(),
            signing_region: region.to_string(),
            service: service.to_string(),
        });
    }
    endpoint::resolve(model(), service, region).map_err(|e| e.0)
}

const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const STREAMING_UNSIGNED_PAYLOAD_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

/// A Host without its port (`:443` through the tunnel).
fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// Signs the call with `creds`: airlock's own, or its session in the agent's account
/// (`assume::credentials`).
pub async fn resign(
    proxy: &Proxy,
    v: VerifiedRequest,
    call: &AwsCall,
    creds: aws_credential_types::Credentials,
) -> Result<SignedRequest, ProxyError> {
    let mut endpoint = endpoint_for(proxy, &v, call)?;
    // Through the HTTPS_PROXY tunnel the client addressed AWS's own name: a FIPS, dual-stack
    // or virtual-hosted name of this very endpoint is kept (see `endpoint::serves_host`).
    let own_host = proxy.config.upstream.endpoint.is_none()
        && endpoint::serves_host(model(), &endpoint, host_name(&v.host));
    if own_host {
        endpoint.base = format!("https://{}", host_name(&v.host).to_ascii_lowercase());
    }

    let query = crate::sigv4::canonical::encode_query(&v.query);
    // A virtual-hosted S3 request (bucket in the Host) goes upstream path-style.
    let path = match (
        call.service.as_str(),
        crate::identify::virtual_host_bucket(&v.host),
    ) {
        ("s3", Some(bucket)) if !own_host => format!("/{bucket}{}", v.path),
        _ => v.path.clone(),
    };
    let uri = if query.is_empty() {
        format!("{}{path}", endpoint.base)
    } else {
        format!("{}{path}?{query}", endpoint.base)
    };

    // A presigned URL was verified (signature and expiry) by airlock; upstream, the call is
    // airlock's own and is signed in the Authorization header like any other. Every service
    // accepts a signed x-amz-content-sha256; sending it always says exactly which body the
    // signature covers (and some emulators insist on it).
    let precomputed;
    let payload_hash: &str = match &v.body {
        VerifiedBody::Full {
            signed_as: SignedAs::Sha256(sha256),
            ..
        } => sha256,
        VerifiedBody::Full {
            signed_as: SignedAs::UnsignedTrailer,
            ..
        } => STREAMING_UNSIGNED_PAYLOAD_TRAILER,
        VerifiedBody::Stream { mode, .. } => match mode {
            PayloadClaim::Hash(h) => {
                precomputed = crate::sigv4::hex_lower(h);
                &precomputed
            }
            PayloadClaim::UnsignedTrailer => STREAMING_UNSIGNED_PAYLOAD_TRAILER,
            // Signed chunks are forwarded decoded, as a plain body.
            PayloadClaim::Unsigned | PayloadClaim::SignedChunks { .. } | PayloadClaim::FromBody => {
                UNSIGNED_PAYLOAD
            }
        },
    };
    let payload_hash = payload_hash.to_owned();

    let (body, length, failure) = match v.body {
        VerifiedBody::Full { bytes, .. } => {
            let len = bytes.len() as u64;
            (full(bytes), Some(len), None)
        }
        VerifiedBody::Stream {
            body,
            failure,
            length,
            ..
        } => (body.boxed(), length, Some(failure)),
    };
    let mut request = http::Request::builder()
        .method(v.method)
        .uri(&uri)
        .body(body)
        .map_err(|e| ProxyError::bad_request(format!("the request cannot be forwarded: {e}")))?;
    *request.headers_mut() = v.headers;
    let signing = Signing {
        region: &endpoint.signing_region,
        name: &v.scope.service,
        payload_hash: &payload_hash,
    };
    sign_request(&mut request, &creds, signing).map_err(|e| match e {
        SignError::Header(name) => {
            ProxyError::bad_request(format!("the header {name} is not visible ASCII"))
        }
        SignError::Request(e) => {
            ProxyError::bad_request(format!("the request cannot be re-signed: {e}"))
        }
    })?;
    // After signing: the length is the transport's, never part of the signature.
    if let Some(len) = length {
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
    Ok(SignedRequest {
        request,
        endpoint,
        failure,
    })
}
