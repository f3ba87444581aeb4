//! Parsing what a SigV4 request claims: the `Authorization` header or the presigned
//! query parameters. Strict by design: every component exactly once, nothing unknown,
//! nothing guessed. Pure code: no I/O.

use super::{AuthError, Scope};

/// The only algorithm airlock verifies. SigV4a (ECDSA) and SigV2 are refused.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// What a request claims about its signature, from either location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub access_key_id: String,
    pub scope: Scope,
    /// Lower-case, sorted, unique header names.
    pub signed_headers: Vec<String>,
    pub signature: [u8; 32],
    pub presigned: Option<Presigned>,
}

/// The extra fields of a presigned (query-string) signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    /// `X-Amz-Date`, basic ISO 8601 (`20260226T120000Z`).
    pub amz_date: String,
    /// `X-Amz-Expires`, seconds; 1 ..= 604800.
    pub expires: u64,
    pub security_token: Option<String>,
}

/// Longest validity AWS allows for a presigned URL: seven days.
pub const MAX_PRESIGN_EXPIRES: u64 = 7 * 24 * 3600;

/// Parses an `Authorization` header value.
pub fn parse_authorization(value: &str) -> Result<Claim, AuthError> {
    let (algorithm, rest) = value
        .split_once(' ')
        .ok_or_else(|| AuthError::incomplete("Authorization header has no algorithm"))?;
    check_algorithm(algorithm)?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim_matches(' ');
        let (key, val) = part.split_once('=').ok_or_else(|| {
            AuthError::incomplete(format!("Authorization component without '=': {part:?}"))
        })?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            other => {
                return Err(AuthError::incomplete(format!(
                    "unknown Authorization component {other:?}"
                )))
            }
        };
        if slot.replace(val).is_some() {
            return Err(AuthError::incomplete(format!(
                "Authorization component {key} appears twice"
            )));
        }
    }
    let credential =
        credential.ok_or_else(|| AuthError::incomplete("Authorization lacks Credential"))?;
    let signed =
        signed.ok_or_else(|| AuthError::incomplete("Authorization lacks SignedHeaders"))?;
    let signature =
        signature.ok_or_else(|| AuthError::incomplete("Authorization lacks Signature"))?;
    let (access_key_id, scope) = parse_credential(credential)?;
    Ok(Claim {
        access_key_id,
        scope,
        signed_headers: parse_signed_headers(signed)?,
        signature: parse_signature(signature)?,
        presigned: None,
    })
}

/// The presigning query parameters (removed from what is forwarded).
pub const PRESIGN_PARAMS: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// Parses presigned-URL parameters from already-decoded query pairs.
/// Returns `Ok(None)` when the query carries no `X-Amz-Signature`/`X-Amz-Algorithm`.
pub fn parse_presigned(pairs: &[(String, String)]) -> Result<Option<Claim>, AuthError> {
    let names = PRESIGN_PARAMS;
    let mut found: [Option<&str>; 7] = [None; 7];
    for (k, v) in pairs {
        if let Some(i) = names.iter().position(|n| n == k) {
            if found[i].replace(v.as_str()).is_some() {
                return Err(AuthError::incomplete(format!(
                    "query parameter {k} appears twice"
                )));
            }
        } else if k.eq_ignore_ascii_case("X-Amz-Signature")
            || k.eq_ignore_ascii_case("X-Amz-Credential")
        {
            // A differently-cased twin of a signing parameter is ambiguity, not a new name.
            return Err(AuthError::incomplete(format!(
                "query parameter {k} is not spelled as AWS spells it"
            )));
        }
    }
    let [algorithm, credential, date, expires, signed, signature, token] = found;
    if algorithm.is_none() && signature.is_none() && credential.is_none() {
        return Ok(None);
    }
    fn need<'a>(v: Option<&'a str>, name: &str) -> Result<&'a str, AuthError> {
        v.ok_or_else(|| AuthError::incomplete(format!("presigned URL lacks {name}")))
    }
    check_algorithm(need(algorithm, "X-Amz-Algorithm")?)?;
    let (access_key_id, scope) = parse_credential(need(credential, "X-Amz-Credential")?)?;
    let amz_date = need(date, "X-Amz-Date")?;
    super::time::parse_amz_date(amz_date)?;
    let expires_raw = need(expires, "X-Amz-Expires")?;
    let expires: u64 = match expires_raw.parse() {
        Ok(n) if expires_raw.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => {
            return Err(AuthError::incomplete(
                "X-Amz-Expires must be a number of seconds",
            ))
        }
    };
    if expires == 0 || expires > MAX_PRESIGN_EXPIRES {
        return Err(AuthError::incomplete(
            "X-Amz-Expires must be between 1 and 604800 seconds (seven days)",
        ));
    }
    Ok(Some(Claim {
        access_key_id,
        scope,
        signed_headers: parse_signed_headers(need(signed, "X-Amz-SignedHeaders")?)?,
        signature: parse_signature(need(signature, "X-Amz-Signature")?)?,
        presigned: Some(Presigned {
            amz_date: amz_date.to_string(),
            expires,
            security_token: token.map(str::to_string),
        }),
    }))
}

