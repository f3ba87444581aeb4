//! The built-in catalogue, on unless `[policy] builtin = false`: classes of calls every
//! account should gate, each with its own effect, rule names, reasons and a plain line for
//! the approval page.
//!
//! - `destructive-verb`: every operation whose name starts with a destructive verb
//!   (computed over AWS's own operation table: see the test that checks the verbs against
//!   it). Calls that destroy backups or skip the final snapshot are marked irreversible:
//!   the one list of what cannot be undone, which `[approval] irreversible_quorum` (and
//!   the approval page's IRREVERSIBLE line) goes by, together with the irreversible rules
//!   of `destruction-behind-other-verbs` (automated backups turned off, KMS key
//!   deletion, lifecycle expiration).
//! - `credential-vending`: calls whose answer is a credential (access keys, session tokens,
//!   console passwords). With one the agent calls AWS directly and airlock is out of the
//!   picture, so these are denied, not approvable.
//! - `privilege-escalation`: calls that give an identity more power (Rhino Security Labs'
//!   IAM privilege-escalation methods; Cloudsplaining's "privilege escalation" risk).
//! - `remote-execution`: a shell or a command on an instance or container, which holds its
//!   role's credentials.
//! - `destruction-behind-other-verbs`: destruction the operation's name does not say,
//!   decided by parameters where the danger is in them.
//!
//! - `change-set-removals`: CloudFormation `ExecuteChangeSet`/`UpdateStack`, decided once
//!   airlock has read the change set ([`super::changeset`]). `CreateStack` and the stack-set
//!   calls, which no change set shows beforehand, are `privilege-escalation`.
//!
//! A class is one entry of [`CLASSES`] and one function that returns its rules; `rules()`
//! concatenates them. Users override a class for named agents and actions with a rule's
//! `overrides` (see [`super::Policy::decide`]).

use super::checks::Check;
use super::{Effect, Rule};
use serde::Serialize;
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

/// One class of the catalogue.
#[derive(Debug, Serialize)]
pub struct Class {
    /// `credential-vending`; users name it as `builtin:credential-vending`.
    pub name: &'static str,
    pub effect: Effect,
    /// Why the class exists (`airlock policy builtin`, the README).
    pub why: &'static str,
    /// One plain sentence for the approval page.
    pub line: &'static str,
}

pub const CREDENTIAL_VENDING: &str = "credential-vending";
pub const PRIVILEGE_ESCALATION: &str = "privilege-escalation";
pub const REMOTE_EXECUTION: &str = "remote-execution";
pub const DESTRUCTIVE_VERB: &str = "destructive-verb";
pub const DESTRUCTION_BEHIND_OTHER_VERBS: &str = "destruction-behind-other-verbs";
pub const CHANGE_SET_REMOVALS: &str = super::changeset::RULE_NAME;

