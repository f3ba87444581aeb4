//! The mapping of each covered type, the plan's checks and digest, and what an entry covers.

use super::mapping::{destroyed, plan_account, Coverage, Defaults, PlannedCall, COVERED_TYPES};
use super::{Plan, PlanError};
use crate::identify::AwsCall;
use crate::receipt::PlanEntry;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "eu-west-1";

fn change(t: &str, actions: &[&str], before: Value) -> Value {
    json!({
        "address": format!("{t}.x"),
        "mode": "managed",
        "type": t,
        "name": "x",
        "provider_name": "registry.terraform.io/hashicorp/aws",
        "change": {"actions": actions, "before": before, "after": null},
    })
}

fn defaults() -> Defaults<'static> {
    Defaults {
        region: Some(REGION),
        account: Some(ACCOUNT),
    }
}

/// The calls one destroyed resource maps to, as `service:Operation {k=v ...} free=[..] uses`.
fn calls_of(t: &str, before: Value) -> Vec<String> {
    let d = destroyed(&[change(t, &["delete"], before)], &defaults());
    assert_eq!(d.len(), 1);
    match &d[0].coverage {
        Coverage::Covered { calls } => calls.iter().map(show).collect(),
        other => panic!("{t} not covered: {other:?}"),
    }
}

fn show(c: &PlannedCall) -> String {
    let params: Vec<String> = c.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut s = format!("{}:{} {}", c.service, c.operation, params.join(" "));
    if !c.free.is_empty() {
        s.push_str(&format!(" free={}", c.free.join(",")));
    }
    match c.uses {
        Some(1) => {}
        Some(n) => s.push_str(&format!(" uses={n}")),
        None => s.push_str(" uses=any"),
    }
    s
}

fn irreversible_of(t: &str, before: Value) -> Vec<String> {
    destroyed(&[change(t, &["delete"], before)], &defaults())[0]
        .irreversible
        .clone()
}

#[test]
fn network_types_map_to_their_deletes() {
    assert_eq!(
        calls_of("aws_vpc", json!({"id": "vpc-1"})),
        ["ec2:DeleteVpc VpcId=vpc-1"]
    );
    assert_eq!(
        calls_of("aws_subnet", json!({"id": "subnet-1"})),
        ["ec2:DeleteSubnet SubnetId=subnet-1"]
    );
    assert_eq!(
        calls_of(
            "aws_security_group",
            json!({"id": "sg-1", "revoke_rules_on_delete": false})
        ),
        ["ec2:DeleteSecurityGroup GroupId=sg-1"]
    );
    assert_eq!(
        calls_of(
            "aws_security_group",
            json!({"id": "sg-1", "revoke_rules_on_delete": true})
        ),
        [
            "ec2:RevokeSecurityGroupIngress GroupId=sg-1 free=SecurityGroupRuleId uses=any",
            "ec2:RevokeSecurityGroupEgress GroupId=sg-1 free=SecurityGroupRuleId uses=any",
            "ec2:DeleteSecurityGroup GroupId=sg-1",
        ]
    );
    assert_eq!(
        calls_of(
            "aws_vpc_security_group_ingress_rule",
            json!({"id": "sgr-1", "security_group_id": "sg-1"})
        ),
        ["ec2:RevokeSecurityGroupIngress GroupId=sg-1 SecurityGroupRuleId.1=sgr-1"]
    );
    assert_eq!(
        calls_of(
            "aws_internet_gateway",
            json!({"id": "igw-1", "vpc_id": "vpc-1"})
        ),
        [
            "ec2:DetachInternetGateway InternetGatewayId=igw-1 VpcId=vpc-1",
            "ec2:DeleteInternetGateway InternetGatewayId=igw-1",
        ]
    );
    assert_eq!(
        calls_of("aws_route_table", json!({"id": "rtb-1"})),
        ["ec2:DeleteRouteTable RouteTableId=rtb-1"]
    );
    assert_eq!(
        calls_of("aws_route_table_association", json!({"id": "rtbassoc-1"})),
        ["ec2:DisassociateRouteTable AssociationId=rtbassoc-1"]
    );
    assert_eq!(
        calls_of(
            "aws_eip",
            json!({"id": "eipalloc-1", "allocation_id": "eipalloc-1", "association_id": "eipassoc-1"})
        ),
        [
            "ec2:DisassociateAddress AssociationId=eipassoc-1",
            "ec2:ReleaseAddress AllocationId=eipalloc-1",
        ]
    );
    assert_eq!(
        calls_of("aws_eip", json!({"id": "eipalloc-1", "association_id": ""})),
        ["ec2:ReleaseAddress AllocationId=eipalloc-1"]
    );
    assert_eq!(
        calls_of("aws_nat_gateway", json!({"id": "nat-1"})),
        ["ec2:DeleteNatGateway NatGatewayId=nat-1"]
    );
}

#[test]
fn an_instance_has_termination_protection_switched_off_first() {
    assert_eq!(
        calls_of(
            "aws_instance",
            json!({"id": "i-1", "disable_api_termination": true})
        ),
        [
            "ec2:ModifyInstanceAttribute DisableApiTermination.Value=false InstanceId=i-1",
            "ec2:TerminateInstances InstanceId.1=i-1",
        ]
    );
    assert_eq!(
        calls_of(
            "aws_instance",
            json!({"id": "i-1", "disable_api_stop": true})
        ),
        [
            "ec2:ModifyInstanceAttribute DisableApiTermination.Value=false InstanceId=i-1",
            "ec2:ModifyInstanceAttribute DisableApiStop.Value=true InstanceId=i-1",
            "ec2:TerminateInstances InstanceId.1=i-1",
        ]
    );
    let spot = destroyed(
        &[change(
            "aws_instance",
            &["delete"],
            json!({"id": "i-1", "instance_lifecycle": "spot"}),
        )],
        &defaults(),
    );
    assert!(matches!(spot[0].coverage, Coverage::NotCovered { .. }));
}

