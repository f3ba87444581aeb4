//! What a call acts on: the members the model marks as resources (URI labels and required
//! members that name or id something; `optional_resources` when the operation has none of
//! its own), with an ARN where one can be derived. A value that already is an ARN is its
//! own ARN; the common resource types of the services that hold data get theirs built from
//! the region and the account of airlock's real credentials; anything else has none.

use super::call::Resource;
use crate::aws::model::{model, Operation};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `(member key, wire name, value)`: `("InstanceId.2", "InstanceId", "i-0abc")`.
pub(crate) type Raw = (String, String, String);

/// The resource names of an operation: its own, or its optional ones when it has none.
pub(crate) fn names(op: &Operation) -> &[String] {
    if op.resources.is_empty() {
        &op.optional_resources
    } else {
        &op.resources
    }
}

/// Resources from flattened query parameters: `Name`, or list entries `Name.1`,
/// `Name.member.1`, `Name.Item.1` (a list of scalars, numbered), in index order.
pub(crate) fn from_flat(op: &Operation, params: &BTreeMap<String, String>) -> Vec<Raw> {
    let mut out = Vec::new();
    for name in names(op) {
        let mut found: Vec<(u64, Raw)> = Vec::new();
        for (key, value) in params {
            if key == name {
                found.push((0, (key.clone(), name.clone(), value.clone())));
                continue;
            }
            let Some(rest) = key
                .strip_prefix(name.as_str())
                .and_then(|r| r.strip_prefix('.'))
            else {
                continue;
            };
            let parts: Vec<&str> = rest.split('.').collect();
            let index = match parts.as_slice() {
                [n] => n.parse::<u64>().ok(),
                [_, n] => n.parse::<u64>().ok(),
                _ => None,
            };
            if let Some(i) = index {
                found.push((i, (key.clone(), name.clone(), value.clone())));
            }
        }
        found.sort_by_key(|(i, _)| *i);
        out.extend(found.into_iter().map(|(_, r)| r));
    }
    out
}

/// Resources from a JSON (or CBOR) object's top-level members: a string or number, or a
/// list of them (`Name.1`, `Name.2`).
pub(crate) fn from_object(op: &Operation, object: &Map<String, Value>) -> Vec<Raw> {
    let mut out = Vec::new();
    for name in names(op) {
        if let Some(value) = object.get(name) {
            push_value(&mut out, name, value);
        }
    }
    out
}

/// Adds one member's value: scalars as they are, lists of scalars numbered from 1.
pub(crate) fn push_value(out: &mut Vec<Raw>, name: &str, value: &Value) {
    match value {
        Value::String(s) => out.push((name.to_string(), name.to_string(), s.clone())),
        Value::Number(n) => out.push((name.to_string(), name.to_string(), n.to_string())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let text = match item {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => continue,
                };
                out.push((format!("{name}.{}", i + 1), name.to_string(), text));
            }
        }
        _ => {}
    }
}

/// What ARNs are built from.
pub(crate) struct ArnContext<'a> {
    pub service: &'a str,
    pub partition: String,
    pub region: &'a str,
    pub account: Option<&'a str>,
}

impl<'a> ArnContext<'a> {
    /// Services whose resource identifiers are case-insensitive and stored lower-cased.
    pub fn service_lowercases_identifiers(&self) -> bool {
        matches!(self.service, "rds" | "docdb" | "neptune")
    }

    pub fn new(service: &'a str, region: &'a str, account: Option<&'a str>) -> Self {
        let partition = model()
            .partition_of(region)
            .map_or_else(|| "aws".to_string(), |p| p.id.clone());
        ArnContext {
            service,
            partition,
            region,
            account,
        }
    }
}

/// Gives each resource its ARN, where one can be derived.
pub(crate) fn with_arns(ctx: &ArnContext<'_>, raw: Vec<Raw>) -> Vec<Resource> {
    // S3 object ARNs need the bucket, which is a resource of the same call.
    let bucket = raw
        .iter()
        .find(|(_, wire, _)| wire == "Bucket")
        .map(|(_, _, v)| v.clone());
    raw.into_iter()
        .map(|(member, wire, value)| {
            // RDS, DocumentDB and Neptune store identifiers and group names in lower case
            // (`PROD-DB` is `prod-db`): name the resource as the service will act on it.
            let value = if ctx.service_lowercases_identifiers()
                && (wire.ends_with("Identifier") || wire.ends_with("GroupName"))
            {
                value.to_lowercase()
            } else {
                value
            };
            let arn = arn_for(ctx, &wire, &value, bucket.as_deref());
            Resource { member, value, arn }
        })
        .collect()
}