/// Every class, in the order `airlock policy builtin` lists them.
pub const CLASSES: &[Class] = &[
    Class {
        name: DESTRUCTIVE_VERB,
        effect: Effect::RequireReceipt,
        why: "the operation's name says it destroys (Delete*, Terminate*, Remove*, Purge*, \
              Destroy*, Deregister*, Detach*, Revoke*, Disable*, Cancel*)",
        line: "This call destroys or switches something off.",
    },
    Class {
        name: CREDENTIAL_VENDING,
        effect: Effect::Deny,
        why: "the answer is a credential (access key, session token, console password, \
              database or registry login): with it the agent calls AWS directly and airlock \
              is out of the picture; an approved access key is still an access key in the \
              agent's hands, so this is denied, not approvable",
        line: "This call hands out credentials that work without airlock.",
    },
    Class {
        name: PRIVILEGE_ESCALATION,
        effect: Effect::RequireReceipt,
        why: "the call gives an identity more power: policies attached or written, trust \
              policies changed, roles passed to compute that runs the caller's code \
              (Rhino Security Labs' IAM privilege-escalation methods; Cloudsplaining's \
              privilege-escalation risk category)",
        line: "This call gives an identity more permissions; check the policy or role below.",
    },
    Class {
        name: REMOTE_EXECUTION,
        effect: Effect::RequireReceipt,
        why: "a command or shell on an instance or container runs with that machine's role \
              (its credentials) and can do anything on it",
        line: "This call runs a command or opens a shell on a machine, with that machine's role.",
    },
    Class {
        name: DESTRUCTION_BEHIND_OTHER_VERBS,
        effect: Effect::RequireReceipt,
        why: "destruction the operation's name does not say: batch deletes, released \
              addresses, records deleted through a change batch, items deleted through a \
              batch write, capacity scaled to zero, protection or backups turned off, a \
              bucket policy that locks the owner out, leaving the organization",
        line: "This call destroys something although its name does not say so.",
    },
    // A new class goes here, with its rules in a function added to `rules()` before
    // change-set-removals'.
    //
    // change-set-removals stays last: the proxy reads a change set, and may lift the
    // requirement, only when this class's rule is the one that decided, which the order
    // guarantees only while every other rule that matches comes before it.
    Class {
        name: CHANGE_SET_REMOVALS,
        effect: Effect::RequireReceipt,
        why: "CloudFormation removes every resource a new template leaves out, replaces \
              those whose change requires it and makes what it adds (IAM users and keys \
              too), behind ExecuteChangeSet and UpdateStack; only the change set shows it, \
              so airlock reads it (with its own credentials) and requires a receipt when it \
              removes or replaces anything or touches a resource that grants power or runs \
              code",
        line: "This call updates a stack; its change set removes, replaces or grants power \
               through the resources below.",
    },
];

/// The class named `name` (`credential-vending`).
pub fn class(name: &str) -> Option<&'static Class> {
    CLASSES.iter().find(|c| c.name == name)
}

/// The class of the built-in rule named `rule` (`builtin:credential-vending`).
pub fn class_of_rule(rule: &str) -> Option<&'static Class> {
    rules()
        .iter()
        .find(|r| r.name == rule)
        .and_then(|r| r.class)
        .and_then(class)
}

/// One rule of a class, as the class functions write it.
struct Spec {
    name: &'static str,
    actions: Vec<String>,
    when: &'static [(&'static str, &'static str)],
    check: Option<Check>,
    irreversible: bool,
    reason: &'static str,
}

impl Spec {
    fn new(name: &'static str, actions: &[&str], reason: &'static str) -> Spec {
        Spec {
            name,
            actions: actions.iter().map(|a| a.to_string()).collect(),
            when: &[],
            check: None,
            irreversible: false,
            reason,
        }
    }
    fn when(mut self, when: &'static [(&'static str, &'static str)]) -> Spec {
        self.when = when;
        self
    }
    fn check(mut self, check: Check) -> Spec {
        self.check = Some(check);
        self
    }
    fn irreversible(mut self) -> Spec {
        self.irreversible = true;
        self
    }
}

fn build(class: &'static Class, specs: Vec<Spec>) -> impl Iterator<Item = Rule> {
    specs.into_iter().map(move |s| Rule {
        name: format!("builtin:{}", s.name),
        effect: class.effect,
        actions: s.actions,
        resources: vec!["*".into()],
        environments: vec!["*".into()],
        agents: vec!["*".into()],
        when: s
            .when
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        irreversible: s.irreversible,
        reason: Some(s.reason.to_string()),
        overrides: vec![],
        approvals: None,
        approvers: None,
        class: Some(class.name),
        check: s.check,
    })
}

/// The catalogue as rules (so `explain` and the approval page can name them).
pub fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        // A class function under a name `CLASSES` lacks would add nothing; the test that
        // every class matches operations of the model catches it.
        let of = |name: &str, specs: Vec<Spec>| {
            class(name).map(|c| build(c, specs)).into_iter().flatten()
        };
        let mut all: Vec<Rule> = Vec::new();
        all.extend(of(DESTRUCTIVE_VERB, destructive_verb()));
        all.extend(of(CREDENTIAL_VENDING, credential_vending()));
        all.extend(of(PRIVILEGE_ESCALATION, privilege_escalation()));
        all.extend(of(REMOTE_EXECUTION, remote_execution()));
        all.extend(of(
            DESTRUCTION_BEHIND_OTHER_VERBS,
            destruction_behind_other_verbs(),
        ));
        all.extend(of(CHANGE_SET_REMOVALS, change_set_removals()));
        all
    })
}

