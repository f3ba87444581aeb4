//! `builtin:change-set-removals`: CloudFormation destroys resources, and makes ones that
//! grant power, behind verbs that do not say so. `cloudformation:ExecuteChangeSet` and
//! `cloudformation:UpdateStack` remove every resource the new template leaves out, replace
//! (delete, then make anew) those whose change requires it, and make whatever the template
//! adds, IAM users and access keys included, with airlock's own credentials; their
//! parameters do not show it. Only the change set does.
//!
//! So the catalogue holds both calls (rule [`RULE`]) and the proxy reads the change set with
//! airlock's own credentials before deciding (`proxy::changeset`): an `ExecuteChangeSet`'s
//! own change set, or, for `UpdateStack`, a preview change set made from the call's own
//! template and parameters. This module is the pure part: what to ask ([`plan`]), how to
//! read the answers ([`read_describe`], [`read_created`], [`read_error`]), what in a change
//! set needs a human ([`findings`]), and what that does to the call and the decision
//! ([`apply`]). `CreateStack` and the stack-set calls run a template no change set shows
//! beforehand, so the catalogue's `privilege-escalation` class always asks for them.
//!
//! A change needs a human when it removes or replaces a resource, and when it adds,
//! imports or changes (or removes) a resource of a type that grants power or runs code
//! ([`POWER_TYPES`]: IAM, Lambda, custom resources, macros, nested stacks, instances, …):
//! a change set that only adds an access key and outputs its secret destroys nothing, yet
//! hands out airlock's power.
//!
//! Failing closed: anything airlock cannot read, or reads as "may destroy", needs a receipt:
//! a `Conditional` replacement (CloudFormation decides it only while updating), a `Modify`
//! with no `Replacement` at all, a `Dynamic` action, a change to a nested stack (whose own
//! change set is not read), an action it does not know, a change set not yet complete, an
//! error, a timeout, a failed preview whose reason is not exactly "no changes", and an
//! `UpdateStack` whose preview may not be the update that runs: a template behind a
//! `TemplateURL` (the object can be replaced between airlock's read and the update), the
//! previous template (`UsePreviousTemplate`, which airlock does not see), a parameter's
//! previous value (`UsePreviousValue`), and a template that CloudFormation resolves anew on
//! every call: a `Transform` (a macro may return a different template each time;
//! `AWS::Include` reads an S3 object), a `{{resolve:…}}` dynamic reference, an SSM-typed
//! parameter. That last check is on the template's text ([`resolved_anew`]), so a template
//! that merely mentions these words needs a receipt too. `ExecuteChangeSet` needs none of
//! it: a change set's processed template and parameters are fixed when it is created, and
//! executing it runs what it shows.
//!
//! What a receipt binds: the call as identified (an `UpdateStack`'s template is in its
//! parameters' digest), plus, for `ExecuteChangeSet`, the change set's `ChangeSetId` (its
//! ARN, unique per creation: a change set cannot be edited once made, and a new one under
//! the same name has a new id), plus every finding. A receipt granted for one change set
//! does not cover another one made later under the same name.

use super::{Decision, Effect};
use crate::identify::body::{strict_xml, Element};
use crate::identify::{AwsCall, Resource};

/// The catalogue rule's name.
pub const RULE: &str = "builtin:change-set-removals";
/// The catalogue rule's name without the `builtin:` prefix (as `builtin::rules` names it).
pub const RULE_NAME: &str = "change-set-removals";
/// The calls whose change set airlock reads.
pub const ACTIONS: &[&str] = &[
    "cloudformation:ExecuteChangeSet",
    "cloudformation:UpdateStack",
];
/// The catalogue rule's reason, until the change set is read.
pub const REASON: &str = "removes or replaces stack resources, or makes ones that grant power or \
     run code (airlock reads the change set when the call is made)";
/// The member under which an `ExecuteChangeSet`'s change set id joins the call's resources.
pub const CHANGE_SET_ID: &str = "ChangeSetId";
/// The API version of CloudFormation's query protocol.
pub const VERSION: &str = "2010-05-15";