#[test]
fn volumes_and_snapshots_are_irreversible() {
    assert_eq!(
        calls_of("aws_ebs_volume", json!({"id": "vol-1"})),
        ["ec2:DeleteVolume VolumeId=vol-1"]
    );
    assert_eq!(
        calls_of("aws_ebs_snapshot", json!({"id": "snap-1"})),
        ["ec2:DeleteSnapshot SnapshotId=snap-1"]
    );
    assert!(!irreversible_of("aws_ebs_snapshot", json!({"id": "snap-1"})).is_empty());
    assert_eq!(
        calls_of(
            "aws_db_snapshot",
            json!({"id": "s", "db_snapshot_identifier": "s"})
        ),
        ["rds:DeleteDBSnapshot DBSnapshotIdentifier=s"]
    );
    assert!(!irreversible_of("aws_db_snapshot", json!({"id": "s"})).is_empty());
}

#[test]
fn a_database_delete_carries_the_snapshot_options_of_the_plan() {
    let skip = json!({"id": "db-ABC", "identifier": "prod-db", "skip_final_snapshot": true,
                      "delete_automated_backups": true});
    assert_eq!(
        calls_of("aws_db_instance", skip.clone()),
        ["rds:DeleteDBInstance DBInstanceIdentifier=prod-db DeleteAutomatedBackups=true SkipFinalSnapshot=true"]
    );
    let why = irreversible_of("aws_db_instance", skip);
    assert!(
        why.iter().any(|w| w.contains("no final snapshot")),
        "{why:?}"
    );
    assert!(
        why.iter().any(|w| w.contains("automated backups")),
        "{why:?}"
    );
    let keep = json!({"id": "db-ABC", "identifier": "prod-db", "skip_final_snapshot": false,
                      "final_snapshot_identifier": "last", "delete_automated_backups": false});
    assert_eq!(
        calls_of("aws_db_instance", keep.clone()),
        ["rds:DeleteDBInstance DBInstanceIdentifier=prod-db DeleteAutomatedBackups=false FinalDBSnapshotIdentifier=last SkipFinalSnapshot=false"]
    );
    assert!(irreversible_of("aws_db_instance", keep).is_empty());
    assert_eq!(
        calls_of(
            "aws_rds_cluster",
            json!({"id": "c", "cluster_identifier": "c", "skip_final_snapshot": true,
                   "global_cluster_identifier": "g", "arn": format!("arn:aws:rds:{REGION}:{ACCOUNT}:cluster:c")})
        ),
        [
            format!("rds:RemoveFromGlobalCluster DbClusterIdentifier=arn:aws:rds:{REGION}:{ACCOUNT}:cluster:c GlobalClusterIdentifier=g"),
            "rds:DeleteDBCluster DBClusterIdentifier=c SkipFinalSnapshot=true".into(),
        ]
    );
    assert_eq!(
        calls_of("aws_db_subnet_group", json!({"id": "g", "name": "g"})),
        ["rds:DeleteDBSubnetGroup DBSubnetGroupName=g"]
    );
}

#[test]
fn a_force_destroy_bucket_is_covered_only_inside_the_bucket() {
    assert_eq!(
        calls_of(
            "aws_s3_bucket",
            json!({"id": "b", "bucket": "b", "force_destroy": false})
        ),
        ["s3:DeleteBucket Bucket=b"]
    );
    assert_eq!(
        calls_of(
            "aws_s3_bucket",
            json!({"id": "b", "bucket": "b", "force_destroy": true})
        ),
        [
            "s3:DeleteObjects Bucket=b delete= free=Object,Quiet,content-md5,x-amz-sdk-checksum-algorithm uses=any",
            "s3:DeleteObject Bucket=b free=Key,versionId uses=any",
            "s3:DeleteBucket Bucket=b uses=4",
        ]
    );
    assert!(
        irreversible_of("aws_s3_bucket", json!({"id": "b", "force_destroy": true}))
            .iter()
            .any(|w| w.contains("force_destroy"))
    );
    let locked = calls_of(
        "aws_s3_bucket",
        json!({"id": "b", "bucket": "b", "force_destroy": true, "object_lock_enabled": true}),
    );
    assert!(
        locked[0].contains("x-amz-bypass-governance-retention=true"),
        "{locked:?}"
    );
    assert!(
        locked
            .iter()
            .any(|c| c.starts_with("s3:PutObjectLegalHold")),
        "{locked:?}"
    );
    assert_eq!(
        calls_of(
            "aws_s3_object",
            json!({"id": "k", "bucket": "b", "key": "k", "version_id": ""})
        ),
        ["s3:DeleteObject Bucket=b Key=k"]
    );
    assert_eq!(
        calls_of(
            "aws_s3_object",
            json!({"id": "k", "bucket": "b", "key": "k", "version_id": "v1"})
        ),
        ["s3:DeleteObject Bucket=b Key=k free=versionId uses=any"]
    );
    let versioning = |status: &str| {
        destroyed(
            &[change(
                "aws_s3_bucket_versioning",
                &["delete"],
                json!({"id": "b", "bucket": "b", "versioning_configuration": [{"status": status}]}),
            )],
            &defaults(),
        )[0]
        .coverage
        .clone()
    };
    assert!(matches!(
        versioning("Suspended"),
        Coverage::StateOnly { .. }
    ));
    assert!(matches!(versioning("Enabled"), Coverage::Covered { .. }));
}

