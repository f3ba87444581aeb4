use super::*;
use crate::identify::AwsCall;
use std::collections::BTreeMap;

/// A `DescribeChangeSet` answer in the shape CloudFormation sends: a removed topic, a
/// bucket replaced, a queue modified in place, a function added, a role conditionally
/// replaced, with `Details`, `Scope` and a `NextToken`.
const PAGE: &str = r#"<DescribeChangeSetResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">
  <DescribeChangeSetResult>
    <ChangeSetName>drop-topic</ChangeSetName>
    <ChangeSetId>arn:aws:cloudformation:eu-west-1:123456789012:changeSet/drop-topic/1a2b3c4d-0000-4000-8000-000000000001</ChangeSetId>
    <StackId>arn:aws:cloudformation:eu-west-1:123456789012:stack/app/9f8e7d6c-0000-4000-8000-000000000002</StackId>
    <StackName>app</StackName>
    <ExecutionStatus>AVAILABLE</ExecutionStatus>
    <Status>CREATE_COMPLETE</Status>
    <Capabilities/>
    <Parameters>
      <member><ParameterKey>Env</ParameterKey><ParameterValue>prod</ParameterValue></member>
    </Parameters>
    <Changes>
      <member>
        <Type>Resource</Type>
        <HookInvocationCount>0</HookInvocationCount>
        <ResourceChange>
          <Action>Remove</Action>
          <LogicalResourceId>Topic</LogicalResourceId>
          <PhysicalResourceId>arn:aws:sns:eu-west-1:123456789012:alerts</PhysicalResourceId>
          <ResourceType>AWS::SNS::Topic</ResourceType>
          <PolicyAction>Delete</PolicyAction>
          <Scope/>
          <Details/>
        </ResourceChange>
      </member>
      <member>
        <Type>Resource</Type>
        <ResourceChange>
          <Action>Modify</Action>
          <LogicalResourceId>Bucket</LogicalResourceId>
          <PhysicalResourceId>app-data-1</PhysicalResourceId>
          <ResourceType>AWS::S3::Bucket</ResourceType>
          <Replacement>True</Replacement>
          <Scope><member>Properties</member></Scope>
          <Details>
            <member>
              <Evaluation>Static</Evaluation>
              <ChangeSource>DirectModification</ChangeSource>
              <Target>
                <Attribute>Properties</Attribute>
                <Name>BucketName</Name>
                <RequiresRecreation>Always</RequiresRecreation>
              </Target>
            </member>
          </Details>
        </ResourceChange>
      </member>
      <member>
        <Type>Resource</Type>
        <ResourceChange>
          <Action>Modify</Action>
          <LogicalResourceId>Queue</LogicalResourceId>
          <PhysicalResourceId>https://sqs.eu-west-1.amazonaws.com/123456789012/jobs</PhysicalResourceId>
          <ResourceType>AWS::SQS::Queue</ResourceType>
          <Replacement>False</Replacement>
        </ResourceChange>
      </member>
      <member>
        <Type>Resource</Type>
        <ResourceChange>
          <Action>Add</Action>
          <LogicalResourceId>Worker</LogicalResourceId>
          <ResourceType>AWS::Lambda::Function</ResourceType>
        </ResourceChange>
      </member>
      <member>
        <Type>Resource</Type>
        <ResourceChange>
          <Action>Modify</Action>
          <LogicalResourceId>Role</LogicalResourceId>
          <PhysicalResourceId>app-role</PhysicalResourceId>
          <ResourceType>AWS::IAM::Role</ResourceType>
          <Replacement>Conditional</Replacement>
        </ResourceChange>
      </member>
    </Changes>
    <NextToken>page-2 &amp; more</NextToken>
  </DescribeChangeSetResult>
  <ResponseMetadata><RequestId>5ccc7dcd-744c-11e5-be70-1b08c228efb3</RequestId></ResponseMetadata>
