//! What the AWS provider (hashicorp/aws 5.x) sends to destroy each resource type, with the
//! parameters the plan's `before` values fix. One function per type; a type not listed here
//! is "not covered": its calls are held one by one as without a plan, never guessed.
//!
//! Parameters are written as `identify` writes them: query protocols (EC2, RDS, IAM, ELB,
//! ElastiCache, SNS) by flattened name (`InstanceId.1`, `DisableApiTermination.Value`),
//! booleans `true`/`false`; JSON protocols by top-level member, scalars as text; REST by URI
//! label. Calls that only read (`Describe*`, `List*`) need no entry.
//!
//! What a plan cannot fix is said so: the objects and versions a `force_destroy` bucket holds
//! at apply time, the rule ids a security group holds, the instance profiles of a role, a
//! policy's old versions. Those calls are covered only inside their container (the bucket,
//! the group, the role, the policy), with the unknown parameter named in `free`, and the page
//! shows them as such.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One call the provider makes for a destroyed resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedCall {
    /// The botocore service name.
    pub service: String,
    pub operation: String,
    pub region: String,
    pub account: Option<String>,
    pub params: BTreeMap<String, String>,
    /// Parameters the plan cannot fix.
    pub free: Vec<String>,
    /// `None`: as many as the provider makes while the receipt is valid.
    pub uses: Option<u32>,
    /// What the page says about it beyond its parameters (why it may repeat, what is unknown).
    pub note: Option<String>,
}

/// How a destroyed resource is covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Coverage {
    /// Its calls, in the order the provider makes them.
    Covered { calls: Vec<PlannedCall> },
    /// Terraform forgets it without any AWS call (`skip_destroy`, a secret version whose only
    /// stage is AWSCURRENT).
    StateOnly { why: String },
    /// Its calls will be held one by one as without a plan.
    NotCovered { why: String },
}

/// One resource the plan destroys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destroyed {
    pub address: String,
    pub resource_type: String,
    pub id: Option<String>,
    pub arn: Option<String>,
    /// The delete half of a replace.
    pub replaced: bool,
    /// What cannot be undone once it runs (snapshots, backups, no final snapshot, ...).
    pub irreversible: Vec<String>,
    pub coverage: Coverage,
}

/// Where a plan's resources live when their ARN does not say.
pub struct Defaults<'a> {
    pub region: Option<&'a str>,
    pub account: Option<&'a str>,
}

/// The account every ARN in the plan's `before` values names, when they name exactly one.
pub fn plan_account(resource_changes: &[Value]) -> Option<String> {
    let mut accounts = std::collections::BTreeSet::new();
    for change in resource_changes {
        let Some(before) = change.get("change").and_then(|c| c.get("before")) else {
            continue;
        };
        if let Some(map) = before.as_object() {
            for (k, v) in map {
                if k == "arn" || k.ends_with("_arn") {
                    if let Some((_, account)) = v.as_str().and_then(arn_place) {
                        if !account.is_empty() {
                            accounts.insert(account.to_owned());
                        }
                    }
                }
            }
        }
    }
    match accounts.len() {
        1 => accounts.into_iter().next(),
        _ => None,
    }
}

/// `(region, account)` of an ARN.
fn arn_place(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    let _partition = parts.next()?;
    let _service = parts.next()?;
    let region = parts.next()?;
    let account = parts.next()?;
    parts.next()?;
    Some((region, account))
}

/// Every resource the plan destroys, in plan order.
pub fn destroyed(resource_changes: &[Value], defaults: &Defaults<'_>) -> Vec<Destroyed> {
    resource_changes
        .iter()
        .filter_map(|c| one(c, defaults))
        .collect()
}

