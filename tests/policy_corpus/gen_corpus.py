#!/usr/bin/env python3
# Generate with:  python3 tests/policy_corpus/gen_corpus.py --out /tmp/corpus.jsonl
#
# The corpus of dangerous calls (and their benign look-alikes) the built-in catalogue is
# held to. Each named call is built and signed by botocore (the request builder of
# tests/coverage/gen_requests.py, with the parameters given here over placeholders for
# the other required members) and written as one JSON line:
#
#   {name, class, decision, rule, service, operation, method, target, host, headers,
#    body_b64, ...}
#
# `decision` and `rule` are what `airlock explain` must answer with the built-in catalogue
# and no rules of one's own; `class` groups the calls in the counts. tests/policy_corpus.rs
# runs this and checks every line; tests/e2e/test_catalogue.py sends a sample through
# `serve` to moto. Requirements: Python 3.11+ and botocore.
#
# Sources: every IAM privilege-escalation method in Rhino Security Labs' list ("AWS IAM
# Privilege Escalation – Methods and Mitigation") is here as `rhino-NN-...`; the other
# classes follow the issue that introduced them.

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import botocore.session
from botocore.serialize import create_serializer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "coverage"))
from gen_requests import build  # noqa: E402  (one request builder for both corpora)

ADMIN_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "*", "Resource": "*"}]})
TRUST_ANYONE = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::222222222222:root"},
     "Action": "sts:AssumeRole"}]})
ROLE = "arn:aws:iam::111111111111:role/admin"
PROFILE = {"Arn": "arn:aws:iam::111111111111:instance-profile/admin"}
ADMIN_ARN = "arn:aws:iam::aws:policy/AdministratorAccess"
# An IAM user with AdministratorAccess, its access key, and the key's secret as an output.
IAM_KEY_TEMPLATE = json.dumps({"Resources": {
    "Admin": {"Type": "AWS::IAM::User", "Properties": {"ManagedPolicyArns": [ADMIN_ARN]}},
    "Key": {"Type": "AWS::IAM::AccessKey", "Properties": {"UserName": {"Ref": "Admin"}}}},
    "Outputs": {"Secret": {"Value": {"Fn::GetAtt": ["Key", "SecretAccessKey"]}}}})


def bucket_policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


DENY_ALL = {"Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": ["arn:aws:s3:::data", "arn:aws:s3:::data/*"]}
TLS_ONLY = {**DENY_ALL, "Condition": {"Bool": {"aws:SecureTransport": "false"}}}

CV, PE, RE, DB, DV, OK = ("credential-vending", "privilege-escalation", "remote-execution",
                          "destruction-behind-other-verbs", "destructive-verb", "allowed")
DENY, RECEIPT, ALLOW = "deny", "require_receipt", "allow"
CV_RULE, PE_RULE, RE_RULE = "builtin:credential-vending", "builtin:privilege-escalation", "builtin:remote-execution"


def cv(name, service, op, params=None):
    return (name, CV, service, op, params or {}, DENY, CV_RULE)


def pe(name, service, op, params=None):
    return (name, PE, service, op, params or {}, RECEIPT, PE_RULE)


def re_(name, service, op, params=None):
    return (name, RE, service, op, params or {}, RECEIPT, RE_RULE)


def db(name, service, op, rule, params=None):
    return (name, DB, service, op, params or {}, RECEIPT, f"builtin:{rule}")


def dv(name, service, op, params=None, rule="destructive-verb"):
    return (name, DV, service, op, params or {}, RECEIPT, f"builtin:{rule}")


def ok(name, service, op, params=None):
    return (name, OK, service, op, params or {}, ALLOW, "default")


def change_batch(*actions: str) -> dict:
    return {"HostedZoneId": "Z0000000000EXAMPLE", "ChangeBatch": {"Changes": [
        {"Action": a, "ResourceRecordSet": {"Name": f"r{i}.example.com", "Type": "A", "TTL": 60,
                                            "ResourceRecords": [{"Value": "192.0.2.1"}]}}
        for i, a in enumerate(actions)]}}


def put(i: str) -> dict:
    return {"PutRequest": {"Item": {"id": {"S": i}}}}


def delete(i: str) -> dict:
    return {"DeleteRequest": {"Key": {"id": {"S": i}}}}