#[test]
fn data_services_map_to_their_deletes() {
    assert_eq!(
        calls_of("aws_dynamodb_table", json!({"id": "t", "name": "t"})),
        ["dynamodb:DeleteTable TableName=t"]
    );
    assert_eq!(
        calls_of(
            "aws_lambda_function",
            json!({"id": "f", "function_name": "f"})
        ),
        ["lambda:DeleteFunction FunctionName=f"]
    );
    assert_eq!(
        calls_of(
            "aws_kms_key",
            json!({"id": "k", "key_id": "k", "deletion_window_in_days": 7})
        ),
        ["kms:ScheduleKeyDeletion KeyId=k PendingWindowInDays=7"]
    );
    assert_eq!(
        calls_of("aws_kms_key", json!({"id": "k", "key_id": "k"})),
        ["kms:ScheduleKeyDeletion KeyId=k"]
    );
    assert!(irreversible_of("aws_kms_key", json!({"id": "k"}))[0].contains("KMS key deletion"));
    assert_eq!(
        calls_of("aws_kms_alias", json!({"id": "alias/a", "name": "alias/a"})),
        ["kms:DeleteAlias AliasName=alias/a"]
    );
    assert_eq!(
        calls_of("aws_secretsmanager_secret", json!({"id": "arn:s", "arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:s", "recovery_window_in_days": 0})),
        ["secretsmanager:DeleteSecret ForceDeleteWithoutRecovery=true SecretId=arn:aws:secretsmanager:eu-west-1:123456789012:secret:s"]
    );
    assert_eq!(
        calls_of("aws_secretsmanager_secret", json!({"id": "s", "arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:s", "recovery_window_in_days": 7})),
        ["secretsmanager:DeleteSecret RecoveryWindowInDays=7 SecretId=arn:aws:secretsmanager:eu-west-1:123456789012:secret:s"]
    );
    assert_eq!(
        calls_of(
            "aws_secretsmanager_secret_version",
            json!({"id": "s|v", "secret_id": "s", "version_id": "v", "version_stages": ["AWSCURRENT", "custom"]})
        ),
        ["secretsmanager:UpdateSecretVersionStage RemoveFromVersionId=v SecretId=s VersionStage=custom"]
    );
    assert_eq!(
        calls_of(
            "aws_sqs_queue",
            json!({"id": "https://sqs.eu-west-1.amazonaws.com/123456789012/q", "url": "https://sqs.eu-west-1.amazonaws.com/123456789012/q"})
        ),
        ["sqs:DeleteQueue QueueUrl=https://sqs.eu-west-1.amazonaws.com/123456789012/q"]
    );
    assert_eq!(
        calls_of(
            "aws_sns_topic",
            json!({"id": "arn:aws:sns:eu-west-1:123456789012:t", "arn": "arn:aws:sns:eu-west-1:123456789012:t"})
        ),
        ["sns:DeleteTopic TopicArn=arn:aws:sns:eu-west-1:123456789012:t"]
    );
    assert_eq!(
        calls_of("aws_cloudwatch_log_group", json!({"id": "g", "name": "g"})),
        ["logs:DeleteLogGroup logGroupName=g"]
    );
    assert_eq!(
        calls_of(
            "aws_ecr_repository",
            json!({"id": "r", "name": "r", "registry_id": ACCOUNT, "force_delete": true})
        ),
        [format!(
            "ecr:DeleteRepository force=true registryId={ACCOUNT} repositoryName=r"
        )]
    );
    assert_eq!(
        calls_of(
            "aws_backup_vault",
            json!({"id": "v", "name": "v", "force_destroy": true})
        ),
        [
            "backup:DeleteRecoveryPoint backupVaultName=v free=recoveryPointArn uses=any",
            "backup:DeleteBackupVault backupVaultName=v",
        ]
    );
    assert!(irreversible_of(
        "aws_backup_vault",
        json!({"id": "v", "force_destroy": true})
    )[0]
    .contains("recovery point"));
    assert_eq!(
        calls_of("aws_efs_file_system", json!({"id": "fs-1"})),
        ["efs:DeleteFileSystem FileSystemId=fs-1"]
    );
    assert_eq!(
        calls_of("aws_efs_mount_target", json!({"id": "fsmt-1"})),
        ["efs:DeleteMountTarget MountTargetId=fsmt-1"]
    );
    assert_eq!(
        calls_of(
            "aws_elasticache_cluster",
            json!({"id": "c", "cluster_id": "c", "final_snapshot_identifier": "f"})
        ),
        ["elasticache:DeleteCacheCluster CacheClusterId=c FinalSnapshotIdentifier=f"]
    );
    assert_eq!(
        calls_of(
            "aws_route53_zone",
            json!({"id": "Z1", "zone_id": "Z1", "force_destroy": true})
        ),
        ["route53:DeleteHostedZone Id=Z1"]
    );
}

