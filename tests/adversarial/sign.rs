//! A SigV4 signer written for the adversarial suite, independent of airlock's verifier.
//!
//! It signs exactly what it is given: the path and query as they go on the wire, the
//! headers by name, and a payload hash. That lets a test sign one thing and send another,
//! which is the whole point of an adversarial suite.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn amz_date(t: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `kSigning` for a secret and a scope.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// RFC 3986 unreserved characters kept, everything else `%XX` (upper-case).
pub fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` decoding; `+` is a space when `plus` (query strings).
pub fn uri_decode(s: &str, plus: bool) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        if plus && b[i] == b'+' {
            out.push(b' ');
        } else {
            out.push(b[i]);
        }
        i += 1;
    }
    out
}

/// Canonical URI: S3 signs the path as sent; every other service signs it with dot
/// segments removed and empty segments collapsed, encoded once more.
pub fn canonical_uri(raw_path: &str, s3: bool) -> String {
    let raw = if raw_path.is_empty() { "/" } else { raw_path };
    if s3 {
        return raw.to_string();
    }
    let mut segs: Vec<&str> = Vec::new();
    for s in raw.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut path = String::new();
    for s in &segs {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() || raw.ends_with('/') {
        path.push('/');
    }
    uri_encode(path.as_bytes(), true)
}

pub fn canonical_query(raw: &str, skip: Option<&str>) -> String {
    if raw.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = raw
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&uri_decode(k, true), false),
                uri_encode(&uri_decode(v, true), false),
            )
        })
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn collapse(v: &str) -> String {
    v.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// What one signature covers.
pub struct Signing<'a> {
    pub access_key: &'a str,
    pub secret: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// Every header as it will be sent (names in any case).
    pub headers: &'a [(String, String)],
    /// The names (lower case) to sign; `host` must be among them.
    pub signed: &'a [String],
    pub payload_hash: &'a str,
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    /// Presigned: leave `X-Amz-Signature` out of the canonical query.
    pub presigned: bool,
}

impl Signing<'_> {
    pub fn canonical_request(&self) -> String {
        let s3 = self.service == "s3";
        let mut signed: Vec<String> = self.signed.to_vec();
        signed.sort();
        signed.dedup();
        let mut canon_headers = String::new();
        for name in &signed {
            let values: Vec<String> = self
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| collapse(v))
                .collect();
            canon_headers.push_str(&format!("{name}:{}\n", values.join(",")));
        }
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.method,
            canonical_uri(self.path, s3),
            canonical_query(
                self.query,
                if self.presigned {
                    Some("X-Amz-Signature")
                } else {
                    None
                }
            ),
            canon_headers,
            signed.join(";"),
            self.payload_hash
        )
    }

    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            &self.date[..8],
            self.region,
            self.service
        )
    }

    pub fn key(&self) -> [u8; 32] {
        signing_key(self.secret, &self.date[..8], self.region, self.service)
    }

    pub fn signature(&self) -> String {
        let sts = format!(
            "AWS4-HMAC-SHA256\n{}\n{}\n{}",
            self.date,
            self.scope(),
            sha256_hex(self.canonical_request().as_bytes())
        );
        hex::encode(hmac(&self.key(), sts.as_bytes()))
    }

    pub fn authorization(&self) -> String {
        let mut signed: Vec<String> = self.signed.to_vec();
        signed.sort();
        signed.dedup();
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={}",
            self.access_key,
            self.scope(),
            signed.join(";"),
            self.signature()
        )
    }
}

/// The signature of one aws-chunked chunk, chained on `previous`.
pub fn chunk_signature(
    key: &[u8; 32],
    date: &str,
    scope: &str,
    previous: &str,
    chunk: &[u8],
) -> String {
    let sts = format!(
        "AWS4-HMAC-SHA256-PAYLOAD\n{date}\n{scope}\n{previous}\n{EMPTY_SHA256}\n{}",
        sha256_hex(chunk)
    );
    hex::encode(hmac(key, sts.as_bytes()))
}

/// Signed aws-chunked framing of `chunks` (the final empty chunk added), one piece per
/// chunk, starting from the request's own signature. `tamper(i, sig)` may change chunk
/// `i`'s signature as sent.
pub fn signed_chunks(
    key: &[u8; 32],
    date: &str,
    scope: &str,
    seed: &str,
    chunks: &[Vec<u8>],
    tamper: impl Fn(usize, String) -> String,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut previous = seed.to_string();
    let mut all: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    all.push(&[]);
    for (i, c) in all.iter().enumerate() {
        let sig = chunk_signature(key, date, scope, &previous, c);
        previous = sig.clone();
        let sent = tamper(i, sig);
        let mut piece = format!("{:x};chunk-signature={sent}\r\n", c.len()).into_bytes();
        piece.extend_from_slice(c);
        piece.extend_from_slice(b"\r\n");
        out.push(piece);
    }
    out
}