/// At most this many pages of one change set are read (CloudFormation pages at 100 to
/// 1,000 changes; a stack holds at most 500 resources, so a few pages suffice).
pub const MAX_PAGES: usize = 20;

/// UpdateStack members that CreateChangeSet takes with the same meaning and that decide
/// what changes; the preview copies them (and list members' `Name.member.N…` keys).
const PREVIEW_MEMBERS: &[&str] = &[
    "StackName",
    "TemplateBody",
    "UsePreviousTemplate",
    "Parameters",
    "Capabilities",
    "ResourceTypes",
    "RoleARN",
    "Tags",
];

/// What airlock asks CloudFormation to learn what a call changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// `ExecuteChangeSet`: read that change set.
    Describe {
        change_set_name: String,
        stack_name: Option<String>,
    },
    /// `UpdateStack`: make a preview change set from these `CreateChangeSet` parameters
    /// (without its name), read it, delete it.
    Preview { params: Vec<(String, String)> },
    /// Nothing can be read that would bind what the call does.
    FailClosed(String),
}

/// What to ask for this call (one of [`ACTIONS`]).
pub fn plan(call: &AwsCall) -> Plan {
    match call.operation.as_str() {
        "ExecuteChangeSet" => match call.params.get("ChangeSetName") {
            Some(name) if !name.is_empty() => Plan::Describe {
                change_set_name: name.clone(),
                stack_name: call.params.get("StackName").cloned(),
            },
            _ => Plan::FailClosed("the call names no change set".into()),
        },
        "UpdateStack" => {
            if let Some(why) = not_previewable(call) {
                return Plan::FailClosed(why);
            }
            let params = call
                .params
                .iter()
                .filter(|(k, _)| {
                    let head = k.split('.').next().unwrap_or(k);
                    PREVIEW_MEMBERS.contains(&head)
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Plan::Preview { params }
        }
        other => Plan::FailClosed(format!("{other} has no change set airlock can read")),
    }
}

/// Why a preview of this `UpdateStack` may not be the update that runs, if it may not be.
fn not_previewable(call: &AwsCall) -> Option<String> {
    const INSTEAD: &str = "make a change set and execute that (airlock reads what it runs)";
    let param = |name: &str| call.params.get(name).map(String::as_str);
    if param("TemplateURL").is_some() {
        return Some(format!(
            "the template is behind TemplateURL, which can change after airlock reads it; \
             send it as TemplateBody, or {INSTEAD}"
        ));
    }
    if param("UsePreviousTemplate").is_some_and(|v| !v.eq_ignore_ascii_case("false")) {
        return Some(format!(
            "UsePreviousTemplate: airlock does not see the stack's previous template; send it \
             as TemplateBody, or {INSTEAD}"
        ));
    }
    if let Some(what) = param("TemplateBody").and_then(resolved_anew) {
        return Some(format!(
            "the template holds {what}, which CloudFormation resolves anew for the update, so \
             airlock's preview may not be what runs; {INSTEAD}"
        ));
    }
    let previous_value = call.params.iter().any(|(k, v)| {
        k.starts_with("Parameters.member.")
            && k.ends_with(".UsePreviousValue")
            && !v.eq_ignore_ascii_case("false")
    });
    if previous_value {
        return Some(format!(
            "a parameter keeps its previous value (UsePreviousValue), which is not in the call; \
             give its value, or {INSTEAD}"
        ));
    }
    None
}

/// What in a template's text CloudFormation resolves anew on every call, if anything: a
/// `Transform` (top-level or `Fn::Transform`), a `{{resolve:…}}` dynamic reference, an
/// `AWS::SSM::Parameter…` type, or an escape (JSON `\u`, YAML `\x`/`\u`/`\U` or a
/// backslash before a line break) that could spell one without its text. A text check, so
/// a template that merely mentions them is caught too: that only asks for a receipt.
pub fn resolved_anew(template: &str) -> Option<&'static str> {
    const MARKERS: &[(&str, &str)] = &[
        ("Transform", "a Transform (a macro or AWS::Include)"),
        ("{{resolve:", "a dynamic reference ({{resolve:…}})"),
        ("AWS::SSM::Parameter", "an SSM parameter type"),
    ];
    if let Some((_, what)) = MARKERS.iter().find(|(m, _)| template.contains(m)) {
        return Some(what);
    }
    let escapes = template
        .split('\\')
        .skip(1)
        .any(|after| after.starts_with(['u', 'U', 'x', '\n', '\r']));
    escapes.then_some("an escape sequence that could hide a Transform or a dynamic reference")
}

/// The form body of `CreateChangeSet` for an `UpdateStack` preview named `name`.
pub fn preview_request(params: &[(String, String)], name: &str) -> Vec<(String, String)> {
    let mut out = query("CreateChangeSet");
    out.push(("ChangeSetName".into(), name.into()));
    out.push(("ChangeSetType".into(), "UPDATE".into()));
    out.push((
        "Description".into(),
        "airlock preview of an UpdateStack call; deleted once read".into(),
    ));
    out.extend(params.iter().cloned());
    out
}

/// The form body of `DescribeChangeSet` (one page).
pub fn describe_request(
    change_set_name: &str,
    stack_name: Option<&str>,
    next_token: Option<&str>,
) -> Vec<(String, String)> {
    let mut out = query("DescribeChangeSet");
    out.push(("ChangeSetName".into(), change_set_name.into()));
    if let Some(s) = stack_name {
        out.push(("StackName".into(), s.into()));
    }
    if let Some(t) = next_token {
        out.push(("NextToken".into(), t.into()));
    }
    out
}

/// The form body of `DeleteChangeSet` (by ARN: no stack name needed).
pub fn delete_request(change_set_id: &str) -> Vec<(String, String)> {
    let mut out = query("DeleteChangeSet");
    out.push(("ChangeSetName".into(), change_set_id.into()));
    out
}

fn query(action: &str) -> Vec<(String, String)> {
    vec![
        ("Action".into(), action.into()),
        ("Version".into(), VERSION.into()),
    ]
}

/// One `ResourceChange` of a change set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceChange {
    /// `Add`, `Modify`, `Remove`, `Import`, `Dynamic`.
    pub action: String,
    pub logical_id: String,
    pub physical_id: Option<String>,
    pub resource_type: String,
    /// `True`, `False`, `Conditional` (for `Modify`).
    pub replacement: Option<String>,
    /// `Delete`, `Retain`, `Snapshot`, `ReplaceAndDelete`, … where CloudFormation says.
    pub policy_action: Option<String>,
}