#[test]
fn iam_containers_cover_what_they_hold_only_inside_themselves() {
    assert_eq!(
        calls_of(
            "aws_iam_role",
            json!({"id": "r", "name": "r", "managed_policy_arns": ["arn:aws:iam::123456789012:policy/p"],
                   "inline_policy": [{"name": "inline", "policy": "{}"}]})
        ),
        [
            "iam:RemoveRoleFromInstanceProfile RoleName=r free=InstanceProfileName uses=any",
            "iam:DetachRolePolicy PolicyArn=arn:aws:iam::123456789012:policy/p RoleName=r",
            "iam:DeleteRolePolicy PolicyName=inline RoleName=r",
            "iam:DeleteRole RoleName=r",
        ]
    );
    assert_eq!(
        calls_of("aws_iam_policy", json!({"id": "arn:p", "arn": "arn:aws:iam::123456789012:policy/p"})),
        [
            "iam:DeletePolicyVersion PolicyArn=arn:aws:iam::123456789012:policy/p free=VersionId uses=any",
            "iam:DeletePolicy PolicyArn=arn:aws:iam::123456789012:policy/p",
        ]
    );
    assert_eq!(
        calls_of(
            "aws_iam_role_policy_attachment",
            json!({"id": "x", "role": "r", "policy_arn": "arn:p"})
        ),
        ["iam:DetachRolePolicy PolicyArn=arn:p RoleName=r"]
    );
    assert_eq!(
        calls_of(
            "aws_iam_instance_profile",
            json!({"id": "p", "name": "p", "role": "r"})
        ),
        [
            "iam:RemoveRoleFromInstanceProfile InstanceProfileName=p RoleName=r",
            "iam:DeleteInstanceProfile InstanceProfileName=p",
        ]
    );
}

#[test]
fn containers_and_load_balancers_map_to_their_deletes() {
    assert_eq!(
        calls_of(
            "aws_ecs_service",
            json!({"id": "arn:svc", "cluster": "arn:cl", "force_delete": null})
        ),
        [
            "ecs:UpdateService cluster=arn:cl desiredCount=0 service=arn:svc",
            "ecs:DeleteService cluster=arn:cl force=false service=arn:svc",
        ]
    );
    assert_eq!(
        calls_of(
            "aws_ecs_service",
            json!({"id": "arn:svc", "cluster": "arn:cl", "force_delete": true})
        ),
        ["ecs:DeleteService cluster=arn:cl force=true service=arn:svc"]
    );
    assert_eq!(
        calls_of(
            "aws_ecs_cluster",
            json!({"id": "arn:cl", "arn": "arn:aws:ecs:eu-west-1:123456789012:cluster/c"})
        ),
        ["ecs:DeleteCluster cluster=arn:aws:ecs:eu-west-1:123456789012:cluster/c uses=5"]
    );
    assert_eq!(
        calls_of("aws_ecs_task_definition", json!({"id": "f", "arn": "arn:aws:ecs:eu-west-1:123456789012:task-definition/f:1"})),
        ["ecs:DeregisterTaskDefinition taskDefinition=arn:aws:ecs:eu-west-1:123456789012:task-definition/f:1"]
    );
    for (t, op, member) in [
        ("aws_lb", "DeleteLoadBalancer", "LoadBalancerArn"),
        ("aws_lb_listener", "DeleteListener", "ListenerArn"),
        ("aws_lb_target_group", "DeleteTargetGroup", "TargetGroupArn"),
    ] {
        let arn = format!("arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:x/{t}");
        assert_eq!(
            calls_of(t, json!({"id": arn, "arn": arn})),
            [format!("elbv2:{op} {member}={arn}")]
        );
    }
}

#[test]
fn skip_destroy_and_an_awscurrent_only_version_make_no_call() {
    for t in [
        "aws_lambda_function",
        "aws_cloudwatch_log_group",
        "aws_ecs_task_definition",
    ] {
        let d = destroyed(
            &[change(
                t,
                &["delete"],
                json!({"id": "x", "skip_destroy": true}),
            )],
            &defaults(),
        );
        assert!(matches!(d[0].coverage, Coverage::StateOnly { .. }), "{t}");
    }
    let d = destroyed(
        &[change(
            "aws_secretsmanager_secret_version",
            &["delete"],
            json!({"id": "s|v", "version_stages": ["AWSCURRENT"]}),
        )],
        &defaults(),
    );
    assert!(matches!(d[0].coverage, Coverage::StateOnly { .. }));
}

#[test]
fn every_covered_type_is_mapped_and_unknown_types_are_not_guessed() {
    for t in COVERED_TYPES {
        let d = destroyed(
            &[change(t, &["delete"], json!({"id": "x", "name": "x"}))],
            &defaults(),
        );
        assert!(
            !matches!(d[0].coverage, Coverage::NotCovered { .. }),
            "{t} is listed as covered but is not"
        );
    }
    for t in [
        "aws_security_group_rule",
        "aws_route53_record",
        "aws_iam_user",
        "aws_made_up",
    ] {
        let d = destroyed(&[change(t, &["delete"], json!({"id": "x"}))], &defaults());
        match &d[0].coverage {
            Coverage::NotCovered { why } => {
                assert!(why.contains("held one by one"), "{t}: {why}")
            }
            other => panic!("{t}: {other:?}"),
        }
    }
    let other_provider = json!({
        "address": "random_id.x", "mode": "managed", "type": "random_id", "name": "x",
        "provider_name": "registry.terraform.io/hashicorp/random",
        "change": {"actions": ["delete"], "before": {"id": "x"}, "after": null},
    });
    assert!(matches!(
        destroyed(&[other_provider], &defaults())[0].coverage,
        Coverage::NotCovered { .. }
    ));
}

