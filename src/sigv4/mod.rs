//! SigV4 as the server sees it: parse the claim, rebuild the canonical request from the
//! received bytes, recompute the signature with the agent's key, compare in constant time.
//!
//! Pure code (no I/O, no tokio, no hyper): the proxy's `authenticate` phase feeds it the
//! request head and, when the signature covers a body that has no declared hash, the body.
//!
//! - [`parse`]: the `Authorization` header and presigned query parameters.
//! - [`canonical`]: canonical URI, query and headers, per service rules.
//! - [`chunked`]: the `aws-chunked` body framing and its chunk signatures.

pub mod canonical;
pub mod chunked;
pub mod key_cache;
pub mod parse;
pub mod sign;
pub mod time;

use canonical::CanonicalPath;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use parse::Claim;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The credential scope: `date/region/service/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub date: String,
    pub region: String,
    pub service: String,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        key_cache::ScopeRef::from(self).fmt(f)
    }
}

/// Why a request did not authenticate. The proxy turns each kind into the AWS error code
/// of the service's protocol (see `proxy::error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub kind: AuthErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthErrorKind {
    /// No signature at all.
    Missing,
    /// The signature's own fields are malformed (`IncompleteSignature`).
    Incomplete,
    /// SigV2, SigV4a: refused with a hint.
    Unsupported,
    /// The request itself is malformed in a way the signature depends on.
    Malformed,
    /// No such agent, or a revoked one.
    UnknownKey,
    /// A session token that the agent does not hold.
    BadToken,
    /// The recomputed signature differs.
    Mismatch,
    /// Outside the clock-skew window, or past a presigned URL's expiry.
    Expired,
    /// The body does not hash to the declared `x-amz-content-sha256`.
    PayloadMismatch,
}

