//! The REST protocols (`rest-json`, `rest-xml`): an operation is its method, its URI
//! template (`/2015-03-31/functions/{FunctionName}`, `/{Bucket}/{Key+}`), the literal
//! query keys of the template (`?delete`, `?list-type=2`), and its required query keys
//! and headers.
//!
//! Reading the path: split the path as forwarded on `/`, then decode each segment once
//! (`%2F` inside a segment is part of a label's value, as the services read it); a greedy
//! label (`{Key+}`) takes the segments it spans, slashes included. Query keys compare
//! case-sensitively (`?Delete` is not `?delete`).
//!
//! A trailing slash, outside S3: botocore's models write some templates with one (Backup's
//! `PUT /backup/plans/`, Route 53's `POST .../rrset/`) where the JS SDK v3's models write
//! the same operation without, and AWS serves both SDKs. So a path that fits no template
//! is read again with one trailing slash toggled (`/backup/plans` as `/backup/plans/`, and
//! the other way round), never against a template ending in a greedy label. A path that
//! fits a template as sent is read as sent. In S3 the slash belongs to the object key
//! (`dir/`); only `/bucket/` is read as the bucket (`s3.rs`).
//!
//! Choosing among matches, the most specific wins: more literal path segments (and, at the
//! first segment where two templates differ, a literal over a label over a greedy label;
//! when these two measures disagree the call is ambiguous), then more literal query keys,
//! then more required query keys and headers present, then a current operation over a
//! deprecated alias. What is still tied is an error, unless it is the same call defined by
//! several services of the family (`pick_same_call` in `identify`).

use super::body::{flatten_xml, json_object, param_text, strict_xml};
use super::resources::{self, push_value, Raw};
use super::rpc::decode_segment;
use super::{pick_same_call, s3, single_header, Candidate, Found, IdentifyError, Request};
use crate::aws::model::{model, Operation};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    Label(String),
    Greedy(String),
}

/// One operation's route, parsed from its URI template.
struct Route {
    operation: &'static str,
    op: &'static Operation,
    segments: Vec<Seg>,
    /// Literal query keys of the template: `delete` → (`delete`, None); `list-type=2`.
    query: Vec<(String, Option<String>)>,
}

/// A REST service's routes, parsed on first use (once per service, kept for the life of
/// the process): most services are never called, and parsing them all costs tens of MiB.
/// Read without a lock once parsed (each service's slot is its own `OnceLock`).
fn routes(service: &str) -> &'static [Route] {
    static ROUTES: OnceLock<HashMap<&'static str, OnceLock<&'static [Route]>>> = OnceLock::new();
    let slots = ROUTES.get_or_init(|| {
        model()
            .services
            .iter()
            .filter(|(_, svc)| {
                svc.protocols
                    .iter()
                    .any(|p| p == "rest-json" || p == "rest-xml")
            })
            .map(|(name, _)| (name.as_str(), OnceLock::new()))
            .collect()
    });
    let Some(slot) = slots.get(service) else {
        return &[];
    };
    slot.get_or_init(|| {
        let Some(svc) = model().services.get(service) else {
            return &[];
        };
        let parsed: Vec<Route> = svc
            .operations()
            .iter()
            .map(|(operation, op)| parse_route(operation, op))
            .collect();
        Box::leak(parsed.into_boxed_slice())
    })
}

fn parse_route(operation: &'static str, op: &'static Operation) -> Route {
    let (path, query) = op.uri.split_once('?').unwrap_or((op.uri.as_str(), ""));
    let segments = path
        .split('/')
        .skip(1)
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(label) => match label.strip_suffix('+') {
                    Some(greedy) => Seg::Greedy(greedy.to_string()),
                    None => Seg::Label(label.to_string()),
                },
                None => Seg::Literal(s.to_string()),
            },
        )
        .collect();
    let query = query
        .split('&')
        .filter(|q| !q.is_empty())
        .map(|q| match q.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (q.to_string(), None),
        })
        .collect();
    Route {
        operation,
        op,
        segments,
        query,
    }
}

/// A route that fits the request, with what makes it specific.
struct Match<'r> {
    service: &'static str,
    route: &'r Route,
    labels: Vec<(String, String)>,
    literal_count: usize,
    kinds: Vec<u8>,
    query_literals: usize,
    required: usize,
    current: bool,
    /// The operation is served where the signing name points (S3 Express control
    /// operations under `s3express`, the others under `s3`).
    endpoint_fits: bool,
}