</DescribeChangeSetResponse>"#;

fn change(action: &str, id: &str, ty: &str, replacement: Option<&str>) -> ResourceChange {
    ResourceChange {
        action: action.into(),
        logical_id: id.into(),
        physical_id: None,
        resource_type: ty.into(),
        replacement: replacement.map(str::to_string),
        policy_action: None,
    }
}

/// Each finding's harm and logical id.
fn harms(found: &[Finding]) -> Vec<(Harm, &str)> {
    found
        .iter()
        .map(|f| (f.harm, f.change.logical_id.as_str()))
        .collect()
}

#[test]
fn reads_a_page_as_cloudformation_sends_it() {
    let page = read_describe(PAGE.as_bytes()).expect("reads");
    assert_eq!(page.status, "CREATE_COMPLETE");
    assert_eq!(
        page.change_set_id.as_deref(),
        Some("arn:aws:cloudformation:eu-west-1:123456789012:changeSet/drop-topic/1a2b3c4d-0000-4000-8000-000000000001")
    );
    assert_eq!(page.next_token.as_deref(), Some("page-2 & more"));
    assert_eq!(page.changes.len(), 5);
    assert_eq!(
        page.changes[0],
        ResourceChange {
            action: "Remove".into(),
            logical_id: "Topic".into(),
            physical_id: Some("arn:aws:sns:eu-west-1:123456789012:alerts".into()),
            resource_type: "AWS::SNS::Topic".into(),
            replacement: None,
            policy_action: Some("Delete".into()),
        }
    );
    let found = findings(&page.changes);
    // The in-place queue change needs no one; the added function runs code.
    assert_eq!(
        harms(&found),
        vec![
            (Harm::Removes, "Topic"),
            (Harm::Replaces, "Bucket"),
            (Harm::MayReplace, "Role"),
            (Harm::GrantsPower, "Worker"),
        ]
    );
    assert_eq!(
        found[0].describe(),
        "Topic (AWS::SNS::Topic, arn:aws:sns:eu-west-1:123456789012:alerts; policy Delete)"
    );
}

#[test]
fn moto_shaped_pages_read_too() {
    // moto sends no Replacement and no PhysicalResourceId, and empty elements as `<X/>`.
    let xml = r#"<DescribeChangeSetResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/"><DescribeChangeSetResult><ChangeSetName>add</ChangeSetName><ChangeSetId>arn:aws:cloudformation:eu-west-1:123456789012:changeSet/add/75169007</ChangeSetId><Parameters/><ExecutionStatus>AVAILABLE</ExecutionStatus><Status>CREATE_COMPLETE</Status><NotificationARNs/><Tags/><Changes><member><Type>Resource</Type><ResourceChange><Action>Add</Action><LogicalResourceId>Extra</LogicalResourceId><ResourceType>AWS::SNS::Topic</ResourceType></ResourceChange></member></Changes></DescribeChangeSetResult><ResponseMetadata><RequestId>x</RequestId></ResponseMetadata></DescribeChangeSetResponse>"#;
    let page = read_describe(xml.as_bytes()).expect("reads");
    assert_eq!(page.changes.len(), 1);
    assert!(findings(&page.changes).is_empty());
    assert_eq!(page.next_token, None);
}

