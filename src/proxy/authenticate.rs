//! Phase 2, authenticate: from a received request to a [`VerifiedRequest`].
//!
//! Order matters: the cheap checks (signature fields, agent, clock) come before any body
//! is read, and the signature is checked before a streamed body is forwarded. A body with no
//! declared hash is read whole (bounded) because the signature covers it. The result keeps
//! only what the agent signed; nothing unverified survives this phase.

use super::body::{read_limited, Check, CheckedBody, FailureSlot, ReadError};
use super::error::{ProxyError, Shape};
use super::Proxy;
use crate::sigv4::chunked::{ChunkDecoder, ChunkSigner};
use crate::sigv4::{self, AuthError, PayloadClaim, Prepared, RequestHead, Scope, SigningKey};
use crate::state::agents::Agent;
use bytes::Bytes;
use http::{HeaderMap, Method};
use hyper::body::{Body, Incoming};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// A request whose signature verified. Only [`authenticate`] makes one: the private
/// `_proof` field keeps every other module from building it.
#[allow(clippy::manual_non_exhaustive)]
pub struct VerifiedRequest {
    pub agent: Arc<Agent>,
    pub scope: Scope,
    pub method: Method,
    /// The path to forward (S3: as sent; others: normalised).
    pub path: String,
    /// Decoded query pairs, presigning parameters removed.
    pub query: Vec<(String, String)>,
    /// The headers the agent signed, minus those re-signing replaces.
    pub headers: HeaderMap,
    /// The authority the client addressed (S3 virtual-hosted buckets live in it).
    pub host: String,
    pub body: VerifiedBody,
    _proof: (),
}

pub enum VerifiedBody {
    /// Read whole and verified. `bytes` are forwarded as they came; `content` is what they
    /// carry (the same bytes, or aws-chunked framing decoded), which identification reads.
    Full {
        bytes: Bytes,
        signed_as: SignedAs,
        content: Bytes,
    },
    /// Streamed with a check (`mode` says which).
    Stream {
        body: Box<CheckedBody>,
        failure: FailureSlot,
        length: Option<u64>,
        mode: PayloadClaim,
    },
}

/// How a whole body is signed upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedAs {
    /// Its SHA-256 (hex): the signature covers every byte.
    Sha256(String),
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: the body is aws-chunked framing.
    UnsignedTrailer,
}

/// Headers that re-signing replaces or that describe one hop only; each is dropped from
/// what is forwarded, whatever the agent signed.
///
/// | header | why |
/// |---|---|
/// | `authorization` | the agent's signature; airlock signs anew |
/// | `x-amz-date`, `date` | the agent's signing time; airlock signs at its own |
/// | `x-amz-security-token` | the agent's token (agents have none that AWS knows) |
/// | `x-amz-content-sha256` | set again by the re-signer for the body actually sent |
/// | `host` | the upstream's host, not airlock's |
/// | `content-length` | set from the body actually sent |
/// | `transfer-encoding`, `connection`, `keep-alive`, `te`, `trailer`, `upgrade`, `proxy-connection`, `proxy-authorization` | hop-by-hop (RFC 9110 §7.6.1) |
/// | `expect` | `100-continue` is between the agent and airlock |
pub const DROPPED_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-date",
    "date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
    "expect",
];

/// Headers that describe signed aws-chunked framing, dropped when airlock forwards the
/// decoded body instead.
const CHUNK_FRAMING_HEADERS: &[&str] = &["x-amz-decoded-content-length", "x-amz-trailer"];

