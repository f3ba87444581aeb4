//! S3's addressing and the one S3 call whose resources are in its body.
//!
//! - **S3 Control** signs as `s3` too; its paths start `/v20180820/`, so such a path is
//!   read against S3 Control only (a path-style bucket named `v20180820` is not readable
//!   through airlock, and the call must be forwarded to S3 Control's endpoint).
//! - **Virtual-hosted** requests name the bucket in the Host. airlock does not know every
//!   name it is reached by, so: an IP address or `localhost[:port]` is path-style,
//!   `x.localhost[:port]` is bucket `x` (the forwarder must send the same bucket on), and
//!   AWS's own S3 names (through the HTTPS_PROXY tunnel) are read by
//!   [`crate::aws::endpoint::s3_host`]: `x.s3.eu-west-1.amazonaws.com` is bucket `x`, and an
//!   access point's name is refused.
//! - **A bucket's path with a trailing slash** (`/bucket/`, `/bucket/?list-type=2`: what the
//!   JS SDK v3 and aws-sdk-rust send for every bucket operation) is the bucket, as S3 reads
//!   it: an object key cannot be empty, so `/bucket/` can name nothing else. It is read as
//!   `/bucket`; the request is still forwarded exactly as signed.
//! - **DeleteObjects** (`POST /{Bucket}?delete`) lists its keys in an XML body, which must
//!   be buffered ([`s3_needs_body`]); each `<Key>` is a resource.

use super::body::Element;
use super::{Candidate, IdentifyError, Request};
use std::net::Ipv4Addr;

/// The bucket a virtual-hosted S3 request addresses through its Host (`x.localhost:8443`
/// → `x`), or `None` for a path-style request.
pub fn virtual_host_bucket(host: &str) -> Option<String> {
    host_bucket(host).ok().flatten()
}

fn host_bucket(host: &str) -> Result<Option<String>, IdentifyError> {
    let host = host.trim().to_ascii_lowercase();
    if host.starts_with('[') {
        return Ok(None); // an IPv6 literal
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host.as_str(),
    };
    if name.parse::<Ipv4Addr>().is_ok() {
        return Ok(None);
    }
    use crate::aws::endpoint::{s3_host, S3Host};
    let bucket = match name.strip_suffix(".localhost") {
        Some(bucket) => bucket.to_string(),
        // Through the HTTPS_PROXY tunnel the Host is AWS's own name.
        None => match s3_host(crate::aws::model(), name) {
            S3Host::Bucket(bucket) => bucket,
            S3Host::NoBucket => return Ok(None),
            S3Host::Unsupported(host) => {
                return Err(IdentifyError::invalid(format!(
                    "airlock does not identify S3 calls addressed to {host:?} (access points, Object Lambda and S3 Express): address the bucket by name"
                )))
            }
        },
    };
    let bucket = bucket.as_str();
    let valid = bucket.len() >= 3
        && bucket.len() <= 63
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !valid {
        return Err(IdentifyError::invalid(format!(
            "the Host {host:?} does not name a valid bucket"
        )));
    }
    Ok(Some(bucket.to_string()))
}

/// Whether an S3 request's body must be buffered (it is small) for identification and the
/// policy: `POST ?delete` (DeleteObjects: the keys), `PUT ?versioning` (suspending),
/// `PUT ?lifecycle` (expirations) and `PUT ?policy` (a policy that locks the owner out). Query keys compare exactly, as S3 reads them.
pub fn s3_needs_body(method: &str, query: &[(String, String)]) -> bool {
    let has = |key: &str| query.iter().any(|(k, _)| k == key);
    match method {
        "POST" => has("delete"),
        "PUT" => has("versioning") || has("lifecycle") || has("policy"),
        _ => false,
    }
}

/// The services to read an `s3`-family request against, and the path to read: S3 Control
/// for `/v20180820/…`, else S3 with a virtual-hosted bucket moved into the path.
pub(crate) fn view(
    req: &Request<'_>,
    services: &[Candidate],
) -> Result<(Vec<Candidate>, String), IdentifyError> {
    let only = |name: &str| -> Vec<Candidate> {
        services
            .iter()
            .filter(|c| c.name == name)
            .copied()
            .collect()
    };
    let control = req.path == "/v20180820" || req.path.starts_with("/v20180820/");
    if control && req.signing_name == "s3" {
        return Ok((only("s3control"), req.path.to_string()));
    }
    // S3 Object Lambda addresses a route, not a bucket, through its Host.
    let bucket = if req.signing_name == "s3-object-lambda" {
        None
    } else {
        host_bucket(req.host)?
    };
    let mut path = match bucket {
        Some(b) if req.path == "/" => format!("/{b}"),
        Some(b) => format!("/{b}{}", req.path),
        None => req.path.to_string(),
    };
    if is_bucket_with_slash(&path) {
        path.pop();
    }
    Ok((only("s3"), path))
}

/// `/bucket/`: one non-empty segment and a trailing slash (an empty key, which S3 reads as
/// the bucket itself).
fn is_bucket_with_slash(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.strip_suffix('/'))
        .is_some_and(|bucket| !bucket.is_empty() && !bucket.contains('/'))
}

/// The keys a DeleteObjects body deletes, in order. The body must be
/// `<Delete><Object><Key>…</Key>[<VersionId>…]</Object>…[<Quiet>…]</Delete>`; every
/// `<Object>` has exactly one non-empty `<Key>`.
pub(crate) fn delete_objects_keys(root: &Element) -> Result<Vec<String>, IdentifyError> {
    let bad = |m: &str| IdentifyError::new("MalformedXML", format!("DeleteObjects: {m}"));
    if root.name != "Delete" {
        return Err(bad("the root element must be <Delete>"));
    }
    let mut keys = Vec::new();
    for child in &root.children {
        match child.name.as_str() {
            "Quiet" if child.children.is_empty() => {}
            "Object" => {
                let mut key = None;
                for field in &child.children {
                    if !field.children.is_empty() {
                        return Err(bad("an <Object> field has elements inside"));
                    }
                    match field.name.as_str() {
                        "Key" => {
                            if key.replace(field.text.clone()).is_some() {
                                return Err(bad("an <Object> has more than one <Key>"));
                            }
                        }
                        "VersionId" | "ETag" | "LastModifiedTime" | "Size" => {}
                        other => return Err(bad(&format!("unexpected <{other}> in <Object>"))),
                    }
                }
                match key {
                    Some(k) if !k.is_empty() => keys.push(k),
                    _ => return Err(bad("an <Object> has no <Key>")),
                }
            }
            other => return Err(bad(&format!("unexpected <{other}> in <Delete>"))),
        }
    }
    if keys.is_empty() {
        return Err(bad("no <Object> to delete"));
    }
    Ok(keys)
}
