//! [`AwsCall`]: what one request is, in AWS's own terms. Made by `identify`, read by the
//! policy, bound into receipts, shown on the approval page and written to the audit log.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One identified AWS call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsCall {
    /// The botocore service name (`rds`, `docdb`, `s3`, `s3control`, `dynamodb`, ...).
    pub service: String,
    /// The SigV4 signing name from the credential scope (`rds` for RDS, DocumentDB, Neptune).
    pub signing_name: String,
    /// The operation as AWS's model names it (`DeleteDBInstance`).
    pub operation: String,
    pub region: String,
    /// The account of airlock's real credentials, when known.
    pub account: Option<String>,
    /// What the call acts on, in model order.
    pub resources: Vec<Resource>,
    /// Canonical parameters: the request's members by wire name, scalars as their string
    /// form (`"SkipFinalSnapshot": "true"`), lists flattened as `Name.1`, `Name.2` (query
    /// protocols) or JSON text (JSON protocols). Sorted, so the digest is stable.
    pub params: BTreeMap<String, String>,
}

/// A resource the call acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// The member that names it (`DBInstanceIdentifier`, `Bucket`, `Key`, `InstanceId.1`).
    pub member: String,
    /// Its value as sent (`prod-db`).
    pub value: String,
    /// Its ARN, where one can be derived (`arn:aws:rds:us-east-1:111111111111:db:prod-db`).
    pub arn: Option<String>,
}

impl AwsCall {
    /// `rds:DeleteDBInstance`, the IAM-style action name (signing name, as IAM uses it).
    pub fn action(&self) -> String {
        action_name(&self.service, &self.signing_name, &self.operation)
    }

    /// The SHA-256 (hex) of the canonical parameters, as receipts bind them.
    pub fn params_digest(&self) -> String {
        let json = serde_json::to_vec(&self.params).unwrap_or_default();
        crate::sigv4::sha256_hex(&json)
    }
}

/// The IAM-style action name of a model operation: `rds:DeleteDBInstance`.
pub fn action_name(service: &str, signing_name: &str, operation: &str) -> String {
    format!("{}:{operation}", iam_prefix(service, signing_name))
}

/// The IAM action prefix: the signing name, except where IAM's differs.
fn iam_prefix<'a>(service: &'a str, signing_name: &'a str) -> &'a str {
    match (service, signing_name) {
        ("s3control", _) => "s3",
        (_, "monitoring") => "cloudwatch",
        (_, s) => s,
    }
}