/// One page of a `DescribeChangeSet` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeSetPage {
    pub change_set_id: Option<String>,
    /// `CREATE_PENDING`, `CREATE_IN_PROGRESS`, `CREATE_COMPLETE`, `FAILED`, …
    pub status: String,
    pub status_reason: Option<String>,
    pub changes: Vec<ResourceChange>,
    pub next_token: Option<String>,
}

impl ChangeSetPage {
    /// A change set that failed only because it changes nothing: the status reason is
    /// exactly one of those CloudFormation gives when a template equals the stack's. Any
    /// other failure is unreadable (the reason is free text: a part of it proves nothing).
    pub fn has_no_changes(&self) -> bool {
        self.status == "FAILED"
            && self.status_reason.as_deref().is_some_and(|r| {
                r.starts_with("The submitted information didn't contain changes.")
                    || r == "No updates are to be performed."
            })
    }
}

/// The one child `name` of `element`, if any; two are ambiguity, refused.
fn one<'a>(element: &'a Element, name: &str) -> Result<Option<&'a Element>, String> {
    let mut found = element.children.iter().filter(|c| c.name == name);
    let first = found.next();
    if found.next().is_some() {
        return Err(format!("<{name}> appears twice in <{}>", element.name));
    }
    Ok(first)
}

fn text(element: &Element, name: &str) -> Result<Option<String>, String> {
    Ok(one(element, name)?
        .map(|e| e.text.trim().to_string())
        .filter(|t| !t.is_empty()))
}