fn destructive_verb() -> Vec<Spec> {
    let verbs = DESTRUCTIVE_VERBS
        .iter()
        .map(|v| format!("*:{v}*"))
        .collect();
    vec![
        Spec {
            actions: verbs,
            ..Spec::new("destructive-verb", &[], "destructive operation")
        },
        Spec::new(
            "rds-delete-snapshot",
            &["rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"],
            "deletes a backup",
        )
        .irreversible(),
        Spec::new(
            "backup-delete-recovery-point",
            &["backup:DeleteRecoveryPoint"],
            "deletes a backup",
        )
        .irreversible(),
        Spec::new(
            "rds-delete-without-final-snapshot",
            &["rds:DeleteDBInstance", "rds:DeleteDBCluster"],
            "no final snapshot",
        )
        .when(&[("SkipFinalSnapshot", "true")])
        .irreversible(),
        Spec::new(
            "rds-delete-automated-backups",
            &["rds:DeleteDBInstance", "rds:DeleteDBCluster"],
            "its automated backups are deleted too",
        )
        .when(&[("DeleteAutomatedBackups", "true")])
        .irreversible(),
        Spec::new(
            "delete-backup",
            &[
                "ec2:DeleteSnapshot",
                "rds:DeleteDBInstanceAutomatedBackup",
                "rds:DeleteDBClusterAutomatedBackup",
                "dynamodb:DeleteBackup",
                "elasticache:DeleteSnapshot",
                "redshift:DeleteClusterSnapshot",
                "fsx:DeleteBackup",
            ],
            "deletes a backup",
        )
        .irreversible(),
        Spec::new(
            "redshift-delete-without-final-snapshot",
            &["redshift:DeleteCluster"],
            "no final snapshot",
        )
        .when(&[("SkipFinalClusterSnapshot", "true")])
        .irreversible(),
        Spec::new(
            "secretsmanager-delete-without-recovery",
            &["secretsmanager:DeleteSecret"],
            "deleted at once, with no recovery window",
        )
        .when(&[("ForceDeleteWithoutRecovery", "true")])
        .irreversible(),
    ]
}

fn credential_vending() -> Vec<Spec> {
    vec![Spec::new(
        CREDENTIAL_VENDING,
        &[
            // AWS credentials: access keys and session tokens.
            "sts:AssumeRole",
            "sts:AssumeRoleWithSAML",
            "sts:AssumeRoleWithWebIdentity",
            "sts:AssumeRoot",
            "sts:GetSessionToken",
            "sts:GetFederationToken",
            "sts:GetWebIdentityToken",
            "sts:GetDelegatedAccessToken",
            "iam:CreateAccessKey",
            "awsssoportal:GetRoleCredentials",
            "sso-oauth:CreateToken",
            "sso-oauth:CreateTokenWithIAM",
            "cognito-identity:GetCredentialsForIdentity",
            "cognito-identity:GetOpenIdToken",
            "cognito-identity:GetOpenIdTokenForDeveloperIdentity",
            "s3:CreateSession",
            "s3:GetDataAccess",
            "lakeformation:GetTemporaryGlueTableCredentials",
            "lakeformation:GetTemporaryGluePartitionCredentials",
            "lakeformation:GetTemporaryDataLocationCredentials",
            "datazone:GetEnvironmentCredentials",
            "emr-containers:GetManagedEndpointSessionCredentials",
            "gamelift:GetComputeAccess",
            // Console passwords and service credentials of IAM users.
            "iam:CreateLoginProfile",
            "iam:UpdateLoginProfile",
            "iam:CreateServiceSpecificCredential",
            "iam:ResetServiceSpecificCredential",
            "iam:UploadSSHPublicKey",
            // Database logins minted from IAM.
            "redshift:GetClusterCredentials",
            "redshift:GetClusterCredentialsWithIAM",
            "redshift-serverless:GetCredentials",
            // Login material for machines.
            "lightsail:GetInstanceAccessDetails",
            "lightsail:DownloadDefaultKeyPair",
            "gamelift:GetInstanceAccess",
        ],
        "the response carries credentials the agent could use without airlock; \
         not approvable",
    )]
}