#[test]
fn a_change_set_with_nothing_to_change() {
    let xml = r#"<DescribeChangeSetResponse><DescribeChangeSetResult><ChangeSetId>arn:x</ChangeSetId><ExecutionStatus>UNAVAILABLE</ExecutionStatus><Status>FAILED</Status><StatusReason>The submitted information didn't contain changes. Submit different information to create a change set.</StatusReason><Changes/></DescribeChangeSetResult></DescribeChangeSetResponse>"#;
    let page = read_describe(xml.as_bytes()).expect("reads");
    assert!(page.has_no_changes());
    let other = page.clone();
    let failed = ChangeSetPage {
        status_reason: Some("Template format error: unresolved resource".into()),
        ..other
    };
    assert!(!failed.has_no_changes());
    let no_updates = ChangeSetPage {
        status_reason: Some("No updates are to be performed.".into()),
        ..page.clone()
    };
    assert!(no_updates.has_no_changes());
    // Free text that merely holds the words is another failure: unreadable.
    for reason in [
        "Resource handler returned message: \"The submitted information didn't contain changes.\"",
        "Template error: No updates are to be performed. Unresolved: Fn::GetAtt",
        "the submitted information didn't contain changes.",
        "No updates are to be performed",
    ] {
        let other = ChangeSetPage {
            status_reason: Some(reason.into()),
            ..page.clone()
        };
        assert!(!other.has_no_changes(), "{reason}");
    }
    let not_failed = ChangeSetPage {
        status: "CREATE_COMPLETE".into(),
        ..page
    };
    assert!(!not_failed.has_no_changes());
}

/// A change set that only adds, as CloudFormation describes one made from a template with
/// an IAM user holding AdministratorAccess, its access key and a topic.
const ADDS_A_KEY: &str = r#"<DescribeChangeSetResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">
  <DescribeChangeSetResult>
    <ChangeSetName>add-user</ChangeSetName>
    <ChangeSetId>arn:aws:cloudformation:eu-west-1:123456789012:changeSet/add-user/1a2b3c4d-0000-4000-8000-000000000003</ChangeSetId>
    <StackName>app</StackName>
    <ExecutionStatus>AVAILABLE</ExecutionStatus>
    <Status>CREATE_COMPLETE</Status>
    <Changes>
      <member><Type>Resource</Type><ResourceChange><Action>Add</Action><LogicalResourceId>Admin</LogicalResourceId><ResourceType>AWS::IAM::User</ResourceType><Scope/><Details/></ResourceChange></member>
      <member><Type>Resource</Type><ResourceChange><Action>Add</Action><LogicalResourceId>Key</LogicalResourceId><ResourceType>AWS::IAM::AccessKey</ResourceType><Scope/><Details/></ResourceChange></member>
      <member><Type>Resource</Type><ResourceChange><Action>Add</Action><LogicalResourceId>Alerts</LogicalResourceId><ResourceType>AWS::SNS::Topic</ResourceType><Scope/><Details/></ResourceChange></member>
    </Changes>
  </DescribeChangeSetResult>
  <ResponseMetadata><RequestId>5ccc7dcd-744c-11e5-be70-1b08c228efb4</RequestId></ResponseMetadata>
</DescribeChangeSetResponse>"#;

#[test]
fn a_change_set_that_only_adds_an_access_key_needs_a_receipt() {
    let reading = read_whole(ADDS_A_KEY);
    let Reading::Read { findings, .. } = &reading else {
        panic!("read");
    };
    assert_eq!(
        harms(findings),
        vec![(Harm::GrantsPower, "Admin"), (Harm::GrantsPower, "Key")]
    );
    let c = call("ExecuteChangeSet", &[("ChangeSetName", "add-user")]);
    let (bound, d) = apply(&c, &decision(), &reading);
    assert_eq!(d.effect, Effect::RequireReceipt);
    assert!(
        d.reason
            .contains("Creates Key (AWS::IAM::AccessKey): grants access or runs code"),
        "{}",
        d.reason
    );
    let key = bound
        .resources
        .iter()
        .find(|r| r.member == "GrantsPower" && r.value.contains("Key"))
        .expect("the key is bound");
    assert_eq!(
        sentence(&key.member, &key.value).as_deref(),
        Some("Creates Key (AWS::IAM::AccessKey): grants access or runs code.")
    );
}