fn required(element: &Element, name: &str) -> Result<String, String> {
    text(element, name)?.ok_or_else(|| format!("<{}> has no <{name}>", element.name))
}

/// The `…Result` element of a query-protocol answer whose root is `{operation}Response`.
fn result(xml: &[u8], operation: &str) -> Result<Element, String> {
    let root = strict_xml(xml).map_err(|e| e.message)?;
    if root.name != format!("{operation}Response") {
        return Err(format!("the answer is <{}>, not {operation}'s", root.name));
    }
    let result = one(&root, &format!("{operation}Result"))?
        .ok_or_else(|| format!("the answer has no {operation}Result"))?;
    Ok(result.clone())
}

/// Reads one page of a `DescribeChangeSet` answer.
pub fn read_describe(xml: &[u8]) -> Result<ChangeSetPage, String> {
    let result = result(xml, "DescribeChangeSet")?;
    let mut page = ChangeSetPage {
        change_set_id: text(&result, "ChangeSetId")?,
        status: required(&result, "Status")?,
        status_reason: text(&result, "StatusReason")?,
        changes: Vec::new(),
        next_token: text(&result, "NextToken")?,
    };
    if let Some(changes) = one(&result, "Changes")? {
        for member in &changes.children {
            if member.name != "member" {
                return Err(format!("<Changes> holds <{}>", member.name));
            }
            // `Type` is `Resource` for every change CloudFormation describes today; a change
            // of another type is not one airlock can judge.
            if let Some(kind) = text(member, "Type")? {
                if kind != "Resource" {
                    return Err(format!("a change of type {kind:?}"));
                }
            }
            let rc = one(member, "ResourceChange")?
                .ok_or_else(|| "a change without a ResourceChange".to_string())?;
            page.changes.push(ResourceChange {
                action: required(rc, "Action")?,
                logical_id: required(rc, "LogicalResourceId")?,
                physical_id: text(rc, "PhysicalResourceId")?,
                resource_type: required(rc, "ResourceType")?,
                replacement: text(rc, "Replacement")?,
                policy_action: text(rc, "PolicyAction")?,
            });
        }
    }
    Ok(page)
}

/// The `Id` (ARN) of the change set a `CreateChangeSet` answer made.
pub fn read_created(xml: &[u8]) -> Result<String, String> {
    required(&result(xml, "CreateChangeSet")?, "Id")
}

/// `Code: Message` of a query-protocol error answer, when it is one.
pub fn read_error(xml: &[u8]) -> Option<String> {
    let root = strict_xml(xml).ok()?;
    let error = root.all("Error").next()?;
    let code = text(error, "Code").ok().flatten()?;
    let message = text(error, "Message").ok().flatten().unwrap_or_default();
    Some(format!("{code}: {message}"))
}

/// What a change does that needs a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Harm {
    /// `Remove`: the resource is deleted (or, under a `Retain` policy, left unmanaged).
    Removes,
    /// `Modify` with `Replacement: True`: a new resource is made and the old one deleted.
    Replaces,
    /// `Modify` with `Replacement: Conditional` (or none given): may be replaced.
    MayReplace,
    /// A nested stack changes: its own changes are not read here.
    ChangesNestedStack,
    /// `Dynamic` or an unknown action: CloudFormation decides only while updating.
    Undetermined,
    /// A resource of one of [`POWER_TYPES`] is added, imported or changed in place.
    GrantsPower,
}

