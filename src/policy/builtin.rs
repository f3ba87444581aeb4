//! The built-in catalogue of destructive calls, on unless `[policy] builtin = false`.
//!
//! - Every operation whose name starts with a destructive verb (computed over AWS's own
//!   operation table: see the test that checks the verbs against it).
//! - Destruction that hides behind other verbs, decided by parameters.
//! - Calls that destroy backups or make a deletion unrecoverable are marked irreversible.

use super::{Effect, Rule};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Operation-name prefixes that mean destruction.
pub const DESTRUCTIVE_VERBS: &[&str] = &[
    "Delete",
    "Terminate",
    "Remove",
    "Purge",
    "Destroy",
    "Deregister",
    "Detach",
    "Revoke",
    "Disable",
    "Cancel",
];

fn rule(
    name: &str,
    actions: &[&str],
    when: &[(&str, &str)],
    irreversible: bool,
    reason: &str,
) -> Rule {
    Rule {
        name: format!("builtin:{name}"),
        effect: Effect::RequireReceipt,
        actions: actions.iter().map(|s| s.to_string()).collect(),
        resources: vec!["*".into()],
        environments: vec!["*".into()],
        agents: vec!["*".into()],
        when: when
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        irreversible,
        reason: Some(reason.to_string()),
    }
}

/// The catalogue as rules (so `explain` and the approval page can name them).
pub fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let verbs: Vec<String> = DESTRUCTIVE_VERBS
            .iter()
            .map(|v| format!("*:{v}*"))
            .collect();
        let verbs: Vec<&str> = verbs.iter().map(String::as_str).collect();
        vec![
            rule(
                "destructive-verb",
                &verbs,
                &[],
                false,
                "destructive operation",
            ),
            rule(
                "rds-deletion-protection-off",
                &["rds:ModifyDBInstance", "rds:ModifyDBCluster"],
                &[("DeletionProtection", "false")],
                false,
                "turns deletion protection off",
            ),
            rule(
                "rds-backups-off",
                &["rds:ModifyDBInstance", "rds:ModifyDBCluster"],
                &[("BackupRetentionPeriod", "0")],
                true,
                "turns automated backups off (existing ones are deleted)",
            ),
            rule(
                "dynamodb-deletion-protection-off",
                &["dynamodb:UpdateTable"],
                &[("DeletionProtectionEnabled", "false")],
                false,
                "turns deletion protection off",
            ),
            rule(
                "ec2-termination-protection-off",
                &["ec2:ModifyInstanceAttribute"],
                &[("DisableApiTermination.Value", "false")],
                false,
                "turns termination protection off",
            ),
            rule(
                "ec2-termination-protection-off-attribute",
                &["ec2:ModifyInstanceAttribute"],
                &[("Attribute", "disableApiTermination"), ("Value", "false")],
                false,
                "turns termination protection off",
            ),
            rule(
                "s3-lifecycle-expiration",
                &[
                    "s3:PutBucketLifecycleConfiguration",
                    "s3:PutBucketLifecycle",
                ],
                &[("*Expiration*", "*")],
                true,
                "a lifecycle rule that expires (deletes) objects",
            ),
            rule(
                "s3-versioning-suspended",
                &["s3:PutBucketVersioning"],
                // `Status.1`, `Status.2` when the element is repeated: any of them counts.
                &[("Status*", "Suspended")],
                false,
                "suspends versioning (overwrites and deletes lose old versions)",
            ),
            rule(
                "kms-schedule-key-deletion",
                &["kms:ScheduleKeyDeletion"],
                &[],
                true,
                "schedules the key's deletion: data encrypted under it becomes unreadable",
            ),
            rule(
                "rds-delete-snapshot",
                &["rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"],
                &[],
                true,
                "deletes a backup",
            ),
            rule(
                "backup-delete-recovery-point",
                &["backup:DeleteRecoveryPoint"],
                &[],
                true,
                "deletes a backup",
            ),
            rule(
                "rds-delete-without-final-snapshot",
                &["rds:DeleteDBInstance", "rds:DeleteDBCluster"],
                &[("SkipFinalSnapshot", "true")],
                true,
                "no final snapshot",
            ),
            rule(
                "rds-delete-automated-backups",
                &["rds:DeleteDBInstance"],
                &[("DeleteAutomatedBackups", "true")],
                true,
                "its automated backups are deleted too",
            ),
            // Decided once the change set is read: see `policy::changeset`.
            rule(
                super::changeset::RULE_NAME,
                super::changeset::ACTIONS,
                &[],
                false,
                super::changeset::REASON,
            ),
        ]
    })
}

/// Whether an operation name starts with a destructive verb (on a word boundary).
pub fn is_destructive_name(operation: &str) -> bool {
    DESTRUCTIVE_VERBS.iter().any(|v| {
        operation.strip_prefix(v).is_some_and(|rest| {
            rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_uppercase())
        })
    })
}