#[test]
fn every_change_to_a_power_type_is_a_finding() {
    // Every entry, a type under each prefix, and case does not matter.
    let types = POWER_TYPES
        .iter()
        .map(|p| p.replace('*', "Thing"))
        .chain(["aws::iam::role".to_string()]);
    for ty in types {
        let ty = ty.as_str();
        assert!(grants_power(ty), "{ty}");
        for (action, replacement, want) in [
            ("Add", None, Harm::GrantsPower),
            ("Import", None, Harm::GrantsPower),
            ("Modify", Some("False"), Harm::GrantsPower),
            ("Modify", Some("True"), Harm::Replaces),
            ("Remove", None, Harm::Removes),
            ("Dynamic", None, Harm::Undetermined),
        ] {
            // A nested stack changed in place says its own changes are not read.
            let want = match (ty, action, replacement) {
                (NESTED_STACK, "Modify", Some("False")) => Harm::ChangesNestedStack,
                _ => want,
            };
            let c = change(action, "X", ty, replacement);
            let got = findings(std::slice::from_ref(&c)).first().map(|f| f.harm);
            assert_eq!(got, Some(want), "{c:?}");
        }
    }
    for ty in [
        "AWS::SNS::Topic",
        "AWS::SQS::Queue",
        "AWS::IAMX::Thing",
        "AWS::SSM::Parameter",
        "AWS::EC2::InstanceConnectEndpoint",
        "Customer::Thing",
    ] {
        assert!(!grants_power(ty), "{ty}");
    }
    let imported = Finding {
        harm: Harm::GrantsPower,
        change: change("Import", "Fn", "AWS::Lambda::Function", None),
    };
    assert_eq!(
        imported.summary(),
        "Imports Fn (AWS::Lambda::Function): grants access or runs code"
    );
    let changed = Finding {
        harm: Harm::GrantsPower,
        change: change("Modify", "Role", "AWS::IAM::Role", Some("False")),
    };
    assert_eq!(changed.value(), "Changes Role (AWS::IAM::Role)");
}

#[test]
fn fails_closed_on_what_it_cannot_judge() {
    let cases = [
        (
            change("Modify", "A", "AWS::S3::Bucket", None),
            Some(Harm::MayReplace),
        ),
        (
            change("Modify", "A", "AWS::S3::Bucket", Some("Conditional")),
            Some(Harm::MayReplace),
        ),
        (
            change("Modify", "A", "AWS::S3::Bucket", Some("Maybe")),
            Some(Harm::MayReplace),
        ),
        (
            change("Modify", "A", "AWS::S3::Bucket", Some("False")),
            None,
        ),
        (
            change("Modify", "N", "AWS::CloudFormation::Stack", Some("False")),
            Some(Harm::ChangesNestedStack),
        ),
        (
            change("Modify", "N", "AWS::CloudFormation::Stack", Some("True")),
            Some(Harm::Replaces),
        ),
        (
            change("Dynamic", "D", "AWS::SQS::Queue", None),
            Some(Harm::Undetermined),
        ),
        (
            change("SomethingNew", "D", "AWS::SQS::Queue", None),
            Some(Harm::Undetermined),
        ),
        (change("Import", "I", "AWS::SQS::Queue", None), None),
        (change("Add", "I", "AWS::SQS::Queue", None), None),
        (
            change("Remove", "R", "AWS::SQS::Queue", None),
            Some(Harm::Removes),
        ),
    ];
    for (c, want) in cases {
        let got = findings(std::slice::from_ref(&c)).first().map(|f| f.harm);
        assert_eq!(got, want, "{c:?}");
    }
}