impl Harm {
    /// The member name under which the finding is added to the call's resources (and so
    /// to its binding and the approval page).
    pub fn member(self) -> &'static str {
        match self {
            Harm::Removes => "Removes",
            Harm::Replaces => "Replaces",
            Harm::MayReplace => "MayReplace",
            Harm::ChangesNestedStack => "ChangesNestedStack",
            Harm::Undetermined => "Undetermined",
            Harm::GrantsPower => "GrantsPower",
        }
    }

    fn of_member(member: &str) -> Option<Harm> {
        [
            Harm::Removes,
            Harm::Replaces,
            Harm::MayReplace,
            Harm::ChangesNestedStack,
            Harm::Undetermined,
            Harm::GrantsPower,
        ]
        .into_iter()
        .find(|h| h.member() == member)
    }

    /// The approval page's sentence for `what` (a finding's description).
    fn sentence(self, what: &str) -> String {
        match self {
            Harm::Removes => format!("Removes {what}."),
            Harm::Replaces => format!("Replaces {what}: a new one is made, the old one deleted."),
            Harm::MayReplace => {
                format!("May replace {what} (CloudFormation decides while updating).")
            }
            Harm::ChangesNestedStack => {
                format!("Changes nested stack {what} (its own changes are not read).")
            }
            Harm::Undetermined => {
                format!("Changes {what} in a way CloudFormation decides only while updating.")
            }
            Harm::GrantsPower => format!("{what}: {GRANTS_POWER}."),
        }
    }
}

/// A change that needs a human, and the change itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub harm: Harm,
    pub change: ResourceChange,
}

impl Finding {
    /// `Topic (AWS::SNS::Topic, arn:aws:sns:…:t1; policy Retain)`.
    pub fn describe(&self) -> String {
        let c = &self.change;
        let mut detail = c.resource_type.clone();
        if let Some(p) = &c.physical_id {
            detail.push_str(", ");
            detail.push_str(p);
        }
        if let Some(p) = &c.policy_action {
            detail.push_str("; policy ");
            detail.push_str(p);
        }
        format!("{} ({detail})", c.logical_id)
    }

    /// The finding's value in the call's resources: what [`Finding::describe`] says, after
    /// the verb for a [`Harm::GrantsPower`] (`Creates Key (AWS::IAM::AccessKey)`), whose
    /// member does not say it.
    pub fn value(&self) -> String {
        if self.harm != Harm::GrantsPower {
            return self.describe();
        }
        let verb = match self.change.action.as_str() {
            "Add" => "Creates",
            "Import" => "Imports",
            _ => "Changes",
        };
        format!("{verb} {}", self.describe())
    }

    /// The finding as the refusal lists it: `Removes Topic (AWS::SNS::Topic)`,
    /// `Creates Key (AWS::IAM::AccessKey): grants access or runs code`.
    pub fn summary(&self) -> String {
        match self.harm {
            Harm::GrantsPower => format!("{}: {GRANTS_POWER}", self.value()),
            harm => format!("{} {}", harm.member(), self.value()),
        }
    }
}

/// What a [`Harm::GrantsPower`] finding says of its resource.
const GRANTS_POWER: &str = "grants access or runs code";

/// Resource types that give an identity power or run code of the template's choosing
/// with some role, so that adding one is as much a human's call as destroying: IAM users,
/// keys, roles, policies and instance profiles; Lambda functions and their permissions;
/// macros, custom resources (`Custom::*` too) and nested stacks and stack sets, which run
/// code or templates airlock does not read; IAM Identity Center permission sets and
/// assignments; Cognito identity pools' roles; SSM documents and associations (commands on
/// instances); instances, launch templates and launch configurations (an instance profile
/// and user data); other compute that runs code of the template's choosing with a role it
/// is given (ECS task definitions, CodeBuild projects, Glue jobs and dev endpoints, Step
/// Functions state machines, Batch job definitions, SageMaker notebooks, Data Pipeline);
/// IAM Roles Anywhere (it hands out a role's credentials); CloudFormation extensions whose
/// code CloudFormation runs (hooks, resource types, activations). `…::*` matches the
/// prefix; compared without case.
pub const POWER_TYPES: &[&str] = &[
    "AWS::IAM::*",
    "AWS::Lambda::*",
    "AWS::CloudFormation::Macro",
    "AWS::CloudFormation::CustomResource",
    "Custom::*",
    "AWS::CloudFormation::Stack",
    "AWS::CloudFormation::StackSet",
    "AWS::SSO::*",
    "AWS::Cognito::IdentityPoolRoleAttachment",
    "AWS::SSM::Document",
    "AWS::SSM::Association",
    "AWS::EC2::Instance",
    "AWS::EC2::LaunchTemplate",
    "AWS::AutoScaling::LaunchConfiguration",
    "AWS::ECS::TaskDefinition",
    "AWS::CodeBuild::Project",
    "AWS::Glue::Job",
    "AWS::Glue::DevEndpoint",
    "AWS::StepFunctions::StateMachine",
    "AWS::Batch::JobDefinition",
    "AWS::SageMaker::NotebookInstance",
    "AWS::DataPipeline::Pipeline",
    "AWS::RolesAnywhere::*",
    "AWS::CloudFormation::HookVersion",
    "AWS::CloudFormation::ResourceVersion",
    "AWS::CloudFormation::TypeActivation",
];

