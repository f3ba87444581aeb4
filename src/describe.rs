//! How a call is shown to the human who decides, for the approval page and the webhooks
//! alike: what it destroys, in one plain sentence ("Deletes database tf-rig-db.
//! SkipFinalSnapshot=true: no final snapshot."), whether its environment is production, and
//! agent-supplied text with invisible characters spelled out. Pure: from the [`AwsCall`] and
//! strings alone.
//!
//! The sentence helps; it does not decide. The page shows every parameter beside it, and a
//! parameter this module does not know is still shown there.

use crate::identify::AwsCall;
use crate::policy::changeset;
use std::fmt::Write as _;

/// Characters shown as `⟨U+XXXX⟩` instead of themselves.
fn suspicious(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}')
}

/// `s` with invisible and direction-changing characters spelled out.
pub fn visible(s: &str) -> String {
    if !s.chars().any(suspicious) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if suspicious(c) {
            let _ = write!(out, "⟨U+{:04X}⟩", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Production is impossible to miss: any environment whose name says so.
pub fn is_production(environment: &str) -> bool {
    environment.to_ascii_lowercase().contains("prod")
}

/// Nouns for resources whose operation names read badly when split (`DBInstance`).
const NOUNS: &[(&str, &str, &str)] = &[
    ("rds", "DBInstance", "database"),
    ("rds", "DBCluster", "database cluster"),
    ("rds", "DBSnapshot", "database snapshot"),
    ("rds", "DBClusterSnapshot", "database cluster snapshot"),
    ("rds", "DBSubnetGroup", "database subnet group"),
    ("rds", "DBParameterGroup", "database parameter group"),
    ("docdb", "DBCluster", "DocumentDB cluster"),
    ("neptune", "DBCluster", "Neptune cluster"),
    ("ec2", "Instances", "instances"),
    ("ec2", "Vpc", "VPC"),
    ("ec2", "Subnet", "subnet"),
    ("ec2", "SecurityGroup", "security group"),
    ("ec2", "Volume", "EBS volume"),
    ("ec2", "Snapshot", "EBS snapshot"),
    ("ec2", "InternetGateway", "internet gateway"),
    ("ec2", "NatGateway", "NAT gateway"),
    ("s3", "Bucket", "bucket"),
    ("s3", "Object", "object"),
    ("s3", "Objects", "objects"),
    ("dynamodb", "Table", "DynamoDB table"),
    ("dynamodb", "Backup", "DynamoDB backup"),
    ("lambda", "Function", "Lambda function"),
    ("ecs", "Cluster", "ECS cluster"),
    ("ecs", "Service", "ECS service"),
    ("elbv2", "LoadBalancer", "load balancer"),
    ("elb", "LoadBalancer", "load balancer"),
    ("kms", "KeyDeletion", "KMS key"),
    ("backup", "RecoveryPoint", "backup recovery point"),
    ("secretsmanager", "Secret", "secret"),
    ("iam", "Role", "IAM role"),
    ("iam", "User", "IAM user"),
];

/// Verbs of the operation name, as the sentence starts.
const VERBS: &[(&str, &str)] = &[
    ("Delete", "Deletes"),
    ("Terminate", "Terminates"),
    ("Remove", "Removes"),
    ("Purge", "Purges"),
    ("Destroy", "Destroys"),
    ("Deregister", "Deregisters"),
    ("Detach", "Detaches"),
    ("Revoke", "Revokes"),
    ("Disable", "Disables"),
    ("Cancel", "Cancels"),
    ("Execute", "Executes"),
    ("Schedule", "Schedules deletion of"),
    ("Modify", "Changes"),
    ("Update", "Changes"),
    ("Put", "Replaces the settings of"),
    ("Attach", "Attaches"),
    ("Add", "Adds"),
    ("Set", "Sets"),
    ("Send", "Sends"),
    ("Start", "Starts"),
    ("Run", "Runs"),
    ("Release", "Releases"),
    ("Change", "Changes"),
    ("Leave", "Leaves"),
    ("Create", "Creates"),
];

/// Parameters that make a call worse, and what they mean. `None` as the value: any value.
const NOTES: &[(&str, Option<&str>, &str)] = &[
    ("SkipFinalSnapshot", Some("true"), "no final snapshot"),
    (
        "DeleteAutomatedBackups",
        Some("true"),
        "its automated backups are deleted too",
    ),
    (
        "DeletionProtection",
        Some("false"),
        "deletion protection is turned off",
    ),
    (
        "BackupRetentionPeriod",
        Some("0"),
        "automated backups are turned off and the existing ones deleted",
    ),
    (
        "DisableApiTermination",
        Some("false"),
        "termination protection is turned off",
    ),
    (
        "ForceDeleteWithoutRecovery",
        Some("true"),
        "deleted at once, with no recovery window",
    ),
    (
        "ForceDelete",
        Some("true"),
        "forced, even if it is not empty",
    ),
    ("Force", Some("true"), "forced"),
    (
        "PendingWindowInDays",
        None,
        "days until the key and everything encrypted with it are unreadable",
    ),
    (
        "DeleteSnapshots",
        Some("true"),
        "its snapshots are deleted too",
    ),
];

/// Splits `DBInstance` → `DB instance`, `SecurityGroup` → `security group`.
fn words(camel: &str) -> String {
    let chars: Vec<char> = camel.chars().collect();
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.is_empty() {
            return;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        // An acronym stays upper case; a word is lower-cased.
        if word.len() > 1 && word.chars().all(|c| c.is_ascii_uppercase()) {
            out.push_str(word);
        } else {
            out.push_str(&word.to_lowercase());
        }
        word.clear();
    };
    for (i, &c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
        let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
        if c.is_ascii_uppercase() && (prev_lower || (next_lower && !word.is_empty())) {
            flush(&mut word, &mut out);
        }
        word.push(c);
    }
    flush(&mut word, &mut out);
    out
}

/// The sentence for `call`: verb, noun and target, then one clause per dangerous parameter.
pub fn destroys(call: &AwsCall) -> String {
    let op = call.operation.as_str();
    let (verb, rest) = VERBS
        .iter()
        .find_map(|(prefix, verb)| {
            op.strip_prefix(prefix)
                .filter(|rest| {
                    rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_uppercase())
                })
                .map(|rest| (*verb, rest))
        })
        .unwrap_or(("Calls", op));
    let noun = NOUNS
        .iter()
        .find(|(service, name, _)| *service == call.service && *name == rest)
        .map(|(_, _, noun)| (*noun).to_owned())
        .unwrap_or_else(|| words(rest));
    let member = |m: &str| {
        call.resources
            .iter()
            .find(|r| r.member == m)
            .map(|r| r.value.as_str())
    };
    // What airlock read of a CloudFormation change set: one sentence each, after the call's.
    let read: Vec<String> = call
        .resources
        .iter()
        .filter_map(|r| changeset::sentence(&r.member, &r.value))
        .collect();
    let targets: Vec<String> = match (member("Bucket"), member("Key")) {
        // S3 names an object by its bucket and key: "object KEY in bucket B".
        (Some(bucket), Some(key)) => vec![format!("{key} in bucket {bucket}")],
        _ => call
            .resources
            .iter()
            .filter(|r| {
                r.member != changeset::CHANGE_SET_ID
                    && changeset::sentence(&r.member, &r.value).is_none()
            })
            .map(|r| r.value.clone())
            .collect(),
    };
    let mut line = if rest.is_empty() {
        format!("{verb} {}", call.action())
    } else {
        format!("{verb} {noun}")
    };
    if !targets.is_empty() {
        line.push(' ');
        line.push_str(&targets.join(", "));
    }
    line.push('.');
    for sentence in read {
        line.push(' ');
        line.push_str(&sentence);
    }
    for (param, value, note) in NOTES {
        let Some(actual) = call.params.get(*param) else {
            continue;
        };
        if value.is_none_or(|v| v.eq_ignore_ascii_case(actual)) {
            line.push_str(&format!(" {param}={actual}: {note}."));
        }
    }
    line
}

/// Parameters that name the identity, role or policy a privilege-escalation call gives
/// power to (matched as the whole name, or its last dotted part).
const GRANT_MEMBERS: &[&str] = &[
    "PolicyArn",
    "PolicyName",
    "UserName",
    "GroupName",
    "RoleName",
    "RoleArn",
    "RoleARN",
    "Role",
    "taskRoleArn",
    "InstanceProfileName",
    "Arn",
    "Name",
];

/// Policy documents among the parameters: every value that is a JSON object with a
/// `Statement` (IAM inline and managed policies, trust policies, bucket policies).
pub fn policy_documents(call: &AwsCall) -> Vec<(&str, serde_json::Value)> {
    call.params
        .iter()
        .filter_map(|(k, v)| {
            let doc: serde_json::Value = serde_json::from_str(v).ok()?;
            doc.get("Statement").is_some().then_some((k.as_str(), doc))
        })
        .collect()
}

/// What the privilege-escalation call attaches or passes: `(member, value)` for the
/// members that name a policy, a role or an identity (the profile of `RunInstances` is
/// `IamInstanceProfile.Arn`).
pub fn grants(call: &AwsCall) -> Vec<(&str, &str)> {
    call.params
        .iter()
        .filter(|(k, _)| {
            let last = k.rsplit('.').next().unwrap_or(k);
            GRANT_MEMBERS.contains(&k.as_str())
                || (k.contains("IamInstanceProfile") && GRANT_MEMBERS.contains(&last))
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The command a remote-execution call runs, as the approver should read it: SSM's
/// `commands` (one per line), ECS Exec's `command`, a build's replacement buildspec, or
/// the session it opens.
pub fn command(call: &AwsCall) -> Option<String> {
    let p = |k: &str| call.params.get(k).map(String::as_str);
    if let Some(parameters) = p("Parameters") {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str(parameters) {
            if let Some(serde_json::Value::Array(lines)) = m.get("commands") {
                let lines: Vec<String> = lines
                    .iter()
                    .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
                    .collect();
                return Some(lines.join("\n"));
            }
        }
        return Some(parameters.to_owned());
    }
    if let Some(c) = p("command").or(p("buildspecOverride")) {
        return Some(c.to_owned());
    }
    if let Some(target) = p("Target").or(p("InstanceId")).or(p("SessionId")) {
        let user = p("InstanceOSUser")
            .map(|u| format!(" as {u}"))
            .unwrap_or_default();
        return Some(format!("an interactive session on {target}{user}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::Resource;
    use std::collections::BTreeMap;

    fn call(service: &str, operation: &str, target: &str, params: &[(&str, &str)]) -> AwsCall {
        AwsCall {
            service: service.into(),
            signing_name: service.into(),
            operation: operation.into(),
            region: "us-west-2".into(),
            account: None,
            resources: vec![Resource {
                member: "Id".into(),
                value: target.into(),
                arn: None,
            }],
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn the_incident_reads_plainly() {
        let c = call(
            "rds",
            "DeleteDBInstance",
            "tf-rig-db",
            &[
                ("DBInstanceIdentifier", "tf-rig-db"),
                ("SkipFinalSnapshot", "true"),
                ("DeleteAutomatedBackups", "true"),
            ],
        );
        assert_eq!(
            destroys(&c),
            "Deletes database tf-rig-db. SkipFinalSnapshot=true: no final snapshot. \
             DeleteAutomatedBackups=true: its automated backups are deleted too."
        );
        let safe = call(
            "rds",
            "DeleteDBInstance",
            "db",
            &[("SkipFinalSnapshot", "false")],
        );
        assert_eq!(destroys(&safe), "Deletes database db.");
    }

    #[test]
    fn unknown_operations_still_read() {
        assert_eq!(
            destroys(&call("ec2", "TerminateInstances", "i-1", &[])),
            "Terminates instances i-1."
        );
        assert_eq!(
            destroys(&call("glue", "DeleteMLTransform", "t", &[])),
            "Deletes ML transform t."
        );
        assert_eq!(
            destroys(&call(
                "kms",
                "ScheduleKeyDeletion",
                "k",
                &[("PendingWindowInDays", "7")]
            )),
            "Schedules deletion of KMS key k. PendingWindowInDays=7: days until the key and \
             everything encrypted with it are unreadable."
        );
        assert_eq!(words("DBClusterSnapshot"), "DB cluster snapshot");
        let mut object = call("s3", "DeleteObject", "data", &[]);
        object.resources[0].member = "Bucket".into();
        object.resources.push(Resource {
            member: "Key".into(),
            value: "docs/read me.txt".into(),
            arn: None,
        });
        assert_eq!(
            destroys(&object),
            "Deletes object docs/read me.txt in bucket data."
        );
        assert_eq!(words("VpcPeeringConnection"), "vpc peering connection");
    }

    #[test]
    fn a_change_set_reads_with_what_it_removes() {
        let mut c = call("cloudformation", "ExecuteChangeSet", "drop-topic", &[]);
        c.resources[0].member = "ChangeSetName".into();
        for (member, value) in [
            (
                changeset::CHANGE_SET_ID,
                "arn:aws:cloudformation:eu-west-1:1:changeSet/drop-topic/1",
            ),
            ("Removes", "Topic (AWS::SNS::Topic)"),
            ("Replaces", "Bucket (AWS::S3::Bucket, data-1)"),
        ] {
            c.resources.push(Resource {
                member: member.into(),
                value: value.into(),
                arn: None,
            });
        }
        assert_eq!(
            destroys(&c),
            "Executes change set drop-topic. Removes Topic (AWS::SNS::Topic). Replaces Bucket \
             (AWS::S3::Bucket, data-1): a new one is made, the old one deleted."
        );
    }

    #[test]
    fn escalations_show_their_documents_and_grants_and_executions_their_command() {
        let admin = r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        let c = call(
            "iam",
            "PutUserPolicy",
            "agent",
            &[
                ("UserName", "agent"),
                ("PolicyName", "all"),
                ("PolicyDocument", admin),
            ],
        );
        let docs = policy_documents(&c);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].0, "PolicyDocument");
        assert_eq!(
            grants(&c),
            vec![("PolicyName", "all"), ("UserName", "agent")]
        );
        let run = call(
            "ec2",
            "RunInstances",
            "i",
            &[
                (
                    "IamInstanceProfile.Arn",
                    "arn:aws:iam::1:instance-profile/admin",
                ),
                ("ImageId", "ami-1"),
            ],
        );
        assert_eq!(
            grants(&run),
            vec![(
                "IamInstanceProfile.Arn",
                "arn:aws:iam::1:instance-profile/admin"
            )]
        );
        let send = call(
            "ssm",
            "SendCommand",
            "i-1",
            &[(
                "Parameters",
                r#"{"commands":["cd /","rm -rf /var/lib/postgresql"]}"#,
            )],
        );
        assert_eq!(
            command(&send).as_deref(),
            Some("cd /\nrm -rf /var/lib/postgresql")
        );
        let ssh = call(
            "ec2-instance-connect",
            "SendSSHPublicKey",
            "i-1",
            &[("InstanceId", "i-1"), ("InstanceOSUser", "root")],
        );
        assert_eq!(
            command(&ssh).as_deref(),
            Some("an interactive session on i-1 as root")
        );
    }
}