fn privilege_escalation() -> Vec<Spec> {
    const PE: &str = PRIVILEGE_ESCALATION;
    vec![
        Spec::new(
            PE,
            &[
                "iam:AttachUserPolicy",
                "iam:AttachGroupPolicy",
                "iam:AttachRolePolicy",
                "iam:PutUserPolicy",
                "iam:PutGroupPolicy",
                "iam:PutRolePolicy",
                "iam:SetDefaultPolicyVersion",
                "iam:AddUserToGroup",
                "iam:UpdateAssumeRolePolicy",
                "iam:AddRoleToInstanceProfile",
            ],
            "grants an IAM identity new permissions",
        ),
        Spec::new(
            PE,
            &["iam:CreatePolicyVersion"],
            "makes a new policy version the one in force",
        )
        .when(&[("SetAsDefault", "true")]),
        Spec::new(
            PE,
            &[
                "ec2:AssociateIamInstanceProfile",
                "ec2:ReplaceIamInstanceProfileAssociation",
            ],
            "gives an instance a role",
        ),
        Spec::new(
            PE,
            &["ec2:RunInstances", "autoscaling:CreateLaunchConfiguration"],
            "starts instances with a role (passes the role)",
        )
        .when(&[("IamInstanceProfile*", "*")]),
        Spec::new(
            PE,
            &["ec2:RequestSpotInstances"],
            "starts instances with a role (passes the role)",
        )
        .when(&[("LaunchSpecification.IamInstanceProfile*", "*")]),
        Spec::new(
            PE,
            &[
                "ec2:CreateLaunchTemplate",
                "ec2:CreateLaunchTemplateVersion",
            ],
            "a launch template whose instances get a role (passes the role)",
        )
        .when(&[("LaunchTemplateData.IamInstanceProfile*", "*")]),
        Spec::new(
            PE,
            &[
                "lambda:CreateFunction",
                "lambda:UpdateFunctionCode",
                "glue:CreateDevEndpoint",
                "glue:UpdateDevEndpoint",
                "glue:CreateJob",
                "glue:UpdateJob",
                "datapipeline:CreatePipeline",
                "datapipeline:PutPipelineDefinition",
                "sagemaker:CreateNotebookInstance",
            ],
            "runs code of the caller's choosing with a role (passes the role)",
        ),
        Spec::new(
            PE,
            &["lambda:UpdateFunctionConfiguration"],
            "gives a function another role (passes the role)",
        )
        .when(&[("Role", "*")]),
        Spec::new(
            PE,
            &[
                "cloudformation:UpdateStack",
                "cloudformation:CreateChangeSet",
            ],
            "CloudFormation acts with the role passed (passes the role)",
        )
        .when(&[("RoleARN", "*")]),
        // No change set shows beforehand what these make; `change-set-removals` reads the
        // one a `CreateChangeSet` makes when it is executed.
        Spec::new(
            PE,
            &[
                "cloudformation:CreateStack",
                "cloudformation:CreateStackSet",
                "cloudformation:UpdateStackSet",
                "cloudformation:CreateStackInstances",
                "cloudformation:UpdateStackInstances",
            ],
            "runs a template with airlock's own credentials: it can create users, keys, roles \
             and functions; make a change set and execute it instead, which airlock reads",
        ),
        Spec::new(
            PE,
            &["cloudformation:RegisterType", "cloudformation:ActivateType"],
            "registers or activates a CloudFormation extension, whose code CloudFormation runs \
             with the role it is given",
        ),
        Spec::new(
            PE,
            &["ecs:RegisterTaskDefinition"],
            "containers of this task definition get a role (passes the role)",
        )
        .when(&[("taskRoleArn", "*")]),
        Spec::new(
            PE,
            &["ecs:RunTask", "ecs:StartTask"],
            "runs a task with another role (passes the role)",
        )
        .check(Check::JsonKey {
            param: "overrides",
            key: "taskRoleArn",
        }),
    ]
}