/// The ARN of one resource value, or `None`.
pub(crate) fn arn_for(
    ctx: &ArnContext<'_>,
    wire: &str,
    value: &str,
    bucket: Option<&str>,
) -> Option<String> {
    if value.starts_with("arn:") {
        return Some(value.to_string());
    }
    if value.is_empty() {
        return None;
    }
    let p = ctx.partition.as_str();
    let r = ctx.region;
    // Global resources (no account in the ARN).
    match (ctx.service, wire) {
        ("s3", "Bucket") => return Some(format!("arn:{p}:s3:::{value}")),
        ("s3", "Key") => return bucket.map(|b| format!("arn:{p}:s3:::{b}/{value}")),
        ("sqs", "QueueUrl") => return sqs_queue_arn(p, r, value),
        ("ec2", "ImageId") => return Some(format!("arn:{p}:ec2:{r}::image/{value}")),
        _ => {}
    }
    let a = ctx.account?;
    let arn = match (ctx.service, wire) {
        ("rds" | "docdb" | "neptune", _) => {
            let kind = match wire {
                "DBInstanceIdentifier" => "db",
                "DBSnapshotIdentifier" => "snapshot",
                "DBClusterIdentifier" => "cluster",
                "DBClusterSnapshotIdentifier" => "cluster-snapshot",
                "DBSubnetGroupName" => "subgrp",
                "DBParameterGroupName" => "pg",
                "DBClusterParameterGroupName" => "cluster-pg",
                "OptionGroupName" => "og",
                _ => return None,
            };
            format!("arn:{p}:rds:{r}:{a}:{kind}:{value}")
        }
        ("ec2", _) => {
            let kind = match wire {
                "InstanceId" => "instance",
                "VpcId" => "vpc",
                "SubnetId" => "subnet",
                "GroupId" | "SecurityGroupId" => "security-group",
                "VolumeId" => "volume",
                "SnapshotId" => "snapshot",
                "InternetGatewayId" => "internet-gateway",
                "NatGatewayId" => "natgateway",
                "RouteTableId" => "route-table",
                "NetworkInterfaceId" => "network-interface",
                "KeyName" => "key-pair",
                "LaunchTemplateId" => "launch-template",
                _ => return None,
            };
            format!("arn:{p}:ec2:{r}:{a}:{kind}/{value}")
        }
        ("dynamodb", "TableName") => format!("arn:{p}:dynamodb:{r}:{a}:table/{value}"),
        ("lambda", "FunctionName") => {
            // A partial ARN (`123456789012:function:name`) carries its own account.
            if value.contains(":function:") {
                format!("arn:{p}:lambda:{r}:{value}")
            } else {
                format!("arn:{p}:lambda:{r}:{a}:function:{value}")
            }
        }
        ("iam", "UserName") => format!("arn:{p}:iam::{a}:user/{value}"),
        ("iam", "RoleName") => format!("arn:{p}:iam::{a}:role/{value}"),
        ("iam", "GroupName") => format!("arn:{p}:iam::{a}:group/{value}"),
        ("iam", "InstanceProfileName") => format!("arn:{p}:iam::{a}:instance-profile/{value}"),
        ("kms", "KeyId" | "TargetKeyId" | "DestinationKeyId") => {
            if value.starts_with("alias/") {
                format!("arn:{p}:kms:{r}:{a}:{value}")
            } else {
                format!("arn:{p}:kms:{r}:{a}:key/{value}")
            }
        }
        ("kms", "AliasName") => format!("arn:{p}:kms:{r}:{a}:{value}"),
        ("sns", "TopicName" | "Name") => format!("arn:{p}:sns:{r}:{a}:{value}"),
        ("sqs", "QueueName") => format!("arn:{p}:sqs:{r}:{a}:{value}"),
        _ => return None,
    };
    Some(arn)
}

/// `https://sqs.us-east-1.amazonaws.com/123456789012/q` → `arn:aws:sqs:us-east-1:123456789012:q`.
fn sqs_queue_arn(partition: &str, region: &str, url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let mut parts = rest.split('/');
    let _host = parts.next()?;
    let account = parts.next()?;
    let name = parts.next()?;
    if parts.next().is_some()
        || account.is_empty()
        || !account.bytes().all(|b| b.is_ascii_digit())
        || name.is_empty()
    {
        return None;
    }
    Some(format!("arn:{partition}:sqs:{region}:{account}:{name}"))
}

/// The resources a call of `service`/`operation` with these canonical parameters names, as
/// [`super::identify`] would list them: for plan entries, made before the call is.
pub fn of_params(
    service: &str,
    operation: &str,
    region: &str,
    account: Option<&str>,
    params: &BTreeMap<String, String>,
) -> Vec<Resource> {
    let Some(op) = model()
        .services
        .get(service)
        .and_then(|s| s.operations().get(operation))
    else {
        return Vec::new();
    };
    with_arns(
        &ArnContext::new(service, region, account),
        from_flat(op, params),
    )
}
