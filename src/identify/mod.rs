//! Which AWS call a verified request is: the pure core of the identify phase
//! (`proxy::identify`). Pure code (no I/O).
//!
//! The answer comes from AWS's own models (`data/aws-model.json`) and from exactly the bytes
//! airlock forwards: the path as forwarded, the decoded query pairs, the signed headers and
//! the buffered body. Whatever could be read two ways is refused, never guessed
//! (ARCHITECTURE.md, "Threat model", item 4).
//!
//! # How a request is read
//!
//! The signing name from the credential scope names a *family* of services (`rds` is RDS,
//! DocumentDB and Neptune; `s3` is S3 and S3 Control). The request's shape then says which
//! protocol it speaks, and only that protocol's reader runs:
//!
//! | shape | protocol | reader |
//! |---|---|---|
//! | `smithy-protocol` header | `smithy-rpc-v2-cbor` | [`rpc`] |
//! | `X-Amz-Target` header | `json` | [`rpc`] |
//! | neither | `query` / `ec2` and the REST protocols of the family | [`query`], [`rest`] |
//!
//! When a family has both query and REST services (SES), both readers run and a request
//! that both accept is refused. Services of one family that define the very same call
//! (same operation name, same wire form: docdb's and rds's `DeleteDBInstance`) cannot be
//! told apart by any byte of the request; the service named like the signing name wins,
//! otherwise the first by name (`pick_same_call`). The action, resources and parameters
//! are the same either way.
//!
//! - [`call`]: the result, [`AwsCall`].
//! - [`query`]: `query` and `ec2` (form bodies, `Action`).
//! - [`rpc`]: `json` (`X-Amz-Target`) and `smithy-rpc-v2-cbor`.
//! - [`rest`]: `rest-json` and `rest-xml`: URI templates, query keys, headers.
//! - [`s3`]: S3's addressing (path-style, virtual-hosted, S3 Control) and `DeleteObjects`.
//! - [`body`]: strict JSON, CBOR and XML readers (duplicate keys, DOCTYPE refused).
//! - [`resources`]: resource members and their ARNs.

pub mod body;
pub mod call;
pub mod query;
pub mod resources;
pub mod rest;
pub mod rpc;
pub mod s3;

pub use call::{AwsCall, Resource};
pub use s3::{s3_needs_body, virtual_host_bucket};

use crate::aws::model::{model, Service};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::OnceLock;

/// A verified request, as identification sees it.
pub struct Request<'a> {
    /// From the credential scope.
    pub signing_name: &'a str,
    pub region: &'a str,
    pub method: &'a str,
    /// The path exactly as airlock forwards it (normalised for non-S3; S3 as sent), still
    /// percent-encoded.
    pub path: &'a str,
    /// Decoded query pairs as forwarded (presign parameters removed).
    pub query: &'a [(String, String)],
    /// The signed headers being forwarded.
    pub headers: &'a http::HeaderMap,
    /// The Host the client addressed (S3 virtual-hosted: `bucket.localhost:8443`).
    pub host: &'a str,
    /// The whole body when it was buffered; `None` when it is streamed.
    pub body: Option<&'a [u8]>,
    /// The account of the real credentials, for ARNs.
    pub account: Option<&'a str>,
}

/// Does identification read this request's body? Every non-S3 body (its signature covers
/// it, and the call's parameters are in it), and the few S3 bodies that say what a call acts
/// on ([`s3_needs_body`]); other S3 bodies stream past unread. The gate buffers exactly the
/// bodies this names, and `airlock explain` shows identification only those, so the two
/// never read a request differently.
pub fn reads_body(signing_name: &str, method: &str, query: &[(String, String)]) -> bool {
    !crate::sigv4::uses_s3_rules(signing_name) || s3_needs_body(method, query)
}

/// Why a request is not identified. `code` is AWS-style, for the error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyError {
    pub code: &'static str,
    pub message: String,
}

impl IdentifyError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        IdentifyError {
            code,
            message: message.into(),
        }
    }

    /// The request can be read more than one way, or is malformed for its protocol.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidRequest", message)
    }
}

impl fmt::Display for IdentifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for IdentifyError {}

/// Identifies the AWS call a verified request is. Never returns an "unknown" call: a
/// request that matches no operation of its service, or more than one, is an error.
pub fn identify(req: &Request<'_>) -> Result<AwsCall, IdentifyError> {
    let family = family_name(req.signing_name);
    let services = family_services(family);
    if services.is_empty() {
        return Err(IdentifyError::invalid(format!(
            "airlock does not know the AWS service that signs as {:?}",
            req.signing_name
        )));
    }
    // A body airlock reads must be the bytes the service reads: no content coding that
    // would make them differ (S3 object bodies are never read here).
    if let Some(coding) = single_header(req.headers, "content-encoding")? {
        let readable = coding.split(',').map(str::trim).all(|c| {
            c.eq_ignore_ascii_case("identity")
                || (family == "s3" && c.eq_ignore_ascii_case("aws-chunked"))
        });
        if !readable && family != "s3" {
            return Err(IdentifyError::invalid(format!(
                "airlock reads this request's body to identify it and does not accept Content-Encoding {coding:?}; send it uncompressed"
            )));
        }
    }
    let smithy = single_header(req.headers, "smithy-protocol")?;
    let target = single_header(req.headers, "x-amz-target")?;
    let found = match (smithy, target) {
        (Some(_), Some(_)) => {
            return Err(IdentifyError::invalid(
                "the request carries both smithy-protocol and X-Amz-Target",
            ))
        }
        (Some(protocol), None) => rpc::identify_cbor(req, services, protocol)?,
        (None, Some(target)) => rpc::identify_json(req, services, target)?,
        (None, None) => identify_plain(req, services)?,
    };
    Ok(found.into_call(req))
}