#[test]
fn only_deletes_and_delete_halves_of_replacements_count() {
    let changes = [
        change("aws_vpc", &["no-op"], json!({"id": "vpc-0"})),
        change("aws_vpc", &["update"], json!({"id": "vpc-u"})),
        change("aws_vpc", &["create"], Value::Null),
        change("aws_vpc", &["delete", "create"], json!({"id": "vpc-r"})),
        change("aws_vpc", &["create", "delete"], json!({"id": "vpc-c"})),
        change("aws_vpc", &["delete"], json!({"id": "vpc-d"})),
    ];
    let d = destroyed(&changes, &defaults());
    let ids: Vec<(Option<&str>, bool)> = d.iter().map(|d| (d.id.as_deref(), d.replaced)).collect();
    assert_eq!(
        ids,
        [
            (Some("vpc-r"), true),
            (Some("vpc-c"), true),
            (Some("vpc-d"), false)
        ]
    );
    let mut data = change("aws_vpc", &["delete"], json!({"id": "vpc-x"}));
    data["mode"] = json!("data");
    assert!(destroyed(&[data], &defaults()).is_empty());
}

#[test]
fn region_and_account_come_from_the_arn_before_the_defaults() {
    let arn = "arn:aws:ec2:us-east-1:999999999999:vpc/vpc-1";
    let d = destroyed(
        &[change(
            "aws_vpc",
            &["delete"],
            json!({"id": "vpc-1", "arn": arn}),
        )],
        &defaults(),
    );
    let Coverage::Covered { calls } = &d[0].coverage else {
        panic!()
    };
    assert_eq!(
        (calls[0].region.as_str(), calls[0].account.as_deref()),
        ("us-east-1", Some("999999999999"))
    );
    let no_region = destroyed(
        &[change("aws_vpc", &["delete"], json!({"id": "vpc-1"}))],
        &Defaults {
            region: None,
            account: None,
        },
    );
    assert!(matches!(no_region[0].coverage, Coverage::NotCovered { .. }));
    let changes = [
        change(
            "aws_vpc",
            &["delete"],
            json!({"id": "a", "arn": format!("arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/a")}),
        ),
        change(
            "aws_s3_bucket",
            &["delete"],
            json!({"id": "b", "arn": "arn:aws:s3:::b"}),
        ),
    ];
    assert_eq!(plan_account(&changes).as_deref(), Some(ACCOUNT));
    let two = [
        changes[0].clone(),
        change(
            "aws_vpc",
            &["delete"],
            json!({"id": "c", "arn": format!("arn:aws:ec2:{REGION}:111111111111:vpc/c")}),
        ),
    ];
    assert_eq!(plan_account(&two), None);
}

fn plan_json(changes: Value) -> Vec<u8> {
    json!({
        "format_version": "1.2",
        "terraform_version": "1.11.4",
        "timestamp": "2026-11-26T12:34:57Z",
        "resource_changes": changes,
        "prior_state": {"format_version": "1.0", "values": {}},
        "configuration": {"provider_config": {"aws": {"expressions": {"region": {"constant_value": REGION}}}}},
    })
    .to_string()
    .into_bytes()
}

