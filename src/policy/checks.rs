//! Typed conditions for what a `when` glob cannot say: a key anywhere in a JSON parameter
//! (`BatchWriteItem` deleting through `DeleteRequest`), and an S3 bucket policy that locks
//! the account's own principals out. Pure code; JSON is read with serde_json, never
//! searched as text.
//!
//! Each check fails closed: a parameter the check needs that is not readable JSON counts
//! as a match (AWS would refuse such a call anyway, so gating it costs nothing).

use super::glob::glob_match;
use crate::identify::AwsCall;
use serde::Serialize;
use serde_json::Value;

/// A condition on the call's parameters, beyond `when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Check {
    /// The parameter holds JSON with an object member named `key` at any depth.
    JsonKey {
        param: &'static str,
        key: &'static str,
    },
    /// The bucket policy (`Policy`) has an unconditional `Deny` of everyone, or of the
    /// account's own principals, for reading objects or managing the policy itself: the
    /// owner is locked out of their data until the root user deletes the policy.
    BucketPolicyLocksOutOwner,
}

impl Check {
    pub fn holds(&self, call: &AwsCall) -> bool {
        match *self {
            Check::JsonKey { param, key } => call.params.get(param).is_some_and(|text| {
                match serde_json::from_str::<Value>(text) {
                    Ok(v) => has_key(&v, key),
                    Err(_) => true,
                }
            }),
            Check::BucketPolicyLocksOutOwner => call.params.get("Policy").is_some_and(|text| {
                match serde_json::from_str::<Value>(text) {
                    Ok(policy) => locks_out_owner(&policy, call.account.as_deref()),
                    Err(_) => true,
                }
            }),
        }
    }

    /// One line for `airlock policy builtin`.
    pub fn describe(&self) -> String {
        match self {
            Check::JsonKey { param, key } => format!("{param} contains a {key:?} member"),
            Check::BucketPolicyLocksOutOwner => {
                "the policy denies everyone or the account's own principals, unconditionally".into()
            }
        }
    }
}

fn has_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(map) => map.iter().any(|(k, v)| k == key || has_key(v, key)),
        Value::Array(items) => items.iter().any(|v| has_key(v, key)),
        _ => false,
    }
}

/// A JSON value that may be one item or a list of them, as IAM documents write it.
fn items(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    }
}

/// Actions whose denial locks the owner out: reading the data, and changing the policy back.
const OWNER_ACTIONS: &[&str] = &[
    "s3:GetObject",
    "s3:ListBucket",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
];

fn locks_out_owner(policy: &Value, account: Option<&str>) -> bool {
    let Some(statements) = policy.get("Statement") else {
        return false;
    };
    items(statements).into_iter().any(|s| {
        let denies = s
            .get("Effect")
            .and_then(Value::as_str)
            .is_some_and(|e| e.eq_ignore_ascii_case("deny"));
        let unconditional = match s.get("Condition") {
            None | Some(Value::Null) => true,
            Some(Value::Object(m)) => m.is_empty(),
            Some(_) => false,
        };
        denies && unconditional && covers_owner(s, account) && covers_owner_actions(s)
    })
}

/// `Principal: "*"`, `{"AWS": "*"}`, the account (id or any ARN in it), or `NotPrincipal`
/// (everyone but those named).
fn covers_owner(statement: &Value, account: Option<&str>) -> bool {
    if statement.get("NotPrincipal").is_some() {
        return true;
    }
    let Some(principal) = statement.get("Principal") else {
        return false;
    };
    let names: Vec<&str> = match principal {
        Value::String(s) => vec![s.as_str()],
        Value::Object(m) => m
            .get("AWS")
            .map(|v| items(v).into_iter().filter_map(Value::as_str).collect())
            .unwrap_or_default(),
        _ => vec![],
    };
    names.iter().any(|n| {
        *n == "*"
            || account.is_some_and(|a| {
                *n == a
                    || n.split(':')
                        .nth(4)
                        .is_some_and(|arn_account| arn_account == a && n.starts_with("arn:"))
            })
    })
}

fn covers_owner_actions(statement: &Value) -> bool {
    if statement.get("NotAction").is_some() {
        return true;
    }
    statement.get("Action").is_some_and(|actions| {
        items(actions)
            .into_iter()
            .filter_map(Value::as_str)
            .any(|pattern| {
                OWNER_ACTIONS
                    .iter()
                    .any(|action| glob_match(pattern, action, true))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn locks(policy: Value) -> bool {
        locks_out_owner(&policy, Some("111111111111"))
    }

    #[test]
    fn a_deny_of_everyone_locks_the_owner_out_and_a_conditional_one_does_not() {
        assert!(locks(
            json!({"Statement": [{"Effect": "Deny", "Principal": "*",
            "Action": "s3:*", "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]}]})
        ));
        assert!(locks(
            json!({"Statement": {"Effect": "Deny", "Principal": {"AWS": ["*"]},
            "Action": ["s3:GetObject"], "Resource": "*"}})
        ));
        assert!(locks(json!({"Statement": [{"Effect": "Deny",
            "Principal": {"AWS": "arn:aws:iam::111111111111:root"},
            "Action": "s3:PutBucketPolicy", "Resource": "*"}]})));
        assert!(locks(json!({"Statement": [{"Effect": "Deny",
            "NotPrincipal": {"AWS": "arn:aws:iam::222222222222:root"},
            "Action": "*", "Resource": "*"}]})));
        // The usual TLS-only policy: a deny with a condition.
        assert!(!locks(
            json!({"Statement": [{"Effect": "Deny", "Principal": "*",
            "Action": "s3:*", "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})
        ));
        // Denying deletion protects; another account is not the owner; allows are allows.
        assert!(!locks(
            json!({"Statement": [{"Effect": "Deny", "Principal": "*",
            "Action": "s3:DeleteObject", "Resource": "*"}]})
        ));
        assert!(!locks(json!({"Statement": [{"Effect": "Deny",
            "Principal": {"AWS": "arn:aws:iam::222222222222:root"},
            "Action": "s3:*", "Resource": "*"}]})));
        assert!(!locks(
            json!({"Statement": [{"Effect": "Allow", "Principal": "*",
            "Action": "s3:GetObject", "Resource": "*"}]})
        ));
    }

    #[test]
    fn json_keys_are_found_at_any_depth_and_unreadable_json_fails_closed() {
        let mut call = AwsCall {
            service: "dynamodb".into(),
            signing_name: "dynamodb".into(),
            operation: "BatchWriteItem".into(),
            region: "us-east-1".into(),
            account: None,
            resources: vec![],
            params: Default::default(),
        };
        let check = Check::JsonKey {
            param: "RequestItems",
            key: "DeleteRequest",
        };
        assert!(!check.holds(&call), "no parameter, no match");
        let mut with = |text: &str| {
            call.params.insert("RequestItems".into(), text.into());
            check.holds(&call)
        };
        assert!(with(
            r#"{"t":[{"DeleteRequest":{"Key":{"id":{"S":"1"}}}}]}"#
        ));
        assert!(!with(
            r#"{"t":[{"PutRequest":{"Item":{"id":{"S":"DeleteRequest"}}}}]}"#
        ));
        assert!(with("not json"));
    }
}