fn one(change: &Value, defaults: &Defaults<'_>) -> Option<Destroyed> {
    if change.get("mode").and_then(Value::as_str) != Some("managed") {
        return None;
    }
    let actions: Vec<&str> = change
        .get("change")
        .and_then(|c| c.get("actions"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !actions.contains(&"delete") {
        return None;
    }
    let text = |k: &str| change.get(k).and_then(Value::as_str).unwrap_or("");
    let address = text("address").to_owned();
    let resource_type = text("type").to_owned();
    let provider = text("provider_name");
    let empty = Value::Null;
    let before = change
        .get("change")
        .and_then(|c| c.get("before"))
        .unwrap_or(&empty);
    let b = Before(before);
    let mut d = Destroyed {
        address,
        id: b.opt("id"),
        arn: b.opt("arn"),
        replaced: actions.contains(&"create"),
        resource_type: resource_type.clone(),
        irreversible: Vec::new(),
        coverage: Coverage::NotCovered { why: String::new() },
    };
    if !provider.ends_with("hashicorp/aws") {
        d.coverage = Coverage::NotCovered {
            why: format!(
                "provider {provider} is not hashicorp/aws: airlock does not know its calls"
            ),
        };
        return Some(d);
    }
    if !before.is_object() {
        d.coverage = Coverage::NotCovered {
            why: "the plan has no `before` values for it".into(),
        };
        return Some(d);
    }
    let (region, account) = place(&b, &resource_type, defaults);
    let Some(region) = region else {
        d.coverage = Coverage::NotCovered {
            why: "its region is not in the plan (no ARN and no constant provider region)".into(),
        };
        return Some(d);
    };
    let mut out = Calls {
        region,
        account,
        calls: Vec::new(),
        irreversible: Vec::new(),
    };
    d.coverage = match map_type(&resource_type, &b, &mut out) {
        Mapped::Calls => Coverage::Covered { calls: out.calls },
        Mapped::StateOnly(why) => Coverage::StateOnly { why },
        Mapped::No(why) => Coverage::NotCovered { why },
    };
    d.irreversible = out.irreversible;
    Some(d)
}

/// Region and account: from the resource's ARN, else the plan's defaults. (An S3 bucket's
/// ARN has neither; its `region` attribute names the region.)
fn place(
    b: &Before<'_>,
    resource_type: &str,
    defaults: &Defaults<'_>,
) -> (Option<String>, Option<String>) {
    let arn = b.opt("arn").unwrap_or_default();
    let (arn_region, arn_account) = arn_place(&arn).unwrap_or(("", ""));
    let region = if !arn_region.is_empty() {
        Some(arn_region.to_owned())
    } else if resource_type.starts_with("aws_s3_") && !b.s("region").is_empty() {
        Some(b.s("region"))
    } else {
        defaults.region.map(str::to_owned)
    };
    let account = if arn_account.is_empty() {
        defaults.account.map(str::to_owned)
    } else {
        Some(arn_account.to_owned())
    };
    (region, account)
}

/// A resource's `before` values.
struct Before<'a>(&'a Value);

impl Before<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    /// A string (or number) attribute; empty when absent.
    fn s(&self, k: &str) -> String {
        match self.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        }
    }

    fn opt(&self, k: &str) -> Option<String> {
        Some(self.s(k)).filter(|s| !s.is_empty())
    }

    fn flag(&self, k: &str) -> bool {
        self.get(k).and_then(Value::as_bool) == Some(true)
    }

    /// `true`/`false` as query protocols send it.
    fn bool_text(&self, k: &str) -> String {
        self.flag(k).to_string()
    }

    fn strings(&self, k: &str) -> Vec<String> {
        self.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `name` of each block in a list attribute (`inline_policy`).
    fn block_names(&self, k: &str) -> Vec<String> {
        self.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.get("name").and_then(Value::as_str))
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The calls being collected for one resource.
struct Calls {
    region: String,
    account: Option<String>,
    calls: Vec<PlannedCall>,
    irreversible: Vec<String>,
}

impl Calls {
    fn push(
        &mut self,
        service: &str,
        operation: &str,
        params: &[(&str, String)],
    ) -> &mut PlannedCall {
        self.calls.push(PlannedCall {
            service: service.to_owned(),
            operation: operation.to_owned(),
            region: self.region.clone(),
            account: self.account.clone(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            free: Vec::new(),
            uses: Some(1),
            note: None,
        });
        let last = self.calls.len() - 1;
        &mut self.calls[last]
    }

    fn irreversible(&mut self, why: impl Into<String>) {
        self.irreversible.push(why.into());
    }
}

impl PlannedCall {
    /// Inside a container: `free` parameters unknown to the plan, as many calls as needed.
    fn within(&mut self, free: &[&str], note: &str) -> &mut Self {
        self.free = free.iter().map(|s| (*s).to_owned()).collect();
        self.uses = None;
        self.note = Some(note.to_owned());
        self
    }

    /// The body's integrity headers (`Content-MD5`, the SDK's checksum algorithm) vary
    /// with the SDK and say nothing about what the call does: any value.
    fn checksums_free(&mut self) -> &mut Self {
        self.free = vec![CONTENT_MD5.to_owned(), CHECKSUM_ALGORITHM.to_owned()];
        self
    }

    fn repeats(&mut self, uses: u32, note: &str) -> &mut Self {
        self.uses = Some(uses);
        self.note = Some(note.to_owned());
        self
    }
}

/// S3 integrity headers, as `identify` names header parameters (lower-case header name).
const CONTENT_MD5: &str = "content-md5";
const CHECKSUM_ALGORITHM: &str = "x-amz-sdk-checksum-algorithm";

enum Mapped {
    Calls,
    StateOnly(String),
    No(String),
}

/// The resource types whose destruction a plan covers (for docs and the page).
pub const COVERED_TYPES: &[&str] = &[
    "aws_vpc",
    "aws_subnet",
    "aws_security_group",
    "aws_vpc_security_group_ingress_rule",
    "aws_vpc_security_group_egress_rule",
    "aws_internet_gateway",
    "aws_route_table",
    "aws_route_table_association",
    "aws_eip",
    "aws_nat_gateway",
    "aws_instance",
    "aws_ebs_volume",
    "aws_ebs_snapshot",
    "aws_db_subnet_group",
    "aws_db_instance",
    "aws_db_snapshot",
    "aws_rds_cluster",
    "aws_s3_bucket",
    "aws_s3_object",
    "aws_s3_bucket_versioning",
    "aws_dynamodb_table",
    "aws_lambda_function",
    "aws_iam_role",
    "aws_iam_policy",
    "aws_iam_role_policy_attachment",
    "aws_iam_instance_profile",
    "aws_ecs_cluster",
    "aws_ecs_service",
    "aws_ecs_task_definition",
    "aws_lb",
    "aws_lb_listener",
    "aws_lb_target_group",
    "aws_kms_key",
    "aws_kms_alias",
    "aws_secretsmanager_secret",
    "aws_secretsmanager_secret_version",
    "aws_sqs_queue",
    "aws_sns_topic",
    "aws_cloudwatch_log_group",
    "aws_route53_zone",
    "aws_ecr_repository",
    "aws_backup_vault",
    "aws_efs_file_system",
    "aws_efs_mount_target",
    "aws_elasticache_cluster",
];

/// Types known and deliberately not covered, with why.
pub const NOT_COVERED_TYPES: &[(&str, &str)] = &[
    (
        "aws_security_group_rule",
        "the provider revokes it by rule content (IpPermissions), whose exact encoding the plan does not pin",
    ),
    (
        "aws_route53_record",
        "the change batch is an XML body the plan does not pin byte for byte",
    ),
    (
        "aws_iam_user",
        "the provider first deletes keys, MFA devices, login profile and certificates that are not in the plan",
    ),
];

fn map_type(t: &str, b: &Before<'_>, c: &mut Calls) -> Mapped {
    let id = b.s("id");
    if id.is_empty() && !matches!(t, "aws_s3_bucket_versioning") {
        return Mapped::No("the plan does not give its id".into());
    }
    match t {
        "aws_vpc" => {
            c.push("ec2", "DeleteVpc", &[("VpcId", id)]);
        }
        "aws_subnet" => {
            c.push("ec2", "DeleteSubnet", &[("SubnetId", id)]);
        }
        "aws_security_group" => {
            if b.flag("revoke_rules_on_delete") {
                for op in ["RevokeSecurityGroupIngress", "RevokeSecurityGroupEgress"] {
                    c.push("ec2", op, &[("GroupId", id.clone())]).within(
                        &["SecurityGroupRuleId"],
                        "revoke_rules_on_delete: the group's rules as found at apply time (their ids are not in the plan)",
                    );
                }
            }
            c.push("ec2", "DeleteSecurityGroup", &[("GroupId", id)]);
        }
        "aws_vpc_security_group_ingress_rule" | "aws_vpc_security_group_egress_rule" => {
            let op = if t.ends_with("ingress_rule") {
                "RevokeSecurityGroupIngress"
            } else {
                "RevokeSecurityGroupEgress"
            };
            c.push(
                "ec2",
                op,
                &[
                    ("GroupId", b.s("security_group_id")),
                    ("SecurityGroupRuleId.1", id),
                ],
            );
        }
        "aws_internet_gateway" => {
            let vpc = b.s("vpc_id");
            if !vpc.is_empty() {
                c.push(
                    "ec2",
                    "DetachInternetGateway",
                    &[("InternetGatewayId", id.clone()), ("VpcId", vpc)],
                );
            }
            c.push("ec2", "DeleteInternetGateway", &[("InternetGatewayId", id)]);
        }
        "aws_route_table" => {
            // Associations still in place are found at apply time and are not in this
            // resource's plan entry: their DisassociateRouteTable calls are held.
            c.push("ec2", "DeleteRouteTable", &[("RouteTableId", id)]);
        }
        "aws_route_table_association" => {
            c.push("ec2", "DisassociateRouteTable", &[("AssociationId", id)]);
        }
        "aws_eip" => {
            let association = b.s("association_id");
            if !association.is_empty() {
                c.push(
                    "ec2",
                    "DisassociateAddress",
                    &[("AssociationId", association)],
                );
            }
            let allocation = b.opt("allocation_id").unwrap_or(id);
            c.push("ec2", "ReleaseAddress", &[("AllocationId", allocation)]);
        }
        "aws_nat_gateway" => {
            c.push("ec2", "DeleteNatGateway", &[("NatGatewayId", id)]);
        }
        "aws_instance" => {
            if b.s("instance_lifecycle") == "spot" {
                return Mapped::No(
                    "a spot instance: the provider cancels its spot request first (not observed)"
                        .into(),
                );
            }
            // Sent every time, protected or not: the provider switches protection off itself.
            c.push(
                "ec2",
                "ModifyInstanceAttribute",
                &[
                    ("InstanceId", id.clone()),
                    ("DisableApiTermination.Value", "false".into()),
                ],
            )
            .note = Some(
                "termination protection switched off before terminating (sent for every instance)"
                    .into(),
            );
            if b.flag("disable_api_stop") {
                c.push(
                    "ec2",
                    "ModifyInstanceAttribute",
                    &[
                        ("InstanceId", id.clone()),
                        ("DisableApiStop.Value", "true".into()),
                    ],
                );
            }
            c.push("ec2", "TerminateInstances", &[("InstanceId.1", id)]);
        }
        "aws_ebs_volume" => {
            c.push("ec2", "DeleteVolume", &[("VolumeId", id)]);
            c.irreversible("deletes the volume and its data");
        }
        "aws_ebs_snapshot" => {
            c.push("ec2", "DeleteSnapshot", &[("SnapshotId", id)]);
            c.irreversible("deletes an EBS snapshot");
        }
        "aws_db_subnet_group" => {
            c.push(
                "rds",
                "DeleteDBSubnetGroup",
                &[("DBSubnetGroupName", b.opt("name").unwrap_or(id))],
            );
        }
        "aws_db_instance" => {
            let identifier = b.opt("identifier").unwrap_or(id);
            db_delete(
                c,
                b,
                "DeleteDBInstance",
                "DBInstanceIdentifier",
                identifier,
                "database",
            );
        }
        "aws_rds_cluster" => {
            let identifier = b.opt("cluster_identifier").unwrap_or(id);
            let global = b.s("global_cluster_identifier");
            if !global.is_empty() {
                c.push(
                    "rds",
                    "RemoveFromGlobalCluster",
                    &[
                        ("DbClusterIdentifier", b.s("arn")),
                        ("GlobalClusterIdentifier", global),
                    ],
                );
            }
            db_delete(
                c,
                b,
                "DeleteDBCluster",
                "DBClusterIdentifier",
                identifier,
                "cluster",
            );
        }
        "aws_db_snapshot" => {
            let name = b.opt("db_snapshot_identifier").unwrap_or(id);
            c.push("rds", "DeleteDBSnapshot", &[("DBSnapshotIdentifier", name)]);
            c.irreversible("deletes a database snapshot");
        }
        "aws_s3_bucket" => s3_bucket(c, b, id),
        "aws_s3_object" => {
            let bucket = b.s("bucket");
            let key = b.opt("key").unwrap_or(id);
            if b.s("version_id").is_empty() || b.s("version_id") == "null" {
                c.push("s3", "DeleteObject", &[("Bucket", bucket), ("Key", key)]);
            } else {
                c.push("s3", "DeleteObject", &[("Bucket", bucket), ("Key", key)])
                    .within(
                        &["versionId"],
                        "every version of this key (only the current one is in the plan)",
                    );
                c.irreversible("deletes every version of an object in a versioned bucket");
            }
        }
        "aws_s3_bucket_versioning" => {
            let enabled = b
                .get("versioning_configuration")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|v| v.get("status"))
                .and_then(Value::as_str)
                == Some("Enabled");
            if !enabled {
                return Mapped::StateOnly("versioning is not enabled: nothing to suspend".into());
            }
            // The provider sends exactly `Status=Suspended` (no MFADelete, no x-amz-mfa):
            // bound, so the entry cannot set versioning to anything else.
            let mut params = vec![
                ("Bucket", b.s("bucket")),
                ("versioning", String::new()),
                ("Status", "Suspended".to_owned()),
            ];
            if let Some(owner) = b.opt("expected_bucket_owner") {
                params.push(("x-amz-expected-bucket-owner", owner));
            }
            c.push("s3", "PutBucketVersioning", &params)
                .checksums_free()
                .note = Some("suspends versioning (Status=Suspended)".into());
        }
        "aws_dynamodb_table" => {
            c.push(
                "dynamodb",
                "DeleteTable",
                &[("TableName", b.opt("name").unwrap_or(id))],
            );
            let pitr = b
                .get("point_in_time_recovery")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|p| p.get("enabled"))
                .and_then(Value::as_bool)
                == Some(true);
            if pitr {
                c.irreversible("deletes the table's point-in-time recovery backups");
            }
        }
        "aws_lambda_function" => {
            if b.flag("skip_destroy") {
                return Mapped::StateOnly(
                    "skip_destroy: Terraform forgets it, AWS keeps it".into(),
                );
            }
            c.push(
                "lambda",
                "DeleteFunction",
                &[("FunctionName", b.opt("function_name").unwrap_or(id))],
            );
        }
        "aws_iam_role" => {
            let role = b.opt("name").unwrap_or(id);
            c.push(
                "iam",
                "RemoveRoleFromInstanceProfile",
                &[("RoleName", role.clone())],
            )
            .within(
                &["InstanceProfileName"],
                "the role's instance profiles as found at apply time (not in the plan)",
            );
            for arn in b.strings("managed_policy_arns") {
                c.push(
                    "iam",
                    "DetachRolePolicy",
                    &[("RoleName", role.clone()), ("PolicyArn", arn)],
                );
            }
            for name in b.block_names("inline_policy") {
                c.push(
                    "iam",
                    "DeleteRolePolicy",
                    &[("RoleName", role.clone()), ("PolicyName", name)],
                );
            }
            c.push("iam", "DeleteRole", &[("RoleName", role)]);
        }
        "aws_iam_policy" => {
            let arn = b.opt("arn").unwrap_or(id);
            c.push("iam", "DeletePolicyVersion", &[("PolicyArn", arn.clone())])
                .within(
                    &["VersionId"],
                    "the policy's non-default versions (not in the plan)",
                );
            c.push("iam", "DeletePolicy", &[("PolicyArn", arn)]);
        }
        "aws_iam_role_policy_attachment" => {
            c.push(
                "iam",
                "DetachRolePolicy",
                &[("RoleName", b.s("role")), ("PolicyArn", b.s("policy_arn"))],
            );
        }
        "aws_iam_instance_profile" => {
            let name = b.opt("name").unwrap_or(id);
            let role = b.s("role");
            if !role.is_empty() {
                c.push(
                    "iam",
                    "RemoveRoleFromInstanceProfile",
                    &[("InstanceProfileName", name.clone()), ("RoleName", role)],
                );
            }
            c.push(
                "iam",
                "DeleteInstanceProfile",
                &[("InstanceProfileName", name)],
            );
        }
        "aws_ecs_cluster" => {
            c.push(
                "ecs",
                "DeleteCluster",
                &[("cluster", b.opt("arn").unwrap_or(id))],
            )
            .repeats(5, "retried while services or tasks remain");
        }
        "aws_ecs_service" => {
            let cluster = b.s("cluster");
            if !b.flag("force_delete") {
                c.push(
                    "ecs",
                    "UpdateService",
                    &[
                        ("cluster", cluster.clone()),
                        ("service", id.clone()),
                        ("desiredCount", "0".into()),
                    ],
                )
                .note = Some("scales the service to 0 before deleting it".into());
            }
            c.push(
                "ecs",
                "DeleteService",
                &[
                    ("cluster", cluster),
                    ("service", id),
                    ("force", b.bool_text("force_delete")),
                ],
            );
        }
        "aws_ecs_task_definition" => {
            if b.flag("skip_destroy") {
                return Mapped::StateOnly(
                    "skip_destroy: Terraform forgets it, AWS keeps it".into(),
                );
            }
            c.push(
                "ecs",
                "DeregisterTaskDefinition",
                &[("taskDefinition", b.opt("arn").unwrap_or(id))],
            );
        }
        "aws_lb" => {
            c.push(
                "elbv2",
                "DeleteLoadBalancer",
                &[("LoadBalancerArn", b.opt("arn").unwrap_or(id))],
            );
        }
        "aws_lb_listener" => {
            c.push(
                "elbv2",
                "DeleteListener",
                &[("ListenerArn", b.opt("arn").unwrap_or(id))],
            );
        }
        "aws_lb_target_group" => {
            c.push(
                "elbv2",
                "DeleteTargetGroup",
                &[("TargetGroupArn", b.opt("arn").unwrap_or(id))],
            );
        }
        "aws_kms_key" => {
            let key = b.opt("key_id").unwrap_or(id);
            let window = b.s("deletion_window_in_days");
            let mut params = vec![("KeyId", key)];
            if !window.is_empty() {
                params.push(("PendingWindowInDays", window.clone()));
            }
            c.push("kms", "ScheduleKeyDeletion", &params);
            let days = if window.is_empty() {
                "30".to_owned()
            } else {
                window
            };
            c.irreversible(format!(
                "schedules KMS key deletion in {days} days: data encrypted under it becomes unreadable"
            ));
        }
        "aws_kms_alias" => {
            c.push(
                "kms",
                "DeleteAlias",
                &[("AliasName", b.opt("name").unwrap_or(id))],
            );
        }
        "aws_secretsmanager_secret" => {
            let secret = b.opt("arn").unwrap_or(id);
            let window = b.s("recovery_window_in_days");
            if window == "0" {
                c.push(
                    "secretsmanager",
                    "DeleteSecret",
                    &[
                        ("SecretId", secret),
                        ("ForceDeleteWithoutRecovery", "true".into()),
                    ],
                );
                c.irreversible("deletes a secret with no recovery window");
            } else {
                let window = if window.is_empty() {
                    "30".to_owned()
                } else {
                    window
                };
                c.push(
                    "secretsmanager",
                    "DeleteSecret",
                    &[("SecretId", secret), ("RecoveryWindowInDays", window)],
                );
            }
        }
        "aws_secretsmanager_secret_version" => {
            let stages: Vec<String> = b
                .strings("version_stages")
                .into_iter()
                .filter(|s| s != "AWSCURRENT")
                .collect();
            if stages.is_empty() {
                return Mapped::StateOnly("its only stage is AWSCURRENT: no call is made".into());
            }
            for stage in stages {
                c.push(
                    "secretsmanager",
                    "UpdateSecretVersionStage",
                    &[
                        ("SecretId", b.s("secret_id")),
                        ("VersionStage", stage),
                        ("RemoveFromVersionId", b.s("version_id")),
                    ],
                );
            }
        }
        "aws_sqs_queue" => {
            c.push(
                "sqs",
                "DeleteQueue",
                &[("QueueUrl", b.opt("url").unwrap_or(id))],
            );
        }
        "aws_sns_topic" => {
            c.push(
                "sns",
                "DeleteTopic",
                &[("TopicArn", b.opt("arn").unwrap_or(id))],
            );
        }
        "aws_cloudwatch_log_group" => {
            if b.flag("skip_destroy") {
                return Mapped::StateOnly(
                    "skip_destroy: Terraform forgets it, AWS keeps it".into(),
                );
            }
            c.push(
                "logs",
                "DeleteLogGroup",
                &[("logGroupName", b.opt("name").unwrap_or(id))],
            );
            c.irreversible("deletes the log group and its log events");
        }
        "aws_route53_zone" => {
            let zone = b.opt("zone_id").unwrap_or(id);
            // force_destroy deletes the zone's records with ChangeResourceRecordSets, whose
            // batch the plan cannot fix: those calls are held one by one.
            c.push("route53", "DeleteHostedZone", &[("Id", zone)]);
        }
        "aws_ecr_repository" => {
            let mut params = vec![
                ("repositoryName", b.opt("name").unwrap_or(id)),
                ("registryId", b.s("registry_id")),
            ];
            if b.flag("force_delete") {
                params.push(("force", "true".into()));
                c.irreversible("force_delete: deletes the repository's images");
            }
            c.push("ecr", "DeleteRepository", &params);
        }
        "aws_backup_vault" => {
            let name = b.opt("name").unwrap_or(id);
            if b.flag("force_destroy") {
                c.push("backup", "DeleteRecoveryPoint", &[("backupVaultName", name.clone())])
                    .within(
                        &["recoveryPointArn"],
                        "force_destroy: every recovery point the vault holds at apply time (not in the plan)",
                    );
                c.irreversible("force_destroy: deletes every recovery point in the vault");
            }
            c.push("backup", "DeleteBackupVault", &[("backupVaultName", name)]);
        }
        "aws_efs_file_system" => {
            c.push("efs", "DeleteFileSystem", &[("FileSystemId", id)]);
            c.irreversible("deletes the file system and its data");
        }
        "aws_efs_mount_target" => {
            c.push("efs", "DeleteMountTarget", &[("MountTargetId", id)]);
        }
        "aws_elasticache_cluster" => {
            let mut params = vec![("CacheClusterId", b.opt("cluster_id").unwrap_or(id))];
            match b.opt("final_snapshot_identifier") {
                Some(s) => params.push(("FinalSnapshotIdentifier", s)),
                None => c.irreversible("no final snapshot of the cache cluster"),
            }
            c.push("elasticache", "DeleteCacheCluster", &params);
        }
        other => {
            let why = NOT_COVERED_TYPES.iter().find(|(t, _)| *t == other).map_or(
                "airlock does not know this type's delete calls",
                |(_, why)| why,
            );
            return Mapped::No(format!(
                "not covered: {why}; its calls will be held one by one as today"
            ));
        }
    }
    Mapped::Calls
}