#[test]
fn a_plan_is_checked_and_its_digest_ignores_the_timestamp() {
    let changes = json!([change(
        "aws_vpc",
        &["delete"],
        json!({"id": "vpc-1", "cidr": 1.5})
    )]);
    let plan = Plan::from_json(&plan_json(changes.clone())).expect("a plan");
    assert_eq!(plan.default_region.as_deref(), Some(REGION));
    assert_eq!(plan.timestamp.as_deref(), Some("2026-11-26T12:34:57Z"));
    let mut later: Value = serde_json::from_slice(&plan_json(changes.clone())).unwrap();
    later["timestamp"] = json!("2026-11-26T12:35:08Z");
    let later = Plan::from_json(later.to_string().as_bytes()).unwrap();
    assert_eq!(plan.digest(), later.digest());
    let mut other_state = later.clone();
    other_state.lineage = Some("l".into());
    other_state.serial = Some(4);
    let mut next_serial = other_state.clone();
    next_serial.serial = Some(5);
    assert_ne!(plan.digest(), other_state.digest());
    assert_ne!(other_state.digest(), next_serial.digest());
    let edited = Plan::from_json(&plan_json(json!([change(
        "aws_vpc",
        &["delete"],
        json!({"id": "vpc-2"})
    )])))
    .unwrap();
    assert_ne!(plan.digest(), edited.digest());

    for (text, wanted) in [
        ("[]", "not an object"),
        (
            r#"{"format_version":"0.1","resource_changes":[],"prior_state":{}}"#,
            "format_version",
        ),
        (
            r#"{"format_version":"1.0","values":{}}"#,
            "resource_changes",
        ),
        (
            r#"{"format_version":"1.2","resource_changes":[]}"#,
            "prior_state",
        ),
        (
            r#"{"format_version":"1.2","resource_changes":[],"prior_state":{},"errored":true}"#,
            "errored",
        ),
    ] {
        match Plan::from_json(text.as_bytes()) {
            Err(PlanError::NotAPlan(m)) => assert!(m.contains(wanted), "{text}: {m}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    assert!(matches!(Plan::from_json(b"{"), Err(PlanError::Json(_))));
}

#[test]
fn a_binary_plan_gives_the_state_lineage_and_serial() {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("tfplan", options).unwrap();
    zip.write_all(b"\x01\x02").unwrap();
    zip.start_file("tfstate", options).unwrap();
    zip.write_all(br#"{"version":4,"lineage":"abc-123","serial":7,"resources":[]}"#)
        .unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    assert!(super::is_binary_plan(&bytes));
    let plan = Plan::from_json(&plan_json(json!([])))
        .unwrap()
        .with_state_of(&bytes)
        .unwrap();
    assert_eq!(
        (plan.lineage.as_deref(), plan.serial),
        (Some("abc-123"), Some(7))
    );
    // The digest's scope says whether it binds the state: only a binary plan's does.
    assert_eq!(
        plan.digest_scope(),
        crate::receipt::DigestScope::ResourceChangesAndState
    );
    let as_json = Plan::from_json(&plan_json(json!([]))).unwrap();
    assert_eq!(
        as_json.digest_scope(),
        crate::receipt::DigestScope::ResourceChanges
    );
    assert_eq!(
        as_json.digest_scope().warning(),
        Some("submitted as JSON: the digest does not bind the state the plan was made against; submit the binary plan to bind it")
    );
    assert_eq!(plan.digest_scope().warning(), None);
    assert!(matches!(
        Plan::from_json(&plan_json(json!([])))
            .unwrap()
            .with_state_of(b"PK\x03\x04garbage"),
        Err(PlanError::Binary(_))
    ));
}

fn entry(params: &[(&str, &str)], free: &[&str]) -> PlanEntry {
    PlanEntry {
        address: "aws_s3_bucket.x".into(),
        environment: "staging".into(),
        account: Some(ACCOUNT.into()),
        region: REGION.into(),
        service: "s3".into(),
        operation: "DeleteObjects".into(),
        resources: vec!["arn:aws:s3:::b".into()],
        params: params
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        free: free.iter().map(|s| (*s).into()).collect(),
        uses: None,
    }
}

fn call(params: &[(&str, &str)]) -> AwsCall {
    AwsCall {
        service: "s3".into(),
        signing_name: "s3".into(),
        operation: "DeleteObjects".into(),
        region: REGION.into(),
        account: Some(ACCOUNT.into()),
        resources: Vec::new(),
        params: params
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[test]
fn an_entry_covers_exactly_its_parameters_plus_the_free_ones() {
    let e = entry(&[("Bucket", "b"), ("delete", "")], &["Object", "Quiet"]);
    let keys = [
        ("Bucket", "b"),
        ("delete", ""),
        ("Object.1.Key", "k"),
        ("Object.1.VersionId", "null"),
        ("Quiet", "true"),
    ];
    assert!(e.covers("staging", &call(&keys)));
    // Another environment, bucket, an extra parameter, a missing one: not covered.
    assert!(!e.covers("prod", &call(&keys)));
    let mut other_bucket = keys;
    other_bucket[0] = ("Bucket", "c");
    assert!(!e.covers("staging", &call(&other_bucket)));
    assert!(!e.covers(
        "staging",
        &call(&[
            ("Bucket", "b"),
            ("delete", ""),
            ("BypassGovernanceRetention", "true")
        ])
    ));
    assert!(!e.covers("staging", &call(&[("Bucket", "b")])));
    // A free name covers itself and its members, not names that merely start like it.
    assert!(!e.covers(
        "staging",
        &call(&[("Bucket", "b"), ("delete", ""), ("ObjectLock", "x")])
    ));
    let mut elsewhere = call(&keys);
    elsewhere.region = "us-east-1".into();
    assert!(!e.covers("staging", &elsewhere));
    let mut other_account = call(&keys);
    other_account.account = Some("111111111111".into());
    assert!(!e.covers("staging", &other_account));
}

#[test]
fn an_approved_plan_past_its_window_reads_as_expired() {
    use crate::plan::store::{PlanRecord, PlanStatus};
    let mut p = PlanRecord {
        id: "p".into(),
        status: PlanStatus::Approved,
        agent: "a".into(),
        digest: String::new(),
        digest_scope: Default::default(),
        plan_created_at: None,
        terraform_version: None,
        submitted_at: String::new(),
        environments: vec!["prod".into()],
        destroyed: Vec::new(),
        entries: Vec::new(),
        receipt_id: Some("r".into()),
        decided_by: Some("alice".into()),
        decided_at: None,
        expires_at: Some("2026-02-26T12:15:00Z".into()),
        quorums: Vec::new(),
        approved_by: Vec::new(),
    };
    let before = time::macros::datetime!(2026-02-26 12:14:59 UTC);
    let after = time::macros::datetime!(2026-02-26 12:15:00 UTC);
    assert_eq!(p.status_at(before), PlanStatus::Approved);
    assert_eq!(p.status_at(after), PlanStatus::Expired);
    p.status = PlanStatus::Spent;
    assert_eq!(p.status_at(after), PlanStatus::Spent);
    assert_eq!(p.environment_label(), "prod");
}

/// A request as the provider's SDK sends it, identified exactly as the proxy does.
fn identified(
    signing: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> AwsCall {
    identified_with_query(signing, method, path, &[], headers, body)
}

fn identified_with_query(
    signing: &str,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    body: &str,
) -> AwsCall {
    let query: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            http::HeaderValue::from_str(v).expect("value"),
        );
    }
    crate::identify::identify(&crate::identify::Request {
        signing_name: signing,
        region: REGION,
        method,
        path,
        query: &query,
        headers: &map,
        host: "localhost:8443",
        body: Some(body.as_bytes()),
        account: Some(ACCOUNT),
    })
    .unwrap_or_else(|e| panic!("{signing} {method} {path}: {e:?}"))
}

fn query(signing: &str, body: &str) -> AwsCall {
    identified(
        signing,
        "POST",
        "/",
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        body,
    )
}

fn json_call(signing: &str, target: &str, version: &str, body: &str) -> AwsCall {
    identified(
        signing,
        "POST",
        "/",
        &[
            ("content-type", &format!("application/x-amz-json-{version}")),
            ("x-amz-target", target),
        ],
        body,
    )
}

#[test]
fn the_entries_cover_the_requests_the_provider_sends() {
    let arn = |rest: &str| format!("arn:aws:{rest}");
    let cases: Vec<(&str, Value, AwsCall)> = vec![
        ("aws_vpc", json!({"id": "vpc-1"}),
         query("ec2", "Action=DeleteVpc&Version=2016-11-15&VpcId=vpc-1")),
        ("aws_instance", json!({"id": "i-1"}),
         query("ec2", "Action=ModifyInstanceAttribute&Version=2016-11-15&InstanceId=i-1&DisableApiTermination.Value=false")),
        ("aws_instance", json!({"id": "i-1"}),
         query("ec2", "Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-1")),
        ("aws_db_instance", json!({"id": "db-X", "identifier": "d", "skip_final_snapshot": true, "delete_automated_backups": true}),
         query("rds", "Action=DeleteDBInstance&Version=2014-10-31&DBInstanceIdentifier=d&SkipFinalSnapshot=true&DeleteAutomatedBackups=true")),
        ("aws_iam_role", json!({"id": "r", "name": "r"}),
         query("iam", "Action=DeleteRole&Version=2010-05-08&RoleName=r")),
        ("aws_iam_role", json!({"id": "r", "name": "r"}),
         query("iam", "Action=RemoveRoleFromInstanceProfile&Version=2010-05-08&RoleName=r&InstanceProfileName=p")),
        ("aws_lb", json!({"id": "x", "arn": arn(&format!("elasticloadbalancing:{REGION}:{ACCOUNT}:loadbalancer/app/l/1"))}),
         query("elasticloadbalancing", &format!("Action=DeleteLoadBalancer&Version=2015-12-01&LoadBalancerArn=arn%3Aaws%3Aelasticloadbalancing%3A{REGION}%3A{ACCOUNT}%3Aloadbalancer%2Fapp%2Fl%2F1"))),
        ("aws_elasticache_cluster", json!({"id": "c", "cluster_id": "c", "final_snapshot_identifier": "f"}),
         query("elasticache", "Action=DeleteCacheCluster&Version=2015-02-02&CacheClusterId=c&FinalSnapshotIdentifier=f")),
        ("aws_sns_topic", json!({"id": "t", "arn": arn(&format!("sns:{REGION}:{ACCOUNT}:t"))}),
         query("sns", &format!("Action=DeleteTopic&Version=2010-03-31&TopicArn=arn%3Aaws%3Asns%3A{REGION}%3A{ACCOUNT}%3At"))),
        ("aws_dynamodb_table", json!({"id": "t", "name": "t"}),
         json_call("dynamodb", "DynamoDB_20120810.DeleteTable", "1.0", r#"{"TableName":"t"}"#)),
        ("aws_kms_key", json!({"id": "k", "key_id": "k", "deletion_window_in_days": 7}),
         json_call("kms", "TrentService.ScheduleKeyDeletion", "1.1", r#"{"KeyId":"k","PendingWindowInDays":7}"#)),
        ("aws_secretsmanager_secret", json!({"id": "s", "arn": arn(&format!("secretsmanager:{REGION}:{ACCOUNT}:secret:s")), "recovery_window_in_days": 0}),
         json_call("secretsmanager", "secretsmanager.DeleteSecret", "1.1", &format!(r#"{{"SecretId":"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:s","ForceDeleteWithoutRecovery":true}}"#))),
        ("aws_cloudwatch_log_group", json!({"id": "g", "name": "g"}),
         json_call("logs", "Logs_20140328.DeleteLogGroup", "1.1", r#"{"logGroupName":"g"}"#)),
        ("aws_ecs_service", json!({"id": "svc", "cluster": "cl", "force_delete": true}),
         json_call("ecs", "AmazonEC2ContainerServiceV20141113.DeleteService", "1.1", r#"{"cluster":"cl","service":"svc","force":true}"#)),
        ("aws_ecr_repository", json!({"id": "r", "name": "r", "registry_id": ACCOUNT, "force_delete": true}),
         json_call("ecr", "AmazonEC2ContainerRegistry_V20150921.DeleteRepository", "1.1", &format!(r#"{{"registryId":"{ACCOUNT}","repositoryName":"r","force":true}}"#))),
        ("aws_sqs_queue", json!({"id": "q", "url": format!("https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/q")}),
         json_call("sqs", "AmazonSQS.DeleteQueue", "1.0", &format!(r#"{{"QueueUrl":"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/q"}}"#))),
        ("aws_lambda_function", json!({"id": "f", "function_name": "f"}),
         identified("lambda", "DELETE", "/2015-03-31/functions/f", &[], "")),
        ("aws_efs_file_system", json!({"id": "fs-1"}),
         identified("elasticfilesystem", "DELETE", "/2015-02-01/file-systems/fs-1", &[], "")),
        ("aws_backup_vault", json!({"id": "v", "name": "v"}),
         identified("backup", "DELETE", "/backup-vaults/v", &[], "")),
        ("aws_route53_zone", json!({"id": "Z1", "zone_id": "Z1"}),
         identified("route53", "DELETE", "/2013-04-01/hostedzone/Z1", &[], "")),
        ("aws_s3_bucket", json!({"id": "b", "bucket": "b", "force_destroy": true}),
         identified("s3", "DELETE", "/b/some/key", &[], "")),
    ];
    for (t, before, call) in cases {
        let d = destroyed(&[change(t, &["delete"], before)], &defaults());
        let entries = super::entries(&d, |_, _| "prod".to_owned());
        assert!(
            entries.iter().any(|e| e.covers("prod", &call)),
            "{t}: no entry covers {}:{} {:?}\nentries: {:?}",
            call.service,
            call.operation,
            call.params,
            entries
                .iter()
                .map(|e| (&e.operation, &e.params, &e.free))
                .collect::<Vec<_>>()
        );
    }
}

/// The entries that switch protection off bind the value the provider sends: the versioning
/// entry suspends versioning and nothing else, the legal-hold entry only takes holds off.
#[test]
fn protection_switches_bind_the_value_the_provider_sends() {
    let entries_of = |t: &str, before: Value| {
        super::entries(
            &destroyed(&[change(t, &["delete"], before)], &defaults()),
            |_, _| "prod".to_owned(),
        )
    };
    let versioning = entries_of(
        "aws_s3_bucket_versioning",
        json!({"id": "b", "bucket": "b", "versioning_configuration": [{"status": "Enabled"}]}),
    );
    let put_versioning = |body: &str, headers: &[(&str, &str)]| {
        identified_with_query("s3", "PUT", "/b", &[("versioning", "")], headers, body)
    };
    let covered =
        |entries: &[PlanEntry], call: &AwsCall| entries.iter().any(|e| e.covers("prod", call));
    let xmlns = r#"xmlns="http://s3.amazonaws.com/doc/2006-03-01/""#;
    let suspend = format!(
        "<VersioningConfiguration {xmlns}><Status>Suspended</Status></VersioningConfiguration>"
    );
    assert!(covered(&versioning, &put_versioning(&suspend, &[])));
    assert!(covered(
        &versioning,
        &put_versioning(
            &suspend,
            &[
                ("x-amz-sdk-checksum-algorithm", "CRC32"),
                ("x-amz-checksum-crc32", "AAAAAA==")
            ]
        )
    ));
    let enable = format!(
        "<VersioningConfiguration {xmlns}><Status>Enabled</Status></VersioningConfiguration>"
    );
    assert!(!covered(&versioning, &put_versioning(&enable, &[])));
    let mfa_delete = format!(
        "<VersioningConfiguration {xmlns}><MfaDelete>Disabled</MfaDelete><Status>Suspended</Status></VersioningConfiguration>"
    );
    assert!(!covered(
        &versioning,
        &put_versioning(&mfa_delete, &[("x-amz-mfa", "serial 123456")])
    ));
    assert!(!covered(&versioning, &put_versioning("", &[])));
    // An expected owner in the plan is sent, and bound.
    let owned = entries_of(
        "aws_s3_bucket_versioning",
        json!({"id": "b", "bucket": "b", "expected_bucket_owner": ACCOUNT, "versioning_configuration": [{"status": "Enabled"}]}),
    );
    assert!(covered(
        &owned,
        &put_versioning(&suspend, &[("x-amz-expected-bucket-owner", ACCOUNT)])
    ));
    assert!(!covered(
        &owned,
        &put_versioning(&suspend, &[("x-amz-expected-bucket-owner", "111111111111")])
    ));

    let locked = entries_of(
        "aws_s3_bucket",
        json!({"id": "b", "bucket": "b", "force_destroy": true, "object_lock_enabled": true}),
    );
    let legal_hold = |status: &str| {
        identified_with_query(
            "s3",
            "PUT",
            "/b/some/key",
            &[("legal-hold", ""), ("versionId", "v1")],
            &[("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==")],
            &format!("<LegalHold {xmlns}><Status>{status}</Status></LegalHold>"),
        )
    };
    assert!(covered(&locked, &legal_hold("OFF")));
    assert!(!covered(&locked, &legal_hold("ON")));
    // The governance bypass the provider sends on an object-lock bucket is covered; on a
    // bucket without object lock it is not.
    let delete = r#"<Delete><Object><Key>a</Key><VersionId>v1</VersionId></Object><Quiet>true</Quiet></Delete>"#;
    let delete_objects = |headers: &[(&str, &str)]| {
        identified_with_query("s3", "POST", "/b", &[("delete", "")], headers, delete)
    };
    let bypass = [("x-amz-bypass-governance-retention", "true")];
    assert!(covered(&locked, &delete_objects(&bypass)));
    assert!(!covered(&locked, &delete_objects(&[])));
    let plain = entries_of(
        "aws_s3_bucket",
        json!({"id": "b", "bucket": "b", "force_destroy": true}),
    );
    assert!(covered(&plain, &delete_objects(&[])));
    assert!(!covered(&plain, &delete_objects(&bypass)));
}
