//! The canonical request, rebuilt from what was received (the server's side of SigV4).
//!
//! Two URI rules exist, and which one applies is the service's, not the client's, choice:
//! S3 signs the path encoded once and never normalised (`a/../b` is a key); every other
//! service signs the path normalised and then encoded a second time. airlock also returns
//! the form of the path it will forward, so that what it verified, what it classifies and
//! what it sends upstream are the same bytes. Pure code: no I/O.

use super::AuthError;
use http::HeaderMap;

/// RFC 3986 unreserved characters pass; everything else is `%XX` (upper-case hex).
fn push_encoded(out: &mut String, bytes: &[u8], keep_slash: bool) {
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
}

/// Percent-encodes per SigV4 (RFC 3986 unreserved kept).
pub fn encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len() * 3 / 2);
    push_encoded(&mut out, bytes, keep_slash);
    out
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is an error, not a literal.
/// With `plus_is_space`, `+` decodes to a space (query strings, as AWS reads them).
pub fn decode(input: &str, plus_is_space: bool) -> Result<Vec<u8>, AuthError> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad_escape)?;
                let s = std::str::from_utf8(hex).map_err(|_| bad_escape())?;
                out.push(u8::from_str_radix(s, 16).map_err(|_| bad_escape())?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn bad_escape() -> AuthError {
    AuthError::malformed("the URL has a '%' that is not followed by two hex digits")
}

/// Splits a raw query string into decoded pairs, in order. `a` and `a=` both give `("a", "")`.
pub fn query_pairs(raw: &str) -> Result<Vec<(String, String)>, AuthError> {
    let mut pairs = Vec::new();
    if raw.is_empty() {
        return Ok(pairs);
    }
    // An empty segment (`a=1&&b=2`) is an empty pair: botocore signs it as `=`.
    for part in raw.split('&') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = String::from_utf8(decode(k, true)?)
            .map_err(|_| AuthError::malformed("query parameter name is not UTF-8"))?;
        let v = String::from_utf8(decode(v, true)?)
            .map_err(|_| AuthError::malformed("query parameter value is not UTF-8"))?;
        pairs.push((k, v));
    }
    Ok(pairs)
}

/// The canonical query string: each name and value encoded strictly, sorted by name then value.
/// `skip` names parameters left out (the presigned `X-Amz-Signature`).
pub fn canonical_query(pairs: &[(String, String)], skip: Option<&str>) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .map(|(k, v)| (encode(k.as_bytes(), false), encode(v.as_bytes(), false)))
        .collect();
    encoded.sort();
    let mut out = String::new();
    for (i, (k, v)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Encodes decoded pairs back into a query string for forwarding (same strict encoding).
/// Empty pairs carry nothing and are left out.
pub fn encode_query(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs
        .iter()
        .filter(|(k, v)| !(k.is_empty() && v.is_empty()))
    {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&encode(k.as_bytes(), false));
        out.push('=');
        out.push_str(&encode(v.as_bytes(), false));
    }
    out
}

/// The path as airlock will forward it, and its canonical form for the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    pub forward: String,
    pub canonical: String,
}

/// S3: the path exactly as sent (checked for well-formed escapes), encoded once by the
/// client and never normalised: `..`, `//` and `%2F` are all part of a key.
pub fn s3_path(raw: &str) -> Result<CanonicalPath, AuthError> {
    let raw = if raw.is_empty() { "/" } else { raw };
    if !raw.starts_with('/') {
        return Err(AuthError::malformed("the request path must start with '/'"));
    }
    decode(raw, false)?;
    Ok(CanonicalPath {
        canonical: raw.to_string(),
        forward: raw.to_string(),
    })
}

/// Every other service: normalise the path as sent (dot segments removed, empty segments
/// collapsed, a trailing slash kept), forward that, and sign it encoded once more.
pub fn normalized_path(raw: &str) -> Result<CanonicalPath, AuthError> {
    let raw = if raw.is_empty() { "/" } else { raw };
    if !raw.starts_with('/') {
        return Err(AuthError::malformed("the request path must start with '/'"));
    }
    decode(raw, false)?; // reject malformed escapes before anything else reads the path
    let mut segments: Vec<&str> = Vec::new();
    for segment in raw.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut forward = String::with_capacity(raw.len());
    for s in &segments {
        forward.push('/');
        forward.push_str(s);
    }
    // As botocore (and so AWS) does it: a trailing slash survives only when the path ends
    // in one and something is left.
    if forward.is_empty() || raw.ends_with('/') {
        forward.push('/');
    }
    let canonical = encode(forward.as_bytes(), true);
    Ok(CanonicalPath { forward, canonical })
}

/// Header names whose duplicates make a request ambiguous rather than merely long.
const SINGLE_VALUED: &[&str] = &[
    "host",
    "authorization",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "x-amz-target",
    "content-type",
    "content-length",
    "content-encoding",
    "x-amz-decoded-content-length",
    "transfer-encoding",
];