impl AuthError {
    fn new(kind: AuthErrorKind, message: impl Into<String>) -> Self {
        AuthError {
            kind,
            message: message.into(),
        }
    }
    pub fn missing() -> Self {
        Self::new(
            AuthErrorKind::Missing,
            "Request is missing Authentication Token",
        )
    }
    pub fn incomplete(message: impl Into<String>) -> Self {
        Self::new(AuthErrorKind::Incomplete, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(AuthErrorKind::Unsupported, message)
    }
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(AuthErrorKind::Malformed, message)
    }
    pub fn unknown_key() -> Self {
        Self::new(
            AuthErrorKind::UnknownKey,
            "The security token included in the request is invalid.",
        )
    }
    pub fn bad_token() -> Self {
        Self::new(
            AuthErrorKind::BadToken,
            "The security token included in the request is invalid.",
        )
    }
    pub fn mismatch() -> Self {
        Self::new(
            AuthErrorKind::Mismatch,
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
        )
    }
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(AuthErrorKind::Expired, message)
    }
    pub fn payload_mismatch() -> Self {
        Self::new(
            AuthErrorKind::PayloadMismatch,
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A derived signing key (`kSigning`). Never printed.
#[derive(Clone, Copy)]
pub struct SigningKey([u8; 32]);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl SigningKey {
    /// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`
    pub fn derive(secret: &str, scope: &Scope) -> Self {
        let k_date = hmac(format!("AWS4{secret}").as_bytes(), scope.date.as_bytes());
        let k_region = hmac(&k_date, scope.region.as_bytes());
        let k_service = hmac(&k_region, scope.service.as_bytes());
        SigningKey(hmac(&k_service, b"aws4_request"))
    }

    pub fn sign(&self, string_to_sign: &str) -> [u8; 32] {
        hmac(&self.0, string_to_sign.as_bytes())
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex_lower(&Sha256::digest(data))
}

/// Lower-case hex, by table. A call's digests are hexed about six times on its way through
/// (the payload and canonical-request hashes, both signatures, the audit chain), and the
/// `hex` crate's `encode` builds its string one `char` at a time.
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// `sha256("")`, which chunk strings-to-sign use.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Services that sign paths S3's way (encoded once, not normalised).
pub fn uses_s3_rules(service: &str) -> bool {
    matches!(
        service,
        "s3" | "s3express" | "s3-object-lambda" | "s3-outposts"
    )
}

/// What `x-amz-content-sha256` (or its absence) says about the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadClaim {
    /// A hex SHA-256 of the body: stream it and check at the end.
    Hash([u8; 32]),
    /// `UNSIGNED-PAYLOAD` (and every presigned URL without a hash).
    Unsigned,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: aws-chunked framing, no chunk signatures.
    UnsignedTrailer,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` (`-TRAILER`): every chunk signed.
    SignedChunks { trailer: bool },
    /// No header: the signature covers `sha256(body)`, which the verifier must compute.
    FromBody,
}

impl PayloadClaim {
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        Ok(match value {
            "UNSIGNED-PAYLOAD" => PayloadClaim::Unsigned,
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => PayloadClaim::UnsignedTrailer,
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => PayloadClaim::SignedChunks { trailer: false },
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => {
                PayloadClaim::SignedChunks { trailer: true }
            }
            "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"
            | "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER" => {
                return Err(AuthError::unsupported(
                    "SigV4a streaming payloads are not supported by airlock",
                ))
            }
            hex_hash => {
                let mut out = [0u8; 32];
                let ok = hex_hash.len() == 64
                    && hex_hash
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    && hex::decode_to_slice(hex_hash, &mut out).is_ok();
                if !ok {
                    return Err(AuthError::malformed(
                        "x-amz-content-sha256 must be a lower-case hex SHA-256 or a known payload mode",
                    ));
                }
                PayloadClaim::Hash(out)
            }
        })
    }

    /// The string that stands for the payload in the canonical request, when it is known
    /// without reading the body.
    pub fn canonical(&self) -> Option<String> {
        Some(match self {
            PayloadClaim::Hash(h) => hex_lower(h),
            PayloadClaim::Unsigned => "UNSIGNED-PAYLOAD".into(),
            PayloadClaim::UnsignedTrailer => "STREAMING-UNSIGNED-PAYLOAD-TRAILER".into(),
            PayloadClaim::SignedChunks { trailer: false } => {
                "STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into()
            }
            PayloadClaim::SignedChunks { trailer: true } => {
                "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER".into()
            }
            PayloadClaim::FromBody => return None,
        })
    }
}

/// What airlock says to a SigV2 request (boto3 and the AWS CLI presign S3 URLs in
/// us-east-1 with SigV2 unless told otherwise).
pub const SIGV2_REFUSED: &str = "SigV2 is not supported by airlock; sign with SigV4 (AWS CLI: `aws configure set default.s3.signature_version s3v4`; boto3: Config(signature_version='s3v4'))";

/// The request head as received, before any change.
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// Path exactly as on the wire.
    pub raw_path: &'a str,
    /// Query exactly as on the wire (without the `?`), empty if none.
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
    /// The authority the client addressed (Host, or h2 `:authority`), already checked to agree.
    pub host: &'a str,
}

/// A request whose signature fields parsed and whose canonical form was rebuilt; the
/// signature itself is checked by [`Prepared::check`] once the payload hash is known.
#[derive(Debug)]
pub struct Prepared {
    pub claim: Claim,
    /// `X-Amz-Date` (header or query) or the `Date` header converted to basic format.
    pub amz_date: String,
    pub path: CanonicalPath,
    /// Decoded query pairs as received, presign parameters included.
    pub query: Vec<(String, String)>,
    pub payload: PayloadClaim,
    pub session_token: Option<String>,
    canonical_query: String,
    canonical_headers: String,
    method: String,
}

impl Prepared {
    pub fn from_head(head: &RequestHead<'_>) -> Result<Self, AuthError> {
        let query = canonical::query_pairs(head.raw_query)?;
        let auth_headers: Vec<_> = head
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .collect();
        let presigned = parse::parse_presigned(&query)?;
        let claim = match (auth_headers.as_slice(), presigned) {
            ([], None) if query.iter().any(|(k, _)| k == "AWSAccessKeyId") => {
                return Err(AuthError::unsupported(SIGV2_REFUSED))
            }
            ([], None) => return Err(AuthError::missing()),
            ([value], None) => {
                let value = value
                    .to_str()
                    .map_err(|_| AuthError::incomplete("Authorization header is not ASCII"))?;
                parse::parse_authorization(value)?
            }
            ([], Some(claim)) => claim,
            _ => return Err(AuthError::incomplete(
                "the request carries more than one signature (Authorization header and/or query)",
            )),
        };
        let s3 = uses_s3_rules(&claim.scope.service);
        let path = if s3 {
            canonical::s3_path(head.raw_path)?
        } else {
            canonical::normalized_path(head.raw_path)?
        };

        let single = |name: &str| -> Result<Option<&str>, AuthError> {
            let mut values = head.headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (None, _) => Ok(None),
                (Some(v), None) => v
                    .to_str()
                    .map(Some)
                    .map_err(|_| AuthError::malformed(format!("{name} is not ASCII"))),
                _ => Err(AuthError::malformed(format!(
                    "the header {name} appears more than once"
                ))),
            }
        };

        let (amz_date, session_token, payload, canonical_query) = match &claim.presigned {
            Some(p) => {
                let payload = match single("x-amz-content-sha256")? {
                    Some(v)
                        if claim
                            .signed_headers
                            .iter()
                            .any(|h| h == "x-amz-content-sha256") =>
                    {
                        PayloadClaim::parse(v)?
                    }
                    _ => PayloadClaim::Unsigned,
                };
                if single("x-amz-security-token")?.is_some() {
                    return Err(AuthError::incomplete(
                        "a presigned URL carries its token in the query, not a header",
                    ));
                }
                (
                    p.amz_date.clone(),
                    p.security_token.clone(),
                    payload,
                    canonical::canonical_query(&query, Some("X-Amz-Signature")),
                )
            }
            None => {
                let amz_date = match single("x-amz-date")? {
                    Some(d) => {
                        require_signed(&claim, "x-amz-date")?;
                        d.to_owned()
                    }
                    None => {
                        let d = single("date")?.ok_or_else(|| {
                            AuthError::incomplete("the request has neither X-Amz-Date nor Date")
                        })?;
                        require_signed(&claim, "date")?;
                        time::http_date_to_amz(d)?
                    }
                };
                let token = single("x-amz-security-token")?.map(str::to_owned);
                if token.is_some() {
                    require_signed(&claim, "x-amz-security-token")?;
                }
                let payload = match single("x-amz-content-sha256")? {
                    Some(v) => {
                        if s3 {
                            require_signed(&claim, "x-amz-content-sha256")?;
                        }
                        PayloadClaim::parse(v)?
                    }
                    None if s3 => {
                        return Err(AuthError::incomplete(
                            "S3 requests must carry a signed x-amz-content-sha256 header",
                        ))
                    }
                    None => PayloadClaim::FromBody,
                };
                (
                    amz_date,
                    token,
                    payload,
                    canonical::canonical_query(&query, None),
                )
            }
        };
        time::parse_amz_date(&amz_date)?;
        if amz_date.get(..8) != Some(claim.scope.date.as_str()) {
            return Err(AuthError::malformed(
                "the credential scope date does not match the request date",
            ));
        }
        if matches!(
            payload,
            PayloadClaim::SignedChunks { .. } | PayloadClaim::UnsignedTrailer
        ) && !s3
        {
            return Err(AuthError::unsupported(
                "streaming aws-chunked payloads are only accepted for S3",
            ));
        }
        let canonical_headers =
            canonical::canonical_headers(head.headers, head.host, &claim.signed_headers)?;
        Ok(Prepared {
            claim,
            amz_date,
            path,
            query,
            payload,
            session_token,
            canonical_query,
            canonical_headers,
            method: head.method.to_string(),
        })
    }

    pub fn canonical_request(&self, payload_hash: &str) -> String {
        canonical::canonical_request(
            &self.method,
            &self.path.canonical,
            &self.canonical_query,
            &self.canonical_headers,
            &self.claim.signed_headers,
            payload_hash,
        )
    }

    pub fn string_to_sign(&self, payload_hash: &str) -> String {
        use fmt::Write;
        let hash = sha256_hex(self.canonical_request(payload_hash).as_bytes());
        let mut out = String::with_capacity(160);
        out.push_str("AWS4-HMAC-SHA256\n");
        out.push_str(&self.amz_date);
        out.push('\n');
        // Writing to a String cannot fail.
        let _ = write!(out, "{}", self.claim.scope);
        out.push('\n');
        out.push_str(&hash);
        out
    }

    /// Checks the signature for the given payload hash, in constant time.
    ///
    /// A presigned URL for a service other than S3 has no body (the proxy enforces it), and
    /// signers disagree on how to say so: botocore signs `UNSIGNED-PAYLOAD`, others the hash
    /// of the empty string. Both describe the same empty body, so both are accepted.
    pub fn check(&self, key: &SigningKey, payload_hash: &str) -> Result<(), AuthError> {
        let matches = |hash: &str| {
            bool::from(
                key.sign(&self.string_to_sign(hash))
                    .ct_eq(&self.claim.signature),
            )
        };
        let empty_presigned = self.claim.presigned.is_some()
            && !uses_s3_rules(&self.claim.scope.service)
            && payload_hash == "UNSIGNED-PAYLOAD";
        if matches(payload_hash) || (empty_presigned && matches(EMPTY_SHA256)) {
            Ok(())
        } else {
            Err(AuthError::mismatch())
        }
    }

    /// Clock skew (15 minutes) for header auth; not-before and expiry for presigned URLs.
    pub fn check_time(&self, now: ::time::OffsetDateTime) -> Result<(), AuthError> {
        let signed_at = time::parse_amz_date(&self.amz_date)?;
        let skew = ::time::Duration::minutes(15);
        match &self.claim.presigned {
            None => {
                if (now - signed_at).abs() > skew {
                    return Err(AuthError::expired(format!(
                        "Signature expired: {} is now earlier than {} or later than {} (15 minutes of clock skew are allowed).",
                        self.amz_date,
                        time::format_amz_date(now - skew),
                        time::format_amz_date(now + skew)
                    )));
                }
            }
            Some(p) => {
                if signed_at - now > skew {
                    return Err(AuthError::expired("Request is not yet valid"));
                }
                let expires = i64::try_from(p.expires).unwrap_or(i64::MAX);
                if now >= signed_at + ::time::Duration::seconds(expires) {
                    return Err(AuthError::expired("Request has expired"));
                }
            }
        }
        Ok(())
    }

    /// What of the request is forwarded, handed over: the scope, the path and the query
    /// ([`Self::forwarded_query`]).
    pub fn into_forwarded(self) -> (Scope, String, Vec<(String, String)>) {
        let query = match self.claim.presigned {
            Some(_) => self
                .query
                .into_iter()
                .filter(|(k, _)| !parse::PRESIGN_PARAMS.contains(&k.as_str()))
                .collect(),
            None => self.query,
        };
        (self.claim.scope, self.path.forward, query)
    }

    /// The query as it is forwarded: the presigning parameters of a presigned URL removed.
    pub fn forwarded_query(&self) -> Vec<(String, String)> {
        match self.claim.presigned {
            Some(_) => self
                .query
                .iter()
                .filter(|(k, _)| !parse::PRESIGN_PARAMS.contains(&k.as_str()))
                .cloned()
                .collect(),
            None => self.query.clone(),
        }
    }

    /// The seed signature of a signed-chunk stream is the request's own signature.
    pub fn seed_signature(&self) -> [u8; 32] {
        self.claim.signature
    }
}

fn require_signed(claim: &Claim, header: &str) -> Result<(), AuthError> {
    if claim.signed_headers.iter().any(|h| h == header) {
        Ok(())
    } else {
        Err(AuthError::incomplete(format!(
            "the header {header} must be signed"
        )))
    }
}

#[cfg(test)]
mod tests;