#[test]
fn refuses_ambiguous_or_foreign_answers() {
    let twice = PAGE.replace(
        "<Status>CREATE_COMPLETE</Status>",
        "<Status>CREATE_COMPLETE</Status><Status>FAILED</Status>",
    );
    assert!(read_describe(twice.as_bytes()).is_err());
    let two_actions = PAGE.replace(
        "<Action>Remove</Action>",
        "<Action>Add</Action><Action>Remove</Action>",
    );
    assert!(read_describe(two_actions.as_bytes()).is_err());
    let other_type = PAGE.replacen("<Type>Resource</Type>", "<Type>Hook</Type>", 1);
    assert!(read_describe(other_type.as_bytes()).is_err());
    let no_action = PAGE.replace("<Action>Remove</Action>", "");
    assert!(read_describe(no_action.as_bytes()).is_err());
    let other_answer = PAGE.replace("DescribeChangeSetRe", "DescribeStacksRe");
    assert!(read_describe(other_answer.as_bytes()).is_err());
    assert!(read_describe(b"<!DOCTYPE x><x/>").is_err());
    assert!(read_describe(b"not xml").is_err());
}

#[test]
fn reads_created_ids_and_errors() {
    let created = r#"<CreateChangeSetResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/"><CreateChangeSetResult><Id>arn:aws:cloudformation:eu-west-1:123456789012:changeSet/airlock-preview-1/abc</Id><StackId>arn:aws:cloudformation:eu-west-1:123456789012:stack/app/def</StackId></CreateChangeSetResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></CreateChangeSetResponse>"#;
    assert_eq!(
        read_created(created.as_bytes()).as_deref(),
        Ok("arn:aws:cloudformation:eu-west-1:123456789012:changeSet/airlock-preview-1/abc")
    );
    let error = r#"<ErrorResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/"><Error><Type>Sender</Type><Code>ValidationError</Code><Message>ChangeSet [nope] does not exist</Message></Error><RequestId>r</RequestId></ErrorResponse>"#;
    assert_eq!(
        read_error(error.as_bytes()).as_deref(),
        Some("ValidationError: ChangeSet [nope] does not exist")
    );
    assert!(read_created(error.as_bytes()).is_err());
}

fn call(operation: &str, params: &[(&str, &str)]) -> AwsCall {
    AwsCall {
        service: "cloudformation".into(),
        signing_name: "cloudformation".into(),
        operation: operation.into(),
        region: "eu-west-1".into(),
        account: Some("123456789012".into()),
        resources: vec![],
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[test]
fn plans_what_to_read() {
    assert_eq!(
        plan(&call(
            "ExecuteChangeSet",
            &[("ChangeSetName", "drop"), ("StackName", "app")]
        )),
        Plan::Describe {
            change_set_name: "drop".into(),
            stack_name: Some("app".into())
        }
    );
    assert!(matches!(
        plan(&call("ExecuteChangeSet", &[])),
        Plan::FailClosed(_)
    ));
    assert!(matches!(
        plan(&call(
            "UpdateStack",
            &[("StackName", "app"), ("TemplateURL", "https://s3.amazonaws.com/b/t.json")]
        )),
        Plan::FailClosed(why) if why.contains("TemplateURL")
    ));
    let update = call(
        "UpdateStack",
        &[
            ("StackName", "app"),
            ("TemplateBody", "{}"),
            ("Parameters.member.1.ParameterKey", "Env"),
            ("Parameters.member.1.ParameterValue", "prod"),
            ("Capabilities.member.1", "CAPABILITY_IAM"),
            ("StackPolicyDuringUpdateBody", "{}"),
            ("ClientRequestToken", "t"),
            ("DisableRollback", "true"),
        ],
    );
    let Plan::Preview { params } = plan(&update) else {
        panic!("a preview");
    };
    let keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "Capabilities.member.1",
            "Parameters.member.1.ParameterKey",
            "Parameters.member.1.ParameterValue",
            "StackName",
            "TemplateBody",
        ]
    );
    let benign = call(
        "UpdateStack",
        &[
            ("StackName", "app"),
            (
                "TemplateBody",
                r#"{"Resources":{"T":{"Type":"AWS::SNS::Topic"}}}"#,
            ),
            ("UsePreviousTemplate", "false"),
            ("Parameters.member.1.ParameterKey", "Env"),
            ("Parameters.member.1.UsePreviousValue", "false"),
            ("Parameters.member.1.ParameterValue", "prod"),
        ],
    );
    assert!(matches!(plan(&benign), Plan::Preview { .. }));
    let body = preview_request(&params, "airlock-preview-1");
    assert_eq!(body[0], ("Action".into(), "CreateChangeSet".into()));
    assert!(body.contains(&("ChangeSetType".into(), "UPDATE".into())));
    assert!(body.contains(&("ChangeSetName".into(), "airlock-preview-1".into())));
}

