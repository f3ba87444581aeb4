//! The `query` and `ec2` protocols: `Action=…&Version=…` in a form body (POST) or the
//! query string (GET).
//!
//! AWS reads parameter names case-sensitively and merges the query string with the form
//! body, so airlock refuses what could be read two ways: `Action` missing, repeated, or in
//! both places; any other repeated name; a body whose content type is not a form (or a
//! form in another charset than UTF-8); a body on a GET; a path other than `/`.

use super::{content_type, pick_same_call, resources, Candidate, Found, IdentifyError, Request};
use std::collections::BTreeMap;

/// Whether the request looks like a query-protocol call (for choosing which error to show
/// when a family has query and REST services and neither reading fits).
pub(crate) fn looks_like_query(req: &Request<'_>) -> bool {
    req.path == "/"
        && (req.query.iter().any(|(k, _)| k == "Action")
            || matches!(content_type(req.headers), Ok(Some((m, _))) if m == FORM))
}

const FORM: &str = "application/x-www-form-urlencoded";

pub(crate) fn identify(req: &Request<'_>, services: &[Candidate]) -> Result<Found, IdentifyError> {
    if req.path != "/" {
        return Err(IdentifyError::invalid(format!(
            "{} requests are sent to the path /, not {:?}",
            services[0].name, req.path
        )));
    }
    let body = form_body(req)?;
    let mut pairs: Vec<(String, String)> = req.query.to_vec();
    let in_query = |name: &str| req.query.iter().filter(|(k, _)| k == name).count();
    let in_body = |name: &str| body.iter().filter(|(k, _)| k == name).count();
    match (in_query("Action"), in_body("Action")) {
        (0, 0) => {
            return Err(IdentifyError::new(
                "MissingAction",
                "the request has no Action parameter",
            ))
        }
        (1, 0) | (0, 1) => {}
        (q, b) if q > 0 && b > 0 => {
            return Err(IdentifyError::invalid(
                "Action is given both in the query string and in the body",
            ))
        }
        _ => return Err(IdentifyError::invalid("Action is given more than once")),
    }
    pairs.extend(body);
    // A key that is `Action` or `Version` in another case is ambiguity, not a new parameter.
    if let Some((k, _)) = pairs.iter().find(|(k, _)| {
        (k.eq_ignore_ascii_case("action") && k != "Action")
            || (k.eq_ignore_ascii_case("version") && k != "Version")
    }) {
        return Err(IdentifyError::invalid(format!(
            "the parameter {k:?} differs from a reserved one only in case"
        )));
    }

    let mut params: BTreeMap<String, String> = BTreeMap::new();
    let mut action = String::new();
    let mut version: Option<String> = None;
    for (k, v) in pairs {
        if k.is_empty() && v.is_empty() {
            continue;
        }
        let slot = match k.as_str() {
            "Action" => {
                action = v;
                continue;
            }
            "Version" => {
                if version.replace(v).is_some() {
                    return Err(IdentifyError::invalid("Version is given more than once"));
                }
                continue;
            }
            _ => params.entry(k),
        };
        match slot {
            std::collections::btree_map::Entry::Occupied(e) => {
                return Err(IdentifyError::invalid(format!(
                    "the parameter {:?} is given more than once",
                    e.key()
                )))
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(v);
            }
        }
    }

    let versioned: Vec<&Candidate> = services
        .iter()
        .filter(|c| {
            version
                .as_deref()
                .is_none_or(|v| v == c.service.api_version)
        })
        .collect();
    if versioned.is_empty() {
        return Err(IdentifyError::new(
            "InvalidParameterValue",
            format!(
                "Version {:?} is not an API version of {}",
                version.unwrap_or_default(),
                names(services)
            ),
        ));
    }
    let having: Vec<&Candidate> = versioned
        .iter()
        .copied()
        .filter(|c| c.service.operations().contains_key(&action))
        .collect();
    if having.is_empty() {
        return Err(IdentifyError::new(
            "InvalidAction",
            format!("{action:?} is not an operation of {}", names(services)),
        ));
    }
    // Services of one family that share an endpoint but not an API version (elb, elbv2)
    // are told apart by Version alone.
    if version.is_none()
        && having
            .iter()
            .any(|c| c.service.api_version != having[0].service.api_version)
    {
        return Err(IdentifyError::invalid(format!(
            "{action} exists in {} with different API versions; the request must give Version",
            having.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
        )));
    }
    let chosen_name = pick_same_call(
        super::family_name(req.signing_name),
        &having.iter().map(|c| c.name).collect::<Vec<_>>(),
    );
    let Some(chosen) = having.iter().find(|c| c.name == chosen_name) else {
        return Err(IdentifyError::new("InvalidAction", "no operation matched"));
    };
    let Some((operation, op)) = chosen.service.operations().get_key_value(&action) else {
        return Err(IdentifyError::new("InvalidAction", "no operation matched"));
    };
    let resources = resources::from_flat(op, &params);
    Ok(Found {
        service: chosen.name,
        operation: operation.as_str(),
        params,
        resources,
    })
}

fn names(services: &[Candidate]) -> String {
    services
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join("/")
}

/// The decoded pairs of the form body; empty when there is none.
fn form_body(req: &Request<'_>) -> Result<Vec<(String, String)>, IdentifyError> {
    let ct = content_type(req.headers)?;
    let is_form = match &ct {
        Some((mime, params)) if mime == FORM => {
            for (k, v) in params {
                if k != "charset" || v != "utf-8" {
                    return Err(IdentifyError::invalid(format!(
                        "the form body's content type has the parameter {k}={v}; only charset=utf-8 is read"
                    )));
                }
            }
            true
        }
        _ => false,
    };
    let body = match req.body {
        Some(b) => b,
        None if is_form => {
            return Err(IdentifyError::invalid(
                "the form body was not available to identify the call",
            ))
        }
        None => &[],
    };
    if body.is_empty() {
        return Ok(Vec::new());
    }
    if req.method != "POST" {
        return Err(IdentifyError::invalid(format!(
            "a {} request with a body is not read by query-protocol services",
            req.method
        )));
    }
    if !is_form {
        return Err(IdentifyError::invalid(format!(
            "a query-protocol body must be {FORM}, not {:?}",
            ct.map(|(m, _)| m).unwrap_or_default()
        )));
    }
    parse_form(body)
}

/// `application/x-www-form-urlencoded`: `+` is a space, `%XX` a byte, UTF-8 required.
pub(crate) fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, IdentifyError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| IdentifyError::invalid("the form body is not UTF-8"))?;
    let mut out = Vec::new();
    for part in text.split('&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((decode_form(k)?, decode_form(v)?));
    }
    Ok(out)
}

fn decode_form(s: &str) -> Result<String, IdentifyError> {
    let bytes = crate::sigv4::canonical::decode(s, true)
        .map_err(|_| IdentifyError::invalid("the form body has a malformed %-escape"))?;
    String::from_utf8(bytes).map_err(|_| IdentifyError::invalid("the form body is not UTF-8"))
}