pub async fn authenticate(
    proxy: &Proxy,
    req: http::Request<Incoming>,
    shape: &Shape,
) -> Result<VerifiedRequest, ProxyError> {
    let auth = |e: AuthError| ProxyError::auth(e, shape);
    let (parts, body) = req.into_parts();

    // The authority the client addressed: Host (HTTP/1.1) or :authority (h2); both, disagreeing, is ambiguity.
    let host_headers: Vec<_> = parts.headers.get_all(http::header::HOST).iter().collect();
    let host = match (host_headers.as_slice(), parts.uri.authority()) {
        ([], Some(a)) => a.as_str().to_string(),
        ([h], None) => h
            .to_str()
            .map_err(|_| ProxyError::bad_request("the Host header is not ASCII"))?
            .to_string(),
        ([h], Some(a)) if h.as_bytes() == a.as_str().as_bytes() => a.as_str().to_string(),
        ([_], Some(_)) => return Err(ProxyError::bad_request("Host and :authority disagree")),
        ([], None) => return Err(ProxyError::bad_request("the request has no Host")),
        _ => {
            return Err(ProxyError::bad_request(
                "the request has more than one Host header",
            ))
        }
    };

    // A method override would let the call AWS runs differ from the one airlock identified.
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        if parts.headers.contains_key(name) {
            return Err(ProxyError::bad_request(format!(
                "airlock does not accept the {name} header: send the method itself"
            )));
        }
    }
    let raw_path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or("");
    let head = RequestHead {
        method: parts.method.as_str(),
        raw_path,
        raw_query,
        headers: &parts.headers,
        host: &host,
    };
    let prepared = Prepared::from_head(&head).map_err(auth)?;

    let agent = proxy
        .agents
        .get(&prepared.claim.access_key_id)
        .ok_or_else(|| auth(AuthError::unknown_key()))?;
    // Agents hold no session token that AWS would know; one in the request is not theirs.
    if prepared.session_token.is_some() {
        return Err(auth(AuthError::bad_token()));
    }
    prepared
        .check_time(time::OffsetDateTime::now_utc())
        .map_err(auth)?;
    let key = proxy.signing_key(&agent, &prepared.claim.scope);

    let s3 = sigv4::uses_s3_rules(&prepared.claim.scope.service);
    let declared_len = body.size_hint().exact();
    let presigned = prepared.claim.presigned.is_some();
    // Read whole: every non-S3 body (its signature covers it, and identification reads it),
    // and the few S3 bodies that say what a call acts on (DeleteObjects' keys, ...).
    let buffer = crate::identify::reads_body(
        &prepared.claim.scope.service,
        parts.method.as_str(),
        &prepared.query,
    );
    let verified_body = if buffer {
        let bytes = match read_limited(body, proxy.config.limits.max_buffered_body).await {
            Ok(b) => b,
            Err(ReadError::TooLarge) => {
                return Err(ProxyError::too_large(
                    proxy.config.limits.max_buffered_body,
                    shape,
                ))
            }
            Err(ReadError::Io(e)) => {
                return Err(ProxyError::bad_request(format!(
                    "could not read the request body: {e}"
                )))
            }
        };
        let sha256 = sigv4::sha256_hex(&bytes);
        let claim = prepared.payload;
        match claim {
            PayloadClaim::FromBody => prepared.check(&key, &sha256).map_err(auth)?,
            PayloadClaim::Hash(expected) => {
                // Check the signature first: a wrong key must read as a wrong key.
                prepared
                    .check(&key, &sigv4::hex_lower(&expected))
                    .map_err(auth)?;
                if !bool::from(
                    sigv4::hex_lower(&expected)
                        .as_bytes()
                        .ct_eq(sha256.as_bytes()),
                ) {
                    return Err(auth(AuthError::payload_mismatch()));
                }
            }
            PayloadClaim::Unsigned if s3 || bytes.is_empty() => {
                prepared.check(&key, "UNSIGNED-PAYLOAD").map_err(auth)?
            }
            PayloadClaim::Unsigned => {
                let why = if presigned {
                    "a presigned request may not carry a body"
                } else {
                    "this service's requests must sign their body"
                };
                return Err(auth(AuthError::malformed(why)));
            }
            PayloadClaim::UnsignedTrailer if s3 => {
                prepared
                    .check(&key, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
                    .map_err(auth)?;
            }
            PayloadClaim::UnsignedTrailer | PayloadClaim::SignedChunks { .. } => {
                let why = if s3 {
                    "send this S3 request without signed aws-chunked encoding: airlock reads its body to identify it"
                } else {
                    "streaming aws-chunked payloads are only accepted for S3"
                };
                return Err(auth(AuthError::unsupported(why)));
            }
        }
        if claim == PayloadClaim::UnsignedTrailer {
            // Identification reads the decoded bytes; the framing is forwarded as it came.
            let mut decoder = ChunkDecoder::new(None, true, proxy.config.limits.max_buffered_body);
            let mut content = bytes::BytesMut::new();
            for ev in decoder.push(&bytes).map_err(auth)? {
                if let crate::sigv4::chunked::Decoded::Data(d) = ev {
                    content.extend_from_slice(&d);
                }
            }
            decoder.finish().map_err(auth)?;
            let declared = decoded_length(&parts.headers).map_err(auth)?;
            if content.len() as u64 != declared {
                return Err(auth(AuthError::malformed(format!(
                    "the chunks hold {} bytes but x-amz-decoded-content-length says {declared}",
                    content.len()
                ))));
            }
            VerifiedBody::Full {
                bytes,
                signed_as: SignedAs::UnsignedTrailer,
                content: content.freeze(),
            }
        } else {
            VerifiedBody::Full {
                content: bytes.clone(),
                bytes,
                signed_as: SignedAs::Sha256(sha256),
            }
        }
    } else {
        match prepared.payload {
            // S3 uploads stream; the signature over the head is checked before a byte moves.
            PayloadClaim::Hash(expected) => {
                prepared
                    .check(&key, &sigv4::hex_lower(&expected))
                    .map_err(auth)?;
                stream(
                    body,
                    Check::Hash {
                        hasher: Sha256::new(),
                        expected,
                    },
                    declared_len,
                    prepared.payload,
                )
            }
            PayloadClaim::Unsigned | PayloadClaim::UnsignedTrailer | PayloadClaim::FromBody => {
                prepared
                    .check(&key, &prepared.payload.canonical().unwrap_or_default())
                    .map_err(auth)?;
                stream(body, Check::Passthrough, declared_len, prepared.payload)
            }
            PayloadClaim::SignedChunks { trailer } => {
                prepared
                    .check(&key, &prepared.payload.canonical().unwrap_or_default())
                    .map_err(auth)?;
                let decoded_len = decoded_length(&parts.headers).map_err(auth)?;
                let signer = ChunkSigner {
                    key,
                    amz_date: prepared.amz_date.clone(),
                    scope: prepared.claim.scope.clone(),
                    previous: prepared.seed_signature(),
                };
                let decoder = Box::new(ChunkDecoder::new(
                    Some(signer),
                    trailer,
                    proxy.config.limits.max_chunk,
                ));
                stream(
                    body,
                    Check::Chunked {
                        decoder,
                        expected_len: decoded_len,
                    },
                    Some(decoded_len),
                    prepared.payload,
                )
            }
        }
    };

    let chunked = matches!(prepared.payload, PayloadClaim::SignedChunks { .. });
    let headers = signed_headers(&parts.headers, &prepared.claim.signed_headers, chunked);
    let (scope, path, query) = prepared.into_forwarded();
    Ok(VerifiedRequest {
        agent,
        scope,
        method: parts.method,
        path,
        query,
        headers,
        host,
        body: verified_body,
        _proof: (),
    })
}