/// Appends a header value as SigV4 canonicalises it: trimmed, inner runs of spaces collapsed.
pub fn push_normalized(out: &mut String, value: &str) {
    for (i, word) in value.split_ascii_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
}

/// The canonical headers block (`name:value\n` for each signed header) and the signed-headers line.
/// `host` is the request's authority (Host header, or `:authority` in h2).
pub fn canonical_headers(
    headers: &HeaderMap,
    host: &str,
    signed: &[String],
) -> Result<String, AuthError> {
    let mut out = String::with_capacity(signed.len() * 48 + host.len());
    for name in signed {
        out.push_str(name);
        out.push(':');
        if name == "host" {
            push_normalized(&mut out, host);
        } else {
            let values = headers.get_all(name.as_str());
            if values.iter().nth(1).is_some() && SINGLE_VALUED.contains(&name.as_str()) {
                return Err(AuthError::malformed(format!(
                    "the header {name} appears more than once"
                )));
            }
            let mut count = 0;
            for value in values.iter() {
                if count > 0 {
                    out.push(',');
                }
                let value = std::str::from_utf8(value.as_bytes())
                    .map_err(|_| AuthError::malformed("a signed header value is not UTF-8"))?;
                push_normalized(&mut out, value);
                count += 1;
            }
            if count == 0 {
                return Err(AuthError::malformed(format!(
                    "the signed header {name} is not in the request"
                )));
            }
        }
        out.push('\n');
    }
    Ok(out)
}

/// Assembles the canonical request.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    canonical_headers: &str,
    signed_headers: &[String],
    payload_hash: &str,
) -> String {
    let parts = [method, canonical_uri, canonical_query, canonical_headers];
    let size = parts.iter().map(|p| p.len() + 1).sum::<usize>()
        + signed_headers.iter().map(|h| h.len() + 1).sum::<usize>()
        + payload_hash.len();
    let mut out = String::with_capacity(size);
    for part in parts {
        out.push_str(part);
        out.push('\n');
    }
    for (i, h) in signed_headers.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(h);
    }
    out.push('\n');
    out.push_str(payload_hash);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_paths_are_encoded_once_and_never_normalised() {
        let p = s3_path("/bucket/a%20b/../c//d+e%2b").unwrap();
        assert_eq!(p.forward, "/bucket/a%20b/../c//d+e%2b");
        assert_eq!(p.canonical, p.forward);
        assert!(s3_path("/b/%zz").is_err());
        assert!(s3_path("/b/%4").is_err());
    }

    #[test]
    fn other_paths_are_normalised_and_encoded_twice() {
        let p = normalized_path("/2015-03-31/functions/my%20fn/./x/../invocations").unwrap();
        assert_eq!(p.forward, "/2015-03-31/functions/my%20fn/invocations");
        assert_eq!(p.canonical, "/2015-03-31/functions/my%2520fn/invocations");
        assert_eq!(normalized_path("").unwrap().forward, "/");
        assert_eq!(normalized_path("//a//b/").unwrap().forward, "/a/b/");
        assert_eq!(normalized_path("/a/..").unwrap().forward, "/");
        assert_eq!(normalized_path("/a/b/..").unwrap().forward, "/a");
        assert_eq!(normalized_path("/a/./").unwrap().forward, "/a/");
        assert_eq!(normalized_path("/../../a").unwrap().forward, "/a");
    }

    #[test]
    fn query_is_decoded_then_strictly_encoded_and_sorted() {
        let pairs = query_pairs("b=2&a=1&a=0&acl&c=x+y&d=%2B&e=").unwrap();
        assert_eq!(
            canonical_query(&pairs, None),
            "a=0&a=1&acl=&b=2&c=x%20y&d=%2B&e="
        );
        assert!(query_pairs("a=%G1").is_err());
        assert_eq!(
            canonical_query(
                &query_pairs("X-Amz-Signature=ab&z=1").unwrap(),
                Some("X-Amz-Signature")
            ),
            "z=1"
        );
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-meta-note", "  a   b  c ".parse().unwrap());
        h.append("x-amz-meta-list", "1".parse().unwrap());
        h.append("x-amz-meta-list", " 2 ".parse().unwrap());
        let signed = vec![
            "host".to_string(),
            "x-amz-meta-list".to_string(),
            "x-amz-meta-note".to_string(),
        ];
        assert_eq!(
            canonical_headers(&h, "localhost:8443", &signed).unwrap(),
            "host:localhost:8443\nx-amz-meta-list:1,2\nx-amz-meta-note:a b c\n"
        );
        h.append("x-amz-date", "20260226T120000Z".parse().unwrap());
        h.append("x-amz-date", "20260226T120001Z".parse().unwrap());
        let signed = vec!["host".to_string(), "x-amz-date".to_string()];
        assert!(canonical_headers(&h, "h", &signed).is_err());
        let missing = vec!["host".to_string(), "x-amz-missing".to_string()];
        assert!(canonical_headers(&h, "h", &missing).is_err());
    }
}
