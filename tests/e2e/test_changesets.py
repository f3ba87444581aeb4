"""CloudFormation destroys, and makes what grants power, behind `ExecuteChangeSet` and `UpdateStack`:
airlock reads the change set (with its own credentials) and asks for a receipt only when it removes
or replaces resources or touches one that grants power or runs code (an IAM user and its key here).

Stacks are made in moto with the real keys; the agent's calls go through an enforcing airlock
whose config trusts one approver key (`airlock approve ID --key FILE`, as a human would). What
happened is read from moto: the stack's resources, the SNS topics and SQS queues themselves, and
the stack's change sets (airlock's preview change sets must not be left behind).

moto 5.2.1 computes change sets with `Add`, `Modify` and `Remove` only, never a `Replacement` or
a `PhysicalResourceId`, and does not delete a stack's other change sets when one is executed
(AWS does). So `Modify` (which airlock, with no `Replacement` to read, treats as a possible
replacement) and paging are covered by the unit tests of `src/policy/changeset.rs` only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from support import Agent, GatedAirlock, Moto, unique

NO_RETRIES = Config(retries={"total_max_attempts": 1})


@pytest.fixture(scope="module")
def gate(start_gated_airlock: Callable[..., GatedAirlock]) -> GatedAirlock:
    return start_gated_airlock("airlock-changesets", settings={("approval", "uses"): 1})


@pytest.fixture(scope="module")
def agent(gate: GatedAirlock) -> Agent:
    return gate.add_agent(unique("cfn-agent"))


def template(queue: str | None, topic: str | None, extra_topic: str | None = None) -> str:
    resources: dict[str, Any] = {}
    if queue:
        resources["Queue"] = {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": queue}}
    if topic:
        resources["Topic"] = {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": topic}}
    if extra_topic:
        resources["Extra"] = {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": extra_topic}}
    return json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources})


class Stack:
    """A stack with a queue and a topic, made in moto with the real keys."""

    def __init__(self, moto: Moto):
        self.moto = moto
        self.name = unique("app")
        self.queue = unique("jobs")
        self.topic = unique("alerts")
        moto.client("cloudformation").create_stack(StackName=self.name,
                                                   TemplateBody=template(self.queue, self.topic))
        assert self.logical_ids() == ["Queue", "Topic"]
        assert self.topic_exists(self.topic) and self.queue_exists()

    def logical_ids(self) -> list[str]:
        resources = self.moto.client("cloudformation").describe_stack_resources(StackName=self.name)
        return sorted(r["LogicalResourceId"] for r in resources["StackResources"])

    def topic_exists(self, name: str) -> bool:
        topics = self.moto.client("sns").list_topics()["Topics"]
        return any(t["TopicArn"].endswith(f":{name}") for t in topics)

    def queue_exists(self) -> bool:
        urls = self.moto.client("sqs").list_queues(QueueNamePrefix=self.queue).get("QueueUrls", [])
        return any(u.endswith(f"/{self.queue}") for u in urls)

    def previews_left(self) -> list[str]:
        """airlock's preview change sets still in moto (moto lists every stack's change sets)."""
        summaries = self.moto.client("cloudformation").list_change_sets(StackName=self.name)["Summaries"]
        return sorted(s["ChangeSetName"] for s in summaries if s["ChangeSetName"].startswith("airlock-preview-"))


def change_set(agent: Agent, stack: Stack, name: str, template_body: str) -> Callable[[], Any]:
    """The agent makes change set `name` of `stack` (allowed: it changes nothing yet); the call
    that executes it, as the agent makes it (boto3, one attempt)."""
    cfn = agent.client("cloudformation", config=NO_RETRIES)
    cfn.create_change_set(StackName=stack.name, ChangeSetName=name, ChangeSetType="UPDATE",
                          TemplateBody=template_body)
    return lambda: cfn.execute_change_set(StackName=stack.name, ChangeSetName=name)


def refused(call: Callable[[], Any]) -> str:
    """`call` is refused with AccessDenied: its message."""
    with pytest.raises(ClientError) as err:
        call()
    error = err.value.response["Error"]
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, err.value.response
    assert error["Code"] == "AccessDenied", err.value.response
    return str(error.get("Message", ""))


def test_a_change_set_that_only_adds_goes_through(gate: GatedAirlock, agent: Agent, moto: Moto) -> None:
    stack = Stack(moto)
    extra = unique("extra")
    change_set(agent, stack, "add-topic", template(stack.queue, stack.topic, extra))()
    assert stack.logical_ids() == ["Extra", "Queue", "Topic"]
    assert stack.topic_exists(extra) and stack.topic_exists(stack.topic)
    assert not [a for a in gate.approvals(all=True) if stack.name in json.dumps(a)], "an approval was asked for"


def test_a_change_set_that_removes_is_held_then_goes_through_once(gate: GatedAirlock, agent: Agent,
                                                                   moto: Moto) -> None:
    stack = Stack(moto)
    execute = change_set(agent, stack, "drop-topic", template(stack.queue, None))

    message = refused(execute)
    assert "Removes Topic (AWS::SNS::Topic)" in message, message
    approval = gate.approval_id(message)
    assert stack.logical_ids() == ["Queue", "Topic"] and stack.topic_exists(stack.topic)

    # What the human sees: the removed resource on the page and in the approval's record.
    link = f"http://localhost:{gate.approvals_url.rsplit(':', 1)[1]}/approvals/{approval}"
    page = requests.get(link, timeout=10)
    assert page.status_code == 200, page.text
    assert "Removes Topic (AWS::SNS::Topic)." in page.text, page.text
    record = gate.approval_record(approval)
    members = [r["member"] for r in record["call"]["resources"]]
    assert "ChangeSetId" in members and "Removes" in members, record["call"]["resources"]
    assert record["rule"] == "builtin:change-set-removals", record
    # airlock learned its account with its own call (GetCallerIdentity), signed as these are.
    assert record["call"]["account"] == moto.user_arn.split(":")[4], record["call"]

    gate.approve(approval)
    execute()
    assert stack.logical_ids() == ["Queue"]
    assert not stack.topic_exists(stack.topic) and stack.queue_exists()

    # moto keeps the executed change set (AWS would delete it): executing it again needs a new
    # approval, the receipt was for one use.
    again = refused(execute)
    assert gate.approval_id(again) != approval


def test_a_receipt_does_not_cover_a_new_change_set_of_the_same_name(gate: GatedAirlock, agent: Agent,
                                                                    moto: Moto) -> None:
    stack = Stack(moto)
    execute = change_set(agent, stack, "cleanup", template(stack.queue, None))
    approval = gate.approval_id(refused(execute))
    gate.approve(approval)

    # Before it is used, the change set is replaced by one that removes everything.
    real = moto.client("cloudformation")
    real.delete_change_set(StackName=stack.name, ChangeSetName="cleanup")
    real.create_change_set(StackName=stack.name, ChangeSetName="cleanup", ChangeSetType="UPDATE",
                           TemplateBody=template(None, None, unique("decoy")))
    message = refused(execute)
    assert gate.approval_id(message) != approval
    assert "Removes Queue (AWS::SQS::Queue)" in message and "Removes Topic" in message, message
    assert stack.logical_ids() == ["Queue", "Topic"] and stack.queue_exists()


def test_the_aws_cli_is_told_what_a_change_set_removes(gate: GatedAirlock, agent: Agent, moto: Moto) -> None:
    stack = Stack(moto)
    agent.aws("cloudformation", "create-change-set", "--stack-name", stack.name, "--change-set-name",
              "drop-queue", "--change-set-type", "UPDATE", "--template-body", template(None, stack.topic))
    proc = agent.aws_run("cloudformation", "execute-change-set", "--stack-name", stack.name,
                         "--change-set-name", "drop-queue", extra_env={"AWS_MAX_ATTEMPTS": "1"})
    assert proc.returncode != 0, proc.stdout
    assert "(AccessDenied)" in proc.stderr and "Removes Queue (AWS::SQS::Queue)" in proc.stderr, proc.stderr
    gate.approval_id(proc.stderr)
    assert stack.logical_ids() == ["Queue", "Topic"] and stack.queue_exists()


def test_an_unreadable_change_set_fails_closed(gate: GatedAirlock, agent: Agent, moto: Moto) -> None:
    stack = Stack(moto)
    cfn = agent.client("cloudformation", config=NO_RETRIES)
    message = refused(lambda: cfn.execute_change_set(StackName=stack.name, ChangeSetName="no-such-set"))
    assert "could not read the change set" in message and "fail closed" in message, message
    gate.approval_id(message)


def test_update_stack_that_drops_a_resource_is_held(gate: GatedAirlock, agent: Agent, moto: Moto) -> None:
    stack = Stack(moto)
    cfn = agent.client("cloudformation", config=NO_RETRIES)
    message = refused(lambda: cfn.update_stack(StackName=stack.name, TemplateBody=template(stack.queue, None)))
    assert "Removes Topic (AWS::SNS::Topic)" in message, message
    gate.approval_id(message)
    assert stack.logical_ids() == ["Queue", "Topic"] and stack.topic_exists(stack.topic)
    assert stack.previews_left() == [], "airlock left its preview change set behind"


def test_an_approved_update_stack_goes_through_once(gate: GatedAirlock, agent: Agent, moto: Moto) -> None:
    """Each UpdateStack is previewed anew; the same template finds the same removals, so the
    retry is the call the human approved."""
    stack = Stack(moto)
    cfn = agent.client("cloudformation", config=NO_RETRIES)
    update = lambda: cfn.update_stack(StackName=stack.name, TemplateBody=template(None, stack.topic))  # noqa: E731
    message = refused(update)
    assert "Removes Queue (AWS::SQS::Queue)" in message, message
    approval = gate.approval_id(message)
    assert gate.approval_id(refused(update)) == approval, "the retry is not the same call"
    gate.approve(approval)
    update()
    assert stack.logical_ids() == ["Topic"] and not stack.queue_exists()
    assert stack.previews_left() == [], "airlock left its preview change set behind"


def test_update_stack_that_only_adds_goes_through(gate: GatedAirlock, agent: Agent, moto: Moto) -> None:
    stack = Stack(moto)
    cfn = agent.client("cloudformation", config=NO_RETRIES)
    extra = unique("more")
    cfn.update_stack(StackName=stack.name, TemplateBody=template(stack.queue, stack.topic, extra))
    assert stack.logical_ids() == ["Extra", "Queue", "Topic"] and stack.topic_exists(extra)
    assert stack.previews_left() == [], "airlock left its preview change set behind"


def test_a_change_set_that_adds_an_access_key_is_held(gate: GatedAirlock, agent: Agent, moto: Moto) -> None:
    """Nothing is destroyed, yet the stack would make an admin user and hand its key out as an
    output, with airlock's credentials."""
    stack = Stack(moto)
    user = unique("agent-admin")
    body = json.loads(template(stack.queue, stack.topic))
    body["Resources"]["Admin"] = {"Type": "AWS::IAM::User", "Properties": {
        "UserName": user, "ManagedPolicyArns": ["arn:aws:iam::aws:policy/AdministratorAccess"]}}
    body["Resources"]["Key"] = {"Type": "AWS::IAM::AccessKey", "Properties": {"UserName": {"Ref": "Admin"}}}
    body["Outputs"] = {"Secret": {"Value": {"Fn::GetAtt": ["Key", "SecretAccessKey"]}}}
    execute = change_set(agent, stack, "add-admin", json.dumps(body))

    message = refused(execute)
    assert "Creates Key (AWS::IAM::AccessKey): grants access or runs code" in message, message
    assert "Creates Admin (AWS::IAM::User)" in message, message
    approval = gate.approval_id(message)
    link = f"http://localhost:{gate.approvals_url.rsplit(':', 1)[1]}/approvals/{approval}"
    page = requests.get(link, timeout=10)
    assert page.status_code == 200, page.text
    assert "Creates Key (AWS::IAM::AccessKey): grants access or runs code." in page.text, page.text
    assert stack.logical_ids() == ["Queue", "Topic"]
    users = [u["UserName"] for u in moto.client("iam").list_users()["Users"]]
    assert user not in users, users


def test_update_stack_with_a_transform_fails_closed(gate: GatedAirlock, agent: Agent, moto: Moto) -> None:
    """A macro may return another template for the real update than for airlock's preview."""
    stack = Stack(moto)
    cfn = agent.client("cloudformation", config=NO_RETRIES)
    body = json.loads(template(stack.queue, stack.topic, unique("more")))
    body["Transform"] = "AgentMacro"
    message = refused(lambda: cfn.update_stack(StackName=stack.name, TemplateBody=json.dumps(body)))
    assert "Transform" in message and "fail closed" in message and "change set" in message, message
    gate.approval_id(message)
    assert stack.logical_ids() == ["Queue", "Topic"]
    assert stack.previews_left() == [], "airlock made a preview it cannot trust"


def test_update_stack_from_a_template_url_fails_closed(gate: GatedAirlock, agent: Agent, moto: Moto) -> None:
    stack = Stack(moto)
    cfn = agent.client("cloudformation", config=NO_RETRIES)
    message = refused(lambda: cfn.update_stack(StackName=stack.name,
                                               TemplateURL="https://s3.amazonaws.com/templates/app.json"))
    assert "TemplateURL" in message and "fail closed" in message, message
    assert stack.logical_ids() == ["Queue", "Topic"]