CALLS = [
    # --- credential-vending: denied, never forwarded --------------------------------------
    cv("sts-assume-role", "sts", "AssumeRole", {"RoleArn": ROLE, "RoleSessionName": "agent"}),
    cv("sts-assume-role-with-saml", "sts", "AssumeRoleWithSAML"),
    cv("sts-assume-role-with-web-identity", "sts", "AssumeRoleWithWebIdentity"),
    cv("sts-assume-root", "sts", "AssumeRoot"),
    cv("sts-get-session-token", "sts", "GetSessionToken"),
    cv("sts-get-federation-token", "sts", "GetFederationToken", {"Name": "agent"}),
    cv("sts-get-web-identity-token", "sts", "GetWebIdentityToken"),
    cv("sts-get-delegated-access-token", "sts", "GetDelegatedAccessToken"),
    cv("iam-create-access-key", "iam", "CreateAccessKey", {"UserName": "agent"}),
    cv("iam-create-login-profile", "iam", "CreateLoginProfile", {"UserName": "agent", "Password": "Pa55word!long"}),
    cv("iam-update-login-profile", "iam", "UpdateLoginProfile", {"UserName": "agent", "Password": "Pa55word!long"}),
    cv("iam-create-service-specific-credential", "iam", "CreateServiceSpecificCredential",
       {"UserName": "agent", "ServiceName": "codecommit.amazonaws.com"}),
    cv("iam-reset-service-specific-credential", "iam", "ResetServiceSpecificCredential"),
    cv("iam-upload-ssh-public-key", "iam", "UploadSSHPublicKey"),
    cv("sso-get-role-credentials", "sso", "GetRoleCredentials"),
    cv("sso-oidc-create-token", "sso-oidc", "CreateToken"),
    cv("sso-oidc-create-token-with-iam", "sso-oidc", "CreateTokenWithIAM"),
    cv("cognito-identity-get-credentials-for-identity", "cognito-identity", "GetCredentialsForIdentity"),
    cv("cognito-identity-get-open-id-token", "cognito-identity", "GetOpenIdToken"),
    cv("cognito-identity-get-open-id-token-for-developer-identity", "cognito-identity",
       "GetOpenIdTokenForDeveloperIdentity"),
    cv("s3control-get-data-access", "s3control", "GetDataAccess"),
    cv("lakeformation-get-temporary-glue-table-credentials", "lakeformation", "GetTemporaryGlueTableCredentials"),
    cv("lakeformation-get-temporary-glue-partition-credentials", "lakeformation",
       "GetTemporaryGluePartitionCredentials"),
    cv("lakeformation-get-temporary-data-location-credentials", "lakeformation",
       "GetTemporaryDataLocationCredentials"),
    cv("datazone-get-environment-credentials", "datazone", "GetEnvironmentCredentials"),
    cv("emr-containers-get-managed-endpoint-session-credentials", "emr-containers",
       "GetManagedEndpointSessionCredentials"),
    cv("gamelift-get-compute-access", "gamelift", "GetComputeAccess"),
    cv("gamelift-get-instance-access", "gamelift", "GetInstanceAccess"),
    cv("redshift-get-cluster-credentials", "redshift", "GetClusterCredentials",
       {"DbUser": "admin", "ClusterIdentifier": "warehouse"}),
    cv("redshift-get-cluster-credentials-with-iam", "redshift", "GetClusterCredentialsWithIAM"),
    cv("redshift-serverless-get-credentials", "redshift-serverless", "GetCredentials"),
    cv("lightsail-get-instance-access-details", "lightsail", "GetInstanceAccessDetails"),
    cv("lightsail-download-default-key-pair", "lightsail", "DownloadDefaultKeyPair"),
    # --- privilege escalation: Rhino Security Labs' methods, in their order ---------------
    pe("rhino-01-create-policy-version-as-default", "iam", "CreatePolicyVersion",
       {"PolicyArn": "arn:aws:iam::111111111111:policy/agent", "PolicyDocument": ADMIN_POLICY,
        "SetAsDefault": True}),
    pe("rhino-02-set-default-policy-version", "iam", "SetDefaultPolicyVersion",
       {"PolicyArn": "arn:aws:iam::111111111111:policy/agent", "VersionId": "v2"}),
    pe("rhino-03-pass-role-run-instances", "ec2", "RunInstances",
       {"ImageId": "ami-12345678", "MinCount": 1, "MaxCount": 1, "IamInstanceProfile": PROFILE}),
    cv("rhino-04-create-access-key-of-another-user", "iam", "CreateAccessKey", {"UserName": "admin"}),
    cv("rhino-05-create-login-profile", "iam", "CreateLoginProfile", {"UserName": "admin", "Password": "Pa55word!long"}),
    cv("rhino-06-update-login-profile", "iam", "UpdateLoginProfile", {"UserName": "admin", "Password": "Pa55word!long"}),
    pe("rhino-07-attach-user-policy-administrator", "iam", "AttachUserPolicy",
       {"UserName": "agent", "PolicyArn": ADMIN_ARN}),
    pe("rhino-08-attach-group-policy", "iam", "AttachGroupPolicy", {"GroupName": "agents", "PolicyArn": ADMIN_ARN}),
    pe("rhino-09-attach-role-policy", "iam", "AttachRolePolicy", {"RoleName": "agent", "PolicyArn": ADMIN_ARN}),
    pe("rhino-10-put-user-policy", "iam", "PutUserPolicy",
       {"UserName": "agent", "PolicyName": "all", "PolicyDocument": ADMIN_POLICY}),
    pe("rhino-11-put-group-policy", "iam", "PutGroupPolicy",
       {"GroupName": "agents", "PolicyName": "all", "PolicyDocument": ADMIN_POLICY}),
    pe("rhino-12-put-role-policy", "iam", "PutRolePolicy",
       {"RoleName": "agent", "PolicyName": "all", "PolicyDocument": ADMIN_POLICY}),
    pe("rhino-13-add-user-to-group", "iam", "AddUserToGroup", {"UserName": "agent", "GroupName": "admins"}),
    pe("rhino-14-update-assume-role-policy", "iam", "UpdateAssumeRolePolicy",
       {"RoleName": "admin", "PolicyDocument": TRUST_ANYONE}),
    cv("rhino-14-then-assume-role", "sts", "AssumeRole", {"RoleArn": ROLE, "RoleSessionName": "x"}),
    pe("rhino-15-pass-role-lambda-create-function", "lambda", "CreateFunction",
       {"FunctionName": "f", "Role": ROLE, "Runtime": "python3.12", "Handler": "index.handler",
        "Code": {"ZipFile": b"PK"}}),
    ok("rhino-15-then-invoke-function", "lambda", "Invoke", {"FunctionName": "f"}),
    pe("rhino-16-pass-role-lambda-for-event-source", "lambda", "CreateFunction",
       {"FunctionName": "g", "Role": ROLE, "Runtime": "python3.12", "Handler": "index.handler",
        "Code": {"ZipFile": b"PK"}}),
    ok("rhino-16-then-create-event-source-mapping", "lambda", "CreateEventSourceMapping",
       {"FunctionName": "g", "EventSourceArn": "arn:aws:dynamodb:us-east-1:111111111111:table/t/stream/1"}),
    pe("rhino-17-update-function-code", "lambda", "UpdateFunctionCode", {"FunctionName": "f", "ZipFile": b"PK"}),
    pe("rhino-18-pass-role-glue-create-dev-endpoint", "glue", "CreateDevEndpoint",
       {"EndpointName": "e", "RoleArn": ROLE, "PublicKey": "ssh-rsa AAAA"}),
    pe("rhino-19-glue-update-dev-endpoint", "glue", "UpdateDevEndpoint",
       {"EndpointName": "e", "PublicKey": "ssh-rsa AAAA"}),
    pe("rhino-20-pass-role-cloudformation-create-stack", "cloudformation", "CreateStack",
       {"StackName": "s", "TemplateBody": "{}", "RoleARN": ROLE}),
    pe("rhino-21-pass-role-datapipeline-create-pipeline", "datapipeline", "CreatePipeline"),
    pe("rhino-21-datapipeline-put-pipeline-definition", "datapipeline", "PutPipelineDefinition"),
    # --- privilege escalation: more of the same paths -------------------------------------
    pe("iam-add-role-to-instance-profile", "iam", "AddRoleToInstanceProfile",
       {"InstanceProfileName": "p", "RoleName": "admin"}),
    pe("ec2-associate-iam-instance-profile", "ec2", "AssociateIamInstanceProfile",
       {"IamInstanceProfile": PROFILE, "InstanceId": "i-0123456789abcdef0"}),
    pe("ec2-replace-iam-instance-profile-association", "ec2", "ReplaceIamInstanceProfileAssociation",
       {"IamInstanceProfile": PROFILE, "AssociationId": "iip-assoc-1"}),
    pe("ec2-request-spot-instances-with-profile", "ec2", "RequestSpotInstances",
       {"LaunchSpecification": {"ImageId": "ami-12345678", "IamInstanceProfile": PROFILE}}),
    pe("ec2-create-launch-template-with-profile", "ec2", "CreateLaunchTemplate",
       {"LaunchTemplateName": "lt", "LaunchTemplateData": {"IamInstanceProfile": PROFILE}}),
    pe("ec2-create-launch-template-version-with-profile", "ec2", "CreateLaunchTemplateVersion",
       {"LaunchTemplateName": "lt", "LaunchTemplateData": {"IamInstanceProfile": {"Name": "admin"}}}),
    pe("autoscaling-create-launch-configuration-with-profile", "autoscaling", "CreateLaunchConfiguration",
       {"LaunchConfigurationName": "lc", "IamInstanceProfile": "admin"}),
    pe("lambda-update-function-configuration-role", "lambda", "UpdateFunctionConfiguration",
       {"FunctionName": "f", "Role": ROLE}),
    pe("glue-create-job", "glue", "CreateJob", {"Name": "j", "Role": ROLE, "Command": {"Name": "glueetl"}}),
    pe("glue-update-job", "glue", "UpdateJob", {"JobName": "j", "JobUpdate": {"Role": ROLE}}),
    pe("cloudformation-update-stack-with-role", "cloudformation", "UpdateStack",
       {"StackName": "s", "UsePreviousTemplate": True, "RoleARN": ROLE}),
    pe("cloudformation-create-stack-without-role", "cloudformation", "CreateStack",
       {"StackName": "s", "TemplateBody": IAM_KEY_TEMPLATE}),
    pe("cloudformation-create-stack-set", "cloudformation", "CreateStackSet",
       {"StackSetName": "s", "TemplateBody": IAM_KEY_TEMPLATE}),
    pe("cloudformation-update-stack-set", "cloudformation", "UpdateStackSet",
       {"StackSetName": "s", "TemplateBody": IAM_KEY_TEMPLATE}),
    pe("cloudformation-create-stack-instances", "cloudformation", "CreateStackInstances",
       {"StackSetName": "s", "Accounts": ["111111111111"], "Regions": ["us-east-1"]}),
    pe("cloudformation-update-stack-instances", "cloudformation", "UpdateStackInstances",
       {"StackSetName": "s", "Accounts": ["111111111111"], "Regions": ["us-east-1"]}),
    pe("cloudformation-register-type", "cloudformation", "RegisterType",
       {"TypeName": "Acme::Any::Thing", "SchemaHandlerPackage": "s3://b/handler.zip",
        "ExecutionRoleArn": ROLE}),
    pe("cloudformation-activate-type", "cloudformation", "ActivateType",
       {"PublicTypeArn": "arn:aws:cloudformation:us-east-1::type/resource/abc/Acme-Any-Thing",
        "ExecutionRoleArn": ROLE}),
    pe("cloudformation-create-change-set-with-role", "cloudformation", "CreateChangeSet",
       {"StackName": "s", "ChangeSetName": "c", "TemplateBody": "{}", "RoleARN": ROLE}),
    pe("ecs-register-task-definition-with-task-role", "ecs", "RegisterTaskDefinition",
       {"family": "f", "taskRoleArn": ROLE, "containerDefinitions": [{"name": "c", "image": "busybox"}]}),
    pe("ecs-run-task-overriding-task-role", "ecs", "RunTask",
       {"taskDefinition": "f", "overrides": {"taskRoleArn": ROLE}}),
    pe("ecs-start-task-overriding-task-role", "ecs", "StartTask",
       {"taskDefinition": "f", "containerInstances": ["ci"], "overrides": {"taskRoleArn": ROLE}}),
    pe("sagemaker-create-notebook-instance", "sagemaker", "CreateNotebookInstance",
       {"NotebookInstanceName": "n", "InstanceType": "ml.t3.medium", "RoleArn": ROLE}),
    # --- remote execution -----------------------------------------------------------------
    re_("ssm-send-command-rm-rf", "ssm", "SendCommand",
        {"InstanceIds": ["i-0123456789abcdef0"], "DocumentName": "AWS-RunShellScript",
         "Parameters": {"commands": ["rm -rf /var/lib/postgresql"]}}),
    re_("ssm-start-session", "ssm", "StartSession", {"Target": "i-0123456789abcdef0"}),
    re_("ssm-resume-session", "ssm", "ResumeSession", {"SessionId": "s-1"}),
    re_("ssm-start-automation-execution", "ssm", "StartAutomationExecution",
        {"DocumentName": "AWS-RunShellScript"}),
    re_("ec2-instance-connect-send-ssh-public-key", "ec2-instance-connect", "SendSSHPublicKey",
        {"InstanceId": "i-0123456789abcdef0", "InstanceOSUser": "ec2-user", "SSHPublicKey": "ssh-ed25519 AAAA"}),
    re_("ec2-instance-connect-send-serial-console-ssh-public-key", "ec2-instance-connect",
        "SendSerialConsoleSSHPublicKey", {"InstanceId": "i-0123456789abcdef0", "SSHPublicKey": "ssh-ed25519 AAAA"}),
    re_("ecs-execute-command", "ecs", "ExecuteCommand",
        {"cluster": "c", "task": "t", "command": "/bin/sh", "interactive": True}),
    re_("sagemaker-create-presigned-notebook-instance-url", "sagemaker", "CreatePresignedNotebookInstanceUrl"),
    re_("sagemaker-create-presigned-domain-url", "sagemaker", "CreatePresignedDomainUrl"),
    re_("codebuild-start-build-with-buildspec-override", "codebuild", "StartBuild",
        {"projectName": "p", "buildspecOverride": "version: 0.2\nphases:\n  build:\n    commands: [env]"}),
    re_("codebuild-start-build-batch-with-buildspec-override", "codebuild", "StartBuildBatch",
        {"projectName": "p", "buildspecOverride": "version: 0.2"}),
    # --- destruction behind other verbs ---------------------------------------------------
    db("route53-change-resource-record-sets-delete", "route53", "ChangeResourceRecordSets",
       "route53-record-deletion", change_batch("DELETE")),
    db("route53-change-resource-record-sets-upsert-then-delete", "route53", "ChangeResourceRecordSets",
       "route53-record-deletion", change_batch("UPSERT", "DELETE")),
    db("ecr-batch-delete-image", "ecr", "BatchDeleteImage", "batch-delete",
       {"repositoryName": "app", "imageIds": [{"imageTag": "latest"}]}),
    db("ecr-public-batch-delete-image", "ecr-public", "BatchDeleteImage", "batch-delete"),
    db("dynamodb-batch-write-item-delete", "dynamodb", "BatchWriteItem", "dynamodb-batch-delete",
       {"RequestItems": {"orders": [delete("1")]}}),
    db("dynamodb-batch-write-item-put-and-delete", "dynamodb", "BatchWriteItem", "dynamodb-batch-delete",
       {"RequestItems": {"orders": [put("1"), delete("2")]}}),
    db("dynamodb-transact-write-items-delete", "dynamodb", "TransactWriteItems", "dynamodb-transaction-delete",
       {"TransactItems": [{"Delete": {"TableName": "orders", "Key": {"id": {"S": "1"}}}}]}),
    db("ec2-release-address", "ec2", "ReleaseAddress", "release", {"AllocationId": "eipalloc-1"}),
    db("ec2-release-hosts", "ec2", "ReleaseHosts", "release"),
    db("ec2-release-ipam-pool-allocation", "ec2", "ReleaseIpamPoolAllocation", "release"),
    db("lightsail-release-static-ip", "lightsail", "ReleaseStaticIp", "release"),
    db("connect-release-phone-number", "connect", "ReleasePhoneNumber", "release"),
    db("pinpoint-sms-voice-v2-release-phone-number", "pinpoint-sms-voice-v2", "ReleasePhoneNumber", "release"),
    db("fsx-release-file-system-nfs-v3-locks", "fsx", "ReleaseFileSystemNfsV3Locks", "release"),
    db("autoscaling-update-group-to-zero", "autoscaling", "UpdateAutoScalingGroup", "scale-to-zero",
       {"AutoScalingGroupName": "web", "MinSize": 0, "MaxSize": 0, "DesiredCapacity": 0}),
    db("autoscaling-update-group-max-zero", "autoscaling", "UpdateAutoScalingGroup", "scale-to-zero-max",
       {"AutoScalingGroupName": "web", "MaxSize": 0}),
    db("autoscaling-set-desired-capacity-zero", "autoscaling", "SetDesiredCapacity", "scale-to-zero",
       {"AutoScalingGroupName": "web", "DesiredCapacity": 0}),
    db("ecs-update-service-to-zero", "ecs", "UpdateService", "ecs-scale-to-zero",
       {"service": "web", "desiredCount": 0}),
    db("organizations-leave-organization", "organizations", "LeaveOrganization", "leave-organization"),
    db("organizations-close-account", "organizations", "CloseAccount", "leave-organization"),
    db("route53domains-transfer-domain-to-another-account", "route53domains",
       "TransferDomainToAnotherAwsAccount", "domain-transfer"),
    db("s3-put-bucket-policy-deny-everyone", "s3", "PutBucketPolicy", "s3-bucket-policy-lockout",
       {"Bucket": "data", "Policy": bucket_policy(DENY_ALL)}),
    db("s3-put-bucket-policy-deny-everyone-but-another-account", "s3", "PutBucketPolicy",
       "s3-bucket-policy-lockout",
       {"Bucket": "data", "Policy": bucket_policy({"Effect": "Deny",
                                                  "NotPrincipal": {"AWS": "arn:aws:iam::222222222222:root"},
                                                  "Action": "s3:*", "Resource": "*"})}),
    db("s3-put-bucket-policy-deny-get-object", "s3", "PutBucketPolicy", "s3-bucket-policy-lockout",
       {"Bucket": "data", "Policy": bucket_policy({"Effect": "Deny", "Principal": {"AWS": "*"},
                                                  "Action": ["s3:GetObject"], "Resource": "*"})}),
    db("glue-batch-delete-table", "glue", "BatchDeleteTable", "batch-delete"),
    db("glue-batch-delete-partition", "glue", "BatchDeletePartition", "batch-delete"),
    db("glue-batch-delete-connection", "glue", "BatchDeleteConnection", "batch-delete"),
    db("redshift-batch-delete-cluster-snapshots", "redshift", "BatchDeleteClusterSnapshots", "batch-delete"),
    db("codebuild-batch-delete-builds", "codebuild", "BatchDeleteBuilds", "batch-delete"),
    db("sdb-batch-delete-attributes", "sdb", "BatchDeleteAttributes", "batch-delete"),
    db("securityhub-batch-delete-automation-rules", "securityhub", "BatchDeleteAutomationRules", "batch-delete"),
    db("kendra-batch-delete-document", "kendra", "BatchDeleteDocument", "batch-delete"),
    db("autoscaling-batch-delete-scheduled-action", "autoscaling", "BatchDeleteScheduledAction", "batch-delete"),
    db("location-batch-delete-geofence", "location", "BatchDeleteGeofence", "batch-delete"),
    db("omics-batch-delete-read-set", "omics", "BatchDeleteReadSet", "batch-delete"),
    db("rds-modify-db-instance-deletion-protection-off", "rds", "ModifyDBInstance",
       "rds-deletion-protection-off", {"DBInstanceIdentifier": "db", "DeletionProtection": False}),
    db("rds-modify-db-instance-backups-off", "rds", "ModifyDBInstance", "rds-backups-off",
       {"DBInstanceIdentifier": "db", "BackupRetentionPeriod": 0}),
    db("dynamodb-update-table-deletion-protection-off", "dynamodb", "UpdateTable",
       "dynamodb-deletion-protection-off", {"TableName": "orders", "DeletionProtectionEnabled": False}),
    db("ec2-modify-instance-attribute-termination-protection-off", "ec2", "ModifyInstanceAttribute",
       "ec2-termination-protection-off",
       {"InstanceId": "i-0123456789abcdef0", "DisableApiTermination": {"Value": False}}),
    db("s3-put-bucket-versioning-suspended", "s3", "PutBucketVersioning", "s3-versioning-suspended",
       {"Bucket": "data", "VersioningConfiguration": {"Status": "Suspended"}}),
    db("s3-put-bucket-lifecycle-expiration", "s3", "PutBucketLifecycleConfiguration", "s3-lifecycle-expiration",
       {"Bucket": "data", "LifecycleConfiguration": {"Rules": [
           {"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}]}}),
    db("kms-schedule-key-deletion", "kms", "ScheduleKeyDeletion", "kms-schedule-key-deletion",
       {"KeyId": "k", "PendingWindowInDays": 7}),
    # --- named destruction (the verb class, for comparison) -------------------------------
    dv("rds-delete-db-instance-no-final-snapshot", "rds", "DeleteDBInstance",
       {"DBInstanceIdentifier": "db", "SkipFinalSnapshot": True}),
    dv("ec2-terminate-instances", "ec2", "TerminateInstances", {"InstanceIds": ["i-0123456789abcdef0"]}),
    dv("s3-delete-object", "s3", "DeleteObject", {"Bucket": "data", "Key": "k"}),
    dv("dynamodb-delete-item", "dynamodb", "DeleteItem", {"TableName": "orders", "Key": {"id": {"S": "1"}}}),
    dv("dynamodb-delete-table", "dynamodb", "DeleteTable", {"TableName": "orders"}),
    dv("iam-delete-role", "iam", "DeleteRole", {"RoleName": "r"}),
    dv("iam-detach-role-policy", "iam", "DetachRolePolicy", {"RoleName": "r", "PolicyArn": ADMIN_ARN}),
    dv("route53-delete-hosted-zone", "route53", "DeleteHostedZone", {"Id": "Z0000000000EXAMPLE"}),
    dv("lambda-delete-function", "lambda", "DeleteFunction", {"FunctionName": "f"}),
    dv("ecr-delete-repository", "ecr", "DeleteRepository", {"repositoryName": "app"}),
    # --- benign look-alikes: must stay allowed --------------------------------------------
    ok("sts-get-caller-identity", "sts", "GetCallerIdentity"),
    ok("sts-get-access-key-info", "sts", "GetAccessKeyInfo", {"AccessKeyId": "AKIAIOSFODNN7EXAMPLE"}),
    ok("iam-get-user", "iam", "GetUser"),
    ok("iam-list-attached-user-policies", "iam", "ListAttachedUserPolicies", {"UserName": "agent"}),
    ok("iam-list-access-keys", "iam", "ListAccessKeys"),
    ok("iam-get-policy-version", "iam", "GetPolicyVersion"),
    ok("iam-create-policy-version-not-default", "iam", "CreatePolicyVersion",
       {"PolicyArn": "arn:aws:iam::111111111111:policy/agent", "PolicyDocument": ADMIN_POLICY,
        "SetAsDefault": False}),
    ok("iam-simulate-principal-policy", "iam", "SimulatePrincipalPolicy"),
    ok("s3-put-object", "s3", "PutObject", {"Bucket": "data", "Key": "k", "Body": b"hello"}),
    ok("s3-get-object", "s3", "GetObject", {"Bucket": "data", "Key": "k"}),
    ok("s3-list-buckets", "s3", "ListBuckets"),
    ok("s3-put-bucket-policy-tls-only", "s3", "PutBucketPolicy",
       {"Bucket": "data", "Policy": bucket_policy(TLS_ONLY)}),
    ok("s3-put-bucket-policy-deny-another-account", "s3", "PutBucketPolicy",
       {"Bucket": "data", "Policy": bucket_policy({**DENY_ALL, "Principal": {"AWS": "arn:aws:iam::222222222222:root"}})}),
    ok("s3-put-bucket-policy-deny-deletes", "s3", "PutBucketPolicy",
       {"Bucket": "data", "Policy": bucket_policy({**DENY_ALL, "Action": "s3:DeleteObject"})}),
    ok("s3-put-bucket-versioning-enabled", "s3", "PutBucketVersioning",
       {"Bucket": "data", "VersioningConfiguration": {"Status": "Enabled"}}),
    ok("ec2-describe-instances", "ec2", "DescribeInstances"),
    ok("ec2-describe-addresses", "ec2", "DescribeAddresses"),
    ok("ec2-allocate-address", "ec2", "AllocateAddress"),
    ok("ec2-run-instances-without-profile", "ec2", "RunInstances",
       {"ImageId": "ami-12345678", "MinCount": 1, "MaxCount": 1, "InstanceType": "t3.micro"}),
    ok("ec2-create-launch-template-without-profile", "ec2", "CreateLaunchTemplate",
       {"LaunchTemplateName": "lt", "LaunchTemplateData": {"ImageId": "ami-12345678"}}),
    ok("route53-change-resource-record-sets-upsert", "route53", "ChangeResourceRecordSets", change_batch("UPSERT")),
    ok("route53-change-resource-record-sets-create", "route53", "ChangeResourceRecordSets",
       change_batch("CREATE", "UPSERT")),
    ok("route53-list-resource-record-sets", "route53", "ListResourceRecordSets", {"HostedZoneId": "Z0000000000EXAMPLE"}),
    ok("dynamodb-batch-write-item-put-only", "dynamodb", "BatchWriteItem",
       {"RequestItems": {"orders": [put("1"), put("2")]}}),
    ok("dynamodb-batch-write-item-put-naming-delete-request", "dynamodb", "BatchWriteItem",
       {"RequestItems": {"orders": [{"PutRequest": {"Item": {"id": {"S": "DeleteRequest"}}}}]}}),
    ok("dynamodb-transact-write-items-put", "dynamodb", "TransactWriteItems",
       {"TransactItems": [{"Put": {"TableName": "orders", "Item": {"id": {"S": "1"}}}}]}),
    ok("dynamodb-get-item", "dynamodb", "GetItem", {"TableName": "orders", "Key": {"id": {"S": "1"}}}),
    ok("dynamodb-batch-get-item", "dynamodb", "BatchGetItem"),
    ok("dynamodb-update-table-deletion-protection-on", "dynamodb", "UpdateTable",
       {"TableName": "orders", "DeletionProtectionEnabled": True}),
    ok("autoscaling-update-group-to-two", "autoscaling", "UpdateAutoScalingGroup",
       {"AutoScalingGroupName": "web", "MinSize": 0, "MaxSize": 4, "DesiredCapacity": 2}),
    ok("autoscaling-set-desired-capacity-three", "autoscaling", "SetDesiredCapacity",
       {"AutoScalingGroupName": "web", "DesiredCapacity": 3}),
    ok("ecs-update-service-to-two", "ecs", "UpdateService", {"service": "web", "desiredCount": 2}),
    ok("ecs-register-task-definition-without-task-role", "ecs", "RegisterTaskDefinition",
       {"family": "f", "containerDefinitions": [{"name": "c", "image": "busybox"}]}),
    ok("ecs-run-task-without-overrides", "ecs", "RunTask", {"taskDefinition": "f"}),
    ok("ecr-describe-images", "ecr", "DescribeImages", {"repositoryName": "app"}),
    ok("ecr-batch-get-image", "ecr", "BatchGetImage", {"repositoryName": "app", "imageIds": [{"imageTag": "latest"}]}),
    ok("ecr-get-authorization-token", "ecr", "GetAuthorizationToken"),
    ok("lambda-update-function-configuration-timeout", "lambda", "UpdateFunctionConfiguration",
       {"FunctionName": "f", "Timeout": 30}),
    ok("lambda-list-functions", "lambda", "ListFunctions"),
    ok("cloudformation-create-change-set-without-role", "cloudformation", "CreateChangeSet",
       {"StackName": "s", "ChangeSetName": "c", "ChangeSetType": "CREATE", "TemplateBody": IAM_KEY_TEMPLATE}),
    ok("cloudformation-validate-template", "cloudformation", "ValidateTemplate", {"TemplateBody": IAM_KEY_TEMPLATE}),
    ok("cloudformation-describe-stacks", "cloudformation", "DescribeStacks"),
    ok("codebuild-start-build-without-override", "codebuild", "StartBuild", {"projectName": "p"}),
    ok("ssm-get-parameter", "ssm", "GetParameter", {"Name": "/app/url"}),
    ok("ssm-describe-instance-information", "ssm", "DescribeInstanceInformation"),
    ok("ssm-list-commands", "ssm", "ListCommands"),
    ok("organizations-describe-organization", "organizations", "DescribeOrganization"),
    ok("rds-modify-db-instance-backups-seven-days", "rds", "ModifyDBInstance",
       {"DBInstanceIdentifier": "db", "BackupRetentionPeriod": 7}),
    ok("rds-describe-db-instances", "rds", "DescribeDBInstances"),
    ok("kms-encrypt", "kms", "Encrypt", {"KeyId": "k", "Plaintext": b"x"}),
    ok("secretsmanager-get-secret-value", "secretsmanager", "GetSecretValue", {"SecretId": "s"}),
    ok("cognito-identity-get-id", "cognito-identity", "GetId"),
    ok("sqs-send-message", "sqs", "SendMessage", {"QueueUrl": "https://localhost:8443/111111111111/q", "MessageBody": "x"}),
    ok("sns-publish", "sns", "Publish", {"TopicArn": "arn:aws:sns:us-east-1:111111111111:t", "Message": "x"}),
    ok("logs-put-log-events", "logs", "PutLogEvents"),
    ok("glue-batch-get-partition", "glue", "BatchGetPartition"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="JSONL file to write")
    args = ap.parse_args()
    names = [c[0] for c in CALLS]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        print(f"duplicate names: {sorted(duplicates)}", file=sys.stderr)
        return 1
    session = botocore.session.get_session()
    with open(args.out, "w", encoding="utf-8") as out:
        for name, klass, service, op, params, decision, rule in CALLS:
            model = session.get_service_model(service)
            protocol = model.metadata.get("protocol")
            line = build(model, op, protocol, create_serializer(protocol, include_validation=False), params)
            line.update({"name": name, "class": klass, "decision": decision, "rule": rule,
                         "params_given": sorted(params)})
            out.write(json.dumps(line, sort_keys=True) + "\n")
    print(f"wrote {len(CALLS)} calls", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