impl Match<'_> {
    /// `Some(Greater)` when `self` is more specific; `None` when the measures disagree.
    fn compare(&self, other: &Self) -> Option<Ordering> {
        let by_count = self.literal_count.cmp(&other.literal_count);
        let by_kind = self.kinds.cmp(&other.kinds);
        let path = match (by_count, by_kind) {
            (a, b) if a == b => a,
            (Ordering::Equal, b) => b,
            (a, Ordering::Equal) => a,
            _ => return None,
        };
        Some(
            path.then(self.query_literals.cmp(&other.query_literals))
                .then(self.required.cmp(&other.required))
                .then(if self.service == other.service {
                    // A deprecated alias loses to its replacement; across services,
                    // deprecation says nothing about which call is meant.
                    self.current.cmp(&other.current)
                } else {
                    Ordering::Equal
                })
                .then(self.endpoint_fits.cmp(&other.endpoint_fits)),
        )
    }
}

pub(crate) fn identify(req: &Request<'_>, services: &[Candidate]) -> Result<Found, IdentifyError> {
    let family = super::family_name(req.signing_name);
    let (services, path) = if family == "s3" {
        s3::view(req, services)?
    } else {
        (services.to_vec(), req.path.to_string())
    };
    let raw: Vec<&str> = path.split('/').skip(1).collect();
    if !path.starts_with('/') {
        return Err(IdentifyError::invalid("the request path must start with /"));
    }
    let decoded: Vec<String> = raw
        .iter()
        .map(|s| decode_segment(s))
        .collect::<Result<_, _>>()?;
    let mut matches = fitting(req, &services, &raw, &decoded, false)?;
    if matches.is_empty() && family != "s3" && path.len() > 1 && !path.ends_with("//") {
        // Outside S3, the slash the other SDK family writes (see the module doc).
        let (mut raw, mut decoded) = (raw.clone(), decoded.clone());
        if path.ends_with('/') {
            raw.pop();
            decoded.pop();
        } else {
            raw.push("");
            decoded.push(String::new());
        }
        matches = fitting(req, &services, &raw, &decoded, true)?;
    }
    let chosen = choose(family, matches, req, &path)?;
    build(req, chosen)
}

/// The routes of `services` that fit the request with the path segments `raw` (as sent)
/// and `decoded`; with `slash_toggled`, no route ending in a greedy label (its value would
/// gain or lose the slash).
fn fitting<'r>(
    req: &Request<'_>,
    services: &[Candidate],
    raw: &[&str],
    decoded: &[String],
    slash_toggled: bool,
) -> Result<Vec<Match<'r>>, IdentifyError> {
    let express = req.signing_name == "s3express";
    let mut matches: Vec<Match<'r>> = Vec::new();
    for candidate in services {
        for route in routes(candidate.name) {
            if route.op.method != req.method {
                continue;
            }
            if slash_toggled && matches!(route.segments.last(), Some(Seg::Greedy(_))) {
                continue;
            }
            // The query and header tests first: they allocate nothing, and rule out most
            // of the routes whose path fits (S3's `/{Bucket}/{Key+}?acl`, `?tagging`, ...).
            if !route.query.iter().all(|(k, v)| {
                req.query
                    .iter()
                    .any(|(qk, qv)| qk == k && v.as_ref().is_none_or(|v| v == qv))
            }) {
                continue;
            }
            let op = route.op;
            if !op
                .required_query
                .iter()
                .all(|k| req.query.iter().any(|(qk, _)| qk == k))
            {
                continue;
            }
            if !op
                .required_headers
                .iter()
                .all(|h| req.headers.contains_key(h.as_str()))
            {
                continue;
            }
            let Some(labels) = match_path(&route.segments, raw, decoded)? else {
                continue;
            };
            let kinds: Vec<u8> = route
                .segments
                .iter()
                .map(|s| match s {
                    Seg::Literal(_) => 2,
                    Seg::Label(_) => 1,
                    Seg::Greedy(_) => 0,
                })
                .collect();
            matches.push(Match {
                service: candidate.name,
                route,
                labels,
                literal_count: kinds.iter().filter(|k| **k == 2).count(),
                kinds,
                query_literals: route.query.len(),
                required: op.required_query.len() + op.required_headers.len(),
                current: !op.deprecated,
                endpoint_fits: op
                    .static_context
                    .iter()
                    .any(|c| c == "UseS3ExpressControlEndpoint")
                    == express,
            });
        }
    }
    Ok(matches)
}

