//! What a record holds: the time, the event and the call's or decision's fields. Records
//! hold no secret: no key, signature, credential or body; parameters are the call's
//! canonical parameters, which the approval page shows too.

use crate::state::rfc3339_millis;
use serde_json::{json, Map, Value};

/// A record with the time set.
pub fn record(event: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "time".into(),
        json!(rfc3339_millis(time::OffsetDateTime::now_utc())),
    );
    m.insert("event".into(), json!(event));
    m
}

/// The record of a human's decision on a pending call, made with the CLI (`via` "cli")
/// or on the approval page with a passkey (`via` "passkey").
pub fn decision(
    approve: bool,
    a: &crate::state::approvals::Approval,
    receipt_id: &str,
    approver: &str,
    via: &str,
) -> Map<String, Value> {
    let binding = crate::receipt::Binding::of(&a.call, &a.agent, &a.environment);
    let mut r = record(if approve { "approved" } else { "denied" });
    r.insert("approval".into(), json!(a.id));
    r.insert("agent".into(), json!(a.agent));
    r.insert("environment".into(), json!(a.environment));
    r.insert("action".into(), json!(a.call.action()));
    r.insert("resources".into(), json!(binding.resources));
    r.insert("rule".into(), json!(a.rule));
    r.insert("receipt".into(), json!(receipt_id));
    r.insert("approver".into(), json!(approver));
    r.insert("via".into(), json!(via));
    r
}

/// The record of a change to who may approve: a passkey enrolled, waiting, confirmed or
/// rejected, an approver revoked. `by` is who confirmed, rejected or revoked it.
pub fn approver_change(event: &str, approver: &str, key_id: &str, by: &str) -> Map<String, Value> {
    let mut r = record(event);
    r.insert("approver".into(), json!(approver));
    r.insert("key_id".into(), json!(key_id));
    r.insert("by".into(), json!(by));
    r.insert(
        "reason".into(),
        json!(format!("approver {approver} key {key_id} by {by}")),
    );
    r
}

/// `airlock audit tail`: records as readable lines.
pub fn render(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let n = |k: &str| {
        v.get(k)
            .map(|x| x.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let resources = v
        .get("resources")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    format!(
        "{} #{} {:<10} agent={} env={} {} {} status={} rule={} receipt={} {}",
        s("time"),
        n("seq"),
        s("event"),
        s("agent"),
        s("environment"),
        s("action"),
        resources,
        n("upstream_status"),
        s("rule"),
        s("receipt"),
        v.get("reason").and_then(Value::as_str).unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_carry_milliseconds() {
        use time::format_description::well_known::Rfc3339;
        let t = time::macros::datetime!(2026-12-05 08:10:11.120 UTC);
        assert_eq!(rfc3339_millis(t), "2026-12-05T08:10:11.120Z");
        let whole = time::macros::datetime!(2026-12-05 08:10:11 +01:00);
        assert_eq!(rfc3339_millis(whole), "2026-12-05T07:10:11.000Z");
        let now = record("forwarded")["time"].as_str().unwrap().to_string();
        let parsed = time::OffsetDateTime::parse(&now, &Rfc3339).unwrap();
        assert_eq!(now, rfc3339_millis(parsed));
    }
}