fn stream(body: Incoming, check: Check, length: Option<u64>, mode: PayloadClaim) -> VerifiedBody {
    let (body, failure) = CheckedBody::new(body, check);
    VerifiedBody::Stream {
        body: Box::new(body),
        failure,
        length,
        mode,
    }
}

fn decoded_length(headers: &HeaderMap) -> Result<u64, AuthError> {
    let values: Vec<_> = headers
        .get_all("x-amz-decoded-content-length")
        .iter()
        .collect();
    match values.as_slice() {
        [v] => v
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| AuthError::malformed("x-amz-decoded-content-length is not a number")),
        _ => Err(AuthError::malformed(
            "a signed aws-chunked upload needs one x-amz-decoded-content-length header",
        )),
    }
}

/// The signed headers, minus [`DROPPED_HEADERS`] (and the chunk framing when airlock
/// forwards the decoded body). Unsigned headers are never forwarded.
pub(crate) fn signed_headers(
    all: &HeaderMap,
    signed: &[String],
    decoded_chunks: bool,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in signed {
        if DROPPED_HEADERS.contains(&name.as_str())
            || (decoded_chunks && CHUNK_FRAMING_HEADERS.contains(&name.as_str()))
        {
            continue;
        }
        let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in all.get_all(&header) {
            if decoded_chunks && header == http::header::CONTENT_ENCODING {
                // Drop the aws-chunked coding; keep any other (e.g. gzip of the object itself).
                let rest: Vec<&str> = value
                    .to_str()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.eq_ignore_ascii_case("aws-chunked") && !c.is_empty())
                    .collect();
                if let Ok(v) = rest.join(",").parse() {
                    if !rest.is_empty() {
                        out.append(header.clone(), v);
                    }
                }
                continue;
            }
            out.append(header.clone(), value.clone());
        }
    }
    out
}

/// The key for an agent and scope, derived once per day, region and service.
pub fn derive_key(agent: &Agent, scope: &Scope) -> SigningKey {
    SigningKey::derive(agent.secret.expose(), scope)
}