/// The most specific match, or an error naming what is tied.
fn choose<'r>(
    family: &str,
    matches: Vec<Match<'r>>,
    req: &Request<'_>,
    path: &str,
) -> Result<Match<'r>, IdentifyError> {
    if matches.is_empty() {
        return Err(IdentifyError::new(
            "UnknownOperationException",
            format!(
                "{} {path} matches no operation of the services that sign as {:?}",
                req.method, req.signing_name
            ),
        ));
    }
    // A match no other match beats; then every match tied with it.
    let beats_or_ties = |i: usize, j: usize| {
        i == j
            || matches!(
                matches[i].compare(&matches[j]),
                Some(Ordering::Greater | Ordering::Equal)
            )
    };
    let top: Vec<usize> = (0..matches.len())
        .filter(|&i| (0..matches.len()).all(|j| beats_or_ties(i, j)))
        .collect();
    let pick = top.first().and_then(|&first| {
        let tied: Vec<usize> = (0..matches.len())
            .filter(|&j| matches[j].compare(&matches[first]) == Some(Ordering::Equal))
            .collect();
        if tied.len() == 1 {
            return Some(first);
        }
        // Tied: acceptable only as the same operation defined by several services of
        // the family, each tied match unbeaten.
        let op = matches[first].route.operation;
        let mut services: Vec<&'static str> = tied.iter().map(|&i| matches[i].service).collect();
        let same = tied
            .iter()
            .all(|&i| matches[i].route.operation == op && top.contains(&i));
        services.sort_unstable();
        let before = services.len();
        services.dedup();
        if !same || services.len() != before {
            return None;
        }
        let name = pick_same_call(family, &services);
        tied.iter().copied().find(|&i| matches[i].service == name)
    });
    match pick {
        Some(i) => Ok(matches
            .into_iter()
            .nth(i)
            .ok_or_else(|| IdentifyError::invalid("internal: the chosen match vanished"))?),
        None => {
            let mut names: Vec<String> = matches
                .iter()
                .map(|m| format!("{}:{}", m.service, m.route.operation))
                .collect();
            names.sort();
            Err(IdentifyError::invalid(format!(
                "{} {path} is ambiguous: it reads as {}",
                req.method,
                names.join(", ")
            )))
        }
    }
}

/// The labels of a template that fits the path, or `None`. `raw` and `decoded` are the
/// path's segments after the leading `/`.
fn match_path(
    template: &[Seg],
    raw: &[&str],
    decoded: &[String],
) -> Result<Option<Vec<(String, String)>>, IdentifyError> {
    let mut labels = Vec::new();
    let greedy_at = template.iter().position(|s| matches!(s, Seg::Greedy(_)));
    let fits = |seg: &Seg, value: &str, labels: &mut Vec<(String, String)>| match seg {
        Seg::Literal(l) => l == value,
        Seg::Label(name) => {
            if value.is_empty() {
                return false;
            }
            labels.push((name.clone(), value.to_string()));
            true
        }
        Seg::Greedy(_) => false,
    };
    match greedy_at {
        None => {
            if template.len() != decoded.len() {
                return Ok(None);
            }
            for (seg, value) in template.iter().zip(decoded) {
                if !fits(seg, value, &mut labels) {
                    return Ok(None);
                }
            }
        }
        Some(g) => {
            let after = template.len() - g - 1;
            if decoded.len() < template.len() {
                return Ok(None);
            }
            let end = decoded.len() - after;
            for (seg, value) in template[..g].iter().zip(&decoded[..g]) {
                if !fits(seg, value, &mut labels) {
                    return Ok(None);
                }
            }
            for (seg, value) in template[g + 1..].iter().zip(&decoded[end..]) {
                if !fits(seg, value, &mut labels) {
                    return Ok(None);
                }
            }
            let value = decode_segment(&raw[g..end].join("/"))?;
            if value.is_empty() {
                return Ok(None);
            }
            if let Seg::Greedy(name) = &template[g] {
                labels.push((name.clone(), value));
            }
        }
    }
    Ok(Some(labels))
}