/// The reading of the one complete page `xml`, as `proxy::changeset` makes it.
fn read_whole(xml: &str) -> Reading {
    let page = read_describe(xml.as_bytes()).expect("reads");
    Reading::Read {
        change_set_id: page.change_set_id.clone(),
        changes: page.changes.len(),
        findings: findings(&page.changes),
    }
}

fn decision() -> Decision {
    Decision {
        effect: Effect::RequireReceipt,
        rule: RULE.into(),
        reason: REASON.into(),
        irreversible: false,
        irreversible_reasons: vec![],
        class: Some(super::super::builtin::CHANGE_SET_REMOVALS),
        vends_credentials: false,
        quorum: Default::default(),
    }
}

#[test]
fn a_change_set_that_destroys_nothing_is_allowed_and_bound_to_its_id() {
    let c = call("ExecuteChangeSet", &[("ChangeSetName", "add")]);
    let reading = Reading::Read {
        change_set_id: Some("arn:aws:cloudformation:eu-west-1:1:changeSet/add/1".into()),
        changes: 1,
        findings: vec![],
    };
    let (bound, d) = apply(&c, &decision(), &reading);
    assert_eq!(d.effect, Effect::Allow);
    assert_eq!(bound.resources.len(), 1);
    assert_eq!(bound.resources[0].member, "ChangeSetId");
    assert_eq!(bound.params_digest(), c.params_digest());
}

#[test]
fn removals_need_a_receipt_and_are_named() {
    let c = call("ExecuteChangeSet", &[("ChangeSetName", "drop")]);
    let page = read_describe(PAGE.as_bytes()).expect("reads");
    let (bound, d) = apply(&c, &decision(), &read_whole(PAGE));
    assert_eq!(d.effect, Effect::RequireReceipt);
    assert!(
        d.reason.contains("Removes Topic (AWS::SNS::Topic"),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("Replaces Bucket"), "{}", d.reason);
    let members: Vec<&str> = bound.resources.iter().map(|r| r.member.as_str()).collect();
    assert_eq!(
        members,
        vec![
            "ChangeSetId",
            "Removes",
            "Replaces",
            "MayReplace",
            "GrantsPower"
        ]
    );
    assert!(
        d.reason
            .contains("Creates Worker (AWS::Lambda::Function): grants access or runs code"),
        "{}",
        d.reason
    );
    // Another change set under the same name binds differently.
    let other = Reading::Read {
        change_set_id: Some("arn:aws:cloudformation:eu-west-1:1:changeSet/drop/2".into()),
        changes: 0,
        findings: findings(&page.changes),
    };
    let (rebound, _) = apply(&c, &decision(), &other);
    assert_ne!(
        crate::receipt::Binding::of(&bound, "a", "e"),
        crate::receipt::Binding::of(&rebound, "a", "e")
    );
    assert_eq!(
        sentence("Removes", "Topic (AWS::SNS::Topic)").as_deref(),
        Some("Removes Topic (AWS::SNS::Topic).")
    );
    assert_eq!(sentence("StackName", "app"), None);
}

#[test]
fn an_unreadable_change_set_needs_a_receipt_and_says_why() {
    let c = call("UpdateStack", &[("StackName", "app")]);
    let (bound, d) = apply(
        &c,
        &decision(),
        &Reading::Unreadable("DescribeChangeSet timed out".into()),
    );
    assert_eq!(d.effect, Effect::RequireReceipt);
    assert!(d.reason.contains("fail closed") && d.reason.contains("timed out"));
    assert_eq!(bound, c);
}