/// `DeleteDBInstance` / `DeleteDBCluster`: the snapshot and backup options the plan fixes.
fn db_delete(
    c: &mut Calls,
    b: &Before<'_>,
    operation: &str,
    member: &str,
    identifier: String,
    what: &str,
) {
    let skip = b.flag("skip_final_snapshot");
    let mut params = vec![
        (member, identifier),
        ("SkipFinalSnapshot", skip.to_string()),
    ];
    if !skip {
        params.push((
            "FinalDBSnapshotIdentifier",
            b.s("final_snapshot_identifier"),
        ));
    }
    // Sent when the attribute is set (the provider's default is true).
    if b.get("delete_automated_backups").is_some() {
        params.push((
            "DeleteAutomatedBackups",
            b.bool_text("delete_automated_backups"),
        ));
    }
    c.push("rds", operation, &params);
    if skip {
        c.irreversible(format!(
            "no final snapshot of the {what} (skip_final_snapshot)"
        ));
    }
    if b.flag("delete_automated_backups") {
        c.irreversible(format!("deletes the {what}'s automated backups"));
    }
    if b.flag("deletion_protection") {
        c.irreversible(format!(
            "the {what} has deletion protection on: AWS will refuse the delete"
        ));
    }
}

/// `aws_s3_bucket`: `DeleteBucket`; with `force_destroy`, first everything it holds.
fn s3_bucket(c: &mut Calls, b: &Before<'_>, id: String) {
    let bucket = b.opt("bucket").unwrap_or(id);
    if !b.flag("force_destroy") {
        c.push("s3", "DeleteBucket", &[("Bucket", bucket)]);
        return;
    }
    let object_lock = b.flag("object_lock_enabled");
    let mut delete_objects = vec![("Bucket", bucket.clone()), ("delete", String::new())];
    if object_lock {
        // A header parameter: `identify` names it by its lower-case header name.
        delete_objects.push(("x-amz-bypass-governance-retention", "true".into()));
    }
    c.push("s3", "DeleteObjects", &delete_objects).within(
        &["Object", "Quiet", CONTENT_MD5, CHECKSUM_ALGORITHM],
        "force_destroy: the objects, versions and delete markers the bucket holds at apply time (not in the plan)",
    );
    c.push("s3", "DeleteObject", &[("Bucket", bucket.clone())])
        .within(
            &["Key", "versionId"],
            "force_destroy: objects deleted one by one (keys not in the plan)",
        );
    if object_lock {
        // The provider only switches holds off: `Status=OFF` is bound, so the entry cannot
        // put a hold on.
        c.push(
            "s3",
            "PutObjectLegalHold",
            &[
                ("Bucket", bucket.clone()),
                ("legal-hold", String::new()),
                ("Status", "OFF".into()),
            ],
        )
        .within(
            &["Key", "versionId", CONTENT_MD5, CHECKSUM_ALGORITHM],
            "force_destroy on an object-lock bucket: legal holds switched off (keys not in the plan)",
        );
    }
    c.push("s3", "DeleteBucket", &[("Bucket", bucket)]).repeats(
        4,
        "force_destroy: tried first, refused (409 BucketNotEmpty) while objects remain, sent again after emptying",
    );
    c.irreversible("force_destroy: deletes every object and version the bucket holds");
}
