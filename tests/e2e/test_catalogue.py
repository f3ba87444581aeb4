"""The built-in catalogue's classes, through `serve` to moto with signature checking on.

A sample of tests/policy_corpus (which checks every call through `explain`): calls that would
hand the agent credentials are denied with no approval link, say why and how to allow them for
one agent, and never reach moto (not even in shadow mode); privilege escalation, remote
execution and destruction behind other verbs wait for a receipt and never reach moto without
one; their benign look-alikes go through. A user's rule that names the class lifts it for the
named agent and action only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from support import Agent, Airlock, Moto, create_assumable_role, unique

NO_RETRIES = Config(retries={"total_max_attempts": 1})
ADMIN_ARN = "arn:aws:iam::aws:policy/AdministratorAccess"


def refused(client: Any, op: str, moto: Moto, **args: Any) -> dict[str, Any]:
    """Call `op`; it must fail with 403 AccessDenied and moto must have seen nothing."""
    before = moto.request_count()
    with pytest.raises(ClientError) as err:
        getattr(client, op)(**args)
    response = err.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403, response
    assert response["Error"]["Code"] in ("AccessDenied", "AccessDeniedException"), response
    assert moto.request_count() == before, f"{op} reached moto"
    return response["Error"]


def iam_user(moto: Moto) -> str:
    name = unique("catalogue-user")
    moto.client("iam").create_user(UserName=name)
    return name


def test_credential_vending_is_denied_with_how_to_allow_it(enforcing_airlock: Airlock, enforced_agent: Agent,
                                                          moto: Moto) -> None:
    user = iam_user(moto)
    iam = enforced_agent.client("iam", config=NO_RETRIES)
    error = refused(iam, "create_access_key", moto, UserName=user)
    message = error.get("Message", "")
    assert "builtin:credential-vending" in message, message
    assert "not approvable" in message, message
    assert f'agents = ["{enforced_agent.name}"]' in message, message
    assert 'overrides = ["builtin:credential-vending"]' in message, message
    assert enforcing_airlock.approvals_url.rsplit(":", 1)[1] not in message, "a deny offers no approval link"
    assert moto.client("iam").list_access_keys(UserName=user)["AccessKeyMetadata"] == []

    sts = enforced_agent.client("sts", config=NO_RETRIES)
    role = create_assumable_role(moto, unique("catalogue-role"))
    refused(sts, "assume_role", moto, RoleArn=role, RoleSessionName="agent")
    refused(sts, "get_session_token", moto)
    # The look-alike read passes.
    assert sts.get_caller_identity()["Arn"] == moto.user_arn


def test_shadow_mode_still_never_forwards_credentials(airlock: Airlock, agent: Agent, moto: Moto) -> None:
    # Shadow mode forwards what it would gate (a destructive verb goes through) ...
    iam = agent.client("iam", config=NO_RETRIES)
    user = iam_user(moto)
    iam.delete_user(UserName=user)
    # ... but not a call whose answer is a credential.
    user = iam_user(moto)
    error = refused(iam, "create_access_key", moto, UserName=user)
    assert "builtin:credential-vending" in error.get("Message", "")
    assert moto.client("iam").list_access_keys(UserName=user)["AccessKeyMetadata"] == []


def test_privilege_escalation_waits_for_a_receipt_and_the_page_shows_the_policy(
        enforcing_airlock: Airlock, enforced_agent: Agent, moto: Moto) -> None:
    user = iam_user(moto)
    iam = enforced_agent.client("iam", config=NO_RETRIES)
    error = refused(iam, "attach_user_policy", moto, UserName=user, PolicyArn=ADMIN_ARN)
    enforcing_airlock.approval_link(error["Message"])
    assert moto.client("iam").list_attached_user_policies(UserName=user)["AttachedPolicies"] == []

    document = json.dumps({"Version": "2012-10-17",
                           "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]})
    error = refused(iam, "put_user_policy", moto, UserName=user, PolicyName="everything",
                    PolicyDocument=document)
    link = enforcing_airlock.approval_link(error["Message"])
    assert moto.client("iam").list_user_policies(UserName=user)["PolicyNames"] == []
    page = requests.get(link, timeout=10)
    assert page.status_code == 200
    assert 'id="class-line"' in page.text, page.text[:2000]
    assert '<mark class="wildcard">"iam:*"</mark>' in page.text, page.text[:4000]
    assert '"Resource": <mark class="wildcard">"*"</mark>' in page.text


def test_remote_execution_waits_for_a_receipt(enforcing_airlock: Airlock, enforced_agent: Agent,
                                              moto: Moto) -> None:
    ssm = enforced_agent.client("ssm", config=NO_RETRIES)
    error = refused(ssm, "send_command", moto, InstanceIds=["i-0123456789abcdef0"],
                    DocumentName="AWS-RunShellScript", Parameters={"commands": ["rm -rf /var/lib/postgresql"]})
    link = enforcing_airlock.approval_link(error["Message"])
    page = requests.get(link, timeout=10).text
    assert '<pre class="command" id="command">rm -rf /var/lib/postgresql</pre>' in page, page[:4000]
    assert moto.client("ssm").list_commands()["Commands"] == [] or all(
        c["Parameters"].get("commands") != ["rm -rf /var/lib/postgresql"]
        for c in moto.client("ssm").list_commands()["Commands"])


def _zone(moto: Moto) -> tuple[str, str]:
    r53 = moto.client("route53")
    name = f"{unique('zone')}.example.com"
    zone = r53.create_hosted_zone(Name=name, CallerReference=unique("ref"))["HostedZone"]["Id"]
    return zone, name


def _change(zone: str, action: str, name: str) -> dict[str, Any]:
    return {"HostedZoneId": zone, "ChangeBatch": {"Changes": [{"Action": action, "ResourceRecordSet": {
        "Name": name, "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "192.0.2.10"}]}}]}}


def test_dns_records_deleted_through_a_change_batch_wait_and_upserts_pass(
        start_moto: Callable[[str], Moto], start_airlock: Callable[..., Airlock]) -> None:
    # A moto of its own: its state is read through /moto-api/data.json (moto 5.2.1 answers its
    # own signed route53 GETs with SignatureDoesNotMatch), which fails on a moto where an IAM
    # user was deleted, as other tests do.
    moto = start_moto("moto-route53")
    gate = start_airlock("airlock-route53", policy_mode="enforce", upstream=moto)
    zone, name = _zone(moto)
    record = f"www.{name}"
    r53 = gate.add_agent(unique("dns-agent")).client("route53", config=NO_RETRIES)
    before = moto.request_count()
    r53.change_resource_record_sets(**_change(zone, "UPSERT", record))
    assert moto.request_count() > before, "the UPSERT did not reach moto"
    assert records_in_zone(moto, name) == 3, "NS, SOA and the new A record"
    error = refused(r53, "change_resource_record_sets", moto, **_change(zone, "DELETE", record))
    gate.approval_link(error["Message"])
    assert records_in_zone(moto, name) == 3
    # The count sees a deletion: the same DELETE sent to moto directly removes the record.
    moto.client("route53").change_resource_record_sets(**_change(zone, "DELETE", record))
    assert records_in_zone(moto, name) == 2


def records_in_zone(moto: Moto, zone_name: str) -> int:
    """How many record sets moto's zone holds, read through moto's own API."""
    state = requests.get(f"{moto.url}/moto-api/data.json", timeout=30)
    assert state.status_code == 200, state.text[-2000:]
    [zone] = [z for z in state.json()["route53"]["FakeZone"] if z["name"] == f"{zone_name}."]
    return int(zone["resource_record_set_count"])


def test_batch_writes_that_delete_wait_and_puts_pass(enforcing_airlock: Airlock, enforced_agent: Agent,
                                                     moto: Moto) -> None:
    ddb = moto.client("dynamodb")
    table = unique("catalogue-table")
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    agent_ddb = enforced_agent.client("dynamodb", config=NO_RETRIES)
    agent_ddb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": {"pk": {"S": "kept"}}}}]})
    assert "Item" in ddb.get_item(TableName=table, Key={"pk": {"S": "kept"}})
    error = refused(agent_ddb, "batch_write_item", moto,
                    RequestItems={table: [{"DeleteRequest": {"Key": {"pk": {"S": "kept"}}}}]})
    enforcing_airlock.approval_link(error["Message"])
    assert "Item" in ddb.get_item(TableName=table, Key={"pk": {"S": "kept"}})


OVERRIDE_RULE = """
[[rule]]
name = "deployer-assumes-roles"
effect = "allow"
agents = ["{agent}"]
actions = ["sts:AssumeRole"]
overrides = ["builtin:credential-vending"]
reason = "the deploy agent works in the deploy role"
"""


def test_a_rule_naming_the_class_lifts_it_for_that_agent_and_action_only(
        moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> None:
    deployer = unique("deployer")
    server = Airlock(tmp_path_factory.mktemp("airlock-override"), moto)
    server.init("enforce")
    config = server.config.read_text()
    server.config.write_text(config + OVERRIDE_RULE.format(agent=deployer))
    server.start()
    try:
        role = create_assumable_role(moto, unique("deploy-role"))
        allowed = server.add_agent(deployer).client("sts", config=NO_RETRIES)
        other = server.add_agent(unique("other")).client("sts", config=NO_RETRIES)
        before = moto.request_count()
        creds = allowed.assume_role(RoleArn=role, RoleSessionName="deploy")["Credentials"]
        assert creds["AccessKeyId"] and moto.request_count() > before
        refused(other, "assume_role", moto, RoleArn=role, RoleSessionName="other")
        refused(allowed, "get_session_token", moto)
    finally:
        server.stop()
    # The same rule for every agent is no override: airlock refuses the config.
    server.config.write_text(config + OVERRIDE_RULE.format(agent="*"))
    proc = server.cli("agent", "list", check=False)
    assert proc.returncode != 0
    assert "must name its agents exactly" in proc.stderr, proc.stderr


def test_policy_builtin_lists_every_class_resolved_over_the_model(enforcing_airlock: Airlock) -> None:
    classes = {c["name"]: c for c in json.loads(enforcing_airlock.cli("policy", "builtin", "--json").stdout)}
    assert {"destructive-verb", "credential-vending", "privilege-escalation", "remote-execution",
            "destruction-behind-other-verbs"} <= set(classes)
    vending = classes["credential-vending"]
    assert vending["effect"] == "deny"
    listed = {op for rule in vending["rules"] for op in rule["operations"]}
    assert {"sts:AssumeRole", "iam:CreateAccessKey", "sts:GetSessionToken"} <= listed
    assert vending["operations"] == len(listed) and vending["services"]["sts"] >= 6
    batch = {op for rule in classes["destruction-behind-other-verbs"]["rules"] for op in rule["operations"]}
    assert {"ecr:BatchDeleteImage", "ec2:ReleaseAddress", "route53:ChangeResourceRecordSets"} <= batch
    text = enforcing_airlock.cli("policy", "builtin").stdout
    assert "builtin:credential-vending (deny):" in text, text[:2000]
