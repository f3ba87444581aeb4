//! The RPC protocols: `json` (`X-Amz-Target: Prefix.Operation`, a JSON object body) and
//! `smithy-rpc-v2-cbor` (`POST /service/{Service}/operation/{Operation}`, a CBOR map).
//!
//! The target prefix or service name must be one of the signing family's own; the body is
//! read strictly (duplicate keys refused at any depth), and its top-level members are the
//! parameters.

use super::body::{cbor_object, json_object, param_text};
use super::{content_type, pick_same_call, resources, Candidate, Found, IdentifyError, Request};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

fn unknown(message: String) -> IdentifyError {
    IdentifyError::new("UnknownOperationException", message)
}

pub(crate) fn identify_json(
    req: &Request<'_>,
    services: &[Candidate],
    target: &str,
) -> Result<Found, IdentifyError> {
    let (prefix, operation) = target
        .rsplit_once('.')
        .ok_or_else(|| unknown(format!("X-Amz-Target {target:?} is not Prefix.Operation")))?;
    let speaking: Vec<Candidate> = services
        .iter()
        .filter(|c| c.service.protocols.iter().any(|p| p == "json"))
        .filter(|c| c.service.target_prefix.as_deref() == Some(prefix))
        .copied()
        .collect();
    if speaking.is_empty() {
        return Err(unknown(format!(
            "X-Amz-Target {target:?} does not belong to a service that signs as {:?}",
            req.signing_name
        )));
    }
    common_checks(req, "/")?;
    if let Some((mime, params)) = content_type(req.headers)? {
        let json = mime.starts_with("application/x-amz-json-") || mime == "application/json";
        if !json || params.iter().any(|(k, v)| k != "charset" || v != "utf-8") {
            return Err(IdentifyError::invalid(format!(
                "a JSON-protocol request must have a JSON content type, not {mime:?}"
            )));
        }
    }
    let body = req.body.ok_or_else(|| {
        IdentifyError::invalid("the JSON body was not available to identify the call")
    })?;
    let object = json_object(body)?;
    finish(req, &speaking, operation, object)
}

pub(crate) fn identify_cbor(
    req: &Request<'_>,
    services: &[Candidate],
    protocol: &str,
) -> Result<Found, IdentifyError> {
    if protocol != "rpc-v2-cbor" {
        return Err(IdentifyError::invalid(format!(
            "smithy-protocol {protocol:?} is not rpc-v2-cbor"
        )));
    }
    let segments: Vec<String> = req
        .path
        .split('/')
        .skip(1)
        .map(decode_segment)
        .collect::<Result<_, _>>()?;
    let (service_name, operation) = match segments.as_slice() {
        [s, name, o, op] if s == "service" && o == "operation" => (name.as_str(), op.as_str()),
        _ => {
            return Err(unknown(format!(
                "an rpc-v2-cbor path is /service/{{Service}}/operation/{{Operation}}, not {:?}",
                req.path
            )))
        }
    };
    let speaking: Vec<Candidate> = services
        .iter()
        .filter(|c| {
            c.service
                .protocols
                .iter()
                .any(|p| p == "smithy-rpc-v2-cbor")
        })
        .filter(|c| c.service.target_prefix.as_deref() == Some(service_name))
        .copied()
        .collect();
    if speaking.is_empty() {
        return Err(unknown(format!(
            "{service_name:?} is not an rpc-v2-cbor service that signs as {:?}",
            req.signing_name
        )));
    }
    common_checks(req, req.path)?;
    let body = req.body.ok_or_else(|| {
        IdentifyError::invalid("the CBOR body was not available to identify the call")
    })?;
    if !body.is_empty() {
        match content_type(req.headers)? {
            Some((mime, params)) if mime == "application/cbor" && params.is_empty() => {}
            other => {
                return Err(IdentifyError::invalid(format!(
                    "an rpc-v2-cbor body must be application/cbor, not {:?}",
                    other.map(|(m, _)| m).unwrap_or_default()
                )))
            }
        }
    }
    let object = cbor_object(body)?;
    finish(req, &speaking, operation, object)
}

/// POST to the expected path, and no `Action` in the query string that a query-protocol
/// reading of the same service could take.
fn common_checks(req: &Request<'_>, path: &str) -> Result<(), IdentifyError> {
    if req.method != "POST" {
        return Err(IdentifyError::invalid(format!(
            "RPC-protocol calls are POST requests, not {}",
            req.method
        )));
    }
    if req.path != path {
        return Err(IdentifyError::invalid(format!(
            "RPC-protocol calls are sent to {path}, not {:?}",
            req.path
        )));
    }
    if req.query.iter().any(|(k, _)| k == "Action") {
        return Err(IdentifyError::invalid(
            "an RPC-protocol call must not also carry a query-string Action",
        ));
    }
    Ok(())
}

fn finish(
    req: &Request<'_>,
    speaking: &[Candidate],
    operation: &str,
    object: Map<String, Value>,
) -> Result<Found, IdentifyError> {
    let having: Vec<&'static str> = speaking
        .iter()
        .filter(|c| c.service.operations().contains_key(operation))
        .map(|c| c.name)
        .collect();
    if having.is_empty() {
        return Err(unknown(format!(
            "{operation:?} is not an operation of {}",
            speaking[0].name
        )));
    }
    let name = pick_same_call(super::family_name(req.signing_name), &having);
    let chosen = speaking
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| unknown("no operation matched".into()))?;
    let (operation, op) = chosen
        .service
        .operations()
        .get_key_value(operation)
        .ok_or_else(|| unknown("no operation matched".into()))?;
    let params: BTreeMap<String, String> = object
        .iter()
        .filter_map(|(k, v)| param_text(v).map(|t| (k.clone(), t)))
        .collect();
    let resources = resources::from_object(op, &object);
    Ok(Found {
        service: chosen.name,
        operation: operation.as_str(),
        params,
        resources,
    })
}

/// One path segment, percent-decoded once; it must be UTF-8.
pub(crate) fn decode_segment(raw: &str) -> Result<String, IdentifyError> {
    let bytes = crate::sigv4::canonical::decode(raw, false)
        .map_err(|_| IdentifyError::invalid("the path has a malformed %-escape"))?;
    String::from_utf8(bytes).map_err(|_| IdentifyError::invalid("the path is not UTF-8"))
}
