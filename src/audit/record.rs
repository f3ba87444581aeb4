//! What a record holds: the time, the event and the call's or decision's fields. Records
//! hold no secret: no key, signature, credential or body; parameters are the call's
//! canonical parameters, which the approval page shows too.

use crate::state::rfc3339_millis;
use serde_json::{json, Map, Value};
use std::io::Write;

/// A record's fields as the writer takes them: one JSON object, serialized where the record
/// is made (outside the writer's lock) and without `seq` and `prev`, which the writer adds
/// when it chains the record. The order of the members is the order they were serialized
/// in; the chain's hash is over the line as written.
pub struct Fields(Vec<u8>);

impl Fields {
    /// `fields` serialized; they must serialize as a JSON object.
    pub fn of(fields: &impl serde::Serialize) -> Result<Fields, String> {
        let bytes = serde_json::to_vec(fields).map_err(|e| e.to_string())?;
        if bytes.len() >= 2 && bytes.first() == Some(&b'{') && bytes.last() == Some(&b'}') {
            Ok(Fields(bytes))
        } else {
            Err("it is not a JSON object".into())
        }
    }

    /// A record's fields as [`Self::as_bytes`] gave them, kept byte for byte (a record
    /// read back from where it waited, such as the PostgreSQL store's spool). Refused
    /// unless it is one JSON object without the chain's own members.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Fields, String> {
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let Some(object) = value.as_object() else {
            return Err("it is not a JSON object".into());
        };
        if object.contains_key("seq") || object.contains_key("prev") {
            return Err("it already holds a chain position (seq, prev)".into());
        }
        Ok(Fields(bytes))
    }

    /// The serialized object.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The record as a line of the chain: its fields, then `"seq":N,"prev":"…"`.
    pub(super) fn chain_into(&self, out: &mut Vec<u8>, seq: u64, prev: &str) {
        out.extend_from_slice(&self.0[..self.0.len() - 1]);
        if self.0.len() > 2 {
            out.push(b',');
        }
        // Writing to a Vec cannot fail; `prev` is hex.
        let _ = write!(out, "\"seq\":{seq},\"prev\":\"{prev}\"}}");
    }
}

impl From<Map<String, Value>> for Fields {
    fn from(mut fields: Map<String, Value>) -> Self {
        // The chain's own members are the writer's to set.
        fields.remove("seq");
        fields.remove("prev");
        // A map of strings to JSON values always serializes.
        Fields(serde_json::to_vec(&fields).unwrap_or_else(|_| b"{}".to_vec()))
    }
}

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
    decision_record(
        if approve { "approved" } else { "denied" },
        a,
        receipt_id,
        approver,
        via,
    )
}

/// A record about a human's decision on `a`, named `event` (`approved`, `denied`,
/// `quorum_signature`).
pub fn decision_record(
    event: &str,
    a: &crate::state::approvals::Approval,
    receipt_id: &str,
    approver: &str,
    via: &str,
) -> Map<String, Value> {
    let binding = crate::receipt::Binding::of(&a.call, &a.agent, &a.environment);
    let mut r = record(event);
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
    fn fields_are_chained_with_the_writers_seq_and_prev() {
        let mut r = record("forwarded");
        r.insert("agent".into(), json!("claude"));
        // The chain's own members are the writer's: a record cannot set them.
        r.insert("seq".into(), json!(999));
        r.insert("prev".into(), json!("forged"));
        let fields = Fields::from(r);
        let mut line = Vec::new();
        fields.chain_into(&mut line, 7, "ab12");
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["prev"], "ab12");
        assert_eq!(v["agent"], "claude");
        assert_eq!(v["event"], "forwarded");
        assert_eq!(v.as_object().unwrap().len(), 5, "{v}");

        let mut empty = Vec::new();
        Fields::from(Map::new()).chain_into(&mut empty, 1, "00");
        assert_eq!(empty, br#"{"seq":1,"prev":"00"}"#);
        assert!(Fields::of(&[1, 2]).is_err());
        assert!(Fields::of(&"text").is_err());
    }

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

    #[test]
    fn fields_read_back_are_kept_byte_for_byte_and_never_hold_a_chain_position() {
        let made: Fields = record("spooled").into();
        let back = Fields::from_bytes(made.as_bytes().to_vec()).unwrap();
        assert_eq!(back.as_bytes(), made.as_bytes());
        // Member order and spacing as given, not re-encoded.
        let odd = br#"{"z": 1,"a":2}"#.to_vec();
        assert_eq!(
            Fields::from_bytes(odd.clone()).unwrap().as_bytes(),
            &odd[..]
        );
        for refused in [
            &br#"{"seq":3}"#[..],
            br#"{"prev":"00"}"#,
            b"[1]",
            b"{\"torn",
        ] {
            assert!(Fields::from_bytes(refused.to_vec()).is_err(), "{refused:?}");
        }
    }
}