/// Parameters and resources of the chosen operation.
fn build(req: &Request<'_>, m: Match<'_>) -> Result<Found, IdentifyError> {
    let op = m.route.op;
    let is_s3 = m.service == "s3";
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    let insert = |params: &mut BTreeMap<String, String>, k: String, v: String| {
        if params.contains_key(&k) {
            return Err(IdentifyError::invalid(format!(
                "the parameter {k:?} is given more than once"
            )));
        }
        params.insert(k, v);
        Ok(())
    };
    for (k, v) in &m.labels {
        insert(&mut params, k.clone(), v.clone())?;
    }
    // Query: list members may repeat (numbered from 1); anything else may not.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, v) in req.query {
        if k.is_empty() && v.is_empty() {
            continue;
        }
        if is_s3 && k == "x-id" {
            continue; // S3 ignores it; SDKs add it or not.
        }
        if op.list_query.iter().any(|l| l == k) {
            let n = counts.entry(k.as_str()).or_insert(0);
            *n += 1;
            insert(&mut params, format!("{k}.{n}"), v.clone())?;
        } else {
            insert(&mut params, k.clone(), v.clone())?;
        }
    }
    for header in op.header_members.keys() {
        if let Some(v) = single_header(req.headers, header)? {
            insert(&mut params, header.clone(), v.to_string())?;
        }
    }

    // The body, when it was buffered and is a document (not a blob payload).
    let document = matches!(
        op.payload_type.as_deref(),
        None | Some("structure" | "union")
    );
    let mut object = serde_json::Map::new();
    let mut xml = None;
    if let (Some(body), true) = (req.body, document) {
        if !body.iter().all(u8::is_ascii_whitespace) {
            if model()
                .services
                .get(m.service)
                .is_some_and(|s| s.protocols.iter().any(|p| p == "rest-xml"))
            {
                let root = strict_xml(body)?;
                let mut flat = BTreeMap::new();
                flatten_xml(&root, &mut flat);
                for (k, v) in flat {
                    insert(&mut params, k, v)?;
                }
                xml = Some(root);
            } else {
                object = json_object(body)?;
                for (k, v) in &object {
                    if let Some(text) = param_text(v) {
                        insert(&mut params, k.clone(), text)?;
                    }
                }
            }
        }
    }

    // A text payload (an S3 bucket policy) is a parameter too: the policy reads it.
    if let (Some(body), Some("string"), Some(member)) = (
        req.body,
        op.payload_type.as_deref(),
        op.body_member.as_deref(),
    ) {
        if !body.is_empty() {
            let text = std::str::from_utf8(body).map_err(|_| {
                IdentifyError::invalid(format!("the {member} payload is not UTF-8"))
            })?;
            insert(&mut params, member.to_string(), text.to_string())?;
        }
    }

    let mut raw: Vec<Raw> = Vec::new();
    for name in resources::names(op) {
        if let Some((_, v)) = m.labels.iter().find(|(l, _)| l == name) {
            raw.push((name.clone(), name.clone(), v.clone()));
        } else if op.query_members.contains_key(name) {
            let values: Vec<&String> = req
                .query
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v)
                .collect();
            let numbered = values.len() > 1 || op.list_query.contains(name);
            for (i, v) in values.into_iter().enumerate() {
                let key = if numbered {
                    format!("{name}.{}", i + 1)
                } else {
                    name.clone()
                };
                raw.push((key, name.clone(), v.clone()));
            }
        } else if op.header_members.contains_key(&name.to_ascii_lowercase()) {
            if let Some(v) = single_header(req.headers, &name.to_ascii_lowercase())? {
                raw.push((name.clone(), name.clone(), v.to_string()));
            }
        } else if let Some(v) = object.get(name) {
            // Only where the service reads the member: the body.
            push_value(&mut raw, name, v);
        }
    }
    if is_s3 && m.route.operation == "DeleteObjects" {
        let root = xml.ok_or_else(|| {
            IdentifyError::invalid("DeleteObjects needs its body to name the keys it deletes")
        })?;
        for (i, key) in s3::delete_objects_keys(&root)?.into_iter().enumerate() {
            raw.push((format!("Key.{}", i + 1), "Key".to_string(), key));
        }
    }
    Ok(Found {
        service: m.service,
        operation: m.route.operation,
        params,
        resources: raw,
    })
}