#[test]
fn the_catalogue_holds_both_calls_for_reading() {
    let policy = super::super::Policy {
        mode: super::super::Mode::Enforce,
        rules: vec![],
        builtin: true,
        ..Default::default()
    };
    // Read first: the change set's own rule; a template run before anything can read it
    // asks, whatever its role.
    let held = [
        ("ExecuteChangeSet", RULE),
        ("UpdateStack", RULE),
        ("CreateStack", "builtin:privilege-escalation"),
        ("CreateStackSet", "builtin:privilege-escalation"),
        ("UpdateStackSet", "builtin:privilege-escalation"),
        ("CreateStackInstances", "builtin:privilege-escalation"),
        ("UpdateStackInstances", "builtin:privilege-escalation"),
    ];
    for (operation, rule) in held {
        let d = policy.decide(
            &call(operation, &[("StackName", "app")]),
            "agent",
            "default",
        );
        assert_eq!(
            (d.effect, d.rule.as_str()),
            (Effect::RequireReceipt, rule),
            "{operation}"
        );
        if rule != RULE {
            assert!(d.reason.contains("make a change set"), "{}", d.reason);
        }
    }
    // Making or reading a change set changes nothing.
    for operation in ["CreateChangeSet", "DescribeChangeSet", "ValidateTemplate"] {
        let d = policy.decide(
            &call(operation, &[("StackName", "app")]),
            "agent",
            "default",
        );
        assert_eq!(d.effect, Effect::Allow, "{operation}");
    }
}

#[test]
fn an_update_resolved_anew_is_not_previewed() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("UsePreviousTemplate", "true")],
            "UsePreviousTemplate",
        ),
        (
            &[(
                "TemplateBody",
                r#"{"Transform":"AWS::Serverless-2016-10-31","Resources":{}}"#,
            )],
            "Transform",
        ),
        (
            &[(
                "TemplateBody",
                "Resources:\n  T:\n    Fn::Transform:\n      Name: AWS::Include\n",
            )],
            "Transform",
        ),
        (
            &[(
                "TemplateBody",
                r#"{"Resources":{"T":{"Type":"AWS::SNS::Topic","Properties":{"TopicName":"{{resolve:ssm:/app/topic}}"}}}}"#,
            )],
            "dynamic reference",
        ),
        (
            &[(
                "TemplateBody",
                r#"{"Parameters":{"Ami":{"Type":"AWS::SSM::Parameter::Value<String>"}},"Resources":{}}"#,
            )],
            "SSM parameter",
        ),
        (
            &[(
                "TemplateBody",
                r#"{"\u0054ransform":"Evil","Resources":{}}"#,
            )],
            "escape",
        ),
        (
            &[(
                "TemplateBody",
                "Resources:\n  T:\n    Type: \"AWS::SNS::Topic\"\n    Properties:\n      TopicName: \"{{res\\\n        olve:ssm:/a}}\"\n",
            )],
            "escape",
        ),
        (
            &[
                ("TemplateBody", "{}"),
                ("Parameters.member.2.ParameterKey", "Image"),
                ("Parameters.member.2.UsePreviousValue", "true"),
            ],
            "UsePreviousValue",
        ),
    ];
    for (params, why) in cases {
        let mut all = vec![("StackName", "app")];
        all.extend_from_slice(params);
        match plan(&call("UpdateStack", &all)) {
            Plan::FailClosed(reason) => {
                assert!(reason.contains(why), "{reason}");
                assert!(reason.contains("change set"), "{reason}");
            }
            other => panic!("{params:?} was planned as {other:?}"),
        }
    }
    // ExecuteChangeSet is read whatever its template held: the change set is fixed.
    assert!(matches!(
        plan(&call("ExecuteChangeSet", &[("ChangeSetName", "sam")])),
        Plan::Describe { .. }
    ));
}