/// Whether resources of `resource_type` grant power or run code ([`POWER_TYPES`]).
pub fn grants_power(resource_type: &str) -> bool {
    let ty = resource_type.to_ascii_lowercase();
    POWER_TYPES.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        match p.strip_suffix('*') {
            Some(prefix) => ty.starts_with(prefix),
            None => ty == p,
        }
    })
}

const NESTED_STACK: &str = "AWS::CloudFormation::Stack";

/// The changes that need a human, in a stable order (so a retry binds the same way): one
/// finding per change, what it destroys first, else the power it grants.
pub fn findings(changes: &[ResourceChange]) -> Vec<Finding> {
    let mut out: Vec<Finding> = changes
        .iter()
        .filter_map(|c| {
            let harm = match (c.action.as_str(), c.replacement.as_deref()) {
                ("Remove", _) => Harm::Removes,
                ("Modify", Some("True")) => Harm::Replaces,
                ("Modify", Some("False")) if c.resource_type == NESTED_STACK => {
                    Harm::ChangesNestedStack
                }
                ("Modify", Some("False")) | ("Add" | "Import", _)
                    if grants_power(&c.resource_type) =>
                {
                    Harm::GrantsPower
                }
                ("Modify", Some("False")) | ("Add" | "Import", _) => return None,
                ("Modify", _) => Harm::MayReplace,
                _ => Harm::Undetermined,
            };
            Some(Finding {
                harm,
                change: c.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (a.harm, &a.change.logical_id, &a.change.physical_id).cmp(&(
            b.harm,
            &b.change.logical_id,
            &b.change.physical_id,
        ))
    });
    out.dedup();
    out
}

/// What airlock learned of the change set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Read whole: its id (`ExecuteChangeSet` only: a preview's id is new on every call),
    /// how many changes it holds, and those that need a human.
    Read {
        change_set_id: Option<String>,
        changes: usize,
        findings: Vec<Finding>,
    },
    /// Not read: why.
    Unreadable(String),
}

/// The call as the receipt binds it and the decision, once the change set is read.
pub fn apply(call: &AwsCall, decision: &Decision, reading: &Reading) -> (AwsCall, Decision) {
    let mut call = call.clone();
    let mut decision = decision.clone();
    match reading {
        Reading::Read {
            change_set_id,
            changes,
            findings,
        } => {
            if let Some(id) = change_set_id {
                call.resources.push(Resource {
                    member: CHANGE_SET_ID.into(),
                    value: id.clone(),
                    arn: Some(id.clone()),
                });
            }
            for f in findings {
                call.resources.push(Resource {
                    member: f.harm.member().into(),
                    value: f.value(),
                    arn: None,
                });
            }
            if findings.is_empty() {
                decision.effect = Effect::Allow;
                decision.reason = format!(
                    "the change set removes and replaces nothing and grants no power \
                     ({changes} changes read)"
                );
            } else {
                let listed: Vec<String> = findings.iter().map(Finding::summary).collect();
                decision.reason = format!("the change set: {}", listed.join("; "));
            }
        }
        Reading::Unreadable(why) => {
            decision.reason =
                format!("airlock could not read the change set, so it asks (fail closed): {why}");
        }
    }
    (call, decision)
}

/// The approval page's sentence for a finding added by [`apply`], if `member` is one.
pub fn sentence(member: &str, value: &str) -> Option<String> {
    Harm::of_member(member).map(|h| h.sentence(value))
}

#[cfg(test)]
mod tests;
