use super::*;
use crate::identify::{AwsCall, Resource};
use std::collections::BTreeMap;

fn call(
    service: &str,
    operation: &str,
    params: &[(&str, &str)],
    resource: Option<(&str, &str, Option<&str>)>,
) -> AwsCall {
    AwsCall {
        service: service.into(),
        signing_name: service.into(),
        operation: operation.into(),
        region: "us-east-1".into(),
        account: Some("111111111111".into()),
        resources: resource
            .map(|(m, v, a)| {
                vec![Resource {
                    member: m.into(),
                    value: v.into(),
                    arn: a.map(str::to_string),
                }]
            })
            .unwrap_or_default(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn builtin_only() -> Policy {
    Policy {
        mode: Mode::Enforce,
        rules: vec![],
        builtin: true,
        ..Default::default()
    }
}

#[test]
fn the_catalogue_gates_destructive_verbs_and_lets_reads_through() {
    let p = builtin_only();
    let d = p.decide(
        &call(
            "rds",
            "DeleteDBInstance",
            &[("DBInstanceIdentifier", "prod-db")],
            None,
        ),
        "a",
        "prod",
    );
    assert_eq!(d.effect, Effect::RequireReceipt);
    assert_eq!(d.rule, "builtin:destructive-verb");
    assert!(!d.irreversible);
    assert_eq!(
        p.decide(&call("rds", "DescribeDBInstances", &[], None), "a", "prod")
            .effect,
        Effect::Allow
    );
    assert_eq!(
        p.decide(&call("ec2", "TerminateInstances", &[], None), "a", "prod")
            .effect,
        Effect::RequireReceipt
    );
    assert_eq!(
        p.decide(&call("s3", "DeleteObjects", &[], None), "a", "prod")
            .effect,
        Effect::RequireReceipt
    );
}

#[test]
fn the_incident_call_is_irreversible() {
    let p = builtin_only();
    let params = [
        ("DBInstanceIdentifier", "tf-rig-db"),
        ("SkipFinalSnapshot", "true"),
        ("DeleteAutomatedBackups", "true"),
    ];
    let d = p.decide(
        &call("rds", "DeleteDBInstance", &params, None),
        "tf",
        "prod",
    );
    assert_eq!(d.effect, Effect::RequireReceipt);
    assert!(d.irreversible);
    let safe = [
        ("DBInstanceIdentifier", "db"),
        ("SkipFinalSnapshot", "false"),
        ("FinalDBSnapshotIdentifier", "final"),
    ];
    assert!(
        !p.decide(&call("rds", "DeleteDBInstance", &safe, None), "tf", "prod")
            .irreversible
    );
    assert!(
        p.decide(&call("rds", "DeleteDBSnapshot", &[], None), "tf", "prod")
            .irreversible
    );
}

#[test]
fn destruction_behind_other_verbs() {
    let p = builtin_only();
    let gated = |svc: &str, op: &str, params: &[(&str, &str)]| {
        p.decide(&call(svc, op, params, None), "a", "e").effect == Effect::RequireReceipt
    };
    assert!(gated(
        "rds",
        "ModifyDBInstance",
        &[("DeletionProtection", "false")]
    ));
    assert!(gated(
        "rds",
        "ModifyDBInstance",
        &[("BackupRetentionPeriod", "0")]
    ));
    assert!(!gated(
        "rds",
        "ModifyDBInstance",
        &[("BackupRetentionPeriod", "7")]
    ));
    assert!(gated(
        "dynamodb",
        "UpdateTable",
        &[("DeletionProtectionEnabled", "false")]
    ));
    assert!(!gated(
        "dynamodb",
        "UpdateTable",
        &[("DeletionProtectionEnabled", "true")]
    ));
    assert!(gated(
        "ec2",
        "ModifyInstanceAttribute",
        &[("DisableApiTermination.Value", "false")]
    ));
    assert!(gated("kms", "ScheduleKeyDeletion", &[]));
    assert!(gated(
        "s3",
        "PutBucketVersioning",
        &[("Status", "Suspended")]
    ));
    assert!(!gated(
        "s3",
        "PutBucketVersioning",
        &[("Status", "Enabled")]
    ));
    assert!(gated(
        "s3",
        "PutBucketLifecycleConfiguration",
        &[("Rule.Expiration.Days", "1")]
    ));
    assert!(gated(
        "s3",
        "PutBucketLifecycleConfiguration",
        &[("Rule.2.NoncurrentVersionExpiration.NoncurrentDays", "3")]
    ));
    assert!(!gated(
        "s3",
        "PutBucketLifecycleConfiguration",
        &[("Rule.Transition.Days", "30")]
    ));
    // Numbers are read as AWS reads them.
    assert!(gated(
        "rds",
        "ModifyDBInstance",
        &[("BackupRetentionPeriod", "00")]
    ));
    assert!(gated(
        "rds",
        "ModifyDBInstance",
        &[("BackupRetentionPeriod", "+0")]
    ));
}

#[test]
fn deny_beats_receipt_beats_allow_and_conditions_select() {
    let rules = rules_from(
        r#"
        [[rule]]
        name = "allow-staging"
        effect = "allow"
        actions = ["rds:*"]
        environments = ["staging"]

        [[rule]]
        name = "no-prod-final-skip"
        effect = "deny"
        actions = ["rds:DeleteDBInstance"]
        resources = ["arn:aws:rds:*:*:db:prod-*"]
        environments = ["prod"]
        when = { SkipFinalSnapshot = "true" }
        reason = "prod databases keep a final snapshot"
        "#,
    );
    let p = Policy {
        mode: Mode::Enforce,
        rules,
        builtin: true,
        ..Default::default()
    };
    let prod = Some((
        "DBInstanceIdentifier",
        "prod-db",
        Some("arn:aws:rds:us-east-1:111111111111:db:prod-db"),
    ));
    let skip = call(
        "rds",
        "DeleteDBInstance",
        &[("SkipFinalSnapshot", "TRUE")],
        prod,
    );
    let d = p.decide(&skip, "a", "prod");
    assert_eq!(
        (d.effect, d.rule.as_str()),
        (Effect::Deny, "no-prod-final-skip")
    );
    assert_eq!(d.reason, "prod databases keep a final snapshot");
    let keep = call(
        "rds",
        "DeleteDBInstance",
        &[("SkipFinalSnapshot", "false")],
        prod,
    );
    assert_eq!(p.decide(&keep, "a", "prod").effect, Effect::RequireReceipt);
    // Allowed in staging by a rule, but the catalogue's receipt requirement is stronger.
    assert_eq!(
        p.decide(&keep, "a", "staging").effect,
        Effect::RequireReceipt
    );
    let staging = Some((
        "DBInstanceIdentifier",
        "staging-db",
        Some("arn:aws:rds:us-east-1:111111111111:db:staging-db"),
    ));
    let other = call(
        "rds",
        "DeleteDBInstance",
        &[("SkipFinalSnapshot", "true")],
        staging,
    );
    assert_eq!(
        p.decide(&other, "a", "prod").effect,
        Effect::RequireReceipt,
        "deny is scoped to prod-*"
    );
    assert_eq!(
        p.decide(
            &call("rds", "DescribeDBInstances", &[], None),
            "a",
            "staging"
        )
        .rule,
        "allow-staging"
    );
}

#[test]
fn destructive_verbs_are_computed_over_the_operation_table() {
    // Every operation the verb globs gate is one the table names with a destructive verb,
    // and the other way round.
    let m = crate::aws::model();
    let mut gated = 0;
    for (name, svc) in &m.services {
        for op in svc.operations().keys() {
            let c = call(name, op, &[], None);
            let by_rule = builtin::rules()[0].matches(&c, "", "");
            let by_name = builtin::is_destructive_name(op);
            if by_name {
                assert!(by_rule, "{name}:{op} is destructive by name but not gated");
                gated += 1;
            }
            if by_rule && !by_name {
                // The glob is a prefix match; the table check wants a word boundary.
                assert!(
                    DESTRUCTIVE_VERBS.iter().any(|v| op.starts_with(v)),
                    "{name}:{op}"
                );
            }
        }
    }
    assert!(gated > 2000, "only {gated} destructive operations");
}

#[test]
fn every_exact_catalogue_action_is_an_operation_of_the_model() {
    // A misspelt action (or the wrong IAM prefix) would gate nothing; the model says.
    for class in builtin::resolve() {
        assert!(class.operations > 0, "{} matches nothing", class.class.name);
        for rule in &class.rules {
            for action in rule.actions.iter().filter(|a| !a.contains('*')) {
                assert!(
                    rule.operations
                        .iter()
                        .any(|op| op.eq_ignore_ascii_case(action)),
                    "{}: {action} is no operation of the model",
                    rule.name
                );
            }
        }
    }
    let counts: BTreeMap<&str, usize> = builtin::resolve()
        .iter()
        .map(|c| (c.class.name, c.operations))
        .collect();
    assert!(counts[builtin::CREDENTIAL_VENDING] >= 30, "{counts:?}");
    assert!(counts[builtin::PRIVILEGE_ESCALATION] >= 30, "{counts:?}");
    assert!(counts[builtin::REMOTE_EXECUTION] >= 9, "{counts:?}");
    assert!(
        counts[builtin::DESTRUCTION_BEHIND_OTHER_VERBS] >= 70,
        "{counts:?}"
    );
}

#[test]
fn each_class_decides_with_its_own_effect_and_rule() {
    let p = builtin_only();
    let decide = |svc: &str, op: &str, params: &[(&str, &str)]| {
        let d = p.decide(&call(svc, op, params, None), "agent", "prod");
        (d.effect, d.rule, d.class)
    };
    assert_eq!(
        decide(
            "sts",
            "AssumeRole",
            &[("RoleArn", "arn:aws:iam::1:role/admin")]
        ),
        (
            Effect::Deny,
            "builtin:credential-vending".into(),
            Some(builtin::CREDENTIAL_VENDING)
        )
    );
    assert_eq!(decide("sts", "GetCallerIdentity", &[]).0, Effect::Allow);
    assert_eq!(
        decide(
            "iam",
            "AttachUserPolicy",
            &[("PolicyArn", "arn:aws:iam::aws:policy/AdministratorAccess")]
        )
        .1,
        "builtin:privilege-escalation"
    );
    // Only a default-setting version escalates.
    assert_eq!(
        decide("iam", "CreatePolicyVersion", &[("SetAsDefault", "true")]).0,
        Effect::RequireReceipt
    );
    assert_eq!(decide("iam", "CreatePolicyVersion", &[]).0, Effect::Allow);
    assert_eq!(
        decide("ssm", "SendCommand", &[]).1,
        "builtin:remote-execution"
    );
    assert_eq!(
        decide(
            "autoscaling",
            "SetDesiredCapacity",
            &[("DesiredCapacity", "0")]
        )
        .1,
        "builtin:scale-to-zero"
    );
    assert_eq!(
        decide(
            "autoscaling",
            "SetDesiredCapacity",
            &[("DesiredCapacity", "2")]
        )
        .0,
        Effect::Allow
    );
    assert_eq!(
        decide("ec2", "RunInstances", &[("IamInstanceProfile.Arn", "arn")]).0,
        Effect::RequireReceipt
    );
    assert_eq!(
        decide("ec2", "RunInstances", &[("ImageId", "ami-1")]).0,
        Effect::Allow
    );
}

fn rules_from(toml_text: &str) -> Vec<Rule> {
    toml::from_str::<BTreeMap<String, Vec<Rule>>>(toml_text)
        .unwrap()
        .remove("rule")
        .unwrap()
}

#[test]
fn a_rule_overrides_a_class_only_where_it_matches() {
    let p = Policy {
        mode: Mode::Enforce,
        rules: rules_from(
            r#"
            [[rule]]
            name = "deployer-assumes-roles"
            effect = "allow"
            agents = ["deployer"]
            actions = ["sts:AssumeRole"]
            overrides = ["builtin:credential-vending"]

            [[rule]]
            name = "allow-everything"
            effect = "allow"
            actions = ["*"]
            "#,
        ),
        builtin: true,
        ..Default::default()
    };
    let assume = call("sts", "AssumeRole", &[], None);
    let d = p.decide(&assume, "deployer", "prod");
    assert_eq!(
        (d.effect, d.rule.as_str()),
        (Effect::Allow, "deployer-assumes-roles")
    );
    // Another agent, another vending call, or another class: the catalogue still decides,
    // and a plain allow (even of everything) lifts nothing.
    assert_eq!(p.decide(&assume, "other", "prod").effect, Effect::Deny);
    let key = call("iam", "CreateAccessKey", &[], None);
    assert_eq!(p.decide(&key, "deployer", "prod").effect, Effect::Deny);
    let attach = call("iam", "AttachUserPolicy", &[], None);
    assert_eq!(
        p.decide(&attach, "deployer", "prod").effect,
        Effect::RequireReceipt
    );
    // A deny of the user's own still beats the override's allow.
    let mut strict = p.clone();
    strict.rules.extend(rules_from(
        r#"
        [[rule]]
        name = "no-assume-in-prod"
        effect = "deny"
        actions = ["sts:AssumeRole"]
        environments = ["prod"]
        "#,
    ));
    assert_eq!(
        strict.decide(&assume, "deployer", "prod").rule,
        "no-assume-in-prod"
    );
}

#[test]
fn a_denial_says_why_and_how_to_allow_it_for_one_agent() {
    let p = builtin_only();
    let d = p.decide(&call("iam", "CreateAccessKey", &[], None), "bot", "prod");
    let m = refusal(&d, "iam:CreateAccessKey", "bot", "prod");
    assert!(
        m.contains("denied by rule builtin:credential-vending"),
        "{m}"
    );
    assert!(m.contains("not approvable"), "{m}");
    assert!(
        m.contains(r#"agents = ["bot"] actions = ["iam:CreateAccessKey"] overrides = ["builtin:credential-vending"]"#),
        "{m}"
    );
}

#[test]
fn change_set_removals_is_the_last_class_and_rule() {
    // The proxy lifts change-set-removals' requirement only when its rule decided; with
    // every other catalogue rule before it, any other matching rule decides first.
    assert_eq!(
        builtin::CLASSES.last().map(|c| c.name),
        Some(builtin::CHANGE_SET_REMOVALS)
    );
    assert_eq!(
        builtin::rules().last().and_then(|r| r.class),
        Some(builtin::CHANGE_SET_REMOVALS)
    );
}

#[test]
fn a_vending_call_is_known_as_one_whichever_rule_decides() {
    // A deny of the user's own decides first, but the call still vends credentials (shadow
    // mode refuses it on that); an override for the agent lifts that too.
    let p = Policy {
        mode: Mode::Shadow,
        rules: rules_from(
            r#"
            [[rule]]
            name = "no-sts"
            effect = "deny"
            actions = ["sts:*"]

            [[rule]]
            name = "deployer-assumes-roles"
            effect = "allow"
            agents = ["deployer"]
            actions = ["sts:AssumeRole"]
            overrides = ["builtin:credential-vending"]
            "#,
        ),
        builtin: true,
        ..Default::default()
    };
    let assume = call("sts", "AssumeRole", &[], None);
    let d = p.decide(&assume, "other", "prod");
    assert_eq!((d.rule.as_str(), d.class), ("no-sts", None));
    assert!(d.vends_credentials);
    let d = p.decide(&assume, "deployer", "prod");
    assert_eq!(d.rule, "no-sts");
    assert!(!d.vends_credentials);
    let who = call("sts", "GetCallerIdentity", &[], None);
    assert!(!p.decide(&who, "other", "prod").vends_credentials);
}

#[test]
fn a_quorum_comes_from_the_rules_that_require_a_receipt() {
    let snapshot = call(
        "rds",
        "DeleteDBSnapshot",
        &[("DBSnapshotIdentifier", "nightly")],
        Some(("DBSnapshotIdentifier", "nightly", None)),
    );
    let delete_db = |skip_final_snapshot: &str| {
        call(
            "rds",
            "DeleteDBInstance",
            &[
                ("DBInstanceIdentifier", "db"),
                ("SkipFinalSnapshot", skip_final_snapshot),
            ],
            Some(("DBInstanceIdentifier", "db", None)),
        )
    };
    let (with_final_snapshot, without) = (delete_db("false"), delete_db("true"));
    // Nothing configured: one approver, anyone, for everything (as before quorums).
    let p = builtin_only();
    assert_eq!(p.decide(&snapshot, "a", "prod").quorum, Quorum::default());

    // `irreversible_quorum` covers what the catalogue marks irreversible, and only that.
    let p = Policy {
        irreversible_quorum: 2,
        ..builtin_only()
    };
    assert_eq!(p.decide(&snapshot, "a", "prod").quorum.approvals, 2);
    assert_eq!(p.decide(&without, "a", "prod").quorum.approvals, 2);
    assert_eq!(
        p.decide(&with_final_snapshot, "a", "prod").quorum.approvals,
        1
    );

    // A rule's `approvals` and `approvers`; several rules: the most approvals, and only the
    // names every rule that names some allows.
    let p = Policy {
        rules: rules_from(
            r#"
            [[rule]]
            name = "two-for-prod-snapshots"
            effect = "require_receipt"
            actions = ["rds:DeleteDBSnapshot"]
            environments = ["prod"]
            approvals = 2
            approvers = ["alice", "bob", "carol"]

            [[rule]]
            name = "dba-for-rds"
            effect = "require_receipt"
            actions = ["rds:Delete*"]
            approvers = ["bob", "carol", "dave"]
            "#,
        ),
        ..builtin_only()
    };
    let q = p.decide(&snapshot, "a", "prod").quorum;
    assert_eq!(q.approvals, 2);
    assert_eq!(q.approvers, Some(vec!["bob".into(), "carol".into()]));
    let q = p.decide(&snapshot, "a", "staging").quorum;
    assert_eq!(q.approvals, 1);
    assert_eq!(
        q.approvers,
        Some(vec!["bob".into(), "carol".into(), "dave".into()])
    );

    // A call that is allowed or denied needs no approver at all.
    let p = Policy {
        rules: rules_from(
            r#"
            [[rule]]
            name = "no-snapshot-deletes"
            effect = "deny"
            actions = ["rds:DeleteDBSnapshot"]
            "#,
        ),
        irreversible_quorum: 3,
        ..builtin_only()
    };
    assert_eq!(p.decide(&snapshot, "a", "prod").quorum, Quorum::default());
}

#[test]
fn a_quorum_bound_covers_every_rule_whatever_the_parameters() {
    let p = Policy {
        rules: rules_from(
            r#"
            [[rule]]
            name = "three-without-final-snapshot"
            effect = "require_receipt"
            actions = ["rds:DeleteDBInstance"]
            resources = ["DBInstanceIdentifier=prod-*"]
            when = { SkipFinalSnapshot = "true" }
            approvals = 3
            approvers = ["alice", "bob", "carol", "dave"]

            [[rule]]
            name = "dbas-in-prod"
            effect = "require_receipt"
            actions = ["rds:Delete*"]
            environments = ["prod"]
            agents = ["deployer"]
            approvers = ["bob", "carol", "dave", "erin"]
            "#,
        ),
        irreversible_quorum: 2,
        ..builtin_only()
    };
    let by_member = |params: &[(&str, &str)]| {
        call(
            "rds",
            "DeleteDBInstance",
            params,
            Some(("DBInstanceIdentifier", "prod-db", None)),
        )
    };
    // The call itself, with a final snapshot: the conditional rule does not apply.
    let kept = by_member(&[
        ("DBInstanceIdentifier", "prod-db"),
        ("SkipFinalSnapshot", "false"),
    ]);
    let decided = p.decide(&kept, "deployer", "prod").quorum;
    assert_eq!(decided.approvals, 1);
    // Known only by what a receipt binds (no parameters): the rule may apply, so the bound
    // takes it, and only the names both rules allow.
    let bound = p.quorum_bound(&by_member(&[]), "deployer", "prod");
    assert_eq!(bound.approvals, 3);
    assert_eq!(
        bound.approvers,
        Some(vec!["bob".into(), "carol".into(), "dave".into()])
    );
    // The bound is never below what the policy decides for the full call.
    let skipped = by_member(&[
        ("DBInstanceIdentifier", "prod-db"),
        ("SkipFinalSnapshot", "true"),
    ]);
    assert_eq!(p.decide(&skipped, "deployer", "prod").quorum, bound);

    // A resource bound as its ARN has lost `member=value`: a glob in that form may match.
    let by_arn = call(
        "rds",
        "DeleteDBInstance",
        &[],
        Some((
            "",
            "",
            Some("arn:aws:rds:us-east-1:111111111111:db:prod-db"),
        )),
    );
    assert_eq!(p.quorum_bound(&by_arn, "deployer", "prod").approvals, 3);

    // Rules whose action, resources, environment or agent do not match stay out; the
    // catalogue's irreversible rules bring `irreversible_quorum`.
    let other_db = call(
        "rds",
        "DeleteDBInstance",
        &[],
        Some(("DBInstanceIdentifier", "staging-db", None)),
    );
    let bound = p.quorum_bound(&other_db, "someone", "staging");
    assert_eq!(bound.approvals, 2, "the catalogue's irreversible delete");
    assert_eq!(bound.approvers, None);
    let read = call(
        "rds",
        "DescribeDBInstances",
        &[],
        Some(("DBInstanceIdentifier", "prod-db", None)),
    );
    assert_eq!(p.quorum_bound(&read, "deployer", "prod"), Quorum::default());
}