fn check_algorithm(algorithm: &str) -> Result<(), AuthError> {
    match algorithm {
        ALGORITHM => Ok(()),
        "AWS4-ECDSA-P256-SHA256" => Err(AuthError::unsupported(
            "SigV4a (AWS4-ECDSA-P256-SHA256) is not supported by airlock; sign with SigV4",
        )),
        "AWS" => Err(AuthError::unsupported(super::SIGV2_REFUSED)),
        other => Err(AuthError::incomplete(format!(
            "unsupported algorithm {other:?}; use AWS4-HMAC-SHA256"
        ))),
    }
}

/// `AKID/20260226/us-east-1/rds/aws4_request`
fn parse_credential(value: &str) -> Result<(String, Scope), AuthError> {
    let parts: Vec<&str> = value.split('/').collect();
    let [akid, date, region, service, terminator] = parts.as_slice() else {
        return Err(AuthError::incomplete(
            "Credential must be ACCESS_KEY_ID/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if *terminator != "aws4_request" {
        return Err(AuthError::incomplete(
            "Credential scope must end in aws4_request",
        ));
    }
    let token_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    if !token_ok(akid) {
        return Err(AuthError::incomplete(
            "malformed access key id in Credential",
        ));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::incomplete("Credential date must be YYYYMMDD"));
    }
    if !token_ok(region) || !token_ok(service) {
        return Err(AuthError::incomplete(
            "malformed region or service in Credential",
        ));
    }
    Ok((
        akid.to_string(),
        Scope {
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
        },
    ))
}

fn parse_signed_headers(value: &str) -> Result<Vec<String>, AuthError> {
    let names: Vec<String> = value.split(';').map(str::to_string).collect();
    for name in &names {
        let valid = !name.is_empty()
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
            });
        if !valid {
            return Err(AuthError::incomplete(format!(
                "SignedHeaders has an invalid name {name:?}"
            )));
        }
    }
    if names.windows(2).any(|w| w[0] >= w[1]) {
        return Err(AuthError::incomplete(
            "SignedHeaders must be sorted and unique",
        ));
    }
    if !names.iter().any(|n| n == "host") {
        return Err(AuthError::incomplete("SignedHeaders must include host"));
    }
    Ok(names)
}

fn parse_signature(value: &str) -> Result<[u8; 32], AuthError> {
    let mut out = [0u8; 32];
    if value.len() != 64
        || !value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(AuthError::incomplete(
            "Signature must be 64 lower-case hex digits",
        ));
    }
    hex::decode_to_slice(value, &mut out)
        .map_err(|_| AuthError::incomplete("Signature must be 64 lower-case hex digits"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "AWS4-HMAC-SHA256 Credential=AIRLOCKTESTAGENT0001/20260226/us-east-1/rds/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_a_well_formed_header() {
        let c = parse_authorization(GOOD).unwrap();
        assert_eq!(c.access_key_id, "AIRLOCKTESTAGENT0001");
        assert_eq!(c.scope.service, "rds");
        assert_eq!(c.scope.region, "us-east-1");
        assert_eq!(c.signed_headers, ["content-type", "host", "x-amz-date"]);
    }

    #[test]
    fn accepts_components_without_spaces() {
        let compact = GOOD.replace(", ", ",");
        assert!(parse_authorization(&compact).is_ok());
    }

    #[test]
    fn refuses_malformed_headers() {
        let cases = [
            GOOD.replace("SignedHeaders=", "SignedHeaders=host;host;"),
            GOOD.replace("content-type;host", "host;content-type"),
            GOOD.replace("aws4_request", "aws4_requesx"),
            GOOD.replace("Signature=0123", "Signature=O123"),
            GOOD.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
            format!("{GOOD}, Signature=00"),
            format!("{GOOD}, Extra=1"),
            GOOD.replace("content-type;host;x-amz-date", "content-type;x-amz-date"),
            GOOD.replace("/20260226/", "/2026022/"),
            "AWS AKID:sig".to_string(),
            String::new(),
        ];
        for case in cases {
            assert!(parse_authorization(&case).is_err(), "accepted {case:?}");
        }
    }

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn presigned_limits_expiry_to_seven_days() {
        let mut q = vec![
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            (
                "X-Amz-Credential",
                "AKID/20260226/us-east-1/s3/aws4_request",
            ),
            ("X-Amz-Date", "20260226T120000Z"),
            ("X-Amz-Expires", "604800"),
            ("X-Amz-SignedHeaders", "host"),
            (
                "X-Amz-Signature",
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
        ];
        assert!(parse_presigned(&pairs(&q)).unwrap().is_some());
        q[3].1 = "604801";
        assert!(parse_presigned(&pairs(&q)).is_err());
        q[3].1 = "-1";
        assert!(parse_presigned(&pairs(&q)).is_err());
        q[3].1 = "60";
        q.push((
            "X-Amz-Signature",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ));
        assert!(
            parse_presigned(&pairs(&q)).is_err(),
            "duplicate signature accepted"
        );
        assert!(parse_presigned(&pairs(&[("a", "b")])).unwrap().is_none());
    }
}
