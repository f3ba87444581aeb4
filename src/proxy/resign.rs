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
use crate::sigv4::{uses_s3_rules, PayloadClaim};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use http_body_util::BodyExt;
use std::time::SystemTime;

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
    pub settings: SigningSettings,
    pub body: SignableBody<'a>,
}

/// Why a request could not be signed (never carries a credential).
#[derive(Debug)]
pub enum SignError {
    /// A header's value is not visible ASCII (its name).
    Header(String),
    /// The signing parameters could not be built.
    Params(String),
    /// The request cannot be read as a signable request.
    Request(String),
    /// Signing failed.
    Sign(String),
}

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignError::Header(name) => write!(f, "the header {name} is not visible ASCII"),
            SignError::Params(e) | SignError::Request(e) | SignError::Sign(e) => f.write_str(e),
        }
    }
}

/// The one signing sequence (`aws-sigv4`), for forwarded calls and airlock's own
/// (`own`): signs the request's method, URI and headers as they are now, then adds the
/// signature's headers to it.
pub fn sign_request<B>(
    request: &mut http::Request<B>,
    credentials: Credentials,
    how: Signing<'_>,
) -> Result<(), SignError> {
    let uri = request.uri().to_string();
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        let value = value
            .to_str()
            .map_err(|_| SignError::Header(name.to_string()))?;
        headers.push((name.as_str(), value));
    }
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(how.region)
        .name(how.name)
        .time(SystemTime::now())
        .settings(how.settings)
        .build()
        .map_err(|e| SignError::Params(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        request.method().as_str(),
        uri.as_str(),
        headers.into_iter(),
        how.body,
    )
    .map_err(|e| SignError::Request(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| SignError::Sign(e.to_string()))?
        .into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
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

/// A Host without its port (`:443` through the tunnel).
fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

pub async fn resign(
    proxy: &Proxy,
    v: VerifiedRequest,
    call: &AwsCall,
) -> Result<SignedRequest, ProxyError> {
    let mut endpoint = endpoint_for(proxy, &v, call)?;
    // Through the HTTPS_PROXY tunnel the client addressed AWS's own name: a FIPS, dual-stack
    // or virtual-hosted name of this very endpoint is kept (see `endpoint::serves_host`).
    let own_host = proxy.config.upstream.endpoint.is_none()
        && endpoint::serves_host(model(), &endpoint, host_name(&v.host));
    if own_host {
        endpoint.base = format!("https://{}", host_name(&v.host).to_ascii_lowercase());
    }
    let creds = proxy
        .credentials
        .get()
        .await
        .map_err(|e| ProxyError::no_credentials(&e.0))?;

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

    let mut settings = SigningSettings::default();
    if uses_s3_rules(&v.scope.service) {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    // Every service accepts a signed x-amz-content-sha256; sending it always says exactly
    // which body the signature covers (and some emulators insist on it).
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;

    // A presigned URL was verified (signature and expiry) by airlock; upstream, the call is
    // airlock's own and is signed in the Authorization header like any other.
    let signable_body = match &v.body {
        VerifiedBody::Full {
            signed_as: SignedAs::Sha256(sha256),
            ..
        } => SignableBody::Precomputed(sha256.clone()),
        VerifiedBody::Full {
            signed_as: SignedAs::UnsignedTrailer,
            ..
        } => SignableBody::StreamingUnsignedPayloadTrailer,
        VerifiedBody::Stream { mode, .. } => match mode {
            PayloadClaim::Hash(h) => SignableBody::Precomputed(hex::encode(h)),
            PayloadClaim::UnsignedTrailer => SignableBody::StreamingUnsignedPayloadTrailer,
            // Signed chunks are forwarded decoded, as a plain body.
            PayloadClaim::Unsigned | PayloadClaim::SignedChunks { .. } | PayloadClaim::FromBody => {
                SignableBody::UnsignedPayload
            }
        },
    };

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
        settings,
        body: signable_body,
    };
    sign_request(&mut request, creds, signing).map_err(|e| match e {
        SignError::Header(name) => {
            ProxyError::bad_request(format!("the header {name} is not visible ASCII"))
        }
        SignError::Params(e) => {
            ProxyError::internal(format!("could not prepare the signature: {e}"))
        }
        SignError::Request(e) => {
            ProxyError::bad_request(format!("the request cannot be re-signed: {e}"))
        }
        SignError::Sign(e) => ProxyError::internal(format!("could not sign the request: {e}")),
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