fn remote_execution() -> Vec<Spec> {
    const RE: &str = REMOTE_EXECUTION;
    vec![
        Spec::new(
            RE,
            &[
                "ssm:SendCommand",
                "ssm:StartSession",
                "ssm:ResumeSession",
                "ssm:StartAutomationExecution",
                "ec2-instance-connect:SendSSHPublicKey",
                "ec2-instance-connect:SendSerialConsoleSSHPublicKey",
                "ecs:ExecuteCommand",
                "sagemaker:CreatePresignedNotebookInstanceUrl",
                "sagemaker:CreatePresignedDomainUrl",
            ],
            "runs commands on a machine with its role",
        ),
        Spec::new(
            RE,
            &["codebuild:StartBuild", "codebuild:StartBuildBatch"],
            "runs a build with commands of the caller's choosing, with the project's role",
        )
        .when(&[("buildspecOverride", "*")]),
    ]
}

/// Decided in two steps: the rule holds the call, then the proxy reads the change set and
/// [`super::changeset::apply`] keeps or lifts the requirement.
fn change_set_removals() -> Vec<Spec> {
    vec![Spec::new(
        CHANGE_SET_REMOVALS,
        super::changeset::ACTIONS,
        super::changeset::REASON,
    )]
}

fn destruction_behind_other_verbs() -> Vec<Spec> {
    vec![
        Spec::new("batch-delete", &["*:Batch*Delete*"], "deletes in a batch"),
        Spec::new(
            "release",
            &["*:Release*"],
            "releases an address, host or number (someone else may get it)",
        ),
        Spec::new(
            "route53-record-deletion",
            &["route53:ChangeResourceRecordSets"],
            "the change batch deletes DNS records",
        )
        .when(&[("ChangeBatch.Changes.Change*.Action", "DELETE")]),
        Spec::new(
            "dynamodb-batch-delete",
            &["dynamodb:BatchWriteItem"],
            "the batch deletes items",
        )
        .check(Check::JsonKey {
            param: "RequestItems",
            key: "DeleteRequest",
        }),
        Spec::new(
            "dynamodb-transaction-delete",
            &["dynamodb:TransactWriteItems"],
            "the transaction deletes items",
        )
        .check(Check::JsonKey {
            param: "TransactItems",
            key: "Delete",
        }),
        Spec::new(
            "scale-to-zero",
            &[
                "autoscaling:UpdateAutoScalingGroup",
                "autoscaling:SetDesiredCapacity",
            ],
            "scales the group to zero instances (they are terminated)",
        )
        .when(&[("DesiredCapacity", "0")]),
        Spec::new(
            "scale-to-zero-max",
            &["autoscaling:UpdateAutoScalingGroup"],
            "scales the group to zero instances (they are terminated)",
        )
        .when(&[("MaxSize", "0")]),
        Spec::new(
            "ecs-scale-to-zero",
            &["ecs:UpdateService"],
            "stops every task of the service",
        )
        .when(&[("desiredCount", "0")]),
        Spec::new(
            "leave-organization",
            &[
                "organizations:LeaveOrganization",
                "organizations:CloseAccount",
            ],
            "takes an account out of the organization (or closes it)",
        ),
        Spec::new(
            "domain-transfer",
            &["route53domains:TransferDomainToAnotherAwsAccount"],
            "gives a domain away to another account",
        ),
        Spec::new(
            "s3-bucket-policy-lockout",
            &["s3:PutBucketPolicy"],
            "the bucket policy denies the account's own principals: the owner is locked out",
        )
        .check(Check::BucketPolicyLocksOutOwner),
        Spec::new(
            "rds-deletion-protection-off",
            &["rds:ModifyDBInstance", "rds:ModifyDBCluster"],
            "turns deletion protection off",
        )
        .when(&[("DeletionProtection", "false")]),
        Spec::new(
            "rds-backups-off",
            &["rds:ModifyDBInstance", "rds:ModifyDBCluster"],
            "turns automated backups off (existing ones are deleted)",
        )
        .when(&[("BackupRetentionPeriod", "0")])
        .irreversible(),
        Spec::new(
            "dynamodb-deletion-protection-off",
            &["dynamodb:UpdateTable"],
            "turns deletion protection off",
        )
        .when(&[("DeletionProtectionEnabled", "false")]),
        Spec::new(
            "ec2-termination-protection-off",
            &["ec2:ModifyInstanceAttribute"],
            "turns termination protection off",
        )
        .when(&[("DisableApiTermination.Value", "false")]),
        Spec::new(
            "ec2-termination-protection-off-attribute",
            &["ec2:ModifyInstanceAttribute"],
            "turns termination protection off",
        )
        .when(&[("Attribute", "disableApiTermination"), ("Value", "false")]),
        Spec::new(
            "s3-lifecycle-expiration",
            &[
                "s3:PutBucketLifecycleConfiguration",
                "s3:PutBucketLifecycle",
            ],
            "a lifecycle rule that expires (deletes) objects",
        )
        .when(&[("*Expiration*", "*")])
        .irreversible(),
        Spec::new(
            "s3-versioning-suspended",
            &["s3:PutBucketVersioning"],
            "suspends versioning (overwrites and deletes lose old versions)",
        )
        // `Status.1`, `Status.2` when the element is repeated: any of them counts.
        .when(&[("Status*", "Suspended")]),
        Spec::new(
            "kms-schedule-key-deletion",
            &["kms:ScheduleKeyDeletion"],
            "schedules the key's deletion: data encrypted under it becomes unreadable",
        )
        .irreversible(),
    ]
}