/// Neither header: a query-protocol or a REST request, depending on the family.
fn identify_plain(req: &Request<'_>, services: &[Candidate]) -> Result<Found, IdentifyError> {
    let speaks = |c: &&Candidate, protocols: &[&str]| {
        c.service
            .protocols
            .iter()
            .any(|p| protocols.contains(&p.as_str()))
    };
    let query: Vec<Candidate> = services
        .iter()
        .filter(|c| speaks(c, &["query", "ec2"]))
        .copied()
        .collect();
    let rest: Vec<Candidate> = services
        .iter()
        .filter(|c| speaks(c, &["rest-json", "rest-xml"]))
        .copied()
        .collect();
    match (query.is_empty(), rest.is_empty()) {
        (true, true) => Err(IdentifyError::new(
            "UnknownOperationException",
            format!(
                "requests to {} must name their operation in an X-Amz-Target header",
                services[0].name
            ),
        )),
        (false, true) => query::identify(req, &query),
        (true, false) => rest::identify(req, &rest),
        (false, false) => {
            let as_query = query::identify(req, &query);
            let as_rest = rest::identify(req, &rest);
            match (as_query, as_rest) {
                (Ok(q), Ok(r)) => Err(IdentifyError::invalid(format!(
                    "the request reads both as {}:{} and as {}:{}",
                    q.service, q.operation, r.service, r.operation
                ))),
                (Ok(q), Err(_)) => Ok(q),
                (Err(_), Ok(r)) => Ok(r),
                (Err(q), Err(r)) => Err(if query::looks_like_query(req) { q } else { r }),
            }
        }
    }
}

/// The services of the model that sign as `family`, in the model's order: found once per
/// process (every call used to look through every service of the model).
fn family_services(family: &str) -> &'static [Candidate] {
    static BY_FAMILY: OnceLock<HashMap<&'static str, Vec<Candidate>>> = OnceLock::new();
    BY_FAMILY
        .get_or_init(|| {
            let mut by_family: HashMap<&'static str, Vec<Candidate>> = HashMap::new();
            for (name, service) in &model().services {
                by_family
                    .entry(service.signing_name.as_str())
                    .or_default()
                    .push(Candidate {
                        name: name.as_str(),
                        service,
                    });
            }
            by_family
        })
        .get(family)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The family a signing name belongs to: S3 Express (`s3express`) and S3 Object Lambda
/// (`s3-object-lambda`) sign S3 operations under names of their own.
fn family_name(signing_name: &str) -> &str {
    match signing_name {
        "s3express" | "s3-object-lambda" => "s3",
        other => other,
    }
}

/// A service of the signing family.
#[derive(Clone, Copy)]
pub(crate) struct Candidate {
    pub name: &'static str,
    pub service: &'static Service,
}

/// An identified operation, before resources get their ARNs.
pub(crate) struct Found {
    pub service: &'static str,
    pub operation: &'static str,
    pub params: BTreeMap<String, String>,
    /// `(member key, wire name, value)` of every resource, in model order.
    pub resources: Vec<(String, String, String)>,
}

impl Found {
    fn into_call(self, req: &Request<'_>) -> AwsCall {
        let ctx = resources::ArnContext::new(self.service, req.region, req.account);
        let resources = resources::with_arns(&ctx, self.resources);
        AwsCall {
            service: self.service.to_string(),
            signing_name: req.signing_name.to_string(),
            operation: self.operation.to_string(),
            region: req.region.to_string(),
            account: req.account.map(str::to_string),
            resources,
            params: self.params,
        }
    }
}

/// Among services of one family that define the same operation with the same wire form
/// (so that no byte of the request tells them apart), the one named like the signing
/// name, otherwise the first by name. `names` is never empty.
pub(crate) fn pick_same_call<'a>(family: &str, names: &[&'a str]) -> &'a str {
    names
        .iter()
        .copied()
        .find(|n| *n == family)
        .or_else(|| names.iter().copied().min())
        .unwrap_or_default()
}

/// The value of a header that must not repeat; `None` when absent.
pub(crate) fn single_header<'h>(
    headers: &'h http::HeaderMap,
    name: &str,
) -> Result<Option<&'h str>, IdentifyError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(IdentifyError::invalid(format!(
            "the {name} header is sent more than once"
        )));
    }
    first
        .to_str()
        .map(|v| Some(v.trim()))
        .map_err(|_| IdentifyError::invalid(format!("the {name} header is not ASCII text")))
}

/// A media type, lower-cased, and its parameters (`charset=utf-8`).
pub(crate) type MediaType = (String, Vec<(String, String)>);

/// The media type of `Content-Type`, lower-cased, and its parameters.
pub(crate) fn content_type(headers: &http::HeaderMap) -> Result<Option<MediaType>, IdentifyError> {
    let Some(value) = single_header(headers, "content-type")? else {
        return Ok(None);
    };
    let mut parts = value.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_ascii_lowercase(),
            )
        })
        .collect();
    Ok(Some((mime, params)))
}

#[cfg(test)]
mod tests;