/// One built-in rule resolved over the model: the operations its actions name.
#[derive(Debug, Serialize)]
pub struct ResolvedRule {
    pub name: String,
    pub reason: String,
    pub actions: Vec<String>,
    /// Parameter conditions: the rule gates these operations only when they hold.
    pub when: BTreeMap<String, String>,
    pub check: Option<String>,
    pub irreversible: bool,
    /// `service:Operation` of every model operation the actions match.
    pub operations: Vec<String>,
}

/// One class resolved over the model.
#[derive(Debug, Serialize)]
pub struct ResolvedClass {
    #[serde(flatten)]
    pub class: &'static Class,
    /// Distinct model operations any of its rules can gate.
    pub operations: usize,
    /// The same, per service (botocore names).
    pub services: BTreeMap<String, usize>,
    pub rules: Vec<ResolvedRule>,
}

/// Every class with the model operations its rules match, for `airlock policy builtin`
/// and the tests that hold the catalogue to the model.
pub fn resolve() -> Vec<ResolvedClass> {
    let model = crate::aws::model();
    let actions: Vec<(&str, String)> = model
        .services
        .iter()
        .flat_map(|(name, svc)| {
            svc.operations().keys().map(move |op| {
                (
                    name.as_str(),
                    crate::identify::call::action_name(name, &svc.signing_name, op),
                )
            })
        })
        .collect();
    CLASSES
        .iter()
        .map(|class| {
            let mut services: BTreeMap<String, usize> = BTreeMap::new();
            let mut seen = std::collections::BTreeSet::new();
            let rules: Vec<ResolvedRule> = rules()
                .iter()
                .filter(|r| r.class == Some(class.name))
                .map(|r| {
                    let operations: Vec<String> = actions
                        .iter()
                        .filter(|(_, action)| {
                            r.actions
                                .iter()
                                .any(|g| super::glob::glob_match(g, action, true))
                        })
                        .map(|(service, action)| {
                            if seen.insert((*service, action.clone())) {
                                *services.entry(service.to_string()).or_default() += 1;
                            }
                            action.clone()
                        })
                        .collect();
                    ResolvedRule {
                        name: r.name.clone(),
                        reason: r.reason.clone().unwrap_or_default(),
                        actions: r.actions.clone(),
                        when: r.when.clone(),
                        check: r.check.map(|c| c.describe()),
                        irreversible: r.irreversible,
                        operations,
                    }
                })
                .collect();
            ResolvedClass {
                class,
                operations: seen.len(),
                services,
                rules,
            }
        })
        .collect()
}

/// Whether an operation name starts with a destructive verb (on a word boundary).
pub fn is_destructive_name(operation: &str) -> bool {
    DESTRUCTIVE_VERBS.iter().any(|v| {
        operation.strip_prefix(v).is_some_and(|rest| {
            rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_uppercase())
        })
    })
}
